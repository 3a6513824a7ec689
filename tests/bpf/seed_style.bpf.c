// SPDX-License-Identifier: GPL-2.0
/* Loader corpus: an object in the style of the seed tutorial's monitor
 * (written anew; it keeps the seed's *shape*, including its accounting faults,
 * because it stands for "what users already run"):
 *  - tp/sched/sched_switch with a `struct trace_event_raw_sched_switch *` ctx
 *    (perf tracepoint attach: needs tracefs for the event id);
 *  - two PERCPU_HASH maps keyed by pid: when each pid went on CPU, and its
 *    accumulated run time;
 *  - a RINGBUF event per switch-out, comm read with bpf_probe_read_kernel_str;
 *  - `const volatile bool verbose` gating bpf_printk (.rodata + .rodata.str1.1);
 *  - tracepoint/sched/sched_process_exit dropping the pid's entries.
 * A test attaches it, sleeps a little and checks that run_time has entries,
 * that events arrive on `events` with a plausible comm, and that exits_seen
 * grows when a child exits. Also the load benchmark's seed-style object. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct switch_event {
	__u64 ts_ns;
	__u64 ran_ns;
	__u32 cpu;
	__u32 pid;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);   /* pid */
	__type(value, __u64); /* when it went on CPU */
} on_cpu_since SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);   /* pid */
	__type(value, __u64); /* total ns */
} run_time SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

const volatile bool verbose = false;

__u64 exits_seen = 0;
struct switch_event layout = {}; /* keeps the event type in BTF for decoders */

SEC("tp/sched/sched_switch")
int handle_switch(struct trace_event_raw_sched_switch *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 prev = ctx->prev_pid, next = ctx->next_pid;
	__u64 *since, *total, ran;
	struct switch_event *e;

	since = bpf_map_lookup_elem(&on_cpu_since, &prev);
	if (since) {
		ran = now - *since;
		total = bpf_map_lookup_elem(&run_time, &prev);
		if (total)
			*total += ran;
		else
			bpf_map_update_elem(&run_time, &prev, &ran, BPF_ANY);

		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (e) {
			e->ts_ns = now;
			e->ran_ns = ran;
			e->cpu = bpf_get_smp_processor_id();
			e->pid = prev;
			bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), ctx->prev_comm);
			bpf_ringbuf_submit(e, 0);
		}
		if (verbose)
			bpf_printk("switch out pid=%u ran=%llu ns", prev, ran);
	}
	bpf_map_update_elem(&on_cpu_since, &next, &now, BPF_ANY);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int handle_exit(struct trace_event_raw_sched_process_template *ctx)
{
	__u32 pid = ctx->pid;

	__sync_fetch_and_add(&exits_seen, 1);
	bpf_map_delete_elem(&on_cpu_since, &pid);
	bpf_map_delete_elem(&run_time, &pid);
	if (verbose)
		bpf_printk("exit pid=%u", pid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
