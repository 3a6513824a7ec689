// SPDX-License-Identifier: GPL-2.0
/* Iterators for tests/test_links_iter_perf.py.
 * - dump_tasks, SEC("iter/task"): one line "tgid pid comm" per thread.
 * - dump_maps, SEC("iter/bpf_map"): one line "id max_entries name" per map.
 * - dump_cgroups, SEC("iter/cgroup"): one line "id level" per cgroup walked
 *   from the cgroup given at attach (its id is its directory's inode). 
 * (Map-element iterators, iter/bpf_map_elem, get EPERM at load on this
 * kernel, from libbpf too: iter_map_elem.bpf.c and
 * tests/test_links_iter_map_elem.py check the error.) */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 77);
	__type(key, __u32);
	__type(value, __u64);
} numbers SEC(".maps");

SEC("iter/task")
int dump_tasks(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;

	if (!task)
		return 0;
	BPF_SEQ_PRINTF(seq, "%d %d %s\n", task->tgid, task->pid, task->comm);
	return 0;
}

SEC("iter/bpf_map")
int dump_maps(struct bpf_iter__bpf_map *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct bpf_map *map = ctx->map;

	if (!map) /* the end: one call with no map */
		return 0;
	BPF_SEQ_PRINTF(seq, "%u %u %s\n", map->id, map->max_entries, map->name);
	return 0;
}

SEC("iter/cgroup")
int dump_cgroups(struct bpf_iter__cgroup *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct cgroup *cgrp = ctx->cgroup;

	if (!cgrp)
		return 0;
	BPF_SEQ_PRINTF(seq, "%llu %d\n", cgrp->kn->id, cgrp->level);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
