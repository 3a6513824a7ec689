"""Run the eBPF and the /proc monitor over one window and one workload, and judge both.

Each monitor runs as its own process (so its own CPU use is its overhead and
nothing else's), both started before the workload and stopped after it. The
workload runs in a cgroup of its own, so "the workload's processes" is a
fact both monitors report (their ``cgroup`` field), not a guess from names.
The truth is the workload cgroup's own CPU time (``cpu.stat`` ``usage_usec``,
the scheduler's clock): it holds every process that ran there, reaped or not,
background jobs and processes killed at the deadline included, which the
shell's ``wait4`` rusage misses. Where a kernel has no ``cpu.stat`` the rusage
is the truth, and the report says which. For built-in workloads the number of
processes they made is the truth for "processes seen".
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

from ebpf_energy.cgroups import CgroupError, TempCgroup
from ebpf_energy.children import preexec
from ebpf_energy.workloads import NAMES as WORKLOAD_NAMES

READY_TIMEOUT_S = 60
GROUPS_TOP = 10  # compare --by: rows per monitor, the rest folded into other


class CompareError(Exception):
    """A clear reason the comparison could not run (after cleaning up)."""


class Stopped(CompareError):
    """A stop came before the workload ran: nothing was measured (cleaned up)."""


@dataclass
class MonitorRun:
    name: str
    argv: List[str]
    proc: Optional[subprocess.Popen] = None
    stderr_lines: List[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    report: Optional[dict] = None

    def start(self, env):
        # a session of its own: a terminal's ^C reaches compare alone, which
        # stops the monitor once (a second SIGINT would cost its summary)
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     preexec_fn=preexec(), start_new_session=True)
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))
            if line.startswith(("ebpf-energy monitor: measuring", "ebpf-energy traditional: polling")):
                self.ready.set()
        self.ready.set()  # it exited: wake the waiter, which will see the exit status

    def stop(self, timeout=30):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        if self.proc.returncode == 0 and out.strip():
            self.report = last_json(out)

    def failure(self):
        tail = "\n".join(self.stderr_lines[-5:])
        return f"the {self.name} monitor failed (exit {self.proc.returncode}): {tail}"


def workload_argv(command: Optional[str], name: Optional[str], duration: float):
    if name:
        if name not in WORKLOAD_NAMES:
            raise CompareError(f"unknown workload {name!r}: choose one of {', '.join(WORKLOAD_NAMES)}")
        return [sys.executable, "-m", "ebpf_energy.workloads", name, repr(duration)], f"builtin:{name}"
    return ["/bin/sh", "-c", command], command


def run_workload(argv, cgroup: TempCgroup, duration: float, grace: float = 0.0, stop=None):
    """Start, let it run at most ``duration`` (+ ``grace``) s, or until
    ``stop`` is set (a signal to compare: cut short, as at the deadline), reap it.

    Returns (exit code, cpu_ns of its tree from wait4, the leader's CPU before
    it joined the cgroup, stdout, stderr). A
    command still running at the deadline gets SIGTERM (its whole group);
    whatever it left running in the cgroup is killed, and gone on return (so
    the cgroup's CPU time is final).
    """
    r_fd, w_fd = os.pipe()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=preexec(lambda: _join_telling(cgroup, w_fd)), start_new_session=True)
    except OSError as e:
        raise CompareError(f"cannot start the workload {shlex.join(argv)}: {e.strerror}") from None
    finally:
        os.close(w_fd)
    with os.fdopen(r_fd, "rb") as f:
        pre_join_ns = int.from_bytes(f.read(8) or b"\0", "little")
    out, err = [], []
    readers = [threading.Thread(target=lambda s=s, o=o: o.append(s.read()), daemon=True)
               for s, o in ((proc.stdout, out), (proc.stderr, err))]
    for t in readers:
        t.start()
    deadline = time.monotonic() + duration + grace
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            pid, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cgroup.kill_all()
    cgroup.wait_empty()
    return proc.returncode, _cpu_ns(rusage), pre_join_ns, _join(readers[0], out), _join(readers[1], err)


def _join_telling(cgroup: TempCgroup, fd: int):
    """In the workload's first process, before exec: tell the parent the CPU this
    process has used so far (forked in the parent's cgroup, its time up to the
    join is in no cgroup count of the workload's, but a monitor, which names a
    process by its cgroup at the end, books it to the workload), then join."""
    with open("/proc/self/schedstat", "rb") as f:
        ns = int(f.read().split()[0])
    os.write(fd, ns.to_bytes(8, "little"))
    cgroup.join()


def _join(reader, out):
    reader.join(timeout=5)
    return (out[0] if out else b"").decode(errors="replace")


def _cpu_ns(ru):
    return int(round((ru.ru_utime + ru.ru_stime) * 1e9))


def last_json(text: str) -> Optional[dict]:
    """The summary of a monitor's output: one JSON object, or JSON Lines ending with it."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def summarize(report: dict, cgroup: TempCgroup, by: Optional[str] = None) -> dict:
    """One monitor's row of the comparison (the JSON keys `compare --json` prints);
    with ``by``, its machine-wide rows per container, pod or unit too."""
    mine = [p for p in report["processes"] if cgroup.contains(p.get("cgroup"))]
    sampler = report.get("sampler") or {}
    row = {
        "total_cpu_ns": report["total_cpu_ns"],
        "total_energy_j": report["total_energy_j"],
        "processes_seen": report.get("processes_seen", len(report["processes"])),
        "samples_or_events": report.get("samples_or_events", 0),
        "overhead_cpu_ns": report.get("overhead_cpu_ns", 0),
        "workload_processes_seen": len(mine),
        "workload_cpu_ns": sum(p["cpu_ns"] for p in mine),
        "duration_s": report["duration_s"],
        "model": report["model"],
    }
    if "bpf_run_time_ns" in sampler:
        row["bpf_ns"] = sampler["bpf_run_time_ns"]
    if by:
        from ebpf_energy.report import fold_groups

        row[by + "s"] = fold_groups(report.get(by + "s", []), GROUPS_TOP, by)
    return row


def _wait_ready(r: MonitorRun, stop) -> None:
    """Until ``r`` measures; CompareError when it failed, Stopped on a stop."""
    end = time.monotonic() + READY_TIMEOUT_S
    while not r.ready.wait(0.05):
        if stop is not None and stop.is_set():
            raise Stopped(f"stopped by {stop.reason} before anything was measured")
        if time.monotonic() > end:
            break
    if not r.ready.is_set() or r.proc.poll() is not None:
        r.proc.wait(timeout=5) if r.proc.poll() is None else None
        raise CompareError(r.failure())


def compare(duration: float, command: Optional[str] = None, workload: Optional[str] = None,
            interval: float = 0.1, model_args: Optional[List[str]] = None, progress=None,
            by: Optional[str] = None, stop=None) -> dict:
    """Run everything and return the ``compare --json`` object.

    ``stop`` (a :class:`~ebpf_energy.stop.Stopper`) set during the run cuts
    the workload short and the comparison covers the time measured (the
    result's ``stopped_by`` says so); set before the workload ran, it raises
    :class:`Stopped`. Either way nothing is left running."""
    from ebpf_energy.loader.stats import run_time_stats

    from ebpf_energy.privilege import can_bpf

    if not can_bpf():
        raise CompareError("compare runs the eBPF monitor, which needs root (or CAP_BPF and CAP_PERFMON)")
    if bool(command) == bool(workload):
        raise CompareError("give either -w COMMAND or --workload NAME")
    argv, label = workload_argv(command, workload, duration)
    model_args = list(model_args or []) + (["--by", by] if by else [])
    base = [sys.executable, "-m", "ebpf_energy"]
    runs = [MonitorRun("ebpf", base + ["monitor", "--json", "-d", "0"] + model_args),
            MonitorRun("traditional", base + ["traditional", "--json", "-d", "0", "-i", repr(interval)]
                       + model_args)]
    env = dict(os.environ)
    try:
        # the eBPF side's in-kernel time (bpf_ns); without CAP_SYS_ADMIN, compare without it
        with run_time_stats(required=False), TempCgroup("compare") as cg:
            for r in runs:
                r.start(env)
            for r in runs:
                _wait_ready(r, stop)
            if stop is not None and stop.is_set():
                raise Stopped(f"stopped by {stop.reason} before anything was measured")
            if progress:
                progress(f"both monitors running; workload {label} for up to {duration:g} s")
            code, rusage_ns, pre_join_ns, out, err = run_workload(argv, cg, duration,
                                                                  grace=10.0 if workload else 0.0, stop=stop)
            stopped_by = stop.reason if stop is not None and stop.is_set() else None
            usage_ns = cg.cpu_usage_ns()
            if usage_ns is not None:
                cpu_ns, truth = usage_ns + pre_join_ns, "cgroup cpu.stat"
            else:
                cpu_ns, truth = rusage_ns, "rusage"
            time.sleep(0.05)  # let the last exits reach both monitors
            for r in runs:
                r.stop()
            for r in runs:
                if r.report is None:
                    raise CompareError(r.failure())
            failed = None  # a failing workload still ran: its comparison is printed, the status says it failed
            if command and not stopped_by and code not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
                failed = err.strip().splitlines()[-1] if err.strip() else f"exit status {code}"
            processes = None
            if workload:
                try:
                    processes = json.loads(out.strip().splitlines()[-1])["processes"]
                except (ValueError, IndexError, KeyError):
                    processes = None
            result = {
                "schema": 1,
                "duration_s": max(r.report["duration_s"] for r in runs),
                "workload": {"command": label, "processes": processes, "cpu_ns": cpu_ns, "truth": truth,
                             "rusage_cpu_ns": rusage_ns, "exit_code": code, "cgroup": cg.rel},
                "monitors": {r.name: summarize(r.report, cg, by) for r in runs},
            }
            result["model"] = runs[0].report["model"]
            if stopped_by:
                result["stopped_by"] = stopped_by
            if failed:
                result["workload"]["failed"] = failed
            return result
    except CgroupError as e:
        raise CompareError(f"{e} (compare puts the workload in a cgroup of its own to know its processes)") from None
    finally:
        for r in runs:
            if r.proc is not None and r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()


def render(result: dict) -> str:
    """The comparison as a table a person reads top to bottom."""
    w = result["workload"]
    mons = result["monitors"]
    names = ["ebpf", "traditional"]
    truth_cpu = w["cpu_ns"]

    def pct(a, b):
        return f"{100.0 * a / b:.1f}%" if b else "-"

    rows = [
        ("total CPU time (ms)", [f"{mons[n]['total_cpu_ns'] / 1e6:.1f}" for n in names]),
        ("total energy (J)", [f"{mons[n]['total_energy_j']:.3f}" for n in names]),
        ("processes seen", [str(mons[n]["processes_seen"]) for n in names]),
        ("samples / events", [str(mons[n]["samples_or_events"]) for n in names]),
        ("own CPU time (ms)", [f"{mons[n]['overhead_cpu_ns'] / 1e6:.1f}" for n in names]),
        ("in-kernel BPF time (ms)", [f"{mons['ebpf'].get('bpf_ns', 0) / 1e6:.1f}", "-"]),
        ("workload processes seen", [
            f"{mons[n]['workload_processes_seen']}" + (f" of {w['processes']}" if w["processes"] else "")
            for n in names]),
        ("workload CPU (ms)", [f"{mons[n]['workload_cpu_ns'] / 1e6:.1f}" for n in names]),
        (f"  vs truth ({w.get('truth', 'rusage')})", [pct(mons[n]["workload_cpu_ns"], truth_cpu) for n in names]),
        ("window (s)", [f"{mons[n]['duration_s']:.3f}" if "duration_s" in mons[n] else "-" for n in names]),
    ]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"ebpf-energy compare: {w['command']} over {result['duration_s']:.2f} s",
             f"truth: {truth_cpu / 1e6:.1f} ms of CPU in the workload's cgroup"
             + (f", {w['processes']} processes" if w["processes"] else "")
             + f" ({w.get('truth', 'rusage')})",
             "",
             f"{'':<{width}}{'eBPF':>14}{'/proc':>14}"]
    for label, vals in rows:
        lines.append(f"{label:<{width}}{vals[0]:>14}{vals[1]:>14}")
    by = next((k[:-1] for k in ("containers", "pods", "services") if k in mons["ebpf"]), None)
    if by:
        lines += ["", f"{'CPU (ms) by ' + by:<{width}}{'eBPF':>14}{'/proc':>14}"]
        for name, vals in _groups_side_by_side(mons, by, names):
            lines.append(f"{name[:width - 1]:<{width}}{vals[0]:>14}{vals[1]:>14}")
    lines += ["",
              "The monitors measure different windows (each from its own start to its stop, both around the",
              "workload): compare the workload rows; totals cover each monitor's whole window. \"processes seen\"",
              "counts every process a monitor reported CPU for (eBPF: any slice; /proc: any sample)."]
    return "\n".join(lines) + "\n"


