//! Network devices as the user names them: which namespace holds a device
//! that is not here, whether a device still exists, and who holds the XDP
//! program that makes a device busy.

use std::ffi::CString;
use std::fs;
use std::os::fd::AsRawFd;

use anyhow::{bail, Context, Result};

fn nametoindex(dev: &str) -> Result<u32> {
    let c = CString::new(dev).context("device name with NUL")?;
    // SAFETY: a NUL-terminated name.
    Ok(unsafe { libc::if_nametoindex(c.as_ptr()) })
}

/// The named network namespaces (/run/netns) that have a device `dev`.
/// Each is entered in a thread of its own: setns changes only the calling
/// thread, so this process stays where it is.
pub fn namespaces_with(dev: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let dev = dev.to_string();
            std::thread::spawn(move || -> Option<String> {
                let f = fs::File::open(&path).ok()?;
                // SAFETY: a namespace fd and a valid nstype, in this thread only.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return None;
                }
                (nametoindex(&dev).ok()? != 0).then_some(name)
            })
            .join()
            .ok()
            .flatten()
        })
        .collect();
    found.sort();
    found
}

/// The ifindex of `dev` in the current namespace; when there is none, the
/// error says which named namespaces have one (`netns`: the one given).
pub fn ifindex(dev: &str, netns: Option<&str>) -> Result<u32> {
    let i = nametoindex(dev)?;
    if i != 0 {
        return Ok(i);
    }
    let here = match netns {
        Some(n) => format!("in network namespace {n:?}"),
        None => "in this network namespace".to_string(),
    };
    let elsewhere: Vec<String> = namespaces_with(dev)
        .into_iter()
        .filter(|n| Some(n.as_str()) != netns)
        .collect();
    match elsewhere.as_slice() {
        [] => bail!("no network device {dev:?} {here} (`ip link` lists them; --netns NAME for a device in another namespace)"),
        [one] => bail!("no network device {dev:?} {here}; network namespace {one:?} has one: add --netns {one}"),
        many => bail!(
            "no network device {dev:?} {here}; network namespaces {} have one: pick one with --netns",
            many.join(", ")
        ),
    }
}

/// Whether `ifindex` still names a device (in this thread's namespace).
pub fn exists(ifindex: u32) -> bool {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: a buffer of IF_NAMESIZE bytes.
    !unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) }.is_null()
}

/// The name of BPF program `id`, if this process may open it.
fn prog_name(id: u32) -> Option<String> {
    // SAFETY: plain syscall wrapper; the fd is closed below.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return None;
    }
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is sized by len; fd is ours.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return None;
    }
    let n: Vec<u8> = info
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Some(String::from_utf8_lossy(&n).into_owned())
}

/// Processes holding BPF program `id` through a program or link fd
/// (bpftool's "pids" without its BPF iterator: /proc/*/fdinfo).
fn holders(id: u32) -> Vec<(u32, String)> {
    let want = format!("prog_id:\t{id}");
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            let target = fs::read_link(fd.path()).unwrap_or_default();
            let t = target.to_string_lossy();
            (t.starts_with("anon_inode:bpf-prog") || t.starts_with("anon_inode:bpf_link"))
                && fs::read_to_string(p.path().join("fdinfo").join(fd.file_name()))
                    .is_ok_and(|i| i.lines().any(|l| l == want))
        });
        if holds {
            let comm = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push((pid, comm.trim().to_string()));
        }
    }
    out
}

/// What already holds XDP program `id` on `dev`, for the busy error.
pub fn busy_hint(dev: &str, id: u32) -> String {
    if id == 0 {
        return format!("{dev} already has an XDP program");
    }
    let name = prog_name(id).map(|n| format!(" {n:?}")).unwrap_or_default();
    let held: Vec<String> = holders(id)
        .into_iter()
        .filter(|(pid, _)| *pid != std::process::id())
        .map(|(pid, comm)| format!("pid {pid} ({comm})"))
        .collect();
    if held.is_empty() {
        format!(
            "{dev} already has XDP program id {id}{name}, attached by no running process (netlink, e.g. `ip link set dev {dev} xdp ...`, or a pinned link): `ip link set dev {dev} xdp off` removes it"
        )
    } else {
        format!(
            "{dev} already has XDP program id {id}{name}, held by {}: stop it first",
            held.join(", ")
        )
    }
}
