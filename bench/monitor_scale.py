#!/usr/bin/env python3
"""The monitor's user-space cost per read against the number of live tasks.

A helper process holds N threads, each waking once a second (so every task
entry changes between two reads, the worst case for the reader); the
sampler (reaper included) reads once a second, as ``monitor -i 1`` does.
The figure is the CPU time of this process over the reads (its own
rusage: the reads, the reaper, nothing else runs here), per read and per
1,000 live tasks, for several N in one run. Live tasks are every task
entry a read finds (the helper's N threads plus whatever else runs on the
machine: on a shared host that can be thousands), so the figure is per
task actually read; the marginal cost of the helper's threads (against
the smallest N of the run) is printed too.

Targets (exact-accounting issue): <= 2 ms per 1,000 live tasks per read, and
<= 1% of a CPU at 10,000 live tasks with one read a second.
Needs root. Usage: python3 bench/monitor_scale.py [--tasks 1000,4000,10000] [--reads 8] [--json]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from ebpf_energy.monitor import EbpfSampler  # noqa: E402

TARGET_MS_PER_1000 = 2.0
TARGET_CPU_SHARE_10K = 0.01

# argv[1] threads that sleep 1 s in a loop (staggered over the second);
# prints "ready" once all exist; ends when stdin closes.
SLEEPERS = r"""
import os, sys, threading, time
n = int(sys.argv[1])
threading.stack_size(64 * 1024)
def body(i):
    time.sleep(i / n)
    while True:
        time.sleep(1.0)
for i in range(n):
    threading.Thread(target=body, args=(i,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


def own_cpu_ns():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return int((r.ru_utime + r.ru_stime) * 1e9)


def one(n, reads, max_tasks):
    helper = subprocess.Popen([sys.executable, "-c", SLEEPERS, str(n)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert helper.stdout.readline().strip() == "ready"
        s = EbpfSampler(max_tasks=max_tasks)
        s.start()
        try:
            time.sleep(1.5)  # every thread has woken at least once: its entry exists
            s.read()
            c0, t0 = own_cpu_ns(), time.monotonic()
            live = 0
            for _ in range(reads):
                time.sleep(1.0)
                w = s.read()
                live += s.live_tasks
            c1, t1 = own_cpu_ns(), time.monotonic()
        finally:
            s.stop()
        drops = w.drops["tasks"]
    finally:
        helper.stdin.close()
        helper.wait()
    per_read_ms = (c1 - c0) / reads / 1e6
    live = live / reads
    return {"tasks": n, "live_tasks": live, "reads": reads, "cpu_ms_per_read": per_read_ms,
            "ms_per_1000_tasks": per_read_ms / (live / 1000), "cpu_share": (c1 - c0) / ((t1 - t0) * 1e9),
            "drops": drops}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="1000,4000,10000")
    ap.add_argument("--reads", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("monitor_scale: needs root (bpf())")
    sizes = [int(x) for x in args.tasks.split(",")]
    rows = [one(n, args.reads, max(16384, 2 * n)) for n in sizes]
    for r in rows[1:]:  # what the helper's threads add, against the smallest run
        r["marginal_ms_per_1000"] = ((r["cpu_ms_per_read"] - rows[0]["cpu_ms_per_read"])
                                     / ((r["live_tasks"] - rows[0]["live_tasks"]) / 1000))
    big = [r for r in rows if r["tasks"] >= 10000]
    out = {"bench": "monitor_scale", "rows": rows,
           "targets": {"ms_per_1000_tasks": TARGET_MS_PER_1000, "cpu_share_at_10000": TARGET_CPU_SHARE_10K}}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"monitor user-space cost per read, one read a second, every task waking once a second "
          f"({args.reads} reads each)")
    for r in rows:
        print(f"  {r['tasks']:6d} threads ({r['live_tasks']:.0f} live tasks read): {r['cpu_ms_per_read']:7.2f} ms per read"
              f" = {r['ms_per_1000_tasks']:.2f} ms per 1,000 tasks"
              + (f" (marginal {r['marginal_ms_per_1000']:.2f})" if "marginal_ms_per_1000" in r else "")
              + f", {r['cpu_share'] * 100:.2f}% of a CPU"
              f" (target <= {TARGET_MS_PER_1000} ms: {'met' if r['ms_per_1000_tasks'] <= TARGET_MS_PER_1000 else 'MISSED'})"
              + (f"; drops {r['drops']}" if r["drops"] else ""))
    for r in big:
        print(f"  at {r['tasks']} tasks: {r['cpu_share'] * 100:.2f}% of a CPU (target <= "
              f"{TARGET_CPU_SHARE_10K * 100:.0f}%: {'met' if r['cpu_share'] <= TARGET_CPU_SHARE_10K else 'MISSED'})")


if __name__ == "__main__":
    main()
