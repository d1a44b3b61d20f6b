#!/usr/bin/env bash
# Builds inxpect.ko for a Debian kernel, boots that kernel under qemu (TCG)
# with a busybox initramfs and runs the module and BPF tests inside.
#
#   tests/vm/run.sh 6.1|6.12|6.18|7|arm64-6.1|arm64-6.12|arm64-7 [--obj FILE]... [--cmd 'GUEST ARGS']...
#
# 6.1, 6.12: Debian 12's cloud-amd64 kernels, module built with the host's
# gcc-12 and pahole. 6.18, 7: trixie-backports' cloud-amd64 kernels (7: the
# newest 7.x), module built in the trixie chroot (chroot.sh: Debian 13's
# gcc-14 and pahole 1.30, as those kernels were built); the guest programs
# are the host's either way.
#
# arm64-*: Debian's cloud-arm64 kernel under qemu-system-aarch64 -M virt
# -cpu max -icount shift=0 (TCG): the guest has a PMUv3 that the kernel's
# armv8_pmuv3 driver programs, and with precise icount its instruction
# counts are exact (cycles = instructions). The module and the guest
# programs are cross-built (aarch64-linux-gnu-gcc; libbpf/libelf/zlib/zstd
# and busybox from tests/vm/sysroot.sh). INXPECT_VM_CPU picks -cpu (max).
#
# --obj FILE   copy FILE into the guest as /objs/<basename> (BPF objects,
#              packet files); env INXPECT_VM_OBJS adds more (space-separated)
# --cmd ARGS   after the module tests, run `inxpect-vm-test ARGS` in the guest
#              with the module loaded, e.g.
#              --cmd 'run /objs/app.o --repeat 1000 --dump inxpect_stats'
#              env INXPECT_VM_CMDS adds more (one per line). Without any
#              command, each --obj ending in .o gets `run /objs/X.o`.
# Env: INXPECT_VM_RELOADS (default 100), INXPECT_VM_TIMEOUT (seconds, 300),
#      INXPECT_VM_CACHE (default tests/vm/cache), CLANG (default clang),
#      INXPECT_VM_QEMU_ARGS (extra qemu arguments, split on spaces; e.g.
#      '-plugin bench/tcg/inxpect-count.so -d plugin -D /tmp/tcg.log' for
#      `inxpect-bench vm`; default none), INXPECT_VM_BUILD (build directory,
#      emptied first; default: a fresh cache/<release>/build.XXXXXX per run,
#      renamed to cache/<release>/build when the run ends, so concurrent runs
#      of one kernel do not share one), INXPECT_VM_APPEND (more kernel
#      arguments, e.g. randomize_kstack_offset=off for exact kernel
#      instruction counts).
#
# Prints the guest console, then one line
#   vm-harness: PASS|FAIL <series> <release>: <reason>
# and exits 0 only on PASS: the guest booted the expected kernel, reported
# `INXPECT-VM-RESULT: pass N fail 0`, and its kernel log holds no
# WARNING/BUG/Oops/call trace. A guest that does not boot is a FAIL.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${INXPECT_VM_CACHE:-$here/cache}
export INXPECT_VM_CACHE=$cache

series=${1:-}
case $series in
6.1 | 6.12 | 6.18 | 7) arch=x86_64 ;;
arm64-6.1 | arm64-6.12 | arm64-7) arch=arm64 ;;
*)
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
shift
objs=()
cmds=()
while [ $# -gt 0 ]; do
  case $1 in
  --obj) objs+=("$(realpath "${2:?--obj needs a file}")"); shift 2 ;;
  --cmd) cmds+=("${2:?--cmd needs arguments}"); shift 2 ;;
  *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for o in ${INXPECT_VM_OBJS:-}; do objs+=("$(realpath "$o")"); done
