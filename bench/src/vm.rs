//! Section 5: the VM. `tsc`, `pmc` and perf's real fentry/fexit mechanism
//! only run in the qemu (TCG) guest of `tests/vm/run.sh` (the host refuses
//! fentry/fexit and modules). A TCG plugin (`bench/tcg/inxpect-count.c`)
//! counts every guest instruction of the pinned vCPU inside windows that the
//! guest driver (`tests/vm/guest/inxpect-vm-bench.c`) opens and closes
//! around each `BPF_PROG_TEST_RUN`, and the gaps between marked events:
//! the entry of `bpf_dispatcher_xdp_func` (once per test_run iteration: the
//! per-packet period) and the entries of the counter-read functions (the
//! module's kfuncs, `bpf_ktime_get_ns`, `bpf_perf_event_read_value`).
//!
//! Instruction counts are exact and repeatable: the most frequent period is
//! the per-packet cost (timer interrupts lengthen a few iterations, never
//! the mode). Times under TCG are figures only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use inxpect_rewriter::Counter;
use inxpect_tests as t;
use libbpf_rs::{MapCore, MapFlags, ObjectBuilder, ProgramType};

use crate::{build, median, pick_frame, Variant};

/// A configuration measured in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmConfig {
    Base,
    /// `--sections` with this counter.
    Sections(Counter),
    /// `--functions --only <prog>`: one region around the whole program.
    Whole(Counter),
    /// The uninstrumented program with `tests/vm/bpf/profile.bpf.c`'s fentry
    /// and fexit attached: perf's mechanism itself.
    Fentry,
    /// `Whole(c)` sampling 1 in 2^k (the object's initial config): the
    /// most frequent packet is a sampled-out one.
    WholeSampledOut(Counter, u32),
    /// `Whole(c)` / `Sections(c)` with every region disabled (every run
    /// sampled): the cost of disabled sites.
    WholeDisabled(Counter),
    SectionsDisabled(Counter),
    /// `Sections(c)` with `--stats call` (END's statistics always a call).
    SectionsCall(Counter),
    /// `WholeSampledOut` with `--unsampled-copy`: the sampled-out packet
    /// runs the program's uninstrumented copy.
    WholeCopySampledOut(Counter, u32),
    /// `Sections(c)` sampling 1 in 2^k, without and with the copy: a
    /// sampled-out packet through every marker site.
    SectionsSampledOut(Counter, u32),
    SectionsCopySampledOut(Counter, u32),
}

impl VmConfig {
    pub fn tag(self) -> String {
        match self {
            VmConfig::Base => "base".into(),
            VmConfig::Sections(c) => c.name().into(),
            VmConfig::Whole(c) => format!("{}-whole", c.name()),
            VmConfig::Fentry => "fentry".into(),
            VmConfig::WholeSampledOut(c, k) => format!("{}-whole-1in{}", c.name(), 1u64 << k),
            VmConfig::WholeDisabled(c) => format!("{}-whole-off", c.name()),
            VmConfig::SectionsDisabled(c) => format!("{}-off", c.name()),
            VmConfig::SectionsCall(c) => format!("{}-call", c.name()),
            VmConfig::WholeCopySampledOut(c, k) => {
                format!("{}-whole-copy-1in{}", c.name(), 1u64 << k)
            }
            VmConfig::SectionsSampledOut(c, k) => format!("{}-1in{}", c.name(), 1u64 << k),
            VmConfig::SectionsCopySampledOut(c, k) => {
                format!("{}-copy-1in{}", c.name(), 1u64 << k)
            }
        }
    }

    pub fn label(self) -> String {
        match self {
            VmConfig::Base => "uninstrumented".into(),
            VmConfig::Sections(c) => format!("ours `{}` (markers)", c.name()),
            VmConfig::Whole(c) => format!("ours `{}`, one region (2 reads/run)", c.name()),
            VmConfig::Fentry => {
                "perf's fentry/fexit (`bpf_perf_event_read_value`, cpu-clock)".into()
            }
            VmConfig::WholeSampledOut(c, k) => format!(
                "ours `{}`, one region, sampling 1/{} (sampled-out packet)",
                c.name(),
                1u64 << k
            ),
            VmConfig::WholeDisabled(c) => {
                format!("ours `{}`, one region disabled (2 sites)", c.name())
            }
            VmConfig::SectionsDisabled(c) => {
                format!("ours `{}` (markers), every region disabled", c.name())
            }
            VmConfig::SectionsCall(c) => {
                format!("ours `{}` (markers, `--stats call`)", c.name())
            }
            VmConfig::WholeCopySampledOut(c, k) => format!(
                "ours `{}`, one region, `--unsampled-copy`, sampling 1/{} (sampled-out packet)",
                c.name(),
                1u64 << k
            ),
            VmConfig::SectionsSampledOut(c, k) => format!(
                "ours `{}` (markers), sampling 1/{} (sampled-out packet)",
                c.name(),
                1u64 << k
            ),
            VmConfig::SectionsCopySampledOut(c, k) => format!(
                "ours `{}` (markers, `--unsampled-copy`), sampling 1/{} (sampled-out packet)",
                c.name(),
                1u64 << k
            ),
        }
    }

    fn variant(self) -> Option<Variant> {
        match self {
            VmConfig::Base | VmConfig::Fentry => Some(Variant::Base),
            VmConfig::Sections(c) => Some(Variant::Sections(c)),
            VmConfig::Whole(c) | VmConfig::WholeSampledOut(c, _) | VmConfig::WholeDisabled(c) => {
                Some(Variant::Whole(c))
            }
            VmConfig::SectionsDisabled(c) | VmConfig::SectionsSampledOut(c, _) => {
                Some(Variant::Sections(c))
            }
            VmConfig::SectionsCall(c) => Some(Variant::SectionsCall(c)),
            VmConfig::WholeCopySampledOut(c, _) => Some(Variant::WholeCopy(c)),
            VmConfig::SectionsCopySampledOut(c, _) => Some(Variant::SectionsCopy(c)),
        }
    }

