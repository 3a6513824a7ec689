"""The user-space half of the books, without a kernel: entries read as they stood at the cut."""

import struct

import pytest

from ebpf_energy.loader.object import BpfObject
from ebpf_energy.monitor import StructLayout, object_path
from ebpf_energy.task_books import FLAG_DEAD, Books, CpuCut, EntryDecoder, OpenSlice, encode_key

with BpfObject.open(object_path()) as _obj:
    LAYOUT = StructLayout(_obj.spec.btf, "task_stats")


def copy(buf, dec, entry, cpu, **fields):
    """Write one per-CPU copy of entry ``entry`` in a batch buffer, fields by their BTF names."""
    base = entry * dec.value_size + cpu * dec.stride
    for name, value in fields.items():
        off = LAYOUT.offsets[name]
        if name == "comm":
            buf[base + off:base + off + 16] = value.ljust(16, b"\0")
        else:
            fmt = {"flags": "<I", "epoch": "<I", "cut_flags": "<I", "tgid": "<I"}.get(name, "<Q")
            struct.pack_into(fmt, buf, base + off, value)


def test_a_copy_written_after_the_cut_is_read_as_it_was_at_the_cut():
    dec = EntryDecoder(LAYOUT, 2)
    buf = bytearray(dec.value_size * 2)
    # entry 0: CPU 0 written after the cut (epoch 7 = its cut epoch), CPU 1 not since
    copy(buf, dec, 0, 0, cpu_ns=900, slices=9, flags=FLAG_DEAD, epoch=7, cut_cpu_ns=600, cut_slices=6,
         cut_flags=0, meta_ns=5, tgid=40, pstart=123, comm=b"a")
    copy(buf, dec, 0, 1, cpu_ns=100, slices=1, epoch=3, meta_ns=9, tgid=40, pstart=123, comm=b"newer")
    # entry 1: nothing written since the cut anywhere
    copy(buf, dec, 1, 0, cpu_ns=50, slices=2, epoch=6, meta_ns=1, tgid=41, pstart=124, comm=b"b")
    keys = encode_key((41, 1)) + encode_key((42, 2))
    out = dict(dec.decode_batch(keys, bytes(buf), [7, 4]))
    e = out[(41, 1)]
    assert (e.cut_cpu_ns, e.cut_slices, e.cut_flags) == (700, 7, 0)  # 600 at the cut + CPU 1's 100
    assert (e.cpu_ns, e.slices, e.flags) == (1000, 10, FLAG_DEAD)
    assert (e.comm, e.tgid, e.pstart) == ("newer", 40, 123)  # from the copy written last
    f = out[(42, 2)]
    assert (f.cut_cpu_ns, f.cpu_ns, f.comm) == (50, 50, "b")
    assert dec.decode(bytes(buf), [7, 4]) == e  # one entry alone decodes the same


def cut(cpu, busy, run=None, ns=1000):
    return CpuCut(cpu, ns, 0, busy, ns - busy, 1, 0, 0, 0, 0, 0, 1, False, run)


def test_a_reaped_task_counts_after_the_cut_at_the_next_read():
    """What a reaped entry ran after the cut is not in this read, and is in the next."""
    b = Books()
    dead = EntryDecoder(LAYOUT, 1)
    buf = bytearray(dead.value_size)
    copy(buf, dead, 0, 0, cpu_ns=300, slices=3, flags=FLAG_DEAD, epoch=2, cut_cpu_ns=200, cut_slices=2,
         meta_ns=1, tgid=9, pstart=5, comm=b"gone")
    e = dead.decode(bytes(buf), [2])
    b.begin()
    b.reap((9, 1), e)
    w = b.window({}, [cut(0, 200)], source="ebpf", cgroup_path=lambda i: None, with_threads=False)
    assert w.processes[9].cpu_ns == 200 and 9 not in b.fully_dead  # 100 ns still to come
    b.begin()
    w = b.window({}, [cut(0, 300, ns=2000)], source="ebpf", cgroup_path=lambda i: None, with_threads=False)
    assert w.processes[9].cpu_ns == 300 and 9 in b.fully_dead


def test_the_oldest_process_of_a_pid_keeps_the_plain_key():
    b = Books()
    dec = EntryDecoder(LAYOUT, 1)
    live = {}
    for key, pstart in (((5, 2), 900), ((5, 1), 100)):  # the newer one first, as the map may give them
        buf = bytearray(dec.value_size)
        copy(buf, dec, 0, 0, cpu_ns=pstart, slices=1, epoch=1, meta_ns=1, tgid=5, pstart=pstart, comm=b"x")
        live[key] = dec.decode(bytes(buf), [0])
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
