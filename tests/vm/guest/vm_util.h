/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Shared by the guest programs (inxpect-vm-test.c, inxpect-vm-bench.c). */
#ifndef INXPECT_VM_UTIL_H
#define INXPECT_VM_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "inxpect_uapi.h"

/* The whole file at `path` in a malloc'd buffer; -errno, or -EINVAL when
 * it is empty. */
static int read_file(const char *path, unsigned char **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	long n;

	if (!f)
		return -errno;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	*buf = malloc(n > 0 ? n : 1);
	*len = n > 0 && *buf ? fread(*buf, 1, n, f) : 0;
	fclose(f);
	return *len ? 0 : -EINVAL;
}

static bool memchr_nonzero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return true;
	return false;
}

/*
 * Direct per-CPU access, as the loader does it (inxpect_loader::pcpu, which
 * says why): where the kernel resolves an ld_imm64 of a one-entry per-CPU
 * array's value to this CPU's copy (Linux 7.x), every look-up of
 * inxpect_pcpu by a read-only zero key becomes that ld_imm64 and three nops,
 * in place, once libbpf has relocated the program. This libbpf (1.4) has no
 * bpf_object__prepare(), so the rewrite runs in a program handler's
 * prog_prepare_load_fn, as libbpf_register_prog_handler() documents.
 * `pcpu_lookup` (the run option --pcpu lookup) keeps the look-ups.
 */
static bool pcpu_lookup;
static int pcpu_rewritten;

static bool pcpu_direct_supported(void)
{
	static int known = -1;
	struct bpf_insn prog[] = {
		{ .code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = 1,
		  .src_reg = BPF_PSEUDO_MAP_VALUE },
		{ 0 },
		{ .code = BPF_LDX | BPF_MEM | BPF_DW, .dst_reg = 0, .src_reg = 1 },
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = XDP_PASS },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	int map, fd;

	if (known >= 0)
		return known;
	known = 0;
	map = bpf_map_create(BPF_MAP_TYPE_PERCPU_ARRAY, NULL, 4, 8, 1, NULL);
	if (map < 0)
		return false;
	prog[0].imm = map;
	fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "inxpect_pcpu", "GPL", prog, 5, NULL);
	if (fd >= 0) {
		known = 1;
		close(fd);
	}
	close(map);
	return known;
}

static bool is_ldimm64(const struct bpf_insn *x, int dst, int src)
{
	return x->code == (BPF_LD | BPF_DW | BPF_IMM) && x->dst_reg == dst && x->src_reg == src;
}

/* This libbpf gives no map's fd while it loads (bpf_map__fd() is -1 until
 * the object is loaded), so the maps are told by what the kernel says of
 * the fds in the relocated instructions. */
static bool pcpu_map_info(int fd, struct bpf_map_info *info)
{
	__u32 len = sizeof(*info);

	memset(info, 0, sizeof(*info));
	return !bpf_map_get_info_by_fd(fd, info, &len);
}

static bool pcpu_is_map(int fd)
{
	struct bpf_map_info i;

	return pcpu_map_info(fd, &i) && i.type == BPF_MAP_TYPE_PERCPU_ARRAY &&
	       i.max_entries == 1 && !strcmp(i.name, "inxpect_pcpu");
}

/* Four zero bytes at `off` of a read-only array (the runtime's
 * `.rodata.inxpect`, frozen by libbpf when it created it): key 0 for good. */
static bool pcpu_zero_key(int fd, int off)
{
	struct bpf_map_info i;
	unsigned char *v;
	__u32 zero = 0;
	bool ok;

	if (!pcpu_map_info(fd, &i) || i.type != BPF_MAP_TYPE_ARRAY ||
	    !(i.map_flags & BPF_F_RDONLY_PROG) || off < 0 || (__u32)off + 4 > i.value_size)
		return false;
	v = malloc(i.value_size);
	ok = v && !bpf_map_lookup_elem(fd, &zero, v) && !memchr_nonzero(v + off, 4);
	free(v);
	return ok;
}

