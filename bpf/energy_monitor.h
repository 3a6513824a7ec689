/* SPDX-License-Identifier: GPL-2.0 */
/* Record layouts shared by bpf/energy_monitor.bpf.c and user space.
 *
 * Plain fixed-width C types only: user space decodes these through the
 * object's own BTF, so every struct here is referenced by the program (a map
 * value, a .bss variable or a layout anchor) and clang emits it.
 *
 * Clock: every *_ns timestamp is bpf_ktime_get_ns(), i.e. CLOCK_MONOTONIC,
 * comparable with Python's time.monotonic_ns().
 */
#ifndef EBPF_ENERGY_MONITOR_H
#define EBPF_ENERGY_MONITOR_H

#define EM_MAX_CPUS     1024  /* slots[] length; CPUs beyond it count in cpu_overflow */
#define EM_COMM_LEN     16
#define EM_TASK_DEAD    0x80  /* task_struct.__state on the final switch-out */

/* task_stats.flags */
#define EM_FLAG_EXITED  0x1   /* sched_process_exit seen (the task may still run once more) */
#define EM_FLAG_DEAD    0x2   /* final switch-out accounted: safe to delete after reading */
#define EM_FLAG_EXECED  0x4   /* comm refreshed by sched_process_exec */

/* Who runs on one CPU since when, plus that CPU's counters.
 * Two 64-byte cache lines per CPU, written only by its own CPU.
 * Read protocol (user space, lock-free): read seq; if odd retry; copy the
 * slot; re-read seq; retry if it changed. seq advances by 2 per switch,
 * so switches = seq / 2. start_ns == 0: no switch seen on this CPU since
 * attach (tid/tgid unknown; the running slice started at rodata start_ns). */
struct cpu_slot {
	__u64 seq;
	__u64 start_ns;     /* when `tid` went on this CPU */
	__u64 start_runtime; /* its se.sum_exec_runtime then: slices are measured
	                      * in the scheduler's own clock, so per-task totals
	                      * equal /proc/PID/schedstat exactly */
	__u32 tid;          /* running now; 0 = the idle task */
	__u32 tgid;
	__u64 idle_ns;      /* closed idle (pid 0) time on this CPU */
	__u64 task_drops;   /* slices lost because `tasks` was full */
	__u64 dropped_ns;   /* their total length */
	__u64 events;       /* slice events submitted to `events` */
	__u64 event_drops;  /* slice events lost: ring buffer full */
} __attribute__((aligned(64)));

/* Per-thread totals: value of the PERCPU_HASH `tasks`, key __u32 tid.
 * Each CPU's copy holds what ran on that CPU (no atomics needed).
 * comm/cgroup_id/tgid are written on insert, exec and exit, into the copy
 * of the CPU where that happened; take them from the copy with the largest
 * meta_ns (the latest write). flags: OR over all copies. */
struct task_stats {
	__u64 cpu_ns;       /* closed on-CPU time on this CPU */
	__u64 slices;       /* closed slices on this CPU */
	__u64 meta_ns;      /* when comm/cgroup_id were last written here; 0 = never */
	__u64 cgroup_id;    /* cgroup v2 id (kernfs inode id) */
	__u32 tgid;
	__u32 flags;        /* EM_FLAG_* */
	char comm[EM_COMM_LEN];
	__u64 last_runtime; /* se.sum_exec_runtime at its last switch-out on this
	                     * CPU (the largest over the copies is the latest) */
};

/* One ring-buffer record per closed slice (only when stream_events). */
struct slice_event {
	__u64 start_ns;
	__u64 dur_ns;
	__u32 tid;
	__u32 tgid;
	__u32 cpu;
	__u32 flags;        /* EM_FLAG_DEAD on the task's final slice */
	char comm[EM_COMM_LEN];
};

#endif /* EBPF_ENERGY_MONITOR_H */
