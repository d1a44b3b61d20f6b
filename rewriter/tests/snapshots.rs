//! Snapshots of the rewritten disassembly: every testdata app (clang -O2 -g
//! build, plain and `_sub` variants) in both modes, and each counter backend
//! once. A reviewer reads the probe sequences here: register saves, the
//! region id in r1, the call to the runtime, the restores.

mod common;

use inxpect_rewriter::{dump, instrument, Counter, Mode, Options};

const APPS: [&str; 10] = [
    "drop",
    "drop_sub",
    "cms",
    "cms_sub",
    "nat",
    "nat_sub",
    "router",
    "router_sub",
    "tunnel",
    "tunnel_sub",
];

/// The runtime's functions (runtime-bpf/src/runtime.bpf.c), cut from the
/// user-code snapshots.
const RUNTIME_FUNCS: [&str; 3] = ["__inxpect_start", "__inxpect_end", "__inxpect_end_value"];

fn rewritten(app: &str, mode: Mode, counter: Counter) -> String {
    rewritten_with(app, mode, counter, false)
}

fn rewritten_with(app: &str, mode: Mode, counter: Counter, unsampled_copy: bool) -> String {
    let p = common::root().join(format!("testdata/objects/{app}.clang-O2-g.o"));
    let input = std::fs::read(&p).expect("object");
    let r = instrument(
        &input,
        &Options {
            mode,
            counter,
            events: 1,
            only: None,
            read_fn: None,
            stats: inxpect_rewriter::Stats::Inline,
            unsampled_copy,
            ..Options::default()
        },
    )
    .expect("instrument");
    let text = dump::dump(&r.object, true).expect("dump");
    // The runtime's own code is the committed runtime object: cut it so the
    // snapshot shows the user's code and its probes.
    let mut out = String::new();
    let mut skip = false;
    for l in text.lines() {
        if l.ends_with(':') && !l.starts_with(' ') {
            skip = RUNTIME_FUNCS.contains(&l.trim_end_matches(':'));
        }
        if l.starts_with("section ") {
            skip = false;
        }
        if !skip {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn sections_mode_every_app() {
    for app in APPS {
        insta::assert_snapshot!(
            format!("sections__{app}"),
            rewritten(app, Mode::Sections, Counter::Ktime)
        );
    }
}

#[test]
fn functions_mode_every_app() {
    for app in APPS {
        insta::assert_snapshot!(
            format!("functions__{app}"),
            rewritten(app, Mode::Functions, Counter::Ktime)
        );
    }
}

#[test]
fn each_backend_links_its_runtime() {
    for c in [Counter::Ktime, Counter::Perf, Counter::Tsc, Counter::Pmc] {
        let p = common::root().join("testdata/objects/drop.clang-O2-g.o");
        let input = std::fs::read(&p).expect("object");
        let r = instrument(
            &input,
            &Options {
                mode: Mode::Sections,
                counter: c,
                events: 1,
                only: None,
                read_fn: None,
                stats: inxpect_rewriter::Stats::Inline,
                unsampled_copy: false,
                ..Options::default()
            },
        )
        .expect("instrument");
        let full = dump::dump(&r.object, true).expect("dump");
        insta::assert_snapshot!(format!("backend__{}", c.name()), full);
    }
}

/// `--unsampled-copy`: the entry's sampled-out path (restore, `goto` the
/// copy) and the copy after the program's last instruction, with `tsc`
/// (the kfunc backend keeps the no-module path) and `ktime` (it has none).
#[test]
fn unsampled_copy() {
    for (app, c) in [("drop", Counter::Tsc), ("cms", Counter::Ktime)] {
        insta::assert_snapshot!(
            format!("copy__{app}_{}", c.name()),
            rewritten_with(app, Mode::Sections, c, true)
        );
    }
}
