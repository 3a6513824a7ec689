// SPDX-License-Identifier: GPL-2.0
/* Map-element iterators, for tests/test_links_iter_perf.py: this kernel
 * refuses all three at BPF_PROG_LOAD with EPERM, even to root and from
 * libbpf, before verifying an instruction; the test checks the sentence
 * that says so. (dump_elems would print "key value" per element of
 * `numbers`; the other two return at once, and are refused all the same.)
 * - dump_elems    SEC("iter/bpf_map_elem")
 * - walk_storage  SEC("iter/bpf_sk_storage_map")
 * - walk_sockmap  SEC("iter/sockmap") */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} numbers SEC(".maps");

SEC("iter/bpf_map_elem")
int dump_elems(struct bpf_iter__bpf_map_elem *ctx)
{
	__u32 *key = ctx->key;
	__u64 *value = ctx->value;

	if (!key || !value)
		return 0;
	BPF_SEQ_PRINTF(ctx->meta->seq, "%u %llu\n", *key, *value);
	return 0;
}

SEC("iter/bpf_sk_storage_map")
int walk_storage(struct bpf_iter__bpf_sk_storage_map *ctx)
{
	return 0;
}

SEC("iter/sockmap")
int walk_sockmap(struct bpf_iter__sockmap *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
