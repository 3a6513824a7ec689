"""`pip install .` in a clean virtual environment: only pyelftools, cffi and click (and
cffi's pycparser) come along, the BPF object is package data, and the CLI works
without clang (nothing is compiled at install or run time)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"pip", "setuptools", "wheel", "ebpf-energy", "pyelftools", "cffi", "pycparser", "click"}


def test_clean_install_pulls_only_the_three_dependencies(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                                               "tests", "bench", ".pytest_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = venv / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", str(src)], check=True, timeout=300)
    listed = subprocess.run([str(pip), "list", "--format", "freeze"], capture_output=True, text=True, check=True)
    names = {line.split("==")[0].lower().replace("_", "-") for line in listed.stdout.split()}
    assert names - ALLOWED == set(), f"extra packages pulled in: {sorted(names - ALLOWED)}"
    # the CLI runs with a PATH that has no clang, and the shipped object is there
    env = {"PATH": str(venv / "bin") + ":/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([str(venv / "bin" / "ebpf-energy"), "--help"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "monitor" in r.stdout and "load" in r.stdout
    code = "from ebpf_energy.monitor import object_path; import os; print(os.path.getsize(object_path()))"
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0 and int(r.stdout) > 1000, r.stderr
    # the dashboard's page and its vendored charting library (with its licence) are package data
    code = "from ebpf_energy.dashboard.app import STATIC, static_file; print(min(len(static_file(n)) for n in STATIC))"
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0 and int(r.stdout) > 500, r.stderr
