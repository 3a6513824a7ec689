"""CPU busy time from ``/proc/stat``: the ground truth calibration fits against.

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
