"""Attaching from the section name alone, as ``ebpf-energy load`` and
``BpfObject.attach()`` do: which link module a section goes to, or what the
program needs that its name cannot give (a socket, an interface, a cgroup),
in which case it is loaded and not attached, as libbpf's auto-attach does.
"""

from ..errors import AttachError


class NeedsMore(Exception):
    """The section names no complete target: the program stays loaded, not
    attached; ``str()`` says what it needs and which call attaches it."""


_NEEDS = {
    "socket": "a socket: link.socket_filter.attach_socket(prog_fd, sock)",
    "tc": "a network interface: link.tcx.attach_tcx(prog_fd, interface, 'ingress' or 'egress')",
    "tcx": "a network interface: link.tcx.attach_tcx(prog_fd, interface, direction)",
    "classifier": "a network interface: link.tcx.attach_tcx(prog_fd, interface, direction)",
    "xdp": "a network interface: link.xdp.attach_xdp(prog_fd, interface)",
    "cgroup": "a cgroup: link.cgroup.attach_cgroup(prog_fd, cgroup_dir, attach_type)",
    "cgroup_skb": "a cgroup: link.cgroup.attach_cgroup(prog_fd, cgroup_dir, attach_type)",
    "sockops": "a cgroup: link.cgroup.attach_cgroup(prog_fd, cgroup_dir, attach_type)",
    "sk_lookup": "a network namespace: link.sk_lookup.attach_netns(prog_fd, netns_path)",
    "flow_dissector": "a network namespace: link.sk_lookup.attach_netns(prog_fd, netns_path, BPF_FLOW_DISSECTOR)",
    "netfilter": "a netfilter hook: link.netfilter.attach_netfilter(prog_fd, family, hook, priority)",
    "perf_event": "a perf event: link.perf_event.attach_perf_event(prog_fd, 'cpu-clock') (one per CPU)",
    "uprobe": "a binary and a function: name them in the section (uprobe/PATH:FUNC[+OFF]) or call "
              "link.uprobe.attach_uprobe(prog_fd, path, func)",
    "uretprobe": "a binary and a function: name them in the section (uretprobe/PATH:FUNC) or call "
                 "link.uprobe.attach_uprobe(prog_fd, path, func, retprobe=True)",
    "uprobe.multi": "a binary and functions: uprobe.multi/PATH:GLOB, or link.uprobe.attach_uprobe_multi(...)",
    "uretprobe.multi": "a binary and functions: uretprobe.multi/PATH:GLOB, or link.uprobe.attach_uprobe_multi(...)",
    "usdt": "a probe: name it in the section (usdt/PATH:PROVIDER:NAME) or call link.usdt.attach_usdt(...)",
    "sk_skb": "a sockmap or sockhash (BPF_PROG_ATTACH to the map)",
    "sk_msg": "a sockmap or sockhash (BPF_PROG_ATTACH to the map)",
    "sk_reuseport": "a reuseport socket group (SO_ATTACH_REUSEPORT_EBPF)",
    "lirc_mode2": "a lirc device",
    "action": "a tc action (netlink): not attached by this loader",
    "raw_tp": "nothing: its section names no tracepoint (run it with BPF_PROG_TEST_RUN)",
    "raw_tracepoint": "nothing: its section names no tracepoint (run it with BPF_PROG_TEST_RUN)",
    "syscall": "nothing: a syscall program is run with BPF_PROG_TEST_RUN",
    "struct_ops": "a struct_ops map: it runs through the map it is a member of",
    "freplace": "a target program (BPF_PROG_TYPE_EXT)",
}
_MAP_ITERS = {"bpf_map_elem", "bpf_sk_storage_map", "sockmap"}


def _head(section):
    head = section.split("/", 1)[0]
    return head[:-2] if head.endswith(".s") else head


def needs(section):
    """What a program needs beyond its section name, or None when the section alone attaches it."""
    head = _head(section)
    rest = section.partition("/")[2]
    if head == "iter":
        if rest in _MAP_ITERS:
            return f"a map: link.iterator.Iterator(prog_fd, {rest!r}, map_fd)"
        if rest == "cgroup":
            return "a cgroup: link.iterator.Iterator(prog_fd, 'cgroup', cgroup_fd=fd, order='descendants_pre')"
        return None
    if head in ("uprobe", "uretprobe", "uprobe.multi", "uretprobe.multi", "usdt") and rest:
        return None
    if head in ("raw_tp", "raw_tracepoint") and rest:
        return None
    if head in _NEEDS:
        return _NEEDS[head]
    return None


def attach(obj, program):
    """Attach ``program`` of ``obj`` (a loaded BpfObject) from its section
    name: a link, or NeedsMore, or AttachError."""
    section, fd, kind = program.section, program.fd, program.spec.program_kind
    wanted = needs(section)
    if wanted is None and kind.attach is None and not section.partition("/")[2]:
        wanted = "nothing to attach to: its section names no target"
    if wanted is not None:
        raise NeedsMore(wanted)
    head = _head(section)
    rest = section.partition("/")[2]
    if kind.attach == "tracepoint":
        from .tracepoint import attach_tracepoint
        category, _, name = kind.target.partition("/")
        if not name:
            raise AttachError(f"program {program.name}: section {section!r} must be tp/<category>/<name>")
        return attach_tracepoint(fd, category, name)
    if kind.attach == "raw_tracepoint":
        from .raw_tracepoint import attach_raw_tracepoint
        return attach_raw_tracepoint(fd, kind.target)
    if kind.attach == "tracing":
        from .tracing import attach_tracing
        return attach_tracing(fd, section)
    if head == "iter":
        from .iterator import Iterator
        return Iterator(fd, rest)
    if head in ("uprobe", "uretprobe", "uprobe.multi", "uretprobe.multi"):
        from .uprobe import attach_section
        return attach_section(fd, section)
    if head == "usdt":
        return _attach_usdt(obj, program)
    from . import kprobe
    if head in kprobe.HEADS or head.startswith(("kprobe", "kretprobe")):
        return kprobe.attach_section(fd, section)
    raise AttachError(f"program {program.name}: the loader has no automatic attachment for section "
                      f"{section!r} (see the README's `load` section for the kinds it attaches)")


def _attach_usdt(obj, program):
    from . import usdt
    path, provider, name = usdt.parse_section(program.section)
    specs = obj.maps.get(usdt.SPECS_MAP)
    if specs is None:
        raise AttachError(f"program {program.name}: a usdt program needs the {usdt.SPECS_MAP} map of "
                          "libbpf's <bpf/usdt.bpf.h>, which this object lacks")
    ids = obj.__dict__.setdefault("_usdt_spec_ids", usdt.SpecIds(specs.max_entries))
    return usdt.attach_usdt(program.fd, path, provider, name, specs, obj.maps.get(usdt.IP_MAP), ids,
                            target=program.section)
