"""Turn a measured window and its joules into what the user reads.

One canonical form, the report dictionary (the ``--json`` object, whose keys
README's "JSON output" lists), is built first; the table and the CSV are drawn from it, so
the three outputs can never disagree. Every output names the power model and
whether its joules are measured or modelled.

Totals always cover the whole machine. When filters (``--pid``, ``--comm``,
``--cgroup``) or an explicit ``--top`` leave processes out, what was left out
is summed under ``"omitted"``, so the books still balance:
``total_energy_j == sum(processes[].energy_j) + omitted.energy_j + idle_energy_j``
(with nothing omitted, the contract's plain form holds).
"""

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, TextIO

from ebpf_energy import class_report
from ebpf_energy.model.base import Attribution
from ebpf_energy.usage import UsageWindow

SCHEMA = 1
BY_CHOICES = ("process", "thread", "cgroup", "container", "pod", "service")
OWNER_VIEWS = ("container", "pod", "service")
DEFAULT_TABLE_TOP = 20
# How each RAPL domain relates to the package total that is split above.
DOMAIN_NOTES = {
    "package": "measured package total, split above",
    "core": "measured, part of the package total",
    "uncore": "measured, part of the package total",
    "dram": "measured, not in the package total",
    "psys": "measured, whole platform",
}
CLEAR_SCREEN = "\033[H\033[2J"


@dataclass(frozen=True)
class Selection:
    """Which processes to list. Each kind of filter given narrows the list;
    several values of one kind are alternatives (``--pid 1 --pid 2``).
    ``cgroup`` keeps that cgroup and every cgroup below it."""

    pids: FrozenSet[int] = frozenset()
    comms: FrozenSet[str] = frozenset()
    cgroup: Optional[str] = None

    def __bool__(self):
        return bool(self.pids or self.comms or self.cgroup)

    def matches(self, pid: int, comm: str, cgroup: Optional[str]) -> bool:
        if self.pids and pid not in self.pids:
            return False
        if self.comms and comm not in self.comms:
            return False
        if self.cgroup and self.cgroup != "/":
            if cgroup is None or not (cgroup == self.cgroup or cgroup.startswith(self.cgroup + "/")):
                return False
        return True


def normalize_cgroup(path: str, mount: Optional[str]) -> str:
    """``--cgroup`` accepts the v2 path (``/a/b``) or the full directory
    (``/sys/fs/cgroup/unified/a/b``); both become ``/a/b``."""
    path = path.rstrip("/") or "/"
    if mount and (path == mount or path.startswith(mount.rstrip("/") + "/")):
        path = path[len(mount.rstrip("/")):] or "/"
    if not path.startswith("/"):
        path = "/" + path
    return path


def _sort_key(row):
    return (-row["energy_j"], -row["cpu_ns"], row.get("pid", 0), row.get("tid", 0), row.get("cgroup") or "")


