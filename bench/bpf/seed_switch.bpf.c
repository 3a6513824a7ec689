// SPDX-License-Identifier: GPL-2.0
/* Benchmark baseline: what the seed-style monitor costs per switch (target:
 * energy_monitor <= 0.5x this). The seed's shape, written anew: a perf
 * tracepoint (tp/sched/sched_switch), a per-CPU hash of start times keyed by
 * pid, a per-CPU hash of totals keyed by pid, and a ring-buffer event with the
 * comm for every switch-out. Also the "seed-style object with a tp/ program"
 * of the load benchmark. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct seed_event {
	__u64 ts;
	__u64 runtime_ns;
	__u32 cpu;
	__u32 pid;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, __u64);
} start_time SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, __u64);
} total_time SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} rb SEC(".maps");

SEC("tp/sched/sched_switch")
int seed_switch(struct trace_event_raw_sched_switch *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 prev = ctx->prev_pid, next = ctx->next_pid;
	__u64 *since, *total, delta;
	struct seed_event *e;

	since = bpf_map_lookup_elem(&start_time, &prev);
	if (since) {
		delta = now - *since;
		total = bpf_map_lookup_elem(&total_time, &prev);
		if (total)
			*total += delta;
		else
			bpf_map_update_elem(&total_time, &prev, &delta, BPF_ANY);
		e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
		if (e) {
			e->ts = now;
			e->runtime_ns = delta;
			e->cpu = bpf_get_smp_processor_id();
			e->pid = prev;
			bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), ctx->prev_comm);
			bpf_ringbuf_submit(e, 0);
		}
	}
	bpf_map_update_elem(&start_time, &next, &now, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
