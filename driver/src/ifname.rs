//! Interface names: what the kernel takes as one, checked before any
//! syscall, so a bad `--tap` or `--xdp` argument is a usage error with the
//! reason, not a kernel `EINVAL` (which the TAP driver would read as "the
//! device exists but is not a TAP") or a name `if_nametoindex` cuts short.

/// A name no interface can have, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not an interface name: {why} (check `ip link`)")]
pub struct BadInterfaceName {
    /// The name given.
    pub name: String,
    /// What is wrong with it.
    pub why: String,
}

/// Refuses what the kernel refuses as a device name (`dev_valid_name`,
/// net/core/dev.c): empty, `IFNAMSIZ` (16) bytes or more, `.` and `..`,
/// and `/`, `:` or a space (its `isspace`: tab to carriage return, space
/// and byte 0xA0) anywhere; and NUL, which would end the C string early.
pub fn check_interface_name(name: &str) -> Result<(), BadInterfaceName> {
    let refuse = |why: String| {
        Err(BadInterfaceName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return refuse("it is empty".to_string());
    }
    if name.len() >= libc::IFNAMSIZ {
        return refuse(format!(
            "it is {} bytes long, the kernel takes at most {}",
            name.len(),
            libc::IFNAMSIZ - 1
        ));
    }
    if name == "." || name == ".." {
        return refuse("the kernel refuses \".\" and \"..\"".to_string());
    }
    let refused = |c: char| {
        let mut utf8 = [0; 4];
        c.encode_utf8(&mut utf8).bytes().any(|b| {
            matches!(
                b,
                b'/' | b':' | b'\0' | b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0
            )
        })
    };
    if let Some(c) = name.chars().find(|&c| refused(c)) {
        return refuse(format!(
            "it contains {c:?}, and the kernel refuses '/', ':', NUL and whitespace in one"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_the_kernel_refuses_are_refused_with_the_reason() {
        let cases = [
            (
                "",
                "\"\" is not an interface name: it is empty (check `ip link`)",
            ),
            (
                "zcaveryverylong",
                "", // 15 bytes: accepted (below)
            ),
            (
                "zcaveryverylong0",
                "\"zcaveryverylong0\" is not an interface name: it is 16 bytes long, the kernel \
                 takes at most 15 (check `ip link`)",
            ),
            (
                ".",
                "\".\" is not an interface name: the kernel refuses \".\" and \"..\" (check `ip link`)",
            ),
            (
                "..",
                "\"..\" is not an interface name: the kernel refuses \".\" and \"..\" (check `ip link`)",
            ),
            (
                "eth0/1",
                "\"eth0/1\" is not an interface name: it contains '/', and the kernel refuses '/', \
                 ':', NUL and whitespace in one (check `ip link`)",
            ),
            (
                "eth0:1",
                "\"eth0:1\" is not an interface name: it contains ':', and the kernel refuses '/', \
                 ':', NUL and whitespace in one (check `ip link`)",
            ),
            (
                "eth 0",
                "\"eth 0\" is not an interface name: it contains ' ', and the kernel refuses '/', \
                 ':', NUL and whitespace in one (check `ip link`)",
            ),
            (
                "eth0\t",
                "\"eth0\\t\" is not an interface name: it contains '\\t', and the kernel refuses \
                 '/', ':', NUL and whitespace in one (check `ip link`)",
            ),
            (
                "eth0\0",
                "\"eth0\\0\" is not an interface name: it contains '\\0', and the kernel refuses \
                 '/', ':', NUL and whitespace in one (check `ip link`)",
            ),
            (
                "eth\u{a0}",
                "\"eth\\u{a0}\" is not an interface name: it contains '\\u{a0}', and the kernel \
                 refuses '/', ':', NUL and whitespace in one (check `ip link`)",
            ),
        ];
        for (name, msg) in cases {
            let checked = check_interface_name(name);
            if msg.is_empty() {
                assert_eq!(checked, Ok(()), "{name:?}");
            } else {
                assert_eq!(checked.expect_err(name).to_string(), msg, "{name:?}");
            }
        }
    }
}
