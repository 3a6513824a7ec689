"""The eBPF sampler against the kernel's own accounting.

Ground truth is the scheduler: ``sum_exec_runtime`` (first field of
``/proc/PID/task/TID/schedstat``) and the rusage a parent collects with
``wait4`` (utime + stime add up to ``sum_exec_runtime``, in microseconds).
Every test starts a real monitor, runs real processes during the window and
compares. Other engineers' processes run on this machine at the same time,
so the processes under test carry distinctive names and are found by pid.
"""

import errno
import glob
import json
import os
import struct
import subprocess
import sys
import time

import pytest

from ebpf_energy.loader import syscall
from ebpf_energy.loader.errors import SyscallError
from ebpf_energy.loader.object import BpfObject
from ebpf_energy.monitor import FREQ_PROGRAM, EbpfSampler, object_path, online_cpus

pytestmark = pytest.mark.kernel

# Every program of the shipped object but the opt-in frequency handler is
# loaded by a default monitor, and attached but `cut` and `dump`, which the
# reads run (BPF_PROG_TEST_RUN).
with BpfObject.open(object_path()) as _obj:
    OUR_PROGRAMS = frozenset(_obj.programs) - {FREQ_PROGRAM}
    OUR_LINKED = frozenset(_n for _n, _p in _obj.programs.items() if _p.spec.program_kind.attach) - {FREQ_PROGRAM}
    OUR_LINKS = len(OUR_LINKED)

# A child that names itself (prctl PR_SET_NAME) and burns CPU: argv[1] = name,
# argv[2] = CPU seconds to burn.
BURNER = r"""
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
end = time.process_time() + float(sys.argv[2])
while time.process_time() < end:
    pass
"""

# A child with three worker threads, each named by itself and burning
# argv[2] CPU seconds. When all have burned, every thread blocks (no CPU) and
# the child prints the worker tids, then waits for a line on stdin before
# letting them end: while it waits, the whole process is quiescent and its
# per-thread sum_exec_runtime is final.
THREADED = r"""
import ctypes, json, os, sys, threading, time
libc = ctypes.CDLL(None)
libc.prctl(15, sys.argv[1].encode(), 0, 0, 0)
burned, release, tids = threading.Barrier(4), threading.Event(), []
def work(i):
    libc.prctl(15, ("%s-w%d" % (sys.argv[1][:8], i)).encode(), 0, 0, 0)
    tids.append(threading.get_native_id())
    end = time.thread_time() + float(sys.argv[2])
    while time.thread_time() < end:
        pass
    burned.wait()
    release.wait()
ts = [threading.Thread(target=work, args=(i,)) for i in range(3)]
for t in ts: t.start()
burned.wait()
time.sleep(0.02)  # let every worker block
os.write(1, (json.dumps(tids) + "\n").encode())
sys.stdin.readline()
release.set()
for t in ts: t.join()
"""

# The parent of N short children (os.fork, argv[3] ms of CPU each (default 2), at most
# two alive at a time), each named argv[1]. Prints the children's pids and the
# CPU their rusage says they used (RUSAGE_CHILDREN delta), in ns.
SPAWNER = r"""
import ctypes, json, os, resource, sys, time
name, n = sys.argv[1].encode(), int(sys.argv[2])
spin = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.002
libc = ctypes.CDLL(None)
def cpu(ru):
    return round((ru.ru_utime + ru.ru_stime) * 1e6) * 1000
before = cpu(resource.getrusage(resource.RUSAGE_CHILDREN))
pids, alive = [], 0
for i in range(n):
    if alive == 2:
        os.wait(); alive -= 1
    pid = os.fork()
    if pid == 0:
        libc.prctl(15, name, 0, 0, 0)
        end = time.thread_time() + spin
        while time.thread_time() < end:
            pass
        os._exit(0)
    pids.append(pid); alive += 1
while alive:
    os.wait(); alive -= 1
after = cpu(resource.getrusage(resource.RUSAGE_CHILDREN))
print(json.dumps({"pids": pids, "cpu_ns": after - before}))
"""


