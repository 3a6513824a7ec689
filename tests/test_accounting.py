"""Exact accounting in the scheduler cases users hit (issue: exact accounting).

Each case is checked against the kernel's own figure: the rusage a parent
collects with wait4 (utime + stime add up to the thread group's
sum_exec_runtime) or sum_exec_runtime itself (``/proc/PID/schedstat``).
Bounds that involve a running task allow one scheduler tick: the kernel
itself brings a running task's runtime up to date only at ticks.
"""

import glob
import json
import os
import sys
import time

import pytest

from ebpf_energy.monitor import online_cpus
from test_monitor import BURNER, SPAWNER, reap, sampler_factory, schedstat_ns, spawn, wait_zombie, within  # noqa: F401

pytestmark = pytest.mark.kernel

TICK_NS = 10_000_000  # one tick at HZ=100, the coarsest; HZ here is 250

# The leader spins 250 ms; a second thread spins 50 ms, waits for the leader
# to finish spinning, then execs a 300 ms burner (taking over the leader's pid).
THREAD_EXEC = r"""
import os, sys, threading, time
def spin(s):
    end = time.thread_time() + s
    while time.thread_time() < end:
        pass
leader_done = threading.Event()
def worker():
    spin(0.05)
    leader_done.wait()
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[1], "emt-exec2", "0.3"])
threading.Thread(target=worker).start()
spin(0.25)
leader_done.set()
time.sleep(30)
"""

# Makes a thread whose tid is argv[1] (a pid that was just freed), by
# writing ns_last_pid before each try; the thread burns argv[2] s. Prints
# whether it got the tid.
REUSE_AS_THREAD = r"""
import os, sys, threading, time
want, burn = int(sys.argv[1]), float(sys.argv[2])
got = []
def body():
    tid = threading.get_native_id()
    if tid == want:
        got.append(tid)
        end = time.thread_time() + burn
        while time.thread_time() < end:
            pass
for _ in range(200):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(want - 1))
    t = threading.Thread(target=body)
    t.start(); t.join()
    if got:
        break
print("yes" if got else "no", flush=True)
"""


def run_forker(name, n, spin_ms):
    r, w = os.pipe()
    pid = spawn(SPAWNER, name, n, spin_ms, stdout=w)
    os.close(w)
    with os.fdopen(r) as f:
        out = json.loads(f.read())
    status, _ = reap(pid)
    assert status == 0
    return out


def test_a_long_run_without_reads_loses_no_process(sampler_factory):
    """3,000 processes through a 1,024-entry task map (plus an entry for each
    task already on the machine) and a single read at the
    end: the reaper empties the map on its own schedule, so every process is
    there and nothing is dropped (it used to keep every dead task until the
    read and lose what did not fit)."""
    # every task on the machine that runs takes an entry too: on a host busy
    # with other work the map still has 1,024 entries for ours
    others = len(glob.glob("/proc/[0-9]*/task/[0-9]*"))
    s = sampler_factory(max_tasks=1024 + others)
    out = run_forker("emt-long", max(3000, 3 * (1024 + others)), 0.2)
    time.sleep(0.05)
    w = s.read()
    pids = set(out["pids"])
    seen = {p.pid for p in w.processes.values() if p.comm == "emt-long"}
    assert w.drops["tasks"] == 0 and w.dropped_cpu_ns == 0
    assert seen == pids, f"{len(pids - seen)} of {len(pids)} processes missing"
    got = sum(p.cpu_ns for p in w.processes.values() if p.pid in pids)
    assert within(got, out["cpu_ns"], rel=0.005, abs_ns=len(pids) * 1000), (got, out["cpu_ns"])
    assert s.reads >= 3  # the reaper read on its own


def test_deaths_ring_the_reapers_bell(sampler_factory, monkeypatch):
    """With the max-age rule out of the way, the only thing that can make the
    reaper read is the BPF program's bell: 200 deaths through a 64-entry map
    must ring it (at every 8th death on a CPU), and stop() must wake the
    reaper at once, not at its next timeout."""
    import ebpf_energy.monitor as monitor

    monkeypatch.setattr(monitor, "REAP_MAX_AGE_S", 3600.0)
    s = sampler_factory(max_tasks=64)
    run_forker("emt-bell", 200, 0.05)
    deadline = time.monotonic() + 60
    while s.reads == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.reads >= 1, "200 deaths and the reaper never read"
    reaper = s._reaper
    s.stop()
    assert not reaper.is_alive(), "stop() left the reaper asleep"


