"""Codecs: map keys and values (and global data) as Python values, from their BTF types.

``make_codec(btf, type_id)`` builds one :class:`Codec` per type: integers,
enums, floats, char arrays as strings, arrays as lists, structs and unions as
dicts (bitfields included). A struct of plain integers compiles to a single
``struct.Struct``, the fast path for the maps a monitor reads every second.
"""

import struct

from .btf import (INT_BOOL, INT_CHAR, INT_SIGNED, KIND_ARRAY, KIND_DATASEC, KIND_ENUM, KIND_ENUM64, KIND_FLOAT,
                  KIND_INT, KIND_PTR, KIND_STRUCT, KIND_UNION, KIND_VAR, MAX_RESOLVE_DEPTH)
from .errors import BtfError

_INT_FMT = {1: "b", 2: "h", 4: "i", 8: "q"}


class Codec:
    """Turns the bytes of one BTF type into a Python value and back.

    ``encode`` also accepts ``bytes`` of exactly ``size`` (passed through), so
    callers can always fall back to raw values.
    """

    size = 0
    name = ""

    def decode(self, data):
        raise NotImplementedError

    def encode(self, value):
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value)
            if len(value) != self.size:
                raise BtfError(f"{self.name}: expected {self.size} bytes, got {len(value)}")
            return value
        out = bytearray(self.size)
        self.encode_into(out, 0, value)
        return bytes(out)

    def encode_into(self, buf, off, value):
        buf[off:off + self.size] = self.encode(value)

    def _check(self, data):
        if len(data) < self.size:
            raise BtfError(f"{self.name}: expected {self.size} bytes, got {len(data)}")

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} ({self.size} bytes)>"


class IntCodec(Codec):
    def __init__(self, name, size, signed, is_bool=False, endian="<", names=None):
        self.name, self.size, self.signed, self.is_bool = name, size, signed, is_bool
        self.endian = "little" if endian == "<" else "big"
        self.names = names or {}  # enumerator name -> value (enums)
        fmt = _INT_FMT.get(size)
        self._st = struct.Struct(endian + (fmt if signed else fmt.upper())) if fmt else None

    def decode(self, data):
        self._check(data)
        if self._st is not None:
            v = self._st.unpack_from(data)[0]
        else:
            v = int.from_bytes(bytes(data[:self.size]), self.endian, signed=self.signed)
        return bool(v) if self.is_bool else v

    def encode_into(self, buf, off, value):
        if isinstance(value, str) and value in self.names:
            value = self.names[value]
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int):
            raise BtfError(f"{self.name}: expected an integer, got {type(value).__name__} {value!r}")
        lo, hi = (-(1 << (8 * self.size - 1)), (1 << (8 * self.size - 1)) - 1) if self.signed \
            else (0, (1 << (8 * self.size)) - 1)
        if not lo <= value <= hi:
            raise BtfError(f"{self.name}: {value} does not fit in {self.size} byte{'s' if self.size != 1 else ''}")
        buf[off:off + self.size] = value.to_bytes(self.size, self.endian, signed=self.signed)


class FloatCodec(Codec):
    def __init__(self, name, size, endian="<"):
        self.name, self.size = name, size
        self._st = struct.Struct(endian + {2: "e", 4: "f", 8: "d"}[size])

    def decode(self, data):
        self._check(data)
        return self._st.unpack_from(data)[0]

    def encode_into(self, buf, off, value):
        try:
            self._st.pack_into(buf, off, value)
        except (struct.error, TypeError):
            raise BtfError(f"{self.name}: expected a number, got {value!r}") from None


class RawCodec(Codec):
    """Types with no natural Python value (floats of odd size): bytes."""

    def __init__(self, name, size):
        self.name, self.size = name, size

    def decode(self, data):
        self._check(data)
        return bytes(data[:self.size])


