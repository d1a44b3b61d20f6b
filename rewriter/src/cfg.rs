//! Functions, control flow and register dataflow of BPF code.
//!
//! Slots are the unit (8 bytes); the second slot of an `ld_imm64` is not an
//! instruction. Liveness tells which caller-saved registers a probe must keep;
//! the must-be-initialised analysis keeps us from copying a register the
//! verifier considers uninitialised (that copy alone would be rejected).

use crate::elf::Elf;
use crate::error::{Error, Loc, Result};
use crate::insn::{Insn, CALLER_SAVED};
use std::collections::HashMap;

/// A function: a program or a subprogram, `[start, end)` in slots.
#[derive(Clone, Debug)]
pub struct Func {
    pub name: String,
    pub sec: usize,
    pub start: usize,
    pub end: usize,
    /// A program entry point (any function outside `.text`).
    pub is_prog: bool,
}

/// The functions of every code section, in section then address order.
pub fn functions(elf: &Elf) -> Result<Vec<Func>> {
    let mut out = Vec::new();
    for (si, s) in elf.sections.iter().enumerate().filter(|(_, s)| s.is_exec()) {
        let n = s.data.len() / 8;
        let mut starts: Vec<(usize, String)> = elf
            .symbols
            .iter()
            .filter(|y| y.shndx as usize == si && y.is_func())
            .map(|y| ((y.value / 8) as usize, y.name.clone()))
            .collect();
        starts.sort();
        starts.dedup_by_key(|(o, _)| *o);
        if n > 0 && starts.first().map(|(o, _)| *o) != Some(0) {
            starts.insert(0, (0, format!("{}+0", s.name)));
        }
        for (k, (o, name)) in starts.iter().enumerate() {
            if *o > n {
                return Err(Error::malformed(
                    format!("function {name} starts past the section end"),
                    Loc::at(&s.name, *o as u64 * 8),
                ));
            }
            let end = starts.get(k + 1).map(|(e, _)| *e).unwrap_or(n);
            if end > *o {
                out.push(Func {
                    name: name.clone(),
                    sec: si,
                    start: *o,
                    end,
                    is_prog: s.name != ".text",
                });
            }
        }
    }
    Ok(out)
}

/// Up to two successors of an instruction, without a heap allocation each.
#[derive(Clone, Copy, Debug, Default)]
pub struct Succs([u32; 2]);

const NONE: u32 = u32::MAX;

impl Succs {
    fn push(&mut self, t: usize) {
        let slot = if self.0[0] == NONE { 0 } else { 1 };
        self.0[slot] = t as u32;
    }
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().filter(|&&t| t != NONE).map(|&t| t as usize)
    }
    pub fn contains(&self, t: usize) -> bool {
        self.iter().any(|x| x == t)
    }
}

/// A function's control-flow graph, indexed by slot - `func.start`.
pub struct Graph {
    pub insns: Vec<Insn>,
    /// `true` for instruction slots, `false` for the second half of `ld_imm64`.
    pub is_insn: Vec<bool>,
    pub succs: Vec<Succs>,
}

/// Per-function analysis results, indexed by slot - `func.start`.
pub struct Analysis {
    pub g: Graph,
    pub live_in: Vec<u16>,
    pub must_init: Vec<u16>,
    /// Deepest stack byte the function touches, as a positive depth below R10.
    pub stack_depth: i64,
}

/// What bpf-to-bpf calls read: for each call slot `(section, slot)`, the
/// argument registers its callee reads before writing them. Calls not in the
/// map (helpers, kfuncs) are taken to read all of R1..R5.
pub type CallUses = HashMap<(usize, usize), u16>;

/// The callee's start `(section, slot)` of the pseudo call at `slot`.
fn call_target(
    elf: &Elf,
    rels: &HashMap<(usize, usize), u32>,
    sec: usize,
    slot: usize,
    x: &Insn,
) -> Option<(usize, usize)> {
    match rels.get(&(sec, slot)) {
        Some(&sym) => {
            let y = elf.symbols.get(sym as usize)?;
            let t = (y.value / 8) as i64 + x.imm as i64 + 1;
            Some((y.shndx as usize, usize::try_from(t).ok()?))
        }
        None => Some((sec, usize::try_from(slot as i64 + 1 + x.imm as i64).ok()?)),
    }
}

