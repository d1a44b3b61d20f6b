//! inxpect's rewriter: inserts profiling probes into compiled BPF objects.
//!
//! Pipeline: [`elf`] (read) → [`probe`] (find and check points, on the input)
//! → [`link`] (libbpf links the probe runtime in) → [`cfg`] (liveness per
//! function) → emit (probe sequences) → [`patch`] (insert, remap every
//! offset) → [`elf`] (write). The output carries a self-description in its
//! `.inxpect` section ([`runtime::Manifest`]).

// Errors carry their full location (section, offset, source line); they are
// the cold path, so their size is not worth boxing.
#![allow(clippy::result_large_err)]

pub mod btf_ext;
pub mod cfg;
pub mod dump;
pub mod dwarf;
pub mod elf;
pub mod error;
pub mod insn;
pub mod link;
pub mod patch;
pub mod probe;
pub mod runtime;

pub use error::{Error, Loc, Result};
pub use probe::Mode;
pub use runtime::{Counter, Manifest};

use btf_ext::BtfExt;
use elf::Elf;
use insn::{Insn, CALLER_SAVED};
use patch::{Insertions, NewInsn, Place};
use probe::{Kind, Plan};
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    pub counter: Counter,
    /// PMC slots read per probe (`pmc` only), 1..=4.
    pub events: usize,
    pub only: Option<Vec<String>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Sections,
            counter: Counter::Ktime,
            events: 1,
            only: None,
        }
    }
}

pub struct Instrumented {
    pub object: Vec<u8>,
    pub manifest: Manifest,
    pub warnings: Vec<String>,
}

fn parse_ext(e: &Elf) -> Option<(usize, BtfExt)> {
    let ei = e.section_index(".BTF.ext")?;
    let bi = e.section_index(".BTF")?;
    BtfExt::parse(&e.sections[ei].data, &e.sections[bi].data)
        .ok()
        .map(|x| (ei, x))
}

/// Parses an object and finds its regions without changing anything (`--list`).
pub fn list(input: &[u8], opts: &Options) -> Result<Manifest> {
    let elf = Elf::parse(input)?;
    let ext = parse_ext(&elf);
    let src = probe::Source {
        dwarf: dwarf::Lines::parse(&elf),
        ext: ext.as_ref().map(|x| &x.1),
    };
    let plan = probe::plan(&elf, &src, opts.mode, opts.only.as_deref())?;
    Ok(manifest(&plan, opts))
}

fn manifest(plan: &Plan, opts: &Options) -> Manifest {
    Manifest {
        abi: runtime::ABI,
        mode: match opts.mode {
            Mode::Sections => "sections".into(),
            Mode::Functions => "functions".into(),
        },
        counter: opts.counter,
        events: if opts.counter == Counter::Pmc {
            opts.events
        } else {
            1
        },
        programs: plan
            .funcs
            .iter()
            .filter(|f| f.is_prog && !f.name.starts_with(runtime::PREFIX))
            .map(|f| f.name.clone())
            .collect(),
        regions: plan.regions.clone(),
    }
}

fn license_is_gpl(elf: &Elf) -> bool {
    let Some(i) = elf.section_index("license") else {
        return false;
    };
    let l = elf::cstr(&elf.sections[i].data, 0).unwrap_or_default();
    matches!(
        l.as_str(),
        "GPL"
            | "GPL v2"
            | "GPL and additional rights"
            | "Dual BSD/GPL"
            | "Dual MIT/GPL"
            | "Dual MPL/GPL"
    )
}

