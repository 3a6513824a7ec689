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

from ebpf_energy.exporter import CompactingSampler, Exporter, ExporterError, Ledger, parse_listen
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
