#!/usr/bin/env bash
# idlebench.sh: what idle keep-alive connections cost a busy one. zc-httpd
# on a TAP serves one large file to curl alone, then again while N idle
# keep-alive connections are open, alternating, in the same run.
#
#   bash scripts/idlebench.sh   (as root) [--idle "2000 10000"] [--pairs 3]
#                               [--fetches K] [--size MIB] [--httpd LABEL=BIN]...
#                               [--plain] [--no-build] [--no-install]
#
# For each server and each N: PAIRS pairs of (fetches alone, fetches with
# N idle connections open); the idle connections are opened before
# and closed after each "with" fetch (scripts/keepalive_hold.py: each
# fetches a 1 KiB response, its length and sha256 checked, then idles),
# and the next fetch waits until the server has closed them all.
# Each fetch is one curl of SIZE MiB (default 256) with its length
# checked; each side of a pair is the median of K fetches (default 3) in a
# row, and the ratio is the median over the pairs with idle connections
# over the median alone. Alone and with-idle alternate (odd pairs alone
# first, even pairs with idle first) so a change in the load of a shared
# machine hits both.
#
# The bed: one namespace zcidl<pid> holding a TAP zcit<pid> (kernel side
# 10.200.X.1/24, zc-httpd at 10.200.X.2, with --tap-offload unless
# --plain); curl and the client run in it. Everything is deleted on exit,
# also on failure.
#
# --httpd LABEL=BIN  measure this zc-httpd binary too (e.g. an older
#                    build: before=/tmp/main/zc-httpd); the tree's own
#                    release build is measured as "zc-httpd".
# Defaults: --idle "2000 10000" --pairs 3 --fetches 3 --size 256. Needs root.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=tapbed.sh
source "$HERE/tapbed.sh"
# shellcheck source=need.sh
source "$HERE/need.sh"

IDLE="2000 10000" PAIRS=3 FETCHES=3 SIZE=256 BUILD=1 INSTALL=1 OFFLOAD=--tap-offload
EXTRA_HTTPD=()
usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --idle) IDLE=${2:?}; shift 2 ;;
        --pairs) PAIRS=${2:?}; shift 2 ;;
        --fetches) FETCHES=${2:?}; shift 2 ;;
        --size) SIZE=${2:?}; shift 2 ;;
        --httpd) EXTRA_HTTPD+=("${2:?}"); shift 2 ;;
        --plain) OFFLOAD=; shift ;;
        --no-build) BUILD=0; shift ;;
        --no-install) INSTALL=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "idlebench.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
for n in $IDLE; do
    [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 30000)) ||
        { echo "idlebench.sh: --idle takes counts of 1 to 30000" >&2; exit 2; }
done
[[ $PAIRS =~ ^[0-9]+$ ]] && ((PAIRS >= 1 && PAIRS <= 20)) ||
    { echo "idlebench.sh: --pairs must be 1 to 20" >&2; exit 2; }
[[ $FETCHES =~ ^[0-9]+$ ]] && ((FETCHES >= 1 && FETCHES <= 20)) ||
    { echo "idlebench.sh: --fetches must be 1 to 20" >&2; exit 2; }
[[ $SIZE =~ ^[0-9]+$ ]] && ((SIZE >= 1 && SIZE <= 4096)) ||
    { echo "idlebench.sh: --size must be 1 to 4096 (MiB)" >&2; exit 2; }
if ((EUID != 0)); then
    echo "idlebench.sh: namespaces and TAP devices need root: run it in a root shell" >&2
    exit 1
