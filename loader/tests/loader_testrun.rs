//! `inxpect test-run` against the kernel (root, BPF_PROG_TEST_RUN).

mod common;
use common::*;

#[test]
fn drop_counts_every_frame_once_per_region() {
    let n = corpus_frames();
    let v = json(&[
        "test-run",
        &object("drop.clang-O2-g.o"),
        "--pcap",
        &corpus(),
        "--counter",
        "ktime",
        "--json",
    ]);
    assert_eq!(v["command"], "test-run");
    assert_eq!(v["counter"], "ktime");
    assert_eq!(v["unit"], "ns");
    assert_eq!(v["test_run"]["frames"].as_u64(), Some(n));
    assert_eq!(v["runs"].as_u64(), Some(n));
    assert_eq!(v["test_run"]["verdicts"]["DROP"].as_u64(), Some(n));
    let counts = region_counts(&v);
    assert!(!counts.is_empty());
    for (name, c) in counts {
        assert_eq!(c, n, "region {name}");
    }
    let r = &v["regions"][0];
    assert_eq!(r["function"], "xdp_drop");
    assert!(r["line"].as_str().unwrap().starts_with("drop.bpf.c:"));
    let raw = &r["events"][0]["raw"];
    let (mn, p50, p99, mx) = (
        raw["min"].as_f64().unwrap(),
        raw["p50"].as_f64().unwrap(),
        raw["p99"].as_f64().unwrap(),
        raw["max"].as_f64().unwrap(),
    );
    assert!(mn <= p50 && p50 <= p99 && p99 <= mx, "{raw}");
    assert!(r["events"][0]["calibrated"].is_object());
}

#[test]
fn sampling_one_in_eight() {
    let n = corpus_frames();
    let v = json(&[
        "test-run",
        &object("drop.clang-O2-g.o"),
        "--pcap",
        &corpus(),
        "--counter",
        "ktime",
        "--sample",
        "1/8",
        "--json",
    ]);
    assert_eq!(v["sample"].as_u64(), Some(8));
    // The first frame, then every 8th.
    assert_eq!(v["sampled"].as_u64(), Some(n.div_ceil(8)));
    for (name, c) in region_counts(&v) {
        assert_eq!(c, n.div_ceil(8), "region {name}");
    }
}

#[test]
fn repeat_multiplies_runs() {
    let n = corpus_frames();
    let v = json(&[
        "test-run",
        &object("drop_sub.clang-O2.o"),
        "--pcap",
        &corpus(),
        "--counter",
        "ktime",
        "--repeat",
        "3",
        "--json",
        "--no-calibrate",
    ]);
    assert_eq!(v["runs"].as_u64(), Some(3 * n));
    assert!(v["calibration"].is_null());
    let counts = region_counts(&v);
    assert!(counts.len() >= 2, "{counts:?}");
    assert_eq!(
        counts.iter().find(|(n, _)| n == "verdict").map(|c| c.1),
        Some(3 * n)
    );
}

/// Calibration subtracts the cost of an empty region (its minimum),
/// measured separately, from every figure of a region. With `ktime` on the
/// host only the arithmetic is exact (two loads' minima differ by a few ns
/// of noise); that an empty region then reports a calibrated minimum of
/// exactly 0 is checked with exact counts in the arm64 guest (tests/vm.rs).
#[test]
fn calibration_cancels_an_empty_region() {
    let calib = root()
        .join("loader/calib/empty.bpf.o")
        .display()
        .to_string();
    let v = json(&[
        "test-run",
        &calib,
        "--prog",
        "xdp_empty",
        "--pcap",
        &corpus(),
        "--counter",
        "ktime",
        "--json",
    ]);
    // The empty regions xdp_empty runs, of four shapes (the fillers and
    // xdp_word's regions do not run).
    let regions: Vec<&serde_json::Value> = v["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .filter(|g| g["count"].as_u64() > Some(0))
        .collect();
    let names: Vec<&str> = regions
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["empty_sub", "empty_sub_busy", "empty", "empty_busy"],
        "{v}"
    );
    for g in regions {
        // Each region is calibrated by itself: its own shape, exactly.
        let name = g["name"].as_str().unwrap();
        assert_eq!(g["calibration"]["shape"], name, "{g}");
        assert_eq!(g["calibration"]["exact"], true, "{g}");
        assert_eq!(g["calibration"]["extra_insns"], 0, "{g}");
        let ev = &g["events"][0];
        let raw = ev["raw"]["min"].as_f64().unwrap();
        let cal = ev["calibrated"]["min"].as_f64().unwrap();
        let off = g["calibration"]["offset"][0].as_f64().unwrap();
        assert!(raw > 0.0 && off > 0.0, "{v}");
        assert!((raw - off - cal).abs() < 1e-6);
        let mean = ev["raw"]["mean"].as_f64().unwrap();
        let cal_mean = ev["calibrated"]["mean"].as_f64().unwrap();
        assert!((mean - off - cal_mean).abs() < 1e-6);
        if name == "empty" {
            assert_eq!(v["calibration"]["offset"][0], off, "{v}");
        }
    }
}