    /// The runtime config the object starts with: (sampling shift, regions
    /// enabled), where it differs from the default (1/1, all enabled).
    fn initial_config(self) -> Option<(u32, bool)> {
        match self {
            VmConfig::WholeSampledOut(_, k)
            | VmConfig::WholeCopySampledOut(_, k)
            | VmConfig::SectionsSampledOut(_, k)
            | VmConfig::SectionsCopySampledOut(_, k) => Some((k, true)),
            VmConfig::WholeDisabled(_) | VmConfig::SectionsDisabled(_) => Some((0, false)),
            _ => None,
        }
    }
}

/// Every configuration, in report order.
pub const CONFIGS: [VmConfig; 16] = [
    VmConfig::Base,
    VmConfig::Sections(Counter::Tsc),
    VmConfig::SectionsCall(Counter::Tsc),
    VmConfig::Sections(Counter::Pmc),
    VmConfig::Sections(Counter::Ktime),
    VmConfig::Sections(Counter::Perf),
    VmConfig::Whole(Counter::Tsc),
    VmConfig::Whole(Counter::Pmc),
    VmConfig::WholeSampledOut(Counter::Tsc, 6),
    VmConfig::WholeSampledOut(Counter::Tsc, 10),
    VmConfig::WholeCopySampledOut(Counter::Tsc, 6),
    VmConfig::SectionsSampledOut(Counter::Tsc, 6),
    VmConfig::SectionsCopySampledOut(Counter::Tsc, 6),
    VmConfig::WholeDisabled(Counter::Tsc),
    VmConfig::SectionsDisabled(Counter::Tsc),
    VmConfig::Fentry,
];

/// The guest kernel series measured.
pub const SERIES: &str = "6.12";

/// The series whose verifier gives the probes direct per-CPU access
/// (inxpect_loader::pcpu; the guest's driver does the same rewrite), and
/// what is measured there: the paths the entry's look-up is on.
pub const DIRECT_SERIES: &str = "7";
pub const DIRECT_CONFIGS: [VmConfig; 8] = [
    VmConfig::Base,
    VmConfig::Sections(Counter::Tsc),
    VmConfig::Whole(Counter::Tsc),
    VmConfig::WholeSampledOut(Counter::Tsc, 6),
    VmConfig::WholeCopySampledOut(Counter::Tsc, 6),
    VmConfig::SectionsSampledOut(Counter::Tsc, 6),
    VmConfig::SectionsCopySampledOut(Counter::Tsc, 6),
    VmConfig::SectionsDisabled(Counter::Tsc),
];

#[derive(Clone, Debug)]
pub struct VmCfg {
    pub apps: Vec<String>,
    /// test_run repeats per window; the first is small, the last large.
    pub reps: Vec<u32>,
    pub trials: u32,
    /// tests/vm/run.sh's kernel series, and the configurations run there.
    pub series: &'static str,
    pub configs: Vec<VmConfig>,
}

impl Default for VmCfg {
    fn default() -> Self {
        // The apps, and cms with its regions in subprograms (the sites
        // there look the per-CPU state up; their copies are their own).
        VmCfg {
            apps: t::APPS
                .iter()
                .copied()
                .chain(["cms_sub"])
                .map(String::from)
                .collect(),
            reps: vec![200, 2200],
            trials: 3,
            series: SERIES,
            configs: CONFIGS.to_vec(),
        }
    }
}

impl VmCfg {
    /// The same apps and windows on [`DIRECT_SERIES`], [`DIRECT_CONFIGS`].
    pub fn direct(&self) -> VmCfg {
        VmCfg {
            series: DIRECT_SERIES,
            configs: DIRECT_CONFIGS.to_vec(),
            ..self.clone()
        }
    }

    /// Whether this run's guest makes the look-ups direct.
    pub fn is_direct(&self) -> bool {
        self.series == DIRECT_SERIES
    }
}

/// Gap value -> how often, summed over windows.
pub type Hist = BTreeMap<u64, u64>;

