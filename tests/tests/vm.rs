//! VM tests: build `inxpect.ko` for Debian's 6.1 and 6.12 cloud kernels, boot
//! each kernel under qemu (TCG) and run the module, ioctl and kfunc checks in
//! the guest (`tests/vm/run.sh`; the guest side is `tests/vm/guest/`).
//!
//! Needs root, network to the Debian mirrors (first run; packages are cached
//! in `tests/vm/cache/`), and the packages from `.ci/install`. Nothing here is
//! skipped: a missing tool or a guest that does not boot fails the test.
//!
//! More objects for the guest go into [`extras`] (the instrumented apps are
//! there): they run in the same boot, after the module tests, with the
//! module loaded.

use inxpect_rewriter::{instrument, Counter, Mode, Options};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One `INXPECT-VM-RUN` line: a BPF_PROG_TEST_RUN of one program.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(dead_code)] // read by tests that add extras
struct RunLine {
    obj: String,
    prog: String,
    retval: u32,
    duration_ns: u32,
    repeat: u32,
}

/// One `INXPECT-VM-MAP` line: a map entry (one CPU's value for per-CPU maps).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(dead_code)] // read by tests that add extras
struct MapLine {
    obj: String,
    map: String,
    key: Vec<u8>,
    cpu: Option<u32>,
    value: Vec<u8>,
}

/// What a harness run printed, parsed.
#[derive(Debug, Default)]
struct VmOutput {
    /// Harness verdict line, `vm-harness: PASS|FAIL ...`.
    verdict: String,
    /// Kernel release the guest reported after booting.
    booted: Option<String>,
    /// `(pass, fail)` from `INXPECT-VM-RESULT`.
    result: Option<(u32, u32)>,
    /// Names of checks that passed, details of those that failed.
    ok: Vec<String>,
    failed: Vec<String>,
    runs: Vec<RunLine>,
    maps: Vec<MapLine>,
    /// Kernel log lines between the dmesg markers.
    dmesg: Vec<String>,
    /// `exec` commands: (name, exit status, output lines).
    execs: Vec<(String, i32, Vec<String>)>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex byte"))
        .collect()
}

/// `k=v` fields of a line, in order.
fn fields(line: &str) -> impl Iterator<Item = (&str, &str)> {
    line.split_whitespace().filter_map(|f| f.split_once('='))
}