def spawn(code, *args, stdout=None, stdin=None):
    """Start ``python -c code args`` without Popen, so the test reaps it itself."""
    fa = []
    if stdout is not None:
        fa.append((os.POSIX_SPAWN_DUP2, stdout, 1))
    if stdin is not None:
        fa.append((os.POSIX_SPAWN_DUP2, stdin, 0))
    return os.posix_spawn(sys.executable, [sys.executable, "-c", code, *map(str, args)], dict(os.environ),
                          file_actions=fa)


def schedstat_ns(pid):
    """sum_exec_runtime of every thread the process still has, summed."""
    total = 0
    for p in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with open(p) as f:
            total += int(f.read().split()[0])
    return total


def wait_zombie(pid, timeout=30.0):
    """Wait until ``pid`` has exited without reaping it (its /proc entry stays)."""
    deadline = time.monotonic() + timeout
    while True:
        r = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        if r is not None:
            assert r.si_status == 0, f"child {pid} failed with status {r.si_status}"
            return
        assert time.monotonic() < deadline, f"child {pid} did not finish"
        time.sleep(0.005)


def reap(pid):
    """wait4: (exit status, CPU ns from rusage)."""
    _, status, ru = os.wait4(pid, 0)
    return status, round((ru.ru_utime + ru.ru_stime) * 1e6) * 1000


def within(reported, truth, rel=0.005, abs_ns=1_000_000):
    return abs(reported - truth) <= max(rel * truth, abs_ns)


def bpf_ids(pid="self"):
    """{"prog": {id,...}, "map": {...}, "link": {...}} held by a process's fds (from fdinfo)."""
    out = {"prog": set(), "map": set(), "link": set()}
    d = f"/proc/{pid}/fd"
    for fd in os.listdir(d):
        try:
            target = os.readlink(f"{d}/{fd}")
            if "bpf" not in target:
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except OSError:
            continue
        for line in info.splitlines():
            key, _, val = line.partition(":")
            kind = {"prog_id": "prog", "map_id": "map", "link_id": "link"}.get(key.strip())
            if kind and not (kind == "prog" and "link_id:" in info):
                out[kind].add(int(val))
    return out


def prog_names(ids):
    names = {}
    for i in ids:
        fd = syscall.prog_get_fd_by_id(i)
        try:
            names[i] = syscall.obj_get_info(fd, "prog")["name"]
        finally:
            os.close(fd)
    return names


GET_BY_ID = {"prog": syscall.prog_get_fd_by_id, "map": syscall.map_get_fd_by_id, "link": syscall.link_get_fd_by_id}


def assert_all_gone(ids, timeout=3.0):
    """Every kernel object id in ``ids`` is freed (deferred frees get a moment)."""
    deadline = time.monotonic() + timeout
    for kind, s in ids.items():
        for obj_id in s:
            while True:
                try:
                    fd = GET_BY_ID[kind](obj_id)
                except SyscallError as e:
                    assert e.errno == errno.ENOENT, e
                    break
                os.close(fd)
                assert time.monotonic() < deadline, f"{kind} id {obj_id} is still loaded after the monitor stopped"
                time.sleep(0.02)


@pytest.fixture
def sampler_factory():
    made = []

    def make(**kw):
        s = EbpfSampler(**kw)
        made.append(s)
        s.start()
        return s

    yield make
    for s in made:
        s.stop()


