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


def hybrid_cpufreq_tree(root, p_khz=3_200_000, e_khz=2_000_000):
    """:func:`hybrid_tree` with a cpufreq tree shaped like the kernel's: the
    P core (CPU 0) on acpi-cpufreq (listed frequencies 0.8/2.0/3.2 GHz,
    userspace governor), the E core (CPU 1) on intel_pstate (0.8-2.0 GHz, no
    userspace governor: pinned by min = max), each starting at the given kHz."""
    from ebpf_energy.rapl.simulated_cpufreq import make_cpufreq_tree

    tree = hybrid_tree(root)
    make_cpufreq_tree(tree, [0], {0: p_khz}, 800_000, 3_200_000, [800_000, 2_000_000, 3_200_000])
    make_cpufreq_tree(tree, [1], {1: e_khz}, 800_000, 2_000_000, driver="intel_pstate")
    return tree


def cpufreq_files(tree):
    """Every cpufreq file's text: what a calibration must leave as it found it."""
    out = {}
    base = os.path.join(tree, "devices", "system", "cpu", "cpufreq")
    for pol in sorted(os.listdir(base)):
        for name in sorted(os.listdir(os.path.join(base, pol))):
            with open(os.path.join(base, pol, name)) as f:
                out[f"{pol}/{name}"] = f.read()
    return out
