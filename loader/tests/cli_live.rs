//! The CLI cases of issue #16 that need more than one command: network
//! namespaces, a run killed with SIGKILL, a device deleted under a run,
//! another user, a terminal. Each runs the commands for real and checks
//! their output and exit status with snapbox (`[..]` matches within a line).
//! The single-command cases are in cli/*.toml (cli.rs).

mod common;
use common::netns::{finish, sh, sigint, spawn_run, Pair};
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn inxpect() -> snapbox::cmd::Command {
    snapbox::cmd::Command::new(env!("CARGO_BIN_EXE_inxpect")).current_dir(root())
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state_file(p: &Pair) -> PathBuf {
    PathBuf::from(format!("/run/inxpect/{}-{}.json", p.a, p.va))
}

/// The pinned config map's bytes, as bpftool reads them.
fn pinned_config(p: &Pair) -> String {
    let o = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(p.pin_dir().join("config"))
        .output()
        .expect("bpftool");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Item 1: `set` after `kill -9` of the run changed the dead run's pinned
/// map and said so with exit 0; the next run left an empty directory.
#[test]
fn item1_set_refuses_a_killed_run_and_the_next_run_sweeps_it() {
    let p = Pair::new("k");
    let mut child = spawn_run(&p, "drop", "native", &[]);
    p.wait_attached(&mut child);
    wait_for("pins", || p.pin_dir().join("config").exists());
    let pid = child.id();
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let before = pinned_config(&p);
    inxpect()
        .args(["set", "--netns", &p.a, "--dev", &p.va, "--sample", "2"])
        .assert()
        .code(1)
        .stdout_eq("")
        .stderr_eq(format!(
            "inxpect: error: the `inxpect run` on {va} (netns {a}) is gone (pid {pid} has ended), killed without cleaning up: its pins under {dir} are stale (the next `inxpect run` removes them); nothing changed\n",
            va = p.va,
            a = p.a,
            dir = p.pin_dir().display()
        ));
    assert_eq!(pinned_config(&p), before, "set changed the dead run's map");
    // The next run, on another device, sweeps the leftovers: pins, the
    // directory and the state file.
    inxpect()
        .args([
            "run",
            &object("drop.clang-O2.o"),
            "--netns",
            &p.b,
            "--dev",
            &p.vb,
            "--counter",
            "ktime",
            "--no-calibrate",
            "--duration",
            "300ms",
            "-j",
        ])
        .assert()
        .success();
    assert!(!p.pin_dir().exists(), "stale pin directory kept");
    assert!(!state_file(&p).exists(), "stale state file kept");
    inxpect()
        .args(["set", "--netns", &p.a, "--dev", &p.va, "--sample", "2"])
        .assert()
        .code(1)
        .stderr_eq(format!(
            "inxpect: error: no `inxpect run` on {} in netns {}[..]\n",
            p.va, p.a
        ));
}

/// Item 2: a device deleted mid-run: the live view went on with `+0` and
/// no warning, and SIGTERM ended with an error and no report.
#[test]
fn item2_device_deleted_mid_run_is_warned_and_sigterm_still_reports() {
    let p = Pair::new("g");
    let mut child = bin()
        .args([
            "run",
            &object("drop.clang-O2.o"),
            "--netns",
            &p.a,
            "--dev",
            &p.va,
            "--counter",
            "ktime",
            "--no-calibrate",
            "--interval",
            "200ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    p.wait_attached(&mut child);
    p.send(3);
    sh(&["ip", "-n", &p.a, "link", "del", &p.va]);
    // A few intervals after the deletion.
    std::thread::sleep(Duration::from_millis(1000));
    sh(&["kill", "-TERM", &child.id().to_string()]);
    let o = child.wait_with_output().expect("wait");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let warning = format!(
        "inxpect: warning: device {} (ifindex [..]) is gone: the program was detached with it, nothing more is measured (SIGINT/SIGTERM ends with the report)",
        p.va
    );
    // Once in the live view, then the final report (3 frames measured).
    snapbox::assert_data_eq!(
        out.to_string(),
        format!("...\n{warning}\n...\nruns 3 (packets), sampled 3\n...\n")
    );
    assert_eq!(out.matches("is gone").count(), 1, "{out}");
    snapbox::assert_data_eq!(
        err.to_string(),
        format!("...\ninxpect: {} was deleted during the run\n", p.va)
    );
}

/// Item 6: for a tsc-instrumented object the hint said `use --counter
/// ktime`, which such an object then refused. Following the hint now works.
#[test]
fn item6_hint_for_a_tsc_object_is_one_that_works() {
    let bytes = std::fs::read(object("drop.clang-O2.o")).unwrap();
    let opts = inxpect_rewriter::Options {
        counter: inxpect_rewriter::Counter::Tsc,
        ..Default::default()
    };
    let out = inxpect_rewriter::instrument(&bytes, &opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tsc = dir.path().join("drop.tsc.o");
    std::fs::write(&tsc, &out.object).unwrap();
    let tsc = tsc.display().to_string();
    inxpect()
        .args(["test-run", &tsc, "--pcap", &corpus()])
        .assert()
        .code(1)
        .stderr_eq(format!(
            "inxpect: error: {tsc} is instrumented for the tsc counter, which needs the inxpect kernel module (/dev/inxpect missing): `inxpect module load`, or give inxpect the original (uninstrumented) object with --counter ktime\n"
        ));
    // What the hint says: the original, with --counter ktime.
    inxpect()
        .args([
            "test-run",
            &object("drop.clang-O2.o"),
            "--pcap",
            &corpus(),
            "--counter",
            "ktime",
            "--no-calibrate",
            "-j",
        ])
        .assert()
        .success()
        .stderr_eq("");
}

/// Item 7: `set --dev` failed for a run in a namespace; with two runs the
/// hint said "pick one with --dev" and --dev alone failed; `run --dev X`
/// without --netns did not mention namespaces.
#[test]
fn item7_netns_carried_through_set_and_hinted_by_run() {
    let p1 = Pair::new("n");
    let p2 = Pair::new("n");
    // The same device name in both namespaces, for the ambiguous case.
    let same = format!("icl{}", std::process::id() % 100_000);
    for p in [&p1, &p2] {
        let peer = format!("{same}p");
        sh(&[
            "ip", "-n", &p.a, "link", "add", &same, "type", "veth", "peer", "name", &peer,
        ]);
        sh(&["ip", "-n", &p.a, "link", "set", &same, "up"]);
        sh(&["ip", "-n", &p.a, "link", "set", &peer, "up"]);
    }
    let mut r1 = spawn_run(&p1, "drop", "native", &[]);
    let mut r2 = spawn_run(&p2, "drop", "native", &[]);
    p1.wait_attached(&mut r1);
    p2.wait_attached(&mut r2);
    wait_for("state files", || {
        state_file(&p1).exists() && state_file(&p2).exists()
    });
    // --dev alone picks the run on that device, whatever its namespace.
    inxpect()
        .args(["set", "--dev", &p1.va, "--sample", "1/4"])
        .assert()
        .success()
        .stdout_eq(format!(
            "inxpect: {} (netns {}): sample 1/4, enabled: verdict\n",
            p1.va, p1.a
        ));
    // Without --dev, several runs (other tests' may be among them).
    inxpect()
        .args(["set", "--sample", "2"])
        .assert()
        .code(1)
        .stderr_eq(
            "inxpect: error: several `inxpect run`s ([..]): pick one with --dev (and --netns)\n",
        );
    // The same name in two namespaces: --netns decides.
    let run_on_same = |netns: &str| {
        bin()
            .args([
                "run",
                &object("drop.clang-O2.o"),
                "--netns",
                netns,
                "--dev",
                &same,
            ])
            .args([
                "--mode",
                "generic",
                "--counter",
                "ktime",
                "--no-calibrate",
                "-j",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let d1 = run_on_same(&p1.a);
    let d2 = run_on_same(&p2.a);
    wait_for("both runs on the same name", || {
        Path::new(&format!("/run/inxpect/{}-{same}.json", p1.a)).exists()
            && Path::new(&format!("/run/inxpect/{}-{same}.json", p2.a)).exists()
    });
    let (first, second) = if p1.a < p2.a {
        (&p1.a, &p2.a)
    } else {
        (&p2.a, &p1.a)
    };
    inxpect()
        .args(["set", "--dev", &same, "--sample", "2"])
        .assert()
        .code(1)
        .stderr_eq(format!(
            "inxpect: error: several `inxpect run`s on {same} ({same} (netns {first}), {same} (netns {second})): pick one with --netns\n"
        ));
    inxpect()
        .args(["set", "--dev", &same, "--netns", &p2.a, "--sample", "2"])
        .assert()
        .success()
        .stdout_eq(format!(
            "inxpect: {same} (netns {}): sample 1/2, enabled: verdict\n",
            p2.a
        ));
    // `run` without --netns names the namespace that has the device.
    inxpect()
        .args(["run", &object("drop.clang-O2.o"), "--dev", &p1.va, "--counter", "ktime"])
        .assert()
        .code(1)
        .stderr_eq(format!(
            "inxpect: error: no network device \"{va}\" in this network namespace; network namespace \"{a}\" has one: add --netns {a}\n",
            va = p1.va,
            a = p1.a
        ));
    // Each set reached its own run, and only that one.
    sigint(&d1);
    sigint(&d2);
    let v1 = finish(d1);
    let v2 = finish(d2);
    assert_eq!(
        (v1["sample"].as_u64(), v2["sample"].as_u64()),
        (Some(1), Some(2))
    );
    sigint(&r1);
    sigint(&r2);
    let (v1, v2) = (finish(r1), finish(r2));
    assert_eq!(
        (v1["sample"].as_u64(), v2["sample"].as_u64()),
        (Some(4), Some(1))
    );
}

/// Item 9: a long test-run printed nothing until the end. Now a bar on a
/// terminal's stderr, never in the report and never without a terminal.
#[test]
fn item9_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let args = format!(
        "{} test-run {} --pcap {} --counter ktime --no-calibrate --repeat 40 -j",
        env!("CARGO_BIN_EXE_inxpect"),
        object("drop.clang-O2.o"),
        corpus()
    );
    // script(1) gives the command a terminal; stdout goes to a file.
    // The bar waits a second before it shows; a fast machine finishes first.
    let o = Command::new("script")
        .env("INXPECT_PROGRESS_AFTER_MS", "0")
        .args(["-qec", &format!("{args} > {}", json.display()), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(
        tty.contains("/12000 frames x 40 runs"),
        "no progress on the terminal: {tty:?}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("clean JSON");
    assert_eq!(v["runs"].as_u64(), Some(480_000));
    // No terminal: nothing but the report.
    let mut c = inxpect();
    for a in args.split(' ').skip(1) {
        c = c.arg(a);
    }
    c.assert().success().stderr_eq("");
}

/// Item 10: "already has an XDP program" named no program or owner.
#[test]
fn item10_busy_device_names_program_and_holder() {
    let p = Pair::new("b");
    let mut first = spawn_run(&p, "drop", "native", &[]);
    p.wait_attached(&mut first);
    let run = |c: snapbox::cmd::Command| {
        c.args([
            "run",
            &object("drop.clang-O2.o"),
            "--netns",
            &p.a,
            "--dev",
            &p.va,
        ])
        .args(["--counter", "ktime", "--no-calibrate", "--duration", "1s"])
    };
    run(inxpect()).assert().code(1).stderr_eq(format!(
        "inxpect: error: attaching to {va}: Device or resource busy (os error 16): {va} already has XDP program id [..] \"xdp_drop\", held by pid {pid} (inxpect): stop it first\n",
        va = p.va,
        pid = first.id()
    ));
    sigint(&first);
    finish(first);
    // Attached over netlink (ip): no process holds it.
    let obj = object("drop.clang-O2.o");
    sh(&[
        "ip",
        "-n",
        &p.a,
        "link",
        "set",
        "dev",
        &p.va,
        "xdpgeneric",
        "obj",
        &obj,
        "sec",
        "xdp",
    ]);
    run(inxpect()).assert().code(1).stderr_eq(format!(
        "inxpect: error: attaching to {va}: [..]: {va} already has XDP program id [..] \"xdp_drop\", attached by no running process (netlink, e.g. `ip link set dev {va} xdp ...`, or a pinned link): `ip link set dev {va} xdp off` removes it\n",
        va = p.va
    ));
    assert!(p.xdp_attached(), "the netlink program was removed");
    sh(&[
        "ip",
        "-n",
        &p.a,
        "link",
        "set",
        "dev",
        &p.va,
        "xdpgeneric",
        "off",
    ]);
}

/// Item 11: a non-root user got libbpf's RLIMIT_MEMLOCK hint.
#[test]
fn item11_non_root_needs_root_or_cap_bpf() {
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_inxpect"))
        .args(["test-run", &object("drop.clang-O2.o"), "--pcap", &corpus()])
        .current_dir("/")
        .output()
        .expect("setpriv");
    assert_eq!(o.status.code(), Some(1));
    snapbox::assert_data_eq!(
        String::from_utf8_lossy(&o.stderr).into_owned(),
        "inxpect: error: `inxpect test-run` needs root or CAP_BPF (loading BPF programs): run it with sudo, or grant the binary CAP_BPF,CAP_NET_ADMIN,CAP_PERFMON\n"
    );
}

/// Item 11: a pinned program given as OBJ said `Input/output error`.
#[test]
fn item11_pinned_program_as_object_is_explained() {
    let pin = format!("/sys/fs/bpf/inxpect-cli-{}", std::process::id());
    sh(&["bpftool", "prog", "load", &object("drop.clang-O2.o"), &pin]);
    let a = inxpect()
        .args(["test-run", &pin, "--pcap", &corpus(), "--counter", "ktime"])
        .assert();
    let _ = std::fs::remove_file(&pin);
    a.code(1).stderr_eq(format!(
        "inxpect: error: {pin} is on the BPF filesystem (a pinned program or map), not an ELF object: give the .o file it was loaded from\n"
    ));
}

/// Item 11: `module load --path` defaulted to kmod/inxpect.ko relative to
/// the current directory. Now absolute: here, next to (a copy of) the
/// binary, from another directory. The file is not a module, so nothing
/// can load.
#[test]
fn item11_module_load_default_path_is_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("inxpect");
    std::fs::copy(env!("CARGO_BIN_EXE_inxpect"), &exe).unwrap();
    let ko = dir.path().join("inxpect.ko");
    std::fs::write(&ko, b"not a module").unwrap();
    let o = Command::new(&exe)
        .args(["module", "load"])
        .current_dir("/")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // Modules disabled (this host) or refused (another kernel): either way
    // the message names the absolute path it picked.
    assert!(
        err.starts_with("inxpect: error: ") && err.contains(&ko.display().to_string()),
        "{err}"
    );
}

/// Man pages and completions come from the clap definition.
#[test]
fn man_pages_and_completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let o = inxpect().arg("--man").arg(&man).assert().success();
    let listed = String::from_utf8_lossy(&o.get_output().stdout).into_owned();
    let pages = [
        "inxpect",
        "inxpect-test-run",
        "inxpect-run",
        "inxpect-set",
        "inxpect-module",
        "inxpect-module-load",
        "inxpect-module-unload",
        "inxpect-module-status",
        "inxpect-replay",
    ];
    for p in pages {
        let f = man.join(format!("{p}.1"));
        assert!(listed.contains(&f.display().to_string()), "{listed}");
        let t = std::fs::read_to_string(&f).unwrap();
        assert!(
            t.contains(&format!(".TH {p} 1")),
            "{p}: {}",
            &t[..t.len().min(200)]
        );
        assert!(t.contains(".SH OPTIONS") || p == "inxpect-module", "{p}");
    }
    let run = std::fs::read_to_string(man.join("inxpect-run.1")).unwrap();
    assert!(run.contains("\\-\\-netns"), "run page lacks --netns");
    assert!(
        run.contains(".SH EXAMPLES\n.nf\n  inxpect run app.o --dev eth0\n"),
        "run page lacks its examples"
    );
    let o = inxpect().args(["--completions", "bash"]).assert().success();
    let script = dir.path().join("inxpect.bash");
    std::fs::write(&script, &o.get_output().stdout).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let text = std::fs::read_to_string(&script).unwrap();
    for w in ["test-run", "--netns", "--pin-dir", "--json"] {
        assert!(text.contains(w), "bash completion lacks {w}");
    }
    for sh in ["zsh", "fish"] {
        inxpect().args(["--completions", sh]).assert().success();
    }
}

/// `dist/install.sh`, the README's install command, staged with DESTDIR.
#[test]
fn install_script_puts_binary_man_pages_and_completions_in_place() {
    let stage = tempfile::tempdir().unwrap();
    let bins = Path::new(env!("CARGO_BIN_EXE_inxpect")).parent().unwrap();
    let o = Command::new("bash")
        .arg(root().join("dist/install.sh"))
        .arg("/usr/local")
        .env("DESTDIR", stage.path())
        .env("INXPECT_BIN_DIR", bins)
        .env("INXPECT_BINS", "inxpect")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = stage.path().join("usr/local");
    for f in [
        "bin/inxpect",
        "share/man/man1/inxpect.1",
        "share/man/man1/inxpect-run.1",
        "share/man/man1/inxpect-module-load.1",
        "share/bash-completion/completions/inxpect",
        "share/zsh/site-functions/_inxpect",
        "share/fish/vendor_completions.d/inxpect.fish",
    ] {
        let m = std::fs::metadata(d.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(m.len() > 0, "{f} is empty");
    }
    // The installed binary is the one built.
    snapbox::cmd::Command::new(d.join("bin/inxpect"))
        .arg("--version")
        .assert()
        .success()
        .stdout_eq(format!("inxpect {}\n", env!("CARGO_PKG_VERSION")));
}
