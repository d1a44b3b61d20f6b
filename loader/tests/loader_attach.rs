//! `inxpect attach` end to end: a stand-in daemon loads an app, fills its
//! maps and attaches it to a veth end (XDP through netlink or a bpf_link,
//! tc through a tcx link or a tcx program attachment); frames flow the
//! whole time while inxpect swaps the instrumented build in and back.
//!
//! Oracles, all independent of inxpect's report: frames sent and frames
//! received (an AF_PACKET socket on the receiving end, which checks the
//! router's rewrite: destination MAC of the route, TTL decremented); the
//! tc app's own per-destination counters (every frame counted once, by the
//! original or by the instrumented build, since they share the map); the
//! program ids the kernel reports before, during and after.

mod common;
use common::netns::{sigint, Pair};
use common::*;

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder};

/// Runs `f` on a thread inside network namespace `ns`.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
            // SAFETY: a namespace fd and a valid nstype; this thread only.
            assert_eq!(
                unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            f()
        })
        .join()
        .expect("netns thread")
    })
}

fn ifindex(dev: &str) -> u32 {
    let c = CString::new(dev).unwrap();
    // SAFETY: a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no device {dev}");
    i
}

fn owned(fd: i32, what: &str) -> OwnedFd {
    assert!(
        fd >= 0,
        "{what}: {}",
        std::io::Error::from_raw_os_error(-fd)
    );
    // SAFETY: a new fd we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn prog_id(fd: i32) -> u32 {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info is `len` bytes.
    assert_eq!(
        unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) },
        0
    );
    info.id
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum How {
    XdpNetlinkGeneric,
    XdpLinkNative,
    TcxLinkIngress,
    TcxProgEgress,
    /// A direct-action cls_bpf filter (handle 1, priority 1) on a clsact qdisc.
    ClsactIngress,
    ClsactEgress,
}

impl How {
    fn tc(self) -> Option<&'static str> {
        match self {
            How::TcxLinkIngress | How::ClsactIngress => Some("ingress"),
            How::TcxProgEgress | How::ClsactEgress => Some("egress"),
            _ => None,
        }
    }

    fn tc_hook(self, idx: u32) -> libbpf_sys::bpf_tc_hook {
        libbpf_sys::bpf_tc_hook {
            sz: std::mem::size_of::<libbpf_sys::bpf_tc_hook>() as _,
            ifindex: idx as i32,
            attach_point: if self == How::ClsactIngress {
                libbpf_sys::BPF_TC_INGRESS
            } else {
                libbpf_sys::BPF_TC_EGRESS
            },
            ..Default::default()
        }
    }

    fn tc_opts() -> libbpf_sys::bpf_tc_opts {
        libbpf_sys::bpf_tc_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_tc_opts>() as _,
            handle: 1,
            priority: 1,
            ..Default::default()
        }
    }

    fn attach_type(self) -> u32 {
        match self {
            How::TcxLinkIngress => libbpf_sys::BPF_TCX_INGRESS,
            How::TcxProgEgress => libbpf_sys::BPF_TCX_EGRESS,
            _ => libbpf_sys::BPF_XDP,
        }
    }
}

/// The stand-in daemon: its object (maps), and the link it holds, if any.
struct Daemon {
    obj: Object,
    how: How,
    ns: String,
    dev: String,
    link: Option<OwnedFd>,
    prog_id: u32,
}

impl Daemon {
    fn start(p: &Pair, path: &str, how: How) -> Daemon {
        let mut open = ObjectBuilder::default().open_file(path).expect("open");
        if how.tc().is_none() {
            for mut pr in open.progs_mut() {
                pr.set_prog_type(libbpf_rs::ProgramType::Xdp);
            }
        }
        let obj = open.load().expect("daemon load");
        let fd = obj.progs().next().expect("a program").as_fd().as_raw_fd();
        let (ns, dev) = (p.a.clone(), p.va.clone());
        let link = in_ns(&ns, || {
            let idx = ifindex(&dev);
            // SAFETY (all): valid fds and sized opts.
            match how {
                How::XdpNetlinkGeneric => {
                    let rc = unsafe {
                        libbpf_sys::bpf_xdp_attach(
                            idx as i32,
                            fd,
                            libbpf_sys::XDP_FLAGS_SKB_MODE,
                            std::ptr::null(),
                        )
                    };
                    assert_eq!(rc, 0, "netlink XDP attach");
                    None
                }
                How::ClsactIngress | How::ClsactEgress => {
                    let mut h = how.tc_hook(idx);
                    assert_eq!(unsafe { libbpf_sys::bpf_tc_hook_create(&mut h) }, 0);
                    let mut o = How::tc_opts();
                    o.prog_fd = fd;
                    assert_eq!(unsafe { libbpf_sys::bpf_tc_attach(&h, &mut o) }, 0);
                    None
                }
                How::TcxProgEgress => {
                    let o = libbpf_sys::bpf_prog_attach_opts {
                        sz: std::mem::size_of::<libbpf_sys::bpf_prog_attach_opts>() as _,
                        ..Default::default()
                    };
                    let rc = unsafe {
                        libbpf_sys::bpf_prog_attach_opts(fd, idx as i32, how.attach_type(), &o)
                    };
                    assert_eq!(rc, 0, "tcx program attach");
                    None
                }
                How::XdpLinkNative | How::TcxLinkIngress => {
                    let o = libbpf_sys::bpf_link_create_opts {
                        sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
                        flags: if how == How::XdpLinkNative {
                            libbpf_sys::XDP_FLAGS_DRV_MODE
                        } else {
                            0
                        },
                        ..Default::default()
                    };
                    let l = unsafe {
                        libbpf_sys::bpf_link_create(fd, idx as i32, how.attach_type(), &o)
                    };
                    Some(owned(l, "bpf_link_create"))
                }
            }
        });
        Daemon {
            prog_id: prog_id(fd),
            obj,
            how,
            ns,
            dev,
            link,
        }
    }

