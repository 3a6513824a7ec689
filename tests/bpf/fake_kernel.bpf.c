// SPDX-License-Identifier: GPL-2.0
/* A made-up kernel, known only by its BTF: the target of `load --dry-run --btf`
 * in tests/test_prepare.py and the golden files in tests/testdata/golden/.
 *
 * task_struct's fields sit where no real kernel has them, so every CO-RE
 * answer in the golden files comes from this file, not from the machine the
 * tests run on. Nothing here runs; the globals only make clang emit the types.
 */
typedef int s32;
typedef unsigned int u32;
typedef _Bool bool;

struct pt_regs { unsigned long di, si, dx; };

struct task_struct {
	long state;                         /* 0 */
	s32 pid;                            /* 8 */
	s32 tgid;                           /* 12 */
	struct task_struct *real_parent;    /* 16 */
	char comm[16];                      /* 24 */
};

/* what tp_btf/<name> attaches to: the typedef btf_trace_<name> */
typedef void (*btf_trace_sys_enter)(void *, struct pt_regs *, long);
typedef void (*btf_trace_sched_switch)(void *, bool, struct task_struct *, struct task_struct *, unsigned int);

/* kfuncs: FUNCs in the kernel's BTF */
struct task_struct *bpf_task_from_pid(s32 pid) { return (struct task_struct *)0; }
void bpf_task_release(struct task_struct *p) { }

btf_trace_sys_enter fake_sys_enter;
btf_trace_sched_switch fake_sched_switch;
struct task_struct fake_task;
