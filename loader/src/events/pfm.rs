//! A small FFI to libpfm4 (Debian `libpfm4`, `<perfmon/pfmlib_perf_event.h>`):
//! the vendors' event names and their umasks and modifiers, encoded as a
//! perf_event_attr by `pfm_get_os_event_encoding(PFM_OS_PERF_EVENT_EXT)`.
//! The library keeps global state (initialised once, with the PMU model
//! LIBPFM_FORCE_PMU names if set), so every call goes through one lock.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, MutexGuard};

const PFM_SUCCESS: c_int = 0;
pub const PFM_ERR_NOTFOUND: c_int = -4;
pub const PFM_ERR_UMASK: c_int = -6;
pub const PFM_ERR_ATTR: c_int = -8;
const PFM_OS_PERF_EVENT_EXT: c_int = 2;
const PFM_ATTR_UMASK: c_int = 1;
/// Kernel, user and hypervisor: names without modifiers count everything,
/// as the module and perf_event_open did before libpfm (no exclude bit).
const PLM_ALL: c_int = 0x01 | 0x08 | 0x10;
/// Above the last `pfm_pmu_t` of libpfm 4.13 (about 570); unknown ids fail.
const PMU_IDS: c_int = 1024;

#[repr(C)]
struct PmuInfo {
    name: *const c_char,
    desc: *const c_char,
    size: usize,
    pmu: c_int,
    type_: c_int,
    nevents: c_int,
    first_event: c_int,
    max_encoding: c_int,
    num_cntrs: c_int,
    num_fixed_cntrs: c_int,
    /// is_present:1, is_dfl:1, reserved:30.
    flags: u32,
}

#[repr(C)]
struct EventInfo {
    name: *const c_char,
    desc: *const c_char,
    equiv: *const c_char,
    size: usize,
    code: u64,
    pmu: c_int,
    dtype: c_int,
    idx: c_int,
    nattrs: c_int,
    reserved: c_int,
    flags: u32,
}

#[repr(C)]
struct AttrInfo {
    name: *const c_char,
    desc: *const c_char,
    equiv: *const c_char,
    size: usize,
    code: u64,
    type_: c_int,
    idx: c_int,
    ctrl: c_int,
    flags: u32,
    dfl: u64,
}

#[repr(C)]
struct PerfEncodeArg {
    attr: *mut c_void,
    fstr: *mut *mut c_char,
    size: usize,
    idx: c_int,
    cpu: c_int,
    flags: c_int,
    pad0: c_int,
}

#[link(name = "pfm")]
extern "C" {
    fn pfm_initialize() -> c_int;
    fn pfm_strerror(code: c_int) -> *const c_char;
    fn pfm_get_pmu_info(pmu: c_int, output: *mut PmuInfo) -> c_int;
    fn pfm_get_event_next(idx: c_int) -> c_int;
    fn pfm_get_event_info(idx: c_int, os: c_int, output: *mut EventInfo) -> c_int;
    fn pfm_get_event_attr_info(eidx: c_int, aidx: c_int, os: c_int, output: *mut AttrInfo)
        -> c_int;
    fn pfm_get_os_event_encoding(
        s: *const c_char,
        dfl_plm: c_int,
        os: c_int,
        arg: *mut c_void,
    ) -> c_int;
}

/// perf_event_attr as libpfm 4.13 declares it (PERF_ATTR_SIZE_VER7).
pub const ATTR_SIZE: usize = 128;

/// The encoded attr, as the bytes of a perf_event_attr.
pub struct Attr(pub [u64; ATTR_SIZE / 8]);

impl Attr {
    pub fn type_(&self) -> u32 {
        self.0[0] as u32
    }
    pub fn config(&self) -> u64 {
        self.0[1]
    }
    /// The bitfield word: disabled, inherit, pinned, exclusive,
    /// exclude_user (4), exclude_kernel (5), exclude_hv (6), ...
    pub fn bits(&self) -> u64 {
        self.0[5]
    }
    pub fn config1(&self) -> u64 {
        self.0[7]
    }
    pub fn config2(&self) -> u64 {
        self.0[8]
    }
    /// Any field other than type, size, config, config1, config2 and the
    /// bitfield word: what a modifier like `period=` or `precise` sets.
    pub fn other_fields(&self) -> bool {
        self.0
            .iter()
            .enumerate()
            .any(|(i, v)| !matches!(i, 0 | 1 | 5 | 7 | 8) && *v != 0)
    }
}

/// One PMU model libpfm found on this machine (or was forced to).
pub struct Pmu {
    pub name: String,
    pub desc: String,
    first_event: c_int,
}

/// The initialised library; holding it is holding the lock.
pub struct Lib {
    init: bool,
}

static LIB: Mutex<Lib> = Mutex::new(Lib { init: false });

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libpfm returns NUL-terminated static strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

pub fn strerror(code: c_int) -> String {
    // SAFETY: pfm_strerror returns a static string for any code.
    cstr(unsafe { pfm_strerror(code) })
}

