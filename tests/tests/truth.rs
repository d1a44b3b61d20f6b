//! Ground truth (issue 11): every count inxpect reports must equal what the
//! program really did.
//!
//! The apps in testdata/truth/*.bpf.c bump a witness (`struct truth` in
//! `.data.truth`, fields found by name in the object's BTF) right before
//! each END, at each function entry and at each fresh program entry. Running
//! the ORIGINAL object frame by frame gives, per frame, how often every
//! region ended after its START, every function was called and the program
//! was run. The instrumented object (`--sections` and `--functions`, ktime
//! and perf, sampling 1/1, 1/2, 1/4) must then report exactly those counts,
//! summed over the sampled frames, plus `runs` and `sampled`, and must
//! behave as the original: verdict, output bytes and witness after every
//! frame, all maps at the end. Nothing here is a hard-coded result.
//!
//! Sampling: a per-CPU countdown measures the first run on a CPU, then every
//! K-th (loader/README.md); the test pins itself to one CPU and loads fresh
//! objects, so frame i (from 0) is sampled iff i % K == 0, and the per-frame
//! witness makes the expectation exact.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{ensure, Context, Result};
use inxpect_rewriter::{instrument, Counter, Mode, Options};
use inxpect_tests::{
    app_maps, attach_perf_events, load_object, percpu_count, set_disabled, set_sampling, test_run,
    testdata, truth_object, xlated_insns, MapEntry,
};
use libbpf_rs::{MapCore, MapFlags, Object, PrintLevel, ProgramMut};

const OPT_LEVELS: [&str; 2] = ["clang-O1", "clang-O2"];
const MODES: [Mode; 2] = [Mode::Sections, Mode::Functions];
/// The backends this host has (tsc/pmc need the module: the VM suite).
const COUNTERS: [Counter; 2] = [Counter::Ktime, Counter::Perf];
/// Sampling 1 in 2^shift.
const SHIFTS: [u32; 3] = [0, 1, 2];
/// A multiple of the frame pattern (12) and of every K.
const FRAMES: usize = 240;
const WITNESS_MAP: &str = ".data.truth";

fn truth_dir() -> PathBuf {
    testdata().join("truth")
}

fn frames() -> Vec<Vec<u8>> {
    inxpect_tests::truth_frames(FRAMES)
}

fn sampled(i: usize, shift: u32) -> bool {
    // The runtime's countdown: the first run on the CPU, then every K-th.
    i & ((1usize << shift) - 1) == 0
}

// --- libbpf's log, so a refused load says why ------------------------------

static LOG: Mutex<String> = Mutex::new(String::new());
/// libbpf's print callback is process-wide: one test at a time under
/// `cargo test` (nextest runs each in its own process anyway).
static SERIAL: Mutex<()> = Mutex::new(());

fn capture(_: PrintLevel, msg: String) {
    LOG.lock().unwrap_or_else(|e| e.into_inner()).push_str(&msg);
}

fn take_log() -> String {
    std::mem::take(&mut *LOG.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The verifier's reason, for a failure line: the lines before its
/// closing `processed N insns` statistics.
fn log_tail() -> String {
    let log = take_log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("BPF token"))
        .collect();
    let end = lines
        .iter()
        .rposition(|l| l.starts_with("processed "))
        .unwrap_or(lines.len());
    let mut reason: Vec<&str> = lines[..end]
        .iter()
        .rev()
        .filter(|l| !l.starts_with("verification time"))
        .take(2)
        .copied()
        .collect();
    reason.reverse();
    reason.join(" | ")
}

fn setup() -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    libbpf_rs::set_print(Some((PrintLevel::Warn, capture)));
    // test_run runs on the calling CPU; the run counter and the stats are
    // per CPU, so every frame must land on the same one.
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    g
}

// --- objects, maps, witness -------------------------------------------------

fn witness_fields(path: &Path) -> Result<BTreeMap<String, usize>> {
    inxpect_tests::truth_witness_fields(path)
}

