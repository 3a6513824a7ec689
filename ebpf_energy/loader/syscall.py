"""Thin wrappers over bpf(2), perf_event_open(2) and ioctl(2), via cffi in ABI mode.

Each bpf() wrapper names the command and the attr fields it sets and goes
through the one entry, :mod:`bpf_entry` (EAGAIN retry, the test hook, errno to
a typed exception, an :class:`~fd.Fd` for commands that make one). Every call
is reported to :mod:`explain`; on the hot paths (element lookups) the trace
text is only built when someone listens.
"""

import errno as _errno
import os

from . import explain, uapi
from .bpf_entry import (COMMANDS, COUNT, EAGAIN_TRIES, FD, FFI_SOURCE, LINK, NONE, ROOT_HINT,  # noqa: F401
                        addr, attr_size, bpf, bpf_elem, call, command, errno_name, fail, ffi, libc, new_attr)
from .fd import Fd, close  # noqa: F401  (close is public here: syscall.close)
from .errors import BtfError, NotSupported, PermissionDenied, SyscallError, VerifierError

_syscall = libc.syscall  # perf_event_open(2): not a bpf() command
_NULL = ffi.NULL
_memmove = ffi.memmove
_buffer = ffi.buffer
_new = ffi.new
_from_buffer = ffi.from_buffer
_cast = ffi.cast


class MapFullError(SyscallError):
    """E2BIG/ENOSPC on update: the map holds ``max_entries`` already (a drop to count)."""


def _hex(v):
    return "0" if not v else hex(v)


def _name16(name):
    """Kernel object names: at most 15 chars of [A-Za-z0-9_.]; anything else is EINVAL."""
    raw = "".join(c if (c.isalnum() and c.isascii()) or c in "_." else "_" for c in (name or ""))
    return raw[:15].encode()


_memlock_done = False


def raise_memlock():
    """Best effort RLIMIT_MEMLOCK=infinity (pre-5.11 kernels charge BPF memory to it)."""
    global _memlock_done
    if _memlock_done:
        return
    _memlock_done = True
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        explain.trace("syscall", "setrlimit(RLIMIT_MEMLOCK, infinity) -> ok")
    except (ValueError, OSError) as e:
        explain.trace("syscall", f"setrlimit(RLIMIT_MEMLOCK, infinity) refused ({e}); "
                      "fine on kernels >= 5.11, which charge BPF memory to the memory cgroup")


def map_type_name(t):
    return uapi.MAP_TYPE_NAMES[t] if 0 <= t < len(uapi.MAP_TYPE_NAMES) else str(t)


def prog_type_name(t):
    return uapi.PROG_TYPE_NAMES[t] if 0 <= t < len(uapi.PROG_TYPE_NAMES) else str(t)


# ----------------------------------------------------------------------------- maps

def map_create(map_type, key_size, value_size, max_entries, map_flags=0, name="", numa_node=None,
               btf_fd=0, btf_key_type_id=0, btf_value_type_id=0, map_extra=0, inner_map_fd=0):
    """BPF_MAP_CREATE -> map fd."""
    raise_memlock()
    nm = _name16(name)
    fields = dict(map_type=map_type, key_size=key_size, value_size=value_size, max_entries=max_entries,
                  map_flags=map_flags, inner_map_fd=inner_map_fd, map_name=nm, btf_fd=btf_fd,
                  btf_key_type_id=btf_key_type_id, btf_value_type_id=btf_value_type_id)
    if numa_node is not None:
        fields.update(map_flags=map_flags | uapi.BPF_F_NUMA_NODE, numa_node=numa_node)
    if map_extra:  # arrived in 5.16: sent only when used
        fields["map_extra"] = map_extra
    a, size = new_attr(uapi.BPF_MAP_CREATE, fields)
    fd, err = bpf(uapi.BPF_MAP_CREATE, a, size)
    desc = (f"BPF_MAP_CREATE type={map_type_name(map_type)} key={key_size} value={value_size} "
            f"max_entries={max_entries} flags={_hex(a.map_flags)} name={nm.decode() or '-'}")
    if btf_fd:
        desc += f" btf_fd={btf_fd} key_type_id={btf_key_type_id} value_type_id={btf_value_type_id}"
    if err:
        explain.trace("syscall", f"{desc} -> {_errno.errorcode.get(err, err)}")
        raise fail("BPF_MAP_CREATE", err)
    explain.trace("syscall", f"{desc} -> fd {fd}")
    return Fd(fd, "BPF_MAP_CREATE")


