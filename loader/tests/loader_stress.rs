//! Stress (issue 8): many attach/detach cycles, live `set` changes while
//! traffic flows, two instrumented programs on two devices at once. Each
//! test uses its own namespaces and veth pairs, deleted on drop, and checks
//! that no XDP program and no pin is left behind.

mod common;
use common::netns::{finish, sigint, spawn_run, Pair};
use common::*;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A child process killed (and reaped) on drop unless already waited for.
struct Guard(Option<Child>);

impl Guard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child")
    }
    fn take(&mut self) -> Child {
        self.0.take().expect("child")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(p: &Pair, app: &str, mode: &str, extra: &[&str]) -> Guard {
    Guard(Some(spawn_run(p, app, mode, extra)))
}

/// No pin directory of this process's namespaces under /sys/fs/bpf/inxpect.
fn assert_no_pins_of_ours() {
    let pid = std::process::id().to_string();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/bpf/inxpect") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(
                !(n.starts_with("insa") && n[4..].starts_with(&pid)),
                "pin directory {n} left behind"
            );
        }
    }
}

fn enter_netns(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("netns file");
    // SAFETY: a namespace fd and a valid nstype; affects this thread only.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

fn ifindex(dev: &str) -> u32 {
    let c = std::ffi::CString::new(dev).unwrap();
    // SAFETY: a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no device {dev}");
    i
}

/// The XDP program id on `ifindex` in this thread's namespace (0: none).
fn xdp_prog_on(ifindex: u32) -> u32 {
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as _,
        ..Default::default()
    };
    // SAFETY: opts is sized and initialised.
    let rc = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut opts) };
    assert!(rc >= 0, "bpf_xdp_query: {rc}");
    opts.prog_id
        .max(opts.drv_prog_id)
        .max(opts.skb_prog_id)
        .max(opts.hw_prog_id)
}

const CYCLES_LIBBPF: usize = 1000;
const CYCLES_BINARY: usize = 50;

