"""The one source of kernel ABI numbers: abi.py is what abi_gen makes from vmlinux.h and the UAPI headers,
and no loader module keeps its own copy of a number abi.py has."""

import re
from pathlib import Path

import pytest

from ebpf_energy.loader import abi, abi_gen, uapi

LOADER = Path(abi.__file__).parent


def test_committed_abi_is_what_the_generator_makes():
    assert (LOADER / "abi.py").read_text() == abi_gen.generate(), \
        "abi.py is stale: run `python3 -m ebpf_energy.loader.abi_gen`"


@pytest.mark.parametrize("text, want", [
    ("enum { A, B = 5, C, };", {"A": [("A", 0), ("B", 5), ("C", 6)]}),
    ("enum e { X = (1U << 3), Y = X | 1, /* c */ Z = 0x10ULL };", {"e": [("X", 8), ("Y", 9), ("Z", 16)]}),
])
def test_enum_parser(text, want):
    assert abi_gen.enums(text) == want


@pytest.mark.parametrize("line, value", [
    ("#define BPF_X 0x18 /* dw */", 0x18),
    ("#define BPF_XCHG (0xe0 | BPF_FETCH)", 0xE1),
    ("#define PERF_EVENT_IOC_SET_BPF _IOW('$', 8, __u32)", 0x40042408),
    ("#define PERF_EVENT_IOC_ENABLE _IO ('$', 0)", 0x2400),
    ("#define BPF_OBJ_NAME_LEN 16U", 16),
])
def test_define_parser(line, value):
    got = dict(abi_gen.defines(line, {"BPF_FETCH": 1}))
    assert list(got.values()) == [value]


def test_name_tables_follow_the_enums():
    assert uapi.MAP_TYPE_NAMES[abi.BPF_MAP_TYPE_RINGBUF] == "ringbuf"
    assert uapi.MAP_TYPE_NAMES[abi.BPF_MAP_TYPE_CGROUP_STORAGE] == "cgroup_storage"  # not *_deprecated
    assert uapi.PROG_TYPE_NAMES[abi.BPF_PROG_TYPE_TRACING] == "tracing"
    assert uapi.LINK_TYPE_NAMES[abi.BPF_LINK_TYPE_PERF_EVENT] == "perf_event"
    assert uapi.CMD_NAMES[abi.BPF_PROG_TEST_RUN] == "BPF_PROG_TEST_RUN"  # not its alias BPF_PROG_RUN
    assert abi.bpf_func_id[uapi.FN_loop] == "loop" and uapi.helper_id("map_lookup_elem") == 1


# numbers abi.py has, that a module must import rather than write again
_COPIES = re.compile(r"^\s*((PSEUDO_\w+|BPF_\w+|BTF_\w+|KIND_[A-Z_]+|PERF_\w+|FUNC_\w+|VAR_\w+)\s*=\s*\d"
                     r"|(MAP_TYPES|PROG_TYPES|\w*TYPE_NAMES)\s*=\s*[{\[(]\s*[\"\d]"  # a literal table
                     r"|(KIND|FIELD|BPF|LD)[\w, \\\n]*=\s*range\(\d+\)"  # KIND_A, KIND_B, ... = range(20)
                     r"|\w+\s*=\s*(0x18|0x85|0x95|1 << 3[01])\s*(#|$))", re.M)


def test_no_module_keeps_its_own_copy():
    found = []
    for f in sorted(LOADER.rglob("*.py")):  # the link/ package too
        if f.name in ("abi.py", "_uapi_ffi.py"):
            continue
        found += [f"{f.relative_to(LOADER)}: {m.group(0).strip()}" for m in _COPIES.finditer(f.read_text())]
    assert not found, "ABI numbers written by hand (import them from abi/uapi):\n" + "\n".join(found)
