// SPDX-License-Identifier: GPL-2.0
/* SEC("perf_event") for tests/test_links_iter_perf.py: every sample of a
 * software cpu-clock event counts in this CPU's slot of `samples` and
 * records the event's sample period and the CPU it ran on. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct sample_seen {
	__u64 count;
	__u64 period;
	__u32 cpu;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sample_seen);
} samples SEC(".maps");

SEC("perf_event")
int on_sample(struct bpf_perf_event_data *ctx)
{
	__u32 zero = 0;
	struct sample_seen *s = bpf_map_lookup_elem(&samples, &zero);

	if (!s)
		return 0;
	s->count++;
	s->period = ctx->sample_period;
	s->cpu = bpf_get_smp_processor_id();
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
