"""BPF instructions as bytes: the 8-byte ``struct bpf_insn`` and its fields.

Relocation only ever touches a few fields (opcode, the register nibbles,
off, imm), so instructions stay in one ``bytearray`` and are edited in place
rather than decoded into objects.
"""

import struct

INSN_SIZE = 8
LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW: two slots
CALL = 0x85  # BPF_JMP | BPF_CALL
EXIT = 0x95

PSEUDO_MAP_FD = 1
PSEUDO_MAP_VALUE = 2
PSEUDO_BTF_ID = 3
PSEUDO_FUNC = 4
PSEUDO_CALL = 1
PSEUDO_KFUNC_CALL = 2

_IMM = struct.Struct("<i")
_OFF = struct.Struct("<h")


def opcode(code: bytes, i: int) -> int:
    return code[i * INSN_SIZE]


def src_reg(code, i):
    return code[i * INSN_SIZE + 1] >> 4


def dst_reg(code, i):
    return code[i * INSN_SIZE + 1] & 0xF


def imm(code, i):
    return _IMM.unpack_from(code, i * INSN_SIZE + 4)[0]


def off(code, i):
    return _OFF.unpack_from(code, i * INSN_SIZE + 2)[0]


def set_src_reg(code: bytearray, i, reg):
    b = i * INSN_SIZE + 1
    code[b] = (code[b] & 0x0F) | (reg << 4)


def set_imm(code: bytearray, i, value):
    _IMM.pack_into(code, i * INSN_SIZE + 4, value)


def set_off(code: bytearray, i, value):
    _OFF.pack_into(code, i * INSN_SIZE + 2, value)


def count(code) -> int:
    return len(code) // INSN_SIZE


def describe(code, i) -> str:
    """A short, assembler-like rendering for the teaching trace."""
    op = opcode(code, i)
    if op == LD_IMM64 and (i + 1) * INSN_SIZE < len(code):
        s = src_reg(code, i)
        lo, hi = imm(code, i) & 0xFFFFFFFF, imm(code, i + 1) & 0xFFFFFFFF
        kind = {0: "", PSEUDO_MAP_FD: " map_fd", PSEUDO_MAP_VALUE: " map_value",
                PSEUDO_BTF_ID: " btf_id", PSEUDO_FUNC: " func"}.get(s, f" src={s}")
        if s == PSEUDO_MAP_VALUE:
            return f"r{dst_reg(code, i)} = map_value(fd {imm(code, i)}) + {imm(code, i + 1)}"
        return f"r{dst_reg(code, i)} = {(hi << 32) | lo:#x} ll{kind}"
    if op == CALL:
        s = src_reg(code, i)
        what = {PSEUDO_CALL: "pc%+d" % imm(code, i), PSEUDO_KFUNC_CALL: f"kfunc btf_id {imm(code, i)}"}
        return "call " + what.get(s, f"helper #{imm(code, i)}" if imm(code, i) != 0xBAD2310 else "0xbad2310 (poisoned)")
    return f"op={op:#04x} dst=r{dst_reg(code, i)} src=r{src_reg(code, i)} off={off(code, i)} imm={imm(code, i)}"
