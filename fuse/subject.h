/* subject: who is asking (fuse/subject.c). Private to fuse/ (and white-box tests); needs nothing
 * from libfuse, so tests can include it. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "policy/policy.h"

/* User names by uid, kept for a second, bounded (names go into records only); and each calling
 * thread's groups and job id, kept while nothing that could change them did (subject.c). */
struct fusefs_subjects;

int fusefs_subjects_new(struct fusefs_subjects **ret);
void fusefs_subjects_free(struct fusefs_subjects *c);

/* The calling process, for records. */
struct fusefs_proc {
	char name[16];                  /* its name (comm), "" if unknown */
	uint64_t job_id;                /* with job_source != FUSEFS_JOB_NONE (fuse/job.h) */
	int job_source;                 /* enum fusefs_job_source */
};

/* Who thread tid is, for a request that carried uid and gid: as fusefs_subject_get() (which
 * calls it with the request's). */
int fusefs_subject_of(struct fusefs_subjects *c, pid_t tid, uint32_t uid, uint32_t gid,
		      struct policy_subject *ret_subject, struct fusefs_proc *ret_proc);
/* Process cache answers and reads since creation (for tests). */
void fusefs_subjects_stats(struct fusefs_subjects *c, uint64_t *ret_hits, uint64_t *ret_misses);