def test_a_full_map_reports_the_cpu_time_it_lost(sampler_factory):
    """With reaping left to the reads, a tiny map overflows: the lost slices
    are counted with their CPU time, and every CPU's books still add up."""
    s = sampler_factory(max_tasks=4, reap=False)
    run_forker("emt-full", 60, 1)
    w = s.read()
    assert w.drops["tasks"] > 0 and w.dropped_cpu_ns > 0
    span = w.ncpus * (w.end_ns - w.start_ns)
    assert w.total_cpu_ns + w.idle_ns + w.steal_ns + w.dropped_cpu_ns == span


def test_the_window_starts_at_attach(sampler_factory):
    """Two burners busy before the monitor starts: what they ran while it
    loaded is not in the window, and the CPUs show no idle time they did not
    have (the window used to start before the load, booking it as idle)."""
    pids = [spawn(BURNER, "emt-early", 30) for _ in range(2)]
    try:
        time.sleep(0.2)
        s = sampler_factory()
        after_start = sum(schedstat_ns(p) for p in pids)
        time.sleep(0.5)
        w = s.read()
        after_read = sum(schedstat_ns(p) for p in pids)
        got = sum(w.processes[p].cpu_ns for p in pids)
        assert got <= after_read - after_start + 2 * TICK_NS, (got, after_read - after_start)
        span = w.ncpus * (w.end_ns - w.start_ns)
        assert w.idle_ns <= 0.03 * span, f"{w.idle_ns / 1e6:.1f} ms idle with both CPUs busy"
        assert w.start_ns >= s.start_ns and w.start_ns == s.start_ns
    finally:
        for p in pids:
            os.kill(p, 9)
            reap(p)


