"""Every map type the loader supports, created in the real kernel and round-tripped."""

import errno
import os
import struct
import threading

import pytest

from ebpf_energy.loader import syscall, uapi
from ebpf_energy.loader.errors import NotSupported, PermissionDenied, SyscallError
from ebpf_energy.loader.maps import ARRAY_TYPES, Map, MapFullError, MapValueError, ensure_bpffs

import loader_progs as lp

pytestmark = pytest.mark.kernel
NCPU = syscall.num_possible_cpus()


class U32:
    size = 4

    def encode(self, v):
        return struct.pack("<I", v)

    def decode(self, b):
        return struct.unpack("<I", b)[0]


class U64:
    size = 8

    def encode(self, v):
        return struct.pack("<Q", v)

    def decode(self, b):
        return struct.unpack("<Q", b)[0]


class Pair:
    """struct { u64 ns; u32 count; u32 pad; } as a dict."""
    size = 16

    def encode(self, v):
        return struct.pack("<QII", v["ns"], v["count"], 0)

    def decode(self, b):
        ns, count, _ = struct.unpack("<QII", b)
        return {"ns": ns, "count": count}


# (type, key_size, value_size, max_entries, flags)
PLAIN = [
    (uapi.BPF_MAP_TYPE_HASH, 4, 8, 64, 0),
    (uapi.BPF_MAP_TYPE_HASH, 4, 8, 64, uapi.BPF_F_NO_PREALLOC),
    (uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 16, 0),
    (uapi.BPF_MAP_TYPE_PERCPU_HASH, 4, 12, 64, 0),
    (uapi.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 12, 16, 0),
    (uapi.BPF_MAP_TYPE_LRU_HASH, 4, 8, 64, 0),
    (uapi.BPF_MAP_TYPE_LRU_PERCPU_HASH, 4, 12, 64, 0),
    (uapi.BPF_MAP_TYPE_RINGBUF, 0, 0, 1 << 16, 0),
    (uapi.BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, NCPU, 0),
    (uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 4, uapi.BPF_F_MMAPABLE | uapi.BPF_F_RDONLY_PROG),
]


def _id(p):
    return f"{syscall.map_type_name(p[0])}-{p[4]:#x}"


@pytest.mark.parametrize("spec", PLAIN, ids=[_id(p) for p in PLAIN])
def test_create_reads_back_declared_attributes(spec):
    t, k, v, n, flags = spec
    before = lp.open_fds()
    with Map.create("m_" + syscall.map_type_name(t)[:10], t, k, v, n, flags) as m:
        info = m.info()
        assert (info["type"], info["key_size"], info["value_size"], info["max_entries"], info["map_flags"]) == \
            (t, k, v, n, flags)
        assert info["name"] == ("m_" + syscall.map_type_name(t)[:10])[:15]
        assert m.is_percpu == (t in (uapi.BPF_MAP_TYPE_PERCPU_HASH, uapi.BPF_MAP_TYPE_PERCPU_ARRAY,
                                     uapi.BPF_MAP_TYPE_LRU_PERCPU_HASH))
        map_id = info["id"]
    m.close()  # idempotent
    assert lp.open_fds() == before
    with pytest.raises(SyscallError) as ei:
        syscall.map_get_fd_by_id(map_id)
    assert ei.value.errno == errno.ENOENT


def _sample(m, i):
    one = {"ns": 1000 * i + 7, "count": i} if isinstance(m.value_codec, Pair) else (i * 3 + 1)
    if m.is_percpu:
        return [dict(one, count=i + c) if isinstance(one, dict) else one + c for c in range(NCPU)]
    return one


HASHLIKE = [uapi.BPF_MAP_TYPE_HASH, uapi.BPF_MAP_TYPE_LRU_HASH, uapi.BPF_MAP_TYPE_PERCPU_HASH,
            uapi.BPF_MAP_TYPE_LRU_PERCPU_HASH]


@pytest.mark.parametrize("t", HASHLIKE + [uapi.BPF_MAP_TYPE_ARRAY, uapi.BPF_MAP_TYPE_PERCPU_ARRAY],
                         ids=syscall.map_type_name)
