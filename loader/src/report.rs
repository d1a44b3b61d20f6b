//! The report: one versioned structure, printed as a table, JSON or CSV.
//! The JSON schema is described in loader/README.md; bump [`SCHEMA`] on any
//! incompatible change.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use inxpect_rewriter::runtime::{Manifest, RegionDesc, Site, Window};
use serde::Serialize;

use crate::stats::{RegionStats, Runs, Snapshot};

pub const SCHEMA: &str = "inxpect-report/3";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub schema: &'static str,
    /// `test-run` or `run`.
    pub command: String,
    pub object: String,
    pub program: String,
    pub counter: String,
    pub unit: String,
    /// Names of the measured events, one per value in `regions[].events`.
    pub events: Vec<String>,
    /// 1 run in `sample` is measured.
    pub sample: u64,
    /// The program's sampled-out runs take its uninstrumented copy
    /// (`--unsampled-copy`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unsampled_copy: bool,
    /// The probes address this CPU's state with `ld_imm64`, no look-up
    /// (Linux 7.x; see `inxpect_loader::pcpu`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pcpu_direct: bool,
    #[serde(flatten)]
    pub runs: Runs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_run: Option<TestRunInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveInfo>,
    pub calibration: Option<Calibration>,
    pub regions: Vec<RegionReport>,
    /// The region tree (self and total per region), when regions nest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree: Option<Vec<crate::tree::Node>>,
}

#[derive(Serialize, Debug, Clone)]
pub struct TestRunInfo {
    pub pcap: String,
    /// Frames run (the file's frames less `skipped`).
    pub frames: u64,
    pub repeat: u32,
    /// Verdict name -> frames (counted once per frame, not per repeat).
    pub verdicts: BTreeMap<String, u64>,
    /// Frames of the file the kernel cannot run (too short, too long).
    pub skipped: u64,
    /// Each of them: frame number (from 1), size and reason.
    pub skipped_frames: Vec<crate::pcap::Skipped>,
}

#[derive(Serialize, Debug, Clone)]
pub struct LiveInfo {
    pub device: String,
    pub mode: String,
    pub seconds: f64,
    /// `--window`: when the instrumented build was attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowInfo>,
}

/// `--window ON/PERIOD`: the instrumented build ran for ON of every
/// PERIOD, the original (uncounted) the rest of the time.
#[derive(Serialize, Debug, Clone)]
pub struct WindowInfo {
    pub on_seconds: f64,
    pub period_seconds: f64,
    /// Windows opened, the one still open included.
    pub opened: u64,
    /// Time the instrumented build was attached: `runs` are the packets
    /// of that time only.
    pub measured_seconds: f64,
    /// Why the windows stopped before the session did (a swap failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// `0.01` as `10 ms`, `2` as `2 s`.
fn seconds_text(s: f64) -> String {
    if s < 1.0 {
        format!("{} ms", (s * 1e6).round() / 1e3)
    } else {
        format!("{s} s")
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct Calibration {
    /// Cost of an empty region per event (its minimum), subtracted from
    /// `calibrated`.
    pub offset: Vec<f64>,
    /// Measurements the offset was taken from.
    pub samples: u64,
    /// What a child region's probes add to the region around it (present
    /// when regions nest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nested: Option<NestCost>,
    /// Every region of the calibration program with its sites' probe code:
    /// a region is calibrated by the one whose probes have its shape.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shapes: Vec<CalShape>,
}

/// One empty region of the calibration program.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct CalShape {
    pub region: String,
    /// Its START's and END's probe code inside the window.
    pub start: Window,
    pub end: Window,
    /// Per event, its minimum.
    pub offset: Vec<f64>,
}

/// How one region's calibrated values were taken.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct RegionCalibration {
    /// Per event, what was subtracted.
    pub offset: Vec<f64>,
    /// The calibration region whose probes have this region's shape (none:
    /// no shape matched, or the manifest does not say).
    pub shape: Option<String>,
    /// Probe instructions this region's sites run in the window besides
    /// that shape's (saves and restores of live registers), added to the
    /// offset of instruction events.
    pub extra_insns: i64,
    /// The calibration matches every pair of this region's sites exactly
    /// (false: no shape matched, or its sites' probes differ in length, and
    /// the calibrated values are approximate).
    pub exact: bool,
    /// With a shape: how many instructions longer the probes of its
    /// longest START and END pair are than of its shortest (the offset
    /// takes the shortest; 0 when exact).
    pub spread: i64,
}

/// Events the probes' extra instructions are added for: those that count
/// instructions (the JITs' emit one per probe instruction [`Window`] counts).
pub fn counts_instructions(event: &str) -> bool {
    let e = event.to_ascii_lowercase();
    let base = e.split(':').next().unwrap_or_default();
    base == "instructions" || base.starts_with("inst_retired")
}

/// Per event, what one measurement of a child region adds to the
/// measurement of its parent: its probes' whole cost, START to END.
#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct NestCost {
    /// The child's probes in a program's own code (inlined).
    pub program: Vec<f64>,
    /// The child's probes in a subprogram (calls into the runtime).
    pub subprogram: Vec<f64>,
    /// Each calibration child with its sites' whole probe code: a child is
    /// charged the one whose probes have its shape.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shapes: Vec<CalShape>,
}

