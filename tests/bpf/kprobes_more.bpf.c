// SPDX-License-Identifier: GPL-2.0
/* Kernel-probe sections beyond kprobe/ (see kprobe_only.bpf.c): a kretprobe,
 * a ksyscall and a kprobe.multi. This kernel has no kprobes, so each loads
 * and then gets the one-sentence "this kernel has no kprobes" error. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 hits = 0;

SEC("kretprobe/do_nanosleep")
int BPF_KRETPROBE(after_nanosleep)
{
	hits++;
	return 0;
}

SEC("ksyscall/getppid")
int on_getppid_syscall(void *ctx)
{
	hits++;
	return 0;
}

SEC("kprobe.multi/do_nano*")
int on_many(void *ctx)
{
	hits++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
