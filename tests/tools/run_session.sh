#!/usr/bin/env bash
# run_session.sh ROOT BIN_DIR: runs the shell session in $ZC_SESSION as a
# user would type it in a root shell at the top of the checkout ROOT, and
# exits with its status (`set -euo pipefail`: the first failing command
# fails the session). Used by tests/docs.rs for the README's and the docs'
# commands and the apps' --help examples.
#
# The session gets a private mount namespace with its own empty
# /run/netns and /tmp, so the fixed names the docs use (namespace zcdemo,
# /tmp/www) cannot clash with another run, and nothing it leaves there is
# seen by anyone else. target/release is BIN_DIR (bind-mounted if the build
# went elsewhere) and BIN_DIR leads PATH, for examples that name the apps
# bare. On exit, also on failure or timeout, its background jobs get SIGINT
# (then SIGKILL) and every namespace it created is deleted with the
# processes inside. At most 300 s.
set -euo pipefail

if (($# != 2)) || [[ -z ${ZC_SESSION:-} ]]; then
    echo "usage: ZC_SESSION=TEXT $0 ROOT BIN_DIR" >&2
    exit 2
fi
export ZC_ROOT=$1 ZC_BIN=$2
# The session's private /tmp would hide a checkout that lives under /tmp.
for dir in "$ZC_ROOT" "$ZC_BIN"; do
    if [[ $(realpath -m "$dir") == /tmp/* ]]; then
        echo "run_session.sh: $dir is under /tmp, which the session replaces with its own: clone the project elsewhere to run the docs tests" >&2
        exit 1
    fi
done

exec timeout --kill-after=10 300 unshare --mount --propagation private bash -c '
set -euo pipefail
mkdir -p /run/netns
mount -t tmpfs zcsession /run/netns
mount -t tmpfs zcsession /tmp
cd "$ZC_ROOT"
if ! [[ target/release -ef $ZC_BIN ]]; then
    mkdir -p target/release
    mount --bind "$ZC_BIN" target/release
fi
export PATH="$ZC_BIN:$PATH"

cleanup() {
    local rc=$? pids ns
    trap - EXIT INT TERM
    set +e
    pids=$(jobs -pr)
    if [[ -n $pids ]]; then
        kill -INT $pids 2>/dev/null
        sleep 0.5
        kill -KILL $(jobs -pr) 2>/dev/null
        wait 2>/dev/null
    fi
    for ns in $(ip netns list 2>/dev/null | cut -d" " -f1); do
        bash scripts/tapbed.sh down "$ns" >/dev/null 2>&1 || ip netns del "$ns"
    done
    exit "$rc"
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM
PS4="+ "
set -x
eval "$ZC_SESSION"
'
