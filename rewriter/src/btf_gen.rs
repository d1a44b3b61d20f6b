//! BTF for objects built without it (clang without `-g`, gcc without
//! `-gbtf`), so libbpf's linker can merge the probe runtime in.
//!
//! The linker needs a non-static BTF FUNC or VAR for every global symbol of
//! its inputs. We give it the least that is true: `int` and `unsigned char`,
//! one `int (void)` prototype, a FUNC per function symbol, a VAR of
//! `unsigned char[size]` per global data symbol, and `.BTF.ext` func_info
//! for every function, so the linked program's func_info covers all of its
//! subprograms (the kernel takes func_info for all or none, and the
//! runtime's global functions are verified once only with it), and
//! line_info from DWARF when the object has it (gcc `-g`). Functions
//! that were not global in BTF before the link get their static linkage
//! back afterwards ([`crate::btf_ext::btf_set_func_linkage`]): a subprogram
//! the input's loader verified inline stays verified inline.

use crate::dwarf::{Lines, Row};
use crate::elf::Elf;
use crate::error::{Error, Loc, Result};
use crate::insn::Insn;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const INT_SIGNED: u32 = 1 << 24;
const LINKAGE_GLOBAL: u32 = 1;

/// Type ids of the fixed records.
const T_INT: u32 = 1;
const T_UCHAR: u32 = 2;
const T_PROTO: u32 = 3;

struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }
    fn str(&mut self, s: &str) -> u32 {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }
    /// Appends one record (name, info, size/type, extra words); returns its id.
    fn add(&mut self, name: u32, kind: u32, vlen: u32, size_type: u32, extra: &[u32]) -> u32 {
        for w in [name, (kind << 24) | vlen, size_type].iter().chain(extra) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        self.next_id += 1;
        self.next_id - 1
    }
    fn finish(self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.extend_from_slice(&[1, 0]); // version, flags
        let tl = self.types.len() as u32;
        for w in [24, 0, tl, tl, self.strings.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend(self.types);
        out.extend(self.strings);
        out
    }
}

