//! Bad input: one clear error line naming what and where, a non-zero exit,
//! no output file, the input untouched.

mod common;

use common::{compile, root, PRELUDE};
use std::path::Path;
use std::process::Command;

fn instrument(input: &Path, extra: &[&str]) -> (bool, String, std::path::PathBuf) {
    let out = input.with_extension("out.o");
    let _ = std::fs::remove_file(&out);
    let before = std::fs::read(input).ok();
    let o = Command::new(env!("CARGO_BIN_EXE_inxpect-instrument"))
        .arg(input)
        .arg("-o")
        .arg(&out)
        .args(extra)
        .output()
        .expect("runs");
    assert_eq!(std::fs::read(input).ok(), before, "input modified");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    (o.status.success(), err, out)
}

fn expect_error(input: &Path, extra: &[&str], needles: &[&str]) {
    let (ok, err, out) = instrument(input, extra);
    assert!(!ok, "{} should fail; stderr: {err}", input.display());
    assert!(!out.exists(), "an output file was left behind");
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("libbpf:")).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {err}");
    assert!(lines[0].starts_with("inxpect-instrument: error: "), "{err}");
    assert!(
        lines[0].contains(&input.display().to_string()),
        "error must name the file: {err}"
    );
    for n in needles {
        assert!(lines[0].contains(n), "error must mention {n:?}: {err}");
    }
    // No temporary file left either.
    let dir = input.parent().expect("dir");
    for e in std::fs::read_dir(dir).expect("dir") {
        let n = e.expect("entry").file_name().to_string_lossy().to_string();
        assert!(
            !n.starts_with(".inxpect-"),
            "temporary file {n} left behind"
        );
    }
}

