"""Core classes from /sys-like trees (hybrid Intel, Arm capacities, homogeneous)."""

import os
import subprocess
import sys

import pytest

from ebpf_energy.topology import (MAX_CLASSES, NO_CPUFREQ, TopologyError, format_cpulist, parse_cpulist,
                                  read_topology, sampler_kwargs)
from topology_fixtures import capacity_tree, hybrid_tree, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cpulists_round_trip():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert format_cpulist([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"
    assert parse_cpulist("") == []
    for bad in ("a", "3-1", "-1", "0-x"):
        with pytest.raises(TopologyError):
            parse_cpulist(bad)


def test_hybrid_intel_tree(tmp_path):
    t = read_topology(hybrid_tree(tmp_path, p="0-3", e="4-11", online="0-11"))
    assert t.names == ["P", "E"] and t.hybrid and t.source.startswith("hybrid")
    assert t.cpu_class(12) == [0] * 4 + [1] * 8
    assert t.describe()["classes"] == [{"name": "P", "cpus": "0-3"}, {"name": "E", "cpus": "4-11"}]
    assert t.frequency == NO_CPUFREQ
    from ebpf_energy.loader.syscall import num_possible_cpus

    n = num_possible_cpus()  # the sampler's table: one entry per CPU that can exist here
    if n >= 12:
        assert sampler_kwargs(t)["cpu_class"] == [0] * 4 + [1] * 8 + [0] * (n - 12)
    else:  # a tree naming CPUs this machine lacks describes another machine: refused, said
        with pytest.raises(TopologyError, match="which this machine does not have"):
            sampler_kwargs(t)


def test_this_vm_declared_as_one_p_and_one_e_core(tmp_path):
    t = read_topology(hybrid_tree(tmp_path))
    assert t.cpu_class(2) == [0, 1] and [c.cpus for c in t.classes] == [(0,), (1,)]


def test_arm_capacities_make_classes_biggest_first(tmp_path):
    t = read_topology(capacity_tree(tmp_path, [512, 512, 1024, 1024, 1024, 1024]))
    assert t.names == ["big", "LITTLE"] and t.source == "cpu_capacity"
    assert t.cpu_class() == [1, 1, 0, 0, 0, 0]
    assert [c.capacity for c in t.classes] == [1024, 512]


def test_more_capacities_than_classes_are_merged(tmp_path):
    t = read_topology(capacity_tree(tmp_path, [100, 110, 400, 700, 1000, 1024]))
    assert len(t.classes) == MAX_CLASSES
    assert sorted(cpu for c in t.classes for cpu in c.cpus) == list(range(6))
    assert t.cpu_class()[0] == t.cpu_class()[1]  # the two closest (100, 110) share a class


def test_equal_capacities_and_no_tree_are_one_class(tmp_path):
    t = read_topology(capacity_tree(tmp_path, [1024, 1024]))
    assert not t.hybrid and t.names == ["cpu"] and t.cpu_class() == [0, 0]
    assert sampler_kwargs(t) == {}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not read_topology(str(empty)).hybrid


def test_cpufreq_is_seen_where_it_exists(tmp_path):
    t = read_topology(hybrid_tree(tmp_path, cpufreq=True))
    assert t.cpufreq and t.frequency != NO_CPUFREQ
    write(os.path.join(tmp_path, "b", "devices", "system", "cpu", "cpu0", "cpufreq", "scaling_cur_freq"), 1000)
    assert read_topology(str(tmp_path / "b")).cpufreq


def test_this_machine():
    t = read_topology("/sys")
    assert sum(len(c.cpus) for c in t.classes) >= 1
    policies = "/sys/devices/system/cpu/cpufreq"
    has = os.path.isdir("/sys/devices/system/cpu/cpu0/cpufreq") or (
        os.path.isdir(policies) and any(n.startswith("policy") for n in os.listdir(policies)))
    assert t.cpufreq == has
    if not has:
        assert t.frequency == "unknown (no cpufreq)"


def test_bad_trees_are_refused(tmp_path):
    with pytest.raises(TopologyError, match="both P and E"):
        read_topology(hybrid_tree(tmp_path / "a", p="0-1", e="1"))
    with pytest.raises(TopologyError, match="not a CPU list"):
        read_topology(hybrid_tree(tmp_path / "b", p="zero", e="1"))
    with pytest.raises(TopologyError, match="not a number"):
        read_topology(capacity_tree(tmp_path / "c", ["big", 512]))
    with pytest.raises(TopologyError, match="not a folder"):
        read_topology(str(tmp_path / "missing"))


@pytest.mark.parametrize("command", ["traditional", "calibrate"])
def test_bad_topology_root_is_one_line_exit_2(tmp_path, command):
    bad = hybrid_tree(tmp_path / "bad", p="0-1", e="1")
    for root in (bad, str(tmp_path / "missing")):
        p = subprocess.run([sys.executable, "-m", "ebpf_energy", command, "--topology-root", root, "-d", "0.1"]
                           if command == "traditional" else
                           [sys.executable, "-m", "ebpf_energy", command, "--topology-root", root],
                           capture_output=True, text=True, cwd=ROOT, timeout=120,
                           env={**os.environ, "PYTHONPATH": ROOT})
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr and "--topology-root" in p.stderr


def test_environment_variable_reaches_the_report(tmp_path):
    tree = hybrid_tree(tmp_path / "t")
    p = subprocess.run([sys.executable, "-m", "ebpf_energy", "traditional", "-d", "0.3", "--json", "-p", "10"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": ROOT, "EBPF_ENERGY_TOPOLOGY_ROOT": tree})
    assert p.returncode == 0, p.stderr
    import json

    r = json.loads(p.stdout)
    assert [c["name"] for c in r["model"]["classes"]] == ["P", "E"]
    # /proc cannot tell which class a process ran on: its time is unknown per class, said so
    assert [c["class"] for c in r["classes"]] == ["P", "E", "(unknown)"]
    assert r["classes"][2]["cpu_ns"] == r["total_cpu_ns"]
    assert r["frequency"] == "unknown (no cpufreq)" and r["model"]["parts"]["frequency"] == "unknown"
    assert r["model"]["parts"]["class_weights"] == "default"


def test_cpu_lists_beyond_any_kernel_or_this_machine_are_refused(tmp_path):
    """A CPU list like 1-100000000 used to take minutes and gigabytes; a tree
    naming CPUs this machine lacks was taken without a word."""
    import os
    import subprocess
    import sys

    from topology_fixtures import hybrid_tree
    from ebpf_energy.topology import TopologyError, parse_cpulist

    with pytest.raises(TopologyError, match="no kernel has more than 8,192 CPUs"):
        parse_cpulist("1-100000000")
    n = os.cpu_count()
    tree = hybrid_tree(tmp_path / "t", p="0", e=f"1-{n + 5}")
    r = subprocess.run([sys.executable, "-m", "ebpf_energy", "monitor", "-d", "0.1", "-p", "10", "--topology-root",
                        tree], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "which this machine does not have" in r.stderr and "Traceback" not in r.stderr
