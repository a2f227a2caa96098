#!/usr/bin/env bash
# test.sh: the one test command. fmt, clippy, release build, then the whole
# test suite in release mode. Run as root for the privileged TAP/netns tests;
# without root they are skipped (ZC_SKIP_PRIVILEGED=1) and the rest still run.
# Afterwards, checks that the tests left no zc* namespace, link or process.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Tests live in their own crate, so they can't use CARGO_BIN_EXE_*: they find
# the apps' binaries here (the release build below puts them there).
export ZC_BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release

if ((EUID != 0)); then
    echo "NOTE: not root: privileged tests (TAP, netns, veth) are SKIPPED (ZC_SKIP_PRIVILEGED=1)."
    echo "NOTE: run 'sudo $0' for the full suite."
    export ZC_SKIP_PRIVILEGED=1
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
skip() {
    RESULTS+=("$1 skipped ($2)")
    FAILED+=("$1")
}

step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step build cargo build --release --workspace --bins
if [[ " ${FAILED[*]} " == *" build "* ]]; then
    skip test "build failed"
else
    step test cargo test --release --workspace --no-fail-fast
fi
# The vendored smoltcp is outside the workspace: run its own unit tests,
# which include the tests of zcstack's patch (third_party/smoltcp/ZCSTACK-PATCHES.md).
step smoltcp-patch cargo test --manifest-path third_party/smoltcp/Cargo.toml \
    --target-dir "${CARGO_TARGET_DIR:-$ROOT/target}/smoltcp-vendored" --lib
# The API docs build without a warning (broken or private links included).
step doc env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet
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
if [[ -n ${ZC_SKIP_PRIVILEGED:-} ]]; then
    echo "  (privileged tests skipped: not root)"
fi
if ((${#FAILED[@]})); then
    echo "test.sh: FAIL (${FAILED[*]})"
    exit 1
fi
echo "test.sh: PASS"