/// The two most frequent gaps (by count, ties: smaller gap first).
pub fn top(h: &Hist, n: usize) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = h.iter().map(|(g, c)| (*g, *c)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

#[derive(Clone, Debug)]
pub struct VmRow {
    pub app: String,
    pub object: String,
    pub config: VmConfig,
    /// Why the configuration did not run (load refused, ...).
    pub error: Option<String>,
    pub verdict: Option<u32>,
    /// Most frequent instruction count from one dispatcher entry to the next
    /// (test_run's loop in its steady state, on the buffer as the earlier
    /// iterations left it).
    pub per_packet: Option<u64>,
    /// The first iteration of each window (the caller's packet, unmodified:
    /// the full path), most frequent over windows.
    pub first: Option<u64>,
    /// (min window at the largest repeat - min at the smallest) / difference.
    pub window_diff: Option<f64>,
    /// Gaps between consecutive counter reads (read-function entries).
    pub reads: Hist,
    /// Reads per test_run iteration (read events / period events).
    pub reads_per_packet: f64,
    /// Gaps between consecutive rdtsc/rdtscp/rdpmc.
    pub ops: Hist,
    /// Median kernel `duration` per run at the largest repeat (ns, TCG).
    pub ns: Option<f64>,
    /// fentry/fexit: (fexit runs, accumulated cpu-clock delta).
    pub profile: Option<(u64, u64)>,
    /// The kernel's `verified_insns` of the XDP program, loaded with the
    /// module present (the kfunc reads live, not pruned).
    pub verified: Option<u64>,
    /// Look-ups of the per-CPU state the guest's driver made direct.
    pub pcpu_direct: u32,
}

impl VmRow {
    /// From the two dominant read gaps (with one region, two reads per
    /// packet): the instructions strictly between the first read and the
    /// second (the smaller gap minus the first read itself), and between
    /// the second read and the next packet's first.
    pub fn between_reads(&self) -> Option<(u64, u64)> {
        let t = top(&self.reads, 2);
        let (a, b) = match t[..] {
            [(a, _), (b, _)] => (a.min(b), a.max(b)),
            [(a, _)] => (a, a),
            _ => return None,
        };
        Some((a.saturating_sub(1), b.saturating_sub(1)))
    }
}

pub struct VmResult {
    pub kernel: String,
    pub clocksource: String,
    pub available: String,
    pub plugin: String,
    pub cfg: VmCfg,
    pub rows: Vec<VmRow>,
    pub seconds: u64,
    /// The [`DIRECT_SERIES`] run (or why it failed), with the main one.
    pub direct: Option<std::result::Result<Box<VmResult>, String>>,
}

impl VmResult {
    pub fn find(&self, app: &str, c: VmConfig) -> Option<&VmRow> {
        self.rows.iter().find(|r| r.app == app && r.config == c)
    }

    /// Instructions added per packet on the fresh frame (first iteration).
    pub fn added(&self, app: &str, c: VmConfig) -> Option<i64> {
        let b = self.find(app, VmConfig::Base)?.first?;
        let x = self.find(app, c)?.first?;
        Some(x as i64 - b as i64)
    }

    /// The same in test_run's steady state (the loop's most frequent period).
    pub fn added_steady(&self, app: &str, c: VmConfig) -> Option<i64> {
        let b = self.find(app, VmConfig::Base)?.per_packet?;
        let x = self.find(app, c)?.per_packet?;
        Some(x as i64 - b as i64)
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

pub(crate) fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `Ok` when the VM section can run here, else why not.
pub fn available() -> std::result::Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root (the VM harness and the map dumps need it)".into());
    }
    for tool in ["qemu-system-x86_64", "gcc", "clang", "cpio"] {
        if !have(tool) {
            return Err(format!("`{tool}` not found (see .ci/install)"));
        }
    }
    Ok(())
}

/// The object an app is measured with: clang -O2 -g, except tunnel, whose
/// -O2 build 6.12's verifier refuses uninstrumented (tests/tests/vm.rs):
/// its -O1 build stands in.
pub fn object_variant(app: &str) -> &'static str {
    if t::base_app(app) == "tunnel" {
        "clang-O1"
    } else {
        "clang-O2-g"
    }
}

/// The environment variable that asks for an instruction trace.
pub const TRACE_ENV: &str = "INXPECT_TCG_TRACE";

/// Builds the plugin into `target/inxpect-bench/`.
pub fn build_plugin() -> Result<PathBuf> {
    let dir = root().join("target/inxpect-bench");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("inxpect-count.so");
    let st = Command::new("gcc")
        .args([
            "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
        ])
        .arg(&out)
        .arg(root().join("bench/tcg/inxpect-count.c"))
        .status()
        .context("gcc")?;
    ensure!(st.success(), "building the TCG plugin failed");
    Ok(out)
}

/// `MAP KEYHEX VALUEHEX` lines of the maps `populate_app_maps` fills, read
/// back from the uninstrumented object loaded on the host.
pub(crate) fn map_lines(input: &[u8], app: &str) -> Result<String> {
    let config = t::load_config()?;
    let mut open = ObjectBuilder::default().open_memory(input)?;
    for mut p in open.progs_mut() {
        if p.prog_type() == ProgramType::Unspec {
            p.set_prog_type(ProgramType::Xdp);
        }
    }
    let obj = open
        .load()
        .context("loading on the host for the map values")?;
    t::populate_app_maps(&obj, app, &config)?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut s = String::new();
    for m in obj.maps() {
        let name = m.name().to_string_lossy().into_owned();
        if !["nat_config", "routes_v4", "routes_v6", "tunnel_config"].contains(&name.as_str()) {
            continue;
        }
        for k in m.keys() {
            if let Some(v) = m.lookup(&k, MapFlags::ANY)? {
                if v.iter().any(|&b| b != 0) {
                    let _ = writeln!(s, "{name} {} {}", hex(&k), hex(&v));
                }
            }
        }
    }
    Ok(s)
}

struct Planned {
    app: String,
    object: String,
    config: VmConfig,
    name: String,
    error: Option<String>,
}

/// Runs everything in one boot of the `cfg.series` guest.
pub fn run(cfg: &VmCfg, mut progress: impl FnMut(&str)) -> Result<VmResult> {
    let mut r = run_series(cfg, &mut progress)?;
    // The same on the kernel with direct per-CPU access: its own boot.
    r.direct = Some(
        run_series(&cfg.direct(), &mut progress)
            .map(Box::new)
            .map_err(|e| format!("{e:#}").lines().next().unwrap_or("").to_string()),
    );
    Ok(r)
}

