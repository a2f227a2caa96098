#!/usr/bin/env bash
# lossbench.sh: loss recovery, Linux TCP against zcstack through the
# impairing relay (zc-impair), measured in one run.
#
#   bash scripts/lossbench.sh   (as root) [--full] [--only REGEX] [--timeout S] [--runs N]
#                                  [--extra "ZC_IMPAIR_FLAGS"] [--seed N] [--out DIR]
#                                  [--kernel-cc NAME] [--zc-cc NAME] [--no-calibrate] [--no-install]
#                                  [--no-build]
#
# Builds the release binaries, installs what it needs (nginx, iperf3, curl,
# ethtool), brings up scripts/lossbed.sh (client ns <=> relay ns <=> server
# ns) and, for each row, runs Linux then zcstack through the same seeded
# impairment (the relay restarts for each transfer, so both see the same
# per-frame decisions):
#   http16m, http256m  a 16 / 256 MiB file: nginx (sendfile on) vs zc-httpd on
#                      AF_XDP; curl in the client ns; SHA-256 of what arrived
#   bulk32m-tx         32 MiB, the server sends: zc-perf --kernel vs zc-perf on
#                      AF_XDP (zc-perf --kernel client --reverse); pattern-checked
#   bulk32m-rx         the same, the server receives
# Paths: loss (both ways) 0.1 / 1 / 5 %, reordering 0 / 20 % (the held
# frame waits 0.5 / 3 / 10 ms more at RTT 1 / 10 / 50 ms), RTT 1 / 10 / 50 ms
# (half each way), bottleneck 100 Mbit/s or 1 Gbit/s both ways with a
# bandwidth-delay-product queue (at least 64 KiB).
# Default rows (about 10 minutes today, most of it zcstack waiting out
# timeouts): the issue's targets — 1% loss with 20% reordering for 16 MiB
# and 256 MiB, 5% loss — and a few neighbours (0.1% and 1% without
# reordering, RTT 50 ms at 100 Mbit/s, bulk both ways). --full: http16m on
# all 36 paths, plus http256m and bulk both ways on every 1%/20% path.
#
# --timeout S: per transfer (default 100); a stalled transfer is reported
#   as a timeout with the bytes that arrived, never hangs the script.
# --only REGEX: rows whose id matches (ids: WORKLOAD/lLOSS-rREORDER-rttMS-RATE).
# --extra FLAGS: appended to every path's zc-impair flags (e.g. the issue's
#   "--jitter 2ms --dup 1%"; not --corrupt: see docs/loss.md).
# --kernel-cc NAME: Linux's congestion control in the bed's namespaces
#   (default cubic, as zcstack's; this machine's own default may differ, e.g.
#   bbr, which does not slow down for random loss: run again with
#   --kernel-cc bbr to compare with it). Set per namespace, never globally.
# --zc-cc NAME: zcstack's congestion control, cubic (default) or bbr (the
#   apps' --cc).
# --no-calibrate: skip measuring the relay's unimpaired forwarding rate
#   (iperf3 through the relay against a direct veth pair, same run).
# Results: OUT/loss.md and OUT/loss.json (default scripts/bench-results/).
# Everything it creates is named zc*, uses 10.200.230-231.0/24 inside its
# namespaces only, every process is bounded by timeout(1), and the EXIT trap
# stops the servers and deletes the namespaces, also on failure or Ctrl-C.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# Both source tapbed.sh: source them before any bed exists.
# shellcheck source-path=SCRIPTDIR source=netns.sh
source "$HERE/netns.sh"
# shellcheck source-path=SCRIPTDIR source=lossbed.sh
source "$HERE/lossbed.sh"
# shellcheck source-path=SCRIPTDIR source=need.sh
source "$HERE/need.sh"
# shellcheck source-path=SCRIPTDIR source=nginx.sh
source "$HERE/nginx.sh"

FULL=0
ONLY=.
TIMEOUT=100
RUNS=1
EXTRA=
SEED=1
OUT=$HERE/bench-results
CALIBRATE=1
KERNEL_CC=cubic
ZC_CC=cubic
INSTALL=1
BUILD=1
COMMAND="lossbench.sh $*"

