//! inxpect's rewriter: inserts profiling probes into compiled BPF objects.
//!
//! Pipeline: [`elf`] (read) → [`probe`] (find and check points, on the input)
//! → [`link`] (libbpf links the probe runtime in) → [`emit`] (probe
//! sequences per site on [`cfg`]'s liveness, the stack budget) → [`patch`]
//! (insert, remap every offset) → [`elf`] (write). The output carries a self-description in its
//! `.inxpect` section ([`runtime::Manifest`]).

// Errors carry their full location (section, offset, source line); they are
// the cold path, so their size is not worth boxing.
#![allow(clippy::result_large_err)]

pub mod btf_ext;
pub mod btf_gen;
pub mod cfg;
pub mod dump;
pub mod dwarf;
pub mod elf;
pub mod emit;
pub mod error;
pub mod insn;
pub mod link;
pub mod nest;
pub mod patch;
pub mod probe;
pub mod runtime;

pub use error::{Error, Loc, Result};
pub use probe::Mode;
pub use runtime::{Counter, Manifest, Stats};

use btf_ext::BtfExt;
use elf::Elf;
use patch::Insertions;
use probe::Plan;

#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    pub counter: Counter,
    /// PMC slots read per probe (`pmc` only), 1..=4.
    pub events: usize,
    pub only: Option<Vec<String>>,
    /// A test hook: the sites read the counter by calling this global
    /// function of the object (see [`emit::Backend::resolve`]).
    pub read_fn: Option<String>,
    /// Where END adds a measurement to the statistics at program-level
    /// sites of a one-event backend (see [`Stats`]).
    pub stats: Stats,
    /// A sampled-out run of a program takes an uninstrumented copy of the
    /// program's code, which calls uninstrumented copies of the
    /// subprograms with sites (no cost per site; the verifier walks the
    /// code twice). Code that makes tail calls keeps one copy.
    pub unsampled_copy: bool,
    /// The longest program whose copy goes right after its entry (a
    /// sampled-out run falls into it); longer ones have it after their
    /// last instruction. A test hook: the default is what the entry's
    /// 16-bit branch over the copy allows.
    pub inline_copy_max: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Sections,
            counter: Counter::Ktime,
            events: 1,
            only: None,
            read_fn: None,
            stats: Stats::Inline,
            unsampled_copy: false,
            inline_copy_max: emit::INLINE_COPY_MAX,
        }
    }
}

pub struct Instrumented {
    pub object: Vec<u8>,
    pub manifest: Manifest,
    pub warnings: Vec<String>,
    /// How each input code section moved, by section name (absent: it did
    /// not move).
    pub moved: std::collections::HashMap<String, patch::Moved>,
}

/// `.BTF.ext`, when the object has one: line info for messages, and the
/// records the patch stage moves. One that does not parse is an error: the
/// code would move and its func_info/line_info/CO-RE offsets would not.
fn parse_ext(e: &Elf) -> Result<Option<(usize, BtfExt)>> {
    let Some(ei) = e.section_index(".BTF.ext") else {
        return Ok(None);
    };
    let Some(bi) = e.section_index(".BTF") else {
        return Err(Error::malformed(
            ".BTF.ext without .BTF",
            Loc::sec(".BTF.ext"),
        ));
    };
    let x = BtfExt::parse(&e.sections[ei].data, &e.sections[bi].data)
        .map_err(|err| Error::malformed(err.to_string(), Loc::sec(".BTF.ext")))?;
    Ok(Some((ei, x)))
}

/// Parses an object and finds its regions without changing anything
/// (`--list`). An instrumented object answers with its manifest: the
/// regions it was made with, at the offsets of the object it was made from.
pub fn list(input: &[u8], opts: &Options) -> Result<Manifest> {
    if let Some(m) = read_manifest(input)? {
        return Ok(m);
    }
    let elf = Elf::parse(input)?;
    let ext = parse_ext(&elf)?;
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
        stats: opts.stats,
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
        copied: Vec::new(),
        regions: plan.regions.clone(),
    }
}

