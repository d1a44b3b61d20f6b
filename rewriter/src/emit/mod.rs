//! emit: the probe sequences of every point of the plan, on the linked
//! object. Per site: save the live caller-saved registers (into dead
//! callee-saved ones first, then below the function's deepest stack slot),
//! the probe bodies ([`body`]), restore. Then the stack budget of the
//! result is checked along every call chain ([`stack`]).

pub mod backend;
pub mod body;
pub mod seq;
pub mod stack;

pub use backend::Backend;

use crate::cfg::{self, Analysis};
use crate::elf::Elf;
use crate::error::Result;
use crate::insn::{Insn, Slot, CALLER_SAVED};
use crate::patch::{Insertions, NewInsn, Place};
use crate::probe::{Kind, Plan};
use crate::runtime::{self, Window};
use seq::Seq;
use std::collections::BTreeMap;

/// Where a caller-saved register waits out a probe.
enum SaveTo {
    Reg(u8),
    Stack(i16),
    /// Nowhere: the instruction before the site set it to a constant, and
    /// the restore sets it again (a return value before an exit, mostly).
    Again(Insn),
}

/// The `mov` of a constant into `r` that runs right before code at
/// function-relative `i` and `place`, on every path to it: the instruction
/// before, on its fall-through (`After` code runs on that path alone; a
/// `Before` site must not be a jump target).
/// `targets`: [`jump_targets`] of the function.
fn set_before(g: &cfg::Graph, targets: &[bool], i: usize, place: Place, r: u8) -> Option<Insn> {
    let p = i.checked_sub(1)?;
    let x = *g.insns.get(p)?;
    let mov = g.is_insn[p] && (x == Insn::mov64_imm(r, x.imm) || x == Insn::mov32_imm(r, x.imm));
    match place {
        Place::After => mov.then_some(x),
        Place::Before => (mov && !targets[i]).then_some(x),
        Place::Entry => None,
    }
}

/// Per instruction of a function: whether some instruction other than the
/// one before it leads there (a jump's target).
fn jump_targets(g: &cfg::Graph) -> Vec<bool> {
    let mut t = vec![false; g.insns.len() + 1];
    for (j, ss) in g.succs.iter().enumerate() {
        if g.is_insn[j] {
            for k in ss.iter().filter(|&k| k != j + 1) {
                t[k] = true;
            }
        }
    }
    t
}

/// The stack slots (below R10) of a program's run words, below everything
/// the program uses, and the depth with them: the mask's second half only
/// for an object with more than 32 regions.
fn words(a: &Analysis, nregions: u32) -> (body::Words, i64) {
    let base = (a.stack_depth + 7) / 8 * 8;
    let hi = nregions > 32;
    let w = body::Words {
        pcpu: -(base as i16) - 8,
        mask: -(base as i16) - 16,
        mask_hi: hi.then_some(-(base as i16) - 24),
    };
    (w, base + 16 + if hi { 8 } else { 0 })
}

/// Sites by (section, slot, place): the function, and each kind with the
/// index of its point in the plan.
type Groups = BTreeMap<(usize, Slot, Place), (usize, Vec<(Kind, usize)>)>;

/// The inserted code, and per point of the plan (same order), for a START
/// or END: the part of its site inside its region's measured window, and
/// the whole site.
pub struct Emitted {
    pub insertions: Insertions,
    /// The functions (plan indices) given an uninstrumented copy.
    pub copied: Vec<usize>,
    pub windows: Vec<(Option<Window>, Option<Window>)>,
}

/// Code section `sec`'s input instructions, decoded on first use.
fn section_code<'a>(
    decoded: &'a mut BTreeMap<usize, Vec<Insn>>,
    elf: &Elf,
    sec: usize,
) -> &'a [Insn] {
    decoded
        .entry(sec)
        .or_insert_with(|| crate::insn::decode_all(&elf.sections[sec].data))
}

