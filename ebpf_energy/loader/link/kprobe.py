"""``kprobe/``, ``kretprobe/``, ``ksyscall/``, ``kprobe.multi/``: kernel probes.

They need the kernel's kprobe machinery (CONFIG_KPROBES): the ``kprobe``
perf PMU for single probes, fprobe for ``kprobe.multi``. Where the PMU is
missing no loader can attach them, and the error says so in one sentence.
"""

import os

from ..errors import AttachError

PMU = "/sys/bus/event_source/devices/kprobe"
HEADS = ("kprobe", "kretprobe", "ksyscall", "kretsyscall", "kprobe.multi", "kretprobe.multi",
         "kprobe.session", "kprobe.s", "kretprobe.s")


def has_kprobes() -> bool:
    return os.path.isdir(PMU)


def attach_section(prog_fd, section):
    """Kernel probes cannot be attached by this loader yet; on a kernel
    without kprobes, none can, and that is what the error says."""
    if not has_kprobes():
        raise AttachError(f"this kernel has no kprobes (no kprobe PMU: CONFIG_KPROBES is off), so no loader can "
                          f"attach {section}; use a tracepoint (tp/, tp_btf/) instead")
    raise AttachError(f"kernel probes ({section}) are not attached by this loader yet; "
                      "use a tracepoint (tp/, tp_btf/) instead")
