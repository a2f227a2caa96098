//! One HTTP/1.x request head from the bytes received so far (RFC 9112 §2–3),
//! parsed with `httparse`, with the limits of a static-file server: a head
//! of at most [`MAX_HEAD`] bytes, HTTP/1.0 and 1.1 only, and no request body.

use super::response::Status;

/// Largest request head accepted (request line + headers + blank line).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 64;

/// The request method, as far as the server cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// Anything else (answered with 405).
    Other,
}

/// The parts of a request the server acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// GET, HEAD, or other.
    pub method: Method,
    /// The raw request-target (`/a/b?q`).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Range`
    pub range: Option<String>,
    /// `If-Range`
    pub if_range: Option<String>,
    /// `If-None-Match`
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`
    pub if_modified_since: Option<String>,
}

/// Why a request head was refused, and whether the connection can go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The status to answer with.
    pub status: Status,
    /// The request line was understood (so a `HEAD` gets no body). The
    /// connection is always closed after a refusal: the framing of what
    /// follows cannot be trusted.
    pub head_method: bool,
}

fn refuse(status: Status) -> Refusal {
    Refusal {
        status,
        head_method: false,
    }
}

/// Parses a request head at the start of `buf`. `Ok(None)` if more bytes are
/// needed (the caller answers 431 once `buf` holds [`MAX_HEAD`] bytes without
/// a complete head); `Ok(Some((request, head_len)))` when complete.
pub fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let limit = buf.len().min(MAX_HEAD);
    let head_len = match req.parse(&buf[..limit]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if limit == MAX_HEAD => {
            return Err(refuse(Status::HeadersTooLarge));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(refuse(Status::HeadersTooLarge)),
        Err(httparse::Error::Version) => return Err(refuse(Status::VersionNotSupported)),
        Err(_) => return Err(refuse(Status::BadRequest)),
    };
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let minor_version = req.version.unwrap_or(1);
    let target = req.path.unwrap_or("").to_string();
    let bad = Refusal {
        status: Status::BadRequest,
        head_method: method == Method::Head,
    };
    let mut out = Request {
        method,
        target,
        minor_version,
        keep_alive: minor_version >= 1,
        range: None,
        if_range: None,
        if_none_match: None,
        if_modified_since: None,
    };
    let (mut hosts, mut lengths) = (0, 0);
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| bad)?.trim();
        let name = h.name;
        let slot = if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            None
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    out.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && minor_version == 0 {
                    out.keep_alive = true;
                }
            }
            None
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            let n: u64 = value
                .parse()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(bad)?;
            if n > 0 {
                return Err(Refusal {
                    status: Status::ContentTooLarge,
                    ..bad
                });
            }
            None
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Refusal {
                status: Status::ContentTooLarge,
                ..bad
            });
        } else if name.eq_ignore_ascii_case("range") {
            Some(&mut out.range)
        } else if name.eq_ignore_ascii_case("if-range") {
            Some(&mut out.if_range)
        } else if name.eq_ignore_ascii_case("if-none-match") {
            Some(&mut out.if_none_match)
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            Some(&mut out.if_modified_since)
        } else {
            None
        };
        if let Some(slot) = slot {
            if slot.is_some() {
                // A repeated field we act on: ambiguous, refuse.
                return Err(bad);
            }
            *slot = Some(value.to_string());
        }
    }
    // RFC 9112 §3.2: a 1.1 request without exactly one Host is a 400.
    if hosts > 1 || (minor_version >= 1 && hosts == 0) || lengths > 1 {
        return Err(bad);
    }
    Ok(Some((out, head_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (Request, usize) {
        parse(s.as_bytes()).expect("parses").expect("complete")
    }

    fn status(s: &[u8]) -> Status {
        parse(s).expect_err("refused").status
    }

    #[test]
    fn get_with_fields() {
        let (r, n) = ok(
            "GET /a/b.txt?x=1 HTTP/1.1\r\nHost: h\r\nRange: bytes=0-9\r\nIf-None-Match: \"e\"\r\n\r\nGET /next",
        );
        assert_eq!(n, 76);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.target, "/a/b.txt?x=1");
        assert!(r.keep_alive);
        assert_eq!(r.range.as_deref(), Some("bytes=0-9"));
        assert_eq!(r.if_none_match.as_deref(), Some("\"e\""));
        assert_eq!(r.if_modified_since, None);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(
            !ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(
            !ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, Close\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(ok("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n").0.keep_alive);
    }

    #[test]
    fn partial_then_complete() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost:"), Ok(None));
        assert_eq!(parse(b""), Ok(None));
        assert!(
            parse(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(status(b"GARBAGE\r\n\r\n"), Status::BadRequest);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\n\r\n"),
            Status::BadRequest,
            "no Host"
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Status::BadRequest
        );
        assert_eq!(
            status(b"GET / HTTP/2.0\r\n\r\n"),
            Status::VersionNotSupported
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"),
            Status::ContentTooLarge
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Status::ContentTooLarge
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n"),
            Status::BadRequest
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=1-2\r\nRange: bytes=3-4\r\n\r\n"),
            Status::BadRequest
        );
        // Zero-length bodies are fine.
        assert!(parse(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").is_ok());
        // A HEAD that is refused is marked so no body follows.
        let r = parse(b"HEAD / HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(r.head_method);
    }

    #[test]
    fn head_size_limits() {
        let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: ".to_vec();
        big.resize(MAX_HEAD + 100, b'a');
        assert_eq!(status(&big), Status::HeadersTooLarge);
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(status(&many), Status::HeadersTooLarge);
    }

    #[test]
    fn other_methods_parse() {
        let (r, _) = ok("DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.method, Method::Other);
        let (r, _) = ok("BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.method, Method::Other);
    }
}