/// The `.BTF` and `.BTF.ext` contents for `elf`, which has none. Refuses
/// what cannot load without BTF anyway (BTF-defined maps, externs), naming
/// the symbol.
pub fn synthesize(elf: &Elf, lines: Option<&Lines>) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut b = Builder::new();
    let int = b.str("int");
    assert_eq!(b.add(int, KIND_INT, 0, 4, &[INT_SIGNED | 32]), T_INT);
    let uchar = b.str("unsigned char");
    assert_eq!(b.add(uchar, KIND_INT, 0, 1, &[8]), T_UCHAR);
    assert_eq!(b.add(0, KIND_FUNC_PROTO, 0, T_INT, &[]), T_PROTO);
    // Per code section: (insn_off, FUNC type id), for func_info.
    let mut funcs: std::collections::BTreeMap<usize, Vec<(u32, u32)>> = Default::default();
    let mut arrays: std::collections::HashMap<u64, u32> = Default::default();
    for y in &elf.symbols {
        let sec = elf.sections.get(y.shndx as usize).filter(|_| y.shndx != 0);
        let global = y.bind() != 0;
        if y.shndx == 0 && global && !y.name.is_empty() {
            return Err(Error::NoBtfExtern(y.name.clone()));
        }
        let Some(sec) = sec else { continue };
        if y.is_func() && sec.is_exec() {
            let name = b.str(&y.name);
            // Global ones global for the linker (which drops a non-static
            // record without a global symbol); restored after it.
            let linkage = if global { LINKAGE_GLOBAL } else { 0 };
            let id = b.add(name, KIND_FUNC, linkage, T_PROTO, &[]);
            funcs
                .entry(y.shndx as usize)
                .or_default()
                .push((y.value as u32, id));
        } else if global && !y.is_section() && !sec.is_exec() {
            if sec.name == ".maps" {
                return Err(Error::NoBtfMap {
                    map: y.name.clone(),
                    loc: Loc::sec(".maps"),
                });
            }
            let arr = match arrays.get(&y.size) {
                Some(&a) => a,
                None => {
                    let n = u32::try_from(y.size).map_err(|_| {
                        Error::malformed(
                            format!("symbol '{}' of {} bytes", y.name, y.size),
                            Loc::at(&sec.name, y.value),
                        )
                    })?;
                    let a = b.add(0, KIND_ARRAY, 0, 0, &[T_UCHAR, T_INT, n]);
                    arrays.insert(y.size, a);
                    a
                }
            };
            let name = b.str(&y.name);
            b.add(name, KIND_VAR, 0, arr, &[LINKAGE_GLOBAL]);
        }
    }
    for v in funcs.values_mut() {
        v.sort_unstable();
        v.dedup_by_key(|r| r.0);
    }
    let li = lines.and_then(|l| line_info(elf, &funcs, l, &mut b));
    // .BTF.ext: func_info (record size 8: insn_off, type_id), line_info
    // from DWARF (16: insn_off, file_name_off, line_off, line << 10 | col).
    let mut fi = 8u32.to_le_bytes().to_vec();
    for (si, v) in funcs {
        let name = b.str(&elf.sections[si].name);
        for w in [name, v.len() as u32] {
            fi.extend_from_slice(&w.to_le_bytes());
        }
        for (off, id) in v {
            fi.extend_from_slice(&off.to_le_bytes());
            fi.extend_from_slice(&id.to_le_bytes());
        }
    }
    let mut ext = Vec::new();
    ext.extend_from_slice(&0xeb9fu16.to_le_bytes());
    ext.extend_from_slice(&[1, 0]);
    // hdr_len 32: func_info, line_info, core_relo (empty).
    let li = li.unwrap_or_default();
    let (fl, ll) = (fi.len() as u32, li.len() as u32);
    for w in [32, 0, fl, fl, ll, fl + ll, 0] {
        ext.extend_from_slice(&w.to_le_bytes());
    }
    ext.extend(fi);
    ext.extend(li);
    Ok((b.finish(), ext))
}

/// The line_info block from DWARF rows: per code section with functions,
/// one record per instruction offset that starts a row (the last row at
/// an offset wins, as readers of DWARF attribute it). All or nothing: the
/// kernel refuses a program whose subprograms lack line_info at their first
/// instruction, and a record on the second half of an `ld_imm64`.
fn line_info(
    elf: &Elf,
    funcs: &std::collections::BTreeMap<usize, Vec<(u32, u32)>>,
    lines: &Lines,
    b: &mut Builder,
) -> Option<Vec<u8>> {
    let mut out = 16u32.to_le_bytes().to_vec();
    for (&si, fs) in funcs {
        let code = &elf.sections[si].data;
        // Offsets where an instruction starts (not an ld_imm64's second half).
        let mut starts = std::collections::HashSet::new();
        let mut k = 0;
        while k * 8 < code.len() {
            starts.insert(k as u64 * 8);
            k += if Insn::decode(&code[k * 8..k * 8 + 8]).is_ld_imm64() {
                2
            } else {
                1
            };
        }
        let mut recs: Vec<&Row> = Vec::new();
        for r in lines.rows(si).iter().filter(|r| starts.contains(&r.offset)) {
            match recs.last_mut() {
                Some(last) if last.offset == r.offset => *last = r,
                _ => recs.push(r),
            }
        }
        if fs.iter().any(|(off, _)| {
            recs.binary_search_by_key(&(*off as u64), |r| r.offset)
                .is_err()
        }) {
            return None;
        }
        let name = b.str(&elf.sections[si].name);
        for w in [name, recs.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for r in recs {
            let file = b.str(&r.file);
            let col = (r.column as u32).min(0x3ff);
            let line = u32::try_from(r.line).ok().filter(|l| *l < 1 << 22)?;
            for w in [r.offset as u32, file, 0, (line << 10) | col] {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
    }
    Some(out)
}
