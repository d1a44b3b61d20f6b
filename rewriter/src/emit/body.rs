//! The inlined body of each probe kind (registers R0..R5 are free here: the
//! site saved what is live).
//!
//! A program entry counts the run and decides the sampling, or, entered by
//! a tail call of this run, continues it. A START or END calls the runtime
//! (or reads the counter itself) only when this run measures its region, so
//! an unsampled run or a disabled region costs a load and a test per site.

use super::backend::{Backend, Read, StatsSyms};
use super::seq::{Cond, Label, Seq};
use crate::insn::{
    Insn, OP_ADD, OP_AND, OP_ARSH, OP_LSH, OP_OR, OP_RSH, OP_SUB, OP_XOR, SIZE_B, SIZE_DW, SIZE_W,
};
use crate::patch::NewInsn;
use crate::probe::Kind;
use crate::runtime::{config, pcpu, stats, Counter, FAST_DELTA};

/// A program's two run words, stack slots written at its entry.
#[derive(Clone, Copy, Debug)]
pub struct Words {
    /// This CPU's `inxpect_pcpu` entry, on every run: a pointer the verifier
    /// tracks through the slot, so no site looks it up again.
    pub pcpu: i16,
    /// The regions this run does *not* measure, regions 0..31: the low half
    /// of the config's `disabled[0]` in a sampled run with the counter
    /// there, else all ones, which the verifier knows (so every site of an
    /// unsampled run, or of any run where the module is absent, is dead
    /// code to it). A 32-bit value in an 8-byte slot of its own: 6.1 tracks
    /// a narrow spill only at an aligned offset. Set bits skip, so that a
    /// site is one `jset` whose fall-through, the measured path, the
    /// verifier walks first (and the config holds them so: no complement
    /// at the entry).
    pub mask: i16,
    /// Regions 32..63 likewise, where the object has more than 32.
    pub mask_hi: Option<i16>,
}

impl Words {
    /// The slot of region `id`'s half of the mask.
    fn half(&self, id: u32) -> i16 {
        match id / 32 {
            0 => self.mask,
            _ => self.mask_hi.expect("a mask half for every region below 64"),
        }
    }
}

/// Where a program's uninstrumented copy is.
pub enum CopyAt {
    /// In the entry's own code, where the sampled-out path falls into it.
    Inline(Vec<NewInsn>),
    /// Elsewhere (after the function), from the input's slot: a jump.
    Slot(usize),
}

/// What a body needs to know about its site.
pub struct Site {
    /// A program entry whose program has an uninstrumented copy: what
    /// restores the site's saves, and where the copy is.
    pub copy: Option<(Vec<Insn>, CopyAt)>,
    /// In a program: its run words.
    pub words: Option<Words>,
    /// The site already tested this kind's bit of the run mask.
    pub checked: bool,
    /// A dead callee-saved register left after the saves: a START keeps the
    /// per-CPU pointer there across its own read (without one, a program's
    /// START fills it again after the read).
    pub spare: Option<u8>,
    /// Without a spare, a stack slot of the site's own (in a program with
    /// an END here): END keeps its delta there across the statistics'
    /// look-up.
    pub spill: Option<i16>,
    /// Regions in the object (what a tail-call continuation closes).
    pub nregions: u32,
    /// The object makes tail calls: program entries may continue a run.
    pub tail_calls: bool,
    /// At a program entry: an exit of the program's own (its old slot),
    /// where the look-up's miss goes.
    pub miss: Option<usize>,
    /// At the entry of a program with a copy, where the site saves only R1
    /// (the context), into this register: R1 is taken back right after the
    /// look-up, the countdown runs in R2, and a sampled-out run enters the
    /// copy with nothing to restore. The sampled path starts with `rX =
    /// rX` (no code on x86), which a loader that makes the look-up direct
    /// (`ld_imm64`, R1 untouched) turns into the save, dropping the two
    /// around the look-up: the copy's runs then pay the countdown alone.
    pub hoist: Option<u8>,
    /// Regions (bit per id) whose program-level START holds its value with
    /// no run mark and whose END takes it unchecked: every END of theirs
    /// closes a START of the same run (`nest::always_started`).
    pub unmarked: u64,
    /// Subprogram regions (bit per id, below 64) whose END tests the
    /// region's enabled bit first, as START does: every END of theirs
    /// closes a START of the same call (`nest::always_started_in_subprograms`),
    /// so a region disabled between the two leaves nothing an END could
    /// later close wrongly.
    pub closed: u64,
    /// Some site of the object, or a runtime function it calls, tells the
    /// sampled run by `left == load`: program entries store `load`.
    pub load: bool,
    /// The START right after a program entry, of this region (below 31,
    /// in an object of at most 32): the entry leaves the run mask in R1 on
    /// every path to it, so it tests that without a fill.
    pub fused: Option<u32>,
}