def test_cpu_burner_matches_sum_exec_runtime(sampler_factory):
    """0.3 s of CPU: reported within 0.5% (or 1 ms) of sum_exec_runtime."""
    s = sampler_factory()
    pid = spawn(BURNER, "emt-burn", 0.3)
    wait_zombie(pid)
    time.sleep(0.02)  # the final switch-out follows the zombie state by microseconds
    truth = schedstat_ns(pid)
    w = s.read()
    status, ru_ns = reap(pid)
    assert status == 0 and truth > 250_000_000
    p = w.processes[pid]
    assert p.comm == "emt-burn" and p.exited and p.slices >= 1
    assert within(p.cpu_ns, truth), f"reported {p.cpu_ns} ns, sum_exec_runtime {truth} ns"
    assert within(p.cpu_ns, ru_ns, abs_ns=1_000_000 + 1000)
    assert p.threads == []  # threads only when asked
    # A later read keeps the exited process, unchanged (its entry was folded and deleted).
    w2 = s.read()
    assert w2.processes[pid].cpu_ns == p.cpu_ns and w2.processes[pid].comm == "emt-burn"


def test_running_slice_is_closed_out_at_read(sampler_factory):
    """A task still on the CPU at read time is credited up to the read, not late."""
    s = sampler_factory()
    pid = spawn(BURNER, "emt-run", 5)
    try:
        deadline = time.monotonic() + 10
        while schedstat_ns(pid) < 250_000_000:  # on a loaded machine this takes longer
            assert time.monotonic() < deadline
            time.sleep(0.02)
        truth0 = schedstat_ns(pid)
        w = s.read()
        truth1 = schedstat_ns(pid)
        got = w.processes[pid].cpu_ns
        # bracketed by two reads of sum_exec_runtime taken around ours
        assert truth0 - 1_000_000 <= got <= truth1 + 1_000_000, (truth0, got, truth1)
        assert truth0 > 200_000_000
    finally:
        os.kill(pid, 9)
        reap(pid)


def test_500_short_processes_all_reported(sampler_factory):
    """500 children living ~2 ms each: every pid reported with its comm, total within 2% of rusage."""
    s = sampler_factory()
    r, wfd = os.pipe()
    pid = spawn(SPAWNER, "emt-short", 500, stdout=wfd)
    os.close(wfd)
    with os.fdopen(r) as f:
        out = json.loads(f.read())
    status, _ = reap(pid)
    assert status == 0
    time.sleep(0.02)
    w = s.read()
    pids = out["pids"]
    assert len(pids) == 500
    missing = [p for p in pids if p not in w.processes]
    assert not missing, f"{len(missing)} of 500 short processes not reported, e.g. {missing[:5]}"
    wrong = [(p, w.processes[p].comm) for p in pids if w.processes[p].comm != "emt-short"]
    assert not wrong, f"wrong comm: {wrong[:5]}"
    assert all(w.processes[p].exited for p in pids)
    total = sum(w.processes[p].cpu_ns for p in pids)
    assert out["cpu_ns"] > 500 * 1_500_000
    assert abs(total - out["cpu_ns"]) <= 0.02 * out["cpu_ns"], (total, out["cpu_ns"])
    assert w.dropped == 0
    # Exited entries were folded into user space and deleted from the kernel map:
    # 500 processes do not fill it.
    assert w.processes[pid].exited and w.processes[pid].comm


