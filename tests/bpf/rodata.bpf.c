// SPDX-License-Identifier: GPL-2.0
/* Loader corpus: `const volatile` settings in .rodata, set by user space
 * before load (the map is frozen and the verifier folds the values).
 * On each getppid() (trigger_nr) of `target_tgid` the program computes
 *     out_value = (enabled ? 7 * multiplier + offset : 0)
 * copies `tag` into out_tag and its length into out_tag_len, and counts
 * calls in out_calls. Defaults give out_value = 7*2+100 = 114, tag "default"
 * (length 7); a test changes them and checks the .bss outputs, and checks that
 * enabled=false leaves out_value 0. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile __u32 target_tgid = 0; /* 0 = every process */
const volatile __u64 trigger_nr = 110; /* only this syscall triggers: getppid on x86-64 */
const volatile __u32 multiplier = 2;
const volatile __u64 offset = 100;
const volatile bool enabled = true;
const volatile char tag[16] = "default";

__u64 out_value = 0;
__u64 out_calls = 0;
__u32 out_tag_len = 0;
char out_tag[16] = {};

SEC("raw_tp/sys_enter")
int BPF_PROG(use_settings, struct pt_regs *regs, long id)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 len = 0;
	int i;

	if ((target_tgid && tgid != target_tgid) || id != trigger_nr)
		return 0;
	out_calls += 1;
	out_value = enabled ? 7 * (__u64)multiplier + offset : 0;
	for (i = 0; i < 16; i++) {
		out_tag[i] = tag[i];
		if (tag[i] && len == (__u32)i)
			len = i + 1;
	}
	out_tag_len = len;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
