// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * inxpect-vm-test: the test driver inside the qemu guest (static, libbpf).
 *
 *   inxpect-vm-test kmod KO BPFDIR [RELOADS]
 *       module tests with BPFDIR/kfunc_test{,_rodata}.o: weak kfuncs
 *       without the module, insmod, module BTF,
 *       ioctl ABI, kfunc calls through BPF_PROG_TEST_RUN (XDP and TC), CPU
 *       hotplug, rmmod refused while in use, RELOADS unload/reload cycles.
 *       Leaves the module loaded.
 *   inxpect-vm-test run OBJ [--prog NAME] [--repeat N] [--retval N]
 *                           [--packet FILE | --frames FILE] [--dump MAP]...
 *                           [--pcpu lookup]
 *       loads OBJ (its look-ups of inxpect_pcpu made direct where the
 *       kernel can, unless --pcpu lookup; vm_util.h), test_runs each XDP/TC program (or only NAME) N times
 *       (default 1; 0 = load only) on a 64-byte UDP frame or FILE's bytes
 *       (--frames: each frame of FILE in turn, u16 length + bytes each),
 *       checks the verdict if --retval is given, prints the MAPs' entries
 *       (only values that are not all zero; per-CPU maps one line per CPU).
 *   inxpect-vm-test rmmod
 *       unloads the module (retrying while programs are being freed).
 *
 * Output, one line each, parsed by tests/vm/run.sh and tests/tests/vm.rs:
 *   INXPECT-VM: ok NAME
 *   INXPECT-VM: FAIL NAME: DETAIL
 *   INXPECT-VM-RUN obj=O prog=P retval=R duration_ns=D repeat=N
 *   INXPECT-VM-INFO pcpu obj=O has_pcpu=0|1 direct=N supported=0|1
 *   INXPECT-VM-MAP obj=O map=M key=HEX [cpu=C] value=HEX
 * Exit status: 0 when nothing failed.
 */
#define _GNU_SOURCE
#define _GNU_SOURCE /* sched_setaffinity */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <linux/capability.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <bpf/btf.h>

#include "inxpect_uapi.h"
#include "kfunc_test.h"
#include "vm_util.h"

static int n_ok, n_fail;

static void check(bool ok, const char *name, const char *fmt, ...)
{
	va_list ap;

	if (ok) {
		n_ok++;
		printf("INXPECT-VM: ok %s\n", name);
		return;
	}
	n_fail++;
	printf("INXPECT-VM: FAIL %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt,
			va_list ap)
{
	if (level == LIBBPF_DEBUG && !getenv("INXPECT_VM_VERBOSE"))
		return 0;
	return vprintf(fmt, ap);
}

/* ---- module ---------------------------------------------------------- */

static int mod_load_params(const char *ko, const char *params)
{
	int fd = open(ko, O_RDONLY | O_CLOEXEC);
	int ret, err;

	if (fd < 0)
		return -errno;
	ret = syscall(SYS_finit_module, fd, params, 0);
	err = errno;
	close(fd);
	return ret ? -err : 0;
}

static int mod_load(const char *ko)
{
	return mod_load_params(ko, "");
}

static int mod_unload_once(void)
{
	return syscall(SYS_delete_module, "inxpect", O_NONBLOCK) ? -errno : 0;
}

/* Programs are freed after an RCU grace period and a workqueue pass, so the
 * module reference they hold goes away shortly after close: retry. */
static int mod_unload(void)
{
	int ret = 0;

	for (int i = 0; i < 200; i++) {
		ret = mod_unload_once();
		if (ret != -EAGAIN && ret != -EBUSY)
			return ret;
		usleep(10000);
	}
	return ret;
}

static bool path_exists(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0;
}

/* ---- BPF --------------------------------------------------------------- */

/* Ethernet + IPv4 + UDP, 64 bytes: enough for any parser in the apps. */
static unsigned char default_pkt[64] = {
	0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x08, 0x00, 0x45, 0x00, 0x00, 0x32, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11,
	0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x30, 0x39,
	0x00, 0x35, 0x00, 0x1e, 0x00, 0x00,
};

static int test_run(int prog_fd, const void *pkt, size_t len, int repeat,
		    __u32 *retval, __u32 *duration)
{
	unsigned char out[4096];
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt,
		    .data_size_in = len, .data_out = out,
		    .data_size_out = sizeof(out), .repeat = repeat);
	int ret = bpf_prog_test_run_opts(prog_fd, &opts);

	*retval = opts.retval;
	*duration = opts.duration;
	return ret ? -errno : 0;
}

static int read_result(struct bpf_object *obj, struct kfunc_result *r)
{
	struct bpf_map *m = bpf_object__find_map_by_name(obj, ".bss");
	__u32 zero = 0;

	if (!m)
		return -ENOENT;
	return bpf_map_lookup_elem(bpf_map__fd(m), &zero, r) ? -errno : 0;
}

/* ---- kmod tests ---------------------------------------------------------- */

/* The rate of the module's "tsc": x86's TSC (GHz), arm64's generic timer
 * (CNTFRQ_EL0, readable at EL0: 1 GHz on QEMU's max, 62.5 MHz on A72). */
static unsigned long long clock_hz(void)
{
#if defined(__aarch64__)
	unsigned long long f;

	asm volatile("mrs %0, cntfrq_el0" : "=r"(f));
	return f;
#else
	return 1000000000ULL;
#endif
}

static int xioctl(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) ? -errno : 0;
}


/* The dynamic type of a PMU, from sysfs; -1 when it has none. */
static int pmu_type(const char *pmu)
{
	char path[128], buf[32];
	int fd, n;

	snprintf(path, sizeof(path), "/sys/bus/event_source/devices/%s/type", pmu);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return atoi(buf);
}

/* PMUs without rdpmc counters are refused, whatever the machine: msr (its
 * tsc event exists everywhere), and the software PMU by its number. */
static void non_core_tests(int fd)
{
	struct inxpect_config cfg;
	int type, ret;

	memset(&cfg, 0, sizeof(cfg));
	cfg.nr_events = 1;
#ifdef __x86_64__
	/* x86's msr PMU: dynamic type, not a core PMU. The arm64 guest (QEMU
	 * virt) has no uncore PMU to try. */
	type = pmu_type("msr");
	check(type >= PERF_TYPE_MAX, "non-core PMU: msr PMU present", "type %d", type);
	cfg.events[0].type = type;
	cfg.events[0].config = 0; /* msr/tsc/ */
	ret = xioctl(fd, INXPECT_IOC_SET_EVENTS, &cfg);
	check(type >= PERF_TYPE_MAX && ret == -EINVAL, "non-core PMU: SET_EVENTS msr/tsc -> EINVAL",
	      "got %d (%s)", ret, strerror(-ret));
#endif
	type = pmu_type("software");
	cfg.events[0].type = type;
	cfg.events[0].config = PERF_COUNT_SW_CPU_CLOCK;
	ret = xioctl(fd, INXPECT_IOC_SET_EVENTS, &cfg);
	check(type == PERF_TYPE_SOFTWARE && ret == -EINVAL,
	      "non-core PMU: SET_EVENTS software/cpu-clock -> EINVAL", "type %d got %d (%s)",
	      type, ret, strerror(-ret));
}

