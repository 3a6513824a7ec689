// SPDX-License-Identifier: GPL-2.0
/* Per-thread CPU time, accounted at every context switch.
 *
 * Who runs on each CPU since when lives in slots[cpu] (.bss), never in a map
 * keyed by pid: a task that migrates can then never read a stale start time,
 * and the slice running at attach time counts from `start_ns` (set by user
 * space to time.monotonic_ns() just before attach). User space closes out the
 * running slices itself at read time from slots[].
 *
 * Closed slices go to `tasks`, a PERCPU_HASH keyed by tid: one lookup per
 * switch and an in-place add into this CPU's copy (no atomics, and a per-CPU
 * split for per-core models). comm, cgroup and tgid are written only when an
 * entry is created and on exec/exit, so the fast path calls no helper but
 * the clock and the lookup. pid 0 (idle) never enters the hash: its time goes
 * to slots[cpu].idle_ns. Entries are never deleted here: the final switch-out
 * of a dying task sets EM_FLAG_DEAD and user space deletes after reading.
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

/* Settings, written by user space before load (.rodata, frozen). */
const volatile __u64 start_ns = 0;        /* monotonic ns at attach; 0: first slices are skipped */
const volatile bool stream_events = false; /* one slice_event per closed slice on `events` */
const volatile __u32 filter_tgid = 0;     /* stream only this process (0 = all) */
const volatile __u32 filter_tid = 0;      /* stream only this thread (0 = all) */
const volatile __u32 nr_cpus = EM_MAX_CPUS; /* possible CPUs, set by user space */
const volatile __u64 filter_cgroup_id = 0; /* stream only this cgroup v2 id (0 = all) */
const volatile __u64 min_slice_ns = 0;    /* stream only slices at least this long */
const volatile __u32 wakeup_batch = 64;   /* wake the reader every N events (<= 1: every event) */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);       /* user space may change it before load */
	__type(key, __u32);               /* tid */
	__type(value, struct task_stats);
} tasks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);  /* user space may shrink it when not streaming */
} events SEC(".maps");

/* .bss: written by the programs, read by user space (mmap or lookup). */
struct cpu_slot slots[EM_MAX_CPUS] = {};
__u64 cpu_overflow = 0;              /* switches seen on a CPU >= EM_MAX_CPUS */

/* Never read or written: makes clang emit struct slice_event into the BTF
 * (the ring buffer has no value type), so user space can decode records. */
const struct slice_event *slice_event_layout __attribute__((unused));

static __always_inline void fill_meta(struct task_stats *v, struct task_struct *t,
				      __u64 now)
{
	v->meta_ns = now;
	if (t == bpf_get_current_task_btf())
		v->cgroup_id = bpf_get_current_cgroup_id();
	else
		v->cgroup_id = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
	v->tgid = BPF_CORE_READ(t, tgid);
	BPF_CORE_READ_STR_INTO(&v->comm, t, comm);
}

