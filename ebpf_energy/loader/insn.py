"""BPF instructions as bytes: the one codec and the one disassembler.

``struct bpf_insn`` is 8 bytes: ``opcode:8 dst:4 src:4 off:16 imm:32``,
little-endian, dst in the low nibble. Relocation only ever touches a few
fields (opcode, the register nibbles, off, imm), so instructions stay in one
``bytearray`` and are edited in place rather than decoded into objects;
:func:`encode`/:func:`decode`/:func:`put` are the whole codec (the assembler
and CO-RE use them too), and :func:`describe` is the one disassembler.
"""

import struct

from .abi import (BPF_ALU, BPF_ALU64, BPF_B, BPF_CALL, BPF_DW, BPF_EXIT, BPF_H, BPF_IMM, BPF_JMP, BPF_JMP32,
                  BPF_LD, BPF_LDX, BPF_PSEUDO_BTF_ID, BPF_PSEUDO_CALL, BPF_PSEUDO_FUNC, BPF_PSEUDO_KFUNC_CALL,
                  BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE, BPF_PSEUDO_MAP_VALUE, BPF_ST,
                  BPF_STX, BPF_W, bpf_func_id)

INSN_SIZE = 8
LD_IMM64 = BPF_LD | BPF_IMM | BPF_DW  # two slots: the second holds the high 32 bits
CALL = BPF_JMP | BPF_CALL
EXIT = BPF_JMP | BPF_EXIT

# the names relocation code reads (src_reg values of ld_imm64 and call)
PSEUDO_MAP_FD = BPF_PSEUDO_MAP_FD
PSEUDO_MAP_VALUE = BPF_PSEUDO_MAP_VALUE
PSEUDO_BTF_ID = BPF_PSEUDO_BTF_ID
PSEUDO_FUNC = BPF_PSEUDO_FUNC
PSEUDO_CALL = BPF_PSEUDO_CALL
PSEUDO_KFUNC_CALL = BPF_PSEUDO_KFUNC_CALL

SIZE_BYTES = {BPF_W: 4, BPF_H: 2, BPF_B: 1, BPF_DW: 8}  # the size bits of a load/store -> bytes
BYTES_SIZE = {v: k for k, v in SIZE_BYTES.items()}

_INSN = struct.Struct("<BBhi")
_IMM = struct.Struct("<i")
_OFF = struct.Struct("<h")


def encode(op, dst=0, src=0, off=0, imm=0) -> bytes:
    """One instruction; ``imm`` may be given unsigned (0..2**32-1)."""
    return _INSN.pack(op, (src << 4) | dst, off, imm - (1 << 32) if imm >= (1 << 31) else imm)


def decode(code, i):
    """``(op, dst, src, off, imm)`` of instruction ``i``."""
    op, regs, off_, imm_ = _INSN.unpack_from(code, i * INSN_SIZE)
    return op, regs & 0xF, regs >> 4, off_, imm_


def put(code: bytearray, i, op, dst=0, src=0, off=0, imm=0):
    """Overwrite instruction ``i`` in place."""
    _INSN.pack_into(code, i * INSN_SIZE, op, (src << 4) | dst, off, imm - (1 << 32) if imm >= (1 << 31) else imm)


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


# -- the one disassembler (the --explain trace, CO-RE patches, load --dry-run) -----
_SIZE_NAME = {BPF_W: "u32", BPF_H: "u16", BPF_B: "u8", BPF_DW: "u64"}
_ALU_OPS = {0x00: "+=", 0x10: "-=", 0x20: "*=", 0x30: "/=", 0x40: "|=", 0x50: "&=", 0x60: "<<=",
            0x70: ">>=", 0x90: "%=", 0xA0: "^=", 0xB0: "=", 0xC0: "s>>="}
_JMP_OPS = {0x10: "==", 0x20: ">", 0x30: ">=", 0x40: "&", 0x50: "!=", 0x60: "s>", 0x70: "s>=",
            0xA0: "<", 0xB0: "<=", 0xC0: "s<", 0xD0: "s<="}
_ATOMIC_OPS = {0x00: "+=", 0x40: "|=", 0x50: "&=", 0xA0: "^="}
_LD_PSEUDO = {PSEUDO_MAP_FD: "map_fd", PSEUDO_MAP_VALUE: "map_value", PSEUDO_BTF_ID: "btf_id",
              PSEUDO_FUNC: "func", BPF_PSEUDO_MAP_IDX: "map_idx", BPF_PSEUDO_MAP_IDX_VALUE: "map_idx_value"}
