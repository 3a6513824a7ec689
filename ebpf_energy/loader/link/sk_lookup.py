"""``sk_lookup``: a program that picks the socket for new connections and
datagrams in one network namespace, through a netns link."""

import os

from .. import uapi
from ..errors import AttachError
from .base import create

BPF_SK_LOOKUP = uapi.BPF_SK_LOOKUP
BPF_FLOW_DISSECTOR = uapi.BPF_FLOW_DISSECTOR


def attach_netns(prog_fd, netns="/proc/self/ns/net", attach_type=BPF_SK_LOOKUP, section="sk_lookup"):
    """The program on the network namespace at ``netns`` (a path or an fd;
    default this thread's own)."""
    fd = netns
    if not isinstance(netns, int):
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise AttachError(f"cannot open network namespace {netns}: {e.strerror}") from None
    try:
        return create("netns", prog_fd, fd, attach_type, f"{section} on netns {netns}")
    finally:
        if fd is not netns:
            os.close(fd)
