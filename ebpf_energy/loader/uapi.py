"""Kernel UAPI facts: bpf() commands, enum values, flags and the attr layouts.

Numbers come from ``include/uapi/linux/bpf.h`` and ``perf_event.h``. The
``CDEF`` string declares one struct per ``union bpf_attr`` member we use, with
the kernel's field order, so a call can pass ``sizeof`` of just that part: the
kernel zero-fills what we leave out and rejects unknown *non-zero* bytes, so
sending less is always safe, sending more than an older kernel knows is not.
Kept free of cffi so importing the constants costs nothing.
"""

import os as _os

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

# enum bpf_cmd
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_TEST_RUN = 10
BPF_PROG_GET_NEXT_ID = 11
BPF_MAP_GET_NEXT_ID = 12
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_BTF_LOAD = 18
BPF_BTF_GET_FD_BY_ID = 19
BPF_TASK_FD_QUERY = 20
BPF_MAP_LOOKUP_AND_DELETE_ELEM = 21
BPF_MAP_FREEZE = 22
BPF_BTF_GET_NEXT_ID = 23
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_LOOKUP_AND_DELETE_BATCH = 25
BPF_MAP_UPDATE_BATCH = 26
BPF_MAP_DELETE_BATCH = 27
BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29
BPF_LINK_GET_FD_BY_ID = 30
BPF_LINK_GET_NEXT_ID = 31
BPF_ENABLE_STATS = 32
BPF_ITER_CREATE = 33
BPF_LINK_DETACH = 34
BPF_PROG_BIND_MAP = 35

CMD_NAMES = {v: k for k, v in globals().items() if k.startswith("BPF_") and isinstance(v, int)}

# enum bpf_map_type, in order (index == value); lower-case names as `load --json` prints them.
MAP_TYPE_NAMES = [
    "unspec", "hash", "array", "prog_array", "perf_event_array", "percpu_hash", "percpu_array",
    "stack_trace", "cgroup_array", "lru_hash", "lru_percpu_hash", "lpm_trie", "array_of_maps",
    "hash_of_maps", "devmap", "sockmap", "cpumap", "xskmap", "sockhash", "cgroup_storage",
    "reuseport_sockarray", "percpu_cgroup_storage", "queue", "stack", "sk_storage", "devmap_hash",
    "struct_ops", "ringbuf", "inode_storage", "task_storage", "bloom_filter", "user_ringbuf",
    "cgrp_storage", "arena",
]
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PROG_ARRAY = 3
BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_RINGBUF = 27
BPF_MAP_TYPE_TASK_STORAGE = 29

# enum bpf_prog_type
PROG_TYPE_NAMES = [
    "unspec", "socket_filter", "kprobe", "sched_cls", "sched_act", "tracepoint", "xdp", "perf_event",
    "cgroup_skb", "cgroup_sock", "lwt_in", "lwt_out", "lwt_xmit", "sock_ops", "sk_skb",
    "cgroup_device", "sk_msg", "raw_tracepoint", "cgroup_sock_addr", "lwt_seg6local", "lirc_mode2",
    "sk_reuseport", "flow_dissector", "cgroup_sysctl", "raw_tracepoint_writable", "cgroup_sockopt",
    "tracing", "struct_ops", "ext", "lsm", "sk_lookup", "syscall", "netfilter",
]
BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26
BPF_PROG_TYPE_SYSCALL = 31

# enum bpf_attach_type (the ones a tracing loader needs)
BPF_TRACE_RAW_TP = 23
BPF_TRACE_FENTRY = 24
BPF_TRACE_FEXIT = 25
BPF_MODIFY_RETURN = 26
BPF_TRACE_ITER = 28
BPF_PERF_EVENT = 41

# enum bpf_link_type
LINK_TYPE_NAMES = [
    "unspec", "raw_tracepoint", "tracing", "cgroup", "iter", "netns", "xdp", "perf_event",
    "kprobe_multi", "struct_ops", "netfilter", "tcx", "uprobe_multi", "netkit", "sockmap",
]

# map flags
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_NUMA_NODE = 1 << 2
BPF_F_RDONLY = 1 << 3
BPF_F_WRONLY = 1 << 4
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_WRONLY_PROG = 1 << 8
BPF_F_MMAPABLE = 1 << 10
# update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_F_LOCK = 4
# prog flags
BPF_F_SLEEPABLE = 1 << 4

BPF_OBJ_NAME_LEN = 16
BPF_STATS_RUN_TIME = 0

# instruction constants used by asm.py and the program loader
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2
BPF_PSEUDO_BTF_ID = 3
BPF_PSEUDO_FUNC = 4
BPF_PSEUDO_CALL = 1
BPF_PSEUDO_KFUNC_CALL = 2

# helper ids (enum bpf_func_id)
FN_map_lookup_elem = 1
FN_map_update_elem = 2
FN_map_delete_elem = 3
FN_ktime_get_ns = 5
FN_get_smp_processor_id = 8
FN_get_current_pid_tgid = 14
FN_ringbuf_output = 130
FN_ringbuf_reserve = 131
FN_ringbuf_submit = 132
FN_ringbuf_discard = 133
FN_ringbuf_query = 134
FN_loop = 181

# perf_event_open
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_SAMPLE_RAW = 1 << 10
PERF_ATTR_SIZE_VER5 = 112
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_BPF = 0x40042408

# ring buffer record header bits
BPF_RINGBUF_BUSY_BIT = 1 << 31
BPF_RINGBUF_DISCARD_BIT = 1 << 30
BPF_RINGBUF_HDR_SZ = 8

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
struct bpf_attr_link_create_iter {
    __u32 prog_fd; __u32 target_fd; __u32 attach_type; __u32 flags;
    __u64 iter_info; __u32 iter_info_len;
};
struct bpf_attr_iter_create {
    __u32 link_fd; __u32 flags;
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
