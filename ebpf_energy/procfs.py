"""CPU time per process by polling ``/proc``: the classic monitor, done right.

The poller reads ``/proc/[pid]/stat`` (utime + stime, in clock ticks) for
every process, on a fixed schedule (deadline ``n`` is ``start + n*interval``,
so sleeping never drifts; a sample that starts late is counted as late), and
adds up what each process gained between samples. It is the baseline the
eBPF monitor is compared against, so it uses the same
:class:`~ebpf_energy.usage.UsageWindow` and is honest about its limits: a
process that starts and exits between two samples is never seen, and the CPU
a process spends after its last sample is lost. Its counters say so
(``stats()``).

Cheap by construction: one ``os.scandir`` of ``/proc`` per sample, one
``read`` per file with ``os.open``/``os.read`` (no buffered file objects),
byte-string splits instead of regular expressions, and a process's cgroup
read only once, when it is first seen.

Polling runs in a background thread so that the poller keeps its schedule
whatever its caller does (``compare`` runs it beside the eBPF monitor).
"""

import os
import resource
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from ebpf_energy.pidns import read_nspid
from ebpf_energy.usage import ProcessUsage, ThreadUsage, UsageWindow, comm_of

# The row that holds a process's CPU no thread row could be given (threads
# that ended between two samples), so thread rows add up to their process.
UNSEEN_THREADS_TID = 0
UNSEEN_THREADS_COMM = "(threads ended between samples)"

CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_INTERVAL_S = 0.1
MIN_INTERVAL_S = 0.01  # one tick at HZ=100: polling faster cannot see more

_O_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_READ_SIZE = 4096  # a stat line is ~350 bytes; comm is at most 64 bytes


class MalformedStat(ValueError):
    """A ``/proc`` file whose contents do not have the expected shape."""


def parse_stat(data: bytes) -> Tuple[int, str, int, int]:
    """``(pid, comm, utime + stime ticks, starttime ticks)`` from a stat line.

    ``comm`` may contain spaces and parentheses (a process can name itself
    ``a) (b``), so it spans from the first ``(`` to the LAST ``)``; the fields
    after it contain no parenthesis. Raises :class:`MalformedStat`.
    """
    lp = data.find(b"(")
    rp = data.rfind(b")")
    if lp <= 0 or rp < lp:
        raise MalformedStat("no '(comm)' in stat line")
    rest = data[rp + 2:].split()
    # rest[0] is field 3 (state): field k is rest[k - 3].
    if len(rest) < 20:
        raise MalformedStat("stat line has %d fields after comm, expected >= 20" % len(rest))
    try:
        pid = int(data[:lp])
        ticks = int(rest[11]) + int(rest[12])  # utime (14) + stime (15)
        start = int(rest[19])  # starttime (22)
    except ValueError:
        raise MalformedStat("non-numeric stat field") from None
    if ticks < 0 or start < 0:
        raise MalformedStat("negative stat field")
    return pid, comm_of(data[lp + 1:rp]), ticks, start


def parse_proc_stat(data: bytes) -> Tuple[int, Dict[int, int]]:
    """Idle ticks (idle + iowait) from ``/proc/stat``: the total and per CPU.

    iowait counts as idle: the CPU ran nothing while it waited. Raises
    :class:`MalformedStat` when there is no usable aggregate ``cpu`` line.
    """
    total = None
    per_cpu = {}
    for line in data.split(b"\n"):
        if not line.startswith(b"cpu"):
            if per_cpu or total is not None:
                break  # the cpu lines come first and together
            continue
        f = line.split()
        if len(f) < 6:
            raise MalformedStat("short cpu line in /proc/stat")
        try:
            idle = int(f[4]) + int(f[5])
            if f[0] == b"cpu":
                total = idle
            else:
                per_cpu[int(f[0][3:])] = idle
        except ValueError:
            raise MalformedStat("non-numeric cpu line in /proc/stat") from None
    if total is None:
        raise MalformedStat("no aggregate cpu line in /proc/stat")
    return total, per_cpu