fn run_series(cfg: &VmCfg, mut progress: impl FnMut(&str)) -> Result<VmResult> {
    ensure!(
        cfg.reps.len() >= 2 && cfg.trials >= 1,
        "need two repeats and a trial"
    );
    let start = std::time::Instant::now();
    progress("vm: building the TCG plugin");
    let plugin = build_plugin()?;
    let dir = tempfile::tempdir()?;
    let mut objs: Vec<PathBuf> = Vec::new();
    let mut cmds: Vec<String> = vec!["exec info /inxpect-vm-bench info".into()];
    let mut plan = Vec::new();
    let reps = cfg
        .reps
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for (ai, app) in cfg.apps.iter().enumerate() {
        let variant = object_variant(app);
        let path = t::object_path(app, variant);
        let input = std::fs::read(&path).with_context(|| path.display().to_string())?;
        let (_, frame) = pick_frame(app)?;
        let pkt = dir.path().join(format!("{app}.pkt"));
        std::fs::write(&pkt, &frame)?;
        objs.push(pkt);
        let maps = map_lines(&input, app)?;
        let maps_arg = if maps.is_empty() {
            String::new()
        } else {
            let p = dir.path().join(format!("{app}.maps"));
            std::fs::write(&p, maps)?;
            objs.push(p);
            format!(" --maps /objs/{app}.maps")
        };
        for (ci, c) in cfg.configs.iter().enumerate() {
            let name = format!("{app}:{}", c.tag());
            let id_base = ((ai * cfg.configs.len() + ci) as u64 + 1) * 1000;
            let mut p = Planned {
                app: app.clone(),
                object: format!("{app}.{variant}.o"),
                config: *c,
                name: name.clone(),
                error: None,
            };
            let built = build(&input, c.variant().expect("variant")).and_then(|b| {
                match c.initial_config() {
                    Some((k, on)) => t::with_config(&b, k, on),
                    None => Ok(b),
                }
            });
            let bytes = match built {
                Ok(b) => b,
                Err(e) => {
                    p.error = Some(format!("not instrumented: {e:#}"));
                    plan.push(p);
                    continue;
                }
            };
            let file = format!("{app}-{}.o", c.tag());
            std::fs::write(dir.path().join(&file), bytes)?;
            objs.push(dir.path().join(&file));
            let mut cmd = format!(
                "exec {name} /inxpect-vm-bench run {name} /objs/{file} --packet /objs/{app}.pkt{maps_arg} --reps {reps} --trials {} --id-base {id_base}",
                cfg.trials
            );
            match c {
                VmConfig::Sections(Counter::Perf) | VmConfig::Whole(Counter::Perf) => {
                    cmd.push_str(" --perf-map inxpect_perf")
                }
                VmConfig::Fentry => cmd.push_str(" --fentry /bpf/profile.o"),
                _ => {}
            }
            cmds.push(cmd);
            plan.push(p);
        }
    }
    let log = dir.path().join("tcg.log");
    let script = root().join("tests/vm/run.sh");
    let mut cmd = Command::new(&script);
    cmd.arg(cfg.series)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    for o in &objs {
        cmd.arg("--obj").arg(o);
    }
    for c in &cmds {
        cmd.arg("--cmd").arg(c);
    }
    let windows = cfg.apps.len() * cfg.configs.len() * (cfg.trials as usize * cfg.reps.len() + 1);
    let iters: u64 = cfg.reps.iter().map(|&r| u64::from(r)).sum::<u64>() * u64::from(cfg.trials);
    // A bound for a hung guest only: the boot and module tests take ~40 s,
    // each configuration ~5 s (its load under TCG dominates).
    let configs = (cfg.apps.len() * cfg.configs.len()) as u64;
    let timeout = 600 + 10 * configs + windows as u64 / 2 + iters * configs / 20_000;
    // A loaded machine (TCG shares its cores) may need longer: the caller's
    // INXPECT_VM_TIMEOUT wins.
    let timeout = std::env::var("INXPECT_VM_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(timeout);
    // INXPECT_TCG_TRACE=LO-HI: the plugin prints every instruction of the
    // third period of windows LO..HI (bench/tcg/inxpect-count.c), and the
    // log is kept as target/inxpect-bench/trace-SERIES.log.
    let trace = std::env::var(TRACE_ENV).ok();
    let trace_arg = trace
        .as_deref()
        .map(|t| format!(",trace={t}"))
        .unwrap_or_default();
    cmd.env(
        "INXPECT_VM_QEMU_ARGS",
        format!(
            "-plugin {}{trace_arg} -d plugin -D {}",
            plugin.display(),
            log.display()
        ),
    )
    .env("INXPECT_VM_BUILD", dir.path().join("build"))
    .env("INXPECT_VM_RELOADS", "2")
    .env("INXPECT_VM_TIMEOUT", timeout.to_string());
    progress(&format!(
        "vm: tests/vm/run.sh {} with the plugin ({} configurations, timeout {timeout}s)",
        cfg.series,
        plan.len()
    ));
    let out = cmd.output().context("running tests/vm/run.sh")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let verdict = stdout
        .lines()
        .rfind(|l| l.starts_with("vm-harness: "))
        .unwrap_or("no verdict")
        .to_string();
    if !out.status.success() || !verdict.starts_with("vm-harness: PASS") {
        let tail: Vec<&str> = stdout.lines().collect();
        bail!(
            "VM run failed: {verdict}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail[tail.len().saturating_sub(40)..].join("\n")
        );
    }
    let plugin_log = std::fs::read_to_string(&log).context("reading the plugin's log")?;
    if trace.is_some() {
        let kept = root().join(format!("target/inxpect-bench/trace-{}.log", cfg.series));
        std::fs::copy(&log, &kept).context("keeping the trace")?;
        progress(&format!("vm: trace kept in {}", kept.display()));
    }
    let mut res = parse(&stdout, &plugin_log, &plan, cfg)?;
    res.seconds = start.elapsed().as_secs();
    Ok(res)
}

/// `k=v` fields of a line.
pub(crate) fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect()
}

/// `H:g/c,g/c` -> (H, hist).
fn parse_hist(s: &str) -> (u64, Hist) {
    let (h, rest) = s.split_once(':').unwrap_or(("0", "-"));
    let mut m = Hist::new();
    for e in rest.split(',') {
        if let Some((g, c)) = e.split_once('/') {
            if let (Ok(g), Ok(c)) = (g.parse(), c.parse::<u64>()) {
                *m.entry(g).or_default() += c;
            }
        }
    }
    (h.parse().unwrap_or(0), m)
}

/// The guest's `exec NAME` blocks: NAME -> (exit status, output lines).
pub(crate) fn exec_blocks(stdout: &str) -> BTreeMap<String, (i32, Vec<String>)> {
    let mut execs = BTreeMap::new();
    let mut cur: Option<(String, Vec<String>)> = None;
    for l in stdout.lines() {
        if let Some(n) = l.strip_prefix("INXPECT-VM-EXEC-BEGIN ") {
            cur = Some((n.to_string(), Vec::new()));
        } else if let Some(r) = l.strip_prefix("INXPECT-VM-EXEC-END ") {
            let rc = r
                .rsplit_once("rc=")
                .and_then(|(_, n)| n.trim().parse().ok())
                .unwrap_or(-1);
            if let Some((n, lines)) = cur.take() {
                execs.insert(n, (rc, lines));
            }
        } else if let Some((_, lines)) = cur.as_mut() {
            lines.push(l.to_string());
        }
    }
    execs
}