/// Each START's and END's window into its manifest site (the points of
/// `plan`, on the input, in the order of `windows`).
fn windows_into(
    m: &mut Manifest,
    plan: &Plan,
    windows: &[(Option<runtime::Window>, Option<runtime::Window>)],
) {
    for (p, w) in plan.points.iter().zip(windows) {
        let (id, start) = match p.kind {
            probe::Kind::Start(id) => (id, true),
            probe::Kind::End(id) => (id, false),
            _ => continue,
        };
        let Some(r) = m.regions.iter_mut().find(|r| r.id == id) else {
            continue;
        };
        let sites = if start { &mut r.starts } else { &mut r.ends };
        let offset = p.slot.bytes();
        if let Some(site) = sites
            .iter_mut()
            .find(|x| x.offset == offset && x.window.is_none())
        {
            (site.window, site.whole) = *w;
        }
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

/// What becomes of the input's DWARF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dwarf {
    /// Converted with every code address moved with the code ([`dwarf::remap`]).
    Keep,
    /// Left out (`--strip-dwarf`).
    Strip,
}

/// Rewrites `input` with probes at the regions `opts` selects, keeping its
/// DWARF.
pub fn instrument(input: &[u8], opts: &Options) -> Result<Instrumented> {
    instrument_with(input, opts, Dwarf::Keep)
}

/// [`instrument`], with the DWARF kept or stripped.
pub fn instrument_with(input: &[u8], opts: &Options, keep: Dwarf) -> Result<Instrumented> {
    if !(1..=runtime::MAX_EVENTS).contains(&opts.events) {
        return Err(Error::Events(opts.events));
    }
    let elf = Elf::parse(input)?;
    if elf.section_index(runtime::MANIFEST_SECTION).is_some()
        || elf.symbols.iter().any(|s| s.name == runtime::FN_START)
    {
        return Err(Error::AlreadyInstrumented);
    }
    let ext = parse_ext(&elf)?;
    let src = probe::Source {
        dwarf: dwarf::Lines::parse(&elf),
        ext: ext.as_ref().map(|x| &x.1),
    };
    // Check everything on the input first: errors name the input's offsets.
    let plan = probe::plan(&elf, &src, opts.mode, opts.only.as_deref())?;
    // `only: Some([])` asks for no region at all: the whole pipeline with
    // zero probes (the identity test of every stage after the plan).
    let zero_probes = opts.only.as_ref().is_some_and(|o| o.is_empty());
    if plan.regions.is_empty() && !zero_probes {
        return Err(Error::NothingToDo(match opts.mode {
            Mode::Sections => "no INXPECT_START/INXPECT_END markers found (use --functions to profile every function)".into(),
            Mode::Functions => "no functions found in any code section".into(),
        }));
    }
    if opts.counter.needs_gpl() && !license_is_gpl(&elf) {
        return Err(Error::NeedsGpl(opts.counter.name()));
    }
    let mut warnings = Vec::new();
    let m = manifest(&plan, opts);

    let (linkable, restore) = linkable_input(input, &elf, &plan)?;
    let linked = link::link(&linkable, runtime::object(opts.counter, opts.events))?;
    let mut out = Elf::parse(&linked)?;
    if !restore.is_empty() {
        let b = out
            .section_index(".BTF")
            .ok_or_else(|| Error::Layout("the linker wrote no .BTF".into()))?;
        btf_ext::btf_set_func_linkage(&mut out.sections[b].data, &restore, 0)?;
    }
    let lext = parse_ext(&out)?;
    let lplan = plan.rebase(&elf, &out)?;
    let backend = emit::Backend::resolve(
        &out,
        opts.counter,
        m.events,
        opts.read_fn.as_deref(),
        opts.stats,
    )?;
    let copy = opts
        .unsampled_copy
        .then_some(opts.inline_copy_max.min(emit::INLINE_COPY_MAX));
    let emitted = emit::emit(&out, &lplan, &backend, copy)?;
    let mut m = m;
    windows_into(&mut m, &plan, &emitted.windows);
    m.copied = emitted
        .copied
        .iter()
        .map(|&f| lplan.funcs[f].name.clone())
        .collect();
    if opts.unsampled_copy {
        let left: Vec<&str> = m
            .programs
            .iter()
            .filter(|p| !m.copied.contains(p))
            .map(|p| p.as_str())
            .collect();
        if !left.is_empty() {
            warnings.push(format!(
                "--unsampled-copy: no copy of {} (a program that makes tail calls keeps one copy: the program it enters continues the run)",
                left.join(", ")
            ));
        }
    }
    let ins = emitted.insertions;
    let moved = patch::apply(&mut out, lext.as_ref().map(|(i, x)| (*i, x)), &ins)?;
    // libbpf's linker drops DWARF: it is carried over from the input.
    if keep == Dwarf::Keep {
        // A panic inside gimli on odd input is a dropped DWARF, not a crash.
        let mut copy = out.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dwarf::remap(&elf, &mut copy, &moved)
        }));
        match r {
            Ok(Ok(_)) => out = copy,
            Ok(Err(why)) => warnings.push(format!("DWARF dropped: {why}")),
            Err(_) => warnings.push("DWARF dropped: gimli could not convert it".into()),
        }
    }
    let json = serde_json::to_vec_pretty(&m).map_err(|e| Error::Manifest(e.to_string()))?;
    out.add_note_section(runtime::MANIFEST_SECTION, json)?;
    let moved = moved
        .into_iter()
        .map(|(si, m)| (out.sections[si].name.clone(), m))
        .collect();
    Ok(Instrumented {
        object: out.write(),
        manifest: m,
        warnings,
        moved,
    })
}

