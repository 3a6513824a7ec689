// SPDX-License-Identifier: GPL-2.0
/* Per-thread CPU time, accounted at every context switch.
 *
 * Who runs on each CPU since when lives in slots[cpu] (.bss), never in a map
 * keyed by pid: a task that migrates can then never read a stale start time.
 * A slot is matched by the task_struct's address, which exec does not change
 * (an exec from a non-leader thread changes the tid).
 *
 * The window opens on each CPU when user space first runs `cut` there (with
 * BPF_PROG_TEST_RUN on that CPU, right after attach): before that nothing is
 * accounted, so the window starts at attach, on every online CPU, whatever
 * the reader's own CPU affinity. Every later read runs `cut` on every CPU
 * again: it records that CPU's books and its open slice in the scheduler's
 * clock, and bumps the CPU's epoch, so that the task entries can be read as
 * they stood at the cut (see struct task_stats) while switches go on.
 *
 * Closed slices go to `tasks`, a PERCPU_HASH keyed by (tid, start time): one
 * lookup per switch and an in-place add into this CPU's copy (no atomics).
 * comm, cgroup and tgid are written when an entry is created and on
 * exec/exit/rename, so the fast path calls no helper but the clock and the
 * lookup. pid 0 (idle) never enters the hash. The switch path never
 * deletes: the final switch-out of a dying task sets EM_FLAG_DEAD, and the
 * reader's `dump` (below) takes such entries out as it reports them.
 *
 * The per-slice event stream is compiled in but removed by the verifier
 * unless user space sets stream_events before load.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "energy_monitor.h"

#define barrier() asm volatile("" ::: "memory")
/* A store the compiler keeps in program order with the other volatile
 * accesses, without barrier()'s clobber of everything it has in registers
 * (which costs the switch path reloads and spills). */
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

/* Settings, written by user space before load (.rodata, frozen). */
const volatile bool stream_events = false; /* one slice_event per closed slice on `events` */
const volatile __u32 filter_tgid = 0;     /* stream only this process (0 = all) */
const volatile __u32 filter_tid = 0;      /* stream only this thread (0 = all) */
const volatile __u32 nr_cpus = EM_MAX_CPUS; /* possible CPUs, set by user space */
const volatile __u64 filter_cgroup_id = 0; /* stream only this cgroup v2 id (0 = all) */
const volatile __u64 min_slice_ns = 0;    /* stream only slices at least this long */
const volatile __u32 wakeup_batch = 64;   /* wake the reader every N events (<= 1: every event) */
const volatile bool track_freq = false;  /* also count cycles: each slice x its CPU's kHz (cpu_khz) */
const volatile __u32 dump_slots = 16384;  /* max_entries of `dumps`, `procs` and `tasks`, set by user space */
const volatile __u8 cpu_class[EM_MAX_CPUS] = {}; /* core class of each CPU (< EM_MAX_CLASSES), read by dump() only */
const volatile __u32 reap_bell_every = 0; /* ring `reap_bell` at every Nth death on a CPU (0 = never) */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);       /* user space may change it before load */
	__type(key, struct task_key);
	__type(value, struct task_stats);
} tasks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);  /* user space may shrink it when not streaming */
} events SEC(".maps");

/* The reaper's doorbell: a record here wakes the reader's reaper thread (it
 * sleeps in epoll on this ring), so it need not poll the death counters. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} reap_bell SEC(".maps");

/* .bss: written by the programs, read by user space (mmap). */
struct cpu_slot slots[EM_MAX_CPUS] = {};
__u64 cpu_overflow = 0;              /* switches seen on a CPU >= EM_MAX_CPUS */
__u32 dump_overflow = 0;             /* entries the last dump() found no room for */
__u32 dump_reaped = 0;               /* records the last dump() wrote from the top of `dumps` */
__u32 dump_procs = 0;                /* records the last dump() wrote into `procs` */
__u32 dump_gen = 0;                  /* dumps so far: tells this dump's proc_index slots from stale ones */
__u32 cpu_khz[EM_MAX_CPUS] = {};     /* each CPU's frequency now: from cpufreq at load, then on_cpu_frequency */

/* Never read or written: makes clang emit struct slice_event into the BTF
 * (the ring buffer has no value type), so user space can decode records. */
