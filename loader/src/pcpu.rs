//! Direct per-CPU access to `inxpect_pcpu` where the kernel has it.
//!
//! Linux 7.x (the "global percpu data" series) resolves an `ld_imm64` of a
//! one-entry per-CPU array's value (`BPF_PSEUDO_MAP_VALUE`) to this CPU's
//! copy: the `ld_imm64` and one per-CPU add, where the look-up the rewriter
//! emits is two `ld_imm64`, the inlined look-up with its bound check, and
//! the null test after it (~13 x86 instructions, on every program entry).
//!
//! The rewriter emits the look-up, which every kernel and every loader
//! takes. Once libbpf has relocated the object (`bpf_object__prepare`: the
//! instructions final, the maps created), [`direct`] rewrites each look-up
//! of `inxpect_pcpu` by the runtime's read-only zero key into the direct
//! form, in place: the same number of slots, so no jump, line or function
//! record moves. The verifier then removes the three nops and, knowing the
//! pointer is not NULL, the miss path after it.
//!
//! On every kernel the same pass folds the runtime's `inxpect_kfuncs` flag
//! ([`fold_flag`]): each `ld_imm64` of its address and the load through it
//! become `wN = flag` and two nops. The verifier already knew the value
//! (the map is frozen), so the branch on it was dead either way; what goes
//! is the address and the load, one x86 instruction per test (a program
//! entry's sampled run, each counter read in a subprogram).

use inxpect_rewriter::insn::{decode_all, encode_all, Insn, INSN_SIZE, LD_IMM64};
use libbpf_rs::{AsRawLibbpf, OpenObject};
use std::ffi::CStr;
use std::sync::OnceLock;

const PSEUDO_MAP_FD: u8 = 1;
const PSEUDO_MAP_VALUE: u8 = 2;
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;

/// Setting `INXPECT_PCPU=lookup` keeps the look-ups on a kernel that could
/// take the direct form (to compare the two, or to sidestep it).
pub const ENV: &str = "INXPECT_PCPU";

/// How the probes reach this CPU's `inxpect_pcpu` entry in a loaded object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `bpf_map_lookup_elem`, inlined by the verifier.
    Lookup,
    /// `ld_imm64` of the value: this many look-ups were rewritten.
    Direct(usize),
}

/// Whether this kernel addresses a one-entry per-CPU array's value with
/// `ld_imm64` (probed once: a three-instruction program on a fresh map),
/// and `INXPECT_PCPU` does not ask for look-ups.
pub fn supported() -> bool {
    static S: OnceLock<bool> = OnceLock::new();
    *S.get_or_init(|| std::env::var(ENV).as_deref() != Ok("lookup") && probe())
}

fn probe() -> bool {
    // SAFETY: plain syscall wrappers; every descriptor they return is closed here.
    unsafe {
        let map = libbpf_sys::bpf_map_create(
            libbpf_sys::BPF_MAP_TYPE_PERCPU_ARRAY,
            std::ptr::null(),
            4,
            8,
            1,
            std::ptr::null(),
        );
        if map < 0 {
            return false;
        }
        let [lo, hi] = Insn::ld_imm64(1);
        let prog = [
            Insn {
                src: PSEUDO_MAP_VALUE,
                imm: map,
                ..lo
            },
            hi,
            Insn::ldx(inxpect_rewriter::insn::SIZE_DW, 0, 1, 0),
            Insn::mov64_imm(0, 2),
            Insn::exit(),
        ];
        let bytes = encode_all(&prog);
        let fd = libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_XDP,
            c"inxpect_pcpu".as_ptr(),
            c"GPL".as_ptr(),
            bytes.as_ptr().cast(),
            prog.len() as _,
            std::ptr::null_mut(),
        );
        libc::close(map);
        if fd < 0 {
            return false;
        }
        libc::close(fd);
        true
    }
}

