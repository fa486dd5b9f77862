/* control_grant: the grant operations of the control socket (docs/PROTOCOL.md). */
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"
#include "common/timefmt.h"
#include "daemon/daemon.h"
#include "daemon/control_internal.h"

/* ---- Grants ---------------------------------------------------------------------------------- */

static int subject_of(const char *user, struct policy_subject *ret);

static const char *subject_name(const struct policy_subject *who, char buf[static 16])
{
	if (who->user[0])
		return who->user;
	snprintf(buf, 16, "%u", who->uid);
	return buf;
}

uint32_t grant_excluded_code(const struct policy_dataset *dp, const struct policy_grant *g)
{
	struct policy_purpose pp;

	if (!dp || !dp->nduo || policy_purpose_parse(g->purpose_code, &pp) < 0)
		return 0;
	return policy_purpose_excluded(dp->duo, dp->nduo, &pp, g->expires,
				       g->consent_override[0] != '\0');
}

const char *grant_state(struct conn *c, const struct policy_grant *g, int64_t now,
			uint32_t *ret_code)
{
	struct policy_dataset dp;
	uint32_t code = 0;

	if (g->revoked_at)
		return "revoked";
	if (now >= g->expires)
		return "expired";
	if (grants_dataset_get(c->d->grants, g->dataset_id, &dp) == 0)
		code = grant_excluded_code(&dp, g);
	if (code) {
		if (ret_code)
			*ret_code = code;
		return "suspended";
	}
	if (g->approvals < g->approvals_required)
		return "pending_approval";
	if (now < g->not_before)
		return "not_yet_valid";
	return "active";
}

int grant_state_json(struct conn *c, const struct policy_grant *g, int64_t now, json_t *o)
{
	uint32_t code = 0;
	const char *state = grant_state(c, g, now, &code);

	if (json_object_set_new(o, "state", json_string(state)) < 0 ||
	    json_object_set_new(o, "approvals", json_integer(g->approvals)) < 0)
		return -ENOMEM;
	if (code && (json_object_set_new(o, "consent_code", json_string(policy_duo_name(code))) < 0 ||
		     json_object_set_new(o, "consent_code_id", json_string(policy_duo_id(code))) < 0))
		return -ENOMEM;
	return 0;
}

/* Refuse (-EPERM, naming the code) a purpose the dataset's consent codes exclude. override: the
 * steward's consent override reason, which lifts NMDS only, and must lift something. */
static int check_purpose(struct conn *c, uint64_t dataset_id, const char *dataset,
			 const struct policy_purpose *p, const char *purpose_code, int64_t expires,
			 const char *override)
{
	struct policy_dataset dp;
	uint32_t code, code_plain;

	if (grants_dataset_get(c->d->grants, dataset_id, &dp) < 0)
		dp.nduo = 0;
	code_plain = policy_purpose_excluded(dp.duo, dp.nduo, p, expires, false);
	code = policy_purpose_excluded(dp.duo, dp.nduo, p, expires, *override != '\0');
	if (code)
		return err_set(-EPERM, "purpose \"%s\" is excluded by consent code %s (%s, %s) of "
			       "dataset \"%s\"%s", purpose_code, policy_duo_name(code),
			       policy_duo_id(code), policy_duo_label(code), dataset,
			       code == POLICY_DUO_NMDS ? "; a steward may record an explicit "
							 "override with a reason" : "");
	if (*override && !code_plain)
		return err_set(-EINVAL, "a consent override was given, but no consent code of "
			       "dataset \"%s\" excludes purpose \"%s\": nothing to override",
			       dataset, purpose_code);
	return 0;
}

/* How many people could approve g: those holding the steward role, less its requester and its
 * grantee (the user, or the group's members). -errno when the directory cannot be read. */
static int eligible_approvers(struct conn *c, const struct policy_grant *g, size_t *ret_n)
{
	enum { PEOPLE_MAX = 4096 };
	uint32_t kinds[CONFIG_PRINCIPALS_MAX], ids[CONFIG_PRINCIPALS_MAX];
	_cleanup_free_ uint32_t *stewards = malloc(PEOPLE_MAX * sizeof(uint32_t));
	_cleanup_free_ uint32_t *grantees = malloc(PEOPLE_MAX * sizeof(uint32_t));
	_cleanup_free_ struct config *cfg = malloc(sizeof(*cfg));
	size_t ns = 0, ng = 0, n = 0;
	int r;

	if (!stewards || !grantees || !cfg)
		return -ENOMEM;
	daemon_config(c->d, cfg);
	for (size_t i = 0; i < cfg->nstewards; i++) {
		kinds[i] = cfg->stewards[i].kind;
		ids[i] = cfg->stewards[i].id;
	}
	if ((r = policy_principal_uids(kinds, ids, cfg->nstewards, stewards, PEOPLE_MAX,
				       &ns)) < 0 ||
	    (r = policy_principal_uids(&g->kind, &g->principal_id, 1, grantees, PEOPLE_MAX,
				       &ng)) < 0)
		return r;
	for (size_t i = 0; i < ns; i++) {
		bool out = stewards[i] == g->granted_by_uid;

		for (size_t k = 0; k < ng && !out; k++)
			out = grantees[k] == stewards[i];
		n += !out;
	}
	*ret_n = n;
	return 0;
}

