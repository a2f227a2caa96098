#!/usr/bin/env bash
# demo.sh: the README's main job. Serves a 256 MiB random file with zc-httpd
# on a TAP inside network namespace `zcdemo` and fetches it with curl over
# the kernel's own TCP/IP stack from the same namespace, once per send mode
# (copy, then remap): size, SHA-256 match, curl's throughput, and the
# stack's CPU copies per payload byte. Also pings the stack.
# Needs root (namespaces, TAP) and curl. Everything is torn down on exit,
# also on failure or Ctrl-C. Exits non-zero if any step failed.
# DEMO_MODES="copy remap auto" picks the modes; DEMO_MIB the file size.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/tapbed.sh
source "$ROOT/scripts/tapbed.sh"

NS=zcdemo$$
TAP=zcdemo0
KERNEL_CIDR=10.200.1.1/24
STACK_IP=10.200.1.2
STACK_CIDR=$STACK_IP/24
PORT=80
MODES=${DEMO_MODES:-copy remap}
MIB=${DEMO_MIB:-256}
BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release

if ((EUID != 0)); then
    echo "demo.sh: needs root for the network namespace and TAP device: run 'sudo $0'" >&2
    exit 1
fi
for tool in ip ping curl sha256sum cargo; do
    command -v "$tool" >/dev/null || {
        echo "demo.sh: '$tool' not found (apt-get install iproute2 iputils-ping curl coreutils; cargo via rustup)" >&2
        exit 1
    }
done

echo "== building release binaries"
cargo build --release -p zcstack-apps

WORK=$(mktemp -d -t zc-demo.XXXXXX)
LOG=$WORK/zc-httpd.log
# Shown from the exit trap, so a failing run still shows what the server said.
DEMO_OK=
finish() {
    if [[ -z $DEMO_OK && -s $LOG ]]; then
        echo "== last lines of the zc-httpd log"
        tail -n 5 "$LOG" || true
    fi
    rm -rf "$WORK"
}
zc_bed_on_exit finish
# Trap first, then up: a half-built bed is removed too.
zc_bed_trap "$NS"

echo "== bed: namespace $NS, TAP $TAP, kernel side $KERNEL_CIDR, stack $STACK_CIDR"
zc_bed_up "$NS" "$TAP" "$KERNEL_CIDR"

echo "== generating a $MIB MiB random file"
mkdir "$WORK/www"
head -c "$((MIB << 20))" /dev/urandom >"$WORK/www/big.bin"
WANT=$(sha256sum "$WORK/www/big.bin" | cut -d' ' -f1)
echo "sha256 on disk:   $WANT"

HTTPD_PID=
start_httpd() {
    local mode=$1
    : >"$LOG"
    ip netns exec "$NS" "$BIN_DIR/zc-httpd" --tap "$TAP" --ip "$STACK_CIDR" \
        --port "$PORT" --root "$WORK/www" --send-mode "$mode" \
        --stats-json "$WORK/stats.json" >"$LOG" 2>&1 &
    HTTPD_PID=$!
    # Bounded wait until the stack answers ARP and ICMP; stop early if it died.
    local deadline=$((SECONDS + 10))
    until ip netns exec "$NS" ping -c1 -W1 "$STACK_IP" >/dev/null 2>&1; do
        if ! kill -0 "$HTTPD_PID" 2>/dev/null; then
            echo "demo.sh: zc-httpd exited before answering ping:" >&2
            cat "$LOG" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "demo.sh: $STACK_IP did not answer ping within 10 s" >&2
            return 1
        fi
        sleep 0.2
    done
    head -n 1 "$LOG"
}

stop_httpd() {
    # zc-httpd exits cleanly on SIGINT (prints its summary); give it 5 s.
    local i rc=0
    kill -INT "$HTTPD_PID" 2>/dev/null || { echo "zc-httpd had already exited" >&2; return 1; }
    for ((i = 0; i < 50; i++)); do
        kill -0 "$HTTPD_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$HTTPD_PID" 2>/dev/null; then
        echo "zc-httpd ignored SIGINT for 5 s; killing it" >&2
        kill -KILL "$HTTPD_PID" 2>/dev/null || true
        wait "$HTTPD_PID" 2>/dev/null || true
        return 1
    fi
    wait "$HTTPD_PID" || rc=$?
    tail -n 1 "$LOG"
    return "$rc"
}

# json KEY: a number from the server's --stats-json file.
json() {
    sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" "$WORK/stats.json"
}

fetch() {
    local mode=$1 out=$WORK/got.bin line code size speed got
    start_httpd "$mode" || return 1
    line=$(ip netns exec "$NS" curl -sS --max-time 120 -o "$out" \
        -w '%{http_code} %{size_download} %{speed_download}' \
        "http://$STACK_IP:$PORT/big.bin") || { stop_httpd; return 1; }
    read -r code size speed <<<"$line"
    got=$(sha256sum "$out" | cut -d' ' -f1)
    rm -f "$out"
    stop_httpd || return 1
    printf 'HTTP status:      %s\n' "$code"
    printf 'size:             %s bytes (%s MiB)\n' "$size" "$((size >> 20))"
    printf 'sha256 fetched:   %s (%s)\n' "$got" "$([[ $got == "$WANT" ]] && echo match || echo MISMATCH)"
    printf 'throughput:       %s MB/s (curl, %s Gbit/s)\n' \
        "$(awk -v s="$speed" 'BEGIN { printf "%.0f", s / 1e6 }')" \
        "$(awk -v s="$speed" 'BEGIN { printf "%.2f", s * 8 / 1e9 }')"
    printf 'copies per byte:  %s (file bytes remapped %s, copied %s)\n' \
        "$(json tx_copies_per_byte | awk '{ printf "%.3f", $1 }')" \
        "$(json file_bytes_remapped)" "$(json file_bytes_copied)"
    [[ $code == 200 && $size == $((MIB << 20)) && $got == "$WANT" ]]
}

FAILED=()
# run NAME CMD...: run one demo step, remember a failure, keep going so the
# later steps still show what works.
run() {
    local name=$1
    shift
    echo "== $name"
    if "$@"; then
        echo "-- $name: ok"
    else
        echo "-- $name: FAILED" >&2
        FAILED+=("$name")
    fi
}

ping_stack() {
    start_httpd auto || return 1
    ip netns exec "$NS" ping -c 3 -i 0.2 -W 1 "$STACK_IP" | grep -E 'packets transmitted'
    local rc=${PIPESTATUS[0]}
    stop_httpd >/dev/null || return 1
    return "$rc"
}

for mode in $MODES; do
    run "curl fetches $MIB MiB, send mode $mode" fetch "$mode"
done
run "ping the stack" ping_stack

if ((${#FAILED[@]})); then
    echo "demo.sh: FAILED: ${FAILED[*]}" >&2
    exit 1
fi
DEMO_OK=1
echo "demo.sh: all steps passed"
