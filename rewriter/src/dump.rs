//! A readable listing of an object's code, symbols and relocations: what the
//! snapshot tests store and `inxpect-instrument --dump` prints.

use crate::btf_ext::{BtfExt, Kind};
use crate::elf::{Elf, R_BPF_64_32, R_BPF_64_64};
use crate::error::Result;
use crate::insn::{decode_all, Disasm};
use std::collections::BTreeMap;
use std::fmt::Write;

fn rel_name(t: u32) -> String {
    match t {
        R_BPF_64_64 => "R_BPF_64_64".into(),
        R_BPF_64_32 => "R_BPF_64_32".into(),
        2 => "R_BPF_64_ABS64".into(),
        3 => "R_BPF_64_ABS32".into(),
        4 => "R_BPF_64_NODYLD32".into(),
        t => format!("type{t}"),
    }
}

/// `offsets`: prefix every instruction with its slot number.
pub fn dump(obj: &[u8], offsets: bool) -> Result<String> {
    let elf = Elf::parse(obj)?;
    let ext = match (elf.section_index(".BTF.ext"), elf.section_index(".BTF")) {
        (Some(e), Some(b)) => BtfExt::parse(&elf.sections[e].data, &elf.sections[b].data).ok(),
        _ => None,
    };
    let mut s = String::new();
    for (si, sec) in elf.sections.iter().enumerate().filter(|(_, s)| s.is_exec()) {
        let _ = writeln!(s, "section {} ({} insns)", sec.name, sec.data.len() / 8);
        let mut labels: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        for y in elf
            .symbols
            .iter()
            .filter(|y| y.shndx as usize == si && !y.is_section())
        {
            if y.is_func() || y.name.starts_with("__inxpect_") {
                labels.entry(y.value).or_default().push(&y.name);
            }
        }
        let mut relocs: BTreeMap<u64, String> = BTreeMap::new();
        if let Some(r) = elf.rel_section_for(si) {
            for rel in elf.relocations(r)? {
                let name = elf
                    .symbols
                    .get(rel.sym as usize)
                    .map(|y| y.name.as_str())
                    .unwrap_or("?");
                relocs.insert(rel.offset, format!("{} {name}", rel_name(rel.rtype)));
            }
        }
        let mut lines: BTreeMap<u64, String> = BTreeMap::new();
        if let Some(x) = &ext {
            for r in x
                .records
                .iter()
                .filter(|r| r.kind == Kind::Line && r.section == sec.name)
            {
                if let Some(l) = x.line_of(&sec.name, r.insn_off as u64) {
                    lines.insert(r.insn_off as u64, l);
                }
            }
        }
        let insns = decode_all(&sec.data);
        let mut i = 0;
        while i < insns.len() {
            let off = i as u64 * 8;
            for l in labels.get(&off).into_iter().flatten() {
                let _ = writeln!(s, "{l}:");
            }
            if offsets {
                let _ = write!(s, "{i:5}: ");
            } else {
                s.push_str("    ");
            }
            let next = insns.get(i + 1);
            let _ = write!(
                s,
                "{}",
                Disasm {
                    insn: &insns[i],
                    next
                }
            );
            if let Some(r) = relocs.get(&off) {
                let _ = write!(s, "  ; {r}");
            }
            if let Some(l) = lines.get(&off) {
                let _ = write!(s, "  ; {l}");
            }
            s.push('\n');
            i += if insns[i].is_ld_imm64() { 2 } else { 1 };
        }
        s.push('\n');
    }
    Ok(s)
}
