#!/usr/bin/env python3
"""`make bench`: run every benchmark of the project, one after the other.

Each benchmark is its own script (so it can be run alone) and prints its
figures as ratios against a baseline measured in the same run; this runner
only starts them in turn with this interpreter, passes their output through,
and ends with a one-line status per script. A script that is missing is
reported, not fatal; one that crashes makes the exit status non-zero.
Benchmarks run sequentially: on a 2-core machine, two at once would measure
each other.

Usage: python3 bench/run.py [NAME...]   (names without .py; default: all)
"""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# (script, extra arguments): the monitor's own first, then the other engineers'.
BENCHMARKS = [
    ("bpf_cost.py", []),
    ("wait_states_cost.py", []),
    ("monitor_overhead.py", []),
    ("monitor_scale.py", []),
    ("load_bench.py", []),
    ("ringbuf_drain.py", []),
    ("procfs_cost.py", []),
    ("run_startup.py", []),
    ("dashboard_cost.py", []),
]


def main(argv):
    wanted = set(argv)
    known = {name[:-3] for name, _ in BENCHMARKS}
    unknown = wanted - known
    if unknown:
        print(f"bench/run.py: unknown benchmark(s): {', '.join(sorted(unknown))} "
              f"(known: {', '.join(sorted(known))})", file=sys.stderr)
        return 2
    results = []
    for name, extra in BENCHMARKS:
        if wanted and name[:-3] not in wanted:
            continue
        path = os.path.join(HERE, name)
        print(f"\n=== {name} ===", flush=True)
        if not os.path.exists(path):
            print(f"(bench/{name} is not in this tree yet: skipped)")
            results.append((name, "missing", 0.0))
            continue
        t0 = time.monotonic()
        rc = subprocess.run([sys.executable, path, *extra], cwd=ROOT).returncode
        took = time.monotonic() - t0
        results.append((name, "ok" if rc == 0 else f"FAILED (exit {rc})", took))
    print("\n=== summary ===")
    for name, status, took in results:
        print(f"  {name:<22} {status}" + (f" in {took:.1f} s" if status != "missing" else ""))
    return 1 if any(s.startswith("FAILED") for _, s, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
