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
from ebpf_energy.loader.errors import ElfError
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


def test_struct_ops_registered_and_gone_after_close(test_objects, fds_unchanged):
    """tcp_congestion_ops from BPF, from .struct_ops and .struct_ops.link:
    both registered through links (the maps are made with BPF_F_LINK, so
    nothing outlives the process), offered by the kernel while attached,
    neither after close. The unused program is not loaded."""
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
        for name in ("spec_cc", "spec_cc_link"):
            assert obj.struct_ops_links[name].info()["type_name"] == "struct_ops"
            assert obj.maps[name].info()["map_flags"] & (1 << 13)  # BPF_F_LINK
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


# --------------------------------------------------------------------------- map attributes
NO_BTF = ("socks", "sock_hash", "devs", "cpus", "xsks", "fifo", "lifo")


def test_kernel_maps_created_without_btf_ids_and_with_map_extra(test_objects, fds_unchanged):
    """The fd/socket/queue maps are created with no BTF key/value ids (the
    kernel reads them back as 0), the bloom filter with map_extra 3 and its
    value type; the program using the queue loads."""
    with BpfObject.open(test_objects("kernel_maps")) as obj:
        obj.load()
        ids = object_ids(obj)
        for name in NO_BTF:
            info = obj.maps[name].info()
            assert (info["btf_key_type_id"], info["btf_value_type_id"]) == (0, 0), name
        bloom = obj.maps["bloom"].info()
        assert bloom["map_extra"] == 3 and bloom["btf_value_type_id"] != 0
        assert obj.programs["peek"].loaded
    assert_gone(ids)


def test_a_map_whose_btf_the_kernel_refuses_is_made_again_without(test_objects, fds_unchanged):
    """Forced BTF ids on a sockmap (a type that takes none): the create is
    refused with them, retried without, and the load goes on."""
    from ebpf_energy.loader import record

    from ebpf_energy.loader import explain
    from ebpf_energy.loader.collection import Collection

    spec = ObjectSpec.parse(str(test_objects("kernel_maps")))
    prepared = prepare(spec, Target.running())
    m = prepared.maps["socks"]
    prepared.maps["socks"] = record.replace(m, btf_key_type_id=spec.maps["socks"].key_type_id,
                                                 btf_value_type_id=spec.maps["socks"].value_type_id)
    lines = []
    explain.enable(type("W", (), {"write": lambda self, s: lines.append(s), "flush": lambda self: None})())
    try:
        with Collection.load(prepared) as c:
            assert c.maps["socks"].info()["btf_value_type_id"] == 0
    finally:
        explain.disable()
    assert any("refused its BTF key/value ids" in l for l in lines)


def test_map_extra_enum64_is_read_whole():
    """``__ulong(map_extra, 1 << 44)`` is an ENUM64 in BTF (clang 15+; clang 14
    here emits none): the 64-bit value comes out whole."""
    from ebpf_energy.loader.btf import KIND_ENUM64, BtfType
    from ebpf_energy.loader.mapdefs import _uint_value

    t = BtfType(1, KIND_ENUM64, "")
    t.values = [("__unique_value0", 1 << 44)]

    class OneType:
        def type(self, i):
            return t

    member = type("M", (), {"type": 1, "name": "map_extra"})()
    assert _uint_value(OneType(), "arena", member) == 1 << 44


# --------------------------------------------------------------------------- sections
def test_every_section_loads_with_its_attach_type_and_flags(test_objects, fds_unchanged):
    """Each program of spec_kinds loads (the kernel checks their expected
    attach types and flags); `?` programs are not loaded by default."""
    with BpfObject.open(test_objects("spec_kinds")) as obj:
        obj.load()
        ids = object_ids(obj)
        loaded = {n for n, p in obj.programs.items() if p.loaded}
        assert loaded == set(obj.programs) - {"optional_tp"}
        assert obj.prepared.programs["on_xdp_frags"].prog_flags == 1 << 5
        assert obj.prepared.programs["sleepy_iter"].prog_flags == 1 << 4
    assert_gone(ids)