/// The library, initialised on first use.
pub fn lib() -> Result<MutexGuard<'static, Lib>, String> {
    let mut g = LIB.lock().unwrap_or_else(|e| e.into_inner());
    if !g.init {
        // SAFETY: no arguments; called under the lock.
        let rc = unsafe { pfm_initialize() };
        if rc != PFM_SUCCESS {
            return Err(format!("libpfm4: {}", strerror(rc)));
        }
        g.init = true;
    }
    Ok(g)
}

impl Lib {
    /// Encodes one event string (libpfm syntax: `EVENT[:UMASK][:mod...]`).
    pub fn encode(&self, name: &str) -> Result<Attr, c_int> {
        let c = CString::new(name).map_err(|_| PFM_ERR_NOTFOUND)?;
        let mut attr = Attr([0; ATTR_SIZE / 8]);
        attr.0[0] = (ATTR_SIZE as u64) << 32; // size (high half of word 0, little-endian)
        #[cfg(target_endian = "big")]
        compile_error!("Attr assumes little-endian perf_event_attr words");
        let mut arg = PerfEncodeArg {
            attr: attr.0.as_mut_ptr().cast(),
            fstr: std::ptr::null_mut(),
            size: std::mem::size_of::<PerfEncodeArg>(),
            idx: 0,
            cpu: 0,
            flags: 0,
            pad0: 0,
        };
        // SAFETY: a valid string and argument block whose attr has the size
        // it declares; under the lock.
        let rc = unsafe {
            pfm_get_os_event_encoding(
                c.as_ptr(),
                PLM_ALL,
                PFM_OS_PERF_EVENT_EXT,
                (&mut arg as *mut PerfEncodeArg).cast(),
            )
        };
        if rc != PFM_SUCCESS {
            return Err(rc);
        }
        Ok(attr)
    }

    /// The PMUs libpfm detected (or was forced to), without its generic
    /// `perf` tables.
    pub fn pmus(&self) -> Vec<Pmu> {
        let mut out = Vec::new();
        for id in 0..PMU_IDS {
            // SAFETY: zeroed output with its size set; under the lock.
            let mut info: PmuInfo = unsafe { std::mem::zeroed() };
            info.size = std::mem::size_of::<PmuInfo>();
            if unsafe { pfm_get_pmu_info(id, &mut info) } != PFM_SUCCESS {
                continue;
            }
            let name = cstr(info.name);
            if info.flags & 1 == 0 || name.starts_with("perf") {
                continue;
            }
            out.push(Pmu {
                name,
                desc: cstr(info.desc),
                first_event: info.first_event,
            });
        }
        out
    }

    /// The name and umasks of `pmu`'s event with raw code `code`.
    pub fn event_with_code(&self, pmu: &Pmu, code: u64) -> Option<(String, Vec<String>)> {
        self.each_event(pmu)
            .find(|(_, c, _)| *c == code)
            .map(|(n, _, u)| (n, u))
    }

    /// Every event of `pmu`: name, raw code, umask names.
    fn each_event<'a>(
        &'a self,
        pmu: &Pmu,
    ) -> impl Iterator<Item = (String, u64, Vec<String>)> + 'a {
        let mut idx = pmu.first_event;
        std::iter::from_fn(move || {
            while idx >= 0 {
                let this = idx;
                // SAFETY: any index; -1 ends the PMU's list.
                idx = unsafe { pfm_get_event_next(idx) };
                if let Some(e) = self.event_at(this) {
                    return Some(e);
                }
            }
            None
        })
    }

    fn event_at(&self, idx: c_int) -> Option<(String, u64, Vec<String>)> {
        // SAFETY: zeroed output with its size set; under the lock.
        let mut e: EventInfo = unsafe { std::mem::zeroed() };
        e.size = std::mem::size_of::<EventInfo>();
        if unsafe { pfm_get_event_info(idx, PFM_OS_PERF_EVENT_EXT, &mut e) } != PFM_SUCCESS {
            return None;
        }
        let mut umasks = Vec::new();
        for a in 0..e.nattrs {
            // SAFETY: as above.
            let mut ai: AttrInfo = unsafe { std::mem::zeroed() };
            ai.size = std::mem::size_of::<AttrInfo>();
            let rc = unsafe { pfm_get_event_attr_info(idx, a, PFM_OS_PERF_EVENT_EXT, &mut ai) };
            if rc == PFM_SUCCESS && ai.type_ == PFM_ATTR_UMASK {
                umasks.push(cstr(ai.name));
            }
        }
        Some((cstr(e.name), e.code, umasks))
    }

    /// Every event of `pmu` with its umasks' names (empty for none).
    pub fn events(&self, pmu: &Pmu) -> Vec<(String, Vec<String>)> {
        self.each_event(pmu).map(|(n, _, u)| (n, u)).collect()
    }
}
