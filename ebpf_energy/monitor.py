"""The eBPF sampler: CPU time per thread and process from ``energy_monitor.bpf.o``.

Kernel side (``bpf/energy_monitor.bpf.c``): on every ``sched_switch`` the
slice that just ended is added to a per-CPU hash keyed by (tid, start time);
who runs on each CPU since when lives in a ``.bss`` slot per CPU. This
module loads that object with our own loader and turns it into cumulative
:class:`~ebpf_energy.usage.UsageWindow` s:

* the window opens at attach: the ``cut`` program, run on every online CPU
  right after the programs are attached, opens each CPU's books, so nothing
  that ran during load counts and no CPU is left out for being outside our
  affinity (an IPI reaches it);
* every read takes a new cut on every CPU first, then runs ``dump``, which
  sums every task entry as it stood at the cut over its per-CPU copies (and
  over each core class, ``cpu_class``), and each process's live entries,
  into mmapable arrays: user space reads one record per process (per
  thread only with ``threads=True``) from memory, with no syscall and no
  per-CPU decoding (:mod:`ebpf_energy.task_books`). The slices still
  running are closed in the scheduler's clock, the books of every CPU add
  up exactly (tasks + idle + steal = wall time), and totals never go back;
* with ``track_frequency`` and cpufreq, every slice also counts cycles at
  its CPU's frequency (kept by a ``power:cpu_frequency`` program);
* dead tasks are reaped (taken out of the map by ``dump`` and folded into
  user-space totals) at every read, and by a reaper thread on its own
  schedule, so a run of any length never fills the map; slices lost to a
  full map are counted, with their CPU time, and reported.

Record layouts come from the object's own BTF, not from a copy of the C
header, so the two can never drift apart.
"""

import os
import struct
import threading
import time
from importlib import resources
from typing import Callable, Dict, List, Optional

from ebpf_energy.bpf_records import Record
from ebpf_energy.cgroups import cgroup2_mount
from ebpf_energy.pidns import NsPids
from ebpf_energy.loader import syscall
from ebpf_energy.loader.errors import LoaderError
from ebpf_energy.loader.object import BpfObject
from ebpf_energy.privilege import require_bpf
from ebpf_energy.reap_bell import ReapBell
from ebpf_energy.task_books import MAX_CLASSES, Books, CpuCut, DumpDecoder, OpenSlice
from ebpf_energy.usage import UsageWindow, comm_of

DEFAULT_MAX_TASKS = 16384
IDLE_RINGBUF = 4096
STREAM_RINGBUF = 1 << 20
TEST_RUN_ON_CPU = 1  # BPF_F_TEST_RUN_ON_CPU
REAP_MAX_AGE_S = 1.0  # dead entries noticed by the reaper wait this long for a read (at most 2x after a death)


def object_path() -> str:
    """The shipped, CO-RE-portable monitor object (package data)."""
    return str(resources.files("ebpf_energy") / "bpf" / "energy_monitor.bpf.o")


CPU_ROOT = "/sys/devices/system/cpu"
FREQ_PROGRAM = "on_cpu_frequency"  # opt-in: loaded only to track frequency


def cpufreq_khz(ncpus: int, cpu_root: str = CPU_ROOT) -> Optional[List[int]]:
    """Each CPU's frequency now (``cpuN/cpufreq/scaling_cur_freq``, kHz; 0
    for a CPU without one), or None when no CPU has cpufreq (most VMs)."""
    out = []
    for cpu in range(ncpus):
        try:
            with open(f"{cpu_root}/cpu{cpu}/cpufreq/scaling_cur_freq") as f:
                out.append(int(f.read().strip() or 0))
        except (OSError, ValueError):
            out.append(0)
    return out if any(out) else None


def online_cpus() -> List[int]:
    """The CPUs that are online now (``/sys/devices/system/cpu/online``)."""
    with open("/sys/devices/system/cpu/online") as f:
        return syscall.cpu_list(f.read())


