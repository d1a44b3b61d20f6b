//! `inxpect`: loads instrumented XDP programs, runs them (BPF_PROG_TEST_RUN
//! or attached to a device) and reports per-region counter statistics.

mod attach;
mod events;
mod live;
mod maps;
mod module;
mod netdev;
mod object;
mod outputs;
mod run;
mod state;
mod tc;
mod testrun;
mod window;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use inxpect_rewriter::runtime::Counter;
use inxpect_rewriter::{Mode, Stats};

use events::PerfAttr;
use inxpect_loader::stats::Snapshot;
use inxpect_loader::{pcap, report};
use report::{Format, Report, TestRunInfo};

const EXAMPLES: &str = "\
Examples:
  # Offline: every frame of a pcap through the program (BPF_PROG_TEST_RUN)
  inxpect test-run testdata/objects/cms.clang-O2-g.o --pcap testdata/packets/corpus.pcap

  # Live: attach to eth0, print a table every second, stop with Ctrl-C
  inxpect run app.o --dev eth0 -e cycles,instructions --sample 1/64

  # While `run` runs: measure 1 packet in 8, stop measuring one region
  inxpect set --dev eth0 --sample 1/8 --disable rewrite

  # The kernel module behind the pmc and tsc counters
  inxpect module load && inxpect module status

Run `inxpect help SUBCOMMAND` for a subcommand's options and examples.";

#[derive(Parser)]
#[command(
    name = "inxpect",
    version,
    about = "Per-region profiling of XDP programs",
    after_help = EXAMPLES,
    subcommand_required = false,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    gen: inxpect_clidoc::Generate,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every frame of a pcap through the program with BPF_PROG_TEST_RUN.
    #[command(after_help = "\
Examples:
  inxpect test-run app.o --pcap traffic.pcap
  inxpect test-run app.o --pcap traffic.pcap -j > report.json
  inxpect test-run app.o --pcap traffic.pcap --functions --regions parse,lookup --repeat 100
  inxpect test-run router.o --pcap traffic.pcap --config testdata/packets/config.json --app router")]
    TestRun(TestRunArgs),
    /// Attach the program to a device and report live.
    #[command(after_help = "\
Examples:
  inxpect run app.o --dev eth0
  inxpect run app.o --dev veth1 --netns blue --mode generic --duration 30s -j > report.json
  inxpect run app.o --dev eth0 --counter pmc -e cycles,instructions --sample 1/64 --interval 5s")]
    Run(run::RunArgs),
    /// Profile the program already attached to a device, then put it back.
    ///
    /// Swaps in its instrumented build, which shares the running program's
    /// maps, reports live as `run` does, and swaps the original back.
    #[command(after_help = "\
Examples:
  inxpect attach router.o --dev eth0 --sample 1/64 --duration 30s
  inxpect attach router.o --dev eth0 --window 10ms/1s   # between windows: the original, free
  inxpect attach tc_app.o --dev eth0 --tc ingress -j > report.json")]
    Attach(attach::AttachArgs),
    /// Change sampling and enabled regions of a running `inxpect run` or `attach`.
    #[command(after_help = "\
Examples:
  inxpect set --sample 1/8                 # the only run
  inxpect set --dev eth0 --disable parse   # the run on eth0
  inxpect set --dev veth1 --netns blue --enable parse,lookup")]
    Set(run::SetArgs),
    /// Load, unload or describe the inxpect kernel module.
    Module {
        #[command(subcommand)]
        op: ModuleOp,
    },
    /// Send frames out of a device through an AF_PACKET socket.
    #[command(after_help = "\
Examples:
  inxpect replay --dev veth0                        # one UDP/IPv4 broadcast frame
  inxpect replay --dev veth0 --pcap traffic.pcap --count 100000")]
    Replay(run::ReplayArgs),
    /// Restores an attached program if `inxpect attach` dies (started by it).
    #[command(name = "__guard", hide = true)]
    Guard(attach::GuardArgs),
}

