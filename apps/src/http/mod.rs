//! The HTTP/1.1 static-file logic of `zc-httpd`, kept apart from the
//! connection loop so that all of it is pure code with unit tests on literal
//! inputs (plus a temporary directory for path resolution):
//!
//! - [`request`]: one request head from the bytes received so far (`httparse`),
//!   with the limits a server needs (head size, no request bodies).
//! - [`path`]: request-target → file under the root, refusing traversal
//!   (`..`, `%2e%2e`, `%2f`, NUL, absolute forms, symlinks leading out).
//! - [`range`]: a single `Range: bytes=…` against a file length.
//! - [`cond`]: `ETag`, `Last-Modified` and the conditional requests they answer.
//! - [`response`]: status codes and response heads.
//! - [`mime`]: `Content-Type` by file extension.
//! - [`serve`]: putting it together: a request and a root give a [`serve::Reply`].

pub mod cond;
pub mod mime;
pub mod path;
pub mod range;
pub mod request;
pub mod response;
pub mod serve;

pub use request::{Method, Request};
pub use response::{Head, Status};
pub use serve::{Body, Reply};
