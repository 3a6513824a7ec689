/* SPDX-License-Identifier: GPL-2.0 */
/* Record layouts shared by bpf/wait_states.bpf.c and user space (decoded
 * through the object's BTF). Timestamps are bpf_ktime_get_ns(), i.e.
 * CLOCK_MONOTONIC, comparable with Python's time.monotonic_ns(). */
#ifndef EBPF_ENERGY_WAIT_STATES_H
#define EBPF_ENERGY_WAIT_STATES_H

/* The four states, the index of ws_proc.ns[] */
#define WS_ON_CPU    0
#define WS_RUNNABLE  1  /* on a runqueue, waiting for a CPU */
#define WS_IO        2  /* TASK_UNINTERRUPTIBLE in io_schedule (in_iowait) */
#define WS_SLEEP     3  /* any other wait: sleeps, locks, pipes, signals */
#define WS_STATES    4

#define WS_TASK_UNINTERRUPTIBLE 0x2
#define WS_TASK_DEAD            0x80

#define WS_COUNT_NONE   0
#define WS_COUNT_SWITCH 1
#define WS_COUNT_WAKEUP 2

/* A live thread: its state since when, and its own closed intervals (kept
 * here, not in the process's entry, so a reader gets a thread's books in one
 * lookup: closed sums and the open interval agree). */
struct ws_thread {
	__u32 seq;           /* bumped before an update ... */
	__u32 seq_end;       /* ... and copied here after it: differ = a torn read, look again */
	__u64 since_ns;      /* in `state` since */
	__u32 tgid;
	__u32 state;
	__u64 ns[WS_STATES]; /* closed intervals per state */
	__u64 switches;      /* times it got a CPU */
	__u64 wakeups;       /* times it was woken from SLEEP or IO */
	__u64 cycles;        /* PMU counts over its closed slices (count_pmu only) */
	__u64 instructions;
};

/* A process's exited threads, folded in at their final switch. */
struct ws_proc {
	__u64 ns[WS_STATES];
	__u64 switches;
	__u64 wakeups;
	__u64 cycles;
	__u64 instructions;
};

/* What this CPU's two counters read at its last switch (0 = not read yet). */
struct ws_pmu_last {
	__u64 cycles;
	__u64 instructions;
};

#define WS_MAX_CPUS 1024

#endif
