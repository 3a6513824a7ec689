"""Counting perf events per CPU for the wait-state program: cycles and
instructions per slice, hence IPC.

The wait-state program (``bpf/wait_states.bpf.c``, ``count_pmu``) reads two
counters of its CPU at every switch (``bpf_perf_event_read_value``); the
difference since the CPU's last switch is what the task switched out ran.
The counters are per CPU (pid -1), counting (no sampling), opened here and
put into the object's two ``PERF_EVENT_ARRAY`` maps.

Where no hardware PMU is exposed (this VM; many clouds) opening them fails
and the report says why. ``SOFTWARE_STAND_IN`` opens the CPU clock in both
roles instead: the same path, counters that exist everywhere, so the
mechanism is tested for real (a task's "cycles" are then the nanoseconds
the CPU clock ran during its slices, which must match its on-CPU time).
"""

import errno
from typing import Dict, List, Tuple

from ebpf_energy.loader import uapi
from ebpf_energy.loader.errors import LoaderError
from ebpf_energy.loader.syscall import perf_event_open

# (map, perf type, config) per role
HARDWARE = (("pmu_cycles", uapi.PERF_TYPE_HARDWARE, uapi.PERF_COUNT_HW_CPU_CYCLES),
            ("pmu_instructions", uapi.PERF_TYPE_HARDWARE, uapi.PERF_COUNT_HW_INSTRUCTIONS))
SOFTWARE_STAND_IN = (("pmu_cycles", uapi.PERF_TYPE_SOFTWARE, uapi.PERF_COUNT_SW_CPU_CLOCK),
                     ("pmu_instructions", uapi.PERF_TYPE_SOFTWARE, uapi.PERF_COUNT_SW_CPU_CLOCK))
KINDS = {"hardware": HARDWARE, "software": SOFTWARE_STAND_IN}


class PmuUnavailable(Exception):
    """The counters cannot be opened here; the message says why, in one clause."""


class PmuCounters:
    """Two counting events on every CPU, owned until :meth:`close`."""

    def __init__(self, kind: str = "hardware"):
        if kind not in KINDS:
            raise ValueError(f"PMU kind {kind!r}: one of {', '.join(KINDS)}")
        self.kind = kind
        self.fds: Dict[str, List[Tuple[int, int]]] = {}  # map name -> [(cpu, fd)]

    def open(self, cpus: List[int]) -> None:
        try:
            for name, type_, config in KINDS[self.kind]:
                self.fds[name] = []
                for cpu in cpus:
                    fd = perf_event_open(type_, config, pid=-1, cpu=cpu, sample_period=0, wakeup_events=0)
                    self.fds[name].append((cpu, fd))
        except LoaderError as e:
            self.close()
            err = getattr(e, "errno", None)
            if err in (errno.ENOENT, errno.EOPNOTSUPP, errno.ENODEV):
                raise PmuUnavailable("no hardware PMU: IPC and memory-boundness unknown") from None
            raise PmuUnavailable(f"PMU counters not opened ({e}): IPC and memory-boundness unknown") from None

    def fill(self, obj) -> None:
        """Put each CPU's events into the loaded object's arrays."""
        for name, pairs in self.fds.items():
            m = obj.maps[name]
            for cpu, fd in pairs:
                m.update(cpu, int(fd).to_bytes(4, "little"))

    def status(self) -> str:
        if self.kind == "hardware":
            return "cycles and instructions per slice (hardware PMU)"
        return "software stand-in: the CPU clock in place of cycles and instructions (IPC is 1 by construction)"

    def close(self) -> None:
        for pairs in self.fds.values():
            for _, fd in pairs:
                try:
                    fd.close()
                except OSError:
                    pass
        self.fds = {}