int op_grant_add(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "principal_kind", "principal", "dataset", "version",
					     "purpose", "purpose_code", "override_consent",
					     "not_before", "expires", "dry_run", NULL };
	_cleanup_free_ struct config *cfg = malloc(sizeof(*cfg));  /* the settings in force */
	struct policy_grant g = { 0 };
	struct store_dataset_info ds;
	struct store_version_info vi;
	struct policy_purpose pp;
	const char *kind, *principal, *dataset, *purpose, *purpose_code = "general";
	const char *override = "";
	int64_t now = time(NULL), not_before = now, expires = 0, max_days;
	uint64_t version = 0;
	bool dry_run = false;
	char uidbuf[16];
	int r;

	if (!cfg)
		return -ENOMEM;
	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_bool(args, "dry_run", false, &dry_run)) < 0 ||
	    (r = proto_arg_string(args, "principal_kind", true, 8, &kind)) < 0 ||
	    (r = proto_arg_string(args, "principal", true, POLICY_NAME_MAX, &principal)) < 0 ||
	    (r = proto_arg_string(args, "dataset", true, STORE_DATASET_NAME_MAX, &dataset)) < 0 ||
	    (r = proto_arg_u64(args, "version", false, UINT32_MAX, &version)) < 0 ||
	    (r = proto_arg_string(args, "purpose", true, POLICY_PURPOSE_MAX, &purpose)) < 0 ||
	    (r = proto_arg_string(args, "purpose_code", false, POLICY_PURPOSE_CODE_MAX,
				  &purpose_code)) < 0 ||
	    (r = proto_arg_string(args, "override_consent", false, POLICY_REASON_MAX,
				  &override)) < 0 ||
	    (r = time_arg(args, "not_before", false, &not_before)) < 0 ||
	    (r = time_arg(args, "expires", true, &expires)) < 0)
		return r;
	if (strcmp(kind, "user") == 0)
		g.kind = POLICY_USER;
	else if (strcmp(kind, "group") == 0)
		g.kind = POLICY_GROUP;
	else
		return err_set(-EINVAL, "principal_kind must be \"user\" or \"group\"");
	if (!*purpose)
		return err_set(-EINVAL, "a grant needs a purpose");
	if ((r = policy_purpose_parse(purpose_code, &pp)) < 0)
		return r;
	if (expires <= now)
		return err_set(-EINVAL, "the expiry is in the past");
	if (expires <= not_before)
		return err_set(-EINVAL, "the expiry is not after not_before");
	daemon_config(c->d, cfg);
	max_days = cfg->max_grant_days ? cfg->max_grant_days : CONFIG_MAX_GRANT_DAYS_DEFAULT;
	if (expires - now > max_days * 86400)
		return err_set(-EINVAL, "the expiry is more than %lld days away, the longest this "
			       "store allows (max_grant_days in enclave.conf)", (long long)max_days);
	if ((r = config_principal_resolve(g.kind, principal, &g.principal_id, g.principal)) < 0 ||
	    (r = get_dataset(c, dataset, &ds)) < 0)
		return r;
	if (version && store_version_get(c->d->st, ds.id, (uint32_t)version, &vi) < 0)
		return err_set(-ENOENT, "dataset \"%s\" has no version %llu", dataset,
			       (unsigned long long)version);
	r = check_purpose(c, ds.id, ds.name, &pp, purpose_code, expires, override);
	if (r < 0)
		return r;
	g.dataset_id = ds.id;
	snprintf(g.dataset, sizeof(g.dataset), "%s", ds.name);
	g.version = (uint32_t)version;
	snprintf(g.purpose, sizeof(g.purpose), "%s", purpose);
	snprintf(g.purpose_code, sizeof(g.purpose_code), "%s", purpose_code);
	snprintf(g.consent_override, sizeof(g.consent_override), "%s", override);
	g.not_before = not_before;
	g.expires = expires;
	g.granted_by_uid = c->who.uid;
	snprintf(g.granted_by, sizeof(g.granted_by), "%s", subject_name(&c->who, uidbuf));
	g.created = now;
	g.approvals_required = cfg->approvals;
	/* Every check has passed: a dry run says what would be granted, and records nothing (the
	 * grant has no id yet). */
	if (dry_run) {
		json_t *gj;

		g.id = 1;	/* any valid id, to write the grant; shown as null */
		gj = policy_grant_to_json(&g);
		if (!gj || grant_state_json(c, &g, now, gj) < 0 ||
		    json_object_set_new(gj, "id", json_null()) < 0) {
			json_decref(gj);
			return -ENOMEM;
		}
		*ret = json_pack("{s:o, s:b}", "grant", gj, "dry_run", 1);
		return *ret ? 0 : -ENOMEM;
	}
	r = grants_add(c->d->grants, c->d->log, &c->who, &g);
	if (r < 0)
		return r;
	/* An active grant changes what the mount may show: ask the kernel to look again. */
	if (c->d->fs && !g.approvals_required)
		fusefs_invalidate_dataset(c->d->fs, g.dataset_id, g.dataset);
	/* The grant in its one shape (docs/json/enclavectl.schema.json "grant"): state and
	 * approvals inside it, nothing about it beside it. */
	{
		json_t *gj = policy_grant_to_json(&g);

		if (!gj || grant_state_json(c, &g, time(NULL), gj) < 0) {
			json_decref(gj);
			return -ENOMEM;
		}
		*ret = json_pack("{s:o}", "grant", gj);
	}
	if (!*ret)
		return -ENOMEM;
	/* A grant that nobody may approve stays pending until it expires: say so now. */
	if (g.approvals_required) {
		size_t n = 0;
		char w[256];

		if (eligible_approvers(c, &g, &n) == 0) {
			json_object_set_new(*ret, "eligible_approvers", json_integer((json_int_t)n));
			if (n < g.approvals_required) {
				snprintf(w, sizeof(w), "grant %llu needs %u approval(s), but only %zu "
					 "steward(s) other than its requester and grantee exist: "
					 "it cannot come into force until more stewards are "
					 "configured (enclave.conf)", (unsigned long long)g.id,
					 g.approvals_required, n);
				json_object_set_new(*ret, "warning", json_string(w));
			}
		}
	}
	return 0;
}