def test_a_cpu_outside_our_affinity_is_counted(sampler_factory):
    """The monitor confined to CPU 0 (a cpuset, isolcpus), a burner alone on
    CPU 1 since before the start: its time is counted and CPU 1 is not idle
    (it used to read 0 ms and 100% idle)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.fail("this test needs two CPUs")
    mine = os.sched_getaffinity(0)
    pid = spawn(BURNER, "emt-far", 30)
    os.sched_setaffinity(pid, {cpus[1]})
    try:
        os.sched_setaffinity(0, {cpus[0]})
        time.sleep(0.2)
        s = sampler_factory()
        b = schedstat_ns(pid)
        time.sleep(0.6)
        c = schedstat_ns(pid)
        w = s.read()
        d = schedstat_ns(pid)
        got = w.processes[pid].cpu_ns
        assert c - b - TICK_NS <= got <= d - b + 2 * TICK_NS, (got, c - b, d - b)
        far = w.idle_ns_per_cpu[sorted(s.cuts).index(cpus[1])]
        assert far <= 0.1 * (w.end_ns - w.start_ns), f"CPU {cpus[1]} idle {far / 1e6:.1f} ms"
    finally:
        os.sched_setaffinity(0, mine)
        os.kill(pid, 9)
        reap(pid)


@pytest.mark.parametrize("round_", range(3))
def test_exec_from_a_non_leader_thread(sampler_factory, round_):
    """Leader 250 ms, thread 50 ms, then the thread execs a 300 ms burner:
    the process is counted whole (it used to lose up to 37%)."""
    s = sampler_factory()
    pid = spawn(THREAD_EXEC, BURNER)
    wait_zombie(pid, timeout=60)
    time.sleep(0.02)
    w = s.read()
    status, ru_ns = reap(pid)
    assert status == 0 and ru_ns > 550_000_000
    p = w.processes[pid]
    assert within(p.cpu_ns, ru_ns), f"reported {p.cpu_ns} ns, rusage {ru_ns} ns"


def _freed_pid(name, burn):
    """A process that burns ``burn`` s and is reaped: (pid, rusage ns)."""
    pid = spawn(BURNER, name, burn)
    status, ru_ns = reap(pid)
    assert status == 0
    return pid, ru_ns


def test_a_reused_tid_is_a_new_task(sampler_factory):
    """Process A exits; its pid comes back as a thread of process B: A keeps
    its own time and B gets only its own (A used to read 0 and B +100%)."""
    s = sampler_factory()
    a, a_ns = _freed_pid("emt-reuseA", 0.2)
    r, wfd = os.pipe()
    b = spawn(REUSE_AS_THREAD, a, 0.2, stdout=wfd)
    os.close(wfd)
    with os.fdopen(r) as f:
        got = f.read().strip()
    time.sleep(0.02)
    w = s.read()
    status, b_ns = reap(b)
    assert status == 0
    if got != "yes":
        pytest.fail(f"could not get tid {a} back within 200 tries (other forks took it)")
    assert within(w.processes[a].cpu_ns, a_ns), (w.processes[a].cpu_ns, a_ns)
    assert within(w.processes[b].cpu_ns, b_ns), (w.processes[b].cpu_ns, b_ns)


def test_a_reused_pid_is_a_new_process(sampler_factory):
    """Process A exits, process C gets its pid: two rows with that pid, each
    with its own time; the first keeps the plain pid as its key."""
    s = sampler_factory()
    a, a_ns = _freed_pid("emt-reuseA2", 0.15)
    c = None
    for _ in range(200):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(a - 1))
        c = spawn(BURNER, "emt-reuseC", 0.25)
        if c == a:
            break
        reap(c)
        c = None
    if c is None:
        pytest.fail(f"could not get pid {a} back within 200 tries")
    status, c_ns = reap(c)
    assert status == 0
    time.sleep(0.02)
    w = s.read()
    rows = {k: p for k, p in w.processes.items() if p.pid == a}
    assert len(rows) == 2, rows
    assert within(rows[a].cpu_ns, a_ns) and rows[a].comm == "emt-reuseA2"
    (other,) = [p for k, p in rows.items() if k != a]
    assert within(other.cpu_ns, c_ns) and other.comm == "emt-reuseC"


def test_steal_is_what_the_kernel_says(sampler_factory):
    """The steal figure matches /proc/stat's over the same window (which
    counts it in ticks), and CPUs are the online ones."""
    def stolen():
        with open("/proc/stat") as f:
            cpu = f.readline().split()
        return int(cpu[8]) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")

    pids = [spawn(BURNER, "emt-steal", 1.0) for _ in range(2)]
    try:
        s = sampler_factory()
        before = stolen()
        time.sleep(1.0)
        w = s.read()
        after = stolen()
        assert w.ncpus == len(s.cuts) == len(online_cpus())
        assert abs(w.steal_ns - (after - before)) <= w.ncpus * 3 * TICK_NS, (w.steal_ns, after - before)
    finally:
        for p in pids:
            reap(p)


def burn_pinned(s, cpus, name, burn_s=0.2):
    """A burner pinned to each CPU of ``cpus`` from its first instruction, run
    to its end: ({cpu: pid}, the sampler's read once all have finished)."""
    mine = os.sched_getaffinity(0)
    pids = {}
    try:
        for cpu in cpus:
            os.sched_setaffinity(0, {cpu})  # the child inherits it at spawn
            pids[cpu] = spawn(BURNER, name, burn_s)
    finally:
        os.sched_setaffinity(0, mine)
    try:
        for pid in pids.values():
            wait_zombie(pid)
        return pids, s.read()
    finally:
        for pid in pids.values():
            reap(pid)


def test_cpu_time_by_core_class(sampler_factory):
    """CPUs declared as two core classes: a burner pinned to each CPU has all
    its time in that CPU's class, and every process's and thread's classes add
    up exactly to its CPU time (the dump sums them; the switch path pays nothing)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.fail("this test needs two CPUs")
    classes = [0] * (max(cpus) + 1)
    classes[cpus[1]] = 1
    s = sampler_factory(cpu_class=classes, threads=True)
    pids, w = burn_pinned(s, cpus[:2], "emt-class")
    assert w.cpu_class == [classes[c] for c in sorted(s.cuts)]
    for cpu, pid in pids.items():
        p = w.processes[pid]
        want = [0, 0]
        want[classes[cpu]] = p.cpu_ns
        assert p.cpu_ns > 150_000_000 and p.cpu_ns_by_class == want, (cpu, p.cpu_ns_by_class)
    for p in w.processes.values():
        assert sum(p.cpu_ns_by_class) == p.cpu_ns, p
        assert [sum(c) for c in zip(*(t.cpu_ns_by_class for t in p.threads))] == p.cpu_ns_by_class, p


def test_bad_cpu_class_is_a_clear_error():
    from ebpf_energy.monitor import EbpfSampler

    with pytest.raises(ValueError, match="cpu_class"):
        EbpfSampler(cpu_class=[0, 4])
    with pytest.raises(ValueError, match="cpu_class"):
        EbpfSampler(cpu_class=[0] * 100000)
