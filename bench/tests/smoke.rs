//! Runs the harness on a tiny setting so it cannot rot: one app, a small
//! repeat, one round, no rewriter bench. Needs root (BPF, perf_event_open).

use std::process::Command;

#[test]
fn smoke_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("B.md");
    let plots = dir.path().join("plots");
    let st = Command::new(env!("CARGO_BIN_EXE_inxpect-bench"))
        .args([
            "all",
            "--apps",
            "drop",
            "--repeat",
            "200",
            "--single-calls",
            "10",
        ])
        .args(["--rounds", "1", "--no-rewrite", "--no-vm", "--out"])
        .arg(&out)
        .arg("--plots")
        .arg(&plots)
        .status()
        .expect("run inxpect-bench");
    assert!(st.success());
    let md = std::fs::read_to_string(&out).expect("report");
    for h in [
        "## Machine",
        "## Targets",
        "## 1. Per-packet overhead",
        "## 2. Instruction noise",
        "## 3. Verifier cost",
        "## 4. Rewriter speed",
        "## 5. In the VM",
    ] {
        assert!(md.contains(h), "missing {h}");
    }
    // Overhead rows: base + ktime/perf/perf-mech at 4 shifts + ktime whole
    // + ktime with copies at 1/64, per method (repeat, fresh frame, live
    // frames); instrumented ns > 0 and above nothing absurd.
    // A kernel that refuses live frames (EPERM) gets the report's line
    // saying so in place of that table, and two methods.
    let methods = if md.contains(inxpect_bench::LIVE_REFUSED) {
        2
    } else {
        3
    };
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| drop | #")).collect();
    assert_eq!(rows.len(), methods * (1 + 3 * 4 + 1 + 1), "{rows:#?}");
    for r in &rows {
        let c: Vec<&str> = r.split('|').map(str::trim).collect();
        let ns: f64 = c[5].parse().expect("ns");
        let base: f64 = c[6].parse().expect("base ns");
        assert!(ns > 0.0 && ns < 1e6 && base > 0.0, "{r}");
        // "-": live frames carry the verdict out rather than return it.
        assert!(c[8] == "DROP" || c[8] == "-", "{r}");
        // The % column is throughput relative to the baseline measured in the
        // same round: base/ns. No bound on the value itself: on a noisy
        // machine a time ratio is a figure, not a pass/fail criterion.
        let pct: f64 = c[7].trim_end_matches('%').parse().expect("pct");
        // (one round: the median ratio is that round's ratio; the table
        // rounds ns to 0.05, hence the relative slack.)
        let want = 100.0 * base / ns;
        assert!(
            (pct - want).abs() <= want * (0.06 / ns + 0.06 / base) + 0.06,
            "{r}"
        );
    }
    // Noise rows for the four counters, JIT paths found.
    for c in ["`tsc`", "`pmc`", "`ktime`", "`perf`"] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {c} |")))
            .unwrap_or_else(|| panic!("noise row {c}"));
        let n: usize = row.split('|').nth(2).unwrap().trim().parse().unwrap();
        assert!((5..500).contains(&n), "{row}");
    }
    // Verifier: 6 rows, instrumented verify more instructions.
    let v: Vec<&str> = md.lines().filter(|l| l.starts_with("| drop | ")).collect();
    assert!(v.iter().any(|l| l.contains("uninstrumented")));
    for p in [
        "overhead_every_packet.svg",
        "sampling_ktime.svg",
        "noise.svg",
    ] {
        let svg = std::fs::read_to_string(plots.join(p)).expect("plot");
        assert!(svg.starts_with("<svg") && svg.contains("<rect"), "{p}");
    }
}