static void ioctl_tests(bool *has_pmu)
{
	struct inxpect_info info;
	struct inxpect_config cfg;
	struct inxpect_status st;
	int fd, ret;

	fd = open(INXPECT_DEVICE, O_RDWR | O_CLOEXEC);
	check(fd >= 0, "ioctl: open /dev/inxpect", "%s", strerror(errno));
	if (fd < 0)
		return;

	memset(&info, 0xff, sizeof(info));
	ret = xioctl(fd, INXPECT_IOC_GET_INFO, &info);
	check(!ret && info.abi_version == INXPECT_ABI_VERSION &&
		      info.max_slots == INXPECT_MAX_SLOTS &&
		      info.nr_active == 0 && info.nr_cpu_ids > 0 &&
		      !info.reserved[0] && !info.reserved[1] && !info.reserved[2],
	      "ioctl: GET_INFO",
	      "ret %d abi %u slots %u active %u cpus %u flags %#x", ret,
	      info.abi_version, info.max_slots, info.nr_active,
	      info.nr_cpu_ids, info.flags);
	*has_pmu = !ret && (info.flags & INXPECT_INFO_HAS_PMU);
	printf("INXPECT-VM-INFO abi=%u slots=%u cpus=%u has_pmu=%d\n",
	       info.abi_version, info.max_slots, info.nr_cpu_ids, *has_pmu);

	/* Malformed requests: rejected before the PMU is looked at, so the
	 * answer is the same with and without one. */
	for (int c = 0; c < 7; c++) {
		static const char *const names[] = {
			"ioctl: SET_EVENTS 5 events -> E2BIG",
			"ioctl: SET_EVENTS 0 events -> EINVAL",
			"ioctl: SET_EVENTS software event -> EINVAL",
			"ioctl: SET_EVENTS hw config 999 -> EINVAL",
			"ioctl: SET_EVENTS unknown flag -> EINVAL",
			"ioctl: SET_EVENTS reserved set -> EINVAL",
			"ioctl: SET_EVENTS unused slot set -> EINVAL",
		};
		int want = c == 0 ? -E2BIG : -EINVAL;

		memset(&cfg, 0, sizeof(cfg));
		cfg.nr_events = 1;
		cfg.events[0].type = PERF_TYPE_HARDWARE;
		cfg.events[0].config = PERF_COUNT_HW_CPU_CYCLES;
		switch (c) {
		case 0: cfg.nr_events = INXPECT_MAX_SLOTS + 1; break;
		case 1: cfg.nr_events = 0; break;
		case 2: cfg.events[0].type = PERF_TYPE_SOFTWARE; break;
		case 3: cfg.events[0].config = 999; break;
		case 4: cfg.events[0].flags = 0x80; break;
		case 5: cfg.reserved = 1; break;
		case 6: cfg.events[1].config = 1; break;
		}
		ret = xioctl(fd, INXPECT_IOC_SET_EVENTS, &cfg);
		check(ret == want, names[c], "got %d (%s), want %d", ret,
		      strerror(-ret), want);
	}

	/* cycles: ENODEV without a PMU; counts with one. */
	memset(&cfg, 0, sizeof(cfg));
	cfg.nr_events = 1;
	cfg.events[0].type = PERF_TYPE_HARDWARE;
	cfg.events[0].config = PERF_COUNT_HW_CPU_CYCLES;
	cfg.events[0].flags = INXPECT_EV_EXCLUDE_USER;
	ret = xioctl(fd, INXPECT_IOC_SET_EVENTS, &cfg);
	if (*has_pmu)
		check(ret == 0, "ioctl: SET_EVENTS cycles (PMU)", "%d (%s)", ret,
		      strerror(-ret));
	else
		check(ret == -ENODEV, "ioctl: SET_EVENTS cycles without PMU -> ENODEV",
		      "got %d (%s)", ret, strerror(-ret));

	memset(&info, 0, sizeof(info));
	ret = xioctl(fd, INXPECT_IOC_GET_INFO, &info);
	check(!ret && info.nr_active == (*has_pmu ? 1u : 0u),
	      "ioctl: GET_INFO nr_active after SET_EVENTS", "ret %d active %u",
	      ret, info.nr_active);

	for (__u32 cpu = 0; cpu < info.nr_cpu_ids; cpu++) {
		char name[64];
		bool ok;

		memset(&st, 0xff, sizeof(st));
		st.cpu = cpu;
		ret = xioctl(fd, INXPECT_IOC_GET_STATUS, &st);
		ok = !ret && st.cpu == cpu && st.nr_slots == info.nr_active;
		for (int s = 0; s < INXPECT_MAX_SLOTS; s++) {
			const struct inxpect_slot_status *ss = &st.slots[s];

			if ((__u32)s < st.nr_slots)
				ok = ok && ss->state == INXPECT_SLOT_ACTIVE &&
				     ss->rdpmc_index >= 0 && !ss->error;
			else
				ok = ok && ss->state == INXPECT_SLOT_UNUSED &&
				     ss->rdpmc_index == -1 && !ss->error;
		}
		snprintf(name, sizeof(name), "ioctl: GET_STATUS cpu %u", cpu);
		check(ok, name, "ret %d nr_slots %u slot0 state %u index %d error %d",
		      ret, st.nr_slots, st.slots[0].state, st.slots[0].rdpmc_index,
		      st.slots[0].error);
		if (ok && st.nr_slots)
			printf("INXPECT-VM-INFO cpu=%u slot0_rdpmc_index=%#x\n", cpu,
			       st.slots[0].rdpmc_index);
	}
	memset(&st, 0, sizeof(st));
	st.cpu = info.nr_cpu_ids;
	ret = xioctl(fd, INXPECT_IOC_GET_STATUS, &st);
	check(ret == -EINVAL, "ioctl: GET_STATUS cpu out of range -> EINVAL",
	      "got %d", ret);
	memset(&st, 0, sizeof(st));
	st.cpu = 0xffffffffu;
	ret = xioctl(fd, INXPECT_IOC_GET_STATUS, &st);
	check(ret == -EINVAL, "ioctl: GET_STATUS cpu 0xffffffff -> EINVAL", "got %d", ret);

	non_core_tests(fd);
	if (!*has_pmu) {
		struct inxpect_owner o;

		memset(&o, 0xff, sizeof(o));
		ret = xioctl(fd, INXPECT_IOC_GET_OWNER, &o);
		check(!ret && !memchr_nonzero((void *)&o, sizeof(o)),
		      "ioctl: GET_OWNER without a configuration -> zeros", "ret %d pid %d", ret,
		      o.pid);
	}
	ret = xioctl(fd, _IO(INXPECT_IOC_MAGIC, 99), NULL);
	check(ret == -ENOTTY, "ioctl: unknown -> ENOTTY", "got %d", ret);

	/* The open device pins the module. */
	ret = mod_unload_once();
	check(ret == -EAGAIN || ret == -EBUSY || ret == -EWOULDBLOCK,
	      "rmmod refused while /dev/inxpect is open", "got %d", ret);
	close(fd);
}