int op_grant_approve(struct conn *c, const json_t *args, json_t **ret)
{
	struct policy_grant g;
	uint64_t id;
	int r;

	if ((r = request_id_arg(args, &id)) < 0)
		return r;
	r = grants_approve(c->d->grants, c->d->log, &c->who, id, time(NULL), &g);
	if (r < 0)
		return r;
	if (c->d->fs && g.approvals >= g.approvals_required)
		fusefs_invalidate_dataset(c->d->fs, g.dataset_id, g.dataset);
	/* The effective state: an approved grant may still be suspended or not yet valid. The
	 * grant has its one shape (state and approvals inside, docs/json/enclavectl.schema.json),
	 * as grant.list and grant.show give it; nothing about it is repeated beside it. */
	{
		json_t *gj = policy_grant_to_json(&g);

		if (!gj || grant_state_json(c, &g, time(NULL), gj) < 0) {
			json_decref(gj);
			return -ENOMEM;
		}
		*ret = json_pack("{s:o}", "grant", gj);
	}
	return *ret ? 0 : -ENOMEM;
}

static const char *const grant_states[] = { "active", "pending_approval", "not_yet_valid",
					    "suspended", "expired", "revoked", NULL };

int op_grant_list(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dataset", "all", "user", "group", "state", NULL };
	_cleanup_free_ struct policy_grant *g = NULL;
	_cleanup_free_ struct policy_revocation *rv = NULL;
	_cleanup_free_ struct policy_subject *who = NULL;
	const char *dataset = NULL, *user = NULL, *group = NULL, *want = NULL;
	struct store_dataset_info ds = { 0 };
	char gname[POLICY_NAME_MAX + 1];
	uint32_t gid = 0;
	bool all = false, known_state = false;
	int64_t now = time(NULL);
	json_t *arr;
	size_t n;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "dataset", false, STORE_DATASET_NAME_MAX, &dataset)) < 0 ||
	    (r = proto_arg_bool(args, "all", false, &all)) < 0 ||
	    (r = proto_arg_string(args, "user", false, POLICY_NAME_MAX, &user)) < 0 ||
	    (r = proto_arg_string(args, "group", false, POLICY_NAME_MAX, &group)) < 0 ||
	    (r = proto_arg_string(args, "state", false, 32, &want)) < 0)
		return r;
	for (size_t i = 0; want && grant_states[i]; i++)
		known_state |= strcmp(want, grant_states[i]) == 0;
	if (want && !known_state)
		return err_set(-EINVAL, "state \"%.32s\" is not one of active, pending_approval, "
			       "not_yet_valid, suspended, expired, revoked", want);
	/* Filters name things that exist: a typo is an error, not an empty list. */
	if (dataset && (r = get_dataset(c, dataset, &ds)) < 0)
		return r;
	if (user) {
		who = calloc(1, sizeof(*who));
		if (!who)
			return -ENOMEM;
		if ((r = subject_of(user, who)) < 0)
			return r;
	}
	if (group && (r = config_principal_resolve(POLICY_GROUP, group, &gid, gname)) < 0)
		return r;
	if ((r = grants_snapshot(c->d->grants, &g, &rv, &n)) < 0)
		return r;
	arr = json_array();
	if (!arr)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *state = grant_state(c, &g[i], now, NULL);
		json_t *o;

		if (dataset && g[i].dataset_id != ds.id)
			continue;
		/* --user: the grants that reach the user, its own and its groups'. */
		if (who && !(g[i].kind == POLICY_USER ? g[i].principal_id == who->uid
						      : policy_subject_in_group(who,
										g[i].principal_id)))
			continue;
		if (group && !(g[i].kind == POLICY_GROUP && g[i].principal_id == gid))
			continue;
		if (want ? strcmp(state, want) != 0
			 : !all && strcmp(state, "active") != 0 &&
				   strcmp(state, "not_yet_valid") != 0 &&
				   strcmp(state, "pending_approval") != 0 &&
				   strcmp(state, "suspended") != 0)
			continue;
		o = policy_grant_to_json(&g[i]);
		if (!o || grant_state_json(c, &g[i], now, o) < 0 ||
		    (rv[i].grant_id &&
		     json_object_set_new(o, "revocation", policy_revocation_to_json(&rv[i])) < 0) ||
		    json_array_append_new(arr, o) < 0) {
			json_decref(o);
			json_decref(arr);
			return -ENOMEM;
		}
	}
	*ret = json_pack("{s:o}", "grants", arr);
	return *ret ? 0 : -ENOMEM;
}

