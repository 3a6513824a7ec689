"""A simulated RAPL powercap tree, for tests and machines without RAPL.

The tree looks like ``/sys/class/powercap``: a control-type folder
``intel-rapl`` holding ``intel-rapl:0`` and ``intel-rapl:1`` (``package-0``,
``package-1``) with sub-zones ``core`` and ``dram``, each with ``name``,
``energy_uj``, ``max_energy_range_uj`` and ``constraint_0_max_power_uw``; the
zones are also linked flat at the top, as the class folder does. A daemon
thread advances the counters every ~5 ms from the CPUs' real busy time in
``/proc/stat``::

    package J += idle_watts x dt + watts_per_cpu_second x busy CPU-seconds (+ noise)

split between the packages (CPU i belongs to package i mod packages, idle
power shared equally), and wraps them at a small ``max_energy_range_uj`` so
wraparound happens within a test. Files are replaced atomically (temp file +
rename) so a reader never sees a torn value, as with sysfs. DRAM is outside
the package, as on real hardware; core is inside it.

Per-core power: given ``cpu_class`` (a class index per CPU, as
:meth:`ebpf_energy.topology.Topology.cpu_class` makes) and ``class_watts`` (W
per CPU-second of each class), a CPU-second on CPU i costs
``class_watts[cpu_class[i]]``: a hybrid machine with a known truth, against
which the per-class models and ``calibrate`` are checked. With
``frequency_ghz`` (GHz per CPU) the slopes are W per GHz-second instead, the
dynamic power of a frequency-scaled core. With ``cpufreq_root`` (a topology
root holding a cpufreq tree, made by
:func:`~ebpf_energy.rapl.simulated_cpufreq.make_cpufreq_tree`) the frequency
is each CPU's ``scaling_cur_freq`` at every tick, and the meter plays the
cpufreq driver too: what is written to ``scaling_setspeed`` or
``scaling_min/max_freq`` becomes the CPU's frequency, so ``calibrate`` can pin
frequencies as on a real machine::

    CPU i's busy second costs  slope(class of i) x scaling_cur_freq(i) / 1 GHz

The only difference from the real tree is a ``.simulated`` marker at the top,
so profiles fitted on it are labelled ``"simulated": true``.

CLI: ``python -m ebpf_energy.rapl.simulated DIR --idle-watts 8 --k 12``
(``--class-watts P=20,E=6`` with ``--topology-root`` for a hybrid one; ``--cpufreq``
to follow, and first make, a cpufreq tree there, the slopes then per GHz-second)
runs until Ctrl-C; point any command at it with ``--powercap-root DIR``.
"""

import argparse
import math
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from typing import Callable, List, Optional

from ebpf_energy.cpustat import per_cpu_busy_seconds

CORE_SHARE = 0.85  # share of a package's dynamic power drawn by its cores
CORE_IDLE_SHARE = 0.2  # share of its idle power


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


