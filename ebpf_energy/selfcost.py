"""What the monitor itself costs: its own CPU time.

A monitor that hides its own cost is no better than one that guesses: every
report carries ``overhead_cpu_ns``, the monitor process's user + system CPU
over the run, and samplers measure their own thread's share apart (two
monitors can share one process under ``compare``).
"""

import os
import time

try:
    import resource
except ImportError:  # pragma: no cover - not on Linux
    resource = None

_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def process_cpu_ns() -> int:
    """User + system CPU of this whole process so far, in ns (all threads)."""
    if resource is not None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return int(round((ru.ru_utime + ru.ru_stime) * 1e9))
    return proc_self_cpu_ns()


def proc_self_cpu_ns(proc_root: str = "/proc") -> int:
    """The same from ``/proc/self/stat`` (utime + stime, tick resolution):
    the figure a /proc poller would see for us, used to cross-check."""
    with open(os.path.join(proc_root, "self", "stat"), "rb") as f:
        data = f.read()
    rest = data[data.rfind(b")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) * _TICK_NS


def thread_cpu_ns() -> int:
    """CPU of the calling thread only (CLOCK_THREAD_CPUTIME_ID), in ns."""
    return time.thread_time_ns()


class SelfCost:
    """CPU this process spent since construction, and its share of one CPU."""

    def __init__(self):
        self._cpu0 = process_cpu_ns()
        self._wall0 = time.monotonic_ns()

    def cpu_ns(self) -> int:
        return process_cpu_ns() - self._cpu0

    def wall_ns(self) -> int:
        return time.monotonic_ns() - self._wall0

    def share(self) -> float:
        """Fraction of one CPU used so far (0.01 = 1%)."""
        wall = self.wall_ns()
        return self.cpu_ns() / wall if wall > 0 else 0.0
