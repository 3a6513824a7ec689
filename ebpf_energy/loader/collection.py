"""Phase 3 of a load: a :class:`~ebpf_energy.loader.prepare.Prepared` object into the kernel.

``Collection.load(prepared)`` makes the fds, in the only order that works:
the object's BTF (maps and programs name types in it), the maps (created,
initial data written, ``.rodata`` frozen, or reused from a pin), then each
program with its map fds written into the slots prepare() left. It never
attaches (that is :mod:`~ebpf_energy.loader.link`'s) and it closes in
reverse: programs, maps, BTF. A failure at any step closes what was made
before it, so nothing stays in the kernel.
"""

from __future__ import annotations

import os

from ebpf_energy.loader import explain, map_memory, program, syscall, uapi
from ebpf_energy.loader import insn as I
from ebpf_energy.loader.errors import BtfError, LoaderError, NotSupported, PermissionDenied, SyscallError, \
    VerifierError
from ebpf_energy.loader.maps import Map
from ebpf_energy.loader.prepare import KFUNC_POISON, Prepared, PreparedMap, PreparedProgram, split_address
from ebpf_energy.loader.sections import ATTACH_TYPES, BPF_LSM_MAC, BPF_MODIFY_RETURN, BPF_TRACE_FENTRY, \
    BPF_TRACE_FEXIT, BPF_TRACE_ITER

# EPERM to root for these is the kernel's policy, not our privileges: programs
# that run through a BPF trampoline, and the rest, each with its reason
TRAMPOLINE_ATTACH = (BPF_TRACE_FENTRY, BPF_TRACE_FEXIT, BPF_MODIFY_RETURN, BPF_LSM_MAC)
_TRAMPOLINE = ("this kernel refuses fentry/fexit/lsm programs even to root (BPF trampolines are not permitted "
               "here, e.g. kernel lockdown or no direct-call ftrace{}); attach to a tracepoint instead "
               "(tp_btf/, raw_tp/, tp/)")
ROOT_REFUSED = {
    **{t: _TRAMPOLINE.format("") for t in TRAMPOLINE_ATTACH},
    BPF_LSM_MAC: _TRAMPOLINE.format(", or the BPF LSM is not active: it must be in the lsm= boot list"),
    ATTACH_TYPES["lsm_cgroup"]: "this kernel refuses cgroup LSM programs (no BPF trampolines here, or the BPF "
                                "LSM is not active)",
    BPF_TRACE_ITER: "this kernel does not let this iterator be loaded (it is missing or forbidden here)",
}


class TrampolineRefused(LoaderError):
    """fentry/fexit/lsm refused although we are privileged: the kernel forbids trampolines."""

    def __init__(self, message, errno):
        self.errno = errno
        super().__init__(message)


