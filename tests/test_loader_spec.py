"""What a program or map becomes before and at creation (issue 15, part 1),
each feature with an object of its own (tests/bpf/), on this kernel.

Maps of maps and program arrays with their initial slots, the kernel's own
rules for map attributes (no BTF for fd maps, map_extra), the section table
(expected attach types, sleepable and frags flags, ``?`` sections), the
virtual ``__kconfig`` externs, weak kfuncs, callbacks, struct_ops, and the
object-level checks (byte order, statically linked objects).
"""

import json
import os
import subprocess
import time

import pytest

from ebpf_energy.loader import syscall
from ebpf_energy.loader.errors import ElfError, LoaderError
from ebpf_energy.loader.object import BpfObject
from ebpf_energy.loader.prepare import prepare
from ebpf_energy.loader.spec import ObjectSpec
from ebpf_energy.loader.target import Target
from test_load_cli import run_load
from test_object import assert_gone, fds_unchanged, object_ids, set_trigger, trigger  # noqa: F401

pytestmark = pytest.mark.kernel
_NEXT_ID = {"prog": syscall.prog_get_next_id, "map": syscall.map_get_next_id, "link": syscall.link_get_next_id,
            "btf": syscall.btf_get_next_id}


def listed(kind):
    out, i = set(), 0
    while True:
        i = _NEXT_ID[kind](i)
        if not i:
            return out
        out.add(i)


def assert_gone_unopened(ids, timeout=10.0):
    """assert_gone, but first wait by listing ids, never opening one: opening
    a program array by id (BPF_MAP_GET_FD_BY_ID) while the kernel's deferred
    clearing of it is pending leaks the array on 6.18 (its clear work takes a
    reference, queues work that is already queued, and never drops it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(ids[k] & listed(k) for k in ids):
        time.sleep(0.05)
    assert_gone(ids)


def test_map_in_map_slots_filled_and_used(test_objects, fds_unchanged):
    """outer_arr's slots 0 and 2 hold inner_a and inner_b (the kernel reads
    back their ids), slot 1 is empty; the program reaches both inner maps
    through it and tail-calls bump_b through jumps[1]: exact counts."""
    n = 5
    with BpfObject.open(test_objects("map_in_map")) as obj:
        set_trigger(obj)
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        inner = {name: obj.maps[name].info()["id"] for name in ("inner_a", "inner_b")}
        outer = obj.maps["outer_arr"]
        slot = lambda i: syscall.map_lookup(outer.fd, i.to_bytes(4, "little"), 4)  # noqa: E731
        assert (slot(0), slot(2)) == (inner["inner_a"].to_bytes(4, "little"), inner["inner_b"].to_bytes(4, "little"))
        assert slot(1) is None
        jumps = obj.maps["jumps"]
        prog_id = syscall.map_lookup(jumps.fd, (1).to_bytes(4, "little"), 4)
        assert prog_id == obj.programs["bump_b"].info()["id"].to_bytes(4, "little")
        trigger(n)
        assert obj.maps["inner_a"][0] == n and obj.maps["inner_b"][0] == 10 * n
        assert obj.bss["tail_calls"] == n
        # the inner definition is the template: a map like it goes into the hash of maps
        syscall.map_update(obj.maps["outer_hash"].fd, (7).to_bytes(4, "little"),
                           obj.maps["inner_b"].fd.to_bytes(4, "little"))
    assert_gone_unopened(ids)


def test_map_in_map_dry_run_shows_template_and_slots(test_objects):
    doc = json.loads(run_load(test_objects("map_in_map"), "--dry-run", "--json").stdout)
    maps = {m["name"]: m for m in doc["maps"]}
    assert maps["outer_arr"]["inner"] == {"type": "array", "key_size": 4, "value_size": 8, "max_entries": 1,
                                          "flags": 0}
    assert maps["outer_arr"]["slots"] == [{"index": 0, "target": "inner_a"}, {"index": 2, "target": "inner_b"}]
    assert maps["jumps"]["slots"] == [{"index": 1, "target": "bump_b"}]
    assert maps["outer_arr"]["value_size"] == 4 and maps["outer_arr"]["btf_value_type_id"] == 0
    text = run_load(test_objects("map_in_map"), "--dry-run").stdout
    assert "slot 2 = inner_b" in text and "inner maps: array" in text


def congestion_controls():
    with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
        return set(f.read().split())


def test_struct_ops_registered_both_ways_and_gone_after_close(test_objects, fds_unchanged):
    """tcp_congestion_ops from BPF: the plain map registers by its update,
    the .link one through a link; both are offered by the kernel while
    attached, neither after close. The unused program is not loaded."""
    with BpfObject.open(test_objects("struct_ops_cc")) as obj:
        obj.load()
        assert not obj.programs["unused_op"].loaded
        prog = obj.programs["spec_ssthresh"].prepared
        assert prog.attach_target == "tcp_congestion_ops" and prog.expected_attach_type == 0  # member 0: ssthresh
        assert obj.programs["spec_cong_avoid"].prepared.expected_attach_type == 1
        assert not {"spec_cc", "spec_cc_link"} & congestion_controls()
        obj.attach()
        ids = object_ids(obj)
        assert {"spec_cc", "spec_cc_link"} <= congestion_controls()
        assert obj.programs["spec_cong_avoid"].attached
        link = obj.struct_ops_links["spec_cc_link"]
        assert link.info()["type_name"] == "struct_ops"
    assert not {"spec_cc", "spec_cc_link"} & congestion_controls()
    assert_gone(ids)


def test_struct_ops_in_load_json(test_objects):
    r = run_load(test_objects("struct_ops_cc"), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {m["name"]: m["registered"] for m in doc["maps"]} == {"spec_cc": True, "spec_cc_link": True}
    assert {p["name"]: p["attach"] for p in doc["programs"]}["spec_ssthresh"] == "struct_ops spec_cc, spec_cc_link"
    assert "unused_op" not in {p["name"] for p in doc["programs"]}
    assert not {"spec_cc", "spec_cc_link"} & congestion_controls()
