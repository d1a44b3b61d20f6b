// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * inxpect-vm-bench: the guest side of `inxpect-bench vm` (static, libbpf).
 * Runs BPF_PROG_TEST_RUN windows that the TCG plugin bench/tcg/inxpect-count.c
 * counts: each test_run syscall is bracketed by two magic no-op instructions
 * (see the plugin for the protocol), on one pinned CPU.
 *
 *   inxpect-vm-bench info
 *       prints the clocksource and the kernel addresses used as marks.
 *   inxpect-vm-bench run NAME OBJ [--packet FILE] [--maps FILE] [--fentry PROFILE.o]
 *                        [--perf-map MAP] [--reps N,N,...] [--trials T] [--cpu C]
 *                        [--id-base ID] [--events EV,EV] [--count-insns]
 *                        [--fentry-event instructions|cpu-clock] [--dump MAP]...
 *       loads OBJ (XDP), fills maps from FILE (lines `MAP KEYHEX VALUEHEX`),
 *       puts a per-CPU software cpu-clock perf event into MAP (the `perf`
 *       backend's inxpect_perf), optionally attaches PROFILE.o's fentry and
 *       fexit programs to it (what `bpftool prog profile` does), then for each
 *       trial and each repeat N: one counted test_run window, after one
 *       warm-up window. Windows are numbered from ID (default 1; the warm-up
 *       takes ID), the number the plugin prints with its count.
 *       With a PMU (the arm64 guest): --events configures the module's slots
 *       for the run and sets the runtime's kfunc flag; --count-insns counts
 *       the kernel instructions of each window with a perf event of this
 *       task (exact under -icount shift=0), printed as insns=N;
 *       --fentry-event puts that event (default cpu-clock) in the profile's
 *       `events`; --dump prints MAP's entries after the windows.
 *
 * Output (one line each):
 *   INXPECT-BENCH-INFO key=value...
 *   INXPECT-BENCH name=NAME id=ID repeat=N trial=T retval=R duration_ns=D [insns=I]
 *   INXPECT-BENCH-PROFILE name=NAME runs=N counter_delta=D min=M   (fentry/fexit)
 *   INXPECT-VM-MAP obj=NAME map=M key=HEX [cpu=C] value=HEX       (--dump)
 *   INXPECT-BENCH-ERROR name=NAME what=... err=...
 * Exit status 0 when every window ran.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "vm_util.h"

/* ---- the plugin protocol ------------------------------------------------------ */

#ifdef __x86_64__
#define MAGIC(b) asm volatile(".byte 0x66, 0x87, " #b ::: "memory")
#else
/* The TCG plugin is x86-only; on arm64 the guest's own PMU counts. */
#define MAGIC(b) asm volatile("" ::: "memory")
#endif

static void tcg_value(uint64_t v)
{
	for (int i = 63; i >= 0; i--) {
		if (v >> i & 1)
			MAGIC(0xf6);
		else
			MAGIC(0xd2);
	}
}

static void tcg_mark(uint64_t addr)
{
	tcg_value(addr);
	MAGIC(0xff);
}

static void tcg_id(uint64_t id)
{
	tcg_value(id);
	MAGIC(0xc0);
}

/* ---- helpers -------------------------------------------------------------------- */

/* libbpf prints a refused program's whole verifier log in one message; over
 * the serial console that takes minutes for a big program. Keep its first
 * line and the last lines (the reason). */
static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	static char buf[1 << 20];
	const char *begin, *end, *tail, *nl;
	int n = 0;

	if (level == LIBBPF_DEBUG && !getenv("INXPECT_VM_VERBOSE"))
		return 0;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	begin = strstr(buf, "-- BEGIN PROG LOAD LOG --");
	end = begin ? strstr(begin, "-- END PROG LOAD LOG --") : NULL;
	if (!begin || !end)
		return fputs(buf, stdout);
	tail = end;
	while (tail > begin && n < 4)
		if (*--tail == '\n')
			n++;
	nl = strchr(begin, '\n');
	printf("%.*s[...]%.*s", (int)(nl ? nl - buf + 1 : begin - buf), buf, (int)(end - tail),
	       tail);
	return fputs(end, stdout);
}

