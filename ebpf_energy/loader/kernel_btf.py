"""The running kernel's BTF (``/sys/kernel/btf/vmlinux``), indexed, decoded lazily.

vmlinux BTF has ~126k types; decoding them all costs ~0.5 s, and CO-RE needs a
handful. One pass over the type section records where each type starts and
its name offset; a type is decoded when asked for. The index is cached on
disk keyed by two checksums and the length of the BTF bytes (CRC-32 and
Adler-32: a third of SHA-1's time on 5 MB, and no OpenSSL to load; the cache
is the user's own, so only accidental collisions matter), so a second load
only reads the cache; a corrupt or stale cache is ignored and rebuilt.
"""

import marshal
import os
import struct
import sys
import time
import zlib
from array import array
from bisect import bisect_left

from . import explain
from . import btf_wire
from .btf import KIND_EXTRA_WORDS, VOID, BtfQueries, decode_type
from .errors import BtfError

DEFAULT_PATH = "/sys/kernel/btf/vmlinux"
CACHE_VERSION = 2

# words to skip per type: 3 + FIXED[kind] + PER[kind] * vlen
_FIXED = [KIND_EXTRA_WORDS.get(k, (0, 0))[0] for k in range(32)]
_PER = [KIND_EXTRA_WORDS.get(k, (0, 0))[1] for k in range(32)]


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ebpf-energy")


class KernelBtf(BtfQueries):
    """Lazy view of a (base) kernel BTF blob; same queries as :class:`Btf`."""

    def __init__(self, data, offsets, names, endian, path=DEFAULT_PATH):
        self.path = path
        self.endian = endian
        self._data = data
        self._offsets = offsets          # array('I'): byte offset of type i+1 in the type section
        self._names = names              # sorted array('Q') of name_off << 32 | type id
        self._cache = {0: VOID}
        self._lookups = {}  # (kind, name) -> ids, see _ids_named
        h = btf_wire.header(data, path)
        self._types = btf_wire.types_of(data, h)
        self.strings = btf_wire.strings_of(data, h)
        self.index_seconds = 0.0
        self.from_cache = False

    # -- loading --------------------------------------------------------------
    @classmethod
    def load(cls, path=DEFAULT_PATH, cache_dir=None, use_cache=True):
        t0 = time.perf_counter()
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise BtfError(f"cannot read kernel BTF {path}: {exc.strerror or exc} "
                           "(needs a kernel built with CONFIG_DEBUG_INFO_BTF=y)") from None
        return cls.from_bytes(data, path, cache_dir, use_cache, t0)

    @classmethod
    def from_bytes(cls, data, path="<bytes>", cache_dir=None, use_cache=True, t0=None):
        """Index a raw BTF blob (what /sys/kernel/btf/vmlinux and ``bpftool btf
        dump ... format raw`` hold) or an ELF file's .BTF section (a vmlinux
        image, an object): ``load --dry-run --btf FILE`` takes either."""
        t0 = time.perf_counter() if t0 is None else t0
        if data[:4] == b"\x7fELF":
            data = _elf_btf_section(data, path)
        hdr = btf_wire.header(data, path)
        endian = hdr.endian
        key = f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}-{len(data)}"
        cache_dir = cache_dir or default_cache_dir()
        cache_file = os.path.join(cache_dir, f"vmlinux-{key}.idx")
        index = _read_cache(cache_file, key) if use_cache else None
        from_cache = index is not None
        if index is None:
            index = _build_index(data, endian, hdr)
            if use_cache:
                _write_cache(cache_dir, cache_file, key, index)
        offsets, names = index
        kb = cls(data, offsets, names, endian, str(path))
        kb.index_seconds = time.perf_counter() - t0
        kb.from_cache = from_cache
        explain.trace("btf", f"kernel BTF {path}: {len(offsets)} types indexed in "
                      f"{kb.index_seconds * 1000:.1f} ms ({'cache' if from_cache else 'cold'})")
        return kb

    # -- queries ----------------------------------------------------------------
    def __len__(self):
        return len(self._offsets) + 1

    def type(self, type_id):
        t = self._cache.get(type_id)
        if t is not None:
            return t
        if not 0 < type_id <= len(self._offsets):
            raise BtfError(f"kernel BTF type id {type_id} out of range (1..{len(self._offsets)})")
        t, _ = decode_type(self._types, self._offsets[type_id - 1], type_id, self.endian, self._string)
        self._cache[type_id] = t
        return t

    def _string(self, off):
        return btf_wire.string_at(self.strings, off, "kernel BTF")

    def _ids_at(self, positions):
        names, n, out = self._names, len(self._names), set()
        for p in positions:
            i = bisect_left(names, p << 32)
            while i < n and names[i] >> 32 == p:
                out.add(names[i] & 0xFFFFFFFF)
                i += 1
        return sorted(out)

    def _ids_named(self, name):
        """Every string equal to ``name`` ends with ``name\\0``; look those offsets up.

        Memoised: one object asks for the same few types (``task_struct``)
        once per CO-RE record, and each scan reads the whole string table."""
        key = ("=", name)
        ids = self._lookups.get(key)
        if ids is None:
            ids = self._lookups[key] = self._ids_at(_find_all(self.strings, name.encode() + b"\0", full=True))
        return ids

    def _ids_with_prefix(self, prefix):
        key = ("^", prefix)
        ids = self._lookups.get(key)
        if ids is None:
            ids = self._lookups[key] = self._ids_at(
                _find_all(self.strings, b"\0" + prefix.encode(), full=False, shift=1))
        return ids