class Collection:
    """The fds of one prepared object: ``btf_fd``, ``maps`` (name -> Map), ``programs`` (name -> fd)."""

    def __init__(self, prepared: Prepared):
        self.prepared = prepared
        self.btf_fd = 0
        self.maps: dict[str, Map] = {}
        self.programs: dict[str, int] = {}
        self.warnings: list[str] = []  # what loaded, but not as asked (load prints them)
        self._closed = False

    @classmethod
    def load(cls, prepared: Prepared) -> "Collection":
        c = cls(prepared)
        syscall.raise_memlock()
        try:
            c._load_btf()
            for m in prepared.maps.values():
                c.maps[m.name] = c._create_map(m)
            c._fill_slots("map")
            for p in prepared.programs.values():
                c.programs[p.name] = c._load_program(p)
            c._fill_slots("program")
        except BaseException:
            c.close()
            raise
        return c

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- BTF ------------------------------------------------------------------------
    def _load_btf(self):
        if self.prepared.btf is None:
            return
        try:
            self.btf_fd = syscall.btf_load(self.prepared.btf)
        except BtfError as e:
            if self.prepared.needs_btf:
                raise
            # loud: without it maps lose their types and programs their line info
            self.warnings.append(f"the kernel refused the object's BTF ({e}); loading without it: maps have no "
                                 "BTF types, and verifier errors no source lines")
            explain.trace("btf", self.warnings[-1])
            self.btf_fd = 0

    # -- maps -----------------------------------------------------------------------
    def _codecs(self, m: PreparedMap):
        spec = self.prepared.spec.maps[m.name]
        btf = self.prepared.spec.btf
        if btf is None or spec.origin != "btf":
            return None, None
        return (btf.codec(spec.key_type_id) if spec.key_type_id else None,
                btf.codec(spec.value_type_id) if spec.value_type_id else None)

    def _create_map(self, m: PreparedMap) -> Map:
        key_codec, value_codec = self._codecs(m)
        if m.pin_path and os.path.exists(m.pin_path):
            return self._reuse_pinned(m, key_codec, value_codec)
        map_memory.check(m.name, m.type_name, m.type, m.key_size, m.value_size, m.max_entries, m.flags,
                         syscall.num_possible_cpus())
        if m.struct_ops is not None:
            return self._create_struct_ops(m)
        template = self._create_inner(m) if m.inner is not None else None
        try:
            live = self._create_with_btf_fallback(m, key_codec, value_codec, template.fd if template else 0)
        finally:
            if template is not None:  # the outer map keeps what it needs of it
                template.close()
        try:
            if m.initial is not None:
                syscall.map_update(live.fd, b"\0\0\0\0", m.initial, 0)
                if m.freeze:
                    syscall.map_freeze(live.fd)
                    explain.trace("map", f"{m.name}: wrote {len(m.initial)} initial bytes, BPF_MAP_FREEZE "
                                         "(the verifier now treats its values as constants)")
            if m.pin_path:
                live.pin_path = m.pin_path
                live.pin(m.pin_path)
        except BaseException:
            live.close()
            raise
        return live

    def _create_with_btf_fallback(self, m, key_codec, value_codec, inner_fd):
        use_btf = bool(self.btf_fd and (m.btf_key_type_id or m.btf_value_type_id))

        def create(with_btf):
            return Map.create(m.kernel_name, m.type, m.key_size, m.value_size, m.max_entries, map_flags=m.flags,
                              numa_node=m.numa_node, btf_fd=self.btf_fd if with_btf else 0,
                              btf_key_type_id=m.btf_key_type_id if with_btf else 0,
                              btf_value_type_id=m.btf_value_type_id if with_btf else 0,
                              key_codec=key_codec, value_codec=value_codec, map_extra=m.map_extra,
                              inner_map_fd=inner_fd)

        try:
            try:
                return create(use_btf)
            except NotSupported as e:
                if not use_btf:
                    raise
                # a type (or kernel) that takes no BTF for this key/value: libbpf retries without it too
                explain.trace("map", f"{m.name}: the kernel refused its BTF key/value ids ({e}); "
                                     "creating it again without them")
                return create(False)
        except SyscallError as e:  # say which map: an object has many
            raise type(e)(e.command, e.errno, f"map {m.name} ({m.type_name}, key {m.key_size} B, value "
                          f"{m.value_size} B, max_entries {m.max_entries:,}): {str(e).split(': ', 1)[-1]}") from None

    def _create_struct_ops(self, m: PreparedMap) -> Map:
        """Created empty: writing its value registers it, which is attaching
        (:func:`~ebpf_energy.loader.struct_ops.register`), after the programs load."""
        if not self.btf_fd:  # the kernel finds its struct through the object's BTF
            raise LoaderError(f"struct_ops map {m.name} needs the object's BTF in the kernel, which refused it")
        # Registered through a link even from a plain .struct_ops section (where
        # the kernel has links, 6.4+): a link dies with the process, SIGKILL
        # included, where a registered map would stay in the kernel for good.
        flags = m.flags | uapi.BPF_F_LINK
        try:
            try:
                fd = syscall.map_create_struct_ops(m.kernel_name, m.value_size, m.struct_ops.value_type_id,
                                                   flags, self.btf_fd)
            except NotSupported:
                if m.flags & uapi.BPF_F_LINK:
                    raise
                flags = m.flags
                fd = syscall.map_create_struct_ops(m.kernel_name, m.value_size, m.struct_ops.value_type_id,
                                                   flags, self.btf_fd)
        except SyscallError as e:
            raise type(e)(e.command, e.errno, f"struct_ops map {m.name}: {str(e).split(': ', 1)[-1]}") from None
        live = Map(fd, m.kernel_name, m.type, m.key_size, m.value_size, m.max_entries, flags)
        return live

    def _create_inner(self, m: PreparedMap) -> Map:
        """The inner map template of a map of maps: the kernel compares every
        map put in a slot with it (type, sizes, flags), then it is closed."""
        i = m.inner
        try:
            return Map.create(i.kernel_name, i.type, i.key_size, i.value_size, i.max_entries, map_flags=i.flags,
                              numa_node=i.numa_node, map_extra=i.map_extra)
        except SyscallError as e:
            raise type(e)(e.command, e.errno, f"inner map template of {m.name} ({i.type_name}): "
                          f"{str(e).split(': ', 1)[-1]}") from None

    def _fill_slots(self, kind: str):
        """Initial slots of maps of maps (``kind`` "map", once every map
        exists) and program arrays ("program", once the programs are loaded)."""
        for m in self.prepared.maps.values():
            for index, target in m.slots:
                if (target in self.prepared.maps) != (kind == "map"):
                    continue
                if kind == "map":
                    fd = self.maps[target].fd
                elif target in self.programs:
                    fd = self.programs[target]
                else:
                    explain.trace("map", f"{m.name}[{index}]: program {target} is not loaded: slot left empty")
                    continue
                syscall.map_update(self.maps[m.name].fd, index.to_bytes(self.maps[m.name].key_size, "little"),
                                   fd.to_bytes(4, "little"), 0)
                explain.trace("map", f"{m.name}[{index}] = {kind} {target} (fd {fd})")

    def _reuse_pinned(self, m: PreparedMap, key_codec, value_codec) -> Map:
        """The map already pinned at ``m.pin_path``. Whatever else is there (a
        directory, a pinned program, a file the kernel will not open as a BPF
        object) is named as such: the kernel's EACCES for a directory read as
        "needs root" to root."""
        where = f"map {m.name}: {m.pin_path} is there but"
        if os.path.isdir(m.pin_path):
            raise LoaderError(f"{where} is a directory, not a pinned map: remove it (rmdir {m.pin_path})")
        try:
            live = Map.pinned(m.pin_path, key_codec=key_codec, value_codec=value_codec)
        except SyscallError as e:
            raise LoaderError(f"{where} the kernel will not open it as a pinned map "
                              f"({os.strerror(e.errno)}): remove it (rm {m.pin_path})") from None
        except LoaderError as e:  # a pinned program or link
            raise LoaderError(f"{where} {e}: remove it (rm {m.pin_path})") from None
        if (live.type, live.key_size, live.value_size, live.max_entries) != (m.type, m.key_size, m.value_size,
                                                                            m.max_entries):
            live.close()
            raise LoaderError(f"map {m.name} is pinned at {m.pin_path} with different attributes: remove it or "
                              "change the definition")
        live.pin_path = m.pin_path
        explain.trace("map", f"{m.name}: reusing the map pinned at {m.pin_path} (fd {live.fd})")
        return live

    # -- programs -------------------------------------------------------------------
    def _load_program(self, p: PreparedProgram) -> int:
        code = bytearray(p.insns)
        filled = []
        for s in p.map_slots:
            I.set_imm(code, s.insn, self.maps[s.map].fd)
            filled.append(f"insn {s.insn:>4}: {s.map}: {I.describe(code, s.insn)}")
        if filled:
            explain.trace("reloc", f"{p.name}: map fds written into {len(filled)} ld_imm64", *filled)
        if p.address_slots:
            from ebpf_energy.loader.externs import kallsyms_address  # __ksym addresses only
        for s in p.address_slots:
            try:
                addr = kallsyms_address(s.symbol)
            except LoaderError:
                if not s.weak:
                    raise
                addr = 0  # a __weak address the kernel lacks reads as NULL
            lo, hi = split_address(addr)
            I.set_imm(code, s.insn, lo)
            I.set_imm(code, s.insn + 1, hi)
        try:
            return program.load(p, code, btf_fd=self.btf_fd)
        except VerifierError as e:
            raise named_poison(e, p) from None
        except PermissionDenied as e:
            if p.expected_attach_type in ROOT_REFUSED and os.geteuid() == 0:
                from ebpf_energy.loader.link.iterator import load_refusal
                why = (p.expected_attach_type == BPF_TRACE_ITER and load_refusal(p.section)) \
                    or ROOT_REFUSED[p.expected_attach_type]
                raise TrampolineRefused(
                    f"program {p.name} ({p.section}): EPERM although running as root, so not a missing "
                    f"privilege: {why}", e.errno) from None
            raise

    # -- teardown -------------------------------------------------------------------
    def close(self):
        """Programs, then maps, then BTF. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for fd in reversed(list(self.programs.values())):
            syscall.close(fd)
        self.programs = {}
        for m in reversed(list(self.maps.values())):
            m.close()
        self.maps = {}
        if self.btf_fd:
            syscall.close(self.btf_fd)
            self.btf_fd = 0


def named_poison(e: VerifierError, p: PreparedProgram) -> VerifierError:
    """The verifier stopped at a poisoned CO-RE relocation (``call
    0xbad2310``, shown as ``unknown#195896080``): say which one, as libbpf
    does, rather than leave the reader with the magic number."""
    text = (e.log or "") + str(e)
    if p.missing_kfuncs and f"#{KFUNC_POISON}" in text:
        names = ", ".join(sorted({m.symbol for m in p.missing_kfuncs}))
        return VerifierError(e.program, f"program {p.name} calls the __weak kfunc {names}, which this kernel "
                             "does not have, on a path the verifier reaches: guard the call with "
                             "`if (bpf_ksym_exists(kfunc))`\n" + str(e), log=e.log, source_line=e.source_line)
    if f"#{I.POISON_IMM}" not in text:
        return e
    found = [(f.section, f.name, idx, r) for f in p.layout.functions
             for sh, idx, r in p.poisoned if sh == f.shndx and f.start <= idx < f.end]
    if not found:
        return e
    lines = [f"the verifier reached a CO-RE relocation that did not resolve against this kernel "
             f"(the loader put `call {I.POISON_IMM:#x}` there):"]
    lines += [f"  program {p.name}, function {fn} (section {sec} instruction {idx}): {r.kind_name} "
              f"{r.local_desc}: {r.reason}" for sec, fn, idx, r in found]
    lines.append("guard the access with bpf_core_field_exists() / bpf_core_type_exists(), or build for this kernel")
    return VerifierError(e.program, "\n".join(lines) + "\n" + str(e), log=e.log, source_line=e.source_line)

