"""Phase 2 of a load: a spec and a target kernel in, finished programs out. Pure.

``prepare(spec, target)`` does everything a loader does before its first
``bpf()`` call, and nothing after: CO-RE relocations against the target's
BTF, BPF-to-BPF linking, externs (``__kconfig`` values, ``__ksym`` BTF ids
and kfuncs), the attach target's BTF id, func/line info rebased to each
linked program, and every map's final attributes (ring buffers rounded up,
perf event arrays sized to the CPUs, the ``.kconfig`` map filled). The only
thing missing from a :class:`PreparedProgram`'s instructions is the map fds:
each ld_imm64 that names a map is listed in ``map_slots`` and holds 0 until
:class:`~ebpf_energy.loader.collection.Collection` writes the fd in.

It reads the kernel only through a :class:`~ebpf_energy.loader.target.Target`
and never changes the spec, so it runs without root, against another
kernel's BTF, and twice with the same result (``load --dry-run``).
"""

import struct
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from ebpf_energy.loader import btf_sanitize, core, explain
from ebpf_energy.loader import insn as I
from ebpf_energy.loader.btf import KIND_FUNC, KIND_NAMES, KIND_VAR
from ebpf_energy.loader.errors import LoaderError
from ebpf_energy.loader.externs import kconfig_value
from ebpf_energy.loader.linker import LinkedProgram, Linker
from ebpf_energy.loader.program import rebased_info
from ebpf_energy.loader.spec import MAP_TYPES, ObjectSpec, kernel_map_name

PERF_EVENT_ARRAY = 4
RINGBUF = 27
USER_RINGBUF = 31
TASK_STORAGE = 29  # its maps need the object's BTF: a refused BTF fails the load
# Map types whose key/value the kernel does not describe with BTF (fds, ids,
# stack traces): it refuses BTF ids for them, so libbpf leaves them out too.
NO_BTF_KV = frozenset({3, 4, 7, 8, 12, 13, 27, 31})
PIN_BY_NAME = 1
PIN_ROOT = "/sys/fs/bpf"


@dataclass(frozen=True)
class PreparedMap:
    """A map exactly as BPF_MAP_CREATE will be asked for it."""

    name: str
    kernel_name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    numa_node: Optional[int]
    btf_key_type_id: int  # 0 when the kernel takes no BTF for this map type
    btf_value_type_id: int
    kind: str  # btf, data or kconfig (spec.MapSpec.kind)
    initial: Optional[bytes]  # written at index 0 after creation
    freeze: bool  # BPF_MAP_FREEZE after the write (.rodata, .kconfig)
    pin_path: Optional[str]  # LIBBPF_PIN_BY_NAME: reuse or pin here
    notes: Tuple[str, ...] = ()

    @property
    def type_name(self):
        return MAP_TYPES.get(self.type, str(self.type))


@dataclass(frozen=True)
class MapSlot:
    """A ld_imm64 that needs a map's fd: ``value`` for a pointer into the map's
    value (global data, ``.kconfig``) at ``offset``, else the map itself."""

    insn: int
    map: str
    value: bool = False
    offset: int = 0


@dataclass(frozen=True)
class AddressSlot:
    """A ld_imm64 of an untyped ``__ksym`` address the target could not give
    (another machine's BTF, or /proc/kallsyms hidden): filled at load."""

    insn: int
    symbol: str


@dataclass(frozen=True)
class CoreRecord:
    """One CO-RE relocation as applied: what the object asked, what the target answered."""

    section: str
    insn: int
    kind: str
    local: str
    outcome: str  # "struct task_struct.tgid = 2504", or "POISONED (reason)"
    before: str
    after: str
    poisoned: bool


@dataclass
class PreparedProgram:
    name: str
    section: str
    prog_type: int
    prog_type_name: str
    expected_attach_type: int
    attach_btf_id: int
    attach_target: str  # what the kernel id names ("btf_trace_sched_switch"), or ""
    license: str
    insns: bytes  # final, but for the fds of map_slots (0 there)
    map_slots: List[MapSlot]
    address_slots: List[AddressSlot]
    func_info: List[Tuple[int, int]]  # (insn, BTF type id)
    line_info: list  # (insn, LineInfo record), sorted
    relocations: List[str]  # one line per call edit and ld_imm64 fixup, for --dry-run/--explain
    core: List[CoreRecord]
    linked: LinkedProgram = field(repr=False)  # functions placed (for source lines and poison names)
    poisoned: List[Tuple[int, int, object]] = field(default_factory=list, repr=False)  # (shndx, insn, result)

    @property
    def insn_count(self):
        return len(self.insns) // I.INSN_SIZE

    def disassembly(self):
        """``(index, text)`` per instruction, maps named where their fds will go."""
        names = {s.insn: (f"map_value({s.map}) + {s.offset}" if s.value else f"map {s.map}")
                 for s in self.map_slots}
        names.update({s.insn: f"address of {s.symbol} (filled at load)" for s in self.address_slots})
        return I.disassemble(self.insns, names)


