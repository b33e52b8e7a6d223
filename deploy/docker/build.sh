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
# Two bases come from one debootstrap: the build stage's (python3, venv, binutils) and the runtime
# stage's (a dpkg-purged copy: python3 and a shell, no package manager; see runtime_rootfs). Both
# are cached as tarballs and as images in STORAGE_ROOT: only the first run pays for debootstrap
# (about a minute); later runs only rebuild wheels and the image.
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
# The build stage's base: python3 with venv (pip), and binutils to strip the dependencies' libraries.
PACKAGES=python3,python3-venv,ca-certificates,binutils
export=""

while (($#)); do
    case "$1" in
        --export) export="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
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

# ---- 1. the two base images: Debian 12 minbase + python3, and the runtime's trimmed copy ----------
# slim_rootfs: what no stage reads (package caches, docs, man pages, locales).
slim_rootfs() {
    rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/* \
           "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/info/* \
           "$1"/usr/share/locale/* "$1"/var/log/*.log "$1"/var/cache/debconf/*-old
}
# runtime_rootfs: the runtime stage's base keeps python3 (with its shared libraries), the CA
# certificates, tzdata, media-types, and a shell with coreutils, grep, sed, find, tar, gzip for
# `docker exec`; it drops what only installing, building or logging in uses (purged with dpkg, so its
# package list stays true): apt and its crypto stack, perl and debconf, binutils, pip's and venv's
# wheels, util-linux, e2fsprogs, login, PAM, Kerberos/NIS, Berkeley DB; then glibc's iconv modules
# (python's codecs are its own), dpkg itself (nothing installs here: it keeps its database for image
# scanners), the stdlib's test suite, pydoc data, venv/ensurepip/distutils, tkinter/turtle, its
# test/NIS/dbm extension modules and every stdlib .pyc (the Dockerfile compiles what is imported).
RUNTIME_PURGE="apt libapt-pkg6.0 gpgv debian-archive-keyring adduser
    binutils binutils-common binutils-x86-64-linux-gnu libbinutils libctf0 libctf-nobfd0 libgprofng0 libjansson4
    libsframe1 python3-pip-whl python3-setuptools-whl python3-venv python3.11-venv python3-distutils
    python3-lib2to3 e2fsprogs libext2fs2 libss2 logsave util-linux util-linux-extra mount libmount1
    libblkid1 libsmartcols1 login passwd libpam-modules libpam-modules-bin libpam-runtime libpam0g
    libsemanage2 libsemanage-common libsepol2 libaudit1 libaudit-common libcap-ng0 libgnutls30 libhogweed6
    libnettle8 libidn2-0 libunistring2 libp11-kit0 libtasn1-6 libgcrypt20 libgpg-error0 libsystemd0
    libudev1 liblz4-1 libxxhash0 libseccomp2 libdebconfclient0 openssl init-system-helpers
    sysvinit-utils hostname bsdutils libnsl2 libtirpc3 libtirpc-common libgssapi-krb5-2 libkrb5-3
    libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2 libdb5.3"
runtime_rootfs() {
    local installed=() package
    for package in $RUNTIME_PURGE; do   # only those this suite installed (binutils' set varies)
        chroot "$1" dpkg-query -W "$package" > /dev/null 2>&1 && installed+=("$package")
    done
    local force=(--force-remove-essential --force-depends --force-remove-protected)
    chroot "$1" dpkg --purge "${force[@]}" "${installed[@]}"
    # last: what dpkg's own maintainer scripts need (debconf runs on perl; dpkg checks for diff),
    # then dpkg itself; its database stays, for image scanners (status, and each package's files)
    chroot "$1" dpkg --purge "${force[@]}" debconf perl-base diffutils dpkg libzstd1 libmd0
    find "$1"/var/lib/dpkg/info -type f ! -name '*.list' ! -name '*.md5sums' ! -name '*.conffiles' \
        ! -name format -delete
    rm -rf "$1"/usr/lib/x86_64-linux-gnu/gconv "$1"/var/cache/debconf "$1"/var/lib/dpkg/*-old \
           "$1"/usr/lib/python3.*/{test,pydoc_data,ensurepip,venv,distutils,idlelib,tkinter,turtledemo} \
           "$1"/usr/lib/python3.*/{turtle,_pydecimal,_distutils_system_mod}.py \
           "$1"/usr/lib/python3.*/lib-dynload/{_test,xx,_xx,_ctypes_test,nis,_dbm,ossaudiodev}*
    find "$1"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +
    chroot "$1" python3 -B -c 'import ssl, sqlite3, ctypes, zoneinfo, lzma, bz2, decimal, uuid, hashlib'
}
# Cache keys: the build base's covers the suite, the packages and slim_rootfs; the runtime base's
# covers that and runtime_rootfs (editing the trimming re-trims the cached tarball, no debootstrap).
BASE_TAG="$(printf '%s %s\n%s' "$SUITE" "$PACKAGES" "$(declare -f slim_rootfs)" | sha256sum | cut -c1-12)"
RUNTIME_TAG="$(printf '%s\n%s\n%s' "$BASE_TAG" "$(declare -f runtime_rootfs)" "$RUNTIME_PURGE" \
    | sha256sum | cut -c1-12)"
BASE_IMAGE="localhost/margin-monitor-base:$SUITE-$BASE_TAG"
RUNTIME_IMAGE="localhost/margin-monitor-runtime:$SUITE-$RUNTIME_TAG"
tarball="$CACHE_DIR/debian-$SUITE-$BASE_TAG.tar"
runtime_tarball="$CACHE_DIR/debian-$SUITE-$RUNTIME_TAG-runtime.tar"

# The two ways to fill a fresh directory with a root filesystem:
debootstrap_base() {   # rootfs: Debian minbase with PACKAGES, slimmed
    say "debootstrap $SUITE ($PACKAGES) from $MIRROR"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$1" "$MIRROR" \
        > "$CACHE_DIR/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE_DIR/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE_DIR/debootstrap.log)"; }
    slim_rootfs "$1"
}
trimmed_base() {   # rootfs: the build base (its tarball if cached), trimmed by runtime_rootfs
    if [ -s "$tarball" ]; then tar --numeric-owner -C "$1" -xf "$tarball"; else debootstrap_base "$1"; fi
    say "trimming a copy of the base for the runtime stage"
    # a shell of its own: errexit holds inside (it would not in a function called under ||)
    RUNTIME_PURGE="$RUNTIME_PURGE" bash -euo pipefail -c "$(declare -f runtime_rootfs); runtime_rootfs \"\$1\"" \
        runtime_rootfs "$1" > "$CACHE_DIR/runtime-rootfs.log" 2>&1 \
        || { tail -20 "$CACHE_DIR/runtime-rootfs.log" >&2; die "trimming the runtime base failed (log: $CACHE_DIR/runtime-rootfs.log)"; }
}
# ensure_base IMAGE TARBALL FILL: the image, else imported from the tarball, else FILL makes that first
rootfs=""
trap 'rm -rf "$rootfs"' EXIT
ensure_base() {
    if bah inspect --type image "$1" > /dev/null 2>&1; then
        say "base image $1 cached"
        return
    fi
    if [ ! -s "$2" ]; then
        rootfs="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
        "$3" "$rootfs"
        tar --numeric-owner -C "$rootfs" -cf "$2.tmp" .
        mv "$2.tmp" "$2"
        rm -rf "$rootfs"
    fi
    say "importing $2 as $1"
    local ctr
    ctr="$(bah from scratch)"
    bah add "$ctr" "$2" / > /dev/null
    bah config --env PATH=/usr/local/bin:/usr/bin:/bin --cmd /bin/sh "$ctr"
    bah commit --quiet --rm "$ctr" "$1" > /dev/null
}
ensure_base "$BASE_IMAGE" "$tarball" debootstrap_base
ensure_base "$RUNTIME_IMAGE" "$runtime_tarball" trimmed_base
trap - EXIT

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
    --build-arg "BASE=$BASE_IMAGE" --build-arg "RUNTIME_BASE=$RUNTIME_IMAGE" -f "$here/Dockerfile" -t "$IMAGE" "$context" > /dev/null
bah rmi --prune > /dev/null 2>&1 || true   # drop the previous build's now-untagged image (best effort)
bah images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$IMAGE" >&2
say "runtime base $(bah images --format '{{.Size}}' "$RUNTIME_IMAGE"), build base $(bah images --format '{{.Size}}' "$BASE_IMAGE")"

if [ -n "$export" ]; then
    say "exporting to $export (load with: docker load -i $export)"
    rm -f "$export"
    bah push --quiet "$IMAGE" "docker-archive:$export:$IMAGE"
fi
say "done"
