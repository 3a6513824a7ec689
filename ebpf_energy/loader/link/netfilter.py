"""``netfilter``: a program on a netfilter hook, through a netfilter link.

The hook is a protocol family (NFPROTO_IPV4, NFPROTO_IPV6), a hook number
(NF_INET_PRE_ROUTING .. NF_INET_POST_ROUTING) and a priority, in the
caller's network namespace; the program returns NF_DROP (0) or NF_ACCEPT (1).
"""

import struct

from .. import uapi
from ..errors import AttachError
from .base import create

BPF_NETFILTER = uapi.BPF_NETFILTER
FAMILIES = {"ipv4": uapi.NFPROTO_IPV4, "ipv6": uapi.NFPROTO_IPV6}
HOOKS = {"prerouting": uapi.NF_INET_PRE_ROUTING, "input": uapi.NF_INET_LOCAL_IN, "forward": uapi.NF_INET_FORWARD,
         "output": uapi.NF_INET_LOCAL_OUT, "postrouting": uapi.NF_INET_POST_ROUTING}
# a #define of linux/bpf.h newer than this machine's linux-libc-dev (and BTF has no #defines):
# abi_gen takes it from the header once the header has it
BPF_F_NETFILTER_IP_DEFRAG = getattr(uapi, "BPF_F_NETFILTER_IP_DEFRAG", 1)


def attach_netfilter(prog_fd, family="ipv4", hook="output", priority=0, defrag=False):
    """The program on netfilter hook ``family``/``hook`` at ``priority``."""
    if family not in FAMILIES or hook not in HOOKS:
        raise AttachError(f"netfilter hook {family}/{hook}: family is one of {', '.join(FAMILIES)}, "
                          f"hook one of {', '.join(HOOKS)}")
    tail = struct.pack("<IIiI", FAMILIES[family], HOOKS[hook], priority, BPF_F_NETFILTER_IP_DEFRAG if defrag else 0)
    return create("netfilter", prog_fd, 0, BPF_NETFILTER, f"netfilter {family}/{hook} priority {priority}", tail)
