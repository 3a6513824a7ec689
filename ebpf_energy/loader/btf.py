"""BTF: the type information clang emits into ``.BTF`` and the kernel exposes.

:class:`Btf` parses an object's (small) ``.BTF`` eagerly, validates it, fixes
the DATASEC sizes/offsets clang leaves zero, and re-serialises it for
``BPF_BTF_LOAD``. :class:`BtfQueries` holds the query interface (``type``,
``find``, ``resolve``, ``size_of``, ``name_of``) shared with the lazy
:class:`~ebpf_energy.loader.kernel_btf.KernelBtf`, so CO-RE code works on
both. :meth:`Btf.codec` turns map keys/values into Python values and back
(the codecs are in :mod:`btf_codec`).
"""

import struct
from collections import namedtuple

from . import abi, btf_wire, explain
from .abi import (BTF_KIND_ARRAY as KIND_ARRAY, BTF_KIND_CONST as KIND_CONST,
                  BTF_KIND_DATASEC as KIND_DATASEC, BTF_KIND_DECL_TAG as KIND_DECL_TAG, BTF_KIND_ENUM as KIND_ENUM,
                  BTF_KIND_ENUM64 as KIND_ENUM64, BTF_KIND_FLOAT as KIND_FLOAT, BTF_KIND_FUNC as KIND_FUNC,
                  BTF_KIND_FUNC_PROTO as KIND_FUNC_PROTO, BTF_KIND_FWD as KIND_FWD, BTF_KIND_INT as KIND_INT,
                  BTF_KIND_PTR as KIND_PTR, BTF_KIND_RESTRICT as KIND_RESTRICT, BTF_KIND_STRUCT as KIND_STRUCT,
                  BTF_KIND_TYPE_TAG as KIND_TYPE_TAG, BTF_KIND_TYPEDEF as KIND_TYPEDEF,
                  BTF_KIND_UNION as KIND_UNION, BTF_KIND_UNKN as KIND_UNKN, BTF_KIND_VAR as KIND_VAR,
                  BTF_KIND_VOLATILE as KIND_VOLATILE)
from .errors import BtfError

BTF_MAGIC = abi.BTF_MAGIC
HEADER_LEN = btf_wire.HEADER_LEN

KIND_NAMES = ("void", "int", "ptr", "array", "struct", "union", "enum", "fwd", "typedef",
              "volatile", "const", "restrict", "func", "func_proto", "var", "datasec", "float",
              "decl_tag", "type_tag", "enum64")
MAX_KIND = KIND_ENUM64

INT_SIGNED, INT_CHAR, INT_BOOL = abi.BTF_INT_SIGNED, abi.BTF_INT_CHAR, abi.BTF_INT_BOOL

# Extra 32-bit words after the 12-byte common header: (fixed, per vlen item).
KIND_EXTRA_WORDS = {
    KIND_INT: (1, 0), KIND_ARRAY: (3, 0), KIND_STRUCT: (0, 3), KIND_UNION: (0, 3),
    KIND_ENUM: (0, 2), KIND_FUNC_PROTO: (0, 2), KIND_VAR: (1, 0), KIND_DATASEC: (0, 3),
    KIND_DECL_TAG: (1, 0), KIND_ENUM64: (0, 3),
}
# Kinds whose third word is a size rather than a referenced type id.
SIZED_KINDS = frozenset((KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_DATASEC,
                         KIND_FLOAT, KIND_ENUM64))
MODIFIER_KINDS = frozenset((KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG))
_QUALIFIERS = frozenset((KIND_CONST, KIND_VOLATILE, KIND_RESTRICT))  # named by describe() with their type
MAX_RESOLVE_DEPTH = 32
MAX_SIZE = 1 << 32

Member = namedtuple("Member", "name type bit_offset bitfield_size")
ArrayInfo = namedtuple("ArrayInfo", "elem_type index_type nelems")
VarSecInfo = namedtuple("VarSecInfo", "type offset size")