/// What one measurement of child `r` costs its parent per event of
/// `events`, and, where the calibration's children do not fit its probes,
/// why the figure is approximate (said in the parent's `why`).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ChildCost {
    /// The calibration child it fits (null: none does, the program's or
    /// subprogram's child cost instead).
    pub shape: Option<String>,
    /// Per event.
    pub cost: Vec<f64>,
    #[serde(skip)]
    pub approximate: Option<String>,
}

impl NestCost {
    /// From the statistics of loader/calib/nest.bpf.c (instrumented as
    /// `m`, every program run): per event, the differences of the
    /// minimums, as for the offset (the cost with nothing else between the
    /// reads). None if a region is missing.
    pub fn from_calibration(m: &Manifest, s: &Snapshot, events: usize) -> Option<NestCost> {
        let min = |name: &str, e: usize| -> Option<f64> {
            let i = m.regions.iter().position(|r| r.name == name)?;
            Some(s.regions.get(i)?.min[e] as f64)
        };
        // Per event, what the region `with` a child measures beyond the one
        // `without`.
        let cost = |with: &str, without: &str| -> Option<Vec<f64>> {
            (0..events)
                .map(|e| Some(min(with, e)? - min(without, e)?))
                .collect()
        };
        let mut n = NestCost {
            program: cost("outer_inline", "alone")?,
            subprogram: cost("outer_call", "outer_plain")?,
            shapes: Vec::new(),
        };
        // Each child, and the two regions whose difference is its cost (a
        // pair the object lacks is left out).
        let pairs = [
            ("child", "outer_inline", "alone"),
            ("sub_child", "outer_call", "outer_plain"),
            ("child_busy", "outer_inline_busy", "alone_busy"),
            ("sub_child_busy", "outer_call_busy", "outer_plain_busy"),
            ("child_slow", "outer_inline_slow", "alone_slow"),
            (
                "child_slow_busy",
                "outer_inline_slow_busy",
                "alone_slow_busy",
            ),
            ("child_word", "outer_inline_word", "alone_word"),
            (
                "child_word_busy",
                "outer_inline_word_busy",
                "alone_word_busy",
            ),
        ];
        for (child, with, without) in pairs {
            let Some(r) = m.regions.iter().find(|r| r.name == child) else {
                continue;
            };
            let (Some(start), Some(end)) =
                (only(&r.starts, |x| x.whole), only(&r.ends, |x| x.whole))
            else {
                continue;
            };
            let Some(offset) = cost(with, without) else {
                continue;
            };
            n.shapes.push(CalShape {
                region: child.into(),
                start,
                end,
                offset,
            });
        }
        Some(n)
    }

    /// The cost of a child `r` (in a program's code or not: `in_program`):
    /// the calibration child its whole sites fit, plus the instructions
    /// they run beyond it for instruction events. Without a fit, the cost
    /// for where it sits, marked approximate.
    pub fn for_child(&self, r: &RegionDesc, in_program: bool, events: &[String]) -> ChildCost {
        match fit(&self.shapes, r, |x| x.whole) {
            Some(f) => ChildCost {
                cost: f.add_to(&self.shapes[f.shape].offset, events),
                shape: Some(self.shapes[f.shape].region.clone()),
                approximate: (f.spread != 0).then(|| {
                    format!(
                        "{}'s probes differ by up to {} instructions among its sites",
                        r.qualified(),
                        f.spread
                    )
                }),
            },
            None => ChildCost {
                shape: None,
                cost: if in_program {
                    self.program.clone()
                } else {
                    self.subprogram.clone()
                },
                approximate: (!self.shapes.is_empty()).then(|| {
                    format!(
                        "{}'s probes have a shape the nesting calibration did not measure",
                        r.qualified()
                    )
                }),
            },
        }
    }
}

