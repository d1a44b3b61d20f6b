#!/usr/bin/env bash
# Fetches and prepares a Debian cloud kernel for the VM tests.
#
#   tests/vm/kernel.sh 6.1|6.12|6.18|7|arm64-6.1|arm64-6.12|arm64-7
#
# Downloads (apt-get download) the newest bookworm cloud-amd64 (or, with the
# arm64- prefix, cloud-arm64) image, headers, headers-common and linux-kbuild
# packages of the series, unpacks them (dpkg -x)
# under tests/vm/cache/<kernel-release>/root and makes the headers usable for
# out-of-tree module builds. Prints shell assignments for the caller to eval:
#   KREL=...  KDIR=<headers>  VMLINUZ=...  RESOLVE_BTFIDS=<path or empty>
# Set INXPECT_VM_KREL_6_1 / INXPECT_VM_KREL_6_12 (e.g. 6.1.0-56-cloud-amd64),
# INXPECT_VM_KREL_ARM64_6_1 / _ARM64_6_12 to pin a release instead of taking
# the newest. arm64: the image and headers are :arm64 packages, linux-kbuild
# stays :amd64 (its tools run on the build host; the headers' .kernelvariables
# set ARCH=arm64 and CROSS_COMPILE=aarch64-linux-gnu-).
#
# 6.18 and 7 are trixie-backports kernels (Debian 13's own is 6.12), built
# with gcc-14 and pahole 1.30: their packages are fetched by the apt of the
# trixie chroot (chroot.sh; the host's apt stays bookworm's), and the
# headers, headers-common and linux-kbuild are unpacked into that chroot,
# where run.sh builds the module; KDIR is then a path inside it and the
# output has one more line, CHROOT=<dir>. 7 is the newest 7.x whose headers
# are in the trixie-backports index. 6.18's headers have left the index (the
# signed images of old versions stay): they come from the archive's pool,
# checked against the SHA-256 sums pinned below (INXPECT_VM_KREL_6_18 / _7
# pin a release). arm64-7 is 7's cloud-arm64 build the same way: the
# chroot's apt learns the arm64 architecture and the chroot gets the
# cross gcc-14 the first time it is asked for (INXPECT_VM_KREL_ARM64_7
# pins a release).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${INXPECT_VM_CACHE:-$here/cache}
series=${1:?usage: kernel.sh 6.1|6.12|6.18|7|arm64-6.1|arm64-6.12|arm64-7}

log() { echo "kernel.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

case $series in
6.1) pattern='^linux-image-6\.1\.0-[0-9]+-cloud-amd64$'; pin=${INXPECT_VM_KREL_6_1:-} ;;
6.12) pattern='^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$'; pin=${INXPECT_VM_KREL_6_12:-} ;;
arm64-6.1) pattern='^linux-image-6\.1\.0-[0-9]+-cloud-arm64$'; pin=${INXPECT_VM_KREL_ARM64_6_1:-} ;;
arm64-6.12) pattern='^linux-image-6\.12\.[0-9]+\+deb12-cloud-arm64$'; pin=${INXPECT_VM_KREL_ARM64_6_12:-} ;;
6.18) pattern='^linux-image-6\.18\.[0-9]+\+deb13-cloud-amd64$'; pin=${INXPECT_VM_KREL_6_18:-6.18.15+deb13-cloud-amd64} ;;
7) pattern='^linux-headers-7\.[0-9]+\.[0-9]+\+deb13-cloud-amd64$'; pin=${INXPECT_VM_KREL_7:-} ;;
arm64-7) pattern='^linux-headers-7\.[0-9]+\.[0-9]+\+deb13-cloud-arm64$'; pin=${INXPECT_VM_KREL_ARM64_7:-} ;;
*) die "unknown series '$series' (want 6.1, 6.12, 6.18, 7, arm64-6.1, arm64-6.12 or arm64-7)" ;;
esac
# The trixie-backports kernels: apt runs in the chroot.
CHROOT=
case $series in
6.18 | 7 | arm64-7) eval "$("$here/chroot.sh" trixie)" ;;
esac
inchroot() {
  if [ -n "$CHROOT" ]; then
    "$here/chroot.sh" trixie -- "$@"
  else
    "$@"
  fi
}
case $series in
arm64-*) arch=arm64; kseries=${series#arm64-} ;;
*) arch=amd64; kseries=$series ;;
esac
# arm64 in the chroot: its apt's arm64 lists (the image and headers are
# :arm64 packages) and the cross gcc-14 (the module build's). Once per
# chroot; kernel.sh runs under the cache lock, so one apt at a time.
if [ -n "$CHROOT" ] && [ $arch = arm64 ]; then
  inchroot sh -c 'dpkg --print-foreign-architectures | grep -qx arm64 && [ -n "$(ls /var/lib/apt/lists/*binary-arm64_Packages* 2>/dev/null)" ] ||
    { dpkg --add-architecture arm64 && apt-get update -qq; }' >&2 || die "arm64 apt lists in the chroot"
  if [ ! -x "$CHROOT/usr/bin/aarch64-linux-gnu-gcc-14" ]; then
    log "installing the cross gcc-14 in the chroot"
    inchroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-14-aarch64-linux-gnu >&2 || die "cannot install gcc-14-aarch64-linux-gnu in the chroot"
    inchroot apt-get clean
  fi
