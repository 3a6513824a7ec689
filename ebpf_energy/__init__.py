"""ebpf-energy: per-process energy from a pure-Python eBPF loader.

The loader (``ebpf_energy.loader``) is a library of its own and never imports
the energy side; everything else turns CPU time into joules.

    with ebpf_energy.measure() as m:   # this process and its children
        work()
    m.joules, m.cpu_seconds, m.processes
"""

__version__ = "0.1.0"
__all__ = ["measure", "Measurement", "__version__"]


def __getattr__(name):
    # Imported on first use: `import ebpf_energy` (every CLI start) stays cheap.
    if name in ("measure", "Measurement"):
        from ebpf_energy import measurement

        return getattr(measurement, name)
    raise AttributeError(f"module 'ebpf_energy' has no attribute {name!r}")
