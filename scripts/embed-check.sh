#!/usr/bin/env bash
# embed-check.sh: builds a crate outside this workspace from the README's
# "Use it as a library" snippet (its Cargo.toml dependencies and its
# main.rs, taken from README.md as written, with `../zcstack/` pointing at
# this checkout), the way a user embedding zcstack by path would. Fails if
# the snippet does not compile or if the build pulls smoltcp from crates.io
# instead of the vendored, patched zcstack-smoltcp.
#
#   bash scripts/embed-check.sh
#
# Uses the workspace's Cargo.lock (the same dependency versions) and works
# offline when those crates are already in cargo's cache; otherwise cargo
# fetches them from crates.io. Builds in ${CARGO_TARGET_DIR:-target}/embed-check.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/embed-check
WORK=$(mktemp -d -t zc-embed.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# block LANG: the body of the first ```LANG fenced block of README.md.
block() {
    awk -v lang="$1" '
        !inside && $0 == "```" lang { inside = 1; next }
        inside && $0 == "```" { exit }
        inside { print }
    ' "$ROOT/README.md"
}

DEPS=$(block toml)
MAIN=$(block rust)
if [[ -z $DEPS || -z $MAIN ]]; then
    echo "embed-check: README.md has no \`\`\`toml or \`\`\`rust block to build" >&2
    exit 1
fi
if [[ $DEPS != *"../zcstack/"* ]]; then
    echo "embed-check: the README's toml block does not depend on '../zcstack/…' by path" >&2
    exit 1
fi

mkdir -p "$WORK/src"
{
    printf '[package]\nname = "zc-embed-check"\nversion = "0.1.0"\nedition = "2024"\npublish = false\n\n'
    printf '%s\n' "${DEPS//..\/zcstack\//$ROOT/}"
    # Not part of any workspace above the temporary directory.
    printf '\n[workspace]\n'
} >"$WORK/Cargo.toml"
printf '%s\n' "$MAIN" >"$WORK/src/main.rs"
cp "$ROOT/Cargo.lock" "$WORK/Cargo.lock"

cd "$WORK"
OFFLINE=()
# Offline when every crate the lockfile names is in cargo's cache already.
if cargo metadata --offline --format-version 1 >/dev/null 2>&1; then
    OFFLINE=(--offline)
fi
cargo build "${OFFLINE[@]}" --quiet --target-dir "$TARGET"

if grep -qx 'name = "smoltcp"' Cargo.lock; then
    echo "embed-check: the outside crate pulled smoltcp from crates.io, not zcstack-smoltcp:" >&2
    cargo tree "${OFFLINE[@]}" -i smoltcp >&2 || true
    exit 1
fi
grep -qx 'name = "zcstack-smoltcp"' Cargo.lock || {
    echo "embed-check: zcstack-smoltcp is not in the outside crate's dependencies" >&2
    exit 1
}
echo "embed-check: the README's library snippet builds outside the workspace (with zcstack-smoltcp)"
