"""``ebpf-energy compare``: both monitors, one workload, one table."""

import json
import signal
import sys

import click

from ebpf_energy.commands._numbers import plot_file, seconds
from ebpf_energy.commands._options import model_options
from ebpf_energy.commands._report_run import owner_by_option, runtime_root_option
from ebpf_energy.workloads import NAMES


def _model_args(power, profile, no_profile, powercap_root, meter, idle_share):
    """The model options, passed on unchanged to both monitors."""
    args = []
    if power is not None:
        args += ["-p", repr(power)]
    if profile:
        args += ["--profile", profile]
    if no_profile:
        args.append("--no-profile")
    if powercap_root:
        args += ["--powercap-root", powercap_root]
    if meter and meter != "auto":
        args += ["--meter", meter]
    if idle_share:
        args.append("--idle-share")
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signum)


@click.command()
@click.option("-d", "--duration", type=seconds(min_open=True), required=True, metavar="SECONDS",
              help="Length of the window (the workload is stopped at its end if still running).")
@click.option("-w", "--workload-command", "command", default=None, metavar="COMMAND",
              help="A shell command to run as the workload (default, with neither: --workload mixed).")
@click.option("--workload", "workload", type=click.Choice(NAMES), default=None,
              help="A built-in workload (needs nothing installed; mixed when neither this nor -w is given).")
@click.option("-i", "--interval", type=seconds(min=0.01, max=3600.0), default=0.1, show_default=True, metavar="SECONDS",
              help="The /proc monitor's poll interval.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as one JSON object.")
@click.option("--csv", "as_csv", is_flag=True,
              help="Print the comparison as CSV: one row per monitor, and a row for the truth.")
@click.option("--plot", "plot", default=None, metavar="FILE.svg|png", callback=plot_file,
              help="Also draw the comparison as bar charts into FILE (needs matplotlib).")
@owner_by_option
@runtime_root_option
@model_options
def compare(duration, command, workload, interval, as_json, by=None, as_csv=False, plot=None, **model_kw):
    """Run the eBPF monitor and the /proc poller side by side on one workload
    and compare CPU time, energy, processes caught and their own overhead.

    The workload runs in a cgroup of its own; the truth is that cgroup's CPU
    time (cpu.stat: every process that ran in it, reaped or not). Needs root
    (or CAP_BPF and CAP_PERFMON, and a cgroup it may write).
    """
    from ebpf_energy.compare import CompareError, compare as run_compare, render, to_csv

    if as_json and as_csv:
        raise click.UsageError("--json and --csv are alternatives: give one")
    if command and workload:
        raise click.UsageError("-w and --workload are alternatives: give one")
    if command is not None and not command.strip():
        raise click.BadParameter("the workload command is empty", param_hint="-w")
    if not command and not workload:
        workload = "mixed"
    if plot:
        from ebpf_energy.plot import PlotError, check_path, require_matplotlib

        try:  # before the run: fail fast
            require_matplotlib()
            check_path(plot)
        except PlotError as e:
            click.echo(f"ebpf-energy compare: {e}", err=True)
            sys.exit(1)
    progress = None if (as_json or as_csv) else (lambda msg: click.echo(f"ebpf-energy compare: {msg}", err=True))
    # SIGTERM (timeout, systemd, CI) stops it like Ctrl-C: the monitors and
    # the workload are stopped and the cgroup removed on the way out.
    old_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_compare(duration, command=command, workload=workload, interval=interval,
                             model_args=_model_args(**model_kw), progress=progress, by=by)
    except CompareError as e:
        click.echo(f"ebpf-energy compare: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt as e:
        sig = e.args[0] if e.args else signal.SIGINT
        click.echo(f"ebpf-energy compare: stopped by {signal.Signals(sig).name}; both monitors and the workload "
                   "were stopped, nothing is left running", err=True)
        sys.exit(128 + sig)
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif as_csv:
        click.echo(to_csv(result), nl=False)
    else:
        click.echo(render(result), nl=False)
    if plot:
        from ebpf_energy.plot import PlotError, plot_compare

        try:
            click.echo(f"ebpf-energy compare: plot written to {plot_compare(result, plot)}", err=True)
        except PlotError as e:
            click.echo(f"ebpf-energy compare: {e}", err=True)
            sys.exit(1)
