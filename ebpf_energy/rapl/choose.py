"""The automatic choice among the meters: powercap, then the perf power PMU.

Apart from :mod:`meter` so the base class does not import its own
implementations (each of which imports the base class).
"""

from typing import Callable, Optional

from ebpf_energy.rapl.errors import NoMeterError, RaplError
from ebpf_energy.rapl.meter import DEFAULT_PMU_ROOT, DEFAULT_POWERCAP_ROOT, METER_KINDS, Meter, stderr_warn
from ebpf_energy.rapl.perf_pmu import PerfPowerMeter
from ebpf_energy.rapl.powercap import PowercapMeter


def open_meter(
    kind: Optional[str] = "auto",
    powercap_root: Optional[str] = None,
    pmu_root: Optional[str] = None,
    warn: Optional[Callable[[str], None]] = None,
) -> Optional[Meter]:
    """Open the meter asked for, or the best one available.

    ``kind``: ``auto`` (powercap, then perf; None when neither exists),
    ``powercap``, ``perf`` (errors raised: the user asked for it) or ``none``.
    An explicit ``powercap_root`` means the user wants that tree: its errors
    are raised even under ``auto``. Under ``auto`` an unreadable counter is
    said out loud (``warn``), never skipped silently.
    """
    kind = kind or "auto"
    if kind not in METER_KINDS:
        raise RaplError(f"unknown meter {kind!r}: choose one of {', '.join(METER_KINDS)}")
    if kind == "none":
        return None
    if kind == "powercap" or (kind == "auto" and powercap_root):
        return PowercapMeter(powercap_root or DEFAULT_POWERCAP_ROOT, warn=warn)
    if kind == "perf":
        return PerfPowerMeter(pmu_root or DEFAULT_PMU_ROOT, warn=warn)
    problems = []
    for factory in (lambda: PowercapMeter(DEFAULT_POWERCAP_ROOT, warn=warn),
                    lambda: PerfPowerMeter(pmu_root or DEFAULT_PMU_ROOT, warn=warn)):
        try:
            return factory()
        except NoMeterError:
            continue
        except RaplError as e:  # present but unusable: say so, try the next
            problems.append(str(e))
    for p in problems:
        (warn or stderr_warn)(p)
    return None
