"""Per-process energy as Prometheus counters, with bounded memory and cardinality.

Every ``interval`` seconds the exporter reads the eBPF sampler (cumulative
since start), takes the difference with the previous read, lets the power
model turn that window into joules (with the meter's joules over exactly that
window), and adds the result to a ledger. Scrapes only format the ledger's
last snapshot, so a scrape costs O(top N), whatever ran before.

Series and why they stay honest (counters never go backwards):

* Only the ``top`` processes by energy over the run get their own series
  (labels pid, comm, cgroup); everything else is charged to one series with
  ``pid="other"``. A process's series starts at everything it spent since the
  exporter started (a new series: Prometheus takes its first value as the
  baseline, so nothing is counted twice by ``rate``/``increase``). While it
  is out of the top N its joules go to ``other``; if it comes back, its series
  continues from the value it had when it left (no jump), so
  ``sum(increase(...))`` over all series equals the joules attributed.
* An exported process that exits keeps its final value for ``linger_s``
  seconds (so a scrape sees it), then its series ends; a process that exits
  while charged to ``other`` is dropped at once: its joules are already there.

Memory: the ledger holds live processes plus at most ``top`` lingering ones.
The sampler is told to forget a process once every thread of it has had its
last switch-out accounted (:meth:`EbpfSampler.forget`), and dead threads of
live processes are merged into one record per process, so a week-long run
holds what is alive now, not everything that ever ran.
"""

import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

from ebpf_energy.class_report import class_rows
from ebpf_energy.driver import MeterGuard, WindowStepper
from ebpf_energy.model.base import Attribution, PowerModel
from ebpf_energy.report import drop_warning
from ebpf_energy.usage import UsageWindow

DEFAULT_LISTEN = "127.0.0.1:9877"
DEFAULT_TOP = 20
DEFAULT_INTERVAL_S = 2.0
DEFAULT_LINGER_S = 120.0
OTHER = "other"


class ExporterError(Exception):
    """A clear, one-sentence reason the exporter cannot run."""


