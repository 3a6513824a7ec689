"""``ebpf-energy traditional`` end to end, as a user runs it."""

import csv
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ebpf_energy.procfs import CLK_TCK, find_cgroup2_mount
from ebpf_energy.report import csv_header

ROOT = Path(__file__).resolve().parent.parent
TICK_NS = 1_000_000_000 // CLK_TCK
CONTRACT_KEYS = {"schema", "duration_s", "model", "total_cpu_ns", "idle_ns", "total_energy_j", "idle_energy_j",
                 "domains_j", "dropped", "drops", "processes"}
PROC_KEYS = {"pid", "comm", "cgroup", "cgroup_id", "cpu_ns", "energy_j", "exited", "cpu_ns_by_class",
             "nspid"}  # /proc counts no slices


def cmd(*args):
    return [sys.executable, "-m", "ebpf_energy", "traditional", *args]


def run(*args, timeout=30):
    return subprocess.run(cmd(*args), capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def balanced(r):
    """Processes (+ what filters/--top left out) + idle = total."""
    listed = math.fsum(p["energy_j"] for p in r["processes"])
    omitted = r.get("omitted", {}).get("energy_j", 0.0)
    return r["total_energy_j"] == pytest.approx(listed + omitted + r["idle_energy_j"], rel=1e-12, abs=1e-15)


def test_json_summary():
    r = run("-d", "0.5", "--json", "-p", "10")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)  # stdout is only the JSON
    assert CONTRACT_KEYS <= set(obj) and obj["schema"] == 1 and obj["source"] == "procfs"
    model = dict(obj["model"])
    parts = model.pop("parts")
    from ebpf_energy.topology import read_topology

    # the core-class keys are tested in test_class_models.py
    assert {k: model.pop(k) for k in ("classes", "class_weights", "frequency")}["frequency"] == \
        read_topology().frequency
    assert model == {"name": "fixed", "measured": False, "profile": None, "meter": None, "watts_per_cpu": 10.0,
                     "chosen_by": "-p"}
    assert parts["total"] == "given" and parts["idle"] == "unknown"
    assert obj["drops"] == {"tasks": 0, "events": 0} and obj["dropped"] == 0
    assert obj["duration_s"] == pytest.approx(0.5, abs=0.1)
    assert obj["idle_energy_j"] == 0.0
    assert obj["total_energy_j"] == math.fsum(p["energy_j"] for p in obj["processes"]) + obj["idle_energy_j"]
    assert obj["total_cpu_ns"] == sum(p["cpu_ns"] for p in obj["processes"])
    assert 0 < obj["total_cpu_ns"] + obj["idle_ns"] <= 2 * os.cpu_count() * obj["duration_s"] * 1e9
    for p in obj["processes"]:
        assert set(p) == PROC_KEYS
        assert p["energy_j"] == pytest.approx(p["cpu_ns"] / 1e9 * 10)
    assert obj["sampler"]["samples"] >= 5 and obj["overhead_cpu_ns"] > 0
    assert "polling /proc every 0.1 s" in r.stderr


def test_json_lines_with_interval():
    r = run("-d", "0.5", "-i", "0.1", "--json", "-p", "10")
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert objs[-1]["summary"] is True and "interval" not in objs[-1]
    assert [o["interval"] for o in objs[:-1]] == list(range(1, len(objs)))
    assert 4 <= len(objs) - 1 <= 6
    assert sum(o["total_cpu_ns"] for o in objs[:-1]) == objs[-1]["total_cpu_ns"]
    assert all(CONTRACT_KEYS <= set(o) and balanced(o) for o in objs)


def test_csv_has_a_header():
    r = run("-d", "0.3", "--csv", "-p", "10")
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == csv_header("process", False, slices=False)
    assert all(len(row) == len(rows[0]) for row in rows)
    assert [row[-2] for row in rows[-4:]] == ["idle", "steal", "dropped", "total"]
    assert "modelled, not measured (-p given)" in rows[-1][-1]
    r = run("-d", "0.3", "-i", "0.1", "--csv", "-p", "10", "--by", "cgroup")
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == csv_header("cgroup", True, slices=False) and rows.count(rows[0]) == 1
    # rows exist only for cgroups that ran something; each is labelled
    assert all(row[0] == "summary" or row[0].isdigit() for row in rows[1:])


