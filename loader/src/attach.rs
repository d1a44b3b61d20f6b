//! `inxpect attach`: profiles the program already attached to a device by
//! swapping in an instrumented build of it that reuses the running
//! program's maps, and swapping the original back on exit.
//!
//! Order, so that a refusal changes nothing: find the attachment, read the
//! running program and its maps, instrument the object in memory, compare
//! it with the running program (every mismatch listed), load it with the
//! running maps, start the guard, swap atomically, report live, swap back
//! atomically and check the original is the one attached.

use std::ffi::CStr;
use std::io::{BufRead, BufReader, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;
use libbpf_rs::{OpenObject, ProgramType};

use crate::object::{self, log::note, Kind};
use crate::run::{self, SessionArgs};
use crate::tc::{self, TcDir};
use crate::{backend, testrun, Common};

#[derive(Args)]
pub struct AttachArgs {
    #[command(flatten)]
    common: Common,
    /// The device whose attached program to profile.
    #[arg(long)]
    dev: String,
    /// Network namespace (a name under /run/netns) holding the device.
    #[arg(long)]
    netns: Option<String>,
    /// Profile the tcx program at this hook instead of the XDP program.
    #[arg(long, value_enum)]
    tc: Option<TcDir>,
    #[command(flatten)]
    session: SessionArgs,
}

/// Where the running program is attached, and so how to swap it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// An XDP bpf_link: `bpf_link_update` with the expected old program.
    XdpLink { link_id: u32 },
    /// XDP through netlink in a mode: `XDP_FLAGS_REPLACE` with the expected old program.
    XdpNetlink { flags: u32 },
    /// A tcx link: `bpf_link_update`.
    TcxLink { link_id: u32, dir: TcDir },
    /// A tcx program attached without a link: `BPF_F_REPLACE` of that program.
    TcxProg { dir: TcDir },
    /// A direct-action cls_bpf filter on a clsact qdisc: its program
    /// replaced in place (same handle and priority).
    Clsact {
        dir: TcDir,
        handle: u32,
        priority: u32,
    },
}

impl Hook {
    fn describe(&self) -> String {
        match self {
            Hook::XdpLink { link_id } => format!("XDP bpf_link {link_id}"),
            Hook::XdpNetlink { flags } => format!("XDP {} (netlink)", xdp_mode_name(*flags)),
            Hook::TcxLink { link_id, dir } => format!("tcx {} link {link_id}", dir.name()),
            Hook::TcxProg { dir } => format!("tcx {} (no link)", dir.name()),
            Hook::Clsact {
                dir,
                handle,
                priority,
            } => format!(
                "clsact {} cls_bpf filter {handle:#x} prio {priority}",
                dir.name()
            ),
        }
    }

    /// The report's `live.mode`.
    fn mode(&self) -> String {
        match self {
            Hook::XdpLink { .. } => "xdp-link".into(),
            Hook::XdpNetlink { flags } => xdp_mode_name(*flags).into(),
            Hook::TcxLink { dir, .. } | Hook::TcxProg { dir } => format!("tcx-{}", dir.name()),
            Hook::Clsact { dir, .. } => format!("clsact-{}", dir.name()),
        }
    }

    /// For the guard's command line.
    fn to_arg(self) -> String {
        match self {
            Hook::XdpLink { link_id } => format!("xdp-link:{link_id}"),
            Hook::XdpNetlink { flags } => format!("xdp-netlink:{flags}"),
            Hook::TcxLink { link_id, dir } => format!("tcx-link-{}:{link_id}", dir.name()),
            Hook::TcxProg { dir } => format!("tcx-prog-{}:0", dir.name()),
            Hook::Clsact {
                dir,
                handle,
                priority,
            } => format!("clsact-{}:{handle}:{priority}", dir.name()),
        }
    }

