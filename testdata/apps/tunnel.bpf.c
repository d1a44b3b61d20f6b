// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tunnel: IP-in-IP (RFC 2003, IPv4 protocol 4) encapsulation.
 * Regions: parse, encap (grow headroom, rebuild L2, outer header), csum.
 *
 * An IPv4 frame (valid header, total length >= header length and inside
 * the frame, total length + 20 <= 65535) gets a 20-byte outer header after
 * its L2 header (VLAN tags kept): version 4, ihl 5, the inner TOS, total
 * length = inner + 20, id 0, the inner DF bit and no fragment offset, the
 * configured TTL, protocol 4, the configured addresses, and a full header
 * checksum. Ethernet addresses come from the configuration; verdict XDP_TX.
 * Anything else, or an unset configuration (remote address 0), gets
 * XDP_PASS; a failed bpf_xdp_adjust_head gets XDP_ABORTED.
 *
 * The _sub variant computes the checksum in a subprogram holding the `csum`
 * region, as a loop over the header's words, and walks VLAN tags in a loop.
 */
#include "common.h"

struct tunnel_config {
	__be32 local_ip;
	__be32 remote_ip;
	__u8 dmac[ETH_ALEN];
	__u8 smac[ETH_ALEN];
	__u8 ttl;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tunnel_config);
} tunnel_config SEC(".maps");

/* Full checksum of a 20-byte IPv4 header whose check field is 0. */
APP_FN __u16 ipv4_csum(__u16 *words)
{
	__u32 s = 0;

	INXPECT_START(csum);
	NO_UNROLL
	for (int i = 0; i < 10; i++)
		s += words[i];
	s = (__u16)~csum_fold16(s);
	INXPECT_END(csum);
	return s;
}

SEC("xdp")
int xdp_tunnel(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tunnel_config *cfg;
	struct iphdr *iph, *outer;
	struct ethhdr *eth;
	__u32 zero = 0, l3_off = 0;
	__u16 tot_len;
	__u8 l2_tail[10], tos;
	__be16 df;
	int hl;

	INXPECT_START(parse);
	cfg = bpf_map_lookup_elem(&tunnel_config, &zero);
	if (!cfg || !cfg->remote_ip) {
		INXPECT_END(parse);
		return XDP_PASS;
	}
	if (parse_eth(data, data_end, &l3_off) != ETH_P_IP ||
	    l3_off > sizeof(struct ethhdr) + MAX_VLAN * sizeof(struct vlan_hdr_)) {
		INXPECT_END(parse);
		return XDP_PASS;
	}
	iph = data + l3_off;
	hl = ipv4_hdr_len(iph, data_end);
	if (hl < 0) {
		INXPECT_END(parse);
		return XDP_PASS;
	}
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len < hl || (void *)iph + tot_len > data_end ||
	    tot_len > 0xFFFF - sizeof(struct iphdr)) {
		INXPECT_END(parse);
		return XDP_PASS;
	}
	tos = iph->tos;
	df = iph->frag_off & bpf_htons(0x4000);
	/* Bytes 12..21 hold the ethertype and any VLAN tags; with fewer tags
	 * the rest is IP header, overwritten below by the outer header. */
	if (data + 12 + sizeof(l2_tail) > data_end) {
		INXPECT_END(parse);
		return XDP_PASS; /* never: the IPv4 header ends at >= 34 */
	}
	__builtin_memcpy(l2_tail, data + 12, sizeof(l2_tail));
	INXPECT_END(parse);

	INXPECT_START(encap);
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr))) {
		INXPECT_END(encap);
		return XDP_ABORTED;
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	/* Bound l3_off again: gcc reloads it from the stack, where the
	 * verifier no longer knows the check above. */
	if (l3_off > sizeof(struct ethhdr) + MAX_VLAN * sizeof(struct vlan_hdr_)) {
		INXPECT_END(encap);
		return XDP_ABORTED;
	}
	outer = data + l3_off;
	if ((void *)(outer + 1) > data_end || data + 22 > data_end) {
		INXPECT_END(encap);
		return XDP_ABORTED; /* never: the frame only grew */
	}
	__builtin_memcpy(eth->h_dest, cfg->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->smac, ETH_ALEN);
	__builtin_memcpy(data + 12, l2_tail, sizeof(l2_tail));
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = tos;
	outer->tot_len = bpf_htons(tot_len + sizeof(struct iphdr));
	outer->id = 0;
	outer->frag_off = df;
	outer->ttl = cfg->ttl;
	outer->protocol = IPPROTO_IPIP;
	outer->check = 0;
	outer->saddr = cfg->local_ip;
	outer->daddr = cfg->remote_ip;
	INXPECT_END(encap);

	outer->check = ipv4_csum((__u16 *)outer);
	return XDP_TX;
}

char _license[] SEC("license") = "Dual BSD/GPL";