/// Whether START of region `id` can follow the entry fused (see
/// [`Site::fused`]): one half of the mask, and a bit whose `jset`
/// immediate is not sign-extended into the upper half R1 holds.
pub fn fusable(id: u32, nregions: u32) -> bool {
    id < 31 && nregions <= 32
}

/// Region `id` has a bit in the run mask (else its sites check the config
/// and the sampling as subprogram sites do).
pub fn in_mask(id: u32) -> bool {
    id < 64
}

/// Loads the run mask's half into `reg` and jumps to `skip` unless this run
/// measures some region of `ids`.
///
/// One region: `jset` on its bit, two instructions. The fill is a fresh
/// unknown in a sampled run (the entry's spill of a 64-bit value breaks
/// the identity a fill would share with the slot), so a branch on it
/// teaches the verifier nothing about the next site's: each region's
/// measured and unmeasured paths merge after every site.
///
/// Several regions at one site (in one half): skip when all their bits
/// are set. Bit 31's immediate is sign-extended where the loaded half is
/// not, so a group with region 31 never skips here; nor does one with
/// regions in both halves (no test at all). Each body then tests its own.
pub fn test_mask(s: &mut Seq, reg: u8, w: Words, ids: &[u32], skip: Label) {
    let half = |id: u32| id / 32;
    if !ids.iter().all(|&id| half(id) == half(ids[0])) {
        return;
    }
    let bits = ids.iter().fold(0u32, |m, &id| m | 1 << (id % 32)) as i32;
    s.push(Insn::ldx(SIZE_W, reg, 10, w.half(ids[0])));
    if let [_] = ids {
        s.jump_to(Cond::SetImm(reg, bits), skip);
    } else {
        s.push(Insn::alu64_imm(OP_AND, reg, bits))
            .jump_to(Cond::EqImm(reg, bits), skip);
    }
}

/// This CPU's `inxpect_pcpu` entry into R0 (NULL on failure): a lookup the
/// verifier inlines for per-CPU arrays.
fn pcpu_lookup(s: &mut Seq, b: &Backend) {
    s.load_symbol(1, b.pcpu).load_symbol(2, b.zero).helper(1);
}

/// `if !inxpect_kfuncs goto to` through `reg` (kfunc backends only).
fn kfunc_guard(s: &mut Seq, b: &Backend, reg: u8, to: Label) {
    if let Some(kf) = b.kfunc_flag {
        s.load_symbol(reg, kf)
            .push(Insn::ldx(SIZE_W, reg, reg, 0))
            .jump_to(Cond::EqImm(reg, 0), to);
    }
}

/// The counter read into R0. A site in a program needs no guard: without
/// the module the run mask stays all ones, known to the verifier, which
/// makes the whole site dead code (and a guard would put two more
/// instructions between END's read and START's). Elsewhere a missing module
/// jumps to `skip`.
fn read(s: &mut Seq, b: &Backend, r: Read, words: Option<Words>, skip: Label) {
    match r {
        Read::Helper(id) => {
            s.mark_read().helper(id);
        }
        Read::Kfunc(sym) => {
            if words.is_none() {
                kfunc_guard(s, b, 1, skip);
            }
            s.mark_read().call_symbol(sym);
        }
    }
}

/// This CPU's `inxpect_pcpu` entry into R0: the program's word, else a
/// look-up (`done` on failure).
fn pcpu_ptr(s: &mut Seq, b: &Backend, words: Option<Words>, done: Label) {
    match words {
        Some(w) => {
            s.push(Insn::ldx_dw(0, 10, w.pcpu));
        }
        None => {
            pcpu_lookup(s, b);
            s.jump_to(Cond::EqImm(0, 0), done);
        }
    }
}