@dataclass
class Prepared:
    """Everything ``Collection.load`` needs; printable (``load --dry-run``)."""

    spec: ObjectSpec
    target: str  # which kernel it was prepared for
    btf: Optional[bytes]  # the object's BTF as the kernel accepts it (sanitised)
    needs_btf: bool  # the load must fail if the kernel refuses that BTF (task storage maps)
    maps: Dict[str, PreparedMap]
    programs: Dict[str, PreparedProgram]

    def to_dict(self) -> dict:
        """The finished object as JSON (``load --dry-run --json``; the golden test)."""
        return {
            "schema": 1, "object": self.spec.path, "target": self.target,
            "btf_bytes": len(self.btf) if self.btf is not None else None,
            "maps": [{"name": m.name, "kernel_name": m.kernel_name, "type": m.type_name,
                      "key_size": m.key_size, "value_size": m.value_size, "max_entries": m.max_entries,
                      "flags": m.flags, "btf_key_type_id": m.btf_key_type_id,
                      "btf_value_type_id": m.btf_value_type_id,
                      "initial_bytes": len(m.initial) if m.initial is not None else None,
                      "initial_hex": m.initial.hex() if m.initial is not None and len(m.initial) <= 4096 else None,
                      "freeze": m.freeze, "pin_path": m.pin_path, "notes": list(m.notes)}
                     for m in self.maps.values()],
            "programs": [{"name": p.name, "section": p.section, "type": p.prog_type_name,
                          "expected_attach_type": p.expected_attach_type, "attach_btf_id": p.attach_btf_id,
                          "attach_target": p.attach_target, "license": p.license,
                          "instructions": [f"{i}: {t}" for i, t in p.disassembly()],
                          "map_slots": [{"insn": s.insn, "map": s.map, "value": s.value, "offset": s.offset}
                                        for s in p.map_slots],
                          "address_slots": [{"insn": s.insn, "symbol": s.symbol} for s in p.address_slots],
                          "relocations": list(p.relocations),
                          "core": [{"section": c.section, "insn": c.insn, "kind": c.kind, "local": c.local,
                                    "outcome": c.outcome, "before": c.before, "after": c.after}
                                   for c in p.core],
                          "func_info": [list(f) for f in p.func_info],
                          "line_info": [{"insn": i, "line": r.line, "col": r.col, "source": (r.source or "").strip()}
                                        for i, r in p.line_info]}
                         for p in self.programs.values()],
        }


def prepare(spec: ObjectSpec, target, only: Optional[Iterable[str]] = None) -> Prepared:
    """Finish every program of ``spec`` that loads (``only`` these, or those
    with ``autoload``) for ``target``. Raises LoaderError naming the program,
    map or extern that cannot be finished."""
    wanted = _wanted(spec, only)
    maps = {name: _prepare_map(spec, m, target) for name, m in spec.maps.items()}
    programs = {}
    if wanted:
        poisoned: Dict[int, list] = {}
        code, records = _core_sections(spec, target, poisoned)
        linker = Linker(spec.elf, code, spec.symbol_kind)
        for p in wanted:
            programs[p.name] = _prepare_program(spec, p, linker, target, records, poisoned)
    hidden = {s.name for s in spec.elf.symbols if s.hidden and s.type == "FUNC"}
    btf = btf_sanitize.for_kernel(spec.btf, hidden) if spec.btf is not None else None
    return Prepared(spec=spec, target=target.description, btf=btf,
                    needs_btf=any(m.type == TASK_STORAGE for m in spec.maps.values()),
                    maps=maps, programs=programs)


