"""One refresh window -> one frame of the dashboard (a JSON-ready dict).

The exporter's loop hands every window it charged (usage, the model's
attribution, the meter's joules over exactly that window) to
:meth:`FrameMaker.add`. A frame holds watts over that window for the top N
rows by energy *in the window* (a process, a cgroup or a container, per
``by``), everything else summed in ``other``, idle, the model's total and the
meter's where there is one, so the stacked areas of a frame add up to its
total exactly (rows + other + idle = total). Each row also carries its
cumulative joules since the dashboard started, whether or not it was in the
top N at the time.

Memory: one running total per row key; a process's is dropped once it has
exited, and a key unseen for ``forget_after`` windows is dropped too, so a
long run holds what is alive and recently active.
"""

import math
from typing import Dict, Optional

from ebpf_energy.model.base import Attribution
from ebpf_energy.report import model_sentence
from ebpf_energy.usage import ProcessUsage, UsageWindow

BY_CHOICES = ("process", "cgroup", "container")
NO_CONTAINER = "(not in a container)"


class FrameMaker:
    def __init__(self, by: str = "process", top: int = 10, resolver=None, forget_after: int = 3600):
        if by not in BY_CHOICES:
            raise ValueError(f"by must be one of {BY_CHOICES}")
        if top < 1:
            raise ValueError("top must be at least 1")
        self.by, self.top = by, top
        self.forget_after = forget_after
        self._resolver = resolver
        self._cumulative: Dict[str, list] = {}  # key -> [joules, name, detail, last seq seen]
        self.other_j = self.idle_j = self.total_j = 0.0
        self.meter_j: Optional[float] = None
        self.drops = {"tasks": 0, "events": 0, "cpu_s": 0.0}
        self.seq = 0

    def _key(self, p: ProcessUsage):
        """(key, name, detail) of the row a process belongs to."""
        if self.by == "process":
            return str(p.pid), p.comm, f"pid {p.pid}"
        if self.by == "cgroup":
            path = p.cgroup or "(unknown cgroup)"
            return path, path, ""
        from ebpf_energy.containers import Resolver, identify

        if self._resolver is None:
            self._resolver = Resolver.from_env()
        owner = identify(p.cgroup)
        if not owner.container_id:
            return "", NO_CONTAINER, ""
        names = self._resolver.names(owner)
        short = owner.container_id[:12]
        detail = " ".join(x for x in (owner.runtime, short,
                                      f"pod {names.namespace}/{names.pod}" if names.pod else "") if x)
        return owner.container_id, names.container or short, detail

    def add(self, window: UsageWindow, att: Attribution, meter_j: Optional[Dict[str, float]],
            now: float) -> Optional[dict]:
        """The frame for one window (``now``: its end, Unix seconds); its ``seq``
        is the window's number, as ``ebpf_energy_refreshes_total`` counts them.

        The first window (from attach to the loop's first refresh, a few
        milliseconds) is counted in the totals but draws no frame: over so
        short a span a meter's resolution makes watts meaningless (a simulated
        package showed 900 W)."""
        self.seq += 1
        dt = window.duration_s
        per = 1.0 / dt if dt > 0 else 0.0
        window_j: Dict[str, list] = {}  # key -> [joules, name, detail]
        for pid, p in window.processes.items():
            key, name, detail = self._key(p)
            e = att.energy_j.get(pid, 0.0)
            acc = window_j.get(key)
            if acc is None:
                window_j[key] = [[e], name, detail]
            else:
                acc[0].append(e)
        for key, (js, name, detail) in window_j.items():
            j = math.fsum(js)
            c = self._cumulative.get(key)
            if c is None:
                c = self._cumulative[key] = [0.0, name, detail, self.seq]
            c[0] += j
            c[1], c[2], c[3] = name, detail, self.seq
            window_j[key] = j
        ranked = sorted(window_j.items(), key=lambda kv: (-kv[1], -self._cumulative[kv[0]][0], kv[0]))
        shown = [(k, j) for k, j in ranked[:self.top] if j > 0]
        other_j = math.fsum(j for _, j in ranked[len(shown):])
        rows = [{"key": k, "name": self._cumulative[k][1], "detail": self._cumulative[k][2],
                 "w": j * per, "j": self._cumulative[k][0]} for k, j in shown]
        self.other_j += other_j
        self.idle_j += att.idle_energy_j
        total = math.fsum(window_j.values()) + att.idle_energy_j
        self.total_j += total
        meter_w = None
        if meter_j:
            from ebpf_energy.model.rapl_split import package_joules

            m = package_joules(meter_j)
            self.meter_j = (self.meter_j or 0.0) + m
            meter_w = m * per
        self.drops["tasks"] += window.drops.get("tasks", 0)
        self.drops["events"] += window.drops.get("events", 0)
        self.drops["cpu_s"] += window.dropped_cpu_ns / 1e9
        self._forget(window)
        if self.seq == 1:
            return None
        return {
            "seq": self.seq, "t": now, "dt": dt, "by": self.by, "rows": rows,
            "other": {"w": other_j * per, "j": self.other_j, "n": len(ranked) - len(shown)},
            "idle": {"w": att.idle_energy_j * per, "j": self.idle_j},
            "total": {"w": total * per, "j": self.total_j},
            "meter": None if meter_w is None else {"w": meter_w, "j": self.meter_j},
            "domains_w": {d: j * per for d, j in sorted((meter_j or {}).items())},
            "drops": dict(self.drops),
            "model": dict(att.model),
            "model_text": model_sentence(att.model),
        }

    def _forget(self, window: UsageWindow) -> None:
        if self.by == "process":
            for pid, p in window.processes.items():
                if p.exited:
                    self._cumulative.pop(str(pid), None)
        if self.seq % 64 == 0:
            old = self.seq - self.forget_after
            for key in [k for k, c in self._cumulative.items() if c[3] < old]:
                del self._cumulative[key]

    @property
    def held(self) -> int:
        """Row keys with a running total (bounded: see the module docstring)."""
        return len(self._cumulative)
