"""The dashboard without a browser: frames from windows (the books balance in
every frame, top N, joules per row since start, grouping, bounded memory), the
event stream (resume, restart, close), and the real server: page, static
files, /metrics and /events on one port, the exporter's option errors, a
clean stop by signal. The page itself in a real browser: test_dashboard_browser.py."""

import json
import math
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from ebpf_energy.dashboard.app import STATIC, static_file
from ebpf_energy.dashboard.frames import NO_CONTAINER, FrameMaker
from ebpf_energy.dashboard.stream import EventStream
from ebpf_energy.model.base import Attribution
from ebpf_energy.usage import ProcessUsage, UsageWindow

from test_containers import A, runtime_tree
from test_exporter import RunningExporter
from test_load_cli import fdinfo_ids
from test_object import assert_gone

ROOT = Path(__file__).resolve().parent.parent


# -------------------------------------------------------------------------------- frames (pure)

def window(procs, idle_j=0.0, seconds=2.0, drops=(0, 0), dropped_cpu_ns=0):
    """{pid: (joules, comm, cgroup[, exited])} -> (window, attribution)."""
    ps = {pid: ProcessUsage(pid, v[1], int(v[0] * 1e9), cgroup=v[2], exited=v[3] if len(v) > 3 else False)
          for pid, v in procs.items()}
    w = UsageWindow("test", 0, int(seconds * 1e9), 2, ps, drops={"tasks": drops[0], "events": drops[1]},
                    dropped_cpu_ns=dropped_cpu_ns)
    att = Attribution({pid: v[0] for pid, v in procs.items()}, idle_j, {"name": "fixed", "measured": False,
                                                                        "watts_per_cpu": 1.0})
    return w, att


def started(**kw):
    """A FrameMaker past its first window (attach to first refresh), which draws no frame."""
    fm = FrameMaker(**kw)
    assert fm.add(*window({}, seconds=0.002), None, 0.0) is None
    return fm


def test_the_first_window_counts_but_draws_no_frame():
    fm = FrameMaker(top=2)
    assert fm.add(*window({1: (0.5, "a", "/")}, idle_j=0.25, seconds=0.002), {"package": 1.0}, 0.0) is None
    f = fm.add(*window({1: (1.0, "a", "/")}), {"package": 2.0}, 1.0)
    assert f["seq"] == 2  # frame N is the exporter's refresh N
    assert f["rows"][0]["j"] == 1.5 and f["total"]["j"] == 1.75 and f["meter"]["j"] == 3.0


def test_every_frame_adds_up_and_shows_the_top_n_by_energy_in_it():
    fm = started(by="process", top=2)
    w, att = window({1: (3.0, "a", "/"), 2: (2.0, "b", "/"), 3: (1.0, "c", "/"), 4: (0.5, "d", "/")}, idle_j=4.0)
    f = fm.add(w, att, None, 100.0)
    assert [(r["key"], r["name"], r["detail"]) for r in f["rows"]] == [("1", "a", "pid 1"), ("2", "b", "pid 2")]
    assert [r["w"] for r in f["rows"]] == [1.5, 1.0]  # joules over a 2 s window
    assert f["other"] == {"w": 0.75, "j": 1.5, "n": 2}
    assert f["idle"] == {"w": 2.0, "j": 4.0}
    parts = [r["w"] for r in f["rows"]] + [f["other"]["w"], f["idle"]["w"]]
    assert math.fsum(parts) == pytest.approx(f["total"]["w"], rel=1e-12) and f["total"]["w"] == 5.25
    assert f["meter"] is None and f["seq"] == 2 and f["t"] == 100.0 and f["dt"] == 2.0
    assert f["model_text"] == "fixed (watts_per_cpu=1.0) - modelled, not measured (no energy meter)"
    json.dumps(f)  # what the stream sends
    # c now leads this window; a row's joules since start include windows it spent in "other"
    f = fm.add(*window({3: (8.0, "c", "/"), 1: (1.0, "a", "/")}), None, 102.0)
    assert [(r["key"], r["j"]) for r in f["rows"]] == [("3", 9.0), ("1", 4.0)]
    assert f["other"] == {"w": 0.0, "j": 1.5, "n": 0} and f["total"]["j"] == 10.5 + 9.0


def test_rows_that_did_nothing_are_not_drawn_and_ties_are_stable():
    fm = started(top=5)
    f = fm.add(*window({7: (0.0, "sleepy", "/"), 5: (1.0, "x", "/"), 6: (1.0, "y", "/")}), None, 0.0)
    assert [r["key"] for r in f["rows"]] == ["5", "6"]  # zero joules: no row (it is not in "other" either)
    assert f["other"]["n"] == 1 and f["other"]["w"] == 0.0


