"""``BpfObject``: open -> adjust -> load -> attach -> close, owning every fd it makes.

The spec (:mod:`ebpf_energy.loader.spec`) is pure data; this class is the thin
kernel-facing layer that turns it into a BTF fd, map fds, program fds and
links, in that order, and closes them in reverse. A failure at any step
closes what was made before it, so nothing of ours stays in the kernel.
"""

import os
import struct
from typing import Dict, Iterable, List, Optional

from ebpf_energy.loader import attach as attach_mod
from ebpf_energy.loader import btf_sanitize, core, explain, map_memory, program, syscall
from ebpf_energy.loader.btf import KIND_FUNC, KIND_NAMES, KIND_VAR
from ebpf_energy.loader.errors import (AttachError, BtfError, LoaderError, PermissionDenied, SyscallError,
                                       VerifierError)
from ebpf_energy.loader.sections import BPF_MODIFY_RETURN, BPF_TRACE_FENTRY, BPF_TRACE_FEXIT
from ebpf_energy.loader.externs import kallsyms_address, kconfig_value, read_kconfig
from ebpf_energy.loader.globals import GlobalData
from ebpf_energy.loader.linker import Linker
from ebpf_energy.loader.maps import Map
from ebpf_energy.loader.spec import MAP_TYPES, ObjectSpec, kernel_map_name

PERF_EVENT_ARRAY = 4
TASK_STORAGE = 29
# Map types whose key/value the kernel does not describe with BTF (fds, ids,
# stack traces): it refuses BTF ids for them, so libbpf leaves them out too.
NO_BTF_KV = {3, 4, 7, 8, 12, 13, 27, 31}  # prog/perf_event/cgroup arrays, stack_trace, map-in-map, ringbufs
PIN_BY_NAME = 1
PIN_ROOT = "/sys/fs/bpf"
_kernel_btf = None
TRAMPOLINE_ATTACH = (BPF_TRACE_FENTRY, BPF_TRACE_FEXIT, BPF_MODIFY_RETURN)


RINGBUF = 27


def ringbuf_size(name: str, size: int) -> int:
    """A ring buffer's size as the kernel takes it: a power-of-two multiple of
    the page size. Rounded up, as libbpf does, and said under --explain."""
    page = os.sysconf("SC_PAGE_SIZE")
    want = max(size, page)
    rounded = 1 << (want - 1).bit_length()
    if rounded != size:
        explain.trace("map", f"{name}: ring buffer size {size} rounded up to {rounded} "
                             f"(a power-of-two multiple of the {page}-byte page)")
    return rounded


class TrampolineRefused(LoaderError):
    """fentry/fexit refused although we are privileged: the kernel forbids trampolines."""

    def __init__(self, message, errno):
        self.errno = errno
        super().__init__(message)


def kernel_btf():
    """The running kernel's BTF, indexed once per process."""
    global _kernel_btf
    if _kernel_btf is None:
        from ebpf_energy.loader.kernel_btf import KernelBtf

        _kernel_btf = KernelBtf.load()
    return _kernel_btf


class Program:
    """A program of the object: its spec, then its fd and link."""

    def __init__(self, spec):
        self.spec = spec
        self.fd: Optional[int] = None
        self.link = None
        self.linked = None
        self.attach_error: Optional[str] = None

    name = property(lambda self: self.spec.name)
    section = property(lambda self: self.spec.section)
    type_name = property(lambda self: self.spec.type_name)

    @property
    def autoload(self):
        return self.spec.autoload

    @autoload.setter
    def autoload(self, value):
        self.spec.autoload = bool(value)

    @property
    def loaded(self):
        return self.fd is not None

    @property
    def attached(self):
        return self.link is not None

    def info(self) -> dict:
        program.check_loaded(self.name, self.fd)
        return syscall.obj_get_info(self.fd, "prog")


