"""Sections, symbols and relocations of a BPF ELF object.

The loader needs only a flat, eager view of the object: section bytes by
index, the symbol table, and ``.rel*`` tables grouped by the section they
patch. A BPF object is a 64-bit relocatable ELF, so that view is three fixed
records (``Elf64_Shdr``, ``Elf64_Sym``, ``Elf64_Rel[a]``) read with
:mod:`struct` here: importing a general ELF/DWARF library cost a load more
than reading the object. Reading everything once up front keeps every
exception inside this module, where any of them becomes an :class:`ElfError`:
a corrupt file must never surface as a traceback.
"""

import struct
import sys
from collections import namedtuple

from . import explain
from .errors import ElfError, LoaderError

EM_BPF = 247
SHF_EXECINSTR = 0x4
SHT_NOBITS = 8
_MAX_NOBITS = 1 << 28

Section = namedtuple("Section", "index name type flags data size is_exec")
Symbol = namedtuple("Symbol", "index name value size bind type shndx hidden", defaults=(False,))
Reloc = namedtuple("Reloc", "offset symbol type")

ET_REL = 1
ELFCLASS64 = 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
SHN_XINDEX = 0xFFFF
STV_HIDDEN = 2  # st_other & 3: the symbol's visibility
_SHT_NAMES = {0: "SHT_NULL", 1: "SHT_PROGBITS", 2: "SHT_SYMTAB", 3: "SHT_STRTAB", 4: "SHT_RELA", 8: "SHT_NOBITS",
              9: "SHT_REL"}
_BINDS = {0: "LOCAL", 1: "GLOBAL", 2: "WEAK"}
_STYPES = {0: "NOTYPE", 1: "OBJECT", 2: "FUNC", 3: "SECTION", 4: "FILE"}
# Elf64_Ehdr from e_type on, Elf64_Shdr, Elf64_Sym, Elf64_Rel (Elf64_Rela adds an addend)
_EHDR = "HHIQQQIHHHHHH"
_SHDR = "IIQQQQIIQQ"
_SYM = "IBBHQQ"
_REL = "QQ"
# Sections whose contents become global-data maps (libbpf's rule).
_DATA_PREFIXES = (".rodata", ".data", ".bss")


def _is_data_name(name):
    return any(name == p or name.startswith(p + ".") for p in _DATA_PREFIXES)


