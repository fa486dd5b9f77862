/* enclaved internals: the configuration, the grant table, the control server.
 *
 * One process owns the store: main.c unlocks it, loads the configuration and the grants, opens
 * the audit log, serves the control socket (control.c) and the FUSE mount (fuse/), and on
 * SIGTERM stops both and closes everything in reverse order.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "audit/audit.h"
#include "audit/note.h"
#include "fuse/fusefs.h"
#include "policy/policy.h"
#include "store/store.h"

/* ---- Configuration (<store>/enclave.conf) --------------------------------------------------- */

#define CONFIG_NAME "enclave.conf"
#define CONFIG_MAX_BYTES (64u * 1024)    /* a longer file is refused */
#define CONFIG_PRINCIPALS_MAX 64         /* per role */

enum role {
	ROLE_STEWARD = 1u << 0,
	ROLE_AUDITOR = 1u << 1,
};

struct config_principal {
	uint32_t kind;                       /* POLICY_USER or POLICY_GROUP */
	uint32_t id;                         /* uid or gid, resolved when the file is read */
	char name[POLICY_NAME_MAX + 1];      /* as written (a name, or the decimal id) */
};

#define CONFIG_APPROVALS_DEFAULT 1        /* "approvals" when absent: four eyes */
#define CONFIG_MAX_GRANT_DAYS_DEFAULT 365
/* audit_durability = session: written records are synced within this many milliseconds. */
#define DAEMON_AUDIT_SYNC_MS 10
#define CONFIG_MAX_GRANT_DAYS_MAX 3650   /* ten years */

struct config {
	size_t nstewards, nauditors;
	struct config_principal stewards[CONFIG_PRINCIPALS_MAX];
	struct config_principal auditors[CONFIG_PRINCIPALS_MAX];
	/* Approvals by other stewards a new grant needs before it is in force, 0 to
	 * POLICY_APPROVALS_MAX (0: a request is active at once, for demo stores). */
	uint32_t approvals;
	/* The longest a grant may run, from its request to its expiry, 1 to
	 * CONFIG_MAX_GRANT_DAYS_MAX days. */
	uint32_t max_grant_days;
	/* "visa_issuer": the URL exported GA4GH visas name as their issuer (policy_issuer_url_valid);
	 * "" when not configured, and then no visa is exported. */
	char visa_issuer[POLICY_ISSUER_MAX + 1];
	/* "audit_durability = strict": every audit record synced before its call returns. The
	 * default, "session", syncs a session's first open at once and the rest within
	 * DAEMON_AUDIT_SYNC_MS (docs/AUDIT.md "Durability"). */
	bool audit_strict;
	/* "gc_interval_hours = N": collect garbage every N hours (1 to CONFIG_GC_INTERVAL_MAX);
	 * 0 (absent, or given as gc_interval): only when a steward asks (`enclavectl store gc`). */
	uint32_t gc_interval_hours;
	/* The interval of scheduled collections in seconds, from "gc_interval_hours = N" or
	 * "gc_interval = N{s,m,h,d}" (1 s to CONFIG_GC_INTERVAL_MAX hours; one of the two, once);
	 * 0: none. Read at start. */
	uint32_t gc_interval_s;
	/* "node_gc_grace_s = N": once nodes have read the store (audit/nodes/ holds a node's log),
	 * a garbage collection waits N seconds after its commit before it removes pack files, so
	 * that every node still serving has caught up past the move (docs/DEPLOYMENT.md section 6).
	 * At least the longest --staleness of any node plus 3 s; default 10. */
	uint32_t node_gc_grace_s;
};
#define CONFIG_GC_INTERVAL_MAX (24u * 366)
#define CONFIG_NODE_GC_GRACE_DEFAULT 10u
#define CONFIG_NODE_GC_GRACE_MAX 3600u

/* Parse configuration text: lines "steward = user:NAME|group:NAME|user:UID|group:GID",
 * "auditor = ...", "approvals = N" (0..8, once; default 1), "max_grant_days = N" (1..3650, once;
 * default 365), "visa_issuer = URL" (once; policy_issuer_url_valid), "audit_durability =
 * strict|session" (once; default session), "gc_interval_hours = N" (1..CONFIG_GC_INTERVAL_MAX)
 * or "gc_interval = N{s,m,h,d}" (1 s up to as long; one of them, once; default none), "node_gc_grace_s = N" (0..CONFIG_NODE_GC_GRACE_MAX, once; default
 * CONFIG_NODE_GC_GRACE_DEFAULT), blank lines and '#' comments. Names are resolved
 * through NSS now. -EINVAL with
 * err_detail() naming the line for anything else (unknown key, bad value, unknown name, too many
 * entries, a setting given twice, a NUL byte); -E2BIG text over CONFIG_MAX_BYTES. */
int config_parse(const char *text, size_t len, struct config *ret_cfg);
/* Read and parse <store_dir>/enclave.conf (opened O_NOFOLLOW; must not be writable by group or
 * others, since it decides who administers the store). */
int config_load(const char *store_dir, struct config *ret_cfg);
/* A user or group (kind POLICY_USER / POLICY_GROUP) given as a name or a decimal id: its id and
 * the name to show (the NSS name, or the number when it has none). -ESRCH no such name; -EINVAL
 * a malformed or out-of-range id. Used for enclave.conf and for grant.add. */
