//! Linux before 6.3 takes a loop only when the edge that closes it is a
//! jump (`check_cfg`: "back-edge from insn A to B" on a fall-through into
//! an instruction still on the walk). Every function of every runtime
//! object, and of every committed object instrumented with every backend,
//! must pass that check: Linux 6.1's verifier refused the 4-event runtime
//! twice (a rotated statistics loop entered in its middle), seen only in
//! the arm64 6.1 VM test. This finds it on the host.

mod common;

use inxpect_rewriter::cfg::{functions, graph, old_kernel_back_edge};
use inxpect_rewriter::elf::Elf;
use inxpect_rewriter::{instrument, runtime, Counter, Mode, Options};

/// Every function of `obj` against 6.1's check: how many there are, or
/// why the object does not pass (does not parse, or the edge refused).
fn refused(obj: &[u8]) -> Result<usize, String> {
    let elf = Elf::parse(obj).map_err(|e| e.to_string())?;
    let funcs = functions(&elf).map_err(|e| e.to_string())?;
    for f in &funcs {
        let g = graph(&elf, f).map_err(|e| format!("{}: {e}", f.name))?;
        if let Some((a, b)) = old_kernel_back_edge(&g) {
            return Err(format!(
                "function {} (section {}): Linux 6.1 refuses the fall-through \
                 back-edge from slot {} to {} (function-relative {a} -> {b})",
                f.name,
                elf.sections[f.sec].name,
                f.start + a,
                f.start + b
            ));
        }
    }
    Ok(funcs.len())
}

/// [`refused`], asserted; `what` names the object in failures.
fn check(obj: &[u8], what: &str) -> usize {
    refused(obj).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn backends() -> Vec<(Counter, usize)> {
    let mut v = vec![(Counter::Ktime, 1), (Counter::Tsc, 1), (Counter::Perf, 1)];
    v.extend((1..=runtime::MAX_EVENTS).map(|n| (Counter::Pmc, n)));
    v
}

#[test]
fn runtime_objects_pass_linux_6_1_cfg_check() {
    for (c, n) in backends() {
        let funcs = check(runtime::object(c, n), &format!("runtime {} x{n}", c.name()));
        assert!(funcs >= 4, "runtime {} x{n}: {funcs} functions", c.name());
    }
}

#[test]
fn instrumented_objects_pass_linux_6_1_cfg_check() {
    let mut checked = 0;
    // The apps, and the calibration programs the loader instruments and
    // loads on every kernel.
    let calib = ["empty", "nest"].map(|c| common::root().join(format!("loader/calib/{c}.bpf.o")));
    for path in common::objects().into_iter().chain(calib) {
        let input = std::fs::read(&path).expect("read object");
        // Objects whose input already has such an edge are the user's.
        if refused(&input).is_err() {
            continue;
        }
        for (counter, events) in backends() {
            for mode in [Mode::Sections, Mode::Functions] {
                let opts = Options {
                    mode,
                    counter,
                    events,
                    only: None,
                    read_fn: None,
                    stats: inxpect_rewriter::Stats::Inline,
                    unsampled_copy: false,
                    ..Default::default()
                };
                // Objects made to be refused (tests/errors.rs) fail here too.
                let Ok(out) = instrument(&input, &opts) else {
                    continue;
                };
                check(
                    &out.object,
                    &format!(
                        "{} ({mode:?}, {} x{events})",
                        path.display(),
                        counter.name()
                    ),
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 200,
        "only {checked} instrumented objects checked"
    );
}
