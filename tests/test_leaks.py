"""Nothing of ours stays in the kernel: after close(), after a failed load,
after an exception in the ``with`` block, and after SIGINT/SIGTERM of a
running ``ebpf-energy load``.

Ids are recorded while the objects exist (BPF_OBJ_GET_INFO_BY_FD in process,
/proc/PID/fdinfo for the CLI) and each must then be ENOENT for
BPF_*_GET_FD_BY_ID. Other engineers' objects may be loaded concurrently, so
only our own ids are checked.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ebpf_energy.loader import syscall
from ebpf_energy.loader.errors import LoaderError, SyscallError, VerifierError
from ebpf_energy.loader.object import BpfObject

from test_load_cli import ROOT, Running, as_id_sets, fdinfo_ids
from test_object import IdRecorder, assert_gone, object_ids, set_trigger, trigger

pytestmark = pytest.mark.kernel
LOADABLE = ["tp_btf_counter", "core_task", "rodata", "globals", "subprog", "ringbuf", "maps_all",
            "seed_style", "multi_prog", "externs"]


def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("name", LOADABLE)
def test_close_leaves_nothing(test_objects, name):
    fds = open_fds()
    with IdRecorder() as rec:
        with BpfObject.open(test_objects(name)) as obj:
            obj.load()
            obj.attach()
            ids = object_ids(obj)
    # the trace saw every object the kernel reports for the loaded object
    assert ids == {k: v for k, v in rec.ids.items()}, (ids, rec.ids)
    assert ids["prog"] and ids["map"] and ids["link"] and ids["btf"]
    assert_gone(ids)
    assert open_fds() == fds


def test_failed_verification_leaves_nothing(test_objects):
    fds = open_fds()
    with IdRecorder() as rec, pytest.raises(VerifierError):
        BpfObject.open(test_objects("verifier_reject")).load()
    assert rec.ids["btf"] and rec.ids["map"]
    assert not rec.ids["prog"]  # bad_deref comes first and never loads
    assert_gone(rec.ids)
    assert open_fds() == fds


def test_failed_map_creation_half_way_leaves_nothing(test_objects):
    """A hash size the kernel refuses (2^28 + 1 entries need 2^29 buckets,
    past its limit; the memory check lets it through, so the kernel says
    E2BIG): the maps created before it, and the BTF, must go."""
    fds = open_fds()
    with IdRecorder() as rec, pytest.raises(SyscallError) as e:
        with BpfObject.open(test_objects("maps_all")) as obj:
            obj.set_max_entries("hash_map", (1 << 28) + 1)
            # create it last, so the other maps exist when it fails
            obj.spec.maps = {**{k: v for k, v in obj.spec.maps.items() if k != "hash_map"},
                             "hash_map": obj.spec.maps["hash_map"]}
            obj.load()
    assert e.value.command == "BPF_MAP_CREATE" and "map hash_map (hash" in str(e.value)
    assert len(rec.ids["map"]) >= 6 and rec.ids["btf"] and not rec.ids["prog"]
    assert_gone(rec.ids)
    assert open_fds() == fds


def test_failed_load_of_later_program_closes_earlier_ones(test_objects):
    """good_prog loads, then bad_deref is rejected: good_prog's fd must be closed too."""
    fds = open_fds()
    with IdRecorder() as rec, pytest.raises(VerifierError):
        with BpfObject.open(test_objects("verifier_reject")) as obj:
            obj.load(only=["good_prog", "bad_deref"])  # in this order: good_prog first
    assert rec.prog_names() == ["good_prog"]
    assert_gone(rec.ids)
    assert open_fds() == fds


def test_exception_in_with_block_detaches(test_objects):
    fds = open_fds()
    with pytest.raises(RuntimeError):
        with BpfObject.open(test_objects("ringbuf")) as obj:
            set_trigger(obj)
            obj.load()
            obj.attach()
            ids = object_ids(obj)
            trigger(2)
            raise RuntimeError("user code failed")
    assert_gone(ids)
    assert open_fds() == fds


def _max_id(next_id):
    last, cur = 0, next_id(0)
    while cur is not None:
        last, cur = cur, next_id(cur)
    return last


def _new_named(next_id, get_fd, kind, start, names):
    """Ids above ``start`` whose object's name is one of ``names``."""
    found = []
    cur = next_id(start)
    while cur is not None:
        try:
            fd = get_fd(cur)
        except SyscallError:
            fd = None
        if fd is not None:
            try:
                if syscall.obj_get_info(fd, kind).get("name") in names:
                    found.append(cur)
            finally:
                os.close(fd)
        cur = next_id(cur)
    return found


def test_cli_failed_load_leaves_nothing(test_objects):
    prog0 = _max_id(syscall.prog_get_next_id)
    map0 = _max_id(syscall.map_get_next_id)
    r = subprocess.run([sys.executable, "-m", "ebpf_energy", "load", str(test_objects("verifier_reject"))],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "bad_deref" in r.stderr
    # the process is gone, so anything it made and leaked would be pinned or linked: look by name
    deadline = time.monotonic() + 5
    while True:
        progs = _new_named(syscall.prog_get_next_id, syscall.prog_get_fd_by_id, "prog", prog0,
                           {"bad_deref", "good_prog"})
        maps = _new_named(syscall.map_get_next_id, syscall.map_get_fd_by_id, "map", map0,
                          {"values", "verifier_r.maps"})
        if not (progs or maps) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not progs and not maps


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("name, links", [("seed_style", 2), ("maps_all", 1), ("subprog", 2)])
def test_cli_signal_stops_cleanly(test_objects, name, links, sig):
    with Running(test_objects(name), "--json") as run:
        ids = run.wait_attached(links)
        # cross-check: each program id the child holds is one of the object's programs
        with BpfObject.open(test_objects(name)) as spec_only:
            names = set(spec_only.programs)
        for prog_id in ids["prog"]:
            fd = syscall.prog_get_fd_by_id(prog_id)
            try:
                assert syscall.obj_get_info(fd, "prog")["name"] in names
            finally:
                os.close(fd)
        assert len(ids["prog"]) == links and ids["map"] and ids["btf"]
        held = as_id_sets(ids)
        t0 = time.monotonic()
        rc = run.stop(sig)
        assert time.monotonic() - t0 < 10, "the signal did not end the 30 s wait"
    assert rc == 128 + sig, run.stderr  # a clean, early stop: the report, and 128 + the signal (-d was not up)
    report = json.loads(run.stdout)
    assert {p["id"] for p in report["programs"]} == held["prog"]
    assert_gone(held)
    assert not any(fdinfo_ids(run.proc.pid).values())
