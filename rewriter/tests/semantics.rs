//! What the plan and the inserted code mean, checked on the output (the
//! kernel-level ground truth is in tests/tests/truth.rs): regions per
//! function, entry probes that a jump back to the first instruction does not
//! re-run, tail-call sites, and the refusals.

mod common;

use common::{compile, PRELUDE};
use inxpect_rewriter::elf::Elf;
use inxpect_rewriter::insn::Insn;
use inxpect_rewriter::{instrument, list, Counter, Mode, Options};

fn opts(mode: Mode) -> Options {
    Options {
        mode,
        counter: Counter::Ktime,
        ..Default::default()
    }
}

#[test]
fn the_same_name_in_two_functions_is_two_regions() {
    let d = tempfile::tempdir().expect("tmp");
    let src = format!(
        "{PRELUDE}static __attribute__((noinline)) int sub(int x) {{ INXPECT_START(work); x = x * 3 + 1; INXPECT_END(work); return x; }}\n\
SEC(\"xdp\") int prog(struct xdp_md *c) {{ int r; INXPECT_START(work); r = sub(c->ingress_ifindex); INXPECT_END(work); return r & 1 ? XDP_PASS : XDP_DROP; }}\n"
    );
    let o = compile(d.path(), "same", &src);
    let m = list(&std::fs::read(&o).expect("read"), &opts(Mode::Sections)).expect("list");
    let mut got: Vec<(String, String)> = m
        .regions
        .iter()
        .map(|r| (r.function.clone(), r.name.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("prog".to_string(), "work".to_string()),
            ("sub".to_string(), "work".to_string())
        ]
    );
    // `--only work` selects both; `sub:work` one.
    for (sel, n) in [("work", 2), ("sub:work", 1), ("prog:work", 1)] {
        let o2 = Options {
            only: Some(vec![sel.to_string()]),
            ..opts(Mode::Sections)
        };
        let m = list(&std::fs::read(&o).expect("read"), &o2).expect("list");
        assert_eq!(m.regions.len(), n, "--only {sel}");
    }
}

#[test]
fn a_name_both_per_function_and_across_a_call_is_refused() {
    let d = tempfile::tempdir().expect("tmp");
    // `work` is whole in prog and only ENDs in sub.
    let src = format!(
        "{PRELUDE}static __attribute__((noinline)) int sub(int x) {{ x = x * 3 + 1; INXPECT_END(work); return x; }}\n\
SEC(\"xdp\") int prog(struct xdp_md *c) {{ int r; INXPECT_START(work); r = sub(c->ingress_ifindex); INXPECT_START(work); r += 2; INXPECT_END(work); return r & 1 ? XDP_PASS : XDP_DROP; }}\n"
    );
    let o = compile(d.path(), "amb", &src);
    let Err(e) = list(&std::fs::read(&o).expect("read"), &opts(Mode::Sections)) else {
        panic!("an ambiguous region name must be refused");
    };
    let e = e.to_string();
    assert!(e.contains("region 'work'"), "{e}");
    assert!(e.contains("function sub"), "{e}");
    assert!(e.contains("function prog"), "{e}");
}

/// The slots of a section's code that jump (not call) to `target`.
fn jumps_to(code: &[u8], target: usize) -> Vec<usize> {
    let v = inxpect_rewriter::insn::decode_all(code);
    (0..v.len())
        .filter(|&i| {
            let x: Insn = v[i];
            x.is_branch() && i as i64 + 1 + x.branch_off() == target as i64
        })
        .collect()
}

