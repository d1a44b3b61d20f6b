//! inxpect's benchmark harness (issue 7).
//!
//! Four measurements, each a function returning rows; `main` renders them
//! into BENCHMARKS.md and SVG plots ([`report`]):
//!
//! - [`overhead`]: per-packet time of the five apps through
//!   `BPF_PROG_TEST_RUN`, uninstrumented and instrumented, every figure a
//!   ratio to the uninstrumented program measured right before it (A B A C …).
//! - [`noise`]: x86 instructions the JIT emitted on the path between the two
//!   counter reads of an empty region ([`jit`]).
//! - [`verifier`]: `verified_insns` before and after instrumentation.
//! - the rewriter's own `cargo bench` table (run by `main`).
//! - [`vm`]: exact x86 instruction counts per packet in the qemu guest (TCG
//!   plugin), with `tsc`, `pmc` and perf's real fentry/fexit.
//!
//! Needs root (CAP_BPF, perf_event_open).

pub mod jit;
pub mod report;
pub mod vm;
pub mod vm_arm64;

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{bail, ensure, Context, Result};
use inxpect_rewriter::{instrument, runtime, Counter, Mode, Options};
use inxpect_tests as t;
use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder, ProgramInput, ProgramType};

/// Sampling shifts measured: 1/1, 1/16, 1/64, 1/1024.
pub const SHIFTS: [u32; 4] = [0, 4, 6, 10];

/// How a program was built for a measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The committed object, untouched.
    Base,
    /// `--sections` (the apps' markers) with this counter.
    Sections(Counter),
    /// `--functions --only <prog>`: one region around the whole program, so
    /// two counter reads per sampled run (with `perf`: perf's mechanism,
    /// two `bpf_perf_event_read_value` per run, without the trampolines).
    Whole(Counter),
    /// `Sections(c)` with `--stats call`: END always calls the runtime for
    /// the statistics (what the verifier walks less of).
    SectionsCall(Counter),
    /// `Sections(c)` / `Whole(c)` with `--unsampled-copy`: sampled-out runs
    /// take an uninstrumented copy of the program.
    SectionsCopy(Counter),
    WholeCopy(Counter),
}

impl Variant {
    pub fn counter(self) -> Option<Counter> {
        match self {
            Variant::Base => None,
            Variant::Sections(c)
            | Variant::Whole(c)
            | Variant::SectionsCall(c)
            | Variant::SectionsCopy(c)
            | Variant::WholeCopy(c) => Some(c),
        }
    }

    pub fn label(self) -> String {
        match self {
            Variant::Base => "uninstrumented".into(),
            Variant::Sections(c) => format!("ours `{}` (markers)", c.name()),
            Variant::SectionsCall(c) => format!("ours `{}` (markers, `--stats call`)", c.name()),
            Variant::Whole(Counter::Perf) => {
                "perf's mechanism reproduced (`perf`, one region: 2 reads/run)".into()
            }
            Variant::Whole(c) => format!("ours `{}`, one region (2 reads/run)", c.name()),
            Variant::SectionsCopy(c) => {
                format!("ours `{}` (markers, `--unsampled-copy`)", c.name())
            }
            Variant::WholeCopy(c) => format!("ours `{}`, one region, `--unsampled-copy`", c.name()),
        }
    }

    pub fn short(self) -> String {
        match self {
            Variant::Base => "base".into(),
            Variant::Sections(c) => c.name().to_string(),
            Variant::SectionsCall(c) => format!("{}-call", c.name()),
            Variant::Whole(Counter::Perf) => "perf-mech".into(),
            Variant::Whole(c) => format!("{}-whole", c.name()),
            Variant::SectionsCopy(c) => format!("{}-copy", c.name()),
            Variant::WholeCopy(c) => format!("{}-whole-copy", c.name()),
        }
    }
}

/// A loaded program plus what keeps it measurable (perf event fds).
pub struct Loaded {
    pub obj: Object,
    pub variant: Variant,
    _perf: Vec<OwnedFd>,
}

pub(crate) fn prog_name(bytes: &[u8]) -> Result<String> {
    let open = ObjectBuilder::default().open_memory(bytes)?;
    let names: Vec<String> = open
        .progs()
        .map(|p| p.name().to_string_lossy().into_owned())
        .collect();
    ensure!(names.len() == 1, "expected one program, found {names:?}");
    Ok(names[0].clone())
}

