"""Values for ``extern`` symbols: ``__kconfig`` and ``__ksym``.

``.kconfig`` externs live in one read-only map the loader builds (as libbpf
does): ``LINUX_KERNEL_VERSION`` from ``uname``, ``CONFIG_*`` from
``/proc/config.gz``; a weak extern that the kernel lacks reads as zero.
``.ksyms`` externs are kernel variables (typed: their BTF id; untyped: their
address from ``/proc/kallsyms``) or kfuncs (their BTF id).
"""

from __future__ import annotations

import os

from ebpf_energy.loader.errors import LoaderError
from ebpf_energy.loader.record import record

TRI_NO, TRI_YES, TRI_MODULE = 0, 1, 2


@record
class KconfigVar:
    """A ``__kconfig`` extern: where its value goes in the ``.kconfig`` map."""

    name: str
    type_id: int
    size: int
    weak: bool
    offset: int = 0


def kernel_version() -> int:
    """KERNEL_VERSION(a, b, c) of the running kernel, as LINUX_KERNEL_VERSION expects."""
    release = os.uname().release
    parts = []
    for piece in release.split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits or 0))
    while len(parts) < 3:
        parts.append(0)
    a, b, c = parts
    return (a << 16) + (b << 8) + min(c, 255)


def version_of_config(kconfig_path: str) -> int:
    """KERNEL_VERSION(a, b, c) from a config file's header (``# Linux/x86 6.18.0
    Kernel Configuration``), 0 when it has none."""
    import re

    try:
        opener = _opener(kconfig_path)
        with opener(kconfig_path, "rt", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return 0
    m = re.search(r"^# Linux/\S+ (\d+)\.(\d+)\.(\d+)", head, re.M)
    if not m:
        return 0
    a, b, c = (int(x) for x in m.groups())
    return (a << 16) + (b << 8) + min(c, 255)


def _opener(path):
    """``open``, or ``gzip.open`` for /proc/config.gz (imported only then)."""
    if path.endswith(".gz"):
        import gzip

        return gzip.open
    return open


def read_kconfig(path="/proc/config.gz", fallback=True) -> dict[str, str]:
    """``CONFIG_FOO`` -> raw value (``y``, ``m``, ``"str"``, ``123``) from the kernel's config
    (``fallback``: also try /boot/config-$(uname -r))."""
    candidates = [path] + ([f"/boot/config-{os.uname().release}"] if fallback else [])
    for p in candidates:
        try:
            opener = _opener(p)
            with opener(p, "rt", errors="replace") as f:
                out = {}
                for line in f:
                    line = line.strip()
                    if line.startswith("CONFIG_") and "=" in line:
                        key, _, value = line.partition("=")
                        out[key] = value
                return out
        except OSError:
            continue
    return {}


# libbpf's virtual __kconfig externs: LINUX_* values a loader works out, not
# config lines. Any other LINUX_* name is refused unless __weak (then 0).
VIRTUAL = ("LINUX_KERNEL_VERSION", "LINUX_HAS_BPF_COOKIE", "LINUX_HAS_SYSCALL_WRAPPER")
# arch prefixes of syscall wrappers (__x64_sys_bpf): any one in the BTF will do,
# so a --btf target of another architecture is answered right too
SYSCALL_WRAPPER_PREFIXES = ("x64", "ia32", "arm64", "arm", "s390x", "s390", "riscv", "powerpc", "powerpc64",
                            "loongarch64", "mips", "sparc64")


def virtual_value(name: str, target) -> int:
    """The value of a virtual extern on ``target`` (a :class:`~ebpf_energy.loader.target.Target`).

    Both features are read from the target's BTF (libbpf probes the running
    kernel instead), so a dry run for another kernel gets that kernel's
    answers: ``bpf_get_attach_cookie`` is in ``enum bpf_func_id``, and
    syscalls are entered through ``__<arch>_sys_*`` wrappers taking a
    ``struct pt_regs *`` (what ``BPF_KSYSCALL`` must know)."""
    from ebpf_energy.loader.btf import KIND_ENUM, KIND_ENUM64, KIND_FUNC

    if name == "LINUX_KERNEL_VERSION":
        return target.kernel_version
    if name == "LINUX_HAS_BPF_COOKIE":
        for tid in target.btf.find("bpf_func_id", kind=(KIND_ENUM, KIND_ENUM64)):
            if any(n == "BPF_FUNC_get_attach_cookie" for n, _ in target.btf.type(tid).values):
                return 1
        return 0
    if name == "LINUX_HAS_SYSCALL_WRAPPER":
        return int(any(target.btf.find(f"__{p}_sys_bpf", kind=KIND_FUNC) for p in SYSCALL_WRAPPER_PREFIXES))
    raise KeyError(name)


def kconfig_value(var: KconfigVar, kconfig: dict[str, str], codec, version: int, target=None) -> bytes:
    """Encode one extern's value in its BTF type (``codec``); ``version`` is
    the target's KERNEL_VERSION(a, b, c), for LINUX_KERNEL_VERSION; the other
    virtual externs are asked of ``target``."""
    if var.name == "LINUX_KERNEL_VERSION":
        return codec.encode(version)
    if var.name.startswith("LINUX_"):
        if var.name in VIRTUAL and target is not None:
            return codec.encode(virtual_value(var.name, target))
        if var.weak:
            return bytes(var.size)
        raise LoaderError(f"extern {var.name} __kconfig: not a virtual extern this loader knows "
                          f"({', '.join(VIRTUAL)}); declare it __weak to read 0")
    raw = kconfig.get(var.name)
    if raw is None:
        if var.weak:
            return bytes(var.size)
        raise LoaderError(f"extern {var.name} __kconfig: the running kernel's config does not set it "
                          "(declare it __weak to read 0 when absent)")
    if raw in ("y", "m", "n"):
        value = {"y": TRI_YES, "m": TRI_MODULE, "n": TRI_NO}[raw]
        return codec.encode(value if var.size > 1 else int(raw != "n"))
    if raw.startswith('"'):
        text = raw.strip('"')
        try:
            return codec.encode(text)
        except Exception:
            return text.encode()[: var.size].ljust(var.size, b"\0")
    try:
        return codec.encode(int(raw, 0))
    except ValueError:
        raise LoaderError(f"extern {var.name} __kconfig: cannot encode kernel value {raw!r}") from None


_kallsyms: dict[str, int] | None = None


def kallsyms_address(name: str) -> int:
    """Address of a kernel symbol (needs root: unprivileged readers see zeros)."""
    global _kallsyms
    if _kallsyms is None:
        table = {}
        try:
            with open("/proc/kallsyms") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[2] not in table:
                        table[parts[2]] = int(parts[0], 16)
        except OSError as e:
            raise LoaderError(f"cannot read /proc/kallsyms for __ksym externs: {e.strerror}") from None
        _kallsyms = table
    addr = _kallsyms.get(name)
    if not addr:
        raise LoaderError(f"extern {name} __ksym: not in /proc/kallsyms (or hidden: needs root)")
    return addr