fn witness(obj: &Object) -> Result<Vec<u8>> {
    let m = obj
        .maps()
        .find(|m| m.name().to_string_lossy().ends_with(WITNESS_MAP))
        .context("no .data.truth map")?;
    m.lookup(&0u32.to_ne_bytes(), MapFlags::ANY)?
        .context(".data.truth has no value")
}

fn field(v: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(v[off..off + 8].try_into().expect("8 bytes"))
}

fn program<'o>(obj: &'o Object, name: &str) -> Result<ProgramMut<'o>> {
    obj.progs_mut()
        .find(|p| p.name() == name)
        .with_context(|| format!("no program {name}"))
}

// --- the original: ground truth -------------------------------------------

struct Truth {
    fields: BTreeMap<String, usize>,
    /// Per frame: verdict, output bytes, witness after the frame.
    runs: Vec<(u32, Vec<u8>, Vec<u8>)>,
    /// Per frame, per field: what this frame added.
    delta: Vec<BTreeMap<String, u64>>,
    maps: Vec<MapEntry>,
}

impl Truth {
    /// The witness summed over the frames sampled at 1/2^shift.
    fn expected(&self, name: &str, shift: u32) -> u64 {
        self.expected_in(name, |i| sampled(i, shift))
    }

    /// The witness summed over the frames `counts` picks.
    fn expected_in(&self, name: &str, counts: impl Fn(usize) -> bool) -> u64 {
        self.delta
            .iter()
            .enumerate()
            .filter(|(i, _)| counts(*i))
            .map(|(_, d)| d[name])
            .sum()
    }
}

fn ground_truth(path: &Path, prog: &str, frames: &[Vec<u8>]) -> Result<Truth> {
    let fields = witness_fields(path)?;
    take_log();
    let obj = load_object(path).with_context(|| format!("original: {}", log_tail()))?;
    let p = program(&obj, prog)?;
    let mut prev = witness(&obj)?;
    ensure!(
        prev.len() == 8 * fields.len() && prev.iter().all(|&b| b == 0),
        "{WITNESS_MAP}: {} bytes, not zero, or not only struct truth",
        prev.len()
    );
    let mut runs = Vec::new();
    let mut delta = Vec::new();
    for f in frames {
        let (verdict, out) = test_run(&p, f)?;
        let w = witness(&obj)?;
        delta.push(
            fields
                .iter()
                .map(|(n, &o)| (n.clone(), field(&w, o).wrapping_sub(field(&prev, o))))
                .collect(),
        );
        runs.push((verdict, out, w.clone()));
        prev = w;
    }
    let t = Truth {
        fields,
        runs,
        delta,
        maps: app_maps(&obj)?,
    };
    // The frames must reach every witness, on sampled frames too, or a
    // wrong count could hide behind a zero.
    for name in t.fields.keys() {
        for shift in [0, *SHIFTS.last().expect("shifts")] {
            ensure!(
                t.expected(name, shift) > 0,
                "the frames never reach witness {name} (sampling 1/{})",
                1 << shift
            );
        }
    }
    ensure!(
        t.delta.iter().all(|d| d["runs"] == 1),
        "the original counts other than one run per frame"
    );
    Ok(t)
}

// --- the instrumented object against the truth -----------------------------

struct Shape {
    prog: &'static str,
    /// The stack shape: a one-line refusal naming the stack is a pass.
    may_refuse_for_stack: bool,
    /// From frame `.0` on, the regions `.1` (selectors, as `inxpect set`
    /// takes them) are disabled and every other one enabled: the config is
    /// written between two frames of the same loaded object. Empty: all
    /// enabled throughout.
    off: &'static [(usize, &'static [&'static str])],
}

impl Shape {
    /// The ids disabled at frame `i`, from the phases resolved to ids.
    fn off_at(phases: &[(usize, Vec<u32>)], i: usize) -> &[u32] {
        phases
            .iter()
            .rev()
            .find(|(from, _)| *from <= i)
            .map_or(&[], |(_, ids)| ids.as_slice())
    }
}

enum Outcome {
    Pass,
    Refused(String),
    Fail(Vec<String>),
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Sections => "sections",
        Mode::Functions => "functions",
    }
}

