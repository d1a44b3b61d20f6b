//! `inxpect test-run`: every frame of a pcap through BPF_PROG_TEST_RUN, and
//! the calibration run shared with `inxpect run`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::IsTerminal;

use anyhow::{Context, Result};
use inxpect_rewriter::Mode;
use libbpf_rs::ProgramInput;

use crate::object::{self, Kind, Loaded};
use crate::Backend;
use inxpect_loader::pcap;
use inxpect_loader::report::{Calibration, NestCost};
use inxpect_rewriter::runtime::Manifest;

/// The committed calibration program (loader/calib/empty.bpf.c).
const EMPTY: &[u8] = include_bytes!("../calib/empty.bpf.o");
/// The committed nesting calibration (loader/calib/nest.bpf.c).
const NEST: &[u8] = include_bytes!("../calib/nest.bpf.o");
/// Runs of the empty region: enough for a stable mean, ~1 ms of test_run each.
pub const CALIBRATION_RUNS: u32 = 20_000;
/// `bpf_xdp_adjust_head/tail` may grow a frame; room for the output copy.
const OUT_SLACK: usize = 512;
/// For XDP, a test run with repeat > 1 swaps the program into the XDP
/// dispatcher and back, which waits for RCU: ~25 ms per call measured here,
/// against a few µs per repeat-1 call. Below this many repeats a loop of
/// single runs is faster; the program sees the same runs either way.
const KERNEL_REPEAT_MIN: u32 = 8192;

/// Keeps a test run on one CPU: the runtime's sampling counter is per CPU,
/// so `1/K` picks exactly every K-th frame only if all run on the same one.
pub fn pin_to_current_cpu() -> Result<()> {
    // SAFETY: plain syscalls on a zeroed cpu_set_t.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return Err(std::io::Error::last_os_error()).context("sched_getcpu");
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}

fn prog<'a>(l: &'a Loaded) -> Result<libbpf_rs::ProgramMut<'a>> {
    l.obj
        .progs_mut()
        .find(|p| p.name() == OsStr::new(&l.prog))
        .context("program vanished")
}

/// Runs `frame` `repeat` times; returns the verdict.
pub fn run_frame(l: &Loaded, frame: &[u8], repeat: u32) -> Result<u32> {
    let p = prog(l)?;
    let mut out = vec![0u8; frame.len() + OUT_SLACK];
    let input = ProgramInput {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    };
    let res = p.test_run(input).context("BPF_PROG_TEST_RUN")?;
    Ok(res.return_value)
}

/// XDP actions, or tc's `TC_ACT_*` for a classifier (test_run returns
/// TC_ACT_UNSPEC, -1, as 0xffffffff).
pub fn verdict_name(kind: Kind, v: u32) -> String {
    let name = match (kind, v) {
        (Kind::Xdp, 0) => "ABORTED",
        (Kind::Xdp, 1) => "DROP",
        (Kind::Xdp, 2) => "PASS",
        (Kind::Xdp, 3) => "TX",
        (Kind::Xdp, 4) => "REDIRECT",
        (Kind::Tc, u32::MAX) => "UNSPEC",
        (Kind::Tc, 0) => "OK",
        (Kind::Tc, 1) => "RECLASSIFY",
        (Kind::Tc, 2) => "SHOT",
        (Kind::Tc, 3) => "PIPE",
        (Kind::Tc, 4) => "STOLEN",
        (Kind::Tc, 5) => "QUEUED",
        (Kind::Tc, 6) => "REPEAT",
        (Kind::Tc, 7) => "REDIRECT",
        (_, n) => return format!("{n}"),
    };
    name.into()
}

