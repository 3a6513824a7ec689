// SPDX-License-Identifier: GPL-2.0
/* uprobes for tests/test_links_uprobe.py, on tests/bpf/probed.c's binary and
 * on libc. Every program counts only calls from .rodata target_tgid.
 * - on_add / on_add_ret: SEC("uprobe") / SEC("uretprobe"), attached by the
 *   test to probed_add (the path is known only at run time): calls, the sum
 *   of a + b, the sum of the return values.
 * - on_getppid: SEC("uprobe/libc.so.6:getppid"): a shared-library symbol.
 * - on_any_probed: SEC("uprobe.multi"), attached to probed_* (two functions).
 * - on_main: SEC("uprobe//proc/self/exe:main"): every process running the
 *   loader's own binary; records each tgid's calls in main_calls. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile __u32 target_tgid = 0;

__u64 add_calls = 0, add_arg_sum = 0, add_ret_calls = 0, add_ret_sum = 0;
__u64 getppid_calls = 0, multi_calls = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} main_calls SEC(".maps");

static __always_inline int ours(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

SEC("uprobe")
int BPF_KPROBE(on_add, int a, int b)
{
	if (ours()) {
		__sync_fetch_and_add(&add_calls, 1);
		__sync_fetch_and_add(&add_arg_sum, a + b);
	}
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(on_add_ret, int ret)
{
	if (ours()) {
		__sync_fetch_and_add(&add_ret_calls, 1);
		__sync_fetch_and_add(&add_ret_sum, ret);
	}
	return 0;
}

SEC("uprobe/libc.so.6:getppid")
int BPF_KPROBE(on_getppid)
{
	if (ours())
		__sync_fetch_and_add(&getppid_calls, 1);
	return 0;
}

SEC("uprobe.multi")
int BPF_KPROBE(on_any_probed)
{
	if (ours())
		__sync_fetch_and_add(&multi_calls, 1);
	return 0;
}

SEC("uprobe//proc/self/exe:main")
int BPF_KPROBE(on_main)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 one = 1, *n = bpf_map_lookup_elem(&main_calls, &tgid);

	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&main_calls, &tgid, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
