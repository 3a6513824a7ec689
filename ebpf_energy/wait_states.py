"""What each process waits on, and the class that follows (``monitor --classify``).

A separate, opt-in BPF object (``bpf/wait_states.bpf.c``) on ``sched_switch``,
``sched_wakeup`` and ``sched_wakeup_new`` keeps every thread in one of four
states: on a CPU, runnable but waiting for one, blocked in I/O
(``TASK_UNINTERRUPTIBLE`` in ``io_schedule``), or sleeping; each process gets
the time its threads spent in each. The four add up exactly to the time its
threads were watched (intervals partition it), which is what the class is
computed from (:func:`classify`, thresholds below and in the README).

Where a hardware PMU exists, two counting perf events per CPU give each
process's cycles and instructions over its slices (:mod:`ebpf_energy.pmu`),
hence IPC, and "memory-bound" for a process whose IPC is below
:data:`MEMORY_BOUND_IPC`. Where none is exposed (a VM, many clouds) they are
unknown, and the report says so (:func:`pmu_status`).
"""

import os
import time
from dataclasses import dataclass
from importlib import resources
from typing import Dict, Optional

from ebpf_energy.loader import syscall
from ebpf_energy.loader.object import BpfObject
from ebpf_energy.monitor import online_cpus
from ebpf_energy.pmu import PmuCounters, PmuUnavailable
from ebpf_energy.privilege import require_bpf

STATES = ("on_cpu", "runnable", "io", "sleep")
CLASSES = ("cpu-bound", "io-bound", "contended", "mostly idle", "mixed")
# Thresholds, as shares of the time a process's threads were watched:
IO_BOUND_SHARE = 0.2  # io-bound: blocked in I/O >= 20% of the time, and at least as long as on a CPU
IDLE_MAX_DEMAND = 0.1  # mostly idle: on a CPU + runnable < 10% (and not io-bound)
CONTENDED_RATIO = 0.5  # contended: waited runnable >= half as long as it ran (a third of its CPU demand)
CPU_BOUND_SHARE = 0.5  # cpu-bound: on a CPU >= 50% of the time (and not contended)
# memory-bound: fewer than one instruction retired per cycle on a CPU (cores
# retire up to 4-8 per cycle; below 1 it mostly waits on memory)
MEMORY_BOUND_IPC = 1.0
DEFAULT_MAX_THREADS = 32768


def object_path() -> str:
    return str(resources.files("ebpf_energy") / "bpf" / "wait_states.bpf.o")


@dataclass
class WaitStates:
    """Nanoseconds per state of one process's threads, summed; counts beside."""

    on_cpu_ns: int = 0
    runnable_ns: int = 0
    io_ns: int = 0
    sleep_ns: int = 0
    switches: int = 0  # times a thread got a CPU
    wakeups: int = 0  # times a thread was woken from a sleep or I/O
    cycles: int = 0  # PMU counts over its closed slices (0 when not counted)
    instructions: int = 0

    @property
    def watched_ns(self) -> int:
        return self.on_cpu_ns + self.runnable_ns + self.io_ns + self.sleep_ns

    def minus(self, earlier: Optional["WaitStates"]) -> "WaitStates":
        if earlier is None:
            return WaitStates(**self.__dict__)
        return WaitStates(*(max(0, a - b) for a, b in zip(self._values(), earlier._values())))

    def add(self, books: dict, open_ns=(0, 0, 0, 0)) -> None:
        """Add a thread's or process's books (``ns`` per state, counts), plus an open interval."""
        ns = books["ns"]
        self.on_cpu_ns += ns[0] + open_ns[0]
        self.runnable_ns += ns[1] + open_ns[1]
        self.io_ns += ns[2] + open_ns[2]
        self.sleep_ns += ns[3] + open_ns[3]
        self.switches += books["switches"]
        self.wakeups += books["wakeups"]
        self.cycles += books.get("cycles", 0)
        self.instructions += books.get("instructions", 0)

    def _values(self):
        return (self.on_cpu_ns, self.runnable_ns, self.io_ns, self.sleep_ns, self.switches, self.wakeups,
                self.cycles, self.instructions)

    @property
    def ipc(self) -> Optional[float]:
        return self.instructions / self.cycles if self.cycles else None

    def to_dict(self, counted: bool = False) -> dict:
        """``counted``: whether the PMU counted (else cycles, instructions and
        IPC are unknown: None, never 0)."""
        ipc = self.ipc if counted else None
        return {"on_cpu_ns": self.on_cpu_ns, "runnable_ns": self.runnable_ns, "io_ns": self.io_ns,
                "sleep_ns": self.sleep_ns, "switches": self.switches, "wakeups": self.wakeups,
                "class": classify(self), "cycles": self.cycles if counted else None,
                "instructions": self.instructions if counted else None, "ipc": ipc,
                "memory_bound": None if ipc is None else ipc < MEMORY_BOUND_IPC}