static void bench_error(const char *name, const char *what, int err)
{
	printf("INXPECT-BENCH-ERROR name=%s what=%s err=%d (%s)\n", name, what, err,
	       strerror(err < 0 ? -err : err));
}

static uint64_t ksym(const char *want)
{
	FILE *f = fopen("/proc/kallsyms", "r");
	char line[512], name[256], type;
	unsigned long long a;
	uint64_t found = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx %c %255s", &a, &type, name) == 3 && !strcmp(name, want)) {
			found = a;
			break;
		}
	}
	fclose(f);
	return found;
}

static void read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");

	buf[0] = 0;
	if (f) {
		if (!fgets(buf, (int)len, f))
			buf[0] = 0;
		fclose(f);
	}
	buf[strcspn(buf, "\n")] = 0;
	if (!buf[0])
		snprintf(buf, len, "unknown");
}

/* The period mark first, then the counter-read functions. */
static const char *const read_syms[] = {
	"inxpect_read_tsc", "inxpect_read_tsc_lo", "inxpect_read_pmc", "inxpect_read_pmc0_lo",
	"inxpect_read_pmc0_lo_end",
	"bpf_ktime_get_ns", "bpf_perf_event_read_value",
};

static void set_marks(bool print)
{
	uint64_t a = ksym("bpf_dispatcher_xdp_func");

	MAGIC(0xed); /* clear */
	tcg_mark(a);
	if (print)
		printf("INXPECT-BENCH-INFO mark=period sym=bpf_dispatcher_xdp_func addr=%#llx\n",
		       (unsigned long long)a);
	for (size_t i = 0; i < sizeof(read_syms) / sizeof(read_syms[0]); i++) {
		a = ksym(read_syms[i]);
		if (!a)
			continue;
		tcg_mark(a);
		if (print)
			printf("INXPECT-BENCH-INFO mark=read sym=%s addr=%#llx\n", read_syms[i],
			       (unsigned long long)a);
	}
}

static int cmd_info(void)
{
	char cs[128], avail[256];
	struct utsname u;

	uname(&u);
	read_line("/sys/devices/system/clocksource/clocksource0/current_clocksource", cs,
		  sizeof(cs));
	read_line("/sys/devices/system/clocksource/clocksource0/available_clocksource", avail,
		  sizeof(avail));
	for (char *p = avail; *p; p++)
		if (*p == ' ')
			*p = ',';
	printf("INXPECT-BENCH-INFO kernel=%s clocksource=%s available=%s cpus=%ld\n", u.release, cs,
	       avail, sysconf(_SC_NPROCESSORS_ONLN));
	set_marks(true);
	return 0;
}

static int unhex(const char *s, unsigned char *out, size_t max)
{
	size_t n = strlen(s);

	if (n % 2 || n / 2 > max)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned int b;

		if (sscanf(s + 2 * i, "%2x", &b) != 1)
			return -1;
		out[i] = (unsigned char)b;
	}
	return (int)(n / 2);
}

static int fill_maps(struct bpf_object *obj, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[4096], mname[128], khex[1024], vhex[2048];
	unsigned char k[512], v[1024];

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		struct bpf_map *m;

		if (sscanf(line, "%127s %1023s %2047s", mname, khex, vhex) != 3)
			continue;
		m = bpf_object__find_map_by_name(obj, mname);
		if (!m || unhex(khex, k, sizeof(k)) < 0 || unhex(vhex, v, sizeof(v)) < 0) {
			fclose(f);
			return -EINVAL;
		}
		if (bpf_map_update_elem(bpf_map__fd(m), k, v, BPF_ANY)) {
			int e = -errno;

			fclose(f);
			return e;
		}
	}
	fclose(f);
	return 0;
}

