"""powercap reader: discovery by name, two packages, wraps, missing domains, bad files, permissions."""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from ebpf_energy.rapl.errors import MeterFormatError, MeterPermissionError, NoMeterError
from ebpf_energy.rapl.choose import open_meter
from ebpf_energy.rapl.powercap import PowercapMeter, discover
from ebpf_energy.rapl.simulated import SimulatedPowercap
from rapl_fixtures import set_energy, write, zone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def two_packages(root, max_range=1_000_000):
    z = {
        "p0": zone(root, "intel-rapl:0", "package-0", 100, max_range),
        "c0": zone(root, "intel-rapl:0:0", "core", 10, max_range),
        "d0": zone(root, "intel-rapl:0:1", "dram", 20, max_range),
        "p1": zone(root, "intel-rapl:1", "package-1", 500, max_range),
    }
    write(os.path.join(root, ".dev", "intel-rapl", "enabled"), 1)
    return z


def test_two_packages_summed_domains_apart(tmp_path):
    z = two_packages(str(tmp_path))
    with PowercapMeter(str(tmp_path), keepalive=0) as m:
        assert sorted((x.domain, x.package) for x in m.zones) == [
            ("core", "package-0"), ("dram", "package-0"), ("package", "package-0"), ("package", "package-1")]
        r0 = m.read()
        set_energy(z["p0"], 1_100)
        set_energy(z["p1"], 2_500)
        set_energy(z["c0"], 510)
        set_energy(z["d0"], 20)
        r1 = m.read()
    d = r1.delta(r0)
    assert d == pytest.approx({"package": 3e-3, "core": 5e-4, "dram": 0.0})
    assert r1.packages["package-0"]["package"] == pytest.approx(1e-3)
    assert r1.packages["package-1"]["package"] == pytest.approx(2e-3)
    with pytest.raises(ValueError):
        r0.delta(r1)


def test_single_wrap_each_domain_alone(tmp_path):
    z = two_packages(str(tmp_path), max_range=10**10)  # 25 s to wrap at the 400 W guess: no warning due
    set_energy(z["p0"], 10**10 - 100)
    with PowercapMeter(str(tmp_path), keepalive=0) as m:
        r0 = m.read()
        set_energy(z["p0"], 50)  # wrapped: 100 + 50 uJ
        set_energy(z["p1"], 700)  # did not
        r1 = m.read()
        assert r1.delta(r0)["package"] == pytest.approx(150e-6 + 200e-6)
        assert m.wraps["package-0"] == 1 and m.wraps["package-1"] == 0
        assert not m.warnings


def test_several_wraps_accumulate_when_read_often(tmp_path):
    z = two_packages(str(tmp_path), max_range=1_000)
    with PowercapMeter(str(tmp_path), keepalive=0) as m:
        r0 = m.read()
        raw = 100
        for _ in range(25):  # 25 x 300 uJ = 7.5 wraps of a 1000 uJ counter
            raw = (raw + 300) % 1_000
            set_energy(z["p0"], raw)
            m.read()
        assert m.read().delta(r0)["package"] == pytest.approx(7_500e-6)
        assert m.wraps["package-0"] == 7


def test_interval_longer_than_wrap_time_is_warned(tmp_path):
    # 10_000 uJ at 1 W wraps every 10 ms: a 50 ms gap may hide a second wrap
    p0 = zone(str(tmp_path), "intel-rapl:0", "package-0", 0, 10_000, max_power_uw=1_000_000)
    seen = []
    with PowercapMeter(str(tmp_path), keepalive=0, warn=seen.append) as m:
        assert m.zones[0].wrap_seconds == pytest.approx(0.01)
        time.sleep(0.05)
        set_energy(p0, 5)
        m.read()
    assert seen and "a whole wrap may have been missed" in seen[0] and "package-0" in seen[0]


