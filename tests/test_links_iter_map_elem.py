"""Map-element iterators (iter/bpf_map_elem, iter/bpf_sk_storage_map,
iter/sockmap): this kernel answers their BPF_PROG_LOAD with EPERM, to root,
before verifying an instruction, and to libbpf too; the error says so in
one sentence instead of blaming privileges."""

import errno
import os
import shutil
import subprocess

import pytest

from ebpf_energy.loader.collection import TrampolineRefused
from ebpf_energy.loader.link.iterator import MAP_ELEMENT_TARGETS, load_refusal
from ebpf_energy.loader.object import BpfObject

from test_load_cli import run_load
from test_object import fds_unchanged  # noqa: F401

pytestmark = pytest.mark.kernel
PROGRAMS = {"dump_elems": "iter/bpf_map_elem", "walk_storage": "iter/bpf_sk_storage_map",
            "walk_sockmap": "iter/sockmap"}
REASON = ("this kernel refuses map-element iterators (iter/bpf_map_elem, iter/bpf_sk_storage_map, iter/sockmap: "
          "the ones handed a map element's buffers) at load, before verifying a single instruction, whatever "
          "the loader (libbpf too; the map itself is only named at attach); walk the map with "
          "bpf_for_each_map_elem() in a program, or from user space, instead")


def test_the_reason_names_only_map_element_iterators():
    assert sorted("iter/" + t for t in MAP_ELEMENT_TARGETS) == sorted(PROGRAMS.values())
    assert all(load_refusal(section) == REASON for section in PROGRAMS.values())
    assert load_refusal("iter/task") is None and load_refusal("iter/bpf_map") is None


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_each_map_element_iterator_is_refused_with_the_reason(test_objects, fds_unchanged, name):
    with BpfObject.open(test_objects("iter_map_elem")) as obj:
        with pytest.raises(TrampolineRefused) as e:
            obj.load(only=[name])
    assert e.value.errno == errno.EPERM
    assert str(e.value) == (f"program {name} ({PROGRAMS[name]}): EPERM although running as root, so not a "
                            f"missing privilege: {REASON}")


def test_load_says_it_in_one_line(test_objects):
    r = run_load(test_objects("iter_map_elem"), "--program", "dump_elems")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (f"error: program dump_elems (iter/bpf_map_elem): EPERM although running as root, so not "
                        f"a missing privilege: {REASON}\n")


def test_libbpf_gets_the_same_eperm(test_objects, tmp_path):
    """bpftool (libbpf) on the same object: the same EPERM, so it is the
    kernel's answer, not this loader's doing."""
    pin = f"/sys/fs/bpf/ebpf-energy-iter-map-elem-{os.getpid()}"
    try:
        r = subprocess.run([shutil.which("bpftool") or "bpftool", "prog", "loadall",
                            str(test_objects("iter_map_elem")), pin], capture_output=True, text=True, timeout=120)
    finally:
        if os.path.isdir(pin):
            shutil.rmtree(pin)
    assert r.returncode != 0
    assert "Operation not permitted" in r.stderr and "processed 0 insns" in r.stderr