#[test]
fn app_maps_from_config_and_functions_mode() {
    let cfg = root()
        .join("testdata/packets/config.json")
        .display()
        .to_string();
    let v = json(&[
        "test-run",
        &object("nat.clang-O2-g.o"),
        "--pcap",
        &corpus(),
        "--counter",
        "ktime",
        "--json",
        "--no-calibrate",
        "--config",
        &cfg,
        "--app",
        "nat",
    ]);
    assert!(
        v["test_run"]["verdicts"].as_object().unwrap().len() >= 2,
        "{}",
        v["test_run"]
    );
    assert!(region_counts(&v).iter().any(|(_, c)| *c > 0));
    let plain = root()
        .join("loader/tests/data/plain.bpf.o")
        .display()
        .to_string();
    let v = json(&[
        "test-run",
        &plain,
        "--functions",
        "--pcap",
        &corpus(),
        "--counter",
        "ktime",
        "--json",
        "--no-calibrate",
    ]);
    assert_eq!(
        region_counts(&v),
        vec![("xdp_plain".to_string(), corpus_frames())]
    );
}

#[test]
fn regions_filter_disables_the_others() {
    let v = json(&[
        "test-run",
        &object("router.clang-O2-g.o"),
        "--pcap",
        &corpus(),
        "--counter",
        "ktime",
        "--json",
        "--no-calibrate",
        "--regions",
        "lookup",
    ]);
    for r in v["regions"].as_array().unwrap() {
        let on = r["name"] == "lookup";
        assert_eq!(r["enabled"].as_bool(), Some(on));
        if !on {
            assert_eq!(r["count"].as_u64(), Some(0), "{r}");
        }
    }
}

#[test]
fn perf_counter_with_cpu_clock() {
    let n = corpus_frames();
    let v = json(&[
        "test-run",
        &object("drop.clang-O2.o"),
        "--pcap",
        &corpus(),
        "--counter",
        "perf",
        "--json",
        "--no-calibrate",
    ]);
    assert_eq!(v["events"][0], "cpu-clock");
    assert_eq!(region_counts(&v)[0].1, n);
}