/// Rewrites `input` with probes at the regions `opts` selects.
pub fn instrument(input: &[u8], opts: &Options) -> Result<Instrumented> {
    if !(1..=runtime::MAX_EVENTS).contains(&opts.events) {
        return Err(Error::Other(format!(
            "--events must be 1..={}",
            runtime::MAX_EVENTS
        )));
    }
    let elf = Elf::parse(input)?;
    if elf.section_index(runtime::MANIFEST_SECTION).is_some()
        || elf.symbols.iter().any(|s| s.name == runtime::FN_START)
    {
        return Err(Error::AlreadyInstrumented);
    }
    let ext = parse_ext(&elf);
    let src = probe::Source {
        dwarf: dwarf::Lines::parse(&elf),
        ext: ext.as_ref().map(|x| &x.1),
    };
    // Check everything on the input first: errors name the input's offsets.
    let plan = probe::plan(&elf, &src, opts.mode, opts.only.as_deref())?;
    if plan.regions.is_empty() {
        return Err(Error::NothingToDo(match opts.mode {
            Mode::Sections => "no INXPECT_START/INXPECT_END markers found (use --functions to profile every function)".into(),
            Mode::Functions => "no functions found in any code section".into(),
        }));
    }
    if opts.counter.needs_gpl() && !license_is_gpl(&elf) {
        return Err(Error::Other(format!(
            "the {} counter needs a GPL-compatible license section (kfuncs and bpf_perf_event_read_value are GPL-only); use --counter ktime",
            opts.counter.name()
        )));
    }
    let mut warnings = Vec::new();
    if elf.sections.iter().any(|s| s.name.starts_with(".debug_")) {
        warnings.push("DWARF dropped: libbpf's static linker discards it; .BTF.ext line info is kept and remapped".into());
    }
    let m = manifest(&plan, opts);

    let linkable = linkable_input(input, &elf)?;
    let linked = link::link(&linkable, runtime::object(opts.counter, opts.events))?;
    let mut out = Elf::parse(&linked)?;
    let lext = parse_ext(&out);
    let lplan = plan.rebase(&elf, &out)?;
    let ins = emit(&out, &lplan, opts)?;
    patch::apply(&mut out, lext.as_ref().map(|(i, x)| (*i, x)), &ins)?;
    let json = serde_json::to_vec_pretty(&m).map_err(|e| Error::Other(e.to_string()))?;
    out.add_note_section(runtime::MANIFEST_SECTION, json)?;
    Ok(Instrumented {
        object: out.write(),
        manifest: m,
        warnings,
    })
}

/// The input as libbpf's linker will take it. The linker needs a global BTF
/// FUNC record for every global function; gcc 12 marks them all static, so
/// a copy of the object gets those records' linkage set (nothing else
/// changes, and the input file is never touched).
fn linkable_input(input: &[u8], elf: &Elf) -> Result<Vec<u8>> {
    let Some(b) = elf.section_index(".BTF") else {
        return Err(Error::Link(
            "the object has no .BTF: libbpf's linker needs BTF to merge the probe runtime (build with clang -g, or gcc -gbtf)".into(),
        ));
    };
    let globals: std::collections::HashSet<String> = elf
        .symbols
        .iter()
        .filter(|y| y.is_func() && y.bind() != 0 && y.shndx != 0)
        .map(|y| y.name.clone())
        .collect();
    let have = btf_ext::btf_func_names(&elf.sections[b].data)?;
    if globals.iter().all(|g| have.contains(g)) {
        return Ok(input.to_vec());
    }
    let mut copy = elf.clone();
    btf_ext::btf_globalize_funcs(&mut copy.sections[b].data, &globals)?;
    let fixed = btf_ext::btf_func_names(&copy.sections[b].data)?;
    if let Some(missing) = globals.iter().find(|g| !fixed.contains(*g)) {
        return Err(Error::Link(format!(
            "global function '{missing}' has no BTF FUNC record, which libbpf's linker needs to merge the probe runtime"
        )));
    }
    Ok(copy.write())
}

/// Reads the manifest of an instrumented object, if it has one.
pub fn read_manifest(obj: &[u8]) -> Result<Option<Manifest>> {
    let elf = Elf::parse(obj)?;
    let Some(i) = elf.section_index(runtime::MANIFEST_SECTION) else {
        return Ok(None);
    };
    serde_json::from_slice(&elf.sections[i].data)
        .map(Some)
        .map_err(|e| {
            Error::malformed(
                format!("manifest: {e}"),
                Loc::sec(runtime::MANIFEST_SECTION),
            )
        })
}

