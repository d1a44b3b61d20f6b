//! The probe runtime objects (runtime-bpf/obj, built by runtime-bpf/build.sh)
//! and the layout constants shared with the loader. Mirrors
//! runtime-bpf/include/inxpect_runtime.h.

use serde::{Deserialize, Serialize};

pub const ABI: u32 = 10;
pub const MAX_REGIONS: usize = 256;
pub const MAX_EVENTS: usize = 4;
/// Log-linear histogram (see [`hist`]): 2^HIST_SUB_BITS buckets per power of two.
pub const HIST_SUB_BITS: u32 = 4;
pub const HIST_SUB: usize = 1 << HIST_SUB_BITS;
pub const HIST_BUCKETS: usize = (32 - HIST_SUB_BITS as usize + 1) * HIST_SUB + 1;

pub const FN_START: &str = "__inxpect_start";
pub const FN_END: &str = "__inxpect_end";
pub const FN_END_VALUE: &str = "__inxpect_end_value";
/// END's statistics for a program-level site that checked the held START itself.
pub const FN_RECORD: &str = "__inxpect_record";
pub const FN_TAIL_ENTER: &str = "__inxpect_tail_enter";
pub const FN_TAIL_CLOSE: &str = "__inxpect_tail_close";
/// Helper id of `bpf_tail_call`.
pub const HELPER_TAIL_CALL: i32 = 12;
pub const PREFIX: &str = "__inxpect_";
/// Deepest stack any runtime function uses (bytes), for the 512-byte budget.
pub const RUNTIME_STACK: i64 = 64;

pub const MAP_CONFIG: &str = ".data.inxpect";
/// Read-only `u32 inxpect_kfuncs` (pmc, tsc): 1 = call the module's kfuncs.
/// Set it to 0 in the open object before loading where the module is absent.
pub const MAP_RODATA: &str = ".rodata.inxpect";
/// Where `inxpect_kfuncs` sits in [`MAP_RODATA`]'s value (bytes). Not 0: the
/// value is page-aligned, and arm64's JIT writes an address with zero low
/// bits in fewer instructions, which would make a probe's cost depend on
/// where the map landed.
pub const RODATA_KFUNCS_OFFSET: usize = 4;
pub const MAP_STATS: &str = "inxpect_stats";
/// `inxpect_ids[i] == i` (read-only): region i's key of the stats map.
pub const SYM_IDS: &str = "inxpect_ids";
/// The histogram bucket of every delta below 2^12 (read-only, one byte each).
pub const SYM_BUCKETS: &str = "inxpect_bucket_lo";
/// Deltas below this take END's inlined statistics; others call the runtime.
pub const FAST_DELTA: i32 = 1 << 12;
pub const MAP_PCPU: &str = "inxpect_pcpu";
pub const MAP_PERF: &str = "inxpect_perf";

/// Where END's statistics are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stats {
    /// Inline for a delta below 2^12 from valid reads, the runtime's call
    /// otherwise: ~20 fewer instructions per measurement, but the verifier
    /// walks the inline code once per state reaching the site (about twice
    /// the `verified_insns` of `Call` on the bundled apps).
    #[default]
    Inline,
    /// Always the runtime's `__inxpect_record` (a global function, verified
    /// once): for programs near the verifier's limits.
    Call,
}

impl std::str::FromStr for Stats {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Stats, String> {
        Stats::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown statistics code {s:?} (inline or call)"))
    }
}

impl Stats {
    pub const ALL: [Stats; 2] = [Stats::Inline, Stats::Call];

    pub fn name(self) -> &'static str {
        match self {
            Stats::Inline => "inline",
            Stats::Call => "call",
        }
    }

    /// A manifest without the field predates the inline statistics.
    fn before_inline() -> Stats {
        Stats::Call
    }
}

/// Where the counter values come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Counter {
    /// Hardware counters through the inxpect module's kfunc (rdpmc).
    Pmc,
    /// The time-stamp counter through the module's kfunc (rdtsc).
    Tsc,
    /// `bpf_ktime_get_ns`: nanoseconds, no module needed.
    Ktime,
    /// `bpf_perf_event_read_value` on a perf event the loader opens: perf's own mechanism.
    Perf,
}

impl std::str::FromStr for Counter {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Counter, String> {
        Counter::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown counter {s:?} (one of pmc, tsc, ktime, perf)"))
    }
}

impl Counter {
    pub const ALL: [Counter; 4] = [Counter::Pmc, Counter::Tsc, Counter::Ktime, Counter::Perf];

