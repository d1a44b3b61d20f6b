#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ with testdata/objects/*.o (copied at run time,
# not committed twice) and runs one target for a time limit.
#   fuzz/run.sh <target> <seconds> [extra libFuzzer args]
# Only stable Rust is installed here: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass
# its nightly -Z flags (sanitizer, coverage) to the stable compiler.
set -euo pipefail
cd "$(dirname "$0")"
target=$1 secs=$2
shift 2
mkdir -p "corpus/$target" artifacts
cp -n ../testdata/objects/*.o "corpus/$target/" 2>/dev/null || true
if [ "$target" = btf_ext ]; then
  # Seeds for the .BTF.ext parser are the sections themselves, not whole objects.
  for o in ../testdata/objects/*-g.o ../testdata/foreign/*.o; do
    [ -f "$o" ] || continue
    rm -f "corpus/$target/$(basename "$o")"
    llvm-objcopy -O binary --only-section=.BTF.ext "$o" "corpus/$target/$(basename "$o" .o).btf_ext" 2>/dev/null || true
  done
fi
export RUSTC_BOOTSTRAP=1
exec cargo fuzz run "$target" "corpus/$target" -- \
  -max_total_time="$secs" -max_len=65536 -print_final_stats=1 "$@"
