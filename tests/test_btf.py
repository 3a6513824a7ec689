"""Btf parsing (every kind), validation, DATASEC fixup, serialisation and codecs."""

import struct

import pytest

from ebpf_energy.loader import btf as B
from ebpf_energy.loader.btf import Btf
from ebpf_energy.loader.elf import ElfObject
from ebpf_energy.loader.errors import BtfError


@pytest.fixture(scope="module")
def target(test_objects):
    elf = ElfObject.from_path(test_objects("core_target"))
    return elf, Btf.parse(elf.btf)


@pytest.fixture(scope="module")
def maps(test_objects):
    elf = ElfObject.from_path(test_objects("core_maps"))
    return elf, Btf.parse(elf.btf)


def test_every_kind_clang_emits(target):
    _, btf = target
    kinds = {t.kind for t in btf.types[1:]}
    assert kinds == set(range(1, 19))  # all but ENUM64 (clang 14 has none): see test_enum64
    s = btf.type(btf.find("sample", B.KIND_STRUCT)[0])
    assert s.size == 112 and s.kind_flag == 1
    by = {m.name: m for m in s.members}
    assert by["pid"].bit_offset == 24 * 8 and by["bf_b"].bit_offset == 515 and by["bf_b"].bitfield_size == 7
    assert btf.size_of(by["comm"].type) == 16 and btf.size_of(by["arr"].type) == 32
    assert btf.name_of(btf.skip_modifiers(by["flags"].type)) == "unsigned long long"
    e = btf.type(btf.find("sample_state")[0])
    assert e.values == [("ST_IDLE", 10), ("ST_RUNNING", 20), ("ST_DEAD", 40)]
    kinds_t = btf.type(btf.find("kinds", B.KIND_STRUCT)[0])
    km = {m.name: btf.type(m.type) for m in kinds_t.members}
    assert km["cv"].kind == B.KIND_CONST and btf.type(km["cv"].type).kind == B.KIND_VOLATILE
    assert km["rp"].kind == B.KIND_RESTRICT and km["f"].kind == B.KIND_FLOAT and km["f"].size == 4
    assert btf.type(km["fp"].type).kind == B.KIND_FWD
    fn = btf.type(km["fn"].type)
    assert fn.kind == B.KIND_FUNC_PROTO and len(fn.params) == 2
    tags = [t for t in btf.types if t.kind == B.KIND_DECL_TAG]
    assert {(t.name, t.component_idx) for t in tags} >= {("func_tag", -1), ("arg_tag", 0), ("member_tag", 0)}
    func = btf.type(btf.find("target_func", B.KIND_FUNC)[0])
    assert func.linkage == 1 and btf.type(func.type).params == [("arg", 1)]


def test_roundtrip_is_byte_identical(target, maps):
    for elf, btf in (target, maps):
        assert btf.to_bytes() == elf.btf
        again = Btf.parse(btf.to_bytes())
        assert again.types == btf.types


