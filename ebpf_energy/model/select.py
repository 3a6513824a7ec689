"""Which power model produces the joules: one rule for every command.

Precedence: ``-p WATTS`` -> fixed; else a meter present ->
RAPL-split (using a usable profile for its idle part); else a saved profile
-> calibrated; else fixed at 15 W. A saved profile fitted on the simulated
meter is never picked automatically, and one from another CPU model or core
count is ignored; both are said through ``warn``. ``--profile FILE`` picks
that file even then, and says so.
"""

import os
from typing import Callable, Optional, Tuple

from ebpf_energy.calibration import profile as profiles
from ebpf_energy.model.base import PowerModel
from ebpf_energy.model.calibrated import CalibratedModel
from ebpf_energy.model.fixed import DEFAULT_WATTS, FixedWattsModel
from ebpf_energy.model.rapl_split import RaplSplitModel


def _quiet(message: str) -> None:
    pass


def _usable_profile(profile_path, no_profile, warn, profile_dir=None, topology=None) -> Optional[dict]:
    """The profile to use, or None. Explicit paths raise ProfileError when broken."""
    if no_profile:
        return None
    if profile_path:
        prof = profiles.load(profile_path)
        if prof.get("simulated"):
            warn(f"using {prof['_path']} as asked, but it was fitted on a simulated meter: "
                 "its watts describe no real machine")
        ok, why = profiles.matches_host(prof, topology=topology)
        if not ok:
            warn(f"using {prof['_path']} as asked, but {why}")
        return prof
    path = os.path.join(profile_dir, "profile.json") if profile_dir else profiles.default_path()
    if not os.path.exists(path):
        return None
    try:
        prof = profiles.load(path)
    except profiles.ProfileError as e:
        warn(f"ignoring the saved profile: {e}")
        return None
    if prof.get("simulated"):
        warn(f"ignoring the saved profile {path}: it was fitted on a simulated meter "
             "(pass --profile to use it anyway)")
        return None
    ok, why = profiles.matches_host(prof, topology=topology)
    if not ok:
        warn(f"ignoring the saved profile {path}: {why} (recalibrate with `ebpf-energy calibrate`)")
        return None
    return prof


def choose_model(watts: Optional[float] = None, profile_path: Optional[str] = None, no_profile: bool = False,
                 powercap_root: Optional[str] = None, meter_kind: Optional[str] = None,
                 idle_share: bool = False, warn: Optional[Callable[[str], None]] = None,
                 profile_dir: Optional[str] = None, topology=None) -> Tuple[PowerModel, object]:
    """Return ``(model, meter)``; ``meter`` is None unless the model is RAPL-split,
    and then the caller reads it at each window bound and closes it at the end.

    ``topology``: the core classes (default: read from /sys, or the tree
    ``EBPF_ENERGY_TOPOLOGY_ROOT`` names). Raises ``RaplError`` when an
    explicitly asked meter cannot be used, ``ProfileError`` when an
    explicitly named profile cannot be read, and ``TopologyError`` when the
    topology tree is unreadable.
    """
    warn = warn or _quiet
    if topology is None:
        from ebpf_energy.topology import read_topology

        topology = read_topology()
    if watts is not None:
        if idle_share:
            warn("--idle-share does nothing with -p: the fixed model charges idle nothing")
        if meter_kind not in (None, "auto"):
            warn(f"--meter {meter_kind} does nothing with -p: the fixed model reads no meter")
        return FixedWattsModel(watts, chosen_by="-p", topology=topology), None
    from ebpf_energy.rapl.choose import open_meter

    meter = open_meter(meter_kind or "auto", powercap_root=powercap_root, warn=warn)
    try:
        prof = _usable_profile(profile_path, no_profile, warn, profile_dir, topology)
    except BaseException:
        if meter is not None:
            meter.close()
        raise
    ignored = []
    if meter is None and prof is None and not no_profile:
        ignored = [True] if _saved_profile_exists(profile_dir) else []
    if meter is not None:
        if getattr(meter, "simulated", False):
            warn(f"the meter at {getattr(meter, 'root', meter.name)} is simulated: its joules are not measured")
        return RaplSplitModel(meter.name, prof, idle_share, getattr(meter, "simulated", False), topology), meter
    if prof is not None:
        return CalibratedModel(prof, idle_share=idle_share, topology=topology), None
    if (meter_kind or "auto") == "auto" and not no_profile:
        what = ("no RAPL meter, and the saved profile is not used (see above)" if ignored
                else "no RAPL meter and no calibration profile here")
        warn(f"{what}: energy is modelled at a fixed {DEFAULT_WATTS:g} W "
             "per busy CPU (use -p to set it, or calibrate on a machine with RAPL)")
    if idle_share:
        warn("--idle-share does nothing with the fixed model: it charges idle nothing")
    return FixedWattsModel(DEFAULT_WATTS, chosen_by="no meter or profile", topology=topology), None


def _saved_profile_exists(profile_dir=None) -> bool:
    path = os.path.join(profile_dir, "profile.json") if profile_dir else profiles.default_path()
    return os.path.exists(path)
