/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) WITH Linux-syscall-note */
/*
 * inxpect kernel module: user-space ABI of /dev/inxpect.
 *
 * Every struct has a fixed size, explicit padding (fields named "reserved",
 * which must be zero on input and are zero on output) and 8-byte alignment
 * for __u64 fields, so it mirrors 1:1 into a #[repr(C)] Rust struct.
 * The ioctl numbers encode the struct sizes, so a layout change is a new
 * number; INXPECT_ABI_VERSION changes with any change of meaning.
 *
 * Errors (negative errno from ioctl(2), i.e. errno in user space):
 *   EPERM    caller lacks CAP_PERFMON / CAP_SYS_ADMIN (checked at open and
 *            again on every ioctl: a descriptor passed to an unprivileged
 *            process is useless there)
 *   ENOTTY   unknown ioctl
 *   EFAULT   bad user pointer
 *   EINVAL   malformed request: reserved field or unknown flag set,
 *            nr_events == 0, event type not a hardware type (software,
 *            tracepoint, breakpoint events cannot be read by rdpmc),
 *            PERF_TYPE_HARDWARE config >= PERF_COUNT_HW_MAX, the PMU does
 *            not know the event, or the event's PMU is not a core PMU (the
 *            PMU of PERF_TYPE_HARDWARE cycles: IBS, uncore, msr, software
 *            PMUs have no counter rdpmc can read; the reason goes to the
 *            kernel log); GET_STATUS with a CPU that is not possible
 *   E2BIG    SET_EVENTS with nr_events > INXPECT_MAX_SLOTS
 *   ENODEV   SET_EVENTS on a machine without a hardware PMU (e.g. a VM
 *            without a virtual PMU); checked after the request is validated
 *   EBUSY    SET_EVENTS or CLEAR while another open file holds the
 *            configuration (GET_OWNER names the holder); or the events were
 *            created but the PMU cannot keep all of them on a counter at
 *            once (too many for the free counters, or counter constraints,
 *            e.g. the NMI watchdog or other pinned users)
 *   other    passed through from perf_event_create_kernel_counter()
 *            (ENOMEM, EACCES, EOPNOTSUPP for unsupported attributes, ...)
 * A failed SET_EVENTS leaves no events configured (the old configuration is
 * released before the new one is created, so they do not compete).
 *
 * Ownership (ABI 2): the open file that made the last successful SET_EVENTS
 * owns the configuration until it sends CLEAR or is closed; closing it (also
 * by the owner's death, SIGKILL included) releases every counter. Other open
 * files can read (GET_INFO, GET_STATUS, GET_OWNER) but not configure.
 *
 * Reads (ABI 2): every read kfunc returns a value with bit 63 set
 * (INXPECT_READ_INVALID) when the read is not valid: the slot has no event
 * on a counter on this CPU, the event left the counter it was on when the
 * cache was loaded (moved, reprogrammed, error state), or the slot does not
 * exist. Valid _lo reads are < 2^32, valid full reads < 2^63.
 */
#ifndef INXPECT_UAPI_H
#define INXPECT_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define INXPECT_ABI_VERSION 2
#define INXPECT_DEVICE "/dev/inxpect"
/* Event slots: inxpect_read_pmc(slot) takes 0..INXPECT_MAX_SLOTS-1. */
#define INXPECT_MAX_SLOTS 4

/* Bit 63 of a kfunc's result: drop the measurement. */
#define INXPECT_READ_INVALID (1ULL << 63)

/* struct inxpect_event.flags */
#define INXPECT_EV_EXCLUDE_USER (1u << 0)
#define INXPECT_EV_EXCLUDE_KERNEL (1u << 1)
#define INXPECT_EV_EXCLUDE_HV (1u << 2)
#define INXPECT_EV_ALL_FLAGS                                                   \
	(INXPECT_EV_EXCLUDE_USER | INXPECT_EV_EXCLUDE_KERNEL |                 \
	 INXPECT_EV_EXCLUDE_HV)

/* One counter, in perf_event_attr terms (see perf_event_open(2)). */
struct inxpect_event {
	__u32 type; /* PERF_TYPE_HARDWARE, _HW_CACHE, _RAW or a core PMU's
		     * dynamic type from /sys/bus/event_source/devices/X/type */
	__u32 flags; /* INXPECT_EV_* */
	__u64 config;
	__u64 config1;
	__u64 config2;
}; /* 32 bytes */

/* struct inxpect_info.flags */
#define INXPECT_INFO_HAS_PMU (1u << 0)

struct inxpect_info {
	__u32 abi_version; /* INXPECT_ABI_VERSION */
	__u32 max_slots; /* INXPECT_MAX_SLOTS */
	__u32 nr_active; /* configured slots (0 once the owner closed) */
	__u32 flags; /* INXPECT_INFO_* */
	__u32 nr_cpu_ids; /* GET_STATUS accepts cpu < nr_cpu_ids */
	__u32 reserved[3];
}; /* 32 bytes */

struct inxpect_config {
	__u32 nr_events; /* 1..INXPECT_MAX_SLOTS; event i goes to slot i */
	__u32 reserved;
	struct inxpect_event events[INXPECT_MAX_SLOTS];
}; /* 136 bytes */

/* struct inxpect_slot_status.state */
#define INXPECT_SLOT_UNUSED 0 /* slot not configured */
#define INXPECT_SLOT_ACTIVE 1 /* counting; rdpmc_index is valid */
#define INXPECT_SLOT_INACTIVE 2 /* event exists but is not on a counter */
#define INXPECT_SLOT_ERROR 3 /* creating the event failed; see error */
#define INXPECT_SLOT_OFFLINE 4 /* the CPU is offline */

struct inxpect_slot_status {
	struct inxpect_event event; /* as configured */
	__u32 state; /* INXPECT_SLOT_* */
	__s32 error; /* -errno when state == ERROR, else 0 */
	__s32 rdpmc_index; /* ECX value used for rdpmc, -1 if none */
	__u32 reserved;
}; /* 48 bytes */

struct inxpect_status {
	__u32 cpu; /* in: the CPU to describe */
	__u32 nr_slots; /* out: configured slots */
	struct inxpect_slot_status slots[INXPECT_MAX_SLOTS];
}; /* 200 bytes */

/* struct inxpect_owner.flags */
#define INXPECT_OWNER_SELF (1u << 0) /* the caller's open file is the owner */

/* Who holds the configuration (GET_OWNER); all zero when nobody does. */
struct inxpect_owner {
	__s32 pid; /* thread group id of the configurer in the caller's pid
		    * namespace; 0 when none or not visible there */
	__u32 uid; /* its uid in the caller's user namespace */
	char comm[16]; /* its command name at SET_EVENTS */
	__u32 nr_events; /* configured slots */
	__u32 flags; /* INXPECT_OWNER_* */
	struct inxpect_event events[INXPECT_MAX_SLOTS];
}; /* 160 bytes */

#define INXPECT_IOC_MAGIC 0xB5
#define INXPECT_IOC_GET_INFO _IOR(INXPECT_IOC_MAGIC, 0, struct inxpect_info)
#define INXPECT_IOC_SET_EVENTS _IOW(INXPECT_IOC_MAGIC, 1, struct inxpect_config)
#define INXPECT_IOC_CLEAR _IO(INXPECT_IOC_MAGIC, 2)
#define INXPECT_IOC_GET_STATUS _IOWR(INXPECT_IOC_MAGIC, 3, struct inxpect_status)
#define INXPECT_IOC_GET_OWNER _IOR(INXPECT_IOC_MAGIC, 4, struct inxpect_owner)

#endif /* INXPECT_UAPI_H */
