//! Event names to perf_event_attr terms: raw `rNNNN`, the core PMU's sysfs
//! event files, perf's generic names (with `:u`/`:k`/`:h` modifiers), and
//! every vendor name libpfm4 knows (`MEM_LOAD_RETIRED.L3_MISS`,
//! `ls_dmnd_fills_from_sys.dram_io_far`, `INST_RETIRED:ANY_P:c=1:k`).

mod pfm;

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const PERF_TYPE_HARDWARE: u32 = 0;
pub const PERF_TYPE_SOFTWARE: u32 = 1;
pub const PERF_TYPE_RAW: u32 = 4;
pub const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
/// struct inxpect_event.flags (kmod/inxpect_uapi.h).
pub const EXCLUDE_USER: u32 = 1 << 0;
pub const EXCLUDE_KERNEL: u32 = 1 << 1;
pub const EXCLUDE_HV: u32 = 1 << 2;

const CPU_PMU: &str = "/sys/bus/event_source/devices/cpu";

/// One counter, as perf_event_open(2) and the module's SET_EVENTS take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerfAttr {
    pub name: String,
    pub type_: u32,
    pub config: u64,
    pub config1: u64,
    pub config2: u64,
    /// EXCLUDE_* bits: the privilege levels not counted.
    pub exclude: u32,
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
            exclude: 0,
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
            exclude: self.exclude,
        };
        inxpect_loader::sys::perf_event_open(&ev, cpu)
            .with_context(|| format!("perf_event_open({}) on CPU {cpu}", self.name))
    }
}

/// Resolves one event name.
pub fn resolve(name: &str) -> Result<PerfAttr> {
    let a = resolve_any(name)?;
    if a.exclude & EXCLUDE_KERNEL != 0 && a.is_hardware() {
        bail!(
            "event {name:?} excludes the kernel: XDP and tc programs run in the kernel, \
             so every count would be 0 (drop the modifier, or use :k)"
        );
    }
    Ok(a)
}

