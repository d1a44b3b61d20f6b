// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The probe runtime that inxpect-instrument links into an instrumented object.
 *
 * The rewriter inlines the fast path at each probe site: at a program entry
 * the sampling countdown, at a START or END a look at the sampling word (or
 * `left == load`), so an unsampled run makes no call at all. In a
 * sampled run a program-level START is inline too; an END, and START in
 * subprograms, call the functions below. Live caller-saved registers are
 * saved around the whole sequence. The counter read is the last thing
 * START does and the first thing END does after its checks, so few
 * instructions fall between the two.
 *
 * Built once per backend (see build.sh): INXPECT_BACKEND_{PMC,TSC,KTIME,PERF}
 * and INXPECT_NR_EVENTS (PMC slots read per probe).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "inxpect_runtime.h"

#ifndef INXPECT_NR_EVENTS
#define INXPECT_NR_EVENTS 1
#endif

/* Global functions: the verifier checks each once, on its own, instead of
 * walking it again at every call site on every path (which made programs
 * with branchy loops exceed the 1M-instruction limit once instrumented). */
#define __probe __attribute__((noinline, used))

/*
 * Whether the module's kfuncs may be called (pmc, tsc). A read-only flag the
 * verifier folds, not bpf_ksym_exists(): kernels before 6.4 refuse the
 * latter's ld_imm64 of a kfunc ("isn't KIND_VAR"). The loader clears it
 * before loading where the module is absent; the dead call is then removed.
 */
/* First in the section and never read. A map's value starts page-aligned,
 * and the arm64 JIT writes an address whose low 16 bits are zero with one
 * instruction fewer: a symbol the probes load at offset 0 would make their
 * cost depend on where the map landed (one load in 16). */
const volatile __u32 inxpect_ro_pad SEC(".rodata.inxpect") = 0;
const volatile __u32 inxpect_kfuncs SEC(".rodata.inxpect") = 1;
/* The key of inxpect_pcpu for the probes the rewriter inlines: a pointer to
 * read-only map memory serves as the key without a stack slot. */
const volatile __u32 inxpect_zero SEC(".rodata.inxpect") = 0;
/* inxpect_ids[i] == i: region i's key of inxpect_stats in read-only memory,
 * for the statistics inlined at END sites and for record() (no stack slot,
 * so __inxpect_record sets up no frame for it). */
#define ID1(x) (x)
#define ID4(x) ID1(x), ID1(x + 1), ID1(x + 2), ID1(x + 3)
#define ID16(x) ID4(x), ID4(x + 4), ID4(x + 8), ID4(x + 12)
#define ID64(x) ID16(x), ID16(x + 16), ID16(x + 32), ID16(x + 48)
const volatile __u32 inxpect_ids[INXPECT_MAX_REGIONS] SEC(".rodata.inxpect") = {
	ID64(0), ID64(64), ID64(128), ID64(192),
};

volatile struct inxpect_config inxpect_config SEC(".data.inxpect") = {
	.disabled = { 0, 0, 0, 0 },
	.sample_shift = 0,
	.abi = INXPECT_ABI,
	.sample_mask = 0,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct inxpect_pcpu);
} inxpect_pcpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, INXPECT_MAX_REGIONS);
	__type(key, __u32);
	__type(value, struct inxpect_stats);
} inxpect_stats SEC(".maps");

/*
 * A read with bit 63 set is invalid (the module's kfuncs: inactive slot, an
 * event no longer on its counter; perf: a failed read): the measurement it
 * belongs to is dropped and counted in `invalid`, never in the statistics.
 */
#define INXPECT_INVALID (1ULL << 63)

/*
 * pmc and tsc deltas are taken mod 2^32: the module's `_lo` kfuncs return
 * only the low half (no shift and or after the read, inside the window), and
 * no region runs long enough to wrap 32 bits (over a second).
 */
