"""RAPL through the powercap sysfs tree (``/sys/class/powercap``).

Zones are found by *name file*, not by path: ``package-N`` (or
``package-N-die-M``) is a package, ``core``/``uncore``/``dram`` are its
sub-zones, and ``psys`` is a top-level zone of its own (laptops). AMD CPUs are
driven by the same ``intel_rapl`` driver and show the same tree (``package-N``,
``core``). ``intel-rapl-mmio`` zones duplicate the MSR package zones, so they
are used only when the MSR ones are absent.

``energy_uj`` wraps at ``max_energy_range_uj``. Each counter is accumulated on
every read; a read interval longer than the counter's wrap time at its maximum
power means a whole wrap may have gone unseen, which is said (a warning), not
hidden. A keep-alive thread reads often enough on its own when the wrap time
is short, so callers that read once a minute still get the right joules.
"""

import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from ebpf_energy.rapl.errors import CVE_HINT, MeterFormatError, MeterPermissionError, NoMeterError
from ebpf_energy.rapl.meter import Meter

ZONE_DIR_RE = re.compile(r"^(?P<ctl>[a-z][a-z0-9_-]*):\d+(?::\d+)*$")
PACKAGE_NAME_RE = re.compile(r"^package-(\d+)(?:-die-(\d+))?$")
SUBZONE_DOMAINS = {"core", "uncore", "dram", "psys"}
PREFERRED_CONTROL = "intel-rapl"
# Maximum power assumed when the zone does not say (constraint_0_max_power_uw
# absent or 0): above any shipping package's TDP, so the warning errs on the
# side of being said.
GUESS_MAX_WATTS = {"package": 400.0, "core": 400.0, "uncore": 100.0, "dram": 100.0, "psys": 500.0}


@dataclass
class Zone:
    path: str
    name: str  # contents of the name file
    domain: str  # package / core / uncore / dram / psys
    package: str  # "package-0" (the zone's own package; "psys" for psys)
    max_range_uj: Optional[int]  # None: the tree has no max_energy_range_uj (hand-made trees)
    max_power_w: float
    last_uj: Optional[int] = None
    total_uj: int = 0  # accumulated, wrap-corrected
    last_ns: Optional[int] = None
    wraps: int = 0

    @property
    def label(self) -> str:
        """``package-0`` for a package zone, ``package-0/dram`` for a sub-zone,
        ``dram`` for a domain zone that sits at the top, under no package."""
        if self.domain in ("package", "psys") or self.package == self.domain:
            return self.package
        return f"{self.package}/{self.domain}"

    @property
    def wrap_seconds(self) -> float:
        """How long the counter takes to wrap at the zone's maximum power."""
        if self.max_range_uj is None:
            return float("inf")
        return self.max_range_uj / 1e6 / self.max_power_w


def read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except PermissionError:
        raise MeterPermissionError(f"cannot read {path}: permission denied. {CVE_HINT}") from None
    except FileNotFoundError:
        raise MeterFormatError(f"{path} is missing: this does not look like a powercap RAPL zone") from None
    except OSError as e:
        raise MeterFormatError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise MeterFormatError(f"{path} holds binary data {data[:32]!r}, not the text the kernel writes") from None


def read_uint(path: str) -> int:
    text = read_text(path)
    if not re.fullmatch(r"\d{1,20}", text):
        raise MeterFormatError(f"{path} should hold a non-negative integer, found {text[:40]!r}")
    return int(text)


def _optional_uint(path: str) -> Optional[int]:
    """Optional attributes (constraints) may be absent or fail with ENODATA."""
    try:
        return read_uint(path)
    except (MeterFormatError, MeterPermissionError):
        return None


def find_zone_dirs(root: str) -> List[str]:
    """Every zone directory under ``root``, flat (class dir) or nested, each once."""
    seen, found = set(), []

    def walk(path, depth):
        try:
            entries = sorted(os.listdir(path))
        except OSError:
            return
        for entry in entries:
            sub = os.path.join(path, entry)
            if not os.path.isdir(sub):
                continue
            is_zone = bool(ZONE_DIR_RE.match(entry))
            # a control folder (``intel-rapl``) holds ``enabled`` in sysfs; copied and
            # hand-made trees (other tools' fixtures) may lack it, but hold ``<it>:N``
            is_control = depth == 0 and not is_zone and (
                os.path.exists(os.path.join(sub, "enabled")) or _holds_zones_of(sub, entry))
            if is_zone:
                real = os.path.realpath(sub)
                if real not in seen:
                    seen.add(real)
                    found.append(sub)
            if (is_zone or is_control) and depth < 3:
                walk(sub, depth + 1)

    walk(root, 0)
    return found


