"""Attaching loaded programs to their hooks; each attachment is a :class:`Link`.

- ``tp/<category>/<name>``: the tracepoint's id from tracefs, a perf event for it
  (PERF_TYPE_TRACEPOINT, pid=-1, cpu=0: the program runs on every CPU anyway),
  then BPF_LINK_CREATE(BPF_PERF_EVENT); kernels before 5.15 refuse that, so fall
  back to PERF_EVENT_IOC_SET_BPF + PERF_EVENT_IOC_ENABLE on the perf fd.
- ``raw_tp/<name>``: BPF_RAW_TRACEPOINT_OPEN with the name; no tracefs needed.
- ``tp_btf/``, ``fentry/``, ``fexit/``: the target was fixed at load time
  (attach_btf_id), so BPF_RAW_TRACEPOINT_OPEN with a NULL name.
Closing the link fd (and the perf fd) detaches.
"""

import errno as _errno
import os

from . import bpffs, explain, syscall, uapi
from .errors import AttachError, LoaderError, NotSupported, PermissionDenied, SyscallError

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


class Link:
    """One attachment. Owns its fds; ``close()`` detaches and is idempotent."""

    def __init__(self, kind, fd, target, perf_fd=-1, prog_fd=-1):
        self.kind = kind          # "perf_event", "perf_event_ioctl", "raw_tracepoint", "tracing"
        self.fd = fd              # the bpf link fd (or the perf fd in ioctl mode)
        self.perf_fd = perf_fd    # the perf event behind a tp/ link
        self.target = target
        self._prog_fd = prog_fd

    def info(self):
        """BPF_OBJ_GET_INFO_BY_FD of the link (ioctl-mode attachments have no link object)."""
        if self.fd < 0:
            raise LoaderError(f"link {self.target} is closed")
        if self.kind == "perf_event_ioctl":
            pid = syscall.obj_get_info(self._prog_fd, "prog")["id"] if self._prog_fd >= 0 else None
            return {"id": None, "type": None, "type_name": "perf_event_ioctl", "prog_id": pid}
        return syscall.obj_get_info(self.fd, "link")

    def close(self):
        fds = [fd for fd in (self.fd, self.perf_fd) if fd is not None and fd >= 0 and fd != -1]
        if self.perf_fd == self.fd:
            fds = fds[:1]
        self.fd = self.perf_fd = -1
        for fd in fds:
            os.close(fd)
        if fds:
            explain.trace("close", f"detach {self.target} (closed fd {', '.join(map(str, fds))})")

    @property
    def closed(self):
        return self.fd < 0

    def __repr__(self):
        return f"<Link {self.kind} {self.target} fd={self.fd}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        for fd in {getattr(self, "fd", -1), getattr(self, "perf_fd", -1)}:
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


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
    link_err = "legacy attach requested"
    try:
        if not legacy:
            lfd = syscall.link_create(prog_fd, pfd, uapi.BPF_PERF_EVENT)
            return Link("perf_event", lfd, target, perf_fd=pfd, prog_fd=prog_fd)
    except (NotSupported, PermissionDenied) as e:
        explain.trace("attach", f"{target}: BPF_LINK_CREATE refused ({e.errno and _errno.errorcode.get(e.errno)}), "
                      "falling back to PERF_EVENT_IOC_SET_BPF + PERF_EVENT_IOC_ENABLE")
        link_err = e
    except SyscallError as e:
        os.close(pfd)
        raise AttachError(f"cannot attach {target}: {e}") from e
    try:
        syscall.ioctl(pfd, uapi.PERF_EVENT_IOC_SET_BPF, prog_fd)
        syscall.ioctl(pfd, uapi.PERF_EVENT_IOC_ENABLE, 0)
    except SyscallError as e:
        os.close(pfd)
        if isinstance(e, PermissionDenied) and isinstance(link_err, PermissionDenied):
            raise
        raise AttachError(f"cannot attach {target}: {link_err}; and then {e}") from e
    return Link("perf_event_ioctl", pfd, target, perf_fd=pfd, prog_fd=prog_fd)


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


def attach_tracing(prog_fd, target="tracing"):
    """tp_btf/, fentry/, fexit/: the hook was chosen at load time (attach_btf_id)."""
    try:
        fd = syscall.raw_tracepoint_open(prog_fd, None)
    except PermissionDenied:
        raise
    except SyscallError as e:
        raise AttachError(f"cannot attach {target}: {e}") from e
    return Link("tracing", fd, target, prog_fd=prog_fd)
