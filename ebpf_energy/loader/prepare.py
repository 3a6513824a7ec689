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

from __future__ import annotations

import struct
from collections.abc import Iterable

from ebpf_energy.loader import btf_sanitize, explain
from ebpf_energy.loader.bpffs import BPFFS_PATH
from ebpf_energy.loader import insn as I
from ebpf_energy.loader.btf import KIND_FUNC, KIND_NAMES, KIND_VAR
from ebpf_energy.loader.errors import LoaderError
from ebpf_energy.loader.linker import LinkedProgram, Linker
from ebpf_energy.loader.program import rebased_info
from ebpf_energy.loader.record import field, record, replace, tuple_record
from ebpf_energy.loader.sections import PROG_TYPES, attach_type_name, flag_names
from ebpf_energy.loader.spec import MAP_TYPES, ObjectSpec, kernel_map_name

# TASK_STORAGE, STRUCT_OPS: these maps need the object's BTF, so a refused BTF fails the load
from ebpf_energy.loader.map_types import NO_BTF_KV, PERF_EVENT_ARRAY, RINGBUF, STRUCT_OPS, TASK_STORAGE, \
    USER_RINGBUF
STRUCT_OPS_PROG = PROG_TYPES["struct_ops"]
PIN_BY_NAME = 1  # LIBBPF_PIN_BY_NAME: libbpf's convention in .maps, not a kernel number
PIN_ROOT = BPFFS_PATH


@record(frozen=True)
class PreparedMap:
    """A map exactly as BPF_MAP_CREATE will be asked for it."""

    name: str
    kernel_name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    numa_node: int | None
    btf_key_type_id: int  # 0 when the kernel takes no BTF for this map type
    btf_value_type_id: int
    origin: str  # btf, data, kconfig or struct_ops (spec.MapSpec.origin)
    initial: bytes | None  # written at index 0 after creation
    freeze: bool  # BPF_MAP_FREEZE after the write (.rodata, .kconfig)
    pin_path: str | None  # LIBBPF_PIN_BY_NAME: reuse or pin here
    notes: tuple[str, ...] = ()
    map_extra: int = 0
    inner: "PreparedMap" | None = None  # maps of maps: the template the kernel checks every inner map against
    slots: tuple[tuple[int, str], ...] = ()  # initial (index, map or program) written after creation / load
    struct_ops: object | None = None  # origin "struct_ops": a struct_ops.PreparedStructOps

    @property
    def type_name(self):
        return MAP_TYPES.get(self.type, str(self.type))


@tuple_record
class MapSlot:
    """A ld_imm64 that needs a map's fd: ``value`` for a pointer into the map's
    value (global data, ``.kconfig``) at ``offset``, else the map itself."""

    insn: int
    map: str
    value: bool = False
    offset: int = 0


@tuple_record
class AddressSlot:
    """A ld_imm64 of an untyped ``__ksym`` address the target could not give
    (another machine's BTF, or /proc/kallsyms hidden): filled at load (0 for
    a ``__weak`` one the kernel lacks)."""

    insn: int
    symbol: str
    weak: bool = False


@tuple_record
class MissingKfunc:
    """A ``__weak`` kfunc the target lacks: its calls are poisoned (an
    unknown helper, :data:`KFUNC_POISON`) and ``bpf_ksym_exists()`` of it is 0,
    so the verifier, seeing the guard false, never reaches the calls."""

    insn: int
    symbol: str


KFUNC_POISON = 2002000000  # the helper number libbpf poisons missing kfunc calls with


@tuple_record
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


