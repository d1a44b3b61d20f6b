//! Every app, in every committed build, against the packet corpus: verdicts,
//! output bytes and rewritten fields must match the independent Python model
//! (testdata/packets/gen.py), checksums must stay valid, and the maps must
//! end up as the model says.

use anyhow::{Context, Result};
use inxpect_tests::*;

/// Stop listing mismatches after this many per object; the count goes on.
const SHOW: usize = 12;

struct Report {
    object: String,
    mismatches: usize,
    lines: Vec<String>,
}

impl Report {
    fn fail(&mut self, frame: usize, msg: String) {
        self.mismatches += 1;
        if self.lines.len() < SHOW {
            if frame == usize::MAX {
                self.lines.push(format!("  maps: {msg}"));
            } else {
                self.lines.push(format!("  frame {frame}: {msg}"));
            }
        }
    }
}

/// Checks that hold for one app's rewritten frames beyond the model's bytes.
fn check_rewrite(app: &str, input: &[u8], out: &[u8], frame: usize, rep: &mut Report) {
    let Some((_, off)) = l3_offset(input) else {
        rep.fail(frame, "TX for a frame without L3".into());
        return;
    };
    match app {
        "nat" | "router" => {
            // Incremental updates keep a valid checksum valid.
            if ipv4_csum_ok(input, off) == Some(true) && ipv4_csum_ok(out, off) != Some(true) {
                rep.fail(frame, "IPv4 header checksum broken by the rewrite".into());
            }
            if app == "nat"
                && ipv4_l4_csum_ok(input, off) == Some(true)
                && ipv4_l4_csum_ok(out, off) != Some(true)
            {
                rep.fail(frame, "TCP/UDP checksum broken by the rewrite".into());
            }
        }
        "tunnel" => {
            if ipv4_csum_ok(out, off) != Some(true) {
                rep.fail(frame, "outer IPv4 header checksum invalid".into());
            }
            if out.get(off + 9) != Some(&4) {
                rep.fail(frame, "outer protocol is not IPIP (4)".into());
            }
            if out.get(off + 20..) != input.get(off..) {
                rep.fail(frame, "inner packet changed by encapsulation".into());
            }
        }
        _ => rep.fail(frame, format!("{app} is not expected to transmit")),
    }
}

fn run_object(
    app: &str,
    variant: &str,
    cfg: &Config,
    frames: &[Vec<u8>],
    exp: &[Expected],
) -> Result<Report> {
    let path = object_path(app, variant);
    let mut rep = Report {
        object: format!("{app}.{variant}.o"),
        mismatches: 0,
        lines: Vec::new(),
    };
    let obj = load_object(&path)?;
    populate_app_maps(&obj, app, cfg)?;
    let prog = only_program(&obj)?;
    let base = base_app(app);
    for (i, (frame, e)) in frames.iter().zip(exp).enumerate() {
        let (verdict, out) =
            test_run(&prog, frame).with_context(|| format!("{}: frame {i}", rep.object))?;
        if verdict != e.verdict {
            rep.fail(
                i,
                format!(
                    "verdict {} expected {}",
                    verdict_name(verdict),
                    verdict_name(e.verdict)
                ),
            );
            continue;
        }
        let fields = parse_fields(&out);
        if fields != e.fields {
            rep.fail(i, format!("fields {fields:?}\n    expected {:?}", e.fields));
        }
        if out.len() != e.out_len || fnv64(&out) != e.out_fnv64 {
            rep.fail(
                i,
                format!(
                    "output bytes differ from the model's ({} vs {} bytes)",
                    out.len(),
                    e.out_len
                ),
            );
        }
        if verdict == XDP_TX {
            check_rewrite(base, frame, &out, i, &mut rep);
        } else if out != *frame {
            rep.fail(
                i,
                format!("{} but the frame was modified", verdict_name(verdict)),
            );
        }
    }
    match app {
        "cms" | "cms_sub" => {
            let want = expected_cms_counts()?;
            for row in 0..cfg.cms.rows {
                for col in 0..cfg.cms.cols {
                    let got = percpu_sum(&obj, "cms_counts", row * cfg.cms.cols + col)?;
                    let exp = want.get(&(row, col)).copied().unwrap_or(0);
                    if got != exp {
                        rep.fail(
                            usize::MAX,
                            format!("cms_counts[{row}][{col}] = {got}, expected {exp}"),
                        );
                    }
                }
            }
        }
        "drop_sub" => {
            for (depth, exp) in expected_drop_stats()?.into_iter().enumerate() {
                let got = percpu_sum(&obj, "drop_stats", depth as u32)?;
                if got != exp {
                    rep.fail(
                        usize::MAX,
                        format!("drop_stats[{depth}] = {got}, expected {exp}"),
                    );
                }
            }
        }
        _ => {}
    }
    Ok(rep)
}