/// The object's bytes for `variant` (instrumented in memory).
pub fn build(input: &[u8], variant: Variant) -> Result<Vec<u8>> {
    let (mode, counter, only) = match variant {
        Variant::Base => return Ok(input.to_vec()),
        Variant::Sections(c) | Variant::SectionsCall(c) | Variant::SectionsCopy(c) => {
            (Mode::Sections, c, None)
        }
        Variant::Whole(c) | Variant::WholeCopy(c) => {
            (Mode::Functions, c, Some(vec![prog_name(input)?]))
        }
    };
    let opts = Options {
        mode,
        counter,
        events: 1,
        only,
        read_fn: None,
        stats: match variant {
            Variant::SectionsCall(_) => inxpect_rewriter::Stats::Call,
            _ => inxpect_rewriter::Stats::Inline,
        },
        unsampled_copy: matches!(variant, Variant::SectionsCopy(_) | Variant::WholeCopy(_)),
        ..Options::default()
    };
    Ok(instrument(input, &opts)
        .with_context(|| format!("instrumenting for {}", variant.short()))?
        .object)
}

/// Loads `bytes` as XDP. The kfunc flag of the runtime is cleared when the
/// module is absent (as the loader does), and `perf` gets one software
/// `cpu-clock` event per online CPU in `inxpect_perf`.
pub fn load(bytes: &[u8], variant: Variant) -> Result<Loaded> {
    let mut open = ObjectBuilder::default().open_memory(bytes)?;
    for mut p in open.progs_mut() {
        if p.prog_type() == ProgramType::Unspec {
            p.set_prog_type(ProgramType::Xdp);
        }
    }
    inxpect_loader::sys::set_kfuncs_flag(&mut open, inxpect_loader::sys::module_kfuncs_present());
    let obj = open.load().context("loading")?;
    let mut fds = Vec::new();
    let counter = variant.counter();
    if counter == Some(Counter::Perf) {
        let map = obj
            .maps()
            .find(|m| m.name() == runtime::MAP_PERF)
            .context("no inxpect_perf map")?;
        for cpu in 0..nproc() {
            let fd = perf_cpu_clock(cpu)?;
            map.update(
                &cpu.to_ne_bytes(),
                &(fd.as_raw_fd() as u32).to_ne_bytes(),
                MapFlags::ANY,
            )?;
            fds.push(fd);
        }
    }
    Ok(Loaded {
        obj,
        variant,
        _perf: fds,
    })
}

pub fn nproc() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as u32
}

/// perf_event_open(2) of the software `cpu-clock` event on `cpu`, all tasks.
fn perf_cpu_clock(cpu: u32) -> Result<OwnedFd> {
    inxpect_loader::sys::perf_event_open(&inxpect_loader::sys::EventConfig::CPU_CLOCK, cpu)
        .with_context(|| format!("perf_event_open(cpu-clock) on CPU {cpu}"))
}

/// Pins the calling thread to `cpu` (test_run runs on the caller's CPU).
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Loaded {
    fn prog(&self) -> Result<libbpf_rs::ProgramMut<'_>> {
        t::only_program(&self.obj)
    }

    /// Sets the sampling rate in `.data.inxpect` (no reload).
    pub fn set_sample_shift(&self, shift: u32) -> Result<()> {
        let map = self
            .obj
            .maps()
            .find(|m| m.name().to_string_lossy().ends_with(runtime::MAP_CONFIG))
            .context("no .data.inxpect map")?;
        let key = 0u32.to_ne_bytes();
        let mut v = map
            .lookup(&key, MapFlags::ANY)?
            .context(".data.inxpect is empty")?;
        runtime::config::write_sampling(&mut v, shift);
        map.update(&key, &v, MapFlags::ANY)?;
        Ok(())
    }

    /// One BPF_PROG_TEST_RUN with `repeat`; returns (kernel ns per run,
    /// verdict of the last run).
    pub fn run(&self, frame: &[u8], repeat: u32) -> Result<(f64, u32)> {
        let prog = self.prog()?;
        let mut out = vec![0u8; frame.len() + 256];
        let input = ProgramInput {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        };
        let r = prog.test_run(input).context("BPF_PROG_TEST_RUN")?;
        Ok((r.duration.as_nanos() as f64, r.return_value))
    }

    /// Live frames: kernel ns per packet over `repeat` packets (the verdicts
    /// are carried out, not returned).
    pub fn run_live(&self, frame: &[u8], repeat: u32) -> Result<(f64, u32)> {
        let prog = self.prog()?;
        let input = ProgramInput {
            data_in: Some(frame),
            repeat,
            flags: LIVE_FRAMES,
            ..Default::default()
        };
        let r = prog
            .test_run(input)
            .context("BPF_PROG_TEST_RUN (live frames)")?;
        Ok((r.duration.as_nanos() as f64, r.return_value))
    }

    /// Mean kernel ns of `calls` single runs (repeat 1: a fresh copy of the
    /// frame each time, so in-place edits do not accumulate).
    pub fn run_single(&self, frame: &[u8], calls: u32) -> Result<(f64, u32)> {
        let mut sum = 0.0;
        let mut verdict = 0;
        for _ in 0..calls {
            let (d, v) = self.run(frame, 1)?;
            sum += d;
            verdict = v;
        }
        Ok((sum / f64::from(calls.max(1)), verdict))
    }

    pub fn info(&self) -> Result<libbpf_sys::bpf_prog_info> {
        let prog = self.prog()?;
        prog_info(prog.as_fd().as_raw_fd())
    }

    pub fn prog_fd(&self) -> Result<i32> {
        Ok(self.prog()?.as_fd().as_raw_fd())
    }
}

