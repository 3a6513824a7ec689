"""Per-core-class power: the models against a known truth, and the simulated
hybrid meter they are checked against.

Windows are built here (the monitor's per-class split is tested on the real
kernel in test_class_end_to_end.py); the simulated meter runs for real,
driven by a CPU-time source the test advances, so its joules are exact.
"""

import threading
import time

import pytest

from ebpf_energy.calibration import profile as profiles
from ebpf_energy.calibration.fit import FitError, multi_fit
from ebpf_energy.model.calibrated import CalibratedModel
from ebpf_energy.model.classes import UNKNOWN_CLASS
from ebpf_energy.model.fixed import FixedWattsModel
from ebpf_energy.model.rapl_split import RaplSplitModel
from ebpf_energy.rapl.simulated import SimulatedPowercap
from ebpf_energy.report import build_report, render_csv, render_table
from ebpf_energy.topology import read_topology
from ebpf_energy.usage import ProcessUsage, UsageWindow
from topology_fixtures import hybrid_tree

P_W, E_W, IDLE_W = 20.0, 6.0, 8.0


@pytest.fixture
def topo(tmp_path):
    return read_topology(hybrid_tree(tmp_path / "sys"))


def proc(pid, p_ms, e_ms, split=True):
    p = ProcessUsage(pid=pid, comm=f"p{pid}", cpu_ns=int((p_ms + e_ms) * 1e6))
    if split:
        p.cpu_ns_by_class = [int(p_ms * 1e6), int(e_ms * 1e6)]
    return p


def window(*procs, duration_s=1.0, idle_ms=0):
    return UsageWindow(source="ebpf", start_ns=0, end_ns=int(duration_s * 1e9), ncpus=2,
                       processes={p.pid: p for p in procs}, idle_ns=int(idle_ms * 1e6))


def hybrid_profile(topo, p=P_W, e=E_W):
    return {"idle_watts": IDLE_W, "watts_per_cpu_second": (p + e) / 2, "class_watts": {"P": p, "E": e},
            "topology": topo.describe(), "_path": "/x/hybrid.json"}


def test_calibrated_model_charges_each_class_its_slope(topo):
    w = window(proc(1, 500, 0), proc(2, 0, 500), proc(3, 250, 250), duration_s=2.0)
    a = CalibratedModel(hybrid_profile(topo), topology=topo).attribute(w)
    assert a.energy_j == {1: pytest.approx(10.0), 2: pytest.approx(3.0), 3: pytest.approx(6.5)}
    assert a.idle_energy_j == pytest.approx(16.0)
    assert a.class_energy_j == {"P": pytest.approx(15.0), "E": pytest.approx(4.5)}
    m = a.model
    assert [c["name"] for c in m["classes"]] == ["P", "E"] and m["class_weights"] == "fitted"
    assert m["parts"] == {"total": "fitted", "idle": "fitted", "class_weights": "fitted", "frequency": "unknown"}
    assert m["frequency"] == "unknown (no cpufreq)"


@pytest.mark.parametrize("idle_share", [False, True])
def test_rapl_split_weights_time_by_fitted_slope_and_conserves(topo, idle_share):
    """The target: two burners, the same CPU time on the P and the E core, are
    charged in the ratio of the true slopes; the books equal the meter."""
    w = window(proc(1, 800, 0), proc(2, 0, 800), proc(3, 100, 50), duration_s=1.0, idle_ms=350)
    meter = {"package": IDLE_W * 1.0 + P_W * 0.9 + E_W * 0.85}  # the truth the simulated meter would write
    a = RaplSplitModel("powercap", hybrid_profile(topo), idle_share, topology=topo).attribute(w, meter)
    assert a.total_energy_j == pytest.approx(meter["package"], rel=1e-12)
    if not idle_share:
        assert a.energy_j[1] / a.energy_j[2] == pytest.approx(P_W / E_W, rel=1e-9)
        assert a.energy_j[1] == pytest.approx(P_W * 0.8) and a.energy_j[2] == pytest.approx(E_W * 0.8)
        assert sum(a.class_energy_j.values()) == pytest.approx(sum(a.energy_j.values()))
    assert a.model["parts"]["total"] == "measured" and a.model["parts"]["class_weights"] == "fitted"


