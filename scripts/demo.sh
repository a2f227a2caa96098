#!/usr/bin/env bash
# demo.sh: zcstack's main job on one screen. zc-httpd serves a random file
# from a TAP with TSO and partial checksums (--tap-offload) inside network
# namespace zcdemo<pid>; curl, on the kernel's TCP/IP stack in the same
# namespace, fetches it several times. Beside it, in the same run, the
# kernel's own TCP serves the same file (python3 -m http.server on the
# TAP's kernel side, so the fetch stays inside the kernel); the two take
# turns. Prints curl's throughput for both (fetches to /dev/null) and their
# ratio, the SHA-256 of one more fetch from each, the stack's CPU copies per
# payload byte, and the buffer pool back to full after zc-httpd exits.
#
#   bash scripts/demo.sh          (as root; installs what it needs with apt)
#
# DEMO_MIB (256) is the file size, DEMO_FETCHES (3) the fetches per server,
# DEMO_SEND_MODE (reference: the socket refers to the file's pages and the
# TAP sends them with one writev per segment, see docs/send-modes.md; copy
# puts the bytes into the send ring first) zc-httpd's --send-mode.
# Everything it creates is named zc*, uses 10.200.1.0/24 inside its own
# namespace only, and is deleted on exit, also on failure or Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/need.sh
source "$ROOT/scripts/need.sh"
# shellcheck source=scripts/tapbed.sh
source "$ROOT/scripts/tapbed.sh"

NS=zcdemo$$
TAP=zcdemo0
KERNEL_IP=10.200.1.1
STACK_IP=10.200.1.2
MIB=${DEMO_MIB:-256}
FETCHES=${DEMO_FETCHES:-3}
MODE=${DEMO_SEND_MODE:-reference}
PEER_PORT=8000

if ((EUID != 0)); then
    echo "demo.sh: needs root for the network namespace and the TAP device: run it as root (in a root shell, or: su -c 'bash scripts/demo.sh')" >&2
    exit 1
fi
if ! [[ $MIB =~ ^[0-9]+$ && $FETCHES =~ ^[0-9]+$ ]] || ((MIB < 1 || FETCHES < 1 || FETCHES > 20)); then
    echo "demo.sh: DEMO_MIB must be a positive number and DEMO_FETCHES 1..20" >&2
    exit 2
fi
zc_need demo.sh ip:iproute2 curl:curl sha256sum:coreutils python3:python3 awk:mawk
zc_need_cargo demo.sh
zc_need_tun demo.sh

echo "== building zc-httpd (release; the first build takes a few minutes)"
cargo build --release --quiet -p zcstack-apps --bin zc-httpd
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/zc-httpd

WORK=$(mktemp -d -t zc-demo.XXXXXX)
LOG=$WORK/zc-httpd.log
DEMO_OK=
finish() {
    if [[ -z $DEMO_OK && -s $LOG ]]; then
        echo "== zc-httpd's log"
        tail -n 5 "$LOG" || true
    fi
    rm -rf "$WORK"
    [[ -z ${OUT:-} ]] || rm -f "$OUT"
}
zc_bed_on_exit finish
# Trap first, then up: a half-built bed is removed too.
zc_bed_trap "$NS"
zc_bed_up "$NS" "$TAP" "$KERNEL_IP/24"

mkdir "$WORK/www"
head -c "$((MIB << 20))" /dev/urandom >"$WORK/www/big.bin"
WANT=$(sha256sum "$WORK/www/big.bin" | cut -d' ' -f1)

in_ns() { ip netns exec "$NS" "$@"; }

# Started directly (not through a shell function), so $! is zc-httpd's pid
# (ip netns exec execs the program) and SIGINT reaches it.
ip netns exec "$NS" "$BIN" --tap "$TAP" --tap-offload --ip "$STACK_IP/24" --root "$WORK/www" \
    --send-mode "$MODE" --stats-json "$WORK/stats.json" >"$LOG" 2>&1 &
HTTPD=$!
(cd "$WORK/www" && exec ip netns exec "$NS" python3 -m http.server --bind "$KERNEL_IP" "$PEER_PORT") \
    >"$WORK/peer.log" 2>&1 &
PEER=$!

# Ready when zc-httpd printed its banner and the peer answers (≤ 10 s).
deadline=$((SECONDS + 10))
until grep -q serving "$LOG" &&
    in_ns curl -s -o /dev/null --max-time 1 "http://$KERNEL_IP:$PEER_PORT/"; do
    kill -0 "$HTTPD" 2>/dev/null || { echo "demo.sh: zc-httpd did not start:" >&2; cat "$LOG" >&2; exit 1; }
    kill -0 "$PEER" 2>/dev/null || { echo "demo.sh: python3 -m http.server did not start:" >&2; cat "$WORK/peer.log" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "demo.sh: the servers did not come up within 10 s" >&2; exit 1; }
    sleep 0.2
