"""Phase 1 of a load: everything an object declares, as editable data.

``ObjectSpec.parse(path)`` reads the ELF, its BTF and .BTF.ext, and lists the
maps (BTF-defined and global data) and programs, with their types and
attach targets. Nothing here touches the kernel, so it is tested from files
and the user can change it (``.rodata`` values, ``max_entries``, which
programs load) on a ``copy()``; :func:`~ebpf_energy.loader.prepare.prepare` then
finishes it for a kernel without changing it.
"""

from __future__ import annotations

import os

from ebpf_energy.loader import explain, uapi
from ebpf_energy.loader.btf import KIND_DATASEC, Btf
from ebpf_energy.loader.btf_ext import BtfExt
from ebpf_energy.loader.elf import ElfObject
from ebpf_energy.loader.errors import BtfError, ElfError, LoaderError
from ebpf_energy.loader.map_types import MAP_TYPES, STRUCT_OPS, STRUCT_OPS_SECTIONS  # noqa: F401 (MAP_TYPES re-exported)
from ebpf_energy.loader.mapdefs import parse_btf_maps
from ebpf_energy.loader.record import field, record, replace
from ebpf_energy.loader.sections import PROG_TYPES, ProgramKind, attach_type_name, autoload_of, classify, \
    flag_names

ARRAY = uapi.BPF_MAP_TYPE_ARRAY
BPF_F_RDONLY_PROG = uapi.BPF_F_RDONLY_PROG
BPF_F_MMAPABLE = uapi.BPF_F_MMAPABLE
KERNEL_NAME_MAX = 15


