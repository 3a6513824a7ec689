"""CPU frequency from cpufreq sysfs: read it, pick levels, pin it, put it back.

``calibrate`` fits watts per GHz-second by running each core class at a few
fixed frequencies. A real machine allows two ways to fix one (both under
``devices/system/cpu/cpuN/cpufreq``, usually a link to ``cpufreq/policyN``):

* the ``userspace`` governor (acpi-cpufreq, cppc, most Arm drivers): write
  ``scaling_governor`` = ``userspace``, then the kHz to ``scaling_setspeed``;
* otherwise (intel_pstate, amd-pstate active: no userspace governor) clamp
  the range: ``scaling_max_freq`` = ``scaling_min_freq`` = the kHz, written
  in the order the kernel accepts (never min above max).

:class:`FrequencyPin` remembers the first value of every file it writes and
writes them back, last first, when it is closed: on a normal exit, an error,
Ctrl-C or SIGTERM (the caller turns those into exceptions). A SIGKILL leaves
the last pinned frequency in place; ``calibrate --help`` says so.

The tree is read from ``root`` (``/sys`` or ``--topology-root``), so the
tests and the simulated meter use a fake tree with the real files' layout.
"""

import os
import signal
from typing import Dict, List, Optional, Sequence

CPU_DIR = os.path.join("devices", "system", "cpu")


class CpuFreqError(Exception):
    """cpufreq is missing, unreadable, or cannot be written (one sentence)."""


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _read_khz(path: str) -> Optional[int]:
    text = _read(path)
    try:
        return int(text) if text else None
    except ValueError:
        return None


class CpuFreq:
    """The cpufreq policies of the CPUs a tree names, one folder per policy."""

    def __init__(self, root: str, cpus: Sequence[int]):
        self.root = root
        self.cpu_dir = os.path.join(root, CPU_DIR)
        self.policy: Dict[int, str] = {}  # cpu -> its policy folder (resolved: CPUs may share one)
        for cpu in cpus:
            d = os.path.join(self.cpu_dir, f"cpu{cpu}", "cpufreq")
            if os.path.isdir(d):
                self.policy[cpu] = os.path.realpath(d)

    @property
    def present(self) -> bool:
        return bool(self.policy)

    def khz(self, cpu: int) -> Optional[int]:
        d = self.policy.get(cpu)
        return _read_khz(os.path.join(d, "scaling_cur_freq")) if d else None

    def mean_khz(self, cpus: Sequence[int]) -> float:
        """The class's frequency now: the mean ``scaling_cur_freq`` of its CPUs (0 when none has one)."""
        vals = [k for k in (self.khz(c) for c in cpus) if k]
        return sum(vals) / len(vals) if vals else 0.0

    def range_khz(self, cpus: Sequence[int]) -> List[int]:
        """The frequencies every one of ``cpus`` can run at: the common
        ``scaling_available_frequencies`` when the driver lists them, else
        [lowest, highest] of the common ``cpuinfo_min_freq`` .. ``cpuinfo_max_freq``."""
        return self._span(cpus)[0]

    def _span(self, cpus: Sequence[int]):
        """(:meth:`range_khz`, whether the driver listed them)."""
        lists, lo, hi = [], 0, None
        for d in {self.policy[c] for c in cpus if c in self.policy}:
            avail = _read(os.path.join(d, "scaling_available_frequencies"))
            if avail:
                lists.append({int(v) for v in avail.split() if v.isdigit()})
            mn, mx = _read_khz(os.path.join(d, "cpuinfo_min_freq")), _read_khz(os.path.join(d, "cpuinfo_max_freq"))
            if mn is None or mx is None:
                raise CpuFreqError(f"{d} has no cpuinfo_min_freq/cpuinfo_max_freq to say its range")
            lo, hi = max(lo, mn), mx if hi is None else min(hi, mx)
        if hi is None:
            raise CpuFreqError(f"CPUs {list(cpus)} have no cpufreq")
        if lists:
            common = sorted(set.intersection(*lists))
            if common:
                return common, True
        if hi < lo:
            raise CpuFreqError(f"CPUs {list(cpus)} share no frequency range")
        return ([lo, hi] if hi > lo else [lo]), False

    def levels(self, cpus: Sequence[int], n: int) -> List[int]:
        """``n`` frequencies (kHz) spread evenly from the lowest to the highest
        the CPUs allow: listed ones where the driver lists them, else evenly
        spaced in the range (rounded to 1 MHz)."""
        span, listed = self._span(cpus)
        if n <= 1:
            return [span[-1]]
        if listed or len(span) == 1:
            picks = [span[round(i * (len(span) - 1) / (n - 1))] for i in range(n)]
        else:
            lo, hi = span
            picks = [int(round((lo + (hi - lo) * i / (n - 1)) / 1000.0) * 1000) for i in range(n)]
            picks[0], picks[-1] = lo, hi
        return sorted(set(picks))