fn resolve_any(name: &str) -> Result<PerfAttr> {
    let mk = |type_, config| PerfAttr {
        name: name.to_string(),
        type_,
        config,
        config1: 0,
        config2: 0,
        exclude: 0,
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
    // perf's generic names, with perf's privilege modifiers.
    let (base, mods) = name.split_once(':').unwrap_or((name, ""));
    let generic = HARDWARE
        .iter()
        .map(|(n, id)| (n, PERF_TYPE_HARDWARE, id))
        .chain(SOFTWARE.iter().map(|(n, id)| (n, PERF_TYPE_SOFTWARE, id)))
        .find(|(n, _, _)| **n == base);
    if let Some((_, type_, id)) = generic {
        let mut a = mk(type_, *id);
        a.exclude = privilege_modifiers(mods).with_context(|| {
            format!("event {name:?}: perf's modifiers are u (user), k (kernel), h (hypervisor)")
        })?;
        return Ok(a);
    }
    from_pfm(name)
}

/// perf's `:u`, `:k`, `:h` (any combination): count only those levels.
fn privilege_modifiers(mods: &str) -> Result<u32> {
    if mods.is_empty() {
        return Ok(0);
    }
    let mut keep = 0;
    for c in mods.chars() {
        keep |= match c {
            'u' => EXCLUDE_USER,
            'k' => EXCLUDE_KERNEL,
            'h' => EXCLUDE_HV,
            _ => bail!("unknown modifier {c:?}"),
        };
    }
    Ok((EXCLUDE_USER | EXCLUDE_KERNEL | EXCLUDE_HV) & !keep)
}

/// A vendor name through libpfm4, as given (libpfm's `EVENT:UMASK`) or in
/// perf's and the vendors' `EVENT.UMASK` form.
fn from_pfm(name: &str) -> Result<PerfAttr> {
    let lib = pfm::lib().map_err(anyhow::Error::msg)?;
    let mut tries = vec![name.to_string()];
    if let Some((ev, rest)) = name.split_once('.') {
        tries.push(format!("{ev}:{rest}"));
    }
    let pmus = lib.pmus();
    let amd = amd_mnemonic(&lib, &pmus, name);
    if let Some((_, ev, rest)) = &amd {
        tries.push(format!("{ev}{rest}"));
    }
    let mut err = pfm::PFM_ERR_NOTFOUND;
    for t in &tries {
        match lib.encode(t) {
            Ok(attr) => return pfm_attr(name, &attr),
            // The dotted form may name an event the first try did not.
            Err(e) => {
                if err == pfm::PFM_ERR_NOTFOUND {
                    err = e
                }
            }
        }
    }
    let on = match pmus.as_slice() {
        [] => " (libpfm4 finds no PMU model on this machine; LIBPFM_FORCE_PMU=<model> encodes for another)".to_string(),
        p => format!(
            " (PMU {})",
            p.iter()
                .map(|p| format!("{}: {}", p.name, p.desc))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let close = match &amd {
        // Matched against libpfm's name, shown with the user's mnemonic.
        Some((mnemonic, ev, rest)) => {
            let ev = ev.split("::").nth(1).unwrap_or(ev);
            close_matches(&lib, &pmus, &format!("{ev}{rest}"))
                .into_iter()
                .map(|c| c.replacen(ev, mnemonic, 1))
                .collect()
        }
        None => close_matches(&lib, &pmus, name),
    };
    let what = match err {
        pfm::PFM_ERR_NOTFOUND => format!("unknown event {name:?}"),
        pfm::PFM_ERR_ATTR => format!("unknown unit mask or modifier in event {name:?}"),
        pfm::PFM_ERR_UMASK => format!("event {name:?} needs a unit mask"),
        e => format!("event {name:?}: {}", pfm::strerror(e)),
    };
    if !close.is_empty() {
        bail!("{what}{on}; close: {}", close.join(", "));
    }
    let mut known: Vec<&str> = HARDWARE.iter().map(|(n, _)| *n).collect();
    known.extend(SOFTWARE.iter().map(|(n, _)| *n));
    bail!(
        "{what}{on}; generic names: {}, rNNNN for a raw event{}",
        known.join(", "),
        if has_pmu() {
            ", or a name in /sys/bus/event_source/devices/cpu/events"
        } else {
            ""
        }
    )
}

/// AMD's PPR mnemonics for Family 17h/19h core events (Zen 1-4), the names
/// `perf list` shows (`ls_dmnd_fills_from_sys`), by event code (PMCxNNN);
/// libpfm names the same events descriptively
/// (`DEMAND_DATA_CACHE_FILLS_FROM_SYSTEM`). Mapped by code onto the event
/// of the AMD PMU libpfm found, so an entry applies only where that PMU
/// has the code. From the PPRs' "Core Performance Monitor Counters"
/// chapters (Family 17h Model 31h, Family 19h Models 01h and 11h).
const AMD_MNEMONICS: &[(&str, u64)] = &[
    ("ls_mab_alloc", 0x41),
    ("ls_refills_from_sys", 0x43),
    ("ls_dmnd_fills_from_sys", 0x43),
    ("ls_any_fills_from_sys", 0x44),
    ("ls_l1_d_tlb_miss", 0x45),
    ("ls_sw_pf_dc_fill", 0x59),
    ("ls_sw_pf_dc_fills", 0x59),
    ("ls_hw_pf_dc_fill", 0x5a),
    ("ls_hw_pf_dc_fills", 0x5a),
    ("l2_request_g1", 0x60),
    ("l2_cache_req_stat", 0x64),
    ("ls_not_halted_cyc", 0x76),
    ("ex_ret_instr", 0xc0),
    ("ex_ret_cops", 0xc1),
    ("ex_ret_ops", 0xc1),
    ("ex_ret_brn", 0xc2),
    ("ex_ret_brn_misp", 0xc3),
    ("ex_ret_brn_tkn", 0xc4),
    ("ex_ret_brn_tkn_misp", 0xc5),
    ("ex_ret_near_ret", 0xc8),
    ("ex_ret_near_ret_mispred", 0xc9),
    ("ex_ret_brn_ind_misp", 0xca),
    ("ex_ret_mmx_fp_instr", 0xcb),
    ("ex_ret_cond", 0xd1),
];

/// `name` split into its AMD mnemonic, libpfm's name of the event with
/// that code on a detected AMD PMU (`pmu::EVENT`), and the rest
/// (`:UMASK:mods`).
fn amd_mnemonic(lib: &pfm::Lib, pmus: &[pfm::Pmu], name: &str) -> Option<(String, String, String)> {
    let cut = name.find(['.', ':']).unwrap_or(name.len());
    let (ev, rest) = name.split_at(cut);
    let code = AMD_MNEMONICS
        .iter()
        .find(|(m, _)| m.eq_ignore_ascii_case(ev))?
        .1;
    let rest = rest.strip_prefix(['.', ':']).unwrap_or(rest);
    pmus.iter()
        .filter(|p| p.name.starts_with("amd64_fam"))
        .find_map(|p| {
            let (event, umasks) = lib.event_with_code(p, code)?;
            // The umask (first term), by libpfm's name or as an
            // abbreviation of it (perf's `mem_io_remote` for `MEM_IO_RMT`).
            let mut terms: Vec<String> = rest.split(':').map(str::to_string).collect();
            // Not a modifier (`k`, `u`, `c=1`).
            let umask = |u: &&mut String| u.len() > 1 && !u.contains('=');
            if let Some(u) = terms.first_mut().filter(umask) {
                if !umasks.iter().any(|m| m.eq_ignore_ascii_case(u)) {
                    let hits: Vec<&String> = umasks.iter().filter(|m| abbreviates(m, u)).collect();
                    if let [one] = hits.as_slice() {
                        *u = one.to_string();
                    }
                }
            }
            let rest: String = terms
                .iter()
                .filter(|t| !t.is_empty())
                .map(|t| format!(":{t}"))
                .collect();
            Some((ev.to_string(), format!("{}::{event}", p.name), rest))
        })
}

/// Whether libpfm's `short` (`MEM_IO_RMT`) abbreviates `long`
/// (`mem_io_remote`) word by word: as many `_` words, each starting with
/// the same letter and made of the long word's letters in order.
fn abbreviates(short: &str, long: &str) -> bool {
    let (s, l) = (short.to_ascii_lowercase(), long.to_ascii_lowercase());
    let (sw, lw): (Vec<&str>, Vec<&str>) = (s.split('_').collect(), l.split('_').collect());
    sw.len() == lw.len()
        && sw.iter().zip(&lw).all(|(a, b)| {
            a.chars().next() == b.chars().next() && {
                let mut it = b.chars();
                a.chars().all(|c| it.any(|d| d == c))
            }
        })
}

/// libpfm's attr, as far as the module and perf_event_open here carry it.
fn pfm_attr(name: &str, a: &pfm::Attr) -> Result<PerfAttr> {
    // exclude_user, exclude_kernel, exclude_hv: bits 4, 5, 6, carried;
    // exclude_guest (20), libpfm's default (mg=0), dropped: an XDP program
    // never runs in a guest of this kernel.
    let carried = 0b111 << 4 | 1 << 20;
    if a.bits() & !carried != 0 || a.other_fields() {
        bail!(
            "event {name:?}: a modifier sets perf_event_attr fields inxpect does not pass on \
             (only the umasks, c=, e=, i=, and the privilege levels u, k, h)"
        );
    }
    let b = a.bits() >> 4;
    let bit = |i: u64, f: u32| if b & (1 << i) != 0 { f } else { 0 };
    Ok(PerfAttr {
        name: name.to_string(),
        type_: a.type_(),
        config: a.config(),
        config1: a.config1(),
        config2: a.config2(),
        exclude: bit(0, EXCLUDE_USER) | bit(1, EXCLUDE_KERNEL) | bit(2, EXCLUDE_HV),
    })
}

/// Up to 5 names of the machine's PMUs nearest to `name` (edit distance on
/// lowercase `event.umask`), in the dotted form perf and the vendors use.
fn close_matches(lib: &pfm::Lib, pmus: &[pfm::Pmu], name: &str) -> Vec<String> {
    let norm = |s: &str| s.to_ascii_lowercase().replacen(':', ".", 1);
    // Modifiers after the umask do not help the match.
    let want = norm(name);
    let want: String = want.splitn(3, [':']).take(1).collect();
    let mut scored: Vec<(usize, String)> = Vec::new();
    for p in pmus {
        for (ev, umasks) in lib.events(p) {
            let mut names = vec![ev.clone()];
            names.extend(umasks.iter().map(|u| format!("{ev}.{u}")));
            for n in names {
                let d = strsim::levenshtein(&want, &n.to_ascii_lowercase());
                scored.push((d, n));
            }
        }
    }
    let limit = (want.len() / 3).max(2);
    scored.retain(|(d, _)| *d <= limit);
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(5).map(|(_, n)| n).collect()
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
        exclude: 0,
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
    fn umask_abbreviations() {
        assert!(abbreviates("MEM_IO_RMT", "mem_io_remote"));
        assert!(abbreviates("LCL_L2", "local_l2"));
        assert!(!abbreviates("MEM_IO_RMT", "mem_io_local"));
        assert!(!abbreviates("NEAR_CACHE_NEAR_FAR", "near_cache"));
        assert!(!abbreviates("RMT", "mrt"));
    }

    #[test]
    fn generic_names_take_perf_modifiers() {
        let k = resolve("cycles:k").unwrap();
        assert_eq!((k.type_, k.config), (PERF_TYPE_HARDWARE, 0));
        assert_eq!(k.exclude, EXCLUDE_USER | EXCLUDE_HV);
        assert_eq!(resolve("instructions:kh").unwrap().exclude, EXCLUDE_USER);
        assert_eq!(resolve("instructions").unwrap().exclude, 0);
        // XDP runs in the kernel: a user-only event would count nothing.
        let e = resolve("cycles:u").unwrap_err().to_string();
        assert!(e.contains("excludes the kernel"), "{e}");
        assert!(resolve("cycles:x").is_err());
    }

    /// One forced PMU model's cases: (name, perf type, config, exclude).
    type Case = (&'static str, u32, u64, u32);

    /// Encodings from the vendors' event tables, written from the
    /// documented event select / unit mask / counter mask codes (not from
    /// libpfm). Intel: SDM Vol. 3B ch. 19 / perfmon event files (Skylake,
    /// Ice Lake, Sapphire Rapids core events): config = event | umask << 8
    /// | edge << 18 | inv << 23 | cmask << 24. AMD: the PPRs' "Core
    /// Performance Monitor Counters" (PMCxNNN event select, UnitMask bits):
    /// config = event[7:0] | umask << 8 | event[11:8] << 32.
    const VENDOR_CASES: &[(&str, &[Case])] = &[
        (
            "skl",
            &[
                // MEM_LOAD_RETIRED.L3_MISS: event D1H, umask 20H.
                ("MEM_LOAD_RETIRED.L3_MISS", PERF_TYPE_RAW, 0x20d1, 0),
                ("mem_load_retired.l3_miss", PERF_TYPE_RAW, 0x20d1, 0),
                ("MEM_LOAD_RETIRED:L3_MISS", PERF_TYPE_RAW, 0x20d1, 0),
                // MEM_LOAD_RETIRED.L1_HIT: D1H / 01H, kernel only.
                (
                    "MEM_LOAD_RETIRED.L1_HIT:k",
                    PERF_TYPE_RAW,
                    0x01d1,
                    EXCLUDE_USER,
                ),
                // INST_RETIRED.ANY_P: C0H / 00H; with cmask 1 and inv.
                ("INST_RETIRED.ANY_P", PERF_TYPE_RAW, 0x00c0, 0),
                ("INST_RETIRED:ANY_P:c=1:i=1", PERF_TYPE_RAW, 0x0180_00c0, 0),
                // BR_MISP_RETIRED.ALL_BRANCHES: C5H / 00H.
                ("BR_MISP_RETIRED.ALL_BRANCHES", PERF_TYPE_RAW, 0x00c5, 0),
                // CYCLE_ACTIVITY.STALLS_L3_MISS: A3H / 06H, CMask 6.
                (
                    "CYCLE_ACTIVITY.STALLS_L3_MISS",
                    PERF_TYPE_RAW,
                    0x0600_06a3,
                    0,
                ),
                // Generic names stay perf's own.
                ("cycles", PERF_TYPE_HARDWARE, 0, 0),
            ],
        ),
        (
            "icl",
            &[
                // MEM_LOAD_RETIRED.L3_MISS: D1H / 20H.
                ("MEM_LOAD_RETIRED.L3_MISS", PERF_TYPE_RAW, 0x20d1, 0),
                // BR_MISP_RETIRED.ALL_BRANCHES: C5H / 00H.
                ("BR_MISP_RETIRED.ALL_BRANCHES", PERF_TYPE_RAW, 0x00c5, 0),
            ],
        ),
        (
            "spr",
            &[
                // MEM_LOAD_RETIRED.L3_MISS: D1H / 20H.
                ("MEM_LOAD_RETIRED.L3_MISS", PERF_TYPE_RAW, 0x20d1, 0),
            ],
        ),
        (
            "amd64_fam19h_zen3",
            &[
                // PPR Family 19h Model 01h, PMCx043 LsDmndFillsFromSys,
                // UnitMask bit 6 MemIoRmt.
                (
                    "ls_dmnd_fills_from_sys.mem_io_rmt",
                    PERF_TYPE_RAW,
                    0x4043,
                    0,
                ),
                (
                    "DEMAND_DATA_CACHE_FILLS_FROM_SYSTEM:MEM_IO_RMT",
                    PERF_TYPE_RAW,
                    0x4043,
                    0,
                ),
                // PMCx0C0 ExRetInstr, PMCx0C3 ExRetBrnMisp, PMCx076
                // LsNotHaltedCyc. AMD's PMU has a hypervisor level (Intel's
                // tables in libpfm do not): `:k` excludes it too, as perf's.
                ("ex_ret_instr", PERF_TYPE_RAW, 0xc0, 0),
                (
                    "ex_ret_brn_misp:k",
                    PERF_TYPE_RAW,
                    0xc3,
                    EXCLUDE_USER | EXCLUDE_HV,
                ),
                ("ls_not_halted_cyc", PERF_TYPE_RAW, 0x76, 0),
            ],
        ),
        (
            "amd64_fam19h_zen4",
            &[
                // PPR Family 19h Model 11h, PMCx043 LsDmndFillsFromSys,
                // UnitMask bit 6 DramIoFar, bit 3 DramIoNear.
                (
                    "ls_dmnd_fills_from_sys.dram_io_far",
                    PERF_TYPE_RAW,
                    0x4043,
                    0,
                ),
                (
                    "ls_dmnd_fills_from_sys.dram_io_near",
                    PERF_TYPE_RAW,
                    0x0843,
                    0,
                ),
                // PMCx044 LsAnyFillsFromSys, DramIoFar.
                (
                    "ls_any_fills_from_sys.dram_io_far",
                    PERF_TYPE_RAW,
                    0x4044,
                    0,
                ),
                // PMCx0C2 ExRetBrn.
                ("ex_ret_brn", PERF_TYPE_RAW, 0xc2, 0),
            ],
        ),
        (
            "amd64_fam17h_zen2",
            &[
                // PPR Family 17h Model 31h, PMCx0C0 ExRetInstr, PMCx0C1
                // ExRetCops.
                ("ex_ret_instr", PERF_TYPE_RAW, 0xc0, 0),
                ("ex_ret_cops", PERF_TYPE_RAW, 0xc1, 0),
            ],
        ),
    ];

    /// Unknown names, per model: (name, text the error must contain).
    const CLOSE_CASES: &[(&str, &str, &str)] = &[
        (
            "skl",
            "MEM_LOAD_RETIRED.L3_MIS",
            "close: MEM_LOAD_RETIRED.L3_MISS",
        ),
        ("skl", "MEM_LOAD_RETIRD", "close: MEM_LOAD_RETIRED"),
        ("skl", "mem_load_retired.l3_miss:u", "excludes the kernel"),
        ("skl", "INST_RETIRED:ANY_P:period=1000", "does not pass on"),
        (
            "amd64_fam19h_zen3",
            "ls_dmnd_fills_from_sys.mem_io_rem",
            "close: ls_dmnd_fills_from_sys.MEM_IO_RMT",
        ),
        (
            "amd64_fam19h_zen4",
            "ls_dmnd_fills_from_sys.dram_io_fa",
            "close: ls_dmnd_fills_from_sys.DRAM_IO_FAR",
        ),
    ];

    /// libpfm takes its PMU model once per process, from the environment:
    /// the test runs itself again per model, in a child process with
    /// LIBPFM_FORCE_PMU and INXPECT_PFM_MODEL set, which checks that model.
    #[test]
    fn vendor_names_encode_to_the_documented_values() {
        if let Ok(model) = std::env::var("INXPECT_PFM_MODEL") {
            return check_forced_model(&model);
        }
        let exe = std::env::current_exe().unwrap();
        for (model, cases) in VENDOR_CASES {
            let closes = CLOSE_CASES.iter().filter(|c| c.0 == *model).count();
            let o = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "events::tests::vendor_names_encode_to_the_documented_values",
                ])
                .args(["--nocapture", "--test-threads", "1"])
                .env("LIBPFM_FORCE_PMU", model)
                .env("INXPECT_PFM_MODEL", model)
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{model}: {out}{err}");
            // The child checked every case (it cannot pass by doing none).
            let want = format!(
                "{model}: {} encodings, {closes} errors checked",
                cases.len()
            );
            assert!(
                out.contains(&want) || err.contains(&want),
                "{want:?}: {out}{err}"
            );
        }
    }

    fn check_forced_model(model: &str) {
        let lib = pfm::lib().unwrap();
        let pmus: Vec<String> = lib.pmus().into_iter().map(|p| p.name).collect();
        assert_eq!(pmus, vec![model], "libpfm did not take the forced model");
        drop(lib);
        let cases = VENDOR_CASES.iter().find(|(m, _)| *m == model).unwrap().1;
        for &(name, type_, config, exclude) in cases {
            let a = resolve(name).unwrap_or_else(|e| panic!("{model} {name}: {e:#}"));
            assert_eq!(
                (a.type_, a.config, a.config1, a.config2, a.exclude),
                (type_, config, 0, 0, exclude),
                "{model} {name}: type, config {:#x}, config1, config2, exclude",
                a.config
            );
        }
        let mut closes = 0;
        for &(_, name, want) in CLOSE_CASES.iter().filter(|c| c.0 == model) {
            let e = format!("{:#}", resolve(name).unwrap_err());
            assert!(e.contains(want), "{model} {name}: {want:?} not in {e}");
            closes += 1;
        }
        println!(
            "{model}: {} encodings, {closes} errors checked",
            cases.len()
        );
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
