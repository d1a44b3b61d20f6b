//! How regions nest: for each region, the regions a measurement of it may
//! run inside (the innermost open at its STARTs, followed through the
//! bpf-to-bpf calls that reach them), written to the manifest so the loader
//! can build the region tree (self and total per region, flame graphs).
//!
//! Within a function, region A is *open* at a slot reachable from a START
//! of A without passing an END of A, and *closed* at a slot reachable from
//! the function's entry or from an END of A without passing a START of A.
//! A START with A open and never closed is inside A; one with A both open
//! and closed (A may or may not be running) makes the nesting unknown,
//! and the loader says so instead of guessing. A START inside no region of
//! its function takes the regions open at the calls of its function
//! (`--functions`: the calling function's region). A region whose START
//! and END are in different functions makes the whole tree unknown.

use std::collections::{BTreeSet, HashMap};

use crate::cfg::{self, Func};
use crate::elf::Elf;
use crate::error::Result;
use crate::patch::Place;
use crate::probe::{Kind, Point};
use crate::runtime::RegionDesc;

/// What is open at a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ctx {
    /// This region, innermost.
    In(u32),
    /// No region of this function: whatever is open where it is called.
    Inherit,
    Unknown(String),
}

/// A region whose START and ENDs are all in one function, by slots from
/// the function's start.
struct Local {
    id: u32,
    starts: Vec<usize>,
    open: Vec<bool>,
    closed: Vec<bool>,
}

/// Slots reachable from `seeds` (inclusive) without entering a slot of
/// `stops`.
fn reach(g: &cfg::Graph, seeds: &[usize], stops: &[usize]) -> Vec<bool> {
    let mut seen = vec![false; g.insns.len()];
    let mut stack: Vec<usize> = seeds.to_vec();
    while let Some(i) = stack.pop() {
        if i >= seen.len() || seen[i] || stops.contains(&i) {
            continue;
        }
        seen[i] = true;
        stack.extend(g.succs[i].iter());
    }
    seen
}

struct FuncNest {
    locals: Vec<Local>,
}

impl FuncNest {
    /// What is open at slot `q`, region `except` left out (a START is in its
    /// own region).
    fn at(&self, q: usize, except: Option<u32>, funcs: &[Func], fi: usize) -> Ctx {
        let open: Vec<&Local> = self
            .locals
            .iter()
            .filter(|a| Some(a.id) != except && a.open[q])
            .collect();
        if let Some(a) = open.iter().find(|a| a.closed[q]) {
            return Ctx::Unknown(format!(
                "region {} in {} may or may not be open at {}+{:#x}",
                a.id,
                funcs[fi].name,
                funcs[fi].name,
                q * 8
            ));
        }
        // The innermost: the one every other open region encloses.
        let inner = open.iter().find(|a| {
            let s = a.starts[0];
            open.iter()
                .all(|b| b.id == a.id || (b.open[s] && !b.closed[s]))
        });
        match (open.is_empty(), inner) {
            (true, _) => Ctx::Inherit,
            (false, Some(a)) => Ctx::In(a.id),
            (false, None) => Ctx::Unknown(format!(
                "regions overlap without nesting in {}",
                funcs[fi].name
            )),
        }
    }
}