def require_prometheus_client():
    """Import prometheus_client (the ``[exporter]`` extra) or say how to get it."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ExporterError("the exporter needs the Python package prometheus_client: "
                            "pip install 'ebpf-energy[exporter]' (or apt install python3-prometheus-client)") from None
    return prometheus_client


def parse_listen(text: str) -> Tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ExporterError(f"--listen wants HOST:PORT (e.g. {DEFAULT_LISTEN} or [::1]:9877), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


# -- the sampler, forgetting what is gone ------------------------------------------------

# -- the ledger ------------------------------------------------------------------------

@dataclass
class _Proc:
    pid: int
    comm: str
    cgroup: str
    joules: float = 0.0  # over the run: ranks the top N
    cpu_ns: int = 0
    series_j: float = 0.0  # the value of its own series
    series_cpu_ns: int = 0
    exported: bool = False
    ever_exported: bool = False
    gone_at: Optional[float] = None  # fully dead since (monotonic s)


@dataclass(frozen=True)
class Snapshot:
    """What a scrape shows: plain values, built once per refresh."""

    processes: Tuple[Tuple[str, str, str, float, float], ...] = ()  # (pid, comm, cgroup, cpu_s, joules)
    other_cpu_s: float = 0.0
    other_j: float = 0.0
    idle_j: float = 0.0
    idle_cpu_s: float = 0.0
    total_j: float = 0.0
    domains_j: Dict[str, float] = field(default_factory=dict)
    class_j: Dict[str, float] = field(default_factory=dict)  # per core class, since start
    class_cpu_s: Dict[str, float] = field(default_factory=dict)
    drops: Dict[str, int] = field(default_factory=dict)
    model: Dict[str, str] = field(default_factory=dict)
    window: Dict[str, float] = field(default_factory=dict)  # the last refresh window's books
    tracked: int = 0
    groups: Tuple = ()  # exporter --by: (labels, cpu_s, joules) per series, other last (group_series.rows)
    sampler_held: int = 0
    refreshes: int = 0
    refresh_s: float = 0.0
    timestamp: float = 0.0


class Ledger:
    """Cumulative joules and CPU per series; see the module docstring for the rules."""

    def __init__(self, top: int = DEFAULT_TOP, linger_s: float = DEFAULT_LINGER_S):
        if top < 1:
            raise ValueError("top must be at least 1")
        self.top = top
        self.linger_s = linger_s
        self.procs: Dict[int, _Proc] = {}
        self.other_j = 0.0
        self.other_cpu_ns = 0
        self.idle_j = 0.0
        self.idle_ns = 0
        self.total_j = 0.0
        self.domains_j: Dict[str, float] = {}
        self.class_j: Dict[str, float] = {}
        self.class_cpu_ns: Dict[str, int] = {}

    def add(self, window: UsageWindow, att: Attribution, meter_j: Optional[Dict[str, float]],
            gone: Set[int], now: float) -> None:
        """Charge one window. ``gone``: pids fully dead after it (final numbers)."""
        before: Dict[int, Tuple[float, int, float, int]] = {}  # exported pid -> values before this window
        for pid, p in window.processes.items():
            e = att.energy_j.get(pid, 0.0)
            st = self.procs.get(pid)
            if st is None or st.gone_at is not None:  # new, or a reused pid
                st = self.procs[pid] = _Proc(pid, p.comm, p.cgroup or "")
            st.comm = p.comm or st.comm
            st.cgroup = p.cgroup or st.cgroup
            st.joules += e
            st.cpu_ns += p.cpu_ns
            if st.exported:
                before[pid] = (st.series_j, st.series_cpu_ns, e, p.cpu_ns)
                st.series_j += e
                st.series_cpu_ns += p.cpu_ns
            else:
                self.other_j += e
                self.other_cpu_ns += p.cpu_ns
        self.idle_j += att.idle_energy_j
        self.idle_ns += window.idle_ns
        self.total_j += math.fsum(att.energy_j.values()) + att.idle_energy_j
        for d, j in (meter_j or {}).items():
            self.domains_j[d] = self.domains_j.get(d, 0.0) + max(j, 0.0)
        for row in class_rows(window.processes, att.model, att.class_energy_j, window.source):
            self.class_j[row["class"]] = self.class_j.get(row["class"], 0.0) + row["energy_j"]
            self.class_cpu_ns[row["class"]] = self.class_cpu_ns.get(row["class"], 0) + row["cpu_ns"]
        for pid in gone:
            st = self.procs.get(pid)
            if st is not None and st.gone_at is None:
                st.gone_at = now
        self._expire(now)
        self._rank(before)

    def _expire(self, now):
        for pid in [pid for pid, st in self.procs.items() if st.gone_at is not None
                    and (not st.exported or now - st.gone_at >= self.linger_s)]:
            del self.procs[pid]

    def _rank(self, before):
        """The top N by energy over the run take the series; the rest go to ``other``.

        A series leaving now was never shown with this window's joules: they
        move to ``other`` and the series keeps the value last shown (exactly:
        restored, not subtracted), so nothing is lost and a return continues it.
        """
        pool = sorted(self.procs.values(), key=lambda s: (-s.joules, -s.cpu_ns, s.pid))
        for pid in rank_top(self, pool, before, lambda s: s.pid):
            del self.procs[pid]

    def exported(self) -> List[_Proc]:
        return sorted((s for s in self.procs.values() if s.exported), key=lambda s: (-s.series_j, s.pid))


def rank_top(ledger, pool, before, key) -> List:
    """Give the first ``ledger.top`` of ``pool`` (ranked) a series, take it from the rest.

    A new series starts at what it spent so far; one leaving gets back the
    value it had before this window (``before[key]``) and the window's joules
    and CPU go to ``ledger.other_j``/``other_cpu_ns``. Returns the keys of
    series that left and are gone: nothing more will come, they just end.
    Shared by the process series and the container/pod/unit series.
    """
    ended = []
    for i, st in enumerate(pool):
        keep = i < ledger.top
        if keep and not st.exported:
            if not st.ever_exported:
                st.series_j, st.series_cpu_ns = st.joules, st.cpu_ns
            st.exported = st.ever_exported = True
        elif not keep and st.exported:
            st.exported = False
            k = key(st)
            if k in before:
                st.series_j, st.series_cpu_ns, e, cpu = before[k]
                ledger.other_j += e
                ledger.other_cpu_ns += cpu
            if st.gone_at is not None:
                ended.append(k)
    return ended


# -- the exporter ------------------------------------------------------------------------

class Exporter:
    """Sampler + model (+ meter) -> a :class:`Snapshot` refreshed by :meth:`refresh`."""

    def __init__(self, sampler, model: PowerModel, meter=None, top: int = DEFAULT_TOP,
                 linger_s: float = DEFAULT_LINGER_S, by: Optional[str] = None, resolver=None):
        self.sampler = sampler
        self.model = model
        # a meter that fails during a long run must not take the exporter down:
        # the guard keeps serving on the fallback model and says so (model labels)
        self.meter = MeterGuard(meter, model) if meter is not None else None
        self.ledger = Ledger(top, linger_s)
        self.by = by  # container, pod or service: series per group beside the processes'
        self.groups = None
        if by:
            from ebpf_energy.group_series import GroupLedger

            self.groups = GroupLedger(by, top, linger_s, resolver)
        self.snapshot = Snapshot(model=_info_labels(model.describe()))
        self.steps = WindowStepper(sampler, model, self.meter)
        self._refreshes = 0
        self._lock = threading.Lock()
        # called with (window, attribution, meter joules) after each refresh, under
        # the lock: the dashboard draws its frames from the same windows (one loop)
        self.window_listeners: List[Callable] = []

    def start(self) -> None:
        self.sampler.start()
        try:
            self.steps.m_prev = self.meter.read() if self.meter is not None else None
            self.model.begin(self.meter.meter if self.meter is not None else None)
        except BaseException:
            self.sampler.stop()
            raise

    def refresh(self) -> Snapshot:
        with self._lock:
            t0 = time.monotonic()
            st = self.steps.step()
            cur, iw, mj, att = st.cur, st.window, st.meter_j, st.attribution
            note = drop_warning(iw)
            if note:
                sys.stderr.write(f"ebpf-energy exporter: {note}\n")
            if self.meter is not None and self.meter.lost:
                att.model["meter_lost"] = self.meter.lost
            gone = self.sampler.fully_dead
            if gone is None:  # a sampler that cannot tell: exited is final enough
                gone = {pid for pid, p in cur.processes.items() if p.exited}
            gone = set(gone)
            self.ledger.add(iw, att, mj, gone, t0)
            if self.groups is not None:
                self.groups.add(iw, att, gone, t0)
            if hasattr(self.sampler, "forget"):
                self.sampler.forget(gone)
                self.sampler.compact()
                for pid in gone:
                    cur.processes.pop(pid, None)
            self._refreshes += 1
            self.snapshot = self._snapshot(cur, iw, att, mj, time.monotonic() - t0)
            for listener in self.window_listeners:
                listener(iw, att, mj)
            return self.snapshot

    def stop(self) -> None:
        self.model.end()
        self.sampler.stop()

    def _snapshot(self, cur, iw, att, mj, took) -> Snapshot:
        lg = self.ledger
        procs = tuple((str(s.pid), s.comm, s.cgroup, s.series_cpu_ns / 1e9, s.series_j) for s in lg.exported())
        proc_j = math.fsum(att.energy_j.values())
        if att.model.get("measured") and mj:
            from ebpf_energy.model.rapl_split import package_joules

            total = package_joules(mj)
        else:
            total = att.total_energy_j
        books = proc_j + att.idle_energy_j
        window = {"seconds": iw.duration_s, "process_joules": proc_j, "idle_joules": att.idle_energy_j,
                  "total_joules": total,
                  "conservation_error_ratio": (books - total) / total if total else 0.0}
        held = self.sampler.held_threads()
        return Snapshot(processes=procs, other_cpu_s=lg.other_cpu_ns / 1e9, other_j=lg.other_j,
                        idle_j=lg.idle_j, idle_cpu_s=lg.idle_ns / 1e9, total_j=lg.total_j,
                        domains_j=dict(lg.domains_j), class_j=dict(lg.class_j),
                        class_cpu_s={k: v / 1e9 for k, v in lg.class_cpu_ns.items()},
                        drops=dict(cur.drops, cpu_ns=cur.dropped_cpu_ns), model=_info_labels(att.model),
                        window=window, tracked=len(lg.procs), sampler_held=held,
                        groups=self.groups.rows() if self.groups is not None else (), refreshes=self._refreshes,
                        refresh_s=took, timestamp=time.time())


def _number(x) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def _info_labels(model: dict) -> Dict[str, str]:
    """The model description as info labels (strings; absent values empty);
    the parts become ``part_total`` etc., the classes ``classes="P:0=20,E:1=6"``."""
    out = {}
    for k, v in model.items():
        if k == "parts":
            out.update({f"part_{p}": str(x) for p, x in v.items()})
            continue
        if k == "classes":  # numbers in their shortest form: 1.0 and 1 are one label value
            v = ",".join(f"{c['name']}:{c['cpus']}={_number(c.get('watts_per_cpu_second', c.get('weight')))}"
                         for c in v)
        if isinstance(v, bool):
            v = "true" if v else "false"
        out[k] = "" if v is None else str(v)
    return out


# -- Prometheus side ---------------------------------------------------------------------

class SnapshotCollector:
    """A prometheus_client collector formatting the exporter's last snapshot."""

    def __init__(self, exporter: Exporter):
        self.exporter = exporter

    def describe(self):
        return []  # no collect() at registration: the sampler may not be running yet

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        s = self.exporter.snapshot
        labels = ["pid", "comm", "cgroup"]
        cpu = CounterMetricFamily("ebpf_energy_process_cpu_seconds", "CPU time per process (top N by energy; "
                                  "pid=\"other\" holds everyone else).", labels=labels)
        joules = CounterMetricFamily("ebpf_energy_process_joules", "Energy per process by the active model "
                                     "(top N by energy; pid=\"other\" holds everyone else).", labels=labels)
        for pid, comm, cgroup, cpu_s, j in s.processes:
            cpu.add_metric([pid, comm, cgroup], cpu_s)
            joules.add_metric([pid, comm, cgroup], j)
        cpu.add_metric([OTHER, OTHER, ""], s.other_cpu_s)
        joules.add_metric([OTHER, OTHER, ""], s.other_j)
        yield cpu
        yield joules
        if self.exporter.by:
            from ebpf_energy.group_series import metric_families

            yield from metric_families(self.exporter.by, s.groups)
        yield CounterMetricFamily("ebpf_energy_idle_joules", "Energy the model charges to idle CPUs.",
                                  value=s.idle_j)
        yield CounterMetricFamily("ebpf_energy_idle_cpu_seconds", "Idle time summed over CPUs.", value=s.idle_cpu_s)
        yield CounterMetricFamily("ebpf_energy_joules", "All energy attributed: processes plus idle.",
                                  value=s.total_j)
        if s.class_j:
            cj = CounterMetricFamily("ebpf_energy_class_joules", "The processes' energy per core class (P/E, "
                                     "big/LITTLE; class=\"cpu\" on a homogeneous machine).", labels=["class"])
            cc = CounterMetricFamily("ebpf_energy_class_cpu_seconds", "The processes' CPU time per core class.",
                                     labels=["class"])
            for name in s.class_j:
                cj.add_metric([name], s.class_j[name])
                cc.add_metric([name], s.class_cpu_s.get(name, 0.0))
            yield cj
            yield cc
        if s.domains_j:
            pkg = CounterMetricFamily("ebpf_energy_package_joules", "Energy measured by the RAPL meter per "
                                      "domain (package: all packages summed; dram is outside it).",
                                      labels=["domain"])
            for d, j in sorted(s.domains_j.items()):
                pkg.add_metric([d], j)
            yield pkg
        drops = CounterMetricFamily("ebpf_energy_dropped", "Scheduling slices (tasks: full task map) and "
                                    "events (full ring buffer) lost in the kernel.", labels=["kind"])
        for k, v in sorted(s.drops.items()):
            if k != "cpu_ns":
                drops.add_metric([k], v)
        yield drops
        yield CounterMetricFamily("ebpf_energy_dropped_cpu_seconds", "CPU time of the scheduling slices lost "
                                  "to a full task map: missing from every process series.",
                                  value=s.drops.get("cpu_ns", 0) / 1e9)
        yield InfoMetricFamily("ebpf_energy_model", "The power model making the joules (and its calibration "
                               "profile and meter, if any).", value=s.model)
        for key, doc in (("seconds", "Length of the last refresh window."),
                         ("process_joules", "Processes' joules in the last refresh window."),
                         ("idle_joules", "Idle joules in the last refresh window."),
                         ("total_joules", "The measured (meter) or modelled total over the last refresh window."),
                         ("conservation_error_ratio", "(processes + idle - total) / total over the last "
                                                      "refresh window; 0 when the books balance.")):
            yield GaugeMetricFamily(f"ebpf_energy_window_{key}", doc, value=s.window.get(key, 0.0))
        yield GaugeMetricFamily("ebpf_energy_tracked_processes", "Processes the exporter holds in memory (live "
                                "ones plus exported ones lingering after exit).", value=s.tracked)
        yield GaugeMetricFamily("ebpf_energy_sampler_dead_threads", "Dead-thread records the sampler holds "
                                "(one per live process at most, after compaction).", value=s.sampler_held)
        yield CounterMetricFamily("ebpf_energy_refreshes", "Refreshes of the numbers since start.",
                                  value=s.refreshes)
        yield GaugeMetricFamily("ebpf_energy_refresh_duration_seconds", "Wall time the last refresh took.",
                                value=s.refresh_s)
        yield GaugeMetricFamily("ebpf_energy_last_refresh_timestamp_seconds", "Unix time of the last refresh.",
                                value=s.timestamp)


def make_server(exporter: Exporter, host: str, port: int, routes: Optional[Dict[str, Callable]] = None):
    """A threaded HTTP server for ``/metrics`` (bound, not yet serving).

    ``routes``: more WSGI apps by path, tried before the built-in ``/`` and
    404 (the dashboard's page and event stream on the same port)."""
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
    from wsgiref.simple_server import make_server as wsgi_server

    prom = require_prometheus_client()
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(exporter))
    metrics_app = prom.make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            if environ.get("REQUEST_METHOD") == "HEAD":  # health checks: the headers of a GET, no body
                body = metrics_app(dict(environ, REQUEST_METHOD="GET"), start_response)
                return [b"" for _ in body]
            return metrics_app(environ, start_response)
        if routes and path in routes:
            return routes[path](environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html")])
            return [b"<html><body><a href=\"/metrics\">ebpf-energy metrics</a></body></html>\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics\n"]

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    try:
        return wsgi_server(host, port, app, server_class=Server, handler_class=QuietHandler)
    except OSError as e:
        raise ExporterError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