impl Calibration {
    /// From the statistics of an empty region: per event its minimum, the
    /// probes' cost when nothing else ran between the reads. Not the mean:
    /// with exact counters one timer interrupt in one of 20,000 runs moves
    /// the mean (by ~0.9 instructions on arm64) but never the minimum.
    pub fn from_empty(s: &RegionStats, events: usize) -> Calibration {
        Calibration {
            offset: (0..events).map(|e| s.min[e] as f64).collect(),
            samples: s.count,
            nested: None,
            shapes: Vec::new(),
        }
    }

    /// From the calibration program (loader/calib/empty.bpf.c) as `m`
    /// instrumented it: `empty` gives the offset, and each region with its
    /// sites' windows is a shape. None if `empty` is missing.
    pub fn from_regions(m: &Manifest, s: &Snapshot, events: usize) -> Option<Calibration> {
        let i = m.regions.iter().position(|r| r.name == "empty")?;
        let mut c = Calibration::from_empty(s.regions.get(i)?, events);
        // The `empty*` regions (not the fillers that never run).
        for (r, st) in m.regions.iter().zip(&s.regions) {
            if !r.name.starts_with("empty") {
                continue;
            }
            let (Some(start), Some(end)) =
                (only(&r.starts, |x| x.window), only(&r.ends, |x| x.window))
            else {
                continue;
            };
            if st.count == 0 {
                continue;
            }
            c.shapes.push(CalShape {
                region: r.name.clone(),
                start,
                end,
                offset: (0..events).map(|e| st.min[e] as f64).collect(),
            });
        }
        Some(c)
    }

    /// What region `r` subtracts per event of `events`: the offset of the
    /// shape its sites' probes match (the same immediates and calls before
    /// END's read and after START's; the closest in length of those), plus
    /// the instructions they run beyond that shape's for instruction events.
    /// Without a match (or without shapes), the program-code offset, marked
    /// inexact.
    pub fn for_region(&self, r: &RegionDesc, events: &[String]) -> RegionCalibration {
        let fallback = RegionCalibration {
            offset: self.offset.clone(),
            shape: None,
            extra_insns: 0,
            exact: false,
            spread: 0,
        };
        let Some(f) = fit(&self.shapes, r, |x| x.window) else {
            return fallback;
        };
        let c = &self.shapes[f.shape];
        RegionCalibration {
            offset: f.add_to(&c.offset, events),
            shape: Some(c.region.clone()),
            extra_insns: f.extra,
            exact: f.spread == 0,
            spread: f.spread,
        }
    }
}

/// How a region's sites fit one of a list of shapes.
struct Fit {
    /// Index of the shape.
    shape: usize,
    /// Instructions the region's shortest START and END pair runs beyond
    /// the shape's.
    extra: i64,
    /// Its longest pair's instructions beyond its shortest's.
    spread: i64,
}

impl Fit {
    /// `offset` with the extra instructions added for instruction events.
    fn add_to(&self, offset: &[f64], events: &[String]) -> Vec<f64> {
        offset
            .iter()
            .zip(events)
            .map(|(o, ev)| {
                if counts_instructions(ev) {
                    o + self.extra as f64
                } else {
                    *o
                }
            })
            .collect()
    }
}

/// The shape of `shapes` whose START and END have the immediates and
/// calls of every START and END of `r` (their `part`), the closest in
/// length of those: the fewer instructions the count adds, the less it
/// assumes. None if a site lacks the part or nothing matches.
fn fit(shapes: &[CalShape], r: &RegionDesc, part: fn(&Site) -> Option<Window>) -> Option<Fit> {
    let starts: Vec<Window> = r.starts.iter().map(part).collect::<Option<_>>()?;
    let ends: Vec<Window> = r.ends.iter().map(part).collect::<Option<_>>()?;
    let same = |a: &Window, b: &Window| {
        (a.imm64, a.calls, a.runtime_calls) == (b.imm64, b.calls, b.runtime_calls)
    };
    let span = |ws: &[Window], base: &Window| {
        let d = ws
            .iter()
            .map(|w| i64::from(w.insns) - i64::from(base.insns));
        (d.clone().min().unwrap_or(0), d.max().unwrap_or(0))
    };
    let (shape, c) = shapes
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            starts.iter().all(|w| same(w, &c.start)) && ends.iter().all(|w| same(w, &c.end))
        })
        .min_by_key(|(_, c)| span(&starts, &c.start).0.abs() + span(&ends, &c.end).0.abs())?;
    let (s_lo, s_hi) = span(&starts, &c.start);
    let (e_lo, e_hi) = span(&ends, &c.end);
    Some(Fit {
        shape,
        extra: s_lo + e_lo,
        spread: s_hi - s_lo + e_hi - e_lo,
    })
}

