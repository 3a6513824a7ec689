"""Global variables by name: ``.rodata`` before load, ``.bss``/``.data`` after.

Global data sections are one-entry array maps. Before load the view edits the
bytes the map will be created with (that is how ``const volatile`` settings
reach the verifier); after load it reads and writes the map's memory through
``mmap`` (the maps are created ``BPF_F_MMAPABLE``), so one variable can be
changed without rewriting its neighbours that a program may be updating.
"""

import mmap

from . import syscall
from .errors import LoaderError


class GlobalData:
    """Dict-like access to the variables of one data section."""

    def __init__(self, section, variables, btf, initial=None):
        self.section = section
        self._vars = variables  # name -> (offset, size, type_id)
        self._btf = btf
        self._buf = initial  # bytearray before load
        self._map = None
        self._mm = None
        self._frozen = False

    def attach_map(self, live_map, frozen):
        """Switch from the initial bytes to the live map's memory."""
        self._map = live_map
        self._frozen = frozen
        length = max(live_map.value_size, 1)
        pagesize = mmap.PAGESIZE
        size = (length + pagesize - 1) // pagesize * pagesize
        prot = mmap.PROT_READ if frozen else mmap.PROT_READ | mmap.PROT_WRITE
        try:
            self._mm = mmap.mmap(live_map.fd, size, mmap.MAP_SHARED, prot)
        except (OSError, ValueError):
            self._mm = None  # fall back to map lookups/updates
        self._buf = None

    def close(self):
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def names(self):
        return list(self._vars)

    def __contains__(self, name):
        return name in self._vars

    def _var(self, name):
        try:
            return self._vars[name]
        except KeyError:
            known = ", ".join(sorted(self._vars)) or "none"
            raise KeyError(f"{self.section} has no variable {name!r} (it has: {known})") from None

    def offset_of(self, name) -> int:
        """Where variable ``name`` starts in the section (for readers of :meth:`view`)."""
        return self._var(name)[0]

    def raw(self) -> bytes:
        """The section's current bytes."""
        if self._buf is not None:
            return bytes(self._buf)
        if self._mm is not None:
            return bytes(self._mm[: self._map.value_size])
        return bytes(syscall.map_lookup(self._map.fd, b"\0\0\0\0", self._map.value_size))

    def view(self) -> memoryview:
        """Zero-copy view of the live section (for hot readers such as the monitor)."""
        if self._mm is None:
            raise LoaderError(f"{self.section} is not memory-mapped")
        return memoryview(self._mm)[: self._map.value_size]

    def __getitem__(self, name):
        offset, size, type_id = self._var(name)
        data = self.raw()[offset: offset + size]
        return self._btf.codec(type_id).decode(data)

    def __setitem__(self, name, value):
        offset, size, type_id = self._var(name)
        try:
            data = self._btf.codec(type_id).encode(value)
        except LoaderError as e:  # the codec names the type; say which variable it was
            e.args = (f"{self.section}.{name}: {e}",)
            raise
        if len(data) != size:
            raise LoaderError(f"{self.section}.{name}: value encodes to {len(data)} bytes, variable has {size}")
        if self._buf is not None:
            self._buf[offset: offset + size] = data
        elif self._frozen:
            raise LoaderError(f"{self.section} is frozen once the object is loaded: set {name} before load()")
        elif self._mm is not None:
            self._mm[offset: offset + size] = data
        else:
            whole = bytearray(self.raw())
            whole[offset: offset + size] = data
            syscall.map_update(self._map.fd, b"\0\0\0\0", bytes(whole), 0)

    def to_dict(self):
        return {name: self[name] for name in self._vars}
