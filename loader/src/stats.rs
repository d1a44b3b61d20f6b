//! Reading the per-CPU statistics maps and summarising them.

use anyhow::{bail, Context, Result};
use inxpect_rewriter::runtime::{pcpu, stats, HIST_BUCKETS, MAX_EVENTS};
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

fn u64at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .map(|s| u64::from_ne_bytes(s.try_into().expect("8 bytes")))
        .unwrap_or(0)
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
            let n = u64at(v, stats::COUNT);
            if n == 0 {
                continue;
            }
            for e in 0..MAX_EVENTS {
                let mn = u64at(v, stats::MIN + 8 * e);
                let mx = u64at(v, stats::MAX + 8 * e);
                s.min[e] = if s.count == 0 { mn } else { s.min[e].min(mn) };
                s.max[e] = s.max[e].max(mx);
                s.sum[e] = s.sum[e].wrapping_add(u64at(v, stats::SUM + 8 * e));
                for b in 0..HIST_BUCKETS {
                    s.hist[e][b] += u64at(v, stats::HIST + 8 * (e * HIST_BUCKETS + b));
                }
            }
            s.count += n;
        }
        Ok(s)
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

    /// The `q` quantile (0..=1) from the log2 histogram.
    ///
    /// Bucket 0 holds 0; bucket b >= 1 holds [2^(b-1), 2^b - 1] (the runtime's
    /// `64 - clz(d)`). The rank `q * n` is placed linearly inside its bucket,
    /// as if the bucket's values were spread evenly, then clamped to the
    /// measured min/max: exact for one-value buckets, within a factor 2 at
    /// worst.
    pub fn quantile(&self, e: usize, q: f64) -> f64 {
        let h = &self.hist[e];
        let n: u64 = h.iter().sum();
        if n == 0 {
            return 0.0;
        }
        let rank = (q * n as f64).clamp(0.0, n as f64);
        let mut below = 0u64;
        for (b, &c) in h.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if (below + c) as f64 >= rank {
                let (lo, hi) = bucket_range(b);
                let frac = ((rank - below as f64) / c as f64).clamp(0.0, 1.0);
                let v = lo + (hi - lo) * frac;
                let (mn, mx) = (self.min[e] as f64, self.max[e] as f64);
                return if mx >= mn && self.count > 0 {
                    v.clamp(mn, mx)
                } else {
                    v
                };
            }
            below += c;
        }
        self.max[e] as f64
    }
}

/// The value range of a bucket: bucket b >= 1 covers
/// the integers 2^(b-1) ..= 2^b - 1.
fn bucket_range(b: usize) -> (f64, f64) {
    if b == 0 {
        (0.0, 0.0)
    } else {
        let lo = 2f64.powi(b as i32 - 1);
        (lo, 2.0 * lo - 1.0)
    }
}

/// Reads region `id` of `inxpect_stats`.
pub fn read_region<M: MapCore>(map: &M, id: u32) -> Result<RegionStats> {
    let vals = map
        .lookup_percpu(&id.to_ne_bytes(), MapFlags::ANY)
        .with_context(|| format!("reading inxpect_stats[{id}]"))?
        .with_context(|| format!("inxpect_stats[{id}] missing"))?;
    RegionStats::from_percpu(&vals)
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
    let vals = map
        .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
        .context("reading inxpect_pcpu")?
        .context("inxpect_pcpu[0] missing")?;
    Runs::from_percpu(&vals)
}

impl Runs {
    /// Sums the per-CPU values of `inxpect_pcpu[0]`.
    pub fn from_percpu(vals: &[Vec<u8>]) -> Result<Runs> {
        let mut r = Runs::default();
        for v in vals {
            if v.len() < pcpu::NO_COUNTER + 8 {
                bail!("inxpect_pcpu value of {} bytes", v.len());
            }
            r.runs += u64at(v, pcpu::RUNS);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_inside_one_bucket() {
        // 100 values of 5 (bucket 3 = [4, 7]).
        let mut s = RegionStats {
            count: 100,
            ..Default::default()
        };
        s.sum[0] = 500;
        s.min[0] = 5;
        s.max[0] = 5;
        s.hist[0][3] = 100;
        assert_eq!(s.quantile(0, 0.5), 5.0);
        assert_eq!(s.mean(0), 5.0);
    }

    #[test]
    fn quantile_interpolates() {
        let mut s = RegionStats {
            count: 100,
            ..Default::default()
        };
        s.min[0] = 1;
        s.max[0] = 1000;
        s.hist[0][1] = 50; // value 1
        s.hist[0][10] = 50; // 512..1023
        assert_eq!(s.quantile(0, 0.5), 1.0);
        let p99 = s.quantile(0, 0.99);
        assert!((990.0..=1000.0).contains(&p99), "{p99}");
    }
}
