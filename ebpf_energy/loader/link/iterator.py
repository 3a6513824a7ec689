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
import struct

from .. import explain, syscall, uapi
from ..errors import AttachError, PermissionDenied, SyscallError
from ..fd import close as _close
from .base import Link


BPF_TRACE_ITER = uapi.BPF_TRACE_ITER
# enum bpf_cgroup_iter_order: which cgroups an iter/cgroup link walks from the one given
CGROUP_ORDERS = {"self": 1, "descendants_pre": 2, "descendants_post": 3, "ancestors_up": 4}
CGROUP_SELF_ONLY = CGROUP_ORDERS["self"]


# Iterators whose program is handed a map's key and value buffers (PTR_TO_BUF
# context arguments). This kernel (6.18 here) answers BPF_PROG_LOAD of these,
# and only these, with EPERM to root with CAP_BPF, CAP_PERFMON and
# CAP_SYS_ADMIN, before the verifier has looked at one instruction
# ("processed 0 insns"), even for a program that returns 0 at once; libbpf
# (bpftool prog load) gets the same. The map is named only at link time
# (bpf_iter_link_info.map.map_fd), so nothing a loader passes at load could
# change it: the attach_btf_id (bpf_iter_<target>) and the expected attach
# type are the ones every other iterator loads with.
MAP_ELEMENT_TARGETS = ("bpf_map_elem", "bpf_sk_storage_map", "sockmap")


def load_refusal(section):
    """Why root's EPERM at the load of iterator ``section`` is the kernel's
    refusal, in words a user can act on; None for other iterators."""
    target = section.partition("/")[2]
    if target not in MAP_ELEMENT_TARGETS:
        return None
    return (f"this kernel refuses map-element iterators ({', '.join('iter/' + t for t in MAP_ELEMENT_TARGETS)}: "
            "the ones handed a map element's buffers) at load, before verifying a single instruction, whatever "
            "the loader (libbpf too; the map itself is only named at attach); walk the map with "
            "bpf_for_each_map_elem() in a program, or from user space, instead")


class Iterator(Link):
    """An iterator link. ``read()`` runs one whole pass; ``close()`` detaches.
    ``map_fd`` for map-element iterators; ``pid``/``tid`` limit ``iter/task``
    (and task_file, task_vma) to one process or thread; ``cgroup_fd`` (a
    cgroup directory's fd) and ``order`` (self, descendants_pre, ...) say
    where ``iter/cgroup`` walks."""

    def __init__(self, prog_fd, target, map_fd=0, pid=0, tid=0, cgroup_fd=0, order=CGROUP_SELF_ONLY):
        # union bpf_iter_link_info: map.map_fd, cgroup.{order, cgroup_fd, cgroup_id}, or task.{tid, pid, pid_fd}
        if map_fd:
            info = struct.pack("<I", map_fd)
        elif cgroup_fd:
            info = struct.pack("<IIQ", CGROUP_ORDERS[order] if isinstance(order, str) else order, cgroup_fd, 0)
        else:
            info = struct.pack("<III", tid, pid, 0) if pid or tid else b""
        self._info = syscall.ffi.new("char[]", info.ljust(16, b"\0")) if info else None
        tail = struct.pack("<QI", int(syscall.ffi.cast("uintptr_t", self._info)), 16) if info else b""
        what = f"(iter/{target}{f' map_fd={map_fd}' if map_fd else ''}{f' pid={pid}' if pid else ''}" \
               f"{f' tid={tid}' if tid else ''})"
        try:
            fd = syscall.link_create_tail(prog_fd, 0, BPF_TRACE_ITER, tail, what=what)
        except PermissionDenied:
            raise
        except SyscallError as e:
            hint = ""
            if e.errno == _errno.EACCES and map_fd:
                hint = " (the program reads past the map's value: is its value size the one it was built for?)"
            elif e.errno == _errno.EBADF and not map_fd:
                hint = f" (iter/{target} iterates over a map: give its fd)"
            raise AttachError(f"cannot attach iterator {target}: {e}{hint}") from e
        super().__init__("iter", fd, f"iter/{target}", prog_fd=prog_fd)
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
            _close(sfd)
        explain.trace("syscall", f"read iterator {self.target} -> {pos} bytes")
        return memoryview(buf)[:pos]

    def __repr__(self):
        return f"<Iterator {self.target} fd={self.fd}>"
