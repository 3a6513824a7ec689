"""A tiny BPF assembler, so tests and benchmarks can write programs by hand.

Enough of the instruction set to build counters, ring-buffer producers and
loops without clang: 64/32-bit ALU, ``ld_imm64`` (plain, map fd, map value,
BPF function), loads/stores, atomic add, conditional and plain jumps to named
labels, helper calls and exit. Each instruction is 8 bytes:
``opcode:8 dst:4 src:4 off:16 imm:32`` (little-endian, registers in one byte,
dst in the low nibble).

    a = Asm()
    a.mov(R0, 0)
    a.exit()
    insns = a.assemble()
"""

from . import abi
from . import insn as I
from .errors import LoaderError

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)

# instruction classes, sizes, modes and sources: the kernel's names without BPF_
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = (abi.BPF_LD, abi.BPF_LDX, abi.BPF_ST, abi.BPF_STX, abi.BPF_ALU,
                                            abi.BPF_JMP, abi.BPF_JMP32, abi.BPF_ALU64)
W, H, B, DW = abi.BPF_W, abi.BPF_H, abi.BPF_B, abi.BPF_DW
SIZES = I.BYTES_SIZE
IMM, MEM, ATOMIC = abi.BPF_IMM, abi.BPF_MEM, abi.BPF_ATOMIC
K, X = abi.BPF_K, abi.BPF_X

ALU_OPS = {op: getattr(abi, "BPF_" + op.upper()) for op in
           ("add", "sub", "mul", "div", "or", "and", "lsh", "rsh", "neg", "mod", "xor", "mov", "arsh")}
JMP_OPS = {op: getattr(abi, "BPF_" + op.upper()) for op in
           ("ja", "jeq", "jgt", "jge", "jset", "jne", "jsgt", "jsge", "call", "exit", "jlt", "jle", "jslt", "jsle")}

PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, PSEUDO_FUNC, PSEUDO_CALL = I.PSEUDO_MAP_FD, I.PSEUDO_MAP_VALUE, I.PSEUDO_FUNC, \
    I.PSEUDO_CALL


class AsmError(LoaderError):
    """A hand-written program refers to a missing label or an out-of-range value."""


def insn(opcode, dst=0, src=0, off=0, imm=0):
    """Encode one 8-byte instruction."""
    if not (-(1 << 15) <= off < (1 << 15)):
        raise AsmError(f"offset {off} does not fit in 16 bits")
    if not (-(1 << 31) <= imm < (1 << 32)):
        raise AsmError(f"immediate {imm} does not fit in 32 bits")
    return I.encode(opcode, dst, src, off, imm)


