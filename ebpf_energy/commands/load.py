"""``ebpf-energy load OBJECT`` as a click command: ``--help`` and every
usage message. The options are :data:`load_options.OPTIONS`; the work is
:func:`load_run.run`."""

import click

from ebpf_energy.commands import load_run
from ebpf_energy.commands._numbers import seconds
from ebpf_energy.commands._usage import Usage, as_click
from ebpf_energy.commands.load_options import OBJECT, OPTIONS, XDP_MODES

TYPES = {"seconds": seconds, "file": lambda: click.Path(exists=True, dir_okay=False),
         "choice": lambda: click.Choice(XDP_MODES)}


def _option(o):
    kw = {"help": o.help}
    if o.metavar:
        kw["metavar"] = o.metavar
    if o.kind == "switch":
        return click.option(*o.decls, o.dest, default=o.default, show_default=True, **kw)
    if o.kind == "flag":
        return click.option(*o.decls, o.dest, is_flag=True, **kw)
    if o.kind == "multiple":
        return click.option(*o.decls, o.dest, multiple=True, **kw)
    if o.default is not None:
        kw.update(default=o.default, show_default=True)
    return click.option(*o.decls, o.dest, type=TYPES[o.type]() if o.type in TYPES else None, **kw)


def load(**params):
    """Load a clang-built BPF OBJECT with the pure-Python loader, attach its
    programs, wait, then print each program and each map's decoded contents.

    With --dry-run, do everything before the first bpf() call instead (CO-RE,
    linking, externs, map attributes) and print the finished programs: a
    look at what a loader does, without root, for this kernel or (--btf)
    another.

    Programs whose section names no complete target attach where
    --interface, --cgroup, --netns or --target say (sk_lookup: the caller's
    network namespace by default); without one they stay loaded, not attached.

    Exit status 0 when every selected program loaded and every program told
    where to attach (by its section or a target option) attached; a program
    whose section names no target and that was given none stays loaded, not
    attached, and says what it needs. Otherwise 1, with the reason, after
    cleaning up; 2 for a command line the object or this machine cannot take
    (no such interface, not a cgroup v2 directory, a program that is not
    there or takes no target, a --set or --max-entries value that does not
    fit, an input that is not a regular file); 128+N when signal N cut it
    short (the report is still printed).
    """
    try:
        load_run.run(**params)
    except Usage as e:
        raise as_click(e) from None


for _o in reversed(OPTIONS):
    load = _option(_o)(load)
load = click.argument(OBJECT, metavar="OBJECT", type=click.Path(exists=True, dir_okay=False))(load)
load = click.command()(load)
