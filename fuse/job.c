/* job: the batch job of a process, from its cgroup or its environment (fuse/job.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "fuse/job.h"

#define SLURM_ENV "SLURM_JOB_ID="
#define JOB_DIGITS_MAX 19u          /* below 10^19 < 2^64: no overflow check needed */

/* Digits at s[0..n) up to '/' or the end: 1..JOB_DIGITS_MAX of them, no leading zero. */
static bool job_number(const char *s, size_t n, uint64_t *ret)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < n && s[i] != '/'; i++) {
		if (s[i] < '0' || s[i] > '9' || i == JOB_DIGITS_MAX)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (i == 0 || s[0] == '0')
		return false;
	*ret = v;
	return true;
}

/* If path[0..n) starts with prefix, the length of the prefix; else 0. */
static size_t starts(const char *path, size_t n, const char *prefix)
{
	size_t k = strlen(prefix);

	return n >= k && memcmp(path, prefix, k) == 0 ? k : 0;
}

/* A cgroup path (no newline) that starts at a Slurm job cgroup: its job id. */
static bool job_in_path(const char *p, size_t n, uint64_t *ret)
{
	size_t k;

	if ((k = starts(p, n, "/system.slice/slurmstepd.scope/job_")) ||
	    (k = starts(p, n, "/slurmstepd.scope/job_")))
		return job_number(p + k, n - k, ret);
	/* cgroup v1: /slurm/uid_<U>/job_<N> (or /slurm_<node>/... with several slurmds). */
	if (!starts(p, n, "/slurm/") && !starts(p, n, "/slurm_"))
		return false;
	{
		const char *uid = memchr(p + 1, '/', n - 1);
		size_t off, d = 0;

		if (!uid)
			return false;
		off = (size_t)(uid - p) + 1;
		if (!(k = starts(p + off, n - off, "uid_")))
			return false;
		off += k;
		while (off + d < n && p[off + d] >= '0' && p[off + d] <= '9')
			d++;
		off += d;
		if (d == 0 || !(k = starts(p + off, n - off, "/job_")))
			return false;
		off += k;
		return job_number(p + off, n - off, ret);
	}
}

bool fusefs_job_from_cgroup(const char *text, size_t len, uint64_t *ret_job)
{
	const char *line = text, *end = text + len;

	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		const char *c1, *c2;

		if (!nl)
			return false; /* a cut last line is not trusted */
		/* hierarchy-ID:controllers:path */
		c1 = memchr(line, ':', (size_t)(nl - line));
		c2 = c1 ? memchr(c1 + 1, ':', (size_t)(nl - c1 - 1)) : NULL;
		if (c2 && job_in_path(c2 + 1, (size_t)(nl - c2 - 1), ret_job))
			return true;
		line = nl + 1;
	}
	return false;
}

void fusefs_env_scan_init(struct fusefs_env_scan *s)
{
	*s = (struct fusefs_env_scan){ 0 };
}

void fusefs_env_scan_feed(struct fusefs_env_scan *s, const char *buf, size_t len)
{
	const size_t klen = strlen(SLURM_ENV);

	for (size_t i = 0; i < len && !s->done; i++) {
		char c = buf[i];

		if (c == '\0') {
			/* The end of an entry: a complete SLURM_JOB_ID=<digits> decides. */
			if (!s->skip && s->pos >= klen) {
				s->done = true;
				s->found = s->ndigits > 0;
				return;
			}
			s->pos = 0;
			s->value = 0;
			s->ndigits = 0;
			s->skip = false;
			continue;
		}
		if (s->skip) {
			continue;
		} else if (s->pos < klen) {
			if (c != SLURM_ENV[s->pos])
				s->skip = true;
		} else if (c >= '0' && c <= '9' && s->ndigits < JOB_DIGITS_MAX &&
			   !(s->ndigits == 0 && c == '0')) {
			s->value = s->value * 10 + (uint64_t)(c - '0');
			s->ndigits++;
		} else {
			/* The first SLURM_JOB_ID is not a job number: no job, look no further. */
			s->done = true;
			s->found = false;
		}
		s->pos++;
	}
}

bool fusefs_env_scan_result(const struct fusefs_env_scan *s, uint64_t *ret_job)
{
	if (!s->found)
		return false;
	*ret_job = s->value;
	return true;
}

/* open /proc/<pid>/<what> for reading; -1 on failure. */
static int proc_open(pid_t pid, const char *what)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
	return open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
}

static bool job_from_cgroup_file(pid_t pid, uint64_t *ret)
{
	char buf[FUSEFS_CGROUP_READ_MAX];
	size_t have = 0;
	ssize_t n;
	int fd = proc_open(pid, "cgroup");

	if (fd < 0)
		return false;
	while (have < sizeof(buf) && (n = read(fd, buf + have, sizeof(buf) - have)) > 0)
		have += (size_t)n;
	close(fd);
	return fusefs_job_from_cgroup(buf, have, ret);
}

static bool job_from_environ_file(pid_t pid, uint64_t *ret)
{
	struct fusefs_env_scan s;
	char buf[4096];
	size_t total = 0;
	ssize_t n;
	int fd = proc_open(pid, "environ");

	if (fd < 0)
		return false;
	fusefs_env_scan_init(&s);
	while (!s.done && total < FUSEFS_ENVIRON_READ_MAX &&
	       (n = read(fd, buf, MIN(sizeof(buf), FUSEFS_ENVIRON_READ_MAX - total))) > 0) {
		fusefs_env_scan_feed(&s, buf, (size_t)n);
		total += (size_t)n;
	}
	close(fd);
	return fusefs_env_scan_result(&s, ret);
}

enum fusefs_job_source fusefs_process_job(pid_t pid, uint64_t *ret_job)
{
	if (pid <= 0)
		return FUSEFS_JOB_NONE;
	if (job_from_cgroup_file(pid, ret_job))
		return FUSEFS_JOB_CGROUP;
	if (job_from_environ_file(pid, ret_job))
		return FUSEFS_JOB_ENVIRON;
	return FUSEFS_JOB_NONE;
}

const char *fusefs_job_source_name(enum fusefs_job_source s)
{
	switch (s) {
	case FUSEFS_JOB_CGROUP:
		return "cgroup";
	case FUSEFS_JOB_ENVIRON:
		return "environ";
	default:
		return NULL;
	}
}