#[derive(Subcommand)]
enum ModuleOp {
    /// Load inxpect.ko (the kfuncs behind the pmc and tsc counters).
    Load {
        /// The module file [default: inxpect.ko next to this binary, the
        /// workspace's kmod/inxpect.ko, or the installed module of this kernel].
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Unload the module (fails while a run holds its counters).
    Unload,
    /// Whether the module is loaded, what it offers, and who holds its counters.
    Status {
        /// Print the status as JSON.
        #[arg(short = 'j', long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatsArg {
    /// Inline at program-level END sites (one-event counters): no call for
    /// a delta below 2^12.
    Inline,
    /// The runtime's function every time: about half the verifier's work.
    Call,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CounterArg {
    /// pmc with the module and a PMU, tsc with the module alone, else ktime.
    Auto,
    /// bpf_ktime_get_ns (ns; no module).
    Ktime,
    /// bpf_perf_event_read_value (perf's own read; events, or ns for cpu-clock).
    Perf,
    /// The module's rdtsc kfunc (TSC cycles).
    Tsc,
    /// The module's rdpmc kfunc (events of -e).
    Pmc,
}

/// What selects, instruments and loads the object: shared by test-run and run.
#[derive(Args, Clone)]
pub struct Common {
    /// A BPF object: instrumented already, or instrumented here in memory.
    pub obj: PathBuf,
    /// The program to run when the object has several.
    #[arg(long)]
    pub prog: Option<String>,
    /// Counter backend (auto: pmc with the module and a PMU, tsc with the
    /// module alone, else ktime).
    #[arg(long, value_enum, default_value = "auto")]
    pub counter: CounterArg,
    /// Events, comma-separated (pmc, or the first one for perf): generic
    /// names (cycles, instructions, ...), sysfs names, rNNNN, or the
    /// vendor's names through libpfm4 (MEM_LOAD_RETIRED.L3_MISS,
    /// ls_dmnd_fills_from_sys.dram_io_far), with :u/:k/:h modifiers.
    #[arg(short = 'e', long)]
    pub events: Option<String>,
    /// Measure one run in K (K a power of two), as `1/K` or `K`.
    #[arg(long, default_value = "1/1")]
    pub sample: String,
    /// Only measure these regions (names or ids, comma-separated).
    #[arg(long)]
    pub regions: Option<String>,
    /// Where END adds a measurement to the statistics, for an object
    /// instrumented here [default: inline, or call where the verifier
    /// refuses the program with it] (an instrumented object keeps what
    /// inxpect-instrument --stats chose).
    #[arg(long, value_enum)]
    pub stats: Option<StatsArg>,
    /// For an object instrumented here: a sampled-out run of a program
    /// takes an uninstrumented copy of its code and of the subprograms it
    /// calls (no cost per site; the verifier walks the code twice). Code
    /// that makes tail calls keeps one copy. The default when --sample is
    /// below 1/1, dropped with a note where the verifier refuses the
    /// larger program.
    #[arg(long)]
    pub unsampled_copy: bool,
    /// No uninstrumented copy, even when sampling: sampled-out runs go
    /// through the sites (a load and a test each).
    #[arg(long, conflicts_with = "unsampled_copy")]
    pub no_unsampled_copy: bool,
    /// Instrument every function instead of the marked regions.
    #[arg(long, conflicts_with = "sections")]
    pub functions: bool,
    /// Instrument the regions between markers (the default).
    #[arg(long)]
    pub sections: bool,
    /// Fill the app's maps from this JSON file (testdata/packets/config.json layout).
    #[arg(long, requires = "app")]
    pub config: Option<PathBuf>,
    /// The app whose section of --config to apply (drop, cms, nat, router, tunnel).
    #[arg(long, requires = "config")]
    pub app: Option<String>,
    /// Skip the calibration run (CAL.* columns: raw minus the minimum of an
    /// empty region measured the same way, i.e. without the probes' own cost).
    #[arg(long)]
    pub no_calibrate: bool,
    /// Print the report as JSON (its schema: loader/README.md).
    #[arg(short = 'j', long, conflicts_with = "csv")]
    pub json: bool,
    /// Print the report as CSV, one row per region and event.
    #[arg(long)]
    pub csv: bool,
    #[command(flatten)]
    pub out: outputs::OutArgs,
}

impl Common {
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else if self.csv {
            Format::Csv
        } else {
            Format::Table
        }
    }

    pub fn mode(&self) -> Mode {
        if self.functions {
            Mode::Functions
        } else {
            Mode::Sections
        }
    }
}

#[derive(Args)]
struct TestRunArgs {
    #[command(flatten)]
    common: Common,
    /// Frames to run.
    #[arg(long)]
    pcap: PathBuf,
    /// Runs per frame (BPF_PROG_TEST_RUN's repeat).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// With --jsonl: one line per this period (e.g. 1s, 200ms).
    #[arg(long, default_value = "1s", requires = "jsonl")]
    interval: String,
}

/// The counter backend, resolved: which counter, which events, and the
/// module device that keeps the PMC configuration alive.
pub struct Backend {
    pub counter: Counter,
    pub explicit: bool,
    /// The object's statistics code (its manifest's, or what it is
    /// instrumented with here): the calibration objects get the same.
    pub stats: Stats,
    /// An object instrumented here gets uninstrumented copies.
    pub copy: bool,
    /// ... because the session samples, not because the user asked: a
    /// load the copies make fail is tried again without them.
    pub copy_by_default: bool,
    /// END's statistics are inline because nothing asked otherwise (the
    /// object is instrumented here and `--stats` was not given): a
    /// program the verifier refuses with them is loaded with a call.
    pub stats_by_default: bool,
    pub pmc: Vec<PerfAttr>,
    pub perf: Option<PerfAttr>,
    /// Owns the PMC configuration for the run's lifetime; dropped (CLEAR,
    /// close) when the command returns, SIGINT/SIGTERM included.
    _dev: Option<module::Pmc>,
}

impl Backend {
    /// How an object instrumented here is built.
    pub fn code(&self) -> object::Code {
        object::Code {
            stats: self.stats,
            unsampled_copy: self.copy,
        }
    }

    pub fn nr_events(&self) -> usize {
        self.pmc.len().max(1)
    }

    pub fn event_names(&self) -> Vec<String> {
        match self.counter {
            Counter::Pmc => self.pmc.iter().map(|e| e.name.clone()).collect(),
            Counter::Perf => vec![self
                .perf
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_default()],
            c => vec![c.name().to_string()],
        }
    }
}

/// Picks the backend: the explicit choice, or the one an instrumented
/// object was built for, or what the machine offers.
pub fn backend(c: &Common, bytes: &[u8]) -> Result<Backend> {
    let manifest = inxpect_rewriter::read_manifest(bytes).ok().flatten();
    let built = manifest.as_ref().map(|m| m.counter);
    let asked = c.stats.map(|s| match s {
        StatsArg::Inline => Stats::Inline,
        StatsArg::Call => Stats::Call,
    });
    let stats = match (&manifest, asked) {
        (Some(m), Some(a)) if m.stats != a => bail!(
            "{} is already instrumented with --stats {}, not {}: instrument the original object again, or drop --stats",
            c.obj.display(),
            m.stats.name(),
            a.name()
        ),
        (Some(m), _) => m.stats,
        (None, a) => a.unwrap_or_default(),
    };
    if let Some(m) = manifest
        .as_ref()
        .filter(|m| c.unsampled_copy && m.copied.is_empty())
    {
        bail!(
            "{} is already instrumented without --unsampled-copy ({} counter): instrument the original object again, or drop --unsampled-copy",
            c.obj.display(),
            m.counter.name()
        );
    }
    let (counter, explicit) = match c.counter {
        CounterArg::Ktime => (Counter::Ktime, true),
        CounterArg::Perf => (Counter::Perf, true),
        CounterArg::Tsc => (Counter::Tsc, true),
        CounterArg::Pmc => (Counter::Pmc, true),
        CounterArg::Auto => match built {
            Some(b) => (b, false),
            None => {
                let (c, why) = module::auto_counter();
                if !why.is_empty() {
                    object::log::note(&why);
                }
                (c, false)
            }
        },
    };
    let evs = match &c.events {
        Some(list) => events::resolve_list(list)?,
        None => Vec::new(),
    };
    if !evs.is_empty() && !matches!(counter, Counter::Pmc | Counter::Perf) {
        bail!(
            "-e/--events applies to the pmc and perf counters, not {}",
            counter.name()
        );
    }
    let obj = c.obj.display().to_string();
    module::require_module(counter, (built == Some(counter)).then_some(obj.as_str()))?;
    let copy_by_default = !c.unsampled_copy
        && !c.no_unsampled_copy
        && manifest.is_none()
        && parse_sample(&c.sample)? > 0;
    let mut b = Backend {
        counter,
        explicit,
        stats,
        copy: c.unsampled_copy || copy_by_default,
        copy_by_default,
        stats_by_default: manifest.is_none() && asked.is_none(),
        pmc: Vec::new(),
        perf: None,
        _dev: None,
    };
    match counter {
        Counter::Pmc => {
            let evs = if evs.is_empty() {
                events::resolve_list("cycles")?
            } else {
                evs
            };
            b._dev = Some(module::set_events(&evs)?);
            b.pmc = evs;
        }
        Counter::Perf => {
            let first = evs.into_iter().next();
            b.perf = Some(match first {
                Some(e) if e.is_hardware() && !events::has_pmu() => {
                    object::log::note(&format!(
                        "no hardware PMU: the perf counter reads the cpu-clock software event instead of {}",
                        e.name
                    ));
                    PerfAttr::cpu_clock()
                }
                Some(e) => e,
                None => PerfAttr::cpu_clock(),
            });
        }
        _ => {}
    }
    Ok(b)
}

/// `1/K` or `K` -> log2(K).
pub fn parse_sample(s: &str) -> Result<u32> {
    let k = s.strip_prefix("1/").unwrap_or(s);
    let k: u64 = k
        .trim()
        .parse()
        .with_context(|| format!("--sample {s:?}: expected 1/K"))?;
    if k == 0 || !k.is_power_of_two() {
        bail!("--sample {s:?}: K must be a power of two (1, 2, 4, ... 2^63)");
    }
    Ok(k.trailing_zeros())
}

pub fn cpus_online() -> Result<Vec<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .context("reading /sys/devices/system/cpu/online")?;
    let mut out = Vec::new();
    for part in text.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = (a.parse()?, b.parse()?);
        out.extend(a..=b);
    }
    Ok(out)
}

