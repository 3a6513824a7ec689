"""Kernel UAPI facts: bpf() commands, enum values, flags and the attr layouts.

The numbers are :mod:`abi`'s, generated from the kernel's BTF and the UAPI
headers (``python3 -m ebpf_energy.loader.abi_gen``); this module adds the
name tables, the syscall numbers and the attr layouts. The
``CDEF`` string declares one struct per ``union bpf_attr`` member we use, with
the kernel's field order, so a call can pass ``sizeof`` of just that part: the
kernel zero-fills what we leave out and rejects unknown *non-zero* bytes, so
sending less is always safe, sending more than an older kernel knows is not.
Kept free of cffi so importing the constants costs nothing.
"""

import os as _os

from . import abi as _abi
from .abi import *  # noqa: F401,F403  (every number: uapi is abi plus what BTF and headers cannot say)

_ARCH = _os.uname().machine
# (bpf, perf_event_open) syscall numbers per architecture.
_SYSCALLS = {
    "x86_64": (321, 298),
    "aarch64": (280, 241),
    "arm64": (280, 241),
    "riscv64": (280, 241),
    "s390x": (351, 331),
    "ppc64le": (361, 319),
}
SYS_bpf, SYS_perf_event_open = _SYSCALLS.get(_ARCH, (None, None))


def _names(pairs, prefix):
    """A name table from a generated ``(value, NAME)`` enum: index == value,
    lower-case without ``prefix`` (``load --json`` prints them so); the first
    name of a value that has two, unless it is the _DEPRECATED one."""
    out = {}
    for v, n in pairs:
        if v not in out or out[v].endswith("_DEPRECATED"):
            out[v] = n
    return [out.get(v, str(v))[len(prefix):].lower().replace("_deprecated", "")
            for v in range(max(out) + 1)]


CMD_NAMES = {v: n for v, n in reversed(_abi.bpf_cmd)}  # the first name of a value (BPF_PROG_TEST_RUN)
MAP_TYPE_NAMES = _names(_abi.bpf_map_type, "BPF_MAP_TYPE_")
PROG_TYPE_NAMES = _names(_abi.bpf_prog_type, "BPF_PROG_TYPE_")
LINK_TYPE_NAMES = _names(_abi.bpf_link_type, "BPF_LINK_TYPE_")
ATTACH_TYPE_NAMES = _names(_abi.bpf_attach_type, "BPF_")


def helper_id(name):
    """The id of BPF helper ``name`` (``map_lookup_elem`` -> 1)."""
    return _abi.bpf_func_id.index(name)


# the helper ids tests and benchmarks call by name in hand-written programs
FN_map_lookup_elem = helper_id("map_lookup_elem")
FN_map_update_elem = helper_id("map_update_elem")
FN_map_delete_elem = helper_id("map_delete_elem")
FN_ktime_get_ns = helper_id("ktime_get_ns")
FN_get_smp_processor_id = helper_id("get_smp_processor_id")
FN_get_current_pid_tgid = helper_id("get_current_pid_tgid")
FN_ringbuf_output = helper_id("ringbuf_output")
FN_ringbuf_reserve = helper_id("ringbuf_reserve")
FN_ringbuf_submit = helper_id("ringbuf_submit")
FN_ringbuf_discard = helper_id("ringbuf_discard")
FN_ringbuf_query = helper_id("ringbuf_query")
FN_loop = helper_id("loop")

ENOTSUPP = 524  # kernel-internal errno that leaks out of bpf() (not in errno.h)

