// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * inxpect-count: a QEMU TCG plugin that counts guest instructions (user and
 * kernel) executed on one vCPU between two magic no-op instructions, and the
 * instruction distances between marked events inside that window.
 *
 * Debian ships no qemu-plugin.h, so the few public plugin-API declarations
 * used here are written out below (QEMU 10.0's API; the version is checked
 * by QEMU against `qemu_plugin_version` at load time).
 *
 * Guest protocol (16-bit `xchg` of a register with itself: a no-op that no
 * compiler emits, so only a program that wants to talk to us executes them):
 *
 *   66 87 db  xchg %bx,%bx   start a window on this vCPU
 *   66 87 c9  xchg %cx,%cx   stop it: prints one INXPECT-TCG line
 *   66 87 d2  xchg %dx,%dx   shift a 0 bit into the value register
 *   66 87 f6  xchg %si,%si   shift a 1 bit into the value register
 *   66 87 ff  xchg %di,%di   append the value to the marks, clear the value
 *   66 87 ed  xchg %bp,%bp   clear the marks
 *   66 87 c0  xchg %ax,%ax   the value becomes the window id, clear the value
 *
 * Marks are guest virtual addresses: the first is the period mark (e.g. the
 * entry of bpf_dispatcher_xdp_func, executed once per test_run iteration),
 * the others are counter-read marks (entries of the read functions). Inside
 * a window, every execution of a marked address and of `rdtsc`, `rdtscp` or
 * `rdpmc` records the instruction count; the gaps between consecutive events
 * of a class go into a histogram, whose most frequent values are printed:
 *
 *   INXPECT-TCG vcpu=V id=N insns=TOTAL first=F period=H:G/C,... reads=H:G/C,... ops=H:G/C,...
 *
 * with H the number of events and G/C gap value / how often it occurred
 * (four most frequent, most frequent first), and F the first period gap of
 * the window (`-` with fewer than two period events): test_run's first
 * iteration, the only one that sees the caller's packet unmodified. An instruction's count is the
 * number of instructions executed on the vCPU before it, so a gap is the
 * number of instructions from one event to the next (the first included).
 *
 * With the argument trace=LO-HI (window ids), every instruction of the
 * third period of each such window is printed, with its address and its
 * disassembly, one INXPECT-TRACE line each: where a probe's instructions go.
 *
 * Build: gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o inxpect-count.so inxpect-count.c
 * Use:   qemu-system-x86_64 ... -plugin ./inxpect-count.so -d plugin -D log
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the plugin API subset (declarations only) ---------------------------- */

typedef uint64_t qemu_plugin_id_t;
typedef struct {
	const char *target_name;
	struct {
		int min;
		int cur;
	} version;
	bool system_emulation;
	union {
		struct {
			int smp_vcpus;
			int max_vcpus;
		} system;
	};
} qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);

#define EXPORT __attribute__((visibility("default")))
EXPORT extern int qemu_plugin_version;
EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
			       char **argv);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
					  enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
					    qemu_plugin_vcpu_udata_cb_t cb,
					    enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
size_t qemu_plugin_insn_data(const struct qemu_plugin_insn *insn, void *dest, size_t len);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);
void qemu_plugin_outs(const char *string);

/* API version this plugin is written against (QEMU 10.0 accepts it). */
#ifndef INXPECT_PLUGIN_API
#define INXPECT_PLUGIN_API 4
#endif
EXPORT int qemu_plugin_version = INXPECT_PLUGIN_API;

/* ---- state ----------------------------------------------------------------- */

#define MAX_VCPUS 64
#define MAX_MARKS 16
#define HSLOTS 1024 /* power of two */
#define TOP 4

enum cls { C_PERIOD, C_READS, C_OPS, NCLS };
static const char *const cls_name[NCLS] = { "period", "reads", "ops" };

struct hist {
	uint64_t key[HSLOTS];
	uint32_t cnt[HSLOTS];
	uint16_t used[HSLOTS];
	uint32_t nused;
	uint64_t dropped;
};

struct vcpu {
	uint64_t count;     /* instructions started on this vCPU */
	uint64_t tb_before; /* count before the current TB */
	uint64_t value;     /* protocol value register */
	uint64_t id;        /* window id */
	uint64_t wstart;
	bool active;
	uint64_t last[NCLS];
	uint64_t hits[NCLS];
	uint64_t first; /* first period gap + 1, 0 when none */
	uint64_t tperiods; /* period marks seen in a traced window */
	struct hist *h[NCLS];
};

static struct vcpu vcpus[MAX_VCPUS];
static volatile uint64_t marks[MAX_MARKS];
static volatile int nmarks;

/* Traced window ids (trace=LO-HI); none when hi < lo. */
static uint64_t trace_lo = 1, trace_hi;
#define TRACE_PERIOD 3

