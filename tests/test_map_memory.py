"""Map sizes are checked against the machine's memory before BPF_MAP_CREATE (no OOM killer)."""

import subprocess
import sys

import pytest

from ebpf_energy.loader import map_memory
from ebpf_energy.loader.map_memory import MapTooLarge, check, estimate_bytes

GiB = 2**30


@pytest.mark.parametrize("map_type, flags, ncpus, entries, at_least", [
    (5, 0, 2, 100_000_000, 100_000_000 * (48 + 8 + 2 * 112)),  # percpu hash: a value per CPU
    (1, 0, 2, 1000, 1000 * (48 + 8 + 112)),
    (1, 1, 2, 1 << 30, (1 << 30) * 16),  # BPF_F_NO_PREALLOC: the buckets only
    (6, 0, 4, 10, 10 * 112 * 4),
    (27, 0, 2, 1 << 20, 1 << 20),
])
def test_estimates_follow_the_kernel_allocators(map_type, flags, ncpus, entries, at_least):
    assert estimate_bytes(map_type, 8, 108, entries, flags, ncpus) >= at_least


def test_too_large_is_a_sentence_with_what_fits():
    with pytest.raises(MapTooLarge, match=r"map tasks \(percpu_hash, 100,000,000 entries\) would take about "
                                          r"[0-9.]+ GiB .* use at most about [0-9,]+ entries"):
        check("tasks", "percpu_hash", 5, 8, 112, 100_000_000, 0, 2, available=24 * GiB)
    check("tasks", "percpu_hash", 5, 8, 112, 16384, 0, 2, available=24 * GiB)  # the default fits
    with pytest.raises(MapTooLarge, match="not a 32-bit count"):
        check("m", "hash", 1, 4, 4, 2**32, 0, 2, available=24 * GiB)


@pytest.mark.kernel
@pytest.mark.parametrize("args, message", [
    (["monitor", "-d", "1", "--max-tasks", "100000000"], "would take about"),
    (["load", "tests/bpf/build/maps_all.bpf.o", "--max-entries", "hash_map=999999999"], "would take about"),
    # a size no kernel takes is the command line's fault: refused before the object loads (exit 2)
    (["load", "tests/bpf/build/maps_all.bpf.o", "--max-entries", "hash_map=99999999999"],
     "max_entries is from 1 to 4,294,967,295"),
])
def test_the_commands_refuse_before_the_kernel_allocates(args, message):
    r = subprocess.run([sys.executable, "-m", "ebpf_energy", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert map_memory.mem_available() > 0
