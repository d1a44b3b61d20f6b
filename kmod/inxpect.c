// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * inxpect: kfuncs that read hardware performance counters (rdpmc) and the
 * TSC from XDP and TC BPF programs, and a root-only /dev/inxpect that
 * programs the counters through perf (perf_event_create_kernel_counter), so
 * the module is vendor-neutral and shares the PMU with perf instead of
 * writing MSRs behind its back.
 *
 * Fast path: inxpect_read_pmc() reads one per-CPU int (the rdpmc index of the
 * slot's event on this CPU, -1 when there is none) and executes rdpmc only
 * when it is >= 0. Every instruction there is measurement noise, so all the
 * bookkeeping lives on the slow path, which keeps that array up to date.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bpf.h>
#include <linux/btf.h>
#include <linux/btf_ids.h>
#include <linux/capability.h>
#include <linux/cpu.h>
#include <linux/cpuhotplug.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/perf_event.h>
#include <linux/rcupdate.h>
#include <linux/smp.h>
#include <linux/uaccess.h>
#include <linux/version.h>

#include "inxpect_uapi.h"

#ifndef CONFIG_X86_64
#error "inxpect reads counters with rdpmc/rdtsc: x86-64 only"
#endif

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0)
#error "inxpect needs Linux >= 6.1 (BTF_SET8 kfunc sets for modules)"
#endif

/* __bpf_kfunc appeared in 6.2; before that a kfunc only had to stay global and
 * not inlined for resolve_btfids and pahole to see it. */
#ifndef __bpf_kfunc
#define __bpf_kfunc __used noinline
#endif

/* Read by the kfunc: rdpmc index per slot on this CPU, -1 = do not rdpmc. The
 * initializer is the image copied to every CPU's area at module load. */
static DEFINE_PER_CPU(int[INXPECT_MAX_SLOTS], inxpect_rdpmc) = { -1, -1, -1, -1 };

/* Slow-path state, protected by inxpect_lock (taken after cpus_read_lock). */
struct inxpect_cpu {
	struct perf_event *event[INXPECT_MAX_SLOTS];
	int error[INXPECT_MAX_SLOTS];
};
static DEFINE_PER_CPU(struct inxpect_cpu, inxpect_cpu);
static DEFINE_MUTEX(inxpect_lock);
static struct inxpect_event inxpect_events[INXPECT_MAX_SLOTS];
static unsigned int inxpect_nr_events;
static bool inxpect_has_pmu;
static int inxpect_cpuhp_state = -1;

/* ---- kfuncs ---------------------------------------------------------- */

/* Prototypes keep W=1 (-Wmissing-prototypes) quiet on every kernel; newer
 * ones offer __bpf_kfunc_start_defs() for the same purpose. */
__u64 inxpect_read_pmc(__u32 slot);
__u64 inxpect_read_tsc(void);

/*
 * The probes' own reads. Under IBT the compiler starts every global function
 * with endbr64, one more instruction inside each measurement; the JIT calls
 * kfuncs directly, never through a pointer, so they do not need it
 * (nocf_check is part of the type, hence on the prototypes too).
 */
#ifdef CONFIG_X86_KERNEL_IBT
#define __inxpect_direct __attribute__((nocf_check))
#else
#define __inxpect_direct
#endif
__inxpect_direct __u64 inxpect_read_pmc0_lo(void);
__inxpect_direct __u64 inxpect_read_tsc_lo(void);

/*
 * notrace: no __fentry__ call, one instruction less and no ftrace hook inside
 * a measurement. lfence: rdpmc/rdtsc are not ordered with earlier
 * instructions; without it the read may happen before the measured code ends.
 */
__bpf_kfunc notrace __u64 inxpect_read_pmc(__u32 slot)
{
	u64 lo, hi; /* rdpmc clears bits 63:32 of rax and rdx */
	int idx;

	if (unlikely(slot >= INXPECT_MAX_SLOTS))
		return 0;
	idx = this_cpu_read(inxpect_rdpmc[slot]);
	if (idx < 0)
		return 0;
	asm volatile("lfence; rdpmc" : "=a"(lo), "=d"(hi) : "c"(idx));
	return (hi << 32) | lo;
}