fi
log() { printf '%s idlebench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
trap 'log "failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

((INSTALL)) && zc_need idlebench.sh curl:curl ip:iproute2 ss:iproute2 python3:python3
for cmd in curl ss python3; do
    command -v "$cmd" >/dev/null || { echo "idlebench.sh: $cmd is missing (run without --no-install)" >&2; exit 1; }
done

BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
if ((BUILD)); then
    zc_need_cargo idlebench.sh
    log "building zc-httpd (release)"
    (cd "$ROOT" && cargo build --release -q -p zcstack-apps --bin zc-httpd)
fi
[[ -x $BIN/zc-httpd ]] || { echo "idlebench.sh: $BIN/zc-httpd missing: build with cargo build --release" >&2; exit 1; }
SERVERS=("zc-httpd=$BIN/zc-httpd")
for s in "${EXTRA_HTTPD[@]}"; do
    [[ $s == *=* && -x ${s#*=} ]] || { echo "idlebench.sh: --httpd $s: expected LABEL=BIN with BIN executable" >&2; exit 2; }
    SERVERS+=("$s")
done

MAXIDLE=0
for n in $IDLE; do ((n > MAXIDLE)) && MAXIDLE=$n; done
# Every idle connection is a descriptor in the client.
NOFILE=$((MAXIDLE + 1024))
HARD=$(ulimit -Hn)
[[ $HARD == unlimited ]] || ((HARD >= NOFILE)) || NOFILE=$HARD
((NOFILE >= MAXIDLE + 64)) || { echo "idlebench.sh: $MAXIDLE connections need $((MAXIDLE + 64)) descriptors; the limit is $HARD" >&2; exit 1; }
ulimit -n "$NOFILE"

NS=zcidl$$ TAP=zcit$$ NET=$(($$ % 200 + 40))
KADDR=10.200.$NET.1 ZADDR=10.200.$NET.2
WORK=$(mktemp -d /tmp/zcidle.XXXXXX)
chmod 755 "$WORK"
cleanup_work() { rm -rf "$WORK"; }
zc_bed_trap "$NS"
zc_bed_on_exit cleanup_work
zc_bed_up "$NS" "$TAP" "$KADDR/24"
# Thousands of connections a run, each leaving a client port in TIME-WAIT
# for 60 s: the default range (32768-60999) runs out. This namespace's own
# setting; nothing outside it changes.
ip netns exec "$NS" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
mkdir -p "$WORK/www"
head -c $((SIZE << 20)) /dev/urandom >"$WORK/www/big"
head -c 1024 /dev/urandom >"$WORK/www/small"
SMALL_SHA=$(sha256sum "$WORK/www/small" | cut -d' ' -f1)
inns() { ip netns exec "$NS" "$@"; }

# fetch: one curl of the big file; prints its speed in MB/s (10^6 bytes).
fetch() {
    local out size speed
    out=$(inns curl -sS -o /dev/null --max-time 120 -w '%{size_download} %{speed_download}' "http://$ZADDR/big")
    read -r size speed <<<"$out"
    ((size == SIZE << 20)) || { log "fetch got $size of $((SIZE << 20)) bytes"; return 1; }
    awk -v s="$speed" 'BEGIN { printf "%.1f\n", s / 1e6 }'
}

# hold N: opens N idle keep-alive connections; sets HOLD_PID once held.
hold() {
    local n=$1 out=$WORK/hold.out i limit=$((60 + $1 / 50))
    : >"$out"
    ip netns exec "$NS" python3 "$HERE/keepalive_hold.py" --addr "$ZADDR" --port 80 --path /small \
        --conns "$n" --sha256 "$SMALL_SHA" --timeout "$limit" --hold 900 >"$out" 2>"$WORK/hold.err" &
    HOLD_PID=$!
    for ((i = 0; i < limit * 10 + 50; i++)); do
        grep -q '^held' "$out" && break
        sleep 0.1
    done
    [[ $(cat "$out") == "held $n" ]] || {
        log "client: $(cat "$out") $(tr '\n' ' ' <"$WORK/hold.err")"
        # What the server counted that could explain it (its counters, each second).
        python3 -c 'import json, re, sys
d = json.load(open(sys.argv[1]))
print("server:", " ".join(f"{k}={v}" for k, v in d.items() if isinstance(v, int) and v
      and re.search("rst|reset|cookie|refus|drop|backlog|full|conn|accept|limit|timeout", k)))' \
            "$WORK/httpd.json" >&2 || true
        return 1
    }
}

unhold() {
    local i
    kill -TERM "$HOLD_PID" 2>/dev/null || true
    wait "$HOLD_PID" 2>/dev/null || true
    # The next fetch starts once the server has answered every close (no
    # client socket waits for its FIN any more; at most 60 s), and a
    # second more.
    for ((i = 0; i < 600; i++)); do
        [[ -z $(inns ss -tnH state fin-wait-1 state fin-wait-2 state closing "( dst $ZADDR )" | head -n 1) ]] && break
        sleep 0.1
    done
    sleep 1
}

# fetches: FETCHES fetches in a row; prints their median.
fetches() {
    local f=() k
    for ((k = 0; k < FETCHES; k++)); do f+=("$(fetch)"); done
    echo "${f[*]}" | median
}

median() { tr ' ' '\n' | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

ROWS=()
for s in "${SERVERS[@]}"; do
    label=${s%%=*} bin=${s#*=}
    ip netns exec "$NS" "$bin" --tap "$TAP" $OFFLOAD --ip "$ZADDR/24" --root "$WORK/www" --port 80 \
        --max-conns $((MAXIDLE + 256)) --idle-timeout 3600 --stats-json "$WORK/httpd.json" >"$WORK/httpd.out" 2>&1 &
    spid=$!
    for ((k = 0; k < 100; k++)); do
        grep -q serving "$WORK/httpd.out" && break
        sleep 0.1
    done
    grep -q serving "$WORK/httpd.out" || { cat "$WORK/httpd.out" >&2; exit 1; }
    fetch >/dev/null # warm-up: ARP, the file's pages, the rings
    for n in $IDLE; do
        alone=() with=()
        for ((p = 1; p <= PAIRS; p++)); do
            # Odd pairs fetch alone first, even pairs with idle first.
            ((p % 2)) && alone+=("$(fetches)")
            hold "$n"
            with+=("$(fetches)")
            unhold
            ((p % 2)) || alone+=("$(fetches)")
            log "$label, $n idle, pair $p: alone ${alone[-1]} MB/s, with idle ${with[-1]} MB/s"
        done
        ma=$(echo "${alone[*]}" | median) mw=$(echo "${with[*]}" | median)
        ROWS+=("$(printf '%-12s %6d %10.1f %10.1f %7.2f   %s | %s' "$label" "$n" "$ma" "$mw" \
            "$(awk -v a="$ma" -v w="$mw" 'BEGIN { print w / a }')" "${alone[*]}" "${with[*]}")")
    done
    kill -INT "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    tail -n 1 "$WORK/httpd.out" | grep -q 'stopped' || { log "$label did not stop cleanly:"; tail -n 3 "$WORK/httpd.out" >&2; exit 1; }
done

echo
echo "One ${SIZE} MiB fetch from zc-httpd on TAP${OFFLOAD:+ (--tap-offload)}, alone and with N idle keep-alive connections open"
echo "($(nproc) vCPU, Linux $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); medians of $PAIRS alternating pairs, each side the median of $FETCHES fetches; MB/s = 10^6 bytes/s)"
printf '%-12s %6s %10s %10s %7s   %s\n' server idle alone with_idle ratio "runs (alone | with idle)"
for r in "${ROWS[@]}"; do echo "$r"; done
