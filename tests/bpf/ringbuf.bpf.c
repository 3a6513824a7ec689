// SPDX-License-Identifier: GPL-2.0
/* Loader corpus: a ring buffer with a known record layout.
 * Every getppid() made by `target_tgid` (.rodata) takes the next sequence
 * number and reserves a record; records whose seq % discard_every ==
 * discard_every - 1 are discarded (bpf_ringbuf_discard), the rest submitted.
 * With discard_every = 4 (default) and N getppid() calls a consumer must see
 * exactly the seqs 0..N-1 without 3, 7, 11, ... in order, each with
 * pid = os.getpid(), tid = the calling thread, magic = 0x5EED5EED and
 * pattern[i] = 0xA0 + i. Counters in .bss: submitted, discarded, reserve_failed.
 * A tiny max_entries (set before load) makes reserve_failed grow instead. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define NR_GETPPID_X86_64 110

struct rb_record {
	__u64 seq;
	__u32 pid;     /* tgid */
	__u32 tid;
	__u32 magic;   /* 0x5EED5EED */
	__u32 cpu;
	__u8 pattern[16]; /* 0xA0, 0xA1, ... 0xAF */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} records SEC(".maps");

const volatile __u32 target_tgid = 0;  /* 0 = nobody */
const volatile __u64 trigger_nr = NR_GETPPID_X86_64;
const volatile __u32 discard_every = 4; /* 0 = never discard */

__u64 next_seq = 0;
__u64 submitted = 0;
__u64 discarded = 0;
__u64 reserve_failed = 0;
struct rb_record layout = {}; /* keeps the record type in BTF for decoders */

SEC("raw_tp/sys_enter")
int BPF_PROG(emit, struct pt_regs *regs, long id)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct rb_record *r;
	__u64 seq;
	int i;

	if (!target_tgid || (pid_tgid >> 32) != target_tgid || id != trigger_nr)
		return 0;
	seq = __sync_fetch_and_add(&next_seq, 1);
	r = bpf_ringbuf_reserve(&records, sizeof(*r), 0);
	if (!r) {
		__sync_fetch_and_add(&reserve_failed, 1);
		return 0;
	}
	r->seq = seq;
	r->pid = pid_tgid >> 32;
	r->tid = (__u32)pid_tgid;
	r->magic = 0x5EED5EED;
	r->cpu = bpf_get_smp_processor_id();
	for (i = 0; i < 16; i++)
		r->pattern[i] = 0xA0 + i;
	if (discard_every && seq % discard_every == discard_every - 1) {
		bpf_ringbuf_discard(r, 0);
		__sync_fetch_and_add(&discarded, 1);
	} else {
		bpf_ringbuf_submit(r, 0);
		__sync_fetch_and_add(&submitted, 1);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
