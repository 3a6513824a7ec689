"""The options of ``ebpf-energy load``, as data, and a parser for the usual case.

One table feeds two parsers. click's (:mod:`ebpf_energy.commands.load`)
gives ``--help`` and every error message. :func:`parse` here takes a
well-formed command line without importing click: click and what it imports
(``inspect``, ``typing``, ``uuid``, ``datetime``) are about 20 ms of a 70 ms
``load`` of a small object, more than the loader's own work (README "Load
speed"). Whatever :func:`parse` is not sure of (``--help``, an unknown or
repeated-in-one-token option, a bad value, a missing file) returns None, and
click parses the line instead, so every message is click's.
``tests/test_load_options.py`` holds the two parsers to the same answers.
"""

import math
import os
from collections import namedtuple

from ebpf_energy.commands._limits import YEAR_S

XDP_MODES = ("auto", "generic", "native")

# kind: "switch" (--a/--no-a), "flag", "value" or "multiple"; type: how a value is checked
Option = namedtuple("Option", "decls dest kind type default metavar help", defaults=("text", None, None, ""))

OBJECT = "object_path"  # the one argument: an existing file (click.Path(exists=True, dir_okay=False))

OPTIONS = (
    Option(("--attach/--no-attach",), "attach", "switch", default=True,
           help="Attach the programs after loading."),
    Option(("--duration", "-d"), "duration", "value", "seconds", 0.0,
           help="Seconds to keep the programs running before reporting (Ctrl-C ends early)."),
    Option(("--set",), "sets", "multiple", metavar="VAR=VALUE",
           help="Set a global variable (.rodata const volatile, .data, .bss) before load. Repeatable."),
    Option(("--max-entries",), "max_entries", "multiple", metavar="MAP=N", help="Override a map's size. Repeatable."),
    Option(("--program",), "programs", "multiple", metavar="NAME",
           help="Load only these programs (repeatable); the others are not loaded."),
    Option(("--stats",), "stats", "flag",
           help="Switch on run-time statistics (run_cnt, run_time_ns) while running."),
    Option(("--json",), "as_json", "flag", help="Print one JSON object on stdout."),
    Option(("--unpin",), "unpin", "flag",
           help="Remove the pins this object's maps made or reused (LIBBPF_PIN_BY_NAME) before exiting, "
                "so nothing stays in the kernel."),
    Option(("--full",), "full", "flag",
           help="Show long map values whole (default: the first elements and a count)."),
    Option(("--explain",), "explain_", "flag",
           help="Tell every step (sections, maps, relocations, CO-RE, loads, attaches) on stderr."),
    Option(("--dry-run",), "dry_run", "flag",
           help="Prepare the object and print the finished programs and maps, loading nothing (no root needed)."),
    Option(("--btf",), "btf_file", "value", "file", metavar="FILE",
           help="With --dry-run: prepare for the kernel this BTF describes (raw BTF, or an ELF with .BTF such "
                "as a vmlinux) instead of the running one."),
    Option(("--kconfig",), "kconfig_file", "value", "file", metavar="FILE",
           help="With --btf: that kernel's config (CONFIG_*=... lines, or .gz) for __kconfig externs."),
    # where programs whose section names no target attach (commands._targets decides which)
    Option(("--interface",), "interface", "value", metavar="IFNAME",
           help="Attach xdp, tc/tcx (IFNAME:ingress|egress for a bare tc) and socket filter programs "
                "(through a packet socket bound to it) to this network interface."),
    Option(("--cgroup",), "cgroup", "value", metavar="DIR",
           help="Attach cgroup programs (cgroup_skb, cgroup/sock*, connect*, sysctl, dev, getsockopt, "
                "sockops...) to this cgroup v2 directory (default: not attached)."),
    Option(("--netns",), "netns", "value", metavar="FILE",
           help="Attach sk_lookup and flow_dissector programs to this network namespace (/proc/PID/ns/net, "
                "/run/netns/NAME; sk_lookup default: the caller's own; flow_dissector: none, as it takes over "
                "every flow of the namespace)."),
    Option(("--target",), "targets", "multiple", metavar="PROG=VALUE",
           help="One program's target, over the options above: an interface, cgroup directory or netns file "
                "as its kind takes, FAMILY:HOOK[:PRIORITY] for netfilter, PATH:FUNC for a bare uprobe, "
                "EVENT[:HZ] (cpu-clock:99) for perf_event. Repeatable."),
    Option(("--xdp-mode",), "xdp_mode", "value", "choice", "auto",
           help="XDP in the driver (native), in the kernel's generic path, or whichever the driver offers."),
)


def _names():
    """Every spelling on the command line -> (option, the value a switch sets)."""
    out = {}
    for o in OPTIONS:
        for decl in o.decls:
            if o.kind == "switch":
                on, off = decl.split("/")
                out[on], out[off] = (o, True), (o, False)
            else:
                out[decl] = (o, None)
    return out


def _readable_file(text):
    """As click.Path(exists=True, dir_okay=False) takes it (readable, by default)."""
    return os.path.exists(text) and not os.path.isdir(text) and os.access(text, os.R_OK)


def _value(o, text):
    """A checked value, or None when click should judge it (and say why)."""
    if o.type == "seconds":
        try:
            v = float(text.strip())
        except ValueError:
            return None
        return v if math.isfinite(v) and 0.0 <= v <= YEAR_S else None
    if o.type == "file":
        return text if _readable_file(text) else None
    if o.type == "choice":
        return text if text in XDP_MODES else None
    return text


def parse(args):
    """``load``'s keyword arguments from ``args`` (what follows ``load``),
    exactly as click would give them, or None to leave the line to click."""
    names = _names()
    params = {o.dest: (() if o.kind == "multiple" else False if o.kind == "flag" else o.default) for o in OPTIONS}
    positional, i = [], 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        if arg.startswith("--"):
            name, eq, text = arg.partition("=")
        elif arg[:2] == "-d":  # the one short option
            name, eq, text = "-d", bool(arg[2:]), arg[2:]
        else:
            return None
        if name not in names:
            return None
        o, switch = names[name]
        if o.kind in ("switch", "flag"):
            if eq:
                return None
            params[o.dest] = switch if o.kind == "switch" else True
            continue
        if not eq:
            if i >= len(args) or args[i].startswith("-"):
                return None  # a value that looks like an option: click's rules, click's message
            text, i = args[i], i + 1
        value = _value(o, text)
        if value is None:
            return None
        params[o.dest] = params[o.dest] + (value,) if o.kind == "multiple" else value
    if len(positional) != 1 or not _readable_file(positional[0]):
        return None
    params[OBJECT] = positional[0]
    return params
