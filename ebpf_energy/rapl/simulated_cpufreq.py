"""A fake cpufreq tree and the driver that runs it, for the simulated meter.

The files are those of a real ``/sys`` (under a ``--topology-root`` tree):
``devices/system/cpu/cpufreq/policyN/`` holding ``affected_cpus``,
``related_cpus``, ``cpuinfo_min_freq``, ``cpuinfo_max_freq``,
``scaling_driver``, ``scaling_available_governors``, ``scaling_governor``,
``scaling_min_freq``, ``scaling_max_freq``, ``scaling_setspeed`` and
``scaling_cur_freq`` (kHz), plus ``scaling_available_frequencies`` for a
driver that lists them (acpi-cpufreq), and ``cpuN/cpufreq`` a link to its
policy, as the kernel lays them out. ``driver="intel_pstate"`` makes the
other kind: no frequency list, no userspace governor (pin with min = max).

What the kernel's cpufreq core does when these files are written, the
:class:`CpufreqDriver` does on every tick of the simulated meter: it reads
the governor, ``scaling_setspeed`` and the min/max range, and writes the
frequency they give to ``scaling_cur_freq`` (userspace: the set speed;
powersave: the minimum; any other governor: the maximum, as under load;
clamped to min/max and to a listed frequency). A value caught mid-write
(empty) leaves the frequency as it was, as the kernel never shows one.
"""

import os
from typing import Dict, List, Optional, Sequence

from ebpf_energy.cpufreq import CPU_DIR


def _put(path: str, text, mode: int = 0o644) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def make_cpufreq_tree(root: str, cpus: Sequence[int], khz: Dict[int, int], min_khz: int = 800_000,
                      max_khz: int = 3_200_000, available: Optional[Sequence[int]] = None,
                      driver: str = "acpi-cpufreq") -> str:
    """One policy per CPU under ``root`` (a topology root), each starting at
    ``khz[cpu]``: with the userspace governor set to it (acpi-cpufreq), or
    the performance governor under a maximum of it (intel_pstate). Returns ``root``."""
    if driver not in ("acpi-cpufreq", "intel_pstate"):
        raise ValueError("driver: acpi-cpufreq or intel_pstate")
    cpu_dir = os.path.join(root, CPU_DIR)
    if driver == "acpi-cpufreq" and available is None:
        available = [min_khz, (min_khz + max_khz) // 2, max_khz]
    for cpu in cpus:
        start = khz[cpu]
        pol = os.path.join(cpu_dir, "cpufreq", f"policy{cpu}")
        os.makedirs(pol, exist_ok=True)
        files = {"affected_cpus": cpu, "related_cpus": cpu, "cpuinfo_min_freq": min_khz,
                 "cpuinfo_max_freq": max_khz, "cpuinfo_transition_latency": 10000, "scaling_driver": driver,
                 "scaling_cur_freq": start}
        if driver == "acpi-cpufreq":
            files.update({"scaling_available_frequencies": " ".join(str(k) for k in sorted(available, reverse=True)),
                          "scaling_available_governors": "conservative ondemand userspace powersave performance "
                                                         "schedutil",
                          "scaling_governor": "userspace", "scaling_setspeed": start,
                          "scaling_min_freq": min_khz, "scaling_max_freq": max_khz})
        else:
            # performance governor with the maximum capped at the start frequency: it runs there
            files.update({"scaling_available_governors": "performance powersave", "scaling_governor": "performance",
                          "scaling_setspeed": "<unsupported>", "scaling_min_freq": min_khz, "scaling_max_freq": start})
        for name, value in files.items():
            writable = name in ("scaling_governor", "scaling_setspeed", "scaling_min_freq", "scaling_max_freq")
            _put(os.path.join(pol, name), value, 0o644 if writable else 0o444)
        link = os.path.join(cpu_dir, f"cpu{cpu}", "cpufreq")
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(os.path.join("..", "cpufreq", f"policy{cpu}"), link)
    return root


class CpufreqDriver:
    """Plays the kernel for a fake tree: turns the written settings into ``scaling_cur_freq``."""

    def __init__(self, root: str, ncpus: int):
        self.cpu_dir = os.path.join(root, CPU_DIR)
        self.ncpus = ncpus
        self.current: List[int] = [0] * ncpus
        for cpu in range(ncpus):
            self.current[cpu] = _int(os.path.join(self._dir(cpu), "scaling_cur_freq")) or 0

    def _dir(self, cpu: int) -> str:
        return os.path.join(self.cpu_dir, f"cpu{cpu}", "cpufreq")

    def _target(self, d: str, cur: int) -> int:
        try:
            with open(os.path.join(d, "scaling_governor")) as f:
                gov = f.read().strip()
        except OSError:
            return cur
        lo, hi = _int(os.path.join(d, "scaling_min_freq")), _int(os.path.join(d, "scaling_max_freq"))
        if lo is None or hi is None or not gov:
            return cur  # caught mid-write
        if gov == "userspace":
            want = _int(os.path.join(d, "scaling_setspeed"))
            if want is None:
                return cur
        elif gov == "powersave":
            want = lo
        else:
            want = hi
        want = max(lo, min(want, hi))
        try:
            with open(os.path.join(d, "scaling_available_frequencies")) as f:
                listed = sorted(int(v) for v in f.read().split())
            # the highest listed frequency not above the request (the lowest if none is)
            want = max([k for k in listed if k <= want] or listed[:1])
        except (OSError, ValueError):
            pass
        return want

    def step(self) -> List[int]:
        """Apply the settings; each CPU's kHz now (0 for a CPU without cpufreq)."""
        for cpu in range(self.ncpus):
            d = self._dir(cpu)
            if not os.path.isdir(d):
                continue
            khz = self._target(d, self.current[cpu])
            if khz != self.current[cpu]:
                self.current[cpu] = khz
                _put(os.path.join(d, "scaling_cur_freq"), khz, 0o444)
        return list(self.current)
