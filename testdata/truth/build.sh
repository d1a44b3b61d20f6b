#!/usr/bin/env bash
# Builds the ground-truth apps (testdata/truth/*.bpf.c) at -O1 and -O2.
#
#   testdata/truth/build.sh [OUTDIR]     (OUTDIR defaults to testdata/truth/objects)
#
# Objects are <app>.clang-O1.o and <app>.clang-O2.o, both with -g (BTF-defined
# maps and the witness struct need BTF). Deterministic as testdata/build.sh:
# sources by paths relative to the repo root, the root mapped to `.`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$root/testdata/truth/objects}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$root"

CLANG=${CLANG:-clang}
flags=(-target bpf -Wall -Werror -g -fdebug-prefix-map="$root"=.
  -I runtime-bpf/include -I testdata/truth -I/usr/include/x86_64-linux-gnu)

n=0
for src in testdata/truth/*.bpf.c; do
  app=$(basename "$src" .bpf.c)
  for opt in O1 O2; do
    "$CLANG" "${flags[@]}" "-$opt" -c "$src" -o "$out/$app.clang-$opt.o"
    n=$((n + 1))
  done
done
echo "clang: $("$CLANG" --version | head -n1)" > "$out/COMPILERS"
echo "truth/build.sh: $n objects in $out"
