// SPDX-License-Identifier: GPL-2.0
/* A hash of maps with 8-byte keys and no initial slots, for
 * tests/test_map_in_map_hash.py: fine for libbpf and this loader (only
 * initial slots need the 4-byte key). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct counter_def {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u64);
	__array(values, struct counter_def);
} wide_empty SEC(".maps");

char LICENSE[] SEC("license") = "GPL";