static void clear_events(void)
{
	int fd = open(INXPECT_DEVICE, O_RDWR | O_CLOEXEC);
	int ret = fd < 0 ? -errno : xioctl(fd, INXPECT_IOC_CLEAR, NULL);
	struct inxpect_info info = { 0 };

	if (!ret)
		ret = xioctl(fd, INXPECT_IOC_GET_INFO, &info);
	check(!ret && info.nr_active == 0, "ioctl: CLEAR", "ret %d active %u",
	      ret, info.nr_active);
	if (fd >= 0)
		close(fd);
}

/* ld_imm64 of a kfunc (bpf_ksym_exists) is accepted from Linux 6.4 on. */
static bool kernel_at_least(int major, int minor)
{
	struct utsname u;
	int ma = 0, mi = 0;

	if (uname(&u) || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
		return false;
	return ma > major || (ma == major && mi >= minor);
}

static struct bpf_object *open_load_guarded(const char *path, bool rodata_guard,
					    bool have_kfuncs, int *err)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	struct bpf_map *ro;
	size_t sz = 0;
	__u32 *flag;

	*err = libbpf_get_error(obj);
	if (*err)
		return NULL;
	if (rodata_guard) {
		ro = bpf_object__find_map_by_name(obj, ".rodata");
		flag = ro ? bpf_map__initial_value(ro, &sz) : NULL;
		if (!flag || sz != sizeof(*flag)) {
			*err = -ENOENT;
			bpf_object__close(obj);
			return NULL;
		}
		*flag = have_kfuncs;
	}
	*err = bpf_object__load(obj);
	if (*err) {
		bpf_object__close(obj);
		return NULL;
	}
	return obj;
}

static void kfunc_tests(const char *bpfdir, bool rodata_guard, bool module_loaded,
			bool has_pmu, bool sw_slot)
{
	char tag[96], name[384], path[256];
	struct bpf_program *xdp, *tc;
	struct kfunc_result r;
	struct bpf_object *obj;
	__u32 retval, dur;
	const int reps = 1000;
	int err;

	snprintf(tag, sizeof(tag), "kfunc (%s guard%s%s)",
		 rodata_guard ? "rodata" : "bpf_ksym_exists",
		 module_loaded ? "" : ", no module", sw_slot ? ", software slot 0" : "");
	snprintf(path, sizeof(path), "%s/%s", bpfdir,
		 rodata_guard ? "kfunc_test_rodata.o" : "kfunc_test.o");
	obj = open_load_guarded(path, rodata_guard, module_loaded, &err);
	if (!rodata_guard && module_loaded && !kernel_at_least(6, 4)) {
		snprintf(name, sizeof(name), "%s: load refused before Linux 6.4", tag);
		check(!obj && err == -EINVAL, name, "load returned %d", err);
		if (obj)
			bpf_object__close(obj);
		return;
	}
	snprintf(name, sizeof(name), "%s: load %s", tag, path);
	check(obj != NULL, name, "%d (%s)", err, strerror(-err));
	if (!obj)
		return;
	xdp = bpf_object__find_program_by_name(obj, "kfunc_xdp");
	tc = bpf_object__find_program_by_name(obj, "kfunc_tc");

	err = test_run(bpf_program__fd(xdp), default_pkt, sizeof(default_pkt),
		       reps, &retval, &dur);
	snprintf(name, sizeof(name), "%s: XDP test_run x%d", tag, reps);
	check(!err && retval == XDP_TX, name, "err %d retval %u", err, retval);
	err = read_result(obj, &r);
	snprintf(name, sizeof(name), "%s: XDP results", tag);
	if (!module_loaded) {
		check(!err && r.runs == (__u64)reps && r.present == 0, name,
		      "err %d runs %llu present %llu", err, r.runs, r.present);
		goto out;
	}
	check(!err && r.runs == (__u64)reps && r.present == (__u64)reps, name,
	      "err %d runs %llu present %llu", err, r.runs, r.present);
	if (clock_hz() >= 1000000000ULL) {
		/* A tick per instruction or finer: two reads always differ. */
		snprintf(name, sizeof(name), "%s: tsc advancing (strictly, every run)", tag);
		check(r.tsc_not_increasing == 0 && r.tsc_second > r.tsc_first, name,
		      "%llu of %d runs not; last %llu -> %llu", r.tsc_not_increasing, reps,
		      r.tsc_first, r.tsc_second);
		snprintf(name, sizeof(name), "%s: tsc_lo 32 bits, advancing", tag);
		check(r.tsc_lo_bad == 0 && r.tsc_lo_same == 0, name,
		      "%llu of %d runs above 32 bits, %llu not advancing; last delta %llu",
		      r.tsc_lo_bad, reps, r.tsc_lo_same, r.tsc_lo_delta);
	} else {
		/* Coarser: two close reads may be equal, never decreasing, and the
		 * clock moves over the runs. */
		snprintf(name, sizeof(name), "%s: tsc advancing (never back, over the runs; %llu Hz)",
			 tag, clock_hz());
		check(r.tsc_back == 0 && r.tsc_second > r.tsc_start, name,
		      "%llu of %d runs went back; first %llu, last %llu", r.tsc_back, reps,
		      r.tsc_start, r.tsc_second);
		snprintf(name, sizeof(name), "%s: tsc_lo 32 bits", tag);
		check(r.tsc_lo_bad == 0, name, "%llu of %d runs above 32 bits", r.tsc_lo_bad, reps);
	}
	printf("INXPECT-VM-INFO tsc_delta=%llu xdp_ns_per_run=%u\n",
	       r.tsc_second - r.tsc_first, dur);
	snprintf(name, sizeof(name), "%s: pmc0_lo START/END %s", tag,
		 has_pmu ? "valid" : "invalid (bit 63)");
	check(r.pmc0_lo_bad == 0 && r.pmc0_lo_valid == (has_pmu ? (__u64)reps : 0) &&
		      (has_pmu || (r.pmc0_lo == KT_INVALID && r.pmc0_lo_end == KT_INVALID)),
	      name, "valid in %llu of %d runs, bad %llu, last %#llx/%#llx", r.pmc0_lo_valid,
	      reps, r.pmc0_lo_bad, r.pmc0_lo, r.pmc0_lo_end);
	for (int s = 0; s < KT_SLOTS; s++) {
		bool counting = has_pmu && s == 0; /* cycles on slot 0 */
		__u64 want = counting ? (__u64)reps : 0;

		snprintf(name, sizeof(name), "%s: pmc slot %d %s", tag, s,
			 counting ? "counts" : "reads invalid (bit 63)");
		check(r.pmc_valid[s] == want && (counting || r.pmc[s] == KT_INVALID), name,
		      "valid in %llu of %d runs, last %#llx", r.pmc_valid[s], reps, r.pmc[s]);
	}

	err = test_run(bpf_program__fd(tc), default_pkt, sizeof(default_pkt), 10,
		       &retval, &dur);
	if (!err)
		err = read_result(obj, &r);
	snprintf(name, sizeof(name), "%s: TC test_run", tag);
	check(!err && retval == TC_ACT_SHOT && r.present == (__u64)reps + 10, name,
	      "err %d retval %u present %llu", err, retval, r.present);

	/* A loaded program that calls the kfuncs pins the module. */
	err = mod_unload_once();
	snprintf(name, sizeof(name), "%s: rmmod refused while loaded", tag);
	check(err == -EAGAIN || err == -EBUSY || err == -EWOULDBLOCK, name,
	      "got %d", err);
out:
	bpf_object__close(obj);
}