    fn from_arg(s: &str) -> Result<Hook> {
        let (k, n) = s.split_once(':').context("hook: KIND:N")?;
        if let Some(d) = k.strip_prefix("clsact-") {
            let (h, p) = n.split_once(':').context("hook: clsact-DIR:HANDLE:PRIO")?;
            return Ok(Hook::Clsact {
                dir: match d {
                    "ingress" => TcDir::Ingress,
                    "egress" => TcDir::Egress,
                    _ => bail!("bad tc hook {d:?}"),
                },
                handle: h.parse()?,
                priority: p.parse()?,
            });
        }
        let n: u32 = n.parse().context("hook: KIND:N")?;
        let dir = |d: &str| match d {
            "ingress" => Ok(TcDir::Ingress),
            "egress" => Ok(TcDir::Egress),
            _ => bail!("bad tc hook {d:?}"),
        };
        Ok(match k {
            "xdp-link" => Hook::XdpLink { link_id: n },
            "xdp-netlink" => Hook::XdpNetlink { flags: n },
            _ => match k.strip_prefix("tcx-link-") {
                Some(d) => Hook::TcxLink {
                    link_id: n,
                    dir: dir(d)?,
                },
                None => Hook::TcxProg {
                    dir: dir(k.strip_prefix("tcx-prog-").context("bad hook")?)?,
                },
            },
        })
    }
}

fn xdp_mode_name(flags: u32) -> &'static str {
    match flags {
        libbpf_sys::XDP_FLAGS_SKB_MODE => "generic",
        libbpf_sys::XDP_FLAGS_HW_MODE => "offload",
        _ => "native",
    }
}

fn os_err(rc: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(-rc)
}

fn owned(fd: i32, what: &str) -> Result<OwnedFd> {
    if fd < 0 {
        bail!("{what}: {}", os_err(fd));
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn prog_fd_by_id(id: u32) -> Result<OwnedFd> {
    // SAFETY: plain syscall wrapper.
    owned(
        unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) },
        &format!("opening program id {id}"),
    )
}

fn link_fd_by_id(id: u32) -> Result<OwnedFd> {
    // SAFETY: plain syscall wrapper.
    owned(
        unsafe { libbpf_sys::bpf_link_get_fd_by_id(id) },
        &format!("opening bpf_link id {id}"),
    )
}

fn link_info(fd: BorrowedFd<'_>) -> Result<libbpf_sys::bpf_link_info> {
    // SAFETY: zero is a valid bpf_link_info.
    let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info is `len` bytes.
    let rc = unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc < 0 {
        bail!("reading bpf_link info: {}", os_err(rc));
    }
    Ok(info)
}

/// The running program: name, type and the ids of the maps it uses.
pub struct ProgInfo {
    pub id: u32,
    pub name: String,
    pub prog_type: u32,
    pub map_ids: Vec<u32>,
}

