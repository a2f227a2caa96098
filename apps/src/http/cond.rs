//! Validators (`ETag`, `Last-Modified`) and the conditional requests they
//! answer: `If-None-Match`, `If-Modified-Since` (RFC 9110 §13.1.2–3, §13.2.2
//! for the order) and `If-Range` (§13.1.5).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::request::Request;

/// 9999-12-31 23:59:59 UTC, the last time an HTTP-date can say.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

/// A file's validators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validators {
    /// Strong entity tag, quoted: inode, size and modification time in ns.
    pub etag: String,
    /// HTTP-date of the modification time.
    pub last_modified: String,
    mtime_secs: u64,
}

impl Validators {
    /// Validators for a file of `len` bytes, modified at `mtime`, with inode `ino`.
    pub fn new(len: u64, mtime: SystemTime, ino: u64) -> Validators {
        let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
        // HTTP-dates end with year 9999 (httpdate panics past it).
        let secs = since.as_secs().min(LAST_HTTP_DATE);
        Validators {
            etag: format!("\"{ino:x}-{len:x}-{:x}\"", since.as_nanos()),
            last_modified: httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs)),
            mtime_secs: secs,
        }
    }

    /// Validators of a file from its metadata.
    pub fn of(meta: &Metadata) -> Validators {
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        Validators::new(meta.len(), mtime, meta.ino())
    }

    /// Whether a GET/HEAD is answered 304: `If-None-Match` matches (weak
    /// comparison), or, without `If-None-Match`, the file is not newer
    /// than `If-Modified-Since`.
    pub fn not_modified(&self, req: &Request) -> bool {
        if let Some(inm) = &req.if_none_match {
            return inm
                .split(',')
                .map(str::trim)
                .any(|t| t == "*" || opaque(t).is_some_and(|t| Some(t) == opaque(&self.etag)));
        }
        if let Some(ims) = &req.if_modified_since
            && let Ok(since) = httpdate::parse_http_date(ims)
        {
            let since = since
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            return self.mtime_secs <= since;
        }
        false
    }

    /// Whether a `Range` may be honoured given `If-Range`: absent, equal to
    /// the (strong) entity tag, or equal to `Last-Modified`.
    pub fn range_allowed(&self, if_range: Option<&str>) -> bool {
        match if_range {
            None => true,
            Some(v) if v.starts_with('"') => v == self.etag,
            Some(v) if v.starts_with("W/") => false,
            Some(v) => httpdate::parse_http_date(v).is_ok_and(|d| {
                d.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() == self.mtime_secs
            }),
        }
    }
}

/// The quoted part of an entity tag, weak prefix removed (`W/"x"` → `"x"`).
fn opaque(tag: &str) -> Option<&str> {
    let t = tag.strip_prefix("W/").unwrap_or(tag);
    (t.len() >= 2 && t.starts_with('"') && t.ends_with('"')).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::Method;

    fn req(inm: Option<&str>, ims: Option<&str>) -> Request {
        Request {
            method: Method::Get,
            target: "/".into(),
            minor_version: 1,
            keep_alive: true,
            range: None,
            if_range: None,
            if_none_match: inm.map(Into::into),
            if_modified_since: ims.map(Into::into),
        }
    }

    fn v() -> Validators {
        // 2026-11-22 01:00:00.5 UTC
        Validators::new(
            4096,
            UNIX_EPOCH + Duration::from_millis(1_795_309_200_500),
            0x1234,
        )
    }

    #[test]
    fn validators() {
        let v = v();
        assert_eq!(v.etag, "\"1234-1000-18ea3834b5cb0500\"");
        assert_eq!(v.last_modified, "Sun, 22 Nov 2026 01:00:00 GMT");
    }

    #[test]
    fn far_future_mtime_is_clamped() {
        let v = Validators::new(1, UNIX_EPOCH + Duration::from_secs(1 << 40), 1);
        assert_eq!(v.last_modified, "Fri, 31 Dec 9999 23:59:59 GMT");
        let before_epoch = Validators::new(1, UNIX_EPOCH - Duration::from_secs(5), 1);
        assert_eq!(before_epoch.last_modified, "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn if_none_match() {
        let v = v();
        assert!(v.not_modified(&req(Some("\"1234-1000-18ea3834b5cb0500\""), None)));
        assert!(v.not_modified(&req(Some("\"x\", W/\"1234-1000-18ea3834b5cb0500\""), None)));
        assert!(v.not_modified(&req(Some("*"), None)));
        assert!(!v.not_modified(&req(Some("\"other\""), None)));
        // If-None-Match wins over If-Modified-Since.
        assert!(!v.not_modified(&req(
            Some("\"other\""),
            Some("Sun, 22 Nov 2026 02:00:00 GMT")
        )));
        assert!(!v.not_modified(&req(None, None)));
    }

    #[test]
    fn if_modified_since() {
        let v = v();
        assert!(v.not_modified(&req(None, Some("Sun, 22 Nov 2026 01:00:00 GMT"))));
        assert!(v.not_modified(&req(None, Some("Sun, 22 Nov 2026 01:00:01 GMT"))));
        assert!(!v.not_modified(&req(None, Some("Sun, 22 Nov 2026 00:59:59 GMT"))));
        assert!(!v.not_modified(&req(None, Some("yesterday"))));
    }

    #[test]
    fn if_range() {
        let v = v();
        assert!(v.range_allowed(None));
        assert!(v.range_allowed(Some("\"1234-1000-18ea3834b5cb0500\"")));
        assert!(!v.range_allowed(Some("\"old\"")));
        assert!(!v.range_allowed(Some("W/\"1234-1000-18ea3834b5cb0500\"")));
        assert!(v.range_allowed(Some("Sun, 22 Nov 2026 01:00:00 GMT")));
        assert!(!v.range_allowed(Some("Sun, 22 Nov 2026 01:00:01 GMT")));
    }
}
