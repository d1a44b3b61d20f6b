// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The END path of the probes themselves, with chosen counter values (the
 * percentile test, tests/tests/histogram.rs). The test instruments this
 * object with the rewriter's read-function hook (`Options::read_fn =
 * "replay_read"`): every probe read of region `r` then calls replay_read()
 * instead of the counter, which hands out the two values the frame carries,
 * `then` for START and `now` for END. So a frame drives the very code the
 * rewriter emits at a program-level END site (the held check, the delta,
 * the inlined statistics and their fallback call) with a known delta.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect.h"

__u64 replay_vals[2];
__u32 replay_next;

/* Global (its own verification, a real call at every read site). */
__attribute__((noinline)) __u64 replay_read(void)
{
	__u32 i = replay_next;

	replay_next = i + 1;
	return replay_vals[i & 1];
}

struct frame {
	__u64 then;
	__u64 now;
};

/* Hands the frame's two values to replay_read(); NULL for a short frame. */
static __always_inline struct frame *replay_arm(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct frame *f = data;

	if ((void *)(f + 1) > data_end)
		return 0;
	replay_vals[0] = f->then;
	replay_vals[1] = f->now;
	replay_next = 0;
	return f;
}

/* A region through both probes of a program-level site. */
#define REPLAY_BODY(r)                                                   \
	if (!replay_arm(ctx))                                           \
		return XDP_ABORTED;                                     \
	INXPECT_START(r);                                               \
	INXPECT_END(r);                                                 \
	/* Both reads happened: the region was measured. */             \
	return replay_next == 2 ? XDP_DROP : XDP_PASS;

/* The same with six values live across END, in registers: no callee-saved
 * register is left free there, so its inlined statistics keep the delta in
 * memory instead (the other code path). They become live after START,
 * which keeps its spare register (and so reads through replay_read too). */
#define REPLAY_BUSY_BODY(r)                                              \
	struct frame *f = replay_arm(ctx);                              \
	__u64 a, b, c, d, e, g;                                         \
									\
	if (!f)                                                         \
		return XDP_ABORTED;                                     \
	INXPECT_START(r);                                               \
	a = f->then;                                                    \
	b = f->now;                                                     \
	c = a ^ 1;                                                      \
	d = b ^ 2;                                                      \
	e = a + b;                                                      \
	g = a - b;                                                      \
	/* Opaque from here: all six must stay live across END. */      \
	asm volatile("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d), "+r"(e), "+r"(g)); \
	INXPECT_END(r);                                                 \
	asm volatile("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d), "+r"(e), "+r"(g)); \
	/* Unchanged across the probe, and both reads happened. */      \
	if (c != (f->then ^ 1) || d != (f->now ^ 2) || e != f->then + f->now || \
	    g != f->then - f->now || a != f->then || b != f->now)      \
		return XDP_ABORTED;                                     \
	return replay_next == 2 ? XDP_DROP : XDP_PASS;

/* Regions 0 and 1: END keeps their statistics in the per-CPU state. */
SEC("xdp")
int replay(struct xdp_md *ctx)
{
	REPLAY_BODY(r)
}

SEC("xdp")
int replay_busy(struct xdp_md *ctx)
{
	REPLAY_BUSY_BODY(r)
}

/* 16 regions that never run, so that the two below (region `s`: ids go
 * by name, then function) are past the first 16
 * and their END looks its statistics up in inxpect_stats (the other
 * inline path). */
#define FILL(n) INXPECT_START(fill_##n); INXPECT_END(fill_##n);
#define FILL8(a) FILL(a##0) FILL(a##1) FILL(a##2) FILL(a##3) \
	FILL(a##4) FILL(a##5) FILL(a##6) FILL(a##7)
SEC("xdp")
int replay_fill(struct xdp_md *ctx)
{
	if (ctx->ingress_ifindex == 0xfffffff0) {
		FILL8(0) FILL8(1)
	}
	return XDP_PASS;
}

SEC("xdp")
int replay_slow(struct xdp_md *ctx)
{
	REPLAY_BODY(s)
}

SEC("xdp")
int replay_slow_busy(struct xdp_md *ctx)
{
	REPLAY_BUSY_BODY(s)
}

char LICENSE[] SEC("license") = "GPL";