def build_report(window: UsageWindow, attribution: Attribution, *, threads: bool = False,
                 by: str = "process", selection: Optional[Selection] = None,
                 extra: Optional[dict] = None, resolver=None) -> dict:
    """The report dictionary for one window (sorted by energy, most first)."""
    if by not in BY_CHOICES:
        raise ValueError(f"--by must be one of {', '.join(BY_CHOICES)}, got {by!r}")
    threads = threads or by == "thread"
    rows, omitted = [], {"processes": 0, "cpu_ns": 0, "energy_j": []}
    for key, p in window.processes.items():
        e = attribution.energy_j.get(key, 0.0)
        if selection and not selection.matches(p.pid, p.comm, p.cgroup):
            omitted["processes"] += 1
            omitted["cpu_ns"] += p.cpu_ns
            omitted["energy_j"].append(e)
            continue
        row = {"pid": p.pid, "comm": p.comm, "cgroup": p.cgroup, "cgroup_id": p.cgroup_id,
               "cpu_ns": p.cpu_ns, "slices": p.slices, "energy_j": e, "exited": bool(p.exited),
               "cpu_ns_by_class": class_report.process_split(p, attribution.model), "nspid": p.nspid}
        if getattr(p, "cycles", None) is not None:  # where cpufreq says the frequency
            row["cycles"] = p.cycles
        if getattr(p, "wait_states", None) is not None:
            row["wait_states"] = p.wait_states.to_dict(getattr(p, "wait_states_counted", False))
        if threads:
            trows = [{"tid": t.tid, "comm": t.comm, "cpu_ns": t.cpu_ns, "slices": t.slices,
                      "energy_j": class_report.thread_energy_j(attribution, p, t, e),
                      "exited": bool(t.exited)} for t in p.threads]
            trows.sort(key=_sort_key)
            row["threads"] = trows
        rows.append(row)
    rows.sort(key=_sort_key)
    all_energy = list(attribution.energy_j.get(pid, 0.0) for pid in window.processes)
    report = {
        "schema": SCHEMA,
        "source": window.source,
        "duration_s": round(window.duration_s, 9),
        "ncpus": window.ncpus,
        "model": dict(attribution.model),
        "window": {"start_ns": window.start_ns, "end_ns": window.end_ns},
        "total_cpu_ns": window.total_cpu_ns,
        "idle_ns": window.idle_ns,
        "steal_ns": window.steal_ns,
        "total_energy_j": math.fsum(all_energy) + attribution.idle_energy_j,
        "idle_energy_j": attribution.idle_energy_j,
        "domains_j": dict(attribution.domains_j),
        "dropped": window.dropped,
        "drops": dict(window.drops),
        "dropped_cpu_ns": window.dropped_cpu_ns,
        "samples_or_events": window.samples_or_events,
        "classes": class_report.class_rows(window.processes, attribution.model, attribution.class_energy_j,
                                             window.source),
        "frequency": class_report.frequency(window, attribution.model),
        "processes_seen": len(window.processes),
        "processes": rows,
    }
    if selection:
        report["omitted"] = {"processes": omitted["processes"], "cpu_ns": omitted["cpu_ns"],
                             "energy_j": math.fsum(omitted["energy_j"])}
    if by == "cgroup":
        report["cgroups"] = group_by_cgroup(rows)
    if by in OWNER_VIEWS:
        report[by + "s"] = group_by_owner(rows, by, resolver)
    if getattr(window, "wait_states_info", None) is not None:
        report["wait_states"] = dict(window.wait_states_info)
    if window.source == "procfs":  # /proc counts no context switches: no slices, not 0 slices
        _drop_slices(report)
    if extra:
        report.update(extra)
    return report


def _drop_slices(report: dict) -> None:
    for key in ("processes", "cgroups", "containers", "pods", "services"):
        for row in report.get(key, []):
            row.pop("slices", None)
            for t in row.get("threads", []):
                t.pop("slices", None)


def drop_warning(window: UsageWindow, fix: str = "raise --max-tasks") -> Optional[str]:
    """One stderr sentence when the monitor lost anything, else None: every
    consumer (monitor, run, measure(), exporter, the pytest plugin) says it."""
    if not window.dropped and not window.dropped_cpu_ns:
        return None
    return (f"warning: {window.drops.get('tasks', 0)} scheduling slices ({window.dropped_cpu_ns / 1e6:.3f} ms of CPU) "
            f"lost to a full task map ({fix}) and {window.drops.get('events', 0)} events to a full ring buffer; "
            f"the CPU time reported is short by that much")


def group_by_cgroup(rows: List[dict]) -> List[dict]:
    groups: Dict[Optional[str], dict] = {}
    for r in rows:
        g = groups.setdefault(r["cgroup"], {"cgroup": r["cgroup"], "cgroup_id": r["cgroup_id"],
                                            "processes": 0, "cpu_ns": 0, "slices": 0, "energy_j": []})
        _add_to_group(g, r)
    return _finished_groups(groups)


def _add_to_group(g: dict, r: dict) -> None:
    g["processes"] += 1
    g["cpu_ns"] += r["cpu_ns"]
    g["slices"] += r["slices"]
    g["energy_j"].append(r["energy_j"])


