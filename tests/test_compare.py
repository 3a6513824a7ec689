"""`ebpf-energy compare`: both monitors over one workload, judged against rusage."""

import json
import os
import subprocess
import sys

import pytest

from ebpf_energy.compare import last_json, render

pytestmark = pytest.mark.kernel


def compare(*args, timeout=120):
    r = subprocess.run([sys.executable, "-m", "ebpf_energy", "compare", "--json", "-p", "15", *args],
                       capture_output=True, text=True, timeout=timeout)
    return r


def leftover_cgroups():
    from ebpf_energy.cgroups import cgroup2_mount

    mount = cgroup2_mount()
    return sorted(n for n in os.listdir(mount) if n.startswith(f"ebpf-energy-compare-"))


def test_short_lived_every_workload_process_seen_by_ebpf():
    before = leftover_cgroups()
    r = compare("-d", "3", "--workload", "short-lived")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["schema"] == 1
    wl = out["workload"]
    assert wl["processes"] > 20  # ~3 ms each for 3 s: hundreds on a quiet machine, fewer on a busy one
    ebpf, trad = out["monitors"]["ebpf"], out["monitors"]["traditional"]
    for m in (ebpf, trad):
        assert set(m) >= {"total_cpu_ns", "total_energy_j", "processes_seen", "samples_or_events",
                          "overhead_cpu_ns", "workload_processes_seen", "workload_cpu_ns"}
        assert m["overhead_cpu_ns"] > 0
    assert ebpf["workload_processes_seen"] == wl["processes"]
    assert abs(ebpf["workload_cpu_ns"] - wl["cpu_ns"]) <= max(0.005 * wl["cpu_ns"], 1_000_000)
    assert ebpf["bpf_ns"] > 0  # bpf_stats were on for the run ...
    # ... and the /proc side's capture rate is reported, whatever it is
    assert 0 <= trad["workload_processes_seen"] <= wl["processes"]
    assert ebpf["samples_or_events"] > trad["samples_or_events"] > 0
    assert leftover_cgroups() == before
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        assert f.read().strip() == "0"