/* One entry of a grant's history. */
static int history_add(json_t *h, int64_t at, const char *event, const char *by,
		       const char *detail)
{
	json_t *e = json_pack("{s:o, s:s}", "at", jtime(at), "event", event);

	if (!e || (by && json_object_set_new(e, "by", json_string(by)) < 0) ||
	    (detail && json_object_set_new(e, "detail", json_string(detail)) < 0) ||
	    json_array_append_new(h, e) < 0)
		return -ENOMEM;
	return 0;
}

static int history_cmp(const void *a, const void *b)
{
	const char *x = json_string_value(json_object_get(*(json_t *const *)a, "at"));
	const char *y = json_string_value(json_object_get(*(json_t *const *)b, "at"));

	return strcmp(x ? x : "", y ? y : "");
}

int op_grant_show(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "id", NULL };
	_cleanup_free_ struct policy_grant *g = NULL;
	_cleanup_free_ struct policy_revocation *rv = NULL;
	_cleanup_free_ struct policy_approval *ap = NULL;
	_cleanup_free_ json_t **sorted = NULL;
	struct policy_dataset dp;
	int64_t now = time(NULL), complete;
	json_t *o = NULL, *aps = NULL, *h = NULL;
	size_t n, nap, i;
	uint64_t id;
	uint32_t code = 0;
	char detail[512];
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_u64(args, "id", true, UINT64_MAX >> 1, &id)) < 0 ||
	    (r = grants_snapshot(c->d->grants, &g, &rv, &n)) < 0)
		return r;
	for (i = 0; i < n && g[i].id != id; i++)
		;
	if (i == n)
		return err_set(-ENOENT, "no grant with id %llu", (unsigned long long)id);
	if ((r = grants_approvals(c->d->grants, id, &ap, &nap)) < 0)
		return r;
	o = policy_grant_to_json(&g[i]);
	aps = json_array();
	h = json_array();
	if (!o || !aps || !h || grant_state_json(c, &g[i], now, o) < 0)
		goto nomem;
	grant_state(c, &g[i], now, &code);
	/* The history, from the records: requested, each approval, valid from, suspended by the
	 * dataset's consent codes (when they were last amended), revoked, expires or expired. */
	if (history_add(h, g[i].created, "requested", g[i].granted_by, NULL) < 0)
		goto nomem;
	complete = g[i].approvals_required ? 0 : g[i].created;
	for (size_t k = 0; k < nap; k++) {
		if (json_array_append_new(aps, policy_approval_to_json(&ap[k])) < 0 ||
		    history_add(h, ap[k].at, "approved", ap[k].by, NULL) < 0)
			goto nomem;
		if (k + 1 == g[i].approvals_required)
			complete = ap[k].at;
	}
	if (complete && history_add(h, MAX(complete, g[i].not_before),
				    MAX(complete, g[i].not_before) > now ? "starts" : "valid_from",
				    NULL, NULL) < 0)
		goto nomem;
	if (code && grants_dataset_get(c->d->grants, g[i].dataset_id, &dp) == 0) {
		snprintf(detail, sizeof(detail), "consent code %s (%s) of the dataset excludes "
			 "purpose \"%s\"", policy_duo_name(code), policy_duo_id(code),
			 g[i].purpose_code);
		if (history_add(h, dp.updated, "suspended", dp.updated_by, detail) < 0)
			goto nomem;
	}
	if (rv[i].grant_id &&
	    (history_add(h, rv[i].at, "revoked", rv[i].by, rv[i].reason) < 0 ||
	     json_object_set_new(o, "revocation", policy_revocation_to_json(&rv[i])) < 0))
		goto nomem;
	if (history_add(h, g[i].expires, g[i].expires > now ? "expires" : "expired", NULL,
			NULL) < 0)
		goto nomem;
	/* In time order (RFC 3339 UTC text sorts as time); equal times keep their order. */
	sorted = calloc(MAX(json_array_size(h), 1), sizeof(*sorted));
	if (!sorted)
		goto nomem;
	for (size_t k = 0; k < json_array_size(h); k++)
		sorted[k] = json_array_get(h, k);
	for (size_t k = 1; k < json_array_size(h); k++)
		for (size_t m = k; m > 0 && history_cmp(&sorted[m - 1], &sorted[m]) > 0; m--) {
			json_t *t = sorted[m];

			sorted[m] = sorted[m - 1];
			sorted[m - 1] = t;
		}
	{
		json_t *hs = json_array();

		for (size_t k = 0; hs && k < json_array_size(h); k++)
			if (json_array_append(hs, sorted[k]) < 0)
				json_decref(hs), hs = NULL;
		json_decref(h);
		h = hs;
		if (!h)
			goto nomem;
	}
	*ret = json_pack("{s:o, s:o, s:o}", "grant", o, "approvals", aps, "history", h);
	return *ret ? 0 : -ENOMEM;
