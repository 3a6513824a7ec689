"""The power-model options every energy-reporting command shares.

``@model_options`` adds them; ``model_from_options(**kwargs)`` turns the
parsed values into ``(model, meter)`` with the one precedence rule of
:mod:`ebpf_energy.model.select`, printing warnings on stderr and turning
meter/profile failures into a one-sentence ``click.ClickException``.
"""

import os

import click

from ebpf_energy.commands._numbers import MAX_WATTS_PER_CPU, Number
METER_CHOICES = ["auto", "powercap", "perf", "none"]

powercap_root_option = click.option(
    "--powercap-root", type=click.Path(file_okay=False), envvar="EBPF_ENERGY_POWERCAP_ROOT", default=None,
    help="Read RAPL from this powercap tree instead of /sys/class/powercap (env EBPF_ENERGY_POWERCAP_ROOT).")



def _topology_root(ctx, param, value):
    """--topology-root reaches every reader (models, samplers, calibrate)
    through its environment variable, as --runtime-root does: one setting for
    the whole run, subprocesses included. A tree that is no topology is bad
    input: one line, exit 2."""
    from ebpf_energy.topology import ENV, TopologyError, read_topology, sampler_kwargs

    if value:
        os.environ[ENV] = value
    try:
        sampler_kwargs(read_topology())  # and names only CPUs this machine has
    except TopologyError as e:
        raise click.BadParameter(str(e), param_hint="--topology-root") from None
    return value


def _profile_file(ctx, param, value):
    """--profile FILE is read when the options are parsed: a missing file, or
    one that is no profile, is bad input (one line naming the file, exit 2)
    before anything is loaded or run, as every other bad option value."""
    if value is None:
        return None
    from ebpf_energy.calibration.profile import ProfileError, load

    try:
        load(value)
    except ProfileError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None
    return value


topology_root_option = click.option(
    "--topology-root", type=click.Path(file_okay=False), envvar="EBPF_ENERGY_TOPOLOGY_ROOT", default=None,
    expose_value=False, callback=_topology_root,
    help="Read the core classes (P/E cores, cpu_capacity, cpufreq) from this tree laid out like /sys "
         "(default /sys; env EBPF_ENERGY_TOPOLOGY_ROOT).")

_OPTIONS = [
    click.option("-p", "--power", type=Number(min=0, min_open=True, max=MAX_WATTS_PER_CPU, unit="W"), default=None, metavar="WATTS",
                 help="Fixed model: watts per busy CPU (overrides any meter or profile)."),
    click.option("--profile", type=click.Path(dir_okay=False), default=None, metavar="FILE", callback=_profile_file,
                 help="Use this calibration profile (default: the saved one, if it fits this CPU)."),
    click.option("--no-profile", is_flag=True, help="Ignore any saved calibration profile."),
    powercap_root_option,
    topology_root_option,
    click.option("--meter", type=click.Choice(METER_CHOICES), default="auto", show_default=True,
                 help="Energy meter: the best available, a given one, or none."),
    click.option("--idle-share", is_flag=True, help="Spread idle energy over processes by CPU share."),
]


def model_options(func):
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def model_from_options(power=None, profile=None, no_profile=False, powercap_root=None, meter="auto",
                       idle_share=False, warn=None, **_ignored):
    """``(model, meter)`` from the options; extra keyword arguments are ignored so
    a command can pass its whole ``**kwargs``."""
    from ebpf_energy.calibration.profile import ProfileError
    from ebpf_energy.model.select import choose_model
    from ebpf_energy.rapl.errors import RaplError

    if warn is None:
        def warn(message):
            click.echo(f"ebpf-energy: warning: {message}", err=True)
    if power is not None and profile:
        raise click.UsageError("-p/--power and --profile choose different models: give one")
    try:
        return choose_model(watts=power, profile_path=profile, no_profile=no_profile, powercap_root=powercap_root,
                            meter_kind=meter, idle_share=idle_share, warn=warn)
    except ProfileError as e:  # only --profile's own file raises (a broken saved one is warned about)
        raise click.BadParameter(str(e), param_hint="--profile") from None
    except RaplError as e:
        raise click.ClickException(str(e)) from None
