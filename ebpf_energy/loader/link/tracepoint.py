"""``tp/<category>/<name>``: a perf event for the tracepoint, then a perf link.

The tracepoint's id comes from tracefs (``events/<category>/<name>/id``);
the event is opened with pid=-1, cpu=0 (a tracepoint program runs on every
CPU anyway) and given the program by :func:`perf_event.link_perf_event`.
"""

import os

from .. import bpffs, explain, syscall, uapi
from ..errors import AttachError, LoaderError, PermissionDenied, SyscallError
from .perf_event import link_perf_event

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def tracefs_root():
    """Where tracefs is; mounts it at /sys/kernel/tracing when missing and root."""
    for root in TRACEFS_CANDIDATES:
        if os.path.isdir(os.path.join(root, "events")):
            return root
    primary = TRACEFS_CANDIDATES[0]
    if os.geteuid() == 0:
        try:
            bpffs.mount_if_missing(primary, "tracefs", "tracefs")
            explain.trace("attach", f"mounted tracefs at {primary}")
        except (SyscallError, LoaderError, OSError) as e:
            explain.trace("attach", f"could not mount tracefs at {primary}: {e}")
        if os.path.isdir(os.path.join(primary, "events")):
            return primary
    raise AttachError(f"tracefs is not available (looked in {', '.join(TRACEFS_CANDIDATES)}); "
                      f"as root run: mount -t tracefs tracefs {primary}")


def tracepoint_id(category, name):
    """The numeric id of tracepoint ``category/name`` (tracefs ``events/<category>/<name>/id``)."""
    if not category or not name or any("/" in c or "\0" in c or c.startswith(".") for c in (category, name)):
        raise AttachError(f"bad tracepoint name {category!r}/{name!r}: expected tp/<category>/<name>")
    root = tracefs_root()
    path = os.path.join(root, "events", category, name, "id")
    try:
        with open(path) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        raise AttachError(f"unknown tracepoint {category}/{name}: {path} does not exist "
                          f"(see {root}/available_events)") from None
    except (OSError, ValueError) as e:
        raise AttachError(f"cannot read tracepoint id of {category}/{name} from {path}: {e}") from None


def attach_tracepoint(prog_fd, category, name, legacy=False):
    """tp/<category>/<name>: perf event + BPF_LINK_CREATE, or the ioctl path on old
    kernels (``legacy=True`` forces it, so it stays tested on new ones)."""
    target = f"tp/{category}/{name}"
    tp_id = tracepoint_id(category, name)
    explain.trace("attach", f"{target}: tracepoint id {tp_id}")
    try:
        pfd = syscall.perf_event_open(uapi.PERF_TYPE_TRACEPOINT, tp_id, pid=-1, cpu=0)
    except PermissionDenied:
        raise
    except SyscallError as e:
        raise AttachError(f"cannot attach {target}: {e}") from e
    return link_perf_event(prog_fd, pfd, target, legacy=legacy)
