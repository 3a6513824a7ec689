"""Run the calibration: levels x rounds of load, sampled, then fitted.

Every (round, level) step sets the load, lets it settle, then takes many short
samples of (meter joules per domain, CPU busy seconds from /proc/stat). The
order of levels is shuffled in each round so a slow drift (temperature, a
neighbour's load) does not line up with the load and bias the slope.
"""

import datetime
import random
import time
from typing import Callable, List, Optional, Sequence

from ebpf_energy.calibration import profile as profiles
from ebpf_energy.calibration.fit import FitError, linear_fit, multi_fit, residuals_by_level
from ebpf_energy.cpustat import busy_seconds
from ebpf_energy.calibration.workload import Workload

MIN_R2 = 0.9

CORE_CLOCK_DOMAINS = ("package", "core", "psys")  # RAPL domains whose power follows the cores' clock


class NotCredible(Exception):
    """The fit exists but must not be trusted; ``fit`` holds what was found."""

    def __init__(self, reason: str, fit: Optional[dict] = None):
        super().__init__(reason)
        self.fit = fit


def plan(levels: Sequence[int], rounds: int, seed: Optional[int] = None) -> List[tuple]:
    """[(round, level), ...] with the level order shuffled in each round."""
    rng = random.Random(seed)
    steps = []
    for r in range(rounds):
        order = list(levels)
        rng.shuffle(order)
        steps += [(r, lv) for lv in order]
    return steps


def plan_classes(class_levels: Sequence[Sequence[int]], rounds: int, seed: Optional[int] = None) -> List[tuple]:
    """[(round, level, class), ...]: each core class loaded on its own at each
    of its levels (``class_levels[class]``, busy CPUs), plus one idle step per
    round, the order shuffled in each round. Loading one class at a time is
    what lets the fit tell the classes' slopes apart."""
    rng = random.Random(seed)
    steps = []
    for r in range(rounds):
        order = [(0, 0)] + [(lv, c) for c, levels in enumerate(class_levels) for lv in levels if lv > 0]
        rng.shuffle(order)
        steps += [(r, lv, c) for lv, c in order]
    return steps


def plan_frequencies(class_levels: Sequence[Sequence[int]], class_khz: Sequence[Sequence[int]], rounds: int,
                     seed: Optional[int] = None) -> List[tuple]:
    """[(round, level, class, kHz), ...]: :func:`plan_classes` with each
    class's load run at each of its frequencies (``class_khz[class]``), the
    order shuffled in each round; the idle step pins nothing (kHz None)."""
    rng = random.Random(seed)
    steps = []
    for r in range(rounds):
        order = [(0, 0, None)] + [(lv, c, k) for c, levels in enumerate(class_levels) for lv in levels if lv > 0
                                  for k in class_khz[c]]
        rng.shuffle(order)
        steps += [(r, lv, c, k) for lv, c, k in order]
    return steps


def aligned_read(meter, cpu_reader, timeout: float = 0.05):
    """Read the meter just after its counters move, then the CPU time.

    RAPL counters update in steps (about every millisecond on hardware, every
    tick on the simulator); a reading taken just after a step is fresh, so the
    joules and the CPU time it is paired with describe the same instant.
    """
    first = meter.read()
    key = next(iter(first.joules), None)
    deadline = time.monotonic() + timeout
    cur = first
    while key is not None and cur.joules[key] == first.joules[key] and time.monotonic() < deadline:
        time.sleep(0.0005)
        cur = meter.read()
    return cur, cpu_reader()


