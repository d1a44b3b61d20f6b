//! `--unsampled-copy`: every program that makes no tail call has a copy of
//! its input code, right after its entry, which the entry's sampled-out
//! path falls into (or, for a program too long for that, at its end, which
//! that path jumps to).
//! Read back with goblin (an ELF reader independent of the rewriter's):
//! the copy is the input's instructions (calls re-encoded), every
//! relocation of the function repeated at the copy, and every line and
//! CO-RE record too. The behaviour (verdicts, bytes, maps and counts equal
//! the original's with runs sampled out) is checked on the kernel by
//! tests/truth.rs and tests/foreign.rs.

mod common;

use goblin::elf::{sym, Elf as GElf};
use inxpect_rewriter::btf_ext::{BtfExt, Kind};
use inxpect_rewriter::{instrument, Counter, Mode, Options};
use std::collections::BTreeSet;

type Insn = [u8; 8];

fn insns(data: &[u8]) -> Vec<Insn> {
    data.chunks_exact(8)
        .map(|c| c.try_into().expect("8 bytes"))
        .collect()
}

/// A section's name.
fn sec_name<'a>(e: &'a GElf, i: usize) -> &'a str {
    e.shdr_strtab
        .get_at(e.section_headers[i].sh_name)
        .unwrap_or("")
}

/// A symbol's name (a section symbol's: its section's).
fn sym_name(e: &GElf, i: usize) -> String {
    let s = e.syms.get(i).expect("symbol");
    if s.st_type() == sym::STT_SECTION {
        sec_name(e, s.st_shndx).to_string()
    } else {
        e.strtab.get_at(s.st_name).unwrap_or("").to_string()
    }
}

/// (offset, symbol name, type) of every relocation of section `sec`.
fn relocs(e: &GElf, sec: usize) -> BTreeSet<(u64, String, u32)> {
    e.shdr_relocs
        .iter()
        .filter(|(ri, _)| e.section_headers[*ri].sh_info as usize == sec)
        .flat_map(|(_, rs)| rs.iter())
        .map(|r| (r.r_offset, sym_name(e, r.r_sym), r.r_type))
        .collect()
}

fn ext(bytes: &[u8], e: &GElf) -> Option<BtfExt> {
    let data = |name: &str| {
        (0..e.section_headers.len())
            .find(|&i| sec_name(e, i) == name)
            .map(|i| {
                let h = &e.section_headers[i];
                &bytes[h.sh_offset as usize..(h.sh_offset + h.sh_size) as usize]
            })
    };
    BtfExt::parse(data(".BTF.ext")?, data(".BTF")?).ok()
}

/// (kind, insn_off, line) of `section`'s line and CO-RE records.
fn records(x: &BtfExt, section: &str) -> BTreeSet<(u8, u32, u32)> {
    x.records
        .iter()
        .filter(|r| r.section == section && r.kind != Kind::Func)
        .map(|r| (u8::from(r.kind == Kind::CoRe), r.insn_off, r.line_col))
        .collect()
}

/// An XDP/tc program (a global function outside .text) in `e`: (section,
/// first slot, slots).
fn programs(e: &GElf) -> Vec<(String, usize, usize, usize)> {
    e.syms
        .iter()
        .filter(|s| {
            s.st_type() == sym::STT_FUNC
                && s.st_bind() == sym::STB_GLOBAL
                && s.st_shndx != 0
                && sec_name(e, s.st_shndx) != ".text"
        })
        .map(|s| {
            (
                e.strtab.get_at(s.st_name).unwrap_or("").to_string(),
                s.st_shndx,
                s.st_value as usize / 8,
                s.st_size as usize / 8,
            )
        })
        .collect()
}

fn code<'a>(bytes: &'a [u8], e: &GElf, sec: usize) -> &'a [u8] {
    let h = &e.section_headers[sec];
    &bytes[h.sh_offset as usize..(h.sh_offset + h.sh_size) as usize]
}

const TAIL_CALL: Insn = [0x85, 0, 0, 0, 12, 0, 0, 0];