/// `BPF_F_TEST_XDP_LIVE_FRAMES` (uapi linux/bpf.h).
pub const LIVE_FRAMES: u32 = 1 << 1;

pub fn prog_info(fd: i32) -> Result<libbpf_sys::bpf_prog_info> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is a zeroed bpf_prog_info of the size passed.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    ensure!(rc == 0, "bpf_prog_get_info_by_fd: {rc}");
    Ok(info)
}

/// The representative frame of an app: the first corpus frame that takes the
/// app's full path (`TX` for nat/router/tunnel, a counted IPv4 TCP/UDP
/// `DROP` for cms/drop); for router the one with the highest TTL.
pub fn pick_frame(app: &str) -> Result<(usize, Vec<u8>)> {
    let corpus = t::corpus()?;
    let exp = t::expected(app)?;
    let mut best: Option<(usize, u32)> = None;
    for e in &exp {
        let f = &e.fields;
        let Some(l3) = &f.l3 else { continue };
        let v4 = l3.saddr.is_ipv4();
        let l4 = matches!(l3.proto, 6 | 17);
        // A `_sub` build is its app with the code in subprograms: same frames.
        let ok = match t::base_app(app) {
            "drop" | "cms" => e.verdict == t::XDP_DROP && v4 && l4,
            _ => e.verdict == t::XDP_TX,
        };
        if !ok {
            continue;
        }
        let score = if t::base_app(app) == "router" {
            u32::from(l3.ttl)
        } else {
            0
        };
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((e.index, score));
        }
    }
    let (i, _) = best.with_context(|| format!("{app}: no full-path frame in the corpus"))?;
    Ok((i, corpus[i].clone()))
}

/// Settings of the overhead measurement.
#[derive(Clone, Debug)]
pub struct OverheadCfg {
    pub apps: Vec<String>,
    /// BPF_PROG_TEST_RUN repeat per call.
    pub repeat: u32,
    /// Single (repeat 1) calls per sample of the fresh-frame method.
    pub single_calls: u32,
    /// Interleaved rounds (A B A C … per round); medians over rounds.
    pub rounds: usize,
    pub shifts: Vec<u32>,
}

impl Default for OverheadCfg {
    fn default() -> Self {
        OverheadCfg {
            apps: t::APPS.iter().map(|s| s.to_string()).collect(),
            repeat: 100_000,
            single_calls: 2_000,
            rounds: 7,
            shifts: SHIFTS.to_vec(),
        }
    }
}

/// The configurations measured against the baseline.
pub fn overhead_variants() -> Vec<Variant> {
    vec![
        Variant::Sections(Counter::Ktime),
        Variant::Sections(Counter::Perf),
        Variant::Whole(Counter::Perf),
        Variant::Whole(Counter::Ktime),
        Variant::SectionsCopy(Counter::Ktime),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// One call with the kernel's `repeat` (same buffer every iteration).
    Repeat,
    /// `repeat 1` calls, fresh frame each (the full path every time).
    Single,
    /// `BPF_F_TEST_XDP_LIVE_FRAMES`: each of `repeat` packets is a fresh frame
    /// through the real XDP data path (page pool, verdicts carried out), the
    /// kernel's way of measuring XDP throughput.
    Live,
}

#[derive(Clone, Debug)]
pub struct OverheadRow {
    pub app: String,
    pub frame: usize,
    pub method: Method,
    pub variant: Variant,
    pub shift: u32,
    /// Median over rounds of the baseline ns/run measured next to it.
    pub base_ns: f64,
    /// Median over rounds of this configuration's ns/run.
    pub ns: f64,
    /// Median over rounds of base/instrumented (pairs of the same round).
    pub kept: f64,
    /// Verdict of the last run (repeat: after all iterations on one buffer).
    pub verdict: u32,
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The error is the kernel's EPERM.
fn is_eperm(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<libbpf_rs::Error>()
            .is_some_and(|b| b.kind() == libbpf_rs::ErrorKind::PermissionDenied)
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.raw_os_error())
                == Some(libc::EPERM)
    })
}

