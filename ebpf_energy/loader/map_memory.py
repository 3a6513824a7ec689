"""How much kernel memory a map will take, checked before it is created.

The kernel allocates preallocated maps (hash, per-CPU hash, arrays) in full
at BPF_MAP_CREATE: a per-CPU hash of 100 M entries on a small machine asks
for tens of GB at once, and the OOM killer then takes some other process
first. So every map is sized here, from the same formulas the kernel's
allocators follow (element header, key and value rounded to 8 bytes, one
value per possible CPU for per-CPU types, the bucket array), and refused
with a sentence when it would not fit in half of MemAvailable. The estimate
is a lower bound of what the kernel takes, not an exact figure.
"""

from __future__ import annotations

from ebpf_energy.loader import uapi
from ebpf_energy.loader.errors import LoaderError

U32_MAX = 2**32 - 1
BPF_F_NO_PREALLOC = uapi.BPF_F_NO_PREALLOC
HTAB_ELEM = 48  # struct htab_elem before the key: hash node, lru/free-list links, hash
BUCKET = 16  # struct bucket: list head + lock
SHARE_OF_AVAILABLE = 0.5

HASHES = {uapi.BPF_MAP_TYPE_HASH: False, uapi.BPF_MAP_TYPE_LRU_HASH: False,  # -> values per CPU?
          uapi.BPF_MAP_TYPE_PERCPU_HASH: True, uapi.BPF_MAP_TYPE_LRU_PERCPU_HASH: True}
ARRAYS = {uapi.BPF_MAP_TYPE_ARRAY: False, uapi.BPF_MAP_TYPE_PERCPU_ARRAY: True}


class MapTooLarge(LoaderError):
    """A map would take more memory than this machine can give it."""


def _r8(n: int) -> int:
    return (n + 7) // 8 * 8


def estimate_bytes(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int,
                   ncpus: int) -> int:
    """Kernel memory taken at creation (0 for types this does not size)."""
    if map_type in HASHES:
        buckets = 1 << max(0, (max_entries - 1).bit_length())
        if flags & BPF_F_NO_PREALLOC:  # elements come as they are inserted; the buckets now
            return buckets * BUCKET
        value = ncpus * _r8(value_size) + 8 if HASHES[map_type] else _r8(value_size)
        return max_entries * (HTAB_ELEM + _r8(key_size) + value) + buckets * BUCKET
    if map_type in ARRAYS:
        return max_entries * _r8(value_size) * (ncpus if ARRAYS[map_type] else 1)
    if map_type == 27:  # ringbuf: the data pages
        return max_entries
    return 0


def mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check(name: str, type_name: str, map_type: int, key_size: int, value_size: int, max_entries: int,
          flags: int, ncpus: int, available: int | None = None) -> None:
    """Raise MapTooLarge (a sentence saying how much and what fits) before BPF_MAP_CREATE."""
    if not 0 <= max_entries <= U32_MAX:
        raise MapTooLarge(f"map {name}: max_entries {max_entries:,} is not a 32-bit count (at most {U32_MAX:,})")
    need = estimate_bytes(map_type, key_size, value_size, max_entries, flags, ncpus)
    available = mem_available() if available is None else available
    if not need or available is None or need <= available * SHARE_OF_AVAILABLE:
        return
    per = max(1, need // max(1, max_entries))
    fits = int(available * SHARE_OF_AVAILABLE) // per
    raise MapTooLarge(f"map {name} ({type_name}, {max_entries:,} entries) would take about {_gb(need)} of kernel "
                      f"memory, more than half of the {_gb(available)} available now: use at most about "
                      f"{fits:,} entries")
