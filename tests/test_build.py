"""The shipped BPF object is exactly what `make` builds from the committed source.

Built in a different folder on purpose: -fdebug-prefix-map must make the
bytes independent of where the clone lives, or CI could never compare them.
"""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "ebpf_energy" / "bpf" / "energy_monitor.bpf.o"


def test_shipped_object_matches_source(tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    for name in ("Makefile", "vmlinux.h"):
        shutil.copy2(ROOT / name, work / name)
    shutil.copytree(ROOT / "bpf", work / "bpf")
    (work / "ebpf_energy" / "bpf").mkdir(parents=True)
    subprocess.run(["make", "-s", "-C", str(work), "objects"], check=True, capture_output=True)
    built = work / "ebpf_energy" / "bpf" / "energy_monitor.bpf.o"
    assert built.read_bytes() == SHIPPED.read_bytes(), (
        "ebpf_energy/bpf/energy_monitor.bpf.o differs from what bpf/energy_monitor.bpf.c builds: "
        "run `make objects` and commit the object")


def test_shipped_object_has_btf_and_no_dwarf():
    from ebpf_energy.loader.elf import ElfObject

    elf = ElfObject.from_path(SHIPPED)
    assert elf.btf and elf.btf_ext
    assert not [s.name for s in elf.sections if s.name.startswith(".debug")]
