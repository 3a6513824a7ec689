"""The report: JSON keys and conservation, filters, truncation, table and CSV."""

import csv
import io
import json
import math

import pytest

from ebpf_energy.model.calibrated import CalibratedModel
from ebpf_energy.model.fixed import FixedWattsModel
from ebpf_energy.report import (Reporter, Selection, build_report, csv_header, limit, model_sentence,
                                normalize_cgroup, render_csv, render_table)
from ebpf_energy.usage import ProcessUsage, ThreadUsage, UsageWindow

TOP_KEYS = {"schema", "source", "duration_s", "ncpus", "model", "total_cpu_ns", "idle_ns", "total_energy_j",
            "idle_energy_j", "domains_j", "dropped", "drops", "samples_or_events", "processes_seen", "processes",
            "window", "steal_ns", "dropped_cpu_ns", "classes", "frequency"}
PROC_KEYS = {"pid", "comm", "cgroup", "cgroup_id", "cpu_ns", "slices", "energy_j", "exited", "cpu_ns_by_class",
             "nspid"}


def window(n=30, source="ebpf"):
    procs = {}
    for i in range(n):
        pid = 1000 + i
        procs[pid] = ProcessUsage(pid=pid, comm=f"p{i}" if i != 3 else "a) (b", cpu_ns=(i * 7919 % 97 + 1) * 1_000_003,
                                  slices=i, exited=i % 5 == 0, cgroup="/team/web" if i % 3 == 0 else "/",
                                  cgroup_id=77 if i % 3 == 0 else 1,
                                  threads=[ThreadUsage(pid, "main", 1_000_000 * (i + 1)),
                                           ThreadUsage(pid + 10_000, "worker", 2_000_000, 3, True)])
    return UsageWindow(source=source, start_ns=0, end_ns=2_000_000_000, ncpus=2, processes=procs,
                       idle_ns=1_500_000_000, idle_ns_per_cpu=[700_000_000, 800_000_000], samples_or_events=20,
                       drops={"tasks": 2, "events": 1})


MODELS = [FixedWattsModel(15.0), CalibratedModel({"idle_watts": 7.0, "watts_per_cpu_second": 11.0})]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_json_keys_and_conservation(model):
    w = window()
    a = model.attribute(w)
    r = build_report(w, a)
    json.loads(json.dumps(r))  # serialisable
    assert set(r) == TOP_KEYS
    assert r["schema"] == 1 and r["source"] == "ebpf"
    assert r["duration_s"] == 2.0 and r["dropped"] == 3 and r["drops"] == {"tasks": 2, "events": 1}
    assert r["model"]["name"] == model.name and r["model"]["measured"] is False
    assert all(set(p) == PROC_KEYS for p in r["processes"])
    assert len(r["processes"]) == 30 == r["processes_seen"]
    assert r["total_cpu_ns"] == sum(p["cpu_ns"] for p in r["processes"])
    # conservation, exactly (fsum is order-independent)
    assert r["total_energy_j"] == math.fsum(p["energy_j"] for p in r["processes"]) + r["idle_energy_j"]
    assert r["total_energy_j"] == pytest.approx(a.total_energy_j, rel=1e-12)
    if model.name == "calibrated":
        assert r["idle_energy_j"] == pytest.approx(14.0)
    energies = [p["energy_j"] for p in r["processes"]]
    assert energies == sorted(energies, reverse=True)
    assert any(p["comm"] == "a) (b" for p in r["processes"])


def test_threads_only_when_asked():
    w = window(3)
    a = FixedWattsModel(10).attribute(w)
    assert "threads" not in build_report(w, a)["processes"][0]
    r = build_report(w, a, threads=True)
    for p in r["processes"]:
        assert {t["tid"] for t in p["threads"]} == {p["pid"], p["pid"] + 10_000}
        assert set(p["threads"][0]) == {"tid", "comm", "cpu_ns", "slices", "energy_j", "exited"}
        for t in p["threads"]:
            assert t["energy_j"] == pytest.approx(p["energy_j"] * t["cpu_ns"] / p["cpu_ns"])
    assert "threads" in build_report(w, a, by="thread")["processes"][0]


def test_filters_keep_the_books_balanced():
    w = window()
    a = CalibratedModel({"idle_watts": 7.0, "watts_per_cpu_second": 11.0}).attribute(w)
    sel = Selection(pids=frozenset({1000, 1003, 1006, 1001}), cgroup="/team")
    r = build_report(w, a, selection=sel)
    assert {p["pid"] for p in r["processes"]} == {1000, 1003, 1006}  # 1001 is in "/"
    om = r["omitted"]
    assert om["processes"] == 27
    assert r["total_cpu_ns"] == sum(p["cpu_ns"] for p in r["processes"]) + om["cpu_ns"]
    assert r["total_energy_j"] == pytest.approx(
        sum(p["energy_j"] for p in r["processes"]) + om["energy_j"] + r["idle_energy_j"], rel=1e-12)
    assert build_report(w, a, selection=Selection(comms=frozenset({"a) (b"})))["processes"][0]["pid"] == 1003
    assert len(build_report(w, a, selection=Selection(cgroup="/")).get("processes")) == 30
    assert not Selection()


