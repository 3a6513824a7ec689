"""Who may run the monitor is decided from effective capabilities, not the uid."""

from ebpf_energy.privilege import CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, can_bpf, effective_caps


def test_capability_sets():
    assert can_bpf(1 << CAP_SYS_ADMIN)
    assert can_bpf(1 << CAP_BPF | 1 << CAP_PERFMON)
    assert not can_bpf(1 << CAP_BPF)
    assert not can_bpf(1 << CAP_PERFMON)
    assert not can_bpf(0)


def test_this_process_as_root_may():
    assert effective_caps() >> CAP_SYS_ADMIN & 1
    assert can_bpf()
