"""Power models: turn a :class:`~ebpf_energy.usage.UsageWindow` into joules.

Every model says what it is (``describe()``), so no modelled figure is ever
shown as a measurement.
"""

from ebpf_energy.model.base import Attribution, PowerModel
from ebpf_energy.model.fixed import FixedWattsModel

__all__ = ["Attribution", "PowerModel", "FixedWattsModel"]
