"""Numeric command-line values with a range: NaN, infinity and absurd sizes
are refused when the options are parsed, in one line, before anything runs.

click's own ``FloatRange`` lets ``nan`` and ``inf`` through (``-d inf`` then
overflowed ``select``, ``-p inf`` printed JSON that is not JSON, ``--interval
nan`` spun a CPU). Every numeric option of every command uses :class:`Number`.
"""

import math
import os

import click

from ebpf_energy.commands._limits import (MAX_CARBON_G_PER_KWH, MAX_COUNT, MAX_JOULES,  # noqa: F401 (re-exported)
                                         MAX_WATTS_PER_CPU, PID_MAX_LIMIT, YEAR_S)


def _show(v) -> str:
    """1,000,000 rather than 1e+06: a limit a person can read."""
    return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"


class Number(click.ParamType):
    """A finite int or float in ``[min, max]`` (either end open when asked)."""

    def __init__(self, min=None, max=None, min_open=False, max_open=False, integer=False, unit=""):
        self.min, self.max = min, max
        self.min_open, self.max_open = min_open, max_open
        self.integer, self.unit = integer, unit
        self.name = "integer" if integer else "number"

    def _range(self):
        lo = "" if self.min is None else f"{'more than' if self.min_open else 'from'} {_show(self.min)}"
        if self.max is None:
            hi = ""
        elif self.max_open:
            hi = f"{'and ' if lo else ''}less than {_show(self.max)}"
        else:
            hi = f"{'and at most' if self.min_open else 'to' if lo else 'at most'} {_show(self.max)}"
        text = " ".join(x for x in (lo, hi) if x)
        return text + (f" {self.unit}" if self.unit and text else "")

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            v = value
        else:
            text = str(value).strip()
            try:
                v = int(text, 10) if self.integer else float(text)
            except ValueError:
                self.fail(f"{value!r} is not {'a whole number' if self.integer else 'a number'}"
                          + (f" ({self._range()})" if self._range() else ""), param, ctx)
        if isinstance(v, float) and not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number ({self._range() or 'any finite value'})", param, ctx)
        if self.min is not None and (v < self.min or (self.min_open and v == self.min)) or \
                self.max is not None and (v > self.max or (self.max_open and v == self.max)):
            self.fail(f"{value!r} is out of range ({self._range()})", param, ctx)
        return v


def seconds(min=0.0, min_open=False, max=YEAR_S):
    return Number(min=min, max=max, min_open=min_open, unit="s")


def count(min=1, max=MAX_COUNT):
    return Number(min=min, max=max, integer=True)


def codecarbon_path(ctx, param, value):
    """``--codecarbon-csv``: refused up front when it cannot take our rows
    (the module, with its platform/uuid imports, only when the option is given)."""
    if value is None:
        return None
    from ebpf_energy.codecarbon_csv import check_option

    return check_option(ctx, param, value)


def listen_address(ctx, param, value):
    """``--listen HOST:PORT``, checked when the options are parsed: a bad one is
    a usage error (exit 2), as every other bad value."""
    from ebpf_energy.exporter import ExporterError, parse_listen

    try:
        parse_listen(value)
    except ExporterError as e:
        raise click.BadParameter(str(e).removeprefix("--listen "), ctx=ctx, param=param) from None
    return value


def writable_file(ctx, param, value):
    """A report file checked before the work starts: its folder must exist and
    take a file (found only at the end, a long run's report was lost)."""
    if value is None:
        return None
    folder = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"{value}: its folder {folder} does not exist", ctx=ctx, param=param)
    if not os.path.exists(value) and not os.access(folder, os.W_OK):
        raise click.BadParameter(f"{value}: its folder {folder} is not writable", ctx=ctx, param=param)
    return value


def plot_file(ctx, param, value):
    """``--plot FILE`` checked when parsed, as ``-o`` is: a suffix that picks
    no format, or a folder that is missing, is a usage error before anything
    runs (found at the end, the plot of the whole run was lost)."""
    if value is None:
        return None
    from ebpf_energy.plot import SUFFIXES

    if not value.lower().endswith(SUFFIXES):
        raise click.BadParameter(f"{value}: the file name must end in {', '.join(SUFFIXES)} (that picks the format)",
                                 ctx=ctx, param=param)
    return writable_file(ctx, param, value)
