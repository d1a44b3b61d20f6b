//! Where probes go: region markers (`--sections`) or function boundaries
//! (`--functions`), checked before anything is changed.

use crate::btf_ext::BtfExt;
use crate::cfg::{self, Func};
use crate::elf::Elf;
use crate::error::{Error, Loc, Result};
use crate::insn::{Insn, Slot};
use crate::patch::Place;
use crate::runtime::{RegionDesc, Site, PREFIX};
use indexmap::IndexMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Counts the run and makes the sampling decision (or continues the run
    /// of a tail call): every program entry.
    RunBegin,
    End(u32),
    Start(u32),
    /// Before a `bpf_tail_call`: the program it enters continues this run.
    TailMark,
    /// After a `bpf_tail_call` (it failed): no longer under way.
    TailClear,
}

/// A probe at slot `slot` of section `sec`, in function `func`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    pub sec: usize,
    pub slot: Slot,
    pub place: Place,
    pub func: usize,
    pub kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Sections,
    Functions,
}

pub struct Plan {
    pub funcs: Vec<Func>,
    pub points: Vec<Point>,
    pub regions: Vec<RegionDesc>,
}

const START: &str = "__inxpect_start_";
const END: &str = "__inxpect_end_";

struct Marker {
    name: String,
    start: bool,
    sec: usize,
    slot: usize,
    func: usize,
}

fn func_of(funcs: &[Func], sec: usize, slot: usize) -> Option<usize> {
    funcs
        .iter()
        .position(|f| f.sec == sec && f.start <= slot && slot < f.end)
}

/// Where source lines come from: DWARF first (what the author compiled),
/// then `.BTF.ext` line_info (what the kernel shows).
#[derive(Default)]
pub struct Source<'a> {
    pub dwarf: Option<crate::dwarf::Lines>,
    pub ext: Option<&'a BtfExt>,
}

fn line(src: &Source<'_>, elf: &Elf, sec: usize, slot: usize) -> Option<String> {
    let off = Slot(slot).bytes();
    src.dwarf
        .as_ref()
        .and_then(|d| d.line_of(sec, off))
        .or_else(|| src.ext?.line_of(&elf.sections.get(sec)?.name, off))
}

fn markers(elf: &Elf, funcs: &[Func], src: &Source<'_>) -> Result<Vec<Marker>> {
    let mut out = Vec::new();
    for s in &elf.symbols {
        let (rest, start) = if let Some(r) = s.name.strip_prefix(START) {
            (r, true)
        } else if let Some(r) = s.name.strip_prefix(END) {
            (r, false)
        } else {
            continue;
        };
        let sec = s.shndx as usize;
        let secname = elf
            .sections
            .get(sec)
            .map(|x| x.name.clone())
            .unwrap_or_default();
        let slot = (s.value / 8) as usize;
        let loc = Loc::at(&secname, s.value).with_line(line(src, elf, sec, slot));
        let bad = |what: &str| Error::BadMarker {
            symbol: s.name.clone(),
            what: what.into(),
            loc: loc.clone(),
        };
        let name = match rest.rsplit_once('_') {
            Some((n, d))
                if !n.is_empty() && !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()) =>
            {
                n
            }
            _ => return Err(bad("expected __inxpect_{start,end}_<name>_<n>")),
        };
        if !elf.sections.get(sec).is_some_and(|x| x.is_exec()) || s.value % 8 != 0 {
            return Err(bad("not on an instruction of a code section"));
        }
        let insn = elf.sections[sec]
            .data
            .get(slot * 8..slot * 8 + 8)
            .map(crate::insn::Insn::decode);
        if !insn.is_some_and(|i| i.code == 0x05 && i.off == 0) {
            return Err(bad(
                "does not sit on the `goto +0` that INXPECT_START/END emit",
            ));
        }
        let func = func_of(funcs, sec, slot).ok_or_else(|| bad("outside any function"))?;
        out.push(Marker {
            name: name.to_string(),
            start,
            sec,
            slot,
            func,
        });
    }
    out.sort_by_key(|m| (m.sec, m.slot, m.start));
    Ok(out)
}