/// What the live-frames table says when the kernel refused the method.
pub const LIVE_REFUSED: &str = "refused on this host: `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` returns EPERM here, so no live-frames figures (the fresh-frame table above has the full path every run)";

/// Per-packet overhead, both methods, every variant and sampling shift.
pub fn overhead(cfg: &OverheadCfg, mut progress: impl FnMut(&str)) -> Result<Vec<OverheadRow>> {
    let mut rows = Vec::new();
    let config = t::load_config()?;
    for app in &cfg.apps {
        let path = t::object_path(app, "clang-O2-g");
        let input = std::fs::read(&path).with_context(|| path.display().to_string())?;
        let (idx, frame) = pick_frame(app)?;
        let mut loaded = vec![load(&input, Variant::Base)?];
        for v in overhead_variants() {
            loaded.push(load(&build(&input, v)?, v).with_context(|| format!("{app} {v:?}"))?);
        }
        for l in &loaded {
            t::populate_app_maps(&l.obj, app, &config)?;
        }
        // (variant index, shift) pairs; whole-program ktime only at 1/1.
        let mut configs = Vec::new();
        for (i, l) in loaded.iter().enumerate().skip(1) {
            for &s in &cfg.shifts {
                if l.variant == Variant::Whole(Counter::Ktime) && s != 0 {
                    continue;
                }
                // The copy matters where runs are sampled out: 1/64.
                if matches!(l.variant, Variant::SectionsCopy(_)) && s != 6 {
                    continue;
                }
                configs.push((i, s));
            }
        }
        for method in [Method::Repeat, Method::Single, Method::Live] {
            progress(&format!("overhead {app} {method:?}"));
            let n = configs.len();
            let mut base = vec![Vec::new(); n];
            let mut inst = vec![Vec::new(); n];
            let mut ratio = vec![Vec::new(); n];
            let mut verdicts = vec![0u32; n];
            let measure = |l: &Loaded| match method {
                Method::Repeat => l.run(&frame, cfg.repeat),
                Method::Single => l.run_single(&frame, cfg.single_calls),
                Method::Live => l.run_live(&frame, cfg.repeat),
            };
            // Warm up every program once. A kernel may refuse live frames
            // (EPERM: seen on a host whose build took them away): the
            // report then says so in place of that table.
            if method == Method::Live {
                if let Err(e) = measure(&loaded[0]) {
                    if is_eperm(&e) {
                        progress(&format!(
                            "overhead {app} Live: refused by this kernel ({e:#})"
                        ));
                        continue;
                    }
                    return Err(e);
                }
            }
            for l in &loaded {
                measure(l)?;
            }
            for _round in 0..cfg.rounds {
                for (k, &(i, s)) in configs.iter().enumerate() {
                    loaded[i].set_sample_shift(s)?;
                    let (b, _) = measure(&loaded[0])?;
                    let (x, v) = measure(&loaded[i])?;
                    base[k].push(b);
                    inst[k].push(x);
                    ratio[k].push(b / x);
                    verdicts[k] = v;
                }
            }
            for (k, &(i, s)) in configs.iter().enumerate() {
                rows.push(OverheadRow {
                    app: app.clone(),
                    frame: idx,
                    method,
                    variant: loaded[i].variant,
                    shift: s,
                    base_ns: median(&mut base[k]),
                    ns: median(&mut inst[k]),
                    kept: median(&mut ratio[k]),
                    verdict: verdicts[k],
                });
            }
            // The baseline's own verdict.
            let (_, bv) = measure(&loaded[0])?;
            let mut all: Vec<f64> = base.iter().flatten().copied().collect();
            rows.push(OverheadRow {
                app: app.clone(),
                frame: idx,
                method,
                variant: Variant::Base,
                shift: 0,
                base_ns: median(&mut all.clone()),
                ns: median(&mut all),
                kept: 1.0,
                verdict: bv,
            });
        }
    }
    Ok(rows)
}

#[derive(Clone, Debug)]
pub struct VerifierRow {
    pub app: String,
    pub variant: String,
    pub xlated_insns: u32,
    pub verified_insns: u32,
}

