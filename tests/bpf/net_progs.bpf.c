// SPDX-License-Identifier: GPL-2.0
/* One program per networking attach kind, for tests/test_links_net.py. Each
 * counts the IPv4 UDP datagrams to .rodata `port` it sees and lets every
 * packet through, so a test that sends N datagrams over loopback (inside a
 * network namespace of its own, or from a process in a test cgroup) expects
 * exactly N in each counter.
 * - count_socket  SEC("socket")              socket filter (SO_ATTACH_BPF)
 * - count_tcx     SEC("tcx/ingress")         tcx link on lo
 * - count_tc      SEC("tc")                  the older section name: a tcx link too (egress here)
 * - count_xdp     SEC("xdp")                 xdp link on lo (generic mode)
 * - count_cgroup  SEC("cgroup_skb/egress")   cgroup link
 * - count_lookup  SEC("sk_lookup")           netns link
 * - count_nf      SEC("netfilter")           netfilter link, ipv4 LOCAL_OUT */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#define ETH_P_IP 0x0800
#define ETH_HLEN 14

const volatile __u16 port = 0; /* host byte order */

__u64 socket_pkts = 0, tcx_pkts = 0, tc_pkts = 0, xdp_pkts = 0, cgroup_pkts = 0, lookups = 0, nf_pkts = 0;

/* skb's network header: is it IPv4 UDP to `port`? (relative to the network
 * header, wherever skb->data points at this hook) */
static __always_inline int udp_to_port(struct __sk_buff *skb)
{
	struct iphdr ip;
	struct udphdr udp;

	if (bpf_skb_load_bytes_relative(skb, 0, &ip, sizeof(ip), BPF_HDR_START_NET) || ip.version != 4 ||
	    ip.protocol != IPPROTO_UDP)
		return 0;
	if (bpf_skb_load_bytes_relative(skb, ip.ihl * 4, &udp, sizeof(udp), BPF_HDR_START_NET))
		return 0;
	return bpf_ntohs(udp.dest) == port;
}

SEC("socket")
int count_socket(struct __sk_buff *skb)
{
	if (udp_to_port(skb))
		__sync_fetch_and_add(&socket_pkts, 1);
	return skb->len;
}

SEC("tcx/ingress")
int count_tcx(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IP) && udp_to_port(skb))
		__sync_fetch_and_add(&tcx_pkts, 1);
	return -1; /* TCX_NEXT: on to the rest of the chain */
}

SEC("tc")
int count_tc(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IP) && udp_to_port(skb))
		__sync_fetch_and_add(&tc_pkts, 1);
	return -1;
}

SEC("xdp")
int count_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;
	struct udphdr *udp;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	udp = (void *)ip + ip->ihl * 4;
	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	if (bpf_ntohs(udp->dest) == port)
		__sync_fetch_and_add(&xdp_pkts, 1);
	return XDP_PASS;
}

SEC("cgroup_skb/egress")
int count_cgroup(struct __sk_buff *skb)
{
	if (udp_to_port(skb))
		__sync_fetch_and_add(&cgroup_pkts, 1);
	return 1; /* allow */
}

SEC("sk_lookup")
int count_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->family == 2 /* AF_INET */ && ctx->protocol == IPPROTO_UDP && ctx->local_port == port)
		__sync_fetch_and_add(&lookups, 1);
	return SK_PASS;
}

SEC("netfilter")
int count_nf(struct bpf_nf_ctx *ctx)
{
	struct sk_buff *skb = ctx->skb;
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	struct iphdr ip;
	struct udphdr udp;

	if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) || ip.protocol != IPPROTO_UDP)
		return 1;
	if (bpf_probe_read_kernel(&udp, sizeof(udp), head + nh + ip.ihl * 4))
		return 1;
	if (bpf_ntohs(udp.dest) == port)
		__sync_fetch_and_add(&nf_pkts, 1);
	return 1; /* NF_ACCEPT */
}

char LICENSE[] SEC("license") = "GPL";
