/* limit: the rate limiter of refusal records (refused opens and refused lookups), shared by every
 * worker of a mount (docs/AUDIT.md, "Refusals, rate-limited").
 *
 * A refused open used to be one fsynced record each: a user refused a thousand times a second
 * wrote a thousand records a second and could fill the disk, after which the daemon refuses
 * everyone. Within one window (60 s by default) a user gets one full record per distinct thing
 * refused (what: the dataset, version, path and reason, hashed under a random BLAKE2b key), at
 * most FUSEFS_REFUSAL_PER_USER of them; every other refusal of the window is only counted, and the
 * counts are written as one "refusals_suppressed" record per user when the window ends. Allowed
 * accesses never pass through here: they are always recorded.
 *
 * Memory is fixed when the limiter is made, whatever the callers do: at most
 * FUSEFS_REFUSAL_KEYS_MAX distinct things and FUSEFS_REFUSAL_USERS_MAX users are tracked per
 * window. A refusal past the first cap is counted for its user; a user past the second is counted
 * in one "every other user" total, written as its own summary. Nothing grows without bound and no
 * refusal goes uncounted.
 *
 * Threads: every function may be called from any thread at once (one mutex, held briefly, never
 * while writing a record).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fuse/fusefs.h"  /* FUSEFS_REFUSAL_WINDOW_S, _MAX_S */
#include "policy/policy.h"

/* The bounds of a window's state. */
#define FUSEFS_REFUSAL_PER_USER 64u
#define FUSEFS_REFUSAL_KEYS_MAX 4096u
#define FUSEFS_REFUSAL_USERS_MAX 1024u

enum fusefs_refusal_kind {
	FUSEFS_REFUSAL_OPEN,      /* an open refused by the policy */
	FUSEFS_REFUSAL_LOOKUP,    /* a dataset or version name the caller may not see */
	FUSEFS_REFUSAL_CHECK,     /* an access check a caller without a role made of itself (the
				   * control socket's access.check): not a refusal, but as free
				   * to repeat, so limited the same way */
	FUSEFS_REFUSAL_KINDS
};

/* One user's suppressed refusals over a window that ended (or that a final flush closed). */
struct fusefs_refusal_summary {
	bool all_others;                      /* the users past FUSEFS_REFUSAL_USERS_MAX, together */
	uint32_t uid;                         /* unless all_others */
	char user[POLICY_NAME_MAX + 1];       /* the name at its first refusal; "" unknown */
	uint64_t suppressed[FUSEFS_REFUSAL_KINDS]; /* refusals counted, not written */
	uint64_t recorded;                    /* full records written for the user in the window */
	int64_t start_ns, end_ns;             /* the window, CLOCK_REALTIME */
};

struct fusefs_limiter;

/* A limiter with windows of window_s seconds (0: FUSEFS_REFUSAL_WINDOW_S; at most
 * FUSEFS_REFUSAL_WINDOW_MAX_S). Every table is allocated here. -EINVAL, -ENOMEM. */
int fusefs_limiter_new(unsigned window_s, struct fusefs_limiter **ret_limiter);
/* NULL is fine. Counts not taken are lost: take them first (fusefs_limiter_take(all)). */
void fusefs_limiter_free(struct fusefs_limiter *l);
/* A refusal of uid (named user, may be NULL) of what (key, keylen bytes: anything that tells two
 * refused things apart, reason included) at now_ns. True: write its full record now; false: it
 * was counted for the window's summary. */
bool fusefs_limiter_admit(struct fusefs_limiter *l, uint32_t uid, const char *user,
			  enum fusefs_refusal_kind kind, const void *key, size_t keylen,
			  int64_t now_ns);
/* If the current window ended by now_ns (or always, with all), close it: the summaries of the
 * users with suppressed refusals into a new array *ret (NULL when none; free() it) of *ret_n, and
 * a new window starts. -ENOMEM (the counts are kept for the next try). */
int fusefs_limiter_take(struct fusefs_limiter *l, int64_t now_ns, bool all,
			struct fusefs_refusal_summary **ret, size_t *ret_n);