    pub fn name(self) -> &'static str {
        match self {
            Counter::Pmc => "pmc",
            Counter::Tsc => "tsc",
            Counter::Ktime => "ktime",
            Counter::Perf => "perf",
        }
    }
    /// Whether the kernel demands a GPL-compatible program for it (kfuncs, perf helper).
    pub fn needs_gpl(self) -> bool {
        !matches!(self, Counter::Ktime)
    }
    pub fn unit(self) -> &'static str {
        match self {
            Counter::Pmc => "events",
            Counter::Tsc => "cycles",
            Counter::Ktime => "ns",
            Counter::Perf => "perf",
        }
    }
}

/// The runtime object for a backend and a number of PMC slots.
pub fn object(counter: Counter, events: usize) -> &'static [u8] {
    match (counter, events) {
        (Counter::Ktime, _) => include_bytes!("../../runtime-bpf/obj/runtime-ktime.o"),
        (Counter::Perf, _) => include_bytes!("../../runtime-bpf/obj/runtime-perf.o"),
        (Counter::Tsc, _) => include_bytes!("../../runtime-bpf/obj/runtime-tsc.o"),
        (Counter::Pmc, 1) => include_bytes!("../../runtime-bpf/obj/runtime-pmc1.o"),
        (Counter::Pmc, 2) => include_bytes!("../../runtime-bpf/obj/runtime-pmc2.o"),
        (Counter::Pmc, 3) => include_bytes!("../../runtime-bpf/obj/runtime-pmc3.o"),
        (Counter::Pmc, _) => include_bytes!("../../runtime-bpf/obj/runtime-pmc4.o"),
    }
}

/// The runtime's histogram buckets (`bucket()` in runtime.bpf.c): a value
/// below 2^SUB_BITS has its own bucket; a value v < 2^32 with
/// k = floor(log2 v) is in bucket (k - SUB_BITS + 1) * SUB + the SUB_BITS
/// bits of v below its top bit; 2^32 and more share the last bucket.
pub mod hist {
    use super::{HIST_BUCKETS, HIST_SUB, HIST_SUB_BITS};

    /// The bucket of value `v` (as the runtime computes it).
    pub fn bucket(v: u64) -> usize {
        if v >> 32 != 0 {
            return HIST_BUCKETS - 1;
        }
        if v < HIST_SUB as u64 {
            return v as usize;
        }
        let k = 63 - v.leading_zeros();
        (k - HIST_SUB_BITS + 1) as usize * HIST_SUB
            + ((v >> (k - HIST_SUB_BITS)) as usize & (HIST_SUB - 1))
    }

    /// The integers bucket `b` holds, `lo..=hi`; the last bucket has no
    /// upper bound (`u64::MAX`).
    pub fn range(b: usize) -> (u64, u64) {
        if b < HIST_SUB {
            return (b as u64, b as u64);
        }
        if b >= HIST_BUCKETS - 1 {
            return (1 << 32, u64::MAX);
        }
        let k = (b / HIST_SUB) as u32 + HIST_SUB_BITS - 1;
        let w = 1u64 << (k - HIST_SUB_BITS);
        let lo = (1u64 << k) + (b % HIST_SUB) as u64 * w;
        (lo, lo + w - 1)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn buckets_tile_the_values_in_order() {
            let mut next = 0u64;
            for b in 0..HIST_BUCKETS - 1 {
                let (lo, hi) = range(b);
                assert_eq!(lo, next, "bucket {b}");
                assert!(hi >= lo);
                assert_eq!(bucket(lo), b);
                assert_eq!(bucket(hi), b);
                // Width at most 1/16 of the smallest value in it.
                assert!((hi - lo) * HIST_SUB as u64 <= lo.max(1), "bucket {b}");
                next = hi + 1;
            }
            assert_eq!(next, 1 << 32);
            assert_eq!(bucket(1 << 32), HIST_BUCKETS - 1);
            assert_eq!(bucket(u64::MAX), HIST_BUCKETS - 1);
        }
    }
}

/// Byte layout of `struct inxpect_stats` (one per region per CPU).
pub mod stats {
    use super::{u64_at as at, HIST_BUCKETS, MAX_EVENTS};
    /// Measurements dropped for an invalid read (never in sum/min/max/hist).
    pub const INVALID: usize = 8;
    /// Of the measurements, those a tail call ended.
    pub const TAIL_ENDS: usize = 16;
    pub const SUM: usize = 32;
    /// Stored complemented (`!min`): 0 is "no measurement", so the first
    /// one needs no test of a count.
    pub const MIN: usize = SUM + 8 * MAX_EVENTS;
    pub const MAX: usize = MIN + 8 * MAX_EVENTS;
    pub const HIST: usize = MAX + 8 * MAX_EVENTS;
    pub const SIZE: usize = HIST + 8 * MAX_EVENTS * HIST_BUCKETS;

    /// One CPU's completed measurements: each added one to a bucket of
    /// event 0's histogram (no count is kept: one store fewer per
    /// measurement).
    pub fn count(v: &[u8]) -> u64 {
        (0..HIST_BUCKETS).map(|b| at(v, HIST + 8 * b)).sum()
    }

