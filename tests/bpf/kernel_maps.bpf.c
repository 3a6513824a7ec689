// SPDX-License-Identifier: GPL-2.0
/* Maps the kernel creates only on its own terms:
 *  sockmap, sockhash, devmap, cpumap, xskmap, queue, stack: declared with
 *    __type(key/value) as examples do, but the kernel refuses BTF key/value
 *    ids for them, so the loader leaves the ids out (libbpf's rule)
 *  bloom: BPF_MAP_TYPE_BLOOM_FILTER with __ulong(map_extra, 3) (3 hash
 *    functions), passed in BPF_MAP_CREATE's map_extra
 * (A 64-bit map_extra is an enum64 in BTF, which clang 14 does not emit: the
 * parse of one is tested on hand-made BTF.)
 * `peek` (raw_tp/sys_enter, acts for target_tgid's getppid only) uses the
 * queue, so the object also loads a program against them. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#ifndef __ulong /* libbpf-dev before 1.3 lacks it */
#define SPEC_CAT2(a, b) a##b
#define SPEC_CAT(a, b) SPEC_CAT2(a, b)
#define __ulong(name, val) enum { SPEC_CAT(__unique_value, __COUNTER__) = val } name
#endif

struct { __uint(type, BPF_MAP_TYPE_SOCKMAP); __uint(max_entries, 2); __type(key, __u32); __type(value, __u64); } socks SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_SOCKHASH); __uint(max_entries, 2); __type(key, __u32); __type(value, __u64); } sock_hash SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_DEVMAP); __uint(max_entries, 2); __type(key, __u32); __type(value, __u32); } devs SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_CPUMAP); __uint(max_entries, 2); __type(key, __u32); __type(value, __u32); } cpus SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_XSKMAP); __uint(max_entries, 2); __type(key, __u32); __type(value, __u32); } xsks SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_QUEUE); __uint(max_entries, 4); __type(value, __u64); } fifo SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_STACK); __uint(max_entries, 4); __type(value, __u64); } lifo SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 16);
	__type(value, __u32);
	__ulong(map_extra, 3);
} bloom SEC(".maps");

const volatile __u32 target_tgid = 0;
__u64 peeked = 0;

SEC("raw_tp/sys_enter")
int peek(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 v;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid || ctx->args[1] != 110)
		return 0;
	if (bpf_map_peek_elem(&fifo, &v) == 0)
		peeked = v;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