int config_principal_resolve(uint32_t kind, const char *s, uint32_t *ret_id,
			     char ret_name[static POLICY_NAME_MAX + 1]);
/* The roles (enum role bits) the configuration gives this subject. */
unsigned config_roles(const struct config *cfg, const struct policy_subject *who);

/* ---- Grants: the policy records in the store, and the table decisions read ------------------ */

struct grants;

/* Load every grant and revocation from the store's policy records. -EBADMSG a damaged record
 * (err_detail names it): the daemon does not start on a policy it cannot read in full. */
int grants_load(struct store *st, struct grants **ret_grants);
void grants_free(struct grants *gs);
/* A node: load the grants again from the store (after a catch-up) and put them in place of the
 * table's, atomically for every decision. The table is unchanged on failure. */
int grants_reload(struct grants *gs);
/* Decide from the current table (see policy_decide). Thread-safe; never blocks on a writer for
 * long (the table is read under a read lock). */
struct policy_decision grants_decide(struct grants *gs, const struct policy_subject *who,
				     uint64_t dataset_id, uint32_t version, int64_t now);
/* Record a new grant (request): g->id is assigned here (a counter kept in the store, so an id
 * the audit log has seen is never handed out again); g->approvals_required is the caller's (the
 * store setting); an empty g->purpose_code becomes "general". Order: id counter, then the audit
 * record `grant_request`, then the grant record, then the table. Any failure leaves the table
 * unchanged. With approvals_required 0 the grant is in force at once. */
int grants_add(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
	       struct policy_grant *g);
/* Approve pending grant id as steward `by` at now: audit record `grant_approve`, then the approval
 * record, then the table. -ENOENT no such grant; -EPERM `by` requested it, or is its grantee (the
 * user, or a member of the group); -EEXIST `by` approved it already; -EALREADY it needs no more
 * approvals; -ESTALE it was revoked or has expired. *ret_grant (may be NULL): the grant after. */
int grants_approve(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		   uint64_t id, int64_t now, struct policy_grant *ret_grant);
/* Revoke grant id: audit record `revoke`, then the revocation record, then the table.
 * -ENOENT no such grant; -EEXIST already revoked. *ret_grant (may be NULL) is the grant. */
int grants_revoke(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		  uint64_t id, const char *reason, int64_t now, struct policy_grant *ret_grant,
		  struct policy_revocation *ret_rev);
/* A copy of the table for listing: *ret_grants (malloc'd, caller frees) of *ret_n grants, with
 * revoked_at and approvals folded in, by id. ret_revs (may be NULL) gets the matching revocations
 * (same order; grant_id 0 where none). */
int grants_snapshot(struct grants *gs, struct policy_grant **ret_grants,
		    struct policy_revocation **ret_revs, size_t *ret_n);
/* The approvals of grant id (malloc'd; caller frees), in the order they were given. */
int grants_approvals(struct grants *gs, uint64_t id, struct policy_approval **ret_approvals,
		     size_t *ret_n);
size_t grants_count(struct grants *gs);

/* Add deny rule x: x->id is assigned (from the grant id counter); audit record `deny_add`, then
 * the rule record, then the table. -EEXIST a rule in force already blocks the same subject from
 * the same dataset (err_detail() names it). */
int grants_deny_add(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		    struct policy_deny *x);
/* Ask to remove deny rule id at now, for reason (not empty), needing approvals_required
 * approvals by other stewards (the store's setting; 0: removed at once): audit record
 * `deny_remove`, then the removal record, then the table. -ENOENT no such rule; -EEXIST already
 * removed; -EALREADY its removal was requested already; -EINVAL no reason. *ret_deny (may be
 * NULL): the rule after (removed_at set when removed). */
int grants_deny_remove(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		       uint64_t id, const char *reason, uint32_t approvals_required, int64_t now,
		       struct policy_deny *ret_deny);
/* Approve the requested removal of rule id as steward `by`: audit record `deny_remove_approve`,
 * then the approval record, then the table; the rule is removed by the approval that completes
 * it. -ENOENT no such rule or no removal requested; -EEXIST already removed, or `by` approved
 * already; -EPERM `by` requested the removal or is blocked by the rule by name (its user, or a
 * member of its group). */
int grants_deny_approve(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
			uint64_t id, int64_t now, struct policy_deny *ret_deny);
/* The removal request of rule id and its approvals (malloc'd; caller frees). -ENOENT none. */
int grants_deny_removal(struct grants *gs, uint64_t id, struct policy_deny_removal *ret_removal,
			struct policy_approval **ret_approvals, size_t *ret_n);
/* A copy of the deny rules (malloc'd, caller frees), removals folded in, by id. */
int grants_deny_snapshot(struct grants *gs, struct policy_deny **ret_denies, size_t *ret_n);

/* ---- Exports (docs/CRYPT4GH.md section 7): files of one version sent encrypted to one
 * recipient's Crypt4GH key, asked for by a steward, approved by others as a grant is (the same
 * approvals count, never the requester), run once. Records "x" (the request), "y" (an approval),
 * "z" (the run, with the digest of every file sent), bound to the log like the others. */
