"""``xdp``: a program on an interface's receive path, through an XDP link.

The driver runs it (native mode) when it can, else the kernel's generic
path does (``lo``, most virtual devices). The link is an fd: unlike the
netlink way, nothing stays on the interface when the process ends.
"""

from .. import uapi
from .base import create
from .tcx import ifindex_of

BPF_XDP = uapi.BPF_XDP
XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = uapi.XDP_FLAGS_SKB_MODE, uapi.XDP_FLAGS_DRV_MODE


def attach_xdp(prog_fd, interface, mode=None):
    """The program on ``interface``; ``mode`` "generic" or "native" forces one."""
    flags = {None: 0, "generic": XDP_FLAGS_SKB_MODE, "native": XDP_FLAGS_DRV_MODE}[mode]
    return create("xdp", prog_fd, ifindex_of(interface), BPF_XDP, f"xdp on {interface}", flags=flags)