const struct slice_event *slice_event_layout __attribute__((unused));

extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

static __always_inline __u32 start_of(struct task_struct *t)
{
	return t->start_time >> EM_START_SHIFT;
}

static __always_inline void key_of(struct task_key *k, struct task_struct *t)
{
	k->tid = t->pid;
	k->start = start_of(t);
}

static __always_inline void fill_meta(struct task_stats *v, struct task_struct *t,
				      __u64 now)
{
	v->meta_ns = now;
	if (t == bpf_get_current_task_btf())
		v->cgroup_id = bpf_get_current_cgroup_id();
	else
		v->cgroup_id = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
	v->tgid = BPF_CORE_READ(t, tgid);
	v->pstart = BPF_CORE_READ(t, group_leader, start_time);
	BPF_CORE_READ_STR_INTO(&v->comm, t, comm);
}

/* The first write to a copy in a new epoch saves the copy as it stood at the
 * cut, then publishes the epoch; only then may the caller add. The stores
 * are volatile: the compiler keeps them in this order (cut_*, epoch, then
 * the adds), and x86 makes them visible in it. */
static __always_inline void add_to(struct task_stats *v, __u32 epoch, __u64 dur, __u64 slices,
				   __u32 flags, __u64 runtime, __u64 cycles)
{
	__u64 cpu_ns = v->cpu_ns, n = v->slices, c = v->cycles;

	if (v->epoch != epoch) {
		WRITE_ONCE(v->cut_cpu_ns, cpu_ns);
		WRITE_ONCE(v->cut_slices, n);
		if (track_freq)
			WRITE_ONCE(v->cut_cycles, c);
		WRITE_ONCE(v->epoch, epoch);
	}
	WRITE_ONCE(v->cpu_ns, cpu_ns + dur);
	WRITE_ONCE(v->slices, n + slices);
	if (track_freq)
		WRITE_ONCE(v->cycles, c + cycles);
	if (flags)
		v->flags |= flags;
	if (runtime > v->last_runtime)
		v->last_runtime = runtime;
}

/* Create the entry of `t` holding the first slice; false when the map is full. */
static __always_inline bool insert_task(struct cpu_slot *s, struct task_key *key, struct task_struct *t,
					__u64 dur, __u64 now, __u32 flags, __u64 runtime, __u64 cycles)
{
	struct task_stats init = {};
	struct task_stats *v;
	long err;

	init.cpu_ns = dur;
	init.slices = dur ? 1 : 0;
	init.flags = flags;
	init.epoch = s->epoch; /* nothing of it before the cut: cut_* stay 0 */
	init.last_runtime = runtime;
	init.cycles = cycles;
	fill_meta(&init, t, now);
	err = bpf_map_update_elem(&tasks, key, &init, BPF_NOEXIST);
	if (err == -17 /* EEXIST: created meanwhile, add to it instead */) {
		v = bpf_map_lookup_elem(&tasks, key);
		if (!v)
			return false;
		add_to(v, s->epoch, dur, init.slices, flags, runtime, cycles);
		return true;
	}
	return err == 0;
}

/* CPU cycles of `ns` at `khz`: ns x kHz / 1e6, split so that it never
 * overflows (a slice of 1e12 ns at 5 GHz would) and rounds down once. */
static __always_inline __u64 cycles_of(__u64 ns, __u32 khz)
{
	return ns / 1000000 * khz + ns % 1000000 * khz / 1000000;
}

/* Add a closed slice of `t` on CPU `cpu` to its entry and to this CPU's books. */
static __always_inline void account(struct cpu_slot *s, __u32 cpu, struct task_key *key, struct task_struct *t,
				    __u64 dur, __u32 flags, __u64 runtime, __u64 now)
{
	struct task_stats *v = bpf_map_lookup_elem(&tasks, key);
	__u64 cycles = track_freq ? cycles_of(dur, cpu_khz[cpu & (EM_MAX_CPUS - 1)]) : 0;

	if (v) {
		add_to(v, s->epoch, dur, 1, flags, runtime, cycles);
		/* a task moved to another cgroup keeps running: follow it
		 * every 64 slices */
		if ((v->slices & 63) == 0)
			v->cgroup_id = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
	} else if (!insert_task(s, key, t, dur, now, flags, runtime, cycles)) {
		s->task_drops += 1;
		s->dropped_ns += dur;
	}
	s->busy_ns += dur;
	if (flags & EM_FLAG_DEAD) {
		s->deaths += 1;
		/* user space sets N so that no more than a quarter of the map
		 * is dead entries before some CPU rings (a ring with flags 0
		 * wakes the reader only when it has caught up: no storm) */
		if (reap_bell_every && s->deaths % reap_bell_every == 0)
			bpf_ringbuf_output(&reap_bell, &cpu, sizeof(cpu), 0);
	}
}

