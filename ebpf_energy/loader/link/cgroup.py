"""``cgroup/...``, ``cgroup_skb/...``, ``sockops``: programs on a cgroup v2
directory, through a cgroup link.

The program runs for the sockets, devices and sysctls of every process in
that cgroup and its descendants. The attach type is the one the program
was loaded with (its section decides it), so the link needs only the
cgroup's directory.
"""

import os

from ..errors import AttachError
from .base import create


def attach_cgroup(prog_fd, cgroup_path, attach_type, section="cgroup"):
    """The program on the cgroup v2 directory ``cgroup_path``."""
    try:
        cg = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise AttachError(f"cannot open cgroup {cgroup_path}: {e.strerror}") from None
    try:
        return create("cgroup", prog_fd, cg, attach_type, f"{section} on {cgroup_path}")
    finally:
        os.close(cg)  # the link holds the cgroup itself
