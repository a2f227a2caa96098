#!/usr/bin/env bash
# netns.sh: the veth test bed: a server namespace and a client namespace
# joined by one veth pair. The stack owns the server end (an AF_XDP app runs
# on it; the kernel has no address there), the client end has a kernel
# address, so kernel tools in the client namespace talk to the stack.
#
#   client ns CLIENT_NS                      server ns SERVER_NS
#   zccv0  CLIENT_CIDR (kernel)  <==veth==>  zcsv0  (no address: the stack's)
#
# CLI:
#   scripts/netns.sh up SERVER_NS CLIENT_NS CLIENT_CIDR [--mtu N] [--offloads on|off] [--queues N] [--server-cidr CIDR]
#   scripts/netns.sh down NS...
# Library (source it, from a script that already runs `set -euo pipefail`):
#   zc_veth_up SERVER_NS CLIENT_NS CLIENT_CIDR [--mtu N] [--offloads on|off] [--queues N] [--server-cidr CIDR]
#   zc_bed_trap NS / zc_bed_down NS / zc_bed_on_exit FUNC   (from tapbed.sh)
#
# --mtu      MTU of both ends (default 1500; veth takes up to 65535)
# --offloads on: the kernel's defaults (TSO, GSO, GRO, checksum offload);
#            off: tx/sg/tso/gso/gro off on both ends, so the kernel sends
#            and receives MTU-sized, fully checksummed frames (the fair
#            per-packet comparison with the stack). Default on.
# --queues   RX/TX queues on each end (default 1), for one AF_XDP socket per queue.
# --server-cidr  also give the server end a kernel address (default none), so
#            kernel servers (iperf3, nginx) in the server namespace can be
#            measured on the same bed; an AF_XDP app attached to zcsv0 then
#            takes the frames of its queue and should use another address.
#
# Names must start with `zc` and CLIENT_CIDR lie inside 10.200.0.0/16.
# Nothing here touches the root namespace: both veth ends are created
# directly inside their namespaces.

# shellcheck source=tapbed.sh
source "$(dirname "${BASH_SOURCE[0]}")/tapbed.sh"

# Interface names inside the namespaces (fixed: each bed has its own namespaces).
ZC_VETH_SERVER=zcsv0
ZC_VETH_CLIENT=zccv0

_zc_veth_setup() {
    local sns=$1 cns=$2 cidr=$3 mtu=$4 offloads=$5 queues=$6 scidr=${7:-} ns dev
    ip link add "$ZC_VETH_SERVER" netns "$sns" numtxqueues "$queues" numrxqueues "$queues" \
        type veth peer name "$ZC_VETH_CLIENT" netns "$cns" \
        numtxqueues "$queues" numrxqueues "$queues" || return
    for ns in "$sns" "$cns"; do
        ip netns exec "$ns" ip link set dev lo up || return
    done
    for pair in "$sns:$ZC_VETH_SERVER" "$cns:$ZC_VETH_CLIENT"; do
        ns=${pair%%:*} dev=${pair#*:}
        # The stack speaks IPv4 only: keep IPv6 DAD/MLD/RS frames off the wire.
        ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$dev.disable_ipv6=1" >/dev/null 2>&1 || true
        ip netns exec "$ns" ip link set dev "$dev" mtu "$mtu" || return
        if [[ $offloads == off ]]; then
            ip netns exec "$ns" ethtool -K "$dev" tx off sg off tso off gso off gro off \
                >/dev/null 2>&1 || return
        fi
        ip netns exec "$ns" ip link set dev "$dev" up || return
    done
    ip netns exec "$cns" ip addr add "$cidr" dev "$ZC_VETH_CLIENT" || return
    if [[ -n $scidr ]]; then
        ip netns exec "$sns" ip addr add "$scidr" dev "$ZC_VETH_SERVER" || return
    fi
}

# zc_veth_up SERVER_NS CLIENT_NS CLIENT_CIDR [--mtu N] [--offloads on|off] [--queues N] [--server-cidr CIDR]
# All or nothing: if a step fails both namespaces are deleted again.
zc_veth_up() {
    if (($# < 3)); then
        _zc_bed_err "usage: zc_veth_up SERVER_NS CLIENT_NS CLIENT_CIDR [--mtu N] [--offloads on|off] [--queues N] [--server-cidr CIDR]"
        return 2
    fi
    local sns=$1 cns=$2 cidr=$3 mtu=1500 offloads=on queues=1 scidr=
    shift 3
    while (($#)); do
        case $1 in
            --mtu) mtu=${2:-}; shift 2 || return 2 ;;
            --offloads) offloads=${2:-}; shift 2 || return 2 ;;
            --queues) queues=${2:-}; shift 2 || return 2 ;;
            --server-cidr) scidr=${2:-}; shift 2 || return 2 ;;
            *) _zc_bed_err "unknown option '$1'"; return 2 ;;
        esac
    done
    [[ $mtu =~ ^[0-9]+$ ]] && ((mtu >= 68 && mtu <= 65535)) ||
        { _zc_bed_err "--mtu '$mtu' must be 68..65535"; return 2; }
    [[ $offloads == on || $offloads == off ]] ||
        { _zc_bed_err "--offloads '$offloads' must be on or off"; return 2; }
    [[ $queues =~ ^[0-9]+$ ]] && ((queues >= 1 && queues <= 64)) ||
        { _zc_bed_err "--queues '$queues' must be 1..64"; return 2; }
    _zc_bed_check_name namespace "$sns" || return
    _zc_bed_check_name namespace "$cns" || return
    _zc_bed_check_cidr "$cidr" || return
    if [[ -n $scidr ]]; then
        _zc_bed_check_cidr "$scidr" || return
    fi
    local ns
    for ns in "$sns" "$cns"; do
        if _zc_bed_ns_exists "$ns"; then
            _zc_bed_err "namespace '$ns' already exists (another run, or a leftover: 'scripts/netns.sh down $ns')"
            return 1
        fi
    done
    ip netns add "$sns" || return
    _ZC_BED_OWNED[$sns]=1
    if ! ip netns add "$cns"; then
        zc_bed_down "$sns" || true
        return 1
    fi
    _ZC_BED_OWNED[$cns]=1
    if ! _zc_veth_setup "$sns" "$cns" "$cidr" "$mtu" "$offloads" "$queues" "$scidr"; then
        _zc_bed_err "setting up '$sns' <-> '$cns' failed; deleting them"
        zc_bed_down "$cns" || true
        zc_bed_down "$sns" || true
        return 1
    fi
}

_zc_veth_main() {
    set -euo pipefail
    local usage="usage: $0 up SERVER_NS CLIENT_NS CLIENT_CIDR [--mtu N] [--offloads on|off] [--queues N] [--server-cidr CIDR] | $0 down NS..."
    if (($# < 1)); then
        echo "$usage" >&2
        exit 2
    fi
    if ((EUID != 0)); then
        _zc_bed_err "network namespaces and veth pairs need root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run it as root"
        exit 1
    fi
    local cmd=$1 ns
    shift
    case $cmd in
        up)
            (($# >= 3)) || { echo "$usage" >&2; exit 2; }
            zc_veth_up "$@"
            ;;
        down)
            (($# >= 1)) || { echo "$usage" >&2; exit 2; }
            for ns in "$@"; do
                zc_bed_down "$ns"
            done
            ;;
        *)
            echo "$usage" >&2
            exit 2
            ;;
    esac
}

# Run the CLI only when executed, not when sourced.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    _zc_veth_main "$@"
fi
