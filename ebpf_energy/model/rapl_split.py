"""The RAPL-split model: measured package joules, split among processes.

Per window, the meter's package energy (all packages summed) is the total;
nothing is modelled about the total itself, so ``measured`` is True and
processes + idle equal the meter exactly.

How the measured joules are divided:

* With a calibration profile: the idle part is ``idle_watts x window`` (capped
  at the measurement), the rest is dynamic and goes to processes in
  proportion to their CPU time.
* Without one there is no way to tell idle from dynamic power, so the rule is
  the plainest defensible one: every CPU-nanosecond, busy or idle, gets the
  same share of the measured energy, and idle CPU time is its own consumer
  ("idle"). This charges idle too much (an idle CPU draws less than a busy
  one) and processes too little; calibrating fixes it, and the report says
  which rule was used (``"idle_rule"``).

``idle_share`` spreads the idle part over processes by CPU share, so the
processes account for the whole measurement. Other domains (dram, psys, ...)
are reported apart in ``domains_j``, never added to the package total.
"""

from typing import Optional

from ebpf_energy.model.base import Attribution, PowerModel
from ebpf_energy.model.calibrated import spread_idle


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
                 idle_share: bool = False, simulated_meter: bool = False):
        self.meter_name = meter_name
        self.profile = profile
        self.idle_share = idle_share
        self.simulated_meter = simulated_meter

    def describe(self) -> dict:
        d = {**super().describe(), "meter": self.meter_name, "idle_share": self.idle_share,
             "simulated": self.simulated_meter,
             "idle_rule": "profile" if self.profile else "cpu_time_share"}
        if self.profile:
            d.update(profile=self.profile.get("_path"), idle_watts=float(self.profile["idle_watts"]))
        return d

    def attribute(self, window, meter_j=None):
        if meter_j is None:
            raise ValueError("the RAPL-split model needs the meter's joules over the window")
        total = max(package_joules(meter_j), 0.0)
        cpu_ns = {pid: p.cpu_ns for pid, p in window.processes.items()}
        busy = sum(cpu_ns.values())
        if self.profile:
            idle = min(float(self.profile["idle_watts"]) * max(window.duration_s, 0.0), total)
            if busy <= 0:
                idle = total
            dynamic = total - idle
            energy = {pid: dynamic * ns / busy if busy > 0 else 0.0 for pid, ns in cpu_ns.items()}
        else:
            denom = busy + max(window.idle_ns, 0)
            if denom <= 0:
                energy, idle = {pid: 0.0 for pid in cpu_ns}, total
            else:
                energy = {pid: total * ns / denom for pid, ns in cpu_ns.items()}
                idle = total - sum(energy.values())
        if self.idle_share:
            energy, idle = spread_idle(energy, cpu_ns, idle)
        return Attribution(energy_j=energy, idle_energy_j=idle, model=self.describe(),
                           domains_j={k: float(v) for k, v in meter_j.items()})
