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
    from ebpf_energy.compare import CompareError, Stopped, compare as run_compare, render, to_csv

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
    # SIGINT and SIGTERM (Ctrl-C, kill, timeout, systemd, CI) cut the workload
    # short: the monitors are stopped, the comparison of what was measured is
    # printed and the cgroup removed; a second signal gives up at once.
    from ebpf_energy.stop import Stopper, install_stop_signals

    stopper = Stopper()
    old = install_stop_signals(stopper)
    try:
        result = run_compare(duration, command=command, workload=workload, interval=interval,
                             model_args=_model_args(**model_kw), progress=progress, by=by, stop=stopper)
    except Stopped as e:
        click.echo(f"ebpf-energy compare: {e}; both monitors and the workload were stopped, nothing is left "
                   "running", err=True)
        sys.exit(128 + signal.Signals[stopper.reason])
    except CompareError as e:
        click.echo(f"ebpf-energy compare: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("ebpf-energy compare: interrupted twice, no comparison; both monitors and the workload were "
                   "stopped, nothing is left running", err=True)
        sys.exit(130)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        stopper.close()
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
    if result["workload"].get("failed"):
        click.echo(f"ebpf-energy compare: the workload command failed ({result['workload']['failed']}); the "
                   "comparison covers what it ran", err=True)
        sys.exit(1)
    if result.get("stopped_by"):
        sig = signal.Signals[result["stopped_by"]]
        click.echo(f"ebpf-energy compare: stopped by {sig.name} before the {duration:g} s were up; the comparison "
                   "covers the time measured", err=True)
        sys.exit(128 + sig)
