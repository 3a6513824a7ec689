"""perf power PMU: parsing a fake sysfs tree, reading counters, and the errors."""

import errno
import os
import struct

import pytest

from ebpf_energy.rapl.errors import MeterFormatError, MeterPermissionError, NoMeterError
from ebpf_energy.rapl.choose import open_meter
from ebpf_energy.rapl.meter import DEFAULT_PMU_ROOT
from ebpf_energy.rapl.perf_pmu import PerfPowerMeter, parse_cpumask, parse_event_config, parse_pmu
from rapl_fixtures import pmu, write

SCALE = 2.3283064365386962890625e-10  # 2^-32 J


def test_parse_fake_tree(tmp_path):
    p = parse_pmu(pmu(str(tmp_path)))
    assert p.type == 23 and p.cpus == [0, 2]
    ev = {e.domain: e for e in p.events}
    assert set(ev) == {"package", "core", "dram"}
    assert ev["package"].config == 0x02 and ev["package"].scale == SCALE and ev["package"].unit == "Joules"
    assert ev["dram"].config == 0x03 and ev["dram"].scale == pytest.approx(1.52587890625e-05)


def test_cpumask_and_config_forms():
    assert parse_cpumask("0") == [0]
    assert parse_cpumask("0-3,8\n") == [0, 1, 2, 3, 8]
    assert parse_event_config("event=0x02") == 2
    assert parse_event_config("event=17") == 17
    assert parse_event_config("config=0x1f") == 31


@pytest.mark.parametrize("fname,content,needle", [
    ("type", "power", "should be an integer"),
    ("cpumask", "zero", "should list CPUs"),
    ("cpumask", "", "is empty"),
    ("events/energy-pkg", "umask=", "should look like 'event=0x02'"),
    ("events/energy-pkg.scale", "tiny", "should be a number"),
    ("events/energy-pkg.scale", "-1", "must be positive"),
    ("events/energy-pkg.unit", "Watts", "only Joules"),
])
def test_garbage_is_a_clear_error(tmp_path, fname, content, needle):
    root = pmu(str(tmp_path))
    write(os.path.join(root, fname), content)
    with pytest.raises(MeterFormatError) as e:
        parse_pmu(root)
    assert needle in str(e.value)


def test_no_pmu_or_no_energy_events(tmp_path):
    with pytest.raises(NoMeterError, match="no perf power PMU"):
        parse_pmu(str(tmp_path / "absent"))
    root = pmu(str(tmp_path), events={"gpu": ("event=0x04", "1e-6")})
    with pytest.raises(NoMeterError, match="no energy-pkg"):
        parse_pmu(root)


class FakeCounters:
    """Stands in for the RAPL hardware behind perf_event_open: a memfd per counter
    holding the u64 the kernel would return on read()."""

    def __init__(self):
        self.opened = []  # (type, config, cpu, fd)

    def open(self, type_, config, pid=-1, cpu=0, sample_period=1, wakeup_events=1):
        assert pid == -1 and sample_period == 0  # the power PMU counts, it does not sample
        fd = os.memfd_create(f"rapl-{config}-{cpu}")
        self.opened.append((type_, config, cpu, fd))
        self.set(config, cpu, 0)
        return fd

    def set(self, config, cpu, count):
        for _, c, u, fd in self.opened:
            if (c, u) == (config, cpu):
                os.pwrite(fd, struct.pack("=Q", count), 0)
                os.lseek(fd, 0, os.SEEK_SET)


def test_reader_scales_and_sums_packages(tmp_path):
    hw = FakeCounters()
    with PerfPowerMeter(pmu(str(tmp_path)), opener=hw.open) as m:
        # one counter per package CPU (0 and 2) and domain
        assert sorted((c, u) for _, c, u, _ in hw.opened) == [(1, 0), (1, 2), (2, 0), (2, 2), (3, 0), (3, 2)]
        assert {t for t, _, _, _ in hw.opened} == {23}
        hw.set(2, 0, 3 << 32)  # 3 J on package 0
        hw.set(2, 2, 5 << 31)  # 2.5 J on package 1
        hw.set(3, 0, 65536)  # 1 J of dram
        r = m.read()
        assert r.joules["package"] == pytest.approx(5.5)
        assert r.joules["dram"] == pytest.approx(1.0)
        assert r.packages["package-1"]["package"] == pytest.approx(2.5)
        fds = [fd for *_, fd in hw.opened]
    for fd in fds:  # closed by the meter
        with pytest.raises(OSError):
            os.fstat(fd)


def test_open_refused_names_cap_perfmon(tmp_path):
    opened = []

    def refuse(type_, config, **kw):
        if opened:
            raise OSError(errno.EACCES, "Permission denied")
        opened.append(os.memfd_create("first"))
        return opened[0]

    with pytest.raises(MeterPermissionError, match="CAP_PERFMON"):
        PerfPowerMeter(pmu(str(tmp_path)), opener=refuse)
    with pytest.raises(OSError):  # the counter opened before the failure was closed
        os.fstat(opened[0])


def test_no_power_pmu_on_this_machine_is_a_clear_error():
    """Paired with test_real_power_pmu."""
    if os.path.isdir(DEFAULT_PMU_ROOT):
        pytest.skip("this machine has the power PMU: test_real_power_pmu covers it")
    with pytest.raises(NoMeterError, match="no perf power PMU"):
        open_meter("perf")


@pytest.mark.requires_power_pmu
def test_real_power_pmu():
    if not os.path.isdir(DEFAULT_PMU_ROOT):
        pytest.skip("no perf power PMU on this machine")
    import time

    with open_meter("perf") as m:
        r0 = m.read()
        time.sleep(0.2)
        d = m.read().delta(r0)
    assert 0 < d["package"] < 200


@pytest.mark.skipif(os.geteuid() != 0, reason="system-wide perf events need root")
def test_real_perf_event_open_path_with_a_software_pmu(tmp_path):
    """The default opener (the loader's perf_event_open) and the u64 read, for real:
    a tree describing the software PMU's cpu-clock (type 1, config 0, ns) scaled
    to seconds stands in for the power PMU, which this machine lacks."""
    import time

    root = pmu(str(tmp_path), type_=1, cpumask="0", events={"pkg": ("event=0x00", "1e-9")})
    with PerfPowerMeter(root) as m:
        r0 = m.read()
        time.sleep(0.2)
        r1 = m.read()
    # cpu-clock on CPU 0 advances with wall time (busy or idle)
    assert r1.delta(r0)["package"] == pytest.approx(r1.seconds_since(r0), rel=0.05)
