//! Differential tests in the kernel: for every app and clang build, the
//! original and the instrumented object (ktime and perf backends, both
//! modes) give identical verdicts, output packets and map contents over the
//! whole corpus, and the runtime's counters match counts computed here.

use anyhow::{ensure, Context, Result};
use inxpect_rewriter::{instrument, runtime, Counter, Manifest, Mode, Options};
use inxpect_tests::{
    app_maps, attach_perf_events, corpus, load_config, load_object, only_program, percpu_u64,
    populate_app_maps, set_sampling, test_run, testdata, MapEntry,
};
use libbpf_rs::Object;

const VARIANTS: [&str; 4] = ["clang-O2-g", "clang-O2", "clang-O1", "gcc-O2"];

/// test_run runs on the calling CPU: pin it, so per-CPU maps of the two
/// programs are comparable slot by slot.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn check(app: &str, variant: &str, mode: Mode, counter: Counter, shift: u32) -> Result<()> {
    pin_to_cpu0();
    let what = format!("{app}.{variant} {mode:?} {counter:?} 1/{}", 1u32 << shift);
    let cfg = load_config()?;
    let frames = corpus()?;
    let path = testdata().join(format!("objects/{app}.{variant}.o"));
    let input = std::fs::read(&path)?;
    let r = instrument(
        &input,
        &Options {
            mode,
            counter,
            events: 1,
            only: None,
            read_fn: None,
            stats: inxpect_rewriter::Stats::Inline,
            unsampled_copy: false,
            ..Default::default()
        },
    )
    .with_context(|| what.clone())?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out.o");
    std::fs::write(&out, &r.object)?;

    let orig = load_object(&path)?;
    let inst = load_object(&out)
        .with_context(|| format!("{what}: the kernel refused the instrumented object"))?;
    populate_app_maps(&orig, app, &cfg)?;
    populate_app_maps(&inst, app, &cfg)?;
    let _perf = if counter == Counter::Perf {
        attach_perf_events(&inst)?
    } else {
        Vec::new()
    };
    set_sampling(&inst, shift)?;
    let (po, pi) = (only_program(&orig)?, only_program(&inst)?);
    for (i, f) in frames.iter().enumerate() {
        let a = test_run(&po, f)?;
        let b = test_run(&pi, f)?;
        ensure!(
            a == b,
            "{what}: frame {i}: original gave {:?}, instrumented {:?}",
            a.0,
            b.0
        );
    }
    let (ma, mb) = (app_maps(&orig)?, app_maps(&inst)?);
    if let Some((x, y)) = ma.iter().zip(&mb).find(|(x, y)| x != y) {
        anyhow::bail!(
            "{what}: app maps differ after the corpus: {}[{:?}] = {:?} vs {}[{:?}] = {:?}",
            x.0,
            x.1,
            x.2,
            y.0,
            y.1,
            y.2
        );
    }
    let names = |v: &[MapEntry]| {
        v.iter()
            .map(|e| e.0.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    ensure!(
        ma.len() == mb.len(),
        "{what}: app maps have different entries: {:?} vs {:?}",
        names(&ma),
        names(&mb)
    );

    let n = frames.len() as u64;
    let runs = inxpect_tests::runs(&inst)?;
    let sampled = runs.sampled;
    let runs = runs.runs;
    ensure!(runs == n, "{what}: {runs} runs counted for {n} frames");
    // The first run on the CPU, then every 2^shift-th.
    ensure!(
        sampled == (n + (1 << shift) - 1) >> shift,
        "{what}: {sampled} sampled runs, want {}",
        (n + (1 << shift) - 1) >> shift
    );
    check_counts(&what, &inst, &r.manifest, app, n >> shift)
}

/// Regions every sampled run goes through once: the program function in
/// `--functions` mode, every region of `drop`.
fn check_counts(what: &str, inst: &Object, m: &Manifest, app: &str, sampled: u64) -> Result<()> {
    let mut checked = 0;
    for r in &m.regions {
        let always = (m.mode == "functions" && m.programs.contains(&r.name))
            || (app == "drop" && m.mode == "sections");
        if !always {
            continue;
        }
        let c = inxpect_tests::percpu_count(inst, r.id)?;
        ensure!(
            c == sampled,
            "{what}: region {} counted {c}, want {sampled}",
            r.name
        );
        let sum = inxpect_tests::region_stats(inst, r.id)?.sum[0];
        ensure!(
            m.counter == Counter::Perf || sum > 0 || sampled == 0,
            "{what}: region {} measured nothing",
            r.name
        );
        checked += 1;
    }
    ensure!(checked > 0 || app != "drop", "{what}: no region checked");
    Ok(())
}

fn all(app: &str) {
    for variant in VARIANTS {
        for mode in [Mode::Sections, Mode::Functions] {
            for counter in [Counter::Ktime, Counter::Perf] {
                check(app, variant, mode, counter, 0).unwrap_or_else(|e| panic!("{e:#}"));
            }
        }
    }
    // Sampling 1 in 8 on the plain -O2 -g build.
    check(app, "clang-O2-g", Mode::Functions, Counter::Ktime, 3)
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn drop_equivalent() {
    all("drop");
    all("drop_sub");
}
#[test]
fn cms_equivalent() {
    all("cms");
    all("cms_sub");
}
#[test]
fn nat_equivalent() {
    all("nat");
    all("nat_sub");
}
#[test]
fn router_equivalent() {
    all("router");
    all("router_sub");
}
#[test]
fn tunnel_equivalent() {
    all("tunnel");
    all("tunnel_sub");
}

/// Builds without BTF (clang without -g, gcc without -gbtf, gcc -g with
/// DWARF only): the ones that load as they are (`drop`: no map) are
/// rewritten and equivalent over the whole corpus in both modes and both
/// backends; every other app has BTF-defined maps, which libbpf cannot
/// load without BTF: the original is refused, and the rewriter refuses
/// naming the map.
#[test]
fn builds_without_btf_equivalent_or_refused() {
    let mut failed = Vec::new();
    for app in inxpect_tests::APPS {
        for name in [app.to_string(), format!("{app}_sub")] {
            for variant in inxpect_tests::NOBTF_VARIANTS {
                let path = testdata().join(format!("objects/{name}.{variant}.o"));
                let loads = load_object(&path).is_ok();
                // Pinned: a change in either direction is a failure.
                if loads != (name == "drop") {
                    failed.push(format!("{name}.{variant}: the original loads: {loads}"));
                    continue;
                }
                if loads {
                    for mode in [Mode::Sections, Mode::Functions] {
                        for counter in [Counter::Ktime, Counter::Perf] {
                            if let Err(e) = check(&name, variant, mode, counter, 0) {
                                failed.push(format!("{e:#}"));
                            }
                        }
                    }
                    continue;
                }
                let input = std::fs::read(&path).expect("object");
                match instrument(&input, &Options::default()) {
                    Ok(_) => failed.push(format!("{name}.{variant}: rewritten, want a refusal")),
                    Err(e) => {
                        let msg = e.to_string();
                        if !msg.contains("is a BTF-defined map but the object has no .BTF") {
                            failed.push(format!("{name}.{variant}: refused with {msg}"));
                        }
                    }
                }
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Without the module (this host cannot load one), a `tsc`/`pmc` object
/// loads once the loader clears `inxpect_kfuncs`: the verifier drops the
/// kfunc calls, the program behaves as before, and every sampled START is
/// counted as "no counter" rather than measured as zero.
#[test]
fn kfunc_backends_load_without_the_module_when_flagged_off() {
    pin_to_cpu0();
    // events 1: the sites read the kfunc themselves, unguarded in the
    // program (entry stores a known 0 instead), guarded in subprograms
    // (cms_sub: regions in a subprogram and in a loop); 2: through the runtime.
    for (app, counter, events) in [
        ("drop", Counter::Tsc, 1),
        ("drop", Counter::Pmc, 1),
        ("drop", Counter::Pmc, 2),
        ("cms_sub", Counter::Pmc, 1),
        ("cms_sub", Counter::Tsc, 1),
    ] {
        let path = testdata().join(format!("objects/{app}.clang-O2-g.o"));
        let input = std::fs::read(&path).expect("object");
        let opts = Options {
            mode: Mode::Sections,
            counter,
            events,
            only: None,
            read_fn: None,
            stats: inxpect_rewriter::Stats::Inline,
            unsampled_copy: false,
            ..Default::default()
        };
        let r = instrument(&input, &opts).expect("instrument");
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("out.o");
        std::fs::write(&out, &r.object).expect("write");

        // As written (flag 1) the unresolved kfunc call must make the load fail.
        assert!(
            load_object(&out).is_err(),
            "{counter:?}: loaded although the module is absent"
        );

        let mut open = libbpf_rs::ObjectBuilder::default()
            .open_file(&out)
            .expect("open");
        let mut found = false;
        for mut m in open.maps_mut() {
            if m.name().to_string_lossy().ends_with(runtime::MAP_RODATA) {
                let v = m.initial_value_mut().expect("rodata has an initial value");
                let at = runtime::RODATA_KFUNCS_OFFSET;
                v[at..at + 4].copy_from_slice(&0u32.to_ne_bytes());
                found = true;
            }
        }
        assert!(found, "{counter:?}: no {} map", runtime::MAP_RODATA);
        let obj = open.load().expect("loads with the kfuncs flagged off");
        let prog = only_program(&obj).expect("program");
        let orig = load_object(&path).expect("original");
        let orig_prog = only_program(&orig).expect("program");
        let frames = corpus().expect("corpus");
        for f in frames.iter().take(500) {
            assert_eq!(
                test_run(&prog, f).expect("run"),
                test_run(&orig_prog, f).expect("run original"),
                "{app} {counter:?}"
            );
        }
        let none = percpu_u64(&obj, runtime::MAP_PCPU, 0, runtime::pcpu::NO_COUNTER).expect("pcpu");
        // Counted per sampled START by the runtime, or once per sampled run
        // by the program entry when the sites read the counter themselves.
        // (cms_sub: per run at the entry, plus per START in its subprogram.)
        let want = if events == 1 {
            500
        } else {
            r.manifest.regions.len() * 500
        };
        if app == "drop" {
            assert_eq!(
                none as usize, want,
                "{counter:?}/{events}: sampled runs should count a missing counter"
            );
        } else {
            assert!(none as usize >= want, "{app} {counter:?}: {none}");
        }
        let c = inxpect_tests::percpu_count(&obj, 0).expect("stats");
        assert_eq!(
            c, 0,
            "{counter:?}: nothing may be recorded without a counter"
        );
    }
}

/// Identity in the kernel: a rewrite that inserts nothing gives programs
/// whose translated (post-verifier) code equals the input's.
#[test]
fn zero_probe_rewrite_gives_identical_xlated_programs() {
    let dir = tempfile::tempdir().expect("tmp");
    for (name, variant) in inxpect_tests::all_objects() {
        let path = inxpect_tests::object_path(&name, variant);
        let input = std::fs::read(&path).expect("object");
        let out = dir.path().join(format!("{name}.{variant}.o"));
        std::fs::write(
            &out,
            inxpect_rewriter::passthrough(&input).expect("passthrough"),
        )
        .expect("write");
        let (a, b) = (
            load_object(&path).expect("input loads"),
            load_object(&out).expect("output loads"),
        );
        let (pa, pb) = (
            only_program(&a).expect("prog"),
            only_program(&b).expect("prog"),
        );
        assert_eq!(
            inxpect_tests::xlated_insns(&pa).expect("xlated"),
            inxpect_tests::xlated_insns(&pb).expect("xlated"),
            "{name}.{variant}: xlated code differs after a zero-probe rewrite"
        );
    }
}

/// The output is an ordinary object: `bpftool prog loadall` and iproute2's
/// `ip link set dev X xdp obj out.o sec xdp` load it.
#[test]
fn output_loads_with_bpftool_and_ip_link() {
    use std::process::Command;
    let dir = tempfile::tempdir().expect("tmp");
    let input = std::fs::read(testdata().join("objects/router.clang-O2-g.o")).expect("object");
    let r = instrument(&input, &Options::default()).expect("instrument");
    let out = dir.path().join("router.prof.o");
    std::fs::write(&out, &r.object).expect("write");

    let pin = format!("/sys/fs/bpf/inxpect-test-{}", std::process::id());
    let st = Command::new("bpftool")
        .args(["prog", "loadall"])
        .arg(&out)
        .arg(&pin)
        .status()
        .expect("bpftool");
    let _ = std::fs::remove_dir_all(&pin);
    assert!(
        st.success(),
        "bpftool prog loadall refused the instrumented object"
    );

    let ns = format!("inxpect-ip-{}", std::process::id());
    let sh = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .status()
            .expect("ip")
            .success()
    };
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    assert!(sh(&["netns", "add", &ns]));
    let _guard = Ns(ns.clone());
    assert!(sh(&[
        "-n", &ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"
    ]));
    let o = out.to_string_lossy().to_string();
    assert!(
        sh(&[
            "-n",
            &ns,
            "link",
            "set",
            "dev",
            "v0",
            "xdpgeneric",
            "obj",
            &o,
            "sec",
            "xdp"
        ]),
        "ip link refused the object"
    );
    let show = Command::new("ip")
        .args(["-n", &ns, "link", "show", "dev", "v0"])
        .output()
        .expect("ip");
    assert!(
        String::from_utf8_lossy(&show.stdout).contains("xdpgeneric"),
        "no XDP program on v0 after ip link"
    );
    assert!(sh(&[
        "-n",
        &ns,
        "link",
        "set",
        "dev",
        "v0",
        "xdpgeneric",
        "off"
    ]));
}

/// Region shapes the apps may not cover: nested regions, a region in a
/// bounded loop, a region that starts in the program and ends in a
/// subprogram, and early returns inside a region. Each region's count must
/// be what the code executes.
#[test]
fn region_shapes_count_as_executed() {
    pin_to_cpu0();
    let src = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect.h"
char _license[] SEC("license") = "GPL";
volatile int sink;

static __noinline int finish(int v)
{
	sink = v;
	INXPECT_END(across);
	return v & 1;
}

SEC("xdp") int shapes(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	int i, n;

	INXPECT_START(outer);
	INXPECT_START(inner);
	sink = 1;
	INXPECT_END(inner);
	if (data + 1 > end) {
		INXPECT_END(outer);
		return XDP_ABORTED;
	}
	n = *(unsigned char *)data & 7;
	INXPECT_END(outer);
	for (i = 0; i < 8; i++) {
		if (i >= n)
			break;
		INXPECT_START(loop);
		sink += i;
		INXPECT_END(loop);
	}
	INXPECT_START(early);
	if (n == 3) {
		INXPECT_END(early);
		return XDP_DROP;
	}
	INXPECT_END(early);
	INXPECT_START(across);
	return finish(n) ? XDP_PASS : XDP_TX;
}
"#;
    let dir = tempfile::tempdir().expect("tmp");
    let c = dir.path().join("shapes.bpf.c");
    std::fs::write(&c, src).expect("write");
    let o = dir.path().join("shapes.o");
    clang_bpf(&c, &o);
    let input = std::fs::read(&o).expect("object");
    let r = instrument(&input, &Options::default()).expect("instrument");
    let out = dir.path().join("shapes.prof.o");
    std::fs::write(&out, &r.object).expect("write");
    let (orig, inst) = (
        load_object(&o).expect("load"),
        load_object(&out).expect("load instrumented"),
    );
    let (po, pi) = (
        only_program(&orig).expect("prog"),
        only_program(&inst).expect("prog"),
    );

    let mut want: std::collections::BTreeMap<&str, u64> = Default::default();
    for first in 0u8..=255 {
        let mut frame = vec![first; 64];
        frame[1] = 0;
        assert_eq!(
            test_run(&po, &frame).expect("run"),
            test_run(&pi, &frame).expect("run"),
            "frame {first}"
        );
        let n = (first & 7) as u64;
        *want.entry("outer").or_default() += 1;
        *want.entry("inner").or_default() += 1;
        *want.entry("loop").or_default() += n;
        *want.entry("early").or_default() += 1;
        *want.entry("across").or_default() += u64::from(n != 3);
    }
    for reg in &r.manifest.regions {
        let got = inxpect_tests::percpu_count(&inst, reg.id).expect("stats");
        assert_eq!(
            Some(&got),
            want.get(reg.name.as_str()),
            "region {}",
            reg.name
        );
    }
    assert_eq!(
        r.manifest.regions.len(),
        want.len(),
        "{:?}",
        r.manifest.regions
    );
}

/// Programs that are already expensive to verify (branches inside loops)
/// stay under the verifier's limit once instrumented: the runtime's START and
/// END are global functions, verified once rather than at every call site on
/// every path. (Found by the property tests; testdata/foreign/known-failures.)
#[test]
fn costly_programs_still_verify_after_instrumentation() {
    let dir = tempfile::tempdir().expect("tmp");
    for name in ["verifier-blowup", "verifier-limit-nested-regions"] {
        let src = testdata().join(format!("foreign/known-failures/{name}.bpf.c"));
        let o = dir.path().join(format!("{name}.o"));
        clang_bpf(&src, &o);
        let input = std::fs::read(&o).expect("object");
        for mode in [Mode::Sections, Mode::Functions] {
            let r = instrument(
                &input,
                &Options {
                    mode,
                    ..Options::default()
                },
            )
            .expect("instrument");
            let out = dir.path().join(format!("{name}.{mode:?}.o"));
            std::fs::write(&out, &r.object).expect("write");
            load_object(&out).unwrap_or_else(|e| {
                panic!("{name} {mode:?}: the verifier refused the output: {e:#}")
            });
        }
    }
}

/// `clang -O2 -g -target bpf` with the marker header on the include path.
fn clang_bpf(src: &std::path::Path, out: &std::path::Path) {
    let st = std::process::Command::new("clang")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-w",
            "-I/usr/include/x86_64-linux-gnu",
        ])
        .arg(format!(
            "-I{}",
            inxpect_tests::repo_root()
                .join("runtime-bpf/include")
                .display()
        ))
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(out)
        .status()
        .expect("clang runs");
    assert!(st.success(), "clang failed on {}", src.display());
}
