#!/usr/bin/env bash
# Builds the histogram driver (testdata/hist/driver.bpf.c), linked by the
# percentile test with the runtime object. clang 16: clang 14 emits no BTF
# for the extern runtime functions, which the linker needs.
#   testdata/hist/build.sh [OUTDIR]     (OUTDIR defaults to testdata/hist)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$root/testdata/hist}
mkdir -p "$out"
cd "$root"
"${CLANG:-clang-16}" -target bpf -O2 -g -Wall -Werror -fdebug-prefix-map="$root"=. \
  -I runtime-bpf/include -I/usr/include/x86_64-linux-gnu \
  -c testdata/hist/driver.bpf.c -o "$out/driver.o"
echo "hist/build.sh: $out/driver.o"
