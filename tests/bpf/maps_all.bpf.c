// SPDX-License-Identifier: GPL-2.0
/* Loader corpus: one BTF-defined map of each type the loader supports, with
 * key/value structs, flags and numa_node, plus a program that touches each of
 * them for `target_tgid` (.rodata), so every type round-trips:
 *
 *   map            type              key          value        map_flags                          other
 *   hash_map       HASH              struct mkey  struct mval  BPF_F_NO_PREALLOC|BPF_F_NUMA_NODE  numa_node 0, 128 entries
 *   array_map      ARRAY             __u32        struct mval  BPF_F_MMAPABLE                     16 entries
 *   pcpu_hash      PERCPU_HASH       struct mkey  struct mval  0                                  64 entries
 *   pcpu_array     PERCPU_ARRAY      __u32        __u64        0                                  4 entries
 *   lru_hash       LRU_HASH          struct mkey  struct mval  BPF_F_NO_COMMON_LRU                256 entries
 *   lru_pcpu_hash  LRU_PERCPU_HASH   struct mkey  __u64        0                                  256 entries
 *   ring           RINGBUF           -            -            0                                  16 KiB
 *   perf_events    PERF_EVENT_ARRAY  __u32        __u32        0                                  8 entries (declared)
 *   task_store     TASK_STORAGE      int          struct mval  BPF_F_NO_PREALLOC                  0 entries (required)
 *   storage_echo   HASH              __u32 (tid)  struct mval  0                                  64 entries
 *
 * On each getppid() (trigger_nr) of target_tgid (tp_btf/sys_enter) the program:
 *  - gets (creating) the task storage of the current task, bumps its `count`,
 *    sets `tag` = TAG_TASK and `tid`, then copies what it reads back into
 *    storage_echo[tid]: "written by a program, read back through it";
 *  - writes {tag = TAG_x, tid, count} into hash_map/pcpu_hash/lru_hash under key
 *    {tgid, tid}, array_map[1], pcpu_array[1] (+1 on this CPU), lru_pcpu_hash
 *    (+1), and a struct mval record into `ring`;
 *  - tries bpf_perf_event_output on perf_events (no fd installed -> error,
 *    counted in perf_output_errors).
 * After N calls from one thread: calls == N; task storage and storage_echo[tid]
 * count == N, tag TAG_TASK; hash_map / lru_hash [{tgid,tid}].count == N;
 * pcpu_hash count and lru_pcpu_hash value summed over CPUs == N; array_map[1]
 * count == N; pcpu_array[1] summed == N; N records on `ring` with count 1..N;
 * perf_output_errors == N (no perf event fd installed); ring_reserve_failed 0. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define TAG_HASH  0x48415348 /* "HASH" */
#define TAG_ARRAY 0x41525259
#define TAG_PCPU  0x50435055
#define TAG_LRU   0x4c525500
#define TAG_RING  0x52494e47
#define TAG_TASK  0x5441534b

struct mkey {
	__u32 tgid;
	__u32 tid;
};

struct mval {
	__u64 count;
	__u32 tag;
	__u32 tid;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_NUMA_NODE);
	__uint(numa_node, 0);
	__type(key, struct mkey);
	__type(value, struct mval);
} hash_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct mval);
} array_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, struct mkey);
	__type(value, struct mval);
} pcpu_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} pcpu_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct mkey);
	__type(value, struct mval);
} lru_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 256);
	__type(key, struct mkey);
	__type(value, __u64);
} lru_pcpu_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024);
} ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} perf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mval);
} task_store SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct mval);
} storage_echo SEC(".maps");

const volatile __u32 target_tgid = 0; /* 0 = nobody */
const volatile __u64 trigger_nr = 110; /* only this syscall triggers: getppid on x86-64 */

__u64 calls = 0;
__u64 ring_reserve_failed = 0;
__u64 perf_output_errors = 0;

static void bump(void *map, struct mkey *k, __u32 tag)
{
	struct mval fresh = { .count = 1, .tag = tag, .tid = k->tid }, *v;

	v = bpf_map_lookup_elem(map, k);
	if (v)
		v->count += 1;
	else
		bpf_map_update_elem(map, k, &fresh, BPF_NOEXIST);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(touch_all, struct pt_regs *regs, long id)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct mkey k = { .tgid = pid_tgid >> 32, .tid = (__u32)pid_tgid };
	struct task_struct *task;
	struct mval *tv, *av, *rv, echo;
	__u64 *cnt, one = 1;
	__u32 idx = 1;

	if (!target_tgid || k.tgid != target_tgid || id != trigger_nr)
		return 0;
	__sync_fetch_and_add(&calls, 1);

	task = bpf_get_current_task_btf();
	tv = bpf_task_storage_get(&task_store, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (tv) {
		tv->count += 1;
		tv->tag = TAG_TASK;
		tv->tid = k.tid;
		/* read it back through the helper, not through our own pointer */
		tv = bpf_task_storage_get(&task_store, task, 0, 0);
		if (tv) {
			echo = *tv;
			bpf_map_update_elem(&storage_echo, &k.tid, &echo, BPF_ANY);
		}
	}

	bump(&hash_map, &k, TAG_HASH);
	bump(&pcpu_hash, &k, TAG_PCPU);
	bump(&lru_hash, &k, TAG_LRU);

	av = bpf_map_lookup_elem(&array_map, &idx);
	if (av) {
		av->count += 1;
		av->tag = TAG_ARRAY;
		av->tid = k.tid;
	}
	cnt = bpf_map_lookup_elem(&pcpu_array, &idx);
	if (cnt)
		*cnt += 1;
	cnt = bpf_map_lookup_elem(&lru_pcpu_hash, &k);
	if (cnt)
		*cnt += 1;
	else
		bpf_map_update_elem(&lru_pcpu_hash, &k, &one, BPF_NOEXIST);

	rv = bpf_ringbuf_reserve(&ring, sizeof(*rv), 0);
	if (rv) {
		rv->count = calls;
		rv->tag = TAG_RING;
		rv->tid = k.tid;
		bpf_ringbuf_submit(rv, 0);
	} else {
		__sync_fetch_and_add(&ring_reserve_failed, 1);
	}

	if (bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &k, sizeof(k)))
		__sync_fetch_and_add(&perf_output_errors, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