    fn map(&self, name: &str) -> libbpf_rs::Map<'_> {
        self.obj
            .maps()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("no map {name}"))
    }

    /// The program attached where the daemon attached its own (0: none).
    fn attached(&self) -> u32 {
        if let Some(l) = &self.link {
            // SAFETY: zero is a valid bpf_link_info.
            let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of_val(&info) as u32;
            // SAFETY: info is `len` bytes.
            let rc =
                unsafe { libbpf_sys::bpf_link_get_info_by_fd(l.as_raw_fd(), &mut info, &mut len) };
            assert_eq!(rc, 0);
            return info.prog_id;
        }
        let (how, dev) = (self.how, self.dev.clone());
        in_ns(&self.ns, move || {
            let idx = ifindex(&dev) as i32;
            if how == How::XdpNetlinkGeneric {
                let mut id = 0u32;
                // SAFETY: a u32 out-parameter.
                let rc = unsafe {
                    libbpf_sys::bpf_xdp_query_id(
                        idx,
                        libbpf_sys::XDP_FLAGS_SKB_MODE as i32,
                        &mut id,
                    )
                };
                assert_eq!(rc, 0);
                return id;
            }
            if matches!(how, How::ClsactIngress | How::ClsactEgress) {
                let h = how.tc_hook(idx as u32);
                let mut o = How::tc_opts();
                // SAFETY: a valid hook and opts.
                let rc = unsafe { libbpf_sys::bpf_tc_query(&h, &mut o) };
                return if rc == 0 { o.prog_id } else { 0 };
            }
            let mut ids = [0u32; 8];
            let mut o = libbpf_sys::bpf_prog_query_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_prog_query_opts>() as _,
                prog_ids: ids.as_mut_ptr(),
                ..Default::default()
            };
            o.__bindgen_anon_1.count = 8;
            // SAFETY: an array of `count` ids.
            let rc = unsafe { libbpf_sys::bpf_prog_query_opts(idx, how.attach_type(), &mut o) };
            assert_eq!(rc, 0);
            // SAFETY: the kernel wrote the count.
            assert!(
                unsafe { o.__bindgen_anon_1.count } <= 1,
                "several tcx programs"
            );
            ids[0]
        })
    }

    fn wait_attached(&self, want: impl Fn(u32) -> bool, child: &mut Child, what: &str) {
        let t0 = Instant::now();
        while !want(self.attached()) {
            if let Ok(Some(st)) = child.try_wait() {
                let o =
                    std::mem::replace(child, std::process::Command::new("true").spawn().unwrap())
                        .wait_with_output()
                        .unwrap();
                panic!(
                    "inxpect exited early ({st}): {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "never {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

const ROUTED_DMAC: [u8; 6] = [2, 0, 0, 0, 0x0a, 0x03];
const NEW_DMAC: [u8; 6] = [2, 0, 0, 0, 0x0a, 0x77];
const DST_A: [u8; 4] = [10, 1, 2, 3];
const DST_NEW: [u8; 4] = [10, 77, 0, 1];
const DST_BLOCKED: [u8; 4] = [10, 66, 0, 1];

/// The router's routes of testdata/packets/config.json that the tests use,
/// written as the daemon would.
fn fill_routes(d: &Daemon) {
    let m = d.map("routes_v4");
    for (prefix, len, dmac) in [
        ([10, 0, 0, 0], 8u32, [2, 0, 0, 0, 0x0a, 0x01]),
        ([10, 1, 2, 0], 24, ROUTED_DMAC),
    ] {
        route(&m, prefix, len, dmac);
    }
}

fn route(m: &libbpf_rs::Map<'_>, prefix: [u8; 4], len: u32, dmac: [u8; 6]) {
    let mut k = len.to_ne_bytes().to_vec();
    k.extend(prefix);
    let mut v = 9u32.to_ne_bytes().to_vec();
    v.extend(dmac);
    v.extend([2, 0, 0, 0, 0x01, 0x04]);
    m.update(&k, &v, MapFlags::ANY).expect("route");
}

/// A 60-byte UDP/IPv4 frame to `dst`, TTL 64, with a valid checksum.
fn frame(dst: [u8; 4]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xbb, 0x08, 0x00];
    let mut ip = vec![
        0x45, 0, 0, 46, 0, 1, 0, 0, 64, 17, 0, 0, 10, 9, 0, 1, dst[0], dst[1], dst[2], dst[3],
    ];
    let sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend(ip);
    f.extend([0x30, 0x39, 0x00, 0x35, 0, 26, 0, 0]);
    f.resize(60, 0);
    f
}

fn packet_socket(dev: &str) -> (OwnedFd, libc::sockaddr_ll) {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket syscall.
    let s = owned(
        unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) },
        "AF_PACKET",
    );
    // SAFETY: zeroed sockaddr_ll filled with the device.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = ifindex(dev) as i32;
    sa.sll_halen = 6;
    (s, sa)
}

/// Frames received, by (destination address, destination MAC, TTL).
type Seen = HashMap<([u8; 4], [u8; 6], u8), u64>;

/// A sender of frames to DST_A at a bounded rate from `ns`/`dev`, and a
/// receiver on `rx` (B's end) counting what arrives.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    sender: Option<JoinHandle<()>>,
    rx_stop: Arc<AtomicBool>,
    receiver: Option<JoinHandle<Seen>>,
}

/// At most this many frames, one every 200 µs: the loops are bounded.
const MAX_FRAMES: u64 = 300_000;

impl Traffic {
    fn start(tx_ns: &str, tx_dev: &str, rx_ns: &str, rx_dev: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let rx_stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let receiver = {
            let (ns, dev, rx_stop, ready) = (
                rx_ns.to_string(),
                rx_dev.to_string(),
                rx_stop.clone(),
                ready.clone(),
            );
            std::thread::spawn(move || in_ns(&ns, || receive(&dev, &rx_stop, &ready)))
        };
        while !ready.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let sender = {
            let (ns, dev, stop, sent) = (
                tx_ns.to_string(),
                tx_dev.to_string(),
                stop.clone(),
                sent.clone(),
            );
            std::thread::spawn(move || {
                in_ns(&ns, || {
                    let (s, sa) = packet_socket(&dev);
                    let f = frame(DST_A);
                    while !stop.load(Ordering::SeqCst) && sent.load(Ordering::SeqCst) < MAX_FRAMES {
                        send(&s, &sa, &f);
                        sent.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            })
        };
        Traffic {
            stop,
            sent,
            sender: Some(sender),
            rx_stop,
            receiver: Some(receiver),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stops sending, lets the last frames arrive, returns (sent, seen).
    fn finish(mut self) -> (u64, Seen) {
        self.stop.store(true, Ordering::SeqCst);
        self.sender.take().unwrap().join().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        self.rx_stop.store(true, Ordering::SeqCst);
        let seen = self.receiver.take().unwrap().join().unwrap();
        (self.sent(), seen)
    }
}

fn send(s: &OwnedFd, sa: &libc::sockaddr_ll, f: &[u8]) {
    assert!(try_send(s, sa, f), "frame dropped on the way out");
}

/// False when the kernel dropped the frame on the way out (ENOBUFS: a tc
/// egress program said TC_ACT_SHOT).
fn try_send(s: &OwnedFd, sa: &libc::sockaddr_ll, f: &[u8]) -> bool {
    // SAFETY: f and sa are valid for the lengths given.
    let rc = unsafe {
        libc::sendto(
            s.as_raw_fd(),
            f.as_ptr().cast(),
            f.len(),
            0,
            (sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
        return false;
    }
    assert_eq!(
        rc,
        f.len() as isize,
        "sendto: {}",
        std::io::Error::last_os_error()
    );
    true
}

/// Sends `n` frames to `dst` from `ns`/`dev` (paced like the stream);
/// returns how many the kernel dropped on the way out.
fn burst(ns: &str, dev: &str, dst: [u8; 4], n: u64) -> u64 {
    let dev = dev.to_string();
    in_ns(ns, move || {
        let (s, sa) = packet_socket(&dev);
        let f = frame(dst);
        let mut dropped = 0;
        for _ in 0..n {
            dropped += u64::from(!try_send(&s, &sa, &f));
            std::thread::sleep(Duration::from_micros(200));
        }
        dropped
    })
}

fn receive(dev: &str, stop: &AtomicBool, ready: &AtomicBool) -> Seen {
    let (s, sa) = packet_socket(dev);
    // SAFETY: sa is a valid sockaddr_ll; options with valid values.
    unsafe {
        assert_eq!(
            libc::bind(
                s.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32
            ),
            0
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let big: i32 = 8 << 20;
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&big as *const i32).cast(),
            4,
        );
    }
    ready.store(true, Ordering::SeqCst);
    let mut seen = Seen::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: zeroed sockaddr_ll and buffers of the sizes given.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut flen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        let n = unsafe {
            libc::recvfrom(
                s.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut flen,
            )
        };
        if n < 34 || from.sll_pkttype == libc::PACKET_OUTGOING || buf[12..14] != [8, 0] {
            continue;
        }
        let dst: [u8; 4] = buf[30..34].try_into().unwrap();
        let dmac: [u8; 6] = buf[0..6].try_into().unwrap();
        *seen.entry((dst, dmac, buf[22])).or_insert(0) += 1;
    }
    seen
}

fn spawn_attach(p: &Pair, obj: &str, tc: Option<&str>, extra: &[&str]) -> Child {
    let mut args = vec![
        "attach",
        obj,
        "--netns",
        &p.a,
        "--dev",
        &p.va,
        "--counter",
        "ktime",
        "--json",
        "--interval",
        "500ms",
        "--no-calibrate",
    ];
    if let Some(t) = tc {
        args.extend(["--tc", t]);
    }
    args.extend_from_slice(extra);
    bin()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn inxpect attach")
}

/// The report's runs, checked against the frames the test knows the
/// instrumented build saw: at least those sent while it was attached (less
/// one NAPI budget in flight at the swap), at most all frames sent.
fn check_runs(v: &serde_json::Value, during: u64, total: u64) {
    let runs = v["runs"].as_u64().expect("runs");
    assert!(
        runs + 64 >= during && runs <= total,
        "runs {runs}: want {during}..={total} ({v})"
    );
    assert!(during > 100, "too few frames while attached: {during}");
    let counts = region_counts(v);
    let parse = counts.iter().find(|(n, _)| n == "parse").expect("parse").1;
    assert_eq!(
        parse, runs,
        "every run goes through parse at 1/1: {counts:?}"
    );
}

fn router_swap(how: How) {
    let p = Pair::new("w");
    if how == How::XdpLinkNative {
        // XDP_TX on a veth in native mode needs NAPI on the peer: an
        // XDP_PASS program there gives it.
        let plain = root().join("loader/tests/data/plain.bpf.o");
        common::netns::sh(&[
            "ip",
            "-n",
            &p.b,
            "link",
            "set",
            "dev",
            &p.vb,
            "xdpdrv",
            "obj",
            plain.to_str().unwrap(),
            "sec",
            "xdp",
        ]);
    }
    let obj = object("router.clang-O2-g.o");
    let d = Daemon::start(&p, &obj, how);
    fill_routes(&d);
    let orig = d.prog_id;
    assert_eq!(d.attached(), orig);
    let t = Traffic::start(&p.b, &p.vb, &p.b, &p.vb);
    std::thread::sleep(Duration::from_millis(300));
    let mut child = spawn_attach(&p, &obj, None, &[]);
    d.wait_attached(|id| id != orig, &mut child, "swapped in");
    // `set` reaches a live attach (its state names a live process; #16).
    let t0 = std::time::Instant::now();
    while !p.pin_dir().join("config").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "attach never pinned"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = run(&["set", "--netns", &p.a, "--dev", &p.va, "--sample", "1/1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let during0 = t.sent();
    // The control plane writes a route while the instrumented build runs:
    // it must route by it at once (the map is shared) and keep it after.
    route(&d.map("routes_v4"), [10, 77, 0, 0], 16, NEW_DMAC);
    assert_eq!(burst(&p.b, &p.vb, DST_NEW, 100), 0);
    std::thread::sleep(Duration::from_millis(700));
    let during = t.sent() - during0;
    sigint(&child);
    let o = child.wait_with_output().expect("wait");
    let v = report("attach", &o);
    assert_eq!(d.attached(), orig, "the original is not back");
    assert_eq!(burst(&p.b, &p.vb, DST_NEW, 100), 0);
    let (sent, seen) = t.finish();
    assert_eq!(v["command"], "attach");
    check_runs(&v, during + 100, sent + 100);
    // No frame lost or misrouted, swap in and out included.
    let ok = seen.get(&(DST_A, ROUTED_DMAC, 63)).copied().unwrap_or(0);
    let all_a: u64 = seen
        .iter()
        .filter(|(k, _)| k.0 == DST_A)
        .map(|(_, n)| n)
        .sum();
    assert_eq!((ok, all_a), (sent, sent), "sent {sent}, received {seen:?}");
    let new = seen.get(&(DST_NEW, NEW_DMAC, 63)).copied().unwrap_or(0);
    assert_eq!(new, 200, "the route written during the profile: {seen:?}");
    let mut k = 16u32.to_ne_bytes().to_vec();
    k.extend([10, 77, 0, 0]);
    assert!(
        d.map("routes_v4")
            .lookup(&k, MapFlags::ANY)
            .unwrap()
            .is_some(),
        "the route written during the profile is gone"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("restored xdp_router (id {orig})")),
        "{err}"
    );
    assert!(!p.pin_dir().exists(), "pins left behind");
}

#[test]
fn router_netlink_generic_swap_keeps_every_frame_and_restores() {
    router_swap(How::XdpNetlinkGeneric);
}

#[test]
fn router_link_native_swap_keeps_every_frame_and_restores() {
    router_swap(How::XdpLinkNative);
}

fn tc_flows(d: &Daemon, dst: [u8; 4]) -> u64 {
    d.map("flows")
        .lookup(&dst, MapFlags::ANY)
        .unwrap()
        .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap()))
        .unwrap_or(0)
}

fn tc_swap(how: How) {
    let p = Pair::new("w");
    let obj = tc_object();
    let d = Daemon::start(&p, &obj, how);
    let orig = d.prog_id;
    assert_eq!(d.attached(), orig);
    let dir = how.tc().unwrap();
    // Ingress: frames from B into va. Egress: frames from A out of va to B.
    let (tx_ns, tx_dev) = if dir == "ingress" {
        (p.b.clone(), p.vb.clone())
    } else {
        (p.a.clone(), p.va.clone())
    };
    let t = Traffic::start(&tx_ns, &tx_dev, &p.b, &p.vb);
    std::thread::sleep(Duration::from_millis(300));
    let mut child = spawn_attach(&p, &obj, Some(dir), &[]);
    d.wait_attached(|id| id != orig, &mut child, "swapped in");
    let during0 = t.sent();
    // The control plane blocks a destination during the profile.
    d.map("blocked")
        .update(&DST_BLOCKED, &1u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap();
    let shot_during = burst(&tx_ns, &tx_dev, DST_BLOCKED, 50);
    std::thread::sleep(Duration::from_millis(700));
    let during = t.sent() - during0;
    sigint(&child);
    let o = child.wait_with_output().expect("wait");
    let v = report("attach", &o);
    assert_eq!(d.attached(), orig, "the original is not back");
    let shot_after = burst(&tx_ns, &tx_dev, DST_BLOCKED, 50);
    let (sent, seen) = t.finish();
    // At egress the sender sees the drop (ENOBUFS), by either build.
    if dir == "egress" {
        assert_eq!((shot_during, shot_after), (50, 50));
    }
    let kind = if matches!(how, How::ClsactIngress | How::ClsactEgress) {
        "clsact"
    } else {
        "tcx"
    };
    assert_eq!(v["live"]["mode"], format!("{kind}-{dir}"));
    check_runs(&v, during + 50, sent + 100);
    // Every frame counted once, before, during and after the profile, in
    // the map both builds share: none went through without a program.
    assert_eq!(tc_flows(&d, DST_A), sent, "flows of {DST_A:?}");
    assert_eq!(tc_flows(&d, DST_BLOCKED), 0, "blocked frames counted");
    if dir == "egress" {
        let got: u64 = seen
            .iter()
            .filter(|(k, _)| k.0 == DST_A)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(got, sent, "received at B: {seen:?}");
        let blocked: u64 = seen
            .iter()
            .filter(|(k, _)| k.0 == DST_BLOCKED)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(blocked, 0, "blocked frames passed: {seen:?}");
    }
    let account = region_counts(&v)
        .into_iter()
        .find(|(n, _)| n == "account")
        .expect("account")
        .1;
    assert!(
        account >= 50,
        "account {account}: the 50 blocked frames at least"
    );
}

#[test]
fn tc_ingress_tcx_link_swap_counts_every_frame_and_restores() {
    tc_swap(How::TcxLinkIngress);
}

#[test]
fn tc_egress_tcx_prog_swap_counts_every_frame_and_restores() {
    tc_swap(How::TcxProgEgress);
}

#[test]
fn tc_ingress_clsact_filter_swap_counts_every_frame_and_restores() {
    tc_swap(How::ClsactIngress);
}

#[test]
fn tc_egress_clsact_filter_swap_counts_every_frame_and_restores() {
    tc_swap(How::ClsactEgress);
}

/// Compiles `src` (a testdata app, edited by `edit`) with clang.
/// `--window`: the builds take turns at the hook many times over while
/// frames flow. Every frame still goes through one of them (the map both
/// share counts each once; the router routes each), the instrumented build
/// sees only some (its runs are fewer than the frames), and the original is
/// attached at the end.
fn windowed(how: How) {
    let p = Pair::new("w");
    let (obj, tc) = match how.tc() {
        Some(dir) => (tc_object(), Some(dir)),
        None => (object("router.clang-O2-g.o"), None),
    };
    let d = Daemon::start(&p, &obj, how);
    if tc.is_none() {
        fill_routes(&d);
    }
    let orig = d.prog_id;
    let t = Traffic::start(&p.b, &p.vb, &p.b, &p.vb);
    std::thread::sleep(Duration::from_millis(300));
    let mut child = spawn_attach(
        &p,
        &obj,
        tc,
        &[
            "--window",
            "20ms/100ms",
            "--duration",
            "2s",
            "--sample",
            "1/1",
        ],
    );
    d.wait_attached(|id| id != orig, &mut child, "swapped in");
    let o = child.wait_with_output().expect("wait");
    let v = report("attach", &o);
    assert_eq!(d.attached(), orig, "the original is not back");
    let (sent, seen) = t.finish();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("measuring in windows of 20ms every 100ms"),
        "{err}"
    );
    let w = &v["live"]["window"];
    assert_eq!(w["on_seconds"], 0.02, "{w}");
    assert_eq!(w["period_seconds"], 0.1, "{w}");
    assert!(w.get("stopped").is_none(), "{w}");
    let opened = w["opened"].as_u64().expect("opened");
    assert!(opened >= 2, "no window closed and opened again: {w}");
    let runs = v["runs"].as_u64().expect("runs");
    assert!(
        runs > 0 && runs < sent,
        "runs {runs} of {sent} frames: the instrumented build ran all along or never"
    );
    if tc.is_some() {
        assert_eq!(
            tc_flows(&d, DST_A),
            sent,
            "a frame went by without a program"
        );
    } else {
        let ok = seen.get(&(DST_A, ROUTED_DMAC, 63)).copied().unwrap_or(0);
        assert_eq!(ok, sent, "sent {sent}, received {seen:?}");
        let parse = region_counts(&v)
            .into_iter()
            .find(|(n, _)| n == "parse")
            .expect("parse")
            .1;
        assert_eq!(parse, runs, "every run goes through parse at 1/1");
    }
}

#[test]
fn windows_swap_xdp_netlink_many_times_and_every_frame_is_routed() {
    windowed(How::XdpNetlinkGeneric);
}

#[test]
fn windows_swap_a_tcx_link_many_times_and_every_frame_is_counted() {
    windowed(How::TcxLinkIngress);
}

#[test]
fn windows_swap_a_clsact_filter_many_times_and_every_frame_is_counted() {
    windowed(How::ClsactIngress);
}

/// `run --window`: inxpect loads the object as it is beside its
/// instrumented build (every map shared) and swaps the two on its own
/// bpf_link. Every frame is still routed by the routes `--config` wrote
/// into the shared map, whichever build ran it, and the instrumented build
/// runs only some of them.
#[test]
fn run_windows_share_the_maps_and_route_every_frame() {
    let p = Pair::new("w");
    let t = Traffic::start(&p.b, &p.vb, &p.b, &p.vb);
    let child = common::netns::spawn_run(
        &p,
        "router",
        "generic",
        &[
            "--window",
            "20ms/100ms",
            "--duration",
            "2s",
            "--sample",
            "1/1",
            "--no-calibrate",
        ],
    );
    // Reading its pipes while it runs: a full stderr must not stall it.
    let o = child.wait_with_output().unwrap();
    let (sent, seen) = t.finish();
    let v = report("run", &o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("measuring in windows of 20ms every 100ms"),
        "{err}"
    );
    let w = &v["live"]["window"];
    assert!(w["opened"].as_u64().unwrap() >= 2, "{w}");
    assert!(w.get("stopped").is_none(), "{w}");
    let runs = v["runs"].as_u64().unwrap();
    assert!(runs > 0 && runs < sent, "runs {runs} of {sent} frames");
    // Frames sent before the attach, or after the detach, are not routed:
    // every routed one went through a build, and while inxpect ran, every
    // frame was routed (at least the instrumented build's runs, plus more).
    let routed = seen.get(&(DST_A, ROUTED_DMAC, 63)).copied().unwrap_or(0);
    assert!(
        routed > runs,
        "routed {routed}, runs {runs}: the original never ran"
    );
    let other: u64 = seen
        .iter()
        .filter(|(k, _)| k.0 == DST_A && k.1 != ROUTED_DMAC)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(other, 0, "misrouted: {seen:?}");
    assert!(!p.pin_dir().exists(), "pins left behind");
}

#[test]
fn run_window_on_a_prog_array_is_refused() {
    let p = Pair::new("w");
    let o = run(&[
        "run",
        &root()
            .join("testdata/foreign/tailcall.clang-O2-g.o")
            .display()
            .to_string(),
        "--functions",
        "--prog",
        "entry",
        "--netns",
        &p.a,
        "--dev",
        &p.va,
        "--mode",
        "generic",
        "--counter",
        "ktime",
        "--window",
        "10ms/100ms",
        "--duration",
        "1s",
        "--no-calibrate",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is a prog array"), "{err}");
    assert!(!p.xdp_attached(), "a program was left attached");
}

fn compile_variant(dir: &std::path::Path, app: &str, edit: impl Fn(String) -> String) -> String {
    let src = std::fs::read_to_string(root().join(format!("testdata/apps/{app}.bpf.c"))).unwrap();
    let c = dir.join(format!("{app}.bpf.c"));
    std::fs::write(&c, edit(src)).unwrap();
    let o = dir.join(format!("{app}.o"));
    let r = root();
    let st = std::process::Command::new("clang")
        .args(["-target", "bpf", "-O2", "-g", "-c"])
        .arg(&c)
        .arg("-I")
        .arg(r.join("runtime-bpf/include"))
        .arg("-I")
        .arg(r.join("testdata/apps"))
        .args(["-I/usr/include/x86_64-linux-gnu", "-o"])
        .arg(&o)
        .status()
        .expect("clang");
    assert!(st.success());
    o.display().to_string()
}

fn refused(p: &Pair, d: &Daemon, obj: &str, tc: Option<&str>, want: &[&str]) {
    let orig = d.prog_id;
    let child = spawn_attach(p, obj, tc, &["--duration", "1s"]);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "a mismatching object was attached: {err}"
    );
    for w in want {
        assert!(err.contains(w), "{w:?} missing from: {err}");
    }
    assert!(!err.contains("swapped"), "{err}");
    assert_eq!(d.attached(), orig, "the running program was changed");
    assert!(!p.pin_dir().exists(), "pins left behind");
}

#[test]
fn mismatching_objects_are_refused_before_anything_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Pair::new("w");
    let d = Daemon::start(&p, &object("router.clang-O2-g.o"), How::XdpNetlinkGeneric);
    fill_routes(&d);
    // One edit per property: max_entries of one map, value size of another.
    let bad = compile_variant(tmp.path(), "router", |s| {
        s.replacen("max_entries, 1024", "max_entries, 2048", 1)
            .replacen(
                "__type(key, struct lpm_key6);\n\t__type(value, struct route);",
                "__type(key, struct lpm_key6);\n\t__type(value, struct route[2]);",
                1,
            )
    });
    refused(
        &p,
        &d,
        &bad,
        None,
        &[
            "nothing was changed",
            "map routes_v4: max_entries 2048 here, 1024 running",
            "map routes_v6: value size 32 here, 16 running",
        ],
    );
    refused(
        &p,
        &d,
        &object("nat.clang-O2-g.o"),
        None,
        &["has no program \"xdp_router\""],
    );
    // --prog names another program of a matching object.
    let two = compile_variant(tmp.path(), "router", |s| {
        s + "\nSEC(\"xdp\")\nint xdp_other(struct xdp_md *ctx)\n{\n\tINXPECT_START(all);\n\tINXPECT_END(all);\n\treturn XDP_PASS;\n}\n"
    });
    let child = spawn_attach(&p, &two, None, &["--prog", "xdp_other", "--duration", "1s"]);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("program xdp_other: the running program is xdp_router"),
        "{err}"
    );
    assert_eq!(d.attached(), d.prog_id);
    let mut k = 24u32.to_ne_bytes().to_vec();
    k.extend([10, 1, 2, 0]);
    assert!(d
        .map("routes_v4")
        .lookup(&k, MapFlags::ANY)
        .unwrap()
        .is_some());

    // A daemon's prog array (tail calls into its uninstrumented programs).
    let tail = compile_variant(tmp.path(), "router", |s| {
        s.replacen(
            "SEC(\"xdp\")\nint xdp_router(struct xdp_md *ctx)\n{",
            "struct {\n\t__uint(type, BPF_MAP_TYPE_PROG_ARRAY);\n\t__uint(max_entries, 4);\n\t__type(key, __u32);\n\t__type(value, __u32);\n} jmp SEC(\".maps\");\n\nSEC(\"xdp\")\nint xdp_router(struct xdp_md *ctx)\n{\n\tbpf_tail_call(ctx, &jmp, 0);",
            1,
        )
    });
    let r = Pair::new("w");
    let d3 = Daemon::start(&r, &tail, How::XdpNetlinkGeneric);
    refused(
        &r,
        &d3,
        &tail,
        None,
        &["nothing was changed", "map jmp (id", "a prog array"],
    );

    let q = Pair::new("w");
    let d = Daemon::start(&q, &tc_object(), How::TcxLinkIngress);
    let bad = compile_variant(tmp.path(), "tc_count", |s| {
        s.replacen(
            "__type(key, __u32);\n\t__type(value, __u64);",
            "__type(key, __u64);\n\t__type(value, __u64);",
            1,
        )
    });
    refused(
        &q,
        &d,
        &bad,
        Some("ingress"),
        &[
            "nothing was changed",
            "map flows: key size 8 here, 4 running",
        ],
    );
    refused(&q, &d, &bad, Some("egress"), &["no tc program at"]);
}

/// SIGKILL of `inxpect attach` at each kind of hook: the guard puts the
/// original back.
#[test]
fn killed_attach_is_undone_by_the_guard() {
    for how in [
        How::XdpNetlinkGeneric,
        How::XdpLinkNative,
        How::TcxLinkIngress,
        How::TcxProgEgress,
        How::ClsactIngress,
    ] {
        let p = Pair::new("w");
        let obj = match how.tc() {
            None => object("router.clang-O2-g.o"),
            Some(_) => tc_object(),
        };
        let d = Daemon::start(&p, &obj, how);
        let orig = d.prog_id;
        let mut child = spawn_attach(&p, &obj, how.tc(), &[]);
        d.wait_attached(|id| id != orig, &mut child, "swapped in");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let t0 = Instant::now();
        while d.attached() != orig {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{how:?}: the guard did not restore the original"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The daemon replaces the instrumented build during the profile (an
/// upgrade): inxpect leaves the daemon's program attached, says so, and
/// still reports.
#[test]
fn a_program_replaced_meanwhile_is_left_attached() {
    let p = Pair::new("w");
    let obj = object("router.clang-O2-g.o");
    let d = Daemon::start(&p, &obj, How::XdpNetlinkGeneric);
    let orig = d.prog_id;
    let mut child = spawn_attach(&p, &obj, None, &[]);
    d.wait_attached(|id| id != orig, &mut child, "swapped in");
    // attach pins once it has checked its swap: replace after that.
    let t0 = Instant::now();
    while !p.pin_dir().join("config").exists() {
        assert!(t0.elapsed() < Duration::from_secs(20), "never pinned");
        std::thread::sleep(Duration::from_millis(10));
    }
    let upgrade = ObjectBuilder::default()
        .open_file(object("drop.clang-O2-g.o"))
        .unwrap()
        .load()
        .unwrap();
    let fd = upgrade.progs().next().unwrap().as_fd().as_raw_fd();
    let dev = p.va.clone();
    in_ns(&p.a, || {
        // SAFETY: a valid fd; no opts: replaces whatever is attached.
        let rc = unsafe {
            libbpf_sys::bpf_xdp_attach(
                ifindex(&dev) as i32,
                fd,
                libbpf_sys::XDP_FLAGS_SKB_MODE,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0);
    });
    let new = prog_id(fd);
    sigint(&child);
    let o = child.wait_with_output().unwrap();
    let v = report("attach", &o);
    assert_eq!(v["command"], "attach");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("program {new} replaced the instrumented build")),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.attached(), new, "the daemon's upgrade was replaced");
}

fn tc_object() -> String {
    root()
        .join("testdata/objects/tc/tc_count.clang-O2-g.o")
        .display()
        .to_string()
}

/// `burst` from one CPU: the runtime's sampling counter is per CPU, so a
/// 1/K sample is exact only when every frame runs on the same one.
fn burst_one_cpu(ns: &str, dev: &str, dst: [u8; 4], n: u64) -> u64 {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain syscalls on a zeroed cpu_set_t.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            burst(ns, dev, dst, n)
        })
        .join()
        .unwrap()
    })
}

fn tc_run(dir: &str, hook: &str) {
    let p = Pair::new("w");
    let obj = tc_object();
    let mut child = bin()
        .args([
            "run",
            &obj,
            "--netns",
            &p.a,
            "--dev",
            &p.va,
            "--tc",
            dir,
            "--tc-hook",
            hook,
            "--counter",
            "ktime",
            "--json",
            "--interval",
            "500ms",
            "--no-calibrate",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pins =
        std::path::Path::new("/sys/fs/bpf/inxpect").join(format!("{}-{}-tc-{dir}", p.a, p.va));
    let t0 = Instant::now();
    while !pins.join("config").exists() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("inxpect run exited early: {st}");
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never attached");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ns, dev) = if dir == "ingress" {
        (&p.b, &p.vb)
    } else {
        (&p.a, &p.va)
    };
    assert_eq!(burst_one_cpu(ns, dev, DST_A, 200), 0);
    let o = run(&[
        "set", "--netns", &p.a, "--dev", &p.va, "--tc", dir, "--sample", "1/4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(burst_one_cpu(ns, dev, DST_A, 200), 0);
    sigint(&child);
    let o = child.wait_with_output().unwrap();
    let v = report("run", &o);
    assert_eq!(v["live"]["mode"], format!("{hook}-{dir}"));
    assert_eq!(v["runs"].as_u64(), Some(400), "{v}");
    // Runs 1..=200 all sampled, then 1 in 4 of 201..=400.
    assert_eq!(v["sampled"].as_u64(), Some(250), "{v}");
    let counts = region_counts(&v);
    assert_eq!(counts, vec![("parse".into(), 250), ("account".into(), 250)]);
    assert!(!pins.exists(), "pins left behind");
    // Nothing left on the device: no tcx program, no filter, no qdisc we made.
    let q = std::process::Command::new("tc")
        .args(["-n", &p.a, "filter", "show", "dev", &p.va, dir])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&q.stdout).trim().is_empty(),
        "filter left"
    );
    let q = std::process::Command::new("tc")
        .args(["-n", &p.a, "qdisc", "show", "dev", &p.va])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&q.stdout).contains("clsact"),
        "qdisc left"
    );
}

#[test]
fn tc_run_ingress_tcx_counts_and_set_changes_sampling() {
    tc_run("ingress", "tcx");
}

#[test]
fn tc_run_egress_clsact_counts_and_set_changes_sampling() {
    tc_run("egress", "clsact");
}

fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut b = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    b.extend(2u16.to_le_bytes());
    b.extend(4u16.to_le_bytes());
    b.extend([0u8; 8]);
    b.extend(65535u32.to_le_bytes());
    b.extend(1u32.to_le_bytes());
    for f in frames {
        b.extend([0u8; 8]);
        b.extend((f.len() as u32).to_le_bytes());
        b.extend((f.len() as u32).to_le_bytes());
        b.extend(f);
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn tc_test_run_counts_skb_runs_in_sections_and_functions() {
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("tc.pcap");
    // 30 IPv4 frames and 10 ARP frames (ethertype 0x0806: parse only).
    let mut frames = vec![frame(DST_A); 30];
    let mut arp = frame(DST_A);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    frames.extend(vec![arp; 10]);
    write_pcap(&pcap, &frames);
    let pcap = pcap.display().to_string();
    let obj = tc_object();
    let base = [
        "test-run",
        &obj,
        "--pcap",
        &pcap,
        "--counter",
        "ktime",
        "--no-calibrate",
        "--json",
    ];
    let v = json(&base);
    assert_eq!(v["test_run"]["frames"].as_u64(), Some(40));
    assert_eq!(v["test_run"]["verdicts"], serde_json::json!({"OK": 40}));
    assert_eq!(v["runs"].as_u64(), Some(40));
    assert_eq!(
        region_counts(&v),
        vec![("parse".into(), 40), ("account".into(), 30)]
    );
    let mut f = base.to_vec();
    f.push("--functions");
    let v = json(&f);
    assert_eq!(region_counts(&v), vec![("tc_count".into(), 40)]);
    // XDP's run refuses a tc program, and says how to attach it.
    fails(
        &[
            "run",
            &obj,
            "--dev",
            "lo",
            "--counter",
            "ktime",
            "--no-calibrate",
        ],
        "use --tc ingress|egress",
    );
    // Frames the kernel will not test-run on an skb are skipped, each named
    // with why: the corpus's frame 11 is 29 bytes of ethertype IPv4.
    let v = json(&[
        "test-run",
        &obj,
        "--pcap",
        &corpus(),
        "--counter",
        "ktime",
        "--no-calibrate",
        "--json",
    ]);
    let skipped = v["test_run"]["skipped_frames"]
        .as_array()
        .expect("skipped_frames");
    let f11 = skipped
        .iter()
        .find(|s| s["frame"] == 11)
        .unwrap_or_else(|| panic!("frame 11 not skipped: {skipped:?}"));
    assert_eq!(f11["bytes"], 29);
    assert!(
        f11["reason"]
            .as_str()
            .unwrap()
            .contains("34 bytes (Ethernet and IPv4 header)"),
        "{f11}"
    );
    let ran = v["test_run"]["frames"].as_u64().unwrap();
    assert_eq!(ran + skipped.len() as u64, corpus_frames());
    assert_eq!(v["runs"].as_u64(), Some(ran));
}
