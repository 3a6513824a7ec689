"""BTF-defined maps: the ``struct { __uint(...); __type(...); } name SEC(".maps")`` idiom.

Each variable in the ``.maps`` DATASEC is an anonymous struct whose members
carry the attributes in their *types*: ``__uint(x, N)`` is ``int (*x)[N]``
(a pointer to an array of N elements), ``__ulong(x, N)`` an anonymous enum
(enum64 when N needs 64 bits) whose one value is N, and ``__type(key, T)`` is
``T *key``. A map of maps or a program array declares its values with
``__array(values, T)``: a flexible array of pointers to ``T``, where ``T`` is
the inner map's own definition (map of maps) or a function prototype (program
array); the initialiser ``.values = { [2] = &inner }`` is a relocation in
``.maps`` at that slot's offset.
"""

from collections import namedtuple

from . import explain, uapi
from .btf import KIND_ARRAY, KIND_DATASEC, KIND_ENUM, KIND_ENUM64, KIND_FUNC_PROTO, KIND_PTR, KIND_STRUCT, \
    KIND_VAR
from .errors import BtfError

MapDef = namedtuple("MapDef", "name type key_size value_size max_entries map_flags numa_node pinning "
                              "key_type_id value_type_id offset map_extra inner slots")
MapDef.__new__.__defaults__ = (0, None, ())  # map_extra, inner (a MapDef), slots ((index, symbol name), ...)

_UINT_FIELDS = ("type", "key_size", "value_size", "max_entries", "map_flags", "numa_node", "pinning",
                "map_extra")
_TYPE_FIELDS = ("key", "value")
ARRAY_OF_MAPS, HASH_OF_MAPS = uapi.BPF_MAP_TYPE_ARRAY_OF_MAPS, uapi.BPF_MAP_TYPE_HASH_OF_MAPS
SLOT_KEY_SIZE = 4  # initial slots of a hash of maps: int keys only, as libbpf
PROG_ARRAY = uapi.BPF_MAP_TYPE_PROG_ARRAY
FD_SLOT_SIZE = 4  # a map-in-map or prog array value: an fd in, an id out
PTR_SIZE = 8


def _uint_value(btf, map_name, member):
    t = btf.type(member.type)
    if t.kind in (KIND_ENUM, KIND_ENUM64):  # __ulong(name, value)
        if len(t.values) != 1:
            raise BtfError(f"map '{map_name}': '{member.name}' must be __ulong({member.name}, N), "
                           f"found an enum of {len(t.values)} values")
        return t.values[0][1] & 0xFFFFFFFFFFFFFFFF
    if t.kind != KIND_PTR:
        raise BtfError(f"map '{map_name}': '{member.name}' must be __uint({member.name}, N) "
                       f"(a pointer to an array), found {t.kind_name}")
    arr = btf.type(t.type)
    if arr.kind != KIND_ARRAY:
        raise BtfError(f"map '{map_name}': '{member.name}' must be __uint({member.name}, N), "
                       f"found a pointer to {arr.kind_name}")
    return arr.array.nelems


def parse_btf_maps(elf, btf):
    """Map definitions from ``.maps``, in section order; [] when the object has none."""
    sec = elf.section(".maps")
    if sec is None:
        return []
    datasecs = btf.find(".maps", KIND_DATASEC)
    if not datasecs:
        raise BtfError("the object has a .maps section but no BTF DATASEC describing it")
    ds = btf.type(datasecs[0])
    symbols = {s.name: s for s in elf.symbols if s.shndx == sec.index and s.type != "SECTION"}
    relocs = elf.relocations.get(sec.index, [])
    maps = []
    for v in ds.vars:
        var = btf.type(v.type)
        if var.kind != KIND_VAR:
            raise BtfError(f".maps DATASEC entry [{v.type}] is a {var.kind_name}, not a variable")
        name = var.name
        sym = symbols.get(name)
        offset, size = (sym.value, sym.size) if sym is not None else (v.offset, v.size)
        mine = [r for r in relocs if offset <= r.offset < offset + size]  # its `values` initialisers
        maps.append(_parse_def(btf, name, var.type, offset, mine))
    explain.trace("map", f"{len(maps)} BTF-defined maps in .maps",
                  *(f"{m.name}: type {m.type}, key {m.key_size} B, value {m.value_size} B, "
                    f"max_entries {m.max_entries}" + (f", inner map {m.inner.name}" if m.inner else "")
                    + (f", initial slots {dict(m.slots)}" if m.slots else "") for m in maps))
    return maps