static __always_inline void stream_slice(struct cpu_slot *s, struct task_struct *t,
					 __u32 tid, __u32 tgid, __u32 cpu,
					 __u64 since, __u64 dur, __u32 flags)
{
	struct slice_event *e;
	__u64 wake;

	if (filter_tgid && tgid != filter_tgid)
		return;
	if (filter_tid && tid != filter_tid)
		return;
	if (dur < min_slice_ns)
		return;
	if (filter_cgroup_id && bpf_get_current_cgroup_id() != filter_cgroup_id) /* t is current */
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		s->event_drops += 1;
		return;
	}
	e->start_ns = since;
	e->dur_ns = dur;
	e->tid = tid;
	e->tgid = tgid;
	e->cpu = cpu;
	e->flags = flags;
	BPF_CORE_READ_STR_INTO(&e->comm, t, comm);
	s->events += 1;
	wake = wakeup_batch > 1 && (s->events % wakeup_batch) ? BPF_RB_NO_WAKEUP : 0;
	bpf_ringbuf_submit(e, wake);
}

/* The slot's task, whose switch-out this CPU never reported, ran part of
 * `wall`: credit what it ran (read from the task itself) and return the
 * rest. Without it that time would be nobody's and the CPU's books would not
 * add up. */
static __always_inline __u64 settle_slot_task(struct cpu_slot *s, __u32 cpu, __u64 prev_addr, __u64 wall,
					      __u64 now)
{
	struct task_struct *t;
	struct task_key key;
	__u64 r, ran = 0;

	if (!s->tid || s->task == prev_addr || !wall)
		return wall;
	t = bpf_task_from_pid(s->tid);
	if (!t) /* gone already (seen here for this VM's agent threads): the
		 * rest of the slot counts as idle, which it mostly is */
		return wall;
	if (start_of(t) == s->key_start) {
		r = t->se.sum_exec_runtime;
		ran = r >= s->start_runtime ? r - s->start_runtime : 0;
		if (ran > wall)
			ran = wall;
		if (ran) {
			key.tid = s->tid;
			key.start = s->key_start;
			account(s, cpu, &key, t, ran, 0, r, now);
		}
	}
	bpf_task_release(t);
	return wall - ran;
}

/* The slice `t` has run since it was picked, when its switch-in was not
 * seen: for the fair class the kernel keeps its runtime at pick time. */
static __always_inline __u64 picked_slice(struct task_struct *t, __u64 runtime, __u64 wall)
{
	__u64 picked;

	if (t->policy == 0 || t->policy == 3 || t->policy == 5) {
		picked = t->se.prev_sum_exec_runtime;
		if (runtime >= picked && runtime - picked <= wall)
			return runtime - picked;
	}
	return 0;
}

/* The switch-in of `prev` on this CPU was not seen (some switches reach no
 * tracepoint; on this VM, the switch from idle often does not). Its slice is
 * its runtime now minus its runtime at its last accounted switch-out (the
 * largest last_runtime over the per-CPU copies); for a task never accounted
 * yet, the slice since it was picked; else the wall time. */
static __always_inline __u64 unseen_switch_in(struct task_struct *prev, struct task_key *key,
					      __u64 runtime, __u64 wall)
{
	struct task_stats *c;
	__u64 last = 0, picked;
	__u32 cpu;

	/* nr_cpus is frozen .rodata: the verifier walks only that many rounds */
	for (cpu = 0; cpu < EM_MAX_CPUS && cpu < nr_cpus; cpu++) {
		c = bpf_map_lookup_percpu_elem(&tasks, key, cpu);
		if (!c)
			break;
		if (c->last_runtime > last)
			last = c->last_runtime;
	}
	/* never more than the wall time this CPU's slot covers: time the task
	 * ran unseen elsewhere was credited there */
	if (last && runtime >= last)
		return runtime - last < wall ? runtime - last : wall;
	picked = picked_slice(prev, runtime, wall);
	return picked ? picked : wall;
}

