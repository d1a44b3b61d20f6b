//! Section 6: a real PMU. In the arm64 guest of `tests/vm/run.sh arm64-6.12`
//! (qemu-system-aarch64 TCG, `-icount shift=0`: QEMU's PMUv3 counts every
//! retired instruction exactly, driven by the kernel's `armv8_pmuv3`),
//! perf's mechanism and inxpect's probe read the same hardware event,
//! `instructions`, side by side:
//!
//! - perf's: `tests/vm/bpf/profile.bpf.c`, fentry + fexit attached to the
//!   uninstrumented program, each reading a per-CPU `instructions` perf event
//!   with `bpf_perf_event_read_value` (what `bpftool prog profile` does);
//! - ours: the program instrumented with `pmc` (the apps' markers, or one
//!   region around the whole program), the module's slot 0 = instructions.
//!
//! What is measured, all in exact instructions: the kernel instructions of
//! one `BPF_PROG_TEST_RUN` of one packet (a perf event of the guest driver's
//! task, kernel only; the most frequent count over many calls, so a timer
//! tick in one call does not count), and from it the instructions each
//! mechanism adds per packet; what each attributes to the program (the
//! smallest fentry-to-fexit delta, the region's minimum); the count of an
//! empty region; and programs of k known instructions (k = 0, 1, 10, 100),
//! raw and calibrated. The guest prints raw counts and maps; the region
//! statistics are the loader's (`inxpect_loader::stats`, `report`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use inxpect_loader::report::{self, Calibration, RegionReport};
use inxpect_loader::stats::Snapshot;
use inxpect_rewriter::runtime::Manifest;
use inxpect_rewriter::{instrument, Counter, Mode, Options};
use inxpect_tests as t;

use crate::vm::{exec_blocks, fields, have, map_lines, object_variant, root};
use crate::{pick_frame, prog_name};

/// The guest kernel (`tests/vm/run.sh` series).
pub const SERIES: &str = "arm64-6.12";
/// The guest of the direct per-CPU access table (Linux 7.x, its own boot).
pub const DIRECT_SERIES: &str = "arm64-7";

pub const HEADING: &str =
    "## 6. A real PMU (arm64 guest): ours vs perf's fentry/fexit, exact instruction counts";

/// Lengths of the known programs and regions (tests/vm/instr/kprog.bpf.c,
/// kinsns.bpf.c).
pub const KS: [u64; 4] = [0, 1, 10, 100];

#[derive(Clone, Debug)]
pub struct Arm64Cfg {
    /// `tests/vm/run.sh` series.
    pub series: String,
    pub apps: Vec<String>,
    /// One-packet test_run calls per configuration (each on a fresh frame).
    pub calls: u32,
    /// Runs of the k-instruction programs and of the calibration program.
    pub k_runs: u32,
}

impl Default for Arm64Cfg {
    fn default() -> Self {
        Arm64Cfg {
            series: SERIES.into(),
            apps: t::APPS.iter().map(|s| s.to_string()).collect(),
            calls: 20,
            k_runs: 500,
        }
    }
}

/// How an app is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    Base,
    /// `--sections --counter pmc`: the app's markers.
    Markers,
    /// `--functions --only <prog> --counter pmc`: one region, the program.
    Whole,
    /// The uninstrumented program under profile.bpf.c's fentry/fexit.
    Fentry,
}

impl How {
    fn tag(self) -> &'static str {
        match self {
            How::Base => "base",
            How::Markers => "pmc",
            How::Whole => "pmc-whole",
            How::Fentry => "fentry",
        }
    }
}

const HOWS: [How; 4] = [How::Base, How::Markers, How::Whole, How::Fentry];

/// What one guest command measured.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub error: Option<String>,
    pub verdict: Option<u32>,
    /// Kernel instructions of one call: the most frequent count, and in how
    /// many of the calls it was seen.
    pub call_insns: Option<(u64, usize, usize)>,
    /// fentry/fexit: the smallest fentry-to-fexit delta, and the runs.
    pub profile_min: Option<(u64, u64)>,
    /// Ours: the regions as `inxpect test-run` reports them (calibrated
    /// with the calibration program's empty region).
    pub regions: Vec<RegionReport>,
    /// Ours: runs without a counter (must be 0).
    pub no_counter: u64,
    /// Ours: the raw statistics.
    pub snapshot: Option<Snapshot>,
}

