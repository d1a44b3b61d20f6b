#!/usr/bin/env bash
# Builds the runtime objects the rewriter embeds (committed under obj/, so a
# rewrite gives the same bytes whatever clang the user has).
#   runtime-bpf/build.sh [OUTDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/obj}
mkdir -p "$out"
CLANG=${CLANG:-clang}
cflags=(-O2 -g -target bpf -mcpu=v3 -I"$here/include" -I/usr/include/x86_64-linux-gnu
        -fdebug-prefix-map="$here"=runtime-bpf -Wall -Werror)
build() { # name, defines...
  local name=$1; shift
  (cd "$here" && "$CLANG" "${cflags[@]}" "$@" -c src/runtime.bpf.c -o "$out/runtime-$name.o")
  # DWARF is not needed once linked (libbpf's linker drops it); keep BTF only.
  llvm-strip -g "$out/runtime-$name.o" 2>/dev/null || true
}
build ktime -DINXPECT_BACKEND_KTIME
build perf -DINXPECT_BACKEND_PERF
build tsc -DINXPECT_BACKEND_TSC
for n in 1 2 3 4; do build pmc$n -DINXPECT_BACKEND_PMC -DINXPECT_NR_EVENTS=$n; done
echo "runtime objects in $out"
