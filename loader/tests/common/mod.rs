//! Shared by the loader's integration tests: run the `inxpect` binary.

#![allow(dead_code)]

pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_inxpect"));
    c.current_dir(root());
    c
}

pub fn corpus() -> String {
    root()
        .join("testdata/packets/corpus.pcap")
        .display()
        .to_string()
}

pub fn object(name: &str) -> String {
    root()
        .join("testdata/objects")
        .join(name)
        .display()
        .to_string()
}

/// Frames in the corpus, counted independently of the loader's reader.
pub fn corpus_frames() -> u64 {
    let b = std::fs::read(corpus()).expect("corpus");
    let mut off = 24;
    let mut n = 0;
    while off + 16 <= b.len() {
        let caplen = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16 + caplen;
        n += 1;
    }
    n
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("running inxpect")
}

/// Runs, expects success, parses stdout as a JSON report.
pub fn json(args: &[&str]) -> serde_json::Value {
    report(&format!("{args:?}"), &run(args))
}

/// Expects `o` (of `inxpect what`) to be a success whose stdout is a JSON
/// report, and returns it.
pub fn report(what: &str, o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "inxpect {what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)));
    assert_eq!(v["schema"], "inxpect-report/3");
    v
}

/// Runs, expects failure with one `inxpect: error:` line containing `want`.
pub fn fails(args: &[&str], want: &str) {
    fails_with(&format!("{args:?}"), &run(args), want);
}

/// Expects `o` (of `inxpect what`) to be a failure with one
/// `inxpect: error:` line containing `want`.
pub fn fails_with(what: &str, o: &Output, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "inxpect {what} succeeded; stderr: {err}"
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("inxpect: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "want one error line, stderr: {err}");
    assert!(lines[0].contains(want), "{:?} lacks {want:?}", lines[0]);
}

pub fn region_counts(v: &serde_json::Value) -> Vec<(String, u64)> {
    v["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect()
}
