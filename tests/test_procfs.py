"""The /proc poller: parsing, accounting rules, robustness, and the real /proc."""

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ebpf_energy.procfs import (CLK_TCK, MalformedStat, ProcfsPoller, boot_ticks, find_cgroup2_mount,
                                parse_cgroup, parse_proc_stat, parse_stat)

TICK_NS = 1_000_000_000 // CLK_TCK


def stat_line(pid, comm, utime, stime, start, state="S"):
    # 52 fields as in Linux 6.x; fields 14/15 utime/stime, 22 starttime.
    fields = [str(pid), f"({comm})", state] + ["0"] * 49
    fields[13], fields[14], fields[21] = str(utime), str(stime), str(start)
    return " ".join(fields) + "\n"


# -- parsing -------------------------------------------------------------------

def test_parse_stat_real_self():
    with open("/proc/self/stat", "rb") as f:
        pid, comm, ticks, start = parse_stat(f.read())
    assert pid == os.getpid()
    assert comm == open("/proc/self/comm").read().strip()
    assert ticks >= 0 and 0 < start <= boot_ticks()


@pytest.mark.parametrize("comm", ["a) (b", "x y z", ")", "((", "p) S 1 2 3 (", ""])
def test_parse_stat_comm_with_spaces_and_parentheses(comm):
    pid, got, ticks, start = parse_stat(stat_line(42, comm, 7, 5, 1234).encode())
    assert (pid, got, ticks, start) == (42, comm, 12, 1234)


@pytest.mark.parametrize("data", [
    b"",
    b"123 no parentheses here",
    b"123 (comm) S 1 2 3",  # too few fields
    b"abc (comm) " + b"0 " * 50,  # pid not a number
    stat_line(1, "c", "x", 1, 1).encode(),  # utime not a number
    stat_line(1, "c", -5, 1, 1).encode(),
    b"(comm) " + b"1 " * 50,  # no pid
])
def test_parse_stat_malformed(data):
    with pytest.raises(MalformedStat):
        parse_stat(data)


def test_parse_proc_stat():
    data = (b"cpu  10 0 5 1000 20 0 1 0 0 0\ncpu0 5 0 2 600 10 0 0 0 0 0\n"
            b"cpu1 5 0 3 400 10 0 1 0 0 0\nintr 1 2 3\nctxt 99\n")
    assert parse_proc_stat(data) == (1020, {0: 610, 1: 410})
    total, per_cpu = parse_proc_stat(open("/proc/stat", "rb").read())
    assert total > 0 and len(per_cpu) == os.cpu_count()
    for bad in (b"", b"intr 1 2\n", b"cpu 1 2\n", b"cpu  a b c d e f\n"):
        with pytest.raises(MalformedStat):
            parse_proc_stat(bad)


def test_parse_cgroup():
    assert parse_cgroup(b"4:memory:/x\n0::/a/b\n") == "/a/b"
    assert parse_cgroup(b"0::/\n") == "/"
    assert parse_cgroup(b"4:memory:/x\n") is None
    assert parse_cgroup(open("/proc/self/cgroup", "rb").read()).startswith("/")


def test_find_cgroup2_mount_real():
    mount = find_cgroup2_mount()
    assert mount is not None and os.path.isfile(os.path.join(mount, "cgroup.procs"))


# -- a fake /proc tree -----------------------------------------------------------