pub fn body(k: Kind, b: &Backend, site: &Site) -> Seq {
    let mut s = Seq::new();
    let done = s.label();
    match k {
        Kind::RunBegin => run_begin(&mut s, b, site, done),
        Kind::Start(id) | Kind::End(id) => {
            let words = site.words.filter(|_| in_mask(id));
            match words {
                Some(_) if site.checked => {}
                // R1 the run mask's half, from the entry just before.
                Some(_) if k == Kind::Start(id) && site.fused == Some(id) => {
                    s.jump_to(Cond::SetImm(1, 1 << id), done);
                }
                Some(w) => test_mask(&mut s, 1, w, &[id], done),
                // Not in a program (no words): sampled while left == load.
                // A START tests its region's enabled bit first, off the
                // config (no look-up): a disabled region's START costs that
                // test alone, and its END finds no START of the run held.
                // Where every END closes a START of its call, END tests
                // the bit first too (else it looks up, checks and reads).
                None => {
                    let closed = id < 64 && site.closed & 1 << id != 0;
                    if matches!(k, Kind::Start(_)) || closed {
                        test_enabled(&mut s, b.config, id, done);
                    }
                    pcpu_ptr(&mut s, b, site.words, done);
                    s.push(Insn::ldx(SIZE_DW, 1, 0, pcpu::LEFT as i16))
                        .push(Insn::ldx(SIZE_DW, 2, 0, pcpu::LOAD as i16))
                        .jump_to(Cond::NeReg(1, 2), done);
                }
            }
            let p = Probe {
                words,
                spare: site.spare,
                spill: site.spill,
                id,
                marked: site.unmarked & 1u64.checked_shl(id).unwrap_or(0) == 0,
            };
            if matches!(k, Kind::Start(_)) {
                start(&mut s, b, p, done);
            } else {
                end(&mut s, b, p, done);
            }
        }
        // Before a tail call: mark it under way, so the program it enters
        // continues this run. After it (it failed): clear the mark.
        Kind::TailMark | Kind::TailClear => {
            pcpu_ptr(&mut s, b, site.words, done);
            if k == Kind::TailMark {
                // left + 1: nonzero, and what the entered program's entry
                // finds again (no entry ran in between).
                s.push(Insn::ldx(SIZE_DW, 1, 0, pcpu::LEFT as i16))
                    .push(Insn::alu64_imm(OP_ADD, 1, 1))
                    .push(Insn::stx_dw(0, pcpu::TAIL as i16, 1));
            } else {
                s.push(Insn::st_dw(0, pcpu::TAIL as i16, 0));
            }
        }
    }
    s.bind(done);
    s
}

fn held(id: u32) -> i16 {
    (pcpu::HELD + pcpu::HELD_SIZE * id as usize) as i16
}

/// A START or END of region `id` at its site.
#[derive(Clone, Copy)]
struct Probe {
    /// In a program: its run words (region `id` in the mask).
    words: Option<Words>,
    spare: Option<u8>,
    spill: Option<i16>,
    id: u32,
    /// The held value carries the run's id, checked by END.
    marked: bool,
}

/// START, once its run measures region `id`.
fn start(s: &mut Seq, b: &Backend, p: Probe, done: Label) {
    let Probe {
        words,
        spare,
        id,
        marked,
        ..
    } = p;
    match (b.inline, spare, words) {
        // In a program: `held.run = sampled` (where END checks it) through
        // the word's per-CPU pointer, kept in the spare across the read,
        // then the read stored there; no runtime call. With no register
        // free, R1 takes the pointer and fills it again after the read:
        // one instruction more in the window, against a call of ~40.
        (Some((r, _)), spare, Some(w)) => {
            let f = spare.unwrap_or(1);
            if spare.is_some() || marked {
                s.push(Insn::ldx_dw(f, 10, w.pcpu));
            }
            if marked {
                s.push(Insn::ldx(SIZE_DW, 2, f, pcpu::SAMPLED as i16))
                    .push(Insn::stx_dw(f, held(id), 2));
            }
            read(s, b, r, words, done);
            if spare.is_none() {
                s.push(Insn::ldx_dw(f, 10, w.pcpu));
            }
            s.push(Insn::stx_dw(f, held(id) + 8, 0));
        }
        // Elsewhere, R0 the per-CPU pointer of a sampled run of an enabled
        // region (the site checked both): the held mark, the read; no call.
        (Some((r, _)), Some(f), None) => {
            s.push(Insn::mov64_reg(f, 0));
            if marked {
                s.push(Insn::ldx(SIZE_DW, 1, f, pcpu::SAMPLED as i16))
                    .push(Insn::stx_dw(f, held(id), 1));
            }
            read(s, b, r, words, done);
            s.push(Insn::stx_dw(f, held(id) + 8, 0));
        }
        _ => {
            s.push(Insn::mov64_imm(1, id as i32))
                .mark_call_read()
                .call_symbol(b.start);
        }
    }
}

