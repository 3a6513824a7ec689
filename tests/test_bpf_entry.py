"""The one bpf() entry: the command table, attr sizes, EAGAIN retry, errno -> exception,
the test hook (fake kernel and recorder) and the Fd that closes once."""

import errno
import os
from pathlib import Path

import pytest

from ebpf_energy.loader import fake, fd as fdmod, syscall, uapi
from ebpf_energy.loader.collection import Collection
from ebpf_energy.loader.errors import NotSupported, PermissionDenied, SyscallError
from ebpf_energy.loader.maps import Map, MapFullError
from ebpf_energy.loader.prepare import prepare
from ebpf_energy.loader.spec import ObjectSpec
from ebpf_energy.loader.target import Target

DATA = Path(__file__).resolve().parent / "testdata"


def test_every_command_names_a_struct_of_the_cdef():
    for cmd, (struct, result) in syscall.COMMANDS.items():
        assert cmd in uapi.CMD_NAMES
        assert syscall.ffi.sizeof(f"struct {struct}") > 0
        assert result in (syscall.FD, syscall.LINK, syscall.NONE, syscall.COUNT)


@pytest.mark.parametrize("struct, fields, size", [
    ("bpf_attr_elem", ["map_fd"], 4),                          # BPF_MAP_FREEZE: the fd only
    ("bpf_attr_elem", ["map_fd", "key", "value", "flags"], 32),
    ("bpf_attr_get_id", ["start_id", "next_id", "open_flags"], 12),
    ("bpf_attr_raw_tp", ["name", "prog_fd"], 12),
    ("bpf_attr_link_create", ["prog_fd", "target_fd", "attach_type", "flags"], 16),
    ("bpf_attr_link_create", ["prog_fd", "target_btf_id"], 20),
    ("bpf_attr_obj", ["pathname", "bpf_fd", "file_flags"], 16),
    ("bpf_attr_map_create", ["map_type", "btf_value_type_id"], 60),   # map_extra (5.16) left out
    ("bpf_attr_map_create", ["map_extra"], 72),
])
def test_attr_size_is_the_end_of_the_last_field_set(struct, fields, size):
    # the sizes the wrappers used to count by hand, now derived from the fields
    assert syscall.attr_size(struct, fields) == size


def test_fake_kernel_sees_the_exact_fields_of_a_map_create():
    with fake.Kernel() as k:
        m = Map.create("counts", uapi.BPF_MAP_TYPE_HASH, 4, 8, 1024)
        try:
            assert isinstance(m.fd, fdmod.Fd) and m.fd in k.fds
        finally:
            m.close()
    (call,) = k.calls
    assert call.command == "BPF_MAP_CREATE"
    assert call.fields == dict(map_type=1, key_size=4, value_size=8, max_entries=1024, map_flags=0,
                               inner_map_fd=0, numa_node=0, map_name=b"counts", map_ifindex=0, btf_fd=0,
                               btf_key_type_id=0, btf_value_type_id=0)
    assert call.size == 60 and call.result in k.fds


def test_eagain_is_retried_then_succeeds():
    with fake.Kernel() as k:
        k.answer("BPF_MAP_CREATE", errno.EAGAIN, errno.EAGAIN)
        fd = syscall.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, 4, 1)
        fd.close()
    assert k.commands() == ["BPF_MAP_CREATE"] * 3
    assert [c.errno for c in k.calls] == [errno.EAGAIN, errno.EAGAIN, 0]


def test_eagain_gives_up_after_the_limit():
    with fake.Kernel() as k:
        k.answer("BPF_OBJ_GET", *[errno.EAGAIN] * syscall.EAGAIN_TRIES)
        with pytest.raises(SyscallError) as ei:
            syscall.obj_get("/sys/fs/bpf/x")
    assert ei.value.errno == errno.EAGAIN
    assert len(k.calls) == syscall.EAGAIN_TRIES


def test_eagain_on_the_element_fast_path_is_retried():
    with fake.Kernel() as k:
        k.answer("BPF_MAP_UPDATE_ELEM", errno.EAGAIN)
        syscall.map_update(99, b"\0" * 4, b"\1" * 8)
    assert k.commands() == ["BPF_MAP_UPDATE_ELEM"] * 2
    assert k.calls[1].fields["map_fd"] == 99 and k.calls[1].size == 32


@pytest.mark.parametrize("err, exc, command", [
    (errno.EPERM, PermissionDenied, "BPF_PROG_GET_FD_BY_ID"),
    (errno.EINVAL, NotSupported, "BPF_PROG_GET_FD_BY_ID"),
    (uapi.ENOTSUPP, NotSupported, "BPF_PROG_GET_FD_BY_ID"),
    (errno.ENOENT, SyscallError, "BPF_PROG_GET_FD_BY_ID"),
])
def test_errno_becomes_a_typed_exception(err, exc, command):
    with fake.Kernel() as k:
        k.answer(command, err)
        with pytest.raises(exc) as ei:
            syscall.prog_get_fd_by_id(7)
    assert ei.value.errno == err and ei.value.command == command
    assert k.calls[0].fields == dict(start_id=7, next_id=0, open_flags=0)


def test_a_full_map_is_a_map_full_error():
    with fake.Kernel() as k:
        k.answer("BPF_MAP_UPDATE_ELEM", errno.E2BIG)
        with pytest.raises(MapFullError):
            syscall.map_update(3, b"\0" * 4, b"\0" * 4)


