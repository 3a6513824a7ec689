"""``xdp``: a program on an interface's receive path, through an XDP link.

The driver runs it (native mode) when it can, else the kernel's generic
path does (``lo``, most virtual devices). The link is an fd: unlike the
netlink way, nothing stays on the interface when the process ends.
"""

import errno

from .. import uapi
from ..errors import AttachError
from .base import create
from .tcx import ifindex_of

BPF_XDP = uapi.BPF_XDP
XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = uapi.XDP_FLAGS_SKB_MODE, uapi.XDP_FLAGS_DRV_MODE


def attach_xdp(prog_fd, interface, mode=None):
    """The program on ``interface``; ``mode`` "generic" or "native" forces one."""
    flags = {None: 0, "generic": XDP_FLAGS_SKB_MODE, "native": XDP_FLAGS_DRV_MODE}[mode]
    try:
        return create("xdp", prog_fd, ifindex_of(interface), BPF_XDP, f"xdp on {interface}", flags=flags)
    except AttachError as e:
        if mode == "native" and getattr(e.__cause__, "errno", None) in (errno.EOPNOTSUPP, uapi.ENOTSUPP):
            # the kernel's own reason here is the driver, not the program or the link type
            raise AttachError(f"cannot attach xdp on {interface} in native mode: its driver has no native XDP "
                              "(use --xdp-mode generic, or auto)") from None
        raise