/// Why an skb BPF_PROG_TEST_RUN (a tc program) cannot run a frame: the
/// kernel refuses (EINVAL) a frame shorter than the IPv4 or IPv6 header its
/// ethertype announces (34 or 54 bytes), where XDP takes any frame of 14;
/// and one longer than its single buffer (`linear`, XDP's measured size,
/// which the skb one is close to: no tc frags in test_run either).
pub fn tc_unrunnable(f: &[u8], linear: usize) -> Option<String> {
    let et = f.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let need = match et {
        Some(0x0800) => 34,
        Some(0x86dd) => 54,
        _ => ETH_HLEN,
    };
    if f.len() < need {
        Some(match et {
            Some(e) if need > ETH_HLEN => format!(
                "shorter than the {need} bytes (Ethernet and {} header) an skb test run of a tc program requires for ethertype {e:#06x}",
                if e == 0x0800 { "IPv4" } else { "IPv6" }
            ),
            _ => format!("shorter than the {ETH_HLEN}-byte Ethernet header BPF_PROG_TEST_RUN requires"),
        })
    } else if f.len() > linear {
        Some(format!(
            "longer than the {linear} bytes this kernel runs in one buffer"
        ))
    } else {
        None
    }
}

/// What a test run did with a capture's frames.
pub struct RunAll {
    /// Verdict name -> frames (per frame, not per repeat).
    pub verdicts: BTreeMap<String, u64>,
    /// Frames the kernel cannot run, in file order.
    pub skipped: Vec<pcap::Skipped>,
}

/// XDP's Ethernet minimum: BPF_PROG_TEST_RUN refuses shorter input (EINVAL).
const ETH_HLEN: usize = 14;

/// Why BPF_PROG_TEST_RUN cannot run a frame of `len` bytes as the program
/// would see it on a device, if it cannot. `linear` is the kernel's
/// single-buffer size ([`linear_max`]): a program without frags support is
/// only handed that much of a longer frame, which no device would give it.
pub fn unrunnable(len: usize, linear: usize, frags: bool) -> Option<String> {
    if len < ETH_HLEN {
        Some(format!(
            "shorter than the {ETH_HLEN}-byte Ethernet header BPF_PROG_TEST_RUN requires"
        ))
    } else if !frags && len > linear {
        Some(format!(
            "longer than the {linear} bytes this kernel runs in one buffer; the program \
             has no frags support (section \"xdp.frags\"), so it would see only the first {linear}"
        ))
    } else {
        None
    }
}

/// Runs every frame of `cap` that the kernel can run; the others are
/// removed from `cap`, told on stderr and returned. `after` runs after each
/// frame (the `--jsonl` stream's clock).
pub fn run_all(
    l: &Loaded,
    cap: &mut pcap::Capture,
    repeat: u32,
    mut after: impl FnMut() -> Result<()>,
) -> Result<RunAll> {
    let total = cap.frames.len();
    let frags = has_frags(&prog(l)?);
    let linear = linear_max()?;
    let mut skipped = cap.skip(|f| match l.kind {
        Kind::Xdp => unrunnable(f.len(), linear, frags),
        Kind::Tc => tc_unrunnable(f, linear),
    });
    // A bar only where someone watches (stderr a terminal: never inside the
    // report on stdout), and only once the run has taken a second
    // (INXPECT_PROGRESS_AFTER_MS sets that delay: the tests' runs are fast).
    let delay = std::env::var("INXPECT_PROGRESS_AFTER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_millis,
        );
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::with_draw_target(
            Some(cap.frames.len() as u64),
            indicatif::ProgressDrawTarget::hidden(),
        );
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} frames x {msg} runs, {elapsed} elapsed, {eta} left",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(repeat.to_string());
        b
    });
    let t0 = std::time::Instant::now();
    let mut shown = false;
    let mut verdicts = BTreeMap::new();
    let mut too_long = Vec::new();
    for (i, f) in cap.frames.iter().enumerate() {
        let v = if repeat >= KERNEL_REPEAT_MIN {
            run_frame(l, &f.data, repeat)
        } else {
            (0..repeat).try_fold(0, |_, _| run_frame(l, &f.data, 1))
        };
        if let Some(b) = &bar {
            b.inc(1);
            if !shown && t0.elapsed() >= delay {
                b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                shown = true;
            }
        }
        let v = match v {
            Ok(v) => v,
            // A frags program's frame past the kernel's fragment limit
            // (MAX_SKB_FRAGS pages): refused before the program runs.
            Err(e) if frags && f.data.len() > linear && errno(&e) == Some(libc::ENOMEM) => {
                too_long.push(i);
                continue;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "{}: frame {} ({} bytes)",
                    cap.path.display(),
                    f.number,
                    f.data.len()
                )))
            }
        };
        *verdicts.entry(verdict_name(l.kind, v)).or_insert(0) += 1;
        after()?;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    for i in too_long.into_iter().rev() {
        let f = cap.frames.remove(i);
        skipped.push(pcap::Skipped {
            frame: f.number,
            bytes: f.data.len(),
            reason: "longer than BPF_PROG_TEST_RUN takes on this kernel (ENOMEM: more \
                     fragments than MAX_SKB_FRAGS)"
                .into(),
        });
    }
    skipped.sort_by_key(|s| s.frame);
    for line in pcap::skipped_lines(&cap.path, &skipped, total, 10, " (--json lists every one)") {
        object::log::note(&line);
    }
    Ok(RunAll { verdicts, skipped })
}