/// `if region id is disabled goto skip` (its `disabled` bit of the
/// config, symbol `config`), through R1.
fn test_enabled(s: &mut Seq, config: usize, id: u32, skip: Label) {
    let word = config::DISABLED + 8 * (id / 64) as usize;
    s.load_symbol(1, config)
        .push(Insn::ldx(SIZE_DW, 1, 1, word as i16));
    match id % 64 {
        // An immediate is sign-extended: bit 31 and up by a shift.
        bit @ 0..=30 => s.push(Insn::alu64_imm(OP_AND, 1, 1 << bit)),
        bit => s
            .push(Insn::alu64_imm(OP_RSH, 1, bit as i32))
            .push(Insn::alu64_imm(OP_AND, 1, 1)),
    };
    s.jump_to(Cond::NeImm(1, 0), skip);
}

/// END reads first, then hands the value to the runtime.
fn end(s: &mut Seq, b: &Backend, p: Probe, done: Label) {
    let (words, id) = (p.words, p.id);
    match (b.inline, b.record, words) {
        // In a program: the held START checked and cleared inline through
        // the word's per-CPU pointer (unmarked: a START of this run surely
        // holds it), then only the statistics are a call.
        (Some((r, _)), Some(record), Some(w)) => {
            read(s, b, b.end_read.unwrap_or(r), words, done);
            s.push(Insn::ldx_dw(1, 10, w.pcpu));
            if p.marked {
                s.push(Insn::ldx(SIZE_DW, 2, 1, held(id)))
                    .push(Insn::ldx(SIZE_DW, 3, 1, pcpu::SAMPLED as i16))
                    .jump_to(Cond::NeReg(2, 3), done)
                    .push(Insn::st_dw(1, held(id), 0));
            }
            s.push(Insn::ldx(SIZE_DW, 3, 1, held(id) + 8));
            let slow = s.label();
            if let (Some(st), Some(at)) = (b.stats, pcpu::fast(id)) {
                record_fast(s, b.counter, st, at, slow, done);
            } else if let Some(st) = b.stats {
                let keep = match (p.spare, p.spill) {
                    (Some(f), _) => Keep::Reg(f),
                    (None, Some(o)) => Keep::Slot(o),
                    (None, None) => unreachable!("a program's END site has a spare or a slot"),
                };
                record_inline(s, b.counter, st, keep, id, slow, done);
            }
            s.bind(slow);
            s.push(Insn::mov64_reg(2, 0))
                .push(Insn::mov64_imm(1, id as i32))
                .call_symbol(record);
        }
        (Some((r, end_value)), _, _) => {
            read(s, b, b.end_read.unwrap_or(r), words, done);
            s.push(Insn::mov64_reg(2, 0))
                .push(Insn::mov64_imm(1, id as i32))
                .call_symbol(end_value);
        }
        (None, _, _) => {
            s.push(Insn::mov64_imm(1, id as i32))
                .mark_call_read()
                .call_symbol(b.end);
        }
    }
}

/// The run mask of a run that measures: the config's `disabled[0]` into
/// the mask words, through `tmp`.
fn store_mask(s: &mut Seq, b: &Backend, w: Words, tmp: u8) {
    s.load_symbol(tmp, b.config)
        .push(Insn::ldx(SIZE_DW, tmp, tmp, config::DISABLED as i16));
    store_halves(s, w, tmp);
}

