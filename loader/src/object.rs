//! From a path to a loaded object: instrument in memory when the object has
//! no `.inxpect` manifest, open it from memory with libbpf, check the program
//! type, load it, and wire the `perf` backend's per-CPU events.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use inxpect_rewriter::runtime::{self, config, Counter, Manifest};
use inxpect_rewriter::{Mode, Options, Stats};
use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder, PrintLevel, ProgramType};

use crate::events::PerfAttr;
use inxpect_loader::stats::{self, Snapshot};

/// An object ready to load: instrumented bytes and their self-description.
pub struct Prepared {
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
    /// Shown in reports: the path the user gave.
    pub origin: String,
}

/// How an object instrumented here is built, beside its counter and mode.
#[derive(Clone, Copy, Debug, Default)]
pub struct Code {
    /// Where END adds to the statistics.
    pub stats: Stats,
    /// Sampled-out runs take an uninstrumented copy of each program.
    pub unsampled_copy: bool,
}

/// Instruments `bytes` for `counter` unless they already carry a manifest;
/// `explicit` says the user asked for `counter` (a mismatch is an error).
pub fn prepare_bytes(
    bytes: Vec<u8>,
    origin: &str,
    counter: Counter,
    explicit: bool,
    events: usize,
    mode: Mode,
    code: Code,
) -> Result<Prepared> {
    let existing = inxpect_rewriter::read_manifest(&bytes).map_err(|e| anyhow!("{origin}: {e}"))?;
    if let Some(m) = existing {
        if explicit && m.counter != counter {
            bail!(
                "{origin} is already instrumented for the {} counter, not {}: instrument the original object again, or drop --counter",
                m.counter.name(),
                counter.name()
            );
        }
        if m.regions.is_empty() {
            bail!("{origin} has no regions");
        }
        return Ok(Prepared {
            bytes,
            manifest: m,
            origin: origin.into(),
        });
    }
    let opts = Options {
        mode,
        counter,
        events,
        only: None,
        read_fn: None,
        stats: code.stats,
        unsampled_copy: code.unsampled_copy,
        ..Default::default()
    };
    // The in-memory object is never written out: its DWARF is moot.
    let out = inxpect_rewriter::instrument_with(&bytes, &opts, inxpect_rewriter::Dwarf::Strip)
        .map_err(|e| anyhow!("{origin}: {e}"))?;
    for w in &out.warnings {
        log::note(&format!("{origin}: {w}"));
    }
    Ok(Prepared {
        bytes: out.object,
        manifest: out.manifest,
        origin: origin.into(),
    })
}

/// The program types inxpect runs: XDP, and tc classifiers (`sched_cls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Xdp,
    Tc,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Xdp => "XDP",
            Kind::Tc => "tc (sched_cls)",
        }
    }
}

/// A loaded object, the program to run, and what keeps it working.
pub struct Loaded {
    pub obj: Object,
    /// How its probes reach this CPU's `inxpect_pcpu` entry.
    pub pcpu: inxpect_loader::pcpu::Access,
    pub manifest: Manifest,
    pub prog: String,
    pub kind: Kind,
    /// Per-CPU perf events the `perf` backend reads; closed on drop.
    _perf: Vec<OwnedFd>,
}

static LIBBPF_LOG: Mutex<String> = Mutex::new(String::new());

fn libbpf_print(_level: PrintLevel, msg: String) {
    if let Ok(mut l) = LIBBPF_LOG.lock() {
        l.push_str(&msg);
    }
}

/// Keeps libbpf's messages (verifier log included) for the error report
/// instead of letting them interleave with ours.
pub fn capture_libbpf_log() {
    libbpf_rs::set_print(Some((PrintLevel::Warn, libbpf_print)));
}