/// The input as libbpf's linker will take it, and the functions whose BTF
/// linkage must be made static again after the link. The linker needs a
/// non-static BTF FUNC for every global function: an object without `.BTF`
/// gets one synthesised ([`btf_gen`]); gcc 12 marks every function static,
/// so a copy gets those records' linkage set. Either way the input file is
/// never touched, and what the loader verified inline (a function whose BTF
/// said static, or every function of an object without BTF) is made static
/// again in the output, programs excepted.
fn linkable_input(
    input: &[u8],
    elf: &Elf,
    plan: &Plan,
) -> Result<(Vec<u8>, std::collections::HashSet<String>)> {
    let progs: std::collections::HashSet<&str> = plan
        .funcs
        .iter()
        .filter(|f| f.is_prog)
        .map(|f| f.name.as_str())
        .collect();
    let Some(b) = elf.section_index(".BTF") else {
        let lines = dwarf::Lines::parse(elf);
        let (btf, ext) = btf_gen::synthesize(elf, lines.as_ref())?;
        let mut copy = elf.clone();
        copy.add_note_section(".BTF", btf)?;
        copy.add_note_section(".BTF.ext", ext)?;
        let restore = elf
            .symbols
            .iter()
            .filter(|y| y.is_func() && !progs.contains(y.name.as_str()))
            .map(|y| y.name.clone())
            .collect();
        return Ok((copy.write(), restore));
    };
    let globals: std::collections::HashSet<String> = elf
        .symbols
        .iter()
        .filter(|y| y.is_func() && y.bind() != 0 && y.shndx != 0)
        .map(|y| y.name.clone())
        .collect();
    let have = btf_ext::btf_func_names(&elf.sections[b].data)?;
    let missing: std::collections::HashSet<String> = globals
        .iter()
        .filter(|g| !have.contains(*g))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok((input.to_vec(), Default::default()));
    }
    let mut copy = elf.clone();
    btf_ext::btf_set_func_linkage(&mut copy.sections[b].data, &missing, 1)?;
    let fixed = btf_ext::btf_func_names(&copy.sections[b].data)?;
    if let Some(m) = globals.iter().find(|g| !fixed.contains(*g)) {
        return Err(Error::NoBtfFunc(m.clone()));
    }
    let restore = missing
        .into_iter()
        .filter(|n| !progs.contains(n.as_str()))
        .collect();
    Ok((copy.write(), restore))
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

/// Re-emits an object with no probe through the whole patch stage (code,
/// relocations, symbols, `.BTF.ext`): on a well-formed object the identity,
/// which checks the remap as well as the writer. (On malformed input the
/// remap may normalise what it does not depend on, e.g. a second relocation
/// on one slot, so the fuzzers use [`passthrough`].)
pub fn remap_identity(input: &[u8]) -> Result<Vec<u8>> {
    let mut elf = Elf::parse(input)?;
    let ext = parse_ext(&elf)?;
    patch::remap(
        &mut elf,
        ext.as_ref().map(|(i, x)| (*i, x)),
        &Insertions::new(),
    )?;
    Ok(elf.write())
}
