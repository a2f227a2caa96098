//! Status codes and response heads.
//!
//! A [`Head`] is built line by line and finished into bytes.

use std::fmt::Write as _;

/// The status codes zc-httpd sends (RFC 9110 §15, RFC 6585 for 431).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 200
    Ok,
    /// 206, a single range.
    PartialContent,
    /// 301, a directory without its trailing slash.
    MovedPermanently,
    /// 304, a conditional GET/HEAD that matched.
    NotModified,
    /// 400
    BadRequest,
    /// 404, also for paths refused because they lead outside the root.
    NotFound,
    /// 405, with `Allow: GET, HEAD`.
    MethodNotAllowed,
    /// 408, the request head did not arrive in time.
    RequestTimeout,
    /// 413, requests with a body.
    ContentTooLarge,
    /// 416, with `Content-Range: bytes */LEN`.
    RangeNotSatisfiable,
    /// 431, a request head over the limit.
    HeadersTooLarge,
    /// 500, a file that could not be read.
    InternalError,
    /// 505, an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::PartialContent => 206,
            Status::MovedPermanently => 301,
            Status::NotModified => 304,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::ContentTooLarge => 413,
            Status::RangeNotSatisfiable => 416,
            Status::HeadersTooLarge => 431,
            Status::InternalError => 500,
            Status::VersionNotSupported => 505,
        }
    }

    /// The reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::PartialContent => "Partial Content",
            Status::MovedPermanently => "Moved Permanently",
            Status::NotModified => "Not Modified",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::ContentTooLarge => "Content Too Large",
            Status::RangeNotSatisfiable => "Range Not Satisfiable",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::InternalError => "Internal Server Error",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// A response head under construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    status: Status,
    buf: String,
}

impl Head {
    /// Starts `HTTP/1.1 CODE REASON` with the `Server` and `Date` lines.
    pub fn new(status: Status, date: &str) -> Head {
        let mut buf = String::with_capacity(256);
        let _ = write!(
            buf,
            "HTTP/1.1 {} {}\r\nServer: zc-httpd\r\nDate: {date}\r\n",
            status.code(),
            status.reason()
        );
        Head { status, buf }
    }

    /// The status line's code.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Adds `name: value`. Values come from the server itself (never raw
    /// from the request), so they hold no CR or LF.
    pub fn header(mut self, name: &str, value: impl std::fmt::Display) -> Head {
        let _ = write!(self.buf, "{name}: {value}\r\n");
        self
    }

    /// Length of the finished head.
    pub fn len(&self) -> usize {
        self.buf.len() + 2
    }

    /// Never empty (it has a status line); here for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The head's bytes.
    pub fn finish(self) -> Vec<u8> {
        let mut out = self.buf.into_bytes();
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// A complete short response for an error or redirect: the head plus a
/// one-line text body (none for 304 or HEAD).
pub fn simple(head: Head, keep_alive: bool, with_body: bool) -> Vec<u8> {
    let status = head.status();
    let text = format!("{} {}\n", status.code(), status.reason());
    let conn = if keep_alive { "keep-alive" } else { "close" };
    let mut head = head.header("Connection", conn);
    if status != Status::NotModified {
        head = head
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Content-Length", text.len());
    }
    let mut out = head.finish();
    if with_body && status != Status::NotModified {
        out.extend_from_slice(text.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Sun, 22 Nov 2026 01:00:00 GMT";

    #[test]
    fn head_bytes() {
        let h = Head::new(Status::Ok, DATE).header("Content-Length", 5);
        let plain_len = h.len();
        let plain = h.clone().finish();
        assert_eq!(
            plain,
            b"HTTP/1.1 200 OK\r\nServer: zc-httpd\r\nDate: Sun, 22 Nov 2026 01:00:00 GMT\r\nContent-Length: 5\r\n\r\n"
        );
        assert_eq!(plain.len(), plain_len);
    }

    #[test]
    fn simple_error_responses() {
        let r = simple(Head::new(Status::NotFound, DATE), true, true);
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("Connection: keep-alive\r\n"));
        assert!(s.contains("Content-Length: 14\r\n"));
        assert!(s.ends_with("\r\n\r\n404 Not Found\n"));
        let head_only = simple(Head::new(Status::NotFound, DATE), false, false);
        let s = String::from_utf8(head_only).unwrap();
        assert!(s.contains("Connection: close\r\n"));
        assert!(
            s.contains("Content-Length: 14\r\n"),
            "HEAD keeps the length"
        );
        assert!(s.ends_with("\r\n\r\n"));
        let nm =
            String::from_utf8(simple(Head::new(Status::NotModified, DATE), true, true)).unwrap();
        assert!(!nm.contains("Content-Length"));
        assert!(nm.ends_with("\r\n\r\n"));
        assert_eq!(Status::HeadersTooLarge.code(), 431);
        assert_eq!(
            Status::RangeNotSatisfiable.reason(),
            "Range Not Satisfiable"
        );
    }
}
