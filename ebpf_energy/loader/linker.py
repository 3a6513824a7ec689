"""Turn an object's code sections into one self-contained instruction stream per program.

The kernel loads each program on its own, so every BPF-to-BPF call target
(static or global function, usually in ``.text``) is appended to the main
program's copy and the call offsets are recomputed. ld_imm64 instructions
that name a map, global data or an extern are recorded as :class:`Fixup`s and
get their kernel values (fds, BTF ids, addresses) when maps exist. CO-RE has
already been applied to the section copies (offsets are per section there).

Pure: works on an :class:`~ebpf_energy.loader.elf.ElfObject` and produces data.
"""

from __future__ import annotations

from ebpf_energy.loader import insn as I
from ebpf_energy.loader.errors import RelocationError
from ebpf_energy.loader.record import field, record, tuple_record

SHN_UNDEF = 0


@record
class Fixup:
    """An ld_imm64 (or kfunc call) in a linked program that needs a kernel value.

    target_kind: ``map`` (a ``.maps`` map: fd), ``data`` (global data: map value +
    offset), ``extern`` (a ``.kconfig`` / ``.ksyms`` symbol, resolved by name).
    """

    insn_index: int
    target_kind: str
    target: str  # map name, data section name, or extern symbol name
    offset: int = 0
    symbol: str = ""
    call: bool = False  # an extern function call (kfunc) rather than ld_imm64


@tuple_record
class PlacedFunction:
    """A function of a section, copied into a linked program at ``out_start``."""

    section: str
    shndx: int
    name: str
    start: int  # instruction index in its section
    end: int
    out_start: int  # instruction index in the linked program


@record
class LinkedProgram:
    """A program with the subprograms it calls appended, and what still needs a kernel value."""

    name: str
    section: str
    insns: bytearray
    fixups: list[Fixup] = field(default_factory=list)
    functions: list[PlacedFunction] = field(default_factory=list)
    call_edits: list[tuple[int, str, int]] = field(default_factory=list)  # (insn, callee, new imm)

    @property
    def insn_count(self):
        return len(self.insns) // I.INSN_SIZE


