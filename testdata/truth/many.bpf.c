/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* 80 regions in one program, past the 64 the per-run mask holds: ids
 * 64-79 take the subprogram path. Regions are numbered in code order, so
 * s<n> gets id n (the committed-shapes test checks the ids that matter):
 * s31 holds s32 and s63 holds s64 (the mask's bit test changes form at
 * 32 and at 64), s66 holds s67, s70 holds a second pair of s05 (a child
 * below 64 inside a parent above), some sit on branches the frame bytes
 * decide, s00 holds everything and early exits close several at once. */
#include "truth.h"

#define W(n) r_s##n##__many
#define W10(d)                                                      \
	W(d##0), W(d##1), W(d##2), W(d##3), W(d##4), W(d##5), W(d##6), \
		W(d##7), W(d##8), W(d##9)

struct truth {
	__u64 runs, f_many, W10(0), W10(1), W10(2), W10(3), W10(4), W10(5),
		W10(6), W10(7);
} truth SEC(".data.truth");

/* A step of work the verdict depends on: byte `off` of the frame. */
static __always_inline __u32 step(__u32 acc, struct xdp_md *ctx, __u32 off)
{
	int b = frame_byte(ctx, off);

	return acc * 31 + (b < 0 ? 7 : b);
}

/* Region s<n> around one step. */
#define SEQ(n, off)                              \
	do {                                     \
		INXPECT_START(s##n);             \
		acc = step(acc, ctx, off);       \
		TRUTH_END(s##n, many);           \
	} while (0)
/* The same, only when `cond` holds. */
#define BR(n, off, cond)                 \
	do {                             \
		if (cond)                \
			SEQ(n, off);     \
	} while (0)
/* Region s<p> around a step and s<c>, when `cond` holds. */
#define HOLD(p, c, off, cond)                    \
	do {                                     \
		INXPECT_START(s##p);             \
		acc = step(acc, ctx, off);       \
		BR(c, off + 1, cond);            \
		TRUTH_END(s##p, many);           \
	} while (0)

SEC("xdp")
int many(struct xdp_md *ctx)
{
	int a, b, c, d;
	__u32 acc = 1;

	TRUTH_BUMP(runs);
	TRUTH_BUMP(f_many);
	INXPECT_START(s00);
	a = frame_byte(ctx, 14);
	if (a < 0) {
		TRUTH_END(s00, many);
		return XDP_PASS;
	}
	SEQ(01, 14);
	SEQ(02, 16);
	BR(03, 17, a & 1);
	SEQ(04, 18);
	SEQ(05, 19);
	BR(06, 20, a & 2);
	SEQ(07, 21);
	SEQ(08, 22);
	SEQ(09, 23);
	b = frame_byte(ctx, 15);
	if (b < 0) {
		TRUTH_END(s00, many);
		return XDP_DROP;
	}
	SEQ(10, 24);
	BR(11, 25, b & 1);
	SEQ(12, 26);
	SEQ(13, 27);
	BR(14, 28, !(b & 2));
	SEQ(15, 29);
	SEQ(16, 30);
	SEQ(17, 31);
	BR(18, 32, a & 4);
	SEQ(19, 33);
	SEQ(20, 34);
	SEQ(21, 35);
	SEQ(22, 36);
	BR(23, 37, b & 8);
	SEQ(24, 38);
	SEQ(25, 39);
	SEQ(26, 40);
	SEQ(27, 41);
	SEQ(28, 42);
	SEQ(29, 43);
	BR(30, 44, (a ^ b) & 1);
	/* The bit test's form changes between 31 and 32. */
	HOLD(31, 32, 45, b & 4);
	INXPECT_START(s33);
	INXPECT_START(s34);
	acc = step(acc, ctx, 47);
	TRUTH_END(s34, many);
	TRUTH_END(s33, many);
	SEQ(35, 48);
	SEQ(36, 49);
	BR(37, 50, a & 8);
	SEQ(38, 51);
	SEQ(39, 52);
	SEQ(40, 53);
	SEQ(41, 54);
	BR(42, 55, b & 16);
	SEQ(43, 56);
	SEQ(44, 57);
	SEQ(45, 58);
	SEQ(46, 59);
	SEQ(47, 60);
	BR(48, 61, a & 16);
	SEQ(49, 62);
	SEQ(50, 63);
	SEQ(51, 14);
	SEQ(52, 15);
	BR(53, 16, !(a & 32));
	SEQ(54, 17);
	SEQ(55, 18);
	SEQ(56, 19);
	SEQ(57, 20);
	SEQ(58, 21);
	BR(59, 22, b & 32);
	SEQ(60, 23);
	SEQ(61, 24);
	SEQ(62, 25);
	/* Across 64: s63 in the mask, s64 past it; a frame cut before byte
	 * 20 leaves from inside both. */
	INXPECT_START(s63);
	acc = step(acc, ctx, 26);
	if (a & 64) {
		INXPECT_START(s64);
		c = frame_byte(ctx, 20);
		if (c < 0) {
			TRUTH_END(s64, many);
			TRUTH_END(s63, many);
			TRUTH_END(s00, many);
			return XDP_TX;
		}
		acc = step(acc, ctx, 27);
		TRUTH_END(s64, many);
	}
	TRUTH_END(s63, many);
	SEQ(65, 28);
	HOLD(66, 67, 29, b & 64);
	SEQ(68, 31);
	BR(69, 32, a & 128);
	/* A region below 64 inside one above. */
	HOLD(70, 05, 33, 1);
	SEQ(71, 35);
	BR(72, 36, !(b & 128));
	SEQ(73, 37);
	SEQ(74, 38);
	SEQ(75, 39);
	BR(76, 40, (a + b) & 2);
	SEQ(77, 41);
	/* Two exits close s78 (and s00). */
	INXPECT_START(s78);
	d = frame_byte(ctx, 20);
	if (d < 0 || (d & 3) == 0) {
		TRUTH_END(s78, many);
		TRUTH_END(s00, many);
		return acc & 1 ? XDP_DROP : XDP_PASS;
	}
	acc = step(acc, ctx, 42);
	TRUTH_END(s78, many);
	SEQ(79, 43);
	TRUTH_END(s00, many);
	return acc & 1 ? XDP_PASS : XDP_TX;
}
