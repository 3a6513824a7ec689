// SPDX-License-Identifier: GPL-2.0
/* Load benchmark: uprobes from section names alone, a shared-library symbol
 * (libc resolved by name, its .dynsym read, the file offset computed) and a
 * uretprobe, each a perf event on the uprobe PMU plus a perf link. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 calls = 0, returns = 0;

SEC("uprobe/libc.so.6:getppid")
int BPF_KPROBE(on_getppid)
{
	__sync_fetch_and_add(&calls, 1);
	return 0;
}

SEC("uretprobe/libc.so.6:getpid")
int BPF_KRETPROBE(after_getpid)
{
	__sync_fetch_and_add(&returns, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