def _groups_side_by_side(mons, by, names):
    """(name, [cpu ms per monitor]) for every group either monitor listed, the eBPF side's order."""
    from ebpf_energy.containers import LABELS

    def name(g):
        first = g[LABELS[by][0]]
        if by == "container" and g.get("container"):
            return f"{first} {g['container']}"
        return first or {"container": "(host)", "pod": "(not a pod)", "service": "(no unit)"}[by]

    table = {}
    for i, n in enumerate(names):
        for g in mons[n].get(by + "s", []):
            table.setdefault(name(g), ["-", "-"])[i] = f"{g['cpu_ns'] / 1e6:.1f}"
    return sorted(table.items(), key=lambda kv: kv[0] == "other")


CSV_COLUMNS = ["row", "window_s", "total_cpu_ns", "total_energy_j", "processes_seen", "samples_or_events",
               "overhead_cpu_ns", "bpf_ns", "workload_processes_seen", "workload_cpu_ns", "truth_cpu_ns",
               "truth", "workload", "model"]


def to_csv(result: dict) -> str:
    """The comparison as CSV: a row per monitor and one for the truth, each
    saying the model, so the file alone is the whole comparison."""
    import csv
    import io

    w = result["workload"]
    model = result.get("model", {}).get("name", "")
    out = io.StringIO()
    wr = csv.writer(out, lineterminator="\n")
    wr.writerow(CSV_COLUMNS)
    for name in ("ebpf", "traditional"):
        m = result["monitors"][name]
        wr.writerow([name, f"{m['duration_s']:.9f}", m["total_cpu_ns"], f"{m['total_energy_j']:.9f}",
                     m["processes_seen"], m["samples_or_events"], m["overhead_cpu_ns"], m.get("bpf_ns", ""),
                     m["workload_processes_seen"], m["workload_cpu_ns"], w["cpu_ns"], w.get("truth", ""),
                     w["command"], model])
    wr.writerow(["truth", "", "", "", "", "", "", "", w["processes"] if w["processes"] is not None else "",
                 w["cpu_ns"], w["cpu_ns"], w.get("truth", ""), w["command"], model])
    return out.getvalue()
