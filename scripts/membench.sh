#!/usr/bin/env bash
# membench.sh: memory per idle keep-alive connection, zc-httpd beside nginx
# (kernel TCP), measured in the same run on the same bed.
#
#   bash scripts/membench.sh   (as root) [--conns N] [--size KIB] [--settle SECS]
#                            [--httpd LABEL=BIN]... [--send-modes "auto copy"]
#                            [--no-build] [--no-install]
#
# For each server: start it, fetch one response (warm-up), read its memory;
# open N keep-alive connections that each fetch one SIZE KiB response (its
# length and sha256 checked) and then idle; read the memory at once
# ("busy", responses just sent) and again after SETTLE seconds ("idle").
# Per connection = (idle - before) / N. Memory is the server processes'
# RSS, PSS (smaps_rollup) and page tables (VmPTE); for nginx also the
# kernel's memory for its sockets: the socket buffers `ss -tm` reports
# (skmem r+t+f+w+o+bl+d) plus the slab objects a TCP connection holds
# (TCP, sock_inode_cache, filp, dentry object sizes from /proc/slabinfo).
#
# The bed: one namespace zcmem<pid> holding a TAP zcmt<pid> (kernel side
# 10.200.X.1/24, zc-httpd at 10.200.X.2); nginx listens on 10.200.X.1:8080
# in the same namespace and the client (scripts/keepalive_hold.py) runs
# there too. Everything is deleted on exit, also on failure.
#
# --httpd LABEL=BIN  measure this zc-httpd binary too (e.g. a build of an
#                    older commit: before=/tmp/base/zc-httpd); the tree's
#                    own release build is always measured as "zc-httpd".
# --send-modes       zc-httpd --send-mode values to measure each binary with
#                    (auto sends the files by reference; copy writes
#                    them into the rings).
# Defaults: --conns 2000 --size 64 --settle 3 --send-modes auto. Needs root.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=tapbed.sh
source "$HERE/tapbed.sh"
# shellcheck source=need.sh
source "$HERE/need.sh"
# shellcheck source=nginx.sh
source "$HERE/nginx.sh"

CONNS=2000 SIZE=64 SETTLE=3 BUILD=1 INSTALL=1 MODES=auto
EXTRA_HTTPD=()
usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --conns) CONNS=${2:?}; shift 2 ;;
        --size) SIZE=${2:?}; shift 2 ;;
        --settle) SETTLE=${2:?}; shift 2 ;;
        --httpd) EXTRA_HTTPD+=("${2:?}"); shift 2 ;;
        --send-modes) MODES=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-install) INSTALL=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "membench.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[[ $CONNS =~ ^[0-9]+$ ]] && ((CONNS >= 1 && CONNS <= 50000)) ||
    { echo "membench.sh: --conns must be 1 to 50000" >&2; exit 2; }
[[ $SIZE =~ ^[0-9]+$ ]] && ((SIZE >= 1 && SIZE <= 65536)) ||
    { echo "membench.sh: --size must be 1 to 65536 (KiB)" >&2; exit 2; }
[[ $SETTLE =~ ^[0-9]+$ ]] || { echo "membench.sh: --settle must be whole seconds" >&2; exit 2; }
if ((EUID != 0)); then
    echo "membench.sh: namespaces and TAP devices need root: run it in a root shell" >&2
    exit 1