fn take_log() -> String {
    LIBBPF_LOG
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

/// Opens `prep` from memory, checks that `want` (or the only program) is XDP,
/// and loads it. `perf` is the event the `perf` backend reads on every CPU.
pub fn load(prep: &Prepared, want: Option<&str>, perf: Option<&PerfAttr>) -> Result<Loaded> {
    load_with(prep, want, perf, Some(Kind::Xdp), &mut |_, _| Ok(()))
}

/// What `load_with` calls on the opened object before loading it: the
/// program's name and the object (e.g. to reuse maps of a running program).
pub type BeforeLoad<'a> = dyn FnMut(&str, &mut libbpf_rs::OpenObject) -> Result<()> + 'a;

/// `load` for a program of kind `kind` (None: XDP or tc, as its section
/// says), calling `before` on the opened object first.
pub fn load_with(
    prep: &Prepared,
    want: Option<&str>,
    perf: Option<&PerfAttr>,
    kind: Option<Kind>,
    before: &mut BeforeLoad<'_>,
) -> Result<Loaded> {
    let origin = &prep.origin;
    let mut open = ObjectBuilder::default()
        .open_memory(&prep.bytes)
        .with_context(|| format!("opening {origin}"))?;
    let names: Vec<String> = open
        .progs()
        .map(|p| p.name().to_string_lossy().into_owned())
        .collect();
    let prog = match want {
        Some(w) => {
            if !names.iter().any(|n| n == w) {
                bail!(
                    "{origin} has no program {w:?} (it has: {})",
                    names.join(", ")
                );
            }
            w.to_string()
        }
        None => match names.as_slice() {
            [one] => one.clone(),
            [] => bail!("{origin} has no program"),
            many => bail!(
                "{origin} has {} programs ({}): pick one with --prog",
                many.len(),
                many.join(", ")
            ),
        },
    };
    let mut found = Kind::Xdp;
    for mut p in open.progs_mut() {
        let is_it = p.name() == OsStr::new(&prog);
        let k = match p.prog_type() {
            ProgramType::Xdp => Some(Kind::Xdp),
            ProgramType::SchedCls => Some(Kind::Tc),
            // Sections libbpf does not know: the apps are XDP by contract.
            ProgramType::Unspec => {
                p.set_prog_type(ProgramType::Xdp);
                Some(Kind::Xdp)
            }
            _ => None,
        };
        if !is_it {
            continue;
        }
        let what = match kind {
            Some(Kind::Xdp) | None => "XDP",
            Some(Kind::Tc) => "a tc classifier (sched_cls)",
        };
        match (k, kind) {
            (Some(k), None) => found = k,
            (Some(k), Some(w)) if k == w => found = k,
            (Some(k), Some(_)) => bail!(
                "program {prog:?} in {origin} is a {} program (section {:?}), not {what}{}",
                k.name(),
                p.section(),
                if k == Kind::Tc {
                    ": use --tc ingress|egress"
                } else {
                    ""
                }
            ),
            (None, _) => bail!(
                "program {prog:?} in {origin} is a {:?} program (section {:?}), not {}",
                p.prog_type(),
                p.section(),
                if kind.is_none() { "XDP or tc" } else { what }
            ),
        }
    }
    before(&prog, &mut open)?;
    // The runtime calls the module's kfuncs only while `inxpect_kfuncs` (in
    // `.rodata.inxpect`) is 1; clear it where the module is
    // absent so the verifier drops the calls and the object still loads.
    inxpect_loader::sys::set_kfuncs_flag(&mut open, inxpect_loader::sys::module_kfuncs_present());
    take_log();
    // The flag folded into its tests, direct per-CPU access where the
    // kernel has it; a failure here is one of the load (the maps are
    // created in it), reported the same way.
    let loaded = match inxpect_loader::pcpu::finish(&mut open) {
        Ok(access) => open.load().map(|o| (o, access)),
        Err(e) => Err(libbpf_rs::Error::from(e)),
    };
    let (obj, pcpu) = match loaded {
        Ok(o) => o,
        Err(e) => {
            let log = take_log();
            let hint = if log.contains("bpf_perf_event_read_value")
                || (prep.manifest.counter == Counter::Perf && log.contains("cannot use helper"))
            {
                "\n  this kernel refuses bpf_perf_event_read_value in XDP programs (allowed from 6.18 on): use --counter ktime"
            } else if log.contains("calling kernel function inxpect_")
                && log.contains("is not allowed")
            {
                // The module's kfunc filter (Linux 6.5+).
                "\n  the inxpect kfuncs read system-wide counters and need CAP_PERFMON (or CAP_SYS_ADMIN) in the initial namespace: run inxpect with it, or use --counter ktime"
            } else if !prep.manifest.copied.is_empty() && over_budget(&log).is_some() {
                // The copy is walked as well as the instrumented code.
                "\n  the verifier walks each program's uninstrumented copy too: drop --unsampled-copy (or add --stats call)"
            } else if prep.manifest.stats == Stats::Inline && over_budget(&log).is_some() {
                // Inline statistics: their branches walked on every path.
                "\n  the verifier walks END's inline statistics on every path through each END: instrument with --stats call (the runtime's function, verified once), or fewer regions (--only)"
            } else {
                ""
            };
            bail!(
                "loading {origin}: {e}{hint}\n  libbpf said:\n    {}",
                log_tail(&log, 25)
            );
        }
    };
    let mut fds = Vec::new();
    if prep.manifest.counter == Counter::Perf {
        let attr = perf.context("the perf counter needs an event")?;
        fds = open_perf_events(&obj, attr)?;
    }
    Ok(Loaded {
        obj,
        pcpu,
        manifest: prep.manifest.clone(),
        prog,
        kind: found,
        _perf: fds,
    })
}

/// The uninstrumented program `l` was built from (`run --window`): `bytes`
/// loaded as they are, only that program, every map shared with `l` by name,
/// so that between windows it runs on the same state. A prog array is
/// refused: its entries are the instrumented build's programs, which the
/// original's tail calls would enter uncounted.
pub fn load_original(bytes: &[u8], origin: &str, l: &Loaded) -> Result<Object> {
    let mut open = ObjectBuilder::default()
        .open_memory(bytes)
        .with_context(|| format!("opening {origin}"))?;
    for mut p in open.progs_mut() {
        let it = p.name() == OsStr::new(&l.prog);
        if p.prog_type() == ProgramType::Unspec {
            p.set_prog_type(ProgramType::Xdp);
        }
        p.set_autoload(it);
    }
    for mut m in open.maps_mut() {
        let name = m.name().to_string_lossy().into_owned();
        if m.map_type() == libbpf_rs::MapType::ProgArray {
            bail!("--window: map {name} of {origin} is a prog array; between windows the original's tail calls would enter the instrumented programs it holds: profile without --window");
        }
        let theirs = l
            .obj
            .maps()
            .find(|x| x.name() == m.name())
            .with_context(|| {
                format!("--window: map {name} of {origin} is not in its instrumented build")
            })?;
        m.reuse_fd(theirs.as_fd())
            .with_context(|| format!("--window: sharing map {name}"))?;
    }
    take_log();
    open.load().map_err(|e| {
        anyhow!(
            "loading {origin} as it is (the program between windows): {e}\n  libbpf said:\n    {}",
            log_tail(&take_log(), 15)
        )
    })
}

/// The verifier's line saying a program is over its budget (too many
/// instructions processed, or too complex), if `log` has one.
pub fn over_budget(log: &str) -> Option<&str> {
    log.lines()
        .find(|l| l.contains("BPF program is too large") || l.contains("too complex"))
        .map(str::trim)
}

/// The last `n` lines of libbpf's log (the verifier's verdict is at the
/// end), indented for an error message.
fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n    ")
}

