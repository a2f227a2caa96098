#!/usr/bin/env bash
# test.sh: the one test command. fmt, clippy, release build, the whole test
# suite in release mode, the vendored smoltcp's own tests, the memory-safety
# checks under Miri (nightly, installed with rustup if missing), the demo,
# the API docs, and the README's library snippet built outside the
# workspace. As
# root on Debian/Ubuntu it first installs what the tests run (apt-get,
# quietly, no daemons); elsewhere it names what is missing. Privileged tests
# (TAP, network namespaces, veth, AF_XDP) are marked #[ignore = "needs root"]:
# as root this runs them too (--include-ignored); without root they are
# reported as ignored and counted in the summary. Afterwards, checks that
# the tests left no zc* namespace, link or process.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Tests live in their own crate, so they can't use CARGO_BIN_EXE_*: they find
# the apps' binaries here (the release build below puts them there).
export ZC_BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release

# shellcheck source=scripts/need.sh
source "$ROOT/scripts/need.sh"
zc_need_cargo test.sh rustfmt clippy
IGNORED=()
if ((EUID == 0)); then
    IGNORED=(--include-ignored)
    # What the privileged tests run (installed with apt when missing, on
    # Debian/Ubuntu; otherwise named): beds, pings, fetches, offloads,
    # the frame fuzzer, dropping privileges, pinning.
    zc_need test.sh ip:iproute2 ping:iputils-ping curl:curl ethtool:ethtool \
        python3:python3 sysctl:procps setpriv:util-linux unshare:util-linux taskset:util-linux
    zc_need_tun test.sh
else
    echo "NOTE: not root: the privileged tests (TAP, netns, veth, AF_XDP) will be reported as ignored,"
    echo "NOTE: and the demo is not run; run this as root for the full suite."
fi