/// Runs the corpus through `<app>` and `<app>_sub` in every variant.
fn corpus_matches_model(app: &str) {
    let cfg = load_config().expect("config.json");
    let frames = corpus().expect("corpus.pcap");
    let exp = expected(app).expect("expected csv");
    assert!(frames.len() >= 10_000, "corpus has {} frames", frames.len());
    assert_eq!(
        frames.len(),
        exp.len(),
        "corpus and expected/{app}.csv disagree on the frame count"
    );
    let mut failed = Vec::new();
    for name in [app.to_string(), format!("{app}_sub")] {
        for variant in VARIANTS {
            let rep = run_object(&name, variant, &cfg, &frames, &exp)
                .unwrap_or_else(|e| panic!("{name}.{variant}.o: {e:#}"));
            if rep.mismatches > 0 {
                failed.push(format!(
                    "{}: {} mismatches\n{}",
                    rep.object,
                    rep.mismatches,
                    rep.lines.join("\n")
                ));
            }
        }
    }
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}

#[test]
fn drop_corpus_matches_model_in_every_build() {
    corpus_matches_model("drop");
}

#[test]
fn cms_corpus_matches_model_in_every_build() {
    corpus_matches_model("cms");
}

#[test]
fn nat_corpus_matches_model_in_every_build() {
    corpus_matches_model("nat");
}

#[test]
fn router_corpus_matches_model_in_every_build() {
    corpus_matches_model("router");
}

#[test]
fn tunnel_corpus_matches_model_in_every_build() {
    corpus_matches_model("tunnel");
}

/// The corpus covers what the apps must cope with (a regenerated corpus
/// that lost a kind of frame would weaken every test above).
#[test]
fn corpus_has_every_kind_of_frame() {
    let frames = corpus().expect("corpus.pcap");
    let mut vlan1 = 0;
    let mut vlan2 = 0;
    let mut v4 = 0;
    let mut v6 = 0;
    let mut frags = 0;
    let mut options = 0;
    let mut runts = 0;
    let mut jumbo = 0;
    let mut bad_l3 = 0;
    for f in &frames {
        if f.len() < 60 {
            runts += 1;
        }
        if f.len() > 1514 {
            jumbo += 1;
        }
        let Some((proto, off)) = l3_offset(f) else {
            continue;
        };
        match off {
            18 => vlan1 += 1,
            22 => vlan2 += 1,
            _ => {}
        }
        match proto {
            0x0800 => match ipv4_header_len(f, off) {
                Some(hl) => {
                    v4 += 1;
                    if hl > 20 {
                        options += 1;
                    }
                    if u16::from_be_bytes([f[off + 6], f[off + 7]]) & 0x3fff != 0 {
                        frags += 1;
                    }
                }
                None => bad_l3 += 1,
            },
            0x86dd => v6 += 1,
            _ => {}
        }
    }
    for (what, n) in [
        ("single-tagged", vlan1),
        ("double-tagged", vlan2),
        ("IPv4", v4),
        ("IPv6", v6),
        ("IPv4 fragments", frags),
        ("IPv4 with options", options),
        ("runts", runts),
        ("jumbo", jumbo),
        ("malformed IPv4", bad_l3),
    ] {
        assert!(n >= 20, "only {n} {what} frames");
    }
}