def sample_levels(meter, steps, seconds_per_level: float, sample_interval: float = 0.1, settle: float = 0.2,
                  on_step: Optional[Callable[[int, int, int], None]] = None,
                  cpu_reader: Callable[[], float] = busy_seconds, cgroup: Optional[str] = None,
                  class_cpus: Optional[Sequence[Sequence[int]]] = None,
                  class_cgroups: Optional[Sequence[str]] = None,
                  pin: Optional[Callable[[int, int], None]] = None,
                  khz_reader: Optional[Callable[[], List[float]]] = None) -> List[dict]:
    """Drive the load through ``steps`` and return the raw samples.

    Steps of three (round, level, class) pin the workers to ``class_cpus[class]``
    (and put them in ``class_cgroups[class]`` when given); ``cpu_reader`` then
    returns busy seconds per class, and each sample carries ``cpu_s_by_class``.
    Steps of four (round, level, class, kHz) first ``pin(class, kHz)``; with
    ``khz_reader`` (each class's frequency now) each sample also carries
    ``khz_by_class`` (the mean of its two ends) and ``ghz_s_by_class``
    (busy seconds x GHz: the x of a fit per GHz-second).
    The workers are killed however this returns (KeyboardInterrupt included).
    """
    samples = []
    with Workload(cgroup) as load:
        for i, step in enumerate(steps):
            rnd, level = step[0], step[1]
            cls = step[2] if len(step) > 2 else None
            if on_step:
                on_step(i, rnd, level)
            if len(step) > 3 and step[3] is not None and pin is not None:
                pin(cls, step[3])
            if cls is None or class_cpus is None:
                load.set_level(level)
            else:
                load.set_level(level, class_cpus[cls], class_cgroups[cls] if class_cgroups else None)
            time.sleep(settle)
            prev, prev_cpu = aligned_read(meter, cpu_reader)
            prev_khz = khz_reader() if khz_reader else None
            end = time.monotonic() + seconds_per_level
            while time.monotonic() < end:
                time.sleep(sample_interval)
                cur, cur_cpu = aligned_read(meter, cpu_reader)
                cur_khz = khz_reader() if khz_reader else None
                dt = cur.seconds_since(prev)
                if dt > 0:
                    sample = {"round": rnd, "level": level, "t_s": dt, "joules": cur.delta(prev)}
                    if isinstance(cur_cpu, (list, tuple)):
                        sample["class"] = cls
                        sample["cpu_s_by_class"] = [b - a for a, b in zip(prev_cpu, cur_cpu)]
                        sample["cpu_s"] = sum(sample["cpu_s_by_class"])
                    else:
                        sample["cpu_s"] = cur_cpu - prev_cpu
                    if cur_khz is not None:
                        sample["khz"] = step[3] if len(step) > 3 else None
                        sample["khz_by_class"] = [(a + b) / 2 for a, b in zip(prev_khz, cur_khz)]
                        sample["ghz_s_by_class"] = [c * k / 1e6 for c, k in zip(sample["cpu_s_by_class"],
                                                                               sample["khz_by_class"])]
                    samples.append(sample)
                prev, prev_cpu, prev_khz = cur, cur_cpu, cur_khz
    return samples


def fit_domain(samples: List[dict], domain: str) -> dict:
    xs = [s["cpu_s"] / s["t_s"] for s in samples]
    ys = [s["joules"][domain] / s["t_s"] for s in samples]
    f = linear_fit(xs, ys)
    return {"idle_watts": f.intercept, "watts_per_cpu_second": f.slope, "r2": f.r2, "n": f.n,
            "stderr": {"idle_watts": f.se_intercept, "watts_per_cpu_second": f.se_slope},
            "ci95": {"idle_watts": f.ci95_intercept, "watts_per_cpu_second": f.ci95_slope},
            "residuals": residuals_by_level([s["level"] for s in samples], f.residuals)}


def fit_classes(samples: List[dict], domain: str, names: Sequence[str], x_key: str = "cpu_s_by_class",
                slopes: str = "class_watts") -> dict:
    """idle watts plus one slope per core class, each with its CI95: per
    CPU-second (``x_key`` busy seconds per class), or per GHz-second
    (``ghz_s_by_class``, ``slopes="class_watts_per_ghz_second"``)."""
    xs = [[c / s["t_s"] for c in s[x_key]] for s in samples]
    ys = [s["joules"][domain] / s["t_s"] for s in samples]
    f = multi_fit(xs, ys)
    return {"idle_watts": f.intercept, slopes: dict(zip(names, f.slopes)), "r2": f.r2, "n": f.n,
            "stderr": {"idle_watts": f.se_intercept, slopes: dict(zip(names, f.se_slopes))},
            "ci95": {"idle_watts": f.ci95_intercept, slopes: dict(zip(names, f.ci95_slopes))},
            "residuals": residuals_by_level([s["level"] for s in samples], f.residuals)}


def _mean_slope(class_watts: dict, topology) -> float:
    """The machine-wide watts per CPU-second the profile also carries (for
    readers that know no classes): the classes' slopes weighted by CPU count."""
    sizes = {c.name: len(c.cpus) for c in topology.classes}
    return sum(class_watts[n] * sizes[n] for n in class_watts) / sum(sizes.values())


def total_domain(samples: List[dict]) -> str:
    keys = set(samples[0]["joules"]) if samples else set()
    for d in ("package", "psys"):
        if d in keys:
            return d
    raise NotCredible("the meter reported no package (or psys) energy")