__bpf_kfunc notrace __u64 inxpect_read_tsc(void)
{
	u64 lo, hi;

	asm volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi));
	return (hi << 32) | lo;
}

/*
 * The low 32 bits only, for the probes' deltas (taken mod 2^32; a region
 * would need over a second to wrap): rdpmc/rdtsc already zero bits 63:32 of
 * rax, so after the read there is only the return. Slot 0 is fixed, so no
 * argument and no bounds check either. Between the two reads of a region
 * this leaves: `ret` after START's read, `mov/test/js/lfence` before END's.
 */
__bpf_kfunc notrace __inxpect_direct __u64 inxpect_read_pmc0_lo(void)
{
	u64 lo;
	int idx = this_cpu_read(inxpect_rdpmc[0]);

	/* unlikely: keeps `xor eax,eax` off the read path. */
	if (unlikely(idx < 0))
		return 0;
	asm volatile("lfence; rdpmc" : "=a"(lo) : "c"(idx) : "rdx");
	return lo;
}

__bpf_kfunc notrace __inxpect_direct __u64 inxpect_read_tsc_lo(void)
{
	u64 lo;

	asm volatile("lfence; rdtsc" : "=a"(lo) : : "rdx");
	return lo;
}

/* BTF_KFUNCS_START (6.9+) marks the set as kfuncs; 6.9+ refuses a plain
 * BTF_SET8 with -EINVAL, and 6.1 only has BTF_SET8. Test the macro rather
 * than the version: distributions backport. */
#ifdef BTF_KFUNCS_START
BTF_KFUNCS_START(inxpect_kfunc_ids)
#else
BTF_SET8_START(inxpect_kfunc_ids)
#endif
BTF_ID_FLAGS(func, inxpect_read_pmc)
BTF_ID_FLAGS(func, inxpect_read_tsc)
BTF_ID_FLAGS(func, inxpect_read_pmc0_lo)
BTF_ID_FLAGS(func, inxpect_read_tsc_lo)
#ifdef BTF_KFUNCS_END
BTF_KFUNCS_END(inxpect_kfunc_ids)
#else
BTF_SET8_END(inxpect_kfunc_ids)
#endif

static const struct btf_kfunc_id_set inxpect_kfunc_set = {
	.owner = THIS_MODULE,
	.set = &inxpect_kfunc_ids,
};

/* ---- counter bookkeeping (slow path) --------------------------------- */

/* Runs on the CPU it describes with IRQs off, like perf's own scheduling, so
 * the event's state and counter index are stable while we copy them. */
static void inxpect_refresh_local(void *unused)
{
	struct inxpect_cpu *c = this_cpu_ptr(&inxpect_cpu);
	unsigned int slot;

	for (slot = 0; slot < INXPECT_MAX_SLOTS; slot++) {
		struct perf_event *e = c->event[slot];
		int idx = -1;

		if (e && READ_ONCE(e->state) == PERF_EVENT_STATE_ACTIVE &&
		    e->hw.idx >= 0)
			idx = e->hw.event_base_rdpmc;
		this_cpu_write(inxpect_rdpmc[slot], idx);
	}
}

static void inxpect_disarm_local(void *unused)
{
	unsigned int slot;

	for (slot = 0; slot < INXPECT_MAX_SLOTS; slot++)
		this_cpu_write(inxpect_rdpmc[slot], -1);
}

static void inxpect_release_cpu(unsigned int cpu)
{
	struct inxpect_cpu *c = per_cpu_ptr(&inxpect_cpu, cpu);
	unsigned int slot;

	for (slot = 0; slot < INXPECT_MAX_SLOTS; slot++) {
		if (c->event[slot])
			perf_event_release_kernel(c->event[slot]);
		c->event[slot] = NULL;
		c->error[slot] = 0;
	}
}

static void inxpect_make_attr(struct perf_event_attr *attr,
			      const struct inxpect_event *ev)
{
	memset(attr, 0, sizeof(*attr));
	attr->size = sizeof(*attr);
	attr->type = ev->type;
	attr->config = ev->config;
	attr->config1 = ev->config1;
	attr->config2 = ev->config2;
	/* Pinned: never multiplexed, so the counter index stays put. */
	attr->pinned = 1;
	attr->exclude_user = !!(ev->flags & INXPECT_EV_EXCLUDE_USER);
	attr->exclude_kernel = !!(ev->flags & INXPECT_EV_EXCLUDE_KERNEL);
	attr->exclude_hv = !!(ev->flags & INXPECT_EV_EXCLUDE_HV);
}