fi

# 6.18's headers, fetched from the pool by name (they are no longer in any
# index): "package_version_arch.deb sha256", the sums of the files the VM
# tests were verified with.
pool_debs_6_18_15="linux-headers-6.18.15+deb13-cloud-amd64_6.18.15-1~bpo13+1_amd64.deb 3bd2a70ec82944d17b69824a428defb090708ec284c173f96a4171ba8aa271c2
linux-headers-6.18.15+deb13-common_6.18.15-1~bpo13+1_all.deb a54ed9b3be5247fe2e003423e067cb8e8b06e4a44a09459b85cfec0afbcbd5ef
linux-kbuild-6.18.15+deb13_6.18.15-1~bpo13+1_amd64.deb 5e64129020cdb5effd6ed3895ca89608ef17bcf643eedfc8013dad89bab70a02"

newest_available() {
  local kind=${pattern#^linux-}
  kind=${kind%%-*}
  inchroot apt-cache pkgnames linux-"$kind-$kseries". 2>/dev/null | grep -E "$pattern" | sort -V | tail -n1 |
    sed "s/^linux-$kind-//"
}

apt_update() {
  inchroot apt-get update -qq >&2
}

# Newest release the apt lists know; refresh the lists once when they know none
# (fresh CI machines), and fall back to what is cached when offline.
pick_release() {
  local krel kind=${pattern#^linux-}
  kind=${kind%%-*}
  [ -n "$pin" ] && { echo "$pin"; return; }
  krel=$(newest_available)
  if [ -z "$krel" ]; then
    log "no $series cloud kernel in the apt lists; running apt-get update"
    apt_update || log "apt-get update failed"
    krel=$(newest_available)
  fi
  if [ -z "$krel" ]; then
    krel=$(find "$cache" -maxdepth 2 -name .ready 2>/dev/null | xargs -r -n1 dirname |
      xargs -r -n1 basename | sed "s/^/linux-$kind-/" | grep -E "$pattern" | sort -V |
      tail -n1 | sed "s/^linux-$kind-//")
    [ -n "$krel" ] && log "using cached $krel"
  fi
  [ -n "$krel" ] || die "cannot find a linux-image matching $pattern (apt sources need bookworm-security)"
  echo "$krel"
}

download() {
  local dir=$1; shift
  if [ -n "$CHROOT" ]; then
    # Into the chroot's own scratch directory, then out to the cache.
    local tmp
    tmp=$(mktemp -d "$CHROOT/var/tmp/inxpect-debs.XXXXXX")
    inchroot sh -c 'cd "$1" && shift && apt-get download -q -o APT::Sandbox::User=root "$@"' sh "${tmp#"$CHROOT"}" "$@" >&2 &&
      mv "$tmp"/*.deb "$dir"/
    local rc=$?
    rm -rf "$tmp"
    return $rc
  fi
  (cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "$@" >&2)
}

# From the pool by file name, each checked against its pinned sum (apt's
# own downloader, in the chroot).
download_pool() {
  local dir=$1 list=$2 f sum pool
  pool=${INXPECT_VM_DEBIAN_MIRROR:-http://deb.debian.org/debian}/pool/main/l/linux
  while read -r f sum; do
    inchroot /usr/lib/apt/apt-helper download-file "$pool/$f" "/var/tmp/$f" "SHA256:$sum" >&2 ||
      { rm -f "$CHROOT/var/tmp/$f"; log "cannot fetch $pool/$f (sha256 $sum)"; return 1; }
    mv "$CHROOT/var/tmp/$f" "$dir/"
  done <<<"$list"
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

# Debian's arm64 vmlinuz is a raw Image, not an ELF file: what pahole
# (--btf_base) and resolve_btfids (-b) need from it is the kernel's BTF, which
# the Image carries verbatim between __start_BTF and __stop_BTF. Both read raw
# BTF as well as ELF, so the blob alone serves as the headers' vmlinux. Found
# by its header: magic 0xeb9f, version 1, flags 0, hdr_len 24 (little endian),
# sized by hdr_len + str_off + str_len.
extract_btf() {
  local img=$1 out=$2 off
  [ "$(head -c2 "$img" | od -An -tx1 | tr -d ' ')" = 1f8b ] && {
    gzip -dc "$img" >"$out.img"
    img=$out.img
  }
  for off in $(LC_ALL=C grep -obUaP '\x9f\xeb\x01\x00\x18\x00\x00\x00' "$img" | cut -d: -f1 | head -n5); do
    local hdr str_off str_len size
    hdr=$(tail -c +$((off + 1)) "$img" | head -c 24 | od -An -tu4 -v | tr "\n" " ")
    read -r _ _ _ _ str_off str_len <<<"$hdr"
    size=$((24 + str_off + str_len))
    tail -c +$((off + 1)) "$img" | head -c "$size" >"$out.tmp"
    # The type section of vmlinux BTF is large; a stray match is not.
    if [ "$size" -gt 1000000 ] && bpftool btf dump file "$out.tmp" 2>/dev/null | grep "STRUCT 'task_struct' " >/dev/null; then
      mv "$out.tmp" "$out"
      rm -f "$out.img"
      return 0
    fi
  done
  rm -f "$out.tmp" "$out.img"
  die "no BTF found in $img"
}

# The trixie-backports kernels: the image into the cache (for its vmlinuz),
# headers, headers-common and kbuild into the chroot, where the module is
# built (and where the headers' absolute /usr/src paths hold). Unpacked,
# not installed: 6.18's headers depend on packages that left the index too.
prepare_chroot() {
  local krel=$1 abi=${1%-cloud-"$arch"} dir=$cache/$1 pool_var list h
  # The kernel's own packages are the target's; kbuild runs here.
  local a=; [ $arch = arm64 ] && a=:arm64
  if [ ! -f "$dir/.ready" ]; then
    rm -rf "$dir"
    mkdir -p "$dir/debs" "$dir/headers" "$dir/root"
    log "fetching $krel (trixie chroot's apt)"
    download "$dir/debs" "linux-image-$krel$a" || return 1
    pool_var=pool_debs_$(echo "${krel%%+*}" | tr . _)
    list=${!pool_var:-}
    if [ -n "$list" ]; then
      download_pool "$dir/headers" "$list" || return 1
    else
      download "$dir/headers" "linux-headers-$krel$a" "linux-headers-$abi-common" \
        "linux-kbuild-$abi" || return 1
    fi
    dpkg -x "$dir"/debs/linux-image-*.deb "$dir/root" || return 1
    # From 7.x the image package is a metapackage: the kernel itself is in
    # linux-binary-<release>, as /usr/lib/modules/<release>/vmlinuz.
    if [ ! -f "$dir/root/boot/vmlinuz-$krel" ]; then
      download "$dir/debs" "linux-binary-$krel$a" || return 1
      dpkg -x "$dir"/debs/linux-binary-*.deb "$dir/root" || return 1
      mkdir -p "$dir/root/boot"
      ln -sf "../usr/lib/modules/$krel/vmlinuz" "$dir/root/boot/vmlinuz-$krel"
    fi
    [ -f "$dir/root/boot/vmlinuz-$krel" ] || die "no vmlinuz-$krel in the image packages"
    touch "$dir/.ready"
  fi
  h=$CHROOT/usr/src/linux-headers-$krel
  # Again after the chroot was remade (its key changed).
  if [ ! -f "$h/.inxpect-ready" ]; then
    for deb in "$dir"/headers/*.deb; do dpkg -x "$deb" "$CHROOT" || return 1; done
    [ -f "$h/Makefile" ] || die "no headers in $h"
    if [ ! -f "$h/vmlinux" ]; then
      case $arch in
      amd64) extract_vmlinux "$dir/root/boot/vmlinuz-$krel" "$h/vmlinux" ;;
      arm64) extract_btf "$dir/root/boot/vmlinuz-$krel" "$h/vmlinux" ;;
      esac
    fi
    touch "$h/.inxpect-ready"
  fi
}

# The headers' Makefile includes the -common tree by absolute path
# (/usr/src/... as packaged): point it at this cache's copy, wherever the
# cache was made.
point_headers() {
  local h=$1/root/usr/src/linux-headers-$2
  sed -i -E "s|^include .*/usr/src/|include $1/root/usr/src/|" "$h/Makefile"
}

prepare() {
  local krel=$1 abi kbuild_pkg hver h
  local dir=$cache/$krel
  [ -n "$CHROOT" ] && { prepare_chroot "$krel"; return; }
  abi=${krel%-cloud-"$arch"}
  if [ -f "$dir/.ready" ]; then
    # A cache copied from another checkout still names that one's path.
    point_headers "$dir" "$krel"
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$dir/debs" "$dir/root"
  log "fetching $krel"
  case $kseries in
  6.1)
    # linux-kbuild-6.1 is shared by all 6.1 ABIs: take the headers' version.
    hver=$(apt-cache show "linux-headers-$krel:$arch" 2>/dev/null | sed -n 's/^Version: //p' | head -n1)
    kbuild_pkg="linux-kbuild-6.1:amd64${hver:+=$hver}" ;;
  6.12) kbuild_pkg="linux-kbuild-$abi:amd64" ;;
  esac
  download "$dir/debs" "linux-image-$krel:$arch" "linux-headers-$krel:$arch" \
    "linux-headers-$abi-common" "$kbuild_pkg" || return 1
  for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$dir/root" || return 1; done

  h=$dir/root/usr/src/linux-headers-$krel
  [ -f "$h/Makefile" ] || die "no headers in $h"
  point_headers "$dir" "$krel"
  if [ ! -f "$h/vmlinux" ]; then
    log "extracting vmlinux for module BTF"
    case $arch in
    amd64) extract_vmlinux "$dir/root/boot/vmlinuz-$krel" "$h/vmlinux" ;;
    arm64) extract_btf "$dir/root/boot/vmlinuz-$krel" "$h/vmlinux" ;;
    esac
  fi
  touch "$dir/.ready"
}

