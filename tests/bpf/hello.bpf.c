// SPDX-License-Identifier: GPL-2.0
/* docs/loader-guide.md's example: ten lines that use every phase of a load. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);   /* tgid */
	__type(value, u64); /* times it was switched out */
} switches SEC(".maps");

const volatile u32 only_tgid = 0; /* .rodata: set before load, a constant to the verifier */

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u32 tgid = prev->tgid; /* a CO-RE relocation: vmlinux.h marks task_struct preserve_access_index */
	u64 one = 1, *n;

	if (only_tgid && tgid != only_tgid)
		return 0;
	n = bpf_map_lookup_elem(&switches, &tgid);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&switches, &tgid, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
