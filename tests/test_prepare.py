"""prepare(): the finished object, without root and without clang.

The golden files in tests/testdata/golden/ are prepare() of the committed,
stripped objects in tests/testdata/ against a made-up kernel
(fake_kernel.bpf.o: task_struct fields where no real kernel has them, and
fake_kernel.config), so every instruction, map attribute, relocation and
CO-RE answer is fixed by files in the repo, not by the machine. `make
testdata` rebuilds the objects and rewrites the golden files.
"""

import copy
from ebpf_energy.loader import record
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ebpf_energy.loader.errors import LoaderError
from ebpf_energy.loader.prepare import prepare
from ebpf_energy.loader.spec import ObjectSpec
from ebpf_energy.loader.target import Target

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "testdata"
GOLDEN = DATA / "golden"
FAKE_BTF = DATA / "fake_kernel.bpf.o"
FAKE_CONFIG = DATA / "fake_kernel.config"
OBJECTS = ["core_task", "externs", "subprog", "tp_btf_counter", "ringbuf", "maps_all"]


def fake_target():
    # sizes fixed too: a ring buffer rounds to the page, a perf event array sizes to the CPUs
    return Target.from_btf_file(str(FAKE_BTF), str(FAKE_CONFIG), possible_cpus=4, page_size=4096)


def prepared_dict(name, target=None):
    path = DATA / f"{name}.bpf.o"
    spec = ObjectSpec.parse(f"{name}.bpf.o", path.read_bytes())
    d = prepare(spec, target or fake_target()).to_dict()
    d["target"] = d["target"].replace(str(FAKE_BTF), FAKE_BTF.name)
    return d


@pytest.mark.parametrize("name", OBJECTS)
def test_golden(name):
    got = prepared_dict(name)
    golden = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(golden.read_text())
    for key in want:  # one key at a time: a failure says which part moved
        assert got[key] == want[key], f"{name}: {key} differs from {golden} (run `make testdata` if on purpose)"
    assert got == want


def test_the_golden_answers_come_from_the_fake_kernel():
    """Guard on the golden files themselves: the CO-RE offsets are the fake
    kernel's (tests/bpf/fake_kernel.bpf.c), the attach ids and kfunc ids are
    ids in it, and .kconfig holds its config and version (4.19.7)."""
    core_task = prepared_dict("core_task")
    outcomes = {c["local"].split(" (")[0]: c["outcome"] for c in core_task["programs"][0]["core"]
                if c["kind"] == "byte_off"}
    assert outcomes["struct task_struct.pid"].endswith("@ byte 8) = 8")
    assert outcomes["struct task_struct.tgid"].endswith("@ byte 12) = 12")
    assert outcomes["struct task_struct.real_parent"].endswith("@ byte 16) = 16")
    ext = prepared_dict("externs")
    prog = ext["programs"][0]
    fake = Target.from_btf_file(str(FAKE_BTF)).btf
    assert prog["attach_target"] == "btf_trace_sys_enter"
    assert prog["attach_btf_id"] == fake.find("btf_trace_sys_enter")[0]
    kfunc = fake.find("bpf_task_from_pid")[0]
    assert any(f"call kfunc btf_id {kfunc}" in line for line in prog["instructions"])
    assert prog["address_slots"] == [{"insn": prog["address_slots"][0]["insn"], "symbol": "_stext"}]
    kconfig = {m["name"]: m for m in ext["maps"]}[".kconfig"]
    notes = dict(n.split(" = ") for n in kconfig["notes"])
    version = (4 << 16) + (19 << 8) + 7
    assert notes["LINUX_KERNEL_VERSION"].startswith(version.to_bytes(4, "little").hex())
    assert notes["CONFIG_BPF_SYSCALL"].startswith("01") and notes["CONFIG_HZ"].startswith(
        (1000).to_bytes(4, "little").hex())
    ring = {m["name"]: m for m in prepared_dict("ringbuf")["maps"]}
    assert all(m["max_entries"] % 4096 == 0 for m in ring.values() if m["type"] == "ringbuf")


