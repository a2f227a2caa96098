#!/usr/bin/env bash
# bench.sh: zcstack against the kernel, measured in one run, peers side by side.
#
#   bash scripts/bench.sh [--quick] [--runs N] [--seconds S] [--only REGEX]
#                         [--out DIR] [--no-install] [--no-build] [--no-pin]
#                         [--previous results.json]
#
# --quick: 1 run per row, 1 s each, a 256 MiB file (checks the script, ~1 min).
# --runs N (default 5), --seconds S per TCP/UDP/wrk run (default 2).
# --only REGEX: only the rows whose id matches (ids below).
# --previous FILE: take rows this run does not measure from an earlier
#   results.json (they are marked "earlier run" in the table).
# --no-pin: do not pin servers to the last CPU and clients to the first.
#
# Builds the release binaries, installs what it needs with apt (iperf3,
# nginx, wrk, curl, ethtool, python3-matplotlib), and for each test bed
# creates its own namespaces (scripts/netns.sh: server ns <= veth => client
# ns; scripts/tapbed.sh: one ns with a TAP device), runs every row of that
# bed N times (runs interleaved across the bed's rows, so slow drift hits
# every row alike), and deletes the bed. Then scripts/bench_report.py turns
# the raw figures into one markdown table (median, min, max, ratio to the
# row's kernel peer), JSON and a PNG bar chart in OUT (default
# scripts/bench-results/).
#
# Rows (ids, for --only):
#   tcp/<bed>/kernel-iperf3      iperf3 client (client ns) -> iperf3 server (server ns)
#   tcp/<bed>/kernel-iperf3-Z    the same with iperf3 -Z (sendfile on the sender)
#   tcp/<bed>/kernel-zcperf      zc-perf --kernel at both ends (checks every byte)
#   tcp/<bed>/xdp-rx             kernel zc-perf client -> zc-perf server on AF_XDP
#   tcp/<bed>/xdp-tx             the same with --reverse: zcstack sends
#   tcp/1500-off/xdp-{rx,tx}-stock  xdp-rx/tx with --smoltcp-defaults (stock smoltcp baseline)
#   tcp/{1500-off,1500-on,9000}/xdp-gso-{tx,rx}   xdp-tx/rx with --tx-gso (64 KiB
#       segments through AF_PACKET; rx: the ACKs take that path)
#   tcp/{1500-off,1500-on}/xdp-gso-{tx,rx}-sx    the same with --tx-gso-small xdp
#       (ACKs and small segments on the AF_XDP ring)
#   tcp/tap/tap-{rx,tx}, tap-{rx,tx}-stock   zc-perf server on TAP (MTU 1500)
#   tcp/tap/tap-tso-rx, tap-tso-tx   the same with --tap-offload (TSO, 64 KiB
#       segments through IFF_VNET_HDR), when zc-perf has that flag
#   udp/1500-off/{kernel,xdp-rx,xdp-tx}    64-byte datagrams per second (zcstack:
#       the datagram API, no payload copy; kernel: sendmmsg/recvmmsg, 32/64 a call)
#   udp/1500-off-1472/{kernel,xdp-rx,xdp-tx}   the same with 1472-byte datagrams
#   udp/1500-off/{kernel-rx-zc,xdp-rx-zc}   64-byte datagrams from a zcstack
#       sender (AF_XDP on the client's veth end, which outpaces a kernel
#       sender) to the kernel and to zcstack: the receivers side by side
#       with the same sender
#   udp/mq/{q1,q2}   two kernel UDP clients (64 B, pinned to CPU 0 and CPU 1)
#       -> one zc-perf server on AF_XDP on a two-queue veth, with --queues 1
#       (both flows steered to queue 0) and --queues 2 (one flow per queue):
#       the total received; XPS on the client's veth picks the queue by CPU
#   http/{1500-on,1500-off,9000,65535}/{nginx-sendfile-on,nginx-sendfile-off,zc-httpd}-{1g,64k}
#       a 1 GiB file with curl (page cache warm), 64 KiB files with wrk
#       (16 keep-alive connections, one thread), MTU 1500, 9000 and 65535
#   http/{1500-on,1500-off,9000}/zc-httpd-gso-{1g,64k}   zc-httpd --xdp --tx-gso
#   http/tap/zc-httpd-tso-{1g,64k}   zc-httpd --tap-offload on a TAP (MTU 1500,
#       clients in the same namespace); peers: the MTU 1500 nginx rows
# Beds: 1500-off (MTU 1500, offloads off: the fair per-packet row),
# 1500-on (MTU 1500, the kernel's offloads), 9000, 65535 (offloads on).
#
# Everything it creates is named zc*, uses 10.200.210-220.0/24 inside its
# namespaces only, every load is bounded in time (timeout(1) around every
# process), and the EXIT trap stops the servers and deletes the namespaces,
# also on failure or Ctrl-C. nginx runs inside the server namespace with its
# own config in a temporary directory. Not part of the test suite.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=netns.sh
source "$HERE/netns.sh"
# shellcheck source-path=SCRIPTDIR source=nginx.sh
source "$HERE/nginx.sh"

RUNS=5
SECONDS_PER_RUN=2
PIN=1
PREVIOUS=
ONLY=.
OUT=$HERE/bench-results
INSTALL=1
BUILD=1
QUICK=0
BIG_MIB=1024

usage() {
    sed -n '3,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

while (($#)); do
    case $1 in
        --quick) QUICK=1; RUNS=1; SECONDS_PER_RUN=1; BIG_MIB=256; shift ;;
        --runs) RUNS=${2:-}; shift 2 || usage ;;
        --seconds) SECONDS_PER_RUN=${2:-}; shift 2 || usage ;;
        --only) ONLY=${2:-}; shift 2 || usage ;;
        --out) OUT=${2:-}; shift 2 || usage ;;
        --no-install) INSTALL=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --no-pin) PIN=0; shift ;;
        --previous) PREVIOUS=${2:-}; shift 2 || usage ;;
        -h | --help) usage 0 ;;
        *) echo "bench.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done
