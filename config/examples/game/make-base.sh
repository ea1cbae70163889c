#!/usr/bin/env bash
# Make the game example's Debian 12 base image: debootstrap (minbase) from this machine's own
# apt mirror, tar it, and `carte import` it as game-base:bookworm.
#
#   ./make-base.sh                 build the tar (or reuse the cached one) and import it
#   ./make-base.sh --tar-only      only make sure the cached tar exists; print its path
#
# The packages the web and db tiers need are installed here, at debootstrap time, so the
# Dockerfiles' RUN steps need no network. The tar is cached under $CACHE_DIR (keyed by the
# package list), so CI and later runs reuse it. $CARTE is the client command (default `carte`;
# e.g. CARTE="carte -H unix:///tmp/x/carte.sock").
set -euo pipefail

CACHE_DIR="${CACHE_DIR:-/var/cache/carte-tests}"
CARTE="${CARTE:-carte}"
IMAGE="${IMAGE:-game-base:bookworm}"
SUITE=bookworm
PACKAGES=python3,python3-redis,gunicorn,redis-server,redis-tools,ca-certificates

say() { printf 'make-base.sh: %s\n' "$*" >&2; }
die() { printf 'make-base.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and carte import need it)"

# The first Debian archive this machine's apt is configured with (deb822 or one-line format).
mirror() {
    local found=""
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        found=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$file")
        [ -n "$found" ] && break
    done
    if [ -z "$found" ]; then
        found=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }')
    fi
    [ -n "$found" ] || die "no Debian mirror in /etc/apt/sources.list*; add one (apt must work)"
    printf '%s\n' "$found"
}

key=$(printf '%s %s' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)
tar_path="$CACHE_DIR/debian-$SUITE-game-$key.tar"

if [ ! -s "$tar_path" ]; then
    command -v debootstrap >/dev/null || die "debootstrap is missing; apt-get install -y debootstrap"
    mkdir -p "$CACHE_DIR"
    work=$(mktemp -d "$CACHE_DIR/.debootstrap-XXXXXX")
    trap 'rm -rf "$work"' EXIT
    source_url=$(mirror)
    say "debootstrap $SUITE from $source_url into $work (about a minute)"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/rootfs" "$source_url" \
        >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    # What an image needs no copy of: package lists and downloaded .debs.
    rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin \
        "$work/rootfs/var/cache/apt/archives/"*.deb
    # /dev is kept as debootstrap made it: `carte import` drops its device nodes (Carte makes /dev).
    tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$work/rootfs.tar" .
    mv "$work/rootfs.tar" "$tar_path"
    say "cached $tar_path ($(du -h "$tar_path" | cut -f1))"
fi

if [ "${1:-}" = "--tar-only" ]; then
    printf '%s\n' "$tar_path"
    exit 0
fi
$CARTE import "$tar_path" "$IMAGE"
