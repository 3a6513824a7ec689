/* A user-space program for the uprobe and USDT tests (built with `cc` by
 * tests/test_links_uprobe.py, not by `make test-objects`).
 *
 * It waits for a line on stdin (so the test attaches first), then calls
 * probed_add() N times, getppid() N times through libc, and passes the USDT
 * probe ebpf_energy:tick N times -- but only while its semaphore is non-zero,
 * i.e. while a uprobe with that reference counter is attached. It prints
 * "<sum> <ticks>" and exits. */
#define _SDT_HAS_SEMAPHORES 1
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/sdt.h>

unsigned short ebpf_energy_tick_semaphore __attribute__((unused)) __attribute__((section(".probes")));

__attribute__((noinline)) int probed_add(int a, int b)
{
	__asm__ volatile("" ::: "memory");
	return a + b;
}

__attribute__((noinline)) int probed_twice(int a)
{
	__asm__ volatile("" ::: "memory");
	return 2 * a;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1;
	long sum = 0;
	int ticks = 0;
	char line[16];

	if (!fgets(line, sizeof(line), stdin))
		return 2;
	for (int i = 0; i < n; i++) {
		sum += probed_add(i, 1000);
		sum += probed_twice(i);
		getppid();
		if (ebpf_energy_tick_semaphore) {
			ticks++;
			STAP_PROBE2(ebpf_energy, tick, i, sum);
		}
	}
	printf("%ld %d\n", sum, ticks);
	return 0;
}
