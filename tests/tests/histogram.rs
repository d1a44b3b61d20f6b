//! Percentiles users can trust (issue 17). Two drivers, both through
//! BPF_PROG_TEST_RUN:
//! - the REAL probe runtime (the committed ktime object; `__inxpect_record`,
//!   the statistics a program-level END site calls for a long delta or an
//!   invalid read, inlined into every other END) linked with a driver
//!   program (testdata/hist/driver.bpf.c) that hands it chosen deltas;
//! - the probes the rewriter emits (testdata/hist/replay.bpf.c, instrumented
//!   with a read-function hook so its probes read chosen counter values):
//!   END's inlined statistics and their fallback, per backend.
//!
//! The statistics the loader then reads back must be exact where they can
//! be (count, invalid, sum, min, max, every histogram bucket against the
//! bucket function computed here), and every reported percentile must lie
//! within the documented bound of the exact one computed here from the same
//! values: equal below 32, within 1/32 of it below 2^32, in the last bucket
//! above (loader/README.md, "Numbers").

use anyhow::{ensure, Context, Result};
use inxpect_loader::stats::{nearest_rank, RegionStats};
use inxpect_rewriter::runtime::{self, hist, Counter, HIST_BUCKETS};
use inxpect_tests::region_stats;
use inxpect_tests::{load_object, only_program, test_run, testdata};

/// Deltas per frame (the driver's DRIVE_MAX).
const PER_FRAME: usize = 64;
const N: usize = 20_000;
const QUANTILES: [f64; 9] = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0];

/// A small deterministic generator (no dependency, same values every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        (self.next() as f64 + 1.0) / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn distributions() -> Vec<(&'static str, Vec<u64>)> {
    let mut r = Lcg(0x5eed);
    let constant = vec![35; N];
    let uniform = (0..N).map(|_| r.range(0, 100_000)).collect();
    // Two modes far apart (a fast path and a slow path), 70/30.
    let bimodal = (0..N)
        .map(|_| {
            if r.next() % 10 < 7 {
                r.range(35, 45)
            } else {
                r.range(1800, 2200)
            }
        })
        .collect();
    // Pareto (alpha 1.1) from 20: most values small, a tail to ~1e9.
    let heavy = (0..N)
        .map(|_| ((20.0 / r.unit().powf(1.0 / 1.1)) as u64).min(u32::MAX as u64))
        .collect();
    // Every small value (the exact buckets) and the edges of the range.
    let mut edges: Vec<u64> = (0..64).collect();
    edges.extend([
        1000,
        1023,
        1024,
        (1 << 31) - 1,
        1 << 31,
        u32::MAX as u64 - 1,
        u32::MAX as u64,
    ]);
    vec![
        ("constant", constant),
        ("uniform", uniform),
        ("bimodal", bimodal),
        ("heavy tail", heavy),
        ("edges", edges),
    ]
}

fn frame(id: u32, deltas: &[u64]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + 8 * PER_FRAME);
    f.extend(id.to_ne_bytes());
    f.extend((deltas.len() as u32).to_ne_bytes());
    for i in 0..PER_FRAME {
        f.extend(deltas.get(i).copied().unwrap_or(0).to_ne_bytes());
    }
    f
}

/// The bound the README states, for an exact percentile `v` below 2^32.
fn within_bound(est: f64, v: u64) -> bool {
    if v < 32 {
        est == v as f64
    } else {
        (est - v as f64).abs() <= v as f64 / 32.0
    }
}

fn check(name: &str, s: &RegionStats, values: &[u64]) -> Result<()> {
    check_with_invalid(name, s, values, 0)
}

fn check_with_invalid(name: &str, s: &RegionStats, values: &[u64], invalid: u64) -> Result<()> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as u64;
    ensure!(s.count == n, "{name}: count {} != {n}", s.count);
    ensure!(
        s.invalid == invalid,
        "{name}: {} invalid, expected {invalid}",
        s.invalid
    );
    ensure!(s.sum[0] == sorted.iter().sum::<u64>(), "{name}: sum");
    ensure!(s.min[0] == sorted[0], "{name}: min {}", s.min[0]);
    ensure!(s.max[0] == sorted[sorted.len() - 1], "{name}: max");
    let mut want = vec![0u64; HIST_BUCKETS];
    for &v in &sorted {
        want[hist::bucket(v)] += 1;
    }
    for (b, (&got, &w)) in s.hist[0].iter().zip(&want).enumerate() {
        ensure!(
            got == w,
            "{name}: bucket {b} {:?} holds {got}, expected {w}",
            hist::range(b)
        );
    }
    for q in QUANTILES {
        let exact = sorted[nearest_rank(n, q) as usize - 1];
        let est = s.quantile(0, q);
        if exact >> 32 != 0 {
            // The last bucket: only its range is known.
            ensure!(
                est >= (1u64 << 32) as f64 && est <= s.max[0] as f64,
                "{name}: q {q}: reported {est} outside the last bucket"
            );
            continue;
        }
        ensure!(
            within_bound(est, exact),
            "{name}: q {q}: reported {est}, exact {exact} (bound {})",
            exact as f64 / 32.0
        );
    }
    Ok(())
}

