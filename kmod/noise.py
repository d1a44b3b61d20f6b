#!/usr/bin/env python3
"""Prints the x86 instruction counts of the inxpect kfuncs, from objdump.

    kmod/noise.py                 build inxpect.ko for Debian's 6.1 and 6.12
                                  (via tests/vm/kernel.sh) and analyse both
    kmod/noise.py A.ko [B.ko...]  analyse modules built already

For each kfunc: the static size of the body (symbol size, so alignment
padding is excluded) and every path from the entry to a return, with its
instruction count. The return counts as one instruction: `jmp
__x86_return_thunk` (retbleed mitigations) or `ret`; what the thunk runs
after that depends on the CPU's mitigations and is not counted.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

KFUNCS = ["inxpect_read_pmc", "inxpect_read_tsc", "inxpect_read_pmc0_lo", "inxpect_read_pmc0_lo_end", "inxpect_read_tsc_lo"]
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def symbols(ko):
    """name -> (address, size) of the .text functions."""
    out = {}
    for line in sh("nm", "-S", "--defined-only", ko).splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] in KFUNCS:
            out[parts[3]] = (int(parts[0], 16), int(parts[1], 16))
    return out


INSN = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
RELOC = re.compile(r"^\s*([0-9a-f]+):\s+(R_X86_64_\S+)\s+(\S+)")


def disassemble(ko, name, addr, size):
    """[(address, text, reloc target or None)] of one function."""
    text = sh("objdump", "-dr", "--no-show-raw-insn", "--section=.text",
              f"--disassemble={name}", ko)
    insns = []
    for line in text.splitlines():
        r = RELOC.match(line)
        if r:
            # A relocation line belongs to the instruction it patches.
            if insns:
                a, t, _ = insns[-1]
                insns[-1] = (a, t, r.group(3))
            continue
        m = INSN.match(line)
        if m:
            a = int(m.group(1), 16)
            if addr <= a < addr + size:
                insns.append((a, m.group(2).strip(), None))
    return insns


def paths(insns):
    """All paths entry -> return as lists of instruction texts."""
    index = {a: i for i, (a, _, _) in enumerate(insns)}
    done = []

    def walk(i, path):
        while i < len(insns):
            a, text, reloc = insns[i]
            path = path + [text]
            mnem = text.split()[0]
            if mnem == "ret" or (mnem == "jmp" and reloc):
                done.append(path)  # return, or tail jump to the return thunk
                return
            if mnem.startswith("j"):
                target = int(text.split()[1], 16)
                if target not in index:
                    done.append(path + ["<leaves the function>"])
                    return
                if mnem == "jmp":
                    i = index[target]
                    continue
                walk(index[target], path)  # taken
            i += 1
        done.append(path + ["<falls off the end>"])

    walk(0, [])
    return done


def report(ko, label):
    print(f"## {label}\n")
    print(f"`{ko}`\n")
    syms = symbols(ko)
    for name in KFUNCS:
        if name not in syms:
            print(f"{name}: not found\n")
            continue
        addr, size = syms[name]
        insns = disassemble(ko, name, addr, size)
        print(f"{name}: {len(insns)} instructions, {size} bytes")
        for p in sorted(paths(insns), key=len):
            kind = ("counter read" if any(t.startswith(("rdpmc", "rdtsc")) for t in p)
                    else "no read")
            print(f"  path ({kind}): {len(p)} instructions: " + "; ".join(p))
        print()


def build_all():
    tmp = tempfile.mkdtemp(prefix="inxpect-noise-")
    try:
        for series in ("6.1", "6.12"):
            env = sh(os.path.join(REPO, "tests/vm/kernel.sh"), series)
            kv = dict(re.findall(r"^(\w+)=(.*)$", env, re.M))
            # kernel.sh prints shell-quoted values: unquote them.
            kv = {k: sh("bash", "-c", f"printf %s {v}") for k, v in kv.items()}
            build = os.path.join(tmp, series)
            shutil.copytree(HERE, build, ignore=shutil.ignore_patterns("*.o", "*.ko"))
            args = ["make", "-C", build, f"KDIR={kv['KDIR']}", "W=1"]
            if kv.get("RESOLVE_BTFIDS"):
                args.append(f"RESOLVE_BTFIDS={kv['RESOLVE_BTFIDS']}")
            sh(*args)
            report(os.path.join(build, "inxpect.ko"), f"Linux {kv['KREL']}")
    finally:
        shutil.rmtree(tmp)


def main():
    if len(sys.argv) > 1:
        for ko in sys.argv[1:]:
            report(ko, os.path.basename(os.path.dirname(os.path.abspath(ko))) or ko)
    else:
        build_all()


if __name__ == "__main__":
    main()