/// `verified_insns` of every app, uninstrumented and per mode and counter.
pub fn verifier(apps: &[String]) -> Result<Vec<VerifierRow>> {
    let mut rows = Vec::new();
    let variants = [
        Variant::Base,
        Variant::Sections(Counter::Ktime),
        Variant::SectionsCall(Counter::Ktime),
        Variant::Sections(Counter::Perf),
        Variant::Sections(Counter::Tsc),
        Variant::Sections(Counter::Pmc),
        Variant::Whole(Counter::Ktime),
        Variant::SectionsCopy(Counter::Ktime),
        Variant::SectionsCopy(Counter::Tsc),
    ];
    for app in apps {
        let input = std::fs::read(t::object_path(app, "clang-O2-g"))?;
        for v in variants {
            let l = load(&build(&input, v)?, v).with_context(|| format!("{app} {v:?}"))?;
            let info = l.info()?;
            rows.push(VerifierRow {
                app: app.clone(),
                variant: match v {
                    Variant::Base => "uninstrumented".into(),
                    Variant::Sections(c) => format!("--sections --counter {}", c.name()),
                    Variant::SectionsCall(c) => {
                        format!("--sections --counter {} --stats call", c.name())
                    }
                    Variant::Whole(c) => {
                        format!("--functions --only <prog> --counter {}", c.name())
                    }
                    Variant::SectionsCopy(c) => {
                        format!("--sections --counter {} --unsampled-copy", c.name())
                    }
                    Variant::WholeCopy(c) => format!(
                        "--functions --only <prog> --counter {} --unsampled-copy",
                        c.name()
                    ),
                },
                xlated_insns: info.xlated_prog_len / 8,
                verified_insns: info.verified_insns,
            });
        }
    }
    Ok(rows)
}

/// Machine facts for the report.
pub struct Machine {
    pub nproc: u32,
    pub cpu: String,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::process::Command::new("uname")
        .arg("-srvm")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Machine {
        nproc: nproc(),
        cpu,
        kernel,
    }
}

/// `true` for a program name the harness treats as the app's entry.
pub fn is_entry(name: &OsStr) -> bool {
    !name.to_string_lossy().starts_with(runtime::PREFIX)
}

/// Instruction noise of one backend on `drop`'s empty region.
pub struct NoiseRow {
    pub counter: &'static str,
    /// x86 instructions of the JIT path between the reads.
    pub jit: usize,
    /// Added for what the image does not hold (kfunc body parts, kmod/NOISE.md).
    pub extra: usize,
    pub extra_note: String,
    pub path: jit::NoisePath,
}

/// kfunc instructions between the reads (Linux 6.12): the probes call the
/// module's `_lo` kfuncs (no argument, no `endbr64`): the first call's tail
/// after the read (the return) and the second call's head up to the read.
/// The section-5 VM run measures the same executed (TCG plugin).
pub const TSC_KFUNC_BETWEEN: usize = 1 + 1; // ret; lfence
pub const PMC_KFUNC_BETWEEN: usize = 1 + 4; // ret; mov test js lfence

pub fn noise() -> Result<Vec<NoiseRow>> {
    let input = std::fs::read(t::object_path("drop", "clang-O2-g"))?;
    let mut rows = Vec::new();
    for c in [Counter::Ktime, Counter::Perf] {
        let v = Variant::Sections(c);
        let l = load(&build(&input, v)?, v)?;
        let funcs = jit::image(l.prog_fd()?)?;
        let path = jit::empty_region_path(&funcs)?;
        let jit = path.total();
        if c == Counter::Ktime {
            // pmc/tsc: the same runtime code with a kfunc call in place of
            // the helper call (program-level sites carry no kfunc guard).
            for (name, extra, note) in [
                (
                    "tsc",
                    TSC_KFUNC_BETWEEN,
                    "kfunc `inxpect_read_tsc_lo`: `ret` after `rdtsc`, `lfence` before it (6.12)",
                ),
                (
                    "pmc",
                    PMC_KFUNC_BETWEEN,
                    "kfunc `inxpect_read_pmc0_lo`: `ret` after `rdpmc`, `mov test js lfence` before it (6.12)",
                ),
            ] {
                rows.push(NoiseRow {
                    counter: name,
                    jit,
                    extra,
                    extra_note: note.into(),
                    path: jit::empty_region_path(&funcs)?,
                });
            }
        }
        rows.push(NoiseRow {
            counter: c.name(),
            jit,
            extra: 0,
            extra_note: match c {
                Counter::Ktime => "+ body of `bpf_ktime_get_ns` (not in the image)".into(),
                _ => "+ body of `bpf_perf_event_read_value` (not in the image)".into(),
            },
            path,
        });
    }
    Ok(rows)
}
