// SPDX-License-Identifier: GPL-2.0
/* Loader corpus: CO-RE reads of task_struct through BPF_CORE_READ.
 * On each getppid() (trigger_nr) made by `target_pid` (a tgid, .rodata) the program
 * reads the current task's pid, tgid, comm and real_parent->tgid with CO-RE
 * relocated probe reads and stores them in .bss and in a hash keyed by tid.
 * A test compares them with os.getpid(), os.getppid(), threading.get_native_id()
 * and the process name. The bpf_core_field_* calls add field-exists and
 * field-size relocations, so all three kinds round-trip. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

struct task_seen {
	__u32 pid;          /* task_struct.pid: the thread id */
	__u32 tgid;         /* task_struct.tgid: the process id */
	__u32 parent_tgid;  /* real_parent->tgid: os.getppid() */
	__u32 comm_size;    /* bpf_core_field_size(task->comm): 16 */
	__u32 has_pid;      /* bpf_core_field_exists(task->pid): 1 */
	__u32 calls;        /* getppid() calls seen from this thread */
	char comm[16];
};

const volatile int target_pid = 0; /* tgid to watch; 0 = watch nobody */
const volatile __u64 trigger_nr = 110; /* only this syscall triggers: getppid on x86-64 */

struct task_seen last = {}; /* .bss: the most recent record */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);               /* tid */
	__type(value, struct task_seen);
} seen SEC(".maps");

SEC("raw_tp/sys_enter")
int BPF_PROG(read_task, struct pt_regs *regs, long id)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_seen rec = {}, *old;
	__u32 tgid = BPF_CORE_READ(task, tgid);

	if (target_pid == 0 || tgid != (__u32)target_pid || id != trigger_nr)
		return 0;
	rec.pid = BPF_CORE_READ(task, pid);
	rec.tgid = tgid;
	rec.parent_tgid = BPF_CORE_READ(task, real_parent, tgid);
	rec.comm_size = bpf_core_field_size(task->comm);
	rec.has_pid = bpf_core_field_exists(task->pid);
	BPF_CORE_READ_STR_INTO(&rec.comm, task, comm);
	old = bpf_map_lookup_elem(&seen, &rec.pid);
	rec.calls = old ? old->calls + 1 : 1;
	bpf_map_update_elem(&seen, &rec.pid, &rec, BPF_ANY);
	last = rec;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