def parse_cgroup(data: bytes) -> Optional[str]:
    """The cgroup v2 path (the ``0::`` line) from ``/proc/PID/cgroup``."""
    for line in data.split(b"\n"):
        if line.startswith(b"0::"):
            return line[3:].decode("utf-8", "replace") or "/"
    return None


def find_cgroup2_mount(proc_root: str = "/proc") -> Optional[str]:
    """Where cgroup v2 is mounted (``/sys/fs/cgroup`` or, on hybrid systems,
    ``/sys/fs/cgroup/unified``), from ``self/mountinfo``; None without one."""
    try:
        with open(os.path.join(proc_root, "self", "mountinfo"), "rb") as f:
            for line in f:
                left, sep, right = line.partition(b" - ")
                if sep and right.split(b" ", 1)[0] == b"cgroup2":
                    return left.split()[4].decode().replace("\\040", " ")
    except OSError:
        pass
    return None


def _read(path: str) -> bytes:
    fd = os.open(path, _O_FLAGS)
    try:
        return os.read(fd, _READ_SIZE)
    finally:
        os.close(fd)


def _read_all(path: str) -> bytes:
    fd = os.open(path, _O_FLAGS)
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        os.close(fd)


def boot_ticks() -> float:
    """Now, in clock ticks since boot: the clock of stat's ``starttime``
    (``CLOCK_BOOTTIME``, so suspend time is included on both sides)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) * CLK_TCK


class _Task:
    """What the poller remembers about one process or thread."""

    __slots__ = ("id", "path", "comm", "start", "base", "last", "prior", "exited", "fresh",
                 "cgroup", "cgroup_id", "threads", "live_tids", "fd", "nspid", "recheck")

    def __init__(self, id_, path, comm, start, ticks, window_start_tick):
        self.id = id_
        self.path = path
        self.comm = comm
        self.prior = 0  # ticks from an earlier task that had the same id (id reuse)
        self.exited = False
        self.cgroup = None
        self.cgroup_id = None
        self.nspid = None
        self.recheck = False
        self.threads = None
        self.live_tids = None
        self.fd = None  # kept open on its stat file (see ProcfsPoller._read_stat)
        self._begin(start, ticks, window_start_tick)

    def _begin(self, start, ticks, window_start_tick):
        # A task that started inside the window spent all of its ticks inside
        # it, so it counts from zero. One that started before the window (and
        # was not in an earlier sample: the baseline, or a failed read) holds
        # CPU time from before the window in its counters, which must not be
        # credited to the window, so it counts from this first sample.
        self.start = start
        self.fresh = start >= window_start_tick
        self.base = 0 if self.fresh else ticks
        self.last = ticks

    def reuse(self, comm, start, ticks, window_start_tick):
        """The id now names a new task: keep what the old one gained."""
        self.prior += self.last - self.base
        self.comm = comm
        self.exited = False
        self._begin(start, ticks, window_start_tick)

    @property
    def ticks(self):
        return self.prior + self.last - self.base


OnSample = Callable[[int, float, List[Tuple[int, str, int]]], None]


class ProcfsPoller:
    """A :class:`~ebpf_energy.driver.Sampler` that polls ``/proc``.

    ``root`` is the procfs mount (tests point it at a fake tree);
    ``threads`` also polls ``/proc/PID/task/*/stat``; ``on_sample(n, t_s,
    deltas)`` is called after each sample with ``(pid, comm, ns)`` for every
    process that gained CPU (the ``-v`` output).
    """

    source = "procfs"

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, threads: bool = False,
                 root: str = "/proc", on_sample: Optional[OnSample] = None,
                 cgroup_mount: Optional[str] = None):
        if not interval_s >= MIN_INTERVAL_S:
            raise ValueError("poll interval must be at least %g s, got %r" % (MIN_INTERVAL_S, interval_s))
        self.interval_s = float(interval_s)
        self.threads = threads
        self.root = root
        self.on_sample = on_sample
        self._cg_mount = cgroup_mount if cgroup_mount is not None else find_cgroup2_mount(root)
        self._cg_ids: Dict[str, Optional[int]] = {}
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_fds = max(0, min(4096, (soft if soft > 0 else 1024) // 2 - 16))
        self._nfds = 0
        self._ns_per_tick = 1_000_000_000 // CLK_TCK
        self._lock = threading.Lock()
        self._stop_evt = threading.Event()
        self._thread = None
        self._started = False
        self._procs: Dict[int, _Task] = {}
        self._live = set()
        self._t0_ns = 0
        self._grid_ns = 0
        self._start_tick = 0
        self._last_ns = 0
        self._last_end_ns = 0
        self._reusable_until_ns = 0
        self._idle0 = 0
        self._idle0_cpu: Dict[int, int] = {}
        self._idle = 0
        self._idle_cpu: Dict[int, int] = {}
        self.samples = 0
        self.late_samples = 0
        self.missed_deadlines = 0
        self.max_lateness_ns = 0
        self.vanished = 0
        self.malformed = 0
        self.unreadable = 0
        self.own_cpu_ns = 0

    # -- Sampler protocol -------------------------------------------------
    def start(self) -> None:
        if self._started:
            raise RuntimeError("the poller was already started")
        self._started = True
        self._t0_ns = time.monotonic_ns()
        self._start_tick = int(boot_ticks())
        with self._lock:
            self._sample()
            self._idle0, self._idle0_cpu = self._idle, dict(self._idle_cpu)
        # The schedule starts when start() returns, not before the baseline
        # scan: a caller refreshing every interval from then on (the driver)
        # then wakes together with the poll thread and shares its sample.
        self._grid_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name="procfs-poller", daemon=True)
        self._thread.start()

    def read(self) -> UsageWindow:
        """Everything gained since ``start()``, up to a sample taken now (or
        a scheduled one that finished less than 5 ms ago, so the poll thread
        and a caller refreshing on the same grid do not both scan ``/proc``
        at each deadline)."""
        if not self._started:
            raise RuntimeError("read() before start()")
        deltas = None
        with self._lock:
            if time.monotonic_ns() > self._reusable_until_ns:
                deltas = self._sample()
            window = self._window()
        if deltas is not None and self.on_sample is not None:
            self.on_sample(self.samples, (self._last_ns - self._t0_ns) / 1e9, deltas)
        return window

    def poll(self) -> None:
        """Take one sample now, off the schedule (tests, and callers that
        need the state at an exact moment)."""
        if not self._started:
            raise RuntimeError("poll() before start()")
        with self._lock:
            deltas = self._sample()
        if self.on_sample is not None:
            self.on_sample(self.samples, (self._last_ns - self._t0_ns) / 1e9, deltas)

    def stop(self) -> None:
        self._stop_evt.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join()
        with self._lock:
            self.max_fds = 0  # a read() after stop() keeps nothing open
            self._close_all()

    def stats(self) -> dict:
        """How the polling went: what a reader needs to trust the numbers."""
        return {
            "interval_s": self.interval_s,
            "samples": self.samples,
            "late_samples": self.late_samples,
            "missed_deadlines": self.missed_deadlines,
            "max_lateness_ms": round(self.max_lateness_ns / 1e6, 3),
            "vanished": self.vanished,
            "malformed": self.malformed,
            "unreadable": self.unreadable,
            "own_cpu_ns": self.own_cpu_ns,
        }

    # -- the schedule ------------------------------------------------------
    def _run(self):
        step = int(self.interval_s * 1e9)
        late_limit = step // 10
        n = 0
        while True:
            n += 1
            deadline = self._grid_ns + n * step
            delay = deadline - time.monotonic_ns()
            if delay > 0 and self._stop_evt.wait(delay / 1e9):
                return
            if self._stop_evt.is_set():
                return
            with self._lock:
                now = time.monotonic_ns()
                lateness = now - deadline
                if lateness >= step:  # whole periods slept through: say so, keep the grid
                    skipped = lateness // step
                    n += skipped
                    self.missed_deadlines += skipped
                    lateness -= skipped * step
                if now - self._last_ns < step // 2:
                    continue  # read() sampled just now: this deadline is served
                self.max_lateness_ns = max(self.max_lateness_ns, lateness)
                if lateness > late_limit:
                    self.late_samples += 1
                deltas = self._sample()
                self._reusable_until_ns = self._last_end_ns + min(step // 4, 5_000_000)
            if self.on_sample is not None:
                self.on_sample(self.samples, (now - self._t0_ns) / 1e9, deltas)

    # -- one sample ----------------------------------------------------------
    def _sample(self):
        cpu0 = time.thread_time_ns()
        now = time.monotonic_ns()
        root = self.root
        try:
            self._idle, self._idle_cpu = parse_proc_stat(_read_all(root + "/stat"))
        except MalformedStat:
            self.malformed += 1
        except OSError:
            self.unreadable += 1
        verbose = self.on_sample is not None
        deltas = [] if verbose else None
        procs = self._procs
        live = []
        with os.scandir(root) as it:
            for entry in it:
                name = entry.name
                if not name.isdigit():
                    continue
                pid = int(name)
                rec = procs.get(pid)
                vanished = self.vanished
                found = self._account(procs, pid, rec, entry.path)
                if found is None:
                    if rec is not None and self.vanished == vanished:
                        live.append(pid)  # unreadable or malformed this time, not gone
                    continue
                rec, before, new = found
                live.append(pid)
                if new or rec.recheck:
                    # once more at the next sample: a container runtime moves a
                    # process into the container's cgroup just after forking it
                    rec.recheck = new
                    self._read_cgroup(rec)
                if verbose and rec.last > before:
                    deltas.append((pid, rec.comm, (rec.last - before) * self._ns_per_tick))
                if self.threads:
                    self._sample_threads(rec)
        live_now = set(live)
        for pid in self._live - live_now:
            self._gone(procs[pid])
        self._live = live_now
        self.samples += 1
        self._last_ns = now
        self._last_end_ns = time.monotonic_ns()
        self._reusable_until_ns = 0
        self.own_cpu_ns += time.thread_time_ns() - cpu0
        return deltas

    def _sample_threads(self, rec):
        if rec.threads is None:
            rec.threads, rec.live_tids = {}, set()
        threads = rec.threads
        live = []
        try:
            it = os.scandir(rec.path + "/task")
        except (FileNotFoundError, ProcessLookupError):
            self.vanished += 1
            return
        except OSError:
            self.unreadable += 1
            return
        with it:
            for entry in it:
                try:
                    tid = int(entry.name)
                except ValueError:
                    continue
                if self._account(threads, tid, threads.get(tid), entry.path) is not None:
                    live.append(tid)
        live_now = set(live)
        for tid in rec.live_tids - live_now:
            self._gone(threads[tid])
        rec.live_tids = live_now

    def _account(self, table, id_, rec, path):
        """Read one task's stat and credit what it gained: ``(task, ticks
        before, is_new)``, or None when it could not be read (counted)."""
        data, fd = self._read_stat(rec, path)
        if data is None:
            return None
        try:
            _, comm, ticks, start = parse_stat(data)
        except MalformedStat:
            self.malformed += 1
            if fd is not None:
                os.close(fd)
                self._nfds -= 1
            return None
        if rec is None:
            rec = table[id_] = _Task(id_, path, comm, start, ticks, self._start_tick)
            rec.fd = fd
            return rec, rec.base, True
        if fd is not None:
            rec.fd = fd
        if start != rec.start:  # the id names a new task now
            rec.reuse(comm, start, ticks, self._start_tick)
            return rec, rec.base, True
        before = rec.last
        if ticks > before:
            rec.last = ticks
        rec.comm = comm
        rec.exited = False
        return rec, before, False

    def _read_stat(self, rec, path):
        """A task's stat, with one ``pread`` on a descriptor kept open since
        the task was first seen (half the syscalls of open/read/close); a
        kept descriptor names the task, not the id, so once the task is gone
        it fails with ESRCH even if the id is reused, and the path is opened
        anew. At most ``max_fds`` descriptors are kept; beyond, open/read/close.

        Returns ``(data, new descriptor to keep or None)``; ``(None, None)``
        when the task could not be read (counted)."""
        if rec is not None and rec.fd is not None:
            try:
                data = os.pread(rec.fd, _READ_SIZE, 0)
                if data:
                    return data, None
            except OSError:
                pass
            self._close_fd(rec)
        try:
            fd = os.open(path + "/stat", _O_FLAGS)
        except (FileNotFoundError, ProcessLookupError):
            self.vanished += 1
            return None, None
        except OSError:
            self.unreadable += 1
            return None, None
        try:
            data = os.read(fd, _READ_SIZE)
        except ProcessLookupError:
            data = b""
        except OSError:
            os.close(fd)
            self.unreadable += 1
            return None, None
        if not data:
            os.close(fd)
            self.vanished += 1
            return None, None
        if self._nfds < self.max_fds:
            self._nfds += 1
            return data, fd
        os.close(fd)
        return data, None

    def _close_fd(self, rec):
        if rec.fd is not None:
            os.close(rec.fd)
            rec.fd = None
            self._nfds -= 1

    def _gone(self, rec):
        """The task is no longer listed: it exited (its counts stay)."""
        rec.exited = True
        self._close_fd(rec)
        if rec.threads:
            for t in rec.threads.values():
                t.exited = True
                self._close_fd(t)

    def _close_all(self):
        for rec in self._procs.values():
            self._close_fd(rec)
            if rec.threads:
                for t in rec.threads.values():
                    self._close_fd(t)

    def _read_cgroup(self, rec):
        try:
            rec.cgroup = parse_cgroup(_read(rec.path + "/cgroup"))
        except OSError:
            rec.cgroup = None
        rec.cgroup_id = self._cgroup_id(rec.cgroup)
        rec.nspid = read_nspid(rec.id, self.root)

    def _cgroup_id(self, path):
        """The cgroup's id is its directory's inode number in the v2 mount
        (what ``bpf_get_current_cgroup_id()`` returns), cached per path."""
        if path is None or self._cg_mount is None:
            return None
        if path not in self._cg_ids:
            try:
                self._cg_ids[path] = os.stat(self._cg_mount + path).st_ino
            except OSError:
                self._cg_ids[path] = None
        return self._cg_ids[path]

    # -- the window ----------------------------------------------------------
    def _window(self) -> UsageWindow:
        nspt = self._ns_per_tick
        processes = {}
        for pid, rec in self._procs.items():
            ticks = rec.ticks
            # Processes that slept through the window are left out (the eBPF
            # monitor never sees them either); ones that started in it are
            # kept even at zero ticks: they were seen.
            if ticks <= 0 and not rec.fresh:
                continue
            p = ProcessUsage(pid=pid, comm=rec.comm, cpu_ns=ticks * nspt, exited=rec.exited,
                             cgroup=rec.cgroup, cgroup_id=rec.cgroup_id, nspid=rec.nspid)
            if rec.threads:
                p.threads = [ThreadUsage(tid=t.id, comm=t.comm, cpu_ns=t.ticks * nspt,
                                         exited=t.exited or rec.exited)
                             for t in rec.threads.values() if t.ticks > 0 or t.fresh]
                unseen = p.cpu_ns - sum(t.cpu_ns for t in p.threads)
                if unseen > 0:
                    # /proc's limit, said rather than hidden: a thread's ticks after
                    # its last sample (or all of a thread that lived between two
                    # samples) are in the process's count but in no thread's.
                    p.threads.append(ThreadUsage(tid=UNSEEN_THREADS_TID, comm=UNSEEN_THREADS_COMM,
                                                 cpu_ns=unseen, exited=True))
            processes[pid] = p
        cpus = sorted(self._idle_cpu)
        ncpus = (cpus[-1] + 1) if cpus else (os.cpu_count() or 1)
        per_cpu = [max(0, self._idle_cpu.get(c, 0) - self._idle0_cpu.get(c, 0)) * nspt
                   for c in range(ncpus)]
        return UsageWindow(
            source=self.source,
            start_ns=self._t0_ns,
            end_ns=self._last_ns,
            ncpus=ncpus,
            processes=processes,
            idle_ns=max(0, self._idle - self._idle0) * nspt,
            idle_ns_per_cpu=per_cpu,
            samples_or_events=self.samples,
            drops={"tasks": 0, "events": 0},
        )
