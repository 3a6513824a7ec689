"""``ebpf-energy run -- COMMAND``: what one command's whole process tree cost, like ``perf stat``.

Exit status: the command's own when it failed; else 3 when over
``--budget-joules``; else 0. The report goes to stderr (JSON to stdout with
``--json``), so the command's own output stays as it was.
"""

import json
import math
import sys

import click

from ebpf_energy.commands._numbers import MAX_CARBON_G_PER_KWH, MAX_JOULES, Number, count
from ebpf_energy.commands._options import model_from_options, model_options

OVER_BUDGET_EXIT = 3


def _stats(values):
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _model_sentence(model: dict) -> str:
    from ebpf_energy.report import model_sentence

    return model_sentence(model)


def _text(result: dict, intensity: float) -> str:
    lines = [f"\n ebpf-energy run: {' '.join(result['command'])}", ""]
    wall = result["wall_s"]
    procs = result["processes"]
    lines.append(f"   {wall:12.3f} s    wall time")
    lines.append(f"   {result['cpu_ns'] / 1e9:12.3f} s    CPU time"
                 + (f"  ({procs} process{'es' if procs != 1 else ''})" if procs is not None
                    else "  (rusage; process count needs root)"))
    lines.append(f"   {result['energy_j']:12.3f} J    energy  ({_model_sentence(result['model'])})")
    lines.append(f"   {result['carbon_g'] * 1000:12.3f} mg   CO2e at {intensity:g} g/kWh")
    if "runs" in result:
        m, s = result["mean"], result["stdev"]
        lines.append(f"\n   {len(result['runs'])} runs: energy {m['energy_j']:.3f} J +- {s['energy_j']:.3f}, "
                     f"CPU {m['cpu_ns'] / 1e9:.3f} s +- {s['cpu_ns'] / 1e9:.3f}, "
                     f"wall {m['wall_s']:.3f} s +- {s['wall_s']:.3f}")
    if result.get("budget_joules") is not None:
        over = result["energy_j"] - result["budget_joules"]
        verdict = (f"OVER budget by {over:.3f} J ({100 * over / result['budget_joules']:.1f}%)" if over > 0
                   else f"within budget ({-over:.3f} J to spare)")
        lines.append(f"\n   budget {result['budget_joules']:g} J: {verdict}")
    return "\n".join(lines) + "\n"


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout.")
@click.option("--budget-joules", type=Number(min=0, min_open=True, max=MAX_JOULES, unit="J"), default=None, metavar="J",
              help=f"Exit {OVER_BUDGET_EXIT} (and say by how much) when the command spends more than J joules.")
@click.option("--repeat", type=count(max=10_000), default=1, show_default=True, metavar="N",
              help="Run N times; report each run, the mean and the standard deviation.")
@click.option("--carbon-intensity", type=Number(min=0, max=MAX_CARBON_G_PER_KWH, unit="g/kWh"), default=475.0, show_default=True,
              metavar="G_PER_KWH", help="Grid carbon intensity for the CO2e figure (default: world average).")
@model_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(as_json, budget_joules, repeat, carbon_intensity, command, **model_kw):
    """Run COMMAND and measure its whole process tree: wall time, CPU time,
    energy by the active model, and carbon.

    Every descendant is counted, short-lived ones included (a cgroup per run
    and the eBPF monitor; without root, the CPU time comes from rusage and
    the process count is unknown). Put `--` before the command.
    """
    from ebpf_energy.measurement import RunError, run_command

    model, meter = model_from_options(**model_kw)
    results = []
    try:
        for _ in range(repeat):
            try:
                r = run_command(list(command), model=model, meter=meter, carbon_intensity=carbon_intensity)
            except RunError as e:
                click.echo(f"ebpf-energy run: {e}", err=True)
                sys.exit(127)
            results.append(r.to_dict())
            if r.exit_code != 0:
                break
    finally:
        if meter is not None:
            meter.close()
    last = results[-1]
    out = {"schema": 1, **last}
    out["budget_joules"] = budget_joules
    if repeat > 1:
        out["runs"] = results
        keys = ("energy_j", "cpu_ns", "wall_s")
        stats = {k: _stats([r[k] for r in results]) for k in keys}
        out["mean"] = {k: v[0] for k, v in stats.items()}
        out["stdev"] = {k: v[1] for k, v in stats.items()}
        out["energy_j"] = out["mean"]["energy_j"]
    out["over_budget"] = bool(budget_joules is not None and out["energy_j"] > budget_joules)
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(_text(out, carbon_intensity), err=True, nl=False)
    code = last["exit_code"]
    if code:
        sys.exit(code if code > 0 else 128 - code)
    if out["over_budget"]:
        sys.exit(OVER_BUDGET_EXIT)
