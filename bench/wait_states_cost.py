#!/usr/bin/env python3
"""What `monitor --classify` adds in the kernel: the wait-state program's cost
per sched_switch, per sched_wakeup and per sched_wakeup_new.

Each round measures, alone at the hook, the empty ``tp_btf/sched_switch``
program (the floor) and then the wait-state object (bpf/wait_states.bpf.c:
its three programs at once), over the same workload: pipe round trips (a
switch and a wakeup each way) and N forks of ``true`` (a wakeup_new each).
run_time_ns / run_cnt per program from BPF_OBJ_GET_INFO_BY_FD with bpf_stats
on; ratios are of medians over the rounds of one run. The energy monitor's
own program is measured by bench/bpf_cost.py; --classify adds this on top.

Needs root. Usage: python3 bench/wait_states_cost.py [--loops 100000] [--forks 300] [--rounds 3] [--json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from bpf_cost import open_baseline, prog_stats, switch_workload  # noqa: E402
from ebpf_energy.loader import syscall  # noqa: E402
from ebpf_energy.wait_states import WaitStateSampler  # noqa: E402

FORKS = "import subprocess, sys\nfor _ in range(int(sys.argv[1])): subprocess.run(['true'])\n"
PROGRAMS = ("on_switch", "on_wakeup", "on_wakeup_new")


def run_workload(argv, forks):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-c", FORKS, str(forks)], check=True)


def measure(fds, argv, forks):
    before = {n: prog_stats(fd) for n, fd in fds.items()}
    run_workload(argv, forks)
    out = {}
    for n, fd in fds.items():
        cnt, ns = (a - b for a, b in zip(prog_stats(fd), before[n]))
        out[n] = {"run_cnt": cnt, "run_time_ns": ns, "ns_per_run": ns / cnt if cnt else float("nan")}
    return out


def one_round(loops, forks):
    argv, what = switch_workload(loops)
    stats_fd = syscall.enable_stats()
    try:
        empty = open_baseline("empty_tp_btf")
        try:
            floor = measure({"empty": empty.programs["empty_switch"].fd}, argv, forks)["empty"]
        finally:
            empty.close()
        ws = WaitStateSampler()
        ws.start()
        try:
            got = measure({n: ws.obj.programs[n].fd for n in PROGRAMS}, argv, forks)
            ws.read()  # and it reads fine after that load
        finally:
            ws.stop()
    finally:
        os.close(stats_fd)
    return {"workload": what, "empty": floor, **got,
            "switch_vs_empty": got["on_switch"]["ns_per_run"] / floor["ns_per_run"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loops", type=int, default=100000, help="pipe round trips per round")
    ap.add_argument("--forks", type=int, default=300, help="processes started per round (wakeup_new)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("wait_states_cost: needs root (bpf() and BPF_ENABLE_STATS)")
    rounds = [one_round(a.loops, a.forks) for _ in range(a.rounds)]
    med = {k: statistics.median(r[k]["ns_per_run"] for r in rounds) for k in ("empty",) + PROGRAMS}
    ratio = statistics.median(r["switch_vs_empty"] for r in rounds)
    summary = {"bench": "wait_states_cost", "rounds": rounds, "median_ns_per_run": med,
               "median_switch_vs_empty": ratio}
    if a.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"wait-state program (monitor --classify), {rounds[0]['workload']} x {a.loops} + {a.forks} forks, "
          f"{a.rounds} rounds; run_time_ns/run_cnt with bpf_stats on")
    for i, r in enumerate(rounds, 1):
        print(f"  round {i}: empty switch {r['empty']['ns_per_run']:.1f} ns; per switch "
              f"{r['on_switch']['ns_per_run']:.1f} ns ({r['on_switch']['run_cnt']} runs), per wakeup "
              f"{r['on_wakeup']['ns_per_run']:.1f} ns ({r['on_wakeup']['run_cnt']}), per wakeup_new "
              f"{r['on_wakeup_new']['ns_per_run']:.1f} ns ({r['on_wakeup_new']['run_cnt']})")
    print(f"  median per switch {med['on_switch']:.1f} ns ({ratio:.2f}x the empty program's {med['empty']:.1f} ns), "
          f"per wakeup {med['on_wakeup']:.1f} ns, per wakeup_new {med['on_wakeup_new']:.1f} ns "
          "(opt-in: on top of the monitor's own program)")


if __name__ == "__main__":
    main()
