#!/usr/bin/env python3
"""What ``ebpf-energy run -- true`` costs over a bare ``true``: wall time and peak RSS.

Target (README "What it costs and how exact it is"): <= 0.3 s over the bare command and
<= 40 MB peak RSS. Runs are interleaved (bare, measured, bare, ...) so drift
on a shared 2-CPU machine hits both sides alike; medians are reported. Peak
RSS is ``ru_maxrss`` of the child from ``wait4`` (the child and everything it
waited for), which is what ``getrusage(RUSAGE_CHILDREN)`` reports for one child.

When a target is missed, ``--profile`` (on by default then) says where the
time goes: the phases of one in-process run (imports, model choice, cgroup,
sampler start, the command, the read, the teardown), the heaviest imports
from ``python -X importtime``, and the top of a cProfile of ``run_command``.

    python3 bench/run_startup.py [--runs 15] [--json] [--profile|--no-profile] [-- extra run options]
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_OVERHEAD_S = 0.3
TARGET_RSS_MB = 40.0


def timed(argv, env):
    """Wall seconds, peak RSS (MB) and CPU seconds of one child, from fork to wait4."""
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, env, file_actions=[
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} exited {code}")
    return wall, ru.ru_maxrss / 1024.0, ru.ru_utime + ru.ru_stime


def importtime(argv, env, top=12):
    """The heaviest top-level imports (cumulative microseconds) of one run."""
    r = subprocess.run([argv[0], "-X", "importtime"] + argv[1:], capture_output=True, text=True, env=env)
    rows = []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        head, cum_us, name = line.split("|", 2)
        self_us = head.split(":", 1)[1]
        rows.append((int(cum_us), int(self_us), len(name) - len(name.lstrip()), name.strip()))
    base = min((r[2] for r in rows), default=0)  # indentation of a top-level import
    rows = [(c, s, (ind - base) // 2, n) for c, s, ind, n in rows]
    total = sum(c for c, _, d, _ in rows if d == 0)
    heavy = sorted((r for r in rows if r[2] <= 1), reverse=True)[:top]
    return total / 1e6, [{"module": n, "depth": d, "cumulative_ms": c / 1e3, "self_ms": s / 1e3}
                         for c, s, d, n in heavy]


def phases(extra):
    """One in-process run, split into its phases (seconds). Imports are timed
    here as this interpreter pays them (a fresh process pays the same)."""
    out = {}
    t = time.perf_counter()
    sys.path.insert(0, ROOT)
    import click  # noqa: F401  the CLI's own dependency

    from ebpf_energy.commands import run as _run_cmd  # noqa: F401
    from ebpf_energy.measurement import _Tree
    out["import cli + run command"] = time.perf_counter() - t
    t = time.perf_counter()
    from ebpf_energy.monitor import EbpfSampler  # noqa: F401  (pulls the loader: pyelftools, cffi)
    out["import monitor + loader"] = time.perf_counter() - t
    t = time.perf_counter()
    from ebpf_energy.commands._options import model_from_options
    from ebpf_energy.commands.run import run as run_command_click
    ctx = run_command_click.make_context("run", list(extra) + ["--", "true"])
    model, meter = model_from_options(warn=lambda m: None, **{k: v for k, v in ctx.params.items()
                                                              if k in ("power", "profile", "no_profile",
                                                                       "powercap_root", "meter", "idle_share")})
    out["choose model"] = time.perf_counter() - t
    t = time.perf_counter()
    tree = _Tree(model, meter)
    out["make cgroup + sampler objects"] = time.perf_counter() - t
    t = time.perf_counter()
    tree.__enter__()
    out["cgroup mkdir + sampler start (open, load, attach)"] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        p = subprocess.Popen(["true"], preexec_fn=tree.cgroup.join)
        p.wait()
        out["the command itself (spawn in cgroup, wait)"] = time.perf_counter() - t
        t = time.perf_counter()
        tree.finish()
        out["read the window + model"] = time.perf_counter() - t
    finally:
        t = time.perf_counter()
        tree.close()
        out["teardown (detach, close, rmdir)"] = time.perf_counter() - t
        if meter is not None:
            meter.close()
    return out


def cprofile_run_command(top=15):
    sys.path.insert(0, ROOT)
    from ebpf_energy.measurement import run_command
    from ebpf_energy.model.fixed import FixedWattsModel
    from ebpf_energy.monitor import EbpfSampler  # noqa: F401  imports outside the profile

    run_command(["true"], model=FixedWattsModel(15.0), forward_signals=False)  # warm caches
    prof = cProfile.Profile()
    prof.enable()
    run_command(["true"], model=FixedWattsModel(15.0), forward_signals=False)
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(top)
    return s.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", dest="profile", action="store_true", default=None,
                    help="always profile (default: only when a target is missed)")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("extra", nargs="*", help="options passed to `run` (after --), e.g. -p 15")
    args = ap.parse_args()

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    bare = ["true"]
    measured = [sys.executable, "-m", "ebpf_energy", "run", *args.extra, "--", "true"]
    timed(measured, env)  # warm the page cache and __pycache__
    bare_w, run_w, run_rss, run_cpu = [], [], [], []
    for _ in range(args.runs):
        bare_w.append(timed(bare, env)[0])
        w, rss, cpu = timed(measured, env)
        run_w.append(w)
        run_rss.append(rss)
        run_cpu.append(cpu)
    result = {
        "runs": args.runs,
        "command": measured[1:],
        "bare_true_median_s": statistics.median(bare_w),
        "run_true_median_s": statistics.median(run_w),
        "run_true_min_s": min(run_w),
        # CPU of the whole `run` process: what the wall time would be on an idle machine, roughly
        "run_true_cpu_median_s": statistics.median(run_cpu),
        "loadavg_1min": os.getloadavg()[0],
        "peak_rss_mb": max(run_rss),
        "median_rss_mb": statistics.median(run_rss),
    }
    result["overhead_s"] = result["run_true_median_s"] - result["bare_true_median_s"]
    result["overhead_ratio_to_target"] = result["overhead_s"] / TARGET_OVERHEAD_S
    result["rss_ratio_to_target"] = result["peak_rss_mb"] / TARGET_RSS_MB
    result["meets_targets"] = result["overhead_ratio_to_target"] <= 1 and result["rss_ratio_to_target"] <= 1
    profile = args.profile if args.profile is not None else not result["meets_targets"]
    if profile:
        total, heavy = importtime(measured, env)
        result["profile"] = {"phases_s": phases(args.extra), "imports_total_s": total, "heaviest_imports": heavy,
                             "python_bare_start_s": statistics.median(
                                 timed([sys.executable, "-c", "pass"], env)[0] for _ in range(5))}
        cprof = cprofile_run_command()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"ebpf-energy run -- true vs bare true, {args.runs} interleaved runs (medians)")
    print(f"  bare true            {result['bare_true_median_s'] * 1e3:8.1f} ms")
    print(f"  run -- true          {result['run_true_median_s'] * 1e3:8.1f} ms   (min {result['run_true_min_s'] * 1e3:.1f})")
    print(f"  its CPU time         {result['run_true_cpu_median_s'] * 1e3:8.1f} ms   "
          f"(load average {result['loadavg_1min']:.1f} on {os.cpu_count()} CPUs: wall time waits for others' work)")
    print(f"  overhead             {result['overhead_s']:8.3f} s    = {result['overhead_ratio_to_target']:.2f}x "
          f"the {TARGET_OVERHEAD_S} s target")
    print(f"  peak RSS             {result['peak_rss_mb']:8.1f} MB   = {result['rss_ratio_to_target']:.2f}x "
          f"the {TARGET_RSS_MB:g} MB target")
    print(f"  targets met: {'yes' if result['meets_targets'] else 'NO'}")
    if profile:
        p = result["profile"]
        print(f"\nwhere the time goes (one in-process run; a bare `python -c pass` starts in "
              f"{p['python_bare_start_s'] * 1e3:.1f} ms):")
        for name, s in p["phases_s"].items():
            print(f"  {s * 1e3:8.1f} ms  {name}")
        print(f"\nimports of one `run -- true` process: {p['imports_total_s'] * 1e3:.1f} ms in all; heaviest:")
        for row in p["heaviest_imports"]:
            print(f"  {row['cumulative_ms']:8.1f} ms  {'  ' * row['depth']}{row['module']}")
        print("\ncProfile of run_command(['true']) after imports (cumulative):")
        print(cprof)


if __name__ == "__main__":
    main()
