#!/usr/bin/env bash
# Build the margin-monitor image with buildah from a debootstrapped Debian 12 base, with no
# registry reachable from inside the build: dependency wheels are built on the host first and
# passed in the context's deploy/docker/wheelhouse/; the image builds the project from source.
# (With a Docker engine, `docker build -f deploy/docker/Dockerfile .` needs none of this.)
#
#   sudo deploy/docker/build.sh                 # → localhost/margin-monitor:latest
#   sudo deploy/docker/build.sh --export margin-monitor.tar   # also write a `docker load` archive
#
# Environment (all optional):
#   IMAGE         image name                         (localhost/margin-monitor:latest)
#   PYTHON        host python used for `pip wheel`   (python3; must be 3.11 like the image)
#   CACHE_DIR     debootstrap tarball cache          (/var/cache/margin-monitor-ci)
#   STORAGE_ROOT  buildah storage (vfs driver)       ($CACHE_DIR/storage)
#   RUN_ROOT      buildah run state                  (/run/margin-monitor-ci)
#   MIRROR        Debian mirror for debootstrap      (http://deb.debian.org/debian)
# The base rootfs is cached as a tarball and as an image in STORAGE_ROOT: only the first run
# pays for debootstrap (about a minute); later runs only rebuild wheels and the image.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
IMAGE="${IMAGE:-localhost/margin-monitor:latest}"
PYTHON="${PYTHON:-python3}"
CACHE_DIR="${CACHE_DIR:-/var/cache/margin-monitor-ci}"
STORAGE_ROOT="${STORAGE_ROOT:-$CACHE_DIR/storage}"
RUN_ROOT="${RUN_ROOT:-/run/margin-monitor-ci}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
BASE_TAG="$(printf '%s %s' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)"
BASE_IMAGE="localhost/margin-monitor-base:$SUITE-$BASE_TAG"
export=""

while (($#)); do
    case "$1" in
        --export) export="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

say() { printf '[build.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (buildah with --isolation chroot and debootstrap)"
for tool in buildah debootstrap; do
    command -v "$tool" > /dev/null || die "$tool not found: run deploy/ci-setup.sh"
done
pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$pyver" = 3.11 ] || die "$PYTHON is $pyver; the image has Debian 12's python 3.11 (set PYTHON=)"

bah() { buildah --storage-driver vfs --root "$STORAGE_ROOT" --runroot "$RUN_ROOT" "$@"; }
mkdir -p "$CACHE_DIR" "$STORAGE_ROOT"

# ---- 1. the base image: Debian 12 minbase + python3 ------------------------------------------
if bah inspect --type image "$BASE_IMAGE" > /dev/null 2>&1; then
    say "base image $BASE_IMAGE cached"
else
    tarball="$CACHE_DIR/debian-$SUITE-$BASE_TAG.tar"
    if [ ! -s "$tarball" ]; then
        say "debootstrap $SUITE ($PACKAGES) from $MIRROR"
        rootfs="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
        trap 'rm -rf "$rootfs"' EXIT
        debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
            > "$CACHE_DIR/debootstrap.log" 2>&1 \
            || { tail -20 "$CACHE_DIR/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE_DIR/debootstrap.log)"; }
        # slim it: package caches, docs, man pages, locales
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
               "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
               "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
        tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        trap - EXIT
    fi
    say "importing $tarball as $BASE_IMAGE"
    ctr="$(bah from scratch)"
    bah add "$ctr" "$tarball" / > /dev/null
    bah config --env PATH=/usr/local/bin:/usr/bin:/bin --cmd /bin/sh "$ctr"
    bah commit --quiet --rm "$ctr" "$BASE_IMAGE" > /dev/null
fi

# ---- 2. the build context: the source, plus every dependency as a wheel ------------------------
# The Dockerfile builds margin-monitor itself from the source in the context; the wheelhouse only
# spares the build a package index (none is reachable from inside it here).
context="$(mktemp -d "${TMPDIR:-/tmp}/margin-monitor-context.XXXXXX")"
trap 'rm -rf "$context"' EXIT
say "building dependency wheels with $PYTHON"
mkdir -p "$context/deploy/docker/wheelhouse"
wheelhouse="$context/deploy/docker/wheelhouse"
{ "$PYTHON" -m pip wheel --quiet --disable-pip-version-check "$repo" -w "$wheelhouse" \
    && "$PYTHON" -m pip wheel --quiet --disable-pip-version-check "setuptools>=68" wheel -w "$wheelhouse"; } \
    2> "$context/pip.log" || { cat "$context/pip.log" >&2; die "pip wheel failed"; }
rm -f "$wheelhouse"/margin_monitor-*.whl
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/config.yaml" "$repo/monitor" "$context/"
find "$context/monitor" -name __pycache__ -prune -exec rm -rf {} +

# ---- 3. the image -------------------------------------------------------------------------------
say "building $IMAGE"
bah bud --quiet --isolation chroot --format docker --layers=false \
    --build-arg "BASE=$BASE_IMAGE" -f "$here/Dockerfile" -t "$IMAGE" "$context" > /dev/null
bah rmi --prune > /dev/null 2>&1 || true   # drop the previous build's now-untagged image (best effort)
bah images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$IMAGE" >&2
say "base $(bah images --format '{{.Size}}' "$BASE_IMAGE")"

if [ -n "$export" ]; then
    say "exporting to $export (load with: docker load -i $export)"
    rm -f "$export"
    bah push --quiet "$IMAGE" "docker-archive:$export:$IMAGE"
fi
say "done"