def test_rows_by_cgroup_and_by_container(tmp_path):
    procs = {1: (1.0, "a", "/x"), 2: (2.0, "b", "/x"), 3: (4.0, "c", "/y"), 4: (0.5, "d", None)}
    f = started(by="cgroup", top=5).add(*window(procs), None, 0.0)
    assert [(r["key"], r["w"]) for r in f["rows"]] == [("/y", 2.0), ("/x", 1.5), ("(unknown cgroup)", 0.25)]
    from ebpf_energy.containers import Resolver

    runtime_tree(tmp_path)
    pod = "/kubepods.slice/kubepods-pod1f2e3d4c_5b6a_4798_8a9b_0c1d2e3f4a5b.slice"
    procs = {1: (1.0, "nginx", f"{pod}/cri-containerd-{A}.scope"), 2: (2.0, "nginx", f"{pod}/cri-containerd-{A}.scope"),
             3: (4.0, "sshd", "/system.slice/ssh.service"), 4: (0.5, "x", f"/system.slice/docker-{'e' * 64}.scope")}
    f = started(by="container", top=5, resolver=Resolver(str(tmp_path))).add(*window(procs), None, 0.0)
    assert [(r["name"], r["w"]) for r in f["rows"]] == [(NO_CONTAINER, 2.0), ("web", 1.5), ("e" * 12, 0.25)]
    assert f["rows"][1]["detail"] == f"containerd {A[:12]} pod prod/shop-7d9"


def test_meter_watts_and_drops_since_start():
    fm = started(top=3)
    w, att = window({1: (1.0, "a", "/")}, drops=(3, 1), dropped_cpu_ns=5_000_000)
    f = fm.add(w, att, {"package": 6.0, "dram": 1.0}, 0.0)
    assert f["meter"] == {"w": 3.0, "j": 6.0} and f["domains_w"] == {"dram": 0.5, "package": 3.0}
    assert f["drops"] == {"tasks": 3, "events": 1, "cpu_s": 0.005}
    w, att = window({1: (1.0, "a", "/")}, drops=(2, 0))
    f = fm.add(w, att, {"package": 2.0}, 1.0)
    assert f["meter"] == {"w": 1.0, "j": 8.0} and f["drops"]["tasks"] == 5


def test_memory_holds_live_and_recent_rows_only():
    fm = FrameMaker(top=2, forget_after=128)
    for i in range(1, 301):  # 300 short processes, each exiting in the window it ran
        fm.add(*window({1: (1.0, "daemon", "/"), 1000 + i: (0.1, "short", "/", True)}), None, float(i))
    assert fm.held == 1  # the exited ones are forgotten at once; the daemon stays
    for i in range(300):  # the daemon goes quiet (or its exit was never seen): forgotten after 128 windows
        fm.add(*window({2: (1.0, "other", "/")}), None, 300.0 + i)
    assert fm.held == 1 and "1" not in fm._cumulative


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        FrameMaker(by="thread")
    with pytest.raises(ValueError):
        FrameMaker(top=0)


# -------------------------------------------------------------------------------- the stream (pure)

def parse_events(chunks):
    """SSE text -> [(event, id, data)] (comments skipped)."""
    out = []
    for block in "".join(c.decode() for c in chunks).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields:
            out.append((fields["event"], fields.get("id"), json.loads(fields["data"])))
    return out


def frame(seq, t=None):
    return {"seq": seq, "t": float(seq if t is None else t)}


def test_a_page_gets_history_then_live_frames_and_resumes_where_it_stopped():
    s = EventStream({"by": "process", "top": 3, "interval": 1.0}, keepalive_s=0.01)
    for i in range(1, 4):
        s.publish(frame(i))
    it = s.events()
    got = parse_events([next(it), next(it)])
    assert got[0][0] == "hello" and got[0][2]["run"] == s.run and got[0][2]["top"] == 3
    assert [(e, i, d["seq"]) for e, i, d in got[1:]] == [("frame", f"{s.run}:{n}", n) for n in (1, 2, 3)]
    assert next(it) == b": keepalive\n\n"  # nothing new: a comment keeps the connection alive
    s.publish(frame(4))
    assert [d["seq"] for _, _, d in parse_events([next(it)])] == [4]
    # a reconnect from this run gets only what it missed; from another run, everything
    it = s.events(f"{s.run}:2")
    assert [d["seq"] for e, _, d in parse_events([next(it), next(it)]) if e == "frame"] == [3, 4]
    it = s.events("0123456789ab:3")
    assert [d["seq"] for e, _, d in parse_events([next(it), next(it)]) if e == "frame"] == [1, 2, 3, 4]
    s.close()
    assert list(it) == []  # the server stops: every stream ends


def test_history_keeps_the_last_hour_and_at_most_keep_frames():
    s = EventStream({}, keep=5, history_s=10.0)
    for i in range(1, 9):
        s.publish(frame(i))
    it = s.events()
    assert [d["seq"] for e, _, d in parse_events([next(it), next(it)]) if e == "frame"] == [4, 5, 6, 7, 8]
    s.publish(frame(9, t=30.0))  # 22 s later: only the last 10 s stay
    it = s.events()
    assert [d["seq"] for e, _, d in parse_events([next(it), next(it)]) if e == "frame"] == [9]


