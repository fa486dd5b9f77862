/* approvals: the one pending-request mechanism of the daemon. Every act that waits for other
 * stewards (a grant, the removal of a deny rule, an erasure, an export; node enrolment and
 * removal next) is a request of some kind that goes through the same steps, with the same
 * refusals and the same records, in the same order:
 *
 *   request   approvals_open()     audit record (the kind's fields, then "user", "uid", "state"
 *                                  and, for most kinds, "approvals_required"), then the kind's
 *                                  request policy record, then the tables
 *   approve   approvals_approve()  by a steward who is not the requester and has not approved it
 *                                  yet, while it still needs approvals (and has not expired):
 *                                  audit record `<kind>_approve`, then the approval policy record
 *                                  (key approval_type || be64 id || be32 uid), then the tables
 *   done      approvals_done()     once, when the act was carried out (kinds with a done record):
 *                                  the caller's audit record, then the done policy record
 *
 * What a request is:
 *   kind             a struct approval_kind: its policy record letters, its audit event names,
 *                    and a few callbacks for what differs (extra refusals, the fields that name
 *                    the subject in the audit record, what an approval changes in the kind's
 *                    own table, how its records load)
 *   id               from the one policy id counter (grants_take_id(), under change_lock)
 *   subject          a digest of the request's policy record as stored (BLAKE2b-256 of
 *                    "enclave-approval-subject-1" || key || value): an approver who saw it may
 *                    have an approval refused unless it still names that exact request
 *   by_uid, at       who asked, when
 *   required         approvals by distinct other stewards it needs (the store's setting when
 *                    asked); 0: approved at once
 *   approvals        given so far, each by another steward, each at most once
 *   expires          0, or the time from which approvals are refused (-ESTALE)
 *   done_at          0, or when the done record was written
 *
 * Every kind lives in approval_kinds[] (approvals.c): the loader finds a record's kind by its key
 * letter. Request ids come from one counter, so an id names one request of one kind; lookups
 * still take the kind. Locking: struct grants's change_lock serialises every change (the
 * callers of approvals_open() hold it; approvals_approve() and approvals_done() take it), the
 * table itself is written under `lock` (write) and read under it (read).
 *
 * Adding a kind (/work/APPROVALS.md has an example): give it unused policy record letters in
 * increasing order (request < approval < done, or done 0), each after the letter of any record
 * its request refers to: records load in key order, so a request loads before its approvals;
 * add it to approval_kinds[] (the loader then accepts its keys); keep its own table (with the
 * fields its callers read) in struct grants (grants_internal.h); list the letters in grants.c's
 * top comment and docs/FORMAT.md 6.8, and its audit events in docs/AUDIT.md.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "policy/policy.h"

struct grants;
struct audit_log;

#define APPROVALS_SUBJECT_LEN 32

struct approval_kind;

/* One request, as the mechanism keeps it (the kind's own table holds the rest). */
struct pending {
	const struct approval_kind *kind;
	uint64_t id;
	uint32_t by_uid;                          /* who asked */
	uint32_t required;                        /* approvals it needs, 0..POLICY_APPROVALS_MAX */
	uint32_t approvals;                       /* given so far, by distinct other stewards */
	int64_t at;                               /* asked, unix seconds */
	int64_t expires;                          /* 0: never; from then on approvals are refused */
	int64_t done_at;                          /* 0: not carried out (or a kind without done) */
	uint8_t subject[APPROVALS_SUBJECT_LEN];   /* digest of the request record as stored */
};

/* What a kind is. Callbacks run under change_lock (and `lock` for writing where said); a
 * refusal callback returns 0 or -errno with err_set() saying why. NULL: nothing to do. */
