"""The one interface every power model implements."""

from dataclasses import dataclass, field
from typing import Dict, Optional

from ebpf_energy.usage import UsageWindow


@dataclass
class Attribution:
    """Joules for one window: per process (by pid), idle, and the total.

    Invariant: ``total_energy_j == sum(energy_j.values()) + idle_energy_j``.
    """

    energy_j: Dict[int, float]
    idle_energy_j: float
    model: dict  # describe() of the model that produced it
    domains_j: Dict[str, float] = field(default_factory=dict)  # measured, per domain (dram, ...)
    class_energy_j: Dict[str, float] = field(default_factory=dict)  # the processes' joules per core class

    @property
    def total_energy_j(self) -> float:
        return sum(self.energy_j.values()) + self.idle_energy_j

    def thread_energy_j(self, process_cpu_ns: int, process_energy_j: float, thread_cpu_ns: int) -> float:
        """A thread's share of its process's joules, by CPU time (all models are linear in it)."""
        if process_cpu_ns <= 0:
            return 0.0
        return process_energy_j * thread_cpu_ns / process_cpu_ns


class PowerModel:
    """Base class. ``attribute`` may use ``meter_j`` (package joules measured
    over exactly the window, domain -> J) when the model is meter-driven."""

    name = "abstract"
    measured = False
    topology = None  # the core classes (ebpf_energy.topology.Topology), None: one class

    def describe(self) -> dict:
        return {"name": self.name, "measured": self.measured, "profile": None, "meter": None}

    def class_facts(self, weights, unit: str, window=None) -> dict:
        """The keys every model adds about core classes and frequency: its
        per-class weights, the frequency it knows, and which parts are
        measured, fitted, a default or unknown (``parts`` from the model)."""
        from ebpf_energy.model.classes import frequency_of

        return {"classes": weights.describe(unit), "class_weights": weights.origin,
                "frequency": frequency_of(window, self.topology)}

    def begin(self, meter) -> None:
        """Called once the run's window opens (with its meter, or None): a
        model that learns from the run starts here. Pair with :meth:`end`."""

    def end(self) -> None:
        """Called when the run is over."""

    def attribute(self, window: UsageWindow, meter_j: Optional[Dict[str, float]] = None) -> Attribution:
        raise NotImplementedError
