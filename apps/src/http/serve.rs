//! A request and a document root give a [`Reply`]: the whole decision of
//! what to answer, without sockets, so the connection loop only moves bytes.

use std::fs::{File, Metadata};
use std::path::PathBuf;

use super::cond::Validators;
use super::mime;
use super::path::{self, Found, Root};
use super::range::{self, ByteRange};
use super::request::{Method, Refusal, Request};
use super::response::{Head, Status, simple};

/// A file range to send after the head.
#[derive(Debug)]
pub struct Body {
    /// The file, opened beneath the root (the sender takes it; `None` after).
    pub file: Option<File>,
    /// Its path under the root, as asked for.
    pub path: PathBuf,
    /// Its metadata when the reply was decided (the sender checks the file
    /// it opens against it).
    pub meta: Metadata,
    /// First byte.
    pub start: u64,
    /// Bytes (at least 1).
    pub len: u64,
}

/// What to send for one request.
#[derive(Debug)]
pub enum Reply {
    /// A complete response: errors, redirects, 304, HEAD, empty files.
    Bytes {
        /// The status sent.
        status: Status,
        /// Head and (short) body.
        bytes: Vec<u8>,
        /// Whether the connection stays open afterwards.
        keep_alive: bool,
    },
    /// A head (to be finished by the sender) and a file range.
    File {
        /// 200 or 206.
        status: Status,
        /// The head, without its final CRLF.
        head: Head,
        /// The body (boxed: it carries the file's metadata).
        body: Box<Body>,
        /// Whether the connection stays open afterwards.
        keep_alive: bool,
    },
}

impl Reply {
    /// The status sent.
    pub fn status(&self) -> Status {
        match self {
            Reply::Bytes { status, .. } | Reply::File { status, .. } => *status,
        }
    }

    /// The bytes of a `Bytes` reply, or the head of a `File` reply.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Reply::Bytes { bytes, .. } => bytes,
            Reply::File { head, .. } => head.finish(),
        }
    }

    /// Whether the connection stays open afterwards.
    pub fn keep_alive(&self) -> bool {
        match self {
            Reply::Bytes { keep_alive, .. } | Reply::File { keep_alive, .. } => *keep_alive,
        }
    }
}

fn short(head: Head, keep_alive: bool, with_body: bool) -> Reply {
    let status = head.status();
    Reply::Bytes {
        status,
        bytes: simple(head, keep_alive, with_body),
        keep_alive,
    }
}

/// The reply to a request head that was refused; the connection closes.
pub fn refused(r: Refusal, date: &str) -> Reply {
    short(Head::new(r.status, date), false, !r.head_method)
}

/// A reply that carries only a status (408, 500), closing the connection.
pub fn status_only(status: Status, date: &str) -> Reply {
    short(Head::new(status, date), false, true)
}

