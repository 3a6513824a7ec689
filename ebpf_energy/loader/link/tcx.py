"""``tcx/ingress``, ``tcx/egress`` (and ``tc``): traffic control programs
through a tcx link on an interface (6.6+).

A tcx link is an fd like any other: no qdisc, no netlink filter, nothing
left on the interface when the process ends. ``SEC("tc")`` programs are
sched_cls programs too and attach the same way; the direction is given.
"""

import socket
import struct

from .. import uapi
from .base import create

BPF_TCX_INGRESS, BPF_TCX_EGRESS = uapi.BPF_TCX_INGRESS, uapi.BPF_TCX_EGRESS
DIRECTIONS = {"ingress": BPF_TCX_INGRESS, "egress": BPF_TCX_EGRESS}


def ifindex_of(interface):
    """An interface name or index -> index (in the caller's network namespace)."""
    if isinstance(interface, int):
        return interface
    from ..errors import AttachError
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise AttachError(f"no network interface {interface!r} in this network namespace") from None


def attach_tcx(prog_fd, interface, direction="ingress"):
    """The program on ``interface``'s tcx ``direction`` (ingress or egress), last in its chain."""
    ifindex = ifindex_of(interface)
    tail = struct.pack("<IQ", 0, 0)  # relative_fd, expected_revision: append, any revision
    return create("tcx", prog_fd, ifindex, DIRECTIONS[direction], f"tcx/{direction} on {interface}", tail)
