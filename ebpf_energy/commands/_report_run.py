"""What ``monitor`` and ``traditional`` share: the listing options and the run loop.

The two monitors differ only in their sampler; their reports, filters,
signals and exit codes must not drift apart, or the comparison between them
means nothing.
"""

import os
import signal
import sys

import click

from ebpf_energy.commands._numbers import PID_MAX_LIMIT, Number, count, seconds
from ebpf_energy.report import BY_CHOICES, OWNER_VIEWS, drop_warning

runtime_root_option = click.option(
    "--runtime-root", type=click.Path(file_okay=False, exists=True), envvar="EBPF_ENERGY_RUNTIME_ROOT", default=None,
    expose_value=False, callback=lambda ctx, param, v: _runtime_root(v),
    help="With --by container/pod: read container runtimes' state under DIR, laid out like / "
         "(default /; env EBPF_ENERGY_RUNTIME_ROOT).")
# the views that group processes by what owns their cgroup (run, compare, exporter)
owner_by_option = click.option(
    "--by", type=click.Choice(OWNER_VIEWS), default=None,
    help="Also break the figures down per container, Kubernetes pod or systemd unit.")

_LISTING = [
    click.option("--top", type=count(), default=None, metavar="N",
                 help="Rows to list (table default 20; JSON and CSV list everything unless given)."),
    click.option("--threads", is_flag=True, help="Also list each thread under its process."),
    click.option("--pid", "pids", type=Number(min=1, max=PID_MAX_LIMIT, integer=True), multiple=True, metavar="PID",
                 help="Only list this process (repeatable). Totals still cover the whole machine."),
    click.option("--comm", "comms", multiple=True, metavar="NAME", callback=lambda ctx, param, v: _comms(v),
                 help="Only list processes with this name (repeatable)."),
    click.option("--cgroup", default=None, metavar="PATH",
                 help="Only list processes in this cgroup v2 path (or below it)."),
    click.option("--by", type=click.Choice(BY_CHOICES), default="process", show_default=True,
                 help="One row per process, thread, cgroup, container, Kubernetes pod or systemd unit."),
    runtime_root_option,
    click.option("--json", "as_json", is_flag=True, help="Print JSON (stdout carries only the JSON)."),
    click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header."),
]

def _comms(names):
    """An empty --comm never matches a process (the kernel names every one): refused."""
    if any(not n for n in names):
        raise click.BadParameter("an empty name matches no process", param_hint="--comm")
    return names


def _no_match_note(selection, report, duration_s):
    """An empty table reads like a broken monitor: when --pid/--comm/--cgroup
    matched nothing, say so in one line (the exit status stays)."""
    if not selection or report.get("processes"):
        return None
    given = ([f"--pid {p}" for p in sorted(selection.pids)] + [f"--comm {c}" for c in sorted(selection.comms)]
             + ([f"--cgroup {selection.cgroup}"] if selection.cgroup else []))
    long = [c for c in selection.comms if len(c) > 15]
    hint = f" (the kernel keeps only 15 characters of a process name: {long[0][:15]})" if long else ""
    return f"no process matching {' '.join(given)} ran in the {duration_s:.3f} s measured{hint}"


def _runtime_root(value):
    """--runtime-root reaches the name lookups through the environment, as
    --powercap-root's variable does: one setting for the whole run."""
    if value:
        os.environ["EBPF_ENERGY_RUNTIME_ROOT"] = value
    return value


duration_option = click.option(
    "-d", "--duration", type=seconds(), default=0.0, show_default=True, metavar="SECONDS",
    help="How long to measure; 0 means until Ctrl-C or SIGTERM.")


def listing_options(func):
    for option in reversed(_LISTING):
        func = option(func)
    return func


def output_format(as_json: bool, as_csv: bool) -> str:
    if as_json and as_csv:
        raise click.UsageError("--json and --csv are alternatives: give one")
    return "json" if as_json else "csv" if as_csv else "table"


def selection_for(pids, comms, cgroup, mount, name="monitor"):
    """The rows to list, checked once for every output: a --pid that is a
    thread is refused (rows are processes), one that does not exist is
    warned about, and a --cgroup must exist (given as the v2 path, with or
    without its leading /, or as the full directory)."""
    from ebpf_energy.report import Selection, normalize_cgroup

    for pid in pids:
        tgid = _tgid_of(pid)
        if tgid is None:
            click.echo(f"ebpf-energy {name}: warning: --pid {pid}: no such process now (it is listed if it "
                       "appears during the run)", err=True)
        elif tgid != pid:
            raise click.BadParameter(f"{pid} is a thread of process {tgid}: rows are processes, so give "
                                     f"--pid {tgid} (and --threads to see its threads)", param_hint="--pid")
    cg = normalize_cgroup(cgroup, mount) if cgroup else None
    if cg and mount and not os.path.isdir(mount.rstrip("/") + cg):
        raise click.BadParameter(f"no cgroup {cg} under {mount}", param_hint="--cgroup")
    return Selection(pids=frozenset(pids), comms=frozenset(comms), cgroup=cg)


def _tgid_of(pid):
    """The process a pid belongs to (itself for a process), None when there is no such task."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def run_and_report(name, sampler, model, meter, reporter, *, duration, interval, started_message,
                   on_interval=None, interval_s=None, after=None, errors=()):
    """Drive ``sampler``, print the summary, and always release sampler and meter.

    ``errors`` are exception types whose message is the whole story (exit 1);
    a second Ctrl-C gives up without a summary (exit 130); a closed stdout
    (``| head``) ends quietly. ``after(result)`` runs once the summary is out.
    """
    from ebpf_energy.driver import drive

    err = sys.stderr

    def started():
        err.write(f"ebpf-energy {name}: {started_message}\n")
        err.flush()

    if on_interval is None:
        on_interval = lambda n, w, a, mj: reporter.interval(n, w, a)  # noqa: E731
    try:
        result = drive(sampler, model, meter=meter, duration_s=duration,
                       interval_s=interval if interval_s is None else interval_s,
                       on_interval=on_interval, on_started=started)
        note = drop_warning(result.window)
        if note:
            err.write(f"ebpf-energy {name}: {note}\n")
        extra = {"overhead_cpu_ns": result.overhead_cpu_ns, "sampler": result.sampler_stats}
        report = reporter.summary(result.window, result.attribution, extra)
        note = _no_match_note(reporter.selection, report, result.window.duration_s)
        if note:
            err.write(f"ebpf-energy {name}: {note}\n")
        if after is not None:
            after(result)
        if result.stopped_by and duration > 0:
            # cut short: the summary is out, and the exit status says it is partial
            # (with -d 0 a signal is the way the run is meant to end: exit 0)
            err.write(f"ebpf-energy {name}: stopped by {result.stopped_by} before the {duration:g} s were up; "
                      "the summary covers the time measured\n")
            sys.exit(128 + signal.Signals[result.stopped_by])
    except errors as e:
        click.echo(f"ebpf-energy {name}: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.write(f"ebpf-energy {name}: interrupted twice, no summary\n")
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    finally:
        sampler.stop()
        if meter is not None:
            meter.close()