class FakeProc:
    """A directory shaped like /proc, with files that behave like its files."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.set_idle(1000, [600, 400])

    def set_idle(self, total, per_cpu):
        lines = [f"cpu  1 0 1 {total} 0 0 0 0 0 0"]
        lines += [f"cpu{i} 1 0 1 {v} 0 0 0 0 0 0" for i, v in enumerate(per_cpu)]
        self._write("stat", "\n".join(lines) + "\nintr 0\n")

    def _write(self, rel, text):
        # In place, like a /proc file: a reader holding it open reads the new
        # contents (the poller keeps stat files open between samples).
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def proc(self, pid, comm, ticks, start, cgroup="/", threads=None):
        self._write(f"{pid}/stat", stat_line(pid, comm, ticks, 0, start))
        self._write(f"{pid}/cgroup", f"1:cpu:/\n0::{cgroup}\n")
        for tid, tticks in (threads or {}).items():
            self._write(f"{pid}/task/{tid}/stat", stat_line(tid, comm, tticks, 0, start))

    def raw(self, pid, text):
        self._write(f"{pid}/stat", text)

    def remove(self, pid):
        shutil.rmtree(os.path.join(self.root, str(pid)))


@pytest.fixture
def fake(tmp_path):
    return FakeProc(tmp_path / "proc")


def started(fake, **kw):
    p = ProcfsPoller(interval_s=60, root=fake.root, cgroup_mount=kw.pop("cgroup_mount", None), **kw)
    p.start()
    return p


def test_fake_tree_accounting_rules(fake):
    old = 1  # started long before the window
    fake.proc(100, "before", 500, old)
    fake.proc(101, "a) (b", 10, old)
    p = started(fake)
    try:
        new = int(boot_ticks()) + 1  # starts inside the window
        fake.proc(100, "before", 530, old)  # +30 ticks
        fake.proc(200, "born", 7, new)  # born in the window: all 7 ticks count
        fake.proc(300, "missed", 900, old)  # old but unseen so far: counts from its first sample
        p.poll()
        fake.proc(300, "missed", 904, old)
        fake.proc(101, "a) (b", 13, old)
        w = p.read()
    finally:
        p.stop()
    got = {pid: (u.comm, u.cpu_ns) for pid, u in w.processes.items()}
    assert got == {100: ("before", 30 * TICK_NS), 101: ("a) (b", 3 * TICK_NS),
                   200: ("born", 7 * TICK_NS), 300: ("missed", 4 * TICK_NS)}
    assert w.source == "procfs" and w.samples_or_events == 3
    assert w.total_cpu_ns == 44 * TICK_NS


def test_fake_tree_exit_vanish_malformed_reuse(fake):
    fake.proc(100, "leaver", 50, 1)
    fake.proc(101, "reused", 50, 1)
    fake.proc(102, "steady", 0, 1)
    p = started(fake)
    try:
        fake.proc(100, "leaver", 58, 1)
        p.poll()
        fake.remove(100)  # exits: keeps its 8 ticks, marked exited
        os.makedirs(os.path.join(fake.root, "103"))  # listed, but its stat is gone (vanished mid-read)
        fake.raw(104, "104 (broken\n")  # malformed: skipped and counted
        fake.raw(105, "garbage")
        born = int(boot_ticks()) + 1
        fake.proc(101, "reused", 2, born)  # same pid, new process: +2
        p.poll()
        fake.proc(101, "reused", 5, born)
        w = p.read()
        stats = p.stats()
    finally:
        p.stop()
    assert w.processes[100].exited and w.processes[100].cpu_ns == 8 * TICK_NS
    assert not w.processes[101].exited and w.processes[101].cpu_ns == 5 * TICK_NS
    assert 102 not in w.processes  # slept through the window: nothing to report
    assert stats["vanished"] >= 2 and stats["malformed"] >= 4
    assert set(w.processes) == {100, 101}


def test_fake_tree_threads_idle_and_cgroup(fake, tmp_path):
    cg = tmp_path / "cgroup2"
    (cg / "team" / "web").mkdir(parents=True)
    fake.proc(100, "srv", 10, 1, cgroup="/team/web", threads={100: 4, 101: 6})
    fake.set_idle(1000, [600, 400])
    p = started(fake, threads=True, cgroup_mount=str(cg))
    try:
        fake.proc(100, "srv", 25, 1, cgroup="/team/web", threads={100: 9, 101: 16})
        fake.set_idle(1050, [620, 430])
        p.poll()
        fake.remove(100)
        fake.proc(100, "srv", 25, 1, cgroup="/team/web", threads={100: 9})  # thread 101 exited
        w = p.read()
    finally:
        p.stop()
    proc = w.processes[100]
    assert proc.cpu_ns == 15 * TICK_NS
    assert proc.cgroup == "/team/web" and proc.cgroup_id == os.stat(cg / "team" / "web").st_ino
    threads = {t.tid: (t.cpu_ns, t.exited) for t in proc.threads}
    assert threads == {100: (5 * TICK_NS, False), 101: (10 * TICK_NS, True)}
    assert w.idle_ns == 50 * TICK_NS and w.idle_ns_per_cpu == [20 * TICK_NS, 30 * TICK_NS]
    assert w.ncpus == 2


def test_fake_tree_thread_rows_add_up_to_their_process(fake):
    """The review's D13: ticks of threads that ended between two samples are in
    the process's count and in no thread's; a row says so, and the rows add up."""
    from ebpf_energy.procfs import UNSEEN_THREADS_COMM, UNSEEN_THREADS_TID

    fake.proc(100, "lead", 10, 1, threads={100: 4, 101: 6})
    p = started(fake, threads=True)
    try:
        # thread 101 ends (+3 unseen ticks), thread 102 lives and dies between samples (22 ticks)
        shutil.rmtree(os.path.join(fake.root, "100", "task", "101"))
        fake.proc(100, "lead", 40, 1, threads={100: 9})
        w = p.read()
    finally:
        p.stop()
    proc = w.processes[100]
    rows = {t.tid: (t.comm, t.cpu_ns) for t in proc.threads}
    assert rows == {100: ("lead", 5 * TICK_NS), UNSEEN_THREADS_TID: (UNSEEN_THREADS_COMM, 25 * TICK_NS)}
    assert sum(t.cpu_ns for t in proc.threads) == proc.cpu_ns == 30 * TICK_NS


def test_a_process_moved_into_a_container_just_after_its_fork_is_in_the_container(fake, tmp_path):
    """Runtimes move a process into the container's cgroup just after its
    fork: a poll in between must not leave it in its parent's cgroup. Its
    PID inside its own namespace comes from the status file's NSpid."""
    cg = tmp_path / "cgroup2"
    (cg / "docker-x.scope").mkdir(parents=True)
    p = started(fake, cgroup_mount=str(cg))
    try:
        born = int(boot_ticks()) + 1
        fake.proc(100, "runc:[2:INIT]", 1, born, cgroup="/system.slice/containerd.service")
        fake._write("100/status", "Name:\tx\nNSpid:\t100\t1\n")
        p.poll()
        fake.proc(100, "nginx", 5, born, cgroup="/docker-x.scope")
        p.poll()
        fake.proc(100, "nginx", 9, born, cgroup="/docker-x.scope")
        w = p.read()
    finally:
        p.stop()
    proc = w.processes[100]
    assert proc.cgroup == "/docker-x.scope" and proc.cgroup_id == os.stat(cg / "docker-x.scope").st_ino
    assert proc.nspid == 1 and proc.cpu_ns == 9 * TICK_NS


