//! The region tree against apps whose nesting and counts are known from
//! their source (testdata/truth): paths, parents and counts must match a
//! model of the program run on the same frames, and the self values must
//! be what the report says they are (total less the children's totals and
//! probe costs), down to the folded stacks.

mod common;
use common::*;

use std::collections::BTreeMap;

use serde_json::Value;

fn truth(app: &str) -> String {
    root()
        .join(format!("testdata/truth/objects/{app}.clang-O2.o"))
        .display()
        .to_string()
}

/// Frames of 14 to 16 bytes and of 64 bytes with every value of bytes 14
/// and 15 (what the truth apps branch on), written to a pcap in `dir`.
fn frames(dir: &std::path::Path) -> (String, Vec<Vec<u8>>) {
    let mut fs = vec![vec![0u8; 14], vec![1u8; 15], vec![3u8; 16]];
    for a in 0..=255u8 {
        for b in [0u8, 1, 2, 3, 7, 128] {
            let mut f = vec![0u8; 64];
            f[14] = a;
            f[15] = b;
            fs.push(f);
        }
    }
    let p = dir.join("frames.pcap");
    inxpect_loader::pcap::write_classic(&p, &fs).expect("pcap");
    (p.display().to_string(), fs)
}

fn test_run(obj: &str, pcap: &str, extra: &[&str]) -> std::process::Output {
    let mut a = vec!["test-run", obj, "--pcap", pcap, "--counter", "ktime"];
    a.extend_from_slice(extra);
    run(&a)
}

