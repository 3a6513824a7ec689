// SPDX-License-Identifier: GPL-2.0
/* A hash of maps with initial slots, for tests/test_map_in_map_hash.py:
 *  by_key  HASH_OF_MAPS, __u32 keys, inner definition `struct counter_def`
 *          (ARRAY of 1 __u64), key 1 = ones, key 5 = hundreds (no others)
 * On a getppid() (trigger_nr) of target_tgid, `count_via_hash` looks both
 * keys up in by_key and adds 1 to ones[0] and 100 to hundreds[0]; a lookup
 * of key 2 (never filled) adds 1 to .bss `misses`. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct counter_def {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
};

struct counter_def ones SEC(".maps"), hundreds SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8);
	__type(key, __u32);
	__array(values, struct counter_def);
} by_key SEC(".maps") = {
	.values = { [1] = &ones, [5] = &hundreds },
};

const volatile __u32 target_tgid = 0;
const volatile __u64 trigger_nr = 110;
__u64 misses = 0;

static void add(__u32 key, __u64 n)
{
	__u32 zero = 0;
	void *inner = bpf_map_lookup_elem(&by_key, &key);
	__u64 *v;

	if (!inner) {
		__sync_fetch_and_add(&misses, 1);
		return;
	}
	v = bpf_map_lookup_elem(inner, &zero);
	if (v)
		__sync_fetch_and_add(v, n);
}

SEC("raw_tp/sys_enter")
int count_via_hash(struct bpf_raw_tracepoint_args *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid || ctx->args[1] != trigger_nr)
		return 0;
	add(1, 1);
	add(5, 100);
	add(2, 1000);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
