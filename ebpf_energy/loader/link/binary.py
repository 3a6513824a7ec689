"""The user-space binaries uprobes and USDT attach to: where a library is,
which address a symbol has, and which file offset that address is at.

The kernel places a uprobe by (file, offset in the file), so a symbol's
virtual address from the ELF symbol tables (``.symtab``, else ``.dynsym``:
stripped libraries keep only the latter) is turned into a file offset
through the loadable segment that maps it: ``vaddr - p_vaddr + p_offset``.
A bare library name (``libc.so.6``) is looked up the way the dynamic linker
would: ``LD_LIBRARY_PATH``, the ld.so.conf directories, the usual lib dirs.
"""

import fnmatch
import glob
import os
import struct
from functools import lru_cache

from ..errors import AttachError

PT_LOAD = 1
SHT_NOBITS = 8
STT_FUNC, STT_GNU_IFUNC = 2, 10
_BINDS = {0: "STB_LOCAL", 1: "STB_GLOBAL", 2: "STB_WEAK"}
_SYM64 = struct.Struct("<IBBHQQ")  # Elf64_Sym: st_name, st_info, st_other, st_shndx, st_value, st_size
LIB_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib")


def _ld_so_conf_dirs(path="/etc/ld.so.conf", seen=None):
    seen = set() if seen is None else seen
    if path in seen:
        return []
    seen.add(path)
    dirs = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return dirs
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line.startswith("include "):
            for inc in sorted(glob.glob(line.split(None, 1)[1])):
                dirs += _ld_so_conf_dirs(inc, seen)
        elif line:
            dirs.append(line)
    return dirs


def find_binary(name):
    """The file a section's path names: a path as given (``/proc/self/exe``
    is this process's own binary, as for libbpf), a bare ``lib*.so*`` name
    searched like the dynamic linker, else a program on PATH."""
    if "/" in name:
        if os.path.isdir(name):
            raise AttachError(f"{name!r} is a directory, not a binary")
        if not os.path.isfile(name):
            raise AttachError(f"no such binary {name!r}")
        return os.path.realpath(name)
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    if ".so" in name:
        dirs += _ld_so_conf_dirs() + list(LIB_DIRS)
    else:
        dirs += os.environ.get("PATH", "").split(":")
    for d in dirs:
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return os.path.realpath(p)
    raise AttachError(f"cannot find {name!r} (looked in {', '.join(dict.fromkeys(dirs))}); give its full path")


_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr: name type flags addr offset size link info align entsize
_PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr: type flags offset vaddr paddr filesz memsz align
_ET = {2: "ET_EXEC", 3: "ET_DYN"}


