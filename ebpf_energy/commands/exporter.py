"""``ebpf-energy exporter``: per-process energy for Prometheus.

Binds first (a busy port fails before anything is loaded), then loads the
eBPF monitor, refreshes the numbers every ``--interval`` seconds in the main
thread and serves the last snapshot from a server thread. SIGINT/SIGTERM stop
it cleanly: the server is shut down and the BPF object closed.
"""

import sys
import threading

import click

from ebpf_energy.commands._numbers import Number, count, seconds
from ebpf_energy.commands._options import model_from_options, model_options
from ebpf_energy.commands._report_run import owner_by_option, runtime_root_option
from ebpf_energy.exporter import DEFAULT_INTERVAL_S, DEFAULT_LINGER_S, DEFAULT_LISTEN, DEFAULT_TOP


@click.command()
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT",
              help="Address to serve /metrics on. Loopback by default: exposing it needs an explicit address "
                   "(e.g. 0.0.0.0:9877 or [::]:9877). Port 0 picks a free port (printed on stderr).")
@click.option("--top", type=count(max=100_000), default=DEFAULT_TOP, show_default=True, metavar="N",
              help="Processes (and with --by, groups) with a series of their own (by energy over the run); "
                   "the rest are pid=\"other\" (container_id/pod/service=\"other\").")
@click.option("--interval", type=seconds(min=0.05, max=86400.0), default=DEFAULT_INTERVAL_S, show_default=True,
              metavar="SECONDS", help="How often the numbers are refreshed (scrapes read the last refresh).")
@click.option("--linger", type=seconds(), default=DEFAULT_LINGER_S, show_default=True,
              metavar="SECONDS", help="How long an exported process's series stays after it exits.")
@click.option("--max-tasks", type=Number(min=1, max=2**32 - 1, integer=True), default=16384, show_default=True, metavar="N",
              help="Threads the kernel map holds between two refreshes; overflow is counted as dropped.")
@click.option("--explain", "explain_", is_flag=True, help="Tell every loader step (syscalls, relocations) on stderr.")
@owner_by_option
@runtime_root_option
@model_options
def exporter(listen, top, interval, linger, max_tasks, explain_, by, **model_kw):
    """Serve CPU seconds and joules per process to Prometheus (/metrics).

    Counters only go up: the top N processes by energy get their own series,
    everyone else is summed in pid="other". Needs root (or CAP_BPF +
    CAP_PERFMON) and the prometheus_client package (extra [exporter]).
    It runs until SIGINT or SIGTERM, unloads everything, then dies by that
    signal (a shell sees 130 or 143; systemd sees a clean stop). With --by,
    series per container (or pod, or systemd unit) too, by the same rules.
    """
    from ebpf_energy.commands._signals import TerminateOnSignals
    from ebpf_energy.exporter import Exporter, ExporterError, make_server, parse_listen
    from ebpf_energy.exporter import require_prometheus_client
    from ebpf_energy.loader.errors import LoaderError
    from ebpf_energy.monitor import EbpfSampler
    from ebpf_energy.topology import sampler_kwargs

    def fail(message):
        click.echo(f"ebpf-energy exporter: {message}", err=True)
        sys.exit(1)

    try:
        require_prometheus_client()
        host, port = parse_listen(listen)
    except ExporterError as e:
        fail(str(e))
    from ebpf_energy.privilege import can_bpf

    if not can_bpf():
        fail("needs root (or CAP_BPF and CAP_PERFMON) to load its BPF program; run it with sudo.")
    if explain_:
        from ebpf_energy.loader import explain

        explain.enable(sys.stderr)
    model, meter = model_from_options(**model_kw)
    server, serving, stopped_by = None, False, None
    ex = Exporter(EbpfSampler(max_tasks=max_tasks, **sampler_kwargs(model.topology)), model, meter, top=top,
                  linger_s=linger, by=by)
    try:
        with TerminateOnSignals() as sig:
            server = make_server(ex, host, port)
            ex.start()
            ex.refresh()
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                             name="ebpf-energy-http", daemon=True).start()
            serving = True  # from here shutdown() has a serve_forever() loop to wait for
            bound_host, bound_port = server.server_address[:2]
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            click.echo(f"ebpf-energy exporter: serving http://{shown}:{bound_port}/metrics "
                       f"(refresh every {interval:g} s, top {top} processes{f' and {by}s' if by else ''}; model {model.name})", err=True)
            while not sig.wait(interval):
                ex.refresh()
            stopped_by = sig.stopper.reason
    except (ExporterError, LoaderError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        stopped_by = "SIGINT"
    finally:
        if server is not None:
            if serving:
                server.shutdown()
            server.server_close()
        ex.stop()
        if meter is not None:
            meter.close()
    if stopped_by:
        from ebpf_energy.commands._signals import die_by

        die_by(stopped_by)

