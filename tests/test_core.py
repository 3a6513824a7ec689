"""CO-RE: every record of core_local.bpf.o relocated against core_target.bpf.o, whose
layout is spelled out in tests/bpf/core_target.bpf.c; kernel records against
/sys/kernel/btf/vmlinux, checked with bpftool."""

import re
import struct
import subprocess

import pytest

from ebpf_energy.loader import core
from ebpf_energy.loader.btf import Btf, KIND_STRUCT
from ebpf_energy.loader.btf_ext import BtfExt, CoreRelo
from ebpf_energy.loader.elf import ElfObject
from ebpf_energy.loader.errors import CoreError
from ebpf_energy.loader.kernel_btf import KernelBtf

POISON = "poison"
AMBIGUOUS = "ambiguous"

# target layout (core_target.bpf.c): byte offsets and sizes
T = dict(flags=0, comm=8, pid=24, tgid=32, inner=40, inner_b=12, uval=56, bf_bits=512, state=68, arr=72,
         small=104, size=112)
# bitfields in the target: (first bit, width); all live in the u32 at byte 64
BF = {"bf_a": (512, 3), "bf_b": (515, 7), "bf_s": (522, 5)}


def _bitfield(name, kind):
    bit, width = BF[name]
    byte_off = bit // 8 // 4 * 4  # a u32 container
    return {0: byte_off, 1: 4, 3: int(name == "bf_s"), 4: 64 - (bit + width - byte_off * 8), 5: 64 - width}[kind]


# (program, access string, kind) -> expected new value
EXPECTED = {
    ("core_fields", "0:0", 0): T["pid"],
    ("core_fields", "0:3:1", 0): T["inner"] + T["inner_b"],
    ("core_fields", "0:9:2", 0): T["arr"] + 2 * 8,
    ("core_fields", "0:4:0", 0): T["uval"],
    ("core_fields", "0:12", 2): 0,
    ("core_fields", "0:1", 2): 1,
    ("core_fields", "0:1", 1): 8,
    ("core_fields", "0:2", 1): 16,
    ("core_fields", "0:0", 3): 1,
    ("core_fields", "0:1", 3): 0,
    ("core_fields", "0:2", 0): T["comm"],
    ("core_direct", "0:1", 0): T["flags"],
    ("core_direct", "0:11", 0): T["small"],
    ("core_direct", "0:10", 0): T["tgid"],      # resolves, but the signed load cannot be resized
    ("core_direct", "0:12", 2): 0,
    ("core_direct", "0:12", 0): POISON,
    ("core_types", "0", 8): None,               # filled per type below
    ("core_enums", "1", 10): 1,
    ("core_enums", "2", 10): 0,
    ("core_enums", "1", 11): 20,
    ("core_enums", "0", 11): 10,
    ("core_enums", "2", 11): POISON,
    ("core_missing", "0:0", 2): 0,
    ("core_missing", "0:0", 0): None,           # per type: poison / ambiguous / 0
}
for f, idx in (("bf_a", 5), ("bf_b", 6), ("bf_s", 7)):
    for k in range(6):
        if k != 2:
            EXPECTED[("core_bitfields", f"0:{idx}", k)] = _bitfield(f, k)


@pytest.fixture(scope="module")
def objs(test_objects):
    elf = ElfObject.from_path(test_objects("core_local"))
    local = Btf.parse(elf.btf)
    ext = BtfExt.parse(elf.btf_ext, local)
    target = Btf.parse(ElfObject.from_path(test_objects("core_target")).btf)
    return elf, local, ext, target


def _records(ext, prog):
    return ext.core_relos[f"tp/test/{prog}"]


def _expected(local, target, prog, relo):
    name = local.name_of(relo.type_id)
    if prog == "core_types":
        tid = target.find("sample", KIND_STRUCT)[0]
        found = name == "sample___local"
        return {8: int(found), 9: T["size"] if found else 0, 6: relo.type_id, 7: tid if found else 0}[relo.kind]
    if prog == "core_missing" and relo.kind == 0:
        return {"nowhere___local": POISON, "dup___local": AMBIGUOUS, "agree___local": 0}[name]
    return EXPECTED[(prog, relo.access_str, relo.kind)]


def test_every_record_against_target(objs):
    elf, local, ext, target = objs
    seen_kinds = set()
    count = 0
    for sec, relos in ext.core_relos.items():
        prog = sec.split("/")[-1]
        if prog == "core_kernel":
            continue
        for relo in relos:
            want = _expected(local, target, prog, relo)
            seen_kinds.add(relo.kind)
            count += 1
            if want == AMBIGUOUS:
                with pytest.raises(CoreError, match=r"dup___local\.y"):
                    core.resolve(relo, local, target)
                continue
            res = core.resolve(relo, local, target)
            if want == POISON:
                assert res.poison, res
            else:
                assert not res.poison and res.new_val == want, (prog, relo, res)
    assert seen_kinds == set(range(12)) and count >= 50


