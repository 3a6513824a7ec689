#!/usr/bin/env python3
"""What the dashboard costs over the exporter alone, with 1,000 live processes.

A helper forks 1,000 processes that each wake once a second (staggered over
the second), so every refresh window holds all of them: the worst case for
grouping, ranking and the frames. Then, in turns (exporter, dashboard,
exporter, dashboard, ...), runs ``ebpf-energy exporter`` and ``ebpf-energy
dashboard`` with the same ``--interval 1 --top 10 -p 10``, the dashboard with
one page connected (a reader of ``/events`` in this process, so every frame
is encoded and sent), and measures each one's steady-state CPU: the growth
of its threads' ``sum_exec_runtime`` (``/proc/PID/task/*/schedstat``) over
``--seconds`` after a warm-up. The figure is the dashboard's share of one
CPU minus the exporter's, the median over the rounds (turns alternate so a
drift in the machine's load hits both). Target: <= 2% of a CPU.

Needs root. Usage: python3 bench/dashboard_cost.py [--processes 1000] [--seconds 20] [--rounds 3] [--json]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from monitor_overhead import tree_runtime_ns  # noqa: E402

TARGET_SHARE = 0.02
ARGS = ["--listen", "127.0.0.1:0", "--interval", "1", "--top", "10", "-p", "10", "--max-tasks", "65536"]

# argv[1] processes (forked: they share the interpreter's pages) that sleep 1 s
# in a loop, staggered over the second; "ready" once all exist; when stdin
# closes they are killed and reaped.
SLEEPERS = r"""
import os, signal, sys, time
n = int(sys.argv[1])
kids = []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        time.sleep(i / n)
        while True:
            time.sleep(1.0)
    kids.append(pid)
print("ready", flush=True)
sys.stdin.read()
for pid in kids:
    os.kill(pid, signal.SIGKILL)
for pid in kids:
    os.waitpid(pid, 0)
"""


class Server:
    def __init__(self, command):
        self.proc = subprocess.Popen([sys.executable, "-m", "ebpf_energy", command, *ARGS], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        m = re.search(r"serving (http://[^/\s]+)", line)
        if not m:
            self.proc.kill()
            raise SystemExit(f"dashboard_cost: {command} did not start: {line}{self.proc.stderr.read()}")
        self.base = m.group(1)
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # drain warnings

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def read_events(base, stop, frames):
    """A page: read /events until ``stop``, counting frames."""
    with urllib.request.urlopen(base + "/events", timeout=30) as r:
        while not stop.is_set():
            chunk = r.read1(1 << 16)
            if not chunk:
                return
            frames[0] += chunk.count(b"\nevent: frame\n")


def measure(command, seconds, warmup):
    s = Server(command)
    stop, frames, reader = threading.Event(), [0], None
    try:
        if command == "dashboard":
            reader = threading.Thread(target=read_events, args=(s.base, stop, frames), daemon=True)
            reader.start()
        time.sleep(warmup)
        c0, t0 = tree_runtime_ns(s.proc.pid), time.monotonic()
        f0 = frames[0]
        time.sleep(seconds)
        c1, t1 = tree_runtime_ns(s.proc.pid), time.monotonic()
        return (c1 - c0) / ((t1 - t0) * 1e9), frames[0] - f0
    finally:
        stop.set()
        s.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("dashboard_cost: needs root (bpf())")
    helper = subprocess.Popen([sys.executable, "-c", SLEEPERS, str(args.processes)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    rounds = []
    try:
        assert helper.stdout.readline().strip() == "ready"
        for _ in range(args.rounds):
            ex, _ = measure("exporter", args.seconds, args.warmup)
            dash, nframes = measure("dashboard", args.seconds, args.warmup)
            rounds.append({"exporter_share": ex, "dashboard_share": dash, "extra_share": dash - ex,
                           "frames_sent": nframes})
    finally:
        helper.stdin.close()
        helper.wait()
    extra = statistics.median(r["extra_share"] for r in rounds)
    out = {"bench": "dashboard_cost", "processes": args.processes, "seconds": args.seconds, "rounds": rounds,
           "extra_share_median": extra, "target_share": TARGET_SHARE, "met": extra <= TARGET_SHARE}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"dashboard vs exporter alone, --interval 1, {args.processes} live processes waking every second, "
          f"one page connected ({args.rounds} rounds of {args.seconds:g} s each)")
    for i, r in enumerate(rounds, 1):
        print(f"  round {i}: exporter {r['exporter_share'] * 100:.2f}% of a CPU, dashboard "
              f"{r['dashboard_share'] * 100:.2f}% ({r['frames_sent']} frames sent): "
              f"+{r['extra_share'] * 100:.2f}%")
    print(f"  the dashboard adds {extra * 100:.2f}% of a CPU (median; target <= {TARGET_SHARE * 100:.0f}%: "
          f"{'met' if extra <= TARGET_SHARE else 'MISSED'})")


if __name__ == "__main__":
    main()