@record
class PreparedProgram:
    """One program as BPF_PROG_LOAD will get it."""

    name: str
    section: str
    prog_type: int
    prog_type_name: str
    expected_attach_type: int
    prog_flags: int  # BPF_F_SLEEPABLE (.s/ sections), BPF_F_XDP_HAS_FRAGS (xdp.frags)
    attach_btf_id: int
    attach_target: str  # what the kernel id names ("btf_trace_sched_switch"), or ""
    license: str
    insns: bytes  # final, but for the fds of map_slots (0 there)
    map_slots: list[MapSlot]
    address_slots: list[AddressSlot]
    func_info: list[tuple[int, int]]  # (insn, BTF type id)
    line_info: list  # (insn, LineInfo record), sorted
    relocations: list[str]  # one line per call edit and ld_imm64 fixup, for --dry-run/--explain
    core: list[CoreRecord]
    layout: LinkedProgram = field(repr=False)  # functions placed (for source lines and poison names)
    poisoned: list[tuple[int, int, object]] = field(default_factory=list, repr=False)  # (shndx, insn, result)
    missing_kfuncs: list[MissingKfunc] = field(default_factory=list)

    @property
    def insn_count(self):
        return len(self.insns) // I.INSN_SIZE

    def disassembly(self):
        """``(index, text)`` per instruction, maps named where their fds will go."""
        names = {s.insn: (f"map_value({s.map}) + {s.offset}" if s.value else f"map {s.map}")
                 for s in self.map_slots}
        names.update({s.insn: f"address of {s.symbol} (filled at load)" for s in self.address_slots})
        names.update({i: f"callback {callee} (pc{imm:+d})" for i, callee, imm in self.layout.call_edits
                      if I.opcode(self.insns, i) == I.LD_IMM64})
        names.update({m.insn: f"0 (weak kfunc {m.symbol} is not in this kernel)" for m in self.missing_kfuncs
                      if I.opcode(self.insns, m.insn) == I.LD_IMM64})
        return I.disassemble(self.insns, names)