def _parse_def(btf, name, type_id, offset, relocs, inner=False):
    st = btf.type(btf.skip_modifiers(type_id))
    if st.kind != KIND_STRUCT:
        raise BtfError(f"map '{name}': definition must be a struct, found {st.kind_name}")
    attrs = dict.fromkeys(_UINT_FIELDS, 0)
    attrs["numa_node"] = None
    key_id = value_id = 0
    values = None
    for m in st.members:
        if m.name in _UINT_FIELDS:
            attrs[m.name] = _uint_value(btf, name, m)
        elif m.name in _TYPE_FIELDS:
            t = btf.type(m.type)
            if t.kind != KIND_PTR:
                raise BtfError(f"map '{name}': '{m.name}' must be __type({m.name}, T), found {t.kind_name}")
            size = btf.size_of(t.type)
            if m.name == "key":
                key_id = t.type
                _agree(name, "key_size", attrs, size)
            else:
                value_id = t.type
                _agree(name, "value_size", attrs, size)
        elif m.name == "values":
            if inner:
                raise BtfError(f"map '{name}': an inner map cannot itself hold maps (one level only)")
            values = m
        else:
            raise BtfError(f"map '{name}': unknown map attribute '{m.name}' "
                           f"(known: {', '.join(_UINT_FIELDS + _TYPE_FIELDS + ('values',))})")
    if attrs["type"] == 0:
        raise BtfError(f"map '{name}': missing __uint(type, ...)")
    inner_def, slots = None, ()
    if values is not None:
        inner_def, slots = _values(btf, name, attrs, values, offset, relocs)
        value_id = 0
        attrs["value_size"] = attrs["value_size"] or FD_SLOT_SIZE
        if attrs["value_size"] != FD_SLOT_SIZE:
            raise BtfError(f"map '{name}': a map of maps or program array holds {FD_SLOT_SIZE}-byte fds, "
                           f"not {attrs['value_size']}-byte values")
    return MapDef(name, attrs["type"], attrs["key_size"], attrs["value_size"], attrs["max_entries"],
                  attrs["map_flags"], attrs["numa_node"], attrs["pinning"], key_id, value_id, offset,
                  attrs["map_extra"], inner_def, slots)


def _values(btf, name, attrs, member, offset, relocs):
    """The inner map definition (maps of maps) and the initial slots
    ``((index, symbol), ...)`` of ``__array(values, T)``."""
    arr = btf.type(member.type)
    if arr.kind != KIND_ARRAY or btf.type(arr.array.elem_type).kind != KIND_PTR:
        raise BtfError(f"map '{name}': 'values' must be __array(values, T) (an array of pointers), "
                       f"found {arr.kind_name}")
    pointee_id = btf.type(arr.array.elem_type).type
    pointee = btf.type(btf.skip_modifiers(pointee_id))
    inner = None
    if attrs["type"] in (ARRAY_OF_MAPS, HASH_OF_MAPS):
        if pointee.kind != KIND_STRUCT:
            raise BtfError(f"map '{name}': the values of a map of maps must be a map definition "
                           f"(__array(values, struct {{ ... }})), found {pointee.kind_name}")
        inner = _parse_def(btf, name + ".inner", pointee_id, 0, (), inner=True)
    elif attrs["type"] == PROG_ARRAY:
        if pointee.kind != KIND_FUNC_PROTO:
            raise BtfError(f"map '{name}': the values of a program array must be a function type "
                           f"(__array(values, int (void *))), found {pointee.kind_name}")
    else:
        raise BtfError(f"map '{name}': only maps of maps and program arrays take __array(values, ...)")
    start = offset + member.bit_offset // 8
    slots = []
    for r in relocs:
        if r.offset < start:
            continue
        index, rest = divmod(r.offset - start, PTR_SIZE)
        if rest:
            raise BtfError(f"map '{name}': a 'values' initialiser at byte {r.offset} is not on a slot boundary")
        if index >= attrs["max_entries"]:
            raise BtfError(f"map '{name}': initial slot {index} is past max_entries {attrs['max_entries']}")
        slots.append((index, r.symbol.name))
    if slots and attrs["type"] == HASH_OF_MAPS and attrs["key_size"] != SLOT_KEY_SIZE:
        # the slot's index is its key, an int: libbpf refuses any other key size here, and so do we
        raise BtfError(f"map '{name}': a hash of maps with initial slots needs a {SLOT_KEY_SIZE}-byte key "
                       f"(each slot's index is its key, an int), not {attrs['key_size']} bytes; "
                       "fill it from the program or from user space instead")
    return inner, tuple(slots)


def _agree(name, field, attrs, size):
    if attrs[field] and attrs[field] != size:
        raise BtfError(f"map '{name}': {field} {attrs[field]} disagrees with its __type ({size} bytes)")
    attrs[field] = size