/// The symbol each relocated slot refers to, by `(section, slot)`.
fn rel_syms(elf: &Elf) -> Result<HashMap<(usize, usize), u32>> {
    let mut rels: HashMap<(usize, usize), u32> = HashMap::new();
    for ri in (0..elf.sections.len()).filter(|&i| elf.sections[i].is_rel()) {
        for rel in elf.relocations(ri)? {
            rels.insert(
                (elf.sections[ri].info as usize, rel.offset as usize / 8),
                rel.sym,
            );
        }
    }
    Ok(rels)
}

/// A place where a function enters another: a bpf-to-bpf call, or the
/// address of a callback taken (`bpf_loop`, timers: the kernel runs it as a
/// frame of the same stack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSite {
    pub func: usize,
    /// Slot in the section (not from the function's start).
    pub slot: usize,
    pub callee: usize,
    /// A `call` instruction (else an `ld_imm64` of the callee's address).
    pub call: bool,
}

/// Every call site of every function, in function and slot order.
pub fn call_sites(elf: &Elf, funcs: &[Func]) -> Result<Vec<CallSite>> {
    let rels = rel_syms(elf)?;
    let mut out = Vec::new();
    for (fi, f) in funcs.iter().enumerate() {
        let code = &elf.sections[f.sec].data;
        let mut i = f.start;
        while i < f.end && (i + 1) * 8 <= code.len() {
            let x = Insn::decode(&code[i * 8..i * 8 + 8]);
            let t = if x.is_pseudo_call() {
                call_target(elf, &rels, f.sec, i, &x)
            } else if x.is_ld_imm64() && x.src == crate::insn::PSEUDO_FUNC {
                // The address of a function: `imm` is a byte offset from
                // the relocation's symbol (or, unrelocated, in slots).
                match rels.get(&(f.sec, i)) {
                    Some(&sym) => elf.symbols.get(sym as usize).and_then(|y| {
                        let t = (y.value as i64 + x.imm as i64) / 8;
                        Some((y.shndx as usize, usize::try_from(t).ok()?))
                    }),
                    None => usize::try_from(i as i64 + 1 + x.imm as i64)
                        .ok()
                        .map(|t| (f.sec, t)),
                }
            } else {
                None
            };
            if let Some(c) = t.and_then(|t| funcs.iter().position(|g| (g.sec, g.start) == t)) {
                out.push(CallSite {
                    func: fi,
                    slot: i,
                    callee: c,
                    call: x.is_pseudo_call(),
                });
            }
            i += if x.is_ld_imm64() { 2 } else { 1 };
        }
    }
    Ok(out)
}

/// Per function, the functions it may put on the call stack: bpf-to-bpf
/// callees and callbacks whose address it takes (`bpf_loop`, timers), which
/// the kernel runs as frames of the same stack.
pub fn callees(elf: &Elf, funcs: &[Func]) -> Result<Vec<Vec<usize>>> {
    let mut out = vec![Vec::new(); funcs.len()];
    for c in call_sites(elf, funcs)? {
        if !out[c.func].contains(&c.callee) {
            out[c.func].push(c.callee);
        }
    }
    Ok(out)
}

/// The deepest stack byte a function touches (see [`Analysis::stack_depth`]).
pub fn frame_depth(elf: &Elf, f: &Func) -> Result<i64> {
    let g = graph(elf, f)?;
    Ok(stack_depth(&g.insns, &g.is_insn))
}

