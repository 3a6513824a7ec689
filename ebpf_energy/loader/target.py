"""The kernel a program is prepared for: its BTF, config, symbols and sizes.

:func:`~ebpf_energy.loader.prepare.prepare` reads the kernel only through a
``Target``, so the same object can be prepared against the running kernel
(``Target.running()``, root-free: /sys/kernel/btf/vmlinux and
/proc/config.gz are world-readable) or against a BTF file from another
machine (``Target.from_btf_file``), which is what ``load --dry-run --btf``
shows a student on a laptop. Everything is read lazily: a program without
CO-RE never indexes the kernel's 100k+ types.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .errors import LoaderError


class Target:
    """What prepare() may ask of a kernel. ``kallsyms`` is None when addresses
    are unknown (another machine's BTF, or not root): an address extern then
    stays a placeholder that :class:`~ebpf_energy.loader.collection.Collection`
    fills at load."""

    def __init__(self, *, btf_loader: Callable[[], object], description: str,
                 kconfig: dict[str, str] | None = None, kconfig_loader: Callable[[], dict] | None = None,
                 kallsyms: Callable[[str], int] | None = None, kernel_version: int = 0,
                 possible_cpus: int | None = None, page_size: int | None = None):
        self._btf_loader = btf_loader
        self._btf = None
        self.description = description
        self._kconfig = kconfig
        self._kconfig_loader = kconfig_loader
        self.kallsyms = kallsyms
        self.kernel_version = kernel_version
        self.possible_cpus = possible_cpus if possible_cpus is not None else _possible_cpus()
        self.page_size = page_size or os.sysconf("SC_PAGE_SIZE")

    @property
    def btf(self):
        if self._btf is None:
            self._btf = self._btf_loader()
        return self._btf

    @property
    def kconfig(self) -> dict[str, str]:
        if self._kconfig is None:
            self._kconfig = self._kconfig_loader() if self._kconfig_loader else {}
        return self._kconfig

    @classmethod
    def running(cls, addresses: bool = True) -> "Target":
        """This machine's kernel (the BTF index is shared by every load in the
        process). ``addresses=False`` leaves ``__ksym`` addresses to the load
        (a dry run: /proc/kallsyms shows zeros to all but root)."""
        from . import externs

        return cls(btf_loader=running_kernel_btf, description="the running kernel (/sys/kernel/btf/vmlinux)",
                   kconfig_loader=externs.read_kconfig, kallsyms=externs.kallsyms_address if addresses else None,
                   kernel_version=externs.kernel_version())

    @classmethod
    def from_btf_file(cls, path: str, kconfig_path: str | None = None, *, possible_cpus: int | None = None,
                      page_size: int | None = None) -> "Target":
        """Another kernel, known only by its BTF (raw, or an ELF's .BTF) and
        optionally its config file; sizes (CPUs, page) are this machine's
        unless given."""
        from . import externs
        from .kernel_btf import KernelBtf

        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise LoaderError(f"cannot read BTF file {path}: {e.strerror or e}") from None

        btf = KernelBtf.from_bytes(data, path, use_cache=False)  # a bad file is refused now, not mid-relocation
        kconfig = externs.read_kconfig(kconfig_path, fallback=False) if kconfig_path else {}
        if kconfig_path and not kconfig:
            raise LoaderError(f"{kconfig_path}: no CONFIG_*= lines: not a kernel config")
        version = externs.version_of_config(kconfig_path) if kconfig_path else 0
        return cls(btf_loader=lambda: btf, description=f"the BTF in {path}", kconfig=kconfig, kallsyms=None,
                   kernel_version=version, possible_cpus=possible_cpus, page_size=page_size)


_running_btf = None


def running_kernel_btf():
    """The running kernel's BTF, indexed once per process."""
    global _running_btf
    if _running_btf is None:
        from .kernel_btf import KernelBtf

        _running_btf = KernelBtf.running()
    return _running_btf


def _possible_cpus() -> int:
    from . import syscall

    return syscall.num_possible_cpus()