/// libbpf loads `xdp.frags` sections with BPF_F_XDP_HAS_FRAGS but keeps
/// that out of the program's own flags.
fn has_frags(p: &libbpf_rs::ProgramMut) -> bool {
    let sec = p.section().to_string_lossy();
    sec == "xdp.frags"
        || sec.starts_with("xdp.frags/")
        || p.flags() & libbpf_sys::BPF_F_XDP_HAS_FRAGS != 0
}

fn errno(e: &anyhow::Error) -> Option<i32> {
    e.chain().find_map(|c| {
        c.downcast_ref::<libbpf_rs::Error>()
            .and_then(|e| match e.kind() {
                libbpf_rs::ErrorKind::OutOfMemory => Some(libc::ENOMEM),
                _ => None,
            })
            .or_else(|| {
                c.downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::raw_os_error)
            })
    })
}

/// The bytes of a frame BPF_PROG_TEST_RUN puts in an XDP program's one
/// buffer on this kernel (a page less headroom and skb_shared_info: 3520 on
/// x86-64 6.x), measured: a 5-instruction program returns `data_end - data`
/// for an 8 KiB frame. Measured once per process.
pub fn linear_max() -> Result<usize> {
    static LINEAR: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if let Some(v) = LINEAR.get() {
        return Ok(*v);
    }
    let v = measure_linear()?;
    Ok(*LINEAR.get_or_init(|| v))
}

fn measure_linear() -> Result<usize> {
    // BPF instruction words (little-endian layout: code, dst | src << 4,
    // off, imm). Subtracting packet pointers needs CAP_PERFMON, which a
    // test run (CAP_BPF + CAP_SYS_ADMIN here) has.
    const fn insn(code: u8, dst: u8, src: u8, off: i16) -> u64 {
        code as u64 | ((dst | (src << 4)) as u64) << 8 | (off as u16 as u64) << 16
    }
    let prog: [u64; 5] = [
        insn(0x61, 2, 1, 4), // r2 = *(u32 *)(r1 + 4): data_end
        insn(0x61, 3, 1, 0), // r3 = *(u32 *)(r1 + 0): data
        insn(0xbf, 0, 2, 0), // r0 = r2
        insn(0x1f, 0, 3, 0), // r0 -= r3
        insn(0x95, 0, 0, 0), // exit
    ];
    #[cfg(target_endian = "big")]
    compile_error!("measure_linear encodes little-endian BPF instructions");
    // SAFETY: a valid program of 5 instructions, no options.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_XDP,
            c"inxpect_linear".as_ptr(),
            c"GPL".as_ptr(),
            prog.as_ptr().cast(),
            prog.len() as _,
            std::ptr::null_mut(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd))
            .context("loading the 5-instruction program that measures test_run's buffer");
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let frame = vec![0u8; 8192];
    let mut out = vec![0u8; frame.len()];
    // SAFETY: zeroed options with their size, buffers valid for their lengths.
    let mut o: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
    o.sz = std::mem::size_of_val(&o) as _;
    o.data_in = frame.as_ptr().cast();
    o.data_size_in = frame.len() as u32;
    o.data_out = out.as_mut_ptr().cast();
    o.data_size_out = out.len() as u32;
    o.repeat = 1;
    // SAFETY: as above; the fd is a loaded XDP program.
    let rc =
        unsafe { libbpf_sys::bpf_prog_test_run_opts(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut o) };
    if rc < 0 {
        return Err(std::io::Error::from_raw_os_error(-rc))
            .context("measuring test_run's buffer with an 8 KiB frame");
    }
    Ok(o.retval as usize)
}

