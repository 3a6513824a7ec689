"""Fd: one kernel descriptor the loader owns (map, program, link, BTF, perf event).

An ``Fd`` is an ``int`` (so it goes wherever a descriptor number goes: an attr
field, ``os.read``, ``mmap``) that also knows it is ours: :meth:`Fd.close`
closes it exactly once, and every ``Fd`` not yet closed is in a registry.
Under :func:`track` (the test session turns it on) the registry also notes
*what* each number referred to when it was made, so :func:`leaks` names the
descriptors still open on the same object at the end: a leaked fd keeps a BPF
object alive, which is exactly what a loader must never do. A number closed
behind our back with ``os.close`` is not reported (it no longer refers to the
object), so callers that close the number themselves stay correct.
"""

import os

from . import explain

_live = {}        # number -> Fd, every one not closed through Fd.close
_tracking = False


class Fd(int):
    """A descriptor number that closes once; ``origin`` says which call made it."""

    def __new__(cls, number, origin=""):
        self = super().__new__(cls, number)
        self.origin = origin
        self.closed = False
        self.identity = _identity(number) if _tracking else None
        _live[number] = self
        return self

    def close(self, what=""):
        """Close the descriptor (``what`` it held names it in the trace); a second call does nothing."""
        if self.closed:
            return
        self.closed = True
        if _live.get(int(self)) is self:
            del _live[int(self)]
        os.close(self)
        explain.trace("close", f"{what + ' ' if what else ''}fd {int(self)}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def close(fd, what=""):
    """Close ``fd`` (an Fd or a plain number); None and negative numbers are no fd."""
    if fd is None or fd < 0:
        return
    if isinstance(fd, Fd):
        fd.close(what)
        return
    os.close(fd)
    explain.trace("close", f"{what + ' ' if what else ''}fd {fd}")


def _identity(number):
    """What descriptor ``number`` refers to now: the object-id lines of its
    fdinfo (``map_id:``, ``prog_id:``, ``link_id:``, ``btf_id:``) and the inode."""
    try:
        st = os.fstat(number)
        with open(f"/proc/self/fdinfo/{number}", "rb") as f:
            ids = tuple(sorted(ln for ln in f.read().splitlines() if ln.split(b":")[0].endswith(b"_id")))
    except OSError:
        return None
    return (st.st_dev, st.st_ino, ids)


def track(on=True):
    """Note what every new Fd refers to, so :func:`leaks` can tell ours from a reused number."""
    global _tracking
    _tracking = on


def open_fds():
    """The Fds made and not closed through :meth:`Fd.close` (closed elsewhere or not)."""
    return list(_live.values())


def leaks():
    """Fds still open on the object they were made for: ``[(number, origin), ...]``."""
    out = []
    for number, fd in sorted(_live.items()):
        if fd.identity is not None and _identity(number) == fd.identity:
            out.append((number, fd.origin))
    return out