POISON_IMM = 0xBAD2310  # what CO-RE writes where a relocation cannot resolve (libbpf's value)


def _mem(size, reg, off):
    return f"*({_SIZE_NAME[size]} *)(r{reg} {'+' if off >= 0 else '-'} {abs(off)})"


def describe(code, i, names=None) -> str:
    """Instruction ``i`` of ``code`` in the kernel verifier's notation
    (``r1 = *(u64 *)(r2 + 8)``, ``if r1 > 0x3 goto pc+5``). ``names`` maps a
    ld_imm64's instruction index to what it loads (a map name, before fds exist)."""
    op, dst, src, offset, imm_ = decode(code, i)
    cls = op & 7
    if op == LD_IMM64:
        hi = _IMM.unpack_from(code, (i + 1) * INSN_SIZE + 4)[0] if len(code) >= (i + 2) * INSN_SIZE else 0
        if names and i in names:
            return f"r{dst} = {names[i]} ll"
        if src == PSEUDO_MAP_VALUE:
            return f"r{dst} = map_value(fd {imm_}) + {hi}"
        if src:
            return f"r{dst} = {_LD_PSEUDO.get(src, f'src={src}')} {imm_} ll"
        return f"r{dst} = {((hi & 0xFFFFFFFF) << 32) | (imm_ & 0xFFFFFFFF):#x} ll"
    if cls == BPF_LDX:
        signed = "s" if op & 0xE0 == 0x80 else ""  # BPF_MEMSX
        return f"r{dst} = {signed}{_mem(op & 0x18, src, offset)}"
    if cls == BPF_ST:
        return f"{_mem(op & 0x18, dst, offset)} = {imm_}"
    if cls == BPF_STX:
        if op & 0xE0 == 0xC0:  # BPF_ATOMIC
            fetch = " (fetch)" if imm_ & 1 else ""
            if imm_ & ~1 in _ATOMIC_OPS:
                return f"lock {_mem(op & 0x18, dst, offset)} {_ATOMIC_OPS[imm_ & ~1]} r{src}{fetch}"
            return {0xE1: f"r{src} = xchg({_mem(op & 0x18, dst, offset)}, r{src})",
                    0xF1: f"r0 = cmpxchg({_mem(op & 0x18, dst, offset)}, r0, r{src})"}.get(
                imm_, f"atomic {imm_:#x} {_mem(op & 0x18, dst, offset)} r{src}")
        return f"{_mem(op & 0x18, dst, offset)} = r{src}"
    if cls in (BPF_ALU, BPF_ALU64):
        reg = "r" if cls == BPF_ALU64 else "w"
        kind = op & 0xF0
        if kind == 0x80:
            return f"{reg}{dst} = -{reg}{dst}"
        if kind == 0xD0:  # byte swap
            return f"{reg}{dst} = {'be' if op & 0x08 else 'le'}{imm_} {reg}{dst}"
        operand = f"{reg}{src}" if op & 0x08 else str(imm_)
        return f"{reg}{dst} {_ALU_OPS.get(kind, f'op{kind:#x}')} {operand}"
    if cls in (BPF_JMP, BPF_JMP32):
        kind = op & 0xF0
        if op == CALL:
            if src == PSEUDO_CALL:
                return f"call pc{imm_:+d}"
            if src == PSEUDO_KFUNC_CALL:
                return f"call kfunc btf_id {imm_}"
            if imm_ == POISON_IMM:
                return "call 0xbad2310 (poisoned CO-RE relocation)"
            return f"call bpf_{bpf_func_id[imm_]}#{imm_}" if 0 < imm_ < len(bpf_func_id) else f"call helper #{imm_}"
        if op == EXIT:
            return "exit"
        if kind == 0x00:
            return f"goto pc{(imm_ if cls == BPF_JMP32 else offset):+d}"
        reg = "r" if cls == BPF_JMP else "w"
        operand = f"{reg}{src}" if op & 0x08 else f"{imm_:#x}"
        return f"if {reg}{dst} {_JMP_OPS.get(kind, f'op{kind:#x}')} {operand} goto pc{offset:+d}"
    return f"op={op:#04x} dst=r{dst} src=r{src} off={offset} imm={imm_}"


def disassemble(code, names=None):
    """``(index, text)`` for every instruction; the second slot of a ld_imm64 is skipped."""
    out, i, n = [], 0, count(code)
    while i < n:
        out.append((i, describe(code, i, names)))
        i += 2 if opcode(code, i) == LD_IMM64 else 1
    return out
