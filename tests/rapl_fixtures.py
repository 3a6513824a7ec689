"""Static fake powercap / power-PMU trees for the RAPL tests (files like the kernel's)."""

import os


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"{text}\n")


def zone(root, zid, name, energy_uj=0, max_range=1_000_000, max_power_uw=None, parent=None):
    """Create zone ``zid`` (e.g. "intel-rapl:0:1") nested under its parent, linked flat at ``root``."""
    base = os.path.join(root, ".dev", "intel-rapl" if zid.startswith("intel-rapl:") else zid.split(":")[0])
    parts = zid.split(":")
    nested = [":".join(parts[:i]) for i in range(2, len(parts) + 1)]
    path = os.path.join(base, *nested)
    write(os.path.join(path, "name"), name)
    write(os.path.join(path, "energy_uj"), energy_uj)
    write(os.path.join(path, "max_energy_range_uj"), max_range)
    if max_power_uw is not None:
        write(os.path.join(path, "constraint_0_max_power_uw"), max_power_uw)
    link = os.path.join(root, zid)
    if not os.path.lexists(link):
        os.symlink(path, link)
    return path


def set_energy(path, uj):
    write(os.path.join(path, "energy_uj"), uj)


def pmu(root, type_=23, cpumask="0,2", events=None):
    events = events or {"pkg": ("event=0x02", "2.3283064365386962890625e-10"),
                        "cores": ("event=0x01", "2.3283064365386962890625e-10"),
                        "ram": ("event=0x03", "1.52587890625e-05")}
    write(os.path.join(root, "type"), type_)
    write(os.path.join(root, "cpumask"), cpumask)
    for name, (cfg, scale) in events.items():
        write(os.path.join(root, "events", f"energy-{name}"), cfg)
        write(os.path.join(root, "events", f"energy-{name}.scale"), scale)
        write(os.path.join(root, "events", f"energy-{name}.unit"), "Joules")
    return root
