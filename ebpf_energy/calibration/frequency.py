"""Calibrating per GHz-second: each core class loaded at a few pinned frequencies.

A busy core's dynamic power grows with its clock, so a CPU-second at 1 GHz
and one at 3 GHz are different work. Where cpufreq exists, every loaded step
pins its class's CPUs to one of a few frequencies (lowest to highest,
:meth:`ebpf_energy.cpufreq.CpuFreq.levels`), each sample multiplies the
class's busy seconds by the frequency read back from ``scaling_cur_freq``
(GHz-seconds: what the monitor's cycles count), and the fit is
``power = idle W + sum over classes of k_class x GHz-seconds per second``.

The profile says so (``"basis": "frequency"``), keeps the slopes per
GHz-second with their CI95 and the frequencies pinned, and also carries the
time-based figures a reader without cycles needs: each class's slope at its
highest calibrated frequency (``reference_khz``), an upper bound under load.
"""

from typing import Dict, List, Sequence

SLOPES = "class_watts_per_ghz_second"
DEFAULT_LEVELS = 3


def class_frequencies(freq, class_cpus: Sequence[Sequence[int]], n: int) -> List[List[int]]:
    """``n`` frequencies (kHz) per class, from its CPUs' common range."""
    return [freq.levels(cpus, n) for cpus in class_cpus]


def seen_khz(samples: List[dict], names: Sequence[str]) -> Dict[str, List[int]]:
    """The frequencies each class was loaded at, as read back: per pinned
    level, the mean ``scaling_cur_freq`` over its samples, rounded to 1 MHz
    (a driver may run near, not at, what was asked)."""
    by_pin: Dict[tuple, List[float]] = {}
    for s in samples:
        if s.get("level") and s.get("class") is not None:
            by_pin.setdefault((s["class"], s.get("khz")), []).append(s["khz_by_class"][s["class"]])
    out: Dict[str, List[int]] = {n: [] for n in names}
    for (c, _), seen in by_pin.items():
        out[names[c]].append(int(round(sum(seen) / len(seen) / 1000.0)) * 1000)
    return {n: sorted(v) for n, v in out.items()}


def add_time_equivalents(main: dict, topology, reference_khz: Dict[str, int]) -> None:
    """The machine-wide W per GHz-second (slopes weighted by CPU count), and
    the per-CPU-second figures at each class's reference frequency, for a
    reader that has CPU time but no cycles."""
    sizes = {c.name: len(c.cpus) for c in topology.classes}
    total = sum(sizes.values())
    k = main[SLOPES]
    main["watts_per_ghz_second"] = sum(k[n] * sizes[n] for n in k) / total
    main["class_watts"] = {n: k[n] * reference_khz[n] / 1e6 for n in k}
    main["watts_per_cpu_second"] = sum(main["class_watts"][n] * sizes[n] for n in k) / total