#if defined(INXPECT_BACKEND_PMC)
extern __u64 inxpect_read_pmc(__u32 slot) __ksym __weak;
extern __u64 inxpect_read_pmc0_lo(void) __ksym __weak;
/* END's read: validates after reading (outside the measurement), where
 * START's validates before. */
extern __u64 inxpect_read_pmc0_lo_end(void) __ksym __weak;
#define DELTA_32 1
#define COUNTER_PRESENT() inxpect_kfuncs
#define READ_COUNTERS(v) READ_COUNTERS_AS(v, inxpect_read_pmc0_lo)
#define READ_COUNTERS_END(v) READ_COUNTERS_AS(v, inxpect_read_pmc0_lo_end)
#define READ_COUNTERS_AS(v, lo)                             \
	do {                                                \
		(v)[0] = INXPECT_NR_EVENTS == 1 ?           \
			lo() :                              \
			inxpect_read_pmc(0);                \
		if (INXPECT_NR_EVENTS > 1)                  \
			(v)[1] = inxpect_read_pmc(1);       \
		if (INXPECT_NR_EVENTS > 2)                  \
			(v)[2] = inxpect_read_pmc(2);       \
		if (INXPECT_NR_EVENTS > 3)                  \
			(v)[3] = inxpect_read_pmc(3);       \
	} while (0)
#elif defined(INXPECT_BACKEND_TSC)
extern __u64 inxpect_read_tsc_lo(void) __ksym __weak;
#define DELTA_32 1
#define COUNTER_PRESENT() inxpect_kfuncs
#define READ_COUNTERS(v) ((v)[0] = inxpect_read_tsc_lo())
#elif defined(INXPECT_BACKEND_KTIME)
#define COUNTER_PRESENT() 1
#define READ_COUNTERS(v) ((v)[0] = bpf_ktime_get_ns())
#elif defined(INXPECT_BACKEND_PERF)
/* One perf event per CPU, opened by the loader: perf's own mechanism. */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} inxpect_perf SEC(".maps");
#define COUNTER_PRESENT() 1
static __always_inline __u64 perf_read(void)
{
	struct bpf_perf_event_value v;

	/* A failed read is marked invalid (bit 63), never taken as 0. */
	if (bpf_perf_event_read_value(&inxpect_perf, BPF_F_CURRENT_CPU, &v, sizeof(v)))
		return INXPECT_INVALID;
	return v.counter;
}
#define READ_COUNTERS(v) ((v)[0] = perf_read())
#else
#error "define one INXPECT_BACKEND_*"
#endif

#ifndef DELTA_32
#define DELTA_32 0
#endif
/* Whether a read can carry INXPECT_INVALID (the module's pmc kfuncs, perf). */
#if defined(INXPECT_BACKEND_PMC) || defined(INXPECT_BACKEND_PERF)
#define CAN_BE_INVALID 1
#else
#define CAN_BE_INVALID 0
#endif
#ifndef READ_COUNTERS_END
#define READ_COUNTERS_END(v) READ_COUNTERS(v)
#endif

/* end - start; negative (a clock that went back) as a large value. */
static __always_inline __u64 delta(__u64 now, __u64 then)
{
	return DELTA_32 ? (__u32)(now - then) : now - then;
}

/* The current run is sampled (the entry reloaded the countdown). */
static __always_inline int sampled_run(struct inxpect_pcpu *p)
{
	return p->left == p->load;
}

static __always_inline struct inxpect_pcpu *pcpu(void)
{
	/* A key in read-only map memory: no stack slot to write. */
	return bpf_map_lookup_elem(&inxpect_pcpu, (const void *)&inxpect_zero);
}

/*
 * START's bookkeeping: the region enabled, this run sampled, the counter
 * there; then marks the region held by this run. Returns the held entry, or
 * NULL when nothing is to be measured. (The run count and the sampling
 * decision are inlined by the rewriter at each program entry.)
 */