static void hotplug_test(void)
{
	const char *p = "/sys/devices/system/cpu/cpu1/online";
	int ok = 1;

	if (!path_exists(p))
		return; /* one CPU: nothing to test */
	for (int i = 0; i < 2 && ok; i++) {
		const char *v = i ? "1" : "0";
		int fd = open(p, O_WRONLY | O_CLOEXEC);

		ok = fd >= 0 && write(fd, v, 1) == 1;
		if (fd >= 0)
			close(fd);
	}
	check(ok, "cpu1 offline/online with the module loaded", "%s",
	      strerror(errno));
}

/* ---- ownership and rights (module loaded with test_sw_events=1) ------- */

/* A software event: accepted as a slot that never reads, only in the
 * module's test mode, so ownership is testable without a PMU. */
static int set_sw(int fd)
{
	struct inxpect_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.nr_events = 1;
	cfg.events[0].type = PERF_TYPE_SOFTWARE;
	cfg.events[0].config = PERF_COUNT_SW_CPU_CLOCK;
	return xioctl(fd, INXPECT_IOC_SET_EVENTS, &cfg);
}

static __u32 nr_active(int fd)
{
	struct inxpect_info info = { 0 };

	return xioctl(fd, INXPECT_IOC_GET_INFO, &info) ? 0xffffffffu : info.nr_active;
}

static void ownership_tests(const char *bpfdir)
{
	struct inxpect_owner o;
	struct inxpect_status st;
	int a, b, ret, p[2], status = 0;
	char c = 0;
	pid_t child;

	a = open(INXPECT_DEVICE, O_RDWR | O_CLOEXEC);
	b = open(INXPECT_DEVICE, O_RDWR | O_CLOEXEC);
	check(a >= 0 && b >= 0, "owner: open twice", "%s", strerror(errno));
	if (a < 0 || b < 0)
		return;
	ret = set_sw(a);
	check(!ret && nr_active(b) == 1, "owner: SET_EVENTS software slot (test mode)",
	      "ret %d active %u", ret, nr_active(b));
	memset(&o, 0, sizeof(o));
	ret = xioctl(a, INXPECT_IOC_GET_OWNER, &o);
	check(!ret && o.pid == getpid() && (o.flags & INXPECT_OWNER_SELF) && o.uid == 0 &&
		      !strcmp(o.comm, "inxpect-vm-test") && o.nr_events == 1 &&
		      o.events[0].type == PERF_TYPE_SOFTWARE &&
		      o.events[0].config == PERF_COUNT_SW_CPU_CLOCK,
	      "owner: GET_OWNER from the owner", "ret %d pid %d (want %d) flags %#x comm %.16s n %u",
	      ret, o.pid, getpid(), o.flags, o.comm, o.nr_events);
	memset(&o, 0, sizeof(o));
	ret = xioctl(b, INXPECT_IOC_GET_OWNER, &o);
	check(!ret && o.pid == getpid() && !(o.flags & INXPECT_OWNER_SELF) && o.nr_events == 1,
	      "owner: GET_OWNER from another file", "ret %d pid %d flags %#x", ret, o.pid,
	      o.flags);
	memset(&st, 0, sizeof(st));
	ret = xioctl(b, INXPECT_IOC_GET_STATUS, &st);
	check(!ret && st.nr_slots == 1 && st.slots[0].state == INXPECT_SLOT_INACTIVE &&
		      st.slots[0].rdpmc_index == -1,
	      "owner: software slot is inactive (no rdpmc index)", "ret %d state %u index %d",
	      ret, st.slots[0].state, st.slots[0].rdpmc_index);
	/* A configured slot without a counter reads invalid. */
	kfunc_tests(bpfdir, true, true, false, true);
	ret = set_sw(b);
	check(ret == -EBUSY && nr_active(a) == 1, "owner: second configurer -> EBUSY",
	      "got %d (%s)", ret, strerror(-ret));
	ret = xioctl(b, INXPECT_IOC_CLEAR, NULL);
	check(ret == -EBUSY && nr_active(a) == 1, "owner: CLEAR from another file -> EBUSY",
	      "got %d (%s)", ret, strerror(-ret));
	ret = mod_unload_once();
	check(ret == -EAGAIN || ret == -EBUSY || ret == -EWOULDBLOCK,
	      "owner: rmmod refused while configured", "got %d", ret);
	close(a);
	check(nr_active(b) == 0, "owner: close releases the configuration", "active %u",
	      nr_active(b));
	ret = set_sw(b);
	check(!ret, "owner: the other file configures after the close", "got %d", ret);
	ret = xioctl(b, INXPECT_IOC_CLEAR, NULL);
	check(!ret && nr_active(b) == 0, "owner: CLEAR by the owner", "ret %d active %u", ret,
	      nr_active(b));

	/* SIGKILL of an owner leaves nothing configured: release runs in its
	 * exit, before the parent can reap it. */
	if (pipe(p))
		return;
	fflush(stdout);
	child = fork();
	if (child == 0) {
		int fd = open(INXPECT_DEVICE, O_RDWR | O_CLOEXEC);

		c = fd >= 0 && !set_sw(fd) ? 'y' : 'n';
		if (write(p[1], &c, 1) != 1)
			_exit(3);
		for (;;)
			pause();
	}
	close(p[1]);
	if (read(p[0], &c, 1) != 1)
		c = 0;
	close(p[0]);
	memset(&o, 0, sizeof(o));
	ret = xioctl(b, INXPECT_IOC_GET_OWNER, &o);
	check(c == 'y' && !ret && o.pid == child && nr_active(b) == 1,
	      "owner: child configured, GET_OWNER names it", "child %c pid %d want %d", c, o.pid,
	      child);
	ret = set_sw(b);
	check(ret == -EBUSY, "owner: configuring over a live child -> EBUSY", "got %d", ret);
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	memset(&o, 0xff, sizeof(o));
	ret = xioctl(b, INXPECT_IOC_GET_OWNER, &o);
	check(WIFSIGNALED(status) && nr_active(b) == 0 && !ret && o.pid == 0,
	      "owner: SIGKILLed owner's configuration is gone", "status %#x active %u pid %d",
	      status, nr_active(b), o.pid);
	close(b);
}

