"""ebpf-energy: per-process energy from a pure-Python eBPF loader.

The loader (``ebpf_energy.loader``) is a library of its own and never imports
the energy side; everything else turns CPU time into joules.
"""

__version__ = "0.1.0"