if ! [[ $RUNS =~ ^[0-9]+$ ]] || ((RUNS < 1 || RUNS > 50)); then
    echo "bench.sh: --runs '$RUNS' must be 1..50" >&2
    exit 2
fi
if ! [[ $SECONDS_PER_RUN =~ ^[0-9]+$ ]] || ((SECONDS_PER_RUN < 1 || SECONDS_PER_RUN > 60)); then
    echo "bench.sh: --seconds '$SECONDS_PER_RUN' must be 1..60" >&2
    exit 2
fi
if [[ -n $PREVIOUS && ! -r $PREVIOUS ]]; then
    echo "bench.sh: --previous '$PREVIOUS' is not a readable file" >&2
    exit 2
fi
if ((EUID != 0)); then
    echo "bench.sh: namespaces, veth, TAP and AF_XDP need root: run it as root" >&2
    exit 1
fi

log() { printf '%s bench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---- set-up: packages, binaries, scratch directory ----

install_packages() {
    local need=() cmd
    for cmd in iperf3:iperf3 nginx:nginx wrk:wrk curl:curl ethtool:ethtool ip:iproute2; do
        command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd#*:}")
    done
    /usr/bin/python3 -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
    ((${#need[@]})) || return 0
    log "installing ${need[*]}"
    # Debian starts nginx and iperf3 daemons on install unless policy-rc.d
    # says no: a daemon in the root namespace is not ours to start. Only a
    # policy file we created is removed again.
    local policy=/usr/sbin/policy-rc.d made=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || rc=$?
    if ((made)); then
        rm -f "$policy"
        trap - EXIT
    fi
    ((rc == 0)) || { echo "bench.sh: apt-get install ${need[*]} failed" >&2; exit 1; }
}

((INSTALL)) && install_packages
for cmd in iperf3 nginx wrk curl ethtool; do
    command -v "$cmd" >/dev/null || { echo "bench.sh: $cmd is missing (run without --no-install)" >&2; exit 1; }
done
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
if ((BUILD)); then
    # sudo may drop rustup's directory from PATH.
    if ! command -v cargo >/dev/null; then
        for env in "$HOME/.cargo/env" "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)/.cargo/env"; do
            # shellcheck source=/dev/null
            [[ -f $env ]] && source "$env" && break
        done
    fi
    command -v cargo >/dev/null || { echo "bench.sh: cargo not found: install Rust (rustup) or pass --no-build" >&2; exit 1; }
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p zcstack-apps)
fi
[[ -x $BIN/zc-perf ]] || { echo "bench.sh: $BIN/zc-perf missing: build with cargo build --release" >&2; exit 1; }
HAVE_HTTPD=0
[[ -x $BIN/zc-httpd ]] && HAVE_HTTPD=1

WORK=$(mktemp -d /tmp/zcbench.XXXXXX)
chmod 755 "$WORK"
RAW=$WORK/raw
mkdir -p "$RAW" "$OUT"
: >"$WORK/rows.tsv"
: >"$WORK/runs.tsv"
remove_work() { rm -rf "$WORK"; }
# Until the first bed installs its trap (which runs this hook too).
trap remove_work EXIT
zc_bed_on_exit remove_work

# ---- helpers ----

TAG=$$
S=$SECONDS_PER_RUN
CLIENT_LIMIT=$((S + 30))
SERVER_LIMIT=$((S + 40))
HZ=$(getconf CLK_TCK)

wanted() { [[ $1 =~ $ONLY ]]; }

# Servers run on the last CPU, clients on the first (with 2 or more CPUs),
# so the scheduler never stacks both ends on one CPU mid-run.
SRV=() CLI=()
if ((PIN)) && (($(nproc) >= 2)); then
    SRV=(taskset -c "$(($(nproc) - 1))")
    CLI=(taskset -c 0)
fi

# row ID SECTION LABEL PEER: declares a row (printed once).
declare -A DECLARED=()
row() {
    [[ -n ${DECLARED[$1]:-} ]] && return 0
    DECLARED[$1]=1
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$WORK/rows.tsv"
}

# record ID RUN KIND FILE...: one run's raw outputs, parsed by bench_report.py.
record() {
    local id=$1 run=$2 kind=$3
    shift 3
    local IFS=,
    printf '%s\t%s\t%s\t%s\n' "$id" "$run" "$kind" "$*" >>"$WORK/runs.tsv"
}

# wait_line FILE REGEX SECS: until FILE has a line matching REGEX.
wait_line() {
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        grep -qE -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "bench.sh: no '$2' in $1 after $3 s: $(tail -c 400 "$1" 2>/dev/null)" >&2
    return 1
}

# wait_listen NS tcp|udp PORT: until a kernel socket listens on PORT in NS.
wait_listen() {
    local i flag=-Hltn
    [[ $2 == udp ]] && flag=-Hlun
    for ((i = 0; i < 100; i++)); do
        ip netns exec "$1" ss "$flag" "sport = :$3" 2>/dev/null | grep -q . && return 0
        sleep 0.05
    done
    echo "bench.sh: nothing listens on $2 port $3 in $1" >&2
    return 1
}

# ns_cpu NS [COMM]: CPU ticks (user + system) of every process in NS (only
# those named COMM, when given: on a TAP bed the client shares the namespace).
ns_cpu() {
    local pid t=0 f
    for pid in $(ip netns pids "$1" 2>/dev/null); do
        [[ -z ${2:-} || $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || continue
        # Fields 14, 15 of /proc/PID/stat (after the parenthesised name).
        f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        read -r -a a <<<"$f"
        t=$((t + a[11] + a[12]))
    done
    echo "$t"
}

# stop_job PID: wait for a server to end (they exit after one test); bounded.
stop_job() {
    local pid=$1 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.05
    done
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# failed ID RUN: a run that failed is logged and left to the table (its
# outputs do not parse, so the row lists it as failed); the script goes on.
failed() { log "$1: run $2 failed (see the table)"; }

# ---- the rows ----

# iperf3 SNS CNS ADDR ID RUN [-Z]
run_iperf3() {
    local sns=$1 cns=$2 addr=$3 id=$4 run=$5 z=${6:-} f=$RAW/${4//\//_}.$5
    ip netns exec "$sns" "${SRV[@]}" timeout "$SERVER_LIMIT" iperf3 -s -1 -B "$addr" -J >"$f.srv" 2>&1 &
    local spid=$!
    wait_listen "$sns" tcp 5201
    # shellcheck disable=SC2086 # $z is empty or -Z
    ip netns exec "$cns" "${CLI[@]}" timeout "$CLIENT_LIMIT" iperf3 -c "$addr" -t "$S" $z -J >"$f.cli"
    stop_job "$spid"
    record "$id" "$run" iperf3 "$f.cli"
}

# zcperf_kernel SNS CNS ADDR ID RUN
run_zcperf_kernel() {
    local sns=$1 cns=$2 addr=$3 id=$4 run=$5 f=$RAW/${4//\//_}.$5
    ip netns exec "$sns" "${SRV[@]}" timeout "$SERVER_LIMIT" "$BIN/zc-perf" server --kernel --once --json >"$f.srv" 2>&1 &
    local spid=$!
    wait_listen "$sns" tcp 5201
    ip netns exec "$cns" "${CLI[@]}" timeout "$CLIENT_LIMIT" "$BIN/zc-perf" client --kernel --server "$addr" \
        --seconds "$S" --json >"$f.cli"
    stop_job "$spid"
    record "$id" "$run" zcperf "$f.cli" "$f.srv"
}

# zcperf_zc NS CNS DEVFLAGS STACK_CIDR ID RUN EXTRA...: zc-perf server on
# zcstack (DEVFLAGS: "--xdp zcsv0" or "--tap NAME") in NS, kernel client in CNS.
run_zcperf_zc() {
    local sns=$1 cns=$2 dev=$3 cidr=$4 id=$5 run=$6 f=$RAW/${5//\//_}.$6
    shift 6
    local stock=() client=()
    for a in "$@"; do
        case $a in
            --smoltcp-defaults) stock=(--smoltcp-defaults) ;;
            *) client+=("$a") ;;
        esac
    done
    # shellcheck disable=SC2086 # $dev is two words
    ip netns exec "$sns" "${SRV[@]}" timeout "$SERVER_LIMIT" "$BIN/zc-perf" server $dev --ip "$cidr" \
        "${stock[@]}" --once --json >"$f.srv" 2>&1 &
    local spid=$!
    wait_line "$f.srv" listening 10
    ip netns exec "$cns" "${CLI[@]}" timeout "$CLIENT_LIMIT" "$BIN/zc-perf" client --kernel --server "${cidr%/*}" \
        --seconds "$S" --json "${client[@]}" >"$f.cli"
    stop_job "$spid"
    record "$id" "$run" zcperf "$f.cli" "$f.srv"
}

# udp_zc_sender SNS CNS KADDR ZCIDR SENDER_CIDR ID RUN kernel|xdp: a
# zcstack client on AF_XDP on the client's veth end sends 64-byte datagrams
# to a kernel server (KADDR) or a zcstack server (ZCIDR).
run_udp_zc_sender() {
    local sns=$1 cns=$2 kaddr=$3 zcidr=$4 scidr=$5 id=$6 run=$7 target=$8 f=$RAW/${6//\//_}.$7 to
    if [[ $target == kernel ]]; then
        ip netns exec "$sns" "${SRV[@]}" timeout "$SERVER_LIMIT" "$BIN/zc-perf" server --kernel --udp --once --json >"$f.srv" 2>&1 &
        to=$kaddr
    else
        ip netns exec "$sns" "${SRV[@]}" timeout "$SERVER_LIMIT" "$BIN/zc-perf" server --xdp "$ZC_VETH_SERVER" \
            --ip "$zcidr" --udp --once --json >"$f.srv" 2>&1 &
        to=${zcidr%/*}
    fi
    local spid=$!
    if [[ $target == kernel ]]; then wait_listen "$sns" udp 5201; else wait_line "$f.srv" listening 10; fi
    ip netns exec "$cns" "${CLI[@]}" timeout "$CLIENT_LIMIT" "$BIN/zc-perf" client --xdp "$ZC_VETH_CLIENT" \
        --ip "$scidr" --udp --size 64 --server "$to" --seconds "$S" --json >"$f.cli" 2>"$f.err"
    stop_job "$spid"
    record "$id" "$run" udp "$f.cli" "$f.srv"
}

# udp_size ID: the datagram size of a UDP row (udp/<bed>-1472/...: 1472, else 64).
udp_size() {
    if [[ $1 == udp/*-1472/* ]]; then echo 1472; else echo 64; fi
}

# udp_kernel SNS CNS ADDR ID RUN: kernel -> kernel.
run_udp_kernel() {
    local sns=$1 cns=$2 addr=$3 id=$4 run=$5 f=$RAW/${4//\//_}.$5
    ip netns exec "$sns" "${SRV[@]}" timeout "$SERVER_LIMIT" "$BIN/zc-perf" server --kernel --udp --once --json >"$f.srv" 2>&1 &
    local spid=$!
    wait_listen "$sns" udp 5201
    ip netns exec "$cns" "${CLI[@]}" timeout "$CLIENT_LIMIT" "$BIN/zc-perf" client --kernel --udp --size "$(udp_size "$id")" \
        --server "$addr" --seconds "$S" --json >"$f.cli"
    stop_job "$spid"
    record "$id" "$run" udp "$f.cli" "$f.srv"
}

# udp_xdp_rx SNS CNS CIDR ID RUN: kernel client -> zcstack server on AF_XDP.
run_udp_xdp_rx() {
    local sns=$1 cns=$2 cidr=$3 id=$4 run=$5 f=$RAW/${4//\//_}.$5
    ip netns exec "$sns" "${SRV[@]}" timeout "$SERVER_LIMIT" "$BIN/zc-perf" server --xdp "$ZC_VETH_SERVER" \
        --ip "$cidr" --udp --once --json >"$f.srv" 2>&1 &
    local spid=$!
    wait_line "$f.srv" listening 10
    ip netns exec "$cns" "${CLI[@]}" timeout "$CLIENT_LIMIT" "$BIN/zc-perf" client --kernel --udp --size "$(udp_size "$id")" \
        --server "${cidr%/*}" --seconds "$S" --json >"$f.cli"
    stop_job "$spid"
    record "$id" "$run" udp "$f.cli" "$f.srv"
}

# udp_xdp_tx SNS CNS CIDR KADDR ID RUN: zcstack client on AF_XDP -> kernel server.
run_udp_xdp_tx() {
    local sns=$1 cns=$2 cidr=$3 kaddr=$4 id=$5 run=$6 f=$RAW/${5//\//_}.$6
    ip netns exec "$cns" "${SRV[@]}" timeout "$SERVER_LIMIT" "$BIN/zc-perf" server --kernel --udp --once --json >"$f.srv" 2>&1 &
    local spid=$!
    wait_listen "$cns" udp 5201
    ip netns exec "$sns" "${CLI[@]}" timeout "$CLIENT_LIMIT" "$BIN/zc-perf" client --xdp "$ZC_VETH_SERVER" \
        --ip "$cidr" --udp --size "$(udp_size "$id")" --server "$kaddr" --seconds "$S" --json >"$f.cli" 2>"$f.err"
    stop_job "$spid"
    record "$id" "$run" udp "$f.cli" "$f.srv"
}

# udp_mq SNS CNS CIDR ID RUN Q: two kernel clients, pinned to CPU 0 and
# CPU 1, each one flow of 64-byte datagrams -> one zc-perf server with
# --queues Q on AF_XDP. Steering: a veth delivers on the RX queue numbered
# like the sender's TX queue, and XPS on the client's veth picks the TX
# queue by the sending CPU: for Q=2 CPU 0 -> queue 0, CPU 1 -> queue 1; for
# Q=1 both CPUs -> queue 0. The server is not pinned as a whole: its queue
# threads pin themselves, queue q to CPU q.
run_udp_mq() {
    local sns=$1 cns=$2 cidr=$3 id=$4 run=$5 q=$6 f=$RAW/${4//\//_}.$5 x0=1 x1=2
    ((q == 1)) && x0=3 x1=0
    ip netns exec "$cns" sh -c "echo $x0 > /sys/class/net/$ZC_VETH_CLIENT/queues/tx-0/xps_cpus && \
        echo $x1 > /sys/class/net/$ZC_VETH_CLIENT/queues/tx-1/xps_cpus" || return
    ip netns exec "$sns" timeout "$SERVER_LIMIT" "$BIN/zc-perf" server --xdp "$ZC_VETH_SERVER" \
        --ip "$cidr" --udp --queues "$q" --json >"$f.srv" 2>&1 &
    local spid=$! c0 c1 rc=0
    wait_line "$f.srv" listening 10
    ip netns exec "$cns" taskset -c 0 timeout "$CLIENT_LIMIT" "$BIN/zc-perf" client --kernel --udp --size 64 \
        --server "${cidr%/*}" --seconds "$S" --json >"$f.cli0" &
    c0=$!
    ip netns exec "$cns" taskset -c 1 timeout "$CLIENT_LIMIT" "$BIN/zc-perf" client --kernel --udp --size 64 \
        --server "${cidr%/*}" --seconds "$S" --json >"$f.cli1" &
    c1=$!
    wait "$c0" || rc=1
    wait "$c1" || rc=1
    stop_job "$spid"
    record "$id" "$run" udpmq "$f.srv" "$f.cli0" "$f.cli1"
    return $rc
}

# ---- the beds ----

NET=210

# tcp_bed NAME MTU OFFLOADS: the veth bed with kernel and AF_XDP rows.
tcp_bed() {
    local name=$1 mtu=$2 off=$3 net=$((NET++))
    local pfx=tcp/$name ids=() id
    local kaddr=10.200.$net.3 zcidr=10.200.$net.2/24 caddr=10.200.$net.1
    local label="MTU $mtu, offloads $off"
    row "$pfx/kernel-iperf3" "TCP, $label" "kernel: iperf3" ""
    row "$pfx/kernel-iperf3-Z" "TCP, $label" "kernel: iperf3 -Z (sendfile)" "$pfx/kernel-iperf3"
    row "$pfx/kernel-zcperf" "TCP, $label" "kernel: zc-perf both ends" "$pfx/kernel-iperf3"
    row "$pfx/xdp-rx" "TCP, $label" "zcstack AF_XDP receives (kernel client)" "$pfx/kernel-iperf3"
    row "$pfx/xdp-tx" "TCP, $label" "zcstack AF_XDP sends (kernel receiver)" "$pfx/kernel-iperf3"
    ids=("$pfx/kernel-iperf3" "$pfx/kernel-iperf3-Z" "$pfx/kernel-zcperf" "$pfx/xdp-rx" "$pfx/xdp-tx")
    if [[ $name == 1500-off ]]; then
        row "$pfx/xdp-rx-stock" "TCP, $label" "stock smoltcp settings, AF_XDP receives" "$pfx/kernel-iperf3"
        row "$pfx/xdp-tx-stock" "TCP, $label" "stock smoltcp settings, AF_XDP sends" "$pfx/kernel-iperf3"
        ids+=("$pfx/xdp-rx-stock" "$pfx/xdp-tx-stock")
        local u size
        for size in 64 1472; do
            u=udp/$name
            [[ $size == 64 ]] || u=udp/$name-$size
            row "$u/kernel" "UDP $size B, $label" "kernel receives (zc-perf --kernel --udp, recvmmsg)" ""
            row "$u/kernel-tx" "UDP $size B, $label" "kernel sends (same runs, sendmmsg)" ""
            row "$u/xdp-rx" "UDP $size B, $label" "zcstack AF_XDP receives, datagram API (kernel sender)" "$u/kernel"
            row "$u/xdp-tx" "UDP $size B, $label" "zcstack AF_XDP sends, datagram API (kernel receiver)" "$u/kernel-tx"
            ids+=("$u/kernel" "$u/xdp-rx" "$u/xdp-tx")
        done
        row "udp/$name/kernel-rx-zc" "UDP 64 B, $label" "kernel receives from a zcstack sender" ""
        row "udp/$name/xdp-rx-zc" "UDP 64 B, $label" "zcstack AF_XDP receives from a zcstack sender" "udp/$name/kernel-rx-zc"
        ids+=("udp/$name/kernel-rx-zc" "udp/$name/xdp-rx-zc")
    fi
    if [[ $name != 65535 ]]; then
        row "$pfx/xdp-gso-tx" "TCP, $label" "zcstack AF_XDP --tx-gso sends (TSO through AF_PACKET)" "$pfx/kernel-iperf3"
        row "$pfx/xdp-gso-rx" "TCP, $label" "zcstack AF_XDP --tx-gso receives (ACKs through AF_PACKET)" "$pfx/kernel-iperf3"
        ids+=("$pfx/xdp-gso-tx" "$pfx/xdp-gso-rx")
    fi
    if [[ $name == 1500-* ]]; then
        row "$pfx/xdp-gso-tx-sx" "TCP, $label" "zcstack --tx-gso --tx-gso-small xdp sends" "$pfx/kernel-iperf3"
        row "$pfx/xdp-gso-rx-sx" "TCP, $label" "zcstack --tx-gso --tx-gso-small xdp receives (ACKs on the AF_XDP ring)" "$pfx/kernel-iperf3"
        ids+=("$pfx/xdp-gso-tx-sx" "$pfx/xdp-gso-rx-sx")
    fi
    local todo=()
    for id in "${ids[@]}"; do wanted "$id" && todo+=("$id"); done
    ((${#todo[@]})) || return 0
    local sns=zcbs$TAG$net cns=zcbc$TAG$net
    zc_bed_trap "$sns"
    zc_bed_trap "$cns"
    log "bed $name: MTU $mtu, offloads $off (${#todo[@]} rows x $RUNS runs)"
    zc_veth_up "$sns" "$cns" "$caddr/24" --mtu "$mtu" --offloads "$off" --server-cidr "$kaddr/24"
    local run
    for ((run = 1; run <= RUNS; run++)); do
        for id in "${todo[@]}"; do
            case ${id##*/} in
                kernel-iperf3) run_iperf3 "$sns" "$cns" "$kaddr" "$id" "$run" ;;
                kernel-iperf3-Z) run_iperf3 "$sns" "$cns" "$kaddr" "$id" "$run" -Z ;;
                kernel-zcperf) run_zcperf_kernel "$sns" "$cns" "$kaddr" "$id" "$run" ;;
                xdp-rx) if [[ $id == udp/* ]]; then
                        run_udp_xdp_rx "$sns" "$cns" "$zcidr" "$id" "$run"
                    else
                        run_zcperf_zc "$sns" "$cns" "--xdp $ZC_VETH_SERVER" "$zcidr" "$id" "$run"
                    fi ;;
                xdp-tx) if [[ $id == udp/* ]]; then
                        run_udp_xdp_tx "$sns" "$cns" "$zcidr" "$caddr" "$id" "$run"
                    else
                        run_zcperf_zc "$sns" "$cns" "--xdp $ZC_VETH_SERVER" "$zcidr" "$id" "$run" --reverse
                    fi ;;
                xdp-rx-stock) run_zcperf_zc "$sns" "$cns" "--xdp $ZC_VETH_SERVER" "$zcidr" "$id" "$run" --smoltcp-defaults ;;
                xdp-tx-stock) run_zcperf_zc "$sns" "$cns" "--xdp $ZC_VETH_SERVER" "$zcidr" "$id" "$run" --smoltcp-defaults --reverse ;;
                xdp-gso-rx) run_zcperf_zc "$sns" "$cns" "--xdp $ZC_VETH_SERVER --tx-gso" "$zcidr" "$id" "$run" ;;
                xdp-gso-tx) run_zcperf_zc "$sns" "$cns" "--xdp $ZC_VETH_SERVER --tx-gso" "$zcidr" "$id" "$run" --reverse ;;
                xdp-gso-rx-sx) run_zcperf_zc "$sns" "$cns" "--xdp $ZC_VETH_SERVER --tx-gso --tx-gso-small xdp" "$zcidr" "$id" "$run" ;;
                xdp-gso-tx-sx) run_zcperf_zc "$sns" "$cns" "--xdp $ZC_VETH_SERVER --tx-gso --tx-gso-small xdp" "$zcidr" "$id" "$run" --reverse ;;
                kernel) run_udp_kernel "$sns" "$cns" "$kaddr" "$id" "$run" ;;
                kernel-rx-zc) run_udp_zc_sender "$sns" "$cns" "$kaddr" "$zcidr" "10.200.$net.4/24" "$id" "$run" kernel ;;
                xdp-rx-zc) run_udp_zc_sender "$sns" "$cns" "$kaddr" "$zcidr" "10.200.$net.4/24" "$id" "$run" xdp ;;
            esac || failed "$id" "$run"
        done
        log "bed $name: run $run of $RUNS done"
    done
    zc_bed_down "$cns"
    zc_bed_down "$sns"
}

# mq_bed: a two-queue veth (MTU 1500, offloads off), zc-perf --queues 1 vs 2.
mq_bed() {
    local net=$((NET++)) id todo=()
    local zcidr=10.200.$net.2/24 caddr=10.200.$net.1
    row "udp/mq/q1" "UDP 64 B, two flows, two-queue veth" "zcstack AF_XDP, --queues 1 (both flows on queue 0)" ""
    row "udp/mq/q2" "UDP 64 B, two flows, two-queue veth" "zcstack AF_XDP, --queues 2 (a flow per queue)" "udp/mq/q1"
    for id in udp/mq/q1 udp/mq/q2; do wanted "$id" && todo+=("$id"); done
    ((${#todo[@]})) || return 0
    if (($(nproc) < 2)); then
        log "bed mq: skipped, it needs 2 CPUs"
        return 0
    fi
    local sns=zcbs$TAG$net cns=zcbc$TAG$net run
    zc_bed_trap "$sns"
    zc_bed_trap "$cns"
    log "bed mq: two queues (${#todo[@]} rows x $RUNS runs)"
    zc_veth_up "$sns" "$cns" "$caddr/24" --offloads off --queues 2
    for ((run = 1; run <= RUNS; run++)); do
        for id in "${todo[@]}"; do
            run_udp_mq "$sns" "$cns" "$zcidr" "$id" "$run" "${id##*/q}" || failed "$id" "$run"
        done
        log "bed mq: run $run of $RUNS done"
    done
    zc_bed_down "$cns"
    zc_bed_down "$sns"
}

# tap_bed NAME: zcstack on a TAP device, kernel client in the same
# namespace. NAME plain: the TAP as is; tso: zc-perf --tap-offload. Each has
# its own namespace and TAP: an offload run leaves the persistent TAP with
# its offloads on, and a plain reader then gets 64 KiB frames it drops.
tap_bed() {
    local kind=$1 net=$((NET++)) pfx=tcp/tap id ids=() todo=() dev
    local label="TAP, MTU 1500"
    if [[ $kind == plain ]]; then
        row "$pfx/tap-rx" "TCP, $label" "zcstack TAP receives (kernel client)" "tcp/1500-on/kernel-iperf3"
        row "$pfx/tap-tx" "TCP, $label" "zcstack TAP sends (kernel receiver)" "tcp/1500-on/kernel-iperf3"
        row "$pfx/tap-rx-stock" "TCP, $label" "stock smoltcp settings, TAP receives" "tcp/1500-on/kernel-iperf3"
        row "$pfx/tap-tx-stock" "TCP, $label" "stock smoltcp settings, TAP sends" "tcp/1500-on/kernel-iperf3"
        ids=("$pfx/tap-rx" "$pfx/tap-tx" "$pfx/tap-rx-stock" "$pfx/tap-tx-stock")
    else
        row "$pfx/tap-tso-rx" "TCP, $label" "zcstack TAP --tap-offload (TSO) receives" "tcp/1500-on/kernel-iperf3"
        row "$pfx/tap-tso-tx" "TCP, $label" "zcstack TAP --tap-offload (TSO) sends" "tcp/1500-on/kernel-iperf3"
        if "$BIN/zc-perf" server --help 2>/dev/null | grep -q -- --tap-offload; then
            ids=("$pfx/tap-tso-rx" "$pfx/tap-tso-tx")
        else
            log "zc-perf has no --tap-offload on this branch: the TAP TSO rows are skipped"
        fi
    fi
    for id in "${ids[@]}"; do wanted "$id" && todo+=("$id"); done
    ((${#todo[@]})) || return 0
    local ns=zcbt$TAG$net tap=zct$TAG$net
    tap=${tap:0:15}
    dev="--tap $tap"
    [[ $kind == tso ]] && dev+=" --tap-offload"
    zc_bed_trap "$ns"
    log "bed tap $kind: MTU 1500 (${#todo[@]} rows x $RUNS runs)"
    zc_bed_up "$ns" "$tap" "10.200.$net.1/24"
    local run
    for ((run = 1; run <= RUNS; run++)); do
        for id in "${todo[@]}"; do
            case ${id##*/} in
                tap-rx | tap-tso-rx) run_zcperf_zc "$ns" "$ns" "$dev" "10.200.$net.2/24" "$id" "$run" ;;
                tap-tx | tap-tso-tx) run_zcperf_zc "$ns" "$ns" "$dev" "10.200.$net.2/24" "$id" "$run" --reverse ;;
                tap-rx-stock) run_zcperf_zc "$ns" "$ns" "$dev" "10.200.$net.2/24" "$id" "$run" --smoltcp-defaults ;;
                tap-tx-stock) run_zcperf_zc "$ns" "$ns" "$dev" "10.200.$net.2/24" "$id" "$run" --smoltcp-defaults --reverse ;;
            esac || failed "$id" "$run"
        done
        log "bed tap $kind: run $run of $RUNS done"
    done
    zc_bed_down "$ns"
}

# http_files: the files served (once): one of BIG_MIB MiB and 64 of 64 KiB,
# read once so they are in the page cache; and wrk's script that walks them.
http_files() {
    local www=$WORK/www i
    [[ -d $www ]] && return 0
    mkdir -p "$www"
    log "writing $BIG_MIB MiB and 64 x 64 KiB files"
    head -c "$((BIG_MIB << 20))" /dev/urandom >"$www/big.bin"
    for ((i = 0; i < 64; i++)); do head -c 65536 /dev/urandom >"$www/f$i.bin"; done
    chmod -R a+rX "$www"
    cat "$www"/*.bin >/dev/null
    cat >"$WORK/rot.lua" <<'EOF'
local i = 0
request = function()
    i = (i + 1) % 64
    return wrk.format("GET", "/f" .. i .. ".bin")
end
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format('{"requests":%d,"bytes":%d,"duration_us":%d,"errors":%d}\n',
        summary.requests, summary.bytes, summary.duration,
        e.connect + e.read + e.write + e.status + e.timeout))
end
EOF
}

# http_run ROWS RUN SNS COMM CNS ADDR: one run of ROWS-1g (curl fetches the
# big file) and ROWS-64k (wrk walks the 64 KiB files) against the server at
# ADDR, clients in CNS; server CPU from SNS's processes (named COMM, if given).
http_run() {
    local rows=$1 run=$2 sns=$3 comm=$4 cns=$5 addr=$6 id
    for id in "$rows-1g" "$rows-64k"; do
        wanted "$id" || continue
        local f=$RAW/${id//\//_}.$run c0 c1
        c0=$(ns_cpu "$sns" "$comm")
        if [[ $id == *-1g ]]; then
            # A failed fetch is recorded (the table lists it), not fatal.
            ip netns exec "$cns" "${CLI[@]}" timeout "$CLIENT_LIMIT" curl -sS -o /dev/null --max-time $((S + 25)) \
                -w '{"bytes":%{size_download},"seconds":%{time_total},"http_code":%{http_code}}\n' \
                "http://$addr/big.bin" >"$f.cli" || failed "$id" "$run"
        else
            ip netns exec "$cns" "${CLI[@]}" timeout "$CLIENT_LIMIT" wrk -t1 -c16 -d"${S}s" --timeout 5s \
                -s "$WORK/rot.lua" "http://$addr/" >"$f.wrk" || failed "$id" "$run"
            tail -n 1 "$f.wrk" >"$f.cli"
        fi
        c1=$(ns_cpu "$sns" "$comm")
        echo "{\"server_cpu_seconds\":$(((c1 - c0) * 1000 / HZ))e-3}" >"$f.cpu"
        record "$id" "$run" "${id##*-}" "$f.cli" "$f.cpu"
    done
    return 0
}

# nginx_run ROWS RUN SNS CNS ADDR on|off: nginx with sendfile on or off in
# SNS for one run of ROWS.
nginx_run() {
    local rows=$1 run=$2 sns=$3 cns=$4 addr=$5 spid
    zc_nginx_conf "$WORK" "$addr:80" "$WORK/www" 1024 - "sendfile $6" "tcp_nopush on" \
        "keepalive_requests 1000000" >"$WORK/nginx.conf"
    ip netns exec "$sns" "${SRV[@]}" timeout $((S * 2 + 90)) nginx -c "$WORK/nginx.conf" \
        -p "$WORK" -e "$WORK/nginx-error.log" >"$WORK/nginx.out" 2>&1 &
    spid=$!
    if wait_listen "$sns" tcp 80; then
        http_run "$rows" "$run" "$sns" "" "$cns" "$addr"
    else
        failed "$rows" "$run"
    fi
    kill -INT "$spid" 2>/dev/null || true
    stop_job "$spid"
}

# httpd_run ROWS RUN SNS CNS CIDR DEVICE_ARGS...: zc-httpd in SNS on the
# given device at CIDR for one run of ROWS (its own CPU only), then its
# counters (copies per byte) for the table.
httpd_run() {
    local rows=$1 run=$2 sns=$3 cns=$4 cidr=$5 spid
    shift 5
    local out=$WORK/${rows//\//_}.out stats=$WORK/${rows//\//_}.$run.stats.json id
    ip netns exec "$sns" "${SRV[@]}" timeout $((S * 2 + 90)) "$BIN/zc-httpd" \
        "$@" --ip "$cidr" --root "$WORK/www" --port 80 --stats-json "$stats" >"$out" 2>&1 &
    spid=$!
    if wait_line "$out" "serving|listening" 10; then
        http_run "$rows" "$run" "$sns" zc-httpd "$cns" "${cidr%/*}"
    else
        failed "$rows" "$run"
    fi
    kill -INT "$spid" 2>/dev/null || true
    stop_job "$spid"
    if [[ -s $stats ]]; then
        for id in "$rows-1g" "$rows-64k"; do
            wanted "$id" && record "$id" "$run" httpd-stats "$stats"
        done
    fi
    return 0
}

# http_bed NAME MTU OFFLOADS [tap]: nginx (sendfile on / off) and zc-httpd
# on AF_XDP on a veth bed with the kernel's offloads on (nginx's normal
# setting) or off; below MTU 65535 also zc-httpd --tx-gso; with `tap`, also zc-httpd --tap-offload (TSO: 64 KiB segments, partial
# checksums) on a TAP bed of its own, clients in the TAP's namespace, with
# the MTU 1500 nginx rows as its peers. Every server starts afresh for each
# run and the runs go round all servers, so the VM's drift between its
# speeds hits every row alike (an idle AF_XDP server would also take the
# kernel's packets on the shared veth).
http_bed() {
    local name=$1 mtu=$2 off=$3 with_tap=${4:-} net=$((NET++)) id todo=() srv servers=()
    local pfx=http/$name
    local kaddr=10.200.$net.3 zcidr=10.200.$net.2/24
    local sec="HTTP, MTU $mtu, offloads $off" kinds=(nginx-sendfile-on nginx-sendfile-off zc-httpd)
    ((mtu < 65535)) && kinds+=(zc-httpd-gso)
    for srv in "${kinds[@]}"; do
        local peer1=$pfx/nginx-sendfile-on-1g peer64=$pfx/nginx-sendfile-on-64k
        [[ $srv == nginx-sendfile-on ]] && peer1="" && peer64=""
        local lab=$srv
        [[ $srv == zc-httpd-gso ]] && lab="zc-httpd --tx-gso"
        row "$pfx/$srv-1g" "$sec" "$lab: $BIG_MIB MiB file, curl" "$peer1"
        row "$pfx/$srv-64k" "$sec" "$lab: 64 KiB files, wrk" "$peer64"
        [[ $srv == zc-httpd* ]] && ((!HAVE_HTTPD)) && continue
        servers+=("$pfx/$srv")
    done
    local tnet tns ttap tpfx=http/tap/zc-httpd-tso
    if [[ -n $with_tap ]]; then
        tnet=$((NET++))
        row "$tpfx-1g" "HTTP, TAP, MTU $mtu, TSO" "zc-httpd --tap-offload: $BIG_MIB MiB file, curl" "$pfx/nginx-sendfile-on-1g"
        row "$tpfx-64k" "HTTP, TAP, MTU $mtu, TSO" "zc-httpd --tap-offload: 64 KiB files, wrk" "$pfx/nginx-sendfile-on-64k"
        ((HAVE_HTTPD)) && servers+=("$tpfx")
    fi
    ((HAVE_HTTPD)) || log "zc-httpd is not built on this branch: its rows are skipped"
    for srv in "${servers[@]}"; do
        for id in "$srv-1g" "$srv-64k"; do wanted "$id" && todo+=("$srv") && break; done
    done
    ((${#todo[@]})) || return 0
    http_files
    local sns=zcbs$TAG$net cns=zcbc$TAG$net veth=0
    for srv in "${todo[@]}"; do [[ $srv == "$pfx/"* ]] && veth=1; done
    log "bed http $name: MTU $mtu, offloads $off (${#todo[@]} servers x $RUNS runs)"
    if ((veth)); then
        zc_bed_trap "$sns"
        zc_bed_trap "$cns"
        zc_veth_up "$sns" "$cns" "10.200.$net.1/24" --mtu "$mtu" --offloads "$off" --server-cidr "$kaddr/24"
    fi
    if [[ " ${todo[*]} " == *" $tpfx "* ]]; then
        tns=zcbh$TAG$tnet ttap=zch$TAG$tnet
        ttap=${ttap:0:15}
        zc_bed_trap "$tns"
        zc_bed_up "$tns" "$ttap" "10.200.$tnet.1/24"
    fi
    local run
    for ((run = 1; run <= RUNS; run++)); do
        for srv in "${todo[@]}"; do
            case ${srv##*/} in
                nginx-sendfile-on) nginx_run "$srv" "$run" "$sns" "$cns" "$kaddr" on ;;
                nginx-sendfile-off) nginx_run "$srv" "$run" "$sns" "$cns" "$kaddr" off ;;
                zc-httpd) httpd_run "$srv" "$run" "$sns" "$cns" "$zcidr" --xdp "$ZC_VETH_SERVER" ;;
                zc-httpd-gso) httpd_run "$srv" "$run" "$sns" "$cns" "$zcidr" --xdp "$ZC_VETH_SERVER" --tx-gso ;;
                zc-httpd-tso) httpd_run "$srv" "$run" "$tns" "$tns" "10.200.$tnet.2/24" --tap "$ttap" --tap-offload ;;
            esac
        done
        log "bed http $name: run $run of $RUNS done"
    done
    if ((veth)); then
        zc_bed_down "$cns"
        zc_bed_down "$sns"
    fi
    [[ -n ${tns:-} ]] && zc_bed_down "$tns"
    return 0
}


