"""The user-space half of the eBPF monitor's books: every task's CPU time as of a cut.

The kernel side (``bpf/energy_monitor.bpf.c``) keeps one entry per task,
keyed by ``(tid, start time)``, with one copy per CPU; a *cut* (the ``cut``
program run on every CPU) records each CPU's totals and open slice at one
instant and starts a new epoch there; the *dump* (the ``dump`` program,
run right after) writes every entry as it stood at the cut, summed over its
copies, into an array user space reads from memory, and takes the dead
ones out of the map. This module, pure and kernel-free, turns those records
into a consistent picture at the cut:

* a live entry counts as it stood at the cut;
* an entry the dump took out (a dead task) is folded into user-space
  totals: the part at the cut now, whatever ran after the cut (never, for
  a task that died before it) at the next read, which comes after it;
* the slice still running on each CPU at the cut is added in the
  scheduler's clock, as the cut measured it.

So every task's total equals what the CPUs' books say it ran up to the cut,
nothing counted twice or missing, and totals never go backwards.
"""

import struct
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

from ebpf_energy.usage import ProcessUsage, ThreadUsage, UsageWindow, comm_of

FLAG_EXITED = 0x1
FLAG_DEAD = 0x2
MAX_CLASSES = 4  # EM_MAX_CLASSES: core classes the kernel side sums apart

TaskKey = Tuple[int, int]  # struct task_key: (tid, start time >> EM_START_SHIFT)


class Entry(NamedTuple):
    """One map entry, summed over its per-CPU copies (one ``dump`` record)."""

    cut_cpu_ns: int  # as it stood at the cut
    cut_slices: int
    cpu_ns: int  # as it stood at the dump (after the cut)
    slices: int
    flags: int
    tgid: int
    pstart: int
    comm: str
    cgroup_id: int
    meta_ns: int
    cut_class_ns: Tuple[int, ...]  # cut_cpu_ns by core class
    class_ns: Tuple[int, ...]  # cpu_ns by core class
    cut_cycles: int  # CPU time x its CPU's frequency (0 unless tracked)
    cycles: int


class ProcRecord(NamedTuple):
    """A process's live entries summed in the kernel (one ``struct proc_dump``)."""

    tgid: int
    pstart: int
    tasks: int
    cpu_ns: int
    slices: int
    not_exited: int
    leader: bool  # comm and cgroup_id are the group leader's
    cgroup_id: int
    comm: str
    class_ns: Tuple[int, ...]
    cycles: int


_new = tuple.__new__  # a NamedTuple without its Python-level __new__: this runs per record per read

# struct task_dump and struct proc_dump, member by member (arrays: one name per element)
TASK_FIELDS = ("tid", "start", "cpu_ns", "slices", "cpu_ns_now", "slices_now", "flags", "tgid", "pstart",
               "cgroup_id", "meta_ns", "comm") + ("class_ns",) * 4 + ("class_ns_now",) * 4 + ("cycles", "cycles_now")
PROC_FIELDS = ("tgid", "tasks", "pstart", "cpu_ns", "slices", "not_exited", "leader", "cgroup_id", "comm") \
    + ("class_ns",) * 4 + ("cycles",)
COMM_CACHE_MAX = 1 << 16


def _array_struct(record, expected):
    """The record's struct.Struct, padded to an array's 8-byte value stride."""
    if tuple(record.names) != expected:
        raise ValueError(f"the object's dump record has members {record.names}, expected {expected}")
    stride = (record.size + 7) // 8 * 8
    pad = stride - record.struct.size
    return struct.Struct(record.struct.format + (f"{pad}x" if pad else "")), stride


