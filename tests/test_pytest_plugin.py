"""The pytest plugin, run for real through pytester: budgets, the report, and life without root."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
SETPRIV = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]

TESTS = textwrap.dedent("""
    import subprocess, time
    import pytest

    def burn(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    @pytest.mark.energy_budget(joules=1e-6)
    def test_over_budget():
        burn(0.1)

    @pytest.mark.energy_budget(joules=1e6)
    def test_within_budget():
        burn(0.02)

    @pytest.mark.energy_budget(1e-6)
    def test_children_count_too():
        subprocess.run(["true"], check=True)

    def test_unmarked():
        pass
""")


def pyproject_pytest11():
    """The pytest11 entry point line as pyproject.toml declares it."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.entry-points.pytest11]", 1)[1].split("\n[", 1)[0]
    lines = [ln.strip() for ln in section.splitlines() if "=" in ln]
    assert lines, "pyproject.toml declares no pytest11 entry point"
    return lines


def test_entry_point_is_declared():
    assert pyproject_pytest11() == ['ebpf_energy = "ebpf_energy.pytest_plugin"']


def plugin_args():
    """Load the plugin the way it is installed: by its entry point when the
    package is installed, else by name (both cannot be given: pluggy refuses
    one module under two names)."""
    eps = entry_points()
    group = eps.select(group="pytest11") if hasattr(eps, "select") else eps.get("pytest11", [])  # 3.9: a dict
    if any(ep.value == "ebpf_energy.pytest_plugin" for ep in group):
        return []
    return ["-p", "ebpf_energy.pytest_plugin"]


def outcome_of(result, name):
    m = re.search(rf"::{name} (PASSED|FAILED)", result.stdout.str())
    return m.group(1) if m else None


@pytest.mark.kernel
@pytest.mark.parametrize("marker, message", [
    ('joules="abc"', "must be a positive, finite number"),
    ("joules=-1", "must be a positive, finite number"),
    ("joules=float('nan')", "must be a positive, finite number"),
    ("", "needs the joules"),
])
def test_a_bad_marker_is_a_usage_error(pytester, marker, message):
    pytester.makepyfile(test_bad=f"import pytest\n@pytest.mark.energy_budget({marker})\ndef test_x():\n    pass\n")
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str() and "TypeError" not in result.stderr.str() + result.stdout.str()


def test_budgets_and_report(pytester):
    pytester.makepyfile(test_energy=TESTS)
    result = pytester.runpytest(*plugin_args(), "-v", "-p", "no:cacheprovider", "--energy-report")
    result.assert_outcomes(passed=2, failed=2)
    out = result.stdout.str()
    assert outcome_of(result, "test_over_budget") == "FAILED"
    assert outcome_of(result, "test_children_count_too") == "FAILED"
    assert outcome_of(result, "test_within_budget") == "PASSED"
    assert outcome_of(result, "test_unmarked") == "PASSED"
    result.stdout.fnmatch_lines(["*energy budget exceeded: * J > 1e-06 J (* s CPU, 1 process(es); model *)*",
                                 "*energy budget exceeded: * J > 1e-06 J (* s CPU, 2 process(es); model *)*"])
    assert "Traceback" not in out and "no eBPF here" not in out
    # the report: one line per test, the costliest first, then the total
    section = out.split("ebpf-energy: joules per test", 1)[1]
    rows = re.findall(r"^\s*([\d.]+) J\s+([\d.]+) s CPU\s+(\d+) proc\s+(\S+)$", section, re.M)
    assert [r[3].split("::")[1] for r in rows][0] == "test_over_budget"
    assert {r[3].split("::")[1] for r in rows} == {"test_over_budget", "test_within_budget",
                                                   "test_children_count_too", "test_unmarked"}
    by_name = {r[3].split("::")[1]: r for r in rows}
    assert float(by_name["test_over_budget"][1]) == pytest.approx(0.1, rel=0.2)
    assert int(by_name["test_children_count_too"][2]) == 2
    joules = [float(r[0]) for r in rows]
    assert joules == sorted(joules, reverse=True)
    total = float(re.search(r"([\d.]+) J in all; model: ", section).group(1))
    assert total == pytest.approx(sum(joules), abs=0.005)


