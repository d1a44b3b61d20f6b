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

/// A cls_bpf filter found on a clsact hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClsBpf {
    pub handle: u32,
    pub priority: u32,
    /// The filter's protocol (network order, as tc keeps it).
    pub protocol: u16,
    pub prog_id: u32,
    pub direct_action: bool,
}

const RTM_GETTFILTER: u16 = 46;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_ID: u16 = 11;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
/// TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS / TC_H_MIN_EGRESS).
fn clsact_parent(dir: TcDir) -> u32 {
    match dir {
        TcDir::Ingress => 0xffff_fff2,
        TcDir::Egress => 0xffff_fff3,
    }
}

/// Netlink attributes in `b`: (type, payload).
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        let next = (len + 3) & !3;
        b = if next <= b.len() { &b[next..] } else { &[] };
    }
    out
}

/// Every cls_bpf filter of the clsact qdisc at `dir` on `ifindex`
/// (RTM_GETTFILTER dump; libbpf can only query a known handle and priority).
pub fn clsact_filters(ifindex: u32, dir: TcDir) -> Result<Vec<ClsBpf>> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain socket syscall.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a new socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // nlmsghdr (16) + tcmsg (20).
    let mut req = Vec::with_capacity(36);
    req.extend(36u32.to_ne_bytes());
    req.extend(RTM_GETTFILTER.to_ne_bytes());
    req.extend(((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend(1u32.to_ne_bytes()); // seq
    req.extend(0u32.to_ne_bytes()); // pid
    req.extend([libc::AF_UNSPEC as u8, 0, 0, 0]);
    req.extend((ifindex as i32).to_ne_bytes());
    req.extend(0u32.to_ne_bytes()); // handle
    req.extend(clsact_parent(dir).to_ne_bytes());
    req.extend(0u32.to_ne_bytes()); // info
                                    // SAFETY: a buffer of the length given.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: a buffer of the length given.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let mut m = &buf[..n as usize];
        while m.len() >= 16 {
            let len = u32::from_ne_bytes(m[0..4].try_into().expect("4")) as usize;
            let ty = u16::from_ne_bytes([m[4], m[5]]);
            if len < 16 || len > m.len() {
                bail!("a malformed netlink message in the filter dump");
            }
            let body = &m[16..len];
            match ty as i32 {
                libc::NLMSG_DONE => return Ok(out),
                libc::NLMSG_ERROR => {
                    let e = i32::from_ne_bytes(body[0..4].try_into().expect("4"));
                    // No clsact qdisc: no filters.
                    if e == -libc::EINVAL || e == -libc::ENOENT {
                        return Ok(out);
                    }
                    bail!("dumping tc filters: {}", os_err(e));
                }
                _ if body.len() >= 20 => {
                    let handle = u32::from_ne_bytes(body[8..12].try_into().expect("4"));
                    let info = u32::from_ne_bytes(body[16..20].try_into().expect("4"));
                    let a = attrs(&body[20..]);
                    let kind = a.iter().find(|(t, _)| *t == TCA_KIND).map(|(_, v)| *v);
                    let opts = a.iter().find(|(t, _)| *t == TCA_OPTIONS).map(|(_, v)| *v);
                    if let (Some(b"bpf\0"), Some(o)) = (kind, opts) {
                        let o = attrs(o);
                        let u32of = |t: u16| {
                            o.iter()
                                .find(|(x, v)| *x == t && v.len() >= 4)
                                .map(|(_, v)| u32::from_ne_bytes(v[0..4].try_into().expect("4")))
                        };
                        if let Some(prog_id) = u32of(TCA_BPF_ID) {
                            out.push(ClsBpf {
                                handle,
                                priority: info >> 16,
                                protocol: (info & 0xffff) as u16,
                                prog_id,
                                direct_action: u32of(TCA_BPF_FLAGS)
                                    .is_some_and(|f| f & TCA_BPF_FLAG_ACT_DIRECT != 0),
                            });
                        }
                    }
                }
                _ => {}
            }
            let next = (len + 3) & !3;
            m = if next <= m.len() { &m[next..] } else { &[] };
        }
    }
}

/// Replaces the program of the cls_bpf filter `f` in place (the kernel
/// swaps it under RCU: no packet sees no filter).
pub fn clsact_replace(ifindex: u32, dir: TcDir, f: &ClsBpf, prog_fd: i32) -> Result<()> {
    let q = hook(ifindex, dir.point());
    let mut o = tc_opts();
    o.prog_fd = prog_fd;
    o.handle = f.handle;
    o.priority = f.priority;
    o.flags = libbpf_sys::BPF_TC_F_REPLACE;
    // SAFETY: a valid hook and opts.
    let rc = unsafe { libbpf_sys::bpf_tc_attach(&q, &mut o) };
    if rc < 0 {
        bail!(
            "replacing the program of cls_bpf filter {:#x} prio {} at {}: {}",
            f.handle,
            f.priority,
            dir.name(),
            os_err(rc)
        );
    }
    Ok(())
}