def test_collection_load_makes_exactly_these_calls_with_a_fake_kernel():
    """A whole loader path without root: prepare() a committed object, then
    Collection.load under a fake kernel; the calls are the load order the
    docs promise (BTF, maps with their initial data, programs with the map
    fds written in) and teardown closes every descriptor."""
    spec = ObjectSpec.parse("maps_all.bpf.o", (DATA / "maps_all.bpf.o").read_bytes())
    target = Target.from_btf_file(str(DATA / "fake_kernel.bpf.o"), str(DATA / "fake_kernel.config"),
                                  possible_cpus=4, page_size=4096)
    prepared = prepare(spec, target)
    with fake.Kernel() as k:
        coll = Collection.load(prepared)
        made = [c.result for c in k.calls if c.command in ("BPF_BTF_LOAD", "BPF_MAP_CREATE", "BPF_PROG_LOAD")]
        coll.close()
    cmds = k.commands()
    want = ["BPF_BTF_LOAD"]
    for m in prepared.maps.values():
        want += ["BPF_MAP_CREATE"] + (["BPF_MAP_UPDATE_ELEM"] if m.initial is not None else []) + \
                (["BPF_MAP_FREEZE"] if m.initial is not None and m.freeze else [])
    want += ["BPF_PROG_LOAD"] * len(prepared.programs)
    assert cmds == want
    creates = [c for c in k.calls if c.command == "BPF_MAP_CREATE"]
    assert [c.fields["map_name"].decode() for c in creates] == [m.kernel_name[:15] for m in prepared.maps.values()]
    for c, m in zip(creates, prepared.maps.values()):
        assert (c.fields["map_type"], c.fields["key_size"], c.fields["value_size"], c.fields["max_entries"]) == \
               (m.type, m.key_size, m.value_size, m.max_entries)
    loads = [c for c in k.calls if c.command == "BPF_PROG_LOAD"]
    assert [c.fields["prog_name"].decode() for c in loads] == [p.name[:15] for p in prepared.programs.values()]
    assert cmds.index("BPF_PROG_LOAD") > max(i for i, c in enumerate(cmds) if c == "BPF_MAP_CREATE")
    for n in made:  # every descriptor the fake kernel handed out is closed again
        with pytest.raises(OSError):
            os.fstat(n)


@pytest.mark.kernel
def test_recorder_keeps_real_calls():
    with fake.Recorder() as rec:
        m = Map.create("rec", uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 2)
        try:
            m[1] = b"\7" * 8
            assert m[1] == b"\7" * 8
        finally:
            m.close()
    assert rec.commands() == ["BPF_MAP_CREATE", "BPF_MAP_UPDATE_ELEM", "BPF_MAP_LOOKUP_ELEM"]
    assert rec.calls[0].errno == 0 and rec.calls[0].fields["map_name"] == b"rec"
    assert rec.calls[1].fields["map_fd"] == rec.calls[2].fields["map_fd"] == rec.calls[0].result


def test_fd_closes_once_and_leaves_the_registry():
    n = os.open(os.devnull, os.O_RDONLY)
    f = fdmod.Fd(n, "test")
    assert f in fdmod.open_fds() and int(f) == n
    f.close()
    f.close()  # the second close does nothing (no EBADF, and no closing a reused number)
    assert f.closed and all(x is not f for x in fdmod.open_fds())


def test_leak_registry_finds_an_unclosed_fd_and_ignores_one_closed_elsewhere():
    fdmod.track()  # as the session does (conftest)
    kept = fdmod.Fd(os.open(os.devnull, os.O_RDONLY), "kept")
    gone = fdmod.Fd(os.open(os.devnull, os.O_RDONLY), "gone")
    os.close(gone)  # closed behind the registry's back: not a leak
    try:
        leaks = dict(fdmod.leaks())
        assert leaks.get(int(kept)) == "kept"
        assert leaks.get(int(gone)) != "gone"
    finally:
        kept.close()
    assert int(kept) not in dict(fdmod.leaks())


@pytest.mark.kernel
def test_a_real_load_closes_every_fd_it_made():
    """BpfObject open -> load -> attach -> close on the real kernel, recorded: every descriptor a
    bpf() call handed out is an Fd, and each one is closed by the time close() returns."""
    from ebpf_energy.loader.object import BpfObject

    with fake.Recorder() as rec:
        obj = BpfObject.open(DATA / "hello.bpf.o")
        obj.set_global("only_tgid", 4_000_000_000)  # no such process: the program runs, the map stays empty
        obj.load()
        obj.attach()
        live = [f for f in fdmod.open_fds() if not f.closed]
        obj.close()
    made = [c.result for c in rec.calls if syscall.COMMANDS[getattr(uapi, c.command)][1] in (syscall.FD, syscall.LINK)]
    assert [c.command for c in rec.calls if c.result in made] == \
        ["BPF_BTF_LOAD", "BPF_MAP_CREATE", "BPF_MAP_CREATE", "BPF_PROG_LOAD", "BPF_RAW_TRACEPOINT_OPEN"]
    assert {int(f) for f in live} >= set(made)
    for n in made:
        with pytest.raises(OSError):
            os.fstat(n)
