"""BpfObject end to end: every corpus object loaded into the real kernel, and
what the kernel then did, checked exactly.

Programs on sys_enter act only for this process (``target_tgid``) and only
for ``getppid`` (see tests/bpf/README.md), so ``N`` calls to ``os.getppid()``
give exact counts. Every test closes its object and checks, by kernel id,
that its programs, maps, links and BTF are gone (other engineers may have
their own BPF objects loaded: only our ids are checked).
"""

import errno
import gzip
import os
import platform
import re
import struct
import subprocess
import threading
import time

import pytest

from ebpf_energy.loader import explain, syscall, uapi
from ebpf_energy.loader.errors import LoaderError, SyscallError, VerifierError
from ebpf_energy.loader.maps import Map
from ebpf_energy.loader.object import BpfObject
from ebpf_energy.loader.ringbuf import RingBuffer

pytestmark = pytest.mark.kernel
NCPU = syscall.num_possible_cpus()
TRIGGER_NR = {"x86_64": 110, "aarch64": 173}[platform.machine()]
GONE_TIMEOUT_S = 5.0
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_NUMA_NODE = 1 << 2
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_MMAPABLE = 1 << 10
PERF_COUNT_SW_BPF_OUTPUT = 10


# --------------------------------------------------------------------------- helpers
def trigger(n):
    """n getppid() syscalls from the calling thread: the corpus's counted event."""
    for _ in range(n):
        os.getppid()


def set_trigger(obj, var="target_tgid"):
    obj.rodata[var] = os.getpid()
    obj.rodata["trigger_nr"] = TRIGGER_NR


_GET_FD = {"prog": syscall.prog_get_fd_by_id, "map": syscall.map_get_fd_by_id,
           "link": syscall.link_get_fd_by_id, "btf": syscall.btf_get_fd_by_id}


def object_ids(obj):
    """{kind: set(ids)} of everything a loaded BpfObject holds in the kernel."""
    ids = {"prog": set(), "map": set(), "link": set(), "btf": set()}
    for p in obj.programs.values():
        if p.loaded:
            info = p.info()
            ids["prog"].add(info["id"])
            if info.get("btf_id"):
                ids["btf"].add(info["btf_id"])
        if p.link is not None:
            link_id = p.link.info().get("id")
            if link_id:
                ids["link"].add(link_id)
    for m in obj.maps.values():
        ids["map"].add(m.info()["id"])
    if obj.btf_fd:
        ids["btf"].add(syscall.obj_get_info(obj.btf_fd, "btf")["id"])
    assert all(alive(k, i) for k, s in ids.items() for i in s)  # the checker sees live objects
    return ids


def alive(kind, obj_id):
    """True while the kernel still has the object with this id."""
    try:
        fd = _GET_FD[kind](obj_id)
    except SyscallError as e:
        assert e.errno == errno.ENOENT, f"{kind} id {obj_id}: unexpected {e}"
        return False
    os.close(fd)
    return True


def assert_gone(ids, timeout=GONE_TIMEOUT_S):
    """Every id is ENOENT (waiting out the kernel's deferred frees: a program's
    maps are released after an RCU grace period)."""
    deadline = time.monotonic() + timeout
    left = [(k, i) for k, s in ids.items() for i in s]
    while left and time.monotonic() < deadline:
        left = [(k, i) for k, i in left if alive(k, i)]
        if left:
            time.sleep(0.02)
    assert not left, f"still in the kernel after close: {left}"


class IdRecorder:
    """Listens to the teaching trace and records the kernel id of every fd the
    loader creates (map, program, BTF, link) the moment it is created, so even
    objects of a load that fails half-way can be checked by id afterwards."""

    _FD = re.compile(r"^\[syscall \] (BPF_\w+).* -> (?:link )?fd (\d+)$")
    _KIND = {"BPF_MAP_CREATE": "map", "BPF_PROG_LOAD": "prog", "BPF_BTF_LOAD": "btf",
             "BPF_LINK_CREATE": "link", "BPF_RAW_TRACEPOINT_OPEN": "link"}

    def __init__(self):
        self.ids = {"prog": set(), "map": set(), "link": set(), "btf": set()}
        self.names = {}
        self._busy = False
        self.lines = []

    def write(self, text):
        self.lines.append(text)
        if self._busy:
            return
        self._busy = True
        try:
            for line in text.splitlines():
                m = self._FD.match(line)
                if m and m.group(1) in self._KIND:
                    kind = self._KIND[m.group(1)]
                    info = syscall.obj_get_info(int(m.group(2)), kind)
                    self.ids[kind].add(info["id"])
                    self.names[(kind, info["id"])] = info.get("name", "")
        finally:
            self._busy = False

    def flush(self):
        pass

    def __enter__(self):
        explain.enable(self)
        return self

    def __exit__(self, *exc):
        explain.disable()

    def prog_names(self):
        return sorted(self.names[("prog", i)] for i in self.ids["prog"])


