#!/usr/bin/env bash
# lossbed.sh: client ns <=> relay ns <=> server ns, the relay running
# zc-impair (AF_XDP on both of its veth ends), so traffic between client
# and server crosses an impaired path (loss, delay, reordering, ...).
#
#   client ns zclc<TAG>        relay ns zclr<TAG>              server ns zcls<TAG>
#   zcc0 10.200.N.1 <==veth==> zcra  [zc-impair]  zcrb <==veth==> zcs0 10.200.N.3 (kernel)
#                                   A  ------ a2b ----->  B              10.200.N.2 (zcstack, AF_XDP)
#
# One subnet across the relay (it forwards Ethernet frames, it does not
# route). A to B is client to server. The server end has a kernel address
# (.3) for kernel servers (nginx, iperf3, zc-perf --kernel); a zcstack app
# attached to zcs0 with AF_XDP (--ip 10.200.N.2/24) takes every frame while
# it runs, so kernel and zcstack servers take turns on the same bed (the
# kernel address works again once the app exits).
#
# CLI:
#   scripts/lossbed.sh up TAG [--net N] [--mtu M] [-- ZC_IMPAIR_FLAGS...]
#   scripts/lossbed.sh relay TAG [ZC_IMPAIR_FLAGS...]   (re)start the relay
#   scripts/lossbed.sh stop-relay TAG                   Ctrl-C it: counters printed
#   scripts/lossbed.sh down TAG
# Library (source it from a script that runs `set -euo pipefail`):
#   zc_lossbed_up TAG NET MTU   (registers the trap: teardown on any exit)
#   zc_lossbed_relay TAG LOG JSON [FLAGS...] / zc_lossbed_stop_relay TAG / zc_lossbed_down TAG
#
# --net N: the subnet 10.200.N.0/24 (default 220); --mtu M (default 1500).
# Kernel endpoints get tx/sg/tso/gso/gro offloads off (ethtool): a relay
# forwards frames as they are, and the kernel would otherwise hand it
# 64 KiB super-frames and partial checksums. The relay sends frames
# unchanged (a corrupted frame keeps its wrong checksum).
# Every name starts with zc, addresses stay inside 10.200.0.0/16 in these
# namespaces, and nothing touches the root namespace. `up` from the CLI
# leaves the bed up (tear it down with `down`); a sourcing script should
# call zc_bed_trap itself (zc_lossbed_up does) so any exit removes it.

# shellcheck source-path=SCRIPTDIR source=tapbed.sh
source "$(dirname "${BASH_SOURCE[0]}")/tapbed.sh"

ZC_LOSSBED_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ZC_LOSSBED_BIN=${ZC_BIN_DIR:-${CARGO_TARGET_DIR:-$ZC_LOSSBED_ROOT/target}/release}
# Interface names inside the bed's namespaces.
ZC_LB_CLIENT=zcc0
ZC_LB_RELAY_A=zcra
ZC_LB_RELAY_B=zcrb
ZC_LB_SERVER=zcs0

zc_lossbed_ns() { echo "zcl$1$2"; } # zc_lossbed_ns c|r|s TAG