#[test]
fn a_loop_back_to_the_first_instruction_skips_the_entry_probe() {
    let d = tempfile::tempdir().expect("tmp");
    // The loop's head is the program's first instruction.
    let src = format!(
        "{PRELUDE}SEC(\"xdp\") int prog(struct xdp_md *c) {{ asm volatile(\
\"r0 = 0;\"\
\"r0 += 1;\"\
\"if r0 < 10 goto -2;\"\
\"r0 = 2;\"\
\"exit;\" ::: \"r0\"); return 0; }}\n"
    );
    let o = compile(d.path(), "loop0", &src);
    let input = std::fs::read(&o).expect("read");
    let e = Elf::parse(&input).expect("parse");
    let s = e.section_index("xdp").expect("xdp");
    let orig = jumps_to(&e.sections[s].data, 1);
    assert_eq!(
        orig.len(),
        1,
        "the test program has one back-edge to slot 1"
    );
    // Make it a loop to slot 0: rewrite `goto -2` into `goto -3` (to `r0 = 0`).
    let mut pe = e.clone();
    let off = orig[0] * 8;
    let mut x = Insn::decode(&pe.sections[s].data[off..off + 8]);
    x.off -= 1;
    pe.sections[s].data[off..off + 8].copy_from_slice(&x.encode());
    let patched = pe.write();
    let pe = Elf::parse(&patched).expect("parse");
    assert_eq!(jumps_to(&pe.sections[s].data, 0).len(), 1);

    {
        let out = instrument(&patched, &opts(Mode::Functions)).expect("instrument");
        let oe = Elf::parse(&out.object).expect("parse output");
        let os = oe.section_index("xdp").expect("xdp");
        let code = inxpect_rewriter::insn::decode_all(&oe.sections[os].data);
        // The back-edge now lands on the original `r0 = 0`, past the entry
        // probe (which starts at slot 0 and is not `r0 = 0`).
        let back: Vec<usize> = (0..code.len())
            .filter(|&i| code[i].is_branch() && code[i].branch_off() < 0)
            .collect();
        let targets: Vec<i64> = back
            .iter()
            .map(|&i| i as i64 + 1 + code[i].branch_off())
            .collect();
        assert!(
            targets
                .iter()
                .any(|&t| t > 0 && code[t as usize] == Insn::mov64_imm(0, 0)),
            "the back-edge must land on the original first instruction, not slot 0: {targets:?}"
        );
        assert!(
            targets.iter().all(|&t| t != 0),
            "no jump may reach the entry probe: {targets:?}"
        );
    }
}

#[test]
fn tail_call_sites_mark_the_run_and_functions_mode_ends_before_them() {
    let obj = common::root().join("testdata/foreign/tailcall.clang-O2-g.o");
    let input = std::fs::read(obj).expect("read");
    let m = list(&input, &opts(Mode::Functions)).expect("list");
    let entry = m
        .regions
        .iter()
        .find(|r| r.name == "entry")
        .expect("entry region");
    // One END per exit and one before the tail call.
    assert!(entry.ends.len() >= 2, "{entry:?}");
    let out = instrument(&input, &opts(Mode::Functions)).expect("instrument");
    let e = Elf::parse(&out.object).expect("parse");
    assert!(
        e.symbols
            .iter()
            .any(|s| s.name == inxpect_rewriter::runtime::FN_TAIL_ENTER),
        "the runtime's tail-call continuation is linked in"
    );
}

#[test]
fn a_malformed_btf_ext_is_an_error_naming_the_section() {
    let input =
        std::fs::read(common::root().join("testdata/objects/drop.clang-O2-g.o")).expect("read");
    let e = Elf::parse(&input).expect("parse");
    let i = e.section_index(".BTF.ext").expect(".BTF.ext");
    let mut be = e.clone();
    // hdr_len far past the section.
    be.sections[i].data[4..8].copy_from_slice(&0xffffu32.to_le_bytes());
    let bad = be.write();
    let Err(err) = instrument(&bad, &opts(Mode::Sections)) else {
        panic!("a malformed .BTF.ext must be refused");
    };
    let err = err.to_string();
    assert!(err.contains(".BTF.ext"), "{err}");
}

#[test]
fn list_on_an_instrumented_object_gives_its_regions() {
    let input =
        std::fs::read(common::root().join("testdata/objects/cms.clang-O2-g.o")).expect("read");
    let before = list(&input, &opts(Mode::Sections)).expect("list input");
    let out = instrument(&input, &opts(Mode::Sections)).expect("instrument");
    let mut after = list(&out.object, &opts(Mode::Sections)).expect("list output");
    // The output's manifest also says what each site's probes put in the
    // measured window (nothing is emitted for a listing of the input).
    for r in &mut after.regions {
        for s in r.starts.iter_mut().chain(r.ends.iter_mut()) {
            assert!(
                s.window.is_some(),
                "{}: site {} has no window",
                r.name,
                s.offset
            );
            assert!(
                s.whole.is_some(),
                "{}: site {} has no whole",
                r.name,
                s.offset
            );
            (s.window, s.whole) = (None, None);
        }
    }
    assert_eq!(after.regions, before.regions);
}