class CharArrayCodec(Codec):
    """``char name[N]`` <-> str, up to the first NUL."""

    def __init__(self, name, size):
        self.name, self.size = name, size

    def decode(self, data):
        self._check(data)
        raw = bytes(data[:self.size])
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def encode_into(self, buf, off, value):
        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, (bytes, bytearray)):
            raise BtfError(f"{self.name}: expected a str, got {value!r}")
        if len(value) > self.size:
            raise BtfError(f"{self.name}: {len(value)} bytes do not fit in {self.size}")
        buf[off:off + self.size] = bytes(value).ljust(self.size, b"\0")


class ArrayCodec(Codec):
    def __init__(self, name, elem, nelems):
        self.name, self.elem, self.nelems = name, elem, nelems
        self.size = elem.size * nelems

    def decode(self, data):
        self._check(data)
        es, dec = self.elem.size, self.elem.decode
        mv = memoryview(data)
        return [dec(mv[i * es:(i + 1) * es]) for i in range(self.nelems)]

    def encode_into(self, buf, off, value):
        if not isinstance(value, (list, tuple)):
            raise BtfError(f"{self.name}: expected a list, got {value!r}")
        if len(value) > self.nelems:
            raise BtfError(f"{self.name}: {len(value)} elements do not fit in {self.nelems}")
        for i, v in enumerate(value):
            self.elem.encode_into(buf, off + i * self.elem.size, v)


class _Field:
    __slots__ = ("name", "codec", "byte_off", "bit_off", "bits", "signed")

    def __init__(self, name, codec, byte_off, bit_off=0, bits=0, signed=False):
        self.name, self.codec, self.byte_off = name, codec, byte_off
        self.bit_off, self.bits, self.signed = bit_off, bits, signed


class StructCodec(Codec):
    """struct/union (and DATASEC) <-> dict; anonymous members are flattened, as in C."""

    def __init__(self, name, size, fields, endian="<"):
        self.name, self.size, self.fields = name, size, fields
        self.endian = "little" if endian == "<" else "big"
        self._names = [f.name for f in fields]
        self._by_name = {f.name: f for f in fields}
        self._fast = self._compile(endian)

    def _compile(self, endian):
        """One struct.Struct for plain int members laid out in order (the common case)."""
        fmt, pos = [endian], 0
        for f in self.fields:
            c = f.codec
            if f.bits or not isinstance(c, IntCodec) or c._st is None or f.byte_off < pos:
                return None
            fmt.append("x" * (f.byte_off - pos))
            fmt.append("?" if c.is_bool else c._st.format[-1])
            pos = f.byte_off + c.size
        fmt.append("x" * (self.size - pos))
        return struct.Struct("".join(fmt))

    def decode(self, data):
        self._check(data)
        if self._fast is not None:
            return dict(zip(self._names, self._fast.unpack_from(data)))
        out = {}
        whole = None
        for f in self.fields:
            if f.bits:
                if whole is None:
                    whole = int.from_bytes(bytes(data[:self.size]), "little")
                v = (whole >> f.bit_off) & ((1 << f.bits) - 1)
                if f.signed and v >> (f.bits - 1):
                    v -= 1 << f.bits
                out[f.name] = bool(v) if isinstance(f.codec, IntCodec) and f.codec.is_bool else v
            else:
                out[f.name] = f.codec.decode(memoryview(data)[f.byte_off:f.byte_off + f.codec.size])
        return out

    def encode_into(self, buf, off, value):
        if not isinstance(value, dict):
            raise BtfError(f"{self.name}: expected a dict, got {value!r}")
        for key, v in value.items():
            f = self._by_name.get(key)
            if f is None:
                raise BtfError(f"{self.name} has no field '{key}' (fields: {', '.join(self._by_name)})")
            if f.bits:
                if isinstance(v, bool):
                    v = int(v)
                lo = -(1 << (f.bits - 1)) if f.signed else 0
                hi = (1 << (f.bits - (1 if f.signed else 0))) - 1
                if not isinstance(v, int) or not lo <= v <= hi:
                    raise BtfError(f"{self.name}.{key}: {v!r} does not fit in a {f.bits}-bit field")
                whole = int.from_bytes(bytes(buf[off:off + self.size]), "little")
                mask = ((1 << f.bits) - 1) << f.bit_off
                whole = (whole & ~mask) | ((v << f.bit_off) & mask)
                buf[off:off + self.size] = whole.to_bytes(self.size, "little")
            else:
                f.codec.encode_into(buf, off + f.byte_off, v)