def test_patch_instructions(objs):
    elf, local, ext, target = objs
    sec = elf.section("tp/test/core_direct")
    insns = bytearray(sec.data)
    by = {(r.access_str, r.kind): r for r in _records(ext, "core_direct")}

    def apply(key):
        r = by[key]
        res = core.resolve(r, local, target)
        core.patch(insns, r.insn_off_bytes // 8, res)
        return struct.unpack_from("<BBhi", insns, r.insn_off_bytes)

    code, _, off, _ = apply(("0:1", 0))          # u32 flags -> u64 at 0: LDX W becomes LDX DW
    assert (code, off) == (0x79, T["flags"])
    code, _, off, _ = apply(("0:11", 0))         # u32 small -> u16 at 104: LDX H
    assert (code, off) == (0x69, T["small"])
    assert apply(("0:10", 0))[::3] == (0x85, 0xBAD2310)   # signed size change: poisoned
    assert apply(("0:12", 0))[::3] == (0x85, 0xBAD2310)   # missing field: poisoned
    code, _, _, imm = apply(("0:12", 2))          # field_exists: ALU mov imm 1 -> 0
    assert code == 0xB7 and imm == 0

    enums = bytearray(elf.section("tp/test/core_enums").data)
    r = [x for x in _records(ext, "core_enums") if (x.access_str, x.kind) == ("1", 11)][0]
    before, after = core.patch(enums, r.insn_off_bytes // 8, core.resolve(r, local, target))
    lo = struct.unpack_from("<i", enums, r.insn_off_bytes + 4)[0]
    hi = struct.unpack_from("<i", enums, r.insn_off_bytes + 12)[0]
    assert (lo, hi) == (20, 0) and "0x1 ll" in before and "0x14 ll" in after
    r = [x for x in _records(ext, "core_enums") if (x.access_str, x.kind) == ("2", 11)][0]
    core.patch(enums, r.insn_off_bytes // 8, core.resolve(r, local, target))
    both = struct.unpack_from("<BBhiBBhi", enums, r.insn_off_bytes)
    assert (both[0], both[3], both[4], both[7]) == (0x85, 0xBAD2310, 0x85, 0xBAD2310)  # both halves poisoned


def test_patch_checks_original_value(objs):
    elf, local, ext, target = objs
    r = _records(ext, "core_fields")[1]          # inner.b: "r1 = 28"
    insns = bytearray(elf.section("tp/test/core_fields").data)
    res = core.resolve(r, local, target)
    struct.pack_into("<i", insns, r.insn_off_bytes + 4, 29)
    with pytest.raises(CoreError, match="holds 29"):
        core.patch(insns, r.insn_off_bytes // 8, res)
    with pytest.raises(CoreError, match="beyond"):
        core.patch(insns, len(insns) // 8, res)


def test_type_matches_and_compat(objs):
    _, local, _, target = objs
    relo = lambda name, kind: CoreRelo(0, local.find(name, KIND_STRUCT)[0], "0", kind)  # noqa: E731
    assert core.resolve(relo("agree___local", core.TYPE_MATCHES), local, target).new_val == 1
    # sample___local's flags is u32 where the target has u64: compatible but not matching
    assert core.resolve(relo("sample___local", core.TYPE_MATCHES), local, target).new_val == 0
    assert core.resolve(relo("sample___local", core.TYPE_EXISTS), local, target).new_val == 1
    assert core.resolve(relo("nowhere___local", core.TYPE_MATCHES), local, target).new_val == 0
    with pytest.raises(CoreError):
        core.resolve(CoreRelo(0, local.find("sample___local", KIND_STRUCT)[0], "0:99", 0), local, target)
    with pytest.raises(CoreError):
        core.resolve(CoreRelo(0, local.find("sample___local", KIND_STRUCT)[0], "x:y", 0), local, target)


def test_essential_name():
    from ebpf_energy.loader.btf import essential_name
    assert essential_name("task_struct___v1") == "task_struct"
    assert essential_name("a___b___c") == "a___b"
    assert essential_name("__u32") == "__u32" and essential_name("x____y") == "x____y"


def _bpftool_members(type_name):
    out = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"], check=True,
                         capture_output=True, text=True).stdout
    m = re.search(rf"^\[\d+\] STRUCT '{type_name}' size=\d+ vlen=\d+\n((?:\t.*\n)+)", out, re.M)
    members = {}
    for line in m.group(1).splitlines():
        mm = re.match(r"\t'(\w*)' type_id=\d+ bits_offset=(\d+)", line)
        if mm:
            members[mm.group(1)] = int(mm.group(2)) // 8
    return members


def test_against_running_kernel(objs, tmp_path):
    elf, local, ext, _ = objs
    kbtf = KernelBtf.load(cache_dir=str(tmp_path))
    want = _bpftool_members("task_struct")
    got = {}
    for r in _records(ext, "core_kernel"):
        res = core.resolve(r, local, kbtf)
        assert not res.poison
        got[(r.access_str, r.kind)] = res.new_val
    assert got[("0:0", 0)] == want["pid"]
    assert got[("0:1", 0)] == want["tgid"]
    assert got[("0:2", 0)] == want["comm"]
    assert got[("0:2", 1)] == 16
