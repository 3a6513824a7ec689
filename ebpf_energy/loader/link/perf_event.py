"""Perf events: the hook under tracepoints, uprobes and ``SEC("perf_event")``.

A perf event fd gets a program by BPF_LINK_CREATE(BPF_PERF_EVENT), which
can also carry a BPF cookie (read back with ``bpf_get_attach_cookie``);
kernels before 5.15 refuse that link, so the fallback is the old
PERF_EVENT_IOC_SET_BPF + PERF_EVENT_IOC_ENABLE on the perf fd itself.

``SEC("perf_event")`` programs run on a sampling event's overflow. Such an
event counts on one CPU, so attaching "everywhere" is one event and one link
per online CPU (:func:`attach_perf_event`).
"""

import errno as _errno
import struct

from .. import explain, syscall, uapi
from ..errors import AttachError, NotSupported, PermissionDenied, SyscallError
from ..fd import close as _close
from .base import Link, Links, closing_on_error

PERF_COUNT_SW_CPU_CLOCK = uapi.PERF_COUNT_SW_CPU_CLOCK
ATTR_FREQ = 1 << 10  # perf_event_attr.freq: sample_period is a frequency in Hz
SOFTWARE_EVENTS = {name: getattr(uapi, "PERF_COUNT_SW_" + sw) for name, sw in (
    ("cpu-clock", "CPU_CLOCK"), ("task-clock", "TASK_CLOCK"), ("page-faults", "PAGE_FAULTS"),
    ("context-switches", "CONTEXT_SWITCHES"), ("cpu-migrations", "CPU_MIGRATIONS"),
    ("minor-faults", "PAGE_FAULTS_MIN"), ("major-faults", "PAGE_FAULTS_MAJ"))}


def link_perf_event(prog_fd, pfd, target, cookie=0, legacy=False):
    """Give perf event ``pfd`` the program; the Link owns ``pfd`` from here
    on (closed on failure too). ``legacy=True`` forces the ioctl path, so it
    stays tested on new kernels."""
    link_err = "legacy attach requested"
    try:
        if not legacy:
            tail = struct.pack("<Q", cookie)
            lfd = syscall.link_create_tail(prog_fd, pfd, uapi.BPF_PERF_EVENT, tail,
                                           what=f"({target}{f', cookie {cookie}' if cookie else ''})")
            return Link("perf_event", lfd, target, perf_fd=pfd, prog_fd=prog_fd)
    except (NotSupported, PermissionDenied) as e:
        explain.trace("attach", f"{target}: BPF_LINK_CREATE refused ({e.errno and _errno.errorcode.get(e.errno)}), "
                      "falling back to PERF_EVENT_IOC_SET_BPF + PERF_EVENT_IOC_ENABLE")
        link_err = e
    except SyscallError as e:
        _close(pfd)
        raise AttachError(f"cannot attach {target}: {e}") from e
    if cookie:
        _close(pfd)
        raise AttachError(f"cannot attach {target}: the BPF cookie needs BPF_LINK_CREATE, which failed: {link_err}")
    try:
        syscall.ioctl(pfd, uapi.PERF_EVENT_IOC_SET_BPF, prog_fd)
        syscall.ioctl(pfd, uapi.PERF_EVENT_IOC_ENABLE, 0)
    except SyscallError as e:
        _close(pfd)
        if isinstance(e, PermissionDenied) and isinstance(link_err, PermissionDenied):
            raise
        raise AttachError(f"cannot attach {target}: {link_err}; and then {e}") from e
    return Link("perf_event_ioctl", pfd, target, perf_fd=pfd, prog_fd=prog_fd)


def online_cpus():
    with open("/sys/devices/system/cpu/online") as f:
        return syscall.cpu_list(f.read().strip())


def attach_perf_event(prog_fd, event="cpu-clock", type=None, config=None, period=None, freq=None,
                      cpus=None, pid=-1):
    """A sampling perf event on every online CPU (or ``cpus``), each running
    the program at its overflow: ``event`` names a software event, or give
    ``type``/``config`` (e.g. PERF_TYPE_HARDWARE) yourself. ``freq`` Hz, or
    ``period`` events between samples (default 99 Hz, perf's usual)."""
    if type is None:
        if event not in SOFTWARE_EVENTS:
            raise AttachError(f"unknown software event {event!r} (known: {', '.join(SOFTWARE_EVENTS)})")
        type, config = uapi.PERF_TYPE_SOFTWARE, SOFTWARE_EVENTS[event]
    if period is None and freq is None:
        freq = 99
    fields = dict(type=type, config=config or 0, sample_period=freq or period,
                  attr_flags=ATTR_FREQ if freq else 0)
    target = f"perf_event {event if type == uapi.PERF_TYPE_SOFTWARE else f'type {type} config {config}'}"
    links = []
    with closing_on_error(links):
        for cpu in (online_cpus() if cpus is None else cpus):
            try:
                pfd = syscall.perf_event_open_attr(pid=pid, cpu=cpu, **fields)
            except PermissionDenied:
                raise
            except SyscallError as e:
                hint = ""
                if e.errno == _errno.ENOENT and type == uapi.PERF_TYPE_HARDWARE:
                    hint = " (this machine has no hardware PMU for it: use a software event such as cpu-clock)"
                raise AttachError(f"cannot open {target} on CPU {cpu}: {e}{hint}") from e
            links.append(link_perf_event(prog_fd, pfd, f"{target} cpu {cpu}"))
    return Links("perf_event", target, links)