def _find_all(strings, needle, full, shift=0):
    """Start offsets of ``needle`` in the string table (C-speed scan, no per-string decode)."""
    out = []
    pos = strings.find(needle)
    while pos >= 0:
        out.append(pos + shift)
        pos = strings.find(needle, pos + 1)
    return out


def _elf_btf_section(data, path):
    """The .BTF section of any ELF file (a vmlinux of any architecture, or a BPF object)."""
    import io

    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        sec = ELFFile(io.BytesIO(data)).get_section_by_name(".BTF")
        btf = sec.data() if sec is not None else b""
    except (ELFError, ValueError, struct.error) as e:
        raise BtfError(f"{path}: an ELF file, but unreadable: {e}") from None
    if not btf:
        raise BtfError(f"{path}: an ELF file without a .BTF section (build with -g, or give raw BTF)")
    return bytes(btf)


def _build_index(data, endian, hdr):
    """One pass over the type section: start offset and name offset of every type."""
    type_len = hdr.type_len
    start = hdr.hdr_len + hdr.type_off
    words = array("I")
    words.frombytes(data[start:start + (type_len & ~3)])
    if (endian == "<") != (sys.byteorder == "little"):
        words.byteswap()
    n = len(words)
    offs = []
    noffs = []
    add_off, add_name = offs.append, noffs.append
    fixed, per = _FIXED, _PER
    i = 0
    try:
        while i < n:
            info = words[i + 1]
            kind = (info >> 24) & 0x1F
            add_off(i)
            add_name(words[i])
            i += 3 + fixed[kind] + per[kind] * (info & 0xFFFF)
    except IndexError:
        raise BtfError("kernel BTF type section ends inside a type") from None
    if i != n or (type_len & 3):
        raise BtfError("kernel BTF type section ends inside a type")
    offsets = array("I", [o << 2 for o in offs])  # word index -> byte offset
    # name index: (name_off << 32 | id), sorted; a lookup is a bisect
    names = array("Q", sorted([(no << 32) | tid for tid, no in enumerate(noffs, 1) if no]))
    return offsets, names


def _read_cache(cache_file, key):
    try:
        with open(cache_file, "rb") as f:
            version, k, offs, names_raw = marshal.load(f)
        if version != CACHE_VERSION or k != key:
            return None
        offsets, names = array("I"), array("Q")
        offsets.frombytes(offs)
        names.frombytes(names_raw)
        if any(names[i] > names[i + 1] for i in range(0, len(names) - 1, max(1, len(names) // 64))):
            return None  # spot-check the order; a bisect on unsorted data would miss names
        return offsets, names
    except (OSError, EOFError, ValueError, TypeError):
        return None


def _write_cache(cache_dir, cache_file, key, index):
    offsets, names = index
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cache_file}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            marshal.dump((CACHE_VERSION, key, offsets.tobytes(), names.tobytes()), f)
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a read-only home is no reason to fail: the index is simply rebuilt next time
