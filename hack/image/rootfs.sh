#!/usr/bin/env bash
# Usage: rootfs.sh IMAGE OUT [--write-lock]
#
# Builds the Debian bookworm root filesystem of an image (hack/image/IMAGE/packages: the packages
# asked for by name, each pinned to a version) into the directory OUT with mmdebstrap (minbase),
# then checks every installed package against hack/image/IMAGE/debian.lock, so a mirror that has
# moved on fails the build instead of changing the image quietly. --write-lock rewrites the lock.
# Needs root (mmdebstrap's root mode). The same script runs in the Dockerfile.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=$1 out=$2 mode=${3:-}
lock="$here/$image/debian.lock"
include=$(grep -v '^\s*#' "$here/$image/packages" | grep . | paste -sd, -)
SOURCE_DATE_EPOCH=$(grep -v "^#" "$here/source-date-epoch")
export SOURCE_DATE_EPOCH

# Documentation, man pages and translations are never unpacked (copyright files are kept);
# /proc, /sys and /dev are not mounted, so the build also runs inside `docker build`.
mmdebstrap --quiet --variant=minbase --mode=root --format=directory --architectures=amd64 \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --skip=chroot/mount \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --include="$include" \
  bookworm "$out" - < <(grep -v '^\s*#' "$here/sources.list")

installed=$(chroot "$out" dpkg-query -W -f '${Package}=${Version}\n' | LC_ALL=C sort)
if [[ $mode == --write-lock ]]; then
  {
    echo "# Every Debian package in the $image image (amd64), checked by hack/image/rootfs.sh."
    echo "# Rewrite with: hack/image/rootfs.sh $image DIR --write-lock"
    echo "$installed"
  } > "$lock"
elif ! diff -u <(grep -v '^\s*#' "$lock") <(echo "$installed") >&2; then
  echo "rootfs.sh: the Debian packages differ from $lock (above); if the change is wanted," \
       "rewrite it with --write-lock and bump hack/image/$image/packages" >&2
  exit 1
fi

# What a read-only, non-root container never reads: apt's lists and caches, logs with build
# times, backup copies of the user and package databases, the linker's cache of build-time data,
# glibc's iconv converters (9 MB; neither Python nor Node.js uses iconv), and the device nodes
# (a container runtime mounts its own /dev).
rm -rf "$out"/var/lib/apt/lists/* "$out"/var/cache/apt/* "$out"/var/cache/debconf/*-old \
  "$out"/var/log/* "$out"/var/lib/dpkg/*-old "$out"/etc/*- "$out"/var/cache/ldconfig/aux-cache \
  "$out"/usr/lib/x86_64-linux-gnu/gconv "$out"/dev/*
# The unprivileged user the images run as (the chart's runAsUser), with a passwd entry so
# getpwuid() and getpass.getuser() work.
echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin' >> "$out/etc/passwd"
echo 'nonroot:x:65532:' >> "$out/etc/group"
echo 'nonroot:!:1::::::' >> "$out/etc/shadow"
install -d -m 0755 -o 65532 -g 65532 "$out/home/nonroot"
