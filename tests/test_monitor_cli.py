"""``ebpf-energy monitor`` as a user runs it: JSON contract, filters, cgroups,
signals, privilege, verbose stream, and nothing left loaded afterwards."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from test_monitor import BURNER, OUR_LINKS, OUR_PROGRAMS, assert_all_gone, bpf_ids, prog_names, reap, schedstat_ns, spawn

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent
CGROUP2 = "/sys/fs/cgroup/unified"
REPORT_KEYS = {"schema", "duration_s", "model", "total_cpu_ns", "idle_ns", "total_energy_j", "idle_energy_j",
               "dropped", "drops", "processes", "window", "steal_ns", "dropped_cpu_ns"}
ROW_KEYS = {"pid", "comm", "cgroup", "cgroup_id", "cpu_ns", "slices", "energy_j", "exited"}


def cmd(*args):
    return [sys.executable, "-m", "ebpf_energy", "monitor", *args]


def run(*args, timeout=60):
    return subprocess.run(cmd(*args), capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def balanced(obj):
    parts = [p["energy_j"] for p in obj["processes"]] + [obj["idle_energy_j"]]
    if "omitted" in obj:
        parts.append(obj["omitted"]["energy_j"])
    return math.isclose(obj["total_energy_j"], math.fsum(parts), rel_tol=1e-9, abs_tol=1e-12)


def check_report(obj):
    assert obj["schema"] == 1
    assert REPORT_KEYS <= set(obj), REPORT_KEYS - set(obj)
    assert obj["model"]["name"] in ("fixed", "calibrated", "rapl") and "measured" in obj["model"]
    assert isinstance(obj["dropped"], int) and set(obj["drops"]) == {"tasks", "events"}
    assert obj["dropped"] == sum(obj["drops"].values())
    for p in obj["processes"]:
        assert ROW_KEYS <= set(p) and isinstance(p["exited"], bool)
    assert obj["total_cpu_ns"] == sum(p["cpu_ns"] for p in obj["processes"]) + obj.get("omitted", {}).get("cpu_ns", 0)
    assert balanced(obj)
    # the window in CLOCK_MONOTONIC, and every CPU-ns of it is a task's, idle, stolen or lost
    w = obj["window"]
    assert w["end_ns"] > w["start_ns"] and obj["duration_s"] == pytest.approx((w["end_ns"] - w["start_ns"]) / 1e9)
    assert (obj["total_cpu_ns"] + obj["idle_ns"] + obj["steal_ns"] + obj["dropped_cpu_ns"]
            == obj["ncpus"] * (w["end_ns"] - w["start_ns"]))


def wait_for_our_programs(proc, timeout=20.0):
    """Ids of the programs/maps/links the CLI process holds, once all its programs are attached."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        ids = bpf_ids(proc.pid)
        if len(ids["link"]) == OUR_LINKS:
            names = prog_names(ids["prog"])
            assert set(names.values()) == OUR_PROGRAMS, names
            return ids
        time.sleep(0.05)
    raise AssertionError(f"the monitor did not attach its {len(OUR_PROGRAMS)} programs in time")


def test_json_contract_and_conservation():
    r = run("-d", "0.5", "--json")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)  # stdout carries only the JSON
    check_report(obj)
    assert obj["source"] == "ebpf" and 0.45 < obj["duration_s"] < 2
    if obj["model"]["name"] == "fixed":
        assert obj["model"]["measured"] is False and obj["idle_energy_j"] == 0.0
    # the books balance exactly (check_report); what is neither a task's nor idle is stolen, never negative
    assert obj["steal_ns"] >= 0
    assert obj["processes"] and obj["dropped"] == 0
    assert obj["processes"] == sorted(obj["processes"], key=lambda p: -p["energy_j"])