@pytest.mark.kernel
def test_no_marker_no_report_measures_nothing(pytester):
    pytester.makepyfile(test_plain="def test_a():\n    pass\n")
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    # (the header's "plugins: ebpf-energy-X" line, when installed, is pytest's, not ours)
    ours = [l for l in result.stdout.lines if "ebpf-energy" in l and not l.startswith("plugins:")]
    assert ours == []


@pytest.mark.kernel
def test_a_tests_own_failure_is_not_replaced_by_the_budget(pytester):
    pytester.makepyfile(test_fail=textwrap.dedent("""
        import pytest

        @pytest.mark.energy_budget(joules=1e-9)
        def test_broken():
            assert 1 == 2, "its own reason"
    """))
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "its own reason" in out and "energy budget exceeded" not in out


@pytest.mark.kernel
def test_report_without_measured_tests(pytester):
    pytester.makepyfile(test_none="")
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider", "--energy-report")
    assert "ebpf-energy: joules per test" in result.stdout.str()
    assert "no test was measured" in result.stdout.str()


# -- without root: pytest and the plugin in a folder nobody can read, loaded by its entry point ----------

def nobody_tree():
    base = Path(tempfile.mkdtemp(prefix="ebpf-energy-plugin-nobody-"))
    shutil.copytree(ROOT / "ebpf_energy", base / "ebpf_energy", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "py"):
        try:
            mod = __import__(name)
        except ImportError:
            continue
        src = mod.__file__
        if os.path.basename(src) == "__init__.py":
            shutil.copytree(os.path.dirname(src), base / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, base)
    # an installed distribution, as pip would leave it: pytest finds the plugin through pytest11
    dist = base / "ebpf_energy-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ebpf-energy\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\n" + "\n".join(
        ln.replace('"', "") for ln in pyproject_pytest11()) + "\n")
    (base / "test_energy.py").write_text(TESTS)
    for d, _, files in os.walk(base):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    return base


@pytest.mark.kernel  # needs root to drop it
def test_without_root_tests_run_and_the_plugin_says_so_once():
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed to drop privilege"
    base = nobody_tree()
    env = {"PATH": os.environ["PATH"], "EBPF_ENERGY_TEST_SESSION": os.environ["EBPF_ENERGY_TEST_SESSION"], "PYTHONPATH": str(base), "HOME": "/nonexistent",
           "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        r = subprocess.run(SETPRIV + [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                                      "--energy-report", "test_energy.py"],
                           capture_output=True, text=True, cwd=str(base), env=env, timeout=60)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = r.stdout + r.stderr
    # budgets are still checked, on rusage CPU time (they used to pass unchecked, the note swallowed)
    assert r.returncode == 1, out
    assert "test_over_budget FAILED" in r.stdout and "test_within_budget PASSED" in r.stdout, out
    assert "energy budget exceeded" in out and "rusage, no eBPF" in out
    assert out.count("ebpf-energy: no eBPF here") == 1, out  # in the summary, once, not lost to capture
    assert "joules per test" in out and "Traceback" not in out
    # a row per test; rusage cannot count processes, so "-" rather than 0
    assert re.search(r"s CPU +- proc  test_energy.py::test_children_count_too", out), out


@pytest.mark.kernel
def test_one_bpf_load_per_session(pytester, monkeypatch):
    """Four measured tests share one loaded monitor (each used to load and
    attach its own: ~80 ms a test)."""
    from ebpf_energy.monitor import EbpfSampler

    starts = []
    real = EbpfSampler.start

    def counting(self):
        starts.append(self)
        return real(self)

    monkeypatch.setattr(EbpfSampler, "start", counting)
    pytester.makepyfile(test_energy=TESTS)
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider", "--energy-report")
    result.assert_outcomes(passed=2, failed=2)
    assert len(starts) == 1 and starts[0].obj is None  # started once, stopped at the end
