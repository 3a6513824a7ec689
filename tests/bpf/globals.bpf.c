// SPDX-License-Identifier: GPL-2.0
/* Loader corpus: every kind of global data.
 *  .data          initialised globals: trigger_tgid = -1 (user space writes it
 *                 AFTER load, through the map), data_counter = 42,
 *                 data_array = {1,2,3,4}, greeting = "hello", and the static
 *                 static_table = {10,20,30,40} (written by the program, so it
 *                 is not folded into the code)
 *  .bss           zero globals: bss_hits, bss_sum, bss_match, bss_weight,
 *                 data_trace (= 0, so it lands in .bss despite its name)
 *  .rodata        trigger_nr (const volatile) and the weights table, indexed
 *                 at run time (a constant index would be folded away)
 *  .rodata.str1.1 the string literal given to bpf_trace_printk (called only
 *                 when data_trace is set, so it is loaded but stays quiet)
 * Right after load (no trigger yet) a test reads data_counter == 42,
 * data_array, greeting, trigger_tgid == -1, .bss all zero, and finds
 * "globals: hit %d\n" in .rodata.str1.1. Then it writes its tgid into .data
 * trigger_tgid and calls os.getppid() N times; each call, in this order:
 *     bss_sum = sum(static_table) + sum(data_array)     (110 on the first call)
 *     bss_match = (greeting == "hello"), static_table[bss_hits & 3] += 1,
 *     bss_hits += 1, data_counter += 1, bss_weight = weights[data_counter & 7]
 * so after N calls: bss_hits == N, data_counter == 42 + N, bss_sum == 109 + N,
 * static_table[i] == 10*(i+1) + len([k for k in range(N) if k % 4 == i]),
 * bss_match == 1, bss_weight == 1000 + ((42 + N) & 7).
 * Writing "world" into greeting makes bss_match 0 on the next call. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

int trigger_tgid = -1;                 /* .data: set from user space after load */
int data_counter = 42;                 /* .data */
__u64 data_array[4] = { 1, 2, 3, 4 };  /* .data */
char greeting[8] = "hello";            /* .data, compared with `expected` */
int data_trace = 0;                    /* .bss (zero): 1 = bpf_trace_printk each hit */

static __u32 static_table[4] = { 10, 20, 30, 40 }; /* .data (static, written below) */

const volatile __u64 trigger_nr = 110; /* only this syscall triggers: getppid on x86-64 */

static const char expected[8] = "hello"; /* compared in code */
static const __u64 weights[8] = { 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007 }; /* .rodata */

__u64 bss_hits;  /* .bss */
__u64 bss_sum;   /* .bss */
__u32 bss_match; /* .bss */
__u64 bss_weight; /* .bss: weights[data_counter & 7] after the increment */

SEC("raw_tp/sys_enter")
int BPF_PROG(touch_globals, struct pt_regs *regs, long id)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 sum = 0;
	__u32 match = 1;
	int i;

	if (trigger_tgid < 0 || tgid != (__u32)trigger_tgid || id != trigger_nr)
		return 0;
	for (i = 0; i < 4; i++)
		sum += static_table[i] + data_array[i];
	for (i = 0; i < 8; i++)
		if (greeting[i] != expected[i])
			match = 0;
	bss_sum = sum;
	bss_match = match;
	static_table[bss_hits & 3] += 1; /* run-time index: the array stays whole */
	bss_hits += 1;
	data_counter += 1;
	bss_weight = weights[data_counter & 7];
	if (data_trace)
		bpf_trace_printk("globals: hit %d\n", sizeof("globals: hit %d\n"), data_counter);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