/// `part` of the one site of `sites`.
fn only(sites: &[Site], part: fn(&Site) -> Option<Window>) -> Option<Window> {
    match sites {
        [x] => part(x),
        _ => None,
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct RegionReport {
    pub id: u32,
    pub name: String,
    pub function: String,
    pub section: String,
    /// `file:line` of the (first) START marker, when the object has line info.
    pub line: Option<String>,
    pub enabled: bool,
    /// Completed measurements (sampled runs that went through START and END).
    pub count: u64,
    /// Measurements dropped because a read was invalid (inactive or moved
    /// counter, failed perf read, a clock that went back): in no statistic.
    pub invalid: u64,
    /// Of `count`, the measurements a tail call ended (the region was open
    /// when the program tail-called another one).
    pub tail_ends: u64,
    /// What its calibrated values subtract (absent: uncalibrated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<RegionCalibration>,
    pub events: Vec<EventStats>,
}

#[derive(Serialize, Debug, Clone)]
pub struct EventStats {
    pub event: String,
    pub sum: u64,
    pub raw: Summary,
    /// `raw` minus the calibration offset (may go below zero: noise).
    pub calibrated: Option<Summary>,
}

/// NaN (null in the JSON, `-` in the table, empty in the CSV) for a region
/// with no measurement: a mean or min of nothing is not 0.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// p99.9
    pub p999: f64,
}

impl Summary {
    fn of(s: &RegionStats, e: usize) -> Summary {
        if s.count == 0 {
            return Summary {
                mean: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                p50: f64::NAN,
                p90: f64::NAN,
                p99: f64::NAN,
                p999: f64::NAN,
            };
        }
        Summary {
            mean: s.mean(e),
            min: s.min[e] as f64,
            max: s.max[e] as f64,
            p50: s.quantile(e, 0.5),
            p90: s.quantile(e, 0.9),
            p99: s.quantile(e, 0.99),
            p999: s.quantile(e, 0.999),
        }
    }
    fn minus(self, off: f64) -> Summary {
        Summary {
            mean: self.mean - off,
            min: self.min - off,
            max: self.max - off,
            p50: self.p50 - off,
            p90: self.p90 - off,
            p99: self.p99 - off,
            p999: self.p999 - off,
        }
    }
}

/// How a region is shown: its name, or `function:name` where the same name
/// is a region in another function too.
pub fn display_name_in(
    m: &Manifest,
) -> impl Fn(&inxpect_rewriter::runtime::RegionDesc) -> String + '_ {
    move |r| {
        if m.regions.iter().filter(|x| x.name == r.name).count() > 1 {
            r.qualified()
        } else {
            r.name.clone()
        }
    }
}

/// Builds the region part of a report; `enabled` says whether a region id
/// is enabled in the runtime config.
pub fn regions(
    m: &Manifest,
    snap: &Snapshot,
    enabled: impl Fn(u32) -> bool,
    event_names: &[String],
    cal: Option<&Calibration>,
) -> Vec<RegionReport> {
    m.regions
        .iter()
        .zip(&snap.regions)
        .map(|(r, s)| {
            let rc = cal.map(|c| c.for_region(r, event_names));
            RegionReport {
                id: r.id,
                name: display_name_in(m)(r),
                function: r.function.clone(),
                section: r.section.clone(),
                line: r.starts.iter().find_map(|x| x.line.clone()),
                enabled: enabled(r.id),
                count: s.count,
                invalid: s.invalid,
                tail_ends: s.tail_ends,
                events: event_names
                    .iter()
                    .enumerate()
                    .map(|(e, name)| {
                        let raw = Summary::of(s, e);
                        EventStats {
                            event: name.clone(),
                            sum: s.sum[e],
                            raw,
                            calibrated: rc
                                .as_ref()
                                .and_then(|c| c.offset.get(e))
                                .filter(|_| s.count > 0)
                                .map(|&o| raw.minus(o)),
                        }
                    })
                    .collect(),
                calibration: rc,
            }
        })
        .collect()
}

