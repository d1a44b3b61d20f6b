//! `inxpect run` end to end: two network namespaces joined by a veth pair,
//! the instrumented app attached on one end, frames sent from the other.

mod common;
use common::netns::{finish, sigint, spawn_run, Pair};
use common::*;

use std::process::Child;
use std::time::{Duration, Instant};

/// `inxpect run` reporting every half second.
fn start(p: &Pair, app: &str, mode: &str, extra: &[&str]) -> Child {
    let mut args = vec!["--interval", "500ms"];
    args.extend_from_slice(extra);
    spawn_run(p, app, mode, &args)
}

#[test]
fn router_native_counts_every_frame_and_detaches() {
    let p = Pair::new("x");
    // The duration only has to outlast the attach-to-send window, which a loaded
    // machine stretches: generous, since the test's time is not what it checks.
    let mut child = start(&p, "router", "native", &["--duration", "10s"]);
    p.wait_attached(&mut child);
    // run pins right after attaching: wait for it, bounded.
    let t0 = Instant::now();
    while !p.pin_dir().join("config").exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "config not pinned");
        std::thread::sleep(Duration::from_millis(10));
    }
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
    let p = Pair::new("x");
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
    // Runs 1..=200 all sampled, then 1 in 4 of 201..=400 (the countdown
    // reloads at 201: 201, 205, ..., 397).
    assert_eq!(v["sampled"].as_u64(), Some(250), "{v}");
    assert_eq!(v["live"]["mode"], "generic");
    assert!(!p.xdp_attached(), "XDP program left on the device");
    assert!(!p.pin_dir().exists(), "pins left behind");
}

#[test]
fn killed_run_leaves_no_program() {
    let p = Pair::new("x");
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
    let p = Pair::new("x");
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
