//! A small builder for inserted sequences: instructions, symbol loads and
//! calls, and jumps to labels. Jump distances are resolved once, at
//! [`Seq::finish`], so no offset is ever computed by hand.

use crate::insn::{Insn, CLS_JMP, OP_ADD};
use crate::patch::NewInsn;
use crate::runtime::Window;

/// A position in a [`Seq`], bound once with [`Seq::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Jump conditions the probes use (64-bit compares).
#[derive(Clone, Copy, Debug)]
pub enum Cond {
    Always,
    EqImm(u8, i32),
    NeImm(u8, i32),
    EqReg(u8, u8),
    NeReg(u8, u8),
    /// Unsigned `>=`.
    GeImm(u8, i32),
    GeReg(u8, u8),
    /// Unsigned `<=`.
    LeReg(u8, u8),
    /// Signed `<`.
    SltImm(u8, i32),
    /// `reg & imm` (sign-extended) nonzero.
    SetImm(u8, i32),
}

impl Cond {
    /// The jump, its offset left for the caller to fix.
    fn insn(self) -> Insn {
        match self {
            Cond::Always => Insn::ja(0),
            Cond::EqImm(r, imm) => Insn::jeq_imm(r, imm, 0, false),
            Cond::NeImm(r, imm) => Insn::jeq_imm(r, imm, 0, true),
            Cond::EqReg(a, b) => jmp_reg(0x10, a, b),
            Cond::NeReg(a, b) => jmp_reg(0x50, a, b),
            Cond::GeImm(r, imm) => jmp_imm(0x30, r, imm),
            Cond::GeReg(a, b) => jmp_reg(0x30, a, b),
            Cond::LeReg(a, b) => jmp_reg(0xb0, a, b),
            Cond::SltImm(r, imm) => jmp_imm(0xc0, r, imm),
            Cond::SetImm(r, imm) => jmp_imm(0x40, r, imm),
        }
    }
}

/// Where a counter read is in a [`Seq`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    /// Index of the instruction that reads, or of the call that does.
    pub at: usize,
    /// The read is inside a runtime function `at` calls: the call, and the
    /// function's code before or after the read, are in the window.
    pub in_call: bool,
}

impl Read {
    /// Where the window after this read (START's) begins.
    pub fn after(&self) -> usize {
        self.at + usize::from(!self.in_call)
    }
    /// Where the window before this read (END's) ends, exclusive.
    pub fn before(&self) -> usize {
        self.at + usize::from(self.in_call)
    }
}

#[derive(Default)]
pub struct Seq {
    insns: Vec<NewInsn>,
    /// (index of the jump in `insns`, label)
    jumps: Vec<(usize, Label)>,
    labels: Vec<Option<usize>>,
    /// The counter reads, in order (see [`Seq::mark_read`]).
    reads: Vec<Read>,
}

impl Seq {
    pub fn new() -> Seq {
        Seq::default()
    }

    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `l` to the next instruction pushed (or the end of the sequence).
    pub fn bind(&mut self, l: Label) {
        debug_assert!(self.labels[l.0].is_none(), "label bound twice");
        self.labels[l.0] = Some(self.insns.len());
    }

    pub fn push(&mut self, i: Insn) -> &mut Self {
        self.insns.push(NewInsn::plain(i));
        self
    }

    /// `dst = &sym` (a map, or a global's address): an `ld_imm64` libbpf
    /// resolves through a relocation.
    pub fn load_symbol(&mut self, dst: u8, sym: usize) -> &mut Self {
        self.load_symbol_at(dst, sym, 0)
    }

    /// `dst = &sym + off`: the offset is the relocation's addend, which a
    /// REL relocation keeps in the first slot's immediate.
    pub fn load_symbol_at(&mut self, dst: u8, sym: usize, off: i32) -> &mut Self {
        let [mut a, b] = Insn::ld_imm64(dst);
        a.imm = off;
        self.insns.push(NewInsn {
            load: Some(sym),
            ..NewInsn::plain(a)
        });
        self.insns.push(NewInsn::plain(b));
        self
    }

    /// A call of `sym`: a bpf-to-bpf call of a runtime function, or a kfunc
    /// (extern symbol; the patch stage writes the right relocation for each).
    pub fn call_symbol(&mut self, sym: usize) -> &mut Self {
        self.insns.push(NewInsn {
            call: Some(sym),
            ..NewInsn::plain(Insn::pseudo_call(-1))
        });
        self
    }

    pub fn helper(&mut self, id: i32) -> &mut Self {
        self.push(Insn::helper_call(id))
    }