class Binary:
    """One ELF file's loadable segments, function symbols and USDT notes,
    read once with struct (the headers and two tables are all a uprobe
    needs; pyelftools would parse every section of a large library)."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise AttachError(f"cannot read {path}: {e.strerror}") from None
        try:
            self._parse(memoryview(data))
        except (struct.error, ValueError, IndexError) as e:
            raise AttachError(f"cannot read {path} as an ELF file: {e}") from None

    def _parse(self, data):
        if bytes(data[:4]) != b"\x7fELF":
            raise ValueError("no ELF magic")
        if data[4] != 2 or data[5] != 1:
            raise AttachError(f"{self.path}: uprobes are placed in 64-bit little-endian binaries only")
        (_, e_type, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum,
         shstrndx) = _EHDR.unpack_from(data, 0)
        self.type = _ET.get(e_type, str(e_type))
        phdrs = [_PHDR.unpack_from(data, phoff + i * phentsize) for i in range(phnum)]
        self.segments = [(p[3], p[6], p[2], p[5]) for p in phdrs if p[0] == PT_LOAD]
        shdrs = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
        names = shdrs[shstrndx] if shdrs else None

        def name_of(h):
            start = names[4] + h[0]
            return bytes(data[start:start + 64]).split(b"\0", 1)[0].decode(errors="replace")

        by_name = {name_of(h): h for h in shdrs[1:]} if names else {}

        def body(h):
            return data[h[4]:h[4] + h[5]] if h[1] != SHT_NOBITS else b""

        self.symbols = {}
        for table in (".symtab", ".dynsym"):
            h = by_name.get(table)
            if h is None:
                continue
            strtab = bytes(body(shdrs[h[6]]))
            for name_off, info, _other, shndx, value, _size in _SYM64.iter_unpack(body(h)[:h[5] // 24 * 24]):
                if info & 0xF not in (STT_FUNC, STT_GNU_IFUNC) or not value or shndx == 0:
                    continue
                name = strtab[name_off:strtab.index(b"\0", name_off)].decode(errors="replace").split("@", 1)[0]
                self.symbols.setdefault(name, set()).add((value, _BINDS.get(info >> 4, "STB_LOCAL")))
            if self.symbols:
                break
        notes = by_name.get(".note.stapsdt")
        self.notes = bytes(body(notes)) if notes is not None else b""
        base = by_name.get(".stapsdt.base")
        self.stapsdt_base = base[3] if base is not None else None

    def address_of(self, symbol):
        """The virtual address of function ``symbol`` (a global wins over weak
        aliases at other addresses; two globals is ambiguous, as in libbpf)."""
        found = self.symbols.get(symbol)
        if not found:
            raise AttachError(f"no function {symbol!r} in {self.path} (neither .symtab nor .dynsym has it)")
        addrs = {a for a, _ in found}
        if len(addrs) > 1:
            strong = {a for a, bind in found if bind == "STB_GLOBAL"}
            if len(strong) != 1:
                raise AttachError(f"function {symbol!r} in {self.path} is at several addresses "
                                  f"({', '.join(hex(a) for a in sorted(addrs))}): give an offset instead")
            addrs = strong
        return addrs.pop()

    def matching(self, pattern):
        """Function names matching a glob (``uprobe.multi`` sections)."""
        return sorted(n for n in self.symbols if fnmatch.fnmatchcase(n, pattern))

    def file_offset(self, vaddr):
        """The file offset of virtual address ``vaddr`` (the PT_LOAD segment that maps it)."""
        for p_vaddr, memsz, p_offset, filesz in self.segments:
            if p_vaddr <= vaddr < p_vaddr + min(memsz, filesz):
                return vaddr - p_vaddr + p_offset
        raise AttachError(f"address {vaddr:#x} is in no loadable segment of {self.path}")

    def offset_of(self, symbol, plus=0):
        return self.file_offset(self.address_of(symbol) + plus)


@lru_cache(maxsize=16)
def _cached(path, mtime_ns, size):
    return Binary(path)


def open_binary(path) -> Binary:
    """The :class:`Binary` at ``path`` (cached while the file is unchanged)."""
    st = os.stat(path)
    return _cached(path, st.st_mtime_ns, st.st_size)


def parse_target(spec, kind="uprobe"):
    """``PATH:SYMBOL[+OFFSET]`` or ``PATH:0xADDR`` -> (path, symbol or None, offset)."""
    path, sep, where = spec.rpartition(":")
    if not sep or not path or not where:
        raise AttachError(f"{kind} target {spec!r} must be PATH:FUNCTION[+OFFSET] (e.g. /usr/bin/bash:readline)")
    if where.lower().startswith("0x"):
        try:
            return path, None, int(where, 16)
        except ValueError:
            raise AttachError(f"{kind} target {spec!r}: {where!r} is not an address") from None
    sym, plus, off = where.partition("+")
    try:
        offset = int(off, 0) if plus else 0
    except ValueError:
        raise AttachError(f"{kind} target {spec!r}: offset {off!r} is not a number") from None
    if offset < 0:  # it would land in the function before, silently
        raise AttachError(f"{kind} target {spec!r}: the offset into {sym} must be 0 or more, not {offset}")
    return path, sym, offset
