/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shared pieces of the five test apps: compiler compatibility, header
 * parsing (Ethernet, up to two VLAN tags, IPv4 with options, IPv6, TCP/UDP)
 * and RFC 1624 incremental checksums.
 *
 * Build switches:
 *   -DINXPECT_SUBPROG     the `<app>_sub` variant: helpers become bpf-to-bpf
 *                         subprograms (static __noinline) and loops are kept
 *                         as real bounded loops (unrolling disabled).
 *   -DINXPECT_NO_MARKERS  markers compile to nothing (see markers.h).
 *
 * testdata/packets/gen.py models every rule here; change both together.
 */
#ifndef __APPS_COMMON_H
#define __APPS_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/in.h>

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
/*
 * gcc 12's BPF backend cannot call libbpf's helper declarations (function
 * pointers with constant addresses: "indirect call ... not supported"); it
 * wants the kernel_helper attribute instead. So declare what the apps use.
 */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#define __noinline __attribute__((noinline))
#define NULL ((void *)0)
void *bpf_map_lookup_elem(void *map, const void *key) __attribute__((kernel_helper(1)));
long bpf_map_update_elem(void *map, const void *key, const void *value,
			 __u64 flags) __attribute__((kernel_helper(2)));
long bpf_xdp_adjust_head(struct xdp_md *ctx, int delta) __attribute__((kernel_helper(44)));
#else
#include <bpf/bpf_helpers.h>
#endif
#include <bpf/bpf_endian.h>

#include "markers.h"

#ifdef INXPECT_SUBPROG
#define APP_FN static __noinline
/* Keep loops as loops: the verifier's bounded-loop support, and a back edge
 * for the rewriter, are what this variant exercises. */
#if defined(__clang__)
#define NO_UNROLL _Pragma("clang loop unroll(disable)")
#else
#define NO_UNROLL _Pragma("GCC unroll 0")
#endif
#else
#define APP_FN static __always_inline
#define NO_UNROLL
#endif

#define MAX_VLAN 2
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8

struct vlan_hdr_ {
	__be16 tci;
	__be16 encap_proto;
};

/* Verdicts of the parse helpers besides a valid header. */
#define PARSE_BAD (-1)

/*
 * Ethernet plus up to MAX_VLAN 802.1Q/802.1ad tags. Returns the ethertype
 * (host order) after the tags and sets *l3_off, or PARSE_BAD when a header
 * is cut short. A third tag is left alone: its TPID is returned as the
 * ethertype, which no app treats as IP.
 */
APP_FN int parse_eth(void *data, void *data_end, __u32 *l3_off)
{
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	__u16 proto;

	if ((void *)(eth + 1) > data_end)
		return PARSE_BAD;
	proto = bpf_ntohs(eth->h_proto);
	NO_UNROLL
	for (int i = 0; i < MAX_VLAN; i++) {
		struct vlan_hdr_ *vh = data + off;

		if (proto != ETH_P_8021Q_ && proto != ETH_P_8021AD_)
			break;
		if ((void *)(vh + 1) > data_end)
			return PARSE_BAD;
		proto = bpf_ntohs(vh->encap_proto);
		off += sizeof(*vh);
	}
	*l3_off = off;
	return proto;
}

/*
 * A usable IPv4 header at l3_off: version 4, ihl >= 5, the whole header
 * (options included) inside the frame. Returns the header length or
 * PARSE_BAD.
 */
static __always_inline int ipv4_hdr_len(struct iphdr *iph, void *data_end)
{
	int hl;

	if ((void *)(iph + 1) > data_end)
		return PARSE_BAD;
	if (iph->version != 4 || iph->ihl < 5)
		return PARSE_BAD;
	hl = iph->ihl * 4;
	if ((void *)iph + hl > data_end)
		return PARSE_BAD;
	return hl;
}

static __always_inline int ipv4_is_fragment(struct iphdr *iph)
{
	/* MF set or a non-zero offset: only the first fragment has ports, and
	 * the apps treat every fragment alike. */
	return (iph->frag_off & bpf_htons(0x3FFF)) != 0;
}

/* One's complement fold of a 32-bit partial sum to 16 bits. */
static __always_inline __u16 csum_fold16(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/*
 * RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'). Works on the raw 16-bit words as
 * they sit in memory; one's complement sums commute with byte swapping, so
 * no byte-order conversion is needed.
 */
static __always_inline void csum_replace2(__u16 *sum, __u16 from, __u16 to)
{
	__u32 s = (__u16)~*sum;

	s += (__u16)~from;
	s += to;
	*sum = (__u16)~csum_fold16(s);
}

static __always_inline void csum_replace4(__u16 *sum, __u32 from, __u32 to)
{
	__u32 s = (__u16)~*sum;

	s += (__u16)~(from & 0xffff);
	s += (__u16)~(from >> 16);
	s += to & 0xffff;
	s += to >> 16;
	*sum = (__u16)~csum_fold16(s);
}

#endif /* __APPS_COMMON_H */
