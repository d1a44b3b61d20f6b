// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test input: a marked region in a socket filter, i.e. not an XDP program. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect.h"

SEC("socket")
int sock_prog(struct __sk_buff *skb)
{
	INXPECT_START(all);
	INXPECT_END(all);
	return 0;
}

char _license[] SEC("license") = "Dual BSD/GPL";
