/* policy: who may open which dataset version, and why not.
 *
 * A grant gives one principal (a user or a group, by numeric id) read access to one dataset (all
 * its versions, or one) for a stated purpose, from not_before until expires. Grants are immutable
 * records; a revocation is a record of its own (who, when, why) that the caller folds into the
 * grant (revoked_at) before deciding. Everything not allowed by a valid grant is denied.
 *
 * policy_decide() is pure: no clock, no I/O, no locks; the caller passes `now` and the grants.
 * The subject helpers (policy_subject_lookup) are the one impure part: they ask NSS for a user's
 * name and groups.
 *
 * Contract: functions that act return 0 on success and -errno on failure; outputs are ret_*
 * parameters, last, untouched on failure; err_detail() (common/err.h) says what was wrong.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

/* Bounds on fields that come from stewards and from the index. */
#define POLICY_NAME_MAX 64          /* a user or group name */
#define POLICY_DATASET_MAX 128      /* as STORE_DATASET_NAME_MAX */
#define POLICY_PURPOSE_MAX 1024     /* free text, UTF-8, no control characters */
#define POLICY_REASON_MAX 1024      /* a revocation's reason, same rules */
#define POLICY_GROUPS_MAX 1024      /* groups considered per subject; more is an error */

/* A grant's version field: every version of the dataset, present and future. As the `version`
 * argument of policy_decide(): "is any version allowed?" (used to decide whether a dataset is
 * visible at all). */
#define POLICY_ALL_VERSIONS 0u

enum policy_principal_kind {
	POLICY_USER = 1,
	POLICY_GROUP = 2,
};

struct policy_grant {
	uint64_t id;                              /* > 0, unique within a store, never reused */
	uint32_t kind;                            /* enum policy_principal_kind */
	uint32_t principal_id;                    /* uid or gid; what decisions match on */
	char principal[POLICY_NAME_MAX + 1];      /* the name when granted, for people to read */
	uint64_t dataset_id;                      /* store dataset id; what decisions match on */
	char dataset[POLICY_DATASET_MAX + 1];     /* its name, for people to read */
	uint32_t version;                         /* one version, or POLICY_ALL_VERSIONS */
	char purpose[POLICY_PURPOSE_MAX + 1];
	int64_t not_before;                       /* unix seconds; valid from this instant */
	int64_t expires;                          /* unix seconds; invalid from this instant on */
	uint32_t granted_by_uid;
	char granted_by[POLICY_NAME_MAX + 1];
	int64_t created;                          /* unix seconds */
	/* Folded in from the grant's revocation record by the caller; 0: not revoked. Any other
	 * value revokes the grant at every `now`, before or after it: the time is for people. */
	int64_t revoked_at;                       /* unix seconds */
};

/* A revocation: its own immutable record. */
struct policy_revocation {
	uint64_t grant_id;
	uint32_t by_uid;
	char by[POLICY_NAME_MAX + 1];
	int64_t at;                               /* unix seconds */
	char reason[POLICY_REASON_MAX + 1];       /* may be empty */
};

/* Who is asking: a uid and every group it is in (primary and supplementary). */
struct policy_subject {
	uint32_t uid;
	char user[POLICY_NAME_MAX + 1];           /* "" if the uid has no name */
	size_t ngids;
	uint32_t gids[POLICY_GROUPS_MAX];
};

enum policy_reason {
	POLICY_ALLOW = 0,
	POLICY_DENY_NO_GRANT = 1,       /* no grant names this subject for this dataset/version */
	POLICY_DENY_EXPIRED = 2,        /* the matching grant has expired */
	POLICY_DENY_NOT_YET_VALID = 3,  /* the matching grant starts later */
	POLICY_DENY_REVOKED = 4,        /* the matching grant was revoked */
};

struct policy_decision {
	enum policy_reason reason;      /* POLICY_ALLOW or why not */
	/* Allow: the grant that allows. Deny: the grant the reason is about (0 for no grant). */
	uint64_t grant_id;
};