    /// `goto` the copy of the input's instruction at `slot` (see
    /// [`NewInsn::copy`]): the patch stage resolves it.
    pub fn jump_to_copy(&mut self, slot: usize) -> &mut Self {
        self.insns.push(NewInsn {
            to_copy: Some(slot),
            ..NewInsn::plain(Insn::ja(0))
        });
        self
    }

    /// Instructions as they are (a copy of the input's code, see
    /// [`NewInsn::copy`]): the patch stage encodes them.
    pub fn extend_new(&mut self, code: &[NewInsn]) -> &mut Self {
        self.insns.extend_from_slice(code);
        self
    }

    /// `goto` the input's instruction at `slot` itself (see
    /// [`NewInsn::to_slot`]): the patch stage resolves it.
    pub fn jump_to_slot(&mut self, slot: usize) -> &mut Self {
        self.insns.push(NewInsn {
            to_slot: Some(slot),
            ..NewInsn::plain(Insn::ja(0))
        });
        self
    }

    pub fn jump_to(&mut self, c: Cond, l: Label) -> &mut Self {
        self.jumps.push((self.insns.len(), l));
        self.insns.push(NewInsn::plain(c.insn()));
        self
    }

    /// `[base + off] += 1` (64 bits) through `tmp`.
    pub fn bump(&mut self, base: u8, off: i16, tmp: u8) -> &mut Self {
        self.push(Insn::ldx_dw(tmp, base, off))
            .push(Insn::alu64_imm(OP_ADD, tmp, 1))
            .push(Insn::stx_dw(base, off, tmp))
    }

    /// The next instruction pushed reads the counter (or calls the runtime
    /// function that does): the edge of a region's measured window.
    pub fn mark_read(&mut self) -> &mut Self {
        self.reads.push(Read {
            at: self.insns.len(),
            in_call: false,
        });
        self
    }

    /// The next instruction calls a runtime function that reads the counter.
    pub fn mark_call_read(&mut self) -> &mut Self {
        self.reads.push(Read {
            at: self.insns.len(),
            in_call: true,
        });
        self
    }

    /// The marks of [`Seq::mark_read`] and [`Seq::mark_call_read`], in order.
    pub fn reads(&self) -> &[Read] {
        &self.reads
    }

    /// Whether some call in the sequence calls a symbol `which` accepts.
    pub fn calls_any(&self, which: impl Fn(usize) -> bool) -> bool {
        self.insns.iter().filter_map(|n| n.call).any(which)
    }

    /// Appends `other`, its labels kept apart from ours.
    pub fn append(&mut self, other: Seq) -> &mut Self {
        let base = self.insns.len();
        let lbase = self.labels.len();
        self.labels
            .extend(other.labels.iter().map(|p| p.map(|p| p + base)));
        self.jumps.extend(
            other
                .jumps
                .iter()
                .map(|&(i, Label(l))| (i + base, Label(l + lbase))),
        );
        self.reads.extend(other.reads.iter().map(|r| Read {
            at: r.at + base,
            in_call: r.in_call,
        }));
        self.insns.extend(other.insns);
        self
    }

    /// The instructions, every jump pointing at its label.
    pub fn finish(mut self) -> Vec<NewInsn> {
        for &(i, Label(l)) in &self.jumps {
            let to = self.labels[l].expect("jump to an unbound label");
            assert!(to > i, "inserted code jumps forward only");
            let off = i16::try_from(to - i - 1).expect("inserted sequences are short");
            self.insns[i].insn.off = off;
        }
        self.insns
    }
}

/// What runs on the fall-through path of finished code `code` from `from`
/// (jumps are not taken; `ja` is followed) up to `to`, exclusive. None if
/// that path leaves before reaching `to`. A measured run never enters an
/// uninstrumented copy: the branch before one (the entry's countdown, the
/// copy inline after it) is taken instead.
pub fn window(
    code: &[NewInsn],
    from: usize,
    to: usize,
    runtime: impl Fn(usize) -> bool,
) -> Option<Window> {
    let mut w = Window::default();
    let mut i = from;
    let mut last_branch: Option<(usize, Window)> = None;
    while i < to {
        if code[i].copy.is_some() {
            let (b, at) = last_branch.take()?;
            // The branch itself runs, taken.
            w = at;
            w.insns += 2;
            i = usize::try_from(b as i64 + 1 + code[b].insn.branch_off()).ok()?;
            continue;
        }
        let x = &code[i].insn;
        if x.is_ld_imm64() {
            w.imm64 += 1;
            i += 2;
            continue;
        }
        if x.is_call() {
            w.calls += 1;
            w.runtime_calls += u32::from(code[i].call.is_some_and(&runtime));
        } else if x.is_unconditional() {
            // One jump instruction; a `goto +0` the verifier removes.
            w.insns += u32::from(x.branch_off() != 0);
            i = usize::try_from(i as i64 + 1 + x.branch_off()).ok()?;
            continue;
        } else if x.is_exit() {
            return None;
        } else {
            if x.is_branch() {
                last_branch = Some((i, w));
            }
            w.insns += if x.is_branch() { 2 } else { 1 };
        }
        i += 1;
    }
    (i == to).then_some(w)
}

