"""Attaching to a target the caller names: what each program takes, checking
a named target before anything is loaded, and the link made on it.

Some sections name no complete target (``xdp``, ``tc``, ``socket``,
``cgroup_skb/egress``, ``sk_lookup``, ``netfilter``, a bare ``uprobe``):
``link.auto`` leaves such a program loaded and not attached. Here a caller
(``ebpf-energy load --interface lo``, ``--cgroup PATH``, ``--target
PROG=VALUE``) supplies the rest, in the words bpftool uses for the same
things: an interface by name, a cgroup v2 directory, a network namespace
file. Every target is checked before the first bpf() call, so a typo costs
no load, and the error is one sentence (:class:`BadTarget`).

=============  ==========================================  =======================
takes          program types                               value
=============  ==========================================  =======================
``interface``  xdp, sched_cls (tc, tcx), socket_filter     ``IFNAME[:ingress|:egress]``
``cgroup``     cgroup_skb, cgroup_sock(_addr), sock_ops,   a cgroup v2 directory
               cgroup_device, cgroup_sysctl, cgroup_sockopt
``netns``      sk_lookup, flow_dissector                   a netns file (``/proc/PID/ns/net``,
                                                           ``/run/netns/NAME``)
``netfilter``  netfilter                                   ``ipv4|ipv6:HOOK[:PRIORITY]``
``binary``     ``uprobe``/``uretprobe`` without a target   ``PATH:FUNC[+OFFSET]``
``event``      perf_event                                  ``EVENT[:HZ]`` (a software event,
                                                           one per online CPU; 99 Hz default)
=============  ==========================================  =======================

A socket filter on an interface gets a packet socket of its own, bound to
that interface (it sees what the interface sends and receives, as tcpdump
does); the socket is closed with the link.
"""

from __future__ import annotations

import fcntl
import os

from .. import explain, uapi
from ..errors import AttachError, LoaderError
from ..record import field, record

CGROUP_PROG_TYPES = {"cgroup_skb", "cgroup_sock", "cgroup_sock_addr", "sock_ops", "cgroup_device",
                     "cgroup_sysctl", "cgroup_sockopt"}
DIRECTIONS = ("ingress", "egress")
NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs file: which kind of namespace it is
CLONE_NEWNET = 0x40000000
WHAT = {"interface": "a network interface", "cgroup": "a cgroup", "netns": "a network namespace",
        "netfilter": "a netfilter hook", "binary": "a binary and a function", "event": "a perf event"}
SYNTAX = {"interface": "IFNAME", "cgroup": "CGROUP_DIR", "netns": "NETNS_FILE",
          "netfilter": "ipv4|ipv6:HOOK[:PRIORITY]", "binary": "PATH:FUNC[+OFFSET]", "event": "EVENT[:HZ]"}


class BadTarget(LoaderError):
    """A named target that does not fit: no such interface, not a cgroup v2
    directory, a program that takes no target. One sentence."""


def takes(program_spec):
    """What ``program_spec`` (a ProgramSpec) is attached to when its section
    does not say: "interface", "cgroup", "netns", "netfilter", "binary",
    "event", or None (its section names its target, or load cannot name
    what it needs: a sockmap, a map to iterate, a target program)."""
    kind = program_spec.program_kind
    type_name = kind.prog_type_name
    head = program_spec.section.split("/", 1)[0]
    rest = program_spec.section.partition("/")[2]
    if type_name == "xdp":  # xdp/devmap, xdp/cpumap programs run from a map's entries, not on an interface
        return "interface" if kind.expected_attach_type in (0, uapi.BPF_XDP) else None
    if type_name in ("sched_cls", "socket_filter"):
        return "interface"
    if type_name in CGROUP_PROG_TYPES:
        return "cgroup"
    if type_name in ("sk_lookup", "flow_dissector"):
        return "netns"
    if type_name == "netfilter":
        return "netfilter"
    if type_name == "perf_event":
        return "event"
    if head.replace(".s", "") in ("uprobe", "uretprobe") and not rest:
        return "binary"
    return None


