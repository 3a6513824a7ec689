"""What a program's ELF section name (its ``SEC()``) means to the kernel.

The section name is the only place an object says what a program is for,
so this table decides the program type, the expected attach type, how it is
attached, and what it attaches to. Pure data: no kernel needed.
"""

from dataclasses import dataclass
from typing import Optional

# enum bpf_prog_type (include/uapi/linux/bpf.h)
PROG_TYPES = {
    "unspec": 0, "socket_filter": 1, "kprobe": 2, "sched_cls": 3, "sched_act": 4, "tracepoint": 5,
    "xdp": 6, "perf_event": 7, "cgroup_skb": 8, "cgroup_sock": 9, "lwt_in": 10, "lwt_out": 11,
    "lwt_xmit": 12, "sock_ops": 13, "sk_skb": 14, "cgroup_device": 15, "sk_msg": 16,
    "raw_tracepoint": 17, "cgroup_sock_addr": 18, "lwt_seg6local": 19, "lirc_mode2": 20,
    "sk_reuseport": 21, "flow_dissector": 22, "cgroup_sysctl": 23, "raw_tracepoint_writable": 24,
    "cgroup_sockopt": 25, "tracing": 26, "struct_ops": 27, "ext": 28, "lsm": 29, "sk_lookup": 30,
    "syscall": 31, "netfilter": 32,
}
PROG_TYPE_NAMES = {v: k for k, v in PROG_TYPES.items()}

# enum bpf_attach_type (the few the loader itself uses)
BPF_TRACE_RAW_TP = 23
BPF_TRACE_FENTRY = 24
BPF_TRACE_FEXIT = 25
BPF_MODIFY_RETURN = 26
BPF_LSM_MAC = 27
BPF_TRACE_ITER = 28
BPF_PERF_EVENT = 41


@dataclass(frozen=True)
class SectionKind:
    """How to load and attach one program.

    ``attach`` is one of ``tracepoint``, ``raw_tracepoint``, ``tracing`` (the
    target is fixed at load time through ``btf_target``) or ``None`` when the
    loader loads the program but has no automatic attachment for it.
    """

    prog_type: int
    expected_attach_type: int = 0
    attach: Optional[str] = None
    target: str = ""  # "sched/sched_switch" for tp/, "sched_switch" for raw_tp/tp_btf
    btf_target: Optional[str] = None  # name looked up in kernel BTF for attach_btf_id
    btf_target_kind: str = ""  # "typedef" (tp_btf) or "func" (fentry/fexit/lsm)

    @property
    def manual(self) -> bool:
        """No automatic attachment exists for it (no target in the section
        name): loading it is all, as libbpf's auto-attach skips it too."""
        return self.attach is None and not self.target

    @property
    def prog_type_name(self):
        return PROG_TYPE_NAMES.get(self.prog_type, str(self.prog_type))


def _after(name, prefix):
    return name[len(prefix):]


