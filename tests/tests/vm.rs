//! VM tests: build `inxpect.ko` for Debian's cloud kernels (bookworm's 6.1
//! and 6.12; trixie-backports' 6.18 and newest 7.x, built in a trixie
//! chroot with Debian 13's gcc-14 and pahole), boot each kernel under qemu
//! (TCG) and run the module, ioctl and kfunc checks in the guest
//! (`tests/vm/run.sh`; the guest side is `tests/vm/guest/`).
//!
//! The same for the arm64 cloud kernels under qemu-system-aarch64 with
//! `-icount shift=0`, where the guest has a PMU (QEMU's PMUv3, driven by the
//! kernel's armv8_pmuv3 driver) whose instruction counts are exact: there the
//! `pmc` backend reads real counters and [`check_arm64_pmu`] asserts exact
//! instruction counts of regions of known length, computed from the guest's
//! raw per-CPU maps by the loader's own report code.
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
    /// `INXPECT-VM-INFO` lines, without the prefix.
    info: Vec<String>,
}

impl VmOutput {
    /// Whether the guest check `name` passed. A name ending in "(" stands
    /// for the check whose criterion the guest picks (tsc: strictly on a
    /// clock of an instruction or finer).
    fn passed(&self, name: &str) -> bool {
        self.ok
            .iter()
            .any(|o| o == name || name.ends_with('(') && o.starts_with(name))
    }
}

