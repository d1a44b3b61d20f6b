//! `.BTF.ext`: func_info, line_info and CO-RE relocation records.
//!
//! Every record starts with `insn_off`, a byte offset into the code section
//! named by its block. We record where each of those fields lives so a
//! rewrite can change them in place: the record sizes never change.

use crate::elf::cstr;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Func,
    Line,
    CoRe,
}

/// One record's `insn_off` field, and for line_info its source position.
#[derive(Clone, Debug)]
pub struct Record {
    pub kind: Kind,
    pub section: String,
    /// Byte position of the `insn_off` field inside `.BTF.ext`.
    pub field_pos: usize,
    pub insn_off: u32,
    pub file_name_off: u32,
    pub line_col: u32,
}

#[derive(Clone, Debug, Default)]
pub struct BtfExt {
    pub records: Vec<Record>,
    /// The `.BTF` string section, for section and file names.
    pub strings: Vec<u8>,
    /// line_info per section, sorted by `insn_off`: (insn_off, record index).
    lines: std::collections::HashMap<String, Vec<(u32, usize)>>,
}

fn rd32(b: &[u8], o: usize) -> Result<u32> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| Error::BtfExt(format!("truncated at byte {o:#x}")))
}

/// The string table of a `.BTF` section.
pub fn btf_strings(btf: &[u8]) -> Result<Vec<u8>> {
    if btf.len() < 24 || u16::from_le_bytes([btf[0], btf[1]]) != 0xeb9f {
        return Err(Error::BtfExt(".BTF has no valid header".into()));
    }
    let hdr_len = rd32(btf, 4)? as usize;
    let str_off = rd32(btf, 16)? as usize;
    let str_len = rd32(btf, 20)? as usize;
    let start = hdr_len + str_off;
    btf.get(start..start + str_len)
        .map(|s| s.to_vec())
        .ok_or_else(|| Error::BtfExt(".BTF string section out of bounds".into()))
}

impl BtfExt {
    pub fn parse(ext: &[u8], btf: &[u8]) -> Result<BtfExt> {
        let strings = btf_strings(btf)?;
        if ext.len() < 24 || u16::from_le_bytes([ext[0], ext[1]]) != 0xeb9f {
            return Err(Error::BtfExt("no valid header".into()));
        }
        let hdr_len = rd32(ext, 4)? as usize;
        let mut blocks = vec![
            (Kind::Func, rd32(ext, 8)?, rd32(ext, 12)?),
            (Kind::Line, rd32(ext, 16)?, rd32(ext, 20)?),
        ];
        if hdr_len >= 32 {
            blocks.push((Kind::CoRe, rd32(ext, 24)?, rd32(ext, 28)?));
        }
        let mut records = Vec::new();
        for (kind, off, len) in blocks {
            if len == 0 {
                continue;
            }
            let start = hdr_len + off as usize;
            let end = start + len as usize;
            if end > ext.len() {
                return Err(Error::BtfExt(format!(
                    "{kind:?} block [{start:#x}, {end:#x}) out of bounds"
                )));
            }
            let rec_size = rd32(ext, start)? as usize;
            let min = match kind {
                Kind::Func => 8,
                Kind::Line => 16,
                Kind::CoRe => 16,
            };
            if rec_size < min {
                return Err(Error::BtfExt(format!(
                    "{kind:?} record size {rec_size} < {min}"
                )));
            }
            let mut p = start + 4;
            while p < end {
                let sec_off = rd32(ext, p)?;
                let n = rd32(ext, p + 4)? as usize;
                let section = cstr(&strings, sec_off as usize).ok_or_else(|| {
                    Error::BtfExt(format!("section name offset {sec_off:#x} out of bounds"))
                })?;
                p += 8;
                for _ in 0..n {
                    if p + rec_size > end {
                        return Err(Error::BtfExt(format!(
                            "{kind:?} records of {section} overrun their block"
                        )));
                    }
                    let (file_name_off, line_col) = if kind == Kind::Line {
                        (rd32(ext, p + 4)?, rd32(ext, p + 12)?)
                    } else {
                        (0, 0)
                    };
                    records.push(Record {
                        kind,
                        section: section.clone(),
                        field_pos: p,
                        insn_off: rd32(ext, p)?,
                        file_name_off,
                        line_col,
                    });
                    p += rec_size;
                }
            }
        }
        // Line 0 means "no line": answer with the row before, as DWARF readers do.
        let mut lines: std::collections::HashMap<String, Vec<(u32, usize)>> = Default::default();
        for (i, r) in records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == Kind::Line && r.line_col >> 10 != 0)
        {
            lines
                .entry(r.section.clone())
                .or_default()
                .push((r.insn_off, i));
        }
        for v in lines.values_mut() {
            v.sort();
        }
        Ok(BtfExt {
            records,
            strings,
            lines,
        })
    }

    /// `file:line` of the last line_info at or before `insn_off` in `section`.
    pub fn line_of(&self, section: &str, insn_off: u64) -> Option<String> {
        let v = self.lines.get(section)?;
        let k = v.partition_point(|(o, _)| (*o as u64) <= insn_off);
        let r = &self.records[v.get(k.checked_sub(1)?)?.1];
        let file = cstr(&self.strings, r.file_name_off as usize)?;
        let short = file.rsplit('/').next().unwrap_or(&file).to_string();
        Some(format!("{short}:{}", r.line_col >> 10))
    }

    /// Rewrites every `insn_off` through `map(kind, section, old) -> new`.
    pub fn remap(&self, ext: &mut [u8], mut map: impl FnMut(Kind, &str, u32) -> u32) {
        for r in &self.records {
            let new = map(r.kind, &r.section, r.insn_off);
            ext[r.field_pos..r.field_pos + 4].copy_from_slice(&new.to_le_bytes());
        }
    }
}