done

echo "== zcstack demo: a $MIB MiB random file, fetched with curl from each server in turn"
printf '  %-9s %s\n' \
    bed: "namespace $NS: TAP $TAP, kernel side $KERNEL_IP/24, stack $STACK_IP/24" \
    server: "$(head -n 1 "$LOG")" \
    peer: "python3 -m http.server on $KERNEL_IP:$PEER_PORT (the kernel's TCP, same namespace)" \
    file: "sha256 $WANT"

# rate URL: curl's Gbit/s for one fetch to /dev/null (nothing on the client
# side slows it but curl itself); fails if curl does.
rate() {
    local speed
    speed=$(in_ns curl -fsS --max-time 120 -o /dev/null -w '%{speed_download}' "$1") || return 1
    awk -v s="$speed" 'BEGIN { printf "%.2f", s * 8 / 1e9 }'
}
# same URL: fetches into a file (in memory, /dev/shm, where there is one)
# and says whether its sha256 is the file's.
OUT=$WORK/got.bin
if [[ -d /dev/shm && -w /dev/shm ]]; then
    OUT=$(mktemp /dev/shm/zc-demo.XXXXXX)
fi
same() {
    local got
    in_ns curl -fsS --max-time 120 -o "$OUT" "$1" || return 1
    got=$(sha256sum "$OUT" | cut -d' ' -f1)
    rm -f "$OUT"
    [[ $got == "$WANT" ]] && echo match || echo MISMATCH
}

ZC=() KERNEL=()
for ((i = 1; i <= FETCHES; i++)); do
    # The two servers take turns, so drift on a shared machine hits both.
    zg=$(rate "http://$STACK_IP/big.bin") || { echo "demo.sh: curl from zc-httpd failed" >&2; exit 1; }
    kg=$(rate "http://$KERNEL_IP:$PEER_PORT/big.bin") || { echo "demo.sh: curl from the kernel peer failed" >&2; exit 1; }
    ZC+=("$zg") KERNEL+=("$kg")
    printf '  fetch %-3s zc-httpd %6s Gbit/s   kernel %6s Gbit/s\n' "$i:" "$zg" "$kg"
done
zm=$(same "http://$STACK_IP/big.bin") || { echo "demo.sh: curl from zc-httpd failed" >&2; exit 1; }
km=$(same "http://$KERNEL_IP:$PEER_PORT/big.bin") || { echo "demo.sh: curl from the kernel peer failed" >&2; exit 1; }
printf '  %-9s zc-httpd sha256 %s, kernel sha256 %s (one more fetch each, written to a file)\n' \
    check: "$zm" "$km"
BAD=0
[[ $zm == match && $km == match ]] || BAD=1

kill "$PEER" 2>/dev/null || true
wait "$PEER" 2>/dev/null || true
# zc-httpd stops cleanly on SIGINT and writes its final counters.
kill -INT "$HTTPD"
for ((i = 0; i < 50; i++)); do
    kill -0 "$HTTPD" 2>/dev/null || break
    sleep 0.1
done
wait "$HTTPD" || { echo "demo.sh: zc-httpd did not exit cleanly:" >&2; tail -n 3 "$LOG" >&2; exit 1; }

# json KEY: a number from zc-httpd's --stats-json file.
json() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" "$WORK/stats.json"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ZM=$(median "${ZC[@]}")
KM=$(median "${KERNEL[@]}")
COPIES=$(json tx_copies_per_byte | awk '{ printf "%.3f", $1 }')
IN_USE=$(json pool_in_use)
CAPACITY=$(json pool_capacity)

case $MODE in
    copy) HOW="file → send ring; the TAP sends the ring's bytes by reference" ;;
    *) HOW="the TAP sends slices of the file mapping, one writev per segment: only the kernel copies" ;;
esac

echo "== result"
printf '  %-16s %s\n' \
    "data:" "$( ((BAD)) && echo "a fetch DIFFERED from the file" || echo "byte-identical to the file (sha256), from both servers")" \
    "throughput:" "zc-httpd $ZM Gbit/s, kernel TCP $KM Gbit/s (medians of $FETCHES curl fetches): $(awk -v a="$ZM" -v b="$KM" 'BEGIN { printf "%.2f", a / b }')× the kernel" \
    "CPU copies/byte:" "$COPIES sending, send mode $MODE ($HOW; none between driver and stack)" \
    "buffer pool:" "$IN_USE of $CAPACITY frames in use after zc-httpd exited$( ((IN_USE == 0)) && echo ": back to full")"

if ((BAD)) || [[ $IN_USE != 0 ]]; then
    echo "demo.sh: FAILED" >&2
    exit 1
fi
DEMO_OK=1
echo "demo.sh: PASS"