def map_create_struct_ops(name, value_size, vmlinux_value_type_id, map_flags=0, btf_fd=0):
    """BPF_MAP_CREATE of a BPF_MAP_TYPE_STRUCT_OPS map -> fd: one 4-byte key,
    the value typed by the kernel's own ``struct bpf_struct_ops_<name>``."""
    raise_memlock()
    nm = _name16(name)
    return command(uapi.BPF_MAP_CREATE,
                    f"BPF_MAP_CREATE type=struct_ops value={value_size} flags={_hex(map_flags)} "
                    f"name={nm.decode() or '-'} btf_vmlinux_value_type_id={vmlinux_value_type_id}",
                    map_type=uapi.BPF_MAP_TYPE_STRUCT_OPS, key_size=4, value_size=value_size, max_entries=1,
                    map_flags=map_flags, map_name=nm, btf_fd=btf_fd,
                    btf_vmlinux_value_type_id=vmlinux_value_type_id)


def _elem_call(cmd, fd, key, value, out_size, flags=0):
    """One BPF_MAP_*_ELEM call with the attr, key, value and output in a single
    allocation (the hot path: a few cffi operations per element).
    Returns (errno or 0, output bytes or None)."""
    kl = len(key) if key is not None else 0
    vl = len(value) if value is not None else out_size
    buf = _new("char[]", 32 + kl + vl)
    a = _cast("struct bpf_attr_elem *", buf)
    base = addr(buf)
    a.map_fd = fd
    if key is not None:
        _memmove(buf + 32, key, kl)
        a.key = base + 32
    if value is not None:
        _memmove(buf + 32 + kl, value, vl)
    if vl:
        a.value = base + 32 + kl
    a.flags = flags
    err = bpf_elem(cmd, a)
    if err:
        return err, None
    return 0, (_buffer(buf)[32 + kl:] if out_size else None)


def map_lookup(fd, key, value_size, flags=0):
    """BPF_MAP_LOOKUP_ELEM -> value bytes, or None when the key is absent (ENOENT)."""
    err, out = _elem_call(uapi.BPF_MAP_LOOKUP_ELEM, fd, key, None, value_size, flags)
    if explain.enabled():
        explain.trace("syscall", f"BPF_MAP_LOOKUP_ELEM fd={fd} key={bytes(key).hex()} -> "
                      + (errno_name(err) if err else f"{out[:32].hex()}{'...' if value_size > 32 else ''}"))
    if err:
        if err == _errno.ENOENT:
            return None
        raise fail("BPF_MAP_LOOKUP_ELEM", err)
    return out


def map_lookup_and_delete(fd, key, value_size):
    """BPF_MAP_LOOKUP_AND_DELETE_ELEM (queue/stack pop, hash take) -> bytes or None."""
    err, out = _elem_call(uapi.BPF_MAP_LOOKUP_AND_DELETE_ELEM, fd, key, None, value_size)
    explain.trace("syscall", f"BPF_MAP_LOOKUP_AND_DELETE_ELEM fd={fd} -> {errno_name(err) if err else 'ok'}")
    if err == _errno.ENOENT:
        return None
    if err:
        raise fail("BPF_MAP_LOOKUP_AND_DELETE_ELEM", err)
    return out


_UPDATE_FLAGS = {0: "BPF_ANY", 1: "BPF_NOEXIST", 2: "BPF_EXIST", 4: "BPF_F_LOCK"}


def map_update(fd, key, value, flags=0):
    """BPF_MAP_UPDATE_ELEM. A full map raises MapFullError, an existing key with
    BPF_NOEXIST or a missing one with BPF_EXIST raises SyscallError(EEXIST/ENOENT)."""
    err, _ = _elem_call(uapi.BPF_MAP_UPDATE_ELEM, fd, key, value, 0, flags)
    if explain.enabled():
        explain.trace("syscall", f"BPF_MAP_UPDATE_ELEM fd={fd} key={bytes(key).hex()} "
                      f"value={bytes(value[:32]).hex()}{'...' if len(value) > 32 else ''} "
                      f"flags={_UPDATE_FLAGS.get(flags, hex(flags))} -> {errno_name(err) if err else 'ok'}")
    if err:
        if err in (_errno.E2BIG, _errno.ENOSPC):
            raise MapFullError("BPF_MAP_UPDATE_ELEM", err, _errno.errorcode[err] + ": map is full",
                               "max_entries reached (or an array index past max_entries)")
        if err == _errno.EEXIST:
            raise SyscallError("BPF_MAP_UPDATE_ELEM", err, "EEXIST: key already present", "BPF_NOEXIST")
        if err == _errno.ENOENT:
            raise SyscallError("BPF_MAP_UPDATE_ELEM", err, "ENOENT: no such key", "BPF_EXIST")
        if err == _errno.EPERM:
            raise PermissionDenied("BPF_MAP_UPDATE_ELEM", err, "EPERM: operation not permitted",
                                   "the map is frozen or read-only for user space (BPF_F_RDONLY); "
                                   "otherwise " + ROOT_HINT)
        raise fail("BPF_MAP_UPDATE_ELEM", err)