/// Builds every probe sequence for `plan` on the linked object `elf`; with
/// `copy`, each program that makes no tail call also gets an
/// uninstrumented copy of its code, which its sampled-out runs take: right
/// after its entry for a program of at most that many instructions.
pub fn emit(elf: &Elf, plan: &Plan, b: &Backend, copy: Option<usize>) -> Result<Emitted> {
    let inline_max = copy.unwrap_or(0);
    let copy = copy.is_some();
    let mut groups: Groups = BTreeMap::new();
    for (pi, p) in plan.points.iter().enumerate() {
        groups
            .entry((p.sec, p.slot, p.place))
            .or_insert((p.func, Vec::new()))
            .1
            .push((p.kind, pi));
    }
    let mut windows = vec![(None, None); plan.points.len()];
    let uses = cfg::call_uses(elf, &plan.funcs)?;
    let mut analyses: BTreeMap<usize, Analysis> = BTreeMap::new();
    for (fi, _) in groups.values() {
        if !analyses.contains_key(fi) {
            analyses.insert(*fi, cfg::analyse(elf, &plan.funcs[*fi], &uses)?);
        }
    }
    let tail_callers: std::collections::BTreeSet<usize> = plan
        .points
        .iter()
        .filter(|p| p.kind == Kind::TailMark)
        .map(|p| p.func)
        .collect();
    let tail_calls = !tail_callers.is_empty();
    let nregions = plan.regions.len() as u32;
    // Who reads `load` (`left == load`, the sampled run): a site outside a
    // program's run words (a subprogram's, a region past 63), the
    // runtime's START and END (a backend without inline reads, or without
    // inline statistics), a tail call's continuation. Program-level sites
    // with both inline tell the run by its mask alone.
    let load = tail_calls
        || b.inline.is_none()
        || b.record.is_none()
        || plan.points.iter().any(|p| {
            matches!(p.kind, Kind::Start(id) | Kind::End(id)
                if !plan.funcs[p.func].is_prog || !body::in_mask(id))
        });
    // Program-level START and END both inline (the run mark is then only
    // ever checked by END's inline code): the regions every END of which
    // closes a START of the same run hold theirs without a mark.
    let graphs = analyses.iter().map(|(&fi, a)| (fi, &a.g)).collect();
    // A bit per region below 64.
    let bits = |ids: std::collections::BTreeSet<u32>| {
        ids.into_iter()
            .filter(|&id| body::in_mask(id))
            .fold(0u64, |m, id| m | 1 << id)
    };
    let unmarked = match (b.inline, b.record) {
        (Some(_), Some(_)) => bits(crate::nest::always_started(
            &plan.funcs,
            &plan.points,
            &graphs,
            &tail_callers,
        )),
        _ => 0,
    };
    // Subprogram regions whose ENDs may test the enabled bit first.
    let closed = bits(crate::nest::always_started_in_subprograms(
        &plan.funcs,
        &plan.points,
        &graphs,
        &tail_callers,
    ));
    let mut frames: Vec<stack::Frame> = Vec::with_capacity(plan.funcs.len());
    for (fi, f) in plan.funcs.iter().enumerate() {
        let d = match analyses.get(&fi) {
            Some(a) => a.stack_depth,
            None => cfg::frame_depth(elf, f)?,
        };
        frames.push(stack::Frame {
            original: d,
            instrumented: d,
            calls_runtime: false,
            tail_call: tail_callers.contains(&fi),
        });
    }

    let regs_used: BTreeMap<usize, u16> = analyses
        .iter()
        .map(|(&fi, a)| (fi, regs_used(&a.g)))
        .collect();
    let mut out = Insertions::new();
    let mut copied: Vec<usize> = Vec::new();
    let zeroed = zero_uninitialised(plan, &groups, &analyses, &mut out);
    let mut inline_copies = std::collections::BTreeSet::new();
    // Each function's jump targets, found once.
    let mut targets: BTreeMap<usize, Vec<bool>> = BTreeMap::new();
    // Each code section's input instructions, decoded once.
    let mut decoded: BTreeMap<usize, Vec<Insn>> = BTreeMap::new();
    for (&(sec, slot, place), (fi, kinds)) in &groups {
        let fi = *fi;
        let f = &plan.funcs[fi];
        let a = &analyses[&fi];
        // Code after an instruction sees what is live after it.
        let i = slot.0 - f.start + usize::from(place == Place::After);
        let init = a.must_init[i] | zeroed.get(&fi).copied().unwrap_or(0);
        let keep = a.live_in[i] & init & CALLER_SAVED;
        // Dead callee-saved registers. One the function never touches
        // would be pushed and popped by the JIT on every run, for a save a
        // stack slot does as cheaply: saves take only those it uses, and
        // the probe's spare (kept across its read) prefers them.
        let used = regs_used[&fi];
        let (mut free, fresh): (Vec<u8>, Vec<u8>) = (6..=9u8)
            .filter(|r| a.live_in[i] & (1 << r) == 0)
            .partition(|r| used & (1 << r) != 0);
        let (words, mut depth) = if f.is_prog {
            let (w, d) = words(a, nregions);
            (Some(w), d)
        } else {
            (None, a.stack_depth)
        };
        let mut saves: Vec<(u8, SaveTo)> = Vec::new();
        for r in 0..6u8 {
            if keep & (1 << r) == 0 {
                continue;
            }
            let targets = targets.entry(fi).or_insert_with(|| jump_targets(&a.g));
            if let Some(x) = set_before(&a.g, targets, i, place, r) {
                saves.push((r, SaveTo::Again(x)));
            } else if let Some(c) = (!free.is_empty()).then(|| free.remove(0)) {
                saves.push((r, SaveTo::Reg(c)));
            } else {
                depth = (depth + 7) / 8 * 8 + 8;
                saves.push((r, SaveTo::Stack(-(depth as i16))));
            }
        }
        let spare = free.first().or(fresh.first()).copied();
        // END's inline statistics keep the delta across their look-up
        // (regions past the fast ones: those have no look-up).
        let inline_end = words.is_some()
            && b.stats.is_some()
            && b.record.is_some()
            && kinds.iter().any(|(k, _)| {
                matches!(k, Kind::End(id) if body::in_mask(*id) && crate::runtime::pcpu::fast(*id).is_none())
            });
        let spill = (spare.is_none() && inline_end).then(|| {
            depth = (depth + 7) / 8 * 8 + 8;
            -(depth as i16)
        });
        let fr = &mut frames[fi];
        fr.instrumented = fr.instrumented.max(depth);
        let restore: Vec<Insn> = saves
            .iter()
            .map(|(r, from)| match from {
                SaveTo::Reg(c) => Insn::mov64_reg(*r, *c),
                SaveTo::Stack(off) => Insn::ldx_dw(*r, 10, *off),
                SaveTo::Again(x) => *x,
            })
            .collect();
        let mut s = Seq::new();
        for (r, to) in &saves {
            match to {
                SaveTo::Reg(c) => s.push(Insn::mov64_reg(*c, *r)),
                SaveTo::Stack(off) => s.push(Insn::stx_dw(10, *off, *r)),
                SaveTo::Again(_) => &mut s,
            };
        }
        // A site whose regions this run does not measure (unsampled run,
        // regions disabled) skips everything, saves included, after a load
        // of the run's mask and a test, when a dead register can take it.
        // Any dead register, one the JIT already saves first.
        let dead = |r: &u8| a.live_in[i] & (1 << r) == 0;
        let scratch = (0..=9u8)
            .filter(dead)
            .find(|&r| r < 6 || used & (1 << r) != 0)
            .or_else(|| (6..=9u8).find(dead));
        let ids: Option<Vec<u32>> = kinds
            .iter()
            .map(|(k, _)| match k {
                Kind::Start(id) | Kind::End(id) if body::in_mask(*id) => Some(*id),
                _ => None,
            })
            .collect();
        let precheck = match (words, scratch, ids) {
            (Some(w), Some(d), Some(ids)) => Some((w, d, ids)),
            _ => None,
        };
        // The entry of a program with a copy: its sampled-out runs restore
        // what the site saved and go to the copy.
        let to_copy = (copy
            && f.is_prog
            && !tail_callers.contains(&fi)
            && kinds.iter().any(|(k, _)| *k == Kind::RunBegin))
        .then(|| {
            copied.push(fi);
            // Short enough for the entry's branch over it: right after the
            // entry, where a sampled-out run falls into it (no jump) and
            // where its exit is the program's first (the x86 JIT's
            // epilogue, so no jump there either). Else after the function.
            let at = if f.end - f.start <= inline_max {
                inline_copies.insert(fi);
                let code = section_code(&mut decoded, elf, f.sec);
                body::CopyAt::Inline(copy_of(code, f.start..f.end))
            } else {
                body::CopyAt::Slot(f.start)
            };
            (restore.clone(), at)
        });
        // The program's last exit, where the entry's look-up miss leaves.
        let entry = f.is_prog && kinds.iter().any(|(k, _)| *k == Kind::RunBegin);
        let miss = entry
            .then(|| {
                let code = section_code(&mut decoded, elf, f.sec);
                (f.start..f.end).rev().find(|&k| code[k].is_exit())
            })
            .flatten();
        // The entry's save of the context into a register, taken back
        // right after the look-up (see [`body::Site::hoist`]).
        let hoist = match saves.as_slice() {
            [(1, SaveTo::Reg(x))] if to_copy.is_some() && !tail_calls => Some(*x),
            _ => None,
        };
        let site = body::Site {
            miss,
            hoist,
            copy: to_copy,
            words,
            checked: precheck.as_ref().is_some_and(|p| p.2.len() == 1),
            spare,
            spill,
            nregions,
            tail_calls,
            unmarked,
            closed,
            load,
            fused: match kinds.as_slice() {
                [(Kind::RunBegin, _), (Kind::Start(id), _), ..]
                    if words.is_some() && body::fusable(*id, nregions) =>
                {
                    Some(*id)
                }
                _ => None,
            },
        };
        for &(k, _) in kinds {
            s.append(body::body(k, b, &site));
        }
        // A call of a runtime function puts its frame on the stack.
        fr.calls_runtime |= s.calls_any(|sym| b.is_runtime_fn(sym));
        for x in &restore {
            s.push(*x);
        }
        if let Some((w, d, ids)) = precheck {
            let mut pre = Seq::new();
            let skip = pre.label();
            body::test_mask(&mut pre, d, w, &ids, skip);
            pre.append(s);
            pre.bind(skip);
            s = pre;
        }
        let reads = s.reads().to_vec();
        let code = s.finish();
        // One read per START or END, in the order of the kinds: START's
        // window runs from its read to the site's end, END's from the
        // site's start to its read.
        let measured = kinds
            .iter()
            .filter(|(k, _)| matches!(k, Kind::Start(_) | Kind::End(_)));
        let runtime = |sym| b.is_runtime_fn(sym);
        let whole = seq::window(&code, 0, code.len(), runtime);
        for (&(k, pi), r) in measured.zip(&reads) {
            let inside = match k {
                Kind::Start(_) => seq::window(&code, r.after(), code.len(), runtime),
                _ => seq::window(&code, 0, r.before(), runtime),
            };
            windows[pi] = (inside, whole);
        }
        out.entry(sec).or_default().push((slot, place, code));
    }
    let callees = cfg::callees(elf, &plan.funcs)?;
    // The functions the copies call (or take as callbacks) whose own code
    // or callees have sites: copied too, as functions of their own, so a
    // sampled-out run meets no site at all. Not those that make a tail
    // call or reach one (the program it enters continues the run: the
    // instrumented code marks it), nor the runtime's.
    let subs = if copied.is_empty() {
        Vec::new()
    } else {
        let sites: std::collections::BTreeSet<usize> = plan
            .points
            .iter()
            .filter(|p| p.kind != Kind::RunBegin)
            .map(|p| p.func)
            .collect();
        let reaches = |pred: &dyn Fn(usize) -> bool| {
            let mut memo: Vec<Option<bool>> = vec![None; plan.funcs.len()];
            (0..plan.funcs.len())
                .map(|f| subtree(f, &callees, pred, &mut memo, 0))
                .collect::<Vec<bool>>()
        };
        let with_sites = reaches(&|f| sites.contains(&f));
        let tails = reaches(&|f| tail_callers.contains(&f));
        let mut want = vec![false; plan.funcs.len()];
        let mut todo: Vec<usize> = copied.clone();
        while let Some(f) = todo.pop() {
            for &c in &callees[f] {
                let g = &plan.funcs[c];
                if !want[c]
                    && !g.is_prog
                    && !g.name.starts_with(runtime::PREFIX)
                    && with_sites[c]
                    && !tails[c]
                {
                    want[c] = true;
                    todo.push(c);
                }
            }
        }
        (0..plan.funcs.len()).filter(|&f| want[f]).collect()
    };
    for &fi in copied
        .iter()
        .filter(|fi| !inline_copies.contains(fi))
        .chain(&subs)
    {
        // After the function's last instruction (an exit or a jump: no
        // fall-through runs it), behind whatever else goes there. A
        // subprogram's copy is a function of its own.
        let f = &plan.funcs[fi];
        let code = section_code(&mut decoded, elf, f.sec);
        let mut body = copy_of(code, f.start..f.end);
        if !f.is_prog {
            body[0].starts_func = Some(format!("{}{COPY_SUFFIX}", f.name));
        }
        out.entry(f.sec)
            .or_default()
            .push((Slot(f.end - 1), Place::After, body));
    }
    for list in out.values_mut() {
        // Stable: the entry zeroing stays ahead of the entry probe at the same slot.
        list.sort_by_key(|(slot, place, _)| (*slot, *place));
    }

    let runtime = runtime_chain(elf, plan, &callees)?;
    stack::check(&plan.funcs, &callees, &frames, runtime)?;
    Ok(Emitted {
        insertions: out,
        copied,
        windows,
    })
}

