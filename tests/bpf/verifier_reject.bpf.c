// SPDX-License-Identifier: GPL-2.0
/* Loader corpus: one program the verifier rejects, one it accepts.
 * `bad_deref` dereferences a map lookup result without a NULL check; the
 * kernel says "R0 invalid mem access 'map_value_or_null'" at the line marked
 * REJECT_HERE, which the verifier log quotes through the object's line info.
 * `good_prog` is fine, so loading with --program good_prog must succeed and
 * loading everything must fail naming bad_deref, after cleaning up. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* A hash, not an array: since 6.x the verifier knows an array lookup with a
 * constant in-range key cannot return NULL, so that would be accepted. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} values SEC(".maps");

SEC("raw_tp/sys_enter")
int bad_deref(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&values, &key);

	return *v > 0; /* REJECT_HERE */
}

SEC("raw_tp/sys_enter")
int good_prog(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&values, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
