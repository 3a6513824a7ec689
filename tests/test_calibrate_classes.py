"""`calibrate` on a simulated hybrid machine: this VM's two CPUs declared as one
P core and one E core (--topology-root), a meter whose truth is a slope per
class, and workers pinned to each class in turn. Each class's busy time comes
from its own child cgroup (the workers are pinned, so all of it ran on that
class), so other load on this shared machine blurs nothing."""

import glob
import json
import os
import subprocess
import sys

import pytest

from ebpf_energy.calibration import profile as profiles
from ebpf_energy.cpustat import cgroup_busy_seconds
from ebpf_energy.rapl.simulated import SimulatedPowercap
from test_calibration import worker_cgroup  # noqa: F401 - the fixture: a cgroup v2 of our own for the workers
from topology_fixtures import hybrid_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P_W, E_W, IDLE_W = 20.0, 6.0, 8.0


def _class_source(cgroup):
    """Per-CPU busy seconds as the pinned workers made them: CPU 0 is the P
    core, CPU 1 the E core; each class's child cgroup is that CPU's load."""
    def busy(name):
        total = 0.0
        for d in glob.glob(os.path.join(cgroup, f"ebpf-energy-class-{name}-*")):
            try:
                total += cgroup_busy_seconds(d)
            except FileNotFoundError:
                pass
        return total

    last = {}

    def source():
        out = []
        for name in ("P", "E"):  # cumulative even after calibrate removes its child cgroups
            last[name] = max(last.get(name, 0.0), busy(name))
            out.append(last[name])
        return out
    return source


def test_calibrate_recovers_each_class_slope_within_its_ci95(tmp_path, worker_cgroup):
    if os.cpu_count() < 2:
        pytest.skip("needs two CPUs to declare one P and one E core")
    tree = hybrid_tree(tmp_path / "sys")
    # counters that do not wrap within a test: wraparound is test_calibration's subject, and a
    # sample delayed on a loaded machine must not cost this test a whole wrap
    with SimulatedPowercap(idle_watts=IDLE_W, noise=0.02, seed=5,
                           cpu_source=_class_source(worker_cgroup), cpu_class=[0, 1],
                           class_watts=[P_W, E_W]) as sim:
        p = subprocess.run([sys.executable, "-m", "ebpf_energy", "calibrate", "--powercap-root", sim.root,
                            "--topology-root", tree, "--cpu-cgroup", worker_cgroup, "--seconds-per-level", "1.2",
                            "--rounds", "2", "--sample-interval", "0.2", "--settle", "0.15", "--seed", "3",
                            "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                           env={**os.environ, "PYTHONPATH": ROOT, "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert p.returncode == 0, p.stderr
    prof = json.loads(p.stdout)
    assert set(prof["class_watts"]) == {"P", "E"}
    for name, truth in (("P", P_W), ("E", E_W)):
        lo, hi = prof["ci95"]["class_watts"][name]
        assert lo <= truth <= hi, (name, prof["class_watts"][name], lo, hi)
        # and the interval says something: on this shared machine a pinned worker may get less
        # than its CPU, which narrows the load's spread and widens the interval, but not to nothing
        assert hi - lo < 0.5 * truth, (name, lo, hi)
    lo, hi = prof["ci95"]["idle_watts"]
    assert prof["idle_watts"] == pytest.approx(IDLE_W, rel=0.05)
    # every class was loaded on its own: each sample's busy time is on one class only
    assert all(min(s["cpu_s_by_class"]) < 0.01 * s["t_s"] for s in prof["samples"])
    assert {s["class"] for s in prof["samples"] if s["level"]} == {0, 1}
    assert prof["topology"]["classes"] == [{"name": "P", "cpus": "0"}, {"name": "E", "cpus": "1"}]
    assert prof["model"]["class_weights"] == "fitted"
    # the child cgroups are gone, and the saved profile is the one a hybrid run uses
    assert not glob.glob(os.path.join(worker_cgroup, "ebpf-energy-class-*"))
    saved = profiles.load(prof["path"])
    assert saved["class_watts"] == prof["class_watts"]
