"""Writes :mod:`abi` (every kernel ABI number the loader uses) from the kernel's own files.

Two sources, because the kernel publishes its numbers in two ways:

* enums (commands, map/program/attach/link types, helper ids, map flags,
  BTF kinds, CO-RE relocation kinds, ring buffer bits, perf types) from the
  kernel's BTF, as ``vmlinux.h`` (``bpftool btf dump file
  /sys/kernel/btf/vmlinux format c``; committed at the repo root, so the
  output does not depend on the machine);
* ``#define``\\ s, which BTF cannot carry (the instruction encoding, the
  ``BPF_PSEUDO_*`` markers, program flags, perf ioctls), from the UAPI headers
  ``linux/bpf_common.h``, ``linux/bpf.h``, ``linux/btf.h``, ``linux/perf_event.h``,
  ``linux/if_link.h`` (the XDP attach flags) (linux-libc-dev).

Run ``python3 -m ebpf_energy.loader.abi_gen`` after ``make regen-vmlinux``;
tests/test_abi.py checks that the committed ``abi.py`` is what this produces.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VMLINUX_H = os.path.join(ROOT, "vmlinux.h")
INCLUDE = "/usr/include/linux"
HEADERS = ("bpf_common.h", "bpf.h", "btf.h", "perf_event.h", "if_link.h")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "abi.py")

# named enums taken whole
ENUMS = ("bpf_cmd", "bpf_map_type", "bpf_prog_type", "bpf_attach_type", "bpf_link_type",
         "bpf_stats_type", "bpf_core_relo_kind", "btf_func_linkage", "perf_type_id", "perf_event_sample_format",
         "perf_hw_id", "perf_sw_ids", "nf_inet_hooks")
# enums of ids 0..n-1 written as one list of names (value == index): 200+ helpers as constants would
# make this module the slowest to compile of the loader
NAME_LISTS = {"bpf_func_id": "BPF_FUNC_"}
# anonymous enums, found by one member each
ANONYMOUS = ("BPF_ANY", "BPF_F_NO_PREALLOC", "BTF_KIND_UNKN", "BPF_RINGBUF_BUSY_BIT", "BTF_VAR_STATIC",
             "BPF_F_INDEX_MASK", "BPF_F_UPROBE_MULTI_RETURN", "NFPROTO_UNSPEC")
# named enums that also get a name table (the others: members only, to keep the module small)
TABLES = ("bpf_cmd", "bpf_map_type", "bpf_prog_type", "bpf_attach_type", "bpf_link_type", "bpf_core_relo_kind")
# single #defines from other headers (relative to /usr/include): the socket options that attach a
# program to a socket (asm-generic's numbers; the architectures that differ have their own asm/socket.h)
DEFINE_NAMES = {"asm-generic/socket.h": ("SO_ATTACH_BPF", "SO_DETACH_FILTER", "SO_DETACH_BPF")}
DEFINE_PREFIXES = ("BPF_", "BTF_", "PERF_FLAG_", "PERF_ATTR_SIZE_", "PERF_EVENT_IOC_", "XDP_FLAGS_")

_ENUM = re.compile(r"\benum\s*(\w*)\s*\{(.*?)\}\s*;", re.S)
_DEFINE = re.compile(r"^#define\s+(\w+)\s+(.+?)\s*$", re.M)
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_SUFFIX = re.compile(r"\b(0x[0-9a-fA-F]+|\d+)[uUlL]+\b")


def enums(text):
    """``{name or first member: [(member, value), ...]}`` for every enum in C ``text``."""
    out = {}
    for name, body in _ENUM.findall(_COMMENT.sub("", text)):
        members, value, known = [], -1, {}
        for item in body.split(","):
            item = item.strip()
            if not item:
                continue
            m, _, expr = item.partition("=")
            m = m.strip()
            value = _eval(expr, known) if expr.strip() else value + 1
            if value is None:
                break
            known[m] = value
            members.append((m, value))
        if members:
            out.setdefault(name or members[0][0], members)
    return out


def _ioc(direction, kind, nr, size):
    return (direction << 30) | (size << 16) | (kind << 8) | nr


_IOC_NS = {
    "_IO": lambda t, n: _ioc(0, t, n, 0),
    "_IOW": lambda t, n, s: _ioc(1, t, n, s),
    "_IOR": lambda t, n, s: _ioc(2, t, n, s),
    "_IOWR": lambda t, n, s: _ioc(3, t, n, s),
    "__u32": 4, "__u64": 8, "__s32": 4, "__s64": 8, "int": 4,
}


def _eval(expr, known):
    """An integer C constant expression over ``known`` names, or None."""
    expr = _SUFFIX.sub(r"\1", expr.strip())
    expr = re.sub(r"'(.)'", lambda m: str(ord(m.group(1))), expr)
    if not re.fullmatch(r"[\w\s()|&<>+\-~*,]+", expr):
        return None
    try:
        v = eval(expr, {"__builtins__": {}}, {**_IOC_NS, **known})  # noqa: S307 (checked charset, no builtins)
    except Exception:
        return None
    return v if isinstance(v, int) else None


def defines(text, known, names=None):
    """Integer ``#define``\\ s with one of DEFINE_PREFIXES (or one of ``names``), in file order
    (macros with arguments skipped)."""
    out = []
    for name, expr in _DEFINE.findall(_COMMENT.sub("", text)):
        wanted = name in names if names is not None else name.startswith(DEFINE_PREFIXES) and not name.startswith("__")
        if not wanted:
            continue
        v = _eval(expr, known)
        if v is not None:
            known[name] = v
            out.append((name, v))
    return out


def generate(vmlinux_h=VMLINUX_H, include=INCLUDE):
    """The text of abi.py."""
    with open(vmlinux_h) as f:
        found = enums(f.read())
    lines = ['"""Kernel ABI numbers. GENERATED by ``python3 -m ebpf_energy.loader.abi_gen``: do not edit.',
             "",
             "Enums from the kernel's BTF (vmlinux.h), #defines from the UAPI headers",
             f"({', '.join('linux/' + h for h in HEADERS)}). The enums that name things",
             f"({', '.join(TABLES)}) are also tuples of ``(value, NAME)`` pairs.\"\"\"", ""]
    seen = {}

    def emit(name, value, where):
        if name in seen:
            if seen[name] != value:
                raise SystemExit(f"{name} is {seen[name]} in one source and {value} in {where}")
            return
        seen[name] = value
        lines.append(f"{name} = {value:#x}" if value > 255 and name.startswith(("BPF_F_", "PERF_EVENT_IOC"))
                     else f"{name} = {value}")

    for e, prefix in NAME_LISTS.items():
        members = [(m, v) for m, v in found[e] if not m.startswith("__")]
        if [v for _, v in members] != list(range(len(members))):
            raise SystemExit(f"enum {e} is not 0..n-1")
        words = " ".join(m[len(prefix):] for m, _ in members)
        lines += ["", f"# enum {e}: the name of value i is {e}[i] (without {prefix})",
                  f"{e} = tuple(\"\"\"", *_wrap(words), "\"\"\".split())"]
    for e in ENUMS + ANONYMOUS:
        members = found.get(e)
        if members is None:
            raise SystemExit(f"enum {e} not found in {vmlinux_h}")
        lines += ["", f"# enum {e if e in ENUMS else '{ ' + e + ', ... }'}"]
        for m, v in members:
            if not m.startswith("__"):
                emit(m, v, vmlinux_h)
        if e in TABLES:
            pairs = ", ".join(f'({v}, "{m}")' for m, v in members if not m.startswith("__"))
            lines.append(f"{e} = ({pairs})")
    for h in HEADERS:
        with open(os.path.join(include, h)) as f:
            defs = defines(f.read(), dict(seen))
        lines += ["", f"# #define in linux/{h}"]
        for name, v in defs:
            emit(name, v, h)
    for h, names in DEFINE_NAMES.items():
        with open(os.path.join(os.path.dirname(include), h)) as f:
            defs = defines(f.read(), dict(seen), names)
        lines += ["", f"# #define in {h}"]
        for name, v in defs:
            emit(name, v, h)
    return "\n".join(lines) + "\n"


def _wrap(words, width=110):
    line, out = "", []
    for w in words.split():
        if line and len(line) + 1 + len(w) > width:
            out.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    return out + [line]


def main(argv=None):
    text = generate()
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {OUT} ({text.count(chr(10))} lines)")


if __name__ == "__main__":
    main(sys.argv[1:])
