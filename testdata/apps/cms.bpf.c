// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cms: count-min sketch of flows, 4 rows x 2^13 u32 counters, keyed on the
 * IPv4/IPv6 5-tuple and hashed with fasthash64 under 4 seeds.
 * Regions: parse, hash (once per row), update (once per row).
 *
 * Verdicts: non-IP frames (ARP, unknown ethertypes, a third VLAN tag, frames
 * too short for Ethernet) -> XDP_PASS, so the host keeps working; IP frames
 * whose L3 or L4 header is malformed or cut short -> XDP_DROP, not counted;
 * every other IP frame is counted, then XDP_DROP (a sketch-only sink).
 * Ports are 0 for IPv4 fragments, non-TCP/UDP protocols, and IPv6 whose
 * next header is not TCP/UDP (extension headers are not walked).
 *
 * The _sub variant hashes in a subprogram and walks the rows in a loop.
 */
#include "common.h"

#define CMS_ROWS 4
#define CMS_COLS_LOG2 13
#define CMS_COLS (1u << CMS_COLS_LOG2)

/* Counter (row, col) is at key row * CMS_COLS + col. Per-CPU, so the
 * increments need no atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CMS_ROWS * CMS_COLS);
	__type(key, __u32);
	__type(value, __u32);
} cms_counts SEC(".maps");

/* 40 bytes, hashed as five little-endian u64 words. Addresses and ports are
 * kept in network byte order; IPv4 uses the first word of each address. */
struct flow_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

#define FLOW_OK 0
#define FLOW_NOT_IP 1
#define FLOW_BAD 2

static __always_inline int parse_ports(void *l4, void *data_end, __u8 proto,
				       struct flow_key *key)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end)
			return FLOW_BAD;
		key->sport = th->source;
		key->dport = th->dest;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return FLOW_BAD;
		key->sport = uh->source;
		key->dport = uh->dest;
	}
	return FLOW_OK;
}

APP_FN int parse_flow(void *data, void *data_end, struct flow_key *key)
{
	__u32 l3_off = 0;
	int proto = parse_eth(data, data_end, &l3_off);

	if (proto < 0)
		return FLOW_NOT_IP;
	if (l3_off > sizeof(struct ethhdr) + MAX_VLAN * sizeof(struct vlan_hdr_))
		return FLOW_BAD; /* never: bounds l3_off for the verifier */
	if (proto == ETH_P_IP) {
		struct iphdr *iph = data + l3_off;
		int hl = ipv4_hdr_len(iph, data_end);

		if (hl < 0)
			return FLOW_BAD;
		key->src[0] = iph->saddr;
		key->dst[0] = iph->daddr;
		key->proto = iph->protocol;
		if (ipv4_is_fragment(iph))
			return FLOW_OK;
		return parse_ports((void *)iph + hl, data_end, iph->protocol, key);
	}
	if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = data + l3_off;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return FLOW_BAD;
		__builtin_memcpy(key->src, &ip6->saddr, 16);
		__builtin_memcpy(key->dst, &ip6->daddr, 16);
		key->proto = ip6->nexthdr;
		return parse_ports(ip6 + 1, data_end, ip6->nexthdr, key);
	}
	return FLOW_NOT_IP;
}

static __always_inline __u64 fh_mix(__u64 h)
{
	h ^= h >> 23;
	h *= 0x2127599bf4325c37ULL;
	h ^= h >> 47;
	return h;
}

/* fasthash64 over the 40-byte key (no tail: the size is a multiple of 8),
 * folded to 32 bits as fasthash32 does. */
APP_FN __u32 flow_hash(const struct flow_key *key, __u64 seed)
{
	const __u64 m = 0x880355f21e6d1965ULL;
	const __u64 *w = (const __u64 *)key;
	__u64 h;

	INXPECT_START(hash);
	h = seed ^ (sizeof(*key) * m);
	NO_UNROLL
	for (int i = 0; i < (int)(sizeof(*key) / 8); i++) {
		h ^= fh_mix(w[i]);
		h *= m;
	}
	h = fh_mix(h);
	INXPECT_END(hash);
	return (__u32)(h - (h >> 32));
}

SEC("xdp")
int xdp_cms(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flow_key key;
	int res;

	__builtin_memset(&key, 0, sizeof(key));
	INXPECT_START(parse);
	res = parse_flow(data, data_end, &key);
	if (res == FLOW_NOT_IP) {
		INXPECT_END(parse);
		return XDP_PASS;
	}
	if (res != FLOW_OK) {
		INXPECT_END(parse);
		return XDP_DROP;
	}
	INXPECT_END(parse);

	NO_UNROLL
	for (__u32 row = 0; row < CMS_ROWS; row++) {
		/* Seeds: the golden-ratio constant times 1..4. */
		__u64 seed = 0x9E3779B97F4A7C15ULL * (row + 1);
		__u32 idx = row * CMS_COLS + (flow_hash(&key, seed) & (CMS_COLS - 1));
		__u32 *cnt;

		INXPECT_START(update);
		cnt = bpf_map_lookup_elem(&cms_counts, &idx);
		if (!cnt) {
			INXPECT_END(update);
			continue;
		}
		*cnt += 1;
		INXPECT_END(update);
	}
	return XDP_DROP;
}

char _license[] SEC("license") = "Dual BSD/GPL";
