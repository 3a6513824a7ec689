"""The user-space half of the books, without a kernel: dump records read as they stood at the cut."""

import pytest

from ebpf_energy.bpf_records import Record
from ebpf_energy.loader.object import BpfObject
from ebpf_energy.monitor import object_path
from ebpf_energy.task_books import FLAG_DEAD, FLAG_EXITED, Books, CpuCut, DumpDecoder, OpenSlice

with BpfObject.open(object_path()) as _obj:
    TASK = Record(_obj.spec.btf, "task_dump")
    PROC = Record(_obj.spec.btf, "proc_dump")

SLOTS = 8  # records in each made-up array


def pack(record, stride, buf, i, fields):
    items = []
    for n in dict.fromkeys(record.names):
        v = fields.get(n, b"" if n == "comm" else [0] * len(record.items(n)))
        items.extend(v if isinstance(v, (list, tuple)) else [v])
    record.struct.pack_into(buf, i * stride, *items)


def dumped(live=(), reaped=(), procs=()):
    """The `dumps` and `procs` arrays' memory as dump() writes them: live task
    records from the bottom, reaped ones from the top, one record per process."""
    dec = DumpDecoder(TASK, PROC, SLOTS)
    tasks = bytearray(dec.stride * SLOTS)
    for i, r in enumerate(live):
        pack(TASK, dec.stride, tasks, i, r)
    for i, r in enumerate(reaped):
        pack(TASK, dec.stride, tasks, SLOTS - 1 - i, dict(r, flags=r.get("flags", 0) | FLAG_DEAD))
    pbuf = bytearray(dec.proc_stride * SLOTS)
    for i, r in enumerate(procs):
        pack(PROC, dec.proc_stride, pbuf, i, r)
    return dec, memoryview(bytes(tasks)), memoryview(bytes(pbuf))


def window(b, procs, cuts, live=None):
    return b.window(procs, cuts, source="ebpf", cgroup_path=lambda i: None, live=live)


def cut(cpu, busy, run=None, ns=1000):
    return CpuCut(cpu, ns, 0, busy, ns - busy, 1, 0, 0, 0, 0, 0, 1, False, run)


def test_live_and_reaped_records_come_from_their_ends():
    dec, tasks, _ = dumped(
        live=[dict(tid=42, start=2, cpu_ns=50, slices=2, cpu_ns_now=50, slices_now=2, tgid=41, pstart=124,
                   meta_ns=1, comm=b"b", class_ns=[20, 30, 0, 0], class_ns_now=[20, 30, 0, 0])],
        reaped=[dict(tid=41, start=1, cpu_ns=700, slices=7, cpu_ns_now=1000, slices_now=10, tgid=40, pstart=123,
                     meta_ns=9, comm=b"newer", class_ns=[700, 0, 0, 0], class_ns_now=[900, 100, 0, 0])])
    e = dec.reaped(tasks, 1)[(41, 1)]
    assert (e.cut_cpu_ns, e.cut_slices, e.cpu_ns, e.slices) == (700, 7, 1000, 10)
    assert (e.comm, e.tgid, e.pstart, e.meta_ns, e.cut_class_ns) == ("newer", 40, 123, 9, (700, 0, 0, 0))
    f = dec.live(tasks, 1)[(42, 2)]
    assert (f.cut_cpu_ns, f.comm, f.tgid, f.cut_class_ns) == (50, "b", 41, (20, 30, 0, 0))
    assert dec.live(tasks, 0) == {} and dec.reaped(tasks, 0) == {}  # only the n records written count


def test_a_comm_with_control_characters_is_escaped():
    dec, tasks, procs = dumped(live=[dict(tid=5, start=1, comm=b"x\nPID 1")],
                               procs=[dict(tgid=5, comm=b"x\nPID 1")])
    assert dec.live(tasks, 1)[(5, 1)].comm == "x\\x0aPID 1"
    assert dec.procs(procs, 1)[0].comm == "x\\x0aPID 1"


