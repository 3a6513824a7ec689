"""The core-class side of every report: per-class CPU time and joules, the
frequency the run knows, and which parts of the model are measured, fitted,
a default or unknown.

Kept apart from :mod:`ebpf_energy.report` so the table, JSON, CSV, exporter
and ``run`` all take these facts from one place.
"""

import math
from typing import Dict, List, Optional

from ebpf_energy.model.classes import UNKNOWN_CLASS, class_cpu_ns, class_split

UNSPLIT_SOURCES = ("procfs", "rusage")  # monitors that cannot tell which core a process ran on
MODEL_KEYS = ("classes", "parts", "frequency", "class_weights")  # shown apart, not as model parameters


def class_names(model: dict) -> List[str]:
    return [c["name"] for c in model.get("classes") or []] or ["cpu"]


def class_rows(processes: dict, model: dict, class_energy_j: Dict[str, float],
               source: Optional[str] = None) -> List[dict]:
    """One row per core class (and one for time no monitor could place):
    its CPUs, the processes' CPU time there and the joules charged for it.

    A ``source`` that never splits time by class (``/proc``, rusage) always
    has the unplaced row on a machine with several classes, even when no
    process ran in the window, so the report's shape does not depend on load."""
    names = class_names(model)
    cpu = class_cpu_ns(processes, names)
    info = {c["name"]: c for c in model.get("classes") or []}
    unsplit_source = source in UNSPLIT_SOURCES and len(names) > 1
    rows = []
    for name in names + ([UNKNOWN_CLASS] if unsplit_source or UNKNOWN_CLASS in cpu
                         or UNKNOWN_CLASS in class_energy_j else []):
        row = {"class": name, "cpus": info.get(name, {}).get("cpus"), "cpu_ns": cpu.get(name, 0),
               "energy_j": class_energy_j.get(name, 0.0)}
        for key in ("watts_per_cpu_second", "weight"):
            if key in info.get(name, {}):
                row[key] = info[name][key]
        rows.append(row)
    return rows


def tree_class_rows(processes: dict, model: dict, energy_j: Dict[int, float],
                    source: Optional[str] = None) -> List[dict]:
    """:func:`class_rows` for a subset of processes (``run``'s tree): each
    process's joules spread over its classes by the model's class weights."""
    names = class_names(model)
    weights = {c["name"]: c.get("watts_per_cpu_second", c.get("weight", 1.0)) for c in model.get("classes") or []}
    out: Dict[str, List[float]] = {}
    for key, p in processes.items():
        j = energy_j.get(key, 0.0)
        split = class_split(p, len(names))
        if split is None:
            out.setdefault(UNKNOWN_CLASS, []).append(j)
            continue
        w = [weights.get(n, 1.0) * ns for n, ns in zip(names, split)]
        total = sum(w)
        for n, x in zip(names, w):
            out.setdefault(n, []).append(j * x / total if total > 0 else 0.0)
    return class_rows(processes, model, {n: math.fsum(v) for n, v in out.items()}, source)


def thread_energy_j(attribution, p, t, process_j: float) -> float:
    """A thread's share of its process's joules: by CPU time weighted by each
    class's weight where both are split by class (a thread on a P core costs
    more than its sibling on an E core), else by CPU time."""
    model = attribution.model
    names = class_names(model)
    ps, ts = class_split(p, len(names)), class_split(t, len(names))
    if ps is None or ts is None or not is_hybrid(model):
        return attribution.thread_energy_j(p.cpu_ns, process_j, t.cpu_ns)
    w = [c.get("watts_per_cpu_second", c.get("weight", 1.0)) for c in model["classes"]]
    whole = sum(a * b for a, b in zip(w, ps))
    return process_j * sum(a * b for a, b in zip(w, ts)) / whole if whole > 0 else 0.0


def process_split(p, model: dict) -> Optional[Dict[str, int]]:
    """A process row's ``cpu_ns_by_class`` ({class name: ns}), None when unknown."""
    names = class_names(model)
    split = class_split(p, len(names))
    return None if split is None else dict(zip(names, split))


def frequency(window, model: dict) -> str:
    """What the run knew about CPU frequency: the monitor's word when it tracked
    it (or knows why not), else the model's (from the topology)."""
    said = getattr(window, "frequency", None)
    if said and said != "unknown":
        return said
    return model.get("frequency") or "unknown"


def parts_sentence(model: dict) -> str:
    """``total measured, idle fitted, class weights fitted, frequency unknown``;
    a bare "frequency unknown" is left to the line's own "frequency: ..." part."""
    parts = dict(model.get("parts") or {})
    if model.get("frequency") and parts.get("frequency") == "unknown":
        del parts["frequency"]
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in parts.items())


def is_hybrid(model: dict) -> bool:
    return len(model.get("classes") or []) > 1


def table_lines(report: dict) -> List[str]:
    """The table's lines about core classes on a hybrid machine (the model
    line already says the frequency and which parts are measured)."""
    model = report.get("model", {})
    rows = report.get("classes") or []
    if not is_hybrid(model):
        return []
    out = ["Core classes:   " + ", ".join(r["class"] for r in rows if r["class"] != UNKNOWN_CLASS)
           + f" (weights {model.get('class_weights')})"]
    for r in rows:
        w = r.get("watts_per_cpu_second", r.get("weight"))
        where = f" (CPUs {r['cpus']})" if r.get("cpus") else ""
        unit = "W per CPU-s" if "watts_per_cpu_second" in r else "weight"
        out.append(f"  class {r['class']}{where}: {r['cpu_ns'] / 1e6:.3f} ms, {r['energy_j'] * 1e3:.3f} mJ"
                   + (f", {unit} {w:g}" if w is not None else ""))
    return out


def csv_rows(report: dict, label: str) -> List[dict]:
    """A ``class`` line per core class on a hybrid machine: they break the
    processes' busy lines down again (they are not added to the total)."""
    if not is_hybrid(report.get("model", {})):
        return []
    return [{label: f"[class {r['class']}]", "row": "class", "cpu_ns": r["cpu_ns"], "energy_j": r["energy_j"]}
            for r in report.get("classes") or []]
