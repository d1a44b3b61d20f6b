//! DWARF kept through the rewrite (issue 15): every testdata object with
//! DWARF, rewritten in both modes, gives an output that `llvm-dwarfdump
//! --verify` accepts, with no warning, and whose line table maps every
//! original instruction to the source line it had in the input.
//!
//! The line oracle is LLVM's own reader, not ours: `llvm-objdump -d -l`
//! prints the source line of every instruction of every section (it applies
//! the object's relocations itself). The input's line of slot `i` must be
//! the output's line of slot `pos[i]`, where the rewriter's address map
//! says the instruction went, and of `target[i]`, the code inserted before
//! it (attributed to the instruction it runs for).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use inxpect_rewriter::{instrument, Counter, Mode, Options};
use inxpect_tests::*;

/// Per section: slot -> "file:line", as llvm-objdump attributes it.
fn objdump_lines(path: &Path) -> Result<BTreeMap<String, BTreeMap<usize, String>>> {
    let o = Command::new("llvm-objdump")
        .args(["-d", "-l", "--no-show-raw-insn"])
        .arg(path)
        .output()
        .context("running llvm-objdump")?;
    ensure!(
        o.status.success(),
        "llvm-objdump {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let mut out: BTreeMap<String, BTreeMap<usize, String>> = BTreeMap::new();
    let (mut sec, mut line) = (String::new(), None::<String>);
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        if let Some(s) = l.strip_prefix("Disassembly of section ") {
            sec = s.trim_end_matches(':').to_string();
            line = None;
        } else if let Some(s) = l.strip_prefix("; ") {
            // "; path:line" (a function name line "; name()" has no colon-number)
            if let Some((f, n)) = s.rsplit_once(':') {
                if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() {
                    line = Some(format!("{f}:{n}"));
                }
            }
        } else if let Some((slot, _)) = l.trim_start().split_once(":\t") {
            if let (Ok(slot), Some(line)) = (slot.parse::<usize>(), &line) {
                out.entry(sec.clone())
                    .or_default()
                    .insert(slot, line.clone());
            }
        }
    }
    Ok(out)
}

/// `bytes` with gcc 12's relocation numbering (binutils' R_BPF_DATA_32 =
/// 11, R_BPF_DATA_64 = 12) turned into LLVM's (3, 2), which LLVM's tools
/// apply: without it llvm-objdump reads every code section's lines of a gcc
/// object as if all were at address 0 of one section.
fn llvm_relocs(bytes: &[u8]) -> Result<Vec<u8>> {
    let e = goblin::elf::Elf::parse(bytes)?;
    let mut out = bytes.to_vec();
    for sh in e
        .section_headers
        .iter()
        .filter(|s| s.sh_type == goblin::elf::section_header::SHT_REL)
    {
        let (o, n) = (sh.sh_offset as usize, sh.sh_size as usize);
        for ent in out[o..o + n].chunks_exact_mut(16) {
            let t = u32::from_le_bytes(ent[8..12].try_into()?);
            let t = match t {
                11 => 3,
                12 => 2,
                t => t,
            };
            ent[8..12].copy_from_slice(&t.to_le_bytes());
        }
    }
    Ok(out)
}

fn dwarfdump_verify(path: &Path) -> Result<()> {
    let o = Command::new("llvm-dwarfdump")
        .arg("--verify")
        .arg(path)
        .output()
        .context("running llvm-dwarfdump")?;
    ensure!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("No errors."),
        "llvm-dwarfdump --verify {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

fn has_dwarf(bytes: &[u8]) -> bool {
    goblin::elf::Elf::parse(bytes).is_ok_and(|e| {
        e.section_headers
            .iter()
            .any(|s| e.shdr_strtab.get_at(s.sh_name) == Some(".debug_info"))
    })
}

/// Every committed object with DWARF.
fn objects_with_dwarf() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in ["objects", "truth/objects", "foreign"] {
        for e in std::fs::read_dir(testdata().join(dir)).expect("testdata dir") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "o")
                && has_dwarf(&std::fs::read(&p).expect("read"))
            {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

fn check(path: &Path, mode: Mode, dir: &Path) -> Result<Option<usize>> {
    let input = std::fs::read(path)?;
    let opts = Options {
        mode,
        counter: Counter::Ktime,
        ..Options::default()
    };
    let r = match instrument(&input, &opts) {
        Ok(r) => r,
        // Not rewritable (no markers in --sections, maps without BTF):
        // other tests pin those refusals.
        Err(_) => return Ok(None),
    };
    ensure!(r.warnings.is_empty(), "warnings: {:?}", r.warnings);
    ensure!(has_dwarf(&r.object), "the output has no DWARF");
    let out = dir.join(format!(
        "{}.{mode:?}.o",
        path.file_stem().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&out, &r.object)?;
    dwarfdump_verify(&out)?;
    let fixed = dir.join("input.o");
    std::fs::write(&fixed, llvm_relocs(&input)?)?;
    let (a, b) = (objdump_lines(&fixed)?, objdump_lines(&out)?);
    let mut checked = 0;
    for (sec, lines) in &a {
        let got = b
            .get(sec)
            .with_context(|| format!("section {sec} has no lines in the output"))?;
        for (&slot, want) in lines {
            let (pos, target) = match r.moved.get(sec) {
                Some(m) => (m.pos[slot], m.target[slot]),
                None => (slot, slot),
            };
            for (what, at) in [("instruction", pos), ("code inserted before it", target)] {
                ensure!(
                    got.get(&at) == Some(want),
                    "{sec} slot {slot} ({want}): the output's {what} at slot {at} has {:?}",
                    got.get(&at)
                );
            }
            checked += 1;
        }
    }
    ensure!(checked > 0, "no line compared");
    Ok(Some(checked))
}

#[test]
fn dwarf_is_kept_verified_and_lines_map_through_the_rewrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let objs = objects_with_dwarf();
    assert!(objs.len() >= 40, "only {} objects with DWARF", objs.len());
    let (mut failed, mut rewritten, mut lines) = (Vec::new(), 0, 0);
    for p in &objs {
        for mode in [Mode::Functions, Mode::Sections] {
            match check(p, mode, dir.path()) {
                Ok(Some(n)) => {
                    rewritten += 1;
                    lines += n;
                }
                Ok(None) => {}
                Err(e) => failed.push(format!("{} {mode:?}: {e:#}", p.display())),
            }
        }
    }
    eprintln!(
        "{rewritten} rewrites of {} objects, {lines} instructions' lines compared",
        objs.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(rewritten >= 80, "only {rewritten} rewrites checked");
}
