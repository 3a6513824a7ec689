#!/usr/bin/env python3
"""The monitor's own CPU use while the machine switches >= 20k times a second.

Runs ``ebpf-energy monitor -d 10 -i 1 --json`` as a child while
``perf bench sched pipe`` (or a Python pipe ping-pong) drives context
switches, and reports, as a share of one CPU:

* whole process: its ru_utime + ru_stime from ``wait4`` over its wall time,
  start-up included (imports, BPF load, attach, teardown);
* steady state: the growth of its threads' ``sum_exec_runtime``
  (``/proc/PID/task/*/schedstat``) between its first and last interval lines,
  i.e. what running the monitor costs once it is running. The target
  (<= 1% of one CPU) applies here; start-up is reported beside it.

The switch rate is measured from ``/proc/stat``'s ``ctxt`` over the same span.
Needs root. Usage: python3 bench/monitor_overhead.py [--duration 10] [--json]
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

from bpf_cost import switch_workload  # noqa: E402

TARGET_PCT = 1.0
MIN_SWITCHES = 20000


def ctxt():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("ctxt "):
                return int(line.split()[1])
    raise RuntimeError("/proc/stat has no ctxt line")


def tree_runtime_ns(pid):
    total = 0
    for p in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(p) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def measure(duration, interval):
    argv, what = switch_workload(10 ** 9)
    load = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # let the workload reach its rate
        c0, t0 = ctxt(), time.monotonic()
        mon = subprocess.Popen([sys.executable, "-m", "ebpf_energy", "monitor", "-d", str(duration),
                                "-i", str(interval), "--json"], cwd=os.path.join(HERE, ".."),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        marks = []  # (monotonic, its runtime, ctxt) at each JSON line
        lines = []
        for raw in mon.stdout:
            marks.append((time.monotonic(), tree_runtime_ns(mon.pid), ctxt()))
            lines.append(json.loads(raw))
        _, status, ru = os.wait4(mon.pid, 0)
        t1, c1 = time.monotonic(), ctxt()
        err = mon.stderr.read().decode(errors="replace")
        mon.stdout.close()
        mon.stderr.close()
        mon.returncode = os.waitstatus_to_exitcode(status)
    finally:
        load.kill()
        load.wait()
    if mon.returncode != 0 or not lines:
        raise SystemExit(f"monitor failed ({mon.returncode}): {err}")
    whole_cpu = ru.ru_utime + ru.ru_stime
    whole_wall = t1 - t0
    steady = [m for m, o in zip(marks, lines) if "interval" in o]
    (ta, ra, ca), (tb, rb, cb) = steady[0], steady[-1]
    summary = lines[-1]
    return {
        "bench": "monitor_overhead", "workload": what, "duration_s": duration, "interval_s": interval,
        "switches_per_s": (c1 - c0) / whole_wall,
        "steady_switches_per_s": (cb - ca) / (tb - ta),
        "whole_process": {"cpu_s": whole_cpu, "wall_s": whole_wall, "pct_of_one_cpu": 100 * whole_cpu / whole_wall},
        "steady": {"cpu_s": (rb - ra) / 1e9, "wall_s": tb - ta, "intervals": len(steady) - 1,
                   "pct_of_one_cpu": 100 * (rb - ra) / 1e9 / (tb - ta)},
        "self_reported_overhead_cpu_ns": summary.get("overhead_cpu_ns"),
        "summary_processes_seen": summary.get("processes_seen"),
        "summary_dropped": summary.get("dropped"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("monitor_overhead: needs root (the monitor loads BPF programs)")
    r = measure(args.duration, args.interval)
    r["target_pct"] = TARGET_PCT
    r["met"] = r["steady"]["pct_of_one_cpu"] <= TARGET_PCT and r["steady_switches_per_s"] >= MIN_SWITCHES
    if args.json:
        print(json.dumps(r, indent=2))
        return
    s, w = r["steady"], r["whole_process"]
    print(f"Monitor overhead (`ebpf-energy monitor -d {args.duration:g} -i {args.interval:g} --json` "
          f"under {r['workload']})")
    print(f"  context switches: {r['steady_switches_per_s']:.0f}/s while steady "
          f"({r['switches_per_s']:.0f}/s over the whole run; need >= {MIN_SWITCHES})")
    print(f"  steady state: {s['cpu_s'] * 1e3:.1f} ms CPU over {s['wall_s']:.2f} s = "
          f"{s['pct_of_one_cpu']:.3f}% of one CPU (target <= {TARGET_PCT}%: {'met' if r['met'] else 'MISSED'})")
    print(f"  whole process incl. start-up: {w['cpu_s'] * 1e3:.1f} ms CPU over {w['wall_s']:.2f} s = "
          f"{w['pct_of_one_cpu']:.2f}% of one CPU")
    print(f"  processes in the summary: {r['summary_processes_seen']}, dropped {r['summary_dropped']}")


if __name__ == "__main__":
    main()