/// Re-emits an object with no probe: the identity, used to check the writer.
pub fn passthrough(input: &[u8]) -> Result<Vec<u8>> {
    let mut elf = Elf::parse(input)?;
    patch::apply(&mut elf, None, &Insertions::new())?;
    Ok(elf.write())
}

/// Where a caller-saved register waits out a probe call.
enum SaveTo {
    Reg(u8),
    Stack(i16),
}

/// Symbol indices of what the inlined probes refer to.
struct RuntimeSyms {
    start: usize,
    end: usize,
    pcpu: usize,
    zero: usize,
    config: usize,
    /// Sites read the counter themselves (one event, not `perf`).
    inline: Option<InlineRead>,
}

/// What a site needs to read the counter itself.
struct InlineRead {
    start_prep: usize,
    end_value: usize,
    read: Read,
}

enum Read {
    /// A helper with no argument (`bpf_ktime_get_ns`).
    Helper(i32),
    /// A module kfunc (extern symbol, no argument), behind the
    /// `inxpect_kfuncs` flag the verifier folds.
    Kfunc { sym: usize, flag: usize },
}

/// The inlined body of one probe (registers R0..R5 are free here: the
/// caller saved what is live).
///
/// Every probe first finds this CPU's `inxpect_pcpu` entry (a map lookup the
/// verifier inlines for per-CPU arrays on recent kernels). A program entry
/// then counts the run and decides the sampling; a START or END calls the
/// runtime only when this run is sampled (`cur != 0`), so an unsampled run
/// costs a few loads and a branch per probe and no call.
///
/// `flag`: in a program, the stack slot of the sampling word; `checked`: the
/// site already tested it.
///
/// `spare`: a dead callee-saved register left after the saves, which lets a
/// START site read the counter itself (it holds the per-CPU pointer across
/// the read).
fn probe_body(
    k: Kind,
    s: &RuntimeSyms,
    flag: Option<i16>,
    checked: bool,
    spare: Option<u8>,
) -> Vec<NewInsn> {
    use insn::{OP_ADD, OP_AND, SIZE_DW, SIZE_W};
    use runtime::{config, pcpu};
    let p = NewInsn::plain;
    let ld = |dst: u8, sym: usize| {
        let [a, b] = Insn::ld_imm64(dst);
        [
            NewInsn {
                insn: a,
                call: None,
                load: Some(sym),
            },
            p(b),
        ]
    };
    // This CPU's `inxpect_pcpu` entry into R0 (NULL on failure): a lookup
    // the verifier inlines for per-CPU arrays.
    let pcpu_lookup = || -> Vec<NewInsn> {
        let mut v: Vec<NewInsn> = ld(1, s.pcpu).into();
        v.extend(ld(2, s.zero));
        v.push(p(Insn::helper_call(1))); // bpf_map_lookup_elem
        v
    };
    let to = |sym: usize| NewInsn {
        insn: Insn::pseudo_call(-1),
        call: Some(sym),
        load: None,
    };
    // The counter read, with its guard: `skip` instructions follow it that a
    // missing module must also skip. A site that tested the sampling word
    // needs no guard: without the module the program entry stores a 0 the
    // verifier knows (below), which makes the whole site dead code; the two
    // instructions of the guard would otherwise fall between END's read and
    // START's.
    let read = |r: &Read, skip: usize| -> Vec<NewInsn> {
        match r {
            Read::Helper(id) => vec![p(Insn::helper_call(*id))],
            Read::Kfunc { sym, .. } if flag.is_some() => vec![to(*sym)],
            Read::Kfunc { sym, flag } => {
                let mut v: Vec<NewInsn> = ld(1, *flag).into();
                v.push(p(Insn::ldx(insn::SIZE_W, 1, 1, 0)));
                v.push(p(Insn::jeq_imm(1, 0, (1 + skip) as i16, false)));
                v.push(to(*sym));
                v
            }
        }
    };
    let call = |k: Kind, id: u32| -> Vec<NewInsn> {
        let arg = p(Insn::mov64_imm(1, id as i32));
        match (k, &s.inline, spare) {
            // START in a function with the sampling word: the bookkeeping
            // inline too (region enabled, this run sampled, `held.run =
            // cur`), then the read, stored through the per-CPU pointer kept
            // in `f`; no runtime call. (The kfunc guard is not needed here:
            // without the module the word is a known 0, see `read`.)
            (Kind::Start(_), Some(inl), Some(f)) if flag.is_some() => {
                use runtime::pcpu::{CUR, HELD, HELD_SIZE};
                let held = (HELD + HELD_SIZE * id as usize) as i16;
                let tail_store = vec![p(Insn::stx_dw(f, held + 8, 0))];
                let rd = read(&inl.read, tail_store.len());
                let rest = |v: &[NewInsn]| (v.len() + rd.len() + tail_store.len()) as i16;
                // After the enabled test: the lookup, cur, held.run.
                let mut look = pcpu_lookup();
                let mut after: Vec<NewInsn> = vec![
                    p(Insn::ldx(SIZE_DW, 1, 0, CUR as i16)),
                    p(Insn::jeq_imm(1, 0, 0, false)), // patched below
                    p(Insn::stx_dw(0, held, 1)),
                    p(Insn::mov64_reg(f, 0)),
                ];
                let n = rest(&after[2..]);
                after[1] = p(Insn::jeq_imm(1, 0, n, false));
                look.push(p(Insn::jeq_imm(0, 0, rest(&after), false)));
                look.extend(after);
                // Region enabled: bit id of config.enabled (a shift for the
                // bits an imm32 would sign-extend).
                let word = (config::ENABLED + 8 * (id as usize / 64)) as i16;
                let bit = id % 64;
                let mut v: Vec<NewInsn> = ld(1, s.config).into();
                v.push(p(Insn::ldx(SIZE_DW, 1, 1, word)));
                if bit < 31 {
                    v.push(p(Insn::alu64_imm(OP_AND, 1, 1 << bit)));
                } else {
                    v.push(p(Insn::alu64_imm(insn::OP_RSH, 1, bit as i32)));
                    v.push(p(Insn::alu64_imm(OP_AND, 1, 1)));
                }
                v.push(p(Insn::jeq_imm(1, 0, rest(&look), false)));
                v.extend(look);
                v.extend(rd);
                v.extend(tail_store);
                v
            }
            // START elsewhere: bookkeeping in the runtime, then the read
            // here, stored through the per-CPU pointer kept in `f`.
            (Kind::Start(_), Some(inl), Some(f)) => {
                let off = (runtime::pcpu::HELD + runtime::pcpu::HELD_SIZE * id as usize + 8) as i16;
                let tail_store = vec![p(Insn::stx_dw(f, off, 0))];
                let rd = read(&inl.read, tail_store.len());
                let mut look = pcpu_lookup();
                let after_look = 1 + rd.len() + tail_store.len();
                look.push(p(Insn::jeq_imm(0, 0, after_look as i16, false)));
                look.push(p(Insn::mov64_reg(f, 0)));
                let mut v = vec![arg, to(inl.start_prep)];
                let rest = look.len() + rd.len() + tail_store.len();
                v.push(p(Insn::jeq_imm(0, 0, rest as i16, false)));
                v.extend(look);
                v.extend(rd);
                v.extend(tail_store);
                v
            }
            // END: read first, then hand the value to the runtime.
            (Kind::End(_), Some(inl), _) => {
                let tail = vec![p(Insn::mov64_reg(2, 0)), arg, to(inl.end_value)];
                let mut v = read(&inl.read, tail.len());
                v.extend(tail);
                v
            }
            (Kind::Start(_), ..) => vec![arg, to(s.start)],
            _ => vec![arg, to(s.end)],
        }
    };
    match (k, flag) {
        (Kind::Start(id) | Kind::End(id), Some(_)) if checked => return call(k, id),
        (Kind::Start(id) | Kind::End(id), Some(fl)) => {
            let c = call(k, id);
            let mut v = vec![
                p(Insn::ldx_dw(1, 10, fl)),
                p(Insn::jeq_imm(1, 0, c.len() as i16, false)),
            ];
            v.extend(c);
            return v;
        }
        _ => {}
    }
    let mut v: Vec<NewInsn> = Vec::new();
    if let Some(fl) = flag {
        v.push(p(Insn::st_dw(10, fl, 0)));
    }
    v.extend(pcpu_lookup());
    let [cfg0, cfg1] = ld(2, s.config);
    let tail: Vec<NewInsn> = match k {
        Kind::RunBegin => {
            // The sampled arm: sampled++, cur = runs, and the word for the
            // sites. Without the module (`inxpect_kfuncs` 0, which the
            // verifier knows) sites that read a kfunc themselves skip their
            // guard (see `read`), so the run counts `no_counter` and the
            // word stored is a known 0 instead.
            let mut sampled = vec![
                p(Insn::ldx(SIZE_DW, 2, 0, pcpu::SAMPLED as i16)),
                p(Insn::alu64_imm(OP_ADD, 2, 1)),
                p(Insn::stx_dw(0, pcpu::SAMPLED as i16, 2)),
                p(Insn::stx_dw(0, pcpu::CUR as i16, 1)),
            ];
            if let Some(fl) = flag {
                if let Some(InlineRead {
                    read: Read::Kfunc { flag: kf, .. },
                    ..
                }) = &s.inline
                {
                    sampled.extend(ld(2, *kf));
                    sampled.extend([
                        p(Insn::ldx(SIZE_W, 2, 2, 0)),
                        p(Insn::jeq_imm(2, 0, 4, true)),
                        p(Insn::ldx(SIZE_DW, 3, 0, pcpu::NO_COUNTER as i16)),
                        p(Insn::alu64_imm(OP_ADD, 3, 1)),
                        p(Insn::stx_dw(0, pcpu::NO_COUNTER as i16, 3)),
                        p(Insn::mov64_imm(1, 0)),
                    ]);
                }
                sampled.push(p(Insn::stx_dw(10, fl, 1)));
            }
            // runs++; sampled when (runs & mask) == 0. The unsampled arm
            // only clears cur: the word on the stack is already 0.
            let mut t = vec![
                p(Insn::ldx(SIZE_DW, 1, 0, pcpu::RUNS as i16)),
                p(Insn::alu64_imm(OP_ADD, 1, 1)),
                p(Insn::stx_dw(0, pcpu::RUNS as i16, 1)),
                cfg0,
                cfg1,
                p(Insn::ldx(SIZE_DW, 2, 2, config::SAMPLE_MASK as i16)),
                p(Insn::alu64_reg(OP_AND, 2, 1)),
                p(Insn::jeq_imm(2, 0, 2, false)),
                p(Insn::st_dw(0, pcpu::CUR as i16, 0)),
                p(Insn::ja(sampled.len() as i16)),
            ];
            t.extend(sampled);
            t
        }
        Kind::Start(id) | Kind::End(id) => {
            let c = call(k, id);
            let mut t = vec![
                p(Insn::ldx(SIZE_DW, 1, 0, pcpu::CUR as i16)),
                p(Insn::jeq_imm(1, 0, c.len() as i16, false)),
            ];
            t.extend(c);
            t
        }
    };
    v.push(p(Insn::jeq_imm(0, 0, tail.len() as i16, false)));
    v.extend(tail);
    v
}

