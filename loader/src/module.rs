//! The inxpect kernel module: load/unload/status, counter backend selection,
//! and the /dev/inxpect ioctls (mirror of kmod/inxpect_uapi.h, ABI 2).

use std::ffi::CString;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use inxpect_rewriter::runtime::Counter;

use crate::events::{self, PerfAttr};

pub const DEVICE: &str = "/dev/inxpect";
pub const ABI_VERSION: u32 = 2;
pub const MAX_SLOTS: usize = 4;
const INFO_HAS_PMU: u32 = 1;

const fn ioc(dir: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | (0xB5 << 8) | nr
}
const IOC_GET_INFO: u32 = ioc(2, 0, 32);
const IOC_SET_EVENTS: u32 = ioc(1, 1, 136);
const IOC_CLEAR: u32 = ioc(0, 2, 0);
const IOC_GET_OWNER: u32 = ioc(2, 4, 160);
const OWNER_SELF: u32 = 1;

#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct Info {
    pub abi_version: u32,
    pub max_slots: u32,
    pub nr_active: u32,
    pub flags: u32,
    pub nr_cpu_ids: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Event {
    type_: u32,
    flags: u32,
    config: u64,
    config1: u64,
    config2: u64,
}

#[repr(C)]
#[derive(Default)]
struct SetEvents {
    nr_events: u32,
    reserved: u32,
    events: [Event; MAX_SLOTS],
}

/// Who holds the PMC configuration (GET_OWNER); all zero when nobody does.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct Owner {
    pub pid: i32,
    pub uid: u32,
    comm: [u8; 16],
    pub nr_events: u32,
    pub flags: u32,
    events: [Event; MAX_SLOTS],
}

impl Owner {
    pub fn comm(&self) -> String {
        let n = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.comm[..n]).into_owned()
    }

    /// Events as `type:config` pairs (names are a user-space matter).
    pub fn events(&self) -> Vec<String> {
        self.events
            .iter()
            .take(self.nr_events as usize)
            .map(|e| match (e.type_, e.config) {
                (0, 0) => "cycles".to_string(),
                (0, 1) => "instructions".to_string(),
                (t, c) => format!("type {t} config {c:#x}"),
            })
            .collect()
    }

    pub fn held(&self) -> bool {
        self.nr_events != 0
    }

    /// The line `inxpect` prints when another process holds the counters.
    pub fn busy_message(&self) -> String {
        let who = if self.pid > 0 {
            format!("pid {} ({})", self.pid, self.comm())
        } else {
            format!("a process outside this pid namespace ({})", self.comm())
        };
        format!(
            "the PMCs are held by {who} with events {}: stop it (its counters are freed when it exits), or measure alongside it with --counter tsc or perf",
            self.events().join(", ")
        )
    }
}

const _: () = assert!(std::mem::size_of::<Info>() == 32);
const _: () = assert!(std::mem::size_of::<Owner>() == 160);
const _: () = assert!(std::mem::size_of::<SetEvents>() == 136);

fn ioctl<T>(f: &File, req: u32, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: req encodes size_of::<T>() (checked above) and arg is valid.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), req as _, arg as *mut T) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// GET_INFO, if the device is there.
pub fn info() -> Result<Option<Info>> {
    if !Path::new(DEVICE).exists() {
        return Ok(None);
    }
    let f = File::open(DEVICE).with_context(|| format!("opening {DEVICE}"))?;
    let mut i = Info::default();
    ioctl(&f, IOC_GET_INFO, &mut i).context("INXPECT_IOC_GET_INFO")?;
    if i.abi_version != ABI_VERSION {
        bail!(
            "{DEVICE} speaks ABI {}, this inxpect speaks {ABI_VERSION}",
            i.abi_version
        );
    }
    Ok(Some(i))
}

/// GET_OWNER on an open device.
fn owner_of(f: &File) -> std::io::Result<Owner> {
    let mut o = Owner::default();
    ioctl(f, IOC_GET_OWNER, &mut o)?;
    Ok(o)
}

/// Who holds the counters, if the module is there and anyone does.
pub fn owner() -> Result<Option<Owner>> {
    if !Path::new(DEVICE).exists() {
        return Ok(None);
    }
    let f = File::open(DEVICE).with_context(|| format!("opening {DEVICE}"))?;
    let o = owner_of(&f).context("INXPECT_IOC_GET_OWNER")?;
    Ok(o.held().then_some(o))
}

/// The open device that owns the PMC configuration. Dropping it sends
/// CLEAR; closing alone would do (the module releases the counters when
/// the owner's file closes, also when `inxpect` is killed), CLEAR just makes
/// the end explicit.
pub struct Pmc {
    f: File,
}

impl Drop for Pmc {
    fn drop(&mut self) {
        let mut none = 0u8;
        let _ = ioctl(&self.f, IOC_CLEAR, &mut none);
    }
}