#define GRANTS_EXPORT_FILES_MAX 64
struct grants_export {
	uint64_t id;
	uint64_t dataset_id;
	uint32_t version;
	uint32_t by_uid;                          /* who asked */
	int64_t at;                               /* unix seconds */
	uint32_t approvals_required;
	uint32_t approvals;                       /* folded in */
	uint32_t approved_by[POLICY_APPROVALS_MAX];
	int64_t done_at;                          /* when it ran; 0: not yet */
	json_t *req;                              /* the request record as stored; owned */
};
/* Record a request (req taken over: dataset, dataset_id, version, paths, recipient_key,
 * fingerprint, reason; id, by, by_uid, at and approvals_required are set here). */
int grants_export_request(struct grants *gs, struct audit_log *log,
			  const struct policy_subject *by, json_t *req,
			  uint32_t approvals_required, int64_t now, uint64_t *ret_id);
/* Approve: -ENOENT none; -EPERM the requester; -EEXIST approved by uid already, or done;
 * -EALREADY it has all the approvals it needs. */
int grants_export_approve(struct grants *gs, struct audit_log *log,
			  const struct policy_subject *by, uint64_t id, int64_t now);
/* Record that it ran: rec (taken over) is the export_run audit record the run writes with it.
 * -EEXIST it ran already; -EACCES not approved yet. */
int grants_export_done(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		       uint64_t id, json_t *rec, int64_t now);
/* A copy of one request (req a new reference; grants_export_clear() it). -ENOENT. */
int grants_export_get(struct grants *gs, uint64_t id, struct grants_export *ret);
/* Copies of every request, by id (malloc'd; clear each, then free). */
int grants_export_list(struct grants *gs, struct grants_export **ret, size_t *ret_n);
void grants_export_clear(struct grants_export *e);

/* The policy record of dataset_id (consent codes, controller, cache mode). -ENOENT: none, which
 * means no consent codes, no controller, direct I/O. */
int grants_dataset_get(struct grants *gs, uint64_t dataset_id, struct policy_dataset *ret_policy);
/* Write dataset p's policy record (replacing any): audit record `event` ("dataset_policy" or
 * "dataset_set") with the record, then the record, then the table. */
int grants_dataset_set(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		       const struct policy_dataset *p, const char *event);
/* True when a steward marked the dataset `dataset set --cache kernel`. */
bool grants_cache_kernel(struct grants *gs, uint64_t dataset_id);

/* Bind the policy records to the audit log (docs/POLICY.md "Bound to the log"): compare the
 * digest of the records with the one the log's last policy record holds (two line reads, however
 * long the log). Equal: 0. The index lacks exactly that last recorded change: it is written from
 * the log and -EAGAIN says to load the grants again. Otherwise the log is replayed (its policy
 * records, opened with store_key), every difference is named in *ret_findings (a JSON array of
 * strings; NULL when there is none), the datasets concerned (all, when a difference concerns every
 * dataset) are refused from now on (POLICY_DENY_POLICY_MISMATCH), a `policy_mismatch` record is
 * written, and 0 is returned. A log with no policy record gets the index's state as its starting
 * point (`policy_snapshot`). The next id is raised above every id the log holds. */
int grants_bind_log(struct grants *gs, struct audit_log *log, const char *audit_dir,
		    const uint8_t store_key[static 32], json_t **ret_findings);
/* False while some dataset is refused for disagreeing with the log. */
bool grants_serving_all(struct grants *gs);
/* Refuse every open of dataset_id from now on (POLICY_DENY_INTEGRITY): its versions in the index
 * disagree with the log's import records (daemon_versions_bind()). */
int grants_refuse_dataset(struct grants *gs, uint64_t dataset_id);

/* Start a thread that calls changed(ctx, dataset_id, name) for each dataset one of whose grants
 * crossed its not_before or its expiry since the last look (it looks every 250 ms, so within 1 s),
 * so the mount can drop what the kernel cached. changed runs on that thread with no lock held.
 * -EBUSY already started. */
int grants_watch_start(struct grants *gs,
		       void (*changed)(void *ctx, uint64_t dataset_id, const char *name),
		       void *ctx);
/* Stop and join the thread; fine when it was never started. grants_free() calls it too. */
void grants_watch_stop(struct grants *gs);
/* Before grants_watch_start(): the watch thread also writes, for each grant (not revoked) that
 * crossed a time, a "grant_started" (its not_before) or "grant_expired" (its expires) record to
 * log (borrowed; must outlive the thread), when it sees it: within a second, not at the next read
 * (docs/AUDIT.md). NULL: no records. */
void grants_watch_record(struct grants *gs, struct audit_log *log);
/* Before grants_watch_start(): the watch thread also calls tick(ctx) once a second, with no lock
 * held: the daemon's deferred work (daemon_erase_retry()). NULL: nothing. */
void grants_watch_tick(struct grants *gs, void (*tick)(void *ctx), void *ctx);

/* ---- Erasure (docs/POLICY.md "Erasure", docs/FORMAT.md 3.7): the approval machinery above ---- */

