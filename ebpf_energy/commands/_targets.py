"""``load``'s target options: which program goes on which interface, cgroup,
network namespace or hook, decided and checked before anything is loaded.

``--interface``, ``--cgroup`` and ``--netns`` go to every selected program
that takes that kind of target (:func:`link.named.takes`); ``--target
PROG=VALUE`` names one program's target and wins over them, for objects
whose programs want different ones. An sk_lookup program's network
namespace defaults to the caller's own (as a socket of the caller's would
see); interfaces, cgroups and a flow dissector's namespace (it takes over
every flow there) have no default: such a program stays loaded, not
attached, and says what it needs. Every misfit is a :class:`link.named.BadTarget`: one line, exit 2.
"""

from ebpf_energy.loader.link import named

EXIT_BAD_TARGET = 2  # a usage error, as every other bad option value: the target does not fit the object or this machine
OWN_NETNS = "/proc/thread-self/ns/net"
# the options themselves (--interface, --cgroup, --netns, --target, --xdp-mode) are in load_options


def plan(obj, selected, interface=None, cgroup=None, netns=None, targets=()):
    """{program name: link.named.Named} for the programs of ``obj`` (an
    opened BpfObject) that will be loaded (``selected``, or all). Raises
    BadTarget for a name not in the object, a target given to a program
    that takes none, or a value this machine does not have."""
    specs = {name: p.spec for name, p in obj.programs.items()
             if (name in selected if selected else p.spec.autoload)}
    out = {}
    for item in targets:
        name, sep, value = item.partition("=")
        where = f"--target {item}"
        if not sep or not name or not value:
            raise named.BadTarget(f"{where}: expected PROG=VALUE")
        if name not in obj.programs:
            raise named.BadTarget(f"{where}: no program {name!r} in this object "
                                  f"(programs: {', '.join(obj.programs)})")
        if name not in specs:
            raise named.BadTarget(f"{where}: program {name} is not loaded (add --program {name})")
        if name in out:
            raise named.BadTarget(f"{where}: program {name} has a target already ({out[name].value})")
        spec = specs[name]
        kind = named.takes(spec)
        if kind is None:
            raise named.BadTarget(f"{where}: program {name} ({spec.section}) takes no target: {_why_none(spec)}")
        out[name] = named.check(kind, value, "--target", spec, where)
    given = {"interface": interface, "cgroup": cgroup, "netns": netns}
    used = set()
    for name, spec in specs.items():
        kind = named.takes(spec)
        if name in out or kind not in given:
            continue
        if given[kind] is not None:
            out[name] = named.check(kind, given[kind], f"--{kind}", spec)
            used.add(kind)
        elif kind == "netns" and spec.program_kind.prog_type_name == "sk_lookup":
            # only sk_lookup: a flow dissector replaces the dissection of every flow in the namespace
            out[name] = named.check(kind, OWN_NETNS, "default", spec)
    for kind, value in given.items():
        if value is not None and kind not in used:
            raise named.BadTarget(f"--{kind} {value}: no program loaded from this object takes "
                                  f"{named.WHAT[kind]}" + ("" if not out else " without its own --target"))
    return out


def _why_none(spec):
    from ebpf_energy.loader.link import auto

    needs = auto.needs(spec.section)
    if needs:
        return f"it needs {needs}, which load does not name"
    return "its section names what it attaches to"


def hint(spec):
    """How to give a program what it needs on the command line, or ''."""
    kind = named.takes(spec)
    if kind is None:
        return ""
    option = {"interface": "--interface IFNAME or ", "cgroup": "--cgroup DIR or ",
              "netns": "--netns FILE or "}.get(kind, "")
    return f" (give it with {option}--target {spec.name}={named.SYNTAX[kind]})"
