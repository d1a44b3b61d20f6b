//! Instruction noise from the JIT image: the x86 instructions executed
//! between the two counter reads of an empty region.
//!
//! The image (`jited_prog_insns`, split by `jited_func_lens`, placed at
//! `jited_ksyms`) is disassembled with iced-x86. Where the probe sites read
//! the counter themselves, the path between the two read calls of the entry
//! function is walked. Otherwise the entry function calls `__inxpect_start`
//! then `__inxpect_end` (an app whose first region is empty, like `drop`'s
//! `verdict`), and three pieces are walked on the control-flow
//! graph (longest forward path, calls treated as falling through; see
//! [`longest`]):
//!
//! 1. START: from the instruction after its last call (the counter read) to
//!    its return, return included;
//! 2. the call site: from the instruction after `call START` to `call END`,
//!    both calls' argument set-up and register saves included, the call
//!    included;
//! 3. END: from its entry to its first call that is not a subprogram (the
//!    counter read), that call included.
//!
//! Not in the image: the helper or kfunc bodies around the reads.

use anyhow::{ensure, Context, Result};
use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};
use std::collections::HashMap;

pub struct Func {
    pub addr: u64,
    pub insns: Vec<Instruction>,
}

/// The JIT image of a loaded program, one entry per function (entry first).
pub fn image(fd: i32) -> Result<Vec<Func>> {
    let first = crate::prog_info(fd)?;
    let nk = first.nr_jited_ksyms as usize;
    let nl = first.nr_jited_func_lens as usize;
    let mut code = vec![0u8; first.jited_prog_len as usize];
    let mut ksyms = vec![0u64; nk];
    let mut lens = vec![0u32; nl];
    ensure!(!code.is_empty(), "no JIT image (is the JIT on?)");
    let mut info = libbpf_sys::bpf_prog_info {
        jited_prog_len: code.len() as u32,
        jited_prog_insns: code.as_mut_ptr() as u64,
        nr_jited_ksyms: nk as u32,
        jited_ksyms: ksyms.as_mut_ptr() as u64,
        nr_jited_func_lens: nl as u32,
        jited_func_lens: lens.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: every pointer set above addresses a buffer of the size given.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    ensure!(rc == 0, "bpf_prog_get_info_by_fd (JIT image): {rc}");
    if nk == 0 {
        ksyms.push(0);
        lens.push(code.len() as u32);
    }
    let mut funcs = Vec::new();
    let mut off = 0usize;
    for (addr, l) in ksyms.iter().zip(&lens) {
        let bytes = &code[off..off + *l as usize];
        off += *l as usize;
        let mut d = Decoder::with_ip(64, bytes, *addr, DecoderOptions::NONE);
        let mut insns = Vec::new();
        while d.can_decode() {
            insns.push(d.decode());
        }
        funcs.push(Func { addr: *addr, insns });
    }
    Ok(funcs)
}

fn is_call(i: &Instruction) -> bool {
    i.mnemonic() == iced_x86::Mnemonic::Call
}

fn successors(f: &Func, at: usize, index: &HashMap<u64, usize>) -> Vec<usize> {
    use iced_x86::FlowControl as F;
    let i = &f.insns[at];
    let next = if at + 1 < f.insns.len() {
        vec![at + 1]
    } else {
        vec![]
    };
    match i.flow_control() {
        F::Return => vec![],
        F::UnconditionalBranch => index
            .get(&i.near_branch_target())
            .map(|&j| vec![j])
            .unwrap_or_default(),
        F::ConditionalBranch => {
            let mut v = next;
            if let Some(&j) = index.get(&i.near_branch_target()) {
                v.push(j);
            }
            v
        }
        _ => next,
    }
}

/// Longest path (in instructions, both ends included) from `from` to an
/// instruction satisfying `goal`, back edges ignored. The probe code is a
/// chain of checks whose failures leave the function, plus short diamonds
/// (e.g. the inlined per-CPU lookup's NULL arm, one `xor eax,eax`, against
/// the address computation): the longest path takes the real arm, where a
/// shortest path would cut through an infeasible one.
fn longest(f: &Func, from: usize, goal: impl Fn(usize) -> bool) -> Option<Vec<usize>> {
    let index: HashMap<u64, usize> = f
        .insns
        .iter()
        .enumerate()
        .map(|(k, i)| (i.ip(), k))
        .collect();
    let n = f.insns.len();
    // best[k]: longest path length from k to a goal (forward edges only).
    let mut best: Vec<Option<usize>> = vec![None; n];
    let mut next = vec![usize::MAX; n];
    for k in (from..n).rev() {
        if goal(k) {
            best[k] = Some(1);
            continue;
        }
        for s in successors(f, k, &index) {
            if s <= k {
                continue;
            }
            if let Some(b) = best[s] {
                if best[k].is_none_or(|x| b + 1 > x) {
                    best[k] = Some(b + 1);
                    next[k] = s;
                }
            }
        }
    }
    best[from]?;
    let mut path = vec![from];
    let mut c = from;
    while !goal(c) {
        c = next[c];
        path.push(c);
    }
    Some(path)
}

fn is_exit(f: &Func, k: usize) -> bool {
    use iced_x86::FlowControl as F;
    let i = &f.insns[k];
    match i.flow_control() {
        F::Return => true,
        // `jmp __x86_return_thunk`: a jump out of the function.
        F::UnconditionalBranch => {
            let t = i.near_branch_target();
            let end = f.insns.last().map(|l| l.next_ip()).unwrap_or(f.addr);
            t < f.addr || t >= end
        }
        _ => false,
    }
}

/// The counted path of an empty region.
pub struct NoisePath {
    /// (piece, instructions as text).
    pub pieces: Vec<(&'static str, Vec<String>)>,
    /// Static sizes of the START and END subprograms' JIT code.
    pub start_size: usize,
    pub end_size: usize,
}

impl NoisePath {
    pub fn total(&self) -> usize {
        self.pieces.iter().map(|(_, v)| v.len()).sum()
    }
}

fn text(f: &Func, path: &[usize]) -> Vec<String> {
    let mut fmt = IntelFormatter::new();
    path.iter()
        .map(|&k| {
            let mut s = String::new();
            fmt.format(&f.insns[k], &mut s);
            s
        })
        .collect()
}

/// Walks the empty first region of the entry function of `funcs`.
pub fn empty_region_path(funcs: &[Func]) -> Result<NoisePath> {
    let starts: HashMap<u64, usize> = funcs.iter().enumerate().map(|(k, f)| (f.addr, k)).collect();
    let main = &funcs[0];
    // Sites that read the counter themselves (ktime, tsc, one-event pmc): the
    // two reads are calls out of the image made by the entry function.
    let reads: Vec<usize> = main
        .insns
        .iter()
        .enumerate()
        .filter(|(_, i)| is_call(i) && !starts.contains_key(&i.near_branch_target()))
        .map(|(k, _)| k)
        .collect();
    if let [.., r1, r2] = reads[..] {
        let p = longest(main, r1 + 1, |k| k == r2).context("no path between the reads")?;
        return Ok(NoisePath {
            pieces: vec![(
                "probe sites, after the first read .. the second read (`call` included)",
                text(main, &p),
            )],
            start_size: 0,
            end_size: 0,
        });
    }
    // Calls into subprograms: the region's START then END are the last two
    // (the run count and sampling decision are inlined at the entry).
    let mut sub_calls = Vec::new();
    for (k, i) in main.insns.iter().enumerate() {
        if is_call(i) {
            if let Some(&s) = starts.get(&i.near_branch_target()) {
                sub_calls.push((k, s));
            }
        }
    }
    ensure!(
        sub_calls.len() >= 2,
        "expected calls to START and END in the entry function, found {}",
        sub_calls.len()
    );
    let (call_start, fs) = sub_calls[sub_calls.len() - 2];
    let (call_end, fe) = sub_calls[sub_calls.len() - 1];
    let fstart = &funcs[fs];
    let fend = &funcs[fe];
    // 1. START after its read.
    let read1 = fstart
        .insns
        .iter()
        .rposition(|i| is_call(i) && !starts.contains_key(&i.near_branch_target()))
        .context("START has no counter read")?;
    let p1 = longest(fstart, read1 + 1, |k| is_exit(fstart, k)).context("START: no return")?;
    // 2. The call site.
    let p2 = longest(main, call_start + 1, |k| k == call_end).context("no path to END")?;
    // 3. END up to its read.
    let read2 = fend
        .insns
        .iter()
        .position(|i| is_call(i) && !starts.contains_key(&i.near_branch_target()))
        .context("END has no counter read")?;
    let p3 = longest(fend, 0, |k| k == read2).context("END: no path to the read")?;
    Ok(NoisePath {
        pieces: vec![
            ("START after the read", text(fstart, &p1)),
            (
                "call site (after `call START` .. `call END`)",
                text(main, &p2),
            ),
            ("END up to the read (`call` included)", text(fend, &p3)),
        ],
        start_size: fstart.insns.len(),
        end_size: fend.insns.len(),
    })
}
