//! A minimal, faithful reader/writer for relocatable BPF ELF objects.
//!
//! `object` parses and bounds-checks the headers; we keep every section's
//! bytes as they are and write them back in the same order, so a rewrite
//! that changes nothing gives back every section byte for byte. (`object`'s
//! `build::elf::Builder` regenerates string and symbol tables, which breaks
//! that identity; see the README.)

use crate::error::{Error, Loc, Result};
use object::elf as oelf;
use object::read::elf::{FileHeader, SectionHeader};
use object::LittleEndian as LE;

pub const EM_BPF: u16 = 247;
const STB_GLOBAL: u8 = 1;
pub const R_BPF_64_64: u32 = 1;
pub const R_BPF_64_ABS64: u32 = 2;
pub const R_BPF_64_ABS32: u32 = 3;
pub const R_BPF_64_NODYLD32: u32 = 4;
pub const R_BPF_64_32: u32 = 10;
pub const SHT_LLVM_ADDRSIG: u32 = 0x6fff_4c03;

/// Raw ELF constants (object 0.40 wraps them in newtypes; we keep raw values).
mod raw {
    pub const ET_REL: u16 = 1;
    pub const SHT_PROGBITS: u32 = 1;
    pub const SHT_SYMTAB: u32 = 2;
    pub const SHT_RELA: u32 = 4;
    pub const SHT_NOBITS: u32 = 8;
    pub const SHT_REL: u32 = 9;
    pub const SHF_EXECINSTR: u32 = 4;
    pub const SHF_INFO_LINK: u32 = 0x40;
    pub const STT_FUNC: u8 = 2;
    pub const STT_SECTION: u8 = 3;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub name_off: u32,
    pub sh_type: u32,
    pub flags: u64,
    pub link: u32,
    pub info: u32,
    pub align: u64,
    pub entsize: u64,
    pub data: Vec<u8>,
    /// Size of a NOBITS section (.bss), which has no bytes in the file.
    pub nobits_size: Option<u64>,
}