class FrequencyPin:
    """Pins policies to one frequency; every file it changed goes back on :meth:`restore`.

    Use as a context manager. :meth:`check` writes back the current value of
    each file a pin would write, so a tree that cannot be written is refused
    before any load starts."""

    def __init__(self, freq: CpuFreq):
        self.freq = freq
        self._saved: List[tuple] = []  # (path, original text), in first-write order
        self._seen = set()

    def _method(self, d: str) -> str:
        govs = (_read(os.path.join(d, "scaling_available_governors")) or "").split()
        return "userspace" if "userspace" in govs else "range"

    def _files(self, d: str) -> List[str]:
        if self._method(d) == "userspace":
            return ["scaling_governor", "scaling_setspeed"]
        return ["scaling_min_freq", "scaling_max_freq"]

    def _write(self, d: str, name: str, value) -> None:
        path = os.path.join(d, name)
        if path not in self._seen:
            original = _read(path)
            if original is None:
                raise CpuFreqError(f"cannot read {path}")
            self._seen.add(path)
            self._saved.append((path, original))
        _write_or_refuse(path, value)

    def check(self, cpus: Sequence[int]) -> None:
        """Write each file a pin needs with the value it holds (a no-op for the kernel)."""
        for d in sorted({self.freq.policy[c] for c in cpus if c in self.freq.policy}):
            for name in self._files(d):
                if name == "scaling_setspeed":
                    continue  # "<unsupported>" until the governor is userspace; the governor write tests the folder
                path = os.path.join(d, name)
                _write_or_refuse(path, _read(path))

    def _set_range(self, d: str, lo: int, hi: int) -> None:
        """Write min and max in the order the kernel accepts: never min above max."""
        cur_min = _read_khz(os.path.join(d, "scaling_min_freq")) or 0
        if hi >= cur_min:
            self._write(d, "scaling_max_freq", hi)
            self._write(d, "scaling_min_freq", lo)
        else:
            self._write(d, "scaling_min_freq", lo)
            self._write(d, "scaling_max_freq", hi)

    def pin(self, cpus: Sequence[int], khz: int) -> None:
        for d in sorted({self.freq.policy[c] for c in cpus if c in self.freq.policy}):
            if self._method(d) == "userspace":
                if _read(os.path.join(d, "scaling_governor")) != "userspace":
                    self._write(d, "scaling_governor", "userspace")
                self._write(d, "scaling_setspeed", khz)
            else:
                self._set_range(d, khz, khz)

    def restore(self) -> None:
        """Every changed file back to its first value, last written first; a
        min/max pair in the order the kernel accepts. Errors are collected and
        raised once all files were tried."""
        saved, self._saved, self._seen = self._saved, [], set()
        failed = []
        ranges: Dict[str, Dict[str, str]] = {}
        for path, original in reversed(saved):
            d, name = os.path.split(path)
            if name in ("scaling_min_freq", "scaling_max_freq"):
                ranges.setdefault(d, {})[name] = original
                continue
            if name == "scaling_setspeed" and not original.isdigit():
                continue  # "<unsupported>": the governor was not userspace; restoring it is enough
            failed += _write_back(path, original)
        for d, r in ranges.items():
            cur_min = _read_khz(os.path.join(d, "scaling_min_freq")) or 0
            hi = r.get("scaling_max_freq")
            order = ["scaling_max_freq", "scaling_min_freq"] if hi is None or int(hi) >= cur_min \
                else ["scaling_min_freq", "scaling_max_freq"]
            for name in order:
                if name in r:
                    failed += _write_back(os.path.join(d, name), r[name])
        if failed:
            raise CpuFreqError(f"could not restore {', '.join(failed)}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()


def _store(path: str, value) -> None:
    """One write of a value, with SIGINT and SIGTERM held off: a signal
    between the open (which truncates a regular file, as in a test tree) and
    the write would leave the file empty, and its handler restores files."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        with open(path, "w") as f:
            f.write(f"{value}\n")
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _write_or_refuse(path: str, value) -> None:
    try:
        _store(path, value)
    except OSError as e:
        raise CpuFreqError(f"cannot write {path} ({e.strerror or e}): pinning the CPU frequency needs root "
                           "and a writable cpufreq (or --frequencies 0 for a time-based fit)") from None


def _write_back(path: str, value: str) -> List[str]:
    try:
        _store(path, value)
        return []
    except OSError:
        return [path]
