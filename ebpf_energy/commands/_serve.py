"""The exporter's loop, shared by ``exporter`` and ``dashboard``.

Binds first (a busy port fails before anything is loaded), then loads the
eBPF monitor, refreshes the numbers every ``interval`` seconds in the main
thread and serves from a server thread. SIGINT/SIGTERM stop it cleanly: the
server is shut down, ``on_stop`` runs (the dashboard ends its event
streams), the BPF object is closed, and the process dies by that signal.
"""

import sys
import threading

import click


def check_can_serve(command, listen, explain_):
    """(host, port) from ``--listen``, after the checks that need nothing
    loaded: prometheus_client importable, the address well-formed, the right
    to load BPF. Each failure is one line and exit status 1."""
    from ebpf_energy.exporter import ExporterError, parse_listen, require_prometheus_client
    from ebpf_energy.privilege import can_bpf

    def fail(message):
        click.echo(f"ebpf-energy {command}: {message}", err=True)
        sys.exit(1)

    try:
        require_prometheus_client()
        host, port = parse_listen(listen)
    except ExporterError as e:
        fail(str(e))
    if not can_bpf():
        fail("needs root (or CAP_BPF and CAP_PERFMON) to load its BPF program; run it with sudo.")
    if explain_:
        from ebpf_energy.loader import explain

        explain.enable(sys.stderr)
    return host, port


def serve_refreshing(command, ex, meter, host, port, interval, routes=None, on_stop=None, ready=None):
    """Run ``ex`` (an :class:`~ebpf_energy.exporter.Exporter`) behind a server
    on ``host:port`` until a signal. ``routes``: extra WSGI apps by path (see
    :func:`~ebpf_energy.exporter.make_server`); ``ready(url_base)`` returns
    the line announcing the server on stderr."""
    from ebpf_energy.commands._signals import TerminateOnSignals, die_by
    from ebpf_energy.exporter import ExporterError, make_server
    from ebpf_energy.loader.errors import LoaderError

    server, serving, stopped_by = None, False, None
    try:
        with TerminateOnSignals() as sig:
            server = make_server(ex, host, port, routes=routes)
            ex.start()
            ex.refresh()
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                             name=f"ebpf-energy-{command}-http", daemon=True).start()
            serving = True  # from here shutdown() has a serve_forever() loop to wait for
            bound_host, bound_port = server.server_address[:2]
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            click.echo(f"ebpf-energy {command}: {ready(f'http://{shown}:{bound_port}')}", err=True)
            while not sig.wait(interval):
                ex.refresh()
            stopped_by = sig.stopper.reason
    except (ExporterError, LoaderError) as e:
        click.echo(f"ebpf-energy {command}: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        stopped_by = "SIGINT"
    finally:
        if server is not None:
            if serving:
                server.shutdown()
            if on_stop is not None:
                on_stop()
            server.server_close()
        ex.stop()
        if meter is not None:
            meter.close()
    if stopped_by:
        die_by(stopped_by)