/// Checks one object with each program's copy inline after its entry (the
/// default) and after its last instruction (the layout of programs too long
/// for the entry's branch over the copy); returns the programs copied
/// (None: refused).
fn check(path: &std::path::Path) -> Option<usize> {
    let inline = check_layout(path, true);
    assert_eq!(inline, check_layout(path, false), "{}", path.display());
    inline
}

fn check_layout(path: &std::path::Path, inline: bool) -> Option<usize> {
    let what = format!(
        "{} (copies {})",
        path.display(),
        if inline { "inline" } else { "after" }
    );
    let input = std::fs::read(path).expect("read");
    let opts = Options {
        mode: Mode::Functions,
        counter: Counter::Ktime,
        unsampled_copy: true,
        inline_copy_max: if inline { usize::MAX } else { 0 },
        ..Options::default()
    };
    // An object refused without copies (BTF-defined maps and no .BTF) is
    // refused the same way with them.
    let plain = instrument(
        &input,
        &Options {
            unsampled_copy: false,
            ..opts.clone()
        },
    );
    let (out, moved) = match (plain, instrument(&input, &opts)) {
        (Ok(_), Ok(r)) => (r.object, r.moved),
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "{what}");
            return None;
        }
        (a, b) => panic!("{what}: without copies {:?}, with {:?}", a.err(), b.err()),
    };
    let (ie, oe) = (
        GElf::parse(&input).expect("input"),
        GElf::parse(&out).expect("goblin parses the output"),
    );
    let (ix, ox) = (ext(&input, &ie), ext(&out, &oe));
    let mut copied = 0;
    let mut program_copies = Vec::new();
    for (name, isec, istart, n) in programs(&ie) {
        let ins = &insns(code(&input, &ie, isec))[istart..istart + n];
        if ins.contains(&TAIL_CALL) {
            continue;
        }
        let (_, osec, ostart, on) = programs(&oe)
            .into_iter()
            .find(|p| p.0 == name)
            .unwrap_or_else(|| panic!("{what}: no program {name} in the output"));
        let section = sec_name(&oe, osec).to_string();
        let outs = insns(code(&out, &oe, osec));
        // A bpf-to-bpf call and a function address are re-encoded.
        let same = |a: &Insn, b: &Insn| {
            let reencoded = (a[0] == 0x85 && a[1] >> 4 == 1) || (a[0] == 0x18 && a[1] >> 4 == 4);
            if reencoded {
                a[..4] == b[..4]
            } else {
                a == b
            }
        };
        // Inline after the entry's countdown (the first run of the input's
        // code in the program: the instrumented code has probes in it),
        // else after the program's last instruction.
        let at = if inline {
            (ostart..=ostart + on - n)
                .find(|&at| ins.iter().zip(&outs[at..at + n]).all(|(a, b)| same(a, b)))
                .unwrap_or_else(|| panic!("{what}: {name}: no copy"))
        } else {
            ostart + on - n
        };
        let copy = &outs[at..at + n];
        for (k, (a, b)) in ins.iter().zip(copy).enumerate() {
            assert!(
                same(a, b),
                "{what}: {name}: copy of slot {k} is {b:02x?}, input {a:02x?}"
            );
        }
        // The entry's sampled-out path: falls into the copy (the entry's
        // store of the countdown, or a restore of its saves, just before
        // it), or a `ja` to its first slot.
        let falls_in = at > ostart && matches!(outs[at - 1][0], 0x7b | 0xbf | 0x79);
        let jumps_in = outs[ostart..at].iter().enumerate().any(|(j, x)| {
            x[0] == 0x05
                && (ostart + j) as i64 + 1 + i16::from_le_bytes([x[2], x[3]]) as i64 == at as i64
        });
        assert!(
            if inline { falls_in } else { jumps_in },
            "{what}: {name}: nothing enters the copy at {at}"
        );
        // Relocations: each of the function's, again at the copy.
        let (ir, or) = (relocs(&ie, isec), relocs(&oe, osec));
        for (off, s, t) in ir
            .iter()
            .filter(|r| (istart..istart + n).contains(&(r.0 as usize / 8)))
        {
            let k = off / 8 - istart as u64;
            let want = ((at as u64 + k) * 8, s.clone(), *t);
            assert!(
                or.contains(&want),
                "{what}: {name}: relocation {want:?} of the copy missing"
            );
        }
        // Line and CO-RE records, again at the copy.
        if let (Some(ix), Some(ox)) = (&ix, &ox) {
            let orec = records(ox, &section);
            for (kind, off, line) in records(ix, sec_name(&ie, isec)) {
                let k = off as usize / 8;
                if !(istart..istart + n).contains(&k) {
                    continue;
                }
                let want = (kind, ((at + k - istart) * 8) as u32, line);
                assert!(
                    orec.contains(&want),
                    "{what}: {name}: record {want:?} of the copy missing"
                );
            }
        }
        // The first exit in the program's code is the copy's or the
        // instrumented code's, never one of the probes' (the x86 JIT puts
        // the epilogue at the first exit and makes every later one a jump):
        // the entry's look-up miss exits after the function.
        let first_input = moved
            .get(sec_name(&ie, isec))
            .map_or(istart, |m| m.pos[istart]);
        let code_starts = if inline { at } else { first_input };
        let exit_at = (ostart..ostart + on).find(|&j| outs[j][0] == 0x95);
        assert!(
            exit_at.is_some_and(|j| j >= code_starts),
            "{what}: {name}: an exit at {exit_at:?}, before the program's code at {code_starts}"
        );
        program_copies.push((osec, at, at + n));
        copied += 1;
    }
    check_subprogram_copies(&input, &ie, &out, &oe, &what.to_string(), &program_copies);
    Some(copied)
}