def test_selection_cgroup_is_a_subtree():
    s = Selection(cgroup="/a/b")
    assert s.matches(1, "x", "/a/b") and s.matches(1, "x", "/a/b/c")
    assert not s.matches(1, "x", "/a/bc") and not s.matches(1, "x", "/a") and not s.matches(1, "x", None)
    assert normalize_cgroup("/sys/fs/cgroup/unified/a/b/", "/sys/fs/cgroup/unified") == "/a/b"
    assert normalize_cgroup("a/b", "/sys/fs/cgroup") == "/a/b"
    assert normalize_cgroup("/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified") == "/"


def test_limit_adds_truncated_and_keeps_conservation():
    w = window()
    a = FixedWattsModel(15).attribute(w)
    r = build_report(w, a)
    assert limit(r, 30) is r and limit(r, None) is r
    cut = limit(r, 5)
    assert len(cut["processes"]) == 5 and cut["truncated"] == 25
    assert cut["processes"] == r["processes"][:5]
    assert cut["total_energy_j"] == pytest.approx(
        sum(p["energy_j"] for p in cut["processes"]) + cut["omitted"]["energy_j"] + cut["idle_energy_j"])
    assert "truncated" not in r  # the original is untouched


def test_by_cgroup_groups_sum():
    w = window()
    a = FixedWattsModel(15).attribute(w)
    r = build_report(w, a, by="cgroup")
    groups = {g["cgroup"]: g for g in r["cgroups"]}
    assert set(groups) == {"/", "/team/web"}
    assert groups["/team/web"]["processes"] == 10 and groups["/team/web"]["cgroup_id"] == 77
    assert sum(g["cpu_ns"] for g in groups.values()) == r["total_cpu_ns"]
    assert sum(g["energy_j"] for g in groups.values()) == pytest.approx(r["total_energy_j"])
    with pytest.raises(ValueError):
        build_report(w, a, by="bogus")


def test_table_names_the_model_and_cuts_at_top():
    w = window()
    r = build_report(w, FixedWattsModel(15).attribute(w))
    text = render_table(r, top=20)
    lines = text.splitlines()
    assert lines[0].split() == ["PID", "COMM", "CPU", "(ms)", "ENERGY", "(mJ)"]
    assert len([ln for ln in lines[1:21] if ln.split()[0].isdigit()]) == 20
    assert "10 more" in text
    assert "Model:" in text and "modelled, not measured" in text and "watts_per_cpu=15.0" in text
    assert "(exited)" in text and "Idle time:" in text and "Total energy:" in text
    top = r["processes"][0]
    assert lines[1].split()[0] == str(top["pid"])
    assert f"{top['energy_j'] * 1e3:.3f}" in lines[1]
    assert "CGROUP" in render_table(build_report(w, FixedWattsModel(15).attribute(w), by="cgroup"), by="cgroup")
    assert "TID" in render_table(build_report(w, FixedWattsModel(15).attribute(w), by="thread"), by="thread")


def test_model_sentence_says_measured_or_not():
    assert "measured by powercap" in model_sentence({"name": "rapl", "measured": True, "meter": "powercap"})
    s = model_sentence({"name": "calibrated", "measured": False, "profile": "/x/p.json", "idle_watts": 7})
    assert "modelled, not measured" in s and "/x/p.json" in s and "idle_watts=7" in s


@pytest.mark.parametrize("by", ["process", "thread", "cgroup"])
def test_csv_header_and_rows(by):
    w = window()
    r = build_report(w, FixedWattsModel(15).attribute(w), by=by)
    rows = list(csv.reader(io.StringIO(render_csv(r, by))))
    assert rows[0] == csv_header(by, False)
    n = {"process": 30, "thread": 60, "cgroup": 2}[by]
    data = list(csv.DictReader(io.StringIO(render_csv(r, by))))
    kind = {"process": "process", "thread": "thread", "cgroup": "cgroup"}[by]
    assert [d["row"] for d in data][:n] == [kind] * n
    summary = {d["row"]: d for d in data[n:]}
    assert set(summary) <= {"other", "idle", "steal", "dropped", "total"} and len(data) == n + len(summary)
    expect = {"process": r["total_cpu_ns"], "cgroup": r["total_cpu_ns"],
              "thread": sum(t.cpu_ns for p in w.processes.values() for t in p.threads)}[by]
    assert sum(int(d["cpu_ns"]) for d in data[:n]) == expect
    # the lines add up: groups (+ other) = total busy; + idle = total energy; the model is named
    busy = [d for d in data if d["row"] in (kind, "other")]
    assert sum(int(d["cpu_ns"]) for d in busy) == int(summary["total"]["cpu_ns"]) == r["total_cpu_ns"]
    assert int(summary["idle"]["cpu_ns"]) == r["idle_ns"] and int(summary["steal"]["cpu_ns"]) == r["steal_ns"]
    if by != "thread":
        assert sum(float(d["energy_j"]) for d in busy) + float(summary["idle"]["energy_j"]) == \
            pytest.approx(float(summary["total"]["energy_j"]))
    assert summary["total"]["model"].startswith("fixed (watts_per_cpu=15.0)")
    assert all(d["model"] == "" for d in data if d["row"] != "total")
    if by == "process":
        assert any(d["comm"] == "a) (b" for d in data)
        assert "other" not in summary  # every process is listed
    with_iv = list(csv.reader(io.StringIO(render_csv(r, by, interval=3))))
    assert with_iv[0][0] == "interval" and all(row[0] == "3" for row in with_iv[1:])