/// Rewrites, in `insns`, every `bpf_map_lookup_elem(pcpu_fd, key)` whose key
/// `zero(fd, off)` says is read-only zero into `r0 = this CPU's value`.
/// Returns how many. A look-up another jump enters in its middle is left
/// alone (its registers there come from elsewhere).
pub fn rewrite(insns: &mut [Insn], pcpu_fd: i32, zero: &dyn Fn(i32, i32) -> bool) -> usize {
    let targets = jump_targets(insns);
    let map = |a: &[Insn]| a[0].dst == 1 && a[0].src == PSEUDO_MAP_FD && a[0].imm == pcpu_fd;
    let key =
        |a: &[Insn]| a[0].dst == 2 && a[0].src == PSEUDO_MAP_VALUE && zero(a[0].imm, a[1].imm);
    let mut n = 0;
    let mut i = 0;
    while i + 5 <= insns.len() {
        let w = &insns[i..i + 5];
        let hit = w[0].is_ld_imm64()
            && w[2].is_ld_imm64()
            && w[4] == Insn::helper_call(HELPER_MAP_LOOKUP_ELEM)
            && ((map(&w[0..2]) && key(&w[2..4])) || (key(&w[0..2]) && map(&w[2..4])))
            && !(i + 1..i + 5).any(|t| targets.contains(&t));
        if !hit {
            i += 1;
            continue;
        }
        insns[i] = Insn {
            code: LD_IMM64,
            dst: 0,
            src: PSEUDO_MAP_VALUE,
            off: 0,
            imm: pcpu_fd,
        };
        insns[i + 1] = Insn::default();
        for x in &mut insns[i + 2..i + 5] {
            *x = Insn::ja(0);
        }
        unhoist(insns, i, &targets);
        n += 1;
        i += 5;
    }
    n
}

/// A program entry whose context save brackets the look-up at `i` (the
/// rewriter's `Site::hoist`): `rX = r1` before it, `r1 = rX` after its
/// miss test, the countdown in R2, and `rX = rX` where the sampled path
/// starts (the countdown's branch target, or what follows its `!= 0`
/// test). With the look-up direct, R1 survives it: the bracket becomes two
/// nops and the placeholder the save, so a sampled-out run restores
/// nothing. Anything else is left as it is.
fn unhoist(insns: &mut [Insn], i: usize, targets: &std::collections::HashSet<usize>) {
    use inxpect_rewriter::insn::SIZE_DW;
    let Some(save) = i.checked_sub(1).map(|k| insns[k]) else {
        return;
    };
    let x = save.dst;
    let left = inxpect_rewriter::runtime::pcpu::LEFT as i16;
    let at = |k: usize| insns.get(k).copied();
    let shape = save == Insn::mov64_reg(x, 1)
        && (6..=9).contains(&x)
        && at(i + 5).is_some_and(|t| t == Insn::jeq_imm(0, 0, t.off, false))
        && at(i + 6) == Some(Insn::mov64_reg(1, x))
        && at(i + 7) == Some(Insn::ldx(SIZE_DW, 2, 0, left));
    if !shape || [i, i + 6, i + 7].iter().any(|t| targets.contains(t)) {
        return;
    }
    let Some(&test) = insns.get(i + 8) else {
        return;
    };
    // `if r2 == 0 goto sampled` (the copy inline after it), or `if r2 != 0
    // goto unsampled` (the sampled path falls through).
    let sampled = if test == Insn::jeq_imm(2, 0, test.off, false) {
        (i as i64 + 9 + i64::from(test.off)) as usize
    } else if test == Insn::jeq_imm(2, 0, test.off, true) {
        i + 9
    } else {
        return;
    };
    if insns.get(sampled) != Some(&Insn::mov64_reg(x, x)) {
        return;
    }
    insns[i - 1] = Insn::ja(0);
    insns[i + 6] = Insn::ja(0);
    insns[sampled] = Insn::mov64_reg(x, 1);
}