def test_rapl_split_without_per_class_slopes_says_default(topo):
    w = window(proc(1, 800, 0), proc(2, 0, 800), idle_ms=400)
    a = RaplSplitModel("powercap", None, topology=topo).attribute(w, {"package": 20.0})
    assert a.energy_j[1] == pytest.approx(a.energy_j[2])  # equal weights: today's model, stated
    assert a.model["class_weights"] == "default" and a.model["parts"]["class_weights"] == "default"
    assert a.model["parts"]["idle"] == "unknown"
    assert a.total_energy_j == pytest.approx(20.0)
    assert [c["weight"] for c in a.model["classes"]] == [1.0, 1.0]


def test_unsplit_time_is_weighed_by_the_mean_and_reported_unknown(topo):
    w = window(proc(1, 500, 500, split=False), duration_s=1.0)
    a = CalibratedModel(hybrid_profile(topo), topology=topo).attribute(w)
    assert a.energy_j[1] == pytest.approx((P_W + E_W) / 2)  # one CPU of each class
    assert a.class_energy_j == {"P": 0.0, "E": 0.0, UNKNOWN_CLASS: pytest.approx(13.0)}


def test_reports_carry_classes_frequency_and_parts(topo):
    w = window(proc(1, 800, 0), proc(2, 0, 800), idle_ms=400)
    a = RaplSplitModel("powercap", hybrid_profile(topo), topology=topo).attribute(w, {"package": 30.0})
    r = build_report(w, a)
    assert [(c["class"], c["cpus"], c["cpu_ns"]) for c in r["classes"]] == [("P", "0", 800_000_000),
                                                                          ("E", "1", 800_000_000)]
    assert r["frequency"] == "unknown (no cpufreq)"
    assert r["processes"][0]["cpu_ns_by_class"] == {"P": 800_000_000, "E": 0}
    text = render_table(r)
    assert "class P (CPUs 0)" in text and "frequency: unknown (no cpufreq)" in text
    assert "total measured, idle fitted, class weights fitted; frequency: unknown (no cpufreq)" in text
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(render_csv(r))))
    klass = {d["comm"]: d for d in rows if d["row"] == "class"}
    assert set(klass) == {"[class P]", "[class E]"}
    assert sum(float(d["energy_j"]) for d in klass.values()) == pytest.approx(r["total_energy_j"] - r["idle_energy_j"])
    assert "frequency: unknown (no cpufreq)" in [d for d in rows if d["row"] == "total"][0]["model"]


def test_fixed_model_says_what_it_does_not_know(topo):
    a = FixedWattsModel(10, chosen_by="-p", topology=topo).attribute(window(proc(1, 300, 100)))
    assert a.energy_j[1] == pytest.approx(4.0)
    assert a.model["parts"] == {"total": "given", "idle": "unknown", "class_weights": "default",
                                "frequency": "unknown"}
    assert a.class_energy_j == {"P": pytest.approx(3.0), "E": pytest.approx(1.0)}


def test_profile_is_refused_on_another_layout(tmp_path, topo):
    host = profiles.host_identity()
    prof = {**hybrid_profile(topo), **host}
    assert profiles.matches_host(prof, topology=topo) == (True, "")
    other = read_topology(hybrid_tree(tmp_path / "other", p="1", e="0"))
    ok, why = profiles.matches_host(prof, topology=other)
    assert not ok and "P on CPUs 0, E on CPUs 1" in why and "\n" not in why
    homogeneous = read_topology(str(tmp_path))  # nothing declared: one class
    assert not profiles.matches_host(prof, topology=homogeneous)[0]
    old = {k: v for k, v in prof.items() if k not in ("topology", "class_watts")}
    assert profiles.matches_host(old, topology=homogeneous)[0]  # a one-class profile on a one-class machine
    assert not profiles.matches_host(old, topology=topo)[0]