@pytest.mark.parametrize("name, change", [
    ("on_connect4", {"expected_attach_type": 0}),
    ("on_lookup", {"expected_attach_type": 0}),
    ("on_netfilter", {"expected_attach_type": 0}),
])
def test_without_its_attach_type_the_kernel_refuses_and_it_is_not_called_a_verifier_error(
        test_objects, fds_unchanged, name, change):
    """The table matters: with the expected attach type taken away the kernel
    says EINVAL before verifying, and the error says so (not "verifier")."""
    from ebpf_energy.loader import record

    from ebpf_energy.loader.collection import Collection
    from ebpf_energy.loader.errors import NotSupported

    prepared = prepare(ObjectSpec.parse(str(test_objects("spec_kinds"))), Target.running(), only=[name])
    prepared.programs[name] = record.replace(prepared.programs[name], **change)
    with pytest.raises(NotSupported) as e:
        Collection.load(prepared)
    assert "before verifying any instruction" in str(e.value) and "verifier rejected" not in str(e.value)
    assert "no expected attach type" in str(e.value)


def test_sleepable_flag_is_what_lets_a_sleeping_helper_load(test_objects, fds_unchanged):
    from ebpf_energy.loader import record

    from ebpf_energy.loader.collection import Collection
    from ebpf_energy.loader.errors import VerifierError

    prepared = prepare(ObjectSpec.parse(str(test_objects("spec_kinds"))), Target.running(), only=["sleepy_iter"])
    prepared.programs["sleepy_iter"] = record.replace(prepared.programs["sleepy_iter"], prog_flags=0)
    with pytest.raises(VerifierError, match="sleep"):
        Collection.load(prepared)


def test_optional_program_loads_with_program_option(test_objects):
    r = run_load(test_objects("spec_kinds"), "--program", "optional_tp", "--json")
    assert r.returncode == 0, r.stderr
    assert [p["name"] for p in json.loads(r.stdout)["programs"]] == ["optional_tp"]
    dry = json.loads(run_load(test_objects("spec_kinds"), "--dry-run", "--json").stdout)
    progs = {p["name"]: p for p in dry["programs"]}
    assert "optional_tp" not in progs
    assert progs["on_connect4"]["expected_attach_type_name"] == "cgroup_inet4_connect"
    assert progs["on_xdp_frags"]["prog_flags"] == ["xdp_has_frags"]


def test_lsm_eperm_as_root_does_not_say_needs_root(test_objects, tmp_path):
    src = tmp_path / "lsm.bpf.c"
    src.write_text('#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n#include <bpf/bpf_tracing.h>\n'
                   'SEC("lsm/file_open") int BPF_PROG(on_open, struct file *f) { return 0; }\n'
                   'char LICENSE[] SEC("license") = "GPL";\n')
    obj = tmp_path / "lsm.bpf.o"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", f"-I{root}", "-c", str(src),
                    "-o", str(obj)], check=True)
    r = run_load(obj, "--no-attach")
    if r.returncode == 0:
        pytest.fail("this kernel loads lsm/ programs: the EPERM path cannot be checked here")
    assert "not a missing privilege" in r.stderr and "needs root" not in r.stderr


# --------------------------------------------------------------------------- externs and callbacks
def test_virtual_externs_and_weak_kfuncs(test_objects, fds_unchanged):
    with BpfObject.open(test_objects("spec_externs")) as obj:
        set_trigger(obj)
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        trigger(2)
        b = {n: obj.find_global(n)[n] for n in ("has_cookie", "has_wrapper", "no_such_thing", "has_task_from_pid",
                                                "has_missing", "missing_ret", "leader_pid", "hits", "stext")}
        assert (b["has_cookie"], b["has_wrapper"], b["no_such_thing"]) == (1, 1, 0)
        assert (b["has_task_from_pid"], b["has_missing"], b["missing_ret"]) == (1, 0, 0)
        assert b["leader_pid"] == os.getpid() and b["hits"] == 2
        with open("/proc/kallsyms") as f:
            stext = next(int(l.split()[0], 16) for l in f if l.split()[2] == "_stext")
        assert b["stext"] == stext
    assert_gone(ids)