def test_keepalive_thread_catches_wraps_between_sparse_reads(tmp_path):
    """Two reads 4.8 J apart on a 1 J counter: the keep-alive thread, reading
    between them, sees every wrap. Each step waits until the keep-alive has read
    the new value (as a real counter moves slower than it is read), so the
    result is exact whatever the machine's load."""
    p = zone(str(tmp_path), "intel-rapl:0", "package-0", 0, max_range=1_000_000, max_power_uw=1_000)
    write(os.path.join(str(tmp_path), ".dev", "intel-rapl", "enabled"), 1)
    value, steps = 0, 12
    with PowercapMeter(str(tmp_path), keepalive=0.005) as m:
        assert m._thread is not None
        r0 = m.read()
        for _ in range(steps):  # 0.4 J a step: 4.8 J in all, 4 wraps
            value = (value + 400_000) % 1_000_000
            tmp = os.path.join(p, "energy_uj.new")  # whole, as sysfs shows it: never an empty file
            write(tmp, value)
            os.replace(tmp, os.path.join(p, "energy_uj"))
            deadline = time.monotonic() + 60
            while m.zones[0].last_uj != value:
                assert time.monotonic() < deadline, "the keep-alive thread never read the counter"
                time.sleep(0.001)
        r1 = m.read()
    assert m.wraps["package-0"] == 4
    assert r1.delta(r0)["package"] == pytest.approx(0.4 * steps, abs=1e-9)
    assert not m.warnings


def test_missing_domains_and_psys_and_unknown_zones(tmp_path):
    root = str(tmp_path)
    zone(root, "intel-rapl:0", "package-0", 5)
    zone(root, "intel-rapl:1", "psys", 7)
    zone(root, "intel-rapl:0:0", "mystery", 9)  # unknown: never guessed
    zone(root, "intel-rapl-mmio:0", "package-0", 11)  # duplicates the MSR zone: not counted twice
    with PowercapMeter(root, keepalive=0) as m:
        r = m.read()
    assert set(r.joules) == {"package", "psys"}
    assert [z.domain for z in m.zones if z.domain == "package"] == ["package"]


def test_amd_style_tree_and_die_names(tmp_path):
    root = str(tmp_path)
    zone(root, "intel-rapl:0", "package-0-die-0", 1)
    zone(root, "intel-rapl:0:0", "core", 1)
    zone(root, "intel-rapl:1", "package-0-die-1", 1)
    zones = discover(root)
    assert sorted(z.domain for z in zones) == ["core", "package", "package"]


@pytest.mark.parametrize("fname,content,needle", [
    ("energy_uj", "abc", "should hold a non-negative integer"),
    ("energy_uj", "-5", "should hold a non-negative integer"),
    ("energy_uj", "", "should hold a non-negative integer"),
    ("energy_uj", "2000000", "exceeds max_energy_range_uj"),
    ("max_energy_range_uj", "0", "is 0"),
    ("max_energy_range_uj", "1e6", "should hold a non-negative integer"),
])
def test_garbage_in_files_is_a_clear_error(tmp_path, fname, content, needle):
    p0 = zone(str(tmp_path), "intel-rapl:0", "package-0", 0, 1_000_000)
    write(os.path.join(p0, fname), content)
    with pytest.raises(MeterFormatError) as e:
        PowercapMeter(str(tmp_path), keepalive=0).close()
    assert needle in str(e.value) and fname in str(e.value)


def test_binary_name_and_missing_range(tmp_path):
    p0 = zone(str(tmp_path), "intel-rapl:0", "package-0")
    with open(os.path.join(p0, "name"), "wb") as f:
        f.write(b"\xff\xfe\x00")
    with pytest.raises(MeterFormatError, match="binary data"):
        discover(str(tmp_path))
    write(os.path.join(p0, "name"), "package-0")
    os.unlink(os.path.join(p0, "max_energy_range_uj"))
    # the kernel always writes it, hand-made trees may not: usable, said, and a
    # step back is a reset (there is no range to unwrap with)
    assert discover(str(tmp_path))[0].max_range_uj is None
    seen = []
    set_energy(p0, 5_000_000)
    with PowercapMeter(str(tmp_path), keepalive=0, warn=seen.append) as m:
        r0 = m.read()
        set_energy(p0, 5_500_000)
        r1 = m.read()
        set_energy(p0, 1_000)
        r2 = m.read()
    assert r1.delta(r0)["package"] == pytest.approx(0.5)
    assert r2.delta(r1)["package"] == pytest.approx(0.001)
    assert "has no max_energy_range_uj" in seen[0] and "read as a counter reset" in seen[1]


