"""Errors of the energy meters, each a sentence the user can act on.

The CLI prints ``str(e)``; no meter failure should ever reach the user as a
traceback.
"""


class RaplError(Exception):
    """Base of every error a meter raises on purpose."""


class NoMeterError(RaplError):
    """No RAPL interface here (a VM, an ARM board, a kernel without the driver)."""


class MeterPermissionError(RaplError):
    """The counters exist but this user may not read them."""


class MeterFormatError(RaplError):
    """A sysfs file holds something that is not what the kernel writes there."""


CVE_HINT = (
    "Since the fix for CVE-2020-8694 (Platypus) the kernel makes RAPL energy_uj readable by root only. "
    "Run as root; or let a trusted group read it (e.g. `chgrp power /sys/class/powercap/intel-rapl:*/energy_uj "
    "&& chmod g+r /sys/class/powercap/intel-rapl:*/energy_uj`, made permanent with a udev rule or "
    "systemd-tmpfiles); or use the perf power PMU (`--meter perf`) with CAP_PERFMON or "
    "kernel.perf_event_paranoid <= 0."
)