static bool pcpu_is_target(const struct bpf_insn *x, int n, int at)
{
	for (int pc = 0; pc < n; pc++) {
		int cls = BPF_CLASS(x[pc].code), op = BPF_OP(x[pc].code), rel;

		if (x[pc].code == (BPF_JMP | BPF_CALL) && x[pc].src_reg == BPF_PSEUDO_CALL)
			rel = x[pc].imm;
		else if ((cls == BPF_JMP || cls == BPF_JMP32) && op != BPF_CALL && op != BPF_EXIT)
			rel = x[pc].code == (BPF_JMP32 | BPF_JA) ? x[pc].imm : x[pc].off;
		else
			continue;
		if (pc + rel + 1 == at)
			return true;
	}
	return false;
}

/*
 * The runtime's `inxpect_kfuncs` flag folded into its tests, as the loader
 * does on every kernel (inxpect_loader::pcpu::fold_flag): `rN = &ro + a;
 * wN = *(u32 *)(rN + b)` with a + b the flag's offset in `.rodata.inxpect`
 * becomes `wN = flag` and two nops. The flag's value: what the guest set
 * before loading (`kfuncs_flag`).
 */
static int flag_value = -1;
static int flag_folded;

/* libbpf names the map by its section alone (the name fills the kernel's
 * 15 characters); read-only for programs, frozen at creation. */
static bool flag_is_rodata(int fd)
{
	struct bpf_map_info i;

	return pcpu_map_info(fd, &i) && i.type == BPF_MAP_TYPE_ARRAY &&
	       (i.map_flags & BPF_F_RDONLY_PROG) && !strcmp(i.name, ".rodata.inxpect");
}

/* A set flag's load gone altogether (inxpect_loader::pcpu::nonnull_guard,
 * which says why): `if rN == 0` after it becomes `if r0 == 0` where the
 * instruction before is a memory access through R0, no jump enters the
 * load or the test, and the next instruction sets rN without reading it. */
static int flag_guarded;

static bool flag_guard(const struct bpf_insn *x, size_t n, size_t i)
{
	const struct bpf_insn *p, *t, *nx;
	int r = x[i].dst_reg, base;

	if (i < 1 || i + 5 > n || r == 0)
		return false;
	p = &x[i - 1];
	t = &x[i + 3];
	nx = &x[i + 4];
	switch (BPF_CLASS(p->code)) {
	case BPF_LDX:
		base = p->src_reg;
		break;
	case BPF_ST:
	case BPF_STX:
		base = p->dst_reg;
		break;
	default:
		return false;
	}
	if (BPF_MODE(p->code) != BPF_MEM || base != 0)
		return false;
	if (t->code != (BPF_JMP | BPF_JEQ | BPF_K) || t->dst_reg != r || t->src_reg || t->imm)
		return false;
	bool sets = nx->dst_reg == r &&
		    ((nx->code == (BPF_ALU64 | BPF_MOV | BPF_K) && !nx->src_reg && !nx->off) ||
		     (nx->code == (BPF_ALU | BPF_MOV | BPF_K) && !nx->src_reg && !nx->off) ||
		     (BPF_CLASS(nx->code) == BPF_LDX && BPF_MODE(nx->code) == BPF_MEM &&
		      nx->src_reg != r));
	return sets && !pcpu_is_target(x, n, i) && !pcpu_is_target(x, n, i + 3);
}

static int flag_fold(struct bpf_insn *x, size_t n)
{
	int hits = 0;

	if (flag_value < 0)
		return 0;
	for (size_t i = 0; i + 3 <= n; i++) {
		struct bpf_insn *a = &x[i], *l = &x[i + 2];
		bool mid = false;

		if (a->code != (BPF_LD | BPF_DW | BPF_IMM) || a->src_reg != BPF_PSEUDO_MAP_VALUE ||
		    l->code != (BPF_LDX | BPF_MEM | BPF_W) || l->dst_reg != a->dst_reg ||
		    l->src_reg != a->dst_reg || (long)a[1].imm + l->off != 4 ||
		    !flag_is_rodata(a->imm))
			continue;
		for (size_t t = i + 1; t < i + 3; t++)
			mid = mid || pcpu_is_target(x, n, t);
		if (mid)
			continue;
		int dst = a->dst_reg;
		bool guard = flag_value != 0 && flag_guard(x, n, i);

		memset(&x[i], 0, 3 * sizeof(*x));
		if (guard) {
			x[i].code = BPF_JMP | BPF_JA;
			x[i + 3].dst_reg = BPF_REG_0;
			flag_guarded++;
		} else {
			x[i].code = BPF_ALU | BPF_MOV | BPF_K;
			x[i].dst_reg = dst;
			x[i].imm = flag_value;
		}
		x[i + 1].code = BPF_JMP | BPF_JA;
		x[i + 2].code = BPF_JMP | BPF_JA;
		hits++;
		i += 2;
	}
	return hits;
}

