"""CO-RE: resolve each relocation record against a target BTF and patch the instruction.

A record says "this instruction holds <kind> of <type>.<access path> as the
compiler saw it"; we find the same thing in the target (the kernel's BTF, or a
test stand-in) by *essential* name (``task_struct___v2`` -> ``task_struct``),
recompute the value, and rewrite the instruction. Rules follow libbpf so that
objects behave the same under both loaders:

* every candidate type that matches must give the same answer, else CoreError;
* no candidate: existence checks resolve to 0, everything else *poisons* the
  instruction (``call 0xbad2310``) so the load fails only if it is reachable;
* before patching, the instruction must hold what the local BTF predicts.
"""

from collections import namedtuple

from . import abi, explain
from . import insn as I
from .btf import (KIND_ARRAY, KIND_ENUM, KIND_ENUM64, KIND_FLOAT, KIND_FUNC_PROTO, KIND_FWD, KIND_INT, KIND_PTR,
                  KIND_STRUCT, KIND_UNION, KIND_UNKN, INT_SIGNED, essential_name)
from .errors import BtfError, CoreError

# enum bpf_core_relo_kind, under the short names the rules below use
FIELD_BYTE_OFFSET, FIELD_BYTE_SIZE, FIELD_EXISTS, FIELD_SIGNED = (
    abi.BPF_CORE_FIELD_BYTE_OFFSET, abi.BPF_CORE_FIELD_BYTE_SIZE, abi.BPF_CORE_FIELD_EXISTS, abi.BPF_CORE_FIELD_SIGNED)
FIELD_LSHIFT_U64, FIELD_RSHIFT_U64 = abi.BPF_CORE_FIELD_LSHIFT_U64, abi.BPF_CORE_FIELD_RSHIFT_U64
TYPE_ID_LOCAL, TYPE_ID_TARGET, TYPE_EXISTS, TYPE_SIZE, TYPE_MATCHES = (
    abi.BPF_CORE_TYPE_ID_LOCAL, abi.BPF_CORE_TYPE_ID_TARGET, abi.BPF_CORE_TYPE_EXISTS, abi.BPF_CORE_TYPE_SIZE,
    abi.BPF_CORE_TYPE_MATCHES)
ENUMVAL_EXISTS, ENUMVAL_VALUE = abi.BPF_CORE_ENUMVAL_EXISTS, abi.BPF_CORE_ENUMVAL_VALUE
# libbpf's short names, as --explain prints them (not the enum's)
RELO_KIND_NAMES = ("byte_off", "byte_sz", "field_exists", "signed", "lshift_u64", "rshift_u64",
                   "local_type_id", "target_type_id", "type_exists", "type_size", "enumval_exists",
                   "enumval_value", "type_matches")
FIELD_KINDS = frozenset((FIELD_BYTE_OFFSET, FIELD_BYTE_SIZE, FIELD_EXISTS, FIELD_SIGNED, FIELD_LSHIFT_U64,
                         FIELD_RSHIFT_U64))
TYPE_KINDS = frozenset((TYPE_ID_LOCAL, TYPE_ID_TARGET, TYPE_EXISTS, TYPE_SIZE, TYPE_MATCHES))
ENUMVAL_KINDS = frozenset((ENUMVAL_EXISTS, ENUMVAL_VALUE))
POISON_IMM = I.POISON_IMM
MAX_SPEC_LEN = 64
MAX_DEPTH = 32

Acc = namedtuple("Acc", "type_id idx name")   # name None: array index accessor


