// SPDX-License-Identifier: GPL-2.0
/* The other half (see linked_a.bpf.c): its own `static count` and `static
 * step` (adds 100). On a getppid() of target_tgid: b_count += 100 per hit. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

static __u64 count = 0;
const volatile __u32 target_tgid = 0;
__u64 b_count = 0;

static __attribute__((noinline)) __u64 step(__u64 x)
{
	return x + 100;
}

SEC("raw_tp/sys_enter")
int count_b(struct bpf_raw_tracepoint_args *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid || ctx->args[1] != 110)
		return 0;
	count = step(count);
	b_count = count;
	return 0;
}
