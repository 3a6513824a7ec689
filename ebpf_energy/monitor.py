"""The eBPF sampler: CPU time per thread and process from ``energy_monitor.bpf.o``.

Kernel side (``bpf/energy_monitor.bpf.c``): on every ``sched_switch`` the
slice that just ended is added to a per-CPU hash keyed by tid; who runs on
each CPU since when lives in a ``.bss`` slot per CPU, so no stale start time
can be read. This module loads that object with our own loader and turns the
maps into cumulative :class:`~ebpf_energy.usage.UsageWindow` s:

* a read closes out running slices: the task on each CPU since its last
  switch is credited up to the read time (a task alone on a CPU may not
  switch for seconds);
* threads whose final switch-out was accounted (flag DEAD) are folded into
  user-space totals and then deleted, so exited tasks are never lost and
  thousands of short processes never fill the map;
* drops (map full, ring buffer full) are counted in the kernel and reported.

Record layouts come from the object's own BTF, not from a copy of the C
header, so the two can never drift apart.
"""

import os
import struct
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Dict, List, Optional

from ebpf_energy.cgroups import cgroup2_mount
from ebpf_energy.loader import syscall
from ebpf_energy.loader.btf import KIND_ARRAY, KIND_INT, KIND_STRUCT, KIND_NAMES
from ebpf_energy.loader.errors import LoaderError, PermissionDenied
from ebpf_energy.loader.object import BpfObject
from ebpf_energy.usage import ProcessUsage, ThreadUsage, UsageWindow

FLAG_EXITED = 0x1
FLAG_DEAD = 0x2
DEFAULT_MAX_TASKS = 16384
IDLE_RINGBUF = 4096
STREAM_RINGBUF = 1 << 20


def object_path() -> str:
    """The shipped, CO-RE-portable monitor object (package data)."""
    return str(resources.files("ebpf_energy") / "bpf" / "energy_monitor.bpf.o")


