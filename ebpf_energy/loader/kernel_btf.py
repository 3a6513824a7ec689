"""The running kernel's BTF (``/sys/kernel/btf/vmlinux``), indexed, decoded lazily.

vmlinux BTF has ~126k types; decoding them all costs ~0.5 s, and a load needs a
handful (a ``tp_btf`` program: one typedef). So nothing is read that a query
does not touch:

* one pass over the type section, once, records where each type starts and a
  CRC-32 of its name; that index is cached on disk as flat arrays that are
  read back as they are (no parse, no copy), so a lookup by name is a bisect
  and one string compare (the string table is scanned only for a prefix:
  CO-RE's ``___flavor`` candidates); nothing is decoded until asked;
* the cache is keyed, for the running kernel, by the boot id and the size (its
  BTF cannot change until the next boot), else by two checksums and the length
  of the bytes (CRC-32 and Adler-32; the cache is the user's own, so only
  accidental collisions matter). A corrupt or stale cache is ignored and rebuilt;
* with the running kernel's index cached, the 5 MB blob is not read at all
  until something needs much of it: the few types and names a load asks for are
  read where they lie (``pread``), and after :data:`SPOT_READS` of them, or for a
  prefix scan, the whole blob is read once.
"""

import os
import struct
import sys
import time
import zlib
from array import array
from bisect import bisect_left
from itertools import accumulate

from . import explain
from . import btf_wire
from .btf import KIND_EXTRA_WORDS, VOID, BtfQueries, decode_type
from .errors import BtfError

DEFAULT_PATH = "/sys/kernel/btf/vmlinux"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
CACHE_VERSION = 4
CACHE_MAGIC = b"EEBTFIDX"
_CACHE_HEAD = struct.Struct("<8sIIII96s")  # magic, version, types, hashes, key length, key
CACHE_HEAD_LEN = 128                        # the arrays start 8-aligned after it

SPOT_READS = 64  # single-type/name reads before reading the whole blob is cheaper

# words to skip per type: 3 + FIXED[kind] + PER[kind] * vlen
_FIXED = [KIND_EXTRA_WORDS.get(k, (0, 0))[0] for k in range(32)]
_PER = [KIND_EXTRA_WORDS.get(k, (0, 0))[1] for k in range(32)]


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ebpf-energy")