def _wanted(spec, only):
    if only is None:
        return [p for p in spec.programs.values() if p.autoload]
    only = list(only)
    unknown = [n for n in only if n not in spec.programs]
    if unknown:
        raise LoaderError(f"no program named {', '.join(unknown)} in {spec.path} "
                          f"(programs: {', '.join(spec.programs)})")
    return [spec.programs[n] for n in only]


# -- maps ------------------------------------------------------------------------

def _prepare_map(spec, m, target) -> PreparedMap:
    notes = []
    max_entries = m.max_entries
    if m.type == PERF_EVENT_ARRAY and max_entries == 0:
        max_entries = target.possible_cpus
        notes.append(f"max_entries 0 means one slot per possible CPU: {max_entries}")
    if m.type in (RINGBUF, USER_RINGBUF):
        rounded = ringbuf_size(max_entries, target.page_size)
        if rounded != max_entries:
            notes.append(f"ring buffer size {max_entries} rounded up to {rounded} "
                         f"(a power-of-two multiple of the {target.page_size}-byte page)")
            max_entries = rounded
    initial = bytes(m.initial) if m.initial is not None else None
    if m.kind == "kconfig":
        buf = bytearray(m.initial)
        for v in spec.kconfig:
            data = kconfig_value(v, target.kconfig, spec.btf.codec(v.type_id), target.kernel_version)
            buf[v.offset: v.offset + len(data)] = data
            notes.append(f"{v.name} = {data.hex()} at offset {v.offset}")
        initial = bytes(buf)
    btf_kv = bool(spec.btf is not None and (m.key_type_id or m.value_type_id) and m.type not in NO_BTF_KV)
    for note in notes:
        explain.trace("map", f"{m.name}: {note}")
    return PreparedMap(
        name=m.name, kernel_name=kernel_map_name(spec.name, m.name), type=m.type, key_size=m.key_size,
        value_size=m.value_size, max_entries=max_entries, flags=m.flags, numa_node=m.numa_node,
        btf_key_type_id=m.key_type_id if btf_kv else 0, btf_value_type_id=m.value_type_id if btf_kv else 0,
        kind=m.kind, initial=initial, freeze=bool(initial is not None and m.readonly),
        pin_path=f"{PIN_ROOT}/{m.name}" if m.pinning == PIN_BY_NAME else None, notes=tuple(notes))


def ringbuf_size(size: int, page: int) -> int:
    """A ring buffer's size as the kernel takes it: a power-of-two multiple of
    the page size, rounded up as libbpf does."""
    want = max(size, page)
    return 1 << (want - 1).bit_length()


# -- CO-RE -------------------------------------------------------------------------

def _core_sections(spec, target, poisoned):
    """Per code section: a CO-RE-patched copy of its instructions, and the records."""
    code, records = {}, {}
    ext = spec.ext
    for sec in spec.elf.program_sections():
        buf = bytearray(sec.data)
        out = records[sec.index] = []
        for relo in (ext.core_relos.get(sec.name, []) if ext is not None else []):
            idx = relo.insn_off_bytes // 8
            result = core.resolve(relo, spec.btf, target.btf)
            before, after = core.patch(buf, idx, result)
            if result.poison:
                poisoned.setdefault(sec.index, []).append((idx, result))
            outcome = (f"POISONED ({result.reason})" if result.poison
                       else f"{result.target_desc} = {result.new_val}")
            out.append(CoreRecord(sec.name, idx, result.kind_name, result.local_desc, outcome, before, after,
                                  bool(result.poison)))
            explain.trace("core", f"{sec.name} insn {idx}: {result.kind_name} {result.local_desc} -> {outcome}",
                          f"{before}  ->  {after}")
        code[sec.index] = buf
    return code, records


# -- programs ------------------------------------------------------------------------

