"""CPU time per core class, weighted: what every model shares about hybrid CPUs.

A CPU-second on a performance core costs more than one on an efficiency core.
The eBPF monitor splits each process's time by core class
(``ProcessUsage.cpu_ns_by_class``, indexed like :class:`~ebpf_energy.topology.Topology`);
the models weigh each class's time by that class's watts per CPU-second
(fitted by ``calibrate``) or by a stated default. The /proc poller cannot
split time by class (``cpu_ns_by_class`` is None): such a process's time is
weighed by the classes' CPU-count-weighted mean, and its joules are counted
under :data:`UNKNOWN_CLASS` in the per-class totals.

Every model also says which of its parts are measured, fitted, a default or
unknown (:func:`parts`), so no modelled figure passes for a measured one.
"""

from typing import Dict, List, Optional, Sequence

from ebpf_energy.topology import NO_CPUFREQ, Topology, format_cpulist

UNKNOWN_CLASS = "(unknown)"
DEFAULT_WEIGHT = 1.0  # without a fitted slope per class, every class's CPU-second weighs the same


def class_split(p, nclasses: int) -> Optional[List[int]]:
    """A process's (or thread's) ns per class, or None when its monitor did not
    split them on a machine with several classes."""
    split = getattr(p, "cpu_ns_by_class", None)
    if split is None:
        # one class: all of it ran there, whichever monitor measured it
        return [p.cpu_ns] if nclasses == 1 else None
    split = list(split)[:nclasses]
    return split + [0] * (nclasses - len(split))


class ClassWeights:
    """A weight per class (watts per CPU-second, or relative), and where it came from."""

    def __init__(self, topology: Optional[Topology], weights: Optional[Dict[str, float]] = None,
                 origin: str = "default", uniform: float = DEFAULT_WEIGHT):
        """``weights`` by class name (missing ones weigh ``uniform``);
        ``origin``: ``fitted``, ``given`` or ``default``."""
        self.topology = topology
        self.names = topology.names if topology is not None else ["cpu"]
        self.sizes = [len(c.cpus) for c in topology.classes] if topology is not None else [1]
        self.weights = [float((weights or {}).get(n, uniform)) for n in self.names]
        self.origin = origin if (topology is not None and topology.hybrid) else "n/a (one core class)"

    @classmethod
    def from_profile(cls, topology: Optional[Topology], profile: Optional[dict],
                     uniform: float = DEFAULT_WEIGHT) -> "ClassWeights":
        """The profile's fitted slopes when it has one per class of ``topology``,
        else every class weighs ``uniform`` (a stated default)."""
        cw = (profile or {}).get("class_watts")
        if topology is not None and cw and all(n in cw for n in topology.names):
            return cls(topology, cw, "fitted")
        return cls(topology, None, "default", uniform)

    @property
    def mean(self) -> float:
        """The weight of a CPU-second whose class is unknown: the CPU-count-weighted mean."""
        return sum(w * s for w, s in zip(self.weights, self.sizes)) / max(sum(self.sizes), 1)

    def weighted_ns(self, p) -> float:
        split = class_split(p, len(self.names))
        if split is None:
            return p.cpu_ns * self.mean
        return sum(w * ns for w, ns in zip(self.weights, split))

    def per_class_joules(self, processes: dict, joules_of) -> Dict[str, float]:
        """Each class's share of the processes' joules, ``joules_of(pid, p)``
        spread over the process's classes by weighted time."""
        out = {n: 0.0 for n in self.names}
        for pid, p in processes.items():
            j = joules_of(pid, p)
            split = class_split(p, len(self.names))
            if split is None:
                if j:
                    out[UNKNOWN_CLASS] = out.get(UNKNOWN_CLASS, 0.0) + j
                continue
            wsum = sum(w * ns for w, ns in zip(self.weights, split))
            if wsum > 0:
                for n, w, ns in zip(self.names, self.weights, split):
                    out[n] += j * w * ns / wsum
        return out

    def describe(self, unit: str = "weight") -> List[dict]:
        classes = self.topology.classes if self.topology is not None else []
        return [{"name": n, "cpus": format_cpulist(c.cpus), unit: round(w, 6)}
                for n, w, c in zip(self.names, self.weights, classes)]


def class_cpu_ns(processes: dict, names: Sequence[str]) -> Dict[str, int]:
    """CPU ns per class over all processes (unsplit time under :data:`UNKNOWN_CLASS`)."""
    out = {n: 0 for n in names}
    for p in processes.values():
        split = class_split(p, len(names))
        if split is None:
            if p.cpu_ns:
                out[UNKNOWN_CLASS] = out.get(UNKNOWN_CLASS, 0) + p.cpu_ns
            continue
        for n, ns in zip(names, split):
            out[n] += ns
    return out


def frequency_of(window, topology: Optional[Topology]) -> str:
    """What the run knows about CPU frequency: the monitor's word, else the topology's."""
    freq = getattr(window, "frequency", None)
    if freq:
        return freq
    return topology.frequency if topology is not None else NO_CPUFREQ


def parts(total: str, idle: str, class_weights: str, frequency: str, frequency_use: Optional[str] = None) -> dict:
    """Which parts of a model's joules are ``measured``, ``fitted``, a stated
    ``default``, or ``unknown``: one vocabulary for every model and report.
    ``frequency_use``: what a model fitted per GHz-second did with the
    frequency (:func:`ebpf_energy.model.frequency.basis`), when it matters."""
    freq = frequency_use or ("unknown" if frequency.startswith("unknown") else "not used (time-based model)")
    return {"total": total, "idle": idle, "class_weights": class_weights, "frequency": freq}
