// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * nat: source NAT for IPv4 TCP/UDP leaving an internal network.
 * Regions: parse, lookup (connection table, port allocation), rewrite
 * (addresses, ports, MACs), csum (RFC 1624 incremental L3/L4 updates).
 *
 * A frame is translated when it is IPv4 (header valid), not a fragment, TCP
 * with a full 20-byte header or UDP with a full 8-byte header, and its source
 * lies in nat_config's internal network. Its source address becomes the
 * external address and its source port the one allocated to its 5-tuple (the
 * first time a 5-tuple is seen it gets port_min + seq % range, seq counting
 * new connections from 0). Ethernet addresses are swapped (the frame goes
 * back out where it came from) and the verdict is XDP_TX. A UDP checksum of
 * 0 (none) stays 0. Everything else, including an unset configuration
 * (external address 0), gets XDP_PASS.
 *
 * The _sub variant looks up/allocates in a subprogram holding the `lookup`
 * region and walks VLAN tags in a loop.
 */
#include "common.h"

/* All addresses in network byte order, ports in host order. */
struct nat_config {
	__be32 external_ip;
	__be32 internal_net;
	__be32 internal_mask;
	__u16 port_min;
	__u16 port_max;
};

struct nat_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nat_config);
} nat_config SEC(".maps");

/* Entry 0: connections allocated so far. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} nat_seq SEC(".maps");

/* Original 5-tuple -> allocated source port (host order). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct nat_key);
	__type(value, __u32);
} nat_conns SEC(".maps");

/* Returns the allocated port (host order), or 0 when none can be had. */
APP_FN __u32 conn_port(struct nat_key *key, struct nat_config *cfg)
{
	__u32 zero = 0, range, port, *seq, *found;

	INXPECT_START(lookup);
	found = bpf_map_lookup_elem(&nat_conns, key);
	if (found) {
		port = *found;
		INXPECT_END(lookup);
		return port;
	}
	seq = bpf_map_lookup_elem(&nat_seq, &zero);
	if (!seq || cfg->port_max < cfg->port_min) {
		INXPECT_END(lookup);
		return 0;
	}
	range = (__u32)cfg->port_max - cfg->port_min + 1;
	port = cfg->port_min + *seq % range;
	*seq += 1;
	if (bpf_map_update_elem(&nat_conns, key, &port, BPF_NOEXIST)) {
		INXPECT_END(lookup);
		return 0;
	}
	INXPECT_END(lookup);
	return port;
}

SEC("xdp")
int xdp_nat(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct nat_config *cfg;
	struct nat_key key;
	struct iphdr *iph;
	__u16 *l4_csum, old_port, new_port;
	__be16 *l4_sport;
	__u32 zero = 0, l3_off = 0, port;
	__be32 old_ip;
	int proto, hl;
	__u8 mac[ETH_ALEN];

	INXPECT_START(parse);
	cfg = bpf_map_lookup_elem(&nat_config, &zero);
	if (!cfg || !cfg->external_ip) {
		INXPECT_END(parse);
		return XDP_PASS;
	}
	proto = parse_eth(data, data_end, &l3_off);
	if (proto != ETH_P_IP ||
	    l3_off > sizeof(struct ethhdr) + MAX_VLAN * sizeof(struct vlan_hdr_)) {
		INXPECT_END(parse);
		return XDP_PASS;
	}
	iph = data + l3_off;
	hl = ipv4_hdr_len(iph, data_end);
	if (hl < 0 || ipv4_is_fragment(iph) ||
	    (iph->saddr & cfg->internal_mask) != cfg->internal_net) {
		INXPECT_END(parse);
		return XDP_PASS;
	}
	__builtin_memset(&key, 0, sizeof(key));
	key.saddr = iph->saddr;
	key.daddr = iph->daddr;
	key.proto = iph->protocol;
	if (iph->protocol == IPPROTO_TCP) {
		struct tcphdr *th = (void *)iph + hl;

		if ((void *)(th + 1) > data_end) {
			INXPECT_END(parse);
			return XDP_PASS;
		}
		l4_sport = &th->source;
		key.dport = th->dest;
		l4_csum = &th->check;
	} else if (iph->protocol == IPPROTO_UDP) {
		struct udphdr *uh = (void *)iph + hl;

		if ((void *)(uh + 1) > data_end) {
			INXPECT_END(parse);
			return XDP_PASS;
		}
		l4_sport = &uh->source;
		key.dport = uh->dest;
		l4_csum = &uh->check;
	} else {
		INXPECT_END(parse);
		return XDP_PASS;
	}
	key.sport = *l4_sport;
	INXPECT_END(parse);

	port = conn_port(&key, cfg);
	if (!port)
		return XDP_PASS;

	INXPECT_START(rewrite);
	old_ip = iph->saddr;
	old_port = *l4_sport;
	new_port = bpf_htons((__u16)port);
	iph->saddr = cfg->external_ip;
	*l4_sport = new_port;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	INXPECT_END(rewrite);

	INXPECT_START(csum);
	csum_replace4(&iph->check, old_ip, cfg->external_ip);
	if (iph->protocol == IPPROTO_UDP && *l4_csum == 0) {
		/* UDP without checksum: leave it so. */
		INXPECT_END(csum);
		return XDP_TX;
	}
	/* The L4 checksum covers the pseudo-header's source address too. */
	csum_replace4(l4_csum, old_ip, cfg->external_ip);
	csum_replace2(l4_csum, old_port, new_port);
	if (iph->protocol == IPPROTO_UDP && *l4_csum == 0)
		*l4_csum = 0xffff; /* RFC 768: a computed 0 is sent as all ones */
	INXPECT_END(csum);
	return XDP_TX;
}

char _license[] SEC("license") = "Dual BSD/GPL";
