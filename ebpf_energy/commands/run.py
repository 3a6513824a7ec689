"""``ebpf-energy run -- COMMAND``: what one command's whole process tree cost, like ``perf stat``.

Exit status: the command's own when it failed (128 + the signal when a
signal killed it, 126/127 when it could not be run); else 75 (or
``--budget-exit-code``) when over ``--budget-joules``; else 0. The report goes
to stderr, or to ``-o FILE`` (text, ``--json`` or ``--csv``), so the
command's own output stays as it was; ``--json`` without ``-o`` goes to
stdout.
"""

import json
import math
import shlex
import sys

import click

from ebpf_energy.commands._numbers import MAX_CARBON_G_PER_KWH, MAX_JOULES, Number, codecarbon_path, count, writable_file
from ebpf_energy.commands._options import model_from_options, model_options
from ebpf_energy.commands._report_run import owner_by_option, runtime_root_option

OVER_BUDGET_EXIT = 75  # EX_TEMPFAIL: not an exit status commands commonly use for their own failures
SUMMARY_KEYS = ("energy_j", "cpu_ns", "wall_s", "carbon_g")
CSV_COLUMNS = ("run", "exit_code", "signal", "wall_s", "cpu_ns", "energy_j", "carbon_g", "processes",
               "left_running", "method", "model")


def _stats(values):
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _csv(out: dict) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for i, r in enumerate(out.get("runs") or [out], 1):
        w.writerow([i, r["exit_code"], r.get("signal") or "", f"{r['wall_s']:.6f}", r["cpu_ns"],
                    f"{r['energy_j']:.9f}", f"{r['carbon_g']:.9f}", "" if r["processes"] is None else r["processes"],
                    "" if r.get("left_running") is None else r["left_running"], r["method"], r["model"]["name"]])
    return buf.getvalue()


def _model_sentence(model: dict) -> str:
    from ebpf_energy.report import model_sentence

    return model_sentence(model)


def _text(result: dict, intensity: float) -> str:
    lines = [f"\n ebpf-energy run: {shlex.join(result['command'])}", ""]
    wall = result["wall_s"]
    procs = result["processes"]
    lines.append(f"   {wall:12.3f} s    wall time")
    lines.append(f"   {result['cpu_ns'] / 1e9:12.3f} s    CPU time"
                 + (f"  ({procs} process{'es' if procs != 1 else ''})" if procs is not None
                    else "  (rusage; process count needs root)"))
    lines.append(f"   {result['energy_j']:12.3f} J    energy  ({_model_sentence(result['model'])})")
    lines.append(f"   {result['carbon_g'] * 1000:12.3f} mg   CO2e at {intensity:g} g/kWh")
    classes = result.get("classes") or []
    if len(classes) > 1:
        lines.append("   per core class: " + ", ".join(f"{c['class']} {c['cpu_ns'] / 1e9:.3f} s {c['energy_j']:.3f} J"
                                                      for c in classes))
    if result.get("signal"):
        lines.append(f"\n   the command was killed by {result['signal']} (exit status {result['exit_code']})")
    if result.get("left_running"):
        n = result["left_running"]
        many = n != 1
        lines.append(f"\n   {n} process{'es' if many else ''} of the command's tree {'are' if many else 'is'} still "
                     f"running, left to run: counted up to now only (--wait counts {'them' if many else 'it'} whole)")
    if "runs" in result:
        lines[1:] = [ln for ln in lines[1:] if "wall time" not in ln and "CPU time" not in ln
                     and "J    energy" not in ln and "CO2e at" not in ln]
        lines.append("   run  exit    wall (s)     CPU (s)  energy (J)   CO2e (mg)")
        for i, r in enumerate(result["runs"], 1):
            lines.append(f"   {i:3d}  {r['exit_code']:4d}  {r['wall_s']:10.3f}  {r['cpu_ns'] / 1e9:10.3f}  "
                         f"{r['energy_j']:10.3f}  {r['carbon_g'] * 1000:10.3f}")
        for name in ("mean", "stdev", "min", "max"):
            v = result[name]
            lines.append(f"   {name:>9}  {v['wall_s']:10.3f}  {v['cpu_ns'] / 1e9:10.3f}  {v['energy_j']:10.3f}  "
                         f"{v['carbon_g'] * 1000:10.3f}")
        lines.append(f"   energy by {_model_sentence(result['model'])}; CO2e at {intensity:g} g/kWh")
    if result.get("budget_joules") is not None:
        over = result["energy_j"] - result["budget_joules"]
        verdict = (f"OVER budget by {over:.3f} J ({100 * over / result['budget_joules']:.1f}%)" if over > 0
                   else f"within budget ({-over:.3f} J to spare)")
        lines.append(f"\n   budget {result['budget_joules']:g} J: {verdict}")
    return "\n".join(lines) + "\n"