#[test]
fn percentiles_of_the_real_runtime_are_within_the_bound() -> Result<()> {
    let driver = std::fs::read(testdata().join("hist/driver.o")).context("driver.o")?;
    let linked = inxpect_rewriter::link::link(&driver, runtime::object(Counter::Ktime, 1))?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("driver-linked.o");
    std::fs::write(&path, linked)?;
    let obj = load_object(&path)?;
    let prog = only_program(&obj)?;
    let dists = distributions();
    for (id, (name, values)) in dists.iter().enumerate() {
        for chunk in values.chunks(PER_FRAME) {
            let (verdict, _) = test_run(&prog, &frame(id as u32, chunk))?;
            // XDP_DROP: every delta of the frame went through START and END.
            ensure!(verdict == 1, "{name}: driver verdict {verdict}");
        }
    }
    for (id, (name, values)) in dists.iter().enumerate() {
        check(name, &region_stats(&obj, id as u32)?, values)?;
    }
    // A region never driven stays empty.
    let unused = region_stats(&obj, dists.len() as u32)?;
    ensure!(unused.count == 0 && unused.hist[0].iter().all(|&c| c == 0));
    // The bound is not vacuous: on the uniform values some percentile is
    // not exact (a coarser histogram, e.g. the former log2 one, would fail).
    let s = region_stats(&obj, 1)?;
    let mut sorted = dists[1].1.clone();
    sorted.sort_unstable();
    ensure!(QUANTILES
        .iter()
        .any(|&q| s.quantile(0, q) != sorted[nearest_rank(N as u64, q) as usize - 1] as f64));
    Ok(())
}

/// The two counter values a replay frame hands to START and END.
fn replay_frame(then: u64, now: u64) -> Vec<u8> {
    let mut f = then.to_ne_bytes().to_vec();
    f.extend(now.to_ne_bytes());
    f
}

/// `(then, now)` pairs that give each of `values` as the delta of counter
/// `c`, from varied starting values (32-bit counters wrap).
fn pairs(c: Counter, values: &[u64], r: &mut Lcg) -> Vec<(u64, u64)> {
    values
        .iter()
        .map(|&v| {
            let then = match c {
                // A valid pmc read has bit 63 clear, and so must `now`.
                Counter::Pmc => r.next() >> 24,
                // Low words near 2^32, so some deltas wrap.
                Counter::Tsc if r.next().is_multiple_of(4) => (r.next() << 32) | 0xffff_ff00,
                _ => r.next(),
            };
            (then, then.wrapping_add(v))
        })
        .collect()
}

/// Replayed `(then, now)` pairs and the statistics they must give: the
/// valid deltas and how many pairs are invalid.
struct Case {
    name: &'static str,
    pairs: Vec<(u64, u64)>,
    values: Vec<u64>,
    invalid: u64,
}

/// Pairs the runtime must count as invalid, and valid ones that look odd.
fn specials(c: Counter) -> Case {
    let bit63 = 1u64 << 63;
    let (pairs, values, invalid) = match c {
        // Bit 63 at either end: a read the module marked invalid.
        Counter::Pmc => (
            vec![
                (bit63 | 5, 10),
                (5, bit63 | 10),
                (bit63, bit63 | 3000),
                (7, 12),
                (7, 7 + 5000),
            ],
            vec![5, 5000],
            3,
        ),
        // A 64-bit clock that went back: invalid; a delta of 2^32 or more
        // is valid (the last bucket).
        Counter::Ktime => (
            vec![(100, 50), (1 << 62, 0), (1, 1 + (1 << 40)), (9, 9)],
            vec![1 << 40, 0],
            2,
        ),
        // 32-bit: `now` below `then` is a wrap, never invalid.
        _ => (
            vec![(100, 50), (0xffff_fff0, 0x1_0000_0010), (3, 3)],
            vec![(1 << 32) - 50, 0x20, 0],
            0,
        ),
    };
    Case {
        name: "specials",
        pairs,
        values,
        invalid,
    }
}

