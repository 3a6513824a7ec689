"""The copy of an object's BTF that the kernel accepts.

clang describes ``extern`` symbols in BTF in ways the kernel's BTF checker
refuses: FUNCs and VARs with *extern* linkage, FUNCs with unnamed parameters, and the ``.ksyms`` /
``.kconfig`` DATASECs whose entries are functions, ``void`` variables, or
have no offsets. libbpf rewrites them before ``BPF_BTF_LOAD``; so do we:
extern linkage becomes static (functions) or global (variables), a function or ``void`` entry of a DATASEC
becomes a dummy ``int`` variable, and the extern DATASECs get a sequential
layout. The original BTF is kept unchanged for CO-RE and for decoding.
"""

from ebpf_energy.loader import uapi
from ebpf_energy.loader.btf import (INT_SIGNED, KIND_DATASEC, KIND_FUNC, KIND_INT, KIND_VAR, Btf, BtfType,
                                    VarSecInfo)

FUNC_EXTERN = uapi.BTF_FUNC_EXTERN
FUNC_STATIC = uapi.BTF_FUNC_STATIC  # global would make the kernel demand named parameters, which externs lack
VAR_EXTERN = uapi.BTF_VAR_GLOBAL_EXTERN
VAR_GLOBAL_ALLOCATED = uapi.BTF_VAR_GLOBAL_ALLOCATED
EXTERN_SECTIONS = (".ksyms", ".kconfig")


def _dummy_var(btf: Btf) -> int:
    """Append ``int ksym_dummy`` (an INT and a VAR) and return the VAR's id."""
    i = BtfType(len(btf.types), KIND_INT, "int", btf.add_string("int"))
    i.size, i.int_bits, i.int_encoding = 4, 32, INT_SIGNED
    btf.types.append(i)
    v = BtfType(len(btf.types), KIND_VAR, "ksym_dummy", btf.add_string("ksym_dummy"))
    v.type, v.linkage = i.id, VAR_GLOBAL_ALLOCATED
    btf.types.append(v)
    return v.id


def _name_params(btf: Btf, proto: BtfType):
    """The kernel wants every parameter of a FUNC named; extern prototypes have none."""
    for i, (name, ptype) in enumerate(proto.params):
        if not name and ptype:
            proto.params[i] = (f"arg{i}", ptype)
            proto.param_name_offs[i] = btf.add_string(f"arg{i}")


def for_kernel(btf: Btf, hidden=frozenset()) -> bytes:
    """Serialised BTF the kernel's checker accepts (a copy; ``btf`` is untouched).
    Functions in ``hidden`` (global with hidden visibility, as usdt.bpf.h's
    ``__weak __hidden`` helpers) become static, as libbpf makes them: the
    verifier then checks them in their caller's context, not alone."""
    if not _needs_work(btf) and not any(t.kind == KIND_FUNC and t.name in hidden for t in btf.types[1:]):
        return btf.to_bytes()
    k = btf.copy()
    for t in k.types[1:]:
        if t.kind == KIND_FUNC and t.name in hidden:
            t.linkage = FUNC_STATIC
        elif t.kind == KIND_FUNC and t.linkage == FUNC_EXTERN:
            t.linkage = FUNC_STATIC
            _name_params(k, k.types[t.type])
        elif t.kind == KIND_VAR and t.linkage == VAR_EXTERN:
            t.linkage = VAR_GLOBAL_ALLOCATED
            if k.skip_modifiers(t.type) == 0:  # `extern const void sym`: a VAR of void is invalid
                t.type = k.types[_dummy_var(k)].type
    dummy = None
    for t in list(k.types[1:]):
        if t.kind != KIND_DATASEC or t.name not in EXTERN_SECTIONS:
            continue
        offset, layout = 0, []
        for v in t.vars:
            target = k.types[v.type]
            size = 0
            if target.kind == KIND_VAR and k.skip_modifiers(target.type) != 0:
                size = k.size_of(target.type)
            if size == 0:  # a function or `extern const void sym`: stands in as an int
                if dummy is None:
                    dummy = _dummy_var(k)
                var_id, size = dummy, 4
            else:
                var_id = v.type
            align = min(8, size) if size in (1, 2, 4, 8) else 8
            offset = (offset + align - 1) // align * align
            layout.append(VarSecInfo(var_id, offset, size))
            offset += size
        t.vars = layout
        t.size = max(offset, 1)
    return k.to_bytes()


def _needs_work(btf: Btf) -> bool:
    return any((t.kind in (KIND_FUNC, KIND_VAR) and t.linkage == FUNC_EXTERN) or
               (t.kind == KIND_DATASEC and t.name in EXTERN_SECTIONS) for t in btf.types[1:])
