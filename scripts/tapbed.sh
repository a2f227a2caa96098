#!/usr/bin/env bash
# tapbed.sh: a network namespace holding one persistent TAP device, the bed
# a zcstack app runs on (the app opens the TAP, the kernel side of the TAP
# gets an address, so kernel tools in the namespace talk to the stack).
#
# CLI:
#   scripts/tapbed.sh up NS TAP KERNEL_CIDR [TUNTAP_OPT...]
#   scripts/tapbed.sh down NS
# Library (source it, from a script that already runs `set -euo pipefail`):
#   zc_bed_up NS TAP KERNEL_CIDR [TUNTAP_OPT...]
#   zc_bed_down NS
#   zc_bed_trap NS          tear NS down on EXIT/INT/TERM (also on failure)
#   zc_bed_on_exit FUNC     run FUNC in that trap, before the teardown
#
# Names must start with `zc` and addresses lie inside 10.200.0.0/16, so the
# bed can never touch anything but its own objects. Nothing here configures
# the root namespace: every interface command runs inside NS.
# TUNTAP_OPT are passed to `ip tuntap add` (e.g. `multi_queue`, `vnet_hdr`):
# the flags of a persistent TAP must match the ones its user opens it with.

# Functions report failure by return code: the caller's `set -e` (or `||`)
# decides what to do. `set -euo pipefail` for the CLI is set at the bottom,
# so sourcing this file from an interactive shell doesn't change its options.

# Namespaces this shell created (only these are ever torn down by the trap,
# so a failed `up` can't delete a namespace that belongs to another run).
declare -gA _ZC_BED_OWNED=()
# Namespaces and hooks registered with zc_bed_trap / zc_bed_on_exit.
declare -ga _ZC_BED_TRAP_NS=()
declare -ga _ZC_BED_HOOKS=()

_zc_bed_err() {
    echo "tapbed: $*" >&2
}