def _finished_groups(groups: dict) -> List[dict]:
    """The groups with their joules summed exactly, most energy first."""
    out = []
    for g in groups.values():
        g["energy_j"] = math.fsum(g["energy_j"])
        out.append(g)
    out.sort(key=_sort_key)
    return out


def group_by_owner(rows: List[dict], by: str, resolver=None) -> List[dict]:
    """One row per container, pod or systemd unit (from each process's cgroup
    path, named from the runtimes' state on disk); processes that have none
    go to one row with empty names, so the rows add up to the process view."""
    from ebpf_energy.containers import Resolver, group_of, identify

    resolver = resolver or Resolver.from_env()
    for cgroup in {r["cgroup"] for r in rows}:  # first learn every pod name these containers give
        resolver.names(identify(cgroup))
    groups: Dict[str, dict] = {}
    for r in rows:
        key, fields = group_of(r["cgroup"], by, resolver)
        g = groups.get(key)
        if g is None:
            g = groups[key] = dict(fields, processes=0, cpu_ns=0, slices=0, energy_j=[])
        elif by == "pod" and fields["pod"] and not g["pod"]:  # the pod's name from any of its containers
            g.update(pod=fields["pod"], namespace=fields["namespace"])
        _add_to_group(g, r)
    return _finished_groups(groups)


GROUP_VIEWS = ("cgroup",) + OWNER_VIEWS
_COUNTS = ("processes", "cpu_ns", "slices")


def fold_groups(groups: List[dict], top: int, by: str) -> List[dict]:
    """The first ``top`` group rows, then the rest folded into one row named
    ``other`` (as the exporter's series are; ``groups`` says how many it
    holds), so the rows still add up to the process view."""
    if len(groups) <= top:
        return groups
    cut = groups[top:]
    row = {k: ("" if isinstance(v, str) else None) for k, v in cut[0].items() if k not in _COUNTS + ("energy_j",)}
    row[_LABEL_COLUMN[by] if by == "cgroup" else _NAME_KEY[by]] = "other"
    row["groups"] = len(cut)
    for k in _COUNTS:
        if all(k in g for g in cut):
            row[k] = sum(g[k] for g in cut)
    row["energy_j"] = math.fsum(g["energy_j"] for g in cut)
    return groups[:top] + [row]


_NAME_KEY = {"container": "container_id", "pod": "pod", "service": "service"}


def limit(report: dict, top: Optional[int]) -> dict:
    """A copy listing only the ``top`` processes; the rest are counted in
    ``truncated`` and summed into ``omitted`` so the totals still balance."""
    if top is None or len(report["processes"]) <= top:
        return report
    out = dict(report)
    kept, cut = report["processes"][:top], report["processes"][top:]
    out["processes"] = kept
    out["truncated"] = len(cut)
    prev = report.get("omitted", {"processes": 0, "cpu_ns": 0, "energy_j": 0.0})
    out["omitted"] = {"processes": prev["processes"] + len(cut),
                      "cpu_ns": prev["cpu_ns"] + sum(r["cpu_ns"] for r in cut),
                      "energy_j": math.fsum([prev["energy_j"]] + [r["energy_j"] for r in cut])}
    for by in GROUP_VIEWS:
        if by + "s" in report:
            out[by + "s"] = fold_groups(report[by + "s"], top, by)
    return out


# -- rendering -----------------------------------------------------------------

def model_sentence(model: dict) -> str:
    """One line saying which model made the joules and whether they are measured."""
    name = model.get("name", "?")
    params = ", ".join(f"{k}={_param(v)}" for k, v in model.items()
                       if k not in ("name", "measured", "profile", "meter", "simulated", "chosen_by", "meter_lost")
                       + class_report.MODEL_KEYS)
    text = name + (f" ({params})" if params else "")
    if model.get("profile"):
        text += f", profile {model['profile']}"
    if model.get("measured"):
        text += f" - measured by {model.get('meter') or 'a meter'}"
        if model.get("simulated"):
            text += " (SIMULATED meter)"
    elif model.get("chosen_by") == "-p":
        text += " - modelled, not measured (-p given)"
    else:
        text += " - modelled, not measured" + ("" if model.get("meter") else " (no energy meter)")
    if model.get("meter_lost"):
        text += f"; {model['meter_lost']}"
    if model.get("parts"):
        text += f"; {class_report.parts_sentence(model)}"
    if model.get("frequency"):
        text += f"; frequency: {model['frequency']}"
    return text