/// Measures the empty regions (program code, subprogram) with the same
/// backend: their minimum per event is what the probes themselves add,
/// subtracted in the calibrated columns.
pub fn calibrate(b: &Backend) -> Result<Calibration> {
    let prep = object::prepare_bytes(
        EMPTY.to_vec(),
        "calibration (loader/calib/empty.bpf.o)",
        b.counter,
        true,
        b.nr_events(),
        Mode::Sections,
        object::Code {
            stats: b.stats,
            unsampled_copy: false,
        },
    )?;
    let mut l = object::load(&prep, Some("xdp_empty"), b.perf.as_ref())?;
    object::configure(&l, 0, None)?;
    // A minimal Ethernet frame: the empty programs never look at it.
    let frame = [0u8; 64];
    for p in ["xdp_empty", "xdp_word"] {
        l.prog = p.into();
        run_frame(&l, &frame, CALIBRATION_RUNS).with_context(|| format!("calibration run: {p}"))?;
    }
    let s = object::snapshot(&l)?;
    Calibration::from_regions(&l.manifest, &s, b.nr_events())
        .context("calibration object lost its region `empty`")
}

/// Adds to `cal` what a child region's probes cost the region around it
/// (loader/calib/nest.bpf.c), when some region of `m` runs inside another.
pub fn calibrate_nesting(mut cal: Calibration, b: &Backend, m: &Manifest) -> Result<Calibration> {
    if m.regions.iter().all(|r| r.parents.is_empty()) {
        return Ok(cal);
    }
    let what = "nesting calibration (loader/calib/nest.bpf.o)";
    let prep = object::prepare_bytes(
        NEST.to_vec(),
        what,
        b.counter,
        true,
        b.nr_events(),
        Mode::Sections,
        object::Code {
            stats: b.stats,
            unsampled_copy: false,
        },
    )?;
    let mut l = object::load(&prep, Some("nest_alone"), b.perf.as_ref())?;
    object::configure(&l, 0, None)?;
    let frame = [0u8; 64];
    for p in [
        "nest_alone",
        "nest_inline",
        "nest_call",
        "nest_plain",
        "nest_alone_busy",
        "nest_inline_busy",
        "nest_call_busy",
        "nest_plain_busy",
        "nest_alone_slow",
        "nest_inline_slow",
        "nest_alone_slow_busy",
        "nest_inline_slow_busy",
        "nest_alone_word",
        "nest_inline_word",
        "nest_alone_word_busy",
        "nest_inline_word_busy",
    ] {
        l.prog = p.into();
        run_frame(&l, &frame, CALIBRATION_RUNS).with_context(|| format!("{what}: {p}"))?;
    }
    let s = object::snapshot(&l)?;
    let n = NestCost::from_calibration(&l.manifest, &s, b.nr_events())
        .with_context(|| format!("{what} lost a region"))?;
    cal.nested = Some(n);
    Ok(cal)
}
