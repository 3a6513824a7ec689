"""Seeded mutation fuzzing of the pure loader phase.

Corrupt objects must only ever raise LoaderError subclasses: no pyelftools or
struct traceback, no hang (each case runs under a timer), no leaked fds.
FUZZ_CASES raises the case count (``make fuzz``); FUZZ_SEED replays a run.
"""

import os
import random
import signal
import struct
import time

import pytest

from ebpf_energy.loader import core
from ebpf_energy.loader.btf import Btf
from ebpf_energy.loader.btf_ext import BtfExt
from ebpf_energy.loader.elf import ElfObject
from ebpf_energy.loader.errors import LoaderError
from ebpf_energy.loader.mapdefs import parse_btf_maps

CASES = int(os.environ.get("FUZZ_CASES", "3000"))
SEED = int(os.environ.get("FUZZ_SEED", "20240611"))
CASE_LIMIT_S = 5.0
FIXTURES = ("core_maps", "core_local", "core_target")


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def _mutate(rng, data, regions):
    """One random corruption: bit flips, truncation, random bytes, or a hit on BTF/.BTF.ext."""
    data = bytearray(data)
    op = rng.randrange(6)
    if op == 0:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif op == 1:
        data = data[:rng.randrange(len(data))]
    elif op == 2:
        i = rng.randrange(len(data))
        n = rng.randint(1, 64)
        data[i:i + n] = bytes(rng.randrange(256) for _ in range(n))
    elif op == 3:  # ELF header / section header table: the structural parts
        i = rng.choice([rng.randrange(64), len(data) - 1 - rng.randrange(min(len(data), 2048))])
        data[i] = rng.randrange(256)
    else:  # inside .BTF (op 4) or .BTF.ext (op 5): header words and type records
        start, size = regions[op - 4]
        for _ in range(rng.randint(1, 4)):
            i = start + (rng.randrange(min(size, 64)) if rng.random() < 0.4 else rng.randrange(size))
            if rng.random() < 0.5:
                data[i] ^= 1 << rng.randrange(8)
            else:
                data[i] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    return bytes(data)


def _pipeline(data, target):
    """Everything the pure phase does with an object, as the loader will."""
    elf = ElfObject.from_bytes(data)
    if elf.btf is None:
        return
    btf = Btf.parse(elf.btf)
    sizes = {s.name: s.size for s in elf.data_sections()}
    offsets = {(elf.section_by_index(s.shndx).name, s.name): s.value for s in elf.symbols
               if s.type == "OBJECT" and elf.section_by_index(s.shndx) is not None}
    for m in parse_btf_maps(elf, btf):
        for tid in (m.key_type_id, m.value_type_id):
            if tid:
                c = btf.codec(tid)
                if c.size <= 1 << 16:  # a mutated size may claim gigabytes; the kernel caps real ones
                    c.decode(c.encode(b"\0" * c.size))
    btf.fixup_datasecs(sizes, offsets)
    Btf.parse(btf.to_bytes())
    if elf.btf_ext is None:
        return
    ext = BtfExt.parse(elf.btf_ext, btf)
    for sec, relos in ext.core_relos.items():
        s = elf.section(sec)
        insns = bytearray(s.data if s is not None else b"")
        for r in relos:
            try:
                res = core.resolve(r, btf, target)
                core.patch(insns, r.insn_off_bytes // 8, res)
            except LoaderError:
                pass


def _fd_count():
    return len(os.listdir("/proc/self/fd"))


def test_fuzz_pure_phase(test_objects):
    seeds = []
    for name in FIXTURES:
        data = test_objects(name).read_bytes()
        elf = ElfObject.from_bytes(data)
        regions = []
        for sname in (".BTF", ".BTF.ext"):
            sec = elf.section(sname)
            from elftools.elf.elffile import ELFFile  # section file offsets, for targeted hits
            import io
            off = ELFFile(io.BytesIO(data)).get_section_by_name(sname).header["sh_offset"]
            regions.append((off, sec.size))
        seeds.append((data, regions))
    target = Btf.parse(ElfObject.from_path(test_objects("core_target")).btf)
    _pipeline(seeds[1][0], target)  # the unmutated objects go through cleanly

    rng = random.Random(SEED)
    old = signal.signal(signal.SIGALRM, _alarm)
    fds_before = _fd_count()
    outcomes = {"ok": 0, "error": 0}
    slowest = 0.0
    try:
        for case in range(CASES):
            data, regions = seeds[case % len(seeds)]
            mutated = _mutate(rng, data, regions)
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT_S)
            try:
                _pipeline(mutated, target)
                outcomes["ok"] += 1
            except LoaderError as exc:
                assert str(exc), "a LoaderError must say what is wrong"
                outcomes["error"] += 1
            except CaseTimeout:
                pytest.fail(f"case {case} (seed {SEED}) ran longer than {CASE_LIMIT_S}s")
            except Exception as exc:  # the bug this test exists to find
                pytest.fail(f"case {case} (seed {SEED}) raised {type(exc).__name__}: {exc}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, time.perf_counter() - t0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert _fd_count() == fds_before
    # the mutator must exercise both paths, or it is not testing anything
    assert outcomes["ok"] > CASES // 20 and outcomes["error"] > CASES // 20, outcomes
    print(f"fuzz: {CASES} cases, {outcomes}, slowest {slowest * 1000:.1f} ms")


@pytest.mark.parametrize("blob", [b"", b"\x9f\xeb", b"\x9f\xeb\x01\x00" + b"\xff" * 20,
                                  b"\x9f\xeb\x01\x00\x18\x00\x00\x00" + b"\x00" * 16])
def test_tiny_btf_blobs(blob):
    with pytest.raises(LoaderError):
        Btf.parse(blob)
    empty = Btf.parse(struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 0, 0, 1) + b"\0")
    assert len(empty.types) == 1
    if len(blob) < 24 or blob[4] != 24:
        with pytest.raises(LoaderError):
            BtfExt.parse(blob, empty)
    else:  # a header with no records is a valid, empty .BTF.ext
        ext = BtfExt.parse(blob, empty)
        assert ext.func_info == {} and ext.core_relos == {}
