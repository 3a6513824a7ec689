"""A row of CodeCarbon's ``emissions.csv`` per run, so the dashboards and
notebooks people already keep for CodeCarbon read ebpf-energy's figures.

The columns and units are CodeCarbon's own (its ``EmissionsData``): seconds,
kg of CO2e, watts, kWh. A row is appended, and the header written when the
file is new, as CodeCarbon's file output does. What ebpf-energy does not
measure (GPU, water, location) is left 0 or empty, never made up.
"""

import csv
import os
import platform
import time
import uuid
from typing import Optional

COLUMNS = ("timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions", "emissions_rate",
           "cpu_utilization_percent", "ram_utilization_percent", "ram_used_gb", "cpu_power", "gpu_power",
           "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed", "water_consumed",
           "country_name", "country_iso_code", "region", "cloud_provider", "cloud_region", "os", "python_version",
           "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude", "latitude",
           "ram_total_size", "tracking_mode", "on_cloud", "pue", "wue")
J_PER_KWH = 3.6e6


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _ram_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 3)
    except (OSError, ValueError):
        pass
    return 0.0


def row(*, duration_s: float, energy_j: float, carbon_g: float, cpu_s: float, dram_j: float = 0.0,
        tracking_mode: str = "process", project_name: str = "ebpf-energy", run_id: Optional[str] = None) -> dict:
    """One run as CodeCarbon's columns. ``energy_j`` is the CPU-side energy
    (the package, or the model's joules); ``dram_j`` the RAM's when metered."""
    from ebpf_energy import __version__

    ncpus = os.cpu_count() or 1
    d = max(duration_s, 1e-9)
    emissions_kg = carbon_g / 1000.0
    cpu_kwh, ram_kwh = energy_j / J_PER_KWH, dram_j / J_PER_KWH
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "project_name": project_name,
        "run_id": run_id or str(uuid.uuid4()), "experiment_id": "", "duration": duration_s,
        "emissions": emissions_kg, "emissions_rate": emissions_kg / d,
        "cpu_utilization_percent": 100.0 * cpu_s / (d * ncpus), "ram_utilization_percent": 0,
        "ram_used_gb": 0, "cpu_power": energy_j / d, "gpu_power": 0, "ram_power": dram_j / d,
        "cpu_energy": cpu_kwh, "gpu_energy": 0, "ram_energy": ram_kwh, "energy_consumed": cpu_kwh + ram_kwh,
        "water_consumed": 0, "country_name": "", "country_iso_code": "", "region": "", "cloud_provider": "",
        "cloud_region": "", "os": platform.platform(), "python_version": platform.python_version(),
        "codecarbon_version": f"ebpf-energy {__version__}", "cpu_count": ncpus, "cpu_model": _cpu_model(),
        "gpu_count": 0, "gpu_model": "", "longitude": "", "latitude": "", "ram_total_size": _ram_gb(),
        "tracking_mode": tracking_mode, "on_cloud": "N", "pue": 1, "wue": 0,
    }


def problem(path: str) -> Optional[str]:
    """Why ``path`` cannot take our rows (checked before a run, so a long
    run's figures are never lost at its end), or None. A file that is there
    must already be an emissions.csv: we never append to anything else."""
    if os.path.isdir(path):
        return "is a folder"
    if not os.path.exists(path):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            return f"its folder {folder} does not exist"
        return None if os.access(folder, os.W_OK) else f"its folder {folder} is not writable"
    if not os.access(path, os.W_OK):
        return "is not writable"
    if os.path.getsize(path) == 0:
        return None
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot be read ({e})"
    if tuple(header[:3]) != COLUMNS[:3]:
        return "exists and is not a CodeCarbon emissions.csv (its header does not start timestamp,project_name,run_id)"
    return None


def check_option(ctx, param, value):
    """click callback for ``--codecarbon-csv``: refuse a path that cannot take our rows, up front."""
    if value is not None and (why := problem(value)):
        import click

        raise click.BadParameter(f"{value} {why}", ctx=ctx, param=param)
    return value


def append(path: str, values: dict) -> None:
    """Append one row; the header first when the file is new or empty."""
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        w.writerow(values)
