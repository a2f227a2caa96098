#!/usr/bin/env bash
# abbench.sh: throughput of two zcstack builds, A and B, in one run on one
# test bed (a TAP, or a veth with the stack on AF_XDP), rounds alternating
# A and B; prints the median of each row and the ratio B/A. For checking
# that a change does not slow the stack down.
#
#   bash scripts/abbench.sh   (as root) A_DIR B_DIR [--rounds N] [--seconds S] [--rows "ROW..."]
#                             [--bed tap|xdp] [--mtu N] [--offloads on|off] [--zc-args "ARGS"]
#                             [--no-pin]
#
# A_DIR and B_DIR hold zc-perf and zc-httpd binaries (e.g. a copy of an
# older release build, and target/release). Rows:
#   perf-rx     kernel zc-perf client sends to zc-perf server on the TAP (Gbit/s)
#   perf-tx     the same, --reverse: zcstack sends (Gbit/s)
#   http-64k    wrk -c16 keep-alive, one 64 KiB file (requests/s)
#   http-close  wrk -c16 with Connection: close, 64 KiB file (requests/s):
#               every connection is new, recycled sockets
#   http-big    curl of a 256 MiB file (Gbit/s)
# The bed (--bed, default tap): namespace zcab<pid> with TAP zcab<pid>
# (kernel 10.200.X.1/24, the stack at .2); or, with --bed xdp, namespaces
# zcab<pid>s and zcab<pid>c joined by a veth (scripts/netns.sh; --mtu,
# default 1500, and --offloads, default on), the apps on AF_XDP on the
# server end and the kernel clients in the other namespace. Deleted on
# exit. Needs root, wrk and curl (apt).
# --rows: measure only these rows (default all; perf rows and http rows).
# --zc-args: extra flags for both builds' servers (e.g. "--tx-gso").
# Like bench.sh, servers run pinned to the last CPU and clients to the
# first (unpinned, the scheduler's placement of the poll thread beside the
# kernel's softirq work swings AF_XDP rows by 2x); --no-pin leaves them be.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tapbed.sh
source "$HERE/tapbed.sh"
# shellcheck source=need.sh
source "$HERE/need.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
(($# >= 2)) || { usage >&2; exit 2; }
A=$1 B=$2
shift 2
ROUNDS=3 S=5 ONLY="perf-rx perf-tx http-64k http-close http-big"
BED=tap MTU=1500 OFFLOADS=on ZCARGS="" PIN=1
while (($#)); do
    case $1 in
        --bed) BED=${2:?}; shift 2 ;;
        --mtu) MTU=${2:?}; shift 2 ;;
        --offloads) OFFLOADS=${2:?}; shift 2 ;;
        --zc-args) ZCARGS=${2?}; shift 2 ;;
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --seconds) S=${2:?}; shift 2 ;;
        --rows) ONLY=${2:?}; shift 2 ;;
        --no-pin) PIN=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "abbench.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
[[ $ROUNDS =~ ^[0-9]+$ && $S =~ ^[0-9]+$ ]] && ((ROUNDS >= 1 && ROUNDS <= 20 && S >= 1 && S <= 120)) ||
    { echo "abbench.sh: --rounds 1..20, --seconds 1..120" >&2; exit 2; }
[[ $BED == tap || $BED == xdp ]] || { echo "abbench.sh: --bed tap or xdp, not '$BED'" >&2; exit 2; }
[[ $MTU =~ ^[0-9]+$ ]] && ((MTU >= 1280 && MTU <= 65535)) ||
    { echo "abbench.sh: --mtu 1280..65535" >&2; exit 2; }
[[ $OFFLOADS == on || $OFFLOADS == off ]] || { echo "abbench.sh: --offloads on or off" >&2; exit 2; }
read -r -a XARGS <<<"$ZCARGS"
for d in "$A" "$B"; do
    for b in zc-perf zc-httpd; do
        [[ -x $d/$b ]] || { echo "abbench.sh: $d/$b is missing" >&2; exit 1; }
    done