usage() {
    sed -n '5,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

while (($#)); do
    case $1 in
        --full) FULL=1; shift ;;
        --only) ONLY=${2:-}; shift 2 || usage ;;
        --timeout) TIMEOUT=${2:-}; shift 2 || usage ;;
        --runs) RUNS=${2:-}; shift 2 || usage ;;
        --extra) EXTRA=${2:-}; shift 2 || usage ;;
        --seed) SEED=${2:-}; shift 2 || usage ;;
        --out) OUT=${2:-}; shift 2 || usage ;;
        --kernel-cc) KERNEL_CC=${2:-}; shift 2 || usage ;;
        --zc-cc) ZC_CC=${2:-}; shift 2 || usage ;;
        --no-calibrate) CALIBRATE=0; shift ;;
        --no-install) INSTALL=0; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage 0 ;;
        *) echo "lossbench.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done
[[ $TIMEOUT =~ ^[0-9]+$ ]] && ((TIMEOUT >= 5 && TIMEOUT <= 3600)) ||
    { echo "lossbench.sh: --timeout '$TIMEOUT' must be 5..3600" >&2; exit 2; }
[[ $RUNS =~ ^[0-9]+$ ]] && ((RUNS >= 1 && RUNS <= 20)) ||
    { echo "lossbench.sh: --runs '$RUNS' must be 1..20" >&2; exit 2; }
[[ $SEED =~ ^[0-9]+$ ]] || { echo "lossbench.sh: --seed '$SEED' must be a number" >&2; exit 2; }
grep -qw -- "$KERNEL_CC" /proc/sys/net/ipv4/tcp_available_congestion_control 2>/dev/null || {
    echo "lossbench.sh: --kernel-cc '$KERNEL_CC' is not available here: $(cat /proc/sys/net/ipv4/tcp_available_congestion_control 2>/dev/null)" >&2
    exit 2
}
[[ $ZC_CC == cubic || $ZC_CC == bbr ]] ||
    { echo "lossbench.sh: --zc-cc '$ZC_CC' must be cubic or bbr" >&2; exit 2; }
[[ $EXTRA == *--corrupt* || $EXTRA == *--*-corrupt* ]] &&
    echo "lossbench.sh: note: zcstack on a veth trusts received checksums, so --corrupt hands it corrupted bytes (docs/loss.md)" >&2
if ((EUID != 0)); then
    echo "lossbench.sh: namespaces, veth and AF_XDP need root: run it in a root shell" >&2
    exit 1
fi

log() { printf '%s lossbench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---- set-up: packages, binaries, files ----

# Debian starts nginx and iperf3 daemons on install unless told not to;
# need.sh installs without letting any daemon start in the root namespace.
((INSTALL)) && zc_need lossbench.sh iperf3:iperf3 nginx:nginx curl:curl ethtool:ethtool \
    ip:iproute2 nstat:iproute2 python3:python3
for cmd in iperf3 nginx curl ethtool nstat python3; do
    command -v "$cmd" >/dev/null || { echo "lossbench.sh: $cmd is missing (run without --no-install)" >&2; exit 1; }
done

BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
ZC_LOSSBED_BIN=$BIN
if ((BUILD)); then
    zc_need_cargo lossbench.sh
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p zcstack-apps)
fi
for b in zc-impair zc-httpd zc-perf; do
    [[ -x $BIN/$b ]] || { echo "lossbench.sh: $BIN/$b missing: cargo build --release" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/zclossbench.XXXXXX)
chmod 755 "$WORK"
DL=/dev/shm/zclossbench.$$
RAW=$WORK/raw
mkdir -p "$RAW" "$OUT" "$DL"
: >"$WORK/rows.tsv"
: >"$WORK/runs.tsv"
remove_work() { rm -rf "$WORK" "$DL"; }
trap remove_work EXIT
zc_bed_on_exit remove_work

TAG=b$$
NET=230
CNS=$(zc_lossbed_ns c "$TAG") SNS=$(zc_lossbed_ns s "$TAG")
KADDR=10.200.$NET.3 ZADDR=10.200.$NET.2
SERVER_DEV=$ZC_LB_SERVER

