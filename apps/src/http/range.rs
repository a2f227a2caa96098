//! A single byte range (`Range: bytes=a-b | a- | -n`, RFC 9110 §14).
//!
//! Several ranges in one header are answered with the whole file (a server
//! may ignore `Range`, §14.2); so is a header that does not parse.

/// What to send for a `Range` header against a file of a given length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// The whole file (no header, an ignored header, or several ranges).
    Full,
    /// 206 with `Content-Range: bytes start-(start+len-1)/total`.
    Part {
        /// First byte.
        start: u64,
        /// Bytes from there (at least 1).
        len: u64,
    },
    /// 416 with `Content-Range: bytes */total`.
    Unsatisfiable,
}

/// Interprets `header` (the `Range` value, if any) for a file of `total` bytes.
pub fn parse(header: Option<&str>, total: u64) -> ByteRange {
    let Some(h) = header else {
        return ByteRange::Full;
    };
    let Some((unit, spec)) = h.split_once('=') else {
        return ByteRange::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match num(b) {
            None => ByteRange::Full,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if total == 0 => ByteRange::Unsatisfiable,
            Some(n) => {
                let len = n.min(total);
                ByteRange::Part {
                    start: total - len,
                    len,
                }
            }
        },
        // `a-`: from a to the end.
        (false, true) => match num(a) {
            None => ByteRange::Full,
            Some(start) if start >= total => ByteRange::Unsatisfiable,
            Some(start) => ByteRange::Part {
                start,
                len: total - start,
            },
        },
        // `a-b`, inclusive; b past the end is clamped.
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= total {
                    ByteRange::Unsatisfiable
                } else {
                    let end = end.min(total - 1);
                    ByteRange::Part {
                        start,
                        len: end - start + 1,
                    }
                }
            }
            _ => ByteRange::Full,
        },
        (true, true) => ByteRange::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ByteRange::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse(None, 100), Full);
        assert_eq!(parse(Some("bytes=0-9"), 100), Part { start: 0, len: 10 });
        assert_eq!(parse(Some("bytes=90-"), 100), Part { start: 90, len: 10 });
        assert_eq!(parse(Some("bytes=-10"), 100), Part { start: 90, len: 10 });
        assert_eq!(parse(Some("bytes=-1000"), 100), Part { start: 0, len: 100 });
        assert_eq!(
            parse(Some("bytes=50-5000"), 100),
            Part { start: 50, len: 50 }
        );
        assert_eq!(parse(Some("bytes=99-99"), 100), Part { start: 99, len: 1 });
        assert_eq!(parse(Some("Bytes = 1-2"), 100), Part { start: 1, len: 2 });
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(parse(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse(Some("bytes=100-200"), 100), Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(parse(Some("bytes=-5"), 0), Unsatisfiable);
    }

    #[test]
    fn ignored() {
        assert_eq!(parse(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(parse(Some("items=0-1"), 100), Full);
        assert_eq!(parse(Some("bytes=5-1"), 100), Full);
        assert_eq!(parse(Some("bytes=-"), 100), Full);
        assert_eq!(parse(Some("bytes=a-b"), 100), Full);
        assert_eq!(parse(Some("bytes=+1-2"), 100), Full);
        assert_eq!(parse(Some("bytes"), 100), Full);
        assert_eq!(parse(Some("bytes=99999999999999999999999-"), 100), Full);
    }
}