class AccessPath:
    """A resolved access path in one BTF (named/array accessors, bit offset); not an ObjectSpec."""

    def __init__(self, btf, root_id, kind):
        self.btf = btf
        self.root_id = root_id
        self.kind = kind
        self.raw = []
        self.acc = []
        self.bit_offset = 0

    def describe(self):
        btf = self.btf
        root = btf.describe(self.root_id)
        raw = ":".join(map(str, self.raw))
        if self.kind in ENUMVAL_KINDS:
            return f"{root}::{self.acc[0].name} = {btf.type(self.acc[0].type_id).values[self.acc[0].idx][1]} ({raw})"
        if self.kind in TYPE_KINDS:
            return f"{root} ({raw})"
        path = "" if not self.acc or self.acc[0].idx == 0 else f"[{self.acc[0].idx}]"
        for a in self.acc[1:]:
            path += f".{a.name}" if a.name is not None else f"[{a.idx}]"
        return f"{root}{path} ({raw} @ byte {self.bit_offset // 8})"


class CoreResult:
    """What :func:`resolve` decided for one record; :func:`patch` applies it."""

    __slots__ = ("kind", "poison", "orig_val", "new_val", "orig_size", "new_size", "local_desc",
                 "target_desc", "reason", "validate", "fail_memsz_adjust", "orig_type_id", "new_type_id",
                 "candidates")

    def __init__(self, kind):
        self.kind = kind
        self.poison = False
        self.orig_val = self.new_val = 0
        self.orig_size = self.new_size = 0
        self.orig_type_id = self.new_type_id = 0
        self.local_desc = self.target_desc = self.reason = ""
        self.validate = True
        self.fail_memsz_adjust = False
        self.candidates = []

    @property
    def kind_name(self):
        return RELO_KIND_NAMES[self.kind]

    def __repr__(self):
        what = "poison" if self.poison else f"{self.orig_val} -> {self.new_val}"
        return f"<CoreResult {self.kind_name} {self.local_desc}: {what}>"


class _Poison(Exception):
    """Internal: the value cannot be computed; the instruction gets poisoned."""


# -- spec parsing -------------------------------------------------------------------

def _is_composite(t):
    return t.kind in (KIND_STRUCT, KIND_UNION)


def _is_enum(t):
    return t.kind in (KIND_ENUM, KIND_ENUM64)


def _skip(btf, type_id):
    tid = btf.skip_modifiers(type_id)
    return tid, btf.type(tid)


def _is_flex_arr(btf, prev_acc, arr_t):
    if prev_acc.name is None or arr_t.array.nelems > 0:
        return False
    return prev_acc.idx == len(btf.type(prev_acc.type_id).members) - 1


def parse_spec(btf, type_id, access_str, kind):
    """Turn ``"0:1:2"`` into accessors against ``btf`` (libbpf's bpf_core_parse_spec)."""
    try:
        raw = [int(x) for x in access_str.split(":")]
    except ValueError:
        raise CoreError(f"CO-RE access string '{access_str}' is malformed") from None
    if not raw or len(raw) > MAX_SPEC_LEN or any(x < 0 for x in raw):
        raise CoreError(f"CO-RE access string '{access_str}' is malformed")
    spec = AccessPath(btf, type_id, kind)
    spec.raw = list(raw)
    if kind in TYPE_KINDS:
        if raw != [0]:
            raise CoreError(f"type-based CO-RE relocation with access string '{access_str}' (expected '0')")
        return spec
    tid, t = _skip(btf, type_id)
    spec.acc.append(Acc(tid, raw[0], None))
    if kind in ENUMVAL_KINDS:
        if not _is_enum(t) or len(raw) > 1 or raw[0] >= len(t.values):
            raise CoreError(f"enum CO-RE relocation on {btf.describe(type_id)} with access '{access_str}' is invalid")
        spec.acc[0] = Acc(tid, raw[0], t.values[raw[0]][0])
        return spec
    if kind not in FIELD_KINDS:
        raise CoreError(f"unknown CO-RE relocation kind {kind}")
    spec.bit_offset = raw[0] * btf.size_of(tid) * 8
    cur = tid
    for idx in raw[1:]:
        cur, t = _skip(btf, cur)
        if _is_composite(t):
            if idx >= len(t.members):
                raise CoreError(f"CO-RE access '{access_str}': {btf.describe(cur)} has no member #{idx}")
            m = t.members[idx]
            spec.bit_offset += m.bit_offset
            if m.name:
                spec.acc.append(Acc(cur, idx, m.name))
            cur = m.type
        elif t.kind == KIND_ARRAY:
            elem_id, _ = _skip(btf, t.array.elem_type)
            if not _is_flex_arr(btf, spec.acc[-1], t) and idx >= t.array.nelems:
                raise CoreError(f"CO-RE access '{access_str}': index {idx} beyond {btf.describe(cur)}")
            spec.acc.append(Acc(elem_id, idx, None))
            spec.bit_offset += idx * btf.size_of(elem_id) * 8
            cur = elem_id
        else:
            raise CoreError(f"CO-RE access '{access_str}' on {btf.describe(type_id)} steps into "
                            f"{t.kind_name} {btf.describe(cur)}")
    return spec


