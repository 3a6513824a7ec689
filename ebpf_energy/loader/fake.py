"""The test hook on the one bpf() entry: record every call, or answer with a fake kernel.

Like aya's ``sys/fake.rs``: loader code runs unchanged while
``bpf_entry.hook`` sees each ``bpf(cmd, attr, size)``, so a test can assert the
exact calls a code path makes (command, the attr fields within ``size``, the
result), and a fake kernel can make the paths run without root or fail on
cue (EAGAIN, EPERM, a full map) where the real kernel cannot be made to::

    with fake.Kernel() as k:                   # no bpf() reaches the kernel
        k.answer("BPF_MAP_CREATE", errno.EAGAIN, errno.EAGAIN)  # then the default: a new fd
        fd = syscall.map_create(...)
    assert [c.command for c in k.calls] == ["BPF_MAP_CREATE"] * 3

    with fake.Recorder() as rec:               # the real kernel, every call kept
        ...

A fake fd is a real descriptor (on ``/dev/null``), so closing it, or leaking
it, behaves exactly as with a kernel object.
"""

import errno as _errno
import os
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Dict

from . import bpf_entry, syscall, uapi


@dataclass
class Call:
    """One bpf() call: the command's name, the attr's fields that were sent, and what came back."""
    command: str
    fields: Dict[str, Any]
    size: int
    result: int = 0
    errno: int = 0
    attr: Any = field(default=None, repr=False, compare=False)  # the cffi attr, for answers that write into it


def decode(attr, size):
    """The fields of ``attr`` (a cffi struct pointer) that lie within the first ``size`` bytes."""
    ffi = bpf_entry.ffi
    out = {}
    for name, f in ffi.typeof(attr).item.fields:
        if f.offset + ffi.sizeof(f.type) > size:
            continue
        v = getattr(attr, name)
        if f.type.kind == "array":
            v = bytes(ffi.buffer(v)).rstrip(b"\0")
        out[name] = v
    return out


class _Hook:
    """Installs itself as bpf_entry.hook for the ``with`` block; keeps :attr:`calls`."""

    def __init__(self):
        self.calls = []
        self._saved = None

    def __enter__(self):
        self._saved, bpf_entry.hook = bpf_entry.hook, self._call
        return self

    def __exit__(self, *exc):
        bpf_entry.hook = self._saved

    def commands(self):
        return [c.command for c in self.calls]

    def _call(self, cmd, attr, size):
        c = Call(uapi.CMD_NAMES.get(cmd, str(cmd)), decode(attr, size), size, attr=attr)
        c.result, c.errno = self.answer_call(cmd, c)
        self.calls.append(c)
        return c.result, c.errno


class Recorder(_Hook):
    """Every call goes to the real kernel, and is kept in :attr:`calls`."""

    def answer_call(self, cmd, call):
        return bpf_entry.kernel_bpf(cmd, call.attr, call.size)


class Kernel(_Hook):
    """A fake kernel. Commands that make an fd get a new descriptor, others
    succeed with 0, unless :meth:`answer` queued something else for them."""

    def __init__(self):
        super().__init__()
        self._queued = defaultdict(deque)
        self.fds = []

    def answer(self, command, *answers):
        """Queue answers for the next calls of ``command`` (its name): an errno
        (a positive int from :mod:`errno`), or a function ``call -> result``."""
        self._queued[command].extend(answers)

    def new_fd(self):
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.fds.append(fd)
        return fd

    def answer_call(self, cmd, call):
        queue = self._queued.get(call.command)
        if queue:
            a = queue.popleft()
            if callable(a):
                return a(call), 0
            return -1, a
        if bpf_entry.COMMANDS.get(cmd, (None, None))[1] in (bpf_entry.FD, bpf_entry.LINK):
            return self.new_fd(), 0
        if cmd == uapi.BPF_MAP_LOOKUP_ELEM or cmd == uapi.BPF_MAP_GET_NEXT_KEY:
            return -1, _errno.ENOENT  # an empty map
        return 0, 0