def test_a_reaped_task_counts_after_the_cut_at_the_next_read():
    """What a reaped entry ran after the cut is not in this read, and is in the next, in its class."""
    b = Books([0, 1])
    dec, tasks, _ = dumped(reaped=[dict(tid=9, start=1, cpu_ns=200, slices=2, cpu_ns_now=300, slices_now=3,
                                        meta_ns=1, tgid=9, pstart=5, comm=b"gone", class_ns=[200, 0, 0, 0],
                                        class_ns_now=[200, 100, 0, 0])])
    b.begin()
    b.reap((9, 1), dec.reaped(tasks, 1)[(9, 1)])
    w = window(b, [], [cut(0, 200), cut(1, 0)])
    p = w.processes[9]
    assert (p.cpu_ns, p.cpu_ns_by_class) == (200, [200, 0]) and 9 not in b.fully_dead  # 100 ns still to come
    b.begin()
    w = window(b, [], [cut(0, 200, ns=2000), cut(1, 100, ns=2000)])
    p = w.processes[9]
    assert (p.cpu_ns, p.cpu_ns_by_class) == (300, [200, 100]) and 9 in b.fully_dead
    assert w.cpu_class == [0, 1]


def test_the_oldest_process_of_a_pid_keeps_the_plain_key():
    b = Books()
    # the newer one first, as the map may give them
    dec, _, procs = dumped(procs=[dict(tgid=5, pstart=pstart, tasks=1, cpu_ns=pstart, slices=1, not_exited=1,
                                       leader=1, comm=b"x", class_ns=[pstart, 0, 0, 0]) for pstart in (900, 100)])
    w = window(b, dec.procs(procs, 2), [cut(0, 1000, ns=5000)])
    assert w.processes[5].cpu_ns == 100 and w.processes[(5, 900)].cpu_ns == 900
    assert w.processes[5].cpu_ns_by_class == [100]


def test_the_running_slice_is_added_once_in_its_cpus_class():
    b = Books([1, 0])
    r = OpenSlice(3, 1, 3, 77, "run", 0, 250)
    w = window(b, [], [cut(0, 0, run=r), cut(1, 0)], live={})
    p = w.processes[3]
    assert (p.cpu_ns, p.cpu_ns_by_class, p.exited) == (250, [0, 250], False)
    assert [(t.cpu_ns, t.cpu_ns_by_class) for t in p.threads] == [(250, [0, 250])]
    assert w.total_cpu_ns + w.idle_ns + w.steal_ns == 2000


def test_threads_listed_from_live_reaped_and_running_add_up_to_the_process():
    """A process's record, its reaped thread and a slice running at the cut: its
    total is their sum, and so is the sum of its threads, per class too."""
    b = Books([0, 1])
    dec, tasks, procs = dumped(
        live=[dict(tid=10, start=1, cpu_ns=400, slices=4, tgid=10, pstart=7, meta_ns=1, comm=b"lead",
                   class_ns=[300, 100, 0, 0]),
              dict(tid=11, start=2, cpu_ns=100, slices=1, tgid=10, pstart=7, meta_ns=1, comm=b"w",
                   flags=FLAG_EXITED, class_ns=[0, 100, 0, 0])],
        reaped=[dict(tid=12, start=3, cpu_ns=60, slices=1, cpu_ns_now=60, slices_now=1, tgid=10, pstart=7, meta_ns=1,
                     comm=b"w2", class_ns=[60, 0, 0, 0], class_ns_now=[60, 0, 0, 0])],
        procs=[dict(tgid=10, pstart=7, tasks=2, cpu_ns=500, slices=5, not_exited=1, leader=1, comm=b"lead",
                    class_ns=[300, 200, 0, 0])])
    b.begin()
    for key, e in dec.reaped(tasks, 1).items():
        b.reap(key, e)
    running = OpenSlice(11, 2, 10, 7, "w", 0, 40)
    w = window(b, dec.procs(procs, 1), [cut(0, 0), cut(1, 0, run=running)], live=dec.live(tasks, 2))
    p = w.processes[10]
    assert (p.cpu_ns, p.cpu_ns_by_class, p.comm, p.exited) == (600, [360, 240], "lead", False)
    threads = {t.tid: t for t in p.threads}
    assert sorted(threads) == [10, 11, 12]
    assert (threads[11].cpu_ns, threads[11].exited) == (140, False)  # exited, but running at the cut
    assert sum(t.cpu_ns for t in p.threads) == p.cpu_ns
    assert [sum(c) for c in zip(*(t.cpu_ns_by_class for t in p.threads))] == p.cpu_ns_by_class


if __name__ == "__main__":
    pytest.main([__file__])
