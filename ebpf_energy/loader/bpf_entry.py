"""The one ``bpf()`` entry: every bpf(2) call of the loader goes through :func:`bpf`.

It retries EAGAIN (the kernel's "try again", e.g. a program load racing a BTF
module unload), and it is where a test hook sits (:mod:`fake`: record every
call on the real kernel, or answer them with a fake one). :data:`COMMANDS` is
the table of commands: the part of ``union bpf_attr`` each one fills (see
:mod:`uapi`) and what its result is. A wrapper (:mod:`syscall`) names the
fields it sets; the attr size sent is the end of the last of them, never a
number counted by hand (the kernel zero-fills the rest and rejects non-zero
bytes it does not know, so sending less is always safe). A failure becomes a
typed :mod:`errors` exception naming the command and the likely cause
(:func:`fail`); an fd comes back as an :class:`~fd.Fd`, which closes once.
"""

import errno as _errno
import os

from . import explain, uapi
from .fd import Fd
from .errors import NotSupported, PermissionDenied, SyscallError


def _make_ffi():
    """The cffi FFI for uapi.CDEF: the pre-parsed module when it is current (~1 ms),
    else parse CDEF now with pycparser (~30 ms)."""
    try:
        from . import _uapi_ffi
        if _uapi_ffi.CDEF_CRC == uapi.cdef_crc():
            return _uapi_ffi.ffi, "pre-built"
    except Exception:  # missing, or built by an incompatible cffi: parse instead
        pass
    import cffi

    f = cffi.FFI()
    f.cdef(uapi.CDEF)
    return f, "parsed"


ffi, FFI_SOURCE = _make_ffi()
libc = ffi.dlopen(None)

_syscall = libc.syscall
_new = ffi.new
_cast = ffi.cast
_SYS_bpf = uapi.SYS_bpf
_CMD = {c: ffi.cast("long", c) for c in uapi.CMD_NAMES}
_ulong = {}
_SIZE32 = ffi.cast("unsigned long", 32)


ROOT_HINT = "needs root or CAP_BPF+CAP_PERFMON (and CAP_SYS_ADMIN on older kernels)"
_NOTSUP_HINTS = {
    "BPF_MAP_CREATE": "check map_type, key_size/value_size/max_entries and map_flags for this map type; "
                      "storage maps need BTF key/value ids",
    "BPF_PROG_LOAD": "check prog_type, expected_attach_type, attach_btf_id and prog_flags for this kernel",
    "BPF_LINK_CREATE": "check attach_type against the program type, or this kernel lacks the link type",
    "BPF_RAW_TRACEPOINT_OPEN": "check the program type (raw_tracepoint or tracing) and the tracepoint name",
    "BPF_BTF_LOAD": "malformed BTF or a BTF kind this kernel does not know",
    "BPF_MAP_LOOKUP_BATCH": "this map type has no batch operations",
    "BPF_MAP_LOOKUP_AND_DELETE_BATCH": "this map type has no batch lookup-and-delete",
    "BPF_MAP_UPDATE_ELEM": "check key/value size, update flags, or the map type cannot be written from user space",
    "BPF_MAP_LOOKUP_ELEM": "check key size, or this map type has no lookup from user space",
    "BPF_MAP_GET_NEXT_KEY": "this map type cannot be iterated from user space",
    "BPF_OBJ_PIN": "the path must be inside a mounted bpffs (/sys/fs/bpf)",
    "BPF_OBJ_GET": "the path must be a pinned object inside a mounted bpffs",
    "BPF_ENABLE_STATS": "this kernel lacks BPF_ENABLE_STATS (5.8+)",
    "perf_event_open": "check type/config (tracepoint id) and the attr size",
    "PERF_EVENT_IOC_SET_BPF": "the program type does not match the perf event",
}


def fail(command, err, hint=""):
    """Build the typed exception for ``errno`` ``err`` of ``command``."""
    name = _errno.errorcode.get(err, "ENOTSUPP" if err == uapi.ENOTSUPP else str(err))
    text = f"{name}: {os.strerror(err) if err != uapi.ENOTSUPP else 'operation not supported'}"
    if err in (_errno.EPERM, _errno.EACCES):
        return PermissionDenied(command, err, text, hint or ROOT_HINT)
    if err in (_errno.EINVAL, _errno.E2BIG, _errno.EOPNOTSUPP, uapi.ENOTSUPP):
        return NotSupported(command, err, text, hint or _NOTSUP_HINTS.get(command, ""))
    return SyscallError(command, err, text, hint)


def _size(n):
    c = _ulong.get(n)
    if c is None:
        c = _ulong[n] = _cast("unsigned long", n)
    return c


EAGAIN_TRIES = 5  # libbpf retries a program load five times on EAGAIN; so do we, for every command
hook = None       # set by loader.fake: hook(cmd, attr, size) -> (result, errno) instead of the kernel


def kernel_bpf(cmd, attr, size):
    """bpf(cmd, attr, size) itself -> (result, errno); what :func:`bpf` calls when no hook is set."""
    r = _syscall(_SYS_bpf, _CMD[cmd], attr, _size(size))
    return (r, ffi.errno) if r < 0 else (r, 0)


def bpf_elem(cmd, attr):
    """:func:`bpf` for the map element hot path (a 32-byte attr): the kernel
    called directly while no hook is set; EAGAIN and hooks go through bpf()."""
    if hook is None:
        err = ffi.errno if _syscall(_SYS_bpf, _CMD[cmd], attr, _SIZE32) < 0 else 0
        if err != _errno.EAGAIN:
            return err
    return bpf(cmd, attr, 32)[1]


