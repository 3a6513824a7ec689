"""The exporter's container, pod and service series (``exporter --by``).

Beside the process series, one counter per container (or pod, or systemd
unit) by the same rules as the processes' (see :mod:`ebpf_energy.exporter`):
only the ``top`` groups by energy over the run have a series of their own,
everything else is charged to one ``other`` series; a new series starts at
all its group spent since start (Prometheus takes a first value as the
baseline); a series leaving the top N keeps the value it had and its joules
go to ``other`` from then on; one that comes back continues. So counters
never go backwards, and in every refresh the increments of all group series
plus ``other`` are the processes' increments, exactly (CPU in integer ns).

A series is keyed by its label values (a pod by namespace and name, or by
uid while its name is unknown): a pod recreated under the same name continues
its series instead of making a duplicate one. A group is gone when its last
process is fully dead: kept ``linger_s`` if it has a series, dropped at once
if not (its joules are already in ``other``). Memory: live groups plus at
most ``top`` lingering ones.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from ebpf_energy.containers import LABELS, Resolver, group_of, pod_named, series_labels

OTHER = "other"
_PATH_CACHE_MAX = 65536  # cgroup path -> labels; cleared when full (paths churn with containers)


@dataclass
class _Group:
    labels: Tuple[str, ...]
    joules: float = 0.0  # over the run: ranks the top N
    cpu_ns: int = 0
    series_j: float = 0.0
    series_cpu_ns: int = 0
    exported: bool = False
    ever_exported: bool = False
    members: Set[int] = field(default_factory=set)
    gone_at: Optional[float] = None


class GroupLedger:
    """Cumulative joules and CPU per container, pod or unit series."""

    def __init__(self, by: str, top: int, linger_s: float, resolver: Optional[Resolver] = None):
        if by not in LABELS:
            raise ValueError(f"--by for the exporter is one of {', '.join(LABELS)}, got {by!r}")
        if top < 1:
            raise ValueError("top must be at least 1")
        self.by, self.top, self.linger_s = by, top, linger_s
        self.resolver = resolver or Resolver.from_env()
        self.groups: Dict[Tuple[str, ...], _Group] = {}
        self.member_of: Dict[int, Tuple[str, ...]] = {}  # live pid -> its group's labels
        self.other_j = 0.0
        self.other_cpu_ns = 0
        self._labels_of: Dict[Optional[str], Tuple[str, ...]] = {}

    def labels(self, cgroup: Optional[str]) -> Tuple[str, ...]:
        """A cgroup's series labels; kept once final (a pod's name known, or no pod)."""
        got = self._labels_of.get(cgroup)
        if got is None:
            fields = group_of(cgroup, self.by, self.resolver)[1]
            got = series_labels(fields, self.by)
            if pod_named(fields):
                if len(self._labels_of) >= _PATH_CACHE_MAX:
                    self._labels_of.clear()
                self._labels_of[cgroup] = got
        return got

    def add(self, window, att, gone: Set[int], now: float) -> None:
        """Charge one window (the same window and attribution the process ledger got)."""
        spent: Dict[Tuple[str, ...], List] = {}
        for p in window.processes.values():  # first learn every pod name this window can give
            self.labels(p.cgroup)
        for pid, p in window.processes.items():
            key = self.labels(p.cgroup)
            moved_from = self.member_of.get(pid)
            if moved_from != key:
                left = self.groups.get(moved_from)
                if left is not None:
                    left.members.discard(pid)
                    if not left.members and left.gone_at is None:
                        left.gone_at = now
                self.member_of[pid] = key
            g = self.groups.get(key)
            if g is None:
                g = self.groups[key] = _Group(key)
            g.members.add(pid)
            g.gone_at = None
            s = spent.setdefault(key, [[], 0])
            s[0].append(att.energy_j.get(pid, 0.0))
            s[1] += p.cpu_ns
        before = {}
        for key, (js, cpu) in spent.items():
            g, e = self.groups[key], math.fsum(js)
            g.joules += e
            g.cpu_ns += cpu
            if g.exported:
                before[key] = (g.series_j, g.series_cpu_ns, e, cpu)
                g.series_j += e
                g.series_cpu_ns += cpu
            else:
                self.other_j += e
                self.other_cpu_ns += cpu
        for pid in gone:
            key = self.member_of.pop(pid, None)
            g = self.groups.get(key)
            if g is not None:
                g.members.discard(pid)
                if not g.members and g.gone_at is None:
                    g.gone_at = now
        for key in [k for k, g in self.groups.items() if g.gone_at is not None
                    and (not g.exported or now - g.gone_at >= self.linger_s)]:
            del self.groups[key]
        self._rank(before)

    def _rank(self, before):
        """As the process ledger ranks: the top N take the series, a series
        leaving now keeps its last shown value and this window goes to other."""
        from ebpf_energy.exporter import rank_top

        pool = sorted(self.groups.values(), key=lambda g: (-g.joules, -g.cpu_ns, g.labels))
        for labels in rank_top(self, pool, before, lambda g: g.labels):
            del self.groups[labels]

    def rows(self) -> Tuple[Tuple[Tuple[str, ...], float, float], ...]:
        """(labels, cpu seconds, joules) of every exported series, then ``other``'s."""
        out = [(g.labels, g.series_cpu_ns / 1e9, g.series_j)
               for g in sorted((g for g in self.groups.values() if g.exported), key=lambda g: (-g.series_j, g.labels))]
        other = (OTHER,) + ("",) * (len(LABELS[self.by]) - 1)
        out.append((other, self.other_cpu_ns / 1e9, self.other_j))
        return tuple(out)


def metric_families(by: str, rows):
    """The two counter families of ``by``'s series, for the exporter's collector."""
    from prometheus_client.core import CounterMetricFamily

    what = {"container": "container", "pod": "Kubernetes pod", "service": "systemd unit"}[by]
    names = LABELS[by]
    cpu = CounterMetricFamily(f"ebpf_energy_{by}_cpu_seconds", f"CPU time per {what} (top N by energy; "
                              f"{names[0]}=\"other\" holds the rest, empty names the processes outside any).",
                              labels=names)
    joules = CounterMetricFamily(f"ebpf_energy_{by}_joules", f"Energy per {what} by the active model (top N by "
                                 f"energy; {names[0]}=\"other\" holds the rest).", labels=names)
    for labels, cpu_s, j in rows:
        cpu.add_metric(list(labels), cpu_s)
        joules.add_metric(list(labels), j)
    return [cpu, joules]