nomem:
	json_decref(o);
	json_decref(aps);
	json_decref(h);
	return -ENOMEM;
}

int op_grant_revoke(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "id", "reason", NULL };
	struct policy_revocation rv;
	struct policy_grant g;
	const char *reason = "";
	uint64_t id;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_u64(args, "id", true, UINT64_MAX >> 1, &id)) < 0 ||
	    (r = proto_arg_string(args, "reason", false, POLICY_REASON_MAX, &reason)) < 0)
		return r;
	r = grants_revoke(c->d->grants, c->d->log, &c->who, id, reason, time(NULL), &g, &rv);
	if (r < 0)
		return r;
	/* The table already refuses; now drop what the kernel cached so it asks again. */
	if (c->d->fs)
		fusefs_invalidate_dataset(c->d->fs, g.dataset_id, g.dataset);
	*ret = json_pack("{s:o}", "revocation", policy_revocation_to_json(&rv));
	return *ret ? 0 : -ENOMEM;
}

/* ---- Deny rules ------------------------------------------------------------------------------ */

/* After a deny change: drop what the kernel cached of the dataset, or of every dataset. */
static int invalidate_one(void *ctx, const struct store_dataset_info *info)
{
	fusefs_invalidate_dataset(ctx, info->id, info->name);
	return 0;
}

static void invalidate_deny(struct conn *c, const struct policy_deny *x)
{
	if (!c->d->fs)
		return;
	if (x->dataset_id)
		fusefs_invalidate_dataset(c->d->fs, x->dataset_id, x->dataset);
	else
		store_dataset_foreach(c->d->st, invalidate_one, c->d->fs);
}

/* "active", "removal_pending" (asked, waiting for approvals) or "removed". */
static const char *deny_state(struct conn *c, const struct policy_deny *x)
{
	struct policy_deny_removal rm;
	struct policy_approval *ap = NULL;
	size_t n;

	if (x->removed_at)
		return "removed";
	if (grants_deny_removal(c->d->grants, x->id, &rm, &ap, &n) == 0) {
		free(ap);
		return "removal_pending";
	}
	return "active";
}

/* A deny rule in its one shape (docs/json/enclavectl.schema.json "deny_rule"): the rule as
 * docs/POLICY.md writes it, plus "state" and, once removed, "removed_at". A new reference or
 * NULL (out of memory). */
