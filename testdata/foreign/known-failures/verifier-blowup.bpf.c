#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <inxpect.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} m SEC(".maps");

static __attribute__((noinline)) __u64 sub(__u64 v0, __u64 v1)
{
	__u64 v2 = 3, v3 = 5, v4 = 7, v5 = 11;
	__u64 buf[4] = {};
	v0 = v0 & v0;
	for (int i1 = 0; i1 < 6; i1++) {
		v4 += i1 * 33;
		if (v2 < v1) {
			v2 = v4 & v0;
			v3 = v3 & v3;
		}
		if (v4 == v0) {
			v3 = v1 ^ (v1 >> 9);
			v1 = (v0 >> 3) + 908806;
			v1 = v2 << (v1 & 63);
			v3 = (__u64)(__u32)v3 * 0x9e3779b1u;
		} else {
			v4 = v2 << (v4 & 63);
			v4 = v4 + v1;
			v0 = v2 | 618517;
			v3 = (__u64)(__u32)v1 * 0x9e3779b1u;
		}
		INXPECT_START(r0);
		v0 = v1 | 1035151;
		INXPECT_END(r0);
	}
	v1 = v0 - 452251;
	if (v2 != v5) {
		v0 = v1 * v3;
		v1 = v3 * v0;
		v2 = (v1 >> 3) + 53156;
		if (v5 != v1) {
			v5 = (__u64)(__u32)v3 * 0x9e3779b1u;
		} else {
			v4 = (__u64)(__u32)v5 * 0x9e3779b1u;
		}
	}
	return v0 ^ v1 ^ v2 ^ v3 ^ v4 ^ v5 ^ buf[1];
}

SEC("xdp")
int prog(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	__u64 buf[4] = {};
	if (data + 64 > end)
		return XDP_ABORTED;
	__u64 v0 = data[32];
	__u64 v1 = data[0];
	__u64 v2 = data[63];
	__u64 v3 = data[32];
	__u64 v4 = data[61];
	__u64 v5 = data[0];
	INXPECT_START(r1);
	v2 = sub(v2, v1);
	INXPECT_START(r2);
	buf[3] = v0;
	v1 += buf[(v1 + 3) & 3];
	INXPECT_END(r2);
	if (v3 == v0) {
		v2 += data[36];
		v2 = (__u64)(__u32)v0 * 0x9e3779b1u;
		{
			__u32 k = v1 & 7;
			__u64 *p = bpf_map_lookup_elem(&m, &k);
			if (p) { *p += v1; v5 ^= *p; }
		}
		{
			__u32 k = v4 & 7;
			__u64 val = v0;
			bpf_map_update_elem(&m, &k, &val, BPF_ANY);
		}
	} else {
		v0 += data[26];
	}
	buf[2] = v3;
	v2 += buf[(v2 + 2) & 3];
	INXPECT_END(r1);
	INXPECT_START(r3);
	{
		__u32 k = v2 & 7;
		__u64 val = v0;
		bpf_map_update_elem(&m, &k, &val, BPF_ANY);
	}
	if (v4 < v5) {
		v0 = v3 * v2;
		{
			__u32 k = v4 & 7;
			__u64 *p = bpf_map_lookup_elem(&m, &k);
			if (p) { *p += v4; v5 ^= *p; }
		}
	}
	v1 = sub(v3, v4);
	if (v2 < v0) {
		INXPECT_START(r4);
		if (v1 < v4) {
			v5 = v0 + v5;
			v0 = sub(v5, v1);
			v4 += data[7];
		} else {
			v3 = v2 * v0;
			v1 = v3 & v3;
			v2 = sub(v1, v1);
		}
		v1 += data[19];
		v3 += data[23];
		{
			__u32 k = v0 & 7;
			__u64 *p = bpf_map_lookup_elem(&m, &k);
			if (p) { *p += v0; v1 ^= *p; }
		}
		INXPECT_END(r4);
	} else {
		v0 = v5 & v3;
	}
	INXPECT_END(r3);
	if (v3 <= v0) {
		for (int i2 = 0; i2 < 5; i2++) {
			v2 += i2 * 68;
			{
				__u32 k = v5 & 7;
				__u64 val = v5;
				bpf_map_update_elem(&m, &k, &val, BPF_ANY);
			}
			{
				__u32 k = v1 & 7;
				__u64 *p = bpf_map_lookup_elem(&m, &k);
				if (p) { *p += v3; v2 ^= *p; }
			}
			v3 = sub(v0, v4);
			v3 = (__u64)(__u32)v1 * 0x9e3779b1u;
		}
		v4 = v5 ^ (v5 >> 10);
		if (v5 < v5) {
			v3 += data[17];
			v3 = v4 & v1;
			{
				__u32 k = v2 & 7;
				__u64 val = v4;
				bpf_map_update_elem(&m, &k, &val, BPF_ANY);
			}
		}
		buf[3] = v0;
		v3 += buf[(v3 + 3) & 3];
	}
	v3 = sub(v2, v1);
	v0 ^= sub(v1, v2);
	data[8] = (unsigned char)v0;
	data[9] = (unsigned char)v1;
	data[10] = (unsigned char)v2;
	data[11] = (unsigned char)v3;
	data[12] = (unsigned char)v4;
	data[13] = (unsigned char)v5;
	return (int)((v0 ^ v1 ^ v2 ^ v3 ^ v4 ^ v5 ^ buf[2]) & 3);
}

char LICENSE[] SEC("license") = "GPL";
