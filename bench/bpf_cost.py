#!/usr/bin/env python3
"""BPF cost per sched_switch: the monitor against an empty and a seed-style program.

Each program is measured *alone* at the hook: the company of another
program at the same tracepoint warms the caches for it and flatters both
figures, so one round attaches one program, runs the workload, detaches it,
then the next; the order alternates round by round (empty, monitor, seed;
then seed, monitor, empty). The three: ``bench/build/empty_tp_btf.bpf.o``
(the floor: an empty ``tp_btf/sched_switch`` program),
``bench/build/seed_switch.bpf.o`` (the seed's shape: ``tp/`` program,
per-CPU hashes keyed by pid, a ring-buffer event per switch) and the
monitor's ``on_switch`` loaded by ``EbpfSampler``. Run-time statistics are
switched on through a ``BPF_ENABLE_STATS`` fd (the kernel switches them off
again when it closes); ``run_time_ns / run_cnt`` is taken from
``BPF_OBJ_GET_INFO_BY_FD`` before and after the workload (``perf bench sched
pipe``, or a Python pipe ping-pong when perf is missing). Ratios are of
medians over the rounds of one run; the spread (min-max) is printed.

Targets: monitor <= 2.5x empty (exact-accounting issue), <= 0.5x seed-style.
Needs root. Usage: python3 bench/bpf_cost.py [--loops 200000] [--rounds 4] [--json]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from ebpf_energy.loader import syscall  # noqa: E402
from ebpf_energy.loader.object import BpfObject  # noqa: E402
from ebpf_energy.loader.stats import run_time_stats  # noqa: E402
from ebpf_energy.monitor import EbpfSampler  # noqa: E402

BUILD = os.path.join(HERE, "build")
TARGET_VS_EMPTY = 2.5
TARGET_VS_SEED = 0.5

# A pipe ping-pong between two processes: every round trip is two switches
# on an otherwise idle pair of CPUs, like `perf bench sched pipe`.
PINGPONG = r"""
import os, sys
n = int(sys.argv[1])
a_r, a_w = os.pipe(); b_r, b_w = os.pipe()
pid = os.fork()
if pid == 0:
    for _ in range(n):
        os.read(a_r, 1); os.write(b_w, b"x")
    os._exit(0)
for _ in range(n):
    os.write(a_w, b"x"); os.read(b_r, 1)
os.waitpid(pid, 0)
"""


def switch_workload(loops):
    """argv of a workload doing ``loops`` pipe round trips (perf if installed)."""
    perf = shutil.which("perf")
    if perf and subprocess.run([perf, "bench", "sched", "pipe", "-l", "10"], capture_output=True).returncode == 0:
        return [perf, "bench", "sched", "pipe", "-l", str(loops)], "perf bench sched pipe"
    return [sys.executable, "-c", PINGPONG, str(loops)], "python pipe ping-pong (perf missing)"


def prog_stats(fd):
    info = syscall.obj_get_info(fd, "prog")
    return info["run_cnt"], info["run_time_ns"]


def open_baseline(name):
    path = os.path.join(BUILD, f"{name}.bpf.o")
    if not os.path.exists(path):
        raise SystemExit(f"{path} is missing: run `make bench-objects` first")
    obj = BpfObject.open(path)
    try:
        obj.load()
        obj.attach()
    except BaseException:
        obj.close()
        raise
    return obj


def measure_alone(kind, argv):
    """ns per run of one program attached alone at sched_switch over one workload run."""
    sampler = obj = None
    try:
        if kind == "monitor":
            sampler = EbpfSampler()
            sampler.start()
            fd = sampler.obj.programs["on_switch"].fd
        else:
            obj = open_baseline({"empty": "empty_tp_btf", "seed": "seed_switch"}[kind])
            fd = obj.programs[{"empty": "empty_switch", "seed": "seed_switch"}[kind]].fd
        cnt0, ns0 = prog_stats(fd)
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        cnt1, ns1 = prog_stats(fd)
        if sampler is not None:
            sampler.read()  # the monitor must still read fine under this load
    finally:
        if sampler is not None:
            sampler.stop()
        if obj is not None:
            obj.close()
    cnt, ns = cnt1 - cnt0, ns1 - ns0
    return {"run_cnt": cnt, "run_time_ns": ns, "ns_per_run": ns / cnt if cnt else float("nan")}


def one_round(loops, reverse=False):
    argv, what = switch_workload(loops)
    order = ["empty", "monitor", "seed"]
    if reverse:
        order.reverse()
    with run_time_stats():
        out = {"workload": what, "loops": loops, "order": order}
        for kind in order:
            out[kind] = measure_alone(kind, argv)
    out["monitor_vs_empty"] = out["monitor"]["ns_per_run"] / out["empty"]["ns_per_run"]
    out["monitor_vs_seed"] = out["monitor"]["ns_per_run"] / out["seed"]["ns_per_run"]
    out["seed_vs_empty"] = out["seed"]["ns_per_run"] / out["empty"]["ns_per_run"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loops", type=int, default=200000, help="pipe round trips per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bpf_cost: needs root (bpf() and BPF_ENABLE_STATS)")
    rounds = [one_round(args.loops, reverse=bool(i % 2)) for i in range(args.rounds)]
    med = {k: statistics.median(r[k] for r in rounds)
           for k in ("monitor_vs_empty", "monitor_vs_seed", "seed_vs_empty")}
    ns = {k: statistics.median(r[k]["ns_per_run"] for r in rounds) for k in ("empty", "seed", "monitor")}
    spread = {k: (min(r[k] for r in rounds), max(r[k] for r in rounds))
              for k in ("monitor_vs_empty", "monitor_vs_seed", "seed_vs_empty")}
    summary = {"bench": "bpf_cost", "rounds": rounds, "median_ns_per_run": ns, "median": med, "spread": spread,
               "targets": {"monitor_vs_empty": TARGET_VS_EMPTY, "monitor_vs_seed": TARGET_VS_SEED},
               "met": {"monitor_vs_empty": med["monitor_vs_empty"] <= TARGET_VS_EMPTY,
                       "monitor_vs_seed": med["monitor_vs_seed"] <= TARGET_VS_SEED}}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"BPF cost per sched_switch ({rounds[0]['workload']}, {args.loops} round trips, "
          f"{args.rounds} rounds, each program alone at the hook; run_time_ns/run_cnt with bpf_stats on)")
    for i, r in enumerate(rounds, 1):
        print(f"  round {i} ({', '.join(r['order'])}, each alone): empty {r['empty']['ns_per_run']:.1f} ns ({r['empty']['run_cnt']} runs)  "
              f"seed {r['seed']['ns_per_run']:.1f} ns  monitor {r['monitor']['ns_per_run']:.1f} ns  "
              f"-> monitor/empty {r['monitor_vs_empty']:.2f}x  monitor/seed {r['monitor_vs_seed']:.2f}x")
    for k, target in (("monitor_vs_empty", TARGET_VS_EMPTY), ("monitor_vs_seed", TARGET_VS_SEED)):
        print(f"  median {k.replace('_vs_', '/')}: {med[k]:.2f}x (spread {spread[k][0]:.2f}-{spread[k][1]:.2f}x; "
              f"target <= {target}x: {'met' if med[k] <= target else 'MISSED'})")
    print(f"  median seed/empty: {med['seed_vs_empty']:.2f}x (the seed's own cost, for reference)")


if __name__ == "__main__":
    main()