/* Keeps only CAP_BPF and CAP_NET_ADMIN: what loading XDP/TC needs, without
 * CAP_PERFMON or CAP_SYS_ADMIN. */
static int drop_to_bpf_net(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	__u64 keep = (1ULL << CAP_BPF) | (1ULL << CAP_NET_ADMIN);

	memset(d, 0, sizeof(d));
	d[0].effective = d[0].permitted = (__u32)keep;
	d[1].effective = d[1].permitted = (__u32)(keep >> 32);
	return syscall(SYS_capset, &h, d) ? -errno : 0;
}

/* A child without CAP_PERFMON: the device refuses it, a descriptor it
 * inherited too, and from Linux 6.5 (kfunc filter) the verifier refuses its
 * program; 6.1 has no filter and accepts it (the documented limitation). */
struct kfunc_ref {
	int btf_fd; /* the module's BTF object */
	int id; /* the kfunc's BTF id in it */
};

/* Looks the kfunc up in the inxpect module's BTF; needs CAP_SYS_ADMIN. */
static struct kfunc_ref find_kfunc(const char *name)
{
	struct kfunc_ref r = { -1, -1 };
	struct btf *vmlinux = btf__load_vmlinux_btf(), *mod;
	__u32 id = 0;

	if (!vmlinux)
		return r;
	mod = btf__load_module_btf("inxpect", vmlinux);
	if (mod) {
		r.id = btf__find_by_name_kind(mod, name, BTF_KIND_FUNC);
		btf__free(mod);
	}
	btf__free(vmlinux);
	while (!bpf_btf_get_next_id(id, &id)) {
		struct bpf_btf_info info;
		__u32 len = sizeof(info);
		char bname[64] = "";
		int fd = bpf_btf_get_fd_by_id(id);

		if (fd < 0)
			continue;
		memset(&info, 0, sizeof(info));
		info.name = (__u64)(unsigned long)bname;
		info.name_len = sizeof(bname);
		if (!bpf_obj_get_info_by_fd(fd, &info, &len) && !strcmp(bname, "inxpect")) {
			r.btf_fd = fd;
			break;
		}
		close(fd);
	}
	return r;
}

/* XDP: call the kfunc, return XDP_PASS. Returns the program fd or -errno. */
static int kfunc_call_load(int btf_fd, int id, char *log, size_t log_size)
{
	int fds[2] = { -1, btf_fd };
	struct bpf_insn insns[] = {
		/* call kfunc: src_reg BPF_PSEUDO_KFUNC_CALL, off = fd_array index */
		{ .code = BPF_JMP | BPF_CALL, .src_reg = BPF_PSEUDO_KFUNC_CALL, .off = 1, .imm = id },
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = XDP_PASS },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .fd_array = fds, .log_buf = log,
		    .log_size = log_size, .log_level = log ? 1 : 0);
	int fd;

	if (log)
		log[0] = 0;
	fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "kfunc_rights", "Dual BSD/GPL", insns, 3, &opts);
	return fd < 0 ? -errno : fd;
}

static void rights_tests(void)
{
	int fd = open(INXPECT_DEVICE, O_RDWR | O_CLOEXEC), status = 0, err;
	pid_t child;

	struct kfunc_ref kf;

	check(fd >= 0, "rights: open as root", "%s", strerror(errno));
	if (fd < 0)
		return;
	kf = find_kfunc("inxpect_read_tsc");
	check(kf.btf_fd >= 0 && kf.id > 0, "rights: module BTF and kfunc id (as root)",
	      "fd %d id %d", kf.btf_fd, kf.id);
	err = kfunc_call_load(kf.btf_fd, kf.id, NULL, 0);
	check(err >= 0, "rights: raw kfunc call program loads as root", "%d", err);
	if (err >= 0)
		close(err);
	fflush(stdout);
	child = fork();
	if (child == 0) {
		struct inxpect_info info;
		static char log[4096];
		bool filter = kernel_at_least(6, 5);
		int ret, err, fd2;

		ret = drop_to_bpf_net();
		check(!ret, "rights: drop to CAP_BPF+CAP_NET_ADMIN", "%d", ret);
		ret = xioctl(fd, INXPECT_IOC_GET_INFO, &info);
		check(ret == -EPERM, "rights: ioctl on an inherited descriptor -> EPERM",
		      "got %d", ret);
		fd2 = open(INXPECT_DEVICE, O_RDWR | O_CLOEXEC);
		check(fd2 < 0 && errno == EPERM, "rights: open without CAP_PERFMON -> EPERM",
		      "fd %d errno %d", fd2, errno);
		/* Raw load with the module BTF fd the root parent opened:
		 * without CAP_SYS_ADMIN libbpf cannot look module BTF up, so
		 * it would fail before the verifier is even asked. */
		err = kfunc_call_load(kf.btf_fd, kf.id, log, sizeof(log));
		if (filter)
			check(err == -EACCES && strstr(log, "inxpect_read_tsc is not allowed"),
			      "rights: verifier refuses the kfuncs without CAP_PERFMON",
			      "load returned %d, log: %.200s", err, log);
		else
			check(err >= 0,
			      "rights: no kfunc filter before 6.5, program loads (limitation)",
			      "load returned %d, log: %.200s", err, log);
		if (err >= 0)
			close(err);
		fflush(stdout);
		_exit(0);
	}
	waitpid(child, &status, 0);
	check(WIFEXITED(status) && !WEXITSTATUS(status), "rights: child exited",
	      "status %#x", status);
	/* An open BTF fd keeps this module's BTF object after rmmod; libbpf
	 * then finds that stale "inxpect" first and the next load of the
	 * reloaded module's kfuncs fails with ENXIO (seen on 6.18). */
	if (kf.btf_fd >= 0)
		close(kf.btf_fd);
	close(fd);
}

