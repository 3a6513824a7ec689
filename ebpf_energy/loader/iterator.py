"""Moved to :mod:`ebpf_energy.loader.link.iterator`; the name stays for its callers."""

from .link.iterator import Iterator  # noqa: F401
