"""bpf() wrappers against the real kernel: errors, logs, object info, ids, privilege."""

import errno
import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from ebpf_energy.loader import explain, syscall, uapi
from ebpf_energy.loader.asm import R0, Asm
from ebpf_energy.loader.errors import BtfError, NotSupported, PermissionDenied, SyscallError, VerifierError

import loader_progs as lp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_gone(get_fd_by_id, obj_id, timeout=2.0):
    """The kernel frees ids when the last reference goes; allow deferred work a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = get_fd_by_id(obj_id)
        except SyscallError as e:
            assert e.errno == errno.ENOENT
            return
        os.close(fd)
        assert time.monotonic() < deadline, f"object id {obj_id} still alive after close"
        time.sleep(0.02)


def test_parse_cpu_list():
    assert syscall.parse_cpu_list("0-3,6,8-9\n") == 7
    assert syscall.parse_cpu_list("0") == 1
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read()
    assert syscall.num_possible_cpus() == syscall.parse_cpu_list(text) >= os.cpu_count()


def test_kernel_names_are_sanitised():
    assert syscall._name16("a-very-long-map-name!") == b"a_very_long_map"
    assert syscall._name16("") == b""


@pytest.mark.kernel
def test_map_create_bad_args_is_not_supported():
    with pytest.raises(NotSupported) as ei:
        syscall.map_create(uapi.BPF_MAP_TYPE_HASH, 0, 8, 16, name="bad")
    assert ei.value.command == "BPF_MAP_CREATE"
    assert ei.value.errno == errno.EINVAL
    assert "BPF_MAP_CREATE" in str(ei.value) and "key_size" in str(ei.value)
    with pytest.raises(NotSupported, match="BPF_MAP_CREATE"):
        syscall.map_create(9999, 4, 4, 1)


@pytest.mark.kernel
def test_trace_reads_like_a_syscall_log():
    buf = io.StringIO()
    explain.enable(buf)
    try:
        fd = syscall.map_create(uapi.BPF_MAP_TYPE_HASH, 4, 8, 1024, name="counts")
        try:
            syscall.map_update(fd, b"\1\0\0\0", b"\2" * 8)
            assert syscall.map_lookup(fd, b"\3\0\0\0", 8) is None
        finally:
            os.close(fd)
    finally:
        explain.disable()
    text = buf.getvalue()
    assert f"BPF_MAP_CREATE type=hash key=4 value=8 max_entries=1024 flags=0 name=counts -> fd {fd}" in text
    assert f"BPF_MAP_UPDATE_ELEM fd={fd} key=01000000 value=0202020202020202 flags=BPF_ANY -> ok" in text
    assert f"BPF_MAP_LOOKUP_ELEM fd={fd} key=03000000 -> ENOENT" in text


@pytest.mark.kernel
def test_prog_load_returns_log_and_grows_it():
    a = Asm().mov(R0, 0).exit()
    # a 64-byte log cannot hold a level-2 log: the kernel says ENOSPC and we must grow and retry
    fd, log = syscall.prog_load(uapi.BPF_PROG_TYPE_SOCKET_FILTER, a.assemble(), "GPL", name="ok",
                                log_level=2, log_size=64)
    try:
        assert "processed 2 insns" in log
        assert len(log) > 64
        info = syscall.obj_get_info(fd, "prog")
        assert info["name"] == "ok" and info["type_name"] == "socket_filter"
        assert info["verified_insns"] == 2 and info["xlated_prog_len"] == 16 and info["id"] > 0
    finally:
        os.close(fd)


@pytest.mark.kernel
def test_verifier_rejection_carries_the_log():
    bad = Asm().exit().assemble()  # r0 never written
    with pytest.raises(VerifierError) as ei:
        syscall.prog_load(uapi.BPF_PROG_TYPE_SOCKET_FILTER, bad, "GPL", name="bad", log_level=1)
    assert ei.value.program == "bad"
    assert "R0 !read_ok" in ei.value.log
    assert "R0 !read_ok" in str(ei.value)
    # without a log: a SyscallError that says how to get one, not a bogus "needs root"
    with pytest.raises(SyscallError) as ei2:
        syscall.prog_load(uapi.BPF_PROG_TYPE_SOCKET_FILTER, bad, "GPL", name="bad")
    assert not isinstance(ei2.value, PermissionDenied)
    assert ei2.value.errno == errno.EACCES and "log_level" in str(ei2.value)


@pytest.mark.kernel
def test_btf_load_and_info_and_bad_btf():
    blob, _, _ = lp.tiny_btf()
    fd = syscall.btf_load(blob)
    try:
        info = syscall.obj_get_info(fd, "btf")
        assert info["id"] > 0 and info["btf_size"] == len(blob) and not info["kernel_btf"]
    finally:
        os.close(fd)
    with pytest.raises(BtfError) as ei:
        syscall.btf_load(blob[:30])
    assert "BPF_BTF_LOAD" in str(ei.value)


@pytest.mark.kernel
def test_ids_iterate_and_vanish_after_close():
    before = lp.open_fds()
    fd = syscall.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1, name="idtest")
    map_id = syscall.obj_get_info(fd, "map")["id"]
    prog_fd = lp.load_socket_filter(lp.counter_insns(fd), "idtest")
    prog_id = syscall.obj_get_info(prog_fd, "prog")["id"]
    assert syscall.obj_get_info(prog_fd, "prog")["map_ids"] == [map_id]

    seen, cur = [], 0
    while True:
        cur = syscall.map_get_next_id(cur)
        if cur is None:
            break
        seen.append(cur)
    assert map_id in seen
    again = syscall.map_get_fd_by_id(map_id)
    assert syscall.obj_get_info(again, "map")["id"] == map_id
    os.close(again)
    assert syscall.prog_get_next_id(prog_id - 1) is not None

    lp.run(prog_fd, repeat=5)
    assert syscall.map_lookup(fd, b"\0" * 4, 8) == (5).to_bytes(8, "little")

    syscall.close(prog_fd)
    syscall.close(fd)
    wait_gone(syscall.prog_get_fd_by_id, prog_id)
    wait_gone(syscall.map_get_fd_by_id, map_id)
    assert lp.open_fds() == before


@pytest.mark.kernel
def test_obj_get_info_rejects_unknown_kind_and_wrong_fd():
    with pytest.raises(ValueError):
        syscall.obj_get_info(0, "nope")
    r, w = os.pipe()
    try:
        with pytest.raises(SyscallError, match="BPF_OBJ_GET_INFO_BY_FD"):
            syscall.obj_get_info(r, "map")
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.kernel
def test_enable_stats_counts_runs():
    fd = syscall.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1, name="stats")
    stats = syscall.enable_stats()
    try:
        assert stats >= 0
    finally:
        os.close(stats)
        os.close(fd)


@pytest.mark.kernel
def test_unprivileged_user_gets_permission_denied():
    """Drop root for real (setpriv to nobody, no capabilities) and try BPF_MAP_CREATE."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed for the privilege-drop test")
    with tempfile.TemporaryDirectory(prefix="ebpf_energy_nonroot_") as tmp:
        os.chmod(tmp, 0o755)
        shutil.copytree(os.path.join(ROOT, "ebpf_energy"), os.path.join(tmp, "ebpf_energy"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.o"))
        # the runtime dependencies too: root's site-packages may sit under /root, unreadable to nobody
        import _cffi_backend
        import cffi
        import pycparser
        for mod in (cffi, pycparser):
            src = os.path.dirname(mod.__file__)
            shutil.copytree(src, os.path.join(tmp, os.path.basename(src)),
                            ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(_cffi_backend.__file__, tmp)
        for dirpath, dirnames, filenames in os.walk(tmp):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o644)
        code = textwrap.dedent("""
            from ebpf_energy.loader import syscall, uapi
            from ebpf_energy.loader.errors import PermissionDenied
            try:
                syscall.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1, name="nobody")
            except PermissionDenied as e:
                print("DENIED", e.command, e)
            else:
                print("CREATED")
        """)
        env = dict(os.environ, PYTHONPATH=tmp, PYTHONDONTWRITEBYTECODE="1")
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                              "--bounding-set=-all", sys.executable, "-c", code],
                             capture_output=True, text=True, env=env, cwd=tmp, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("DENIED BPF_MAP_CREATE"), out.stdout + out.stderr
    assert "needs root or CAP_BPF+CAP_PERFMON" in out.stdout


def test_prebuilt_ffi_module_is_current_and_matches_the_cdef():
    """_uapi_ffi.py is uapi.CDEF pre-parsed (fast start-up); regenerate it with
    `python3 -m ebpf_energy.loader.uapi` after editing CDEF."""
    import cffi

    from ebpf_energy.loader import _uapi_ffi

    assert _uapi_ffi.CDEF_CRC == uapi.cdef_crc(), "stale: run python3 -m ebpf_energy.loader.uapi"
    assert syscall.FFI_SOURCE == "pre-built"
    parsed = cffi.FFI()
    parsed.cdef(uapi.CDEF)
    for name in ("bpf_attr_map_create", "bpf_attr_elem", "bpf_attr_batch", "bpf_attr_prog_load", "bpf_attr_obj",
                 "bpf_attr_test_run", "bpf_attr_get_id", "bpf_attr_info", "bpf_attr_raw_tp", "bpf_attr_btf_load",
                 "bpf_attr_link_create", "bpf_prog_info", "bpf_map_info", "bpf_btf_info", "bpf_link_info",
                 "perf_event_attr"):
        assert _uapi_ffi.ffi.sizeof(f"struct {name}") == parsed.sizeof(f"struct {name}"), name


def test_attr_layouts_match_the_kernel_uapi():
    """Offsets the kernel reads, from include/uapi/linux/bpf.h and perf_event.h."""
    f = syscall.ffi
    assert f.offsetof("struct bpf_attr_map_create", "map_name") == 28
    assert f.offsetof("struct bpf_attr_map_create", "btf_fd") == 48
    assert f.offsetof("struct bpf_attr_map_create", "map_extra") == 64
    assert f.offsetof("struct bpf_attr_elem", "key") == 8 and f.sizeof("struct bpf_attr_elem") == 32
    assert f.offsetof("struct bpf_attr_batch", "count") == 32 and f.offsetof("struct bpf_attr_batch", "flags") == 48
    assert f.offsetof("struct bpf_attr_prog_load", "prog_name") == 48
    assert f.offsetof("struct bpf_attr_prog_load", "expected_attach_type") == 68
    assert f.offsetof("struct bpf_attr_prog_load", "attach_btf_id") == 108
    assert f.offsetof("struct bpf_attr_test_run", "repeat") == 32
    assert f.offsetof("struct bpf_attr_link_create", "target_btf_id") == 16
    assert f.offsetof("struct bpf_prog_info", "name") == 64
    assert f.offsetof("struct bpf_prog_info", "run_time_ns") == 192
    assert f.offsetof("struct bpf_prog_info", "verified_insns") == 216
    assert f.offsetof("struct bpf_map_info", "btf_id") == 64
    assert f.sizeof("struct perf_event_attr") == uapi.PERF_ATTR_SIZE_VER5
    assert f.offsetof("struct perf_event_attr", "wakeup_events") == 48