def build_profile(samples: List[dict], meter, settings: dict, min_r2: float = MIN_R2, topology=None) -> dict:
    """Fit the samples; raise NotCredible with the reason when the fit must not be used.

    On a machine with several core classes (``topology``, samples with
    ``cpu_s_by_class``) the fit is idle watts plus one slope per class, and
    ``watts_per_cpu_second`` is their CPU-weighted mean. The profile records
    the topology it was fitted on, so another layout refuses it. Samples
    with ``ghz_s_by_class`` (frequencies pinned) give a fit per GHz-second
    per class (``"basis": "frequency"``, :mod:`ebpf_energy.calibration.frequency`)."""
    from ebpf_energy.calibration import frequency as freqfit

    if not samples:
        raise NotCredible("no samples were taken (levels too short?)")
    distinct = sorted({s["level"] for s in samples})
    if len(distinct) < 2:
        raise NotCredible(f"only one load level ({distinct[0]}) was measured: idle and dynamic power cannot be "
                          "told apart; give at least two levels, e.g. --levels 0,1,2")
    domain = total_domain(samples)
    by_freq = topology is not None and "ghz_s_by_class" in samples[0]
    per_class = not by_freq and topology is not None and topology.hybrid and "cpu_s_by_class" in samples[0]
    seen = freqfit.seen_khz(samples, topology.names) if by_freq else {}
    try:
        if by_freq:
            if any(len(v) < 1 for v in seen.values()):
                raise NotCredible("a core class was never loaded at a known frequency")
            main = fit_classes(samples, domain, topology.names, "ghz_s_by_class", freqfit.SLOPES)
            freqfit.add_time_equivalents(main, topology, {n: v[-1] for n, v in seen.items()})
        elif per_class:
            main = fit_classes(samples, domain, topology.names)
            main["watts_per_cpu_second"] = _mean_slope(main["class_watts"], topology)
        else:
            main = fit_domain(samples, domain)
    except FitError as e:
        raise NotCredible(str(e)) from None
    per_domain = {}
    # the cores' own domains follow their clock; DRAM and uncore follow memory
    # traffic, not the clock: those per CPU-second always (per GHz-second
    # their fit says nothing, R² near 0)
    time_classes = topology is not None and topology.hybrid and "cpu_s_by_class" in samples[0]
    for d in sorted(set(samples[0]["joules"]) - {domain}):
        try:
            if by_freq and d in CORE_CLOCK_DOMAINS:
                per_domain[d] = fit_classes(samples, d, topology.names, "ghz_s_by_class", freqfit.SLOPES)
            else:
                per_domain[d] = fit_classes(samples, d, topology.names) if time_classes else fit_domain(samples, d)
        except FitError:
            pass
    info = getattr(meter, "describe", lambda: {})()
    prof = {"schema": profiles.SCHEMA, "idle_watts": main["idle_watts"],
            "watts_per_cpu_second": main["watts_per_cpu_second"], "r2": main["r2"], "ci95": main["ci95"],
            "stderr": main["stderr"], "domain": domain, "meter": meter.name,
            "simulated": bool(getattr(meter, "simulated", False)), "meter_info": info,
            "residuals": main["residuals"], "per_domain": per_domain, **profiles.host_identity(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "settings": settings, "samples": samples}
    if topology is not None:
        prof["topology"] = topology.describe()
    if by_freq:
        prof.update({"basis": "frequency", freqfit.SLOPES: main[freqfit.SLOPES],
                     "watts_per_ghz_second": main["watts_per_ghz_second"], "frequencies_khz": seen,
                     "reference_khz": {n: v[-1] for n, v in seen.items()}})
        if topology.hybrid:
            prof["class_watts"] = main["class_watts"]  # at the reference frequencies: for readers without cycles
        bad = [n for n, k in main[freqfit.SLOPES].items() if k <= 0]
        if bad:
            raise NotCredible(f"the fitted watts per GHz-second of class {', '.join(bad)} is not positive: "
                              "energy did not rise with that class's load and frequency", prof)
    if per_class:
        prof["class_watts"] = main["class_watts"]
        bad = [n for n, k in main["class_watts"].items() if k <= 0]
        if bad:
            raise NotCredible(f"the fitted watts per CPU-second of class {', '.join(bad)} is not positive: "
                              "energy did not rise with that class's load", prof)
    if main["watts_per_cpu_second"] <= 0:
        raise NotCredible(f"the fitted watts per CPU-second is {main['watts_per_cpu_second']:.3g} (not positive): "
                          "energy did not rise with load; is the meter the right one?", prof)
    if main["idle_watts"] < 0:
        raise NotCredible(f"the fitted idle power is negative ({main['idle_watts']:.3g} W)", prof)
    if main["r2"] < min_r2:
        raise NotCredible(f"R² = {main['r2']:.3f} is below {min_r2}: power does not follow CPU load closely "
                          "enough (a noisy machine? other load during calibration?); retry on a quiet machine "
                          "or with longer levels", prof)
    return prof
