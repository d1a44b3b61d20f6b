//! BPF instruction codec and disassembler.
//!
//! An [`Insn`] is one 8-byte slot. `ld_imm64` takes two slots; the second is
//! kept as its own `Insn` with code 0 so that slot indices stay the unit
//! every offset in the object is counted in.

use std::fmt;

pub const INSN_SIZE: usize = 8;

/// An instruction slot in a code section (8 bytes each; the second half of
/// an `ld_imm64` is a slot too). Plans and insertions speak slots; ELF
/// offsets, `.BTF.ext` and messages speak bytes: [`Slot::bytes`] is the one
/// conversion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub usize);

impl Slot {
    pub fn bytes(self) -> u64 {
        (self.0 * INSN_SIZE) as u64
    }
    pub fn of_bytes(off: u64) -> Slot {
        Slot(off as usize / INSN_SIZE)
    }
}

// Instruction classes.
pub const CLS_LD: u8 = 0x00;
pub const CLS_LDX: u8 = 0x01;
pub const CLS_ST: u8 = 0x02;
pub const CLS_STX: u8 = 0x03;
pub const CLS_ALU: u8 = 0x04;
pub const CLS_JMP: u8 = 0x05;
pub const CLS_JMP32: u8 = 0x06;
pub const CLS_ALU64: u8 = 0x07;

// Jump operations (high nibble).
pub const JA: u8 = 0x00;
pub const CALL: u8 = 0x80;
pub const EXIT: u8 = 0x90;

pub const LD_IMM64: u8 = 0x18;
pub const SIZE_W: u8 = 0x00;
pub const SIZE_B: u8 = 0x10;
pub const SIZE_DW: u8 = 0x18;
pub const OP_ADD: u8 = 0x00;
pub const OP_SUB: u8 = 0x10;
pub const OP_OR: u8 = 0x40;
pub const OP_AND: u8 = 0x50;
pub const OP_LSH: u8 = 0x60;
pub const OP_RSH: u8 = 0x70;
pub const OP_XOR: u8 = 0xa0;
pub const OP_ARSH: u8 = 0xc0;
pub const PSEUDO_CALL: u8 = 1;
pub const PSEUDO_KFUNC_CALL: u8 = 2;
pub const PSEUDO_FUNC: u8 = 4;