/// One perf event per online CPU, stored at index cpu of `inxpect_perf`.
fn open_perf_events(obj: &Object, attr: &PerfAttr) -> Result<Vec<OwnedFd>> {
    let map = obj
        .maps()
        .find(|m| m.name() == runtime::MAP_PERF)
        .context("the object has no inxpect_perf map")?;
    let cpus = crate::cpus_online()?;
    let mut fds = Vec::new();
    for cpu in cpus {
        let fd = attr.open(cpu)?;
        map.update(
            &cpu.to_ne_bytes(),
            &(fd.as_raw_fd() as u32).to_ne_bytes(),
            MapFlags::ANY,
        )
        .with_context(|| format!("storing the perf event of CPU {cpu}"))?;
        fds.push(fd);
    }
    Ok(fds)
}

impl Loaded {
    pub fn map(&self, name: &str) -> Result<libbpf_rs::Map<'_>> {
        self.obj
            .maps()
            .find(|m| m.name() == name)
            .with_context(|| format!("no map {name:?} in the object"))
    }

    /// `.data.inxpect`: libbpf names a custom data section's map after it.
    pub fn config_map(&self) -> Result<libbpf_rs::Map<'_>> {
        self.obj
            .maps()
            .find(|m| m.name().to_string_lossy().ends_with(runtime::MAP_CONFIG))
            .context("no .data.inxpect map in the object")
    }

    pub fn prog_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        let p = self
            .obj
            .progs()
            .find(|p| p.name() == OsStr::new(&self.prog))
            .context("program vanished")?;
        // The Object outlives the borrow, so the fd stays valid.
        let raw = p.as_fd().as_raw_fd();
        // SAFETY: the fd belongs to self.obj, which outlives the result.
        Ok(unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) })
    }
}

/// The runtime configuration, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub enabled: [u64; runtime::MAX_REGIONS / 64],
    pub sample_shift: u32,
    pub abi: u32,
}