struct tbinfo {
	uint64_t start, end;
	uint32_t n;
	char **disas; /* with trace=, each instruction's disassembly */
	uint64_t vaddr[];
};

enum kind { K_START, K_STOP, K_BIT0, K_BIT1, K_MARK, K_CLEAR, K_ID, K_OP };

/* ---- histogram --------------------------------------------------------------- */

static void hist_reset(struct hist *h)
{
	for (uint32_t i = 0; i < h->nused; i++) {
		h->key[h->used[i]] = 0;
		h->cnt[h->used[i]] = 0;
	}
	h->nused = 0;
	h->dropped = 0;
}

static void hist_add(struct hist *h, uint64_t gap)
{
	uint64_t k = gap + 1; /* 0 marks a free slot */
	uint32_t i = (uint32_t)(k * 0x9e3779b97f4a7c15ull >> 40) & (HSLOTS - 1);

	for (uint32_t probe = 0; probe < HSLOTS / 4; probe++, i = (i + 1) & (HSLOTS - 1)) {
		if (h->key[i] == k) {
			h->cnt[i]++;
			return;
		}
		if (!h->key[i]) {
			h->key[i] = k;
			h->cnt[i] = 1;
			h->used[h->nused++] = (uint16_t)i;
			return;
		}
	}
	h->dropped++;
}

/* Appends "H:G/C,G/C,..." (the TOP most frequent gaps, ties: smaller gap
 * first) to buf. */
static void hist_print(char *buf, size_t len, uint64_t hits, const struct hist *h)
{
	size_t o = strlen(buf);
	bool taken[HSLOTS] = { false };
	int printed = 0;

	o += snprintf(buf + o, len - o, "%" PRIu64 ":", hits);
	for (int j = 0; j < TOP && o < len; j++) {
		int best = -1;

		for (uint32_t u = 0; u < h->nused; u++) {
			uint32_t s = h->used[u];

			if (taken[s])
				continue;
			if (best < 0 || h->cnt[s] > h->cnt[best] ||
			    (h->cnt[s] == h->cnt[best] && h->key[s] < h->key[best]))
				best = (int)s;
		}
		if (best < 0)
			break;
		taken[best] = true;
		o += snprintf(buf + o, len - o, "%s%" PRIu64 "/%u", printed++ ? "," : "",
			      h->key[best] - 1, h->cnt[best]);
	}
	if (!printed && o < len)
		snprintf(buf + o, len - o, "-");
}

/* ---- callbacks --------------------------------------------------------------- */

static void event(struct vcpu *v, enum cls c, uint64_t at)
{
	if (v->hits[c]++) {
		hist_add(v->h[c], at - v->last[c]);
		if (c == C_PERIOD && v->hits[c] == 2)
			v->first = at - v->last[c] + 1;
	}
	v->last[c] = at;
}

static void tb_exec(unsigned int cpu, void *udata)
{
	struct tbinfo *t = udata;
	struct vcpu *v;
	int n;

	if (cpu >= MAX_VCPUS)
		return;
	v = &vcpus[cpu];
	v->tb_before = v->count;
	v->count += t->n;
	if (!v->active)
		return;
	if (t->disas && nmarks && v->id >= trace_lo && v->id <= trace_hi)
		for (uint32_t i = 0; i < t->n; i++) {
			char line[256];

			if (t->vaddr[i] == marks[0])
				v->tperiods++;
			if (v->tperiods != TRACE_PERIOD)
				continue;
			snprintf(line, sizeof(line), "INXPECT-TRACE id=%" PRIu64 " %" PRIx64 " %s\n",
				 v->id, t->vaddr[i], t->disas[i]);
			qemu_plugin_outs(line);
		}
	n = nmarks;
	for (int m = 0; m < n; m++) {
		uint64_t a = marks[m];

		if (a < t->start || a >= t->end)
			continue;
		for (uint32_t i = 0; i < t->n; i++)
			if (t->vaddr[i] == a)
				event(v, m ? C_READS : C_PERIOD, v->tb_before + i);
	}
}

static void window_end(struct vcpu *v, unsigned int cpu, uint64_t at)
{
	char line[1024];

	snprintf(line, sizeof(line), "INXPECT-TCG vcpu=%u id=%" PRIu64 " insns=%" PRIu64, cpu,
		 v->id, at - v->wstart);
	if (v->first)
		snprintf(line + strlen(line), sizeof(line) - strlen(line), " first=%" PRIu64,
			 v->first - 1);
	else
		strcat(line, " first=-");
	for (int c = 0; c < NCLS; c++) {
		size_t o = strlen(line);

		snprintf(line + o, sizeof(line) - o, " %s=", cls_name[c]);
		hist_print(line, sizeof(line) - 2, v->hits[c], v->h[c]);
	}
	strcat(line, "\n");
	qemu_plugin_outs(line);
	v->active = false;
}

