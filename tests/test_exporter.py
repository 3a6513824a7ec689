"""The Prometheus exporter: the ledger's rules, the real sampler's bounded
memory, /metrics scraped directly, a real Prometheus server scraping it, the
simulated RAPL meter, and the clear errors (no root, no prometheus_client,
bad --listen, busy port)."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from ebpf_energy.exporter import Exporter, ExporterError, Ledger, parse_listen
from ebpf_energy.monitor import EbpfSampler
from ebpf_energy.model.base import Attribution
from ebpf_energy.model.fixed import FixedWattsModel
from ebpf_energy.usage import ProcessUsage, UsageWindow

from test_load_cli import fdinfo_ids
from test_object import assert_gone

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = "/usr/bin/prometheus"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


# -------------------------------------------------------------------------------- the ledger (pure)

def window(procs, idle_ns=0):
    """A usage window of {pid: (cpu_ns, comm)}; energy = cpu seconds (1 W)."""
    ps = {pid: ProcessUsage(pid, comm, cpu) for pid, (cpu, comm) in procs.items()}
    return UsageWindow("test", 0, 1, 1, ps, idle_ns=idle_ns, idle_ns_per_cpu=[idle_ns])


def charge(ledger, procs, gone=(), now=0.0, idle_j=0.0):
    w = window(procs)
    att = Attribution({pid: cpu / 1e9 for pid, (cpu, _) in procs.items()}, idle_j, {"name": "t"})
    ledger.add(w, att, None, set(gone), now)


def series(ledger):
    return {s.pid: s.series_j for s in ledger.exported()}


def test_ledger_top_n_demotion_goes_to_other_and_return_continues():
    lg = Ledger(top=2, linger_s=10)
    charge(lg, {1: (3e9, "a"), 2: (2e9, "b"), 3: (1e9, "c")})
    # first window: nobody was exported yet, so all of it went to other; the top two
    # now start their series at what they spent
    assert series(lg) == {1: 3.0, 2: 2.0} and lg.other_j == 6.0
    # c (not exported) puts 5 J in other and passes b, which leaves the top N in
    # this same window: b's 1 J was never shown on its series, so it goes to other
    # too and b's series keeps the 2.0 last shown
    charge(lg, {3: (5e9, "c"), 2: (1e9, "b")})
    assert series(lg) == {1: 3.0, 3: 6.0} and lg.other_j == 6.0 + 5.0 + 1.0
    charge(lg, {2: (4e9, "b")})  # b spends while out: other gets it, then b (7 J) is back on top
    assert lg.other_j == 16.0
    assert series(lg) == {2: 2.0, 3: 6.0}  # b's series continues where it left (2.0), no jump
    charge(lg, {2: (1e9, "b")})
    assert series(lg)[2] == 3.0


def test_ledger_exited_linger_then_drop():
    lg = Ledger(top=1, linger_s=5)
    charge(lg, {1: (2e9, "big"), 2: (1e9, "small")}, now=99.0)
    charge(lg, {1: (1e9, "big"), 2: (1e9, "small")}, gone={1, 2}, now=100.0)
    assert series(lg) == {1: 3.0} and 2 not in lg.procs  # not exported: dropped at once
    assert lg.other_j == 4.0
    charge(lg, {}, now=104.0)
    assert series(lg) == {1: 3.0}  # still lingering: a scrape will see its final value
    charge(lg, {}, now=105.0)
    assert series(lg) == {} and lg.procs == {}
    charge(lg, {1: (1e9, "reused")}, now=106.0)  # the pid reused: a fresh process
    assert lg.procs[1].comm == "reused" and lg.procs[1].joules == 1.0


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.dictionaries(st.integers(1, 12), st.integers(0, 5), max_size=8),
                          st.sets(st.integers(1, 12), max_size=3)), min_size=1, max_size=25),
       st.integers(1, 4))
def test_ledger_counters_monotonic_and_rate_sums_complete(steps, top):
    """Whatever runs and exits, a series never goes down (also when it comes
    back to the top N), at most ``top`` exist at once, and summing increases
    the way Prometheus does (a new series' first value is its baseline) gives
    exactly the joules attributed: each one counted once, in a series or in
    ``other``."""
    lg = Ledger(top=top, linger_s=2)
    generation = {}  # a pid that is gone and shows up again is another process
    last, other_last, attributed, increases = {}, 0.0, 0.0, 0.0
    for i, (procs, gone) in enumerate(steps):
        procs = {pid: (cpu * 1e9, f"p{pid}.{generation.get(pid, 0)}") for pid, cpu in procs.items()}
        charge(lg, procs, gone=gone, now=float(i))
        for pid in gone:
            generation[pid] = generation.get(pid, 0) + 1
        attributed += sum(c for c, _ in procs.values()) / 1e9
        now = {(s.pid, s.comm): s.series_j for s in lg.exported()}
        assert len(now) <= top
        for key, v in now.items():
            if key in last:
                assert v >= last[key] - 1e-9
                increases += v - last[key]
        last.update(now)
        assert lg.other_j >= other_last
        increases += lg.other_j - other_last
        other_last = lg.other_j
    assert increases == pytest.approx(attributed, abs=1e-6)


def test_parse_listen():
    assert parse_listen("127.0.0.1:9877") == ("127.0.0.1", 9877)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9877", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(ExporterError, match="HOST:PORT"):
            parse_listen(bad)


# -------------------------------------------------------------------------------- the real thing

class RunningExporter:
    """``ebpf-energy COMMAND --listen LISTEN ARGS`` in the background (the
    exporter, or the dashboard that serves the same /metrics)."""

    def __init__(self, *args, env=None, command="exporter", listen="127.0.0.1:0"):
        self.proc = subprocess.Popen([sys.executable, "-m", "ebpf_energy", command, "--listen", listen,
                                      *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, **(env or {})))
        self.lines = []
        self.url = self.base = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.lines.append(line)
                m = re.search(r"serving (http://[^/\s]+)/", line)
                if m:
                    self.base, self.url = m.group(1), m.group(1) + "/metrics"
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(60) or self.url is None:
            self.stop(signal.SIGKILL)
            raise AssertionError(f"the {command} did not start: " + "".join(self.lines))
        self.port = int(self.base.rsplit(":", 1)[1])

    def scrape(self):
        """{name: (type, {frozenset(labels): value})} from the exposition text."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.url, timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = r.read().decode()
        self.last_text = text
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out.setdefault(s.name, (fam.type, {}))[1][frozenset(s.labels.items())] = s.value
        return out

    def wait_refreshes(self, n, first=None):
        """Scrape until ``n`` more refreshes happened than in ``first``."""
        base = value(first, "ebpf_energy_refreshes_total") if first else 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = self.scrape()
            if value(m, "ebpf_energy_refreshes_total") >= base + n:
                return m
            time.sleep(0.1)
        raise AssertionError("the exporter stopped refreshing")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop(signal.SIGKILL if exc[0] else signal.SIGTERM)


def value(metrics, name, **labels):
    samples = metrics[name][1]
    return samples[frozenset(labels.items())]


def process_series(metrics, name="ebpf_energy_process_joules_total"):
    return {dict(k)["pid"]: (dict(k), v) for k, v in metrics[name][1].items()}


def busy_children(n, seconds):
    """``n`` processes burning CPU for ``seconds`` each (with sleeps, to leave room on 2 cores)."""
    code = ("import time\nend=time.monotonic()+%r\nwhile time.monotonic()<end:\n"
            " t=time.monotonic()+0.01\n while time.monotonic()<t: pass\n time.sleep(0.01)\n" % seconds)
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


@pytest.mark.kernel
def test_metrics_names_labels_monotonic_top_n_and_clean_exit():
    kids = busy_children(4, 2.5)
    try:
        with RunningExporter("--top", "3", "--interval", "0.3", "-p", "10") as ex:
            held = {k: set(v) for k, v in fdinfo_ids(ex.proc.pid).items()}
            assert held["prog"] and held["map"] and held["link"]
            a = ex.wait_refreshes(2)
            b = ex.wait_refreshes(2, a)
            rc = ex.stop()
    finally:
        for k in kids:
            k.kill()
            k.wait()
    assert rc == -signal.SIGTERM, "".join(ex.lines)  # dies by the signal: a shell sees 143
    assert_gone(held)  # SIGTERM left nothing of the exporter's loaded
    # naming conventions, on the raw text: our prefix, snake case, base units
    for line in ex.last_text.splitlines():
        if line.startswith("#"):
            continue
        name, labels, _ = SAMPLE.match(line).groups()
        assert re.fullmatch(r"ebpf_energy_[a-z_]+", name), name
        assert not re.search(r"_(ms|ns|kj|mj|watts?)(_|$)", name), name
        if labels:
            assert LABEL.sub("", labels).strip(",") == "", labels
    for m in (a, b):
        types = {name: t for name, (t, _) in m.items()}
        for name in ("ebpf_energy_process_cpu_seconds_total", "ebpf_energy_process_joules_total",
                     "ebpf_energy_idle_joules_total", "ebpf_energy_joules_total", "ebpf_energy_dropped_total",
                     "ebpf_energy_refreshes_total"):
            assert types[name] == "counter", name
        assert types["ebpf_energy_model_info"] == "gauge"  # info metrics are gauges of 1 in the text format
        assert types["ebpf_energy_window_conservation_error_ratio"] == "gauge"
        assert "ebpf_energy_package_joules_total" not in m  # no meter: no package series
        assert {dict(k)["kind"] for k in m["ebpf_energy_dropped_total"][1]} == {"tasks", "events"}
        (info,) = m["ebpf_energy_model_info"][1]
        assert dict(info)["name"] == "fixed" and dict(info)["measured"] == "false" and \
            dict(info)["watts_per_cpu"] == "10.0"
        procs = process_series(m)
        cpus = process_series(m, "ebpf_energy_process_cpu_seconds_total")
        assert set(procs) == set(cpus)
        assert len(procs) == 4 and "other" in procs  # the top 3 plus other: the machine runs more than 3
        for pid, (labels, j) in procs.items():
            assert set(labels) == {"pid", "comm", "cgroup"}
            assert pid == "other" or (pid.isdigit() and labels["cgroup"].startswith("/") and labels["comm"])
            assert j == pytest.approx(10 * cpus[pid][1], rel=1e-9)  # fixed 10 W per CPU-second
        assert abs(value(m, "ebpf_energy_window_conservation_error_ratio")) < 1e-9
        assert value(m, "ebpf_energy_window_total_joules") > 0
    # counters never go backwards; everything attributed keeps growing
    for name in ("ebpf_energy_process_cpu_seconds_total", "ebpf_energy_process_joules_total",
                 "ebpf_energy_idle_joules_total", "ebpf_energy_joules_total", "ebpf_energy_dropped_total",
                 "ebpf_energy_idle_cpu_seconds_total"):
        for labels, v in a[name][1].items():
            if labels in b[name][1]:
                assert b[name][1][labels] >= v, (name, dict(labels))
    assert value(b, "ebpf_energy_joules_total") > value(a, "ebpf_energy_joules_total")
    assert process_series(b)["other"][1] > process_series(a)["other"][1]
    # the books: processes + idle of the last window are what the model says the window cost
    w = b
    assert value(w, "ebpf_energy_window_process_joules") + value(w, "ebpf_energy_window_idle_joules") == \
        pytest.approx(value(w, "ebpf_energy_window_total_joules"), rel=1e-9)


def _spin(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.kernel
def test_memory_stays_bounded_and_no_cpu_is_lost():
    """Real kernel, in process: 30 short processes come and go and 60 threads
    of this process come and go; afterwards neither the ledger nor the sampler
    holds them, yet every CPU-nanosecond they spent was charged (rusage and
    this process's CPU clock are the truth)."""
    sampler = EbpfSampler(max_tasks=4096)
    ex = Exporter(sampler, FixedWattsModel(10), top=2, linger_s=0)
    seen_cpu = {}
    add = ex.ledger.add

    def spy(window, att, meter_j, gone, now):  # what each window charged, per pid
        for pid, p in window.processes.items():
            seen_cpu[pid] = seen_cpu.get(pid, 0) + p.cpu_ns
        return add(window, att, meter_j, gone, now)

    ex.ledger.add = spy
    me = os.getpid()
    ex.start()
    try:
        ex.refresh()  # the first window holds the load itself: start counting after it
        seen_cpu.clear()
        t0 = time.process_time_ns()
        kids, truth = [], {}
        for i in range(30):
            pid = os.fork()
            if pid == 0:
                _spin(0.004)
                os._exit(0)
            kids.append(pid)
            if i % 10 == 9:
                ex.refresh()  # some refreshes while they come and go
        for pid in kids:
            _, status, ru = os.wait4(pid, 0)
            truth[pid] = int((ru.ru_utime + ru.ru_stime) * 1e9)
        for i in range(60):
            th = threading.Thread(target=_spin, args=(0.002,))
            th.start()
            th.join()
            if i % 20 == 19:
                ex.refresh()
        time.sleep(0.05)
        ex.refresh()
        ex.refresh()
        t1 = time.process_time_ns()
        held = sampler.held_records()
    finally:
        ex.stop()
    assert not set(kids) & set(ex.ledger.procs), "exited processes stay in the ledger"
    assert not set(kids) & {t.tgid or t.tid for t in held.values()}, "the sampler still holds exited processes"
    mine = [k for k, t in held.items() if (t.tgid or abs(t.tid)) == me]
    assert len(mine) <= 1, f"dead threads of a live process are not merged: {len(mine)} records"
    assert ex.snapshot.tracked == len(ex.ledger.procs) and ex.snapshot.sampler_held == len(held)
    # nothing lost, nothing counted twice (a kid forgotten too early and seen
    # again would count about twice; the monitor itself is occasionally a few
    # hundred us to ~3 ms over rusage on one kid, whatever the exporter does)
    for pid in kids:
        assert truth[pid] * 0.99 - 200_000 <= seen_cpu.get(pid, 0) < truth[pid] * 1.9, pid
    assert sum(seen_cpu.get(p, 0) for p in kids) == pytest.approx(sum(truth.values()), rel=0.03, abs=5_000_000)
    # this process, threads merged away included: nothing lost, nothing twice
    assert seen_cpu[me] <= t1 - t0 + 5_000_000
    assert seen_cpu[me] >= 0.95 * (t1 - t0) - 5_000_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prom_query(port, query):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.kernel
def test_a_real_prometheus_scrapes_our_series(tmp_path):
    assert os.access(PROMETHEUS, os.X_OK), "the Debian package prometheus is needed (apt install prometheus)"
    with RunningExporter("--top", "4", "--interval", "0.5", "-p", "10") as ex:
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: ebpf-energy\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{ex.port}']\n")
        port = free_port()
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            result, up = [], []
            while time.monotonic() < deadline:
                assert prom.poll() is None, prom.stderr.read().decode()[-2000:]
                try:
                    result = prom_query(port, "ebpf_energy_process_joules_total")
                    up = prom_query(port, 'up{job="ebpf-energy"}')
                except OSError:
                    result = []
                if result and up:
                    break
                time.sleep(0.3)
            assert result, "Prometheus never stored our series"
            assert up[0]["value"][1] == "1"  # its scrape of our /metrics succeeded
            pids = set()
            for r in result:
                m = r["metric"]
                assert m["__name__"] == "ebpf_energy_process_joules_total" and m["job"] == "ebpf-energy"
                assert {"pid", "comm", "instance"} <= set(m)
                assert m["pid"] == "other" or m["cgroup"].startswith("/")  # Prometheus drops empty labels
                assert float(r["value"][1]) >= 0
                pids.add(m["pid"])
            assert "other" in pids and len(pids) <= 5
            info = prom_query(port, "ebpf_energy_model_info")
            assert info and info[0]["metric"]["name"] == "fixed"
        finally:
            prom.terminate()
            try:
                prom.wait(timeout=10)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
            prom.stderr.close()


@pytest.mark.kernel
def test_simulated_meter_package_joules_per_domain():
    from ebpf_energy.rapl.simulated import SimulatedPowercap

    with SimulatedPowercap() as sim:
        with RunningExporter("--interval", "0.3", "--powercap-root", sim.root) as ex:
            a = ex.wait_refreshes(2)
            b = ex.wait_refreshes(2, a)
            assert ex.stop(signal.SIGINT) == -signal.SIGINT, "".join(ex.lines)  # Ctrl-C: a shell sees 130
    for m in (a, b):
        assert m["ebpf_energy_package_joules_total"][0] == "counter"
        domains = {dict(k)["domain"]: v for k, v in m["ebpf_energy_package_joules_total"][1].items()}
        assert set(domains) == {"package", "core", "dram"}
        (info,) = m["ebpf_energy_model_info"][1]
        assert dict(info)["name"] == "rapl" and dict(info)["measured"] == "true"
        # RAPL-split: processes + idle are the measured package joules, window by window and in total
        assert value(m, "ebpf_energy_joules_total") == pytest.approx(domains["package"], rel=1e-9)
        assert abs(value(m, "ebpf_energy_window_conservation_error_ratio")) < 1e-9
        assert value(m, "ebpf_energy_window_total_joules") > 0
    da = {dict(k)["domain"]: v for k, v in a["ebpf_energy_package_joules_total"][1].items()}
    db = {dict(k)["domain"]: v for k, v in b["ebpf_energy_package_joules_total"][1].items()}
    assert all(db[d] > da[d] for d in da)
    # the simulated package draws at least its idle watts (8 W) over the time between scrapes
    stamp = "ebpf_energy_last_refresh_timestamp_seconds"
    gap = value(b, stamp) - value(a, stamp)
    assert db["package"] - da["package"] >= 8.0 * gap * 0.8


# -------------------------------------------------------------------------------- clear errors

def test_missing_prometheus_client_says_how_to_get_it(monkeypatch):
    from click.testing import CliRunner

    from ebpf_energy.commands.exporter import exporter
    from ebpf_energy.exporter import require_prometheus_client

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import now raises ImportError
    with pytest.raises(ExporterError, match=r"pip install 'ebpf-energy\[exporter\]'"):
        require_prometheus_client()
    r = CliRunner().invoke(exporter, ["-p", "10"])
    assert r.exit_code == 1 and "prometheus_client" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("listen", ["9877", "localhost:http", "[::1]:70000"])
def test_bad_listen_is_a_clear_error(listen):
    r = subprocess.run([sys.executable, "-m", "ebpf_energy", "exporter", "--listen", listen, "-p", "10"], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    # a usage error, as every bad option value: exit 2, one line
    assert r.returncode == 2 and "'--listen': wants HOST:PORT" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.kernel
@pytest.mark.parametrize("command", ["exporter", "dashboard"])  # one loop, one order: bind, then load
def test_busy_port_fails_before_loading_anything(command):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "ebpf_energy", command, "--listen", f"127.0.0.1:{port}",
                            "-p", "10", "--explain"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.endswith(f"ebpf-energy {command}: cannot listen on 127.0.0.1:{port}: "
                                                   "Address already in use\n")
    assert "Traceback" not in r.stderr and "[syscall" not in r.stderr  # --explain: no bpf() call was made


@pytest.mark.kernel
def test_without_root_says_so(tmp_path):
    """Dropped to nobody for real: one sentence, exit 1, nothing loaded."""
    import click
    import prometheus_client

    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop privilege"
    base = Path(tempfile.mkdtemp(prefix="ebpf-energy-nobody-"))
    try:
        for mod in (ROOT / "ebpf_energy", Path(click.__file__).parent, Path(prometheus_client.__file__).parent):
            shutil.copytree(mod, base / mod.name, ignore=shutil.ignore_patterns("__pycache__"))
        for d, dirs, files in os.walk(base):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
        r = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                            "--bounding-set=-all", sys.executable, "-m", "ebpf_energy", "exporter", "-p", "10"],
                           capture_output=True, text=True, cwd=str(base), timeout=30,
                           env={"PATH": os.environ["PATH"], "PYTHONPATH": str(base), "HOME": "/nonexistent"})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert r.returncode == 1, r.stderr
    assert "needs root" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.kernel
def test_a_meter_lost_during_a_long_run_does_not_stop_the_exporter():
    """A zone's energy_uj vanishes between refreshes: the exporter keeps
    refreshing on the fallback model, and says the meter was lost (it used to
    die with a traceback, and scrapes got 'connection refused')."""
    from ebpf_energy.model.select import choose_model
    from ebpf_energy.rapl.simulated import SimulatedPowercap

    with SimulatedPowercap() as sim:
        model, meter = choose_model(powercap_root=sim.root)
        ex = Exporter(EbpfSampler(), model, meter)
        ex.start()
        try:
            first = ex.refresh()
            assert first.model["name"] == "rapl"
            sim.stop()
            os.remove(os.path.join(sim.zone_dir(1), "energy_uj"))
            later = [ex.refresh() for _ in range(3)]
        finally:
            ex.stop()
            meter.close()
    assert all("meter failed during the run" in s.model.get("meter_lost", "") for s in later)
    assert later[-1].refreshes == 4 and later[-1].model["name"] == "fixed"


@pytest.mark.kernel
def test_head_metrics_answers_like_get_without_a_body():
    """Health checks send HEAD: it got 405."""
    ex = RunningExporter("-p", "10")
    try:
        req = urllib.request.Request(ex.url, method="HEAD")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain") and r.read() == b""
    finally:
        ex.stop()


@pytest.mark.kernel
def test_the_grafana_dashboard_asks_only_for_what_the_exporter_serves():
    """Every PromQL expression in deploy/grafana-dashboard.json names metrics,
    and labels, that a running exporter really serves (instance and job are
    Prometheus's own), so the dashboard cannot drift from the code."""
    dash = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    ex = RunningExporter("-p", "10")
    try:
        ex.wait_refreshes(1)
        ex.scrape()
        served = {}
        from prometheus_client.parser import text_string_to_metric_families

        for fam in text_string_to_metric_families(ex.last_text):
            for smp in fam.samples:
                served.setdefault(smp.name, set()).update(smp.labels)
    finally:
        ex.stop()
    exprs = [(p["title"], t) for p in dash["panels"] for t in p["targets"]]
    exprs.append(("$instance", {"expr": dash["templating"]["list"][1]["query"], "legendFormat": ""}))
    assert len(exprs) >= 8
    for title, t in exprs:
        names = re.findall(r"\bebpf_energy_[a-z_]+", t["expr"])
        assert names, f"{title}: {t['expr']!r} names no metric of ours"
        for name in names:
            if name == "ebpf_energy_package_joules_total" and name not in served:
                continue  # served only with a RAPL meter (none here): the dashboard's panel stays empty
            assert name in served, f"{title}: {name} is not served (served: {sorted(served)})"
        labels = set(re.findall(r"by \(([^)]*)\)", t["expr"]))
        used = {x.strip() for group in labels for x in group.split(",")}
        used |= set(re.findall(r"([a-z_]+)\s*=~?\s*\"", t["expr"]))
        used |= set(re.findall(r"\{\{(\w+)\}\}", t.get("legendFormat", "")))
        have = set().union(*(served.get(n, set()) for n in names)) | {"instance", "job"}
        if not all(n in served for n in names):
            have |= {"domain"}
        assert used <= have, f"{title}: labels {used - have} are not on {names}"
