"""KernelBtf: lazy index of /sys/kernel/btf/vmlinux, its on-disk cache, and agreement
with an eager parse and with bpftool."""

import glob
import os
import random
import re
import subprocess

import pytest

from ebpf_energy.loader.btf import Btf, KIND_STRUCT, KIND_TYPEDEF
from ebpf_energy.loader.errors import BtfError
from ebpf_energy.loader.kernel_btf import KernelBtf, default_cache_dir

VMLINUX = "/sys/kernel/btf/vmlinux"


@pytest.fixture(scope="module")
def eager():
    with open(VMLINUX, "rb") as f:
        return Btf.parse(f.read())


def test_cold_then_cached(tmp_path):
    cold = KernelBtf.load(cache_dir=str(tmp_path))
    assert not cold.from_cache and cold.index_seconds > 0
    files = glob.glob(str(tmp_path / "vmlinux-*.idx"))
    assert len(files) == 1
    warm = KernelBtf.load(cache_dir=str(tmp_path))
    assert warm.from_cache and len(warm) == len(cold)
    assert warm.index_seconds < cold.index_seconds  # reported, not a fixed threshold (2 shared cores)
    assert warm.find("task_struct", KIND_STRUCT) == cold.find("task_struct", KIND_STRUCT)


def test_corrupt_or_stale_cache_is_rebuilt(tmp_path):
    KernelBtf.load(cache_dir=str(tmp_path))
    (path,) = glob.glob(str(tmp_path / "vmlinux-*.idx"))
    for junk in (b"", b"garbage" * 100, open(path, "rb").read()[:50]):
        with open(path, "wb") as f:
            f.write(junk)
        kb = KernelBtf.load(cache_dir=str(tmp_path))
        assert not kb.from_cache and kb.find("task_struct", KIND_STRUCT)
        assert KernelBtf.load(cache_dir=str(tmp_path)).from_cache  # rewritten
    # a cache built for other BTF bytes is never used: the key is the content hash
    other = tmp_path / "other_btf"
    data = bytearray(open(VMLINUX, "rb").read())
    strings_end = len(data) - 2
    data[strings_end] = ord("Q") if data[strings_end] != ord("Q") else ord("R")  # inside the last string
    other.write_bytes(bytes(data))
    kb = KernelBtf.load(str(other), cache_dir=str(tmp_path))
    assert not kb.from_cache
    assert len(glob.glob(str(tmp_path / "vmlinux-*.idx"))) == 2


def test_unwritable_cache_dir_still_loads(tmp_path):
    ro = tmp_path / "file_not_dir"
    ro.write_text("x")
    kb = KernelBtf.load(cache_dir=str(ro / "sub"))
    assert kb.find("task_struct", KIND_STRUCT)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == os.path.join(str(tmp_path), "ebpf-energy")


def test_lazy_types_equal_eager_parse(eager, tmp_path):
    kb = KernelBtf.load(cache_dir=str(tmp_path))
    assert len(kb) == len(eager.types)
    rng = random.Random(1)
    ids = rng.sample(range(1, len(kb)), 3000) + [1, len(kb) - 1]
    for i in ids:
        assert kb.type(i) == eager.types[i]
    for name in ("task_struct", "pid", "btf_trace_sched_switch", "u32", "sched_switch", "rq"):
        assert kb.find(name) == eager.find(name)
    tid = kb.find("task_struct", KIND_STRUCT)[0]
    assert kb.size_of(tid) == eager.size_of(tid)
    td = kb.find("u32", KIND_TYPEDEF)[0]
    assert kb.name_of(kb.skip_modifiers(td)) == "unsigned int"
    with pytest.raises(BtfError):
        kb.type(len(kb))


def test_task_struct_matches_bpftool(tmp_path):
    kb = KernelBtf.load(cache_dir=str(tmp_path))
    out = subprocess.run(["bpftool", "btf", "dump", "file", VMLINUX], check=True, capture_output=True,
                         text=True).stdout
    m = re.search(r"^\[(\d+)\] STRUCT 'task_struct' size=(\d+) vlen=(\d+)$", out, re.M)
    tid = kb.find("task_struct", KIND_STRUCT)[0]
    t = kb.type(tid)
    assert (tid, t.size, len(t.members)) == (int(m.group(1)), int(m.group(2)), int(m.group(3)))


def test_bad_files(tmp_path):
    with pytest.raises(BtfError, match="cannot read"):
        KernelBtf.load(str(tmp_path / "nope"), cache_dir=str(tmp_path))
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(BtfError):
        KernelBtf.load(str(bad), cache_dir=str(tmp_path))
    trunc = tmp_path / "trunc"
    data = open(VMLINUX, "rb").read()
    trunc.write_bytes(data[:len(data) // 2])
    with pytest.raises(BtfError):
        KernelBtf.load(str(trunc), cache_dir=str(tmp_path))


def test_running_kernel_reads_only_what_is_asked(eager, tmp_path):
    """With this boot's index cached, the blob is not read for a few lookups
    (a tp_btf load: one typedef), and every answer equals the eager parse;
    past SPOT_READS single reads, or for a prefix scan, it is read whole."""
    first = KernelBtf.running(cache_dir=str(tmp_path))  # nothing cached: indexed from the whole blob
    assert not first.from_cache and first._data is not None
    kb = KernelBtf.running(cache_dir=str(tmp_path))
    assert kb.from_cache and kb._data is None and len(kb) == len(eager.types)
    ids = kb.find("btf_trace_sched_switch", KIND_TYPEDEF)
    assert ids == eager.find("btf_trace_sched_switch", KIND_TYPEDEF)
    assert kb.type(ids[0]) == eager.types[ids[0]] and kb._data is None
    for i in random.Random(2).sample(range(1, len(kb)), 200):  # spot reads, then the whole blob
        assert kb.type(i) == eager.types[i]
    assert kb._data is not None
    lazy = KernelBtf.running(cache_dir=str(tmp_path))
    assert lazy.find_essential("task_struct", {KIND_STRUCT}) == eager.find("task_struct", KIND_STRUCT)
    assert lazy._data is not None  # a prefix scan reads the string table whole


def test_a_name_inside_another_string_is_hashed_too():
    """BTF may point a name into the tail of a longer string (suffix sharing):
    the hash index hashes what starts there."""
    import zlib

    from ebpf_energy.loader.kernel_btf import _CrcByOffset

    crcs = _CrcByOffset({1: zlib.crc32(b"task_struct")})
    crcs.strings = b"\0task_struct\0"
    assert crcs[1] == zlib.crc32(b"task_struct") and crcs[6] == zlib.crc32(b"struct")