#[test]
fn csv_one_row_per_region_and_event() {
    let o = run(&[
        "test-run",
        &object("router.clang-O2-g.o"),
        "--pcap",
        &corpus(),
        "--counter",
        "ktime",
        "--csv",
        "--no-calibrate",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("region_id,region,function"));
    assert_eq!(lines.len(), 1 + 3, "{text}");
    let cols = lines[0].split(',').count();
    assert!(lines[1..].iter().all(|l| l.split(',').count() == cols));
}

#[test]
fn pre_instrumented_object_is_used_as_is() {
    let dir = std::env::temp_dir().join(format!("inxpect-loader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("drop.inx.o");
    let input = std::fs::read(object("drop.clang-O2-g.o")).unwrap();
    let done = inxpect_rewriter::instrument(&input, &inxpect_rewriter::Options::default()).unwrap();
    std::fs::write(&out, done.object).unwrap();
    let p = out.to_str().unwrap();
    // auto takes the object's own counter (ktime), without the module note.
    let o = run(&[
        "test-run",
        p,
        "--pcap",
        &corpus(),
        "--json",
        "--no-calibrate",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("no inxpect module"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["counter"], "ktime");
    assert_eq!(region_counts(&v)[0].1, corpus_frames());
    fails(
        &["test-run", p, "--pcap", &corpus(), "--counter", "perf"],
        "already instrumented",
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The foreign tail-call object (entry tail-calls leaf through a statically
/// filled PROG_ARRAY): one run per frame, `entry` counted on every frame
/// (its region ends before the tail call), `leaf` too, and at 1/2 the
/// tail-called program shares its caller's sampling decision.
#[test]
fn tail_calls_count_one_run_per_frame() {
    let n = corpus_frames();
    let obj = root()
        .join("testdata/foreign/tailcall.clang-O2-g.o")
        .display()
        .to_string();
    for (sample, k) in [("1/1", 1), ("1/2", 2), ("1/4", 4)] {
        let v = json(&[
            "test-run",
            &obj,
            "--prog",
            "entry",
            "--functions",
            "--pcap",
            &corpus(),
            "--counter",
            "ktime",
            "--sample",
            sample,
            "--json",
        ]);
        assert_eq!(v["runs"].as_u64(), Some(n), "{sample}: runs are frames");
        assert_eq!(v["sampled"].as_u64(), Some(n.div_ceil(k)), "{sample}");
        let counts: std::collections::BTreeMap<String, u64> =
            region_counts(&v).into_iter().collect();
        assert_eq!(
            counts.get("entry"),
            Some(&n.div_ceil(k)),
            "{sample}: {counts:?}"
        );
        assert_eq!(
            counts.get("leaf"),
            Some(&n.div_ceil(k)),
            "{sample}: {counts:?}"
        );
    }
}

/// What a frame does in testdata/truth/tailcall.bpf.c's `tc_entry`, from
/// its byte 14 (`a`), independently of the program: a frame too short for
/// byte 14 ends `pre` at once; an odd `a` tail-calls slot `(a >> 1) & 1` of
/// a PROG_ARRAY whose slot 0 holds `tc_leaf` and slot 1 is empty (that
/// call fails and `tc_entry` goes on through `pre`'s END and `post`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TailPath {
    Short,
    TailCalled,
    CallFailed,
    Plain,
}

fn tail_path(frame: &[u8]) -> TailPath {
    match frame.get(14) {
        None => TailPath::Short,
        Some(a) if a & 1 == 1 && a & 2 == 0 => TailPath::TailCalled,
        Some(a) if a & 1 == 1 => TailPath::CallFailed,
        Some(_) => TailPath::Plain,
    }
}

/// `tail_ends` against an oracle: a region open when the program tail-calls
/// is closed at the callee's entry, and counted there both in `count` and in
/// `tail_ends`. The frames take the tail call a known number of times (byte
/// 14, see [`tail_path`]), the other frames end the same region at its END
/// (a failed tail call, no tail call, a frame cut before byte 14). test-run
/// pins itself to one CPU and runs frame by frame, `--repeat` times each,
/// so run i (from 0) is sampled iff i % K == 0; the expected counts are
/// summed from that over the frames' paths. `--sections` (`pre` ends at the
/// tail call, `post` and `leaf` never do) and `--functions` (README: a tail
/// call is an exit, `tc_entry`'s region ends before it, at an END, so no
/// tail end), ktime and perf, 1/1 and 1/4.
#[test]
fn tail_ends_count_the_regions_a_tail_call_closed() {
    use TailPath::*;
    // An irregular pattern of the four paths, so that sampling 1/4 of
    // repeat 3 takes each of them a different number of times.
    let pattern = [
        0x01u8, 0x03, 0x01, 0x00, 0x05, 0xff, 0x01, 0x04, 0x09, 0x02, 0x0b, 0x01, 0x00,
    ];
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for (i, a) in pattern.iter().cycle().take(37).enumerate() {
        if i % 9 == 4 {
            frames.push(vec![0u8; 14]);
            continue;
        }
        let mut f = vec![0u8; 64];
        f[12] = 0x08; // IPv4 ethertype; not looked at, only plausible
        f[14] = *a;
        f[15] = i as u8; // tc_leaf's verdict: odd DROP, even TX
        frames.push(f);
    }
    let paths: Vec<TailPath> = frames.iter().map(|f| tail_path(f)).collect();
    for p in [Short, TailCalled, CallFailed, Plain] {
        assert!(paths.contains(&p), "the frames never take path {p:?}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("tail.pcap");
    inxpect_loader::pcap::write_classic(&pcap, &frames).expect("write the pcap");
    let obj = root()
        .join("testdata/truth/objects/tailcall.clang-O2.o")
        .display()
        .to_string();
    const REPEAT: usize = 3;
    for counter in ["ktime", "perf"] {
        for k in [1usize, 4] {
            // Sampled runs per path, by run index.
            let sampled = |want: &[TailPath]| -> u64 {
                (0..paths.len() * REPEAT)
                    .filter(|i| i % k == 0 && want.contains(&paths[i / REPEAT]))
                    .count() as u64
            };
            let all = sampled(&[Short, TailCalled, CallFailed, Plain]);
            let tail = sampled(&[TailCalled]);
            assert!(tail > 0 && tail < all, "1/{k}: no mix of paths sampled");
            for (mode, expect) in [
                (
                    "--sections",
                    // (region, function) -> (count, tail_ends)
                    vec![
                        (("pre", "tc_entry"), (all, tail)),
                        (("post", "tc_entry"), (sampled(&[CallFailed, Plain]), 0)),
                        (("leaf", "tc_leaf"), (tail, 0)),
                    ],
                ),
                (
                    "--functions",
                    vec![
                        (("tc_entry", "tc_entry"), (all, 0)),
                        (("tc_leaf", "tc_leaf"), (tail, 0)),
                    ],
                ),
            ] {
                let what = format!("{counter} {mode} 1/{k}");
                let v = json(&[
                    "test-run",
                    &obj,
                    "--prog",
                    "tc_entry",
                    mode,
                    "--pcap",
                    &pcap.display().to_string(),
                    "--repeat",
                    &REPEAT.to_string(),
                    "--counter",
                    counter,
                    "--sample",
                    &format!("1/{k}"),
                    "--no-calibrate",
                    "--json",
                ]);
                assert_eq!(
                    v["runs"].as_u64(),
                    Some((paths.len() * REPEAT) as u64),
                    "{what}"
                );
                assert_eq!(v["sampled"].as_u64(), Some(all), "{what}");
                let regions = v["regions"].as_array().expect("regions");
                assert_eq!(regions.len(), expect.len(), "{what}: {v}");
                for ((name, function), (count, tail_ends)) in expect {
                    let r = regions
                        .iter()
                        .find(|r| r["name"] == name && r["function"] == function)
                        .unwrap_or_else(|| panic!("{what}: no region {name}@{function}: {v}"));
                    assert_eq!(
                        (
                            r["count"].as_u64(),
                            r["tail_ends"].as_u64(),
                            r["invalid"].as_u64()
                        ),
                        (Some(count), Some(tail_ends), Some(0)),
                        "{what}: {name}@{function} (count, tail_ends, invalid): {r}"
                    );
                }
            }
        }
    }
}

/// The uninstrumented copy (the default when sampling; `--unsampled-copy`
/// asks for it): every app's sampled-out runs take the program's copy, and
/// the report is the one of `--no-unsampled-copy`: the same runs, the same
/// sampled runs, the same region counts, the same verdict totals
/// (tests/truth.rs and tests/foreign.rs compare frame by frame). The
/// tail-call object's caller keeps one copy, and that is said.
#[test]
fn unsampled_copy_reports_what_the_instrumented_program_does() {
    let n = corpus_frames();
    for app in ["drop", "cms", "nat", "router", "tunnel"] {
        let run = |extra: &[&str]| {
            let mut args = vec![
                "test-run".to_string(),
                object(&format!("{app}.clang-O2-g.o")),
                "--pcap".into(),
                corpus(),
                "--counter".into(),
                "ktime".into(),
                "--sample".into(),
                "1/4".into(),
                "--config".into(),
                root()
                    .join("testdata/packets/config.json")
                    .display()
                    .to_string(),
                "--app".into(),
                app.into(),
                "--json".into(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            json(&a)
        };
        let (plain, copy) = (run(&["--no-unsampled-copy"]), run(&[]));
        assert_eq!(copy["unsampled_copy"].as_bool(), Some(true), "{app}");
        if app == "drop" {
            let asked = run(&["--unsampled-copy"]);
            assert_eq!(asked["unsampled_copy"].as_bool(), Some(true));
            assert_eq!(region_counts(&asked), region_counts(&copy));
        }
        assert!(plain.get("unsampled_copy").is_none(), "{app}");
        assert_eq!(copy["runs"].as_u64(), Some(n), "{app}");
        assert_eq!(copy["sampled"].as_u64(), Some(n.div_ceil(4)), "{app}");
        assert_eq!(copy["runs"], plain["runs"], "{app}");
        assert_eq!(copy["sampled"], plain["sampled"], "{app}");
        assert_eq!(region_counts(&copy), region_counts(&plain), "{app}");
        assert_eq!(
            copy["test_run"]["verdicts"], plain["test_run"]["verdicts"],
            "{app}"
        );
        assert!(
            region_counts(&copy).iter().any(|(_, c)| *c > 0),
            "{app}: nothing counted"
        );
    }
    let o = run(&[
        "test-run",
        &root()
            .join("testdata/foreign/tailcall.clang-O2-g.o")
            .display()
            .to_string(),
        "--prog",
        "entry",
        "--functions",
        "--pcap",
        &corpus(),
        "--counter",
        "ktime",
        "--sample",
        "1/2",
        "--unsampled-copy",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--unsampled-copy: no copy of entry"),
        "the tail-calling program's missing copy is not stated: {err}"
    );
}

/// A program the verifier takes alone but not with its copy (bigloop: ~540K
/// instructions processed per walk, the budget 1M): a sampling session
/// that did not ask for the copy says why it loads without one and
/// measures; one that asked for it is refused, with the way out.
#[test]
fn a_copy_the_verifier_refuses_is_dropped_unless_asked_for() {
    let go = |extra: &[&str]| {
        let mut a = vec!["--sample", "1/4"];
        a.extend_from_slice(extra);
        foreign_test_run("bigloop.clang-O2-g.o", &a)
    };
    let n = corpus_frames();
    let o = go(&[]);
    let r = report("test-run bigloop --sample 1/4", &o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refused with uninstrumented copies")
            && err.contains("loading it without them"),
        "the dropped copy is not stated: {err}"
    );
    assert!(r.get("unsampled_copy").is_none(), "{r}");
    assert_eq!(r["runs"].as_u64(), Some(n), "{r}");
    assert_eq!(r["sampled"].as_u64(), Some(n.div_ceil(4)), "{r}");
    assert_eq!(
        region_counts(&r),
        vec![("loop".into(), n.div_ceil(4))],
        "{r}"
    );
    let o = go(&["--unsampled-copy"]);
    assert!(!o.status.success(), "the copy the user asked for loaded");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("drop --unsampled-copy"),
        "no way out in the refusal: {err}"
    );
}

/// A region in a loop of 2000 passes (sitesloop): with END's statistics
/// inline the verifier's pending branches pass its limit, with END a call
/// they do not. Instrumented here without --stats, the program loads with
/// the call, says so, and counts every pass of every frame; with --stats
/// inline it is refused with the way out.
#[test]
fn inline_statistics_the_verifier_refuses_become_a_call_unless_asked_for() {
    let go = |extra: &[&str]| foreign_test_run("sitesloop.clang-O2-g.o", extra);
    let n = corpus_frames();
    let o = go(&[]);
    let r = report("test-run sitesloop", &o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refused with END's statistics inline")
            && err.contains("too complex")
            && err.contains("loading it with --stats call"),
        "the switch to a call is not stated: {err}"
    );
    assert_eq!(r["runs"].as_u64(), Some(n), "{r}");
    assert_eq!(region_counts(&r), vec![("pass".into(), 2000 * n)], "{r}");
    let o = go(&["--stats", "inline"]);
    assert!(
        !o.status.success(),
        "inline statistics loaded over the limit"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("too complex") && err.contains("instrument with --stats call"),
        "no way out in the refusal: {err}"
    );
}

/// `inxpect test-run` of testdata/foreign/`name` over the corpus, `ktime`,
/// no calibration, JSON, then `extra`.
fn foreign_test_run(name: &str, extra: &[&str]) -> std::process::Output {
    let obj = root()
        .join("testdata/foreign")
        .join(name)
        .display()
        .to_string();
    let pcap = corpus();
    let mut a = vec![
        "test-run",
        obj.as_str(),
        "--pcap",
        pcap.as_str(),
        "--counter",
        "ktime",
        "--no-calibrate",
        "--json",
    ];
    a.extend_from_slice(extra);
    run(&a)
}