/// Every slot a jump or a call of `insns` lands on.
fn jump_targets(insns: &[Insn]) -> std::collections::HashSet<usize> {
    let mut t = std::collections::HashSet::new();
    for (pc, x) in insns.iter().enumerate() {
        let rel = if x.is_pseudo_call() {
            x.imm as i64
        } else if x.is_branch() {
            // `gotol` (JMP32 | JA) keeps its offset in imm.
            if x.code == inxpect_rewriter::insn::CLS_JMP32 {
                x.imm as i64
            } else {
                x.off as i64
            }
        } else {
            continue;
        };
        t.insert((pc as i64 + rel + 1) as usize);
    }
    t
}

/// Rewrites, in `insns`, every `rN = &ro[a]; wN = *(u32 *)(rN + b)` with
/// `a + b == off`, `ro` the read-only map `ro_fd`, into `wN = value` and two
/// nops, in place (the address dies in the load).
/// Returns how many. One whose load another jump enters is left alone.
pub fn fold_flag(insns: &mut [Insn], ro_fd: i32, off: i32, value: u32) -> usize {
    let targets = jump_targets(insns);
    let mut n = 0;
    let mut i = 0;
    while i + 3 <= insns.len() {
        let (a, b, l) = (insns[i], insns[i + 1], insns[i + 2]);
        let hit = a.is_ld_imm64()
            && a.src == PSEUDO_MAP_VALUE
            && a.imm == ro_fd
            && l == Insn::ldx(inxpect_rewriter::insn::SIZE_W, a.dst, a.dst, l.off)
            && i64::from(b.imm) + i64::from(l.off) == i64::from(off)
            && !(i + 1..i + 3).any(|t| targets.contains(&t));
        if !hit {
            i += 1;
            continue;
        }
        if value != 0 && nonnull_guard(insns, &targets, i) {
            // The test on a pointer the instruction before went through:
            // never taken, which the verifier knows of a map value.
            insns[i] = Insn::ja(0);
            insns[i + 3].dst = 0;
        } else {
            insns[i] = Insn::mov32_imm(a.dst, value as i32);
        }
        insns[i + 1] = Insn::ja(0);
        insns[i + 2] = Insn::ja(0);
        n += 1;
        i += 3;
    }
    n
}

/// Whether the flag load at `i` (known nonzero) can go altogether: its
/// `if rN == 0` test, which no jump enters, becomes `if r0 == 0`, R0 being
/// the base of the memory access right before the load (which no jump
/// skips, so R0 was a valid pointer there, and the load does not change
/// it), and the next instruction sets rN without reading it. The verifier
/// knows a map value is not NULL: it drops the test, and no instruction is
/// left where `wN = 1` was (a program entry's sampled run: the emitter
/// puts its test there).
fn nonnull_guard(insns: &[Insn], targets: &std::collections::HashSet<usize>, i: usize) -> bool {
    use inxpect_rewriter::insn::{CLS_LDX, CLS_ST, CLS_STX};
    let r = insns[i].dst;
    let (Some(prev), Some(&test), Some(&next)) = (
        i.checked_sub(1).map(|p| insns[p]),
        insns.get(i + 3),
        insns.get(i + 4),
    ) else {
        return false;
    };
    const MODE_MEM: u8 = 0x60;
    let base = match prev.class() {
        CLS_LDX => prev.src,
        CLS_ST | CLS_STX => prev.dst,
        _ => return false,
    };
    let through_r0 = prev.code & 0xe0 == MODE_MEM && base == 0;
    let e = next.effect();
    let sets = e.defs & 1 << r != 0 && e.uses & 1 << r == 0;
    r != 0
        && through_r0
        && test == Insn::jeq_imm(r, 0, test.off, false)
        && sets
        && !targets.contains(&i)
        && !targets.contains(&(i + 3))
}

