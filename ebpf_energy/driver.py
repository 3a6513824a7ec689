"""Run any CPU-time sampler for a while and turn what it saw into joules.

Both monitors (``monitor``: eBPF, ``traditional``: /proc) differ only in how
they measure CPU time; everything after that is here, once: the run's length
and refresh schedule, Ctrl-C/SIGTERM, interval windows, the energy meter read
at each window bound, the power model, and handing the results to a reporter.

A sampler reports *cumulative* usage since it started; an interval is the
difference of two cumulative windows. That way nothing falls between
intervals, and the summary is one window over the whole run rather than a sum
of rounded pieces.
"""

import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

try:  # Protocol is in typing from 3.8; keep a fallback for odd builds
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object

from ebpf_energy.model.base import Attribution, PowerModel
from ebpf_energy.selfcost import SelfCost
from ebpf_energy.stop import Stopper, install_stop_signals  # noqa: F401  (drive() and its callers)
from ebpf_energy.usage import ProcessUsage, ThreadUsage, UsageWindow


class Sampler(Protocol):
    """What a CPU-time monitor gives the driver.

    ``source`` is ``"ebpf"`` or ``"procfs"``. ``start()`` begins measuring now
    (its window's ``start_ns`` is CLOCK_MONOTONIC). ``read()`` returns a
    :class:`UsageWindow` cumulative since ``start()`` and ending now: every
    process seen, exited ones included, with ``samples_or_events`` and
    ``drops`` cumulative too. ``stop()`` releases everything and is
    idempotent. Optionally ``stats() -> dict``: facts about the measurement
    itself (samples late, the sampler's own CPU) that the report carries
    under ``"sampler"``.
    """

    source: str

    def start(self) -> None: ...

    def read(self) -> UsageWindow: ...

    def stop(self) -> None: ...


def diff_windows(prev: UsageWindow, cur: UsageWindow) -> UsageWindow:
    """The usage between two cumulative windows of one run.

    Only processes that did something in between are kept: gained CPU or
    slices, appeared, or exited. A counter that went backwards (it cannot,
    for a correct sampler) is clamped to zero rather than giving negative
    joules.
    """
    procs = {}
    for pid, p in cur.processes.items():
        q = prev.processes.get(pid)
        cpu = p.cpu_ns - (q.cpu_ns if q else 0)
        slices = p.slices - (q.slices if q else 0)
        newly_exited = p.exited and not (q and q.exited)
        if cpu <= 0 and slices <= 0 and q is not None and not newly_exited:
            continue
        threads = []
        if p.threads:
            before = {t.tid: t for t in q.threads} if q else {}
            for t in p.threads:
                u = before.get(t.tid)
                tcpu = t.cpu_ns - (u.cpu_ns if u else 0)
                tsl = t.slices - (u.slices if u else 0)
                if tcpu > 0 or tsl > 0 or u is None or (t.exited and not u.exited):
                    threads.append(ThreadUsage(t.tid, t.comm, max(0, tcpu), max(0, tsl), t.exited))
        procs[pid] = ProcessUsage(pid=pid, comm=p.comm, cpu_ns=max(0, cpu), slices=max(0, slices),
                                  exited=p.exited, cgroup=p.cgroup, cgroup_id=p.cgroup_id, threads=threads)
    per_cpu = [max(0, c - (prev.idle_ns_per_cpu[i] if i < len(prev.idle_ns_per_cpu) else 0))
               for i, c in enumerate(cur.idle_ns_per_cpu)]
    return UsageWindow(
        source=cur.source,
        start_ns=prev.end_ns,
        end_ns=cur.end_ns,
        ncpus=cur.ncpus,
        processes=procs,
        idle_ns=max(0, cur.idle_ns - prev.idle_ns),
        idle_ns_per_cpu=per_cpu,
        samples_or_events=max(0, cur.samples_or_events - prev.samples_or_events),
        drops={k: max(0, v - prev.drops.get(k, 0)) for k, v in cur.drops.items()},
        dropped_cpu_ns=cur.dropped_cpu_ns - prev.dropped_cpu_ns,
        steal_ns=cur.steal_ns - prev.steal_ns,
    )


