// SPDX-License-Identifier: GPL-2.0
/* An LSM program: it needs a BPF trampoline, which this kernel refuses
 * (EPERM at load, as for fentry/fexit); tests check the message says so. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 checks = 0;

SEC("lsm/file_open")
int BPF_PROG(on_file_open, struct file *file)
{
	__sync_fetch_and_add(&checks, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