def test_other_tools_fixture_trees_nested_without_enabled_and_a_top_level_dram(tmp_path):
    """The review's D14: trees shaped like other tools' fixtures (nested, no
    ``enabled``, a ``dram`` zone at the top) are read, and that dram zone is
    ``dram``, not ``package-1/dram``; a zone that appears mid-run is said."""
    base = tmp_path / "intel-rapl"
    for rel, name, uj in (("intel-rapl:0", "package-0", 10), ("intel-rapl:0/intel-rapl:0:0", "core", 5),
                          ("intel-rapl:1", "dram", 7)):
        write(str(base / rel / "name"), name)
        write(str(base / rel / "energy_uj"), uj)
        write(str(base / rel / "max_energy_range_uj"), 1_000_000)
    zones = {z.label: z.domain for z in discover(str(tmp_path))}
    assert zones == {"package-0": "package", "package-0/core": "core", "dram": "dram"}
    seen = []
    with PowercapMeter(str(tmp_path), keepalive=0, warn=seen.append) as m:
        write(str(base / "intel-rapl:2" / "name"), "package-1")
        write(str(base / "intel-rapl:2" / "energy_uj"), 1)
        write(str(base / "intel-rapl:2" / "max_energy_range_uj"), 1_000_000)
    assert seen == ["powercap zones appeared after the start and were not counted: intel-rapl:2"]


def test_no_tree_or_no_package_zone(tmp_path):
    with pytest.raises(NoMeterError, match="no powercap tree"):
        discover(str(tmp_path / "absent"))
    zone(str(tmp_path), "intel-rapl:0", "mystery")
    with pytest.raises(NoMeterError, match="no RAPL package zone"):
        discover(str(tmp_path))


def test_open_meter_choices(tmp_path):
    two_packages(str(tmp_path))
    m = open_meter("auto", powercap_root=str(tmp_path))
    assert m.name == "powercap"
    m.close()
    assert open_meter("none", powercap_root=str(tmp_path)) is None


