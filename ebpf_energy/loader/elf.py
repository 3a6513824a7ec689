"""Sections, symbols and relocations of a BPF ELF object (via pyelftools).

The loader needs only a flat, eager view of the object: section bytes by
index, the symbol table, and ``.rel*`` tables grouped by the section they
patch. Reading everything once up front keeps pyelftools' exceptions inside
this module, where any of them becomes an :class:`ElfError`: a corrupt file
must never surface as a pyelftools traceback.
"""

import io
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

_BINDS = {"STB_LOCAL": "LOCAL", "STB_GLOBAL": "GLOBAL", "STB_WEAK": "WEAK"}
_STYPES = {"STT_NOTYPE": "NOTYPE", "STT_OBJECT": "OBJECT", "STT_FUNC": "FUNC",
           "STT_SECTION": "SECTION", "STT_FILE": "FILE"}
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
        except Exception as exc:  # pyelftools raises many types on bad input
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
        from elftools.elf.elffile import ELFFile

        if len(data) < 16 or data[:4] != b"\x7fELF":
            raise ElfError(f"{self.name}: not an ELF file")
        elf = ELFFile(io.BytesIO(data))
        machine = elf.header["e_machine"]
        if machine not in ("EM_BPF", EM_BPF):
            raise ElfError(f"{self.name}: not a BPF object (e_machine {machine}, expected EM_BPF=247)")
        if elf.header["e_type"] not in ("ET_REL",):
            raise ElfError(f"{self.name}: expected a relocatable object (ET_REL), got {elf.header['e_type']}")
        size = len(data)
        symtab = None
        rel_sections = []
        for index, sec in enumerate(elf.iter_sections()):
            hdr = sec.header
            stype = hdr["sh_type"]
            ssize = hdr["sh_size"]
            if stype in ("SHT_NOBITS", SHT_NOBITS):
                if ssize > _MAX_NOBITS:
                    raise ElfError(f"{self.name}: section {sec.name or index} claims {ssize} bytes, more than a BPF map can hold")
                content = bytes(ssize)  # calloc'd: zero pages cost nothing until touched
            elif stype == "SHT_NULL":
                content = b""
            else:
                off = hdr["sh_offset"]
                if off + ssize > size:
                    raise ElfError(f"{self.name}: section {sec.name or index} runs past the end of the file (truncated?)")
                content = data[off:off + ssize]
            is_exec = bool(hdr["sh_flags"] & SHF_EXECINSTR)
            s = Section(index, sec.name, stype, hdr["sh_flags"], content, ssize, is_exec)
            self.sections.append(s)
            self._by_name.setdefault(sec.name, s)
            if stype == "SHT_SYMTAB":
                symtab = sec
            elif stype in ("SHT_REL", "SHT_RELA"):
                rel_sections.append(sec)
        if symtab is not None:
            self._read_symbols(symtab)
        for rel in rel_sections:
            target = self.section_by_index(rel.header["sh_info"])
            if target is not None and _ignored_reloc_target(target.name):
                continue  # DWARF: nothing to apply; ~60k relocations with vmlinux.h were 95% of open()
            self._read_relocs(rel)
        self._read_special()
        explain.trace("elf", f"{self.name}: {len(self.sections)} sections, {len(self.symbols)} symbols",
                      *(f"{s.name} ({s.size} bytes{', code' if s.is_exec else ''})"
                        for s in self.sections if s.size and (s.is_exec or _is_data_name(s.name)
                                                              or s.name in (".maps", ".BTF", ".BTF.ext"))))

    def _read_symbols(self, symtab):
        nsec = len(self.sections)
        for i, sym in enumerate(symtab.iter_symbols()):
            info = sym["st_info"]
            shndx = sym["st_shndx"]
            if not isinstance(shndx, int):
                shndx = {"SHN_UNDEF": 0, "SHN_ABS": 0xfff1, "SHN_COMMON": 0xfff2}.get(shndx, 0xffff)
            name = sym.name
            stype = _STYPES.get(info["type"], str(info["type"]))
            if stype == "SECTION" and not name and 0 < shndx < nsec:
                name = self.sections[shndx].name
            self.symbols.append(Symbol(i, name, sym["st_value"], sym["st_size"],
                                       _BINDS.get(info["bind"], str(info["bind"])), stype, shndx,
                                       sym["st_other"]["visibility"] == "STV_HIDDEN"))

    def _read_relocs(self, rel):
        target = rel.header["sh_info"]
        if not 0 < target < len(self.sections):
            raise ElfError(f"{self.name}: relocation section {rel.name} targets missing section {target}")
        out = []
        for r in rel.iter_relocations():
            symi = r["r_info_sym"]
            if symi >= len(self.symbols):
                raise ElfError(f"{self.name}: {rel.name} refers to symbol {symi}, only {len(self.symbols)} exist")
            out.append(Reloc(r["r_offset"], self.symbols[symi], r["r_info_type"]))
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


def _ignored_reloc_target(name):
    """DWARF sections: a BPF loader never applies their relocations (libbpf ignores them too)."""
    return name.startswith(".debug_")