@dataclass
class RunResult:
    """What a run measured: the whole window, its joules, and how it went."""

    window: UsageWindow
    attribution: Attribution
    meter_j: Optional[Dict[str, float]]
    intervals: int
    stopped_by: Optional[str]  # "SIGINT", "SIGTERM", or None when the duration ran out
    overhead_cpu_ns: int  # this process's own user+sys CPU over the run
    sampler_stats: dict = field(default_factory=dict)


OnInterval = Callable[[int, UsageWindow, Attribution, Optional[Dict[str, float]]], None]


def drive(sampler: Sampler, model: PowerModel, *, meter=None, duration_s: float = 0.0,
          interval_s: Optional[float] = None, on_interval: Optional[OnInterval] = None,
          stopper: Optional[Stopper] = None, handle_signals: bool = True,
          on_started: Optional[Callable[[], None]] = None) -> RunResult:
    """Measure for ``duration_s`` seconds (0: until SIGINT/SIGTERM or
    ``stopper.set()``). ``meter`` (optional) has ``read() -> Reading`` with
    ``later.delta(earlier) -> {domain: J}``; it is read at every window
    bound and the model gets the joules of exactly that window. Calls
    ``on_interval(n, window, attribution, meter_j)`` every ``interval_s``
    seconds when given, then returns the whole run. Interval deadlines are ``start + n*interval_s`` so refreshes
    do not drift. The sampler is always stopped, even on errors.
    ``on_started()`` is called once measuring has really begun (programs
    attached, baseline taken): the moment to tell a waiting user or harness."""
    if duration_s < 0:
        raise ValueError("duration must be >= 0 seconds")
    if interval_s is not None and not interval_s > 0:
        raise ValueError("interval must be > 0 seconds")
    own_stopper = stopper is None
    stopper = stopper or Stopper()
    old = install_stop_signals(stopper) if handle_signals else {}
    guard = MeterGuard(meter, model)
    meter = guard if meter is not None else None
    try:
        sampler.start()
        try:
            m0 = meter.read() if meter is not None else None
            model.begin(guard.meter)
            cost = SelfCost()  # from here: the cost of measuring, not of loading
            if on_started is not None:
                on_started()
            t0 = time.monotonic()
            end = t0 + duration_s if duration_s > 0 else None
            steps = WindowStepper(sampler, model, meter, m_prev=m0)
            n = 0
            while True:
                nxt = t0 + (n + 1) * interval_s if interval_s else None
                target = min(x for x in (nxt, end) if x is not None) if (nxt or end) else None
                timeout = 3600.0 if target is None else target - time.monotonic()
                if stopper.wait(timeout):
                    break
                if target is None or time.monotonic() < target:
                    continue
                if end is not None and time.monotonic() >= end:
                    break
                n += 1
                st = steps.step(attribute=on_interval is not None)
                if on_interval is not None:
                    on_interval(n, st.window, st.attribution, st.meter_j)
            last = steps.step(attribute=False)  # the end of the run
            cur, m1 = last.cur, steps.m_prev
            if interval_s and on_interval is not None and last.window.end_ns - last.window.start_ns > 1_000_000:
                n += 1  # the partial last interval, if it is not empty
                on_interval(n, last.window, guard.model.attribute(last.window, last.meter_j), last.meter_j)
            meter_j = joules_between(meter, m1, m0)
            if meter_j is not None and guard.frozen(meter_j, cur):
                meter_j = None
            attribution = guard.model.attribute(cur, meter_j)
            if guard.lost:
                attribution.model["meter_lost"] = guard.lost
        finally:
            model.end()
            sampler.stop()
        stats = sampler.stats() if hasattr(sampler, "stats") else {}
        return RunResult(window=cur, attribution=attribution, meter_j=meter_j, intervals=n,
                         stopped_by=stopper.reason, overhead_cpu_ns=cost.cpu_ns(), sampler_stats=stats)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        if own_stopper:
            stopper.close()


