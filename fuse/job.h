/* job: the batch job a process belongs to, for the "open" audit record. Private to fuse/ (and
 * white-box tests); needs nothing from libfuse, so tests can include it.
 *
 * Two sources, in this order:
 *   cgroup   Slurm puts every job step in a cgroup of its own, whose path names the job
 *            ("/slurm/uid_1000/job_42/step_0" with cgroup v1, "/system.slice/slurmstepd.scope/
 *            job_42/step_0/user/task_0" with v2). Only root (slurmd) creates cgroups at those
 *            places, so the user cannot forge it. The path must start there: a user may create
 *            cgroups in the subtree systemd delegates to it (under /user.slice), and a "job_42"
 *            down there proves nothing.
 *   environ  SLURM_JOB_ID in /proc/<pid>/environ (the environment the process was started with).
 *            The user sets its own environment, so the record marks this source "environ".
 * Every read is bounded and never follows a link; whatever fails just leaves the job out.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Where a job id came from. */
enum fusefs_job_source {
	FUSEFS_JOB_NONE = 0,        /* no job visible */
	FUSEFS_JOB_CGROUP = 1,      /* the Slurm cgroup path: trustworthy */
	FUSEFS_JOB_ENVIRON = 2,     /* SLURM_JOB_ID in the environment: the user's word */
};

/* Bounds on what is read from /proc per open. */
#define FUSEFS_CGROUP_READ_MAX 8192u        /* /proc/<pid>/cgroup */
#define FUSEFS_ENVIRON_READ_MAX (256u << 10) /* /proc/<pid>/environ, read in 4 KiB steps */

/* The Slurm job id in the text of a /proc/<pid>/cgroup file (len bytes, no NUL needed): the first
 * line whose path starts at a Slurm job cgroup ("/slurm/uid_<U>/job_<N>", "/slurm_<node>/uid_<U>/
 * job_<N>", "/system.slice/slurmstepd.scope/job_<N>", "/slurmstepd.scope/job_<N>"), with N 1 to 19
 * digits followed by '/' or the end of the line. A last line without its newline is ignored (it
 * may have been cut by the bounded read). True and *ret_job set, or false (nothing written). */
bool fusefs_job_from_cgroup(const char *text, size_t len, uint64_t *ret_job);

/* Incremental scan of an environment block ("K=V\0K=V\0...") for SLURM_JOB_ID, fed in pieces of
 * any size. The first SLURM_JOB_ID entry decides (as getenv() would find it): it counts only if
 * its value is 1 to 19 digits and its NUL terminator was seen. */
struct fusefs_env_scan {
	size_t pos;                 /* bytes of the current entry seen so far */
	uint64_t value;             /* digits of the value so far */
	unsigned ndigits;
	bool skip;                  /* the current entry is not (a valid) SLURM_JOB_ID */
	bool done;                  /* the first SLURM_JOB_ID entry has ended */
	bool found;                 /* ... and it was valid: value is the job id */
};

void fusefs_env_scan_init(struct fusefs_env_scan *s);
void fusefs_env_scan_feed(struct fusefs_env_scan *s, const char *buf, size_t len);
/* True and *ret_job set when a valid SLURM_JOB_ID was seen. */
bool fusefs_env_scan_result(const struct fusefs_env_scan *s, uint64_t *ret_job);

/* The job of process pid: from /proc/<pid>/cgroup, else from /proc/<pid>/environ. Returns the
 * source, with *ret_job set unless FUSEFS_JOB_NONE. */
enum fusefs_job_source fusefs_process_job(pid_t pid, uint64_t *ret_job);

/* "cgroup", "environ"; NULL for FUSEFS_JOB_NONE. */
const char *fusefs_job_source_name(enum fusefs_job_source s);