fn parse(stdout: &str) -> VmOutput {
    let mut out = VmOutput::default();
    let mut in_dmesg = false;
    let mut exec: Option<(String, Vec<String>)> = None;
    for line in stdout.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix("INXPECT-VM-EXEC-BEGIN ") {
            exec = Some((name.to_string(), Vec::new()));
        } else if let Some(r) = line.strip_prefix("INXPECT-VM-EXEC-END ") {
            let rc = r
                .rsplit_once("rc=")
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(-1);
            if let Some((name, lines)) = exec.take() {
                out.execs.push((name, rc, lines));
            }
        } else if let Some((_, lines)) = exec.as_mut() {
            lines.push(line.to_string());
        } else if line == "INXPECT-VM-DMESG-BEGIN" {
            in_dmesg = true;
        } else if line == "INXPECT-VM-DMESG-END" {
            in_dmesg = false;
        } else if in_dmesg {
            out.dmesg.push(line.to_string());
        } else if let Some(r) = line.strip_prefix("INXPECT-VM-BOOTED ") {
            out.booted = Some(r.to_string());
        } else if let Some(r) = line.strip_prefix("INXPECT-VM-RESULT: ") {
            let n: Vec<u32> = r
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            if let [pass, fail] = n[..] {
                out.result = Some((pass, fail));
            }
        } else if let Some(r) = line.strip_prefix("INXPECT-VM: ok ") {
            out.ok.push(r.to_string());
        } else if let Some(r) = line.strip_prefix("INXPECT-VM: FAIL ") {
            out.failed.push(r.to_string());
        } else if line.starts_with("INXPECT-VM-RUN ") {
            let mut r = RunLine {
                obj: String::new(),
                prog: String::new(),
                retval: 0,
                duration_ns: 0,
                repeat: 0,
            };
            for (k, v) in fields(line) {
                match k {
                    "obj" => r.obj = v.to_string(),
                    "prog" => r.prog = v.to_string(),
                    "retval" => r.retval = v.parse().unwrap_or(u32::MAX),
                    "duration_ns" => r.duration_ns = v.parse().unwrap_or(0),
                    "repeat" => r.repeat = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            out.runs.push(r);
        } else if line.starts_with("INXPECT-VM-MAP ") {
            let mut m = MapLine {
                obj: String::new(),
                map: String::new(),
                key: Vec::new(),
                cpu: None,
                value: Vec::new(),
            };
            for (k, v) in fields(line) {
                match k {
                    "obj" => m.obj = v.to_string(),
                    "map" => m.map = v.to_string(),
                    "key" => m.key = hex(v),
                    "cpu" => m.cpu = v.parse().ok(),
                    "value" => m.value = hex(v),
                    _ => {}
                }
            }
            out.maps.push(m);
        } else if line.starts_with("vm-harness: ") {
            out.verdict = line.to_string();
        }
    }
    out
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Apps (and build variant) instrumented for the guest, each with the `tsc`
/// and the `pmc` backend (sections mode). tunnel at -O2 is refused by 6.12's
/// verifier even uninstrumented ("math between pkt pointer and register with
/// unbounded min value", after a be16), so its -O1 build stands in.
const APPS: [(&str, &str); 5] = [
    ("drop", "clang-O2"),
    ("nat", "clang-O2"),
    ("router", "clang-O2"),
    ("tunnel", "clang-O1"),
    ("cms", "clang-O2"),
];
const FRAMES: u32 = 64;

/// The apps instrumented for a kernel. 6.1's verifier refuses the tunnel app
/// itself, uninstrumented (the load fails with EINVAL; see tests/vm/run.sh --obj),
/// so it is not a test of the rewriter there.
fn apps(series: &str) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    APPS.into_iter()
        .filter(move |(app, _)| !(series == "6.1" && *app == "tunnel"))
}

/// Kernels where instrumented objects are expected to load with the module.
/// The runtime guards its kfunc calls with the `.rodata.inxpect` flag, not
/// `bpf_ksym_exists()` (whose `ld_imm64` of a kfunc only Linux >= 6.4 takes).
const RUNTIME_KERNELS: [&str; 2] = ["6.1", "6.12"];

/// Objects and guest commands added to a kernel's run: `(object file,
/// "run /objs/<file name> [--prog P] [--repeat N] [--retval R]
/// [--dump MAP]...")`. They run after the module tests, with the module
/// loaded; [`check_extras`] asserts on what they print. The directory holds
/// the files until the run is over.
fn extras(series: &str) -> (tempfile::TempDir, Vec<(PathBuf, String)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = Vec::new();
    if !RUNTIME_KERNELS.contains(&series) {
        return (dir, out);
    }
    for (app, variant) in apps(series) {
        let input = inxpect_tests::object_path(app, variant);
        let bytes = std::fs::read(&input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        // The original too, its maps dumped like the instrumented ones'
        // (check_extras compares verdicts and map contents).
        let dumps: String = app_map_names(&input)
            .iter()
            .map(|m| format!(" --dump {m}"))
            .collect();
        let orig = dir.path().join(format!("{app}-orig.o"));
        std::fs::copy(&input, &orig).expect("copy the original");
        out.push((
            orig,
            format!("run /objs/{app}-orig.o --repeat {FRAMES}{dumps}"),
        ));
        for (counter, tag) in [(Counter::Tsc, "tsc"), (Counter::Pmc, "pmc")] {
            let opts = Options {
                mode: Mode::Sections,
                counter,
                events: 1,
                only: None,
            };
            let r = instrument(&bytes, &opts)
                .unwrap_or_else(|e| panic!("instrumenting {app} ({tag}): {e}"));
            let name = format!("{app}-{tag}.o");
            let path = dir.path().join(&name);
            std::fs::write(&path, &r.object).expect("write instrumented object");
            let cmd = format!("run /objs/{name} --repeat {FRAMES} --dump inxpect_stats{dumps}");
            out.push((path, cmd));
        }
    }
    // The loader itself, statically linked, with the module loaded.
    let loader = static_loader();
    let pcap = dir.path().join("small.pcap");
    write_pcap(
        &pcap,
        &inxpect_tests::corpus().expect("corpus")[..LOADER_FRAMES],
    );
    let drop = inxpect_tests::object_path("drop", "clang-O2-g");
    out.push((loader, "exec status /objs/inxpect module status".into()));
    out.push((
        pcap,
        format!(
            "exec tsc /objs/inxpect test-run /objs/{} --pcap /objs/small.pcap --counter tsc --json",
            "drop.clang-O2-g.o"
        ),
    ));
    out.push((
        drop,
        "exec auto /objs/inxpect test-run /objs/drop.clang-O2-g.o --pcap /objs/small.pcap --json"
            .into(),
    ));
    let cms = inxpect_tests::object_path("cms", "clang-O2");
    out.push((cms, "exec sampled /objs/inxpect test-run /objs/cms.clang-O2.o --pcap /objs/small.pcap --counter tsc --sample 1/4 --json".into()));
    out.push((PathBuf::new(), "exec pmc /objs/inxpect test-run /objs/drop.clang-O2-g.o --pcap /objs/small.pcap --counter pmc --json".into()));
    // Live: attach to lo (generic XDP), send frames, stop at --duration.
    let live = dir.path().join("live.sh");
    std::fs::write(
        &live,
        format!(
            "ip link set lo up\n\
             /objs/inxpect run /objs/drop.clang-O2-g.o --dev lo --mode generic --counter tsc \
             --duration 8s --interval 1s --json >/tmp/live.json 2>/tmp/live.err &\n\
             sleep 3\n\
             /objs/inxpect replay --dev lo --count {LIVE_FRAMES}\n\
             wait $!\n\
             rc=$?\n\
             cat /tmp/live.json\n\
             ip link show dev lo | grep -q xdp && echo STILL-ATTACHED\n\
             exit $rc\n"
        ),
    )
    .expect("write live.sh");
    out.push((live, "exec live /bin/sh /objs/live.sh".into()));
    // Module cycles while programs come and go: the module cannot leave while
    // an instrumented program is attached; without it, `auto` falls back to
    // ktime; back in, tsc again. A program's module reference is dropped after
    // an RCU grace period, so rmmod is retried for up to 5 s.
    let cycles = dir.path().join("cycles.sh");
    std::fs::write(
        &cycles,
        format!(
            "fail=0\n\
             /objs/inxpect run /objs/drop.clang-O2-g.o --dev lo --mode generic --counter tsc --duration 4s --json >/dev/null 2>&1 &\n\
             sleep 2\n\
             rmmod inxpect 2>/dev/null && {{ echo CYCLE-FAIL rmmod-while-attached; fail=1; insmod /inxpect.ko; }}\n\
             wait\n\
             i=0\n\
             while [ $i -lt {MODULE_CYCLES} ]; do\n\
               /objs/inxpect test-run /objs/drop.clang-O2-g.o --pcap /objs/small.pcap --no-calibrate --json >/tmp/c.json 2>&1 || {{ echo CYCLE-FAIL tsc $i; fail=1; }}\n\
               grep -q '\"counter\": \"tsc\"' /tmp/c.json || {{ echo CYCLE-FAIL tsc-counter $i; fail=1; }}\n\
               n=0; until rmmod inxpect 2>/dev/null; do n=$((n+1)); [ $n -gt 50 ] && break; sleep 0.1; done\n\
               [ $n -gt 50 ] && {{ echo CYCLE-FAIL rmmod $i; fail=1; }}\n\
               /objs/inxpect test-run /objs/drop.clang-O2-g.o --pcap /objs/small.pcap --no-calibrate --json >/tmp/k.json 2>&1 || {{ echo CYCLE-FAIL ktime $i; fail=1; }}\n\
               grep -q '\"counter\": \"ktime\"' /tmp/k.json || {{ echo CYCLE-FAIL ktime-counter $i; fail=1; }}\n\
               insmod /inxpect.ko || {{ echo CYCLE-FAIL insmod $i; fail=1; }}\n\
               i=$((i+1))\n\
             done\n\
             echo CYCLES-DONE $i\n\
             exit $fail\n"
        ),
    )
    .expect("write cycles.sh");
    out.push((cycles, "exec cycles /bin/sh /objs/cycles.sh".into()));
    (dir, out)
}

const LOADER_FRAMES: usize = 400;
const LIVE_FRAMES: u64 = 200;
const MODULE_CYCLES: u32 = 10;

/// `inxpect` built as a static executable for the busybox guest.
fn static_loader() -> PathBuf {
    let root = repo_root();
    let target = root.join("target/static");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "inxpect-loader",
            "--features",
            "libbpf-rs/static",
        ])
        .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(&target)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("LIBBPF_SYS_LIBRARY_PATH", "/usr/lib/x86_64-linux-gnu")
        .status()
        .expect("cargo runs");
    assert!(st.success(), "building the static inxpect loader failed");
    target.join("x86_64-unknown-linux-gnu/release/inxpect")
}

