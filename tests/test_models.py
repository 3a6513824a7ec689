"""The calibrated and RAPL-split models, and which model is chosen (the precedence in the README's "The commands")."""

import json
import os
import time

import pytest

from ebpf_energy.calibration import profile as profiles
from ebpf_energy.cpustat import busy_seconds
from ebpf_energy.model.calibrated import CalibratedModel
from ebpf_energy.model.fixed import FixedWattsModel
from ebpf_energy.model.rapl_split import RaplSplitModel
from ebpf_energy.model.select import choose_model
from ebpf_energy.rapl.errors import NoMeterError
from ebpf_energy.rapl.simulated import SimulatedPowercap
from ebpf_energy.usage import ProcessUsage, UsageWindow


def window(cpu_ms, duration_s=1.0, idle_ms=0):
    procs = {pid: ProcessUsage(pid=pid, comm=f"p{pid}", cpu_ns=int(ms * 1e6)) for pid, ms in cpu_ms.items()}
    return UsageWindow(source="procfs", start_ns=0, end_ns=int(duration_s * 1e9), ncpus=2, processes=procs,
                       idle_ns=int(idle_ms * 1e6))


PROFILE = {"idle_watts": 8.0, "watts_per_cpu_second": 12.0, "_path": "/x/profile.json", "meter": "powercap"}


def test_calibrated_model():
    a = CalibratedModel(PROFILE).attribute(window({1: 500, 2: 250}, duration_s=2.0))
    assert a.energy_j == {1: pytest.approx(6.0), 2: pytest.approx(3.0)}
    assert a.idle_energy_j == pytest.approx(16.0) and a.total_energy_j == pytest.approx(25.0)
    d = a.model
    assert d["name"] == "calibrated" and d["measured"] is False and d["profile"] == "/x/profile.json"
    assert d["idle_watts"] == 8.0 and d["watts_per_cpu_second"] == 12.0 and d["meter"] is None
    s = CalibratedModel(PROFILE, idle_share=True).attribute(window({1: 500, 2: 250}, duration_s=2.0))
    assert s.idle_energy_j == 0 and s.energy_j[1] == pytest.approx(6.0 + 16 * 2 / 3)
    assert s.total_energy_j == pytest.approx(25.0)


@pytest.mark.parametrize("profile", [None, PROFILE])
@pytest.mark.parametrize("idle_share", [False, True])
def test_rapl_split_conserves_the_measured_total(profile, idle_share):
    w = window({1: 600, 2: 300, 3: 0}, duration_s=1.0, idle_ms=1100)
    meter_j = {"package": 30.0, "dram": 2.0, "core": 20.0}
    a = RaplSplitModel("powercap", profile, idle_share).attribute(w, meter_j)
    assert a.total_energy_j == pytest.approx(30.0, rel=1e-12)  # package only; dram reported apart
    assert a.domains_j == meter_j
    assert a.energy_j[1] == pytest.approx(2 * a.energy_j[2]) and a.energy_j[3] == 0
    assert a.model["name"] == "rapl" and a.model["measured"] is True and a.model["meter"] == "powercap"
    if idle_share:
        assert a.idle_energy_j == 0
    elif profile:
        assert a.idle_energy_j == pytest.approx(8.0) and a.model["idle_rule"] == "profile"
    else:  # idle CPU time is its own consumer: 1100 of 2000 CPU-ms
        assert a.idle_energy_j == pytest.approx(30.0 * 1100 / 2000) and a.model["idle_rule"] == "cpu_time_share"


def test_rapl_split_edge_cases():
    m = RaplSplitModel("powercap", PROFILE)
    # measured below the profile's idle floor: all of it is idle, nothing negative
    a = m.attribute(window({1: 100}, duration_s=1.0), {"package": 5.0})
    assert a.idle_energy_j == pytest.approx(5.0) and a.energy_j[1] == 0
    # nobody ran: everything is idle
    a = RaplSplitModel("powercap").attribute(window({}, idle_ms=0), {"package": 3.0})
    assert a.idle_energy_j == 3.0 and a.total_energy_j == 3.0
    # psys-only platforms split psys
    assert RaplSplitModel("powercap").attribute(window({1: 10}), {"psys": 4.0}).total_energy_j == pytest.approx(4.0)
    with pytest.raises(ValueError):
        m.attribute(window({1: 1}), None)


def test_attribution_sums_to_the_simulated_meter_within_0_1_percent():
    """A real interval: processes' CPU from /proc/stat, joules from the simulated meter."""
    with SimulatedPowercap(max_energy_range_uj=2_000_000, noise=0.02, seed=5) as sim:
        model, meter = choose_model(powercap_root=sim.root, no_profile=True)
        with meter:
            r0, c0, t0 = meter.read(), busy_seconds(), time.monotonic_ns()
            x = 0
            while time.monotonic_ns() - t0 < 400e6:
                x += 1  # burn some CPU in this process
            r1, c1, t1 = meter.read(), busy_seconds(), time.monotonic_ns()
        busy_ns = int((c1 - c0) * 1e9)
        w = window({os.getpid(): busy_ns * 0.7 / 1e6, 1: busy_ns * 0.3 / 1e6}, duration_s=(t1 - t0) / 1e9,
                   idle_ms=max(2 * (t1 - t0) / 1e6 - busy_ns / 1e6, 0))
        measured = r1.delta(r0)
        a = model.attribute(w, measured)
    assert isinstance(model, RaplSplitModel) and meter.name == "powercap"
    assert measured["package"] > 0 and "dram" in a.domains_j
    assert a.total_energy_j == pytest.approx(measured["package"], rel=1e-3)
    assert sum(a.energy_j.values()) + a.idle_energy_j == pytest.approx(measured["package"], rel=1e-3)