    /// One CPU's minimum of event `e`, if it measured anything.
    pub fn min(v: &[u8], e: usize) -> Option<u64> {
        match at(v, MIN + 8 * e) {
            0 => None,
            m => Some(!m),
        }
    }
}

/// The native-endian u64 at byte `o` of a map value, 0 past its end.
pub fn u64_at(v: &[u8], o: usize) -> u64 {
    v.get(o..o + 8)
        .map(|s| u64::from_ne_bytes(s.try_into().expect("8 bytes")))
        .unwrap_or(0)
}

/// Byte layout of the head of `struct inxpect_pcpu`.
pub mod pcpu {
    /// The windows the sampled runs' countdowns held, paid ahead (`mask`
    /// at each sampled run, which `SAMPLED` counts); the runs so far:
    /// `RUNS + SAMPLED - LEFT`.
    pub const RUNS: usize = 0;
    /// Sampled runs so far: the current sampled run's id too (what a held
    /// START records in `run`).
    pub const SAMPLED: usize = 8;
    /// `LEFT + 1` while a tail call is under way (0 otherwise).
    pub const TAIL: usize = 24;
    pub const NO_COUNTER: usize = 32;
    /// The sampling countdown: 0 = the next run is sampled (and reloads it
    /// with the config's mask), else the run takes one off.
    pub const LEFT: usize = 40;
    /// What `LEFT` was last loaded with: the run is sampled while equal.
    pub const LOAD: usize = 48;
    /// `held[MAX_REGIONS]`, each `{ run, val[MAX_EVENTS] }`.
    pub const HELD: usize = 64;
    pub const HELD_SIZE: usize = 8 + 8 * super::MAX_EVENTS;
    /// `tail_now[MAX_EVENTS]`, after `held`.
    pub const TAIL_NOW: usize = HELD + HELD_SIZE * super::MAX_REGIONS;
    /// `fast[FAST_REGIONS]`: END's inline statistics of the first regions
    /// (see [`fast`]), reached through the pointer END already holds.
    pub const FAST: usize = TAIL_NOW + 8 * super::MAX_EVENTS;
    pub const FAST_REGIONS: u32 = 16;
    /// Room after the last region's histogram for any byte-sized bucket
    /// index, which is all the verifier knows of one read from the table.
    pub const FAST_SLACK: usize = 8 * (256 - fast::BUCKETS);
    pub const SIZE: usize = FAST + fast::SIZE * FAST_REGIONS as usize + FAST_SLACK;

    /// Where region `id`'s fast statistics start, if it has them.
    pub fn fast(id: u32) -> Option<usize> {
        (id < FAST_REGIONS).then(|| FAST + fast::SIZE * id as usize)
    }

    /// Byte layout of `struct inxpect_fast`: event 0 of a delta below
    /// [`super::super::FAST_DELTA`], as in `inxpect_stats`.
    pub mod fast {
        pub const SUM: usize = 0;
        /// Complemented, as `stats::MIN`.
        pub const MIN: usize = 8;
        pub const MAX: usize = 16;
        pub const HIST: usize = 24;
        /// The buckets of deltas below `FAST_DELTA` (2^12): 0..=143.
        pub const BUCKETS: usize = 144;
        pub const SIZE: usize = HIST + 8 * BUCKETS;
    }
}

/// Byte layout of `struct inxpect_config`.
pub mod config {
    /// `disabled[MAX_REGIONS / 64]`: bit i set, region i is not measured
    /// (stored as the run mask wants it, so a sampled run copies it).
    pub const DISABLED: usize = 0;
    pub const SAMPLE_SHIFT: usize = 8 * (super::MAX_REGIONS / 64);
    pub const ABI: usize = SAMPLE_SHIFT + 4;
    /// `2^k - 1`, what the program entry reads (the shift is for people).
    pub const SAMPLE_MASK: usize = ABI + 4;
    pub const SIZE: usize = SAMPLE_MASK + 8;

    /// Writes a sampling rate of 1 in `2^shift` (shift and mask) into a
    /// config value.
    pub fn write_sampling(b: &mut [u8], shift: u32) {
        let mask = if shift >= 64 {
            u64::MAX
        } else {
            (1u64 << shift) - 1
        };
        b[SAMPLE_SHIFT..SAMPLE_SHIFT + 4].copy_from_slice(&shift.to_ne_bytes());
        b[SAMPLE_MASK..SAMPLE_MASK + 8].copy_from_slice(&mask.to_ne_bytes());
    }
}

