//! The counter backend, resolved once from the options and the linked
//! object: which runtime symbols the probes refer to and how a site reads
//! the counter itself.

use crate::elf::Elf;
use crate::error::{Error, Result};
use crate::runtime::{self, Counter};

/// How a site reads one counter without calling the runtime.
#[derive(Clone, Copy, Debug)]
pub enum Read {
    /// A helper with no argument (`bpf_ktime_get_ns`).
    Helper(i32),
    /// A module kfunc with no argument (extern symbol).
    Kfunc(usize),
}

/// Symbols of the linked runtime the inserted code uses.
#[derive(Debug)]
pub struct Backend {
    pub counter: Counter,
    pub events: usize,
    pub start: usize,
    pub end: usize,
    pub tail_enter: usize,
    pub pcpu: usize,
    pub zero: usize,
    pub config: usize,
    /// `inxpect_kfuncs` (pmc, tsc): 0 where the module is absent, a
    /// read-only value the verifier folds.
    pub kfunc_flag: Option<usize>,
    /// Sites read the counter themselves (one event, not `perf`): the read
    /// and `__inxpect_end_value`.
    pub inline: Option<(Read, usize)>,
    /// With `inline`: `__inxpect_record`, END's statistics alone (program-
    /// level sites check and clear the held START themselves).
    pub record: Option<usize>,
    /// END's read where it differs from START's (pmc: the module validates
    /// after END's read and before START's, outside the measurement).
    pub end_read: Option<Read>,
    /// With `record`: what END's inlined statistics address.
    pub stats: Option<StatsSyms>,
}

/// The symbols of END's inlined statistics (see `body::record_inline`).
#[derive(Clone, Copy, Debug)]
pub struct StatsSyms {
    /// The `inxpect_stats` map.
    pub map: usize,
    /// `inxpect_ids`: each region's key in read-only memory.
    pub ids: usize,
    /// `inxpect_bucket_lo`: the histogram bucket of every delta below 2^12.
    pub buckets: usize,
}

fn defined(elf: &Elf, name: &str, func: bool) -> Option<usize> {
    elf.symbols
        .iter()
        .position(|s| s.name == name && s.is_func() == func && s.shndx != 0)
}

fn required(elf: &Elf, name: &str, func: bool) -> Result<usize> {
    defined(elf, name, func).ok_or_else(|| Error::RuntimeSymbol(name.to_string()))
}

impl Backend {
    /// A function of the runtime (a bpf-to-bpf call, with a frame of its
    /// own), not a kfunc.
    pub fn is_runtime_fn(&self, sym: usize) -> bool {
        [self.start, self.end, self.tail_enter].contains(&sym)
            || self.record == Some(sym)
            || self.inline.is_some_and(|(_, end_value)| sym == end_value)
    }

    /// `read_fn`: a global function of the object that sites call to read
    /// the counter instead of the backend's read (a test hook: chosen
    /// values through the very code the probes run). `stats_code`: END's
    /// statistics inline (where the backend allows) or always a call.
    pub fn resolve(
        elf: &Elf,
        counter: Counter,
        events: usize,
        read_fn: Option<&str>,
        stats_code: crate::Stats,
    ) -> Result<Backend> {
        let ext = |name: &str| {
            elf.symbols
                .iter()
                .position(|y| y.name == name && y.shndx == 0)
                .ok_or_else(|| Error::RuntimeSymbol(name.to_string()))
        };
        let kfunc_flag = match counter {
            Counter::Pmc | Counter::Tsc => Some(required(elf, "inxpect_kfuncs", false)?),
            _ => None,
        };
        // The `_lo` kfuncs: low 32 bits, no argument (see the runtime).
        let read = match (counter, events) {
            (Counter::Ktime, _) => Some(Read::Helper(5)),
            (Counter::Tsc, _) => Some(Read::Kfunc(ext("inxpect_read_tsc_lo")?)),
            (Counter::Pmc, 1) => Some(Read::Kfunc(ext("inxpect_read_pmc0_lo")?)),
            _ => None,
        };
        let end_read = match (counter, events) {
            (Counter::Pmc, 1) => Some(Read::Kfunc(ext("inxpect_read_pmc0_lo_end")?)),
            _ => read,
        };
        let (read, end_read) = match (read_fn, read) {
            (Some(name), Some(_)) => {
                let f = Read::Kfunc(required(elf, name, true)?);
                (Some(f), Some(f))
            }
            (Some(name), None) => {
                return Err(Error::Layout(format!(
                    "{name}: a read function needs a backend whose sites read (one event, not perf)"
                )))
            }
            _ => (read, end_read),
        };
        let inline = match read {
            Some(r) => Some((r, required(elf, runtime::FN_END_VALUE, true)?)),
            None => None,
        };
        let record = match inline {
            Some(_) => Some(required(elf, runtime::FN_RECORD, true)?),
            None => None,
        };
        let stats = match record {
            Some(_) if stats_code == crate::Stats::Inline => Some(StatsSyms {
                map: required(elf, runtime::MAP_STATS, false)?,
                ids: required(elf, runtime::SYM_IDS, false)?,
                buckets: required(elf, runtime::SYM_BUCKETS, false)?,
            }),
            _ => None,
        };
        Ok(Backend {
            counter,
            events,
            start: required(elf, runtime::FN_START, true)?,
            end: required(elf, runtime::FN_END, true)?,
            tail_enter: required(elf, runtime::FN_TAIL_ENTER, true)?,
            pcpu: required(elf, runtime::MAP_PCPU, false)?,
            zero: required(elf, "inxpect_zero", false)?,
            config: required(elf, "inxpect_config", false)?,
            kfunc_flag,
            inline,
            record,
            end_read,
            stats,
        })
    }
}