/// The tree of a JSON report, by path.
fn tree(v: &Value) -> BTreeMap<String, Value> {
    v["tree"]
        .as_array()
        .unwrap_or_else(|| panic!("no tree: {v}"))
        .iter()
        .map(|n| {
            let p: Vec<&str> = n["path"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            (p.join(";"), n.clone())
        })
        .collect()
}

/// Path and count of every node.
fn counts(t: &BTreeMap<String, Value>) -> Vec<(&str, u64)> {
    t.iter()
        .map(|(p, n)| (p.as_str(), n["count"].as_u64().unwrap()))
        .collect()
}

/// What child `c` (at `path`) is charged per measurement: the nesting
/// calibration's child it fits, one where it sits (program code or a
/// subprogram), at that child's measured cost (time events: no
/// instruction difference is added), or without a fit the cost of where it
/// sits.
fn charge(nest: &Value, path: &str, c: &Value, in_program: bool) -> f64 {
    let cost = c["charge"]["cost"][0]
        .as_f64()
        .unwrap_or_else(|| panic!("{path}: no charge: {c}"));
    let want = match c["charge"]["shape"].as_str() {
        Some(shape) => {
            assert_eq!(
                !shape.starts_with("sub_"),
                in_program,
                "{path}: charged as {shape}"
            );
            nest["shapes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["region"] == shape)
                .unwrap_or_else(|| panic!("{path}: {shape} is not a calibration child"))["offset"]
                [0]
            .as_f64()
            .unwrap()
        }
        None if in_program => nest["program"][0].as_f64().unwrap(),
        None => nest["subprogram"][0].as_f64().unwrap(),
    };
    assert_eq!(cost, want, "{path}: charge");
    cost
}

/// Every node's self is its total less its children's totals and their
/// probes' cost (each child's charge, checked by `charge`), and
/// `--folded` prints exactly the nodes with their rounded self.
fn check_self(v: &Value, folded: &str, in_program: &dyn Fn(&str) -> bool) {
    let t = tree(v);
    let nest = &v["calibration"]["nested"];
    for (path, n) in &t {
        let mut want = n["total"][0].as_f64().unwrap();
        for (cpath, c) in &t {
            if c["parent"] == n["id"] {
                let leaf = cpath.rsplit(';').next().unwrap();
                let cost = charge(nest, cpath, c, in_program(leaf));
                want -= c["total"][0].as_f64().unwrap() + c["count"].as_f64().unwrap() * cost;
            }
        }
        let got = n["self"][0]
            .as_f64()
            .unwrap_or_else(|| panic!("{path}: no self: {n}"));
        assert!(
            (got - want).abs() < 1e-6 * want.abs().max(1.0),
            "{path}: self {got}, want {want}"
        );
    }
    let lines: BTreeMap<String, f64> = folded
        .lines()
        .map(|l| {
            let (p, v) = l.rsplit_once(' ').expect("path value");
            (p.to_string(), v.parse().expect("a number"))
        })
        .collect();
    let with_count: Vec<&String> = t
        .keys()
        .filter(|p| t[*p]["count"].as_u64() > Some(0))
        .collect();
    assert_eq!(lines.keys().collect::<Vec<_>>(), with_count, "{folded}");
    for (p, v) in &lines {
        let s = t[p]["self"][0].as_f64().unwrap();
        assert_eq!(*v, s.round().max(0.0), "{p}");
    }
}

#[test]
fn nested_sections_tree_matches_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, fs) = frames(dir.path());
    let obj = truth("nest");
    let o = test_run(&obj, &pcap, &["--json"]);
    let v = report("test-run nest", &o);
    // The model of nest.bpf.c: outer on every run; mid when byte 14 exists
    // and is odd; inner when also byte 15 exists and is odd.
    let byte = |f: &Vec<u8>, i: usize| f.get(i).copied().map(i32::from).unwrap_or(-1);
    let outer = fs.len() as u64;
    let mid = fs
        .iter()
        .filter(|f| byte(f, 14) >= 0 && byte(f, 14) & 1 == 1)
        .count() as u64;
    let inner = fs
        .iter()
        .filter(|f| {
            byte(f, 14) >= 0 && byte(f, 14) & 1 == 1 && byte(f, 15) >= 0 && byte(f, 15) & 1 == 1
        })
        .count() as u64;
    // The nesting calibration measured a child of each probe shape, and
    // nest's children fit one (no approximate charge).
    let shapes: Vec<&str> = v["calibration"]["nested"]["shapes"]
        .as_array()
        .expect("nesting shapes")
        .iter()
        .map(|s| s["region"].as_str().unwrap())
        .collect();
    assert_eq!(
        shapes,
        [
            "child",
            "sub_child",
            "child_busy",
            "sub_child_busy",
            "child_slow",
            "child_slow_busy",
            "child_word",
            "child_word_busy"
        ],
        "{v}"
    );
    let t = tree(&v);
    for (path, n) in &t {
        assert!(
            !n["why"].as_str().unwrap_or("").contains("approximate"),
            "{path}: {n}"
        );
    }
    let got = counts(&t);
    assert_eq!(
        got,
        vec![
            ("nest;outer", outer),
            ("nest;outer;mid", mid),
            ("nest;outer;mid;inner", inner)
        ],
        "{v}"
    );
    assert!(t["nest;outer"]["parent"].is_null());
    assert_eq!(t["nest;outer;mid"]["parent"], t["nest;outer"]["id"]);
    assert_eq!(
        t["nest;outer;mid;inner"]["parent"],
        t["nest;outer;mid"]["id"]
    );
    let f = test_run(&obj, &pcap, &["--folded"]);
    assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stderr));
    // The folded run measures again: compare its paths and its own JSON.
    let folded = String::from_utf8_lossy(&f.stdout).to_string();
    let paths: Vec<&str> = folded
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect();
    assert_eq!(
        paths,
        ["nest;outer", "nest;outer;mid", "nest;outer;mid;inner"]
    );
    // Within one report: self adds up, folded lines are the self values.
    let fv = test_run(
        &obj,
        &pcap,
        &[
            "--json",
            "--flamegraph",
            &dir.path().join("n.svg").display().to_string(),
        ],
    );
    let fv_json = report("test-run nest --flamegraph", &fv);
    let svg = std::fs::read_to_string(dir.path().join("n.svg")).expect("the SVG");
    // Each frame of the picture is as wide as its subtree's self values.
    let t = tree(&fv_json);
    let selfv = |p: &str| t[p]["self"][0].as_f64().unwrap().round().max(0.0);
    for p in t.keys() {
        let under: f64 = t
            .keys()
            .filter(|q| *q == p || q.starts_with(&format!("{p};")))
            .map(|q| selfv(q))
            .sum();
        let leaf = p.rsplit(';').next().unwrap();
        let shown = svg
            .split(&format!("<title>{leaf} ("))
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .map(|n| n.replace(',', "").parse::<f64>().unwrap());
        if under > 0.0 {
            assert_eq!(shown, Some(under), "{p} in the flame graph");
        }
    }
    let folded_of = |v: &Value| -> String {
        tree(v)
            .iter()
            .filter(|(_, n)| n["count"].as_u64() > Some(0))
            .map(|(p, n)| format!("{p} {}\n", n["self"][0].as_f64().unwrap().round().max(0.0)))
            .collect()
    };
    check_self(&fv_json, &folded_of(&fv_json), &|_| true);
}

