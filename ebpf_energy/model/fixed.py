"""Fixed watts per busy CPU: the simplest model, kept as the fallback.

A CPU-second costs ``watts`` joules on every core class; idle costs nothing
(we know nothing about it), so ``idle_energy_j`` is 0 and the total is the
sum of processes.
"""

from ebpf_energy.model.base import Attribution, PowerModel
from ebpf_energy.model.classes import ClassWeights, parts

DEFAULT_WATTS = 15.0


class FixedWattsModel(PowerModel):
    name = "fixed"
    measured = False

    def __init__(self, watts: float = DEFAULT_WATTS, chosen_by: str = "", topology=None):
        """``chosen_by`` says why this model runs (``"-p"``, or the default
        for want of a meter and a profile), so the report need not guess."""
        if not watts > 0:
            raise ValueError(f"power must be a positive number of watts, got {watts!r}")
        self.watts = float(watts)
        self.chosen_by = chosen_by
        self.topology = topology
        self.weights = ClassWeights(topology, None, "default", self.watts)

    def describe(self) -> dict:
        d = {**super().describe(), "watts_per_cpu": self.watts}
        if self.chosen_by:
            d["chosen_by"] = self.chosen_by
        d.update(self.class_facts(self.weights, "watts_per_cpu_second"))
        d["parts"] = parts("given" if self.chosen_by == "-p" else "default", "unknown", self.weights.origin,
                           d["frequency"])
        return d

    def attribute(self, window, meter_j=None):
        per_pid = {pid: p.cpu_ns / 1e9 * self.watts for pid, p in window.processes.items()}
        by_class = self.weights.per_class_joules(window.processes, lambda pid, p: per_pid[pid])
        return Attribution(energy_j=per_pid, idle_energy_j=0.0, model=self.describe(), class_energy_j=by_class)