def test_threads_summed_in_one_row_and_listed(sampler_factory):
    """A 4-thread process is one row; threads=True lists each thread, summing to the row.

    Compared while the process is alive but quiescent (every thread blocked),
    so each thread's sum_exec_runtime is exact; rusage after exit is no
    exact reference here: the kernel adds an exiting thread's runtime to the
    group before its last slice ends."""
    s = sampler_factory(threads=True)
    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe()
    pid = spawn(THREADED, "emt-mt", 0.12, stdout=out_w, stdin=in_r)
    os.close(out_w)
    os.close(in_r)
    try:
        with os.fdopen(out_r) as f:
            workers = json.loads(f.readline())
        truth = {int(os.path.basename(os.path.dirname(p))): int(open(p).read().split()[0])
                 for p in glob.glob(f"/proc/{pid}/task/*/schedstat")}
        w = s.read()
        again = {int(os.path.basename(os.path.dirname(p))): int(open(p).read().split()[0])
                 for p in glob.glob(f"/proc/{pid}/task/*/schedstat")}
    finally:
        os.write(in_w, b"go\n")
        os.close(in_w)
    wait_zombie(pid)
    time.sleep(0.02)
    w_end = s.read()
    status, ru_ns = reap(pid)
    assert status == 0 and len(workers) == 3 and set(workers) < set(truth)
    assert again == truth, "the child was not quiescent while compared"
    rows = [p for p in w.processes.values() if p.pid == pid]
    assert len(rows) == 1
    p = rows[0]
    assert not p.exited and p.comm == "emt-mt"
    tids = {t.tid: t for t in p.threads}
    assert set(truth) <= set(tids), (sorted(truth), sorted(tids))
    assert sum(t.cpu_ns for t in p.threads) == p.cpu_ns
    assert within(p.cpu_ns, sum(truth.values())), (p.cpu_ns, sum(truth.values()))
    for tid, ns in truth.items():
        assert within(tids[tid].cpu_ns, ns), (tid, tids[tid].cpu_ns, ns)
    for i, tid in enumerate(workers):
        assert tids[tid].cpu_ns >= 110_000_000
        assert tids[tid].comm.startswith("emt-mt-w")  # renamed live, after it was first seen
    # no thread of it shows up as a process of its own
    assert not any(tid in w.processes for tid in workers)
    # After exit: still one row, every thread exited, and at least what it had.
    end = w_end.processes[pid]
    assert end.exited and all(t.exited for t in end.threads)
    assert end.comm == "emt-mt"
    assert sorted(t.comm for t in end.threads if t.tid in workers) == ["emt-mt-w0", "emt-mt-w1", "emt-mt-w2"]
    assert end.cpu_ns >= p.cpu_ns and sum(t.cpu_ns for t in end.threads) == end.cpu_ns
    assert not any(tid in w_end.processes for tid in workers)
    assert within(end.cpu_ns, ru_ns, rel=0.02)  # rusage misses part of each thread's last slice


def test_renamed_live_process_shows_new_comm(sampler_factory):
    """A process renamed (prctl PR_SET_NAME) after it was first seen shows its new name while alive."""
    s = sampler_factory()
    pid = spawn(BURNER, "emt-renamed", 5)
    try:
        deadline = time.monotonic() + 10
        while schedstat_ns(pid) < 50_000_000:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert s.read().processes[pid].comm == "emt-renamed"
    finally:
        os.kill(pid, 9)
        reap(pid)


def test_task_plus_idle_plus_steal_is_cpus_times_window(sampler_factory):
    """Every CPU-nanosecond of the window is a task's, idle's or stolen, on the online CPUs."""
    s = sampler_factory()
    pid = spawn(BURNER, "emt-half", 0.3)
    time.sleep(0.6)
    w1 = s.read()
    reap(pid)
    time.sleep(0.3)
    w2 = s.read()
    for w in (w1, w2):
        span = w.ncpus * (w.end_ns - w.start_ns)
        assert w.ncpus == len(online_cpus()) == len(w.idle_ns_per_cpu)
        assert w.total_cpu_ns + w.idle_ns + w.steal_ns + w.dropped_cpu_ns == span
        assert w.idle_ns == sum(w.idle_ns_per_cpu)
    assert w2.end_ns > w1.end_ns and w2.total_cpu_ns >= w1.total_cpu_ns and w2.idle_ns >= w1.idle_ns
    assert w2.samples_or_events > w1.samples_or_events > 0


