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

/* Cycles and instructions per slice (opt-in, where a PMU exists): one
 * counting perf event per CPU in each array, opened by user space. The
 * difference between two switches on a CPU is what the task switched out
 * ran (its slice, with the switch itself). */
const volatile bool count_pmu = false;

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1); /* user space sets the number of possible CPUs */
} pmu_cycles SEC(".maps"), pmu_instructions SEC(".maps");

struct ws_pmu_last pmu_last[WS_MAX_CPUS] = {};
__u64 pmu_misses = 0; /* switches whose counters could not be read */

__u64 thread_drops = 0; /* .bss: threads the full `threads` map could not track */
__u64 proc_drops = 0;   /* exited threads lost to a full `procs` map */

/* This CPU's counts since its last switch, into d (zeros when not counting,
 * on the first switch, or when a read fails). */
static __always_inline void pmu_slice(struct ws_pmu_last *d)
{
	struct bpf_perf_event_value c = {}, i = {};
	struct ws_pmu_last *last;
	__u32 cpu = bpf_get_smp_processor_id();

	d->cycles = d->instructions = 0;
	if (!count_pmu || cpu >= WS_MAX_CPUS)
		return;
	last = &pmu_last[cpu];
	if (bpf_perf_event_read_value(&pmu_cycles, BPF_F_CURRENT_CPU, &c, sizeof(c)) ||
	    bpf_perf_event_read_value(&pmu_instructions, BPF_F_CURRENT_CPU, &i, sizeof(i))) {
		__sync_fetch_and_add(&pmu_misses, 1);
		last->cycles = last->instructions = 0;
		return;
	}
	if (last->cycles && c.counter >= last->cycles && i.counter >= last->instructions) {
		d->cycles = c.counter - last->cycles;
		d->instructions = i.counter - last->instructions;
	}
	last->cycles = c.counter ? c.counter : 1;
	last->instructions = i.counter;
}

/* Move thread `t` (NULL: not tracked yet) into `state` at `now`; `pmu` is
 * what it ran in the slice that just ended (switch-outs only). */
static __always_inline void enter(struct ws_thread *t, __u32 tid, __u32 tgid, __u32 state, __u64 now,
				  __u32 count_what, struct ws_pmu_last *pmu)
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
		if (pmu) {
			t->cycles += pmu->cycles;
			t->instructions += pmu->instructions;
		}
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
static __always_inline void retire(__u32 tid, __u64 now, struct ws_pmu_last *pmu)
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
		p->cycles += t->cycles + pmu->cycles;
		p->instructions += t->instructions + pmu->instructions;
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
	struct ws_pmu_last pmu;

	pmu_slice(&pmu);
	if (ptid) {
		if (prev_state & WS_TASK_DEAD) {
			retire(ptid, now, &pmu);
		} else {
			__u32 state = WS_SLEEP;

			if (preempt || prev_state == 0 /* TASK_RUNNING */)
				state = WS_RUNNABLE;
			else if ((prev_state & WS_TASK_UNINTERRUPTIBLE) &&
				 BPF_CORE_READ_BITFIELD_PROBED(prev, in_iowait))
				state = WS_IO;
			enter(bpf_map_lookup_elem(&threads, &ptid), ptid, prev->tgid, state, now, WS_COUNT_NONE, &pmu);
		}
	}
	if (ntid)
		enter(bpf_map_lookup_elem(&threads, &ntid), ntid, next->tgid, WS_ON_CPU, now, WS_COUNT_SWITCH, 0);
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
	enter(t, tid, p->tgid, WS_RUNNABLE, bpf_ktime_get_ns(), WS_COUNT_WAKEUP, 0);
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
