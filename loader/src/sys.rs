//! Small kernel interfaces shared by the loader and the benchmarks.

use std::os::fd::{FromRawFd, OwnedFd};

use libbpf_rs::OpenObject;

/// The fields of a perf event the loader sets; the rest of
/// `perf_event_attr` stays zero (counting, all tasks, not inherited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventConfig {
    pub type_: u32,
    pub config: u64,
    pub config1: u64,
    pub config2: u64,
    /// Privilege levels not counted: bit 0 user, 1 kernel, 2 hypervisor
    /// (kmod/inxpect_uapi.h's INXPECT_EV_EXCLUDE_*).
    pub exclude: u32,
}

impl EventConfig {
    /// The software `cpu-clock` event (PERF_TYPE_SOFTWARE,
    /// PERF_COUNT_SW_CPU_CLOCK): what perf reads where there is no PMU.
    pub const CPU_CLOCK: EventConfig = EventConfig {
        type_: 1,
        config: 0,
        config1: 0,
        config2: 0,
        exclude: 0,
    };
}

/// perf_event_open(2) of `ev` on `cpu`, for every task, close-on-exec.
pub fn perf_event_open(ev: &EventConfig, cpu: u32) -> std::io::Result<OwnedFd> {
    // perf_event_attr, PERF_ATTR_SIZE_VER7 (128 bytes): type at 0, size at
    // 4, config at 8, config1 at 56, config2 at 64.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&ev.type_.to_ne_bytes());
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&ev.config.to_ne_bytes());
    attr[56..64].copy_from_slice(&ev.config1.to_ne_bytes());
    attr[64..72].copy_from_slice(&ev.config2.to_ne_bytes());
    // The bitfield word at 40: exclude_user is bit 4, exclude_kernel 5,
    // exclude_hv 6.
    let bits = u64::from(ev.exclude & 0b111) << 4;
    attr[40..48].copy_from_slice(&bits.to_ne_bytes());
    // SAFETY: attr is a valid perf_event_attr of the size it declares.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1i32,
            cpu as i32,
            -1i32,
            8u64, // PERF_FLAG_FD_CLOEXEC
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the module's kfuncs are there to call (its BTF is registered).
pub fn module_kfuncs_present() -> bool {
    std::path::Path::new("/sys/kernel/btf/inxpect").exists()
}

/// Sets the runtime's `inxpect_kfuncs` flag (the u32 at
/// `RODATA_KFUNCS_OFFSET` of `.rodata.inxpect`) before loading: the runtime calls the module's kfuncs
/// only while it is 1, and with 0 the verifier drops those calls, so the
/// object also loads where the module is absent. Returns whether the object
/// has the flag.
pub fn set_kfuncs_flag(open: &mut OpenObject, on: bool) -> bool {
    let mut found = false;
    for mut m in open.maps_mut() {
        if m.name().to_string_lossy().ends_with(".rodata.inxpect") {
            if let Some(v) = m.initial_value_mut() {
                let at = inxpect_rewriter::runtime::RODATA_KFUNCS_OFFSET;
                if v.len() >= at + 4 {
                    v[at..at + 4].copy_from_slice(&u32::from(on).to_ne_bytes());
                    found = true;
                }
            }
        }
    }
    found
}

/// Whether `p` is on a BPF filesystem (statfs magic BPF_FS_MAGIC).
pub fn is_bpffs(p: &std::path::Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs and a NUL-terminated path.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as u64 == 0xcafe_4a11
    }
}

/// The nearest existing directory at or above `p` (what a `create_dir_all`
/// of `p` would create the rest under).
pub fn existing_ancestor(p: &std::path::Path) -> std::path::PathBuf {
    let mut d = p.to_path_buf();
    while !d.exists() && d.pop() {}
    d
}

/// Root, or a process with CAP_BPF or CAP_SYS_ADMIN: without either, every
/// bpf() call the commands make fails (libbpf then hints RLIMIT_MEMLOCK,
/// which is not the cause).
pub fn has_bpf_caps() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let Ok(st) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let eff = st
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    eff & (1 << CAP_BPF | 1 << CAP_SYS_ADMIN) != 0
}