@record
class Prepared:
    """Everything ``Collection.load`` needs; printable (``load --dry-run``)."""

    spec: ObjectSpec
    target: str  # which kernel it was prepared for
    btf: bytes | None  # the object's BTF as the kernel accepts it (sanitised)
    needs_btf: bool  # the load must fail if the kernel refuses that BTF (task storage maps)
    maps: dict[str, PreparedMap]
    programs: dict[str, PreparedProgram]

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
                      "freeze": m.freeze, "pin_path": m.pin_path, "notes": list(m.notes),
                      "map_extra": m.map_extra,
                      "inner": {"type": m.inner.type_name, "key_size": m.inner.key_size,
                                "value_size": m.inner.value_size, "max_entries": m.inner.max_entries,
                                "flags": m.inner.flags} if m.inner else None,
                      "slots": [{"index": i, "target": t} for i, t in m.slots]}
                     for m in self.maps.values()],
            "programs": [{"name": p.name, "section": p.section, "type": p.prog_type_name,
                          "expected_attach_type": p.expected_attach_type,
                          "expected_attach_type_name": (f"member {p.expected_attach_type}" if p.prog_type == STRUCT_OPS_PROG
                                                        else attach_type_name(p.expected_attach_type)),
                          "prog_flags": flag_names(p.prog_flags), "attach_btf_id": p.attach_btf_id,
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


def prepare(spec: ObjectSpec, target, only: Iterable[str] | None = None) -> Prepared:
    """Finish every program of ``spec`` that loads (``only`` these, or those
    with ``autoload``) for ``target``. Raises LoaderError naming the program,
    map or extern that cannot be finished."""
    wanted = _wanted(spec, only)
    ops_programs = {}
    maps = {}
    for name, m in spec.maps.items():
        maps[name] = _prepare_map(spec, m, target)
        if m.origin == "struct_ops":
            from ebpf_energy.loader import struct_ops  # only objects with struct_ops maps import it

            value, ops, progs = struct_ops.prepare(name, m.struct_ops, bytes(m.initial), spec.btf, target.btf)
            maps[name] = replace(maps[name], value_size=len(value), initial=value, struct_ops=ops,
                                             notes=tuple(f"byte {off}: the fd of program {p} (written when registered)"
                                                         for off, p in ops.fd_slots))
            ops_programs.update(progs)
    _check_slots(spec)
    programs = {}
    if wanted:
        poisoned: dict[int, list] = {}
        code, records = _core_sections(spec, target, poisoned)
        linker = Linker(spec.elf, code, spec.symbol_kind)
        for p in wanted:
            programs[p.name] = _prepare_program(spec, p, linker, target, records, poisoned, ops_programs)
    hidden = {s.name for s in spec.elf.symbols if s.hidden and s.type == "FUNC"}
    btf = btf_sanitize.for_kernel(spec.btf, hidden) if spec.btf is not None else None
    return Prepared(spec=spec, target=target.description, btf=btf,
                    needs_btf=any(m.type in (TASK_STORAGE, STRUCT_OPS) for m in spec.maps.values()),
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
    if m.origin == "kconfig":
        from ebpf_energy.loader.externs import kconfig_value

        buf = bytearray(m.initial)
        for v in spec.kconfig:
            data = kconfig_value(v, target.kconfig, spec.btf.codec(v.type_id), target.kernel_version, target)
            buf[v.offset: v.offset + len(data)] = data
            notes.append(f"{v.name} = {data.hex()} at offset {v.offset}")
        initial = bytes(buf)
    btf_kv = bool(spec.btf is not None and (m.key_type_id or m.value_type_id) and m.type not in NO_BTF_KV)
    if not btf_kv and spec.btf is not None and (m.key_type_id or m.value_type_id):
        notes.append(f"no BTF key/value ids: the kernel takes none for {m.type_name} maps")
    inner = _prepare_map(spec, m.inner, target) if m.inner is not None else None
    for index, name in m.slots:
        notes.append(f"slot {index} = {name} (" + ("its fd written once the maps exist)" if name in spec.maps
                                                  else "its fd written once the programs are loaded)"))
    for note in notes:
        explain.trace("map", f"{m.name}: {note}")
    return PreparedMap(
        name=m.name, kernel_name=kernel_map_name(spec.name, m.name), type=m.type, key_size=m.key_size,
        value_size=m.value_size, max_entries=max_entries, flags=m.flags, numa_node=m.numa_node,
        btf_key_type_id=m.key_type_id if btf_kv else 0, btf_value_type_id=m.value_type_id if btf_kv else 0,
        origin=m.origin, initial=initial, freeze=bool(initial is not None and m.readonly),
        pin_path=f"{PIN_ROOT}/{m.name}" if m.pinning == PIN_BY_NAME else None, notes=tuple(notes),
        map_extra=m.map_extra, inner=inner, slots=tuple(m.slots))


def _check_slots(spec):
    for m in spec.maps.values():
        for index, name in m.slots:
            if m.inner is not None and name not in spec.maps:
                raise LoaderError(f"map {m.name}: slot {index} names {name!r}, which is not a map of this object")
            if m.inner is None and name not in spec.programs:
                raise LoaderError(f"map {m.name}: slot {index} names {name!r}, which is not a program of this object")


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
        relos = ext.core_relos.get(sec.name, []) if ext is not None else []
        if relos:
            from ebpf_energy.loader import core  # an object without CO-RE records never imports it
        for relo in relos:
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

def _prepare_program(spec, p, linker, target, core_records, poisoned, ops_programs) -> PreparedProgram:
    kind = p.program_kind
    if kind is None:
        raise LoaderError(f"program {p.name}: section {p.section!r} does not say what kind of program it is "
                          "(expected tp/, raw_tp/, tp_btf/, fentry/, ...)")
    linked = linker.link(p.shndx, p.name, p.start, p.end)
    code = linked.insns
    relocations = [f"insn {i}: " + ("callback" if I.opcode(code, i) == I.LD_IMM64 else "call")
                   + f" {callee} -> pc{imm:+d}" for i, callee, imm in linked.call_edits]
    map_slots, address_slots, missing = [], [], []
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
        elif isinstance(slot, MissingKfunc):
            missing.append(slot)
            after = (f"call {KFUNC_POISON} (POISONED: weak kfunc {slot.symbol} is not in this kernel)" if fx.call
                     else f"r{I.dst_reg(code, fx.insn_index)} = 0 (weak kfunc {slot.symbol} is not in this kernel)")
        else:
            after = I.describe(code, fx.insn_index)
        relocations.append(f"insn {fx.insn_index}: {fx.target_kind} {fx.symbol or fx.target}: {before}  ->  {after}")
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
    expected_attach_type = kind.expected_attach_type
    if kind.prog_type == STRUCT_OPS_PROG:
        if p.name not in ops_programs:
            raise LoaderError(f"program {p.name}: no .struct_ops map uses it, so the kernel cannot tell which "
                              "struct member it implements")
        attach_btf_id, expected_attach_type = ops_programs[p.name]
        attach_target = target.btf.type(attach_btf_id).name
    funcs, lines = rebased_info(linked, spec.ext)
    placed = {f.shndx for f in linked.functions}
    records = [r for sh in sorted(placed) for r in core_records.get(sh, [])
               if any(f.shndx == sh and f.start <= r.insn < f.end for f in linked.functions)]
    mine = [(sh, idx, res) for sh in placed for idx, res in poisoned.get(sh, [])]
    return PreparedProgram(
        name=p.name, section=p.section, prog_type=kind.prog_type, prog_type_name=kind.prog_type_name,
        expected_attach_type=expected_attach_type, prog_flags=kind.prog_flags, attach_btf_id=attach_btf_id, attach_target=attach_target,
        license=spec.elf.license, insns=bytes(code), map_slots=map_slots, address_slots=address_slots,
        func_info=funcs, line_info=lines, relocations=relocations, core=records, layout=linked, poisoned=mine,
        missing_kfuncs=missing)


def _resolve_fixup(spec, fx, target):
    """(src_reg, imm, next imm, slot) for one ld_imm64 or kfunc call."""
    if fx.target_kind == "map":
        return I.PSEUDO_MAP_FD, 0, 0, MapSlot(fx.insn_index, fx.target)
    if fx.target_kind == "data":
        return I.PSEUDO_MAP_VALUE, 0, fx.offset, MapSlot(fx.insn_index, fx.target, True, fx.offset)
    name = fx.target
    for v in spec.kconfig:
        if v.name == name:
            return I.PSEUDO_MAP_VALUE, 0, v.offset, MapSlot(fx.insn_index, ".kconfig", True, v.offset)
    if name in spec.ksyms:
        btf = spec.btf
        local = btf.type(spec.ksyms[name])
        weak = name in spec.weak_ksyms
        if fx.call or local.kind_name == "func":
            ids = target.btf.find(name, kind=KIND_FUNC)
            if not ids:
                if not weak:
                    raise LoaderError(f"kfunc {name} __ksym: not in the kernel's BTF (declare it __weak and "
                                      "guard its calls with bpf_ksym_exists() to run without it)")
                if fx.call:  # only wrong if the verifier reaches it: bpf_ksym_exists() guards it
                    return 0, KFUNC_POISON, 0, MissingKfunc(fx.insn_index, name)
                return 0, 0, 0, MissingKfunc(fx.insn_index, name)  # bpf_ksym_exists(): false
            if fx.call:
                return I.PSEUDO_KFUNC_CALL, ids[0], 0, None
            return I.PSEUDO_BTF_ID, ids[0], 0, None  # bpf_ksym_exists(kfunc): the verifier wants its id
        if btf.skip_modifiers(local.type) == 0:  # `extern [const] void x __ksym`: an address
            try:
                addr = target.kallsyms(name) if target.kallsyms is not None else None
            except LoaderError:
                if not weak:
                    raise
                addr = 0  # a __weak address the kernel lacks reads as NULL
            if addr is None:
                return 0, 0, 0, AddressSlot(fx.insn_index, name, weak)
            lo, hi = split_address(addr)
            return 0, lo, hi, None
        ids = target.btf.find(name, kind=KIND_VAR)
        if not ids:
            if weak:
                return 0, 0, 0, None  # a missing __weak variable reads as NULL
            raise LoaderError(f"extern {name} __ksym: the kernel's BTF has no variable of that name")
        return I.PSEUDO_BTF_ID, ids[0], 0, None
    raise LoaderError(f"extern {name!r} is neither __kconfig nor __ksym")


def split_address(addr: int) -> tuple[int, int]:
    """A 64-bit address as the two signed 32-bit immediates of a ld_imm64."""
    lo, hi = addr & 0xFFFFFFFF, (addr >> 32) & 0xFFFFFFFF
    return struct.unpack("<ii", struct.pack("<II", lo, hi))
