// SPDX-License-Identifier: GPL-2.0
/* CO-RE test fixture: programs whose CO-RE relocations are resolved against
 * core_target.bpf.o (and a few against the running kernel's BTF).
 *
 * Local types carry ___local flavors; their layout differs from the target on
 * purpose (see core_target.bpf.c). Programs are only compiled and relocated,
 * never loaded, so they may read through the context pointer freely.
 */
/* the fixed-width names bpf_helpers.h needs, without <linux/types.h> */
typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

typedef unsigned int u32;
typedef int s32;
typedef unsigned long long u64;

enum sample_state___local { ST_IDLE___local = 0, ST_RUNNING___local = 1, ST_ZOMBIE___local = 2 };

struct sample_inner___local {
	u32 a;                      /* 0 (target 8) */
	u32 b;                      /* 4 (target 12) */
} __attribute__((preserve_access_index));

struct sample___local {
	int pid;                    /* 0   (target 24) */
	u32 flags;                  /* 4   (target 0, u64) */
	char comm[16];              /* 8   (target 8) */
	struct sample_inner___local inner;  /* 24 (target 40) */
	union {
		u32 uval;           /* 32  (target 56) */
		s32 sval;
	};
	u32 bf_a : 3;               /* bits 288.. (target 512) */
	u32 bf_b : 7;               /* (target 515) */
	s32 bf_s : 5;               /* (target 522) */
	enum sample_state___local state;   /* (target 68) */
	u64 arr[4];                 /* (target 72) */
	int tgid;                   /* signed 4 bytes (target s64): load cannot be resized */
	u32 small;                  /* unsigned 4 bytes (target u16): load resized to 2 */
	int ghost;                  /* absent in target */
} __attribute__((preserve_access_index));

struct nowhere___local { int q; } __attribute__((preserve_access_index));
struct dup___local { int y; } __attribute__((preserve_access_index));
struct agree___local { int k; } __attribute__((preserve_access_index));

/* kernel types, for resolution against /sys/kernel/btf/vmlinux */
struct task_struct___local {
	int pid;
	int tgid;
	char comm[16];
} __attribute__((preserve_access_index));

u64 out[32];

SEC("tp/test/core_fields")
int core_fields(void *ctx)
{
	struct sample___local *s = ctx;

	out[0] = BPF_CORE_READ(s, pid);                  /* byte offset */
	out[1] = BPF_CORE_READ(s, inner.b);              /* nested */
	out[2] = BPF_CORE_READ(s, arr[2]);               /* array element */
	out[3] = BPF_CORE_READ(s, uval);                 /* through an anonymous union */
	out[4] = bpf_core_field_exists(s->ghost);        /* 0 in target */
	out[5] = bpf_core_field_exists(s->flags);        /* 1 */
	out[6] = bpf_core_field_size(s->flags);          /* 8 in target */
	out[7] = bpf_core_field_size(s->comm);           /* 16 */
	out[8] = __builtin_preserve_field_info(s->pid, BPF_FIELD_SIGNED);
	out[9] = __builtin_preserve_field_info(s->flags, BPF_FIELD_SIGNED);
	out[10] = bpf_core_field_offset(s->comm);
	return 0;
}

SEC("tp/test/core_bitfields")
int core_bitfields(void *ctx)
{
	struct sample___local *s = ctx;

	out[0] = BPF_CORE_READ_BITFIELD(s, bf_a);
	out[1] = BPF_CORE_READ_BITFIELD(s, bf_b);
	out[2] = BPF_CORE_READ_BITFIELD(s, bf_s);
	return 0;
}

SEC("tp/test/core_direct")
int core_direct(void *ctx)
{
	struct sample___local *s = ctx;

	out[0] = s->flags;                               /* LDX W -> DW */
	out[1] = s->small;                               /* LDX W -> H */
	out[2] = s->tgid;                                /* signed, size differs: poisoned */
	if (bpf_core_field_exists(s->ghost))
		out[3] = s->ghost;                       /* poisoned, unreachable */
	return 0;
}

SEC("tp/test/core_types")
int core_types(void *ctx)
{
	out[0] = bpf_core_type_exists(struct sample___local);
	out[1] = bpf_core_type_exists(struct nowhere___local);
	out[2] = bpf_core_type_size(struct sample___local);
	out[3] = bpf_core_type_id_local(struct sample___local);
	out[4] = bpf_core_type_id_kernel(struct sample___local);
	out[5] = bpf_core_type_id_kernel(struct nowhere___local);
	out[6] = bpf_core_type_size(struct nowhere___local);
	return 0;
}

SEC("tp/test/core_enums")
int core_enums(void *ctx)
{
	out[0] = bpf_core_enum_value_exists(enum sample_state___local, ST_RUNNING___local);
	out[1] = bpf_core_enum_value_exists(enum sample_state___local, ST_ZOMBIE___local);
	out[2] = bpf_core_enum_value(enum sample_state___local, ST_RUNNING___local);
	out[3] = bpf_core_enum_value(enum sample_state___local, ST_IDLE___local);
	out[4] = bpf_core_enum_value(enum sample_state___local, ST_ZOMBIE___local);
	return 0;
}

SEC("tp/test/core_missing")
int core_missing(void *ctx)
{
	struct nowhere___local *n = ctx;
	struct dup___local *d = ctx;
	struct agree___local *a = ctx;

	out[0] = bpf_core_field_exists(n->q);            /* 0: no candidate */
	out[1] = BPF_CORE_READ(n, q);                    /* poisoned */
	out[2] = BPF_CORE_READ(d, y);                    /* ambiguous: CoreError */
	out[3] = BPF_CORE_READ(a, k);                    /* two candidates that agree */
	return 0;
}

SEC("tp/test/core_kernel")
int core_kernel(void *ctx)
{
	struct task_struct___local *t = (void *)bpf_get_current_task();

	out[0] = BPF_CORE_READ(t, pid);
	out[1] = BPF_CORE_READ(t, tgid);
	BPF_CORE_READ_STR_INTO(&out[2], t, comm);
	out[4] = bpf_core_field_size(t->comm);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