/// Each subprogram copy (`<name>__inxpect_copy`) is its original's input
/// code, and no call from any copy goes to a function that has one.
///
/// `programs`: the program copies, (section, first slot, end).
fn check_subprogram_copies(
    input: &[u8],
    ie: &GElf,
    out: &[u8],
    oe: &GElf,
    what: &str,
    programs: &[(usize, usize, usize)],
) {
    const SUFFIX: &str = "__inxpect_copy";
    // (section, first slot) -> name, for every function of the output.
    let funcs: std::collections::BTreeMap<(usize, usize), (String, usize)> = oe
        .syms
        .iter()
        .filter(|s| s.st_type() == sym::STT_FUNC && s.st_shndx != 0)
        .map(|s| {
            let name = oe.strtab.get_at(s.st_name).unwrap_or("").to_string();
            (
                (s.st_shndx, s.st_value as usize / 8),
                (name, s.st_size as usize / 8),
            )
        })
        .collect();
    let has_copy = |name: &str| funcs.values().any(|(n, _)| *n == format!("{name}{SUFFIX}"));
    let mut ranges = Vec::new();
    for (&(sec, start), (name, n)) in &funcs {
        let Some(orig) = name.strip_suffix(SUFFIX) else {
            continue;
        };
        let (_, isec, istart, in_n) = input_func(ie, orig)
            .unwrap_or_else(|| panic!("{what}: {name} copies no input function"));
        assert_eq!(*n, in_n, "{what}: {name} has {n} slots, {orig} {in_n}");
        let ins = &insns(code(input, ie, isec))[istart..istart + in_n];
        let copy = &insns(code(out, oe, sec))[start..start + n];
        for (k, (a, b)) in ins.iter().zip(copy).enumerate() {
            let reencoded = (a[0] == 0x85 && a[1] >> 4 == 1) || (a[0] == 0x18 && a[1] >> 4 == 4);
            let same = if reencoded { a[..4] == b[..4] } else { a == b };
            assert!(same, "{what}: {name}: slot {k} is {b:02x?}, input {a:02x?}");
        }
        ranges.push((sec, start, start + n));
    }
    // Program copies, where `check` found them.
    ranges.extend_from_slice(programs);
    for (sec, from, to) in ranges {
        let code = insns(code(out, oe, sec));
        let rels: std::collections::BTreeMap<u64, usize> = oe
            .shdr_relocs
            .iter()
            .filter(|(ri, _)| oe.section_headers[*ri].sh_info as usize == sec)
            .flat_map(|(_, rs)| rs.iter())
            .map(|r| (r.r_offset, r.r_sym))
            .collect();
        for (i, x) in code.iter().enumerate().take(to).skip(from) {
            if !(x[0] == 0x85 && x[1] >> 4 == 1) {
                continue;
            }
            let imm = i32::from_le_bytes([x[4], x[5], x[6], x[7]]) as i64;
            let (tsec, t) = match rels.get(&(i as u64 * 8)) {
                Some(&y) => {
                    let y = oe.syms.get(y).expect("symbol");
                    (y.st_shndx, (y.st_value as i64 / 8 + imm + 1) as usize)
                }
                None => (sec, (i as i64 + 1 + imm) as usize),
            };
            if let Some((callee, _)) = funcs.get(&(tsec, t)) {
                assert!(
                    !has_copy(callee),
                    "{what}: a copy calls {callee}, which has a copy of its own"
                );
            }
        }
    }
}

