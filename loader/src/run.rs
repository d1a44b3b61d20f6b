//! `inxpect run` (attach, live view, clean detach), `inxpect set` (runtime
//! control through pinned maps) and `inxpect replay` (send frames).

use std::ffi::CString;
use std::fs;
use std::io::Write as _;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use inxpect_rewriter::runtime::{self, Manifest};
use std::os::fd::AsFd;

use crate::object::{self, log::note, Config, Kind, Loaded};
use crate::state::{self, PIN_ROOT};
use crate::tc::{self, TcDir, TcHook};
use crate::{backend, load_for, netdev, testrun, Backend, Common};
use inxpect_loader::jsonl;
use inxpect_loader::report::{self, Format, LiveInfo, Report};
use inxpect_loader::stats::{Runs, Snapshot};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpMode {
    /// In the driver (XDP_FLAGS_DRV_MODE): the mode that is measured in production.
    Native,
    /// In the kernel's generic path (XDP_FLAGS_SKB_MODE): any device, slower.
    Generic,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// The network device to attach to.
    #[arg(long)]
    dev: String,
    /// Network namespace (a name under /run/netns) holding the device.
    #[arg(long)]
    netns: Option<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "native")]
    mode: XdpMode,
    /// Attach a tc classifier (sched_cls) at this hook instead of XDP.
    #[arg(long, value_enum)]
    tc: Option<TcDir>,
    /// How to attach at tc: a tcx link (Linux 6.6+), a cls_bpf filter on a
    /// clsact qdisc, or auto (tcx where the kernel has it).
    #[arg(long, value_enum, default_value = "auto", requires = "tc")]
    tc_hook: TcHook,
    #[command(flatten)]
    session: SessionArgs,
}

/// The live view, its endpoint, and where `inxpect set` finds the session:
/// shared by run and attach.
#[derive(Args)]
pub struct SessionArgs {
    /// Live table period (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s")]
    pub interval: String,
    /// Stop after this long (default: until SIGINT/SIGTERM).
    #[arg(long)]
    pub duration: Option<String>,
    /// Where to pin the config and stats maps (default /sys/fs/bpf/inxpect/<dev>,
    /// <dev>-tc-<hook> for tc).
    #[arg(long)]
    pub pin_dir: Option<PathBuf>,
    /// Measure in time windows, ON of every PERIOD (e.g. 10ms/1s; each
    /// window at a random offset in its period): the instrumented build is
    /// swapped in for ON, the original back for the rest, so packets between
    /// windows run the program as it was and cost nothing; `--sample` still
    /// applies inside a window.
    #[arg(long, value_name = "ON/PERIOD")]
    pub window: Option<String>,
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
}

impl SessionArgs {
    /// `--window`, parsed.
    pub fn windows(&self) -> Result<Option<crate::window::Windows>> {
        self.window
            .as_deref()
            .map(crate::window::Windows::parse)
            .transpose()
    }
}

/// Replaces `from` with `to` on a bpf_link (XDP or tcx), atomically, and
/// only if `from` is the program attached.
pub fn link_replace(link: BorrowedFd<'_>, from: i32, to: i32) -> Result<()> {
    let o = libbpf_sys::bpf_link_update_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_update_opts>() as _,
        flags: libbpf_sys::BPF_F_REPLACE,
        old_prog_fd: from as u32,
        ..Default::default()
    };
    // SAFETY: valid fds and opts.
    let rc = unsafe { libbpf_sys::bpf_link_update(link.as_raw_fd(), to, &o) };
    if rc < 0 {
        bail!(
            "bpf_link_update: {}",
            std::io::Error::from_raw_os_error(-rc)
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct SetArgs {
    /// The device `inxpect run` is attached to (optional when only one runs).
    #[arg(long)]
    dev: Option<String>,
    /// The network namespace given to that `inxpect run` (needed only when
    /// runs in two namespaces use the same device name).
    #[arg(long)]
    netns: Option<String>,
    /// The tc hook of the session (`run --tc` / `attach --tc`).
    #[arg(long, value_enum, requires = "dev")]
    tc: Option<TcDir>,
    /// The directory holding the pinned `config` map (the run's --pin-dir).
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// Measure one run in K from now on (K a power of two), as `1/K` or `K`.
    #[arg(long)]
    sample: Option<String>,
    /// Regions to enable (names or ids).
    #[arg(long)]
    enable: Option<String>,
    /// Regions to disable (names or ids).
    #[arg(long)]
    disable: Option<String>,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// The network device to send the frames out of (its peer receives them).
    #[arg(long)]
    dev: String,
    /// Network namespace (a name under /run/netns) holding the device.
    #[arg(long)]
    netns: Option<String>,
    /// Frames to send (cycled with --count); default: one UDP/IPv4 frame.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Frames to send in all (default: each pcap frame once, or 1).
    #[arg(long)]
    count: Option<u64>,
}

/// `10s`, `500ms`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("bad duration {s:?} (e.g. 10s, 500ms)"))?;
    if !(v.is_finite() && v > 0.0) {
        bail!("bad duration {s:?}: must be positive");
    }
    Ok(Duration::from_secs_f64(v * mul))
}

/// Moves this thread into a named network namespace (as `ip netns exec`
/// would, but keeping the host's /sys/fs/bpf for the pins).
pub fn enter_netns(name: &str) -> Result<()> {
    let p = Path::new("/run/netns").join(name);
    let f = fs::File::open(&p)
        .with_context(|| format!("no network namespace {name:?} ({})", p.display()))?;
    // SAFETY: a namespace fd and a valid nstype.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("entering netns {name}"));
    }
    Ok(())
}

pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// The XDP program id on `ifindex` (0: none), in any mode.
pub fn xdp_prog_on(ifindex: u32) -> Result<u32> {
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as _,
        ..Default::default()
    };
    // SAFETY: opts is sized and initialised.
    let rc = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut opts) };
    if rc < 0 {
        bail!(
            "querying XDP on ifindex {ifindex}: {}",
            std::io::Error::from_raw_os_error(-rc)
        );
    }
    Ok(opts
        .prog_id
        .max(opts.drv_prog_id)
        .max(opts.skb_prog_id)
        .max(opts.hw_prog_id))
}

/// The pins and state file of a run, removed on drop even on error paths.
#[derive(Default)]
pub struct Pins {
    pins: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Pins {
    pub fn remove(&mut self) {
        for p in self.pins.drain(..) {
            let _ = fs::remove_file(&p);
        }
        for d in self.dirs.drain(..).rev() {
            let _ = fs::remove_dir(&d);
        }
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        self.remove();
    }
}

/// What `run` attached, detached on drop even on error paths.
enum Attachment {
    /// An XDP or tcx bpf_link: closing it detaches.
    Link(OwnedFd),
    /// A cls_bpf filter (kernels without tcx): removed by hand.
    Clsact(tc::Filter),
}

struct Attached {
    what: Option<Attachment>,
    ifindex: u32,
    tc: Option<TcDir>,
    prog_id: u32,
}

impl Attached {
    fn detach(&mut self) -> Result<()> {
        match self.what.take() {
            Some(Attachment::Clsact(mut f)) => f.detach()?,
            Some(Attachment::Link(l)) => drop(l),
            None => {}
        }
        if !netdev::exists(self.ifindex) {
            // Deleted with our program on it: nothing is left to check.
            return Ok(());
        }
        match self.tc {
            None => {
                let left = xdp_prog_on(self.ifindex)?;
                if left != 0 {
                    bail!("an XDP program (id {left}) is still attached after detaching");
                }
            }
            Some(dir) => {
                // Only ours: another tcx program may share the hook.
                if tc::tcx_query(self.ifindex, dir)?
                    .progs
                    .contains(&self.prog_id)
                {
                    bail!(
                        "our tc program (id {}) is still attached at {} after detaching",
                        self.prog_id,
                        dir.name()
                    );
                }
            }
        }
        Ok(())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if self.what.is_some() {
            let _ = self.detach();
        }
    }
}

fn attach(prog_fd: i32, ifindex: u32, mode: XdpMode, dev: &str) -> Result<OwnedFd> {
    let flags = match mode {
        XdpMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
        XdpMode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
    };
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
        flags,
        ..Default::default()
    };
    // A bpf_link rather than a netlink attach: the kernel detaches it when
    // the last fd closes, so even a killed inxpect leaves nothing behind.
    // SAFETY: valid fds and opts.
    let fd =
        unsafe { libbpf_sys::bpf_link_create(prog_fd, ifindex as i32, libbpf_sys::BPF_XDP, &opts) };
    if fd < 0 {
        let e = std::io::Error::from_raw_os_error(-fd);
        let hint = match -fd {
            libc::EOPNOTSUPP => format!(": {dev} has no native XDP support; try --mode generic"),
            libc::EBUSY | libc::EEXIST => {
                format!(
                    ": {}",
                    netdev::busy_hint(dev, xdp_prog_on(ifindex).unwrap_or(0))
                )
            }
            _ => String::new(),
        };
        bail!("attaching to {dev}: {e}{hint}");
    }
    // SAFETY: a new link fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The interval's first line: runs, their rate (with `--window`, per
/// second of the interval that a window was open), sampled runs.
fn runs_line(now: Runs, prev: Runs, elapsed: f64, secs: f64, measured: Option<f64>) -> String {
    let runs = now.runs.saturating_sub(prev.runs);
    let rate = match measured {
        None => format!("{:.0}/s", runs as f64 / secs.max(1e-9)),
        Some(w) => format!(
            "{w:.2}s of it in windows, {:.0}/s while measured",
            runs as f64 / w.max(1e-9)
        ),
    };
    format!(
        "[{elapsed:7.1}s] runs {} (+{runs} in {secs:.1}s, {rate})  sampled {}",
        now.runs, now.sampled
    )
}

/// The live table of one interval. `measured`: with `--window`, the
/// seconds of the interval a window was open, which the rate is of (the
/// runs between windows ran the original, uncounted).
#[allow(clippy::too_many_arguments)]
fn interval_table(
    m: &Manifest,
    now: &Snapshot,
    prev: &Snapshot,
    elapsed: f64,
    secs: f64,
    measured: Option<f64>,
    unit: &str,
    enabled: impl Fn(u32) -> bool,
) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}",
        runs_line(now.runs, prev.runs, elapsed, secs, measured)
    );
    // As wide as the longest name: a long one must not shift the columns.
    let names: Vec<String> = m
        .regions
        .iter()
        .map(crate::object::display_name_in(m))
        .collect();
    let w = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(16);
    let u = |h: &str| format!("{h}[{unit}]");
    let _ = writeln!(
        o,
        "  {:<w$} {:>10} {:>10} {:>12} {:>12} {:>12}",
        "REGION",
        "COUNT",
        "+COUNT",
        u("MEAN"),
        u("+MEAN"),
        u("+P99")
    );
    // No measurement: no mean (`-`), not 0.
    let cell = |count: u64, v: f64| {
        if count == 0 {
            "-".to_string()
        } else {
            format!("{v:.1}")
        }
    };
    for (((r, name), n), p) in m
        .regions
        .iter()
        .zip(&names)
        .zip(&now.regions)
        .zip(&prev.regions)
    {
        let d = n.since(p);
        let _ = writeln!(
            o,
            "  {:<w$} {:>10} {:>10} {:>12} {:>12} {:>12}{}",
            name,
            n.count,
            d.count,
            cell(n.count, n.mean(0)),
            cell(d.count, d.mean(0)),
            cell(d.count, d.quantile(0, 0.99)),
            if enabled(r.id) { "" } else { "  off" }
        );
    }
    o
}

