"""The frequency side of the models and of cpufreq pinning, on recorded data
and fake trees (no kernel): which basis each combination of profile and
monitor gets, what it says, and that every pinned file goes back."""

import pytest

from ebpf_energy.cpufreq import CpuFreq, FrequencyPin
from ebpf_energy.model.calibrated import CalibratedModel
from ebpf_energy.model.rapl_split import RaplSplitModel
from ebpf_energy.rapl.simulated_cpufreq import CpufreqDriver, make_cpufreq_tree
from ebpf_energy.topology import read_topology
from ebpf_energy.usage import ProcessUsage, UsageWindow
from topology_fixtures import cpufreq_files, hybrid_cpufreq_tree

TRACKED = "tracked (power:cpu_frequency; cycles = ns x kHz / 1e6 per slice)"


@pytest.fixture
def topo(tmp_path):
    return read_topology(hybrid_cpufreq_tree(tmp_path / "sys"))


def proc(pid, p_ms, e_ms, ghz=None):
    p = ProcessUsage(pid=pid, comm=f"p{pid}", cpu_ns=int((p_ms + e_ms) * 1e6))
    p.cpu_ns_by_class = [int(p_ms * 1e6), int(e_ms * 1e6)]
    if ghz is not None:
        p.cycles = int(p.cpu_ns * ghz)
    return p


def window(*procs, frequency=TRACKED):
    w = UsageWindow(source="ebpf", start_ns=0, end_ns=int(1e9), ncpus=2, processes={p.pid: p for p in procs})
    w.frequency = frequency
    return w


def freq_profile(topo):
    return {"idle_watts": 8.0, "basis": "frequency", "class_watts_per_ghz_second": {"P": 8.0, "E": 3.0},
            "reference_khz": {"P": 3_200_000, "E": 2_000_000}, "watts_per_ghz_second": 5.5,
            "watts_per_cpu_second": 15.8, "class_watts": {"P": 25.6, "E": 6.0}, "topology": topo.describe()}


def time_profile(topo):
    return {"idle_watts": 8.0, "watts_per_cpu_second": 13.0, "class_watts": {"P": 20.0, "E": 6.0},
            "topology": topo.describe()}


def test_cycles_times_w_per_ghz_second(topo):
    a = CalibratedModel(freq_profile(topo), topology=topo).attribute(window(proc(1, 500, 0, 2.0),
                                                                           proc(2, 0, 500, 0.8)))
    assert a.energy_j == {1: pytest.approx(8.0 * 1.0), 2: pytest.approx(3.0 * 0.4)}
    assert a.model["basis"] == "cycles" and a.model["parts"]["frequency"].startswith("measured (cycles)")


def test_a_process_on_both_classes_has_its_cycles_split_by_time(topo):
    a = CalibratedModel(freq_profile(topo), topology=topo).attribute(window(proc(1, 300, 100, 2.0)))
    # 0.8 GHz-s in all: 0.6 on P, 0.2 on E
    assert a.energy_j[1] == pytest.approx(8.0 * 0.6 + 3.0 * 0.2)
    assert sum(a.class_energy_j.values()) == pytest.approx(a.energy_j[1])


def test_a_process_without_cycles_is_charged_at_the_reference_frequency(topo):
    a = CalibratedModel(freq_profile(topo), topology=topo).attribute(window(proc(1, 500, 0, 2.0), proc(2, 0, 500)))
    assert a.energy_j[2] == pytest.approx(6.0 * 0.5)


def test_a_frequency_profile_without_cycles_is_time_based_and_says_why(topo):
    a = CalibratedModel(freq_profile(topo), topology=topo).attribute(
        window(proc(1, 500, 0), frequency="unknown (no cpufreq)"))
    assert a.energy_j[1] == pytest.approx(25.6 * 0.5)
    assert a.model["basis"] == "time"
    assert a.model["parts"]["frequency"].startswith("not used (no cpufreq)")


def test_a_time_profile_ignores_tracked_cycles_and_says_so(topo):
    a = CalibratedModel(time_profile(topo), topology=topo).attribute(window(proc(1, 500, 0, 3.2)))
    assert a.energy_j[1] == pytest.approx(20.0 * 0.5)
    assert a.model["basis"] == "time" and "the profile is per CPU-second" in a.model["parts"]["frequency"]


def test_rapl_split_by_cycles_conserves(topo):
    w = window(proc(1, 800, 0, 3.2), proc(2, 800, 0, 0.8), proc(3, 0, 400, 2.0))
    meter = {"package": 30.0}
    a = RaplSplitModel("powercap", freq_profile(topo), topology=topo).attribute(w, meter)
    assert a.total_energy_j == pytest.approx(30.0, rel=1e-12)
    assert a.energy_j[1] / a.energy_j[2] == pytest.approx(4.0)
    assert a.energy_j[1] / a.energy_j[3] == pytest.approx(8.0 * 3.2 * 0.8 / (3.0 * 2.0 * 0.4))


@pytest.mark.parametrize("driver", ["acpi-cpufreq", "intel_pstate"])
def test_pinning_then_restoring_leaves_every_file_as_it_was(tmp_path, driver):
    tree = make_cpufreq_tree(str(tmp_path), [0, 1], {0: 3_000_000, 1: 800_000}, 800_000, 3_000_000,
                             driver=driver)
    before = cpufreq_files(tree)
    freq, kernel = CpuFreq(tree, [0, 1]), CpufreqDriver(tree, 2)
    levels = freq.levels([0, 1], 3)
    assert levels == [800_000, 1_900_000, 3_000_000]  # listed (acpi-cpufreq) or spread over the range
    with FrequencyPin(freq) as pin:
        for khz in (3_000_000, 800_000, 1_900_000):  # up, down and back: min never above max on the way
            pin.pin([0, 1], khz)
            assert kernel.step() == [khz, khz]
            assert freq.mean_khz([0, 1]) == khz
    assert kernel.step() == [3_000_000, 800_000]  # the settings written back give the old frequencies
    assert cpufreq_files(tree) == before


def test_levels_are_the_listed_frequencies_or_spread_over_the_range(tmp_path):
    listed = make_cpufreq_tree(str(tmp_path / "a"), [0], {0: 2_000_000}, 1_000_000, 2_000_000,
                               [1_000_000, 2_000_000])
    assert CpuFreq(listed, [0]).levels([0], 3) == [1_000_000, 2_000_000]  # never one the driver does not list
    ranged = make_cpufreq_tree(str(tmp_path / "b"), [0], {0: 2_000_000}, 1_000_000, 2_000_000,
                               driver="intel_pstate")
    assert CpuFreq(ranged, [0]).levels([0], 3) == [1_000_000, 1_500_000, 2_000_000]
    assert CpuFreq(ranged, [0]).levels([0], 1) == [2_000_000]


def test_without_a_profile_tracked_cycles_leave_the_time_based_words(topo):
    a = RaplSplitModel("powercap", None, topology=topo).attribute(window(proc(1, 500, 0, 3.2)), {"package": 10.0})
    assert "basis" not in a.model and a.model["parts"]["frequency"] == "not used (time-based model)"