static int cmd_kmod(const char *ko, const char *bpfdir, int reloads)
{
	bool has_pmu = false;
	int ret, failed = 0, first_err = 0;

	if (path_exists("/sys/module/inxpect"))
		mod_unload();
	kfunc_tests(bpfdir, false, false, false, false);
	kfunc_tests(bpfdir, true, false, false, false);

	ret = mod_load(ko);
	check(!ret, "insmod", "%d (%s)", ret, strerror(-ret));
	if (ret)
		return 1;
	check(path_exists("/sys/kernel/btf/inxpect"), "module BTF in /sys/kernel/btf/inxpect",
	      "missing: the module was built without BTF");
	check(path_exists(INXPECT_DEVICE), "device node " INXPECT_DEVICE, "missing");

	ioctl_tests(&has_pmu);
	{
		/* With a PMU the kfuncs read cycles on slot 0 (exclude user, as
		 * ioctl_tests set it); the configuration lives while its owner
		 * keeps the device open. */
		int hold = -1;

		if (has_pmu) {
			struct inxpect_config cfg = { .nr_events = 1 };

			cfg.events[0].type = PERF_TYPE_HARDWARE;
			cfg.events[0].config = PERF_COUNT_HW_CPU_CYCLES;
			cfg.events[0].flags = INXPECT_EV_EXCLUDE_USER;
			hold = open(INXPECT_DEVICE, O_RDWR | O_CLOEXEC);
			check(hold >= 0 && !xioctl(hold, INXPECT_IOC_SET_EVENTS, &cfg),
			      "ioctl: SET_EVENTS cycles held for the kfunc tests", "%s",
			      strerror(errno));
		}
		kfunc_tests(bpfdir, false, true, has_pmu, false);
		kfunc_tests(bpfdir, true, true, has_pmu, false);
		if (hold >= 0)
			close(hold);
	}
	clear_events();
	rights_tests();
	hotplug_test();

	ret = mod_unload();
	check(!ret, "rmmod", "%d (%s)", ret, strerror(-ret));
	ret = mod_load_params(ko, "test_sw_events=1");
	check(!ret, "insmod test_sw_events=1", "%d (%s)", ret, strerror(-ret));
	if (!ret) {
		ownership_tests(bpfdir);
		ret = mod_unload();
		check(!ret, "rmmod (test mode)", "%d (%s)", ret, strerror(-ret));
	}
	for (int i = 0; i < reloads; i++) {
		int fd;

		ret = mod_load(ko);
		if (!ret) {
			/* Touch the device each time: register/deregister
			 * and open/release must all survive the cycle. */
			fd = open(INXPECT_DEVICE, O_RDWR | O_CLOEXEC);
			if (fd < 0) {
				ret = -errno;
			} else {
				struct inxpect_info info;

				ret = xioctl(fd, INXPECT_IOC_GET_INFO, &info);
				close(fd);
			}
		}
		if (!ret)
			ret = mod_unload();
		if (ret) {
			failed++;
			if (!first_err)
				first_err = ret;
		}
	}
	check(!failed, "reload cycles", "%d of %d failed, first: %d (%s)", failed,
	      reloads, first_err, strerror(-first_err));
	printf("INXPECT-VM-INFO reloads=%d\n", reloads);

	ret = mod_load(ko);
	check(!ret, "insmod (left loaded)", "%d (%s)", ret, strerror(-ret));
	return n_fail ? 1 : 0;
}

/* ---- run: an arbitrary object ---------------------------------------------- */

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

static int pin_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set);
}

static int perf_open(__u32 type, __u64 config, int cpu, bool pinned)
{
	struct perf_event_attr a = {
		.type = type,
		.size = sizeof(a),
		.config = config,
		.pinned = pinned,
	};

	return syscall(SYS_perf_event_open, &a, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
}

static volatile sig_atomic_t churn_stop;
static void churn_term(int sig)
{
	(void)sig;
	churn_stop = 1;
}

/* Another perf user while a run goes on: a child on another CPU that keeps
 * opening and closing `n` counting events on `cpu` (pinned and flexible
 * alternately), each time making perf reschedule that CPU's events. It
 * exits with the number of rounds (mod 256). */
static pid_t start_churn(int cpu, int n)
{
	pid_t pid = fork();

	if (pid)
		return pid;
	signal(SIGTERM, churn_term);
	pin_cpu(cpu ? 0 : 1);
	int rounds = 0, fds[16];

	while (!churn_stop) {
		for (int i = 0; i < n && i < 16; i++)
			fds[i] = perf_open(PERF_TYPE_HARDWARE,
					   i % 2 ? PERF_COUNT_HW_CPU_CYCLES
						 : PERF_COUNT_HW_INSTRUCTIONS,
					   cpu, rounds % 2);
		for (int i = 0; i < n && i < 16; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		rounds++;
	}
	_exit(rounds & 0xff);
}

/* `run --preempt N`: a real-time child on the run's CPU wakes N times, every
 * PREEMPT_PERIOD_NS, each time in the middle of one of the runs' long
 * region (instr/preempt.bpf.c) on a preemptible kernel: it opens a pinned
 * event there (perf restarts the CPU's counters: the module's cache is
 * stale) and has the module reload the cache with GET_STATUS before the
 * preempted run gets its CPU back. Exits with the perturbations made. */
#define PREEMPT_PERIOD_NS 5000000L

static pid_t start_preempter(int cpu, int n)
{
	pid_t pid = fork();

	if (pid)
		return pid;
	struct sched_param sp = { .sched_priority = 10 };
	struct timespec t = { .tv_nsec = PREEMPT_PERIOD_NS };
	int dev = open("/dev/inxpect", O_RDWR), done = 0;

	pin_cpu(cpu);
	if (dev < 0 || sched_setscheduler(0, SCHED_FIFO, &sp))
		_exit(0);
	for (int i = 0; i < n; i++) {
		struct inxpect_status st = { .cpu = cpu };
		int pfd;

		nanosleep(&t, NULL);
		pfd = perf_open(PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS, cpu, true);
		if (pfd >= 0 && !xioctl(dev, INXPECT_IOC_GET_STATUS, &st))
			done++;
		if (pfd >= 0)
			close(pfd);
	}
	_exit(done);
}

/* configure_events(), checked. */
static int hold_events(const char *list)
{
	char name[256];
	int fd = configure_events(list);

	snprintf(name, sizeof(name), "events %s", list);
	check(fd >= 0, name, "%d (%s)", fd, strerror(-fd));
	return fd;
}

/* `events [--others N] [--expect ERRNO] EVENT...`: SET_EVENTS with EVENT
 * (instructions, cycles, or hw:N) in slots 0.. (released again when this
 * command ends). --others first opens N pinned instruction events of our
 * own on every CPU (another perf user holding counters); --expect names the
 * errno SET_EVENTS must return (EBUSY), checked instead of success. */
static int cmd_events(int argc, char **argv)
{
	struct inxpect_config cfg;
	struct inxpect_info info = { 0 };
	int others = 0, expect = 0, fd, ret, held[64], nheld = 0;
	char name[256], list[128] = "";

	memset(&cfg, 0, sizeof(cfg));
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--others") && i + 1 < argc) {
			others = atoi(argv[++i]);
			continue;
		}
		if (!strcmp(a, "--expect") && i + 1 < argc) {
			expect = !strcmp(argv[++i], "EBUSY") ? -EBUSY : -EINVAL;
			continue;
		}
		if (add_event(&cfg, a)) {
			check(false, "events: arguments", "bad or too many events: %s", a);
			return 1;
		}
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
			 *list ? "," : "", a);
	}
	for (int c = 0; c < libbpf_num_possible_cpus(); c++)
		for (int i = 0; i < others && nheld < 64; i++) {
			int e = perf_open(PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS, c, true);

			if (e >= 0)
				held[nheld++] = e;
		}
	fd = open(INXPECT_DEVICE, O_RDWR | O_CLOEXEC);
	ret = fd < 0 ? -errno : xioctl(fd, INXPECT_IOC_SET_EVENTS, &cfg);
	if (!ret && fd >= 0)
		ret = xioctl(fd, INXPECT_IOC_GET_INFO, &info);
	if (expect) {
		snprintf(name, sizeof(name), "events %s with %d other events per CPU -> %s",
			 list, others, expect == -EBUSY ? "EBUSY" : "EINVAL");
		check(ret == expect, name, "got %d (%s), %d others open", ret,
		      strerror(-ret), nheld);
	} else {
		snprintf(name, sizeof(name), "events %s", list);
		check(!ret && info.nr_active == cfg.nr_events, name,
		      "ret %d (%s) active %u", ret, strerror(-ret), info.nr_active);
	}
	for (int c = 0; fd >= 0 && !ret && c < (int)info.nr_cpu_ids; c++) {
		struct inxpect_status st = { .cpu = c };

		if (xioctl(fd, INXPECT_IOC_GET_STATUS, &st))
			continue;
		for (__u32 sl = 0; sl < st.nr_slots; sl++)
			printf("INXPECT-VM-INFO events list=%s cpu=%d slot=%u state=%u index=%d\n",
			       list, c, sl, st.slots[sl].state, st.slots[sl].rdpmc_index);
	}
	while (nheld)
		close(held[--nheld]);
	if (fd >= 0)
		close(fd);
	return n_fail ? 1 : 0;
}