@pytest.fixture
def fds_unchanged():
    """The test leaves no fd of this process open."""
    before = set(os.listdir("/proc/self/fd"))
    yield
    leaked = set(os.listdir("/proc/self/fd")) - before
    assert not leaked, f"fds left open: {[os.readlink(f'/proc/self/fd/{f}') for f in leaked if _exists(f)]}"


def _exists(fd):
    return os.path.exists(f"/proc/self/fd/{fd}")


def percpu_sum(values):
    return sum(v["count"] if isinstance(v, dict) else v for v in values)


# --------------------------------------------------------------------------- tp_btf counter
def proc_stat_ctxt():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("ctxt "):
                return int(line.split()[1])
    raise AssertionError("no ctxt line in /proc/stat")


def test_tp_btf_counter_counts_real_switches(test_objects, fds_unchanged):
    with BpfObject.open(test_objects("tp_btf_counter")) as obj:
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        assert len(ids["prog"]) == 1 and len(ids["link"]) == 1
        # a second reference to .bss survives close(): it shows the counting stops
        keep = syscall.map_get_fd_by_id(obj.maps[".bss"].info()["id"])
        c0, s0 = proc_stat_ctxt(), obj.bss["switches"]
        for _ in range(20):
            time.sleep(0.005)
        s1, c1 = obj.bss["switches"], proc_stat_ctxt()
        cpu1 = percpu_sum(obj.maps["cpu_switches"][0])
        assert len(obj.maps["cpu_switches"][0]) == NCPU
        # sched_switch fires exactly where the kernel counts a context switch
        # (/proc/stat ctxt); our reads bracket the window, so small slack only
        assert s1 - s0 >= 20
        assert abs((s1 - s0) - (c1 - c0)) <= max(10, (c1 - c0) // 10), (s1 - s0, c1 - c0)
        assert s1 - NCPU <= cpu1  # the per-CPU slots count the same events
        time.sleep(0.05)
        assert obj.bss["switches"] > s1
        assert percpu_sum(obj.maps["cpu_switches"][0]) > cpu1
    assert_gone({"prog": ids["prog"], "link": ids["link"]})
    try:
        with Map.from_fd(keep) as bss:
            frozen_at = struct.unpack("<Q", bss.lookup(0))[0]
            time.sleep(0.05)
            assert struct.unpack("<Q", bss.lookup(0))[0] == frozen_at, "still counting after close()"
    finally:
        if _exists(keep):
            os.close(keep)
    assert_gone(ids)


# --------------------------------------------------------------------------- CO-RE
def _comm(tid):
    with open(f"/proc/self/task/{tid}/comm") as f:
        return f.read().strip()


def test_core_task_fields_match_this_process(test_objects, fds_unchanged):
    n = 9
    with BpfObject.open(test_objects("core_task")) as obj:
        set_trigger(obj, "target_pid")
        ppid = os.getppid()  # before attach: getppid() is the counted syscall
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        trigger(n)
        tid = threading.get_native_id()
        expect = {"pid": tid, "tgid": os.getpid(), "parent_tgid": ppid, "comm_size": 16,
                  "has_pid": 1, "calls": n, "comm": _comm(tid)}
        assert obj.bss["last"] == expect
        assert obj.maps["seen"][tid] == expect

        other = {}

        def worker():
            other["tid"] = threading.get_native_id()
            trigger(4)

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        rec = obj.maps["seen"][other["tid"]]
        assert other["tid"] != tid
        assert rec["pid"] == other["tid"] and rec["tgid"] == os.getpid() and rec["calls"] == 4
        assert rec["parent_tgid"] == ppid
        assert sorted(obj.maps["seen"].keys()) == sorted([tid, other["tid"]])
    assert_gone(ids)


# --------------------------------------------------------------------------- .rodata
@pytest.mark.parametrize("settings, value, tag", [
    ({}, 114, "default"),
    ({"multiplier": 5, "offset": 1, "tag": "xyz"}, 36, "xyz"),
    ({"enabled": False}, 0, "default"),
])
def test_rodata_settings_change_behaviour(test_objects, settings, value, tag):
    n = 5
    with BpfObject.open(test_objects("rodata")) as obj:
        set_trigger(obj)
        for k, v in settings.items():
            obj.rodata[k] = v
        obj.load()
        obj.attach()
        trigger(n)
        assert obj.bss["out_calls"] == n
        assert obj.bss["out_value"] == value
        assert obj.bss["out_tag"] == tag
        assert obj.bss["out_tag_len"] == len(tag)
        ids = object_ids(obj)
    assert_gone(ids)


def test_rodata_is_frozen_and_checked(test_objects, fds_unchanged):
    with BpfObject.open(test_objects("rodata")) as obj:
        with pytest.raises(KeyError, match="no variable 'nope'"):
            obj.rodata["nope"] = 1
        with pytest.raises(LoaderError):
            obj.rodata["tag"] = "a tag much longer than sixteen bytes"
        assert not obj.maps  # nothing created yet
        obj.rodata["multiplier"] = 3
        obj.load()
        ro = obj.maps[".rodata"]
        info = ro.info()
        assert info["map_flags"] & BPF_F_RDONLY_PROG
        assert info["max_entries"] == 1
        assert obj.rodata["multiplier"] == 3  # readable after load
        with pytest.raises(SyscallError) as e:
            ro.update(0, bytes(ro.value_size))
        assert e.value.errno == errno.EPERM  # frozen: no user-space writes
        with pytest.raises(LoaderError, match="frozen"):
            obj.rodata["multiplier"] = 4
        ids = object_ids(obj)
    assert_gone(ids)


# --------------------------------------------------------------------------- .data / .bss
def test_globals_read_back_and_written_live(test_objects, fds_unchanged):
    n = 7
    with BpfObject.open(test_objects("globals")) as obj:
        obj.rodata["trigger_nr"] = TRIGGER_NR
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        data = obj.data
        assert (data["trigger_tgid"], data["data_counter"], data["data_array"], data["greeting"]) == \
            (-1, 42, [1, 2, 3, 4], "hello")
        assert data["static_table"] == [10, 20, 30, 40]
        assert set(obj.bss.to_dict().values()) == {0}
        assert b"globals: hit %d\n\0" in obj.maps[".rodata.str1.1"].lookup(0)

        trigger(3)  # not armed yet: the program reads trigger_tgid live from the map
        assert obj.bss["bss_hits"] == 0
        data["trigger_tgid"] = os.getpid()
        trigger(n)
        bss = obj.bss
        assert bss["bss_hits"] == n
        assert data["data_counter"] == 42 + n
        assert bss["bss_sum"] == 109 + n
        assert bss["bss_match"] == 1
        assert bss["bss_weight"] == 1000 + ((42 + n) & 7)
        assert data["static_table"] == [10 * (i + 1) + len([k for k in range(n) if k % 4 == i]) for i in range(4)]
        assert data["static_table"] == [12, 22, 32, 41]

        data["greeting"] = "world"
        trigger(1)
        assert bss["bss_match"] == 0 and bss["bss_hits"] == n + 1
        data["greeting"] = "hello"
        bss["bss_match"] = 7  # .bss is writable too; the program overwrites it on the next call
        assert bss["bss_match"] == 7
        trigger(1)
        assert bss["bss_match"] == 1
    assert_gone(ids)


# --------------------------------------------------------------------------- subprograms
def test_subprogram_results_arrive(test_objects, fds_unchanged):
    n = 6
    with BpfObject.open(test_objects("subprog")) as obj:
        set_trigger(obj)
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        trigger(n)
        assert obj.bss["res_sys"] == (2 * (3 * 5 + 1) + 5) + (5 * 5 + 5) == 67
        assert obj.bss["hits_sys"] == n
        time.sleep(0.02)
        assert obj.bss["hits_switch"] > 0
        assert obj.bss["res_switch"] == (3 * 5 + 1) + 9 == 25
    assert_gone(ids)


def test_subprograms_of_one_program_only(test_objects, fds_unchanged):
    with BpfObject.open(test_objects("subprog")) as obj, IdRecorder() as rec:
        obj.rodata["input"] = 4
        set_trigger(obj)
        obj.load(only=["on_switch"])
        obj.attach()
        trigger(3)
        time.sleep(0.02)
        assert rec.prog_names() == ["on_switch"]
        assert not obj.programs["on_sys_enter"].loaded
        assert obj.bss["hits_switch"] > 0 and obj.bss["res_switch"] == 22
        assert obj.bss["hits_sys"] == 0 and obj.bss["res_sys"] == 0
        # the global subprogram is verified on its own: it needs (and got) func_info
        assert obj.programs["on_switch"].info()["btf_id"]
    assert_gone(rec.ids)


# --------------------------------------------------------------------------- ring buffer
RB_RECORD = struct.Struct("<QIIII16s")
PATTERN = bytes(range(0xA0, 0xB0))


def test_ringbuf_records_byte_exact_in_order_discards_skipped(test_objects, fds_unchanged):
    n = 22
    got = []
    with BpfObject.open(test_objects("ringbuf")) as obj:
        set_trigger(obj)
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        rb_map = obj.maps["records"]
        with RingBuffer(rb_map.fd, rb_map.max_entries, lambda view: got.append(bytes(view))) as rb:
            trigger(n)
            tid = threading.get_native_id()
            assert rb.poll(1000) == n - n // 4
            assert rb.consume() == 0
            assert rb.consumer_pos == rb.producer_pos
        bss = obj.bss
        assert bss["submitted"] + bss["discarded"] == bss["next_seq"] == n
        assert bss["discarded"] == n // 4 and bss["reserve_failed"] == 0
    assert_gone(ids)
    want_seqs = [s for s in range(n) if s % 4 != 3]
    assert [RB_RECORD.unpack(r)[0] for r in got] == want_seqs
    for raw, seq in zip(got, want_seqs):
        assert len(raw) == RB_RECORD.size == 40
        cpu = RB_RECORD.unpack(raw)[4]
        assert cpu < NCPU
        assert raw == RB_RECORD.pack(seq, os.getpid(), tid, 0x5EED5EED, cpu, PATTERN)


def test_ringbuf_overflow_counts_every_failure(test_objects, fds_unchanged):
    n = 300  # 300 * 48 bytes > 4096: the ring fills while nobody drains it
    got = []
    with BpfObject.open(test_objects("ringbuf")) as obj:
        set_trigger(obj)
        obj.rodata["discard_every"] = 0
        obj.set_max_entries("records", 4096)
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        assert obj.maps["records"].info()["max_entries"] == 4096
        trigger(n)
        with RingBuffer(obj.maps["records"].fd, 4096, lambda v: got.append(bytes(v))) as rb:
            rb.consume()
        bss = obj.bss
        assert bss["reserve_failed"] > 0
        assert bss["submitted"] == len(got) and bss["discarded"] == 0
        assert bss["submitted"] + bss["reserve_failed"] == bss["next_seq"] == n
    assert [RB_RECORD.unpack(r)[0] for r in got] == list(range(len(got)))
    assert_gone(ids)


# --------------------------------------------------------------------------- verifier
def test_verifier_reject_names_program_log_and_source_line(test_objects, fds_unchanged):
    with IdRecorder() as rec:
        with pytest.raises(VerifierError) as e:
            with BpfObject.open(test_objects("verifier_reject")) as obj:
                obj.load()
    err = e.value
    text = str(err)
    assert err.program == "bad_deref"
    assert "bad_deref" in text and "REJECT_HERE" in text and "map_value_or_null" in text
    assert "map_value_or_null" in err.log and "R0 invalid mem access" in err.log
    assert err.source_line is not None and "REJECT_HERE" in err.source_line.source
    assert err.source_line.file_name.endswith("verifier_reject.bpf.c")
    # the log's own source annotations: the last lines quote the failing line
    assert re.search(r"; return \*v > 0; /\* REJECT_HERE \*/", text)
    assert rec.ids["map"] and rec.ids["btf"]  # the map and BTF were made, then removed
    assert_gone(rec.ids)


def test_verifier_reject_good_program_alone(test_objects, fds_unchanged):
    with BpfObject.open(test_objects("verifier_reject")) as obj, IdRecorder() as rec:
        obj.load(only=["good_prog"])
        obj.attach()
        trigger(3)
        assert obj.maps["values"].get(0, 0) == 0  # no element: the program only increments one
        obj.maps["values"][0] = 0
        trigger(5)
        assert obj.maps["values"][0] >= 5  # every syscall of every process counts
        assert rec.prog_names() == ["good_prog"]
    assert_gone(rec.ids)


# --------------------------------------------------------------------------- every map type
MAPS_ALL = {
    # name: (type, key_size, value_size, max_entries, flags)
    "hash_map": (uapi.BPF_MAP_TYPE_HASH, 8, 16, 128, BPF_F_NO_PREALLOC | BPF_F_NUMA_NODE),
    "array_map": (uapi.BPF_MAP_TYPE_ARRAY, 4, 16, 16, BPF_F_MMAPABLE),
    "pcpu_hash": (uapi.BPF_MAP_TYPE_PERCPU_HASH, 8, 16, 64, 0),
    "pcpu_array": (uapi.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 4, 0),
    "lru_hash": (uapi.BPF_MAP_TYPE_LRU_HASH, 8, 16, 256, BPF_F_NO_COMMON_LRU),
    "lru_pcpu_hash": (uapi.BPF_MAP_TYPE_LRU_PERCPU_HASH, 8, 8, 256, 0),
    "ring": (uapi.BPF_MAP_TYPE_RINGBUF, 0, 0, 16384, 0),
    "perf_events": (uapi.BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, 8, 0),
    "task_store": (uapi.BPF_MAP_TYPE_TASK_STORAGE, 4, 16, 0, BPF_F_NO_PREALLOC),
    "storage_echo": (uapi.BPF_MAP_TYPE_HASH, 4, 16, 64, 0),
}
TAG = {"hash": 0x48415348, "array": 0x41525259, "pcpu": 0x50435055, "lru": 0x4C525500,
       "ring": 0x52494E47, "task": 0x5441534B}


def test_maps_all_program_side(test_objects, fds_unchanged):
    n = 11
    ring = []
    with BpfObject.open(test_objects("maps_all")) as obj:
        set_trigger(obj)
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        for name, (t, k, v, entries, flags) in MAPS_ALL.items():
            info = obj.maps[name].info()
            assert (info["type"], info["key_size"], info["value_size"], info["max_entries"],
                    info["map_flags"]) == (t, k, v, entries, flags), name
            assert info["name"] == name[:15]
        kv_btf = {n for n, (t, *_r) in MAPS_ALL.items()
                  if t not in (uapi.BPF_MAP_TYPE_RINGBUF, uapi.BPF_MAP_TYPE_PERF_EVENT_ARRAY)}
        for name in kv_btf:  # key/value BTF ids given to the kernel where it takes them
            assert obj.maps[name].info()["btf_value_type_id"], name

        tid = threading.get_native_id()
        key = {"tgid": os.getpid(), "tid": tid}
        # one CPU for the whole burst: a per-CPU copy made by a program on another
        # CPU starts at zero (tag 0), so a migration would break the tag check
        allowed = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(allowed)})
        try:
            trigger(n)
        finally:
            os.sched_setaffinity(0, allowed)
        assert obj.bss["calls"] == n
        assert obj.bss["perf_output_errors"] == n and obj.bss["ring_reserve_failed"] == 0
        assert obj.maps["storage_echo"][tid] == {"count": n, "tag": TAG["task"], "tid": tid}
        assert obj.maps["hash_map"][key] == {"count": n, "tag": TAG["hash"], "tid": tid}
        assert obj.maps["lru_hash"][key] == {"count": n, "tag": TAG["lru"], "tid": tid}
        pcpu = obj.maps["pcpu_hash"][key]
        assert len(pcpu) == NCPU and percpu_sum(pcpu) == n
        assert all(v["tag"] == TAG["pcpu"] for v in pcpu if v["count"])
        assert percpu_sum(obj.maps["lru_pcpu_hash"][key]) == n
        assert percpu_sum(obj.maps["pcpu_array"][1]) == n and percpu_sum(obj.maps["pcpu_array"][0]) == 0
        assert obj.maps["array_map"][1] == {"count": n, "tag": TAG["array"], "tid": tid}
        with RingBuffer(obj.maps["ring"].fd, 16384, lambda view: ring.append(bytes(view))) as rb:
            rb.consume()
        assert [struct.unpack("<QII", r) for r in ring] == [(i, TAG["ring"], tid) for i in range(1, n + 1)]
    assert_gone(ids)