impl BtfExt {
    /// `.BTF.ext` rebuilt with each record at the offsets `map(kind,
    /// section, old)` gives it (a copied instruction's line and CO-RE
    /// records repeat at the copy), each section's records sorted by
    /// offset as the kernel requires of line_info. The header keeps its
    /// size; the blocks follow it in order.
    pub fn rebuild(
        &self,
        ext: &[u8],
        mut map: impl FnMut(Kind, &str, u32) -> Vec<u32>,
    ) -> Result<Vec<u8>> {
        let hdr_len = rd32(ext, 4)? as usize;
        let fields: &[(Kind, usize)] = if hdr_len >= 32 {
            &[(Kind::Func, 8), (Kind::Line, 16), (Kind::CoRe, 24)]
        } else {
            &[(Kind::Func, 8), (Kind::Line, 16)]
        };
        let mut out = ext
            .get(..hdr_len)
            .ok_or_else(|| Error::BtfExt("truncated header".into()))?
            .to_vec();
        let mut body: Vec<u8> = Vec::new();
        for &(kind, field) in fields {
            let (off, len) = (rd32(ext, field)? as usize, rd32(ext, field + 4)? as usize);
            let at = body.len() as u32;
            if len > 0 {
                let start = hdr_len + off;
                let end = start + len;
                let rec_size = rd32(ext, start)? as usize;
                body.extend_from_slice(&(rec_size as u32).to_le_bytes());
                let mut p = start + 4;
                while p < end {
                    let sec_off = rd32(ext, p)?;
                    let n = rd32(ext, p + 4)? as usize;
                    let section = cstr(&self.strings, sec_off as usize).unwrap_or_default();
                    p += 8;
                    let mut recs: Vec<(u32, &[u8])> = Vec::with_capacity(n);
                    for _ in 0..n {
                        let rec = ext
                            .get(p..p + rec_size)
                            .ok_or_else(|| Error::BtfExt(format!("{kind:?} records overrun")))?;
                        for o in map(kind, &section, rd32(ext, p)?) {
                            recs.push((o, rec));
                        }
                        p += rec_size;
                    }
                    recs.sort_by_key(|r| r.0);
                    body.extend_from_slice(&sec_off.to_le_bytes());
                    body.extend_from_slice(&(recs.len() as u32).to_le_bytes());
                    for (o, rec) in recs {
                        body.extend_from_slice(&o.to_le_bytes());
                        body.extend_from_slice(&rec[4..]);
                    }
                }
            }
            let blen = body.len() as u32 - at;
            out[field..field + 4].copy_from_slice(&at.to_le_bytes());
            out[field + 4..field + 8].copy_from_slice(&blen.to_le_bytes());
        }
        out.extend_from_slice(&body);
        Ok(out)
    }
}

/// Sets the linkage (0 static, 1 global) of the FUNC records named in
/// `names`, in place. Returns how many records changed.
pub fn btf_set_func_linkage(
    btf: &mut [u8],
    names: &std::collections::HashSet<String>,
    linkage: u32,
) -> Result<usize> {
    let strings = btf_strings(btf)?;
    let hdr_len = rd32(btf, 4)? as usize;
    let (type_off, type_len) = (rd32(btf, 8)? as usize, rd32(btf, 12)? as usize);
    let mut p = hdr_len + type_off;
    let end = p + type_len;
    let mut changed = 0;
    while p < end {
        let (name_off, info) = (rd32(btf, p)?, rd32(btf, p + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        if kind == 12
            && vlen as u32 != linkage
            && names.contains(&cstr(&strings, name_off as usize).unwrap_or_default())
        {
            btf[p + 4..p + 8].copy_from_slice(&((info & !0xffff) | linkage).to_le_bytes());
            changed += 1;
        }
        p += 12 + type_extra(kind, vlen, p)?;
    }
    Ok(changed)
}

fn type_extra(kind: u32, vlen: usize, p: usize) -> Result<usize> {
    Ok(match kind {
        1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
        3 => 12,                      // ARRAY
        4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
        // FUNC's vlen is its linkage, not a count.
        2 | 7..=12 | 16 | 18 => 0,
        k => {
            return Err(Error::BtfExt(format!(
                ".BTF: unknown type kind {k} at byte {p:#x}"
            )))
        }
    })
}

/// Names of the FUNC records with global or extern linkage in a `.BTF`
/// section (walks every type record).
pub fn btf_func_names(btf: &[u8]) -> Result<std::collections::HashSet<String>> {
    let strings = btf_strings(btf)?;
    let hdr_len = rd32(btf, 4)? as usize;
    let (type_off, type_len) = (rd32(btf, 8)? as usize, rd32(btf, 12)? as usize);
    let mut p = hdr_len + type_off;
    let end = p + type_len;
    let mut out = std::collections::HashSet::new();
    while p < end {
        let (name_off, info) = (rd32(btf, p)?, rd32(btf, p + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let extra = type_extra(kind, vlen, p)?;
        if kind == 12 && vlen != 0 {
            out.insert(cstr(&strings, name_off as usize).unwrap_or_default());
        }
        p += 12 + extra;
    }
    Ok(out)
}