class ElfObject:
    """Everything the loader reads from one BPF ELF file."""

    def __init__(self, data, name="<bytes>"):
        self.name = name
        self.sections = []
        self.symbols = []
        self.relocations = {}
        self.license = ""
        self.kern_version = None
        self.btf = None
        self.btf_ext = None
        self._by_name = {}
        try:
            self._read(bytes(data))
        except LoaderError:
            raise
        except Exception as exc:  # struct.error, IndexError... on bad input: one error type out
            raise ElfError(f"{name}: corrupt ELF object ({type(exc).__name__}: {exc})") from None

    # -- constructors -------------------------------------------------------
    @classmethod
    def from_path(cls, path):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ElfError(f"cannot read {path}: {exc.strerror or exc}") from None
        return cls(data, str(path))

    @classmethod
    def from_bytes(cls, data, name="<bytes>"):
        return cls(data, name)

    # -- parsing ------------------------------------------------------------
    def _read(self, data):
        if len(data) < 64 or data[:4] != b"\x7fELF":
            raise ElfError(f"{self.name}: not an ELF file")
        if data[4] != ELFCLASS64:
            raise ElfError(f"{self.name}: not a 64-bit ELF file (BPF objects are ELFCLASS64)")
        if data[5] not in (ELFDATA2LSB, ELFDATA2MSB):
            raise ElfError(f"{self.name}: unknown ELF byte order {data[5]}")
        E = "<" if data[5] == ELFDATA2LSB else ">"
        (etype, machine, _, _, _, shoff, _, _, _, _, shentsize, shnum, shstrndx) = struct.unpack_from(E + _EHDR, data, 16)
        if machine != EM_BPF:
            raise ElfError(f"{self.name}: not a BPF object (e_machine {machine}, expected EM_BPF=247)")
        host = "little" if sys.byteorder == "little" else "big"
        order = "little" if data[5] == ELFDATA2LSB else "big"
        if order != host:
            # the kernel takes instructions, BTF and map data in its own byte order only
            raise ElfError(f"{self.name}: a {order}-endian BPF object (clang -target bpf{'eb' if order == 'big' else 'el'})"
                           f" cannot run on this {host}-endian kernel: rebuild it with -target bpf")
        if etype != ET_REL:
            raise ElfError(f"{self.name}: expected a relocatable object (ET_REL), got e_type {etype}")
        if shentsize != struct.calcsize(E + _SHDR):
            raise ElfError(f"{self.name}: section header size {shentsize}, expected 64")
        headers = self._section_headers(data, E, shoff, shnum)
        if shstrndx == SHN_XINDEX:  # more than 0xff00 sections: the real index is in section 0
            shstrndx = headers[0][6]
        names = self._content(data, headers[shstrndx], shstrndx) if 0 < shstrndx < len(headers) else b""
        size = len(data)
        symtab = None
        rel_sections = []
        for index, (name_off, stype, flags, _, off, ssize, link, info, _, entsize) in enumerate(headers):
            name = _cstr(names, name_off)
            tname = _SHT_NAMES.get(stype, stype)
            if stype == SHT_NOBITS:
                if ssize > _MAX_NOBITS:
                    raise ElfError(f"{self.name}: section {name or index} claims {ssize} bytes, more than a BPF map can hold")
                content = bytes(ssize)  # calloc'd: zero pages cost nothing until touched
            elif stype == 0:
                content = b""
            else:
                if off + ssize > size:
                    raise ElfError(f"{self.name}: section {name or index} runs past the end of the file (truncated?)")
                content = data[off:off + ssize]
            s = Section(index, name, tname, flags, content, ssize, bool(flags & SHF_EXECINSTR))
            self.sections.append(s)
            self._by_name.setdefault(name, s)
            if tname == "SHT_SYMTAB":
                symtab = (s, link)
            elif tname in ("SHT_REL", "SHT_RELA"):
                rel_sections.append((s, info))
        if symtab is not None:
            self._read_symbols(E, *symtab)
        for rel, target in rel_sections:
            t = self.section_by_index(target)
            if t is not None and _ignored_reloc_target(t.name):
                continue  # DWARF: nothing to apply; ~60k relocations with vmlinux.h were 95% of open()
            self._read_relocs(E, rel, target)
        self._read_special()
        explain.trace("elf", f"{self.name}: {len(self.sections)} sections, {len(self.symbols)} symbols",
                      *(f"{s.name} ({s.size} bytes{', code' if s.is_exec else ''})"
                        for s in self.sections if s.size and (s.is_exec or _is_data_name(s.name)
                                                              or s.name in (".maps", ".BTF", ".BTF.ext"))))

    def _section_headers(self, data, E, shoff, shnum):
        if shoff + 64 > len(data):
            raise ElfError(f"{self.name}: section headers lie past the end of the file (truncated?)")
        if shnum == 0:  # 0xff00 sections or more: the count is section 0's sh_size
            shnum = struct.unpack_from(E + _SHDR, data, shoff)[5]
        if shoff + shnum * 64 > len(data):
            raise ElfError(f"{self.name}: {shnum} section headers run past the end of the file (truncated?)")
        return [struct.unpack_from(E + _SHDR, data, shoff + i * 64) for i in range(shnum)]

    def _content(self, data, header, index):
        off, size = header[4], header[5]
        if off + size > len(data):
            raise ElfError(f"{self.name}: section {index} runs past the end of the file (truncated?)")
        return data[off:off + size]

    def _read_symbols(self, E, symtab, strtab_index):
        strtab = self.sections[strtab_index].data if 0 < strtab_index < len(self.sections) else b""
        nsec = len(self.sections)
        rec = struct.Struct(E + _SYM)
        for i, (name_off, info, other, shndx, value, size) in enumerate(rec.iter_unpack(
                symtab.data[:len(symtab.data) // rec.size * rec.size])):
            name = _cstr(strtab, name_off)
            stype = _STYPES.get(info & 0xF, str(info & 0xF))
            if stype == "SECTION" and not name and 0 < shndx < nsec:
                name = self.sections[shndx].name
            self.symbols.append(Symbol(i, name, value, size, _BINDS.get(info >> 4, str(info >> 4)), stype, shndx,
                                       other & 3 == STV_HIDDEN))

    def _read_relocs(self, E, rel, target):
        if not 0 < target < len(self.sections):
            raise ElfError(f"{self.name}: relocation section {rel.name} targets missing section {target}")
        rec = struct.Struct(E + (_REL + "q" if rel.type == "SHT_RELA" else _REL))
        out = []
        for r in rec.iter_unpack(rel.data[:len(rel.data) // rec.size * rec.size]):
            symi = r[1] >> 32
            if symi >= len(self.symbols):
                raise ElfError(f"{self.name}: {rel.name} refers to symbol {symi}, only {len(self.symbols)} exist")
            out.append(Reloc(r[0], self.symbols[symi], r[1] & 0xFFFFFFFF))
        out.sort(key=lambda x: x.offset)
        self.relocations.setdefault(target, []).extend(out)
        if len(self.relocations[target]) != len(out):
            self.relocations[target].sort(key=lambda x: x.offset)

    def _read_special(self):
        lic = self.section("license")
        if lic is not None:
            self.license = lic.data.split(b"\0", 1)[0].decode("utf-8", "replace")
        ver = self.section("version")
        if ver is not None:
            if len(ver.data) != 4:
                raise ElfError(f"{self.name}: 'version' section must be 4 bytes, got {len(ver.data)}")
            self.kern_version = int.from_bytes(ver.data, "little")
        btf = self.section(".BTF")
        self.btf = btf.data if btf is not None else None
        ext = self.section(".BTF.ext")
        self.btf_ext = ext.data if ext is not None else None

    # -- queries ------------------------------------------------------------
    def section(self, name):
        return self._by_name.get(name)

    def section_by_index(self, index):
        if 0 <= index < len(self.sections):
            return self.sections[index]
        return None

    def program_sections(self):
        """Executable sections with code: SEC("...") programs and ``.text`` subprograms."""
        return [s for s in self.sections if s.is_exec and s.size > 0]

    def functions(self, shndx):
        """FUNC symbols in a section, by offset: its programs (or subprograms)."""
        return sorted((s for s in self.symbols if s.shndx == shndx and s.type == "FUNC"),
                      key=lambda s: s.value)

    def data_sections(self):
        """``.rodata*``, ``.data*``, ``.bss*``: global data that becomes array maps."""
        return [s for s in self.sections if _is_data_name(s.name) and not s.is_exec
                and s.type in ("SHT_PROGBITS", "SHT_NOBITS")]

    def symbol(self, name):
        for s in self.symbols:
            if s.name == name:
                return s
        return None

    def __repr__(self):
        return f"<ElfObject {self.name}: {len(self.sections)} sections>"


def _cstr(table, off):
    end = table.find(b"\0", off)
    return bytes(table[off:end if end >= 0 else len(table)]).decode("utf-8", "replace") if off < len(table) else ""


def _ignored_reloc_target(name):
    """DWARF sections: a BPF loader never applies their relocations (libbpf ignores them too)."""
    return name.startswith(".debug_")
