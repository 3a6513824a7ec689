// SPDX-License-Identifier: GPL-2.0
/* CO-RE test fixture: stands in for a kernel's BTF.
 *
 * The same types as core_local.bpf.c (without ___flavor suffixes) with
 * fields moved, resized, renamed or missing, bitfields elsewhere and an enum
 * with other values. Nothing here runs; the globals below only make clang
 * emit every type (and every BTF kind clang 14 can produce) into .BTF.
 * Offsets are spelled out in comments: tests/test_core.py checks against
 * them independently of the loader.
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int s32;
typedef unsigned long long u64;
typedef long long s64;

#define SEC(n) __attribute__((section(n), used))
#define TAG(x) __attribute__((btf_decl_tag(x)))

enum sample_state { ST_IDLE = 10, ST_RUNNING = 20, ST_DEAD = 40 };

struct sample_inner {
	u64 pad;                    /* 0 */
	u32 a;                      /* 8 */
	u32 b;                      /* 12 */
};

struct sample {
	u64 flags;                  /* 0, 8 bytes (local: u32) */
	char comm[16];              /* 8 */
	s32 pid;                    /* 24 (local: 0) */
	s64 tgid;                   /* 32, 8 bytes signed (local: int) */
	struct sample_inner inner;  /* 40 */
	union {                     /* 56, anonymous */
		u32 uval;
		s32 sval;
	};
	u32 pad2;                   /* 60 */
	u32 bf_a : 3;               /* bits 512..514 */
	u32 bf_b : 7;               /* bits 515..521 */
	s32 bf_s : 5;               /* bits 522..526 */
	enum sample_state state;    /* 68 */
	u64 arr[4];                 /* 72 */
	u16 small;                  /* 104, unsigned 2 bytes (local: u32) */
	/* no 'ghost' field */
};

/* two flavors with the same essential name that disagree: ambiguous */
struct dup___one { int x; int y; };
struct dup___two { int y; int x; };
/* two flavors that agree */
struct agree___one { int k; };
struct agree___two { int k; };

struct fwd_only;
struct tagged { int v TAG("member_tag"); } TAG("type_tag_on_struct");

typedef u32 __attribute__((btf_type_tag("user"))) *user_u32_ptr;

struct kinds {
	const volatile int cv;
	int *restrict rp;
	struct fwd_only *fp;
	float f;
	double d;
	_Bool b;
	user_u32_ptr up;
	int (*fn)(int a, long b);
};

struct sample sample_instance;
struct sample_inner inner_instance;
struct dup___one dup1;
struct dup___two dup2;
struct agree___one agree1;
struct agree___two agree2;
struct tagged tagged_instance;
struct kinds kinds_instance;
enum sample_state state_instance;

TAG("func_tag") int target_func(int arg TAG("arg_tag"))
{
	return arg + sample_instance.pid;
}

SEC("tp/sched/sched_switch") int use_all(void *ctx)
{
	return target_func(inner_instance.a);
}

char LICENSE[] SEC("license") = "GPL";