# wait_line FILE REGEX SECS / wait_listen NS PORT: bounded readiness waits.
wait_line() {
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        grep -qE -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    log "no '$2' in $1 after $3 s: $(tail -c 300 "$1" 2>/dev/null)"
    return 1
}
wait_listen() {
    local i
    for ((i = 0; i < 100; i++)); do
        ip netns exec "$1" ss -Hltn "sport = :$2" 2>/dev/null | grep -q . && return 0
        sleep 0.05
    done
    log "nothing listens on port $2 in $1"
    return 1
}
# stop_pid PID SIGNAL: signal a server we started and wait for it (bounded).
stop_pid() {
    local pid=$1 i
    kill "-$2" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# nstat_snap F N: both namespaces' kernel TCP counters (absolute, history
# untouched) to F.snstatN (server) and F.cnstatN (client).
nstat_snap() {
    ip netns exec "$SNS" nstat -asz >"$1.snstat$2" 2>/dev/null || true
    ip netns exec "$CNS" nstat -asz >"$1.cnstat$2" 2>/dev/null || true
}

# ---- rows ----

# path_flags LOSS REORDER RTT RATE: zc-impair flags for one path.
path_flags() {
    local loss=$1 reorder=$2 rtt=$3 rate=$4 extra_ms bps queue
    case $rtt in 1) extra_ms=0.5 ;; 10) extra_ms=3 ;; *) extra_ms=10 ;; esac
    case $rate in 100mbit) bps=100000000 ;; 1gbit) bps=1000000000 ;; esac
    # Queue: one bandwidth-delay product, at least 64 KiB.
    queue=$((bps * rtt / 8000))
    ((queue < 65536)) && queue=65536
    local half f
    half=$(awk "BEGIN {print $rtt / 2}")
    f="--loss $loss% --delay ${half}ms --rate $rate --queue $queue --seed $SEED"
    [[ $reorder != 0 ]] && f+=" --reorder $reorder%:${extra_ms}ms"
    echo "$f $EXTRA"
}

declare -A FLAGS=() WORKLOAD=()
ROW_IDS=()
# add_row WORKLOAD LOSS REORDER RTT RATE
add_row() {
    local w=$1 loss=$2 reorder=$3 rtt=$4 rate=$5 id bytes sha label
    id="$w/l$loss-r$reorder-rtt$rtt-$rate"
    [[ $id =~ $ONLY ]] || return 0
    [[ -n ${FLAGS[$id]:-} ]] && return 0
    FLAGS[$id]=$(path_flags "$loss" "$reorder" "$rtt" "$rate")
    WORKLOAD[$id]=$w
    ROW_IDS+=("$id")
    case $w in
        http16m) bytes=$((16 << 20)); sha=$SHA16; label="HTTP 16 MiB" ;;
        http256m) bytes=$((256 << 20)); sha=$SHA256; label="HTTP 256 MiB" ;;
        bulk32m-tx) bytes=$((32 << 20)); sha=-; label="bulk 32 MiB, server sends" ;;
        bulk32m-rx) bytes=$((32 << 20)); sha=-; label="bulk 32 MiB, server receives" ;;
    esac
    local path="$loss% loss"
    [[ $reorder != 0 ]] && path+=", $reorder% reordered"
    path+=", RTT $rtt ms, ${rate/mbit/ Mbit/s}"
    path=${path/1gbit/1 Gbit/s}
    [[ -n $EXTRA ]] && path+=", $EXTRA"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$label" "$path" "$bytes" "$sha" "$TIMEOUT" >>"$WORK/rows.tsv"
}

# record ID RUN STACK KIND key=file...
record() {
    local id=$1 run=$2 stack=$3 kind=$4
    shift 4
    local IFS=,
    printf '%s\t%s\t%s\t%s\t%s\n' "$id" "$run" "$stack" "$kind" "$*" >>"$WORK/runs.tsv"
}

log "writing the 16 MiB and 256 MiB files"
mkdir -p "$WORK/www"
head -c $((16 << 20)) /dev/urandom >"$WORK/www/f16m.bin"
head -c $((256 << 20)) /dev/urandom >"$WORK/www/f256m.bin"
chmod -R a+rX "$WORK/www"
SHA16=$(sha256sum "$WORK/www/f16m.bin" | cut -d' ' -f1)
SHA256=$(sha256sum "$WORK/www/f256m.bin" | cut -d' ' -f1)

if ((FULL)); then
    for loss in 0.1 1 5; do
        for reorder in 0 20; do
            for rtt in 1 10 50; do
                for rate in 100mbit 1gbit; do
                    add_row http16m "$loss" "$reorder" "$rtt" "$rate"
                    if [[ $loss == 1 && $reorder == 20 ]]; then
                        add_row http256m 1 20 "$rtt" "$rate"
                        add_row bulk32m-tx 1 20 "$rtt" "$rate"
                        add_row bulk32m-rx 1 20 "$rtt" "$rate"
                    fi
                done
            done
        done
    done
else
    add_row http16m 1 20 10 1gbit
    add_row http256m 1 20 10 1gbit
    add_row http16m 5 0 10 1gbit
    add_row http16m 1 0 10 1gbit
    add_row http16m 0.1 0 10 1gbit
    add_row http16m 1 20 50 100mbit
    add_row bulk32m-tx 1 20 10 1gbit
    add_row bulk32m-rx 1 20 10 1gbit