/// Computes [`CallUses`] for the whole object: callee argument use, iterated
/// to a fixpoint over the (acyclic) call graph.
pub fn call_uses(elf: &Elf, funcs: &[Func]) -> Result<CallUses> {
    // call slot -> callee func
    let calls: Vec<((usize, usize), usize)> = call_sites(elf, funcs)?
        .into_iter()
        .filter(|c| c.call)
        .map(|c| ((funcs[c.func].sec, c.slot), c.callee))
        .collect();
    let mut uses: CallUses = calls.iter().map(|(k, _)| (*k, crate::insn::ARGS)).collect();
    for _ in 0..=funcs.len() {
        let mut entry: HashMap<usize, u16> = HashMap::new();
        for &(_, c) in &calls {
            if let std::collections::hash_map::Entry::Vacant(e) = entry.entry(c) {
                e.insert(
                    analyse(elf, &funcs[c], &uses)?
                        .live_in
                        .first()
                        .copied()
                        .unwrap_or(0)
                        & crate::insn::ARGS,
                );
            }
        }
        let next: CallUses = calls.iter().map(|(k, c)| (*k, entry[c])).collect();
        if next == uses {
            break;
        }
        uses = next;
    }
    Ok(uses)
}

/// The control-flow graph alone: what the region checks need, without the
/// dataflow of [`analyse`].
pub fn graph(elf: &Elf, f: &Func) -> Result<Graph> {
    let sec = &elf.sections[f.sec];
    let code = &sec.data[f.start * 8..f.end * 8];
    let insns: Vec<Insn> = code.chunks_exact(8).map(Insn::decode).collect();
    let n = insns.len();
    let loc = |i: usize| Loc::at(&sec.name, ((f.start + i) * 8) as u64);
    let mut is_insn = vec![true; n];
    let mut i = 0;
    while i < n {
        let x = &insns[i];
        if !x.is_known() {
            return Err(Error::UnsupportedInsn {
                code: x.code,
                loc: loc(i),
            });
        }
        if x.is_ld_imm64() {
            if i + 1 >= n {
                return Err(Error::malformed(
                    "ld_imm64 is cut off by the end of its function",
                    loc(i),
                ));
            }
            is_insn[i + 1] = false;
            i += 2;
        } else {
            i += 1;
        }
    }
    let mut succs = vec![Succs([NONE; 2]); n];
    for i in 0..n {
        if !is_insn[i] {
            continue;
        }
        let x = &insns[i];
        let next = i + if x.is_ld_imm64() { 2 } else { 1 };
        let mut s = Succs([NONE; 2]);
        if x.is_exit() {
        } else if x.is_branch() {
            let t = i as i64 + 1 + x.branch_off();
            if t < 0 || t >= n as i64 || !is_insn[t as usize] {
                return Err(Error::malformed(
                    format!("jump to slot {t} leaves function {}", f.name),
                    loc(i),
                ));
            }
            if !x.is_unconditional() {
                s.push(next);
            }
            s.push(t as usize);
        } else {
            s.push(next);
        }
        if s.iter().any(|t| t >= n) {
            return Err(Error::malformed(
                format!("control falls off the end of function {}", f.name),
                loc(i),
            ));
        }
        succs[i] = s;
    }
    Ok(Graph {
        insns,
        is_insn,
        succs,
    })
}