/// Prepares and loads `c.obj` for `b`, applies maps and the runtime config.
/// `kind`: the program type required (None: XDP or tc, as its section says).
pub fn load_for(
    c: &Common,
    b: &Backend,
    bytes: Vec<u8>,
    kind: Option<object::Kind>,
) -> Result<(object::Loaded, object::Config)> {
    let shift = parse_sample(&c.sample)?;
    let l = prepare_and_load(
        c,
        b,
        bytes,
        &c.obj.display().to_string(),
        c.prog.as_deref(),
        kind,
        &mut |_, _| Ok(()),
    )?;
    if let (Some(cfg), Some(app)) = (&c.config, &c.app) {
        maps::populate(&l, cfg, app)?;
    }
    let cfg = object::configure(&l, shift, c.regions.as_deref())?;
    Ok((l, cfg))
}

/// Instruments `bytes` for `b` (unless they already are) and loads program
/// `want` of them. Copies the session took by default (it samples) are
/// dropped where the verifier finds the program with them over its budget:
/// the second load's error, if any, is the one that matters.
pub fn prepare_and_load(
    c: &Common,
    b: &Backend,
    bytes: Vec<u8>,
    origin: &str,
    want: Option<&str>,
    kind: Option<object::Kind>,
    before: &mut object::BeforeLoad<'_>,
) -> Result<object::Loaded> {
    let prepare = |code: object::Code, bytes: Vec<u8>| -> Result<object::Prepared> {
        let prep = object::prepare_bytes(
            bytes,
            origin,
            b.counter,
            b.explicit,
            b.nr_events(),
            c.mode(),
            code,
        )?;
        // Region names are checked before the (slow) load.
        if let Some(r) = &c.regions {
            object::region_ids(&prep.manifest, r)?;
        }
        Ok(prep)
    };
    // The input again only for further attempts: without the copies, then
    // with END's statistics a call.
    let spare = (b.copy_by_default || b.stats_by_default).then(|| bytes.clone());
    let mut code = b.code();
    let mut prep = prepare(code, bytes)?;
    loop {
        let e = match object::load_with(&prep, want, b.perf.as_ref(), kind, before) {
            Ok(l) => return Ok(l),
            Err(e) => e,
        };
        let text = format!("{e:#}");
        let Some(why) = object::over_budget(&text) else {
            return Err(e);
        };
        if b.copy_by_default && !prep.manifest.copied.is_empty() {
            object::log::note(&format!(
                "{origin}: refused with uninstrumented copies for its sampled-out runs, which the verifier walks too ({why}); loading it without them (--no-unsampled-copy skips this attempt)"
            ));
            code.unsampled_copy = false;
        } else if b.stats_by_default && prep.manifest.stats == Stats::Inline {
            object::log::note(&format!(
                "{origin}: refused with END's statistics inline, which the verifier walks on every path through each END ({why}); loading it with --stats call (the runtime's function, verified once; --stats inline skips this attempt)"
            ));
            code.stats = Stats::Call;
        } else {
            return Err(e);
        }
        let bytes = spare.clone().expect("kept for the next attempt");
        prep = prepare(code, bytes)?;
    }
}

