// SPDX-License-Identifier: GPL-2.0
/* Callbacks: static functions passed by address (an ld_imm64 of a .text
 * function, BPF_PSEUDO_FUNC once linked) to
 *  bpf_loop(5, sum_index)                 loop_sum  += 0+1+2+3+4 = 10 per hit
 *  bpf_for_each_map_elem(&vals, add_val)  each_sum  += sum of vals (user space fills it)
 *  bpf_user_ringbuf_drain(&user_rb, ...)  drained   += records (none written: 0), drain_calls += 1
 * On a getppid() (trigger_nr) of target_tgid. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} vals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 4096);
} user_rb SEC(".maps");

const volatile __u32 target_tgid = 0;
const volatile __u64 trigger_nr = 110;
__u64 loop_sum = 0, each_sum = 0, drained = 0, drain_calls = 0;

static long sum_index(__u64 index, void *ctx)
{
	loop_sum += index;
	return 0;
}

static long add_val(struct bpf_map *map, __u32 *key, __u64 *val, void *ctx)
{
	each_sum += *val;
	return 0;
}

static long count_record(struct bpf_dynptr *record, void *ctx)
{
	drained += 1;
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(use_callbacks, struct pt_regs *regs, long id)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid || id != trigger_nr)
		return 0;
	bpf_loop(5, sum_index, NULL, 0);
	bpf_for_each_map_elem(&vals, add_val, NULL, 0);
	if (bpf_user_ringbuf_drain(&user_rb, count_record, NULL, 0) >= 0)
		drain_calls += 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