def test_maps_all_user_space_round_trips(test_objects, fds_unchanged):
    zero = {"count": 0, "tag": 0, "tid": 0}
    with BpfObject.open(test_objects("maps_all")) as obj:
        obj.load()  # target_tgid 0: the program never writes
        ids = object_ids(obj)
        for name in ("hash_map", "lru_hash"):
            m = obj.maps[name]
            k1, k2 = {"tgid": 1, "tid": 2}, {"tgid": 3, "tid": 4}
            m[k1] = {"count": 10, "tag": 1, "tid": 2}
            m[k2] = {"count": 20, "tag": 3, "tid": 4}
            assert m[k1]["count"] == 10 and m[k2] == {"count": 20, "tag": 3, "tid": 4}
            assert sorted((k["tgid"], k["tid"]) for k in m.keys()) == [(1, 2), (3, 4)]
            assert len(m) == 2
            m.delete(k1)
            assert m.get(k1) is None and list(m.keys()) == [k2]
            with pytest.raises(KeyError):
                m[k1]
            del m[k2]
            assert len(m) == 0
        arr = obj.maps["array_map"]
        assert len(arr) == 16 and arr[15] == zero
        arr[3] = {"count": 7, "tag": 8, "tid": 9}
        assert arr[3] == {"count": 7, "tag": 8, "tid": 9}
        assert [k for k, v in arr.items() if v != zero] == [3]
        with pytest.raises(SyscallError):  # array elements cannot be deleted
            arr.delete(3)
        for name, value in (("pcpu_hash", lambda c: {"count": c, "tag": c + 1, "tid": 0}),
                            ("lru_pcpu_hash", lambda c: c * 3)):
            m = obj.maps[name]
            k = {"tgid": 5, "tid": 6}
            m[k] = [value(c) for c in range(NCPU)]
            assert m[k] == [value(c) for c in range(NCPU)]
            assert list(m.keys()) == [k]
            m.delete(k)
            assert len(m) == 0
        pa = obj.maps["pcpu_array"]
        pa[2] = list(range(100, 100 + NCPU))
        assert pa[2] == list(range(100, 100 + NCPU)) and pa[0] == [0] * NCPU
        assert sorted(pa.keys()) == [0, 1, 2, 3]
        echo = obj.maps["storage_echo"]
        echo[42] = {"count": 1, "tag": 2, "tid": 3}
        assert dict(echo.items()) == {42: {"count": 1, "tag": 2, "tid": 3}}
        # perf_event_array: holds perf event fds (update/delete; no lookup from user space)
        pe = obj.maps["perf_events"]
        perf_fd = syscall.perf_event_open(uapi.PERF_TYPE_SOFTWARE, PERF_COUNT_SW_BPF_OUTPUT, pid=-1, cpu=0)
        try:
            pe[0] = struct.pack("<I", perf_fd)
            assert pe.delete(0) is True
            assert pe.delete(0) is False
            with pytest.raises(SyscallError):  # only perf event fds go in
                pe[1] = struct.pack("<I", obj.maps["ring"].fd)
        finally:
            os.close(perf_fd)
    assert_gone(ids)