impl Section {
    pub fn is_exec(&self) -> bool {
        self.sh_type == raw::SHT_PROGBITS && self.flags & raw::SHF_EXECINSTR as u64 != 0
    }
    pub fn is_rel(&self) -> bool {
        self.sh_type == raw::SHT_REL || self.sh_type == raw::SHT_RELA
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub name_off: u32,
    pub info: u8,
    pub other: u8,
    pub shndx: u16,
    pub value: u64,
    pub size: u64,
}

impl Symbol {
    pub fn kind(&self) -> u8 {
        self.info & 0xf
    }
    pub fn bind(&self) -> u8 {
        self.info >> 4
    }
    pub fn is_func(&self) -> bool {
        self.kind() == raw::STT_FUNC
    }
    pub fn is_section(&self) -> bool {
        self.kind() == raw::STT_SECTION
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rel {
    pub offset: u64,
    pub sym: u32,
    pub rtype: u32,
    pub addend: i64,
}

/// A parsed object: sections in file order, and the symbol table decoded.
#[derive(Clone, Debug)]
pub struct Elf {
    pub ehdr: Vec<u8>,
    pub sections: Vec<Section>,
    pub symtab: Option<usize>,
    pub symbols: Vec<Symbol>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

impl Elf {
    pub fn parse(data: &[u8]) -> Result<Elf> {
        if data.len() < 4 || &data[..4] != b"\x7fELF" {
            return Err(Error::NotElf("no ELF magic at offset 0".into()));
        }
        if data.len() < 64 || data[4] != 2 {
            return Err(Error::Layout(
                "not a 64-bit ELF (BPF objects are ELF64)".into(),
            ));
        }
        if data[5] != 1 {
            return Err(Error::Layout(
                "big-endian ELF: only little-endian BPF is supported".into(),
            ));
        }
        let hdr = oelf::FileHeader64::<LE>::parse(data)
            .map_err(|e| Error::NotElf(format!("bad ELF header: {e}")))?;
        let machine = hdr.e_machine(LE).0;
        if machine != EM_BPF {
            return Err(Error::NotBpf(machine));
        }
        let etype = hdr.e_type(LE).0;
        if etype != raw::ET_REL {
            return Err(Error::NotRelocatable(etype));
        }
        let table = hdr.sections(LE, data).map_err(|e| {
            Error::malformed(format!("section headers: {e}"), Loc::sec("<headers>"))
        })?;
        let mut sections = Vec::new();
        for (i, sh) in table.iter().enumerate() {
            let name = table
                .section_name(LE, sh)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .map_err(|e| {
                    Error::malformed(format!("section #{i} name: {e}"), Loc::sec("<headers>"))
                })?;
            let bytes = if sh.sh_type(LE).0 == raw::SHT_NOBITS {
                Vec::new()
            } else {
                sh.data(LE, data)
                    .map_err(|_| {
                        Error::malformed(
                            format!(
                                "section data out of bounds (offset {:#x}, size {:#x}, file {:#x} bytes): truncated file?",
                                sh.sh_offset(LE),
                                sh.sh_size(LE),
                                data.len()
                            ),
                            Loc::sec(&name),
                        )
                    })?
                    .to_vec()
            };
            sections.push(Section {
                name,
                name_off: sh.sh_name(LE),
                sh_type: sh.sh_type(LE).0,
                flags: sh.sh_flags(LE).0,
                link: sh.sh_link(LE),
                info: sh.sh_info(LE),
                align: sh.sh_addralign(LE),
                entsize: sh.sh_entsize(LE),
                data: bytes,
                nobits_size: (sh.sh_type(LE).0 == raw::SHT_NOBITS).then(|| sh.sh_size(LE)),
            });
        }
        let mut out = Elf {
            ehdr: data[..64].to_vec(),
            sections,
            symtab: None,
            symbols: Vec::new(),
        };
        out.symtab = out
            .sections
            .iter()
            .position(|s| s.sh_type == raw::SHT_SYMTAB);
        if let Some(st) = out.symtab {
            out.symbols = out.parse_symbols(st)?;
        }
        out.validate_exec_sections()?;
        out.validate_symbols()?;
        Ok(out)
    }

    fn parse_symbols(&self, st: usize) -> Result<Vec<Symbol>> {
        let s = &self.sections[st];
        if !s.data.len().is_multiple_of(24) {
            return Err(Error::malformed(
                "symbol table size is not a multiple of 24",
                Loc::sec(&s.name),
            ));
        }
        let strtab = self.sections.get(s.link as usize).ok_or_else(|| {
            Error::malformed(
                "symbol table links to a missing string table",
                Loc::sec(&s.name),
            )
        })?;
        let mut syms = Vec::new();
        for (i, e) in s.data.chunks_exact(24).enumerate() {
            let name_off = u32_at(e, 0);
            let name = cstr(&strtab.data, name_off as usize).ok_or_else(|| {
                Error::malformed(
                    format!("symbol #{i} name offset {name_off:#x} out of bounds"),
                    Loc::sec(&s.name),
                )
            })?;
            let shndx = u16::from_le_bytes([e[6], e[7]]);
            if shndx != 0 && (shndx as usize) < 0xff00 && shndx as usize >= self.sections.len() {
                return Err(Error::malformed(
                    format!("symbol '{name}' in missing section #{shndx}"),
                    Loc::sec(&s.name),
                ));
            }
            syms.push(Symbol {
                name,
                name_off,
                info: e[4],
                other: e[5],
                shndx,
                value: u64_at(e, 8),
                size: u64_at(e, 16),
            });
        }
        Ok(syms)
    }

    /// Symbols in code sections must lie inside them, on instructions: the
    /// rewrite moves them by instruction index.
    fn validate_symbols(&self) -> Result<()> {
        for y in &self.symbols {
            let Some(sec) = self
                .sections
                .get(y.shndx as usize)
                .filter(|s| s.is_exec() && y.shndx != 0)
            else {
                continue;
            };
            let end = y.value.checked_add(y.size);
            if y.value % 8 != 0 || y.size % 8 != 0 || end.is_none_or(|e| e > sec.data.len() as u64)
            {
                return Err(Error::malformed(
                    format!("symbol '{}' (value {:#x}, size {:#x}) is not on an instruction of its section", y.name, y.value, y.size),
                    Loc::at(&sec.name, y.value),
                ));
            }
        }
        Ok(())
    }

    fn validate_exec_sections(&self) -> Result<()> {
        if self.sections.len() < 2 {
            return Err(Error::malformed(
                "no section headers",
                Loc::sec("<headers>"),
            ));
        }
        for s in &self.sections {
            // Real objects align to at most a page; more is a corrupt header.
            if s.align > 4096 || (s.align > 1 && !s.align.is_power_of_two()) {
                return Err(Error::malformed(
                    format!("alignment {:#x}", s.align),
                    Loc::sec(&s.name),
                ));
            }
        }
        // Relocations of code must patch whole instructions inside the section,
        // through symbols that exist: checked before libbpf's linker sees them.
        for (ri, r) in self.sections.iter().enumerate().filter(|(_, r)| r.is_rel()) {
            let Some(t) = self.sections.get(r.info as usize).filter(|t| t.is_exec()) else {
                continue;
            };
            for (k, rel) in self.relocations(ri)?.iter().enumerate() {
                let bad = |what: &str| Error::BadRelocation {
                    index: k,
                    rtype: rel.rtype,
                    what: what.into(),
                    loc: Loc::at(&t.name, rel.offset),
                };
                if rel.offset % 8 != 0
                    || rel
                        .offset
                        .checked_add(8)
                        .is_none_or(|e| e > t.data.len() as u64)
                {
                    return Err(bad("offset is not an instruction of the section"));
                }
                if rel.sym as usize >= self.symbols.len().max(1) {
                    return Err(bad("symbol index out of range"));
                }
                if !matches!(
                    rel.rtype,
                    R_BPF_64_64 | R_BPF_64_32 | R_BPF_64_ABS64 | R_BPF_64_ABS32 | R_BPF_64_NODYLD32
                ) {
                    return Err(bad("unknown relocation type"));
                }
            }
        }
        for s in self.sections.iter().filter(|s| s.is_exec()) {
            if s.data.len() % 8 != 0 {
                return Err(Error::malformed(
                    format!("code size {:#x} is not a multiple of 8", s.data.len()),
                    Loc::sec(&s.name),
                ));
            }
        }
        Ok(())
    }

    pub fn section_index(&self, name: &str) -> Option<usize> {
        self.sections.iter().position(|s| s.name == name)
    }

    /// The relocation section that applies to section `target`, if any.
    pub fn rel_section_for(&self, target: usize) -> Option<usize> {
        self.sections
            .iter()
            .position(|s| s.is_rel() && s.info as usize == target)
    }

    pub fn relocations(&self, rel_idx: usize) -> Result<Vec<Rel>> {
        let s = &self.sections[rel_idx];
        let rela = s.sh_type == raw::SHT_RELA;
        let esz = if rela { 24 } else { 16 };
        if !s.data.len().is_multiple_of(esz) {
            return Err(Error::malformed(
                "relocation section size is not a multiple of its entry size",
                Loc::sec(&s.name),
            ));
        }
        Ok(s.data
            .chunks_exact(esz)
            .map(|e| {
                let info = u64_at(e, 8);
                Rel {
                    offset: u64_at(e, 0),
                    sym: (info >> 32) as u32,
                    rtype: info as u32,
                    addend: if rela { u64_at(e, 16) as i64 } else { 0 },
                }
            })
            .collect())
    }

    pub fn set_relocations(&mut self, rel_idx: usize, rels: &[Rel]) {
        let rela = self.sections[rel_idx].sh_type == raw::SHT_RELA;
        let mut out = Vec::with_capacity(rels.len() * 24);
        for r in rels {
            out.extend_from_slice(&r.offset.to_le_bytes());
            out.extend_from_slice(&(((r.sym as u64) << 32) | r.rtype as u64).to_le_bytes());
            if rela {
                out.extend_from_slice(&r.addend.to_le_bytes());
            }
        }
        self.sections[rel_idx].data = out;
    }

    /// Appends a global function symbol (after every local one, so no
    /// relocation's symbol index moves); [`Elf::store_symbols`] writes it.
    pub fn add_func_symbol(
        &mut self,
        name: &str,
        shndx: usize,
        value: u64,
        size: u64,
    ) -> Result<usize> {
        let st = self
            .symtab
            .ok_or_else(|| Error::Layout("no .symtab to add a symbol to".into()))?;
        let strtab = self.sections[st].link as usize;
        let strs = &mut self
            .sections
            .get_mut(strtab)
            .ok_or_else(|| Error::Layout(".symtab links no string table".into()))?
            .data;
        let name_off = strs.len() as u32;
        strs.extend_from_slice(name.as_bytes());
        strs.push(0);
        self.symbols.push(Symbol {
            name: name.to_string(),
            name_off,
            info: (STB_GLOBAL << 4) | raw::STT_FUNC,
            other: 0,
            shndx: shndx as u16,
            value,
            size,
        });
        Ok(self.symbols.len() - 1)
    }

    /// Writes the symbols back into `.symtab` (same order, same names).
    pub fn store_symbols(&mut self) {
        let Some(st) = self.symtab else { return };
        let mut out = Vec::with_capacity(self.symbols.len() * 24);
        for s in &self.symbols {
            out.extend_from_slice(&s.name_off.to_le_bytes());
            out.push(s.info);
            out.push(s.other);
            out.extend_from_slice(&s.shndx.to_le_bytes());
            out.extend_from_slice(&s.value.to_le_bytes());
            out.extend_from_slice(&s.size.to_le_bytes());
        }
        self.sections[st].data = out;
    }

    /// Adds a non-allocated section (libbpf and the kernel skip it).
    pub fn add_note_section(&mut self, name: &str, data: Vec<u8>) -> Result<()> {
        let shstrndx = u16::from_le_bytes([self.ehdr[62], self.ehdr[63]]) as usize;
        let strs = self
            .sections
            .get_mut(shstrndx)
            .ok_or_else(|| Error::Layout("no section name string table".into()))?;
        let name_off = strs.data.len() as u32;
        strs.data.extend_from_slice(name.as_bytes());
        strs.data.push(0);
        self.sections.push(Section {
            name: name.to_string(),
            name_off,
            sh_type: raw::SHT_PROGBITS,
            flags: 0,
            link: 0,
            info: 0,
            align: 1,
            entsize: 0,
            data,
            nobits_size: None,
        });
        Ok(())
    }

    /// Adds an empty `.rel<name>` for code section `target`.
    pub fn add_rel_section(&mut self, target: usize) -> Result<usize> {
        let symtab = self
            .symtab
            .ok_or_else(|| Error::Layout("no symbol table to relocate against".into()))?;
        let name = format!(".rel{}", self.sections[target].name);
        self.add_note_section(&name, Vec::new())?;
        let s = self.sections.last_mut().expect("just added");
        s.sh_type = raw::SHT_REL;
        s.flags = raw::SHF_INFO_LINK as u64;
        s.link = symtab as u32;
        s.info = target as u32;
        s.align = 8;
        s.entsize = 16;
        Ok(self.sections.len() - 1)
    }

    pub fn write(&self) -> Vec<u8> {
        let mut out = self.ehdr.clone();
        let mut offsets = Vec::with_capacity(self.sections.len());
        for (i, s) in self.sections.iter().enumerate() {
            if i == 0 || s.sh_type == raw::SHT_NOBITS {
                offsets.push(if i == 0 { 0 } else { out.len() as u64 });
                continue;
            }
            let a = s.align.max(1) as usize;
            while !out.len().is_multiple_of(a) {
                out.push(0);
            }
            offsets.push(out.len() as u64);
            out.extend_from_slice(&s.data);
        }
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        for (i, s) in self.sections.iter().enumerate() {
            let size = s.nobits_size.unwrap_or(s.data.len() as u64);
            let (name, ty, flags, link, info, align, entsize) = if i == 0 {
                (0, 0, 0, 0, 0, 0, 0)
            } else {
                (
                    s.name_off, s.sh_type, s.flags, s.link, s.info, s.align, s.entsize,
                )
            };
            out.extend_from_slice(&name.to_le_bytes());
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&0u64.to_le_bytes()); // sh_addr
            out.extend_from_slice(&offsets[i].to_le_bytes());
            out.extend_from_slice(&(if i == 0 { 0 } else { size }).to_le_bytes());
            out.extend_from_slice(&link.to_le_bytes());
            out.extend_from_slice(&info.to_le_bytes());
            out.extend_from_slice(&align.to_le_bytes());
            out.extend_from_slice(&entsize.to_le_bytes());
        }
        out[40..48].copy_from_slice(&shoff.to_le_bytes()); // e_shoff
        out[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        out[60..62].copy_from_slice(&(self.sections.len() as u16).to_le_bytes()); // e_shnum
        out
    }
}

pub fn cstr(b: &[u8], off: usize) -> Option<String> {
    let tail = b.get(off..)?;
    let end = tail.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&tail[..end]).into_owned())
}
