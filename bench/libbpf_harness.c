// SPDX-License-Identifier: GPL-2.0
/* libbpf reference harness: what our pure-Python loader is measured against.
 *
 *   libbpf_harness [-s VAR=VALUE]... [-S] OBJ... [-- CMD ARGS...]
 *
 * Opens every OBJ, sets .rodata variables (-s; VALUE "now" = CLOCK_MONOTONIC
 * ns, else an integer; applied to every object that has VAR), loads, attaches
 * every program, optionally runs CMD while attached (with -S, BPF run-time
 * stats are switched on through a BPF_ENABLE_STATS fd, which the kernel turns
 * off again when the fd closes, and each program's run_cnt / run_time_ns /
 * ns-per-run is printed afterwards), then detaches and closes everything.
 * Timed as a whole process by bench/, it is libbpf's open+load+attach+close.
 * Exit status: 0 on success, 1 on any open/load/attach failure, else CMD's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#define MAX_OBJS 16
#define MAX_SETS 16
#define MAX_LINKS 256

struct setting {
	const char *name;
	unsigned long long value;
};

static int libbpf_quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, fmt, ap) : 0;
}

/* Write `value` into .rodata variable `name` of `obj`; 1 if found, 0 if not. */
static int set_rodata(struct bpf_object *obj, const struct setting *set)
{
	struct btf *btf = bpf_object__btf(obj);
	struct bpf_map *map;
	const struct btf_type *sec;
	const struct btf_var_secinfo *vi;
	const void *init;
	size_t size;
	char *data;
	int id, i, found = 0;

	if (!btf)
		return 0;
	id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (id < 0)
		return 0;
	sec = btf__type_by_id(btf, id);
	bpf_object__for_each_map(map, obj)
		if (strstr(bpf_map__name(map), ".rodata") && !strstr(bpf_map__name(map), ".str"))
			break;
	if (!map)
		return 0;
	init = bpf_map__initial_value(map, &size);
	if (!init || !(data = malloc(size)))
		return 0;
	memcpy(data, init, size);
	vi = btf_var_secinfos(sec);
	for (i = 0; i < btf_vlen(sec); i++, vi++) {
		const struct btf_type *var = btf__type_by_id(btf, vi->type);

		if (strcmp(btf__name_by_offset(btf, var->name_off), set->name))
			continue;
		if (vi->offset + vi->size <= size && vi->size <= 8) {
			memcpy(data + vi->offset, &set->value, vi->size); /* little-endian */
			found = !bpf_map__set_initial_value(map, data, size);
		}
		break;
	}
	free(data);
	return found;
}

static unsigned long long parse_value(const char *s)
{
	struct timespec ts;

	if (strcmp(s, "now"))
		return strtoull(s, NULL, 0);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static int run_command(char **argv)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		execvp(argv[0], argv);
		perror(argv[0]);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void print_stats(struct bpf_object **objs, int n)
{
	struct bpf_program *prog;
	int i;

	for (i = 0; i < n; i++) {
		bpf_object__for_each_program(prog, objs[i]) {
			struct bpf_prog_info info = {};
			__u32 len = sizeof(info);

			if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len))
				continue;
			printf("%s %s id=%u run_cnt=%llu run_time_ns=%llu ns_per_run=%.1f\n",
			       bpf_object__name(objs[i]), bpf_program__name(prog), info.id,
			       (unsigned long long)info.run_cnt,
			       (unsigned long long)info.run_time_ns,
			       info.run_cnt ? (double)info.run_time_ns / info.run_cnt : 0.0);
		}
	}
}

int main(int argc, char **argv)
{
	struct bpf_object *objs[MAX_OBJS];
	struct bpf_link *links[MAX_LINKS];
	struct setting sets[MAX_SETS];
	struct bpf_program *prog;
	char **cmd = NULL;
	int nobj = 0, nset = 0, nlink = 0, stats = 0, stats_fd = -1, rc = 1, i, j;

	libbpf_set_print(libbpf_quiet);
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			cmd = &argv[i + 1];
			break;
		} else if (!strcmp(argv[i], "-S")) {
			stats = 1;
		} else if (!strcmp(argv[i], "-s") && i + 1 < argc && nset < MAX_SETS) {
			char *eq = strchr(argv[++i], '=');

			if (!eq) {
				fprintf(stderr, "-s needs VAR=VALUE\n");
				return 1;
			}
			*eq = '\0';
			sets[nset].name = argv[i];
			sets[nset++].value = parse_value(eq + 1);
		} else if (nobj < MAX_OBJS) {
			objs[nobj] = bpf_object__open_file(argv[i], NULL);
			if (!objs[nobj]) {
				fprintf(stderr, "%s: open failed: %s\n", argv[i], strerror(errno));
				goto out;
			}
			nobj++;
		}
	}
	if (!nobj) {
		fprintf(stderr, "usage: %s [-s VAR=VALUE]... [-S] OBJ... [-- CMD ARGS...]\n", argv[0]);
		return 1;
	}
	for (i = 0; i < nobj; i++) {
		for (j = 0; j < nset; j++)
			set_rodata(objs[i], &sets[j]);
		if (bpf_object__load(objs[i])) {
			fprintf(stderr, "%s: load failed: %s\n", bpf_object__name(objs[i]), strerror(errno));
			goto out;
		}
		bpf_object__for_each_program(prog, objs[i]) {
			if (nlink == MAX_LINKS)
				goto out;
			if (!bpf_program__autoload(prog))
				continue; /* SEC("?...") or not loaded: nothing to attach */
			links[nlink] = bpf_program__attach(prog);
			if (!links[nlink] && errno == EOPNOTSUPP)
				continue; /* no target in its section (SEC("raw_tp")): loaded only, as ours does */
			if (!links[nlink]) {
				fprintf(stderr, "%s: attach failed: %s\n", bpf_program__name(prog), strerror(errno));
				goto out;
			}
			nlink++;
		}
	}
	rc = 0;
	if (cmd && *cmd) {
		if (stats) {
			stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
			if (stats_fd < 0)
				fprintf(stderr, "BPF_ENABLE_STATS failed: %s\n", strerror(errno));
		}
		rc = run_command(cmd);
		if (stats)
			print_stats(objs, nobj);
		if (stats_fd >= 0)
			close(stats_fd);
	}
out:
	for (i = 0; i < nlink; i++)
		bpf_link__destroy(links[i]);
	for (i = 0; i < nobj; i++)
		bpf_object__close(objs[i]);
	return rc;
}