/// Fills `parents`, `top` and `nest_unknown` of every region.
pub fn annotate(
    elf: &Elf,
    funcs: &[Func],
    points: &[Point],
    regions: &mut [RegionDesc],
) -> Result<()> {
    // Per region, its START and END points.
    let mut sites: HashMap<u32, (Vec<&Point>, Vec<&Point>)> = HashMap::new();
    for p in points {
        match p.kind {
            Kind::Start(id) => sites.entry(id).or_default().0.push(p),
            Kind::End(id) => sites.entry(id).or_default().1.push(p),
            _ => {}
        }
    }
    let spanning = regions.iter().find(|r| match sites.get(&r.id) {
        Some((s, e)) if !s.is_empty() => s.iter().chain(e.iter()).any(|p| p.func != s[0].func),
        // No START (refused earlier by the region checks): nothing to nest.
        _ => true,
    });
    if let Some(r) = spanning {
        let why = format!(
            "region {} has its START and END in different functions",
            r.qualified()
        );
        for r in regions.iter_mut() {
            r.nest_unknown = Some(why.clone());
        }
        return Ok(());
    }
    let calls = cfg::call_sites(elf, funcs)?;
    let mut per_func: HashMap<usize, FuncNest> = HashMap::new();
    let wanted: BTreeSet<usize> = sites
        .values()
        .map(|(s, _)| s[0].func)
        .chain(calls.iter().map(|c| c.func))
        .collect();
    for fi in wanted {
        let f = &funcs[fi];
        let g = cfg::graph(elf, f)?;
        let mut locals = Vec::new();
        for r in regions.iter() {
            let (s, e) = &sites[&r.id];
            if s[0].func != fi {
                continue;
            }
            let rel = |p: &&Point| p.slot.0 - f.start;
            let starts: Vec<usize> = s.iter().map(rel).collect();
            // Every END probe runs before its instruction (Place::Before).
            debug_assert!(e.iter().all(|p| p.place == Place::Before));
            let ends: Vec<usize> = e.iter().map(rel).collect();
            let open = reach(&g, &starts, &ends);
            let mut from: Vec<usize> = vec![0];
            from.extend(&ends);
            let closed = reach(&g, &from, &starts);
            locals.push(Local {
                id: r.id,
                starts,
                open,
                closed,
            });
        }
        per_func.insert(fi, FuncNest { locals });
    }
    // What is open at each function's entry: the regions open at its calls,
    // recursively (the call graph is acyclic: the verifier refuses
    // recursion). None: nothing (a program's entry).
    let mut entry: HashMap<usize, std::result::Result<BTreeSet<Option<u32>>, String>> =
        HashMap::new();
    fn entry_of(
        fi: usize,
        funcs: &[Func],
        calls: &[cfg::CallSite],
        per_func: &HashMap<usize, FuncNest>,
        memo: &mut HashMap<usize, std::result::Result<BTreeSet<Option<u32>>, String>>,
        depth: usize,
    ) -> std::result::Result<BTreeSet<Option<u32>>, String> {
        if let Some(r) = memo.get(&fi) {
            return r.clone();
        }
        let callers: Vec<&cfg::CallSite> = calls.iter().filter(|c| c.callee == fi).collect();
        let r = if funcs[fi].is_prog || callers.is_empty() || depth > funcs.len() {
            Ok([None].into())
        } else {
            let mut set = BTreeSet::new();
            let mut err = None;
            for c in callers {
                let f = &funcs[c.func];
                match per_func[&c.func].at(c.slot - f.start, None, funcs, c.func) {
                    Ctx::In(a) => {
                        set.insert(Some(a));
                    }
                    Ctx::Inherit => match entry_of(c.func, funcs, calls, per_func, memo, depth + 1)
                    {
                        Ok(s) => set.extend(s),
                        Err(e) => err = Some(e),
                    },
                    Ctx::Unknown(e) => err = Some(e),
                }
            }
            match err {
                Some(e) => Err(e),
                None => Ok(set),
            }
        };
        memo.insert(fi, r.clone());
        r
    }
    for r in regions.iter_mut() {
        let (s, _) = &sites[&r.id];
        let fi = s[0].func;
        let f = &funcs[fi];
        let mut set = BTreeSet::new();
        let mut unknown = None;
        for p in s {
            match per_func[&fi].at(p.slot.0 - f.start, Some(r.id), funcs, fi) {
                Ctx::In(a) => {
                    set.insert(Some(a));
                }
                Ctx::Inherit => match entry_of(fi, funcs, &calls, &per_func, &mut entry, 0) {
                    Ok(e) => set.extend(e),
                    Err(e) => unknown = Some(e),
                },
                Ctx::Unknown(e) => unknown = Some(e),
            }
        }
        r.parents = set.iter().flatten().copied().collect();
        r.top = !r.parents.is_empty() && set.contains(&None);
        r.nest_unknown = unknown;
    }
    Ok(())
}
