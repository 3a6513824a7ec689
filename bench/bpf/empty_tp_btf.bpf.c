// SPDX-License-Identifier: GPL-2.0
/* Benchmark baseline: the cheapest possible sched_switch program. Its
 * run_time_ns/run_cnt is the unit the monitor's cost is expressed in
 * (target: energy_monitor <= 3x this). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/sched_switch")
int BPF_PROG(empty_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