/// Finds the probe points. `only` restricts the regions by name.
pub fn plan(elf: &Elf, src: &Source<'_>, mode: Mode, only: Option<&[String]>) -> Result<Plan> {
    let funcs = cfg::functions(elf)?;
    let user: Vec<usize> = (0..funcs.len())
        .filter(|&i| !funcs[i].name.starts_with(PREFIX))
        .collect();
    // Per function, from one CFG: its exits and its tail calls (slots from
    // its start), for the function probes and the tail-call marks.
    let mut exits_tails: Vec<(Vec<usize>, Vec<usize>)> = vec![Default::default(); funcs.len()];
    for &fi in &user {
        let g = cfg::graph(elf, &funcs[fi])?;
        let at = |want: fn(&Insn) -> bool| -> Vec<usize> {
            (0..g.insns.len())
                .filter(|&i| g.is_insn[i] && want(&g.insns[i]))
                .collect()
        };
        exits_tails[fi] = (at(Insn::is_exit), at(is_tail_call));
    }
    let mut points = Vec::new();
    let mut regions: Vec<RegionDesc> = Vec::new();
    let site = |sec: usize, slot: usize| Site {
        offset: Slot(slot).bytes(),
        line: line(src, elf, sec, slot),
        window: None,
        whole: None,
    };
    match mode {
        Mode::Sections => {
            let ms = markers(elf, &funcs, src)?;
            let by_name = regions_of(elf, &funcs, src, &ms)?;
            let mut analyses: IndexMap<usize, (cfg::Graph, cfg::Walker)> = IndexMap::new();
            for (name, ms) in &by_name {
                check_region(elf, &funcs, src, name, ms, &mut analyses)?;
            }
            for (key, ms) in by_name {
                let name = key.split('\0').next().unwrap_or_default();
                let id = regions.len() as u32;
                let first = ms.iter().find(|m| m.start).unwrap_or(&ms[0]);
                let f = &funcs[first.func];
                if only.is_some_and(|o| !o.iter().any(|x| RegionDesc::selected(x, name, &f.name))) {
                    continue;
                }
                regions.push(RegionDesc {
                    id,
                    name: name.to_string(),
                    function: f.name.clone(),
                    section: elf.sections[f.sec].name.clone(),
                    starts: ms
                        .iter()
                        .filter(|m| m.start)
                        .map(|m| site(m.sec, m.slot))
                        .collect(),
                    ends: ms
                        .iter()
                        .filter(|m| !m.start)
                        .map(|m| site(m.sec, m.slot))
                        .collect(),
                    parents: Vec::new(),
                    top: false,
                    nest_unknown: None,
                });
                for m in ms {
                    let kind = if m.start {
                        Kind::Start(id)
                    } else {
                        Kind::End(id)
                    };
                    points.push(Point {
                        sec: m.sec,
                        slot: Slot(m.slot),
                        place: Place::Before,
                        func: m.func,
                        kind,
                    });
                }
            }
        }
        Mode::Functions => {
            for &fi in &user {
                let f = &funcs[fi];
                if only.is_some_and(|o| !o.contains(&f.name)) {
                    continue;
                }
                let id = regions.len() as u32;
                let (exits, tails) = &exits_tails[fi];
                // Once per call, whatever jumps back to the first instruction.
                points.push(Point {
                    sec: f.sec,
                    slot: Slot(f.start),
                    place: Place::Entry,
                    func: fi,
                    kind: Kind::Start(id),
                });
                // A tail call is an exit too: the function's region ends
                // before it (a failed one then reaches a real exit, where
                // END finds nothing held).
                for &e in exits.iter().chain(tails) {
                    points.push(Point {
                        sec: f.sec,
                        slot: Slot(f.start + e),
                        place: Place::Before,
                        func: fi,
                        kind: Kind::End(id),
                    });
                }
                regions.push(RegionDesc {
                    id,
                    name: f.name.clone(),
                    function: f.name.clone(),
                    section: elf.sections[f.sec].name.clone(),
                    starts: vec![site(f.sec, f.start)],
                    ends: exits
                        .iter()
                        .chain(tails)
                        .map(|&e| site(f.sec, f.start + e))
                        .collect(),
                    parents: Vec::new(),
                    top: false,
                    nest_unknown: None,
                });
            }
        }
    }
    if let Some(o) = only {
        for want in o {
            if !regions.iter().any(|r| r.matches(want)) {
                return Err(Error::NothingToDo(format!(
                    "--only: no region named '{want}' in the object"
                )));
            }
        }
    }
    if regions.len() > crate::runtime::MAX_REGIONS {
        return Err(Error::TooManyRegions(regions.len()));
    }
    // Every program entry counts the run and decides the sampling; every
    // tail call marks itself under way around the call.
    for &fi in &user {
        let f = &funcs[fi];
        if regions.is_empty() {
            break;
        }
        if f.is_prog {
            points.push(Point {
                sec: f.sec,
                slot: Slot(f.start),
                place: Place::Entry,
                func: fi,
                kind: Kind::RunBegin,
            });
        }
        for &t in &exits_tails[fi].1 {
            for (place, kind) in [
                (Place::Before, Kind::TailMark),
                (Place::After, Kind::TailClear),
            ] {
                points.push(Point {
                    sec: f.sec,
                    slot: Slot(f.start + t),
                    place,
                    func: fi,
                    kind,
                });
            }
        }
    }
    points.sort_by_key(|p| (p.sec, p.slot, p.place, p.kind));
    crate::nest::annotate(elf, &funcs, &points, &mut regions)?;
    Ok(Plan {
        funcs,
        points,
        regions,
    })
}

