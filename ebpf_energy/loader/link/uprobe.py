"""``uprobe/PATH:FUNC[+OFF]``, ``uretprobe/...`` and ``uprobe.multi/PATH:GLOB``.

A uprobe is a breakpoint the kernel puts at a file offset of a binary, in
every process that maps it (or one, with ``pid``). It is made through the
``uprobe`` perf PMU: ``config1`` points at the path, ``config2`` is the
offset, and the bits the PMU's ``format/`` files name mark a return probe
(``retprobe``) and carry a reference counter's file offset
(``ref_ctr_offset``: a USDT semaphore the kernel increments while the probe
exists). The perf event then gets the program through a perf link.

``uprobe.multi`` puts one program at many offsets with a single
BPF_LINK_CREATE(BPF_TRACE_UPROBE_MULTI), no perf events at all.
"""

import os
import struct

from .. import explain, syscall, uapi
from ..errors import AttachError, PermissionDenied, SyscallError
from .base import Link
from .binary import find_binary, open_binary, parse_target
from .perf_event import link_perf_event

PMU = "/sys/bus/event_source/devices/uprobe"
BPF_TRACE_UPROBE_MULTI = uapi.BPF_TRACE_UPROBE_MULTI
BPF_F_UPROBE_MULTI_RETURN = uapi.BPF_F_UPROBE_MULTI_RETURN


def _format_bit(name):
    """The config bit a PMU format file names: ``config:0`` -> 0, ``config:32-63`` -> 32."""
    try:
        with open(os.path.join(PMU, "format", name)) as f:
            field, _, bits = f.read().strip().partition(":")
        return int(bits.split("-")[0])
    except (OSError, ValueError):
        raise AttachError(f"this kernel has no uprobe PMU field {name} ({PMU}/format/{name}): "
                          "uprobes need CONFIG_UPROBE_EVENTS") from None


def pmu_type():
    try:
        with open(os.path.join(PMU, "type")) as f:
            return int(f.read())
    except (OSError, ValueError):
        raise AttachError(f"this kernel has no uprobe PMU ({PMU}): uprobes need CONFIG_UPROBE_EVENTS") from None


def resolve(path, symbol=None, offset=0):
    """(real path, file offset) of ``symbol+offset`` in ``path`` (a bare
    library name is searched for), or of file offset ``offset`` without a symbol."""
    real = find_binary(path)
    if symbol is None:
        return real, offset
    binary = open_binary(real)
    off = binary.offset_of(symbol, offset)
    explain.trace("attach", f"{path}:{symbol}{f'+{offset:#x}' if offset else ''}: "
                  f"vaddr {binary.address_of(symbol) + offset:#x} in {real} -> file offset {off:#x}")
    return real, off


def attach_uprobe(prog_fd, path, symbol=None, offset=0, retprobe=False, pid=-1, ref_ctr_offset=0, cookie=0,
                  target=None):
    """One uprobe (or uretprobe) on ``path``'s ``symbol+offset``; ``pid`` -1
    is every process that runs the file."""
    real, file_off = resolve(path, symbol, offset)
    kind = "uretprobe" if retprobe else "uprobe"
    target = target or f"{kind}/{path}:{symbol or hex(offset)}{f'+{offset:#x}' if symbol and offset else ''}"
    config = (1 << _format_bit("retprobe")) if retprobe else 0
    if ref_ctr_offset:
        config |= ref_ctr_offset << _format_bit("ref_ctr_offset")
    cpath = syscall.ffi.new("char[]", os.fsencode(real))
    try:
        pfd = syscall.perf_event_open_attr(pid=pid, cpu=0 if pid == -1 else -1, type=pmu_type(), config=config,
                                           config1=int(syscall.ffi.cast("uintptr_t", cpath)), config2=file_off)
    except PermissionDenied:
        raise
    except SyscallError as e:
        raise AttachError(f"cannot attach {target}: {e}") from e
    return link_perf_event(prog_fd, pfd, target, cookie=cookie)


def attach_uprobe_multi(prog_fd, path, symbols=None, offsets=None, retprobe=False, pid=0, ref_ctr_offsets=None,
                        cookies=None, target=None):
    """One link for many uprobes: ``symbols`` (names) or file ``offsets`` in ``path``."""
    real = find_binary(path)
    if symbols is not None:
        binary = open_binary(real)
        offsets = [binary.offset_of(s) for s in symbols]
    offsets = list(offsets or ())
    if not offsets:
        raise AttachError(f"uprobe.multi on {path}: no function to attach to")
    n = len(offsets)
    target = target or f"uprobe.multi/{path} ({n} functions)"
    ffi = syscall.ffi
    cpath = ffi.new("char[]", os.fsencode(real))
    arrays = [ffi.new("__u64[]", offsets)]
    arrays.append(ffi.new("__u64[]", list(ref_ctr_offsets)) if ref_ctr_offsets else ffi.NULL)
    arrays.append(ffi.new("__u64[]", list(cookies)) if cookies else ffi.NULL)
    addr = [int(ffi.cast("uintptr_t", x)) for x in [cpath] + arrays]
    tail = struct.pack("<QQQQIII", *addr, n, BPF_F_UPROBE_MULTI_RETURN if retprobe else 0, max(pid, 0))
    try:
        fd = syscall.link_create_tail(prog_fd, 0, BPF_TRACE_UPROBE_MULTI, tail, what=f"({target})")
    except PermissionDenied:
        raise
    except SyscallError as e:
        raise AttachError(f"cannot attach {target}: {e}") from e
    return Link("uprobe_multi", fd, target, prog_fd=prog_fd)


def attach_section(prog_fd, section):
    """Attach from the section name alone: ``uprobe/PATH:FUNC+OFF``,
    ``uretprobe/...``, ``uprobe.multi/PATH:GLOB``, ``uretprobe.multi/...``
    (with ``.s`` sleepable variants)."""
    head, _, rest = section.partition("/")
    base = head.replace(".s", "")
    retprobe = base.startswith("uretprobe")
    if base.endswith(".multi"):
        path, sep, pattern = rest.rpartition(":")
        if not sep or not path or not pattern:
            raise AttachError(f"section {section!r}: expected {head}/PATH:FUNCTION_GLOB")
        names = open_binary(find_binary(path)).matching(pattern)
        if not names:
            raise AttachError(f"section {section!r}: no function of {path} matches {pattern!r}")
        explain.trace("attach", f"{section}: {len(names)} functions match {pattern!r}")
        return attach_uprobe_multi(prog_fd, path, symbols=names, retprobe=retprobe, target=section)
    path, symbol, offset = parse_target(rest, head)
    return attach_uprobe(prog_fd, path, symbol, offset, retprobe=retprobe, target=section)