static int slot_state(int fd, int cpu, int slot, int *index)
{
	struct inxpect_status st = { .cpu = cpu };
	int ret = xioctl(fd, INXPECT_IOC_GET_STATUS, &st);

	if (ret)
		return ret;
	*index = st.slots[slot].rdpmc_index;
	return st.slots[slot].state;
}

static int write_online(int cpu, const char *v)
{
	char p[64];
	int fd, ok;

	snprintf(p, sizeof(p), "/sys/devices/system/cpu/cpu%d/online", cpu);
	fd = open(p, O_WRONLY | O_CLOEXEC);
	ok = fd >= 0 && write(fd, v, 1) == 1;
	if (fd >= 0)
		close(fd);
	return ok ? 0 : -errno;
}

/* `hotplug-events`: with instructions and cycles configured, cpu1
 * goes offline (its slots report OFFLINE) and comes back (its events are
 * created again: ACTIVE with a counter). */
static int cmd_hotplug_events(void)
{
	int fd = hold_events("instructions,cycles"), idx = -1, s0, s1, s2, e1, e2;

	if (fd < 0)
		return 1;
	s0 = slot_state(fd, 1, 0, &idx);
	e1 = write_online(1, "0");
	s1 = slot_state(fd, 1, 0, &idx);
	e2 = write_online(1, "1");
	s2 = slot_state(fd, 1, 0, &idx);
	check(s0 == INXPECT_SLOT_ACTIVE && !e1 && s1 == INXPECT_SLOT_OFFLINE && !e2 &&
		      s2 == INXPECT_SLOT_ACTIVE && idx >= 0,
	      "hotplug with events: cpu1 offline -> OFFLINE, online -> ACTIVE",
	      "before %d, offline %d (write %d), online %d (write %d) index %d", s0, s1,
	      e1, s2, e2, idx);
	close(fd);
	return n_fail ? 1 : 0;
}

/* test_run on every frame of `buf` (records of a little-endian u16 length
 * and that many bytes); the last frame's verdict and time. */
static int run_frames(int fd, const unsigned char *buf, size_t len, int repeat, __u32 *retval,
		      __u32 *dur)
{
	size_t at = 0;
	int err = -EINVAL;

	while (at + 2 <= len) {
		size_t n = buf[at] | (size_t)buf[at + 1] << 8;

		if (at + 2 + n > len)
			return -EINVAL;
		err = test_run(fd, buf + at + 2, n, repeat, retval, dur);
		if (err)
			return err;
		at += 2 + n;
	}
	return err;
}

