// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Viaduct's XDP program: an IPv4/IPv6 UDP datagram for the bridge's address and for a
// port of the socket that owns this receive queue (a bridge worker's one port, or a load
// generator's range) goes to that AF_XDP socket (XSKMAP slot = queue index); everything
// else -- ARP/ND, other ports, fragments, IP
// options, IPv6 extension headers, VLAN tags, a queue with no socket -- is XDP_PASS.
// Built by bridge/build.rs with clang (cargo feature `xdp`); loaded and attached by
// bridge/src/io/xdp/program.rs (aya, bpf_link).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 256

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// Ports (host order) of the socket serving each queue: first | last << 16; 0 = none.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} queue_ports SEC(".maps");

// Set by the loader: 4 or 6, and the bridge's address (network byte order words).
volatile const __u32 family = 4;
volatile const __u32 addr4 = 0;
volatile const __u32 addr6[4] = {0, 0, 0, 0};

SEC("xdp")
int viaduct_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if (family != 4 || (void *)(ip + 1) > end)
			return XDP_PASS;
		if (ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
		    (ip->frag_off & bpf_htons(0x3fff)) || ip->daddr != addr4)
			return XDP_PASS;
		udp = (void *)(ip + 1);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if (family != 6 || (void *)(ip6 + 1) > end)
			return XDP_PASS;
		if (ip6->nexthdr != IPPROTO_UDP ||
		    ip6->daddr.in6_u.u6_addr32[0] != addr6[0] ||
		    ip6->daddr.in6_u.u6_addr32[1] != addr6[1] ||
		    ip6->daddr.in6_u.u6_addr32[2] != addr6[2] ||
		    ip6->daddr.in6_u.u6_addr32[3] != addr6[3])
			return XDP_PASS;
		udp = (void *)(ip6 + 1);
	} else {
		return XDP_PASS;
	}
	if ((void *)(udp + 1) > end)
		return XDP_PASS;

	__u32 queue = ctx->rx_queue_index;
	__u32 *ports = bpf_map_lookup_elem(&queue_ports, &queue);
	if (!ports || *ports == 0)
		return XDP_PASS;
	__u32 dport = bpf_ntohs(udp->dest);
	if (dport < (*ports & 0xffff) || dport > (*ports >> 16))
		return XDP_PASS; // another worker's port on this queue: the kernel socket gets it
	return bpf_redirect_map(&xsks, queue, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