def _holds_zones_of(path: str, control: str) -> bool:
    try:
        return any(e.startswith(control + ":") for e in os.listdir(path))
    except OSError:
        return False


def discover(root: str) -> List[Zone]:
    """Parse every RAPL zone under ``root``; raise NoMeterError when there is none."""
    if not os.path.isdir(root):
        raise NoMeterError(f"no powercap tree at {root} (no RAPL here: a VM, a non-x86 CPU, or the "
                           "intel_rapl_msr module is not loaded)")
    dirs = find_zone_dirs(root)
    controls = {ZONE_DIR_RE.match(os.path.basename(d)).group("ctl") for d in dirs}
    if PREFERRED_CONTROL in controls:
        dirs = [d for d in dirs if ZONE_DIR_RE.match(os.path.basename(d)).group("ctl") == PREFERRED_CONTROL]
    zones = []
    for d in dirs:
        if not os.path.exists(os.path.join(d, "energy_uj")):
            continue  # a zone without an energy counter (e.g. a power-limit-only zone)
        name = read_text(os.path.join(d, "name"))
        m = PACKAGE_NAME_RE.match(name)
        if m:
            domain, package = "package", name
        elif name in SUBZONE_DOMAINS:
            domain = name
            parent = os.path.dirname(os.path.realpath(d))
            parent_name = os.path.join(parent, "name")
            package = read_text(parent_name) if name != "psys" and os.path.exists(parent_name) else name
            if name != "psys" and not PACKAGE_NAME_RE.match(package):
                indices = os.path.basename(d).split(":")[1:]
                # a flat sub-zone (``intel-rapl:0:1``) names its package by its first
                # index; a domain zone at the top (``intel-rapl:1`` named ``dram``)
                # belongs to no package: it is its own, never "package-1/dram"
                package = f"package-{indices[0]}" if len(indices) > 1 else name
        else:
            continue  # a zone this tool does not know (never guess what it measures)
        range_path = os.path.join(d, "max_energy_range_uj")
        # the kernel always writes it; a hand-made tree may not: such a counter
        # cannot be unwrapped, and a step back is read as a reset (said at start)
        max_range = read_uint(range_path) if os.path.exists(range_path) else None
        if max_range == 0:
            raise MeterFormatError(f"{os.path.join(d, 'max_energy_range_uj')} is 0: the counter cannot be used")
        max_power_uw = _optional_uint(os.path.join(d, "constraint_0_max_power_uw")) or 0
        max_w = max_power_uw / 1e6 if max_power_uw > 0 else GUESS_MAX_WATTS[domain]
        zones.append(Zone(d, name, domain, package, max_range, max_w))
    if not any(z.domain in ("package", "psys") for z in zones):
        raise NoMeterError(f"no RAPL package zone under {root}")
    return zones


KEEPALIVE_MAX_S = 60.0
# A delta above max power x gap x this factor (PL2 and turbo run above the
# zone's PL1 maximum) cannot be energy: it is a reset or a step back.
IMPLAUSIBLE_FACTOR = 4.0
IMPLAUSIBLE_SLACK_UJ = 1_000_000  # 1 J: timer slack on very short gaps


