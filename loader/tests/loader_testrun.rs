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
        "--pcap",
        &corpus(),
        "--counter",
        "ktime",
        "--json",
    ]);
    let ev = &v["regions"][0]["events"][0];
    let raw = ev["raw"]["min"].as_f64().unwrap();
    let cal = ev["calibrated"]["min"].as_f64().unwrap();
    let off = v["calibration"]["offset"][0].as_f64().unwrap();
    assert!(raw > 0.0 && off > 0.0, "{v}");
    assert!((raw - off - cal).abs() < 1e-6);
    let mean = ev["raw"]["mean"].as_f64().unwrap();
    let cal_mean = ev["calibrated"]["mean"].as_f64().unwrap();
    assert!((mean - off - cal_mean).abs() < 1e-6);
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