fn jmp_imm(op: u8, dst: u8, imm: i32) -> Insn {
    Insn {
        code: CLS_JMP | op,
        dst,
        src: 0,
        off: 0,
        imm,
    }
}

fn jmp_reg(op: u8, dst: u8, src: u8) -> Insn {
    Insn {
        code: CLS_JMP | op | 0x08,
        dst,
        src,
        off: 0,
        imm: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_resolve_to_labels() {
        let mut s = Seq::new();
        let out = s.label();
        s.jump_to(Cond::EqImm(1, 0), out);
        s.load_symbol(2, 7);
        s.push(Insn::mov64_imm(0, 1));
        s.bind(out);
        s.push(Insn::mov64_imm(0, 2));
        let v = s.finish();
        assert_eq!(v.len(), 5);
        // Over the ld_imm64 (two slots) and the mov.
        assert_eq!(v[0].insn.off, 3);
        assert_eq!(v[1].load, Some(7));
    }

    #[test]
    fn windows_follow_the_fall_through_path() {
        let mut s = Seq::new();
        let skip = s.label();
        let over = s.label();
        s.push(Insn::mov64_imm(1, 0))
            .jump_to(Cond::EqImm(1, 0), skip)
            .load_symbol(2, 7)
            .jump_to(Cond::Always, over)
            .push(Insn::mov64_imm(3, 0));
        s.bind(over);
        s.mark_read().call_symbol(3).push(Insn::mov64_imm(4, 0));
        s.bind(skip);
        let at = s.reads()[0].at;
        let v = s.finish();
        assert_eq!(at, 6);
        // mov, the untaken jump (2), the immediate, the `ja` over the mov.
        let head = window(&v, 0, at, |_| false).expect("reaches the read");
        assert_eq!((head.insns, head.imm64, head.calls), (4, 1, 0));
        let tail = window(&v, at + 1, v.len(), |_| false).expect("reaches the end");
        assert_eq!((tail.insns, tail.imm64, tail.calls), (1, 0, 0));
        let all = window(&v, 0, v.len(), |sym| sym == 3).expect("reaches the end");
        assert_eq!((all.calls, all.runtime_calls), (1, 1));
        // A path that jumps past the read never reaches it.
        assert_eq!(window(&v, 4, 5, |_| false), None);
    }

    /// The measured path takes the branch over an inline copy (whose own
    /// loop back would otherwise never end the walk).
    #[test]
    fn windows_never_enter_an_inline_copy() {
        let mut s = Seq::new();
        let sampled = s.label();
        let copy: Vec<NewInsn> = [Insn::mov64_imm(0, 1), Insn::ja(-2), Insn::exit()]
            .into_iter()
            .enumerate()
            .map(|(k, i)| NewInsn {
                copy: Some(k),
                ..NewInsn::plain(i)
            })
            .collect();
        s.push(Insn::ldx_dw(1, 0, 40))
            .jump_to(Cond::EqImm(1, 0), sampled)
            .push(Insn::alu64_imm(OP_ADD, 1, -1))
            .push(Insn::stx_dw(0, 40, 1))
            .extend_new(&copy);
        s.bind(sampled);
        s.push(Insn::mov64_imm(2, 0));
        let v = s.finish();
        // The load, the taken branch (2), the mov after the copy.
        let w = window(&v, 0, v.len(), |_| false).expect("reaches the end");
        assert_eq!(w.insns, 4);
    }

    #[test]
    fn appended_labels_keep_their_targets() {
        let mut inner = Seq::new();
        let l = inner.label();
        inner.jump_to(Cond::Always, l);
        inner.push(Insn::mov64_imm(0, 0));
        inner.bind(l);
        let mut s = Seq::new();
        s.push(Insn::mov64_imm(1, 1));
        s.append(inner);
        s.push(Insn::mov64_imm(2, 2));
        let v = s.finish();
        assert_eq!(v[1].insn.off, 1);
    }
}