# -- compatibility rules ------------------------------------------------------------

def _kinds_compat(a, b):
    return a.kind == b.kind or (_is_enum(a) and _is_enum(b))


def _names_match(a, b):
    return essential_name(a) == essential_name(b)


def fields_compat(lb, lid, tb, tid):
    """Can a local field of type ``lid`` be read from a target field of type ``tid``?"""
    for _ in range(MAX_DEPTH):
        lid, lt = _skip(lb, lid)
        tid, tt = _skip(tb, tid)
        if _is_composite(lt) and _is_composite(tt):
            return True
        if not _kinds_compat(lt, tt):
            return False
        k = lt.kind
        if k in (KIND_PTR, KIND_FLOAT):  # pointers and floats are always compatible
            return True
        if k in (KIND_FWD, KIND_ENUM, KIND_ENUM64):
            return _names_match(lt.name, tt.name)
        if k == KIND_INT:
            return lt.int_offset == 0 and tt.int_offset == 0
        if k == KIND_ARRAY:
            lid, tid = lt.array.elem_type, tt.array.elem_type
            continue
        return False
    raise CoreError("CO-RE type nesting too deep")


def types_compat(lb, lid, tb, tid, depth=MAX_DEPTH):
    """libbpf's bpf_core_types_are_compat: same shape, names only at the root."""
    lt, tt = lb.type(lid), tb.type(tid)
    if not _kinds_compat(lt, tt):
        return False
    while True:
        depth -= 1
        if depth < 0:
            raise CoreError("CO-RE type nesting too deep")
        lid, lt = _skip(lb, lid)
        tid, tt = _skip(tb, tid)
        if not _kinds_compat(lt, tt):
            return False
        k = lt.kind
        if k in (KIND_UNKN, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD, KIND_ENUM64):
            return True
        if k == KIND_INT:
            return lt.int_offset == 0 and tt.int_offset == 0
        if k == KIND_PTR:
            lid, tid = lt.type, tt.type
        elif k == KIND_ARRAY:
            lid, tid = lt.array.elem_type, tt.array.elem_type
        elif k == KIND_FUNC_PROTO:
            if len(lt.params) != len(tt.params):
                return False
            for (_, lp), (_, tp) in zip(lt.params, tt.params):
                if not types_compat(lb, lp, tb, tp, depth):
                    return False
            lid, tid = lt.type, tt.type
        else:
            return False


