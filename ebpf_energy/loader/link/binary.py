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
from functools import lru_cache

from ..errors import AttachError

PT_LOAD = 1
STT_FUNC, STT_GNU_IFUNC = "STT_FUNC", "STT_LOOS"  # pyelftools names STT_GNU_IFUNC STT_LOOS
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


class Binary:
    """One ELF file's loadable segments and function symbols, read once."""

    def __init__(self, path):
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        self.path = path
        try:
            with open(path, "rb") as f:
                elf = ELFFile(f)
                self.type = elf.header.e_type
                self.segments = [(s.header.p_vaddr, s.header.p_memsz, s.header.p_offset, s.header.p_filesz)
                                 for s in elf.iter_segments() if s.header.p_type == "PT_LOAD"]
                self.symbols = self._functions(elf)
                self.notes = self._section(elf, ".note.stapsdt")
                base = elf.get_section_by_name(".stapsdt.base")
                self.stapsdt_base = base.header.sh_addr if base is not None else None
                self.sections = [(s.name, s.header.sh_addr, s.header.sh_size, s.header.sh_offset)
                                 for s in elf.iter_sections() if s.header.sh_addr]
        except (OSError, ELFError) as e:
            raise AttachError(f"cannot read {path} as an ELF file: {e}") from None

    @staticmethod
    def _section(elf, name):
        s = elf.get_section_by_name(name)
        return s.data() if s is not None else b""

    @staticmethod
    def _functions(elf):
        """name -> set of (vaddr, bind): .symtab when present, else .dynsym."""
        out = {}
        for table in (".symtab", ".dynsym"):
            sec = elf.get_section_by_name(table)
            if sec is None:
                continue
            for sym in sec.iter_symbols():
                e = sym.entry
                if e.st_info.type not in (STT_FUNC, STT_GNU_IFUNC) or not e.st_value or e.st_shndx == "SHN_UNDEF":
                    continue
                name = sym.name.split("@", 1)[0]
                out.setdefault(name, set()).add((e.st_value, e.st_info.bind))
            if out:
                break
        return out

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
        return path, sym, int(off, 0) if plus else 0
    except ValueError:
        raise AttachError(f"{kind} target {spec!r}: offset {off!r} is not a number") from None
