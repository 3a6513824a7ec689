"""``ebpf-energy monitor``: the project's main job.

CPU time per process from the eBPF sampler, joules from the active power
model, the same report as ``traditional``. Needs root; Ctrl-C or SIGTERM
prints the summary and leaves nothing loaded.
"""

import os
import sys

import click

from ebpf_energy.commands._numbers import YEAR_S, Number, codecarbon_path, plot_file, seconds
from ebpf_energy.commands._options import model_from_options, model_options
from ebpf_energy.commands._report_run import (duration_option, listing_options, output_format, run_and_report,
                                              selection_for)


def _event_printer(err, watts, pids=()):
    """The seed's -v line per slice, with our units (ns) and the slice's joules.
    The kernel filters one --pid; several are filtered here."""
    wanted = frozenset(pids) if len(pids) > 1 else None

    def on_event(e):
        if wanted is not None and e["tgid"] not in wanted:
            return
        energy = f" energy={e['dur_ns'] * watts:.0f} nJ" if watts else ""
        err.write(f"{e['comm']:<16} pid={e['tgid']:<7} tid={e['tid']:<7} cpu={e['cpu']:<3} "
                  f"runtime={e['dur_ns']} ns{energy}\n")

    return on_event


@click.command()
@duration_option
@click.option("-i", "--interval", type=seconds(min_open=True, max=86400.0), default=None, metavar="SECONDS",
              help="Print a refreshed table (JSON Lines with --json) every SECONDS.")
@click.option("-v", "--verbose", is_flag=True,
              help="Stream one line per scheduling slice on stderr (filtered in the kernel by --pid, --cgroup, "
                   "--min-slice-us).")
@listing_options
@click.option("--max-tasks", type=Number(min=1, max=2**32 - 1, integer=True), default=16384, show_default=True, metavar="N",
              help="Threads the kernel map holds between two reads; overflow is counted and reported as dropped.")
@click.option("--min-slice-us", type=Number(min=0, max=YEAR_S * 1e6, integer=True), default=0, metavar="US",
              help="With -v: only stream slices at least this long.")
@click.option("--classify", is_flag=True,
              help="Also load the wait-state program: per process, time on a CPU, runnable but waiting, blocked in "
                   "I/O and sleeping, and a class (cpu-bound, io-bound, contended, mostly idle, mixed).")
@click.option("--explain", "explain_", is_flag=True, help="Tell every loader step (syscalls, relocations) on stderr.")
@click.option("--codecarbon-csv", "codecarbon_csv", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              callback=codecarbon_path,
              help="Also append the run's machine total to FILE in CodeCarbon's emissions.csv columns.")
@click.option("--plot", "plot", default=None, metavar="FILE.svg|png", callback=plot_file,
              help="Also draw energy over time for the top processes into FILE (needs matplotlib).")