/// Decides the reply to `req` for files under `root`. `date` is the current
/// HTTP-date.
pub fn respond(req: &Request, root: &Root, date: &str) -> Reply {
    let ka = req.keep_alive;
    let with_body = req.method != Method::Head;
    if req.method == Method::Other {
        return short(
            Head::new(Status::MethodNotAllowed, date).header("Allow", "GET, HEAD"),
            ka,
            true,
        );
    }
    let found = path::decode(&req.target).and_then(|u| path::resolve(root, &u));
    let (opened, file, meta) = match found {
        Ok(Found::File(f, p, m)) => (f, p, m),
        Ok(Found::Redirect(loc)) => {
            return short(
                Head::new(Status::MovedPermanently, date).header("Location", loc),
                ka,
                with_body,
            );
        }
        Err(status) => return short(Head::new(status, date), ka, with_body),
    };
    let v = Validators::of(&meta);
    if v.not_modified(req) {
        let head = Head::new(Status::NotModified, date)
            .header("ETag", &v.etag)
            .header("Last-Modified", &v.last_modified);
        return short(head, ka, false);
    }
    let total = meta.len();
    let range = if v.range_allowed(req.if_range.as_deref()) {
        range::parse(req.range.as_deref(), total)
    } else {
        ByteRange::Full
    };
    let (status, start, len) = match range {
        ByteRange::Full => (Status::Ok, 0, total),
        ByteRange::Part { start, len } => (Status::PartialContent, start, len),
        ByteRange::Unsatisfiable => {
            let head = Head::new(Status::RangeNotSatisfiable, date)
                .header("Content-Range", format!("bytes */{total}"));
            return short(head, ka, with_body);
        }
    };
    let mut head = Head::new(status, date)
        .header("Content-Type", mime::content_type(&file))
        .header("Content-Length", len)
        .header("Last-Modified", &v.last_modified)
        .header("ETag", &v.etag)
        .header("Accept-Ranges", "bytes");
    if status == Status::PartialContent {
        head = head.header(
            "Content-Range",
            format!("bytes {start}-{}/{total}", start + len - 1),
        );
    }
    head = head.header("Connection", if ka { "keep-alive" } else { "close" });
    if !with_body || len == 0 {
        return Reply::Bytes {
            status,
            bytes: head.finish(),
            keep_alive: ka,
        };
    }
    Reply::File {
        status,
        head,
        body: Box::new(Body {
            file: Some(opened),
            path: file,
            meta,
            start,
            len,
        }),
        keep_alive: ka,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::path::tests::tree;
    use crate::http::request::parse;

    const DATE: &str = "Sun, 22 Nov 2026 01:00:00 GMT";

    fn reply(root: &std::path::Path, raw: &str) -> (Reply, String) {
        let (req, _) = parse(raw.as_bytes()).unwrap().unwrap();
        let r = respond(&req, &Root::open(root).unwrap(), DATE);
        let text = match &r {
            Reply::Bytes { bytes, .. } => String::from_utf8(bytes.clone()).unwrap(),
            Reply::File { head, .. } => String::from_utf8(head.clone().finish()).unwrap(),
        };
        (r, text)
    }

    #[test]
    fn get_head_range_and_conditionals() {
        let (_t, root) = tree();
        let (r, h) = reply(&root, "GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"), "{h}");
        assert!(h.contains("Content-Length: 5\r\nLast-Modified: "), "{h}");
        assert!(h.contains("Content-Type: text/plain; charset=utf-8\r\n"));
        assert!(h.contains("Connection: keep-alive\r\n"));
        let Reply::File { body, .. } = r else {
            panic!()
        };
        assert_eq!((body.start, body.len), (0, 5));
        let etag = h
            .lines()
            .find_map(|l| l.strip_prefix("ETag: "))
            .unwrap()
            .to_string();

        let (r, h) = reply(&root, "HEAD /a.txt HTTP/1.0\r\n\r\n");
        assert!(matches!(
            r,
            Reply::Bytes {
                keep_alive: false,
                ..
            }
        ));
        assert!(h.contains("Content-Length: 5\r\n") && h.ends_with("\r\n\r\n"));

        let (r, h) = reply(
            &root,
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=-2\r\n\r\n",
        );
        assert!(h.starts_with("HTTP/1.1 206 Partial Content\r\n"));
        assert!(
            h.contains("Content-Range: bytes 3-4/5\r\n") && h.contains("Content-Length: 2\r\n")
        );
        let Reply::File { body, .. } = r else {
            panic!()
        };
        assert_eq!((body.start, body.len), (3, 2));

        let (_, h) = reply(
            &root,
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=5-\r\n\r\n",
        );
        assert!(h.starts_with("HTTP/1.1 416 Range Not Satisfiable\r\n"));
        assert!(h.contains("Content-Range: bytes */5\r\n"));

        // If-Range with a stale tag: the whole file.
        let (_, h) = reply(
            &root,
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\nIf-Range: \"old\"\r\n\r\n",
        );
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"));

        let raw = format!("GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n");
        let (r, h) = reply(&root, &raw);
        assert!(h.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{h}");
        assert!(h.contains(&format!("ETag: {etag}\r\n")) && !h.contains("Content-Length"));
        assert!(r.keep_alive());
    }

    #[test]
    fn errors_and_redirects() {
        let (_t, root) = tree();
        let (r, h) = reply(&root, "PUT /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.status(), Status::MethodNotAllowed);
        assert!(h.contains("Allow: GET, HEAD\r\n"));
        let (_, h) = reply(&root, "GET /d HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            h.starts_with("HTTP/1.1 301 Moved Permanently\r\n") && h.contains("Location: /d/\r\n")
        );
        let (r, h) = reply(&root, "GET /d/ HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(h.contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert!(matches!(r, Reply::File { .. }));
        for (t, code) in [
            ("/missing", Status::NotFound),
            ("/out", Status::NotFound),
            ("/%2e%2e/secret", Status::BadRequest),
            ("/..%2fsecret", Status::BadRequest),
        ] {
            let (r, h) = reply(&root, &format!("GET {t} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(r.status(), code, "{t}");
            assert!(!h.contains("SECRET"));
        }
        let refused = refused(parse(b"GET / HTTP/1.1\r\n\r\n").unwrap_err(), DATE);
        assert_eq!(refused.status(), Status::BadRequest);
        assert!(!refused.keep_alive());
    }
}
