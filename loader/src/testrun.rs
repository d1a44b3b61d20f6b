//! `inxpect test-run`: every frame of a pcap through BPF_PROG_TEST_RUN, and
//! the calibration run shared with `inxpect run`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::IsTerminal;

use anyhow::{Context, Result};
use inxpect_rewriter::Mode;
use libbpf_rs::ProgramInput;

use crate::object::{self, Loaded};
use crate::Backend;
use inxpect_loader::report::Calibration;

/// The committed calibration program (loader/calib/empty.bpf.c).
const EMPTY: &[u8] = include_bytes!("../calib/empty.bpf.o");
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

pub fn verdict_name(v: u32) -> String {
    match v {
        0 => "ABORTED".into(),
        1 => "DROP".into(),
        2 => "PASS".into(),
        3 => "TX".into(),
        4 => "REDIRECT".into(),
        n => format!("{n}"),
    }
}

/// Runs all frames; returns verdict counts (per frame, not per repeat).
pub fn run_all(l: &Loaded, frames: &[Vec<u8>], repeat: u32) -> Result<BTreeMap<String, u64>> {
    let total = frames.len() as u64 * u64::from(repeat);
    // A bar only where someone watches, and only when it takes a while.
    let bar = (std::io::stderr().is_terminal() && total >= 200_000).then(|| {
        let b = indicatif::ProgressBar::new(frames.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} frames {elapsed}/{eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut verdicts = BTreeMap::new();
    for (i, f) in frames.iter().enumerate() {
        let v = if repeat >= KERNEL_REPEAT_MIN {
            run_frame(l, f, repeat)
        } else {
            (0..repeat).try_fold(0, |_, _| run_frame(l, f, 1))
        }
        .with_context(|| format!("frame {i}"))?;
        *verdicts.entry(verdict_name(v)).or_insert(0) += 1;
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(verdicts)
}

/// Measures an empty region with the same backend: the mean per event is
/// what the probes themselves add, subtracted in the calibrated columns.
pub fn calibrate(b: &Backend) -> Result<Calibration> {
    let prep = object::prepare_bytes(
        EMPTY.to_vec(),
        "calibration (loader/calib/empty.bpf.o)",
        b.counter,
        true,
        b.nr_events(),
        Mode::Sections,
    )?;
    let l = object::load(&prep, None, b.perf.as_ref())?;
    object::configure(&l, 0, None)?;
    // A minimal Ethernet frame: the empty program never looks at it.
    let frame = [0u8; 64];
    run_frame(&l, &frame, CALIBRATION_RUNS).context("calibration run")?;
    let s = object::snapshot(&l)?;
    let r = s
        .regions
        .first()
        .context("calibration object lost its region")?;
    Ok(Calibration {
        offset: (0..b.nr_events()).map(|e| r.mean(e)).collect(),
        samples: r.count,
    })
}
