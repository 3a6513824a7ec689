"""docs/loader-guide.md shows real loader output; this regenerates it and fails when the guide drifts.

Every ```text block that follows a ``<!-- output: NAME -->`` marker in the guide
is :func:`outputs`\\ [NAME]: lines of ``ebpf-energy load`` on the committed
example (tests/testdata/hello.bpf.o), picked by their ``[step]`` tag. Two runs
make them: ``--dry-run --explain`` against the made-up kernel in
tests/testdata (no root, and the same on every machine), and a real load with
``--explain`` (root). What changes from run to run (object ids, timings, fd
numbers, the running kernel's BTF ids) is normalised the same way on both
sides, so only a change in what the loader does makes the test fail.

``UPDATE_GUIDE=1 pytest tests/test_loader_guide.py`` rewrites the blocks.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "loader-guide.md"
DATA = ROOT / "tests" / "testdata"
OBJ = "tests/testdata/hello.bpf.o"
DRY = ["--dry-run", "--explain", "--btf", "tests/testdata/fake_kernel.bpf.o",
       "--kconfig", "tests/testdata/fake_kernel.config"]
LIVE = ["--explain", "--duration", "0", "--set", "only_tgid=4000000000"]  # no such process: the map stays empty

_BLOCK = re.compile(r"(<!-- output: (\w+) -->\n```text\n)(.*?)(```)", re.S)


def run(*args):
    r = subprocess.run([sys.executable, "-m", "ebpf_energy", "load", OBJ, *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


def steps(text):
    """``[(tag, [lines])]``: each traced step with its indented detail lines."""
    out = []
    for line in text.splitlines():
        m = re.match(r"\[(\w+)\s*\] ", line)
        if m:
            out.append((m.group(1), [line]))
        elif out and line.startswith(" " * 11):
            out[-1][1].append(line)
    return out


def pick(text, tags=(), contains=(), skip=()):
    lines = []
    for tag, block in steps(text):
        head = block[0]
        if any(s in head for s in skip):
            continue
        if tag in tags or any(c in head for c in contains):
            lines += block
    return lines


_VOLATILE = [
    (re.compile(r"indexed in [\d.]+ ms \((cache|cold)\)"), "indexed in … ms"),
    (re.compile(r"verification time \d+ usec"), "verification time … usec"),
    (re.compile(r"-> id \d+"), "-> id …"),
    (re.compile(r"(attach_btf_id=|kernel BTF id )\d+"), r"\g<1>…"),
    (re.compile(r"(processed )\d+( insns.*)"), r"\g<1>…\g<2>"),
    (re.compile(r"(max_states_per_insn|total_states|peak_states|mark_read) \d+"), r"\g<1> …"),
]
_FD = re.compile(r"((?:\bfd|_fd|link fd|map_fd)[ =])(\d+)")


def normalise(lines):
    """Volatile numbers out; fds renumbered in order of appearance from 3 (a fresh process's first)."""
    fds = {}

    def fd(m):
        n = fds.setdefault(m.group(2), str(3 + len(fds)))
        return m.group(1) + n

    out = []
    for line in lines:
        for rx, sub in _VOLATILE:
            line = rx.sub(sub, line)
        out.append(_FD.sub(fd, line))
    return out


def outputs():
    """The guide's blocks, by name."""
    r = run(*DRY)
    dry = "\n".join(normalise(r.stderr.splitlines()))  # one numbering of fds per run, as the process saw them
    blocks = {
        "elf": pick(dry, ("elf",)),
        "btf": pick(dry, ("btf",), skip=("kernel BTF",)),
        "maps_declared": pick(dry, ("map",)),
        "core": pick(dry, ("core",), contains=("attach target",), skip=("declared",)),
        "relocations": pick(dry, ("reloc",)),
    }
    blocks["prepared"] = normalise(r.stdout.splitlines()[:8])
    live = "\n".join(normalise(run(*LIVE).stderr.splitlines()))
    sys_after_btf = live[live.index("[syscall ] BPF_BTF_LOAD"):]
    blocks["maps"] = pick(sys_after_btf, ("map",), contains=("BPF_BTF_LOAD", "BPF_MAP_CREATE", "BPF_MAP_UPDATE_ELEM",
                                                             "BPF_MAP_FREEZE"))
    blocks["verifier"] = pick(sys_after_btf, ("verifier",), contains=("BPF_PROG_LOAD", "map fds written"))
    blocks["attach"] = pick(sys_after_btf, ("attach",), contains=("BPF_RAW_TRACEPOINT_OPEN",))
    blocks["teardown"] = pick(sys_after_btf, ("close",))
    return {k: "\n".join(v) + "\n" for k, v in blocks.items()}


@pytest.mark.kernel
def test_guide_shows_what_the_loader_prints():
    text = GUIDE.read_text()
    got = outputs()
    names = [m.group(2) for m in _BLOCK.finditer(text)]
    assert sorted(names) == sorted(got), f"the guide's output blocks {names} are not {sorted(got)}"
    if os.environ.get("UPDATE_GUIDE"):
        GUIDE.write_text(_BLOCK.sub(lambda m: m.group(1) + got[m.group(2)] + m.group(4), text))
        text = GUIDE.read_text()
    for m in _BLOCK.finditer(text):
        assert m.group(3) == got[m.group(2)], \
            f"docs/loader-guide.md block {m.group(2)!r} differs from the loader's output (UPDATE_GUIDE=1 to rewrite)"


def test_the_example_is_ten_lines_of_code():
    src = (ROOT / "tests" / "bpf" / "hello.bpf.c").read_text()
    body = src[src.index('SEC("tp_btf'):src.index("char LICENSE")]
    code = [ln for ln in body.splitlines() if ln.strip() not in ("", "{", "}")]
    assert len(code) <= 12
    assert "```c\n" + src.split("*/\n", 1)[1].lstrip() in GUIDE.read_text(), "the guide quotes tests/bpf/hello.bpf.c"


def test_the_committed_example_is_what_its_source_builds():
    import shutil
    import tempfile

    built = ROOT / "tests" / "bpf" / "build" / "hello.bpf.o"
    strip = shutil.which("llvm-strip") or next(iter(sorted(Path("/usr/bin").glob("llvm-strip-*"))), None)
    if not built.exists() or strip is None:
        pytest.skip("no test-object build here (make test-objects): nothing to compare with")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "o"
        subprocess.run([str(strip), "-g", str(built), "-o", str(out)], check=True)
        assert out.read_bytes() == (DATA / "hello.bpf.o").read_bytes(), "run `make testdata` and commit it"