fn describe(m: &Manifest, c: &Config) -> String {
    let on: Vec<String> = m
        .regions
        .iter()
        .filter(|r| c.is_enabled(r.id))
        .map(crate::object::display_name_in(m))
        .collect();
    format!(
        "sample 1/{}, enabled: {}",
        1u64 << c.sample_shift,
        if on.is_empty() {
            "none".into()
        } else {
            on.join(",")
        }
    )
}

/// Names a session's pins and state file: state's key, `-tc-<hook>` for tc.
pub fn key(dev: &str, netns: Option<&str>, tc: Option<TcDir>) -> String {
    let mut k = state::key(dev, netns);
    if let Some(t) = tc {
        k.push_str("-tc-");
        k.push_str(t.name());
    }
    k
}

/// Where a session pins its maps for `inxpect set` and whether it can: a
/// --pin-dir off a BPF filesystem is an error (before anything is loaded).
pub fn pin_plan(dir: Option<&Path>, k: &str) -> Result<(PathBuf, bool)> {
    let pin_dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(PIN_ROOT).join(k));
    let pinning = match dir {
        Some(d) => {
            let at = inxpect_loader::sys::existing_ancestor(d);
            if !inxpect_loader::sys::is_bpffs(&at) {
                bail!(
                    "--pin-dir {}: {} is not on a BPF filesystem, where maps can be pinned: pick a directory under /sys/fs/bpf (or mount one: `mount -t bpf bpf DIR`)",
                    d.display(),
                    at.display()
                );
            }
            true
        }
        None => inxpect_loader::sys::is_bpffs(Path::new("/sys/fs/bpf")),
    };
    Ok((pin_dir, pinning))
}

