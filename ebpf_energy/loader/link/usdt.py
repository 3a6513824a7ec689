"""``usdt/PATH:PROVIDER:NAME``: USDT probes, attached as uprobes.

A USDT probe (``<sys/sdt.h>``'s ``STAP_PROBE``) is a ``nop`` in the binary
plus a note in ``.note.stapsdt``: its address, the address of
``.stapsdt.base`` at link time (to undo prelinking), a semaphore's address
(0 if none), the provider and name, and how to find each argument
(``-4@%eax``: a signed 4-byte value in eax; ``8@-16(%rbp)``: in memory at
rbp-16; ``4@$5``: the constant 5).

libbpf's ``usdt.bpf.h`` reads arguments from two maps this module fills:
``__bpf_usdt_specs`` (spec id -> how to fetch each argument) and
``__bpf_usdt_ip_to_spec_id`` (probe address -> spec id, for kernels without
BPF cookies). Every call site becomes one uprobe whose BPF cookie is its
spec id; a semaphore becomes the uprobe's reference counter, so the kernel
raises it while the probe is attached (code that guards a costly probe with
``if (SEMAPHORE)`` runs it only then).
"""

import os
import platform
import re
import struct
from dataclasses import dataclass
from typing import List, Optional

from .. import explain, syscall
from ..errors import AttachError
from .base import Links, closing_on_error
from .binary import find_binary, open_binary
from .uprobe import attach_uprobe

NT_STAPSDT = 3
MAX_ARGS = 12  # BPF_USDT_MAX_ARG_CNT in usdt.bpf.h
ARG_CONST, ARG_REG, ARG_REG_DEREF = 0, 1, 2
SPECS_MAP, IP_MAP = "__bpf_usdt_specs", "__bpf_usdt_ip_to_spec_id"
_ARG_SPEC = struct.Struct("<QIhbb")  # struct __bpf_usdt_arg_spec: val_off, arg_type, reg_off, arg_signed, bitshift

# x86-64: offsetof(struct pt_regs, reg) for every name an argument may use
_PT_REGS_X86 = {}
for _off, _names in enumerate((("r15",), ("r14",), ("r13",), ("r12",), ("rbp", "ebp", "bp", "bpl"),
                               ("rbx", "ebx", "bx", "bl"), ("r11",), ("r10",), ("r9",), ("r8",),
                               ("rax", "eax", "ax", "al"), ("rcx", "ecx", "cx", "cl"), ("rdx", "edx", "dx", "dl"),
                               ("rsi", "esi", "si", "sil"), ("rdi", "edi", "di", "dil"), (), ("rip",), (), (),
                               ("rsp", "esp", "sp", "spl"))):
    for _n in _names:
        _PT_REGS_X86[_n] = _off * 8
for _n in range(8, 16):
    for _suffix in ("d", "w", "b"):
        _PT_REGS_X86[f"r{_n}{_suffix}"] = _PT_REGS_X86[f"r{_n}"]


@dataclass
class Note:
    """One ``.note.stapsdt`` entry."""
    pc: int
    base: int
    semaphore: int
    provider: str
    name: str
    args: str


def parse_notes(data: bytes) -> List[Note]:
    """Every stapsdt note in a ``.note.stapsdt`` section's bytes."""
    notes, pos = [], 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        end = desc_at + ((descsz + 3) & ~3)
        if end > len(data) + 3:
            raise AttachError("truncated .note.stapsdt section")
        if ntype == NT_STAPSDT and data[name_at:name_at + namesz].rstrip(b"\0") == b"stapsdt":
            pc, base, sema = struct.unpack_from("<QQQ", data, desc_at)
            strings = data[desc_at + 24:desc_at + descsz].split(b"\0")
            provider, name, args = (strings + [b"", b"", b""])[:3]
            notes.append(Note(pc, base, sema, provider.decode(), name.decode(), args.decode()))
        pos = end
    return notes


_ARG = re.compile(r"^(-?\d+)@(?:\$(-?\d+)|%(\w+)|(-?\d*)\(%(\w+)\))$")


def parse_arg(text: str):
    """One argument location -> (arg_type, val_off, reg_off, signed, bitshift)."""
    if platform.machine() != "x86_64":
        raise AttachError(f"USDT arguments are decoded for x86-64 only (this is {platform.machine()})")
    m = _ARG.match(text)
    if not m:
        raise AttachError(f"USDT argument {text!r}: not a form the loader decodes (SIZE@%reg, SIZE@OFF(%reg), "
                          "SIZE@$CONST)")
    size, const, reg, off, base_reg = m.groups()
    size = int(size)
    if abs(size) not in (1, 2, 4, 8):
        raise AttachError(f"USDT argument {text!r}: size {size} is not 1, 2, 4 or 8 bytes")
    shift = 64 - abs(size) * 8
    if const is not None:
        return ARG_CONST, int(const) & (2**64 - 1), 0, size < 0, shift
    name = reg or base_reg
    if name not in _PT_REGS_X86:
        raise AttachError(f"USDT argument {text!r}: unknown register %{name}")
    if reg:
        return ARG_REG, 0, _PT_REGS_X86[name], size < 0, shift
    return ARG_REG_DEREF, int(off or 0) & (2**64 - 1), _PT_REGS_X86[name], size < 0, shift