class CgroupPaths:
    """cgroup id (the v2 directory's inode number) -> path relative to the v2 mount."""

    def __init__(self, mount: Optional[str]):
        self.mount = mount
        self._paths: Dict[int, str] = {}
        self._missed: Dict[int, float] = {}  # id -> when a scan last failed to find it

    def path(self, cgroup_id: int) -> Optional[str]:
        """A new id (a cgroup made after the last scan) costs one rescan; an id
        that stays unknown (removed already) is looked for at most once a second."""
        if not cgroup_id or not self.mount:
            return None
        p = self._paths.get(cgroup_id)
        if p is None and time.monotonic() - self._missed.get(cgroup_id, 0.0) > 1.0:
            self._scan()
            p = self._paths.get(cgroup_id)
            if p is None:
                self._missed[cgroup_id] = time.monotonic()
        return p

    def _scan(self):
        root = self.mount.rstrip("/")
        for dirpath, dirnames, _ in os.walk(root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            self._paths[ino] = dirpath[len(root):] or "/"


class EbpfSampler:
    """The ``Sampler`` of :mod:`ebpf_energy.driver` backed by the BPF monitor.

    ``reap=False`` leaves reaping to the reads (tests of the map-full path)."""

    source = "ebpf"

    def __init__(self, *, max_tasks: int = DEFAULT_MAX_TASKS, threads: bool = False,
                 on_event: Optional[Callable[[dict], None]] = None, filter_tgid: int = 0, filter_tid: int = 0,
                 filter_cgroup_id: int = 0, min_slice_ns: int = 0, path: Optional[str] = None,
                 reap: bool = True, cpu_class: Optional[List[int]] = None, track_frequency: bool = False,
                 cpu_root: str = CPU_ROOT):
        if max_tasks < 1:
            raise ValueError("max_tasks must be at least 1")
        ncpus = syscall.num_possible_cpus()
        if cpu_class is not None and (len(cpu_class) > ncpus or
                                      any(not 0 <= c < MAX_CLASSES for c in cpu_class)):
            raise ValueError(f"cpu_class: one class index (0-{MAX_CLASSES - 1}) per CPU, at most {ncpus} CPUs")
        self.max_tasks = max_tasks
        self.threads = threads
        self.on_event = on_event
        self.filters = dict(filter_tgid=filter_tgid, filter_tid=filter_tid, filter_cgroup_id=filter_cgroup_id,
                            min_slice_ns=min_slice_ns)
        self.path = path or object_path()
        self.obj: Optional[BpfObject] = None
        self.start_ns = 0
        self.cpu_class = list(cpu_class or [0] * ncpus)
        # cycles only where cpufreq says what the frequency is (never on this VM)
        self.cpu_khz = cpufreq_khz(ncpus, cpu_root) if track_frequency else None
        if self.cpu_khz is not None:
            self.frequency = "tracked (power:cpu_frequency; cycles = ns x kHz / 1e6 per slice)"
        elif track_frequency or cpufreq_khz(ncpus, cpu_root) is None:
            self.frequency = "unknown (no cpufreq)"
        else:
            self.frequency = "unknown (not tracked)"
        self._books = Books(self.cpu_class, cycles=self.cpu_khz is not None)
        self._cgroups = CgroupPaths(cgroup2_mount())
        self._nspids = NsPids()
        self._ncpus = ncpus
        self._cpus: List[int] = []
        self._lock = threading.Lock()
        self._ring = None
        self._ring_thread = None
        self._bss = self._dump_memory = self._procs_memory = None
        self._stop = threading.Event()
        self._reap = reap
        self.cuts: Dict[int, CpuCut] = {}  # each online CPU's books at the latest cut
        self._reaper = None
        self._bell: Optional[ReapBell] = None
        self._reap_urgent = max(1, max_tasks // 4)
        self._reaped_deaths = 0
        self._last_read = 0.0
        self.reads = 0
        self.live_tasks = 0  # task entries in the map at the last read (every task on the machine that ran)
        self.events_received = 0
        self._bpf_stats = {}

    fully_dead = property(lambda self: self._books.fully_dead,
                          doc="processes all of whose threads are accounted for good (after a read)")

    # -- Sampler protocol ------------------------------------------------------
    def start(self):
        require_bpf("the eBPF monitor")
        obj = BpfObject.open(self.path)
        try:
            btf = obj.spec.btf
            self._dumps = DumpDecoder(Record(btf, "task_dump"), Record(btf, "proc_dump"), self.max_tasks)
            slot = Record(btf, "cpu_slot")
            self._cut_layout = Record(btf, "cpu_cut")
            self._event_layout = Record(btf, "slice_event")
            stream = self.on_event is not None
            obj.set_max_entries("tasks", self.max_tasks)
            for name in ("dumps", "procs", "proc_index"):  # a record per entry (process), never more
                obj.set_max_entries(name, self.max_tasks)
            obj.set_max_entries("events", STREAM_RINGBUF if stream else IDLE_RINGBUF)
            ro = obj.rodata
            ro["stream_events"] = stream
            ro["nr_cpus"] = self._ncpus
            ro["dump_slots"] = self.max_tasks
            ro["cpu_class"] = self.cpu_class
            ro["track_freq"] = self.cpu_khz is not None
            # a quarter of the map dead rings the reaper's bell from some CPU
            self._reap_urgent = max(1, self.max_tasks // 4)
            ro["reap_bell_every"] = max(1, self._reap_urgent // self._ncpus) if self._reap else 0
            obj.programs[FREQ_PROGRAM].autoload = self.cpu_khz is not None
            for k, v in self.filters.items():
                ro[k] = v
            obj.load()
            if self.cpu_khz is not None:
                obj.bss["cpu_khz"] = self.cpu_khz
            obj.attach(only=[n for n, p in obj.programs.items() if p.spec.program_kind.attach and p.loaded])
            self.obj = obj
            self._bss = obj.bss.view()
            slots_off = obj.bss.offset_of("slots")
            cut_off = slot.offset_of("cut")
            deaths_off = slot.offset_of("deaths")
            self._cut_at = lambda cpu: slots_off + cpu * slot.size + cut_off
            self._deaths_at = lambda cpu: slots_off + cpu * slot.size + deaths_off
            self._dump_counts = [obj.bss.offset_of(v) for v in ("dump_overflow", "dump_reaped", "dump_procs")]
            self._dump_memory = obj.maps["dumps"].memory()
            self._procs_memory = obj.maps["procs"].memory()
            self._cut = obj.programs["cut"]
            self._dump = obj.programs["dump"]
            # The window opens here, on every online CPU: before this cut the
            # programs account nothing.
            self._cpus = online_cpus()
            self._take_cuts()
            self.start_ns = min(c.open_ns for c in self.cuts.values())
            self._last_read = time.monotonic()
            if self._reap:
                self._bell = ReapBell(obj.maps["reap_bell"])
        except BaseException:
            self.obj = None
            self._bss = self._dump_memory = self._procs_memory = None  # views into the object's memory go first
            obj.close()
            raise
        if stream:
            self._start_stream(obj)
        if self._reap:
            self._reaper = threading.Thread(target=self._reap_loop, name="ebpf-energy-reaper", daemon=True)
            self._reaper.start()

    def read(self) -> UsageWindow:
        with self._lock:
            return self._read()

    def stop(self):
        self._stop.set()
        if self._bell is not None:
            self._bell.stop()
        for th in (self._reaper, self._ring_thread):
            if th is not None:
                th.join(timeout=5)
        self._reaper = self._ring_thread = None
        if self._bell is not None:
            self._bell.close()
            self._bell = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        with self._lock:
            self._bss = self._dump_memory = self._procs_memory = None
            if self.obj is not None:
                self._bpf_stats = self._program_stats()
                self.obj.close()
                self.obj = None

    def _program_stats(self):
        """In-kernel cost of our programs (non-zero while bpf_stats are on)."""
        run_cnt = run_ns = 0
        for p in self.obj.programs.values():
            if p.loaded and p.attached:
                info = p.info()
                run_cnt += info.get("run_cnt", 0)
                run_ns += info.get("run_time_ns", 0)
        return {"bpf_run_cnt": run_cnt, "bpf_run_time_ns": run_ns}

    def stats(self) -> dict:
        out = dict(self._bpf_stats)
        out["reads"] = self.reads
        if self.on_event:
            out["events_received"] = self.events_received
        return out

    # -- cuts --------------------------------------------------------------------
    def _take_cuts(self):
        """Run ``cut`` on every online CPU, then decode what it wrote. A CPU
        that went offline keeps its last cut (nothing runs there)."""
        for cpu in self._cpus:
            try:
                self._cut.test_run(flags=TEST_RUN_ON_CPU, cpu=cpu, repeat=0)
            except LoaderError as e:
                if getattr(e, "errno", None) != 6:  # ENXIO: offline now
                    raise
        lay = self._cut_layout
        ix = lay.index
        cuts = {}
        for cpu in self._cpus:
            rec = lay.struct.unpack_from(self._bss, self._cut_at(cpu))
            if not rec[ix["open_ns"]]:
                continue  # offline when we started: never opened
            run = None
            if rec[ix["run_tid"]]:
                run = OpenSlice(rec[ix["run_tid"]], rec[ix["run_start"]], rec[ix["run_tgid"]], rec[ix["run_pstart"]],
                                comm_of(rec[ix["run_comm"]]), rec[ix["run_cgroup_id"]], rec[ix["run_ns"]],
                                rec[ix["run_cycles"]])
            cuts[cpu] = CpuCut(cpu, rec[ix["ns"]], rec[ix["open_ns"]], rec[ix["busy_ns"]], rec[ix["idle_ns"]],
                               rec[ix["switches"]], rec[ix["task_drops"]], rec[ix["dropped_ns"]], rec[ix["events"]],
                               rec[ix["event_drops"]], rec[ix["deaths"]], rec[ix["epoch"]],
                               bool(rec[ix["unsettled"]]), run)
        self.cuts = cuts

    # -- reading -------------------------------------------------------------------
    def _read(self) -> UsageWindow:
        if self.obj is None:
            raise LoaderError("the eBPF monitor is not running (start() first, or it was stopped)")
        self._take_cuts()
        books = self._books
        books.begin()
        n_live = self.live_tasks = self._dump.test_run(repeat=0)["retval"]
        overflow, n_reaped, n_procs = (struct.unpack_from("<I", self._bss, off)[0] for off in self._dump_counts)
        if overflow:
            raise LoaderError("the task dump found more entries than it has records (a bug: both are max_tasks)")
        for key, e in self._dumps.reaped(self._dump_memory, n_reaped).items():
            books.reap(key, e)
        procs = self._dumps.procs(self._procs_memory, n_procs)
        live = self._dumps.live(self._dump_memory, n_live) if self.threads else None
        self._reaped_deaths = sum(c.deaths for c in self.cuts.values())
        self._last_read = time.monotonic()
        self.reads += 1
        cuts = [self.cuts[c] for c in sorted(self.cuts)]
        window = books.window(procs, cuts, source=self.source, cgroup_path=self._cgroups.path, live=live)
        window.frequency = self.frequency
        self._nspids.fill(window.processes)
        return window

    def _deaths_now(self) -> int:
        bss = self._bss
        return sum(struct.unpack_from("<Q", bss, self._deaths_at(cpu))[0] for cpu in self._cpus)

    def _reap_loop(self):
        """Reap on a schedule of its own, whatever the caller's refresh: a
        read when an eighth of the map is dead entries (the BPF program rings
        the bell at every ``bell_every``-th death on a CPU, so dead entries
        never pass 3/8 of the map), or when dead entries the reaper noticed
        have waited REAP_MAX_AGE_S with no read (so a caller that reads
        often is never doubled). Between those the thread sleeps."""
        enough = max(1, self._reap_urgent // 2)
        noticed = None  # when dead entries were first seen waiting since the last read
        while True:
            timeout = REAP_MAX_AGE_S if noticed is None else noticed + REAP_MAX_AGE_S - time.monotonic()
            if not self._bell.wait(max(timeout, 0.01)):
                return
            with self._lock:
                if self.obj is None:
                    return
                now = time.monotonic()
                if self._deaths_now() - self._reaped_deaths <= 0:
                    noticed = None
                    continue
                if noticed is None or self._last_read > noticed:
                    noticed = now  # newer than the last read
                if (self._deaths_now() - self._reaped_deaths >= enough
                        or now - noticed >= REAP_MAX_AGE_S):
                    self._read()
                    noticed = None

    # -- bounded memory for long runs ---------------------------------------------
    def forget(self, pids) -> None:
        """Drop the user-space records of processes that are fully dead (see
        ``fully_dead`` after a read) once a caller has their final numbers."""
        with self._lock:
            self._books.forget(pids)

    def compact(self) -> None:
        """Merge each process's reaped threads into one record."""
        with self._lock:
            self._books.compact()

    def held_threads(self) -> int:
        """Reaped-thread records held in user space (what must stay bounded)."""
        return len(self._books.closed)

    def held_records(self) -> dict:
        """A copy of those records: (tid, start) -> :class:`~ebpf_energy.task_books.Thread`."""
        with self._lock:
            return dict(self._books.closed)

    # -- verbose event stream --------------------------------------------------------
    def _start_stream(self, obj):
        from ebpf_energy.loader.ringbuf import RingBuffer

        lay = self._event_layout
        names = lay.names
        unpack = lay.struct.unpack_from
        cb = self.on_event

        def on_record(mv):
            rec = dict(zip(names, unpack(mv)))
            rec["comm"] = comm_of(rec["comm"])
            self.events_received += 1
            cb(rec)

        events = obj.maps["events"]
        self._ring = RingBuffer(events.fd, events.max_entries, on_record)

        def pump():
            while not self._stop.is_set():
                self._ring.poll(100)
            self._ring.consume()

        self._ring_thread = threading.Thread(target=pump, name="ebpf-energy-events", daemon=True)
        self._ring_thread.start()