class KernelBtf(BtfQueries):
    """Lazy view of a (base) kernel BTF blob; same queries as :class:`Btf`."""

    def __init__(self, data, index, endian, path=DEFAULT_PATH, header=None):
        """``data``: the blob, or None to read it lazily from ``path`` (then
        ``header``, already checked when the cached index was built, frames it)."""
        self.path = path
        self.endian = endian
        self._data = data
        self._offsets, self._hashes = index
        # _offsets: byte offset of type i+1 in the type section; _hashes: sorted crc32(name) << 32 | id
        self._cache = {0: VOID}
        self._lookups = {}  # (kind, name) -> ids, see _ids_named
        h = header or btf_wire.header(data, path)
        self._type_start = h.hdr_len + h.type_off
        self._type_end = self._type_start + h.type_len
        self._types = btf_wire.types_of(data, h) if data is not None else None
        self._str_start = h.hdr_len + h.str_off
        self._str_end = self._str_start + h.str_len
        self._spot_reads = 0
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
        key = _boot_key(len(data)) if path == DEFAULT_PATH else None
        return cls.from_bytes(data, path, cache_dir, use_cache, t0, key=key)

    @classmethod
    def running(cls, cache_dir=None):
        """The running kernel's BTF: from its cached index without reading the
        blob when this boot's index is cached, else :meth:`load`."""
        t0 = time.perf_counter()
        try:
            with open(DEFAULT_PATH, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = os.pread(f.fileno(), btf_wire.HEADER_LEN, 0)
            key = _boot_key(size)
            hdr = btf_wire.header_fields(head, DEFAULT_PATH) if key else None
        except (OSError, BtfError):
            key = None
        if key is not None:
            cache_file = os.path.join(cache_dir or default_cache_dir(), f"vmlinux-{key}.idx")
            index = _read_cache(cache_file, key, size)
            if index is not None:
                kb = cls(None, index, hdr.endian, DEFAULT_PATH, header=hdr)
                kb.index_seconds, kb.from_cache = time.perf_counter() - t0, True
                explain.trace("btf", f"kernel BTF {DEFAULT_PATH}: {len(kb) - 1} types, index from cache in "
                              f"{kb.index_seconds * 1000:.1f} ms (the blob is read only where asked)")
                return kb
        return cls.load(cache_dir=cache_dir)

    @classmethod
    def from_bytes(cls, data, path="<bytes>", cache_dir=None, use_cache=True, t0=None, key=None):
        """Index a raw BTF blob (what /sys/kernel/btf/vmlinux and ``bpftool btf
        dump ... format raw`` hold) or an ELF file's .BTF section (a vmlinux
        image, an object): ``load --dry-run --btf FILE`` takes either."""
        t0 = time.perf_counter() if t0 is None else t0
        if data[:4] == b"\x7fELF":
            data, key = _elf_btf_section(data, path), None
        hdr = btf_wire.header(data, path)
        endian = hdr.endian
        if key is None:
            key = f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}-{len(data)}"
        cache_dir = cache_dir or default_cache_dir()
        cache_file = os.path.join(cache_dir, f"vmlinux-{key}.idx")
        index = _read_cache(cache_file, key, len(data)) if use_cache else None
        from_cache = index is not None
        if index is None:
            index = _build_index(data, endian, hdr)
            if use_cache:
                _write_cache(cache_dir, cache_file, key, index)
        kb = cls(data, index, endian, str(path))
        kb.index_seconds = time.perf_counter() - t0
        kb.from_cache = from_cache
        explain.trace("btf", f"kernel BTF {path}: {len(kb) - 1} types indexed in "
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
        off = self._offsets[type_id - 1]
        if self._spot():
            end = self._offsets[type_id] if type_id < len(self._offsets) else self._type_end - self._type_start
            t, _ = decode_type(self._pread(self._type_start + off, end - off), 0, type_id, self.endian, self._string)
        else:
            t, _ = decode_type(self._types, off, type_id, self.endian, self._string)
        self._cache[type_id] = t
        return t

    def _string(self, off):
        start = self._str_start + off
        if start >= self._str_end:
            if off == 0:
                return ""
            raise BtfError(f"kernel BTF string offset {off} is beyond the "
                           f"{self._str_end - self._str_start}-byte string section")
        if self._spot():
            n = 64
            while True:  # names are short: read a window, wider until its NUL is in it
                chunk = self._pread(start, min(n, self._str_end - start))
                end = chunk.find(b"\0")
                if end >= 0 or start + n >= self._str_end:
                    return chunk[:end if end >= 0 else len(chunk)].decode("utf-8", "replace")
                n *= 4
        data = self._blob()
        end = data.find(b"\0", start, self._str_end)
        return data[start:end if end >= 0 else self._str_end].decode("utf-8", "replace")

    def _name_off(self, type_id):
        off = self._offsets[type_id - 1]
        if self._spot():
            return struct.unpack(self.endian + "I", self._pread(self._type_start + off, 4))[0]
        return struct.unpack_from(self.endian + "I", self._types, off)[0]

    # -- the blob, read whole or where asked --------------------------------------
    def _spot(self):
        """True while single reads are the cheaper way (the blob not read yet, few reads so far)."""
        if self._data is not None:
            return False
        self._spot_reads += 1
        if self._spot_reads <= SPOT_READS:
            return True
        self._blob()
        return False

    def _pread(self, start, n):
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, n, start)
        finally:
            os.close(fd)
        if len(data) != n:
            raise BtfError(f"kernel BTF {self.path}: short read at {start}")
        return data

    def _blob(self):
        if self._data is None:
            with open(self.path, "rb") as f:
                data = f.read()
            if len(data) < self._str_end or len(data) < self._type_end:
                raise BtfError(f"kernel BTF {self.path} changed under us (now {len(data)} bytes)")
            self._data, self._types = data, memoryview(data)[self._type_start:self._type_end]
        return self._data

    def _ids_named(self, name):
        """The types whose name's CRC-32 matches, checked by name (a bisect in
        the mapped index, then one string each). Memoised: one object asks for
        the same few types (``task_struct``) once per CO-RE record."""
        key = ("=", name)
        ids = self._lookups.get(key)
        if ids is None:
            hashes, n = self._hashes, len(self._hashes)
            h = zlib.crc32(name.encode())
            i = bisect_left(hashes, h << 32)
            ids = []
            while i < n and hashes[i] >> 32 == h:
                tid = hashes[i] & 0xFFFFFFFF
                if self._string(self._name_off(tid)) == name:
                    ids.append(tid)
                i += 1
            ids = self._lookups[key] = sorted(ids)
        return ids

    def _ids_with_prefix(self, prefix):
        """Names starting with ``prefix``: a C-speed scan of the string table
        for them, then each name through the hash index."""
        key = ("^", prefix)
        ids = self._lookups.get(key)
        if ids is None:
            needle, data, end = b"\0" + prefix.encode(), self._blob(), self._str_end
            names = set()
            pos = data.find(needle, self._str_start, end)
            while pos >= 0:
                stop = data.find(b"\0", pos + 1, end)
                names.add(data[pos + 1:stop].decode("utf-8", "replace"))
                pos = data.find(needle, stop, end)
            ids = self._lookups[key] = sorted({i for name in names for i in self._ids_named(name)})
        return ids


