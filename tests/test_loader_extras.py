"""Loader paths the corpus tests do not reach: fentry/fexit, pinning by name, no kernel BTF."""

import os

import pytest

from ebpf_energy.loader import syscall
from ebpf_energy.loader.errors import BtfError, LoaderError
from ebpf_energy.loader.kernel_btf import KernelBtf
from ebpf_energy.loader.object import BpfObject, TrampolineRefused

PIN = "/sys/fs/bpf/pinned_arr"


def _read_a_file():
    with open("/proc/self/stat", "rb") as f:
        f.read()


def _try_fentry(path):
    """Load and attach; returns the object, or the refusal the kernel gave."""
    obj = BpfObject.open(path)
    try:
        obj.load()
        obj.attach()
    except TrampolineRefused as e:
        obj.close()
        return None, e
    return obj, None


@pytest.mark.kernel
@pytest.mark.requires_fentry
def test_fentry_and_fexit_count_calls(test_objects):
    obj, refused = _try_fentry(test_objects("fentry"))
    if refused is not None:
        pytest.skip(f"kernel refuses BPF trampolines: {refused}")
    with obj:
        before = obj.bss["entries"]
        for _ in range(20):
            _read_a_file()
        assert obj.bss["entries"] - before >= 20
        assert obj.bss["exits"] >= 20


@pytest.mark.kernel
def test_fentry_refusal_is_one_clear_sentence_and_leaves_nothing(test_objects):
    before = set(_our_prog_ids())
    obj, refused = _try_fentry(test_objects("fentry"))
    if obj is not None:  # a kernel with trampolines: then it must really work
        with obj:
            assert all(p.attached for p in obj.programs.values())
        return
    text = str(refused)
    assert "on_vfs_read_entry" in text and "fentry/fexit" in text and "tracepoint" in text
    assert "Traceback" not in text
    assert set(_our_prog_ids()) == before


def _our_prog_ids():
    ids, cur = [], 0
    while True:
        cur = syscall.prog_get_next_id(cur)
        if cur is None:
            return ids
        try:
            fd = syscall.prog_get_fd_by_id(cur)
        except LoaderError:
            continue
        try:
            if syscall.obj_get_info(fd, "prog")["name"].startswith("on_vfs_read"):
                ids.append(cur)
        finally:
            syscall.close(fd)


@pytest.fixture
def no_pin():
    for _ in range(2):
        if os.path.isdir(PIN):
            os.rmdir(PIN)
        elif os.path.exists(PIN):
            os.unlink(PIN)
        if _ == 0:
            yield


@pytest.mark.kernel
def test_pinning_by_name_creates_then_reuses(test_objects, no_pin):
    path = test_objects("core_maps")
    with BpfObject.open(path) as first:
        first.load()
        assert os.path.exists(PIN)
        first.maps["pinned_arr"].update(1, 0xABCDEF)
        first_id = first.maps["pinned_arr"].info()["id"]
    assert os.path.exists(PIN)  # a pinned map outlives its object, by design
    with BpfObject.open(path) as second:
        second.load()
        m = second.maps["pinned_arr"]
        assert m.info()["id"] == first_id
        assert m.lookup(1) == 0xABCDEF


@pytest.mark.kernel
def test_something_else_at_the_pin_path_is_named(test_objects, no_pin):
    """A directory there (the kernel's EACCES read "needs root" to root) or a
    pinned program (its info read as a map's): each named, nothing left open."""
    path = test_objects("core_maps")
    os.mkdir(PIN)
    with BpfObject.open(path) as obj:
        with pytest.raises(LoaderError, match=r"pinned_arr is there but is a directory, not a pinned map: "
                                              r"remove it \(rmdir"):
            obj.load()
    os.rmdir(PIN)
    with BpfObject.open(test_objects("tp_btf_counter")) as other:
        other.load()
        syscall.obj_pin(other.programs["count_switch"].fd, PIN)
    with BpfObject.open(path) as obj:
        with pytest.raises(LoaderError, match="holds a pinned prog, not a map: remove it"):
            obj.load()


@pytest.mark.kernel
def test_pinned_map_with_other_attributes_is_refused(test_objects, no_pin):
    path = test_objects("core_maps")
    with BpfObject.open(path) as first:
        first.load()
    with BpfObject.open(path) as second:
        second.spec.maps["pinned_arr"].max_entries += 1
        with pytest.raises(LoaderError, match="pinned at .* with different attributes"):
            second.load()


def test_missing_kernel_btf_is_a_clear_error(tmp_path):
    with pytest.raises(BtfError, match="CONFIG_DEBUG_INFO_BTF"):
        KernelBtf.load(str(tmp_path / "vmlinux"))
    bad = tmp_path / "garbage"
    bad.write_bytes(b"not btf at all" * 10)
    with pytest.raises(BtfError):
        KernelBtf.load(str(bad), cache_dir=str(tmp_path))
