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

/* kfuncs: set the runtime's `inxpect_kfuncs` flag (the second u32 of
 * `.rodata.inxpect`) before loading, as the loader does where the module is
 * loaded (inxpect_loader::sys::set_kfuncs_flag). */
static struct bpf_object *open_load_flag(const char *path, bool kfuncs, int *err)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	struct bpf_program *p;
	struct bpf_map *m;

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

		if (!kfuncs || nl < sl || strcmp(n + nl - sl, ".rodata.inxpect"))
			continue;
		/* inxpect_kfuncs is the second u32 (RODATA_KFUNCS_OFFSET). */
		flag = bpf_map__initial_value(m, &sz);
		if (flag && sz >= 2 * sizeof(*flag))
			flag[1] = 1;
	}
	*err = bpf_object__load(obj);
	if (*err) {
		bpf_object__close(obj);
		return NULL;
	}
	return obj;
}

static void print_hex(const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
}

static bool memchr_nonzero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return true;
	return false;
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
			print_hex(val + c * stride, vsz);
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