/* Create the entry for `t` holding the first slice; false when the map is full. */
static __always_inline bool insert_task(__u32 tid, struct task_struct *t, __u64 dur,
					__u64 now, __u32 flags, __u64 runtime)
{
	struct task_stats init = {};
	struct task_stats *v;
	long err;

	init.cpu_ns = dur;
	init.slices = dur ? 1 : 0;
	init.flags = flags;
	init.last_runtime = runtime;
	fill_meta(&init, t, now);
	err = bpf_map_update_elem(&tasks, &tid, &init, BPF_NOEXIST);
	if (err == -17 /* EEXIST: created meanwhile, add to it instead */) {
		v = bpf_map_lookup_elem(&tasks, &tid);
		if (!v)
			return false;
		v->cpu_ns += dur;
		v->slices += init.slices;
		v->flags |= flags;
		if (runtime > v->last_runtime)
			v->last_runtime = runtime;
		return true;
	}
	return err == 0;
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
	if (filter_cgroup_id && bpf_get_current_cgroup_id() != filter_cgroup_id)
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

extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

/* Add `ns` of on-CPU time to a task other than prev: the slot's task, whose
 * switch-out this CPU never reported. Without it that time would be nobody's
 * and tasks + idle would not add up to the window. */
static __always_inline void credit_task(struct cpu_slot *s, __u32 tid, __u64 ns, __u64 now)
{
	struct task_struct *t;
	struct task_stats *o;

	if (!ns)
		return;
	o = bpf_map_lookup_elem(&tasks, &tid);
	if (o) {
		o->cpu_ns += ns;
		o->slices += 1;
		return;
	}
	t = bpf_task_from_pid(tid);
	if (!t) { /* gone already: nobody left to credit; say so */
		s->task_drops += 1;
		s->dropped_ns += ns;
		return;
	}
	if (!insert_task(tid, t, ns, now, 0, 0)) {
		s->task_drops += 1;
		s->dropped_ns += ns;
	}
	bpf_task_release(t);
}

/* How long the slot's task really ran since it was switched in here (at most
 * `limit`), read from the task itself: its switch-out went unreported, so the
 * slot's wall time also holds whatever ran after it. */
static __always_inline __u64 slot_task_ran(struct cpu_slot *s, __u64 limit)
{
	struct task_struct *t = bpf_task_from_pid(s->tid);
	__u64 r, ran = 0; /* not found (seen here for this VM's agent threads,
			   * whose switch-outs are the unreported ones): the
			   * rest of the slot is counted as idle, which it
			   * mostly is */

	if (t) {
		r = t->se.sum_exec_runtime;
		ran = r >= s->start_runtime ? r - s->start_runtime : 0;
		bpf_task_release(t);
		if (ran > limit)
			ran = limit;
	}
	return ran;
}

/* The slot's task (not prev) owns part of `wall`: credit what it ran, return the rest. */
static __always_inline __u64 settle_slot_task(struct cpu_slot *s, __u32 prev_tid, __u64 wall, __u64 now)
{
	__u64 ran;

	if (!s->start_ns || !s->tid || s->tid == prev_tid || !wall)
		return wall;
	ran = slot_task_ran(s, wall);
	credit_task(s, s->tid, ran, now);
	return wall - ran;
}

/* The switch-in of `prev` on this CPU was not seen: the slot holds another
 * task (some switches reach no tracepoint; on this VM, the agent's threads
 * are switched in and out unseen), or this is the slice running at attach.
 * Its slice is then its runtime now minus its runtime at its last accounted
 * switch-out (the largest last_runtime over the per-CPU copies). A task never
 * accounted yet: for the fair class, the runtime when it was last picked
 * (the kernel keeps it); else the wall time since the slot's start. */
static __always_inline __u64 unseen_switch_in(struct task_struct *prev, __u32 tid,
					      __u64 runtime, __u64 wall)
{
	struct task_stats *c;
	__u64 last = 0, picked;
	__u32 cpu;

	/* nr_cpus is frozen .rodata: the verifier walks only that many rounds */
	for (cpu = 0; cpu < EM_MAX_CPUS && cpu < nr_cpus; cpu++) {
		c = bpf_map_lookup_percpu_elem(&tasks, &tid, cpu);
		if (!c)
			break;
		if (c->last_runtime > last)
			last = c->last_runtime;
	}
	/* never more than the wall time this CPU's slot covers: time the task
	 * ran unseen elsewhere was credited there, and each CPU's books must
	 * balance (tasks + idle = elapsed) */
	if (last && runtime >= last)
		return runtime - last < wall ? runtime - last : wall;
	if (prev->policy == 0 || prev->policy == 3 || prev->policy == 5) {
		picked = prev->se.prev_sum_exec_runtime;
		if (runtime >= picked && runtime - picked <= wall)
			return runtime - picked;
	}
	return wall;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct task_stats *v;
	struct cpu_slot *s;
	__u64 now, since, dur, runtime, wall;
	__u32 tid, flags;

	if (cpu >= EM_MAX_CPUS) {
		__sync_fetch_and_add(&cpu_overflow, 1);
		return 0;
	}
	s = &slots[cpu];
	now = bpf_ktime_get_ns();
	since = s->start_ns ? s->start_ns : start_ns;
	tid = prev->pid;

	*(volatile __u64 *)&s->seq += 1; /* odd: slot and prev's totals changing */
	barrier();
	if (since && now > since) {
		dur = now - since;
		if (tid == 0) {
			/* idle's switch-in unseen: the slot's task ran first */
			s->idle_ns += settle_slot_task(s, 0, dur, now);
		} else {
			/* The scheduler's own account of the slice (what schedstat and
			 * rusage report): the task's runtime now minus at switch-in. */
			runtime = prev->se.sum_exec_runtime;
			if (s->start_ns && s->tid == tid && runtime >= s->start_runtime) {
				dur = runtime - s->start_runtime;
			} else {
				/* prev's switch-in unseen: prev's own runtime, then the
				 * slot's task's, then idle share the wall time */
				wall = dur;
				dur = unseen_switch_in(prev, tid, runtime, wall);
				s->idle_ns += settle_slot_task(s, tid, wall - dur, now);
			}
			flags = prev_state & EM_TASK_DEAD ? EM_FLAG_DEAD | EM_FLAG_EXITED : 0;
			v = bpf_map_lookup_elem(&tasks, &tid);
			if (v) {
				v->cpu_ns += dur;
				v->slices += 1;
				v->last_runtime = runtime;
				if (flags)
					v->flags |= flags;
				/* a task moved to another cgroup keeps running: follow
				 * it every 64 slices (prev is current here) */
				if ((v->slices & 63) == 0)
					v->cgroup_id = bpf_get_current_cgroup_id();
			} else if (!insert_task(tid, prev, dur, now, flags, runtime)) {
				s->task_drops += 1;
				s->dropped_ns += dur;
			}
			if (stream_events)
				stream_slice(s, prev, tid, prev->tgid, cpu, since, dur, flags);
		}
	}
	s->tid = next->pid;
	s->tgid = next->tgid;
	s->start_ns = now;
	s->start_runtime = next->se.sum_exec_runtime;
	barrier();
	*(volatile __u64 *)&s->seq += 1; /* even: consistent again */
	return 0;
}

/* Mark (or create) the entry of `t` with `flags` and fresh comm/cgroup. */
static __always_inline void touch_meta(struct task_struct *t, __u32 tid, __u32 flags)
{
	__u64 now = bpf_ktime_get_ns();
	struct task_stats *v = bpf_map_lookup_elem(&tasks, &tid);

	if (!v) {
		/* not switched out yet: create it so comm and flags are kept;
		 * if the map is full the final switch-out counts the drop */
		insert_task(tid, t, 0, now, flags, 0);
		return;
	}
	v->flags |= flags;
	fill_meta(v, t, now);
}

/* Fires before the task's last switch-out: that slice is still to come. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	__u32 tid = p->pid;

	if (tid)
		touch_meta(p, tid, EM_FLAG_EXITED);
	return 0;
}

/* comm changes on exec; a fork child is often first switched out before it. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid)
{
	__u32 tid = p->pid, old = old_pid;
	struct task_stats *v;

	/* exec from a non-leader thread takes over the leader's pid: the old
	 * tid's entry gets no more slices, so let user space reap it */
	if (old != tid) {
		v = bpf_map_lookup_elem(&tasks, &old);
		if (v)
			v->flags |= EM_FLAG_DEAD | EM_FLAG_EXITED;
	}
	touch_meta(p, tid, EM_FLAG_EXECED);
	return 0;
}

/* prctl(PR_SET_NAME) or a write to /proc/PID/comm renames a task without an
 * exec: keep the name current. Fires before the new name is copied in, so
 * read it from the argument; the task need not be current (/proc writes). */
SEC("tp_btf/task_rename")
int BPF_PROG(on_rename, struct task_struct *task, const char *comm)
{
	__u32 tid = task->pid;
	struct task_stats *v = bpf_map_lookup_elem(&tasks, &tid);

	if (!v)
		return 0; /* its first switch-out reads the new name itself */
	v->meta_ns = bpf_ktime_get_ns();
	v->tgid = task->tgid;
	v->cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	bpf_probe_read_kernel_str(&v->comm, sizeof(v->comm), comm);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
