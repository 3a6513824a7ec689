"""RAPL through the perf ``power`` PMU (``/sys/bus/event_source/devices/power``).

The PMU publishes its perf type, a ``cpumask`` with one CPU per package (or
die), and one event per domain: ``events/energy-pkg`` holds ``event=0x02``,
``energy-pkg.scale`` the joules per count, ``energy-pkg.unit`` "Joules". A
counter opened with ``perf_event_open(type, config, pid=-1, cpu)`` for one CPU
of each package counts from zero as a 64-bit value (the kernel extends the
32-bit MSR), so there is no wraparound to correct here. The PMU does not
sample: open it with ``sample_period=0``.

Unlike powercap, this path works for non-root users with CAP_PERFMON (or a
low ``kernel.perf_event_paranoid``), which is why it is offered beside it.
"""

import errno as errno_mod
import os
import re
import struct
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from ebpf_energy.rapl.errors import MeterFormatError, MeterPermissionError, NoMeterError, RaplError
from ebpf_energy.rapl.meter import Meter

# perf event name suffix -> our domain key
EVENT_DOMAINS = {"pkg": "package", "cores": "core", "gpu": "uncore", "ram": "dram", "psys": "psys"}


@dataclass
class PmuEvent:
    name: str  # energy-pkg
    domain: str  # package
    config: int
    scale: float  # joules per count
    unit: str


@dataclass
class PowerPmu:
    type: int
    cpus: List[int]
    events: List[PmuEvent]


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("ascii", "replace").strip()
    except PermissionError:
        raise MeterPermissionError(f"cannot read {path}: permission denied") from None
    except OSError as e:
        raise MeterFormatError(f"cannot read {path}: {e.strerror or e}") from None


