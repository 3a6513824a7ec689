"""``ebpf-energy calibrate``: fit idle watts and watts per CPU-second on RAPL,
or per GHz-second per core class where cpufreq lets it pin frequencies.

Exit status: 0 a credible profile was fitted (and saved); 1 no usable meter
or bad input; 4 the fit is not credible (reason given, nothing saved);
128 + the signal when interrupted (130 for Ctrl-C, 143 for SIGTERM; workers killed, nothing saved).
"""

import json
import os
import signal
import sys

import click

from ebpf_energy.commands._numbers import Number, count, seconds
from ebpf_energy.commands._options import powercap_root_option, topology_root_option

EXIT_NOT_CREDIBLE = 4


def _levels(text, ncpus):
    if text is None:
        return list(range(ncpus + 1))
    try:
        levels = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers", param_hint="--levels")
    if not levels or levels[0] < 0:
        raise click.BadParameter("levels are numbers of busy CPUs, >= 0", param_hint="--levels")
    if levels[-1] > 4 * ncpus:
        raise click.BadParameter(f"{levels[-1]} busy CPUs on a {ncpus}-CPU machine", param_hint="--levels")
    over = [v for v in levels if v > ncpus]
    if over:
        click.echo(f"ebpf-energy calibrate: warning: level(s) {', '.join(map(str, over))} ask for more busy CPUs "
                   f"than the {ncpus} here: those workers share CPUs, and the fit uses the busy time measured",
                   err=True)
    return levels


def _default_output(simulated):
    from ebpf_energy.calibration.profile import default_path

    path = default_path()
    # a simulated fit never replaces a real profile at the default location
    return os.path.join(os.path.dirname(path), "profile-simulated.json") if simulated else path


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt(signum)


def _cgroup_v2_dir(ctx, param, value):
    """A cgroup v2 folder (it has cpu.stat), refused up front otherwise."""
    if value is not None and not os.path.exists(os.path.join(value, "cpu.stat")):
        raise click.BadParameter(f"{value} is not a cgroup v2 folder (no cpu.stat)", ctx=ctx, param=param)
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@powercap_root_option
@topology_root_option
@click.option("--meter", "meter_kind", type=click.Choice(["auto", "powercap", "perf"]), default="auto",
              show_default=True, help="Which RAPL interface to read.")
@click.option("--levels", default=None, metavar="N,N,...", help="Busy-CPU levels (default 0,1,...,ncpus).")
@click.option("--seconds-per-level", type=seconds(min=0.2, max=86400.0), default=5.0, show_default=True,
              help="How long each load level runs in each round.")
@click.option("--rounds", type=count(max=1000), default=3, show_default=True,
              help="How many times every level is run (in a shuffled order each round).")
@click.option("--sample-interval", type=seconds(min=0.01, max=3600.0), default=0.25, show_default=True,
              help="Seconds per sample within a level.")
@click.option("--settle", type=seconds(max=3600.0), default=0.3, show_default=True,
              help="Seconds to wait after changing the load before sampling.")
@click.option("--min-r2", type=Number(min=0, max=1), default=0.9, show_default=True,
              help="Refuse fits with a lower R².")
@click.option("--seed", type=Number(min=0, max=2**63, integer=True), default=None, help="Seed for the shuffled level order.")
@click.option("--cpu-cgroup", type=click.Path(file_okay=False, exists=True), default=None, callback=_cgroup_v2_dir,
              help="Run the workers in this cgroup v2 folder and take busy time from its cpu.stat instead of "
                   "/proc/stat (for tests on a shared machine; the idle fit then includes other load).")
@click.option("--frequencies", "n_freq", type=count(min=0, max=16), default=3, show_default=True,
              help="Where cpufreq exists: run each class's load at this many pinned frequencies and fit W per "
                   "GHz-second; 0 keeps the time-based fit (W per CPU-second).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to save the profile (default ~/.config/ebpf-energy/profile.json, "
                   "or profile-simulated.json beside it for a simulated meter).")