/// One 8-byte instruction slot, fields as in `struct bpf_insn`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub fn decode(b: &[u8]) -> Insn {
        Insn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn encode(&self) -> [u8; 8] {
        let o = self.off.to_le_bytes();
        let i = self.imm.to_le_bytes();
        [
            self.code,
            (self.src << 4) | (self.dst & 0x0f),
            o[0],
            o[1],
            i[0],
            i[1],
            i[2],
            i[3],
        ]
    }

    pub fn class(&self) -> u8 {
        self.code & 0x07
    }
    fn op(&self) -> u8 {
        self.code & 0xf0
    }
    pub fn is_ld_imm64(&self) -> bool {
        self.code == LD_IMM64
    }
    pub fn is_jmp_class(&self) -> bool {
        matches!(self.class(), CLS_JMP | CLS_JMP32)
    }
    pub fn is_call(&self) -> bool {
        self.code == CLS_JMP | CALL
    }
    pub fn is_pseudo_call(&self) -> bool {
        self.is_call() && self.src == PSEUDO_CALL
    }
    pub fn is_exit(&self) -> bool {
        self.code == CLS_JMP | EXIT
    }
    /// A jump with a target (conditional or not), not a call or exit.
    pub fn is_branch(&self) -> bool {
        self.is_jmp_class() && !matches!(self.op(), CALL | EXIT)
    }
    pub fn is_unconditional(&self) -> bool {
        self.is_branch() && self.op() == JA
    }
    /// `gotol`: JMP32|JA takes its offset from `imm`.
    pub fn is_long_ja(&self) -> bool {
        self.code == CLS_JMP32 | JA
    }
    /// Branch offset in slots, counted from the next slot.
    pub fn branch_off(&self) -> i64 {
        if self.is_long_ja() {
            self.imm as i64
        } else {
            self.off as i64
        }
    }

    // Constructors for the probe sequences.
    pub fn mov64_reg(dst: u8, src: u8) -> Insn {
        Insn {
            code: CLS_ALU64 | 0xb0 | 0x08,
            dst,
            src,
            off: 0,
            imm: 0,
        }
    }
    pub fn mov64_imm(dst: u8, imm: i32) -> Insn {
        Insn {
            code: CLS_ALU64 | 0xb0,
            dst,
            src: 0,
            off: 0,
            imm,
        }
    }
    pub fn stx_dw(dst: u8, off: i16, src: u8) -> Insn {
        Insn::stx(SIZE_DW, dst, off, src)
    }
    /// `*(size *)(dst + off) = src`.
    pub fn stx(size: u8, dst: u8, off: i16, src: u8) -> Insn {
        Insn {
            code: CLS_STX | 0x60 | size,
            dst,
            src,
            off,
            imm: 0,
        }
    }
    /// `wdst = imm`, zero-extended.
    pub fn mov32_imm(dst: u8, imm: i32) -> Insn {
        Insn {
            code: CLS_ALU | 0xb0,
            dst,
            src: 0,
            off: 0,
            imm,
        }
    }
    pub fn st_dw(dst: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code: CLS_ST | 0x18 | 0x60,
            dst,
            src: 0,
            off,
            imm,
        }
    }
    pub fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
        Insn {
            code: CLS_LDX | 0x18 | 0x60,
            dst,
            src,
            off,
            imm: 0,
        }
    }
    /// The two slots of `dst = imm64` (0 here: a relocation fills it).
    pub fn ld_imm64(dst: u8) -> [Insn; 2] {
        [
            Insn {
                code: LD_IMM64,
                dst,
                src: 0,
                off: 0,
                imm: 0,
            },
            Insn::default(),
        ]
    }
    pub fn ldx(size: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn {
            code: CLS_LDX | 0x60 | size,
            dst,
            src,
            off,
            imm: 0,
        }
    }
    pub fn alu64_imm(op: u8, dst: u8, imm: i32) -> Insn {
        Insn {
            code: CLS_ALU64 | op,
            dst,
            src: 0,
            off: 0,
            imm,
        }
    }
    /// `wdst = wsrc`: the low 32 bits, zero-extended.
    pub fn mov32_reg(dst: u8, src: u8) -> Insn {
        Insn {
            code: CLS_ALU | 0xb0 | 0x08,
            dst,
            src,
            off: 0,
            imm: 0,
        }
    }
    /// `wdst op= wsrc`: 32-bit, the result zero-extended.
    pub fn alu32_reg(op: u8, dst: u8, src: u8) -> Insn {
        Insn {
            code: CLS_ALU | op | 0x08,
            dst,
            src,
            off: 0,
            imm: 0,
        }
    }
    pub fn alu64_reg(op: u8, dst: u8, src: u8) -> Insn {
        Insn {
            code: CLS_ALU64 | op | 0x08,
            dst,
            src,
            off: 0,
            imm: 0,
        }
    }
    /// `if dst == imm goto +off` (`ne`: `!=`).
    pub fn jeq_imm(dst: u8, imm: i32, off: i16, ne: bool) -> Insn {
        Insn {
            code: CLS_JMP | if ne { 0x50 } else { 0x10 },
            dst,
            src: 0,
            off,
            imm,
        }
    }
    pub fn exit() -> Insn {
        Insn {
            code: CLS_JMP | EXIT,
            dst: 0,
            src: 0,
            off: 0,
            imm: 0,
        }
    }
    pub fn ja(off: i16) -> Insn {
        Insn {
            code: CLS_JMP | JA,
            dst: 0,
            src: 0,
            off,
            imm: 0,
        }
    }
    pub fn helper_call(id: i32) -> Insn {
        Insn {
            code: CLS_JMP | CALL,
            dst: 0,
            src: 0,
            off: 0,
            imm: id,
        }
    }
    pub fn pseudo_call(imm: i32) -> Insn {
        Insn {
            code: CLS_JMP | CALL,
            dst: 0,
            src: PSEUDO_CALL,
            off: 0,
            imm,
        }
    }

    /// Whether this opcode is one the rewriter understands. Unknown opcodes are
    /// refused rather than guessed at: liveness must be exact.
    pub fn is_known(&self) -> bool {
        let c = self.code;
        // R0..R10 only; the second slot of ld_imm64 is checked by the caller.
        if self.dst > 10 || self.src > 10 {
            return false;
        }
        match self.class() {
            CLS_LD => c == LD_IMM64 || matches!(c & 0xe0, 0x20 | 0x40) && c & 0x18 != 0x18,
            CLS_LDX => {
                matches!(c & 0xe0, 0x60 | 0x80) && matches!(c & 0x18, 0x00 | 0x08 | 0x10 | 0x18)
            }
            CLS_ST => c & 0xe0 == 0x60,
            CLS_STX => matches!(c & 0xe0, 0x60 | 0xc0),
            CLS_ALU | CLS_ALU64 => self.op() <= 0xd0,
            CLS_JMP => self.op() <= 0xe0,
            CLS_JMP32 => self.op() <= 0xd0 && !matches!(self.op(), CALL | EXIT),
            _ => false,
        }
    }
}

