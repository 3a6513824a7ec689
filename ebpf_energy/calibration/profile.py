"""Calibration profiles: JSON on disk, where the monitor looks, and whether
one fits this machine.

A profile is only valid for the CPU it was fitted on (model, core count and
core classes: a profile fitted on a hybrid layout carries a slope per class
and the ``topology`` it saw; one without records a homogeneous machine),
and a profile fitted on the simulated meter describes no real machine: both
are checked here so the model selection can refuse them out loud.
"""

import json
import os
import platform
from typing import Optional, Tuple

SCHEMA = 1
REQUIRED = ("idle_watts", "watts_per_cpu_second")


class ProfileError(Exception):
    """A profile file is missing, unreadable or not a profile."""


def default_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "ebpf-energy", "profile.json")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Processor", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_identity() -> dict:
    return {"cpu_model": cpu_model(), "cores": os.cpu_count() or 1, "kernel": platform.release()}


def load(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ProfileError(f"no calibration profile at {path} (make one with `ebpf-energy calibrate`)") from None
    except OSError as e:
        raise ProfileError(f"cannot read the profile {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ProfileError(f"{path} is not valid JSON ({e}); recalibrate or remove it") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path} is not a calibration profile (expected a JSON object)")
    for key in REQUIRED:
        v = data.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
            raise ProfileError(f"{path} is not a calibration profile: {key!r} missing or not a number")
    if data["idle_watts"] < 0 or data["watts_per_cpu_second"] <= 0:
        raise ProfileError(f"{path}: idle_watts must be >= 0 and watts_per_cpu_second > 0")
    cw = data.get("class_watts")
    if cw is not None and not (isinstance(cw, dict) and cw and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in cw.values())):
        raise ProfileError(f"{path}: class_watts must map each core class to a positive number")
    if data.get("basis") == "frequency":
        per_ghz, ref = data.get("class_watts_per_ghz_second"), data.get("reference_khz")
        if not (isinstance(per_ghz, dict) and per_ghz and isinstance(ref, dict) and set(ref) >= set(per_ghz) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                for v in list(per_ghz.values()) + list(ref.values()))):
            raise ProfileError(f"{path}: a frequency-based profile needs class_watts_per_ghz_second and "
                               "reference_khz, positive numbers per core class")
    elif data.get("basis", "time") != "time":
        raise ProfileError(f"{path}: basis {data.get('basis')!r} is neither 'time' nor 'frequency'")
    if data.get("schema", SCHEMA) != SCHEMA:
        raise ProfileError(f"{path} has schema {data.get('schema')!r}; this version reads schema {SCHEMA}")
    data["_path"] = os.path.abspath(path)
    return data


def save(profile: dict, path: Optional[str] = None) -> str:
    """Write atomically (temp + rename) so a crash never leaves half a profile."""
    path = path or default_path()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({k: v for k, v in profile.items() if not k.startswith("_")}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return os.path.abspath(path)


def _layout(recorded: Optional[dict]) -> str:
    if not recorded or len(recorded.get("classes", [])) <= 1:
        return "one core class"
    return ", ".join(f"{c.get('name')} on CPUs {c.get('cpus')}" for c in recorded["classes"])


def matches_host(profile: dict, host: Optional[dict] = None, topology=None) -> Tuple[bool, str]:
    """(True, "") when the profile was fitted on this CPU model, core count
    and (when ``topology`` is given) layout of core classes."""
    host = host or host_identity()
    if profile.get("cpu_model") != host["cpu_model"]:
        return False, f"it was fitted on {profile.get('cpu_model')!r}, this machine is {host['cpu_model']!r}"
    if profile.get("cores") != host["cores"]:
        return False, f"it was fitted on {profile.get('cores')} cores, this machine has {host['cores']}"
    if topology is not None:
        recorded = profile.get("topology")
        same = topology.same_layout(recorded) if recorded else not topology.hybrid
        if not same:
            return False, (f"it was fitted on {_layout(recorded)}, this machine has "
                           f"{_layout(topology.describe())}")
    return True, ""
