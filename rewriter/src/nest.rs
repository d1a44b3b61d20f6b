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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::cfg::{self, Func, Walker};
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
/// the function's start. `open` and `closed` are sorted slot lists: `open`
/// is the region's extent (what its STARTs reach), and `closed` only the
/// part of it that is also closed (nothing else asks), so the cost is the
/// region's size, not the function's, per region.
#[derive(Debug)]
struct Local {
    id: u32,
    starts: Vec<usize>,
    open: Vec<usize>,
    closed: Vec<usize>,
}

impl Local {
    fn is_open(&self, q: usize) -> bool {
        self.open.binary_search(&q).is_ok()
    }
    /// Closed at `q`, asked where the region is open.
    fn is_closed(&self, q: usize) -> bool {
        self.closed.binary_search(&q).is_ok()
    }
}

/// Each slot's predecessors.
fn preds_of(g: &cfg::Graph) -> Vec<Vec<u32>> {
    let mut p = vec![Vec::new(); g.insns.len()];
    for (i, s) in g.succs.iter().enumerate() {
        s.iter().for_each(|t| p[t].push(i as u32));
    }
    p
}

/// Region `id` of a function: open where its STARTs reach without passing
/// an END; closed where the entry or an END reaches without passing a
/// START. Closed is computed inside the open extent only: every slot
/// outside it that the entry reaches is closed (a path from the entry to it
/// that passes a START passes an END after the last one, or the slot would
/// be open), so the closed part of the extent is what those slots, the
/// entry and the ENDs reach inside it without passing a START. Slots the
/// entry does not reach (`live` false; the kernel refuses such code) are
/// closed where a dead END reaches them.
fn local(
    g: &cfg::Graph,
    (open_w, closed_w): (&mut Walker, &mut Walker),
    preds: &[Vec<u32>],
    live: &[bool],
    id: u32,
    starts: Vec<usize>,
    ends: &[usize],
) -> Local {
    if starts.iter().any(|s| ends.contains(s)) {
        // A slot both START and END stops both walks, so what only it
        // leads to is neither open nor closed, and the argument above
        // does not hold: the whole-function walks of the definition.
        let open = open_w.collect(g, starts.iter().copied(), |i| !ends.contains(&i));
        let from = std::iter::once(0).chain(ends.iter().copied());
        let all_closed = closed_w.collect(g, from, |i| !starts.contains(&i));
        let closed = open
            .iter()
            .copied()
            .filter(|q| all_closed.binary_search(q).is_ok())
            .collect();
        return Local {
            id,
            starts,
            open,
            closed,
        };
    }
    // Code the entry does not reach is closed where a dead END reaches it
    // (a live slot never leads there): nothing to walk in compiled code.
    let dead_ends = ends.iter().copied().filter(|&e| !live[e]);
    let dead_closed = closed_w.collect(g, dead_ends, |i| !live[i] && !starts.contains(&i));
    let open = open_w.collect(g, starts.iter().copied(), |i| !ends.contains(&i));
    let in_open = |i: usize| open_w.seen(i);
    let outside_closed = |p: usize| {
        !in_open(p) && !starts.contains(&p) && (live[p] || dead_closed.binary_search(&p).is_ok())
    };
    let seeds: Vec<usize> = open
        .iter()
        .copied()
        .filter(|&q| {
            !starts.contains(&q) && (q == 0 || preds[q].iter().any(|&p| outside_closed(p as usize)))
        })
        .collect();
    let closed = closed_w.collect(g, seeds, |i| in_open(i) && !starts.contains(&i));
    Local {
        id,
        starts,
        open,
        closed,
    }
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
            .filter(|a| Some(a.id) != except && a.is_open(q))
            .collect();
        if let Some(a) = open.iter().find(|a| a.is_closed(q)) {
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
                .all(|b| b.id == a.id || (b.is_open(s) && !b.is_closed(s)))
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

/// Per region, its START and END points.
fn sites_of(points: &[Point]) -> HashMap<u32, (Vec<&Point>, Vec<&Point>)> {
    let mut sites: HashMap<u32, (Vec<&Point>, Vec<&Point>)> = HashMap::new();
    for p in points {
        match p.kind {
            Kind::Start(id) => sites.entry(id).or_default().0.push(p),
            Kind::End(id) => sites.entry(id).or_default().1.push(p),
            _ => {}
        }
    }
    sites
}

/// Fills `parents`, `top` and `nest_unknown` of every region.
pub fn annotate(
    elf: &Elf,
    funcs: &[Func],
    points: &[Point],
    regions: &mut [RegionDesc],
) -> Result<()> {
    let sites = sites_of(points);
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
        let n = g.insns.len();
        let preds = preds_of(&g);
        let (mut open_w, mut closed_w) = (Walker::new(&g), Walker::new(&g));
        closed_w.reach(&g, [0]);
        let live: Vec<bool> = (0..n).map(|i| closed_w.seen(i)).collect();
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
            locals.push(local(
                &g,
                (&mut open_w, &mut closed_w),
                &preds,
                &live,
                r.id,
                starts,
                &ends,
            ));
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

/// Whether an END of a region may run in a run that passed none of its
/// STARTs since the function's entry or the region's last END: some END is
/// reached from slot 0, or from what follows an END the entry reaches (its
/// instruction on), without entering a START. `false`: every END closes a
/// START of the same run.
///
/// `entered`: a START at the function's entry ([`Place::Entry`]), which
/// runs once per call, before slot 0, and not on a jump back to it: the
/// entry is then started, and `starts` holds only the other STARTs.
fn end_unstarted(
    g: &cfg::Graph,
    w: &mut Walker,
    entered: bool,
    starts: &[usize],
    ends: &[usize],
) -> bool {
    if starts.iter().any(|s| ends.contains(s)) {
        return true;
    }
    w.reach(g, [0]);
    let mut seeds = if entered { vec![] } else { vec![0] };
    for &e in ends.iter().filter(|&&e| w.seen(e)) {
        seeds.extend(g.succs[e].iter());
    }
    w.collect(g, seeds, |i| !starts.contains(&i));
    ends.iter().any(|&e| w.seen(e))
}

/// The regions of program functions whose every END closes a START of the
/// same run: all their STARTs and ENDs in one program's function that makes
/// no tail call (a tail call's continuation ends the regions the caller
/// holds by their run marks), and no END reached without passing a START
/// ([`end_unstarted`]). START and END test the same bit of the run's mask,
/// fixed at the entry, so such an END measures exactly when a START of
/// this run did: its held START needs no run mark to check.
///
/// `graphs`: the control flow of every function with a site; `tail_callers`:
/// the functions that make a tail call.
pub fn always_started(
    funcs: &[Func],
    points: &[Point],
    graphs: &BTreeMap<usize, &cfg::Graph>,
    tail_callers: &BTreeSet<usize>,
) -> BTreeSet<u32> {
    started_in(funcs, points, graphs, tail_callers, |f| f.is_prog)
}

/// The same of subprograms: regions whose sites are all in one subprogram
/// that makes no tail call, no END reached there without passing a START.
/// Such an END may skip a region disabled when it runs: a START it skipped
/// to close was either of this call (a later END of the region passes a
/// START first, which holds again) or of none.
pub fn always_started_in_subprograms(
    funcs: &[Func],
    points: &[Point],
    graphs: &BTreeMap<usize, &cfg::Graph>,
    tail_callers: &BTreeSet<usize>,
) -> BTreeSet<u32> {
    started_in(funcs, points, graphs, tail_callers, |f| !f.is_prog)
}

fn started_in(
    funcs: &[Func],
    points: &[Point],
    graphs: &BTreeMap<usize, &cfg::Graph>,
    tail_callers: &BTreeSet<usize>,
    which: impl Fn(&Func) -> bool,
) -> BTreeSet<u32> {
    let sites = sites_of(points);
    let mut walkers: HashMap<usize, Walker> = HashMap::new();
    let mut out = BTreeSet::new();
    for (&id, (s, e)) in &sites {
        let Some(fi) = s.first().map(|p| p.func) else {
            continue;
        };
        if !which(&funcs[fi])
            || tail_callers.contains(&fi)
            || e.is_empty()
            || s.iter().chain(e.iter()).any(|p| p.func != fi)
        {
            continue;
        }
        let g = graphs[&fi];
        let w = walkers.entry(fi).or_insert_with(|| Walker::new(g));
        let rel = |p: &&Point| p.slot.0 - funcs[fi].start;
        let entered = s.iter().any(|p| p.place == Place::Entry);
        let starts: Vec<usize> = s
            .iter()
            .filter(|p| p.place != Place::Entry)
            .map(rel)
            .collect();
        let ends: Vec<usize> = e.iter().map(rel).collect();
        if !end_unstarted(g, w, entered, &starts, &ends) {
            out.insert(id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, walked over the whole function: slots reachable
    /// from `seeds` without entering `stops`.
    fn whole(g: &cfg::Graph, seeds: &[usize], stops: &[usize]) -> Vec<bool> {
        let mut seen = vec![false; g.insns.len()];
        let mut stack = seeds.to_vec();
        while let Some(i) = stack.pop() {
            if seen[i] || stops.contains(&i) {
                continue;
            }
            seen[i] = true;
            stack.extend(g.succs[i].iter());
        }
        seen
    }

    /// A function's successors, a region's START and END slots.
    type Region = (Vec<Vec<usize>>, Vec<usize>, Vec<usize>);

    /// Random functions of at most `max` slots (loops, joins, dead code),
    /// each with a region: 1-2 STARTs and 1-3 ENDs anywhere, a START
    /// possibly also an END.
    fn random_regions(seed: u64, max: usize) -> impl FnMut() -> Region {
        let mut x = seed;
        let mut rnd = move |k: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % k as u64) as usize
        };
        move || {
            let n = 2 + rnd(max - 1);
            let succs: Vec<Vec<usize>> = (0..n)
                .map(|i| match rnd(6) {
                    _ if i + 1 == n => vec![],
                    0 => vec![rnd(n)],
                    1 | 2 => vec![i + 1, rnd(n)],
                    _ => vec![i + 1],
                })
                .collect();
            let starts = (0..1 + rnd(2)).map(|_| rnd(n)).collect();
            let ends = (0..1 + rnd(3)).map(|_| rnd(n)).collect();
            (succs, starts, ends)
        }
    }

    /// On random graphs, a region's extent walks answer what the
    /// whole-function walks of the definition answer, at every slot.
    #[test]
    fn extent_walks_agree_with_whole_function_walks() {
        let mut next = random_regions(0x9e37_79b9_7f4a_7c15, 25);
        let mut checked = 0;
        for _ in 0..3000 {
            let (succs, starts, ends) = next();
            let n = succs.len();
            let g = cfg::Graph::of_succs(&succs);
            let live = whole(&g, &[0], &[]);
            let open = whole(&g, &starts, &ends);
            let mut from = vec![0];
            from.extend(&ends);
            let closed = whole(&g, &from, &starts);
            let (mut ow, mut cw) = (Walker::new(&g), Walker::new(&g));
            let l = local(
                &g,
                (&mut ow, &mut cw),
                &preds_of(&g),
                &live,
                7,
                starts,
                &ends,
            );
            for q in 0..n {
                assert_eq!(l.is_open(q), open[q], "open at {q}: {succs:?} {l:?}");
                if open[q] {
                    assert_eq!(l.is_closed(q), closed[q], "closed at {q}: {succs:?} {l:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000, "{checked} open slots checked");
    }

    /// On random graphs, [`end_unstarted`] answers what running the region
    /// answers: a search over (slot, a START held) from (entry, none),
    /// where a START takes it and an END gives it back, finds an END
    /// reached with nothing held.
    #[test]
    fn unstarted_ends_agree_with_a_run_of_the_region() {
        let mut next = random_regions(0x2545_f491_4f6c_dd1d, 17);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..4000 {
            let (succs, starts, ends) = next();
            let n = succs.len();
            let g = cfg::Graph::of_succs(&succs);
            let mut seen = vec![[false; 2]; n];
            let mut stack = vec![(0usize, false)];
            let mut found = false;
            while let Some((i, held)) = stack.pop() {
                if seen[i][held as usize] {
                    continue;
                }
                seen[i][held as usize] = true;
                let held = if ends.contains(&i) {
                    found |= !held;
                    false
                } else {
                    held || starts.contains(&i)
                };
                stack.extend(succs[i].iter().map(|&t| (t, held)));
            }
            // A slot both START and END: which runs first is the site's
            // business, so the region always keeps its marks.
            found |= starts.iter().any(|s| ends.contains(s));
            let mut w = Walker::new(&g);
            assert_eq!(
                end_unstarted(&g, &mut w, false, &starts, &ends),
                found,
                "{succs:?} starts {starts:?} ends {ends:?}"
            );
            if found {
                yes += 1
            } else {
                no += 1
            }
        }
        assert!(
            yes > 500 && no > 500,
            "{yes} unstarted, {no} always started"
        );
    }

    /// A START at the function's entry runs once per call: a loop back to
    /// slot 0 does not pass it, so an END in that loop may close nothing.
    #[test]
    fn an_entry_start_is_not_on_a_jump_back_to_slot_0() {
        // 0: body; 1: END, then back to 0 or on to 2: exit.
        let g = cfg::Graph::of_succs(&[vec![1], vec![2, 0], vec![]]);
        let mut w = Walker::new(&g);
        assert!(end_unstarted(&g, &mut w, true, &[], &[1]));
        // The same START placed before slot 0 runs on the jump back too.
        assert!(!end_unstarted(&g, &mut w, false, &[0], &[1]));
        // An END only at the exit: the entry START covers it.
        assert!(!end_unstarted(&g, &mut w, true, &[], &[2]));
    }
}
