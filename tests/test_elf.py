"""ElfObject on compiled fixtures, checked against llvm-readelf, and on bad input."""

import re
import shutil
import subprocess

import pytest

from ebpf_energy.loader.elf import ElfObject
from ebpf_energy.loader.errors import ElfError, LoaderError


@pytest.fixture(scope="module")
def maps_obj(test_objects):
    return ElfObject.from_path(test_objects("core_maps"))


def _readelf_sections(path):
    out = subprocess.run(["llvm-readelf", "-S", "-W", str(path)], check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*(\d+)\]\s+(\S*)\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if m and m.group(1) != "0":
            rows[m.group(2)] = (int(m.group(1)), int(m.group(6), 16))
    return rows


@pytest.mark.skipif(shutil.which("llvm-readelf") is None, reason="llvm-readelf missing (apt install llvm)")
def test_sections_match_readelf(test_objects, maps_obj):
    expected = _readelf_sections(test_objects("core_maps"))
    got = {s.name: (s.index, s.size) for s in maps_obj.sections if s.index}
    assert got == expected
    for s in maps_obj.sections:
        if s.type != "SHT_NOBITS":
            assert len(s.data) == s.size


def test_programs_functions_and_data(maps_obj):
    progs = {s.name: s for s in maps_obj.program_sections()}
    assert set(progs) == {".text", "tp/sched/sched_switch", "raw_tp/sched_process_exit"}
    sw = progs["tp/sched/sched_switch"]
    funcs = maps_obj.functions(sw.index)
    assert [f.name for f in funcs] == ["on_switch_a", "on_switch_b"]
    assert funcs[0].value == 0 and 0 < funcs[1].value < sw.size and funcs[1].value % 8 == 0
    assert funcs[0].size + funcs[1].size == sw.size
    text = {f.name: f for f in maps_obj.functions(progs[".text"].index)}
    assert set(text) == {"helper_static", "helper_global"}
    assert text["helper_static"].bind == "LOCAL" and text["helper_global"].bind == "GLOBAL"
    assert {s.name for s in maps_obj.data_sections()} == {".rodata", ".data", ".bss", ".data.custom",
                                                          ".rodata.str1.1"}
    bss = maps_obj.section(".bss")
    assert bss.type == "SHT_NOBITS" and bss.data == b"\0" * bss.size and bss.size > 0
    assert b"literal\0" in maps_obj.section(".rodata.str1.1").data
    assert maps_obj.section(".data.custom").data == (7).to_bytes(4, "little")
    assert maps_obj.license == "Dual BSD/GPL"
    assert maps_obj.kern_version == 0x060C00
    assert maps_obj.btf[:2] == b"\x9f\xeb" and maps_obj.btf_ext[:2] == b"\x9f\xeb"


def test_relocations(maps_obj):
    sw = maps_obj.section("tp/sched/sched_switch")
    relocs = maps_obj.relocations[sw.index]
    offsets = [r.offset for r in relocs]
    assert offsets == sorted(offsets) and all(o % 8 == 0 and o < sw.size for o in offsets)
    names = {r.symbol.name for r in relocs}
    # maps by their symbol, globals by the section symbol or variable, and the call to helper_global
    assert {"counters", "pairs", "helper_global"} <= names
    assert names & {".rodata", "target_pid"} and names & {".rodata.str1.1"}
    for r in relocs:
        assert r.type in (1, 10)  # R_BPF_64_64 (ld_imm64), R_BPF_64_32 (call)
    # .rel.BTF etc. are kept too, keyed by the section they patch
    assert maps_obj.section(".BTF").index in maps_obj.relocations


def test_not_elf_and_wrong_machine(maps_obj, test_objects, tmp_path):
    with pytest.raises(ElfError, match="not an ELF"):
        ElfObject.from_bytes(b"hello world, definitely not ELF")
    with pytest.raises(ElfError):
        ElfObject.from_bytes(b"")
    data = bytearray(test_objects("core_maps").read_bytes())
    data[18:20] = (62).to_bytes(2, "little")  # EM_X86_64
    with pytest.raises(ElfError, match="247"):
        ElfObject.from_bytes(bytes(data))
    with pytest.raises(ElfError, match="cannot read"):
        ElfObject.from_path(tmp_path / "missing.o")


def test_truncated(test_objects):
    data = test_objects("core_maps").read_bytes()
    for cut in (4, 16, 63, 64, 200, len(data) // 2, len(data) - 1):
        with pytest.raises(LoaderError):
            ElfObject.from_bytes(data[:cut])