def classify(w: WaitStates) -> str:
    """One of :data:`CLASSES`, by the first rule that holds:

    1. io-bound: ``io >= 20%`` of the watched time and ``io >= on_cpu``;
    2. mostly idle: ``on_cpu + runnable < 10%``;
    3. contended: ``runnable >= on_cpu / 2`` (it waited for a CPU at least a
       third of the time it wanted one);
    4. cpu-bound: ``on_cpu >= 50%``;
    5. mixed: none of these (e.g. runs 30%, sleeps 70%).
    """
    total = w.watched_ns
    if total <= 0:
        return "mostly idle"
    if w.io_ns >= IO_BOUND_SHARE * total and w.io_ns >= w.on_cpu_ns:
        return "io-bound"
    if w.on_cpu_ns + w.runnable_ns < IDLE_MAX_DEMAND * total:
        return "mostly idle"
    if w.runnable_ns >= CONTENDED_RATIO * w.on_cpu_ns:
        return "contended"
    if w.on_cpu_ns >= CPU_BOUND_SHARE * total:
        return "cpu-bound"
    return "mixed"


def pmu_status(root: str = "/sys/bus/event_source/devices") -> str:
    """Whether cycles and instructions could be counted per slice here."""
    try:
        names = os.listdir(root)
    except OSError:
        names = []
    core = [n for n in names if n in ("cpu", "cpu_core", "cpu_atom") or n.startswith("armv")]
    if core:
        return f"hardware PMU present ({', '.join(sorted(core))})"
    return "no hardware PMU: IPC and memory-boundness unknown"


class WaitStateSampler:
    """Load, attach, read cumulative per-process states, close. Not a CPU-time
    sampler: it runs beside one, and its reads are joined to its rows by pid."""

    def __init__(self, max_threads: int = DEFAULT_MAX_THREADS, path: Optional[str] = None,
                 pmu: Optional[str] = "hardware"):
        """``pmu``: "hardware" (cycles and instructions where a PMU exists),
        "software" (the CPU clock in their place: tests), or None (off)."""
        self.max_threads = max_threads
        self.path = path or object_path()
        self.obj: Optional[BpfObject] = None
        self.pmu_kind = pmu
        self.pmu: Optional[PmuCounters] = None
        self.pmu_status = "PMU counting off: IPC and memory-boundness unknown"

    def start(self) -> None:
        require_bpf("the wait-state classifier")
        if self.pmu_kind:
            counters = PmuCounters(self.pmu_kind)
            try:
                counters.open(online_cpus())
                self.pmu, self.pmu_status = counters, counters.status()
            except PmuUnavailable as e:
                self.pmu_status = str(e)
        obj = BpfObject.open(self.path)
        try:
            obj.set_max_entries("threads", self.max_threads)
            for name in ("pmu_cycles", "pmu_instructions"):
                obj.set_max_entries(name, syscall.num_possible_cpus())
            obj.rodata["count_pmu"] = self.pmu is not None
            obj.load()
            if self.pmu is not None:
                self.pmu.fill(obj)
            obj.attach()
        except BaseException:
            obj.close()
            self._close_pmu()
            raise
        self.obj = obj

    @property
    def counted(self) -> bool:
        """Whether cycles and instructions are counted (IPC known)."""
        return self.pmu is not None

    def _close_pmu(self):
        if self.pmu is not None:
            self.pmu.close()
            self.pmu = None

    def read(self) -> Dict[int, WaitStates]:
        return self.snapshot()[1]

    def snapshot(self):
        """``(now_ns, {tgid: WaitStates})``: every interval up to ``now_ns``. A
        live thread's books come in one lookup (closed sums and since agree),
        and its open interval runs to ``now_ns``, taken after the walk: a
        thread that moved on meanwhile has that last bit counted in its old
        state, but its total is exact, so for a thread that never stops,
        on_cpu + runnable grows by exactly the time between two snapshots;
        exited threads come from their process's entry. A thread that exits
        between the two walks may count twice (read live, then folded)."""
        if self.obj is None:
            raise RuntimeError("WaitStateSampler.read() before start()")
        tmap = self.obj.maps["threads"]
        threads = [(tid, _untorn(tmap, tid, t)) for tid, t in tmap.items()]
        # after the walk (which takes a while on a busy machine): every thread's
        # books then end at this one instant, its open interval running up to it
        now = time.monotonic_ns()
        procs = self.obj.maps["procs"].items()
        out: Dict[int, WaitStates] = {}
        for _, t in threads:
            if t is None:  # exited while read
                continue
            w = out.setdefault(t["tgid"], WaitStates())
            open_ns = [0] * len(STATES)
            if now > t["since_ns"] and t["state"] < len(STATES):
                open_ns[t["state"]] = now - t["since_ns"]
            w.add(t, open_ns)
        for tgid, per_cpu in procs:  # exited threads, one copy per CPU: summed
            w = out.setdefault(tgid, WaitStates())
            for v in per_cpu:
                w.add(v)
        return now, out

    def drops(self) -> Dict[str, int]:
        bss = self.obj.bss if self.obj is not None else None
        if bss is None:
            return {"threads": 0, "intervals": 0}
        return {"threads": int(bss["thread_drops"]), "intervals": int(bss["proc_drops"])}

    def pmu_read_failures(self) -> int:
        """Switches whose counters could not be read (their slice counts nothing)."""
        return int(self.obj.bss["pmu_misses"]) if self.obj is not None and self.counted else 0

    def program_ids(self) -> Dict[str, int]:
        return {n: p.id for n, p in self.obj.programs.items()} if self.obj is not None else {}

    def stop(self) -> None:
        if self.obj is not None:
            self.obj.close()
            self.obj = None
        self._close_pmu()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def _untorn(tmap, tid, t, tries: int = 5):
    """The thread's entry as one consistent copy (seq == seq_end), looked up
    again while the program was writing it as it was copied."""
    for _ in range(tries):
        if t is None or t["seq"] == t["seq_end"]:
            return t
        t = tmap.get(tid)
    return t


