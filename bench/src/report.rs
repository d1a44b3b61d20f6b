//! Markdown tables and hand-written SVG bar charts.

use crate::{Method, NoiseRow, OverheadRow, Variant, VerifierRow};
use std::fmt::Write as _;

pub fn verdict(v: u32) -> &'static str {
    inxpect_tests::verdict_name(v)
}

pub fn sample(shift: u32) -> String {
    format!("1/{}", 1u64 << shift)
}

/// The overhead table of one method.
pub fn overhead_table(rows: &[OverheadRow], method: Method) -> String {
    let mut s = String::from(
        "| app | frame | configuration | sampling | ns/packet | baseline ns (same rounds) | % of baseline throughput | last verdict |\n\
         |---|---:|---|---:|---:|---:|---:|---|\n",
    );
    for r in rows.iter().filter(|r| r.method == method) {
        let _ = writeln!(
            s,
            "| {} | #{} | {} | {} | {:.1} | {:.1} | {:.1}% | {} |",
            r.app,
            r.frame,
            r.variant.label(),
            if r.variant == Variant::Base {
                "-".into()
            } else {
                sample(r.shift)
            },
            r.ns,
            r.base_ns,
            100.0 * r.kept,
            // Live frames carry verdicts out instead of returning them.
            if method == Method::Live {
                "-"
            } else {
                verdict(r.verdict)
            }
        );
    }
    s
}

pub fn noise_table(rows: &[NoiseRow]) -> String {
    let mut s = String::from(
        "| counter | JIT x86 insns between the reads | + outside the image | total counted | not counted |\n|---|---:|---:|---:|---|\n",
    );
    for r in rows {
        let counted = r.jit + r.extra;
        let (extra, not) = if r.extra > 0 {
            (format!("{} ({})", r.extra, r.extra_note), "-".to_string())
        } else {
            ("0".into(), r.extra_note.clone())
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} |",
            r.counter, r.jit, extra, counted, not
        );
    }
    s
}

pub fn noise_paths(rows: &[NoiseRow]) -> String {
    let mut s = String::new();
    for r in rows
        .iter()
        .filter(|r| r.counter == "ktime" || r.counter == "perf")
    {
        if r.path.start_size == 0 {
            let _ = writeln!(s, "`{}` (both reads at the probe sites):\n\n```", r.counter);
        } else {
            let _ = writeln!(
                s,
                "`{}` (START subprogram {} x86 insns, END subprogram {} in the image):\n\n```",
                r.counter, r.path.start_size, r.path.end_size
            );
        }
        for (piece, insns) in &r.path.pieces {
            let _ = writeln!(s, "; {piece}: {}", insns.len());
            for i in insns {
                let _ = writeln!(s, "    {i}");
            }
        }
        s.push_str("```\n\n");
    }
    s
}

pub fn verifier_table(rows: &[VerifierRow]) -> String {
    let mut s = String::from(
        "| app | object | xlated insns | verified_insns | x uninstrumented |\n|---|---|---:|---:|---:|\n",
    );
    let mut base = 0u32;
    for r in rows {
        if r.variant == "uninstrumented" {
            base = r.verified_insns;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2} |",
            r.app,
            r.variant,
            r.xlated_insns,
            r.verified_insns,
            f64::from(r.verified_insns) / f64::from(base.max(1))
        );
    }
    s
}

/// One bar group: a label and (series, value) bars.
pub type Group = (String, Vec<(String, f64)>);

const COLORS: [&str; 6] = [
    "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A vertical grouped bar chart; `refs` draws dashed horizontal lines.
pub fn bar_chart(title: &str, ylabel: &str, groups: &[Group], refs: &[(f64, &str)]) -> String {
    let series: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for (_, bars) in groups {
            for (n, _) in bars {
                if !v.contains(n) {
                    v.push(n.clone());
                }
            }
        }
        v
    };
    let max = groups
        .iter()
        .flat_map(|(_, b)| b.iter().map(|x| x.1))
        .chain(refs.iter().map(|r| r.0))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let (w, h) = (820.0, 420.0);
    let (l, r, top, bot) = (70.0, 20.0, 40.0, 110.0);
    let pw = w - l - r;
    let ph = h - top - bot;
    let gw = pw / groups.len().max(1) as f64;
    let bw = (gw * 0.8) / series.len().max(1) as f64;
    let y = |v: f64| top + ph - v / max * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    for k in 0..=5 {
        let v = max / 1.1 * k as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - r,
            l - 5.0,
            y(v) + 4.0,
            fmt_num(v),
            yy = y(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + ph / 2.0,
        esc(ylabel)
    );
    for (gi, (g, bars)) in groups.iter().enumerate() {
        let x0 = l + gi as f64 * gw + gw * 0.1;
        for (n, v) in bars {
            let si = series.iter().position(|x| x == n).unwrap_or(0);
            let x = x0 + si as f64 * bw;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {}</title></rect>"#,
                y(*v),
                bw * 0.95,
                top + ph - y(*v),
                COLORS[si % COLORS.len()],
                esc(g),
                esc(n),
                fmt_num(*v)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            l + gi as f64 * gw + gw / 2.0,
            top + ph + 16.0,
            esc(g)
        );
    }
    for (v, name) in refs {
        let _ = writeln!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#c00" stroke-dasharray="5,4"/><text x="{}" y="{:.1}" text-anchor="end" fill="#c00">{}</text>"##,
            w - r,
            w - r - 2.0,
            y(*v) - 3.0,
            esc(name),
            yy = y(*v)
        );
    }
    for (si, n) in series.iter().enumerate() {
        let col = si % 3;
        let row = si / 3;
        let x = l + col as f64 * 250.0;
        let yy = h - bot + 40.0 + row as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            yy - 10.0,
            COLORS[si % COLORS.len()],
            x + 16.0,
            yy,
            esc(n)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