impl Config {
    pub fn decode(b: &[u8]) -> Result<Config> {
        if b.len() < config::SIZE {
            bail!(
                "config value of {} bytes, expected {}",
                b.len(),
                config::SIZE
            );
        }
        let u64at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let u32at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let mut enabled = [0u64; runtime::MAX_REGIONS / 64];
        for (i, e) in enabled.iter_mut().enumerate() {
            *e = !u64at(config::DISABLED + 8 * i);
        }
        Ok(Config {
            enabled,
            sample_shift: u32at(config::SAMPLE_SHIFT),
            abi: u32at(config::ABI),
        })
    }

    /// Writes over `b`, keeping any bytes past the known layout.
    pub fn encode_into(&self, b: &mut [u8]) {
        for (i, e) in self.enabled.iter().enumerate() {
            b[config::DISABLED + 8 * i..config::DISABLED + 8 * i + 8]
                .copy_from_slice(&(!e).to_ne_bytes());
        }
        config::write_sampling(b, self.sample_shift);
    }

    pub fn is_enabled(&self, id: u32) -> bool {
        let id = id as usize;
        id < runtime::MAX_REGIONS && self.enabled[id / 64] & (1 << (id % 64)) != 0
    }

    pub fn set_enabled(&mut self, id: u32, on: bool) {
        let id = id as usize;
        if id < runtime::MAX_REGIONS {
            if on {
                self.enabled[id / 64] |= 1 << (id % 64);
            } else {
                self.enabled[id / 64] &= !(1 << (id % 64));
            }
        }
    }
}

pub fn read_config<M: MapCore>(map: &M) -> Result<Config> {
    let v = map
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)?
        .context("config map has no entry 0")?;
    let c = Config::decode(&v)?;
    if c.abi != runtime::ABI {
        bail!(
            "the object's runtime ABI is {}, this inxpect speaks {}",
            c.abi,
            runtime::ABI
        );
    }
    Ok(c)
}

pub fn write_config<M: MapCore>(map: &M, c: &Config) -> Result<()> {
    let mut v = map
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)?
        .context("config map has no entry 0")?;
    c.encode_into(&mut v);
    map.update(&0u32.to_ne_bytes(), &v, MapFlags::ANY)
        .context("updating the runtime config")
}

pub use inxpect_loader::report::display_name_in;

/// Region ids for comma-separated names (or ids), each checked.
pub fn region_ids(m: &Manifest, list: &str) -> Result<Vec<u32>> {
    if list.split(',').all(|s| s.trim().is_empty()) {
        // An empty list would silently measure nothing.
        bail!("an empty region list ({list:?}): give names or ids, comma-separated");
    }
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let found: Vec<u32> = m
            .regions
            .iter()
            .filter(|r| r.matches(name))
            .map(|r| r.id)
            .collect();
        if found.is_empty() {
            let known: Vec<String> = m.regions.iter().map(display_name_in(m)).collect();
            bail!(
                "no region {name:?} (regions: {}; a bare name selects it in every function, function:name one of them)",
                known.join(", ")
            );
        }
        out.extend(found);
    }
    Ok(out)
}

/// Sets the sampling shift and, with `only`, enables just those regions.
pub fn configure(l: &Loaded, sample_shift: u32, only: Option<&str>) -> Result<Config> {
    let map = l.config_map()?;
    let mut c = read_config(&map)?;
    c.sample_shift = sample_shift;
    if let Some(list) = only {
        let ids = region_ids(&l.manifest, list)?;
        c.enabled = [0; runtime::MAX_REGIONS / 64];
        for id in ids {
            c.set_enabled(id, true);
        }
    }
    write_config(&map, &c)?;
    Ok(c)
}

/// Everything measured so far for the manifest's regions.
pub fn snapshot(l: &Loaded) -> Result<Snapshot> {
    let smap = l.map(runtime::MAP_STATS)?;
    let pmap = l.map(runtime::MAP_PCPU)?;
    let pc = stats::read_pcpu(&pmap)?;
    let mut regions = Vec::new();
    for r in &l.manifest.regions {
        regions.push(stats::read_region(&smap, &pc, r.id)?);
    }
    Ok(Snapshot {
        runs: stats::Runs::from_percpu(&pc)?,
        regions,
    })
}

/// Messages for the user that are not errors.
pub mod log {
    pub fn note(msg: &str) {
        eprintln!("inxpect: {msg}");
    }
}
