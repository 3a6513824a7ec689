// SPDX-License-Identifier: GPL-2.0
/* Maps whose entries user space cannot look up (BPF_MAP_LOOKUP_ELEM gives
 * ENOTSUPP for a cgroup array): `load` must still load and report them, with
 * the reason, and read the ordinary map beside them. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("tp_btf/sched_process_exec")
int count_exec(void *ctx)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&counts, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
	if (bpf_current_task_under_cgroup(&cgroups, 0) == 1) {
		k = 1;
		v = bpf_map_lookup_elem(&counts, &k);
		if (v)
			__sync_fetch_and_add(v, 1);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
