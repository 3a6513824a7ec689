"""The calibration load: N worker processes, each spinning one CPU.

Processes, not threads (the GIL would serialise threads). Each worker ignores
SIGINT, so a Ctrl-C reaches only the calibrator, which then kills them itself
(no stray tracebacks); and each asks the kernel to SIGKILL it when its parent
dies (PR_SET_PDEATHSIG), so even a calibrator killed with SIGKILL leaves no
spinning orphans behind.
"""

import os
import signal
import subprocess
import sys
from typing import List, Optional, Sequence

SPIN = (
    "import ctypes, os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)\n"  # PR_SET_PDEATHSIG, SIGKILL
    "os.getppid() == int(sys.argv[1]) or os._exit(0)\n"  # the parent died before prctl
    "sys.stdout.write('r'); sys.stdout.flush()\n"
    "while True: pass\n"
)


class Workload:
    """``set_level(n)`` keeps exactly n spinning workers alive; with ``cpus``
    they are pinned there (one core class at a time, for a per-class fit)."""

    def __init__(self, cgroup: Optional[str] = None):
        """``cgroup``: a cgroup v2 folder the workers are moved into (optional)."""
        self.workers: List[subprocess.Popen] = []
        self.cgroup = cgroup
        self._placed = (None, None)  # (cpus, cgroup) the current workers run with

    @property
    def level(self) -> int:
        return len(self.workers)

    def set_level(self, n: int, cpus: Optional[Sequence[int]] = None, cgroup: Optional[str] = None) -> None:
        """``cpus``: pin the workers to these CPUs; ``cgroup``: this step's
        cgroup instead of the workload's. Workers placed otherwise are replaced."""
        if n < 0:
            raise ValueError("a load level is a number of busy CPUs, >= 0")
        placed = (tuple(cpus) if cpus is not None else None, cgroup or self.cgroup)
        if placed != self._placed:
            self.stop()
            self._placed = placed
        cpus, cgroup = placed
        while len(self.workers) > n:
            self._kill(self.workers.pop())
        started = []
        while len(self.workers) < n:
            p = subprocess.Popen([sys.executable, "-S", "-c", SPIN, str(os.getpid())], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
            self.workers.append(p)
            started.append(p)
            if cpus is not None:
                os.sched_setaffinity(p.pid, cpus)
            if cgroup:
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                    f.write(str(p.pid))
        for p in started:  # wait until each one spins, so the level is real when we sample
            p.stdout.read(1)

    @staticmethod
    def _kill(p: subprocess.Popen) -> None:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()
        if p.stdout:
            p.stdout.close()

    def stop(self) -> None:
        while self.workers:
            self._kill(self.workers.pop())

    def pids(self) -> List[int]:
        return [p.pid for p in self.workers]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
