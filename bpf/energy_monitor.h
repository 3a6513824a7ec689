/* SPDX-License-Identifier: GPL-2.0 */
/* Record layouts shared by bpf/energy_monitor.bpf.c and user space.
 *
 * Plain fixed-width C types only: user space decodes these through the
 * object's own BTF, so every struct here is referenced by the program (a map
 * value, a .bss variable or a layout anchor) and clang emits it.
 *
 * Clock: every *_ns timestamp is bpf_ktime_get_ns(), i.e. CLOCK_MONOTONIC,
 * comparable with Python's time.monotonic_ns(). CPU time (cpu_ns, busy_ns,
 * run_ns) is the scheduler's own clock (se.sum_exec_runtime deltas), which
 * leaves out steal; the per-CPU remainder of wall time is the steal.
 */
#ifndef EBPF_ENERGY_MONITOR_H
#define EBPF_ENERGY_MONITOR_H

#define EM_MAX_CPUS     1024  /* slots[] length; CPUs beyond it count in cpu_overflow */
#define EM_COMM_LEN     16
#define EM_TASK_DEAD    0x80  /* task_struct.__state on the final switch-out */
#define EM_OPEN_FIRST   1     /* cpu_slot.open: the slice running when the window opened */
#define EM_OPEN         2
#define EM_CLOCK_LEARN  64    /* switches between two real bpf_ktime_get_ns() calls on a CPU */
#define EM_MAX_CLASSES  4     /* core classes (P/E, big/LITTLE): a class index per CPU, set by user space */

/* task_stats.flags */
#define EM_FLAG_EXITED  0x1   /* sched_process_exit seen (the task may still run once more) */
#define EM_FLAG_DEAD    0x2   /* final switch-out accounted: user space may reap the entry */
#define EM_FLAG_EXECED  0x4   /* comm refreshed by sched_process_exec */

/* A task's identity: its tid and its start time (task_struct.start_time,
 * in units of 2^EM_START_SHIFT ns, so the key is 8 bytes: a cheaper hash on
 * every switch; two tasks with one tid starting in the same ~1 us, or a
 * multiple of ~73 min apart to the microsecond, are the only collision).
 * A reused tid is a new key, so a new task never adds to an earlier one. */
#define EM_START_SHIFT  10
struct task_key {
	__u32 tid;
	__u32 start;
};

/* One CPU's books as of the latest cut (BPF_PROG_TEST_RUN of `cut` on that
 * CPU). Written only by `cut`, which user space runs synchronously, so user
 * space reads it with nothing writing it. */
struct cpu_cut {
	__u64 ns;          /* when the cut was taken */
	__u64 open_ns;     /* when the window opened on this CPU */
	__u64 busy_ns;     /* closed task time (scheduler clock), dropped slices included */
	__u64 idle_ns;     /* idle wall time, the open idle slice included */
	__u64 switches;
	__u64 task_drops;  /* slices lost because `tasks` was full */
	__u64 dropped_ns;  /* their CPU time */
	__u64 events;
	__u64 event_drops;
	__u64 deaths;      /* final switch-outs accounted (entries user space may reap) */
	__u64 run_start;   /* the open slice at the cut: its task_key.start, */
	__u64 run_ns;      /* its CPU time so far (scheduler clock), */
	__u64 run_pstart;  /* its process's (group leader's) start time, */
	__u64 run_cgroup_id;
	__u64 run_cycles;  /* run_ns at this CPU's kHz (only while track_freq) */
	__u32 run_tid;     /* its tid (0: idle, or not known yet) */
	__u32 run_tgid;
	__u32 epoch;       /* entries written since carry this epoch */
	__u32 unsettled;   /* the slot's task is not what runs here: its share waits for the next switch */
	char run_comm[EM_COMM_LEN];
};

/* Who runs on one CPU since when, plus that CPU's running counters.
 * Written only on its own CPU: by the switch handler (interrupts off) and by
 * `cut` (an IPI), which therefore never interleave. Before the window opens
 * on a CPU (its first cut, right after attach) nothing is accounted there. */
struct cpu_slot {
	__u64 task;          /* address of the running task_struct: its identity across exec */
	__u64 start_ns;      /* when it went on this CPU */
	__u64 start_runtime; /* its se.sum_exec_runtime then */
	__u32 key_start;     /* its task_key.start */
	__u32 tid;           /* running now; 0 = the idle task */
	__u32 open;          /* window open on this CPU: EM_OPEN_FIRST until its first switch, then EM_OPEN */
	__u32 epoch;
	__u64 busy_ns;
	__u64 switches;
	__u64 clk_off;       /* CLOCK_MONOTONIC minus the runqueue clock, learned every EM_CLOCK_LEARN switches */
	/* every switch touches only the 64 bytes above */
	__u64 idle_ns;
	__u64 task_drops;
	__u64 dropped_ns;
	__u64 events;
	__u64 event_drops;
	__u64 deaths;
	struct cpu_cut cut;
} __attribute__((aligned(64)));

