"""Built-in workloads for ``compare`` (and the benchmarks): no extra packages needed.

``short-lived`` is what polling monitors miss (processes of a few ms),
``cpu`` is what they measure well (long busy processes), ``mixed`` is both.
Run as ``python -m ebpf_energy.workloads NAME SECONDS``; on exit it prints
``{"processes": N}``, the number of processes it made (itself included),
so the comparison knows the truth without trusting either monitor.
"""

import json
import os
import resource
import sys
import time

from ebpf_energy.children import die_with_parent

NAMES = ("short-lived", "cpu", "mixed")


def spin(seconds: float):
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1
    return x


def _child(fn):
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            # dies with the workload (which dies with compare): nothing burns on after a SIGKILL
            die_with_parent(parent)
            fn()
        finally:
            os._exit(0)
    return pid


def short_lived(seconds: float, life_s: float = 0.003, parallel: int = 1) -> int:
    """Processes living ``life_s`` each, one after another, for ``seconds``."""
    made = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pids = [_child(lambda: spin(life_s)) for _ in range(parallel)]
        for pid in pids:
            os.waitpid(pid, 0)
        made += len(pids)
    return made


def cpu(seconds: float, workers: int = 0) -> int:
    """``workers`` (default: one per CPU) processes spinning for ``seconds``."""
    workers = workers or os.cpu_count() or 1
    pids = [_child(lambda: spin(seconds)) for _ in range(workers)]
    for pid in pids:
        os.waitpid(pid, 0)
    return workers


def mixed(seconds: float) -> int:
    """One long spinner beside a stream of short-lived processes."""
    long_pid = _child(lambda: spin(seconds))
    made = short_lived(seconds, life_s=0.003)
    os.waitpid(long_pid, 0)
    return made + 1


def run(name: str, seconds: float) -> int:
    if name == "short-lived":
        n = short_lived(seconds)
    elif name == "cpu":
        n = cpu(seconds)
    elif name == "mixed":
        n = mixed(seconds)
    else:
        raise ValueError(f"unknown workload {name!r} (known: {', '.join(NAMES)})")
    return n + 1  # this process too


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in NAMES:
        sys.stderr.write(f"usage: python -m ebpf_energy.workloads {{{','.join(NAMES)}}} SECONDS\n")
        return 2
    n = run(argv[0], float(argv[1]))
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys.stdout.write(json.dumps({"processes": n, "self_cpu_ns": int((me.ru_utime + me.ru_stime) * 1e9),
                                 "children_cpu_ns": int((kids.ru_utime + kids.ru_stime) * 1e9)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