/// `reg` into the mask words, by halves. Each half is stored from a 64-bit
/// value, a narrowing spill the verifier gives no identity (6.1 keeps no
/// spill of an unknown at all), so the sites' fills are unrelated unknowns.
fn store_halves(s: &mut Seq, w: Words, reg: u8) {
    s.push(Insn::stx(SIZE_W, 10, w.mask, reg));
    if let Some(hi) = w.mask_hi {
        s.push(Insn::alu64_imm(OP_ARSH, reg, 32))
            .push(Insn::stx(SIZE_W, 10, hi, reg));
    }
}

/// A program entry. `done` follows.
fn run_begin(s: &mut Seq, b: &Backend, site: &Site, done: Label) {
    let w = site.words.expect("a program entry has the run words");
    // A run that measures nothing (unsampled, or no counter) gets the
    // all-ones mask here, the others theirs before they jump to `done`.
    let nothing = s.label();
    pcpu_lookup(s, b);
    // A one-entry per-CPU array's key 0 is always found: the impossible
    // miss leaves the program (0 is in every type's return range) instead
    // of reaching the sites with no pointer, which would have the verifier
    // walk the whole program a second time in that state. It leaves by
    // one of the program's own exits: the x86 JIT puts the epilogue at the
    // first exit and arm64's at the end, making every other exit a jump to
    // it, so an exit of the probe's would cost every run a jump on one or
    // the other where the verifier keeps the miss (a look-up; direct
    // access has none).
    let miss = s.label();
    s.jump_to(Cond::EqImm(0, 0), miss);
    if let Some(x) = site.hoist {
        s.push(Insn::mov64_reg(1, x));
    }
    // The countdown's register: R1 where the site restores it later.
    let c = if site.hoist.is_some() { 2 } else { 1 };
    // The pointer word, for the sites of a run that measures. A program
    // with a copy stores it only on the paths that stay in the
    // instrumented code (the copy's sampled-out runs have no site).
    let word = Insn::stx_dw(10, w.pcpu, 0);
    if site.copy.is_none() {
        s.push(word);
    }
    let fresh = s.label();
    if site.tail_calls {
        // Entered by a tail call of this run (`tail == left + 1`, set at
        // the call site): the same run, its sampling decision, and the
        // regions the caller held end here.
        s.push(Insn::ldx(SIZE_DW, 1, 0, pcpu::TAIL as i16))
            .jump_to(Cond::EqImm(1, 0), fresh);
        if site.copy.is_some() {
            s.push(word);
        }
        s.push(Insn::st_dw(0, pcpu::TAIL as i16, 0))
            .push(Insn::ldx(SIZE_DW, 2, 0, pcpu::LEFT as i16))
            .push(Insn::alu64_imm(OP_ADD, 2, 1))
            .jump_to(Cond::NeReg(1, 2), fresh)
            // The caller's run was sampled: load + 1 == left + 1.
            .push(Insn::ldx(SIZE_DW, 1, 0, pcpu::LOAD as i16))
            .push(Insn::alu64_imm(OP_ADD, 1, 1))
            .jump_to(Cond::NeReg(1, 2), nothing);
        kfunc_guard(s, b, 2, nothing);
        store_mask(s, b, w, 2);
        s.push(Insn::mov64_imm(1, site.nregions as i32))
            .call_symbol(b.tail_enter);
        if site.fused.is_some() {
            s.push(Insn::ldx(SIZE_W, 1, 10, w.mask));
        }
        s.jump_to(Cond::Always, done);
    }
    s.bind(fresh);
    // The sampling countdown. A sampled run falls through: the verifier
    // walks the program with an unknown mask first, and the unsampled
    // run's known all-ones mask is then pruned against it at `done`. With
    // the copy inline, the unsampled run falls through into it instead
    // (it never reaches `done`, so the order does not matter there).
    let unsampled = s.label();
    s.push(Insn::ldx(SIZE_DW, c, 0, pcpu::LEFT as i16));
    if let Some((back, CopyAt::Inline(code))) = &site.copy {
        let sampled = s.label();
        s.jump_to(Cond::EqImm(c, 0), sampled)
            .push(Insn::alu64_imm(OP_ADD, c, -1))
            .push(Insn::stx_dw(0, pcpu::LEFT as i16, c));
        if site.hoist.is_none() {
            for x in back {
                s.push(*x);
            }
        }
        // The copy's last instruction is an exit or a jump: nothing falls
        // out of it.
        s.extend_new(code);
        s.bind(sampled);
    } else {
        s.jump_to(Cond::NeImm(c, 0), unsampled);
    }
    if let Some(x) = site.hoist {
        s.push(Insn::mov64_reg(x, x));
    }
    if site.copy.is_some() {
        s.push(word);
    }
    // A sampled run: reload the countdown from the config's mask, `runs +=
    // mask` (the window the countdown now holds, paid ahead: a reader adds
    // `sampled`, one per window, and subtracts what is left of it),
    // `++sampled` (the run's id).
    s.load_symbol(2, b.config)
        .push(Insn::ldx(SIZE_DW, 1, 2, config::SAMPLE_MASK as i16));
    if site.load {
        s.push(Insn::stx_dw(0, pcpu::LOAD as i16, 1));
    }
    s.push(Insn::stx_dw(0, pcpu::LEFT as i16, 1))
        .push(Insn::ldx(SIZE_DW, 3, 0, pcpu::RUNS as i16))
        .push(Insn::alu64_reg(OP_ADD, 1, 3))
        .push(Insn::stx_dw(0, pcpu::RUNS as i16, 1))
        .bump(0, pcpu::SAMPLED as i16, 1);
    // Without the module (`inxpect_kfuncs` 0, which the verifier knows)
    // the run counts `no_counter` and its mask stays all ones, known to the
    // verifier, so every site of the run is dead code. The module present,
    // the branch is never taken: the verifier removes it. The test right
    // after a store through R0 and in R1, which the next instruction sets:
    // where the module is present the loader turns it into a test of R0,
    // a map value the verifier knows is not NULL, and no instruction is
    // left of it (`pcpu::fold_flag` in the loader).
    let absent = s.label();
    kfunc_guard(s, b, 1, absent);
    // The mask computed in R1: a fused START tests it there (R1 is the
    // all-ones half on the other paths to `done`).
    s.push(Insn::ldx(SIZE_DW, 1, 2, config::DISABLED as i16));
    store_halves(s, w, 1);
    s.jump_to(Cond::Always, done);
    // No run falls in here (the jump above).
    s.bind(miss);
    s.push(Insn::mov64_imm(0, 0));
    match site.miss {
        Some(exit) => s.jump_to_slot(exit),
        None => s.push(Insn::exit()),
    };
    if b.kfunc_flag.is_some() {
        s.bind(absent);
        s.bump(0, pcpu::NO_COUNTER as i16, 3)
            .jump_to(Cond::Always, nothing);
    }
    // An unsampled run takes one off `left`, then, where the program has
    // an uninstrumented copy, runs that (its registers as the site found
    // them).
    match &site.copy {
        Some((_, CopyAt::Inline(_))) => {}
        copy => {
            s.bind(unsampled);
            s.push(Insn::alu64_imm(OP_ADD, c, -1))
                .push(Insn::stx_dw(0, pcpu::LEFT as i16, c));
            if let Some((back, CopyAt::Slot(start))) = copy {
                if site.hoist.is_none() {
                    for x in back {
                        s.push(*x);
                    }
                }
                s.jump_to_copy(*start);
            }
        }
    }
    // Nothing measured: all ones, a spilled register's constant the
    // verifier tracks (6.1 does not track a stored immediate), which makes
    // every site of the run dead code to it. With a copy and neither a
    // continuation nor a module to miss, no run gets here (the verifier
    // refuses unreachable code).
    if site.copy.is_some() && !site.tail_calls && b.kfunc_flag.is_none() {
        return;
    }
    s.bind(nothing);
    s.push(Insn::mov32_imm(1, -1))
        .push(Insn::stx(SIZE_W, 10, w.mask, 1));
    if let Some(hi) = w.mask_hi {
        s.push(Insn::stx(SIZE_W, 10, hi, 1));
    }
}

