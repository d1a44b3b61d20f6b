#!/usr/bin/env bash
# Builds every test app in every variant.
#
#   testdata/build.sh [--no-markers] [OUTDIR]     (OUTDIR defaults to testdata/objects)
#
# Objects are named <app>.<variant>.o, <app> in drop cms nat router tunnel and
# their bpf-to-bpf/loop twins <app>_sub; <variant> in clang-O2-g clang-O2
# clang-O1 gcc-O2, and without BTF clang-O2-nobtf gcc-O2-nobtf gcc-O2-g
# (DWARF only). --no-markers compiles the region markers away (the
# zero-cost test's baseline). Output is deterministic: sources are passed by
# paths relative to the repo root and the build directory is mapped to `.`,
# so a rebuild anywhere gives the same bytes with the same compilers.
# The compilers used are written to OUTDIR/COMPILERS.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
markers=()
if [ "${1:-}" = "--no-markers" ]; then
  markers=(-DINXPECT_NO_MARKERS)
  shift
fi
out=${1:-$root/testdata/objects}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$root"

CLANG=${CLANG:-clang}
BPF_GCC=${BPF_GCC:-bpf-gcc}
STRIP=${STRIP:-llvm-strip}
apps=(drop cms nat router tunnel)
incs=(-I runtime-bpf/include -I testdata/apps -I/usr/include/x86_64-linux-gnu)
# -fdebug-prefix-map keeps the absolute build directory out of DW_AT_comp_dir.
clang_common=(-target bpf -Wall -Werror -fdebug-prefix-map="$root"=. "${incs[@]}" "${markers[@]}")
# gcc 12: -gbtf for BTF (map definitions), -mco-re for .BTF.ext, -fno-ivopts
# because induction-variable rewriting turns counted loops into pointer loops
# whose exit the verifier cannot bound (cms_sub, tunnel_sub would not load).
gcc_common=(-Wall -Werror -gbtf -mco-re -fno-ivopts -fdebug-prefix-map="$root"=. "${incs[@]}" -I/usr/include "${markers[@]}")
gcc_nobtf=(-Wall -Werror -fno-ivopts -fdebug-prefix-map="$root"=. "${incs[@]}" -I/usr/include "${markers[@]}")

build() { # app suffix extra-flags...
  local app=$1 sfx=$2; shift 2
  local src=testdata/apps/$app.bpf.c name=$app$sfx
  "$CLANG" "${clang_common[@]}" "$@" -O2 -g -c "$src" -o "$out/$name.clang-O2-g.o"
  # BTF-defined maps need BTF, which clang only emits with -g: the
  # "without -g" variant is the -g build with its DWARF stripped (.BTF and
  # .BTF.ext stay). Same instructions as clang-O2-g, no .debug_* sections.
  "$CLANG" "${clang_common[@]}" "$@" -O2 -g -c "$src" -o "$out/$name.clang-O2.o"
  "$STRIP" --strip-debug "$out/$name.clang-O2.o"
  "$CLANG" "${clang_common[@]}" "$@" -O1 -g -c "$src" -o "$out/$name.clang-O1.o"
  # gcc 12 writes $PWD/<source> into .BTF whatever the prefix maps say, and
  # orders BTF VARs by pointer hash: /proc/self/cwd is the same directory
  # on every machine, and setarch -R turns address randomisation off.
  PWD=/proc/self/cwd setarch -R "$BPF_GCC" "${gcc_common[@]}" "$@" -O2 -c "$src" -o "$out/$name.gcc-O2.o"
  # Without BTF (issue 15): what a user gets without -g / -gbtf. Only apps
  # without BTF-defined maps load like this (libbpf needs BTF to read
  # .maps); the rest are kept to check the rewriter's refusal.
  "$CLANG" "${clang_common[@]}" "$@" -O2 -c "$src" -o "$out/$name.clang-O2-nobtf.o"
  PWD=/proc/self/cwd setarch -R "$BPF_GCC" "${gcc_nobtf[@]}" "$@" -O2 -c "$src" -o "$out/$name.gcc-O2-nobtf.o"
  # DWARF only: gcc 12's -g for BPF emits no BTF.
  PWD=/proc/self/cwd setarch -R "$BPF_GCC" "${gcc_nobtf[@]}" "$@" -O2 -g -c "$src" -o "$out/$name.gcc-O2-g.o"
}

for app in "${apps[@]}"; do
  build "$app" ""
  build "$app" _sub -DINXPECT_SUBPROG
done

 # The tc app (sched_cls): its own directory, so the XDP-only suites that
# take every object of OUTDIR do not see it.
mkdir -p "$out/tc"
"$CLANG" "${clang_common[@]}" -O2 -g -c testdata/apps/tc_count.bpf.c -o "$out/tc/tc_count.clang-O2-g.o"

{
  echo "clang: $("$CLANG" --version | head -n1)"
  echo "llvm-strip: $("$STRIP" --version | grep -i version | head -n1)"
  echo "bpf-gcc: $("$BPF_GCC" --version | head -n1)"
} > "$out/COMPILERS"
echo "build.sh: $(ls "$out"/*.o | wc -l) objects in $out"