/// A table cell: `-` for no value (a region without measurements).
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn region_cell(g: &RegionReport) -> String {
    format!("{}{}", g.name, if g.enabled { "" } else { " (off)" })
}

/// A table, one row per region and event.
pub fn table(r: &Report) -> String {
    let mut o = String::new();
    let u = &r.unit;
    let _ = writeln!(
        o,
        "{} {}  counter {} (values in {u})  sample 1/{}{}{}",
        r.object,
        r.program,
        r.counter,
        r.sample,
        if r.unsampled_copy {
            " (the others run an uninstrumented copy)"
        } else {
            ""
        },
        if r.pcpu_direct {
            "  per-CPU state direct"
        } else {
            ""
        },
    );
    if let Some(t) = &r.test_run {
        let v: Vec<String> = t.verdicts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            o,
            "test-run {}: {} frames x {} repeat{}; verdicts (frames): {}",
            t.pcap,
            t.frames,
            t.repeat,
            if t.skipped > 0 {
                format!(" ({} frames skipped)", t.skipped)
            } else {
                String::new()
            },
            v.join(", ")
        );
    }
    if let Some(l) = &r.live {
        let _ = writeln!(
            o,
            "run on {} ({} mode) for {:.1} s",
            l.device, l.mode, l.seconds
        );
        if let Some(w) = &l.window {
            let _ = writeln!(
                o,
                "windows of {} every {}: {} opened, {:.2} s measured (outside them the original ran, uncounted){}",
                seconds_text(w.on_seconds),
                seconds_text(w.period_seconds),
                w.opened,
                w.measured_seconds,
                w.stopped
                    .as_ref()
                    .map(|e| format!("; STOPPED EARLY: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    let _ = writeln!(
        o,
        "runs {} (packets), sampled {}{}",
        r.runs.runs,
        r.runs.sampled,
        if r.runs.no_counter > 0 {
            format!(
                ", NO COUNTER in {} sampled runs (nothing measured)",
                r.runs.no_counter
            )
        } else {
            String::new()
        },
    );
    if let Some(c) = &r.calibration {
        let join = |v: &[f64]| v.iter().map(|x| num(*x)).collect::<Vec<_>>().join("/");
        let sub = c
            .shapes
            .iter()
            .find(|s| s.region == "empty_sub")
            .map(|s| format!(" in program code, {} in a subprogram", join(&s.offset)))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "calibration offset {} {u}{sub} (minimum of an empty region, {} samples): CAL.* = raw - offset{}",
            join(&c.offset),
            c.samples,
            if c.shapes.is_empty() {
                ""
            } else {
                " of the region's probe shape"
            }
        );
    }
    // Columns as wide as their longest cell: long names must not shift the rest.
    let width = |min: usize, f: &dyn Fn(&RegionReport) -> Vec<String>| {
        r.regions
            .iter()
            .flat_map(f)
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0)
            .max(min)
    };
    let wr = width(16, &|g| vec![region_cell(g)]);
    let wf = width(18, &|g| vec![g.function.clone()]);
    let ws = width(22, &|g| vec![g.line.clone().unwrap_or_default()]);
    let we = width(12, &|g| g.events.iter().map(|e| e.event.clone()).collect());
    let _ = writeln!(
        o,
        "{:>3} {:<wr$} {:<wf$} {:<ws$} {:<we$} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9}",
        "ID",
        "REGION",
        "FUNCTION",
        "SOURCE",
        "EVENT",
        "COUNT",
        "INVALID",
        "MEAN",
        "MIN",
        "MAX",
        "P50",
        "P90",
        "P99",
        "P99.9",
        "CAL.MEAN",
        "CAL.P50",
        "CAL.P99"
    );
    // The unit of every number column, under its header.
    let _ = writeln!(
        o,
        "{:>3} {:<wr$} {:<wf$} {:<ws$} {:<we$} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9}",
        "", "", "", "", "", "meas.", "meas.", u, u, u, u, u, u, u, u, u, u
    );
    for reg in &r.regions {
        for ev in &reg.events {
            let cal = |f: fn(&Summary) -> f64| {
                ev.calibrated
                    .as_ref()
                    .map(|c| num(f(c)))
                    .unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(
                o,
                "{:>3} {:<wr$} {:<wf$} {:<ws$} {:<we$} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9}",
                reg.id,
                region_cell(reg),
                reg.function,
                reg.line.as_deref().unwrap_or("-"),
                ev.event,
                if reg.tail_ends > 0 {
                    format!("{}*", reg.count)
                } else {
                    reg.count.to_string()
                },
                reg.invalid,
                num(ev.raw.mean),
                num(ev.raw.min),
                num(ev.raw.max),
                num(ev.raw.p50),
                num(ev.raw.p90),
                num(ev.raw.p99),
                num(ev.raw.p999),
                cal(|c| c.mean),
                cal(|c| c.p50),
                cal(|c| c.p99),
            );
        }
    }
    // Where the calibration does not fit, say so under the table.
    let rough: Vec<String> = r
        .regions
        .iter()
        .filter_map(|g| {
            let c = g.calibration.as_ref().filter(|c| !c.exact)?;
            Some(match c.shape {
                Some(_) => format!(
                    "{} (its sites' probes differ by up to {} instruction{})",
                    g.name,
                    c.spread,
                    if c.spread == 1 { "" } else { "s" }
                ),
                None => format!("{} (its sites' probes match no calibrated shape)", g.name),
            })
        })
        .collect();
    if !rough.is_empty() && r.calibration.as_ref().is_some_and(|c| !c.shapes.is_empty()) {
        let _ = writeln!(o, "CAL.* approximate for {}", rough.join("; "));
    }
    if let Some(t) = &r.tree {
        let cost = r
            .calibration
            .as_ref()
            .and_then(|c| c.nested.as_ref())
            .map(|n| {
                format!(
                    "; a child's probes cost {} {u} per measurement in program code, {} in a subprogram",
                    num(n.program[0]),
                    num(n.subprogram[0])
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "region tree ({}; self = total - children's totals - their probes' cost{cost}):",
            r.events[0]
        );
        let _ = writeln!(
            o,
            "  {:<40} {:>9} {:>14} {:>14} {:>12}",
            "PATH",
            "COUNT",
            format!("TOTAL[{u}]"),
            format!("SELF[{u}]"),
            format!("SELF/MEAS"),
        );
        for n in t {
            let sf = n.self_.as_ref().map(|s| s[0]);
            let _ = writeln!(
                o,
                "  {:<40} {:>9} {:>14} {:>14} {:>12}{}",
                n.path.join(";"),
                n.count,
                num(n.total[0]),
                sf.map(num).unwrap_or_else(|| "?".into()),
                sf.filter(|_| n.count > 0)
                    .map(|s| num(s / n.count as f64))
                    .unwrap_or_else(|| "-".into()),
                n.why
                    .as_ref()
                    .map(|w| format!("  ({w})"))
                    .unwrap_or_default()
            );
        }
    }
    let off: Vec<&str> = r
        .regions
        .iter()
        .filter(|g| !g.enabled)
        .map(|g| g.name.as_str())
        .collect();
    if !off.is_empty() {
        let _ = writeln!(
            o,
            "off (disabled at the end, not measured while off): {}",
            off.join(", ")
        );
    }
    if r.regions.iter().any(|g| g.tail_ends > 0) {
        let _ = writeln!(
            o,
            "* some measurements of the region ended at a tail call (the region was open when the program tail-called; `tail_ends` in the JSON)"
        );
    }
    o
}

/// A CSV number: empty for no value, as the calibrated columns are.
fn csv_num(v: f64) -> String {
    if v.is_finite() {
        v.to_string()
    } else {
        String::new()
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub const CSV_HEADER: &str = "region_id,region,function,section,line,enabled,event,count,invalid,tail_ends,sum,mean,min,max,p50,p90,p99,p999,cal_mean,cal_min,cal_max,cal_p50,cal_p90,cal_p99,cal_p999";

/// One row per region per event; empty calibrated columns when uncalibrated.
pub fn csv(r: &Report) -> String {
    let mut o = String::from(CSV_HEADER);
    o.push('\n');
    for reg in &r.regions {
        for ev in &reg.events {
            let s = &ev.raw;
            let c = ev
                .calibrated
                .map(|c| {
                    [c.mean, c.min, c.max, c.p50, c.p90, c.p99, c.p999]
                        .map(csv_num)
                        .join(",")
                })
                .unwrap_or_else(|| ",,,,,,".into());
            let _ = writeln!(
                o,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                reg.id,
                csv_field(&reg.name),
                csv_field(&reg.function),
                csv_field(&reg.section),
                csv_field(reg.line.as_deref().unwrap_or("")),
                reg.enabled,
                csv_field(&ev.event),
                reg.count,
                reg.invalid,
                reg.tail_ends,
                ev.sum,
                csv_num(s.mean),
                csv_num(s.min),
                csv_num(s.max),
                csv_num(s.p50),
                csv_num(s.p90),
                csv_num(s.p99),
                csv_num(s.p999),
                c
            );
        }
    }
    o
}

/// The report as `--json` prints it.
pub fn json(r: &Report) -> serde_json::Result<String> {
    serde_json::to_string_pretty(r)
}

pub fn print(r: &Report, f: Format) -> anyhow::Result<()> {
    match f {
        Format::Table => print!("{}", table(r)),
        Format::Json => println!("{}", json(r)?),
        Format::Csv => print!("{}", csv(r)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(insns: u32, imm64: u32, calls: u32) -> Window {
        Window {
            insns,
            imm64,
            calls,
            runtime_calls: 0,
        }
    }

    fn desc(starts: &[Option<Window>], ends: &[Option<Window>]) -> RegionDesc {
        let sites = |ws: &[Option<Window>]| {
            ws.iter()
                .enumerate()
                .map(|(i, w)| Site {
                    offset: 8 * i as u64,
                    line: None,
                    window: *w,
                    whole: None,
                })
                .collect()
        };
        RegionDesc {
            id: 0,
            name: "r".into(),
            function: "f".into(),
            section: "xdp".into(),
            starts: sites(starts),
            ends: sites(ends),
            parents: Vec::new(),
            top: false,
            nest_unknown: None,
        }
    }

    /// The two shapes of loader/calib/empty.bpf.c with pmc, as instrumented.
    fn two_shapes() -> Calibration {
        Calibration {
            offset: vec![14.0, 14.0],
            samples: 20_000,
            nested: None,
            shapes: vec![
                CalShape {
                    region: "empty_sub".into(),
                    start: win(1, 0, 0),
                    end: win(9, 3, 1),
                    offset: vec![48.0, 48.0],
                },
                CalShape {
                    region: "empty".into(),
                    start: win(1, 0, 0),
                    end: win(4, 0, 0),
                    offset: vec![14.0, 14.0],
                },
            ],
        }
    }

    #[test]
    fn regions_take_the_calibration_of_their_probes_shape() {
        let c = two_shapes();
        let ev = ["instructions".to_string(), "cycles".to_string()];
        // A subprogram's function region: a live argument restored after
        // START's read, the return value saved before END's lookup.
        let sub = c.for_region(&desc(&[Some(win(2, 0, 0))], &[Some(win(10, 3, 1))]), &ev);
        assert_eq!(sub.shape.as_deref(), Some("empty_sub"));
        assert_eq!(sub.extra_insns, 2);
        assert!(sub.exact);
        // Instructions get the extra two, cycles the shape's offset alone.
        assert_eq!(sub.offset, vec![50.0, 48.0]);
        // Program code, two exits alike.
        let prog = c.for_region(
            &desc(
                &[Some(win(1, 0, 0))],
                &[Some(win(5, 0, 0)), Some(win(5, 0, 0))],
            ),
            &ev,
        );
        assert_eq!(
            (prog.shape.as_deref(), prog.extra_insns, prog.exact),
            (Some("empty"), 1, true)
        );
        // Exits that differ: the shorter one's offset, marked approximate.
        let mixed = c.for_region(
            &desc(
                &[Some(win(1, 0, 0))],
                &[Some(win(4, 0, 0)), Some(win(6, 0, 0))],
            ),
            &ev,
        );
        assert_eq!(
            (mixed.extra_insns, mixed.exact, mixed.spread),
            (0, false, 2)
        );
        // An END in program code and one in a subprogram: no shape has both.
        let across = c.for_region(
            &desc(
                &[Some(win(1, 0, 0))],
                &[Some(win(4, 0, 0)), Some(win(9, 3, 1))],
            ),
            &ev,
        );
        assert_eq!(across.shape, None);
        assert!(!across.exact);
        assert_eq!(across.offset, c.offset);
        // Two shapes alike but for saved registers: the closer one.
        let mut c2 = c.clone();
        c2.shapes.push(CalShape {
            region: "empty_busy".into(),
            start: win(5, 0, 0),
            end: win(8, 0, 0),
            offset: vec![30.0, 30.0],
        });
        let busy = c2.for_region(&desc(&[Some(win(5, 0, 0))], &[Some(win(8, 0, 0))]), &ev);
        assert_eq!(
            (busy.shape.as_deref(), busy.extra_insns),
            (Some("empty_busy"), 0)
        );
        // A manifest without windows (--list, an older object).
        let old = c.for_region(&desc(&[None], &[None]), &ev);
        assert_eq!((old.shape, old.exact), (None, false));
    }

    #[test]
    fn instruction_events_by_name() {
        for e in [
            "instructions",
            "instructions:long",
            "INST_RETIRED.ANY",
            "inst_retired.any_p:u",
        ] {
            assert!(counts_instructions(e), "{e}");
        }
        for e in [
            "cycles",
            "ktime",
            "tsc",
            "cache-misses",
            "branch-instructions",
        ] {
            assert!(!counts_instructions(e), "{e}");
        }
    }

    fn region(id: u32, name: &str, function: &str, count: u64) -> RegionReport {
        let v = if count == 0 { f64::NAN } else { 40.0 };
        RegionReport {
            id,
            name: name.into(),
            function: function.into(),
            section: "xdp".into(),
            line: Some("app.bpf.c:12".into()),
            enabled: true,
            count,
            invalid: 0,
            tail_ends: 0,
            calibration: None,
            events: vec![EventStats {
                event: "ktime".into(),
                sum: count * 40,
                raw: Summary {
                    mean: v,
                    min: v,
                    max: v,
                    p50: v,
                    p90: v,
                    p99: v,
                    p999: v,
                },
                calibrated: None,
            }],
        }
    }

    /// A ten-run ktime report of `xdp_app` in `app.o`.
    fn sample_report(command: &str, live: Option<LiveInfo>, regions: Vec<RegionReport>) -> Report {
        Report {
            schema: SCHEMA,
            command: command.into(),
            object: "app.o".into(),
            program: "xdp_app".into(),
            counter: "ktime".into(),
            unit: "ns".into(),
            events: vec!["ktime".into()],
            sample: 1,
            unsampled_copy: false,
            pcpu_direct: false,
            runs: Runs {
                runs: 10,
                sampled: 10,
                no_counter: 0,
            },
            test_run: None,
            live,
            calibration: None,
            regions,
            tree: None,
        }
    }

    /// `--window`: the table says what share of the time was
    /// measured, and loudly when the windows stopped early.
    #[test]
    fn windows_are_stated_under_the_live_line() {
        let mut r = sample_report(
            "attach",
            Some(LiveInfo {
                device: "eth0".into(),
                mode: "native".into(),
                seconds: 3.0,
                window: Some(WindowInfo {
                    on_seconds: 0.01,
                    period_seconds: 1.0,
                    opened: 3,
                    measured_seconds: 0.0302,
                    stopped: None,
                }),
            }),
            vec![region(0, "parse", "xdp_app", 10)],
        );
        let t = table(&r);
        assert!(
            t.contains("windows of 10 ms every 1 s: 3 opened, 0.03 s measured (outside them the original ran, uncounted)\n"),
            "{t}"
        );
        let w = r.live.as_mut().unwrap().window.as_mut().unwrap();
        w.stopped = Some("program 9 is attached".into());
        let t = table(&r);
        assert!(t.contains("; STOPPED EARLY: program 9 is attached"), "{t}");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["live"]["window"]["opened"], 3);
        r.live.as_mut().unwrap().window = None;
        let j = serde_json::to_value(&r).unwrap();
        assert!(j["live"].get("window").is_none(), "{j}");
    }

    /// Issue #16: a long region or function name widens its column instead
    /// of pushing its row's numbers out of line; no measurement prints `-`.
    #[test]
    fn long_names_keep_the_columns_aligned() {
        let r = sample_report(
            "test-run",
            None,
            vec![
                region(0, "parse", "xdp_app", 10),
                region(
                    1,
                    "a_region_name_much_longer_than_sixteen_columns",
                    "a_function_name_longer_than_eighteen",
                    10,
                ),
                region(2, "never", "xdp_app", 0),
            ],
        );
        let t = table(&r);
        let bars: Vec<usize> = t.lines().filter_map(|l| l.find(" | ")).collect();
        assert_eq!(bars.len(), 5, "header, units and 3 rows:\n{t}");
        assert!(bars.iter().all(|&b| b == bars[0]), "columns moved:\n{t}");
        let never = t.lines().find(|l| l.contains("never")).expect("row");
        // 7 raw statistics and 3 calibrated ones.
        let dashes = never.split_whitespace().filter(|c| *c == "-").count();
        assert_eq!(dashes, 10, "{never}");
    }
}