/* A request to erase a version (or a whole dataset, version 0), its policy record 'u'. */
struct daemon_erasure {
	uint64_t id;                              /* from the grant id counter */
	uint64_t dataset_id;
	char dataset[POLICY_DATASET_MAX + 1];
	uint32_t version;                         /* 0: the whole dataset */
	char reason[POLICY_REASON_MAX + 1];       /* not empty */
	bool revoke_grants;                       /* revoke the grants that name only it */
	uint32_t by_uid;                          /* who asked */
	char by[POLICY_NAME_MAX + 1];
	int64_t at;                               /* unix seconds */
	uint32_t approvals_required;              /* the store's setting when asked */
	uint32_t approvals;                       /* folded in from 'v' records */
	int64_t done_at;                          /* folded in from the 'w' record; 0: not yet */
};

/* Record a request (x: dataset_id, dataset, version, reason, revoke_grants; the rest is set
 * here): audit record `erase_request`, then the record. -EINVAL no reason; -EALREADY a request
 * for the same data waits; -EBUSY grants in force name only what it erases and revoke_grants is
 * not set (err_detail() says how many). Carrying it out is the caller's (daemon_erase_run()). */
int grants_erase_request(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
			 struct daemon_erasure *x, uint32_t approvals_required, int64_t now);
/* Approve request id: audit record `erase_approve`, then the approval record. -ENOENT; -EPERM
 * `by` asked for it; -EEXIST `by` approved already, or it was carried out; -EALREADY it needs
 * no more approvals. *ret (may be NULL): the request after. */
int grants_erase_approve(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
			 uint64_t id, int64_t now, struct daemon_erasure *ret);
/* The erasure was carried out: rec (the `dataset_erase` audit record, borrowed) is appended with
 * the done record 'w', and the erased data is refused to every decision from now on. */
int grants_erase_done(struct grants *gs, struct audit_log *log, uint64_t id, int64_t now,
		      uint64_t ring_generation, const uint8_t ring_digest[static 32], json_t *rec);
/* The approvals of erasure id (malloc'd; caller frees). */
int grants_erasure_approvals(struct grants *gs, uint64_t id, struct policy_approval **ret,
			     size_t *ret_n);
/* At start: the store's key ring against the newest one an erasure recorded (its done record is
 * a policy record, bound to the log). -ESTALE older, or the same generation with another
 * digest: a ring put back from before an erasure. */
int grants_ring_check(struct grants *gs, uint64_t generation, const uint8_t digest[static 32]);
/* Every request (malloc'd, caller frees). */
int grants_erasures(struct grants *gs, struct daemon_erasure **ret, size_t *ret_n);
/* The grants in force at now that name only what x erases: their number, the first cap ids. */
size_t grants_erasure_blockers(struct grants *gs, const struct daemon_erasure *x, int64_t now,
			       uint64_t *ids, size_t cap);

/* ---- Groups as the database says them now (groups.c) ------------------------------------- */

struct daemon_groups;
int daemon_groups_new(struct daemon_groups **ret);
/* Stops the watch first. NULL is fine. */
void daemon_groups_free(struct daemon_groups *g);
/* Take out of who every group the group database no longer gives the user (its primary group in
 * passwd and the groups that list it stay); a uid without a passwd entry is left as it is. */
void daemon_groups_filter(struct daemon_groups *g, struct policy_subject *who);
/* Watch /etc/group and /etc/passwd (every 250 ms): on a change, forget what was cached and call
 * changed(ctx) on the watch thread. -EBUSY already started. */
int daemon_groups_watch_start(struct daemon_groups *g, void (*changed)(void *ctx), void *ctx);
/* Stop and join the watch; fine when it never started. */
void daemon_groups_watch_stop(struct daemon_groups *g);

/* ---- Primary and nodes over one shared store (node.c; docs/DEPLOYMENT.md) ------------------ */

/* A node's name: [A-Za-z0-9._-], 1 to NODE_NAME_MAX bytes, not starting with '.' or '-'. */
#define NODE_NAME_MAX 64
struct daemon;
bool node_name_valid(const char *name);
/* How long a garbage collection of the primary waits between its commit and removing pack
 * files: node_gc_grace_s once a node has read the store (its log is in audit/nodes/), else 0. */
unsigned node_gc_grace_ms(struct daemon *d);
/* <store>/nodes: the shared directory of the primary's signal and the nodes' key bundles. */
#define NODE_DIR_NAME "nodes"
#define NODE_SIGNAL_NAME "signal"
/* The longest signal text. */
#define NODE_SIGNAL_MAX 256
/* The primary signs a signal at least this often, and looks for index writes this often. */
#define NODE_HEARTBEAT_MS 250u
#define NODE_SIGNAL_POLL_MS 20u
/* A node looks at the signal's attributes this often. */
#define NODE_POLL_MS 25u
/* The staleness bound: default and range, in milliseconds. */
#define NODE_STALE_MS_DEFAULT 5000u
#define NODE_STALE_MS_MIN 500u
#define NODE_STALE_MS_MAX 600000u
/* A signal dated further ahead of the node's clock than this is refused. */
#define NODE_CLOCK_SKEW_MAX_NS (2 * 1000000000LL)
/* The pause before the primary reads its new lease back. */
#define NODE_LEASE_SETTLE_MS 200u

int64_t node_now_ns(void);

/* What a signal says: at time_ns (unix ns, the primary's clock), under fencing token `token`,
 * the index was at sequence number seq. */
