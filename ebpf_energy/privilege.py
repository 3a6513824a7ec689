"""May this process load and attach BPF programs? Decided from its effective
capabilities, never from its uid: a service running as an ordinary user with
CAP_BPF and CAP_PERFMON (ambient capabilities) can run the monitor.

CAP_BPF creates maps and loads programs; CAP_PERFMON is what tracing
programs (tp_btf/ on sched_switch) and reading kernel memory need.
CAP_SYS_ADMIN alone covers both (kernels before 5.8 had nothing finer).
"""

from ebpf_energy.loader.errors import PermissionDenied

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
NEEDED = "root (or CAP_BPF and CAP_PERFMON)"


def effective_caps() -> int:
    """The CapEff bit mask of this process (0 when /proc does not say)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def can_bpf(caps=None) -> bool:
    """True when the effective capabilities allow loading tracing programs."""
    caps = effective_caps() if caps is None else caps
    has = lambda c: bool(caps >> c & 1)  # noqa: E731
    return has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON))


def require_bpf(what: str) -> None:
    """Raise PermissionDenied naming what is missing, before any bpf() call."""
    if not can_bpf():
        raise PermissionDenied("monitor", 1, f"{what} needs {NEEDED}",
                               "run it with sudo, or grant the capabilities (see the README: least privilege)")