static bool insn_is(const struct bpf_insn *x, __u8 code, int dst, int src, int off, int imm)
{
	return x->code == code && x->dst_reg == dst && x->src_reg == src && x->off == off &&
	       x->imm == imm;
}

/* The context save around an entry's look-up at `i`, moved to the sampled
 * path where the look-up is direct (inxpect_loader::pcpu::unhoist, which
 * says why): `rX = r1; look-up; if r0 == 0 ...; r1 = rX; r2 = left; if r2
 * ==/!= 0 ...` and `rX = rX` where the sampled path starts become two nops
 * and `rX = r1` there. */
static int pcpu_unhoisted;

static void pcpu_unhoist(struct bpf_insn *x, size_t n, size_t i)
{
	const __u8 mov = BPF_ALU64 | BPF_MOV | BPF_X;
	struct bpf_insn *t;
	size_t sampled;
	int r;

	if (i < 1 || i + 9 > n)
		return;
	r = x[i - 1].dst_reg;
	if (r < 6 || r > 9 || !insn_is(&x[i - 1], mov, r, 1, 0, 0) ||
	    !insn_is(&x[i + 5], BPF_JMP | BPF_JEQ | BPF_K, 0, 0, x[i + 5].off, 0) ||
	    !insn_is(&x[i + 6], mov, 1, r, 0, 0) ||
	    /* 40: inxpect_pcpu's `left` (pcpu::LEFT) */
	    !insn_is(&x[i + 7], BPF_LDX | BPF_MEM | BPF_DW, 2, 0, 40, 0) ||
	    pcpu_is_target(x, n, i) || pcpu_is_target(x, n, i + 6) || pcpu_is_target(x, n, i + 7))
		return;
	t = &x[i + 8];
	if (insn_is(t, BPF_JMP | BPF_JEQ | BPF_K, 2, 0, t->off, 0))
		sampled = i + 9 + t->off;
	else if (insn_is(t, BPF_JMP | BPF_JNE | BPF_K, 2, 0, t->off, 0))
		sampled = i + 9;
	else
		return;
	if (sampled >= n || !insn_is(&x[sampled], mov, r, r, 0, 0))
		return;
	memset(&x[i - 1], 0, sizeof(*x));
	x[i - 1].code = BPF_JMP | BPF_JA;
	memset(&x[i + 6], 0, sizeof(*x));
	x[i + 6].code = BPF_JMP | BPF_JA;
	x[sampled].src_reg = 1;
	pcpu_unhoisted++;
}

static int pcpu_prepare(struct bpf_program *prog, struct bpf_prog_load_opts *opts, long cookie)
{
	size_t n = bpf_program__insn_cnt(prog);
	struct bpf_insn *x;
	int hits = 0, folded, pfd;
	bool direct = !pcpu_lookup && pcpu_direct_supported();

	(void)opts;
	(void)cookie;
	x = malloc(n * sizeof(*x));
	if (!x)
		return -ENOMEM;
	memcpy(x, bpf_program__insns(prog), n * sizeof(*x));
	folded = flag_fold(x, n);
	for (size_t i = 0; direct && i + 5 <= n; i++) {
		struct bpf_insn *a = &x[i], *b = &x[i + 2];
		bool map_a, map_b, key_a, key_b, mid = false;

		/* The call first: the map tests below are system calls. */
		if (x[i + 4].code != (BPF_JMP | BPF_CALL) || x[i + 4].src_reg || x[i + 4].imm != 1)
			continue;
		map_a = is_ldimm64(a, 1, BPF_PSEUDO_MAP_FD) && pcpu_is_map(a->imm);
		map_b = is_ldimm64(b, 1, BPF_PSEUDO_MAP_FD) && pcpu_is_map(b->imm);
		key_a = is_ldimm64(a, 2, BPF_PSEUDO_MAP_VALUE) && pcpu_zero_key(a->imm, a[1].imm);
		key_b = is_ldimm64(b, 2, BPF_PSEUDO_MAP_VALUE) && pcpu_zero_key(b->imm, b[1].imm);
		if (!((map_a && key_b) || (key_a && map_b)))
			continue;
		for (size_t t = i + 1; t < i + 5; t++)
			mid = mid || pcpu_is_target(x, n, t);
		if (mid)
			continue;
		pfd = map_a ? a->imm : b->imm;
		memset(&x[i], 0, 5 * sizeof(*x));
		x[i].code = BPF_LD | BPF_DW | BPF_IMM;
		x[i].src_reg = BPF_PSEUDO_MAP_VALUE;
		x[i].imm = pfd;
		for (int k = 2; k < 5; k++)
			x[i + k].code = BPF_JMP | BPF_JA;
		pcpu_unhoist(x, n, i);
		hits++;
		i += 4;
	}
	if (hits || folded) {
		int err = bpf_program__set_insns(prog, x, n);

		if (err) {
			free(x);
			return err;
		}
	}
	free(x);
	pcpu_rewritten += hits;
	flag_folded += folded;
	return 0;
}