/// 1,000 attach/detach cycles of one loaded instrumented program through
/// libbpf-rs (an `inxpect run` process costs ~80 ms, 1,000 of them would
/// exceed the minute), then 50 full `inxpect run` cycles.
#[test]
fn attach_detach_1000_times() {
    let p = Pair::new("s");
    let t0 = Instant::now();
    let (ns, dev) = (p.a.clone(), p.va.clone());
    // setns(2) moves only the calling thread: do it in a thread of our own.
    let h = std::thread::spawn(move || {
        enter_netns(&ns);
        let idx = ifindex(&dev);
        let bytes = std::fs::read(object("drop.clang-O2.o")).expect("object");
        let out = inxpect_rewriter::instrument(&bytes, &inxpect_rewriter::Options::default())
            .expect("instrument");
        assert!(!out.manifest.regions.is_empty());
        let obj = libbpf_rs::ObjectBuilder::default()
            .open_memory(&out.object)
            .expect("open")
            .load()
            .expect("load");
        let prog = obj
            .progs_mut()
            .find(|pr| pr.name() == "xdp_drop")
            .expect("xdp_drop");
        for i in 0..CYCLES_LIBBPF {
            let link = prog
                .attach_xdp(idx as i32)
                .unwrap_or_else(|e| panic!("attach {i}: {e}"));
            assert_ne!(xdp_prog_on(idx), 0, "cycle {i}: not attached");
            drop(link);
            assert_eq!(xdp_prog_on(idx), 0, "cycle {i}: still attached");
        }
    });
    h.join().expect("libbpf cycles");
    let t_lib = t0.elapsed();
    assert!(!p.xdp_attached(), "XDP left after libbpf cycles");

    let obj = object("drop.clang-O2.o");
    let t1 = Instant::now();
    for i in 0..CYCLES_BINARY {
        let mode = if i % 2 == 0 { "native" } else { "generic" };
        let o = run(&[
            "run",
            &obj,
            "--netns",
            &p.a,
            "--dev",
            &p.va,
            "--mode",
            mode,
            "--counter",
            "ktime",
            "--duration",
            "1ms",
            "--no-calibrate",
            "--json",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "cycle {i}: {err}");
        assert!(err.contains("detached from"), "cycle {i}: {err}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        assert_eq!(v["live"]["mode"], mode);
        if i % 10 == 9 {
            assert!(!p.xdp_attached(), "cycle {i}: XDP left");
        }
    }
    let t_bin = t1.elapsed();
    eprintln!("{CYCLES_LIBBPF} libbpf cycles in {t_lib:?}, {CYCLES_BINARY} inxpect run cycles in {t_bin:?}");
    p.assert_clean();
    assert_no_pins_of_ours();
}

/// One interval of the live view (stderr with `--json`).
#[derive(Debug, Default)]
struct Table {
    runs: u64,
    runs_delta: u64,
    /// name -> (count, +count)
    regions: HashMap<String, (u64, u64)>,
}

#[derive(Debug)]
enum Live {
    Changed(String),
    Table(Table),
}

/// Reads the live view line by line into events; `nregions` lines follow
/// each table header.
fn live_reader(stderr: std::process::ChildStderr, nregions: usize) -> Receiver<Live> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut cur: Option<Table> = None;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("inxpect: config changed: ") {
                let _ = tx.send(Live::Changed(rest.to_string()));
            } else if line.starts_with('[') && line.contains("] runs ") {
                // "[    0.2s] runs N (+d, x/s)  sampled S"
                let after = line.split("] runs ").nth(1).unwrap();
                let mut w = after.split_whitespace();
                let runs = w.next().unwrap().parse().unwrap();
                let d = w
                    .next()
                    .unwrap()
                    .trim_start_matches("(+")
                    .trim_end_matches(',');
                cur = Some(Table {
                    runs,
                    runs_delta: d.parse().unwrap(),
                    regions: HashMap::new(),
                });
            } else if let Some(t) = cur.as_mut() {
                let w: Vec<&str> = line.split_whitespace().collect();
                if w.first() == Some(&"REGION") || w.len() < 3 {
                    continue;
                }
                t.regions.insert(
                    w[0].to_string(),
                    (w[1].parse().unwrap(), w[2].parse().unwrap()),
                );
                if t.regions.len() == nregions {
                    let _ = tx.send(Live::Table(cur.take().unwrap()));
                }
            }
        }
    });
    rx
}

fn next_live(rx: &Receiver<Live>) -> Live {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("no live output for 10 s")
}

/// Waits for the `config changed` line announcing `want`, then returns the
/// second full interval after it (the first may hold runs started before).
fn settled_table(rx: &Receiver<Live>, want: &str) -> Table {
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < Duration::from_secs(10), "never saw {want:?}");
        if let Live::Changed(s) = next_live(rx) {
            if s == want {
                break;
            }
        }
    }
    let mut tables = 0;
    loop {
        if let Live::Table(t) = next_live(rx) {
            tables += 1;
            // The table printed with the change line, then two more.
            if tables == 3 {
                return t;
            }
        }
    }
}