/* The running task's CPU time now, as near as the kernel knows it:
 * sum_exec_runtime is brought up to date only at ticks and switches, so add
 * what the runqueue clock has advanced past the task's last update. */
static __always_inline __u64 runtime_now(struct task_struct *t)
{
	__u64 r = t->se.sum_exec_runtime, exec_start = t->se.exec_start;
	struct rq *rq = BPF_CORE_READ(t, se.cfs_rq, rq);
	__u64 clock = rq ? BPF_CORE_READ(rq, clock_task) : 0;

	return clock > exec_start && exec_start ? r + (clock - exec_start) : r;
}

/* The time of this switch in CLOCK_MONOTONIC, without calling the clock on
 * every switch (bpf_ktime_get_ns() is a third of this program's cost on a
 * VM's kvm-clock): __schedule() has just updated the runqueue clock
 * (sched_clock, which runs at the same rate), so the switch's time is that
 * clock plus an offset learned with a real clock read every EM_CLOCK_LEARN
 * switches. Both ends of every slice are then the same instant the kernel
 * itself took (the runqueue clock at the switch), so a slice's runtime
 * (taken by the kernel at that instant too) never outgrows its wall time.
 * Never earlier than the slot's start: each boundary is stored once and
 * used for the slice before it and the slice after it, so the slices of a
 * CPU add up to its window exactly. */
static __always_inline __u64 switch_time(struct cpu_slot *s, struct task_struct *prev)
{
	__u64 clock = prev->se.cfs_rq->rq->clock, now;

	if (!s->clk_off || (s->switches & (EM_CLOCK_LEARN - 1)) == 0) {
		now = bpf_ktime_get_ns();
		s->clk_off = now - clock;
	} else {
		now = clock + s->clk_off;
	}
	return now > s->start_ns ? now : s->start_ns;
}

static __always_inline void set_slot(struct cpu_slot *s, struct task_struct *t, __u64 now)
{
	s->task = (__u64)t;
	s->tid = t->pid;
	s->key_start = start_of(t);
	s->start_ns = now;
	s->start_runtime = t->se.sum_exec_runtime;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct task_key key;
	struct cpu_slot *s;
	__u64 now, dur, runtime, wall;
	__u32 flags;
	bool seen;

	if (cpu >= EM_MAX_CPUS) {
		__sync_fetch_and_add(&cpu_overflow, 1);
		return 0;
	}
	s = &slots[cpu];
	if (!s->open)
		return 0;
	now = switch_time(s, prev);
	wall = now - s->start_ns;
	s->switches += 1;
	/* prev's switch-in was seen here: its key is the slot's (kept up to
	 * date across exec), so prev's own pid and start time are not read */
	seen = s->task == (__u64)prev;
	if (seen) {
		key.tid = s->tid;
		key.start = s->key_start;
	} else {
		key_of(&key, prev);
	}
	/* Except on a task's final switch-out: an old leader that dies of an
	 * exec from another thread may have handed its pid to that thread by
	 * then (de_thread swaps the tids; the start time stays), and the slot's
	 * key is the living task's: the dying one's last slice goes to its own
	 * key. (A probe read: a plain load here would be merged with the slot's
	 * load above, which the verifier refuses.) */
	if (seen && (prev_state & EM_TASK_DEAD))
		key.tid = BPF_CORE_READ(prev, pid);
	if (key.tid == 0) {
		/* idle; if its switch-in was unseen, the slot's task ran first */
		s->idle_ns += seen ? wall : settle_slot_task(s, cpu, (__u64)prev, wall, now);
	} else {
		/* The scheduler's own account of the slice (what schedstat and
		 * rusage report): the task's runtime now minus at switch-in. */
		runtime = prev->se.sum_exec_runtime;
		if (seen) {
			dur = runtime >= s->start_runtime ? runtime - s->start_runtime : 0;
			/* the first slice after the window opened started from a
			 * runtime the kernel had last brought up to date up to a
			 * tick before: never more than its wall time */
			if (s->open == EM_OPEN_FIRST && dur > wall)
				dur = wall;
		} else {
			/* prev's switch-in unseen: prev's own runtime, then the
			 * slot's task's, then idle share the wall time */
			dur = unseen_switch_in(prev, &key, runtime, wall);
			s->idle_ns += settle_slot_task(s, cpu, (__u64)prev, wall - dur, now);
		}
		flags = prev_state & EM_TASK_DEAD ? EM_FLAG_DEAD | EM_FLAG_EXITED : 0;
		account(s, cpu, &key, prev, dur, flags, runtime, now);
		if (stream_events)
			stream_slice(s, prev, key.tid, prev->tgid, cpu, now - wall, dur, flags);
	}
	set_slot(s, next, now);
	s->open = EM_OPEN;
	return 0;
}

