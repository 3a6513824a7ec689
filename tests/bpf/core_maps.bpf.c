// SPDX-License-Identifier: GPL-2.0
/* Pure-phase fixture for ELF/BTF/map-definition tests: BTF-defined maps of
 * several shapes, every kind of global data (.rodata, .data, .bss, a custom
 * .data.* section and string literals in .rodata.str1.1), several programs
 * in one section, and static and global subprograms in .text.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct pair {
	__u32 pid;
	__u32 tgid;
	__u64 runtime_ns;
	char comm[16];
	unsigned int flag_a : 1;
	unsigned int level : 4;
	int delta : 6;
	bool seen;
	enum { MODE_A = 1, MODE_B = 7 } mode;
	__s16 temps[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct pair);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__uint(key_size, 4);
	__uint(value_size, 8);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, int);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(numa_node, 0);
} pinned_arr SEC(".maps");

const volatile __u32 target_pid = 0;
const volatile bool verbose = false;
__u64 hits = 0;
__u64 misses = 3;
__u32 custom_counter SEC(".data.custom") = 7;
char scratch[32];
int zeroed;

static __attribute__((noinline)) __u64 helper_static(__u64 x)
{
	return x * 3 + hits;
}

__attribute__((noinline)) int helper_global(int x)
{
	return x + (int)misses;
}

SEC("tp/sched/sched_switch")
int on_switch_a(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&counters, &key);

	if (v)
		*v += helper_static(target_pid);
	if (verbose)
		bpf_printk("switch %d", helper_global(zeroed));
	hits++;
	return 0;
}

SEC("tp/sched/sched_switch")
int on_switch_b(void *ctx)
{
	struct pair p = {};

	p.pid = custom_counter;
	scratch[0] = 1;
	bpf_map_update_elem(&pairs, &p.pid, &p, BPF_ANY);
	bpf_printk("second %s", "literal");
	return helper_global(1);
}

SEC("raw_tp/sched_process_exit")
int on_exit(void *ctx)
{
	misses++;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
__u32 _version SEC("version") = 0x060c00;
