"""``ebpf-energy run -- COMMAND``: the whole process tree of a command, as a user runs it.

The truth for CPU time is the rusage the parent collected: the kernel sums
every waited-for descendant into it, exactly, so the eBPF count (a cgroup per
run) must agree with it within 0.5% (or 1 ms), and must have seen exactly the
processes the command is known to start.
"""

import json
import math
import os
import resource
import signal
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ebpf_energy.cgroups import cgroup2_mount
from ebpf_energy.measurement import RunError, run_command
from ebpf_energy.model.fixed import FixedWattsModel
from ebpf_energy.rapl.simulated import SimulatedPowercap

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_KEYS = {"schema", "command", "exit_code", "wall_s", "cpu_ns", "energy_j", "carbon_g", "processes",
                 "model", "over_budget", "budget_joules"}
SETPRIV = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]

PY = sys.executable
BURN = "import time\nt=time.process_time()+{s}\nwhile time.process_time()<t: pass"


def burn_cmd(seconds):
    """A python3 -c command line (as one shell word) that burns ``seconds`` of CPU."""
    return f"{PY} -c '{BURN.format(s=seconds)}'"


# sh + 2 background burners + 5 short-lived `true` + 1 foreground python = 9 processes
TREE_SCRIPT = (f"{burn_cmd(0.15)} & {burn_cmd(0.1)} & "
               "for i in 1 2 3 4 5; do /bin/true; done; "
               f"{PY} -c pass; wait")
TREE_PROCESSES = 9


def cli(*args, timeout=60, env=None):
    return subprocess.run([PY, "-m", "ebpf_energy", "run", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=env)


def cli_json(*args, expect_rc=0):
    r = cli("--json", *args)
    assert r.returncode == expect_rc, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout), r


def close_enough(a_ns, b_ns):
    """The project's accuracy target: within 0.5% or 1 ms."""
    return abs(a_ns - b_ns) <= max(0.005 * max(a_ns, b_ns), 1_000_000)