/* The program handlers the rewrite needs, for the sections the guest's
 * objects use (registered once; libbpf matches them before its own). */
static void pcpu_register(void)
{
	static bool done;
	LIBBPF_OPTS(libbpf_prog_handler_opts, o, .prog_prepare_load_fn = pcpu_prepare);

	if (done)
		return;
	done = true;
	libbpf_register_prog_handler("xdp", BPF_PROG_TYPE_XDP, BPF_XDP, &o);
	libbpf_register_prog_handler("tc", BPF_PROG_TYPE_SCHED_CLS, 0, &o);
	libbpf_register_prog_handler("classifier", BPF_PROG_TYPE_SCHED_CLS, 0, &o);
	/* Sections libbpf does not know: the apps are XDP by contract. */
	libbpf_register_prog_handler(NULL, BPF_PROG_TYPE_XDP, 0, &o);
}

/* kfuncs: set the runtime's `inxpect_kfuncs` flag (the second u32 of
 * `.rodata.inxpect`) before loading, as the loader does where the module is
 * loaded (inxpect_loader::sys::set_kfuncs_flag). Prints how the probes
 * reach the per-CPU state (INXPECT-VM-INFO pcpu). */
static struct bpf_object *open_load_flag(const char *path, bool kfuncs, int *err)
{
	struct bpf_object *obj;
	struct bpf_program *p;
	struct bpf_map *m;

	pcpu_register();
	flag_value = -1;
	obj = bpf_object__open_file(path, NULL);
	*err = libbpf_get_error(obj);
	if (*err)
		return NULL;
	/* The runtime's global functions are programs without a type. */
	bpf_object__for_each_program(p, obj) {
		if (bpf_program__type(p) == BPF_PROG_TYPE_UNSPEC)
			bpf_program__set_type(p, BPF_PROG_TYPE_XDP);
	}
	bpf_object__for_each_map(m, obj) {
		const char *n = bpf_map__name(m);
		size_t nl = strlen(n), sl = strlen(".rodata.inxpect"), sz = 0;
		__u32 *flag;

		if (nl < sl || strcmp(n + nl - sl, ".rodata.inxpect"))
			continue;
		/* inxpect_kfuncs is the second u32 (RODATA_KFUNCS_OFFSET). */
		flag = bpf_map__initial_value(m, &sz);
		if (flag && sz >= 2 * sizeof(*flag)) {
			if (kfuncs)
				flag[1] = 1;
			flag_value = flag[1];
		}
	}
	pcpu_rewritten = 0;
	pcpu_unhoisted = 0;
	flag_folded = 0;
	flag_guarded = 0;
	*err = bpf_object__load(obj);
	if (*err) {
		bpf_object__close(obj);
		return NULL;
	}
	printf("INXPECT-VM-INFO pcpu obj=%s has_pcpu=%d direct=%d supported=%d folded=%d "
	       "guarded=%d unhoisted=%d\n",
	       path, bpf_object__find_map_by_name(obj, "inxpect_pcpu") != NULL, pcpu_rewritten,
	       !pcpu_lookup && pcpu_direct_supported(), flag_folded, flag_guarded,
	       pcpu_unhoisted);
	return obj;
}

static void print_hex(const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
}

/* A map value as hex, each run of 16 or more zero bytes as `zN.` (N in
 * decimal): the per-CPU state is 30 KB, mostly zeros, and the serial
 * console is slow. Decoded by inxpect_tests::vm_value. */