fn is_tail_call(x: &Insn) -> bool {
    x.is_call() && x.src == 0 && x.imm == crate::runtime::HELPER_TAIL_CALL
}

/// The markers of each region. A region is a name in a function: the same
/// name in two functions, each with its START and END, is two regions. A
/// name whose START and END sit in different functions (a region across a
/// call) is one region; a name that is both is refused.
fn regions_of<'m>(
    elf: &Elf,
    funcs: &[Func],
    src: &Source<'_>,
    ms: &'m [Marker],
) -> Result<IndexMap<String, Vec<&'m Marker>>> {
    let mut by_name: IndexMap<&str, Vec<&Marker>> = IndexMap::new();
    for m in ms {
        by_name.entry(&m.name).or_default().push(m);
    }
    let mut out: IndexMap<String, Vec<&Marker>> = IndexMap::new();
    for (name, ms) in by_name {
        let mut per_func: IndexMap<usize, Vec<&Marker>> = IndexMap::new();
        for m in ms.iter().copied() {
            per_func.entry(m.func).or_default().push(m);
        }
        let whole = |v: &[&Marker]| v.iter().any(|m| m.start) && v.iter().any(|m| !m.start);
        if per_func.len() == 1 || per_func.values().all(|v| !whole(v)) {
            out.insert(name.to_string(), ms);
            continue;
        }
        if let Some(v) = per_func.values().find(|v| !whole(v)) {
            let m = v[0];
            let other = per_func
                .iter()
                .find(|(_, w)| whole(w))
                .map(|(&f, _)| funcs[f].name.clone())
                .unwrap_or_default();
            return Err(Error::AmbiguousRegion {
                name: name.into(),
                func: funcs[m.func].name.clone(),
                other,
                loc: Loc::at(&elf.sections[m.sec].name, Slot(m.slot).bytes())
                    .with_line(line(src, elf, m.sec, m.slot)),
            });
        }
        // Keyed apart inside the plan; each region keeps its bare name and
        // its function in the manifest.
        for (f, v) in per_func {
            out.insert(format!("{name}\0{f}"), v);
        }
    }
    Ok(out)
}

