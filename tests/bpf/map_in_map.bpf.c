// SPDX-License-Identifier: GPL-2.0
/* Maps of maps and a program array, declared and filled the libbpf way:
 *  outer_arr  ARRAY_OF_MAPS, inner definition `struct inner_def` (ARRAY of 1 __u64),
 *             slots 0 = inner_a, 2 = inner_b (slot 1 empty)
 *  outer_hash HASH_OF_MAPS with the same inner definition, no initial slots
 *  jumps      PROG_ARRAY, slot 1 = bump_b (a tail call target)
 * On a getppid() (trigger_nr) of target_tgid, `count_via_outer` adds 1 to
 * inner_a[0] and 10 to inner_b[0] through outer_arr, then tail-calls jumps[1]
 * (bump_b, SEC("raw_tp"): loaded, reached only that way), which adds 1 to .bss `tail_calls`. Load-only objects check the rest. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct inner_def {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
};

struct inner_def inner_a SEC(".maps"), inner_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 3);
	__type(key, __u32);
	__array(values, struct inner_def);
} outer_arr SEC(".maps") = {
	.values = { [0] = &inner_a, [2] = &inner_b },
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct inner_def);
} outer_hash SEC(".maps");

int bump_b(void *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, int (void *));
} jumps SEC(".maps") = {
	.values = { [1] = (void *)&bump_b },
};

const volatile __u32 target_tgid = 0;
const volatile __u64 trigger_nr = 110;
__u64 tail_calls = 0;

static void add(__u32 slot, __u64 n)
{
	__u32 zero = 0;
	void *inner = bpf_map_lookup_elem(&outer_arr, &slot);
	__u64 *v;

	if (!inner)
		return;
	v = bpf_map_lookup_elem(inner, &zero);
	if (v)
		__sync_fetch_and_add(v, n);
}

SEC("raw_tp/sys_enter")
int count_via_outer(struct bpf_raw_tracepoint_args *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid || ctx->args[1] != trigger_nr)
		return 0;
	add(0, 1);
	add(2, 10);
	bpf_tail_call(ctx, &jumps, 1);
	return 0;
}

SEC("raw_tp")
int bump_b(void *ctx)
{
	__sync_fetch_and_add(&tail_calls, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
