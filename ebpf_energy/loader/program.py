"""Loading one prepared program: func/line info, BPF_PROG_LOAD, the verifier log.

A failed load is retried once with the verifier log on, and the error shows
the log's last lines and the C source line of the failing instruction, found
through line_info: the one thing a person needs to fix the program.
"""

from __future__ import annotations

import errno
import re
import struct

from . import explain, syscall
from . import insn as I
from .errors import LoaderError, NotSupported, SyscallError, VerifierError
from .record import tuple_record

LOG_STATS = 4
LOG_SIZE = 1 << 20
FUNC_INFO_REC = struct.Struct("<II")
LINE_INFO_REC = struct.Struct("<IIII")


@tuple_record
class LineRecord:
    """The C source line of one instruction (from .BTF.ext line info)."""

    insn: int  # instruction index in the linked program
    file_name: str
    line: int
    col: int
    source: str


def rebased_info(linked, ext):
    """func_info and line_info of every placed function, with byte offsets in
    their section turned into instruction indices in the linked program."""
    funcs, lines = [], []
    if ext is None:
        return funcs, lines
    for fn in linked.functions:
        lo, hi = fn.start * I.INSN_SIZE, fn.end * I.INSN_SIZE
        for rec in ext.func_info.get(fn.section, ()):
            if lo <= rec.insn_off_bytes < hi:
                funcs.append((fn.out_start + rec.insn_off_bytes // I.INSN_SIZE - fn.start, rec.type_id))
        for rec in ext.line_info.get(fn.section, ()):
            if lo <= rec.insn_off_bytes < hi:
                lines.append((fn.out_start + rec.insn_off_bytes // I.INSN_SIZE - fn.start, rec))
    funcs.sort()
    lines.sort(key=lambda t: t[0])
    return funcs, lines


def pack_func_info(funcs) -> bytes:
    return b"".join(FUNC_INFO_REC.pack(i, t) for i, t in funcs)


def pack_line_info(lines) -> bytes:
    return b"".join(LINE_INFO_REC.pack(i, r.file_name_off, r.line_off, (r.line << 10) | (r.col & 0x3FF))
                    for i, r in lines)


def source_line_of(lines, insn_index: int) -> LineRecord | None:
    """The source line whose code covers ``insn_index`` (the last line_info at or before it)."""
    best = None
    for i, rec in lines:
        if i <= insn_index:
            best = (i, rec)
        else:
            break
    if best is None:
        return None
    i, rec = best
    return LineRecord(i, rec.file_name, rec.line, rec.col, (rec.source or "").strip())


_INSN_LINE = re.compile(r"^(\d+): \(([0-9a-f]{2})\)")


def failing_insn(log: str) -> int | None:
    """The index of the last instruction the verifier looked at before rejecting."""
    last = None
    for line in log.splitlines():
        m = _INSN_LINE.match(line.strip())
        if m:
            last = int(m.group(1))
    return last


def load(prog, insns: bytes, btf_fd=0, kern_version=0) -> int:
    """BPF_PROG_LOAD of a prepared program (:class:`~ebpf_energy.loader.prepare.PreparedProgram`)
    whose map fds are in ``insns``, with func/line info when the object's BTF
    is loaded; on rejection, reload with a log and raise VerifierError."""
    funcs, lines = (prog.func_info, prog.line_info) if btf_fd else ([], [])
    args = dict(prog_type=prog.prog_type, insns=bytes(insns), license=prog.license, name=prog.name[:15],
                expected_attach_type=prog.expected_attach_type, attach_btf_id=prog.attach_btf_id,
                prog_flags=prog.prog_flags,
                prog_btf_fd=btf_fd, kern_version=kern_version)
    if funcs:
        args.update(func_info=pack_func_info(funcs), func_info_rec_size=FUNC_INFO_REC.size)
    if lines:
        args.update(line_info=pack_line_info(lines), line_info_rec_size=LINE_INFO_REC.size)
    stats = explain.enabled()
    try:
        fd, log = syscall.prog_load(**args, log_level=LOG_STATS if stats else 0,
                                    log_size=LOG_SIZE if stats else 0)
    except (VerifierError, SyscallError) as first:
        if isinstance(first, SyscallError) and first.errno not in (errno.EACCES, errno.EINVAL, errno.E2BIG,
                                                                   errno.ENOSPC):
            raise
        raise _rejection(prog, args, prog.line_info, first) from None
    if stats:
        summary = [line for line in log.splitlines() if line.startswith(("processed", "verification time"))]
        explain.trace("verifier", f"{prog.name}: accepted, {prog.insn_count} instructions", *summary)
    return fd


def _rejection(linked, args, lines, first) -> VerifierError:
    log = getattr(first, "log", "") or ""
    if failing_insn(log) is None:  # no log, or only statistics (log_level 4 under --explain)
        first_log = log
        try:
            fd, log = syscall.prog_load(**args, log_level=1, log_size=LOG_SIZE)
        except VerifierError as again:
            log = again.log or ""
        except SyscallError as again:
            log = getattr(again, "log", "") or ""
        else:  # it loaded the second time (a transient failure): don't leak it
            syscall.close(fd)
            log = ""
        log = log or first_log
    tail = [l for l in log.rstrip().splitlines() if l.strip()][-12:]
    where = None
    idx = failing_insn(log)
    errname = getattr(first, "errno", None)
    if idx is None and errname == errno.EINVAL and not any(l.startswith(("processed ", "verification time")) for l in tail):
        raise _refused_before_verifier(linked, args, tail)
    if idx is not None:
        where = source_line_of(lines, idx)
    reason = errno.errorcode.get(errname, str(errname or ""))
    msg = [f"the verifier rejected program {linked.name!r} (section {linked.section}"
           f"{', ' + reason if reason else ''})"]
    if where is not None:
        msg.append(f"failing instruction {idx} is at {where.file_name}:{where.line}: {where.source}")
    elif idx is not None:
        msg.append(f"failing instruction {idx} (no line info: build with -g for source lines)")
    if tail:
        msg.append("last verifier lines:")
        msg.extend("  " + l for l in tail)
    return VerifierError(linked.name, "\n".join(msg), log=log, source_line=where)


def _refused_before_verifier(prog, args, tail) -> NotSupported:
    """EINVAL with no verifier output: BPF_PROG_LOAD's own checks (program
    type, expected attach type, flags, attach target) said no before any
    instruction was verified, so it is not called a verifier rejection."""
    from .sections import attach_type_name, flag_names

    what = [f"type {prog.prog_type_name}"]
    eat = args.get("expected_attach_type")
    what.append(f"expected attach type {attach_type_name(eat)}" if eat else "no expected attach type")
    if args.get("prog_flags"):
        what.append(f"flags {'|'.join(flag_names(args['prog_flags']))}")
    if args.get("attach_btf_id"):
        what.append(f"attach target {prog.attach_target or args['attach_btf_id']}")
    msg = (f"program {prog.name} (section {prog.section}): the kernel refused its load attributes "
           f"({', '.join(what)}) before verifying any instruction")
    if tail:
        msg += ": " + "; ".join(l.strip() for l in tail[-3:])
    else:
        msg += ": this kernel does not take that combination (check the SEC() name)"
    return NotSupported("BPF_PROG_LOAD", errno.EINVAL, msg)


def check_loaded(name, fd):
    if fd is None or fd < 0:
        raise LoaderError(f"program {name} has no fd: was it loaded?")
