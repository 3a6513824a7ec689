#!/usr/bin/env python3
"""BPF cost per sched_switch: the monitor against an empty and a seed-style program.

All three are loaded through our own loader and attached at once, so they see
the same switches of the same workload: ``bench/build/empty_tp_btf.bpf.o``
(the floor: an empty ``tp_btf/sched_switch`` program),
``bench/build/seed_switch.bpf.o`` (the seed's shape: ``tp/`` program, per-CPU
hashes keyed by pid, a ring-buffer event per switch) and the monitor's
``on_switch`` loaded by ``EbpfSampler``. Run-time statistics are switched on
through a ``BPF_ENABLE_STATS`` fd (the kernel switches them off again when it
closes, so the sysctl is never left changed); ``run_time_ns / run_cnt`` is
taken from ``BPF_OBJ_GET_INFO_BY_FD`` before and after the workload
(``perf bench sched pipe``, or a Python pipe ping-pong when perf is missing).

Targets (issue 4): monitor <= 3x empty, monitor <= 0.5x seed-style.
Needs root. Usage: python3 bench/bpf_cost.py [--loops 200000] [--rounds 3] [--json]
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
from ebpf_energy.monitor import EbpfSampler  # noqa: E402

BUILD = os.path.join(HERE, "build")
TARGET_VS_EMPTY = 3.0
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


def one_round(loops):
    argv, what = switch_workload(loops)
    stats_fd = syscall.enable_stats()
    empty = seed = None
    sampler = EbpfSampler()
    try:
        empty = open_baseline("empty_tp_btf")
        seed = open_baseline("seed_switch")
        sampler.start()
        fds = {"empty": empty.programs["empty_switch"].fd, "seed": seed.programs["seed_switch"].fd,
               "monitor": sampler.obj.programs["on_switch"].fd}
        before = {k: prog_stats(fd) for k, fd in fds.items()}
        t0 = time.monotonic()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - t0
        after = {k: prog_stats(fd) for k, fd in fds.items()}
        sampler.read()  # the monitor must still read fine under this load
    finally:
        sampler.stop()
        for o in (seed, empty):
            if o is not None:
                o.close()
        os.close(stats_fd)
    out = {"workload": what, "loops": loops, "wall_s": wall}
    for k in fds:
        cnt = after[k][0] - before[k][0]
        ns = after[k][1] - before[k][1]
        out[k] = {"run_cnt": cnt, "run_time_ns": ns, "ns_per_run": ns / cnt if cnt else float("nan")}
    out["monitor_vs_empty"] = out["monitor"]["ns_per_run"] / out["empty"]["ns_per_run"]
    out["monitor_vs_seed"] = out["monitor"]["ns_per_run"] / out["seed"]["ns_per_run"]
    out["seed_vs_empty"] = out["seed"]["ns_per_run"] / out["empty"]["ns_per_run"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loops", type=int, default=200000, help="pipe round trips per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bpf_cost: needs root (bpf() and BPF_ENABLE_STATS)")
    rounds = [one_round(args.loops) for _ in range(args.rounds)]
    med = {k: statistics.median(r[k] for r in rounds)
           for k in ("monitor_vs_empty", "monitor_vs_seed", "seed_vs_empty")}
    ns = {k: statistics.median(r[k]["ns_per_run"] for r in rounds) for k in ("empty", "seed", "monitor")}
    summary = {"bench": "bpf_cost", "rounds": rounds, "median_ns_per_run": ns, "median": med,
               "targets": {"monitor_vs_empty": TARGET_VS_EMPTY, "monitor_vs_seed": TARGET_VS_SEED},
               "met": {"monitor_vs_empty": med["monitor_vs_empty"] <= TARGET_VS_EMPTY,
                       "monitor_vs_seed": med["monitor_vs_seed"] <= TARGET_VS_SEED}}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"BPF cost per sched_switch ({rounds[0]['workload']}, {args.loops} round trips, "
          f"{args.rounds} rounds; run_time_ns/run_cnt with bpf_stats on)")
    for i, r in enumerate(rounds, 1):
        print(f"  round {i}: empty {r['empty']['ns_per_run']:.1f} ns ({r['empty']['run_cnt']} runs)  "
              f"seed {r['seed']['ns_per_run']:.1f} ns  monitor {r['monitor']['ns_per_run']:.1f} ns  "
              f"-> monitor/empty {r['monitor_vs_empty']:.2f}x  monitor/seed {r['monitor_vs_seed']:.2f}x")
    for k, target in (("monitor_vs_empty", TARGET_VS_EMPTY), ("monitor_vs_seed", TARGET_VS_SEED)):
        print(f"  median {k.replace('_vs_', '/')}: {med[k]:.2f}x (target <= {target}x: "
              f"{'met' if med[k] <= target else 'MISSED'})")
    print(f"  median seed/empty: {med['seed_vs_empty']:.2f}x (the seed's own cost, for reference)")


if __name__ == "__main__":
    main()