class DumpDecoder:
    """Reads what the ``dump`` program wrote, straight from the arrays'
    memory (one ``iter_unpack`` per read): ``struct task_dump`` records (live
    ones from the bottom of ``dumps``, reaped ones from the top) and
    ``struct proc_dump`` records (``procs``), one per process with live
    entries."""

    def __init__(self, task_record, proc_record, slots: int):
        self._task, self.stride = _array_struct(task_record, TASK_FIELDS)
        self._proc, self.proc_stride = _array_struct(proc_record, PROC_FIELDS)
        self.slots = slots
        self._comms: Dict[bytes, str] = {}  # raw comm -> text: most tasks keep their name

    def _comm(self, raw: bytes) -> str:
        comms = self._comms
        comm = comms.get(raw)
        if comm is None:
            if len(comms) > COMM_CACHE_MAX:
                comms.clear()
            comm = comms[raw] = comm_of(raw)
        return comm

    def tasks(self, memory, first: int, n: int) -> Dict[TaskKey, Entry]:
        """Records ``first`` to ``first + n`` of ``dumps``, by task key."""
        out: Dict[TaskKey, Entry] = {}
        comm = self._comm
        for (tid, start, cpu, sl, cpu_now, sl_now, fl, tgid, pstart, cg, meta, raw,
             c0, c1, c2, c3, n0, n1, n2, n3, cyc, cyc_now) in self._task.iter_unpack(
                memory[first * self.stride:(first + n) * self.stride]):
            out[(tid, start)] = _new(Entry, (cpu, sl, cpu_now, sl_now, fl, tgid, pstart, comm(raw), cg, meta,
                                             (c0, c1, c2, c3), (n0, n1, n2, n3), cyc, cyc_now))
        return out

    def live(self, memory, n: int) -> Dict[TaskKey, Entry]:
        return self.tasks(memory, 0, n)

    def reaped(self, memory, n: int) -> Dict[TaskKey, Entry]:
        return self.tasks(memory, self.slots - n, n)

    def procs(self, memory, n: int) -> List[ProcRecord]:
        comm = self._comm
        return [_new(ProcRecord, (tgid, pstart, tasks, cpu, sl, ne, bool(leader), cg, comm(raw), (c0, c1, c2, c3),
                                  cyc))
                for tgid, tasks, pstart, cpu, sl, ne, leader, cg, raw, c0, c1, c2, c3, cyc
                in self._proc.iter_unpack(memory[:n * self.proc_stride])]


@dataclass
class Thread:
    """A task's running totals in user space (its reaped entries folded in)."""

    tid: int
    start: int
    tgid: int = 0
    pstart: int = 0
    comm: str = ""
    cgroup_id: int = 0
    cpu_ns: int = 0
    slices: int = 0
    flags: int = 0
    meta_ns: int = 0
    class_ns: List[int] = field(default_factory=lambda: [0] * MAX_CLASSES)
    cycles: int = 0

    def take_meta(self, e: Entry):
        if e.meta_ns >= self.meta_ns and e.meta_ns:
            self.meta_ns = e.meta_ns
            self.tgid = e.tgid or self.tgid
            self.pstart = e.pstart or self.pstart
            self.comm = e.comm or self.comm
            self.cgroup_id = e.cgroup_id or self.cgroup_id


@dataclass
class OpenSlice:
    """The slice running on one CPU at its cut (from ``struct cpu_cut``)."""

    tid: int
    start: int
    tgid: int
    pstart: int
    comm: str
    cgroup_id: int
    run_ns: int
    cycles: int = 0  # run_ns at its CPU's frequency (0 unless tracked)


@dataclass
class CpuCut:
    """One CPU's books at its cut (``struct cpu_cut``)."""

    cpu: int
    ns: int
    open_ns: int
    busy_ns: int
    idle_ns: int
    switches: int
    task_drops: int
    dropped_ns: int
    events: int
    event_drops: int
    deaths: int
    epoch: int
    unsettled: bool
    running: Optional[OpenSlice]


def _add_into(acc: List[int], parts) -> None:
    for i, v in enumerate(parts):
        acc[i] += v