class BtfType:
    """One decoded BTF type. Attributes not used by a kind stay at their defaults.

    ``name_off`` and the ``*_name_offs`` lists keep the string offsets so the
    type re-serialises byte for byte (names are for reading, offsets for writing).
    """

    __slots__ = ("id", "kind", "name", "name_off", "kind_flag", "size", "type", "members",
                 "member_name_offs", "values", "value_name_offs", "params", "param_name_offs",
                 "array", "vars", "linkage", "int_encoding", "int_bits", "int_offset",
                 "component_idx", "vlen")

    def __init__(self, id, kind, name="", name_off=0, kind_flag=0):
        self.id = id
        self.kind = kind
        self.name = name
        self.name_off = name_off
        self.kind_flag = kind_flag
        self.size = 0
        self.type = 0
        self.members = []
        self.member_name_offs = []
        self.values = []
        self.value_name_offs = []
        self.params = []
        self.param_name_offs = []
        self.array = None
        self.vars = []
        self.linkage = 0
        self.int_encoding = 0
        self.int_bits = 0
        self.int_offset = 0
        self.component_idx = 0
        self.vlen = 0

    @property
    def kind_name(self):
        return KIND_NAMES[self.kind] if 0 <= self.kind <= MAX_KIND else f"kind{self.kind}"

    @property
    def signed(self):
        """Signedness of an INT or ENUM (enum kind_flag; old clang leaves it 0 for s32 enums)."""
        if self.kind == KIND_INT:
            return bool(self.int_encoding & INT_SIGNED)
        if self.kind in (KIND_ENUM, KIND_ENUM64):
            return bool(self.kind_flag)
        return False

    def _key(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __eq__(self, other):
        return isinstance(other, BtfType) and self._key() == other._key()

    def __hash__(self):
        return hash((self.id, self.kind, self.name))

    def __repr__(self):
        return f"<BtfType [{self.id}] {self.kind_name} '{self.name}' size/type={self.size or self.type}>"


def _u32s(buf, off, count, endian):
    try:
        return struct.unpack_from(f"{endian}{count}I", buf, off)
    except struct.error:
        raise BtfError(f"BTF type data truncated at byte {off}") from None


def decode_type(buf, off, type_id, endian, name_of_off):
    """Decode the type at ``buf[off:]``; returns (BtfType, offset of the next type).

    ``name_of_off`` maps a string offset to its text (raising BtfError when out
    of range). Only structural checks happen here; cross-references are
    checked by the caller that knows how many types exist.
    """
    name_off, info, size_or_type = _u32s(buf, off, 3, endian)
    kind = (info >> 24) & 0x1F
    vlen = info & 0xFFFF
    kflag = info >> 31
    if kind == KIND_UNKN or kind > MAX_KIND:
        raise BtfError(f"BTF type [{type_id}] has unknown kind {kind}")
    if info & 0x60FF0000:
        raise BtfError(f"BTF type [{type_id}] sets reserved bits in info 0x{info:08x}")
    t = BtfType(type_id, kind, name_of_off(name_off), name_off, kflag)
    t.vlen = vlen
    if kind in SIZED_KINDS:
        t.size = size_or_type
    else:
        t.type = size_or_type
    fixed, per = KIND_EXTRA_WORDS.get(kind, (0, 0))
    nwords = fixed + per * vlen
    body = _u32s(buf, off + 12, nwords, endian) if nwords else ()
    if kind == KIND_INT:
        v = body[0]
        t.int_encoding = (v >> 24) & 0x0F
        t.int_offset = (v >> 16) & 0xFF
        t.int_bits = v & 0xFF
    elif kind == KIND_ARRAY:
        t.array = ArrayInfo(*body)
    elif kind in (KIND_STRUCT, KIND_UNION):
        for i in range(vlen):
            moff, mtype, bits = body[3 * i:3 * i + 3]
            if kflag:
                m = Member(name_of_off(moff), mtype, bits & 0xFFFFFF, bits >> 24)
            else:
                m = Member(name_of_off(moff), mtype, bits, 0)
            t.members.append(m)
            t.member_name_offs.append(moff)
    elif kind == KIND_ENUM:
        for i in range(vlen):
            noff, val = body[2 * i], body[2 * i + 1]
            if kflag and val & 0x80000000:
                val -= 1 << 32
            t.values.append((name_of_off(noff), val))
            t.value_name_offs.append(noff)
    elif kind == KIND_ENUM64:
        for i in range(vlen):
            noff, lo, hi = body[3 * i:3 * i + 3]
            val = lo | (hi << 32)
            if kflag and val & (1 << 63):
                val -= 1 << 64
            t.values.append((name_of_off(noff), val))
            t.value_name_offs.append(noff)
    elif kind == KIND_FUNC_PROTO:
        for i in range(vlen):
            noff, ptype = body[2 * i], body[2 * i + 1]
            t.params.append((name_of_off(noff), ptype))
            t.param_name_offs.append(noff)
    elif kind == KIND_FUNC:
        t.linkage = vlen
    elif kind == KIND_VAR:
        t.linkage = body[0]
    elif kind == KIND_DATASEC:
        t.vars = [VarSecInfo(*body[3 * i:3 * i + 3]) for i in range(vlen)]
    elif kind == KIND_DECL_TAG:
        c = body[0]
        t.component_idx = c - (1 << 32) if c & 0x80000000 else c
    return t, off + 12 + 4 * nwords


def encode_type(t, endian="<"):
    """Serialise one BtfType (inverse of :func:`decode_type`)."""
    kind = t.kind
    words = []
    if kind in (KIND_STRUCT, KIND_UNION):
        vlen = len(t.members)
        for m, noff in zip(t.members, t.member_name_offs):
            bits = (m.bitfield_size << 24) | m.bit_offset if t.kind_flag else m.bit_offset
            words += [noff, m.type, bits]
    elif kind == KIND_ENUM:
        vlen = len(t.values)
        for (_, val), noff in zip(t.values, t.value_name_offs):
            words += [noff, val & 0xFFFFFFFF]
    elif kind == KIND_ENUM64:
        vlen = len(t.values)
        for (_, val), noff in zip(t.values, t.value_name_offs):
            val &= (1 << 64) - 1
            words += [noff, val & 0xFFFFFFFF, val >> 32]
    elif kind == KIND_FUNC_PROTO:
        vlen = len(t.params)
        for (_, ptype), noff in zip(t.params, t.param_name_offs):
            words += [noff, ptype]
    elif kind == KIND_DATASEC:
        vlen = len(t.vars)
        for v in t.vars:
            words += [v.type, v.offset, v.size]
    elif kind == KIND_FUNC:
        vlen = t.linkage
    else:
        vlen = 0
    if kind == KIND_INT:
        words = [(t.int_encoding << 24) | (t.int_offset << 16) | t.int_bits]
    elif kind == KIND_ARRAY:
        words = list(t.array)
    elif kind == KIND_VAR:
        words = [t.linkage]
    elif kind == KIND_DECL_TAG:
        words = [t.component_idx & 0xFFFFFFFF]
    info = (t.kind_flag << 31) | (kind << 24) | vlen
    third = t.size if kind in SIZED_KINDS else t.type
    return struct.pack(f"{endian}{3 + len(words)}I", t.name_off, info, third, *words)


def essential_name(name):
    """Drop a CO-RE ``___flavor`` suffix: ``task_struct___v1`` -> ``task_struct``.

    The separator is the last ``X___Y`` with X and Y not underscores (libbpf's rule).
    """
    n = len(name)
    for i in range(n - 5, -1, -1):
        if name[i] != "_" and name[i + 1:i + 4] == "___" and name[i + 4] != "_":
            return name[:i + 1]
    return name


class BtfQueries:
    """Queries shared by :class:`Btf` and ``KernelBtf``; both supply ``type()``,
    ``_ids_named()`` and ``_ids_with_prefix()``."""

    def name_of(self, type_id):
        return self.type(type_id).name

    def find(self, name, kind=None):
        """Ids of the types called ``name`` (optionally of one kind), in id order."""
        ids = self._ids_named(name)
        if kind is None:
            return ids
        kinds = {kind} if isinstance(kind, int) else set(kind)
        return [i for i in ids if self.type(i).kind in kinds]

    def find_essential(self, ess_name, kinds):
        """Types whose essential name (``___flavor`` dropped) is ``ess_name``: CO-RE candidates."""
        out = [i for i in self._ids_named(ess_name) if self.type(i).kind in kinds]
        for i in self._ids_with_prefix(ess_name + "___"):
            t = self.type(i)
            if t.kind in kinds and essential_name(t.name) == ess_name and i not in out:
                out.append(i)
        return sorted(out)

    def skip_modifiers(self, type_id):
        """Follow typedef/const/volatile/restrict/type_tag to the underlying type id."""
        for _ in range(MAX_RESOLVE_DEPTH):
            t = self.type(type_id)
            if t.kind not in MODIFIER_KINDS:
                return type_id
            type_id = t.type
        raise BtfError(f"BTF type [{type_id}]: modifier chain too long (loop?)")


    def size_of(self, type_id):
        """Size in bytes, following modifiers and arrays (libbpf's btf__resolve_size)."""
        nelems = 1
        for _ in range(MAX_RESOLVE_DEPTH):
            t = self.type(type_id)
            k = t.kind
            if k in SIZED_KINDS:
                size = t.size
                break
            if k == KIND_PTR:
                size = 8
                break
            if k in MODIFIER_KINDS or k == KIND_VAR:
                type_id = t.type
            elif k == KIND_ARRAY:
                nelems *= t.array.nelems
                if nelems >= MAX_SIZE:
                    raise BtfError(f"BTF array [{t.id}] is too large")
                type_id = t.array.elem_type
            else:
                raise BtfError(f"BTF type [{t.id}] ({t.kind_name} '{t.name}') has no size")
        else:
            raise BtfError(f"BTF type [{type_id}]: type chain too long (loop?)")
        total = nelems * size
        if total >= MAX_SIZE:
            raise BtfError(f"BTF type [{type_id}] is too large ({total} bytes)")
        return total

    def describe(self, type_id, _depth=0):
        """``struct task_struct``, ``int``, ``char[16]``: a C-ish name for messages."""
        try:
            t = self.type(type_id)
            if _depth > MAX_RESOLVE_DEPTH:
                return "..."
            if t.kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64):
                return f"{'enum' if t.kind == KIND_ENUM64 else t.kind_name} {t.name or '(anon)'}"
            if t.kind == KIND_PTR:
                return self.describe(t.type, _depth + 1) + " *"
            if t.kind == KIND_ARRAY:
                return f"{self.describe(t.array.elem_type, _depth + 1)}[{t.array.nelems}]"
            if t.kind == KIND_UNKN:
                return "void"
            if t.kind in _QUALIFIERS:  # const, volatile, restrict: the qualifier and what it qualifies
                return f"{t.kind_name} {self.describe(t.type, _depth + 1)}"
            return t.name or t.kind_name
        except BtfError:
            return f"type [{type_id}]"