struct Window {
    insns: u64,
    first: Option<u64>,
    period: Hist,
    period_hits: u64,
    reads: Hist,
    read_hits: u64,
    ops: Hist,
}

fn parse(stdout: &str, plugin_log: &str, plan: &[Planned], cfg: &VmCfg) -> Result<VmResult> {
    let mut windows: BTreeMap<u64, Window> = BTreeMap::new();
    let mut plugin = String::new();
    for l in plugin_log.lines() {
        if l.starts_with("INXPECT-TCG-LOADED") {
            plugin = l.trim_start_matches("INXPECT-TCG-LOADED ").to_string();
        }
        let Some(rest) = l.strip_prefix("INXPECT-TCG ") else {
            continue;
        };
        let f = fields(rest);
        let id: u64 = f.get("id").and_then(|v| v.parse().ok()).unwrap_or(0);
        let (period_hits, period) = parse_hist(f.get("period").unwrap_or(&""));
        let (read_hits, reads) = parse_hist(f.get("reads").unwrap_or(&""));
        let (_, ops) = parse_hist(f.get("ops").unwrap_or(&""));
        windows.insert(
            id,
            Window {
                insns: f.get("insns").and_then(|v| v.parse().ok()).unwrap_or(0),
                first: f.get("first").and_then(|v| v.parse().ok()),
                period,
                period_hits,
                reads,
                read_hits,
                ops,
            },
        );
    }
    ensure!(
        !plugin.is_empty(),
        "the TCG plugin did not load (no INXPECT-TCG-LOADED in its log)"
    );
    let execs = exec_blocks(stdout);
    let (mut kernel, mut clocksource, mut available) =
        (String::new(), String::new(), String::new());
    for l in stdout.lines() {
        if let Some(r) = l.strip_prefix("INXPECT-BENCH-INFO kernel=") {
            let f = fields(l);
            kernel = r.split_whitespace().next().unwrap_or("").to_string();
            clocksource = f.get("clocksource").unwrap_or(&"?").to_string();
            available = f.get("available").unwrap_or(&"?").to_string();
        }
    }
    let small = cfg.reps[0];
    let large = *cfg.reps.last().expect("reps");
    let mut rows = Vec::new();
    for p in plan {
        let mut row = VmRow {
            app: p.app.clone(),
            object: p.object.clone(),
            config: p.config,
            error: p.error.clone(),
            verdict: None,
            per_packet: None,
            first: None,
            window_diff: None,
            reads: Hist::new(),
            reads_per_packet: 0.0,
            ops: Hist::new(),
            ns: None,
            profile: None,
            verified: None,
            pcpu_direct: 0,
        };
        if row.error.is_some() {
            rows.push(row);
            continue;
        }
        let Some((rc, lines)) = execs.get(&p.name) else {
            row.error = Some("did not run in the guest".into());
            rows.push(row);
            continue;
        };
        let mut period = Hist::new();
        let mut firsts = Hist::new();
        let (mut phits, mut rhits) = (0u64, 0u64);
        let mut min_at: BTreeMap<u32, u64> = BTreeMap::new();
        let mut ns = Vec::new();
        for l in lines {
            if let Some(r) = l.strip_prefix("INXPECT-BENCH-ERROR ") {
                if row.error.is_none() {
                    row.error = Some(r.to_string());
                }
            } else if l.contains("cannot use helper") || l.contains("unknown func") {
                row.error = Some(l.trim().to_string());
            } else if let Some(r) = l.strip_prefix("INXPECT-VM-INFO pcpu ") {
                row.pcpu_direct = fields(r)
                    .get("direct")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            } else if let Some(r) = l.strip_prefix("INXPECT-BENCH-VERIFIED ") {
                row.verified = fields(r).get("insns").and_then(|v| v.parse().ok());
            } else if let Some(r) = l.strip_prefix("INXPECT-BENCH-PROFILE ") {
                let f = fields(r);
                row.profile = Some((
                    f.get("runs").and_then(|v| v.parse().ok()).unwrap_or(0),
                    f.get("counter_delta")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                ));
            } else if let Some(r) = l.strip_prefix("INXPECT-BENCH ") {
                let f = fields(r);
                let id: u64 = f.get("id").and_then(|v| v.parse().ok()).unwrap_or(0);
                let repeat: u32 = f.get("repeat").and_then(|v| v.parse().ok()).unwrap_or(0);
                row.verdict = f.get("retval").and_then(|v| v.parse().ok());
                if repeat == large {
                    if let Some(d) = f.get("duration_ns").and_then(|v| v.parse::<f64>().ok()) {
                        ns.push(d);
                    }
                }
                let Some(w) = windows.get(&id) else { continue };
                let e = min_at.entry(repeat).or_insert(u64::MAX);
                *e = (*e).min(w.insns);
                if let Some(g) = w.first {
                    *firsts.entry(g).or_default() += 1;
                }
                for (g, c) in &w.period {
                    *period.entry(*g).or_default() += c;
                }
                for (g, c) in &w.reads {
                    *row.reads.entry(*g).or_default() += c;
                }
                for (g, c) in &w.ops {
                    *row.ops.entry(*g).or_default() += c;
                }
                phits += w.period_hits;
                rhits += w.read_hits;
            }
        }
        if *rc != 0 && row.error.is_none() {
            row.error = Some(format!("guest driver exit status {rc}"));
        }
        // A figure is only of the access it is reported under.
        let instrumented = p.config != VmConfig::Base && p.config != VmConfig::Fentry;
        if row.error.is_none() && instrumented && cfg.is_direct() != (row.pcpu_direct > 0) {
            row.error = Some(format!(
                "the guest made {} look-ups direct on Linux {}",
                row.pcpu_direct, cfg.series
            ));
        }
        if row.error.is_some() {
            // A refused load: the verifier's reason is the line before.
            rows.push(row);
            continue;
        }
        row.per_packet = top(&period, 1).first().map(|x| x.0);
        row.first = top(&firsts, 1).first().map(|x| x.0);
        if let (Some(a), Some(b)) = (min_at.get(&small), min_at.get(&large)) {
            row.window_diff = Some((*b as f64 - *a as f64) / f64::from(large - small));
        }
        row.reads_per_packet = if phits > 0 {
            rhits as f64 / phits as f64
        } else {
            0.0
        };
        if !ns.is_empty() {
            row.ns = Some(median(&mut ns));
        }
        rows.push(row);
    }
    ensure!(
        !kernel.is_empty(),
        "the guest printed no INXPECT-BENCH-INFO"
    );
    Ok(VmResult {
        kernel,
        clocksource,
        available,
        plugin,
        cfg: cfg.clone(),
        rows,
        seconds: 0,
        direct: None,
    })
}

