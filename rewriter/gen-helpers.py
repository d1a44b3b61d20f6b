#!/usr/bin/env python3
"""Prints the helper argument-count table for rewriter/src/insn.rs from the
kernel's uapi header (the FN(name, id) list and the documented signatures)."""
import re, sys
h = open(sys.argv[1] if len(sys.argv) > 1 else '/usr/include/linux/bpf.h').read()
ids = {m.group(1): int(m.group(2)) for m in re.finditer(r'FN\((\w+),\s*(\d+),', h)}
sig = {}
for m in re.finditer(r'^ \* (?:[\w\s\*]+?)\bbpf_(\w+)\(([^)]*)\)\s*$', h, re.M):
    args = m.group(2).strip()
    sig.setdefault(m.group(1), 0 if args in ('', 'void') else args.count(',') + 1)
arr = [5] * (max(ids.values()) + 1)
for n, i in ids.items():
    arr[i] = sig.get(n, 5)
arr[ids['trace_printk']] = 5  # variadic
print(', '.join(map(str, arr)))