def test_callbacks_run(test_objects, fds_unchanged):
    with BpfObject.open(test_objects("callbacks")) as obj:
        set_trigger(obj)
        obj.load()
        for k, v in enumerate((1, 2, 3, 4)):
            obj.maps["vals"][k] = v
        obj.attach()
        ids = object_ids(obj)
        trigger(3)
        b = obj.bss
        assert (b["loop_sum"], b["each_sum"], b["drained"], b["drain_calls"]) == (30, 30, 0, 3)
    assert_gone(ids)


def test_callbacks_in_dry_run(test_objects):
    text = run_load(test_objects("callbacks"), "--dry-run").stdout
    for cb in ("sum_index", "add_val", "count_record"):
        assert f"callback {cb} -> pc+" in text  # the relocation
        assert f"= callback {cb} (pc+" in text  # the disassembly
    doc = json.loads(run_load(test_objects("callbacks"), "--dry-run", "--json").stdout)
    (prog,) = doc["programs"]
    assert any("callback add_val" in line for line in prog["instructions"])


# --------------------------------------------------------------------------- objects
def test_big_endian_object_is_refused(test_objects, tmp_path):
    obj = tmp_path / "be.bpf.o"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(["clang", "-g", "-O2", "-target", "bpfeb", f"-I{root}", "-c",
                    os.path.join(root, "tests", "bpf", "spec_kinds.bpf.c"), "-o", str(obj)], check=True)
    with pytest.raises(ElfError, match="big-endian BPF object .*rebuild it with -target bpf"):
        ObjectSpec.parse(str(obj))
    r = run_load(obj, "--dry-run")
    assert r.returncode == 1 and "big-endian" in r.stderr and "Traceback" not in r.stderr


def test_statically_linked_object_keeps_each_units_statics(test_objects, tmp_path, fds_unchanged):
    """`bpftool gen object` of two units that each have `static count` and
    `static step()`: each program uses its own (a counts by 1, b by 100)."""
    linked = tmp_path / "linked.bpf.o"
    subprocess.run(["bpftool", "gen", "object", str(linked), str(test_objects("linked_a")),
                    str(test_objects("linked_b"))], check=True)
    n = 3
    with BpfObject.open(linked) as obj:
        obj.rodata["target_tgid"] = os.getpid()
        obj.load()
        obj.attach()
        ids = object_ids(obj)
        trigger(n)
        assert (obj.bss["a_count"], obj.bss["b_count"]) == (n, 100 * n)
        assert (obj.bss["count"], obj.bss["count.2"]) == (n, 100 * n)  # a's static, then b's
        assert obj.btf_fd  # the kernel took the linked BTF
    assert_gone(ids)


def test_a_refused_btf_is_a_warning_or_an_error_never_silent(test_objects, fds_unchanged):
    """The kernel refuses the object's BTF: an object that can do without it
    loads with a warning saying what is lost; one whose maps need it
    (struct_ops) fails."""
    from ebpf_energy.loader import record

    from ebpf_energy.loader.collection import Collection
    from ebpf_energy.loader.errors import BtfError

    bad = b"\x9f\xeb\x01\x00\x18\x00\x00\x00" + bytes(16)  # a BTF header whose sections do not add up
    ok = prepare(ObjectSpec.parse(str(test_objects("kernel_maps"))), Target.running())
    with Collection.load(record.replace(ok, btf=bad)) as c:
        assert c.btf_fd == 0 and len(c.warnings) == 1 and "refused the object's BTF" in c.warnings[0]
    needs = prepare(ObjectSpec.parse(str(test_objects("struct_ops_cc"))), Target.running())
    with pytest.raises(BtfError):
        Collection.load(record.replace(needs, btf=bad))


