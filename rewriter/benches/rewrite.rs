//! Rewriter speed on large synthetic objects, side by side with libbpf's
//! static linker on the same object in the same run.
//!
//!     cargo bench -p inxpect-rewriter --bench rewrite            # 10k,100k,200k,1M
//!     INXPECT_BENCH_SIZES=10000 cargo bench -p inxpect-rewriter --bench rewrite
//!
//! Prints a Markdown table (instructions/second, ratio to the linker, peak RSS).

#[path = "../tests/common.rs"]
mod common;

use inxpect_rewriter::{instrument, link, runtime, Counter, Mode, Options};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

const REGIONS: usize = 200;

/// One XDP program of about `n` instructions: `REGIONS` marked regions of
/// straight-line code with short forward branches.
fn source(n: usize) -> String {
    let per = n / 4 / REGIONS;
    let mut s = String::from(
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n#include \"inxpect.h\"\n\
         char _license[] SEC(\"license\") = \"GPL\";\nSEC(\"xdp\") int big(struct xdp_md *ctx) {\n\
         asm volatile(\"r2 = 0\" ::: \"r2\");\n",
    );
    for r in 0..REGIONS {
        let _ = writeln!(s, "INXPECT_START(r{r});\nasm volatile(");
        for _ in 0..per {
            s.push_str("\"r2 += 1; if r2 > 100000 goto +1; r3 = r2; r3 *= 3;\"\n");
        }
        let _ = writeln!(s, "::: \"r2\", \"r3\");\nINXPECT_END(r{r});");
    }
    s.push_str("return XDP_PASS;\n}\n");
    s
}

fn build(dir: &Path, n: usize) -> Vec<u8> {
    let name = format!("big{n}");
    let mut o = dir.join(format!("{name}.o"));
    if !o.exists() {
        o = common::compile(dir, &name, &source(n));
    }
    std::fs::read(&o).expect("object")
}

fn best_of<T>(k: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut last = None;
    for _ in 0..k {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    (best, last.expect("ran"))
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("INXPECT_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000,200000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-objects");
    std::fs::create_dir_all(&dir).expect("dir");
    println!("| insns | rewrite (s) | insns/s | libbpf link (s) | rewrite / link | time per insn vs first size | peak RSS (MiB) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut first: Option<f64> = None;
    for n in sizes {
        let obj = build(&dir, n);
        let insns = inxpect_rewriter::elf::Elf::parse(&obj)
            .expect("parse")
            .sections
            .iter()
            .filter(|s| s.is_exec())
            .map(|s| s.data.len() / 8)
            .sum::<usize>();
        let opts = Options {
            mode: Mode::Sections,
            counter: Counter::Ktime,
            events: 1,
            only: None,
            read_fn: None,
            stats: inxpect_rewriter::Stats::Inline,
            unsampled_copy: false,
            ..Options::default()
        };
        // More tries on small objects: a single hiccup of a busy machine dominates them.
        let tries = if insns <= 200_000 { 9 } else { 3 };
        let (t, r) = best_of(tries, || instrument(&obj, &opts).expect("instrument"));
        assert_eq!(r.manifest.regions.len(), REGIONS);
        let (tl, _) = best_of(tries, || {
            link::link(&obj, runtime::object(Counter::Ktime, 1)).expect("link")
        });
        let per = t / insns as f64;
        let growth = first.map(|f| per / f).unwrap_or(1.0);
        first.get_or_insert(per);
        println!(
            "| {insns} | {t:.3} | {:.2}M | {tl:.3} | {:.2} | {growth:.2} | {:.0} |",
            insns as f64 / t / 1e6,
            t / tl,
            peak_rss_kb() as f64 / 1024.0
        );
    }
}
