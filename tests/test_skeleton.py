"""The package's promises that every other issue relies on."""

import subprocess
import sys

import ebpf_energy


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ebpf_energy", *args], capture_output=True, text=True)


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0
    assert ebpf_energy.__version__ in r.stdout


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    assert "Commands" in r.stdout


def test_unknown_command_is_an_error():
    r = run_cli("no-such-command")
    assert r.returncode == 2
    assert "No such command" in r.stderr
