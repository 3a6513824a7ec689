"""Hand-assembled BPF programs and kernel-object helpers for the kernel-phase tests.

Written with :mod:`ebpf_energy.loader.asm` so these tests need no clang and no
ELF/BTF code: they check the syscall, map, attach and ring-buffer layers alone.
"""

import os
import platform
import re
import struct
import subprocess

from ebpf_energy.loader import syscall, uapi
from ebpf_energy.loader.asm import R0, R1, R2, R3, R4, R6, R7, R8, R9, R10, Asm, reg

NR_GETPPID = {"x86_64": 110, "aarch64": 173}[platform.machine()]
PATTERN = 0x0123456789ABCDEF


def _lookup_slot0(a, map_fd, out_reg, miss_label):
    """out_reg = &map[0] or goto miss_label."""
    a.st(4, R10, -4, 0)
    a.ld_map_fd(R1, map_fd)
    a.mov(R2, reg(R10))
    a.add(R2, -4)
    a.call(uapi.FN_map_lookup_elem)
    a.jmp("jeq", R0, 0, miss_label)
    if out_reg != R0:
        a.mov(out_reg, reg(R0))


def counter_insns(count_map_fd, pid=None, syscall_nr_ctx_off=None, syscall_nr=None):
    """Increment u64 slot 0 of an ARRAY map, optionally only for ``pid`` (tgid)
    and only when the u64 at ctx+``syscall_nr_ctx_off`` equals ``syscall_nr``."""
    a = Asm()
    a.mov(R6, reg(R1))
    if syscall_nr_ctx_off is not None:
        a.ldx(8, R2, R6, syscall_nr_ctx_off)
        a.jmp("jne", R2, syscall_nr, "out")
    if pid is not None:
        a.call(uapi.FN_get_current_pid_tgid)
        a.rsh(R0, 32)
        a.jmp("jne", R0, pid, "out")
    _lookup_slot0(a, count_map_fd, R7, "out")
    a.mov(R1, 1)
    a.atomic_add(8, R7, 0, R1)
    a.label("out")
    a.mov(R0, 0)
    a.exit()
    return a.assemble()


def ringbuf_producer_insns(rb_fd, seq_fd, size, discard_mask=3):
    """One record per run: reserve ``size`` bytes, write the run's sequence number
    (u64 from ``seq_fd`` slot 0, then incremented) and a byte pattern; records whose
    ``seq & discard_mask == discard_mask`` are discarded instead of submitted (None: none are)."""
    assert size >= 8
    a = Asm()
    _lookup_slot0(a, seq_fd, R7, "out")
    a.ldx(8, R8, R7, 0)
    a.mov(R1, reg(R8))
    a.add(R1, 1)
    a.stx(8, R7, 0, R1)
    a.ld_map_fd(R1, rb_fd)
    a.mov(R2, size)
    a.mov(R3, 0)
    a.call(uapi.FN_ringbuf_reserve)
    a.jmp("jeq", R0, 0, "out")
    a.mov(R9, reg(R0))
    a.stx(8, R9, 0, R8)
    for i in range(8, size):
        a.st(1, R9, i, expected_byte(i))
    a.mov(R2, 0)
    if discard_mask is not None:
        a.mov(R1, reg(R8))
        a.and_(R1, discard_mask)
        a.jmp("jeq", R1, discard_mask, "discard")
    a.mov(R1, reg(R9))
    a.call(uapi.FN_ringbuf_submit)
    if discard_mask is not None:  # (the verifier refuses unreachable code)
        a.ja("out")
        a.label("discard")
        a.mov(R1, reg(R9))
        a.call(uapi.FN_ringbuf_discard)
    a.label("out")
    a.mov(R0, 0)
    a.exit()
    return a.assemble()


def expected_byte(i):
    return (i * 7 + 3) & 0xFF


def expected_record(seq, size):
    return struct.pack("<Q", seq) + bytes(expected_byte(i) for i in range(8, size))


def burst_producer_insns(rb_fd, per_run, size=16):
    """``per_run`` bpf_ringbuf_output calls of ``size`` bytes (ktime, pattern) per run."""
    assert size == 16
    a = Asm()
    a.call(uapi.FN_ktime_get_ns)
    a.stx(8, R10, -16, R0)
    a.ld_imm64(R1, PATTERN)
    a.stx(8, R10, -8, R1)
    for _ in range(per_run):
        a.ld_map_fd(R1, rb_fd)
        a.mov(R2, reg(R10))
        a.add(R2, -16)
        a.mov(R3, size)
        a.mov(R4, 0)
        a.call(uapi.FN_ringbuf_output)
    a.mov(R0, 0)
    a.exit()
    return a.assemble()


def load_socket_filter(insns, name):
    fd, _ = syscall.prog_load(uapi.BPF_PROG_TYPE_SOCKET_FILTER, insns, "GPL", name=name)
    return fd


def run(prog_fd, repeat=1):
    """BPF_PROG_TEST_RUN a socket filter on a dummy 64-byte packet."""
    return syscall.prog_test_run(prog_fd, b"\0" * 64, repeat=repeat)


_btf_ids = {}


def vmlinux_btf_id(typedef_name):
    """BTF id of ``typedef_name`` in vmlinux BTF (via bpftool, until KernelBtf is used here)."""
    if typedef_name not in _btf_ids:
        out = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"], check=True,
                             capture_output=True, text=True).stdout
        m = re.search(r"^\[(\d+)\] TYPEDEF '%s'" % re.escape(typedef_name), out, re.M)
        assert m, f"{typedef_name} not in vmlinux BTF"
        _btf_ids[typedef_name] = int(m.group(1))
    return _btf_ids[typedef_name]


def open_fds():
    """This process's open fds (minus the one listdir used to read the list)."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:
            continue
        out.add(name)
    return out


def obj_ids(kind, fd):
    return syscall.obj_get_info(fd, kind)["id"]


# --- a tiny BTF blob, by hand: enough for task storage maps -----------------------------

BTF_KIND_INT = 1
BTF_KIND_STRUCT = 4


def tiny_btf():
    """BTF with [1] int (4 bytes, signed), [2] struct val { long long a; int b; int c; } (16 bytes),
    [3] long long. Returns (blob, int_id, struct_id)."""
    strings = b"\0int\0val\0a\0b\0c\0long long\0"
    off = {name: strings.index(name.encode() + b"\0") for name in ("int", "val", "a", "b", "c", "long long")}

    def t(name_off, kind, vlen, size_or_type):
        return struct.pack("<III", name_off, (kind << 24) | vlen, size_or_type)

    types = b""
    types += t(off["int"], BTF_KIND_INT, 0, 4) + struct.pack("<I", (1 << 24) | 32)   # signed, 32 bits
    types += t(off["val"], BTF_KIND_STRUCT, 3, 16)
    types += struct.pack("<III", off["a"], 3, 0)
    types += struct.pack("<III", off["b"], 1, 64)
    types += struct.pack("<III", off["c"], 1, 96)
    types += t(off["long long"], BTF_KIND_INT, 0, 8) + struct.pack("<I", (1 << 24) | 64)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings, 1, 2