static json_t *deny_view(struct conn *c, const struct policy_deny *x)
{
	json_t *o = policy_deny_to_json(x);

	if (!o || json_object_set_new(o, "state", json_string(deny_state(c, x))) < 0 ||
	    (x->removed_at && json_object_set_new(o, "removed_at", jtime(x->removed_at)) < 0)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int op_deny_add(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "principal_kind", "principal", "dataset", "reason",
					     "dry_run", NULL };
	struct policy_deny x = { 0 };
	struct store_dataset_info ds;
	const char *kind, *principal = NULL, *dataset = NULL, *reason;
	bool dry_run = false;
	char uidbuf[16];
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_bool(args, "dry_run", false, &dry_run)) < 0 ||
	    (r = proto_arg_string(args, "principal_kind", true, 8, &kind)) < 0 ||
	    (r = proto_arg_string(args, "principal", false, POLICY_NAME_MAX, &principal)) < 0 ||
	    (r = proto_arg_string(args, "dataset", false, STORE_DATASET_NAME_MAX, &dataset)) < 0 ||
	    (r = proto_arg_string(args, "reason", true, POLICY_REASON_MAX, &reason)) < 0)
		return r;
	if (strcmp(kind, "user") == 0)
		x.kind = POLICY_USER;
	else if (strcmp(kind, "group") == 0)
		x.kind = POLICY_GROUP;
	else if (strcmp(kind, "all") == 0)
		x.kind = POLICY_EVERYONE;
	else
		return err_set(-EINVAL, "principal_kind must be \"user\", \"group\" or \"all\"");
	if ((x.kind == POLICY_EVERYONE) != !principal)
		return err_set(-EINVAL, "a deny rule names a principal, or has principal_kind "
			       "\"all\" and none");
	if (!*reason)
		return err_set(-EINVAL, "a deny rule needs a reason");
	if (principal &&
	    (r = config_principal_resolve(x.kind, principal, &x.principal_id, x.principal)) < 0)
		return r;
	if (dataset) {
		if ((r = get_dataset(c, dataset, &ds)) < 0)
			return r;
		x.dataset_id = ds.id;
		snprintf(x.dataset, sizeof(x.dataset), "%s", ds.name);
	}
	snprintf(x.reason, sizeof(x.reason), "%s", reason);
	x.by_uid = c->who.uid;
	snprintf(x.by, sizeof(x.by), "%s", subject_name(&c->who, uidbuf));
	x.created = time(NULL);
	/* A dry run: the rule as it would be (no id yet), nothing recorded. */
	if (dry_run) {
		json_t *xj;

		x.id = 1;	/* any valid id, to write the rule; shown as null */
		xj = deny_view(c, &x);
		if (!xj || json_object_set_new(xj, "id", json_null()) < 0) {
			json_decref(xj);
			return -ENOMEM;
		}
		*ret = json_pack("{s:o, s:b}", "rule", xj, "dry_run", 1);
		return *ret ? 0 : -ENOMEM;
	}
	r = grants_deny_add(c->d->grants, c->d->log, &c->who, &x);
	if (r < 0)
		return r;
	invalidate_deny(c, &x);
	*ret = json_pack("{s:o}", "rule", deny_view(c, &x));
	return *ret ? 0 : -ENOMEM;
}

int op_deny_list(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "all", NULL };
	_cleanup_free_ struct policy_deny *x = NULL;
	bool all = false;
	json_t *arr;
	size_t n;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_bool(args, "all", false, &all)) < 0 ||
	    (r = grants_deny_snapshot(c->d->grants, &x, &n)) < 0)
		return r;
	arr = json_array();
	if (!arr)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *o;

		if (x[i].removed_at && !all)
			continue;
		o = deny_view(c, &x[i]);
		if (!o || json_array_append_new(arr, o) < 0) {
			json_decref(o);
			json_decref(arr);
			return -ENOMEM;
		}
	}
	*ret = json_pack("{s:o}", "rules", arr);
	return *ret ? 0 : -ENOMEM;
}

/* {"rule": DENY + {"state", "removed_at"?}, "removal": REMOVAL?, "approvals": [APPROVAL]} */
static int deny_json(struct conn *c, uint64_t id, json_t **ret)
{
	_cleanup_free_ struct policy_deny *x = NULL;
	_cleanup_free_ struct policy_approval *ap = NULL;
	struct policy_deny_removal rm;
	json_t *o = NULL, *aps = NULL;
	size_t n, nap = 0, i;
	bool asked;
	int r;

	if ((r = grants_deny_snapshot(c->d->grants, &x, &n)) < 0)
		return r;
	for (i = 0; i < n && x[i].id != id; i++)
		;
	if (i == n)
		return err_set(-ENOENT, "no deny rule with id %llu", (unsigned long long)id);
	r = grants_deny_removal(c->d->grants, id, &rm, &ap, &nap);
	if (r < 0 && r != -ENOENT)
		return r;
	asked = r == 0;
	o = deny_view(c, &x[i]);
	aps = json_array();
	if (!o || !aps)
		goto nomem;
	for (size_t k = 0; k < nap; k++)
		if (json_array_append_new(aps, policy_approval_to_json(&ap[k])) < 0)
			goto nomem;
	*ret = json_pack("{s:o, s:o}", "rule", o, "approvals", aps);
	if (!*ret)
		return -ENOMEM;
	if (asked && json_object_set_new(*ret, "removal", policy_deny_removal_to_json(&rm)) < 0) {
		json_decref(*ret);
		return -ENOMEM;
	}
	return 0;
nomem:
	json_decref(o);
	json_decref(aps);
	return -ENOMEM;
}

int op_deny_show(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "id", NULL };
	uint64_t id;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_u64(args, "id", true, UINT64_MAX >> 1, &id)) < 0)
		return r;
	return deny_json(c, id, ret);
}

int op_deny_remove(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "id", "reason", NULL };
	struct policy_deny x;
	const char *reason = NULL;
	uint64_t id;
	uint32_t approvals;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_u64(args, "id", true, UINT64_MAX >> 1, &id)) < 0 ||
	    (r = proto_arg_string(args, "reason", true, POLICY_REASON_MAX, &reason)) < 0)
		return r;
	if (!*reason)
		return err_set(-EINVAL, "removing a deny rule needs a reason");
	/* Lifting a rule gives access back: the store's four-eyes rule applies as to grants. */
	{
		struct config *cfg = malloc(sizeof(*cfg));

		if (!cfg)
			return -ENOMEM;
		daemon_config(c->d, cfg);
		approvals = cfg->approvals;
		free(cfg);
	}
	r = grants_deny_remove(c->d->grants, c->d->log, &c->who, id, reason, approvals,
			       time(NULL), &x);
	if (r < 0)
		return r;
	if (x.removed_at)
		invalidate_deny(c, &x);
	return deny_json(c, id, ret);
}

