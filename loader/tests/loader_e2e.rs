//! `inxpect run` end to end: two network namespaces joined by a veth pair,
//! the instrumented app attached on one end, frames sent from the other.

mod common;
use common::*;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Namespaces `A`/`B` with veth ends `va` (in A) and `vb` (in B), unique
/// per process and test; deleted on drop, whatever happened.
struct Pair {
    a: String,
    b: String,
    va: String,
    vb: String,
}

impl Pair {
    fn new() -> Pair {
        let id = format!(
            "{}{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let p = Pair {
            a: format!("inxa{id}"),
            b: format!("inxb{id}"),
            va: format!("ixa{id}"),
            vb: format!("ixb{id}"),
        };
        sh(&["ip", "netns", "add", &p.a]);
        sh(&["ip", "netns", "add", &p.b]);
        sh(&[
            "ip", "link", "add", &p.va, "netns", &p.a, "type", "veth", "peer", "name", &p.vb,
            "netns", &p.b,
        ]);
        for (ns, dev) in [(&p.a, &p.va), (&p.b, &p.vb)] {
            // No IPv6: its router/neighbour solicitations would add runs.
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ]);
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        p
    }

    fn xdp_attached(&self) -> bool {
        let o = Command::new("ip")
            .args(["-n", &self.a, "-d", "link", "show", "dev", &self.va])
            .output()
            .expect("ip");
        let t = String::from_utf8_lossy(&o.stdout);
        t.contains("prog/xdp") || t.contains(" xdp")
    }

    fn wait_attached(&self, child: &mut Child) {
        let t0 = Instant::now();
        while !self.xdp_attached() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("inxpect run exited early: {st}");
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "never attached");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send(&self, n: u64) {
        let o = run(&[
            "replay",
            "--netns",
            &self.b,
            "--dev",
            &self.vb,
            "--count",
            &n.to_string(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    fn pin_dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/sys/fs/bpf/inxpect").join(format!("{}-{}", self.a, self.va))
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(self.pin_dir());
    }
}

fn start(p: &Pair, app: &str, mode: &str, extra: &[&str]) -> Child {
    let cfg = root()
        .join("testdata/packets/config.json")
        .display()
        .to_string();
    let obj = object(&format!("{app}.clang-O2-g.o"));
    let mut args = vec![
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
        "--json",
        "--interval",
        "500ms",
        "--config",
        &cfg,
        "--app",
        app,
    ];
    args.extend_from_slice(extra);
    bin()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn inxpect run")
}

fn finish(child: Child) -> serde_json::Value {
    let o = child.wait_with_output().expect("wait");
    assert!(
        o.status.success(),
        "inxpect run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)));
    assert_eq!(v["schema"], "inxpect-report/1");
    assert_eq!(v["command"], "run");
    v
}

fn sigint(child: &Child) {
    sh(&["kill", "-INT", &child.id().to_string()]);
}

#[test]
fn router_native_counts_every_frame_and_detaches() {
    let p = Pair::new();
    let mut child = start(&p, "router", "native", &["--duration", "3s"]);
    p.wait_attached(&mut child);
    assert!(p.pin_dir().join("config").exists(), "config not pinned");
    p.send(200);
    let v = finish(child);
    assert_eq!(v["runs"].as_u64(), Some(200), "{v}");
    assert_eq!(v["live"]["mode"], "native");
    let counts = region_counts(&v);
    assert!(
        counts.iter().any(|(n, c)| n == "parse" && *c == 200),
        "{counts:?}"
    );
    assert!(counts.iter().all(|(_, c)| *c <= 200), "{counts:?}");
    assert!(!p.xdp_attached(), "XDP program left on the device");
    assert!(!p.pin_dir().exists(), "pins left behind");
}

#[test]
fn nat_generic_sigint_and_live_set() {
    let p = Pair::new();
    let mut child = start(&p, "nat", "generic", &[]);
    p.wait_attached(&mut child);
    p.send(200);
    let o = run(&["set", "--netns", &p.a, "--dev", &p.va, "--sample", "1/4"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("sample 1/4"));
    p.send(200);
    // Let one live interval see the change before stopping.
    std::thread::sleep(Duration::from_millis(700));
    sigint(&child);
    let v = finish(child);
    assert_eq!(v["runs"].as_u64(), Some(400), "{v}");
    assert_eq!(v["sample"].as_u64(), Some(4));
    // Runs 1..=200 all sampled, then 1 in 4 of 201..=400 (multiples of 4).
    assert_eq!(v["sampled"].as_u64(), Some(250), "{v}");
    assert_eq!(v["live"]["mode"], "generic");
    assert!(!p.xdp_attached(), "XDP program left on the device");
    assert!(!p.pin_dir().exists(), "pins left behind");
}

#[test]
fn killed_run_leaves_no_program() {
    let p = Pair::new();
    let mut child = start(&p, "drop", "native", &[]);
    p.wait_attached(&mut child);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // The bpf_link dies with the process: nothing stays attached.
    let t0 = Instant::now();
    while p.xdp_attached() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "XDP program outlived inxpect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A killed run's state file stays behind (SIGKILL runs no cleanup); the
    // next run finds leftovers of dead runs, of any device, and removes them.
    let stale = format!("/run/inxpect/zz-stale-{}.json", std::process::id());
    std::fs::create_dir_all("/run/inxpect").expect("state dir");
    // Above any pid_max: no such process.
    std::fs::write(&stale, r#"{"pid": 4294967295}"#).expect("fake leftover");
    let mut again = start(&p, "drop", "native", &[]);
    p.wait_attached(&mut again);
    sigint(&again);
    finish(again);
    assert!(
        !std::path::Path::new(&stale).exists(),
        "the leftover state file of a dead run was kept"
    );
    let key = format!("{}-{}.json", p.a, p.va);
    assert!(
        !std::path::Path::new("/run/inxpect").join(key).exists(),
        "this run's state file was kept"
    );
}

#[test]
fn busy_device_is_refused_and_left_alone() {
    let p = Pair::new();
    let mut first = start(&p, "drop", "native", &[]);
    p.wait_attached(&mut first);
    let o = run(&[
        "run",
        &object("drop.clang-O2.o"),
        "--netns",
        &p.a,
        "--dev",
        &p.va,
        "--counter",
        "ktime",
        "--duration",
        "1s",
        "--no-calibrate",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("inxpect: error: attaching to"), "{err}");
    assert!(p.xdp_attached(), "the first run's program was removed");
    sigint(&first);
    finish(first);
    assert!(!p.xdp_attached());
}
