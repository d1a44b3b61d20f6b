//! Links the probe runtime into the user's object with libbpf's static
//! linker, so maps, globals, runtime functions and their BTF arrive the way
//! libbpf itself merges objects; we then only add calls and relocations.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::io::Write;

pub fn link(user: &[u8], runtime: &[u8]) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("linked.o");
    let mut files = Vec::new();
    for (name, bytes) in [("user.o", user), ("runtime.o", runtime)] {
        let p = dir.path().join(name);
        std::fs::File::create(&p)?.write_all(bytes)?;
        files.push(p);
    }
    let cpath = |p: &std::path::Path| {
        CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| Error::Link(e.to_string()))
    };
    let out_c = cpath(&out)?;
    // SAFETY: libbpf's linker API takes NUL-terminated paths and owns nothing of
    // ours; the linker is freed on every path below.
    unsafe {
        let l = libbpf_sys::bpf_linker__new(out_c.as_ptr(), std::ptr::null_mut());
        if l.is_null() {
            return Err(Error::Link(format!(
                "cannot create the linker: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut err = 0;
        for (f, what) in files.iter().zip(["the input object", "the probe runtime"]) {
            let c = cpath(f)?;
            err = libbpf_sys::bpf_linker__add_file(l, c.as_ptr(), std::ptr::null());
            if err != 0 {
                libbpf_sys::bpf_linker__free(l);
                return Err(Error::Link(format!(
                    "libbpf refused {what}: {} (libbpf's message is above)",
                    std::io::Error::from_raw_os_error(-err)
                )));
            }
        }
        if err == 0 {
            err = libbpf_sys::bpf_linker__finalize(l);
        }
        libbpf_sys::bpf_linker__free(l);
        if err != 0 {
            return Err(Error::Link(format!(
                "finalize: {}",
                std::io::Error::from_raw_os_error(-err)
            )));
        }
    }
    Ok(std::fs::read(&out)?)
}