static int inxpect_create(unsigned int cpu, unsigned int slot)
{
	struct inxpect_cpu *c = per_cpu_ptr(&inxpect_cpu, cpu);
	struct perf_event_attr attr;
	struct perf_event *e;
	int err;

	inxpect_make_attr(&attr, &inxpect_events[slot]);
	e = perf_event_create_kernel_counter(&attr, cpu, NULL, NULL, NULL);
	if (IS_ERR(e)) {
		err = PTR_ERR(e);
		/* perf says ENOENT when no PMU claims the event. */
		c->error[slot] = err == -ENOENT ? -EINVAL : err;
		return c->error[slot];
	}
	/* Only core PMUs (perf_hw_context) have counters rdpmc can read;
	 * uncore, msr, software... events have no event_base_rdpmc. */
	if (e->pmu->task_ctx_nr != perf_hw_context) {
		perf_event_release_kernel(e);
		c->error[slot] = -EINVAL;
		return -EINVAL;
	}
	c->event[slot] = e;
	c->error[slot] = 0;
	return 0;
}

/* Caller holds cpus_read_lock() and inxpect_lock. */
static void inxpect_clear_locked(void)
{
	unsigned int cpu;

	on_each_cpu(inxpect_disarm_local, NULL, 1);
	/* BPF programs run under RCU: after this no kfunc still holds an index
	 * of an event we are about to release. */
	synchronize_rcu();
	for_each_possible_cpu(cpu)
		inxpect_release_cpu(cpu);
	memset(inxpect_events, 0, sizeof(inxpect_events));
	inxpect_nr_events = 0;
}

static int inxpect_cpu_online(unsigned int cpu)
{
	unsigned int slot;

	mutex_lock(&inxpect_lock);
	/* A CPU that cannot count keeps the error in its status; failing the
	 * hotplug operation would be worse. */
	for (slot = 0; slot < inxpect_nr_events; slot++)
		inxpect_create(cpu, slot);
	smp_call_function_single(cpu, inxpect_refresh_local, NULL, 1);
	mutex_unlock(&inxpect_lock);
	return 0;
}

static int inxpect_cpu_offline(unsigned int cpu)
{
	mutex_lock(&inxpect_lock);
	smp_call_function_single(cpu, inxpect_disarm_local, NULL, 1);
	inxpect_release_cpu(cpu);
	mutex_unlock(&inxpect_lock);
	return 0;
}

/* A disabled cycles counter needs no free counter, only a PMU that knows
 * the event: creating one is a vendor-neutral "is there a core PMU". */
static bool inxpect_probe_pmu(void)
{
	struct perf_event_attr attr = {
		.type = PERF_TYPE_HARDWARE,
		.config = PERF_COUNT_HW_CPU_CYCLES,
		.size = sizeof(attr),
		.disabled = 1,
	};
	struct perf_event *e;
	bool has;

	cpus_read_lock();
	e = perf_event_create_kernel_counter(&attr,
					     cpumask_first(cpu_online_mask),
					     NULL, NULL, NULL);
	cpus_read_unlock();
	if (IS_ERR(e)) {
		pr_debug("no hardware PMU: cycles event: %ld\n", PTR_ERR(e));
		return false;
	}
	has = e->pmu->task_ctx_nr == perf_hw_context;
	perf_event_release_kernel(e);
	return has;
}

/* ---- /dev/inxpect ------------------------------------------------------ */

