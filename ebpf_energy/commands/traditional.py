"""``ebpf-energy traditional``: the same report as ``monitor``, by polling /proc.

It needs no privilege and no BPF, and it is the baseline the eBPF monitor is
measured against: same power models, same report, same JSON. Its limits are
the method's own (tick resolution, processes living between two samples are
never seen) and the report shows how well the polling itself went.
"""

import sys

import click

from ebpf_energy.commands._numbers import seconds
from ebpf_energy.commands._options import model_from_options, model_options
from ebpf_energy.commands._report_run import (duration_option, listing_options, output_format, run_and_report,
                                              selection_for)
from ebpf_energy.procfs import DEFAULT_INTERVAL_S, MIN_INTERVAL_S


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
@duration_option
@click.option("-i", "--interval", type=seconds(min_open=True, max=86400.0), default=None, callback=_interval,
              metavar="SECONDS",
              help=f"Poll /proc every SECONDS (default {DEFAULT_INTERVAL_S}); when given, also print "
                   "a report each interval (JSON Lines with --json).")
@click.option("-v", "--verbose", is_flag=True, help="Print each sample's per-process CPU gains on stderr.")
@listing_options
@model_options
def traditional(duration, interval, verbose, top, threads, pids, comms, cgroup, by, as_json, as_csv, **model_kw):
    """Per-process CPU time and energy from polling /proc (no root needed)."""
    fmt = output_format(as_json, as_csv)
    from ebpf_energy.procfs import ProcfsPoller, find_cgroup2_mount
    from ebpf_energy.report import Reporter

    selection = selection_for(pids, comms, cgroup, find_cgroup2_mount(), "traditional")
    model, meter = model_from_options(**model_kw)
    poll_s = interval if interval is not None else DEFAULT_INTERVAL_S
    poller = ProcfsPoller(poll_s, threads=threads or by == "thread",
                          on_sample=_verbose_printer(sys.stderr) if verbose else None)
    reporter = Reporter(sys.stdout, fmt=fmt, by=by, threads=threads, top=top, selection=selection,
                        intervals=interval is not None, title="ebpf-energy traditional (/proc)")
    how_long = f"for {duration:g} s" if duration > 0 else "until Ctrl-C"
    run_and_report("traditional", poller, model, meter, reporter, duration=duration, interval=interval,
                   started_message=f"polling /proc every {poll_s:g} s {how_long}")
