/* grants_internal: what grants.c and approvals.c (and the kinds of request that plug into the
 * approval mechanism) share: the table itself and the helpers that write policy records. Not
 * part of the daemon's interface (daemon.h is). */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "daemon/approvals.h"
#include "daemon/daemon.h"

#define GRANTS_MAX (1u << 20)   /* a store with more grants than this is refused */
#define DENIES_MAX (1u << 16)   /* deny rules, the same */
#define APPROVALS_MAX (GRANTS_MAX * 2u)
#define DATASETS_MAX (1u << 16) /* dataset policy records */

struct grants {
	struct store *st;
	pthread_rwlock_t lock;
	pthread_mutex_t change_lock;
	uint64_t next_id;                  /* under change_lock */
	size_t n, cap;                     /* under lock */
	struct policy_grant *g;            /* by id; revoked_at and approvals folded in */
	struct policy_revocation *rev;     /* rev[i] for g[i]; grant_id 0 where not revoked */
	size_t ndn, capdn;                 /* under lock */
	struct policy_deny *dn;            /* by id; removed_at folded in */
	size_t nrm, caprm;                 /* under lock */
	struct policy_deny_removal *rm;    /* removal requests, by deny_id */
	size_t ndp, capdp;                 /* under lock */
	struct policy_dataset *dp;         /* by dataset_id */
	/* The watch thread (grants_watch_start); watch_lock guards watch_stop and watching. */
	pthread_mutex_t watch_lock;
	pthread_cond_t watch_cond;
	pthread_t watch_thread;
	bool watching, watch_stop;
	void (*changed)(void *ctx, uint64_t dataset_id, const char *name);
	void *changed_ctx;
	void (*tick)(void *ctx);           /* grants_watch_tick(): once a second, or NULL */
	void *tick_ctx;
	/* The binding to the audit log (docs/POLICY.md "Bound to the log"). */
	uint8_t *pkey;                     /* the policy digest key, guarded; NULL: no binding */
	uint8_t pdigest[AUDIT_POLICY_DIGEST_LEN];  /* XOR of every record's hash but "n"'s; under
						    * change_lock once loaded */
	struct chash {
		uint64_t dsid;
		uint8_t h[AUDIT_POLICY_DIGEST_LEN];
	} *ch;                             /* the hash of each "c" record, which is replaced */
	size_t nch, capch;
	/* Datasets not served because the index and the log disagree about their policy. */
	bool q_all;                        /* under lock: every dataset */
	uint64_t *q;                       /* under lock: these */
	size_t nq;
	/* Datasets not served because their versions disagree with the log (versions.c). */
	uint64_t *vq;                      /* under lock */
	size_t nvq, capvq;
	struct audit_log *watch_log;       /* grants_watch_record(); borrowed, NULL none */
	size_t nxp, capxp;                 /* under lock */
	struct grants_export *xp;          /* export requests, by id, approvals and runs folded in */
	/* Erasures (docs/POLICY.md "Erasure"): requests by id, approvals, done folded in. */
	size_t ner, caper;                 /* under lock */
	struct daemon_erasure *er;
	/* Retention: the (dataset, date) pairs whose passing the watch thread recorded
	 * (`erasure_due`), so that each is recorded once per daemon run. Watch thread only. */
	struct due { uint64_t dsid; uint64_t until; } *due;
	size_t ndue;
	/* The pending-request mechanism (approvals.c): every request of every kind, by (id, kind),
	 * and every approval of any of them, in the order given. Under lock. */
	struct pending *pd;
	size_t npd, cappd;
	struct approvals_given { const struct approval_kind *kind; struct policy_approval a; } *pap;
	size_t npap, cappap;
	/* Compute nodes (node_enrol.c): enrolments by id, approvals and removal folded in. */
	struct grants_node *nd;            /* under lock */
	size_t nnd, capnd;
	/* A node removal whose policy key rotation (store_policy_rekey) did not finish: the next
	 * policy record finishes it first, or is not written. Under change_lock. */
	bool rekey_due;
	uint64_t ring_gen;                 /* under lock: the newest ring an erasure wrote */
	uint8_t ring_digest[32];           /* and its digest */
};

/* Make room for one more element in *arr (count n, capacity *cap, at most max). */
int grants_grow_array(void **arr, size_t elem, size_t n, size_t *cap, size_t max,
		      const char *what);
/* A steward's name for records: the user name, or the uid when it has none. */
void grants_by_name(const struct policy_subject *by, char out[static POLICY_NAME_MAX + 1]);
/* Take the next id and make it durable before anything refers to it. Under change_lock. */
int grants_take_id(struct grants *gs, uint64_t *ret_id);
/* Append rec (borrowed) as the audit record of writing the policy record type || be64 id
 * [|| be32 sub] (sub < 0: none) = j (taken over), then write that record (see grants.c).
 * ret_subject (may be NULL): the request subject digest of that record (approvals.h). Under
 * change_lock. */
int grants_policy_append(struct grants *gs, struct audit_log *log, json_t *rec, char type,
			 uint64_t id, int64_t sub, json_t *j, uint8_t *ret_subject);
/* The subject digest of policy record key = val (approvals.h). */
void grants_subject_digest(const uint8_t *key, size_t klen, const void *val, size_t vlen,
			   uint8_t out[static APPROVALS_SUBJECT_LEN]);
