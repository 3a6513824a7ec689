"""A hash of maps with initial slots (``__array(values, ...)`` with
``.values = { [1] = &ones, [5] = &hundreds }``): the slots are filled at
load, read back through the outer map from user space and used by a
program; and libbpf's rule for them (a 4-byte key: the slot's index is an
int key) is this loader's too, with a clear error."""

import json

import pytest

from ebpf_energy.loader import syscall, uapi
from ebpf_energy.loader.errors import BtfError
from ebpf_energy.loader.maps import Map
from ebpf_energy.loader.object import BpfObject
from ebpf_energy.loader.spec import ObjectSpec

from test_load_cli import run_load
from test_object import assert_gone, fds_unchanged, object_ids, set_trigger, trigger  # noqa: F401

pytestmark = pytest.mark.kernel
U32 = lambda n: n.to_bytes(4, "little")  # noqa: E731


def outer_keys(fd, key_size=4):
    keys, key = [], None
    while (key := syscall.map_get_next_key(fd, key, key_size)) is not None:
        keys.append(int.from_bytes(key, "little"))
    return sorted(keys)


def test_hash_of_maps_slots_are_filled_at_load_and_used(test_objects, fds_unchanged):
    n = 7
    with BpfObject.open(test_objects("hash_of_maps")) as obj:
        set_trigger(obj)
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        outer = obj.maps["by_key"].fd
        inner = {name: obj.maps[name].info()["id"] for name in ("ones", "hundreds")}
        # read back through the outer map: each key holds its inner map's id, and nothing else is there
        assert outer_keys(outer) == [1, 5]
        assert syscall.map_lookup(outer, U32(1), 4) == U32(inner["ones"])
        assert syscall.map_lookup(outer, U32(5), 4) == U32(inner["hundreds"])
        assert syscall.map_lookup(outer, U32(2), 4) is None
        trigger(n)
        assert obj.maps["ones"][0] == n and obj.maps["hundreds"][0] == 100 * n
        assert obj.bss["misses"] == n  # key 2: never filled
    assert_gone(ids)


def test_hash_of_maps_slots_in_dry_run_and_load_report(test_objects):
    doc = json.loads(run_load(test_objects("hash_of_maps"), "--dry-run", "--json").stdout)
    by_key = {m["name"]: m for m in doc["maps"]}["by_key"]
    assert by_key["slots"] == [{"index": 1, "target": "ones"}, {"index": 5, "target": "hundreds"}]
    assert by_key["inner"] == {"type": "array", "key_size": 4, "value_size": 8, "max_entries": 1, "flags": 0}
    r = run_load(test_objects("hash_of_maps"), "--explain")
    assert r.returncode == 0, r.stderr
    assert "by_key[1] = map ones" in r.stderr and "by_key[5] = map hundreds" in r.stderr


KEY64_ERROR = ("map 'wide': a hash of maps with initial slots needs a 4-byte key (each slot's index is its key, "
               "an int), not 8 bytes; fill it from the program or from user space instead")


def test_a_hash_of_maps_initialiser_needs_an_int_key_as_in_libbpf(test_objects):
    """libbpf: ".maps relo #0: hash-of-maps 'wide' should have key size 4."
    (at open, before anything is loaded); the same rule here, in one sentence."""
    with pytest.raises(BtfError) as e:
        ObjectSpec.parse(test_objects("hash_of_maps_key64"))
    assert str(e.value) == KEY64_ERROR
    r = run_load(test_objects("hash_of_maps_key64"))
    assert r.returncode == 1 and r.stderr == f"error: {KEY64_ERROR}\n" and r.stdout == ""


def test_a_hash_of_maps_with_wide_keys_and_no_slots_is_fine(test_objects, fds_unchanged):
    """Only initial slots need the int key: an 8-byte-key hash of maps loads
    and takes an inner map of its template's kind under a wide key."""
    with BpfObject.open(test_objects("hash_of_maps_wide")) as obj:
        obj.load()
        ids = object_ids(obj)
        outer = obj.maps["wide_empty"]
        assert outer.key_size == 8
        with Map.create("wide_inner", uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1) as inner:  # as its template
            key = (1 << 40).to_bytes(8, "little")
            syscall.map_update(outer.fd, key, U32(inner.fd))
            assert syscall.map_lookup(outer.fd, key, 4) == U32(inner.info()["id"])
            assert outer_keys(outer.fd, 8) == [1 << 40]
    assert_gone(ids)