fn fmt_top(h: &Hist) -> String {
    let v = top(h, 2);
    if v.is_empty() {
        return "-".into();
    }
    v.iter()
        .map(|(g, c)| format!("{g} (x{c})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What reads the counter in a configuration (the marked function).
pub fn read_point(c: VmConfig) -> &'static str {
    match c {
        VmConfig::Base => "-",
        VmConfig::Sections(Counter::Tsc)
        | VmConfig::Whole(Counter::Tsc)
        | VmConfig::WholeSampledOut(Counter::Tsc, _)
        | VmConfig::WholeCopySampledOut(Counter::Tsc, _)
        | VmConfig::SectionsSampledOut(Counter::Tsc, _)
        | VmConfig::SectionsCopySampledOut(Counter::Tsc, _)
        | VmConfig::WholeDisabled(Counter::Tsc)
        | VmConfig::SectionsDisabled(Counter::Tsc) => "kfunc `inxpect_read_tsc*` entry",
        VmConfig::Sections(Counter::Pmc) | VmConfig::Whole(Counter::Pmc) => {
            "kfunc `inxpect_read_pmc*` entry (inactive slot: no PMU)"
        }
        VmConfig::Sections(Counter::Ktime) | VmConfig::Whole(Counter::Ktime) => {
            "`bpf_ktime_get_ns` entry"
        }
        VmConfig::Sections(Counter::Perf) | VmConfig::Whole(Counter::Perf) | VmConfig::Fentry => {
            "`bpf_perf_event_read_value` entry"
        }
        _ => "-",
    }
}

/// Bar chart: x86 instructions added per packet, per app and configuration.
pub fn plot(r: &VmResult) -> String {
    let groups: Vec<crate::report::Group> = r
        .cfg
        .apps
        .iter()
        .map(|app| {
            let bars = CONFIGS
                .iter()
                .filter(|c| **c != VmConfig::Base && c.initial_config().is_none())
                .filter_map(|c| Some((c.tag(), r.added(app, *c)? as f64)))
                .collect();
            (app.clone(), bars)
        })
        .collect();
    crate::report::bar_chart(
        "x86 instructions added per packet (VM, TCG plugin, exact)",
        "instructions / packet",
        &groups,
        &[],
    )
}

/// The report section (without its `##` heading); `img` is the plot's path
/// relative to the report.
pub fn section(r: &VmResult, notes: &str, img: Option<&str>) -> String {
    let mut s = String::new();
    s.push_str(notes);
    let _ = writeln!(
        s,
        "\nThis run: guest Linux {} (`-smp 2`, bench pinned to CPU 1), clocksource `{}` \
         (available: {}), plugin {}; repeats {} per window, {} trials, apps {}; \
         {} s including the boot and the module tests.\n",
        r.kernel,
        r.clocksource,
        r.available.trim_end_matches(','),
        r.plugin,
        r.cfg
            .reps
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        r.cfg.trials,
        r.cfg.apps.join(", "),
        r.seconds
    );
    if let Some(img) = img {
        let _ = writeln!(s, "![instructions added per packet]({img})\n");
    }
    s.push_str("### x86 instructions per packet (exact, TCG plugin)\n\n");
    s.push_str(
        "| app | configuration | insns/packet, fresh frame | added | insns/packet, repeat loop | added | whole-call difference | reads/packet | TCG ns/packet | % of baseline (TCG time) | verdict (repeat loop) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for row in &r.rows {
        let base = r.find(&row.app, VmConfig::Base);
        if let Some(e) = &row.error {
            let _ = writeln!(
                s,
                "| {} | {} | not run: {} | | | | | | | | |",
                row.app,
                row.config.label(),
                e.replace('|', "/")
            );
            continue;
        }
        let fmt_added = |a: Option<i64>| {
            a.filter(|_| row.config != VmConfig::Base)
                .map(|a| format!("{a:+}"))
                .unwrap_or_else(|| "-".into())
        };
        let added = fmt_added(r.added(&row.app, row.config));
        let added_steady = fmt_added(r.added_steady(&row.app, row.config));
        let pct = match (base.and_then(|b| b.ns), row.ns) {
            (Some(b), Some(x)) if x > 0.0 => format!("{:.1}%", 100.0 * b / x),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.app,
            row.config.label(),
            row.first.map(|x| x.to_string()).unwrap_or("-".into()),
            added,
            row.per_packet.map(|x| x.to_string()).unwrap_or("-".into()),
            added_steady,
            row.window_diff
                .map(|x| format!("{x:.1}"))
                .unwrap_or("-".into()),
            if row.config == VmConfig::Base {
                "-".into()
            } else {
                format!("{:.1}", row.reads_per_packet)
            },
            row.ns.map(|x| format!("{x:.0}")).unwrap_or("-".into()),
            pct,
            row.verdict.map(crate::report::verdict).unwrap_or("-"),
        );
    }
    s.push_str(
        "\n### Between the two reads (`drop`: empty region for ours, whole program for one region and fentry/fexit)\n\n\
         | configuration | read point (marked) | read-to-read gaps, two most frequent (x occurrences) | between the reads | rest of the packet | rdtsc-to-rdtsc gaps |\n\
         |---|---|---|---:|---:|---|\n",
    );
    for row in r.rows.iter().filter(|x| x.app == "drop") {
        if row.config == VmConfig::Base
            || row.error.is_some()
            || row.config.initial_config().is_some()
        {
            continue;
        }
        let (b, rest) = row
            .between_reads()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .unwrap_or(("-".into(), "-".into()));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            row.config.label(),
            read_point(row.config),
            fmt_top(&row.reads),
            b,
            rest,
            fmt_top(&row.ops)
        );
    }
    s.push_str("| InXpect prototype (published) | kfunc `rdpmc` | | ~40 | | |\n");
    s.push_str("| perf / bpftool (published) | `bpf_perf_event_read_value` | | ~600 (627 for a 2-insn XDP_DROP) | | |\n");
    s.push_str(&cheap_paths(r));
    s.push_str(&copy_paths(r));
    s.push_str(&direct_section(r));
    if let Some((runs, delta)) = r.find("drop", VmConfig::Fentry).and_then(|x| x.profile) {
        let _ = writeln!(
            s,
            "\nfentry/fexit's own result on drop: {runs} runs, cpu-clock delta {delta} ns in all \
             ({:.0} ns per run under TCG): the figure `bpftool prog profile` would print.",
            delta as f64 / runs.max(1) as f64
        );
    }
    s
}

/// The direct run's rows beside the main run's: what direct per-CPU access
/// takes off each path the entry's look-up is on.
fn direct_section(r: &VmResult) -> String {
    let mut s = String::new();
    let d = match &r.direct {
        None => return s,
        Some(Err(why)) => {
            let _ = writeln!(
                s,
                "\n### Direct per-CPU access (Linux {DIRECT_SERIES})\n\nNot measured: {why}"
            );
            return s;
        }
        Some(Ok(d)) => d,
    };
    let _ = writeln!(
        s,
        "\n### Direct per-CPU access (Linux {}, its own boot)\n\n\
         Linux 7.x resolves an `ld_imm64` of a one-entry per-CPU array's value to this \
         CPU's copy (\"global percpu data\"). Where it does, `inxpect` rewrites each look-up \
         of `inxpect_pcpu` into that before loading (`inxpect_loader::pcpu`), and the \
         guest's driver does the same; \"added\" is against that kernel's own \
         uninstrumented run, exact: on the fresh frame, and in the repeat loop (the \
         steady state, where a region's path does not depend on how long the TCG \
         host took: the markers' fresh-frame rows do, see \"cms with its 9 regions\" \
         in the Targets notes).\n\n\
         | app | configuration | fresh, {} (look-up) | fresh, {} (direct) | difference | loop, look-up | loop, direct | difference | look-ups made direct |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|",
        d.kernel, r.kernel, d.kernel
    );
    let f = |a: Option<i64>| a.map(|a| format!("{a:+}")).unwrap_or_else(|| "-".into());
    let diff = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:+}", b - a),
        _ => "-".into(),
    };
    for row in d.rows.iter().filter(|x| x.config != VmConfig::Base) {
        if let Some(e) = &row.error {
            let _ = writeln!(
                s,
                "| {} | {} | not run: {} | | | | | | |",
                row.app,
                row.config.label(),
                e.replace('|', "/")
            );
            continue;
        }
        let (a, b) = (r.added(&row.app, row.config), d.added(&row.app, row.config));
        let (la, lb) = (
            r.added_steady(&row.app, row.config),
            d.added_steady(&row.app, row.config),
        );
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.app,
            row.config.label(),
            f(a),
            f(b),
            diff(a, b),
            f(la),
            f(lb),
            diff(la, lb),
            row.pcpu_direct
        );
    }
    s
}

