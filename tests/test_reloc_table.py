"""Relocations, one row each: what prepare() leaves in the instruction the relocation names.

Rows are read against the committed objects in tests/testdata and the made-up
kernel there (no root, no clang). Each row says the instruction a relocation
patches and what must be there afterwards, in the instruction's own fields:
a map reference is ``ld_imm64`` with src_reg BPF_PSEUDO_MAP_FD (or
BPF_PSEUDO_MAP_VALUE and the offset in the second slot's imm) and a slot
the collection fills with the fd; a subprogram call is ``call`` with src_reg
BPF_PSEUDO_CALL and the pc-relative target in imm; a kfunc call carries the
kernel BTF id; a typed ksym's address is filled at load.
"""

from pathlib import Path

import pytest

from ebpf_energy.loader import insn as I
from ebpf_energy.loader.prepare import prepare
from ebpf_energy.loader.spec import ObjectSpec
from ebpf_energy.loader.target import Target

DATA = Path(__file__).resolve().parent / "testdata"
_prepared = {}


def prepared(obj):
    if obj not in _prepared:
        spec = ObjectSpec.parse(f"{obj}.bpf.o", (DATA / f"{obj}.bpf.o").read_bytes())
        target = Target.from_btf_file(str(DATA / "fake_kernel.bpf.o"), str(DATA / "fake_kernel.config"),
                                      possible_cpus=4, page_size=4096)
        _prepared[obj] = prepare(spec, target)
    return _prepared[obj]


def program(obj, name):
    return prepared(obj).programs[name]


# (object, program, insn, kind, what, value): kind map_fd/map_value -> what is the map, value the offset;
# call -> what is the called function's name (for the message), value the pc-relative target;
# kfunc -> value the kernel BTF id; address -> what is the symbol
ROWS = [
    ("hello", "on_switch", 15, "map_fd", "switches", None),
    ("hello", "on_switch", 26, "map_fd", "switches", None),
    ("hello", "on_switch", 5, "map_value", ".rodata", 0),
    ("subprog", "on_sys_enter", 2, "map_value", ".rodata", 8),
    ("subprog", "on_sys_enter", 9, "map_value", ".rodata", 16),
    ("subprog", "on_sys_enter", 16, "call", "mix", 16),
    ("subprog", "on_sys_enter", 19, "call", "global_square", 18),
    ("subprog", "on_sys_enter", 34, "call", "triple_plus_one", 7),
    ("subprog", "on_switch", 7, "map_value", ".bss", 24),
    ("subprog", "on_switch", 3, "call", "triple_plus_one", 16),
    ("externs", "read_externs", 13, "map_value", ".bss", 24),
    ("externs", "read_externs", 18, "map_value", ".kconfig", 4),
    ("externs", "read_externs", 15, "address", "_stext", None),
    ("externs", "read_externs", 47, "kfunc", "bpf_task_from_pid", 10),
    ("externs", "read_externs", 54, "kfunc", "bpf_task_release", 12),
]


@pytest.mark.parametrize("obj, prog, idx, kind, what, value", ROWS)
def test_relocation(obj, prog, idx, kind, what, value):
    p = program(obj, prog)
    code = p.insns
    op, dst, src, off, imm = I.decode(code, idx)
    slots = {s.insn: s for s in p.map_slots}
    if kind in ("map_fd", "map_value"):
        assert op == I.LD_IMM64
        assert src == (I.PSEUDO_MAP_FD if kind == "map_fd" else I.PSEUDO_MAP_VALUE)
        assert slots[idx].map == what and imm == 0  # the fd goes in at load
        if kind == "map_value":
            assert I.imm(code, idx + 1) == value == slots[idx].offset
    elif kind == "call":
        assert (op, src, imm) == (I.CALL, I.PSEUDO_CALL, value)
    elif kind == "kfunc":
        assert (op, src, imm) == (I.CALL, I.PSEUDO_KFUNC_CALL, value)
    elif kind == "address":
        assert op == I.LD_IMM64 and src == 0
        assert [s.symbol for s in p.address_slots if s.insn == idx] == [what]
    else:
        raise AssertionError(kind)


def test_every_relocation_has_a_row_in_hello():
    """The guide's example: all its relocations are in the table above."""
    p = program("hello", "on_switch")
    assert sorted(s.insn for s in p.map_slots) == sorted(r[2] for r in ROWS if r[0] == "hello")
