"""Calibration: the fit, the workload, the profile, and recovery on the simulated meter."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from ebpf_energy.calibration import profile as profiles
from ebpf_energy.cpustat import busy_seconds, cgroup_busy_seconds
from ebpf_energy.calibration.fit import FitError, linear_fit, t_quantile
from ebpf_energy.calibration.runner import NotCredible, build_profile, plan, sample_levels
from ebpf_energy.calibration.workload import Workload
from ebpf_energy.rapl.powercap import PowercapMeter
from ebpf_energy.rapl.simulated import SimulatedPowercap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDLE_W, K = 8.0, 12.0


def test_t_quantiles_match_tables():
    for df, t in [(1, 12.7062), (2, 4.3027), (5, 2.5706), (10, 2.2281), (30, 2.0423), (120, 1.9799)]:
        assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)
    assert t_quantile(0.025, 7) == pytest.approx(-t_quantile(0.975, 7))


def test_linear_fit_exact_and_noisy():
    f = linear_fit([0, 1, 2, 0, 1, 2], [8, 20, 32, 8, 20, 32])
    assert (f.intercept, f.slope, f.r2) == (pytest.approx(8), pytest.approx(12), pytest.approx(1))
    rng = random.Random(3)
    x = [i % 3 for i in range(60)]
    y = [8 + 12 * v + rng.gauss(0, 0.5) for v in x]
    f = linear_fit(x, y)
    assert f.ci95_intercept[0] < 8 < f.ci95_intercept[1] and f.ci95_slope[0] < 12 < f.ci95_slope[1]
    assert 0.99 < f.r2 < 1
    with pytest.raises(FitError, match="one load level"):
        linear_fit([1, 1, 1], [3, 4, 5])


def _fake_samples(points):
    return [{"round": 0, "level": lv, "t_s": 1.0, "cpu_s": u, "joules": {"package": p}} for lv, u, p in points]


class _M:
    name, simulated = "powercap", True


def test_refuses_non_credible_fits():
    with pytest.raises(NotCredible, match="only one load level"):
        build_profile(_fake_samples([(1, 1.0, 20), (1, 1.01, 21), (1, 0.99, 19)]), _M(), {})
    with pytest.raises(NotCredible, match="not positive"):
        build_profile(_fake_samples([(0, 0, 30), (1, 1, 20), (2, 2, 10), (0, 0, 30.5)]), _M(), {})
    rng = random.Random(1)
    noisy = [(lv, lv, 10 + rng.uniform(-20, 20) + lv) for lv in [0, 1, 2] * 6]
    with pytest.raises(NotCredible, match="R²"):
        build_profile(_fake_samples(noisy), _M(), {}, min_r2=0.9)


def _children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def test_workload_levels_and_cleanup():
    with Workload() as w:
        w.set_level(2)
        pids = w.pids()
        assert len(pids) == 2 and set(pids) <= set(_children(os.getpid()))
        time.sleep(0.2)
        for p in pids:  # spinning: R state and burning CPU
            with open(f"/proc/{p}/stat") as f:
                assert int(f.read().rsplit(")", 1)[1].split()[11]) > 0  # utime ticks
        w.set_level(1)
        assert w.pids() == pids[:1]
    for p in pids:
        assert not os.path.exists(f"/proc/{p}")


def _cgroup2_mount():
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if fstype == "cgroup2":
                return mnt
    return None


@pytest.fixture
def worker_cgroup():
    """A cgroup v2 of our own for the workers: its cpu.stat is the CPU time of our
    load alone, so other people's load on this shared machine blurs nothing."""
    mnt = _cgroup2_mount()
    if mnt is None or os.geteuid() != 0:
        pytest.skip("needs root and a cgroup v2 mount")
    path = os.path.join(mnt, f"ebpf-energy-calib-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(path)
    yield path
    deadline = time.monotonic() + 5
    while True:
        try:
            os.rmdir(path)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _split_source(cgroup):
    def source():
        t = cgroup_busy_seconds(cgroup)
        return [t / 2, t / 2]  # both packages share the load
    return source


def test_calibration_recovers_idle_and_k_on_simulated_meter(worker_cgroup):
    """Two packages, noise, a 3 J counter range (wraps every ~0.2-0.8 s): within 3%."""
    with SimulatedPowercap(max_energy_range_uj=3_000_000, idle_watts=IDLE_W, watts_per_cpu_second=K,
                           noise=0.03, seed=7, cpu_source=_split_source(worker_cgroup)) as sim, \
            PowercapMeter(sim.root) as meter:
        samples = sample_levels(meter, plan([0, 1, 2], 1, seed=1), seconds_per_level=1.2, sample_interval=0.2,
                                settle=0.15, cpu_reader=lambda: cgroup_busy_seconds(worker_cgroup),
                                cgroup=worker_cgroup)
        prof = build_profile(samples, meter, {"levels": [0, 1, 2]})
        wraps = meter.wraps
    assert wraps["package-0"] >= 2 and wraps["package-1"] >= 2
    assert prof["idle_watts"] == pytest.approx(IDLE_W, rel=0.03)
    assert prof["watts_per_cpu_second"] == pytest.approx(K, rel=0.03)
    assert 0.95 < prof["r2"] <= 1
    lo, hi = prof["ci95"]["watts_per_cpu_second"]
    assert lo < prof["watts_per_cpu_second"] < hi
    assert prof["simulated"] is True and prof["meter"] == "powercap" and prof["domain"] == "package"
    assert set(prof["residuals"]) == {"0", "1", "2"}
    assert prof["per_domain"]["dram"]["idle_watts"] == pytest.approx(1.5, rel=0.15)
    assert prof["cores"] == os.cpu_count() and prof["cpu_model"] and prof["kernel"]


def test_profile_roundtrip_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert profiles.default_path() == str(tmp_path / "cfg" / "ebpf-energy" / "profile.json")
    prof = {"schema": 1, "idle_watts": 5.0, "watts_per_cpu_second": 9.0, **profiles.host_identity()}
    path = profiles.save(prof)
    back = profiles.load(path)
    assert back["idle_watts"] == 5.0 and back["_path"] == path
    assert profiles.matches_host(back) == (True, "")
    assert not profiles.matches_host({**back, "cores": back["cores"] + 1})[0]
    bad = tmp_path / "bad.json"
    for text, needle in [("{", "not valid JSON"), ("[]", "expected a JSON object"),
                         ('{"idle_watts": "x", "watts_per_cpu_second": 1}', "'idle_watts' missing"),
                         ('{"idle_watts": 1, "watts_per_cpu_second": -1}', "watts_per_cpu_second > 0")]:
        bad.write_text(text)
        with pytest.raises(profiles.ProfileError, match=needle):
            profiles.load(str(bad))
    with pytest.raises(profiles.ProfileError, match="no calibration profile"):
        profiles.load(str(tmp_path / "missing.json"))


def _cli(*args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "ebpf_energy", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT, **(env or {})}, **kw)