pub struct Arm64Result {
    pub kernel: String,
    pub cpu: String,
    pub cfg: Arm64Cfg,
    pub runs: BTreeMap<String, Measured>,
    pub calibration: Option<Calibration>,
    pub seconds: u64,
}

impl Arm64Result {
    pub fn get(&self, name: &str) -> Option<&Measured> {
        self.runs.get(name).filter(|m| m.error.is_none())
    }

    pub fn app(&self, app: &str, h: How) -> Option<&Measured> {
        self.get(&format!("{app}:{}", h.tag()))
    }

    /// Kernel instructions one packet's test_run gains with `h`.
    pub fn added(&self, app: &str, h: How) -> Option<i64> {
        let b = self.app(app, How::Base)?.call_insns?.0;
        let x = self.app(app, h)?.call_insns?.0;
        Some(x as i64 - b as i64)
    }

    /// The first region's raw and calibrated minimum (instructions).
    fn region_min(&self, name: &str, region: &str) -> Option<(f64, Option<f64>)> {
        let m = self.get(name)?;
        let r = if region.is_empty() {
            m.regions.first()?
        } else {
            m.regions.iter().find(|r| r.name == region)?
        };
        let e = r.events.first()?;
        Some((e.raw.min, e.calibrated.map(|c| c.min)))
    }

    /// The empty region (program code): raw minimum of the calibration
    /// program's `empty`.
    pub fn ours_noise(&self) -> Option<f64> {
        self.region_min("calib:pmc", "empty").map(|x| x.0)
    }

    /// perf's mechanism around an empty program (kprog, k = 0).
    pub fn perf_noise(&self) -> Option<u64> {
        self.get("k0:fentry")?.profile_min.map(|x| x.0)
    }
}

/// `Ok` when the section can run here, else why not.
pub fn available() -> std::result::Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root (the VM harness needs it)".into());
    }
    for tool in [
        "qemu-system-aarch64",
        "aarch64-linux-gnu-gcc",
        "clang",
        "bpftool",
        "cpio",
    ] {
        if !have(tool) {
            return Err(format!("`{tool}` not found (see .ci/install)"));
        }
    }
    Ok(())
}

/// clang -O2 -g for BPF, with the runtime's header and `defines`.
fn compile(src: &Path, out: &Path, defines: &[String]) -> Result<()> {
    let st = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()))
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .args(defines)
        .arg("-I")
        .arg(root().join("runtime-bpf/include"))
        .args(["-I", "/usr/include/x86_64-linux-gnu", "-c"])
        .arg(src)
        .arg("-o")
        .arg(out)
        .status()
        .context("clang")?;
    ensure!(st.success(), "building {} failed", src.display());
    Ok(())
}

fn instrument_pmc(input: &[u8], whole: bool) -> Result<(Vec<u8>, Manifest)> {
    let opts = Options {
        mode: if whole {
            Mode::Functions
        } else {
            Mode::Sections
        },
        counter: Counter::Pmc,
        events: 1,
        only: if whole {
            Some(vec![prog_name(input)?])
        } else {
            None
        },
        read_fn: None,
        stats: inxpect_rewriter::Stats::Inline,
        unsampled_copy: false,
        ..Options::default()
    };
    let r = instrument(input, &opts)?;
    Ok((r.object, r.manifest))
}

/// One guest command.
struct Job {
    name: String,
    args: String,
    manifest: Option<Manifest>,
    error: Option<String>,
}

struct Plan {
    dir: tempfile::TempDir,
    objs: Vec<PathBuf>,
    jobs: Vec<Job>,
}

impl Plan {
    fn file(&mut self, name: &str, bytes: &[u8]) -> Result<String> {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes)?;
        self.objs.push(p);
        Ok(format!("/objs/{name}"))
    }

    /// `run NAME OBJ ...` of the guest's bench driver; ours get the
    /// instructions event and dump their maps, fentry gets profile.o
    /// reading instructions.
    fn job(&mut self, name: String, obj: &str, how: How, extra: &str, m: Option<Manifest>) {
        let mut args = format!("{obj} --cpu 1 --count-insns{extra}");
        match how {
            // The maps only where their regions are reported (a region's
            // statistics are ~30 KB of hex on the slow serial console).
            How::Markers | How::Whole if m.is_some() => {
                args.push_str(" --events instructions --dump inxpect_stats --dump inxpect_pcpu")
            }
            How::Markers | How::Whole => args.push_str(" --events instructions"),
            How::Fentry => args.push_str(" --fentry /bpf/profile.o --fentry-event instructions"),
            How::Base => {}
        }
        self.jobs.push(Job {
            name,
            args,
            manifest: m,
            error: None,
        });
    }
}

