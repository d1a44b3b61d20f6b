//! Inserting instruction sequences and fixing every offset that moves.
//!
//! Three maps per code section, each from old slot to new slot:
//! - `target[i]`: where control arriving at old slot `i` now lands, i.e. the
//!   start of the code inserted before `i`. Jumps, calls, symbols, func_info
//!   and line_info use it, so whatever reached `i` runs the probe first.
//! - `jump[i]`: where a jump to old slot `i` lands: after the code placed
//!   at a function's entry ([`Place::Entry`]), which runs once per call
//!   even when the function's code jumps back to its first instruction.
//! - `pos[i]`: where instruction `i` itself now sits. Relocations and CO-RE
//!   records, which patch the instruction's own bytes, use it.
//!
//! An inserted instruction may also be a copy of an input instruction
//! ([`NewInsn::copy`], an uninstrumented copy of a function): it is encoded
//! as the original is, its branches to the copies of their targets, and
//! its relocation, line and CO-RE records are repeated at it.

use crate::btf_ext::{BtfExt, Kind as ExtKind};
use crate::elf::{Elf, Rel, R_BPF_64_32, R_BPF_64_64};
use crate::error::{Error, Loc, Result};
use crate::insn::{Insn, Slot, PSEUDO_FUNC};
use std::collections::{BTreeMap, HashMap};

/// An inserted instruction; `call` names the symbol of a callee in `.text`.
#[derive(Clone, Debug)]
pub struct NewInsn {
    pub insn: Insn,
    pub call: Option<usize>,
    /// An `ld_imm64` of this symbol's address (a map, or a global's value):
    /// libbpf resolves it through an R_BPF_64_64 relocation.
    pub load: Option<usize>,
    /// A copy of the instruction at this old slot (an uninstrumented copy
    /// of a function): its relocation, CO-RE record and line are repeated
    /// at the copy, a call is encoded as the original's, and a branch goes
    /// to the copy of its target.
    pub copy: Option<usize>,
    /// A `ja` to the copy of this old slot.
    pub to_copy: Option<usize>,
    /// This copy starts a function of its own, with this name, to the end
    /// of its sequence: calls from copies to the original's first slot
    /// come here, and its symbol and func_info record are added.
    pub starts_func: Option<String>,
    /// A jump to the input's instruction at this old slot itself (past
    /// whatever is inserted before it).
    pub to_slot: Option<usize>,
}

impl NewInsn {
    pub fn plain(insn: Insn) -> NewInsn {
        NewInsn {
            insn,
            call: None,
            load: None,
            copy: None,
            to_copy: None,
            starts_func: None,
            to_slot: None,
        }
    }
}

/// Where a sequence goes relative to its slot. `Entry` code runs when the
/// function is entered (calls, the program's start), not when a jump reaches
/// the slot; `Before` code runs however the slot is reached; `After` code
/// runs only on the fall-through from that instruction: jumps to the next
/// slot skip it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    Entry,
    Before,
    After,
}

/// Per code section: (old slot, place, instructions), sorted by slot then place.
pub type Insertions = BTreeMap<usize, Vec<(Slot, Place, Vec<NewInsn>)>>;

struct Map {
    target: Vec<usize>,
    jump: Vec<usize>,
    pos: Vec<usize>,
}

impl Map {
    fn identity(n: usize) -> Map {
        Map {
            target: (0..=n).collect(),
            jump: (0..=n).collect(),
            pos: (0..n).collect(),
        }
    }
    fn target(&self, i: i64) -> Option<usize> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.target.get(i).copied())
    }
    fn jump(&self, i: i64) -> Option<usize> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.jump.get(i).copied())
    }
}

/// How one code section moved, old slot to new slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Where control arriving at an old slot lands (the code inserted
    /// before it); one entry past the end included.
    pub target: Vec<usize>,
    /// Where the old instruction itself is.
    pub pos: Vec<usize>,
}

/// Per code section (its index in the patched object), for the DWARF remap
/// and the tests' line oracle. A section not listed did not move.
pub type AddressMap = HashMap<usize, Moved>;