def _blob(types_words, strings, endian="<"):
    tdata = struct.pack(f"{endian}{len(types_words)}I", *types_words)
    hdr = struct.pack(endian + "HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(tdata), len(tdata), len(strings))
    return hdr + tdata + strings


def _info(kind, vlen=0, kflag=0):
    return (kflag << 31) | (kind << 24) | vlen


STRS = b"\0int\0big\0A\0B\0bits\0x\0y\0"
S = {n: STRS.index(n.encode() + b"\0") for n in ("int", "big", "A", "B", "bits", "x", "y")}


def test_enum64_and_kind_flag_bitfields():
    words = [
        S["int"], _info(B.KIND_INT), 4, (1 << 24) | 32,                      # [1] int
        S["big"], _info(B.KIND_ENUM64, 2, kflag=1), 8,                       # [2] signed enum64
        S["A"], 0xFFFFFFFF, 0xFFFFFFFF,                                       #     A = -1
        S["B"], 0, 1,                                                         #     B = 1 << 32
        S["bits"], _info(B.KIND_STRUCT, 2, kflag=1), 4,                      # [3] struct bits
        S["x"], 1, (3 << 24) | 0,                                             #     int x:3
        S["y"], 1, (5 << 24) | 3,                                             #     int y:5
    ]
    for endian in "<>":
        data = _blob(words, STRS, endian)
        btf = Btf.parse(data)
        assert btf.type(2).values == [("A", -1), ("B", 1 << 32)] and btf.type(2).signed
        assert [(m.name, m.bit_offset, m.bitfield_size) for m in btf.type(3).members] == [("x", 0, 3), ("y", 3, 5)]
        assert btf.to_bytes() == data
        codec = btf.codec(3)
        if endian == "<":
            assert codec.decode(bytes([0b11110_101, 0, 0, 0])) == {"x": -3, "y": -2}
            assert codec.encode({"x": -3, "y": -2}) == bytes([0b11110_101, 0, 0, 0])
        assert btf.codec(2).decode(btf.codec(2).encode(-1)) == -1


@pytest.mark.parametrize("mutate, message", [
    (lambda w: w.__setitem__(2, 99), "only"),                          # int size 99
    (lambda w: w.__setitem__(0, 999), "string offset"),                 # name out of range
    (lambda w: w.__setitem__(1, _info(25)), "unknown kind"),
    (lambda w: w.__setitem__(17, 77), "refers to type 77"),           # member type out of range
    (lambda w: w.__setitem__(21, (5 << 24) | 40), "outside"),         # member past struct end
])
def test_validation_errors(mutate, message):
    words = [
        S["int"], _info(B.KIND_INT), 4, (1 << 24) | 32,
        S["big"], _info(B.KIND_ENUM64, 2, kflag=1), 8, S["A"], 1, 0, S["B"], 2, 0,
        S["bits"], _info(B.KIND_STRUCT, 2, kflag=1), 4, S["x"], 1, 3 << 24, S["y"], 1, (5 << 24) | 3,
    ]
    Btf.parse(_blob(words, STRS))
    mutate(words)
    with pytest.raises(BtfError) as e:
        Btf.parse(_blob(words, STRS))
    if message != "only":
        assert message in str(e.value)


def test_header_errors_and_loops():
    good = _blob([S["int"], _info(B.KIND_INT), 4, 32], STRS)
    Btf.parse(good)
    for bad in (b"", good[:10], b"\x00\x00" + good[2:], good[:2] + b"\x02" + good[3:], good[:-3]):
        with pytest.raises(BtfError):
            Btf.parse(bad)
    loop = _blob([S["x"], _info(B.KIND_TYPEDEF), 2, S["y"], _info(B.KIND_TYPEDEF), 1], STRS)
    with pytest.raises(BtfError, match="loop"):
        Btf.parse(loop)
    with pytest.raises(BtfError, match="out of range"):
        Btf.parse(good).type(5)


def test_datasec_fixup(target):
    elf, _ = target
    btf = Btf.parse(elf.btf)  # private copy: fixup mutates
    bss = btf.type(btf.find(".bss", B.KIND_DATASEC)[0])
    assert bss.size == 0 and all(v.offset == 0 for v in bss.vars)  # what clang leaves
    sec = elf.section(".bss")
    syms = {(".bss", s.name): s.value for s in elf.symbols if s.shndx == sec.index and s.type == "OBJECT"}
    sizes = {s.name: s.size for s in elf.symbols if s.shndx == sec.index and s.type == "OBJECT"}
    btf.fixup_datasecs({".bss": sec.size, "license": elf.section("license").size},
                       {**syms, ("license", "LICENSE"): 0})
    assert bss.size == sec.size
    got = [(btf.type(v.type).name, v.offset, v.size) for v in bss.vars]
    assert got == sorted(((n, o, sizes[n]) for (_, n), o in syms.items()), key=lambda x: x[1])
    again = Btf.parse(btf.to_bytes())
    assert again.type(bss.id).vars == bss.vars and again.type(bss.id).size == sec.size
    codec = btf.codec(bss.id)
    raw = bytearray(sec.size)
    inst = dict((n, o) for n, o, _ in got)
    struct.pack_into("<i", raw, inst["state_instance"], 20)
    assert codec.decode(bytes(raw))["state_instance"] == 20
    with pytest.raises(BtfError, match="no ELF symbol"):
        Btf.parse(elf.btf).fixup_datasecs({".bss": sec.size}, {})


def test_codecs(maps):
    _, btf = maps
    pair = btf.codec(btf.find("pair", B.KIND_STRUCT)[0])
    assert pair.size == 48
    value = {"pid": 42, "tgid": 7, "runtime_ns": 1 << 40, "comm": "bash", "flag_a": 1, "level": 9,
             "delta": -5, "seen": True, "mode": 7, "temps": [-1, 2, 300]}
    raw = pair.encode(value)
    # expected bytes computed from the C layout (see bpftool btf dump): independent of the codec
    bits = 1 | (9 << 1) | ((-5 & 0x3F) << 5)
    expected = struct.pack("<IIQ16sH?xi3hxx", 42, 7, 1 << 40, b"bash", bits, True, 7, -1, 2, 300)
    assert raw == expected
    assert pair.decode(raw) == value
    assert pair.decode(pair.encode({"pid": 1})) == {**dict.fromkeys(value, 0), "pid": 1, "comm": "",
                                                    "seen": False, "temps": [0, 0, 0]}
    for bad in ({"nope": 1}, {"pid": -1}, {"level": 16}, {"comm": "x" * 17}, {"temps": [1, 2, 3, 4]}):
        with pytest.raises(BtfError):
            pair.encode(bad)
    u32 = btf.codec(btf.find("__u32")[0])
    assert u32.size == 4 and u32.decode(b"\xff\xff\xff\xff") == 0xFFFFFFFF
    s16 = btf.codec(btf.find("__s16")[0])
    assert s16.decode(s16.encode(-2)) == -2 and s16.encode(b"\x01\x00") == b"\x01\x00"
    boolc = btf.codec(btf.find("bool")[0])
    assert boolc.decode(b"\x01") is True
    with pytest.raises(BtfError):
        btf.codec(btf.find("on_switch_a", B.KIND_FUNC)[0])


def test_btf_defined_maps(maps):
    from ebpf_energy.loader.mapdefs import parse_btf_maps
    elf, btf = maps
    defs = {m.name: m for m in parse_btf_maps(elf, btf)}
    assert set(defs) == {"pairs", "counters", "events", "pinned_arr"}
    p = defs["pairs"]
    # BPF_MAP_TYPE_HASH=1, BPF_F_NO_PREALLOC=1; key __u32, value struct pair (48 bytes)
    assert (p.type, p.max_entries, p.map_flags, p.key_size, p.value_size) == (1, 1024, 1, 4, 48)
    assert btf.name_of(p.key_type_id) == "__u32" and btf.name_of(p.value_type_id) == "pair"
    c = defs["counters"]  # PERCPU_ARRAY=6 with explicit sizes and no BTF types
    assert (c.type, c.key_size, c.value_size, c.max_entries, c.key_type_id, c.value_type_id) == (6, 4, 8, 4, 0, 0)
    e = defs["events"]  # RINGBUF=27
    assert (e.type, e.max_entries, e.key_size, e.value_size) == (27, 1 << 16, 0, 0)
    a = defs["pinned_arr"]  # ARRAY=2, LIBBPF_PIN_BY_NAME=1
    assert (a.type, a.pinning, a.numa_node, a.value_size) == (2, 1, 0, 8)
    assert p.numa_node is None and p.pinning == 0
    syms = {s.name: s.value for s in elf.symbols if s.shndx == elf.section(".maps").index}
    assert all(m.offset == syms[m.name] for m in defs.values())


def test_btf_defined_map_errors(maps):
    from ebpf_energy.loader.mapdefs import parse_btf_maps
    elf, btf = maps
    renamed = Btf.parse(btf.to_bytes().replace(b"\0max_entries\0", b"\0max_entriez\0"))
    with pytest.raises(BtfError, match="unknown map attribute 'max_entriez'"):
        parse_btf_maps(elf, renamed)
    broken = Btf.parse(btf.to_bytes())
    ds = broken.type(broken.find(".maps", B.KIND_DATASEC)[0])
    st = broken.type(broken.skip_modifiers(broken.type(ds.vars[0].type).type))
    int_id = broken.find("int", B.KIND_INT)[0]
    st.members[0] = st.members[0]._replace(type=int_id)
    with pytest.raises(BtfError, match="must be __uint"):
        parse_btf_maps(elf, broken)
    nodatasec = Btf.parse(btf.to_bytes().replace(b"\0.maps\0", b"\0.mapz\0"))
    with pytest.raises(BtfError, match="no BTF DATASEC"):
        parse_btf_maps(elf, nodatasec)