#[test]
fn not_elf_not_bpf_truncated_corrupt_and_executable_are_refused() {
    let d = tempfile::tempdir().expect("tmp");
    let app = std::fs::read(root().join("testdata/objects/drop.clang-O2-g.o")).expect("drop");

    let p = d.path().join("text.o");
    std::fs::write(&p, b"hello, not an object\n").expect("w");
    expect_error(&p, &[], &["not an ELF file"]);

    let p = d.path().join("x86.o");
    let mut x86 = app.clone();
    x86[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    std::fs::write(&p, &x86).expect("w");
    expect_error(&p, &[], &["not a BPF object", "62"]);

    let p = d.path().join("exec.o");
    let mut exec = app.clone();
    exec[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    std::fs::write(&p, &exec).expect("w");
    expect_error(&p, &[], &["not a relocatable object"]);

    let p = d.path().join("truncated.o");
    std::fs::write(&p, &app[..app.len() / 3]).expect("w");
    expect_error(&p, &[], &["malformed"]);

    let p = d.path().join("corrupt.o");
    let mut bad = app.clone();
    let shoff = u64::from_le_bytes(bad[40..48].try_into().expect("8")) as usize;
    let shnum = u16::from_le_bytes([bad[60], bad[61]]) as usize;
    let shstrndx = u16::from_le_bytes([bad[62], bad[63]]) as usize;
    let size = |i: usize| {
        u64::from_le_bytes(
            bad[shoff + i * 64 + 32..shoff + i * 64 + 40]
                .try_into()
                .expect("8"),
        )
    };
    let victim = (1..shnum)
        .find(|&i| i != shstrndx && size(i) > 0)
        .expect("a data section");
    let h = shoff + victim * 64;
    bad[h + 24..h + 32].copy_from_slice(&0xfff_ffffu64.to_le_bytes()); // sh_offset far away
    std::fs::write(&p, &bad).expect("w");
    expect_error(&p, &[], &["out of bounds"]);
}

#[test]
fn unsupported_instruction_names_section_and_offset() {
    let d = tempfile::tempdir().expect("tmp");
    let src = format!("{PRELUDE}SEC(\"xdp\") int p(struct xdp_md *c) {{ INXPECT_START(a); asm volatile(\".byte 0xff, 0, 0, 0, 0, 0, 0, 0\"); INXPECT_END(a); return XDP_PASS; }}\n");
    let d2 = d.path();
    // clang's assembler refuses raw bytes in BPF; patch a compiled object instead.
    let _ = src;
    let o = compile(d2, "unsup", &format!("{PRELUDE}SEC(\"xdp\") int p(struct xdp_md *c) {{ INXPECT_START(a); asm volatile(\"r0 = 7\"); INXPECT_END(a); return XDP_PASS; }}\n"));
    let mut b = std::fs::read(&o).expect("r");
    let pos = b
        .windows(8)
        .position(|w| w == [0xb7, 0x00, 0, 0, 7, 0, 0, 0])
        .expect("r0 = 7 present");
    b[pos] = 0xff;
    std::fs::write(&o, &b).expect("w");
    expect_error(
        &o,
        &[],
        &["unsupported instruction 0xff", "section xdp", "offset"],
    );
}

#[test]
fn marker_errors_name_region_function_and_line() {
    let d = tempfile::tempdir().expect("tmp");
    let no_end = compile(d.path(), "noend", &format!("{PRELUDE}SEC(\"xdp\") int p(struct xdp_md *c) {{ INXPECT_START(lonely); return XDP_PASS; }}\n"));
    expect_error(
        &no_end,
        &[],
        &[
            "region 'lonely'",
            "START without END",
            "function p",
            "noend.bpf.c:5",
        ],
    );

    let no_start = compile(d.path(), "nostart", &format!("{PRELUDE}SEC(\"xdp\") int p(struct xdp_md *c) {{ INXPECT_END(orphan); return XDP_PASS; }}\n"));
    expect_error(
        &no_start,
        &[],
        &["region 'orphan'", "END is not reachable from any START"],
    );

    // END placed before START in straight-line code: the END is unreachable from it.
    let before = compile(
        d.path(),
        "before",
        &format!("{PRELUDE}SEC(\"xdp\") int p(struct xdp_md *c) {{ INXPECT_END(r); INXPECT_START(r); asm volatile(\"r0 = 2\"); INXPECT_END(r); return XDP_PASS; }}\n"),
    );
    expect_error(&before, &[], &["region 'r'", "END is not reachable"]);

    let dup = compile(
        d.path(),
        "dup",
        &format!("{PRELUDE}SEC(\"xdp\") int p(struct xdp_md *c) {{ INXPECT_START(twice); INXPECT_START(twice); INXPECT_END(twice); return XDP_PASS; }}\n"),
    );
    expect_error(
        &dup,
        &[],
        &["region 'twice'", "started again before it ends"],
    );

    let none = compile(
        d.path(),
        "none",
        &format!("{PRELUDE}SEC(\"xdp\") int p(struct xdp_md *c) {{ return XDP_PASS; }}\n"),
    );
    expect_error(&none, &[], &["no INXPECT_START/INXPECT_END markers"]);
    expect_error(
        &none,
        &["--functions", "--only", "nosuch"],
        &["no region named 'nosuch'"],
    );
}

#[test]
fn stack_exhausted_is_an_error_not_a_rejected_object() {
    let d = tempfile::tempdir().expect("tmp");
    // Every register live across the marker and 504 bytes of stack in use:
    // no dead callee-saved register and no room for four spill slots.
    let src = format!(
        "{PRELUDE}SEC(\"xdp\") int p(struct xdp_md *c) {{ asm volatile(\
\"*(u64 *)(r10 - 504) = r1;\"\
\"r2 = 1; r3 = 2; r4 = 3; r5 = 4; r6 = 5; r7 = 6; r8 = 7; r9 = 8;\"\
\"__inxpect_start_deep_1: goto +0;\"\
\"__inxpect_end_deep_2: goto +0;\"\
\"r0 = r2; r0 += r3; r0 += r4; r0 += r5; r0 += r6; r0 += r7; r0 += r8; r0 += r9;\"\
\"exit;\" ::: \"memory\"); return 0; }}\n"
    );
    let o = compile(d.path(), "deep", &src);
    expect_error(&o, &[], &["stack:", "call chain p (", "allows 512 bytes"]);
}

#[test]
fn kfunc_backends_require_a_gpl_license() {
    let d = tempfile::tempdir().expect("tmp");
    let src = "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n#include \"inxpect.h\"\nchar _license[] SEC(\"license\") = \"Proprietary\";\nSEC(\"xdp\") int p(struct xdp_md *c) { INXPECT_START(a); INXPECT_END(a); return XDP_PASS; }\n";
    let o = compile(d.path(), "prop", src);
    expect_error(&o, &["--counter", "tsc"], &["GPL-compatible"]);
    let (ok, err, out) = instrument(&o, &["--counter", "ktime"]);
    assert!(ok && out.exists(), "ktime needs no GPL: {err}");
}

#[test]
fn refuses_to_instrument_twice_and_to_overwrite_the_input() {
    let d = tempfile::tempdir().expect("tmp");
    let src = root().join("testdata/objects/drop.clang-O2-g.o");
    let (ok, err, out) = instrument(&src, &[]);
    let _ = std::fs::remove_file(&out);
    assert!(!ok || out.parent().is_some(), "{err}");
    let once = d.path().join("once.o");
    std::fs::copy(&src, &once).expect("copy");
    let (ok, err, out) = instrument(&once, &[]);
    assert!(ok, "{err}");
    expect_error(&out, &[], &["already instrumented"]);
    let o = Command::new(env!("CARGO_BIN_EXE_inxpect-instrument"))
        .arg(&once)
        .arg("-o")
        .arg(&once)
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to overwrite the input"));
}

#[test]
fn events_with_a_counter_that_reads_one_value_is_refused() {
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("drop.o");
    std::fs::copy(root().join("testdata/objects/drop.clang-O2-g.o"), &p).expect("copy");
    expect_error(
        &p,
        &["--counter", "ktime", "--events", "2"],
        &["--events is for --counter pmc"],
    );
}
