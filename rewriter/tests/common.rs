//! Shared helpers for the rewriter's tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every committed testdata object, sorted.
pub fn objects() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("testdata/objects"))
        .expect("testdata/objects")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 20,
        "testdata/objects looks incomplete: {} objects",
        v.len()
    );
    v
}

/// Compiles a BPF C snippet with clang (-O2 -g), with the marker header on the path.
pub fn compile(dir: &Path, name: &str, src: &str) -> PathBuf {
    let c = dir.join(format!("{name}.bpf.c"));
    let o = dir.join(format!("{name}.o"));
    std::fs::write(&c, src).expect("write source");
    let st = Command::new("clang")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
        ])
        .arg(format!(
            "-I{}",
            root().join("runtime-bpf/include").display()
        ))
        .arg("-c")
        .arg(&c)
        .arg("-o")
        .arg(&o)
        .status()
        .expect("clang runs");
    assert!(st.success(), "clang failed on {name}");
    o
}

pub const PRELUDE: &str = "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n#include \"inxpect.h\"\nchar _license[] SEC(\"license\") = \"GPL\";\n";