def parse_cpumask(text: str, path: str = "cpumask") -> List[int]:
    """``0``, ``0,36``, ``0-3,8`` -> sorted CPU numbers."""
    cpus = set()
    for part in filter(None, text.replace("\n", ",").split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not m:
            raise MeterFormatError(f"{path} should list CPUs like '0,36' or '0-3', found {text[:40]!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise MeterFormatError(f"{path}: bad CPU range {part!r}")
        cpus.update(range(lo, hi + 1))
    if not cpus:
        raise MeterFormatError(f"{path} is empty")
    return sorted(cpus)


def parse_event_config(text: str, path: str = "event") -> int:
    """``event=0x02`` (perf's format terms; the power PMU's format is ``config:0-7``)."""
    config = None
    for term in filter(None, text.split(",")):
        m = re.fullmatch(r"\s*(event|config)\s*=\s*(0x[0-9a-fA-F]+|\d+)\s*", term)
        if not m:
            raise MeterFormatError(f"{path} should look like 'event=0x02', found {text[:40]!r}")
        config = int(m.group(2), 0)
    if config is None:
        raise MeterFormatError(f"{path} is empty")
    return config


def parse_pmu(root: str) -> PowerPmu:
    """Read the PMU description from ``root`` (the ``power`` device folder)."""
    if not os.path.isdir(root):
        raise NoMeterError(f"no perf power PMU at {root} (no RAPL here: a VM, a non-x86 CPU, or a kernel "
                           "without CONFIG_PERF_EVENTS_INTEL_RAPL)")
    type_text = _read(os.path.join(root, "type"))
    if not re.fullmatch(r"\d+", type_text):
        raise MeterFormatError(f"{root}/type should be an integer, found {type_text[:40]!r}")
    cpus = parse_cpumask(_read(os.path.join(root, "cpumask")), os.path.join(root, "cpumask"))
    evdir = os.path.join(root, "events")
    try:
        names = sorted(os.listdir(evdir))
    except OSError:
        raise NoMeterError(f"{evdir} is missing: the power PMU lists no energy events") from None
    events = []
    for name in names:
        m = re.fullmatch(r"energy-([a-z]+)", name)
        if not m or m.group(1) not in EVENT_DOMAINS:
            continue
        path = os.path.join(evdir, name)
        config = parse_event_config(_read(path), path)
        scale_path = path + ".scale"
        scale_text = _read(scale_path) if os.path.exists(scale_path) else "1"
        try:
            scale = float(scale_text)
        except ValueError:
            raise MeterFormatError(f"{scale_path} should be a number, found {scale_text[:40]!r}") from None
        if not scale > 0:
            raise MeterFormatError(f"{scale_path} must be positive, found {scale_text!r}")
        unit = _read(path + ".unit") if os.path.exists(path + ".unit") else "Joules"
        if unit != "Joules":
            raise MeterFormatError(f"{path}.unit is {unit!r}; only Joules is understood")
        events.append(PmuEvent(name, EVENT_DOMAINS[m.group(1)], config, scale, unit))
    if not any(e.domain in ("package", "psys") for e in events):
        raise NoMeterError(f"the power PMU at {root} has no energy-pkg or energy-psys event")
    return PowerPmu(int(type_text), cpus, events)


def _default_opener():
    try:
        from ebpf_energy.loader.syscall import perf_event_open
    except ImportError:
        raise RaplError("perf_event_open is not available (ebpf_energy.loader.syscall is missing)") from None
    return perf_event_open


class PerfPowerMeter(Meter):
    """Cumulative joules per domain from perf power-PMU counters."""

    name = "perf"

    def __init__(self, root: str = "/sys/bus/event_source/devices/power", warn=None,
                 opener: Optional[Callable] = None):
        super().__init__(warn)
        self.pmu = parse_pmu(root)
        opener = opener or _default_opener()
        self._fds = []  # (fd, package label, event)
        try:
            for i, cpu in enumerate(self.pmu.cpus):
                for ev in self.pmu.events:
                    if ev.domain == "psys" and i > 0:
                        continue  # psys is one counter for the whole platform
                    label = "psys" if ev.domain == "psys" else f"package-{i}"
                    self._fds.append((self._open(opener, ev, cpu), label, ev))
        except BaseException:
            self.close()
            raise

    def _open(self, opener, ev, cpu):
        try:
            return opener(self.pmu.type, ev.config, pid=-1, cpu=cpu, sample_period=0, wakeup_events=0)
        except OSError as e:
            code = e.errno
        except RaplError:
            raise
        except Exception as e:  # the loader's SyscallError carries .errno
            code = getattr(e, "errno", None)
            if code is None:
                raise
        if code in (errno_mod.EACCES, errno_mod.EPERM):
            raise MeterPermissionError(
                f"perf_event_open({ev.name}, cpu {cpu}) was refused: reading the power PMU needs root, "
                "CAP_PERFMON, or kernel.perf_event_paranoid <= 0") from None
        if code in (errno_mod.ENOENT, errno_mod.ENODEV, errno_mod.EOPNOTSUPP, errno_mod.EINVAL):
            raise NoMeterError(f"perf_event_open({ev.name}, cpu {cpu}) failed: {os.strerror(code)}; "
                               "the power PMU is not usable here") from None
        raise RaplError(f"perf_event_open({ev.name}, cpu {cpu}) failed: {os.strerror(code or 0)}") from None

    def _read_joules(self):
        joules: Dict[str, float] = {}
        packages: Dict[str, Dict[str, float]] = {}
        for fd, label, ev in self._fds:
            data = os.read(fd, 8)
            if len(data) != 8:
                raise RaplError(f"short read ({len(data)} bytes) from the {ev.name} counter")
            j = struct.unpack("=Q", data)[0] * ev.scale
            joules[ev.domain] = joules.get(ev.domain, 0.0) + j
            pk = packages.setdefault(label, {})
            pk[ev.domain] = pk.get(ev.domain, 0.0) + j
        return joules, packages

    def describe(self) -> dict:
        return {"name": self.name, "simulated": False, "type": self.pmu.type, "cpus": self.pmu.cpus,
                "events": [e.name for e in self.pmu.events]}

    def close(self):
        for fd, _, _ in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
