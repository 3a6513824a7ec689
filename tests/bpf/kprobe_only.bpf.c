// SPDX-License-Identifier: GPL-2.0
/* A kprobe program: on a kernel without kprobes (CONFIG_KPROBES off, no kprobe
 * PMU) no loader can attach it, and `load` must say exactly that. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 hits = 0;

SEC("kprobe/do_nanosleep")
int BPF_KPROBE(on_nanosleep)
{
	hits++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
