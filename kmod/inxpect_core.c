// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * inxpect: kfuncs that read hardware performance counters (rdpmc) and the
 * TSC from XDP and TC BPF programs, and a root-only /dev/inxpect that
 * programs the counters through perf (perf_event_create_kernel_counter), so
 * the module is vendor-neutral and shares the PMU with perf instead of
 * writing MSRs behind its back.
 *
 * Fast path: a per-CPU cache holds, per slot, the event, the rdpmc index it
 * had when the cache was loaded (-1: do not read) and its counter tag. A read
 * is valid only if the event is still active on that counter with that tag
 * (x86 perf gives an event a new tag whenever it assigns it a counter):
 * START checks before its rdpmc, END after its rdpmc, so any move or
 * reprogramming between the two is caught and neither check sits between
 * the reads. An invalid read returns INXPECT_READ_INVALID (bit 63).
 *
 * The cache is only written from process context on its own CPU (or by the
 * CPU's hotplug thread) with IRQs off. A new configuration is armed only an
 * RCU grace period after every CPU was disarmed: no region that read the
 * old events is still open then, even in a program run preemptibly. A read
 * that finds the cache stale queues that CPU's heal work, which reloads it
 * at once: a region open across the move and the reload (a program
 * preempted between its reads) passes END's check, and measures right,
 * because perf restarts a moved counting event where it left off (the
 * counter is written with the event's remaining period) and the deltas are
 * taken mod the counter width. kmod/README.md: the one window left.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bpf.h>
#include <linux/btf.h>
#include <linux/btf_ids.h>
#include <linux/capability.h>
#include <linux/cpu.h>
#include <linux/cpuhotplug.h>
#include <linux/cred.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/perf_event.h>
#include <linux/pid.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/smp.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/workqueue.h>

#include "inxpect_arch.h"
#include "inxpect_fast.h"
#include "inxpect_uapi.h"

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0)
#error "inxpect needs Linux >= 6.1 (BTF_SET8 kfunc sets for modules)"
#endif

/* struct btf_kfunc_id_set.filter: 6.5+. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
#define INXPECT_HAVE_KFUNC_FILTER 1
#endif

static bool test_sw_events;
module_param(test_sw_events, bool, 0444);
MODULE_PARM_DESC(test_sw_events,
		 "tests only: accept software events as slots that never read, "
		 "so ownership can be tested on machines without a PMU");

/* Slow-path state, protected by inxpect_lock (taken after cpus_read_lock). */
struct inxpect_cpu {
	struct perf_event *event[INXPECT_MAX_SLOTS];
	bool readable[INXPECT_MAX_SLOTS]; /* on a core PMU (rdpmc-able) */
	int error[INXPECT_MAX_SLOTS];
};
static DEFINE_PER_CPU(struct inxpect_cpu, inxpect_cpu);
static DEFINE_MUTEX(inxpect_lock);
static struct inxpect_event inxpect_events[INXPECT_MAX_SLOTS];
static unsigned int inxpect_nr_events;
static int inxpect_cpuhp_state = -1;

/* The configuration's owner (inxpect_lock): the open file of the last
 * successful SET_EVENTS, and who made it, for GET_OWNER. */
static struct file *inxpect_owner_file;
static struct pid *inxpect_owner_pid;
static kuid_t inxpect_owner_uid;
static char inxpect_owner_comm[TASK_COMM_LEN];

/* The PMUs that count PERF_TYPE_HARDWARE cycles (several on hybrid CPUs):
 * the only ones whose events sit on counters rdpmc reads. Compared, never
 * dereferenced. Set at load. */
#define INXPECT_MAX_CORE_PMUS 4
static struct pmu *inxpect_core_pmus[INXPECT_MAX_CORE_PMUS];
static unsigned int inxpect_nr_core_pmus;

/* Per-CPU work items: one that reloads the cache when a read found it stale,
 * one that runs slow-path commands (arm, disarm) on the CPU. */
struct inxpect_work {
	struct work_struct work;
	unsigned int cpu;
	void (*fn)(void);
};
static DEFINE_PER_CPU(struct inxpect_work, inxpect_heal_work);
static DEFINE_PER_CPU(struct inxpect_work, inxpect_cmd_work);

/* ---- kfuncs: the reads are in inxpect_read.c -------------------------- */

/* The reads' way off the fast path (inxpect_read.c): have this CPU's cache
 * reloaded from process context and drop this read. __used: arm64 reaches
 * it by a branch in inline asm (INXPECT_ARCH_TAIL). */
noinline __cold __used u64 inxpect_stale(void)
{
	struct inxpect_work *w = this_cpu_ptr(&inxpect_heal_work);

	queue_work_on(w->cpu, system_highpri_wq, &w->work);
	return INXPECT_READ_INVALID;
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
BTF_ID_FLAGS(func, inxpect_read_pmc0_lo_end)
BTF_ID_FLAGS(func, inxpect_read_tsc_lo)
#ifdef BTF_KFUNCS_END
BTF_KFUNCS_END(inxpect_kfunc_ids)
#else
BTF_SET8_END(inxpect_kfunc_ids)
#endif

#ifdef INXPECT_HAVE_KFUNC_FILTER
/*
 * Runs at verification in the loader's context. The counters count the
 * whole CPU, every user and the kernel: reading them is perf's system-wide
 * right, CAP_PERFMON in the initial namespace. A BPF token's namespaced
 * capabilities are deliberately not enough. The filter only sees this
 * module's kfuncs (it is registered on the module's BTF).
 */
static int inxpect_kfunc_filter(const struct bpf_prog *prog, u32 kfunc_id)
{
	if (perfmon_capable())
		return 0;
	pr_notice_ratelimited("refused kfunc call in a program loaded by %s[%d]: reading counters needs CAP_PERFMON\n",
			      current->comm, task_tgid_nr(current));
	return -EACCES;
}
#endif

static const struct btf_kfunc_id_set inxpect_kfunc_set = {
	.owner = THIS_MODULE,
	.set = &inxpect_kfunc_ids,
#ifdef INXPECT_HAVE_KFUNC_FILTER
	.filter = inxpect_kfunc_filter,
#endif
};

/* ---- counter bookkeeping (slow path) --------------------------------- */

/* Reloads index and tag of the cached events from the events themselves.
 * On the CPU it describes, IRQs off. */
static void inxpect_fast_reload(void)
{
	struct inxpect_fast *f = this_cpu_ptr(&inxpect_fast);
	unsigned int slot;

	for (slot = 0; slot < INXPECT_MAX_SLOTS; slot++) {
		struct perf_event *e = f->event[slot];
		int idx = -1;
		u64 tag = 0;

		if (e && READ_ONCE(e->state) == PERF_EVENT_STATE_ACTIVE &&
		    e->hw.idx >= 0) {
			idx = inxpect_arch_counter(e);
			tag = inxpect_arch_tag(e);
		}
		/* Index last: a read that sees it sees the rest. */
		f->tag[slot] = tag;
		WRITE_ONCE(f->rdpmc[slot], idx);
	}
}

/* Loads the cache from the slow-path state; the caller holds inxpect_lock
 * and waits for this to finish. On the CPU, IRQs off. */
static void inxpect_arm_local(void)
{
	struct inxpect_cpu *c = this_cpu_ptr(&inxpect_cpu);
	struct inxpect_fast *f = this_cpu_ptr(&inxpect_fast);
	unsigned int slot;

	for (slot = 0; slot < INXPECT_MAX_SLOTS; slot++) {
		WRITE_ONCE(f->rdpmc[slot], -1);
		f->event[slot] = c->readable[slot] ? c->event[slot] : NULL;
	}
	inxpect_fast_reload();
}

static void inxpect_disarm_local(void)
{
	struct inxpect_fast *f = this_cpu_ptr(&inxpect_fast);
	unsigned int slot;

	for (slot = 0; slot < INXPECT_MAX_SLOTS; slot++) {
		WRITE_ONCE(f->rdpmc[slot], -1);
		f->event[slot] = NULL;
	}
}

static void inxpect_work_fn(struct work_struct *work)
{
	struct inxpect_work *w = container_of(work, struct inxpect_work, work);
	unsigned long flags;

	/* Per-CPU work of an offline CPU runs elsewhere: nothing to do then,
	 * the CPU's cache was disarmed when it went down. */
	local_irq_save(flags);
	if (smp_processor_id() == w->cpu)
		w->fn();
	local_irq_restore(flags);
}

static void inxpect_on_cpu(unsigned int cpu, void (*fn)(void))
{
	struct inxpect_work *w = per_cpu_ptr(&inxpect_cmd_work, cpu);

	w->fn = fn;
	queue_work_on(cpu, system_highpri_wq, &w->work);
	flush_work(&w->work);
}

/* Runs fn on every online CPU in process context and waits. Caller holds
 * cpus_read_lock() and inxpect_lock; fn takes neither. */
static void inxpect_on_online_cpus(void (*fn)(void))
{
	unsigned int cpu;

	for_each_online_cpu(cpu) {
		struct inxpect_work *w = per_cpu_ptr(&inxpect_cmd_work, cpu);

		w->fn = fn;
		queue_work_on(cpu, system_highpri_wq, &w->work);
	}
	for_each_online_cpu(cpu)
		flush_work(&per_cpu_ptr(&inxpect_cmd_work, cpu)->work);
}

static void inxpect_release_cpu(unsigned int cpu)
{
	struct inxpect_cpu *c = per_cpu_ptr(&inxpect_cpu, cpu);
	unsigned int slot;

	for (slot = 0; slot < INXPECT_MAX_SLOTS; slot++) {
		if (c->event[slot])
			perf_event_release_kernel(c->event[slot]);
		c->event[slot] = NULL;
		c->readable[slot] = false;
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

static bool inxpect_is_core_pmu(const struct pmu *pmu)
{
	unsigned int i;

	for (i = 0; i < inxpect_nr_core_pmus; i++)
		if (inxpect_core_pmus[i] == pmu)
			return true;
	return false;
}

static int inxpect_create(unsigned int cpu, unsigned int slot)
{
	struct inxpect_cpu *c = per_cpu_ptr(&inxpect_cpu, cpu);
	const struct inxpect_event *ev = &inxpect_events[slot];
	struct perf_event_attr attr;
	struct perf_event *e;
	bool readable;
	int err;

	inxpect_make_attr(&attr, ev);
	e = perf_event_create_kernel_counter(&attr, cpu, NULL, NULL, NULL);
	if (IS_ERR(e)) {
		err = PTR_ERR(e);
		/* perf says ENOENT when no PMU claims the event. */
		c->error[slot] = err == -ENOENT ? -EINVAL : err;
		return c->error[slot];
	}
	/* Only the core PMU's counters are rdpmc's: uncore, msr, software
	 * and sampling-only PMUs such as AMD IBS (in perf_hw_context since
	 * ~6.2, with no rdpmc index) are refused, not read at index 0. */
	readable = inxpect_is_core_pmu(e->pmu);
	if (!readable && !(test_sw_events && ev->type == PERF_TYPE_SOFTWARE)) {
		pr_info_ratelimited("slot %u: event type %u config %#llx belongs to PMU type %d, not a core PMU with rdpmc counters: refused\n",
				    slot, ev->type, ev->config, e->pmu->type);
		perf_event_release_kernel(e);
		c->error[slot] = -EINVAL;
		return -EINVAL;
	}
	c->event[slot] = e;
	c->readable[slot] = readable;
	c->error[slot] = 0;
	return 0;
}

/* Caller holds cpus_read_lock() and inxpect_lock. */
static void inxpect_clear_locked(void)
{
	unsigned int cpu;

	inxpect_on_online_cpus(inxpect_disarm_local);
	/* BPF programs run under RCU: after this no kfunc still holds an
	 * event we are about to release. Heal work that runs later finds the
	 * cache disarmed. */
	synchronize_rcu();
	for_each_possible_cpu(cpu)
		inxpect_release_cpu(cpu);
	memset(inxpect_events, 0, sizeof(inxpect_events));
	inxpect_nr_events = 0;
	inxpect_owner_file = NULL;
	put_pid(inxpect_owner_pid);
	inxpect_owner_pid = NULL;
	inxpect_owner_uid = GLOBAL_ROOT_UID;
	memset(inxpect_owner_comm, 0, sizeof(inxpect_owner_comm));
}

static void inxpect_arm_smp(void *unused)
{
	inxpect_arm_local();
}

static void inxpect_disarm_smp(void *unused)
{
	inxpect_disarm_local();
}

/* Hotplug callbacks of the AP section run in the CPU's hotplug thread on
 * that CPU, so smp_call_function_single() runs the function right there,
 * IRQs off: no region can be open on it. */
static int inxpect_cpu_online(unsigned int cpu)
{
	unsigned int slot;

	mutex_lock(&inxpect_lock);
	/* A CPU that cannot count keeps the error in its status; failing the
	 * hotplug operation would be worse. */
	for (slot = 0; slot < inxpect_nr_events; slot++)
		inxpect_create(cpu, slot);
	smp_call_function_single(cpu, inxpect_arm_smp, NULL, 1);
	mutex_unlock(&inxpect_lock);
	return 0;
}

static int inxpect_cpu_offline(unsigned int cpu)
{
	mutex_lock(&inxpect_lock);
	smp_call_function_single(cpu, inxpect_disarm_smp, NULL, 1);
	synchronize_rcu();
	inxpect_release_cpu(cpu);
	mutex_unlock(&inxpect_lock);
	return 0;
}

/* A disabled cycles counter needs no free counter, only a PMU that knows
 * the event: creating one per CPU finds the core PMU(s), vendor-neutrally. */
static void inxpect_find_core_pmus(void)
{
	struct perf_event_attr attr = {
		.type = PERF_TYPE_HARDWARE,
		.config = PERF_COUNT_HW_CPU_CYCLES,
		.size = sizeof(attr),
		.disabled = 1,
	};
	unsigned int cpu;

	cpus_read_lock();
	for_each_online_cpu(cpu) {
		struct perf_event *e;

		e = perf_event_create_kernel_counter(&attr, cpu, NULL, NULL,
						     NULL);
		if (IS_ERR(e)) {
			pr_debug("cpu %u: no hardware PMU: cycles event: %ld\n",
				 cpu, PTR_ERR(e));
			continue;
		}
		if (e->pmu->task_ctx_nr == perf_hw_context &&
		    inxpect_arch_pmu_usable(e->pmu) &&
		    !inxpect_is_core_pmu(e->pmu) &&
		    inxpect_nr_core_pmus < INXPECT_MAX_CORE_PMUS)
			inxpect_core_pmus[inxpect_nr_core_pmus++] = e->pmu;
		perf_event_release_kernel(e);
	}
	cpus_read_unlock();
}

/* ---- /dev/inxpect ------------------------------------------------------ */

static bool inxpect_generic_hw_type(__u32 type)
{
	return type == PERF_TYPE_HARDWARE || type == PERF_TYPE_HW_CACHE ||
	       type == PERF_TYPE_RAW;
}

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
		case PERF_TYPE_SOFTWARE:
			if (test_sw_events)
				break;
			return -EINVAL;
		default:
			/* Tracepoint, breakpoint: not on a PMC. Dynamic types
			 * (>= PERF_TYPE_MAX) are checked when created: they
			 * must belong to a core PMU. */
			if (ev->type < PERF_TYPE_MAX)
				return -EINVAL;
			break;
		}
	}
	return 0;
}

static long inxpect_set_events(struct file *file, void __user *uarg)
{
	struct inxpect_config cfg;
	unsigned int cpu, slot;
	int err;

	if (copy_from_user(&cfg, uarg, sizeof(cfg)))
		return -EFAULT;
	err = inxpect_validate(&cfg);
	if (err)
		return err;
	/* Generic hardware types need the core PMU; dynamic types name a PMU
	 * and get EINVAL below when it is not a core one. */
	for (slot = 0; slot < cfg.nr_events; slot++)
		if (!inxpect_nr_core_pmus &&
		    inxpect_generic_hw_type(cfg.events[slot].type))
			return -ENODEV;

	cpus_read_lock();
	mutex_lock(&inxpect_lock);
	if (inxpect_owner_file && inxpect_owner_file != file) {
		err = -EBUSY;
		goto unlock;
	}
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
	inxpect_on_online_cpus(inxpect_arm_local);
	/* A pinned event that does not fit goes to the error state instead
	 * of failing creation: report it as busy. */
	for_each_online_cpu(cpu) {
		struct inxpect_cpu *c = per_cpu_ptr(&inxpect_cpu, cpu);

		for (slot = 0; slot < inxpect_nr_events; slot++) {
			if (c->readable[slot] &&
			    per_cpu(inxpect_fast, cpu).rdpmc[slot] < 0) {
				err = -EBUSY;
				goto fail;
			}
		}
	}
	inxpect_owner_file = file;
	inxpect_owner_pid = get_pid(task_tgid(current));
	inxpect_owner_uid = current_uid();
	get_task_comm(inxpect_owner_comm, current);
	err = 0;
	goto unlock;
fail:
	inxpect_clear_locked();
unlock:
	mutex_unlock(&inxpect_lock);
	cpus_read_unlock();
	return err;
}

/* CLEAR from the owner, or the owner's release. */
static long inxpect_clear_from(struct file *file, bool release)
{
	long ret = 0;

	cpus_read_lock();
	mutex_lock(&inxpect_lock);
	if (inxpect_owner_file == file)
		inxpect_clear_locked();
	else if (inxpect_owner_file && !release)
		ret = -EBUSY;
	mutex_unlock(&inxpect_lock);
	cpus_read_unlock();
	return ret;
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
	info.flags = inxpect_nr_core_pmus ? INXPECT_INFO_HAS_PMU : 0;
	info.nr_cpu_ids = nr_cpu_ids;
	return copy_to_user(uarg, &info, sizeof(info)) ? -EFAULT : 0;
}

static long inxpect_get_owner(struct file *file, void __user *uarg)
{
	struct inxpect_owner o;

	memset(&o, 0, sizeof(o));
	mutex_lock(&inxpect_lock);
	if (inxpect_owner_file) {
		o.pid = pid_vnr(inxpect_owner_pid);
		o.uid = from_kuid_munged(current_user_ns(), inxpect_owner_uid);
		memcpy(o.comm, inxpect_owner_comm, sizeof(o.comm));
		o.nr_events = inxpect_nr_events;
		memcpy(o.events, inxpect_events, sizeof(o.events));
		if (inxpect_owner_file == file)
			o.flags |= INXPECT_OWNER_SELF;
	}
	mutex_unlock(&inxpect_lock);
	return copy_to_user(uarg, &o, sizeof(o)) ? -EFAULT : 0;
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
	/* cpu_possible_mask may have holes below nr_cpu_ids. */
	if (cpu >= nr_cpu_ids || !cpu_possible(cpu))
		return -EINVAL;
	memset(&st, 0, sizeof(st));
	st.cpu = cpu;

	cpus_read_lock();
	mutex_lock(&inxpect_lock);
	online = cpu_online(cpu);
	/* Also repairs the cache if the PMU moved our events. */
	if (online)
		inxpect_on_cpu(cpu, inxpect_fast_reload);
	c = per_cpu_ptr(&inxpect_cpu, cpu);
	st.nr_slots = inxpect_nr_events;
	for (slot = 0; slot < INXPECT_MAX_SLOTS; slot++) {
		struct inxpect_slot_status *s = &st.slots[slot];
		int idx = per_cpu(inxpect_fast, cpu).rdpmc[slot];

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

	/* Again on every call, not only at open: a descriptor handed to a
	 * process without the capability gives it nothing. */
	if (!perfmon_capable())
		return -EPERM;
	switch (cmd) {
	case INXPECT_IOC_GET_INFO:
		return inxpect_get_info(uarg);
	case INXPECT_IOC_SET_EVENTS:
		return inxpect_set_events(file, uarg);
	case INXPECT_IOC_CLEAR:
		return inxpect_clear_from(file, false);
	case INXPECT_IOC_GET_STATUS:
		return inxpect_get_status(uarg);
	case INXPECT_IOC_GET_OWNER:
		return inxpect_get_owner(file, uarg);
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

/* The last close of the owner's file, also when the owner was killed:
 * nothing stays reserved after it. */
static int inxpect_release(struct inode *inode, struct file *file)
{
	inxpect_clear_from(file, true);
	return 0;
}

static const struct file_operations inxpect_fops = {
	.owner = THIS_MODULE,
	.open = inxpect_open,
	.release = inxpect_release,
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
	unsigned int cpu;
	int ret;

	for_each_possible_cpu(cpu) {
		struct inxpect_work *h = per_cpu_ptr(&inxpect_heal_work, cpu);
		struct inxpect_work *w = per_cpu_ptr(&inxpect_cmd_work, cpu);

		INIT_WORK(&h->work, inxpect_work_fn);
		h->cpu = cpu;
		h->fn = inxpect_fast_reload;
		INIT_WORK(&w->work, inxpect_work_fn);
		w->cpu = cpu;
	}
	inxpect_find_core_pmus();

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
	pr_info("loaded: ABI %d, %d slots, hardware PMU: %s%s%s\n",
		INXPECT_ABI_VERSION, INXPECT_MAX_SLOTS,
		inxpect_nr_core_pmus ? "yes" : "no (pmc reads are invalid)",
#ifdef INXPECT_HAVE_KFUNC_FILTER
		"",
#else
		", no kfunc filter before 6.5: any XDP/TC loader may read configured counters",
#endif
		test_sw_events ? ", test_sw_events" : "");
	return 0;
}

static void __exit inxpect_exit(void)
{
	/* Open files pin the module, so no ioctl runs past this point; BPF
	 * programs calling the kfuncs pin it too. */
	unsigned int cpu;

	misc_deregister(&inxpect_misc);
	cpus_read_lock();
	mutex_lock(&inxpect_lock);
	inxpect_clear_locked();
	mutex_unlock(&inxpect_lock);
	cpus_read_unlock();
	cpuhp_remove_state(inxpect_cpuhp_state);
	for_each_possible_cpu(cpu)
		cancel_work_sync(&per_cpu_ptr(&inxpect_heal_work, cpu)->work);
}

module_init(inxpect_init);
module_exit(inxpect_exit);

MODULE_LICENSE("Dual BSD/GPL");
MODULE_DESCRIPTION("inxpect: PMC and TSC kfuncs for XDP/TC profiling");
MODULE_VERSION("0.1.0");
