//! Two network namespaces joined by a veth pair, for the tests that attach
//! `inxpect run` to a device and send frames from the other end.

use super::run;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn sh(args: &[&str]) {
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
pub struct Pair {
    pub a: String,
    pub b: String,
    pub va: String,
    pub vb: String,
}

impl Pair {
    /// `tag` keeps the names of different test files apart (`inxa`, `insa`...).
    pub fn new(tag: &str) -> Pair {
        let id = format!(
            "{}{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let p = Pair {
            a: format!("{tag}a{id}"),
            b: format!("{tag}b{id}"),
            va: format!("i{tag}a{id}"),
            vb: format!("i{tag}b{id}"),
        };
        sh(&["ip", "netns", "add", &p.a]);
        sh(&["ip", "netns", "add", &p.b]);
        sh(&[
            "ip", "link", "add", &p.va, "netns", &p.a, "type", "veth", "peer", "name", &p.vb,
            "netns", &p.b,
        ]);
        for (ns, dev) in [(&p.a, &p.va), (&p.b, &p.vb)] {
            // No IPv6: its router/neighbour solicitations would add runs.
            for key in [
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ] {
                sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", key]);
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        p
    }

    pub fn xdp_attached(&self) -> bool {
        let o = Command::new("ip")
            .args(["-n", &self.a, "-d", "link", "show", "dev", &self.va])
            .output()
            .expect("ip");
        assert!(o.status.success(), "ip link show {} failed", self.va);
        let t = String::from_utf8_lossy(&o.stdout);
        t.contains("prog/xdp") || t.contains(" xdp")
    }

    pub fn wait_attached(&self, child: &mut Child) {
        let t0 = Instant::now();
        while !self.xdp_attached() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("inxpect run exited early: {st}");
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "never attached");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn send(&self, n: u64) {
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

    pub fn pin_dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/sys/fs/bpf/inxpect").join(format!("{}-{}", self.a, self.va))
    }

    /// Nothing attached, nothing pinned, no state file.
    pub fn assert_clean(&self) {
        assert!(!self.xdp_attached(), "XDP program left on {}", self.va);
        assert!(!self.pin_dir().exists(), "pins left behind");
        let state = format!("/run/inxpect/{}-{}.json", self.a, self.va);
        assert!(!std::path::Path::new(&state).exists(), "{state} left");
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(self.pin_dir());
        let _ = std::fs::remove_file(format!("/run/inxpect/{}-{}.json", self.a, self.va));
    }
}

/// Spawns `inxpect run` of testdata's `<app>.clang-O2-g.o` on `p.va` (in
/// namespace A) with the `ktime` counter, the app's map configuration and a
/// JSON report; `extra` adds arguments.
pub fn spawn_run(p: &Pair, app: &str, mode: &str, extra: &[&str]) -> Child {
    let cfg = super::root()
        .join("testdata/packets/config.json")
        .display()
        .to_string();
    let obj = super::object(&format!("{app}.clang-O2-g.o"));
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
        "--config",
        &cfg,
        "--app",
        app,
    ];
    args.extend_from_slice(extra);
    super::bin()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn inxpect run")
}

/// Waits for a spawned `inxpect run`, expects success and its JSON report.
pub fn finish(child: Child) -> serde_json::Value {
    let o = child.wait_with_output().expect("wait");
    let v = super::report("run", &o);
    assert_eq!(v["command"], "run");
    v
}

pub fn sigint(child: &Child) {
    sh(&["kill", "-INT", &child.id().to_string()]);
}
