//! `inxpect-bench`: runs the benchmarks and writes BENCHMARKS.md and
//! `bench/plots/*.svg`.
//!
//!     sudo cargo run --release -p inxpect-bench -- all
//!     inxpect-bench all --apps drop --repeat 1000 --single-calls 20 --rounds 1 \
//!         --out /tmp/B.md --plots /tmp/plots --no-rewrite      # the smoke setting

use anyhow::{bail, Context, Result};
use inxpect_bench::report::{self, Group};
use inxpect_bench::{
    machine, noise, overhead, pin_to_cpu, verifier, Method, NoiseRow, OverheadCfg, OverheadRow,
    Variant,
};
use inxpect_rewriter::Counter;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Args {
    cfg: OverheadCfg,
    out: PathBuf,
    plots: PathBuf,
    rewrite: Rewrite,
}

enum Rewrite {
    Run,
    Skip,
    From(PathBuf),
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

fn parse() -> Result<Args> {
    let mut a = std::env::args().skip(1);
    let cmd = a.next().unwrap_or_default();
    if cmd != "all" {
        bail!("usage: inxpect-bench all [--apps a,b] [--repeat N] [--single-calls N] [--rounds N] [--out FILE] [--plots DIR] [--no-rewrite | --rewrite-table FILE]");
    }
    let mut args = Args {
        cfg: OverheadCfg::default(),
        out: root().join("BENCHMARKS.md"),
        plots: root().join("bench/plots"),
        rewrite: Rewrite::Run,
    };
    while let Some(o) = a.next() {
        let mut val = || a.next().with_context(|| format!("{o} needs a value"));
        match o.as_str() {
            "--apps" => args.cfg.apps = val()?.split(',').map(str::to_string).collect(),
            "--repeat" => args.cfg.repeat = val()?.parse()?,
            "--single-calls" => args.cfg.single_calls = val()?.parse()?,
            "--rounds" => args.cfg.rounds = val()?.parse()?,
            "--out" => args.out = val()?.into(),
            "--plots" => args.plots = val()?.into(),
            "--no-rewrite" => args.rewrite = Rewrite::Skip,
            "--rewrite-table" => args.rewrite = Rewrite::From(val()?.into()),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(args)
}

fn rewrite_table(how: &Rewrite) -> Result<Option<String>> {
    let out = match how {
        Rewrite::Skip => return Ok(None),
        Rewrite::From(p) => std::fs::read_to_string(p)?,
        Rewrite::Run => {
            eprintln!("inxpect-bench: cargo bench -p inxpect-rewriter --bench rewrite");
            let o = Command::new(env!("CARGO"))
                .args(["bench", "-p", "inxpect-rewriter", "--bench", "rewrite"])
                .current_dir(root())
                .output()
                .context("cargo bench")?;
            if !o.status.success() {
                bail!("cargo bench failed: {}", String::from_utf8_lossy(&o.stderr));
            }
            String::from_utf8_lossy(&o.stdout).into_owned()
        }
    };
    Ok(Some(
        out.lines()
            .filter(|l| l.starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    ))
}

fn find<'a>(
    rows: &'a [OverheadRow],
    app: &str,
    m: Method,
    v: Variant,
    shift: u32,
) -> Option<&'a OverheadRow> {
    rows.iter()
        .find(|r| r.app == app && r.method == m && r.variant == v && r.shift == shift)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// Parses `| insns | rewrite (s) | insns/s | link (s) | rewrite/link | per insn vs first | rss |`.
fn rewrite_rows(t: &str) -> Vec<Vec<String>> {
    t.lines()
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn parse_m(s: &str) -> f64 {
    if let Some(x) = s.strip_suffix('M') {
        x.parse::<f64>().unwrap_or(0.0) * 1e6
    } else if let Some(x) = s.strip_suffix('k') {
        x.parse::<f64>().unwrap_or(0.0) * 1e3
    } else {
        s.parse().unwrap_or(0.0)
    }
}

fn targets(rows: &[OverheadRow], noise: &[NoiseRow], rw: Option<&str>) -> String {
    let mut s = String::from("| target | measured | verdict |\n|---|---|---|\n");
    if let Some(p) = noise.iter().find(|n| n.counter == "pmc") {
        let n = p.jit + p.extra;
        let _ = writeln!(
            s,
            "| empty-region noise with `pmc` <= 10 x86 insns raw | {n} ({} JIT + {} kfunc/argument) | {} |",
            p.jit,
            p.extra,
            met(n <= 10)
        );
    }
    // Both methods: `repeat` (hot loop, but one buffer: nat/router/tunnel
    // leave their full path after the first runs) and fresh frame.
    let both = |app: &str, v: Variant, shift: u32, f: &dyn Fn(&OverheadRow) -> (f64, bool)| {
        let mut meas = Vec::new();
        let mut verdicts = Vec::new();
        for (m, name) in [
            (Method::Repeat, "repeat"),
            (Method::Single, "fresh frame"),
            (Method::Live, "live frames"),
        ] {
            if let Some(r) = find(rows, app, m, v, shift) {
                let (x, ok) = f(r);
                meas.push(format!("{name}: {x:.1}%"));
                verdicts.push(format!("{} ({name})", met(ok)));
            }
        }
        (meas.join(" / "), verdicts.join(", "))
    };
    for app in ["cms", "nat", "router", "tunnel"] {
        for c in [Counter::Ktime, Counter::Perf] {
            let (m, v) = both(app, Variant::Sections(c), 0, &|r| {
                (100.0 * r.kept, r.kept >= 0.75)
            });
            if !m.is_empty() {
                let _ = writeln!(
                    s,
                    "| every packet (1/1), {app}, `{}`: >= 75% of baseline | {m} | {v} |",
                    c.name()
                );
            }
        }
    }
    for app in ["drop", "cms", "nat", "router", "tunnel"] {
        let goal = if app == "drop" { 0.90 } else { 0.97 };
        let (m, v) = both(app, Variant::Sections(Counter::Ktime), 6, &|r| {
            (100.0 * r.kept, r.kept >= goal)
        });
        if !m.is_empty() {
            let _ = writeln!(
                s,
                "| 1/64 sampling, {app}, `ktime`: >= {:.0}% | {m} | {v} |",
                goal * 100.0
            );
        }
    }
    for app in ["drop", "cms", "nat", "router", "tunnel"] {
        for (m, name) in [
            (Method::Repeat, "repeat"),
            (Method::Single, "fresh frame"),
            (Method::Live, "live frames"),
        ] {
            let (Some(k), Some(p)) = (
                find(rows, app, m, Variant::Whole(Counter::Ktime), 0),
                find(rows, app, m, Variant::Whole(Counter::Perf), 0),
            ) else {
                continue;
            };
            let ours = k.ns - k.base_ns;
            let perf = p.ns - p.base_ns;
            let ratio = ours / perf;
            let _ = writeln!(
                s,
                "| probe pair <= 0.2x perf's read pair, {app}, {name} (`ktime` one region vs perf's 2 reads, each minus baseline) | {ours:.1} ns vs {perf:.1} ns = {ratio:.2}x | {} |",
                met(ratio <= 0.2)
            );
        }
    }
    if let Some(t) = rw {
        let rr = rewrite_rows(t);
        let speeds: Vec<f64> = rr
            .iter()
            .filter_map(|r| r.get(2))
            .map(|x| parse_m(x))
            .collect();
        let min = speeds.iter().copied().fold(f64::INFINITY, f64::min);
        let per: Vec<f64> = rr
            .iter()
            .filter_map(|r| r.get(5))
            .filter_map(|x| x.parse().ok())
            .collect();
        let lin = per.iter().all(|&x| x <= 1.5);
        let vs: Vec<f64> = rr
            .iter()
            .filter_map(|r| r.get(4))
            .filter_map(|x| x.parse().ok())
            .collect();
        let worst = vs.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            s,
            "| rewriting >= 1M insns/s | slowest size {:.2}M insns/s | {} |",
            min / 1e6,
            met(min >= 1e6)
        );
        let _ = writeln!(
            s,
            "| rewriting linear in size | time per insn vs 10k: {} | {} |",
            per.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            met(lin)
        );
        let _ = writeln!(
            s,
            "| rewriting no slower than the libbpf linker | rewrite/link time up to {worst:.1}x | {} |",
            met(worst <= 1.0)
        );
    }
    s
}

fn plots(rows: &[OverheadRow], noise: &[NoiseRow], dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let apps: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for r in rows {
            if !v.contains(&r.app) {
                v.push(r.app.clone());
            }
        }
        v
    };
    let m = Method::Single;
    let every: Vec<Group> = apps
        .iter()
        .map(|a| {
            let bars = [
                Variant::Sections(Counter::Ktime),
                Variant::Sections(Counter::Perf),
                Variant::Whole(Counter::Perf),
            ]
            .iter()
            .filter_map(|v| find(rows, a, m, *v, 0))
            .map(|r| (r.variant.short(), 100.0 * r.kept))
            .collect();
            (a.clone(), bars)
        })
        .collect();
    std::fs::write(
        dir.join("overhead_every_packet.svg"),
        report::bar_chart(
            "Every packet profiled: % of baseline throughput (fresh frame per run)",
            "% of baseline",
            &every,
            &[(75.0, "75% target"), (100.0, "baseline")],
        ),
    )?;
    files.push("overhead_every_packet.svg".into());
    for (c, name) in [(Counter::Ktime, "ktime"), (Counter::Perf, "perf")] {
        let samp: Vec<Group> = apps
            .iter()
            .map(|a| {
                let bars = inxpect_bench::SHIFTS
                    .iter()
                    .filter_map(|&s| find(rows, a, m, Variant::Sections(c), s))
                    .map(|r| (report::sample(r.shift), 100.0 * r.kept))
                    .collect();
                (a.clone(), bars)
            })
            .collect();
        let f = format!("sampling_{name}.svg");
        std::fs::write(
            dir.join(&f),
            report::bar_chart(
                &format!("`{name}` by sampling rate: % of baseline throughput"),
                "% of baseline",
                &samp,
                &[(97.0, "97% (1/64 target)"), (100.0, "")],
            ),
        )?;
        files.push(f);
    }
    let n: Vec<Group> = vec![(
        "x86 instructions between the two reads (drop, empty region)".into(),
        noise
            .iter()
            .map(|r| (r.counter.to_string(), (r.jit + r.extra) as f64))
            .chain([
                ("InXpect (published)".to_string(), 40.0),
                ("perf (published)".to_string(), 600.0),
            ])
            .collect(),
    )];
    std::fs::write(
        dir.join("noise.svg"),
        report::bar_chart(
            "Instruction noise (image + kfunc bodies; helper bodies not counted)",
            "x86 instructions",
            &n,
            &[(10.0, "10 (pmc target)")],
        ),
    )?;
    files.push("noise.svg".into());
    Ok(files)
}

fn main() -> Result<()> {
    let args = parse()?;
    pin_to_cpu(0)?;
    let mach = machine();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let progress = |s: &str| eprintln!("inxpect-bench: {s}");
    progress("instruction noise");
    let noise = noise()?;
    progress("verifier cost");
    let ver = verifier(&args.cfg.apps)?;
    let rows = overhead(&args.cfg, progress)?;
    let rw = rewrite_table(&args.rewrite)?;
    let plot_files = plots(&rows, &noise, &args.plots)?;
    let rel = pathdiff(&args.plots, args.out.parent().unwrap_or(Path::new(".")));

    let mut d = String::new();
    let _ = writeln!(
        d,
        "# Benchmarks\n\n\
         Generated by `inxpect-bench` (bench/) on {date}. Every time figure is a ratio\n\
         to the uninstrumented program measured in the same run: each round runs the\n\
         baseline and then one configuration (A B A C A D …), and the tables give\n\
         medians over {} rounds of the per-pair ratio.\n\n\
         ## Machine\n\n\
         - CPUs: {} (`nproc`), {}\n- kernel: {}\n\
         - no hardware PMU, no kernel modules (so no `pmc`/`tsc` runs on the host);\n  \
         fentry/fexit (what `bpftool prog profile` and `perf stat -b` attach) are\n  \
         refused here with EPERM, so perf itself cannot run: its mechanism is\n  \
         reproduced instead (below).\n- the harness pins itself to CPU 0.\n\n\
         ## Commands\n\n\
         ```\n\
         sudo cargo run --release -p inxpect-bench -- all    # everything below, ~3 min\n\
         cargo bench -p inxpect-rewriter --bench rewrite       # section 4 alone\n\
         cargo test -p inxpect-bench                           # smoke test (tiny setting)\n\
         ```\n\n\
         Settings of this run: apps {}, repeat {}, {} single calls per sample, {} rounds,\n\
         sampling {}.\n",
        args.cfg.rounds,
        mach.nproc,
        mach.cpu,
        mach.kernel,
        args.cfg.apps.join(", "),
        args.cfg.repeat,
        args.cfg.single_calls,
        args.cfg.rounds,
        args.cfg
            .shifts
            .iter()
            .map(|s| report::sample(*s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    d.push_str("\n## Targets\n\n");
    d.push_str(&targets(&rows, &noise, rw.as_deref()));
    d.push_str(include_str!("../notes/targets.md"));
    d.push_str("\n## 1. Per-packet overhead\n\n");
    d.push_str(include_str!("../notes/overhead.md"));
    let _ = writeln!(
        d,
        "\n![every packet]({rel}/overhead_every_packet.svg)\n\n![ktime sampling]({rel}/sampling_ktime.svg)\n\n![perf sampling]({rel}/sampling_perf.svg)\n"
    );
    d.push_str("\n### Fresh frame per run (`repeat 1` calls; the full path every run)\n\n");
    d.push_str(&report::overhead_table(&rows, Method::Single));
    d.push_str("\n### Kernel `repeat` (one buffer for all iterations)\n\n");
    d.push_str(&report::overhead_table(&rows, Method::Repeat));
    d.push_str("\n### Live frames (`BPF_F_TEST_XDP_LIVE_FRAMES`: every packet a fresh frame through the real XDP path)\n\n");
    d.push_str(&report::overhead_table(&rows, Method::Live));
    d.push_str("\n| fentry/fexit (`bpftool prog profile`, `perf stat -b`) | refused on this host (EPERM); not measured |\n|---|---|\n");
    d.push_str("\n## 2. Instruction noise (empty region, `drop`)\n\n");
    d.push_str(include_str!("../notes/noise.md"));
    d.push('\n');
    d.push_str(&report::noise_table(&noise));
    let _ = writeln!(d, "\n![noise]({rel}/noise.svg)\n");
    d.push_str("\nThe counted paths, as disassembled from this run's JIT image:\n\n");
    d.push_str(&report::noise_paths(&noise));
    d.push_str("## 3. Verifier cost\n\n");
    d.push_str(include_str!("../notes/verifier.md"));
    d.push('\n');
    d.push_str(&report::verifier_table(&ver));
    d.push_str("\n## 4. Rewriter speed\n\n");
    match &rw {
        Some(t) => {
            d.push_str(include_str!("../notes/rewriter.md"));
            d.push('\n');
            d.push_str(t);
        }
        None => d.push_str("(skipped in this run)\n"),
    }
    let _ = writeln!(d, "\nPlots: {}", plot_files.join(", "));
    std::fs::write(&args.out, d)?;
    eprintln!("inxpect-bench: wrote {}", args.out.display());
    Ok(())
}

/// `to` relative to `from` when `to` is inside it, else absolute.
fn pathdiff(to: &Path, from: &Path) -> String {
    let to_abs = std::fs::canonicalize(to).unwrap_or(to.to_path_buf());
    let from_abs = std::fs::canonicalize(from).unwrap_or(from.to_path_buf());
    to_abs
        .strip_prefix(&from_abs)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| to_abs.display().to_string())
}