static int cmd_run(int argc, char **argv)
{
	const char *path = argv[0], *only = NULL, *oname = base_name(argv[0]);
	unsigned char *pkt = default_pkt, *frames = NULL;
	size_t pkt_len = sizeof(default_pkt), frames_len = 0;
	long want_retval = -1;
	const char *dumps[32];
	int ndump = 0, repeat = 1, err, ran = 0, cpu = -1, churn = 0, evfd = -1, preempt = 0;
	int cpus[16], ncpus = 0;
	bool kfuncs = false, resched = false;
	pid_t churner = -1;
	struct bpf_program *prog;
	struct bpf_object *obj;
	char name[256];

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--kfuncs")) {
			kfuncs = true;
			continue;
		}
		if (!strcmp(a, "--resched")) {
			resched = true;
			continue;
		}
		if (!v) {
			fprintf(stdout, "INXPECT-VM: FAIL run %s: option %s needs a value\n",
				oname, a);
			return 2;
		}
		if (!strcmp(a, "--prog"))
			only = v;
		else if (!strcmp(a, "--repeat"))
			repeat = atoi(v);
		else if (!strcmp(a, "--retval"))
			want_retval = atol(v);
		else if (!strcmp(a, "--cpu"))
			cpu = atoi(v);
		else if (!strcmp(a, "--cpus")) {
			/* The runs again on each CPU in turn (one load: the
			 * per-CPU maps see them all). */
			for (const char *t = v; *t && ncpus < 16;) {
				char *e;

				cpus[ncpus++] = (int)strtol(t, &e, 10);
				if (e == t) {
					printf("INXPECT-VM: FAIL run %s: --cpus %s: not a CPU list\n",
					       oname, v);
					return 2;
				}
				t = e + strspn(e, ",");
			}
		}
		else if (!strcmp(a, "--churn"))
			churn = atoi(v);
		else if (!strcmp(a, "--preempt"))
			preempt = atoi(v);
		else if (!strcmp(a, "--pcpu"))
			pcpu_lookup = !strcmp(v, "lookup");
		else if (!strcmp(a, "--events")) {
			evfd = hold_events(v);
			if (evfd < 0)
				return 1;
		}
		else if (!strcmp(a, "--dump") && ndump < 32)
			dumps[ndump++] = v;
		else if (!strcmp(a, "--frames")) {
			err = read_file(v, &frames, &frames_len);
			if (err) {
				check(false, "run: frames", "%s: %s", v, strerror(-err));
				return 1;
			}
		} else if (!strcmp(a, "--packet")) {
			err = read_file(v, &pkt, &pkt_len);
			if (err) {
				check(false, "run: packet", "%s: %s", v, strerror(-err));
				return 1;
			}
		} else {
			printf("INXPECT-VM: FAIL run %s: unknown option %s\n", oname, a);
			return 2;
		}
		i++;
	}

	/* --preempt N: twice as many runs as the child's wake-ups. */
	int preempt_runs = preempt > 0 && cpu >= 0 ? 2 * preempt : 0;

	if (cpu >= 0 && pin_cpu(cpu)) {
		check(false, "run: pin", "cpu %d: %s", cpu, strerror(errno));
		return 1;
	}
	obj = open_load_flag(path, kfuncs, &err);
	snprintf(name, sizeof(name), "run %s: load", oname);
	check(obj != NULL, name, "%d (%s)", err, strerror(-err));
	if (!obj)
		return 1;
	bpf_object__for_each_program(prog, obj) {
		enum bpf_prog_type t = bpf_program__type(prog);
		const char *pname = bpf_program__name(prog);
		__u32 retval = 0, dur = 0;

		if (only && strcmp(only, pname))
			continue;
		if (!only && t != BPF_PROG_TYPE_XDP && t != BPF_PROG_TYPE_SCHED_CLS)
			continue;
		ran++;
		if (!repeat)
			continue;
		if (churn && cpu >= 0)
			churner = start_churn(cpu, churn);
		if (frames) {
			/* Each frame of the file in turn (a little-endian u16
			 * length, then its bytes), `repeat` runs each. */
			err = run_frames(bpf_program__fd(prog), frames, frames_len, repeat,
					 &retval, &dur);
		} else {
			err = test_run(bpf_program__fd(prog), pkt, pkt_len, repeat, &retval,
				       &dur);
		}
		if (!err && resched && cpu >= 0) {
			/* A new pinned event on the run's CPU makes perf
			 * schedule that CPU's pinned events out and in again
			 * (ctx_resched): every counter restarts, so the
			 * module's cached reads are stale until it heals them.
			 * Then the same runs again. */
			int pfd = perf_open(PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS, cpu,
					    true);

			printf("INXPECT-VM-INFO resched obj=%s fd=%d\n", oname, pfd);
			err = test_run(bpf_program__fd(prog), pkt, pkt_len, repeat, &retval,
				       &dur);
			if (pfd >= 0)
				close(pfd);
		}
		if (!err && preempt_runs) {
			/* One run per call, each long enough for the child's
			 * period (instr/preempt.bpf.c). */
			pid_t child = start_preempter(cpu, preempt);
			int st = 0;

			for (int i = 0; !err && i < preempt_runs; i++)
				err = test_run(bpf_program__fd(prog), pkt, pkt_len, 1, &retval,
					       &dur);
			waitpid(child, &st, 0);
			printf("INXPECT-VM-INFO preempt obj=%s perturbations=%d\n", oname,
			       WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		}
		for (int c = 0; !err && c < ncpus; c++) {
			if (pin_cpu(cpus[c])) {
				check(false, "run: pin", "cpu %d: %s", cpus[c], strerror(errno));
				return 1;
			}
			err = test_run(bpf_program__fd(prog), pkt, pkt_len, repeat, &retval,
				       &dur);
		}
		if (churner > 0) {
			int st = 0;

			kill(churner, SIGTERM);
			waitpid(churner, &st, 0);
			churner = -1;
			printf("INXPECT-VM-INFO churn obj=%s rounds=%d\n", oname,
			       WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		}
		snprintf(name, sizeof(name), "run %s/%s", oname, pname);
		check(!err && (want_retval < 0 || retval == want_retval), name,
		      "err %d (%s) retval %u want %ld", err, strerror(-err), retval,
		      want_retval);
		if (!err)
			printf("INXPECT-VM-RUN obj=%s prog=%s retval=%u duration_ns=%u repeat=%d\n",
			       oname, pname, retval, dur,
			       (1 + ncpus + (resched && cpu >= 0)) * repeat + preempt_runs);
	}
	snprintf(name, sizeof(name), "run %s: programs", oname);
	check(ran > 0, name, "no %s program", only ? only : "XDP/TC");
	for (int i = 0; i < ndump; i++) {
		snprintf(name, sizeof(name), "run %s: dump %s", oname, dumps[i]);
		err = dump_map(oname, obj, dumps[i]);
		check(!err, name, "%d (%s)", err, strerror(-err));
	}
	bpf_object__close(obj);
	if (evfd >= 0)
		close(evfd);
	return n_fail ? 1 : 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: inxpect-vm-test kmod KO BPFDIR [RELOADS]\n"
			"       inxpect-vm-test run OBJ [--prog NAME] [--repeat N] "
			"[--retval N] [--packet FILE] [--dump MAP]... [--kfuncs] [--cpu C]\n"
			"           [--churn N] [--resched] [--preempt N] [--cpus C,C...] [--events EV,EV...]\n"
			"       inxpect-vm-test events [--others N] [--expect EBUSY] EVENT...\n"
			"       inxpect-vm-test hotplug-events\n"
			"       inxpect-vm-test rmmod\n");
	return 2;
}

int main(int argc, char **argv)
{
	int ret;

	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_print(libbpf_print);
	if (argc >= 4 && !strcmp(argv[1], "kmod"))
		return cmd_kmod(argv[2], argv[3], argc > 4 ? atoi(argv[4]) : 100);
	if (argc >= 2 && !strcmp(argv[1], "events"))
		return cmd_events(argc - 2, argv + 2);
	if (argc == 2 && !strcmp(argv[1], "hotplug-events"))
		return cmd_hotplug_events();
	if (argc >= 3 && !strcmp(argv[1], "run"))
		return cmd_run(argc - 2, argv + 2);
	if (argc == 2 && !strcmp(argv[1], "idle")) {
		/* After everything else ran (loader included): nobody holds
		 * the counters. */
		int fd = open(INXPECT_DEVICE, O_RDWR | O_CLOEXEC);
		struct inxpect_owner o;

		memset(&o, 0xff, sizeof(o));
		ret = fd < 0 ? -errno : xioctl(fd, INXPECT_IOC_GET_OWNER, &o);
		check(!ret && nr_active(fd) == 0 && o.pid == 0, "idle: 0 configured slots at the end",
		      "ret %d active %u pid %d", ret, nr_active(fd), o.pid);
		if (fd >= 0)
			close(fd);
		return n_fail ? 1 : 0;
	}
	if (argc == 2 && !strcmp(argv[1], "rmmod")) {
		ret = mod_unload();
		check(!ret, "rmmod", "%d (%s)", ret, strerror(-ret));
		return ret ? 1 : 0;
	}
	return usage();
}