fn check(
    s: &Shape,
    path: &Path,
    t: &Truth,
    frames: &[Vec<u8>],
    opts: &Options,
    shift: u32,
) -> Result<Outcome> {
    let input = fs::read(path)?;
    let (mode, counter) = (opts.mode, opts.counter);
    let r = match instrument(&input, opts) {
        Ok(r) => r,
        Err(e) => {
            // What inxpect-instrument prints: the chain on one line.
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                msg = format!("{msg}: {c}");
                src = c.source();
            }
            if s.may_refuse_for_stack && !msg.contains('\n') && msg.contains("stack") {
                return Ok(Outcome::Refused(msg));
            }
            return Ok(Outcome::Fail(vec![format!("instrument refused: {msg}")]));
        }
    };
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out.o");
    fs::write(&out, &r.object)?;
    take_log();
    let inst = match load_object(&out) {
        Ok(o) => o,
        Err(e) => {
            return Ok(Outcome::Fail(vec![format!(
                "instrumented without error, but the kernel refuses the output: {e:#}: {}",
                log_tail()
            )]))
        }
    };
    let _perf = if counter == Counter::Perf {
        attach_perf_events(&inst)?
    } else {
        Vec::new()
    };
    set_sampling(&inst, shift)?;
    let mut phases: Vec<(usize, Vec<u32>)> = Vec::new();
    for &(from, sels) in s.off {
        let mut ids = Vec::new();
        for sel in sels {
            let found: Vec<u32> = r
                .manifest
                .regions
                .iter()
                .filter(|x| x.matches(sel))
                .map(|x| x.id)
                .collect();
            ensure!(!found.is_empty(), "no region {sel} to disable");
            ids.extend(found);
        }
        phases.push((from, ids));
    }
    let p = program(&inst, s.prog)?;
    let mut fails = Vec::new();
    for (i, (f, (verdict, bytes, w))) in frames.iter().zip(&t.runs).enumerate() {
        if let Some((_, ids)) = phases.iter().find(|(from, _)| *from == i) {
            set_disabled(&inst, ids)?;
        }
        let (v2, b2) = test_run(&p, f)?;
        let w2 = witness(&inst)?;
        if (v2, &b2, &w2) != (*verdict, bytes, w) {
            let what = if v2 != *verdict {
                format!("verdict {v2}, original {verdict}")
            } else if b2 != *bytes {
                "output bytes differ".to_string()
            } else {
                "witness differs (the program did something else)".to_string()
            };
            fails.push(format!("frame {i}: {what}"));
            break;
        }
    }
    let maps = app_maps(&inst)?;
    if maps != t.maps {
        fails.push("app maps differ from the original's after the frames".into());
    }

    // runs and sampled: one run per packet, ground truth from `runs`.
    let counted = inxpect_tests::runs(&inst)?;
    for (what, got, want) in [
        ("runs", counted.runs, t.expected("runs", 0)),
        ("sampled", counted.sampled, t.expected("runs", shift)),
    ] {
        if got != want {
            fails.push(format!("{what} {got}, ground truth {want}"));
        }
    }

    // Every region keyed by name and function; every witness has a region.
    let witness_of = |name: &str, func: &str| match mode {
        Mode::Sections => format!("r_{name}__{func}"),
        Mode::Functions => format!("f_{func}"),
    };
    let prefix = match mode {
        Mode::Sections => "r_",
        Mode::Functions => "f_",
    };
    let mut seen = BTreeSet::new();
    for reg in &r.manifest.regions {
        let w = witness_of(&reg.name, &reg.function);
        let key = format!("{}@{}", reg.name, reg.function);
        if !seen.insert(w.clone()) {
            fails.push(format!("region {key} reported twice"));
            continue;
        }
        if !t.fields.contains_key(&w) {
            fails.push(format!("region {key} has no ground truth (no witness {w})"));
            continue;
        }
        let got = percpu_count(&inst, reg.id)?;
        let on = |i: usize| !Shape::off_at(&phases, i).contains(&reg.id);
        let want = t.expected_in(&w, |i| sampled(i, shift) && on(i));
        if got != want {
            fails.push(format!("region {key}: count {got}, ground truth {want}"));
        }
        // A disabled region must have had something to miss, and an
        // enabled one something to count, or the zero proves nothing.
        for (k, (from, ids)) in phases.iter().enumerate() {
            let to = phases.get(k + 1).map_or(frames.len(), |p| p.0);
            let here = t.expected_in(&w, |i| (*from..to).contains(&i) && sampled(i, shift));
            if ids.contains(&reg.id) && here == 0 {
                fails.push(format!(
                    "region {key}: disabled in frames {from}..{to}, whose sampled runs never reach it"
                ));
            }
        }
        if !phases.is_empty() && want == 0 {
            fails.push(format!(
                "region {key}: no sampled frame reaches it while it is enabled"
            ));
        }
    }
    for w in t.fields.keys().filter(|w| w.starts_with(prefix)) {
        if !seen.contains(w) {
            let regions: Vec<String> = r
                .manifest
                .regions
                .iter()
                .map(|x| format!("{}@{}", x.name, x.function))
                .collect();
            fails.push(format!(
                "witness {w} has no region in the report (regions: {})",
                regions.join(", ")
            ));
        }
    }
    Ok(if fails.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(fails)
    })
}

