#!/usr/bin/env bash
# Builds the histogram drivers, used by the percentile test
# (tests/tests/histogram.rs): driver.bpf.c, linked with the runtime object,
# and replay.bpf.c, instrumented with a read-function hook. clang 16:
# clang 14 emits no BTF for the extern runtime functions, which the linker
# needs.
#   testdata/hist/build.sh [OUTDIR]     (OUTDIR defaults to testdata/hist)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$root/testdata/hist}
mkdir -p "$out"
cd "$root"
for d in driver replay; do
  "${CLANG:-clang-16}" -target bpf -O2 -g -Wall -Werror -fdebug-prefix-map="$root"=. \
    -I runtime-bpf/include -I/usr/include/x86_64-linux-gnu \
    -c "testdata/hist/$d.bpf.c" -o "$out/$d.o"
  echo "hist/build.sh: $out/$d.o"
done
