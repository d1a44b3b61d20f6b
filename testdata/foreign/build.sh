#!/usr/bin/env bash
# Builds the foreign-object fixtures: small sources compiled with compilers
# and flags the apps' build does not use (see docs/RELIABILITY.md).
#
#   testdata/foreign/build.sh [OUTDIR]      (OUTDIR defaults to testdata/foreign)
#
# Deterministic like testdata/build.sh: paths relative to the repo root,
# the build directory mapped to `.`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$root/testdata/foreign}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$root"
src=testdata/foreign/src
incs=(-I runtime-bpf/include -I/usr/include/x86_64-linux-gnu)
common=(-target bpf -Wall -Werror -fdebug-prefix-map="$root"=. "${incs[@]}")

cc() { # compiler name source extra-flags...
  local c=$1 name=$2 s=$3; shift 3
  "$c" "${common[@]}" "$@" -c "$src/$s.bpf.c" -o "$out/$name.o"
}

cc clang-13 basic.clang13-O2-g basic -O2 -g
cc clang-16 basic.clang16-O2-g basic -O2 -g
cc clang basic.clang-O1-g basic -O1 -g
cc clang basic.clang-Os-g basic -Os -g
cc clang basic.clang-v1 basic -O2 -g -mcpu=v1
cc clang basic.clang-v2 basic -O2 -g -mcpu=v2
cc clang basic.clang-v3 basic -O2 -g -mcpu=v3
# -mcpu=v4 needs clang >= 18: clang-16 says "unknown target CPU 'v4'".
# BTF without DWARF: .BTF/.BTF.ext kept, .debug_* gone.
cc clang basic.clang-btf-nodwarf basic -O2 -g
llvm-strip --strip-debug "$out/basic.clang-btf-nodwarf.o"
# No -g at all: no .BTF, so the BTF-defined map has no type.
cc clang basic.clang-nobtf basic -O2
cc clang nomap.clang-nobtf nomap -O2
cc clang multi.clang-O2-g multi -O2 -g
cc clang core.clang-O2-g core -O2 -g
cc clang tailcall.clang-O2-g tailcall -O2 -g
cc clang legacy_maps.clang-O2-g legacy_maps -O2 -g
cc clang bigloop.clang-O2-g bigloop -O2 -g
cc clang sitesloop.clang-O2-g sitesloop -O2 -g
# gcc 12 with BTF (as testdata/build.sh does); same determinism tricks.
gcc_flags=(-Wall -Werror -gbtf -mco-re -fno-ivopts -fdebug-prefix-map="$root"=. "${incs[@]}" -I/usr/include)
PWD=/proc/self/cwd setarch -R bpf-gcc "${gcc_flags[@]}" -O2 -c $src/nomap.bpf.c -o "$out/nomap.gcc-O2.o"
# No BTF at all (issue 15): state in global data, which loads without BTF.
cc clang globals.clang-nobtf globals -O2
gcc_nobtf=(-Wall -Werror -fno-ivopts -fdebug-prefix-map="$root"=. "${incs[@]}" -I/usr/include)
PWD=/proc/self/cwd setarch -R bpf-gcc "${gcc_nobtf[@]}" -O2 -c $src/globals.bpf.c -o "$out/globals.gcc-nobtf.o"
PWD=/proc/self/cwd setarch -R bpf-gcc "${gcc_nobtf[@]}" -O2 -g -c $src/globals.bpf.c -o "$out/globals.gcc-O2-g.o"
{
  echo "clang: $(clang --version | head -n1)"
  echo "clang-13: $(clang-13 --version | head -n1)"
  echo "clang-16: $(clang-16 --version | head -n1)"
  echo "bpf-gcc: $(bpf-gcc --version | head -n1)"
} > "$out/COMPILERS"
