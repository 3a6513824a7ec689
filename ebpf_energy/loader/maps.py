"""BPF maps from user space: create, read, write, iterate, batch, pin.

A :class:`Map` owns its fd. Keys and values pass through codecs when given
(``.encode(value) -> bytes``, ``.decode(bytes) -> value``; the BTF module makes
them from the map's BTF types), else they are bytes (an int key is accepted
and packed little-endian to ``key_size``). Per-CPU maps hold one value per
*possible* CPU, each padded to 8 bytes, so their values are lists.
"""

import errno as _errno
import mmap as _mmap
import os

from . import explain, syscall, uapi
from .bpffs import BPFFS_PATH, ensure_bpffs  # noqa: F401  (ensure_bpffs re-exported)
from .errors import LoaderError, NotSupported, SyscallError
from .fd import close
from .syscall import MapFullError  # noqa: F401  (callers count drops with it)

PERCPU_TYPES = frozenset({uapi.BPF_MAP_TYPE_PERCPU_HASH, uapi.BPF_MAP_TYPE_PERCPU_ARRAY,
                          uapi.BPF_MAP_TYPE_LRU_PERCPU_HASH, uapi.BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE})
ARRAY_TYPES = frozenset({uapi.BPF_MAP_TYPE_ARRAY, uapi.BPF_MAP_TYPE_PERCPU_ARRAY,
                         uapi.BPF_MAP_TYPE_PROG_ARRAY, uapi.BPF_MAP_TYPE_PERF_EVENT_ARRAY,
                         uapi.BPF_MAP_TYPE_CGROUP_ARRAY})

BPF_ANY = uapi.BPF_ANY
BPF_NOEXIST = uapi.BPF_NOEXIST
BPF_EXIST = uapi.BPF_EXIST


class MapValueError(LoaderError, ValueError):
    """A key or value has the wrong size or shape for this map."""


def _round8(n):
    return (n + 7) & ~7


