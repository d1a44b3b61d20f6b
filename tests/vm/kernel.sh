#!/usr/bin/env bash
# Fetches and prepares a Debian cloud kernel for the VM tests.
#
#   tests/vm/kernel.sh 6.1|6.12
#
# Downloads (apt-get download) the newest bookworm cloud-amd64 image, headers,
# headers-common and linux-kbuild packages of the series, unpacks them (dpkg -x)
# under tests/vm/cache/<kernel-release>/root and makes the headers usable for
# out-of-tree module builds. Prints shell assignments for the caller to eval:
#   KREL=...  KDIR=<headers>  VMLINUZ=...  RESOLVE_BTFIDS=<path or empty>
# Set INXPECT_VM_KREL_6_1 / INXPECT_VM_KREL_6_12 (e.g. 6.1.0-56-cloud-amd64)
# to pin a release instead of taking the newest.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${INXPECT_VM_CACHE:-$here/cache}
series=${1:?usage: kernel.sh 6.1|6.12}

log() { echo "kernel.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

case $series in
6.1) pattern='^linux-image-6\.1\.0-[0-9]+-cloud-amd64$'; pin=${INXPECT_VM_KREL_6_1:-} ;;
6.12) pattern='^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$'; pin=${INXPECT_VM_KREL_6_12:-} ;;
*) die "unknown series '$series' (want 6.1 or 6.12)" ;;
esac

newest_available() {
  apt-cache pkgnames linux-image-"$series". 2>/dev/null | grep -E "$pattern" | sort -V | tail -n1 |
    sed 's/^linux-image-//'
}

# Newest release the apt lists know; refresh the lists once when they know none
# (fresh CI machines), and fall back to what is cached when offline.
pick_release() {
  local krel
  [ -n "$pin" ] && { echo "$pin"; return; }
  krel=$(newest_available)
  if [ -z "$krel" ]; then
    log "no $series cloud kernel in the apt lists; running apt-get update"
    apt-get update -qq >&2 || log "apt-get update failed"
    krel=$(newest_available)
  fi
  if [ -z "$krel" ]; then
    krel=$(find "$cache" -maxdepth 2 -name .ready 2>/dev/null | xargs -r -n1 dirname |
      xargs -r -n1 basename | sed 's/^/linux-image-/' | grep -E "$pattern" | sort -V |
      tail -n1 | sed 's/^linux-image-//')
    [ -n "$krel" ] && log "using cached $krel"
  fi
  [ -n "$krel" ] || die "cannot find a linux-image matching $pattern (apt sources need bookworm-security)"
  echo "$krel"
}

download() {
  local dir=$1; shift
  (cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "$@" >&2)
}

# 6.1's headers ship no vmlinux, but kbuild only emits module BTF (needed to
# register kfuncs) against one: decompress it from the bzImage.
extract_vmlinux() {
  local img=$1 out=$2 off
  local tmp=$out.tmp
  # magic|decompressor, as in the kernel's scripts/extract-vmlinux
  for m in '\002\041\114\030|lz4 -dc' '\037\213\010|gzip -dc' '\3757zXZ\000|xz -dc' \
           '\050\265\057\375|zstd -dc'; do
    local magic=${m%%|*} cmd=${m#*|} pat
    pat=$(printf "$magic")
    command -v "${cmd%% *}" >/dev/null || continue
    for off in $(LC_ALL=C grep -abo -- "$pat" "$img" 2>/dev/null | cut -d: -f1 | head -n5); do
      tail -c +$((off + 1)) "$img" | $cmd >"$tmp" 2>/dev/null || true
      if [ -s "$tmp" ] && head -c4 "$tmp" | grep -q 'ELF'; then
        mv "$tmp" "$out"
        return 0
      fi
    done
  done
  rm -f "$tmp"
  die "could not decompress $img (need lz4/gzip/xz/zstd)"
}

prepare() {
  local krel=$1 abi kbuild_pkg hver h
  local dir=$cache/$krel
  abi=${krel%-cloud-amd64}
  [ -f "$dir/.ready" ] && return 0
  rm -rf "$dir"
  mkdir -p "$dir/debs" "$dir/root"
  log "fetching $krel"
  case $series in
  6.1)
    # linux-kbuild-6.1 is shared by all 6.1 ABIs: take the headers' version.
    hver=$(apt-cache show "linux-headers-$krel" 2>/dev/null | sed -n 's/^Version: //p' | head -n1)
    kbuild_pkg="linux-kbuild-6.1${hver:+=$hver}" ;;
  6.12) kbuild_pkg="linux-kbuild-$abi" ;;
  esac
  download "$dir/debs" "linux-image-$krel" "linux-headers-$krel" \
    "linux-headers-$abi-common" "$kbuild_pkg" || return 1
  for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$dir/root" || return 1; done

  h=$dir/root/usr/src/linux-headers-$krel
  [ -f "$h/Makefile" ] || die "no headers in $h"
  # The headers' Makefile includes the -common tree by absolute /usr/src path.
  sed -i "s|/usr/src/|$dir/root/usr/src/|" "$h/Makefile"
  if [ ! -f "$h/vmlinux" ]; then
    log "extracting vmlinux for module BTF"
    extract_vmlinux "$dir/root/boot/vmlinuz-$krel" "$h/vmlinux"
  fi
  touch "$dir/.ready"
}

krel=$(pick_release)
if ! prepare "$krel"; then
  # Stale apt lists: a security update removed that version from the
  # mirror. Refresh, pick again (maybe a newer release) and retry once.
  log "download of $krel failed; running apt-get update and retrying"
  apt-get update -qq >&2 || true
  krel=$(pick_release)
  prepare "$krel" || die "cannot download the $krel packages"
fi
dir=$cache/$krel
kdir=$dir/root/usr/src/linux-headers-$krel
btfids=$kdir/tools/bpf/resolve_btfids/resolve_btfids
if [ ! -x "$btfids" ]; then
  # 6.1's linux-kbuild lacks resolve_btfids; without it the kfunc set keeps
  # zero ids and the verifier refuses the calls. The 6.12 one handles 6.1.
  [ "$series" = 6.12 ] && die "$btfids missing"
  eval "$("$0" 6.12)"
  btfids=$RESOLVE_BTFIDS
  [ -x "$btfids" ] || die "no resolve_btfids in the 6.12 kbuild either"
fi
printf 'KREL=%q\nKDIR=%q\nVMLINUZ=%q\nRESOLVE_BTFIDS=%q\n' \
  "$krel" "$kdir" "$dir/root/boot/vmlinuz-$krel" "$btfids"