/// A classic pcap (microsecond, Ethernet) of `frames`.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut b: Vec<u8> = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        b.extend(v.to_le_bytes());
    }
    for f in frames {
        for v in [0u32, 0, f.len() as u32, f.len() as u32] {
            b.extend(v.to_le_bytes());
        }
        b.extend(f);
    }
    // 0x00040002 above is version 2.4 as two u16s, little-endian.
    std::fs::write(path, b).expect("write pcap");
}

/// Assertions on what the extras printed (the guest already checked that
/// each object loaded and each test_run succeeded).
/// The maps an app owns (not inxpect's, not read-only data), by name.
fn app_map_names(obj: &Path) -> Vec<String> {
    let o = libbpf_rs::ObjectBuilder::default()
        .open_file(obj)
        .unwrap_or_else(|e| panic!("opening {}: {e}", obj.display()));
    o.maps()
        .map(|m| m.name().to_string_lossy().to_string())
        .filter(|n| !n.contains("inxpect") && !n.ends_with(".rodata"))
        .collect()
}

/// An object's verdicts and app map entries in the guest, the CPU left out
/// (the two objects may run on different CPUs).
/// (program, verdict) and (map, key, value), sorted.
type Behaviour = (Vec<(String, u32)>, Vec<(String, Vec<u8>, Vec<u8>)>);

