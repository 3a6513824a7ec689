"""The monitor object's C records as ``struct.Struct`` s, from the loader's BTF codecs.

The monitor reads thousands of fixed-size records per second (task dumps,
per-CPU cuts, ring-buffer events): one ``unpack_from`` per record, or one
``iter_unpack`` per buffer, is what keeps that cheap. The layout is not
written here: it comes from the loader's :class:`~ebpf_energy.loader.btf.StructCodec`
for the object's own BTF (each field's offset and codec), so the C header
and user space can never drift apart.
"""

import struct
from typing import Dict, List

from ebpf_energy.loader.btf import KIND_STRUCT
from ebpf_energy.loader.btf_codec import ArrayCodec, CharArrayCodec, IntCodec, StructCodec
from ebpf_energy.loader.errors import LoaderError

_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


class Record:
    """A struct of the object's BTF flattened to one ``struct.Struct``.

    Int members are ints, char arrays are ``bytes``, arrays of ints are
    consecutive items (``items(name)`` gives their index range); nested
    structs are left out of the format but keep their offset (:meth:`offset_of`)."""

    def __init__(self, btf, name: str):
        ids = btf.find(name, kind=KIND_STRUCT)
        if not ids:
            raise LoaderError(f"the monitor object's BTF has no struct {name}: wrong object?")
        codec = btf.codec(ids[0])
        fmt, pos = "<", 0
        self.names: List[str] = []
        self.offsets: Dict[str, int] = {}
        self._ranges: Dict[str, range] = {}
        for f in codec.fields:
            c = f.codec
            self.offsets[f.name] = f.byte_off
            if isinstance(c, StructCodec):
                continue
            if f.bits or c is None or f.byte_off < pos:
                raise LoaderError(f"struct {name}.{f.name}: a bitfield or overlapping member has no record format")
            if isinstance(c, IntCodec) and c.size in _INT_CODES:
                code, count = _INT_CODES[c.size], 1
            elif isinstance(c, CharArrayCodec):
                code, count = f"{c.size}s", 1
            elif isinstance(c, ArrayCodec) and isinstance(c.elem, IntCodec) and c.elem.size in _INT_CODES:
                code, count = f"{c.nelems}{_INT_CODES[c.elem.size]}", c.nelems
            else:
                raise LoaderError(f"struct {name}.{f.name}: {c.name} has no record format")
            if f.byte_off > pos:
                fmt += f"{f.byte_off - pos}x"
            fmt += code
            self._ranges[f.name] = range(len(self.names), len(self.names) + count)
            self.names.extend([f.name] * count)
            pos = f.byte_off + c.size
        self.size = codec.size
        self.struct = struct.Struct(fmt + (f"{self.size - pos}x" if self.size > pos else ""))
        self.index = {n: r.start for n, r in self._ranges.items()}

    def offset_of(self, member: str) -> int:
        return self.offsets[member]

    def items(self, member: str) -> range:
        """The indices of ``member`` in an unpacked record (one, or an array's elements)."""
        return self._ranges[member]
