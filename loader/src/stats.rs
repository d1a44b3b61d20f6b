//! Reading the per-CPU statistics maps and summarising them.

use anyhow::{bail, Context, Result};
use inxpect_rewriter::runtime::{hist, pcpu, stats, u64_at as u64at, HIST_BUCKETS, MAX_EVENTS};
use libbpf_rs::{MapCore, MapFlags};

/// One region's statistics, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionStats {
    pub count: u64,
    /// Measurements dropped for an invalid read (in no other field).
    pub invalid: u64,
    /// Of `count`, the measurements a tail call ended.
    pub tail_ends: u64,
    pub sum: [u64; MAX_EVENTS],
    pub min: [u64; MAX_EVENTS],
    pub max: [u64; MAX_EVENTS],
    pub hist: [[u64; HIST_BUCKETS]; MAX_EVENTS],
}

impl Default for RegionStats {
    fn default() -> Self {
        RegionStats {
            count: 0,
            invalid: 0,
            tail_ends: 0,
            sum: [0; MAX_EVENTS],
            min: [0; MAX_EVENTS],
            max: [0; MAX_EVENTS],
            hist: [[0; HIST_BUCKETS]; MAX_EVENTS],
        }
    }
}

impl RegionStats {
    /// Merges the per-CPU values of one `inxpect_stats` entry.
    pub fn from_percpu(vals: &[Vec<u8>]) -> Result<RegionStats> {
        let mut s = RegionStats::default();
        for v in vals {
            if v.len() < stats::SIZE {
                bail!(
                    "inxpect_stats value of {} bytes, expected {}",
                    v.len(),
                    stats::SIZE
                );
            }
            s.invalid += u64at(v, stats::INVALID);
            s.tail_ends += u64at(v, stats::TAIL_ENDS);
            let n = stats::count(v);
            if n == 0 {
                continue;
            }
            for e in 0..MAX_EVENTS {
                // Unused events have none (0, as they always read).
                s.add_event(
                    e,
                    stats::min(v, e).unwrap_or(0),
                    u64at(v, stats::MAX + 8 * e),
                    u64at(v, stats::SUM + 8 * e),
                    (0..HIST_BUCKETS).map(|b| u64at(v, stats::HIST + 8 * (e * HIST_BUCKETS + b))),
                );
            }
            s.count += n;
        }
        Ok(s)
    }

    /// Adds region `id`'s inline statistics, which END keeps in
    /// `inxpect_pcpu` for the first regions ([`pcpu::fast`]): `pcpu` is
    /// that map's per-CPU values. Event 0 only, as the inline path.
    pub fn add_fast(&mut self, pcpu_vals: &[Vec<u8>], id: u32) -> Result<()> {
        use pcpu::fast;
        let Some(at) = pcpu::fast(id) else {
            return Ok(());
        };
        for v in pcpu_vals {
            check_pcpu(v)?;
            let h = |b: usize| u64at(v, at + fast::HIST + 8 * b);
            let n: u64 = (0..fast::BUCKETS).map(h).sum();
            if n == 0 {
                continue;
            }
            self.add_event(
                0,
                !u64at(v, at + fast::MIN),
                u64at(v, at + fast::MAX),
                u64at(v, at + fast::SUM),
                (0..fast::BUCKETS).map(h),
            );
            self.count += n;
        }
        Ok(())
    }

    /// Merges one CPU's event `e` that measured something (before `count`
    /// takes its measurements): `min`, `max`, `sum` and the first buckets.
    fn add_event(
        &mut self,
        e: usize,
        min: u64,
        max: u64,
        sum: u64,
        hist: impl Iterator<Item = u64>,
    ) {
        self.min[e] = if self.count == 0 {
            min
        } else {
            self.min[e].min(min)
        };
        self.max[e] = self.max[e].max(max);
        self.sum[e] = self.sum[e].wrapping_add(sum);
        for (b, c) in hist.enumerate() {
            self.hist[e][b] += c;
        }
    }