def _boot_key(size):
    """The running kernel's BTF is fixed for the life of a boot: its boot id
    (and the size, for safety) names it without a pass over the bytes."""
    try:
        with open(BOOT_ID) as f:
            boot = f.read().strip()
    except OSError:
        return None
    return f"boot-{boot}-{size}" if boot else None


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


class _CrcByOffset(dict):
    """CRC-32 of the string at each offset; an offset into the middle of a
    string (a shared suffix) is hashed when asked."""

    strings = b""

    def __missing__(self, off):
        c = self[off] = zlib.crc32(self.strings[off:self.strings.index(b"\0", off)])
        return c


def _build_index(data, endian, hdr):
    """One pass over the type section: the start offset of every type, and
    (crc32(name) << 32 | id) of every named type, sorted."""
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
    # name hash index: the CRC-32 of every string by its start offset (C-level passes), then per named type
    s0 = hdr.hdr_len + hdr.str_off
    strings = bytes(data[s0:s0 + hdr.str_len])
    parts = strings.split(b"\0")
    crc_at = _CrcByOffset(zip(accumulate(map((1).__add__, map(len, parts)), initial=0), map(zlib.crc32, parts)))
    crc_at.strings = strings
    hashes = array("Q", sorted([(crc_at[no] << 32) | tid for tid, no in enumerate(noffs, 1) if no]))
    return offsets, hashes


def _read_cache(cache_file, key, size):
    """The index as three arrays over the cache file's bytes (nothing parsed), or None."""
    try:
        with open(cache_file, "rb") as f:
            m = f.read()
        magic, version, n_types, n_hashes, klen, kbytes = _CACHE_HEAD.unpack_from(m)
        if magic != CACHE_MAGIC or version != CACHE_VERSION or kbytes[:klen] != key.encode():
            return None
        o_end = CACHE_HEAD_LEN + (n_types * 4 + 7) // 8 * 8
        if len(m) != o_end + n_hashes * 8:
            return None
        view = memoryview(m)
        offsets = view[CACHE_HEAD_LEN:CACHE_HEAD_LEN + n_types * 4].cast("I")
        hashes = view[o_end:].cast("Q")
        step = max(1, len(hashes) // 64)  # spot-check the order: a bisect on unsorted data would miss names
        if any(hashes[i] > hashes[i + 1] for i in range(0, len(hashes) - 1, step)):
            return None
        if n_types and offsets[-1] >= size:
            return None
        return offsets, hashes
    except (OSError, ValueError, struct.error):
        return None


def _write_cache(cache_dir, cache_file, key, index):
    offsets, hashes = index
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cache_file}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            kb = key.encode()
            head = _CACHE_HEAD.pack(CACHE_MAGIC, CACHE_VERSION, len(offsets), len(hashes), len(kb), kb)
            f.write(head.ljust(CACHE_HEAD_LEN, b"\0"))
            raw = offsets.tobytes()
            f.write(raw + b"\0" * (-len(raw) % 8))
            f.write(hashes.tobytes())
        os.replace(tmp, cache_file)
        if key.startswith("boot-"):  # an earlier boot's index is never read again
            for old in os.listdir(cache_dir):
                if old.startswith("vmlinux-boot-") and old.endswith(".idx") and \
                        os.path.join(cache_dir, old) != cache_file:
                    os.unlink(os.path.join(cache_dir, old))
    except OSError:
        pass  # a read-only home is no reason to fail: the index is simply rebuilt next time