/* Run by user space on each CPU (BPF_PROG_TEST_RUN with
 * BPF_F_TEST_RUN_ON_CPU: an IPI there, so no switch on that CPU can
 * interleave). The first run opens the window on that CPU; every later run
 * takes a cut: the CPU's books and its open slice as of now, and a new
 * epoch for the task entries. */
SEC("raw_tp")
int cut(void *ctx)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct task_struct *curr = bpf_get_current_task_btf();
	struct cpu_slot *s;
	struct cpu_cut *c;
	__u64 now, wall, runtime, run = 0, idle_open = 0;
	__u32 unsettled = 0;

	if (cpu >= EM_MAX_CPUS)
		return 1;
	s = &slots[cpu];
	c = &s->cut;
	now = bpf_ktime_get_ns();
	if (!s->open) {
		set_slot(s, curr, now);
		s->start_runtime = runtime_now(curr);
		s->epoch = 1;
		c->open_ns = now;
		c->ns = now;
		c->epoch = 1;
		barrier();
		s->open = EM_OPEN_FIRST;
		return 0;
	}
	wall = now > s->start_ns ? now - s->start_ns : 0;
	runtime = runtime_now(curr);
	if (s->task == (__u64)curr) {
		if (s->tid == 0)
			idle_open = wall;
		else
			run = runtime >= s->start_runtime ? runtime - s->start_runtime : 0;
		if (run > wall)
			run = wall;
	} else if (s->tid == 0) {
		/* curr was switched in unseen while the slot says idle: the
		 * idle part is settled now, and curr takes the slot from the
		 * start of its slice, so the slice reported here is accounted
		 * into curr's entry at its switch-out (or settled from the
		 * slot), never lost to idle later */
		run = curr->pid ? picked_slice(curr, runtime, wall) : 0;
		idle_open = wall - run;
		if (curr->pid) {
			s->idle_ns += idle_open;
			idle_open = 0;
			set_slot(s, curr, now - run);
			s->start_runtime = runtime - run;
		}
	} else {
		/* the slot's task was switched out unseen: its share and the
		 * rest of the slot are settled at the next switch here */
		unsettled = 1;
	}
	s->epoch += 1;
	c->ns = now;
	c->busy_ns = s->busy_ns;
	c->idle_ns = s->idle_ns + idle_open;
	c->switches = s->switches;
	c->task_drops = s->task_drops;
	c->dropped_ns = s->dropped_ns;
	c->events = s->events;
	c->event_drops = s->event_drops;
	c->deaths = s->deaths;
	c->run_ns = run;
	c->run_cycles = track_freq ? cycles_of(run, cpu_khz[cpu & (EM_MAX_CPUS - 1)]) : 0;
	c->run_tid = run ? curr->pid : 0;
	c->run_tgid = curr->tgid;
	c->run_start = start_of(curr);
	c->run_pstart = BPF_CORE_READ(curr, group_leader, start_time);
	c->run_cgroup_id = BPF_CORE_READ(curr, cgroups, dfl_cgrp, kn, id);
	BPF_CORE_READ_STR_INTO(&c->run_comm, curr, comm);
	c->unsettled = unsettled;
	c->epoch = s->epoch;
	return 0;
}