def map_delete(fd, key):
    """BPF_MAP_DELETE_ELEM -> True if deleted, False if the key was absent."""
    err, _ = _elem_call(uapi.BPF_MAP_DELETE_ELEM, fd, key, None, 0)
    if explain.enabled():
        explain.trace("syscall", f"BPF_MAP_DELETE_ELEM fd={fd} key={bytes(key).hex()} -> "
                      f"{errno_name(err) if err else 'ok'}")
    if err == _errno.ENOENT:
        return False
    if err:
        raise fail("BPF_MAP_DELETE_ELEM", err)
    return True


def map_get_next_key(fd, key, key_size):
    """BPF_MAP_GET_NEXT_KEY: the key after ``key`` (None = first), or None at the end."""
    err, out = _elem_call(uapi.BPF_MAP_GET_NEXT_KEY, fd, key, None, key_size)
    if explain.enabled():
        explain.trace("syscall", f"BPF_MAP_GET_NEXT_KEY fd={fd} key={'NULL' if key is None else bytes(key).hex()}"
                      f" -> {errno_name(err) if err else out.hex()}")
    if err == _errno.ENOENT:
        return None
    if err:
        raise fail("BPF_MAP_GET_NEXT_KEY", err)
    return out


def map_freeze(fd):
    """BPF_MAP_FREEZE: no more writes from user space (programs see constants)."""
    command(uapi.BPF_MAP_FREEZE, f"BPF_MAP_FREEZE fd={fd}", map_fd=fd)


def map_lookup_batch(fd, key_size, value_size, count, in_batch=None, delete=False, buffers=False):
    """BPF_MAP_LOOKUP_BATCH (or LOOKUP_AND_DELETE_BATCH).

    Returns ``(keys, values, out_batch)``: lists of bytes, and the opaque token for
    the next call, or None when the map is exhausted. ``value_size`` is the full
    per-entry size (per-CPU maps: rounded size times CPUs). Raises NotSupported
    when the map type has no batch ops, SyscallError(ENOSPC) when a hash bucket
    holds more than ``count`` entries (retry with a bigger count). With
    ``buffers=True`` the keys and values come as two contiguous buffers of
    ``n`` records each (for ``struct.iter_unpack``), not as lists.
    """
    cmd = uapi.BPF_MAP_LOOKUP_AND_DELETE_BATCH if delete else uapi.BPF_MAP_LOOKUP_BATCH
    cname = uapi.CMD_NAMES[cmd]
    tok = max(key_size, 4)
    keys = bytearray(key_size * count)
    vals = bytearray(value_size * count)
    out_tok = bytearray(tok)
    kb, vb, ob = _from_buffer(keys), _from_buffer(vals), _from_buffer(out_tok)
    ib = _from_buffer(bytes(in_batch).ljust(tok, b"\0")) if in_batch is not None else None
    a, size = new_attr(cmd, dict(in_batch=addr(ib) if ib is not None else 0, out_batch=addr(ob), keys=addr(kb),
                              values=addr(vb), count=count, map_fd=fd, elem_flags=0, flags=0))
    r, err = bpf(cmd, a, size)
    n = a.count
    explain.trace("syscall", f"{cname} fd={fd} count={count} in_batch={'NULL' if in_batch is None else 'token'}"
                  f" -> {n} entries{'' if not err else ', ' + _errno.errorcode.get(err, str(err))}")
    if err and err != _errno.ENOENT:
        raise fail(cname, err)
    token = None if err == _errno.ENOENT else bytes(out_tok)
    if buffers:
        return memoryview(keys)[:n * key_size], memoryview(vals)[:n * value_size], token
    ks = [bytes(keys[i * key_size:(i + 1) * key_size]) for i in range(n)]
    vs = [bytes(vals[i * value_size:(i + 1) * value_size]) for i in range(n)]
    return ks, vs, token


# ----------------------------------------------------------------------------- BTF and programs

