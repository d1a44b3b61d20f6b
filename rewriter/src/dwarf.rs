//! Source lines from DWARF (gimli), for `--list`, the manifest and errors;
//! and the input's DWARF carried over to the output with its addresses
//! moved with the code ([`remap`], gimli's write side).
//!
//! In a relocatable BPF object every code section starts at address 0, and a
//! line program's `DW_LNE_set_address` operand is only made meaningful by its
//! relocation against the code section's symbol. We apply those relocations
//! ourselves, encoding the section index in the high half of the address, so
//! each row says which section it describes.

use crate::elf::{Elf, Rel, R_BPF_64_ABS32, R_BPF_64_ABS64};
use crate::patch::AddressMap;
use gimli::write::{Address, ConvertLineRow};
use gimli::{EndianSlice, LittleEndian, SectionId};
use std::collections::HashMap;

/// One row of a line table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Byte offset in its section.
    pub offset: u64,
    /// The file as the line table names it (with its directory when
    /// relative to one).
    pub file: String,
    pub line: u64,
    pub column: u64,
}

/// Per code section: the line table's rows, sorted by offset.
#[derive(Debug, Default)]
pub struct Lines {
    by_section: HashMap<usize, Vec<Row>>,
}

/// Every `.debug_*` section's bytes with its 64-bit relocations applied
/// (LLVM's `R_BPF_64_ABS64`, binutils' `R_BPF_DATA_64`):
/// an address in a code or data section becomes `(section index << 32) |
/// offset`, so each address says which section it is in (every section
/// starts at 0 in a relocatable object). Offsets between debug sections
/// (32-bit, against section symbols of value 0) are already in place.
fn relocated(elf: &Elf) -> HashMap<String, Vec<u8>> {
    // gcc 12's assembler (binutils 2.40) writes its own numbering for data
    // relocations: 11 for 32 bits, 12 for 64 (LLVM's are 3 and 2). The
    // output uses LLVM's, which LLVM's tools apply.
    const R_BPF_DATA_64_BINUTILS: u32 = 12;
    let mut out = HashMap::new();
    for (i, s) in elf.sections.iter().enumerate() {
        if !s.name.starts_with(".debug_") {
            continue;
        }
        let mut data = s.data.clone();
        if let Some(r) = elf.rel_section_for(i) {
            for rel in elf.relocations(r).unwrap_or_default() {
                if rel.rtype != R_BPF_64_ABS64 && rel.rtype != R_BPF_DATA_64_BINUTILS {
                    continue;
                }
                let Some(sym) = elf.symbols.get(rel.sym as usize) else {
                    continue;
                };
                let o = rel.offset as usize;
                let Some(field) = o.checked_add(8).and_then(|e| data.get_mut(o..e)) else {
                    continue;
                };
                let inplace = u64::from_le_bytes(field.try_into().expect("8 bytes"));
                let target = elf.sections.get(sym.shndx as usize);
                let v = sym.value.wrapping_add(inplace);
                let v = match target {
                    Some(t) if sym.shndx != 0 && !t.name.starts_with(".debug_") => {
                        ((sym.shndx as u64) << 32) | (v & 0xffff_ffff)
                    }
                    _ => v,
                };
                field.copy_from_slice(&v.to_le_bytes());
            }
        }
        out.insert(s.name.clone(), data);
    }
    out
}

fn load(
    sections: &HashMap<String, Vec<u8>>,
) -> gimli::Result<gimli::Dwarf<EndianSlice<'_, LittleEndian>>> {
    gimli::Dwarf::load(|id: SectionId| -> gimli::Result<_> {
        let b = sections.get(id.name()).map(|v| v.as_slice()).unwrap_or(&[]);
        Ok(EndianSlice::new(b, LittleEndian))
    })
}