def test_calibrate_json_end_to_end(tmp_path, worker_cgroup):
    with SimulatedPowercap(max_energy_range_uj=3_000_000, idle_watts=IDLE_W, watts_per_cpu_second=K,
                           noise=0.02, seed=3, cpu_source=_split_source(worker_cgroup)) as sim:
        p = _cli("calibrate", "--powercap-root", sim.root, "--cpu-cgroup", worker_cgroup,
                 "--levels", "0,2", "--seconds-per-level", "1",
                 "--rounds", "1", "--sample-interval", "0.2", "--settle", "0.15", "--json",
                 env={"XDG_CONFIG_HOME": str(tmp_path)})
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    prof = json.loads(out)  # stdout is only JSON
    assert prof["schema"] == 1 and prof["credible"] is True and prof["simulated"] is True
    for key in ("idle_watts", "watts_per_cpu_second", "r2", "ci95", "meter", "samples", "residuals",
                "cpu_model", "cores", "kernel", "date", "per_domain"):
        assert key in prof
    assert prof["idle_watts"] == pytest.approx(IDLE_W, rel=0.05)
    assert prof["watts_per_cpu_second"] == pytest.approx(K, rel=0.05)
    assert prof["model"]["name"] == "calibrated" and prof["model"]["measured"] is False
    # a simulated fit never lands on the real profile's default path
    assert prof["path"] == str(tmp_path / "ebpf-energy" / "profile-simulated.json")
    assert not (tmp_path / "ebpf-energy" / "profile.json").exists()
    assert profiles.load(prof["path"])["watts_per_cpu_second"] == prof["watts_per_cpu_second"]
    assert "calibrating" not in err  # no progress bar when not on a terminal


def test_calibrate_refuses_one_level_with_exit_4(tmp_path):
    with SimulatedPowercap(max_energy_range_uj=3_000_000) as sim:
        p = _cli("calibrate", "--powercap-root", sim.root, "--levels", "1", "--seconds-per-level", "0.4",
                 "--rounds", "1", "--sample-interval", "0.1", "--settle", "0", "--json",
                 env={"XDG_CONFIG_HOME": str(tmp_path)})
        out, err = p.communicate(timeout=60)
    assert p.returncode == 4
    assert json.loads(out)["credible"] is False and "only one load level" in err
    assert not (tmp_path / "ebpf-energy").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_calibration_leaves_no_workers(tmp_path, sig):
    with SimulatedPowercap(max_energy_range_uj=3_000_000) as sim:
        p = _cli("calibrate", "--powercap-root", sim.root, "--levels", "2", "--seconds-per-level", "30",
                 "--rounds", "1", env={"XDG_CONFIG_HOME": str(tmp_path)})
        deadline = time.monotonic() + 20
        workers = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.05)
            workers = _children(p.pid)
        assert len(workers) == 2, "the workers never started"
        p.send_signal(sig)
        out, err = p.communicate(timeout=10)
    if sig != signal.SIGKILL:
        assert p.returncode == 128 + sig, err  # 130 for Ctrl-C, 143 for SIGTERM (it used to be 130 for both)
        assert f"stopped by {signal.Signals(sig).name}" in err and "Traceback" not in err
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{w}") for w in workers):
        time.sleep(0.05)
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")], "orphan workers left spinning"
    assert not (tmp_path / "ebpf-energy").exists()


def test_an_output_in_a_folder_that_does_not_exist_is_refused_at_once(tmp_path):
    """A typo in --output creates no folders and wastes no minutes of calibration."""
    target = tmp_path / "no" / "such" / "p.json"
    r = subprocess.run([sys.executable, "-m", "ebpf_energy", "calibrate", "--output", str(target), "--powercap-root",
                        str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "does not exist" in r.stderr and not (tmp_path / "no").exists()