fn runtime_symbol(elf: &Elf, name: &str, func: bool) -> Result<usize> {
    elf.symbols
        .iter()
        .position(|s| s.name == name && s.is_func() == func && s.shndx != 0)
        .ok_or_else(|| Error::Link(format!("runtime function {name} missing after linking")))
}

/// Builds the probe sequences: save live caller-saved registers (into dead
/// callee-saved ones first, then below the function's deepest stack slot),
/// call the runtime, restore.
fn emit(elf: &Elf, plan: &Plan, opts: &Options) -> Result<Insertions> {
    let extern_sym = |name: &str| {
        elf.symbols
            .iter()
            .position(|y| y.name == name && y.shndx == 0)
    };
    let prep = elf
        .symbols
        .iter()
        .position(|y| y.name == runtime::FN_START_PREP && y.is_func() && y.shndx != 0);
    let endv = elf
        .symbols
        .iter()
        .position(|y| y.name == runtime::FN_END_VALUE && y.is_func() && y.shndx != 0);
    let read = match opts.counter {
        Counter::Ktime => Some(Read::Helper(5)),
        // The `_lo` kfuncs: low 32 bits, no argument (see the runtime).
        Counter::Tsc => extern_sym("inxpect_read_tsc_lo").map(|sym| Read::Kfunc { sym, flag: 0 }),
        Counter::Pmc if opts.events == 1 => {
            extern_sym("inxpect_read_pmc0_lo").map(|sym| Read::Kfunc { sym, flag: 0 })
        }
        _ => None,
    };
    let kflag = runtime_symbol(elf, "inxpect_kfuncs", false).ok();
    let inline = match (prep, endv, read) {
        (Some(start_prep), Some(end_value), Some(read)) => {
            let read = match read {
                Read::Kfunc { sym, .. } => kflag.map(|flag| Read::Kfunc { sym, flag }),
                r => Some(r),
            };
            read.map(|read| InlineRead {
                start_prep,
                end_value,
                read,
            })
        }
        _ => None,
    };
    let syms = RuntimeSyms {
        start: runtime_symbol(elf, runtime::FN_START, true)?,
        end: runtime_symbol(elf, runtime::FN_END, true)?,
        pcpu: runtime_symbol(elf, runtime::MAP_PCPU, false)?,
        zero: runtime_symbol(elf, "inxpect_zero", false)?,
        config: runtime_symbol(elf, "inxpect_config", false)?,
        inline,
    };
    let mut groups: BTreeMap<(usize, usize), Vec<Kind>> = BTreeMap::new();
    let mut func_of: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for p in &plan.points {
        groups.entry((p.sec, p.slot)).or_default().push(p.kind);
        func_of.insert((p.sec, p.slot), p.func);
    }
    let uses = cfg::call_uses(elf, &plan.funcs)?;
    let mut analyses = BTreeMap::new();
    for &fi in func_of.values() {
        if let std::collections::btree_map::Entry::Vacant(e) = analyses.entry(fi) {
            e.insert(cfg::analyse(elf, &plan.funcs[fi], &uses)?);
        }
    }
    let mut out = Insertions::new();
    // Registers live at a probe but not initialised on every path to it (the
    // compiler relies on correlated branches the verifier follows): copying
    // them would be rejected, so each function first gives them a value where
    // they lose theirs: at entry and after each call, where the program itself
    // can no longer read them.
    let mut zeroed: BTreeMap<usize, u16> = BTreeMap::new();
    for (&fi, a) in &analyses {
        let f = &plan.funcs[fi];
        let mut need = 0u16;
        for (&(_, slot), &g) in func_of.iter().filter(|(_, &g)| g == fi) {
            let _ = g;
            let i = slot - f.start;
            need |= a.live_in[i] & CALLER_SAVED & !a.must_init[i];
        }
        if need == 0 {
            continue;
        }
        let g = &a.g;
        let entry_jumped = (0..g.insns.len())
            .any(|i| g.is_insn[i] && g.insns[i].is_branch() && g.succs[i].contains(0));
        if entry_jumped {
            continue;
        }
        zeroed.insert(fi, need);
        let entry_init = a.must_init[0];
        let at_entry: Vec<NewInsn> = (0..6u8)
            .filter(|r| need & !entry_init & (1 << r) != 0)
            .map(|r| NewInsn::plain(Insn::mov64_imm(r, 0)))
            .collect();
        if !at_entry.is_empty() {
            out.entry(f.sec)
                .or_default()
                .push((f.start, Place::Before, at_entry));
        }
        for i in 0..a.g.insns.len() {
            let x = &a.g.insns[i];
            if !a.g.is_insn[i] || x.effect().defs != CALLER_SAVED {
                continue;
            }
            let seq: Vec<NewInsn> = (1..6u8)
                .filter(|r| need & (1 << r) != 0)
                .map(|r| NewInsn::plain(Insn::mov64_imm(r, 0)))
                .collect();
            if !seq.is_empty() {
                out.entry(f.sec)
                    .or_default()
                    .push((f.start + i, Place::After, seq));
            }
        }
    }
    for ((sec, slot), kinds) in groups {
        let fi = func_of[&(sec, slot)];
        let f = &plan.funcs[fi];
        let a = &analyses[&fi];
        let i = slot - f.start;
        let init = a.must_init[i] | zeroed.get(&fi).copied().unwrap_or(0);
        let keep = a.live_in[i] & init & CALLER_SAVED;
        let mut free: Vec<u8> = (6..=9).filter(|r| a.live_in[i] & (1 << r) == 0).collect();
        // A program keeps this run's sampling word (0 = not sampled) in a
        // stack slot below everything it uses, written by the inlined run
        // count at its entry: its probes test it with one load.
        let base = (a.stack_depth + 7) / 8 * 8;
        let flag = f.is_prog.then_some(-(base as i16) - 8);
        let depth = base + if flag.is_some() { 8 } else { 0 };
        let mut saves: Vec<(u8, SaveTo)> = Vec::new();
        let mut spills = 0i64;
        for r in 0..6u8 {
            if keep & (1 << r) == 0 {
                continue;
            }
            if let Some(c) = (!free.is_empty()).then(|| free.remove(0)) {
                saves.push((r, SaveTo::Reg(c)));
            } else {
                spills += 1;
                let need = depth + 8 * spills;
                let frame = (need + 31) / 32 * 32;
                if frame + runtime::RUNTIME_STACK > 512 {
                    let loc = Loc::at(&elf.sections[sec].name, slot as u64 * 8);
                    return Err(Error::StackExhausted {
                        func: f.name.clone(),
                        need: frame + runtime::RUNTIME_STACK,
                        loc,
                    });
                }
                saves.push((r, SaveTo::Stack(-(need as i16))));
            }
        }
        let mut seq: Vec<NewInsn> = saves
            .iter()
            .map(|(r, to)| {
                NewInsn::plain(match to {
                    SaveTo::Reg(c) => Insn::mov64_reg(*c, *r),
                    SaveTo::Stack(off) => Insn::stx_dw(10, *off, *r),
                })
            })
            .collect();
        // An unsampled run skips the whole site (saves included) after one
        // load and one branch, when a dead register can take the load.
        let scratch = (0..=9u8).find(|r| a.live_in[i] & (1 << r) == 0);
        let precheck = match (flag, scratch) {
            (Some(fl), Some(d)) if !kinds.contains(&Kind::RunBegin) => Some((fl, d)),
            _ => None,
        };
        let spare = free.first().copied();
        for k in kinds {
            seq.extend(probe_body(k, &syms, flag, precheck.is_some(), spare));
        }
        seq.extend(saves.iter().map(|(r, from)| {
            NewInsn::plain(match from {
                SaveTo::Reg(c) => Insn::mov64_reg(*r, *c),
                SaveTo::Stack(off) => Insn::ldx_dw(*r, 10, *off),
            })
        }));
        if let Some((fl, d)) = precheck {
            let mut pre = vec![
                NewInsn::plain(Insn::ldx_dw(d, 10, fl)),
                NewInsn::plain(Insn::jeq_imm(d, 0, seq.len() as i16, false)),
            ];
            pre.append(&mut seq);
            seq = pre;
        }
        out.entry(sec).or_default().push((slot, Place::Before, seq));
    }
    for list in out.values_mut() {
        // Stable: the entry zeroing stays ahead of the entry probe at the same slot.
        list.sort_by_key(|(slot, place, _)| (*slot, *place));
    }
    Ok(out)
}