    /// What happened since `prev` (min/max cannot be split: kept cumulative).
    pub fn since(&self, prev: &RegionStats) -> RegionStats {
        let mut d = self.clone();
        d.count = self.count.saturating_sub(prev.count);
        d.invalid = self.invalid.saturating_sub(prev.invalid);
        d.tail_ends = self.tail_ends.saturating_sub(prev.tail_ends);
        for e in 0..MAX_EVENTS {
            d.sum[e] = self.sum[e].wrapping_sub(prev.sum[e]);
            for b in 0..HIST_BUCKETS {
                d.hist[e][b] = self.hist[e][b].saturating_sub(prev.hist[e][b]);
            }
        }
        d
    }

    pub fn mean(&self, e: usize) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum[e] as f64 / self.count as f64
        }
    }

    /// The `q` quantile (0..=1, taken in millionths) from the histogram:
    /// the value of rank ceil(q·n) (nearest rank, at least 1) among the n
    /// measurements, estimated as the middle of the bucket that holds that
    /// rank, clamped to the measured [min, max].
    ///
    /// The bucket is found exactly (counts are exact), so the estimate is
    /// off by at most half the bucket's width: exact below 32, within
    /// 1/32 (3.1%) of the true value below 2^32 (see
    /// [`inxpect_rewriter::runtime::hist`]). Above 2^32 (one last bucket)
    /// it is only known to lie in [2^32, max].
    pub fn quantile(&self, e: usize, q: f64) -> f64 {
        let h = &self.hist[e];
        let n: u64 = h.iter().sum();
        if n == 0 {
            return 0.0;
        }
        let rank = nearest_rank(n, q);
        let (mn, mx) = (self.min[e], self.max[e]);
        let mut below = 0u64;
        for (b, &c) in h.iter().enumerate() {
            below += c;
            if below >= rank {
                let (mut lo, mut hi) = hist::range(b);
                if b == HIST_BUCKETS - 1 {
                    hi = mx.max(lo);
                }
                if mx >= mn {
                    (lo, hi) = (lo.clamp(mn, mx), hi.clamp(mn, mx));
                }
                return (lo as f64 + hi as f64) / 2.0;
            }
        }
        mx as f64
    }
}

/// The 1-based rank of the `q` quantile among `n` values: ceil(q·n) with q
/// rounded to millionths (so 0.999 is exactly 999/1000), at least 1.
pub fn nearest_rank(n: u64, q: f64) -> u64 {
    let ppm = (q.clamp(0.0, 1.0) * 1e6).round() as u128;
    let r = (n as u128 * ppm).div_ceil(1_000_000) as u64;
    r.clamp(1, n.max(1))
}

/// A value of `inxpect_pcpu` as long as this ABI's: the fast statistics
/// are at its end.
fn check_pcpu(v: &[u8]) -> Result<()> {
    if v.len() < pcpu::SIZE {
        bail!(
            "inxpect_pcpu value of {} bytes, expected {} (runtime ABI {})",
            v.len(),
            pcpu::SIZE,
            inxpect_rewriter::runtime::ABI
        );
    }
    Ok(())
}

/// The per-CPU values of `inxpect_pcpu[0]`.
pub fn read_pcpu<M: MapCore>(map: &M) -> Result<Vec<Vec<u8>>> {
    map.lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
        .context("reading inxpect_pcpu")?
        .context("inxpect_pcpu[0] missing")
}

/// Reads region `id`: its `inxpect_stats` entry and, for the first
/// regions, its fast statistics in `inxpect_pcpu` (values of [`read_pcpu`]).
pub fn read_region<M: MapCore>(stats: &M, pcpu_vals: &[Vec<u8>], id: u32) -> Result<RegionStats> {
    let vals = stats
        .lookup_percpu(&id.to_ne_bytes(), MapFlags::ANY)
        .with_context(|| format!("reading inxpect_stats[{id}]"))?
        .with_context(|| format!("inxpect_stats[{id}] missing"))?;
    let mut s = RegionStats::from_percpu(&vals)?;
    s.add_fast(pcpu_vals, id)?;
    Ok(s)
}

/// The run counters of `inxpect_pcpu`, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Runs {
    /// Program entries.
    pub runs: u64,
    /// Entries chosen by sampling.
    pub sampled: u64,
    /// Sampled runs in which the backend's counter was missing (module
    /// absent): nothing of them was measured.
    pub no_counter: u64,
}

