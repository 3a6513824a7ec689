// SPDX-License-Identifier: GPL-2.0
/* fentry/fexit on a kernel function: loads where the kernel allows BPF
 * trampolines (this VM refuses them with EPERM; tests check the message). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 entries = 0;
__u64 exits = 0;

SEC("fentry/vfs_read")
int BPF_PROG(on_vfs_read_entry)
{
	__sync_fetch_and_add(&entries, 1);
	return 0;
}

SEC("fexit/vfs_read")
int BPF_PROG(on_vfs_read_exit)
{
	__sync_fetch_and_add(&exits, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