def bpf(cmd, attr, size):
    """The one bpf() entry: bpf(cmd, attr, size) -> (result, errno), EAGAIN retried."""
    for _ in range(EAGAIN_TRIES):
        r, err = kernel_bpf(cmd, attr, size) if hook is None else hook(cmd, attr, size)
        if err != _errno.EAGAIN:
            break
    return r, err


# command -> (the union bpf_attr member it fills, in uapi.CDEF; what it returns)
FD, LINK, NONE, COUNT = "fd", "link fd", "none", "count"
COMMANDS = {
    uapi.BPF_MAP_CREATE: ("bpf_attr_map_create", FD),
    uapi.BPF_MAP_LOOKUP_ELEM: ("bpf_attr_elem", NONE),
    uapi.BPF_MAP_UPDATE_ELEM: ("bpf_attr_elem", NONE),
    uapi.BPF_MAP_DELETE_ELEM: ("bpf_attr_elem", NONE),
    uapi.BPF_MAP_GET_NEXT_KEY: ("bpf_attr_elem", NONE),
    uapi.BPF_MAP_LOOKUP_AND_DELETE_ELEM: ("bpf_attr_elem", NONE),
    uapi.BPF_MAP_FREEZE: ("bpf_attr_elem", NONE),
    uapi.BPF_MAP_LOOKUP_BATCH: ("bpf_attr_batch", COUNT),
    uapi.BPF_MAP_LOOKUP_AND_DELETE_BATCH: ("bpf_attr_batch", COUNT),
    uapi.BPF_PROG_LOAD: ("bpf_attr_prog_load", FD),
    uapi.BPF_BTF_LOAD: ("bpf_attr_btf_load", FD),
    uapi.BPF_OBJ_PIN: ("bpf_attr_obj", NONE),
    uapi.BPF_OBJ_GET: ("bpf_attr_obj", FD),
    uapi.BPF_PROG_TEST_RUN: ("bpf_attr_test_run", NONE),
    uapi.BPF_PROG_GET_NEXT_ID: ("bpf_attr_get_id", NONE),
    uapi.BPF_MAP_GET_NEXT_ID: ("bpf_attr_get_id", NONE),
    uapi.BPF_LINK_GET_NEXT_ID: ("bpf_attr_get_id", NONE),
    uapi.BPF_BTF_GET_NEXT_ID: ("bpf_attr_get_id", NONE),
    uapi.BPF_PROG_GET_FD_BY_ID: ("bpf_attr_get_id", FD),
    uapi.BPF_MAP_GET_FD_BY_ID: ("bpf_attr_get_id", FD),
    uapi.BPF_LINK_GET_FD_BY_ID: ("bpf_attr_get_id", FD),
    uapi.BPF_BTF_GET_FD_BY_ID: ("bpf_attr_get_id", FD),
    uapi.BPF_OBJ_GET_INFO_BY_FD: ("bpf_attr_info", NONE),
    uapi.BPF_RAW_TRACEPOINT_OPEN: ("bpf_attr_raw_tp", LINK),
    uapi.BPF_LINK_CREATE: ("bpf_attr_link_create", LINK),
    uapi.BPF_ITER_CREATE: ("bpf_attr_iter_create", FD),
    uapi.BPF_ENABLE_STATS: ("bpf_attr_enable_stats", FD),
}

_field_ends = {}


def attr_size(struct, fields):
    """Bytes of ``struct`` to send when ``fields`` are the ones set: the end of the last."""
    ends = _field_ends.get(struct)
    if ends is None:
        ends = _field_ends[struct] = {name: f.offset + ffi.sizeof(f.type)
                                      for name, f in ffi.typeof(f"struct {struct}").fields}
    return max(ends[f] for f in fields)


def new_attr(cmd, fields, struct=None):
    """A new attr for ``cmd`` with ``fields`` set -> (attr, size to send)."""
    struct = struct or COMMANDS[cmd][0]
    a = _new(f"struct {struct} *")
    for k, v in fields.items():
        setattr(a, k, v)
    return a, attr_size(struct, fields)


def command(cmd, desc, hint=None, struct=None, **fields):
    """One table-driven call: fill ``fields``, call, trace ``desc -> result``,
    raise the typed error (``hint`` a string, or errno -> string), and return
    an Fd for commands that make one, else ``(result, attr)``."""
    a, size = new_attr(cmd, fields, struct)
    return call(cmd, a, size, desc, hint)


def call(cmd, a, size, desc, hint=None):
    """:func:`command` for an attr already filled (``size`` bytes of it sent)."""
    r, err = bpf(cmd, a, size)
    name = uapi.CMD_NAMES[cmd]
    result = COMMANDS[cmd][1]
    makes_fd = result in (FD, LINK)
    if explain.enabled():
        explain.trace("syscall", f"{desc} -> " + (errno_name(err) if err else f"{result} {r}" if makes_fd else "ok"))
    if err:
        raise fail(name, err, (hint.get(err, "") if isinstance(hint, dict) else hint) or "")
    return Fd(r, name) if makes_fd else (r, a)


def errno_name(err):
    return _errno.errorcode.get(err, str(err))


def addr(cdata):
    """A cffi pointer as the integer a ``__u64`` attr field takes."""
    return int(_cast("uintptr_t", cdata))