/// Registers an instruction reads and writes, for liveness. `call` reads
/// `args` (R1..R5 unless the callee is known) and clobbers R0..R5.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effect {
    pub uses: u16,
    pub defs: u16,
}

pub const CALLER_SAVED: u16 = 0b11_1111; // R0..R5

/// Argument count of each BPF helper by id, from the signatures documented in
/// the kernel's uapi `linux/bpf.h` (rewriter/gen-helpers.py regenerates it).
/// Unknown ids count as five: reading too many registers is only conservative.
#[rustfmt::skip]
const HELPER_ARGS: [u8; 212] = [
    5, 2, 4, 2, 3, 0, 5, 0, 0, 5, 5, 5, 3, 3, 0, 0, 2, 1, 3, 1, 4, 4, 2, 2,
    1, 5, 4, 3, 5, 3, 3, 3, 2, 3, 1, 0, 3, 2, 3, 2, 2, 1, 0, 3, 2, 3, 1, 1,
    2, 5, 4, 3, 4, 4, 2, 4, 3, 5, 2, 2, 4, 2, 2, 4, 3, 2, 5, 4, 5, 4, 4, 4,
    4, 4, 4, 3, 4, 1, 4, 1, 0, 2, 4, 2, 5, 5, 1, 3, 2, 2, 4, 4, 3, 1, 1, 1,
    1, 1, 1, 5, 5, 4, 3, 3, 3, 4, 4, 4, 2, 1, 5, 5, 3, 3, 3, 3, 2, 1, 0, 4,
    4, 5, 1, 1, 3, 0, 5, 3, 1, 2, 4, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1, 4, 4, 4,
    3, 4, 2, 3, 3, 5, 4, 1, 4, 2, 1, 2, 4, 2, 0, 2, 0, 3, 1, 5, 4, 5, 3, 4,
    1, 3, 2, 3, 1, 1, 1, 1, 3, 4, 1, 4, 5, 4, 3, 3, 2, 1, 0, 1, 1, 4, 4, 5,
    3, 3, 2, 3, 1, 4, 4, 2, 2, 5, 5, 3, 3, 3, 2, 2, 0, 4, 4, 2,
];

/// The registers a helper call reads.
pub fn helper_args(id: i32) -> u16 {
    let n = usize::try_from(id)
        .ok()
        .and_then(|i| HELPER_ARGS.get(i))
        .copied()
        .unwrap_or(5);
    ((1u16 << (n + 1)) - 1) & ARGS
}
pub const ARGS: u16 = 0b11_1110; // R1..R5

fn bit(r: u8) -> u16 {
    if r >= 10 {
        0
    } else {
        1 << r
    }
}

