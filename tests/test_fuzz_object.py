"""Mutation fuzzing of whole compiled corpus objects through ``BpfObject.open``.

Every corpus object (built by clang from tests/bpf) is corrupted in the parts
a loader reads — ELF header, section headers, symbols, relocations, program
code, .maps, global data, .BTF, .BTF.ext — and opened from bytes: the spec
phase (ELF, BTF, DATASEC fixups, .BTF.ext, map definitions, programs,
externs). A mutant that still opens also goes through the pure parts of
load: linking every program (subprograms, ld_imm64 fixups) and decoding its
global variables. Only LoaderError subclasses may come out; no case may
hang; no fd may leak. FUZZ_CASES raises the count, FUZZ_SEED replays a run.
"""

import io
import os
import random
import signal
import time

import pytest
from elftools.elf.elffile import ELFFile

from ebpf_energy.loader.errors import LoaderError
from ebpf_energy.loader.linker import Linker
from ebpf_energy.loader.object import BpfObject

CASES = int(os.environ.get("FUZZ_CASES", "3000"))
SEED = int(os.environ.get("FUZZ_SEED", "7311"))
CASE_LIMIT_S = 5.0
CORPUS = ["tp_btf_counter", "core_task", "rodata", "globals", "subprog", "ringbuf", "verifier_reject",
          "maps_all", "seed_style", "multi_prog", "externs", "core_local", "core_maps", "map_in_map",
          "struct_ops_cc", "spec_externs", "callbacks"]
INTERESTING = (".BTF", ".BTF.ext", ".symtab", ".strtab", ".maps", ".rodata", ".data", ".bss", "license",
               ".struct_ops", ".struct_ops.link", ".rel.maps", ".rel.struct_ops")


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def regions_of(data):
    """(offset, size) of the byte ranges worth corrupting: headers and loader-read sections."""
    elf = ELFFile(io.BytesIO(data))
    hdr = elf.header
    regions = [(0, 64), (hdr["e_shoff"], hdr["e_shnum"] * hdr["e_shentsize"])]
    for sec in elf.iter_sections():
        h = sec.header
        name = sec.name
        if h["sh_type"] == "SHT_NOBITS" or not h["sh_size"] or name.startswith((".debug", ".rel.debug")):
            continue
        if (name in INTERESTING or name.startswith((".rel", ".rodata", ".data")) or h["sh_flags"] & 0x4):
            regions.append((h["sh_offset"], h["sh_size"]))
    return regions


def mutate(rng, data, regions):
    data = bytearray(data)
    op = rng.randrange(8)
    if op == 0:  # truncation
        return bytes(data[:rng.randrange(len(data))])
    start, size = rng.choice(regions)
    if op == 1:  # bit flips
        for _ in range(rng.randint(1, 6)):
            i = start + rng.randrange(size)
            data[i] ^= 1 << rng.randrange(8)
    elif op == 2:  # interesting 32-bit values on a word boundary (counts, offsets, ids, sizes)
        i = start + (rng.randrange(max(size // 4, 1)) * 4)
        val = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                          rng.randrange(1 << 32), size, size + 1))
        data[i:i + 4] = val.to_bytes(4, "little")
    elif op == 3:  # random bytes
        i = start + rng.randrange(size)
        n = rng.randint(1, 32)
        data[i:i + n] = bytes(rng.randrange(256) for _ in range(n))[:len(data) - i]
    elif op == 4:  # zero a run
        i = start + rng.randrange(size)
        n = rng.randint(1, 64)
        data[i:i + n] = bytes(min(n, len(data) - i))
    elif op == 5:  # copy a chunk of one region over another (plausible-looking garbage)
        s2, z2 = rng.choice(regions)
        n = rng.randint(4, 64)
        src = data[s2:s2 + min(n, z2)]
        i = start + rng.randrange(size)
        data[i:i + len(src)] = src[:len(data) - i]
    elif op == 6:  # single byte to an extreme
        i = start + rng.randrange(size)
        data[i] = rng.choice((0, 0xFF, 0x80, 0x7F))
    else:  # several small hits in one region
        for _ in range(rng.randint(2, 10)):
            i = start + rng.randrange(size)
            data[i] = rng.randrange(256)
    return bytes(data)


def pure_load_parts(obj):
    """What load() does before its first syscall, on a mutant that opened."""
    for g in ("rodata", "bss", "data"):
        try:
            getattr(obj, g).to_dict()
        except KeyError:
            pass
    spec = obj.spec
    code = {s.index: bytearray(s.data) for s in spec.elf.program_sections()}
    linker = Linker(spec.elf, code, spec.symbol_kind)
    for p in obj.programs.values():
        if p.spec.program_kind is not None:
            linker.link(p.spec.shndx, p.name, p.spec.start, p.spec.end)


def fd_list():
    return sorted(os.listdir("/proc/self/fd"))


def test_fuzz_open_compiled_objects(test_objects):
    seeds = []
    for name in CORPUS:
        path = test_objects(name)
        data = path.read_bytes()
        with BpfObject.open(path, data=data) as obj:  # unmutated: opens and links cleanly
            pure_load_parts(obj)
        seeds.append((str(path), data, regions_of(data)))

    rng = random.Random(SEED)
    old = signal.signal(signal.SIGALRM, _alarm)
    before = fd_list()
    outcomes = {"opened": 0, "error": 0}
    errors = {}
    slowest = (0.0, None)
    try:
        for case in range(CASES):
            path, data, regions = seeds[case % len(seeds)]
            mutated = mutate(rng, data, regions)
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT_S)
            try:
                with BpfObject.open(path, data=mutated) as obj:
                    pure_load_parts(obj)
                outcomes["opened"] += 1
            except LoaderError as exc:
                assert str(exc), "a LoaderError must say what is wrong"
                outcomes["error"] += 1
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            except CaseTimeout:
                pytest.fail(f"case {case} ({os.path.basename(path)}, FUZZ_SEED={SEED}) ran longer "
                            f"than {CASE_LIMIT_S}s")
            except Exception as exc:  # the bug this test exists to find
                _save(case, path, mutated)
                raise AssertionError(f"case {case} ({os.path.basename(path)}, FUZZ_SEED={SEED}) raised "
                                     f"{type(exc).__name__}: {exc}") from exc
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            dt = time.perf_counter() - t0
            if dt > slowest[0]:
                slowest = (dt, case)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert fd_list() == before, "fds leaked while opening mutants"
    # both paths must be exercised, or the mutator is not testing anything
    assert outcomes["opened"] > CASES // 20 and outcomes["error"] > CASES // 20, outcomes
    print(f"fuzz objects: {CASES} cases, {outcomes}, errors {errors}, "
          f"slowest case {slowest[1]} {slowest[0] * 1000:.1f} ms")


def _save(case, path, data):
    out = f"/tmp/fuzz_object_case{case}_{os.path.basename(path)}"
    with open(out, "wb") as f:
        f.write(data)
    print(f"mutant saved to {out}")


@pytest.mark.parametrize("blob", [b"", b"\x7fELF", b"\x7fELF" + b"\x02\x01\x01" + b"\0" * 57, os.urandom(4096)])
def test_garbage_is_a_loader_error(blob):
    with pytest.raises(LoaderError):
        BpfObject.open("garbage.bpf.o", data=blob)
