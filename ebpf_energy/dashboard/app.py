"""The dashboard's routes, added to the exporter's server (one port for the
page, its event stream and ``/metrics``).

The page and the charting library (uPlot, MIT, vendored with its licence in
``static/``) are files shipped in the package: the page works with no
network and needs no front-end build.
"""

from importlib import resources
from typing import Callable, Dict

from ebpf_energy.dashboard.stream import EventStream

STATIC = {  # file -> content type; served at /static/<file>, index.html at /
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}


def static_file(name: str) -> bytes:
    return resources.files("ebpf_energy.dashboard").joinpath("static", name).read_bytes()


def _file_app(body: bytes, content_type: str) -> Callable:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache")]

    def app(environ, start_response):
        start_response("200 OK", headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    return app


def routes(stream: EventStream) -> Dict[str, Callable]:
    """Path -> WSGI app, for :func:`ebpf_energy.exporter.make_server`. Files
    are read once here: a page load costs no disk access."""
    out = {f"/static/{name}": _file_app(static_file(name), ctype) for name, ctype in STATIC.items()}
    out["/"] = out["/index.html"] = out.pop("/static/index.html")
    out["/events"] = stream.wsgi
    return out
