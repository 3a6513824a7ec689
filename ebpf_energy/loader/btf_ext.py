"""``.BTF.ext``: func_info, line_info and CO-RE relocation records per section.

Record offsets (``insn_off_bytes``) stay in bytes, as in the object: the
program builder converts them to instruction indices and rebases them when it
appends subprograms (a record left at its section offset would point into
the wrong function once subprograms are appended after the caller). Names and source lines are looked up
in the ``.BTF`` string table so ``--explain`` and verifier errors can quote
the C source.
"""

import struct
from collections import namedtuple

from . import btf_wire, explain
from .abi import BTF_KIND_FUNC as KIND_FUNC
from .errors import BtfError

FuncInfo = namedtuple("FuncInfo", "insn_off_bytes type_id")
LineInfo = namedtuple("LineInfo", "insn_off_bytes file_name_off line_off line col file_name source")
CoreRelo = namedtuple("CoreRelo", "insn_off_bytes type_id access_str kind")

MIN_HEADER = 24
CORE_HEADER = 32
MAX_CORE_KIND = 12


class BtfExt:
    """Parsed ``.BTF.ext``; dicts are keyed by ELF section name."""

    def __init__(self):
        self.func_info = {}
        self.line_info = {}
        self.core_relos = {}
        self.func_info_rec_size = 8
        self.line_info_rec_size = 16
        self.core_relo_rec_size = 16

    @classmethod
    def parse(cls, data, btf):
        data = bytes(data)
        ext = cls()
        E, _flags, hdr_len = btf_wire.preamble(data, MIN_HEADER, ".BTF.ext")
        fi_off, fi_len, li_off, li_len = struct.unpack_from(E + "4I", data, 8)
        core_off = core_len = 0
        if hdr_len >= CORE_HEADER:
            core_off, core_len = struct.unpack_from(E + "2I", data, 24)
        strings = btf.strings

        def string(off, what):
            return btf_wire.string_at(strings, off, f".BTF.ext {what}:")

        ntypes = len(btf)

        def func(sec, rec):
            insn_off, type_id = struct.unpack_from(E + "2I", rec)
            if not 0 < type_id < ntypes or btf.type(type_id).kind != KIND_FUNC:
                raise BtfError(f".BTF.ext func_info in {sec}: type {type_id} is not a BTF func")
            return FuncInfo(insn_off, type_id)

        def line(sec, rec):
            insn_off, file_off, line_off, line_col = struct.unpack_from(E + "4I", rec)
            return LineInfo(insn_off, file_off, line_off, line_col >> 10, line_col & 0x3FF,
                            string(file_off, "line_info file"), string(line_off, "line_info line"))

        def core(sec, rec):
            insn_off, type_id, access_off, kind = struct.unpack_from(E + "4I", rec)
            if not 0 < type_id < ntypes:
                raise BtfError(f".BTF.ext CO-RE record in {sec}: type {type_id} out of range")
            if kind > MAX_CORE_KIND:
                raise BtfError(f".BTF.ext CO-RE record in {sec}: unknown kind {kind}")
            return CoreRelo(insn_off, type_id, string(access_off, "CO-RE access string"), kind)

        base = hdr_len
        ext.func_info_rec_size = _parse_info(data, E, base, fi_off, fi_len, 8, ext.func_info, func, string, "func_info")
        ext.line_info_rec_size = _parse_info(data, E, base, li_off, li_len, 16, ext.line_info, line, string, "line_info")
        if core_len:
            ext.core_relo_rec_size = _parse_info(data, E, base, core_off, core_len, 16, ext.core_relos, core,
                                                 string, "CO-RE relocations")
        explain.trace("btf", f".BTF.ext: {sum(map(len, ext.func_info.values()))} func_info, "
                      f"{sum(map(len, ext.line_info.values()))} line_info, "
                      f"{sum(map(len, ext.core_relos.values()))} CO-RE records")
        return ext

    def line_for(self, sec_name, insn_off_bytes):
        """The line_info record covering an instruction (the last one at or before it)."""
        best = None
        for li in self.line_info.get(sec_name, ()):
            if li.insn_off_bytes <= insn_off_bytes and (best is None or li.insn_off_bytes >= best.insn_off_bytes):
                best = li
        return best


def _parse_info(data, E, base, off, length, min_rec, out, make, string, what):
    """One info block: u32 rec_size, then per section {name_off, count, records}."""
    if not length:
        return min_rec
    start, end = base + off, base + off + length
    if end > len(data) or length < 4:
        raise BtfError(f".BTF.ext {what} block runs past the end of the data")
    rec_size = struct.unpack_from(E + "I", data, start)[0]
    if rec_size < min_rec or rec_size % 4 or rec_size > 1024:
        raise BtfError(f".BTF.ext {what}: record size {rec_size} is invalid")
    pos = start + 4
    while pos < end:
        if pos + 8 > end:
            raise BtfError(f".BTF.ext {what}: section header truncated")
        name_off, count = struct.unpack_from(E + "2I", data, pos)
        pos += 8
        if count == 0 or pos + count * rec_size > end:
            raise BtfError(f".BTF.ext {what}: section with {count} records does not fit")
        sec = string(name_off, f"{what} section name")
        recs = out.setdefault(sec, [])
        for i in range(count):
            recs.append(make(sec, data[pos + i * rec_size:pos + (i + 1) * rec_size]))
        pos += count * rec_size
    return rec_size