def _param(v) -> str:
    """A model parameter as a person reads it: 7.991 W, not 7.9914036810774345."""
    if isinstance(v, float):
        return str(v) if v == round(v, 3) else f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_param(x)}" for k, x in v.items()) + "}"
    return str(v)


def _ms(ns):
    return f"{ns / 1e6:.3f}"


def _mj(j):
    return f"{j * 1e3:.3f}"


def _rows_for(report: dict, by: str):
    """(header, rows of cells) for the table and the CSV."""
    if by == "cgroup":
        head = ["CGROUP", "PROCS", "CPU (ms)", "ENERGY (mJ)"]
        return head, [[g["cgroup"] or "?", str(g["processes"]), _ms(g["cpu_ns"]), _mj(g["energy_j"])]
                      for g in report.get("cgroups", [])]
    if by == "container":
        head = ["CONTAINER", "NAME", "POD", "NAMESPACE", "PROCS", "CPU (ms)", "ENERGY (mJ)"]
        return head, [[g["container_id"] or "(host)", g["container"] or "-", g["pod"] or "-", g["namespace"] or "-",
                       str(g["processes"]), _ms(g["cpu_ns"]), _mj(g["energy_j"])] for g in report.get("containers", [])]
    if by == "pod":
        head = ["POD", "NAMESPACE", "UID", "PROCS", "CPU (ms)", "ENERGY (mJ)"]
        return head, [[g["pod"] or ("(not a pod)" if not g["pod_uid"] else "?"), g["namespace"] or "-",
                       g["pod_uid"] or "-", str(g["processes"]), _ms(g["cpu_ns"]), _mj(g["energy_j"])]
                      for g in report.get("pods", [])]
    if by == "service":
        head = ["SERVICE", "PROCS", "CPU (ms)", "ENERGY (mJ)"]
        return head, [[g["service"] or "(no unit)", str(g["processes"]), _ms(g["cpu_ns"]), _mj(g["energy_j"])]
                      for g in report.get("services", [])]
    if by == "thread":
        head = ["PID", "TID", "COMM", "CPU (ms)", "ENERGY (mJ)"]
        threads = [(p, t) for p in report["processes"] for t in p.get("threads", [])]
        threads.sort(key=lambda pt: _sort_key(pt[1]))
        return head, [[str(p["pid"]), str(t["tid"]), _comm(t), _ms(t["cpu_ns"]), _mj(t["energy_j"])]
                      for p, t in threads]
    if _with_threads(report):  # --threads: each process, then its threads under it (PID left blank)
        head = ["PID", "TID", "COMM", "CPU (ms)", "ENERGY (mJ)"]
        rows = []
        for p in report["processes"]:
            rows.append([str(p["pid"]), "-", _comm(p), _ms(p["cpu_ns"]), _mj(p["energy_j"])])
            rows.extend(["", str(t["tid"]), "  " + _comm(t), _ms(t["cpu_ns"]), _mj(t["energy_j"])]
                        for t in p["threads"])
        return head, rows
    if any(p.get("nspid") for p in report["processes"]):  # some run in another PID namespace: both PIDs
        head = ["PID", "NSPID", "COMM", "CPU (ms)", "ENERGY (mJ)"]
        rows = [[str(p["pid"]), str(p["nspid"] or "-"), _comm(p), _ms(p["cpu_ns"]), _mj(p["energy_j"])]
                for p in report["processes"]]
    else:
        head = ["PID", "COMM", "CPU (ms)", "ENERGY (mJ)"]
        rows = [[str(p["pid"]), _comm(p), _ms(p["cpu_ns"]), _mj(p["energy_j"])] for p in report["processes"]]
    if _with_waits(report):  # --classify: the shares of each state and the class
        from ebpf_energy.wait_states import TABLE_HEAD, table_cells

        head = head + TABLE_HEAD
        rows = [r + table_cells(p) for r, p in zip(rows, report["processes"])]
    return head, rows