class SimulatedPowercap:
    """A powercap tree in ``root`` (a new temporary folder when None)."""

    def __init__(self, root: Optional[str] = None, idle_watts: float = 8.0, watts_per_cpu_second: float = 12.0,
                 noise: float = 0.02, max_energy_range_uj: int = 262_143_328_850, packages: int = 2,
                 dram_idle_watts: float = 1.5, dram_watts_per_cpu_second: float = 1.0, period: float = 0.005,
                 seed: Optional[int] = None, stat_path: str = "/proc/stat",
                 cpu_source: Optional[Callable[[], List[float]]] = None,
                 cpu_class: Optional[List[int]] = None, class_watts: Optional[List[float]] = None,
                 frequency_ghz: Optional[List[float]] = None, cpufreq_root: Optional[str] = None):
        """``cpu_source``: per-CPU busy seconds (default: /proc/stat); tests on a
        shared machine pass their workers' cgroup instead. ``cpu_class`` and
        ``class_watts`` give each CPU its class's slope (else every CPU costs
        ``watts_per_cpu_second``); ``frequency_ghz`` scales each CPU's slope,
        or ``cpufreq_root``'s ``scaling_cur_freq`` does, tick by tick."""
        self._own_root = root is None
        self.root = root
        self.idle_watts = idle_watts
        self.k = watts_per_cpu_second
        self.noise = noise
        self.max_range = int(max_energy_range_uj)
        self.npackages = packages
        self.dram_idle = dram_idle_watts
        self.dram_k = dram_watts_per_cpu_second
        self.period = period
        self.stat_path = stat_path
        self.cpu_source = cpu_source or (lambda: per_cpu_busy_seconds(stat_path))
        if (cpu_class is None) != (class_watts is None):
            raise ValueError("cpu_class and class_watts go together")
        if cpu_class is not None and (not class_watts or max(cpu_class) >= len(class_watts)):
            raise ValueError("cpu_class names a class that class_watts has no slope for")
        self.cpu_class = list(cpu_class) if cpu_class is not None else None
        self.class_watts = list(class_watts) if class_watts is not None else None
        self.frequency_ghz = list(frequency_ghz) if frequency_ghz is not None else None
        self.cpufreq = None
        self.cpufreq_root = cpufreq_root
        if cpufreq_root is not None:
            from ebpf_energy.rapl.simulated_cpufreq import CpufreqDriver

            self.cpufreq = CpufreqDriver(cpufreq_root, len(self.cpu_source()))
            self.frequency_ghz = [k / 1e6 for k in self.cpufreq.step()]
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = None
        self.lock = threading.Lock()  # held while a tick writes: hold it to read truth and files consistently
        self.total_uj = {}  # zone dir -> exact accumulated uJ (the truth, for tests)
        self.ticks = 0
        # made last, once every argument is checked: a refused one leaves no folder behind;
        # tmpfs when there is one: a tick (6 atomic replaces) costs ~0.1 ms there, ~1.7 ms on a disk
        if self._own_root:
            shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
            self.root = tempfile.mkdtemp(prefix="powercap-sim-", dir=shm)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # -- the tree -------------------------------------------------------
    def zone_dir(self, package: int, sub: Optional[int] = None) -> str:
        base = os.path.join(self.root, ".devices", "intel-rapl", f"intel-rapl:{package}")
        return base if sub is None else os.path.join(base, f"intel-rapl:{package}:{sub}")

    def _make_zone(self, path: str, name: str, max_power_w: float) -> None:
        os.makedirs(path, exist_ok=True)
        _write_atomic(os.path.join(path, "name"), name)
        _write_atomic(os.path.join(path, "enabled"), "1")
        _write_atomic(os.path.join(path, "max_energy_range_uj"), str(self.max_range))
        _write_atomic(os.path.join(path, "constraint_0_name"), "long_term")
        _write_atomic(os.path.join(path, "constraint_0_max_power_uw"), str(int(max_power_w * 1e6)))
        _write_atomic(os.path.join(path, "energy_uj"), "0")
        self.total_uj[path] = 0.0
        link = os.path.join(self.root, os.path.basename(path))
        if not os.path.lexists(link):
            os.symlink(os.path.relpath(path, self.root), link)

    def _build(self):
        os.makedirs(self.root, exist_ok=True)
        ctl = os.path.join(self.root, ".devices", "intel-rapl")
        os.makedirs(ctl, exist_ok=True)
        _write_atomic(os.path.join(ctl, "enabled"), "1")
        if not os.path.lexists(os.path.join(self.root, "intel-rapl")):
            os.symlink(os.path.join(".devices", "intel-rapl"), os.path.join(self.root, "intel-rapl"))
        _write_atomic(os.path.join(self.root, ".simulated"), "ebpf-energy simulated powercap tree")
        ncpus = len(self.cpu_source())
        cpus_per_pkg = max(1, -(-ncpus // self.npackages))
        top_ghz = max([1.0] + (self.frequency_ghz or []) + (self._max_ghz() if self.cpufreq else []))
        top_k = max([self.k] + (self.class_watts or [])) * top_ghz
        pkg_max = (self.idle_watts / self.npackages + top_k * cpus_per_pkg) * 1.5
        for p in range(self.npackages):
            self._make_zone(self.zone_dir(p), f"package-{p}", pkg_max)
            self._make_zone(self.zone_dir(p, 0), "core", pkg_max)
            self._make_zone(self.zone_dir(p, 1), "dram", (self.dram_idle + self.dram_k * cpus_per_pkg) * 1.5)

    def _max_ghz(self) -> List[float]:
        from ebpf_energy.cpufreq import CpuFreq

        freq = CpuFreq(self.cpufreq_root, range(self.cpufreq.ncpus))
        return [freq.range_khz([c])[-1] / 1e6 for c in freq.policy]

    # -- the clock ------------------------------------------------------
    def slope(self, cpu: int) -> float:
        """The true joules of one busy second on ``cpu`` (at its frequency)."""
        k = self.class_watts[self.cpu_class[cpu]] if self.cpu_class is not None and cpu < len(self.cpu_class) \
            else self.k
        if self.frequency_ghz is not None and cpu < len(self.frequency_ghz) and self.frequency_ghz[cpu]:
            k *= self.frequency_ghz[cpu]  # 0: a CPU the cpufreq tree does not name
        return k

    def _advance(self, dt: float, busy_delta: List[float]) -> None:
        for p in range(self.npackages):
            mine = [(i, b) for i, b in enumerate(busy_delta) if i % self.npackages == p]
            busy = sum(b for _, b in mine)
            idle_j = self.idle_watts / self.npackages * dt
            dyn_j = sum(self.slope(i) * b for i, b in mine)
            noise = 1.0 + self._rng.gauss(0.0, self.noise) if self.noise else 1.0
            pkg_j = (idle_j + dyn_j) * noise
            core_j = (idle_j * CORE_IDLE_SHARE + dyn_j * CORE_SHARE) * noise
            dram_j = (self.dram_idle / self.npackages * dt + self.dram_k * busy) * noise
            for path, j in ((self.zone_dir(p), pkg_j), (self.zone_dir(p, 0), core_j),
                            (self.zone_dir(p, 1), dram_j)):
                self.total_uj[path] += max(j, 0.0) * 1e6
                _write_atomic(os.path.join(path, "energy_uj"), str(int(self.total_uj[path]) % self.max_range))
        self.ticks += 1

    @staticmethod
    def _raise_priority():
        """Real RAPL counters advance whatever the scheduler does; a starved tick
        thread would make the files lag the CPU load it follows. SCHED_FIFO (a
        0.1 ms tick every 5 ms) when permitted, else a lower nice, else as is."""
        tid = threading.get_native_id()
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(1))
            return
        except (OSError, AttributeError):
            pass
        try:
            os.setpriority(os.PRIO_PROCESS, tid, -10)
        except (OSError, AttributeError):
            pass

    def _run(self):
        self._raise_priority()
        last_t = time.monotonic()
        last_busy = self.cpu_source()
        while not self._stop.wait(self.period):
            now = time.monotonic()
            busy = self.cpu_source()
            with self.lock:
                if self.cpufreq is not None:  # the frequency over this tick: what the settings gave at its end
                    self.frequency_ghz = [k / 1e6 for k in self.cpufreq.step()]
                self._advance(now - last_t, [max(b - a, 0.0) for a, b in zip(last_busy, busy)])
            last_t, last_busy = now, busy

    def true_joules(self, domain: str = "package") -> float:
        """The exact joules written so far (no wrap), summed over packages."""
        sub = {"package": None, "core": 0, "dram": 1}[domain]
        return sum(self.total_uj[self.zone_dir(p, sub)] for p in range(self.npackages)) / 1e6

    def start(self) -> "SimulatedPowercap":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, daemon=True, name="powercap-sim")
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def close(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m ebpf_energy.rapl.simulated",
                                 description="Run a simulated RAPL powercap tree in DIR until Ctrl-C.")
    ap.add_argument("dir")
    ap.add_argument("--idle-watts", type=float, default=8.0)
    ap.add_argument("--k", "--watts-per-cpu-second", dest="k", type=float, default=12.0)
    ap.add_argument("--noise", type=float, default=0.02, help="relative sd of the per-tick noise")
    ap.add_argument("--max-range-uj", type=int, default=262_143_328_850)
    ap.add_argument("--packages", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--cpu-cgroup", default=None,
                    help="follow this cgroup v2's CPU time (cpu.stat) instead of /proc/stat")
    ap.add_argument("--class-watts", default=None, metavar="NAME=W,...",
                    help="W per CPU-second of each core class of --topology-root (e.g. P=20,E=6)")
    ap.add_argument("--topology-root", default=None, help="the /sys-like tree naming the core classes")
    ap.add_argument("--cpufreq", nargs="?", const="", default=None, metavar="KHZ,...",
                    help="follow the cpufreq files under --topology-root (slopes become W per GHz-second), making "
                         "them first when the tree has none: acpi-cpufreq with these frequencies (default "
                         "800000,2000000,3200000), userspace governor, every CPU at the highest")
    ap.add_argument("--keep", action="store_true", help="leave the tree in DIR when stopped (default: removed)")
    a = ap.parse_args(argv)
    for name in ("idle_watts", "k", "noise"):
        v = getattr(a, name)
        if not math.isfinite(v) or v < 0 or v > 1e6:
            ap.error(f"--{name.replace('_', '-')} must be a finite number from 0 to 1e6, got {v}")
    if a.max_range_uj < 1 or a.packages < 1 or a.packages > 64:
        ap.error("--max-range-uj must be at least 1 and --packages from 1 to 64")
    cpu_class = class_watts = None
    if a.class_watts:
        from ebpf_energy.topology import TopologyError, read_topology

        try:
            topo = read_topology(a.topology_root)
            given = dict(kv.split("=", 1) for kv in a.class_watts.split(","))
            class_watts = [float(given[n]) for n in topo.names]
        except (TopologyError, ValueError, KeyError) as e:
            ap.error(f"--class-watts needs one slope per class of the topology: {e}")
        cpu_class = topo.cpu_class(len(per_cpu_busy_seconds()))
    if a.cpufreq is not None:
        if not a.topology_root:
            ap.error("--cpufreq needs --topology-root: the tree its files live in")
        from ebpf_energy.cpufreq import CpuFreq
        from ebpf_energy.rapl.simulated_cpufreq import make_cpufreq_tree

        ncpus = len(per_cpu_busy_seconds())
        if not CpuFreq(a.topology_root, range(ncpus)).present:
            try:
                khz = sorted(int(v) for v in (a.cpufreq or "800000,2000000,3200000").split(","))
            except ValueError:
                ap.error(f"--cpufreq takes kHz values separated by commas, got {a.cpufreq!r}")
            if khz[0] <= 0:
                ap.error("--cpufreq: frequencies are positive kHz")
            make_cpufreq_tree(a.topology_root, range(ncpus), {c: khz[-1] for c in range(ncpus)}, khz[0], khz[-1],
                              khz)
    if os.path.exists(a.dir) and os.listdir(a.dir) and not os.path.exists(os.path.join(a.dir, ".simulated")):
        ap.error(f"{a.dir} exists and is not a simulated tree; give an empty or new folder")
    made_dir = not os.path.exists(a.dir)
    source = None
    if a.cpu_cgroup:
        from ebpf_energy.cpustat import cgroup_busy_seconds

        source = lambda: [cgroup_busy_seconds(a.cpu_cgroup)]  # noqa: E731
    sim = SimulatedPowercap(a.dir, a.idle_watts, a.k, a.noise, a.max_range_uj, a.packages, seed=a.seed,
                            cpu_source=source, cpu_class=cpu_class, class_watts=class_watts,
                            cpufreq_root=a.topology_root if a.cpufreq is not None else None)
    signal.signal(signal.SIGTERM, lambda *_: sim._stop.set())
    try:  # Ctrl-C may come as soon as the line below is out
        sim.start()
        unit = "GHz-second" if a.cpufreq is not None else "CPU-second"
        print(f"simulated powercap tree at {os.path.abspath(a.dir)} (idle {a.idle_watts:g} W, "
              f"{a.class_watts or f'{a.k:g}'} W per {unit}); use --powercap-root {a.dir}; Ctrl-C stops", flush=True)
        while sim._thread is not None and not sim._stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    sim.stop()
    if not a.keep:  # what this run wrote, and the folder too if it made it
        if made_dir:
            shutil.rmtree(a.dir, ignore_errors=True)
        else:
            for entry in os.listdir(a.dir):
                path = os.path.join(a.dir, entry)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) and not os.path.islink(path) \
                    else os.unlink(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