/// The longest program copied inline at its entry: the entry's branch over
/// the copy takes a 16-bit offset.
pub const INLINE_COPY_MAX: usize = 16_384;

/// Copies of the input's instructions at `slots` (see [`NewInsn::copy`]).
fn copy_of(code: &[Insn], slots: std::ops::Range<usize>) -> Vec<NewInsn> {
    slots
        .map(|k| NewInsn {
            copy: Some(k),
            ..NewInsn::plain(code[k])
        })
        .collect()
}

/// The name of a subprogram's uninstrumented copy: the original's, then this.
pub const COPY_SUFFIX: &str = "__inxpect_copy";

/// Whether `f` or a function it may call satisfies `pred` (the call graph
/// is acyclic: the verifier refuses recursion; depth-bounded all the same).
fn subtree(
    f: usize,
    callees: &[Vec<usize>],
    pred: &dyn Fn(usize) -> bool,
    memo: &mut Vec<Option<bool>>,
    depth: usize,
) -> bool {
    if let Some(v) = memo[f] {
        return v;
    }
    let v = pred(f)
        || (depth < 64
            && callees[f]
                .iter()
                .any(|&c| subtree(c, callees, pred, memo, depth + 1)));
    memo[f] = Some(v);
    v
}

/// The registers a function's instructions name (the JIT saves the
/// callee-saved ones among them in its prologue): a call's and an
/// `ld_imm64`'s source field is not a register.
fn regs_used(g: &cfg::Graph) -> u16 {
    g.insns
        .iter()
        .zip(&g.is_insn)
        .filter(|(_, &real)| real)
        .fold(0u16, |m, (x, _)| {
            let src = if x.is_call() || x.is_ld_imm64() {
                0
            } else {
                1 << x.src
            };
            m | 1 << x.dst | src
        })
}

