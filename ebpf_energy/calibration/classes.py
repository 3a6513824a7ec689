"""Calibrating a machine with several core classes: one class loaded at a time.

On a hybrid CPU a single slope mixes P and E cores in whatever proportion the
scheduler happened to use. Here each class is loaded on its own (workers
pinned to its CPUs), and the busy time is read per class, so the fit
``power = idle + sum(k_class x busy CPUs of that class)`` can tell the slopes
apart. With ``--cpu-cgroup`` each class's workers run in a child cgroup of
their own (``ebpf-energy-class-<name>-<pid>``), whose ``cpu.stat`` is then
that class's busy time exactly: the workers are pinned, so all of it ran there.
With ``class_khz`` (frequencies per class, where cpufreq exists) each loaded
step also runs at one pinned frequency; this works on a machine with one
class too (every CPU in class ``cpu``).
"""

import os
import time
from typing import Callable, List, Optional, Sequence

from ebpf_energy.cpustat import cgroup_busy_seconds, class_busy_seconds
from ebpf_energy.calibration.runner import plan_classes, plan_frequencies


class ClassPlan:
    """The steps, CPU reader and worker placement for a per-class calibration.
    Use as a context manager: the child cgroups are removed on the way out."""

    def __init__(self, topology, levels: Optional[Sequence[int]], rounds: int, seed=None,
                 cpu_cgroup: Optional[str] = None, class_khz: Optional[Sequence[Sequence[int]]] = None):
        self.topology = topology
        self.class_cpus = [list(c.cpus) for c in topology.classes]
        per_class = [list(levels) if levels is not None else list(range(1, len(cpus) + 1))
                     for cpus in self.class_cpus]
        self.levels = sorted({0} | {lv for lv in (levels or [])} | {lv for ls in per_class for lv in ls})
        self.class_khz = [list(k) for k in class_khz] if class_khz is not None else None
        self.steps = plan_classes(per_class, rounds, seed) if class_khz is None else \
            plan_frequencies(per_class, class_khz, rounds, seed)
        self.class_cgroups: Optional[List[str]] = None
        self._parent = cpu_cgroup
        if cpu_cgroup:
            self.class_cgroups = [os.path.join(cpu_cgroup, f"ebpf-energy-class-{n}-{os.getpid()}")
                                  for n in topology.names]

    def cpu_reader(self) -> Callable[[], List[float]]:
        if self.class_cgroups:
            return lambda: [_busy_or_zero(cg) for cg in self.class_cgroups]
        table = self.topology.cpu_class(os.cpu_count() or 1)
        n = len(self.topology.classes)
        return lambda: class_busy_seconds(table, n)

    def __enter__(self):
        for cg in self.class_cgroups or []:
            os.makedirs(cg, exist_ok=True)
        return self

    def __exit__(self, *exc):
        for cg in self.class_cgroups or []:
            _rmdir_when_empty(cg)


def _busy_or_zero(cgroup: str) -> float:
    try:
        return cgroup_busy_seconds(cgroup)
    except FileNotFoundError:
        return 0.0


def _rmdir_when_empty(path: str, timeout: float = 5.0) -> None:
    """A cgroup whose last worker was just reaped may stay busy for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
