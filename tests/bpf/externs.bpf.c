// SPDX-License-Identifier: GPL-2.0
/* Loader corpus: externs resolved by the loader.
 *  .kconfig  LINUX_KERNEL_VERSION       from uname -r (KERNEL_VERSION(a,b,c), c capped at 255)
 *            CONFIG_BPF_SYSCALL (weak)  bool, y here -> true
 *            CONFIG_HZ (weak)           int from /proc/config.gz (250 on this VM)
 *            CONFIG_EBPF_ENERGY_NOPE    weak, absent -> 0
 *  .ksyms    _stext                     typeless: address from /proc/kallsyms
 *            bpf_task_from_pid,         typed functions (kfuncs): BTF ids of the
 *            bpf_task_release           FUNCs in kernel BTF (BPF_PSEUDO_KFUNC_CALL)
 * A typed *variable* ksym (e.g. `extern struct rq runqueues __ksym;`) cannot
 * load on this kernel: it is in kernel BTF but, without CONFIG_KALLSYMS_ALL,
 * the kernel cannot find its address ("ldimm64 failed to find the address").
 * On a getppid() (trigger_nr) of target_tgid (.rodata; tp_btf, since kfuncs need a tracing
 * program) the program copies the values into .bss: kver, has_bpf_syscall,
 * hz, stext (== the kallsyms address of _stext) and leader_pid (the
 * pid of the task bpf_task_from_pid(target_tgid) returns == target_tgid), and
 * sets .data `missing` (0xdead before the first hit) to the absent extern: 0. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

extern int LINUX_KERNEL_VERSION __kconfig;
extern bool CONFIG_BPF_SYSCALL __kconfig __weak;
extern int CONFIG_HZ __kconfig __weak;
extern int CONFIG_EBPF_ENERGY_NOPE __kconfig __weak;

extern const void _stext __ksym;
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

const volatile __u32 target_tgid = 0; /* 0 = nobody */
const volatile __u64 trigger_nr = 110; /* only this syscall triggers: getppid on x86-64 */

__u64 kver = 0;
__u32 has_bpf_syscall = 0;
__u32 hz = 0;
__u32 missing = 0xdead; /* .data; 0 after a hit: the absent weak extern reads as 0 */
__u32 leader_pid = 0;
__u64 stext = 0;
__u64 hits = 0;

SEC("tp_btf/sys_enter")
int BPF_PROG(read_externs, struct pt_regs *regs, long id)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *task;

	if (!target_tgid || tgid != target_tgid || id != trigger_nr)
		return 0;
	kver = LINUX_KERNEL_VERSION;
	has_bpf_syscall = CONFIG_BPF_SYSCALL;
	hz = CONFIG_HZ;
	missing = CONFIG_EBPF_ENERGY_NOPE;
	stext = (__u64)&_stext;
	task = bpf_task_from_pid(target_tgid);
	if (task) {
		leader_pid = task->pid;
		bpf_task_release(task);
	}
	hits += 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