def make_codec(btf, type_id, _depth=0):
    """Build the codec for ``type_id`` (typedef/const/volatile are transparent)."""
    if _depth > MAX_RESOLVE_DEPTH:
        raise BtfError(f"BTF type [{type_id}] nests too deeply for a codec")
    tid = btf.skip_modifiers(type_id)
    t = btf.type(tid)
    k = t.kind
    E = getattr(btf, "endian", "<")
    label = btf.describe(type_id)
    if k == KIND_INT:
        if t.int_bits != t.size * 8 or t.int_offset:
            raise BtfError(f"{label}: {t.int_bits}-bit int at offset {t.int_offset} has no codec")
        return IntCodec(label, t.size, bool(t.int_encoding & INT_SIGNED), bool(t.int_encoding & INT_BOOL), E)
    if k in (KIND_ENUM, KIND_ENUM64):
        return IntCodec(label, t.size, t.signed, False, E, dict(t.values))
    if k == KIND_PTR:
        return IntCodec(label, 8, False, False, E)
    if k == KIND_FLOAT:
        return FloatCodec(label, t.size, E) if t.size in (2, 4, 8) else RawCodec(label, t.size)
    if k == KIND_ARRAY:
        et = btf.type(btf.skip_modifiers(t.array.elem_type))
        if et.kind == KIND_INT and et.size == 1 and (et.int_encoding & INT_CHAR or et.name == "char"):
            return CharArrayCodec(label, t.array.nelems)
        elem = make_codec(btf, t.array.elem_type, _depth + 1)
        return ArrayCodec(label, elem, t.array.nelems)
    if k in (KIND_STRUCT, KIND_UNION):
        fields = []
        _struct_fields(btf, t, 0, fields, _depth)
        return StructCodec(label, t.size, fields, E)
    if k == KIND_DATASEC:
        fields = [_Field(btf.type(v.type).name, make_codec(btf, btf.type(v.type).type, _depth + 1), v.offset)
                  for v in t.vars if btf.type(v.type).kind == KIND_VAR]
        return StructCodec(label, t.size, fields, E)
    raise BtfError(f"{label} ({t.kind_name}) cannot be used as a map key or value")


def _struct_fields(btf, t, base_bits, out, depth):
    if depth > MAX_RESOLVE_DEPTH:
        raise BtfError(f"{btf.describe(t.id)} nests too deeply for a codec (loop?)")
    for m in t.members:
        bit = base_bits + m.bit_offset
        mt = btf.type(btf.skip_modifiers(m.type))
        bits = m.bitfield_size
        if not t.kind_flag and mt.kind == KIND_INT and (mt.int_bits != mt.size * 8 or mt.int_offset):
            bits, bit = mt.int_bits, bit + mt.int_offset  # pre-kind_flag bitfield encoding
        if not m.name:
            if mt.kind in (KIND_STRUCT, KIND_UNION):
                _struct_fields(btf, mt, bit, out, depth + 1)
            continue  # unnamed padding bitfields carry no value
        if bits or bit % 8:
            signed = mt.signed
            is_bool = mt.kind == KIND_INT and bool(mt.int_encoding & INT_BOOL)
            codec = IntCodec(m.name, mt.size, signed, is_bool) if mt.kind != KIND_INT or is_bool else None
            out.append(_Field(m.name, codec, bit // 8, bit, bits or mt.size * 8, signed))
        else:
            out.append(_Field(m.name, make_codec(btf, m.type, depth + 1), bit // 8))