class _Void(BtfType):
    __slots__ = ()

    def __init__(self):
        super().__init__(0, KIND_UNKN, "void")


VOID = _Void()


class Btf(BtfQueries):
    """A fully decoded BTF blob (an object file's ``.BTF``)."""

    def __init__(self, types, strings, endian="<", flags=0):
        self.types = types
        self.strings = strings
        self.endian = endian
        self.flags = flags
        self._names = {}
        for t in types[1:]:
            if t.name:
                self._names.setdefault(t.name, []).append(t.id)

    # -- parsing ------------------------------------------------------------
    @classmethod
    def parse(cls, data):
        data = bytes(data)
        h = btf_wire.header(data)
        endian, flags, type_len, str_len = h.endian, h.flags, h.type_len, h.str_len
        strings = btf_wire.strings_of(data, h)
        name_of_off = _string_reader(strings)
        tdata = bytes(btf_wire.types_of(data, h))
        types = [VOID]
        off = 0
        while off < type_len:
            t, off = decode_type(tdata, off, len(types), endian, name_of_off)
            types.append(t)
        if off != type_len:
            raise BtfError("BTF type section ends inside a type")
        btf = cls(types, strings, endian, flags)
        btf.validate()
        explain.trace("btf", f"parsed {len(types) - 1} types, {str_len} bytes of strings")
        return btf

    def validate(self):
        """Check references and sizes, raising BtfError on the first problem."""
        n = len(self.types)

        def ref(t, tid, what):
            if not 0 <= tid < n:
                raise BtfError(f"BTF {t.kind_name} [{t.id}] '{t.name}': {what} refers to type {tid}, only {n - 1} exist")

        for t in self.types[1:]:
            k = t.kind
            if k == KIND_INT:
                if t.size not in (1, 2, 4, 8, 16) or t.int_bits == 0 or t.int_offset + t.int_bits > t.size * 8:
                    raise BtfError(f"BTF int [{t.id}] '{t.name}' has size {t.size}, {t.int_bits} bits at {t.int_offset}")
            elif k in (KIND_ENUM, KIND_ENUM64):
                if t.size not in (1, 2, 4, 8):
                    raise BtfError(f"BTF enum [{t.id}] '{t.name}' has invalid size {t.size}")
            elif k == KIND_FLOAT:
                if t.size not in (2, 4, 8, 12, 16):
                    raise BtfError(f"BTF float [{t.id}] '{t.name}' has invalid size {t.size}")
            elif k in (KIND_STRUCT, KIND_UNION):
                if t.size >= MAX_SIZE >> 3:
                    raise BtfError(f"BTF {t.kind_name} [{t.id}] '{t.name}' is too large")
                for m in t.members:
                    ref(t, m.type, f"member '{m.name}'")
                    if m.bit_offset + m.bitfield_size > t.size * 8:
                        raise BtfError(f"BTF {t.kind_name} [{t.id}] '{t.name}': member '{m.name}' "
                                       f"lies outside the {t.size}-byte type")
            elif k == KIND_ARRAY:
                ref(t, t.array.elem_type, "element")
                ref(t, t.array.index_type, "index")
                if t.array.elem_type == 0:
                    raise BtfError(f"BTF array [{t.id}] has void elements")
            elif k == KIND_FUNC_PROTO:
                ref(t, t.type, "return type")
                for pname, ptype in t.params:
                    ref(t, ptype, f"parameter '{pname}'")
            elif k == KIND_DATASEC:
                end = 0
                for v in t.vars:
                    ref(t, v.type, "variable")
                    if v.offset + v.size > t.size and t.size:
                        raise BtfError(f"BTF datasec '{t.name}': variable at {v.offset}+{v.size} "
                                       f"is outside its {t.size} bytes")
                    end = max(end, v.offset + v.size)
            else:
                ref(t, t.type, "type")
            if k in (KIND_FUNC, KIND_VAR) and t.type == 0 and not (k == KIND_VAR and t.linkage == abi.BTF_VAR_GLOBAL_EXTERN):
                # (an extern VAR may be void: `extern void sym __ksym`, an address)
                raise BtfError(f"BTF {t.kind_name} [{t.id}] '{t.name}' has no type")
            if k == KIND_FUNC and self.types[t.type].kind != KIND_FUNC_PROTO:
                raise BtfError(f"BTF func [{t.id}] '{t.name}' does not point to a func_proto")
        # sizes resolve without loops or overflow; pointer/modifier chains end
        for t in self.types[1:]:
            if t.kind == KIND_PTR or t.kind in MODIFIER_KINDS:
                cur = t
                for _ in range(MAX_RESOLVE_DEPTH):
                    if cur.kind != KIND_PTR and cur.kind not in MODIFIER_KINDS:
                        break
                    cur = self.types[cur.type]
                else:
                    raise BtfError(f"BTF {t.kind_name} [{t.id}]: pointer/modifier chain too long (loop?)")
            if t.kind in MODIFIER_KINDS or t.kind == KIND_ARRAY:
                self.skip_modifiers(t.id)
                target = self.types[self.skip_modifiers(t.id)] if t.kind != KIND_ARRAY else t
                if target.kind not in (KIND_UNKN, KIND_FWD, KIND_FUNC_PROTO, KIND_FUNC):
                    self.size_of(t.id)

    # -- queries ------------------------------------------------------------
    def type(self, type_id):
        if 0 <= type_id < len(self.types):
            return self.types[type_id]
        raise BtfError(f"BTF type id {type_id} out of range (0..{len(self.types) - 1})")

    def _ids_named(self, name):
        return list(self._names.get(name, ()))

    def _ids_with_prefix(self, prefix):
        return sorted(i for n, ids in self._names.items() if n.startswith(prefix) for i in ids)

    def __len__(self):
        return len(self.types)

    # -- fixups and output --------------------------------------------------
    def fixup_datasecs(self, section_sizes, symbol_offsets):
        """Fill DATASEC sizes and variable offsets clang leaves zero (it cannot know them
        before the final link, so an object's DATASECs say size 0 and offset 0).

        ``section_sizes``: ELF section name -> size; ``symbol_offsets``:
        (section, variable) -> symbol value. DATASECs for sections the ELF lacks
        (``.kconfig``, ``.ksyms``) are left for the extern handling.
        """
        for t in self.types[1:]:
            if t.kind != KIND_DATASEC or t.name not in section_sizes:
                continue
            t.size = section_sizes[t.name]
            fixed = []
            for v in t.vars:
                var = self.type(v.type)
                if var.kind != KIND_VAR:
                    fixed.append(v)  # FUNC entries (externs) keep theirs
                    continue
                key = (t.name, var.name)
                if key not in symbol_offsets:
                    raise BtfError(f"BTF datasec '{t.name}': no ELF symbol for variable '{var.name}'")
                size = self.size_of(var.type)
                off = symbol_offsets[key]
                if isinstance(off, (list, tuple)):  # same-named statics of a linked object: the BTF knows which
                    off = v.offset if v.offset in off else off[0] if len(off) == 1 else None
                    if off is None:
                        raise BtfError(f"BTF datasec '{t.name}': {len(symbol_offsets[key])} symbols are named "
                                       f"'{var.name}' and none is at the BTF's offset {v.offset}")
                if off + size > t.size:
                    raise BtfError(f"BTF datasec '{t.name}': variable '{var.name}' at {off}+{size} "
                                   f"is outside the {t.size}-byte section")
                fixed.append(VarSecInfo(v.type, off, size))
            fixed.sort(key=lambda v: v.offset)
            t.vars = fixed
            explain.trace("btf", f"datasec {t.name}: size {t.size}",
                          *(f"{self.types[v.type].name} @ {v.offset} ({v.size} bytes)" for v in fixed))

    def to_bytes(self):
        """Serialise (header, types, strings) in this BTF's byte order."""
        E = self.endian
        tdata = b"".join(encode_type(t, E) for t in self.types[1:])
        return btf_wire.pack_header(E, self.flags, len(tdata), len(self.strings)) + tdata + self.strings

    def add_string(self, s):
        """Append a string (for sanitising) and return its offset."""
        b = s.encode() + b"\0"
        pos = self.strings.find(b"\0" + b)
        if pos >= 0:
            return pos + 1
        off = len(self.strings)
        self.strings += b
        return off

    def copy(self):
        """An independent copy (the kernel gets a sanitised copy; CO-RE keeps the original)."""
        return Btf.parse(self.to_bytes())

    def codec(self, type_id):
        """A :class:`~btf_codec.Codec` for values of this type (map keys/values, global data)."""
        from .btf_codec import make_codec

        return make_codec(self, type_id)


def _string_reader(strings):
    """``off -> name`` over one string table, memoised (a struct names its members many times)."""
    cache = {}

    def name_of_off(off):
        s = cache.get(off)
        if s is None:
            s = cache[off] = btf_wire.string_at(strings, off)
        return s

    return name_of_off