def _groups_text(result: dict, by) -> str:
    """run --by: the tree's rows per container, pod or unit (the monitor's table)."""
    if not by:
        return ""
    groups = result.get(by + "s")
    if groups is None:
        return f"\n   no breakdown by {by}: it needs the eBPF monitor (root, or CAP_BPF + CAP_PERFMON)\n"
    from ebpf_energy.report import DEFAULT_TABLE_TOP, _rows_for, fold_groups

    head, rows = _rows_for({by + "s": fold_groups(groups, DEFAULT_TABLE_TOP, by)}, by)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    lines = ["", f"   by {by}:"] + ["   " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                                    for r in [head] + rows]
    return "\n".join(lines) + "\n"


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object (on stdout unless -o).")
@click.option("--csv", "as_csv", is_flag=True, help="The report as CSV, a row per run (on stdout unless -o).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None, metavar="FILE",
              callback=writable_file,
              help="Write the report to FILE instead of stderr/stdout (the command's own output stays apart).")
@click.option("--codecarbon-csv", "codecarbon_csv", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              callback=codecarbon_path,
              help="Also append the run to FILE in CodeCarbon's emissions.csv columns (kWh, kg CO2e).")
@click.option("--wait", "wait_tree", is_flag=True,
              help="Wait until every process of the command's tree has ended, and count them whole "
                   "(default: like `time`, leave background processes running and say so).")
@click.option("--budget-exit-code", type=Number(min=1, max=255, integer=True), default=OVER_BUDGET_EXIT,
              show_default=True, metavar="N", help="Exit status when over --budget-joules.")
@click.option("--budget-joules", type=Number(min=0, min_open=True, max=MAX_JOULES, unit="J"), default=None, metavar="J",
              help="Exit with --budget-exit-code (and say by how much) when the command spends more than J joules.")
@click.option("--repeat", type=count(max=10_000), default=1, show_default=True, metavar="N",
              help="Run N times; report each run, the mean and the standard deviation.")
@click.option("--carbon-intensity", type=Number(min=0, max=MAX_CARBON_G_PER_KWH, unit="g/kWh"), default=475.0, show_default=True,
              metavar="G_PER_KWH", help="Grid carbon intensity for the CO2e figure (default: world average).")
@owner_by_option
@runtime_root_option
@model_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(as_json, as_csv, output, codecarbon_csv, wait_tree, budget_exit_code, budget_joules, repeat, carbon_intensity, command,
        by, **model_kw):
    """Run COMMAND and measure its whole process tree: wall time, CPU time,
    energy by the active model, and carbon.

    Every descendant is counted, short-lived ones included (a cgroup per run
    and the eBPF monitor; without root, the CPU time comes from rusage and
    the process count is unknown). Put `--` before the command.
    """
    from ebpf_energy.measurement import RunError, run_command

    if as_json and as_csv:
        raise click.UsageError("--json and --csv are alternatives: give one")
    if not command[0].strip():  # `run -- ""`: exec of "" said "Permission denied"
        raise click.BadParameter("the command is empty", param_hint="COMMAND")
    model, meter = model_from_options(**model_kw)
    results = []
    try:
        for _ in range(repeat):
            try:
                r = run_command(list(command), model=model, meter=meter, carbon_intensity=carbon_intensity,
                                wait_for_tree=wait_tree, by=by)
            except RunError as e:
                click.echo(f"ebpf-energy run: {e}", err=True)
                sys.exit(e.exit_code)
            results.append(r.to_dict())
            if r.exit_code != 0:
                break
    finally:
        if meter is not None:
            meter.close()
    out = {"schema": 1, **results[-1], "budget_joules": budget_joules}
    if repeat > 1:
        # the figures of the whole are the means; each run is reported as it was
        out["runs"] = results
        for k in SUMMARY_KEYS:
            values = [r[k] for r in results]
            mean, stdev = _stats(values)
            out.setdefault("mean", {})[k] = mean
            out.setdefault("stdev", {})[k] = stdev
            out.setdefault("min", {})[k] = min(values)
            out.setdefault("max", {})[k] = max(values)
            out[k] = mean
    out["over_budget"] = bool(budget_joules is not None and out["energy_j"] > budget_joules)
    if as_json:
        text, to_stdout = json.dumps(out, indent=2, allow_nan=False) + "\n", True
    elif as_csv:
        text, to_stdout = _csv(out), True
    else:
        text, to_stdout = _text(out, carbon_intensity) + _groups_text(out, by), False
    if codecarbon_csv:
        from ebpf_energy import codecarbon_csv as cc

        try:
            for r in results:
                cc.append(codecarbon_csv, cc.row(duration_s=r["wall_s"], energy_j=r["energy_j"],
                                                 carbon_g=r["carbon_g"], cpu_s=r["cpu_ns"] / 1e9))
        except OSError as e:
            click.echo(f"ebpf-energy run: cannot write {codecarbon_csv}: {e.strerror}", err=True)
            sys.exit(74)
    if output:
        try:
            with open(output, "w") as f:
                f.write(text)
        except OSError as e:
            click.echo(f"ebpf-energy run: cannot write the report to {output}: {e.strerror}", err=True)
            sys.exit(74)  # EX_IOERR
    else:
        click.echo(text, err=not to_stdout, nl=False)
    code = results[-1]["exit_code"]
    if code:
        sys.exit(code)
    if out["over_budget"]:
        sys.exit(budget_exit_code)