def _snapshot(spec):
    return ({k: (record.astuple(m)) for k, m in spec.maps.items()},
            {k: record.astuple(p) for k, p in spec.programs.items()},
            [record.astuple(v) for v in spec.kconfig], dict(spec.ksyms))


@pytest.mark.parametrize("name", OBJECTS)
def test_prepare_is_pure_and_repeatable(name):
    spec = ObjectSpec.parse(f"{name}.bpf.o", (DATA / f"{name}.bpf.o").read_bytes())
    before = copy.deepcopy(_snapshot(spec))
    a = prepare(spec, fake_target())
    b = prepare(spec, fake_target())
    assert _snapshot(spec) == before  # the spec is never changed
    assert a.to_dict() == b.to_dict()
    assert all(pa.insns == pb.insns for pa, pb in zip(a.programs.values(), b.programs.values()))


def test_a_copy_is_independent():
    spec = ObjectSpec.parse("core_task.bpf.o", (DATA / "core_task.bpf.o").read_bytes())
    mine = spec.copy()
    mine.maps[".rodata"].initial[0] = 0x7F
    mine.maps["seen"].max_entries = 9
    mine.programs["read_task"].autoload = False
    assert spec.maps[".rodata"].initial[0] == 0 and spec.maps["seen"].max_entries == 64
    assert spec.programs["read_task"].autoload
    assert prepare(mine, fake_target(), only=[]).programs == {}


def test_only_map_fds_are_missing():
    """Every ld_imm64 of a map is a slot holding 0 with the right pseudo source;
    nothing else waits for the kernel (the kfunc and attach ids are in)."""
    from ebpf_energy.loader import insn as I

    p = prepare(ObjectSpec.parse("externs.bpf.o", (DATA / "externs.bpf.o").read_bytes()), fake_target())
    prog = p.programs["read_externs"]
    assert prog.map_slots
    for s in prog.map_slots:
        assert I.opcode(prog.insns, s.insn) == I.LD_IMM64 and I.imm(prog.insns, s.insn) == 0
        assert I.src_reg(prog.insns, s.insn) == (I.PSEUDO_MAP_VALUE if s.value else I.PSEUDO_MAP_FD)
        assert s.map in p.maps
    assert prog.func_info and prog.line_info  # rebased to the linked program
    assert all(0 <= i < prog.insn_count for i, _ in prog.func_info)


def test_refusals_name_what_is_missing():
    spec = ObjectSpec.parse("externs.bpf.o", (DATA / "externs.bpf.o").read_bytes())
    bare = Target.from_btf_file(str(DATA / "core_task.bpf.o"))  # a BTF with no kfuncs and no btf_trace_*
    with pytest.raises(LoaderError, match="kfunc bpf_task_from_pid __ksym: not in the kernel.s BTF"):
        prepare(spec, bare)
    with pytest.raises(LoaderError, match="no program named nope"):
        prepare(spec, fake_target(), only=["nope"])


def test_committed_objects_are_what_the_sources_build():
    """tests/testdata holds stripped builds of tests/bpf/*.bpf.c (`make testdata`)."""
    build = ROOT / "tests" / "bpf" / "build"
    strip = shutil.which("llvm-strip") or next(iter(sorted(Path("/usr/bin").glob("llvm-strip-*"))), None)
    if not build.is_dir() or strip is None:
        pytest.skip("no test-object build here (make test-objects): nothing to compare with")
    for name in OBJECTS + ["fake_kernel"]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "o"
            subprocess.run([str(strip), "-g", str(build / f"{name}.bpf.o"), "-o", str(out)], check=True)
            assert out.read_bytes() == (DATA / f"{name}.bpf.o").read_bytes(), \
                f"tests/testdata/{name}.bpf.o is stale: run `make testdata` and commit it"


# -- the command ------------------------------------------------------------------