pub fn read_runs<M: MapCore>(map: &M) -> Result<Runs> {
    Runs::from_percpu(&read_pcpu(map)?)
}

impl Runs {
    /// Sums the per-CPU values of `inxpect_pcpu[0]`.
    pub fn from_percpu(vals: &[Vec<u8>]) -> Result<Runs> {
        let mut r = Runs::default();
        for v in vals {
            if v.len() < pcpu::LOAD + 8 {
                bail!("inxpect_pcpu value of {} bytes", v.len());
            }
            // Each sampled run adds the countdown it loads to `runs` and
            // itself to `sampled`: what is left of the countdown has not
            // run yet.
            r.runs += u64at(v, pcpu::RUNS)
                .wrapping_add(u64at(v, pcpu::SAMPLED))
                .saturating_sub(u64at(v, pcpu::LEFT));
            r.sampled += u64at(v, pcpu::SAMPLED);
            r.no_counter += u64at(v, pcpu::NO_COUNTER);
        }
        Ok(r)
    }
}

/// Everything measured so far for the manifest's regions.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub runs: Runs,
    pub regions: Vec<RegionStats>,
}

impl Snapshot {
    /// From raw per-CPU map values obtained elsewhere (a VM guest's dump):
    /// `percpu(map, key)` gives the per-CPU values of `map[key]`, absent
    /// CPUs meaning zeros.
    pub fn from_percpu_maps(
        m: &inxpect_rewriter::runtime::Manifest,
        percpu: impl Fn(&str, u32) -> Vec<Vec<u8>>,
    ) -> Result<Snapshot> {
        use inxpect_rewriter::runtime::{MAP_PCPU, MAP_STATS};
        let pc = percpu(MAP_PCPU, 0);
        if pc.is_empty() {
            // The first regions' statistics are partly there.
            bail!("no values of inxpect_pcpu: the regions' fast statistics are in it");
        }
        let runs = Runs::from_percpu(&pc)?;
        let regions = m
            .regions
            .iter()
            .map(|r| {
                let mut s = RegionStats::from_percpu(&percpu(MAP_STATS, r.id))?;
                s.add_fast(&pc, r.id)?;
                Ok(s)
            })
            .collect::<Result<_>>()?;
        Ok(Snapshot { runs, regions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[u64]) -> RegionStats {
        let mut s = RegionStats {
            count: values.len() as u64,
            ..Default::default()
        };
        s.min[0] = *values.iter().min().unwrap();
        s.max[0] = *values.iter().max().unwrap();
        for &v in values {
            s.sum[0] += v;
            s.hist[0][hist::bucket(v)] += 1;
        }
        s
    }

    #[test]
    fn quantile_of_one_value_is_exact() {
        let s = with(&[35; 100]);
        assert_eq!(s.quantile(0, 0.5), 35.0);
        assert_eq!(s.quantile(0, 0.999), 35.0);
        assert_eq!(s.mean(0), 35.0);
    }

    #[test]
    fn quantile_is_the_nearest_rank_within_half_a_bucket() {
        // 50 ones and 50 values 1000 (bucket 992..=1023 clamped to max 1000).
        let mut v = vec![1u64; 50];
        v.extend([1000; 50]);
        let s = with(&v);
        assert_eq!(s.quantile(0, 0.5), 1.0);
        assert_eq!(s.quantile(0, 0.51), 996.0);
        // A tight distribution (issue 17: min 32, max 80, mostly 32-35).
        let mut v: Vec<u64> = (0..97).map(|i| 32 + i % 4).collect();
        v.extend([60, 70, 80]);
        let s = with(&v);
        // Rank 50 is a 34 (25 of 32, 24 of 33 below it): bucket 34..=35.
        assert_eq!(s.quantile(0, 0.5), 34.5);
        assert_eq!(s.quantile(0, 0.99), 69.5); // 70 in 68..=71
    }

    #[test]
    fn ranks() {
        assert_eq!(nearest_rank(1000, 0.999), 999);
        assert_eq!(nearest_rank(1000, 0.5), 500);
        assert_eq!(nearest_rank(1001, 0.5), 501);
        assert_eq!(nearest_rank(7, 0.0), 1);
        assert_eq!(nearest_rank(7, 1.0), 7);
    }
}
