"""``ebpf-energy monitor``: the project's main job.

CPU time per process from the eBPF sampler, joules from the active power
model, the same report as ``traditional``. Needs root; Ctrl-C or SIGTERM
prints the summary and leaves nothing loaded.
"""

import os
import sys

import click

from ebpf_energy.commands._options import model_from_options, model_options
from ebpf_energy.report import BY_CHOICES


def _interval(ctx, param, value):
    if value is not None and not value > 0:
        raise click.BadParameter(f"must be a positive number of seconds, got {value}")
    return value


def _event_printer(err, watts):
    """The seed's -v line per slice, with our units (ns) and the slice's joules."""

    def on_event(e):
        energy = f" energy={e['dur_ns'] * watts:.0f} nJ" if watts else ""
        err.write(f"{e['comm']:<16} pid={e['tgid']:<7} tid={e['tid']:<7} cpu={e['cpu']:<3} "
                  f"runtime={e['dur_ns']} ns{energy}\n")

    return on_event


@click.command()
@click.option("-d", "--duration", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              help="How long to measure; 0 means until Ctrl-C or SIGTERM.")
@click.option("-i", "--interval", type=float, default=None, callback=_interval, metavar="SECONDS",
              help="Print a refreshed table (JSON Lines with --json) every SECONDS.")
@click.option("-v", "--verbose", is_flag=True,
              help="Stream one line per scheduling slice on stderr (filtered in the kernel by --pid, --cgroup, "
                   "--min-slice-us).")
@click.option("--top", type=click.IntRange(min=1), default=None, metavar="N",
              help="Rows to list (table default 20; JSON and CSV list everything unless given).")
@click.option("--threads", is_flag=True, help="List each thread under its process.")
@click.option("--pid", "pids", type=click.IntRange(min=0), multiple=True, metavar="PID",
              help="Only list this process (repeatable). Totals still cover the whole machine.")
@click.option("--comm", "comms", multiple=True, metavar="NAME", help="Only list processes with this name (repeatable).")
@click.option("--cgroup", default=None, metavar="PATH", help="Only list processes in this cgroup v2 path (or below).")
@click.option("--by", type=click.Choice(BY_CHOICES), default="process", show_default=True,
              help="One row per process, per thread, or per cgroup.")
@click.option("--max-tasks", type=click.IntRange(min=1), default=16384, show_default=True, metavar="N",
              help="Threads the kernel map holds between two reads; overflow is counted and reported as dropped.")
@click.option("--min-slice-us", type=click.IntRange(min=0), default=0, metavar="US",
              help="With -v: only stream slices at least this long.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (stdout carries only the JSON).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header.")
@click.option("--explain", "explain_", is_flag=True, help="Tell every loader step (syscalls, relocations) on stderr.")
@click.option("--plot", "plot", default=None, metavar="FILE.svg|png",
              help="Also draw energy over time for the top processes into FILE (needs matplotlib).")
@model_options
def monitor(duration, interval, verbose, top, threads, pids, comms, cgroup, by, max_tasks, min_slice_us,
            as_json, as_csv, explain_, plot=None, **model_kw):
    """Per-process CPU time and energy, measured in the kernel with eBPF.

    Every context switch is accounted to the nanosecond, short-lived
    processes included. Needs root (or CAP_BPF + CAP_PERFMON).
    """
    if as_json and as_csv:
        raise click.UsageError("--json and --csv are alternatives: give one")
    from ebpf_energy.driver import drive
    from ebpf_energy.loader import explain
    from ebpf_energy.loader.errors import LoaderError
    from ebpf_energy.monitor import EbpfSampler, cgroup2_mount
    from ebpf_energy.plot import PlotError, Timeline  # matplotlib itself only with --plot
    from ebpf_energy.report import Reporter, Selection, normalize_cgroup

    err = sys.stderr
    if os.geteuid() != 0:
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
    cg = normalize_cgroup(cgroup, mount) if cgroup else None
    selection = Selection(pids=frozenset(pids), comms=frozenset(comms), cgroup=cg)
    model, meter = model_from_options(**model_kw)
    on_event = None
    filters = {}
    if verbose:
        watts = getattr(model, "watts", 0.0)
        on_event = _event_printer(err, watts)
        if len(pids) == 1:
            filters["filter_tgid"] = pids[0]
        if cg and mount:
            try:
                filters["filter_cgroup_id"] = os.stat(mount.rstrip("/") + cg).st_ino
            except OSError:
                raise click.BadParameter(f"no cgroup {cg} under {mount}", param_hint="--cgroup") from None
        filters["min_slice_ns"] = min_slice_us * 1000
    sampler = EbpfSampler(max_tasks=max_tasks, threads=threads or by == "thread", on_event=on_event, **filters)
    fmt = "json" if as_json else "csv" if as_csv else "table"
    reporter = Reporter(sys.stdout, fmt=fmt, by=by, threads=threads, top=top, selection=selection,
                        intervals=interval is not None, title="ebpf-energy monitor (eBPF)")
    how_long = f"for {duration:g} s" if duration > 0 else "until Ctrl-C"

    def started():
        err.write(f"ebpf-energy monitor: measuring every context switch {how_long}\n")
        err.flush()

    try:
        on_interval = lambda n, w, a, mj: reporter.interval(n, w, a)  # noqa: E731
        if timeline is not None:  # record windows for the plot; print them only with -i
            on_interval = timeline.hook(on_interval if interval is not None else None)
        result = drive(sampler, model, meter=meter, duration_s=duration,
                       interval_s=timeline.interval_s if timeline is not None else interval,
                       on_interval=on_interval, on_started=started)
        extra = {"overhead_cpu_ns": result.overhead_cpu_ns, "sampler": result.sampler_stats}
        if result.window.dropped:
            err.write(f"ebpf-energy monitor: warning: {result.window.drops['tasks']} slices lost to a full task "
                      f"map (raise --max-tasks) and {result.window.drops['events']} events to a full ring buffer\n")
        reporter.summary(result.window, result.attribution, extra)
        if timeline is not None:
            err.write(f"ebpf-energy monitor: plot written to {timeline.save(result.attribution.model)}\n")
    except LoaderError as e:
        click.echo(f"ebpf-energy monitor: {e}", err=True)
        sys.exit(1)
    except PlotError as e:
        click.echo(f"ebpf-energy monitor: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.write("ebpf-energy monitor: interrupted twice, no summary\n")
        sys.exit(130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    finally:
        sampler.stop()
        if meter is not None:
            meter.close()