def test_choose_model_warns_once_and_ignores_a_profile_from_another_layout(tmp_path, topo, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    other = read_topology(hybrid_tree(tmp_path / "other", p="1", e="0"))
    profiles.save({**hybrid_profile(other), **profiles.host_identity(), "schema": 1})
    from ebpf_energy.model.select import choose_model

    warnings = []
    model, meter = choose_model(meter_kind="none", warn=warnings.append, topology=topo)
    assert model.name == "fixed" and meter is None
    refused = [w for w in warnings if "ignoring the saved profile" in w]
    assert len(refused) == 1 and "fitted on P on CPUs 1, E on CPUs 0" in refused[0]
    profiles.save({**hybrid_profile(topo), **profiles.host_identity(), "schema": 1})
    model, _ = choose_model(meter_kind="none", warn=warnings.append, topology=topo)
    assert model.name == "calibrated" and model.weights.weights == [P_W, E_W]


def test_profile_class_watts_are_checked(tmp_path, topo):
    import json

    path = tmp_path / "p.json"
    path.write_text(json.dumps({**hybrid_profile(topo), "class_watts": {"P": -1}}))
    with pytest.raises(profiles.ProfileError, match="class_watts"):
        profiles.load(str(path))


def test_multi_fit_recovers_slopes_and_refuses_classes_never_loaded_alone():
    xs = [[0, 0], [1, 0], [0, 1], [1, 0], [0, 1], [0, 0]]
    ys = [8 + 20 * a + 6 * b + (0.01 if i % 2 else -0.01) for i, (a, b) in enumerate(xs)]
    f = multi_fit(xs, ys)
    assert f.intercept == pytest.approx(8, abs=0.05) and f.slopes == [pytest.approx(20, abs=0.05),
                                                                      pytest.approx(6, abs=0.05)]
    for (lo, hi), k in zip(f.ci95_slopes, (20, 6)):
        assert lo < k < hi
    with pytest.raises(FitError, match="each core class must be loaded on its own"):
        multi_fit([[1, 1], [2, 2], [0, 0], [3, 3]], [1, 2, 3, 4])


class Clock:
    """A per-CPU busy-seconds source the test advances by hand."""

    def __init__(self, n):
        self.busy = [0.0] * n
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            return list(self.busy)

    def add(self, cpu, s):
        with self.lock:
            self.busy[cpu] += s


def test_simulated_meter_charges_each_cpu_its_class_slope(topo):
    clock = Clock(2)
    with SimulatedPowercap(idle_watts=0.0, noise=0.0, cpu_source=clock, cpu_class=topo.cpu_class(2),
                           class_watts=[P_W, E_W], dram_idle_watts=0.0, period=0.002) as sim:
        clock.add(0, 0.5)  # half a second on the P core (package 0: CPU 0)
        clock.add(1, 0.5)  # and on the E core (package 1)
        deadline = time.monotonic() + 10
        while sim.true_joules() < 13.0 - 1e-9 and time.monotonic() < deadline:
            time.sleep(0.01)
        with sim.lock:
            files = [int(open(f"{sim.zone_dir(p)}/energy_uj").read()) for p in (0, 1)]
    assert sim.true_joules() == pytest.approx(P_W * 0.5 + E_W * 0.5)
    assert files == [10_000_000, 3_000_000]  # what a reader of the tree sees, per package
    assert sim.slope(0) == P_W and sim.slope(1) == E_W


def test_simulated_meter_scales_slopes_by_frequency(topo, monkeypatch):
    sim = SimulatedPowercap(cpu_source=lambda: [0.0, 0.0], cpu_class=[0, 1], class_watts=[P_W, E_W],
                            frequency_ghz=[2.0, 1.5])
    try:
        assert sim.slope(0) == 40.0 and sim.slope(1) == 9.0
    finally:
        sim.close()
    import ebpf_energy.rapl.simulated as simulated

    made = []
    monkeypatch.setattr(simulated.tempfile, "mkdtemp", lambda **kw: made.append(kw) or "/nonexistent")
    with pytest.raises(ValueError):
        SimulatedPowercap(cpu_source=lambda: [0.0], cpu_class=[0, 1])
    assert made == []  # a refused meter makes no folder (it used to leave one in /dev/shm)


def test_threads_on_different_classes_split_their_process_by_weighted_time(topo):
    from ebpf_energy.usage import ThreadUsage

    p = proc(1, 500, 500)
    p.threads = [ThreadUsage(11, "on-p", 500_000_000, cpu_ns_by_class=[500_000_000, 0]),
                 ThreadUsage(12, "on-e", 500_000_000, cpu_ns_by_class=[0, 500_000_000])]
    w = window(p)
    a = CalibratedModel(hybrid_profile(topo), topology=topo).attribute(w)
    r = build_report(w, a, threads=True)
    t = {row["tid"]: row["energy_j"] for row in r["processes"][0]["threads"]}
    assert t[11] == pytest.approx(10.0) and t[12] == pytest.approx(3.0)
    assert sum(t.values()) == pytest.approx(a.energy_j[1])
