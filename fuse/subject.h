/* subject: who is asking (fuse/subject.c). Private to fuse/ (and white-box tests); needs nothing
 * from libfuse, so tests can include it. */
#pragma once

#include <stdbool.h>
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
	uint64_t start;                 /* the thread's start time (clock ticks since boot) */
	uint64_t job_id;                /* with job_source != FUSEFS_JOB_NONE (fuse/job.h) */
	int job_source;                 /* enum fusefs_job_source */
};

/* Who thread tid is, for a request that carried uid and gid: as fusefs_subject_get() (which
 * calls it with the request's). */
int fusefs_subject_of(struct fusefs_subjects *c, pid_t tid, uint32_t uid, uint32_t gid,
		      struct policy_subject *ret_subject, struct fusefs_proc *ret_proc);
/* Process cache answers and reads since creation (for tests). */
void fusefs_subjects_stats(struct fusefs_subjects *c, uint64_t *ret_hits, uint64_t *ret_misses);

/* Audit sessions (docs/AUDIT.md "Durability"): a session is one thread (id and start time) of one
 * uid reading one dataset version under one grant (or rule). Its first allowed open is recorded
 * durably before the open returns; later opens of the same session need only be written.
 * fusefs_session_known() says whether the session was recorded durably already;
 * fusefs_session_add() notes that it now is. A bounded table (FUSEFS_SESSIONS entries): a session
 * pushed out is merely recorded durably once more. */
#define FUSEFS_SESSIONS 4096u

struct fusefs_session {
	pid_t tid;
	uint64_t start;
	uint32_t uid;
	uint64_t dsid;
	uint32_t version;
	uint64_t grant_id;
	uint64_t rule_id;
};

bool fusefs_session_known(struct fusefs_subjects *c, const struct fusefs_session *s);
void fusefs_session_add(struct fusefs_subjects *c, const struct fusefs_session *s);