fi
log "${#ROW_IDS[@]} rows x $RUNS runs, timeout $TIMEOUT s per transfer"

# ---- the bed and the servers ----

zc_lossbed_up "$TAG" "$NET" 1500
# Linux's congestion control: on the bed's subnet route in the two endpoint
# namespaces (a namespace may only make the machine's allowed algorithms its
# default, but a route may name any available one).
SYSTEM_CC=$(cat /proc/sys/net/ipv4/tcp_congestion_control)
for nd in "$CNS:$ZC_LB_CLIENT" "$SNS:$ZC_LB_SERVER"; do
    route=$(ip -n "${nd%%:*}" route show "10.200.$NET.0/24" dev "${nd##*:}" | head -1)
    # shellcheck disable=SC2086 # the route's words
    ip -n "${nd%%:*}" route replace $route dev "${nd##*:}" congctl "$KERNEL_CC"
done
log "bed up: $CNS <=> $(zc_lossbed_ns r "$TAG") <=> $SNS on 10.200.$NET.0/24; Linux TCP uses $KERNEL_CC (this machine's default: $SYSTEM_CC)"

zc_nginx_conf "$WORK" "$KADDR:80" "$WORK/www" 1024 - "sendfile on" "tcp_nopush on" >"$WORK/nginx.conf"
# nginx serves the kernel rows for the whole run (while a zcstack server
# holds the interface over AF_XDP, it just sees no traffic).
LIMIT=$(((TIMEOUT + 30) * (${#ROW_IDS[@]} * RUNS * 2 + 4) + 600))
ip netns exec "$SNS" timeout "$LIMIT" nginx -c "$WORK/nginx.conf" -p "$WORK" \
    -e "$WORK/nginx-error.log" >"$WORK/nginx.out" 2>&1 &
NGINX=$!
wait_listen "$SNS" 80

# ---- one transfer ----

# relay_start F FLAGS...: the relay for one transfer, counters to F.relay.
relay_start() {
    local f=$1
    shift
    zc_lossbed_relay "$TAG" "$f.relay.log" "$f.relay" "$@"
}

# http_run ID RUN STACK
http_run() {
    local id=$1 run=$2 stack=$3 f file addr rc=0 spid=
    f=$RAW/${id//\//_}.$run.$stack
    file=f16m.bin
    [[ ${WORKLOAD[$id]} == http256m ]] && file=f256m.bin
    # shellcheck disable=SC2086 # the path's flags are words
    relay_start "$f" ${FLAGS[$id]}
    nstat_snap "$f" 0
    if [[ $stack == kernel ]]; then
        addr=$KADDR
    else
        addr=$ZADDR
        ip netns exec "$SNS" timeout $((TIMEOUT + 60)) "$BIN/zc-httpd" --xdp "$SERVER_DEV" \
            --cc "$ZC_CC" --ip "$ZADDR/24" --root "$WORK/www" --port 80 --stats-json "$f.srv" >"$f.log" 2>&1 &
        spid=$!
        wait_line "$f.log" "serving" 10 || { stop_pid "$spid" KILL; zc_lossbed_stop_relay "$TAG"; return 1; }
    fi
    ip netns exec "$CNS" timeout $((TIMEOUT + 15)) curl -sS -o "$DL/body" --max-time "$TIMEOUT" \
        -w '{"bytes":%{size_download},"seconds":%{time_total},"http_code":%{http_code}}\n' \
        "http://$addr/$file" >"$f.curl" 2>"$f.err" || rc=$?
    echo "$rc" >"$f.rc"
    sha256sum "$DL/body" 2>/dev/null | cut -d' ' -f1 >"$f.sha" || true
    rm -f "$DL/body"
    nstat_snap "$f" 1
    [[ $stack == zcstack ]] && stop_pid "$spid" INT
    zc_lossbed_stop_relay "$TAG"
    record "$id" "$run" "$stack" http "curl=$f.curl" "rc=$f.rc" "err=$f.err" "sha=$f.sha" \
        "srv=$f.srv" "relay=$f.relay" "sender=server" "snstat0=$f.snstat0" "snstat1=$f.snstat1" \
        "cnstat0=$f.cnstat0" "cnstat1=$f.cnstat1"
    log "$id $stack: curl exit $rc, $(cat "$f.curl" 2>/dev/null)"
}

# bulk_run ID RUN STACK
bulk_run() {
    local id=$1 run=$2 stack=$3 f addr spid dir=()
    f=$RAW/${id//\//_}.$run.$stack
    [[ ${WORKLOAD[$id]} == bulk32m-tx ]] && dir=(--reverse)
    # shellcheck disable=SC2086 # the path's flags are words
    relay_start "$f" ${FLAGS[$id]}
    nstat_snap "$f" 0
    if [[ $stack == kernel ]]; then
        addr=$KADDR
        ip netns exec "$SNS" timeout $((TIMEOUT + 60)) "$BIN/zc-perf" server --kernel --once --json \
            >"$f.srv" 2>&1 &
        spid=$!
        wait_listen "$SNS" 5201 || { stop_pid "$spid" KILL; zc_lossbed_stop_relay "$TAG"; return 1; }
    else
        addr=$ZADDR
        ip netns exec "$SNS" timeout $((TIMEOUT + 60)) "$BIN/zc-perf" server --xdp "$SERVER_DEV" \
            --cc "$ZC_CC" --ip "$ZADDR/24" --once --json >"$f.srv" 2>&1 &
        spid=$!
        wait_line "$f.srv" listening 10 || { stop_pid "$spid" KILL; zc_lossbed_stop_relay "$TAG"; return 1; }
    fi
    ip netns exec "$CNS" timeout $((TIMEOUT + 15)) "$BIN/zc-perf" client --kernel --server "$addr" \
        --bytes 32M --seconds "$TIMEOUT" --json "${dir[@]}" >"$f.cli" 2>"$f.err" || true
    stop_pid "$spid" INT
    nstat_snap "$f" 1
    zc_lossbed_stop_relay "$TAG"
    local sender=server
    [[ ${WORKLOAD[$id]} == bulk32m-rx ]] && sender=client
    record "$id" "$run" "$stack" bulk "cli=$f.cli" "srv=$f.srv" "relay=$f.relay" "sender=$sender" \
        "snstat0=$f.snstat0" "snstat1=$f.snstat1" "cnstat0=$f.cnstat0" "cnstat1=$f.cnstat1"
    log "$id $stack: $(grep -ho '"bytes":[0-9]*,[^}]*"seconds":[0-9.]*' "$f.cli" | head -1)"
}

# ---- the relay's own rate, unimpaired (iperf3, same run as a direct pair) ----

STARTED=$(date +%s)
if ((CALIBRATE)); then
    dsns=zclds$$ dcns=zcldc$$
    zc_bed_trap "$dsns"
    zc_bed_trap "$dcns"
    zc_veth_up "$dsns" "$dcns" "10.200.$((NET + 1)).1/24" --offloads off --server-cidr "10.200.$((NET + 1)).3/24"
    for run in 1 2 3; do
        for kind in direct relay; do
            f=$RAW/calib.$kind.$run
            if [[ $kind == direct ]]; then
                s=$dsns c=$dcns a=10.200.$((NET + 1)).3
            else
                s=$SNS c=$CNS a=$KADDR
                relay_start "$f"
            fi
            ip netns exec "$s" timeout 30 iperf3 -s -1 -B "$a" >/dev/null 2>&1 &
            ipid=$!
            wait_listen "$s" 5201
            ip netns exec "$c" timeout 30 iperf3 -c "$a" -t 4 -C "$KERNEL_CC" -J >"$f.json" 2>/dev/null || true
            stop_pid "$ipid" TERM
            [[ $kind == relay ]] && zc_lossbed_stop_relay "$TAG"
            record calib "$run" "$kind" iperf3 "cli=$f.json"
        done
    done
    zc_bed_down "$dcns"
    zc_bed_down "$dsns"
    log "relay calibration done"
fi

for ((run = 1; run <= RUNS; run++)); do
    for id in "${ROW_IDS[@]}"; do
        for stack in kernel zcstack; do
            case ${WORKLOAD[$id]} in
                http*) http_run "$id" "$run" "$stack" ;;
                bulk*) bulk_run "$id" "$run" "$stack" ;;
            esac || log "$id $stack: run $run failed to start (see the table)"
        done
    done
    log "run $run of $RUNS done"
done
ELAPSED=$(($(date +%s) - STARTED))
stop_pid "$NGINX" TERM

MACHINE="$(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r), $(rustc --version 2>/dev/null | awk '{print "Rust " $2}')"
python3 "$HERE/lossbench_report.py" --rows "$WORK/rows.tsv" --runs "$WORK/runs.tsv" --out "$OUT" \
    --machine "$MACHINE" --date "$(date -u +%Y-%m-%d)" --elapsed "$ELAPSED" --command "$COMMAND" \
    --kernel-cc "$KERNEL_CC" --system-cc "$SYSTEM_CC" --zc-cc "$ZC_CC"
log "done in $ELAPSED s: $OUT/loss.md, $OUT/loss.json"