/* Decide whether `who` may read `version` of dataset `dataset_id` at time `now` (unix seconds).
 * A grant matches when its principal is who->uid (user grant) or one of who->gids (group grant),
 * its dataset_id is dataset_id, and its version is version or POLICY_ALL_VERSIONS (when version is
 * POLICY_ALL_VERSIONS, grants of any version match). A matching grant is valid when it is not
 * revoked and not_before <= now < expires. Allow if any matching grant is valid (reporting the
 * valid one that expires last, ties to the lowest id); otherwise deny with the reason of the
 * matching grant with the highest id (the newest), or no grant. The result does not depend on the
 * order of grants[].
 * Clarifications: a grant that is both revoked and out of its time window is reported revoked; one
 * with now >= expires is expired even if (invalidly) now < not_before too; of two matching grants
 * with the same id (ids are unique, so only in bad input) the reason revoked > expired >
 * not_yet_valid wins. Grants are trusted to be valid (policy_grant_validate()); decide itself
 * skips only grants with id 0 (which would read as "no grant") or an unknown kind, and considers
 * at most POLICY_GROUPS_MAX of who->gids. Cost: one pass over grants[], with a scan of who->gids
 * for group grants of this dataset. */
struct policy_decision policy_decide(const struct policy_subject *who, uint64_t dataset_id,
				     uint32_t version, int64_t now,
				     const struct policy_grant *grants, size_t ngrants);

/* "allow", "no_grant", "expired", "not_yet_valid", "revoked"; "unknown" for anything else. */
const char *policy_reason_name(enum policy_reason r);
/* A sentence for people: "no grant for this dataset", ... */
const char *policy_reason_text(enum policy_reason r);

/* Check a grant's fields (kind, names, times in order, text without control characters and
 * valid UTF-8, bounds). -EINVAL with err_detail() naming the field. The exact rules are in
 * docs/POLICY.md: ids 1 to INT64_MAX (what a JSON integer holds); principal_id and
 * granted_by_uid not (uint32_t)-1; names as policy_name_valid(); dataset as
 * store_dataset_name_valid(); purpose non-empty text; times within TIME_RFC3339_MIN..MAX
 * (common/timefmt.h) so that the JSON form can hold them; not_before < expires; created after
 * the epoch (> 0); revoked_at 0 (not revoked) or, like created, after the epoch. */
int policy_grant_validate(const struct policy_grant *g);
/* The same for a revocation: grant_id 1 to INT64_MAX, by_uid not (uint32_t)-1, by a name,
 * at > 0 (so that, folded into revoked_at, it never reads as "not revoked") and within
 * TIME_RFC3339_MAX, reason text that may be empty. */
int policy_revocation_validate(const struct policy_revocation *r);
/* A user or group name: 1 to POLICY_NAME_MAX bytes of printable ASCII (0x20-0x7e), not starting or
 * ending with a space (AD groups such as "domain users" have inner spaces). NULL is not valid. */
bool policy_name_valid(const char *name);

/* JSON form of a grant / revocation, as stored in the index and sent over the control socket.
 * Times are RFC 3339 UTC strings ("2026-11-21T09:00:00Z"). Returns a new reference, or NULL on
 * allocation failure. Also NULL (err_detail() naming the field) for a record that does not
 * validate: what is written always parses back to an identical struct (revoked_at aside). */
json_t *policy_grant_to_json(const struct policy_grant *g);
json_t *policy_revocation_to_json(const struct policy_revocation *r);
/* Parse and validate (strictly: every field present and typed, no unknown fields, bounds).
 * -EINVAL with err_detail() naming the field. revoked_at is not part of the grant's JSON: it is
 * set to 0. Times must be RFC 3339 date-times (time_parse_rfc3339(): any offset, fraction
 * dropped); relative times, "now" and bare dates are refused. */
int policy_grant_from_json(const json_t *j, struct policy_grant *ret_grant);
int policy_revocation_from_json(const json_t *j, struct policy_revocation *ret_rev);

/* Fill a subject for uid: its name (getpwuid_r) and groups (getgrouplist, with `gid` as the
 * primary group; a uid without a passwd entry gets just `gid`). -E2BIG more than
 * POLICY_GROUPS_MAX groups. Thread-safe.
 * Also: -ENAMETOOLONG a name longer than POLICY_NAME_MAX, -EINVAL a name that is not
 * policy_name_valid() (refused rather than altered: the name goes into audit records); other
 * -errno from NSS (e.g. -EIO). A passwd entry with an empty name counts as no entry. gids[0] is
 * `gid`; the list may hold duplicates. */
int policy_subject_lookup(uid_t uid, gid_t gid, struct policy_subject *ret_subject);