def test_default_table_names_the_model():
    r = run("-d", "0.3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split()[:2] == ["PID", "COMM"]
    assert "Model:" in r.stdout and "fixed" in r.stdout and "not measured" in r.stdout
    assert "Total energy:" in r.stdout and "Idle time:" in r.stdout
    assert "warning" in r.stderr  # no meter, no profile: said out loud, on stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_prints_the_summary_and_exits_0(sig):
    p = subprocess.Popen(cmd("-d", "0", "--json", "-p", "10"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT)
    try:
        assert "polling" in p.stderr.readline()
        time.sleep(0.5)
        p.send_signal(sig)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    obj = json.loads(out)
    assert obj["duration_s"] >= 0.3 and balanced(obj)
    assert "Traceback" not in err


@pytest.mark.parametrize("args", [["-d", "-1"], ["-i", "0"], ["-i", "-1"], ["-i", "abc"], ["-i", "0.001"],
                                  ["--json", "--csv"], ["--by", "pid"], ["--top", "0"], ["-p", "0"],
                                  ["-d", "x"], ["--pid", "-3"]])
def test_usage_errors_exit_2(args):
    r = run(*args, "-d", "0.1") if "-d" not in args else run(*args)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert r.stdout == "" and "Error" in r.stderr and "Traceback" not in r.stderr


BURNER = textwrap.dedent("""
    import os, sys, threading, time
    cg = sys.argv[1]
    if cg != "-":
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    burned, end = threading.Semaphore(0), threading.Event()
    def burn(secs):
        t = time.thread_time()
        while time.thread_time() - t < secs:
            pass
        burned.release()
        end.wait()
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.process_time()
    ts = [threading.Thread(target=burn, args=(0.25,)) for _ in range(2)]
    [t.start() for t in ts]
    burned.acquire(); burned.acquire()
    print(int((time.process_time() - t0) * 1e9), time.monotonic_ns(), flush=True)
    sys.stdin.readline()
    end.set()
    [t.join() for t in ts]
    print(time.monotonic_ns(), flush=True)
    sys.stdin.readline()
""")


def measure_child(cg_dir, *args):
    """Start a child (in ``cg_dir`` when given), start the CLI, make the child
    burn once the CLI has taken samples; return (child pid, burn ns, objects).

    Exact whatever the load: the child's burner threads stay alive (blocked)
    until an interval that ends after the burn is out, and the CLI is stopped
    (Ctrl-C, which prints the summary) only after an interval that ends after
    the threads did, so the poller has seen every thread alive and gone."""
    child = subprocess.Popen([sys.executable, "-c", BURNER, cg_dir or "-"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    cli = None

    def interval_after(t_ns):
        while True:
            line = cli.stdout.readline()
            assert line, cli.stderr.read()
            objs.append(json.loads(line))
            if objs[-1]["window"]["end_ns"] > t_ns:
                return

    try:
        assert child.stdout.readline().strip() == "ready"
        cli = subprocess.Popen(cmd("-d", "600", "-i", "0.1", "--json", "-p", "10", *args),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        objs = []
        interval_after(0)  # an interval is out: the window has begun
        child.stdin.write("go\n")
        child.stdin.flush()
        burned, burned_at = map(int, child.stdout.readline().split())
        interval_after(burned_at)
        child.stdin.write("end\n")
        child.stdin.flush()
        interval_after(int(child.stdout.readline()))
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=30)
        assert cli.returncode == 128 + signal.SIGINT, err
        objs += [json.loads(line) for line in out.splitlines()]
        return child.pid, burned, objs
    finally:
        child.stdin.close()
        child.wait(10)
        if cli is not None and cli.poll() is None:
            cli.kill()
            cli.wait()


NO_SUCH_PID = 4194304  # the largest pid a kernel can have: nobody's here (pid_max is 32768)


def test_pid_filter_threads_and_accuracy():
    pid, burned, objs = measure_child(None, "--pid", str(os.getpid()), "--pid", str(NO_SUCH_PID), "--threads")
    summary = objs[-1]
    pids = {p["pid"] for p in summary["processes"]}
    assert pids <= {os.getpid()}  # only what was asked (the test process may not have run)
    assert summary["omitted"]["processes"] >= 1 and balanced(summary)

    pid, burned, objs = measure_child(None, "--pid", str(NO_SUCH_PID), "--threads")
    summary = objs[-1]
    assert summary["processes"] == [] and summary["omitted"]["cpu_ns"] == summary["total_cpu_ns"]

    pid, burned, objs = measure_child(None, "--threads")
    summary = objs[-1]
    row = next(p for p in summary["processes"] if p["pid"] == pid)
    # existed before the window: counted from the first sample, so it holds the burn
    # (plus a little reading and printing), to a couple of ticks
    assert burned - 2 * TICK_NS <= row["cpu_ns"] <= burned + 3 * TICK_NS, (row["cpu_ns"], burned)
    busy = [t for t in row["threads"] if t["cpu_ns"] >= 0.15e9]
    assert len(busy) == 2 and all(t["exited"] for t in busy)
    assert sum(o["processes"][0]["cpu_ns"] for o in objs[:-1] if o["processes"] and
               o["processes"][0]["pid"] == pid) <= row["cpu_ns"]


@pytest.fixture
def own_cgroup():
    mount = find_cgroup2_mount()
    assert mount, "no cgroup v2 mount"
    path = os.path.join(mount, f"ebpf-energy-test-{os.getpid()}")
    os.mkdir(path)
    try:
        yield mount, path
    finally:
        for _ in range(50):
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.05)


def test_by_cgroup_with_a_cgroup_of_our_own(own_cgroup):
    mount, path = own_cgroup
    rel = path[len(mount):]
    pid, burned, objs = measure_child(path, "--cgroup", path, "--by", "cgroup")
    summary = objs[-1]
    assert [p["pid"] for p in summary["processes"]] == [pid]
    assert summary["processes"][0]["cgroup"] == rel
    assert summary["cgroups"] == [{"cgroup": rel, "cgroup_id": os.stat(path).st_ino, "processes": 1,
                                   "cpu_ns": summary["processes"][0]["cpu_ns"],
                                   "energy_j": summary["processes"][0]["energy_j"]}]
    assert summary["processes"][0]["cpu_ns"] >= burned - 2 * TICK_NS
    assert balanced(summary)
    # a cgroup that does not exist is refused, not an empty report (it used to pass silently)
    r = run("-d", "0.2", "--json", "-p", "10", "--cgroup", rel + "-nonexistent")
    assert r.returncode == 2 and f"no cgroup {rel}-nonexistent" in r.stderr and r.stdout == ""


def test_verbose_goes_to_stderr():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 2: pass"])
    try:
        r = run("-d", "0.4", "-v", "--json", "-p", "10")
    finally:
        busy.kill()
        busy.wait()
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)
    assert "[sample " in r.stderr and " ms" in r.stderr


def _importable_copy(base):
    """The package and click copied where uid 65534 can read them (pytest's
    tmp_path and site-packages may sit under /root, mode 0700)."""
    import click

    shutil.copytree(ROOT / "ebpf_energy", base / "ebpf_energy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.dirname(click.__file__), base / "click", ignore=shutil.ignore_patterns("__pycache__"))
    for d, dirs, files in os.walk(base):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)


def test_works_without_root():
    """Run as nobody with no capabilities: /proc is all it needs."""
    base = Path(tempfile.mkdtemp(prefix="ebpf-energy-nobody-"))
    try:
        os.chmod(base, 0o755)
        _importable_copy(base)
        drop = []
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            assert setpriv, "setpriv (util-linux) is needed to drop privilege"
            drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                    "--bounding-set=-all"]
        env = {"PATH": os.environ["PATH"], "EBPF_ENERGY_TEST_SESSION": os.environ["EBPF_ENERGY_TEST_SESSION"], "PYTHONPATH": str(base), "HOME": "/nonexistent"}
        r = subprocess.run(drop + cmd("-d", "0.3", "--json", "--threads", "-p", "10"),
                           capture_output=True, text=True, cwd=str(base), env=env, timeout=30)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["sampler"]["samples"] >= 3 and balanced(obj)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_before_the_duration_is_up_gives_the_summary_and_128_plus_it(sig, code):
    """-d 30 cut short: the partial summary is printed and the exit status says so."""
    p = subprocess.Popen(cmd("-d", "30", "--json", "-p", "10"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT)
    try:
        assert "polling" in p.stderr.readline()
        p.send_signal(sig)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == code, err
    assert balanced(json.loads(out)) and f"stopped by {sig.name}" in err and "Traceback" not in err


@pytest.mark.parametrize("args", [["-d", "0.3", "-p", "10"], ["--help"]])
def test_a_full_disk_is_one_line_and_exit_74(args):
    with open("/dev/full", "w") as full:
        r = subprocess.run(cmd(*args), stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 74 and "cannot write the output: No space left on device" in r.stderr
    assert "Traceback" not in r.stderr


def test_filters_are_checked_once_for_every_output():
    """A thread's id as --pid is refused with the process to give; a pid of no
    process is warned about; a cgroup that does not exist is refused."""
    release = threading.Event()
    t = threading.Thread(target=release.wait)
    t.start()
    try:
        r = subprocess.run(cmd("-d", "0.2", "-p", "10", "--pid", str(t.native_id)), capture_output=True, text=True,
                           cwd=ROOT, timeout=30)
    finally:
        release.set()
        t.join()
    assert r.returncode == 2 and f"is a thread of process {os.getpid()}" in r.stderr
    r = subprocess.run(cmd("-d", "0.2", "-p", "10", "--json", "--pid", str(NO_SUCH_PID)), capture_output=True,
                       text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 0 and f"--pid {NO_SUCH_PID}: no such process now" in r.stderr
    for cg in ("no-such-cgroup", "/no/such", "/sys/fs/cgroup/unified/no-such"):
        r = subprocess.run(cmd("-d", "0.2", "-p", "10", "--cgroup", cg), capture_output=True, text=True, cwd=ROOT,
                           timeout=30)
        assert r.returncode == 2 and "no cgroup /" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("fmt", [[], ["--json"]])
def test_a_filter_that_matched_nothing_says_so_in_one_line(fmt):
    """An empty table read as a broken monitor: the filter's miss is said on
    stderr (the output and the exit status are unchanged)."""
    r = run("-d", "0.2", "-p", "10", "--comm", "no-such-name-xy", "--comm", "a-name-longer-than-15", *fmt)
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "no process matching" in ln]
    assert notes == [f"ebpf-energy traditional: no process matching --comm a-name-longer-than-15 --comm "
                     f"no-such-name-xy ran in the {notes[0].split(' ran in the ')[1].split(' s ')[0]} s measured "
                     "(the kernel keeps only 15 characters of a process name: a-name-longer-t)"], r.stderr
    if fmt:
        assert json.loads(r.stdout)["processes"] == []