# Names: `zc` prefix (our only cleanup key); a TAP name must also fit
# IFNAMSIZ (15 chars) and be a plain interface name.
_zc_bed_check_name() {
    local what=$1 name=$2
    if [[ ! $name =~ ^zc[A-Za-z0-9_.-]*$ ]]; then
        _zc_bed_err "$what '$name' must start with 'zc' and use only [A-Za-z0-9_.-]"
        return 1
    fi
    if [[ $what == TAP && ${#name} -gt 15 ]]; then
        _zc_bed_err "TAP name '$name' is longer than 15 characters"
        return 1
    fi
}

# KERNEL_CIDR must be a host address inside 10.200.0.0/16 with a prefix of
# /16 or longer, so the subnet it implies stays inside the project's range.
_zc_bed_check_cidr() {
    local cidr=$1
    if [[ ! $cidr =~ ^10\.200\.([0-9]{1,3})\.([0-9]{1,3})/([0-9]{1,2})$ ]]; then
        _zc_bed_err "address '$cidr' must look like 10.200.X.Y/PREFIX (inside 10.200.0.0/16)"
        return 1
    fi
    local x=${BASH_REMATCH[1]} y=${BASH_REMATCH[2]} prefix=${BASH_REMATCH[3]}
    if ((10#$x > 255 || 10#$y > 255 || 10#$prefix < 16 || 10#$prefix > 32)); then
        _zc_bed_err "address '$cidr' is not inside 10.200.0.0/16 (octets <= 255, prefix 16..32)"
        return 1
    fi
}

_zc_bed_ns_exists() {
    ip netns list | awk '{print $1}' | grep -qxF -- "$1"
}

# The steps after `ip netns add`. Called in an `if`, where `set -e` is off,
# so every command checks its own status.
_zc_bed_setup_ns() {
    local ns=$1 tap=$2 cidr=$3
    shift 3
    ip netns exec "$ns" ip link set dev lo up || return
    ip netns exec "$ns" ip tuntap add dev "$tap" mode tap "$@" || return
    # The stack speaks IPv4 only: keep the kernel's IPv6 DAD/MLD/RS frames
    # off the wire (best effort, the namespace's own sysctl).
    ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$tap.disable_ipv6=1" >/dev/null 2>&1 || true
    ip netns exec "$ns" ip addr add "$cidr" dev "$tap" || return
    ip netns exec "$ns" ip link set dev "$tap" up || return
}

# zc_bed_up NS TAP KERNEL_CIDR [TUNTAP_OPT...]: create NS with TAP in it.
# All or nothing: if a step fails the namespace is deleted again.
zc_bed_up() {
    if (($# < 3)); then
        _zc_bed_err "usage: zc_bed_up NS TAP KERNEL_CIDR [TUNTAP_OPT...]"
        return 2
    fi
    local ns=$1 tap=$2 cidr=$3
    shift 3
    _zc_bed_check_name namespace "$ns" || return
    _zc_bed_check_name TAP "$tap" || return
    _zc_bed_check_cidr "$cidr" || return
    # Refuse to reuse a namespace: it may belong to a run still in progress.
    if _zc_bed_ns_exists "$ns"; then
        _zc_bed_err "namespace '$ns' already exists (another run, or a leftover: 'scripts/tapbed.sh down $ns')"
        return 1
    fi
    ip netns add "$ns" || return
    _ZC_BED_OWNED[$ns]=1
    if ! _zc_bed_setup_ns "$ns" "$tap" "$cidr" "$@"; then
        _zc_bed_err "setting up '$ns' failed; deleting it"
        zc_bed_down "$ns" || true
        return 1
    fi
}

# zc_bed_down NS: delete NS and with it the TAP. Processes still inside NS
# (a server that was not stopped) would keep the namespace and its TAP alive
# after `ip netns del`, invisibly: stop them first. They run in our own zc*
# namespace, so they are ours.
zc_bed_down() {
    if (($# != 1)); then
        _zc_bed_err "usage: zc_bed_down NS"
        return 2
    fi
    local ns=$1
    _zc_bed_check_name namespace "$ns" || return
    unset '_ZC_BED_OWNED[$ns]'
    _zc_bed_ns_exists "$ns" || return 0
    local pids i
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [[ -n $pids ]]; then
        # shellcheck disable=SC2086 # one pid per word
        kill -TERM $pids 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            [[ -z $pids ]] && break
            sleep 0.1
        done
        if [[ -n $pids ]]; then
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
        fi
    fi
    ip netns del "$ns"
}

# zc_bed_on_exit FUNC: run FUNC from the exit trap (after background jobs
# are stopped, before namespaces are deleted), e.g. to print a log.
zc_bed_on_exit() {
    _ZC_BED_HOOKS+=("$1")
}

# The EXIT trap: stop background jobs, run hooks, delete the namespaces this
# shell created, and keep the script's exit status.
_zc_bed_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    local pids pid i hook ns
    pids=$(jobs -pr)
    if [[ -n $pids ]]; then
        # shellcheck disable=SC2086 # one pid per word
        kill -TERM $pids 2>/dev/null
        # Bounded wait, then SIGKILL: a stuck job must not hang teardown.
        for ((i = 0; i < 30; i++)); do
            [[ -z $(jobs -pr) ]] && break
            sleep 0.1
        done
        for pid in $(jobs -pr); do
            kill -KILL "$pid" 2>/dev/null
        done
        wait 2>/dev/null
    fi
    for hook in "${_ZC_BED_HOOKS[@]}"; do
        "$hook"
    done
    for ((i = ${#_ZC_BED_TRAP_NS[@]} - 1; i >= 0; i--)); do
        ns=${_ZC_BED_TRAP_NS[i]}
        if [[ -n ${_ZC_BED_OWNED[$ns]:-} ]]; then
            zc_bed_down "$ns" || _zc_bed_err "could not delete namespace '$ns'"
        fi
    done
    exit "$rc"
}

# zc_bed_trap NS: on EXIT, INT or TERM (any failure under `set -e` too),
# tear NS down and stop background jobs. Call it before zc_bed_up, so a
# half-built bed is removed too; it only deletes NS if this shell created
# it (so call zc_bed_up in this shell, not in a subshell). May be called
# for several namespaces; they are deleted in reverse order.
zc_bed_trap() {
    if (($# != 1)); then
        _zc_bed_err "usage: zc_bed_trap NS"
        return 2
    fi
    _zc_bed_check_name namespace "$1" || return
    _ZC_BED_TRAP_NS+=("$1")
    trap _zc_bed_cleanup EXIT
    # A signal exits with 128+N; the EXIT trap then does the cleanup.
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

_zc_bed_main() {
    set -euo pipefail
    local usage="usage: $0 up NS TAP KERNEL_CIDR [TUNTAP_OPT...] | $0 down NS"
    if (($# < 1)); then
        echo "$usage" >&2
        exit 2
    fi
    if ((EUID != 0)); then
        _zc_bed_err "network namespaces and TAP devices need root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run it as root"
        exit 1
    fi
    local cmd=$1
    shift
    case $cmd in
        up)
            (($# >= 3)) || { echo "$usage" >&2; exit 2; }
            zc_bed_up "$@"
            ;;
        down)
            (($# == 1)) || { echo "$usage" >&2; exit 2; }
            zc_bed_down "$@"
            ;;
        *)
            echo "$usage" >&2
            exit 2
            ;;
    esac
}

# Run the CLI only when executed, not when sourced.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    _zc_bed_main "$@"
fi
