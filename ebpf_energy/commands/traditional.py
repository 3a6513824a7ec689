"""``ebpf-energy traditional``: the same report as ``monitor``, by polling /proc.

It needs no privilege and no BPF, and it is the baseline the eBPF monitor is
measured against: same power models, same report, same JSON. Its limits are
the method's own (tick resolution, processes living between two samples are
never seen) and the report shows how well the polling itself went.
"""

import os
import sys

import click

from ebpf_energy.commands._options import model_from_options, model_options
from ebpf_energy.procfs import DEFAULT_INTERVAL_S, MIN_INTERVAL_S
from ebpf_energy.report import BY_CHOICES


def _interval(ctx, param, value):
    if value is not None and not value >= MIN_INTERVAL_S:
        raise click.BadParameter(f"must be at least {MIN_INTERVAL_S} s (one clock tick: /proc counts "
                                 f"CPU time in ticks, so polling faster sees nothing more), got {value}")
    return value


def _verbose_printer(err):
    def on_sample(n, t_s, deltas):
        if deltas:
            err.write("".join(f"[sample {n} +{t_s:.3f}s] {pid} {comm} +{ns / 1e6:.3f} ms\n"
                              for pid, comm, ns in deltas))
            err.flush()
    return on_sample


@click.command()
@click.option("-d", "--duration", type=click.FloatRange(min=0), default=0.0, show_default=True,
              metavar="SECONDS", help="How long to measure; 0 means until Ctrl-C or SIGTERM.")
@click.option("-i", "--interval", type=float, default=None, callback=_interval, metavar="SECONDS",
              help=f"Poll /proc every SECONDS (default {DEFAULT_INTERVAL_S}); when given, also print "
                   "a report each interval (JSON Lines with --json).")
@click.option("-v", "--verbose", is_flag=True, help="Print each sample's per-process CPU gains on stderr.")
@click.option("--top", type=click.IntRange(min=1), default=None, metavar="N",
              help="Rows to list (table default 20; JSON and CSV list everything unless given).")
@click.option("--threads", is_flag=True, help="Also poll each thread (/proc/PID/task/*/stat) and list them.")
@click.option("--pid", "pids", type=click.IntRange(min=0), multiple=True, metavar="PID",
              help="Only list this process (repeatable). Totals still cover the whole machine.")
@click.option("--comm", "comms", multiple=True, metavar="NAME", help="Only list processes with this name (repeatable).")
@click.option("--cgroup", default=None, metavar="PATH",
              help="Only list processes in this cgroup v2 path (or below it).")
@click.option("--by", type=click.Choice(BY_CHOICES), default="process", show_default=True,
              help="One row per process, per thread, or per cgroup.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (stdout carries only the JSON).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header.")
@model_options
def traditional(duration, interval, verbose, top, threads, pids, comms, cgroup, by, as_json, as_csv, **model_kw):
    """Per-process CPU time and energy from polling /proc (no root needed)."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv are alternatives: give one")
    from ebpf_energy.driver import drive
    from ebpf_energy.procfs import ProcfsPoller, find_cgroup2_mount
    from ebpf_energy.report import Reporter, Selection, normalize_cgroup

    err = sys.stderr
    selection = Selection(pids=frozenset(pids), comms=frozenset(comms),
                          cgroup=normalize_cgroup(cgroup, find_cgroup2_mount()) if cgroup else None)
    model, meter = model_from_options(**model_kw)
    poll_s = interval if interval is not None else DEFAULT_INTERVAL_S
    poller = ProcfsPoller(poll_s, threads=threads or by == "thread",
                          on_sample=_verbose_printer(err) if verbose else None)
    fmt = "json" if as_json else "csv" if as_csv else "table"
    reporter = Reporter(sys.stdout, fmt=fmt, by=by, threads=threads, top=top, selection=selection,
                        intervals=interval is not None, title="ebpf-energy traditional (/proc)")
    how_long = f"for {duration:g} s" if duration > 0 else "until Ctrl-C"

    def started():
        err.write(f"ebpf-energy traditional: polling /proc every {poll_s:g} s {how_long}\n")
        err.flush()

    try:
        result = drive(poller, model, meter=meter, duration_s=duration, interval_s=interval,
                       on_interval=lambda n, w, a, mj: reporter.interval(n, w, a), on_started=started)
        extra = {"overhead_cpu_ns": result.overhead_cpu_ns, "sampler": result.sampler_stats}
        reporter.summary(result.window, result.attribution, extra)
    except KeyboardInterrupt:
        err.write("ebpf-energy traditional: interrupted twice, no summary\n")
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    finally:
        poller.stop()
        if meter is not None:
            meter.close()