impl Lines {
    /// Reads `.debug_line` (and the string sections it names); `None` when
    /// the object has no DWARF or it cannot be read.
    pub fn parse(elf: &Elf) -> Option<Lines> {
        elf.section_index(".debug_line")?;
        let sections = relocated(elf);
        let dwarf = load(&sections).ok()?;
        let mut out = Lines::default();
        let mut units = dwarf.units();
        while let Ok(Some(h)) = units.next() {
            let Ok(unit) = dwarf.unit(h) else { continue };
            let Some(prog) = unit.line_program.clone() else {
                continue;
            };
            let mut rows = prog.rows();
            while let Ok(Some((header, row))) = rows.next_row() {
                // An end_sequence row is the address past the sequence.
                let Some(l) = row.line().filter(|_| !row.end_sequence()) else {
                    continue;
                };
                let string = |v| {
                    dwarf
                        .attr_string(&unit, v)
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default()
                };
                let file = row
                    .file(header)
                    .map(|f| {
                        let name = string(f.path_name());
                        let dir = f.directory(header).map(string).unwrap_or_default();
                        if name.starts_with('/') || dir.is_empty() {
                            name
                        } else {
                            format!("{dir}/{name}")
                        }
                    })
                    .unwrap_or_default();
                let a = row.address();
                let column = match row.column() {
                    gimli::ColumnType::LeftEdge => 0,
                    gimli::ColumnType::Column(c) => c.get(),
                };
                out.by_section
                    .entry((a >> 32) as usize)
                    .or_default()
                    .push(Row {
                        offset: a & 0xffff_ffff,
                        file,
                        line: l.get(),
                        column,
                    });
            }
        }
        for v in out.by_section.values_mut() {
            v.sort_by_key(|r| r.offset);
        }
        (!out.by_section.is_empty()).then_some(out)
    }

    /// The rows of section `sec`, sorted by offset.
    pub fn rows(&self, sec: usize) -> &[Row] {
        self.by_section.get(&sec).map_or(&[], |v| v.as_slice())
    }

    /// `file:line` of the last row at or before `offset` in section `sec`.
    pub fn line_of(&self, sec: usize, offset: u64) -> Option<String> {
        let v = self.by_section.get(&sec)?;
        let k = v.partition_point(|r| r.offset <= offset);
        let r = v.get(k.checked_sub(1)?)?;
        let short = r.file.rsplit('/').next().unwrap_or(&r.file);
        Some(format!("{short}:{}", r.line))
    }
}

/// Writes `.debug_*` sections, recording an ELF relocation for every
/// address against a symbol (REL: the addend stays in place).
#[derive(Clone, Debug)]
struct RelocWriter {
    w: gimli::write::EndianVec<LittleEndian>,
    /// (offset, symbol index, size in bytes)
    relocs: Vec<(u64, usize, u8)>,
}

impl Default for RelocWriter {
    fn default() -> Self {
        RelocWriter {
            w: gimli::write::EndianVec::new(LittleEndian),
            relocs: Vec::new(),
        }
    }
}

impl gimli::write::Writer for RelocWriter {
    type Endian = LittleEndian;
    fn endian(&self) -> LittleEndian {
        LittleEndian
    }
    fn len(&self) -> usize {
        self.w.len()
    }
    fn write(&mut self, bytes: &[u8]) -> gimli::write::Result<()> {
        self.w.write(bytes)
    }
    fn write_at(&mut self, offset: usize, bytes: &[u8]) -> gimli::write::Result<()> {
        self.w.write_at(offset, bytes)
    }
    fn write_address(&mut self, address: Address, size: u8) -> gimli::write::Result<()> {
        match address {
            Address::Constant(v) => self.w.write_udata(v, size),
            Address::Symbol { symbol, addend } => {
                self.relocs.push((self.w.len() as u64, symbol, size));
                self.w.write_udata(addend as u64, size)
            }
        }
    }
}

/// Where the input's DWARF addresses go in the output: through the patch
/// stage's map for code, unchanged for data, each against the output's
/// symbol of its section.
struct Mover<'a> {
    input: &'a Elf,
    /// Input section index -> (output symbol, its value, output slot map).
    secs: HashMap<usize, (usize, u64, Option<&'a Vec<usize>>)>,
}