/// Programs the PMC slots; the events stay configured while the device is open.
pub fn set_events(evs: &[PerfAttr]) -> Result<Pmc> {
    if evs.is_empty() || evs.len() > MAX_SLOTS {
        bail!(
            "the pmc counter takes 1 to {MAX_SLOTS} events (-e), got {}",
            evs.len()
        );
    }
    let f = File::open(DEVICE).with_context(|| format!("opening {DEVICE}"))?;
    let mut c = SetEvents {
        nr_events: evs.len() as u32,
        ..Default::default()
    };
    for (slot, e) in c.events.iter_mut().zip(evs) {
        *slot = Event {
            type_: e.type_,
            flags: e.exclude,
            config: e.config,
            config1: e.config1,
            config2: e.config2,
        };
    }
    ioctl(&f, IOC_SET_EVENTS, &mut c).map_err(|e| {
        // EBUSY is also the PMU's "does not fit": the owner tells them apart.
        if e.raw_os_error() == Some(libc::EBUSY) {
            if let Ok(o) = owner_of(&f) {
                if o.held() && o.flags & OWNER_SELF == 0 {
                    return anyhow::anyhow!("programming the PMCs: {}", o.busy_message());
                }
            }
        }
        let why = match e.raw_os_error() {
            Some(libc::ENODEV) => "no hardware PMU on this machine",
            Some(libc::EBUSY) => "the PMU cannot count all these events at once",
            Some(libc::EINVAL) => "the PMU does not accept one of these events",
            Some(libc::E2BIG) => "too many events",
            _ => "",
        };
        anyhow::anyhow!(
            "programming the PMCs: {e}{}{why}",
            if why.is_empty() { "" } else { ": " }
        )
    })?;
    Ok(Pmc { f })
}

/// What `--counter auto` picks, and why (one line for stderr).
pub fn auto_counter() -> (Counter, String) {
    match info() {
        Ok(Some(i)) if i.flags & INFO_HAS_PMU != 0 => (Counter::Pmc, String::new()),
        Ok(Some(_)) => (
            Counter::Tsc,
            "inxpect module loaded but no hardware PMU; using tsc".into(),
        ),
        Ok(None) => (
            Counter::Ktime,
            format!("no inxpect module ({DEVICE} missing); using ktime"),
        ),
        Err(e) => (
            Counter::Ktime,
            format!("inxpect module unusable ({e:#}); using ktime"),
        ),
    }
}

/// Checks that a module-backed counter can work before loading anything.
/// `instrumented` names an object already built for `c`: switching
/// counters then means instrumenting its original again, so the hint says
/// that rather than `--counter` (which such an object refuses).
pub fn require_module(c: Counter, instrumented: Option<&str>) -> Result<()> {
    if !matches!(c, Counter::Tsc | Counter::Pmc) {
        return Ok(());
    }
    let what = match instrumented {
        Some(obj) => format!("{obj} is instrumented for the {} counter, which", c.name()),
        None => format!("the {} counter", c.name()),
    };
    let switch = |to: &str| match instrumented {
        Some(_) => format!("give inxpect the original (uninstrumented) object with --counter {to}"),
        None => format!("use --counter {to}"),
    };
    match info()? {
        None => bail!(
            "{what} needs the inxpect kernel module ({DEVICE} missing): `inxpect module load`, or {}",
            switch("ktime")
        ),
        Some(i) if c == Counter::Pmc && i.flags & INFO_HAS_PMU == 0 => bail!(
            "{what} needs a hardware PMU and the inxpect module reports none: {}",
            switch("tsc")
        ),
        Some(_) => Ok(()),
    }
}

fn lockdown() -> Option<String> {
    let t = fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    // The active mode is bracketed: "none [integrity] confidentiality".
    let active = t.split_whitespace().find(|w| w.starts_with('['))?;
    Some(active.trim_matches(['[', ']']).to_string())
}

fn modules_supported() -> bool {
    Path::new("/proc/modules").exists()
}

fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Where `module load` looks without --path, in order: next to the binary
/// (an install), the workspace's kmod/ beside cargo's target/<profile>/ (a
/// build tree), then the running kernel's installed module (dkms or
/// `make modules_install`). Absolute, whatever the current directory.
pub fn default_paths() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.canonicalize().ok())
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        v.push(dir.join("inxpect.ko"));
        if let Some(ws) = dir.parent().and_then(Path::parent) {
            v.push(ws.join("kmod/inxpect.ko"));
        }
    }
    let lib = Path::new("/lib/modules").join(release());
    v.push(lib.join("updates/dkms/inxpect.ko"));
    v.push(lib.join("extra/inxpect.ko"));
    v
}

