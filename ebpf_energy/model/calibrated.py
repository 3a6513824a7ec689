"""The calibrated model: idle watts plus watts per CPU-second, both fitted on
this machine against RAPL (``ebpf-energy calibrate``).

A process costs ``sum over core classes of k_class x its CPU seconds there``
(one ``k`` on a homogeneous machine, or when the profile has no per-class
slopes); the machine's idle floor ``idle_watts x window`` is reported apart
as idle energy (or, with ``idle_share``, spread over the processes by their
CPU share). Still a model: ``measured`` is False. A profile fitted per
GHz-second charges cycles instead, where the monitor counts them
(:mod:`ebpf_energy.model.frequency`).
"""

from typing import Optional

from ebpf_energy.model.base import Attribution, PowerModel
from ebpf_energy.model.classes import ClassWeights, parts
from ebpf_energy.model.frequency import CYCLES, cycles_tracked, weights_for


def spread_idle(energy_j: dict, cpu_ns: dict, idle_j: float):
    """Move ``idle_j`` onto processes by CPU share; keep it as idle when nobody ran."""
    total = sum(cpu_ns.values())
    if total <= 0 or idle_j == 0:
        return energy_j, idle_j
    return {pid: e + idle_j * cpu_ns[pid] / total for pid, e in energy_j.items()}, 0.0


class CalibratedModel(PowerModel):
    name = "calibrated"
    measured = False

    def __init__(self, profile: dict, path: Optional[str] = None, idle_share: bool = False, topology=None):
        self.idle_watts = float(profile["idle_watts"])
        self.watts_per_cpu_second = float(profile["watts_per_cpu_second"])
        self.path = path or profile.get("_path")
        self.simulated = bool(profile.get("simulated", False))
        self.calibrated_with = profile.get("meter")
        self.idle_share = idle_share
        self.topology = topology
        self.weights = ClassWeights.from_profile(topology, profile, uniform=self.watts_per_cpu_second)
        self.profile = profile

    def describe(self, window=None) -> dict:
        weights, (basis, use) = weights_for(self.profile, window, self.topology, self.weights)
        unit = "watts_per_ghz_second" if basis == CYCLES else "watts_per_cpu_second"
        d = {**super().describe(), "idle_watts": self.idle_watts,
             "watts_per_cpu_second": self.watts_per_cpu_second, "idle_share": self.idle_share,
             "simulated_profile": self.simulated, "profile": self.path,
             **self.class_facts(weights, unit, window if cycles_tracked(window) else None)}
        if use:
            d["basis"] = basis
        d["parts"] = parts("fitted", "fitted", weights.origin, d["frequency"], use)
        return d

    def attribute(self, window, meter_j=None):
        weights, _ = weights_for(self.profile, window, self.topology, self.weights)
        cpu_ns = {pid: p.cpu_ns for pid, p in window.processes.items()}
        energy = {pid: weights.weighted_ns(p) / 1e9 for pid, p in window.processes.items()}
        by_class = weights.per_class_joules(window.processes, lambda pid, p: energy[pid])
        idle = self.idle_watts * max(window.duration_s, 0.0)
        if self.idle_share:
            energy, idle = spread_idle(energy, cpu_ns, idle)
        return Attribution(energy_j=energy, idle_energy_j=idle, model=self.describe(window),
                           class_energy_j=by_class)
