# need.sh: what the scripts need from the machine, installed when they can.
#
# Library (source it from a script that runs `set -euo pipefail`; call these
# before the script sets its own EXIT trap):
#   zc_need WHO CMD:PACKAGE[,PACKAGE]...   every CMD on PATH, or install its PACKAGEs
#   zc_need_cargo WHO [COMPONENT...]   cargo on PATH (rustup's env is sourced
#                                if needed), a C linker for it (cc), and rustup
#                                components (rustfmt, clippy)
#   zc_need_tun WHO              /dev/net/tun present (modprobe or mknod)
#
# As root on Debian or Ubuntu, a missing command's package is installed
# with apt-get, quietly and without letting Debian start any daemon the
# package ships (policy-rc.d says no while apt runs). Otherwise the script
# stops and names exactly what to install. WHO prefixes the messages.

_zc_apt_install() {
    local policy=/usr/sbin/policy-rc.d made=0 rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made=1
        # Removed again even if apt is interrupted.
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    # apt's chatter (debconf notes and the like) is shown only if it fails.
    local log
    log=$(mktemp -t zc-apt.XXXXXX)
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"; } >"$log" 2>&1 || rc=$?
    ((rc == 0)) || tail -n 20 "$log" >&2
    rm -f "$log"
    if ((made)); then
        rm -f "$policy"
        trap - EXIT
    fi
    return "$rc"
}

# Whether packages can be installed here: root, and apt-get (Debian, Ubuntu).
_zc_can_apt() {
    ((EUID == 0)) && command -v apt-get >/dev/null 2>&1
}

zc_need() {
    local who=$1 pair cmd pkg
    shift
    local missing=() pkgs=() list=()
    for pair in "$@"; do
        cmd=${pair%%:*}
        command -v "$cmd" >/dev/null 2>&1 && continue
        missing+=("$cmd")
        IFS=, read -ra list <<<"${pair#*:}"
        for pkg in "${list[@]}"; do
            [[ " ${pkgs[*]} " == *" $pkg "* ]] || pkgs+=("$pkg")
        done
    done
    ((${#missing[@]})) || return 0
    if ! _zc_can_apt; then
        echo "$who: ${missing[*]} not found: install them first, as root:" \
            "apt-get install ${pkgs[*]} (Debian/Ubuntu package names)" >&2
        return 1
    fi
    echo "$who: installing ${pkgs[*]} with apt-get (for ${missing[*]})" >&2
    if ! _zc_apt_install "${pkgs[@]}"; then
        echo "$who: 'apt-get install ${pkgs[*]}' failed: install them by hand and run again" >&2
        return 1
    fi
    for cmd in "${missing[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || {
            echo "$who: $cmd is still missing after installing ${pkgs[*]}" >&2
            return 1
        }
    done
}

zc_need_cargo() {
    local who=$1 comp
    shift
    if ! command -v cargo >/dev/null 2>&1; then
        # rustup installs into ~/.cargo/bin, which a non-login shell (or
        # sudo) may leave off PATH.
        local env
        for env in "${CARGO_HOME:-$HOME/.cargo}/env" \
            "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)/.cargo/env"; do
            # shellcheck source=/dev/null
            [[ -f $env ]] && source "$env" && break
        done
    fi
    command -v cargo >/dev/null 2>&1 || {
        echo "$who: cargo not found: install Rust with rustup (https://rustup.rs):" \
            "curl --proto '=https' -sSf https://sh.rustup.rs | sh" >&2
        return 1
    }
    # rustc links with the system's C compiler driver and C library files;
    # a minimal Debian has neither.
    if ! command -v cc >/dev/null 2>&1 || [[ $(cc -print-file-name=crt1.o 2>/dev/null) != /* ]]; then
        if ! _zc_can_apt; then
            echo "$who: Rust needs a C linker and the C library's files: install them first," \
                "as root: apt-get install gcc libc6-dev (Debian/Ubuntu package names)" >&2
            return 1
        fi
        echo "$who: installing gcc libc6-dev with apt-get (the linker Rust uses)" >&2
        _zc_apt_install gcc libc6-dev || {
            echo "$who: 'apt-get install gcc libc6-dev' failed: install them by hand and run again" >&2
            return 1
        }
    fi
    for comp in "$@"; do
        case $comp in
            rustfmt) cargo fmt --version >/dev/null 2>&1 && continue ;;
            clippy) cargo clippy --version >/dev/null 2>&1 && continue ;;
        esac
        if command -v rustup >/dev/null 2>&1; then
            echo "$who: adding the Rust component $comp (rustup)" >&2
            rustup component add "$comp" >/dev/null 2>&1 || {
                echo "$who: 'rustup component add $comp' failed" >&2
                return 1
            }
        else
            echo "$who: the Rust component $comp is missing: install it with your toolchain" >&2
            return 1
        fi
    done
}

zc_need_tun() {
    local who=$1
    [[ -c /dev/net/tun ]] && return 0
    if ((EUID == 0)); then
        modprobe tun 2>/dev/null || true
        if [[ ! -c /dev/net/tun ]]; then
            mkdir -p /dev/net && mknod -m 0600 /dev/net/tun c 10 200 2>/dev/null || true
        fi
    fi
    [[ -c /dev/net/tun ]] || {
        echo "$who: there is no /dev/net/tun: load the TUN/TAP driver (modprobe tun) or," \
            "if it is built in, create the node (mkdir -p /dev/net && mknod /dev/net/tun c 10 200)" >&2
        return 1
    }
}
