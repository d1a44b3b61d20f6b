// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Calibration of nesting: what a child region's probes add to the
 * measurement of the region around it, per child measurement. `inxpect`
 * instruments it with the counter of the program being measured and runs
 * each program with BPF_PROG_TEST_RUN:
 *
 *   child in the program's own code: min(nest_inline) - min(nest_alone)
 *   child in a subprogram:           min(nest_call)   - min(nest_plain)
 *
 * (the two leaves differ only by the child region), and each again with
 * four values live across the child (`_busy`: no register is free at its
 * START, which then fills the per-CPU pointer again after its read, or
 * in a subprogram calls the runtime to read), and the program-code ones
 * again past the first 16 regions, whose END keeps its statistics in the
 * per-CPU state (`_slow`: it looks them up), and past the 64 regions of
 * the run mask (`_word`). The reports subtract from
 * a parent's total, once per child measurement, the cost of the child
 * whose probes have the shape of the real child's (the manifest's `whole`
 * of each site), for its self.
 *
 * Rebuild (committed as nest.bpf.o, so the loader needs no compiler):
 *   clang -O2 -g -target bpf -I../../runtime-bpf/include \
 *         -I/usr/include/x86_64-linux-gnu -c nest.bpf.c -o nest.bpf.o
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect.h"
#include "calib.h"

static __attribute__((noinline)) int leaf_marked(struct xdp_md *ctx)
{
	INXPECT_START(sub_child);
	INXPECT_END(sub_child);
	return ctx->ingress_ifindex;
}

static __attribute__((noinline)) int leaf_plain(struct xdp_md *ctx)
{
	return ctx->ingress_ifindex;
}

static __attribute__((noinline)) int leaf_marked_busy(struct xdp_md *ctx)
{
	BUSY_BEGIN;
	INXPECT_START(sub_child_busy);
	INXPECT_END(sub_child_busy);
	BUSY_END;
	return ctx->ingress_ifindex;
}

static __attribute__((noinline)) int leaf_plain_busy(struct xdp_md *ctx)
{
	BUSY_BEGIN;
	BUSY_END;
	return ctx->ingress_ifindex;
}

SEC("xdp")
int nest_alone(struct xdp_md *ctx)
{
	INXPECT_START(alone);
	INXPECT_END(alone);
	return XDP_PASS;
}

SEC("xdp")
int nest_inline(struct xdp_md *ctx)
{
	INXPECT_START(outer_inline);
	INXPECT_START(child);
	INXPECT_END(child);
	INXPECT_END(outer_inline);
	return XDP_PASS;
}

SEC("xdp")
int nest_call(struct xdp_md *ctx)
{
	int r;

	INXPECT_START(outer_call);
	r = leaf_marked(ctx);
	INXPECT_END(outer_call);
	return r == 12345 ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int nest_plain(struct xdp_md *ctx)
{
	int r;

	INXPECT_START(outer_plain);
	r = leaf_plain(ctx);
	INXPECT_END(outer_plain);
	return r == 12345 ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int nest_alone_busy(struct xdp_md *ctx)
{
	INXPECT_START(alone_busy);
	{
		BUSY_BEGIN;
		BUSY_END;
	}
	INXPECT_END(alone_busy);
	return XDP_PASS;
}

SEC("xdp")
int nest_inline_busy(struct xdp_md *ctx)
{
	INXPECT_START(outer_inline_busy);
	{
		BUSY_BEGIN;
		INXPECT_START(child_busy);
		INXPECT_END(child_busy);
		BUSY_END;
	}
	INXPECT_END(outer_inline_busy);
	return XDP_PASS;
}

SEC("xdp")
int nest_call_busy(struct xdp_md *ctx)
{
	int r;

	INXPECT_START(outer_call_busy);
	r = leaf_marked_busy(ctx);
	INXPECT_END(outer_call_busy);
	return r == 12345 ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int nest_plain_busy(struct xdp_md *ctx)
{
	int r;

	INXPECT_START(outer_plain_busy);
	r = leaf_plain_busy(ctx);
	INXPECT_END(outer_plain_busy);
	return r == 12345 ? XDP_DROP : XDP_PASS;
}

/* The program-code pairs again for regions further on (`sfx`: _slow,
 * _word): alone and with a child, each also with no register free. */
#define NEST_PROGRAMS(sfx)                                              \
	SEC("xdp")                                                      \
	int nest_alone##sfx(struct xdp_md *ctx)                         \
	{                                                               \
		INXPECT_START(alone##sfx);                              \
		INXPECT_END(alone##sfx);                                \
		return XDP_PASS;                                        \
	}                                                               \
	SEC("xdp")                                                      \
	int nest_inline##sfx(struct xdp_md *ctx)                        \
	{                                                               \
		INXPECT_START(outer_inline##sfx);                       \
		INXPECT_START(child##sfx);                              \
		INXPECT_END(child##sfx);                                \
		INXPECT_END(outer_inline##sfx);                         \
		return XDP_PASS;                                        \
	}                                                               \
	SEC("xdp")                                                      \
	int nest_alone##sfx##_busy(struct xdp_md *ctx)                  \
	{                                                               \
		INXPECT_START(alone##sfx##_busy);                       \
		{                                                       \
			BUSY_BEGIN;                                     \
			BUSY_END;                                       \
		}                                                       \
		INXPECT_END(alone##sfx##_busy);                         \
		return XDP_PASS;                                        \
	}                                                               \
	SEC("xdp")                                                      \
	int nest_inline##sfx##_busy(struct xdp_md *ctx)                 \
	{                                                               \
		INXPECT_START(outer_inline##sfx##_busy);                \
		{                                                       \
			BUSY_BEGIN;                                     \
			INXPECT_START(child##sfx##_busy);               \
			INXPECT_END(child##sfx##_busy);                 \
			BUSY_END;                                       \
		}                                                       \
		INXPECT_END(outer_inline##sfx##_busy);                  \
		return XDP_PASS;                                        \
	}

/* Regions that never run, so that the `_slow` ones below are past the
 * fast statistics (regions 0-15): their END looks its statistics up. */
SEC("xdp")
int nest_fill16(struct xdp_md *ctx)
{
	if (ctx->ingress_ifindex == 0xfffffff0) {
		FILL16
	}
	return XDP_PASS;
}

NEST_PROGRAMS(_slow)

/* Regions that never run, so that the `_word` ones below are past the run
 * mask. */
SEC("xdp")
int nest_fill(struct xdp_md *ctx)
{
	if (ctx->ingress_ifindex == 0xfffffff0) {
		FILL64
	}
	return XDP_PASS;
}

NEST_PROGRAMS(_word)

/* GPL-compatible: the tsc, pmc and perf counters call GPL-only kfuncs/helpers. */
char _license[] SEC("license") = "Dual BSD/GPL";