/* Mark (or create) the entry of `t` with `flags` and fresh comm/cgroup. */
static __always_inline void touch_meta(struct task_struct *t, __u32 flags)
{
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 now = bpf_ktime_get_ns();
	struct task_stats *v;
	struct task_key key;

	if (cpu >= EM_MAX_CPUS || !slots[cpu].open)
		return;
	key_of(&key, t);
	v = bpf_map_lookup_elem(&tasks, &key);
	if (!v) {
		/* not switched out yet: create it so comm and flags are kept;
		 * if the map is full the final switch-out counts the drop */
		insert_task(&slots[cpu], &key, t, 0, now, flags, 0, 0);
		return;
	}
	v->flags |= flags;
	fill_meta(v, t, now);
}

/* Fires before the task's last switch-out: that slice is still to come. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	if (p->pid)
		touch_meta(p, EM_FLAG_EXITED);
	return 0;
}

/* comm changes on exec. An exec from a non-leader thread takes over the
 * leader's pid and start time: the old (tid, start) entry gets no more
 * slices (mark it for reaping), the leader's entry belongs to this task
 * from now on (its last_runtime was the old leader's), and the slot of this
 * CPU follows the new tid. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid)
{
	__u32 cpu = bpf_get_smp_processor_id(), i;
	struct task_key old, key;
	struct task_stats *v;

	if (old_pid != p->pid) {
		old.tid = old_pid;
		key_of(&key, p);
		for (i = 0; i < EM_MAX_CPUS && i < nr_cpus; i++) {
			v = bpf_map_lookup_percpu_elem(&tasks, &key, i);
			if (!v)
				break;
			v->last_runtime = 0;
			/* the old leader's exit and final slice may have
			 * marked this key: it is a living task's now */
			v->flags &= ~(EM_FLAG_DEAD | EM_FLAG_EXITED);
		}
		if (cpu < EM_MAX_CPUS && slots[cpu].task == (__u64)p) {
			old.start = slots[cpu].key_start;
			v = bpf_map_lookup_elem(&tasks, &old);
			if (v)
				v->flags |= EM_FLAG_DEAD | EM_FLAG_EXITED;
			slots[cpu].tid = key.tid;
			slots[cpu].key_start = key.start;
		}
	}
	touch_meta(p, EM_FLAG_EXECED);
	return 0;
}

/* prctl(PR_SET_NAME) or a write to /proc/PID/comm renames a task without an
 * exec: keep the name current. Fires before the new name is copied in, so
 * read it from the argument; the task need not be current (/proc writes). */
SEC("tp_btf/task_rename")
int BPF_PROG(on_rename, struct task_struct *task, const char *comm)
{
	struct task_stats *v;
	struct task_key key;

	key_of(&key, task);
	v = bpf_map_lookup_elem(&tasks, &key);
	if (!v)
		return 0; /* its first switch-out reads the new name itself */
	v->meta_ns = bpf_ktime_get_ns();
	v->tgid = task->tgid;
	v->cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	bpf_probe_read_kernel_str(&v->comm, sizeof(v->comm), comm);
	return 0;
}

/* cpufreq changed a CPU's frequency (opt-in: loaded only when user space
 * tracks frequency; needs no cpufreq to be tested: BPF_PROG_TEST_RUN with
 * made-up arguments). The next slice closed there is counted at it. */
SEC("raw_tp/cpu_frequency")
int on_cpu_frequency(__u64 *ctx)
{
	/* (unsigned int state, unsigned int cpu_id), each in a u64 slot: compared
	 * as the u64 it is, so the verifier keeps the bound */
	__u64 khz = ctx[0], cpu = ctx[1];

	if (cpu < EM_MAX_CPUS)
		cpu_khz[cpu] = khz;
	return 0;
}

