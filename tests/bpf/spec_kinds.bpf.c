// SPDX-License-Identifier: GPL-2.0
/* The section table: one program per section whose load the kernel checks
 * against an expected attach type or a load flag. Each loads only if the
 * loader passes what its section means:
 *  cgroup/connect4, cgroup/getsockopt, cgroup/post_bind4, cgroup/sysctl,
 *  cgroup/dev, sk_lookup, sk_msg, sk_skb/stream_parser, sockops,
 *  flow_dissector, xdp.frags (BPF_F_XDP_HAS_FRAGS), xdp/devmap, netfilter,
 *  iter.s/task (BPF_F_SLEEPABLE: bpf_copy_from_user is for sleepable programs only)
 * `optional_tp`, SEC("?tp/syscalls/sys_enter_getppid"), is off by default and
 * loads with --program. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("cgroup/connect4")
int on_connect4(struct bpf_sock_addr *ctx) { return ctx->user_port ? 1 : 1; }

SEC("cgroup/getsockopt")
int on_getsockopt(struct bpf_sockopt *ctx) { return 1; }

SEC("cgroup/post_bind4")
int on_post_bind4(struct bpf_sock *sk) { return 1; }

SEC("cgroup/sysctl")
int on_sysctl(struct bpf_sysctl *ctx) { return 1; }

SEC("cgroup/dev")
int on_dev(struct bpf_cgroup_dev_ctx *ctx) { return 1; }

SEC("sk_lookup")
int on_lookup(struct bpf_sk_lookup *ctx) { return SK_PASS; }

SEC("sk_msg")
int on_msg(struct sk_msg_md *msg) { return SK_PASS; }

SEC("sk_skb/stream_parser")
int on_parse(struct __sk_buff *skb) { return skb->len; }

SEC("sockops")
int on_sockops(struct bpf_sock_ops *ops) { return 1; }

SEC("flow_dissector")
int on_dissect(struct __sk_buff *skb) { return BPF_OK; }

SEC("xdp.frags")
int on_xdp_frags(struct xdp_md *ctx) { return XDP_PASS; }

SEC("xdp/devmap")
int on_devmap(struct xdp_md *ctx) { return XDP_PASS; }

SEC("netfilter")
int on_netfilter(struct bpf_nf_ctx *ctx) { return 1; /* NF_ACCEPT */ }

SEC("iter.s/task")
int sleepy_iter(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	char buf[8];

	if (task)
		bpf_copy_from_user(buf, sizeof(buf), (void *)0);
	return 0;
}

__u64 optional_hits = 0;

SEC("?tp/syscalls/sys_enter_getppid")
int optional_tp(void *ctx)
{
	__sync_fetch_and_add(&optional_hits, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
