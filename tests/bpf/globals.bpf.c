// SPDX-License-Identifier: GPL-2.0
/* Loader corpus: every kind of global data.
 *  .data          initialised globals (data_counter = 42, data_array, greeting,
 *                 trigger_tgid = -1 which user space writes AFTER load)
 *  .bss           zero globals (bss_hits, bss_sum, bss_match)
 *  static         a static initialised table (static_table, also .data)
 *  .rodata        a const table indexed at run time (weights; a constant index
 *                 would be folded away) and a const char[] compared in code
 *  .rodata.str1.1 string literals passed to bpf_trace_printk (only called when
 *                 data_trace is set, so the literal is loaded but stays quiet)
 * After load (before any trigger) a test reads data_counter == 42 etc.; then it
 * writes its tgid into .data trigger_tgid, makes a syscall and checks:
 * data_counter == 43 after one call, bss_hits counts calls, bss_sum ==
 * sum(static_table) + sum(data_array) = 100 + 10 = 110, bss_match == 1 (greeting
 * equals expected), bss_weight == 1003 after the first call (43 & 7 = 3), .rodata
 * holds the weights table, and .rodata.str1.1 contains "globals: hit %d\n". */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

int trigger_tgid = -1;                 /* .data: set from user space after load */
int data_counter = 42;                 /* .data */
__u64 data_array[4] = { 1, 2, 3, 4 };  /* .data */
char greeting[8] = "hello";            /* .data, compared with `expected` */
int data_trace = 0;                    /* .data: 1 = bpf_trace_printk each hit */

static __u32 static_table[4] = { 10, 20, 30, 40 }; /* .data (static) */

static const char expected[8] = "hello"; /* compared in code */
static const __u64 weights[8] = { 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007 }; /* .rodata */

__u64 bss_hits;  /* .bss */
__u64 bss_sum;   /* .bss */
__u32 bss_match; /* .bss */
__u64 bss_weight; /* .bss: weights[data_counter & 7] after the increment */

SEC("raw_tp/sys_enter")
int touch_globals(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 sum = 0;
	__u32 match = 1;
	int i;

	if (trigger_tgid < 0 || tgid != (__u32)trigger_tgid)
		return 0;
	for (i = 0; i < 4; i++)
		sum += static_table[i] + data_array[i];
	for (i = 0; i < 8; i++)
		if (greeting[i] != expected[i])
			match = 0;
	bss_sum = sum;
	bss_match = match;
	bss_hits += 1;
	data_counter += 1;
	bss_weight = weights[data_counter & 7];
	if (data_trace)
		bpf_trace_printk("globals: hit %d\n", sizeof("globals: hit %d\n"), data_counter);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