@pytest.mark.parametrize("obj, args, said", [
    ("map_in_map", ["-d", "0"], ["outer_arr[2] = map inner_b", "jumps[1] = program bump_b",
                                 "inner map outer_arr.inner"]),
    ("struct_ops_cc", ["-d", "0"], ["spec_undo_cwnd -> member undo_cwnd (index 8)",
                                    "struct_ops spec_cc: registered through link",
                                    "struct_ops spec_cc_link: registered through link"]),
    ("spec_kinds", ["--no-attach"], ["expected attach type cgroup_inet4_connect", "flags xdp_has_frags",
                                     "optional_tp in SEC(\"?tp/syscalls/sys_enter_getppid\")"]),
    ("spec_externs", ["--no-attach"], ["LINUX_HAS_BPF_COOKIE = 01", "POISONED: weak kfunc bpf_spec_no_such_kfunc"]),
    ("callbacks", ["--no-attach"], ["callback count_record -> pc+"]),
    ("kernel_maps", ["--no-attach"], ["no BTF key/value ids: the kernel takes none for sockmap maps"]),
])
def test_explain_tells_each_feature(test_objects, obj, args, said):
    r = run_load(test_objects(obj), "--explain", *args)
    assert r.returncode == 0, r.stderr
    for text in said:
        assert text in r.stderr, text


def test_unreadable_map_types_are_reported_with_their_reason(test_objects):
    """Item 1: every map user space cannot list is `entries: null` with the
    reason from the one table (map_types.UNREADABLE); the load succeeds."""
    from ebpf_energy.loader.map_types import UNREADABLE

    r = run_load(test_objects("kernel_maps"), "--json")
    assert r.returncode == 0, r.stderr
    maps = {m["name"]: m for m in json.loads(r.stdout)["maps"]}
    for name in ("socks", "sock_hash", "xsks", "fifo", "lifo", "bloom"):
        m = maps[name]
        assert m["entries"] is None and m["entries_error"].endswith(UNREADABLE[m["type"]]), name
    assert maps["devs"]["entries"] is not None and maps["cpus"]["entries"] is not None  # readable: ids


def test_virtual_externs_answer_for_the_target_kernel():
    """Read from the target's BTF: this kernel has both features; the made-up
    kernel of tests/testdata (no bpf_func_id, no syscall wrappers) has neither,
    so a dry run for it says 0."""
    from ebpf_energy.loader.externs import virtual_value

    root = os.path.dirname(os.path.abspath(__file__))
    fake = Target.from_btf_file(os.path.join(root, "testdata", "fake_kernel.bpf.o"))
    running = Target.running(addresses=False)
    for name in ("LINUX_HAS_BPF_COOKIE", "LINUX_HAS_SYSCALL_WRAPPER"):
        assert (virtual_value(name, running), virtual_value(name, fake)) == (1, 0)


def test_struct_ops_gone_when_load_is_killed(test_objects):
    """SIGKILL gives no chance to unregister: the links die with the process
    and take the registrations with them."""
    import signal

    from test_load_cli import CMD, ROOT

    assert not {"spec_cc", "spec_cc_link"} & congestion_controls()  # none left by an earlier test
    p = subprocess.Popen(CMD + [str(test_objects("struct_ops_cc")), "--duration", "60"], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not {"spec_cc", "spec_cc_link"} <= congestion_controls() and time.monotonic() < deadline \
                and p.poll() is None:
            time.sleep(0.05)
        assert p.poll() is None, p.stderr.read()
        assert {"spec_cc", "spec_cc_link"} <= congestion_controls()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    deadline = time.monotonic() + 10
    while {"spec_cc", "spec_cc_link"} & congestion_controls() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not {"spec_cc", "spec_cc_link"} & congestion_controls()