/// Where END keeps its delta across the statistics' look-up, its bound
/// with it (a callee-saved register, or a spilled scalar: a store to the
/// map value would lose the bound).
#[derive(Clone, Copy)]
enum Keep {
    Reg(u8),
    Slot(i16),
}

/// The test that sends a measurement to the runtime: the delta into `d`
/// (R0 = `now`, R3 = `then`, both kept), `goto slow` unless it is below
/// [`FAST_DELTA`] from two valid reads.
fn fast_delta(s: &mut Seq, counter: Counter, d: u8, slow: Label) {
    match counter {
        // 32-bit counters: the delta mod 2^32 (the runtime's DELTA_32), a
        // 32-bit subtraction, which zero-extends.
        Counter::Tsc | Counter::Pmc => {
            s.push(Insn::mov32_reg(d, 0))
                .push(Insn::alu32_reg(OP_SUB, d, 3));
        }
        // 64-bit: a negative delta is >= FAST_DELTA unsigned, so slow.
        _ => {
            s.push(Insn::mov64_reg(d, 0))
                .push(Insn::alu64_reg(OP_SUB, d, 3));
        }
    }
    if counter == Counter::Pmc {
        // An invalid read (bit 63) at either end: the runtime counts it.
        s.push(Insn::mov64_reg(4, 0))
            .push(Insn::alu64_reg(OP_OR, 4, 3))
            .jump_to(Cond::SltImm(4, 0), slow);
    }
    s.jump_to(Cond::GeImm(d, FAST_DELTA), slow);
}