def own_bpf_fds():
    """This process's open BPF objects (progs, maps, links): none may survive a run."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("anon_inode:bpf"):
            out.append(target)
    return sorted(out)


def our_cgroups():
    mount = cgroup2_mount()
    return sorted(n for n in os.listdir(mount) if n.startswith(f"ebpf-energy-run-{os.getpid()}-"))


@pytest.mark.kernel
def test_every_descendant_counted_against_our_own_rusage():
    """In-process: RUSAGE_CHILDREN of this process around run_command is an
    independent truth (run_command's own rusage figure comes from wait4)."""
    fds0 = own_bpf_fds()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = run_command(["sh", "-c", TREE_SCRIPT], model=FixedWattsModel(15.0))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    truth = round((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e9)
    assert r.method == "ebpf" and r.exit_code == 0
    assert r.processes == TREE_PROCESSES, r.pids
    assert truth >= 250_000_000  # the burners ran
    assert close_enough(r.cpu_ns, truth), (r.cpu_ns, truth)
    assert close_enough(r.cpu_ns, r.rusage_cpu_ns), (r.cpu_ns, r.rusage_cpu_ns)
    assert r.energy_j == pytest.approx(r.cpu_ns / 1e9 * 15.0, rel=1e-9)
    assert own_bpf_fds() == fds0 and our_cgroups() == []


@pytest.mark.kernel
def test_cli_json_contract_and_tree():
    obj, r = cli_json("-p", "15", "--carbon-intensity", "200", "--", "sh", "-c", TREE_SCRIPT)
    assert CONTRACT_KEYS <= set(obj), CONTRACT_KEYS - set(obj)
    assert obj["schema"] == 1
    assert obj["command"] == ["sh", "-c", TREE_SCRIPT]
    assert obj["exit_code"] == 0 and obj["over_budget"] is False and obj["budget_joules"] is None
    assert obj["processes"] == TREE_PROCESSES and obj["method"] == "ebpf"
    assert obj["rusage_cpu_ns"] >= 250_000_000
    assert close_enough(obj["cpu_ns"], obj["rusage_cpu_ns"]), (obj["cpu_ns"], obj["rusage_cpu_ns"])
    assert obj["model"]["name"] == "fixed" and obj["model"]["measured"] is False
    assert obj["model"]["watts_per_cpu"] == 15.0
    assert obj["energy_j"] == pytest.approx(obj["cpu_ns"] / 1e9 * 15.0, rel=1e-9)
    assert obj["carbon_g"] == pytest.approx(obj["energy_j"] / 3.6e6 * 200, rel=1e-12)
    # the burners ran side by side on 2 CPUs: wall time is at least the longest one, less than their sum + start-up
    assert 0.15 <= obj["wall_s"] < 5
    assert "Traceback" not in r.stderr


@pytest.mark.kernel
def test_default_carbon_intensity_is_documented_475():
    obj, _ = cli_json("-p", "10", "--", "true")
    assert obj["carbon_g"] == pytest.approx(obj["energy_j"] / 3.6e6 * 475.0, rel=1e-12)
    assert obj["processes"] == 1


@pytest.mark.kernel
def test_command_output_untouched_and_text_report_on_stderr():
    r = cli("-p", "15", "--", "sh", "-c", "echo hello; echo oops >&2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\n"
    assert r.stderr.startswith("oops\n") or "oops\n" in r.stderr
    assert "wall time" in r.stderr and "CPU time" in r.stderr and "(1 process)" in r.stderr
    assert "fixed" in r.stderr and "modelled, not measured" in r.stderr


@pytest.mark.kernel
def test_repeat_gives_runs_mean_and_stdev():
    obj, _ = cli_json("-p", "15", "--repeat", "3", "--", "sh", "-c", burn_cmd(0.05))
    runs = obj["runs"]
    assert len(runs) == 3
    for run in runs:
        assert {"wall_s", "cpu_ns", "energy_j", "carbon_g", "processes", "model", "exit_code"} <= set(run)
        assert run["processes"] == 2 and close_enough(run["cpu_ns"], run["rusage_cpu_ns"])
    for key in ("energy_j", "cpu_ns", "wall_s", "carbon_g"):
        values = [run[key] for run in runs]
        assert obj["mean"][key] == pytest.approx(statistics.mean(values), rel=1e-12)
        assert obj["stdev"][key] == pytest.approx(statistics.stdev(values), rel=1e-9, abs=1e-12)
        assert obj["stdev"][key] > 0  # three real runs never cost exactly the same
        assert obj["min"][key] == min(values) and obj["max"][key] == max(values)
        # the whole's figures are all means: none is the last run's (they used to be mixed)
        assert obj[key] == pytest.approx(obj["mean"][key])


@pytest.mark.kernel
@pytest.mark.parametrize("script,code", [("exit 7", 7), ("exit 1", 1), ("kill -TERM $$", 128 + 15)])
def test_exit_status_is_the_commands_own(script, code):
    # even with a budget it cannot meet: the command's failure comes first
    obj, r = cli_json("-p", "15", "--budget-joules", "1e-9", "--", "sh", "-c", script, expect_rc=code)
    assert obj["exit_code"] == code and obj["signal"] == ("SIGTERM" if code == 143 else None)
    assert obj["over_budget"] is True


@pytest.mark.kernel
def test_over_budget_exits_75_and_says_by_how_much():
    r = cli("-p", "15", "--budget-joules", "0.05", "--", "sh", "-c", burn_cmd(0.1))
    assert r.returncode == 75, r.stderr
    assert "OVER budget by" in r.stderr
    # the text's figure agrees with the JSON of the same kind of run
    over = float(r.stderr.split("OVER budget by")[1].split("J")[0])
    energy = float([ln for ln in r.stderr.splitlines() if "J    energy" in ln][0].split()[0])
    assert over == pytest.approx(energy - 0.05, abs=2e-3)
    obj, _ = cli_json("-p", "15", "--budget-joules", "0.05", "--", "sh", "-c", burn_cmd(0.1), expect_rc=75)
    r = cli("-p", "15", "--budget-joules", "0.05", "--budget-exit-code", "9", "--", "sh", "-c", burn_cmd(0.1))
    assert r.returncode == 9, r.stderr
    assert obj["over_budget"] is True and obj["budget_joules"] == 0.05 and obj["energy_j"] > 0.05


@pytest.mark.kernel
def test_within_budget_exits_0():
    r = cli("-p", "15", "--budget-joules", "1000", "--", "true")
    assert r.returncode == 0, r.stderr
    assert "within budget" in r.stderr
    obj, _ = cli_json("-p", "15", "--budget-joules", "1000", "--", "true")
    assert obj["over_budget"] is False and obj["budget_joules"] == 1000


@pytest.mark.kernel
def test_missing_command_is_a_clear_127():
    r = cli("-p", "15", "--", "/nonexistent/no-such-command", "x")
    assert r.returncode == 127
    assert "cannot run /nonexistent/no-such-command" in r.stderr and "No such file" in r.stderr
    assert "Traceback" not in r.stderr
    assert not [n for n in os.listdir(cgroup2_mount()) if n.startswith("ebpf-energy-run-")
                and not os.path.exists(f"/proc/{n.split('-')[3]}")], "a run cgroup outlived its process"


@pytest.mark.kernel
def test_missing_command_leaves_nothing_loaded_in_process():
    fds0 = own_bpf_fds()
    with pytest.raises(RunError, match="cannot run no-such-command-xyz"):
        run_command(["no-such-command-xyz"], model=FixedWattsModel(15.0))
    assert own_bpf_fds() == fds0
    assert our_cgroups() == []


def test_usage_errors_are_clear():
    r = cli("--budget-joules", "-1", "--", "true")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "budget-joules" in r.stderr
    r = cli("--repeat", "0", "--", "true")
    assert r.returncode == 2 and "repeat" in r.stderr
    r = cli("--json")
    assert r.returncode == 2 and "COMMAND" in r.stderr


@pytest.mark.kernel
def test_fixed_watts_scale_energy_for_the_same_cpu():
    cmd = ["--", "sh", "-c", burn_cmd(0.05)]
    a, _ = cli_json("-p", "15", *cmd)
    b, _ = cli_json("-p", "30", *cmd)
    # same CPU (give or take): joules per CPU-second exactly double
    assert b["energy_j"] / b["cpu_ns"] == pytest.approx(2 * a["energy_j"] / a["cpu_ns"], rel=1e-9)
    assert b["model"]["watts_per_cpu"] == 30.0
    assert b["energy_j"] == pytest.approx(2 * a["energy_j"], rel=0.5)


@pytest.mark.kernel
def test_simulated_rapl_meter_drives_the_rapl_model(tmp_path):
    with SimulatedPowercap(str(tmp_path / "powercap"), period=0.005, seed=3, noise=0.0):
        obj, r = cli_json("--powercap-root", str(tmp_path / "powercap"), "--no-profile", "--",
                          "sh", "-c", burn_cmd(0.2))
    model = obj["model"]
    assert model["name"] == "rapl" and model["measured"] is True and model["simulated"] is True
    assert model["meter"] == "powercap"
    assert "simulated" in r.stderr  # said, not hidden
    assert obj["processes"] == 2 and close_enough(obj["cpu_ns"], obj["rusage_cpu_ns"])
    # the meter draws 8 W idle + 12 W per busy CPU-second (2 packages); our share is a part of that
    upper = (8.0 + 2 * 12.0) * obj["wall_s"] * 1.5
    assert 0 < obj["energy_j"] < upper


SH_BURN = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"


# -- without root --------------------------------------------------------------------------------

def nobody_tree(modules):
    """A folder uid 65534 can read holding our package and ``modules`` (root's
    site-packages sits under /root, mode 0700)."""
    base = Path(tempfile.mkdtemp(prefix="ebpf-energy-run-nobody-"))
    shutil.copytree(ROOT / "ebpf_energy", base / "ebpf_energy", ignore=shutil.ignore_patterns("__pycache__"))
    for name in modules:
        mod = __import__(name)
        src = mod.__file__
        if os.path.basename(src) == "__init__.py":
            shutil.copytree(os.path.dirname(src), base / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, base)
    for d, _, files in os.walk(base):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    return base


def as_nobody(argv, base, timeout=60):
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed to drop privilege"
    env = {"PATH": os.environ["PATH"], "EBPF_ENERGY_TEST_SESSION": os.environ["EBPF_ENERGY_TEST_SESSION"], "PYTHONPATH": str(base), "HOME": "/nonexistent",
           "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(SETPRIV + argv, capture_output=True, text=True, cwd=str(base), env=env,
                          timeout=timeout)


@pytest.mark.kernel  # needs root to drop it
def test_run_without_root_falls_back_to_rusage():
    base = nobody_tree(["click", "cffi", "pycparser", "elftools", "_cffi_backend"])
    try:
        r = as_nobody([PY, "-c", "import os; print(os.geteuid())"], base)
        assert r.stdout.strip() == "65534", r.stderr
        r = as_nobody([PY, "-m", "ebpf_energy", "run", "--json", "-p", "15", "--", "true"], base)
        # a shell loop burns the CPU: nobody cannot exec root's interpreter by path from sh
        r2 = as_nobody([PY, "-m", "ebpf_energy", "run", "--json", "-p", "15", "--",
                        "sh", "-c", SH_BURN], base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for res in (r, r2):
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
    obj = json.loads(r.stdout)
    assert CONTRACT_KEYS <= set(obj) and obj["schema"] == 1
    assert obj["method"] == "rusage" and obj["processes"] is None and obj["exit_code"] == 0
    burn = json.loads(r2.stdout)
    assert burn["method"] == "rusage" and burn["cpu_ns"] == burn["rusage_cpu_ns"] >= 50_000_000
    assert burn["energy_j"] == pytest.approx(burn["cpu_ns"] / 1e9 * 15.0, rel=1e-9)
    assert math.isfinite(burn["carbon_g"])


@pytest.mark.kernel
def test_a_background_process_is_left_running_and_said(tmp_path):
    """`(...) &` outlives the command: like `time`, run leaves it running (it
    used to be SIGKILLed), and says so; --wait counts it whole."""
    beat = tmp_path / "beat"
    script = f"(for i in 1 2 3; do echo x >> {beat}; sleep 0.2; done) & exit 0"
    obj, r = cli_json("-p", "15", "--", "sh", "-c", script)
    assert obj["left_running"] >= 1
    deadline = time.monotonic() + 10
    while len(beat.read_text().splitlines()) < 3:  # the loop was not killed: it finishes on its own
        assert time.monotonic() < deadline, "the background loop was killed"
        time.sleep(0.05)
    text = cli("-p", "15", "--", "sh", "-c", script)
    assert "still running, left to run" in text.stderr
    burner = "(timeout 0.4 sh -c 'while :; do :; done' &) ; exit 0"
    obj, _ = cli_json("-p", "15", "--wait", "--", "sh", "-c", burner)
    assert obj["left_running"] == 0
    assert obj["cpu_ns"] >= 100_000_000  # the background loop's CPU is in (the shell's rusage has none of it)


@pytest.mark.kernel
@pytest.mark.parametrize("fmt", ["text", "json", "csv"])
def test_dash_o_writes_the_report_to_a_file(tmp_path, fmt):
    """-o keeps the report out of the command's own output, in every format."""
    f = tmp_path / "report"
    extra = {"text": [], "json": ["--json"], "csv": ["--csv"]}[fmt]
    r = cli("-p", "15", *extra, "-o", str(f), "--repeat", "2", "--", "sh", "-c", "echo hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\nhello\n"
    body = f.read_text()
    if fmt == "json":
        assert len(json.loads(body)["runs"]) == 2
    elif fmt == "csv":
        rows = body.splitlines()
        assert rows[0].startswith("run,exit_code,signal,wall_s,cpu_ns,energy_j") and len(rows) == 3
    else:
        assert "mean" in body and "stdev" in body and "min" in body and "max" in body


def test_a_command_that_cannot_run_is_126():
    r = cli("-p", "15", "--", "/etc/passwd")
    assert r.returncode == 126 and "cannot run /etc/passwd" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("argv", [[""], ["", "x"], ["  "]])
def test_an_empty_command_is_a_usage_error(argv):
    r = cli("-p", "15", "--", *argv)  # exec of "" said "cannot run : Permission denied"
    assert r.returncode == 2 and "the command is empty" in r.stderr and "Traceback" not in r.stderr
    assert "cannot run" not in r.stderr


@pytest.mark.parametrize("argv, code, says", [
    (["/nonexistent"], 127, "cannot run /nonexistent: No such file or directory"),
    (["no-such-command-xyz"], 127, "cannot run no-such-command-xyz: command not found (not in PATH)"),
    (["/tmp"], 126, "cannot run /tmp: it is a directory"),  # exec said "Permission denied"
])
def test_a_command_that_cannot_start_says_why_in_one_line(argv, code, says):
    r = cli("-p", "15", "--", *argv)
    assert r.returncode == code and r.stderr.strip() == f"ebpf-energy run: {says}", r.stderr


def test_a_script_whose_interpreter_is_missing_says_so(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    r = cli("-p", "15", "--", str(script))
    assert r.returncode == 127 and "its #! interpreter was not found" in r.stderr, r.stderr


@pytest.mark.kernel
def test_codecarbon_csv_rows_have_its_columns_and_units(tmp_path):
    """--codecarbon-csv appends rows with CodeCarbon's emissions.csv columns:
    seconds, kg CO2e, W, kWh; one header, a row per run."""
    import csv

    from ebpf_energy.codecarbon_csv import COLUMNS

    f = tmp_path / "emissions.csv"
    obj, _ = cli_json("-p", "15", "--repeat", "2", "--codecarbon-csv", str(f), "--", "sh", "-c", burn_cmd(0.05))
    obj2, _ = cli_json("-p", "15", "--codecarbon-csv", str(f), "--", "true")
    with open(f, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert len(rows) == 3
    for r, run in zip(rows, obj["runs"] + [obj2]):
        assert float(r["duration"]) == pytest.approx(run["wall_s"])
        assert float(r["energy_consumed"]) == pytest.approx(run["energy_j"] / 3.6e6)
        assert float(r["emissions"]) == pytest.approx(run["carbon_g"] / 1000)
        assert float(r["cpu_power"]) == pytest.approx(run["energy_j"] / run["wall_s"])
        assert r["tracking_mode"] == "process" and r["gpu_count"] == "0"


def _procs_with_cmdline(argv):
    """Pids whose command line is exactly ``argv`` (zombies have none: they are gone)."""
    want = ("\0".join(argv) + "\0").encode()
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if f.read() == want:
                        out.append(int(name))
            except OSError:
                pass
    return out


def _started(argv, parent, timeout_s=60.0):
    """The pid of ``argv`` once ``parent`` has started it (polled for a state, not timed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in _procs_with_cmdline(argv):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == parent.pid:
                        return pid
            except (OSError, ValueError, IndexError):
                pass
        if parent.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"{argv} was not started: {parent.communicate()}")


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_run_itself_stops_the_command_and_the_report_is_printed(fmt, sig, code):
    """`kill -INT <run>` (no terminal: the command never got a ^C) was ignored
    and the command ran on; now it reaches the command, as Ctrl-C would."""
    argv = ["sleep", str(900_000 + os.getpid() % 99_999)]
    run = subprocess.Popen([PY, "-m", "ebpf_energy", "run", "-p", "15", *(["--json"] if fmt == "json" else []),
                            "--", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _started(argv, run)
        run.send_signal(sig)
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == code, err
    assert "Traceback" not in err
    if fmt == "json":
        obj = json.loads(out)
        assert obj["signal"] == signal.Signals(sig).name and obj["exit_code"] == code and obj["command"] == argv
    else:
        assert f"ebpf-energy run: {' '.join(argv)}" in err and "J    energy" in err
        assert f"the command was killed by {signal.Signals(sig).name} (exit status {code})" in err
    assert _procs_with_cmdline(argv) == []


def test_a_terminals_ctrl_c_reaches_the_command_and_the_report_is_printed():
    """^C on a terminal goes to the whole foreground group: the command has
    it from the terminal, run passes its own copy on to nobody, and reports."""
    import fcntl
    import pty
    import termios

    argv = ["sleep", str(800_000 + os.getpid() % 99_999)]
    master, slave = pty.openpty()

    def own_terminal():  # a session of its own, with the pty as its controlling terminal
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    run = subprocess.Popen([PY, "-m", "ebpf_energy", "run", "-p", "15", "--", *argv],
                           stdin=slave, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                           preexec_fn=own_terminal)
    os.close(slave)
    try:
        _started(argv, run)
        os.write(master, b"\x03")
        _, err = run.communicate(timeout=120)
    finally:
        os.close(master)
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 130, err
    assert "the command was killed by SIGINT (exit status 130)" in err and "Traceback" not in err
    assert _procs_with_cmdline(argv) == []