# What the project's tests may leave behind: zc* namespaces, zc* links in
# this namespace, and processes running our binaries.
leftover_ns() {
    ip netns list 2>/dev/null | awk '$1 ~ /^zc/ {print "netns " $1}'
}
leftover_links() {
    ip -o link show 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); if ($2 ~ /^zc/) print "link " $2}'
}
leftover_procs() {
    local exe target
    for exe in /proc/[0-9]*/exe; do
        target=$(readlink "$exe" 2>/dev/null) || continue
        if [[ $target == "$ZC_BIN_DIR"/* ]]; then
            echo "process ${exe//[!0-9]/} $target"
        fi
    done
}
indent() {
    local line
    while IFS= read -r line; do
        printf '  %s\n' "$line"
    done <<<"$1"
}
leftovers() {
    leftover_ns
    leftover_links
    leftover_procs
}

# Objects that were there before we started are not the tests' doing: note
# them (they may clash with test names) but don't delete them: they may
# belong to another run.
BEFORE=$(leftovers | sort)
if [[ -n $BEFORE ]]; then
    echo "NOTE: already present before the tests (not touched, not counted):"
    indent "$BEFORE"
fi

RESULTS=()
FAILED=()
# step NAME CMD...: run a step, time it, record ok/FAILED, keep going.
step() {
    local name=$1 start=$SECONDS
    shift
    echo
    echo "=== $name: $*"
    if "$@"; then
        RESULTS+=("$name ok ($((SECONDS - start)) s)")
    else
        RESULTS+=("$name FAILED ($((SECONDS - start)) s)")
        FAILED+=("$name")
    fi
}
# The suite; its output also goes to a log, to count ignored tests.
TEST_LOG=$(mktemp -t zc-test.XXXXXX)
trap 'rm -f "$TEST_LOG"' EXIT
run_tests() {
    cargo test --release --workspace --no-fail-fast -- "${IGNORED[@]}" 2>&1 | tee "$TEST_LOG"
}
# Sum of "N passed" / "N ignored" over every test binary in the log.
count() {
    awk -v what="$1" '/^test result:/ {
        for (i = 2; i <= NF; i++) if ($i ~ "^" what) n += $(i - 1)
    } END { print n + 0 }' "$TEST_LOG"
}
skip() {
    RESULTS+=("$1 skipped ($2)")
    FAILED+=("$1")
}

step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
# `cargo build --release` and `cargo doc --no-deps` are the README's own lines.
step build cargo build --release
if [[ " ${FAILED[*]} " == *" build "* ]]; then
    skip test "build failed"
else
    step test run_tests
fi
# The vendored smoltcp is outside the workspace: run its own unit tests,
# which include the tests of zcstack's patch (third_party/smoltcp/ZCSTACK-PATCHES.md).
# It has no lockfile (upstream keeps none): offline when cargo's cache can
# resolve it, else cargo asks crates.io. Arguments (e.g. --features …) go
# to cargo test.
smoltcp_tests() {
    local manifest=third_party/smoltcp/Cargo.toml offline=()
    if cargo metadata --offline --manifest-path "$manifest" --format-version 1 >/dev/null 2>&1; then
        offline=(--offline)
    fi
    cargo test "${offline[@]}" --manifest-path "$manifest" \
        --target-dir "${CARGO_TARGET_DIR:-$ROOT/target}/smoltcp-vendored" --lib "$@"
}
step smoltcp-patch smoltcp_tests
# Again with the congestion controllers zcstack uses (their tests, and the
# loss-recovery tests that need a controller, only build with them).
step smoltcp-patch-cc smoltcp_tests --features socket-tcp-cubic,socket-tcp-reno
# Again with send by reference (patch 20: its own tests, and every upstream
# test with the send buffer of extents in place of the ring).
step smoltcp-patch-extents smoltcp_tests --features socket-tcp-extents
# Miri (nightly): the buffer pool (its memfd mapping shimmed by a heap
# allocation under cfg(miri)), the send buffer of extents and the TxRefs a
# device keeps (smoltcp patches 20, 23, 24), and the device adapter's
# gather path, under Miri's checks for undefined behaviour (aliasing,
# use after free, data races). The selection keeps it to a few minutes.
miri_ready() {
    cargo +nightly miri --version >/dev/null 2>&1 && return 0
    command -v rustup >/dev/null || return 1
    echo "installing Miri with rustup (nightly toolchain, miri component)"
    if rustup toolchain list | grep -q '^nightly'; then
        rustup component add miri rust-src --toolchain nightly >/dev/null 2>&1
    else
        rustup toolchain install nightly --profile minimal --component miri,rust-src >/dev/null 2>&1
    fi && cargo +nightly miri --version >/dev/null 2>&1
}
miri_tests() {
    local target=${CARGO_TARGET_DIR:-$ROOT/target} offline=()
    if cargo metadata --offline --manifest-path third_party/smoltcp/Cargo.toml \
        --format-version 1 >/dev/null 2>&1; then
        offline=(--offline)
    fi
    export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
    cargo +nightly miri test --target-dir "$target/miri" -p zcstack-driver --lib -- pool:: &&
        cargo +nightly miri test --target-dir "$target/miri" -p zcstack --lib -- device:: &&
        cargo +nightly miri test "${offline[@]}" --target-dir "$target/miri-smoltcp" \
            --manifest-path third_party/smoltcp/Cargo.toml --lib --features socket-tcp-extents \
            -- extents iface::gather storage::ring_buffer zcstack_idle zcstack_a_device_keeps
}
if miri_ready; then
    step miri miri_tests
else
    echo
    echo "=== miri: SKIPPED: no nightly toolchain with Miri, and rustup could not install one"
    echo "    (offline?). Install it with: rustup toolchain install nightly --component miri"
    RESULTS+=("miri SKIPPED (Miri not installed, and rustup could not install it here)")
fi
# The demo (README's first command), small: it must keep working.
if ((EUID == 0)); then
    step demo env DEMO_MIB=64 DEMO_FETCHES=1 bash scripts/demo.sh
fi
# The API docs build without a warning (broken or private links included).
step doc env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
# The README's library snippet, built as a crate outside this workspace.
step embed bash scripts/embed-check.sh

echo
echo "=== leftovers: zc* namespaces, links and processes"
AFTER=$(leftovers | sort)
NEW=$(comm -13 <(printf '%s\n' "$BEFORE") <(printf '%s\n' "$AFTER") | sed '/^$/d')
if [[ -n $NEW ]]; then
    echo "the tests left these behind:"
    indent "$NEW"
    RESULTS+=("leftovers FAILED")
    FAILED+=("leftovers")
else
    RESULTS+=("leftovers none")
fi

echo
echo "=== summary"
printf '  %s\n' "${RESULTS[@]}"
if [[ -s $TEST_LOG ]]; then
    echo "  tests: $(count passed) passed, $(count failed) failed, $(count ignored) ignored$(
        ((EUID == 0)) || echo " (not root: the privileged ones)")"
fi
if ((${#FAILED[@]})); then
    echo "test.sh: FAIL (${FAILED[*]})"
    exit 1
fi
echo "test.sh: PASS"
