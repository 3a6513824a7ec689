"""BPF iterators (``SEC("iter/<target>")``): a link, then reads of its output.

An iterator program is not attached to an event: BPF_LINK_CREATE with
BPF_TRACE_ITER ties it to its target (for ``bpf_map_elem``, a map given by
fd in ``bpf_iter_link_info``), and every BPF_ITER_CREATE on that link gives
a fresh seq_file whose reads run the program over the target's objects from
the start, handing back what it wrote with ``bpf_seq_write`` /
``bpf_seq_printf``. The kernel fills at most one seq buffer per read(), so a
pass is many reads; the buffer here is kept from pass to pass, so a reader
that runs every second faults in no new pages.
"""

import errno as _errno
import os

from .. import explain, syscall
from ..errors import AttachError, PermissionDenied, SyscallError


class Iterator:
    """An iterator link. ``read()`` runs one whole pass; ``close()`` detaches."""

    kind = "iter"

    def __init__(self, prog_fd, target, map_fd=0):
        self.target = target
        try:
            self.fd = syscall.link_create_iter(prog_fd, map_fd)
        except PermissionDenied:
            raise
        except SyscallError as e:
            hint = ""
            if e.errno == _errno.EACCES and map_fd:
                hint = " (the program reads past the map's value: is its value size the one it was built for?)"
            raise AttachError(f"cannot attach iterator {target}: {e}{hint}") from e
        self._buf = bytearray(1 << 16)

    def read(self) -> memoryview:
        """One pass from the start: everything the program wrote, valid until the next read."""
        if self.fd < 0:
            raise AttachError(f"iterator {self.target} is closed")
        sfd = syscall.iter_create(self.fd)
        buf, pos = self._buf, 0
        try:
            while True:
                if len(buf) - pos < 1 << 15:  # the kernel writes up to one seq buffer per read
                    grown = bytearray(2 * len(buf))  # new, not extended: the last pass's view may live on
                    grown[:pos] = buf[:pos]
                    buf = self._buf = grown
                try:
                    n = os.readv(sfd, [memoryview(buf)[pos:]])
                except InterruptedError:
                    continue
                except OSError as e:
                    raise AttachError(f"reading iterator {self.target}: {os.strerror(e.errno)}") from None
                if n == 0:
                    break
                pos += n
        finally:
            os.close(sfd)
        explain.trace("syscall", f"read iterator {self.target} -> {pos} bytes")
        return memoryview(buf)[:pos]

    def close(self):
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
            explain.trace("close", f"detach iterator {self.target} (closed fd {fd})")

    @property
    def closed(self):
        return self.fd < 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        fd = getattr(self, "fd", -1)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __repr__(self):
        return f"<Iterator {self.target} fd={self.fd}>"