static __always_inline struct inxpect_held *start_hold(__u32 id)
{
	struct inxpect_pcpu *p;
	struct inxpect_held *h;

	if (id >= INXPECT_MAX_REGIONS)
		return 0;
	if (inxpect_config.disabled[id / 64] & (1ULL << (id % 64)))
		return 0;
	p = pcpu();
	if (!p || !sampled_run(p))
		return 0;
	/* Counted once per run at the program entry (no_counter), not here. */
	if (!COUNTER_PRESENT())
		return 0;
	h = &p->held[id];
	h->run = p->sampled;
	return h;
}

__probe int __inxpect_start(__u32 id)
{
	struct inxpect_held *h = start_hold(id);

	if (h)
		READ_COUNTERS(h->val);
	return 0;
}


/*
 * The bucket of every delta below 2^12, one byte each (the largest, 143, is
 * 4095's). GNU range designators: one line per bucket of a power of two.
 */
#define HS INXPECT_HIST_SUB
#define HB INXPECT_HIST_SUB_BITS
#define B1(k, s) [((HS + (s)) << ((k) - HB)) ... (((HS + (s) + 1) << ((k) - HB)) - 1)] = \
	((k) - HB + 1) * HS + (s)
#define B4(k, s) B1(k, s), B1(k, s + 1), B1(k, s + 2), B1(k, s + 3)
#define POW2(k) B4(k, 0), B4(k, 4), B4(k, 8), B4(k, 12)
#define LIN1(x) [x] = x
#define LIN4(x) LIN1(x), LIN1(x + 1), LIN1(x + 2), LIN1(x + 3)
/* Global: the statistics the rewriter inlines at END sites index it too. */
const volatile __u8 inxpect_bucket_lo[1 << 12] SEC(".rodata.inxpect") = {
	LIN4(0), LIN4(4), LIN4(8), LIN4(12),
	POW2(4), POW2(5), POW2(6), POW2(7), POW2(8), POW2(9), POW2(10), POW2(11),
};

/*
 * Above 2^12 a delta's bucket is its top 12 bits' bucket moved up by the
 * powers shifted out (the sub-bucket is the same bits): one compare and one
 * look-up for the common deltas, where a computed log2 took ~25 x86
 * instructions per measurement.
 */
static __always_inline __u32 bucket(__u64 d)
{
	if (d < (1 << 12))
		return inxpect_bucket_lo[d];
	if (d < (1 << 20))
		return inxpect_bucket_lo[d >> 8] + 8 * HS;
	if (d < (1 << 28))
		return inxpect_bucket_lo[d >> 16] + 16 * HS;
	if (d < (1ULL << 32))
		return inxpect_bucket_lo[d >> 24] + 24 * HS;
	return INXPECT_HIST_BUCKETS - 1;
}

/* Adds one measurement of region `id`, `now` - `then` per event, to its
 * statistics; `tail`: the region ends at a tail call (counted apart too). */
static __always_inline int record(__u32 id, __u64 *now, __u64 *then, int tail)
{
	struct inxpect_stats *s;
	__u32 b;
	int e;

	if (id >= INXPECT_MAX_REGIONS)
		return 0;
	s = bpf_map_lookup_elem(&inxpect_stats, (const void *)&inxpect_ids[id]);
	if (!s)
		return 0;
	/* Unrolled: a rotated loop entered in its middle is refused by 6.1's
	 * check_cfg ("back-edge from insn N to N+1": a fall-through edge into
	 * a block still on its walk), and the trip count is at most 4. */
#pragma unroll
	for (e = 0; e < INXPECT_NR_EVENTS; e++) {
		__u64 d = delta(now[e], then[e]);

		/* An invalid read at either end, or a 64-bit counter that went
		 * back: nothing of it enters the statistics. (tsc's reads are
		 * never invalid, its 32-bit deltas never negative.) */
		if ((CAN_BE_INVALID && (now[e] | then[e]) & INXPECT_INVALID) ||
		    (!DELTA_32 && (__s64)d < 0)) {
			s->invalid++;
			return 0;
		}
	}
#pragma unroll
	for (e = 0; e < INXPECT_NR_EVENTS; e++) {
		__u64 d = delta(now[e], then[e]);

		s->sum[e] += d;
		if (~d > s->min[e])
			s->min[e] = ~d;
		if (d > s->max[e])
			s->max[e] = d;
		b = bucket(d);
		if (b < INXPECT_HIST_BUCKETS)
			s->hist[e][b]++;
	}
	if (tail)
		s->tail_ends++;
	return 0;
}