/// The input function `name`: (name, section, first slot, slots).
fn input_func(e: &GElf, name: &str) -> Option<(String, usize, usize, usize)> {
    e.syms
        .iter()
        .find(|s| s.st_type() == sym::STT_FUNC && e.strtab.get_at(s.st_name) == Some(name))
        .map(|s| {
            (
                name.to_string(),
                s.st_shndx,
                s.st_value as usize / 8,
                s.st_size as usize / 8,
            )
        })
}

/// The truth apps with a region in a subprogram: the copy of the program
/// calls the copy of the subprogram (checked by [`check_subprogram_copies`]
/// on every object), which exists.
#[test]
fn subprograms_with_sites_get_copies_of_their_own() {
    for app in ["static_sub", "global_sub"] {
        let p = common::root().join(format!("testdata/truth/objects/{app}.clang-O2.o"));
        let input = std::fs::read(&p).expect("read");
        let opts = Options {
            mode: Mode::Functions,
            counter: Counter::Ktime,
            unsampled_copy: true,
            ..Options::default()
        };
        let out = instrument(&input, &opts).expect("instrument").object;
        let oe = GElf::parse(&out).expect("output");
        let copies: Vec<&str> = oe
            .syms
            .iter()
            .filter_map(|s| oe.strtab.get_at(s.st_name))
            .filter(|n| n.ends_with("__inxpect_copy"))
            .collect();
        assert!(!copies.is_empty(), "{app}: no subprogram copy");
        assert_eq!(check(&p), Some(1), "{app}");
    }
}

#[test]
fn every_program_without_tail_calls_gets_a_faithful_copy() {
    let mut copied = 0;
    let mut objs = common::objects();
    objs.push(common::root().join("testdata/foreign/core.clang-O2-g.o"));
    objs.push(common::root().join("testdata/foreign/multi.clang-O2-g.o"));
    let mut rewritten = 0;
    for p in &objs {
        if let Some(n) = check(p) {
            copied += n;
            rewritten += 1;
        }
    }
    assert!(
        rewritten >= objs.len() / 2,
        "only {rewritten} of {} objects rewritten",
        objs.len()
    );
    assert!(
        copied >= rewritten,
        "{copied} programs copied in {rewritten} objects"
    );
}

/// The CO-RE object's records really are repeated (not vacuous: it has some).
#[test]
fn core_records_repeat_at_the_copy() {
    let p = common::root().join("testdata/foreign/core.clang-O2-g.o");
    let input = std::fs::read(&p).expect("read");
    let e = GElf::parse(&input).expect("input");
    let x = ext(&input, &e).expect(".BTF.ext");
    let core = x.records.iter().filter(|r| r.kind == Kind::CoRe).count();
    assert!(core > 0, "core.clang-O2-g.o has no CO-RE records");
    assert_eq!(check(&p), Some(1));
}