class Linker:
    """Links programs out of per-section instruction copies.

    ``code``: section index -> bytearray (already CO-RE-patched copies);
    ``symbol_kind(sym)`` classifies an ld_imm64 target symbol into
    ``(kind, target, base_offset)``.
    """

    def __init__(self, elf, code: dict[int, bytearray], symbol_kind):
        self.elf = elf
        self.code = code
        self.symbol_kind = symbol_kind
        self._relocs = {shndx: {r.offset // I.INSN_SIZE: r for r in elf.relocations.get(shndx, [])}
                        for shndx in code}
        self._funcs = {shndx: sorted(((s.value // I.INSN_SIZE, max(s.size, 0) // I.INSN_SIZE, s.name)
                                      for s in elf.functions(shndx)), key=lambda t: t[0]) for shndx in code}

    def function_at(self, shndx, index) -> tuple[int, int, str]:
        """The function (start, end, name) containing instruction ``index`` of section ``shndx``."""
        n = I.count(self.code[shndx])
        for start, size, name in self._funcs.get(shndx, ()):
            end = start + size if size else n
            if start <= index < end:
                return start, end, name
        if not self._funcs.get(shndx):
            return 0, n, self.elf.section_by_index(shndx).name
        raise RelocationError(
            f"call target instruction {index} of section {self.elf.section_by_index(shndx).name} "
            "is not inside any function symbol")

    def link(self, shndx: int, name: str, start: int, end: int) -> LinkedProgram:
        section = self.elf.section_by_index(shndx).name
        prog = LinkedProgram(name=name, section=section, insns=bytearray())
        placed: dict[tuple[int, int], int] = {}

        def place(sh, s, e, fname):
            if not 0 <= s < e <= I.count(self.code[sh]):
                raise RelocationError(f"function {fname} (instructions {s}..{e}) lies outside its section "
                                      f"{self.elf.section_by_index(sh).name}")
            out_start = I.count(prog.insns)
            prog.insns += self.code[sh][s * I.INSN_SIZE:e * I.INSN_SIZE]
            placed[(sh, s)] = out_start
            prog.functions.append(PlacedFunction(self.elf.section_by_index(sh).name, sh, fname, s, e, out_start))
            return out_start

        place(shndx, start, end, name)
        i = 0
        while i < len(prog.functions):
            fn = prog.functions[i]
            self._relocate_function(prog, fn, placed, place)
            i += 1
        return prog

    def _relocate_function(self, prog, fn: PlacedFunction, placed, place):
        code = prog.insns
        relocs = self._relocs.get(fn.shndx, {})
        k = fn.start
        while k < fn.end:
            out = fn.out_start + (k - fn.start)
            op = I.opcode(code, out)
            reloc = relocs.get(k)
            if op == I.CALL and reloc is not None and reloc.symbol.shndx == SHN_UNDEF:
                # a call to an extern function: a kfunc, resolved against kernel BTF
                prog.fixups.append(Fixup(out, "extern", reloc.symbol.name, symbol=reloc.symbol.name, call=True))
            elif op == I.CALL and I.src_reg(code, out) == I.PSEUDO_CALL:
                self._link_call(prog, fn, k, out, reloc, placed, place)
            elif op == I.CALL and reloc is not None:
                raise RelocationError(f"{prog.name}: helper call at instruction {k} relocated against "
                                      f"{reloc.symbol.name}")
            elif op == I.LD_IMM64:
                if k + 1 >= fn.end:
                    raise RelocationError(f"{prog.name}: ld_imm64 at instruction {k} of {fn.section} "
                                          "has no second half")
                if I.src_reg(code, out) == I.PSEUDO_FUNC or (
                        reloc is not None and reloc.symbol.shndx in self.code):
                    # a callback's address (bpf_loop, bpf_for_each_map_elem): clang
                    # emits a plain ld_imm64 relocated against a code section
                    self._link_func_pointer(prog, fn, k, out, reloc, placed, place)
                elif reloc is not None:
                    self._record_ldimm(prog, out, reloc, k, fn)
                k += 2
                continue
            k += 1

    def _target_of(self, fn, k, out, reloc, code):
        imm = I.imm(code, out)
        if reloc is None:
            return fn.shndx, k + imm + 1
        sym = reloc.symbol
        if sym.shndx == SHN_UNDEF:
            raise RelocationError(f"call at instruction {k} of {fn.section} targets undefined function {sym.name}")
        return sym.shndx, sym.value // I.INSN_SIZE + imm + 1

    def _callee(self, shndx, target, placed, place):
        if shndx not in self.code:
            raise RelocationError(f"call into section index {shndx}, which holds no code")
        start, end, name = self.function_at(shndx, target)
        out_start = placed.get((shndx, start))
        if out_start is None:
            out_start = place(shndx, start, end, name)
        return out_start + (target - start), name

    def _link_call(self, prog, fn, k, out, reloc, placed, place):
        shndx, target = self._target_of(fn, k, out, reloc, prog.insns)
        dest, name = self._callee(shndx, target, placed, place)
        new_imm = dest - out - 1
        I.set_imm(prog.insns, out, new_imm)
        prog.call_edits.append((out, name, new_imm))

    def _link_func_pointer(self, prog, fn, k, out, reloc, placed, place):
        code = prog.insns
        if reloc is None:
            shndx, target = fn.shndx, k + I.imm(code, out) + 1
        else:
            sym = reloc.symbol
            base = sym.value if sym.type == "SECTION" else sym.value
            shndx, target = sym.shndx, (base + I.imm(code, out)) // I.INSN_SIZE
        dest, name = self._callee(shndx, target, placed, place)
        I.set_imm(code, out, dest - out - 1)
        I.set_src_reg(code, out, I.PSEUDO_FUNC)
        prog.call_edits.append((out, name, dest - out - 1))

    def _record_ldimm(self, prog, out, reloc, k, fn):
        kind, target, base = self.symbol_kind(reloc.symbol)
        if kind is None:
            raise RelocationError(
                f"{prog.name}: instruction {k} of {fn.section} loads the address of {reloc.symbol.name!r}, "
                "which is neither a map, global data nor an extern")
        addend = I.imm(prog.insns, out)
        prog.fixups.append(Fixup(out, kind, target, offset=base + (addend if kind == "data" else 0),
                                 symbol=reloc.symbol.name))
