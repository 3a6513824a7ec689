"""What every attachment is: a :class:`Link` owning the fds that hold it.

Through the kernel's link API an attachment *is* a file descriptor: closing
it detaches, so a process that dies (SIGKILL too) leaves nothing attached.
Kinds that go through a perf event (tracepoints, uprobes, perf events) also
own that event's fd. A kind made of several attachments (a perf event per
CPU, a uprobe per USDT site) is a :class:`Links`, closed as one.
"""

from contextlib import contextmanager

from .. import syscall
from ..fd import close as _close
from ..errors import LoaderError


class Link:
    """One attachment. Owns its fds; ``close()`` detaches and is idempotent."""

    def __init__(self, mechanism, fd, target, perf_fd=-1, prog_fd=-1):
        self.mechanism = mechanism  # "perf_event", "perf_event_ioctl", "raw_tracepoint", "tracing", "tcx", ...
        self.fd = fd              # the bpf link fd (or the perf fd in ioctl mode)
        self.perf_fd = perf_fd    # the perf event behind a perf link, if any
        self.target = target
        self._prog_fd = prog_fd

    def info(self):
        """BPF_OBJ_GET_INFO_BY_FD of the link (ioctl-mode attachments have no link object)."""
        if self.fd < 0:
            raise LoaderError(f"link {self.target} is closed")
        if self.mechanism == "perf_event_ioctl":
            pid = syscall.obj_get_info(self._prog_fd, "prog")["id"] if self._prog_fd >= 0 else None
            return {"id": None, "type": None, "type_name": "perf_event_ioctl", "prog_id": pid}
        return syscall.obj_get_info(self.fd, "link")

    def close(self):
        fds = [fd for fd in dict.fromkeys((self.fd, self.perf_fd)) if fd is not None and fd >= 0]
        self.fd = self.perf_fd = -1
        for fd in fds:  # an Fd closes through Fd.close (traced there), so the session's fd check sees it closed
            _close(fd, f"detach {self.target}")

    @property
    def closed(self):
        return self.fd < 0

    def __repr__(self):
        return f"<Link {self.mechanism} {self.target} fd={self.fd}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        for fd in {getattr(self, "fd", -1), getattr(self, "perf_fd", -1)}:
            if fd is not None and fd >= 0:
                try:
                    _close(fd)
                except OSError:
                    pass


class Links:
    """Several attachments of one program that stand or fall together."""

    def __init__(self, mechanism, target, links):
        self.mechanism = mechanism
        self.target = target
        self.links = list(links)

    @property
    def fd(self):
        return self.links[0].fd if self.links else -1

    def info(self):
        """The first attachment's link info, with how many there are."""
        if self.closed:
            raise LoaderError(f"link {self.target} is closed")
        return dict(self.links[0].info(), count=len(self.links))

    def close(self):
        links, self.links = self.links, []
        for link in reversed(links):
            link.close()

    @property
    def closed(self):
        return not self.links or all(link.closed for link in self.links)

    def __len__(self):
        return len(self.links)

    def __repr__(self):
        return f"<Links {self.mechanism} {self.target} x{len(self.links)}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextmanager
def closing_on_error(links):
    """Close what was attached so far when a later step fails: a half-made
    group must not stay in the kernel."""
    try:
        yield links
    except BaseException:
        for link in reversed(links):
            link.close()
        raise


def create(mechanism, prog_fd, target_fd, attach_type, target, tail=b"", flags=0):
    """BPF_LINK_CREATE for the kinds that are one link on one target (a
    cgroup, a netns, an interface): a :class:`Link`, or an AttachError
    naming the target (EPERM stays a PermissionDenied)."""
    from ..errors import AttachError, PermissionDenied, SyscallError

    try:
        fd = syscall.link_create_tail(prog_fd, target_fd, attach_type, tail, flags=flags, what=f"({target})")
    except PermissionDenied:
        raise
    except SyscallError as e:
        raise AttachError(f"cannot attach {target}: {e}") from e
    return Link(mechanism, fd, target, prog_fd=prog_fd)