class Map:
    """A live kernel map. Context manager; ``close()`` is idempotent."""

    def __init__(self, fd, name, map_type, key_size, value_size, max_entries, flags=0,
                 key_codec=None, value_codec=None):
        self.fd = fd
        self.name = name
        self.type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.flags = flags
        self.key_codec = key_codec
        self.value_codec = value_codec
        self.is_percpu = map_type in PERCPU_TYPES
        self.ncpus = syscall.num_possible_cpus() if self.is_percpu else 1
        self._stride = _round8(value_size) if self.is_percpu else value_size
        self._vsize = self._stride * self.ncpus

    # --- construction
    @classmethod
    def create(cls, name, map_type, key_size, value_size, max_entries, map_flags=0, numa_node=None, btf_fd=0,
               btf_key_type_id=0, btf_value_type_id=0, key_codec=None, value_codec=None, map_extra=0,
               inner_map_fd=0):
        fd = syscall.map_create(map_type, key_size, value_size, max_entries, map_flags, name, numa_node, btf_fd,
                                btf_key_type_id, btf_value_type_id, map_extra, inner_map_fd)
        return cls(fd, name, map_type, key_size, value_size, max_entries, map_flags, key_codec, value_codec)

    @classmethod
    def from_fd(cls, fd, key_codec=None, value_codec=None):
        """Wrap an existing map fd (the Map takes ownership of it)."""
        i = syscall.obj_get_info(fd, "map")
        return cls(fd, i["name"], i["type"], i["key_size"], i["value_size"], i["max_entries"], i["map_flags"],
                   key_codec, value_codec)

    @classmethod
    def pinned(cls, path, key_codec=None, value_codec=None):
        """Open the map pinned at ``path`` in bpffs (a pinned program or link
        there is refused by name: its info would read as a map's garbage)."""
        fd = syscall.obj_get(path)
        try:
            what = os.readlink(f"/proc/self/fd/{int(fd)}")
        except OSError:
            what = "anon_inode:bpf-map"  # no /proc: let the info call judge
        if what != "anon_inode:bpf-map":
            close(fd)
            raise LoaderError(f"{path} holds a pinned {what.removeprefix('anon_inode:bpf-')}, not a map")
        return cls.from_fd(fd, key_codec, value_codec)

    @property
    def type_name(self):
        return syscall.map_type_name(self.type)

    def __repr__(self):
        return (f"<Map {self.name!r} {self.type_name} fd={self.fd} key={self.key_size} value={self.value_size} "
                f"max_entries={self.max_entries}>")

    # --- encoding
    def _key(self, key):
        if self.key_codec is not None:
            raw = self.key_codec.encode(key)
        elif isinstance(key, int):
            try:
                raw = key.to_bytes(self.key_size, "little", signed=key < 0)
            except OverflowError:
                raise MapValueError(f"map {self.name}: key {key} does not fit in {self.key_size} bytes") from None
        else:
            raw = key
        if len(raw) != self.key_size:
            raise MapValueError(f"map {self.name}: key is {len(raw)} bytes, the map wants {self.key_size}")
        return raw

    def _decode_key(self, raw):
        return self.key_codec.decode(raw) if self.key_codec is not None else raw

    def _one_value(self, v):
        raw = self.value_codec.encode(v) if self.value_codec is not None else bytes(v)
        if len(raw) != self.value_size:
            raise MapValueError(f"map {self.name}: value is {len(raw)} bytes, the map wants {self.value_size}")
        return raw

    def _value(self, value):
        if not self.is_percpu:
            return self._one_value(value)
        if not isinstance(value, (list, tuple)) or len(value) != self.ncpus:
            raise MapValueError(f"per-CPU map {self.name}: the value must be a list of {self.ncpus} values "
                                "(one per possible CPU)")
        pad = b"\0" * (self._stride - self.value_size)
        return b"".join(self._one_value(v) + pad for v in value)

    def _decode_value(self, raw):
        dec = self.value_codec.decode if self.value_codec is not None else bytes
        if not self.is_percpu:
            return dec(raw)
        s, n = self._stride, self.value_size
        return [dec(raw[i * s:i * s + n]) for i in range(self.ncpus)]

    # --- element operations
    def lookup(self, key):
        """The value for ``key``, or None when absent."""
        raw = syscall.map_lookup(self.fd, self._key(key), self._vsize)
        return None if raw is None else self._decode_value(raw)

    def get(self, key, default=None):
        v = self.lookup(key)
        return default if v is None else v

    def update(self, key, value, flags=BPF_ANY):
        """Insert or replace. A full map raises MapFullError (count it as a drop)."""
        k = self._key(key)
        try:
            syscall.map_update(self.fd, k, self._value(value), flags)
        except MapFullError as e:
            if self.type in ARRAY_TYPES:
                raise SyscallError("BPF_MAP_UPDATE_ELEM", e.errno,
                                   f"index {int.from_bytes(k, 'little')} is out of range for array {self.name}",
                                   f"max_entries={self.max_entries}") from None
            raise

    def delete(self, key):
        """Remove ``key``; True if it was there."""
        return syscall.map_delete(self.fd, self._key(key))

    def __getitem__(self, key):
        v = self.lookup(key)
        if v is None:
            raise KeyError(key)
        return v

    def __setitem__(self, key, value):
        self.update(key, value)

    def __delitem__(self, key):
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key):
        return self.lookup(key) is not None

    # --- iteration
    def _raw_keys(self):
        """Keys via BPF_MAP_GET_NEXT_KEY, robust to deletes while iterating.

        The next key is fetched *before* the current one is handed out, so the
        caller may delete it. If a key vanishes anyway the hash map restarts from
        its first bucket: keys already seen are skipped, and the walk is bounded.
        """
        seen = set()
        limit = 4 * max(self.max_entries, 1) + 16
        cur = syscall.map_get_next_key(self.fd, None, self.key_size)
        steps = 0
        while cur is not None and steps < limit:
            steps += 1
            nxt = syscall.map_get_next_key(self.fd, cur, self.key_size)
            if cur not in seen:
                seen.add(cur)
                yield cur
            cur = nxt

    def keys(self):
        return [self._decode_key(k) for k in self._raw_keys()]

    def __iter__(self):
        for k in self._raw_keys():
            yield self._decode_key(k)

    def items(self):
        """``[(key, value)]``; entries deleted during the walk are left out."""
        out = []
        for k in self._raw_keys():
            raw = syscall.map_lookup(self.fd, k, self._vsize)
            if raw is not None:
                out.append((self._decode_key(k), self._decode_value(raw)))
        return out

    def values(self):
        return [v for _, v in self.items()]

    def __len__(self):
        if self.type in ARRAY_TYPES:
            return self.max_entries
        return sum(1 for _ in self._raw_keys())

    def lookup_batch(self, delete=False, chunk=None, raw=False):
        """All ``(key, value)`` pairs, with BPF_MAP_LOOKUP_(AND_DELETE_)BATCH where the
        kernel has it for this type, else by iteration (deleting each key when asked).
        Arrays keep every index, so ``delete=True`` on them raises NotSupported.
        ``raw=True`` gives the kernel's bytes, undecoded (per-CPU values as one
        buffer of rounded-up copies): for callers that decode in bulk."""
        if delete and self.type in ARRAY_TYPES:
            raise NotSupported("BPF_MAP_LOOKUP_AND_DELETE_BATCH", _errno.EINVAL,
                               f"array map {self.name} cannot delete entries",
                               "read with delete=False and reset values with update()")
        try:
            return self._batch(delete, chunk, raw)
        except NotSupported:
            explain.trace("map", f"{self.name}: no batch ops for {self.type_name}, iterating with GET_NEXT_KEY")
        out = []
        for k in self._raw_keys():
            value = syscall.map_lookup(self.fd, k, self._vsize)
            if value is None:
                continue
            if delete:
                syscall.map_delete(self.fd, k)
            out.append((k, value) if raw else (self._decode_key(k), self._decode_value(value)))
        return out

    def _batch(self, delete, chunk, raw=False):
        out = []
        for ks, vs in self._batches(delete, chunk, buffers=False):
            if raw:
                out.extend(zip(ks, vs))
            else:
                dk, dv = self._decode_key, self._decode_value
                out.extend((dk(k), dv(v)) for k, v in zip(ks, vs))
        return out

    def lookup_batch_buffers(self, chunk=None):
        """Every entry as raw batches: ``(keys, values)`` buffers of records
        back to back (per-CPU values as rounded-up copies), for callers that
        decode a whole batch with ``struct.iter_unpack``. Hash types only."""
        return self._batches(False, chunk, buffers=True)

    def _batches(self, delete, chunk, buffers):
        count = chunk or max(1, min(self.max_entries, 4096))
        token = None
        while True:
            try:
                ks, vs, token_out = syscall.map_lookup_batch(self.fd, self.key_size, self._vsize, count,
                                                             token, delete, buffers)
            except SyscallError as e:
                if e.errno == _errno.ENOSPC and not isinstance(e, NotSupported):
                    count *= 2  # one hash bucket holds more than `count` entries
                    continue
                raise
            yield ks, vs
            if token_out is None:
                return
            token = token_out

    # --- whole-map operations
    def memory(self) -> memoryview:
        """A read-only view of a ``BPF_F_MMAPABLE`` array's values, back to back
        (element i at ``i * round8(value_size)``): reading it is no syscall at
        all, so a reader of many records decodes them straight from the map."""
        if self.type != uapi.BPF_MAP_TYPE_ARRAY or not self.flags & uapi.BPF_F_MMAPABLE:
            raise LoaderError(f"map {self.name}: only a BPF_F_MMAPABLE array can be memory-mapped")
        if getattr(self, "_mm", None) is None:
            length = _round8(self.value_size) * self.max_entries
            size = max(1, (length + _mmap.PAGESIZE - 1) // _mmap.PAGESIZE) * _mmap.PAGESIZE
            try:
                self._mm = _mmap.mmap(self.fd, size, _mmap.MAP_SHARED, _mmap.PROT_READ)
            except (OSError, ValueError) as e:
                raise LoaderError(f"map {self.name}: mmap failed: {e}") from None
            self._mm_len = length
        return memoryview(self._mm)[:self._mm_len]

    def freeze(self):
        syscall.map_freeze(self.fd)

    pin_path = None  # where this map is pinned (LIBBPF_PIN_BY_NAME), if it is

    def pin(self, path):
        """Pin into bpffs (mounted first when needed and root)."""
        if os.path.abspath(path).startswith(BPFFS_PATH + "/"):
            ensure_bpffs()
        syscall.obj_pin(self.fd, path)

    def info(self):
        return syscall.obj_get_info(self.fd, "map")

    def close(self):
        mm, self._mm = getattr(self, "_mm", None), None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # a caller still holds a view: the mapping goes when the view does
        fd, self.fd = self.fd, -1
        close(fd, f"map {self.name}")

    @property
    def closed(self):
        return self.fd < 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        fd = getattr(self, "fd", -1)
        if fd is not None and fd >= 0:
            try:
                close(fd)
            except OSError:
                pass

