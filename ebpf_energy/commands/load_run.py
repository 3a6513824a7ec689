"""What ``ebpf-energy load OBJECT`` does: load any BPF object, attach it, show what the kernel holds.

It is the loader's own front door, and with ``--explain`` its teaching mode:
every section, map, relocation, CO-RE resolution, load and attach is told
on stderr as it happens. No click here: the command line is parsed by
:mod:`load` (click) or, for a well-formed line, by :mod:`load_options`.
"""

import contextlib
import json
import os
import signal
import sys

from ebpf_energy.commands._signals import TerminateOnSignals
from ebpf_energy.commands._targets import EXIT_BAD_TARGET, hint, plan
from ebpf_energy.commands._usage import Usage, echo
from ebpf_energy.loader import explain
from ebpf_energy.loader.errors import LoaderError
from ebpf_energy.loader.link.named import BadTarget, attach as attach_named
from ebpf_energy.loader.map_memory import U32_MAX
from ebpf_energy.loader.map_types import unreadable_reason

MAX_SHOWN = 10000


def parse_value(text: str):
    """``--set`` values: integers (any base), true/false, a JSON array or
    object for an array or struct variable (``[9,8,7,6]``, ``{"a": 1}``), a
    JSON string for text that would read as a number (``'"5"'``), else a string."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{") or (len(stripped) >= 2 and stripped[0] == stripped[-1] == '"'):
        try:
            return json.loads(stripped)
        except ValueError:
            raise Usage(f"{text!r} is not valid JSON (arrays as [1,2,3], structs as "
                        '{"field": 1}, a string as "text")', param_hint="--set") from None
        except RecursionError:
            raise Usage("the value is nested too deeply to be a variable's", param_hint="--set") from None
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _pairs(values, what):
    out = []
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise Usage(f"{item!r} is not NAME=VALUE", param_hint=what)
        out.append((name, value))
    return out


def jsonable(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def map_report(obj, name, m):
    spec = obj.prepared.maps[name]  # the attributes the map was created with
    entry = {"name": name, "type": spec.type_name, "key_size": spec.key_size, "value_size": spec.value_size,
             "max_entries": spec.max_entries}
    try:
        entry["id"] = m.info()["id"]
    except LoaderError:
        entry["id"] = None
    entry["pinned"] = getattr(m, "pin_path", None)  # kept in the kernel after exit unless --unpin
    if spec.struct_ops is not None:
        entry["registered"] = name in obj.struct_ops_links
    reason = unreadable_reason(spec.type)
    if reason:
        entry["entries"] = None
        entry["entries_error"] = f"the entries of {name} cannot be read from user space: {reason}"
    elif spec.origin in ("data", "kconfig") and obj.has_globals(name):
        entry["entries"] = [{"key": 0, "value": jsonable(obj.globals(name).to_dict())}]
    else:
        rows = []
        try:
            for k, v in m.items():
                rows.append({"key": jsonable(k), "value": jsonable(v)})
                if len(rows) >= MAX_SHOWN:
                    entry["truncated"] = True
                    break
        except LoaderError as e:  # a type this kernel reads nothing back from: say so, never fail the load
            entry["entries"] = None
            entry["entries_error"] = f"the entries of {name} cannot be read from user space: {e}"
            return entry
        entry["entries"] = rows
    return entry


def brief(value, items=8):
    """A long array as its first ``items`` elements and a count (the
    monitor's own .bss is ~130 KB as one value): ``--full`` shows it all."""
    if isinstance(value, list):
        head = [brief(v, items) for v in value[:items]]
        return head + [f"... {len(value) - items} more"] if len(value) > items else head
    if isinstance(value, dict):
        return {k: brief(v, items) for k, v in value.items()}
    return value


def program_report(p, target=None):
    """One program's row; ``target`` the link.named.Named it was given, if any."""
    row = {"name": p.name, "section": p.section, "type": p.type_name, "loaded": p.loaded,
           "attached": p.attached, "id": None, "run_cnt": 0, "run_time_ns": 0,
           "target": target.to_dict() if target is not None else
           ({"kind": "section", "value": p.section, "from": "section"} if p.link is not None else None)}
    # given a target that the kernel refused: an attach failure (its "error"), not "manual"
    if p.link is None and not (target is not None and p.attach_error) and (p.needs or p.spec.program_kind.manual):
        # its section names no complete target: loaded, not attached (as libbpf), and what it needs
        row["attach"] = "manual"
        row["needs"] = p.needs or "nothing to attach to: its section names no target"
    if p.loaded:
        info = p.info()
        row.update(id=info.get("id"), run_cnt=info.get("run_cnt", 0), run_time_ns=info.get("run_time_ns", 0),
                   verified_insns=info.get("verified_insns"))
    if p.via:  # attached through its registered struct_ops map: it needs nothing more
        row["attach"] = f"struct_ops {p.via}"
        row.pop("needs", None)
    if p.attach_error:
        row["error"] = p.attach_error
    if p.link is not None:
        row["link"] = link_report(p.link)
    return row


MAX_ITER_OUTPUT = 64 * 1024


def link_report(link):
    """How a program is attached: the link's kind and kernel id (``count``
    links for a group: a perf event per CPU, a uprobe per USDT site), and for
    an iterator one pass of its output."""
    out = {"kind": link.mechanism, "target": link.target}
    try:
        info = link.info()
        out.update(id=info.get("id"), type=info.get("type_name"), count=info.get("count", 1))
    except LoaderError:
        pass
    if hasattr(link, "read"):  # an iterator: its output is what it is for
        try:
            text = bytes(link.read())
            out["output"] = text[:MAX_ITER_OUTPUT].decode(errors="replace")
            if len(text) > MAX_ITER_OUTPUT:
                out["output_truncated"] = len(text)
        except LoaderError as e:
            out["output_error"] = str(e)
    return out


def print_text(report, out, full=False):
    echo(f"{'PROGRAM':<24} {'SECTION':<32} {'TYPE':<16} {'ID':>6} {'ATTACHED':<8} {'RUNS':>10} {'NS/RUN':>8}"
               f"  TARGET", file=out)
    for p in report["programs"]:
        if report.get("stats"):
            runs, per_run = str(p["run_cnt"]), str(p["run_time_ns"] // p["run_cnt"] if p["run_cnt"] else 0)
        else:  # not measured without --stats: a 0 would look like a measurement
            runs = per_run = "-"
        attached = "yes" if p["attached"] else ("manual" if p.get("attach") == "manual" else "no")
        target = p["target"]["value"] if p.get("target") and p["target"]["kind"] != "section" else "-"
        echo(f"{p['name']:<24} {p['section']:<32} {p['type']:<16} {str(p['id'] or '-'):>6} "
                   f"{attached:<8} {runs:>10} {per_run:>8}  {target}", file=out)
    for p in report["programs"]:
        output = (p.get("link") or {}).get("output")
        if output is not None:
            echo(f"\niterator {p['name']} ({p['section']}) output:", file=out)
            echo(output.rstrip("\n") or "  (empty)", file=out)
    for m in report["maps"]:
        echo(f"\nmap {m['name']} ({m['type']}, key {m['key_size']} B, value {m['value_size']} B, "
                   f"max_entries {m['max_entries']})", file=out)
        if m.get("pinned"):
            echo(f"  pinned at {m['pinned']}: it stays in the kernel after exit "
                       f"(remove it with `rm {m['pinned']}`, or load with --unpin)", file=out)
        if m.get("registered"):
            echo("  registered with the kernel (struct_ops): unregistered when load exits", file=out)
        if m["entries"] is None:
            echo(f"  ({m.get('entries_error') or 'no lookup from user space for this map type'})", file=out)
        elif not m["entries"]:
            echo("  (empty)", file=out)
        else:
            for e in m["entries"]:
                value = e["value"] if full else brief(e["value"])
                echo(f"  {json.dumps(e['key'])}: {json.dumps(value)}", file=out)


def run(object_path, **options):
    """The whole command, given its options (:mod:`load_options` names
    them, :func:`_run` has their defaults); a bad combination raises
    :class:`Usage` before anything loads."""
    try:
        _run(object_path, **options)
    except Usage as e:
        if options.get("as_json"):  # a consumer of --json gets a document whatever went wrong
            _error_document(object_path, e.message, "UsageError")
        raise


def _run(object_path, attach=True, duration=0.0, sets=(), max_entries=(), programs=(), stats=False,
         as_json=False, unpin=False, full=False, explain_=False, dry_run=False, btf_file=None, kconfig_file=None,
         interface=None, cgroup=None, netns=None, targets=(), xdp_mode="auto"):
    from ebpf_energy.loader.map_memory import MapTooLarge
    from ebpf_energy.loader.object import BpfObject
    from ebpf_energy.loader.stats import run_time_stats

    for path, what in ((object_path, "OBJECT"), (btf_file, "--btf"), (kconfig_file, "--kconfig")):
        _regular_file(path, what)
    if explain_:
        explain.enable(sys.stderr)
    sets = _pairs(sets, "--set")
    sizes = _pairs(max_entries, "--max-entries")
    if (btf_file or kconfig_file) and not dry_run:
        raise Usage("--btf and --kconfig describe another kernel: they only go with --dry-run")
    if kconfig_file and not btf_file:
        raise Usage("--kconfig goes with --btf (the running kernel's config is read by itself)")
    if (interface or cgroup or netns or targets) and (dry_run or not attach):
        raise Usage("--interface, --cgroup, --netns and --target say where to attach: "
                    "not with --dry-run or --no-attach")
    if xdp_mode != "auto" and (dry_run or not attach):
        raise Usage("--xdp-mode says how to attach: not with --dry-run or --no-attach")
    if dry_run:
        given = [o for o, on in (("--duration", duration), ("--stats", stats), ("--unpin", unpin),
                                 ("--no-attach", not attach)) if on]
        if given:
            raise Usage(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} nothing with --dry-run, "
                        "which loads nothing")
    if dry_run:
        _dry_run(object_path, sets, sizes, programs, as_json, btf_file, kconfig_file)
        return
    failed, targets_of = [], {}
    try:
        with TerminateOnSignals() as stop, BpfObject.open(object_path) as obj, \
                (run_time_stats() if stats else contextlib.nullcontext()):
            _edit(obj, sets, sizes, programs)
            if attach:  # every named target checked before the first bpf() call
                targets_of = plan(obj, set(programs), interface, cgroup, netns, targets)
                _check_xdp_mode(obj, targets_of, xdp_mode)
            obj.load(only=programs or None)
            for w in obj.warnings:
                echo(f"warning: {w}", err=True)
            if attach:
                obj.attach(strict=False)
                _attach_named(obj, targets_of, xdp_mode)
                failed = [p for p in obj.programs.values() if p.loaded and not p.attached and not p.needs]
            # a signal during load and attach stops it as one during -d does
            stopped_by = stop.stopper.reason if stop.stopped else None
            if duration and not failed and not stopped_by and stop.wait(duration):
                stopped_by = stop.stopper.reason
            report = {"schema": 1, "object": str(object_path), "stats": bool(stats),
                      "programs": [program_report(p, targets_of.get(p.name)) for p in obj.programs.values()
                                   if p.loaded],
                      "maps": [map_report(obj, name, m) for name, m in obj.maps.items()],
                      "warnings": list(obj.warnings)}
            if unpin:
                for m in report["maps"]:
                    if m["pinned"]:
                        try:
                            os.unlink(m["pinned"])
                        except FileNotFoundError:
                            pass
                        m["pinned"] = None
    except BadTarget as e:
        _fail(e, object_path, as_json, EXIT_BAD_TARGET)
    except MapTooLarge as e:  # a size the command line asked for, which this machine cannot take
        if not sizes:
            _fail(e, object_path, as_json)
        raise Usage(str(e), param_hint="--max-entries") from None
    except (KeyError, LoaderError) as e:
        _fail(e, object_path, as_json)
    if as_json:
        echo(json.dumps(report, indent=2))
    else:
        print_text(report, sys.stdout, full=full)
    for p in report["programs"]:
        if p.get("needs") and attach:
            echo(f"note: program {p['name']} ({p['section']}) is loaded, not attached: it needs "
                       f"{p['needs']}{hint(obj.programs[p['name']].spec)}", err=True)
    if failed:
        for p in failed:
            echo(f"error: program {p.name} ({p.section}) loaded but did not attach: {p.attach_error}", err=True)
        sys.exit(1)
    if stopped_by:  # cut short before -d was up: the report is out, the status says so
        echo(f"ebpf-energy load: stopped by {stopped_by} "
             + (f"before the {duration:g} s were up" if duration else "while loading"), err=True)
        sys.exit(128 + signal.Signals[stopped_by])


def _regular_file(path, what):
    """An input must be a regular file: a device (/dev/zero) was read without
    end, a FIFO waited forever."""
    import stat

    if path is not None and not stat.S_ISREG(os.stat(path).st_mode):
        raise Usage(f"{path} is not a regular file", param_hint=what)


def _check_xdp_mode(obj, targets_of, xdp_mode):
    """An --xdp-mode that no program will use is said, as an unused --cgroup is."""
    if xdp_mode != "auto" and not any(obj.programs[name].spec.program_kind.prog_type_name == "xdp"
                                      for name in targets_of):
        raise BadTarget(f"--xdp-mode {xdp_mode}: no xdp program of this object is attached to an interface "
                        "(give one with --interface or --target)")


def _attach_named(obj, targets_of, xdp_mode):
    """Each program the command line gave a target: attached there, or its
    attach_error set (the kernel refused), as obj.attach(strict=False) does."""
    for name, target in targets_of.items():
        p = obj.programs[name]
        if not p.loaded or p.attached:
            continue
        p.needs = None  # named now: attached, or an attach failure
        try:
            p.link = attach_named(p, target, None if xdp_mode == "auto" else xdp_mode)
        except LoaderError as e:
            p.attach_error = str(e)


def _edit(obj, sets, sizes, programs=()):
    """--set and --max-entries, on the object's own copy of the spec, and
    --program checked: a value the object cannot take is the command line's
    fault, a usage error (exit 2), found before anything is loaded."""
    unknown = [repr(name) if not name.strip() else name for name in programs if name not in obj.programs]
    if unknown:
        raise Usage(f"no program {', '.join(unknown)} in {obj.spec.path} (programs: {', '.join(obj.programs)})",
                    param_hint="--program")
    for name, value in sets:
        try:
            obj.set_global(name, parse_value(value))
        except LoaderError as e:
            raise Usage(str(e), param_hint="--set") from None
    for name, value in sizes:
        try:
            n = int(value, 0)
        except ValueError:
            raise Usage(f"{value!r} is not a whole number", param_hint="--max-entries") from None
        if not 1 <= n <= U32_MAX:  # the kernel's max_entries is a __u32
            raise Usage(f"{name}={value}: max_entries is from 1 to {U32_MAX:,}", param_hint="--max-entries")
        obj.set_max_entries(name, n)


def _dry_run(object_path, sets, sizes, programs, as_json, btf_file, kconfig_file):
    from ebpf_energy.commands._dry_run import print_prepared
    from ebpf_energy.loader.object import BpfObject
    from ebpf_energy.loader.prepare import prepare
    from ebpf_energy.loader.target import Target

    try:
        obj = BpfObject.open(object_path)  # opens the file only: nothing in the kernel to close
        _edit(obj, sets, sizes, programs)
        target = Target.from_btf_file(btf_file, kconfig_file) if btf_file else Target.running(addresses=False)
        prepared = prepare(obj.spec, target, only=list(programs) or None)
    except (KeyError, LoaderError) as e:
        _fail(e, object_path, as_json)
    if as_json:
        echo(json.dumps(dict(prepared.to_dict(), dry_run=True), indent=2))
    else:
        print_prepared(prepared, sys.stdout)


def _fail(e, object_path, as_json, status=1):
    """A bad name (KeyError) is a usage error; a loader error is one line, and
    with --json also a document, so a consumer of --json gets one either way."""
    if isinstance(e, KeyError):
        raise Usage(str(e.args[0]) if e.args else str(e)) from None
    echo(f"error: {e}", err=True)
    if as_json:
        _error_document(object_path, str(e), type(e).__name__)
    sys.exit(status)


def _error_document(object_path, message, error_type):
    echo(json.dumps({"schema": 1, "object": str(object_path), "error": message, "error_type": error_type}, indent=2))
