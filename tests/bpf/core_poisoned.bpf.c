// SPDX-License-Identifier: GPL-2.0
/* A CO-RE read of a field this kernel does not have, left unguarded: the
 * loader poisons the instruction, the verifier reaches it, and the error must
 * name the relocation (program, instruction, type and field), not only the
 * verifier's "unknown#195896080". */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct___no_such {
	int no_such_field;
} __attribute__((preserve_access_index));

__u64 seen = 0;

SEC("tp_btf/sched_process_exec")
int read_missing(void *ctx)
{
	struct task_struct___no_such *t = (void *)bpf_get_current_task_btf();

	seen += BPF_CORE_READ(t, no_such_field);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
