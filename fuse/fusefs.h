/* fusefs: the read-only POSIX view of a store, served with the libfuse low-level API.
 *
 * (The module's prefix is fusefs_, not fuse_, because libfuse owns the fuse_ namespace.)
 *
 * Layout under the mount point:
 *   /<dataset>/            one directory per dataset the caller may read some version of
 *   /<dataset>/latest      symlink to the newest committed version's directory name ("3")
 *   /<dataset>/<version>/  the version's tree, as imported
 * Everything is read-only; the kernel checks permission bits (default_permissions) and
 * allow_other lets every user reach the mount; the grant is decided by the daemon's callback at
 * every open, and at lookup/getattr/readdir of the dataset and version levels, so that a caller
 * without a grant neither opens (EACCES), nor sees (readdir), nor stats (ENOENT) a dataset.
 * Entries at those two levels are never cached by the kernel (timeouts 0) because the kernel's
 * dentry cache is shared by all users; entries inside a version may be cached (versions never
 * change). Opens are always sent to the daemon (no zero-message opens); an open file's reads are
 * decided again after fusefs_invalidate_dataset()/_all(). The caller is its uid with the groups its
 * process holds at the request (from the kernel, not NSS). Every allowed open, every release
 * (with bytes read) and every authentication failure is appended to the audit log before the
 * call returns; if the log cannot be written the open fails (EACCES) and a read that failed
 * authentication still returns EIO. Denied opens and refused lookups of dataset and version
 * names are recorded once per user and distinct refusal per window, the rest counted in a
 * summary record (fuse/limit.h).
 *
 * Contract: functions that act return 0 on success and -errno on failure; err_detail() says why.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "audit/audit.h"
#include "policy/policy.h"
#include "store/store.h"

/* The daemon's decision for one open or lookup: it owns the grants (and their lock). version is a
 * committed version, or POLICY_ALL_VERSIONS for "may this subject see the dataset at all". Must be
 * safe to call from many threads at once. */
typedef struct policy_decision (*fusefs_decide_fn)(void *ctx, const struct policy_subject *who,
						   uint64_t dataset_id, uint32_t version);

/* What the daemon tells the mount. Copied by fusefs_new(); ctx is borrowed and must outlive the
 * fusefs. Both callbacks run on worker threads, many at once; neither may call back into fusefs. */
struct fusefs_callbacks {
	fusefs_decide_fn decide;        /* required: the grant decision, at every open and lookup */
	/* Whether dataset_id is served through the kernel's page cache ("cache=kernel"), asked at
	 * each open. NULL: every dataset is served with direct I/O (every read checked). */
	bool (*cache_kernel)(void *ctx, uint64_t dataset_id);
	void *ctx;                      /* passed to both */
};

/* What the mount has served, for status and tests. Counts only grow. */
struct fusefs_stats {
	uint64_t reads;                 /* read requests that reached the daemon */
	uint64_t reads_refused;         /* of them, refused on an open handle after a re-decision */
	uint64_t opens_cached;          /* opens served through the page cache (cache=kernel) */
	uint64_t prefetches;            /* ranges read ahead for sequential readers */
	uint64_t reads_prefetched;      /* reads answered from a range read ahead */
	uint64_t readdirs;              /* directory listing requests that reached the daemon */
	uint64_t lookups;               /* LOOKUP requests (a path walk, name by name) */
	uint64_t getattrs;              /* GETATTR requests (a stat, or the kernel's permission
					 * check of a node whose attributes expired) */
	uint64_t opens;                 /* OPEN requests of files, allowed or not */
	uint64_t releases;              /* RELEASE requests (the last close of an open file) */
};

/* Refusal records (fuse/limit.h): the default window and the longest, in seconds. */
#define FUSEFS_REFUSAL_WINDOW_S 60u
#define FUSEFS_REFUSAL_WINDOW_MAX_S 86400u