/// An object instrumented here with `--stats call` (END's statistics always
/// a call) is calibrated with objects instrumented the same way: its
/// children's probes fit a measured shape (no approximate charge), and the
/// counts are the model's as with the inline statistics. An object already
/// instrumented keeps its own choice: asking for the other is an error.
#[test]
fn stats_call_is_calibrated_by_its_own_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, fs) = frames(dir.path());
    let obj = truth("nest");
    let inline = report("test-run nest", &test_run(&obj, &pcap, &["--json"]));
    let call = report(
        "test-run nest --stats call",
        &test_run(&obj, &pcap, &["--json", "--stats", "call"]),
    );
    let t = tree(&call);
    for (path, n) in &t {
        assert!(
            !n["why"].as_str().unwrap_or("").contains("approximate"),
            "{path}: {n}"
        );
    }
    assert_eq!(counts(&t), counts(&tree(&inline)), "{call}");
    assert_eq!(counts(&t)[0].1, fs.len() as u64);
    // The child's probes differ between the two (a call in place of the
    // inline code): each run charges its own calibrated cost.
    let child = |v: &Value| v["calibration"]["nested"]["program"][0].as_f64();
    assert!(child(&call).is_some() && child(&inline).is_some(), "{call}");
    let out = dir.path().join("nest.inline.o");
    let done = inxpect_rewriter::instrument(
        &std::fs::read(&obj).unwrap(),
        &inxpect_rewriter::Options::default(),
    )
    .unwrap();
    assert_eq!(done.manifest.stats, inxpect_rewriter::Stats::Inline);
    std::fs::write(&out, done.object).unwrap();
    let o = test_run(
        &out.display().to_string(),
        &pcap,
        &["--json", "--stats", "call"],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already instrumented with --stats inline, not call"),
        "{err}"
    );
}

/// mix() of call.bpf.c.
fn mix(x: u32) -> u32 {
    x.wrapping_mul(2_654_435_761) >> 28
}

#[test]
fn functions_tree_is_the_call_graph() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, fs) = frames(dir.path());
    let obj = truth("call");
    let v = report(
        "test-run call --functions",
        &test_run(&obj, &pcap, &["--functions", "--json"]),
    );
    // The model of call.bpf.c: mix runs once when byte 14 exists, and again
    // when that first result is odd.
    let calls: u64 = fs
        .iter()
        .filter_map(|f| f.get(14).copied())
        .map(|a| 1 + u64::from(mix(u32::from(a)) & 1))
        .sum();
    let t = tree(&v);
    let got = counts(&t);
    assert_eq!(
        got,
        vec![("call", fs.len() as u64), ("call;mix", calls)],
        "{v}"
    );
    assert_eq!(t["call;mix"]["parent"], t["call"]["id"]);
    let folded = t
        .iter()
        .map(|(p, n)| format!("{p} {}\n", n["self"][0].as_f64().unwrap().round().max(0.0)))
        .collect::<String>();
    check_self(&v, &folded, &|leaf| leaf == "call");
}

#[test]
fn folded_needs_calibration() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, _) = frames(dir.path());
    fails(
        &[
            "test-run",
            &truth("nest"),
            "--pcap",
            &pcap,
            "--counter",
            "ktime",
            "--folded",
            "--no-calibrate",
        ],
        "the self value of nest;outer is unknown: no calibration",
    );
}

/// tests/data/ambiguous.bpf.c: helper's region runs once inside `outer`
/// and once outside. The tree says it cannot place it, outer's self is
/// unknown, and --folded refuses naming the region.
#[test]
fn ambiguous_nesting_is_reported_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, fs) = frames(dir.path());
    let obj = root()
        .join("loader/tests/data/ambiguous.bpf.o")
        .display()
        .to_string();
    let v = report("test-run ambiguous", &test_run(&obj, &pcap, &["--json"]));
    let t = tree(&v);
    let inner = &t["xdp_ambiguous;helper;inner"];
    assert_eq!(inner["count"].as_u64(), Some(2 * fs.len() as u64), "{v}");
    assert_eq!(inner["placed"], false, "{inner}");
    assert!(
        inner["why"]
            .as_str()
            .unwrap()
            .contains("may run inside xdp_ambiguous:outer or no region"),
        "{inner}"
    );
    let outer = &t["xdp_ambiguous;outer"];
    assert!(outer["self"].is_null(), "{outer}");
    fails(
        &[
            "test-run",
            &obj,
            "--pcap",
            &pcap,
            "--counter",
            "ktime",
            "--folded",
        ],
        "where xdp_ambiguous;helper;inner runs in the tree is unknown",
    );
}

#[test]
fn flamegraph_path_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, _) = frames(dir.path());
    let base = ["test-run", "--pcap", &pcap, "--counter", "ktime"];
    let nest = truth("nest");
    let mut a = base.to_vec();
    a.extend([nest.as_str(), "--flamegraph", "/nonexistent-dir/x.svg"]);
    fails(&a, "/nonexistent-dir/x.svg");
    let mut a = base.to_vec();
    a.extend([nest.as_str(), "--flamegraph", "x.png"]);
    fails(&a, "--flamegraph x.png: expected a .svg path");
}
