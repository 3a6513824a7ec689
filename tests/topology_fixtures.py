"""/sys-like trees declaring core classes, as --topology-root reads them."""

import os


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"{text}\n")


def hybrid_tree(root, p="0", e="1", online=None, cpufreq=False):
    """A hybrid Intel layout: P cores ``p``, E cores ``e`` (cpulists)."""
    write(os.path.join(root, "devices", "cpu_core", "cpus"), p)
    write(os.path.join(root, "devices", "cpu_atom", "cpus"), e)
    if online:
        write(os.path.join(root, "devices", "system", "cpu", "online"), online)
    if cpufreq:
        os.makedirs(os.path.join(root, "devices", "system", "cpu", "cpufreq", "policy0"), exist_ok=True)
    return str(root)


def capacity_tree(root, capacities):
    """An Arm layout: ``cpuN/cpu_capacity`` for each CPU."""
    for cpu, cap in enumerate(capacities):
        write(os.path.join(root, "devices", "system", "cpu", f"cpu{cpu}", "cpu_capacity"), cap)
    write(os.path.join(root, "devices", "system", "cpu", "online"), f"0-{len(capacities) - 1}")
    return str(root)
