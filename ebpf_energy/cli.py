"""The ``ebpf-energy`` command line.

Sub-commands live in ``ebpf_energy.commands.<name>`` and are imported only
when invoked, so ``ebpf-energy run -- true`` does not pay for pyelftools,
cffi or the power models it does not use.
"""

import importlib

import click

from ebpf_energy import __version__
from ebpf_energy.entry import guarded

# name -> (module, attribute, one-line help shown by --help without importing)
COMMANDS = {
    "load": ("ebpf_energy.commands.load", "load", "Load any BPF object, attach it, show programs and maps."),
    "monitor": ("ebpf_energy.commands.monitor", "monitor", "Per-process CPU time and energy, measured with eBPF."),
    "traditional": ("ebpf_energy.commands.traditional", "traditional", "The same report from polling /proc."),
    "compare": ("ebpf_energy.commands.compare", "compare", "Run both monitors on one workload and compare them."),
    "calibrate": ("ebpf_energy.commands.calibrate", "calibrate", "Fit idle watts and watts per CPU-second from RAPL."),
    "run": ("ebpf_energy.commands.run", "run", "Measure one command's whole process tree."),
    "exporter": ("ebpf_energy.commands.exporter", "exporter", "Serve per-process energy to Prometheus."),
    "dashboard": ("ebpf_energy.commands.dashboard", "dashboard", "Live energy charts in the browser (and /metrics)."),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def list_commands(self, ctx):
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            if e.name != module:  # the command is there, something it imports is not: say so
                raise
            return None

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(name):
    """A command whose module is not written yet is not offered."""
    import importlib.util  # --help only: a command's own start-up does not pay for it

    return importlib.util.find_spec(COMMANDS[name][0]) is not None




class OutputGuard(LazyGroup):
    """Every command: a full disk or a closed pipe ends as :func:`entry.guarded` says."""

    def invoke(self, ctx):
        # here, not only in main(): click's own main turns EPIPE into exit 1
        # before main() below could see it
        return guarded(lambda: super(OutputGuard, self).invoke(ctx))

    def main(self, *args, **kwargs):
        return guarded(lambda: super(OutputGuard, self).main(*args, **kwargs))


@click.group(cls=OutputGuard, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ebpf-energy")
def main():
    """Which processes spend this machine's energy, measured with eBPF.

    Every command that reports energy says which power model produced it.
    """