# --------------------------------------------------------------------------- seed style
SWITCH_EVENT = struct.Struct("<QQII16s")


def test_seed_style_loads_unmodified_and_counts(test_objects, fds_unchanged):
    events = []
    before = set(os.listdir("/proc/self/fd"))
    with BpfObject.open(test_objects("seed_style")) as obj:
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        assert {p.link.mechanism for p in obj.programs.values()} <= {"perf_event", "perf_event_ioctl"}
        perf_fds = [f for f in set(os.listdir("/proc/self/fd")) - before
                    if _exists(f) and "perf_event" in os.readlink(f"/proc/self/fd/{f}")]
        assert len(perf_fds) == 2  # one perf event per tp/ program
        ev = obj.maps["events"]
        with RingBuffer(ev.fd, ev.max_entries, lambda v: events.append(bytes(v))) as rb:
            exits0 = obj.bss["exits_seen"]
            subprocess.run(["true"], check=True)
            time.sleep(0.05)
            rb.consume()
            assert obj.bss["exits_seen"] > exits0
        assert len(obj.maps["run_time"]) > 0
        assert any(sum(v) > 0 for v in obj.maps["run_time"].values())
        assert events
        decoded = [SWITCH_EVENT.unpack(e) for e in events]
        assert all(ran > 0 and cpu < NCPU for _, ran, cpu, _, _ in decoded)
        assert all(comm.rstrip(b"\0") for *_x, comm in decoded)
        ts = [d[0] for d in decoded]
        assert ts[-1] > ts[0]
    assert_gone(ids)
    assert not (set(os.listdir("/proc/self/fd")) - before), "perf event fds left open after close"