def btf_load(data, log_level=0, log_size=0):
    """BPF_BTF_LOAD -> btf fd. On failure raises BtfError carrying the kernel's log."""
    raise_memlock()
    data = bytes(data)
    buf = _from_buffer(data)
    a, size = new_attr(uapi.BPF_BTF_LOAD, dict(btf=addr(buf), btf_log_buf=0, btf_size=len(data), btf_log_size=0,
                                            btf_log_level=0))
    fd, err = bpf(uapi.BPF_BTF_LOAD, a, size)
    if err and err not in (_errno.EPERM,) and not log_level:
        log_level = 1  # say *why*: retry once with the log on
    log = ""
    if err and log_level:
        size = log_size or (1 << 16)
        while True:
            logbuf = _new("char[]", size)
            a.btf_log_buf = addr(logbuf)
            a.btf_log_size = size
            a.btf_log_level = log_level
            fd, err = bpf(uapi.BPF_BTF_LOAD, a, size)
            log = ffi.string(logbuf).decode(errors="replace")
            if err == _errno.ENOSPC and size < (1 << 28):
                size *= 4
                continue
            break
    explain.trace("syscall", f"BPF_BTF_LOAD size={len(data)} -> "
                  f"{('fd %d' % fd) if not err else _errno.errorcode.get(err, err)}")
    if err:
        if err in (_errno.EPERM, _errno.EACCES):
            raise fail("BPF_BTF_LOAD", err)
        last = [ln for ln in log.strip().splitlines() if ln.strip()]
        e = BtfError(f"BPF_BTF_LOAD failed: {_errno.errorcode.get(err, err)}: "
                     f"{last[-1] if last else os.strerror(err)}")
        e.errno = err
        e.log = log
        raise e
    return Fd(fd, "BPF_BTF_LOAD")


