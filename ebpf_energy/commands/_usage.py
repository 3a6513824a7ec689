"""Usage errors and output for work that runs with or without click.

``load``'s work (:mod:`load_run`) runs under click and from the console
script's start-up path that leaves click out (:mod:`load_options` says why).
It raises :class:`Usage`; :func:`as_click` turns that into click's own
exception, so the message, the usage line and the exit status 2 are click's
either way.
"""

import sys


class Usage(Exception):
    """A command line that cannot work, found before anything was loaded."""

    def __init__(self, message: str, param_hint: str = None):
        super().__init__(message)
        self.message, self.param_hint = message, param_hint


def echo(message="", file=None, err=False) -> None:
    """One line, flushed at once (as click.echo: a reader sees each line as it is written)."""
    out = file if file is not None else (sys.stderr if err else sys.stdout)
    out.write(f"{message}\n")
    out.flush()


def as_click(e: Usage, ctx=None):
    import click

    if e.param_hint:
        return click.BadParameter(e.message, ctx=ctx, param_hint=e.param_hint)
    return click.UsageError(e.message, ctx=ctx)


def show_as_click(e: Usage, command: str, args) -> int:
    """Print ``e`` exactly as click prints a usage error of ``ebpf-energy
    COMMAND ARGS`` (usage line, help hint, message); return its exit status."""
    from click.utils import _detect_program_name

    from ebpf_energy.cli import main as group

    parent = group.make_context(_detect_program_name(), [command], resilient_parsing=True)
    cmd = group.get_command(parent, command)
    ctx = cmd.make_context(command, list(args), parent=parent, resilient_parsing=True)
    exc = as_click(e, ctx)
    exc.show()
    return exc.exit_code
