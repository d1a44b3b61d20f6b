//! The nesting the rewriter writes to the manifest (`parents`, `top`,
//! `nest_unknown`), on programs whose nesting is plain from the source.

mod common;

use inxpect_rewriter::runtime::Manifest;
use inxpect_rewriter::{instrument, Counter, Mode, Options};

fn manifest(name: &str, src: &str, mode: Mode) -> Manifest {
    let dir = tempfile::tempdir().unwrap();
    let o = common::compile(dir.path(), name, &format!("{}{src}", common::PRELUDE));
    let input = std::fs::read(o).unwrap();
    let opts = Options {
        mode,
        counter: Counter::Ktime,
        events: 1,
        only: None,
        read_fn: None,
        stats: inxpect_rewriter::Stats::Inline,
        unsampled_copy: false,
        ..Options::default()
    };
    instrument(&input, &opts).expect("instrument").manifest
}

/// (qualified name, parents as qualified names, top, unknown?) per region.
fn nesting(m: &Manifest) -> Vec<(String, Vec<String>, bool, bool)> {
    let name = |id: u32| m.regions.iter().find(|r| r.id == id).unwrap().qualified();
    m.regions
        .iter()
        .map(|r| {
            (
                r.qualified(),
                {
                    let mut v: Vec<String> = r.parents.iter().map(|&p| name(p)).collect();
                    v.sort();
                    v
                },
                r.top,
                r.nest_unknown.is_some(),
            )
        })
        .collect()
}

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn markers_nest_by_the_control_flow() {
    let m = manifest(
        "chain",
        r#"
SEC("xdp") int prog(struct xdp_md *ctx)
{
	void *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
	int r = XDP_PASS;
	INXPECT_START(a);
	if (d + 20 > e) { INXPECT_END(a); return XDP_DROP; }
	INXPECT_START(b);
	if (((char *)d)[14] & 1) {
		INXPECT_START(c);
		r = ((char *)d)[15] & 1 ? XDP_TX : XDP_PASS;
		INXPECT_END(c);
	}
	INXPECT_END(b);
	INXPECT_END(a);
	INXPECT_START(after);
	r += ((char *)d)[16] == 3;
	INXPECT_END(after);
	return r;
}
"#,
        Mode::Sections,
    );
    assert_eq!(
        nesting(&m),
        vec![
            (s("prog:a"), vec![], false, false),
            (s("prog:b"), vec![s("prog:a")], false, false),
            (s("prog:c"), vec![s("prog:b")], false, false),
            (s("prog:after"), vec![], false, false),
        ]
    );
}

#[test]
fn a_start_reached_with_a_region_open_or_not_is_unknown() {
    let m = manifest(
        "maybe",
        r#"
SEC("xdp") int prog(struct xdp_md *ctx)
{
	void *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
	int open = 0;
	if (d + 20 > e) return XDP_DROP;
	if (((char *)d)[14] & 1) { INXPECT_START(a); open = 1; }
	INXPECT_START(b);
	((volatile char *)d)[15] += 1;
	INXPECT_END(b);
	if (open) { INXPECT_END(a); }
	return XDP_PASS;
}
"#,
        Mode::Sections,
    );
    let n = nesting(&m);
    let b = n.iter().find(|r| r.0 == "prog:b").unwrap();
    // Unknown, or (where the compiler duplicated b's START into both
    // branches) inside a on one path and at the top on the other.
    assert!(
        b.3 || (b.1 == [s("prog:a")] && b.2),
        "b may or may not be inside a: {n:?}"
    );
}

#[test]
fn functions_nest_by_the_call_graph() {
    let m = manifest(
        "calls",
        r#"
static __attribute__((noinline)) int leaf(int x) { return x * 7 + 1; }
static __attribute__((noinline)) int mid(int x) { return leaf(x) ^ leaf(x + 1); }
static __attribute__((noinline)) int twice(int x) { return x << 3; }
SEC("xdp") int prog(struct xdp_md *ctx)
{
	int x = ctx->ingress_ifindex;
	return (mid(x) + twice(x) + twice(x + 2)) & 1 ? XDP_PASS : XDP_DROP;
}
SEC("xdp") int other(struct xdp_md *ctx)
{
	return twice(ctx->ingress_ifindex) & 1 ? XDP_PASS : XDP_DROP;
}
"#,
        Mode::Functions,
    );
    let mut n = nesting(&m);
    n.sort();
    assert_eq!(
        n,
        vec![
            (s("leaf:leaf"), vec![s("mid:mid")], false, false),
            (s("mid:mid"), vec![s("prog:prog")], false, false),
            (s("other:other"), vec![], false, false),
            (s("prog:prog"), vec![], false, false),
            // Called from two programs: under either (the loader keeps the
            // one that ran).
            (
                s("twice:twice"),
                vec![s("other:other"), s("prog:prog")],
                false,
                false
            ),
        ]
    );
}