# -- selection -----------------------------------------------------------------

@pytest.fixture
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path


def save_default(config_home, **extra):
    prof = {"schema": 1, "idle_watts": 6.0, "watts_per_cpu_second": 10.0, **profiles.host_identity(), **extra}
    return profiles.save(prof)


@pytest.fixture
def sim():
    with SimulatedPowercap() as s:
        yield s


def test_power_flag_wins_over_everything(config_home, sim):
    save_default(config_home)
    model, meter = choose_model(watts=20.0, powercap_root=sim.root)
    assert isinstance(model, FixedWattsModel) and model.watts == 20.0 and meter is None


def test_meter_beats_profile_and_uses_it_for_idle(config_home, sim):
    path = save_default(config_home)
    notes = []
    model, meter = choose_model(powercap_root=sim.root, warn=notes.append)
    try:
        assert isinstance(model, RaplSplitModel) and meter is not None
        d = model.describe()
        assert d["profile"] == path and d["idle_rule"] == "profile" and d["simulated"] is True
        assert any("simulated" in n for n in notes)  # a simulated meter is said out loud
    finally:
        meter.close()


def test_profile_without_meter_gives_calibrated(config_home):
    path = save_default(config_home)
    model, meter = choose_model(meter_kind="none")
    assert isinstance(model, CalibratedModel) and meter is None and model.describe()["profile"] == path
    model, _ = choose_model(meter_kind="none", no_profile=True)
    assert isinstance(model, FixedWattsModel) and model.watts == 15.0


def test_simulated_profile_never_chosen_automatically(config_home):
    save_default(config_home, simulated=True)
    notes = []
    model, _ = choose_model(meter_kind="none", warn=notes.append)
    assert isinstance(model, FixedWattsModel)
    assert any("simulated meter" in n and "--profile" in n for n in notes)


def test_explicit_simulated_profile_is_used_and_said(config_home, tmp_path):
    path = str(tmp_path / "sim.json")
    profiles.save({"idle_watts": 3.0, "watts_per_cpu_second": 4.0, "simulated": True, **profiles.host_identity()},
                  path)
    notes = []
    model, _ = choose_model(profile_path=path, meter_kind="none", warn=notes.append)
    assert isinstance(model, CalibratedModel) and model.watts_per_cpu_second == 4.0
    assert any("simulated" in n for n in notes)


def test_foreign_cpu_profile_ignored_with_warning(config_home):
    save_default(config_home, cpu_model="Some Other CPU 9000")
    notes = []
    model, _ = choose_model(meter_kind="none", warn=notes.append)
    assert isinstance(model, FixedWattsModel)
    assert any("Some Other CPU 9000" in n for n in notes)
    save_default(config_home, cores=(os.cpu_count() or 1) + 6)
    notes.clear()
    model, _ = choose_model(meter_kind="none", warn=notes.append)
    assert isinstance(model, FixedWattsModel) and any("cores" in n for n in notes)


def test_broken_saved_profile_warns_broken_explicit_raises(config_home):
    os.makedirs(os.path.dirname(profiles.default_path()), exist_ok=True)
    with open(profiles.default_path(), "w") as f:
        f.write("{not json")
    notes = []
    model, _ = choose_model(meter_kind="none", warn=notes.append)
    assert isinstance(model, FixedWattsModel) and any("not valid JSON" in n for n in notes)
    with pytest.raises(profiles.ProfileError):
        choose_model(profile_path=profiles.default_path(), meter_kind="none")


def test_nothing_available_is_fixed_15_and_said(config_home):
    notes = []
    model, meter = choose_model(meter_kind="none", warn=notes.append)
    assert isinstance(model, FixedWattsModel) and model.watts == 15.0 and meter is None
    if not os.path.isdir("/sys/class/powercap"):
        model, meter = choose_model(warn=notes.append)  # auto, and this machine has no RAPL
        assert isinstance(model, FixedWattsModel) and meter is None
        assert any("no RAPL meter" in n for n in notes)
        with pytest.raises(NoMeterError):
            choose_model(meter_kind="powercap")