@record
class Named:
    """A checked target: ``kind`` (as :func:`takes`), ``value`` as given,
    ``source`` (the option it came from) and what it resolved to."""

    kind: str
    value: str
    source: str
    detail: dict = field(default_factory=dict)

    def to_dict(self):
        return dict({"kind": self.kind, "value": self.value, "from": self.source}, **self.detail)

    def __str__(self):
        return f"{WHAT[self.kind]} {self.value}"


def check(kind, value, source, program_spec=None, where=None):
    """``value`` for a target of ``kind``, checked against this machine: a
    :class:`Named`, or :class:`BadTarget` starting with ``where`` (default
    ``source value``)."""
    where = where or f"{source} {value}"
    if not value.strip():  # '' read as the current folder ("on a ext4 file system") or no interface
        raise BadTarget(f"{source}: the value is empty")
    if kind == "interface":
        return _interface(value, source, where, program_spec)
    if kind == "cgroup":
        return Named(kind, value, source, {"path": _cgroup_dir(value, where)})
    if kind == "netns":
        return Named(kind, value, source, _netns(value, where))
    if kind == "netfilter":
        return Named(kind, value, source, _netfilter(value, where))
    if kind == "event":
        return Named(kind, value, source, _event(value, where))
    if kind == "binary":
        from .uprobe import parse_target, resolve
        try:  # the file and its symbol resolved now, before the first bpf() call
            path, symbol, offset = parse_target(value, "uprobe")
            resolve(path, symbol, offset)
        except LoaderError as e:
            raise BadTarget(f"{where}: {e}") from None
        return Named(kind, value, source, {"path": path, "function": symbol, "offset": offset})
    raise BadTarget(f"{where}: unknown kind of target {kind!r}")


def _interface(value, source, where, program_spec):
    name, sep, direction = value.rpartition(":")
    if not sep or direction not in DIRECTIONS:
        name, direction = value, ""
    detail = {}
    if direction:
        type_name = program_spec.program_kind.prog_type_name if program_spec is not None else ""
        if type_name != "sched_cls":
            raise BadTarget(f"{where}: only tc/tcx programs take a direction (:ingress, :egress); "
                            f"a {type_name or 'program of this kind'} sees the interface's own path")
        detail["direction"] = direction
    if ":" in name or "/" in name:  # never in an interface name (the kernel's ioctl would cut at the ':')
        raise BadTarget(f"{where}: {name!r} is not an interface name; a direction is :ingress or :egress")
    try:
        import socket  # only when an interface is named: a tp_btf load never needs it

        detail["ifindex"] = socket.if_nametoindex(name)
    except OSError:
        raise BadTarget(f"{where}: no network interface {name!r} in this network namespace "
                        f"(see `ip link`)") from None
    return Named("interface", name, source, detail)


def _cgroup_dir(path, where):
    """``path`` as an absolute directory on a cgroup2 mount (cgroup links need v2)."""
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise BadTarget(f"{where}: {'not a directory' if os.path.exists(real) else 'no such directory'}; "
                        "give a cgroup v2 directory such as /sys/fs/cgroup/unified/NAME")
    fstype = _mount_type(real)
    if fstype != "cgroup2":
        raise BadTarget(f"{where}: not a cgroup v2 directory (it is on a {fstype or 'unknown'} file system); "
                        "cgroup programs attach to cgroup v2 only, such as /sys/fs/cgroup/unified/NAME")
    return real


def _mount_type(path):
    """The file system type of the mount ``path`` is on (the longest mount point that holds it)."""
    best, fstype = "", None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            sep = fields.index("-")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, fstype = point, fields[sep + 1]
    return fstype


def _netns(path, where):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise BadTarget(f"{where}: cannot open it: {e.strerror}") from None
    try:
        try:
            nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:  # ENOTTY: not an nsfs file at all
            nstype = None
        if nstype != CLONE_NEWNET:
            raise BadTarget(f"{where}: not a network namespace; give /proc/PID/ns/net or a file under "
                            "/run/netns (`ip netns`)")
        return {"inode": os.fstat(fd).st_ino}
    finally:
        os.close(fd)


