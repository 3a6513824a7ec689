"""The shipped BPF objects are exactly what `make` builds from the committed sources.

Built in a different folder on purpose: -fdebug-prefix-map must make the
bytes independent of where the clone lives, or CI could never compare them.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p.name[:-len(".bpf.c")] for p in (ROOT / "bpf").glob("*.bpf.c"))


def test_every_source_is_shipped():
    assert "energy_monitor" in SOURCES and "wait_states" in SOURCES
    for name in SOURCES:
        assert (ROOT / "ebpf_energy" / "bpf" / f"{name}.bpf.o").exists(), f"{name}.bpf.o is not shipped"


@pytest.mark.parametrize("name", SOURCES)
def test_shipped_object_matches_source(tmp_path, name):
    work = tmp_path / "elsewhere"
    work.mkdir()
    for f in ("Makefile", "vmlinux.h"):
        shutil.copy2(ROOT / f, work / f)
    shutil.copytree(ROOT / "bpf", work / "bpf")
    (work / "ebpf_energy" / "bpf").mkdir(parents=True)
    subprocess.run(["make", "-s", "-C", str(work), "objects"], check=True, capture_output=True)
    built = work / "ebpf_energy" / "bpf" / f"{name}.bpf.o"
    shipped = ROOT / "ebpf_energy" / "bpf" / f"{name}.bpf.o"
    assert built.read_bytes() == shipped.read_bytes(), (
        f"ebpf_energy/bpf/{name}.bpf.o differs from what bpf/{name}.bpf.c builds: "
        "run `make objects` and commit the object")


@pytest.mark.parametrize("name", SOURCES)
def test_shipped_object_has_btf_and_no_dwarf(name):
    from ebpf_energy.loader.elf import ElfObject

    elf = ElfObject.from_path(ROOT / "ebpf_energy" / "bpf" / f"{name}.bpf.o")
    assert elf.btf and elf.btf_ext
    assert not [s.name for s in elf.sections if s.name.startswith(".debug")]
