// SPDX-License-Identifier: GPL-2.0
/* A USDT program through libbpf's <bpf/usdt.bpf.h>: attached by the test to
 * tests/bpf/probed.c's ebpf_energy:tick (probe arguments i and sum). Counts
 * calls of .rodata target_tgid, sums argument 0 and keeps the last argument 1
 * and the argument count. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

const volatile __u32 target_tgid = 0;

__u64 ticks = 0, i_sum = 0;
__s64 last_sum = 0;
__s64 arg_cnt = 0;

SEC("usdt")
int BPF_USDT(on_tick, int i, long sum)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	__sync_fetch_and_add(&ticks, 1);
	__sync_fetch_and_add(&i_sum, i);
	last_sum = sum;
	arg_cnt = bpf_usdt_arg_cnt(ctx);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