struct node_signal {
	uint64_t token;
	int64_t time_ns;
	uint64_t seq;
	uint64_t ring;      /* the key ring generation whose key bundles are written */
};
/* The signal's note text (before the signature): "enclave-signal/1 <store id hex>\n" then
 * "token N\n", "time NS\n", "seq N\n", "ring G\n". Its length, or -E2BIG. */
int node_signal_text(const uint8_t store_id[static 16], const struct node_signal *s, char *out,
		     size_t cap);
/* Check a signal note (len bytes) against the primary's verifier key and this store, and parse
 * it. -EKEYREJECTED not signed by v; -EBADMSG malformed, not canonical, or another store's. */
int node_signal_parse(const char *note, size_t len, const struct note_verifier *v,
		      const uint8_t store_id[static 16], struct node_signal *ret);
/* The signals a node has accepted so far: the highest token and, under it, the latest time. */
struct node_signal_state {
	uint64_t token;
	int64_t time_ns;
};
/* Accept s into state at now_ns: -ESTALE a lower token than seen (a fenced primary);
 * -EALREADY no newer than the last under its token (a replay, or nothing new); -ERANGE dated
 * more than NODE_CLOCK_SKEW_MAX_NS ahead. state is unchanged on failure. */
int node_signal_accept(struct node_signal_state *state, const struct node_signal *s,
		       int64_t now_ns);

/* The primary, its store opened with a lease (store_open_options.lease_ms): start a thread that
 * renews the lease and writes the signal (at every index write and every NODE_HEARTBEAT_MS). If the
 * lease is lost (another primary took it over), fenced(ctx, why) is called on that thread, which
 * then ends: the daemon must stop writing at once. */
struct node_public {
	uint8_t sign_pk[32];
	uint8_t box_pk[32];
};
struct node_primary;
struct node_bundle;
/* An enrolled node, as the primary gives it its keys. */
struct node_enrolled {
	uint64_t id;                        /* the enrolment's id */
	char name[NODE_NAME_MAX + 1];
	struct node_public pub;
};
/* enrolled(ctx, ...) lists the nodes enrolled now (malloc'd array, caller frees); the primary
 * writes each one's key bundle at start, after every key ring commit (the store's ring hook),
 * and after node_primary_changed(); the signal announces the ring generation they hold. */
int node_primary_start(struct store *st, struct audit_log *log, const char *store_dir,
		       unsigned lease_ms, void (*fenced)(void *ctx, const char *why),
		       int (*enrolled)(void *ctx, struct node_enrolled **ret, size_t *ret_n),
		       void *ctx, struct node_primary **ret);
/* Write every enrolled node's bundle now and remove those of nodes no longer enrolled. NULL is
 * fine (no primary). */
int node_primary_bundles(struct node_primary *p);
/* The enrolments changed: the signal thread rewrites the bundles before its next signal. */
void node_primary_changed(struct node_primary *p);
/* Stop the thread (store_close() gives up the lease). NULL is fine. */
void node_primary_stop(struct node_primary *p);
uint64_t node_primary_token(const struct node_primary *p);

/* A node: what it tells the daemon, on its catch-up thread. */
struct node_callbacks {
	/* The index changed (policy or versions): reload the grants, invalidate the mount. A
	 * negative return (the policy records do not open: a key not given, a record altered)
	 * keeps the node from calling itself fresh, so it fails closed; it is called again at the
	 * next round. */
	int (*changed)(void *ctx);
	/* The node went stale (why says why) or fresh again (why NULL). */
	void (*stale)(void *ctx, bool stale, const char *why);
	void *ctx;
};
struct node_runtime;
/* st: opened as a secondary. primary: the primary's verifier key. cb borrowed (must outlive). */
/* name, seed (copied): this node's; bundle: the one it opened the store with (its ring
 * generation). */
int node_runtime_new(struct store *st, const char *store_dir, const struct note_verifier *primary,
		     const char *name, const uint8_t seed[static 32],
		     const struct node_bundle *bundle, unsigned stale_ms,
		     const struct node_callbacks *cb, struct node_runtime **ret);
/* One catch-up round now, then a thread that keeps catching up. */
int node_runtime_start(struct node_runtime *n);
/* True while the node is within its staleness bound; otherwise false and why (if given). */
bool node_fresh(struct node_runtime *n, char *why, size_t cap);
void node_runtime_stats(struct node_runtime *n, uint64_t *ret_catch_ups, uint64_t *ret_changes);
/* Stop the thread and free. NULL is fine. */
void node_runtime_free(struct node_runtime *n);

/* A node's key pair: one random 32-byte seed (<local>/node.key, mode 0600), from which come its
 * Ed25519 key (signs its audit log) and its X25519 key (the primary seals its key bundle to it).
 * The public half as text: "enclave-node-public:NAME:" base64(Ed25519 pk || X25519 pk). */
#define NODE_PUBLIC_TEXT_MAX (20 + NODE_NAME_MAX + 1 + 90)
int node_key_public(const uint8_t seed[static 32], struct node_public *ret);
int node_key_box_secret(const uint8_t seed[static 32], uint8_t ret_sk[static 32]);
int node_public_format(const char *name, const struct node_public *pub, char *out, size_t cap);
/* -EINVAL (err_detail() says why), ret_name and ret untouched. Trailing newlines are ignored. */
int node_public_parse(const char *text, size_t len, char ret_name[static NODE_NAME_MAX + 1],
		      struct node_public *ret);