impl Mover<'_> {
    fn new<'a>(input: &'a Elf, out: &Elf, map: &'a AddressMap) -> Mover<'a> {
        let mut secs = HashMap::new();
        for (i, s) in input.sections.iter().enumerate().skip(1) {
            let Some(oi) = out.section_index(&s.name) else {
                continue;
            };
            // The section's symbol, else its lowest symbol (the linker
            // writes no section symbol for some data sections, e.g. .maps).
            let in_sec = |y: &&crate::elf::Symbol| y.shndx as usize == oi;
            let Some(sym) = out
                .symbols
                .iter()
                .position(|y| y.is_section() && y.shndx as usize == oi)
                .or_else(|| {
                    let low = out.symbols.iter().filter(in_sec).map(|y| y.value).min()?;
                    out.symbols
                        .iter()
                        .position(|y| y.shndx as usize == oi && y.value == low)
                })
            else {
                continue;
            };
            secs.insert(
                i,
                (sym, out.symbols[sym].value, map.get(&oi).map(|m| &m.target)),
            );
        }
        Mover { input, secs }
    }

    /// A tagged input address (see [`relocated`]) in the output's space,
    /// tagged the same way.
    fn moved(&self, a: u64) -> u64 {
        let (sec, off) = ((a >> 32) as usize, a & 0xffff_ffff);
        let Some((_, _, Some(m))) = self.secs.get(&sec) else {
            return a;
        };
        let exec = self.input.sections[sec].is_exec();
        if !exec || m.is_empty() {
            return a;
        }
        // Control arriving at an old instruction lands on the code inserted
        // before it, so that code is attributed to it; past the end, the end.
        let slot = ((off / 8) as usize).min(m.len() - 1);
        let rest = if (off / 8) as usize == slot {
            off % 8
        } else {
            0
        };
        ((sec as u64) << 32) | (m[slot] as u64 * 8 + rest)
    }

    fn address(&self, a: u64) -> Option<Address> {
        let sec = (a >> 32) as usize;
        if sec == 0 {
            return Some(Address::Constant(a));
        }
        let Some((sym, base, _)) = self.secs.get(&sec) else {
            // A section the output lacks (not code: code is never dropped).
            return Some(Address::Constant(a & 0xffff_ffff));
        };
        Some(Address::Symbol {
            symbol: *sym,
            addend: (self.moved(a) & 0xffff_ffff) as i64 - *base as i64,
        })
    }

    /// The length of `[a, a + len)` once moved.
    fn length(&self, a: u64, len: u64) -> u64 {
        self.moved(a.wrapping_add(len)).wrapping_sub(self.moved(a))
    }
}

type Reader<'a> = EndianSlice<'a, LittleEndian>;

fn convert_entry<'r>(
    unit: &mut gimli::write::ConvertUnit<'_, Reader<'r>>,
    id: gimli::write::UnitEntryId,
    entry: &gimli::write::ConvertUnitEntry<'_, Reader<'r>>,
    mv: &Mover<'_>,
) -> Result<(), gimli::write::ConvertError> {
    use gimli::write::{AttributeValue as W, Location, LocationList, Range, RangeList};
    let conv = |a: u64| mv.address(a);
    let ru = entry.read_unit;
    let low = entry
        .attrs
        .iter()
        .find(|a| a.name() == gimli::DW_AT_low_pc)
        .and_then(|a| ru.attr_address(a.value()).ok().flatten());
    for attr in &entry.attrs {
        let name = attr.name();
        if name == gimli::DW_AT_GNU_locviews {
            continue; // unsupported by gimli's writer; safe to drop
        }
        let value = match attr.value() {
            // A length from low_pc: its end moves too.
            v if name == gimli::DW_AT_high_pc
                && low.is_some()
                && !matches!(
                    v,
                    gimli::AttributeValue::Addr(_) | gimli::AttributeValue::DebugAddrIndex(_)
                ) =>
            {
                let len = attr
                    .udata_value()
                    .ok_or(gimli::write::ConvertError::InvalidAttributeValue)?;
                W::Udata(mv.length(low.unwrap_or(0), len))
            }
            // Ranges and location lists, read absolute and written
            // start-end: offsets from a base would not move with the code.
            v @ (gimli::AttributeValue::RangeListsRef(_)
            | gimli::AttributeValue::DebugRngListsIndex(_)) => {
                let Some(off) = ru.attr_ranges_offset(v)? else {
                    continue;
                };
                let mut it = ru.ranges(off)?;
                let mut list = Vec::new();
                while let Some(r) = it.next()? {
                    list.push(Range::StartEnd {
                        begin: conv(r.begin).ok_or(gimli::write::ConvertError::InvalidAddress)?,
                        end: conv(r.end).ok_or(gimli::write::ConvertError::InvalidAddress)?,
                    });
                }
                W::RangeListRef(unit.unit.ranges.add(RangeList(list)))
            }
            v @ (gimli::AttributeValue::LocationListsRef(_)
            | gimli::AttributeValue::DebugLocListsIndex(_)) => {
                let Some(off) = ru.attr_locations_offset(v)? else {
                    continue;
                };
                let mut it = ru.locations(off)?;
                let mut list = Vec::new();
                while let Some(l) = it.next()? {
                    list.push(Location::StartEnd {
                        begin: conv(l.range.begin)
                            .ok_or(gimli::write::ConvertError::InvalidAddress)?,
                        end: conv(l.range.end).ok_or(gimli::write::ConvertError::InvalidAddress)?,
                        data: unit.convert_expression(ru, l.data, &conv)?,
                    });
                }
                W::LocationListRef(unit.unit.locations.add(LocationList(list)))
            }
            _ => unit.convert_attribute_value(ru, attr, &conv)?,
        };
        unit.unit.get_mut(id).set(name, value);
    }
    Ok(())
}

