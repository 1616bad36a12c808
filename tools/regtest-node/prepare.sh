#!/usr/bin/env bash
# Prepares tools/regtest-node/vendor/blvm-node-0.1.83: the pristine blvm-node 0.1.83 crate with
# patches/blvm-node-0.1.83-concurrent-ipc.patch applied (its header says why). Cargo.toml's
# [patch.crates-io] points blvm-node there, so run this before building regtest-node.
#
# Idempotent: does nothing when vendor/.blvm-node-0.1.83.stamp holds the patch's current sha256;
# otherwise re-creates the directory from scratch. The crate comes from cargo's download cache
# ($CARGO_HOME/registry/cache/*/blvm-node-0.1.83.crate) or, if absent, from static.crates.io, and
# must match the checksum crates.io publishes (the one Cargo.lock recorded before the patch).
# Needs bash, tar, sha256sum, git (for `git apply`), and curl when the crate is not cached.
set -euo pipefail

VERSION=0.1.83
CRATE_SHA256=1d9671a277650099469b30e0f48d4b4de6dd0f62b340a60bd9dcdccb7c735ecb
URL="https://static.crates.io/crates/blvm-node/blvm-node-$VERSION.crate"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
patch="$here/patches/blvm-node-$VERSION-concurrent-ipc.patch"
vendor="$here/vendor"
dest="$vendor/blvm-node-$VERSION"
stamp="$vendor/.blvm-node-$VERSION.stamp"

want="$(sha256sum "$patch" | cut -d' ' -f1)"
if [[ -f "$stamp" && -f "$dest/Cargo.toml" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi

mkdir -p "$vendor"
tmp="$(mktemp -d "$vendor/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

crate=""
for c in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"blvm-node-$VERSION.crate"; do
    if [[ -f "$c" ]] && [[ "$(sha256sum "$c" | cut -d' ' -f1)" == "$CRATE_SHA256" ]]; then
        crate="$c"
        break
    fi
done
if [[ -z "$crate" ]]; then
    echo "prepare.sh: downloading $URL" >&2
    crate="$tmp/blvm-node-$VERSION.crate"
    curl -sSfL --retry 3 --max-time 300 -o "$crate" "$URL"
fi
got="$(sha256sum "$crate" | cut -d' ' -f1)"
if [[ "$got" != "$CRATE_SHA256" ]]; then
    echo "prepare.sh: $crate has sha256 $got, expected $CRATE_SHA256" >&2
    exit 1
fi

tar -xzf "$crate" -C "$tmp"
# vendor/ lies inside this repository's work tree: stop git's repository discovery at $tmp so
# `git apply` patches plain files relative to the crate root (inside a work tree it would take
# paths relative to the repository's top and skip the rest).
(cd "$tmp/blvm-node-$VERSION" && GIT_CEILING_DIRECTORIES="$tmp" git apply -p1 "$patch")

rm -rf "$dest" "$stamp"
mv "$tmp/blvm-node-$VERSION" "$dest"
echo "$want" > "$stamp"
echo "prepare.sh: $dest ready (blvm-node $VERSION + $(basename "$patch"))" >&2