class Asm:
    """Builds a program instruction by instruction; jumps name labels."""

    def __init__(self):
        self._insns = []          # list of bytes (8 or 16 long)
        self._labels = {}         # name -> instruction index
        self._fixups = []         # (slot, name, kind)
        self._n = 0               # instruction count in 8-byte units

    def __len__(self):
        return self._n

    def _emit(self, raw):
        self._insns.append(raw)
        self._n += len(raw) // 8
        return self

    # --- ALU
    def alu(self, op, dst, src, bits=64):
        """``dst op= src``; ``src`` is ``reg(n)`` for a register or an int immediate
        (a bare int is always an immediate, so ``mov(R1, 2)`` never means r2)."""
        cls = ALU64 if bits == 64 else ALU
        if isinstance(src, Reg):
            return self._emit(insn(cls | ALU_OPS[op] | X, dst, src.n))
        return self._emit(insn(cls | ALU_OPS[op] | K, dst, 0, 0, src))

    def mov(self, dst, src):
        return self.alu("mov", dst, src)

    def mov32(self, dst, src):
        return self.alu("mov", dst, src, 32)

    def add(self, dst, src):
        return self.alu("add", dst, src)

    def sub(self, dst, src):
        return self.alu("sub", dst, src)

    def and_(self, dst, src):
        return self.alu("and", dst, src)

    def lsh(self, dst, src):
        return self.alu("lsh", dst, src)

    def rsh(self, dst, src):
        return self.alu("rsh", dst, src)

    # --- 64-bit immediates
    def ld_imm64(self, dst, imm, src=0, imm2=None):
        """``dst = imm`` (64 bit). With ``src`` a pseudo kind the loader/kernel reads ``imm``."""
        lo = imm & 0xFFFFFFFF
        hi = (imm >> 32) & 0xFFFFFFFF if imm2 is None else imm2
        return self._emit(insn(LD | DW | IMM, dst, src, 0, lo) + insn(0, 0, 0, 0, hi))

    def ld_map_fd(self, dst, map_fd):
        """``dst = &map`` (BPF_PSEUDO_MAP_FD)."""
        return self.ld_imm64(dst, map_fd, PSEUDO_MAP_FD, 0)

    def ld_map_value(self, dst, map_fd, offset=0):
        """``dst = &map_value[0] + offset`` (BPF_PSEUDO_MAP_VALUE, arrays)."""
        return self.ld_imm64(dst, map_fd, PSEUDO_MAP_VALUE, offset)

    def ld_func(self, dst, label):
        """``dst = &subprogram`` (BPF_PSEUDO_FUNC, e.g. a bpf_loop callback)."""
        self._fixups.append((len(self._insns), label, "func"))
        return self._emit(insn(LD | DW | IMM, dst, PSEUDO_FUNC, 0, 0) + insn(0))

    # --- memory
    def ldx(self, size, dst, src, off=0):
        """``dst = *(size *)(src + off)``; size in bytes (1, 2, 4, 8)."""
        return self._emit(insn(LDX | MEM | SIZES[size], dst, src, off))

    def stx(self, size, dst, off, src):
        """``*(size *)(dst + off) = src`` (register)."""
        return self._emit(insn(STX | MEM | SIZES[size], dst, src, off))

    def st(self, size, dst, off, imm):
        """``*(size *)(dst + off) = imm`` (32-bit immediate, sign-extended for 8)."""
        return self._emit(insn(ST | MEM | SIZES[size], dst, 0, off, imm))

    def atomic_add(self, size, dst, off, src):
        """``lock *(size *)(dst + off) += src`` (size 4 or 8)."""
        return self._emit(insn(STX | ATOMIC | SIZES[size], dst, src, off, 0x00))

    # --- control flow
    def label(self, name):
        if name in self._labels:
            raise AsmError(f"label {name!r} defined twice")
        self._labels[name] = self._n
        return self

    def jmp(self, op, dst, src, label, bits=64):
        """``if dst op src goto label``; src a Reg or an immediate."""
        cls = JMP if bits == 64 else JMP32
        self._fixups.append((len(self._insns), label, "jmp"))
        if isinstance(src, Reg):
            return self._emit(insn(cls | JMP_OPS[op] | X, dst, src.n))
        return self._emit(insn(cls | JMP_OPS[op] | K, dst, 0, 0, src))

    def ja(self, label):
        self._fixups.append((len(self._insns), label, "jmp"))
        return self._emit(insn(JMP | JMP_OPS["ja"]))

    def call(self, helper_id):
        """Call a kernel helper by its ``enum bpf_func_id`` number."""
        return self._emit(insn(JMP | JMP_OPS["call"], 0, 0, 0, helper_id))

    def call_local(self, label):
        """bpf-to-bpf call of a subprogram at ``label``."""
        self._fixups.append((len(self._insns), label, "call"))
        return self._emit(insn(JMP | JMP_OPS["call"], 0, PSEUDO_CALL, 0, 0))

    def exit(self):
        return self._emit(insn(JMP | JMP_OPS["exit"]))

    def raw(self, data):
        """Append already-encoded instructions."""
        if len(data) % 8:
            raise AsmError("raw instructions must be a multiple of 8 bytes")
        return self._emit(bytes(data))

    def assemble(self):
        """Resolve labels and return the program as bytes."""
        starts = []
        pos = 0
        for raw in self._insns:
            starts.append(pos)
            pos += len(raw) // 8
        out = list(self._insns)
        for slot, name, kind in self._fixups:
            if name not in self._labels:
                raise AsmError(f"jump to undefined label {name!r}")
            rel = self._labels[name] - starts[slot] - 1
            raw = bytearray(out[slot])
            if kind == "jmp":
                I.set_off(raw, 0, rel)
            else:  # call / func: relative target in imm
                I.set_imm(raw, 0, rel)
            out[slot] = bytes(raw)
        return b"".join(out)


class Reg:
    """Marks a source operand as a register: ``a.add(R1, reg(R2))``."""

    __slots__ = ("n",)

    def __init__(self, n):
        if not 0 <= n <= 10:
            raise AsmError(f"no register r{n}")
        self.n = n


def reg(n):
    return Reg(n)
