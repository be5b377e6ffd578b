#!/bin/sh
# Makes the base image the Dockerfile beside this script starts FROM: a
# minimal Debian bookworm with Python 3, made on this machine with
# debootstrap and `docker import` -- nothing is pulled from a registry, only
# .deb packages from a Debian mirror.
#
#   sudo examples/docker-python/make-base.sh            # once per machine
#
# Needs root (debootstrap creates device nodes and chowns files), the
# `debootstrap` command (apt-get install debootstrap), Docker, and about
# 300 MB of free space in $TMPDIR while it works. Takes a minute or two.
# Does nothing when the image already exists; FORCE=1 makes it again. No
# test runs this script (debootstrap is too slow for CI); the spec beside it
# is validated with the other examples (hatoba-spec `examples_are_valid`).
#
# Settings (environment):
#   IMAGE   the image's name      (default hatoba-python-base:bookworm)
#   SUITE   the Debian release    (default bookworm)
#   MIRROR  the Debian mirror     (default http://deb.debian.org/debian)
set -eu

IMAGE=${IMAGE:-hatoba-python-base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# python3-minimal is the interpreter alone; http.server, json, logging and
# the rest of the standard library a small app needs are in libpython3.11-stdlib.
INCLUDE=${INCLUDE:-python3-minimal,libpython3.11-stdlib}

say() { printf 'make-base: %s\n' "$*"; }
die() { printf 'make-base: error: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is not installed or not on PATH"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon (is it running? this script needs root: run it with sudo)"

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE already exists, nothing to do (FORCE=1 makes it again)"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root: run this script with sudo"
command -v debootstrap >/dev/null 2>&1 \
    || die "debootstrap is not installed (on Debian/Ubuntu: apt-get install debootstrap)"

work=$(mktemp -d "${TMPDIR:-/tmp}/hatoba-python-base.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
rootfs=$work/rootfs

say "debootstrap $SUITE (minbase + $INCLUDE) from $MIRROR into $rootfs"
if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$rootfs" "$MIRROR" \
        >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    die "debootstrap failed (last lines above); is $MIRROR reachable?"
fi

say "stripping what an app never reads (apt lists and caches, docs, man pages, locales)"
rm -rf "$rootfs"/var/lib/apt/lists/* \
       "$rootfs"/var/cache/apt/* \
       "$rootfs"/var/cache/debconf/*-old \
       "$rootfs"/var/log/* \
       "$rootfs"/usr/share/doc/* \
       "$rootfs"/usr/share/man/* \
       "$rootfs"/usr/share/info/* \
       "$rootfs"/usr/share/locale/* \
       "$rootfs"/usr/share/lintian \
       "$rootfs"/tmp/* \
       "$rootfs"/root/.cache
# debootstrap leaves the build host's resolver and name in the tree; Docker
# provides both to each container.
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"

say "importing as $IMAGE"
tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PYTHONUNBUFFERED=1' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase --include=$INCLUDE $SUITE" \
    - "$IMAGE" >/dev/null

size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
say "done: $IMAGE, $((size / 1000000)) MB ($(docker run --rm "$IMAGE" python3 --version))"
