"""What a program's ELF section name (its ``SEC()``) means to the kernel.

The section name is the only place an object says what a program is for,
so one table (:data:`TABLE`, one row per prefix) decides the program type,
the expected attach type the kernel checks at load, the load flags
(sleepable, xdp frags), how it is attached and what it attaches to. Pure
data: no kernel needed. A leading ``?`` (``SEC("?tp/...")``) turns the
program's autoload off, as in libbpf; the rest of the name is looked up here.
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

# enum bpf_attach_type (include/uapi/linux/bpf.h)
ATTACH_TYPES = {
    "cgroup_inet_ingress": 0, "cgroup_inet_egress": 1, "cgroup_inet_sock_create": 2, "cgroup_sock_ops": 3,
    "sk_skb_stream_parser": 4, "sk_skb_stream_verdict": 5, "cgroup_device": 6, "sk_msg_verdict": 7,
    "cgroup_inet4_bind": 8, "cgroup_inet6_bind": 9, "cgroup_inet4_connect": 10, "cgroup_inet6_connect": 11,
    "cgroup_inet4_post_bind": 12, "cgroup_inet6_post_bind": 13, "cgroup_udp4_sendmsg": 14,
    "cgroup_udp6_sendmsg": 15, "lirc_mode2": 16, "flow_dissector": 17, "cgroup_sysctl": 18,
    "cgroup_udp4_recvmsg": 19, "cgroup_udp6_recvmsg": 20, "cgroup_getsockopt": 21, "cgroup_setsockopt": 22,
    "trace_raw_tp": 23, "trace_fentry": 24, "trace_fexit": 25, "modify_return": 26, "lsm_mac": 27,
    "trace_iter": 28, "cgroup_inet4_getpeername": 29, "cgroup_inet6_getpeername": 30,
    "cgroup_inet4_getsockname": 31, "cgroup_inet6_getsockname": 32, "xdp_devmap": 33,
    "cgroup_inet_sock_release": 34, "xdp_cpumap": 35, "sk_lookup": 36, "xdp": 37, "sk_skb_verdict": 38,
    "sk_reuseport_select": 39, "sk_reuseport_select_or_migrate": 40, "perf_event": 41,
    "trace_kprobe_multi": 42, "lsm_cgroup": 43, "struct_ops": 44, "netfilter": 45, "tcx_ingress": 46,
    "tcx_egress": 47, "trace_uprobe_multi": 48, "cgroup_unix_connect": 49, "cgroup_unix_sendmsg": 50,
    "cgroup_unix_recvmsg": 51, "cgroup_unix_getpeername": 52, "cgroup_unix_getsockname": 53,
    "netkit_primary": 54, "netkit_peer": 55, "trace_kprobe_session": 56, "trace_uprobe_session": 57,
}
ATTACH_TYPE_NAMES = {v: k for k, v in ATTACH_TYPES.items()}
BPF_TRACE_RAW_TP = 23
BPF_TRACE_FENTRY = 24
BPF_TRACE_FEXIT = 25
BPF_MODIFY_RETURN = 26
BPF_LSM_MAC = 27
BPF_TRACE_ITER = 28
BPF_PERF_EVENT = 41

# BPF_PROG_LOAD prog_flags
BPF_F_SLEEPABLE = 1 << 4
BPF_F_XDP_HAS_FRAGS = 1 << 5
PROG_FLAG_NAMES = {BPF_F_SLEEPABLE: "sleepable", BPF_F_XDP_HAS_FRAGS: "xdp_has_frags"}


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
    btf_target_kind: str = ""  # "typedef" (tp_btf), "func" (fentry/fexit/lsm/iter), "struct" (struct_ops)
    prog_flags: int = 0  # BPF_F_SLEEPABLE, BPF_F_XDP_HAS_FRAGS

    @property
    def manual(self) -> bool:
        """No automatic attachment exists for it (no target in the section
        name): loading it is all, as libbpf's auto-attach skips it too. A
        struct_ops program is attached through its ``.struct_ops`` map."""
        return self.attach is None and not self.target or self.prog_type == PROG_TYPES["struct_ops"]

    @property
    def prog_type_name(self):
        return PROG_TYPE_NAMES.get(self.prog_type, str(self.prog_type))



@dataclass(frozen=True)
class Row:
    """One section prefix. It matches the name itself and ``prefix/...``
    (or anything after a prefix that ends in ``/``); the longest match wins,
    so rows may come in any order. ``btf``: (kind, name prefix) of the kernel
    BTF object whose id the load needs (``("func", "bpf_lsm_")`` for lsm/)."""

    prefix: str
    prog_type: str
    attach_type: str = ""
    flags: int = 0
    attach: Optional[str] = None
    btf: tuple = ()


S, F = BPF_F_SLEEPABLE, BPF_F_XDP_HAS_FRAGS
# Append new prefixes at the end; the lookup does not depend on the order.
TABLE = (
    Row("tp/", "tracepoint", attach="tracepoint"),
    Row("tracepoint/", "tracepoint", attach="tracepoint"),
    Row("raw_tp", "raw_tracepoint", attach="raw_tracepoint"),
    Row("raw_tracepoint", "raw_tracepoint", attach="raw_tracepoint"),
    Row("raw_tp.w", "raw_tracepoint_writable", attach="raw_tracepoint"),
    Row("raw_tracepoint.w", "raw_tracepoint_writable", attach="raw_tracepoint"),
    Row("tp_btf/", "tracing", "trace_raw_tp", attach="tracing", btf=("typedef", "btf_trace_")),
    Row("fentry/", "tracing", "trace_fentry", attach="tracing", btf=("func", "")),
    Row("fexit/", "tracing", "trace_fexit", attach="tracing", btf=("func", "")),
    Row("fmod_ret/", "tracing", "modify_return", attach="tracing", btf=("func", "")),
    Row("fentry.s/", "tracing", "trace_fentry", S, attach="tracing", btf=("func", "")),
    Row("fexit.s/", "tracing", "trace_fexit", S, attach="tracing", btf=("func", "")),
    Row("fmod_ret.s/", "tracing", "modify_return", S, attach="tracing", btf=("func", "")),
    Row("lsm/", "lsm", "lsm_mac", attach="tracing", btf=("func", "bpf_lsm_")),
    Row("lsm.s/", "lsm", "lsm_mac", S, attach="tracing", btf=("func", "bpf_lsm_")),
    Row("lsm_cgroup/", "lsm", "lsm_cgroup", btf=("func", "bpf_lsm_")),
    Row("iter/", "tracing", "trace_iter", btf=("func", "bpf_iter_")),
    Row("iter.s/", "tracing", "trace_iter", S, btf=("func", "bpf_iter_")),
    Row("struct_ops", "struct_ops"),
    Row("struct_ops.s", "struct_ops", flags=S),
    Row("syscall", "syscall", flags=S),
    Row("socket", "socket_filter"),
    Row("sk_reuseport", "sk_reuseport", "sk_reuseport_select"),
    Row("sk_reuseport/migrate", "sk_reuseport", "sk_reuseport_select_or_migrate"),
    Row("kprobe", "kprobe"),
    Row("kretprobe", "kprobe"),
    Row("ksyscall", "kprobe"),
    Row("kretsyscall", "kprobe"),
    Row("uprobe", "kprobe"),
    Row("uretprobe", "kprobe"),
    Row("uprobe.s", "kprobe", flags=S),
    Row("uretprobe.s", "kprobe", flags=S),
    Row("usdt", "kprobe"),
    Row("usdt.s", "kprobe", flags=S),
    Row("kprobe.multi", "kprobe", "trace_kprobe_multi"),
    Row("kretprobe.multi", "kprobe", "trace_kprobe_multi"),
    Row("kprobe.session", "kprobe", "trace_kprobe_session"),
    Row("uprobe.multi", "kprobe", "trace_uprobe_multi"),
    Row("uretprobe.multi", "kprobe", "trace_uprobe_multi"),
    Row("uprobe.multi.s", "kprobe", "trace_uprobe_multi", S),
    Row("uretprobe.multi.s", "kprobe", "trace_uprobe_multi", S),
    Row("uprobe.session", "kprobe", "trace_uprobe_session"),
    Row("tc", "sched_cls"),
    Row("classifier", "sched_cls"),
    Row("action", "sched_act"),
    Row("tc/ingress", "sched_cls", "tcx_ingress"),
    Row("tc/egress", "sched_cls", "tcx_egress"),
    Row("tcx/ingress", "sched_cls", "tcx_ingress"),
    Row("tcx/egress", "sched_cls", "tcx_egress"),
    Row("netkit/primary", "sched_cls", "netkit_primary"),
    Row("netkit/peer", "sched_cls", "netkit_peer"),
    Row("xdp", "xdp", "xdp"),
    Row("xdp.frags", "xdp", "xdp", F),
    Row("xdp/devmap", "xdp", "xdp_devmap"),
    Row("xdp.frags/devmap", "xdp", "xdp_devmap", F),
    Row("xdp/cpumap", "xdp", "xdp_cpumap"),
    Row("xdp.frags/cpumap", "xdp", "xdp_cpumap", F),
    Row("perf_event", "perf_event"),
    Row("lwt_in", "lwt_in"),
    Row("lwt_out", "lwt_out"),
    Row("lwt_xmit", "lwt_xmit"),
    Row("lwt_seg6local", "lwt_seg6local"),
    Row("sockops", "sock_ops", "cgroup_sock_ops"),
    Row("sk_skb", "sk_skb"),
    Row("sk_skb/stream_parser", "sk_skb", "sk_skb_stream_parser"),
    Row("sk_skb/stream_verdict", "sk_skb", "sk_skb_stream_verdict"),
    Row("sk_skb/verdict", "sk_skb", "sk_skb_verdict"),
    Row("sk_msg", "sk_msg", "sk_msg_verdict"),
    Row("lirc_mode2", "lirc_mode2", "lirc_mode2"),
    Row("flow_dissector", "flow_dissector", "flow_dissector"),
    Row("cgroup_skb/ingress", "cgroup_skb", "cgroup_inet_ingress"),
    Row("cgroup_skb/egress", "cgroup_skb", "cgroup_inet_egress"),
    Row("cgroup/skb", "cgroup_skb"),
    Row("cgroup_skb", "cgroup_skb"),
    Row("cgroup/sock", "cgroup_sock", "cgroup_inet_sock_create"),
    Row("cgroup/sock_create", "cgroup_sock", "cgroup_inet_sock_create"),
    Row("cgroup/sock_release", "cgroup_sock", "cgroup_inet_sock_release"),
    Row("cgroup/post_bind4", "cgroup_sock", "cgroup_inet4_post_bind"),
    Row("cgroup/post_bind6", "cgroup_sock", "cgroup_inet6_post_bind"),
    Row("cgroup/bind4", "cgroup_sock_addr", "cgroup_inet4_bind"),
    Row("cgroup/bind6", "cgroup_sock_addr", "cgroup_inet6_bind"),
    Row("cgroup/connect4", "cgroup_sock_addr", "cgroup_inet4_connect"),
    Row("cgroup/connect6", "cgroup_sock_addr", "cgroup_inet6_connect"),
    Row("cgroup/connect_unix", "cgroup_sock_addr", "cgroup_unix_connect"),
    Row("cgroup/sendmsg4", "cgroup_sock_addr", "cgroup_udp4_sendmsg"),
    Row("cgroup/sendmsg6", "cgroup_sock_addr", "cgroup_udp6_sendmsg"),
    Row("cgroup/sendmsg_unix", "cgroup_sock_addr", "cgroup_unix_sendmsg"),
    Row("cgroup/recvmsg4", "cgroup_sock_addr", "cgroup_udp4_recvmsg"),
    Row("cgroup/recvmsg6", "cgroup_sock_addr", "cgroup_udp6_recvmsg"),
    Row("cgroup/recvmsg_unix", "cgroup_sock_addr", "cgroup_unix_recvmsg"),
    Row("cgroup/getpeername4", "cgroup_sock_addr", "cgroup_inet4_getpeername"),
    Row("cgroup/getpeername6", "cgroup_sock_addr", "cgroup_inet6_getpeername"),
    Row("cgroup/getpeername_unix", "cgroup_sock_addr", "cgroup_unix_getpeername"),
    Row("cgroup/getsockname4", "cgroup_sock_addr", "cgroup_inet4_getsockname"),
    Row("cgroup/getsockname6", "cgroup_sock_addr", "cgroup_inet6_getsockname"),
    Row("cgroup/getsockname_unix", "cgroup_sock_addr", "cgroup_unix_getsockname"),
    Row("cgroup/sysctl", "cgroup_sysctl", "cgroup_sysctl"),
    Row("cgroup/getsockopt", "cgroup_sockopt", "cgroup_getsockopt"),
    Row("cgroup/setsockopt", "cgroup_sockopt", "cgroup_setsockopt"),
    Row("cgroup/dev", "cgroup_device", "cgroup_device"),
    Row("sk_lookup", "sk_lookup", "sk_lookup"),
    Row("netfilter", "netfilter", "netfilter"),
)


def attach_type_name(value: int) -> str:
    return ATTACH_TYPE_NAMES.get(value, str(value))


def flag_names(prog_flags: int) -> list:
    return [name for bit, name in PROG_FLAG_NAMES.items() if prog_flags & bit]


def _matches(section, prefix):
    if prefix.endswith("/"):
        return section.startswith(prefix)
    return section == prefix or section.startswith(prefix + "/")


def find_row(section: str) -> Optional[Row]:
    """The table row for ``section`` (without a leading ``?``): the longest prefix that matches."""
    rows = [r for r in TABLE if _matches(section, r.prefix)]
    return max(rows, key=lambda r: len(r.prefix)) if rows else None


def classify(section: str) -> Optional[SectionKind]:
    """The kind of program in ``section``, or None when it is not a program section we know."""
    section = section[1:] if section.startswith("?") else section
    row = find_row(section)
    if row is None:
        return None
    target = section[len(row.prefix):]
    if target.startswith("/") and not row.prefix.endswith("/"):
        target = target[1:]  # "uprobe//proc/self/exe:f" keeps its absolute path
    btf_target, btf_kind = None, ""
    if row.btf and target:
        btf_kind, btf_target = row.btf[0], row.btf[1] + target
    return SectionKind(PROG_TYPES[row.prog_type], ATTACH_TYPES[row.attach_type] if row.attach_type else 0,
                       row.attach if target else None, target, btf_target, btf_kind, row.flags)


def autoload_of(section: str) -> bool:
    """``SEC("?...")`` programs are off by default (libbpf: autoload false)."""
    return not section.startswith("?")
