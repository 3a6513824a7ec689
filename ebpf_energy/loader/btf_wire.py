"""The BTF wire format's framing: the header and the string table, read in one place.

``.BTF`` (an object's, or the kernel's ``/sys/kernel/btf/vmlinux``) starts
with ``struct btf_header`` (magic 0xeb9f in the writer's byte order, version
1, flags, hdr_len, then the type and string sections as offsets after the
header); ``.BTF.ext`` starts with the same magic, version and flags and its
own hdr_len, and names things through the ``.BTF`` string table. The types
themselves are decoded by :func:`btf.decode_type`.
"""

import struct
from collections import namedtuple

from .abi import BTF_MAGIC
from .errors import BtfError

HEADER_LEN = 24  # sizeof(struct btf_header)
VERSION = 1

Header = namedtuple("Header", "endian flags hdr_len type_off type_len str_off str_len")


def endian_of(data, what="BTF data"):
    """``<`` or ``>``: the byte order the magic number is written in."""
    if len(data) >= 2 and struct.unpack_from("<H", data)[0] == BTF_MAGIC:
        return "<"
    if len(data) >= 2 and struct.unpack_from(">H", data)[0] == BTF_MAGIC:
        return ">"
    raise BtfError(f"{what}: not BTF (bad magic number, expected {BTF_MAGIC:#x})")


def preamble(data, min_len, what):
    """Magic, version and hdr_len, shared by .BTF and .BTF.ext -> (endian, flags, hdr_len)."""
    if len(data) < min_len:
        raise BtfError(f"{what} too short ({len(data)} bytes) for its header")
    endian = endian_of(data, what)
    _, version, flags, hdr_len = struct.unpack_from(endian + "HBBI", data)
    if version != VERSION:
        raise BtfError(f"unsupported {what} version {version}")
    if hdr_len < min_len or hdr_len > len(data):
        raise BtfError(f"{what} header length {hdr_len} is invalid")
    return endian, flags, hdr_len


def header(data, what="BTF"):
    """The checked ``struct btf_header`` of ``data``: the sections lie inside
    the data, the type section is 4-byte aligned, header bytes this reader does
    not know are zero, and the string table starts and ends with NUL."""
    endian, flags, hdr_len = preamble(data, HEADER_LEN, what)
    type_off, type_len, str_off, str_len = struct.unpack_from(endian + "4I", data, 8)
    if any(data[HEADER_LEN:hdr_len]):
        raise BtfError(f"{what} header has unknown non-zero fields")
    tstart, sstart = hdr_len + type_off, hdr_len + str_off
    if tstart + type_len > len(data) or sstart + str_len > len(data):
        raise BtfError(f"{what} type or string section runs past the end of the data")
    if type_off % 4:
        raise BtfError(f"{what} type section is not 4-byte aligned")
    if tstart < sstart + str_len and sstart < tstart + type_len:
        raise BtfError(f"{what} type and string sections overlap")
    if not str_len or data[sstart] != 0 or data[sstart + str_len - 1] != 0:
        raise BtfError(f"{what} string section must start and end with a NUL byte")
    return Header(endian, flags, hdr_len, type_off, type_len, str_off, str_len)


def header_fields(head, what="BTF"):
    """The header's fields from its first :data:`HEADER_LEN` bytes alone (a
    blob whose header was checked whole before: the running kernel's, when its
    cached index was built)."""
    endian, flags, hdr_len = preamble(head, HEADER_LEN, what)
    return Header(endian, flags, hdr_len, *struct.unpack_from(endian + "4I", head, 8))


def types_of(data, h: Header):
    """The type section (a view: the kernel's is megabytes)."""
    start = h.hdr_len + h.type_off
    return memoryview(data)[start:start + h.type_len]


def strings_of(data, h: Header) -> bytes:
    start = h.hdr_len + h.str_off
    return bytes(data[start:start + h.str_len])


def pack_header(endian, flags, type_len, str_len) -> bytes:
    """A header for a type section followed directly by the string table."""
    return struct.pack(endian + "HBBIIIII", BTF_MAGIC, VERSION, flags, HEADER_LEN, 0, type_len, type_len, str_len)


def string_at(strings, off, what="BTF"):
    """The NUL-terminated name at ``off`` in a string table."""
    if off >= len(strings):
        if off == 0:
            return ""
        raise BtfError(f"{what} string offset {off} is beyond the {len(strings)}-byte string section")
    end = strings.find(b"\0", off)
    return strings[off:end if end >= 0 else len(strings)].decode("utf-8", "replace")