struct approval_kind {
	/* For messages: "grant" makes "grant 7 was requested by you", "the removal of deny rule"
	 * makes "the removal of deny rule 7 ...". */
	const char *name;
	/* Loading refuses an approval or done record without its request as "does not match "
	 * this: "a grant", "an erasure request". */
	const char *request_noun;
	char request_type;                        /* policy record letters: the request, */
	char approval_type;                       /* an approval (|| be64 id || be32 uid), */
	char done_type;                           /* the done record, or 0: the kind has none */
	const char *approve_event;                /* audit event of an approval: "grant_approve" */
	const char *id_field;                     /* the audit records' id member: "grant_id" */
	const char *approved_state;               /* "state" once approved: "active", "approved" */
	const char *done_text;                    /* -EEXIST when done: "was carried out already" */
	bool request_counts;                      /* the request record says "approvals_required" */
	/* -ENOENT (or another refusal) for an id with no request of this kind. */
	int (*missing)(struct grants *gs, uint64_t id);
	/* Refusals checked before "you asked for it" (a request closed otherwise, say). */
	int (*before)(struct grants *gs, const struct pending *p, const struct policy_subject *by,
		      int64_t now);
	/* Refusals checked after it (the approver is the grantee, ...). */
	int (*refuse)(struct grants *gs, const struct pending *p, const struct policy_subject *by,
		      int64_t now);
	/* Add the members naming what is approved to the approval's audit record. */
	int (*describe)(struct grants *gs, const struct pending *p, json_t *rec);
	/* Under the write lock (or while loading): approval a was counted in p (p->approvals
	 * includes it); fold it into the kind's table. */
	void (*approved)(struct grants *gs, const struct pending *p, const struct policy_approval *a);
	/* Under the write lock: enter a new request (arg: approvals_open()'s) into the kind's
	 * table. -ENOMEM and the like undo the request's entry. */
	int (*opened)(struct grants *gs, const struct pending *p, void *arg);
	/* Loading: parse request record j of key id, enter it into the kind's table, and fill
	 * ret's by_uid, at, required, expires (the rest is the mechanism's). */
	int (*load)(struct grants *gs, uint64_t id, const json_t *j, struct pending *ret);
	/* Loading (kinds with done_type): check done record j of p, fold it into the kind's table
	 * (as done() does at run time); *ret_at when it was done. */
	int (*load_done)(struct grants *gs, const struct pending *p, const json_t *j,
			 int64_t *ret_at);
	/* Under the write lock: p was done (done_at set); arg: approvals_done()'s. */
	void (*done)(struct grants *gs, const struct pending *p, void *arg);
};

/* The kinds, in grants.c. */
extern const struct approval_kind approval_kind_grant, approval_kind_deny_removal,
	approval_kind_erasure, approval_kind_export;
/* The kinds of node_enrol.c. */
extern const struct approval_kind approval_kind_node_add, approval_kind_node_remove;

/* The kind whose request, approval or done record letter is t, or NULL. */
const struct approval_kind *approvals_kind_of(char t);

/* Under change_lock (the caller's checks and grants_take_id() come first): record request id of
 * kind k by `by` at now needing `required` approvals. rec (borrowed) is the audit record with
 * the kind's members; "user", "uid", "state" and, if k->request_counts, "approvals_required" are
 * added. j (taken over) is the request's policy record. Then k->opened(arg) under the write
 * lock. *ret (may be NULL): the request. */
int approvals_open(struct grants *gs, struct audit_log *log, const struct approval_kind *k,
		   const struct policy_subject *by, uint64_t id, uint32_t required, int64_t expires,
		   int64_t now, json_t *rec, json_t *j, void *arg, struct pending *ret);
/* Approve request id of kind k as steward `by` at now. subject (NULL: any) must be the request's
 * subject digest, or -ESTALE. Refusals, in order: k->missing; k->before; -EPERM `by` asked for
 * it; k->refuse; -ESTALE it expired; -EEXIST `by` approved it already; -EALREADY it needs no
 * more. *ret (may be NULL): the request after. */
int approvals_approve(struct grants *gs, struct audit_log *log, const struct approval_kind *k,
		      const struct policy_subject *by, uint64_t id, int64_t now,
		      const uint8_t *subject, struct pending *ret);
/* Request id of kind k was carried out at now: rec (borrowed; `by`'s "user" and "uid" added
 * when by is not NULL) is appended with done record j (taken over), then k->done(arg).
 * -ENOENT (k->missing); -EEXIST done already; -EACCES not approved yet. */
int approvals_done(struct grants *gs, struct audit_log *log, const struct approval_kind *k,
		   const struct policy_subject *by, uint64_t id, int64_t now, json_t *rec,
		   json_t *j, void *arg);
/* A copy of request id of kind k. -ENOENT. */
int approvals_get(struct grants *gs, const struct approval_kind *k, uint64_t id,
		  struct pending *ret);
/* The approvals of request id of kind k (malloc'd; caller frees), in the order given. */
int approvals_list(struct grants *gs, const struct approval_kind *k, uint64_t id,
		   struct policy_approval **ret, size_t *ret_n);
/* Loading: a request, approval or done record of kind k (key, val as stored; j parsed). */
int approvals_load(struct grants *gs, const struct approval_kind *k, const uint8_t *key,
		   size_t klen, const void *val, size_t vlen, const json_t *j);
/* Free the mechanism's tables (grants_free()). */
void approvals_free(struct grants *gs);
