// SPDX-License-Identifier: GPL-2.0
/* Externs libbpf resolves that are not config lines or plain symbols:
 *  LINUX_HAS_BPF_COOKIE, LINUX_HAS_SYSCALL_WRAPPER  virtual __kconfig (1 on this kernel)
 *  LINUX_HAS_NO_SUCH_THING (weak)                    unknown virtual: 0
 *  bpf_task_from_pid (weak kfunc, present)           bpf_ksym_exists() true (its BTF id), called
 *  bpf_spec_no_such_kfunc (weak kfunc, missing)      bpf_ksym_exists() false; its guarded call is
 *                                                    poisoned, never reached
 *  _stext (extern void, no const)                    the kallsyms address
 * On a getppid() (trigger_nr) of target_tgid the tp_btf program copies them
 * into .bss. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#ifndef bpf_ksym_exists /* libbpf-dev before 1.2 lacks it: the same test of the address */
#define bpf_ksym_exists(sym) (!!(sym))
#endif

extern bool LINUX_HAS_BPF_COOKIE __kconfig;
extern bool LINUX_HAS_SYSCALL_WRAPPER __kconfig;
extern int LINUX_HAS_NO_SUCH_THING __kconfig __weak;

extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym __weak;
extern void bpf_task_release(struct task_struct *p) __ksym;
extern int bpf_spec_no_such_kfunc(int x) __ksym __weak;
extern void _stext __ksym;

const volatile __u32 target_tgid = 0;
const volatile __u64 trigger_nr = 110;

__u32 has_cookie = 7, has_wrapper = 7, no_such_thing = 7;
__u32 has_task_from_pid = 7, has_missing = 7, leader_pid = 0;
__u64 stext = 0, hits = 0;
int missing_ret = 0;

SEC("tp_btf/sys_enter")
int BPF_PROG(read_features, struct pt_regs *regs, long id)
{
	struct task_struct *task;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid || id != trigger_nr)
		return 0;
	has_cookie = LINUX_HAS_BPF_COOKIE;
	has_wrapper = LINUX_HAS_SYSCALL_WRAPPER;
	no_such_thing = LINUX_HAS_NO_SUCH_THING;
	has_task_from_pid = bpf_ksym_exists(bpf_task_from_pid);
	has_missing = bpf_ksym_exists(bpf_spec_no_such_kfunc);
	if (bpf_ksym_exists(bpf_spec_no_such_kfunc))
		missing_ret = bpf_spec_no_such_kfunc(1);
	if (bpf_ksym_exists(bpf_task_from_pid)) {
		task = bpf_task_from_pid(target_tgid);
		if (task) {
			leader_pid = task->pid;
			bpf_task_release(task);
		}
	}
	stext = (__u64)&_stext;
	hits += 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
