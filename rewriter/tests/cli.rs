//! `inxpect-instrument` as a user meets it (issue #16): commands and their
//! expected output in tests/cli/*.toml (+ .stdout/.stderr), run by trycmd.
//! `TRYCMD=overwrite cargo nextest run -p inxpect-rewriter --test cli`
//! rewrites the expected files; review the diff.

#[test]
fn cli_cases() {
    trycmd::TestCases::new()
        .register_bin(
            "inxpect-instrument",
            std::path::Path::new(env!("CARGO_BIN_EXE_inxpect-instrument")),
        )
        .case("tests/cli/*.toml");
}

// The cases that need files made on the way (an instrumented object, a
// umask, a pin), checked with snapbox.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn drop_o() -> String {
    root()
        .join("testdata/objects/drop.clang-O2.o")
        .display()
        .to_string()
}

fn instrument() -> snapbox::cmd::Command {
    snapbox::cmd::Command::new(env!("CARGO_BIN_EXE_inxpect-instrument")).current_dir(root())
}

/// Item 8: `--list` on an instrumented object said "bad region marker".
#[test]
fn item8_list_on_an_instrumented_object() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("drop.prof.o");
    instrument()
        .arg(drop_o())
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    instrument()
        .arg(&out)
        .arg("--list")
        .assert()
        .success()
        .stdout_eq(format!(
            "{} is already instrumented (ktime counter): its regions, at offsets in the object it was made from
ID   REGION                   FUNCTION                 SECTION    START/END AT INSN    SOURCE
0    verdict                  xdp_drop                 xdp        0/1                  drop.bpf.c:48
(START/END AT INSN: instruction slots in the section, an ld_imm64 taking two, as `--dump --offsets` numbers them)
",
            out.display()
        ));
}

/// Item 11: `-o -` wrote a file named `-`; now the same bytes as `-o FILE`, on stdout.
#[test]
fn item11_dash_output_is_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.o");
    instrument()
        .arg(drop_o())
        .arg("-o")
        .arg(&file)
        .assert()
        .success();
    let o = instrument()
        .current_dir(dir.path())
        .arg(drop_o())
        .args(["-o", "-"])
        .assert()
        .success()
        .stderr_eq("inxpect-instrument: 1 region(s), counter ktime, written to stdout\n");
    assert_eq!(o.get_output().stdout, std::fs::read(&file).unwrap());
    assert!(!dir.path().join("-").exists(), "a file named - was written");
}

/// Item 11: outputs were mode 0600 (the temporary file's); now 0666 less the umask.
#[test]
fn item11_output_mode_follows_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for (umask, want) in [("022", 0o644), ("027", 0o640), ("002", 0o664)] {
        let out = dir.path().join(format!("u{umask}.o"));
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$1\" -o \"$2\"",))
            .arg(env!("CARGO_BIN_EXE_inxpect-instrument"))
            .arg(drop_o())
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "umask {umask}: mode {mode:o}");
    }
}

/// Item 11: a pinned program as input said only `Input/output error`.
#[test]
fn item11_pinned_program_as_input_is_explained() {
    let pin = format!("/sys/fs/bpf/inxpect-instr-{}", std::process::id());
    let st = Command::new("bpftool")
        .args(["prog", "load", &drop_o(), &pin])
        .status()
        .expect("bpftool");
    assert!(st.success());
    let a = instrument().args([&pin, "--list"]).assert();
    let _ = std::fs::remove_file(&pin);
    a.code(1).stderr_eq(format!(
        "inxpect-instrument: error: cannot read {pin}: Input/output error (os error 5): a pinned BPF program or map? inxpect-instrument reads the ELF .o file\n"
    ));
}

/// The man page and completions of inxpect-instrument.
#[test]
fn man_page_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    instrument()
        .arg("--man")
        .arg(dir.path())
        .assert()
        .success()
        .stdout_eq(format!("{}/inxpect-instrument.1\n", dir.path().display()));
    let page = std::fs::read_to_string(dir.path().join("inxpect-instrument.1")).unwrap();
    assert!(page.contains(".TH inxpect-instrument 1") && page.contains("\\-\\-only"));
    let o = instrument()
        .args(["--completions", "bash"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&o.get_output().stdout).into_owned();
    assert!(
        text.contains("--offsets") && text.contains("_inxpect__instrument()"),
        "{text}"
    );
}
