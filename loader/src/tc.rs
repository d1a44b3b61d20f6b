//! tc attachment points: tcx links and tcx program attachments (Linux
//! 6.6+), and before them a cls_bpf filter on a clsact qdisc.

use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{bail, Result};
use clap::ValueEnum;

use crate::object::log::note;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TcDir {
    Ingress,
    Egress,
}

impl TcDir {
    pub fn name(self) -> &'static str {
        match self {
            TcDir::Ingress => "ingress",
            TcDir::Egress => "egress",
        }
    }

    pub fn attach_type(self) -> libbpf_sys::bpf_attach_type {
        match self {
            TcDir::Ingress => libbpf_sys::BPF_TCX_INGRESS,
            TcDir::Egress => libbpf_sys::BPF_TCX_EGRESS,
        }
    }

    fn point(self) -> libbpf_sys::bpf_tc_attach_point {
        match self {
            TcDir::Ingress => libbpf_sys::BPF_TC_INGRESS,
            TcDir::Egress => libbpf_sys::BPF_TC_EGRESS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TcHook {
    Auto,
    Tcx,
    Clsact,
}

pub enum Attachment {
    /// A tcx link: the kernel detaches it when its last fd closes.
    Tcx(OwnedFd),
    /// A cls_bpf filter: stays until removed (by `Filter::detach` or drop).
    Clsact(Filter),
}

fn os_err(rc: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(-rc)
}

/// Attaches `prog_fd` at `dir` of `ifindex` as `hook` says.
pub fn attach(
    prog_fd: i32,
    ifindex: u32,
    dir: TcDir,
    hook: TcHook,
    dev: &str,
) -> Result<Attachment> {
    if hook != TcHook::Clsact {
        let opts = libbpf_sys::bpf_link_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
            ..Default::default()
        };
        // SAFETY: valid fds and opts.
        let fd = unsafe {
            libbpf_sys::bpf_link_create(prog_fd, ifindex as i32, dir.attach_type(), &opts)
        };
        if fd >= 0 {
            // SAFETY: a new link fd we own.
            return Ok(Attachment::Tcx(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        // A kernel without tcx does not know the attach type.
        let no_tcx = matches!(-fd, libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP);
        if hook == TcHook::Tcx || !no_tcx {
            bail!(
                "attaching a tcx link at {dev} {}: {}",
                dir.name(),
                os_err(fd)
            );
        }
        note(&format!(
            "no tcx on this kernel ({}): attaching a cls_bpf filter on a clsact qdisc, which a SIGKILL would leave behind",
            os_err(fd)
        ));
    }
    Ok(Attachment::Clsact(Filter::attach(
        prog_fd, ifindex, dir, dev,
    )?))
}

/// The kernel's internal ENOTSUPP (not in libc).
const ENOTSUPP: i32 = 524;

/// A cls_bpf filter inxpect added (direct-action), and whether it created
/// the clsact qdisc too (then it removes that as well).
pub struct Filter {
    ifindex: u32,
    dir: TcDir,
    handle: u32,
    priority: u32,
    created_qdisc: bool,
    attached: bool,
}

fn hook(ifindex: u32, point: libbpf_sys::bpf_tc_attach_point) -> libbpf_sys::bpf_tc_hook {
    libbpf_sys::bpf_tc_hook {
        sz: std::mem::size_of::<libbpf_sys::bpf_tc_hook>() as _,
        ifindex: ifindex as i32,
        attach_point: point,
        ..Default::default()
    }
}

fn tc_opts() -> libbpf_sys::bpf_tc_opts {
    libbpf_sys::bpf_tc_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_tc_opts>() as _,
        ..Default::default()
    }
}

impl Filter {
    fn attach(prog_fd: i32, ifindex: u32, dir: TcDir, dev: &str) -> Result<Filter> {
        let mut q = hook(ifindex, dir.point());
        // SAFETY: a sized, initialised hook.
        let rc = unsafe { libbpf_sys::bpf_tc_hook_create(&mut q) };
        if rc < 0 && rc != -libc::EEXIST {
            bail!("creating the clsact qdisc on {dev}: {}", os_err(rc));
        }
        let mut f = Filter {
            ifindex,
            dir,
            handle: 0,
            priority: 0,
            created_qdisc: rc == 0,
            attached: false,
        };
        let mut o = tc_opts();
        o.prog_fd = prog_fd;
        // SAFETY: a valid hook and opts; handle and priority 0: the kernel picks.
        let rc = unsafe { libbpf_sys::bpf_tc_attach(&q, &mut o) };
        if rc < 0 {
            bail!(
                "attaching a cls_bpf filter at {dev} {}: {}",
                dir.name(),
                os_err(rc)
            );
        }
        f.handle = o.handle;
        f.priority = o.priority;
        f.attached = true;
        Ok(f)
    }

    /// Removes the filter (and the qdisc if inxpect created it), and checks
    /// the filter is gone.
    pub fn detach(&mut self) -> Result<()> {
        if !self.attached {
            return Ok(());
        }
        self.attached = false;
        let q = hook(self.ifindex, self.dir.point());
        let mut o = tc_opts();
        o.handle = self.handle;
        o.priority = self.priority;
        // SAFETY: a valid hook and opts.
        let rc = unsafe { libbpf_sys::bpf_tc_detach(&q, &o) };
        if rc < 0 {
            bail!(
                "removing the cls_bpf filter {:#x} prio {}: {}",
                self.handle,
                self.priority,
                os_err(rc)
            );
        }
        let mut o = tc_opts();
        o.handle = self.handle;
        o.priority = self.priority;
        // SAFETY: as above.
        let rc = unsafe { libbpf_sys::bpf_tc_query(&q, &mut o) };
        // Gone: ENOENT, or EINVAL once the kernel dropped the emptied chain.
        if rc == 0 {
            bail!(
                "the cls_bpf filter {:#x} prio {} is still there after removing it",
                self.handle,
                self.priority
            );
        }
        if self.created_qdisc {
            // The qdisc came with our filter; filters added to it by others
            // while inxpect ran would go with it (cls_bpf has no listing in
            // libbpf to check first).
            let mut q = hook(
                self.ifindex,
                libbpf_sys::BPF_TC_INGRESS | libbpf_sys::BPF_TC_EGRESS,
            );
            // SAFETY: a valid hook.
            unsafe { libbpf_sys::bpf_tc_hook_destroy(&mut q) };
        }
        Ok(())
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}

/// The programs and links of a tcx hook, in order.
#[derive(Debug, Default)]
pub struct TcxState {
    pub progs: Vec<u32>,
    pub links: Vec<u32>,
}

/// BPF_PROG_QUERY of `dir` on `ifindex`: every tcx program (link id 0 for
/// one attached without a link). Empty where the kernel has no tcx.
pub fn tcx_query(ifindex: u32, dir: TcDir) -> Result<TcxState> {
    const MAX: usize = 64;
    let mut progs = [0u32; MAX];
    let mut links = [0u32; MAX];
    let mut o = libbpf_sys::bpf_prog_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_query_opts>() as _,
        prog_ids: progs.as_mut_ptr(),
        link_ids: links.as_mut_ptr(),
        ..Default::default()
    };
    o.__bindgen_anon_1.count = MAX as u32;
    // SAFETY: arrays of `count` entries.
    let rc = unsafe { libbpf_sys::bpf_prog_query_opts(ifindex as i32, dir.attach_type(), &mut o) };
    if rc < 0 {
        if matches!(-rc, libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) {
            return Ok(TcxState::default());
        }
        bail!(
            "querying tcx {} on ifindex {ifindex}: {}",
            dir.name(),
            os_err(rc)
        );
    }
    // SAFETY: the kernel wrote the count.
    let n = (unsafe { o.__bindgen_anon_1.count } as usize).min(MAX);
    Ok(TcxState {
        progs: progs[..n].to_vec(),
        links: links[..n].to_vec(),
    })
}