/// Liveness, must-be-initialised registers and stack depth of a function;
/// `calls` says what its bpf-to-bpf calls read.
pub fn analyse(elf: &Elf, f: &Func, calls: &CallUses) -> Result<Analysis> {
    let g = graph(elf, f)?;
    let Graph {
        insns,
        is_insn,
        succs,
    } = &g;
    let n = insns.len();
    // Effects once: the fixpoints below revisit every slot several times.
    let eff: Vec<crate::insn::Effect> = (0..n)
        .map(|i| {
            let mut e = insns[i].effect();
            // Only calls are in the map: no hash per instruction.
            if insns[i].is_pseudo_call() {
                if let Some(&u) = calls.get(&(f.sec, f.start + i)) {
                    e.uses = u;
                }
            }
            e
        })
        .collect();
    // Backward liveness to a fixpoint.
    let mut live_in = vec![0u16; n];
    let mut changed = true;
    while changed {
        changed = false;
        for i in (0..n).rev().filter(|&i| is_insn[i]) {
            let e = eff[i];
            let out = succs[i].iter().fold(0, |a, s| a | live_in[s]);
            let new = e.uses | (out & !e.defs);
            if new != live_in[i] {
                live_in[i] = new;
                changed = true;
            }
        }
    }
    // Forward must-be-initialised: the meet over predecessors is intersection.
    // A program gets the context in R1; a subprogram the arguments it reads
    // (a caller that did not set them would have been rejected already).
    let entry: u16 = if f.is_prog {
        1 << 1
    } else {
        live_in[0] & crate::insn::ARGS
    };
    // In place, in layout order, so a pass carries facts all the way down.
    // Predecessors in CSR form: one allocation for the whole function.
    let mut start = vec![0u32; n + 1];
    for ss in succs {
        for t in ss.iter() {
            start[t + 1] += 1;
        }
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut pred = vec![0u32; start[n] as usize];
    for (i, ss) in succs.iter().enumerate() {
        for t in ss.iter() {
            pred[fill[t] as usize] = i as u32;
            fill[t] += 1;
        }
    }
    let preds = |i: usize| {
        pred[start[i] as usize..start[i + 1] as usize]
            .iter()
            .map(|&p| p as usize)
    };
    let out_of = |i: usize, inn: u16| -> u16 {
        if eff[i].defs == CALLER_SAVED {
            (inn & !CALLER_SAVED) | 1
        } else {
            inn | eff[i].defs
        }
    };
    let mut must_init = vec![u16::MAX; n];
    must_init[0] = entry;
    changed = true;
    while changed {
        changed = false;
        for i in (0..n).filter(|&i| is_insn[i]) {
            let top = if i == 0 { entry } else { u16::MAX };
            let new = preds(i).fold(top, |acc, p| acc & out_of(p, must_init[p]));
            if new != must_init[i] {
                must_init[i] = new;
                changed = true;
            }
        }
    }
    let stack_depth = stack_depth(insns, is_insn);
    Ok(Analysis {
        g,
        live_in,
        must_init,
        stack_depth,
    })
}

/// The deepest byte below R10 that the code reaches, through R10 itself or a
/// register derived from it by constant adds.
fn stack_depth(insns: &[Insn], is_insn: &[bool]) -> i64 {
    let mut fp: [Option<i64>; 11] = [None; 11];
    fp[10] = Some(0);
    let mut min = 0i64;
    for (i, x) in insns.iter().enumerate() {
        if !is_insn[i] {
            continue;
        }
        let base = |r: u8| fp.get(r as usize).copied().flatten();
        match x.class() {
            crate::insn::CLS_LDX => {
                if let Some(b) = base(x.src) {
                    min = min.min(b + x.off as i64);
                }
            }
            crate::insn::CLS_ST | crate::insn::CLS_STX => {
                if let Some(b) = base(x.dst) {
                    min = min.min(b + x.off as i64);
                }
            }
            _ => {}
        }
        let d = x.dst as usize;
        if d >= 10 {
            continue;
        }
        let e = x.effect();
        if x.code == 0xbf && x.src == 10 {
            fp[d] = Some(0);
        } else if x.code == 0xbf && fp[x.src as usize].is_some() {
            fp[d] = fp[x.src as usize];
        } else if x.code == 0x07 && fp[d].is_some() {
            fp[d] = fp[d].map(|o| o + x.imm as i64);
        } else if x.code == 0x17 && fp[d].is_some() {
            fp[d] = fp[d].map(|o| o - x.imm as i64);
        } else if e.defs & (1 << d) != 0 {
            fp[d] = None;
        }
        if e.defs == CALLER_SAVED {
            for r in fp.iter_mut().take(6) {
                *r = None;
            }
        }
        if let Some(o) = fp[d] {
            min = min.min(o);
        }
    }
    -min
}

/// Walks of one function that share their marks: each walk costs what it
/// visits, not the function's length (one walk per region START would
/// otherwise make checking R regions cost R times the function).
pub struct Walker {
    mark: Vec<u32>,
    epoch: u32,
    stack: Vec<usize>,
}

impl Walker {
    pub fn new(a: &Graph) -> Walker {
        Walker {
            mark: vec![0; a.insns.len()],
            epoch: 0,
            stack: Vec::new(),
        }
    }

    /// Marks the slots reachable from the successors of `from` without
    /// passing through a slot in `stops`; [`Walker::seen`] answers until the
    /// next walk.
    pub fn until(&mut self, a: &Graph, from: usize, stops: &[usize]) {
        self.walk(a, a.succs[from].iter(), stops);
    }

    /// Marks the slots reachable from any of `froms` (inclusive).
    pub fn reach(&mut self, a: &Graph, froms: impl IntoIterator<Item = usize>) {
        self.walk(a, froms, &[]);
    }

    /// Marks `seeds` and what they reach, not walking on from a stop.
    fn walk(&mut self, a: &Graph, seeds: impl IntoIterator<Item = usize>, stops: &[usize]) {
        self.epoch += 1;
        self.stack.clear();
        self.stack.extend(seeds);
        while let Some(i) = self.stack.pop() {
            if i >= self.mark.len() || self.mark[i] == self.epoch {
                continue;
            }
            self.mark[i] = self.epoch;
            if !stops.contains(&i) {
                self.stack.extend(a.succs[i].iter());
            }
        }
    }

    /// The slots reachable from `seeds` (inclusive) through slots `go`
    /// admits (one it refuses is neither marked nor walked on from), sorted;
    /// [`Walker::seen`] answers for them until the next walk.
    pub fn collect(
        &mut self,
        a: &Graph,
        seeds: impl IntoIterator<Item = usize>,
        go: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        self.epoch += 1;
        self.stack.clear();
        self.stack.extend(seeds);
        let mut out = Vec::new();
        while let Some(i) = self.stack.pop() {
            if i >= self.mark.len() || self.mark[i] == self.epoch || !go(i) {
                continue;
            }
            self.mark[i] = self.epoch;
            out.push(i);
            self.stack.extend(a.succs[i].iter());
        }
        out.sort_unstable();
        out
    }

    pub fn seen(&self, i: usize) -> bool {
        self.mark.get(i) == Some(&self.epoch)
    }
}

/// The first edge that Linux before 6.3 refuses in its control-flow check
/// (`check_cfg`, "back-edge from insn A to B"), as `(from, to)` slots of the
/// function: a walk in the kernel's order (fall-through first) that reaches
/// an instruction still on its path by falling through from a plain
/// instruction or a call. Those kernels accept a loop only when the edge
/// that closes it is a jump; clang may rotate a loop and enter it in its
/// middle, which puts the closing edge on a fall-through. The rewriter's own
/// code and the runtime it links must never do that.
pub fn old_kernel_back_edge(g: &Graph) -> Option<(usize, usize)> {
    const DISCOVERED: u8 = 1;
    const EXPLORED: u8 = 2;
    let n = g.insns.len();
    if n == 0 {
        return None;
    }
    let mut state = vec![0u8; n];
    // (instruction, index of the next successor to take)
    let mut stack = vec![(0usize, 0usize)];
    state[0] = DISCOVERED;
    while let Some(top) = stack.last_mut() {
        let (t, k) = *top;
        let Some(w) = g.succs[t].iter().nth(k) else {
            state[t] = EXPLORED;
            stack.pop();
            continue;
        };
        top.1 += 1;
        let loop_ok = g.insns[t].is_branch();
        match state[w] {
            0 => {
                state[w] = DISCOVERED;
                stack.push((w, 0));
            }
            DISCOVERED if !loop_ok => return Some((t, w)),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
impl Graph {
    /// A graph of its edges alone (up to two successors per slot), for
    /// tests of the passes that walk graphs.
    pub fn of_succs(succs: &[Vec<usize>]) -> Graph {
        Graph {
            insns: vec![Insn::mov64_imm(0, 0); succs.len()],
            is_insn: vec![true; succs.len()],
            succs: succs
                .iter()
                .map(|v| {
                    let mut s = Succs([NONE; 2]);
                    v.iter().for_each(|&t| s.push(t));
                    s
                })
                .collect(),
        }
    }
}