def prog_load(prog_type, insns, license, name="", expected_attach_type=0, attach_btf_id=0,
              attach_btf_obj_fd=0, prog_btf_fd=0, func_info=b"", func_info_rec_size=0, line_info=b"",
              line_info_rec_size=0, log_level=0, log_size=0, kern_version=0, prog_flags=0):
    """BPF_PROG_LOAD -> (fd, log_text).

    With ``log_level`` > 0 a log buffer is handed to the verifier and grown on
    ENOSPC (the kernel fails the load when its log is cut short). A refused load
    with a log raises VerifierError(program=name, log=...).
    """
    raise_memlock()
    insns = bytes(insns)
    if len(insns) % 8:
        raise NotSupported("BPF_PROG_LOAD", _errno.EINVAL, "instructions are not a multiple of 8 bytes",
                           "insns")
    lic = license.encode() + b"\0" if isinstance(license, str) else bytes(license) + b"\0"
    keep = [_from_buffer(insns), _from_buffer(lic)]
    nm = _name16(name)
    fields = dict(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=addr(keep[0]), license=addr(keep[1]),
                  log_level=0, log_size=0, log_buf=0, kern_version=kern_version, prog_flags=prog_flags,
                  prog_name=nm, expected_attach_type=expected_attach_type, prog_btf_fd=prog_btf_fd)
    if func_info:
        keep.append(_from_buffer(bytes(func_info)))
        fields.update(func_info_rec_size=func_info_rec_size, func_info=addr(keep[-1]),
                      func_info_cnt=len(func_info) // func_info_rec_size)
    if line_info:
        keep.append(_from_buffer(bytes(line_info)))
        fields.update(line_info_rec_size=line_info_rec_size, line_info=addr(keep[-1]),
                      line_info_cnt=len(line_info) // line_info_rec_size)
    if attach_btf_id or attach_btf_obj_fd:
        fields.update(attach_btf_id=attach_btf_id, attach_btf_obj_fd=attach_btf_obj_fd)
    a, size = new_attr(uapi.BPF_PROG_LOAD, fields)
    log = ""
    size_log = log_size or (1 << 20)
    while True:
        if log_level:
            logbuf = _new("char[]", size_log)
            a.log_level = log_level
            a.log_size = size_log
            a.log_buf = addr(logbuf)
        fd, err = bpf(uapi.BPF_PROG_LOAD, a, size)
        if log_level:
            log = ffi.string(logbuf).decode(errors="replace")
            if err == _errno.ENOSPC and size_log < (1 << 30):
                explain.trace("syscall", f"BPF_PROG_LOAD {name}: verifier log outgrew {size_log} bytes, "
                              f"retrying with {size_log * 4}")
                size_log *= 4
                continue
        break
    desc = (f"BPF_PROG_LOAD type={prog_type_name(prog_type)} name={nm.decode() or '-'} "
            f"insns={a.insn_cnt} license={lic[:-1].decode(errors='replace')}")
    if expected_attach_type:
        desc += f" expected_attach_type={expected_attach_type}"
    if attach_btf_id:
        desc += f" attach_btf_id={attach_btf_id}"
    if prog_btf_fd:
        desc += f" btf_fd={prog_btf_fd} func_info={a.func_info_cnt} line_info={a.line_info_cnt}"
    if prog_flags:
        desc += f" flags={_hex(prog_flags)}"
    if log_level:
        desc += f" log_level={log_level}"
    if err:
        explain.trace("syscall", f"{desc} -> {_errno.errorcode.get(err, err)}")
        if log_level and log.strip() and err in (_errno.EACCES, _errno.EINVAL):
            lines = [ln for ln in log.strip().splitlines() if ln.strip()]
            reason = next((ln for ln in reversed(lines) if not ln.startswith(("processed ", "verification time"))),
                          lines[-1])
            raise VerifierError(program=name, message=f"verifier rejected program {name or '?'}: {reason}",
                                log=log)
        if err == _errno.EACCES:  # EPERM is privilege; EACCES from BPF_PROG_LOAD is the verifier
            raise SyscallError("BPF_PROG_LOAD", err, "EACCES: the verifier rejected the program",
                               "load again with log_level=1 to read why")
        raise fail("BPF_PROG_LOAD", err)
    explain.trace("syscall", f"{desc} -> fd {fd}")
    return Fd(fd, "BPF_PROG_LOAD"), log


def prog_test_run(prog_fd, data_in=b"", repeat=1, ctx_in=None, data_size_out=0, ctx_size_out=0, flags=0, cpu=0):
    """BPF_PROG_TEST_RUN -> dict(retval, duration_ns, data_out, ctx_out)."""
    a = _new("struct bpf_attr_test_run *")
    keep = []
    a.prog_fd = prog_fd
    # every field up to cpu (5.10); batch_size (xdp live frames) is never sent
    if data_in:
        keep.append(_from_buffer(bytes(data_in)))
        a.data_in = addr(keep[-1])
        a.data_size_in = len(data_in)
    dout = bytearray(data_size_out) if data_size_out else None
    if dout is not None:
        keep.append(_from_buffer(dout))
        a.data_out = addr(keep[-1])
        a.data_size_out = data_size_out
    if ctx_in is not None:
        keep.append(_from_buffer(bytes(ctx_in)))
        a.ctx_in = addr(keep[-1])
        a.ctx_size_in = len(ctx_in)
    cout = bytearray(ctx_size_out) if ctx_size_out else None
    if cout is not None:
        keep.append(_from_buffer(cout))
        a.ctx_out = addr(keep[-1])
        a.ctx_size_out = ctx_size_out
    a.repeat = repeat
    a.flags = flags
    a.cpu = cpu
    r, err = bpf(uapi.BPF_PROG_TEST_RUN, a, attr_size("bpf_attr_test_run", ["cpu"]))
    explain.trace("syscall", f"BPF_PROG_TEST_RUN prog_fd={prog_fd} data_in={len(data_in)}B repeat={repeat} -> "
                  f"{('retval %d, %d ns/run' % (a.retval, a.duration)) if not err else _errno.errorcode.get(err, err)}")
    if err:
        raise fail("BPF_PROG_TEST_RUN", err)
    return {"retval": a.retval, "duration_ns": a.duration,
            "data_out": bytes(dout[:a.data_size_out]) if dout is not None else b"",
            "ctx_out": bytes(cout[:a.ctx_size_out]) if cout is not None else b""}


# ----------------------------------------------------------------------------- attach

def raw_tracepoint_open(prog_fd, name):
    """BPF_RAW_TRACEPOINT_OPEN -> link fd. ``name=None`` attaches a tracing
    (tp_btf/fentry/fexit) program to the target it was loaded for."""
    nb = _new("char[]", name.encode()) if name is not None else None
    return command(uapi.BPF_RAW_TRACEPOINT_OPEN,
                    f"BPF_RAW_TRACEPOINT_OPEN name={name if name is not None else 'NULL (BTF target from load)'} "
                    f"prog_fd={prog_fd}", {_errno.ENOENT: f"no raw tracepoint named {name!r}"},
                    name=addr(nb) if nb is not None else 0, prog_fd=prog_fd)


def link_create(prog_fd, target_fd, attach_type, flags=0, target_btf_id=0):
    """BPF_LINK_CREATE -> link fd."""
    fields = dict(prog_fd=prog_fd, target_fd=target_fd, attach_type=attach_type, flags=flags)
    if target_btf_id:
        fields["target_btf_id"] = target_btf_id
    return command(uapi.BPF_LINK_CREATE, f"BPF_LINK_CREATE prog_fd={prog_fd} target_fd={target_fd} "
                    f"attach_type={attach_type} flags={flags}", **fields)


def link_create_iter(prog_fd, map_fd=0):
    """BPF_LINK_CREATE(BPF_TRACE_ITER) -> link fd; ``map_fd`` for map iterators
    (``union bpf_iter_link_info`` starts with ``map.map_fd``; its pointer and
    length are the link_create tail). :mod:`link.iterator` fills the other kinds."""
    info = _new("__u32[4]", [map_fd])  # the union's first 16 bytes; the rest is zero to the kernel
    tail = addr(info).to_bytes(8, "little") + ffi.sizeof(info).to_bytes(4, "little") if map_fd else b""
    return link_create_tail(prog_fd, 0, uapi.BPF_TRACE_ITER, tail, what=f"(map_fd={map_fd or '-'})")


def iter_create(link_fd):
    """BPF_ITER_CREATE -> a readable fd: each read() runs the iterator program further."""
    return command(uapi.BPF_ITER_CREATE, f"BPF_ITER_CREATE link_fd={link_fd}", link_fd=link_fd, flags=0)


def link_create_tail(prog_fd, target, attach_type, tail=b"", flags=0, what=""):
    """BPF_LINK_CREATE -> link fd, for the kinds whose ``link_create`` union
    member follows ``flags`` (offset 16): ``tail`` is that member, packed by
    the link module that knows it (perf_event cookie, netfilter, tcx,
    uprobe_multi, ...); ``target`` is an fd or an ifindex; ``what`` names it
    in traces and errors. Exactly ``16 + len(tail)`` bytes are sent."""
    a = _new("struct bpf_attr_link_create_tail *")
    a.prog_fd, a.target_fd, a.attach_type, a.flags = prog_fd, target, attach_type, flags
    if len(tail) > ffi.sizeof(a.tail):
        raise ValueError(f"BPF_LINK_CREATE tail of {len(tail)} bytes: at most {ffi.sizeof(a.tail)}")
    _memmove(a.tail, tail, len(tail))
    return call(uapi.BPF_LINK_CREATE, a, attr_size("bpf_attr_link_create_tail", ["flags"]) + len(tail),
                 f"BPF_LINK_CREATE prog_fd={prog_fd} target_fd={target} attach_type={attach_type} flags={flags} "
                 f"{what}".rstrip())


def perf_event_open(type, config, pid=-1, cpu=0, group_fd=-1, flags=uapi.PERF_FLAG_FD_CLOEXEC,
                    sample_period=1, wakeup_events=1, sample_type=0):
    """perf_event_open(2) with a PERF_ATTR_SIZE_VER5 attr -> perf fd."""
    a = _new("struct perf_event_attr *")
    a.type = type
    a.config = config
    a.sample_period = sample_period
    a.sample_type = sample_type
    a.wakeup_events = wakeup_events
    return _perf_open(a, pid, cpu, group_fd, flags, f"perf_event_open type={type} config={config} pid={pid} cpu={cpu}")


def perf_event_open_attr(pid=-1, cpu=0, group_fd=-1, flags=uapi.PERF_FLAG_FD_CLOEXEC, **fields):
    """perf_event_open(2) with these ``struct perf_event_attr`` fields set
    (``type``, ``config``, ``config1``, ``config2``, ``sample_period``, ...;
    ``attr_flags`` is the attr's bit-field word) -> perf fd."""
    a = _new("struct perf_event_attr *")
    a.flags = fields.pop("attr_flags", 0)
    for name, value in fields.items():
        setattr(a, name, value)
    desc = "perf_event_open " + " ".join(f"{k}={v:#x}" if k.startswith("config") else f"{k}={v}"
                                         for k, v in fields.items()) + f" pid={pid} cpu={cpu}"
    return _perf_open(a, pid, cpu, group_fd, flags, desc)


def _perf_open(a, pid, cpu, group_fd, flags, desc):
    """The one perf_event_open(2) call: a PERF_ATTR_SIZE_VER5 attr -> an Fd, or the typed error."""
    a.size = uapi.PERF_ATTR_SIZE_VER5
    r = _syscall(uapi.SYS_perf_event_open, a, _cast("long", pid), _cast("long", cpu),
                 _cast("long", group_fd), _cast("unsigned long", flags))
    err = ffi.errno if r < 0 else 0
    if err:
        explain.trace("syscall", f"{desc} -> {errno_name(err)}")
        hint = ROOT_HINT + "; or lower kernel.perf_event_paranoid" if err in (_errno.EACCES, _errno.EPERM) else ""
        raise fail("perf_event_open", err, hint)
    explain.trace("syscall", f"{desc} -> fd {r}")
    return Fd(r, "perf_event_open")


_IOCTL_NAMES = {uapi.PERF_EVENT_IOC_ENABLE: "PERF_EVENT_IOC_ENABLE",
                uapi.PERF_EVENT_IOC_DISABLE: "PERF_EVENT_IOC_DISABLE",
                uapi.PERF_EVENT_IOC_SET_BPF: "PERF_EVENT_IOC_SET_BPF"}


def ioctl(fd, request, arg=0):
    """ioctl(fd, request, arg) with an integer argument -> result."""
    r = libc.ioctl(fd, request, _cast("unsigned long", arg))
    err = ffi.errno if r < 0 else 0
    name = _IOCTL_NAMES.get(request, f"ioctl({request:#x})")
    explain.trace("syscall", f"{name} fd={fd} arg={arg} -> {_errno.errorcode.get(err, err) if err else r}")
    if err:
        raise fail(name, err)
    return r


def mount(source, target, fstype, flags=0):
    """mount(2): used to mount tracefs/bpffs when they are missing."""
    r = libc.mount(source.encode(), target.encode(), fstype.encode(), flags, _NULL)
    err = ffi.errno if r < 0 else 0
    explain.trace("syscall", f"mount -t {fstype} {source} {target} -> {_errno.errorcode.get(err, err) if err else 'ok'}")
    if err:
        raise fail(f"mount({fstype} at {target})", err, "mounting needs root" if err == _errno.EPERM else "")


# ----------------------------------------------------------------------------- objects, ids, info

def obj_pin(fd, path):
    """BPF_OBJ_PIN: give the object a name in bpffs; it outlives this process."""
    p = _new("char[]", os.fsencode(path))
    command(uapi.BPF_OBJ_PIN, f"BPF_OBJ_PIN fd={fd} path={path}", {_errno.EEXIST: f"{path} exists already"},
             pathname=addr(p), bpf_fd=fd, file_flags=0)


def obj_get(path, file_flags=0):
    """BPF_OBJ_GET -> fd of the object pinned at ``path``."""
    p = _new("char[]", os.fsencode(path))
    return command(uapi.BPF_OBJ_GET, f"BPF_OBJ_GET path={path}", {_errno.ENOENT: f"nothing pinned at {path}"},
                    pathname=addr(p), bpf_fd=0, file_flags=file_flags)


def _next_id(cmd, start_id):
    a, size = new_attr(cmd, dict(start_id=start_id, next_id=0, open_flags=0))
    r, err = bpf(cmd, a, size)
    if explain.enabled():
        explain.trace("syscall", f"{uapi.CMD_NAMES[cmd]} start_id={start_id} -> "
                      f"{'none left (ENOENT)' if err == _errno.ENOENT else errno_name(err) if err else a.next_id}")
    if err == _errno.ENOENT:
        return None
    if err:
        raise fail(uapi.CMD_NAMES[cmd], err)
    return a.next_id


def _fd_by_id(cmd, obj_id):
    return command(cmd, f"{uapi.CMD_NAMES[cmd]} id={obj_id}", {_errno.ENOENT: f"no object with id {obj_id}"},
                    start_id=obj_id, next_id=0, open_flags=0)


def prog_get_next_id(start_id=0):
    return _next_id(uapi.BPF_PROG_GET_NEXT_ID, start_id)


def map_get_next_id(start_id=0):
    return _next_id(uapi.BPF_MAP_GET_NEXT_ID, start_id)


def link_get_next_id(start_id=0):
    return _next_id(uapi.BPF_LINK_GET_NEXT_ID, start_id)


def btf_get_next_id(start_id=0):
    return _next_id(uapi.BPF_BTF_GET_NEXT_ID, start_id)


def prog_get_fd_by_id(obj_id):
    return _fd_by_id(uapi.BPF_PROG_GET_FD_BY_ID, obj_id)


def map_get_fd_by_id(obj_id):
    return _fd_by_id(uapi.BPF_MAP_GET_FD_BY_ID, obj_id)


def link_get_fd_by_id(obj_id):
    return _fd_by_id(uapi.BPF_LINK_GET_FD_BY_ID, obj_id)


def btf_get_fd_by_id(obj_id):
    return _fd_by_id(uapi.BPF_BTF_GET_FD_BY_ID, obj_id)


def _get_info(fd, info):
    """Fill ``info``; traced once by obj_get_info with what it found."""
    a, size = new_attr(uapi.BPF_OBJ_GET_INFO_BY_FD, dict(bpf_fd=fd, info_len=ffi.sizeof(info[0]), info=addr(info)))
    r, err = bpf(uapi.BPF_OBJ_GET_INFO_BY_FD, a, size)
    if err:
        raise fail("BPF_OBJ_GET_INFO_BY_FD", err, "fd is not a bpf object of that kind" if err == _errno.EINVAL else "")


def _cstr(arr):
    return ffi.string(arr).decode(errors="replace")


def _prog_info(fd):
    i = _new("struct bpf_prog_info *")
    _get_info(fd, i)
    n = i.nr_map_ids
    map_ids = []
    if n:
        ids = _new("uint32_t[]", n)
        j = _new("struct bpf_prog_info *")
        j.nr_map_ids = n
        j.map_ids = addr(ids)
        _get_info(fd, j)
        map_ids = [ids[k] for k in range(min(n, j.nr_map_ids))]
    return {
        "id": i.id, "type": i.type, "type_name": prog_type_name(i.type), "name": _cstr(i.name),
        "tag": bytes(ffi.buffer(i.tag)).hex(), "run_time_ns": i.run_time_ns, "run_cnt": i.run_cnt,
        "recursion_misses": i.recursion_misses, "verified_insns": i.verified_insns,
        "xlated_prog_len": i.xlated_prog_len, "jited_prog_len": i.jited_prog_len,
        "nr_map_ids": n, "map_ids": map_ids, "btf_id": i.btf_id, "load_time": i.load_time,
        "created_by_uid": i.created_by_uid, "gpl_compatible": bool(i.gpl_compatible & 1),
        "attach_btf_obj_id": i.attach_btf_obj_id, "attach_btf_id": i.attach_btf_id,
    }


def _map_info(fd):
    i = _new("struct bpf_map_info *")
    _get_info(fd, i)
    return {
        "id": i.id, "type": i.type, "type_name": map_type_name(i.type), "key_size": i.key_size,
        "value_size": i.value_size, "max_entries": i.max_entries, "map_flags": i.map_flags,
        "name": _cstr(i.name), "btf_id": i.btf_id, "btf_key_type_id": i.btf_key_type_id,
        "btf_value_type_id": i.btf_value_type_id, "map_extra": i.map_extra,
        "btf_vmlinux_value_type_id": i.btf_vmlinux_value_type_id,
    }


def _btf_info(fd):
    name = _new("char[]", 64)
    i = _new("struct bpf_btf_info *")
    i.name = addr(name)
    i.name_len = 64
    _get_info(fd, i)
    return {"id": i.id, "btf_size": i.btf_size, "name": ffi.string(name).decode(errors="replace"),
            "kernel_btf": bool(i.kernel_btf)}


def _link_info(fd):
    i = _new("struct bpf_link_info *")
    _get_info(fd, i)
    t = i.type
    d = {"id": i.id, "type": t, "type_name": uapi.LINK_TYPE_NAMES[t] if t < len(uapi.LINK_TYPE_NAMES) else str(t),
         "prog_id": i.prog_id}
    if t == uapi.BPF_LINK_TYPE_RAW_TRACEPOINT:  # ask again with a buffer for its name
        name = _new("char[]", 128)
        j = _new("struct bpf_link_info *")
        j.u[0] = addr(name)
        j.u[1] = 128
        _get_info(fd, j)
        d["tp_name"] = ffi.string(name).decode(errors="replace")
    elif t == uapi.BPF_LINK_TYPE_TRACING:  # attach_type, target_obj_id, target_btf_id
        d["attach_type"] = i.u[0] & 0xFFFFFFFF
        d["target_obj_id"] = i.u[0] >> 32
        d["target_btf_id"] = i.u[1] & 0xFFFFFFFF
    elif t == uapi.BPF_LINK_TYPE_PERF_EVENT:  # u32 type of the perf link
        d["perf_event_type"] = i.u[0] & 0xFFFFFFFF
    return d


_INFO = {"prog": _prog_info, "map": _map_info, "link": _link_info, "btf": _btf_info}


def obj_get_info(fd, kind):
    """BPF_OBJ_GET_INFO_BY_FD decoded into a dict; ``kind`` is prog, map, link or btf."""
    try:
        fn = _INFO[kind]
    except KeyError:
        raise ValueError(f"obj_get_info kind must be one of {sorted(_INFO)}, not {kind!r}") from None
    d = fn(fd)
    explain.trace("syscall", f"BPF_OBJ_GET_INFO_BY_FD fd={fd} ({kind}) -> id {d['id']}")
    return d


def enable_stats():
    """BPF_ENABLE_STATS(BPF_STATS_RUN_TIME) -> fd; run_time_ns/run_cnt count while it is open."""
    return command(uapi.BPF_ENABLE_STATS, "BPF_ENABLE_STATS type=RUN_TIME", type=uapi.BPF_STATS_RUN_TIME)


_ncpus = None


def cpu_list(text):
    """The CPU numbers in a kernel cpu list such as ``0-3,6,8-9``."""
    cpus = []
    for part in text.strip().split(","):
        if "-" in part:
            lo, hi = part.split("-")
            cpus.extend(range(int(lo), int(hi) + 1))
        elif part:
            cpus.append(int(part))
    return cpus


def parse_cpu_list(text):
    """Count the CPUs in a kernel cpu list such as ``0-3,6,8-9``."""
    return len(cpu_list(text))


def num_possible_cpus():
    """CPUs the kernel may ever bring up: per-CPU map values have one slot each."""
    global _ncpus
    if _ncpus is None:
        with open("/sys/devices/system/cpu/possible") as f:
            _ncpus = parse_cpu_list(f.read())
    return _ncpus
