"""SEC() names, one row each: the program type, expected attach type and attachment they mean."""

import pytest

from ebpf_energy.loader import uapi
from ebpf_energy.loader.sections import classify

# section, prog type name, expected_attach_type, attach, target, btf_target (kind)
ROWS = [
    ("tp/sched/sched_switch", "tracepoint", 0, "tracepoint", "sched/sched_switch", None),
    ("tracepoint/syscalls/sys_enter_read", "tracepoint", 0, "tracepoint", "syscalls/sys_enter_read", None),
    ("raw_tp/sys_enter", "raw_tracepoint", 0, "raw_tracepoint", "sys_enter", None),
    ("raw_tracepoint/sched_switch", "raw_tracepoint", 0, "raw_tracepoint", "sched_switch", None),
    ("raw_tp", "raw_tracepoint", 0, None, "", None),
    ("raw_tp.w/sched_switch", "raw_tracepoint_writable", 0, "raw_tracepoint", "sched_switch", None),
    ("tp_btf/sched_switch", "tracing", uapi.BPF_TRACE_RAW_TP, "tracing", "sched_switch",
     ("btf_trace_sched_switch", "typedef")),
    ("fentry/do_unlinkat", "tracing", uapi.BPF_TRACE_FENTRY, "tracing", "do_unlinkat", ("do_unlinkat", "func")),
    ("fexit/do_unlinkat", "tracing", uapi.BPF_TRACE_FEXIT, "tracing", "do_unlinkat", ("do_unlinkat", "func")),
    ("fmod_ret/security_x", "tracing", uapi.BPF_MODIFY_RETURN, "tracing", "security_x", ("security_x", "func")),
    ("lsm/file_open", "lsm", uapi.BPF_LSM_MAC, "tracing", "file_open", ("bpf_lsm_file_open", "func")),
    ("iter/task", "tracing", uapi.BPF_TRACE_ITER, None, "task", ("bpf_iter_task", "func")),
    ("socket", "socket_filter", 0, None, "", None),
    ("xdp", "xdp", uapi.BPF_XDP, None, "", None),  # libbpf loads xdp programs with BPF_XDP
    ("tc", "sched_cls", 0, None, "", None),
    ("perf_event", "perf_event", 0, None, "", None),
    ("syscall", "syscall", 0, None, "", None),
    ("kprobe/do_sys_open", "kprobe", 0, None, "do_sys_open", None),
    ("uretprobe/bash:readline", "kprobe", 0, None, "bash:readline", None),
    ("cgroup/skb", "cgroup_skb", 0, None, "", None),  # the whole name, as libbpf's table: no target
]


@pytest.mark.parametrize("section, prog_type, expected, attach, target, btf", ROWS)
def test_section(section, prog_type, expected, attach, target, btf):
    k = classify(section)
    assert k is not None, section
    assert k.prog_type == uapi.PROG_TYPE_NAMES.index(prog_type) and k.prog_type_name == prog_type
    assert (k.expected_attach_type, k.attach, k.target) == (expected, attach, target)
    assert (k.btf_target, k.btf_target_kind) == (btf if btf else (None, ""))


@pytest.mark.parametrize("section", [".text", "license", ".maps", "maps", "tp", "fentry", ".rodata", "xdp_frags"])
def test_not_a_program_section(section):
    assert classify(section) is None