/* Per-thread totals: value of the PERCPU_HASH `tasks`, key struct task_key.
 * Each CPU's copy holds what ran on that CPU (no atomics) and is written only
 * on that CPU.
 *
 * Consistent reads: a copy first written in a new epoch (after a cut on its
 * CPU) first saves cpu_ns/slices into cut_*, then stores the epoch, then
 * adds. The reader (`dump`) reads cpu_ns/slices, then the epoch: if the
 * epoch is its CPU's cut epoch it takes cut_* (complete: written before
 * epoch), otherwise what it read before the epoch changed. Either way it
 * sees the copy exactly as it stood at the cut. */
struct task_stats {
	__u64 cpu_ns;       /* closed on-CPU time on this CPU */
	__u64 slices;       /* closed slices on this CPU */
	__u32 flags;        /* EM_FLAG_* */
	__u32 epoch;        /* cut epoch of this CPU at the latest add */
	__u64 last_runtime; /* se.sum_exec_runtime at its last switch-out on this CPU */
	__u64 cycles;       /* closed slices x their CPU's kHz / 1e6 (only while track_freq) */
	/* a switch touches only the 40 bytes above (one cache line), but for the
	 * first add after a cut */
	__u64 cut_cpu_ns;   /* cpu_ns, slices and cycles as they stood at the cut */
	__u64 cut_slices;
	__u64 cut_cycles;
	__u32 tgid;
	__u64 pstart;       /* the group leader's start time: (tgid, pstart) is the process */
	__u64 meta_ns;      /* when comm/cgroup_id were last written here; 0 = never */
	__u64 cgroup_id;    /* cgroup v2 id (kernfs inode id) */
	char comm[EM_COMM_LEN];
};

/* One record per `tasks` entry, written by the `dump` program into the
 * mmapable array `dumps`: the entry summed over its CPU copies as it stood at
 * each CPU's latest cut. Live entries fill the array from index 0, entries
 * the dump reaped (EM_FLAG_DEAD) from the top down, so a reader who wants
 * only process totals reads only the reaped ones (see struct proc_dump). */
struct task_dump {
	__u32 tid;          /* the key */
	__u32 start;
	__u64 cpu_ns;       /* at the cut */
	__u64 slices;
	__u64 cpu_ns_now;   /* at the dump: for a reaped entry, what ran after the cut counts at the next read */
	__u64 slices_now;
	__u32 flags;        /* at the dump (flags only ever gain bits); EM_FLAG_DEAD: reaped by this dump */
	__u32 tgid;         /* meta of the copy written last (largest meta_ns) */
	__u64 pstart;
	__u64 cgroup_id;
	__u64 meta_ns;      /* 0: no copy has meta yet */
	char comm[EM_COMM_LEN];
	__u64 class_ns[EM_MAX_CLASSES];     /* cpu_ns by the class of the CPU each part ran on */
	__u64 class_ns_now[EM_MAX_CLASSES]; /* cpu_ns_now likewise */
	__u64 cycles;       /* at the cut (0 unless track_freq) */
	__u64 cycles_now;
};

/* A process: (tgid, group leader's start time); a task with no meta yet
 * counts under its own tid and pstart 0. */
struct proc_key {
	__u32 tgid;
	__u32 pad;
	__u64 pstart;
};

/* Where the process's record of the current dump is (value of the hash
 * `proc_index`, emptied at the end of every dump). */
struct proc_slot {
	__u32 gen;
	__u32 index;
};

/* One record per process with live entries, in the mmapable array `procs`:
 * its live entries summed in the kernel, so a read costs user space one
 * record per process, not per thread: exactly one per process in a dump
 * (proc_index never evicts). */
struct proc_dump {
	__u32 tgid;
	__u32 tasks;        /* live entries summed here */
	__u64 pstart;
	__u64 cpu_ns;       /* at the cut */
	__u64 slices;
	__u32 not_exited;   /* entries with neither EM_FLAG_EXITED nor EM_FLAG_DEAD */
	__u32 leader;       /* 1: comm and cgroup_id are the group leader's (tid == tgid) */
	__u64 cgroup_id;
	char comm[EM_COMM_LEN];
	__u64 class_ns[EM_MAX_CLASSES];
	__u64 cycles;
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