class ClassifyingSampler:
    """A CPU-time sampler with wait states joined on: every read's processes
    carry ``wait_states`` (a :class:`WaitStates`, cumulative like the rest of
    the window) and the window carries ``wait_states_info`` (rules, PMU,
    drops). Everything else is the wrapped sampler's."""

    def __init__(self, inner, waits: Optional[WaitStateSampler] = None):
        self.inner = inner
        self.waits = waits or WaitStateSampler()
        self.source = inner.source
        self.base: Dict[int, WaitStates] = {}

    def start(self) -> None:
        self.waits.start()
        try:
            self.inner.start()
            # the CPU-time window opens at the inner start: what the wait-state
            # program saw while that loaded is taken off every read (open
            # intervals included), so both cover the same window
            self.base = self.waits.read()
        except BaseException:
            self.waits.stop()
            raise

    def read(self):
        window = self.inner.read()
        states = self.waits.read()
        for pid, p in window.processes.items():
            p.wait_states = states.get(pid, WaitStates()).minus(self.base.get(pid))
        for p in window.processes.values():
            if getattr(p, "wait_states", None) is not None:
                p.wait_states_counted = self.waits.counted
        window.wait_states_info = {"pmu": self.waits.pmu_status, "drops": self.waits.drops(),
                                   "thresholds": {"io_bound_share": IO_BOUND_SHARE,
                                                  "idle_max_demand": IDLE_MAX_DEMAND,
                                                  "contended_ratio": CONTENDED_RATIO,
                                                  "cpu_bound_share": CPU_BOUND_SHARE,
                                                  "memory_bound_ipc": MEMORY_BOUND_IPC}}
        if self.waits.counted:
            window.wait_states_info["pmu_read_failures"] = self.waits.pmu_read_failures()
        return window

    def stop(self) -> None:
        try:
            self.inner.stop()
        finally:
            self.waits.stop()

    def __getattr__(self, name):  # stats(), fully_dead, forget(), ...: the CPU-time sampler's
        return getattr(self.inner, name)


# -- in reports ------------------------------------------------------------------
TABLE_HEAD = ["RUN%", "WAIT%", "IO%", "SLEEP%", "CLASS"]
CSV_COLUMNS = ["on_cpu_ns", "runnable_ns", "io_ns", "sleep_ns", "wakeups", "cycles", "instructions", "ipc",
               "wait_class"]  # cycles, instructions, ipc: empty where no PMU counted


def table_cells(row: dict) -> list:
    """A process row's shares of its watched time and its class ('-' when unseen)."""
    w = row.get("wait_states")
    if not w:
        return ["-"] * len(TABLE_HEAD)
    total = w["on_cpu_ns"] + w["runnable_ns"] + w["io_ns"] + w["sleep_ns"]
    pct = [f"{100 * w[k] / total:.0f}" if total else "-" for k in ("on_cpu_ns", "runnable_ns", "io_ns", "sleep_ns")]
    return pct + [w["class"] + (", memory-bound" if w.get("memory_bound") else "")]


def csv_fields(row: dict) -> dict:
    w = row.get("wait_states") or {}
    return {**{k: w.get(k) for k in CSV_COLUMNS[:-1]}, "wait_class": w.get("class")}


def table_note(report: dict) -> str:
    info = report["wait_states"]
    t = info["thresholds"]
    drops = sum(info.get("drops", {}).values())
    return (f"Wait states:    RUN/WAIT/IO/SLEEP% of each process's watched time; class: io-bound (io >= "
            f"{t['io_bound_share']:.0%} and >= run), mostly idle (run + wait < {t['idle_max_demand']:.0%}), contended "
            f"(wait >= {t['contended_ratio']:g} x run), cpu-bound (run >= {t['cpu_bound_share']:.0%}), else mixed; "
            f"memory-bound where IPC < {t.get('memory_bound_ipc', MEMORY_BOUND_IPC):g}; {info['pmu']}" + (f"; {drops} lost to full maps" if drops else ""))