pub fn read_obj(p: &Path) -> Result<Vec<u8>> {
    if inxpect_loader::sys::is_bpffs(p) {
        bail!(
            "{} is on the BPF filesystem (a pinned program or map), not an ELF object: give the .o file it was loaded from",
            p.display()
        );
    }
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

/// Before any bpf() call: what to do when the process may not make them.
fn require_bpf_caps(what: &str) -> Result<()> {
    if !inxpect_loader::sys::has_bpf_caps() {
        bail!("`inxpect {what}` needs root or CAP_BPF (loading BPF programs): run it with sudo, or grant the binary CAP_BPF,CAP_NET_ADMIN,CAP_PERFMON");
    }
    Ok(())
}

fn test_run(a: TestRunArgs) -> Result<()> {
    let c = &a.common;
    if a.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let mut cap = pcap::read(&a.pcap)?;
    if cap.frames.is_empty() {
        bail!("{}: no frames", a.pcap.display());
    }
    let bytes = read_obj(&c.obj)?;
    let b = backend(c, &bytes)?;
    testrun::pin_to_current_cpu()?;
    let (l, cfg) = load_for(c, &b, bytes, None)?;
    let out = outputs::Final::new(c)?;
    let cal = if c.no_calibrate {
        None
    } else {
        Some(testrun::calibrate_nesting(
            testrun::calibrate(&b)?,
            &b,
            &l.manifest,
        )?)
    };
    let interval = run::parse_duration(&a.interval)?;
    let unit = unit(&b);
    let names = b.event_names();
    let mut stream = inxpect_loader::jsonl::Stream::new(
        "test-run",
        &l.prog,
        &unit,
        &names,
        &l.manifest,
        cal.as_ref(),
    );
    let t0 = std::time::Instant::now();
    let mut last = t0;
    let mut prev = object::snapshot(&l)?;
    let mut line = |now: Snapshot, last: &mut std::time::Instant| -> Result<()> {
        inxpect_loader::jsonl::emit(&stream.line(
            &now,
            &prev,
            t0.elapsed().as_secs_f64(),
            last.elapsed().as_secs_f64(),
            1u64 << cfg.sample_shift,
            |id| cfg.is_enabled(id),
        ))?;
        prev = now;
        *last = std::time::Instant::now();
        Ok(())
    };
    let ran = testrun::run_all(&l, &mut cap, a.repeat, || {
        if c.out.jsonl && last.elapsed() >= interval {
            line(object::snapshot(&l)?, &mut last)?;
        }
        Ok(())
    })?;
    let snap = object::snapshot(&l)?;
    if c.out.jsonl {
        line(snap.clone(), &mut last)?;
    }
    let r = Report {
        schema: report::SCHEMA,
        command: "test-run".into(),
        object: c.obj.display().to_string(),
        program: l.prog.clone(),
        counter: b.counter.name().into(),
        unit,
        events: names.clone(),
        sample: 1u64 << cfg.sample_shift,
        unsampled_copy: l.manifest.copied.contains(&l.prog),
        pcpu_direct: matches!(l.pcpu, inxpect_loader::pcpu::Access::Direct(_)),
        runs: snap.runs,
        test_run: Some(TestRunInfo {
            pcap: a.pcap.display().to_string(),
            frames: cap.frames.len() as u64,
            repeat: a.repeat,
            verdicts: ran.verdicts,
            skipped: ran.skipped.len() as u64,
            skipped_frames: ran.skipped,
        }),
        live: None,
        regions: report::regions(
            &l.manifest,
            &snap,
            |id| cfg.is_enabled(id),
            &names,
            cal.as_ref(),
        ),
        calibration: cal,
        tree: None,
    };
    out.print(&r, &l.manifest)
}

pub fn unit(b: &Backend) -> String {
    match (b.counter, &b.perf) {
        (Counter::Perf, Some(p)) if !p.is_hardware() => "ns".into(),
        (Counter::Perf, _) => "events".into(),
        (c, _) => c.unit().into(),
    }
}

fn main() {
    let cli = Cli::parse();
    match cli.gen.run(<Cli as clap::CommandFactory>::command()) {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            eprintln!("inxpect: error: {e}");
            std::process::exit(1);
        }
    }
    let Some(cmd) = cli.cmd else {
        // arg_required_else_help covers a bare `inxpect`; this is `inxpect --man` and such.
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        std::process::exit(2);
    };
    object::capture_libbpf_log();
    let res = match cmd {
        Cmd::TestRun(a) => require_bpf_caps("test-run").and_then(|_| test_run(a)),
        Cmd::Run(a) => require_bpf_caps("run").and_then(|_| run::run(a)),
        Cmd::Attach(a) => require_bpf_caps("attach").and_then(|_| attach::attach(a)),
        Cmd::Guard(a) => attach::guard(a),
        Cmd::Set(a) => require_bpf_caps("set").and_then(|_| run::set(a)),
        Cmd::Replay(a) => run::replay(a),
        Cmd::Module { op } => match op {
            ModuleOp::Load { path } => module::module_path(path.as_deref()).and_then(|p| {
                module::load(&p).map(|_| println!("inxpect: module loaded from {}", p.display()))
            }),
            ModuleOp::Unload => module::unload().map(|_| println!("inxpect: module unloaded")),
            ModuleOp::Status { json } => {
                let s = module::status();
                if json {
                    serde_json::to_string_pretty(&s)
                        .map(|t| println!("{t}"))
                        .map_err(Into::into)
                } else {
                    module::print_status(&s);
                    Ok(())
                }
            }
        },
    };
    if let Err(e) = res {
        // One line for the cause chain; libbpf's log, if any, follows indented.
        eprintln!("inxpect: error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand and every argument says what it is for (issue #16:
    /// --json, --csv, --mode, set --sample... had no help), and clap's own
    /// consistency checks pass.
    #[test]
    fn every_flag_and_subcommand_has_help() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for s in c.get_subcommands() {
                let p = format!("{path} {}", s.get_name());
                if s.get_about().is_none() {
                    missing.push(p.clone());
                }
                walk(s, &p, missing);
            }
        }
        let mut c = super::Cli::command();
        c.build();
        c.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&c, "inxpect", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