pub fn prog_info(fd: BorrowedFd<'_>) -> Result<ProgInfo> {
    let get = |info: &mut libbpf_sys::bpf_prog_info| -> Result<()> {
        let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
        // SAFETY: info is `len` bytes; map_ids (if set) has nr_map_ids slots.
        let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), info, &mut len) };
        if rc < 0 {
            bail!("reading program info: {}", os_err(rc));
        }
        Ok(())
    };
    let mut info = libbpf_sys::bpf_prog_info::default();
    get(&mut info)?;
    let mut ids = vec![0u32; info.nr_map_ids as usize];
    let mut again = libbpf_sys::bpf_prog_info {
        nr_map_ids: ids.len() as u32,
        map_ids: ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    get(&mut again)?;
    ids.truncate(again.nr_map_ids as usize);
    // SAFETY: the kernel NUL-terminates the name in its 16 bytes.
    let name = unsafe { CStr::from_ptr(info.name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok(ProgInfo {
        id: info.id,
        name,
        prog_type: info.type_,
        map_ids: ids,
    })
}

/// A map of the running program, with an fd that keeps it for the reuse.
struct RunningMap {
    id: u32,
    name: String,
    fd: OwnedFd,
    map_type: u32,
    key: u32,
    value: u32,
    max_entries: u32,
    flags: u32,
}

fn running_maps(ids: &[u32]) -> Result<Vec<RunningMap>> {
    let mut out = Vec::new();
    for &id in ids {
        let m = libbpf_rs::MapHandle::from_map_id(id)
            .with_context(|| format!("opening map id {id} of the running program"))?;
        let info =
            libbpf_rs::MapInfo::new(m.as_fd()).with_context(|| format!("reading map id {id}"))?;
        let fd = m
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating a map fd")?;
        out.push(RunningMap {
            id,
            name: info.name().unwrap_or("").to_string(),
            fd,
            map_type: info.info.type_,
            key: info.info.key_size,
            value: info.info.value_size,
            max_entries: info.info.max_entries,
            flags: info.info.map_flags,
        });
    }
    Ok(out)
}

/// The probe runtime's own maps: fresh in the instrumented build.
fn is_runtime_map(name: &str) -> bool {
    name.starts_with("inxpect_") || name.ends_with(".inxpect")
}

/// Kernel map names are 15 bytes at most; libbpf names a global-data map
/// `<object prefix>.<section>`, and the prefix depends on how the daemon
/// opened its object: such maps match by section.
fn map_key(name: &str) -> String {
    for sec in [".rodata", ".data", ".bss", ".kconfig"] {
        if let Some(i) = name.find(sec) {
            return name[i..].to_string();
        }
    }
    name.chars().take(15).collect()
}

fn same_key(a: &str, b: &str) -> bool {
    let (a, b) = (map_key(a), map_key(b));
    // Both may be cut at 15 bytes at different places.
    a == b || (a.starts_with('.') && (a.starts_with(&b) || b.starts_with(&a)))
}

const PROG_TYPE_SCHED_CLS: u32 = 3;
const PROG_TYPE_XDP: u32 = 6;

fn prog_type_name(t: u32) -> String {
    match t {
        PROG_TYPE_SCHED_CLS => "sched_cls".into(),
        PROG_TYPE_XDP => "xdp".into(),
        n => format!("type {n}"),
    }
}

/// Compares the opened object with the running program and, if they
/// match, sets every one of its maps to reuse the running one. Every
/// mismatch is listed in the error.
fn check_and_reuse(
    origin: &str,
    running: &ProgInfo,
    maps: &[RunningMap],
    prog: &str,
    open: &mut OpenObject,
) -> Result<()> {
    let mut bad = Vec::new();
    let p = open
        .progs()
        .find(|p| p.name().to_string_lossy() == prog)
        .context("program vanished")?;
    let t = match p.prog_type() {
        ProgramType::SchedCls => PROG_TYPE_SCHED_CLS,
        ProgramType::Xdp => PROG_TYPE_XDP,
        _ => 0,
    };
    // --prog may name another program of the object than the one running.
    if prog.chars().take(15).collect::<String>() != running.name {
        bad.push(format!(
            "program {prog}: the running program is {} (the kernel keeps 15 bytes of a name)",
            running.name
        ));
    }
    if t != running.prog_type {
        bad.push(format!(
            "program {prog}: {} here, {} running",
            prog_type_name(t),
            prog_type_name(running.prog_type)
        ));
    }
    let mut used = vec![false; maps.len()];
    for m in open.maps() {
        let name = m.name().to_string_lossy().into_owned();
        if is_runtime_map(&name) {
            continue;
        }
        let Some(i) = maps.iter().position(|r| same_key(&r.name, &name)) else {
            bad.push(format!(
                "map {name}: in the object, not used by the running program"
            ));
            continue;
        };
        used[i] = true;
        let r = &maps[i];
        let ty = m.map_type() as u32;
        let mut diff = |what: &str, here: u32, there: u32| {
            if here != there {
                bad.push(format!(
                    "map {name}: {what} {here} here, {there} running (map id {})",
                    r.id
                ));
            }
        };
        diff("type", ty, r.map_type);
        diff("key size", m.key_size(), r.key);
        diff("value size", m.value_size(), r.value);
        // libbpf sizes a perf event array of 0 entries to the CPUs at load.
        if !(ty == libbpf_sys::BPF_MAP_TYPE_PERF_EVENT_ARRAY && m.max_entries() == 0) {
            diff("max_entries", m.max_entries(), r.max_entries);
        }
        diff("flags", m.map_flags(), r.flags);
    }
    // A prog array of the daemon's holds its own, uninstrumented programs:
    // a tail call into one leaves the run marked as continuing (README,
    // "Limitation"), and every count after it would be off. Refused.
    for r in maps
        .iter()
        .filter(|r| r.map_type == libbpf_sys::BPF_MAP_TYPE_PROG_ARRAY)
    {
        bad.push(format!(
            "map {} (id {}): a prog array; tail calls would enter the daemon's uninstrumented programs, whose runs inxpect cannot count (profile them with `inxpect run` on a test device instead)",
            r.name, r.id
        ));
    }
    for (r, u) in maps.iter().zip(&used) {
        if !u {
            bad.push(format!(
                "map {} (id {}): used by the running program, not in the object",
                r.name, r.id
            ));
        }
    }
    if !bad.is_empty() {
        bail!(
            "{origin} does not build the running program {} (id {}); nothing was changed:\n  {}",
            running.name,
            running.id,
            bad.join("\n  ")
        );
    }
    for mut m in open.maps_mut() {
        let name = m.name().to_string_lossy().into_owned();
        if is_runtime_map(&name) {
            continue;
        }
        let r = maps
            .iter()
            .find(|r| same_key(&r.name, &name))
            .context("map vanished")?;
        m.reuse_fd(r.fd.as_fd())
            .with_context(|| format!("reusing map {name} (id {})", r.id))?;
    }
    Ok(())
}

/// The XDP bpf_link on `ifindex` holding `prog_id`, if any.
fn xdp_link_of(ifindex: u32, prog_id: u32) -> Result<Option<u32>> {
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: plain syscall wrapper.
        if unsafe { libbpf_sys::bpf_link_get_next_id(id, &mut next) } < 0 {
            return Ok(None);
        }
        id = next;
        // A link that went away meanwhile is not ours.
        let Ok(fd) = link_fd_by_id(id) else { continue };
        let info = link_info(fd.as_fd())?;
        // SAFETY: the xdp member is the one for XDP links.
        if info.type_ == libbpf_sys::BPF_LINK_TYPE_XDP
            && info.prog_id == prog_id
            && unsafe { info.__bindgen_anon_1.xdp.ifindex } == ifindex
        {
            return Ok(Some(id));
        }
    }
}

/// Finds the program attached to `ifindex` (XDP, or tcx at `tc`) and how.
/// `want`: the program name when several are attached (tcx).
fn find(ifindex: u32, dev: &str, tc: Option<TcDir>, want: Option<&str>) -> Result<(Hook, u32)> {
    match tc {
        None => {
            let mut o = libbpf_sys::bpf_xdp_query_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as _,
                ..Default::default()
            };
            // SAFETY: sized and initialised.
            let rc = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut o) };
            if rc < 0 {
                bail!("querying XDP on {dev}: {}", os_err(rc));
            }
            let modes: Vec<(u32, u32)> = [
                (libbpf_sys::XDP_FLAGS_DRV_MODE, o.drv_prog_id),
                (libbpf_sys::XDP_FLAGS_SKB_MODE, o.skb_prog_id),
                (libbpf_sys::XDP_FLAGS_HW_MODE, o.hw_prog_id),
            ]
            .into_iter()
            .filter(|(_, id)| *id != 0)
            .collect();
            let (flags, id) = match modes.as_slice() {
                [] => bail!("no XDP program is attached to {dev}"),
                [one] => *one,
                many => bail!(
                    "{dev} has XDP programs in several modes ({}): inxpect attach swaps one, and which one would be a guess",
                    many.iter()
                        .map(|(f, id)| format!("{} id {id}", xdp_mode_name(*f)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            match xdp_link_of(ifindex, id)? {
                Some(link_id) => Ok((Hook::XdpLink { link_id }, id)),
                None => Ok((Hook::XdpNetlink { flags }, id)),
            }
        }
        Some(dir) => {
            let st = tc::tcx_query(ifindex, dir)?;
            let mut all: Vec<(u32, Hook)> = st
                .progs
                .iter()
                .zip(&st.links)
                .map(|(&p, &l)| match l {
                    0 => (p, Hook::TcxProg { dir }),
                    link_id => (p, Hook::TcxLink { link_id, dir }),
                })
                .collect();
            for f in tc::clsact_filters(ifindex, dir)? {
                // What libbpf's replace would change: refused, not altered.
                if !f.direct_action || f.protocol != (libc::ETH_P_ALL as u16).to_be() {
                    bail!(
                        "{dev} {}: the cls_bpf filter {:#x} prio {} (program id {}) is {}: inxpect replaces direct-action filters of protocol all only; nothing was changed",
                        dir.name(),
                        f.handle,
                        f.priority,
                        f.prog_id,
                        if f.direct_action { "for one protocol" } else { "not direct-action" }
                    );
                }
                all.push((
                    f.prog_id,
                    Hook::Clsact {
                        dir,
                        handle: f.handle,
                        priority: f.priority,
                    },
                ));
            }
            match all.as_slice() {
                [] => bail!(
                    "no tc program at {dev} {} (neither tcx nor a cls_bpf filter on a clsact qdisc)",
                    dir.name()
                ),
                [one] => Ok((one.1, one.0)),
                many => {
                    let named: Vec<(u32, Hook, String)> = many
                        .iter()
                        .map(|&(p, h)| {
                            let name = prog_fd_by_id(p)
                                .and_then(|fd| prog_info(fd.as_fd()))
                                .map(|i| i.name)
                                .unwrap_or_default();
                            (p, h, name)
                        })
                        .collect();
                    let hits: Vec<&(u32, Hook, String)> = named
                        .iter()
                        .filter(|(_, _, n)| {
                            want.is_some_and(|w| !n.is_empty() && w.starts_with(n.as_str()))
                        })
                        .collect();
                    match hits.as_slice() {
                        [one] => Ok((one.1, one.0)),
                        _ => bail!(
                            "{} tc programs at {dev} {} ({}): pick one with --prog",
                            named.len(),
                            dir.name(),
                            named
                                .iter()
                                .map(|(p, h, n)| format!("{n} id {p} ({})", h.describe()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                }
            }
        }
    }
}

/// Everything needed to swap one program for another at a hook, and back.
pub struct Swap {
    hook: Hook,
    ifindex: u32,
    link: Option<OwnedFd>,
    pub orig: OwnedFd,
    pub orig_id: u32,
    pub new: OwnedFd,
    pub new_id: u32,
}

impl Swap {
    fn open(hook: Hook, ifindex: u32, orig_id: u32, new_id: u32) -> Result<Swap> {
        let link = match hook {
            Hook::XdpLink { link_id } | Hook::TcxLink { link_id, .. } => {
                Some(link_fd_by_id(link_id)?)
            }
            _ => None,
        };
        Ok(Swap {
            hook,
            ifindex,
            link,
            orig: prog_fd_by_id(orig_id)?,
            orig_id,
            new: prog_fd_by_id(new_id)?,
            new_id,
        })
    }

    /// Atomically replaces `from` with `to`; fails, changing nothing, when
    /// `from` is not the attached program.
    fn replace(&self, from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> Result<()> {
        if matches!(self.hook, Hook::Clsact { .. }) {
            let from_id = if from.as_raw_fd() == self.orig.as_raw_fd() {
                self.orig_id
            } else {
                self.new_id
            };
            return self.replace_clsact(from_id, to);
        }
        let (from, to) = (from.as_raw_fd(), to.as_raw_fd());
        let rc = match self.hook {
            Hook::XdpLink { .. } | Hook::TcxLink { .. } => {
                let link = self.link.as_ref().context("no link")?;
                return run::link_replace(link.as_fd(), from, to)
                    .with_context(|| format!("replacing the program at {}", self.hook.describe()));
            }
            Hook::XdpNetlink { flags } => {
                let o = libbpf_sys::bpf_xdp_attach_opts {
                    sz: std::mem::size_of::<libbpf_sys::bpf_xdp_attach_opts>() as _,
                    old_prog_fd: from,
                    ..Default::default()
                };
                // SAFETY: valid fds and opts.
                unsafe {
                    libbpf_sys::bpf_xdp_attach(
                        self.ifindex as i32,
                        to,
                        flags | libbpf_sys::XDP_FLAGS_REPLACE,
                        &o,
                    )
                }
            }
            Hook::TcxProg { dir } => {
                let mut o = libbpf_sys::bpf_prog_attach_opts {
                    sz: std::mem::size_of::<libbpf_sys::bpf_prog_attach_opts>() as _,
                    flags: libbpf_sys::BPF_F_REPLACE,
                    ..Default::default()
                };
                o.__bindgen_anon_1.replace_prog_fd = from;
                // SAFETY: valid fds and opts.
                unsafe {
                    libbpf_sys::bpf_prog_attach_opts(to, self.ifindex as i32, dir.attach_type(), &o)
                }
            }
            Hook::Clsact { .. } => unreachable!("replaced by replace_clsact"),
        };
        if rc < 0 {
            bail!(
                "replacing the program at {}: {}",
                self.hook.describe(),
                os_err(rc)
            );
        }
        Ok(())
    }

    /// A cls_bpf filter's program is replaced without naming the expected
    /// old one (netlink has no such check): checked just before instead.
    fn replace_clsact(&self, from: u32, to: BorrowedFd<'_>) -> Result<()> {
        let Hook::Clsact {
            dir,
            handle,
            priority,
        } = self.hook
        else {
            bail!("not a cls_bpf hook");
        };
        let now = self.current()?;
        if now != from {
            bail!(
                "the program at {} is {now}, not the expected {from}",
                self.hook.describe()
            );
        }
        let f = tc::ClsBpf {
            handle,
            priority,
            protocol: (libc::ETH_P_ALL as u16).to_be(),
            prog_id: from,
            direct_action: true,
        };
        tc::clsact_replace(self.ifindex, dir, &f, to.as_raw_fd())
    }

    /// The program attached at the hook now (0: none). For a tcx hook
    /// without a link, ours or the original if either is among its programs.
    fn current(&self) -> Result<u32> {
        Ok(match self.hook {
            Hook::XdpLink { .. } | Hook::TcxLink { .. } => {
                let l = self.link.as_ref().context("no link")?;
                link_info(l.as_fd())?.prog_id
            }
            Hook::XdpNetlink { flags } => {
                let mut o = libbpf_sys::bpf_xdp_query_opts {
                    sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as _,
                    ..Default::default()
                };
                // SAFETY: sized and initialised.
                let rc = unsafe { libbpf_sys::bpf_xdp_query(self.ifindex as i32, 0, &mut o) };
                if rc < 0 {
                    bail!("querying XDP: {}", os_err(rc));
                }
                match flags {
                    libbpf_sys::XDP_FLAGS_SKB_MODE => o.skb_prog_id,
                    libbpf_sys::XDP_FLAGS_HW_MODE => o.hw_prog_id,
                    _ => o.drv_prog_id,
                }
            }
            Hook::Clsact {
                dir,
                handle,
                priority,
            } => tc::clsact_filters(self.ifindex, dir)?
                .into_iter()
                .find(|f| f.handle == handle && f.priority == priority)
                .map_or(0, |f| f.prog_id),
            Hook::TcxProg { dir } => {
                let progs = tc::tcx_query(self.ifindex, dir)?.progs;
                [self.new_id, self.orig_id]
                    .into_iter()
                    .find(|id| progs.contains(id))
                    .or(progs.first().copied())
                    .unwrap_or(0)
            }
        })
    }

    pub fn swap_in(&self) -> Result<()> {
        self.replace(self.orig.as_fd(), self.new.as_fd())?;
        let now = self.current()?;
        if now != self.new_id {
            bail!(
                "swapped in, but program {now} is the one attached, not {}",
                self.new_id
            );
        }
        Ok(())
    }

    /// Puts the original back (only over the instrumented build: the
    /// replace names it as the expected old program) and checks it is the
    /// one attached.
    pub fn restore(&self) -> Result<Restore> {
        let r = self.replace(self.new.as_fd(), self.orig.as_fd());
        match self.current()? {
            id if id == self.orig_id => Ok(Restore::Restored),
            id if id != self.new_id => Ok(Restore::Foreign(id)),
            _ => {
                r?;
                bail!(
                    "restored, but the instrumented build {} is still the one attached",
                    self.new_id
                )
            }
        }
    }
}

/// How a restore ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Restore {
    /// The original is attached again.
    Restored,
    /// Someone else replaced the instrumented build meanwhile (with this
    /// program id, 0: detached it): theirs is left as it is.
    Foreign(u32),
}

/// A second process that puts the original back if inxpect dies without
/// doing it (SIGKILL, a crash): it holds its own descriptors of both
/// programs and of the link, and restores when its stdin closes before
/// inxpect said "done". In its own process group, so a terminal's Ctrl-C
/// reaches inxpect, which restores, and not the guard.
struct Guard {
    child: Child,
}

impl Guard {
    fn spawn(hook: Hook, ifindex: u32, orig_id: u32, new_id: u32) -> Result<Guard> {
        use std::os::unix::process::CommandExt as _;
        let exe = std::env::current_exe().context("finding inxpect's own binary")?;
        let mut child = Command::new(exe)
            .args([
                "__guard",
                "--hook",
                &hook.to_arg(),
                "--ifindex",
                &ifindex.to_string(),
                "--orig",
                &orig_id.to_string(),
                "--new",
                &new_id.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .context("starting the restore guard")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("guard stdout")?)
            .read_line(&mut line)
            .context("waiting for the restore guard")?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the restore guard did not start");
        }
        Ok(Guard { child })
    }

    /// The original is back: the guard may go.
    fn dismiss(mut self) {
        if let Some(mut s) = self.child.stdin.take() {
            let _ = s.write_all(b"done\n");
        }
        let _ = self.child.wait();
    }
}

#[derive(Args)]
pub struct GuardArgs {
    /// How the program is attached (KIND:N, as attach writes it).
    #[arg(long)]
    hook: String,
    /// The device's ifindex (in the guard's network namespace).
    #[arg(long)]
    ifindex: u32,
    /// The original program's id: what the guard restores.
    #[arg(long)]
    orig: u32,
    /// The instrumented program's id: what it replaces.
    #[arg(long)]
    new: u32,
}

/// The guard process (`inxpect __guard`, started by attach).
pub fn guard(a: GuardArgs) -> Result<()> {
    // SAFETY: ignoring signals is async-signal-safe and process-wide here.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let hook = Hook::from_arg(&a.hook)?;
    let s = Swap::open(hook, a.ifindex, a.orig, a.new)?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut line = String::new();
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    loop {
        line.clear();
        match lock.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim() == "done" => return Ok(()),
            Ok(_) => {}
        }
    }
    // inxpect went away without restoring.
    match s
        .restore()
        .context("inxpect exited without restoring, and the guard could not either")?
    {
        Restore::Restored => eprintln!(
            "inxpect guard: inxpect exited without restoring; program {} is attached again at {}",
            s.orig_id,
            hook.describe()
        ),
        Restore::Foreign(id) => eprintln!(
            "inxpect guard: inxpect exited without restoring, and program {id} (not inxpect's) is attached at {}: left as it is",
            hook.describe()
        ),
    }
    Ok(())
}

pub fn attach(a: AttachArgs) -> Result<()> {
    let c = &a.common;
    if c.config.is_some() {
        bail!("--config: attach reuses the running program's maps, with their contents");
    }
    let live = run::Live::parse(&a.session)?;
    let windows = a.session.windows()?;
    // Bound before entering --netns, as run does.
    let endpoint = crate::live::Endpoint::start(&a.session.live)?;
    if let Some(ns) = &a.netns {
        run::enter_netns(ns)?;
    }
    let ifindex = crate::netdev::ifindex(&a.dev, a.netns.as_deref())?;
    let k = run::key(&a.dev, a.netns.as_deref(), a.tc);
    let plan = run::pin_plan(a.session.pin_dir.as_deref(), &k)?;
    let (hook, orig_id) = find(ifindex, &a.dev, a.tc, c.prog.as_deref())?;
    let orig = prog_fd_by_id(orig_id)?;
    let running = prog_info(orig.as_fd())?;
    let maps = running_maps(&running.map_ids)?;
    let bytes = std::fs::read(&c.obj).with_context(|| format!("reading {}", c.obj.display()))?;
    let origin = c.obj.display().to_string();
    // The program to build: --prog, else the running program's name (the
    // kernel keeps 15 bytes of it).
    let prog = match &c.prog {
        Some(p) => p.clone(),
        None => {
            let open = libbpf_rs::ObjectBuilder::default()
                .open_memory(&bytes)
                .with_context(|| format!("opening {origin}"))?;
            let names: Vec<String> = open
                .progs()
                .map(|p| p.name().to_string_lossy().into_owned())
                .collect();
            let hits: Vec<&String> = names
                .iter()
                .filter(|n| n.chars().take(15).collect::<String>() == running.name)
                .collect();
            match hits.as_slice() {
                [one] => (*one).clone(),
                _ => bail!(
                    "{origin} has no program {:?} (the program attached at {} on {}, id {}); it has: {}; nothing was changed",
                    running.name,
                    hook.describe(),
                    a.dev,
                    orig_id,
                    names.join(", ")
                ),
            }
        }
    };
    let b = backend(c, &bytes)?;
    let shift = crate::parse_sample(&c.sample)?;
    let kind = if a.tc.is_some() { Kind::Tc } else { Kind::Xdp };
    let l = crate::prepare_and_load(
        c,
        &b,
        bytes,
        &origin,
        Some(&prog),
        Some(kind),
        &mut |p, open| check_and_reuse(&origin, &running, &maps, p, open),
    )?;
    let cfg0 = object::configure(&l, shift, c.regions.as_deref())?;
    let cal = if c.no_calibrate {
        None
    } else {
        Some(testrun::calibrate(&b)?)
    };
    let new_id = libbpf_rs::Program::id_from_fd(l.prog_fd()?)?;
    let swap = std::sync::Arc::new(Swap {
        hook,
        ifindex,
        link: match hook {
            Hook::XdpLink { link_id } | Hook::TcxLink { link_id, .. } => {
                Some(link_fd_by_id(link_id)?)
            }
            _ => None,
        },
        orig,
        orig_id,
        new: l.prog_fd()?.try_clone_to_owned()?,
        new_id,
    });
    let mut session = run::Session::new("attach", c, &l, &b, cal, &a.dev, ifindex, hook.mode())?;
    run::catch_signals();
    let guard = Guard::spawn(hook, ifindex, orig_id, new_id)?;
    // Pinned once swapped in: pins on the device mean the swap is done. The
    // windows' thread inherits this thread's network namespace (the netlink
    // swaps need it).
    let started = swap
        .swap_in()
        .and_then(|_| run::pin_for_set(&l, &k, &a.dev, a.netns.as_deref(), plan))
        .and_then(|pins| {
            let cycler = windows
                .map(|w| {
                    let (o, c) = (std::sync::Arc::clone(&swap), std::sync::Arc::clone(&swap));
                    crate::window::Cycler::start(
                        w,
                        move || o.replace(o.orig.as_fd(), o.new.as_fd()),
                        move || c.replace(c.new.as_fd(), c.orig.as_fd()),
                    )
                })
                .transpose()?;
            Ok((pins, cycler))
        });
    let (pins, mut cycler) = match started {
        Ok(p) => p,
        Err(e) => {
            // Puts the original back if the swap went through.
            let _ = swap.restore()?;
            guard.dismiss();
            return Err(e);
        }
    };
    note(&format!(
        "swapped {} (id {new_id}, instrumented) in for {} (id {orig_id}) at {} on {}; maps shared: {}",
        l.prog,
        running.name,
        hook.describe(),
        a.dev,
        if maps.is_empty() {
            "none".to_string()
        } else {
            maps.iter()
                .map(|m| format!("{} (id {})", m.name, m.id))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    if let (Some(w), Some(cy)) = (windows, &cycler) {
        note(&w.describe());
        session.set_windows(cy.probe());
    }
    let watched = session.watch(&live, &cfg0, endpoint.as_ref());
    // No swap after this: the restore below is the last word.
    if let Some(m) = cycler.as_mut().and_then(|c| c.stop().warning()) {
        note(&m);
    }
    // Restore first, whatever the live view did.
    let restored = swap.restore();
    match &restored {
        Ok(Restore::Restored) => {
            guard.dismiss();
            note(&format!(
                "restored {} (id {orig_id}) at {} on {}",
                running.name,
                hook.describe(),
                a.dev
            ));
        }
        Ok(Restore::Foreign(id)) => {
            guard.dismiss();
            note(&format!(
                "warning: program {id} replaced the instrumented build at {} on {} during the profile: left attached, the original (id {orig_id}) not put back",
                hook.describe(),
                a.dev
            ));
        }
        // The guard tries once more when we exit.
        Err(_) => drop(guard),
    }
    drop(pins);
    restored?;
    session.finish(watched?)
}
