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
from dataclasses import dataclass
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

from ebpf_energy.usage import ProcessUsage, ThreadUsage, UsageWindow, comm_of

FLAG_EXITED = 0x1
FLAG_DEAD = 0x2

TaskKey = Tuple[int, int]  # struct task_key: (tid, start time >> EM_START_SHIFT)


class Entry(NamedTuple):
    """One map entry, summed over its per-CPU copies (one ``dump`` record)."""

    cut_cpu_ns: int  # as it stood at the cut
    cut_slices: int
    cut_flags: int
    cpu_ns: int  # as it stood at the dump (after the cut)
    slices: int
    flags: int
    tgid: int
    pstart: int
    comm: str
    cgroup_id: int
    meta_ns: int


_new_entry = tuple.__new__  # an Entry without NamedTuple's Python-level __new__: this runs per task per read

# struct task_dump, member by member: the order DumpDecoder unpacks
DUMP_FIELDS = ("tid", "start", "cpu_ns", "slices", "cpu_ns_now", "slices_now", "flags", "tgid", "pstart",
               "cgroup_id", "meta_ns", "comm")
COMM_CACHE_MAX = 1 << 16


class DumpDecoder:
    """Reads the records the ``dump`` program wrote (``struct task_dump``, one
    per task entry, summed over its CPU copies in the kernel), straight from
    the ``dumps`` array's memory: one ``iter_unpack`` per read."""

    def __init__(self, record):
        if tuple(record.names) != DUMP_FIELDS:
            raise ValueError(f"struct task_dump has members {record.names}, expected {DUMP_FIELDS}")
        self.stride = (record.size + 7) // 8 * 8  # an array's values are 8-byte aligned
        pad = self.stride - record.struct.size
        self._struct = struct.Struct(record.struct.format + (f"{pad}x" if pad else ""))
        self._comms: Dict[bytes, str] = {}  # raw comm -> text: most tasks keep their name

    def decode(self, memory, n: int) -> Tuple[Dict[TaskKey, Entry], Dict[TaskKey, Entry]]:
        """The first ``n`` records: (live entries, entries reaped by this dump)."""
        live: Dict[TaskKey, Entry] = {}
        reaped: Dict[TaskKey, Entry] = {}
        comms = self._comms
        if len(comms) > COMM_CACHE_MAX:
            comms.clear()
        for tid, start, cpu, sl, cpu_now, sl_now, fl, tgid, pstart, cg, meta, raw in \
                self._struct.iter_unpack(memory[:n * self.stride]):
            comm = comms.get(raw)
            if comm is None:
                comm = comms[raw] = comm_of(raw)
            (reaped if fl & FLAG_DEAD else live)[(tid, start)] = _new_entry(
                Entry, (cpu, sl, fl, cpu_now, sl_now, fl, tgid, pstart, comm, cg, meta))
        return live, reaped


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