/* Make a new seed in dirfd/name (O_EXCL, 0600, synced): -EEXIST nothing overwritten. */
int node_key_create(int dirfd, const char *name, uint8_t ret_seed[static 32]);
/* Read it: -EPERM not the daemon's own or open to others; -EINVAL not a node key. */
int node_key_read(int dirfd, const char *name, uint8_t ret_seed[static 32]);

/* ---- Node enrolment (node_enrol.c): requests of the approval mechanism --------------------------- */
/* A compute node's enrolment ('k'), its approvals ('l') and removal ('o') folded in. */
struct grants_node {
	uint64_t id;                              /* the enrolment's, from the policy id counter */
	char name[NODE_NAME_MAX + 1];
	struct node_public pub;
	uint32_t by_uid;                          /* who asked */
	char by[POLICY_NAME_MAX + 1];
	int64_t at;                               /* asked, unix seconds */
	uint32_t approvals_required;              /* the store's setting when asked */
	uint32_t approvals;
	int64_t enrolled_at;                      /* its last approval (or at); 0: not yet */
	int64_t removed_at;                       /* 0: not removed */
	uint32_t removed_by_uid;
	char removed_by[POLICY_NAME_MAX + 1];
	char removed_reason[POLICY_REASON_MAX + 1];
	bool removing;                            /* being removed: given no key from now on */
};
/* Ask to enrol node name with public keys pub: audit record node_add, then the 'k' record.
 * -EINVAL a bad name; -EEXIST a node of that name is enrolled or waits, or its key is another
 * node's. With approvals_required 0 it is enrolled at once. */
int grants_node_add(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		    const char *name, const struct node_public *pub, uint32_t approvals_required,
		    int64_t now, struct grants_node *ret);
/* Approve enrolment id (approvals_approve()'s refusals; -ESTALE the node was removed). */
int grants_node_approve(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
			uint64_t id, int64_t now, struct grants_node *ret);
/* Remove node name (enrolled or waiting) at once: audit record node_remove, then 'o'. -ENOENT
 * none; -EINVAL no reason. *ret: the enrolment after. */
int grants_node_remove(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		       const char *name, const char *reason, int64_t now, struct grants_node *ret);
/* Every enrolment ever made, removed ones too (malloc'd; caller frees). */
int grants_nodes_snapshot(struct grants *gs, struct grants_node **ret, size_t *ret_n);
/* The nodes enrolled now (approved, not removed), for their key bundles. */
struct node_enrolled;
int grants_nodes_enrolled(struct grants *gs, struct node_enrolled **ret, size_t *ret_n);
/* Is node name enrolled now with this signing key? (A node asks about itself.) */
bool grants_node_enrolled_as(struct grants *gs, const char *name,
			     const uint8_t sign_pk[static 32]);
bool grants_node_is_enrolled(const struct grants_node *x);
/* "enrolled", "pending_approval" or "removed". */
const char *grants_node_state(const struct grants_node *x);
int grants_node_approvals(struct grants *gs, uint64_t id, struct policy_approval **ret,
			  size_t *ret_n);

/* ---- Key bundles (node_bundle.c): the keys the primary seals to each enrolled node ------------- */
struct stat;
/* The file's size bound: its note, and a box of a full key ring. */
#define NODE_BUNDLE_MAX (12u + NOTE_MAX + 64u + 256u + STORE_AUDITORS_MAX * 32u + \
			 STORE_NODE_KEYS_MAX * 48u)
/* A bundle opened by its node: in guarded memory (node_bundle_free). */
struct node_bundle {
	uint8_t store_id[16];
	char name[NODE_NAME_MAX + 1];
	uint64_t enrolment;                 /* the id of the enrolment it was made for */
	uint64_t ring;                      /* the key ring generation of its keys */
	uint8_t audit_key[32];              /* the node's log is sealed to it (and the auditors) */
	size_t nauditors;
	uint8_t auditors[STORE_AUDITORS_MAX][32];
	struct store_node_keys *keys;       /* the ring's entries and Ks */
};
/* What a node says of itself in nodes/NAME.seen (node_seen.c), for `enclavectl node show`. */
#define NODE_SEEN_SUFFIX ".seen"
#define NODE_SEEN_MS 2000u      /* written this often, and at every change of staleness */
#define NODE_SEEN_MAX 512       /* its note text */
struct node_seen {
	int64_t time_ns;        /* when the node wrote it */
	uint64_t seq;           /* the index sequence number it caught up to */
	uint64_t ring;          /* the key ring generation of the keys it holds */
	uint64_t token;         /* the lease token of the last signal it accepted (0: none) */
	int64_t signal_ns;      /* that signal's time (0: none) */
	int64_t fresh_ns;       /* fresh as of (0: never) */
	uint64_t catch_ups;     /* since it started */
	bool stale;             /* refusing opens */
};
int node_seen_text(const uint8_t store_id[static 16], const char *name, const struct node_seen *s,
		   char *out, size_t cap);
/* A node: sign s with the key of seed and write nodes/NAME.seen (a new file renamed over). */
int node_seen_write(int nodes_fd, const uint8_t store_id[static 16], const char *name,
		    const uint8_t seed[static 32], const struct node_seen *s);