fn check_region(
    elf: &Elf,
    funcs: &[Func],
    src: &Source<'_>,
    name: &str,
    ms: &[&Marker],
    analyses: &mut IndexMap<usize, (cfg::Graph, cfg::Walker)>,
) -> Result<()> {
    let loc = |m: &Marker| {
        Loc::at(&elf.sections[m.sec].name, Slot(m.slot).bytes())
            .with_line(line(src, elf, m.sec, m.slot))
    };
    let mut with_both: Vec<usize> = Vec::new();
    for m in ms {
        if !with_both.contains(&m.func)
            && ms.iter().any(|x| x.func == m.func && x.start)
            && ms.iter().any(|x| x.func == m.func && !x.start)
        {
            with_both.push(m.func);
        }
    }
    let any_end = ms.iter().any(|m| !m.start);
    let any_start = ms.iter().any(|m| m.start);
    for m in ms {
        let f = &funcs[m.func];
        if m.start && !any_end {
            return Err(Error::StartWithoutEnd {
                name: name.into(),
                func: f.name.clone(),
                loc: loc(m),
            });
        }
        if !m.start && !any_start {
            return Err(Error::EndBeforeStart {
                name: name.into(),
                func: f.name.clone(),
                loc: loc(m),
            });
        }
    }
    // Inside one function the CFG must connect them, and a START must not be
    // reached again before an END (that would overwrite the held value).
    for &fi in &with_both {
        if !analyses.contains_key(&fi) {
            let a = cfg::graph(elf, &funcs[fi])?;
            let w = cfg::Walker::new(&a);
            analyses.insert(fi, (a, w));
        }
        let (a, open) = analyses.get_mut(&fi).expect("inserted above");
        let a = &*a;
        let f = &funcs[fi];
        let mine: Vec<&&Marker> = ms.iter().filter(|m| m.func == fi).collect();
        let ends: Vec<usize> = mine
            .iter()
            .filter(|e| !e.start)
            .map(|e| e.slot - f.start)
            .collect();
        let mut seen_end = vec![false; ends.len()];
        for m in mine.iter().filter(|m| m.start) {
            // Walk the open region: up to the ENDs, never through them.
            open.until(a, m.slot - f.start, &ends);
            if let Some(again) = mine.iter().find(|x| x.start && open.seen(x.slot - f.start)) {
                return Err(Error::DuplicateRegion {
                    name: name.into(),
                    first: format!("{}+{:#x}", f.name, (m.slot - f.start) * 8),
                    second: format!("{}+{:#x}", f.name, (again.slot - f.start) * 8),
                    loc: loc(again),
                });
            }
            let mut any = false;
            for (k, &e) in ends.iter().enumerate() {
                if open.seen(e) {
                    seen_end[k] = true;
                    any = true;
                }
            }
            if !any {
                return Err(Error::StartWithoutEnd {
                    name: name.into(),
                    func: f.name.clone(),
                    loc: loc(m),
                });
            }
        }
        // An END behind another END (a second exit path) is fine as long as
        // some START reaches it; only then walk the whole function.
        if seen_end.iter().any(|s| !s) {
            open.reach(a, mine.iter().filter(|m| m.start).map(|m| m.slot - f.start));
            for m in mine.iter().filter(|m| !m.start) {
                if !open.seen(m.slot - f.start) {
                    return Err(Error::EndBeforeStart {
                        name: name.into(),
                        func: f.name.clone(),
                        loc: loc(m),
                    });
                }
            }
        }
    }
    Ok(())
}

impl Plan {
    /// The same probe points in `to`, an object that holds every code section
    /// of `from` at the same offsets (what libbpf's linker produces when the
    /// input is added first), so the checks are not run twice.
    pub fn rebase(&self, from: &Elf, to: &Elf) -> Result<Plan> {
        let funcs = cfg::functions(to)?;
        let sec = |i: usize| -> Result<usize> {
            let name = &from.sections[i].name;
            to.section_index(name)
                .filter(|&j| to.sections[j].data.len() >= from.sections[i].data.len())
                .ok_or_else(|| Error::MovedByLinker {
                    what: "section",
                    name: name.clone(),
                })
        };
        let mut points = Vec::with_capacity(self.points.len());
        for p in &self.points {
            let f = &self.funcs[p.func];
            let s = sec(p.sec)?;
            let func = funcs
                .iter()
                .position(|g| g.sec == s && g.start == f.start && g.name == f.name)
                .ok_or_else(|| Error::MovedByLinker {
                    what: "function",
                    name: f.name.clone(),
                })?;
            points.push(Point {
                sec: s,
                slot: p.slot,
                place: p.place,
                func,
                kind: p.kind,
            });
        }
        Ok(Plan {
            funcs,
            points,
            regions: self.regions.clone(),
        })
    }
}