fn plan(cfg: &Arm64Cfg) -> Result<Plan> {
    let mut p = Plan {
        dir: tempfile::tempdir()?,
        objs: Vec::new(),
        jobs: Vec::new(),
    };
    let calls = format!(" --reps 1 --trials {}", cfg.calls);
    for app in &cfg.apps {
        let variant = object_variant(app);
        let path = t::object_path(app, variant);
        let input = std::fs::read(&path).with_context(|| path.display().to_string())?;
        let (_, frame) = pick_frame(app)?;
        let mut extra = format!(" --packet {}", p.file(&format!("{app}.pkt"), &frame)?);
        let maps = map_lines(&input, app)?;
        if !maps.is_empty() {
            let f = p.file(&format!("{app}.maps"), maps.as_bytes())?;
            let _ = write!(extra, " --maps {f}");
        }
        extra.push_str(&calls);
        for how in HOWS {
            let name = format!("{app}:{}", how.tag());
            let built = match how {
                How::Base | How::Fentry => Ok((input.clone(), None)),
                // Only the one-region build's statistics are reported: the
                // markers build is measured by its calls' instructions.
                How::Markers => instrument_pmc(&input, false).map(|(o, _)| (o, None)),
                How::Whole => instrument_pmc(&input, true).map(|(o, m)| (o, Some(m))),
            };
            match built {
                Ok((bytes, m)) => {
                    let obj = p.file(&format!("{app}-{}.o", how.tag()), &bytes)?;
                    p.job(name, &obj, how, &extra, m);
                }
                Err(e) => p.jobs.push(Job {
                    name,
                    args: String::new(),
                    manifest: None,
                    error: Some(format!("not instrumented: {e:#}")),
                }),
            }
        }
    }
    let k_extra = format!(" --reps {} --trials 1", cfg.k_runs);
    // The empty region (the loader's calibration program) and regions of k
    // instructions, with the app's markers.
    for (name, src) in [
        ("calib", root().join("loader/calib/empty.bpf.o")),
        ("kinsns", p.dir.path().join("kinsns.bpf.o")),
    ] {
        if name == "kinsns" {
            compile(&root().join("tests/vm/instr/kinsns.bpf.c"), &src, &[])?;
        }
        let (bytes, m) = instrument_pmc(&std::fs::read(&src)?, false)?;
        let obj = p.file(&format!("{name}-pmc.o"), &bytes)?;
        p.job(format!("{name}:pmc"), &obj, How::Markers, &k_extra, Some(m));
    }
    // Whole programs of k instructions: perf's fentry/fexit and our one
    // region around the program.
    for k in KS {
        let src = p.dir.path().join(format!("kprog{k}.bpf.o"));
        compile(
            &root().join("tests/vm/instr/kprog.bpf.c"),
            &src,
            &[format!("-DK={k}")],
        )?;
        let input = std::fs::read(&src)?;
        let base = p.file(&format!("kprog{k}.o"), &input)?;
        p.job(format!("k{k}:fentry"), &base, How::Fentry, &k_extra, None);
        let (bytes, m) = instrument_pmc(&input, true)?;
        let obj = p.file(&format!("kprog{k}-pmc-whole.o"), &bytes)?;
        p.job(
            format!("k{k}:pmc-whole"),
            &obj,
            How::Whole,
            &k_extra,
            Some(m),
        );
    }
    Ok(p)
}