/// The END path the rewriter emits, with known values: the replay object
/// (testdata/hist/replay.bpf.c) instrumented so that its probes read
/// through `replay_read`, which returns the frame's `then` to START and
/// `now` to END. Every delta goes through the held check, the inlined
/// statistics of a program-level END (deltas below 2^12) or their fallback
/// call of `__inxpect_record` (longer ones, invalid reads), for each
/// one-event backend, with the statistics inline or always called
/// (`--stats call`), for both END shapes (a spare callee-saved register
/// for the delta, or none: `replay_busy`), and for both places the inline
/// statistics live (the per-CPU state for regions 0-15, `inxpect_stats`
/// past them: `replay_slow*`). Counts, sums, extremes and every bucket
/// must be exact, the percentiles within the bound.
#[test]
fn probe_end_statistics_are_exact_for_chosen_deltas() -> Result<()> {
    use inxpect_rewriter::{instrument, Mode, Options, Stats};
    let input = std::fs::read(testdata().join("hist/replay.o")).context("replay.o")?;
    let dir = tempfile::tempdir()?;
    let mut r = Lcg(0x7e91a1);
    let mut dists: Vec<(&str, Vec<u64>)> = distributions()
        .into_iter()
        .map(|(n, v)| (n, v.into_iter().take(2000).collect()))
        .collect();
    // Every delta on the inlined path, and its edge.
    let mut fast: Vec<u64> = (0..2000).map(|_| r.range(0, 4095)).collect();
    fast.extend([4095, 4096, 4097]);
    dists.push(("below 2^12", fast));
    let backends = [Counter::Ktime, Counter::Tsc, Counter::Pmc]
        .into_iter()
        .flat_map(|c| [(c, Stats::Inline), (c, Stats::Call)]);
    let mut inline_refs = [0; 2];
    for (counter, stats) in backends {
        let opts = Options {
            mode: Mode::Sections,
            counter,
            events: 1,
            only: None,
            read_fn: Some("replay_read".into()),
            stats,
            unsampled_copy: false,
            ..Options::default()
        };
        let out = instrument(&input, &opts).with_context(|| format!("{counter:?} {stats:?}"))?;
        // Every END site's inline statistics read the bucket table; those
        // of regions past the first 16 reach their entry through the ids
        // table, the others keep theirs in the per-CPU state. The
        // runtime's own uses are all a call leaves.
        let refs = [
            relocations_to(&out.object, "inxpect_bucket_lo")?,
            relocations_to(&out.object, "inxpect_ids")?,
        ];
        let ends = |fast: bool| {
            out.manifest
                .regions
                .iter()
                .filter(|g| runtime::pcpu::fast(g.id).is_some() == fast)
                .map(|g| g.ends.len())
                .sum::<usize>()
        };
        match stats {
            Stats::Inline => inline_refs = refs,
            Stats::Call => {
                let want = [ends(true) + ends(false), ends(false)];
                ensure!(
                    want[1] >= 2 && want[0] > want[1],
                    "{counter:?}: END sites {want:?}: replay.o lost its shapes"
                );
                ensure!(
                    (0..2).all(|i| inline_refs[i] == refs[i] + want[i]),
                    "{counter:?}: references to (inxpect_bucket_lo, inxpect_ids): \
                     {inline_refs:?} inline, {refs:?} with calls, want {want:?} more"
                );
            }
        }
        let path = dir.path().join(format!("replay-{counter:?}-{stats:?}.o"));
        std::fs::write(&path, &out.object)?;
        let mut cases: Vec<Case> = dists
            .iter()
            .map(|(name, v)| Case {
                name,
                pairs: pairs(counter, v, &mut r),
                values: v.clone(),
                invalid: 0,
            })
            .collect();
        cases.push(specials(counter));
        for prog_name in ["replay", "replay_busy", "replay_slow", "replay_slow_busy"] {
            let id = out
                .manifest
                .regions
                .iter()
                .find(|g| g.function == prog_name)
                .with_context(|| format!("no region in {prog_name}"))?
                .id;
            for c in &cases {
                let what = format!("{counter:?} {stats:?} {prog_name} {}", c.name);
                // A fresh load: the statistics start empty.
                let obj = load_object(&path).with_context(|| what.clone())?;
                let prog = obj
                    .progs_mut()
                    .find(|p| p.name() == prog_name)
                    .with_context(|| format!("{what}: no program"))?;
                for &(then, now) in &c.pairs {
                    let (verdict, _) = test_run(&prog, &replay_frame(then, now))?;
                    // XDP_DROP: both probes read (2: the region was measured).
                    ensure!(
                        verdict == 1,
                        "{what}: verdict {verdict} for ({then}, {now})"
                    );
                }
                check_with_invalid(&what, &region_stats(&obj, id)?, &c.values, c.invalid)?;
            }
        }
    }
    Ok(())
}

/// Relocations in `elf` that name the symbol `name`.
fn relocations_to(elf: &[u8], name: &str) -> Result<usize> {
    let e = goblin::elf::Elf::parse(elf)?;
    Ok(e.shdr_relocs
        .iter()
        .flat_map(|(_, rs)| rs.iter())
        .filter(|r| e.syms.get(r.r_sym).and_then(|y| e.strtab.get_at(y.st_name)) == Some(name))
        .count())
}
