"""What a program's ELF section name (its ``SEC()``) means to the kernel.

The section name is the only place an object says what a program is for,
so this table decides the program type, the expected attach type, how it is
attached, and what it attaches to. Pure data: no kernel needed.
"""

from dataclasses import dataclass
from typing import Optional

from ebpf_energy.loader import uapi
from ebpf_energy.loader.uapi import (BPF_LSM_MAC, BPF_MODIFY_RETURN, BPF_PERF_EVENT,  # noqa: F401 (re-exported)
                                     BPF_TRACE_FENTRY, BPF_TRACE_FEXIT, BPF_TRACE_ITER, BPF_TRACE_RAW_TP)

# enum bpf_prog_type: name -> value, and back
PROG_TYPES = {name: value for value, name in enumerate(uapi.PROG_TYPE_NAMES)}
PROG_TYPE_NAMES = dict(enumerate(uapi.PROG_TYPE_NAMES))



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
