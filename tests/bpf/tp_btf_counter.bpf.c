// SPDX-License-Identifier: GPL-2.0
/* Loader corpus: the smallest tp_btf program with an observable effect.
 * Every context switch bumps a global .bss counter and this CPU's slot of a
 * per-CPU array, so a test can check that both grow after a few sleeps and
 * that the per-CPU slots sum to roughly the global count. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cpu_switches SEC(".maps");

__u64 switches = 0; /* .bss */

SEC("tp_btf/sched_switch")
int BPF_PROG(count_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	__u32 zero = 0;
	__u64 *slot;

	__sync_fetch_and_add(&switches, 1);
	slot = bpf_map_lookup_elem(&cpu_switches, &zero);
	if (slot)
		*slot += 1; /* per-CPU value: only this CPU writes it */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
