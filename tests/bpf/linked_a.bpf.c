// SPDX-License-Identifier: GPL-2.0
/* Half of a statically linked object (`bpftool gen object linked.o
 * linked_a.bpf.o linked_b.bpf.o`, done by tests/test_loader_spec.py): both
 * halves have a `static` variable `count` and a `static` function `step`
 * of the same names, which must stay two different things after linking.
 * On a getppid() of target_tgid: a_count += 1 per hit (step adds 1). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

static __u64 count = 0;
extern const volatile __u32 target_tgid;
__u64 a_count = 0;

static __attribute__((noinline)) __u64 step(__u64 x)
{
	return x + 1;
}

SEC("raw_tp/sys_enter")
int count_a(struct bpf_raw_tracepoint_args *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid || ctx->args[1] != 110)
		return 0;
	count = step(count);
	a_count = count;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