def test_round_trip_update_lookup_delete_iterate_batch(t):
    percpu = t in (uapi.BPF_MAP_TYPE_PERCPU_HASH, uapi.BPF_MAP_TYPE_PERCPU_ARRAY, uapi.BPF_MAP_TYPE_LRU_PERCPU_HASH)
    vcodec = Pair() if percpu else U64()
    vsize = 16 if percpu else 8
    n = 32
    with Map.create("rt", t, 4, vsize, n, key_codec=U32(), value_codec=vcodec) as m:
        want = {}
        for i in range(0, n, 2):
            m[i] = _sample(m, i)
            want[i] = _sample(m, i)
        for i, v in want.items():
            assert m[i] == v
            assert m.lookup(i) == v
        if t in ARRAY_TYPES:
            zero = [{"ns": 0, "count": 0}] * NCPU if percpu else 0
            assert m[1] == zero                     # arrays have every index
            assert sorted(m.keys()) == list(range(n))
            assert len(m) == n
            with pytest.raises(NotSupported, match="BPF_MAP_DELETE_ELEM"):
                m.delete(0)
            items = dict(m.items())
            assert {i: items[i] for i in want} == want
            assert dict(m.lookup_batch()) == items
            with pytest.raises(NotSupported):
                m.lookup_batch(delete=True)
            with pytest.raises(SyscallError, match="out of range") as ei:
                m[n] = _sample(m, 1)
            assert not isinstance(ei.value, MapFullError)
        else:
            assert m.lookup(1) is None and m.get(1, "dflt") == "dflt"
            with pytest.raises(KeyError):
                m[1]
            assert sorted(m.keys()) == sorted(want)
            assert len(m) == len(want)
            assert dict(m.items()) == want
            assert dict(m.lookup_batch(chunk=3)) == want
            assert m.delete(0) is True and m.delete(0) is False
            with pytest.raises(KeyError):
                del m[0]
            del want[0]
            drained = dict(m.lookup_batch(delete=True, chunk=5))
            assert drained == want
            assert m.keys() == [] and len(m) == 0
            # update flags
            m.update(5, _sample(m, 5), uapi.BPF_NOEXIST)
            with pytest.raises(SyscallError) as ei:
                m.update(5, _sample(m, 5), uapi.BPF_NOEXIST)
            assert ei.value.errno == errno.EEXIST
            with pytest.raises(SyscallError) as ei:
                m.update(6, _sample(m, 6), uapi.BPF_EXIST)
            assert ei.value.errno == errno.ENOENT


def test_percpu_value_is_one_slot_per_possible_cpu_padded_to_8():
    with Map.create("pc", uapi.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4, 2) as m:  # 4-byte values, padded to 8 per CPU
        vals = [bytes([c + 1] * 4) for c in range(NCPU)]
        m[0] = vals
        assert m[0] == vals
        raw = syscall.map_lookup(m.fd, b"\0" * 4, 8 * NCPU)
        assert raw == b"".join(v + b"\0" * 4 for v in vals)
        with pytest.raises(MapValueError, match="one per possible CPU"):
            m[0] = vals[:1] if NCPU > 1 else vals + vals


def test_bytes_keys_and_values_and_size_checks():
    with Map.create("raw", uapi.BPF_MAP_TYPE_HASH, 8, 4, 8) as m:
        m[b"abcdefgh"] = b"wxyz"
        assert m[b"abcdefgh"] == b"wxyz"
        m[3] = b"1234"  # int keys are packed to key_size
        assert m[(3).to_bytes(8, "little")] == b"1234"
        with pytest.raises(MapValueError, match="key is 3 bytes"):
            m[b"abc"] = b"wxyz"
        with pytest.raises(MapValueError, match="value is 2 bytes"):
            m[b"abcdefgh"] = b"wx"


def test_full_hash_raises_map_full():
    with Map.create("full", uapi.BPF_MAP_TYPE_HASH, 4, 8, 4, key_codec=U32(), value_codec=U64()) as m:
        for i in range(4):
            m[i] = i
        with pytest.raises(MapFullError) as ei:
            m[99] = 1
        assert ei.value.command == "BPF_MAP_UPDATE_ELEM" and ei.value.errno == errno.E2BIG
        assert "full" in str(ei.value)
        m[2] = 22  # replacing an existing key still works when full
        assert m[2] == 22


def test_lru_never_fills():
    with Map.create("lru", uapi.BPF_MAP_TYPE_LRU_HASH, 4, 8, 16, key_codec=U32(), value_codec=U64()) as m:
        for i in range(200):
            m[i] = i
        assert 0 < len(m) <= 16
        assert m[199] == 199


def test_iteration_survives_deleting_while_walking():
    with Map.create("walk", uapi.BPF_MAP_TYPE_HASH, 4, 8, 256, key_codec=U32(), value_codec=U64()) as m:
        for i in range(200):
            m[i] = i
        got = []
        for k in m:                       # delete each key as it is handed out
            got.append(k)
            del m[k]
        assert sorted(got) == list(range(200))
        assert len(m) == 0
        # a concurrent writer deleting behind our back: no duplicates, no endless walk
        for i in range(200):
            m[i] = i
        stop = threading.Event()

        def churn():
            j = 0
            while not stop.is_set():
                m.delete(j % 200)
                m[j % 200] = j
                j += 1
        th = threading.Thread(target=churn)
        th.start()
        try:
            for _ in range(5):
                ks = m.keys()
                assert len(ks) == len(set(ks)) and set(ks) <= set(range(200))
                for _k, v in m.items():
                    assert isinstance(v, int)
        finally:
            stop.set()
            th.join()