/// Runs everything in one boot of the arm64 6.12 guest.
pub fn run(cfg: &Arm64Cfg, mut progress: impl FnMut(&str)) -> Result<Arm64Result> {
    ensure!(cfg.calls >= 3 && cfg.k_runs >= 1, "need calls and runs");
    let start = std::time::Instant::now();
    let p = plan(cfg)?;
    let mut cmd = Command::new(root().join("tests/vm/run.sh"));
    cmd.arg(&cfg.series)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    for o in &p.objs {
        cmd.arg("--obj").arg(o);
    }
    cmd.arg("--cmd").arg("exec info /inxpect-vm-bench info");
    for j in p.jobs.iter().filter(|j| j.error.is_none()) {
        cmd.arg("--cmd").arg(format!(
            "exec {} /inxpect-vm-bench run {} {}",
            j.name, j.name, j.args
        ));
    }
    // A bound for a hung guest only: boot and module tests ~60 s, a
    // configuration a few seconds (its load under TCG).
    let timeout = 900 + 60 * p.jobs.len();
    cmd.env("INXPECT_VM_BUILD", p.dir.path().join("build"))
        .env("INXPECT_VM_RELOADS", "2")
        .env("INXPECT_VM_TIMEOUT", timeout.to_string())
        // Exact kernel counts: no random offset of the syscall stack (it
        // changes a syscall's instructions by up to ~15).
        .env("INXPECT_VM_APPEND", "randomize_kstack_offset=off");
    progress(&format!(
        "vm-arm64: tests/vm/run.sh {} ({} commands, timeout {timeout}s)",
        cfg.series,
        p.jobs.len()
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
    let mut r = parse(&stdout, &p.jobs, cfg)?;
    r.seconds = start.elapsed().as_secs();
    Ok(r)
}

/// The most frequent value, how often, of how many.
fn mode(v: &[u64]) -> Option<(u64, usize, usize)> {
    let mut h: BTreeMap<u64, usize> = BTreeMap::new();
    for x in v {
        *h.entry(*x).or_default() += 1;
    }
    // Ties: the smaller count (a tick only adds).
    let (x, n) = h.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
    Some((*x, *n, v.len()))
}

/// One command's lines -> what it measured (regions without calibration).
fn measure(job: &Job, rc: i32, lines: &[String], cal: Option<&Calibration>) -> Measured {
    let mut m = Measured::default();
    let mut insns = Vec::new();
    // (map, key) -> per-CPU values
    let mut maps: BTreeMap<(String, Vec<u8>), Vec<Vec<u8>>> = BTreeMap::new();
    for l in lines {
        if let Some(r) = l.strip_prefix("INXPECT-BENCH-ERROR ") {
            m.error.get_or_insert_with(|| r.to_string());
        } else if let Some(r) = l.strip_prefix("INXPECT-BENCH-PROFILE ") {
            let f = fields(r);
            let get = |k: &str| f.get(k).and_then(|v| v.parse().ok());
            if let (Some(min), Some(runs)) = (get("min"), get("runs")) {
                m.profile_min = Some((min, runs));
            }
        } else if let Some(r) = l.strip_prefix("INXPECT-BENCH ") {
            let f = fields(r);
            m.verdict = f.get("retval").and_then(|v| v.parse().ok());
            if let Some(n) = f.get("insns").and_then(|v| v.parse().ok()) {
                insns.push(n);
            }
        } else if let Some(r) = l.strip_prefix("INXPECT-VM-MAP ") {
            let f = fields(r);
            if let (Some(map), Some(k), Some(v)) = (
                f.get("map"),
                f.get("key").and_then(|k| t::vm_value(k)),
                f.get("value").and_then(|v| t::vm_value(v)),
            ) {
                maps.entry((map.to_string(), k)).or_default().push(v);
            }
        }
    }
    if rc != 0 && m.error.is_none() {
        m.error = Some(format!("guest driver exit status {rc}"));
    }
    m.call_insns = mode(&insns);
    if let Some(man) = &job.manifest {
        match Snapshot::from_percpu_maps(man, |map, key| {
            maps.get(&(map.to_string(), key.to_ne_bytes().to_vec()))
                .cloned()
                .unwrap_or_default()
        }) {
            Ok(snap) => {
                m.no_counter = snap.runs.no_counter;
                m.regions =
                    report::regions(man, &snap, |_| true, &["instructions".to_string()], cal);
                m.snapshot = Some(snap);
            }
            Err(e) => {
                m.error.get_or_insert_with(|| format!("maps: {e:#}"));
            }
        }
    }
    m
}

fn parse(stdout: &str, jobs: &[Job], cfg: &Arm64Cfg) -> Result<Arm64Result> {
    let execs = exec_blocks(stdout);
    let info = stdout
        .lines()
        .find_map(|l| l.strip_prefix("INXPECT-BENCH-INFO kernel="))
        .context("the guest printed no INXPECT-BENCH-INFO")?;
    let kernel = info.split_whitespace().next().unwrap_or("").to_string();
    // The calibration first: every other region is calibrated by it, as
    // `inxpect test-run` does.
    let calibration = jobs.iter().find(|j| j.name == "calib:pmc").and_then(|j| {
        let (rc, lines) = execs.get(&j.name)?;
        let m = measure(j, *rc, lines, None);
        let snap = m.snapshot.filter(|_| m.error.is_none())?;
        Calibration::from_regions(j.manifest.as_ref()?, &snap, 1)
    });
    let mut runs = BTreeMap::new();
    for j in jobs {
        let m = match (&j.error, execs.get(&j.name)) {
            (Some(e), _) => Measured {
                error: Some(e.clone()),
                ..Default::default()
            },
            (None, None) => Measured {
                error: Some("did not run in the guest".into()),
                ..Default::default()
            },
            (None, Some((rc, lines))) => measure(j, *rc, lines, calibration.as_ref()),
        };
        runs.insert(j.name.clone(), m);
    }
    let cpu = std::env::var("INXPECT_VM_CPU").unwrap_or_else(|_| "max".into());
    Ok(Arm64Result {
        kernel,
        cpu,
        cfg: cfg.clone(),
        runs,
        calibration,
        seconds: 0,
    })
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

fn signed(v: Option<i64>) -> String {
    v.map(|x| format!("{x:+}")).unwrap_or_else(|| "-".into())
}

/// Bar chart: instructions added per packet, per app and mechanism.
pub fn plot(r: &Arm64Result) -> String {
    let groups: Vec<crate::report::Group> = r
        .cfg
        .apps
        .iter()
        .map(|app| {
            let bars = [
                (How::Markers, "ours pmc, markers"),
                (How::Whole, "ours pmc, one region"),
                (How::Fentry, "perf fentry/fexit"),
            ]
            .iter()
            .filter_map(|(h, n)| Some((n.to_string(), r.added(app, *h)? as f64)))
            .collect();
            (app.clone(), bars)
        })
        .collect();
    crate::report::bar_chart(
        "arm64 instructions added per packet (real PMU, exact)",
        "instructions / packet",
        &groups,
        &[],
    )
}

/// The report section (without its heading); `img` is the plot's path
/// relative to the report.
pub fn section(r: &Arm64Result, notes: &str, img: Option<&str>) -> String {
    let mut s = String::new();
    s.push_str(notes);
    let _ = writeln!(
        s,
        "\nThis run: guest Linux {} (`qemu-system-aarch64 -M virt -cpu {} -icount shift=0 -smp 2`, \
         `randomize_kstack_offset=off`, bench pinned to CPU 1), apps {}, {} one-packet calls per \
         configuration, {} runs of each k program; {} s including the boot and the module tests.\n",
        r.kernel,
        r.cpu,
        r.cfg.apps.join(", "),
        r.cfg.calls,
        r.cfg.k_runs,
        r.seconds
    );
    if let Some(img) = img {
        let _ = writeln!(s, "![arm64 instructions added per packet]({img})\n");
    }
    s.push_str("### Per app (arm64 instructions, exact)\n\n");
    s.push_str(
        "| app | verdict | kernel insns per one-packet test_run, uninstrumented (calls agreeing) | added: ours `pmc` markers | added: ours `pmc` one region | added: perf's fentry/fexit | attributed to the program: ours one region, raw min | calibrated | perf's fentry-to-fexit, min | minus perf's empty program |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let perf0 = r.perf_noise();
    for app in &r.cfg.apps {
        let errs: Vec<String> = HOWS
            .iter()
            .filter_map(|h| {
                let m = r.runs.get(&format!("{app}:{}", h.tag()))?;
                m.error
                    .as_ref()
                    .map(|e| format!("{}: {}", h.tag(), e.replace('|', "/")))
            })
            .collect();
        let base = r.app(app, How::Base);
        let whole = r.region_min(&format!("{app}:pmc-whole"), "");
        let fentry = r.app(app, How::Fentry).and_then(|m| m.profile_min);
        // Every mechanism must leave the verdict alone.
        let verdicts: Vec<Option<u32>> = HOWS
            .iter()
            .filter_map(|h| r.app(app, *h).map(|m| m.verdict))
            .collect();
        let verdict = match verdicts.first() {
            Some(Some(v)) if verdicts.iter().all(|x| x == &Some(*v)) => {
                crate::report::verdict(*v).to_string()
            }
            Some(_) => "differs".into(),
            None => "-".into(),
        };
        let _ = writeln!(
            s,
            "| {app} | {verdict} | {} | {} | {} | {} | {} | {} | {} | {} |",
            base.and_then(|m| m.call_insns)
                .map(|(x, n, of)| format!("{x} ({n}/{of})"))
                .unwrap_or_else(|| "-".into()),
            signed(r.added(app, How::Markers)),
            signed(r.added(app, How::Whole)),
            signed(r.added(app, How::Fentry)),
            opt(whole.map(|x| x.0)),
            opt(whole.and_then(|x| x.1)),
            opt(fentry.map(|x| x.0)),
            opt(fentry.zip(perf0).map(|((f, _), z)| f as i64 - z as i64)),
        );
        if !errs.is_empty() {
            let _ = writeln!(
                s,
                "| {app} | not run: {} | | | | | | | | |",
                errs.join("; ")
            );
        }
    }
    s.push_str("\n### Noise: an empty region\n\n");
    s.push_str(
        "| mechanism | instructions counted between the two reads, min | target |\n|---|---:|---|\n",
    );
    let _ = writeln!(
        s,
        "| ours `pmc`: the calibration program's empty region (`loader/calib/empty.bpf.c`) | {} | <= 10 (x86: section 5) |",
        opt(r.ours_noise())
    );
    let _ = writeln!(
        s,
        "| ours `pmc`: region k0 of `kinsns` (between two other regions) | {} | |",
        opt(r.region_min("kinsns:pmc", "k0").map(|x| x.0))
    );
    let _ = writeln!(
        s,
        "| perf's fentry/fexit around an empty XDP program (`kprog`, k = 0: `r0 = 2; exit`) | {} | |",
        opt(perf0)
    );
    s.push_str("\n### k instructions: a line per k\n\n");
    s.push_str(
        "Exact means: ours calibrated = k (markers around k instructions); for whole programs of k \
         instructions, each mechanism's count minus its own count at k = 0 = k (the k = 0 program \
         still runs `r0 = 2; exit`: ours calibrated counts its `r0 = 2`, 1).\n\n\
         | k | ours markers (region kN of `kinsns`): raw min | calibrated min | ours one region around a k-instruction program: raw min | calibrated min | minus k = 0 | perf's fentry/fexit on that program: min | minus k = 0 |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let f0 = r.get("k0:fentry").and_then(|m| m.profile_min);
    let w0 = r.region_min("k0:pmc-whole", "");
    let mark = |v: Option<f64>, k: u64| match v {
        Some(x) if x == k as f64 => format!("{x} (exact)"),
        Some(x) => format!("{x} (**off by {}**)", x - k as f64),
        None => "-".into(),
    };
    for k in KS {
        let m = r.region_min("kinsns:pmc", &format!("k{k}"));
        let w = r.region_min(&format!("k{k}:pmc-whole"), "");
        let f = r.get(&format!("k{k}:fentry")).and_then(|m| m.profile_min);
        let _ = writeln!(
            s,
            "| {k} | {} | {} | {} | {} | {} | {} | {} |",
            opt(m.map(|x| x.0)),
            mark(m.and_then(|x| x.1), k),
            opt(w.map(|x| x.0)),
            opt(w.and_then(|x| x.1)),
            mark(w.zip(w0).map(|(a, b)| a.0 - b.0), k),
            opt(f.map(|x| x.0)),
            mark(f.zip(f0).map(|(a, b)| a.0 as f64 - b.0 as f64), k),
        );
    }
    if let Some(c) = &r.calibration {
        let _ = writeln!(
            s,
            "\nCalibration offset {} (the empty region's minimum over {} runs, as `inxpect test-run` \
             calibrates).",
            c.offset.first().copied().unwrap_or(0.0),
            c.samples
        );
    }
    let nc: Vec<&String> = r
        .runs
        .iter()
        .filter(|(_, m)| m.no_counter > 0)
        .map(|(n, _)| n)
        .collect();
    if !nc.is_empty() {
        let _ = writeln!(s, "\n**Runs without a counter** in: {nc:?}.");
    }
    s
}

/// [`run`] on the [`DIRECT_SERIES`] guest, with `cfg` otherwise; the error
/// as text (the table says why it is missing).
pub fn run_direct(
    cfg: &Arm64Cfg,
    progress: impl FnMut(&str),
) -> std::result::Result<Arm64Result, String> {
    let direct = Arm64Cfg {
        series: DIRECT_SERIES.into(),
        ..cfg.clone()
    };
    run(&direct, progress).map_err(|e| format!("{e:#}"))
}

/// The same apps on the [`DIRECT_SERIES`] guest, whose kernel resolves the
/// per-CPU state's look-ups to direct access (the guest's driver makes
/// them direct, as the loader does): instructions added per packet on both
/// kernels, each against its own uninstrumented run.
pub fn direct_table(
    main: &Arm64Result,
    direct: &std::result::Result<Arm64Result, String>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n### Direct per-CPU access (Linux 7.x arm64, its own boot)\n"
    );
    let d = match direct {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(s, "Not run: {}.", e.replace('\n', " "));
            return s;
        }
    };
    let _ = writeln!(
        s,
        "Guest Linux {} (`-cpu {}`, {} s). Added kernel instructions per one-packet test_run, exact, \
         each against its own kernel's uninstrumented run.\n",
        d.kernel, d.cpu, d.seconds
    );
    let _ = writeln!(
        s,
        "| app | ours `pmc` markers, {k0} (look-up) | {k1} (direct) | difference | ours `pmc` one region, {k0} | {k1} | difference | perf's fentry/fexit, {k0} | {k1} |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|",
        k0 = main.kernel,
        k1 = d.kernel
    );
    let diff = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:+}", b - a),
        _ => "-".into(),
    };
    for app in &main.cfg.apps {
        let (m0, m1) = (main.added(app, How::Markers), d.added(app, How::Markers));
        let (w0, w1) = (main.added(app, How::Whole), d.added(app, How::Whole));
        let _ = writeln!(
            s,
            "| {app} | {} | {} | {} | {} | {} | {} | {} | {} |",
            signed(m0),
            signed(m1),
            diff(m0, m1),
            signed(w0),
            signed(w1),
            diff(w0, w1),
            signed(main.added(app, How::Fentry)),
            signed(d.added(app, How::Fentry)),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_prefers_the_most_frequent_then_the_smaller() {
        assert_eq!(mode(&[5, 7, 5, 9]), Some((5, 2, 4)));
        // A tie: the smaller (an interrupt only adds).
        assert_eq!(mode(&[9, 7]), Some((7, 1, 2)));
        assert_eq!(mode(&[]), None);
    }

    #[test]
    fn measure_reads_calls_profile_and_errors() {
        let job = Job {
            name: "drop:fentry".into(),
            args: String::new(),
            manifest: None,
            error: None,
        };
        let lines: Vec<String> = [
            "INXPECT-BENCH name=drop:fentry id=2 repeat=1 trial=0 retval=1 duration_ns=9 insns=4423",
            "INXPECT-BENCH name=drop:fentry id=3 repeat=1 trial=1 retval=1 duration_ns=9 insns=11423",
            "INXPECT-BENCH name=drop:fentry id=4 repeat=1 trial=2 retval=1 duration_ns=9 insns=4423",
            "INXPECT-BENCH-PROFILE name=drop:fentry runs=4 counter_delta=2100 min=522",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let m = measure(&job, 0, &lines, None);
        assert_eq!(m.error, None);
        assert_eq!(m.verdict, Some(1));
        assert_eq!(m.call_insns, Some((4423, 2, 3)));
        assert_eq!(m.profile_min, Some((522, 4)));
        let bad = measure(&job, 1, &lines[..1], None);
        assert_eq!(bad.error.as_deref(), Some("guest driver exit status 1"));
    }
}
