"""Cycles end to end on the real kernel: a profile fitted per GHz-second, the
monitor counting each burner's cycles at its CPU's frequency, the simulated
meter charging the true power of each CPU's frequency.

Two burners pinned (from birth) to CPU 0 and CPU 1 run the same CPU time at
different pinned frequencies; they must be charged in the ratio of their true
power within 3% (a time-based model: the ratio of the slopes alone), and the
processes plus idle must equal the meter. The frequencies are pinned before
the monitor starts, so the BPF program's kHz (read from ``scaling_cur_freq``
at load; the ``cpu_frequency`` tracepoint never fires on this VM) is the
meter's, exactly.
"""

import os
import struct

import pytest

from ebpf_energy.calibration import profile as profiles
from ebpf_energy.model.calibrated import CalibratedModel
from ebpf_energy.monitor import FREQ_PROGRAM
from ebpf_energy.rapl.simulated import SimulatedPowercap
from ebpf_energy.rapl.simulated_cpufreq import make_cpufreq_tree
from ebpf_energy.topology import read_topology
from test_accounting import burn_pinned
from test_class_end_to_end import _monitor, _run_burners_under
from test_monitor import sampler_factory  # noqa: F401
from topology_fixtures import hybrid_cpufreq_tree

IDLE_W = 8.0

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or (os.cpu_count() or 1) < 2,
                                reason="needs root and two CPUs")


def one_class(root):
    """A machine of one core class whose CPU 0 is pinned at 3.2 GHz and CPU 1 at 0.8 GHz."""
    tree = make_cpufreq_tree(str(root), [0, 1], {0: 3_200_000, 1: 800_000}, 800_000, 3_200_000,
                             [800_000, 2_000_000, 3_200_000])
    return tree, {"cpu": 5.0}, [0, 0], {0: 3.2, 1: 0.8}


def p_and_e(root):
    """The hybrid tree with the P core pinned at 2.0 GHz, the E core at 0.8 GHz."""
    tree = hybrid_cpufreq_tree(root, p_khz=2_000_000, e_khz=800_000)
    return tree, {"P": 8.0, "E": 3.0}, [0, 1], {0: 2.0, 1: 0.8}


def frequency_profile(tree, per_ghz, path):
    topo = read_topology(tree)
    ref = {c.name: 3_200_000 for c in topo.classes}
    prof = {"schema": 1, "basis": "frequency", "idle_watts": IDLE_W, "class_watts_per_ghz_second": per_ghz,
            "reference_khz": ref, "watts_per_ghz_second": sum(per_ghz.values()) / len(per_ghz),
            "watts_per_cpu_second": 3.2 * sum(per_ghz.values()) / len(per_ghz), "topology": topo.describe(),
            **profiles.host_identity()}
    if topo.hybrid:
        prof["class_watts"] = {n: k * 3.2 for n, k in per_ghz.items()}
    return profiles.save(prof, str(path))


@pytest.mark.parametrize("machine", [one_class, p_and_e])
def test_burners_at_different_frequencies_are_charged_their_true_power_and_the_books_equal_the_meter(
        tmp_path, machine):
    tree, per_ghz, cpu_class, ghz = machine(tmp_path / "sys")
    names = read_topology(tree).names
    prof = frequency_profile(tree, per_ghz, tmp_path / "freq.json")
    true_w = {cpu: per_ghz[names[cpu_class[cpu]]] * ghz[cpu] for cpu in (0, 1)}  # W per CPU-second on each
    with SimulatedPowercap(idle_watts=IDLE_W, cpu_class=cpu_class, class_watts=[per_ghz[n] for n in names],
                           noise=0.0, cpufreq_root=tree) as sim:
        p = _monitor("--powercap-root", sim.root, "--topology-root", tree, "--profile", prof)
        r, on0, on1 = _run_burners_under(p)
    # the kernel counted each burner's cycles at its CPU's frequency
    for row, cpu in ((on0, 0), (on1, 1)):
        assert row["cycles"] == pytest.approx(row["cpu_ns"] * ghz[cpu], rel=1e-3), (cpu, row)
    # joules per CPU-second in the ratio of the true power; for the same CPU time, joules too
    per_s = (on0["energy_j"] / on0["cpu_ns"]) / (on1["energy_j"] / on1["cpu_ns"])
    assert per_s == pytest.approx(true_w[0] / true_w[1], rel=1e-3)
    assert on0["cpu_ns"] == pytest.approx(on1["cpu_ns"], rel=0.03)
    assert on0["energy_j"] / on1["energy_j"] == pytest.approx(true_w[0] / true_w[1], rel=0.03)
    # conservation: processes + idle = the meter's package joules
    assert r["total_energy_j"] == pytest.approx(r["domains_j"]["package"], rel=1e-3)
    m = r["model"]
    assert m["name"] == "rapl" and m["basis"] == "cycles" and m["parts"]["total"] == "measured"
    assert m["parts"]["frequency"] == "measured (cycles) x fitted W per GHz-second"
    assert r["frequency"].startswith("tracked")


