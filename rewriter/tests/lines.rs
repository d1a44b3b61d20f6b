//! Source lines: DWARF (gimli, with the object's relocations applied) and
//! `.BTF.ext` line_info are two independent records of the same compile;
//! they must agree wherever both exist.

mod common;

use inxpect_rewriter::btf_ext::BtfExt;
use inxpect_rewriter::dwarf::Lines;
use inxpect_rewriter::elf::Elf;

#[test]
fn dwarf_and_btf_line_info_agree_on_every_marker() {
    let mut compared = 0;
    for p in common::objects()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("clang-O2-g"))
    {
        let bytes = std::fs::read(&p).expect("read");
        let elf = Elf::parse(&bytes).expect("parse");
        let dwarf = Lines::parse(&elf).unwrap_or_else(|| panic!("{}: no DWARF lines", p.display()));
        let (e, b) = (
            elf.section_index(".BTF.ext").expect("ext"),
            elf.section_index(".BTF").expect("btf"),
        );
        let ext = BtfExt::parse(&elf.sections[e].data, &elf.sections[b].data).expect("btf.ext");
        for s in elf
            .symbols
            .iter()
            .filter(|s| s.name.starts_with("__inxpect_"))
        {
            let sec = s.shndx as usize;
            let d = dwarf.line_of(sec, s.value).expect("dwarf line");
            let b = ext
                .line_of(&elf.sections[sec].name, s.value)
                .expect("btf line");
            assert_eq!(d, b, "{}: {} at {:#x}", p.display(), s.name, s.value);
            compared += 1;
        }
    }
    assert!(compared > 50, "only {compared} markers compared");
}

#[test]
fn objects_without_dwarf_have_no_dwarf_lines() {
    let p = common::root().join("testdata/objects/drop.clang-O2.o");
    let elf = Elf::parse(&std::fs::read(p).expect("read")).expect("parse");
    assert!(
        Lines::parse(&elf).is_none(),
        "clang-O2 objects are stripped of DWARF"
    );
}

/// The BTF walker reads every record of every testdata object: its FUNC
/// names are exactly the objects' function symbols with global linkage
/// (clang) or none (gcc 12 marks all static).
#[test]
fn btf_walker_reads_every_type_record() {
    for p in common::objects() {
        let elf = Elf::parse(&std::fs::read(&p).expect("read")).expect("parse");
        let Some(b) = elf.section_index(".BTF") else {
            assert!(
                p.to_string_lossy().contains("-nobtf") || p.to_string_lossy().contains("gcc-O2-g"),
                "{}: no .BTF",
                p.display()
            );
            continue;
        };
        let names = inxpect_rewriter::btf_ext::btf_func_names(&elf.sections[b].data)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let globals: std::collections::HashSet<String> = elf
            .symbols
            .iter()
            .filter(|y| y.is_func() && y.bind() == 1)
            .map(|y| y.name.clone())
            .collect();
        if p.to_string_lossy().contains("gcc") {
            assert!(names.is_empty(), "{}: {names:?}", p.display());
        } else {
            assert_eq!(names, globals, "{}", p.display());
        }
    }
}

/// The CLI keeps DWARF by default, silently (no warning on every run), and
/// `--strip-dwarf` leaves it out on purpose. (What the kept DWARF says is
/// checked in tests/tests/dwarf.rs against LLVM's reader.)
#[test]
fn cli_keeps_dwarf_unless_stripped() {
    let input = common::root().join("testdata/objects/cms_sub.clang-O2-g.o");
    let dir = tempfile::tempdir().expect("tempdir");
    for (flags, want) in [(&[][..], true), (&["--strip-dwarf"][..], false)] {
        let out = dir.path().join("out.o");
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_inxpect-instrument"))
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .arg("--functions")
            .args(flags)
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(!err.contains("warning"), "{flags:?}: {err}");
        let elf = Elf::parse(&std::fs::read(&out).expect("output")).expect("parse");
        let debug: Vec<&str> = elf
            .sections
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| n.starts_with(".debug_") || n.starts_with(".rel.debug_"))
            .collect();
        if want {
            for s in [
                ".debug_info",
                ".debug_line",
                ".debug_abbrev",
                ".rel.debug_line",
            ] {
                assert!(debug.contains(&s), "{s} missing: {debug:?}");
            }
            assert!(Lines::parse(&elf).is_some(), "kept DWARF has no lines");
        } else {
            assert!(debug.is_empty(), "--strip-dwarf left {debug:?}");
        }
    }
}

/// An object without BTF but with DWARF (gcc -g) gets `.BTF.ext` line_info
/// from its DWARF: in the output, every function's first instruction has
/// the line the input's DWARF gives it.
#[test]
fn objects_without_btf_get_line_info_from_dwarf() {
    for name in [
        "testdata/foreign/globals.gcc-O2-g.o",
        "testdata/objects/drop.gcc-O2-g.o",
    ] {
        let input = std::fs::read(common::root().join(name)).expect("read");
        let elf = Elf::parse(&input).expect("parse");
        assert!(elf.section_index(".BTF").is_none(), "{name} has BTF");
        let dwarf = Lines::parse(&elf).expect("DWARF lines");
        let opts = inxpect_rewriter::Options {
            mode: inxpect_rewriter::Mode::Functions,
            ..Default::default()
        };
        let r = inxpect_rewriter::instrument(&input, &opts).expect("instrument");
        let out = Elf::parse(&r.object).expect("parse output");
        let (e, b) = (
            out.section_index(".BTF.ext").expect("ext"),
            out.section_index(".BTF").expect("btf"),
        );
        let ext = BtfExt::parse(&out.sections[e].data, &out.sections[b].data).expect("btf.ext");
        let mut checked = 0;
        for y in elf.symbols.iter().filter(|y| y.is_func()) {
            let sec = &elf.sections[y.shndx as usize].name;
            let at = r
                .moved
                .get(sec)
                .map_or(y.value, |m| m.target[y.value as usize / 8] as u64 * 8);
            let want = dwarf
                .line_of(y.shndx as usize, y.value)
                .expect("dwarf line");
            assert_eq!(ext.line_of(sec, at), Some(want), "{name}: {}", y.name);
            checked += 1;
        }
        assert!(checked > 0, "{name}: no function");
    }
}
