"""Pseudo file systems the loader needs: bpffs (pinning) and tracefs (tracepoint ids).

Both may be unmounted on a fresh machine. As root we mount them where the
tools expect them; otherwise the caller gets an error saying what is missing.
"""

import os

from . import syscall
from .errors import LoaderError

BPFFS_PATH = "/sys/fs/bpf"


def mounted(path, fstype):
    """True when a file system of ``fstype`` is mounted exactly at ``path``."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == fstype and parts[1] == real:
                    return True
    except OSError:
        pass
    return False


def mount_if_missing(path, fstype, source):
    """Mount ``fstype`` at ``path`` unless it is there; returns True if we mounted it."""
    if mounted(path, fstype):
        return False
    if os.geteuid() != 0:
        raise LoaderError(f"{fstype} is not mounted at {path} and only root can mount it "
                          f"(mount -t {fstype} {source} {path})")
    os.makedirs(path, exist_ok=True)
    syscall.mount(source, path, fstype)
    return True


def ensure_bpffs(path=BPFFS_PATH):
    """Make sure a bpffs is mounted at ``path`` (mounting it as root) and return ``path``."""
    mount_if_missing(path, "bpf", "bpf")
    return path