fi
log() { printf '%s membench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
trap 'log "failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

# need.sh installs without letting nginx's daemon start in the root namespace.
((INSTALL)) && zc_need membench.sh nginx:nginx curl:curl ip:iproute2 ss:iproute2 python3:python3 bc:bc
for cmd in nginx curl ss python3 bc; do
    command -v "$cmd" >/dev/null || { echo "membench.sh: $cmd is missing (run without --no-install)" >&2; exit 1; }
done

BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
if ((BUILD)); then
    zc_need_cargo membench.sh
    log "building zc-httpd (release)"
    (cd "$ROOT" && cargo build --release -q -p zcstack-apps --bin zc-httpd)
fi
[[ -x $BIN/zc-httpd ]] || { echo "membench.sh: $BIN/zc-httpd missing: build with cargo build --release" >&2; exit 1; }
SERVERS=("zc-httpd=$BIN/zc-httpd")
for s in "${EXTRA_HTTPD[@]}"; do
    [[ $s == *=* && -x ${s#*=} ]] || { echo "membench.sh: --httpd $s: expected LABEL=BIN with BIN executable" >&2; exit 2; }
    SERVERS+=("$s")
done

# Every connection is a descriptor in the client (and in nginx).
NOFILE=$((CONNS + 1024))
HARD=$(ulimit -Hn)
[[ $HARD == unlimited ]] || ((HARD >= NOFILE)) || NOFILE=$HARD
((NOFILE >= CONNS + 64)) || { echo "membench.sh: $CONNS connections need $((CONNS + 64)) descriptors; the limit is $HARD" >&2; exit 1; }
ulimit -n "$NOFILE"

NS=zcmem$$ TAP=zcmt$$ NET=$(($$ % 200 + 40))
KADDR=10.200.$NET.1 ZADDR=10.200.$NET.2
WORK=$(mktemp -d /tmp/zcmem.XXXXXX)
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
head -c $((SIZE * 1024)) /dev/urandom >"$WORK/www/f"
SHA=$(sha256sum "$WORK/www/f" | cut -d' ' -f1)
inns() { ip netns exec "$NS" "$@"; }

# mem PID...: "rss_kib pss_kib pte_kib" summed over the processes.
mem() {
    local rss=0 pss=0 pte=0 pid v
    for pid in "$@"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "server process $pid is gone; its output:"
            cat "$WORK/httpd.out" "$WORK/nginx-error.log" >&2 2>/dev/null || true
            exit 1
        fi
        v=$(awk '/^VmRSS:/ {r=$2} /^VmPTE:/ {p=$2} END {print r+0, p+0}' "/proc/$pid/status")
        rss=$((rss + ${v% *})) pte=$((pte + ${v#* }))
        pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")))
    done
    echo "$rss $pss $pte"
}

# kernel_sock PORT: "bytes_per_socket sockets": socket buffers of the
# established sockets on local PORT plus the slab objects of each.
kernel_sock() {
    local slab
    slab=$(awk '$1 == "TCP" || $1 == "sock_inode_cache" || $1 == "filp" || $1 == "dentry" {s += $4} END {print s + 0}' /proc/slabinfo)
    inns ss -tmnH state established "( sport = :$1 )" | awk -v slab="$slab" '
        /skmem:/ {
            match($0, /skmem:\([^)]*\)/)
            n = split(substr($0, RSTART + 6, RLENGTH - 7), f, ",")
            for (i = 1; i <= n; i++) {
                k = f[i]; sub(/[0-9]+$/, "", k); v = substr(f[i], length(k) + 1)
                if (k == "r" || k == "t" || k == "f" || k == "w" || k == "o" || k == "bl" || k == "d") b += v
            }
            s++
        }
        END { if (s) printf "%d %d\n", b / s + slab, s; else print "0 0" }'
}

# hold PORT ADDR: runs the client; sets HOLD_PID once `held N` is printed.
hold() {
    local out=$WORK/hold.out i
    : >"$out"
    ip netns exec "$NS" python3 "$HERE/keepalive_hold.py" --addr "$2" --port "$1" --path /f \
        --conns "$CONNS" --sha256 "$SHA" --timeout $((60 + CONNS / 50)) --hold 900 >"$out" 2>"$WORK/hold.err" &
    HOLD_PID=$!
    for ((i = 0; i < (60 + CONNS / 50) * 10 + 50; i++)); do
        grep -q '^held' "$out" && break
        sleep 0.1
    done
    HELD=$(cat "$out")
    [[ $HELD == "held $CONNS" ]] || { log "client: ${HELD:-no answer}; $(tr '\n' ' ' <"$WORK/hold.err")"; return 1; }
}

unhold() {
    kill -TERM "$HOLD_PID" 2>/dev/null || true
    wait "$HOLD_PID" 2>/dev/null || true
}

ROWS=()
# row LABEL PIDS... (reads BEFORE, BUSY, IDLE, KSOCK)
row() {
    local label=$1 b u i
    read -r -a b <<<"$BEFORE"
    read -r -a u <<<"$BUSY"
    read -r -a i <<<"$IDLE"
    ROWS+=("$(printf '%-22s %6d %9.1f %9.1f %9.1f %10.0f %10.0f %10.0f %12s' "$label" "$CONNS" \
        "$(bc -l <<<"${b[0]} / 1024")" "$(bc -l <<<"${u[0]} / 1024")" "$(bc -l <<<"${i[0]} / 1024")" \
        "$(bc -l <<<"(${i[0]} - ${b[0]}) * 1024 / $CONNS")" \
        "$(bc -l <<<"(${i[1]} - ${b[1]}) * 1024 / $CONNS")" \
        "$(bc -l <<<"(${i[2]} - ${b[2]}) * 1024 / $CONNS")" "$KSOCK")")
}

for mode in $MODES; do
  for s in "${SERVERS[@]}"; do
    label="${s%%=*} ($mode)" bin=${s#*=}
    log "$label: $CONNS connections, $SIZE KiB response each"
    ip netns exec "$NS" "$bin" --tap "$TAP" --ip "$ZADDR/24" --root "$WORK/www" --port 80 \
        --send-mode "$mode" --max-conns $((CONNS + 256)) --idle-timeout 3600 >"$WORK/httpd.out" 2>&1 &
    spid=$!
    for ((k = 0; k < 100; k++)); do
        grep -q serving "$WORK/httpd.out" && break
        sleep 0.1
    done
    grep -q serving "$WORK/httpd.out" || { cat "$WORK/httpd.out" >&2; exit 1; }
    inns curl -sS -o /dev/null --max-time 10 "http://$ZADDR/f"
    sleep 1
    BEFORE=$(mem "$spid")
    hold 80 "$ZADDR"
    BUSY=$(mem "$spid")
    sleep "$SETTLE"
    IDLE=$(mem "$spid")
    KSOCK=-
    row "$label" "$spid"
    unhold
    kill -INT "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
  done
done

log "nginx: $CONNS connections, $SIZE KiB response each"
zc_nginx_conf "$WORK" "$KADDR:8080" "$WORK/www" $((CONNS + 1024)) "$NOFILE" \
    "sendfile on" "keepalive_timeout 3600s" "keepalive_requests 1000000" >"$WORK/nginx.conf"
ip netns exec "$NS" nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log" >"$WORK/nginx.out" 2>&1 &
npid=$!
for ((k = 0; k < 100; k++)); do
    inns curl -sS -o /dev/null --max-time 2 "http://$KADDR:8080/f" 2>/dev/null && break
    sleep 0.1
done
sleep 1
# The master (daemon off: the process we started) and its worker.
mapfile -t NP < <(echo "$npid"; pgrep -P "$npid")
BEFORE=$(mem "${NP[@]}")
hold 8080 "$KADDR"
BUSY=$(mem "${NP[@]}")
sleep "$SETTLE"
IDLE=$(mem "${NP[@]}")
read -r kbytes ksocks <<<"$(kernel_sock 8080)"
KSOCK="$kbytes ($ksocks)"
row "nginx (kernel TCP)" "${NP[@]}"
unhold
kill -QUIT "$npid" 2>/dev/null || true
wait "$npid" 2>/dev/null || true

echo
echo "Memory per idle keep-alive connection: $CONNS connections, each after one $SIZE KiB response"
echo "($(nproc) vCPU, Linux $(uname -r); RSS in MiB; per-connection figures in bytes = (idle - before) / N)"
printf '%-22s %6s %9s %9s %9s %10s %10s %10s %12s\n' server conns before busy idle RSS/conn PSS/conn PTE/conn kernel/conn
for r in "${ROWS[@]}"; do echo "$r"; done