while IFS= read -r c; do [ -n "$c" ] && cmds+=("$c"); done <<<"${INXPECT_VM_CMDS:-}"
if [ ${#cmds[@]} -eq 0 ]; then
  for o in ${objs[@]+"${objs[@]}"}; do
    case $o in *.o) cmds+=("run /objs/$(basename "$o")") ;; esac
  done
fi

log() { echo "run.sh[$series]: $*" >&2; }
verdict() {
  # The default build directory is this run's own; the last one to finish
  # becomes cache/<release>/build (where the console is looked for).
  local msg=$2
  if [ -n "${own_build:-}" ] && [ -d "$own_build" ]; then
    rm -rf "$cache/$KREL/build"
    mv "$own_build" "$cache/$KREL/build" 2>/dev/null || rm -rf "$own_build"
    msg=${msg//"$own_build"/"$cache/$KREL/build"}
  fi
  echo "vm-harness: $1 $series ${KREL:-?}: $msg"
  [ "$1" = PASS ]
  exit $?
}
need() { command -v "$1" >/dev/null || verdict FAIL "missing tool $1 (${2:-see .ci/install})"; }
if [ $arch = arm64 ]; then
  tools=(qemu-system-aarch64 aarch64-linux-gnu-gcc aarch64-linux-gnu-objdump bpftool)
else
  tools=(qemu-system-x86_64 gcc)
fi
# The kernels whose module is built in the trixie chroot.
trixie=false
case $series in 6.18 | 7 | arm64-7) trixie=true ;; esac
$trixie && tools+=(debootstrap unshare chroot)
for t in "${tools[@]}" make cpio gzip flock "${CLANG:-clang}" apt-get dpkg; do need "$t"; done
[ -x /bin/busybox ] || verdict FAIL "missing /bin/busybox (package busybox-static)"

start=$(date +%s)
mkdir -p "$cache"
# The trixie chroot first, under its own lock: 6.1/6.12 need not wait for it.
if $trixie; then
  "$here/chroot.sh" trixie >/dev/null || verdict FAIL "trixie chroot (debootstrap) failed"
fi
# One kernel preparation at a time: the 6.1 build also needs the 6.12 kbuild.
kvars=$(flock "$cache/.lock" "$here/kernel.sh" "$series") || verdict FAIL "kernel download/unpack failed"
eval "$kvars"
if [ $arch = arm64 ]; then
  svars=$(flock "$cache/.lock" "$here/sysroot.sh" arm64) || verdict FAIL "arm64 sysroot download/unpack failed"
  eval "$svars"
  # 6.1's headers leave CROSS_COMPILE to Debian's build variables; 6.12's
  # set it themselves (the same value).
  kmake=(CROSS_COMPILE=aarch64-linux-gnu-)
  cc=(aarch64-linux-gnu-gcc -I"$SYSROOT/usr/include")
  libs=(-L"$SYSROOT/usr/lib/aarch64-linux-gnu" -lbpf -lelf -lz -lzstd)
  uapi=/usr/aarch64-linux-gnu/include
else
  BUSYBOX=/bin/busybox
  kmake=()
  cc=(gcc)
  libs=(-lbpf -lelf -lz)
  uapi=/usr/include/x86_64-linux-gnu
fi

if [ -n "${INXPECT_VM_BUILD:-}" ]; then
  build=$INXPECT_VM_BUILD
  rm -rf "$build"
else
  # Concurrent runs of one kernel (engineers sharing INXPECT_VM_CACHE) must
  # not empty each other's directory mid-boot.
  own_build=$(mktemp -d "$cache/$KREL/build.XXXXXX")
  build=$own_build
fi
mkdir -p "$build/kmod" "$build/bpf" "$build/initramfs"

# Module: built in a copy so concurrent kernels and the source tree stay
# clean. W=1 and any warning fails: the module must build silently.
cp "$repo"/kmod/{Kbuild,Makefile,inxpect_core.c,inxpect_read.c,inxpect_arch.h,inxpect_fast.h,inxpect_uapi.h} "$build/kmod/"
log "building inxpect.ko for $KREL${CHROOT:+ in $CHROOT}"
kargs=(KDIR="$KDIR" ${RESOLVE_BTFIDS:+RESOLVE_BTFIDS="$RESOLVE_BTFIDS"} ${kmake[@]+"${kmake[@]}"} W=1)
if [ -n "${CHROOT:-}" ]; then
  # In a scratch copy inside the chroot (concurrent runs: one each), the
  # module copied out.
  kb=$(mktemp -d "$CHROOT/tmp/inxpect-kmod.XXXXXX")
  cp "$build"/kmod/* "$kb/"
  krc=0
  "$here/chroot.sh" trixie -- make -C "${kb#"$CHROOT"}" "${kargs[@]}" >"$build/kmod/build.log" 2>&1 || krc=$?
  [ $krc -eq 0 ] && cp "$kb/inxpect.ko" "$build/kmod/"
  rm -rf "$kb"
else
  krc=0
  make -C "$build/kmod" "${kargs[@]}" >"$build/kmod/build.log" 2>&1 || krc=$?
fi
if [ $krc -ne 0 ]; then
  cat "$build/kmod/build.log" >&2
  verdict FAIL "module build failed"
fi
if grep -qiE 'warning|skipping btf' "$build/kmod/build.log"; then
  cat "$build/kmod/build.log" >&2
  verdict FAIL "module build printed warnings"
fi
if [ $arch = arm64 ]; then
  # The reads branch to inxpect_stale as a tail call (INXPECT_ARCH_TAIL in
  # kmod/inxpect_arch.h): that is only right in a function without a frame.
  for f in inxpect_read_pmc inxpect_read_pmc0_lo inxpect_read_pmc0_lo_end; do
    body=$(aarch64-linux-gnu-objdump -d "$build/kmod/inxpect.ko" | sed -n "/^[0-9a-f]* <$f>:\$/,/^\$/p")
    [ -n "$body" ] || verdict FAIL "module: no function $f"
    if grep -qE 'paciasp|stp[[:space:]]+x29, x30|[[:space:]]bl[[:space:]]' <<<"$body"; then
      verdict FAIL "module: $f has a stack frame or a call (its tail branch needs a frameless leaf)"
    fi
  done
fi

log "building guest program and BPF objects"
bpf_cflags=(-O2 -g -target bpf -Wall -Werror -I"$uapi" -I"$here/bpf")
for src in "$here"/bpf/*.bpf.c; do
  "${CLANG:-clang}" "${bpf_cflags[@]}" -c "$src" -o "$build/bpf/$(basename "${src%.bpf.c}").o" ||
    verdict FAIL "BPF build of $src failed"
done
"${CLANG:-clang}" "${bpf_cflags[@]}" -DKT_RODATA_GUARD -c "$here/bpf/kfunc_test.bpf.c" \
  -o "$build/bpf/kfunc_test_rodata.o" || verdict FAIL "BPF build of kfunc_test_rodata.o failed"
# libbpf static: Debian's libbpf-dev ships libbpf.a; libelf.a and libz.a come
# from libelf-dev and zlib1g-dev.
"${cc[@]}" -static -O2 -Wall -Wextra -Werror -I"$repo/kmod" -I"$here/bpf" \
  -o "$build/inxpect-vm-test" "$here/guest/inxpect-vm-test.c" "${libs[@]}" ||
  verdict FAIL "guest program build failed (needs static libbpf, libelf, zlib)"
# The benchmark driver (`inxpect-bench vm`), same flags.
"${cc[@]}" -static -O2 -Wall -Wextra -Werror -I"$repo/kmod" -I"$here/bpf" \
  -o "$build/inxpect-vm-bench" "$here/guest/inxpect-vm-bench.c" "${libs[@]}" ||
  verdict FAIL "guest bench program build failed"

# Initramfs: busybox, the module, the test program, BPF objects, extras.
ir=$build/initramfs
mkdir -p "$ir"/{bin,proc,sys,dev,tmp,bpf,objs}
cp "$BUSYBOX" "$ir/bin/busybox"
# The applet list of the host's busybox-static (same Debian version as the
# arm64 one, which cannot run here).
for app in $(/bin/busybox --list); do [ "$app" = busybox ] || ln -sf busybox "$ir/bin/$app"; done
cp "$here/guest/init" "$ir/init"
chmod +x "$ir/init"
cp "$build/kmod/inxpect.ko" "$build/inxpect-vm-test" "$build/inxpect-vm-bench" "$ir/"
cp "$build"/bpf/*.o "$ir/bpf/"
for o in ${objs[@]+"${objs[@]}"}; do
  [ -f "$o" ] || verdict FAIL "--obj $o: no such file"
  cp "$o" "$ir/objs/"
done
printf '%s\n' ${cmds[@]+"${cmds[@]}"} >"$ir/cmds"
echo "RELOADS=${INXPECT_VM_RELOADS:-100}" >"$ir/config"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) >"$build/initramfs.cpio.gz"

console=$build/console.log
log "booting $KREL (TCG; timeout ${INXPECT_VM_TIMEOUT:-300}s)"
set +e
# TCG on purpose: -accel kvm hangs on these machines. -smp 2 exercises the
# per-CPU paths and CPU hotplug.
# arm64: -icount shift=0 makes INST_RETIRED exist (QEMU advertises it only
# with precise icount) and exact; 1 instruction = 1 ns of guest time.
if [ $arch = arm64 ]; then
  qemu=(qemu-system-aarch64 -M virt -cpu "${INXPECT_VM_CPU:-max}" -icount shift=0 -m 1024)
  console_dev=ttyAMA0
else
  qemu=(qemu-system-x86_64 -m 512 -accel tcg)
  console_dev=ttyS0
fi
timeout --foreground -k 10 "${INXPECT_VM_TIMEOUT:-300}" \
  "${qemu[@]}" -nographic -no-reboot -smp 2 \
  -kernel "$VMLINUZ" -initrd "$build/initramfs.cpio.gz" \
  -append "console=$console_dev panic=-1 quiet${INXPECT_VM_APPEND:+ $INXPECT_VM_APPEND}" ${INXPECT_VM_QEMU_ARGS:-} </dev/null 2>&1 | tr -d '\r' | tee "$console"
qrc=${PIPESTATUS[0]}
set -e
took=$(($(date +%s) - start))

grep -q "^INXPECT-VM-BOOTED $KREL\$" "$console" ||
  verdict FAIL "guest did not boot (qemu exit $qrc); console in $console"
result=$(grep -a '^INXPECT-VM-RESULT: ' "$console" | tail -n1)
[ -n "$result" ] || verdict FAIL "guest printed no result (crash or timeout, qemu exit $qrc)"
[ "$qrc" -eq 0 ] || verdict FAIL "qemu exit status $qrc"
dmesg_log=$(sed -n '/^INXPECT-VM-DMESG-BEGIN$/,/^INXPECT-VM-DMESG-END$/p' "$console")
[ -n "$dmesg_log" ] || verdict FAIL "guest printed no kernel log"
bad=$(grep -aE 'WARNING:|BUG:|Oops|Call Trace|general protection|Kernel panic|UBSAN|refcount_t:|list_(add|del) corruption|inxpect: (registering|cpu hotplug)' <<<"$dmesg_log" || true)
[ -z "$bad" ] || verdict FAIL "kernel log has: $(head -n1 <<<"$bad")"
read -r _ _ pass _ fail <<<"$result"
[ "$fail" = 0 ] || verdict FAIL "$fail guest check(s) failed: $(grep -a '^INXPECT-VM: FAIL' "$console" | head -n1)"
[ "$pass" -ge 20 ] || verdict FAIL "only $pass guest checks ran"
verdict PASS "pass $pass fail 0 in ${took}s"