def test_csv_of_a_top_limited_report_keeps_the_rest_in_other():
    w = window()
    r = limit(build_report(w, FixedWattsModel(15).attribute(w)), 5)
    data = list(csv.DictReader(io.StringIO(render_csv(r))))
    other = [d for d in data if d["row"] == "other"]
    assert len(other) == 1 and other[0]["comm"] == "[other]"
    assert sum(int(d["cpu_ns"]) for d in data if d["row"] in ("process", "other")) == r["total_cpu_ns"]


def test_proc_reports_carry_no_slices():
    """/proc counts no context switches: a 0 there would be a made-up figure."""
    w = window(source="procfs")
    r = build_report(w, FixedWattsModel(15).attribute(w), threads=True, by="cgroup")
    assert all("slices" not in p and all("slices" not in t for t in p["threads"]) for p in r["processes"])
    assert all("slices" not in g for g in r["cgroups"])
    for by in ("process", "cgroup"):
        head = next(csv.reader(io.StringIO(render_csv(r, by))))
        assert "slices" not in head and head == csv_header(by, False, threads=by == "process", slices=False)


def test_reporter_json_lines_and_default_tops():
    w = window()
    a = FixedWattsModel(15).attribute(w)
    out = io.StringIO()
    rep = Reporter(out, fmt="json", intervals=True)
    rep.interval(1, w, a)
    rep.interval(2, w, a)
    rep.summary(w, a, {"overhead_cpu_ns": 5})
    objs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [o.get("interval") for o in objs] == [1, 2, None]
    assert objs[-1]["summary"] is True and objs[-1]["overhead_cpu_ns"] == 5
    assert all(len(o["processes"]) == 30 and "truncated" not in o for o in objs)  # JSON: all by default

    out = io.StringIO()
    Reporter(out, fmt="json", top=4).summary(w, a)
    obj = json.loads(out.getvalue())
    assert len(obj["processes"]) == 4 and obj["truncated"] == 26 and "summary" not in obj

    out = io.StringIO()
    rep = Reporter(out, fmt="csv", intervals=True)
    rep.interval(1, w, a)
    rep.summary(w, a)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0][0] == "interval" and rows.count(rows[0]) == 1  # one header
    assert {r[0] for r in rows[1:]} == {"1", "summary"}

    out = io.StringIO()
    rep = Reporter(out, fmt="table", intervals=True)  # not a tty: no escape codes
    rep.interval(1, w, a)
    rep.summary(w, a)
    assert "\033" not in out.getvalue() and "interval 1" in out.getvalue() and "summary" in out.getvalue()


def test_threads_are_listed_under_their_process_in_the_table_and_the_csv():
    """--threads used to do nothing in the table and the CSV."""
    w = window(3)
    a = FixedWattsModel(10).attribute(w)
    r = build_report(w, a, threads=True)
    lines = render_table(r, top=2).splitlines()
    head = lines[0].split()
    assert head[:3] == ["PID", "TID", "COMM"]
    first = r["processes"][0]
    assert lines[1].split()[:2] == [str(first["pid"]), "-"]
    assert lines[2].split()[0] == str(first["threads"][0]["tid"])  # the thread row: blank PID, then its tid
    assert sum(1 for ln in lines[1:] if ln.strip() and ln.split()[1] == "-") == 2  # --top counts processes
    rows = list(csv.reader(io.StringIO(render_csv(r))))
    assert rows[0][:3] == ["pid", "tid", "comm"]
    assert sum(1 for row in rows[1:] if row[-2] in ("process", "thread")) == \
        sum(1 + len(p["threads"]) for p in r["processes"])
    assert rows[1][1] == "" and rows[2][1] == str(first["threads"][0]["tid"]) and rows[2][0] == str(first["pid"])


def test_the_total_line_says_what_a_full_task_map_lost():
    w = window()
    assert "lost to a full task map" not in render_table(build_report(w, FixedWattsModel(15).attribute(w)))
    w.dropped_cpu_ns = 12_500_000
    line = [ln for ln in render_table(build_report(w, FixedWattsModel(15).attribute(w))).splitlines()
            if ln.startswith("Total CPU time:")][0]
    assert line.endswith("(without the 12.500 ms of CPU lost to a full task map)"), line
