// SPDX-License-Identifier: GPL-2.0
/* Loader corpus: several programs in one section and across sections, for
 * per-program selection (`--program NAME`, autoload):
 *   switch_a, switch_b   both in SEC("tp_btf/sched_switch") (one ELF section)
 *   sys_enter_c          SEC("raw_tp/sys_enter")
 *   switch_d             SEC("raw_tp/sched_switch")
 * Each bumps its own .bss counter (hits_a, hits_b, hits_c, hits_d). Loading
 * only switch_b must leave the other counters at 0 and create no kernel
 * program for them; loading all must make all four grow. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 hits_a = 0;
__u64 hits_b = 0;
__u64 hits_c = 0;
__u64 hits_d = 0;

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_a, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	__sync_fetch_and_add(&hits_a, 1);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_b, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	__sync_fetch_and_add(&hits_b, 1);
	return 0;
}

SEC("raw_tp/sys_enter")
int sys_enter_c(void *ctx)
{
	__sync_fetch_and_add(&hits_c, 1);
	return 0;
}

SEC("raw_tp/sched_switch")
int switch_d(void *ctx)
{
	__sync_fetch_and_add(&hits_d, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
