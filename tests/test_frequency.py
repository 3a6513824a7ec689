"""CPU frequency (opt-in): the power:cpu_frequency handler and cycles per process.

This VM has no cpufreq, so the tests declare one: a tree laid out like
``/sys/devices/system/cpu`` (``cpuN/cpufreq/scaling_cur_freq``, in kHz) gives
each CPU a made-up frequency at load, and the handler is run through
BPF_PROG_TEST_RUN with made-up tracepoint arguments.
"""

import os
import struct

import pytest

from ebpf_energy.loader import syscall
from ebpf_energy.monitor import FREQ_PROGRAM, cpufreq_khz
from test_accounting import burn_pinned
from test_monitor import sampler_factory  # noqa: F401

pytestmark = pytest.mark.kernel

KHZ = (1_000_000, 3_000_000)  # 1 GHz and 3 GHz: cycles are exactly 1x and 3x the ns


def cpu_tree(root, khz_by_cpu):
    for cpu, khz in khz_by_cpu.items():
        d = root / f"cpu{cpu}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_cur_freq").write_text(f"{khz}\n")
    return str(root)


def made_up(tmp_path):
    """(cpu_root, {cpu: kHz}) for the first two CPUs we may run on."""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        pytest.fail("this test needs two CPUs")
    table = dict(zip(cpus, KHZ))
    return cpu_tree(tmp_path, table), table


def test_no_cpufreq_means_no_cycles_and_no_handler(sampler_factory, tmp_path):
    assert cpufreq_khz(syscall.num_possible_cpus(), str(tmp_path)) is None
    s = sampler_factory(track_frequency=True, cpu_root=str(tmp_path))
    assert not s.obj.programs[FREQ_PROGRAM].loaded
    w = s.read()
    assert w.frequency == "unknown (no cpufreq)"
    assert all(p.cycles is None for p in w.processes.values())


def test_the_frequency_handler_keeps_each_cpus_khz(sampler_factory, tmp_path):
    root, table = made_up(tmp_path)
    s = sampler_factory(track_frequency=True, cpu_root=root)
    prog = s.obj.programs[FREQ_PROGRAM]
    assert prog.attached
    khz = s.obj.bss["cpu_khz"]
    assert [khz[c] for c in table] == list(table.values())  # from cpufreq at load
    cpu = max(table)
    # cpu_frequency(state = kHz, cpu_id): the tracepoint's arguments as a raw_tp context
    assert prog.test_run(ctx_in=struct.pack("<QQ", 2_400_000, cpu), repeat=0)["retval"] == 0
    assert s.obj.bss["cpu_khz"][cpu] == 2_400_000
    prog.test_run(ctx_in=struct.pack("<QQ", 5, 1 << 20), repeat=0)  # a CPU beyond the table changes nothing
    assert s.obj.bss["cpu_khz"] == khz[:cpu] + [2_400_000] + khz[cpu + 1:]


def test_cycles_are_cpu_time_at_each_cpus_frequency(sampler_factory, tmp_path):
    """A burner pinned to a 1 GHz CPU and one to a 3 GHz CPU: exactly 1 and 3
    cycles per ns of CPU time (every slice is counted at its CPU's kHz)."""
    root, table = made_up(tmp_path)
    s = sampler_factory(track_frequency=True, cpu_root=root)
    pids, w = burn_pinned(s, list(table), "emt-cycles")
    assert w.frequency.startswith("tracked")
    for cpu, pid in pids.items():
        p = w.processes[pid]
        assert p.cpu_ns > 150_000_000 and p.cycles == p.cpu_ns * table[cpu] // 1_000_000, (cpu, p.cpu_ns, p.cycles)
