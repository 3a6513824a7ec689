// SPDX-License-Identifier: GPL-2.0
/* Loader corpus: subprograms in .text called from two programs in two
 * sections, so each main program needs its own copy of what it reaches.
 *  triple_plus_one  static __noinline:  f(x) = 3x + 1       (static call, no reloc)
 *  mix              static __noinline:  f(x) * 2 + x        (calls triple_plus_one)
 *  global_square    global __noinline:  x * x + 5           (imm = -1 call, verified alone)
 * With input = 5 (.rodata, settable) after one getppid() (trigger_nr) of target_tgid:
 *    res_sys    = mix(5) + global_square(5) = (16*2+5) + (25+5) = 67
 *    res_switch = triple_plus_one(5) + global_square(2) = 16 + 9 = 25
 * (res_switch is set by the sched_switch program, which runs on its own.)
 * Call counters hits_sys / hits_switch grow. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile __u64 input = 5;
const volatile __u32 target_tgid = 0; /* 0 = every process */
const volatile __u64 trigger_nr = 110; /* only this syscall triggers: getppid on x86-64 */

__u64 res_sys = 0;
__u64 res_switch = 0;
__u64 hits_sys = 0;
__u64 hits_switch = 0;

static __noinline __u64 triple_plus_one(__u64 x)
{
	return x * 3 + 1;
}

static __noinline __u64 mix(__u64 x)
{
	return triple_plus_one(x) * 2 + x;
}

__noinline int global_square(int x)
{
	return x * x + 5;
}

SEC("raw_tp/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if ((target_tgid && tgid != target_tgid) || id != trigger_nr)
		return 0;
	res_sys = mix(input) + global_square((int)input);
	hits_sys += 1;
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	res_switch = triple_plus_one(input) + global_square(2);
	hits_switch += 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