def test_cpu_workload_both_within_their_error():
    r = compare("-d", "2", "--workload", "cpu", "-i", "0.1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    truth = out["workload"]["cpu_ns"]
    ebpf, trad = out["monitors"]["ebpf"], out["monitors"]["traditional"]
    assert abs(ebpf["workload_cpu_ns"] - truth) <= 0.005 * truth
    # /proc: whole ticks, and each process is counted only from its first sample
    tick_ns = 1e9 / os.sysconf("SC_CLK_TCK")
    samples = trad["samples_or_events"]
    assert abs(trad["workload_cpu_ns"] - truth) <= tick_ns * (samples + 2) * out["workload"]["processes"]


def test_shell_command_workload_and_its_children():
    cmd = "for i in 1 2 3 4 5; do python3 -c 'sum(range(300000))'; done"
    r = compare("-d", "10", "-w", cmd)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["workload"]["command"] == cmd
    ebpf = out["monitors"]["ebpf"]
    assert ebpf["workload_processes_seen"] >= 6  # the shell and its five pythons
    truth = out["workload"]["cpu_ns"]
    assert abs(ebpf["workload_cpu_ns"] - truth) <= max(0.005 * truth, 1_000_000)


def test_failing_workload_is_a_clear_error_and_cleans_up():
    """It still ran: the comparison of what it ran is printed (it used to be
    thrown away), the exit status says it failed."""
    before = leftover_cgroups()
    r = compare("-d", "5", "--json", "-w", "python3 -c 'sum(range(3000000))'; echo broken >&2; exit 3")
    assert r.returncode == 1
    assert "workload command failed (broken)" in r.stderr and "the comparison covers what it ran" in r.stderr
    assert "Traceback" not in r.stderr
    w = json.loads(r.stdout)["workload"]
    assert w["exit_code"] == 3 and w["failed"] == "broken" and w["cpu_ns"] > 0
    assert leftover_cgroups() == before


def test_missing_command_is_a_clear_error():
    r = compare("-d", "2", "-w", "no-such-command-anywhere")
    assert r.returncode == 1
    assert "workload command failed" in r.stderr and "Traceback" not in r.stderr


def test_render_names_both_monitors_and_the_truth():
    result = {"duration_s": 1.0, "workload": {"command": "x", "processes": 3, "cpu_ns": 2_000_000},
              "monitors": {n: {"total_cpu_ns": 1, "total_energy_j": 1.0, "processes_seen": 1,
                               "samples_or_events": 1, "overhead_cpu_ns": 1, "workload_processes_seen": 3,
                               "workload_cpu_ns": 2_000_000} for n in ("ebpf", "traditional")}}
    text = render(result)
    assert "eBPF" in text and "/proc" in text and "3 of 3" in text and "100.0%" in text


def test_last_json_reads_a_summary_after_json_lines():
    assert last_json('{"interval": 1}\n{"summary": true, "x": 2}\n') == {"summary": True, "x": 2}
    assert last_json('{\n  "a": 1\n}\n') == {"a": 1}
    assert last_json("garbage") is None


def _descendants(pid):
    """Every live process whose parent chain leads to ``pid`` (re-parented ones are found by cmdline)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"ebpf_energy" in cmd and (b"monitor" in cmd or b"traditional" in cmd or b"workloads" in cmd) \
                and int(d) != os.getpid():
            out.append(int(d))
    return out


def _until(pred, seconds=15.0):
    import time

    end = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("sig", ["TERM", "KILL"])
def test_a_killed_compare_leaves_nothing_running(sig):
    """SIGTERM stops it like Ctrl-C (exit 143, a sentence); SIGKILL takes its
    monitors and workload with it (they die with their parent), and the cgroup
    it could not remove is swept by the next start."""
    import signal

    from ebpf_energy.cgroups import cgroup2_mount, sweep_stale

    before = set(_descendants(0))
    p = subprocess.Popen([sys.executable, "-m", "ebpf_energy", "compare", "-d", "30", "--workload", "short-lived"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "both monitors running" not in line:
            line = p.stderr.readline()
            assert line, "compare ended before its monitors ran"
        p.send_signal(getattr(signal, "SIG" + sig))
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if sig == "TERM":
        assert p.returncode == 143 and "stopped by SIGTERM" in err and "Traceback" not in err, err
    else:
        assert p.returncode == -9
    assert _until(lambda: not set(_descendants(0)) - before), "a monitor or the workload outlived compare"
    if sig == "KILL":
        sweep_stale(cgroup2_mount())
    assert not [c for c in leftover_cgroups() if f"-{p.pid}-" in c]


def test_background_jobs_the_shell_never_reaps_are_in_the_truth():
    """The review's D12: `-w 'yes & yes & wait'` cut at the deadline. The shell's
    rusage misses the two `yes` (killed, never reaped by it); the workload
    cgroup's own CPU time holds them, so the eBPF side is judged against all of it."""
    r = compare("-d", "1", "-w", "yes >/dev/null & yes >/dev/null & wait")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    wl = out["workload"]
    assert wl["truth"] == "cgroup cpu.stat"
    truth = wl["cpu_ns"]
    assert truth > 10 * max(wl["rusage_cpu_ns"], 1)  # the yes processes ran; the shell's rusage missed them
    ebpf = out["monitors"]["ebpf"]
    assert abs(ebpf["workload_cpu_ns"] - truth) <= max(0.005 * truth, 1_000_000)
    assert ebpf["workload_processes_seen"] >= 3


def test_csv_has_a_row_per_monitor_and_the_truth():
    import csv
    import io

    r = subprocess.run([sys.executable, "-m", "ebpf_energy", "compare", "--csv", "-p", "15", "-d", "1",
                        "--workload", "cpu"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["row"] for row in rows] == ["ebpf", "traditional", "truth"]
    truth = int(rows[2]["workload_cpu_ns"])
    assert truth > 0 and all(int(row["truth_cpu_ns"]) == truth for row in rows)
    assert abs(int(rows[0]["workload_cpu_ns"]) - truth) <= max(0.005 * truth, 1_000_000)
    assert rows[0]["model"] == "fixed" and rows[0]["truth"] == "cgroup cpu.stat"
    r = subprocess.run([sys.executable, "-m", "ebpf_energy", "compare", "--csv", "--json", "-d", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "alternatives" in r.stderr


@pytest.mark.parametrize("sig, code", [("INT", 130), ("TERM", 143)])
def test_a_signal_prints_what_was_measured_and_leaves_nothing(sig, code):
    """`kill -INT <compare>` (or SIGTERM) cuts the workload short: the
    comparison of the time measured is still printed, exit 128 + the signal,
    and no monitor, workload or cgroup is left (it printed nothing)."""
    import signal

    before = set(_descendants(0))
    p = subprocess.Popen([sys.executable, "-m", "ebpf_energy", "compare", "--json", "-p", "15", "-d", "600",
                          "--workload", "mixed"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # --json: no progress line; wait until the workload is in its cgroup (a state, not a time)
        assert _until(lambda: p.poll() is not None or any(
            _workload_in(c) for c in leftover_cgroups() if f"-{p.pid}-" in c), 120)
        assert p.poll() is None, p.communicate()
        p.send_signal(getattr(signal, "SIG" + sig))
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == code, err
    assert f"stopped by SIG{sig} before the 600 s were up; the comparison covers the time measured" in err
    assert "Traceback" not in err
    obj = json.loads(out)
    assert obj["stopped_by"] == "SIG" + sig and obj["workload"]["cpu_ns"] > 0
    assert set(obj["monitors"]) == {"ebpf", "traditional"} and obj["monitors"]["ebpf"]["workload_processes_seen"] > 0
    assert _until(lambda: not set(_descendants(0)) - before), "a monitor or the workload outlived compare"
    assert not [c for c in leftover_cgroups() if f"-{p.pid}-" in c]


def _workload_in(cgroup_name):
    from ebpf_energy.cgroups import cgroup2_mount

    try:
        with open(os.path.join(cgroup2_mount(), cgroup_name, "cgroup.procs")) as f:
            return bool(f.read().split())
    except OSError:
        return False


def test_a_stop_before_the_workload_ran_is_a_one_line_note_and_cleans_up():
    """Stopped before anything was measured: no comparison, one sentence, and
    the monitors it had started are gone, with the cgroup."""
    from ebpf_energy.compare import Stopped, compare as run_compare
    from ebpf_energy.stop import Stopper

    before, cgs = set(_descendants(0)), leftover_cgroups()
    stop = Stopper()
    stop.set("SIGINT")
    try:
        with pytest.raises(Stopped, match="^stopped by SIGINT before anything was measured$"):
            run_compare(1.0, workload="cpu", model_args=["-p", "15"], stop=stop)
    finally:
        stop.close()
    assert _until(lambda: not set(_descendants(0)) - before), "a monitor outlived compare"
    assert leftover_cgroups() == cgs
