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
from typing import List, Optional

SPIN = (
    "import ctypes, os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)\n"  # PR_SET_PDEATHSIG, SIGKILL
    "os.getppid() == int(sys.argv[1]) or os._exit(0)\n"  # the parent died before prctl
    "sys.stdout.write('r'); sys.stdout.flush()\n"
    "while True: pass\n"
)


class Workload:
    """``set_level(n)`` keeps exactly n spinning workers alive."""

    def __init__(self, cgroup: Optional[str] = None):
        """``cgroup``: a cgroup v2 folder the workers are moved into (optional)."""
        self.workers: List[subprocess.Popen] = []
        self.cgroup = cgroup

    @property
    def level(self) -> int:
        return len(self.workers)

    def set_level(self, n: int) -> None:
        if n < 0:
            raise ValueError("a load level is a number of busy CPUs, >= 0")
        while len(self.workers) > n:
            self._kill(self.workers.pop())
        started = []
        while len(self.workers) < n:
            p = subprocess.Popen([sys.executable, "-S", "-c", SPIN, str(os.getpid())], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
            self.workers.append(p)
            started.append(p)
            if self.cgroup:
                with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as f:
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