impl Insn {
    pub fn effect(&self) -> Effect {
        let (d, s) = (bit(self.dst), bit(self.src));
        let x = self.code & 0x08 != 0;
        match self.class() {
            CLS_ALU | CLS_ALU64 => match self.op() {
                0xb0 => Effect {
                    uses: if x { s } else { 0 },
                    defs: d,
                },
                0x80 | 0xd0 => Effect { uses: d, defs: d },
                _ => Effect {
                    uses: d | if x { s } else { 0 },
                    defs: d,
                },
            },
            CLS_LD if self.is_ld_imm64() => Effect { uses: 0, defs: d },
            // Legacy packet loads read the context in R6 and act like a call.
            CLS_LD => Effect {
                uses: bit(6) | if self.code & 0xe0 == 0x40 { s } else { 0 },
                defs: CALLER_SAVED,
            },
            CLS_LDX => Effect { uses: s, defs: d },
            CLS_ST => Effect { uses: d, defs: 0 },
            CLS_STX if self.code & 0xe0 == 0xc0 => {
                // Atomics: FETCH writes src back; CMPXCHG reads and writes R0.
                let fetch = self.imm & 0x01 != 0;
                let cmpxchg = self.imm == 0xf1;
                Effect {
                    uses: d | s | if cmpxchg { 1 } else { 0 },
                    defs: if cmpxchg {
                        1
                    } else if fetch {
                        s
                    } else {
                        0
                    },
                }
            }
            CLS_STX => Effect {
                uses: d | s,
                defs: 0,
            },
            _ if self.is_call() && self.src == 0 => Effect {
                uses: helper_args(self.imm),
                defs: CALLER_SAVED,
            },
            _ if self.is_call() => Effect {
                uses: ARGS,
                defs: CALLER_SAVED,
            },
            _ if self.is_exit() => Effect { uses: 1, defs: 0 },
            _ if self.is_unconditional() => Effect::default(),
            _ => Effect {
                uses: d | if x { s } else { 0 },
                defs: 0,
            },
        }
    }
}

const ALU_OPS: [&str; 14] = [
    "+=", "-=", "*=", "/=", "|=", "&=", "<<=", ">>=", "neg", "%=", "^=", "=", "s>>=", "end",
];
const JMP_OPS: [&str; 14] = [
    "goto", "==", ">", ">=", "&", "!=", "s>", "s>=", "call", "exit", "<", "<=", "s<", "s<=",
];

fn size_name(code: u8) -> &'static str {
    match code & 0x18 {
        0x00 => "u32",
        0x08 => "u16",
        0x10 => "u8",
        _ => "u64",
    }
}

/// Prints one instruction in the pseudo-C syntax of llvm-objdump, with an
/// optional 64-bit immediate (from the following slot) for `ld_imm64`.
pub struct Disasm<'a> {
    pub insn: &'a Insn,
    pub next: Option<&'a Insn>,
}

