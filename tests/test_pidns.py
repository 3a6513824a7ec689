"""PID namespaces: a process in a container shows its host PID and its own
(``NSpid``), in the table, the JSON and the CSV of both monitors."""

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ebpf_energy.pidns import NsPids, parse_nspid, read_nspid
from ebpf_energy.usage import ProcessUsage

ROOT = Path(__file__).resolve().parent.parent
BURN = ("import time\nwhile True:\n"
        "    t = time.thread_time()\n    while time.thread_time() - t < 0.05: pass\n    time.sleep(0.05)")


def test_parse_nspid():
    assert parse_nspid(b"Name:\tx\nNSpid:\t4242\t17\t1\nNSsid:\t1\n") == 1
    assert parse_nspid(b"Name:\tx\nNSpid:\t4242\n") is None  # our own namespace
    assert parse_nspid(b"Name:\tx\n") is None  # a kernel without the line
    assert read_nspid(os.getpid()) is None
    assert read_nspid(2**22 + 1) is None  # no such process


def test_an_exited_process_keeps_what_was_read_while_it_lived(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7/status").write_bytes(b"NSpid:\t7\t3\n")
    ns = NsPids(str(tmp_path))
    procs = {7: ProcessUsage(7, "a", 1, cgroup_id=5), 8: ProcessUsage(8, "b", 1, exited=True)}
    ns.fill(procs)
    assert procs[7].nspid == 3 and procs[8].nspid is None
    (tmp_path / "7/status").unlink()
    again = {7: ProcessUsage(7, "a", 1, cgroup_id=5, exited=True)}
    ns.fill(again)
    assert again[7].nspid == 3
    reused = {7: ProcessUsage(7, "c", 1, cgroup_id=6)}  # the pid again, in another cgroup: read anew
    ns.fill(reused)
    assert reused[7].nspid is None


@pytest.fixture
def in_new_pid_namespace():
    """A burner that is PID 1 of a new PID namespace (``unshare --pid --fork``); yields its host PID."""
    outer = subprocess.Popen(["unshare", "--pid", "--fork", sys.executable, "-c", BURN])
    kids = []
    try:
        deadline = time.monotonic() + 30
        while not kids and time.monotonic() < deadline:
            try:
                kids = Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()
            except OSError:
                pass
            time.sleep(0.01)
        assert kids, "unshare did not fork"
        host_pid = int(kids[0])
        assert read_nspid(host_pid) == 1
        yield host_pid
    finally:
        outer.kill()
        outer.wait()
        for pid in kids:  # the namespace's init (reparented when unshare died): the kernel kills the rest
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
            for _ in range(500):
                if not os.path.exists(f"/proc/{pid}"):
                    break
                time.sleep(0.01)


@pytest.mark.kernel
@pytest.mark.parametrize("command", ["monitor", "traditional"])
def test_a_process_in_a_new_pid_namespace_shows_both_pids(command, in_new_pid_namespace):
    host_pid = in_new_pid_namespace
    base = [sys.executable, "-m", "ebpf_energy", command, "-d", "1", "-p", "10", "--pid", str(host_pid)]
    outs = {}
    for fmt in ("--json", "--csv", None):
        r = subprocess.run(base + ([fmt] if fmt else []), capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr
        outs[fmt] = r.stdout
    row = next(p for p in json.loads(outs["--json"])["processes"] if p["pid"] == host_pid)
    assert row["nspid"] == 1 and row["cpu_ns"] > 0
    rows = list(csv.DictReader(io.StringIO(outs["--csv"])))
    assert next(r for r in rows if r["pid"] == str(host_pid))["nspid"] == "1"
    assert all(r["nspid"] == "" for r in rows if r["row"] != "process")
    table = outs[None].splitlines()
    head = next(i for i, ln in enumerate(table) if ln.split()[:2] == ["PID", "NSPID"])
    assert table[head + 1].split()[:2] == [str(host_pid), "1"]
