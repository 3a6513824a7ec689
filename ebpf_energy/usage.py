"""CPU time per task over a window: what every monitor measures.

Both monitors (eBPF and /proc) produce a :class:`UsageWindow`; power models
turn it into joules and reports render it. Keeping one shape is what makes
the two monitors comparable.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional


def comm_of(raw: bytes) -> str:
    """A kernel comm (NUL-terminated, or a /proc stat field) as text, control
    characters escaped as ``ps`` does: a process named ``"x\\nPID 1 FAKE"``
    cannot forge a line of a report."""
    s = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else "\\x%02x" % ord(ch) for ch in s)


@dataclass
class ThreadUsage:
    tid: int
    comm: str
    cpu_ns: int
    slices: int = 0
    exited: bool = False
    # ns per core class index (UsageWindow.cpu_class), summing exactly to cpu_ns; None from /proc
    cpu_ns_by_class: Optional[List[int]] = None


@dataclass
class ProcessUsage:
    pid: int  # the tgid
    comm: str
    cpu_ns: int
    slices: int = 0
    exited: bool = False
    cgroup: Optional[str] = None  # cgroup v2 path relative to the v2 mount
    cgroup_id: Optional[int] = None
    threads: List[ThreadUsage] = field(default_factory=list)
    # ns per core class index (UsageWindow.cpu_class), summing exactly to cpu_ns; None from /proc
    cpu_ns_by_class: Optional[List[int]] = None
    # CPU cycles (ns x the CPU's kHz / 1e6 per slice); None when the frequency is unknown
    cycles: Optional[int] = None
    nspid: Optional[int] = None  # its PID in its own PID namespace, when that is not the monitor's


@dataclass
class UsageWindow:
    """CPU time spent in ``[start_ns, end_ns]`` (CLOCK_MONOTONIC)."""

    source: str  # "ebpf" or "procfs"
    start_ns: int
    end_ns: int
    ncpus: int
    processes: Dict[int, ProcessUsage]
    idle_ns: int = 0  # summed over CPUs
    idle_ns_per_cpu: List[int] = field(default_factory=list)
    samples_or_events: int = 0  # /proc: samples taken; eBPF: slices accounted
    drops: Dict[str, int] = field(default_factory=lambda: {"tasks": 0, "events": 0})
    # CPU time of slices lost to a full task map (eBPF): in no process's total
    dropped_cpu_ns: int = 0
    # summed over CPUs: time they were neither running a task nor idle (the
    # hypervisor's steal, and IRQ time where the kernel takes it out of task
    # time), so total_cpu_ns + idle_ns + steal_ns + dropped_cpu_ns = ncpus x window
    steal_ns: int = 0
    # core class index of each online CPU, in the order of idle_ns_per_cpu (all 0: one kind of core)
    cpu_class: List[int] = field(default_factory=list)
    # how CPU frequency was known: "unknown (no cpufreq)", or how it was tracked
    frequency: str = "unknown"

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def total_cpu_ns(self) -> int:
        return sum(p.cpu_ns for p in self.processes.values())

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())
