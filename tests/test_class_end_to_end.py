"""The whole per-class path on the real kernel: this 2-CPU VM declared as one
P core (CPU 0) and one E core (CPU 1) by --topology-root, the BPF program
splitting each process's time by class, a simulated meter whose truth is
20 W per CPU-second on P and 6 W on E, and a profile with those slopes.

Two burners pinned (from birth: all their time is on one class) to the P
and the E core each spin for the same CPU time; they must be charged in the
ratio of the true slopes, and the processes plus idle must equal the meter.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ebpf_energy.calibration import profile as profiles
from ebpf_energy.rapl.simulated import SimulatedPowercap
from ebpf_energy.topology import read_topology
from topology_fixtures import hybrid_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P_W, E_W, IDLE_W = 20.0, 6.0, 8.0
CPU_S = 0.3  # each burner's own CPU time
BURN = ("import sys, time\n"
        "while time.process_time() < float(sys.argv[1]): pass\n")

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or (os.cpu_count() or 1) < 2,
                                reason="needs root and two CPUs (one P, one E)")


@pytest.fixture
def hybrid(tmp_path):
    tree = hybrid_tree(tmp_path / "sys")
    topo = read_topology(tree)
    prof = {"schema": 1, "idle_watts": IDLE_W, "watts_per_cpu_second": (P_W + E_W) / 2,
            "class_watts": {"P": P_W, "E": E_W}, "topology": topo.describe(), **profiles.host_identity()}
    path = profiles.save(prof, str(tmp_path / "hybrid.json"))
    return tree, path


def _burner(cpu):
    """Born pinned: this process is pinned while it forks, so not even the
    child's first instructions run on another class."""
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        return subprocess.Popen([sys.executable, "-S", "-c", BURN, str(CPU_S)])
    finally:
        os.sched_setaffinity(0, mine)


def _monitor(*args, env=None):
    p = subprocess.Popen([sys.executable, "-m", "ebpf_energy", "monitor", "--json", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})
    deadline = time.monotonic() + 120
    line = ""
    while "measuring" not in line:
        line = p.stderr.readline()
        assert line or p.poll() is None, "the monitor ended before measuring"
        assert time.monotonic() < deadline, "the monitor never started"
    return p


def _run_burners_under(p):
    burners = [_burner(0), _burner(1)]
    for b in burners:
        b.wait(timeout=300)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    r = json.loads(out)
    rows = {row["pid"]: row for row in r["processes"]}
    return r, rows[burners[0].pid], rows[burners[1].pid]


def test_rapl_split_charges_p_and_e_burners_in_the_ratio_of_their_slopes(hybrid):
    tree, prof = hybrid
    with SimulatedPowercap(idle_watts=IDLE_W, cpu_class=[0, 1], class_watts=[P_W, E_W], noise=0.0) as sim:
        p = _monitor("--powercap-root", sim.root, "--topology-root", tree, "--profile", prof)
        r, on_p, on_e = _run_burners_under(p)
    # the kernel put every ns of each burner on its core's class
    assert on_p["cpu_ns_by_class"] == {"P": on_p["cpu_ns"], "E": 0}
    assert on_e["cpu_ns_by_class"] == {"P": 0, "E": on_e["cpu_ns"]}
    # joules per CPU-second in the ratio of the true slopes; for the same CPU time, joules too
    per_s = (on_p["energy_j"] / on_p["cpu_ns"]) / (on_e["energy_j"] / on_e["cpu_ns"])
    assert per_s == pytest.approx(P_W / E_W, rel=1e-6)
    assert on_p["cpu_ns"] == pytest.approx(on_e["cpu_ns"], rel=0.03)
    assert on_p["energy_j"] / on_e["energy_j"] == pytest.approx(P_W / E_W, rel=0.03)
    # conservation: processes + idle = the meter's package joules
    assert r["total_energy_j"] == pytest.approx(r["domains_j"]["package"], rel=1e-3)
    assert sum(c["energy_j"] for c in r["classes"]) == pytest.approx(r["total_energy_j"] - r["idle_energy_j"])
    assert [c["class"] for c in r["classes"]] == ["P", "E"]
    m = r["model"]
    assert m["name"] == "rapl" and m["class_weights"] == "fitted" and m["parts"]["total"] == "measured"
    assert r["frequency"] == "unknown (no cpufreq)"