krel=$(pick_release)
if ! prepare "$krel"; then
  # Stale apt lists: a security update removed that version from the
  # mirror. Refresh, pick again (maybe a newer release) and retry once.
  log "download of $krel failed; running apt-get update and retrying"
  apt_update || true
  krel=$(pick_release)
  prepare "$krel" || die "cannot download the $krel packages"
fi
dir=$cache/$krel
kdir=$dir/root/usr/src/linux-headers-$krel
# In the chroot: paths as the build inside it sees them.
[ -n "$CHROOT" ] && kdir=/usr/src/linux-headers-$krel
btfids=$kdir/tools/bpf/resolve_btfids/resolve_btfids
if [ -n "$CHROOT" ]; then
  [ -x "$CHROOT$btfids" ] || die "$CHROOT$btfids missing"
elif [ ! -x "$btfids" ]; then
  # 6.1's linux-kbuild lacks resolve_btfids; without it the kfunc set keeps
  # zero ids and the verifier refuses the calls. The 6.12 one handles 6.1.
  [ "$kseries" = 6.12 ] && die "$btfids missing"
  eval "$("$0" "${series%6.1}6.12")"
  btfids=$RESOLVE_BTFIDS
  [ -x "$btfids" ] || die "no resolve_btfids in the 6.12 kbuild either"
fi
printf 'KREL=%q\nKDIR=%q\nVMLINUZ=%q\nRESOLVE_BTFIDS=%q\nCHROOT=%q\n' \
  "$krel" "$kdir" "$dir/root/boot/vmlinuz-$krel" "$btfids" "$CHROOT"
