//! The inlined body of each probe kind (registers R0..R5 are free here: the
//! site saved what is live).
//!
//! A program entry counts the run and decides the sampling, or, entered by
//! a tail call of this run, continues it. A START or END calls the runtime
//! (or reads the counter itself) only when this run is sampled, so an
//! unsampled run costs a few loads and a branch per probe and no call.

use super::backend::{Backend, Read};
use super::seq::{Cond, Label, Seq};
use crate::insn::{Insn, OP_ADD, OP_AND, OP_RSH, SIZE_DW, SIZE_W};
use crate::probe::Kind;
use crate::runtime::{config, pcpu};

/// What a body needs to know about its site.
pub struct Site {
    /// In a program: the stack slot of this run's sampling word, written at
    /// the entry: 0 = not sampled, else this CPU's `inxpect_pcpu` entry (a
    /// pointer the verifier tracks through the slot, so no site looks it up
    /// again).
    pub flag: Option<i16>,
    /// The site already tested the sampling word.
    pub checked: bool,
    /// A dead callee-saved register left after the saves: a START keeps the
    /// per-CPU pointer there across its own read.
    pub spare: Option<u8>,
    /// Regions in the object (what a tail-call continuation closes).
    pub nregions: u32,
    /// The object makes tail calls: program entries may continue a run.
    pub tail_calls: bool,
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
/// the module the entry stores a sampling word of 0 the verifier knows,
/// which makes the whole site dead code (and a guard would put two more
/// instructions between END's read and START's). Elsewhere a missing module
/// jumps to `skip`.
fn read(s: &mut Seq, b: &Backend, r: Read, site: &Site, skip: Label) {
    match r {
        Read::Helper(id) => {
            s.helper(id);
        }
        Read::Kfunc(sym) => {
            if site.flag.is_none() {
                kfunc_guard(s, b, 1, skip);
            }
            s.call_symbol(sym);
        }
    }
}

pub fn body(k: Kind, b: &Backend, site: &Site) -> Seq {
    let mut s = Seq::new();
    let done = s.label();
    match k {
        Kind::RunBegin => run_begin(&mut s, b, site, done),
        Kind::Start(id) | Kind::End(id) => {
            match site.flag {
                Some(_) if site.checked => {}
                Some(fl) => {
                    s.push(Insn::ldx_dw(1, 10, fl))
                        .jump_to(Cond::EqImm(1, 0), done);
                }
                // Not in a program (no word): sampled while left == load.
                None => {
                    pcpu_lookup(&mut s, b);
                    s.jump_to(Cond::EqImm(0, 0), done)
                        .push(Insn::ldx(SIZE_DW, 1, 0, pcpu::LEFT as i16))
                        .push(Insn::ldx(SIZE_DW, 2, 0, pcpu::LOAD as i16))
                        .jump_to(Cond::NeReg(1, 2), done);
                }
            }
            if matches!(k, Kind::Start(_)) {
                start(&mut s, b, site, id, done);
            } else {
                end(&mut s, b, site, id, done);
            }
        }
        // Before a tail call: mark it under way, so the program it enters
        // continues this run. After it (it failed): clear the mark.
        Kind::TailMark | Kind::TailClear => {
            pcpu_lookup(&mut s, b);
            s.jump_to(Cond::EqImm(0, 0), done);
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

fn start(s: &mut Seq, b: &Backend, site: &Site, id: u32, done: Label) {
    match (b.inline, site.spare) {
        // In a program: the bookkeeping inline too (region enabled,
        // `held.run = cur`; the run is sampled, so `cur` is set), then the
        // read, stored through the per-CPU pointer the word holds, kept in
        // `f` across the read; no runtime call.
        (Some((r, _, _)), Some(f)) if site.flag.is_some() => {
            let fl = site.flag.expect("checked");
            let word = (config::ENABLED + 8 * (id as usize / 64)) as i16;
            let bit = id % 64;
            s.load_symbol(1, b.config)
                .push(Insn::ldx(SIZE_DW, 1, 1, word));
            // A shift for the bits an imm32 would sign-extend.
            if bit < 31 {
                s.push(Insn::alu64_imm(OP_AND, 1, 1 << bit));
            } else {
                s.push(Insn::alu64_imm(OP_RSH, 1, bit as i32))
                    .push(Insn::alu64_imm(OP_AND, 1, 1));
            }
            s.jump_to(Cond::EqImm(1, 0), done)
                .push(Insn::ldx_dw(f, 10, fl))
                .push(Insn::ldx(SIZE_DW, 1, f, pcpu::CUR as i16))
                .push(Insn::stx_dw(f, held(id), 1));
            read(s, b, r, site, done);
            s.push(Insn::stx_dw(f, held(id) + 8, 0));
        }
        // Elsewhere: the bookkeeping in the runtime, then the read here.
        (Some((r, prep, _)), Some(f)) => {
            s.push(Insn::mov64_imm(1, id as i32))
                .call_symbol(prep)
                .jump_to(Cond::EqImm(0, 0), done);
            pcpu_lookup(s, b);
            s.jump_to(Cond::EqImm(0, 0), done)
                .push(Insn::mov64_reg(f, 0));
            read(s, b, r, site, done);
            s.push(Insn::stx_dw(f, held(id) + 8, 0));
        }
        _ => {
            s.push(Insn::mov64_imm(1, id as i32)).call_symbol(b.start);
        }
    }
}

/// END reads first, then hands the value to the runtime.
fn end(s: &mut Seq, b: &Backend, site: &Site, id: u32, done: Label) {
    match (b.inline, b.record, site.flag) {
        // In a program: the held START checked and cleared inline through
        // the word's per-CPU pointer, then only the statistics are a call.
        (Some((r, _, _)), Some(record), Some(fl)) => {
            read(s, b, b.end_read.unwrap_or(r), site, done);
            s.push(Insn::ldx_dw(1, 10, fl))
                .push(Insn::ldx(SIZE_DW, 2, 1, held(id)))
                .push(Insn::ldx(SIZE_DW, 3, 1, pcpu::CUR as i16))
                .jump_to(Cond::NeReg(2, 3), done)
                .push(Insn::st_dw(1, held(id), 0))
                .push(Insn::ldx(SIZE_DW, 3, 1, held(id) + 8))
                .push(Insn::mov64_reg(2, 0))
                .push(Insn::mov64_imm(1, id as i32))
                .call_symbol(record);
        }
        (Some((r, _, end_value)), _, _) => {
            read(s, b, b.end_read.unwrap_or(r), site, done);
            s.push(Insn::mov64_reg(2, 0))
                .push(Insn::mov64_imm(1, id as i32))
                .call_symbol(end_value);
        }
        (None, _, _) => {
            s.push(Insn::mov64_imm(1, id as i32)).call_symbol(b.end);
        }
    }
}

/// A program entry. `done` follows.
fn run_begin(s: &mut Seq, b: &Backend, site: &Site, done: Label) {
    let fl = site.flag.expect("a program entry has the sampling word");
    s.push(Insn::st_dw(10, fl, 0));
    pcpu_lookup(s, b);
    s.jump_to(Cond::EqImm(0, 0), done);
    let fresh = s.label();
    if site.tail_calls {
        // Entered by a tail call of this run (`tail == left + 1`, set at
        // the call site): the same run, its sampling decision, and the
        // regions the caller held end here.
        s.push(Insn::ldx(SIZE_DW, 1, 0, pcpu::TAIL as i16))
            .jump_to(Cond::EqImm(1, 0), fresh)
            .push(Insn::st_dw(0, pcpu::TAIL as i16, 0))
            .push(Insn::ldx(SIZE_DW, 2, 0, pcpu::LEFT as i16))
            .push(Insn::alu64_imm(OP_ADD, 2, 1))
            .jump_to(Cond::NeReg(1, 2), fresh)
            // The caller's run was sampled: load + 1 == left + 1.
            .push(Insn::ldx(SIZE_DW, 1, 0, pcpu::LOAD as i16))
            .push(Insn::alu64_imm(OP_ADD, 1, 1))
            .jump_to(Cond::NeReg(1, 2), done);
        kfunc_guard(s, b, 2, done);
        s.push(Insn::stx_dw(10, fl, 0))
            .push(Insn::mov64_imm(1, site.nregions as i32))
            .call_symbol(b.tail_enter)
            .jump_to(Cond::Always, done);
    }
    s.bind(fresh);
    // The sampling countdown: an unsampled run takes one off `left` and
    // is done (the word stays 0).
    let sample = s.label();
    s.push(Insn::ldx(SIZE_DW, 1, 0, pcpu::LEFT as i16))
        .jump_to(Cond::EqImm(1, 0), sample)
        .push(Insn::alu64_imm(OP_ADD, 1, -1))
        .push(Insn::stx_dw(0, pcpu::LEFT as i16, 1))
        .jump_to(Cond::Always, done);
    // A sampled run: `runs += load + 1` (the runs since the last sample,
    // this one included), reload the countdown from the config's mask,
    // `cur = ++sampled`.
    s.bind(sample);
    s.push(Insn::ldx(SIZE_DW, 1, 0, pcpu::LOAD as i16))
        .push(Insn::ldx(SIZE_DW, 2, 0, pcpu::RUNS as i16))
        .push(Insn::alu64_reg(OP_ADD, 1, 2))
        .push(Insn::alu64_imm(OP_ADD, 1, 1))
        .push(Insn::stx_dw(0, pcpu::RUNS as i16, 1))
        .load_symbol(2, b.config)
        .push(Insn::ldx(SIZE_DW, 2, 2, config::SAMPLE_MASK as i16))
        .push(Insn::stx_dw(0, pcpu::LOAD as i16, 2))
        .push(Insn::stx_dw(0, pcpu::LEFT as i16, 2))
        .bump(0, pcpu::SAMPLED as i16, 1)
        .push(Insn::stx_dw(0, pcpu::CUR as i16, 1));
    // Without the module (`inxpect_kfuncs` 0, which the verifier knows)
    // the run counts `no_counter` and the word stays a known 0, so every
    // site of the run is dead code.
    if let Some(kf) = b.kfunc_flag {
        let store = s.label();
        s.load_symbol(2, kf)
            .push(Insn::ldx(SIZE_W, 2, 2, 0))
            .jump_to(Cond::NeImm(2, 0), store)
            .bump(0, pcpu::NO_COUNTER as i16, 3)
            .jump_to(Cond::Always, done);
        s.bind(store);
    }
    s.push(Insn::stx_dw(10, fl, 0));
}