@record
class MapSpec:
    """One map to create. ``origin``: ``btf`` (from .maps), ``data`` (a global data section), ``kconfig``,
    ``struct_ops``."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    numa_node: int | None = None
    pinning: int = 0
    key_type_id: int = 0
    value_type_id: int = 0
    origin: str = "btf"
    initial: bytearray | None = None  # data sections: the section's bytes
    readonly: bool = False  # .rodata: frozen before any program loads
    offset: int = 0  # BTF maps: the symbol's offset in .maps
    map_extra: int = 0  # bloom filter hashes, arena address (__ulong(map_extra, ...))
    inner: "MapSpec" | None = None  # maps of maps: the inner maps' definition (__array(values, ...))
    slots: tuple = ()  # initial (index, map or program name) of a map of maps or program array
    struct_ops: object | None = None  # origin "struct_ops": a struct_ops.StructOps

    @property
    def type_name(self):
        return MAP_TYPES.get(self.type, str(self.type))


@record
class ProgramSpec:
    """One program: a function symbol in a code section, ``start:end`` in its instructions."""

    name: str
    section: str
    shndx: int
    start: int  # instruction index in its section
    end: int
    program_kind: ProgramKind | None
    autoload: bool = True

    @property
    def type_name(self):
        return self.program_kind.prog_type_name if self.program_kind else "unknown"


@record
class ObjectSpec:
    """What the ELF declares: maps, programs and externs, parsed once, never changed by a load."""

    path: str
    elf: ElfObject
    btf: Btf | None
    ext: BtfExt | None
    maps: dict[str, MapSpec] = field(default_factory=dict)
    programs: dict[str, ProgramSpec] = field(default_factory=dict)
    kconfig: list = field(default_factory=list)  # externs.KconfigVar
    ksyms: dict[str, int] = field(default_factory=dict)  # name -> local BTF id (VAR or FUNC), 0 untyped
    weak_ksyms: frozenset = frozenset()  # __weak ones: absent from the kernel is not an error
    data_vars: dict[str, dict[str, tuple]] = field(default_factory=dict)  # section -> var -> (offset, size, type_id)

    def copy(self) -> "ObjectSpec":
        """An independent copy to edit (initial data, sizes, autoload): the
        parsed ELF and BTF are shared, as nothing changes them after parse."""
        return replace(
            self,
            maps={k: replace(m, initial=bytearray(m.initial) if m.initial is not None else None)
                  for k, m in self.maps.items()},
            programs={k: replace(p) for k, p in self.programs.items()},
            kconfig=[replace(v) for v in self.kconfig], ksyms=dict(self.ksyms),
            data_vars={k: dict(v) for k, v in self.data_vars.items()})

    @property
    def name(self):
        base = os.path.basename(self.path)
        for suffix in (".bpf.o", ".o"):
            if base.endswith(suffix):
                return base[: -len(suffix)]
        return base

    @classmethod
    def parse(cls, path, data: bytes | None = None) -> "ObjectSpec":
        elf = ElfObject.from_bytes(data) if data is not None else ElfObject.from_path(path)
        btf = ext = None
        if elf.btf:
            btf = Btf.parse(elf.btf)
            _fixup_datasecs(elf, btf)
            explain.trace("btf", f".BTF: {len(btf.types) - 1} types; DATASEC sizes and offsets filled from the ELF")
            if elf.btf_ext:
                ext = BtfExt.parse(elf.btf_ext, btf)
        spec = cls(path=str(path), elf=elf, btf=btf, ext=ext)
        spec._collect_maps()
        spec._collect_programs()
        spec._struct_ops_autoload()
        spec._collect_externs()
        return spec

    # -- maps --------------------------------------------------------------
    def _collect_maps(self):
        elf, btf = self.elf, self.btf
        if elf.section(".maps") is not None:
            if btf is None:
                raise BtfError(".maps section without .BTF: BTF-defined maps need the object's BTF (build with -g)")
            for d in parse_btf_maps(elf, btf):
                self.maps[d.name] = _map_spec(d)
        if any(elf.section(s) is not None for s in STRUCT_OPS_SECTIONS):
            from ebpf_energy.loader import struct_ops  # imported by the objects that have struct_ops only

            for name, ops, data in struct_ops.parse(elf, btf):
                self.maps[name] = MapSpec(name=name, type=STRUCT_OPS, key_size=4, value_size=len(data),
                                          max_entries=1, flags=uapi.BPF_F_LINK if ops.link else 0,
                                          origin="struct_ops", initial=bytearray(data), struct_ops=ops)
        if elf.section("maps") is not None and elf.section("maps").size:
            raise LoaderError("legacy 'maps' section (struct bpf_map_def) is not supported: "
                              "declare maps in SEC(\".maps\") with __uint/__type")
        for sec in elf.data_sections():
            if sec.size == 0:
                continue
            readonly = sec.name.startswith(".rodata")
            datasec = self._datasec_id(sec.name)
            self.maps[sec.name] = MapSpec(
                name=sec.name, type=ARRAY, key_size=4, value_size=sec.size, max_entries=1,
                flags=(BPF_F_RDONLY_PROG if readonly else 0) | BPF_F_MMAPABLE, origin="data",
                initial=bytearray(sec.data), readonly=readonly, value_type_id=datasec)
            self.data_vars[sec.name] = self._vars_of(datasec) if datasec else {}
        for spec in self.maps.values():
            explain.trace("map", f"declared {spec.name}: {spec.type_name}, key {spec.key_size} B, "
                                 f"value {spec.value_size} B, max_entries {spec.max_entries}"
                                 + (", read-only for programs" if spec.readonly else ""))

    def _datasec_id(self, name):
        if self.btf is None:
            return 0
        ids = self.btf.find(name, kind=KIND_DATASEC)
        return ids[0] if ids else 0

    def _vars_of(self, datasec_id):
        """name -> (offset, size, type). In a statically linked object two
        units may each have a ``static`` of one name: the second is ``name.2``
        (the third ``name.3``), in section order, so neither hides the other."""
        t = self.btf.type(datasec_id)
        out = {}
        for var_id, offset, size in t.vars:
            var = self.btf.type(var_id)
            name, n = var.name, 1
            while name in out:
                n += 1
                name = f"{var.name}.{n}"
            out[name] = (offset, size, var.type)
        return out

    # -- programs ----------------------------------------------------------
    def _collect_programs(self):
        for sec in self.elf.program_sections():
            if sec.name == ".text":
                continue
            kind = classify(sec.name)
            funcs = [s for s in self.elf.functions(sec.index) if s.bind != "LOCAL" or s.size]
            if not funcs:
                funcs = []
            for sym in funcs:
                if sym.value % 8 or sym.size % 8 or sym.value + sym.size > sec.size or sym.value >= sec.size:
                    raise ElfError(f"function {sym.name!r} at {sym.value}+{sym.size} does not fit the "
                                   f"{sec.size}-byte section {sec.name} in whole instructions")
                start = sym.value // 8
                end = start + (sym.size // 8 if sym.size else (sec.size - sym.value) // 8)
                if sym.name in self.programs:
                    raise LoaderError(f"two programs are named {sym.name!r}")
                auto = autoload_of(sec.name)
                self.programs[sym.name] = ProgramSpec(sym.name, sec.name, sec.index, start, end, kind, auto)
                explain.trace("prog", f"program {sym.name} in SEC(\"{sec.name}\"): "
                              f"{end - start} instructions, type {kind.prog_type_name if kind else 'unknown'}"
                              + (f", expected attach type {attach_type_name(kind.expected_attach_type)}"
                                 if kind and kind.expected_attach_type else "")
                              + (f", flags {'|'.join(flag_names(kind.prog_flags))}" if kind and kind.prog_flags else "")
                              + ("" if auto else " (off by default: '?' section, load it with --program)"))

    def _struct_ops_autoload(self):
        """A struct_ops program no ``.struct_ops`` map uses is not loaded (as
        libbpf): the kernel could not tell which member it implements."""
        used = {p for m in self.maps.values() if m.struct_ops for p in m.struct_ops.funcs.values()}
        for p in self.programs.values():
            if p.program_kind is not None and p.program_kind.prog_type == PROG_TYPES["struct_ops"] and p.name not in used:
                p.autoload = False

    # -- externs -----------------------------------------------------------
    def _collect_externs(self):
        if self.btf is None:
            return
        weak = {s.name for s in self.elf.symbols if s.shndx == 0 and s.bind == "WEAK"}
        for sec_name in (".kconfig", ".ksyms"):
            ids = self.btf.find(sec_name, kind=KIND_DATASEC)
            if not ids:
                continue
            for var_id, _off, _size in self.btf.type(ids[0]).vars:
                var = self.btf.type(var_id)
                if sec_name == ".kconfig":
                    from ebpf_energy.loader.externs import KconfigVar  # objects without __kconfig never need it

                    size = self.btf.size_of(var.type)
                    self.kconfig.append(KconfigVar(var.name, var.type, size, var.name in weak))
                else:
                    self.ksyms[var.name] = var_id
        self.weak_ksyms = frozenset(n for n in self.ksyms if n in weak)
        offset = 0
        for v in self.kconfig:
            align = min(8, v.size) if v.size in (1, 2, 4, 8) else 1
            offset = (offset + align - 1) // align * align
            v.offset = offset
            offset += v.size
        if self.kconfig:
            self.maps[".kconfig"] = MapSpec(
                name=".kconfig", type=ARRAY, key_size=4, value_size=max(offset, 1), max_entries=1,
                flags=BPF_F_RDONLY_PROG | BPF_F_MMAPABLE, origin="kconfig", initial=bytearray(max(offset, 1)),
                readonly=True)

    def symbol_kind(self, sym):
        """Classify an ld_imm64 target for the linker: (kind, target, base offset)."""
        if sym.shndx == 0:
            return "extern", sym.name, 0
        sec = self.elf.section_by_index(sym.shndx)
        if sec is None:
            return None, None, 0
        if sec.name == ".maps":
            for m in self.maps.values():
                if m.origin == "btf" and m.offset == sym.value and (sym.type == "SECTION" or m.name == sym.name):
                    return "map", m.name, 0
            return None, None, 0
        if sec.name in self.maps and self.maps[sec.name].origin == "data":
            return "data", sec.name, sym.value
        return None, None, 0


def _map_spec(d) -> MapSpec:
    return MapSpec(name=d.name, type=d.type, key_size=d.key_size, value_size=d.value_size,
                   max_entries=d.max_entries, flags=d.map_flags, numa_node=d.numa_node, pinning=d.pinning,
                   key_type_id=d.key_type_id, value_type_id=d.value_type_id, offset=d.offset,
                   map_extra=d.map_extra, inner=_map_spec(d.inner) if d.inner else None, slots=d.slots)


def kernel_map_name(object_name: str, map_name: str) -> str:
    """The (at most 15 characters, [A-Za-z0-9_.]) name the kernel stores."""
    if map_name.startswith("."):
        name = object_name[: KERNEL_NAME_MAX - len(map_name)] + map_name
    else:
        name = map_name
    return "".join(c if c.isalnum() or c in "_." else "_" for c in name)[:KERNEL_NAME_MAX]


def _fixup_datasecs(elf, btf):
    sizes = {s.name: s.size for s in elf.sections if s.name}
    offsets = {}
    for sym in elf.symbols:
        if sym.type == "OBJECT" and sym.shndx not in (0, 0xFFF1, 0xFFF2) and sym.shndx < 0xFF00:
            sec = elf.section_by_index(sym.shndx)
            if sec is not None:  # a list: statically linked units may each have a `static x`
                offsets.setdefault((sec.name, sym.name), []).append(sym.value)
    btf.fixup_datasecs(sizes, offsets)
