"""``tp_btf/``, ``fentry/``, ``fexit/``, ``fmod_ret/``, ``lsm/``: the hook was
fixed at load time (attach_btf_id), so attaching is BPF_RAW_TRACEPOINT_OPEN
with a NULL name. fentry/fexit/lsm need a BPF trampoline; a kernel without
one refuses them already at load (see ``collection.TrampolineRefused``)."""

from .. import syscall
from ..errors import AttachError, PermissionDenied, SyscallError
from .base import Link


def attach_tracing(prog_fd, target="tracing"):
    """tp_btf/, fentry/, fexit/, lsm/: the hook was chosen at load time (attach_btf_id)."""
    try:
        fd = syscall.raw_tracepoint_open(prog_fd, None)
    except PermissionDenied:
        raise
    except SyscallError as e:
        raise AttachError(f"cannot attach {target}: {e}") from e
    return Link("tracing", fd, target, prog_fd=prog_fd)