def run_load(*args):
    return subprocess.run([sys.executable, "-m", "ebpf_energy", "load", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_dry_run_against_a_btf_file_prints_the_finished_program():
    r = run_load(str(DATA / "core_task.bpf.o"), "--dry-run", "--btf", str(FAKE_BTF))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "a dry run: nothing was loaded" in out and "program read_task" in out
    assert "struct task_struct.tgid (0:2 @ byte 12) = 12" in out
    assert "r1 = map_value(.rodata) + 0 ll" in out and "; __u32 tgid = BPF_CORE_READ(task, tgid);" in out
    j = run_load(str(DATA / "core_task.bpf.o"), "--dry-run", "--btf", str(FAKE_BTF), "--json",
                 "--set", "target_pid=7", "--max-entries", "seen=128")
    d = json.loads(j.stdout)
    assert d["dry_run"] is True and {m["name"]: m["max_entries"] for m in d["maps"]}["seen"] == 128


def test_dry_run_with_explain_tells_the_steps_without_loading():
    r = run_load(str(DATA / "core_task.bpf.o"), "--dry-run", "--btf", str(FAKE_BTF), "--explain")
    assert r.returncode == 0, r.stderr
    for step in ("[elf", "[btf", "[map", "[core", "[reloc"):
        assert step in r.stderr
    assert "BPF_MAP_CREATE" not in r.stderr and "BPF_PROG_LOAD" not in r.stderr  # no syscall at all


@pytest.mark.parametrize("args, status, message", [
    (["--btf", "FAKE"], 2, "--btf and --kconfig describe another kernel"),
    (["--dry-run", "--kconfig", "CONFIG"], 2, "--kconfig goes with --btf"),
    (["--dry-run", "--btf", "CONFIG"], 1, "not BTF"),
    (["--dry-run", "--btf", "FAKE", "--kconfig", "FAKE"], 1, "not a kernel config"),
    (["--dry-run", "--btf", "FAKE", "--program", "nope"], 2, "no program nope"),
    (["--dry-run", "--btf", "FAKE", "--set", "nope=1"], 2, "no global variable 'nope'"),
])
def test_dry_run_bad_input(args, status, message):
    args = [a.replace("FAKE", str(FAKE_BTF)).replace("CONFIG", str(FAKE_CONFIG)) for a in args]
    r = run_load(str(DATA / "core_task.bpf.o"), *args)
    assert r.returncode == status, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_dry_run_needs_no_privilege():
    """As nobody with no capabilities: the running kernel's BTF is world-readable."""
    from test_monitor_cli import run_as_nobody

    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        obj = Path(tmp) / "externs.bpf.o"
        shutil.copy(DATA / "externs.bpf.o", obj)
        os.chmod(obj, 0o644)
        r = run_as_nobody("load", str(obj), "--dry-run", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["target"].startswith("the running kernel")
    prog = d["programs"][0]
    assert prog["attach_btf_id"] > 0 and prog["address_slots"][0]["symbol"] == "_stext"


@pytest.mark.kernel
def test_the_kernel_gets_what_the_dry_run_showed(test_objects):
    """Load for real: the instructions sent are the prepared ones with fds in the
    slots, and loading leaves the spec as it was."""
    from ebpf_energy.loader import insn as I
    from ebpf_energy.loader.object import BpfObject

    spec = ObjectSpec.parse(str(test_objects("core_task")))
    before = copy.deepcopy(_snapshot(spec))
    dry = prepare(spec, Target.running(addresses=False))
    with BpfObject(spec) as obj:
        obj.load()
        real = obj.prepared.programs["read_task"]
        assert real.insns == dry.programs["read_task"].insns
        assert obj.programs["read_task"].loaded
        fds = {s.map: obj.maps[s.map].fd for s in real.map_slots}
        assert len(fds) >= 2 and all(fd > 0 for fd in fds.values())
        code = bytearray(real.insns)
        for s in real.map_slots:
            I.set_imm(code, s.insn, fds[s.map])
        assert obj.programs["read_task"].info()["xlated_prog_len"] > 0
    assert _snapshot(spec) == before