def _with_waits(report: dict) -> bool:
    return "wait_states" in report


def _with_threads(report: dict) -> bool:
    return any("threads" in p for p in report["processes"])


def _first_groups(rows, top):
    """The first ``top`` rows, a process's thread rows (blank PID) kept with it."""
    out, n = [], 0
    for r in rows:
        if r[0] != "":
            n += 1
            if n > top:
                break
        out.append(r)
    return out


def _comm(row):
    return row["comm"] + (" (exited)" if row.get("exited") else "")


def render_table(report: dict, by: str = "process", top: Optional[int] = DEFAULT_TABLE_TOP,
                 title: Optional[str] = None) -> str:
    if by in GROUP_VIEWS and top is not None:  # the rest folded into an "other" row
        report = dict(report, **{by + "s": fold_groups(report.get(by + "s", []), top, by)})
        top = None
    head, rows = _rows_for(report, by)
    shown = rows if top is None else _first_groups(rows, top)
    widths = [max([len(h)] + [len(r[i]) for r in shown]) for i, h in enumerate(head)]
    left = {"COMM", "CGROUP", "CONTAINER", "NAME", "POD", "NAMESPACE", "UID", "SERVICE", "CLASS"}

    def line(cells):
        return "  ".join(c.ljust(w) if h in left else c.rjust(w)
                         for c, w, h in zip(cells, widths, head)).rstrip()

    out = []
    if title:
        out.append(title)
    out.append(line(head))
    out.extend(line(r) for r in shown)
    hidden = sum(1 for r in rows[len(shown):] if r[0] != "")
    if hidden:
        out.append(f"... {hidden} more (use --top N, or --json for all)")
    out.append("")
    span = report["duration_s"]
    cpus = report.get("ncpus")
    lost = report.get("dropped_cpu_ns") or 0
    out.append(f"Total CPU time: {_ms(report['total_cpu_ns'])} ms over {span:.3f} s"
               + (f" on {cpus} CPUs" if cpus else "")
               # a full task map lost slices: the total is short by them, and says so where it is read
               + (f" (without the {_ms(lost)} ms of CPU lost to a full task map)" if lost else ""))
    out.append(f"Idle time:      {_ms(report['idle_ns'])} ms (summed over CPUs)")
    if report.get("steal_ns"):
        out.append(f"Steal time:     {_ms(report['steal_ns'])} ms (summed over CPUs: taken by the hypervisor;"
                   f" CPU + idle + steal = CPUs x window)")
    out.append(f"Total energy:   {_mj(report['total_energy_j'])} mJ"
               f" (processes {_mj(report['total_energy_j'] - report['idle_energy_j'])}"
               f" + idle {_mj(report['idle_energy_j'])})")
    for d, j in sorted(report.get("domains_j", {}).items()):
        out.append(f"  {d}: {_mj(j)} mJ ({DOMAIN_NOTES.get(d, 'measured, not in the split')})")
    out.append(f"Model:          {model_sentence(report['model'])}")
    out.extend(class_report.table_lines(report))
    if _with_waits(report):
        from ebpf_energy.wait_states import table_note

        out.append(table_note(report))
    om = report.get("omitted")
    if om and om["processes"]:
        out.append(f"Not listed:     {om['processes']} processes, {_ms(om['cpu_ns'])} ms, "
                   f"{_mj(om['energy_j'])} mJ (filtered or cut)")
    out.append(f"Seen:           {report.get('processes_seen', len(report['processes']))} processes; "
               f"dropped {report['dropped']} ({', '.join(f'{k} {v}' for k, v in report['drops'].items())})"
               + (f", {_ms(report['dropped_cpu_ns'])} ms of CPU lost" if report.get("dropped_cpu_ns") else ""))
    s = report.get("sampler")
    if s and "samples" in s:
        out.append(f"Samples:        {s['samples']} every {s['interval_s']} s, {s['late_samples']} late, "
                   f"{s['missed_deadlines']} missed; {s.get('vanished', 0)} vanished mid-read")
    if "overhead_cpu_ns" in report and span > 0:
        # a share of a window shorter than a second says more about the final read than the monitor
        share = f" ({report['overhead_cpu_ns'] / (span * 1e9) * 100:.2f}% of one CPU)" if span >= 1 else ""
        out.append(f"Monitor's own CPU: {_ms(report['overhead_cpu_ns'])} ms{share} while measuring")
    return "\n".join(out) + "\n"


