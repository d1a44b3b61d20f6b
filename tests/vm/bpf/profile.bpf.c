// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * perf's mechanism for profiling one BPF program, for `inxpect-bench vm`:
 * an fentry and an fexit program attached to the XDP program under test
 * (the target is set at load time, bpf_program__set_attach_target), each
 * reading this CPU's perf event with bpf_perf_event_read_value(), as
 * `bpftool prog profile` and `perf stat -b` do. fentry keeps the reading,
 * fexit reads again and accumulates the difference.
 *
 * `events` holds one perf event per CPU (a software cpu-clock in the x86
 * TCG guest, which has no PMU; hardware instructions in the arm64 guest);
 * `readings` the accumulated deltas, `counts` the number of fexit runs,
 * `lowest` the smallest delta of one run (0 until one ran).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 64);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct bpf_perf_event_value);
	__uint(max_entries, 1);
} at_entry SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct bpf_perf_event_value);
	__uint(max_entries, 1);
} readings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} lowest SEC(".maps");

SEC("fentry/xdp")
int inxpect_prof_entry(void *ctx)
{
	struct bpf_perf_event_value now;
	__u32 zero = 0, cpu = bpf_get_smp_processor_id();
	struct bpf_perf_event_value *e;

	(void)ctx;
	if (bpf_perf_event_read_value(&events, cpu, &now, sizeof(now)))
		return 0;
	e = bpf_map_lookup_elem(&at_entry, &zero);
	if (e)
		*e = now;
	return 0;
}

SEC("fexit/xdp")
int inxpect_prof_exit(void *ctx)
{
	struct bpf_perf_event_value now, *e, *acc;
	__u32 zero = 0, cpu = bpf_get_smp_processor_id();
	__u64 *n, *low, d;

	(void)ctx;
	if (bpf_perf_event_read_value(&events, cpu, &now, sizeof(now)))
		return 0;
	e = bpf_map_lookup_elem(&at_entry, &zero);
	acc = bpf_map_lookup_elem(&readings, &zero);
	n = bpf_map_lookup_elem(&counts, &zero);
	low = bpf_map_lookup_elem(&lowest, &zero);
	if (!e || !acc || !n || !low || !e->enabled)
		return 0;
	d = now.counter - e->counter;
	if (!*low || d < *low)
		*low = d;
	acc->counter += d;
	acc->enabled += now.enabled - e->enabled;
	acc->running += now.running - e->running;
	e->enabled = 0;
	*n += 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