def _netfilter(value, where):
    from .netfilter import FAMILIES, HOOKS
    parts = value.split(":")
    try:
        family, hook = parts[0], parts[1]
        priority = int(parts[2], 0) if len(parts) > 2 else 0
        if len(parts) > 3:
            raise ValueError
    except (IndexError, ValueError):
        raise BadTarget(f"{where}: expected FAMILY:HOOK[:PRIORITY], e.g. ipv4:output:-100") from None
    if family not in FAMILIES or hook not in HOOKS:
        raise BadTarget(f"{where}: family is one of {', '.join(FAMILIES)}, hook one of {', '.join(HOOKS)}")
    # an int32, without NF_IP_PRI_FIRST and NF_IP_PRI_LAST (the kernel keeps those two for itself)
    if not -2**31 < priority < 2**31 - 1:
        raise BadTarget(f"{where}: the priority is between {-2**31 + 1} and {2**31 - 2}")
    return {"family": family, "hook": hook, "priority": priority}


def _event(value, where):
    from .perf_event import SOFTWARE_EVENTS
    event, _, hz = value.partition(":")
    if event not in SOFTWARE_EVENTS:
        raise BadTarget(f"{where}: unknown software event {event!r} (known: {', '.join(SOFTWARE_EVENTS)})")
    try:
        freq = int(hz) if hz else 99
        if freq <= 0:
            raise ValueError
    except ValueError:
        raise BadTarget(f"{where}: the frequency after ':' is a positive whole number of Hz") from None
    try:
        with open("/proc/sys/kernel/perf_event_max_sample_rate") as f:
            most = int(f.read())
    except (OSError, ValueError):
        most = 100_000
    if freq > most:
        raise BadTarget(f"{where}: {freq} Hz is above this kernel's perf_event_max_sample_rate ({most})")
    return {"event": event, "freq_hz": freq}


def attach(program, named, xdp_mode=None):
    """The link of a loaded ``program`` (object.Program) on ``named``; an
    AttachError (or PermissionDenied) when the kernel refuses."""
    fd, spec = program.fd, program.spec
    kind = spec.program_kind
    d = named.detail
    explain.trace("attach", f"{program.name}: section {program.section!r} on {named} (from {named.source})")
    if named.kind == "interface":
        type_name = kind.prog_type_name
        if type_name == "xdp":
            from .xdp import attach_xdp
            return attach_xdp(fd, named.value, mode=xdp_mode)
        if type_name == "socket_filter":
            from .socket_filter import attach_packet_socket

            return attach_packet_socket(fd, named.value, d["ifindex"])
        from .tcx import attach_tcx
        direction = d.get("direction") or {uapi.BPF_TCX_EGRESS: "egress"}.get(kind.expected_attach_type, "ingress")
        return attach_tcx(fd, named.value, direction)
    if named.kind == "cgroup":
        from .cgroup import attach_cgroup
        return attach_cgroup(fd, d["path"], kind.expected_attach_type, section=program.section)
    if named.kind == "netns":
        from .sk_lookup import attach_netns
        return attach_netns(fd, named.value, kind.expected_attach_type, section=program.section)
    if named.kind == "netfilter":
        from .netfilter import attach_netfilter
        return attach_netfilter(fd, d["family"], d["hook"], d["priority"])
    if named.kind == "event":
        from .perf_event import attach_perf_event
        return attach_perf_event(fd, d["event"], freq=d["freq_hz"])
    if named.kind == "binary":
        from .uprobe import attach_uprobe
        retprobe = program.section.startswith("uretprobe")
        return attach_uprobe(fd, d["path"], d["function"], d["offset"], retprobe=retprobe,
                             target=f"{program.section.split('/')[0]}/{named.value}")
    raise BadTarget(f"program {program.name}: unknown kind of target {named.kind!r}")
