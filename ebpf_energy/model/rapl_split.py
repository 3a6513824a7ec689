"""The RAPL-split model: measured package joules, split among processes.

Per window, the meter's package energy (all packages summed) is the total;
nothing is modelled about the total itself, so ``measured`` is True and
processes + idle equal the meter exactly.

How the measured joules are divided:

* With a calibration profile: the idle part is ``idle_watts x window`` (capped
  at the measurement), the rest is dynamic and goes to processes in
  proportion to their CPU time.
* Without one, the idle power is fitted from the meter's own readings over
  the run (:mod:`ebpf_energy.model.idle_estimate`, started by :meth:`begin`)
  and used the same way, when the load varied enough to separate the two.
* Failing that there is no way to tell idle from dynamic power, so the rule
  is the plainest defensible one: every CPU-nanosecond, busy or idle, gets
  the same share of the measured energy, and idle CPU time is its own
  consumer ("idle"). This charges idle too much and processes too little;
  calibrating fixes it. The report always says which rule was used
  (``"idle_rule"``: ``profile``, ``fitted_from_run`` or ``cpu_time_share``).

On a machine with several core classes (P/E, big.LITTLE) each process's CPU
time is weighted by its class's fitted watts per CPU-second (the profile's
``class_watts``), so a CPU-second on a P core takes a larger share of the
dynamic energy than one on an E core; without per-class slopes every class
weighs the same (``"class_weights": "default"``). With a profile fitted per
GHz-second and cycles counted, the shares weigh cycles by each class's W per
GHz-second instead (:mod:`ebpf_energy.model.frequency`). The per-process sum
still equals the meter: only the shares change.

``idle_share`` spreads the idle part over processes by CPU share, so the
processes account for the whole measurement. Other domains (dram, psys, ...)
are reported apart in ``domains_j``, never added to the package total.
"""

from typing import Optional

from ebpf_energy.model.base import Attribution, PowerModel
from ebpf_energy.model.calibrated import spread_idle
from ebpf_energy.model.classes import ClassWeights, parts
from ebpf_energy.model.frequency import CYCLES, cycles_tracked, weights_for


def package_joules(meter_j: dict) -> float:
    """The total the model splits: package, or psys on a platform without package zones."""
    for key in ("package", "psys"):
        if key in meter_j:
            return float(meter_j[key])
    raise ValueError(f"the meter reported no package energy (domains: {sorted(meter_j)})")


class RaplSplitModel(PowerModel):
    name = "rapl"
    measured = True

    def __init__(self, meter_name: Optional[str] = None, profile: Optional[dict] = None,
                 idle_share: bool = False, simulated_meter: bool = False, topology=None):
        self.meter_name = meter_name
        self.profile = profile
        self.idle_share = idle_share
        self.simulated_meter = simulated_meter
        self.estimator = None
        self.topology = topology
        self.weights = ClassWeights.from_profile(topology, profile)

    # -- the run's own idle estimate -------------------------------------------
    def begin(self, meter) -> None:
        """Start fitting idle power from ``meter`` (only without a profile)."""
        if self.profile is None and self.estimator is None and meter is not None:
            from ebpf_energy.model.idle_estimate import IdlePowerEstimator

            self.estimator = IdlePowerEstimator(meter).start()

    def end(self) -> None:
        if self.estimator is not None:
            self.estimator.stop()

    def _idle_watts(self):
        """(watts, rule, fit or None) for the idle part."""
        if self.profile:
            return float(self.profile["idle_watts"]), "profile", None
        fit = self.estimator.estimate() if self.estimator is not None else None
        if fit is not None:
            return fit["idle_watts"], "fitted_from_run", fit
        return None, "cpu_time_share", None

    def describe(self, idle=None, window=None) -> dict:
        watts, rule, fit = idle or self._idle_watts()
        weights, (basis, use) = weights_for(self.profile, window, self.topology, self.weights)
        d = {**super().describe(), "meter": self.meter_name, "idle_share": self.idle_share,
             "simulated": self.simulated_meter, "idle_rule": rule}
        if self.profile:
            d["profile"] = self.profile.get("_path")
        if watts is not None:
            d["idle_watts"] = round(watts, 3)
        if fit is not None:
            d["idle_fit"] = {"samples": fit["samples"], "r2": round(fit["r2"], 4)}
        d.update(self.class_facts(weights, "watts_per_ghz_second" if basis == CYCLES else "weight",
                                  window if cycles_tracked(window) else None))
        if use:
            d["basis"] = basis
        d["parts"] = parts("measured", {"profile": "fitted", "fitted_from_run": "fitted"}.get(rule, "unknown"),
                           weights.origin, d["frequency"], use)
        return d

    def attribute(self, window, meter_j=None):
        if meter_j is None:
            raise ValueError("the RAPL-split model needs the meter's joules over the window")
        total = max(package_joules(meter_j), 0.0)
        cpu_ns = {pid: p.cpu_ns for pid, p in window.processes.items()}
        # each process's share weighs its time (or cycles) on each core class by that class's slope
        weights, _ = weights_for(self.profile, window, self.topology, self.weights)
        weighted = {pid: weights.weighted_ns(p) for pid, p in window.processes.items()}
        busy = sum(weighted.values())
        rule = self._idle_watts()
        idle_watts = rule[0]
        if idle_watts is not None:
            idle = min(idle_watts * max(window.duration_s, 0.0), total)
            if busy <= 0:
                idle = total
            dynamic = total - idle
            energy = {pid: dynamic * ns / busy if busy > 0 else 0.0 for pid, ns in weighted.items()}
        else:
            denom = busy + max(window.idle_ns, 0) * weights.mean
            if denom <= 0:
                energy, idle = {pid: 0.0 for pid in cpu_ns}, total
            else:
                energy = {pid: total * ns / denom for pid, ns in weighted.items()}
                idle = total - sum(energy.values())
        by_class = weights.per_class_joules(window.processes, lambda pid, p: energy[pid])
        if self.idle_share:
            energy, idle = spread_idle(energy, cpu_ns, idle)
        return Attribution(energy_j=energy, idle_energy_j=idle, model=self.describe(rule, window),
                           domains_j={k: float(v) for k, v in meter_j.items()}, class_energy_j=by_class)
