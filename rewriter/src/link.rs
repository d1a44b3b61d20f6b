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
        CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| Error::Linker {
            step: "path",
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })
    };
    let out_c = cpath(&out)?;
    // SAFETY: libbpf's linker API takes NUL-terminated paths and owns nothing of
    // ours; the linker is freed on every path below.
    unsafe {
        let l = libbpf_sys::bpf_linker__new(out_c.as_ptr(), std::ptr::null_mut());
        if l.is_null() {
            return Err(Error::Linker {
                step: "could not start",
                source: std::io::Error::last_os_error(),
            });
        }
        let mut err = 0;
        for (f, what) in files
            .iter()
            .zip(["refused the input object", "refused the probe runtime"])
        {
            let c = cpath(f)?;
            err = libbpf_sys::bpf_linker__add_file(l, c.as_ptr(), std::ptr::null());
            if err != 0 {
                libbpf_sys::bpf_linker__free(l);
                return Err(Error::Linker {
                    step: what,
                    source: std::io::Error::from_raw_os_error(-err),
                });
            }
        }
        if err == 0 {
            err = libbpf_sys::bpf_linker__finalize(l);
        }
        libbpf_sys::bpf_linker__free(l);
        if err != 0 {
            return Err(Error::Linker {
                step: "failed to finalize",
                source: std::io::Error::from_raw_os_error(-err),
            });
        }
    }
    Ok(std::fs::read(&out)?)
}