CDEF = """
typedef uint32_t __u32;
typedef uint64_t __u64;

long syscall(long number, ...);
int ioctl(int fd, unsigned long request, ...);
int mount(const char *source, const char *target, const char *fstype,
          unsigned long flags, const void *data);

struct bpf_attr_map_create {
    __u32 map_type; __u32 key_size; __u32 value_size; __u32 max_entries;
    __u32 map_flags; __u32 inner_map_fd; __u32 numa_node;
    char  map_name[16];
    __u32 map_ifindex; __u32 btf_fd; __u32 btf_key_type_id; __u32 btf_value_type_id;
    __u32 btf_vmlinux_value_type_id;
    __u64 map_extra;
};
struct bpf_attr_elem {
    __u32 map_fd; __u64 key; __u64 value; __u64 flags;
};
struct bpf_attr_batch {
    __u64 in_batch; __u64 out_batch; __u64 keys; __u64 values;
    __u32 count; __u32 map_fd; __u64 elem_flags; __u64 flags;
};
struct bpf_attr_prog_load {
    __u32 prog_type; __u32 insn_cnt; __u64 insns; __u64 license;
    __u32 log_level; __u32 log_size; __u64 log_buf;
    __u32 kern_version; __u32 prog_flags;
    char  prog_name[16];
    __u32 prog_ifindex; __u32 expected_attach_type; __u32 prog_btf_fd;
    __u32 func_info_rec_size; __u64 func_info; __u32 func_info_cnt;
    __u32 line_info_rec_size; __u64 line_info; __u32 line_info_cnt;
    __u32 attach_btf_id; __u32 attach_btf_obj_fd;
};
struct bpf_attr_obj {
    __u64 pathname; __u32 bpf_fd; __u32 file_flags;
};
struct bpf_attr_test_run {
    __u32 prog_fd; __u32 retval; __u32 data_size_in; __u32 data_size_out;
    __u64 data_in; __u64 data_out; __u32 repeat; __u32 duration;
    __u32 ctx_size_in; __u32 ctx_size_out; __u64 ctx_in; __u64 ctx_out;
    __u32 flags; __u32 cpu; __u32 batch_size;
};
struct bpf_attr_get_id {
    __u32 start_id; __u32 next_id; __u32 open_flags;
};
struct bpf_attr_info {
    __u32 bpf_fd; __u32 info_len; __u64 info;
};
struct bpf_attr_raw_tp {
    __u64 name; __u32 prog_fd;
};
struct bpf_attr_btf_load {
    __u64 btf; __u64 btf_log_buf; __u32 btf_size; __u32 btf_log_size; __u32 btf_log_level;
};
struct bpf_attr_link_create {
    __u32 prog_fd; __u32 target_fd; __u32 attach_type; __u32 flags;
    __u32 target_btf_id;
};
struct bpf_attr_iter_create {
    __u32 link_fd; __u32 flags;
};
struct bpf_attr_link_create_tail {
    __u32 prog_fd; __u32 target_fd; __u32 attach_type; __u32 flags;
    unsigned char tail[48];
};
struct bpf_attr_enable_stats {
    __u32 type;
};

struct bpf_prog_info {
    __u32 type; __u32 id; uint8_t tag[8];
    __u32 jited_prog_len; __u32 xlated_prog_len;
    __u64 jited_prog_insns; __u64 xlated_prog_insns;
    __u64 load_time; __u32 created_by_uid; __u32 nr_map_ids; __u64 map_ids;
    char  name[16];
    __u32 ifindex; __u32 gpl_compatible;
    __u64 netns_dev; __u64 netns_ino;
    __u32 nr_jited_ksyms; __u32 nr_jited_func_lens;
    __u64 jited_ksyms; __u64 jited_func_lens;
    __u32 btf_id; __u32 func_info_rec_size; __u64 func_info;
    __u32 nr_func_info; __u32 nr_line_info; __u64 line_info; __u64 jited_line_info;
    __u32 nr_jited_line_info; __u32 line_info_rec_size; __u32 jited_line_info_rec_size;
    __u32 nr_prog_tags; __u64 prog_tags;
    __u64 run_time_ns; __u64 run_cnt; __u64 recursion_misses;
    __u32 verified_insns; __u32 attach_btf_obj_id; __u32 attach_btf_id; __u32 pad0;
};
struct bpf_map_info {
    __u32 type; __u32 id; __u32 key_size; __u32 value_size; __u32 max_entries; __u32 map_flags;
    char  name[16];
    __u32 ifindex; __u32 btf_vmlinux_value_type_id;
    __u64 netns_dev; __u64 netns_ino;
    __u32 btf_id; __u32 btf_key_type_id; __u32 btf_value_type_id; __u32 pad0;
    __u64 map_extra;
};
struct bpf_btf_info {
    __u64 btf; __u32 btf_size; __u32 id; __u64 name; __u32 name_len; __u32 kernel_btf;
};
struct bpf_link_info {
    __u32 type; __u32 id; __u32 prog_id; __u32 pad0;
    __u64 u[6];
};

struct perf_event_attr {
    __u32 type; __u32 size; __u64 config; __u64 sample_period; __u64 sample_type;
    __u64 read_format; __u64 flags;
    __u32 wakeup_events; __u32 bp_type; __u64 config1; __u64 config2;
    __u64 branch_sample_type; __u64 sample_regs_user; __u32 sample_stack_user;
    int32_t clockid; __u64 sample_regs_intr; __u32 aux_watermark;
    uint16_t sample_max_stack; uint16_t reserved2;
};
"""


def cdef_crc():
    """Checksum of CDEF: the pre-built ffi module is used only when it matches."""
    import zlib
    return zlib.crc32(CDEF.encode())


def write_ffi_module(path):
    """Pre-parse CDEF into an out-of-line ABI-mode module (``_uapi_ffi.py``).

    Importing it needs only ``_cffi_backend`` (~1 ms) instead of pycparser
    parsing the declarations at every start (~30 ms). Regenerate after editing
    CDEF: ``python3 -m ebpf_energy.loader.uapi``.
    """
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source("ebpf_energy.loader._uapi_ffi", None)
    ffi.emit_python_code(path)
    with open(path, "a") as f:
        f.write(f"\nCDEF_CRC = {cdef_crc():#x}  # of uapi.CDEF; stale when they differ\n")


if __name__ == "__main__":
    import os

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_uapi_ffi.py")
    write_ffi_module(out)
    print(f"wrote {out}")