/// The deepest chain of runtime frames a probe's call can start (the
/// tail-call continuation calls a second global function), as (bytes with
/// each frame rounded as [`stack`] rounds it, frames).
fn runtime_chain(elf: &Elf, plan: &Plan, callees: &[Vec<usize>]) -> Result<(i64, usize)> {
    fn walk(
        elf: &Elf,
        plan: &Plan,
        callees: &[Vec<usize>],
        f: usize,
        depth: usize,
    ) -> Result<(i64, usize)> {
        let own = stack::round(cfg::frame_depth(elf, &plan.funcs[f])?, 32);
        let mut worst = (0, 0);
        if depth < 8 {
            for &c in &callees[f] {
                let (b, n) = walk(elf, plan, callees, c, depth + 1)?;
                worst = worst.max((b, n));
            }
        }
        Ok((own + worst.0, 1 + worst.1))
    }
    let mut worst = (0, 0);
    for (f, func) in plan.funcs.iter().enumerate() {
        if func.name.starts_with(runtime::PREFIX) && func.name != runtime::FN_TAIL_CLOSE {
            worst = worst.max(walk(elf, plan, callees, f, 0)?);
        }
    }
    Ok(worst)
}

/// Registers live at a probe but not initialised on every path to it (the
/// compiler relies on correlated branches the verifier follows): copying
/// them would be rejected, so each function first gives them a value where
/// they lose theirs: once at entry, and after each call, where the program
/// itself can no longer read them. Returns the registers zeroed per function.
fn zero_uninitialised(
    plan: &Plan,
    groups: &Groups,
    analyses: &BTreeMap<usize, Analysis>,
    out: &mut Insertions,
) -> BTreeMap<usize, u16> {
    let mut zeroed: BTreeMap<usize, u16> = BTreeMap::new();
    for (&fi, a) in analyses {
        let f = &plan.funcs[fi];
        let mut need = 0u16;
        for (&(_, slot, place), _) in groups.iter().filter(|(_, (g, _))| *g == fi) {
            let i = slot.0 - f.start + usize::from(place == Place::After);
            need |= a.live_in[i] & CALLER_SAVED & !a.must_init[i];
        }
        if need == 0 {
            continue;
        }
        zeroed.insert(fi, need);
        let zero = |from: u8| -> Vec<NewInsn> {
            (from..6u8)
                .filter(|r| need & (1 << r) != 0)
                .map(|r| NewInsn::plain(Insn::mov64_imm(r, 0)))
                .collect()
        };
        // At entry (once per call: a jump back to the first instruction
        // does not run it again), the registers not yet set there.
        let entry_init = a.must_init[0];
        let at_entry: Vec<NewInsn> = zero(0)
            .into_iter()
            .filter(|x| entry_init & (1 << x.insn.dst) == 0)
            .collect();
        if !at_entry.is_empty() {
            out.entry(f.sec)
                .or_default()
                .push((Slot(f.start), Place::Entry, at_entry));
        }
        for i in 0..a.g.insns.len() {
            let x = &a.g.insns[i];
            if !a.g.is_insn[i] || x.effect().defs != CALLER_SAVED {
                continue;
            }
            let seq = zero(1);
            if !seq.is_empty() {
                out.entry(f.sec)
                    .or_default()
                    .push((Slot(f.start + i), Place::After, seq));
            }
        }
    }
    zeroed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register set by the instruction before the site is set again
    /// rather than saved, only where that instruction runs on every path to
    /// the site: not where a jump lands on a `Before` site.
    #[test]
    fn a_constant_is_set_again_only_on_the_path_that_set_it() {
        // 0: r0 = 0 (of_succs), 1: r0 = 7, 2: the site's slot; 0 may jump to 2.
        let mut g = cfg::Graph::of_succs(&[vec![1, 2], vec![2], vec![]]);
        g.insns[1] = Insn::mov32_imm(0, 7);
        let t = jump_targets(&g);
        assert_eq!(t[..3], [false, false, true]);
        assert_eq!(
            set_before(&g, &t, 2, Place::Before, 0),
            None,
            "entered by 0's jump"
        );
        assert_eq!(
            set_before(&g, &t, 2, Place::After, 0),
            Some(Insn::mov32_imm(0, 7)),
            "after slot 1: its fall-through alone"
        );
        assert_eq!(
            set_before(&g, &t, 2, Place::After, 1),
            None,
            "another register"
        );
        let g = cfg::Graph::of_succs(&[vec![1], vec![2], vec![]]);
        let t = jump_targets(&g);
        assert_eq!(
            set_before(&g, &t, 2, Place::Before, 0),
            Some(Insn::mov64_imm(0, 0))
        );
        assert_eq!(
            set_before(&g, &t, 0, Place::Before, 0),
            None,
            "nothing before"
        );
        assert_eq!(set_before(&g, &t, 1, Place::Entry, 0), None);
    }
}