pub fn apply(elf: &mut Elf, ext: Option<(usize, &BtfExt)>, ins: &Insertions) -> Result<AddressMap> {
    // Nothing inserted, nothing to move: leave every byte as it was.
    if ins.values().all(|l| l.is_empty()) {
        return Ok(AddressMap::new());
    }
    remap(elf, ext, ins)
}

/// [`apply`] without its shortcut: every stage runs even with nothing to
/// insert, so the identity on zero insertions checks the whole remapping.
pub fn remap(elf: &mut Elf, ext: Option<(usize, &BtfExt)>, ins: &Insertions) -> Result<AddressMap> {
    // 1. Layout: the maps of every code section.
    let mut maps: HashMap<usize, Map> = HashMap::new();
    // Per code section: where the copy of each copied old slot is.
    let mut copies: HashMap<usize, HashMap<usize, usize>> = HashMap::new();
    // Copies that are functions of their own: (section, old first slot) ->
    // (new first slot, slots, name).
    let mut new_funcs: HashMap<(usize, usize), (usize, usize, String)> = HashMap::new();
    for (si, s) in elf.sections.iter().enumerate().filter(|(_, s)| s.is_exec()) {
        let n = s.data.len() / 8;
        let Some(list) = ins.get(&si) else {
            maps.insert(si, Map::identity(n));
            continue;
        };
        let mut target = Vec::with_capacity(n + 1);
        let mut jump = Vec::with_capacity(n + 1);
        let mut pos = Vec::with_capacity(n);
        let mut it = list.iter().peekable();
        let mut len = 0;
        let here = copies.entry(si).or_default();
        let mut place = |seq: &[NewInsn], len: &mut usize| {
            for (j, x) in seq.iter().enumerate() {
                if let Some(k) = x.copy {
                    here.insert(k, *len + j);
                    if let Some(name) = &x.starts_func {
                        new_funcs.insert((si, k), (*len + j, seq.len() - j, name.clone()));
                    }
                }
            }
            *len += seq.len();
        };
        for i in 0..n {
            target.push(len);
            while let Some((_, _, seq)) = it.next_if(|(at, p, _)| at.0 == i && *p == Place::Entry) {
                place(seq, &mut len);
            }
            jump.push(len);
            while let Some((_, _, seq)) = it.next_if(|(at, p, _)| at.0 == i && *p == Place::Before)
            {
                place(seq, &mut len);
            }
            pos.push(len);
            len += 1;
            while let Some((_, _, seq)) = it.next_if(|(at, p, _)| at.0 == i && *p == Place::After) {
                place(seq, &mut len);
            }
        }
        if let Some((at, _, _)) = it.next() {
            return Err(Error::InsertionPastEnd {
                slot: at.0,
                section: s.name.clone(),
            });
        }
        target.push(len);
        jump.push(len);
        maps.insert(si, Map { target, jump, pos });
    }

    // 2. Relocations: move r_offset, note which slots have one.
    let sym_value: Vec<(u16, u64, bool)> = elf
        .symbols
        .iter()
        .map(|y| (y.shndx, y.value, y.is_section()))
        .collect();
    // Per code section, the relocated slots in order: the copy below walks
    // the code in order too, so a cursor replaces a lookup per instruction.
    let mut relocated: HashMap<usize, Vec<(usize, Rel)>> = HashMap::new();
    let rel_secs: Vec<usize> = (0..elf.sections.len())
        .filter(|&r| {
            elf.sections[r].is_rel() && maps.contains_key(&(elf.sections[r].info as usize))
        })
        .collect();
    let mut new_rels: HashMap<usize, Vec<Rel>> = HashMap::new();
    for &r in &rel_secs {
        let tsec = elf.sections[r].info as usize;
        let map = &maps[&tsec];
        let mut rels = elf.relocations(r)?;
        for (k, rel) in rels.iter_mut().enumerate() {
            let loc = Loc::at(&elf.sections[tsec].name, rel.offset);
            if rel.offset % 8 != 0 || rel.offset as usize / 8 >= map.pos.len() {
                return Err(Error::BadRelocation {
                    index: k,
                    rtype: rel.rtype,
                    what: "offset not on an instruction".into(),
                    loc,
                });
            }
            if rel.sym as usize >= sym_value.len() {
                return Err(Error::BadRelocation {
                    index: k,
                    rtype: rel.rtype,
                    what: "symbol index out of range".into(),
                    loc,
                });
            }
            relocated
                .entry(tsec)
                .or_default()
                .push((rel.offset as usize / 8, *rel));
            rel.offset = map.pos[rel.offset as usize / 8] as u64 * 8;
        }
        new_rels.insert(r, rels);
    }
    for v in relocated.values_mut() {
        // Two relocations on one slot: the last one counts, as before.
        v.sort_by_key(|&(slot, _)| slot);
        v.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                *earlier = *later;
            }
            same
        });
    }

    // 3. Code: copy, fix branches and calls, insert (calls and function
    // addresses through a relocation re-encoded against the moved symbols).
    let mut added_rels: HashMap<usize, Vec<Rel>> = HashMap::new();
    let secs: Vec<usize> = maps.keys().copied().collect();
    let no_copies = HashMap::new();
    for si in secs {
        let map = &maps[&si];
        let copied = copies.get(&si).unwrap_or(&no_copies);
        let name = elf.sections[si].name.clone();
        let old: Vec<Insn> = crate::insn::decode_all(&elf.sections[si].data);
        let mut out: Vec<Insn> = Vec::with_capacity(map.target[old.len()]);
        let list = ins.get(&si);
        let mut it = list.map(|l| l.iter().peekable());
        let mut skip = false;
        let rels_here: &[(usize, Rel)] = relocated.get(&si).map_or(&[], |v| v.as_slice());
        let rel_at = |k: usize| {
            rels_here
                .binary_search_by_key(&k, |r| r.0)
                .ok()
                .map(|j| &rels_here[j].1)
        };
        let enc = Encoder {
            maps: &maps,
            sym_value: &sym_value,
            name: &name,
        };
        // Where a call (or a function address) lands: the function, or,
        // from a copy, the function's copy where it has one.
        let to_func = |sec: usize, t: i64| maps.get(&sec).and_then(|m| m.target(t));
        let to_copy_func = |sec: usize, t: i64| {
            usize::try_from(t)
                .ok()
                .and_then(|t| new_funcs.get(&(sec, t)))
                .map(|f| f.0)
                .or_else(|| to_func(sec, t))
        };
        let mut cursor = 0;
        for (i, x) in old.iter().enumerate() {
            while cursor < rels_here.len() && rels_here[cursor].0 < i {
                cursor += 1;
            }
            let rel_here = rels_here.get(cursor).filter(|r| r.0 == i).map(|r| &r.1);
            let mut emit_seqs = |place: Place, out: &mut Vec<Insn>| -> Result<()> {
                let Some(it) = it.as_mut() else {
                    return Ok(());
                };
                while let Some((_, _, seq)) = it.next_if(|(at, p, _)| at.0 == i && *p == place) {
                    // The second half of a copied ld_imm64 is copied as is.
                    let mut half = false;
                    for n in seq {
                        let mut insn = n.insn;
                        if let Some(sym) = n.call {
                            let (shndx, v, _) = sym_value[sym];
                            if shndx as usize == si {
                                let t = map.target[v as usize / 8] as i64;
                                insn.imm = (t - out.len() as i64 - 1) as i32;
                            } else {
                                insn.imm = -1;
                                added_rels.entry(si).or_default().push(Rel {
                                    offset: out.len() as u64 * 8,
                                    sym: sym as u32,
                                    rtype: R_BPF_64_32,
                                    addend: 0,
                                });
                            }
                        }
                        if let Some(sym) = n.load {
                            added_rels.entry(si).or_default().push(Rel {
                                offset: out.len() as u64 * 8,
                                sym: sym as u32,
                                rtype: R_BPF_64_64,
                                addend: 0,
                            });
                        }
                        let here = out.len() as i64;
                        if let Some(k) = n.to_slot {
                            insn.off = enc.offset16(map.pos[k] as i64 - here - 1, k)?;
                        }
                        if let Some(k) = n.to_copy {
                            let t = copied.get(&k).ok_or_else(|| {
                                Error::malformed("a jump to a slot with no copy", enc.loc(k))
                            })?;
                            insn.off = enc.offset16(*t as i64 - here - 1, k)?;
                        }
                        if let Some(k) = n.copy {
                            if half {
                                half = false;
                            } else {
                                let rel = rel_at(k);
                                if let Some(rel) = rel {
                                    added_rels.entry(si).or_default().push(Rel {
                                        offset: here as u64 * 8,
                                        ..*rel
                                    });
                                }
                                // Calls leave for the function itself,
                                // branches stay in the copy.
                                half =
                                    enc.encode(&mut insn, (si, k), here, rel, to_copy_func, |t| {
                                        usize::try_from(t)
                                            .ok()
                                            .and_then(|t| copied.get(&t).copied())
                                    })?;
                            }
                        }
                        out.push(insn);
                    }
                }
                Ok(())
            };
            emit_seqs(Place::Entry, &mut out)?;
            emit_seqs(Place::Before, &mut out)?;
            let mut x = *x;
            let here = out.len() as i64;
            if skip {
                skip = false;
            } else {
                skip = enc.encode(&mut x, (si, i), here, rel_here, to_func, |t| map.jump(t))?;
            }
            out.push(x);
            emit_seqs(Place::After, &mut out)?;
        }
        elf.sections[si].data = crate::insn::encode_all(&out);
    }

    // 4. Store relocations (old ones moved, new calls appended, sorted).
    for (r, mut rels) in new_rels {
        let tsec = elf.sections[r].info as usize;
        if let Some(add) = added_rels.remove(&tsec) {
            rels.extend(add);
        }
        rels.sort_by_key(|r| r.offset);
        elf.set_relocations(r, &rels);
    }
    for (tsec, mut rels) in added_rels {
        let r = elf.add_rel_section(tsec)?;
        rels.sort_by_key(|r| r.offset);
        elf.set_relocations(r, &rels);
    }

    // 5. Symbols. A function with a copy of its own ends where the copy
    // starts; the copy gets a global symbol (libbpf makes a subprogram of
    // each function symbol in `.text`).
    for y in elf.symbols.iter_mut() {
        if let Some(m) = maps.get(&(y.shndx as usize)) {
            if y.is_section() {
                continue;
            }
            let start = y.value as usize / 8;
            let nv = m.target.get(start).copied().unwrap_or(start);
            if y.size > 0 {
                let end = (y.value + y.size) as usize / 8;
                let ne = match new_funcs.get(&(y.shndx as usize, start)) {
                    Some(&(at, _, _)) if y.is_func() => at,
                    _ => m.target.get(end).copied().unwrap_or(end),
                };
                y.size = ((ne - nv) * 8) as u64;
            }
            y.value = nv as u64 * 8;
        }
    }
    let mut added: Vec<_> = new_funcs.iter().collect();
    added.sort();
    for (&(sec, _), (at, len, name)) in added {
        elf.add_func_symbol(name, sec, *at as u64 * 8, *len as u64 * 8)?;
    }
    elf.store_symbols();

    // 6. .BTF.ext.
    if let Some((ext_idx, ext)) = ext {
        let by_name: HashMap<String, usize> = maps
            .keys()
            .map(|&si| (elf.sections[si].name.clone(), si))
            .collect();
        let mut data = std::mem::take(&mut elf.sections[ext_idx].data);
        let moved = |kind, sec: &str, off: u32| {
            let Some(m) = by_name.get(sec).and_then(|si| maps.get(si)) else {
                return off;
            };
            let i = off as usize / 8;
            let n = match kind {
                ExtKind::CoRe => m.pos.get(i).copied(),
                ExtKind::Func | ExtKind::Line => m.target.get(i).copied(),
            };
            n.map(|n| n as u32 * 8).unwrap_or(off)
        };
        if copies.values().all(|c| c.is_empty()) {
            ext.remap(&mut data, moved);
        } else {
            // A copied instruction's line and CO-RE records repeat at its
            // copy, and a copy that is a function of its own gets its
            // original's func_info (a program's copy is inside the program).
            data = ext.rebuild(&data, |kind, sec, off| {
                let slot = off as usize / 8;
                let si = by_name.get(sec).copied();
                let own = si.is_some_and(|si| new_funcs.contains_key(&(si, slot)));
                let copy = si
                    .and_then(|si| copies.get(&si))
                    .and_then(|c| c.get(&slot))
                    .filter(|_| kind != ExtKind::Func || own);
                std::iter::once(moved(kind, sec, off))
                    .chain(copy.map(|&n| n as u32 * 8))
                    .collect()
            })?;
        }
        elf.sections[ext_idx].data = data;
    }
    Ok(maps
        .into_iter()
        .map(|(si, m)| {
            (
                si,
                Moved {
                    target: m.target,
                    pos: m.pos,
                },
            )
        })
        .collect())
}