def test_burner_in_the_cli_report():
    """The CLI's own numbers for a known burner: within 0.5% (or 1 ms) of sum_exec_runtime."""
    proc = subprocess.Popen(cmd("-d", "0", "--json", "--threads"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        wait_for_our_programs(proc)
        pid = spawn(BURNER, "emt-cliburn", 0.2)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        time.sleep(0.02)
        truth = schedstat_ns(pid)
        reap(pid)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    obj = json.loads(out)
    row = next(p for p in obj["processes"] if p["pid"] == pid)
    assert row["comm"] == "emt-cliburn" and row["exited"]
    assert abs(row["cpu_ns"] - truth) <= max(0.005 * truth, 1_000_000), (row["cpu_ns"], truth)
    assert [t["tid"] for t in row["threads"]] == [pid]
    assert row["threads"][0]["cpu_ns"] == row["cpu_ns"]


@pytest.mark.parametrize("how", ["duration", signal.SIGINT, signal.SIGTERM])
def test_nothing_left_loaded(how):
    """Normal end, Ctrl-C and SIGTERM all print the summary and free every program, map and link."""
    proc = subprocess.Popen(cmd("-d", "1.5" if how == "duration" else "0", "--json"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        ids = wait_for_our_programs(proc)
        assert len(ids["map"]) >= 2
        if how != "duration":
            time.sleep(0.2)
            proc.send_signal(how)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    check_report(json.loads(out))
    assert_all_gone(ids)


def test_interval_json_lines_end_with_summary():
    r = run("-d", "1.2", "-i", "0.4", "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) >= 3
    assert [o.get("interval") for o in lines[:-1]] == list(range(1, len(lines)))
    assert lines[-1].get("summary") is True and "interval" not in lines[-1]
    for o in lines:
        check_report(o)
    summary = lines[-1]
    assert abs(sum(o["duration_s"] for o in lines[:-1]) - summary["duration_s"]) < 0.01
    # the intervals add up to the summary exactly: nothing between them, nothing twice
    for key in ("total_cpu_ns", "idle_ns", "steal_ns"):
        assert sum(o[key] for o in lines[:-1]) == summary[key], key


def test_pid_and_comm_filters():
    pid = spawn(BURNER, "emt-filt", 3)
    try:
        time.sleep(0.1)
        r = run("-d", "0.5", "--json", "--pid", str(pid))
        c = run("-d", "0.5", "--json", "--comm", "emt-filt")
    finally:
        os.kill(pid, signal.SIGKILL)
        reap(pid)
    for res in (r, c):
        assert res.returncode == 0, res.stderr
        obj = json.loads(res.stdout)
        check_report(obj)
        assert [p["pid"] for p in obj["processes"]] == [pid]
        assert obj["processes"][0]["cpu_ns"] > 100_000_000
        assert obj["omitted"]["processes"] >= 1  # totals still cover the machine


def test_cgroup_filter_and_path():
    """A process moved into a child cgroup v2 is reported with that path; --cgroup lists only it."""
    assert os.path.isdir(CGROUP2), f"no cgroup v2 mount at {CGROUP2}"
    name = f"emt-{uuid.uuid4().hex[:8]}"
    path = os.path.join(CGROUP2, name)
    os.mkdir(path)
    ino = os.stat(path).st_ino
    pid = spawn(BURNER, "emt-cg", 3)
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        time.sleep(0.05)
        r = run("-d", "0.5", "--json", "--cgroup", "/" + name)
        full = run("-d", "0.3", "--json", "--cgroup", path, "--by", "cgroup")
    finally:
        os.kill(pid, signal.SIGKILL)
        reap(pid)
        deadline = time.monotonic() + 5
        while True:
            try:
                os.rmdir(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    check_report(obj)
    assert [p["pid"] for p in obj["processes"]] == [pid]
    row = obj["processes"][0]
    assert row["cgroup"] == "/" + name and row["cgroup_id"] == ino
    assert full.returncode == 0, full.stderr
    g = json.loads(full.stdout)
    assert [x["cgroup"] for x in g["cgroups"]] == ["/" + name]
    assert not os.path.exists(path)


def test_tiny_max_tasks_reports_drops():
    r = run("-d", "0.6", "--json", "--max-tasks", "2")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    check_report(obj)
    assert obj["drops"]["tasks"] > 0 and obj["dropped"] >= obj["drops"]["tasks"]
    assert "max-tasks" in r.stderr


def test_verbose_streams_slices_on_stderr():
    pid = spawn(BURNER, "emt-verb", 3)
    try:
        time.sleep(0.1)
        r = run("-d", "0.6", "-v", "--json", "--pid", str(pid))
    finally:
        os.kill(pid, signal.SIGKILL)
        reap(pid)
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)  # the stream never reaches stdout
    lines = [line for line in r.stderr.splitlines() if "runtime=" in line]
    assert lines, r.stderr
    assert all(f"pid={pid}" in line for line in lines)  # filtered in the kernel
    assert any(line.startswith("emt-verb") for line in lines)


def _readable_copy(base):
    """The package and its runtime dependencies where uid 65534 can read them."""
    import cffi
    import click
    import elftools
    import pycparser

    shutil.copytree(ROOT / "ebpf_energy", base / "ebpf_energy", ignore=shutil.ignore_patterns("__pycache__"))
    import prometheus_client

    for mod in (click, elftools, cffi, pycparser, prometheus_client):
        d = os.path.dirname(mod.__file__)
        shutil.copytree(d, base / os.path.basename(d), ignore=shutil.ignore_patterns("__pycache__"))
    import _cffi_backend

    shutil.copy(_cffi_backend.__file__, base)
    for d, dirs, files in os.walk(base):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)


def run_as_nobody(*args, caps=(), timeout=60, wrap=()):
    """``python -m ebpf_energy ARGS`` as uid 65534 holding only ``caps`` (ambient,
    as a systemd unit's AmbientCapabilities gives them), from a copy of the
    package that user can read. ``{base}`` in an argument is that copy's folder;
    ``wrap`` runs it (``timeout -s TERM 3``), as root, around setpriv."""
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop privilege"
    base = Path(tempfile.mkdtemp(prefix="ebpf-energy-nobody-"))
    try:
        os.chmod(base, 0o755)
        _readable_copy(base)
        # the interpreter must be reachable by nobody too (pyenv lives under /root here)
        python = sys.executable
        probe = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", "0"],
                               capture_output=True)
        if probe.returncode != 0:
            python = "/usr/bin/python3"
        env = {"PATH": os.environ["PATH"], "EBPF_ENERGY_TEST_SESSION": os.environ["EBPF_ENERGY_TEST_SESSION"], "PYTHONPATH": str(base), "HOME": "/nonexistent"}
        plus = "".join(f",+{c}" for c in caps)
        drop = [f"--inh-caps=-all{plus}", f"--bounding-set=-all{plus}"]
        if caps:
            drop.append("--ambient-caps=" + ",".join(f"+{c}" for c in caps))
        return subprocess.run([*wrap, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *drop, python, "-m",
                               "ebpf_energy", *(a.replace("{base}", str(base)) for a in args)],
                              capture_output=True, text=True, cwd=str(base), env=env, timeout=timeout)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_without_root_one_clear_sentence():
    r = run_as_nobody("monitor", "-d", "0.2", "--json", timeout=30)
    assert r.returncode != 0
    assert r.stdout == ""
    msg = r.stderr.strip()
    assert "Traceback" not in msg and "root" in msg and len(msg.splitlines()) == 1, msg


def test_a_meter_lost_mid_run_keeps_the_cpu_report():
    """The meter's files vanish during the run: the CPU report still comes,
    exit 0, and it says the meter was lost (it used to end in a traceback)."""
    import os
    from ebpf_energy.rapl.simulated import SimulatedPowercap

    with SimulatedPowercap() as sim:
        proc = subprocess.Popen(cmd("-d", "2", "--json", "--powercap-root", sim.root), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_our_programs(proc)
            sim.stop()
            os.remove(os.path.join(sim.zone_dir(1), "energy_uj"))
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "meter failed during the run" in err
    obj = json.loads(out)
    assert "meter failed during the run" in obj["model"]["meter_lost"]
    assert obj["total_cpu_ns"] > 0 and obj["processes"]


@pytest.mark.parametrize("command", ["monitor", "traditional"])
def test_a_control_character_in_a_name_cannot_forge_a_line(command):
    """A process named "emt\\nPID 1 FAKE" is shown escaped, as ps does: the
    table has no line of its own making."""
    # The child spins until it is killed, so it runs inside the window
    # however long loading takes on a busy machine.
    code = ("import ctypes; ctypes.CDLL(None).prctl(15, b'emt\\nPID 1 FAKE', 0, 0, 0)\n"
            "while True: pass")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        r = subprocess.run([sys.executable, "-m", "ebpf_energy", command, "-d", "1.5", "-p", "10", "--pid",
                            str(child.pid)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    finally:
        child.kill()
        child.wait()
    assert r.returncode == 0, r.stderr
    assert "emt\\x0aPID 1 FAKE" in r.stdout
    assert not any(line.startswith("PID 1 FAKE") for line in r.stdout.splitlines())


@pytest.mark.parametrize("command", [["monitor", "-d", "1", "--json", "-p", "10"],
                                     ["load", "{base}/ebpf_energy/bpf/energy_monitor.bpf.o", "-d", "0", "--json"]])
def test_nobody_with_cap_bpf_and_cap_perfmon_can_monitor(command):
    """Least privilege: an ordinary user holding only CAP_BPF and CAP_PERFMON
    runs the monitor; the check is on capabilities, never on the uid."""
    r = run_as_nobody(*command, caps=("bpf", "perfmon"))
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["schema"] == 1 and "Traceback" not in r.stderr
    if command[0] == "monitor":
        assert obj["processes"] and obj["total_cpu_ns"] > 0


@pytest.mark.parametrize("command, check", [
    # the exporter serves until a signal: timeout(1) sends SIGTERM after 3 s (it exits 124 then)
    (["exporter", "--listen", "127.0.0.1:0", "-p", "10"], lambda r: r.returncode == 124 and "serving" in r.stderr),
    (["dashboard", "--listen", "127.0.0.1:0", "-p", "10"], lambda r: r.returncode == 124 and "serving" in r.stderr),
    # without a cgroup of its own to write, run measures by rusage, and says nothing is wrong
    (["run", "--json", "-p", "10", "--", "true"],
     lambda r: r.returncode == 0 and json.loads(r.stdout)["method"] == "rusage"),
    # compare needs a cgroup for its workload: one sentence saying so
    (["compare", "-d", "1", "-p", "10"],
     lambda r: r.returncode == 1 and "cgroup" in r.stderr and len(r.stderr.strip().splitlines()) == 1),
])
def test_every_command_as_nobody_with_only_cap_bpf_and_cap_perfmon(command, check):
    """Each command with just the capabilities the README names: it works, or
    says in one sentence what else it needs; never a traceback."""
    wrap = ("timeout", "-s", "TERM", "3") if command[0] in ("exporter", "dashboard") else ()
    r = run_as_nobody(*command, caps=("bpf", "perfmon"), wrap=wrap)
    assert check(r) and "Traceback" not in r.stderr, (r.returncode, r.stdout[-500:], r.stderr[-800:])