impl fmt::Display for Disasm<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.insn;
        let (dst, src) = (i.dst, i.src);
        let w = if i.class() == CLS_ALU || i.class() == CLS_JMP32 {
            "w"
        } else {
            "r"
        };
        match i.class() {
            CLS_ALU | CLS_ALU64 => {
                let opi = (i.code >> 4) as usize;
                let op = ALU_OPS.get(opi).copied().unwrap_or("?");
                let rhs = if i.code & 0x08 != 0 {
                    format!("{w}{src}")
                } else {
                    format!("{}", i.imm)
                };
                match opi {
                    8 => write!(f, "{w}{dst} = -{w}{dst}"),
                    13 => write!(f, "{w}{dst} = bswap{}({w}{dst})", i.imm),
                    11 if i.off != 0 => write!(f, "{w}{dst} = (s{}){rhs}", i.off),
                    _ => write!(f, "{w}{dst} {op} {rhs}"),
                }
            }
            CLS_LD if i.is_ld_imm64() => {
                let hi = self.next.map(|n| n.imm as u32 as u64).unwrap_or(0);
                let v = (hi << 32) | i.imm as u32 as u64;
                let kind = match src {
                    0 => "",
                    1 => " map_fd",
                    2 => " map_value",
                    4 => " func",
                    _ => " pseudo",
                };
                write!(f, "r{dst} = {v:#x} ll{kind}")
            }
            CLS_LD => write!(f, "r0 = *({} *)skb[{}]", size_name(i.code), i.imm),
            CLS_LDX => {
                let s = if i.code & 0xe0 == 0x80 { "s" } else { "u" };
                let sz = &size_name(i.code)[1..];
                write!(f, "r{dst} = *({s}{sz} *)(r{src} {:+})", i.off)
            }
            CLS_ST => write!(
                f,
                "*({} *)(r{dst} {:+}) = {}",
                size_name(i.code),
                i.off,
                i.imm
            ),
            CLS_STX if i.code & 0xe0 == 0xc0 => write!(
                f,
                "atomic[{:#x}] *({} *)(r{dst} {:+}), r{src}",
                i.imm,
                size_name(i.code),
                i.off
            ),
            CLS_STX => write!(f, "*({} *)(r{dst} {:+}) = r{src}", size_name(i.code), i.off),
            _ if i.is_call() => match src {
                PSEUDO_CALL => write!(f, "call pc{:+}", i.imm),
                PSEUDO_KFUNC_CALL => write!(f, "call kfunc {}", i.imm),
                _ => write!(f, "call {}", i.imm),
            },
            _ if i.is_exit() => write!(f, "exit"),
            _ if i.is_unconditional() => write!(f, "goto {:+}", i.branch_off()),
            CLS_JMP | CLS_JMP32 => {
                let op = JMP_OPS.get((i.code >> 4) as usize).copied().unwrap_or("?");
                let rhs = if i.code & 0x08 != 0 {
                    format!("{w}{src}")
                } else {
                    format!("{}", i.imm)
                };
                write!(f, "if {w}{dst} {op} {rhs} goto {:+}", i.off)
            }
            _ => write!(f, ".insn {:#04x}", i.code),
        }
    }
}

pub fn decode_all(bytes: &[u8]) -> Vec<Insn> {
    bytes.chunks_exact(INSN_SIZE).map(Insn::decode).collect()
}

pub fn encode_all(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.encode()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_every_field() {
        for code in [0x05u8, 0xbf, 0x18, 0x85, 0x95, 0x7b, 0x61, 0x2d, 0x06] {
            for (dst, src) in [(0, 0), (1, 10), (9, 4), (10, 1)] {
                for off in [i16::MIN, -1, 0, 7, i16::MAX] {
                    for imm in [i32::MIN, -1, 0, 42, i32::MAX] {
                        let i = Insn {
                            code,
                            dst,
                            src,
                            off,
                            imm,
                        };
                        assert_eq!(Insn::decode(&i.encode()), i);
                    }
                }
            }
        }
    }

    #[test]
    fn effects_model_calls_and_exits() {
        let call = Insn {
            code: 0x85,
            imm: 5,
            ..Default::default()
        };
        // bpf_ktime_get_ns takes no argument; map_lookup_elem reads R1, R2;
        // a kfunc's arity is unknown here, so all five count as read.
        assert_eq!(
            call.effect(),
            Effect {
                uses: 0,
                defs: CALLER_SAVED
            }
        );
        let lookup = Insn {
            code: 0x85,
            imm: 1,
            ..Default::default()
        };
        assert_eq!(lookup.effect().uses, 0b110);
        let kfunc = Insn {
            code: 0x85,
            src: PSEUDO_KFUNC_CALL,
            imm: 77,
            ..Default::default()
        };
        assert_eq!(kfunc.effect().uses, ARGS);
        let exit = Insn {
            code: 0x95,
            ..Default::default()
        };
        assert_eq!(exit.effect().uses, 1);
        let mov = Insn::mov64_reg(6, 1);
        assert_eq!(
            mov.effect(),
            Effect {
                uses: 1 << 1,
                defs: 1 << 6
            }
        );
        let fp_store = Insn::stx_dw(10, -8, 3);
        assert_eq!(
            fp_store.effect(),
            Effect {
                uses: 1 << 3,
                defs: 0
            }
        );
    }

    #[test]
    fn long_ja_takes_imm() {
        let g = Insn {
            code: 0x06,
            imm: 70000,
            ..Default::default()
        };
        assert!(g.is_branch() && g.is_unconditional() && g.branch_off() == 70000);
    }
}