fn behaviour(out: &VmOutput, obj: &str) -> Behaviour {
    let mut runs: Vec<(String, u32)> = out
        .runs
        .iter()
        .filter(|r| r.obj == obj)
        .map(|r| (r.prog.clone(), r.retval))
        .collect();
    runs.sort();
    let mut maps: Vec<(String, Vec<u8>, Vec<u8>)> = out
        .maps
        .iter()
        .filter(|m| m.obj == obj && !m.map.contains("inxpect"))
        .map(|m| (m.map.clone(), m.key.clone(), m.value.clone()))
        .collect();
    maps.sort();
    (runs, maps)
}

fn check_extras(series: &str, out: &VmOutput) {
    if !RUNTIME_KERNELS.contains(&series) {
        return;
    }
    for (app, _) in apps(series) {
        let orig = behaviour(out, &format!("{app}-orig.o"));
        assert!(!orig.0.is_empty(), "{app}-orig.o did not run in the guest");
        for tag in ["tsc", "pmc"] {
            let obj = format!("{app}-{tag}.o");
            let runs: Vec<_> = out.runs.iter().filter(|r| r.obj == obj).collect();
            assert!(!runs.is_empty(), "{obj} did not run in the guest");
            assert!(runs.iter().all(|r| r.repeat == FRAMES), "{obj}: {runs:?}");
            // Same verdicts, same app map contents as the original.
            assert_eq!(
                behaviour(out, &obj),
                orig,
                "{obj} behaves unlike the original"
            );
        }
    }
    // Some region of some app is on the default frame's path: its tsc stats
    // must have been written (absent entries are all zero).
    assert!(
        out.maps
            .iter()
            .any(|m| m.obj.ends_with("-tsc.o") && m.map == "inxpect_stats"),
        "no tsc region recorded anything: {:#?}",
        out.runs
    );
    check_loader(out);
}

