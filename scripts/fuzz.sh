#!/usr/bin/env bash
# fuzz.sh: runs zcstack's coverage-guided fuzz targets (cargo-fuzz, nightly).
#
#   scripts/fuzz.sh run TARGET [SECONDS]   fuzz for SECONDS (default 600) at nice 19
#   scripts/fuzz.sh runs TARGET N [SECONDS] fuzz for N executions, at most
#                                          SECONDS (default 1200)
#   scripts/fuzz.sh cmin TARGET            replace the tree's seed corpus by the
#                                          ZC_FUZZ_SEEDS (40) inputs of it and of
#                                          the runs that cover the most edges
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
    sed -n '4,10p' "$0" | sed 's/^# \{0,1\}//' >&2
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
    [[ $# -ge 3 ]] || usage
    check_target "$2"
    fuzz "$2" "-runs=$3" "-max_total_time=${4:-1200}"
    ;;
cmin)
    [[ $# -eq 2 ]] || usage
    check_target "$2"
    need_tools
    t=$2
    keep=${ZC_FUZZ_SEEDS:-40}
    nice -n 19 cargo +nightly fuzz build -s none "$t"
    bin=fuzz/target/x86_64-unknown-linux-gnu/release/$t
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # 1. libFuzzer's merge keeps, smallest first, the inputs that add an
    #    edge (hit counts ignored).
    mkdir "$tmp/merged"
    nice -n 19 "$bin" -merge=1 -use_counters=0 "$tmp/merged" "fuzz/corpus/$t" "fuzz/work/$t" \
        >"$tmp/merge.log" 2>&1 || { tail "$tmp/merge.log"; exit 1; }
    # 2. Each of those inputs' own edges (a merge of it alone lists them all).
    for f in "$tmp/merged"/*; do
        mkdir -p "$tmp/one" "$tmp/none" && rm -f "$tmp/one"/* "$tmp/cf"
        cp "$f" "$tmp/one/"
        nice -n 19 "$bin" -merge=1 -use_counters=0 -merge_control_file="$tmp/cf" \
            "$tmp/none" "$tmp/one" >/dev/null 2>&1 || true
        echo "$(basename "$f") $(awk '$1 == "FT" {$1 = ""; $2 = ""; print}' "$tmp/cf")"
        rm -rf "$tmp/none"
    done >"$tmp/features"
    # 3. Greedy set cover: the input adding the most edges first, up to $keep.
    python3 - "$tmp/features" "$keep" >"$tmp/chosen" <<'PY'
import sys
feats = {}
for line in open(sys.argv[1]):
    name, *fs = line.split()
    feats[name] = set(fs)
keep = int(sys.argv[2])
total = set().union(*feats.values()) if feats else set()
covered, chosen = set(), []
while len(chosen) < keep:
    name = max(feats, key=lambda n: (len(feats[n] - covered), -len(feats[n])), default=None)
    if name is None or not feats[name] - covered:
        break
    covered |= feats.pop(name)
    chosen.append(name)
print("\n".join(chosen))
print(f"kept {len(chosen)} inputs, {len(covered)} of {len(total)} features", file=sys.stderr)
PY
    rm -f "fuzz/corpus/$t"/*
    while read -r name; do
        cp "$tmp/merged/$name" "fuzz/corpus/$t/$name"
    done <"$tmp/chosen"
    echo "fuzz/corpus/$t: $(ls "fuzz/corpus/$t" | wc -l) files"
    ;;
list)
    printf '%s\n' "${TARGETS[@]}"
    ;;
*)
    usage
    ;;
esac
