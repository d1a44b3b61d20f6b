#!/usr/bin/env bash
# The arm64 guest's user space for the VM tests, unpacked, never installed.
#
#   tests/vm/sysroot.sh arm64
#
# apt-get downloads busybox-static and the static libraries the guest
# programs link (libbpf, libelf, zlib, zstd) as :arm64 packages and unpacks
# them (dpkg -x) under tests/vm/cache/sysroot-arm64/. libbpf is taken at the
# host's version (bookworm-backports' 1.4.6 with .ci/install), so the guest
# programs and the host tools speak the same libbpf. Needs
# `dpkg --add-architecture arm64` (done by .ci/install) for apt to know the
# packages. Prints shell assignments for the caller to eval:
#   SYSROOT=<dir with usr/include, usr/lib/aarch64-linux-gnu>  BUSYBOX=<binary>
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${INXPECT_VM_CACHE:-$here/cache}
arch=${1:?usage: sysroot.sh arm64}
[ "$arch" = arm64 ] || { echo "sysroot.sh: only arm64" >&2; exit 2; }

log() { echo "sysroot.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

bpfver=$(dpkg-query -W -f='${Version}' libbpf-dev 2>/dev/null) || die "host libbpf-dev missing (.ci/install)"
dir=$cache/sysroot-$arch
# A different host libbpf means a different sysroot.
if [ ! -f "$dir/.ready" ] || [ "$(cat "$dir/.ready")" != "$bpfver" ]; then
  rm -rf "$dir"
  mkdir -p "$dir/debs" "$dir/root"
  log "fetching arm64 busybox, libbpf $bpfver, libelf, zlib, zstd"
  dpkg --print-foreign-architectures | grep -qx arm64 || die "apt does not know arm64: dpkg --add-architecture arm64 (.ci/install)"
  pkgs=(busybox-static:arm64 "libbpf-dev:arm64=$bpfver" "libbpf1:arm64=$bpfver"
    libelf-dev:arm64 libelf1:arm64 zlib1g-dev:arm64 zlib1g:arm64 libzstd-dev:arm64 libzstd1:arm64)
  if ! (cd "$dir/debs" && apt-get download -q -o APT::Sandbox::User=root "${pkgs[@]}" >&2); then
    log "download failed; running apt-get update and retrying"
    apt-get update -qq >&2 || true
    (cd "$dir/debs" && apt-get download -q -o APT::Sandbox::User=root "${pkgs[@]}" >&2) ||
      die "cannot download ${pkgs[*]}"
  fi
  for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$dir/root"; done
  [ -f "$dir/root/usr/lib/aarch64-linux-gnu/libbpf.a" ] || die "no libbpf.a in the arm64 libbpf-dev"
  [ -x "$dir/root/bin/busybox" ] || die "no busybox in busybox-static:arm64"
  echo "$bpfver" >"$dir/.ready"
fi
printf 'SYSROOT=%q\nBUSYBOX=%q\n' "$dir/root" "$dir/root/bin/busybox"