# --------------------------------------------------------------------------- several programs
@pytest.mark.parametrize("only, grows", [
    (["switch_b"], {"hits_b"}),
    (["switch_a", "sys_enter_c"], {"hits_a", "hits_c"}),
    (None, {"hits_a", "hits_b", "hits_c", "hits_d"}),
])
def test_multi_prog_selection(test_objects, only, grows):
    with BpfObject.open(test_objects("multi_prog")) as obj, IdRecorder() as rec:
        obj.load(only=only)
        obj.attach()
        time.sleep(0.03)
        trigger(2)
        want = sorted(only or ["switch_a", "switch_b", "sys_enter_c", "switch_d"])
        assert rec.prog_names() == want
        assert sorted(p.name for p in obj.programs.values() if p.loaded and p.attached) == want
        hits = obj.bss.to_dict()
        assert {k for k, v in hits.items() if v > 0} == grows
    assert_gone(rec.ids)


def test_multi_prog_unknown_name_lists_available(test_objects, fds_unchanged):
    with BpfObject.open(test_objects("multi_prog")) as obj:
        with pytest.raises(LoaderError) as e:
            obj.load(only=["switch_z"])
    for name in ("switch_z", "switch_a", "switch_b", "sys_enter_c", "switch_d"):
        assert name in str(e.value)