/// Writes the state file and pins the config and stats maps for `inxpect
/// set`; all removed when the result drops.
pub fn pin_for_set(
    l: &Loaded,
    k: &str,
    dev: &str,
    netns: Option<&str>,
    (pin_dir, pinning): (PathBuf, bool),
) -> Result<Pins> {
    let mut pins = Pins::default();
    if !pinning {
        note("no bpf filesystem at /sys/fs/bpf: maps not pinned, `inxpect set` unavailable");
        return Ok(pins);
    }
    state::sweep();
    // The state before the pins: a run starting meanwhile sees ours live.
    match state::write(k, &l.manifest, dev, netns, &pin_dir) {
        Ok(p) => pins.pins.push(p),
        Err(e) => note(&format!(
            "{e:#}: `inxpect set` will not know the region names"
        )),
    }
    pin_maps(l, &pin_dir, &mut pins)?;
    Ok(pins)
}

pub fn run(a: RunArgs) -> Result<()> {
    let c = &a.common;
    let live = Live::parse(&a.session)?;
    // Bound before entering --netns: scrapers reach it from the caller's
    // namespace.
    let endpoint = crate::live::Endpoint::start(&a.session.live)?;
    if let Some(ns) = &a.netns {
        enter_netns(ns)?;
    }
    let ifindex = netdev::ifindex(&a.dev, a.netns.as_deref())?;
    let k = key(&a.dev, a.netns.as_deref(), a.tc);
    let plan = pin_plan(a.session.pin_dir.as_deref(), &k)?;
    let windows = a.session.windows()?;
    let bytes = crate::read_obj(&c.obj)?;
    // The program between windows is the object as it is.
    let original = windows.map(|_| bytes.clone());
    let b = backend(c, &bytes)?;
    let cal = if c.no_calibrate {
        None
    } else {
        Some(testrun::calibrate(&b)?)
    };
    let kind = if a.tc.is_some() { Kind::Tc } else { Kind::Xdp };
    let (l, cfg0) = load_for(c, &b, bytes, Some(kind))?;
    // The program between windows, loaded before anything is attached, so
    // that a refusal changes nothing.
    let between = match windows.zip(original) {
        Some((w, bytes)) => {
            if a.tc_hook == TcHook::Clsact {
                bail!(crate::window::NO_LINK);
            }
            let orig = object::load_original(&bytes, &c.obj.display().to_string(), &l)?;
            let p = orig
                .progs()
                .find(|p| p.name() == std::ffi::OsStr::new(&l.prog))
                .context("the original program vanished")?;
            // The program lives as long as this fd, the object may go.
            Some((w, p.as_fd().try_clone_to_owned()?))
        }
        None => None,
    };
    let fd = l.prog_fd()?.as_raw_fd();
    let prog_id = libbpf_rs::Program::id_from_fd(l.prog_fd()?)?;
    catch_signals();
    let mut att = Attached {
        what: None,
        ifindex,
        tc: a.tc,
        prog_id,
    };
    let mode = match a.tc {
        None => {
            att.what = Some(Attachment::Link(attach(fd, ifindex, a.mode, &a.dev)?));
            format!("{:?}", a.mode).to_lowercase()
        }
        Some(dir) => match tc::attach(fd, ifindex, dir, a.tc_hook, &a.dev)? {
            tc::Attachment::Tcx(link) => {
                att.what = Some(Attachment::Link(link));
                format!("tcx-{}", dir.name())
            }
            tc::Attachment::Clsact(f) => {
                att.what = Some(Attachment::Clsact(f));
                format!("clsact-{}", dir.name())
            }
        },
    };
    let pins = pin_for_set(&l, &k, &a.dev, a.netns.as_deref(), plan)?;
    note(&format!(
        "attached {} to {} ({mode}); {}",
        l.prog,
        a.dev,
        describe(&l.manifest, &cfg0)
    ));
    let mut s = Session::new("run", c, &l, &b, cal, &a.dev, ifindex, mode)?;
    // Declared after `att`, so dropped (stopped) before it detaches.
    let mut cycler = match between {
        Some((w, ofd)) => {
            // `--tc-hook auto` may have fallen back to a cls_bpf filter.
            let link = match &att.what {
                Some(Attachment::Link(link)) => link.try_clone()?,
                _ => bail!(crate::window::NO_LINK),
            };
            let nfd = l.prog_fd()?.try_clone_to_owned()?;
            let (l2, o2, n2) = (link.try_clone()?, ofd.try_clone()?, nfd.try_clone()?);
            let cy = crate::window::Cycler::start(
                w,
                move || link_replace(link.as_fd(), ofd.as_raw_fd(), nfd.as_raw_fd()),
                move || link_replace(l2.as_fd(), n2.as_raw_fd(), o2.as_raw_fd()),
            )?;
            note(&w.describe());
            s.set_windows(cy.probe());
            Some(cy)
        }
        None => None,
    };
    let w = s.watch(&live, &cfg0, endpoint.as_ref())?;
    if let Some(m) = cycler.as_mut().and_then(|c| c.stop().warning()) {
        note(&m);
    }
    att.detach()?;
    drop(pins);
    if w.gone {
        note(&format!("{} was deleted during the run", a.dev));
    } else {
        note(&format!("detached from {}", a.dev));
    }
    s.finish(w)
}

