#!/usr/bin/env bash
# A Debian 13 (trixie) build chroot for the VM tests' newer kernels.
#
#   tests/vm/chroot.sh trixie [-- COMMAND ARGS...]
#
# Debian's 6.18 (trixie) and trixie-backports kernels are built with gcc-14
# and pahole 1.30; bookworm's gcc-12 and pahole 1.24 cannot build modules
# for them (unknown compiler flags, missing BTF features). debootstrap makes
# a minbase trixie under cache/chroot-trixie/ with the compiler, make and
# pahole, and its own apt sources (trixie, -updates, -security, -backports):
# the kernel packages of those suites are fetched by the chroot's apt
# (kernel.sh), never by the host's, whose sources stay bookworm's.
#
# Cached: .ready holds a key of the recipe (suite, mirror, packages, sources,
# this script's revision); a chroot made by another recipe, or left
# half-made by an interrupted run, is rebuilt. Concurrent callers wait on
# cache/chroot-trixie.lock, so the chroot is made once. Without a command,
# prints the shell assignment for the caller to eval:
#   CHROOT=<directory>
# With one, runs it inside the chroot (clean environment, /proc mounted in a
# private mount namespace: objtool reads /proc; nothing stays mounted) and
# exits with its status.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${INXPECT_VM_CACHE:-$here/cache}
suite=${1:?usage: chroot.sh trixie [-- COMMAND ARGS...]}
[ "$suite" = trixie ] || { echo "chroot.sh: only trixie" >&2; exit 2; }
shift
[ $# -eq 0 ] || { [ "$1" = -- ] && shift; } || { echo "chroot.sh: want -- before the command" >&2; exit 2; }

log() { echo "chroot.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

mirror=${INXPECT_VM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${INXPECT_VM_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
# What the module build needs beyond minbase: the headers' and linux-kbuild's
# dependencies (kernel.sh unpacks those packages, apt does not install
# them), and xz for extract-vmlinux.
pkgs=gcc-14,gcc-14-for-host,make,libc6-dev,dwarves,libelf-dev,libssl3t64,python3,xz-utils
sources="deb $mirror $suite main
deb $mirror $suite-updates main
deb $mirror $suite-backports main
deb $security $suite-security main"
revision=2
key=$(printf '%s\n' "$revision" "$suite" "$mirror" "$pkgs" "$sources" | sha256sum | cut -c1-16)
dir=$cache/chroot-$suite

command -v debootstrap >/dev/null || die "missing debootstrap (.ci/install)"
mkdir -p "$cache"
exec 9>"$cache/chroot-$suite.lock"
flock 9
if [ ! -f "$dir/.ready" ] || [ "$(cat "$dir/.ready")" != "$key" ]; then
  start=$(date +%s)
  log "making the $suite chroot in $dir (key $key)"
  rm -rf "$dir" "$dir.tmp"
  # No fsync per unpacked file (as mmdebstrap does): a half-made chroot is
  # thrown away anyway, and on a busy disk the syncs dominate.
  mkdir -p "$dir.tmp/etc/dpkg/dpkg.cfg.d"
  echo force-unsafe-io >"$dir.tmp/etc/dpkg/dpkg.cfg.d/inxpect-unsafe-io"
  if ! debootstrap --variant=minbase --include="$pkgs" "$suite" "$dir.tmp" "$mirror" \
    >"$cache/chroot-$suite.log" 2>&1; then
    tail -n 30 "$cache/chroot-$suite.log" >&2
    die "debootstrap $suite failed (log: $cache/chroot-$suite.log)"
  fi
  printf '%s\n' "$sources" >"$dir.tmp/etc/apt/sources.list"
  # Only what is asked for; no daemons start inside the chroot.
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$dir.tmp/etc/apt/apt.conf.d/90inxpect"
  printf '#!/bin/sh\nexit 101\n' >"$dir.tmp/usr/sbin/policy-rc.d"
  chmod +x "$dir.tmp/usr/sbin/policy-rc.d"
  # debootstrap's downloaded packages (~100 MB) are not needed again.
  chroot "$dir.tmp" apt-get clean
  chroot "$dir.tmp" apt-get update -qq >&2 || die "apt-get update in the chroot failed"
  chroot "$dir.tmp" pahole --version >/dev/null || die "no pahole in the chroot"
  echo "$key" >"$dir.tmp/.ready"
  mv "$dir.tmp" "$dir"
  log "made in $(($(date +%s) - start))s"
fi
exec 9>&-
if [ $# -eq 0 ]; then
  printf 'CHROOT=%q\n' "$dir"
  exit 0
fi
exec unshare --mount --propagation private sh -c \
  'mount -t proc proc "$0/proc" && exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 chroot "$0" "$@"' \
  "$dir" "$@"