class Books:
    """Reaped tasks' totals, and the assembly of one read into a window."""

    def __init__(self):
        self.closed: Dict[TaskKey, Thread] = {}
        self._pending: Dict[TaskKey, Tuple[int, int]] = {}  # ran after a cut, before the reap
        self._first_pstart: Dict[int, int] = {}  # tgid -> start of the first process seen with it
        self.fully_dead = set()  # process keys whose every thread was reaped

    def begin(self):
        """Start a read (after the new cut): what was reaped after the last
        cut happened before this one."""
        for key, (cpu, sl) in self._pending.items():
            t = self.closed[key]
            t.cpu_ns += cpu
            t.slices += sl
        self._pending.clear()

    def reap(self, key: TaskKey, e: Entry):
        """Fold an entry taken out of the map: its value at the cut now, the rest at the next read."""
        t = self.closed.get(key)
        if t is None:
            t = self.closed[key] = Thread(key[0], key[1])
        t.cpu_ns += e.cut_cpu_ns
        t.slices += e.cut_slices
        t.flags |= e.flags
        t.take_meta(e)
        later = (e.cpu_ns - e.cut_cpu_ns, e.slices - e.cut_slices)
        if later != (0, 0):
            p = self._pending.get(key, (0, 0))
            self._pending[key] = (p[0] + later[0], p[1] + later[1])

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

    def window(self, live: Dict[TaskKey, Entry], cuts: List[CpuCut], *, source: str, cgroup_path,
               with_threads: bool) -> UsageWindow:
        """One pass over every task (reaped, in the map, running at the cut),
        each summed into its process: a task in two of those places (an exec
        from a thread takes over the leader's key) is one thread."""
        procs: Dict[object, ProcessUsage] = {}
        alive, seen = set(), set()
        pkey_of = self.process_key
        closed, pending = self.closed, self._pending
        running: Dict[TaskKey, OpenSlice] = {}
        for c in cuts:
            r = c.running
            if r is not None and r.tid:
                key = (r.tid, r.start)
                if key in running:  # one task in two CPUs' cuts (an unseen switch): one thread
                    r = OpenSlice(r.tid, r.start, r.tgid, r.pstart, r.comm, r.cgroup_id, r.run_ns + running[key].run_ns)
                running[key] = r
        self._register_first([(e.tgid or k[0], e.pstart) for k, e in live.items()]
                             + [(t.tgid or abs(t.tid), t.pstart) for t in closed.values()]
                             + [(r.tgid or r.tid, r.pstart) for r in running.values()])

        def add(tid, tgid, pstart, comm, cgid, cpu, sl, exited, dead):
            tgid = tgid or abs(tid)
            pk = pkey_of(tgid, pstart)
            p = procs.get(pk)
            if p is None:
                p = procs[pk] = ProcessUsage(pid=tgid, comm=comm, cpu_ns=0, slices=0, exited=True,
                                             cgroup_id=cgid or None, cgroup=cgroup_path(cgid))
                seen.add(pk)
            p.cpu_ns += cpu
            p.slices += sl
            if not dead:
                alive.add(pk)
            if not exited:
                p.exited = False
            if tid == tgid and comm:
                p.comm = comm
                if cgid and cgid != p.cgroup_id:
                    p.cgroup_id, p.cgroup = cgid, cgroup_path(cgid)
            elif not p.comm:
                p.comm = comm
            if with_threads:
                p.threads.append(ThreadUsage(tid, comm, cpu, sl, exited))

        for key, e in live.items():
            cpu, sl = e.cut_cpu_ns, e.cut_slices
            t = closed.get(key)
            if t is not None:
                cpu += t.cpu_ns
                sl += t.slices
            r = running.get(key)
            if r is not None:
                cpu += r.run_ns
            # still in the map, so not reaped (dead in user space means reaped)
            exited = bool((e.flags | e.cut_flags) & (FLAG_EXITED | FLAG_DEAD)) and r is None
            add(key[0], e.tgid, e.pstart, e.comm, e.cgroup_id, cpu, sl, exited, False)
        for key, t in closed.items():
            if key in live:
                continue
            r = running.get(key)
            cpu = t.cpu_ns + (r.run_ns if r is not None else 0)
            # what ran after the cut is counted at the next read: not final yet
            final = r is None and key not in pending
            add(t.tid, t.tgid, t.pstart, t.comm, t.cgroup_id, cpu, t.slices, r is None, final)
        for key, r in running.items():
            if key not in live and key not in closed:
                add(r.tid, r.tgid, r.pstart, r.comm, r.cgroup_id, r.run_ns, 0, False, False)
        self.fully_dead = seen - alive
        start = min(c.open_ns for c in cuts)
        end = max(c.ns for c in cuts)
        busy = sum(c.busy_ns for c in cuts) + sum(r.run_ns for r in running.values())
        idle = [c.idle_ns for c in cuts]
        return UsageWindow(
            source=source, start_ns=start, end_ns=end, ncpus=len(cuts), processes=procs,
            idle_ns=sum(idle), idle_ns_per_cpu=idle,
            steal_ns=len(cuts) * (end - start) - busy - sum(idle),
            samples_or_events=sum(c.switches for c in cuts),
            drops={"tasks": sum(c.task_drops for c in cuts), "events": sum(c.event_drops for c in cuts)},
            dropped_cpu_ns=sum(c.dropped_ns for c in cuts))

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
            self.closed[(-tgid, pstart)] = Thread(
                -tgid, pstart, tgid=tgid, pstart=pstart, comm=lead.comm, cgroup_id=lead.cgroup_id,
                cpu_ns=sum(t.cpu_ns for t in parts), slices=sum(t.slices for t in parts),
                flags=FLAG_DEAD | FLAG_EXITED, meta_ns=max(t.meta_ns for t in parts))
