"""``load``'s two parsers give the same answers.

The console script parses a well-formed ``load`` line itself, without
importing click (``ebpf_energy/commands/load_options.py``); click parses
everything else. Each command line below goes to both: where the start-up
parser answers, its keyword arguments are exactly click's; where it does not,
click does (help, errors). Exact, no kernel needed.
"""

import os
import subprocess
import sys

import click
import pytest

from ebpf_energy.commands import load_options
from ebpf_energy.commands.load import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJ = os.path.join(ROOT, "tests", "bpf", "build", "tp_btf_counter.bpf.o")


def click_params(args):
    """What click hands the command, or the exception it raises."""
    try:
        with load.make_context("load", list(args)) as ctx:
            return ctx.params
    except click.exceptions.Exit as e:  # --help
        return e
    except click.ClickException as e:
        return e


WELL_FORMED = [
    [OBJ],
    [OBJ, "--duration", "0"], [OBJ, "-d", "2.5"], [OBJ, "-d0"], ["--duration=1e-3", OBJ], [OBJ, "-d", " 3 "],
    [OBJ, "--no-attach"], [OBJ, "--no-attach", "--attach"], [OBJ, "--attach", "--no-attach"],
    [OBJ, "--set", "a=1", "--set=b=[1,2]", "--max-entries", "m=9", "--program", "p", "--program", "q"],
    [OBJ, "--stats", "--json", "--unpin", "--full", "--explain", "--dry-run"],
    [OBJ, "--dry-run", "--btf", OBJ, "--kconfig", OBJ],
    [OBJ, "--interface", "lo", "--cgroup", "/sys/fs/cgroup", "--netns", "/proc/self/ns/net",
     "--target", "p=lo", "--target", "q=x", "--xdp-mode", "generic"],
    [OBJ, "--xdp-mode=native", "-d", "1", "-d", "2"],  # the last of a repeated option wins
    ["--json", "--", OBJ],
    [OBJ, "--set", "x=-1"],
]

LEFT_TO_CLICK = [
    [], ["--help"], [OBJ, "-h"], [OBJ, "--bogus"], [OBJ, "-x"], [OBJ, OBJ], ["/nonexistent.o"], [ROOT],
    [OBJ, "-d", "nan"], [OBJ, "-d", "inf"], [OBJ, "-d", "-1"], [OBJ, "-d", "1e99"], [OBJ, "-d", "x"],
    [OBJ, "--duration"], [OBJ, "--set"], [OBJ, "--set", "--json"], [OBJ, "--json=1"], [OBJ, "--no-attach=x"],
    [OBJ, "--xdp-mode", "turbo"], [OBJ, "--btf", "/nonexistent"], [OBJ, "--btf", ROOT], [OBJ, "-dx"],
    [OBJ, "-"], ["-", OBJ],
]


@pytest.mark.parametrize("args", WELL_FORMED, ids=lambda a: " ".join(os.path.basename(x) for x in a))
def test_a_well_formed_line_gets_clicks_arguments_without_click(args):
    ours = load_options.parse(args)
    assert ours is not None, "the start-up parser should take this line"
    assert ours == click_params(args)


@pytest.mark.parametrize("args", LEFT_TO_CLICK, ids=lambda a: " ".join(os.path.basename(x) for x in a) or "empty")
def test_anything_else_is_left_to_click(args):
    """Help, errors, and lines whose reading is click's call (``--set --json``
    gives --set the value '--json'): the start-up parser declines them."""
    assert load_options.parse(args) is None


def test_an_unreadable_object_is_left_to_click(tmp_path):
    """click.Path checks the file can be read: so does the start-up parser (as any user)."""
    f = tmp_path / "x.bpf.o"
    f.write_bytes(b"")
    f.chmod(0)
    if os.access(f, os.R_OK):  # root reads anything: the check is moot, both parsers agree
        assert load_options.parse([str(f)]) == click_params([str(f)])
    else:
        assert load_options.parse([str(f)]) is None


def test_every_option_is_in_the_table_once():
    table = {d for o in load_options.OPTIONS for d in o.decls}
    ours = {d for p in load.params if isinstance(p, click.Option) for d in p.opts + p.secondary_opts}
    assert {d for t in table for d in t.split("/")} == ours
    assert [p.name for p in load.params] == [load_options.OBJECT] + [o.dest for o in load_options.OPTIONS]


def _stderr(entry, *args):
    code = f"import sys; sys.argv = ['ebpf-energy', *sys.argv[1:]]; from {entry} import main; main()"
    return subprocess.run([sys.executable, "-c", code, "load", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.mark.parametrize("args", [[OBJ, "--set", "novalue"], [OBJ, "--btf", OBJ],
                                  [OBJ, "--max-entries", "m=x", "--dry-run"],
                                  [OBJ, "--dry-run", "--interface", "lo"]])
def test_a_usage_error_found_while_running_reads_as_clicks(args):
    """Found by the work itself (not the parser): the same words, usage line and status 2 on both paths."""
    fast, slow = _stderr("ebpf_energy.entry", *args), _stderr("ebpf_energy.cli", *args)
    assert fast.returncode == slow.returncode == 2
    assert fast.stderr == slow.stderr and "Traceback" not in fast.stderr
    assert "Usage: ebpf-energy load [OPTIONS] OBJECT" in fast.stderr