def types_match(lb, lid, tb, tid, behind_ptr=False, depth=MAX_DEPTH):
    """libbpf's TYPE_MATCHES relation (stricter than compat: sizes, signedness, members)."""
    if depth <= 0:
        raise CoreError("CO-RE type nesting too deep")
    while True:
        lid, lt = _skip(lb, lid)
        tid, tt = _skip(tb, tid)
        if lt.name and not _names_match(lt.name, tt.name):
            return False
        lk, tk = lt.kind, tt.kind
        if lk == KIND_UNKN:
            return tk == KIND_UNKN
        if lk == KIND_FWD:
            if behind_ptr and lk != tk:
                return (tk == KIND_STRUCT and not lt.kind_flag) or (tk == KIND_UNION and lt.kind_flag)
            return lk == tk and lt.kind_flag == tt.kind_flag
        if _is_enum(lt):
            if not _is_enum(tt) or lt.size != tt.size:
                return False
            tnames = {essential_name(n) for n, _ in tt.values if n}
            return all(essential_name(n) in tnames for n, _ in lt.values)
        if _is_composite(lt):
            if behind_ptr:
                if lk == tk:
                    return True
                return tk == KIND_FWD and (lk == KIND_UNION) == bool(tt.kind_flag)
            if lk != tk or len(lt.members) > len(tt.members):
                return False
            for lm in lt.members:
                if not any(tm.name and tm.name == lm.name and
                           types_match(lb, lm.type, tb, tm.type, behind_ptr, depth - 1) for tm in tt.members):
                    return False
            return True
        if lk == KIND_INT:
            return tk == KIND_INT and lt.size == tt.size and \
                (lt.int_encoding & INT_SIGNED) == (tt.int_encoding & INT_SIGNED)
        if lk == KIND_PTR:
            if tk != KIND_PTR:
                return False
            behind_ptr = True
            lid, tid = lt.type, tt.type
        elif lk == KIND_ARRAY:
            if tk != KIND_ARRAY or lt.array.nelems != tt.array.nelems:
                return False
            lid, tid = lt.array.elem_type, tt.array.elem_type
        elif lk == KIND_FUNC_PROTO:
            if tk != KIND_FUNC_PROTO or len(lt.params) != len(tt.params):
                return False
            for (_, lp), (_, tp) in zip(lt.params, tt.params):
                if not types_match(lb, lp, tb, tp, behind_ptr, depth - 1):
                    return False
            lid, tid = lt.type, tt.type
        else:
            return False
        depth -= 1
        if depth <= 0:
            raise CoreError("CO-RE type nesting too deep")


# -- matching a local spec in a target candidate ----------------------------------------

def _match_member(lb, lacc, tb, tid, spec, depth=0):
    """Find the local member (by exact name) in target composite ``tid``, descending into
    anonymous members; pushes raw/accessors onto ``spec``. Returns the member type id or None."""
    if depth > MAX_DEPTH:
        raise CoreError(f"CO-RE: anonymous members of {tb.describe(tid)} nest too deeply (loop?)")
    lm = lb.type(lacc.type_id).members[lacc.idx]
    tid, tt = _skip(tb, tid)
    if not _is_composite(tt):
        return None
    for i, m in enumerate(tt.members):
        if len(spec.raw) >= MAX_SPEC_LEN:
            raise CoreError("CO-RE access path too deep")
        spec.bit_offset += m.bit_offset
        spec.raw.append(i)
        if not m.name:
            found = _match_member(lb, lacc, tb, m.type, spec, depth + 1)
            if found is not None:
                return found
        elif m.name == lm.name:
            if not fields_compat(lb, lm.type, tb, m.type):
                spec.bit_offset -= m.bit_offset
                spec.raw.pop()
                return None
            spec.acc.append(Acc(tid, i, m.name))
            return m.type
        spec.bit_offset -= m.bit_offset
        spec.raw.pop()
    return None


def match_spec(local, target, cand_id):
    """The target AccessPath for ``cand_id``, or None when the candidate does not fit."""
    spec = AccessPath(target, cand_id, local.kind)
    if local.kind in TYPE_KINDS:
        if local.kind == TYPE_MATCHES:
            ok = types_match(local.btf, local.root_id, target, cand_id)
        else:
            ok = types_compat(local.btf, local.root_id, target, cand_id)
        if ok:
            spec.raw = [0]
            return spec
        return None
    if local.kind in ENUMVAL_KINDS:
        tid, tt = _skip(target, cand_id)
        if not _is_enum(tt):
            return None
        want = essential_name(local.acc[0].name)
        for i, (n, _) in enumerate(tt.values):
            if n and essential_name(n) == want:
                spec.acc.append(Acc(tid, i, n))
                spec.raw.append(i)
                return spec
        return None
    tid = cand_id
    for i, lacc in enumerate(local.acc):
        tid, tt = _skip(target, tid)
        if lacc.name is not None:
            nxt = _match_member(local.btf, lacc, target, tid, spec)
            if nxt is None:
                return None
            tid = nxt
        else:
            if i > 0:
                if tt.kind != KIND_ARRAY:
                    return None
                if not _is_flex_arr(target, spec.acc[-1], tt) and lacc.idx >= tt.array.nelems:
                    return None
                tid, _ = _skip(target, tt.array.elem_type)
            if len(spec.raw) >= MAX_SPEC_LEN:
                raise CoreError("CO-RE access path too deep")
            spec.acc.append(Acc(tid, lacc.idx, None))
            spec.raw.append(lacc.idx)
            spec.bit_offset += lacc.idx * target.size_of(tid) * 8
    return spec