/* What dump() writes, read by user space through mmap: task records (live
 * ones from index 0 up, reaped ones from the top down) and process records.
 * All three are sized to `tasks` by user space before load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct task_dump);
} dumps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct proc_dump);
} procs SEC(".maps");

/* Process -> its record in `procs`, for one dump only: a plain hash, emptied
 * at the end of every dump (unindex_one), so it never holds more keys than
 * the dump has processes (<= live entries <= max_entries) and an insert
 * never fails or evicts. An LRU here could evict a slot of the running dump
 * (LRU maps evict before they are full: their free nodes sit on per-CPU
 * lists), splitting a process over two records. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct proc_key);
	__type(value, struct proc_slot);
} proc_index SEC(".maps");

struct dump_ctx {
	__u32 live;      /* records written from the bottom */
	__u32 reaped;    /* records written from the top */
	__u32 procs;     /* process records written */
	__u32 overflow;  /* entries that found no room (cannot happen: the arrays are as large as tasks) */
	__u32 gen;
};

struct dump_entry {
	struct task_key key;
	struct task_dump *d;
};

/* One CPU's copy of an entry into its record: as it stood at that CPU's cut
 * (cpu_ns, slices) and as it stands now (cpu_ns_now, slices_now), each also
 * by the CPU's core class. The copy may be written meanwhile on its CPU
 * (see struct task_stats): read the counters first, then the epoch. An
 * epoch other than the CPU's cut epoch means no add of the new epoch had
 * begun when the epoch was read, so the counters, read before it, are the
 * values at the cut; the cut epoch means cut_* hold them (stored before the
 * epoch). x86 keeps loads in order and stores in order, which is all this
 * needs. A bpf_loop callback: the verifier checks it once, whatever the
 * number of CPUs. */
static long dump_copy(__u64 index, struct dump_entry *e)
{
	__u32 cpu = index & (EM_MAX_CPUS - 1); /* a no-op: index < nr_cpus <= EM_MAX_CPUS */
	__u32 cls = cpu_class[cpu] & (EM_MAX_CLASSES - 1);
	struct task_dump *d = e->d;
	struct task_stats *v;
	__u64 cpu_ns, slices, cycles;
	__u32 epoch;

	v = bpf_map_lookup_percpu_elem(&tasks, &e->key, cpu);
	if (!v)
		return 1; /* cannot happen: only dump() deletes */
	cpu_ns = v->cpu_ns;
	slices = v->slices;
	cycles = v->cycles;
	barrier();
	epoch = *(volatile __u32 *)&v->epoch;
	barrier();
	d->cpu_ns_now += cpu_ns;
	d->slices_now += slices;
	d->cycles_now += cycles;
	d->class_ns_now[cls] += cpu_ns;
	if (epoch && epoch == slots[cpu].cut.epoch) {
		cpu_ns = v->cut_cpu_ns;
		slices = v->cut_slices;
		cycles = v->cut_cycles;
	}
	d->cpu_ns += cpu_ns;
	d->slices += slices;
	d->cycles += cycles;
	d->class_ns[cls] += cpu_ns;
	d->flags |= v->flags;
	if (v->meta_ns > d->meta_ns) {
		d->meta_ns = v->meta_ns;
		d->tgid = v->tgid;
		d->pstart = v->pstart;
		d->cgroup_id = v->cgroup_id;
		__builtin_memcpy(d->comm, v->comm, sizeof(d->comm));
	}
	return 0;
}

/* A live entry's record into its process's record (found through
 * proc_index, made on the first entry of the process in this dump). */
static __always_inline void add_to_proc(struct dump_ctx *c, struct task_dump *d)
{
	struct proc_key pk = { .tgid = d->tgid ? d->tgid : d->tid, .pstart = d->pstart };
	struct proc_slot *slot, fresh;
	struct proc_dump *p;
	__u32 i, k, leader;

	slot = bpf_map_lookup_elem(&proc_index, &pk);
	if (slot && slot->gen == c->gen) {
		i = slot->index;
		p = bpf_map_lookup_elem(&procs, &i);
		if (!p)
			return;
	} else {
		i = c->procs;
		p = bpf_map_lookup_elem(&procs, &i);
		if (!p) {
			c->overflow += 1;
			return;
		}
		fresh.gen = c->gen;
		fresh.index = i;
		if (slot)
			*slot = fresh;
		else if (bpf_map_update_elem(&proc_index, &pk, &fresh, BPF_ANY))
			c->overflow += 1; /* cannot happen: see proc_index */
		__builtin_memset(p, 0, sizeof(*p));
		p->tgid = pk.tgid;
		p->pstart = pk.pstart;
		c->procs = i + 1;
	}
	p->tasks += 1;
	p->cpu_ns += d->cpu_ns;
	p->slices += d->slices;
	p->cycles += d->cycles;
	for (k = 0; k < EM_MAX_CLASSES; k++)
		p->class_ns[k] += d->class_ns[k];
	if (!(d->flags & (EM_FLAG_EXITED | EM_FLAG_DEAD)))
		p->not_exited += 1;
	leader = d->tid == pk.tgid;
	if (!p->leader && (leader || !p->comm[0])) {
		p->leader = leader;
		p->cgroup_id = d->cgroup_id;
		__builtin_memcpy(p->comm, d->comm, sizeof(p->comm));
	}
}

