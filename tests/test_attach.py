"""tp/, raw_tp/ and tp_btf/ attachment: hand-assembled counters count real events,
and closing removes every kernel object and fd we made."""

import errno
import os

import pytest

from ebpf_energy.loader import attach, syscall, uapi
from ebpf_energy.loader.errors import AttachError, SyscallError
from ebpf_energy.loader.maps import Map

import loader_progs as lp
from test_syscall import wait_gone

pytestmark = pytest.mark.kernel
CALLS = 37


def _load(kind, count_fd):
    pid = os.getpid()
    if kind in ("tp", "tp_legacy"):
        insns = lp.counter_insns(count_fd, pid=pid)
        return syscall.prog_load(uapi.BPF_PROG_TYPE_TRACEPOINT, insns, "GPL", name="count_tp")[0]
    # raw_tp and tp_btf see sys_enter(regs, id): the syscall number is the u64 at ctx+8
    insns = lp.counter_insns(count_fd, pid=pid, syscall_nr_ctx_off=8, syscall_nr=lp.NR_GETPPID)
    if kind == "raw_tp":
        return syscall.prog_load(uapi.BPF_PROG_TYPE_RAW_TRACEPOINT, insns, "GPL", name="count_raw")[0]
    return syscall.prog_load(uapi.BPF_PROG_TYPE_TRACING, insns, "GPL", name="count_btf",
                             expected_attach_type=uapi.BPF_TRACE_RAW_TP,
                             attach_btf_id=lp.vmlinux_btf_id("btf_trace_sys_enter"))[0]


def _attach(kind, prog_fd):
    if kind == "tp":
        return attach.attach_tracepoint(prog_fd, "syscalls", "sys_enter_getppid")
    if kind == "tp_legacy":
        return attach.attach_tracepoint(prog_fd, "syscalls", "sys_enter_getppid", legacy=True)
    if kind == "raw_tp":
        return attach.attach_raw_tracepoint(prog_fd, "sys_enter")
    return attach.attach_tracing(prog_fd, "tp_btf/sys_enter")


@pytest.mark.parametrize("kind", ["tp", "tp_legacy", "raw_tp", "tp_btf"])
def test_counter_counts_real_events_and_close_leaves_nothing(kind):
    before = lp.open_fds()
    counts = Map.create("counts", uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1)
    map_id = counts.info()["id"]
    prog_fd = _load(kind, counts.fd)
    prog_id = syscall.obj_get_info(prog_fd, "prog")["id"]
    link = _attach(kind, prog_fd)
    link_id = None
    try:
        info = link.info()
        assert info["prog_id"] == prog_id
        if kind == "tp_legacy":
            assert link.mechanism == "perf_event_ioctl" and info["id"] is None
        else:
            link_id = info["id"]
            # tp_btf programs attach through a raw tracepoint link too (named by the BTF target)
            want = {"tp": "perf_event", "raw_tp": "raw_tracepoint", "tp_btf": "raw_tracepoint"}[kind]
            assert info["type_name"] == want
            if kind in ("raw_tp", "tp_btf"):
                assert info["tp_name"] == "sys_enter"
        for _ in range(CALLS):
            os.getppid()
        assert int.from_bytes(counts[0], "little") == CALLS
    finally:
        link.close()
        link.close()  # idempotent
    for _ in range(5):
        os.getppid()
    assert int.from_bytes(counts[0], "little") == CALLS, "program still ran after detach"
    os.close(prog_fd)
    counts.close()
    wait_gone(syscall.prog_get_fd_by_id, prog_id)
    wait_gone(syscall.map_get_fd_by_id, map_id)
    if link_id is not None:
        wait_gone(syscall.link_get_fd_by_id, link_id)
    assert lp.open_fds() == before


def test_stats_count_runs_while_enabled():
    with Map.create("counts", uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1) as counts:
        prog_fd = _load("raw_tp", counts.fd)
        try:
            stats = syscall.enable_stats()
            try:
                with attach.attach_raw_tracepoint(prog_fd, "sys_enter"):
                    for _ in range(CALLS):
                        os.getppid()
                info = syscall.obj_get_info(prog_fd, "prog")
            finally:
                os.close(stats)
            assert info["run_cnt"] >= CALLS  # every syscall of this process ran it
            assert info["run_time_ns"] > 0
        finally:
            os.close(prog_fd)


def test_unknown_tracepoint_is_a_clear_attach_error():
    with Map.create("counts", uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1) as counts:
        tp_fd = _load("tp", counts.fd)
        raw_fd = _load("raw_tp", counts.fd)
        before = lp.open_fds()
        try:
            with pytest.raises(AttachError) as ei:
                attach.attach_tracepoint(tp_fd, "sched", "no_such_event")
            msg = str(ei.value)
            assert "sched/no_such_event" in msg and "events/sched/no_such_event/id" in msg
            assert attach.tracefs_root() in msg
            with pytest.raises(AttachError, match="bad tracepoint name"):
                attach.attach_tracepoint(tp_fd, "..", "x")
            with pytest.raises(AttachError, match="no_such_raw_tp"):
                attach.attach_raw_tracepoint(raw_fd, "no_such_raw_tp")
            assert lp.open_fds() == before  # failed attaches leave no perf or link fd behind
        finally:
            os.close(tp_fd)
            os.close(raw_fd)


def test_wrong_program_type_for_hook_is_attach_error():
    with Map.create("counts", uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1) as counts:
        prog_fd = lp.load_socket_filter(lp.counter_insns(counts.fd), "sockf")
        before = lp.open_fds()
        try:
            with pytest.raises(AttachError, match="tp/syscalls/sys_enter_getppid"):
                attach.attach_tracepoint(prog_fd, "syscalls", "sys_enter_getppid")
            with pytest.raises(AttachError):
                attach.attach_tracing(prog_fd)
        finally:
            os.close(prog_fd)
        assert lp.open_fds() == before - {str(prog_fd)}


def test_tracefs_root_finds_the_event_tree():
    root = attach.tracefs_root()
    assert os.path.isfile(os.path.join(root, "events", "sched", "sched_switch", "id"))
    assert attach.tracepoint_id("sched", "sched_switch") > 0


def test_prog_id_lookup_after_close_fails_with_enoent():
    with Map.create("counts", uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1) as counts:
        prog_fd = _load("tp_btf", counts.fd)
        prog_id = syscall.obj_get_info(prog_fd, "prog")["id"]
        link = attach.attach_tracing(prog_fd)
        os.close(prog_fd)  # the link keeps the program alive ...
        fd = syscall.prog_get_fd_by_id(prog_id)
        os.close(fd)
        link.close()  # ... until it goes
        wait_gone(syscall.prog_get_fd_by_id, prog_id)
        with pytest.raises(SyscallError) as ei:
            syscall.prog_get_fd_by_id(prog_id)
        assert ei.value.errno == errno.ENOENT and "BPF_PROG_GET_FD_BY_ID" in str(ei.value)