@model_options
def monitor(duration, interval, verbose, top, threads, pids, comms, cgroup, by, max_tasks, min_slice_us,
            as_json, as_csv, explain_, plot=None, codecarbon_csv=None, classify=False, **model_kw):
    """Per-process CPU time and energy, measured in the kernel with eBPF.

    Every context switch is accounted to the nanosecond, short-lived
    processes included. Needs root (or CAP_BPF + CAP_PERFMON).
    """
    fmt = output_format(as_json, as_csv)
    from ebpf_energy.loader import explain
    from ebpf_energy.loader.errors import LoaderError
    from ebpf_energy.monitor import EbpfSampler, cgroup2_mount
    from ebpf_energy.topology import sampler_kwargs
    from ebpf_energy.plot import PlotError, Timeline  # matplotlib itself only with --plot
    from ebpf_energy.report import Reporter

    err = sys.stderr
    from ebpf_energy.privilege import can_bpf

    if not can_bpf():
        click.echo("ebpf-energy monitor: needs root (or CAP_BPF and CAP_PERFMON) to load its BPF program; "
                   "run it with sudo, or use `ebpf-energy traditional`, which needs no privilege.", err=True)
        sys.exit(1)
    timeline = None
    if plot:
        try:
            timeline = Timeline.for_run(plot, duration, interval)  # before the run: fail fast
        except PlotError as e:
            click.echo(f"ebpf-energy monitor: {e}", err=True)
            sys.exit(1)
    if explain_:
        explain.enable(err)
    mount = cgroup2_mount()
    selection = selection_for(pids, comms, cgroup, mount, "monitor")
    model, meter = model_from_options(**model_kw)
    filters = {}
    on_event = None
    if verbose:
        on_event = _event_printer(err, getattr(model, "watts", 0.0), pids)
        filters = _stream_filters(pids, selection.cgroup, mount, min_slice_us)
    sampler = EbpfSampler(max_tasks=max_tasks, threads=threads or by == "thread", on_event=on_event, **filters,
                          **sampler_kwargs(model.topology))
    if classify:
        from ebpf_energy.wait_states import ClassifyingSampler

        sampler = ClassifyingSampler(sampler)
    reporter = Reporter(sys.stdout, fmt=fmt, by=by, threads=threads, top=top, selection=selection,
                        intervals=interval is not None, title="ebpf-energy monitor (eBPF)")
    on_interval = interval_s = after = None
    if timeline is not None:  # record windows for the plot; print them only with -i
        printing = (lambda n, w, a, mj: reporter.interval(n, w, a)) if interval is not None else None
        on_interval, interval_s = timeline.hook(printing), timeline.interval_s
        after = lambda result: err.write(  # noqa: E731
            f"ebpf-energy monitor: plot written to {_save_plot(timeline, result, reporter, top)}\n")
    if codecarbon_csv:
        after = _with_codecarbon_row(after, codecarbon_csv, model_kw)
    how_long = f"for {duration:g} s" if duration > 0 else "until Ctrl-C"
    run_and_report("monitor", sampler, model, meter, reporter, duration=duration, interval=interval,
                   started_message=f"measuring every context switch {how_long}", on_interval=on_interval,
                   interval_s=interval_s, after=after, errors=(LoaderError, PlotError))


def _save_plot(timeline, result, reporter, top):
    """The plot of the table's own rows: the summary's order and filters, and
    its --top (the plot drew its default 8 whatever --top said)."""
    summary = reporter.last_summary or {}
    ranked = [row["pid"] for row in summary.get("processes", [])] if summary else None
    return timeline.save(result.attribution.model, top=top, ranked=ranked)


def _with_codecarbon_row(after, path, model_kw):
    """After the summary: the machine's run as one CodeCarbon row (machine tracking)."""
    from ebpf_energy import codecarbon_csv as cc
    from ebpf_energy.measurement import DEFAULT_CARBON_INTENSITY, carbon_grams

    def write(result):
        if after is not None:
            after(result)
        a, w = result.attribution, result.window
        cc.append(path, cc.row(duration_s=w.duration_s, energy_j=a.total_energy_j,
                               carbon_g=carbon_grams(a.total_energy_j, DEFAULT_CARBON_INTENSITY),
                               cpu_s=w.total_cpu_ns / 1e9, dram_j=a.domains_j.get("dram", 0.0),
                               tracking_mode="machine"))

    return write


def _stream_filters(pids, cg, mount, min_slice_us):
    """In-kernel filters of the -v stream: one pid, a cgroup, a minimum slice."""
    filters = {"min_slice_ns": min_slice_us * 1000}
    if len(pids) == 1:
        filters["filter_tgid"] = pids[0]
    if cg and mount:
        try:
            filters["filter_cgroup_id"] = os.stat(mount.rstrip("/") + cg).st_ino
        except OSError:
            raise click.BadParameter(f"no cgroup {cg} under {mount}", param_hint="--cgroup") from None
    return filters