/// The module file to load: `path`, or the first of [`default_paths`] that exists.
pub fn module_path(path: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = path {
        return Ok(p.to_path_buf());
    }
    let tried = default_paths();
    match tried.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "no inxpect.ko found (looked at {}): build it (`make -C kmod`, kmod/README.md) or give --path",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn load(path: &Path) -> Result<()> {
    if !modules_supported() {
        bail!("cannot load {}: this kernel ({}) has loadable modules disabled (no /proc/modules: CONFIG_MODULES off); use --counter ktime or perf", path.display(), release());
    }
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let params = CString::default();
    // SAFETY: a valid fd and an empty NUL-terminated parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    let why = match e.raw_os_error() {
        Some(libc::ENOSYS) => "loadable modules are disabled in this kernel".to_string(),
        Some(libc::EEXIST) => "the module is already loaded".to_string(),
        Some(libc::ENOEXEC) | Some(libc::EINVAL) => format!(
            "invalid module format: {} was built for another kernel (this is {}); rebuild it against this kernel's headers",
            path.display(),
            release()
        ),
        Some(libc::EPERM) => match lockdown() {
            Some(m) if m != "none" => format!("refused by kernel lockdown ({m}); use --counter perf or ktime"),
            _ => "permission denied (needs CAP_SYS_MODULE; signature enforcement?)".to_string(),
        },
        Some(libc::EKEYREJECTED) | Some(libc::EBADMSG) => "module signature rejected".to_string(),
        _ => String::new(),
    };
    if why.is_empty() {
        bail!("loading {}: {e}", path.display())
    }
    bail!("loading {}: {why} ({e})", path.display())
}

pub fn unload() -> Result<()> {
    if !modules_supported() {
        bail!("this kernel has loadable modules disabled (CONFIG_MODULES off): nothing to unload");
    }
    let name = CString::new("inxpect").expect("no NUL");
    // SAFETY: a NUL-terminated module name.
    let rc = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOENT) => bail!("the inxpect module is not loaded"),
        Some(libc::EWOULDBLOCK) | Some(libc::EBUSY) => {
            bail!("the inxpect module is in use (a loaded program or an open {DEVICE}); stop `inxpect run` first")
        }
        _ => bail!("unloading inxpect: {e}"),
    }
}

#[derive(serde::Serialize, Debug)]
pub struct Status {
    pub kernel: String,
    pub modules_supported: bool,
    pub lockdown: Option<String>,
    pub loaded: bool,
    pub btf: bool,
    pub device: bool,
    pub abi_version: Option<u32>,
    pub max_slots: Option<u32>,
    pub active_slots: Option<u32>,
    pub module_has_pmu: Option<bool>,
    /// `pid (comm)` of the process holding the PMCs, if any.
    pub pmc_holder: Option<String>,
    pub pmu: bool,
    pub counter_auto: String,
    pub note: String,
}

pub fn status() -> Status {
    let i = info();
    let (c, note) = auto_counter();
    let i = i.ok().flatten();
    Status {
        kernel: release(),
        modules_supported: modules_supported(),
        lockdown: lockdown(),
        loaded: Path::new("/sys/module/inxpect").exists(),
        btf: Path::new("/sys/kernel/btf/inxpect").exists(),
        device: Path::new(DEVICE).exists(),
        abi_version: i.map(|i| i.abi_version),
        max_slots: i.map(|i| i.max_slots),
        active_slots: i.map(|i| i.nr_active),
        module_has_pmu: i.map(|i| i.flags & INFO_HAS_PMU != 0),
        pmc_holder: owner()
            .ok()
            .flatten()
            .map(|o| format!("{} ({}): {}", o.pid, o.comm(), o.events().join(", "))),
        pmu: events::has_pmu(),
        counter_auto: c.name().into(),
        note,
    }
}

pub fn print_status(s: &Status) {
    let yn = |b: bool| if b { "yes" } else { "no" };
    println!("kernel            {}", s.kernel);
    println!(
        "modules           {}",
        if s.modules_supported {
            "supported"
        } else {
            "disabled (CONFIG_MODULES off)"
        }
    );
    println!(
        "lockdown          {}",
        s.lockdown.as_deref().unwrap_or("n/a")
    );
    println!("module loaded     {}", yn(s.loaded));
    println!("module BTF        {}", yn(s.btf));
    println!("device {DEVICE}  {}", yn(s.device));
    if let Some(v) = s.abi_version {
        println!(
            "device ABI        {v}  slots {}/{}  PMU {}",
            s.active_slots.unwrap_or(0),
            s.max_slots.unwrap_or(0),
            yn(s.module_has_pmu.unwrap_or(false))
        );
    }
    if let Some(h) = &s.pmc_holder {
        println!("PMCs held by      pid {h}");
    }
    println!("hardware PMU      {}", yn(s.pmu));
    println!(
        "counter (auto)    {}{}",
        s.counter_auto,
        if s.note.is_empty() {
            String::new()
        } else {
            format!("  ({})", s.note)
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_message_names_the_holder() {
        let mut o = Owner {
            pid: 4242,
            nr_events: 2,
            ..Default::default()
        };
        o.comm[..7].copy_from_slice(b"inxpect");
        o.events[1] = Event {
            type_: 4,
            config: 0x3c,
            ..Default::default()
        };
        assert!(o.held());
        let m = o.busy_message();
        assert!(
            m.contains("pid 4242 (inxpect)") && m.contains("cycles, type 4 config 0x3c"),
            "{m}"
        );
        assert!(!Owner::default().held());
    }
}
