"""One interface over every energy meter (the choice among them is in :mod:`choose`).

A meter reports joules *since it was opened*, per domain, already corrected
for counter wraparound, with a CLOCK_MONOTONIC timestamp. Callers read it at
the two bounds of a window and take ``later.delta(earlier)``: the same way
whatever the hardware path (powercap sysfs or the perf power PMU).

Domain keys: ``package`` (all packages summed), ``core``, ``uncore``, ``dram``,
``psys``, each present only when the hardware has it. ``package`` is what the
power models split; the others are reported beside it, never added to it
(dram is outside the package; core and uncore are inside it).
"""

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional


DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"
DEFAULT_PMU_ROOT = "/sys/bus/event_source/devices/power"
METER_KINDS = ("auto", "powercap", "perf", "none")


@dataclass
class Reading:
    """Cumulative joules at ``timestamp_ns`` (CLOCK_MONOTONIC)."""

    timestamp_ns: int
    joules: Dict[str, float]  # domain -> J, packages summed
    packages: Dict[str, Dict[str, float]] = field(default_factory=dict)  # "package-0" -> domain -> J

    def delta(self, earlier: "Reading") -> Dict[str, float]:
        """Joules per domain spent between ``earlier`` and this reading."""
        if earlier.timestamp_ns > self.timestamp_ns:
            raise ValueError("Reading.delta: the other reading is later than this one (call later.delta(earlier))")
        return {d: j - earlier.joules.get(d, 0.0) for d, j in self.joules.items()}

    def seconds_since(self, earlier: "Reading") -> float:
        return (self.timestamp_ns - earlier.timestamp_ns) / 1e9


def stderr_warn(message: str) -> None:
    print(f"ebpf-energy: warning: {message}", file=sys.stderr)


class Meter:
    """Base class. Subclasses implement ``_read_joules() -> (joules, packages)``."""

    name = "abstract"
    simulated = False

    def __init__(self, warn: Optional[Callable[[str], None]] = None):
        self._warn_cb = warn or stderr_warn
        self.warnings: List[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self._warn_cb(message)

    def read(self) -> Reading:
        joules, packages = self._read_joules()
        return Reading(time.monotonic_ns(), joules, packages)

    def _read_joules(self):
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "simulated": self.simulated}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
