//! `--jsonl`: one JSON object per interval on stdout, schema
//! [`SCHEMA`] (loader/README.md), with the values since the start
//! (`total`) and since the previous line (`interval`). The intervals' values
//! add up to the totals: every line's `interval` is taken against the
//! snapshot the previous line was taken from.

use serde::Serialize;

use inxpect_rewriter::runtime::Manifest;

use crate::report::{display_name_in, Calibration};
use crate::stats::{RegionStats, Runs, Snapshot};

pub const SCHEMA: &str = "inxpect-interval/1";

#[derive(Serialize, Debug, Clone)]
pub struct Interval {
    pub schema: &'static str,
    /// `run` or `test-run`.
    pub command: String,
    pub program: String,
    /// 0, 1, 2, ... per line.
    pub seq: u64,
    /// Seconds since the start of the run.
    pub elapsed_s: f64,
    /// Seconds this line covers.
    pub interval_s: f64,
    pub unit: String,
    pub events: Vec<String>,
    /// The sampling period at this line (1 run in `sample`).
    pub sample: u64,
    pub total: Runs,
    pub interval: Runs,
    pub regions: Vec<RegionLine>,
}

#[derive(Serialize, Debug, Clone)]
pub struct RegionLine {
    pub id: u32,
    pub name: String,
    pub function: String,
    pub enabled: bool,
    pub total: Window,
    pub interval: Window,
}

/// A region's numbers over a window of time.
#[derive(Serialize, Debug, Clone)]
pub struct Window {
    pub count: u64,
    pub invalid: u64,
    pub tail_ends: u64,
    /// One per event, in the order of `events`.
    pub events: Vec<EventWindow>,
}

#[derive(Serialize, Debug, Clone)]
pub struct EventWindow {
    pub sum: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// p99.9
    pub p999: f64,
    /// `mean` minus the calibration offset (null: uncalibrated or no count).
    pub calibrated_mean: Option<f64>,
}

fn window(s: &RegionStats, nev: usize, cal: Option<&[f64]>) -> Window {
    Window {
        count: s.count,
        invalid: s.invalid,
        tail_ends: s.tail_ends,
        events: (0..nev)
            .map(|e| EventWindow {
                sum: s.sum[e],
                mean: s.mean(e),
                p50: s.quantile(e, 0.5),
                p90: s.quantile(e, 0.9),
                p99: s.quantile(e, 0.99),
                p999: s.quantile(e, 0.999),
                calibrated_mean: cal
                    .and_then(|c| c.get(e))
                    .filter(|_| s.count > 0)
                    .map(|o| s.mean(e) - o),
            })
            .collect(),
    }
}

fn runs_since(now: &Runs, prev: &Runs) -> Runs {
    Runs {
        runs: now.runs.saturating_sub(prev.runs),
        sampled: now.sampled.saturating_sub(prev.sampled),
        no_counter: now.no_counter.saturating_sub(prev.no_counter),
    }
}

/// What a stream needs besides the snapshots.
pub struct Stream<'a> {
    pub command: &'a str,
    pub program: &'a str,
    pub unit: &'a str,
    pub events: &'a [String],
    pub manifest: &'a Manifest,
    pub calibration: Option<&'a Calibration>,
    /// Lines written so far.
    pub seq: u64,
}

impl<'a> Stream<'a> {
    pub fn new(
        command: &'a str,
        program: &'a str,
        unit: &'a str,
        events: &'a [String],
        manifest: &'a Manifest,
        calibration: Option<&'a Calibration>,
    ) -> Stream<'a> {
        Stream {
            command,
            program,
            unit,
            events,
            manifest,
            calibration,
            seq: 0,
        }
    }

    /// The line for the window from `prev` to `now`.
    pub fn line(
        &mut self,
        now: &Snapshot,
        prev: &Snapshot,
        elapsed_s: f64,
        interval_s: f64,
        sample: u64,
        enabled: impl Fn(u32) -> bool,
    ) -> Interval {
        let m = self.manifest;
        let nev = self.events.len();
        let regions = m
            .regions
            .iter()
            .zip(&now.regions)
            .zip(
                prev.regions
                    .iter()
                    .chain(std::iter::repeat(&RegionStats::default())),
            )
            .map(|((r, n), p)| {
                let off = self
                    .calibration
                    .map(|c| c.for_region(r, self.events).offset);
                RegionLine {
                    id: r.id,
                    name: display_name_in(m)(r),
                    function: r.function.clone(),
                    enabled: enabled(r.id),
                    total: window(n, nev, off.as_deref()),
                    interval: window(&n.since(p), nev, off.as_deref()),
                }
            })
            .collect();
        let line = Interval {
            schema: SCHEMA,
            command: self.command.into(),
            program: self.program.into(),
            seq: self.seq,
            elapsed_s,
            interval_s,
            unit: self.unit.into(),
            events: self.events.to_vec(),
            sample,
            total: now.runs,
            interval: runs_since(&now.runs, &prev.runs),
            regions,
        };
        self.seq += 1;
        line
    }
}

/// Writes one line to stdout and flushes (a reader sees each interval when
/// it ends).
pub fn emit(line: &Interval) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, line)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