def test_batch_falls_back_to_iteration_when_the_type_has_no_batch_ops():
    """Stack-trace maps iterate with GET_NEXT_KEY but have no batch commands: a raw_tp
    program on sys_enter fills one with real kernel stacks, lookup_batch must still read it."""
    from ebpf_energy.loader.asm import R0, R1, R2, R3, R6, Asm, reg
    from ebpf_energy.loader.attach import attach_raw_tracepoint

    with Map.create("stacks", 7, 4, 8 * 16, 64) as m:
        with pytest.raises(NotSupported, match="BPF_MAP_LOOKUP_BATCH"):
            syscall.map_lookup_batch(m.fd, 4, 8 * 16, 4)
        a = Asm()
        a.mov(R6, reg(R1))
        a.call(uapi.FN_get_current_pid_tgid)
        a.rsh(R0, 32)
        a.jmp("jne", R0, os.getpid(), "out")
        a.mov(R1, reg(R6))
        a.ld_map_fd(R2, m.fd)
        a.mov(R3, 0)
        a.call(27)  # bpf_get_stackid
        a.label("out")
        a.mov(R0, 0)
        a.exit()
        prog_fd, _ = syscall.prog_load(uapi.BPF_PROG_TYPE_RAW_TRACEPOINT, a.assemble(), "GPL", name="stacks")
        try:
            with attach_raw_tracepoint(prog_fd, "sys_enter"):
                for _ in range(20):
                    os.getppid()
        finally:
            os.close(prog_fd)
        items = dict(m.items())
        assert items, "no stack recorded"
        assert all(len(v) == 128 and v[:8] != bytes(8) for v in items.values())  # kernel addresses
        assert dict(m.lookup_batch()) == items
        assert dict(m.lookup_batch(delete=True)) == items
        assert m.keys() == []


def test_task_storage_with_hand_built_btf():
    blob, int_id, struct_id = lp.tiny_btf()
    btf_fd = syscall.btf_load(blob)
    try:
        with Map.create("tstore", uapi.BPF_MAP_TYPE_TASK_STORAGE, 4, 16, 0, uapi.BPF_F_NO_PREALLOC, btf_fd=btf_fd,
                        btf_key_type_id=int_id, btf_value_type_id=struct_id, value_codec=Pair()) as m:
            info = m.info()
            assert info["type_name"] == "task_storage" and info["map_flags"] == uapi.BPF_F_NO_PREALLOC
            assert info["btf_key_type_id"] == int_id and info["btf_value_type_id"] == struct_id
            assert info["btf_id"] == syscall.obj_get_info(btf_fd, "btf")["id"]
            pidfd = os.pidfd_open(os.getpid())
            try:
                assert m.lookup(pidfd) is None
                m[pidfd] = {"ns": 123456789, "count": 3}
                assert m[pidfd] == {"ns": 123456789, "count": 3}
                assert m.delete(pidfd) is True
                assert m.lookup(pidfd) is None
            finally:
                os.close(pidfd)
            with pytest.raises(NotSupported):
                m.keys()  # task storage cannot be iterated from user space
    finally:
        os.close(btf_fd)


def test_task_storage_without_btf_is_not_supported():
    with pytest.raises(NotSupported, match="BPF_MAP_CREATE"):
        Map.create("tstore", uapi.BPF_MAP_TYPE_TASK_STORAGE, 4, 16, 0, uapi.BPF_F_NO_PREALLOC)


def test_perf_event_array_holds_perf_fds():
    with Map.create("pea", uapi.BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, NCPU) as m:
        pfd = syscall.perf_event_open(uapi.PERF_TYPE_SOFTWARE, 10, pid=-1, cpu=0)  # PERF_COUNT_SW_BPF_OUTPUT
        try:
            m.update(0, pfd.to_bytes(4, "little"))
            assert m.delete(0) is True
        finally:
            os.close(pfd)


def test_freeze_makes_the_map_read_only_for_user_space():
    with Map.create("frozen", uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1, value_codec=U64()) as m:
        m[0] = 42
        m.freeze()
        assert m[0] == 42
        with pytest.raises(PermissionDenied, match="frozen"):
            m[0] = 43


def test_pin_and_reopen_by_path_and_from_fd():
    path = f"/sys/fs/bpf/ebpf_energy_test_{os.getpid()}_pin"
    ensure_bpffs()
    with Map.create("pinned", uapi.BPF_MAP_TYPE_HASH, 4, 8, 8, key_codec=U32(), value_codec=U64()) as m:
        m[1] = 11
        m.pin(path)
        try:
            with Map.pinned(path, key_codec=U32(), value_codec=U64()) as again:
                assert again.info()["id"] == m.info()["id"]
                assert (again.name, again.type, again.key_size, again.value_size, again.max_entries) == \
                    ("pinned", uapi.BPF_MAP_TYPE_HASH, 4, 8, 8)
                assert again[1] == 11
            with pytest.raises(SyscallError, match="BPF_OBJ_PIN"):
                m.pin(path)  # already there
        finally:
            os.unlink(path)
    with pytest.raises(SyscallError, match="BPF_OBJ_GET"):
        Map.pinned(path)


def test_numa_node_flag_is_set():
    with Map.create("numa", uapi.BPF_MAP_TYPE_HASH, 4, 4, 4, numa_node=0) as m:
        assert m.info()["map_flags"] & uapi.BPF_F_NUMA_NODE