def _cell(v):
    """A CSV cell: 5.198197185, not 5.198197185000001 (nine decimals: nanojoules)."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.9f}".rstrip("0").rstrip(".") if math.isfinite(v) else str(v)
    return v


def csv_header(by: str, with_interval: bool, threads: bool = False, slices: bool = True,
               waits: bool = False) -> List[str]:
    """The columns of ``by``'s CSV. ``row`` says what a line is (a process,
    thread or group, then ``other``, ``idle``, ``steal``, ``dropped`` and
    ``total``) and ``model`` names the model on the ``total`` line, so a CSV
    alone tells how its joules were made and that they add up."""
    cols = {"process": ["pid"] + (["tid"] if threads else []) + ["comm", "cgroup", "cgroup_id", "cpu_ns", "slices",
                                                               "energy_j", "exited", "nspid"],
            "thread": ["pid", "tid", "comm", "cgroup", "cpu_ns", "slices", "energy_j", "exited"],
            "cgroup": ["cgroup", "cgroup_id", "processes", "cpu_ns", "slices", "energy_j"],
            "container": ["container_id", "container", "runtime", "pod", "namespace", "processes", "cpu_ns",
                          "slices", "energy_j"],
            "pod": ["pod", "namespace", "pod_uid", "qos", "processes", "cpu_ns", "slices", "energy_j"],
            "service": ["service", "processes", "cpu_ns", "slices", "energy_j"]}[by]
    if not slices:
        cols = [c for c in cols if c != "slices"]
    if waits and by == "process":
        from ebpf_energy.wait_states import CSV_COLUMNS

        cols = cols + CSV_COLUMNS
    return (["interval"] if with_interval else []) + cols + ["row", "model"]


# The column a summary line's label goes in, per view: the first text column.
_LABEL_COLUMN = {"process": "comm", "thread": "comm", "cgroup": "cgroup", "container": "container",
                 "pod": "pod", "service": "service"}


def _summary_rows(report: dict, rows: List[dict], by: str) -> List[dict]:
    """``other`` (rows left out by --top or a filter), ``idle``, ``steal``,
    ``dropped`` and ``total``: the process/group lines plus these sum to the
    total, in CPU-ns and in joules."""
    label = _LABEL_COLUMN[by]
    kind = "process" if by == "process" else by  # the lines that partition the busy time
    shown_cpu = sum(r["cpu_ns"] for r in rows if r["row"] == kind)
    shown_j = math.fsum(r["energy_j"] for r in rows if r["row"] == kind)
    busy_j = report["total_energy_j"] - report["idle_energy_j"]
    out = []
    other_cpu = report["total_cpu_ns"] - shown_cpu
    other_j = busy_j - shown_j
    if other_cpu or abs(other_j) > 1e-12:
        out.append({label: "[other]", "row": "other", "cpu_ns": other_cpu, "energy_j": max(other_j, 0.0)})
    out.append({label: "[idle]", "row": "idle", "cpu_ns": report["idle_ns"], "energy_j": report["idle_energy_j"]})
    out.append({label: "[steal]", "row": "steal", "cpu_ns": report.get("steal_ns", 0), "energy_j": 0.0})
    out.append({label: "[dropped]", "row": "dropped", "cpu_ns": report.get("dropped_cpu_ns", 0), "energy_j": 0.0})
    out.extend(class_report.csv_rows(report, label))
    out.append({label: "[total]", "row": "total", "cpu_ns": report["total_cpu_ns"],
                "energy_j": report["total_energy_j"], "model": model_sentence(report["model"])})
    return out


def render_csv(report: dict, by: str = "process", interval=None, header: bool = True) -> str:
    """Rows of one report as CSV; ``interval`` (a number or ``"summary"``)
    fills a leading column when given."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    threads = by == "process" and _with_threads(report)
    waits = _with_waits(report)
    cols = csv_header(by, interval is not None, threads, slices=report.get("source") != "procfs", waits=waits)
    if header:
        w.writerow(cols)
    if by in GROUP_VIEWS:  # a folded "other" group is the [other] line below
        rows = [dict(g, row=by) for g in report.get(by + "s", []) if "groups" not in g]
    elif by == "thread":
        rows = [dict(t, pid=p["pid"], cgroup=p["cgroup"], row="thread") for p in report["processes"]
                for t in p.get("threads", [])]
        rows.sort(key=_sort_key)
    elif threads:  # each process (tid empty), then its threads
        rows = []
        for p in report["processes"]:
            rows.append(dict(p, row="process"))
            rows.extend(dict(t, pid=p["pid"], cgroup=p["cgroup"], cgroup_id=p["cgroup_id"], row="thread")
                        for t in p["threads"])
    else:
        rows = [dict(p, row="process") for p in report["processes"]]
    if waits:
        from ebpf_energy.wait_states import csv_fields

        rows = [dict(r, **csv_fields(r)) if r["row"] == "process" else r for r in rows]
    rows += _summary_rows(report, rows, by)
    for r in rows:
        r = dict(r, interval=interval)
        w.writerow([_cell(r.get(c)) for c in cols])
    return buf.getvalue()