def classify(section: str) -> Optional[SectionKind]:
    """The kind of program in ``section``, or None when it is not a program section we know."""
    for prefix in ("tp/", "tracepoint/"):
        if section.startswith(prefix):
            return SectionKind(PROG_TYPES["tracepoint"], attach="tracepoint", target=_after(section, prefix))
    if section in ("raw_tp", "raw_tracepoint"):
        # no target: loaded to be run with BPF_PROG_TEST_RUN (e.g. on one CPU), never attached
        return SectionKind(PROG_TYPES["raw_tracepoint"])
    for prefix in ("raw_tp/", "raw_tracepoint/"):
        if section.startswith(prefix):
            return SectionKind(PROG_TYPES["raw_tracepoint"], attach="raw_tracepoint", target=_after(section, prefix))
    for prefix in ("raw_tp.w/", "raw_tracepoint.w/"):
        if section.startswith(prefix):
            return SectionKind(PROG_TYPES["raw_tracepoint_writable"], attach="raw_tracepoint",
                               target=_after(section, prefix))
    if section.startswith("tp_btf/"):
        name = _after(section, "tp_btf/")
        return SectionKind(PROG_TYPES["tracing"], BPF_TRACE_RAW_TP, "tracing", name, "btf_trace_" + name, "typedef")
    for prefix, attach_type in (("fentry/", BPF_TRACE_FENTRY), ("fexit/", BPF_TRACE_FEXIT),
                                ("fmod_ret/", BPF_MODIFY_RETURN)):
        if section.startswith(prefix):
            name = _after(section, prefix)
            return SectionKind(PROG_TYPES["tracing"], attach_type, "tracing", name, name, "func")
    if section.startswith("lsm/"):
        name = _after(section, "lsm/")
        return SectionKind(PROG_TYPES["lsm"], BPF_LSM_MAC, "tracing", name, "bpf_lsm_" + name, "func")
    if section.startswith("iter/"):
        name = _after(section, "iter/")
        return SectionKind(PROG_TYPES["tracing"], BPF_TRACE_ITER, None, name, "bpf_iter_" + name, "func")
    # --- added by links: sections whose link needs an expected attach type at load
    for prefix, (ptype, attach_type) in LINK_SECTIONS.items():
        if section == prefix or section.startswith(prefix + "/"):
            return SectionKind(PROG_TYPES[ptype], attach_type, target=section[len(prefix) + 1:])
    simple = {
        "socket": "socket_filter", "xdp": "xdp", "tc": "sched_cls", "classifier": "sched_cls",
        "action": "sched_act", "perf_event": "perf_event", "syscall": "syscall", "sk_skb": "sk_skb",
        "sk_msg": "sk_msg", "sockops": "sock_ops", "flow_dissector": "flow_dissector",
        "sk_lookup": "sk_lookup", "cgroup_skb": "cgroup_skb", "cgroup/skb": "cgroup_skb",
        "kprobe": "kprobe", "kretprobe": "kprobe", "uprobe": "kprobe", "uretprobe": "kprobe",
        "ksyscall": "kprobe", "kretsyscall": "kprobe",
    }
    head = section.split("/", 1)[0]
    if section in simple or head in simple:
        return SectionKind(PROG_TYPES[simple.get(section, simple.get(head))], target=section.partition("/")[2])
    return None


# --- added by links: section -> (program type, expected attach type) for the
# kinds attached through BPF_LINK_CREATE with that attach type
LINK_SECTIONS = {
    "uprobe.multi": ("kprobe", 48), "uretprobe.multi": ("kprobe", 48),
    "uprobe.multi.s": ("kprobe", 48), "uretprobe.multi.s": ("kprobe", 48),
    "kprobe.multi": ("kprobe", 42), "kretprobe.multi": ("kprobe", 42),
    "uprobe.s": ("kprobe", 0), "uretprobe.s": ("kprobe", 0), "usdt": ("kprobe", 0), "usdt.s": ("kprobe", 0),
    "tcx/ingress": ("sched_cls", 46), "tcx/egress": ("sched_cls", 47),
    "tc/ingress": ("sched_cls", 46), "tc/egress": ("sched_cls", 47),
    "xdp": ("xdp", 37), "netfilter": ("netfilter", 45), "sk_lookup": ("sk_lookup", 36),
    "flow_dissector": ("flow_dissector", 17),
    "cgroup_skb/ingress": ("cgroup_skb", 0), "cgroup_skb/egress": ("cgroup_skb", 1),
    "cgroup/skb": ("cgroup_skb", 0), "cgroup/sock_create": ("cgroup_sock", 2), "cgroup/sock": ("cgroup_sock", 2),
    "cgroup/sock_release": ("cgroup_sock", 34), "cgroup/post_bind4": ("cgroup_sock", 12),
    "cgroup/post_bind6": ("cgroup_sock", 13), "cgroup/dev": ("cgroup_device", 6), "sockops": ("sock_ops", 3),
    "cgroup/bind4": ("cgroup_sock_addr", 8), "cgroup/bind6": ("cgroup_sock_addr", 9),
    "cgroup/connect4": ("cgroup_sock_addr", 10), "cgroup/connect6": ("cgroup_sock_addr", 11),
    "cgroup/sendmsg4": ("cgroup_sock_addr", 14), "cgroup/sendmsg6": ("cgroup_sock_addr", 15),
    "cgroup/recvmsg4": ("cgroup_sock_addr", 19), "cgroup/recvmsg6": ("cgroup_sock_addr", 20),
    "cgroup/getpeername4": ("cgroup_sock_addr", 29), "cgroup/getpeername6": ("cgroup_sock_addr", 30),
    "cgroup/getsockname4": ("cgroup_sock_addr", 31), "cgroup/getsockname6": ("cgroup_sock_addr", 32),
    "cgroup/sysctl": ("cgroup_sysctl", 18), "cgroup/getsockopt": ("cgroup_sockopt", 21),
    "cgroup/setsockopt": ("cgroup_sockopt", 22),
}