@dataclass
class Step:
    """One step of a monitor loop: the cumulative window read, the window since the step before, its
    joules (None without a meter) and their attribution."""

    cur: UsageWindow
    window: UsageWindow
    meter_j: Optional[Dict[str, float]]
    attribution: Attribution


class WindowStepper:
    """Read the sampler, read the meter, take the difference from the last step, attribute it: the
    one step that ``drive`` (each interval), the exporter (each scrape) and a measured stretch
    (``measurement``) all take. ``meter`` is a :class:`MeterGuard` or None; the model attributing is
    the guard's (the fallback once the meter is lost) when there is one. ``prev`` and ``m_prev``
    are where the first step starts (None: the run's start, an empty window)."""

    def __init__(self, sampler, model, meter=None, prev=None, m_prev=None):
        self.sampler, self.model, self.meter = sampler, model, meter
        self.prev, self.m_prev = prev, m_prev

    def step(self, attribute=True) -> Step:
        cur = self.sampler.read()
        m = self.meter.read() if self.meter is not None else None
        window = diff_windows(self.prev or _empty_like(cur), cur)
        mj = joules_between(self.meter, m, self.m_prev)
        model = self.meter.model if self.meter is not None else self.model
        att = model.attribute(window, mj) if attribute else None
        self.prev, self.m_prev = cur, m
        return Step(cur, window, mj, att)


def joules_between(guard, later, earlier):
    """The meter's joules between two readings; None without a meter, or once it was lost."""
    if guard is None or guard.lost or later is None or earlier is None:
        return None
    return later.delta(earlier)


class MeterGuard:
    """The meter as the driver reads it: a read that fails mid-run (a zone
    removed, a permission changed) does not lose the run. From then on the
    CPU report goes on, the joules come from the model the machine would use
    without a meter (the profile's, else fixed watts), and the report says
    the meter was lost and why."""

    def __init__(self, meter, model):
        self.meter, self.model, self.lost = meter, model, None
        self._last = None

    def read(self):
        from ebpf_energy.rapl.errors import RaplError

        if self.lost is None:
            try:
                self._last = self.meter.read()
                return self._last
            except (RaplError, OSError, ValueError) as e:
                self.lost = f"the meter failed during the run ({e}); joules after that are modelled"
                self.model = fallback_model(self.model)
                sys.stderr.write(f"ebpf-energy: warning: {self.lost}\n")
        return self._last

    def frozen(self, meter_j, window) -> bool:
        """A real package counter moves every millisecond: one that stood
        still while the CPUs ran is broken; its 0 J is no measurement."""
        total = meter_j.get("package", meter_j.get("psys"))
        if total is None or total > 0 or window.total_cpu_ns <= 0 or window.duration_s < 0.5:
            return False
        self.lost = (f"the meter did not move in {window.duration_s:.1f} s while the CPUs ran "
                     f"{window.total_cpu_ns / 1e9:.3f} s: it is not counting; joules are modelled")
        self.model = fallback_model(self.model)
        sys.stderr.write(f"ebpf-energy: warning: {self.lost}\n")
        return True

    def close(self):
        self.meter.close()


def fallback_model(model):
    """The model to use once the meter is gone: calibrated with the RAPL
    model's profile, else fixed watts."""
    from ebpf_energy.model.calibrated import CalibratedModel
    from ebpf_energy.model.fixed import DEFAULT_WATTS, FixedWattsModel

    prof = getattr(model, "profile", None)
    if getattr(model, "name", "") != "rapl":
        return model
    return CalibratedModel(prof, idle_share=model.idle_share) if prof else FixedWattsModel(DEFAULT_WATTS)


def _empty_like(w: UsageWindow) -> UsageWindow:
    """The zero window at the run's start: the first interval's predecessor."""
    return UsageWindow(source=w.source, start_ns=w.start_ns, end_ns=w.start_ns, ncpus=w.ncpus,
                       processes={}, idle_ns=0, idle_ns_per_cpu=[0] * len(w.idle_ns_per_cpu),
                       samples_or_events=0, drops={k: 0 for k in w.drops})