def test_model_options_cli(config_home, sim):
    import click
    from click.testing import CliRunner

    from ebpf_energy.commands._options import model_from_options, model_options

    @click.command()
    @model_options
    def cmd(**kw):
        model, meter = model_from_options(**kw)
        if meter:
            meter.close()
        click.echo(json.dumps(model.describe()))

    r = CliRunner().invoke(cmd, [], env={"EBPF_ENERGY_POWERCAP_ROOT": sim.root})
    assert r.exit_code == 0 and json.loads(r.output.splitlines()[-1])["name"] == "rapl"
    r = CliRunner().invoke(cmd, ["-p", "9"])
    assert json.loads(r.output)["watts_per_cpu"] == 9.0
    r = CliRunner().invoke(cmd, ["--meter", "powercap", "--powercap-root", str(config_home / "none")])
    assert r.exit_code == 1 and "no powercap tree" in r.output
    r = CliRunner().invoke(cmd, ["--profile", str(config_home / "missing.json"), "--meter", "none"])
    assert r.exit_code == 2 and "no calibration profile" in r.output  # a bad --profile is a usage error


class _VirtualMachine:
    """A meter of 8 W idle + 12 W per busy CPU-second on a virtual clock, the
    load a square wave of 0.2 then 1.8 busy CPUs, switching every 0.2 s: the
    estimator is stepped on this clock, so the fit is exact, whatever the host's load."""

    IDLE_W, K = 8.0, 12.0

    def __init__(self):
        self.t_ns = 0

    def busy(self):  # busy CPU-seconds so far
        t = self.t_ns / 1e9
        full, part = divmod(t, 0.4)
        return full * (0.2 + 1.8) * 0.2 + (0.2 * min(part, 0.2) + 1.8 * max(part - 0.2, 0.0))

    def read(self):
        from ebpf_energy.rapl.meter import Reading

        return Reading(self.t_ns, {"package": self.IDLE_W * self.t_ns / 1e9 + self.K * self.busy()})


def test_idle_power_is_fitted_from_the_run_without_a_profile():
    """No profile, a meter of 8 W idle + 12 W per CPU-second, a load that
    varies: the run's own readings give the idle power, and a process is
    charged its dynamic energy (the CPU-time-share rule gave it far less)."""
    from ebpf_energy.model.idle_estimate import IdlePowerEstimator

    vm = _VirtualMachine()
    model = RaplSplitModel("powercap")
    model.estimator = IdlePowerEstimator(vm, busy=vm.busy, clock=lambda: vm.t_ns)
    r0, b0 = vm.read(), vm.busy()
    for _ in range(25):  # 2.5 s in steps of 0.1 s, off the load's 0.2 s beat
        model.estimator.step()
        vm.t_ns += 100_000_000 + 7_000_000
    r1, b1 = vm.read(), vm.busy()
    model.end()
    fit = model.estimator.estimate()
    assert fit is not None and fit["idle_watts"] == pytest.approx(8.0, rel=0.02), fit
    d = (r1.timestamp_ns - r0.timestamp_ns)
    w = UsageWindow("test", 0, d, 2, {7: ProcessUsage(7, "work", int((b1 - b0) * 1e9))},
                    idle_ns=int(2 * d - (b1 - b0) * 1e9))
    a = model.attribute(w, r1.delta(r0))
    assert a.model["idle_rule"] == "fitted_from_run" and a.model["idle_fit"]["samples"] == 24
    assert a.energy_j[7] == pytest.approx(12.0 * (b1 - b0), rel=0.03)
    assert a.total_energy_j == pytest.approx(r1.delta(r0)["package"])
    plain = RaplSplitModel("powercap").attribute(w, r1.delta(r0))
    assert plain.model["idle_rule"] == "cpu_time_share" and plain.energy_j[7] < 0.95 * a.energy_j[7]


def test_a_steady_load_keeps_the_plain_rule():
    """One load level cannot separate idle from dynamic power: no fit, and the report says which rule it used."""
    from ebpf_energy.model.idle_estimate import IdlePowerEstimator

    class Meter:
        def read(self):
            from ebpf_energy.rapl.meter import Reading
            return Reading(time.monotonic_ns(), {"package": time.monotonic() * 20.0})

    est = IdlePowerEstimator(Meter(), busy=lambda: time.monotonic() * 1.0, period=0.01).start()
    time.sleep(0.2)
    est.stop()
    assert len(est.x) >= 8 and est.estimate() is None


def test_the_model_line_says_why_and_reads_well(config_home, sim):
    """-p with a meter present is not "no energy meter"; options that do
    nothing in the chosen model are said; parameters are not 16-digit floats."""
    from ebpf_energy.report import model_sentence

    said = []
    m, meter = choose_model(watts=10.0, powercap_root=sim.root, idle_share=True, meter_kind="powercap",
                            warn=said.append)
    assert meter is None and "(-p given)" in model_sentence(m.describe())
    assert "no energy meter" not in model_sentence(m.describe())
    assert any("--idle-share does nothing with -p" in w for w in said)
    assert any("--meter powercap does nothing with -p" in w for w in said)
    line = model_sentence(CalibratedModel({"idle_watts": 7.9914036810774345, "watts_per_cpu_second": 12.0}).describe())
    assert "idle_watts=7.991" in line and "7.9914036" not in line and "watts_per_cpu_second=12.0" in line
