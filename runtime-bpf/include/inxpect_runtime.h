/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Layout of the data the instrumented program shares with the loader.
 * The rewriter links a runtime object built from src/runtime.bpf.c into the
 * user's object; the loader reads these maps. Mirrored in Rust by
 * rewriter/src/runtime.rs: change both together and bump INXPECT_ABI.
 */
#ifndef __INXPECT_RUNTIME_H
#define __INXPECT_RUNTIME_H

#define INXPECT_ABI 10
#define INXPECT_MAX_REGIONS 256
#define INXPECT_MAX_EVENTS 4
/* Log-linear histogram: deltas below 2^SUB_BITS have a bucket each; above,
 * every power of two [2^k, 2^(k+1)) is cut into 2^SUB_BITS equal buckets
 * (width 2^(k-SUB_BITS), at most 1/16 of the values in it); deltas of 2^32
 * and more share the last bucket. */
#define INXPECT_HIST_SUB_BITS 4
#define INXPECT_HIST_SUB (1 << INXPECT_HIST_SUB_BITS)
#define INXPECT_HIST_BUCKETS ((32 - INXPECT_HIST_SUB_BITS + 1) * INXPECT_HIST_SUB + 1)

/* Map `.data.inxpect` (a global variable section): changed by the loader
 * while the program runs, read by the probes with a direct load. */
struct inxpect_config {
	__u64 disabled[INXPECT_MAX_REGIONS / 64]; /* bit i: region i not measured
						   * (a sampled run's mask as it is) */
	__u32 sample_shift;                      /* measure 1 run in 2^k */
	__u32 abi;                               /* INXPECT_ABI */
	__u64 sample_mask;                       /* 2^k - 1: the countdown a sampled
						  * run reloads (pcpu.left) */
};

/* Map `inxpect_stats`: PERCPU_ARRAY, key = region id. */
struct inxpect_stats {
	__u64 pad1;                      /* was `count`: the completed
					  * measurements are the sum of
					  * hist[0], one bucket each */
	__u64 invalid;                   /* dropped: a read was invalid (bit 63
					  * set: inactive or moved counter, no
					  * module) or went backwards */
	__u64 tail_ends;                 /* of those: ended by a tail call */
	__u64 pad;
	__u64 sum[INXPECT_MAX_EVENTS];
	__u64 min[INXPECT_MAX_EVENTS];   /* complemented (~min): 0 = no
					  * measurement, so the first needs
					  * no test of a count */
	__u64 max[INXPECT_MAX_EVENTS];
	/* bucket b: d < 16: b = d; d < 2^32 with k = floor(log2 d):
	 * b = (k - 3) * 16 + ((d >> (k - 4)) & 15); else the last one. */
	__u64 hist[INXPECT_MAX_EVENTS][INXPECT_HIST_BUCKETS];
};

/* END's inline statistics of region i < INXPECT_FAST_REGIONS, kept in
 * inxpect_pcpu so that a program-level END reaches them through the
 * per-CPU pointer it already holds, with no look-up: event 0 of a delta
 * below 2^12 (INXPECT_FAST_DELTA) from valid reads, as in inxpect_stats
 * (hist: the same buckets, 144 of them below 2^12). The loader adds them
 * to region i's inxpect_stats entry when it reads. */
#define INXPECT_FAST_REGIONS 16
#define INXPECT_FAST_DELTA (1 << 12)
#define INXPECT_FAST_BUCKETS 144
struct inxpect_fast {
	__u64 sum;
	__u64 min;                       /* complemented, as in inxpect_stats */
	__u64 max;
	__u64 hist[INXPECT_FAST_BUCKETS];
};

struct inxpect_held {
	__u64 run;                       /* run id that took the START, 0 = none */
	__u64 val[INXPECT_MAX_EVENTS];
};

/* Map `inxpect_pcpu`: PERCPU_ARRAY with one entry. */
struct inxpect_pcpu {
	__u64 runs;          /* the countdowns the sampled runs on this CPU
			      * loaded (`load` each), paid ahead; program
			      * entries so far: runs + sampled - left */
	__u64 sampled;       /* runs chosen by sampling; also the id of the
			      * last sampled run (held[].run) */
	__u64 pad0;          /* was `cur`, which always equalled `sampled` */
	__u64 tail;          /* left + 1 while a tail call is under way: the
			      * program it enters continues this run */
	__u64 no_counter;    /* sampled runs without the backend's counter
			      * (module absent): nothing was measured */
	__u64 left;          /* sampling countdown: a run that finds it 0 is
			      * sampled and reloads it with the config's mask,
			      * any other takes one off */
	__u64 load;          /* what `left` was last loaded with: the current
			      * run is the sampled one while left == load */
	__u64 pad;
	struct inxpect_held held[INXPECT_MAX_REGIONS];
	__u64 tail_now[INXPECT_MAX_EVENTS]; /* the read that closes the regions
					      * a tail call left open */
	struct inxpect_fast fast[INXPECT_FAST_REGIONS];
	/* The verifier bounds a bucket read from the table by a byte (255),
	 * not by the table's 143: the last region's hist needs room for it. */
	__u64 fast_slack[256 - INXPECT_FAST_BUCKETS];
};

#endif /* __INXPECT_RUNTIME_H */