class Reporter:
    """Writes a run's output: per interval (when asked) and the summary.

    ``fmt`` is ``table``, ``json`` or ``csv``. ``top`` None means the default:
    20 rows in the table, everything in JSON and CSV. Only the report goes
    to ``stream``; the screen is cleared between refreshes only on a tty.
    """

    def __init__(self, stream: TextIO, fmt: str = "table", by: str = "process", threads: bool = False,
                 top: Optional[int] = None, selection: Optional[Selection] = None,
                 intervals: bool = False, title: str = "ebpf-energy"):
        self.stream = stream
        self.fmt = fmt
        self.by = by
        self.threads = threads or by == "thread"
        self.top = top
        self.selection = selection
        self.intervals = intervals
        self.title = title
        self._csv_header_done = False
        self.last_summary: Optional[dict] = None
        try:
            self._tty = stream.isatty()
        except (AttributeError, ValueError):
            self._tty = False

    def _report(self, window, attribution, extra):
        return build_report(window, attribution, threads=self.threads, by=self.by,
                            selection=self.selection, extra=extra)

    def _emit(self, report, label):
        if self.fmt == "json":
            obj = limit(report, self.top)
            if self.intervals:
                obj = dict(obj, **({"summary": True} if label == "summary" else {"interval": label}))
                self.stream.write(json.dumps(obj, separators=(",", ":")) + "\n")
            else:
                self.stream.write(json.dumps(obj, indent=2) + "\n")
        elif self.fmt == "csv":
            obj = limit(report, self.top)
            self.stream.write(render_csv(obj, self.by, label if self.intervals else None,
                                         header=not self._csv_header_done))
            self._csv_header_done = True
        else:
            top = DEFAULT_TABLE_TOP if self.top is None else self.top
            if label == "summary":
                title = f"{self.title}: summary of {report['duration_s']:.3f} s"
            else:
                title = f"{self.title}: interval {label}, {report['duration_s']:.3f} s"
            text = render_table(report, self.by, top, title=title)
            if label != "summary" and self._tty:
                text = CLEAR_SCREEN + text
            elif self.intervals:
                text = text + "\n"
            self.stream.write(text)
        self.stream.flush()

    def interval(self, n: int, window: UsageWindow, attribution: Attribution, extra: Optional[dict] = None):
        self._emit(self._report(window, attribution, extra), n)

    def summary(self, window: UsageWindow, attribution: Attribution, extra: Optional[dict] = None) -> dict:
        report = self._report(window, attribution, extra)
        self._emit(report, "summary")
        self.last_summary = report  # for what follows it (the plot shows the same rows)
        return report
