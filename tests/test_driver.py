"""The driver: interval windows, stopping (duration, signals), meter bounds, cleanup."""

import math
import os
import signal
import threading
import time

import pytest

from ebpf_energy.driver import Stopper, diff_windows, drive
from ebpf_energy.model.fixed import FixedWattsModel
from ebpf_energy.model.select import choose_model
from ebpf_energy.procfs import ProcfsPoller
from ebpf_energy.rapl.simulated import SimulatedPowercap
from ebpf_energy.usage import ProcessUsage, ThreadUsage, UsageWindow


class ClockSampler:
    """A sampler whose usage is a function of time: pid 1 runs at half a CPU
    all along; pid 2 lives from 0.15 s to 0.25 s at a full CPU."""

    source = "test"

    def __init__(self):
        self.started = self.stopped = 0
        self.reads = 0

    def start(self):
        self.started += 1
        self.t0 = time.monotonic_ns()

    def read(self):
        self.reads += 1
        now = time.monotonic_ns()
        el = now - self.t0
        procs = {1: ProcessUsage(1, "half", el // 2, slices=el // 1_000_000,
                                 threads=[ThreadUsage(1, "half", el // 2)])}
        if el > 150_000_000:
            procs[2] = ProcessUsage(2, "short", min(el, 250_000_000) - 150_000_000, exited=el > 250_000_000)
        return UsageWindow("test", self.t0, now, 2, procs, idle_ns=2 * el - sum(p.cpu_ns for p in procs.values()),
                           idle_ns_per_cpu=[el - el // 2, el], samples_or_events=self.reads,
                           drops={"tasks": 0, "events": 0})

    def stop(self):
        self.stopped += 1

    def stats(self):
        return {"reads": self.reads}


def test_diff_windows():
    a = UsageWindow("t", 0, 10, 2, {1: ProcessUsage(1, "a", 100, 3, threads=[ThreadUsage(1, "a", 100, 3)]),
                                    2: ProcessUsage(2, "b", 50)},
                    idle_ns=5, idle_ns_per_cpu=[2, 3], samples_or_events=4, drops={"tasks": 1, "events": 0})
    b = UsageWindow("t", 0, 30, 2, {1: ProcessUsage(1, "a", 160, 5, threads=[ThreadUsage(1, "a", 120, 4),
                                                                         ThreadUsage(9, "t", 40, 1)]),
                                    2: ProcessUsage(2, "b", 50),
                                    3: ProcessUsage(3, "c", 0, exited=True)},
                    idle_ns=15, idle_ns_per_cpu=[7, 8], samples_or_events=9, drops={"tasks": 3, "events": 2})
    d = diff_windows(a, b)
    assert (d.start_ns, d.end_ns, d.idle_ns, d.idle_ns_per_cpu) == (10, 30, 10, [5, 5])
    assert set(d.processes) == {1, 3}  # 2 did nothing; 3 appeared (and exited)
    assert d.processes[1].cpu_ns == 60 and d.processes[1].slices == 2
    assert {(t.tid, t.cpu_ns) for t in d.processes[1].threads} == {(1, 20), (9, 40)}
    assert d.samples_or_events == 5 and d.drops == {"tasks": 2, "events": 2}


def test_intervals_partition_the_run():
    s = ClockSampler()
    seen = []
    res = drive(s, FixedWattsModel(10), duration_s=0.55, interval_s=0.1,
                on_interval=lambda n, w, a, mj: seen.append((n, w, a, mj)))
    assert s.started == 1 and s.stopped == 1
    assert [n for n, *_ in seen] == list(range(1, len(seen) + 1)) and 6 <= len(seen) <= 7
    assert res.intervals == len(seen)
    # contiguous, and they add up exactly to the summary
    assert seen[0][1].start_ns == res.window.start_ns and seen[-1][1].end_ns == res.window.end_ns
    for (_, w1, *_), (_, w2, *_) in zip(seen, seen[1:]):
        assert w2.start_ns == w1.end_ns
    assert sum(w.total_cpu_ns for _, w, *_ in seen) == res.window.total_cpu_ns
    assert sum(w.idle_ns for _, w, *_ in seen) == res.window.idle_ns
    assert math.fsum(a.total_energy_j for *_, a, _ in seen) == pytest.approx(res.attribution.total_energy_j)
    assert any(2 in w.processes for _, w, *_ in seen) and 2 in res.window.processes
    assert res.window.duration_s == pytest.approx(0.55, abs=0.05)
    # the last interval is shorter, and it is the only one
    assert all(abs(w.duration_s - 0.1) < 0.03 for _, w, *_ in seen[:-1])
    assert res.stopped_by is None and res.sampler_stats == {"reads": s.reads}
    assert res.overhead_cpu_ns >= 0 and res.meter_j is None


def test_no_interval_reads_once_at_the_end():
    s = ClockSampler()
    res = drive(s, FixedWattsModel(10), duration_s=0.2)
    assert s.reads == 1 and res.intervals == 0
    assert res.attribution.energy_j[1] == pytest.approx(res.window.processes[1].cpu_ns / 1e9 * 10)


def test_stopper_ends_an_unbounded_run():
    stopper = Stopper()
    threading.Timer(0.2, stopper.set).start()
    t = time.monotonic()
    res = drive(ClockSampler(), FixedWattsModel(10), duration_s=0, stopper=stopper)
    assert 0.15 < time.monotonic() - t < 2
    assert res.stopped_by == "stop"
    stopper.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_end_the_run_and_handlers_are_restored(sig):
    before = signal.getsignal(sig)
    threading.Timer(0.2, os.kill, (os.getpid(), sig)).start()
    s = ClockSampler()
    res = drive(s, FixedWattsModel(10), duration_s=0, interval_s=0.05, on_interval=lambda *a: None)
    assert res.stopped_by == sig.name
    assert s.stopped == 1
    assert signal.getsignal(sig) is before
    assert res.window.duration_s == pytest.approx(0.2, abs=0.15)


def test_sampler_stopped_when_something_fails():
    class Broken(FixedWattsModel):
        def attribute(self, window, meter_j=None):
            raise RuntimeError("model failed")

    s = ClockSampler()
    with pytest.raises(RuntimeError):
        drive(s, Broken(10), duration_s=0.05)
    assert s.stopped == 1
    with pytest.raises(ValueError):
        drive(ClockSampler(), FixedWattsModel(10), duration_s=-1)
    with pytest.raises(ValueError):
        drive(ClockSampler(), FixedWattsModel(10), duration_s=1, interval_s=0)


def test_meter_read_at_window_bounds_with_procfs(tmp_path):
    """The simulated powercap tree stands in for RAPL: the summary's total is
    the meter's package joules over the run, the intervals' meter joules add
    up to it, and processes + idle = total in every window."""
    warnings = []
    with SimulatedPowercap(str(tmp_path / "powercap"), period=0.01, seed=1):
        model, meter = choose_model(powercap_root=str(tmp_path / "powercap"), meter_kind="powercap",
                                    no_profile=True, warn=warnings.append)
        try:
            assert model.name == "rapl" and meter is not None
            seen = []
            res = drive(ProcfsPoller(0.05), model, meter=meter, duration_s=0.5, interval_s=0.1,
                        on_interval=lambda n, w, a, mj: seen.append((a, mj)))
        finally:
            meter.close()
    assert res.meter_j["package"] > 0
    assert res.attribution.total_energy_j == pytest.approx(res.meter_j["package"], rel=1e-9)
    assert math.fsum(mj["package"] for _, mj in seen) == pytest.approx(res.meter_j["package"], rel=1e-9)
    assert "dram" in res.attribution.domains_j
    for a, mj in seen + [(res.attribution, res.meter_j)]:
        assert a.total_energy_j == pytest.approx(sum(a.energy_j.values()) + a.idle_energy_j)
        assert a.model["measured"] is True
    assert res.sampler_stats["samples"] >= 9


class _FailingMeter:
    """A meter whose reads fail from the ``fail_from``-th on (a zone removed)."""

    name = "fake"

    def __init__(self, fail_from):
        self.n, self.fail_from = 0, fail_from

    def read(self):
        from ebpf_energy.rapl.errors import MeterFormatError
        from ebpf_energy.rapl.meter import Reading

        self.n += 1
        if self.n >= self.fail_from:
            raise MeterFormatError("energy_uj vanished")
        return Reading(time.monotonic_ns(), {"package": float(self.n)})

    def close(self):
        pass


@pytest.mark.parametrize("fail_from", [1, 2, 3])
def test_a_meter_that_fails_at_any_read_keeps_the_report(fail_from, capsys):
    """Whichever read fails (the first, an interval's, the last), the run
    ends with a CPU report whose model says the meter was lost."""
    from ebpf_energy.model.rapl_split import RaplSplitModel

    seen = []
    r = drive(ClockSampler(), RaplSplitModel("fake"), meter=_FailingMeter(fail_from), duration_s=0.05,
              interval_s=0.02, on_interval=lambda n, w, a, mj: seen.append(a.model["name"]))
    assert "meter failed during the run" in r.attribution.model["meter_lost"]
    assert r.attribution.model["name"] == "fixed" and r.meter_j is None
    assert "meter failed during the run" in capsys.readouterr().err


def test_a_meter_that_never_moves_is_not_a_measurement(tmp_path, capsys):
    """A copied, frozen powercap tree reads 0 J while the CPUs run: that is
    said, and the joules are modelled (it used to say 'measured 0 J')."""
    from rapl_fixtures import write, zone

    from ebpf_energy.model.rapl_split import RaplSplitModel
    from ebpf_energy.rapl.powercap import PowercapMeter

    zone(str(tmp_path), "intel-rapl:0", "package-0", 5_000_000, 262_143_328_850, max_power_uw=100_000_000)
    write(os.path.join(str(tmp_path), ".dev", "intel-rapl", "enabled"), 1)
    with PowercapMeter(str(tmp_path), keepalive=0) as meter:
        r = drive(ClockSampler(), RaplSplitModel("powercap"), meter=meter, duration_s=0.6)
    assert "the meter did not move" in r.attribution.model["meter_lost"]
    assert r.attribution.model["name"] == "fixed" and r.attribution.total_energy_j > 0
    assert "the meter did not move" in capsys.readouterr().err
