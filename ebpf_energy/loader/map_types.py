"""What each map type is to the kernel and to user space, in one place.

Three facts per ``enum bpf_map_type`` that several phases need: its name
(``load --json``), whether BPF_MAP_CREATE refuses BTF key/value type ids for
it (the kernel describes fds, ids and sockets, not C types), and why user
space cannot read its entries, if it cannot (the report shows the reason
instead of failing the load). A type missing from :data:`UNREADABLE` is read;
if the kernel still says no, the report says that too.
"""

from __future__ import annotations

from . import uapi

# enum bpf_map_type names, as `load --json` prints them (generated: uapi/abi)
MAP_TYPES = dict(enumerate(uapi.MAP_TYPE_NAMES))
MAP_TYPE_IDS = {v: k for k, v in MAP_TYPES.items()}
PROG_ARRAY, PERF_EVENT_ARRAY = uapi.BPF_MAP_TYPE_PROG_ARRAY, uapi.BPF_MAP_TYPE_PERF_EVENT_ARRAY
ARRAY_OF_MAPS, HASH_OF_MAPS = uapi.BPF_MAP_TYPE_ARRAY_OF_MAPS, uapi.BPF_MAP_TYPE_HASH_OF_MAPS
STRUCT_OPS, RINGBUF = uapi.BPF_MAP_TYPE_STRUCT_OPS, uapi.BPF_MAP_TYPE_RINGBUF
TASK_STORAGE, USER_RINGBUF = uapi.BPF_MAP_TYPE_TASK_STORAGE, uapi.BPF_MAP_TYPE_USER_RINGBUF
# the ELF sections whose variables are struct_ops maps (libbpf's names; .link: attached through a link)
STRUCT_OPS_SECTIONS = (".struct_ops", ".struct_ops.link")

# Types whose key/value BPF_MAP_CREATE will not have described by BTF (the
# same set libbpf leaves BTF out for, plus the ring buffers and prog arrays,
# whose kernel code refuses it too). Any other type created with BTF ids that
# the kernel refuses is created again without them.
NO_BTF_KV = frozenset(MAP_TYPE_IDS[n] for n in (
    "prog_array", "perf_event_array", "stack_trace", "cgroup_array", "array_of_maps", "hash_of_maps",
    "devmap", "devmap_hash", "cpumap", "xskmap", "sockmap", "sockhash", "queue", "stack", "arena",
    "ringbuf", "user_ringbuf"))

_FDS = "its values are kernel objects (fds in, ids out), not data"
UNREADABLE = {
    "ringbuf": "a ring buffer: its records are consumed in order (RingBuffer), not looked up",
    "user_ringbuf": "a user ring buffer: user space writes records, programs drain them",
    "perf_event_array": "it holds perf event fds, one per CPU: records arrive through perf buffers",
    "prog_array": _FDS,
    "array_of_maps": _FDS,
    "hash_of_maps": _FDS,
    "cgroup_array": "the kernel has no lookup from user space for cgroup arrays (ENOTSUPP)",
    "xskmap": "the kernel has no lookup from user space for AF_XDP socket maps",
    "sockmap": "its values are sockets: user space reads back only cookies of 8-byte values",
    "sockhash": "its values are sockets: user space reads back only cookies of 8-byte values",
    "task_storage": "its keys are tasks (a pidfd per lookup), not values one can list",
    "inode_storage": "its keys are inodes (an fd per lookup), not values one can list",
    "sk_storage": "its keys are sockets (an fd per lookup), not values one can list",
    "cgrp_storage": "its keys are cgroups (an fd per lookup), not values one can list",
    "stack_trace": "stack ids are only meaningful to the program that took them",
    "queue": "a queue is popped or peeked, not looked up by key",
    "stack": "a stack is popped or peeked, not looked up by key",
    "bloom_filter": "a bloom filter answers membership queries only",
    "struct_ops": "its value is the kernel's registration state, not data",
    "arena": "an arena is memory mapped by the program, not key/value entries",
}


def type_name(map_type: int) -> str:
    return MAP_TYPES.get(map_type, str(map_type))


def unreadable_reason(map_type: int) -> str | None:
    """Why user space cannot list this type's entries, or None when it can."""
    return UNREADABLE.get(type_name(map_type))
