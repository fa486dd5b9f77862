/* control_grant: the grant operations of the control socket (docs/PROTOCOL.md). */
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
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

static const char *subject_name(const struct policy_subject *who, char buf[static 16])
{
	if (who->user[0])
		return who->user;
	snprintf(buf, 16, "%u", who->uid);
	return buf;
}

int op_grant_add(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "principal_kind", "principal", "dataset", "version",
					     "purpose", "not_before", "expires", NULL };
	struct policy_grant g = { 0 };
	struct store_dataset_info ds;
	struct store_version_info vi;
	const char *kind, *principal, *dataset, *purpose;
	int64_t now = time(NULL), not_before = now, expires = 0;
	uint64_t version = 0;
	char uidbuf[16];
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "principal_kind", true, 8, &kind)) < 0 ||
	    (r = proto_arg_string(args, "principal", true, POLICY_NAME_MAX, &principal)) < 0 ||
	    (r = proto_arg_string(args, "dataset", true, STORE_DATASET_NAME_MAX, &dataset)) < 0 ||
	    (r = proto_arg_u64(args, "version", false, UINT32_MAX, &version)) < 0 ||
	    (r = proto_arg_string(args, "purpose", true, POLICY_PURPOSE_MAX, &purpose)) < 0 ||
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
	if (expires <= now)
		return err_set(-EINVAL, "the expiry is in the past");
	if (expires <= not_before)
		return err_set(-EINVAL, "the expiry is not after not_before");
	if ((r = config_principal_resolve(g.kind, principal, &g.principal_id, g.principal)) < 0 ||
	    (r = get_dataset(c, dataset, &ds)) < 0)
		return r;
	if (version && store_version_get(c->d->st, ds.id, (uint32_t)version, &vi) < 0)
		return err_set(-ENOENT, "dataset \"%s\" has no version %llu", dataset,
			       (unsigned long long)version);
	g.dataset_id = ds.id;
	snprintf(g.dataset, sizeof(g.dataset), "%s", ds.name);
	g.version = (uint32_t)version;
	snprintf(g.purpose, sizeof(g.purpose), "%s", purpose);
	g.not_before = not_before;
	g.expires = expires;
	g.granted_by_uid = c->who.uid;
	snprintf(g.granted_by, sizeof(g.granted_by), "%s", subject_name(&c->who, uidbuf));
	g.created = now;
	r = grants_add(c->d->grants, c->d->log, &c->who, &g);
	if (r < 0)
		return r;
	*ret = json_pack("{s:o}", "grant", policy_grant_to_json(&g));
	return *ret ? 0 : -ENOMEM;
}

static const char *grant_state(const struct policy_grant *g, int64_t now)
{
	if (g->revoked_at)
		return "revoked";
	if (now >= g->expires)
		return "expired";
	if (now < g->not_before)
		return "not_yet_valid";
	return "active";
}

int op_grant_list(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dataset", "all", NULL };
	_cleanup_free_ struct policy_grant *g = NULL;
	_cleanup_free_ struct policy_revocation *rv = NULL;
	const char *dataset = NULL;
	bool all = false;
	int64_t now = time(NULL);
	json_t *arr;
	size_t n;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "dataset", false, STORE_DATASET_NAME_MAX, &dataset)) < 0 ||
	    (r = proto_arg_bool(args, "all", false, &all)) < 0 ||
	    (r = grants_snapshot(c->d->grants, &g, &rv, &n)) < 0)
		return r;
	arr = json_array();
	if (!arr)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *state = grant_state(&g[i], now);
		json_t *o;

		if (dataset && strcmp(dataset, g[i].dataset) != 0)
			continue;
		if (!all && strcmp(state, "active") != 0 && strcmp(state, "not_yet_valid") != 0)
			continue;
		o = policy_grant_to_json(&g[i]);
		if (!o || json_object_set_new(o, "state", json_string(state)) < 0 ||
		    (rv[i].grant_id &&
		     json_object_set_new(o, "revocation", policy_revocation_to_json(&rv[i])) < 0) ||
		    json_array_append_new(arr, o) < 0) {
			json_decref(arr);
			return -ENOMEM;
		}
	}
	*ret = json_pack("{s:o}", "grants", arr);
	return *ret ? 0 : -ENOMEM;
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