def test_fake_tree_missing_proc_stat_is_counted(fake):
    os.remove(os.path.join(fake.root, "stat"))
    fake.proc(100, "x", 1, 1)
    p = started(fake)
    try:
        w = p.read()
    finally:
        p.stop()
    assert w.idle_ns == 0 and p.stats()["unreadable"] >= 1


def test_poller_api_errors(fake):
    with pytest.raises(ValueError):
        ProcfsPoller(interval_s=0.001)
    p = ProcfsPoller(interval_s=0.1, root=fake.root)
    with pytest.raises(RuntimeError):
        p.read()
    p.stop()  # before start: harmless
    p.start()
    with pytest.raises(RuntimeError):
        p.start()
    p.stop()
    p.stop()  # idempotent


# -- the real /proc ----------------------------------------------------------------

BURN = textwrap.dedent("""
    import resource, sys, time
    sys.stdin.readline()                 # wait until the poller runs
    t = time.process_time()
    while time.process_time() - t < {secs}:
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(int((ru.ru_utime + ru.ru_stime) * 1e9), flush=True)
    sys.stdin.readline()                 # stay alive until the poller has seen the end
""")


def test_real_child_burning_cpu_matches_its_rusage():
    """A child started inside the window counts from its start, so the whole
    CPU it reports for itself must be there, within a tick or two (stat's
    utime+stime are truncated to ticks; getrusage is not)."""
    p = ProcfsPoller(interval_s=0.1)
    p.start()
    try:
        child = subprocess.Popen([sys.executable, "-c", BURN.format(secs=1.0)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        child.stdin.write("go\n")
        child.stdin.flush()
        own_ns = int(child.stdout.readline())
        time.sleep(0.25)  # >= 2 samples after the burn
        w = p.read()
        child.stdin.write("done\n")
        child.stdin.close()
        child.wait(10)
        time.sleep(0.25)
        w_after = p.read()
        stats = p.stats()
    finally:
        p.stop()
    got = w.processes[child.pid]
    assert got.comm.startswith("python")
    assert not got.exited
    assert abs(got.cpu_ns - own_ns) <= 2 * TICK_NS, (got.cpu_ns, own_ns)
    assert w_after.processes[child.pid].exited
    assert w_after.processes[child.pid].cpu_ns >= got.cpu_ns
    assert w.processes[os.getpid()].cpu_ns >= 0
    assert stats["samples"] >= 10 and stats["own_cpu_ns"] > 0


def test_real_proc_threads_sum_to_process():
    code = textwrap.dedent("""
        import sys, threading, time
        def burn():
            t = time.thread_time()
            while time.thread_time() - t < 0.3:
                pass
        sys.stdin.readline()
        ts = [threading.Thread(target=burn) for _ in range(2)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print("done", flush=True)
        sys.stdin.readline()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    p = ProcfsPoller(interval_s=0.05, threads=True)
    try:
        p.start()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        time.sleep(0.12)
        w = p.read()
    finally:
        p.stop()
        child.stdin.close()
        child.wait(10)
    proc = w.processes[child.pid]
    # the two burners ran 0.3 s each; exited threads keep their time
    busy = [t for t in proc.threads if t.cpu_ns >= 0.2e9]
    assert len(busy) == 2, proc.threads
    assert all(t.exited for t in busy)
    assert proc.cpu_ns >= 0.55e9
    # A thread's time after its last sample is lost when it exits (the process
    # counter keeps it): up to one poll interval per exited thread.
    gap = proc.cpu_ns - sum(t.cpu_ns for t in proc.threads)
    assert -len(proc.threads) * TICK_NS <= gap <= len(busy) * (0.05e9 + TICK_NS) + 2 * TICK_NS


def test_real_proc_survives_processes_exiting_mid_read():
    """Hundreds of processes come and go while the poller reads as fast as
    it may: no exception, and whatever it saw vanish is counted, not lost."""
    p = ProcfsPoller(interval_s=0.01)
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            procs = [subprocess.Popen(["sleep", "0.02"]) for _ in range(20)]
            for c in procs:
                c.wait()

    t = threading.Thread(target=churn)
    p.start()
    t.start()
    try:
        for _ in range(30):
            p.poll()
        stop.set()
        t.join()
        time.sleep(0.1)
        w = p.read()
    finally:
        stop.set()
        t.join()
        p.stop()
    stats = p.stats()
    assert stats["samples"] >= 31
    sleepers = [u for u in w.processes.values() if u.comm == "sleep"]
    assert sleepers and all(u.exited for u in sleepers)
    assert stats["malformed"] == 0


def test_fixed_schedule_does_not_drift():
    """Deadlines are start + n*interval: a slow sample (here a 30 ms verbose
    callback in a 50 ms period) must not stretch the period, and periods
    slept through entirely are counted as missed, never hidden."""
    def slow(n, t_s, deltas):
        time.sleep(0.03)

    p = ProcfsPoller(interval_s=0.05, on_sample=slow)
    p.start()
    time.sleep(1.0)
    p.stop()
    s = p.stats()
    # a sleep(interval)-after-work loop would take ~1/0.08 = 12 samples
    assert s["samples"] + s["missed_deadlines"] >= 18, s

    def slower(n, t_s, deltas):
        time.sleep(0.12)

    p = ProcfsPoller(interval_s=0.05, on_sample=slower)
    p.start()
    time.sleep(1.0)
    p.stop()
    s = p.stats()
    assert s["missed_deadlines"] >= 8 and s["samples"] <= 10, s
    assert s["samples"] + s["missed_deadlines"] >= 18, s


def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("max_fds", [0, 2, 1000])
def test_kept_descriptors_are_capped_and_released(fake, max_fds):
    for pid in range(100, 110):
        fake.proc(pid, f"p{pid}", 10, 1, threads={pid: 10})
    before = open_fds()
    p = ProcfsPoller(interval_s=60, root=fake.root, threads=True)
    p.max_fds = max_fds
    p.start()
    try:
        for pid in range(100, 110):
            fake.proc(pid, f"p{pid}", 10 + pid - 100, 1, threads={pid: 10 + pid - 100})
        p.poll()
        assert len(open_fds() - before) <= max_fds
        fake.remove(105)  # gone: its descriptors are closed at once
        fake.raw(106, "106 (now broken")
        w = p.read()
    finally:
        p.stop()
    assert open_fds() == before
    assert {pid: u.cpu_ns // TICK_NS for pid, u in w.processes.items()} == {
        pid: pid - 100 for pid in range(101, 110)}
    assert w.processes[105].exited and not w.processes[106].exited
    assert sum(t.cpu_ns for t in w.processes[103].threads) == 3 * TICK_NS


def test_real_proc_leaves_no_descriptor_open():
    before = open_fds()
    p = ProcfsPoller(interval_s=0.02, threads=True)
    p.start()
    time.sleep(0.2)
    p.read()
    assert len(open_fds() - before) > 10  # it does keep stat files open while running
    p.stop()
    assert open_fds() == before