class Books:
    """Reaped tasks' totals, and the assembly of one read into a window.

    ``cpu_class[cpu]`` is the core class of each CPU (all 0 on a machine of
    one kind): a slice running at a cut counts in its CPU's class.
    ``cycles``: the kernel counts cycles (frequency tracked), so processes
    carry them; otherwise their ``cycles`` is None."""

    def __init__(self, cpu_class: Optional[List[int]] = None, cycles: bool = False):
        self.cpu_class = list(cpu_class or [])
        self.cycles = cycles
        self.nclasses = max(self.cpu_class, default=0) + 1
        self.closed: Dict[TaskKey, Thread] = {}
        # ran after a cut, before the reap: (cpu_ns, slices, by class, cycles)
        self._pending: Dict[TaskKey, Tuple[int, int, Tuple[int, ...], int]] = {}
        self._first_pstart: Dict[int, int] = {}  # tgid -> start of the first process seen with it
        self.fully_dead = set()  # process keys whose every thread was reaped

    def class_of(self, cpu: int) -> int:
        return self.cpu_class[cpu] if cpu < len(self.cpu_class) else 0

    def begin(self):
        """Start a read (after the new cut): what was reaped after the last
        cut happened before this one."""
        for key, (cpu, sl, by_class, cycles) in self._pending.items():
            t = self.closed[key]
            t.cpu_ns += cpu
            t.slices += sl
            t.cycles += cycles
            _add_into(t.class_ns, by_class)
        self._pending.clear()

    def reap(self, key: TaskKey, e: Entry):
        """Fold an entry taken out of the map: its value at the cut now, the rest at the next read."""
        t = self.closed.get(key)
        if t is None:
            t = self.closed[key] = Thread(key[0], key[1])
        t.cpu_ns += e.cut_cpu_ns
        t.slices += e.cut_slices
        t.cycles += e.cut_cycles
        _add_into(t.class_ns, e.cut_class_ns)
        t.flags |= e.flags
        t.take_meta(e)
        later = (e.cpu_ns - e.cut_cpu_ns, e.slices - e.cut_slices)
        if later != (0, 0):
            cpu, sl, by_class, cycles = self._pending.get(key, (0, 0, (0,) * MAX_CLASSES, 0))
            self._pending[key] = (cpu + later[0], sl + later[1],
                                  tuple(p + n - c for p, n, c in zip(by_class, e.class_ns, e.cut_class_ns)),
                                  cycles + e.cycles - e.cut_cycles)

    def process_key(self, tgid: int, pstart: int):
        """A process's key in :attr:`UsageWindow.processes`: its pid for the
        first (oldest) process seen with that pid, ``(pid, start)`` for later
        ones (pid reuse), so keys stay the same from read to read."""
        first = self._first_pstart.get(tgid)
        if first is None and pstart:
            first = self._first_pstart[tgid] = pstart
        return tgid if first == pstart or not pstart else (tgid, pstart)

    def _register_first(self, seen):
        """Before a window is assembled: a pid not seen before belongs, as its
        plain key, to the oldest of its processes in this read, whatever order
        the map hands them out in."""
        first = self._first_pstart
        new: Dict[int, int] = {}
        for tgid, pstart in seen:
            if pstart and tgid not in first and (tgid not in new or pstart < new[tgid]):
                new[tgid] = pstart
        first.update(new)

    def window(self, procs_live: List[ProcRecord], cuts: List[CpuCut], *, source: str, cgroup_path,
               live: Optional[Dict[TaskKey, Entry]] = None) -> UsageWindow:
        """Every process: its live entries (summed per process in the kernel),
        its reaped threads and its slices running at the cut. ``live`` (the
        live task records) lists each process's threads; a task in two of
        those places (an exec from a thread takes over the leader's key) is
        one thread."""
        nc = self.nclasses
        procs: Dict[object, ProcessUsage] = {}
        alive, seen = set(), set()
        pkey_of = self.process_key
        closed, pending = self.closed, self._pending
        running: Dict[TaskKey, Tuple[OpenSlice, List[int]]] = {}
        for c in cuts:
            r = c.running
            if r is not None and r.tid:
                key = (r.tid, r.start)
                by_class = running[key][1] if key in running else [0] * nc  # one task in two CPUs' cuts: one thread
                by_class[self.class_of(c.cpu)] += r.run_ns
                if key in running:
                    r = OpenSlice(r.tid, r.start, r.tgid, r.pstart, r.comm, r.cgroup_id,
                                  r.run_ns + running[key][0].run_ns, r.cycles + running[key][0].cycles)
                running[key] = (r, by_class)
        self._register_first([(p.tgid, p.pstart) for p in procs_live]
                             + [(t.tgid or abs(t.tid), t.pstart) for t in closed.values()]
                             + [(r.tgid or r.tid, r.pstart) for r, _ in running.values()])

        track = self.cycles

        def add(tgid, pstart, comm, cgid, leader, cpu, sl, by_class, cycles, exited, dead):
            pk = pkey_of(tgid, pstart)
            p = procs.get(pk)
            if p is None:
                p = procs[pk] = ProcessUsage(pid=tgid, comm=comm, cpu_ns=0, slices=0, exited=True,
                                             cgroup_id=cgid or None, cgroup=cgroup_path(cgid),
                                             cpu_ns_by_class=[0] * nc, cycles=0 if track else None)
                seen.add(pk)
            p.cpu_ns += cpu
            p.slices += sl
            if track:
                p.cycles += cycles
            acc = p.cpu_ns_by_class
            for i in range(nc):
                acc[i] += by_class[i]
            if not dead:
                alive.add(pk)
            if not exited:
                p.exited = False
            if leader and comm:
                p.comm = comm
                if cgid and cgid != p.cgroup_id:
                    p.cgroup_id, p.cgroup = cgid, cgroup_path(cgid)
            elif not p.comm:
                p.comm = comm
            return p

        # The common case inline (this runs for every process at every read):
        # a process's first record makes its ProcessUsage whole.
        first, nc1 = self._first_pstart, nc == 1
        paths: Dict[int, Optional[str]] = {}
        for rec in procs_live:
            tgid, pstart, _, cpu, sl, not_exited, leader, cgid, comm, by_class, cycles = rec
            pk = tgid if not pstart or first.get(tgid) == pstart else (tgid, pstart)
            if pk in procs:  # a second record of one process (the kernel writes one; kept for safety)
                # still in the map, so not reaped (dead in user space means reaped); a
                # process running at the cut is not exited (its slice below says so)
                add(tgid, pstart, comm, cgid, leader, cpu, sl, by_class, cycles, not_exited == 0, False)
                continue
            path = paths.get(cgid, 0)
            if path == 0:
                path = paths[cgid] = cgroup_path(cgid)
            procs[pk] = ProcessUsage(tgid, comm, cpu, sl, not_exited == 0, path, cgid or None, [],
                                     [by_class[0]] if nc1 else list(by_class[:nc]), cycles if track else None)
            seen.add(pk)
            alive.add(pk)
        for key, t in closed.items():
            # what ran after the cut is counted at the next read: not final yet
            tgid = t.tgid or abs(t.tid)
            add(tgid, t.pstart, t.comm, t.cgroup_id, t.tid == tgid, t.cpu_ns, t.slices, t.class_ns, t.cycles, True,
                key not in running and key not in pending)
        for key, (r, by_class) in running.items():
            tgid = r.tgid or r.tid
            add(tgid, r.pstart, r.comm, r.cgroup_id, r.tid == tgid, r.run_ns, 0, by_class, r.cycles, False, False)
        if live is not None:
            self._list_threads(procs, live, running)
        self.fully_dead = seen - alive
        start = min(c.open_ns for c in cuts)
        end = max(c.ns for c in cuts)
        busy = sum(c.busy_ns for c in cuts) + sum(r.run_ns for r, _ in running.values())
        idle = [c.idle_ns for c in cuts]
        return UsageWindow(
            source=source, start_ns=start, end_ns=end, ncpus=len(cuts), processes=procs,
            idle_ns=sum(idle), idle_ns_per_cpu=idle,
            steal_ns=len(cuts) * (end - start) - busy - sum(idle),
            samples_or_events=sum(c.switches for c in cuts),
            drops={"tasks": sum(c.task_drops for c in cuts), "events": sum(c.event_drops for c in cuts)},
            dropped_cpu_ns=sum(c.dropped_ns for c in cuts),
            cpu_class=[self.class_of(c.cpu) for c in cuts])

    def _list_threads(self, procs, live, running):
        """Each process's threads, from the live task records, the reaped
        threads and the running slices (their sums are the process's)."""
        nc = self.nclasses
        pkey_of = self.process_key
        closed = self.closed

        def thread(tid, tgid, pstart, comm, cpu, sl, by_class, exited):
            tgid = tgid or abs(tid)
            procs[pkey_of(tgid, pstart)].threads.append(
                ThreadUsage(tid, comm, cpu, sl, exited, cpu_ns_by_class=list(by_class[:nc])))

        for key, e in live.items():
            cpu, sl, by_class = e.cut_cpu_ns, e.cut_slices, list(e.cut_class_ns)
            t = closed.get(key)
            if t is not None:
                cpu += t.cpu_ns
                sl += t.slices
                _add_into(by_class, t.class_ns)
            r = running.get(key)
            if r is not None:
                cpu += r[0].run_ns
                _add_into(by_class, r[1])
            thread(key[0], e.tgid, e.pstart, e.comm, cpu, sl, by_class,
                   bool(e.flags & (FLAG_EXITED | FLAG_DEAD)) and r is None)
        for key, t in closed.items():
            if key in live:
                continue
            r = running.get(key)
            by_class = list(t.class_ns)
            if r is not None:
                _add_into(by_class, r[1])
            thread(t.tid, t.tgid, t.pstart, t.comm, t.cpu_ns + (r[0].run_ns if r else 0), t.slices, by_class,
                   r is None)
        for key, (r, by_class) in running.items():
            if key not in live and key not in closed:
                thread(r.tid, r.tgid, r.pstart, r.comm, r.run_ns, 0, by_class, False)

    def forget(self, pkeys: Iterable) -> None:
        """Drop the records of processes whose every thread was reaped, once
        a caller has their final numbers (the exporter; a one-shot monitor
        keeps them for its summary)."""
        pkeys = set(pkeys)
        if not pkeys:
            return
        for key in [k for k, t in self.closed.items()
                    if self.process_key(t.tgid or t.tid, t.pstart) in pkeys and k not in self._pending]:
            del self.closed[key]

    def compact(self) -> None:
        """Merge the reaped threads of each process into one record (tid
        ``-tgid``, never a real tid): a long-lived process that starts and
        ends threads costs one record, not one per thread."""
        groups: Dict[Tuple[int, int], List[TaskKey]] = {}
        for key, t in self.closed.items():
            if key in self._pending:
                continue
            groups.setdefault((t.tgid or abs(t.tid), t.pstart), []).append(key)
        for (tgid, pstart), keys in groups.items():
            if len(keys) < 2:
                continue
            parts = [self.closed.pop(k) for k in keys]
            lead = next((t for t in parts if t.tid == tgid), None) or max(parts, key=lambda t: t.meta_ns)
            by_class = [0] * MAX_CLASSES
            for t in parts:
                _add_into(by_class, t.class_ns)
            self.closed[(-tgid, pstart)] = Thread(
                -tgid, pstart, tgid=tgid, pstart=pstart, comm=lead.comm, cgroup_id=lead.cgroup_id,
                cpu_ns=sum(t.cpu_ns for t in parts), slices=sum(t.slices for t in parts),
                flags=FLAG_DEAD | FLAG_EXITED, meta_ns=max(t.meta_ns for t in parts), class_ns=by_class,
                cycles=sum(t.cycles for t in parts))