/// The input's DWARF, converted (gimli's write side) with every code address
/// moved the way the patch stage moved the code, and added to `out` with its
/// relocations. `.debug_frame` and `.debug_aranges` are not carried over
/// (nothing reads CFI of BPF code; aranges are optional). Returns false
/// when the input has no DWARF; an error says why it could not be kept.
pub fn remap(input: &Elf, out: &mut Elf, map: &AddressMap) -> Result<bool, String> {
    if input.section_index(".debug_info").is_none() {
        return Ok(false);
    }
    let sections = relocated(input);
    let from = load(&sections).map_err(|e| format!("reading DWARF: {e}"))?;
    let mv = Mover::new(input, out, map);
    let mut dwarf = gimli::write::Dwarf::new();
    let conv_err = |e: gimli::write::ConvertError| format!("converting DWARF: {e}");
    {
        let mut units = dwarf.convert(&from).map_err(conv_err)?;
        while let Some((mut unit, root)) = units.read_unit().map_err(conv_err)? {
            // gimli's default line encoding: the program is re-encoded
            // anyway, and gcc's own (line_base + line_range <= 0) is one
            // gimli's writer refuses.
            let enc = Some(gimli::LineEncoding::default());
            // Row addresses come from gimli's reader (absolute, relocated)
            // beside the converter's rows (same rows, same order): the
            // converter reports an address set right before an
            // end_sequence (gcc writes one) nowhere.
            let mut abs = unit.read_unit.line_program.clone().map(|p| p.rows());
            if let Some(mut lp) = unit.read_line_program(None, enc).map_err(conv_err)? {
                let mut next_abs = || -> Result<u64, String> {
                    let rows = abs.as_mut().ok_or("no line program")?;
                    match rows.next_row() {
                        Ok(Some((_, r))) => Ok(r.address()),
                        _ => Err("line program rows out of step".into()),
                    }
                };
                let mut start: Option<u64> = None;
                while let Some(row) = lp.read_row().map_err(conv_err)? {
                    match row {
                        ConvertLineRow::SetAddress(_) => {}
                        ConvertLineRow::Row(mut r) => {
                            let a = next_abs()?;
                            let s = match start {
                                Some(s) => s,
                                None => {
                                    let na = mv
                                        .address(a)
                                        .ok_or_else(|| format!("line program address {a:#x}"))?;
                                    lp.set_address(na);
                                    *start.insert(mv.moved(a))
                                }
                            };
                            r.address_offset = mv.moved(a).wrapping_sub(s);
                            lp.generate_row(r);
                        }
                        ConvertLineRow::EndSequence(_) => {
                            let a = next_abs()?;
                            let s = start.take().unwrap_or_else(|| mv.moved(a));
                            lp.end_sequence(mv.moved(a).wrapping_sub(s));
                        }
                    }
                }
                let (program, files) = lp.program();
                unit.set_line_program(program, files);
            }
            let root_id = unit.unit.root();
            convert_entry(&mut unit, root_id, &root, &mv).map_err(conv_err)?;
            let mut entry = root;
            while let Some(id) = unit.read_entry(&mut entry).map_err(conv_err)? {
                let Some(id) = id else { continue };
                let id = unit.add_entry(Some(id), &entry);
                convert_entry(&mut unit, id, &entry, &mv).map_err(conv_err)?;
            }
        }
    }
    let mut sections = gimli::write::Sections::new(RelocWriter::default());
    dwarf
        .write(&mut sections)
        .map_err(|e| format!("writing DWARF: {e}"))?;
    let mut written = Vec::new();
    sections
        .for_each(|id, w| -> Result<(), ()> {
            if !w.w.slice().is_empty() {
                written.push((id.name(), w.w.slice().to_vec(), w.relocs.clone()));
            }
            Ok(())
        })
        .ok();
    for (name, data, relocs) in written {
        out.add_note_section(name, data)
            .map_err(|e| e.to_string())?;
        if relocs.is_empty() {
            continue;
        }
        let idx = out.sections.len() - 1;
        let r = out.add_rel_section(idx).map_err(|e| e.to_string())?;
        let rels: Vec<Rel> = relocs
            .into_iter()
            .map(|(offset, sym, size)| Rel {
                offset,
                sym: sym as u32,
                rtype: if size == 8 {
                    R_BPF_64_ABS64
                } else {
                    R_BPF_64_ABS32
                },
                addend: 0,
            })
            .collect();
        out.set_relocations(r, &rels);
    }
    Ok(true)
}