/* Closes region `id` held by this run with the values `now`. */
static __always_inline int end_record(struct inxpect_pcpu *p, __u32 id, __u64 *now, int tail)
{
	struct inxpect_held *h;

	if (id >= INXPECT_MAX_REGIONS)
		return 0;
	h = &p->held[id];
	/* Guarded END: only a START of this very run counts (markers may be
	 * moved by the compiler, and an early return may skip an END). */
	if (!sampled_run(p) || h->run != p->sampled)
		return 0;
	h->run = 0;
	return record(id, now, h->val, tail);
}

__probe int __inxpect_end(__u32 id)
{
	__u64 now[INXPECT_MAX_EVENTS];

	/* Read first: the probe site calls END only in a sampled run, so the
	 * checks come after the read instead of between the reads. */
	struct inxpect_pcpu *p;

	if (!COUNTER_PRESENT())
		return 0;
	READ_COUNTERS_END(now);
	p = pcpu();
	if (!p)
		return 0;
	return end_record(p, id, now, 0);
}

/* One region a tail call left open, closed with the values in tail_now.
 * A global function: verified once, not once per region and path of the
 * loop below (inlined there, the loop took the verifier ~1M steps). */
__probe int __inxpect_tail_close(__u32 id)
{
	struct inxpect_pcpu *p = pcpu();

	if (!p)
		return 0;
	return end_record(p, id, p->tail_now, 1);
}

/*
 * A program entered by a tail call of this run (the rewriter's entry probe
 * found `tail == runs`, in a sampled run): the regions the caller still held
 * end here, at the callee's entry, with one read for all of them.
 * `nregions`: how many regions the object has.
 */
__probe int __inxpect_tail_enter(__u32 nregions)
{
	__u64 now[INXPECT_MAX_EVENTS];
	struct inxpect_pcpu *p;
	__u32 id;
	int e;

	if (!COUNTER_PRESENT())
		return 0;
	READ_COUNTERS_END(now);
	p = pcpu();
	if (!p || !sampled_run(p))
		return 0;
#pragma unroll
	for (e = 0; e < INXPECT_NR_EVENTS; e++)
		p->tail_now[e] = now[e];
	for (id = 0; id < INXPECT_MAX_REGIONS && id < nregions; id++)
		if (p->held[id].run == p->sampled)
			__inxpect_tail_close(id);
	return 0;
}

#if INXPECT_NR_EVENTS == 1 && !defined(INXPECT_BACKEND_PERF)
__probe int __inxpect_end_value(__u32 id, __u64 now0)
{
	__u64 now[INXPECT_MAX_EVENTS] = { now0 };
	struct inxpect_pcpu *p = pcpu();

	if (!p)
		return 0;
	return end_record(p, id, now, 0);
}

/*
 * END's statistics for a program-level site, which checked and cleared the
 * held START itself (through the per-CPU pointer its program keeps):
 * `now` - `then` into region `id`. What the percentile test drives.
 */
__probe int __inxpect_record(__u32 id, __u64 now, __u64 then)
{
	__u64 n[INXPECT_MAX_EVENTS] = { now }, t[INXPECT_MAX_EVENTS] = { then };

	return record(id, n, t, 0);
}
#endif

/* No license section: the linker refuses two different ones, and the
 * user's object carries its own (pmc, tsc and perf need it GPL-compatible). */
