//! Bad input: one clear `inxpect: error:` line, non-zero exit.

mod common;
use common::*;

fn data(n: &str) -> String {
    root()
        .join("loader/tests/data")
        .join(n)
        .display()
        .to_string()
}

#[test]
fn object_without_regions() {
    fails(
        &[
            "test-run",
            &data("plain.bpf.o"),
            "--pcap",
            &corpus(),
            "--counter",
            "ktime",
        ],
        "no INXPECT_START/INXPECT_END markers",
    );
}

#[test]
fn not_an_xdp_program() {
    fails(
        &[
            "test-run",
            &data("socket.bpf.o"),
            "--pcap",
            &corpus(),
            "--counter",
            "ktime",
        ],
        "not XDP",
    );
}

#[test]
fn unknown_event() {
    fails(
        &[
            "test-run",
            &object("drop.clang-O2.o"),
            "--pcap",
            &corpus(),
            "--counter",
            "perf",
            "-e",
            "no-such-event",
        ],
        "unknown event \"no-such-event\"",
    );
}

#[test]
fn events_need_pmc_or_perf() {
    fails(
        &[
            "test-run",
            &object("drop.clang-O2.o"),
            "--pcap",
            &corpus(),
            "--counter",
            "ktime",
            "-e",
            "cycles",
        ],
        "applies to the pmc and perf counters",
    );
}

#[test]
fn module_counters_without_module() {
    for c in ["tsc", "pmc"] {
        fails(
            &[
                "test-run",
                &object("drop.clang-O2.o"),
                "--pcap",
                &corpus(),
                "--counter",
                c,
            ],
            "needs the inxpect kernel module",
        );
    }
}

#[test]
fn missing_device() {
    fails(
        &[
            "run",
            &object("drop.clang-O2.o"),
            "--dev",
            "inxpect-none0",
            "--counter",
            "ktime",
            "--duration",
            "1s",
        ],
        "no network device \"inxpect-none0\"",
    );
}

#[test]
fn unknown_region_and_bad_sample() {
    fails(
        &[
            "test-run",
            &object("drop.clang-O2.o"),
            "--pcap",
            &corpus(),
            "--counter",
            "ktime",
            "--regions",
            "nope",
        ],
        "no region \"nope\"",
    );
    fails(
        &[
            "test-run",
            &object("drop.clang-O2.o"),
            "--pcap",
            &corpus(),
            "--counter",
            "ktime",
            "--sample",
            "1/3",
        ],
        "power of two",
    );
}

#[test]
fn missing_files() {
    fails(
        &["test-run", "/nonexistent.o", "--pcap", &corpus()],
        "reading /nonexistent.o",
    );
    fails(
        &[
            "test-run",
            &object("drop.clang-O2.o"),
            "--pcap",
            "/nonexistent.pcap",
        ],
        "reading /nonexistent.pcap",
    );
}

#[test]
fn module_commands_explain_this_kernel() {
    let o = run(&["module", "status", "--json"]);
    assert!(o.status.success());
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(s["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    let modules = std::path::Path::new("/proc/modules").exists();
    assert_eq!(s["modules_supported"].as_bool(), Some(modules));
    if !modules {
        fails(
            &["module", "load", "--path", "/dev/null"],
            "modules disabled",
        );
        fails(&["module", "unload"], "modules disabled");
    }
}