class BpfObject:
    """One BPF ELF object in the kernel. Use as a context manager."""

    def __init__(self, spec: ObjectSpec):
        self.spec = spec
        self.programs: Dict[str, Program] = {name: Program(p) for name, p in spec.programs.items()}
        self.maps: Dict[str, Map] = {}
        self.btf_fd = 0
        self._globals: Dict[str, GlobalData] = {}
        for sec, variables in spec.data_vars.items():
            self._globals[sec] = GlobalData(sec, variables, spec.btf, spec.maps[sec].initial)
        self._loaded = False
        self._closed = False
        self._poisoned = {}  # section index -> [(instruction, CoreResult)] the kernel lacks

    @classmethod
    def open(cls, path, data: Optional[bytes] = None) -> "BpfObject":
        return cls(ObjectSpec.parse(str(path), data))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- before load ---------------------------------------------------------
    def globals(self, section: str) -> GlobalData:
        try:
            return self._globals[section]
        except KeyError:
            raise KeyError(f"{self.spec.path} has no global data section {section!r} "
                           f"(it has: {', '.join(self._globals) or 'none'})") from None

    rodata = property(lambda self: self.globals(".rodata"))
    bss = property(lambda self: self.globals(".bss"))
    data = property(lambda self: self.globals(".data"))

    def set_global(self, name: str, value):
        """Set a global variable by name, whichever data section holds it."""
        for g in self._globals.values():
            if name in g:
                g[name] = value
                return g.section
        raise KeyError(f"no global variable {name!r} in {self.spec.path}")

    def find_global(self, name: str) -> GlobalData:
        for g in self._globals.values():
            if name in g:
                return g
        raise KeyError(f"no global variable {name!r} in {self.spec.path}")

    def set_max_entries(self, map_name: str, n: int):
        if self._loaded:
            raise LoaderError("max_entries can only change before load()")
        try:
            spec = self.spec.maps[map_name]
        except KeyError:
            raise KeyError(f"no map {map_name!r} (maps: {', '.join(self.spec.maps)})") from None
        if spec.kind != "btf":
            raise LoaderError(f"{map_name} is a global data section: its size is fixed")
        if n <= 0:
            raise LoaderError(f"max_entries of {map_name} must be positive, got {n}")
        spec.max_entries = int(n)

    # -- load ----------------------------------------------------------------
    def load(self, only: Optional[Iterable[str]] = None):
        """Create BTF and maps, relocate and load the programs (all, or ``only`` these)."""
        if self._loaded:
            raise LoaderError("object already loaded")
        if only is not None:
            only = list(only)
            unknown = [n for n in only if n not in self.programs]
            if unknown:
                raise LoaderError(f"no program named {', '.join(unknown)} in {self.spec.path} "
                                  f"(programs: {', '.join(self.programs)})")
            for name, p in self.programs.items():
                p.autoload = name in only
        syscall.raise_memlock_best_effort()
        try:
            self._load_btf()
            self._create_maps()
            self._load_programs()
        except BaseException:
            self.close()
            raise
        self._loaded = True
        return self

    def _needs_kernel_btf(self):
        ext = self.spec.ext
        if ext is not None and any(ext.core_relos.values()):
            return True
        if self.spec.ksyms:
            return True
        return any(p.autoload and p.spec.kind and p.spec.kind.btf_target for p in self.programs.values())

    def _load_btf(self):
        if self.spec.btf is None:
            return
        data = btf_sanitize.for_kernel(self.spec.btf)
        try:
            self.btf_fd = syscall.btf_load(data)
        except BtfError as e:
            if any(m.type == TASK_STORAGE for m in self.spec.maps.values()):
                raise
            explain.trace("btf", f"kernel refused the object's BTF ({e}); continuing without it")
            self.btf_fd = 0

    def _create_maps(self):
        obj_name = self.spec.name
        kconfig = read_kconfig() if self.spec.kconfig else {}
        for spec in self.spec.maps.values():
            if spec.kind == "kconfig":
                for v in self.spec.kconfig:
                    data = kconfig_value(v, kconfig, self.spec.btf.codec(v.type_id))
                    spec.initial[v.offset: v.offset + len(data)] = data
            use_btf = bool(self.btf_fd and (spec.key_type_id or spec.value_type_id)
                           and spec.type not in NO_BTF_KV)
            if spec.type == PERF_EVENT_ARRAY and spec.max_entries == 0:
                spec.max_entries = syscall.num_possible_cpus()
            key_codec = value_codec = None
            if self.spec.btf is not None and spec.kind == "btf":
                if spec.key_type_id:
                    key_codec = self.spec.btf.codec(spec.key_type_id)
                if spec.value_type_id:
                    value_codec = self.spec.btf.codec(spec.value_type_id)
            if spec.pinning == PIN_BY_NAME and self._reuse_pinned(spec, key_codec, value_codec):
                continue
            if spec.type == RINGBUF:
                spec.max_entries = ringbuf_size(spec.name, spec.max_entries)
            map_memory.check(spec.name, MAP_TYPES.get(spec.type, str(spec.type)), spec.type, spec.key_size,
                             spec.value_size, spec.max_entries, spec.flags, syscall.num_possible_cpus())
            try:
                m = Map.create(
                    kernel_map_name(obj_name, spec.name), spec.type, spec.key_size, spec.value_size,
                    spec.max_entries, map_flags=spec.flags, numa_node=spec.numa_node,
                    btf_fd=self.btf_fd if use_btf else 0,
                    btf_key_type_id=spec.key_type_id if use_btf else 0,
                    btf_value_type_id=spec.value_type_id if use_btf else 0,
                    key_codec=key_codec, value_codec=value_codec)
            except SyscallError as e:  # say which map: an object has many
                raise type(e)(e.command, e.errno, f"map {spec.name} ({MAP_TYPES.get(spec.type, spec.type)}, "
                              f"key {spec.key_size} B, value {spec.value_size} B, max_entries "
                              f"{spec.max_entries:,}): {str(e).split(': ', 1)[-1]}") from None
            m.spec_name = spec.name
            self.maps[spec.name] = m
            if spec.initial is not None:
                syscall.map_update(m.fd, b"\0\0\0\0", bytes(spec.initial), 0)
                if spec.readonly:
                    syscall.map_freeze(m.fd)
                    explain.trace("map", f"{spec.name}: wrote {len(spec.initial)} initial bytes, BPF_MAP_FREEZE "
                                         "(the verifier now treats its values as constants)")
                if spec.name in self._globals:
                    self._globals[spec.name].attach_map(m, frozen=spec.readonly)
            if spec.pinning == PIN_BY_NAME:
                m.pin_path = os.path.join(PIN_ROOT, spec.name)
                m.pin(m.pin_path)

    def _reuse_pinned(self, spec, key_codec, value_codec) -> bool:
        path = os.path.join(PIN_ROOT, spec.name)
        if not os.path.exists(path):
            return False
        m = Map.pinned(path, key_codec=key_codec, value_codec=value_codec)
        if (m.type, m.key_size, m.value_size, m.max_entries) != (spec.type, spec.key_size, spec.value_size,
                                                               spec.max_entries):
            m.close()
            raise LoaderError(f"map {spec.name} is pinned at {path} with different attributes: remove it or "
                              "change the definition")
        m.spec_name = spec.name
        m.pin_path = path
        self.maps[spec.name] = m
        explain.trace("map", f"{spec.name}: reusing the map pinned at {path} (fd {m.fd})")
        return True

    def _relocated_sections(self):
        """Per code section: a CO-RE-patched copy of its instructions."""
        code = {}
        ext = self.spec.ext
        for sec in self.spec.elf.program_sections():
            buf = bytearray(sec.data)
            relos = ext.core_relos.get(sec.name, []) if ext is not None else []
            if relos:
                target = kernel_btf()
                for relo in relos:
                    idx = relo.insn_off_bytes // 8
                    result = core.resolve(relo, self.spec.btf, target)
                    before, after = core.patch(buf, idx, result)
                    if result.poison:
                        self._poisoned.setdefault(sec.index, []).append((idx, result))
                    if explain.enabled():
                        outcome = (f"POISONED ({result.reason})" if result.poison
                                   else f"{result.target_desc} = {result.new_val}")
                        explain.trace("core", f"{sec.name} insn {idx}: {result.kind_name} "
                                              f"{result.local_desc} -> {outcome}", f"{before}  ->  {after}")
            code[sec.index] = buf
        return code

    def _load_programs(self):
        wanted = [p for p in self.programs.values() if p.autoload]
        if not wanted:
            return
        linker = Linker(self.spec.elf, self._relocated_sections(), self.spec.symbol_kind)
        kver = 0
        for p in wanted:
            kind = p.spec.kind
            if kind is None:
                raise LoaderError(f"program {p.name}: section {p.section!r} does not say what kind of program it is "
                                  "(expected tp/, raw_tp/, tp_btf/, fentry/, ...)")
            linked = linker.link(p.spec.shndx, p.name, p.spec.start, p.spec.end)
            for edit in linked.call_edits:
                explain.trace("reloc", f"{p.name} insn {edit[0]}: call {edit[1]} -> pc{edit[2]:+d}")
            lines = program.apply_fixups(linked, self._resolve_fixup)
            if lines:
                explain.trace("reloc", f"{p.name}: {len(linked.fixups)} ld_imm64 relocations", *lines)
            attach_btf_id = 0
            if kind.btf_target:
                ids = kernel_btf().find(kind.btf_target, kind=KIND_NAMES.index(kind.btf_target_kind))
                if not ids:
                    raise LoaderError(f"program {p.name}: the kernel has no {kind.btf_target_kind} "
                                      f"{kind.btf_target!r} to attach {p.section} to")
                attach_btf_id = ids[0]
                explain.trace("prog", f"{p.name}: attach target {kind.btf_target} is kernel BTF id {attach_btf_id}")
            p.linked = linked
            try:
                p.fd = program.load(linked, kind.prog_type, self.spec.elf.license, ext=self.spec.ext,
                                    btf_fd=self.btf_fd, expected_attach_type=kind.expected_attach_type,
                                    attach_btf_id=attach_btf_id, kern_version=kver)
            except VerifierError as e:
                raise self._named_poison(e, p, linked) from None
            except PermissionDenied as e:
                if kind.expected_attach_type in TRAMPOLINE_ATTACH and os.geteuid() == 0:
                    raise TrampolineRefused(
                        f"program {p.name} ({p.section}): this kernel refuses fentry/fexit programs even to "
                        "root (BPF trampolines are not permitted here, e.g. kernel lockdown or no "
                        "direct-call ftrace); attach to a tracepoint instead (tp_btf/, raw_tp/, tp/)",
                        e.errno) from None
                raise

    def _named_poison(self, e: VerifierError, p, linked) -> VerifierError:
        """The verifier stopped at a poisoned CO-RE relocation (``call
        0xbad2310``, shown as ``unknown#195896080``): say which one, as
        libbpf does, rather than leave the reader with the magic number."""
        if f"#{core.POISON_IMM}" not in (e.log or "") + str(e):
            return e
        found = [(f.section, f.name, idx, r) for f in linked.functions
                 for idx, r in self._poisoned.get(f.shndx, []) if f.start <= idx < f.end]
        if not found:
            return e
        lines = [f"the verifier reached a CO-RE relocation that did not resolve against this kernel "
                 f"(the loader put `call {core.POISON_IMM:#x}` there):"]
        lines += [f"  program {p.name}, function {fn} (section {sec} instruction {idx}): {r.kind_name} "
                  f"{r.local_desc}: {r.reason}" for sec, fn, idx, r in found]
        lines.append("guard the access with bpf_core_field_exists() / bpf_core_type_exists(), or build for this kernel")
        return VerifierError(e.program, "\n".join(lines) + "\n" + str(e), log=e.log, source_line=e.source_line)

    def _resolve_fixup(self, fx):
        """(src_reg, imm, next imm) for one ld_imm64 or kfunc call fixup."""
        from ebpf_energy.loader import insn as I

        if fx.kind == "map":
            return I.PSEUDO_MAP_FD, self.maps[fx.target].fd, 0
        if fx.kind == "data":
            return I.PSEUDO_MAP_VALUE, self.maps[fx.target].fd, fx.offset
        name = fx.target
        for v in self.spec.kconfig:
            if v.name == name:
                return I.PSEUDO_MAP_VALUE, self.maps[".kconfig"].fd, v.offset
        if name in self.spec.ksyms:
            btf = self.spec.btf
            local = btf.type(self.spec.ksyms[name])
            kbtf = kernel_btf()
            if fx.call or local.kind_name == "func":
                ids = kbtf.find(name, kind=KIND_FUNC)
                if not ids:
                    raise LoaderError(f"kfunc {name} __ksym: not in the kernel's BTF")
                return I.PSEUDO_KFUNC_CALL, ids[0], 0
            if btf.resolve(local.type) == 0:  # `extern const void x __ksym`: an address
                addr = kallsyms_address(name)
                return 0, struct.unpack("<i", struct.pack("<I", addr & 0xFFFFFFFF))[0], \
                    struct.unpack("<i", struct.pack("<I", addr >> 32))[0]
            ids = kbtf.find(name, kind=KIND_VAR)
            if not ids:
                raise LoaderError(f"extern {name} __ksym: the kernel's BTF has no variable of that name")
            return I.PSEUDO_BTF_ID, ids[0], 0
        raise LoaderError(f"extern {name!r} is neither __kconfig nor __ksym")

    # -- attach ----------------------------------------------------------------
    def attach(self, only: Optional[Iterable[str]] = None, strict=True) -> List[Program]:
        """Attach loaded programs; with ``strict`` the first failure raises (after
        recording it), else failures are kept in ``program.attach_error``."""
        done = []
        names = set(only) if only is not None else None
        for p in self.programs.values():
            if not p.loaded or p.attached or (names is not None and p.name not in names):
                continue
            if p.spec.kind.manual:
                # nothing to attach to (SEC("raw_tp"), SEC("syscall"), ...): run with
                # BPF_PROG_TEST_RUN or attached by the caller, as libbpf leaves them
                explain.trace("attach", f"{p.name}: section {p.section!r} names no target: loaded, not attached")
                continue
            try:
                p.link = self._attach_one(p)
                done.append(p)
            except AttachError as e:
                p.attach_error = str(e)
                if strict:
                    raise
        return done

    def _attach_one(self, p: Program):
        kind = p.spec.kind
        if kind.attach == "tracepoint":
            category, _, name = kind.target.partition("/")
            if not name:
                raise AttachError(f"program {p.name}: section {p.section!r} must be tp/<category>/<name>")
            return attach_mod.attach_tracepoint(p.fd, category, name)
        if kind.attach == "raw_tracepoint":
            return attach_mod.attach_raw_tracepoint(p.fd, kind.target)
        if kind.attach == "tracing":
            return attach_mod.attach_tracing(p.fd)
        head = p.section.split("/", 1)[0]
        if head in ("kprobe", "kretprobe", "ksyscall", "kretsyscall", "kprobe.multi", "kretprobe.multi") \
                and not os.path.isdir("/sys/bus/event_source/devices/kprobe"):
            raise AttachError(f"program {p.name} ({p.section}): this kernel has no kprobes (no kprobe PMU: "
                              "CONFIG_KPROBES is off), so no loader can attach it; use a tracepoint "
                              "(tp/, tp_btf/) instead")
        raise AttachError(f"program {p.name}: the loader cannot attach {p.section!r} programs automatically "
                          "yet (it attaches tp/, raw_tp/, tp_btf/, fentry/ and fexit/)")

    # -- teardown ----------------------------------------------------------------
    def close(self):
        """Detach and close everything, links first. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for p in self.programs.values():
            if p.link is not None:
                p.link.close()
                p.link = None
        for p in self.programs.values():
            if p.fd is not None:
                syscall.close(p.fd)
                p.fd = None
        for g in self._globals.values():
            g.close()
        for m in self.maps.values():
            m.close()
        self.maps = {}
        if self.btf_fd:
            syscall.close(self.btf_fd)
            self.btf_fd = 0
        explain.trace("close", f"{self.spec.path}: links, programs, maps and BTF closed")

    # -- reporting ----------------------------------------------------------------
    def map_type_name(self, name):
        return MAP_TYPES.get(self.spec.maps[name].type, "unknown")
