"""Iterators (link, then read the output) and perf events (a cpu-clock
sampling event per CPU), for real."""

import os
import time

import pytest

from ebpf_energy.loader import syscall
from ebpf_energy.loader.errors import AttachError
from ebpf_energy.loader.link import auto, perf_event
from ebpf_energy.loader.link.iterator import Iterator
from ebpf_energy.loader.object import BpfObject

from test_syscall import wait_gone

pytestmark = pytest.mark.kernel


def _comm(tid):
    with open(f"/proc/self/task/{tid}/comm") as f:
        return f.read().strip()


def test_task_iterator_lists_every_thread_of_ours(test_objects):
    with BpfObject.open(test_objects("iters")) as obj:
        obj.load(only=["dump_tasks"])
        obj.attach()
        it = obj.programs["dump_tasks"].link
        assert isinstance(it, Iterator) and it.info()["type_name"] == "iter"
        lines = set(bytes(it.read()).decode().splitlines())
        for tid in os.listdir("/proc/self/task"):
            assert f"{os.getpid()} {tid} {_comm(tid)}" in lines
        again = set(bytes(it.read()).decode().splitlines())  # every read() is a fresh pass
        assert f"{os.getpid()} {os.getpid()} {_comm(os.getpid())}" in again
        link_id = it.info()["id"]
    wait_gone(syscall.link_get_fd_by_id, link_id)


def test_task_iterator_for_one_process_lists_exactly_its_threads(test_objects):
    """bpf_iter_link_info.task.pid: the link itself is limited to our process."""
    with BpfObject.open(test_objects("iters")) as obj:
        obj.load(only=["dump_tasks"])
        with Iterator(obj.programs["dump_tasks"].fd, "task", pid=os.getpid()) as it:
            lines = bytes(it.read()).decode().splitlines()
        want = sorted(f"{os.getpid()} {tid} {_comm(tid)}" for tid in os.listdir("/proc/self/task"))
        assert sorted(lines) == want


def test_map_iterator_lists_our_map(test_objects):
    with BpfObject.open(test_objects("iters")) as obj:
        obj.load(only=["dump_maps"])
        obj.attach()
        it = obj.programs["dump_maps"].link
        lines = bytes(it.read()).decode().splitlines()
        assert f"{obj.maps['numbers'].info()['id']} 77 numbers" in lines


def test_cgroup_iterator_walks_from_the_cgroup_given(test_objects):
    top = os.path.join("/sys/fs/cgroup/unified", f"ebpf-energy-iter-{os.getpid()}")
    child = os.path.join(top, "child")
    os.mkdir(top)
    os.mkdir(child)
    try:
        with BpfObject.open(test_objects("iters")) as obj:
            obj.load(only=["dump_cgroups"])
            obj.attach()
            assert "a cgroup" in obj.programs["dump_cgroups"].needs
            fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
            try:
                passes = {}
                for order in ("self", "descendants_pre"):
                    with Iterator(obj.programs["dump_cgroups"].fd, "cgroup", cgroup_fd=fd, order=order) as it:
                        passes[order] = bytes(it.read()).decode().splitlines()
            finally:
                os.close(fd)
        assert passes["self"] == [f"{os.stat(top).st_ino} 1"]
        assert passes["descendants_pre"] == [f"{os.stat(top).st_ino} 1", f"{os.stat(child).st_ino} 2"]
    finally:
        os.rmdir(child)
        os.rmdir(top)


def test_iterators_needing_a_map_say_so():
    assert "a map" in auto.needs("iter/bpf_map_elem")
    assert "a map" in auto.needs("iter/bpf_sk_storage_map")
    assert auto.needs("iter/task") is None


def _busy_on(cpu, until):
    """Run on ``cpu`` until ``until()`` holds (the cpu-clock event there fires
    while this CPU runs); a generous bound only turns a hang into a failure."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        deadline = time.monotonic() + 120
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError(f"no cpu-clock sample on CPU {cpu} in 120 s of running there")
            sum(range(20000))
    finally:
        os.sched_setaffinity(0, old)


def test_perf_event_on_cpu_clock_samples_on_every_cpu(test_objects):
    period = 200_000  # ns of cpu-clock between samples
    with BpfObject.open(test_objects("perf_sample")) as obj:
        obj.load()
        obj.attach()
        p = obj.programs["on_sample"]
        assert not p.attached and "a perf event" in p.needs
        cpus = perf_event.online_cpus()
        links = perf_event.attach_perf_event(p.fd, "cpu-clock", period=period)
        assert len(links) == len(cpus)
        assert {link.info()["type_name"] for link in links.links} == {"perf_event"}
        samples = obj.maps["samples"]
        for cpu in cpus:
            _busy_on(cpu, lambda: samples[0][cpu]["count"] > 0)
            seen = samples[0][cpu]
            assert seen["cpu"] == cpu and seen["period"] == period
        ids = [link.info()["id"] for link in links.links]
        links.close()
        after = [samples[0][c]["count"] for c in cpus]
        sum(range(200000))
        assert [samples[0][c]["count"] for c in cpus] == after  # detached: no more samples
    for i in ids:
        wait_gone(syscall.link_get_fd_by_id, i)


def test_unknown_software_event_is_an_attach_error(test_objects):
    with BpfObject.open(test_objects("perf_sample")) as obj:
        obj.load()
        with pytest.raises(AttachError, match="unknown software event 'cpu-clocks'"):
            perf_event.attach_perf_event(obj.programs["on_sample"].fd, "cpu-clocks")