class StructLayout:
    """A fast ``struct.Struct`` decoder for a BTF struct of ints and char arrays."""

    def __init__(self, btf, name):
        ids = btf.find(name, kind=KIND_STRUCT)
        if not ids:
            raise LoaderError(f"the monitor object's BTF has no struct {name}: wrong object?")
        t = btf.type(ids[0])
        fmt, names, pos = "<", [], 0
        for m in t.members:
            off = m.bit_offset // 8
            if off > pos:
                fmt += f"{off - pos}x"
            mt = btf.type(btf.resolve(m.type))
            size = btf.size_of(m.type)
            if mt.kind == KIND_INT:
                fmt += {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
            elif mt.kind == KIND_ARRAY:
                fmt += f"{size}s"
            else:
                raise LoaderError(f"struct {name}.{m.name}: unexpected {KIND_NAMES[mt.kind]} member")
            names.append(m.name)
            pos = off + size
        if t.size > pos:
            fmt += f"{t.size - pos}x"
        self.struct = struct.Struct(fmt)
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        self.size = t.size


@dataclass
class _Thread:
    """User-space running totals of one thread (tid)."""

    tid: int
    tgid: int = 0
    comm: str = ""
    cgroup_id: int = 0
    cpu_ns: int = 0  # folded in from deleted (DEAD) entries
    slices: int = 0
    per_cpu: List[int] = field(default_factory=list)
    flags: int = 0
    meta_ns: int = 0


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
    """The ``Sampler`` of :mod:`ebpf_energy.driver` backed by the BPF monitor."""

    source = "ebpf"

    def __init__(self, *, max_tasks: int = DEFAULT_MAX_TASKS, threads: bool = False,
                 on_event: Optional[Callable[[dict], None]] = None, filter_tgid: int = 0, filter_tid: int = 0,
                 filter_cgroup_id: int = 0, min_slice_ns: int = 0, path: Optional[str] = None):
        if max_tasks < 1:
            raise ValueError("max_tasks must be at least 1")
        self.max_tasks = max_tasks
        self.threads = threads
        self.on_event = on_event
        self.filters = dict(filter_tgid=filter_tgid, filter_tid=filter_tid, filter_cgroup_id=filter_cgroup_id,
                            min_slice_ns=min_slice_ns)
        self.path = path or object_path()
        self.obj: Optional[BpfObject] = None
        self.start_ns = 0
        self._threads: Dict[int, _Thread] = {}
        self._cgroups = CgroupPaths(cgroup2_mount())
        self._ncpus = syscall.num_possible_cpus()
        self._lock = threading.Lock()
        self._ring = None
        self._ring_thread = None
        self._stop_ring = threading.Event()
        self.events_received = 0
        self._bpf_stats = {}
        self.fully_dead = set()  # processes all of whose threads are accounted for good

    # -- Sampler protocol ------------------------------------------------------
    def start(self):
        if os.geteuid() != 0:
            raise PermissionDenied("monitor", 1, "the eBPF monitor needs root",
                                   "run it as root, or give python CAP_BPF and CAP_PERFMON")
        obj = BpfObject.open(self.path)
        try:
            btf = obj.spec.btf
            self._task_layout = StructLayout(btf, "task_stats")
            self._slot_layout = StructLayout(btf, "cpu_slot")
            self._event_layout = StructLayout(btf, "slice_event")
            stream = self.on_event is not None
            obj.set_max_entries("tasks", self.max_tasks)
            obj.set_max_entries("events", STREAM_RINGBUF if stream else IDLE_RINGBUF)
            ro = obj.rodata
            ro["stream_events"] = stream
            ro["nr_cpus"] = self._ncpus
            for k, v in self.filters.items():
                ro[k] = v
            # .rodata is frozen at load and the verifier folds it, so the start
            # time is taken just before load: a slice already running when we
            # attach counts from here.
            self.start_ns = time.monotonic_ns()
            ro["start_ns"] = self.start_ns
            obj.load()
            obj.attach()
        except BaseException:
            obj.close()
            raise
        self.obj = obj
        self._bss = obj.bss.view()
        self._slots_off = obj.bss._var("slots")[0]
        self._tasks_fd = obj.maps["tasks"].fd
        self._value_size = (self._task_layout.size + 7) // 8 * 8
        self._touch_every_cpu()
        if stream:
            self._start_stream(obj)

    def _touch_every_cpu(self):
        """Force a switch on every CPU so each slot knows who is running there."""
        try:
            allowed = os.sched_getaffinity(0)
        except OSError:
            return
        try:
            for cpu in sorted(allowed):
                os.sched_setaffinity(0, {cpu})
        except OSError:
            pass
        finally:
            try:
                os.sched_setaffinity(0, allowed)
            except OSError:
                pass

    def read(self) -> UsageWindow:
        with self._lock:
            return self._read()

    def stop(self):
        self._stop_ring.set()
        if self._ring_thread is not None:
            self._ring_thread.join(timeout=2)
            self._ring_thread = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._bss = None
        if self.obj is not None:
            self._bpf_stats = self._program_stats()
            self.obj.close()
            self.obj = None

    def _program_stats(self):
        """In-kernel cost of our programs (non-zero while bpf_stats are on)."""
        run_cnt = run_ns = 0
        for p in self.obj.programs.values():
            if p.loaded:
                info = p.info()
                run_cnt += info.get("run_cnt", 0)
                run_ns += info.get("run_time_ns", 0)
        return {"bpf_run_cnt": run_cnt, "bpf_run_time_ns": run_ns}

    def stats(self) -> dict:
        out = dict(self._bpf_stats)
        if self.on_event:
            out["events_received"] = self.events_received
        return out

    # -- reading ---------------------------------------------------------------
    def _slots(self):
        """Each CPU's slot as a tuple in ``cpu_slot`` field order (see ``_slot_layout.index``)."""
        lay = self._slot_layout
        out = []
        for cpu in range(self._ncpus):
            off = self._slots_off + cpu * lay.size
            for _ in range(100):
                rec = lay.struct.unpack_from(self._bss, off)
                if rec[0] & 1:
                    continue
                again = struct.unpack_from("<Q", self._bss, off)[0]
                if again == rec[0]:
                    break
            out.append(rec)
        return out

    def _read_tasks(self):
        keys, values = [], []
        token = None
        while True:
            try:
                ks, vs, token = syscall.map_lookup_batch(self._tasks_fd, 4, self._value_size * self._ncpus,
                                                         4096, token, False)
            except LoaderError as e:
                if getattr(e, "errno", None) == 28:  # ENOSPC: a bucket larger than the batch
                    continue
                raise
            keys.extend(ks)
            values.extend(vs)
            if token is None:
                return keys, values

    def _read(self) -> UsageWindow:
        lay = self._task_layout
        st = lay.struct
        i_cpu, i_sl, i_meta, i_cg, i_tgid, i_flags, i_comm = (lay.index[n] for n in (
            "cpu_ns", "slices", "meta_ns", "cgroup_id", "tgid", "flags", "comm"))
        for _ in range(3):
            t0 = time.monotonic_ns()
            slots_before = self._slots()
            keys, values = self._read_tasks()
            entries = dict(zip(keys, values))
            slots = self._settle(entries, slots_before, self._slots())
            if not self._missed_slices(slots_before, slots, t0):
                break
        now = time.monotonic_ns()
        vs = self._value_size
        live: Dict[int, _Thread] = {}
        dead = []
        for kb, vb in entries.items():
            tid = int.from_bytes(kb, "little")
            t = _Thread(tid)
            base = self._threads.get(tid)
            if base is not None:
                t.cpu_ns, t.slices, t.per_cpu = base.cpu_ns, base.slices, list(base.per_cpu)
                t.tgid, t.comm, t.cgroup_id, t.flags, t.meta_ns = base.tgid, base.comm, base.cgroup_id, \
                    base.flags, base.meta_ns
            if not t.per_cpu:
                t.per_cpu = [0] * self._ncpus
            for cpu in range(self._ncpus):
                rec = st.unpack_from(vb, cpu * vs)
                t.cpu_ns += rec[i_cpu]
                t.slices += rec[i_sl]
                t.per_cpu[cpu] += rec[i_cpu]
                t.flags |= rec[i_flags]
                # comm/tgid/cgroup: from the copy written last (meta_ns)
                if rec[i_meta] >= t.meta_ns and (rec[i_meta] or not t.comm):
                    t.meta_ns = rec[i_meta]
                    t.tgid = rec[i_tgid] or t.tgid
                    if rec[i_cg]:
                        t.cgroup_id = rec[i_cg]
                    comm = rec[i_comm].split(b"\0", 1)[0].decode("utf-8", "replace")
                    t.comm = comm or t.comm
                elif rec[i_cg] and not t.cgroup_id:
                    t.cgroup_id = rec[i_cg]
            live[tid] = t
            if t.flags & FLAG_DEAD:
                dead.append((kb, t))
        # Fold dead threads into the user-space totals and delete them from the map.
        for kb, t in dead:
            self._threads[tid_of(kb)] = t
            syscall.map_delete(self._tasks_fd, kb)
        threads: Dict[int, _Thread] = {tid: t for tid, t in self._threads.items() if tid not in live}
        threads.update(live)
        # Close out running slices.
        open_ns: Dict[int, int] = {}
        idle_per_cpu = []
        ix = self._slot_layout.index
        i_seq, i_start, i_tid, i_tgid, i_idle = ix["seq"], ix["start_ns"], ix["tid"], ix["tgid"], ix["idle_ns"]
        i_rt = ix["start_runtime"]
        for cpu, rec in enumerate(slots):
            start, tid, tgid, idle = rec[i_start], rec[i_tid], rec[i_tgid], rec[i_idle]
            running = max(0, now - (start or self.start_ns))
            if start and tid:
                # A task that is not runnable is not on this CPU although the
                # slot says so: its switch-out went unreported (it happens on
                # this VM). Count what it really ran (the scheduler's clock)
                # and the rest as idle, as the kernel side will. A runnable
                # one keeps the wall time: /proc's runtime of a running task
                # lags by up to a tick.
                ran, runnable = task_runtime_since(tid, rec[i_rt])
                if not runnable and ran < running:
                    idle += running - ran
                    running = ran
                open_ns[tid] = open_ns.get(tid, 0) + running
                if tid not in threads:
                    threads[tid] = _Thread(tid, tgid=tgid, per_cpu=[0] * self._ncpus)
                threads[tid].per_cpu[cpu] += running
                idle_per_cpu.append(idle)
            else:
                # idle now, or no switch seen on this CPU since attach (we
                # force one on every CPU at start, so that CPU sat idle)
                idle_per_cpu.append(idle + running)
        drops_tasks = sum(r[ix["task_drops"]] for r in slots)
        drops_events = sum(r[ix["event_drops"]] for r in slots)
        switches = sum(r[i_seq] // 2 for r in slots)
        return self._window(threads, open_ns, now, idle_per_cpu, drops_tasks, drops_events, switches)

    def _settle(self, entries, before, after, rounds=3):
        """Re-read the entries a slow batch read can have missed; return the slots to close out with.

        The batch lookup is not atomic: an entry read early misses a slice
        that closes later during the read, and the slot read after it then
        shows only the next task. Unfixed, the slice that was running when the
        read began (possibly seconds long, for a task alone on its CPU) was
        missing from this read. For every CPU whose ``seq`` moved, the entry
        of the task that was on it is looked up again and that CPU's copy
        replaced, then the slots are re-read; this repeats while switches keep
        landing. Lookups always precede the slot read that is returned, so a
        slice is never counted both closed and open; what can still be missed
        are slices that began and ended inside the read (bounded by its
        length, and counted by the next read).
        """
        ix = self._slot_layout.index
        i_seq, i_tid = ix["seq"], ix["tid"]
        vs, n = self._value_size, self._ncpus
        for _ in range(rounds):
            changed = [c for c in range(n) if before[c][i_seq] != after[c][i_seq] and before[c][i_tid]]
            if not changed:
                return after
            for c in changed:
                kb = before[c][i_tid].to_bytes(4, "little")
                fresh = syscall.map_lookup(self._tasks_fd, kb, vs * n)
                if fresh is None:  # not in the map: its slices were dropped (map full), counted as such
                    continue
                old = entries.get(kb) or bytes(vs * n)
                entries[kb] = old[:c * vs] + bytes(fresh[c * vs:(c + 1) * vs]) + old[(c + 1) * vs:]
            before, after = after, self._slots()
        return after

    def _missed_slices(self, before, after, t0, limit_ns=500_000):
        """True when tasks may have run more than ``limit_ns`` on one CPU
        entirely inside the read (two or more switches there while reading,
        e.g. the reader was preempted): those slices can be missing from the
        entries read, so the read is worth doing again."""
        ix = self._slot_layout.index
        i_seq, i_start = ix["seq"], ix["start_ns"]
        return any(a[i_seq] - b[i_seq] >= 4 and a[i_start] - t0 > limit_ns for b, a in zip(before, after))

    def _window(self, threads, open_ns, now, idle_per_cpu, drops_tasks, drops_events, switches):
        alive, seen = set(), set()
        for tid, t in threads.items():
            seen.add(t.tgid or tid)
            if not t.flags & FLAG_DEAD:
                alive.add(t.tgid or tid)
        self.fully_dead = seen - alive
        procs: Dict[int, ProcessUsage] = {}
        for tid, t in threads.items():
            cpu = t.cpu_ns + open_ns.get(tid, 0)
            tgid = t.tgid or tid
            exited = bool(t.flags & (FLAG_EXITED | FLAG_DEAD))
            p = procs.get(tgid)
            if p is None:
                p = procs[tgid] = ProcessUsage(pid=tgid, comm=t.comm, cpu_ns=0, slices=0, exited=True,
                                               cgroup_id=t.cgroup_id or None,
                                               cgroup=self._cgroups.path(t.cgroup_id))
            p.cpu_ns += cpu
            p.slices += t.slices
            p.exited = p.exited and exited
            if tid == tgid and t.comm:
                p.comm = t.comm
                if t.cgroup_id:
                    p.cgroup_id, p.cgroup = t.cgroup_id, self._cgroups.path(t.cgroup_id)
            elif not p.comm:
                p.comm = t.comm
            if self.threads:
                p.threads.append(ThreadUsage(tid, t.comm, cpu, t.slices, exited))
        return UsageWindow(source=self.source, start_ns=self.start_ns, end_ns=now, ncpus=self._ncpus,
                           processes=procs, idle_ns=sum(idle_per_cpu), idle_ns_per_cpu=idle_per_cpu,
                           samples_or_events=switches, drops={"tasks": drops_tasks, "events": drops_events})

    # -- bounded memory for long runs ---------------------------------------------
    def forget(self, pids) -> None:
        """Drop the user-space records of processes that are fully dead (every
        thread's last slice accounted: see ``fully_dead`` after a read) once a
        caller has taken their final numbers; a one-shot ``monitor`` keeps
        them for its summary, the exporter does not."""
        pids = set(pids)
        if not pids:
            return
        with self._lock:
            for tid in [tid for tid, t in self._threads.items() if (t.tgid or tid) in pids]:
                del self._threads[tid]

    def compact(self) -> None:
        """Merge the dead threads of each process into one record (keyed
        ``-tgid``, never a real tid): a long-lived process that starts and
        ends threads costs one record, not one per thread."""
        with self._lock:
            groups: Dict[int, List[int]] = {}
            for tid, t in self._threads.items():
                groups.setdefault(t.tgid or abs(tid), []).append(tid)
            for tgid, tids in groups.items():
                if len(tids) < 2:
                    continue
                parts = [self._threads.pop(tid) for tid in tids]
                lead = next((t for t in parts if t.tid == tgid), None) or max(parts, key=lambda t: t.meta_ns)
                self._threads[-tgid] = _Thread(
                    -tgid, tgid=tgid, comm=lead.comm, cgroup_id=lead.cgroup_id,
                    cpu_ns=sum(t.cpu_ns for t in parts), slices=sum(t.slices for t in parts),
                    per_cpu=[sum(c) for c in zip(*(t.per_cpu for t in parts))],
                    flags=FLAG_DEAD | FLAG_EXITED, meta_ns=max(t.meta_ns for t in parts))

    def held_threads(self) -> int:
        """Dead-thread records held in user space (what must stay bounded)."""
        return len(self._threads)

    # -- verbose event stream --------------------------------------------------------
    def _start_stream(self, obj):
        from ebpf_energy.loader.ringbuf import RingBuffer

        lay = self._event_layout
        names = lay.names
        unpack = lay.struct.unpack_from
        cb = self.on_event

        def on_record(mv):
            rec = dict(zip(names, unpack(mv)))
            rec["comm"] = rec["comm"].split(b"\0", 1)[0].decode("utf-8", "replace")
            self.events_received += 1
            cb(rec)

        events = obj.maps["events"]
        self._ring = RingBuffer(events.fd, events.max_entries, on_record)

        def pump():
            while not self._stop_ring.is_set():
                self._ring.poll(100)
            self._ring.consume()

        self._ring_thread = threading.Thread(target=pump, name="ebpf-energy-events", daemon=True)
        self._ring_thread.start()


def task_runtime_since(tid: int, since_runtime: int):
    """(ns the task ran since its ``se.sum_exec_runtime`` was ``since_runtime``,
    whether it is runnable now), from /proc; (0, False) when it is gone."""
    try:
        with open(f"/proc/{tid}/schedstat", "rb") as f:
            runtime = int(f.read().split(None, 1)[0])
        with open(f"/proc/{tid}/stat", "rb") as f:
            stat = f.read()
        state = stat[stat.rindex(b")") + 2: stat.rindex(b")") + 3]
    except (OSError, ValueError, IndexError):
        return 0, False
    return max(0, runtime - since_runtime), state == b"R"


def tid_of(key: bytes) -> int:
    return int.from_bytes(key, "little")