/* A counting event on `cpu`, all tasks: software cpu-clock (what perf reads
 * with where there is no PMU) or hardware instructions. */
static int cpu_event(int cpu, bool insns)
{
	struct perf_event_attr a = {
		.type = insns ? PERF_TYPE_HARDWARE : PERF_TYPE_SOFTWARE,
		.size = sizeof(a),
		.config = insns ? PERF_COUNT_HW_INSTRUCTIONS : PERF_COUNT_SW_CPU_CLOCK,
	};

	return (int)syscall(SYS_perf_event_open, &a, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
}

/* This task's kernel instructions (the test_run syscall's), pinned so that
 * it is never multiplexed away. */
static int task_kernel_insns(void)
{
	struct perf_event_attr a = {
		.type = PERF_TYPE_HARDWARE,
		.size = sizeof(a),
		.config = PERF_COUNT_HW_INSTRUCTIONS,
		.exclude_user = 1,
		.exclude_hv = 1,
		.pinned = 1,
	};

	return (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
}

static uint64_t read_count(int fd)
{
	uint64_t v = 0;

	if (read(fd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

static int fill_perf_map(struct bpf_map *m, int ncpu, bool insns)
{
	for (int c = 0; c < ncpu; c++) {
		int fd = cpu_event(c, insns);
		__u32 key = c, val;

		if (fd < 0)
			return -errno;
		val = fd;
		if (bpf_map_update_elem(bpf_map__fd(m), &key, &val, BPF_ANY))
			return -errno;
		/* the fd stays open: the map holds the event while we run */
	}
	return 0;
}

static unsigned char default_pkt[64] = {
	0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x08, 0x00, 0x45, 0x00, 0x00, 0x32, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11,
	0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x30, 0x39,
	0x00, 0x35, 0x00, 0x1e, 0x00, 0x00,
};

/* One counted test_run; `insns_fd` (or -1) counts its kernel instructions
 * into *insns. */
static int window(int fd, const void *pkt, size_t len, int repeat, uint64_t id, __u32 *retval,
		  __u32 *duration, int insns_fd, uint64_t *insns)
{
	unsigned char out[4096];
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt, .data_size_in = len,
		    .data_out = out, .data_size_out = sizeof(out), .repeat = repeat);
	uint64_t before = 0;
	int ret;

	tcg_id(id);
	if (insns_fd >= 0)
		before = read_count(insns_fd);
	MAGIC(0xdb); /* start */
	ret = bpf_prog_test_run_opts(fd, &opts);
	MAGIC(0xc9); /* stop */
	if (insns_fd >= 0)
		*insns = read_count(insns_fd) - before;
	*retval = opts.retval;
	*duration = opts.duration;
	return ret ? -errno : 0;
}

static int cmd_run(int argc, char **argv)
{
	const char *name = argv[0], *path = argv[1], *maps = NULL, *fentry = NULL,
		   *perf_map = NULL, *events = NULL, *dumps[8];
	unsigned char *pkt = default_pkt;
	size_t pkt_len = sizeof(default_pkt);
	int reps[16] = { 100, 1100 }, nreps = 2, trials = 3, cpu = 1, err, fd, failed = 0;
	int ndump = 0, evfd = -1, insns_fd = -1;
	bool count_insns = false, fentry_insns = false;
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	struct bpf_object *obj, *prof = NULL;
	struct bpf_link *links[2] = { NULL, NULL };
	struct bpf_program *prog, *xdp = NULL;
	uint64_t next_id = 1;
	cpu_set_t set;

	for (int i = 2; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--count-insns")) {
			count_insns = true;
			i--;
			continue;
		}
		if (!v) {
			bench_error(name, "usage", EINVAL);
			return 2;
		}
		if (!strcmp(a, "--packet")) {
			err = read_file(v, &pkt, &pkt_len);
			if (err) {
				bench_error(name, "packet", err);
				return 1;
			}
		} else if (!strcmp(a, "--maps")) {
			maps = v;
		} else if (!strcmp(a, "--fentry")) {
			fentry = v;
		} else if (!strcmp(a, "--perf-map")) {
			perf_map = v;
		} else if (!strcmp(a, "--events")) {
			events = v;
		} else if (!strcmp(a, "--dump") && ndump < 8) {
			dumps[ndump++] = v;
		} else if (!strcmp(a, "--fentry-event")) {
			if (strcmp(v, "instructions") && strcmp(v, "cpu-clock")) {
				bench_error(name, "usage", EINVAL);
				return 2;
			}
			fentry_insns = !strcmp(v, "instructions");
		} else if (!strcmp(a, "--id-base")) {
			next_id = strtoull(v, NULL, 0);
		} else if (!strcmp(a, "--trials")) {
			trials = atoi(v);
		} else if (!strcmp(a, "--cpu")) {
			cpu = atoi(v);
		} else if (!strcmp(a, "--reps")) {
			char *s = strdup(v), *tok, *save = NULL;

			nreps = 0;
			for (tok = strtok_r(s, ",", &save); tok && nreps < 16;
			     tok = strtok_r(NULL, ",", &save))
				reps[nreps++] = atoi(tok);
			free(s);
		} else {
			bench_error(name, "usage", EINVAL);
			return 2;
		}
	}
	if (cpu >= ncpu)
		cpu = 0;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		bench_error(name, "sched_setaffinity", errno);
		return 1;
	}

	if (events) {
		evfd = configure_events(events);
		if (evfd < 0) {
			bench_error(name, "events", evfd);
			return 1;
		}
	}
	if (count_insns) {
		insns_fd = task_kernel_insns();
		if (insns_fd < 0) {
			bench_error(name, "perf_event_open instructions", errno);
			return 1;
		}
	}
	obj = open_load_flag(path, events != NULL, &err);
	if (!obj) {
		bench_error(name, "load", err);
		return 1;
	}
	bpf_object__for_each_program(prog, obj) {
		if (bpf_program__type(prog) == BPF_PROG_TYPE_XDP &&
		    strncmp(bpf_program__name(prog), "__inxpect_", 10)) {
			xdp = prog;
			break;
		}
	}
	if (!xdp) {
		bench_error(name, "no XDP program", ENOENT);
		goto out;
	}
	fd = bpf_program__fd(xdp);
	{
		/* What the verifier walked, the module present (kfunc reads live). */
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);

		if (!bpf_obj_get_info_by_fd(fd, &info, &len))
			printf("INXPECT-BENCH-VERIFIED name=%s insns=%u\n", name, info.verified_insns);
	}
	if (maps && (err = fill_maps(obj, maps))) {
		bench_error(name, "maps", err);
		goto out;
	}
	if (perf_map) {
		struct bpf_map *m = bpf_object__find_map_by_name(obj, perf_map);

		err = m ? fill_perf_map(m, ncpu, false) : -ENOENT;
		if (err) {
			bench_error(name, "perf map", err);
			goto out;
		}
	}
	if (fentry) {
		struct bpf_map *ev;
		int i = 0;

		prof = bpf_object__open_file(fentry, NULL);
		err = libbpf_get_error(prof);
		if (err) {
			prof = NULL;
			bench_error(name, "open profile", err);
			goto out;
		}
		bpf_object__for_each_program(prog, prof) {
			err = bpf_program__set_attach_target(prog, fd, bpf_program__name(xdp));
			if (err) {
				bench_error(name, "set_attach_target", err);
				goto out;
			}
		}
		err = bpf_object__load(prof);
		if (err) {
			bench_error(name, "load profile", err);
			goto out;
		}
		ev = bpf_object__find_map_by_name(prof, "events");
		err = ev ? fill_perf_map(ev, ncpu, fentry_insns) : -ENOENT;
		if (err) {
			bench_error(name, "profile events", err);
			goto out;
		}
		bpf_object__for_each_program(prog, prof) {
			links[i] = bpf_program__attach_trace(prog);
			err = libbpf_get_error(links[i]);
			if (err) {
				links[i] = NULL;
				bench_error(name, "attach", err);
				goto out;
			}
			i++;
		}
	}

	set_marks(false);
	/* One warm-up run: first-touch costs (page faults, lazy init) stay out. */
	{
		__u32 r, d;

		uint64_t n;

		window(fd, pkt, pkt_len, reps[0], next_id++, &r, &d, insns_fd, &n);
	}
	for (int t = 0; t < trials; t++) {
		for (int k = 0; k < nreps; k++) {
			__u32 retval = 0, dur = 0;
			uint64_t id = next_id++, insns = 0;
			char extra[40] = "";

			err = window(fd, pkt, pkt_len, reps[k], id, &retval, &dur, insns_fd,
				     &insns);
			if (err) {
				bench_error(name, "test_run", err);
				failed++;
				continue;
			}
			if (insns_fd >= 0)
				snprintf(extra, sizeof(extra), " insns=%llu",
					 (unsigned long long)insns);
			printf("INXPECT-BENCH name=%s id=%llu repeat=%d trial=%d retval=%u duration_ns=%u%s\n",
			       name, (unsigned long long)id, reps[k], t, retval, dur, extra);
		}
	}
	if (prof) {
		struct bpf_map *acc = bpf_object__find_map_by_name(prof, "readings");
		struct bpf_map *runs = bpf_object__find_map_by_name(prof, "counts");
		struct bpf_map *low = bpf_object__find_map_by_name(prof, "lowest");
		__u64 vals[64 * 3] = { 0 }, sum = 0, nruns = 0, min = 0;
		__u32 zero = 0;

		if (acc && ncpu <= 64 && !bpf_map_lookup_elem(bpf_map__fd(acc), &zero, vals))
			for (int c = 0; c < ncpu; c++)
				sum += vals[c * 3];
		if (runs && ncpu <= 64 && !bpf_map_lookup_elem(bpf_map__fd(runs), &zero, vals))
			for (int c = 0; c < ncpu; c++)
				nruns += vals[c];
		/* Per CPU: the fewest counts one run took (0: none ran there). */
		if (low && ncpu <= 64 && !bpf_map_lookup_elem(bpf_map__fd(low), &zero, vals))
			for (int c = 0; c < ncpu; c++)
				if (vals[c] && (!min || vals[c] < min))
					min = vals[c];
		printf("INXPECT-BENCH-PROFILE name=%s runs=%llu counter_delta=%llu min=%llu\n", name,
		       (unsigned long long)nruns, (unsigned long long)sum,
		       (unsigned long long)min);
	}
	for (int i = 0; i < ndump; i++) {
		err = dump_map(name, obj, dumps[i]);
		if (err) {
			bench_error(name, "dump", err);
			failed++;
		}
	}
out:
	for (int i = 0; i < 2; i++)
		bpf_link__destroy(links[i]);
	bpf_object__close(prof);
	bpf_object__close(obj);
	if (insns_fd >= 0)
		close(insns_fd);
	if (evfd >= 0)
		close(evfd);
	return failed || !xdp ? 1 : 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_print(libbpf_print);
	if (argc == 2 && !strcmp(argv[1], "info"))
		return cmd_info();
	if (argc >= 4 && !strcmp(argv[1], "run"))
		return cmd_run(argc - 2, argv + 2);
	fprintf(stderr, "usage: inxpect-vm-bench info\n"
			"       inxpect-vm-bench run NAME OBJ [--packet F] [--maps F] "
			"[--fentry PROFILE.o] [--perf-map MAP] [--reps N,N] [--trials T] [--cpu C] "
			"[--id-base ID] [--events EV,EV] [--count-insns] "
			"[--fentry-event instructions|cpu-clock] [--dump MAP]...\n");
	return 2;
}
