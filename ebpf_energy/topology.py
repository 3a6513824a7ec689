"""Core classes: which CPUs run a CPU-second at which power.

A hybrid Intel part lists its performance and efficiency cores in
``devices/cpu_core/cpus`` and ``devices/cpu_atom/cpus`` (two PMUs, one per
core type); an Arm big.LITTLE part gives each CPU a relative
``devices/system/cpu/cpuN/cpu_capacity`` (1024 for the biggest). Everything
else, and a machine whose capacities are all equal, is homogeneous: one
class. The BPF program accounts time per class index, not per CPU, so the
map stays small on 256-CPU hosts; hence at most :data:`MAX_CLASSES`.

The tree is read from ``root`` (default ``/sys``; ``--topology-root`` or
``EBPF_ENERGY_TOPOLOGY_ROOT``), so tests declare the classes of this
machine's real CPUs, e.g. a 2-CPU VM as one P core and one E core.

Frequency: where cpufreq exists (``cpuN/cpufreq`` or ``cpufreq/policyN``)
the time could be weighted by it; where it does not, every report says
:data:`NO_CPUFREQ` and the model is the time-based one.
"""

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

DEFAULT_ROOT = "/sys"
ENV = "EBPF_ENERGY_TOPOLOGY_ROOT"
MAX_CLASSES = 4
NO_CPUFREQ = "unknown (no cpufreq)"
_CAPACITY_NAMES = {1: ["cpu"], 2: ["big", "LITTLE"], 3: ["big", "mid", "LITTLE"], 4: ["prime", "big", "mid", "LITTLE"]}


class TopologyError(Exception):
    """The tree says something that cannot be a CPU topology."""


MAX_CPUS = 8192  # CONFIG_NR_CPUS at most: a CPU list beyond it describes no machine


def parse_cpulist(text: str) -> List[int]:
    """The kernel's cpulist format (``0-3,8,10-11``) as sorted CPU numbers."""
    out = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise TopologyError(f"{text.strip()!r} is not a CPU list") from None
        if a < 0 or b < a:
            raise TopologyError(f"{text.strip()!r} is not a CPU list")
        if b >= MAX_CPUS:
            raise TopologyError(f"{text.strip()!r} names CPU {b}: no kernel has more than {MAX_CPUS:,} CPUs")
        out.update(range(a, b + 1))
    return sorted(out)


