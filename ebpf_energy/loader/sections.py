"""What a program's ELF section name (its ``SEC()``) means to the kernel.

The section name is the only place an object says what a program is for,
so one table (:data:`TABLE`, one row per prefix) decides the program type,
the expected attach type the kernel checks at load, the load flags
(sleepable, xdp frags), how it is attached and what it attaches to. Pure
data: no kernel needed. A leading ``?`` (``SEC("?tp/...")``) turns the
program's autoload off, as in libbpf; the rest of the name is looked up here.
"""

from __future__ import annotations

from ebpf_energy.loader import uapi
from ebpf_energy.loader.record import tuple_record
from ebpf_energy.loader.uapi import (BPF_LSM_MAC, BPF_MODIFY_RETURN, BPF_PERF_EVENT,  # noqa: F401 (re-exported)
                                     BPF_TRACE_FENTRY, BPF_TRACE_FEXIT, BPF_TRACE_ITER, BPF_TRACE_RAW_TP)

# enum bpf_prog_type: name -> value, and back
PROG_TYPES = {name: value for value, name in enumerate(uapi.PROG_TYPE_NAMES)}
PROG_TYPE_NAMES = dict(enumerate(uapi.PROG_TYPE_NAMES))

# enum bpf_attach_type: name -> value, and back
ATTACH_TYPES = {name: value for value, name in enumerate(uapi.ATTACH_TYPE_NAMES)}
ATTACH_TYPE_NAMES = dict(enumerate(uapi.ATTACH_TYPE_NAMES))

# BPF_PROG_LOAD prog_flags
BPF_F_SLEEPABLE = uapi.BPF_F_SLEEPABLE
BPF_F_XDP_HAS_FRAGS = uapi.BPF_F_XDP_HAS_FRAGS
PROG_FLAG_NAMES = {BPF_F_SLEEPABLE: "sleepable", BPF_F_XDP_HAS_FRAGS: "xdp_has_frags"}


@tuple_record
class ProgramKind:
    """How to load and attach one program.

    ``attach`` is one of ``tracepoint``, ``raw_tracepoint``, ``tracing`` (the
    target is fixed at load time through ``btf_target``) or ``None`` when the
    loader loads the program but has no automatic attachment for it.
    """

    prog_type: int
    expected_attach_type: int = 0
    attach: str | None = None
    target: str = ""  # "sched/sched_switch" for tp/, "sched_switch" for raw_tp/tp_btf
    btf_target: str | None = None  # name looked up in kernel BTF for attach_btf_id
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



@tuple_record
class Row:
    """One section prefix. It matches the name itself and ``prefix/...``
    (or anything after a prefix that ends in ``/``); the longest match wins,
    so rows may come in any order. ``btf``: (kind, name prefix) of the kernel
    BTF object whose id the load needs (``("func", "bpf_lsm_")`` for lsm/)."""

    prefix: str
    prog_type: str
    attach_type: str = ""
    flags: int = 0
    attach: str | None = None
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


def find_row(section: str) -> Row | None:
    """The table row for ``section`` (without a leading ``?``): the longest prefix that matches."""
    rows = [r for r in TABLE if _matches(section, r.prefix)]
    return max(rows, key=lambda r: len(r.prefix)) if rows else None


def classify(section: str) -> ProgramKind | None:
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
    return ProgramKind(PROG_TYPES[row.prog_type], ATTACH_TYPES[row.attach_type] if row.attach_type else 0,
                       row.attach if target else None, target, btf_target, btf_kind, row.flags)


def autoload_of(section: str) -> bool:
    """``SEC("?...")`` programs are off by default (libbpf: autoload false)."""
    return not section.startswith("?")