class PowercapMeter(Meter):
    """Cumulative joules per domain from powercap ``energy_uj`` counters."""

    name = "powercap"

    def __init__(self, root: str = "/sys/class/powercap", warn=None, keepalive: Optional[float] = None):
        """``keepalive``: seconds between background reads; None picks a quarter
        of the shortest wrap time, at most KEEPALIVE_MAX_S (a real package
        wraps in ~30 min at 150 W, sooner at PL2: a read only at the ends of
        an hour-long run would lose whole wraps); 0 disables."""
        super().__init__(warn)
        self.root = root
        self.zones = discover(root)
        for z in self.zones:
            if z.max_range_uj is None:
                self.warn(f"{z.path} ({z.name}) has no max_energy_range_uj (the kernel always writes one): "
                          "its wraps cannot be told from resets, so a step back is counted as a reset")
        self.simulated = os.path.exists(os.path.join(root, ".simulated"))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._sample()  # the origin: joules count from here
        shortest = min(z.wrap_seconds for z in self.zones)
        if keepalive is None:
            keepalive = min(shortest / 4, KEEPALIVE_MAX_S)
        self.keepalive_s = keepalive
        if keepalive > 0:
            self._thread = threading.Thread(target=self._keepalive, args=(keepalive,), daemon=True,
                                            name="powercap-keepalive")
            self._thread.start()

    @property
    def wraps(self) -> Dict[str, int]:
        """Wraps seen so far per zone label (``package-0``, ``package-0/core``)."""
        return {z.label: z.wraps for z in self.zones}

    def _keepalive(self, period):
        while not self._stop.wait(period):
            try:
                self._sample()
            except Exception as e:  # noqa: BLE001 - reported at the next read instead
                self._stop.set()
                self.warn(f"powercap background read stopped: {e}")

    def _sample(self):
        with self._lock:
            for z in self.zones:
                raw = read_uint(os.path.join(z.path, "energy_uj"))
                now = time.monotonic_ns()
                if z.max_range_uj is not None and raw > z.max_range_uj:
                    raise MeterFormatError(f"{z.path}/energy_uj = {raw} exceeds max_energy_range_uj = "
                                           f"{z.max_range_uj}")
                if z.last_uj is not None:
                    delta = raw - z.last_uj
                    wrapped = delta < 0 and z.max_range_uj is not None
                    if wrapped:
                        delta += z.max_range_uj
                    elif delta < 0:
                        delta = 1 << 62  # no range to unwrap with: certainly a reset, handled below
                    gap = (now - z.last_ns) / 1e9
                    most = z.max_power_w * IMPLAUSIBLE_FACTOR * gap * 1e6 + IMPLAUSIBLE_SLACK_UJ
                    if delta > most:
                        # more than the zone can draw: not a wrap but a reset (a
                        # module reload) or a step back; count only what is
                        # certain, the energy since the reset, if that fits
                        kept = raw if raw <= most else 0
                        self.warn(f"{z.path} ({z.name}) jumped from {z.last_uj} to {raw} uJ in {gap:.3f} s, "
                                  f"more than {z.max_power_w:g} W could spend: read as a counter reset, "
                                  f"{kept / 1e6:.3f} J counted for the interval")
                        delta, wrapped = kept, False
                    z.wraps += wrapped
                    if gap > z.wrap_seconds:
                        self.warn(f"{z.path} ({z.name}) was last read {gap:.1f} s ago, longer than the "
                                  f"{z.wrap_seconds:.1f} s its counter takes to wrap at {z.max_power_w:g} W: "
                                  "a whole wrap may have been missed, so this interval's energy may be too low")
                    z.total_uj += delta
                z.last_uj, z.last_ns = raw, now

    def _read_joules(self):
        self._sample()
        joules: Dict[str, float] = {}
        packages: Dict[str, Dict[str, float]] = {}
        with self._lock:
            for z in self.zones:
                j = z.total_uj / 1e6
                joules[z.domain] = joules.get(z.domain, 0.0) + j
                pk = packages.setdefault(z.package, {})
                pk[z.domain] = pk.get(z.domain, 0.0) + j
        return joules, packages

    def describe(self) -> dict:
        return {"name": self.name, "simulated": self.simulated, "root": self.root,
                "zones": [{"name": z.name, "domain": z.domain, "max_energy_range_uj": z.max_range_uj}
                          for z in self.zones]}

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._say_new_zones()

    def _say_new_zones(self):
        """Zones are found once, at the start; one that appeared since (a module
        loaded mid-run) is said at the end, not silently left out."""
        if getattr(self, "_said_new", False):
            return
        self._said_new = True
        known = {os.path.realpath(z.path) for z in self.zones}
        new = [d for d in find_zone_dirs(self.root)
               if os.path.realpath(d) not in known and os.path.exists(os.path.join(d, "energy_uj"))]
        if new:
            self.warn(f"powercap zones appeared after the start and were not counted: "
                      f"{', '.join(sorted(os.path.basename(d) for d in new))}")
