"""What ``ebpf-energy load`` imports: only what that command and that object need.

The start-up of a whole ``load`` process is mostly imports (README "Load
speed"), so which modules a command imports is part of its cost. The set is
exact, unlike a timing: each check runs the real command in a fresh
interpreter and reads ``sys.modules`` when it is done.
"""

import json
import os
import subprocess
import sys

import pytest

BUILD = os.path.join(os.path.dirname(__file__), "bpf", "build")

# Runs the command as the console script does, then prints every module it imported.
SCRIPT = r"""
import json, sys
from ebpf_energy.entry import main
sys.argv = ["ebpf-energy"] + sys.argv[1:]
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""

# Never needed to load and attach a tp_btf program and print its maps.
NOT_FOR_TP_BTF = {
    "ebpf_energy.loader.struct_ops",        # only objects with .struct_ops sections
    "ebpf_energy.loader.core",              # only objects with CO-RE records
    "ebpf_energy.loader.asm",
    "ebpf_energy.loader.ringbuf",
    "ebpf_energy.loader.iterator",
    "ebpf_energy.commands._dry_run",        # --dry-run's printer
    "ebpf_energy.monitor", "ebpf_energy.report", "ebpf_energy.model",  # the energy side
    "elftools", "pycparser",                # our own ELF reader; the pre-built cffi module
    "gzip",                                 # /proc/config.gz, for __kconfig externs only
    "click",                                # a well-formed line is parsed by commands.load_options
    "dataclasses", "inspect", "typing",     # loader.record instead: ~10 ms of start-up
}


def _imports(*args):
    r = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=120)
    out = json.loads(r.stderr.strip().splitlines()[-1])
    assert out["code"] in (0, None), r.stderr
    return set(out["modules"])


@pytest.mark.kernel
def test_tp_btf_load_imports_only_its_phases():
    mods = _imports("load", os.path.join(BUILD, "tp_btf_counter.bpf.o"), "--duration", "0")
    assert "ebpf_energy.loader.collection" in mods  # it did load
    assert not {m for m in mods if m.split(".")[0] in NOT_FOR_TP_BTF or m in NOT_FOR_TP_BTF
                or any(m.startswith(p + ".") for p in NOT_FOR_TP_BTF)}
    # one attach kind: the one its section names (and `named`, which decides which
    # program takes a target given on the command line: light, no sockets)
    assert {m for m in mods if m.startswith("ebpf_energy.loader.link.")} == \
        {"ebpf_energy.loader.link.auto", "ebpf_energy.loader.link.base", "ebpf_energy.loader.link.tracing",
         "ebpf_energy.loader.link.named"}
    assert "socket" not in mods


@pytest.mark.parametrize("obj, module", [("core_task.bpf.o", "ebpf_energy.loader.core"),
                                         ("struct_ops_cc.bpf.o", "ebpf_energy.loader.struct_ops")])
def test_a_phase_is_imported_when_the_object_has_it(obj, module):
    """The lazy imports are the real ones: an object that needs the phase gets it (no root: --dry-run)."""
    assert module in _imports("load", os.path.join(BUILD, obj), "--dry-run", "--json")


def test_help_imports_no_command():
    mods = _imports("--help")
    assert not {m for m in mods if m.startswith(("ebpf_energy.loader", "ebpf_energy.commands."))}
