"""CPU busy time from ``/proc/stat``: the ground truth calibration fits against,
and what the simulated meter turns into joules (so it lives beside both, not in either).

Busy = user + nice + system + irq + softirq + steal (guest time is already
inside user/nice); idle and iowait are not busy. Values are USER_HZ ticks.
"""

import os
from typing import List

USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system [idle iowait] irq softirq steal


def per_cpu_busy_seconds(path: str = "/proc/stat") -> List[float]:
    """Busy seconds since boot, one entry per online CPU, in cpuN order."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *fields = line.split()
                vals = [int(v) for v in fields]
                out[int(name[3:])] = sum(vals[i] for i in BUSY_FIELDS if i < len(vals)) / USER_HZ
    return [out[k] for k in sorted(out)]


def busy_seconds(path: str = "/proc/stat") -> float:
    """Busy seconds since boot, all CPUs summed."""
    return sum(per_cpu_busy_seconds(path))


def cgroup_busy_seconds(cgroup_dir: str) -> float:
    """CPU seconds used by a cgroup v2 (``cpu.stat`` usage_usec), dead members included.

    Used to calibrate on a shared machine: the workers run in their own cgroup,
    so other people's load does not blur the x axis.
    """
    with open(os.path.join(cgroup_dir, "cpu.stat")) as f:
        for line in f:
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
    raise ValueError(f"{cgroup_dir}/cpu.stat has no usage_usec")


def class_busy_seconds(cpu_class: List[int], nclasses: int, path: str = "/proc/stat") -> List[float]:
    """Busy seconds since boot per core class (``cpu_class``: a class per CPU)."""
    out = [0.0] * nclasses
    for cpu, s in enumerate(per_cpu_busy_seconds(path)):
        out[cpu_class[cpu] if cpu < len(cpu_class) else 0] += s
    return out
