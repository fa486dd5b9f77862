/* policy: the decision rule, and the words for its reasons.
 *
 * policy_decide() is called at every open and every lookup of a dataset or version directory,
 * from many FUSE worker threads at once, so it is pure: no clock, no I/O, no locks, no allocation,
 * one pass over the grants. The caller owns the grants and whatever lock guards them.
 */
#include "policy/policy.h"

#include "common/common.h"

/* How strongly a reason speaks against a grant; of two matching grants with the same id (which
 * only bad input has), the higher rank is reported, so that the order of grants[] cannot matter. */
static int deny_rank(enum policy_reason r)
{
	switch (r) {
	case POLICY_DENY_REVOKED:
		return 3;
	case POLICY_DENY_EXPIRED:
		return 2;
	case POLICY_DENY_NOT_YET_VALID:
		return 1;
	default:
		return 0;
	}
}

static bool subject_in_group(const struct policy_subject *who, uint32_t gid)
{
	/* ngids beyond the array would be a caller's bug; never read past it. */
	size_t n = MIN(who->ngids, (size_t)POLICY_GROUPS_MAX);

	for (size_t i = 0; i < n; i++)
		if (who->gids[i] == gid)
			return true;
	return false;
}

/* Does g speak about this subject, dataset and version at all (valid or not)? The cheap tests go
 * first: the group scan runs only for group grants of this dataset and version. */
static bool grant_matches(const struct policy_grant *g, const struct policy_subject *who,
			  uint64_t dataset_id, uint32_t version)
{
	if (g->id == 0 || g->dataset_id != dataset_id)
		return false;
	if (g->version != POLICY_ALL_VERSIONS && version != POLICY_ALL_VERSIONS &&
	    g->version != version)
		return false;
	switch (g->kind) {
	case POLICY_USER:
		return g->principal_id == who->uid;
	case POLICY_GROUP:
		return subject_in_group(who, g->principal_id);
	default:
		return false;
	}
}

/* POLICY_ALLOW when g is valid at now, else why not (revoked first: it is final). */
static enum policy_reason grant_state(const struct policy_grant *g, int64_t now)
{
	if (g->revoked_at != 0)
		return POLICY_DENY_REVOKED;
	if (now >= g->expires)
		return POLICY_DENY_EXPIRED;
	if (now < g->not_before)
		return POLICY_DENY_NOT_YET_VALID;
	return POLICY_ALLOW;
}

struct policy_decision policy_decide(const struct policy_subject *who, uint64_t dataset_id,
				     uint32_t version, int64_t now,
				     const struct policy_grant *grants, size_t ngrants)
{
	const struct policy_grant *allow = NULL;   /* the valid grant to report so far */
	const struct policy_grant *deny = NULL;    /* the newest matching grant so far */
	enum policy_reason deny_reason = POLICY_DENY_NO_GRANT;

	if (!who || !grants)
		return (struct policy_decision){ .reason = POLICY_DENY_NO_GRANT };
	for (size_t i = 0; i < ngrants; i++) {
		const struct policy_grant *g = &grants[i];
		enum policy_reason st;

		if (!grant_matches(g, who, dataset_id, version))
			continue;
		st = grant_state(g, now);
		if (st == POLICY_ALLOW) {
			/* The one that expires last; ties to the lowest id. */
			if (!allow || g->expires > allow->expires ||
			    (g->expires == allow->expires && g->id < allow->id))
				allow = g;
		} else if (!deny || g->id > deny->id ||
			   (g->id == deny->id && deny_rank(st) > deny_rank(deny_reason))) {
			deny = g;
			deny_reason = st;
		}
	}
	if (allow)
		return (struct policy_decision){ .reason = POLICY_ALLOW, .grant_id = allow->id };
	if (deny)
		return (struct policy_decision){ .reason = deny_reason, .grant_id = deny->id };
	return (struct policy_decision){ .reason = POLICY_DENY_NO_GRANT };
}

const char *policy_reason_name(enum policy_reason r)
{
	switch (r) {
	case POLICY_ALLOW:
		return "allow";
	case POLICY_DENY_NO_GRANT:
		return "no_grant";
	case POLICY_DENY_EXPIRED:
		return "expired";
	case POLICY_DENY_NOT_YET_VALID:
		return "not_yet_valid";
	case POLICY_DENY_REVOKED:
		return "revoked";
	}
	return "unknown";
}

const char *policy_reason_text(enum policy_reason r)
{
	switch (r) {
	case POLICY_ALLOW:
		return "allowed by a grant";
	case POLICY_DENY_NO_GRANT:
		return "no grant for this dataset";
	case POLICY_DENY_EXPIRED:
		return "the grant has expired";
	case POLICY_DENY_NOT_YET_VALID:
		return "the grant is not valid yet";
	case POLICY_DENY_REVOKED:
		return "the grant was revoked";
	}
	return "unknown reason";
}