_zc_lossbed_setup() {
    local tag=$1 net=$2 mtu=$3 c r s ns dev pair
    c=$(zc_lossbed_ns c "$tag") r=$(zc_lossbed_ns r "$tag") s=$(zc_lossbed_ns s "$tag")
    ip link add "$ZC_LB_CLIENT" netns "$c" type veth peer name "$ZC_LB_RELAY_A" netns "$r" || return
    ip link add "$ZC_LB_SERVER" netns "$s" type veth peer name "$ZC_LB_RELAY_B" netns "$r" || return
    for pair in "$c:$ZC_LB_CLIENT" "$r:$ZC_LB_RELAY_A" "$r:$ZC_LB_RELAY_B" "$s:$ZC_LB_SERVER"; do
        ns=${pair%%:*} dev=${pair#*:}
        ip netns exec "$ns" ip link set dev lo up || return
        # IPv4 only: keep IPv6 DAD/MLD/RS frames off the path.
        ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$dev.disable_ipv6=1" >/dev/null 2>&1 || true
        ip netns exec "$ns" ip link set dev "$dev" mtu "$mtu" || return
        ip netns exec "$ns" ethtool -K "$dev" tx off sg off tso off gso off gro off >/dev/null 2>&1 || {
            _zc_bed_err "ethtool -K $dev (offloads off) failed in $ns"
            return 1
        }
        ip netns exec "$ns" ip link set dev "$dev" up || return
    done
    ip netns exec "$c" ip addr add "10.200.$net.1/24" dev "$ZC_LB_CLIENT" || return
    ip netns exec "$s" ip addr add "10.200.$net.3/24" dev "$ZC_LB_SERVER" || return
}

# zc_lossbed_up TAG NET MTU: the three namespaces and two veth pairs, no
# relay yet (start it with zc_lossbed_relay). All or nothing.
zc_lossbed_up() {
    local tag=$1 net=${2:-220} mtu=${3:-1500} ns
    [[ $net =~ ^[0-9]+$ ]] && ((net <= 255)) || { _zc_bed_err "--net '$net' must be 0..255"; return 2; }
    [[ $mtu =~ ^[0-9]+$ ]] && ((mtu >= 576 && mtu <= 3000)) ||
        { _zc_bed_err "--mtu '$mtu' must be 576..3000 (the relay's frames are 4 KiB)"; return 2; }
    command -v ethtool >/dev/null || { _zc_bed_err "ethtool is missing: apt-get install ethtool"; return 1; }
    for ns in $(zc_lossbed_ns c "$tag") $(zc_lossbed_ns r "$tag") $(zc_lossbed_ns s "$tag"); do
        _zc_bed_check_name namespace "$ns" || return
        if _zc_bed_ns_exists "$ns"; then
            _zc_bed_err "namespace '$ns' already exists (another run, or a leftover: 'scripts/lossbed.sh down $tag')"
            return 1
        fi
    done
    for ns in $(zc_lossbed_ns s "$tag") $(zc_lossbed_ns r "$tag") $(zc_lossbed_ns c "$tag"); do
        zc_bed_trap "$ns"
        ip netns add "$ns" || { zc_lossbed_down "$tag"; return 1; }
        _ZC_BED_OWNED["$ns"]=1
    done
    if ! _zc_lossbed_setup "$tag" "$net" "$mtu"; then
        _zc_bed_err "setting up loss bed '$tag' failed; deleting it"
        zc_lossbed_down "$tag"
        return 1
    fi
}

# zc_lossbed_relay TAG LOG JSON [FLAGS...]: (re)starts zc-impair in the
# relay namespace (A = client side), its output to LOG, its counters to
# JSON when stopped; returns once it relays.
zc_lossbed_relay() {
    local tag=$1 log=$2 json=$3 r i
    shift 3
    r=$(zc_lossbed_ns r "$tag")
    zc_lossbed_stop_relay "$tag"
    [[ -x $ZC_LOSSBED_BIN/zc-impair ]] ||
        { _zc_bed_err "$ZC_LOSSBED_BIN/zc-impair missing: cargo build --release -p zcstack-apps"; return 1; }
    rm -f "$json"
    # setsid: its own process group, so a Ctrl-C meant for the caller's
    # foreground job does not stop it before its counters are read.
    ip netns exec "$r" setsid "$ZC_LOSSBED_BIN/zc-impair" --a "$ZC_LB_RELAY_A" --b "$ZC_LB_RELAY_B" \
        --stats-json "$json" "$@" >"$log" 2>&1 </dev/null &
    for ((i = 0; i < 100; i++)); do
        grep -q "relaying" "$log" 2>/dev/null && return 0
        if ! kill -0 $! 2>/dev/null; then
            _zc_bed_err "zc-impair did not start: $(cat "$log")"
            return 1
        fi
        sleep 0.05
    done
    _zc_bed_err "zc-impair not relaying after 5 s: $(cat "$log")"
    return 1
}

# zc_lossbed_stop_relay TAG: interrupts the relay (it prints and writes its
# counters) and waits for it; bounded, then SIGKILL.
zc_lossbed_stop_relay() {
    local r pids i
    r=$(zc_lossbed_ns r "$1")
    _zc_bed_ns_exists "$r" || return 0
    pids=$(ip netns pids "$r" 2>/dev/null || true)
    [[ -z $pids ]] && return 0
    # shellcheck disable=SC2086 # one pid per word
    kill -INT $pids 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pids=$(ip netns pids "$r" 2>/dev/null || true)
        [[ -z $pids ]] && return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    _zc_bed_err "zc-impair did not stop on SIGINT; killed"
}

# zc_lossbed_down TAG: stops the relay and deletes the three namespaces.
zc_lossbed_down() {
    local tag=$1 ns rc=0
    zc_lossbed_stop_relay "$tag"
    for ns in $(zc_lossbed_ns c "$tag") $(zc_lossbed_ns r "$tag") $(zc_lossbed_ns s "$tag"); do
        zc_bed_down "$ns" || rc=1
    done
    return $rc
}

_zc_lossbed_main() {
    set -euo pipefail
    local usage="usage: $0 up TAG [--net N] [--mtu M] [-- ZC_IMPAIR_FLAGS...] | $0 relay TAG [FLAGS...] | $0 stop-relay TAG | $0 down TAG"
    if (($# < 2)); then
        echo "$usage" >&2
        exit 2
    fi
    if ((EUID != 0)); then
        _zc_bed_err "namespaces, veth pairs and AF_XDP need root: run it in a root shell"
        exit 1
    fi
    local cmd=$1 tag=$2 net=220 mtu=1500 dir
    shift 2
    [[ $tag =~ ^[A-Za-z0-9]{1,8}$ ]] || { _zc_bed_err "TAG '$tag' must be 1..8 letters or digits"; exit 2; }
    dir=/tmp/zclossbed-$tag
    case $cmd in
        up)
            while (($#)); do
                case $1 in
                    --net) net=${2:-}; shift 2 || exit 2 ;;
                    --mtu) mtu=${2:-}; shift 2 || exit 2 ;;
                    --) shift; break ;;
                    *) echo "$usage" >&2; exit 2 ;;
                esac
            done
            zc_lossbed_up "$tag" "$net" "$mtu"
            mkdir -p "$dir"
            zc_lossbed_relay "$tag" "$dir/impair.log" "$dir/impair.json" "$@"
            # Keep the bed: the trap is for failures during `up` only.
            trap - EXIT INT TERM
            cat "$dir/impair.log"
            echo "lossbed $tag up: client ns $(zc_lossbed_ns c "$tag") 10.200.$net.1," \
                "server ns $(zc_lossbed_ns s "$tag") 10.200.$net.3 (kernel) / .2 (zcstack on $ZC_LB_SERVER)," \
                "relay log $dir/impair.log"
            ;;
        relay)
            mkdir -p "$dir"
            zc_lossbed_relay "$tag" "$dir/impair.log" "$dir/impair.json" "$@"
            cat "$dir/impair.log"
            ;;
        stop-relay)
            zc_lossbed_stop_relay "$tag"
            [[ -f $dir/impair.log ]] && cat "$dir/impair.log"
            ;;
        down)
            zc_lossbed_down "$tag"
            [[ -f $dir/impair.log ]] && tail -n 4 "$dir/impair.log"
            rm -rf "$dir"
            ;;
        *)
            echo "$usage" >&2
            exit 2
            ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    _zc_lossbed_main "$@"
fi