static int inxpect_validate(const struct inxpect_config *cfg)
{
	unsigned int i;

	if (cfg->nr_events > INXPECT_MAX_SLOTS)
		return -E2BIG;
	if (!cfg->nr_events || cfg->reserved)
		return -EINVAL;
	for (i = 0; i < INXPECT_MAX_SLOTS; i++) {
		const struct inxpect_event *ev = &cfg->events[i];

		if (i >= cfg->nr_events) {
			/* Unused entries must be zero: room for extensions. */
			if (memchr_inv(ev, 0, sizeof(*ev)))
				return -EINVAL;
			continue;
		}
		if (ev->flags & ~INXPECT_EV_ALL_FLAGS)
			return -EINVAL;
		switch (ev->type) {
		case PERF_TYPE_HARDWARE:
			/* The upper half may carry an extended PMU type. */
			if ((ev->config & 0xffffffffULL) >= PERF_COUNT_HW_MAX)
				return -EINVAL;
			break;
		case PERF_TYPE_HW_CACHE:
		case PERF_TYPE_RAW:
			break;
		default:
			/* Software, tracepoint, breakpoint: not on a PMC.
			 * Dynamic types (>= PERF_TYPE_MAX) are checked when
			 * created: they must belong to a core PMU. */
			if (ev->type < PERF_TYPE_MAX)
				return -EINVAL;
			break;
		}
	}
	return 0;
}

static long inxpect_set_events(void __user *uarg)
{
	struct inxpect_config cfg;
	unsigned int cpu, slot;
	int err;

	if (copy_from_user(&cfg, uarg, sizeof(cfg)))
		return -EFAULT;
	err = inxpect_validate(&cfg);
	if (err)
		return err;
	if (!inxpect_has_pmu)
		return -ENODEV;

	cpus_read_lock();
	mutex_lock(&inxpect_lock);
	/* Release the old set first so old and new do not compete for
	 * counters; a failure below leaves nothing configured. */
	inxpect_clear_locked();
	memcpy(inxpect_events, cfg.events, sizeof(inxpect_events));
	inxpect_nr_events = cfg.nr_events;
	for_each_online_cpu(cpu) {
		for (slot = 0; slot < inxpect_nr_events; slot++) {
			err = inxpect_create(cpu, slot);
			if (err)
				goto fail;
		}
	}
	on_each_cpu(inxpect_refresh_local, NULL, 1);
	/* A pinned event that does not fit goes to the error state instead
	 * of failing creation: report it as busy. */
	for_each_online_cpu(cpu) {
		for (slot = 0; slot < inxpect_nr_events; slot++) {
			if (per_cpu(inxpect_rdpmc, cpu)[slot] < 0) {
				err = -EBUSY;
				goto fail;
			}
		}
	}
	mutex_unlock(&inxpect_lock);
	cpus_read_unlock();
	return 0;
fail:
	inxpect_clear_locked();
	mutex_unlock(&inxpect_lock);
	cpus_read_unlock();
	return err;
}

static long inxpect_clear(void)
{
	cpus_read_lock();
	mutex_lock(&inxpect_lock);
	inxpect_clear_locked();
	mutex_unlock(&inxpect_lock);
	cpus_read_unlock();
	return 0;
}

static long inxpect_get_info(void __user *uarg)
{
	struct inxpect_info info;

	memset(&info, 0, sizeof(info));
	info.abi_version = INXPECT_ABI_VERSION;
	info.max_slots = INXPECT_MAX_SLOTS;
	mutex_lock(&inxpect_lock);
	info.nr_active = inxpect_nr_events;
	mutex_unlock(&inxpect_lock);
	info.flags = inxpect_has_pmu ? INXPECT_INFO_HAS_PMU : 0;
	info.nr_cpu_ids = nr_cpu_ids;
	return copy_to_user(uarg, &info, sizeof(info)) ? -EFAULT : 0;
}