int op_deny_approve(struct conn *c, const json_t *args, json_t **ret)
{
	struct policy_deny x;
	uint64_t id;
	int r;

	if ((r = request_id_arg(args, &id)) < 0)
		return r;
	r = grants_deny_approve(c->d->grants, c->d->log, &c->who, id, time(NULL), &x);
	if (r < 0)
		return r;
	if (x.removed_at)
		invalidate_deny(c, &x);
	return deny_json(c, id, ret);
}

/* ---- Why? ------------------------------------------------------------------------------------ */

/* The subject a user name or uid stands for, with its groups from NSS. A uid without a passwd
 * entry is a subject of its own, with no name and no groups (as `grant request --user UID`
 * accepts it): only user grants and rules can name it. */
static int subject_of(const char *user, struct policy_subject *ret)
{
	char buf[16384];
	struct passwd pw, *res = NULL;
	bool numeric = user[0] >= '0' && user[0] <= '9';
	unsigned long long v = 0;
	char *end;
	int r;

	if (numeric) {
		errno = 0;
		v = strtoull(user, &end, 10);
		if (errno || *end || v >= UINT32_MAX)
			return err_set(-EINVAL, "bad user id \"%.32s\"", user);
		r = getpwuid_r((uid_t)v, &pw, buf, sizeof(buf), &res);
		if (r == 0 && !res) {
			memset(ret, 0, sizeof(*ret));
			ret->uid = (uint32_t)v;
			return 0;
		}
	} else {
		r = getpwnam_r(user, &pw, buf, sizeof(buf), &res);
	}
	if (r || !res)
		return err_set(-ESRCH, "no such user \"%.64s\"", user);
	r = policy_subject_lookup(res->pw_uid, res->pw_gid, ret);
	if (r < 0)
		return err_set(r, "user \"%.64s\": cannot read its groups", user);
	return 0;
}

/* The audit record of a check: who asked (user, uid), about whom, and the answer. */
/* Whether an unprivileged caller's check of itself is recorded in full (fusefs_check_admit()):
 * the question is the dataset (by id, and by name for one that does not exist), the version and
 * the whole answer. */
static bool check_admit(struct conn *c, const struct policy_subject *who,
			const struct store_dataset_info *ds, uint32_t version,
			const struct policy_decision *d)
{
	char key[STORE_DATASET_NAME_MAX + 128];
	int n = snprintf(key, sizeof(key), "%llu/%s/%u/%d/%llu/%llu/%u",
			 (unsigned long long)ds->id, ds->name, version, (int)d->reason,
			 (unsigned long long)d->grant_id, (unsigned long long)d->rule_id,
			 (unsigned)d->code);

	if (n < 0 || (size_t)n >= sizeof(key))
		return true;
	return fusefs_check_admit(c->d->fs, who->uid, who->user, key, (size_t)n);
}

static int audit_check(struct conn *c, const struct policy_subject *who,
		       const struct store_dataset_info *ds, uint32_t version,
		       const struct policy_decision *d)
{
	json_t *rec = json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:s}", "event", "access_check",
				"dataset", ds->name, "dataset_id", (json_int_t)ds->id, "version",
				(json_int_t)version, "checked_uid", (json_int_t)who->uid,
				"decision", d->reason == POLICY_ALLOW ? "allow" : "deny", "reason",
				policy_reason_name(d->reason));
	int r;

	if (!rec || daemon_audit_subject(rec, &c->who) < 0 ||
	    json_object_set_new(rec, "checked_user", audit_string(who->user)) < 0 ||
	    (d->grant_id &&
	     json_object_set_new(rec, "grant_id", json_integer((json_int_t)d->grant_id)) < 0) ||
	    (d->rule_id &&
	     json_object_set_new(rec, "rule_id", json_integer((json_int_t)d->rule_id)) < 0)) {
		json_decref(rec);
		return -ENOMEM;
	}
	r = audit_append(c->d->log, rec, NULL);
	json_decref(rec);
	return r;
}

