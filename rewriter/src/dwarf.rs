//! Source lines from DWARF (gimli), for `--list`, the manifest and errors.
//!
//! In a relocatable BPF object every code section starts at address 0, and a
//! line program's `DW_LNE_set_address` operand is only made meaningful by its
//! relocation against the code section's symbol. We apply those relocations
//! ourselves, encoding the section index in the high half of the address, so
//! each row says which section it describes.

use crate::elf::{Elf, R_BPF_64_ABS64};
use gimli::{EndianSlice, LittleEndian, SectionId};
use std::collections::HashMap;

/// Per code section: (byte offset, "file:line"), sorted by offset.
#[derive(Debug, Default)]
pub struct Lines {
    by_section: HashMap<usize, Vec<(u64, String)>>,
}

impl Lines {
    /// Reads `.debug_line` (and the string sections it names); `None` when
    /// the object has no DWARF or it cannot be read.
    pub fn parse(elf: &Elf) -> Option<Lines> {
        let li = elf.section_index(".debug_line")?;
        let mut line = elf.sections[li].data.clone();
        if let Some(r) = elf.rel_section_for(li) {
            for rel in elf.relocations(r).ok()? {
                if rel.rtype != R_BPF_64_ABS64 {
                    continue;
                }
                let o = rel.offset as usize;
                let sym = elf.symbols.get(rel.sym as usize)?;
                let field = line.get_mut(o..o.checked_add(8)?)?;
                let inplace = u64::from_le_bytes(field.try_into().ok()?);
                let v =
                    ((sym.shndx as u64) << 32) | (sym.value.wrapping_add(inplace) & 0xffff_ffff);
                field.copy_from_slice(&v.to_le_bytes());
            }
        }
        let data = |id: SectionId| -> &[u8] {
            if id == SectionId::DebugLine {
                return &[];
            }
            elf.section_index(id.name())
                .map(|i| elf.sections[i].data.as_slice())
                .unwrap_or(&[])
        };
        let owned: HashMap<SectionId, Vec<u8>> = [SectionId::DebugLine]
            .into_iter()
            .map(|id| (id, line.clone()))
            .collect();
        let dwarf = gimli::Dwarf::load(
            |id| -> Result<EndianSlice<'_, LittleEndian>, gimli::Error> {
                let b = owned
                    .get(&id)
                    .map(|v| v.as_slice())
                    .unwrap_or_else(|| data(id));
                Ok(EndianSlice::new(b, LittleEndian))
            },
        )
        .ok()?;
        let mut out = Lines::default();
        let mut units = dwarf.units();
        while let Ok(Some(h)) = units.next() {
            let Ok(unit) = dwarf.unit(h) else { continue };
            let Some(prog) = unit.line_program.clone() else {
                continue;
            };
            let mut rows = prog.rows();
            while let Ok(Some((header, row))) = rows.next_row() {
                let Some(l) = row.line() else { continue };
                let file = row
                    .file(header)
                    .and_then(|f| dwarf.attr_string(&unit, f.path_name()).ok())
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let short = file.rsplit('/').next().unwrap_or(&file).to_string();
                let a = row.address();
                out.by_section
                    .entry((a >> 32) as usize)
                    .or_default()
                    .push((a & 0xffff_ffff, format!("{short}:{l}")));
            }
        }
        for v in out.by_section.values_mut() {
            v.sort_by_key(|(o, _)| *o);
        }
        (!out.by_section.is_empty()).then_some(out)
    }

    /// `file:line` of the last row at or before `offset` in section `sec`.
    pub fn line_of(&self, sec: usize, offset: u64) -> Option<String> {
        let v = self.by_section.get(&sec)?;
        let k = v.partition_point(|(o, _)| *o <= offset);
        Some(v.get(k.checked_sub(1)?)?.1.clone())
    }
}