def format_cpulist(cpus) -> str:
    """The inverse of :func:`parse_cpulist`: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    cpus, parts, i = sorted(cpus), [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        parts.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(parts)


@dataclass(frozen=True)
class CoreClass:
    name: str  # "P", "E", "big", "LITTLE", "cpu", ...
    cpus: Tuple[int, ...]
    capacity: Optional[int] = None  # cpu_capacity where the tree gives one


@dataclass(frozen=True)
class Topology:
    """Classes in index order (the index the BPF program and the models use)."""

    classes: Tuple[CoreClass, ...]
    source: str  # "hybrid (cpu_core/cpu_atom)", "cpu_capacity", "homogeneous"
    cpufreq: bool
    root: str

    @property
    def hybrid(self) -> bool:
        return len(self.classes) > 1

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.classes]

    def cpu_class(self, ncpus: Optional[int] = None) -> List[int]:
        """A class index per CPU number, ``ncpus`` long (default: up to the
        highest CPU named); CPUs the tree does not name are in class 0."""
        top = max((cpu for c in self.classes for cpu in c.cpus), default=-1) + 1
        table = [0] * (top if ncpus is None else ncpus)
        for i, c in enumerate(self.classes):
            for cpu in c.cpus:
                if cpu < len(table):
                    table[cpu] = i
        return table

    @property
    def frequency(self) -> str:
        return "cpufreq present (time-based model)" if self.cpufreq else NO_CPUFREQ

    def describe(self) -> dict:
        """What a profile records and a report shows: enough to refuse a
        profile fitted on another layout."""
        return {"source": self.source,
                "classes": [{"name": c.name, "cpus": format_cpulist(c.cpus),
                             **({"capacity": c.capacity} if c.capacity is not None else {})}
                            for c in self.classes]}

    def same_layout(self, recorded: dict) -> bool:
        mine = self.describe()
        return [(c["name"], c["cpus"]) for c in mine["classes"]] == \
            [(c.get("name"), c.get("cpus")) for c in recorded.get("classes", [])]


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise TopologyError(f"cannot read {path}: {e.strerror or e}") from None


def _present_cpus(root: str) -> List[int]:
    cpu_dir = os.path.join(root, "devices", "system", "cpu")
    text = _read(os.path.join(cpu_dir, "online"))
    if text is not None and text.strip():
        return parse_cpulist(text)
    try:
        names = os.listdir(cpu_dir)
    except OSError:
        return []
    return sorted(int(n[3:]) for n in names if n.startswith("cpu") and n[3:].isdigit())


def _has_cpufreq(root: str, cpus: List[int]) -> bool:
    cpu_dir = os.path.join(root, "devices", "system", "cpu")
    try:
        if any(n.startswith("policy") for n in os.listdir(os.path.join(cpu_dir, "cpufreq"))):
            return True
    except OSError:
        pass
    return any(os.path.isdir(os.path.join(cpu_dir, f"cpu{c}", "cpufreq")) for c in cpus)


def _by_capacity(root: str, cpus: List[int]) -> Dict[int, List[int]]:
    caps: Dict[int, List[int]] = {}
    for cpu in cpus:
        text = _read(os.path.join(root, "devices", "system", "cpu", f"cpu{cpu}", "cpu_capacity"))
        if text is None:
            return {}  # capacities for some CPUs only: nothing to go on
        try:
            caps.setdefault(int(text.strip()), []).append(cpu)
        except ValueError:
            raise TopologyError(f"cpu{cpu}/cpu_capacity holds {text.strip()!r}, not a number") from None
    return caps


def _merge_closest(caps: Dict[int, List[int]]) -> Dict[int, List[int]]:
    """More distinct capacities than classes: merge the two closest (keeping
    the larger capacity as the name) until :data:`MAX_CLASSES` remain."""
    caps = dict(caps)
    while len(caps) > MAX_CLASSES:
        keys = sorted(caps)
        i = min(range(len(keys) - 1), key=lambda k: keys[k + 1] - keys[k])
        caps[keys[i + 1]] = sorted(caps[keys[i + 1]] + caps.pop(keys[i]))
    return caps


def read_topology(root: Optional[str] = None) -> Topology:
    """The core classes of the machine ``root`` describes (``/sys`` by default)."""
    root = root or os.environ.get(ENV) or DEFAULT_ROOT
    if not os.path.isdir(root):
        raise TopologyError(f"topology root {root} is not a folder")
    cpus = _present_cpus(root)
    p_text = _read(os.path.join(root, "devices", "cpu_core", "cpus"))
    e_text = _read(os.path.join(root, "devices", "cpu_atom", "cpus"))
    if p_text is not None and e_text is not None:
        p, e = parse_cpulist(p_text), parse_cpulist(e_text)
        if set(p) & set(e):
            raise TopologyError(f"CPUs {format_cpulist(set(p) & set(e))} are listed as both P and E cores")
        classes = tuple(c for c in (CoreClass("P", tuple(p)), CoreClass("E", tuple(e))) if c.cpus)
        if len(classes) == 2:
            return Topology(classes, "hybrid (cpu_core/cpu_atom)", _has_cpufreq(root, cpus or p + e), root)
    caps = _by_capacity(root, cpus) if cpus else {}
    if len(caps) > 1:
        caps = _merge_closest(caps)
        names = _CAPACITY_NAMES[len(caps)]
        classes = tuple(CoreClass(n, tuple(caps[cap]), cap) for n, cap in zip(names, sorted(caps, reverse=True)))
        return Topology(classes, "cpu_capacity", _has_cpufreq(root, cpus), root)
    if not cpus:
        cpus = list(range(os.cpu_count() or 1))
    return Topology((CoreClass("cpu", tuple(cpus)),), "homogeneous", _has_cpufreq(root, cpus), root)


def sampler_kwargs(topology: Optional[Topology] = None) -> dict:
    """What the eBPF sampler needs from the topology: ``cpu_class`` (a class
    per possible CPU) on a machine with several classes, and frequency
    tracking (cycles per slice) where cpufreq exists, read from the same tree;
    nothing on a homogeneous machine without cpufreq (the sampler's defaults)."""
    from ebpf_energy.loader.syscall import num_possible_cpus

    topology = topology or read_topology()
    out = {}
    if topology.hybrid:
        # one entry per possible CPU: CPUs the tree names beyond them do not exist here
        ncpus = num_possible_cpus()
        beyond = [c for k in topology.classes for c in k.cpus if c >= ncpus]
        if beyond:
            raise TopologyError(f"the topology at {topology.root} names CPUs {format_cpulist(beyond)}, which this "
                                f"machine does not have (CPUs 0-{ncpus - 1})")
        out["cpu_class"] = topology.cpu_class(ncpus)
    if topology.cpufreq:
        out["track_frequency"] = True
        out["cpu_root"] = os.path.join(topology.root, "devices", "system", "cpu")
    return out
