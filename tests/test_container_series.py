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


# ------------------------------------------------------------------ the real kernel

def _child_in(cgroup_dir):
    """Fork a child that joins ``cgroup_dir``, runs ~0.2 ms of CPU there and exits."""
    pid = os.fork()
    if pid == 0:
        try:
            with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
                f.write("0")
            end = time.thread_time() + 0.0002
            while time.thread_time() < end:
                pass
        finally:
            os._exit(0)
    return pid


@pytest.mark.kernel
def test_a_thousand_containers_stay_within_the_bound(own_cgroup_dir, tmp_path):  # noqa: F811
    """1,000 cgroups named as Docker names them (under this test's own cgroup),
    a short process in each, named from a runtime tree: the exporter's
    container series never number more than top N + other, every refresh's
    increments add up to the CPU the processes spent (exact, in ns), the
    report folds the rest into ``other`` with the same sums, and once the
    containers are gone the ledger holds none of them."""
    mount, base = own_cgroup_dir
    n, top = 1000, 10
    dirs = []
    for i in range(n):
        d = base / f"docker-{cid(i + 1)}.scope"
        d.mkdir()
        dirs.append(str(d))
        conf = tmp_path / "var/lib/docker/containers" / cid(i + 1) / "config.v2.json"
        conf.parent.mkdir(parents=True)
        conf.write_text(json.dumps({"Name": f"/c-{i + 1:04d}"}))
    from ebpf_energy.monitor import EbpfSampler

    ex = Exporter(EbpfSampler(max_tasks=8192), FixedWattsModel(10), top=top, linger_s=0, by="container",
                  resolver=Resolver(str(tmp_path)))
    lg = ex.groups
    checked = {"windows": 0, "containers": set(), "named": set()}
    add = lg.add

    def check(w, att, gone, now):
        before = scrape(lg)
        add(w, att, gone, now)
        after = scrape(lg)
        assert len(after) <= top + 1
        inc = increments(before, after)
        assert sum(c for c, _ in inc.values()) == w.total_cpu_ns
        rep = limit(build_report(w, att, by="container", resolver=lg.resolver), top)
        assert len(rep["containers"]) <= top + 1
        assert sum(g["cpu_ns"] for g in rep["containers"]) == w.total_cpu_ns
        assert sum(g["processes"] for g in rep["containers"]) == len(w.processes)
        for p in w.processes.values():
            labels = lg.labels(p.cgroup)
            if labels[0]:
                checked["containers"].add(labels[0])
                checked["named"].add(labels[1])
        checked["windows"] += 1

    lg.add = check
    ex.start()
    try:
        ex.refresh()
        for i, d in enumerate(dirs):
            os.waitpid(_child_in(d), 0)
            if i % 250 == 249:
                ex.refresh()
        ex.refresh()
        ex.refresh()
    finally:
        ex.stop()
    assert checked["windows"] >= 6
    assert len(checked["containers"]) == n, "not every container was seen"
    assert checked["named"] == {f"c-{i + 1:04d}" for i in range(n)}
    assert len(ex.snapshot.groups) <= top + 1
    left = [g.labels for g in lg.groups.values() if g.labels[0]]
    assert left == [], f"gone containers still held: {left[:3]}"


@pytest.mark.kernel
def test_the_exporter_serves_container_and_pod_series_with_names(own_cgroup_dir, tmp_path):  # noqa: F811
    """A running ``exporter --by container`` (and ``--by pod``) with burners in a
    containerd-under-kubepods cgroup and a Docker one: their series carry the
    names from the runtime tree, and grow."""
    import subprocess
    import sys

    from test_containers import A, BURN, U_, runtime_tree
    from test_exporter import RunningExporter, value

    mount, base = own_cgroup_dir
    c = runtime_tree(tmp_path)
    pod = base / "kubepods.slice" / f"kubepods-burstable-pod{U_}.slice"
    dirs = [pod / f"cri-containerd-{A}.scope", base / f"docker-{c}.scope"]
    for d in dirs:
        d.mkdir(parents=True)
    kids = [subprocess.Popen([sys.executable, "-c", BURN], preexec_fn=lambda d=d: (d / "cgroup.procs").write_text("0"))
            for d in dirs]
    try:
        for by, series in (("container", {("container_id", A[:12]), ("container", "web"), ("pod", "shop-7d9"),
                                          ("namespace", "prod")}),
                           ("pod", {("pod", "shop-7d9"), ("namespace", "prod")})):
            with RunningExporter("--by", by, "--runtime-root", str(tmp_path), "--top", "5", "--interval", "0.3",
                                 "-p", "10") as ex:
                first = ex.wait_refreshes(2)
                m = ex.wait_refreshes(3, first)
            name = f"ebpf_energy_{by}_joules_total"
            assert m[name][0] == "counter"
            assert value(m, name, **dict(series)) > value(first, name, **dict(series)) > 0
            assert len(m[name][1]) <= 5 + 1
            other = {"container": dict(container_id="other", container="", pod="", namespace=""),
                     "pod": dict(pod="other", namespace="")}[by]
            assert value(m, name, **other) >= 0
            if by == "container":
                assert value(m, name, container_id=c[:12], container="cache-1", pod="", namespace="") > 0
    finally:
        for k in kids:
            k.kill()
            k.wait()