/// `sum += d`, `hist[bucket_lo[d]]++`, `min`, `max` of the statistics at
/// `R0 + at` (`inxpect_stats`' layout at `sum`, `min`, `max`, `hist` given),
/// then `goto done`. R1..R5 but `d` are free.
///
/// Sum and bucket first, min and max last: a compare narrows d (d > max
/// gives d >= 1), so after it d must be dead for the verifier to prune the
/// join instead of walking the rest once per side. No count: the
/// histogram's sum is the count. The minimum is stored complemented (0:
/// none yet), so the first measurement needs no test: !d > !min.
fn add_stats(s: &mut Seq, base: u8, d: u8, buckets: usize, at: [usize; 4], done: Label) {
    let [sum, min, max, hist] = at.map(|o| o as i16);
    let t = free(base, d);
    s.push(Insn::ldx(SIZE_DW, t[0], base, sum))
        .push(Insn::alu64_reg(OP_ADD, t[0], d))
        .push(Insn::stx_dw(base, sum, t[0]))
        // hist[bucket_lo[d]]++
        .load_symbol(t[1], buckets)
        .push(Insn::alu64_reg(OP_ADD, t[1], d))
        .push(Insn::ldx(SIZE_B, t[1], t[1], 0))
        .push(Insn::alu64_imm(OP_LSH, t[1], 3))
        .push(Insn::alu64_reg(OP_ADD, t[1], base))
        .bump(t[1], hist, t[0]);
    // The stored minimum uncomplemented for the test (a new minimum is
    // rare once a region has run a while: only it pays the complement of
    // d), d unnarrowed by it (its bounds, 0..2^12, are tighter than any
    // the compare gives).
    let min_ok = s.label();
    s.push(Insn::ldx(SIZE_DW, t[0], base, min))
        .push(Insn::alu64_imm(OP_XOR, t[0], -1))
        .jump_to(Cond::GeReg(d, t[0]), min_ok)
        .push(Insn::mov64_reg(t[0], d))
        .push(Insn::alu64_imm(OP_XOR, t[0], -1))
        .push(Insn::stx_dw(base, min, t[0]));
    s.bind(min_ok);
    s.push(Insn::ldx(SIZE_DW, t[0], base, max))
        .jump_to(Cond::LeReg(d, t[0]), done)
        .push(Insn::stx_dw(base, max, d))
        .jump_to(Cond::Always, done);
}

/// Two scratch registers of R1..R5 other than `a` and `b`.
fn free(a: u8, b: u8) -> [u8; 2] {
    let mut r = (1..=5).filter(|&x| x != a && x != b);
    [0; 2].map(|_| r.next().expect("R1..R5 hold two others"))
}

