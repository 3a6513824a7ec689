"""BTF-defined maps: the ``struct { __uint(...); __type(...); } name SEC(".maps")`` idiom.

Each variable in the ``.maps`` DATASEC is an anonymous struct whose members
carry the attributes in their *types*: ``__uint(x, N)`` is ``int (*x)[N]``
(a pointer to an array of N elements) and ``__type(key, T)`` is ``T *key``.
"""

from collections import namedtuple

from . import explain
from .btf import KIND_ARRAY, KIND_DATASEC, KIND_PTR, KIND_STRUCT, KIND_VAR
from .errors import BtfError

MapDef = namedtuple("MapDef", "name type key_size value_size max_entries map_flags numa_node pinning "
                              "key_type_id value_type_id offset")

_UINT_FIELDS = ("type", "key_size", "value_size", "max_entries", "map_flags", "numa_node", "pinning",
                "map_extra")
_TYPE_FIELDS = ("key", "value")


def _uint_value(btf, map_name, member):
    t = btf.type(member.type)
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
    offsets = {s.name: s.value for s in elf.symbols if s.shndx == sec.index and s.type != "SECTION"}
    maps = []
    for v in ds.vars:
        var = btf.type(v.type)
        if var.kind != KIND_VAR:
            raise BtfError(f".maps DATASEC entry [{v.type}] is a {var.kind_name}, not a variable")
        name = var.name
        st = btf.type(btf.resolve(var.type))
        if st.kind != KIND_STRUCT:
            raise BtfError(f"map '{name}': definition must be a struct, found {st.kind_name}")
        attrs = dict.fromkeys(_UINT_FIELDS, 0)
        attrs["numa_node"] = None
        key_id = value_id = 0
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
                raise BtfError(f"map '{name}': map-in-map/prog-array 'values' initialisers are not supported")
            else:
                raise BtfError(f"map '{name}': unknown map attribute '{m.name}' "
                               f"(known: {', '.join(_UINT_FIELDS + _TYPE_FIELDS)})")
        if attrs["type"] == 0:
            raise BtfError(f"map '{name}': missing __uint(type, ...)")
        maps.append(MapDef(name, attrs["type"], attrs["key_size"], attrs["value_size"], attrs["max_entries"],
                           attrs["map_flags"], attrs["numa_node"], attrs["pinning"], key_id, value_id,
                           offsets.get(name, v.offset)))
    explain.trace("map", f"{len(maps)} BTF-defined maps in .maps",
                  *(f"{m.name}: type {m.type}, key {m.key_size} B, value {m.value_size} B, "
                    f"max_entries {m.max_entries}" for m in maps))
    return maps


def _agree(name, field, attrs, size):
    if attrs[field] and attrs[field] != size:
        raise BtfError(f"map '{name}': {field} {attrs[field]} disagrees with its __type ({size} bytes)")
    attrs[field] = size