def pack_spec(args: str, value_size: int, cookie=0) -> bytes:
    """``struct __bpf_usdt_spec`` for a note's argument string."""
    parsed = [parse_arg(a) for a in args.split()]
    if len(parsed) > MAX_ARGS:
        raise AttachError(f"USDT probe has {len(parsed)} arguments; usdt.bpf.h reads at most {MAX_ARGS}")
    out = b"".join(_ARG_SPEC.pack(v, t, r, int(s), b) for t, v, r, s, b in parsed)
    out = out.ljust(MAX_ARGS * _ARG_SPEC.size, b"\0") + struct.pack("<Qh", cookie, len(parsed))
    if len(out) > value_size:
        raise AttachError(f"{SPECS_MAP} values are {value_size} bytes, a spec needs {len(out)}: "
                          "was the object built with another usdt.bpf.h?")
    return out.ljust(value_size, b"\0")


def _abs_ip(binary, pc, pid) -> Optional[int]:
    """The probe's address in the running process, the ip map's key: the
    link-time address in a position-dependent binary, else found through
    ``pid``'s mappings (None without a pid: only BPF cookies can name it)."""
    if binary.type == "ET_EXEC":
        return pc
    if pid <= 0:
        return None
    file_off = binary.file_offset(pc)
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and os.path.realpath(parts[5]) == binary.path:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    moff = int(parts[2], 16)
                    if moff <= file_off < moff + (hi - lo):
                        return lo + file_off - moff
    except OSError:
        pass
    return None


def find_probes(path, provider, name):
    """The notes of ``provider:name`` in ``path`` (one per call site)."""
    binary = open_binary(find_binary(path))
    notes = [n for n in parse_notes(binary.notes) if n.provider == provider and n.name == name]
    if not notes:
        known = sorted({f"{n.provider}:{n.name}" for n in parse_notes(binary.notes)})
        raise AttachError(f"no USDT probe {provider}:{name} in {binary.path} "
                          f"({'it has: ' + ', '.join(known) if known else 'it has no .note.stapsdt section'})")
    return binary, notes


class SpecIds:
    """Spec slots of one object's ``__bpf_usdt_specs`` map, handed out in order."""

    def __init__(self, size):
        self.size, self.next = size, 0

    def take(self):
        if self.next >= self.size:
            raise AttachError(f"{SPECS_MAP} is full ({self.size} specs): raise BPF_USDT_MAX_SPEC_CNT")
        self.next += 1
        return self.next - 1


def attach_usdt(prog_fd, path, provider, name, specs_map, ip_map=None, spec_ids=None, pid=-1, cookie=0,
                target=None):
    """Every call site of ``provider:name`` in ``path``: a spec in
    ``specs_map``, an ip map entry where the address is known, a uprobe
    with the spec id as its BPF cookie and the semaphore as its ref counter."""
    binary, notes = find_probes(path, provider, name)
    target = target or f"usdt/{path}:{provider}:{name}"
    spec_ids = spec_ids or SpecIds(specs_map.max_entries)
    links = []
    with closing_on_error(links):
        for note in notes:
            pc = note.pc
            if binary.stapsdt_base is not None and note.base:
                pc += binary.stapsdt_base - note.base  # undo prelink's move
            sid = spec_ids.take()
            syscall.map_update(specs_map.fd, struct.pack("<i", sid), pack_spec(note.args, specs_map.value_size, cookie))
            ip = _abs_ip(binary, pc, pid)
            if ip_map is not None and ip is not None:
                syscall.map_update(ip_map.fd, struct.pack("<q", ip), struct.pack("<I", sid))
            sema = binary.file_offset(note.semaphore) if note.semaphore else 0
            explain.trace("attach", f"{target}: site {pc:#x} args {note.args!r} -> spec {sid}"
                          f"{f', semaphore at file offset {sema:#x}' if sema else ''}")
            links.append(attach_uprobe(prog_fd, binary.path, None, binary.file_offset(pc), pid=pid,
                                       ref_ctr_offset=sema, cookie=sid, target=f"{target} @{pc:#x}"))
    return Links("usdt", target, links)


def parse_section(section):
    """``usdt/PATH:PROVIDER:NAME`` -> (path, provider, name)."""
    rest = section.partition("/")[2]
    path, sep1, tail = rest.rpartition(":")
    path2, sep2, provider = path.rpartition(":")
    if not (sep1 and sep2 and path2 and provider and tail):
        raise AttachError(f"section {section!r}: expected usdt/PATH:PROVIDER:NAME")
    return path2, provider, tail