# -- computing values -------------------------------------------------------------------

def _field_value(kind, spec, res, side):
    """Value (and access size/type for BYTE_OFFSET) of a field relocation in one spec.

    ``side`` is "orig" (local) or "new" (target); sets res.<side>_size/_type_id.
    """
    if kind == FIELD_EXISTS:
        return 1 if spec is not None else 0
    if spec is None:
        raise _Poison("field not found in target")
    btf = spec.btf
    acc = spec.acc[-1]
    if acc.name is None:  # array element (or the root itself)
        size = btf.size_of(acc.type_id)
        if kind == FIELD_BYTE_OFFSET:
            setattr(res, side + "_size", size)
            setattr(res, side + "_type_id", acc.type_id)
            return spec.bit_offset // 8
        if kind == FIELD_BYTE_SIZE:
            return size
        raise CoreError(f"CO-RE {RELO_KIND_NAMES[kind]} relocation cannot apply to an array element "
                        f"({spec.describe()})")
    t = btf.type(acc.type_id)
    m = t.members[acc.idx]
    ftid, mt = _skip(btf, m.type)
    bit_off = spec.bit_offset
    bit_sz = m.bitfield_size
    bitfield = bit_sz > 0
    if bitfield:
        byte_sz = mt.size
        if byte_sz <= 0:
            raise CoreError(f"CO-RE: bitfield {spec.describe()} has a zero-size type")
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise CoreError(f"CO-RE: bitfield {spec.describe()} cannot be read with one 64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = btf.size_of(ftid)
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    if side == "orig":
        res.validate = not bitfield  # clang and we may split bitfield loads differently
    if kind == FIELD_BYTE_OFFSET:
        if not bitfield:
            setattr(res, side + "_size", byte_sz)
            setattr(res, side + "_type_id", ftid)
        return byte_off
    if kind == FIELD_BYTE_SIZE:
        return byte_sz
    if kind == FIELD_SIGNED:
        if side == "orig":
            res.validate = True
        return int(mt.signed if mt.kind in (KIND_INT, KIND_ENUM, KIND_ENUM64) else False)
    if kind == FIELD_LSHIFT_U64:
        return 64 - (bit_off + bit_sz - byte_off * 8)
    if kind == FIELD_RSHIFT_U64:
        if side == "orig":
            res.validate = True
        return 64 - bit_sz
    raise CoreError(f"unknown CO-RE field relocation kind {kind}")


def _type_value(kind, spec, res, side):
    if spec is None:
        return 0  # type-based relocations resolve to 0 when the type is absent
    if kind in (TYPE_ID_LOCAL, TYPE_ID_TARGET):
        res.validate = False  # type ids may be renumbered by linking; never checked
        return spec.root_id
    if kind in (TYPE_EXISTS, TYPE_MATCHES):
        return 1
    if kind == TYPE_SIZE:
        return spec.btf.size_of(spec.root_id)
    raise CoreError(f"unknown CO-RE type relocation kind {kind}")


def _enum_value(kind, spec, res, side):
    if kind == ENUMVAL_EXISTS:
        return 1 if spec is not None else 0
    if spec is None:
        raise _Poison("enumerator not found in target")
    acc = spec.acc[0]
    return spec.btf.type(acc.type_id).values[acc.idx][1]


def _calc(kind, local, targ, res):
    """Fill orig_val from ``local`` and new_val from ``targ`` (None: no candidate)."""
    fn = _field_value if kind in FIELD_KINDS else _type_value if kind in TYPE_KINDS else _enum_value
    res.orig_val = fn(kind, local, res, "orig")
    try:
        res.new_val = fn(kind, targ, res, "new")
    except _Poison as p:
        res.poison = True
        res.reason = str(p)
        return
    if kind == FIELD_BYTE_OFFSET and res.orig_size != res.new_size and targ is not None:
        ot = local.btf.type(res.orig_type_id)
        nt = targ.btf.type(res.new_type_id)
        if ot.kind == KIND_PTR and nt.kind == KIND_PTR:
            return
        if ot.kind == KIND_INT and nt.kind == KIND_INT and not ot.int_encoding & INT_SIGNED \
                and not nt.int_encoding & INT_SIGNED:
            return
        res.fail_memsz_adjust = True
        res.reason = (f"field size differs ({res.orig_size} -> {res.new_size} bytes) and is not an unsigned "
                      f"integer or pointer, so the load cannot be resized")


# -- public entry points -------------------------------------------------------------

def find_candidates(local, local_id, target):
    """Target type ids with the local type's essential name and a compatible kind."""
    lt = local.type(local_id)
    if not lt.name:
        raise CoreError(f"CO-RE relocation on an anonymous {lt.kind_name} (type [{local_id}]) cannot be matched")
    kinds = {KIND_ENUM, KIND_ENUM64} if _is_enum(lt) else {lt.kind}
    return target.find_essential(essential_name(lt.name), kinds)


def resolve(relo, local, target):
    """Decide what one CO-RE record becomes in ``target`` (libbpf's bpf_core_calc_relo_insn)."""
    kind = relo.kind
    try:
        return _resolve(relo, local, target, kind)
    except BtfError as exc:
        raise CoreError(f"CO-RE relocation {RELO_KIND_NAMES[kind] if kind < len(RELO_KIND_NAMES) else kind} "
                        f"on type [{relo.type_id}] '{relo.access_str}': {exc}") from None


def _resolve(relo, local, target, kind):
    if not 0 <= kind <= TYPE_MATCHES:
        raise CoreError(f"unknown CO-RE relocation kind {kind}")
    lspec = parse_spec(local, relo.type_id, relo.access_str, kind)
    res = CoreResult(kind)
    res.local_desc = lspec.describe()
    if kind == TYPE_ID_LOCAL:
        res.orig_val = res.new_val = relo.type_id
        res.validate = False
        res.target_desc = "(local type id)"
        return res
    chosen = None
    for cand in find_candidates(local, relo.type_id, target):
        cspec = match_spec(lspec, target, cand)
        if cspec is None:
            continue
        cres = CoreResult(kind)
        _calc(kind, lspec, cspec, cres)
        res.candidates.append((cand, cspec.describe()))
        if chosen is None:
            chosen, cres_first = cspec, cres
            continue
        if cspec.bit_offset != chosen.bit_offset:
            raise CoreError(f"CO-RE: {res.local_desc} is ambiguous in the target: "
                            f"{chosen.describe()} vs {cspec.describe()}")
        if cres.poison != cres_first.poison or cres.new_val != cres_first.new_val:
            raise CoreError(f"CO-RE: {res.local_desc} resolves differently in target candidates "
                            f"{chosen.describe()} ({cres_first.new_val}) and {cspec.describe()} ({cres.new_val})")
    if chosen is None:
        _calc(kind, lspec, None, res)
        res.target_desc = "(not found in target)"
        if not res.poison:
            res.reason = "no matching type or field in the target"
    else:
        cres_first.local_desc, cres_first.candidates = res.local_desc, res.candidates
        res = cres_first
        res.target_desc = chosen.describe()
    return res


# -- instruction patching -------------------------------------------------------------------



def insn_text(insns, index):
    """A short disassembly of the instruction at ``index`` (what --explain prints)."""
    return I.describe(insns, index)


def _poison(insns, index):
    if insns[index * 8] == I.LD_IMM64 and len(insns) >= index * 8 + 16:
        I.put(insns, index + 1, I.CALL, imm=POISON_IMM)
    I.put(insns, index, I.CALL, imm=POISON_IMM)


def patch(insns, insn_index, result):
    """Rewrite instruction ``insn_index`` of ``insns`` (a bytearray) per ``result``.

    Returns (before_text, after_text). Raises CoreError when the instruction
    does not hold what the local BTF predicts or cannot take the new value.
    """
    if insn_index < 0 or len(insns) < (insn_index + 1) * 8:
        raise CoreError(f"CO-RE record points at instruction #{insn_index}, beyond the program")
    before = insn_text(insns, insn_index)
    code, dst, src, off, imm = I.decode(insns, insn_index)
    cls = code & 7
    where = f"insn #{insn_index} ({before}) for {result.local_desc}"
    if result.poison:
        _poison(insns, insn_index)
        return before, insn_text(insns, insn_index)
    orig, new = result.orig_val, result.new_val
    if cls in (I.BPF_ALU, I.BPF_ALU64):
        if code & 0x08:
            raise CoreError(f"CO-RE: {where} is an ALU instruction without an immediate")
        if result.validate and (imm & 0xFFFFFFFF) != (orig & 0xFFFFFFFF):
            raise CoreError(f"CO-RE: {where} holds {imm}, but the local BTF gives {orig}")
        if not -(1 << 31) <= new < (1 << 32):
            raise CoreError(f"CO-RE: {where}: value {new} does not fit a 32-bit immediate")
        new32 = new - (1 << 32) if new >= (1 << 31) else new
        I.put(insns, insn_index, code, dst, src, off, new32)
    elif cls in (I.BPF_LDX, I.BPF_ST, I.BPF_STX):
        if result.validate and off != orig:
            raise CoreError(f"CO-RE: {where} has offset {off}, but the local BTF gives {orig}")
        if new > 0x7FFF:
            raise CoreError(f"CO-RE: {where}: offset {new} does not fit the 16-bit offset field")
        if result.fail_memsz_adjust:
            explain.trace("core", f"{where}: {result.reason}; poisoned")
            _poison(insns, insn_index)
            return before, insn_text(insns, insn_index)
        if result.new_size != result.orig_size:
            have = I.SIZE_BYTES[code & 0x18]
            if have != result.orig_size:
                raise CoreError(f"CO-RE: {where} accesses {have} bytes, the local field has {result.orig_size}")
            if result.new_size not in I.BYTES_SIZE:
                raise CoreError(f"CO-RE: {where}: no load/store of {result.new_size} bytes")
            code = (code & ~0x18 & 0xFF) | I.BYTES_SIZE[result.new_size]
        I.put(insns, insn_index, code, dst, src, new, imm)
    elif code == I.LD_IMM64:
        if len(insns) < (insn_index + 2) * 8:
            raise CoreError(f"CO-RE: {where} is a truncated ld_imm64")
        c2, d2, s2, o2, hi = I.decode(insns, insn_index + 1)
        if src or off or c2 or d2 or s2 or o2:
            raise CoreError(f"CO-RE: {where} is an ld_imm64 of an unexpected form")
        value = (imm & 0xFFFFFFFF) | ((hi & 0xFFFFFFFF) << 32)
        if result.validate and value != orig & 0xFFFFFFFFFFFFFFFF:
            raise CoreError(f"CO-RE: {where} holds {value}, but the local BTF gives {orig}")
        new &= 0xFFFFFFFFFFFFFFFF
        lo32, hi32 = new & 0xFFFFFFFF, new >> 32
        I.put(insns, insn_index, code, dst, src, off, lo32)
        I.put(insns, insn_index + 1, 0, imm=hi32)
    else:
        raise CoreError(f"CO-RE: {where}: instruction class {cls} cannot be relocated")
    return before, insn_text(insns, insn_index)