static void insn_exec(unsigned int cpu, void *udata)
{
	uintptr_t u = (uintptr_t)udata;
	enum kind k = u & 0xff;
	uint64_t at;
	struct vcpu *v;

	if (cpu >= MAX_VCPUS)
		return;
	v = &vcpus[cpu];
	at = v->tb_before + (u >> 8);
	switch (k) {
	case K_START:
		v->active = true;
		v->wstart = at + 1;
		v->first = 0;
		v->tperiods = 0;
		for (int c = 0; c < NCLS; c++) {
			v->hits[c] = 0;
			v->last[c] = 0;
			hist_reset(v->h[c]);
		}
		break;
	case K_STOP:
		if (v->active)
			window_end(v, cpu, at);
		break;
	case K_BIT0:
	case K_BIT1:
		v->value = v->value << 1 | (k == K_BIT1);
		break;
	case K_MARK:
		if (nmarks < MAX_MARKS) {
			marks[nmarks] = v->value;
			nmarks = nmarks + 1;
		}
		v->value = 0;
		break;
	case K_CLEAR:
		nmarks = 0;
		v->value = 0;
		break;
	case K_ID:
		v->id = v->value;
		v->value = 0;
		break;
	case K_OP:
		if (v->active)
			event(v, C_OPS, at);
		break;
	}
}

static int classify(const uint8_t *b, size_t n)
{
	if (n == 3 && b[0] == 0x66 && b[1] == 0x87) {
		switch (b[2]) {
		case 0xdb: return K_START;
		case 0xc9: return K_STOP;
		case 0xd2: return K_BIT0;
		case 0xf6: return K_BIT1;
		case 0xff: return K_MARK;
		case 0xed: return K_CLEAR;
		case 0xc0: return K_ID;
		}
	}
	if (n == 2 && b[0] == 0x0f && (b[1] == 0x31 || b[1] == 0x33))
		return K_OP; /* rdtsc, rdpmc */
	if (n == 3 && b[0] == 0x0f && b[1] == 0x01 && b[2] == 0xf9)
		return K_OP; /* rdtscp */
	return -1;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);
	struct tbinfo *t = malloc(sizeof(*t) + n * sizeof(uint64_t));
	(void)id;

	if (!t || !n) {
		free(t);
		return;
	}
	t->n = (uint32_t)n;
	t->disas = trace_hi >= trace_lo ? calloc(n, sizeof(char *)) : NULL;
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		uint8_t b[16];
		size_t len = qemu_plugin_insn_data(insn, b, sizeof(b));
		int k = classify(b, len);

		t->vaddr[i] = qemu_plugin_insn_vaddr(insn);
		if (t->disas)
			t->disas[i] = qemu_plugin_insn_disas(insn);
		if (i == 0)
			t->start = t->vaddr[0];
		t->end = t->vaddr[i] + len;
		if (k >= 0)
			qemu_plugin_register_vcpu_insn_exec_cb(insn, insn_exec, QEMU_PLUGIN_CB_NO_REGS,
							       (void *)(uintptr_t)(k | i << 8));
	}
	/* Registered last, still runs before the first instruction's callbacks. */
	qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, t);
}

static void at_exit(qemu_plugin_id_t id, void *udata)
{
	char line[128];
	(void)id;
	(void)udata;

	for (int c = 0; c < MAX_VCPUS; c++)
		if (vcpus[c].count) {
			snprintf(line, sizeof(line), "INXPECT-TCG-EXIT vcpu=%d insns=%" PRIu64 "\n", c,
				 vcpus[c].count);
			qemu_plugin_outs(line);
		}
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
			       char **argv)
{
	char line[160];

	for (int a = 0; a < argc; a++)
		if (!strncmp(argv[a], "trace=", 6) &&
		    sscanf(argv[a] + 6, "%" SCNu64 "-%" SCNu64, &trace_lo, &trace_hi) != 2)
			return 1;

	for (int c = 0; c < MAX_VCPUS; c++)
		for (int k = 0; k < NCLS; k++) {
			vcpus[c].h[k] = calloc(1, sizeof(struct hist));
			if (!vcpus[c].h[k])
				return 1;
		}
	snprintf(line, sizeof(line), "INXPECT-TCG-LOADED target=%s api=%d (qemu %d..%d)\n",
		 info->target_name, qemu_plugin_version, info->version.min, info->version.cur);
	qemu_plugin_outs(line);
	qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
	qemu_plugin_register_atexit_cb(id, at_exit, NULL);
	return 0;
}