static long inxpect_get_status(void __user *uarg)
{
	struct inxpect_status st;
	struct inxpect_cpu *c;
	unsigned int cpu, slot;
	bool online;

	if (copy_from_user(&st, uarg, sizeof(st)))
		return -EFAULT;
	cpu = st.cpu;
	if (cpu >= nr_cpu_ids)
		return -EINVAL;
	memset(&st, 0, sizeof(st));
	st.cpu = cpu;

	cpus_read_lock();
	mutex_lock(&inxpect_lock);
	online = cpu_online(cpu);
	/* Also repairs the fast path if another perf user made the PMU move
	 * our events to other counters. */
	if (online)
		smp_call_function_single(cpu, inxpect_refresh_local, NULL, 1);
	c = per_cpu_ptr(&inxpect_cpu, cpu);
	st.nr_slots = inxpect_nr_events;
	for (slot = 0; slot < INXPECT_MAX_SLOTS; slot++) {
		struct inxpect_slot_status *s = &st.slots[slot];
		int idx = per_cpu(inxpect_rdpmc, cpu)[slot];

		s->rdpmc_index = -1;
		if (slot >= inxpect_nr_events) {
			s->state = INXPECT_SLOT_UNUSED;
			continue;
		}
		s->event = inxpect_events[slot];
		if (!online) {
			s->state = INXPECT_SLOT_OFFLINE;
		} else if (c->error[slot]) {
			s->state = INXPECT_SLOT_ERROR;
			s->error = c->error[slot];
		} else if (idx >= 0) {
			s->state = INXPECT_SLOT_ACTIVE;
			s->rdpmc_index = idx;
		} else {
			s->state = INXPECT_SLOT_INACTIVE;
		}
	}
	mutex_unlock(&inxpect_lock);
	cpus_read_unlock();
	return copy_to_user(uarg, &st, sizeof(st)) ? -EFAULT : 0;
}

static long inxpect_ioctl(struct file *file, unsigned int cmd,
			  unsigned long arg)
{
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case INXPECT_IOC_GET_INFO:
		return inxpect_get_info(uarg);
	case INXPECT_IOC_SET_EVENTS:
		return inxpect_set_events(uarg);
	case INXPECT_IOC_CLEAR:
		return inxpect_clear();
	case INXPECT_IOC_GET_STATUS:
		return inxpect_get_status(uarg);
	default:
		return -ENOTTY;
	}
}

static int inxpect_open(struct inode *inode, struct file *file)
{
	/* The node is 0600 already; capabilities also stop a root process
	 * that dropped them. */
	if (!perfmon_capable())
		return -EPERM;
	return nonseekable_open(inode, file);
}

static const struct file_operations inxpect_fops = {
	.owner = THIS_MODULE,
	.open = inxpect_open,
	.unlocked_ioctl = inxpect_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static struct miscdevice inxpect_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "inxpect",
	.fops = &inxpect_fops,
	.mode = 0600,
};

/* ---- module ------------------------------------------------------------ */

static int __init inxpect_init(void)
{
	int ret;

	inxpect_has_pmu = inxpect_probe_pmu();

	ret = register_btf_kfunc_id_set(BPF_PROG_TYPE_XDP, &inxpect_kfunc_set);
	if (!ret)
		ret = register_btf_kfunc_id_set(BPF_PROG_TYPE_SCHED_CLS,
						&inxpect_kfunc_set);
	if (ret) {
		/* Usually a module built without BTF (no vmlinux with BTF
		 * or no pahole at build time). */
		pr_err("registering kfuncs failed: %d\n", ret);
		return ret;
	}

	ret = cpuhp_setup_state(CPUHP_AP_ONLINE_DYN, "inxpect:online",
				inxpect_cpu_online, inxpect_cpu_offline);
	if (ret < 0) {
		pr_err("cpu hotplug state: %d\n", ret);
		return ret;
	}
	inxpect_cpuhp_state = ret;

	ret = misc_register(&inxpect_misc);
	if (ret) {
		pr_err("registering /dev/inxpect: %d\n", ret);
		cpuhp_remove_state(inxpect_cpuhp_state);
		return ret;
	}
	pr_info("loaded: ABI %d, %d slots, hardware PMU: %s\n",
		INXPECT_ABI_VERSION, INXPECT_MAX_SLOTS,
		inxpect_has_pmu ? "yes" : "no (inxpect_read_pmc() returns 0)");
	return 0;
}

static void __exit inxpect_exit(void)
{
	/* Open files pin the module, so no ioctl runs past this point; BPF
	 * programs calling the kfuncs pin it too. */
	misc_deregister(&inxpect_misc);
	inxpect_clear();
	cpuhp_remove_state(inxpect_cpuhp_state);
}

module_init(inxpect_init);
module_exit(inxpect_exit);

MODULE_LICENSE("Dual BSD/GPL");
MODULE_DESCRIPTION("inxpect: PMC and TSC kfuncs for XDP/TC profiling");
MODULE_VERSION("0.1.0");