/// Every opt level x mode x backend x sampling of one shape; prints a table
/// line per case and fails with every failing case.
fn shape(app: &'static str, prog: &'static str, may_refuse_for_stack: bool) {
    cases(
        app,
        &Shape {
            prog,
            may_refuse_for_stack,
            off: &[],
        },
        &MODES,
    );
}

/// Every opt level x `modes` x backend x sampling of `s` on `app`.
fn cases(app: &'static str, s: &Shape, modes: &[Mode]) {
    let _g = setup();
    let frames = frames();
    let mut failures = Vec::new();
    for opt in OPT_LEVELS {
        let path = truth_object(app, opt);
        let t = ground_truth(&path, s.prog, &frames)
            .unwrap_or_else(|e| panic!("{app}.{opt}: ground truth: {e:#}"));
        for &mode in modes {
            for counter in COUNTERS {
                // With the uninstrumented copy wherever some runs are
                // sampled out: they run the copy, and must behave as the
                // original and count as runs.
                let sampled = SHIFTS.iter().map(|&k| (k, false));
                let copied = SHIFTS.iter().filter(|&&k| k > 0).map(|&k| (k, true));
                for (shift, copy) in sampled.chain(copied) {
                    let what = format!(
                        "{app}.{opt} --{} {} 1/{}{}",
                        mode_name(mode),
                        counter.name(),
                        1 << shift,
                        if copy { " --unsampled-copy" } else { "" }
                    );
                    let opts = Options {
                        mode,
                        counter,
                        unsampled_copy: copy,
                        ..Options::default()
                    };
                    match check(s, &path, &t, &frames, &opts, shift) {
                        Ok(Outcome::Pass) => eprintln!("truth: {what}: pass"),
                        Ok(Outcome::Refused(m)) => {
                            eprintln!("truth: {what}: pass (refused: {m})")
                        }
                        Ok(Outcome::Fail(v)) => {
                            eprintln!("truth: {what}: FAIL");
                            failures.extend(v.into_iter().map(|l| format!("{what}: {l}")));
                        }
                        Err(e) => {
                            eprintln!("truth: {what}: FAIL");
                            failures.push(format!("{what}: {e:#}"));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn truth_early_exits_in_a_region() {
    shape("early", "early", false);
}

#[test]
fn truth_ends_that_may_run_without_a_start() {
    shape("unstarted", "unstarted", false);
}

#[test]
fn truth_nested_regions() {
    shape("nest", "nest", false);
}

#[test]
fn truth_region_around_a_call() {
    shape("call", "call", false);
}

#[test]
fn truth_region_in_a_static_subprogram() {
    shape("static_sub", "static_sub", false);
}

#[test]
fn truth_region_in_a_global_subprogram() {
    shape("global_sub", "global_sub", false);
}

#[test]
fn truth_region_in_a_bounded_loop() {
    shape("loop", "loop", false);
}

#[test]
fn truth_region_in_a_bpf_loop_callback() {
    shape("bpfloop", "bpfloop", false);
}

#[test]
fn truth_subprogram_looping_to_its_first_insn() {
    shape("looptop_sub", "looptop_sub", false);
}

#[test]
fn truth_program_looping_to_its_first_insn() {
    shape("looptop_prog", "looptop_prog", false);
}

#[test]
fn truth_tail_call_within_the_object() {
    shape("tailcall", "tc_entry", false);
}

#[test]
fn truth_same_region_name_in_caller_and_callee() {
    shape("samename", "samename", false);
}

#[test]
fn truth_near_the_stack_limit() {
    shape("stack", "stack", true);
}

/// 80 regions in one program: ids 0-63 tested in the run's mask, 64 and
/// up on the subprogram path, nested and branched across both limits.
#[test]
fn truth_more_regions_than_the_run_mask_holds() {
    shape("many", "many", false);
}

/// Regions disabled in the config report nothing and the others stay
/// exact; a toggle between frames counts from the next run. Phase one
/// disables parents whose children stay on (s31/s32, s33/s34 the other
/// way, s63/s64 across 64, s66/s67 above it, s70 over s05 below it) and
/// the outermost s00; phase two turns those on and the children off;
/// phase three has everything on again.
#[test]
fn truth_disabled_regions_report_nothing() {
    cases(
        "many",
        &Shape {
            prog: "many",
            may_refuse_for_stack: false,
            off: &[
                (0, &["s00", "s31", "s34", "s63", "s66", "s70", "s78"]),
                (
                    80,
                    &["s05", "s32", "s33", "s62", "s64", "s65", "s67", "s79"],
                ),
                (160, &[]),
            ],
        },
        &[Mode::Sections],
    );
}

/// The same in --functions: the program's own region (id 0) and a
/// subprogram's, toggled between frames.
#[test]
fn truth_disabled_functions_report_nothing() {
    cases(
        "static_sub",
        &Shape {
            prog: "static_sub",
            may_refuse_for_stack: false,
            off: &[(0, &["static_sub"]), (80, &["scan"]), (160, &[])],
        },
        &[Mode::Functions],
    );
}

/// Smallest `min` of event 0 among the CPUs that measured region `id`.
fn region_min(obj: &Object, id: u32) -> Result<Option<u64>> {
    let s = inxpect_tests::region_stats(obj, id)?;
    Ok((s.count > 0).then_some(s.min[0]))
}

/// Counts cannot tell whether a function's entry probe ran again at a
/// back-edge to its first instruction (the region restarts, and still ends
/// once per call); durations can. Every call of `spin_slow` does the work
/// of one `slow` call or more before its fast last pass, so its fastest
/// call cannot be much faster than the fastest `slow` (2x margin for
/// noise; measuring only the last pass makes it ~64 memory operations
/// shorter than that).
#[test]
fn truth_loop_to_first_insn_measures_the_whole_call() {
    let _g = setup();
    let frames = frames();
    let mut failures = Vec::new();
    for opt in OPT_LEVELS {
        let path = truth_object("looptop_sub", opt);
        let res = (|| -> Result<()> {
            let opts = Options {
                mode: Mode::Functions,
                counter: Counter::Ktime,
                ..Options::default()
            };
            let r = instrument(&fs::read(&path)?, &opts)?;
            let dir = tempfile::tempdir()?;
            let out = dir.path().join("out.o");
            fs::write(&out, &r.object)?;
            let inst = load_object(&out).with_context(log_tail)?;
            set_sampling(&inst, 0)?;
            let p = program(&inst, "looptop_sub")?;
            for f in &frames {
                test_run(&p, f)?;
            }
            let min = |func: &str| -> Result<u64> {
                let reg = r
                    .manifest
                    .regions
                    .iter()
                    .find(|x| x.function == func)
                    .with_context(|| format!("no region for {func}"))?;
                region_min(&inst, reg.id)?.with_context(|| format!("{func} never measured"))
            };
            let (spin, slow) = (min("spin_slow")?, min("slow")?);
            ensure!(
                2 * spin >= slow,
                "fastest spin_slow call {spin} ns, fastest slow call {slow} ns: only the last pass was measured"
            );
            eprintln!("truth: looptop_sub.{opt}: fastest spin_slow {spin} ns, slow {slow} ns");
            Ok(())
        })();
        if let Err(e) = res {
            failures.push(format!("looptop_sub.{opt}: {e:#}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// --- the committed builds are what the shapes claim ------------------------

/// (name, first instruction slot, instructions) of every function.
fn functions(bytes: &[u8]) -> Result<Vec<(String, Vec<[u8; 8]>)>> {
    let elf = goblin::elf::Elf::parse(bytes)?;
    let mut out = Vec::new();
    for sym in elf.syms.iter() {
        if sym.st_type() != goblin::elf::sym::STT_FUNC || sym.st_size == 0 {
            continue;
        }
        let name = elf.strtab.get_at(sym.st_name).unwrap_or("").to_string();
        let sh = &elf.section_headers[sym.st_shndx];
        let start = (sh.sh_offset + sym.st_value) as usize;
        let code = &bytes[start..start + sym.st_size as usize];
        let insns = code
            .chunks_exact(8)
            .map(|c| c.try_into().expect("8 bytes"))
            .collect();
        out.push((name, insns));
    }
    Ok(out)
}

/// Whether some jump of the function lands on its first instruction.
fn jumps_to_first_insn(insns: &[[u8; 8]]) -> bool {
    insns.iter().enumerate().any(|(pc, i)| {
        let (class, op) = (i[0] & 7, i[0] & 0xf0);
        let off = i16::from_le_bytes([i[2], i[3]]) as i64;
        (class == 5 || class == 6) && op != 0x80 && op != 0x90 && pc as i64 + 1 + off == 0
    })
}

/// Deepest stack byte the function addresses: `*(rX)(r10 - n)` or
/// `rX = r10; rX += -n` (arrays).
fn frame_depth(insns: &[[u8; 8]]) -> i64 {
    let mut depth = 0;
    for (pc, i) in insns.iter().enumerate() {
        let (dst, src) = (i[1] & 15, i[1] >> 4);
        let off = i16::from_le_bytes([i[2], i[3]]) as i64;
        let class = i[0] & 7;
        if (1..=3).contains(&class) && (dst == 10 || src == 10) {
            depth = depth.max(-off);
        }
        if i[0] == 0xbf && src == 10 {
            if let Some(n) = insns.get(pc + 1) {
                let imm = i32::from_le_bytes([n[4], n[5], n[6], n[7]]) as i64;
                if n[0] == 0x07 && n[1] & 15 == dst {
                    depth = depth.max(-imm);
                }
            }
        }
    }
    depth
}

/// The committed objects are the sources' build (byte for byte), and
/// clang really made the shapes the tests are about.
#[test]
fn committed_truth_builds_have_their_shapes() {
    let dir = tempfile::tempdir().expect("tmp");
    let st = std::process::Command::new("bash")
        .arg(truth_dir().join("build.sh"))
        .arg(dir.path())
        .status()
        .expect("testdata/truth/build.sh");
    assert!(st.success(), "testdata/truth/build.sh failed");
    let mut built = 0;
    for e in fs::read_dir(dir.path()).expect("read") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "o") {
            let name = p.file_name().expect("name");
            let committed = truth_dir().join("objects").join(name);
            assert!(
                fs::read(&p).expect("built") == fs::read(&committed).unwrap_or_default(),
                "{}: the committed object is not the build of its source (run testdata/truth/build.sh)",
                committed.display()
            );
            built += 1;
        }
    }
    assert_eq!(built, 28, "14 apps at -O1 and -O2");
    for opt in OPT_LEVELS {
        let get = |app: &str| functions(&fs::read(truth_object(app, opt)).expect("object"));
        for (app, func) in [
            ("looptop_sub", "spin"),
            ("looptop_sub", "spin_slow"),
            ("looptop_prog", "looptop_prog"),
        ] {
            let fs = get(app).expect("elf");
            let (_, insns) = fs
                .iter()
                .find(|(n, _)| n == func)
                .unwrap_or_else(|| panic!("{app}.{opt}: no function {func}"));
            assert!(
                jumps_to_first_insn(insns),
                "{app}.{opt}: no jump back to the first instruction of {func}"
            );
        }
        let fs = get("stack").expect("elf");
        let depth = |f: &str| frame_depth(&fs.iter().find(|(n, _)| n == f).expect(f).1);
        let (prog, sub) = (depth("stack"), depth("deep"));
        assert!(
            (464..=504).contains(&prog) && sub > 0 && prog + sub <= 512 && prog + sub >= 496,
            "stack.{opt}: frames {prog} + {sub} are not close to the 512-byte limit"
        );
        many_has_its_shape(opt);
    }
}

/// many: 80 regions in one program, s<n> with id n, and the nesting its
/// comment claims across ids 31/32, 63/64 and below/above 64.
fn many_has_its_shape(opt: &str) {
    let input = fs::read(truth_object("many", opt)).expect("many object");
    let r = instrument(&input, &Options::default())
        .unwrap_or_else(|e| panic!("many.{opt}: instrument: {e}"));
    let regs = &r.manifest.regions;
    assert_eq!(regs.len(), 80, "many.{opt}: regions");
    assert!(
        regs.iter().all(|x| x.function == "many"),
        "many.{opt}: a region outside the program"
    );
    for x in regs {
        assert_eq!(
            x.name,
            format!("s{:02}", x.id),
            "many.{opt}: region {} has id {}",
            x.name,
            x.id
        );
    }
    let parents = |id: usize| {
        let mut p = regs[id].parents.clone();
        p.sort_unstable();
        p
    };
    for (child, want) in [
        (5, vec![0, 70]),
        (32, vec![31]),
        (34, vec![33]),
        (64, vec![63]),
        (67, vec![66]),
        (31, vec![0]),
        (63, vec![0]),
        (70, vec![0]),
        (79, vec![0]),
    ] {
        assert_eq!(parents(child), want, "many.{opt}: parents of s{child:02}");
    }
    for (id, ends) in [(0, 5), (5, 2), (63, 2), (64, 2), (78, 2)] {
        assert_eq!(regs[id].ends.len(), ends, "many.{opt}: ENDs of s{id:02}");
    }
}

// --- identity through the whole pipeline ----------------------------------

/// A rewrite that selects no region still runs every stage (link, cfg,
/// emit, patch, write): programs must translate exactly as the input's and
/// behave the same. (`passthrough` skips all of it: patch::apply returns
/// early on no insertion.)
#[test]
fn zero_probe_instrument_is_the_identity() {
    let _g = setup();
    let frames = frames();
    let mut objects: Vec<PathBuf> = Vec::new();
    for e in fs::read_dir(truth_dir().join("objects")).expect("objects") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "o") {
            objects.push(p);
        }
    }
    for (app, variant) in inxpect_tests::all_objects() {
        objects.push(inxpect_tests::object_path(&app, variant));
    }
    objects.sort();
    let mut failures = Vec::new();
    for path in &objects {
        let what = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let res = (|| -> Result<()> {
            let input = fs::read(path)?;
            let r = instrument(
                &input,
                &Options {
                    only: Some(Vec::new()),
                    ..Options::default()
                },
            )?;
            ensure!(
                r.manifest.regions.is_empty(),
                "{} regions",
                r.manifest.regions.len()
            );
            let dir = tempfile::tempdir()?;
            let out = dir.path().join("out.o");
            fs::write(&out, &r.object)?;
            let a = load_object(path)?;
            let b = load_object(&out).with_context(|| format!("output: {}", log_tail()))?;
            for pa in a.progs_mut() {
                let name = pa.name().to_string_lossy().to_string();
                let pb = program(&b, &name)?;
                ensure!(
                    xlated_insns(&pa)? == xlated_insns(&pb)?,
                    "program {name}: xlated code differs"
                );
                for (i, f) in frames.iter().enumerate().take(24) {
                    ensure!(
                        test_run(&pa, f)? == test_run(&pb, f)?,
                        "program {name}, frame {i}: results differ"
                    );
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            failures.push(format!("{what}: {e:#}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