@click.option("--no-save", is_flag=True, help="Fit and report, but save nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON (stdout carries only JSON).")
def calibrate(powercap_root, meter_kind, levels, seconds_per_level, rounds, sample_interval, settle, min_r2, seed,
              cpu_cgroup, n_freq, output, no_save, as_json):
    """Fit idle watts and watts per CPU-second against a RAPL meter.

    Spinning worker processes drive the CPUs through load levels (several
    rounds, shuffled order) while the meter and /proc/stat are sampled; the
    fit is power = idle_watts + watts_per_cpu_second x busy CPUs (one slope
    per core class on a hybrid machine, each class loaded on its own).

    \b
    Where cpufreq exists (under /sys or --topology-root), each class's load
    also runs at --frequencies pinned frequencies (lowest to highest), and the
    fit is power = idle_watts + k_class x busy CPUs x GHz: watts per
    GHz-second per class, each with its 95% CI; the profile says
    "basis": "frequency" and lists the frequencies seen. A frequency is
    pinned with the userspace governor's scaling_setspeed where the driver
    offers it, else scaling_min_freq = scaling_max_freq; every file changed
    is written back on exit, error, Ctrl-C and SIGTERM (not after SIGKILL:
    then the last pinned frequency stays until reset). Unwritable cpufreq
    files: refused before any load (exit 1). Without cpufreq the fit stays
    time-based and says "frequency: unknown (no cpufreq)".
    """
    from ebpf_energy.calibration import profile as profiles
    from ebpf_energy.calibration.runner import NotCredible, build_profile, plan, sample_levels
    from ebpf_energy.model.calibrated import CalibratedModel

    if output and not no_save and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        # before the minutes of calibration, and without creating folders a typo names
        raise click.BadParameter(f"the folder of {output} does not exist", param_hint="--output")
    from ebpf_energy.rapl.errors import RaplError
    from ebpf_energy.rapl.choose import open_meter

    def warn(message):
        click.echo(f"ebpf-energy: warning: {message}", err=True)

    from ebpf_energy.topology import read_topology

    ncpus = os.cpu_count() or 1
    topology = read_topology()  # --topology-root has checked it
    level_list = _levels(levels, ncpus)
    try:
        meter = open_meter(meter_kind, powercap_root=powercap_root, warn=warn)
    except RaplError as e:
        raise click.ClickException(str(e)) from None
    if meter is None:
        raise click.ClickException(
            "no RAPL meter here (no powercap zones and no perf power PMU): calibration needs one. To try it "
            "without hardware: `python -m ebpf_energy.rapl.simulated DIR &` then "
            "`ebpf-energy calibrate --powercap-root DIR`.")
    from contextlib import nullcontext

    from ebpf_energy.calibration.classes import ClassPlan
    from ebpf_energy.cpustat import busy_seconds, cgroup_busy_seconds

    from ebpf_energy.cpufreq import CpuFreq, CpuFreqError, FrequencyPin

    freq = CpuFreq(topology.root, [c for cl in topology.classes for c in cl.cpus]) \
        if topology.cpufreq and n_freq else None
    if freq is not None and not freq.present:
        freq = None
    class_khz = None
    if freq is not None:
        from ebpf_energy.calibration.frequency import class_frequencies

        try:
            class_khz = class_frequencies(freq, [list(c.cpus) for c in topology.classes], n_freq)
        except CpuFreqError as e:
            meter.close()
            raise click.ClickException(f"cannot calibrate per GHz-second: {e}") from None
    steps = plan(level_list, rounds, seed)
    cpu_reader = (lambda: cgroup_busy_seconds(cpu_cgroup)) if cpu_cgroup else busy_seconds
    per_class = ClassPlan(topology, level_list if levels else None, rounds, seed, cpu_cgroup) \
        if topology.hybrid else None
    if class_khz is not None:  # every class at each frequency (one class, "cpu", on a homogeneous machine)
        per_class = ClassPlan(topology, level_list if levels else None, rounds, seed, cpu_cgroup, class_khz)
    pinner = FrequencyPin(freq) if freq is not None else None
    placement = {}
    if per_class is not None:  # each core class loaded on its own, workers pinned to it
        steps, cpu_reader, level_list = per_class.steps, per_class.cpu_reader(), per_class.levels
        placement = {"class_cpus": per_class.class_cpus, "class_cgroups": per_class.class_cgroups}
    if pinner is not None:
        cpus_of = per_class.class_cpus
        placement.update(pin=lambda c, khz: pinner.pin(cpus_of[c], khz),
                         khz_reader=lambda: [freq.mean_khz(cpus) for cpus in cpus_of])
    settings = {"cpu_source": cpu_cgroup or "/proc/stat", "levels": level_list,
                "seconds_per_level": seconds_per_level, "rounds": rounds,
                "sample_interval": sample_interval, "settle": settle, "seed": seed,
                **({"frequencies_khz": dict(zip(topology.names, class_khz))} if class_khz else {})}
    show_progress = not as_json and sys.stdout.isatty() and sys.stderr.isatty()
    old_term = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        with meter, (per_class or nullcontext()), (pinner or nullcontext()):
            if pinner is not None:  # refused before any load when the files cannot be written
                pinner.check([c for cpus in per_class.class_cpus for c in cpus])
            if show_progress:
                with click.progressbar(length=len(steps), label="calibrating", file=sys.stderr, show_eta=True,
                                       item_show_func=lambda s: s) as bar:
                    def on_step(i, rnd, level):
                        bar.update(1 if i else 0, f"round {rnd + 1}/{rounds}, {level} busy CPU(s)")
                    samples = sample_levels(meter, steps, seconds_per_level, sample_interval, settle, on_step,
                                            cpu_reader, cpu_cgroup, **placement)
                    bar.update(1)
            else:
                samples = sample_levels(meter, steps, seconds_per_level, sample_interval, settle, None, cpu_reader,
                                        cpu_cgroup, **placement)
            prof = build_profile(samples, meter, settings, min_r2, topology)
    except KeyboardInterrupt as e:
        sig = e.args[0] if e.args else signal.SIGINT
        click.echo(f"ebpf-energy: calibration stopped by {signal.Signals(sig).name}; workers stopped, no profile "
                   "saved", err=True)
        sys.exit(128 + sig)
    except (RaplError, CpuFreqError) as e:
        raise click.ClickException(str(e)) from None
    except NotCredible as e:
        if as_json:
            out = {"schema": 1, "error": str(e), "credible": False}
            if e.fit:
                out.update({k: e.fit[k] for k in ("idle_watts", "watts_per_cpu_second", "r2", "ci95", "residuals",
                                                  "basis", "class_watts_per_ghz_second") if k in e.fit})
            click.echo(json.dumps(out))
        click.echo(f"ebpf-energy: calibration refused: {e}", err=True)
        sys.exit(EXIT_NOT_CREDIBLE)
    finally:
        signal.signal(signal.SIGTERM, old_term)

    path = None
    if not no_save:
        path = profiles.save(prof, output or _default_output(prof["simulated"]))
        prof["_path"] = path
    prof["path"] = path
    prof["model"] = CalibratedModel(prof, path=path, topology=topology).describe()
    prof["credible"] = True
    if as_json:
        click.echo(json.dumps({k: v for k, v in prof.items() if not k.startswith("_")}))
        return
    ci = prof["ci95"]
    click.echo(f"meter:           {prof['meter']}{' (SIMULATED)' if prof['simulated'] else ''}")
    click.echo(f"idle power:      {prof['idle_watts']:.3f} W   (95% CI {ci['idle_watts'][0]:.3f} .. "
               f"{ci['idle_watts'][1]:.3f})")
    if prof.get("basis") == "frequency":
        for name, k in prof["class_watts_per_ghz_second"].items():
            lo, hi = ci["class_watts_per_ghz_second"][name]
            ghz = ", ".join(f"{v / 1e6:g}" for v in prof["frequencies_khz"][name])
            click.echo(f"per GHz-second:  {k:.3f} W on {name} cores (95% CI {lo:.3f} .. {hi:.3f}; "
                       f"run at {ghz} GHz)")
    elif "class_watts" in prof:
        for name, k in prof["class_watts"].items():
            lo, hi = ci["class_watts"][name]
            click.echo(f"per CPU-second:  {k:.3f} W on {name} cores (95% CI {lo:.3f} .. {hi:.3f})")
    else:
        click.echo(f"per CPU-second:  {prof['watts_per_cpu_second']:.3f} W   (95% CI "
                   f"{ci['watts_per_cpu_second'][0]:.3f} .. {ci['watts_per_cpu_second'][1]:.3f})")
    click.echo(f"R²:              {prof['r2']:.4f}   ({len(prof['samples'])} samples)")
    freq_word = ("pinned per class, fit per GHz-second (basis: frequency)" if prof.get("basis") == "frequency"
                 else topology.frequency if not topology.cpufreq
                 else "cpufreq present, not pinned (--frequencies 0)" if not n_freq
                 else "cpufreq present, but no cpuN/cpufreq to pin: time-based fit")
    click.echo(f"core classes:    {', '.join(c['name'] + ' ' + c['cpus'] for c in prof['topology']['classes'])}"
               f" ({prof['topology']['source']}); frequency: {freq_word}")
    for level, r in prof["residuals"].items():
        click.echo(f"  level {level:>3}: mean residual {r['mean_w']:+.3f} W, rms {r['rms_w']:.3f} W (n={r['n']})")
    for d, f in prof["per_domain"].items():
        key = "class_watts_per_ghz_second" if "class_watts_per_ghz_second" in f else "class_watts"
        slopes = (", ".join(f"{k:.3f} on {n}" for n, k in f[key].items()) if key in f
                  else f"{f['watts_per_cpu_second']:.3f}")
        unit = "GHz-second" if key == "class_watts_per_ghz_second" else "CPU-second"
        click.echo(f"  {d}: {f['idle_watts']:.3f} W idle + {slopes} W per {unit} (R² {f['r2']:.3f})")
    click.echo(f"profile saved:   {path}" if path else "profile not saved (--no-save)")
