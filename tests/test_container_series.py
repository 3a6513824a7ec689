"""Container, pod and service series: the group ledger's rules (pure), the
reports' top N + other, and the cardinality bound with 1,000 runtime-named
cgroups on the real kernel, in process and through a running exporter."""

import json
import os
import time

import pytest
from hypothesis import given, settings, strategies as st

from ebpf_energy.containers import Resolver
from ebpf_energy.exporter import Exporter
from ebpf_energy.group_series import GroupLedger
from ebpf_energy.model.base import Attribution
from ebpf_energy.model.fixed import FixedWattsModel
from ebpf_energy.report import build_report, fold_groups, limit, render_csv, render_table
from ebpf_energy.usage import ProcessUsage, UsageWindow

from test_containers import own_cgroup_dir  # noqa: F401 (a fixture)


def cid(i):
    """A container id whose first 12 characters (the series label) tell it apart."""
    return f"{i:012x}" + "c" * 52


def window(procs):
    """{pid: (cgroup, cpu_ns)} -> a window; 1 W: joules = CPU seconds."""
    ps = {pid: ProcessUsage(pid, f"p{pid}", cpu, cgroup=cg) for pid, (cg, cpu) in procs.items()}
    return UsageWindow("test", 0, 1, 1, ps)


def att_for(w):
    return Attribution({pid: p.cpu_ns / 1e9 for pid, p in w.processes.items()}, 0.0, {"name": "t"})


def scrape(lg):
    return {labels: (round(cpu * 1e9), j) for labels, cpu, j in lg.rows()}


def increments(a, b):
    """What ``increase()`` sees between two scrapes: series in both, by their difference."""
    return {k: (b[k][0] - a[k][0], b[k][1] - a[k][1]) for k in b if k in a}


def test_top_n_other_demotion_and_return(tmp_path):
    lg = GroupLedger("container", top=1, linger_s=10, resolver=Resolver(str(tmp_path)))
    a, b = f"/docker/{cid(1)}", f"/docker/{cid(2)}"
    w = window({1: (a, 3_000_000_000), 2: (b, 1_000_000_000)})
    lg.add(w, att_for(w), set(), 0)
    s = scrape(lg)
    # the first window went to other (nobody had a series yet); a's new series starts at all it spent
    assert s[(cid(1)[:12], "", "", "")] == (3_000_000_000, 3.0)
    assert s[("other", "", "", "")] == (4_000_000_000, 4.0)
    assert len(s) == 2  # top 1 + other: b has no series
    w = window({1: (a, 0), 2: (b, 5_000_000_000)})
    lg.add(w, att_for(w), set(), 1)
    s2 = scrape(lg)
    # b overtook a: b's series starts (baseline), a keeps its value, this window went to other
    assert (cid(1)[:12], "", "", "") not in s2 and s2[(cid(2)[:12], "", "", "")] == (6_000_000_000, 6.0)
    assert s2[("other", "", "", "")] == (9_000_000_000, 9.0)
    w = window({1: (a, 4_000_000_000), 2: (b, 0)})
    lg.add(w, att_for(w), set(), 2)
    s3 = scrape(lg)
    # a is back on top: its series continues from 3 s (no jump), this window in other
    assert s3[(cid(1)[:12], "", "", "")] == (3_000_000_000, 3.0)
    assert s3[("other", "", "", "")] == (13_000_000_000, 13.0)


def test_a_gone_group_lingers_then_goes_and_an_unexported_one_goes_at_once(tmp_path):
    lg = GroupLedger("service", top=1, linger_s=5, resolver=Resolver(str(tmp_path)))
    procs = {1: ("/system.slice/a.service", 2_000_000_000), 2: ("/system.slice/b.service", 1_000_000_000),
             3: ("/system.slice/b.service", 0)}
    w = window(procs)
    lg.add(w, att_for(w), set(), 0)
    w = window({1: procs[1][:1] + (0,), 2: procs[2][:1] + (0,)})
    lg.add(w, att_for(w), {1, 2}, 1)  # a's only process and one of b's two are gone
    assert set(lg.groups) == {("a.service",), ("b.service",)}  # a lingers; b has process 3 left
    w = window({3: ("/system.slice/b.service", 0)})
    lg.add(w, att_for(w), {3}, 2)
    assert set(lg.groups) == {("a.service",)}  # b had no series: gone at once
    lg.add(window({}), att_for(window({})), set(), 6.5)
    assert lg.groups == {} and not lg.member_of