/// Instructions per disabled site: markers disabled minus one region
/// disabled (both one sampled entry), over the sites between them. In the
/// repeat loop's steady state, where the sites per packet are counted (an
/// app whose first iteration takes a longer path, as tunnel's does, would
/// otherwise divide its fresh frame's sites by the loop's count).
pub fn per_disabled_site(r: &VmResult, app: &str, c: Counter) -> Option<f64> {
    let sites = r.find(app, VmConfig::Sections(c))?.reads_per_packet.round() as i64;
    let all = r.added_steady(app, VmConfig::SectionsDisabled(c))?;
    let one = r.added_steady(app, VmConfig::WholeDisabled(c))?;
    (sites > 2).then(|| (all - one) as f64 / (sites - 2) as f64)
}

/// `verified_insns` of a configuration over the uninstrumented program's.
pub fn verified_ratio(r: &VmResult, app: &str, c: VmConfig) -> Option<(u64, u64, f64)> {
    let b = r.find(app, VmConfig::Base)?.verified?;
    let x = r.find(app, c)?.verified?;
    Some((x, b, x as f64 / b.max(1) as f64))
}

/// Sampled-out packets, disabled regions and the verifier's cost.
fn cheap_paths(r: &VmResult) -> String {
    let mut s = String::from(
        "\n### Sampled-out packets, disabled regions, verifier cost (module present)\n\n\
         Added x86 instructions per packet, fresh frame (repeat loop in brackets). \
         Sampled out: one region (`tsc`), the object's config sampling 1 in 64 or 1024, \
         so the most frequent packet is one the sampling skips. Disabled: every region \
         off, every packet sampled; per site = (markers disabled - one region disabled) \
         / (the markers' sites - 2), both with one sampled entry, in the repeat loop \
         (where the sites per packet are counted). `verified_insns`: the \
         kernel's count for the XDP program as loaded in the guest (module present, the \
         kfunc reads live); `--stats call`: the same markers with END's statistics \
         always a call of the runtime.\n\n\
         | app | sampled out 1/64 | sampled out 1/1024 | one region disabled | markers disabled | per disabled site | verified_insns uninstrumented | `tsc` markers | ratio | `tsc` markers, `--stats call` | ratio | `tsc` one region | ratio |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let t = Counter::Tsc;
    for app in &r.cfg.apps {
        let a = |c: VmConfig| match (r.added(app, c), r.added_steady(app, c)) {
            (Some(x), Some(y)) => format!("{x:+} ({y:+})"),
            _ => "-".into(),
        };
        let v = |c: VmConfig| {
            verified_ratio(r, app, c)
                .map(|(x, _, q)| (x.to_string(), format!("{q:.2}x")))
                .unwrap_or(("-".into(), "-".into()))
        };
        let (vm, vmr) = v(VmConfig::Sections(t));
        let (vc, vcr) = v(VmConfig::SectionsCall(t));
        let (vw, vwr) = v(VmConfig::Whole(t));
        let _ = writeln!(
            s,
            "| {app} | {} | {} | {} | {} | {} | {} | {vm} | {vmr} | {vc} | {vcr} | {vw} | {vwr} |",
            a(VmConfig::WholeSampledOut(t, 6)),
            a(VmConfig::WholeSampledOut(t, 10)),
            a(VmConfig::WholeDisabled(t)),
            a(VmConfig::SectionsDisabled(t)),
            per_disabled_site(r, app, t)
                .map(|x| format!("{x:.1}"))
                .unwrap_or("-".into()),
            r.find(app, VmConfig::Base)
                .and_then(|x| x.verified)
                .map(|x| x.to_string())
                .unwrap_or("-".into()),
        );
    }
    s
}

/// Sampled-out packets with and without `--unsampled-copy`, and what the
/// copy costs the verifier.
fn copy_paths(r: &VmResult) -> String {
    let mut s = String::from(
        "\n### Sampled-out packets with `--unsampled-copy`\n\n\
         Added x86 instructions per sampled-out packet (sampling 1/64 in the object's \
         config), fresh frame (repeat loop in brackets): one region (`tsc`) and the \
         apps' markers, each without and with the uninstrumented copy that a \
         sampled-out run takes instead of the instrumented code (its sites cost \
         nothing there). `verified_insns` of the markers build with the copy: the \
         verifier walks the program's code once more.\n\n\
         | app | one region | one region, copy | markers | markers, copy | verified_insns `tsc` markers, copy | ratio |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    let t = Counter::Tsc;
    for app in &r.cfg.apps {
        let a = |c: VmConfig| match (r.added(app, c), r.added_steady(app, c)) {
            (Some(x), Some(y)) => format!("{x:+} ({y:+})"),
            _ => "-".into(),
        };
        let (v, q) = verified_ratio(r, app, VmConfig::SectionsCopySampledOut(t, 6))
            .map(|(x, _, q)| (x.to_string(), format!("{q:.2}x")))
            .unwrap_or(("-".into(), "-".into()));
        let _ = writeln!(
            s,
            "| {app} | {} | {} | {} | {} | {v} | {q} |",
            a(VmConfig::WholeSampledOut(t, 6)),
            a(VmConfig::WholeCopySampledOut(t, 6)),
            a(VmConfig::SectionsSampledOut(t, 6)),
            a(VmConfig::SectionsCopySampledOut(t, 6)),
        );
    }
    s
}

/// Replaces (or inserts) section 5 of `md` with `body` under `heading`.
pub fn splice(md: &str, heading: &str, body: &str) -> String {
    splice_section(md, "5", heading, body)
}

/// The body of section `number` of `md` as [`splice_section`] wrote it (the
/// text between its heading line and the next section or `Plots:` line).
pub fn section_body(md: &str, number: &str) -> Option<String> {
    let a = md.find(&format!("\n## {number}. "))? + 1;
    let after = &md[a..];
    let start = after.find("\n\n")? + 2;
    let end = after[3..]
        .find("\n## ")
        .map(|i| i + 3)
        .or_else(|| after.find("\nPlots:"))
        .unwrap_or(after.len());
    (start <= end).then(|| after[start..end].to_string())
}

/// Replaces (or inserts, before the `Plots:` line) section `number` of `md`
/// with `body` under `heading`.
pub fn splice_section(md: &str, number: &str, heading: &str, body: &str) -> String {
    let new = format!("{heading}\n\n{body}\n");
    if let Some(a) = md.find(&format!("\n## {number}. ")) {
        let after = &md[a + 1..];
        let end = after[3..]
            .find("\n## ")
            .map(|i| i + 4)
            .or_else(|| after.find("\nPlots:").map(|i| i + 1))
            .unwrap_or(after.len());
        format!("{}{new}{}", &md[..a + 1], &after[end..])
    } else if let Some(p) = md.find("\nPlots:") {
        format!("{}\n{new}{}", &md[..p], &md[p..])
    } else {
        format!("{md}\n{new}")
    }
}

pub const HEADING: &str =
    "## 5. In the VM: `tsc`, `pmc` and perf's fentry/fexit, exact instruction counts (TCG plugin)";

#[cfg(test)]
mod splice_tests {
    use super::{section_body, splice_section};

    #[test]
    fn a_spliced_body_reads_back_and_splices_again_to_the_same_text() {
        let md = "# B\n\n## 4. R\n\nr\n\n## 5. V\n\nold\n\n## 6. A\n\na\n\nPlots: x\n";
        assert_eq!(section_body(md, "5").as_deref(), Some("old\n"));
        assert_eq!(section_body(md, "6").as_deref(), Some("a\n"));
        assert_eq!(section_body(md, "7"), None);
        let new = splice_section(md, "5", "## 5. V", "new\n\n| t |\n");
        assert_eq!(section_body(&new, "5").as_deref(), Some("new\n\n| t |\n"));
        assert_eq!(section_body(&new, "6").as_deref(), Some("a\n"));
        let back = splice_section(&new, "5", "## 5. V", &section_body(md, "5").unwrap());
        assert_eq!(back, md);
    }
}