fn hex(s: &str) -> Vec<u8> {
    inxpect_tests::vm_value(s).unwrap_or_else(|| panic!("a guest's value {s:?}"))
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
        } else if let Some(r) = line.strip_prefix("INXPECT-VM-INFO ") {
            out.info.push(r.to_string());
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

/// Run as the original and as the `tsc` build with uninstrumented copies
/// only: cms_sub's regions are in subprograms, which get copies of their
/// own (func_info repeated, a symbol each) that every kernel must take.
const COPY_APPS: [(&str, &str); 1] = [("cms_sub", "clang-O2")];

/// Queues the original build of `app` to run in the guest, its maps dumped
/// like the instrumented ones' (check_extras compares verdicts and map
/// contents); returns its bytes and those `--dump` arguments.
fn original(
    dir: &Path,
    app: &str,
    variant: &str,
    out: &mut Vec<(PathBuf, String)>,
) -> (Vec<u8>, String) {
    let input = inxpect_tests::object_path(app, variant);
    let bytes = std::fs::read(&input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let dumps: String = app_map_names(&input)
        .iter()
        .map(|m| format!(" --dump {m}"))
        .collect();
    let orig = dir.join(format!("{app}-orig.o"));
    std::fs::copy(&input, &orig).expect("copy the original");
    out.push((
        orig,
        format!("run /objs/{app}-orig.o --repeat {FRAMES}{dumps}"),
    ));
    (bytes, dumps)
}

/// The `tsc` build with copies, sampling 1/4 in its config: 3 runs in 4
/// take the copies.
fn copy_object(dir: &Path, app: &str, bytes: &[u8], dumps: &str) -> (PathBuf, String) {
    let opts = Options {
        counter: Counter::Tsc,
        unsampled_copy: true,
        ..Options::default()
    };
    let r =
        instrument(bytes, &opts).unwrap_or_else(|e| panic!("instrumenting {app} (tsc, copy): {e}"));
    assert!(!r.manifest.copied.is_empty(), "{app}: no program copied");
    let obj = inxpect_tests::with_config(&r.object, 2, true).expect("config");
    let name = format!("{app}-tsc-copy.o");
    let path = dir.join(&name);
    std::fs::write(&path, obj).expect("write instrumented object");
    let cmd = format!("run /objs/{name} --repeat {FRAMES} {STATS_DUMPS}{dumps}");
    (path, cmd)
}

/// The ground-truth apps (testdata/truth) run in the guests with the
/// module's `tsc`, which the host cannot run (tests/truth.rs runs `ktime`
/// and `perf`): every region's count must equal the witness the app's own
/// code bumps right before each END, over the same frames. tailcall is
/// left out (its prog array is the loader's to fill), and stack (the
/// rewriter refuses its call chain with `--sections`: tests/truth.rs).
const TRUTH_APPS: [&str; 12] = [
    "bpfloop",
    "call",
    "early",
    "global_sub",
    "loop",
    "looptop_prog",
    "looptop_sub",
    "many",
    "nest",
    "samename",
    "static_sub",
    "unstarted",
];
/// The truth apps a kernel takes uninstrumented: 6.1's verifier refuses
/// looptop_sub as it is (E2BIG, the loop at a subprogram's first
/// instruction walked once per pass).
fn truth_apps(series: &str) -> impl Iterator<Item = &'static str> + '_ {
    TRUTH_APPS
        .into_iter()
        .filter(move |a| !(series == "6.1" && *a == "looptop_sub"))
}

/// The truth apps' build the guests run.
const TRUTH_BUILD: &str = "clang-O2";
/// Two periods of the frames' pattern (tests/truth.rs).
const TRUTH_FRAMES: usize = 24;

/// A ground-truth app's `tsc` build (markers, 1/1) and its manifest.
fn truth_build(app: &str) -> (Vec<u8>, inxpect_rewriter::runtime::Manifest) {
    let input = inxpect_tests::truth_object(app, TRUTH_BUILD);
    let bytes = std::fs::read(&input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let opts = Options {
        counter: Counter::Tsc,
        ..Options::default()
    };
    let r = instrument(&bytes, &opts).unwrap_or_else(|e| panic!("instrumenting {app}: {e}"));
    (r.object, r.manifest)
}

/// The guest object names of a truth app: its build, and on kernels with
/// direct per-CPU access the same bytes run with the look-ups kept.
fn truth_objects(series: &str, app: &str) -> Vec<(String, &'static str)> {
    let mut v = vec![(format!("truth-{app}.o"), "")];
    if DIRECT_PCPU_KERNELS.contains(&series) {
        v.push((format!("truth-{app}-lookup.o"), " --pcpu lookup"));
    }
    v
}

fn truth_extras(series: &str, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let frames = dir.join("truth.frames");
    let mut bytes = Vec::new();
    for f in inxpect_tests::truth_frames(TRUTH_FRAMES) {
        bytes.extend((f.len() as u16).to_le_bytes());
        bytes.extend(f);
    }
    std::fs::write(&frames, bytes).expect("write truth frames");
    // A file with no command of its own.
    out.push((frames, String::new()));
    for app in truth_apps(series) {
        let (obj, _) = truth_build(app);
        for (name, opt) in truth_objects(series, app) {
            let path = dir.join(&name);
            std::fs::write(&path, &obj).expect("write truth object");
            let cmd = format!(
                "run /objs/{name} --frames /objs/truth.frames{opt} {STATS_DUMPS} --dump .data.truth"
            );
            out.push((path, cmd));
        }
    }
}

/// Every truth app's regions counted what its witness says, in every form
/// the guest loaded it; and something was counted.
fn check_truth(series: &str, out: &VmOutput) {
    for app in truth_apps(series) {
        let (_, m) = truth_build(app);
        let input = inxpect_tests::truth_object(app, TRUTH_BUILD);
        let fields = inxpect_tests::truth_witness_fields(&input).expect("witness fields");
        for (obj, _) in truth_objects(series, app) {
            let w = out
                .maps
                .iter()
                .find(|x| x.obj == obj && x.map == ".data.truth")
                .unwrap_or_else(|| panic!("Linux {series}: {obj} printed no witness"));
            let counts: std::collections::BTreeMap<u32, u64> = region_counts(out, &obj)
                .into_iter()
                .map(|(k, n)| (u32::from_ne_bytes(k[..4].try_into().expect("u32 key")), n))
                .collect();
            let mut total = 0;
            for r in &m.regions {
                let f = format!("r_{}__{}", r.name, r.function);
                let off = *fields
                    .get(&f)
                    .unwrap_or_else(|| panic!("{app}: no witness {f}"));
                let want = inxpect_rewriter::runtime::u64_at(&w.value, off);
                let got = counts.get(&r.id).copied().unwrap_or(0);
                assert_eq!(
                    got, want,
                    "Linux {series}, {obj}: region {} ({}) counted {got}, its witness {want}",
                    r.name, r.function
                );
                total += want;
            }
            assert!(total > 0, "Linux {series}, {obj}: no region ran");
        }
    }
}

/// Kernels whose verifier resolves an `ld_imm64` of a one-entry per-CPU
/// array's value to this CPU's copy ("global percpu data"): the guest's and
/// the loader's direct per-CPU access (inxpect_loader::pcpu).
const DIRECT_PCPU_KERNELS: [&str; 2] = ["7", "arm64-7"];

/// How the guest's loads reached the per-CPU state (`INXPECT-VM-INFO pcpu`
/// lines): where the kernel has direct access, every look-up of every
/// instrumented object loaded without `--pcpu lookup` was rewritten;
/// elsewhere the probe says no and nothing was. On every kernel the
/// runtime's `inxpect_kfuncs` tests were folded to the flag's value in
/// some object (the programs, loaded and run, then show that the fold
/// kept them right).
fn check_pcpu(series: &str, out: &VmOutput) {
    let direct = DIRECT_PCPU_KERNELS.contains(&series);
    let (mut rewritten, mut folded, mut guarded, mut unhoisted) = (0, 0, 0, 0);
    for l in out.info.iter().filter_map(|l| l.strip_prefix("pcpu ")) {
        let f: std::collections::HashMap<&str, &str> = fields(l).collect();
        let n: u32 = f["direct"].parse().expect("direct=N");
        folded += f["folded"].parse::<u32>().expect("folded=N");
        let g: u32 = f["guarded"].parse().expect("guarded=N");
        assert!(
            g <= f["folded"].parse().expect("folded=N"),
            "Linux {series}: a guarded flag test not counted folded: {l}"
        );
        guarded += g;
        unhoisted += f["unhoisted"].parse::<u32>().expect("unhoisted=N");
        let (has, supported) = (f["has_pcpu"] == "1", f["supported"] == "1");
        if !direct {
            assert!(
                !supported && n == 0,
                "Linux {series}: direct per-CPU access on a kernel without it: {l}"
            );
        } else if supported && has {
            assert!(n > 0, "Linux {series}: the look-ups stayed: {l}");
            rewritten += n;
        }
    }
    if direct {
        assert!(rewritten > 0, "Linux {series}: no look-up was made direct");
        // The copies' entries (cms's saves its context): the save moved to
        // the sampled path, and the copy objects still run as the original.
        assert!(unhoisted > 0, "Linux {series}: no entry's save was moved");
    } else {
        assert_eq!(
            unhoisted, 0,
            "Linux {series}: a save moved with the look-up kept"
        );
    }
    if RUNTIME_KERNELS.contains(&series) {
        assert!(
            folded > 0,
            "Linux {series}: no test of inxpect_kfuncs was folded"
        );
        // The module loaded: each entry's sampled-run test went altogether.
        assert!(
            guarded > 0,
            "Linux {series}: no entry's test of inxpect_kfuncs became one of R0"
        );
    }
}

/// What a guest dumps of an instrumented object for its statistics: a
/// region's are in both maps (`inxpect_pcpu` holds the first regions' fast
/// statistics).
const STATS_DUMPS: &str = "--dump inxpect_stats --dump inxpect_pcpu";

/// The per-region measurement counts of `obj`'s dumps, all CPUs summed:
/// (key, count), sorted.
fn region_counts(out: &VmOutput, obj: &str) -> Vec<(Vec<u8>, u64)> {
    let pcpu: Vec<Vec<u8>> = out
        .maps
        .iter()
        .filter(|m| m.obj == obj && m.map == "inxpect_pcpu")
        .map(|m| m.value.clone())
        .collect();
    assert!(!pcpu.is_empty(), "{obj}: no inxpect_pcpu dump");
    let mut by_key = std::collections::BTreeMap::new();
    for m in out
        .maps
        .iter()
        .filter(|m| m.obj == obj && m.map == "inxpect_stats")
    {
        *by_key.entry(m.key.clone()).or_insert(0) +=
            inxpect_rewriter::runtime::stats::count(&m.value);
    }
    // A region only the fast statistics measured has no stats line.
    for id in 0..inxpect_rewriter::runtime::pcpu::FAST_REGIONS {
        let mut s = inxpect_loader::stats::RegionStats::default();
        s.add_fast(&pcpu, id).expect("inxpect_pcpu values");
        if s.count > 0 {
            *by_key.entry(id.to_ne_bytes().to_vec()).or_insert(0) += s.count;
        }
    }
    by_key.into_iter().collect()
}

/// Kernels where instrumented objects are expected to load with the module.
/// The runtime guards its kfunc calls with the `.rodata.inxpect` flag, not
/// `bpf_ksym_exists()` (whose `ld_imm64` of a kfunc only Linux >= 6.4 takes).
const RUNTIME_KERNELS: [&str; 4] = ["6.1", "6.12", "6.18", "7"];

/// Objects and guest commands added to a kernel's run: `(object file,
/// "run /objs/<file name> [--prog P] [--repeat N] [--retval R]
/// [--dump MAP]...")`. They run after the module tests, with the module
/// loaded; [`check_extras`] asserts on what they print. The directory holds
/// the files until the run is over.
fn extras(series: &str) -> (tempfile::TempDir, Vec<(PathBuf, String)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = Vec::new();
    if let Some(kseries) = series.strip_prefix("arm64-") {
        arm64_extras(kseries, dir.path(), &mut out);
        return (dir, out);
    }
    if !RUNTIME_KERNELS.contains(&series) {
        return (dir, out);
    }
    for (app, variant) in apps(series) {
        let (bytes, dumps) = original(dir.path(), app, variant, &mut out);
        for (counter, tag) in [(Counter::Tsc, "tsc"), (Counter::Pmc, "pmc")] {
            let opts = Options {
                mode: Mode::Sections,
                counter,
                events: 1,
                only: None,
                read_fn: None,
                stats: inxpect_rewriter::Stats::Inline,
                unsampled_copy: false,
                ..Default::default()
            };
            let r = instrument(&bytes, &opts)
                .unwrap_or_else(|e| panic!("instrumenting {app} ({tag}): {e}"));
            let name = format!("{app}-{tag}.o");
            let path = dir.path().join(&name);
            std::fs::write(&path, &r.object).expect("write instrumented object");
            let cmd = format!("run /objs/{name} --repeat {FRAMES} {STATS_DUMPS}{dumps}");
            out.push((path, cmd));
        }
        // `tsc` with the uninstrumented copy, 3 runs in 4 sampled out into
        // it: it too must behave as the original.
        out.push(copy_object(dir.path(), app, &bytes, &dumps));
        // Where the guest makes the look-ups of the per-CPU state direct,
        // the same `tsc` build with its look-ups kept: the two must count
        // the same (check_extras).
        if DIRECT_PCPU_KERNELS.contains(&series) {
            let tsc = dir.path().join(format!("{app}-tsc.o"));
            let name = format!("{app}-tsc-lookup.o");
            std::fs::copy(&tsc, dir.path().join(&name)).expect("copy the tsc build");
            out.push((
                dir.path().join(&name),
                format!("run /objs/{name} --repeat {FRAMES} --pcpu lookup {STATS_DUMPS}{dumps}"),
            ));
        }
    }
    for (app, variant) in COPY_APPS {
        let (bytes, dumps) = original(dir.path(), app, variant, &mut out);
        out.push(copy_object(dir.path(), app, &bytes, &dumps));
    }
    invalid_extras(dir.path(), &mut out);
    truth_extras(series, dir.path(), &mut out);
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
    out.push((cms, "exec sampled /objs/inxpect test-run /objs/cms.clang-O2.o --pcap /objs/small.pcap --counter tsc --sample 1/4 --no-unsampled-copy --json".into()));
    // The same with the uninstrumented copy for the sampled-out runs: what
    // a sampling session gets by default.
    out.push((PathBuf::new(), "exec sampled-copy /objs/inxpect test-run /objs/cms.clang-O2.o --pcap /objs/small.pcap --counter tsc --sample 1/4 --json".into()));
    // The same with the look-ups kept where the kernel could drop them.
    out.push((PathBuf::new(), "exec sampled-lookup env INXPECT_PCPU=lookup /objs/inxpect test-run /objs/cms.clang-O2.o --pcap /objs/small.pcap --counter tsc --sample 1/4 --json".into()));
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
    // Time windows with the module's tsc: bursts spread over the session,
    // some inside a window, some outside. The instrumented build stays
    // loaded between windows, so the module stays pinned throughout.
    let window = dir.path().join("window.sh");
    std::fs::write(
        &window,
        format!(
            "ip link set lo up\n\
             /objs/inxpect run /objs/drop.clang-O2-g.o --dev lo --mode generic --counter tsc \
             --window 50ms/200ms --duration 10s --interval 1s --no-calibrate --json >/tmp/w.json 2>/tmp/w.err &\n\
             sleep 3\n\
             i=0\n\
             while [ $i -lt {WINDOW_BURSTS} ]; do /objs/inxpect replay --dev lo --count {WINDOW_BURST} >/dev/null; sleep 0.1; i=$((i+1)); done\n\
             rmmod inxpect 2>/dev/null && {{ echo WINDOW-RMMOD-OK; insmod /inxpect.ko; }}\n\
             wait $!\n\
             rc=$?\n\
             cat /tmp/w.json\n\
             ip link show dev lo | grep -q xdp && echo STILL-ATTACHED\n\
             exit $rc\n"
        ),
    )
    .expect("write window.sh");
    out.push((window, "exec window /bin/sh /objs/window.sh".into()));
    (dir, out)
}

/// `--window` in the guest: bursts of frames sent over the session.
const WINDOW_BURSTS: u64 = 20;
const WINDOW_BURST: u64 = 10;

/// The `invalid` oracle of x86 (no PMU: every pmc read has bit 63 set):
/// kinsns with pmc, 1 and 2 events (the inlined single-event probes and the
/// runtime's loop), sampling 1 in 2^shift written into the object. Each
/// object runs `INVALID_RUNS` times on CPU 0, then on each of
/// `INVALID_CPUS` in turn, in one load.
const INVALID_EVENTS: [usize; 2] = [1, 2];
const INVALID_SHIFTS: [u32; 2] = [0, 3];
const INVALID_RUNS: u64 = 1001;
const INVALID_CPUS: [u32; 2] = [1, 0];

fn invalid_object(events: usize, shift: u32) -> String {
    format!("invalid-pmc{events}-s{shift}.o")
}

fn invalid_extras(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let kinsns = compile_kinsns(dir);
    let cpus: Vec<String> = INVALID_CPUS.iter().map(u32::to_string).collect();
    for events in INVALID_EVENTS {
        for shift in INVALID_SHIFTS {
            let file = invalid_object(events, shift);
            let path = dir.join(&file);
            instrument_pmc(&kinsns, events, &path);
            let obj = std::fs::read(&path).expect("read the instrumented object");
            let obj = inxpect_tests::with_config(&obj, shift, true)
                .unwrap_or_else(|e| panic!("{file}: sampling 1/{}: {e:#}", 1u64 << shift));
            std::fs::write(&path, obj).expect("write the sampled object");
            out.push((
                path,
                format!(
                    "run /objs/{file} --kfuncs --cpu 0 --cpus {} --repeat {INVALID_RUNS} {STATS_DUMPS}",
                    cpus.join(",")
                ),
            ));
        }
    }
}

/// The report's JSON, as `inxpect test-run --json` prints it.
fn report_json(r: &inxpect_loader::report::Report) -> serde_json::Value {
    let text = inxpect_loader::report::json(r).expect("the report as JSON");
    serde_json::from_str(&text).expect("the report's JSON parses")
}

/// Every pmc read in an x86 guest is invalid (no PMU in TCG, no slot
/// configured): each region of kinsns (all four on the one path of every
/// run) is dropped once per sampled run and counted in `invalid`, nothing in
/// `count`. The oracle: the per-CPU countdown samples the first run on a
/// CPU, then every K-th, so a CPU that ran r times sampled ceil(r / K).
fn check_invalid(out: &VmOutput) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kinsns = compile_kinsns(dir.path());
    // Runs per CPU: CPU 0 first, then each of INVALID_CPUS.
    let mut per_cpu = std::collections::BTreeMap::<u32, u64>::new();
    for c in std::iter::once(0).chain(INVALID_CPUS) {
        *per_cpu.entry(c).or_default() += INVALID_RUNS;
    }
    let runs: u64 = per_cpu.values().sum();
    for events in INVALID_EVENTS {
        let m = instrument_pmc(&kinsns, events, &dir.path().join("k.o"));
        let names: Vec<String> = (0..events).map(|e| format!("slot{e}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for shift in INVALID_SHIFTS {
            let obj = invalid_object(events, shift);
            let k = 1u64 << shift;
            let sampled: u64 = per_cpu.values().map(|r| r.div_ceil(k)).sum();
            let mut r = vm_report(out, &obj, &m, &names, None);
            r.sample = k;
            let v = report_json(&r);
            let what = format!("{obj} (pmc x{events}, 1/{k}, runs per CPU {per_cpu:?})");
            println!(
                "INXPECT-VM-INVALID obj={obj} runs={} sampled={} invalid={:?} expected={sampled}",
                v["runs"],
                v["sampled"],
                v["regions"]
                    .as_array()
                    .map(|a| a.iter().map(|g| g["invalid"].clone()).collect::<Vec<_>>())
            );
            assert_eq!(v["runs"].as_u64(), Some(runs), "{what}: {v}");
            assert_eq!(v["sampled"].as_u64(), Some(sampled), "{what}: {v}");
            assert_eq!(v["no_counter"].as_u64(), Some(0), "{what}: {v}");
            let regions = v["regions"].as_array().expect("regions");
            assert_eq!(regions.len(), KINSNS.len() + KSHAPES.len(), "{what}: {v}");
            for g in regions {
                assert_eq!(
                    (
                        g["count"].as_u64(),
                        g["invalid"].as_u64(),
                        g["tail_ends"].as_u64()
                    ),
                    (Some(0), Some(sampled), Some(0)),
                    "{what}: region {} (count, invalid, tail_ends): {g}",
                    g["name"]
                );
            }
        }
    }
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
    inxpect_loader::pcap::write_classic(path, frames).expect("write pcap");
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

/// Each `{app}-{tag}.o` ran its FRAMES in the guest with the verdicts and
/// app map contents of `{app}-orig.o`.
fn like_original(out: &VmOutput, app: &str, tags: &[&str]) {
    let orig = behaviour(out, &format!("{app}-orig.o"));
    assert!(!orig.0.is_empty(), "{app}-orig.o did not run in the guest");
    for tag in tags {
        let obj = format!("{app}-{tag}.o");
        let runs: Vec<_> = out.runs.iter().filter(|r| r.obj == obj).collect();
        assert!(!runs.is_empty(), "{obj} did not run in the guest");
        assert!(runs.iter().all(|r| r.repeat == FRAMES), "{obj}: {runs:?}");
        assert_eq!(
            behaviour(out, &obj),
            orig,
            "{obj} behaves unlike the original"
        );
    }
}

fn check_extras(series: &str, out: &VmOutput) {
    if !RUNTIME_KERNELS.contains(&series) {
        return;
    }
    for (app, _) in apps(series) {
        like_original(out, app, &["tsc", "pmc", "tsc-copy"]);
    }
    for (app, _) in COPY_APPS {
        like_original(out, app, &["tsc-copy"]);
    }
    if DIRECT_PCPU_KERNELS.contains(&series) {
        for (app, _) in apps(series) {
            like_original(out, app, &["tsc-lookup"]);
            let direct = region_counts(out, &format!("{app}-tsc.o"));
            assert_eq!(
                direct,
                region_counts(out, &format!("{app}-tsc-lookup.o")),
                "{app}: direct per-CPU access counts unlike the look-ups"
            );
        }
    }
    // Some region of some app is on the default frame's path: its tsc stats
    // must have been written.
    assert!(
        apps(series).any(|(app, _)| region_counts(out, &format!("{app}-tsc.o"))
            .iter()
            .any(|&(_, n)| n > 0)),
        "no tsc region recorded anything: {:#?}",
        out.runs
    );
    check_invalid(out);
    check_truth(series, out);
    check_loader(series, out);
}

/// The loader in the guest: `module status` sees the module, `test-run`
/// with `tsc` (asked for, and chosen by `auto`) measures every frame with
/// non-zero cycle counts, sampling 1/4 measures a quarter of the runs, and
/// `pmc` without a PMU is refused with one clear line.
fn check_loader(series: &str, out: &VmOutput) {
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
    // `run --window`: the module's counter, some bursts measured and some
    // not, windows opened and closed, the module held all along, nothing
    // left attached.
    let r = json("window");
    assert_eq!(r["counter"], "tsc", "window: {r}");
    let sent = WINDOW_BURSTS * WINDOW_BURST;
    let runs = r["runs"].as_u64().unwrap_or(0);
    assert!(runs < sent, "window: every frame measured: {r}");
    assert_eq!(r["regions"][0]["count"].as_u64(), Some(runs), "window: {r}");
    assert!(
        r["live"]["window"]["opened"].as_u64() >= Some(2),
        "window: {r}"
    );
    let wl = &exec("window").2;
    assert!(
        !wl.iter().any(|l| l.contains("WINDOW-RMMOD-OK")),
        "the module left while a windowed session held its program"
    );
    assert!(
        !wl.iter().any(|l| l.contains("STILL-ATTACHED")),
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
    // The first frame, then every 4th.
    assert_eq!(
        r["sampled"].as_u64(),
        Some(n.div_ceil(4)),
        "1/4 sampling: {r}"
    );
    // With the copy (the default when sampling): the same runs, sampled
    // runs and region counts (the frames are the same, one CPU), and the
    // report says so.
    assert_eq!(r["unsampled_copy"], serde_json::Value::Null, "{r}");
    let c = json("sampled-copy");
    assert_eq!(c["unsampled_copy"].as_bool(), Some(true), "{c}");
    for k in ["runs", "sampled", "no_counter"] {
        assert_eq!(c[k], r[k], "--unsampled-copy {k}: {c}");
    }
    let counts = |v: &serde_json::Value| -> Vec<(String, u64)> {
        v["regions"]
            .as_array()
            .expect("regions")
            .iter()
            .map(|g| (g["name"].to_string(), g["count"].as_u64().unwrap_or(0)))
            .collect()
    };
    assert_eq!(counts(&c), counts(&r), "--unsampled-copy region counts");
    assert!(counts(&c).iter().any(|x| x.1 > 0), "nothing counted: {c}");
    // Direct per-CPU access where the kernel has it, said in the report,
    // counting what the look-ups count.
    let direct = DIRECT_PCPU_KERNELS.contains(&series);
    for (name, v) in [("sampled", &r), ("sampled-copy", &c), ("tsc", &json("tsc"))] {
        assert_eq!(
            v["pcpu_direct"].as_bool().unwrap_or(false),
            direct,
            "Linux {series}, `{name}`: pcpu_direct"
        );
    }
    let l = json("sampled-lookup");
    assert_eq!(l["pcpu_direct"], serde_json::Value::Null, "{l}");
    for k in ["runs", "sampled", "no_counter"] {
        assert_eq!(l[k], r[k], "INXPECT_PCPU=lookup {k}: {l}");
    }
    assert_eq!(counts(&l), counts(&r), "INXPECT_PCPU=lookup region counts");
    let (_, rc, lines) = exec("pmc");
    assert_ne!(*rc, 0, "pmc without a PMU must fail");
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("inxpect: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one clear error line: {lines:?}");
}

fn run_vm(series: &str) -> VmOutput {
    run_vm_on(series, None)
}

/// [`run_vm`] on QEMU CPU model `cpu` (arm64; `max` when `None`).
fn run_vm_on(series: &str, cpu: Option<&str>) -> VmOutput {
    let script = repo_root().join("tests/vm/run.sh");
    let mut cmd = Command::new(&script);
    cmd.arg(series).stdin(Stdio::null());
    if let Some(cpu) = cpu {
        cmd.env("INXPECT_VM_CPU", cpu);
    }
    let (_objs_dir, objs) = extras(series);
    for (obj, guest_cmd) in objs {
        if !obj.as_os_str().is_empty() {
            cmd.arg("--obj").arg(obj);
        }
        if !guest_cmd.is_empty() {
            cmd.arg("--cmd").arg(guest_cmd);
        }
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
    let arm64 = series.starts_with("arm64-");
    let kseries = series.trim_start_matches("arm64-");
    assert!(
        booted.starts_with(&format!("{kseries}.")),
        "booted {booted}, wanted Linux {kseries}"
    );
    assert_eq!(
        booted.ends_with("-arm64"),
        arm64,
        "booted {booted} for {series}"
    );
    check_pcpu(series, out);
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
        "ioctl: SET_EVENTS hw config 999 -> EINVAL",
        "ioctl: CLEAR",
        "kfunc (rodata guard): tsc advancing (",
        "kfunc (rodata guard, software slot 0): pmc slot 0 reads invalid (bit 63)",
        "ioctl: GET_STATUS cpu 0xffffffff -> EINVAL",
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
    ]
    .into_iter()
    .chain(if arm64 {
        // A PMU: cycles are accepted and slot 0 (cycles) counts.
        [
            "ioctl: SET_EVENTS cycles (PMU)",
            "kfunc (rodata guard): pmc slot 0 counts",
            "kfunc (rodata guard): pmc0_lo START/END valid",
            "ioctl: SET_EVENTS cycles held for the kfunc tests",
        ]
    } else {
        [
            "ioctl: SET_EVENTS cycles without PMU -> ENODEV",
            "kfunc (rodata guard): pmc slot 0 reads invalid (bit 63)",
            "non-core PMU: SET_EVENTS msr/tsc -> EINVAL",
            "kfunc (rodata guard): pmc0_lo START/END invalid (bit 63)",
        ]
    }) {
        assert!(
            out.passed(needed),
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

/// A kernel with `ld_imm64` of kfuncs (6.4+) and the kfunc filter (6.5+):
/// everything 6.1 lacks is checked.
fn check_modern(series: &str, out: &VmOutput) {
    check_common(series, out);
    for needed in [
        "kfunc (bpf_ksym_exists guard): tsc advancing (",
        "rights: verifier refuses the kfuncs without CAP_PERFMON",
    ] {
        assert!(
            out.passed(needed),
            "Linux {series}: check `{needed}` did not pass"
        );
    }
    check_extras(series, out);
}

#[test]
fn vm_linux_6_12() {
    check_modern("6.12", &run_vm("6.12"));
}

/// trixie-backports' 6.18, module built in the trixie chroot (gcc-14,
/// pahole 1.30).
#[test]
fn vm_linux_6_18() {
    check_modern("6.18", &run_vm("6.18"));
}

/// The newest 7.x of trixie-backports, module built in the trixie chroot.
#[test]
fn vm_linux_7() {
    check_modern("7", &run_vm("7"));
}

// ---- arm64: a real PMU ----------------------------------------------------

/// Region kN of tests/vm/instr/kinsns.bpf.c holds N BPF instructions, one
/// arm64 instruction each after the JIT.
const KINSNS: [(&str, u64); 4] = [("k0", 0), ("k1", 1), ("k10", 10), ("k100", 100)];
/// kinsns' regions of k instructions whose probes have another shape, with
/// the calibration region of that shape and how far a calibrated minimum
/// may be from k (the subprogram's END loads the per-CPU map's address,
/// whose arm64 JIT length may differ by one between the calibration's load
/// and this one).
const KSHAPES: [(&str, u64, &str, f64); 2] = [
    ("kbusy10", 10, "empty_busy", 0.0),
    ("ksub10", 10, "empty_sub", 1.0),
];
/// test_run repeats of the k-instructions program and of the calibration
/// program (as many as `inxpect test-run` calibrates with).
const K_RUNS: u32 = 1000;
const CAL_RUNS: u32 = 20_000;
/// Passes of `spin` in tests/vm/instr/looptop.bpf.c's programs, and their
/// multiple of the 2-pass call's extra pass (n - 1).
const LOOPTOP_PASSES: [(u64, u64); 3] = [(1, 0), (2, 1), (5, 4)];
/// Runs before and after the reschedule of `run --resched` (each): long
/// enough for the heal work to run during the second.
const RESCHED_RUNS: u32 = 10_000;
/// `instr/stale.bpf.c` built for 1 and 2 slots (`-DNSLOTS`), instrumented
/// with as many events, run with `--resched` like kinsns.
const STALE_EVENTS: [usize; 2] = [1, 2];

fn stale_object(events: usize) -> String {
    format!("stale-resched{events}.o")
}

/// instr/stale.bpf.c for `events` slots, instrumented with pmc x `events`.
fn build_stale(dir: &Path, events: usize) -> (PathBuf, inxpect_rewriter::runtime::Manifest) {
    let src = compile_instr_with(
        dir,
        "stale",
        &format!("stale{events}"),
        &[format!("-DNSLOTS={events}")],
    );
    let out = dir.join(stale_object(events));
    let m = instrument_pmc(&src, events, &out);
    (out, m)
}

/// The u64 named `sym` in the `.bss` of `obj`, from the guest's dump of it.
fn bss_u64(out: &VmOutput, obj_path: &Path, obj: &str, sym: &str) -> u64 {
    let bytes = std::fs::read(obj_path).expect("read the object");
    let elf = goblin::elf::Elf::parse(&bytes).expect("parse the object");
    let bss = elf
        .section_headers
        .iter()
        .position(|h| elf.shdr_strtab.get_at(h.sh_name) == Some(".bss"))
        .unwrap_or_else(|| panic!("{obj}: no .bss"));
    let at = elf
        .syms
        .iter()
        .find(|y| y.st_shndx == bss && elf.strtab.get_at(y.st_name) == Some(sym))
        .unwrap_or_else(|| panic!("{obj}: no {sym} in .bss"))
        .st_value as usize;
    out.maps
        .iter()
        .find(|l| l.obj == obj && l.map == ".bss")
        .map(|l| u64::from_ne_bytes(l.value[at..at + 8].try_into().expect("8 bytes")))
        .unwrap_or(0)
}
/// Events per probe -> what the guest configures (instructions and cycles
/// alternate; with -icount shift=0 a cycle is an instruction).
const EVENT_SETS: [(usize, &[&str]); 3] = [
    (1, &["instructions"]),
    (2, &["instructions", "cycles"]),
    (4, &["instructions", "cycles", "instructions", "cycles"]),
];
/// Two 64-bit events (`long`, arm64's config1 bit 0): read whole by
/// inxpect_read_pmc, where bit 63 of the count is set from the start.
const LONG_EVENTS: (usize, &[&str]) = (2, &["instructions:long", "cycles:long"]);
/// The event sets a kernel runs: all of them. (Linux 6.1 refused the 2- and
/// 4-event probes while the runtime's loop over events stayed a loop that
/// clang entered in the middle: "back-edge from insn N to N+1", 6.1's
/// check_cfg takes a back-edge only on a jump. The loops are now unrolled
/// by pragma, and rewriter/tests/old_kernels.rs checks every runtime and
/// instrumented object for that edge on the host.)
fn event_sets(_kseries: &str) -> impl Iterator<Item = (usize, &'static [&'static str])> {
    EVENT_SETS.into_iter()
}

/// QEMU's PMUv3 (-cpu max): 6 event counters and the cycle counter.
const ARM64_EVENT_COUNTERS: usize = 6;

fn compile_kinsns(dir: &Path) -> PathBuf {
    compile_instr(dir, "kinsns")
}

/// tests/vm/instr/NAME.bpf.c -> DIR/NAME.bpf.o.
fn compile_instr(dir: &Path, name: &str) -> PathBuf {
    compile_instr_with(dir, name, name, &[])
}

/// tests/vm/instr/NAME.bpf.c with `flags` -> DIR/OUT.bpf.o.
fn compile_instr_with(dir: &Path, name: &str, out: &str, flags: &[String]) -> PathBuf {
    let root = repo_root();
    let out = dir.join(format!("{out}.bpf.o"));
    let st = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()))
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .args(flags)
        .arg("-I")
        .arg(root.join("runtime-bpf/include"))
        .args(["-I", "/usr/include/x86_64-linux-gnu", "-c"])
        .arg(root.join(format!("tests/vm/instr/{name}.bpf.c")))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("clang runs");
    assert!(st.success(), "building {name}.bpf.o failed");
    out
}

fn instrument_pmc(input: &Path, events: usize, out: &Path) -> inxpect_rewriter::runtime::Manifest {
    instrument_pmc_with(input, Mode::Sections, events, None, out)
}

/// [`instrument_pmc`] of only the regions `only`.
fn instrument_pmc_only(
    input: &Path,
    events: usize,
    only: Option<Vec<String>>,
    out: &Path,
) -> inxpect_rewriter::runtime::Manifest {
    instrument_pmc_with(input, Mode::Sections, events, only, out)
}

/// [`instrument_pmc`] in `mode`.
fn instrument_pmc_mode(
    input: &Path,
    mode: Mode,
    events: usize,
    out: &Path,
) -> inxpect_rewriter::runtime::Manifest {
    instrument_pmc_with(input, mode, events, None, out)
}

fn instrument_pmc_with(
    input: &Path,
    mode: Mode,
    events: usize,
    only: Option<Vec<String>>,
    out: &Path,
) -> inxpect_rewriter::runtime::Manifest {
    let bytes = std::fs::read(input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let opts = Options {
        mode,
        counter: Counter::Pmc,
        events,
        only,
        read_fn: None,
        stats: inxpect_rewriter::Stats::Inline,
        unsampled_copy: false,
        ..Default::default()
    };
    let r = instrument(&bytes, &opts)
        .unwrap_or_else(|e| panic!("instrumenting {} (pmc x{events}): {e}", input.display()));
    std::fs::write(out, &r.object).expect("write instrumented object");
    r.manifest
}

fn arm64_extras(kseries: &str, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let kinsns = compile_kinsns(dir);
    let calib = repo_root().join("loader/calib/empty.bpf.o");
    // The module keeps a configuration while its owner's descriptor is
    // open: each run configures its events itself (--events).
    let run = |obj: &str, n: u32, events: &str, extra: &str| {
        format!(
            "run /objs/{obj} --events {events} --kfuncs --cpu 0 --repeat {n}{extra} {STATS_DUMPS}"
        )
    };
    let sets = event_sets(kseries).map(|(n, names)| (n, names, format!("pmc{n}")));
    for (n, names, tag) in sets.chain([(LONG_EVENTS.0, LONG_EVENTS.1, "long2".into())]) {
        for (src, name, reps) in [(&kinsns, "kinsns", K_RUNS), (&calib, "calib", CAL_RUNS)] {
            let file = format!("{name}-{tag}.o");
            instrument_pmc(src, n, &dir.join(&file));
            out.push((dir.join(&file), run(&file, reps, &names.join(","), "")));
        }
    }
    // The region tree's subtraction (loader/src/tree.rs) on exact counts:
    // the truth app nest whole and with only `outer`, and the nesting
    // calibration (the guest runs each of its programs).
    for (file, only) in nest_builds() {
        instrument_pmc_only(&nest_truth(), 1, only, &dir.join(file));
        out.push((dir.join(file), run(file, K_RUNS, "instructions", "")));
    }
    instrument_pmc(&nest_calib(), 1, &dir.join("nestcal-pmc1.o"));
    out.push((
        dir.join("nestcal-pmc1.o"),
        run("nestcal-pmc1.o", CAL_RUNS, "instructions", ""),
    ));
    // Where the driver put the 64-bit events (the handles say chained or
    // wide).
    out.push((
        PathBuf::new(),
        format!("events {}", LONG_EVENTS.1.join(" ")),
    ));
    // The apps with slot 0 = instructions: every run has its counter.
    for (app, variant) in apps(kseries) {
        let file = format!("{app}-pmc.o");
        instrument_pmc(
            &inxpect_tests::object_path(app, variant),
            1,
            &dir.join(&file),
        );
        out.push((dir.join(&file), run(&file, FRAMES, "instructions", "")));
    }
    // --functions on subprograms that loop back to their first instruction:
    // one subprogram and program per pass count, all run from one load.
    let looptop = compile_instr(dir, "looptop");
    instrument_pmc_mode(&looptop, Mode::Functions, 1, &dir.join("looptop.o"));
    out.push((
        dir.join("looptop.o"),
        run("looptop.o", K_RUNS, "instructions", ""),
    ));
    // A pinned event of another perf user arrives on CPU 0 between two runs
    // (1 event: the pmc0 reads; 2: inxpect_read_pmc): the counters restart,
    // the module's reads find their cache stale and heal it.
    for (n, names) in event_sets(kseries).filter(|(n, _)| *n <= 2) {
        let file = format!("kinsns-resched{n}.o");
        std::fs::copy(dir.join(format!("kinsns-pmc{n}.o")), dir.join(&file)).expect("copy");
        out.push((
            dir.join(&file),
            run(&file, RESCHED_RUNS, &names.join(","), " --resched"),
        ));
    }
    // The same with the runs' own reads as the witness of stale ones.
    for (n, names) in event_sets(kseries).filter(|(n, _)| STALE_EVENTS.contains(n)) {
        let (_, _) = build_stale(dir, n);
        let file = stale_object(n);
        out.push((
            dir.join(&file),
            run(
                &file,
                RESCHED_RUNS,
                &names.join(","),
                " --resched --dump .bss",
            ),
        ));
    }
    // Another perf user keeps adding and removing events on CPU 0 while the
    // k-instructions program runs there.
    let churn = "kinsns-churn.o";
    std::fs::copy(dir.join("kinsns-pmc1.o"), dir.join(churn)).expect("copy");
    out.push((
        dir.join(churn),
        run(churn, K_RUNS, "instructions", " --churn 5"),
    ));
    // More events than free counters: 4 of ours per CPU hold 4 of the 6
    // event counters; 3 instruction events (which cannot use the cycle
    // counter) do not fit.
    out.push((
        PathBuf::new(),
        format!(
            "events --others {} --expect EBUSY instructions instructions instructions",
            ARM64_EVENT_COUNTERS - 2
        ),
    ));
    out.push((PathBuf::new(), "hotplug-events".into()));
    if DIRECT_PCPU_KERNELS.contains(&format!("arm64-{kseries}").as_str()) {
        arm64_direct_extras(&format!("arm64-{kseries}"), dir, out);
    }
    if PREEMPTIBLE_KERNELS.contains(&format!("arm64-{kseries}").as_str()) {
        let src = compile_instr(dir, "preempt");
        instrument_pmc(&src, 1, &dir.join(PREEMPT_OBJ));
        out.push((
            dir.join(PREEMPT_OBJ),
            run(
                PREEMPT_OBJ,
                PREEMPT_QUIET,
                "instructions",
                &format!(" --preempt {PREEMPT_WAKES}"),
            ),
        ));
    }
}

/// Kernels whose `BPF_PROG_TEST_RUN` is preemptible (`PREEMPT_LAZY`).
const PREEMPTIBLE_KERNELS: [&str; 1] = ["arm64-7"];
/// `run --preempt`: instr/preempt.bpf.c, its quiet runs, and the real-time
/// child's wake-ups (the guest runs twice as many runs after the quiet
/// ones, one per call).
const PREEMPT_OBJ: &str = "preempt-pmc1.o";
const PREEMPT_QUIET: u32 = 4;
const PREEMPT_WAKES: u64 = 6;

/// A region preempted between its reads by a task that restarts the
/// counters and has the cache healed before the region resumes (`run
/// --preempt`): its END may pass the check against the reloaded cache, and
/// then its delta must still be of the one event (perf restarts a counting
/// event where it left off), never START's and END's reads of two
/// unrelated counter values. The region's count varies by what the CPU ran
/// in it (ticks, the child: it spans ms), but a delta across two unrelated
/// values is uniform over 2^32 and almost never within a factor 2 of it.
fn check_arm64_preempt(kseries: &str, out: &VmOutput, dir: &Path) {
    let src = compile_instr(dir, "preempt");
    let m = instrument_pmc(&src, 1, &dir.join(PREEMPT_OBJ));
    let wakes: u64 = out
        .info
        .iter()
        .find_map(|l| {
            let f: std::collections::HashMap<&str, &str> =
                fields(l.strip_prefix("preempt ")?).collect();
            f.get("perturbations")?.parse().ok()
        })
        .unwrap_or_else(|| panic!("arm64-{kseries}: `run --preempt` reported nothing"));
    assert_eq!(
        wakes, PREEMPT_WAKES,
        "arm64-{kseries}: the child's perturbations"
    );
    let snap = vm_snapshot(out, PREEMPT_OBJ, &m);
    let runs = u64::from(PREEMPT_QUIET) + 2 * PREEMPT_WAKES;
    assert_eq!(snap.runs.runs, runs, "{PREEMPT_OBJ}: {:?}", snap.runs);
    let r = &snap.regions[0];
    println!(
        "INXPECT-ARM64 preempt recorded={} invalid={} min={} max={}",
        r.count, r.invalid, r.min[0], r.max[0]
    );
    assert_eq!(
        r.count + r.invalid,
        runs,
        "{PREEMPT_OBJ}: recorded + invalid"
    );
    // The quiet runs and, at least, the runs between the child's wake-ups.
    assert!(
        r.count > u64::from(PREEMPT_QUIET) + PREEMPT_WAKES / 2,
        "{PREEMPT_OBJ}: {} of {runs} recorded",
        r.count
    );
    assert!(
        r.max[0] <= 2 * r.min[0],
        "{PREEMPT_OBJ}: a measurement of {} against a region of {}: START's and END's reads from two counters",
        r.max[0],
        r.min[0]
    );
}

/// arm64 kernels with direct per-CPU access: the ground-truth apps with
/// `tsc`, direct and with the look-ups kept, and the copies' entries (whose
/// context save the guest moves to the sampled path) against the
/// originals; [`check_arm64_direct`].
fn arm64_direct_extras(series: &str, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    truth_extras(series, dir, out);
    for (app, variant) in apps(series.trim_start_matches("arm64-")).chain(COPY_APPS) {
        let (bytes, dumps) = original(dir, app, variant, out);
        out.push(copy_object(dir, app, &bytes, &dumps));
    }
}

/// What [`arm64_direct_extras`] queued: every truth app counted its
/// witness both ways, every copy behaved as its original.
fn check_arm64_direct(series: &str, out: &VmOutput) {
    check_truth(series, out);
    for (app, _) in apps(series.trim_start_matches("arm64-")).chain(COPY_APPS) {
        like_original(out, app, &["tsc-copy"]);
    }
}

fn nest_truth() -> PathBuf {
    repo_root().join("testdata/truth/objects/nest.clang-O2.o")
}

fn nest_calib() -> PathBuf {
    repo_root().join("loader/calib/nest.bpf.o")
}

/// nest.clang-O2.o instrumented whole, and with only its outer region.
fn nest_builds() -> [(&'static str, Option<Vec<String>>); 2] {
    [
        ("nest-all.o", None),
        ("nest-outer.o", Some(vec!["outer".to_string()])),
    ]
}

/// Self and total against exact instruction counts. The guest's frame
/// (byte 14 = 0x45 odd, byte 15 = 0 even) takes nest's outer and mid, not
/// inner, the same way every run. Outer measured with mid not instrumented
/// at all is the truth for outer's self plus mid's total. The calibration's
/// child is an empty region with nothing live around it; mid's sites also
/// save the registers live there, which the tree adds to the child's cost
/// from the sites' whole probe code: self + mid's total is the truth, to
/// one instruction (README "Nested regions").
fn check_arm64_nesting(kseries: &str, out: &VmOutput) {
    use inxpect_loader::report::NestCost;
    let dir = tempfile::tempdir().expect("tempdir");
    let names = ["instructions"];
    let mut cal = calibration_pmc1(out, dir.path());
    let nm = instrument_pmc(&nest_calib(), 1, &dir.path().join("n.o"));
    cal.nested = NestCost::from_calibration(&nm, &vm_snapshot(out, "nestcal-pmc1.o", &nm), 1);
    let [(all, _), (alone, only)] = nest_builds();
    let ma = instrument_pmc_only(&nest_truth(), 1, None, &dir.path().join(all));
    // What the tree charges outer per measurement of mid: the calibration
    // child its whole sites fit, plus the registers mid's sites save.
    let mid_desc = ma.regions.iter().find(|r| r.name == "mid").expect("mid");
    let cc = cal.nested.as_ref().expect("nesting calibration").for_child(
        mid_desc,
        true,
        &["instructions".to_string()],
    );
    assert_eq!(cc.approximate, None, "mid's probes fit a calibration child");
    let p = cc.cost[0];
    let mo = instrument_pmc_only(&nest_truth(), 1, only, &dir.path().join(alone));
    let mut r = vm_report(out, all, &ma, &names, Some(&cal));
    let nodes = inxpect_loader::tree::build(&r, &ma);
    r.tree = Some(nodes.clone());
    println!("{}", inxpect_loader::report::table(&r));
    let a = vm_report(out, alone, &mo, &names, Some(&cal));
    let node = |path: &str| {
        nodes
            .iter()
            .find(|n| n.path.join(";") == path)
            .unwrap_or_else(|| panic!("no {path} in {nodes:?}"))
    };
    let (outer, mid, inner) = (
        node("nest;outer"),
        node("nest;outer;mid"),
        node("nest;outer;mid;inner"),
    );
    assert_eq!(
        (outer.count, mid.count, inner.count),
        (u64::from(K_RUNS), u64::from(K_RUNS), 0),
        "{nodes:?}"
    );
    assert_eq!(mid.parent, Some(outer.id));
    let cmin = |rep: &inxpect_loader::report::Report, name: &str| {
        rep.regions
            .iter()
            .find(|g| g.name == name)
            .and_then(|g| g.events[0].calibrated)
            .map(|c| c.min)
            .unwrap_or_else(|| panic!("no calibrated {name}"))
    };
    // Minimums: exact (an interrupt only adds). outer's self per run is
    // outer - (mid + p), so self + mid's total = outer - p.
    let (full, midv, lone) = (cmin(&r, "outer"), cmin(&r, "mid"), cmin(&a, "outer"));
    let tree_says = (full - (midv + p)) + midv;
    let gap = tree_says - lone;
    println!(
        "INXPECT-ARM64 nesting linux={kseries} outer_full={full} mid={midv} child_probes_calibrated={p} child_probes_real={} outer_alone={lone} self_plus_child={tree_says} gap={gap}",
        full - lone
    );
    // Up to one off: a child's whole probes include END's statistics,
    // whose code loads the statistics map's address; that map's struct is
    // page-sized (256 regions), and the arm64 JIT writes an address with 16
    // zero low bits one instruction shorter (about one load in 16; the
    // calibration's load and this one each may).
    assert!(
        p > 0.0 && gap.abs() <= 1.0,
        "Linux {kseries}: the calibrated child cost {p} is not what mid's probes cost outer ({}): outer's self + mid's total = {tree_says} instructions, outer alone {lone}",
        full - lone
    );
    // The tree's own (mean-based) numbers: never below the exact cost of
    // outer alone by more than the JIT's one instruction (interrupts only
    // add). Not against the lone run's mean: under `-icount shift=0`
    // guest time is one nanosecond per instruction, so more than one 4 ms
    // timer tick can land in its runs, each adding ~18 per run to the mean
    // (CI saw 54 against a minimum of 38 with the largest left out).
    let per_run = |v: f64| v / f64::from(K_RUNS);
    let mean_says = per_run(outer.self_.as_ref().expect("self")[0] + mid.total[0]);
    assert!(
        mean_says - lone >= -1.0,
        "Linux {kseries}: tree self + child = {mean_says} per run, outer alone at least {lone}"
    );
}

/// Minimums of the same region in two loads of the same code: equal to one
/// instruction. The arm64 JIT writes a map address with a zero 16-bit
/// halfword one instruction shorter, so one load's runtime calls between
/// the reads may be one shorter than the other's (CI saw 222 vs 223 and
/// 57 vs 58 for the subprogram region ksub10).
fn same_code_min(here: u64, quiet: u64, what: &str) {
    assert!(
        here.abs_diff(quiet) <= 1,
        "{what}: min {here} here, {quiet} in the quiet load"
    );
}

/// The guest's raw maps of `obj` as the loader's snapshot of `manifest`.
fn vm_snapshot(
    out: &VmOutput,
    obj: &str,
    m: &inxpect_rewriter::runtime::Manifest,
) -> inxpect_loader::stats::Snapshot {
    inxpect_loader::stats::Snapshot::from_percpu_maps(m, |map, key| {
        out.maps
            .iter()
            .filter(|l| l.obj == obj && l.map == map && l.key == key.to_ne_bytes())
            .map(|l| l.value.clone())
            .collect()
    })
    .expect("inxpect_stats / inxpect_pcpu values")
}

/// The calibration the guest's run of calib-pmc1.o gives (instructions).
fn calibration_pmc1(out: &VmOutput, dir: &Path) -> inxpect_loader::report::Calibration {
    let cm = instrument_pmc(
        &repo_root().join("loader/calib/empty.bpf.o"),
        1,
        &dir.join("c.o"),
    );
    inxpect_loader::report::Calibration::from_regions(
        &cm,
        &vm_snapshot(out, "calib-pmc1.o", &cm),
        1,
    )
    .expect("the calibration's region `empty`")
}

/// The report `inxpect test-run` would print for `obj`, calibrated by `cal`.
fn vm_report(
    out: &VmOutput,
    obj: &str,
    m: &inxpect_rewriter::runtime::Manifest,
    names: &[&str],
    cal: Option<&inxpect_loader::report::Calibration>,
) -> inxpect_loader::report::Report {
    use inxpect_loader::report::{self, Report};
    let snap = vm_snapshot(out, obj, m);
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    Report {
        schema: report::SCHEMA,
        command: "vm test_run".into(),
        object: obj.into(),
        program: m.programs.first().cloned().unwrap_or_default(),
        counter: "pmc".into(),
        unit: "events".into(),
        events: names.clone(),
        sample: 1,
        unsampled_copy: false,
        pcpu_direct: false,
        runs: snap.runs,
        test_run: None,
        live: None,
        calibration: cal.cloned(),
        regions: report::regions(m, &snap, |_| true, &names, cal),
        tree: None,
    }
}

/// The k-instructions check of kinsns against the calibration program,
/// both with `n` events `names`, run as `kinsns-{tag}.o` and `calib-{tag}.o`.
fn check_kinsns(
    kseries: &str,
    out: &VmOutput,
    dir: &Path,
    (kinsns, calib): (&Path, &Path),
    (n, names): (usize, &[&str]),
    tag: &str,
) {
    use inxpect_loader::report::Calibration;
    let km = instrument_pmc(kinsns, n, &dir.join("k.o"));
    let cm = instrument_pmc(calib, n, &dir.join("c.o"));
    let c = vm_report(out, &format!("calib-{tag}.o"), &cm, names, None);
    let empty = c
        .regions
        .iter()
        .find(|g| g.name == "empty")
        .expect("the calibration's region `empty`");
    assert_eq!(empty.count, u64::from(CAL_RUNS), "calibration x{n}: {c:?}");
    assert_eq!(c.runs.no_counter, 0, "calibration x{n}: {:?}", c.runs);
    let cal = Calibration::from_regions(&cm, &vm_snapshot(out, &format!("calib-{tag}.o"), &cm), n)
        .expect("the calibration's region `empty`");
    // Both shapes measured: program code and a subprogram.
    assert_eq!(
        cal.shapes
            .iter()
            .map(|s| s.region.as_str())
            .collect::<Vec<_>>(),
        [
            "empty_sub",
            "empty_sub_busy",
            "empty",
            "empty_busy",
            "empty_word",
            "empty_word_busy"
        ],
        "x{n}: calibration shapes"
    );
    let r = vm_report(out, &format!("kinsns-{tag}.o"), &km, names, Some(&cal));
    println!("{}", inxpect_loader::report::table(&r));
    assert_eq!(r.runs.runs, u64::from(K_RUNS), "x{n}: {:?}", r.runs);
    assert_eq!(r.runs.no_counter, 0, "x{n}: {:?}", r.runs);
    let region = |name: &str| {
        r.regions
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no region {name}"))
    };
    let k0 = region("k0");
    for (name, k) in KINSNS {
        let g = region(name);
        assert_eq!(g.count, u64::from(K_RUNS), "x{n} {name}: every run");
        assert_eq!(g.invalid, 0, "x{n} {name}: no invalid read");
        for (e, ev) in g.events.iter().enumerate() {
            let base = &k0.events[e];
            let what = format!(
                "Linux {kseries}, {n} event(s), {name}, event {e} ({})",
                ev.event
            );
            // Exact: the fewest instructions a run took (a timer tick
            // inside a region can only add), raw and calibrated.
            assert_eq!(ev.raw.min - base.raw.min, k as f64, "{what}: raw min");
            let (cv, cb) = (
                ev.calibrated.expect("calibrated"),
                base.calibrated.expect("calibrated"),
            );
            assert_eq!(cv.min - cb.min, k as f64, "{what}: calibrated min");
            // The calibration (the empty region's minimum in its own
            // program) takes the probes out exactly: kN reads k.
            assert_eq!(cv.min, k as f64, "{what}: calibrated min is k");
            if ev.raw.max == ev.raw.min {
                assert_eq!(cv.mean, k as f64, "{what}: calibrated mean is k");
            }
            // Runs no interrupt reached are all the same: then the mean
            // is exact too.
            if ev.raw.max == ev.raw.min && base.raw.max == base.raw.min {
                assert_eq!(ev.raw.mean - base.raw.mean, k as f64, "{what}: raw mean");
                assert_eq!(cv.mean - cb.mean, k as f64, "{what}: calibrated mean");
            }
            println!(
                "INXPECT-ARM64 kinsns linux={kseries} events={n} slot={e} event={} region={name} k={k} raw_min={} raw_mean={} cal_min={} cal_mean={} empty_min={} cal_offset={}",
                ev.event, ev.raw.min, ev.raw.mean, cv.min, cv.mean, empty.events[e].raw.min, cal.offset[e]
            );
        }
    }
    // Other probe shapes: the calibration region of the same shape takes
    // them out (kbusy10: no register free, START fills its pointer again
    // after the read; ksub10: in a subprogram).
    for (name, k, shape, bound) in KSHAPES {
        let g = region(name);
        assert_eq!(g.count, u64::from(K_RUNS), "x{n} {name}: every run");
        let rc = g.calibration.as_ref().expect("calibrated");
        assert_eq!(
            (rc.extra_insns, rc.exact),
            (0, true),
            "x{n} {name}: calibration"
        );
        // That shape, or one whose probes are the same (with several
        // events every site calls the runtime: `empty_busy`'s are
        // `empty`'s, and the first of equals is taken).
        let windows = |r: &str| {
            cal.shapes
                .iter()
                .find(|s| s.region == r)
                .map(|s| (s.start, s.end))
        };
        let got = rc.shape.as_deref().expect("a calibration shape");
        assert_eq!(
            windows(got),
            windows(shape),
            "x{n} {name}: calibrated by {got}, whose probes are not {shape}'s"
        );
        for ev in &g.events {
            let cv = ev.calibrated.expect("calibrated");
            println!(
                "INXPECT-ARM64 kshape linux={kseries} events={n} event={} region={name} k={k} raw_min={} cal_min={} shape={shape}",
                ev.event, ev.raw.min, cv.min
            );
            assert!(
                (cv.min - k as f64).abs() <= bound,
                "Linux {kseries}, {n} event(s), {name} ({}): calibrated min {} for {k} instructions (offset {:?})",
                ev.event,
                cv.min,
                rc.offset
            );
        }
    }
    // The empty region of the calibration program and k0 are the same
    // probes around nothing: the same count.
    for (e, ev) in empty.events.iter().enumerate() {
        assert_eq!(
            ev.raw.min, k0.events[e].raw.min,
            "x{n} event {e}: calibration vs k0"
        );
    }
}

fn check_arm64_pmu(kseries: &str, out: &VmOutput) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kinsns = compile_kinsns(dir.path());
    let calib = repo_root().join("loader/calib/empty.bpf.o");
    let progs = (kinsns.as_path(), calib.as_path());
    for (n, names) in event_sets(kseries) {
        check_kinsns(
            kseries,
            out,
            dir.path(),
            progs,
            (n, names),
            &format!("pmc{n}"),
        );
    }
    // 64-bit counters: the same exact counts (the wide read masks bit 63).
    check_kinsns(kseries, out, dir.path(), progs, LONG_EVENTS, "long2");
    // The apps: every frame measured with a counter.
    for (app, _) in apps(kseries) {
        let obj = format!("{app}-pmc.o");
        let run: Vec<_> = out.runs.iter().filter(|r| r.obj == obj).collect();
        assert!(!run.is_empty(), "{obj} did not run");
        let runs = vm_snapshot(
            out,
            &obj,
            &instrument_pmc(
                &inxpect_tests::object_path(app, apps(kseries).find(|a| a.0 == app).unwrap().1),
                1,
                &dir.path().join("a.o"),
            ),
        )
        .runs;
        assert_eq!(
            runs.runs,
            u64::from(FRAMES) * run.len() as u64,
            "{obj}: {runs:?}"
        );
        assert_eq!(runs.no_counter, 0, "{obj}: {runs:?}");
    }
    // Contention: every measurement that was recorded is right (the same
    // count as without the other perf user), or it was not recorded.
    let km = instrument_pmc(&kinsns, 1, &dir.path().join("k.o"));
    let quiet = vm_snapshot(out, "kinsns-pmc1.o", &km);
    let busy = vm_snapshot(out, "kinsns-churn.o", &km);
    for (i, (q, b)) in quiet.regions.iter().zip(&busy.regions).enumerate() {
        let name = &km.regions[i].name;
        assert!(
            b.count > 0,
            "churn {name}: nothing recorded: {:?}",
            busy.runs
        );
        assert_eq!(
            b.count + b.invalid,
            u64::from(K_RUNS),
            "churn {name}: recorded + invalid = runs"
        );
        println!(
            "INXPECT-ARM64 churn region={name} recorded={} invalid={} min={} max={}",
            b.count, b.invalid, b.min[0], b.max[0]
        );
        same_code_min(b.min[0], q.min[0], &format!("churn {name}"));
        // An interrupt can lengthen a run: the PMU counts the handler at EL1
        // too, and a tick with the other user's rotation has reached 20.7K.
        // A wrong counter would be far off: perf writes a counter it
        // (re)programs to half its range, 2^31 or 2^63 from where it was.
        assert!(
            b.max[0] < q.min[0] + 1_000_000,
            "churn {name}: max {} (quiet min {})",
            b.max[0],
            q.min[0]
        );
    }
    // --functions, a loop back to the subprogram's first instruction: each
    // extra pass adds the same exact count (one probe pair per call, not
    // per pass: a probe run again at the back-edge would measure the last
    // pass only, the same count for every n).
    // The three run from one load: their probes' map addresses, and so their
    // lengths after arm64's JIT, are the same (two loads may differ by one).
    let looptop = compile_instr(dir.path(), "looptop");
    let lm = instrument_pmc_mode(&looptop, Mode::Functions, 1, &dir.path().join("l.o"));
    let snap = vm_snapshot(out, "looptop.o", &lm);
    let mins: Vec<u64> = LOOPTOP_PASSES
        .iter()
        .map(|(n, _)| {
            let f = format!("spin_{n}");
            let spin = lm
                .regions
                .iter()
                .position(|r| r.function == f)
                .unwrap_or_else(|| panic!("a region for {f}"));
            let g = &snap.regions[spin];
            assert_eq!(g.count, u64::from(K_RUNS), "{f}: once per run");
            assert_eq!(g.invalid, 0, "{f}: no invalid read");
            println!(
                "INXPECT-ARM64 looptop linux={kseries} passes={n} min={} max={}",
                g.min[0], g.max[0]
            );
            g.min[0]
        })
        .collect();
    // One pass: 10 movs, the decrement, and the compare and branch of
    // `if r1 != 0` (the arm64 JIT: one instruction per BPF instruction,
    // two for the conditional jump).
    let pass = mins[1] - mins[0];
    assert_eq!(pass, 13, "one more pass of spin: {mins:?}");
    for (i, (n, extra)) in LOOPTOP_PASSES.iter().enumerate() {
        assert_eq!(
            mins[i] - mins[0],
            extra * pass,
            "spin with {n} passes: {mins:?} (each pass {pass})"
        );
    }
    // Calibrated, a subprogram's region is its own instructions: n passes
    // and `r0 = 0`. Its END looks the per-CPU state up before it reads (the
    // calibration's `empty_sub`), START restores the live argument after its
    // read (1 more; END sets the return value again after its read, as the
    // `r0 = 0` before the exit did, rather than saving it). The calibration
    // is another load: its map pointer's JIT length may differ by one.
    let cal = calibration_pmc1(out, dir.path());
    let r = vm_report(out, "looptop.o", &lm, &["instructions"], Some(&cal));
    for (n, _) in LOOPTOP_PASSES {
        let f = format!("spin_{n}");
        let g = r
            .regions
            .iter()
            .find(|g| g.function == f)
            .unwrap_or_else(|| panic!("a region for {f}"));
        let rc = g.calibration.as_ref().expect("calibrated");
        assert_eq!(
            (rc.shape.as_deref(), rc.extra_insns, rc.exact),
            (Some("empty_sub"), 1, true),
            "{f}: calibration"
        );
        let got = g.events[0].calibrated.expect("calibrated").min;
        let truth = (13 * n + 1) as f64;
        println!(
            "INXPECT-ARM64 looptop-cal linux={kseries} passes={n} raw_min={} cal_min={got} truth={truth} offset={:?}",
            g.events[0].raw.min, rc.offset
        );
        assert!(
            (got - truth).abs() <= 1.0,
            "{f}: calibrated min {got}, its instructions {truth} (offset {:?})",
            rc.offset
        );
    }
    // A reschedule: reads right before, invalid while the cache is stale
    // (the reads leave through their tail branch to inxpect_stale), right
    // again once it healed.
    for (n, _) in event_sets(kseries).filter(|(n, _)| *n <= 2) {
        let km = instrument_pmc(&kinsns, n, &dir.path().join("k.o"));
        let quiet = vm_snapshot(out, &format!("kinsns-pmc{n}.o"), &km);
        let obj = format!("kinsns-resched{n}.o");
        let r = vm_snapshot(out, &obj, &km);
        assert_eq!(
            r.runs.runs,
            2 * u64::from(RESCHED_RUNS),
            "{obj}: {:?}",
            r.runs
        );
        for (i, (q, b)) in quiet.regions.iter().zip(&r.regions).enumerate() {
            let name = &km.regions[i].name;
            println!(
                "INXPECT-ARM64 resched events={n} region={name} recorded={} invalid={} min={}",
                b.count, b.invalid, b.min[0]
            );
            assert_eq!(
                b.count + b.invalid,
                2 * u64::from(RESCHED_RUNS),
                "{obj} {name}: recorded + invalid = runs"
            );
            assert!(
                b.invalid >= 1,
                "{obj} {name}: no read found its cache stale"
            );
            assert!(
                b.count > u64::from(RESCHED_RUNS),
                "{obj} {name}: the cache did not heal ({} recorded)",
                b.count
            );
            for e in 0..n {
                same_code_min(b.min[e], q.min[e], &format!("{obj} {name} event {e}"));
            }
        }
        // The cache is constant during a run: every region of a run is
        // invalid or none is, so the report's `invalid` is one figure.
        let names = event_sets(kseries)
            .find(|(m, _)| *m == n)
            .expect("event set")
            .1;
        let v = report_json(&vm_report(out, &obj, &km, names, None));
        let invalid: Vec<_> = v["regions"]
            .as_array()
            .expect("regions")
            .iter()
            .map(|g| g["invalid"].as_u64())
            .collect();
        assert!(
            invalid.windows(2).all(|w| w[0] == w[1]),
            "{obj}: regions of the same runs differ in invalid: {invalid:?}"
        );
    }
    // Exact: each region's `invalid` in the report is the number of runs
    // whose own reads after the regions were invalid (instr/stale.bpf.c).
    for (n, names) in event_sets(kseries).filter(|(n, _)| STALE_EVENTS.contains(n)) {
        let (path, m) = build_stale(dir.path(), n);
        let obj = stale_object(n);
        let (stale, valid) = (
            bss_u64(out, &path, &obj, "stale_runs"),
            bss_u64(out, &path, &obj, "valid_runs"),
        );
        let runs = 2 * u64::from(RESCHED_RUNS);
        assert_eq!(stale + valid, runs, "{obj}: the witness counts every run");
        assert!(stale >= 1, "{obj}: no run found the cache stale");
        let v = report_json(&vm_report(out, &obj, &m, names, None));
        println!(
            "INXPECT-ARM64 stale events={n} witness_stale={stale} witness_valid={valid} report_invalid={:?}",
            v["regions"]
                .as_array()
                .map(|a| a.iter().map(|g| g["invalid"].clone()).collect::<Vec<_>>())
        );
        assert_eq!(v["runs"].as_u64(), Some(runs), "{obj}: {v}");
        for g in v["regions"].as_array().expect("regions") {
            assert_eq!(
                (g["invalid"].as_u64(), g["count"].as_u64()),
                (Some(stale), Some(valid)),
                "{obj} region {} (invalid, count) in the report vs the runs' own reads: {g}",
                g["name"]
            );
        }
    }
    for needed in [
        "events instructions",
        "events instructions,cycles",
        "events instructions,instructions,instructions with 4 other events per CPU -> EBUSY",
        "hotplug with events: cpu1 offline -> OFFLINE, online -> ACTIVE",
    ] {
        assert!(
            out.passed(needed),
            "check `{needed}` did not pass; failed: {:#?}",
            out.failed
        );
    }
}

/// QEMU's Cortex-A72 has a PMUv3 before v3p5: 32-bit event counters, so
/// each 64-bit (`long`) event of `long2` is a chained pair (the module reads
/// high, low, high), cycles:long the 64-bit cycle counter. Everything else
/// as on `-cpu max`, exact the same way.
#[test]
fn vm_linux_arm64_6_12_cortex_a72() {
    let out = run_vm_on("arm64-6.12", Some("cortex-a72"));
    check_common("arm64-6.12", &out);
    check_arm64_pmu("6.12", &out);
    // instructions:long on a chained pair, cycles:long on the cycle counter.
    assert_eq!(long_kinds(&out), (CHAINED | WIDE, ARM64_PMCCNTR | WIDE));
}

/// The module's handle bits (kmod/inxpect_arch.h).
const CHAINED: i64 = 0x100;
const WIDE: i64 = 0x200;
const ARM64_PMCCNTR: i64 = 31;

/// CPU 0's handles of the `events` run of [`LONG_EVENTS`]: slot 0's kind
/// (chained, wide; its counter is the driver's choice) and slot 1's handle.
fn long_kinds(out: &VmOutput) -> (i64, i64) {
    let list = LONG_EVENTS.1.join(",");
    let v: Vec<i64> = out
        .info
        .iter()
        .filter(|l| l.starts_with("events ") && fields(l).any(|f| f == ("list", list.as_str())))
        .filter(|l| fields(l).any(|f| f == ("cpu", "0")))
        .map(|l| {
            fields(l)
                .find(|f| f.0 == "index")
                .and_then(|f| f.1.parse().ok())
                .expect("index")
        })
        .collect();
    assert_eq!(v.len(), 2, "events {list}: {:#?}", out.info);
    (v[0] & (CHAINED | WIDE), v[1])
}

#[test]
fn vm_linux_arm64_6_1() {
    let out = run_vm("arm64-6.1");
    check_common("arm64-6.1", &out);
    check_arm64_pmu("6.1", &out);
    check_arm64_nesting("6.1", &out);
}

/// The arm64 checks of a `-cpu max` guest of Linux `kseries`.
fn check_arm64_max(kseries: &str, out: &VmOutput) {
    check_common(&format!("arm64-{kseries}"), out);
    check_arm64_pmu(kseries, out);
    check_arm64_nesting(kseries, out);
    // -cpu max has PMUv3p5: 64-bit event counters, nothing chained.
    assert_eq!(long_kinds(out), (WIDE, ARM64_PMCCNTR | WIDE));
}

#[test]
fn vm_linux_arm64_6_12() {
    check_arm64_max("6.12", &run_vm("arm64-6.12"));
}

/// trixie-backports' newest 7.x for arm64 (module cross-built in the trixie
/// chroot with its gcc-14): a preemptible kernel with UBSAN (the reads stay
/// frameless leaves), and direct per-CPU access on arm64's JIT.
#[test]
fn vm_linux_arm64_7() {
    let out = run_vm("arm64-7");
    check_arm64_max("7", &out);
    check_arm64_direct("arm64-7", &out);
    let dir = tempfile::tempdir().expect("tempdir");
    check_arm64_preempt("7", &out, dir.path());
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
