"""``ebpf-energy exporter``: per-process energy for Prometheus.

The loop (bind, load, refresh every ``--interval`` s, serve the last
snapshot, a clean stop on SIGINT/SIGTERM) is :mod:`ebpf_energy.commands._serve`,
shared with ``dashboard``.
"""

import click

from ebpf_energy.commands._numbers import Number, count, listen_address, seconds
from ebpf_energy.commands._options import model_from_options, model_options
from ebpf_energy.commands._report_run import owner_by_option, runtime_root_option
from ebpf_energy.exporter import DEFAULT_INTERVAL_S, DEFAULT_LINGER_S, DEFAULT_LISTEN, DEFAULT_TOP


@click.command()
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT", callback=listen_address,
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
    from ebpf_energy.commands._serve import check_can_serve, serve_refreshing
    from ebpf_energy.exporter import Exporter
    from ebpf_energy.monitor import EbpfSampler
    from ebpf_energy.topology import sampler_kwargs

    host, port = check_can_serve("exporter", listen, explain_)
    model, meter = model_from_options(**model_kw)
    ex = Exporter(EbpfSampler(max_tasks=max_tasks, **sampler_kwargs(model.topology)), model, meter, top=top,
                  linger_s=linger, by=by)
    serve_refreshing("exporter", ex, meter, host, port, interval,
                     ready=lambda base: f"serving {base}/metrics (refresh every {interval:g} s, top {top} "
                                        f"processes{f' and {by}s' if by else ''}; model {model.name})")
