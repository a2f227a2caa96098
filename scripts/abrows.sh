#!/usr/bin/env bash
# abrows.sh: any bench.sh rows, for two built trees, in alternating runs;
# prints each row's median for both and the median of the per-pair ratios
# NEW/OLD (steadier than a ratio of medians when the machine's speed drifts:
# the kernel peers' own pair ratios show how much it drifts).
#
#   bash scripts/abrows.sh   (as root) OLD_TREE NEW_TREE --only REGEX [--pairs N]
#                            [--runs N] [--seconds S] [--out DIR]
#
# OLD_TREE and NEW_TREE are checkouts with release builds (e.g. a
# `git worktree add --detach ../old REV` after `cargo build --release`).
# Each pair runs OLD_TREE's scripts/bench.sh, then NEW_TREE's, with
# --no-build --no-install --only REGEX (the row ids of bench.sh's header),
# so each tree measures itself with its own script and binaries, on the
# beds bench.sh makes and deletes. --pairs 1..10 (default 3), --runs
# (default 3) and --seconds (default 3) go to bench.sh. Every result
# directory stays in --out (default a new /tmp/zcabrows.XXXXXX), and the
# table is also written there as compare.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
(($# >= 2)) || { usage >&2; exit 2; }
OLD=$(cd "$1" && pwd) NEW=$(cd "$2" && pwd)
shift 2
ONLY="" PAIRS=3 RUNS=3 S=3 OUT=""
while (($#)); do
    case $1 in
        --only) ONLY=${2:?}; shift 2 ;;
        --pairs) PAIRS=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        --seconds) S=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "abrows.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
[[ -n $ONLY ]] || { echo "abrows.sh: --only REGEX is required (row ids: scripts/bench.sh --help)" >&2; exit 2; }
if ! [[ $PAIRS =~ ^[0-9]+$ ]] || ((PAIRS < 1 || PAIRS > 10)); then
    echo "abrows.sh: --pairs 1..10" >&2
    exit 2
fi
for t in "$OLD" "$NEW"; do
    [[ -f $t/scripts/bench.sh ]] || { echo "abrows.sh: $t has no scripts/bench.sh" >&2; exit 1; }
    [[ -x $t/target/release/zc-perf ]] || {
        echo "abrows.sh: $t is not built: run 'cargo build --release --workspace' there" >&2
        exit 1
    }
done
((EUID == 0)) || { echo "abrows.sh: bench.sh needs root (namespaces, AF_XDP)" >&2; exit 1; }
[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/zcabrows.XXXXXX)
mkdir -p "$OUT"
log() { printf '%s abrows: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

for i in $(seq 1 "$PAIRS"); do
    for side in old new; do
        tree=$OLD
        [[ $side == new ]] && tree=$NEW
        dir=$OUT/$side-$i
        mkdir -p "$dir"
        log "pair $i/$PAIRS: $side ($tree)"
        (cd "$tree" && bash scripts/bench.sh --no-build --no-install --runs "$RUNS" --seconds "$S" \
            --only "$ONLY" --out "$dir" >"$dir/log" 2>&1) ||
            { echo "abrows.sh: bench.sh failed in $tree: see $dir/log" >&2; exit 1; }
    done
done
python3 "$HERE/abrows_report.py" "$OUT" "$PAIRS" "$OLD" "$NEW" | tee "$OUT/compare.md"
log "results in $OUT"
