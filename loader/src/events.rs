//! Event names to perf_event_attr terms: generic perf names, the core PMU's
//! sysfs event files, and raw `rNNNN`.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const PERF_TYPE_HARDWARE: u32 = 0;
pub const PERF_TYPE_SOFTWARE: u32 = 1;
pub const PERF_TYPE_RAW: u32 = 4;
pub const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;

const CPU_PMU: &str = "/sys/bus/event_source/devices/cpu";

/// One counter, as perf_event_open(2) and the module's SET_EVENTS take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerfAttr {
    pub name: String,
    pub type_: u32,
    pub config: u64,
    pub config1: u64,
    pub config2: u64,
}

/// Generic names perf(1) accepts, as PERF_TYPE_HARDWARE ids.
const HARDWARE: &[(&str, u64)] = &[
    ("cycles", 0),
    ("cpu-cycles", 0),
    ("instructions", 1),
    ("cache-references", 2),
    ("cache-misses", 3),
    ("branch-instructions", 4),
    ("branches", 4),
    ("branch-misses", 5),
    ("bus-cycles", 6),
    ("stalled-cycles-frontend", 7),
    ("stalled-cycles-backend", 8),
    ("ref-cycles", 9),
];

const SOFTWARE: &[(&str, u64)] = &[("cpu-clock", 0), ("task-clock", 1)];

pub fn has_pmu() -> bool {
    Path::new(CPU_PMU).exists()
}

impl PerfAttr {
    pub fn cpu_clock() -> PerfAttr {
        PerfAttr {
            name: "cpu-clock".into(),
            type_: PERF_TYPE_SOFTWARE,
            config: PERF_COUNT_SW_CPU_CLOCK,
            config1: 0,
            config2: 0,
        }
    }

    pub fn is_hardware(&self) -> bool {
        self.type_ != PERF_TYPE_SOFTWARE
    }

    /// perf_event_open(2) on `cpu` for every task.
    pub fn open(&self, cpu: u32) -> Result<std::os::fd::OwnedFd> {
        let ev = inxpect_loader::sys::EventConfig {
            type_: self.type_,
            config: self.config,
            config1: self.config1,
            config2: self.config2,
        };
        inxpect_loader::sys::perf_event_open(&ev, cpu)
            .with_context(|| format!("perf_event_open({}) on CPU {cpu}", self.name))
    }
}

/// Resolves one event name.
pub fn resolve(name: &str) -> Result<PerfAttr> {
    let mk = |type_, config| PerfAttr {
        name: name.to_string(),
        type_,
        config,
        config1: 0,
        config2: 0,
    };
    if let Some(hex) = name.strip_prefix('r') {
        if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let v = u64::from_str_radix(hex, 16).with_context(|| format!("raw event {name:?}"))?;
            return Ok(mk(PERF_TYPE_RAW, v));
        }
    }
    // The PMU's own names first: they are what the hardware calls them.
    if let Some(a) = from_sysfs(Path::new(CPU_PMU), name)? {
        return Ok(a);
    }
    if let Some((_, id)) = HARDWARE.iter().find(|(n, _)| *n == name) {
        return Ok(mk(PERF_TYPE_HARDWARE, *id));
    }
    if let Some((_, id)) = SOFTWARE.iter().find(|(n, _)| *n == name) {
        return Ok(mk(PERF_TYPE_SOFTWARE, *id));
    }
    let mut known: Vec<&str> = HARDWARE.iter().map(|(n, _)| *n).collect();
    known.extend(SOFTWARE.iter().map(|(n, _)| *n));
    bail!(
        "unknown event {name:?} (known: {}, rNNNN for a raw event{})",
        known.join(", "),
        if has_pmu() {
            ", or a name in /sys/bus/event_source/devices/cpu/events"
        } else {
            ""
        }
    )
}

pub fn resolve_list(list: &str) -> Result<Vec<PerfAttr>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(resolve)
        .collect()
}

/// `events/NAME` holds e.g. `event=0x3c,umask=0x01`; `format/FIELD` says
/// where each field goes, e.g. `config:0-7` or `config1:0-15,32-47`.
fn from_sysfs(pmu: &Path, name: &str) -> Result<Option<PerfAttr>> {
    if name.contains('/') || name.starts_with('.') {
        return Ok(None);
    }
    let Ok(text) = fs::read_to_string(pmu.join("events").join(name)) else {
        return Ok(None);
    };
    let type_: u32 = fs::read_to_string(pmu.join("type"))
        .context("reading the PMU type")?
        .trim()
        .parse()
        .context("parsing the PMU type")?;
    let mut a = PerfAttr {
        name: name.to_string(),
        type_,
        config: 0,
        config1: 0,
        config2: 0,
    };
    for term in text.trim().split(',').filter(|t| !t.is_empty()) {
        let (field, val) = term.split_once('=').unwrap_or((term, "1"));
        let val = parse_num(val).with_context(|| format!("event {name}: value {val:?}"))?;
        let fmt = fs::read_to_string(pmu.join("format").join(field))
            .with_context(|| format!("event {name}: no format for {field:?}"))?;
        place(&mut a, fmt.trim(), val).with_context(|| format!("event {name}: format {fmt:?}"))?;
    }
    Ok(Some(a))
}

fn parse_num(s: &str) -> Result<u64> {
    Ok(match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16)?,
        None => s.parse()?,
    })
}

/// Scatters `val`'s low bits over the bit ranges of a format spec.
fn place(a: &mut PerfAttr, fmt: &str, mut val: u64) -> Result<()> {
    let (reg, ranges) = fmt.split_once(':').context("no ':'")?;
    let target = match reg {
        "config" => &mut a.config,
        "config1" => &mut a.config1,
        "config2" => &mut a.config2,
        other => bail!("unknown register {other}"),
    };
    for r in ranges.split(',') {
        let (lo, hi) = match r.split_once('-') {
            Some((l, h)) => (l.parse::<u32>()?, h.parse::<u32>()?),
            None => (r.parse::<u32>()?, r.parse::<u32>()?),
        };
        if hi < lo || hi > 63 {
            bail!("bad range {r}");
        }
        let width = hi - lo + 1;
        let mask = if width == 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        *target |= (val & mask) << lo;
        val = if width == 64 { 0 } else { val >> width };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(resolve("instructions").unwrap().config, 1);
        assert_eq!(resolve("ref-cycles").unwrap().type_, PERF_TYPE_HARDWARE);
        let r = resolve("r01c2").unwrap();
        assert_eq!((r.type_, r.config), (PERF_TYPE_RAW, 0x1c2));
        assert!(resolve("no-such-event").is_err());
    }

    #[test]
    fn format_placement() {
        let mut a = PerfAttr::cpu_clock();
        a.config = 0;
        place(&mut a, "config:0-7", 0x3c).unwrap();
        place(&mut a, "config:8-15", 0x01).unwrap();
        place(&mut a, "config1:0-3,8-11", 0xab).unwrap();
        assert_eq!(a.config, 0x013c);
        assert_eq!(a.config1, 0xa0b);
    }
}
