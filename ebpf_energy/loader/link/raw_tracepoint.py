"""``raw_tp/<name>``: BPF_RAW_TRACEPOINT_OPEN by name; no tracefs needed."""

import errno as _errno

from .. import syscall
from ..errors import AttachError, PermissionDenied, SyscallError
from .base import Link


def attach_raw_tracepoint(prog_fd, name):
    """raw_tp/<name>: BPF_RAW_TRACEPOINT_OPEN by name."""
    target = f"raw_tp/{name}"
    try:
        fd = syscall.raw_tracepoint_open(prog_fd, name)
    except PermissionDenied:
        raise
    except SyscallError as e:
        if e.errno == _errno.ENOENT:
            raise AttachError(f"unknown raw tracepoint {name!r} (the kernel has no tracepoint of that name; "
                              "see available_events in tracefs)") from e
        raise AttachError(f"cannot attach {target}: {e}") from e
    return Link("raw_tracepoint", fd, target, prog_fd=prog_fd)