def test_calibrated_model_charges_each_class_its_slope(hybrid):
    tree, prof = hybrid
    p = _monitor("--meter", "none", "--topology-root", tree, "--profile", prof)
    r, on_p, on_e = _run_burners_under(p)
    assert on_p["energy_j"] == pytest.approx(P_W * on_p["cpu_ns"] / 1e9, rel=1e-9)
    assert on_e["energy_j"] == pytest.approx(E_W * on_e["cpu_ns"] / 1e9, rel=1e-9)
    assert r["model"]["name"] == "calibrated" and r["model"]["parts"]["class_weights"] == "fitted"


def test_without_per_class_slopes_every_class_weighs_the_same_and_says_so(tmp_path):
    tree = hybrid_tree(tmp_path / "sys")
    with SimulatedPowercap(idle_watts=IDLE_W, cpu_class=[0, 1], class_watts=[P_W, E_W], noise=0.0) as sim:
        p = _monitor("--powercap-root", sim.root, "--topology-root", tree, "--no-profile")
        r, on_p, on_e = _run_burners_under(p)
    per_s = (on_p["energy_j"] / on_p["cpu_ns"]) / (on_e["energy_j"] / on_e["cpu_ns"])
    assert per_s == pytest.approx(1.0, rel=1e-6)
    assert r["model"]["class_weights"] == "default" and r["model"]["parts"]["class_weights"] == "default"
    assert r["total_energy_j"] == pytest.approx(r["domains_j"]["package"], rel=1e-3)


def test_run_reports_its_tree_per_class(hybrid):
    tree, prof = hybrid
    p = subprocess.run([sys.executable, "-m", "ebpf_energy", "run", "--json", "--meter", "none", "--profile", prof,
                        "--topology-root", tree, "--", "taskset", "-c", "1", sys.executable, "-S", "-c", BURN,
                        str(CPU_S)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    classes = {c["class"]: c for c in r["classes"]}
    # taskset itself runs a moment wherever it starts; then the burner only on the E core
    assert classes["E"]["cpu_ns"] >= 0.95 * CPU_S * 1e9 and classes["P"]["cpu_ns"] < 0.05 * classes["E"]["cpu_ns"]
    assert classes["E"]["energy_j"] == pytest.approx(E_W * classes["E"]["cpu_ns"] / 1e9, rel=1e-6)


def test_exporter_serves_joules_per_class_and_the_model_parts(hybrid):
    from test_exporter import RunningExporter, value

    tree, prof = hybrid
    with RunningExporter("--interval", "0.3", "--meter", "none", "--profile", prof, "--topology-root", tree) as ex:
        ex.wait_refreshes(1)  # the counters count from the first refresh: burn after it, all of it counted
        burners = [_burner(0), _burner(1)]
        for b in burners:
            b.wait(timeout=300)
        # two refreshes after the burners ended: the first of them may have begun before
        first = ex.wait_refreshes(2, ex.scrape())
        last = ex.wait_refreshes(1, first)
    for m in (first, last):
        for cls in ("P", "E"):
            assert value(m, "ebpf_energy_class_cpu_seconds_total", **{"class": cls}) >= CPU_S
        p_j = value(m, "ebpf_energy_class_joules_total", **{"class": "P"})
        e_j = value(m, "ebpf_energy_class_joules_total", **{"class": "E"})
        assert p_j > 0 and e_j > 0
    info = dict(next(iter(last["ebpf_energy_model_info"][1])))
    assert info["part_class_weights"] == "fitted" and info["part_frequency"] == "unknown"
    assert info["classes"] == "P:0=20,E:1=6" and info["frequency"] == "unknown (no cpufreq)"
    # counters never go backwards
    for cls in ("P", "E"):
        assert value(last, "ebpf_energy_class_joules_total", **{"class": cls}) >= \
            value(first, "ebpf_energy_class_joules_total", **{"class": cls})


def test_where_cpufreq_exists_the_monitor_counts_cycles_per_process(tmp_path):
    """A tree with cpufreq (2 GHz on the P core, 1 GHz on the E core): the
    monitor tracks frequency, each burner's cycles follow its core's clock,
    and the report says frequency was tracked instead of unknown."""
    from topology_fixtures import write

    tree = hybrid_tree(tmp_path / "sys")
    for cpu, khz in ((0, 2_000_000), (1, 1_000_000)):
        write(os.path.join(tree, "devices", "system", "cpu", f"cpu{cpu}", "cpufreq", "scaling_cur_freq"), khz)
    p = _monitor("-p", "10", "--topology-root", tree)
    r, on_p, on_e = _run_burners_under(p)
    assert r["frequency"].startswith("tracked")
    assert on_p["cycles"] == pytest.approx(2 * on_p["cpu_ns"], rel=1e-3)
    assert on_e["cycles"] == pytest.approx(on_e["cpu_ns"], rel=1e-3)
    assert r["model"]["parts"]["frequency"] != "unknown"
