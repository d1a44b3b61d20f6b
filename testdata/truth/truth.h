/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Ground-truth apps: the C source counts what inxpect must report.
 *
 * Every app defines `struct truth truth` in section .data.truth, one __u64
 * per witness, found by the test through the object's BTF by field name:
 *
 *   runs                     entries of the tested program by a fresh packet
 *   f_<function>             calls of <function>        (--functions)
 *   r_<region>__<function>   <region> in <function> reached its END after
 *                            its START in the same run   (--sections)
 *
 * A witness is bumped right before the END it stands for (or at the entry
 * of the function), so running the ORIGINAL object gives the exact count
 * for every region. Names must not contain "__" other than as the
 * separator.
 */
#ifndef TRUTH_H
#define TRUTH_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <inxpect.h>

#define TRUTH_BUMP(f) (truth.f++)
/* The witness, then the marker: counted exactly when the END runs. */
#define TRUTH_END(region, fn)                   \
	do {                                    \
		TRUTH_BUMP(r_##region##__##fn); \
		INXPECT_END(region);            \
	} while (0)

/* Byte `off` of the frame, or -1 past its end. */
static __always_inline int frame_byte(struct xdp_md *ctx, __u32 off)
{
	__u8 *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;

	if (d + off + 1 > e)
		return -1;
	return d[off];
}

char _license[] SEC("license") = "GPL";

#endif