/// Encodes an input instruction for its new place.
struct Encoder<'a> {
    maps: &'a HashMap<usize, Map>,
    /// Per symbol: (section, value, is a section symbol).
    sym_value: &'a [(u16, u64, bool)],
    name: &'a str,
}

impl Encoder<'_> {
    fn loc(&self, slot: usize) -> Loc {
        Loc::at(self.name, slot as u64 * 8)
    }

    fn offset16(&self, off: i64, slot: usize) -> Result<i16> {
        i16::try_from(off).map_err(|_| Error::JumpRange {
            off,
            loc: self.loc(slot),
        })
    }

    /// Instruction `x` of old slot `i` of section `si` (relocation `rel`),
    /// now at `here`: calls and function addresses to `call_to(section, old
    /// target)`, re-encoded against the moved symbols where a relocation
    /// carries them; branches to `branch_to(old target)`. Returns whether
    /// the next slot is the second half of an `ld_imm64`.
    fn encode(
        &self,
        x: &mut Insn,
        (si, i): (usize, usize),
        here: i64,
        rel: Option<&Rel>,
        call_to: impl Fn(usize, i64) -> Option<usize>,
        branch_to: impl Fn(i64) -> Option<usize>,
    ) -> Result<bool> {
        let loc = || self.loc(i);
        if let Some(rel) = rel {
            // Calls and function addresses through a relocation: the target is
            // symbol value + imm, each in its own unit.
            let (shndx, v, _) = self.sym_value[rel.sym as usize];
            if let Some(tm) = self.maps.get(&(shndx as usize)) {
                let nv = tm
                    .target
                    .get(v as usize / 8)
                    .map_or(v as i64, |&t| t as i64 * 8);
                if x.is_pseudo_call() {
                    let t = v as i64 / 8 + x.imm as i64 + 1;
                    let nt = call_to(shndx as usize, t)
                        .ok_or_else(|| Error::malformed("call target out of its section", loc()))?;
                    x.imm = (nt as i64 - nv / 8 - 1) as i32;
                } else if x.is_ld_imm64() && rel.rtype == R_BPF_64_64 {
                    let t = (v as i64 + x.imm as i64) / 8;
                    let nt = call_to(shndx as usize, t).ok_or_else(|| {
                        Error::malformed("function address out of its section", loc())
                    })?;
                    x.imm = (nt as i64 * 8 - nv) as i32;
                }
            }
            return Ok(x.is_ld_imm64());
        }
        if x.is_ld_imm64() {
            if x.src == PSEUDO_FUNC {
                return Err(Error::malformed(
                    "function address without a relocation",
                    loc(),
                ));
            }
            return Ok(true);
        }
        if x.is_pseudo_call() || x.is_branch() {
            let off = if x.is_pseudo_call() {
                x.imm as i64
            } else {
                x.branch_off()
            };
            let to = i as i64 + 1 + off;
            let t = if x.is_pseudo_call() {
                call_to(si, to)
            } else {
                branch_to(to)
            }
            .ok_or_else(|| Error::malformed("jump target outside its section", loc()))?;
            let noff = t as i64 - here - 1;
            if x.is_pseudo_call() || x.is_long_ja() {
                x.imm = i32::try_from(noff).map_err(|_| Error::JumpRange {
                    off: noff,
                    loc: loc(),
                })?;
            } else {
                x.off = self.offset16(noff, i)?;
            }
        }
        Ok(false)
    }
}
