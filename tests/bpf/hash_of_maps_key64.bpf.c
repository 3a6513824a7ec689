// SPDX-License-Identifier: GPL-2.0
/* A hash of maps with 8-byte keys and an initial slot, for
 * tests/test_map_in_map_hash.py: the kernel would take it, but libbpf
 * refuses initial slots in a hash of maps whose key is not 4 bytes (the
 * slot index is an int), and so does this loader, with the same rule.
 * hash_of_maps_wide.bpf.c has the same map without a slot: fine for both. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct counter_def {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
};

struct counter_def only SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u64);
	__array(values, struct counter_def);
} wide SEC(".maps") = {
	.values = { [3] = &only },
};

char LICENSE[] SEC("license") = "GPL";