def test_every_read_is_the_state_at_its_cut(sampler_factory):
    """The task entries read equal, to the nanosecond, what the CPUs' own
    books say ran up to the cut, at every read, while burners switch and
    short processes are born, die and are reaped during the reads. (It used
    to miss slices that ended while a read was in progress.)"""
    s = sampler_factory()
    pids = [spawn(BURNER, "emt-rd", 1.5) for _ in range(2)]
    spawner = spawn(SPAWNER, "emt-rdshort", 300)
    try:
        prev = s.read()
        for _ in range(150):
            w = s.read()
            cuts = s.cuts.values()
            kernel_busy = sum(c.busy_ns - c.dropped_ns + (c.running.run_ns if c.running else 0) for c in cuts)
            assert w.total_cpu_ns == kernel_busy
            for key, p in prev.processes.items():
                assert w.processes[key].cpu_ns >= p.cpu_ns, f"process {key} went backwards"
            assert w.idle_ns >= prev.idle_ns
            prev = w
    finally:
        for pid in pids:
            os.kill(pid, 9)
            reap(pid)
        reap(spawner)


def test_tiny_max_tasks_counts_drops(sampler_factory):
    """A 2-entry task map overflows: the loss is counted, reads keep working."""
    s = sampler_factory(max_tasks=2)
    pid = spawn(SPAWNER, "emt-drop", 20)
    reap(pid)
    time.sleep(0.1)
    w = s.read()
    assert w.drops["tasks"] > 0 and w.dropped >= w.drops["tasks"]
    w2 = s.read()
    assert w2.drops["tasks"] >= w.drops["tasks"]
    assert len(w2.processes) >= 1


def test_process_index_holds_one_dump_only(sampler_factory):
    """More distinct processes over a sampler's life than the process index
    has slots: every dump still writes exactly one process record per
    process with live entries (the records' task counts add up to the live
    entries), and the index is empty after each dump, so it can never be
    full, evict a slot of a running dump, or match a stale one."""
    s = sampler_factory(max_tasks=128, threads=True)
    index = s.obj.maps["proc_index"]
    seen = set()
    for _ in range(4):  # 4 x 40 sleepers, all distinct: more than the index's 128 slots
        kids = [subprocess.Popen(["sleep", "30"]) for _ in range(40)]
        try:
            time.sleep(0.2)
            s.read()
            n = struct.unpack_from("<I", s._bss, s._dump_counts[2])[0]
            recs = s._dumps.procs(s._procs_memory, n)
            live = s._dumps.live(s._dump_memory, s.live_tasks)
            keys = [(r.tgid, r.pstart) for r in recs]
            assert len(keys) == len(set(keys)), "a process split over two records"
            assert sum(r.tasks for r in recs) == len(live)
            assert {(e.tgid or k[0], e.pstart) for k, e in live.items()} == set(keys)
            assert {k.pid for k in kids} <= {r.tgid for r in recs}
            assert list(index.keys()) == [], "the process index keeps keys after a dump"
            seen.update(keys)
        finally:
            for k in kids:
                k.kill()
                k.wait()
        s.read()  # reap them: the next round's sleepers find room in `tasks`
    assert len(seen) > index.max_entries


def test_bad_max_tasks_is_a_clear_error():
    with pytest.raises(ValueError, match="max_tasks"):
        EbpfSampler(max_tasks=0)


def sampler_ids(s):
    """{"prog": {id: name}, "map": {id: name}, "link": {id: program name}} of what this sampler made
    (never a global list: other sessions load BPF objects on this machine meanwhile)."""
    progs = {p.info()["id"]: n for n, p in s.obj.programs.items() if p.loaded}
    maps = {m.info()["id"]: n for n, m in s.obj.maps.items()}
    links = {p.link.info()["id"]: n for n, p in s.obj.programs.items() if p.attached}
    return {"prog": progs, "map": maps, "link": links}


def test_nothing_of_ours_stays_loaded():
    """The programs, maps and links this sampler created are gone after stop()."""
    s = EbpfSampler()
    try:
        s.start()
        ours = sampler_ids(s)
        assert set(ours["prog"].values()) == OUR_PROGRAMS
        assert set(ours["link"].values()) == OUR_LINKED == OUR_PROGRAMS - {"cut", "dump"}
        assert {"tasks", "dumps", "events"} <= set(ours["map"].values())
        s.read()
    finally:
        s.stop()
    s.stop()  # idempotent
    assert_all_gone(ours)