def _prepare_program(spec, p, linker, target, core_records, poisoned) -> PreparedProgram:
    kind = p.kind
    if kind is None:
        raise LoaderError(f"program {p.name}: section {p.section!r} does not say what kind of program it is "
                          "(expected tp/, raw_tp/, tp_btf/, fentry/, ...)")
    linked = linker.link(p.shndx, p.name, p.start, p.end)
    code = linked.insns
    relocations = [f"insn {i}: call {callee} -> pc{imm:+d}" for i, callee, imm in linked.call_edits]
    map_slots, address_slots = [], []
    for fx in linked.fixups:
        before = I.describe(code, fx.insn_index)
        src, lo, hi, slot = _resolve_fixup(spec, fx, target)
        I.set_src_reg(code, fx.insn_index, src)
        I.set_imm(code, fx.insn_index, lo)
        if not fx.call:
            I.set_imm(code, fx.insn_index + 1, hi)
        if isinstance(slot, MapSlot):
            map_slots.append(slot)
            after = f"r{I.dst_reg(code, fx.insn_index)} = " + (
                f"map_value({slot.map}) + {slot.offset}" if slot.value else f"map {slot.map}") + " (fd at load)"
        elif isinstance(slot, AddressSlot):
            address_slots.append(slot)
            after = f"address of {slot.symbol} (filled at load)"
        else:
            after = I.describe(code, fx.insn_index)
        relocations.append(f"insn {fx.insn_index}: {fx.kind} {fx.symbol or fx.target}: {before}  ->  {after}")
    if relocations:
        explain.trace("reloc", f"{p.name}: {len(linked.call_edits)} calls linked, "
                               f"{len(linked.fixups)} ld_imm64 relocations", *relocations)
    attach_btf_id, attach_target = 0, ""
    if kind.btf_target:
        ids = target.btf.find(kind.btf_target, kind=KIND_NAMES.index(kind.btf_target_kind))
        if not ids:
            raise LoaderError(f"program {p.name}: the kernel has no {kind.btf_target_kind} "
                              f"{kind.btf_target!r} to attach {p.section} to")
        attach_btf_id, attach_target = ids[0], kind.btf_target
        explain.trace("prog", f"{p.name}: attach target {kind.btf_target} is kernel BTF id {attach_btf_id}")
    funcs, lines = rebased_info(linked, spec.ext)
    placed = {f.shndx for f in linked.functions}
    records = [r for sh in sorted(placed) for r in core_records.get(sh, [])
               if any(f.shndx == sh and f.start <= r.insn < f.end for f in linked.functions)]
    mine = [(sh, idx, res) for sh in placed for idx, res in poisoned.get(sh, [])]
    return PreparedProgram(
        name=p.name, section=p.section, prog_type=kind.prog_type, prog_type_name=kind.prog_type_name,
        expected_attach_type=kind.expected_attach_type, attach_btf_id=attach_btf_id, attach_target=attach_target,
        license=spec.elf.license, insns=bytes(code), map_slots=map_slots, address_slots=address_slots,
        func_info=funcs, line_info=lines, relocations=relocations, core=records, linked=linked, poisoned=mine)


def _resolve_fixup(spec, fx, target):
    """(src_reg, imm, next imm, slot) for one ld_imm64 or kfunc call."""
    if fx.kind == "map":
        return I.PSEUDO_MAP_FD, 0, 0, MapSlot(fx.insn_index, fx.target)
    if fx.kind == "data":
        return I.PSEUDO_MAP_VALUE, 0, fx.offset, MapSlot(fx.insn_index, fx.target, True, fx.offset)
    name = fx.target
    for v in spec.kconfig:
        if v.name == name:
            return I.PSEUDO_MAP_VALUE, 0, v.offset, MapSlot(fx.insn_index, ".kconfig", True, v.offset)
    if name in spec.ksyms:
        btf = spec.btf
        local = btf.type(spec.ksyms[name])
        if fx.call or local.kind_name == "func":
            ids = target.btf.find(name, kind=KIND_FUNC)
            if not ids:
                raise LoaderError(f"kfunc {name} __ksym: not in the kernel's BTF")
            return I.PSEUDO_KFUNC_CALL, ids[0], 0, None
        if btf.resolve(local.type) == 0:  # `extern const void x __ksym`: an address
            addr = target.kallsyms(name) if target.kallsyms is not None else None
            if addr is None:
                return 0, 0, 0, AddressSlot(fx.insn_index, name)
            lo, hi = split_address(addr)
            return 0, lo, hi, None
        ids = target.btf.find(name, kind=KIND_VAR)
        if not ids:
            raise LoaderError(f"extern {name} __ksym: the kernel's BTF has no variable of that name")
        return I.PSEUDO_BTF_ID, ids[0], 0, None
    raise LoaderError(f"extern {name!r} is neither __kconfig nor __ksym")


def split_address(addr: int) -> Tuple[int, int]:
    """A 64-bit address as the two signed 32-bit immediates of a ld_imm64."""
    lo, hi = addr & 0xFFFFFFFF, (addr >> 32) & 0xFFFFFFFF
    return struct.unpack("<ii", struct.pack("<II", lo, hi))