done
((EUID == 0)) || { echo "abbench.sh: namespaces and TAP devices need root" >&2; exit 1; }
zc_need abbench.sh wrk:wrk curl:curl python3:python3
log() { printf '%s abbench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

NS=zcab$$ TAP=zcab$$ NET=$(($$ % 200 + 30))
KADDR=10.200.$NET.1 ZADDR=10.200.$NET.2
WORK=$(mktemp -d /tmp/zcab.XXXXXX)
chmod 755 "$WORK"
cleanup_work() { rm -rf "$WORK"; }
if [[ $BED == tap ]]; then
    SNS=$NS CNS=$NS DEV=(--tap "$TAP")
    zc_bed_trap "$NS"
    zc_bed_on_exit cleanup_work
    zc_bed_up "$NS" "$TAP" "$KADDR/24"
else
    # shellcheck source=netns.sh
    source "$HERE/netns.sh"
    SNS=${NS}s CNS=${NS}c DEV=(--xdp "$ZC_VETH_SERVER")
    zc_bed_trap "$SNS"
    zc_bed_trap "$CNS"
    zc_bed_on_exit cleanup_work
    zc_veth_up "$SNS" "$CNS" "$KADDR/24" --mtu "$MTU" --offloads "$OFFLOADS" >/dev/null
fi
mkdir -p "$WORK/www"
head -c $((64 << 10)) /dev/urandom >"$WORK/www/f"
head -c $((256 << 20)) /dev/urandom >"$WORK/www/big"
SRV=() CLI=()
if ((PIN)) && (($(nproc) >= 2)); then
    SRV=(taskset -c "$(($(nproc) - 1))")
    CLI=(taskset -c 0)
fi
inns() { ip netns exec "$CNS" "${CLI[@]}" "$@"; }
wait_line() {
    local i
    for ((i = 0; i < 100; i++)); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
stop() {
    kill -INT "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# perf DIR [--reverse]: Gbit/s of one zc-perf run.
perf() {
    local dir=$1
    shift
    ip netns exec "$SNS" "${SRV[@]}" timeout $((S + 30)) "$dir/zc-perf" server "${DEV[@]}" --ip "$ZADDR/24" \
        "${XARGS[@]}" --once >"$WORK/srv" 2>&1 &
    local spid=$!
    wait_line "$WORK/srv" listening
    inns timeout $((S + 30)) "$dir/zc-perf" client --kernel --server "$ZADDR" --seconds "$S" --json "$@" >"$WORK/cli"
    stop "$spid"
    python3 -c 'import json,sys
r=[json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")][-1]
print("%.3f" % r["gbit_per_s"])' "$WORK/cli"
}

# http DIR: prints "keepalive_rps close_rps big_gbps".
http() {
    local dir=$1 r1 r2 big
    ip netns exec "$SNS" "${SRV[@]}" timeout $((S * 3 + 60)) "$dir/zc-httpd" "${DEV[@]}" --ip "$ZADDR/24" \
        "${XARGS[@]}" --root "$WORK/www" >"$WORK/srv" 2>&1 &
    local spid=$!
    wait_line "$WORK/srv" serving
    r1=$(inns wrk -t1 -c16 -d"${S}s" --timeout 5s "http://$ZADDR/f" | awk '/^Requests\/sec/ {print $2}')
    r2=$(inns wrk -t1 -c16 -d"${S}s" --timeout 5s -H 'Connection: close' "http://$ZADDR/f" | awk '/^Requests\/sec/ {print $2}')
    big=$(inns curl -sS -o /dev/null --max-time 60 -w '%{speed_download}' "http://$ZADDR/big" |
        awk '{printf "%.3f", $1 * 8 / 1e9}')
    stop "$spid"
    echo "$r1 $r2 $big"
}

declare -A V=()
ROWS=(perf-rx perf-tx http-64k http-close http-big)
for ((r = 1; r <= ROUNDS; r++)); do
    for side in A B; do
        dir=$A
        [[ $side == B ]] && dir=$B
        log "round $r/$ROUNDS, $side"
        [[ " $ONLY " == *" perf-rx "* ]] && V[perf-rx.$side]+="$(perf "$dir") "
        [[ " $ONLY " == *" perf-tx "* ]] && V[perf-tx.$side]+="$(perf "$dir" --reverse) "
        if [[ " $ONLY " == *" http-"* ]]; then
            read -r k c g <<<"$(http "$dir")"
            V[http-64k.$side]+="$k "
            V[http-close.$side]+="$c "
            V[http-big.$side]+="$g "
        fi
    done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
echo
echo "A = $A, B = $B; $ROUNDS rounds of ${S}s, alternating A then B; bed $BED${ZCARGS:+, servers with $ZCARGS}"
[[ $BED == xdp ]] && echo "veth MTU $MTU, offloads $OFFLOADS, the stack on AF_XDP"
echo "median of each side, and the median of the per-round ratios B/A (steadier when the machine's load drifts)"
printf '%-11s %12s %12s %7s %9s   %s\n' row A B B/A "round B/A" "runs A | runs B"
for row in "${ROWS[@]}"; do
    [[ -n ${V[$row.A]:-} ]] || continue
    a=$(median <<<"${V[$row.A]}") b=$(median <<<"${V[$row.B]}")
    paired=$(python3 -c 'import sys, statistics
a = [float(x) for x in sys.argv[1].split()]; b = [float(x) for x in sys.argv[2].split()]
print("%.3f" % statistics.median(y / x for x, y in zip(a, b) if x > 0))' "${V[$row.A]}" "${V[$row.B]}")
    printf '%-11s %12s %12s %7.3f %9s   %s| %s\n' "$row" "$a" "$b" "$(python3 -c "print($b / $a if $a else 0)")" "$paired" "${V[$row.A]}" "${V[$row.B]}"
done
