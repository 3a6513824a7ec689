// SPDX-License-Identifier: GPL-2.0
/* What each process waits on: on a CPU, runnable but waiting for one,
 * blocked in I/O, or sleeping. Opt-in (`monitor --classify`): a hash lookup
 * per switched task and per wakeup on top of the energy monitor's program.
 *
 * Every thread is in exactly one state at a time, since a timestamp
 * (`threads`, keyed by tid). A transition closes the interval: its length
 * goes to the thread's own sums under the state it ends, so a thread's four
 * sums plus its open interval add up exactly to the time it was watched.
 * User space adds the open interval itself at a read (now - since, in the
 * state recorded), so a thread asleep for the whole window is not missed.
 * A reader copies an entry while it may be written: `seq` is bumped before
 * an update and copied to `seq_end` after it, so a copy whose two differ is
 * torn and is read again.
 * When a thread dies its sums are folded into its process's entry (`procs`,
 * keyed by tgid, one copy per CPU: plain adds) and its entry removed.
 *
 *   sched_switch, prev: ON_CPU ends; prev enters RUNNABLE when it was
 *     preempted or is still TASK_RUNNING (it stays on the runqueue), IO when
 *     TASK_UNINTERRUPTIBLE with in_iowait (io_schedule), else SLEEP; its
 *     final switch (TASK_DEAD) ends its tracking.
 *   sched_switch, next: RUNNABLE (or whatever it was) ends; ON_CPU begins.
 *   sched_wakeup: SLEEP or IO ends; RUNNABLE begins (runqueue latency from here).
 *   sched_wakeup_new: a new task begins RUNNABLE.
 * A thread first seen mid-life starts in the state the event implies, from
 * that event on: nothing before it is guessed.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "wait_states.h"

#define barrier() asm volatile("" ::: "memory")

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768); /* user space may change it before load */
	__type(key, __u32);         /* tid */
	__type(value, struct ws_thread);
} threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);         /* tgid */
	__type(value, struct ws_proc);
} procs SEC(".maps");

__u64 thread_drops = 0; /* .bss: threads the full `threads` map could not track */
__u64 proc_drops = 0;   /* exited threads lost to a full `procs` map */

/* Move thread `t` (NULL: not tracked yet) into `state` at `now`. */
static __always_inline void enter(struct ws_thread *t, __u32 tid, __u32 tgid, __u32 state, __u64 now,
				  __u32 count_what)
{
	if (t) {
		__u32 was = t->state, seq = t->seq + 1;

		t->seq = seq;
		barrier();
		if (now > t->since_ns && was < WS_STATES)
			t->ns[was] += now - t->since_ns;
		if (count_what == WS_COUNT_SWITCH)
			t->switches += 1;
		else if (count_what == WS_COUNT_WAKEUP)
			t->wakeups += 1;
		t->since_ns = now;
		t->state = state;
		t->tgid = tgid;
		barrier();
		t->seq_end = seq;
		return;
	}
	struct ws_thread init = {.since_ns = now, .tgid = tgid, .state = state};

	if (bpf_map_update_elem(&threads, &tid, &init, BPF_NOEXIST) == -7 /* E2BIG: full */)
		__sync_fetch_and_add(&thread_drops, 1);
}

/* The final switch of a thread: close its interval, fold it into its process. */
static __always_inline void retire(__u32 tid, __u64 now)
{
	struct ws_thread *t = bpf_map_lookup_elem(&threads, &tid);
	struct ws_proc *p;
	__u32 tgid;

	if (!t)
		return;
	tgid = t->tgid;
	p = bpf_map_lookup_elem(&procs, &tgid);
	if (!p) {
		struct ws_proc init = {};

		bpf_map_update_elem(&procs, &tgid, &init, BPF_NOEXIST); /* EEXIST: made meanwhile */
		p = bpf_map_lookup_elem(&procs, &tgid);
	}
	if (p) {
		if (now > t->since_ns && t->state < WS_STATES)
			t->ns[t->state] += now - t->since_ns;
		p->ns[0] += t->ns[0];
		p->ns[1] += t->ns[1];
		p->ns[2] += t->ns[2];
		p->ns[3] += t->ns[3];
		p->switches += t->switches;
		p->wakeups += t->wakeups;
	} else {
		__sync_fetch_and_add(&proc_drops, 1);
	}
	bpf_map_delete_elem(&threads, &tid);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 ptid = prev->pid, ntid = next->pid;

	if (ptid) {
		if (prev_state & WS_TASK_DEAD) {
			retire(ptid, now);
		} else {
			__u32 state = WS_SLEEP;

			if (preempt || prev_state == 0 /* TASK_RUNNING */)
				state = WS_RUNNABLE;
			else if ((prev_state & WS_TASK_UNINTERRUPTIBLE) &&
				 BPF_CORE_READ_BITFIELD_PROBED(prev, in_iowait))
				state = WS_IO;
			enter(bpf_map_lookup_elem(&threads, &ptid), ptid, prev->tgid, state, now, WS_COUNT_NONE);
		}
	}
	if (ntid)
		enter(bpf_map_lookup_elem(&threads, &ntid), ntid, next->tgid, WS_ON_CPU, now, WS_COUNT_SWITCH);
	return 0;
}

static __always_inline void woken(struct task_struct *p)
{
	__u32 tid = p->pid;
	struct ws_thread *t;

	if (!tid)
		return;
	t = bpf_map_lookup_elem(&threads, &tid);
	/* woken while still on a CPU or already runnable: nothing changes */
	if (t && (t->state == WS_ON_CPU || t->state == WS_RUNNABLE))
		return;
	enter(t, tid, p->tgid, WS_RUNNABLE, bpf_ktime_get_ns(), WS_COUNT_WAKEUP);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(on_wakeup, struct task_struct *p)
{
	woken(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(on_wakeup_new, struct task_struct *p)
{
	woken(p);
	return 0;
}

/* Never read or written: keeps the record layouts in the object's BTF. */
const struct ws_thread *ws_thread_layout __attribute__((unused));
const struct ws_proc *ws_proc_layout __attribute__((unused));

char LICENSE[] SEC("license") = "GPL";