/* One entry, summed over its CPU copies, into a record: a live one at the
 * bottom of `dumps` and into its process's record, a dead one (its final
 * switch-out is accounted) at the top, to be reaped. */
static long dump_one(struct bpf_map *map, struct task_key *k, struct task_stats *unused,
		     struct dump_ctx *c)
{
	struct dump_entry e = { .key = *k };
	struct task_dump *d, *top;
	__u32 i = c->live;

	if (c->live + c->reaped >= dump_slots) {
		c->overflow += 1;
		return 0;
	}
	d = bpf_map_lookup_elem(&dumps, &i);
	if (!d) {
		c->overflow += 1;
		return 0;
	}
	e.d = d;
	__builtin_memset(d, 0, sizeof(*d));
	d->tid = e.key.tid;
	d->start = e.key.start;
	bpf_loop(nr_cpus, dump_copy, &e, 0);
	if (!(d->flags & EM_FLAG_DEAD)) {
		c->live += 1;
		add_to_proc(c, d);
		return 0;
	}
	i = dump_slots - 1 - c->reaped;
	top = bpf_map_lookup_elem(&dumps, &i);
	if (!top) {
		c->overflow += 1;
		return 0;
	}
	__builtin_memcpy(top, d, sizeof(*d));
	c->reaped += 1;
	return 0;
}

/* Reaped record i leaves the map: the record is the last word on it. Only
 * after the walk: an element deleted during it could be reused at once by
 * an insert into another bucket, and the walk would follow it there,
 * skipping the rest of its own bucket. */
static long reap_one(__u64 index, struct dump_ctx *c)
{
	__u32 i = dump_slots - 1 - (__u32)index;
	struct task_dump *d = bpf_map_lookup_elem(&dumps, &i);
	struct task_key key;

	if (!d)
		return 1;
	key.tid = d->tid;
	key.start = d->start;
	bpf_map_delete_elem(&tasks, &key);
	return 0;
}

/* Process record i's index entry leaves proc_index: the next dump starts
 * from an empty index. */
static long unindex_one(__u64 index, struct dump_ctx *c)
{
	__u32 i = (__u32)index;
	struct proc_dump *p = bpf_map_lookup_elem(&procs, &i);
	struct proc_key pk = {};

	if (!p)
		return 1;
	pk.tgid = p->tgid;
	pk.pstart = p->pstart;
	bpf_map_delete_elem(&proc_index, &pk);
	return 0;
}

/* The reader's pass over `tasks`, run by user space (BPF_PROG_TEST_RUN)
 * right after the cuts, never two at once: every entry at the cut, summed
 * here in the kernel per task and per process, then the dead ones reaped,
 * so a read costs user space one fixed-size record per process (and per
 * thread only when it lists threads), read from memory. Returns the number
 * of live task records. */
SEC("raw_tp")
int dump(void *ctx)
{
	struct dump_ctx c = { .gen = dump_gen + 1 };

	bpf_for_each_map_elem(&tasks, dump_one, &c, 0);
	bpf_loop(c.reaped, reap_one, &c, 0);
	bpf_loop(c.procs, unindex_one, &c, 0);
	dump_gen = c.gen;
	dump_overflow = c.overflow;
	dump_reaped = c.reaped;
	dump_procs = c.procs;
	return c.live;
}

/* Never read or written: put the dump records into the BTF for user space. */
const struct task_dump *task_dump_layout __attribute__((unused));
const struct proc_dump *proc_dump_layout __attribute__((unused));

char LICENSE[] SEC("license") = "GPL";