/* The primary: read nodes/NAME.seen and believe it only if signed by sign_pk (the enrolled key),
 * for this store and this node, canonical. -ENOENT none; -EKEYREJECTED not signed by that key;
 * -EBADMSG malformed, another node's or store's. */
int node_seen_read(int nodes_fd, const char *name, const uint8_t store_id[static 16],
		   const uint8_t sign_pk[static 32], struct node_seen *ret);
/* node_seen_read() of the note's len bytes (borrowed), as read: -EBADMSG malformed, too long,
 * not canonical, another node's or store's; -EKEYREJECTED not signed by sign_pk
 * (tests/fuzz/fuzz_node_seen.c). */
int node_seen_parse(const char *note, size_t len, const char *name,
		    const uint8_t store_id[static 16], const uint8_t sign_pk[static 32],
		    struct node_seen *ret);

/* The primary: seal keys (store_node_keys_export()) and the rest to node name's X25519 key and
 * write nodes/NAME.bundle, signed with log's key. */
int node_bundle_write(int nodes_fd, struct store *st, struct audit_log *log, const char *name,
		      uint64_t enrolment, const uint8_t box_pk[static 32],
		      const struct store_node_keys *keys);
/* The primary: remove node name's bundle (removal). */
int node_bundle_unlink(int nodes_fd, const char *name);
/* The bundle file's attributes (to notice a new one cheaply): -errno. */
int node_bundle_stat(int nodes_fd, const char *name, struct stat *ret);
/* A node: read, check and open its bundle with its seed (store_id NULL: any store, which the
 * store's open then checks against the index's). -ENOENT none (not enrolled, or
 * removed); -EKEYREJECTED not signed by the primary; -EBADMSG anything else wrong (another
 * node's or store's, a box replaced, not opening with this key, malformed). The caller checks the
 * generation against the one it holds (a replay is older). */
int node_bundle_read(int nodes_fd, const char *name, const struct note_verifier *primary,
		     const uint8_t *store_id, const uint8_t seed[static 32],
		     struct node_bundle **ret);
/* node_bundle_read() of the file's len bytes (borrowed), as read: the same checks and errors
 * except -ENOENT (tests/fuzz/fuzz_node_bundle.c). */
int node_bundle_parse(const uint8_t *file, size_t len, const char *name,
		      const struct note_verifier *primary, const uint8_t *store_id,
		      const uint8_t seed[static 32], struct node_bundle **ret);
void node_bundle_free(struct node_bundle *b);

/* ---- The daemon ------------------------------------------------------------------------------ */

struct daemon {
	const char *store_dir;               /* as given on the command line */
	const char *mountpoint;
	char audit_dir[4096];                /* <store>/audit */
	char run_dir[4096];                  /* <store>/run */
	int run_fd;                          /* run/, checked to be ours alone; -1 until opened */
	struct store *st;
	struct audit_log *log;
	/* enclave.conf as last loaded. SIGHUP reloads it (daemon_reload()): the roles, approvals and
	 * max_grant_days change under cfg_lock, so read those through daemon_config(); visa_issuer
	 * stays as loaded at start and may be read directly. */
	struct config cfg;
	pthread_mutex_t cfg_lock;
	struct grants *grants;
	struct daemon_groups *groups;        /* group memberships as NSS says them now */
	struct fusefs *fs;
	struct control *ctl;
	int64_t started;                     /* unix seconds */
	unsigned checkpoint_interval;        /* seconds between periodic audit checkpoints */
	/* The versions the audit log stands for (versions.c): the digest the next import record
	 * builds on, and its key (guarded; NULL until daemon_versions_bind()). Under vlock. */
	pthread_mutex_t vlock;
	uint8_t vdigest[32];
	uint8_t *vkey;
	/* The policy records or the versions disagreed with the signed log at start
	 * (load_bound_grants, daemon_versions_bind): the index may be older than the log or edited,
	 * so no garbage is collected on its word (daemon/gc.c). */
	bool index_log_findings;
	/* Erasures (control_erase.c): erase_lock serializes carrying one out and recording it
	 * (a request's, the start's and the retry's); erase_owed (under it) says that one was
	 * carried out whose record the log did not take, for daemon_erase_retry(). */
	pthread_mutex_t erase_lock;
	bool erase_owed;
	struct daemon_gc *gc;                /* the collection schedule, or NULL */
	/* Shared stores (docs/DEPLOYMENT.md). The primary: its lease and signal thread. A node
	 * (`enclaved --node`): its name and its catch-up state; NULL / "" otherwise. */
	struct node_primary *primary;
	const char *node;                    /* a node's name; NULL on the primary */
	struct node_public node_pub;         /* a node's own public keys */
	struct node_runtime *nrt;
};

/* ---- Versions bound to the log (versions.c; docs/FORMAT.md §6.11) --------------------------- */

/* Compare the index's committed versions with the log's import records (two line reads when they
 * agree; the log replayed when not). Each difference (a version the log has and the index lacks,
 * `latest` lower than the log's, another manifest, a version the log never recorded) is named in
 * *ret_findings (a JSON array of strings; NULL when there is none) and in an `integrity` record
 * ("source": "log"), and its dataset is refused from now on (POLICY_DENY_INTEGRITY); the other
 * datasets are served. A log with no versions record yet records its starting point
 * (`versions_baseline`). Run after the grants are loaded and before the mount serves. */