/// `inxpect set` 20 times (sample and region toggles) on a router while a
/// background replay sends frames; the live view shows the disabled region
/// stop counting, the program keep running, and the report adds up.
#[test]
fn live_set_under_traffic() {
    let p = Pair::new("s");
    let mut g = start(
        &p,
        "router",
        "native",
        &["--interval", "150ms", "--no-calibrate"],
    );
    p.wait_attached(g.child());
    let rx = live_reader(g.child().stderr.take().unwrap(), 3);

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let (b, vb) = (p.b.clone(), p.vb.clone());
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let o = run(&["replay", "--netns", &b, "--dev", &vb, "--count", "100"]);
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                sent += 100;
                std::thread::sleep(Duration::from_millis(5));
            }
            sent
        })
    };

    let set = |args: &[&str]| {
        let mut a = vec!["set", "--netns", &p.a, "--dev", &p.va];
        a.extend_from_slice(args);
        let o = run(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let ks = [2u64, 4, 8, 1, 16, 2, 8, 4, 1, 2];
    let mut last_runs = 0;
    for (i, k) in ks.iter().enumerate() {
        let sample = format!("1/{k}");
        set(&["--sample", &sample, "--disable", "lookup"]);
        let t = settled_table(&rx, &format!("sample {sample}, enabled: parse,rewrite"));
        assert!(t.runs_delta > 0, "round {i}: no runs while disabled: {t:?}");
        assert!(t.runs > last_runs, "round {i}: runs stalled");
        assert_eq!(
            t.regions["lookup"].1, 0,
            "round {i}: disabled lookup still counts: {t:?}"
        );
        assert!(t.regions["parse"].1 > 0, "round {i}: parse stopped: {t:?}");
        set(&["--enable", "lookup"]);
        let t2 = settled_table(
            &rx,
            &format!("sample {sample}, enabled: parse,lookup,rewrite"),
        );
        assert!(t2.runs_delta > 0, "round {i}: no runs: {t2:?}");
        assert!(t2.runs > t.runs, "round {i}: runs stalled");
        assert!(
            t2.regions["lookup"].1 > 0,
            "round {i}: lookup not counting again: {t2:?}"
        );
        // Cumulative counts never go back.
        assert!(
            t2.regions["lookup"].0 >= t.regions["lookup"].0 + t2.regions["lookup"].1,
            "round {i}: {t:?} then {t2:?}"
        );
        last_runs = t2.runs;
    }
    stop.store(true, Ordering::SeqCst);
    let sent = traffic.join().expect("traffic");
    // Let the last frames reach XDP before stopping.
    std::thread::sleep(Duration::from_millis(300));
    let child = g.take();
    sigint(&child);
    let v = finish(child);
    assert_eq!(v["runs"].as_u64(), Some(sent), "{v}");
    assert_eq!(v["sample"].as_u64(), Some(2));
    let sampled = v["sampled"].as_u64().unwrap();
    assert!(sampled <= sent && sampled > 0, "{v}");
    for (n, c) in region_counts(&v) {
        assert!(c <= sampled, "{n}: {c} > sampled {sampled}");
    }
    assert!(v["regions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["enabled"] == true));
    eprintln!("sent {sent} frames, sampled {sampled}");
    p.assert_clean();
}

/// Two instrumented programs on two devices at once (router native, nat
/// generic), frames replayed to both concurrently: each report counts only
/// its own frames, both detach cleanly.
#[test]
fn two_programs_two_devices() {
    let p1 = Pair::new("s");
    let p2 = Pair::new("s");
    let mut g1 = start(&p1, "router", "native", &[]);
    let mut g2 = start(&p2, "nat", "generic", &[]);
    p1.wait_attached(g1.child());
    p2.wait_attached(g2.child());
    let (n1, n2) = (3000u64, 5000u64);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..10 {
                p1.send(n1 / 10);
            }
        });
        s.spawn(|| {
            for _ in 0..10 {
                p2.send(n2 / 10);
            }
        });
    });
    std::thread::sleep(Duration::from_millis(300));
    let (c1, c2) = (g1.take(), g2.take());
    sigint(&c1);
    sigint(&c2);
    let v1 = finish(c1);
    let v2 = finish(c2);
    assert_eq!(v1["program"], "xdp_router");
    assert_eq!(v2["program"], "xdp_nat");
    assert_eq!(v1["runs"].as_u64(), Some(n1), "{v1}");
    assert_eq!(v2["runs"].as_u64(), Some(n2), "{v2}");
    assert_eq!(v1["live"]["device"], p1.va.as_str());
    assert_eq!(v2["live"]["device"], p2.va.as_str());
    for (v, n) in [(&v1, n1), (&v2, n2)] {
        let counts = region_counts(v);
        assert!(
            counts.iter().any(|(r, c)| r == "parse" && *c == n),
            "{counts:?}"
        );
        assert!(counts.iter().all(|(_, c)| *c <= n), "{counts:?}");
    }
    p1.assert_clean();
    p2.assert_clean();
    assert_no_pins_of_ours();
}