/// Prepares `open`, folds the runtime's `inxpect_kfuncs` flag into its
/// tests and, where [`supported`], gives its programs direct access to
/// `inxpect_pcpu`. Call it last before `load`, after the flag is set: after
/// it the object's maps exist and its instructions are final. An object
/// without the runtime is only prepared.
pub fn finish(open: &mut OpenObject) -> std::io::Result<Access> {
    let has_pcpu = open
        .maps()
        .any(|m| m.name() == inxpect_rewriter::runtime::MAP_PCPU);
    let direct = has_pcpu && supported();
    let obj = open.as_libbpf_object().as_ptr();
    // SAFETY: `obj` is the live object `open` owns; libbpf keeps the maps
    // and the programs' instruction arrays until it is closed, and
    // `bpf_program__set_insns` copies ours.
    unsafe {
        let err = libbpf_sys::bpf_object__prepare(obj);
        if err != 0 {
            return Err(std::io::Error::from_raw_os_error(-err));
        }
        let name = c"inxpect_pcpu";
        let pcpu = libbpf_sys::bpf_object__find_map_by_name(obj, name.as_ptr());
        let pcpu_fd = if pcpu.is_null() {
            -1
        } else {
            libbpf_sys::bpf_map__fd(pcpu)
        };
        // The key: the runtime's `inxpect_zero`. Any four zero bytes of the
        // runtime's read-only data are key 0 for good: libbpf froze the map
        // when it created it.
        let mut zeros: Vec<(i32, Vec<u8>)> = Vec::new();
        // The flag: the u32 at RODATA_KFUNCS_OFFSET of the runtime's
        // read-only data, as libbpf created (and froze) the map.
        let mut flag: Option<(i32, u32)> = None;
        let mut m = libbpf_sys::bpf_object__next_map(obj, std::ptr::null());
        while !m.is_null() {
            let n = CStr::from_ptr(libbpf_sys::bpf_map__name(m)).to_string_lossy();
            if n.ends_with(inxpect_rewriter::runtime::MAP_RODATA) {
                let mut sz = 0u64;
                let v = libbpf_sys::bpf_map__initial_value(m, &mut sz);
                if !v.is_null() {
                    let bytes = std::slice::from_raw_parts(v.cast::<u8>(), sz as usize).to_vec();
                    let fd = libbpf_sys::bpf_map__fd(m);
                    let at = inxpect_rewriter::runtime::RODATA_KFUNCS_OFFSET;
                    if let Some(w) = bytes.get(at..at + 4) {
                        flag = Some((fd, u32::from_ne_bytes(w.try_into().expect("4 bytes"))));
                    }
                    zeros.push((fd, bytes));
                }
            }
            m = libbpf_sys::bpf_object__next_map(obj, m);
        }
        let zero = |fd: i32, off: i32| {
            zeros.iter().any(|(f, b)| {
                *f == fd
                    && usize::try_from(off)
                        .ok()
                        .and_then(|o| b.get(o..o + 4))
                        .is_some_and(|k| k == [0; 4])
            })
        };
        let mut total = 0;
        let mut p = libbpf_sys::bpf_object__next_program(obj, std::ptr::null_mut());
        while !p.is_null() {
            let cnt = libbpf_sys::bpf_program__insn_cnt(p) as usize;
            let raw = libbpf_sys::bpf_program__insns(p);
            if !raw.is_null() && cnt > 0 {
                let bytes = std::slice::from_raw_parts(raw.cast::<u8>(), cnt * INSN_SIZE);
                let mut insns = decode_all(bytes);
                let n = if direct {
                    rewrite(&mut insns, pcpu_fd, &zero)
                } else {
                    0
                };
                let f = flag.map_or(0, |(fd, v)| {
                    let at = inxpect_rewriter::runtime::RODATA_KFUNCS_OFFSET as i32;
                    fold_flag(&mut insns, fd, at, v)
                });
                if n + f > 0 {
                    let mut out = encode_all(&insns);
                    let err =
                        libbpf_sys::bpf_program__set_insns(p, out.as_mut_ptr().cast(), cnt as _);
                    if err != 0 {
                        return Err(std::io::Error::from_raw_os_error(-err));
                    }
                    total += n;
                }
            }
            p = libbpf_sys::bpf_object__next_program(obj, p);
        }
        // An object whose look-ups all had another shape keeps them.
        Ok(if total > 0 {
            Access::Direct(total)
        } else {
            Access::Lookup
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inxpect_rewriter::insn::SIZE_DW;

    const PCPU: i32 = 7;
    const RO: i32 = 9;

    fn ld(dst: u8, src: u8, imm: i32, off: i32) -> [Insn; 2] {
        let [lo, hi] = Insn::ld_imm64(dst);
        [Insn { src, imm, ..lo }, Insn { imm: off, ..hi }]
    }

    /// The rewriter's entry: map, key, call, then the miss test.
    fn lookup(key_first: bool) -> Vec<Insn> {
        let (m, k) = (
            ld(1, PSEUDO_MAP_FD, PCPU, 0),
            ld(2, PSEUDO_MAP_VALUE, RO, 8),
        );
        let mut v = Vec::new();
        if key_first {
            v.extend(k);
            v.extend(m);
        } else {
            v.extend(m);
            v.extend(k);
        }
        v.push(Insn::helper_call(1));
        v.push(Insn::jeq_imm(0, 0, 1, true));
        v.push(Insn::mov64_imm(0, 0));
        v.push(Insn::exit());
        v
    }

    fn zero_at_8(fd: i32, off: i32) -> bool {
        fd == RO && off == 8
    }

    #[test]
    fn rewrites_either_order_in_place() {
        for key_first in [false, true] {
            let mut v = lookup(key_first);
            let len = v.len();
            assert_eq!(rewrite(&mut v, PCPU, &zero_at_8), 1);
            assert_eq!(v.len(), len);
            assert_eq!(v[0], ld(0, PSEUDO_MAP_VALUE, PCPU, 0)[0]);
            assert_eq!(v[1].imm, 0, "offset 0: the entry's head");
            assert_eq!(&v[2..5], &[Insn::ja(0); 3]);
            assert_eq!(v[5], Insn::jeq_imm(0, 0, 1, true), "the miss test stays");
        }
    }

    #[test]
    fn leaves_other_lookups() {
        // Another map, a key that is not the zero, another helper.
        type Key = fn(i32, i32) -> bool;
        let cases: [(i32, Key, i32); 3] = [
            (PCPU + 1, zero_at_8, 1),
            (PCPU, |_, _| false, 1),
            (PCPU, zero_at_8, 2),
        ];
        for (fd, zero, helper) in cases {
            let mut v = lookup(false);
            v[4] = Insn::helper_call(helper);
            let before = v.clone();
            assert_eq!(rewrite(&mut v, fd, &zero), 0);
            assert_eq!(v, before);
        }
    }

    #[test]
    fn leaves_a_lookup_entered_in_its_middle() {
        // A jump onto the call: r1/r2 there come from the other path.
        let mut v = vec![Insn::jeq_imm(1, 0, 4, false)];
        v.extend(lookup(false));
        let before = v.clone();
        assert_eq!(rewrite(&mut v, PCPU, &zero_at_8), 0);
        assert_eq!(v, before);
        // A jump onto its first slot is fine: the whole look-up follows.
        let mut v = vec![Insn::jeq_imm(1, 0, 0, false)];
        v.extend(lookup(false));
        assert_eq!(rewrite(&mut v, PCPU, &zero_at_8), 1);
    }

    #[test]
    fn rewrites_every_lookup() {
        let mut v = lookup(false);
        v.push(Insn::ldx(SIZE_DW, 1, 0, 0));
        v.extend(lookup(true));
        assert_eq!(rewrite(&mut v, PCPU, &zero_at_8), 2);
    }

    const FLAG_AT: i32 = 4;

    /// `rN = &ro + a; wN = *(u32 *)(rN + b)`, then a test of it.
    fn flag_test(dst: u8, a: i32, b: i16) -> Vec<Insn> {
        let mut v = ld(dst, PSEUDO_MAP_VALUE, RO, a).to_vec();
        v.push(Insn::ldx(inxpect_rewriter::insn::SIZE_W, dst, dst, b));
        v.push(Insn::jeq_imm(dst, 0, 1, false));
        v.push(Insn::mov64_imm(0, 1));
        v.push(Insn::exit());
        v
    }

    #[test]
    fn folds_the_flag_to_its_value() {
        for (a, b) in [(FLAG_AT, 0), (0, FLAG_AT as i16)] {
            for value in [0, 1] {
                let mut v = flag_test(3, a, b);
                let len = v.len();
                assert_eq!(fold_flag(&mut v, RO, FLAG_AT, value), 1);
                assert_eq!(v.len(), len);
                assert_eq!(v[0], Insn::mov32_imm(3, value as i32));
                assert_eq!(&v[1..3], &[Insn::ja(0); 2]);
                assert_eq!(v[3], Insn::jeq_imm(3, 0, 1, false), "the test stays");
            }
        }
    }

    /// An entry's sampled run: `++sampled` through R0, the flag test in R1,
    /// R1 set from the config next.
    fn entry_test() -> Vec<Insn> {
        let mut v = vec![Insn::stx_dw(0, 8, 1)];
        v.extend(ld(1, PSEUDO_MAP_VALUE, RO, FLAG_AT));
        v.push(Insn::ldx(inxpect_rewriter::insn::SIZE_W, 1, 1, 0));
        v.push(Insn::jeq_imm(1, 0, 2, false));
        v.push(Insn::ldx(SIZE_DW, 1, 2, 0));
        v.push(Insn::exit());
        v.push(Insn::mov64_imm(0, 1));
        v.push(Insn::exit());
        v
    }

    #[test]
    fn a_set_flag_after_a_store_through_r0_tests_r0() {
        let mut v = entry_test();
        assert_eq!(fold_flag(&mut v, RO, FLAG_AT, 1), 1);
        assert_eq!(&v[1..4], &[Insn::ja(0); 3], "nothing left of the load");
        assert_eq!(v[4], Insn::jeq_imm(0, 0, 2, false), "the test of R0");
        // Clear, the value stays for the verifier to take the branch.
        let mut v = entry_test();
        assert_eq!(fold_flag(&mut v, RO, FLAG_AT, 0), 1);
        assert_eq!(v[1], Insn::mov32_imm(1, 0));
        assert_eq!(v[4], Insn::jeq_imm(1, 0, 2, false));
    }

    #[test]
    fn the_flag_stays_a_value_unless_r0_is_proven_and_rn_dead() {
        let mut cases: Vec<Vec<Insn>> = Vec::new();
        // The access before through another register, or none.
        let mut v = entry_test();
        v[0] = Insn::stx_dw(6, 8, 1);
        cases.push(v);
        let mut v = entry_test();
        v[0] = Insn::mov64_imm(2, 0);
        cases.push(v);
        // The next instruction reads the flag's register.
        let mut v = entry_test();
        v[5] = Insn::ldx(SIZE_DW, 1, 1, 0);
        cases.push(v);
        // Another test of it.
        let mut v = entry_test();
        v[4] = Insn::jeq_imm(1, 0, 2, true);
        cases.push(v);
        // A jump onto the load or the test.
        let mut v = vec![Insn::jeq_imm(3, 0, 1, false)];
        v.extend(entry_test());
        cases.push(v);
        let mut v = vec![Insn::jeq_imm(3, 0, 4, false)];
        v.extend(entry_test());
        cases.push(v);
        for mut v in cases {
            let before = v.clone();
            assert_eq!(fold_flag(&mut v, RO, FLAG_AT, 1), 1, "{before:?}");
            let at = before
                .iter()
                .position(|x| x.is_ld_imm64())
                .expect("the load");
            assert_eq!(v[at], Insn::mov32_imm(1, 1), "{before:?}");
            assert_eq!(v[at + 3], before[at + 3], "{before:?}");
        }
    }

    #[test]
    fn leaves_other_loads() {
        // Another map, another offset, another width, the address kept
        // (loaded into another register), a jump onto the load.
        let mut cases: Vec<Vec<Insn>> = Vec::new();
        let mut v = flag_test(3, FLAG_AT, 0);
        v[0].imm = RO + 1;
        cases.push(v);
        cases.push(flag_test(3, FLAG_AT + 4, 0));
        let mut v = flag_test(3, FLAG_AT, 0);
        v[2] = Insn::ldx(SIZE_DW, 3, 3, 0);
        cases.push(v);
        let mut v = flag_test(3, FLAG_AT, 0);
        v[2] = Insn::ldx(inxpect_rewriter::insn::SIZE_W, 4, 3, 0);
        cases.push(v);
        let mut v = vec![Insn::jeq_imm(1, 0, 2, false)];
        v.extend(flag_test(3, FLAG_AT, 0));
        cases.push(v);
        for mut v in cases {
            let before = v.clone();
            assert_eq!(fold_flag(&mut v, RO, FLAG_AT, 1), 0, "{before:?}");
            assert_eq!(v, before);
        }
    }

    /// A program entry with the context save around its look-up: `r6 =
    /// r1`, the look-up, its miss test, `r1 = r6`, the countdown in R2 (the
    /// copy inline, then the sampled path at `rX = rX`), or with `ne` its
    /// `!= 0` test and the sampled path right after.
    fn hoisted(ne: bool) -> Vec<Insn> {
        use inxpect_rewriter::runtime::pcpu::LEFT;
        let mut v = vec![Insn::mov64_reg(6, 1)];
        v.extend(lookup(false).into_iter().take(5));
        // The miss: to an exit of the program's, here the last.
        v.push(Insn::jeq_imm(0, 0, if ne { 5 } else { 8 }, false));
        v.push(Insn::mov64_reg(1, 6));
        v.push(Insn::ldx(SIZE_DW, 2, 0, LEFT as i16));
        if ne {
            v.push(Insn::jeq_imm(2, 0, 3, true));
        } else {
            v.push(Insn::jeq_imm(2, 0, 3, false));
            v.push(Insn::alu64_imm(inxpect_rewriter::insn::OP_ADD, 2, -1));
            v.push(Insn::stx_dw(0, LEFT as i16, 2));
            v.push(Insn::exit());
        }
        v.push(Insn::mov64_reg(6, 6));
        v.push(Insn::mov64_imm(0, 2));
        v.push(Insn::exit());
        v
    }

    #[test]
    fn a_direct_lookup_moves_the_context_save_to_the_sampled_path() {
        for ne in [false, true] {
            let mut v = hoisted(ne);
            let at = if ne { 10 } else { 13 };
            assert_eq!(v[at], Insn::mov64_reg(6, 6));
            assert_eq!(rewrite(&mut v, PCPU, &zero_at_8), 1);
            assert_eq!(v[0], Insn::ja(0), "the save before the look-up");
            assert_eq!(v[7], Insn::ja(0), "the restore after it");
            assert_eq!(
                v[at],
                Insn::mov64_reg(6, 1),
                "the save where sampled runs start"
            );
        }
    }

    #[test]
    fn a_lookup_without_the_whole_bracket_keeps_its_saves() {
        // No placeholder, another register in the restore, a jump onto the
        // restore: only the look-up itself becomes direct.
        let mut cases = Vec::new();
        let mut v = hoisted(false);
        v[13] = Insn::mov64_imm(6, 0);
        cases.push(v);
        let mut v = hoisted(false);
        v[7] = Insn::mov64_reg(1, 7);
        cases.push(v);
        let mut v = vec![Insn::jeq_imm(1, 0, 7, false)];
        v.extend(hoisted(true));
        cases.push(v);
        for mut v in cases {
            let before = v.clone();
            assert_eq!(rewrite(&mut v, PCPU, &zero_at_8), 1);
            let changed: Vec<usize> = (0..v.len()).filter(|&k| v[k] != before[k]).collect();
            assert!(
                changed.iter().all(|&k| before[k].is_ld_imm64()
                    || before[k].code == 0
                    || before[k] == Insn::helper_call(1)),
                "{changed:?}: {v:?}"
            );
        }
    }
}
