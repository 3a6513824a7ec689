"""The user-space half of the books, without a kernel: dump records read as they stood at the cut."""

import pytest

from ebpf_energy.bpf_records import Record
from ebpf_energy.loader.object import BpfObject
from ebpf_energy.monitor import object_path
from ebpf_energy.task_books import FLAG_DEAD, Books, CpuCut, DumpDecoder, OpenSlice

with BpfObject.open(object_path()) as _obj:
    DUMP = Record(_obj.spec.btf, "task_dump")


def records(*recs):
    """A `dumps` array's memory holding ``recs`` (dicts of struct task_dump members), as dump() writes it."""
    dec = DumpDecoder(DUMP)
    buf = bytearray(dec.stride * (len(recs) + 1))  # one record more: the decoder must stop at n
    for i, r in enumerate(recs):
        values = {n: 0 for n in DUMP.names}
        values["comm"] = b""
        values.update(r)
        DUMP.struct.pack_into(buf, i * dec.stride, *(values[n] for n in DUMP.names))
    return dec, memoryview(bytes(buf))


def test_dump_records_split_into_live_and_reaped():
    dec, mem = records(
        dict(tid=41, start=1, cpu_ns=700, slices=7, cpu_ns_now=1000, slices_now=10, flags=FLAG_DEAD, tgid=40,
             pstart=123, meta_ns=9, comm=b"newer"),
        dict(tid=42, start=2, cpu_ns=50, slices=2, cpu_ns_now=50, slices_now=2, tgid=41, pstart=124, meta_ns=1,
             comm=b"b"))
    live, reaped = dec.decode(mem, 2)
    e = reaped[(41, 1)]
    assert (e.cut_cpu_ns, e.cut_slices, e.cpu_ns, e.slices) == (700, 7, 1000, 10)
    assert (e.comm, e.tgid, e.pstart, e.meta_ns) == ("newer", 40, 123, 9)
    f = live[(42, 2)]
    assert (f.cut_cpu_ns, f.comm, f.tgid) == (50, "b", 41) and (42, 2) not in reaped
    assert dec.decode(mem, 1) == ({}, {(41, 1): e})  # only the first n records count


def test_a_comm_with_control_characters_is_escaped():
    dec, mem = records(dict(tid=5, start=1, comm=b"x\nPID 1"))
    live, _ = dec.decode(mem, 1)
    assert live[(5, 1)].comm == "x\\x0aPID 1"


def cut(cpu, busy, run=None, ns=1000):
    return CpuCut(cpu, ns, 0, busy, ns - busy, 1, 0, 0, 0, 0, 0, 1, False, run)


def test_a_reaped_task_counts_after_the_cut_at_the_next_read():
    """What a reaped entry ran after the cut is not in this read, and is in the next."""
    b = Books()
    dec, mem = records(dict(tid=9, start=1, cpu_ns=200, slices=2, cpu_ns_now=300, slices_now=3, flags=FLAG_DEAD,
                            meta_ns=1, tgid=9, pstart=5, comm=b"gone"))
    e = dec.decode(mem, 1)[1][(9, 1)]
    b.begin()
    b.reap((9, 1), e)
    w = b.window({}, [cut(0, 200)], source="ebpf", cgroup_path=lambda i: None, with_threads=False)
    assert w.processes[9].cpu_ns == 200 and 9 not in b.fully_dead  # 100 ns still to come
    b.begin()
    w = b.window({}, [cut(0, 300, ns=2000)], source="ebpf", cgroup_path=lambda i: None, with_threads=False)
    assert w.processes[9].cpu_ns == 300 and 9 in b.fully_dead


def test_the_oldest_process_of_a_pid_keeps_the_plain_key():
    b = Books()
    # the newer one first, as the map may give them
    dec, mem = records(*(dict(tid=5, start=start, cpu_ns=pstart, slices=1, meta_ns=1, tgid=5, pstart=pstart,
                              comm=b"x") for start, pstart in ((2, 900), (1, 100))))
    live, _ = dec.decode(mem, 2)
    w = b.window(live, [cut(0, 1000, ns=5000)], source="ebpf", cgroup_path=lambda i: None, with_threads=False)
    assert w.processes[5].cpu_ns == 100 and w.processes[(5, 900)].cpu_ns == 900


def test_the_running_slice_is_added_once():
    b = Books()
    r = OpenSlice(3, 1, 3, 77, "run", 0, 250)
    w = b.window({}, [cut(0, 0, run=r)], source="ebpf", cgroup_path=lambda i: None, with_threads=True)
    assert w.processes[3].cpu_ns == 250 and not w.processes[3].exited
    assert [t.cpu_ns for t in w.processes[3].threads] == [250]
    assert w.total_cpu_ns + w.idle_ns + w.steal_ns == 1000


if __name__ == "__main__":
    pytest.main([__file__])