int op_access_check(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "user", "dataset", "version", NULL };
	_cleanup_free_ struct policy_grant *g = NULL;
	_cleanup_free_ struct policy_revocation *rv = NULL;
	_cleanup_free_ struct policy_deny *x = NULL;
	_cleanup_free_ struct policy_subject *who = NULL;
	struct store_dataset_info ds = { 0 };
	struct store_version_info vi;
	struct policy_decision d;
	const char *user = NULL, *dataset;
	bool privileged = c->roles & (ROLE_STEWARD | ROLE_AUDITOR);
	uint64_t version = 0;
	json_t *o, *groups;
	size_t n, nx;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "user", false, POLICY_NAME_MAX, &user)) < 0 ||
	    (r = proto_arg_string(args, "dataset", true, STORE_DATASET_NAME_MAX, &dataset)) < 0 ||
	    (r = proto_arg_u64(args, "version", false, UINT32_MAX, &version)) < 0)
		return r;
	who = calloc(1, sizeof(*who));
	if (!who)
		return -ENOMEM;
	/* Without "user", the caller asks about itself, with the groups it connected with. */
	if (user && (r = subject_of(user, who)) < 0)
		return r;
	if (!user)
		*who = c->who;
	/* Anyone may ask why they are refused; asking about someone else is a steward's or an
	 * auditor's business. */
	if (who->uid != c->who.uid && !privileged)
		return err_set(-EACCES, "access.check of another user needs the steward or auditor "
			       "role, which uid %u (%s) does not have in enclave.conf; anyone may "
			       "check their own access (without --user)", c->who.uid,
			       c->who.user[0] ? c->who.user : "no name");
	r = get_dataset(c, dataset, &ds);
	if (r == 0 && version && store_version_get(c->d->st, ds.id, (uint32_t)version, &vi) < 0)
		r = err_set(-ENOENT, "dataset \"%s\" has no version %llu (its newest is %u)",
			    ds.name, (unsigned long long)version, ds.latest_version);
	if (r < 0 && privileged)
		return r;
	/* Someone checking only themselves learns no more than the mount shows them: a dataset
	 * or version that does not exist is refused as no_grant, like one they have no grant
	 * for, unless they may read the dataset (and so see its versions anyway). */
	if (r < 0 && r != -ENOENT)
		return r;
	if (r < 0) {
		bool visible = r == -ENOENT && ds.id &&
			       grants_decide(c->d->grants, who, ds.id, POLICY_ALL_VERSIONS,
					     time(NULL)).reason == POLICY_ALLOW;

		if (visible)
			return r;
		if (!ds.id)
			snprintf(ds.name, sizeof(ds.name), "%s", dataset);
		d = (struct policy_decision){ .reason = POLICY_DENY_NO_GRANT };
	} else {
		d = grants_decide(c->d->grants, who, ds.id, (uint32_t)version, time(NULL));
		/* A deny rule on everyone (or on them) must not tell someone no grant names that
		 * the dataset exists: to them it is no_grant, as the mount shows it. */
		if (!privileged && !d.named)
			d = (struct policy_decision){ .reason = POLICY_DENY_NO_GRANT };
	}
	/* Recorded before it is answered, as every other decision is. A caller without a role
	 * asking about itself could repeat it as fast as it likes: its checks go through the
	 * mount's refusal limiter, one record per distinct question (what was asked and the
	 * answer) per window, the rest counted in the window's refusals_suppressed record. */
	if (privileged || !c->d->fs || check_admit(c, who, &ds, (uint32_t)version, &d))
		r = audit_check(c, who, &ds, (uint32_t)version, &d);
	else
		r = 0;
	if (r < 0)
		return r;
	groups = json_array();
	for (size_t i = 0; groups && i < who->ngids; i++)
		json_array_append_new(groups, json_integer(who->gids[i]));
	o = json_pack("{s:s, s:I, s:o, s:s, s:I, s:s, s:s, s:s}", "user", who->user, "uid",
		      (json_int_t)who->uid, "gids", groups, "dataset", ds.name, "version",
		      (json_int_t)version, "decision", d.reason == POLICY_ALLOW ? "allow" : "deny",
		      "reason", policy_reason_name(d.reason), "text", policy_reason_text(d.reason));
	if (!o)
		return -ENOMEM;
	if (d.grant_id && grants_snapshot(c->d->grants, &g, &rv, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			if (g[i].id != d.grant_id)
				continue;
			/* The grant in its one shape: its state, approvals and, when revoked,
			 * who revoked it, when and why ("revocation") inside it. */
			json_t *gj = policy_grant_to_json(&g[i]);

			if (!gj || grant_state_json(c, &g[i], time(NULL), gj) < 0 ||
			    (rv[i].grant_id &&
			     json_object_set_new(gj, "revocation",
						 policy_revocation_to_json(&rv[i])) < 0)) {
				json_decref(gj);
				json_decref(o);
				return -ENOMEM;
			}
			if (json_object_set_new(o, "grant", gj) < 0) {
				json_decref(o);
				return -ENOMEM;
			}
		}
	}
	if (d.rule_id && grants_deny_snapshot(c->d->grants, &x, &nx) == 0) {
		for (size_t i = 0; i < nx; i++)
			if (x[i].id == d.rule_id &&
			    json_object_set_new(o, "rule", deny_view(c, &x[i])) < 0) {
				json_decref(o);
				return -ENOMEM;
			}
	}
	if (d.code) {
		json_object_set_new(o, "code", json_string(policy_duo_name(d.code)));
		json_object_set_new(o, "code_id", json_string(policy_duo_id(d.code)));
	}
	*ret = o;
	return 0;
}
