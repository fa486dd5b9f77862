/* policy: the decision rule, and the words for its reasons.
 *
 * policy_decide() is called at every open and every lookup of a dataset or version directory,
 * from many FUSE worker threads at once, so it is pure: no clock, no I/O, no locks, no allocation,
 * one pass over the deny rules and one over the grants. The caller owns the records and whatever
 * lock guards them.
 */
#include "policy/policy.h"

#include "common/common.h"

/* How strongly a reason speaks against a grant; of two matching grants with the same id (which
 * only bad input has), the higher rank is reported, so that the order of grants[] cannot matter. */
static int deny_rank(enum policy_reason r)
{
	switch (r) {
	case POLICY_DENY_REVOKED:
		return 5;
	case POLICY_DENY_EXPIRED:
		return 4;
	case POLICY_DENY_PURPOSE_EXCLUDED:
		return 3;
	case POLICY_DENY_PENDING_APPROVAL:
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

/* Does deny rule x name this subject and dataset, and is it in force? */
static bool deny_matches(const struct policy_deny *x, const struct policy_subject *who,
			 uint64_t dataset_id)
{
	if (x->id == 0 || x->removed_at != 0)
		return false;
	if (x->dataset_id != 0 && x->dataset_id != dataset_id)
		return false;
	switch (x->kind) {
	case POLICY_USER:
		return x->principal_id == who->uid;
	case POLICY_GROUP:
		return subject_in_group(who, x->principal_id);
	case POLICY_EVERYONE:
		return true;
	default:
		return false;
	}
}

/* POLICY_ALLOW when g is valid at now, else why not, the most final first: revoked, expired,
 * purpose excluded by consent, pending approval, not yet valid. *ret_code gets the excluding
 * consent code. */
static enum policy_reason grant_state(const struct policy_grant *g, int64_t now,
				      const struct policy_input *in, uint32_t *ret_code)
{
	if (g->revoked_at != 0)
		return POLICY_DENY_REVOKED;
	if (now >= g->expires)
		return POLICY_DENY_EXPIRED;
	if (in->nduo && in->duo) {
		struct policy_purpose p;
		uint32_t code;

		/* A purpose that does not parse (only in bad input: records are validated) is
		 * treated as general research, which the narrowest codes exclude. */
		if (policy_purpose_parse(g->purpose_code[0] ? g->purpose_code : "general", &p) < 0)
			p = (struct policy_purpose){ .terms = POLICY_PURPOSE_GENERAL };
		code = policy_purpose_excluded(in->duo, MIN(in->nduo, (size_t)POLICY_DUO_MAX), &p,
					       g->expires, g->consent_override[0] != '\0');
		if (code) {
			*ret_code = code;
			return POLICY_DENY_PURPOSE_EXCLUDED;
		}
	}
	if (g->approvals < g->approvals_required)
		return POLICY_DENY_PENDING_APPROVAL;
	if (now < g->not_before)
		return POLICY_DENY_NOT_YET_VALID;
	return POLICY_ALLOW;
}

struct policy_decision policy_evaluate(const struct policy_subject *who, uint64_t dataset_id,
				       uint32_t version, int64_t now,
				       const struct policy_input *in)
{
	const struct policy_grant *allow = NULL;   /* the valid grant to report so far */
	const struct policy_grant *deny = NULL;    /* the newest matching grant so far */
	enum policy_reason deny_reason = POLICY_DENY_NO_GRANT;
	uint32_t deny_code = 0;
	uint64_t rule = 0;

	if (!who || !in)
		return (struct policy_decision){ .reason = POLICY_DENY_NO_GRANT };
	/* An explicit deny wins over everything: the lowest matching rule id, so that the answer
	 * does not depend on the order of denies[]. The grants are still looked at: whether one
	 * names the subject decides what the subject may see (and the same work is done either
	 * way, so the time taken does not tell whether a rule matched). */
	for (size_t i = 0; in->denies && i < in->ndenies; i++)
		if (deny_matches(&in->denies[i], who, dataset_id) &&
		    (!rule || in->denies[i].id < rule))
			rule = in->denies[i].id;
	for (size_t i = 0; in->grants && i < in->ngrants; i++) {
		const struct policy_grant *g = &in->grants[i];
		enum policy_reason st;
		uint32_t code = 0;

		if (!grant_matches(g, who, dataset_id, version))
			continue;
		st = grant_state(g, now, in, &code);
		if (st == POLICY_ALLOW) {
			/* The one that expires last; ties to the lowest id. */
			if (!allow || g->expires > allow->expires ||
			    (g->expires == allow->expires && g->id < allow->id))
				allow = g;
		} else if (!deny || g->id > deny->id ||
			   (g->id == deny->id && (deny_rank(st) > deny_rank(deny_reason) ||
						  (st == deny_reason && code < deny_code)))) {
			deny = g;
			deny_reason = st;
			deny_code = code;
		}
	}
	if (rule)
		return (struct policy_decision){ .reason = POLICY_DENY_BY_RULE, .rule_id = rule,
						 .named = allow || deny };
	if (allow)
		return (struct policy_decision){ .reason = POLICY_ALLOW, .grant_id = allow->id,
						 .named = true };
	if (deny)
		return (struct policy_decision){ .reason = deny_reason, .grant_id = deny->id,
						 .code = deny_code, .named = true };
	return (struct policy_decision){ .reason = POLICY_DENY_NO_GRANT };
}

struct policy_decision policy_decide(const struct policy_subject *who, uint64_t dataset_id,
				     uint32_t version, int64_t now,
				     const struct policy_grant *grants, size_t ngrants)
{
	struct policy_input in = { .grants = grants, .ngrants = ngrants };

	if (!grants)
		return (struct policy_decision){ .reason = POLICY_DENY_NO_GRANT };
	return policy_evaluate(who, dataset_id, version, now, &in);
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
	case POLICY_DENY_PENDING_APPROVAL:
		return "pending_approval";
	case POLICY_DENY_BY_RULE:
		return "denied_by_rule";
	case POLICY_DENY_PURPOSE_EXCLUDED:
		return "purpose_excluded";
	case POLICY_DENY_POLICY_MISMATCH:
		return "policy_mismatch";
	case POLICY_DENY_INTEGRITY:
		return "integrity";
	case POLICY_DENY_NODE_STALE:
		return "node_stale";
	case POLICY_DENY_NODE_REMOVED:
		return "node_removed";
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
	case POLICY_DENY_PENDING_APPROVAL:
		return "the grant awaits approval by another steward";
	case POLICY_DENY_BY_RULE:
		return "a deny rule blocks this subject";
	case POLICY_DENY_PURPOSE_EXCLUDED:
		return "the dataset's consent codes exclude the grant's purpose";
	case POLICY_DENY_POLICY_MISMATCH:
		return "the store's policy records disagree with the audit log about this dataset "
		       "(enclavectl policy rebuild)";
	case POLICY_DENY_INTEGRITY:
		return "the store's versions of this dataset disagree with the audit log's import "
		       "records (a version removed, put back from before an import, or injected)";
	case POLICY_DENY_NODE_STALE:
		return "this node has not caught up with the primary within its staleness bound "
		       "(it serves again once it has)";
	case POLICY_DENY_NODE_REMOVED:
		return "this node is not enrolled in the store (a steward removed it, or has not "
		       "enrolled it yet): it serves nothing";
	}
	return "unknown reason";
}