def test_close_wakes_a_waiting_stream():
    s = EventStream({}, keepalive_s=3600)
    it = s.events()
    next(it)
    done = threading.Event()
    t = threading.Thread(target=lambda: (list(it), done.set()), daemon=True)
    t.start()
    s.close()
    t.join(30)
    assert done.is_set()


# -------------------------------------------------------------------------------- the real server

class RunningDashboard(RunningExporter):
    """``ebpf-energy dashboard --listen LISTEN ARGS`` in the background."""

    def __init__(self, *args, listen="127.0.0.1:0"):
        super().__init__(*args, command="dashboard", listen=listen)

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            return r.status, r.headers, r.read()


def read_events(base, n_frames, last_id=None):
    """The first ``n_frames`` frames of /events (after the hello)."""
    req = urllib.request.Request(base + "/events", headers={"Last-Event-ID": last_id} if last_id else {})
    got, buf = [], b""
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        while sum(1 for e in got if e[0] == "frame") < n_frames:
            buf += r.read1(65536)
            *blocks, rest = buf.split(b"\n\n")
            got += parse_events([b + b"\n\n" for b in blocks])
            buf = rest
    return got


@pytest.mark.kernel
def test_one_port_serves_page_files_metrics_and_events_and_sigterm_stops_it_clean():
    with RunningDashboard("--interval", "0.2", "--top", "4", "-p", "10") as d:
        held = {k: set(v) for k, v in fdinfo_ids(d.proc.pid).items()}
        assert held["prog"] and held["map"] and held["link"]
        status, headers, body = d.get("/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert body == static_file("index.html") and b"static/uPlot.iife.min.js" in body
        for name, ctype in STATIC.items():
            if name != "index.html":
                status, headers, body = d.get(f"/static/{name}")
                assert (status, headers["Content-Type"], body) == (200, ctype, static_file(name))
        assert b"MIT License" in static_file("uPlot.LICENSE") and b"uPlot" in static_file("uPlot.iife.min.js")
        status, headers, body = d.get("/metrics")
        assert status == 200 and b"ebpf_energy_process_joules_total" in body
        events = read_events(d.base, 3)
        hello = events[0]
        assert hello[0] == "hello" and hello[2]["by"] == "process" and hello[2]["top"] == 4
        frames = [e for e in events if e[0] == "frame"]
        seqs = [f[2]["seq"] for f in frames]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        for _, eid, f in frames:
            assert eid == f"{hello[2]['run']}:{f['seq']}" and len(f["rows"]) <= 4
            assert f["model"]["name"] == "fixed" and f["model"]["watts_per_cpu"] == 10.0
            assert math.fsum([r["w"] for r in f["rows"]] + [f["other"]["w"], f["idle"]["w"]]) == \
                pytest.approx(f["total"]["w"], rel=1e-9)
        # a page that reconnects with the last id it saw gets what came after it, nothing twice
        later = [e for e in read_events(d.base, 1, last_id=frames[-1][1]) if e[0] == "frame"]
        assert later[0][2]["seq"] == seqs[-1] + 1
        with pytest.raises(urllib.error.HTTPError) as e:
            d.get("/nope")
        assert e.value.code == 404
        rc = d.stop()
    assert rc == -signal.SIGTERM, "".join(d.lines)
    assert_gone(held)


@pytest.mark.kernel
def test_sigint_with_a_page_connected_stops_it_clean():
    with RunningDashboard("--interval", "0.2") as d:
        held = {k: set(v) for k, v in fdinfo_ids(d.proc.pid).items()}
        req = urllib.request.urlopen(d.base + "/events", timeout=60)
        try:
            req.read1(4096)  # the stream is open (the hello at least arrived)
            rc = d.stop(signal.SIGINT)
            assert req.read() is not None  # the server ended the stream: no hang
        finally:
            req.close()
    assert rc == -signal.SIGINT, "".join(d.lines)
    assert_gone(held)


BAD = [
    ["--interval", "nan"], ["--interval", "0.01"], ["--interval", "inf"], ["--top", "0"], ["--top", "x"],
    ["--top", "100001"], ["--linger", "-1"], ["--max-tasks", "99999999999"], ["--listen", "nowhere"],
    ["--listen", "127.0.0.1:99999"], ["-p", "nan"],
]


@pytest.mark.parametrize("args", BAD, ids=lambda a: " ".join(a))
def test_bad_options_get_the_exporters_one_line_errors(args):
    def run(command):
        r = subprocess.run([sys.executable, "-m", "ebpf_energy", command, *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        return r.returncode, r.stderr.replace(command, "CMD")

    dash, exp = run("dashboard"), run("exporter")
    assert dash == exp and dash[0] in (1, 2)
    assert "Traceback" not in dash[1] and dash[1].strip().splitlines()[-1].count("\n") == 0


def test_bad_by_is_refused():
    r = subprocess.run([sys.executable, "-m", "ebpf_energy", "dashboard", "--by", "thread"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "'thread' is not one of 'process', 'cgroup', 'container'" in r.stderr


def test_default_listen_is_loopback():
    from ebpf_energy.commands.dashboard import DEFAULT_LISTEN

    assert DEFAULT_LISTEN.startswith("127.0.0.1:")
