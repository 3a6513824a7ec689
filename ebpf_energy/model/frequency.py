"""Cycles instead of seconds: the models' side of a profile fitted per GHz-second.

``calibrate`` where cpufreq exists fits ``class_watts_per_ghz_second`` (the
profile's ``"basis": "frequency"``); the monitor, where cpufreq exists,
counts each process's cycles (CPU time x its CPU's frequency, per slice;
``ProcessUsage.cycles``, in ns x GHz). A process then costs
``sum over classes of k_class x its GHz-seconds there``. The monitor counts
cycles per process, not per class, so a process that ran on several classes
has its cycles split over them in proportion to its time there (exact for a
process on one class, or when the classes ran at the same frequency).

The other combinations are handled, and said (``basis`` and
``parts.frequency`` of the model):

* a frequency profile, but no cycles (no cpufreq here, the /proc poller, or
  a process the monitor saw no cycles for): each CPU-second costs its
  class's slope at the highest frequency it was calibrated at
  (``reference_khz``), an upper bound;
* a time profile while cycles are tracked: the cycles are not used (a slope
  per CPU-second already averages whatever frequencies ran).
"""

from typing import Optional

from ebpf_energy.model.classes import ClassWeights, class_split

SLOPES = "class_watts_per_ghz_second"
CYCLES = "cycles"
TIME = "time"


def frequency_profile(profile: Optional[dict]) -> bool:
    return bool(profile) and profile.get("basis") == "frequency" and isinstance(profile.get(SLOPES), dict)


def cycles_tracked(window) -> bool:
    return str(getattr(window, "frequency", "") or "").startswith("tracked")


def basis(profile: Optional[dict], window, topology) -> tuple:
    """(``cycles`` or ``time``, the ``parts.frequency`` sentence) for this window."""
    tracked = cycles_tracked(window) if window is not None else bool(topology is not None and topology.cpufreq)
    if frequency_profile(profile):
        if tracked:
            return CYCLES, "measured (cycles) x fitted W per GHz-second"
        why = "no cpufreq" if window is None or "no cpufreq" in str(getattr(window, "frequency", "")) \
            else "cycles not tracked"
        ref = ", ".join(f"{n} {k / 1e6:g} GHz" for n, k in (profile.get("reference_khz") or {}).items())
        return TIME, (f"not used ({why}): the profile's W per GHz-second is charged per CPU-second at the "
                      f"highest calibrated frequency ({ref})")
    if tracked and profile:
        return TIME, "not used (the profile is per CPU-second; calibrate where cpufreq exists to fit per GHz-second)"
    return TIME, None  # no profile, or no cycles: the plain time-based words


class CycleWeights(ClassWeights):
    """W per GHz-second per class, applied to cycles (``weighted_ns`` is then
    k x cycles, in the same ns-scale as k x ns); a process without cycles is
    weighed by time at the reference frequencies."""

    def __init__(self, topology, profile: dict):
        per_ghz = profile[SLOPES]
        ref = profile.get("reference_khz") or {}
        uniform = float(profile.get("watts_per_ghz_second") or (sum(per_ghz.values()) / len(per_ghz)))
        super().__init__(topology, per_ghz, "fitted", uniform)
        names_ok = all(n in per_ghz for n in self.names)
        if not names_ok:
            self.origin = "default" if topology is not None and topology.hybrid else self.origin
        self.time = ClassWeights(topology, {n: float(per_ghz[n]) * ref[n] / 1e6 for n in per_ghz if n in ref},
                                 self.origin, float(profile["watts_per_cpu_second"]))

    def describe(self, unit: str = "weight"):
        """Each class's W per GHz-second, also as its ``weight``: what the
        reports' per-class and per-thread splits weigh time by (within one
        process, cycles are split over classes by time)."""
        return [{**c, "weight": c[unit]} for c in super().describe(unit)]

    def weighted_ns(self, p) -> float:
        cycles = getattr(p, "cycles", None)
        if cycles is None or (cycles == 0 and p.cpu_ns > 0):
            return self.time.weighted_ns(p)
        split = class_split(p, len(self.names))
        if split is None or p.cpu_ns <= 0:
            return cycles * self.mean
        return sum(w * ns for w, ns in zip(self.weights, split)) * cycles / p.cpu_ns


def weights_for(profile: Optional[dict], window, topology, time_weights: ClassWeights):
    """The weights a model applies to this window, and (basis, parts.frequency sentence)."""
    b = basis(profile, window, topology)
    if b[0] == CYCLES:
        return CycleWeights(topology, profile), b
    return time_weights, b