/// The live view's period and length.
pub struct Live {
    interval: Duration,
    duration: Option<Duration>,
}

impl Live {
    pub fn parse(a: &SessionArgs) -> Result<Live> {
        Ok(Live {
            interval: parse_duration(&a.interval)?,
            duration: a.duration.as_deref().map(parse_duration).transpose()?,
        })
    }
}

/// A live session (`run`, `attach`): the loaded program and how to report it.
pub struct Session<'a> {
    command: &'static str,
    c: &'a Common,
    l: &'a Loaded,
    b: &'a Backend,
    cal: Option<report::Calibration>,
    dev: String,
    ifindex: u32,
    mode: String,
    unit: String,
    names: Vec<String>,
    out: crate::outputs::Final,
    window: Option<crate::window::Probe>,
}

/// Where the live view stopped: what `finish` needs for the last window.
pub struct Watched {
    /// The device went away (with the program on it) during the session.
    pub gone: bool,
    secs: f64,
    prev: Snapshot,
    last: Instant,
    seq: u64,
}

impl<'a> Session<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        command: &'static str,
        c: &'a Common,
        l: &'a Loaded,
        b: &'a Backend,
        cal: Option<report::Calibration>,
        dev: &str,
        ifindex: u32,
        mode: String,
    ) -> Result<Session<'a>> {
        let cal = cal
            .map(|k| testrun::calibrate_nesting(k, b, &l.manifest))
            .transpose()?;
        Ok(Session {
            command,
            c,
            l,
            b,
            cal,
            dev: dev.to_string(),
            ifindex,
            mode,
            unit: crate::unit(b),
            names: b.event_names(),
            out: crate::outputs::Final::new(c)?,
            window: None,
        })
    }

    /// Reports say when the instrumented build was attached (`--window`).
    pub fn set_windows(&mut self, p: crate::window::Probe) {
        self.window = Some(p);
    }

    fn report_of(&self, snap: &Snapshot, cfg: &Config, secs: f64) -> Report {
        let (c, l, b) = (self.c, self.l, self.b);
        Report {
            schema: report::SCHEMA,
            command: self.command.into(),
            object: c.obj.display().to_string(),
            program: l.prog.clone(),
            counter: b.counter.name().into(),
            unit: self.unit.clone(),
            events: self.names.clone(),
            sample: 1u64 << cfg.sample_shift,
            unsampled_copy: l.manifest.copied.contains(&l.prog),
            pcpu_direct: matches!(l.pcpu, inxpect_loader::pcpu::Access::Direct(_)),
            runs: snap.runs,
            test_run: None,
            live: Some(LiveInfo {
                device: self.dev.clone(),
                mode: self.mode.clone(),
                seconds: secs,
                window: self.window.as_ref().map(|w| w.info()),
            }),
            regions: report::regions(
                &l.manifest,
                snap,
                |id| cfg.is_enabled(id),
                &self.names,
                self.cal.as_ref(),
            ),
            calibration: self.cal.clone(),
            tree: None,
        }
    }

    fn stream(&self, seq: u64) -> jsonl::Stream<'_> {
        let mut s = jsonl::Stream::new(
            self.command,
            &self.l.prog,
            &self.unit,
            &self.names,
            &self.l.manifest,
            self.cal.as_ref(),
        );
        s.seq = seq;
        s
    }

    /// Prints a table every interval (to stdout for the table format, else
    /// stderr), `--jsonl` lines, answers the endpoint, until SIGINT/SIGTERM
    /// or the duration.
    pub fn watch(
        &self,
        live: &Live,
        cfg0: &Config,
        endpoint: Option<&crate::live::Endpoint>,
    ) -> Result<Watched> {
        let (c, l) = (self.c, self.l);
        let live_to_stdout = c.format() == Format::Table && !c.out.jsonl;
        let cmap = l.config_map()?;
        let start = Instant::now();
        let mut stream = self.stream(0);
        let mut prev = object::snapshot(l)?;
        let mut last = Instant::now();
        let mut cfg_prev = cfg0.clone();
        let mut measured_prev = 0.0;
        let mut gone = false;
        while !STOP.load(Ordering::SeqCst) {
            if live.duration.is_some_and(|d| start.elapsed() >= d) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            if let Some(e) = endpoint {
                e.answer(|| {
                    let snap = object::snapshot(l)?;
                    let cfg = object::read_config(&cmap)?;
                    Ok((
                        self.report_of(&snap, &cfg, start.elapsed().as_secs_f64()),
                        snap,
                    ))
                })?;
            }
            if last.elapsed() < live.interval {
                continue;
            }
            let now = object::snapshot(l)?;
            let cfg = object::read_config(&cmap)?;
            let mut text = String::new();
            if !gone && !netdev::exists(self.ifindex) {
                // The kernel detached the program with the device; counts stop.
                gone = true;
                text.push_str(&format!(
                    "inxpect: warning: device {} (ifindex {}) is gone: the program was detached with it, nothing more is measured (SIGINT/SIGTERM ends with the report)\n",
                    self.dev, self.ifindex
                ));
            }
            if cfg != cfg_prev {
                text.push_str(&format!(
                    "inxpect: config changed: {}\n",
                    describe(&l.manifest, &cfg)
                ));
                cfg_prev = cfg.clone();
            }
            let secs = last.elapsed().as_secs_f64();
            let measured = self.window.as_ref().map(|w| {
                let m = w.tally().measured.as_secs_f64();
                let d = m - measured_prev;
                measured_prev = m;
                d
            });
            text.push_str(&interval_table(
                &l.manifest,
                &now,
                &prev,
                start.elapsed().as_secs_f64(),
                secs,
                measured,
                &self.unit,
                |id| cfg.is_enabled(id),
            ));
            if live_to_stdout {
                print!("{text}");
                let _ = std::io::stdout().flush();
            } else {
                eprint!("{text}");
            }
            if c.out.jsonl {
                jsonl::emit(&stream.line(
                    &now,
                    &prev,
                    start.elapsed().as_secs_f64(),
                    secs,
                    1u64 << cfg.sample_shift,
                    |id| cfg.is_enabled(id),
                ))?;
            }
            prev = now;
            last = Instant::now();
        }
        Ok(Watched {
            gone,
            secs: start.elapsed().as_secs_f64(),
            prev,
            last,
            seq: stream.seq,
        })
    }

    /// Prints the report, read once the program is detached (or swapped
    /// out) and every run of it has finished: one consistent snapshot of
    /// all its runs, not a read racing the traffic.
    pub fn finish(&self, w: Watched) -> Result<()> {
        wait_for_running_programs();
        let snap = object::snapshot(self.l)?;
        let cfg = object::read_config(&self.l.config_map()?)?;
        if self.c.out.jsonl {
            // The last window, so that the lines add up to the report.
            jsonl::emit(&self.stream(w.seq).line(
                &snap,
                &w.prev,
                w.secs,
                w.last.elapsed().as_secs_f64(),
                1u64 << cfg.sample_shift,
                |id| cfg.is_enabled(id),
            ))?;
        }
        let r = self.report_of(&snap, &cfg, w.secs);
        self.out.print(&r, &self.l.manifest)
    }
}