def test_no_rapl_on_this_machine_is_a_clear_error():
    """Paired with test_real_powercap: what a user without RAPL gets."""
    if os.path.isdir("/sys/class/powercap") and any(":" in e for e in os.listdir("/sys/class/powercap")):
        pytest.skip("this machine has RAPL: test_real_powercap covers it")
    with pytest.raises(NoMeterError, match="no RAPL here"):
        open_meter("powercap")
    assert open_meter("auto") is None  # auto: no meter, the caller falls back to a model
    r = subprocess.run([sys.executable, "-m", "ebpf_energy", "calibrate", "--meter", "powercap", "--json"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 1 and r.stdout == ""
    assert "no RAPL here" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.requires_rapl
def test_real_powercap():
    try:
        m = open_meter("powercap")
    except NoMeterError:
        pytest.skip("no powercap RAPL on this machine")
    with m:
        r0 = m.read()
        time.sleep(0.2)
        d = m.read().delta(r0)
    assert 0 < d["package"] < 0.2 * 1000  # below 1 kW


@pytest.fixture
def open_tmp():
    """A temporary folder uid 65534 can reach (pytest's tmp_path is 0700 root)."""
    d = tempfile.mkdtemp(prefix="ebpf-energy-nobody-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


def _nobody_python_tree(tmp_path):
    """A copy of the package that uid 65534 can import (not under /root)."""
    base = tmp_path / "nobody"
    shutil.copytree(os.path.join(ROOT, "ebpf_energy"), base / "ebpf_energy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    import click  # the CLI's one dependency on this path; site-packages may sit under /root (0700)

    shutil.copytree(os.path.dirname(click.__file__), base / "click", ignore=shutil.ignore_patterns("__pycache__"))
    for d, dirs, files in os.walk(base):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    os.chmod(tmp_path, 0o755)
    return str(base)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to drop privilege")
def test_unreadable_energy_uj_says_cve_and_fix(open_tmp):
    tmp_path = open_tmp
    pkg = _nobody_python_tree(tmp_path)
    tree = tmp_path / "powercap"
    p0 = zone(str(tree), "intel-rapl:0", "package-0", 1234)
    for d, dirs, files in os.walk(tree):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o444)
    os.chmod(os.path.join(p0, "energy_uj"), 0o400)  # root-only, as on patched kernels
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
           sys.executable, "-m", "ebpf_energy", "calibrate", "--powercap-root", str(tree), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=pkg,
                       env={"PATH": os.environ["PATH"], "PYTHONPATH": pkg, "HOME": "/nonexistent"})
    assert r.returncode == 1, r.stderr
    assert "CVE-2020-8694" in r.stderr and "energy_uj" in r.stderr and "CAP_PERFMON" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    # and root (this process) reads it fine: the error really was the permission
    with PowercapMeter(str(tree), keepalive=0) as m:
        assert m.zones[0].last_uj == 1234


def test_a_real_package_counter_is_read_in_the_background(tmp_path):
    """262 kJ range at 150 W wraps in ~29 min: the keep-alive reads every 60 s
    anyway (it used to be off for every real package, so an hour-long run read
    the meter twice and could lose whole wraps)."""
    zone(str(tmp_path), "intel-rapl:0", "package-0", 5, 262_143_328_850, max_power_uw=150_000_000)
    write(os.path.join(str(tmp_path), ".dev", "intel-rapl", "enabled"), 1)
    with PowercapMeter(str(tmp_path)) as m:
        assert m.zones[0].wrap_seconds == pytest.approx(1747.6, abs=0.1)
        assert m._thread is not None and m._thread.is_alive()
        assert m.keepalive_s == 60.0


@pytest.mark.parametrize("before, after, counted_j", [
    (500_000_000_000, 1_000_000, 1.0),  # reset to ~0 (module reload): only the J since the reset
    (500_000_000_000, 499_999_999_000, 0.0),  # a small step back: not a wrap
])
def test_a_reset_or_step_back_is_not_a_wrap(tmp_path, before, after, counted_j):
    """A counter that jumps by more than the zone could draw is a reset, not
    a wrap (it used to add a whole range: +500 kJ, 87 kW)."""
    p = zone(str(tmp_path), "intel-rapl:0", "package-0", before, 1_000_000_000_000, max_power_uw=100_000_000)
    write(os.path.join(str(tmp_path), ".dev", "intel-rapl", "enabled"), 1)
    seen = []
    with PowercapMeter(str(tmp_path), keepalive=0, warn=seen.append) as m:
        r0 = m.read()
        set_energy(p, after)
        r1 = m.read()
    assert r1.delta(r0)["package"] == pytest.approx(counted_j)
    assert m.wraps["package-0"] == 0
    assert len(seen) == 1 and "read as a counter reset" in seen[0]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_simulated_tree_command_removes_its_tree_when_stopped(tmp_path, sig):
    """`python -m ebpf_energy.rapl.simulated DIR` stopped by Ctrl-C or SIGTERM
    leaves nothing in DIR (the review's item 19), unless --keep."""
    import signal as _signal

    target = tmp_path / "sim"
    p = subprocess.Popen([sys.executable, "-m", "ebpf_energy.rapl.simulated", str(target), "--packages", "1"],
                         stdout=subprocess.PIPE, text=True, cwd=ROOT,
                         preexec_fn=lambda: _signal.signal(_signal.SIGINT, _signal.SIG_DFL))
    try:
        assert "simulated powercap tree at" in p.stdout.readline()
        assert os.path.exists(target / ".simulated")
        p.send_signal(getattr(_signal, sig))
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not target.exists()


def test_simulated_tree_command_refuses_bad_numbers(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ebpf_energy.rapl.simulated", str(tmp_path / "s"), "--idle-watts", "nan"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "--idle-watts must be a finite number" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "s").exists()