/// END's statistics of a region with fast statistics in `inxpect_pcpu`
/// ([`pcpu::fast`], at `at`): R0 = `now`, R3 = `then`, R1 = the per-CPU
/// pointer END already holds, region held and cleared. As
/// [`record_inline`], but no look-up, so no call, no miss and nothing to
/// keep across one: the delta stays in R2.
fn record_fast(s: &mut Seq, counter: Counter, st: StatsSyms, at: usize, slow: Label, done: Label) {
    use crate::runtime::pcpu::fast;
    fast_delta(s, counter, 2, slow);
    add_stats(
        s,
        1,
        2,
        st.buckets,
        [fast::SUM, fast::MIN, fast::MAX, fast::HIST].map(|o| at + o),
        done,
    );
}

/// END's statistics inline, for the common measurement: R0 = `now`, R3 =
/// `then`, R1 = the per-CPU pointer, region `id` held and cleared. A delta
/// below [`FAST_DELTA`] from two valid reads adds to the statistics here,
/// as `record()` in the runtime would (sum, min, max, its bucket from the
/// runtime's table) and jumps to `done`; anything else (an invalid
/// read, a clock that went back, a long delta) goes to `slow`, which calls
/// the runtime with R0 and R3 unchanged. No call and no frame on the
/// common path.
fn record_inline(
    s: &mut Seq,
    counter: Counter,
    st: StatsSyms,
    keep: Keep,
    id: u32,
    slow: Label,
    done: Label,
) {
    // The delta computed where it stays across the look-up: the spare
    // register, or R2 then spilled to the site's slot.
    let d = match keep {
        Keep::Reg(f) => f,
        Keep::Slot(_) => 2,
    };
    fast_delta(s, counter, d, slow);
    if let Keep::Slot(o) = keep {
        s.push(Insn::stx_dw(10, o, 2));
    }
    s.load_symbol(1, st.map)
        .load_symbol_at(2, st.ids, 4 * id as i32)
        .helper(1)
        .jump_to(Cond::EqImm(0, 0), done);
    if let Keep::Slot(o) = keep {
        s.push(Insn::ldx_dw(d, 10, o));
    }
    add_stats(
        s,
        0,
        d,
        st.buckets,
        [stats::SUM, stats::MIN, stats::MAX, stats::HIST],
        done,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::{CLS_ALU64, CLS_JMP, CLS_LDX};

    /// The enabled test skips exactly when the region's bit of its config
    /// word is set, bits 31 and up included (an AND's immediate is
    /// sign-extended), run here on chosen words.
    #[test]
    fn enabled_test_skips_on_the_regions_bit_alone() {
        for id in [0u32, 1, 30, 31, 32, 40, 63, 64, 94, 95, 96, 127, 255] {
            let mut s = Seq::new();
            let skip = s.label();
            test_enabled(&mut s, 7, id, skip);
            s.bind(skip);
            let code = s.finish();
            let bit = 1u64 << (id % 64);
            for word in [bit, !bit, u64::MAX, 0, bit | 1, bit | 1 << 63] {
                let (mut r1, mut skipped, mut i) = (0u64, None, 0);
                while i < code.len() {
                    let x = code[i].insn;
                    if x.is_ld_imm64() {
                        assert_eq!((x.dst, code[i].load), (1, Some(7)), "{id}: the config");
                        i += 2;
                        continue;
                    }
                    match (x.class(), x.code & 0xf0) {
                        (CLS_LDX, _) => {
                            let at = config::DISABLED + 8 * (id / 64) as usize;
                            assert_eq!(x.off as usize, at, "{id}: the word");
                            r1 = word;
                        }
                        (CLS_ALU64, OP_AND) => r1 &= x.imm as i64 as u64,
                        (CLS_ALU64, OP_RSH) => r1 >>= x.imm,
                        // JNE R1, imm
                        (CLS_JMP, 0x50) => {
                            assert_eq!(x.dst, 1);
                            skipped = Some(r1 != x.imm as i64 as u64);
                        }
                        other => panic!("{id}: unexpected {other:?}"),
                    }
                    i += 1;
                }
                assert_eq!(
                    skipped,
                    Some(word & bit != 0),
                    "region {id}, word {word:#x}"
                );
            }
        }
    }
}