/// The self-description written to the `.inxpect` section of the output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub abi: u32,
    pub mode: String,
    pub counter: Counter,
    /// Where END's statistics are computed (`Inline` applies to one-event
    /// backends at program-level sites).
    #[serde(default = "Stats::before_inline")]
    pub stats: Stats,
    pub events: usize,
    pub programs: Vec<String>,
    /// The programs whose sampled-out runs take an uninstrumented copy of
    /// their code (`--unsampled-copy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copied: Vec<String>,
    pub regions: Vec<RegionDesc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionDesc {
    pub id: u32,
    pub name: String,
    pub function: String,
    pub section: String,
    pub starts: Vec<Site>,
    pub ends: Vec<Site>,
    /// The regions a measurement of this one may run inside: the innermost
    /// open at its STARTs, through the calls that reach them (rewriter's
    /// `nest`). Empty: a top-level region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<u32>,
    /// With `parents`: some START is also reached with none of them open.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub top: bool,
    /// Why the nesting could not be worked out, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nest_unknown: Option<String>,
}

impl RegionDesc {
    /// Whether a selector (`name`, `function:name` or the id) picks it: a
    /// bare name picks that name in every function.
    pub fn matches(&self, sel: &str) -> bool {
        RegionDesc::selected(sel, &self.name, &self.function) || self.id.to_string() == sel
    }
    pub fn selected(sel: &str, name: &str, function: &str) -> bool {
        sel == name || sel.split_once(':') == Some((function, name))
    }
    /// `function:name`: unique in an object.
    pub fn qualified(&self) -> String {
        format!("{}:{}", self.function, self.name)
    }
}

/// A probe site: byte offset in the input object's section, and its source line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub offset: u64,
    pub line: Option<String>,
    /// The probe code of this site inside the region's measured window
    /// (absent from `--list`, which emits nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// All of the site's probe code on its measured path, its read
    /// included: what it adds to a region around it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole: Option<Window>,
}

/// What a site's own code puts between a region's two counter reads, on the
/// measured path: after START's read, or before END's. The loader subtracts
/// the calibration region whose sites have the same `imm64` and `calls`,
/// adjusted by the difference in `insns`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Instructions other than loads of 64-bit immediates and calls, as the
    /// x86-64 and arm64 JITs emit them: one each, a conditional jump two
    /// (compare, branch).
    pub insns: u32,
    /// 64-bit immediates (map or global addresses: their JIT length may
    /// depend on the address).
    pub imm64: u32,
    /// Calls (helpers, runtime functions, kfuncs): code of their own.
    pub calls: u32,
    /// Of `calls`, calls of the runtime's BPF functions.
    #[serde(default)]
    pub runtime_calls: u32,
}

pub const MANIFEST_SECTION: &str = ".inxpect";

#[cfg(test)]
mod tests {
    /// `struct inxpect_fast` holds every bucket of a delta the inline path
    /// takes, and the per-CPU state stays addressable (an instruction's
    /// offset is an i16) and within a per-CPU value's 32 KB.
    #[test]
    fn fast_statistics_fit() {
        assert_eq!(hist::bucket(FAST_DELTA as u64 - 1) + 1, pcpu::fast::BUCKETS);
        assert_eq!(hist::bucket(FAST_DELTA as u64), pcpu::fast::BUCKETS);
        assert!(pcpu::SIZE <= i16::MAX as usize && pcpu::SIZE <= 32 << 10);
        let last = pcpu::fast(pcpu::FAST_REGIONS - 1).unwrap();
        assert!(last + pcpu::fast::HIST + 8 * 256 <= pcpu::SIZE);
        assert_eq!(pcpu::fast(pcpu::FAST_REGIONS), None);
    }

    use super::*;

    /// The symbols the probes load between two counter reads sit off the
    /// page-aligned start of their map's value (see [`RODATA_KFUNCS_OFFSET`]),
    /// and the flag where the loaders write it.
    #[test]
    fn probe_symbols_are_off_page_boundaries() {
        for counter in Counter::ALL {
            for events in 1..=MAX_EVENTS {
                let elf = crate::elf::Elf::parse(object(counter, events)).expect("runtime parses");
                let ro = elf
                    .section_index(MAP_RODATA)
                    .expect("runtime has .rodata.inxpect");
                let at = |name: &str| {
                    let s = elf
                        .symbols
                        .iter()
                        .find(|s| s.name == name)
                        .unwrap_or_else(|| panic!("{counter:?}: no {name}"));
                    assert_eq!(usize::from(s.shndx), ro, "{counter:?}: {name}'s section");
                    s.value as usize
                };
                assert_eq!(at("inxpect_kfuncs"), RODATA_KFUNCS_OFFSET, "{counter:?}");
                assert_ne!(at("inxpect_zero") % 4096, 0, "{counter:?}");
                assert_ne!(RODATA_KFUNCS_OFFSET % 4096, 0);
            }
        }
    }
}