# --------------------------------------------------------------------------- externs
def kernel_version_code():
    a, b, c = (int(x) for x in re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", os.uname().release).groups(default="0"))
    return (a << 16) + (b << 8) + min(c, 255)


def kconfig(name):
    with gzip.open("/proc/config.gz", "rt") as f:
        for line in f:
            if line.startswith(name + "="):
                return line.split("=", 1)[1].strip()
    return None


def kallsyms(name):
    with open("/proc/kallsyms") as f:
        for line in f:
            addr, _, sym = line.split()[:3]
            if sym == name:
                return int(addr, 16)
    raise AssertionError(f"{name} not in /proc/kallsyms")


def test_externs_resolved(test_objects, fds_unchanged):
    n = 4
    with BpfObject.open(test_objects("externs")) as obj:
        set_trigger(obj)
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        assert obj.data["missing"] == 0xDEAD
        trigger(n)
        assert obj.bss["hits"] == n
        assert obj.bss["kver"] == kernel_version_code()
        assert kconfig("CONFIG_BPF_SYSCALL") == "y" and obj.bss["has_bpf_syscall"] == 1
        assert obj.bss["hz"] == int(kconfig("CONFIG_HZ"))
        assert kconfig("CONFIG_EBPF_ENERGY_NOPE") is None and obj.data["missing"] == 0
        stext = kallsyms("_stext")
        assert stext != 0 and obj.bss["stext"] == stext
        assert obj.bss["leader_pid"] == os.getpid()
    assert_gone(ids)


def test_externs_btf_given_to_the_kernel(test_objects, fds_unchanged):
    with BpfObject.open(test_objects("externs")) as obj:
        obj.load()
        assert obj.btf_fd > 0
        assert obj.programs["read_externs"].info()["btf_id"]


# --------------------------------------------------------------------------- lifecycle
def test_close_is_idempotent_and_object_unusable_after(test_objects, fds_unchanged):
    obj = BpfObject.open(test_objects("tp_btf_counter"))
    obj.load()
    obj.attach()
    ids = object_ids(obj)
    obj.close()
    obj.close()
    assert_gone(ids)
    assert not obj.programs["count_switch"].loaded and not obj.maps
