#!/usr/bin/env bash
# fuzz.sh: runs zcstack's coverage-guided fuzz targets (cargo-fuzz, nightly).
#
#   scripts/fuzz.sh run TARGET [SECONDS]   fuzz for SECONDS (default 600) at nice 19
#   scripts/fuzz.sh runs TARGET N          fuzz for N executions
#   scripts/fuzz.sh cmin TARGET            merge what the runs found into the
#                                          tree's seed corpus, minimized
#   scripts/fuzz.sh list                   the targets
#
# TARGET is stack_frames, vnet_rx, xdp_slots or http_request (docs/fuzzing.md).
# New inputs go to fuzz/work/TARGET (not in git); the seeds in
# fuzz/corpus/TARGET are read, never written, except by `cmin`. A finding
# lands in fuzz/artifacts/TARGET. Builds without a sanitizer (the harnesses
# are safe Rust) and with debug assertions and overflow checks (cargo-fuzz's
# default), so an arithmetic overflow is a finding too.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGETS=(stack_frames vnet_rx xdp_slots http_request)

usage() {
    sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

need_tools() {
    if ! rustup toolchain list | grep -q '^nightly'; then
        echo "fuzz.sh: cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
        exit 1
    fi
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz)" >&2
        cargo install cargo-fuzz
    fi
}

check_target() {
    local t
    for t in "${TARGETS[@]}"; do
        [[ $t == "$1" ]] && return 0
    done
    echo "fuzz.sh: unknown target '$1': one of ${TARGETS[*]}" >&2
    exit 2
}

# Options every run gets: a hang is a finding after 20 s; the HTTP target
# gets its dictionary.
libfuzzer_opts() {
    local opts=(-timeout=20 -print_final_stats=1)
    if [[ -f fuzz/dicts/$1.dict ]]; then
        opts+=("-dict=fuzz/dicts/$1.dict")
    fi
    printf '%s\n' "${opts[@]}"
}

fuzz() {
    local target=$1
    shift
    need_tools
    mkdir -p "fuzz/work/$target"
    mapfile -t opts < <(libfuzzer_opts "$target")
    nice -n 19 cargo +nightly fuzz run -s none "$target" \
        "fuzz/work/$target" "fuzz/corpus/$target" -- "${opts[@]}" "$@"
}

case ${1:-} in
run)
    [[ $# -ge 2 ]] || usage
    check_target "$2"
    fuzz "$2" "-max_total_time=${3:-600}"
    ;;
runs)
    [[ $# -eq 3 ]] || usage
    check_target "$2"
    fuzz "$2" "-runs=$3"
    ;;
cmin)
    [[ $# -eq 2 ]] || usage
    check_target "$2"
    need_tools
    t=$2
    nice -n 19 cargo +nightly fuzz build -s none "$t"
    bin=fuzz/target/x86_64-unknown-linux-gnu/release/$t
    new=$(mktemp -d)
    trap 'rm -rf "$new"' EXIT
    # libFuzzer's merge keeps, smallest first, the inputs that add coverage.
    nice -n 19 "$bin" -merge=1 "$new" "fuzz/corpus/$t" "fuzz/work/$t" 2>&1 | tail -3
    rm -f "fuzz/corpus/$t"/*
    cp "$new"/* "fuzz/corpus/$t"/
    echo "fuzz/corpus/$t: $(ls "fuzz/corpus/$t" | wc -l) files"
    ;;
list)
    printf '%s\n' "${TARGETS[@]}"
    ;;
*)
    usage
    ;;
esac
