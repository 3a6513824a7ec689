"""struct_ops: a kernel ``struct`` of function pointers filled with BPF programs.

An object declares ``SEC(".struct_ops") struct tcp_congestion_ops cc = {
.ssthresh = (void *)prog, .name = "cc" }``: the section holds the struct's
bytes, and a relocation at each function pointer names its program. The
kernel wants something else, so this module translates, in three steps:

* :func:`parse` (spec, pure): each variable of ``.struct_ops`` /
  ``.struct_ops.link``, its bytes and which program fills which member.
* :func:`prepare` (pure, against the target's BTF): the value the kernel
  takes, ``struct bpf_struct_ops_<type>`` (a common header, then the kernel's
  own layout of the struct in ``data``), with the object's scalar members
  copied by name; the byte offsets where program fds go; and for each program
  its ``attach_btf_id`` (the kernel struct) and ``expected_attach_type`` (the
  member's index), which BPF_PROG_LOAD checks.
* :func:`register` (kernel): fds written in, then BPF_LINK_CREATE registers
  it, so closing the link (or the process dying) unregisters it. The maps
  are made with ``BPF_F_LINK`` for that, from ``.struct_ops`` too; only on a
  kernel without struct_ops links does a plain ``.struct_ops`` map register
  by its BPF_MAP_UPDATE_ELEM and stay registered until its entry is deleted
  (:class:`Registration` does that on close).
"""

from dataclasses import dataclass, field
from typing import Dict, Tuple

from ebpf_energy.loader import explain, syscall, uapi
from ebpf_energy.loader.btf import KIND_FUNC_PROTO, KIND_PTR, KIND_STRUCT
from ebpf_energy.loader.errors import LoaderError
from ebpf_energy.loader.map_types import STRUCT_OPS_SECTIONS as SECTIONS

BPF_F_LINK = uapi.BPF_F_LINK
BPF_STRUCT_OPS = uapi.BPF_STRUCT_OPS


@dataclass
class StructOps:
    """One ``.struct_ops`` variable as the object declares it."""

    type_name: str  # "tcp_congestion_ops"
    type_id: int  # its id in the object's BTF
    link: bool  # from .struct_ops.link: registered through a BPF link
    funcs: Dict[str, str] = field(default_factory=dict)  # member -> program name


@dataclass(frozen=True)
class PreparedStructOps:
    kernel_type_id: int  # struct tcp_congestion_ops in the target's BTF
    value_type_id: int  # struct bpf_struct_ops_tcp_congestion_ops: BPF_MAP_CREATE's btf_vmlinux_value_type_id
    fd_slots: Tuple[Tuple[int, str], ...]  # (byte offset in the value, program)
    link: bool


def _is_func_ptr(btf, type_id):
    t = btf.type(btf.skip_modifiers(type_id))
    return t.kind == KIND_PTR and btf.type(btf.skip_modifiers(t.type)).kind == KIND_FUNC_PROTO


def parse(elf, btf):
    """``[(name, StructOps, initial bytes)]`` for every struct_ops variable."""
    out = []
    for sec_name in SECTIONS:
        sec = elf.section(sec_name)
        if sec is None:
            continue
        if btf is None:
            raise LoaderError(f"{sec_name} without .BTF: struct_ops need the object's BTF (build with -g)")
        datasecs = btf.find(sec_name)
        if not datasecs:
            raise LoaderError(f"{sec_name}: no BTF DATASEC describes it")
        relocs = elf.relocations.get(sec.index, [])
        for v in btf.type(datasecs[0]).vars:
            var = btf.type(v.type)
            st_id = btf.skip_modifiers(var.type)
            st = btf.type(st_id)
            if st.kind != KIND_STRUCT:
                raise LoaderError(f"struct_ops {var.name}: must be a struct, found {st.kind_name}")
            ops = StructOps(st.name, st_id, sec_name.endswith(".link"))
            for r in relocs:
                if not v.offset <= r.offset < v.offset + v.size:
                    continue
                bit = (r.offset - v.offset) * 8
                member = next((m for m in st.members if m.bit_offset == bit), None)
                if member is None or not _is_func_ptr(btf, member.type):
                    raise LoaderError(f"struct_ops {var.name}: a program is stored at byte {r.offset - v.offset}, "
                                      "which is not a function pointer member")
                ops.funcs[member.name] = r.symbol.name
            out.append((var.name, ops, bytes(sec.data[v.offset:v.offset + v.size])))
    return out