STARTED=$(date +%s)
log "runs per row: $RUNS, seconds per run: $S$( ((QUICK)) && echo ' (quick)'), pinned: ${SRV[*]:-no} / ${CLI[*]:-no}"
tcp_bed 1500-off 1500 off
tcp_bed 1500-on 1500 on
tcp_bed 9000 9000 on
tcp_bed 65535 65535 on
tap_bed plain
tap_bed tso
http_bed 1500-on 1500 on tap
http_bed 1500-off 1500 off
http_bed 9000 9000 on
http_bed 65535 65535 on
mq_bed
ELAPSED=$(($(date +%s) - STARTED))

MACHINE="$(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r), $(rustc --version 2>/dev/null | awk '{print "Rust " $2}')"
EXTRA=()
((QUICK)) && EXTRA+=(--quick)
if [[ -n $PREVIOUS ]]; then
    # Copied first: OUT's own results.json is overwritten by this run.
    cp "$PREVIOUS" "$WORK/previous.json"
    EXTRA+=(--previous "$WORK/previous.json")
fi
"$PY" "$HERE/bench_report.py" --rows "$WORK/rows.tsv" --runs "$WORK/runs.tsv" --out "$OUT" \
    --machine "$MACHINE" --seconds "$S" --run-count "$RUNS" --elapsed "$ELAPSED" \
    --big-mib "$BIG_MIB" "${EXTRA[@]}"
log "done in $ELAPSED s: $OUT/results.md, results.json, results.png"