int daemon_versions_bind(struct daemon *d, json_t **ret_findings);
/* The "versions_digest" of an import record: the log's state, with (dataset_id, version,
 * manifest) added when manifest is not NULL ("committed"), as is ("aborted"). Hex into out.
 * -ENOKEY before daemon_versions_bind(). */
int daemon_versions_digest_with(struct daemon *d, uint64_t dataset_id, uint32_t version,
				const uint8_t *manifest, char out[static 65]);
/* The digest the log stands for once the versions erasure e destroyed are gone (for its
 * `dataset_erase` record); daemon_versions_committed() for each of them then takes them out of
 * the running digest. Before daemon_versions_bind(): from the log's last versions record, or
 * -ENOKEY when it has none. */
int daemon_versions_digest_without(struct daemon *d, const struct store_erasure *e,
				   char out[static 2 * AUDIT_VERSIONS_DIGEST_LEN + 1]);
/* At start, before daemon_versions_bind(): an erasure the store carried out but the daemon did
 * not record (killed between the keys' destruction and the `dataset_erase` record, or unable to
 * write it) is recorded now, as the steward whose approval completed it, with
 * "completed_at_start": 1 (control_erase.c). Nothing to do: 0. */
int daemon_erase_recover(struct daemon *d);
/* The watch thread's tick (grants_watch_tick(); ctx is the daemon): while an erasure carried out
 * by this run waits for its record (the log refused it: a full disk), try to write it, with
 * "recorded_late": 1; once written, the mount drops what was erased. Quiet while the log still
 * refuses. */
void daemon_erase_retry(void *ctx);
/* Free what daemon_versions_bind() keeps. */
void daemon_versions_close(struct daemon *d);
/* The version whose "committed" record was written is committed: the state moves on. */
void daemon_versions_committed(struct daemon *d, uint64_t dataset_id, uint32_t version,
			       const uint8_t manifest[static 32]);

/* ---- Garbage collection (gc.c) -------------------------------------------------------------- */

struct daemon_gc;
/* One collection (dry_run: only the scan and plan) as who (NULL: the schedule), refused unless
 * the daemon's checks passed (the policy records bound to the log at start, no integrity failure
 * since), recorded in the audit log ("gc": "committed" before the index commit, "failed" or
 * "refused" with why; a dry run records nothing). hooks: the caller's progress and dataset
 * callbacks (may be NULL). -EBUSY an import runs; -EUCLEAN refused; store_gc()'s errors. */
int daemon_gc_run(struct daemon *d, const struct policy_subject *who, bool dry_run,
		  const struct store_gc_options *hooks, struct store_gc_stats *ret_stats);
/* The numbers of a collection as JSON (a new reference, NULL without memory). */
json_t *daemon_gc_stats_json(const struct store_gc_stats *s);
/* Collect every interval_s seconds in a thread (0: no schedule, *ret NULL): each a collection as
 * `store gc` runs it, recorded (trigger "schedule"), its outcome on stderr. */
int daemon_gc_start(struct daemon *d, unsigned interval_s, struct daemon_gc **ret);
/* Stop the schedule (a collection under way finishes first). NULL is fine. */
void daemon_gc_stop(struct daemon_gc *g);

/* Give the log its sealing keys: the store's, and the auditors' from keys/auditors (main.c;
 * called again after an auditor is added). */
int daemon_seal_setup(struct daemon *d);

/* A copy of the configuration in force (see struct daemon's cfg). */
void daemon_config(struct daemon *d, struct config *ret_cfg);
/* SIGHUP: re-read enclave.conf and the auditor keys. The new roles and settings apply to
 * connections made from then on, and to every grant and deny request decided after it. Recorded
 * ("reload", result "ok" with what is now in force, or "failed" with why) before it applies; a
 * configuration that does not load, or a record that cannot be written, keeps the one in force
 * and says why on stderr. -errno then. */
int daemon_reload(struct daemon *d);

/* The record fields every event made by a person carries: "uid" and "user". */
int daemon_audit_subject(json_t *rec, const struct policy_subject *who);

/* ---- Control server ------------------------------------------------------------------------- */

#define CONTROL_SOCKET_NAME "control.sock"
#define CONTROL_CONNECTIONS_MAX 64
/* Of those, this many are kept for stewards and auditors: users without a role (who may only ask
 * status, whoami and audit.pubkey) share the rest, at most CONTROL_CONNECTIONS_PER_USER each, so
 * no flood of them can keep a steward from revoking. */
#define CONTROL_CONNECTIONS_RESERVED 16
#define CONTROL_CONNECTIONS_PER_USER 4
#define CONTROL_IDLE_TIMEOUT_MS (10 * 60 * 1000)
/* A connection without a role is closed after this long without a request. */
#define CONTROL_IDLE_TIMEOUT_NOROLE_MS (5 * 1000)

struct control;

/* Bind control.sock in d->run_fd (a stale socket file from a killed daemon is replaced: the store
 * lock held by this process proves no other daemon serves it) and start accepting in a thread. */
int control_start(struct daemon *d, struct control **ret_ctl);
/* Stop accepting, end every connection (an import in progress is abandoned) and wait for their
 * threads. NULL is fine. */
void control_stop(struct control *ctl);