def prepare(name, ops: StructOps, data: bytes, local_btf, target_btf):
    """``(value bytes, PreparedStructOps, {program: (kernel struct id, member index)})``."""
    kid = next(iter(target_btf.find(ops.type_name, kind=KIND_STRUCT)), None)
    vid = next(iter(target_btf.find("bpf_struct_ops_" + ops.type_name, kind=KIND_STRUCT)), None)
    if kid is None or vid is None:
        raise LoaderError(f"struct_ops {name}: the kernel has no struct_ops type {ops.type_name}"
                          + ("" if kid is None else " (the struct exists, but nothing registers it)"))
    kst, vst = target_btf.type(kid), target_btf.type(vid)
    data_member = next((m for m in vst.members if m.name == "data"), None)
    if data_member is None:
        raise LoaderError(f"struct_ops {name}: bpf_struct_ops_{ops.type_name} has no 'data' member")
    base = data_member.bit_offset // 8
    value = bytearray(vst.size)
    kmembers = {m.name: (i, m) for i, m in enumerate(kst.members)}
    slots, programs = [], {}
    for m in local_btf.type(ops.type_id).members:
        off = m.bit_offset // 8
        size = local_btf.size_of(m.type) if not _is_func_ptr(local_btf, m.type) else 8
        raw = data[off:off + size]
        if m.name not in kmembers:
            if m.name in ops.funcs or any(raw):
                raise LoaderError(f"struct_ops {name}: the kernel's struct {ops.type_name} has no member {m.name}")
            continue
        index, km = kmembers[m.name]
        koff = base + km.bit_offset // 8
        if m.name in ops.funcs:
            prog = ops.funcs[m.name]
            if prog in programs and programs[prog] != (kid, index):
                raise LoaderError(f"struct_ops program {prog} fills two different members")
            programs[prog] = (kid, index)
            slots.append((koff, prog))
        elif _is_func_ptr(local_btf, m.type) or local_btf.type(local_btf.skip_modifiers(m.type)).kind == KIND_PTR:
            if any(raw):
                raise LoaderError(f"struct_ops {name}: member {m.name} is a pointer: only programs go there")
        elif any(raw):
            ksize = target_btf.size_of(km.type)
            if ksize != size:
                raise LoaderError(f"struct_ops {name}: member {m.name} is {size} bytes here, {ksize} in the kernel")
            value[koff:koff + size] = raw
    explain.trace("map", f"struct_ops {name}: kernel struct {ops.type_name} (BTF id {kid}), value "
                         f"bpf_struct_ops_{ops.type_name} ({vst.size} B)",
                  *(f"{prog} -> member {kst.members[i].name} (index {i})" for prog, (_, i) in programs.items()))
    return bytes(value), PreparedStructOps(kid, vid, tuple(slots), ops.link), programs


class Registration:
    """A registered ``.struct_ops`` map (not a link): closing deletes the
    entry, which unregisters it. The kernel keeps a registered map alive
    with no fd open, so this is what stops it outliving the object."""

    def __init__(self, map_fd, name):
        self.fd = map_fd
        self.target = name
        self.mechanism = "struct_ops"

    def info(self):
        return {"id": None, "type_name": "struct_ops (registered map)"}

    def close(self):
        if self.fd >= 0:
            try:
                syscall.map_delete(self.fd, b"\0\0\0\0")
            except LoaderError:
                pass  # already unregistered
            explain.trace("close", f"struct_ops {self.target}: unregistered")
            self.fd = -1

    @property
    def closed(self):
        return self.fd < 0


def register(name, map_fd, value: bytes, prepared: PreparedStructOps, program_fds: Dict[str, int], use_link: bool):
    """Write the program fds into ``value`` and register it: through a BPF
    link when the map was made with ``BPF_F_LINK`` (``use_link``), else a
    :class:`Registration`."""
    from ebpf_energy.loader.link.base import Link

    buf = bytearray(value)
    for off, prog in prepared.fd_slots:
        if prog not in program_fds:
            raise LoaderError(f"struct_ops {name}: program {prog} is not loaded")
        buf[off:off + 8] = program_fds[prog].to_bytes(8, "little")
    syscall.map_update(map_fd, b"\0\0\0\0", bytes(buf), 0)
    if not use_link:
        explain.trace("attach", f"struct_ops {name}: registered (BPF_MAP_UPDATE_ELEM)")
        return Registration(map_fd, name)
    fd = syscall.link_create(map_fd, 0, BPF_STRUCT_OPS)
    explain.trace("attach", f"struct_ops {name}: registered through link fd {fd}")
    return Link("struct_ops", fd, name)
