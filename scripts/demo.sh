#!/usr/bin/env bash
# demo.sh: the README's main job. Runs zc-echo on a TAP inside network
# namespace `zcdemo` and talks to it with the kernel's own TCP/IP stack from
# the same namespace: a line, 16 MiB checked by SHA-256, then ping.
# Needs root (namespaces, TAP). Everything is torn down on exit, also on
# failure or Ctrl-C. Exits non-zero if any step failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/tapbed.sh
source "$ROOT/scripts/tapbed.sh"

NS=zcdemo
TAP=zcdemo0
KERNEL_CIDR=10.200.1.1/24
STACK_IP=10.200.1.2
STACK_CIDR=$STACK_IP/24
PORT=7
BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release

if ((EUID != 0)); then
    echo "demo.sh: needs root for the network namespace and TAP device: run 'sudo $0'" >&2
    exit 1
fi
for tool in ip ping python3 cargo; do
    command -v "$tool" >/dev/null || {
        echo "demo.sh: '$tool' not found (apt-get install iproute2 iputils-ping python3; cargo via rustup)" >&2
        exit 1
    }
done

echo "== building release binaries"
cargo build --release -p zcstack-apps

LOG=$(mktemp -t zc-echo.XXXXXX.log)
# Shown from the exit trap, so a failing run still shows what the stack said.
show_log() {
    echo "== last lines of the zc-echo log ($LOG)"
    tail -n 20 "$LOG" || true
}
zc_bed_on_exit show_log
# Trap first, then up: a half-built bed is removed too.
zc_bed_trap "$NS"

echo "== bed: namespace $NS, TAP $TAP, kernel side $KERNEL_CIDR, stack $STACK_CIDR"
zc_bed_up "$NS" "$TAP" "$KERNEL_CIDR"

echo "== starting zc-echo (log: $LOG)"
ip netns exec "$NS" "$BIN_DIR/zc-echo" --tap "$TAP" --ip "$STACK_CIDR" \
    --port "$PORT" --stats >"$LOG" 2>&1 &
ECHO_PID=$!

# Bounded wait until the stack answers ARP and ICMP; stop early if it died.
echo "== waiting for $STACK_IP to answer ping (<= 10 s)"
deadline=$((SECONDS + 10))
until ip netns exec "$NS" ping -c1 -W1 "$STACK_IP" >/dev/null 2>&1; do
    if ! kill -0 "$ECHO_PID" 2>/dev/null; then
        echo "demo.sh: zc-echo exited before answering ping" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "demo.sh: $STACK_IP did not answer ping within 10 s" >&2
        exit 1
    fi
    sleep 0.2
done

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

echo_client() {
    # The kernel's TCP talks to zcstack's TCP: one line, then 16 MiB of random
    # bytes sent by a thread while the main thread reads the echo back (a
    # sequential send-then-read would deadlock once both windows fill).
    ip netns exec "$NS" python3 - "$STACK_IP" "$PORT" <<'PY'
import hashlib, os, socket, sys, threading, time

host, port = sys.argv[1], int(sys.argv[2])
TIMEOUT = 10          # per socket operation
TOTAL_DEADLINE = 120  # whole bulk transfer
SIZE = 16 * 1024 * 1024

def connect():
    s = socket.create_connection((host, port), timeout=TIMEOUT)
    s.settimeout(TIMEOUT)
    return s

# 1. One line.
line = b"hello from the kernel side\n"
with connect() as s:
    s.sendall(line)
    got = b""
    while not got.endswith(b"\n") and len(got) < 4096:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
print(f"sent:     {line!r}")
print(f"received: {got!r}")
line_ok = got == line

# 2. 16 MiB, sender thread + reader here.
data = os.urandom(SIZE)
send_error = []

def sender(sock):
    try:
        view = memoryview(data)
        for off in range(0, SIZE, 64 * 1024):
            sock.sendall(view[off:off + 64 * 1024])
    except Exception as e:  # reported by the main thread
        send_error.append(e)

h_recv = hashlib.sha256()
received = 0
recv_error = None
with connect() as s:
    start = time.monotonic()
    t = threading.Thread(target=sender, args=(s,), daemon=True)
    t.start()
    try:
        while received < SIZE:
            if time.monotonic() - start > TOTAL_DEADLINE:
                raise TimeoutError(f"no full echo within {TOTAL_DEADLINE} s")
            chunk = s.recv(min(1 << 20, SIZE - received))
            if not chunk:
                raise ConnectionError("connection closed by the stack")
            h_recv.update(chunk)
            received += len(chunk)
    except Exception as e:
        recv_error = e
    elapsed = time.monotonic() - start
    t.join(TIMEOUT)

sent_hash = hashlib.sha256(data).hexdigest()
recv_hash = h_recv.hexdigest()
print(f"sha256 sent:     {sent_hash}")
print(f"sha256 received: {recv_hash}")
bulk_ok = sent_hash == recv_hash and received == SIZE and not send_error
print("match" if bulk_ok else "MISMATCH")
mbit = received * 8 / elapsed / 1e6 if elapsed > 0 else 0.0
print(f"bytes: sent {SIZE}, echoed {received} in {elapsed:.3f} s: {mbit:.1f} Mbit/s")
if send_error:
    print(f"send error: {send_error[0]!r}")
if recv_error:
    print(f"receive error: {recv_error!r}")
if not line_ok:
    print("line echo MISMATCH")
sys.exit(0 if line_ok and bulk_ok else 1)
PY
}

stop_echo() {
    # zc-echo exits cleanly on SIGINT (prints its stats); give it 5 s.
    local i rc=0
    kill -INT "$ECHO_PID" 2>/dev/null || { echo "zc-echo had already exited" >&2; return 1; }
    for ((i = 0; i < 50; i++)); do
        kill -0 "$ECHO_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$ECHO_PID" 2>/dev/null; then
        echo "zc-echo ignored SIGINT for 5 s; killing it" >&2
        kill -KILL "$ECHO_PID" 2>/dev/null || true
        wait "$ECHO_PID" 2>/dev/null || true
        return 1
    fi
    wait "$ECHO_PID" || rc=$?
    echo "zc-echo exit status: $rc"
    return "$rc"
}

run "echo client (line + 16 MiB SHA-256)" echo_client
run "ping the stack" ip netns exec "$NS" ping -c 3 -W 1 "$STACK_IP"
run "stop zc-echo with SIGINT" stop_echo

if ((${#FAILED[@]})); then
    echo "demo.sh: FAILED: ${FAILED[*]}" >&2
    exit 1
fi
echo "demo.sh: all steps passed"
