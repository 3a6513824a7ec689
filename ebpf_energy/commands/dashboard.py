"""``ebpf-energy dashboard``: live energy charts in the browser.

One process: the exporter's loop (:mod:`ebpf_energy.commands._serve`)
samples and refreshes; every refresh also becomes a frame pushed to the open
pages (server-sent events); the same port serves the page at ``/`` and the
exporter's metrics at ``/metrics``. The numeric options are the exporter's
own parameters, so their ranges and errors cannot drift apart.
"""

import click

from ebpf_energy.commands._options import model_from_options, model_options
from ebpf_energy.commands.exporter import exporter as _exporter_command
from ebpf_energy.dashboard.frames import BY_CHOICES

DEFAULT_LISTEN = "127.0.0.1:9878"  # beside the exporter's 9877: both can run
DEFAULT_TOP = 10
DEFAULT_INTERVAL_S = 1.0

_EXPORTER = {p.name: p for p in _exporter_command.params}


def _shared(name, **changes):
    """One of the exporter's options, as it is or with other defaults/help."""
    param = _EXPORTER[name]
    if not changes:
        return lambda f: _attach(f, param)
    return click.option(*param.opts, type=param.type, metavar=param.metavar, show_default=True, callback=param.callback,
                        **{"default": param.default, "help": param.help, **changes})


def _attach(f, param):
    f.__click_params__ = getattr(f, "__click_params__", []) + [param]
    return f


@click.command()
@_shared("listen", default=DEFAULT_LISTEN,
         help="Address to serve the page (/) and /metrics on. Loopback by default: exposing it needs an "
              "explicit address (e.g. 0.0.0.0:9878). Port 0 picks a free port (printed on stderr).")
@_shared("interval", default=DEFAULT_INTERVAL_S, help="How often the numbers are refreshed and pushed to the page.")
@_shared("top", default=DEFAULT_TOP,
         help="Rows drawn each refresh (the most energy in it); the rest are summed in \"other\". "
              "Also the number of process series in /metrics.")
@click.option("--by", type=click.Choice(BY_CHOICES), default="process", show_default=True,
              help="One row per process, cgroup or container.")
@click.option("--runtime-root", type=click.Path(file_okay=False), envvar="EBPF_ENERGY_RUNTIME_ROOT", default=None,
              help="With --by container: read container runtimes' state under DIR, laid out like / "
                   "(default /; env EBPF_ENERGY_RUNTIME_ROOT).")
@_shared("linger")
@_shared("max_tasks")
@_shared("explain_")
@model_options
def dashboard(listen, interval, top, by, runtime_root, linger, max_tasks, explain_, **model_kw):
    """Live energy charts in the browser, and /metrics on the same port.

    Power over time stacked for the top N rows plus other and idle, the
    model's total and the meter's, joules per row since start. Needs root
    (or CAP_BPF + CAP_PERFMON) and prometheus_client. Runs until SIGINT or
    SIGTERM, unloads everything, then dies by that signal.
    """
    import time

    from ebpf_energy.commands._serve import check_can_serve, serve_refreshing
    from ebpf_energy.containers import Resolver
    from ebpf_energy.dashboard.app import routes
    from ebpf_energy.dashboard.frames import FrameMaker
    from ebpf_energy.dashboard.stream import EventStream
    from ebpf_energy.exporter import Exporter
    from ebpf_energy.monitor import EbpfSampler

    host, port = check_can_serve("dashboard", listen, explain_)
    model, meter = model_from_options(**model_kw)
    ex = Exporter(EbpfSampler(max_tasks=max_tasks), model, meter, top=top, linger_s=linger)
    frames = FrameMaker(by=by, top=top, resolver=Resolver.from_env(runtime_root) if by == "container" else None)
    stream = EventStream({"by": by, "top": top, "interval": interval})

    def publish(window, att, meter_j):
        frame = frames.add(window, att, meter_j, time.time())
        if frame is not None:
            stream.publish(frame)

    ex.window_listeners.append(publish)
    serve_refreshing("dashboard", ex, meter, host, port, interval, routes=routes(stream), on_stop=stream.close,
                     ready=lambda base: f"serving {base}/ (metrics at {base}/metrics; refresh every "
                                        f"{interval:g} s, top {top} by {by}; model {model.name})")