def test_a_pod_is_one_series_by_name_and_an_unnamed_pod_by_its_uid(tmp_path):
    from test_containers import A, U_, UID, runtime_tree

    runtime_tree(tmp_path)
    lg = GroupLedger("pod", top=5, linger_s=5, resolver=Resolver(str(tmp_path)))
    other_uid = "0" * 8 + UID[8:]
    procs = {1: (f"/kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{A}.scope", 10),
             2: (f"/kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{'e' * 64}.scope", 10),
             3: (f"/kubepods/pod{other_uid}/{'f' * 64}", 10), 4: ("/system.slice/x.service", 10)}
    w = window(procs)
    lg.add(w, att_for(w), set(), 0)
    lg.add(window({}), att_for(window({})), set(), 1)
    assert set(lg.groups) == {("shop-7d9", "prod"), (other_uid, ""), ("", "")}
    assert lg.groups[("shop-7d9", "prod")].cpu_ns == 20


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.integers(1, 30), st.tuples(st.integers(0, 12), st.integers(0, 10**9)),
                                max_size=20), min_size=1, max_size=12),
       st.integers(1, 4), st.lists(st.integers(1, 30), max_size=10))
def test_counters_never_go_back_and_increments_add_up_exactly(steps, top, dying):
    lg = GroupLedger("container", top=top, linger_s=1.5, resolver=Resolver("/nonexistent"))
    prev = scrape(lg)
    for i, step in enumerate(steps):
        w = window({pid: (f"/docker/{cid(g)}" if g else "/", cpu) for pid, (g, cpu) in step.items()})
        gone = {p for p in dying[i::len(steps)] if p in step}
        lg.add(w, att_for(w), gone, float(i))
        now = scrape(lg)
        assert len(now) <= top + 1
        inc = increments(prev, now)
        assert all(c >= 0 and j >= -1e-12 for c, j in inc.values()), "a counter went backwards"
        # every nanosecond of the window is in exactly one series' increase
        assert sum(c for c, _ in inc.values()) == w.total_cpu_ns
        assert sum(j for _, j in inc.values()) == pytest.approx(w.total_cpu_ns / 1e9, abs=1e-9)
        prev = now


def test_reports_fold_the_rest_into_other_and_still_add_up(tmp_path):
    procs = {pid: (f"/docker/{cid(pid % 7)}" if pid % 7 else "/", pid * 1_000_000) for pid in range(1, 50)}
    w = window(procs)
    rep = build_report(w, att_for(w), by="container", resolver=Resolver(str(tmp_path)))
    assert len(rep["containers"]) == 7
    cut = limit(rep, 3)["containers"]
    assert [g["container_id"] for g in cut][-1] == "other" and cut[-1]["groups"] == 4 and len(cut) == 4
    assert sum(g["cpu_ns"] for g in cut) == rep["total_cpu_ns"] == sum(p["cpu_ns"] for p in rep["processes"])
    assert sum(g["processes"] for g in cut) == 49
    assert fold_groups(rep["containers"], 7, "container") == rep["containers"]
    table = render_table(rep, "container", 3)
    assert "\nother " in table and "more (use --top" not in table
    lines = render_csv(limit(rep, 3), "container").splitlines()
    rows = [ln.split(",") for ln in lines[1:]]
    assert [r[-2] for r in rows].count("container") == 3 and [r[-2] for r in rows].count("other") == 1