def test_calibrated_model_charges_each_burner_its_cycles_times_its_slope(tmp_path):
    tree, per_ghz, cpu_class, ghz = p_and_e(tmp_path / "sys")
    prof = frequency_profile(tree, per_ghz, tmp_path / "freq.json")
    p = _monitor("--meter", "none", "--topology-root", tree, "--profile", prof)
    r, on_p, on_e = _run_burners_under(p)
    assert on_p["energy_j"] == pytest.approx(per_ghz["P"] * on_p["cycles"] / 1e9, rel=1e-9)
    assert on_e["energy_j"] == pytest.approx(per_ghz["E"] * on_e["cycles"] / 1e9, rel=1e-9)
    assert r["model"]["name"] == "calibrated" and r["model"]["basis"] == "cycles"
    assert [c["watts_per_ghz_second"] for c in r["model"]["classes"]] == [8.0, 3.0]


def test_a_frequency_profile_without_cpufreq_is_charged_per_cpu_second_and_says_so(tmp_path):
    """The same profile on a tree without cpufreq: no cycles, so each class's
    slope at its highest calibrated frequency (3.2 GHz) per CPU-second."""
    tree, per_ghz, _, _ = p_and_e(tmp_path / "sys")
    prof = frequency_profile(tree, per_ghz, tmp_path / "freq.json")
    bare = tmp_path / "bare"
    for d in ("cpu_core", "cpu_atom"):
        os.makedirs(bare / "devices" / d)
        with open(bare / "devices" / d / "cpus", "w") as f, open(os.path.join(tree, "devices", d, "cpus")) as g:
            f.write(g.read())
    p = _monitor("--meter", "none", "--topology-root", str(bare), "--profile", prof)
    r, on_p, on_e = _run_burners_under(p)
    assert on_p.get("cycles") is None
    assert on_p["energy_j"] == pytest.approx(per_ghz["P"] * 3.2 * on_p["cpu_ns"] / 1e9, rel=1e-9)
    assert on_e["energy_j"] == pytest.approx(per_ghz["E"] * 3.2 * on_e["cpu_ns"] / 1e9, rel=1e-9)
    m = r["model"]
    assert m["basis"] == "time" and m["parts"]["frequency"].startswith("not used (no cpufreq)")
    assert "P 3.2 GHz" in m["parts"]["frequency"]


def test_a_frequency_change_mid_run_reaches_the_model_through_the_tracepoint_handler(sampler_factory, tmp_path):
    """One CPU at 1 GHz runs a burner; then the frequency goes to 3 GHz (the
    kernel would fire power:cpu_frequency; this VM has no cpufreq, so the
    handler is run through BPF_PROG_TEST_RUN with those arguments) and a
    second burner runs there. Each is counted at its own frequency, and the
    calibrated model charges the second 3x the first per CPU-second."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    tree = make_cpufreq_tree(str(tmp_path / "sys"), [cpu], {cpu: 1_000_000}, 1_000_000, 3_000_000,
                             [1_000_000, 2_000_000, 3_000_000])
    s = sampler_factory(track_frequency=True, cpu_root=os.path.join(tree, "devices", "system", "cpu"))
    slow, w1 = burn_pinned(s, [cpu], "emt-slow")
    ret = s.obj.programs[FREQ_PROGRAM].test_run(ctx_in=struct.pack("<QQ", 3_000_000, cpu), repeat=0)
    assert ret["retval"] == 0
    fast, w2 = burn_pinned(s, [cpu], "emt-fast")
    a, b = w1.processes[slow[cpu]], w2.processes[fast[cpu]]
    assert a.cpu_ns > 100_000_000 and a.cycles == a.cpu_ns  # 1 GHz: a cycle per ns
    assert b.cpu_ns > 100_000_000 and b.cycles == 3 * b.cpu_ns
    tree_topo = read_topology(tree)
    prof = {"idle_watts": IDLE_W, "basis": "frequency", "class_watts_per_ghz_second": {"cpu": 5.0},
            "reference_khz": {"cpu": 3_000_000}, "watts_per_ghz_second": 5.0, "watts_per_cpu_second": 15.0,
            "topology": tree_topo.describe()}
    model = CalibratedModel(prof, topology=tree_topo)
    ea, eb = model.attribute(w1).energy_j[slow[cpu]], model.attribute(w2).energy_j[fast[cpu]]
    assert ea == pytest.approx(5.0 * a.cpu_ns / 1e9, rel=1e-12)
    assert (eb / b.cpu_ns) / (ea / a.cpu_ns) == pytest.approx(3.0, rel=1e-12)
