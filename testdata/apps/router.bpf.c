// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * router: IPv4 and IPv6 forwarding from longest-prefix-match tables.
 * Regions: parse, lookup, rewrite (MACs, TTL/hop limit, IPv4 checksum).
 *
 * Verdicts: non-IP or malformed L3 header -> XDP_PASS (the stack decides);
 * no route -> XDP_PASS (local or unknown destination); a route but TTL (hop
 * limit) <= 1 -> XDP_DROP (no ICMP time-exceeded from XDP); otherwise the
 * MACs are set from the route, TTL/hop limit decremented, the IPv4 checksum
 * updated incrementally, and XDP_TX. The route's ifindex is carried for a
 * deployment that redirects; this test build transmits back (hairpin), so
 * BPF_PROG_TEST_RUN shows the result.
 *
 * The _sub variant does the lookup in a subprogram holding the `lookup`
 * region and walks VLAN tags in a loop.
 */
#include "common.h"

struct route {
	__u32 ifindex;
	__u8 dmac[ETH_ALEN];
	__u8 smac[ETH_ALEN];
};

struct lpm_key4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm_key6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key4);
	__type(value, struct route);
} routes_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key6);
	__type(value, struct route);
} routes_v6 SEC(".maps");

/* dst points at the destination address inside the packet. One function
 * per family: a shared one with an is_v6 flag does not verify at -O1 in the
 * _sub variant (the flag is not a constant inside the subprogram). */
APP_FN struct route *route_lookup4(void *dst)
{
	struct lpm_key4 k4 = { .prefixlen = 32 };
	struct route *rt;

	INXPECT_START(lookup);
	__builtin_memcpy(k4.addr, dst, 4);
	rt = bpf_map_lookup_elem(&routes_v4, &k4);
	INXPECT_END(lookup);
	return rt;
}

APP_FN struct route *route_lookup6(void *dst)
{
	struct lpm_key6 k6 = { .prefixlen = 128 };
	struct route *rt;

	INXPECT_START(lookup);
	__builtin_memcpy(k6.addr, dst, 16);
	rt = bpf_map_lookup_elem(&routes_v6, &k6);
	INXPECT_END(lookup);
	return rt;
}

SEC("xdp")
int xdp_router(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct route *rt;
	__u32 l3_off = 0;
	void *l3;
	int proto;

	/* One L3 pointer and the ethertype, not two nullable pointers: at
	 * -O1 clang loses the link between "iph set" and "ip6 unset" and the
	 * verifier sees a NULL dereference. */
	INXPECT_START(parse);
	proto = parse_eth(data, data_end, &l3_off);
	if (l3_off > sizeof(struct ethhdr) + MAX_VLAN * sizeof(struct vlan_hdr_)) {
		INXPECT_END(parse);
		return XDP_PASS; /* never: bounds l3_off for the verifier */
	}
	l3 = data + l3_off;
	if (proto == ETH_P_IP) {
		if (ipv4_hdr_len(l3, data_end) < 0) {
			INXPECT_END(parse);
			return XDP_PASS;
		}
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6) {
			INXPECT_END(parse);
			return XDP_PASS;
		}
	} else {
		INXPECT_END(parse);
		return XDP_PASS;
	}
	INXPECT_END(parse);

	if (proto == ETH_P_IP) {
		rt = route_lookup4(&((struct iphdr *)l3)->daddr);
	} else {
		struct ipv6hdr *ip6 = l3;

		/* Checked in parse already; clang -O1 tests a copy of the
		 * pointer there, which leaves this one unproven. */
		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		rt = route_lookup6(&ip6->daddr);
	}
	if (!rt)
		return XDP_PASS;

	INXPECT_START(rewrite);
	if (proto == ETH_P_IP) {
		struct iphdr *iph = l3;
		__u16 old, new;

		if ((void *)(iph + 1) > data_end || iph->ttl <= 1) {
			INXPECT_END(rewrite);
			return XDP_DROP; /* the bounds test never fails: checked above */
		}
		/* TTL shares its checksum word with the protocol byte. */
		old = *(__u16 *)&iph->ttl;
		iph->ttl--;
		new = *(__u16 *)&iph->ttl;
		csum_replace2(&iph->check, old, new);
	} else {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1) {
			INXPECT_END(rewrite);
			return XDP_DROP; /* the bounds test never fails: checked above */
		}
		ip6->hop_limit--;
	}
	__builtin_memcpy(eth->h_dest, rt->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, rt->smac, ETH_ALEN);
	INXPECT_END(rewrite);
	return XDP_TX;
}

char _license[] SEC("license") = "Dual BSD/GPL";
