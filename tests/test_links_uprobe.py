"""uprobes, uretprobes, uprobe.multi and USDT, for real: a C program built
here with ``cc`` waits for the test to attach, then makes a known number of
calls; the BPF programs count those of its pid only, so counts are exact."""

import os
import shutil
import subprocess

import pytest

from ebpf_energy.loader import syscall
from ebpf_energy.loader.errors import AttachError
from ebpf_energy.loader.link import auto, uprobe, usdt
from ebpf_energy.loader.link.binary import find_binary, open_binary, parse_target
from ebpf_energy.loader.object import BpfObject

from test_syscall import wait_gone

pytestmark = pytest.mark.kernel
HERE = os.path.dirname(os.path.abspath(__file__))
N = 23


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """tests/bpf/probed.c, built with the system C compiler (clang where no cc)."""
    out = tmp_path_factory.mktemp("probed") / "probed"
    cc = shutil.which("cc") or "clang"
    subprocess.run([cc, "-O2", "-o", str(out), os.path.join(HERE, "bpf", "probed.c")], check=True)
    return str(out)


class Child:
    """probed, started and waiting on stdin for the test to attach."""

    def __init__(self, path, n=N):
        self.proc = subprocess.Popen([path, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def go(self):
        out, _ = self.proc.communicate("go\n", timeout=120)
        assert self.proc.returncode == 0
        total, ticks = out.split()
        return int(total), int(ticks)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _ids(obj):
    return [p.info()["id"] for p in obj.programs.values() if p.loaded]


def expected_sum(n=N):
    return sum((i + 1000) + 2 * i for i in range(n))


def test_symbols_resolve_to_file_offsets(probed):
    b = open_binary(find_binary(probed))
    vaddr = b.address_of("probed_add")
    off = b.offset_of("probed_add")
    # the segment mapping the function maps file offset `off` at `vaddr`
    seg = [s for s in b.segments if s[0] <= vaddr < s[0] + s[1]][0]
    assert off == vaddr - seg[0] + seg[2]
    assert b.offset_of("probed_add", 4) == off + 4
    libc = find_binary("libc.so.6")
    assert libc.startswith("/") and os.path.basename(libc).startswith("libc")
    assert open_binary(libc).offset_of("getppid") > 0  # .dynsym only: libc is stripped
    with pytest.raises(AttachError, match="no function 'no_such_fn'"):
        b.offset_of("no_such_fn")
    with pytest.raises(AttachError, match="cannot find 'libnope.so.9'"):
        find_binary("libnope.so.9")


def test_a_file_that_is_not_elf_is_one_sentence(tmp_path):
    bad = tmp_path / "notelf"
    bad.write_bytes(b"#!/bin/sh\necho hi\n" + bytes(100))
    with pytest.raises(AttachError, match="cannot read .*notelf as an ELF file"):
        open_binary(str(bad))
    truncated = tmp_path / "truncated"
    truncated.write_bytes(open(find_binary("libc.so.6"), "rb").read(200))
    with pytest.raises(AttachError, match="as an ELF file"):
        open_binary(str(truncated))


def test_uprobe_uretprobe_and_libc_count_exact_calls(probed, test_objects):
    child = Child(probed)
    try:
        with BpfObject.open(test_objects("uprobes")) as obj:
            obj.rodata["target_tgid"] = child.pid
            obj.load(only=["on_add", "on_add_ret", "on_getppid"])
            obj.attach()  # on_getppid from its section; on_add(_ret) need a target
            assert obj.programs["on_getppid"].attached
            assert "a binary and a function" in obj.programs["on_add"].needs
            links = [uprobe.attach_section(obj.programs["on_add"].fd, f"uprobe/{probed}:probed_add"),
                     uprobe.attach_uprobe(obj.programs["on_add_ret"].fd, probed, "probed_add", retprobe=True)]
            info = links[0].info()
            assert info["type_name"] == "perf_event" and info["prog_id"] == obj.programs["on_add"].info()["id"]
            total, _ = child.go()
            assert total == expected_sum()
            assert obj.bss["add_calls"] == N and obj.bss["add_ret_calls"] == N
            assert obj.bss["add_arg_sum"] == sum(i + 1000 for i in range(N))
            assert obj.bss["add_ret_sum"] == sum(i + 1000 for i in range(N))
            assert obj.bss["getppid_calls"] == N
            link_ids = [link.info()["id"] for link in links]
            for link in links:
                link.close()
            ids = _ids(obj)
    finally:
        child.kill()
    for i in ids:
        wait_gone(syscall.prog_get_fd_by_id, i)
    for i in link_ids:
        wait_gone(syscall.link_get_fd_by_id, i)


def test_uprobe_multi_one_link_for_a_glob(probed, test_objects):
    child = Child(probed)
    try:
        with BpfObject.open(test_objects("uprobes")) as obj:
            obj.rodata["target_tgid"] = child.pid
            obj.load(only=["on_any_probed"])
            fd = obj.programs["on_any_probed"].fd
            with uprobe.attach_section(fd, f"uprobe.multi/{probed}:probed_*") as entries, \
                    uprobe.attach_section(fd, f"uretprobe.multi/{probed}:probed_add") as returns:
                assert entries.info()["type_name"] == returns.info()["type_name"] == "uprobe_multi"
                child.go()
            # probed_add and probed_twice entered N times each, probed_add returned N times
            assert obj.bss["multi_calls"] == 3 * N
    finally:
        child.kill()


def test_uprobe_on_proc_self_exe_sees_each_child_once(test_objects):
    """SEC("uprobe//proc/self/exe:main"): this process's own binary; every
    child running it enters main once."""
    with BpfObject.open(test_objects("uprobes")) as obj:
        obj.load(only=["on_main"])
        obj.attach()
        assert obj.programs["on_main"].attached
        pids = []
        for _ in range(3):
            p = subprocess.run([os.path.realpath("/proc/self/exe"), "-c", "import os; print(os.getpid())"],
                               capture_output=True, text=True, check=True)
            pids.append(int(p.stdout))
        calls = obj.maps["main_calls"]
        for pid in pids:
            assert calls[pid] == 1


def test_usdt_notes_semaphore_and_arguments(probed, test_objects):
    binary, notes = usdt.find_probes(probed, "ebpf_energy", "tick")
    assert len(notes) >= 1 and notes[0].semaphore != 0 and len(notes[0].args.split()) == 2
    # without a probe attached, the semaphore is 0 and probed passes no tick
    child = Child(probed)
    assert child.go()[1] == 0
    child = Child(probed)
    try:
        with BpfObject.open(test_objects("usdt")) as obj:
            obj.rodata["target_tgid"] = child.pid
            obj.load()
            with usdt.attach_usdt(obj.programs["on_tick"].fd, probed, "ebpf_energy", "tick",
                                  obj.maps[usdt.SPECS_MAP], obj.maps[usdt.IP_MAP], pid=child.pid) as link:
                assert len(link) == len(notes)
                with open(f"/proc/{child.pid}/maps") as f:
                    spans = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in f
                             if line.rstrip().endswith(os.path.realpath(probed))]
                total, ticks = child.go()
            assert ticks == N  # the kernel raised the semaphore: the guarded probe ran
            assert obj.bss["ticks"] == N and obj.bss["i_sum"] == sum(range(N))
            assert obj.bss["last_sum"] == total and obj.bss["arg_cnt"] == 2
            # the ip map (for kernels without BPF cookies): each site's address in the child -> its spec id
            ips = dict(obj.maps[usdt.IP_MAP].items())
            assert sorted(ips.values()) == list(range(len(notes)))
            assert all(any(lo <= ip < hi for lo, hi in spans) for ip in ips)
    finally:
        child.kill()


def test_usdt_from_the_section_name(probed, test_objects, tmp_path):
    """usdt/PATH:PROVIDER:NAME attaches from the section alone (PATH is only
    known here, so the test gives the program that section)."""
    child = Child(probed)
    try:
        with BpfObject.open(test_objects("usdt")) as obj:
            obj.rodata["target_tgid"] = child.pid
            obj.load()
            p = obj.programs["on_tick"]
            p.spec.section = f"usdt/{probed}:ebpf_energy:tick"
            obj.attach()
            assert p.attached
            assert child.go()[1] == N and obj.bss["ticks"] == N
    finally:
        child.kill()


def test_missing_targets_are_one_sentence(probed):
    with pytest.raises(AttachError, match="no such binary '/nonexistent/app'"):
        uprobe.resolve("/nonexistent/app", "main")
    with pytest.raises(AttachError, match="no USDT probe ebpf_energy:nope in .*probed .*it has: ebpf_energy:tick"):
        usdt.find_probes(probed, "ebpf_energy", "nope")
    with pytest.raises(AttachError, match="it has no .note.stapsdt section"):
        usdt.find_probes(find_binary("libz.so.1"), "x", "y")
    with pytest.raises(AttachError, match="expected usdt/PATH:PROVIDER:NAME"):
        usdt.parse_section("usdt/justaname")


def test_uprobe_target_forms():
    assert parse_target("/usr/bin/app:add") == ("/usr/bin/app", "add", 0)
    assert parse_target("/proc/self/exe:main+0x10") == ("/proc/self/exe", "main", 16)
    assert parse_target("libc.so.6:0x1234") == ("libc.so.6", None, 0x1234)
    with pytest.raises(AttachError, match="must be PATH:FUNCTION"):
        parse_target("justafunction")
    with pytest.raises(AttachError, match="offset 'x' is not a number"):
        parse_target("/bin/true:main+x")


def test_usdt_argument_forms():
    assert usdt.parse_arg("-4@%eax") == (usdt.ARG_REG, 0, 80, True, 32)
    assert usdt.parse_arg("8@-16(%rbp)") == (usdt.ARG_REG_DEREF, 2**64 - 16, 32, False, 0)
    assert usdt.parse_arg("4@$5") == (usdt.ARG_CONST, 5, 0, False, 32)
    assert usdt.parse_arg("1@%r12b")[2] == 24
    with pytest.raises(AttachError, match="unknown register"):
        usdt.parse_arg("8@%xyz")
    with pytest.raises(AttachError, match="not a form"):
        usdt.parse_arg("8@8(%rax,%rdx,8)")


def test_bare_uprobe_and_usdt_sections_say_what_they_need():
    assert "a binary and a function" in auto.needs("uprobe")
    assert "usdt/PATH:PROVIDER:NAME" in auto.needs("usdt")
    assert auto.needs("uprobe/libc.so.6:getppid") is None
