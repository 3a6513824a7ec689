"""Child processes that die with the parent that started them.

A helper left behind by a killed parent is worse than useless here: an eBPF
monitor child keeps its programs attached on ``sched_switch`` forever, a
workload keeps burning CPU. ``PR_SET_PDEATHSIG`` has the kernel send the
child SIGKILL when its parent thread dies, SIGKILL of the parent included;
the parent pid is checked right after, since the parent may have died
before the call.
"""

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
_libc = None


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Call in the child (a ``preexec_fn``): it gets ``sig`` when ``parent_pid`` dies."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before we asked
        os._exit(128 + sig)


def preexec(*then):
    """A ``preexec_fn`` that ties the child's life to this process, then runs ``then``."""
    parent = os.getpid()

    def run():
        die_with_parent(parent)
        for fn in then:
            fn()

    return run