static void print_value(const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n;) {
		size_t z = i;

		while (z < n && !b[z])
			z++;
		if (z - i >= 16) {
			printf("z%zu.", z - i);
			i = z;
		} else {
			printf("%02x", b[i++]);
		}
	}
}

static int dump_map(const char *oname, struct bpf_object *obj, const char *mname)
{
	struct bpf_map *m = bpf_object__find_map_by_name(obj, mname);
	unsigned char key[512], next[512], *val;
	size_t ksz, vsz, ncpu = 1, stride;
	bool first = true, percpu;
	int fd;

	if (!m)
		return -ENOENT;
	fd = bpf_map__fd(m);
	ksz = bpf_map__key_size(m);
	vsz = bpf_map__value_size(m);
	switch (bpf_map__type(m)) {
	case BPF_MAP_TYPE_PERCPU_ARRAY:
	case BPF_MAP_TYPE_PERCPU_HASH:
	case BPF_MAP_TYPE_LRU_PERCPU_HASH:
		percpu = true;
		ncpu = libbpf_num_possible_cpus();
		break;
	default:
		percpu = false;
	}
	if (ksz > sizeof(key))
		return -E2BIG;
	stride = percpu ? (vsz + 7) / 8 * 8 : vsz;
	val = calloc(ncpu, stride);
	if (!val)
		return -ENOMEM;
	while (bpf_map_get_next_key(fd, first ? NULL : key, next) == 0) {
		first = false;
		memcpy(key, next, ksz);
		if (bpf_map_lookup_elem(fd, key, val))
			continue;
		for (size_t c = 0; c < ncpu; c++) {
			/* Absent means zero: keeps big arrays off the slow
			 * serial console. */
			if (!memchr_nonzero(val + c * stride, vsz))
				continue;
			printf("INXPECT-VM-MAP obj=%s map=%s key=", oname, mname);
			print_hex(key, ksz);
			if (percpu)
				printf(" cpu=%zu", c);
			printf(" value=");
			print_value(val + c * stride, vsz);
			printf("\n");
		}
	}
	free(val);
	return 0;
}

/* Adds EVENT (instructions, cycles, or hw:N; a `:long` suffix asks for a
 * 64-bit counter, arm64's config1 bit 0) to cfg's next slot. */
static int add_event(struct inxpect_config *cfg, const char *a)
{
	struct inxpect_event *ev;
	char name[64];
	const char *colon = strchr(a, ':');
	size_t len = strlen(a);

	if (cfg->nr_events >= INXPECT_MAX_SLOTS)
		return -E2BIG;
	ev = &cfg->events[cfg->nr_events];
	memset(ev, 0, sizeof(*ev));
	ev->type = PERF_TYPE_HARDWARE;
	if (len >= sizeof(name))
		return -EINVAL;
	memcpy(name, a, len + 1);
	if (colon && !strcmp(colon, ":long")) {
		ev->config1 = 1;
		name[colon - a] = 0;
	}
	if (!strcmp(name, "instructions"))
		ev->config = PERF_COUNT_HW_INSTRUCTIONS;
	else if (!strcmp(name, "cycles"))
		ev->config = PERF_COUNT_HW_CPU_CYCLES;
	else if (!strncmp(name, "hw:", 3))
		ev->config = strtoull(name + 3, NULL, 0);
	else
		return -EINVAL;
	cfg->nr_events++;
	return 0;
}

/* Opens the device and configures the comma-separated events: the
 * descriptor, or -errno. The configuration lives as long as the descriptor
 * (the module releases it when its owner closes). */
static int configure_events(const char *list)
{
	struct inxpect_config cfg;
	char buf[256], *tok, *save = NULL;
	int fd, ret = 0;

	memset(&cfg, 0, sizeof(cfg));
	snprintf(buf, sizeof(buf), "%s", list);
	for (tok = strtok_r(buf, ",", &save); tok && !ret; tok = strtok_r(NULL, ",", &save))
		ret = add_event(&cfg, tok);
	if (ret)
		return ret;
	fd = open(INXPECT_DEVICE, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ioctl(fd, INXPECT_IOC_SET_EVENTS, &cfg)) {
		ret = -errno;
		close(fd);
		return ret;
	}
	return fd;
}

#endif