/// Waits for an RCU grace period: XDP and tc programs run inside RCU
/// read-side sections, so a run of a program detached before this call has
/// finished when it returns. membarrier(MEMBARRIER_CMD_GLOBAL) is
/// synchronize_rcu() in the kernel.
pub fn wait_for_running_programs() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: a plain syscall without pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc < 0 {
        // No membarrier: runs take microseconds; leave them ample time.
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pin_maps(l: &object::Loaded, dir: &Path, att: &mut Pins) -> Result<()> {
    // Pins of a killed run were swept (state::sweep); ours replace any left.
    for n in state::PINS {
        let _ = fs::remove_file(dir.join(n));
    }
    let mut missing = Vec::new();
    let mut d = dir.to_path_buf();
    while !d.exists() {
        missing.push(d.clone());
        if !d.pop() {
            break;
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    att.dirs.extend(missing.into_iter().rev());
    for (n, mut m) in [
        ("config", l.config_map()?),
        ("stats", l.map(runtime::MAP_STATS)?),
        // The first regions' statistics are partly in it (pcpu::fast).
        ("pcpu", l.map(runtime::MAP_PCPU)?),
    ] {
        let p = dir.join(n);
        let _ = &mut m;
        pin(&m, &p)?;
        att.pins.push(p);
    }
    Ok(())
}

fn pin(m: &libbpf_rs::Map<'_>, p: &Path) -> Result<()> {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).context("pin path with NUL")?;
    // SAFETY: a map fd and a NUL-terminated path.
    let rc = unsafe { libbpf_sys::bpf_obj_pin(m.as_fd().as_raw_fd(), c.as_ptr()) };
    if rc < 0 {
        bail!(
            "pinning {}: {}",
            p.display(),
            std::io::Error::from_raw_os_error(-rc)
        );
    }
    Ok(())
}

/// The run `set` talks to: by --pin-dir, or by --dev (and --netns), or
/// the only one.
fn pick_run(a: &SetArgs) -> Result<(PathBuf, String, Option<Manifest>)> {
    let runs = state::list();
    if let Some(d) = &a.pin_dir {
        let same = |p: &Path| p.canonicalize().ok() == d.canonicalize().ok();
        let st = runs.into_iter().find(|s| same(&s.pin_dir));
        if let Some(s) = &st {
            check_live(s)?;
        }
        let k = d.display().to_string();
        return Ok((d.clone(), k, st.and_then(|s| s.manifest)));
    }
    let chosen: Vec<state::RunState> = runs
        .into_iter()
        .filter(|s| a.dev.as_ref().is_none_or(|d| s.dev.as_ref() == Some(d)))
        .filter(|s| a.netns.is_none() || s.netns == a.netns)
        .filter(|s| {
            a.tc.is_none_or(|t| s.key.ends_with(&format!("-tc-{}", t.name())))
        })
        .collect();
    let names = |v: &[state::RunState]| v.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ");
    let s = match (chosen.len(), &a.dev) {
        (1, _) => chosen.into_iter().next().expect("one"),
        (0, None) => bail!(
            "no `inxpect run` is running (no state under {})",
            state::STATE_ROOT
        ),
        (0, Some(d)) => {
            let others = state::list();
            bail!(
                "no `inxpect run` on {d}{}{}",
                a.netns
                    .as_ref()
                    .map(|n| format!(" in netns {n}"))
                    .unwrap_or_default(),
                if others.is_empty() {
                    String::new()
                } else {
                    format!(" (runs: {})", names(&others))
                }
            )
        }
        (_, None) => bail!(
            "several `inxpect run`s ({}): pick one with --dev (and --netns)",
            names(&chosen)
        ),
        (_, Some(d)) => bail!(
            "several `inxpect run`s on {d} ({}): pick one with --netns",
            names(&chosen)
        ),
    };
    check_live(&s)?;
    let n = s.name();
    Ok((s.pin_dir, n, s.manifest))
}

/// Refuses the leftovers of a killed run: its maps still exist (pinned),
/// but no program uses them any more.
fn check_live(s: &state::RunState) -> Result<()> {
    if s.is_live() {
        return Ok(());
    }
    bail!(
        "the `inxpect run` on {} is gone ({}), killed without cleaning up: its pins under {} are stale (the next `inxpect run` removes them); nothing changed",
        s.name(),
        s.pid
            .map(|p| format!("pid {p} has ended"))
            .unwrap_or_else(|| "no pid recorded".into()),
        s.pin_dir.display()
    )
}

pub fn set(a: SetArgs) -> Result<()> {
    let (dir, k, manifest) = pick_run(&a)?;
    let cfg_pin = dir.join("config");
    if !cfg_pin.exists() {
        bail!("no running `inxpect run` pinned {}", cfg_pin.display());
    }
    let map = libbpf_rs::MapHandle::from_pinned_path(&cfg_pin)
        .with_context(|| format!("opening {}", cfg_pin.display()))?;
    let mut c = object::read_config(&map)?;
    let ids = |list: &str| -> Result<Vec<u32>> {
        match &manifest {
            Some(m) => object::region_ids(m, list),
            None => list
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<u32>()
                        .with_context(|| format!("no manifest for {k}: give region ids, not {s:?}"))
                })
                .collect(),
        }
    };
    if let Some(s) = &a.sample {
        c.sample_shift = crate::parse_sample(s)?;
    }
    if let Some(l) = &a.enable {
        for id in ids(l)? {
            c.set_enabled(id, true);
        }
    }
    if let Some(l) = &a.disable {
        for id in ids(l)? {
            c.set_enabled(id, false);
        }
    }
    object::write_config(&map, &c)?;
    match &manifest {
        Some(m) => println!("inxpect: {k}: {}", describe(m, &c)),
        None => println!("inxpect: {k}: sample 1/{}", 1u64 << c.sample_shift),
    }
    Ok(())
}

/// Why the device refused a frame as too large: its MTU (SIOCGIFMTU on
/// `sock`, in the device's namespace) against the frame's size.
fn mtu_reason(sock: i32, dev: &str) -> String {
    // SAFETY: a zeroed ifreq with a NUL-terminated name; SIOCGIFMTU only
    // writes ifr_mtu.
    let mtu = unsafe {
        let mut r: libc::ifreq = std::mem::zeroed();
        for (d, s) in r
            .ifr_name
            .iter_mut()
            .zip(dev.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = s as libc::c_char;
        }
        (libc::ioctl(sock, libc::SIOCGIFMTU, &mut r) == 0).then_some(r.ifr_ifru.ifru_mtu)
    };
    match mtu {
        Some(m) => format!(
            "larger than {dev}'s MTU {m} + 14-byte Ethernet header ({} bytes)",
            m + 14
        ),
        None => format!("larger than {dev} sends (EMSGSIZE: above its MTU)"),
    }
}

/// A broadcast UDP/IPv4 frame (60 bytes): every XDP program sees it.
fn default_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend([0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let ip = [
        0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 1, 2, 3,
    ];
    f.extend(ip);
    f.extend([0x30, 0x39, 0x00, 0x35, 0, 26, 0, 0]);
    f.resize(60, 0);
    f
}

pub fn replay(a: ReplayArgs) -> Result<()> {
    if let Some(ns) = &a.netns {
        enter_netns(ns)?;
    }
    let idx = netdev::ifindex(&a.dev, a.netns.as_deref())?;
    let (path, frames) = match &a.pcap {
        Some(p) => (p.clone(), inxpect_loader::pcap::read(p)?.frames),
        None => (
            PathBuf::from("default frame"),
            vec![inxpect_loader::pcap::Frame {
                number: 1,
                data: default_frame(),
            }],
        ),
    };
    if frames.is_empty() {
        bail!("no frames to send");
    }
    let count = a.count.unwrap_or(frames.len() as u64);
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket syscall.
    let s = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if s < 0 {
        return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
    }
    // SAFETY: we own the new socket.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: zeroed sockaddr_ll filled with the device.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = idx as i32;
    sa.sll_halen = 6;
    let mut sent = 0u64;
    // Frames the device refuses as larger than its MTU (EMSGSIZE): skipped
    // once, never retried when --count cycles through them again.
    let mut refused = vec![false; frames.len()];
    let mut skipped = Vec::new();
    for i in 0..count {
        let k = (i % frames.len() as u64) as usize;
        if refused[k] {
            continue;
        }
        let f = &frames[k].data;
        // SAFETY: f and sa are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EMSGSIZE) {
                refused[k] = true;
                skipped.push(inxpect_loader::pcap::Skipped {
                    frame: frames[k].number,
                    bytes: f.len(),
                    reason: mtu_reason(sock.as_raw_fd(), &a.dev),
                });
                continue;
            }
            return Err(e).with_context(|| {
                format!(
                    "sending frame {} ({} bytes) of {} on {}",
                    frames[k].number,
                    f.len(),
                    path.display(),
                    a.dev
                )
            });
        }
        sent += 1;
    }
    skipped.sort_by_key(|s| s.frame);
    for line in inxpect_loader::pcap::skipped_lines(&path, &skipped, frames.len(), 10, "") {
        object::log::note(&line);
    }
    if let Some(max) = skipped.iter().map(|s| s.bytes).max() {
        object::log::note(&format!(
            "`ip link set dev {} mtu {}`{} would send every frame",
            a.dev,
            max - 14,
            a.netns
                .as_ref()
                .map(|n| format!(" (in netns {n})"))
                .unwrap_or_default()
        ));
    }
    println!("inxpect: sent {sent} frames on {}", a.dev);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(runs: u64, sampled: u64) -> Runs {
        Runs {
            runs,
            sampled,
            no_counter: 0,
        }
    }

    /// With `--window` the rate is of the time a window was open: the
    /// packets between windows ran the original and are not in `runs`.
    #[test]
    fn the_rate_is_per_measured_second_in_windows() {
        let (now, prev) = (runs(1500, 1500), runs(500, 500));
        assert_eq!(
            runs_line(now, prev, 3.0, 1.0, None),
            "[    3.0s] runs 1500 (+1000 in 1.0s, 1000/s)  sampled 1500"
        );
        assert_eq!(
            runs_line(now, prev, 3.0, 1.0, Some(0.1)),
            "[    3.0s] runs 1500 (+1000 in 1.0s, 0.10s of it in windows, 10000/s while measured)  sampled 1500"
        );
    }
}