/// The loader in the guest: `module status` sees the module, `test-run`
/// with `tsc` (asked for, and chosen by `auto`) measures every frame with
/// non-zero cycle counts, sampling 1/4 measures a quarter of the runs, and
/// `pmc` without a PMU is refused with one clear line.
fn check_loader(out: &VmOutput) {
    let exec = |name: &str| {
        out.execs.iter().find(|e| e.0 == name).unwrap_or_else(|| {
            panic!(
                "guest did not run `{name}`: {:?}",
                out.execs.iter().map(|e| &e.0).collect::<Vec<_>>()
            )
        })
    };
    let json = |name: &str| -> serde_json::Value {
        let (_, rc, lines) = exec(name);
        assert_eq!(
            *rc,
            0,
            "`{name}` failed in the guest:\n{}",
            lines.join("\n")
        );
        let a = lines
            .iter()
            .position(|l| l.starts_with('{'))
            .expect("JSON start");
        let b = lines
            .iter()
            .rposition(|l| l.starts_with('}'))
            .expect("JSON end");
        serde_json::from_str(&lines[a..=b].join("\n"))
            .unwrap_or_else(|e| panic!("`{name}`: bad JSON: {e}"))
    };
    let (_, rc, lines) = exec("status");
    assert_eq!(*rc, 0, "module status: {}", lines.join("\n"));
    let n = LOADER_FRAMES as u64;
    for name in ["tsc", "auto"] {
        let r = json(name);
        assert_eq!(r["counter"], "tsc", "`{name}` used {}", r["counter"]);
        assert_eq!(r["runs"].as_u64(), Some(n), "`{name}`: {r}");
        let region = &r["regions"][0];
        assert_eq!(
            region["count"].as_u64(),
            Some(n),
            "`{name}`: every frame passes drop's region: {region}"
        );
        assert_eq!(r["no_counter"].as_u64(), Some(0), "`{name}`: {r}");
        let mean = region["events"][0]["raw"]["mean"].as_f64().unwrap_or(0.0);
        assert!(
            mean > 0.0,
            "`{name}`: tsc deltas must be positive: {region}"
        );
    }
    // `run` attached to lo in the guest saw exactly the frames sent, with the
    // module's tsc, and left nothing attached.
    let r = json("live");
    assert_eq!(r["counter"], "tsc", "live: {r}");
    assert_eq!(r["runs"].as_u64(), Some(LIVE_FRAMES), "live: {r}");
    assert_eq!(
        r["regions"][0]["count"].as_u64(),
        Some(LIVE_FRAMES),
        "live: {r}"
    );
    assert!(
        !exec("live").2.iter().any(|l| l.contains("STILL-ATTACHED")),
        "XDP left on lo"
    );
    let (_, rc, lines) = exec("cycles");
    assert_eq!(
        *rc,
        0,
        "module cycles: {}",
        lines
            .iter()
            .filter(|l| l.contains("CYCLE"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("CYCLES-DONE {MODULE_CYCLES}")),
        "cycles did not finish: {lines:?}"
    );
    let r = json("sampled");
    assert_eq!(r["sampled"].as_u64(), Some(n / 4), "1/4 sampling: {r}");
    let (_, rc, lines) = exec("pmc");
    assert_ne!(*rc, 0, "pmc without a PMU must fail");
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("inxpect: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one clear error line: {lines:?}");
}

fn run_vm(series: &str) -> VmOutput {
    let script = repo_root().join("tests/vm/run.sh");
    let mut cmd = Command::new(&script);
    cmd.arg(series).stdin(Stdio::null());
    let (_objs_dir, objs) = extras(series);
    for (obj, guest_cmd) in objs {
        if !obj.as_os_str().is_empty() {
            cmd.arg("--obj").arg(obj);
        }
        cmd.arg("--cmd").arg(guest_cmd);
    }
    let res = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    let out = parse(&stdout);
    // The tail of both streams is what explains a failure.
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    assert!(
        res.status.success() && out.verdict.starts_with("vm-harness: PASS"),
        "VM run for Linux {series} failed: {}\n--- stderr (tail) ---\n{}\n--- stdout (tail) ---\n{}",
        if out.verdict.is_empty() { "no verdict" } else { &out.verdict },
        tail(&stderr),
        tail(&stdout),
    );
    out
}

/// Checks made here again, independently of the script's own.
fn check_common(series: &str, out: &VmOutput) {
    let booted = out.booted.as_deref().expect("guest never reported booting");
    assert!(
        booted.starts_with(&format!("{series}.")),
        "booted {booted}, wanted Linux {series}"
    );
    let (pass, fail) = out.result.expect("no INXPECT-VM-RESULT line");
    assert_eq!(fail, 0, "guest failures: {:#?}", out.failed);
    assert!(out.failed.is_empty(), "guest failures: {:#?}", out.failed);
    assert_eq!(
        pass as usize,
        out.ok.len(),
        "result line disagrees with ok lines"
    );
    for needed in [
        "insmod",
        "module BTF in /sys/kernel/btf/inxpect",
        "device node /dev/inxpect",
        "ioctl: GET_INFO",
        "ioctl: SET_EVENTS cycles without PMU -> ENODEV",
        "ioctl: SET_EVENTS hw config 999 -> EINVAL",
        "ioctl: CLEAR",
        "kfunc (rodata guard): tsc strictly increasing",
        "kfunc (rodata guard): pmc slot 0 reads invalid (bit 63)",
        "kfunc (rodata guard): pmc0_lo START/END invalid (bit 63)",
        "kfunc (rodata guard, software slot 0): pmc slot 0 reads invalid (bit 63)",
        "ioctl: GET_STATUS cpu 0xffffffff -> EINVAL",
        "non-core PMU: SET_EVENTS msr/tsc -> EINVAL",
        "non-core PMU: SET_EVENTS software/cpu-clock -> EINVAL",
        "owner: second configurer -> EBUSY",
        "owner: GET_OWNER from another file",
        "owner: CLEAR from another file -> EBUSY",
        "owner: close releases the configuration",
        "owner: SIGKILLed owner's configuration is gone",
        "rights: ioctl on an inherited descriptor -> EPERM",
        "rights: open without CAP_PERFMON -> EPERM",
        "idle: 0 configured slots at the end",
        "kfunc (rodata guard): TC test_run",
        "cpu1 offline/online with the module loaded",
        "reload cycles",
        "rmmod",
    ] {
        assert!(
            out.ok.iter().any(|o| o == needed),
            "check `{needed}` did not pass; passed: {:#?}",
            out.ok
        );
    }
    assert!(!out.dmesg.is_empty(), "no kernel log");
    let bad = [
        "WARNING:",
        "BUG:",
        "Oops",
        "Call Trace",
        "general protection",
    ];
    for l in &out.dmesg {
        assert!(!bad.iter().any(|b| l.contains(b)), "kernel log: {l}");
    }
}

#[test]
fn vm_linux_6_1() {
    let out = run_vm("6.1");
    check_common("6.1", &out);
    // 6.1 predates ld_imm64 of kfuncs: bpf_ksym_exists() on a resolved
    // module kfunc is refused; the harness checks that it stays refused.
    assert!(out
        .ok
        .iter()
        .any(|o| o == "kfunc (bpf_ksym_exists guard): load refused before Linux 6.4"));
    // No kfunc filter before 6.5: the limitation kmod/README states.
    assert!(out
        .ok
        .iter()
        .any(|o| o == "rights: no kfunc filter before 6.5, program loads (limitation)"));
    check_extras("6.1", &out);
}

#[test]
fn vm_linux_6_12() {
    let out = run_vm("6.12");
    check_common("6.12", &out);
    assert!(out
        .ok
        .iter()
        .any(|o| o == "kfunc (bpf_ksym_exists guard): tsc strictly increasing"));
    assert!(out
        .ok
        .iter()
        .any(|o| o == "rights: verifier refuses the kfuncs without CAP_PERFMON"));
    check_extras("6.12", &out);
}

#[test]
fn parse_guest_lines() {
    let out = parse(
        "INXPECT-VM-BOOTED 6.12.1\nINXPECT-VM: ok a b\nINXPECT-VM: FAIL c: d\n\
         INXPECT-VM-RUN obj=x.o prog=p retval=2 duration_ns=40 repeat=10\n\
         INXPECT-VM-MAP obj=x.o map=m key=00000000 cpu=1 value=0a00\n\
         INXPECT-VM-DMESG-BEGIN\n[ 1.0] hi\nINXPECT-VM-DMESG-END\n\
         INXPECT-VM-RESULT: pass 1 fail 1\nvm-harness: FAIL 6.12 x: y\n",
    );
    assert_eq!(out.booted.as_deref(), Some("6.12.1"));
    assert_eq!(out.ok, ["a b"]);
    assert_eq!(out.failed, ["c: d"]);
    assert_eq!(out.result, Some((1, 1)));
    assert_eq!(out.runs[0].retval, 2);
    assert_eq!(out.runs[0].repeat, 10);
    assert_eq!(out.maps[0].key, [0, 0, 0, 0]);
    assert_eq!(out.maps[0].cpu, Some(1));
    assert_eq!(out.maps[0].value, [10, 0]);
    assert_eq!(out.dmesg, ["[ 1.0] hi"]);
    assert!(out.verdict.starts_with("vm-harness: FAIL"));
}