struct fusefs_options {
	const char *mountpoint;   /* an existing directory */
	unsigned max_threads;     /* worker threads at most; 0: libfuse's default */
	unsigned prefetch_threads;  /* read-ahead threads (fuse/prefetch.h); 0: one per online
				     * CPU, at most 4 */
	bool no_prefetch;         /* no read-ahead at all */
	unsigned refusal_window_s;  /* refused opens and lookups: one record per distinct refusal
				     * per user per window, the rest counted (fuse/limit.h); 0:
				     * 60 s; at most 86400 */
	bool debug;               /* libfuse debug output on stderr */
};

struct fusefs;

/* Prepare a session. st and log are borrowed and must outlive the fusefs; *cb is copied. -EINVAL
 * when st, log, cb, cb->decide, opts or its mount point is missing. */
int fusefs_new(struct store *st, struct audit_log *log, const struct fusefs_callbacks *cb,
	       const struct fusefs_options *opts, struct fusefs **ret_fs);
/* Mount. A stale FUSE mount left at the mount point by a daemon that was killed (ENOTCONN) is
 * detached first, so a restart after kill -9 needs no manual repair. -EBUSY something else is
 * mounted there; -ENOTDIR / -ENOENT bad mount point. */
int fusefs_mount(struct fusefs *fs);
/* Serve requests with a pool of worker threads until fusefs_stop() or an external unmount.
 * Returns 0 after a clean stop. */
int fusefs_run(struct fusefs *fs);
/* Make fusefs_run() return: exits the session and unmounts, which wakes every worker. Safe to
 * call from any thread (not from a signal handler), and more than once. */
void fusefs_stop(struct fusefs *fs);
/* After the grants of dataset_id change (revoke, deny, expiry, approval withdrawn, cache setting):
 *  - every open handle of the dataset decides again at its next read (the cost of a read that
 *    finds nothing changed is one atomic load); a handle refused then answers EACCES to that and
 *    every later read, and one "read_refused" audit record is written for it;
 *  - the kernel's cached pages of every file of the dataset that was opened in cache=kernel mode
 *    (and of every file of it still open, for private mappings) are dropped, so the next read
 *    reaches the daemon;
 *  - the kernel's cached entries and attributes of the dataset's directory, its versions and
 *    latest are dropped, so the next lookup and open are decided again.
 * Call it after the grant table has changed (a decision made after it must see the change).
 * Safe from any thread while fusefs_run() runs, but never from a request handler, and never while
 * holding a lock the decide callback (or the audit log) takes: dropping pages waits for reads in
 * flight, which may be waiting for a decision. name may be NULL (looked up). */
void fusefs_invalidate_dataset(struct fusefs *fs, uint64_t dataset_id, const char *name);
/* The same for every dataset at once (a deny on all datasets, a change of many grants). */
void fusefs_invalidate_all(struct fusefs *fs);
/* Counters since fusefs_new(). */
void fusefs_stats_get(struct fusefs *fs, struct fusefs_stats *ret_stats);
/* Unmount if still mounted and free. NULL is fine. */
void fusefs_free(struct fusefs *fs);

/* ---- Test hooks ---------------------------------------------------------------------------- */

/* Where an injected store error strikes. */
enum fusefs_fault {
	FUSEFS_FAULT_NONE,
	FUSEFS_FAULT_READ,         /* the next read of an open file: as if the store read failed */
	FUSEFS_FAULT_OBJECT_OPEN,  /* the next open of an object, after the open record */
};
/* The next request at `where` fails with -err (EIO: a disk error; EBADMSG: a key or chunk that
 * failed authentication), once. For tests of the records of store errors; no effect otherwise. */
void fusefs_test_fail_next(struct fusefs *fs, enum fusefs_fault where, int err);
/* An access check (the control socket's access.check) by uid (named user, may be NULL) without
 * a role, of the question key (keylen bytes: what was asked and answered): true to record it in
 * full now, false when it was counted instead, for the refusals_suppressed summary of the window
 * (the refusal limiter's, one record per distinct question per user per window: docs/AUDIT.md
 * "Refusals, rate-limited"). */
bool fusefs_check_admit(struct fusefs *fs, uint32_t uid, const char *user, const void *key,
			size_t keylen);
/* End the current window of every kind of rate-limited stderr line now, as if its interval had
 * passed (tests: the next line of each kind is printed, with the count of those left out). */
void fusefs_test_log_window_end(struct fusefs *fs);
