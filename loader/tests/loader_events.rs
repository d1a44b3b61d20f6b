//! `-e` with the vendors' event names (libpfm4), through the CLI. The host
//! has no PMU, so libpfm is given a model with LIBPFM_FORCE_PMU; the
//! encodings themselves are checked against the vendors' tables in
//! loader/src/events.rs (`vendor_names_encode_to_the_documented_values`).

mod common;
use common::*;

fn test_run_with(pmu: &str, event: &str) -> std::process::Output {
    bin()
        .env("LIBPFM_FORCE_PMU", pmu)
        .args([
            "test-run",
            &object("drop.clang-O2.o"),
            "--pcap",
            &corpus(),
            "--counter",
            "perf",
            "--no-calibrate",
            "--json",
            "-e",
            event,
        ])
        .output()
        .expect("running inxpect")
}

#[test]
fn vendor_names_are_accepted() {
    for (pmu, event) in [
        ("skl", "MEM_LOAD_RETIRED.L3_MISS"),
        ("skl", "mem_load_retired.l3_miss:k"),
        ("amd64_fam19h_zen4", "ls_dmnd_fills_from_sys.dram_io_far"),
        (
            "amd64_fam19h_zen3",
            "DEMAND_DATA_CACHE_FILLS_FROM_SYSTEM:MEM_IO_RMT",
        ),
    ] {
        let o = test_run_with(pmu, event);
        let v = report(&format!("{pmu} -e {event}"), &o);
        assert_eq!(v["runs"].as_u64(), Some(corpus_frames()));
        // No PMU here: perf reads cpu-clock instead, and says which event
        // it stands in for (the name was resolved, not refused).
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("cpu-clock software event instead of {event}")),
            "{pmu} {event}: {err}"
        );
    }
}

#[test]
fn unknown_vendor_names_list_close_matches() {
    for (pmu, event, want) in [
        (
            "skl",
            "MEM_LOAD_RETIRED.L3_MIS",
            "unknown unit mask or modifier in event \"MEM_LOAD_RETIRED.L3_MIS\" (PMU skl: Intel Skylake); close: MEM_LOAD_RETIRED.L3_MISS,",
        ),
        (
            "amd64_fam19h_zen4",
            "ls_dmnd_fill_from_sys",
            "unknown event \"ls_dmnd_fill_from_sys\"",
        ),
        (
            "skl",
            "cycles:u",
            "excludes the kernel: XDP and tc programs run in the kernel",
        ),
    ] {
        let o = test_run_with(pmu, event);
        fails_with(&format!("{pmu} -e {event}"), &o, want);
    }
}
