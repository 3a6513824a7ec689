"""`calibrate` per GHz-second on a simulated hybrid machine with cpufreq.

This VM's two CPUs are declared one P core (CPU 0, acpi-cpufreq: 0.8, 2.0 and
3.2 GHz listed, userspace governor) and one E core (CPU 1, intel_pstate:
0.8-2.0 GHz, no userspace governor) by a tree shaped like /sys. The
simulated meter plays the cpufreq driver on that tree (what calibrate writes
to scaling_setspeed or scaling_min/max_freq becomes scaling_cur_freq) and
charges each busy CPU-second its class's true W per GHz-second x its GHz.
Each class's busy time comes from its own child cgroup (workers pinned), so
other load on this shared machine blurs nothing.
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
from test_calibrate_classes import _class_source
from test_calibration import worker_cgroup  # noqa: F401 - the fixture: a cgroup v2 of our own for the workers
from topology_fixtures import cpufreq_files, hybrid_cpufreq_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P_GHZ_W, E_GHZ_W, IDLE_W = 8.0, 3.0, 8.0  # the truth: W per GHz-second of each class, idle W

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or (os.cpu_count() or 1) < 2,
                                reason="needs root and two CPUs (one P, one E)")


def _calibrate(sim, tree, cgroup, tmp_path, *extra, popen=False):
    argv = [sys.executable, "-m", "ebpf_energy", "calibrate", "--powercap-root", sim.root, "--topology-root", tree,
            "--cpu-cgroup", cgroup, "--sample-interval", "0.2", "--settle", "0.15", "--seed", "3", "--json", *extra]
    env = {**os.environ, "PYTHONPATH": ROOT, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    if popen:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)


def _sim(tree, cgroup, **kw):
    return SimulatedPowercap(idle_watts=IDLE_W, cpu_source=_class_source(cgroup), cpu_class=[0, 1],
                             class_watts=[P_GHZ_W, E_GHZ_W], cpufreq_root=tree, **kw)


def test_calibrate_recovers_each_class_watts_per_ghz_second_within_its_ci95(tmp_path, worker_cgroup):
    tree = hybrid_cpufreq_tree(tmp_path / "sys")
    before = cpufreq_files(tree)
    with _sim(tree, worker_cgroup, noise=0.02, seed=5) as sim:
        p = _calibrate(sim, tree, worker_cgroup, tmp_path, "--seconds-per-level", "1.0", "--rounds", "2")
    assert p.returncode == 0, p.stderr
    prof = json.loads(p.stdout)
    assert prof["basis"] == "frequency"
    for name, truth in (("P", P_GHZ_W), ("E", E_GHZ_W)):
        lo, hi = prof["ci95"]["class_watts_per_ghz_second"][name]
        assert lo <= truth <= hi, (name, prof["class_watts_per_ghz_second"][name], lo, hi)
        assert hi - lo < 0.5 * truth, (name, lo, hi)  # and the interval says something
    assert prof["idle_watts"] == pytest.approx(IDLE_W, rel=0.05)
    # each class ran at the frequencies pinned for it (read back from scaling_cur_freq): the P core's
    # listed ones through the userspace governor, the E core's spread over its range through min = max
    assert prof["frequencies_khz"] == {"P": [800_000, 2_000_000, 3_200_000], "E": [800_000, 1_400_000, 2_000_000]}
    assert prof["settings"]["frequencies_khz"] == prof["frequencies_khz"]
    assert prof["reference_khz"] == {"P": 3_200_000, "E": 2_000_000}
    # for readers without cycles: each class's slope at its highest calibrated frequency
    assert prof["class_watts"]["P"] == pytest.approx(prof["class_watts_per_ghz_second"]["P"] * 3.2)
    loaded = [s for s in prof["samples"] if s["level"]]
    assert {(s["class"], s["khz"]) for s in loaded} == {(0, k) for k in (800_000, 2_000_000, 3_200_000)} | \
        {(1, k) for k in (800_000, 1_400_000, 2_000_000)}
    # every file calibrate wrote holds what it held before
    assert cpufreq_files(tree) == before
    saved = profiles.load(prof["path"])
    assert saved["basis"] == "frequency" and saved["class_watts_per_ghz_second"] == prof["class_watts_per_ghz_second"]
    assert prof["model"]["parts"]["frequency"].startswith("measured (cycles)")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_calibration_restores_every_cpufreq_file(tmp_path, worker_cgroup, sig):
    tree = hybrid_cpufreq_tree(tmp_path / "sys")
    before = cpufreq_files(tree)
    with _sim(tree, worker_cgroup, noise=0.0) as sim:
        p = _calibrate(sim, tree, worker_cgroup, tmp_path, "--seconds-per-level", "60", "--rounds", "1",
                       popen=True)
        try:
            deadline = time.monotonic() + 120
            while cpufreq_files(tree) == before:  # wait until a frequency is pinned
                assert p.poll() is None, p.communicate()
                assert time.monotonic() < deadline, "calibrate never pinned a frequency"
                time.sleep(0.05)
            p.send_signal(sig)
            out, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert p.returncode == 128 + sig, err
    assert "no profile saved" in err
    assert cpufreq_files(tree) == before


def test_cpufreq_it_cannot_write_is_refused_in_one_sentence(tmp_path, worker_cgroup):
    """The tree mounted read-only (in a mount namespace of the command's own):
    refused before any load, exit 1, one line, nothing changed."""
    tree = hybrid_cpufreq_tree(tmp_path / "sys")
    before = cpufreq_files(tree)
    cpufreq = os.path.join(tree, "devices", "system", "cpu", "cpufreq")
    with _sim(tree, worker_cgroup, noise=0.0) as sim:
        argv = [sys.executable, "-m", "ebpf_energy", "calibrate", "--powercap-root", sim.root, "--topology-root",
                tree, "--cpu-cgroup", worker_cgroup, "--no-save"]
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", cpufreq, *argv],
                           capture_output=True, text=True, cwd=ROOT, timeout=300,
                           env={**os.environ, "PYTHONPATH": ROOT})
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and "--frequencies 0" in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert cpufreq_files(tree) == before
    assert not [d for d in os.listdir(worker_cgroup) if d.startswith("ebpf-energy-class-")]


def test_frequencies_0_keeps_the_time_based_fit(tmp_path, worker_cgroup):
    tree = hybrid_cpufreq_tree(tmp_path / "sys")
    before = cpufreq_files(tree)
    with _sim(tree, worker_cgroup, noise=0.02, seed=5) as sim:
        p = _calibrate(sim, tree, worker_cgroup, tmp_path, "--seconds-per-level", "0.8", "--rounds", "2",
                       "--frequencies", "0", "--no-save")
    assert p.returncode == 0, p.stderr
    prof = json.loads(p.stdout)
    assert "basis" not in prof and set(prof["class_watts"]) == {"P", "E"}
    # the frequencies stayed where they were: P at 3.2 GHz, E at 2.0 GHz, so the time slopes are those
    assert prof["class_watts"]["P"] == pytest.approx(P_GHZ_W * 3.2, rel=0.15)
    assert prof["class_watts"]["E"] == pytest.approx(E_GHZ_W * 2.0, rel=0.15)
    assert cpufreq_files(tree) == before
