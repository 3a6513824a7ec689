// SPDX-License-Identifier: GPL-2.0
/* struct_ops: two TCP congestion controls built from the same programs,
 *  spec_cc       SEC(".struct_ops"):      registered by writing the map
 *  spec_cc_link  SEC(".struct_ops.link"): registered through a BPF link
 * Each appears in /proc/sys/net/ipv4/tcp_available_congestion_control while
 * the object is attached and is gone after close. `unused_op` is a
 * struct_ops program no map uses: not loaded (as libbpf). The `flags` member
 * is copied into the kernel's value by name. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("struct_ops/ssthresh")
__u32 BPF_PROG(spec_ssthresh, struct sock *sk)
{
	return 10;
}

SEC("struct_ops/cong_avoid")
void BPF_PROG(spec_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
}

SEC("struct_ops/undo_cwnd")
__u32 BPF_PROG(spec_undo_cwnd, struct sock *sk)
{
	return 10;
}

SEC("struct_ops/init")
void BPF_PROG(unused_op, struct sock *sk)
{
}

SEC(".struct_ops")
struct tcp_congestion_ops spec_cc = {
	.ssthresh = (void *)spec_ssthresh,
	.cong_avoid = (void *)spec_cong_avoid,
	.undo_cwnd = (void *)spec_undo_cwnd,
	.name = "spec_cc",
};

SEC(".struct_ops.link")
struct tcp_congestion_ops spec_cc_link = {
	.ssthresh = (void *)spec_ssthresh,
	.cong_avoid = (void *)spec_cong_avoid,
	.undo_cwnd = (void *)spec_undo_cwnd,
	.name = "spec_cc_link",
};

char LICENSE[] SEC("license") = "GPL";
