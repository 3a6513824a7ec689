"""The ``ebpf-energy`` console script.

A well-formed ``load`` command line runs without importing click
(:mod:`ebpf_energy.commands.load_options` says why: it is a third of a small
load's process); every other command, ``--help`` and every usage error go
through click (:mod:`ebpf_energy.cli`). Both paths end the same way on a
full disk or a closed pipe (:func:`guarded`).
"""

import errno
import os
import sys

WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def main():
    args = sys.argv[1:]
    try:
        if args[:1] == ["load"]:
            from ebpf_energy.commands import load_options

            params = load_options.parse(args[1:])
            if params is not None:
                sys.exit(_load(params, args[1:]))
        from ebpf_energy.cli import main as cli
    except KeyboardInterrupt:  # Ctrl-C while starting up: as click ends a command it interrupts
        _aborted()
    cli()


def _aborted():
    try:
        sys.stderr.write("\nAborted!\n")
    except OSError:
        pass
    sys.exit(1)


def _load(params, args) -> int:
    from ebpf_energy.commands import load_run
    from ebpf_energy.commands._usage import Usage, show_as_click

    try:
        guarded(lambda: load_run.run(**params))
    except Usage as e:
        return show_as_click(e, "load", args)
    except KeyboardInterrupt:  # a second Ctrl-C while stopping: as click ends it
        _aborted()
    return 0


def guarded(work):
    """Run ``work()``: a report that stdout cannot take (a full disk, a quota)
    ends in one line and exit status 74 (EX_IOERR), not a traceback; a reader
    that went away (``| head``) ends it quietly with 0."""
    try:
        return work()
    except BrokenPipeError:
        quiet_stdout()
        sys.exit(0)
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        quiet_stdout()
        try:  # stderr may be the full one: the status still says it
            sys.stderr.write(f"ebpf-energy: cannot write the output: {e.strerror}\n")
            sys.stderr.flush()
        except OSError:
            pass
        sys.exit(74)


def quiet_stdout():
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
