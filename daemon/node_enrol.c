/* node_enrol: compute nodes enrolled in the store, as requests of the approval mechanism
 * (approvals.h; docs/DEPLOYMENT.md section 7; docs/POLICY.md "Nodes").
 *
 *   'k' || be64 id                  a node's enrolment request: its name and public keys
 *   'l' || be64 id || be32 uid      an approval of it by another steward
 *   'o' || be64 id                  a node's removal (a request of its own kind that needs no
 *                                   approval: removing a node only takes access away)
 *
 * Enrolling gives a machine every key of the store (sealed to it, node_bundle.c), so it takes the
 * store's approval rule like a grant; a removal is carried out at once, like a revocation. A node
 * is enrolled from its last approval until its removal. The records are policy records like any
 * other (bound to the signed log through the policy digest), so the nodes read them too: a node
 * that finds itself removed refuses every open (POLICY_DENY_NODE_REMOVED).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "daemon/grants_internal.h"

#define NODES_MAX 4096u

static ssize_t find_node(const struct grants *gs, uint64_t id)
{
	for (size_t i = 0; i < gs->nnd; i++)
		if (gs->nd[i].id == id)
			return (ssize_t)i;
	return -1;
}

bool grants_node_is_enrolled(const struct grants_node *x)
{
	return !x->removed_at && x->approvals >= x->approvals_required;
}

const char *grants_node_state(const struct grants_node *x)
{
	if (x->removed_at)
		return "removed";
	return x->approvals >= x->approvals_required ? "enrolled" : "pending_approval";
}

static json_t *hex_json(const uint8_t *p, size_t n)
{
	char h[2 * 32 + 1];

	sodium_bin2hex(h, sizeof(h), p, n);
	return json_string(h);
}

static int hex_get(const char *s, uint8_t out[static 32])
{
	size_t got = 0;

	if (!s || strlen(s) != 64 || sodium_hex2bin(out, 32, s, 64, NULL, &got, NULL) != 0 ||
	    got != 32)
		return -EBADMSG;
	return 0;
}

/* ---- Enrolment: 'k' the request, 'l' an approval ------------------------------------------- */

static json_t *node_to_json(const struct grants_node *x)
{
	return json_pack("{s:I, s:s, s:o, s:o, s:I, s:s, s:I, s:I}", "id", (json_int_t)x->id,
			 "name", x->name, "sign_pk", hex_json(x->pub.sign_pk, 32), "box_pk",
			 hex_json(x->pub.box_pk, 32), "by_uid", (json_int_t)x->by_uid, "by", x->by,
			 "at", (json_int_t)x->at, "approvals_required",
			 (json_int_t)x->approvals_required);
}

static int node_from_json(const json_t *j, struct grants_node *ret)
{
	struct grants_node x = { 0 };
	json_int_t id = 0, uid = -1, at = 0, req = -1;
	const char *name = NULL, *spk = NULL, *bpk = NULL, *by = NULL;
	json_error_t e;

	if (json_unpack_ex((json_t *)j, &e, JSON_STRICT, "{s:I, s:s, s:s, s:s, s:I, s:s, s:I, s:I}",
			   "id", &id, "name", &name, "sign_pk", &spk, "box_pk", &bpk, "by_uid",
			   &uid, "by", &by, "at", &at, "approvals_required", &req) < 0 ||
	    id <= 0 || uid < 0 || uid > UINT32_MAX || at <= 0 || req < 0 ||
	    req > POLICY_APPROVALS_MAX || !node_name_valid(name) || strlen(by) > POLICY_NAME_MAX ||
	    hex_get(spk, x.pub.sign_pk) < 0 || hex_get(bpk, x.pub.box_pk) < 0)
		return err_set(-EBADMSG, "malformed node enrolment");
	x.id = (uint64_t)id;
	snprintf(x.name, sizeof(x.name), "%s", name);
	x.by_uid = (uint32_t)uid;
	snprintf(x.by, sizeof(x.by), "%s", by);
	x.at = at;
	x.approvals_required = (uint32_t)req;
	if (x.approvals_required == 0)
		x.enrolled_at = x.at;
	*ret = x;
	return 0;
}

static int add_missing(struct grants *gs, uint64_t id)
{
	(void)gs;
	return err_set(-ENOENT, "no node enrolment with id %llu", (unsigned long long)id);
}

static int add_before(struct grants *gs, const struct pending *p, const struct policy_subject *by,
		      int64_t now)
{
	const struct grants_node *x = &gs->nd[find_node(gs, p->id)];

	(void)by, (void)now;
	if (x->removed_at)
		return err_set(-ESTALE, "node %s (enrolment %llu) was removed", x->name,
			       (unsigned long long)x->id);
	return 0;
}

/* The approval's record names the node, and whether it completes the enrolment, in the clear
 * (`audit verify` takes the node log's key from these records). p: before this approval. */
static int add_describe(struct grants *gs, const struct pending *p, json_t *rec)
{
	const struct grants_node *x = &gs->nd[find_node(gs, p->id)];
	bool complete = p->approvals + 1 >= p->required;

	if (json_object_set_new(rec, "node", json_string(x->name)) < 0 ||
	    json_object_set_new(rec, "node_state", json_string(complete ? "enrolled" :
								 "pending_approval")) < 0)
		return -ENOMEM;
	return 0;
}

static void add_approved(struct grants *gs, const struct pending *p,
			 const struct policy_approval *a)
{
	struct grants_node *x = &gs->nd[find_node(gs, p->id)];

	x->approvals = p->approvals;
	if (x->approvals >= x->approvals_required && !x->enrolled_at)
		x->enrolled_at = a->at;
}

static int add_opened(struct grants *gs, const struct pending *p, void *arg)
{
	int r;

	(void)p;
	r = grants_grow_array((void **)&gs->nd, sizeof(*gs->nd), gs->nnd, &gs->capnd, NODES_MAX,
			      "node enrolments");
	if (r == 0)
		gs->nd[gs->nnd++] = *(const struct grants_node *)arg;
	return r;
}

static int add_load(struct grants *gs, uint64_t id, const json_t *j, struct pending *ret)
{
	struct grants_node x;
	int r;

	if ((r = node_from_json(j, &x)) < 0)
		return r;
	if (x.id != id || find_node(gs, id) >= 0)
		return err_set(-EBADMSG, "holds node enrolment %llu", (unsigned long long)x.id);
	r = add_opened(gs, NULL, &x);
	if (r < 0)
		return r;
	gs->next_id = MAX(gs->next_id, x.id + 1);
	ret->by_uid = x.by_uid;
	ret->at = x.at;
	ret->required = x.approvals_required;
	return 0;
}

const struct approval_kind approval_kind_node_add = {
	.name = "node enrolment",
	.request_noun = "a node enrolment",
	.request_type = 'k',
	.approval_type = 'l',
	.done_type = 0,
	.approve_event = "node_approve",
	.id_field = "node_id",
	.approved_state = "enrolled",
	.done_text = "was carried out already",
	.request_counts = true,
	.missing = add_missing,
	.before = add_before,
	.describe = add_describe,
	.approved = add_approved,
	.opened = add_opened,
	.load = add_load,
};

/* ---- Removal: 'o', a request that needs no approval -------------------------------------------- */

struct node_removal {
	uint64_t id;            /* the removal's own id */
	uint64_t node_id;       /* the enrolment it ends */
	int64_t at;
	uint32_t by_uid;
	char by[POLICY_NAME_MAX + 1];
	char reason[POLICY_REASON_MAX + 1];
};

static int remove_missing(struct grants *gs, uint64_t id)
{
	(void)gs;
	return err_set(-ENOENT, "no node removal with id %llu", (unsigned long long)id);
}

static int remove_describe(struct grants *gs, const struct pending *p, json_t *rec)
{
	(void)gs, (void)p, (void)rec;
	return 0;
}

/* Fold removal x into its enrolment. */
static int removal_apply(struct grants *gs, const struct node_removal *x)
{
	ssize_t i = find_node(gs, x->node_id);

	if (i < 0 || gs->nd[i].removed_at || x->at < gs->nd[i].at)
		return err_set(-EBADMSG, "node removal %llu names no enrolled node",
			       (unsigned long long)x->id);
	gs->nd[i].removed_at = x->at;
	gs->nd[i].removed_by_uid = x->by_uid;
	snprintf(gs->nd[i].removed_by, sizeof(gs->nd[i].removed_by), "%s", x->by);
	snprintf(gs->nd[i].removed_reason, sizeof(gs->nd[i].removed_reason), "%s", x->reason);
	return 0;
}

static int remove_opened(struct grants *gs, const struct pending *p, void *arg)
{
	(void)p;
	return removal_apply(gs, arg);
}

static int remove_load(struct grants *gs, uint64_t id, const json_t *j, struct pending *ret)
{
	struct node_removal x = { 0 };
	json_int_t rid = 0, nid = 0, uid = -1, at = 0;
	const char *by = NULL, *reason = NULL;
	json_error_t e;
	int r;

	if (json_unpack_ex((json_t *)j, &e, JSON_STRICT, "{s:I, s:I, s:I, s:s, s:I, s:s}", "id",
			   &rid, "node_id", &nid, "by_uid", &uid, "by", &by, "at", &at, "reason",
			   &reason) < 0 ||
	    (uint64_t)rid != id || nid <= 0 || uid < 0 || uid > UINT32_MAX || at <= 0 ||
	    strlen(by) > POLICY_NAME_MAX || strlen(reason) == 0 ||
	    strlen(reason) > POLICY_REASON_MAX)
		return err_set(-EBADMSG, "malformed node removal");
	x.id = id;
	x.node_id = (uint64_t)nid;
	x.at = at;
	x.by_uid = (uint32_t)uid;
	snprintf(x.by, sizeof(x.by), "%s", by);
	snprintf(x.reason, sizeof(x.reason), "%s", reason);
	r = removal_apply(gs, &x);
	if (r < 0)
		return r;
	gs->next_id = MAX(gs->next_id, id + 1);
	ret->by_uid = x.by_uid;
	ret->at = x.at;
	ret->required = 0;
	return 0;
}

const struct approval_kind approval_kind_node_remove = {
	.name = "node removal",
	.request_noun = "a node removal",
	.request_type = 'o',
	.approval_type = 'p',
	.done_type = 0,
	.approve_event = "node_remove_approve",
	.id_field = "removal_id",
	.approved_state = "removed",
	.done_text = "was carried out already",
	.request_counts = false,
	.missing = remove_missing,
	.describe = remove_describe,
	.opened = remove_opened,
	.load = remove_load,
};

/* ---- The daemon's interface (daemon.h) ------------------------------------------------------- */

int grants_node_add(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		    const char *name, const struct node_public *pub, uint32_t approvals_required,
		    int64_t now, struct grants_node *ret)
{
	struct grants_node x = { 0 };
	json_t *rec = NULL;
	uint64_t id;
	int r = 0;

	if (!node_name_valid(name))
		return err_set(-EINVAL, "\"%s\" is not a node name (1 to %d letters, digits, '.', "
			       "'_', '-')", name, NODE_NAME_MAX);
	pthread_mutex_lock(&gs->change_lock);
	pthread_rwlock_rdlock(&gs->lock);
	for (size_t i = 0; i < gs->nnd && r == 0; i++) {
		const struct grants_node *o = &gs->nd[i];

		if (o->removed_at)
			continue;
		if (strcmp(o->name, name) == 0)
			r = err_set(-EEXIST, "node %s is %s already (enrolment %llu): remove it "
				    "first", name, grants_node_state(o), (unsigned long long)o->id);
		else if (sodium_memcmp(o->pub.sign_pk, pub->sign_pk, 32) == 0 ||
			 sodium_memcmp(o->pub.box_pk, pub->box_pk, 32) == 0)
			r = err_set(-EEXIST, "node %s has this key already: a key serves one node",
				    o->name);
	}
	pthread_rwlock_unlock(&gs->lock);
	if (r < 0)
		goto out;
	r = grants_take_id(gs, &id);
	if (r < 0)
		goto out;
	x.id = id;
	snprintf(x.name, sizeof(x.name), "%s", name);
	x.pub = *pub;
	x.by_uid = by->uid;
	grants_by_name(by, x.by);
	x.at = now;
	x.approvals_required = approvals_required;
	if (approvals_required == 0)
		x.enrolled_at = now;
	rec = json_pack("{s:s, s:I, s:s, s:o, s:o, s:s}", "event", "node_add", "node_id",
			(json_int_t)id, "node", name, "sign_pk", hex_json(pub->sign_pk, 32),
			"box_pk", hex_json(pub->box_pk, 32), "node_state",
			approvals_required ? "pending_approval" : "enrolled");
	if (!rec) {
		r = -ENOMEM;
		goto out;
	}
	r = approvals_open(gs, log, &approval_kind_node_add, by, id, approvals_required, 0, now,
			   rec, node_to_json(&x), &x, NULL);
	if (r == 0 && ret)
		*ret = x;
out:
	json_decref(rec);
	pthread_mutex_unlock(&gs->change_lock);
	return r;
}

static int node_get(struct grants *gs, uint64_t id, struct grants_node *ret)
{
	ssize_t i;

	pthread_rwlock_rdlock(&gs->lock);
	i = find_node(gs, id);
	if (i >= 0)
		*ret = gs->nd[i];
	pthread_rwlock_unlock(&gs->lock);
	return i < 0 ? add_missing(gs, id) : 0;
}

int grants_node_approve(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
			uint64_t id, int64_t now, struct grants_node *ret)
{
	int r = approvals_approve(gs, log, &approval_kind_node_add, by, id, now, NULL, NULL);

	if (r == 0 && ret)
		r = node_get(gs, id, ret);
	return r;
}

/* Mark node at (an index into gs->nd) as being removed, or not. change_lock held. */
static void node_removing(struct grants *gs, ssize_t at, bool on)
{
	pthread_rwlock_wrlock(&gs->lock);
	gs->nd[at].removing = on;
	pthread_rwlock_unlock(&gs->lock);
}

/* Step 1 of the policy key rotation (store_policy_rekey's new key, into the ring). change_lock
 * held. A store without a key ring (format 2) cannot enrol nodes, so has none to remove. */
static int policy_rekey_begin(struct grants *gs)
{
	int r = store_policy_rekey_begin(gs->st);

	if (r < 0)
		return err_set(r, "cannot remove the node: the policy key cannot be rotated: %s",
			       err_detail());
	return 0;
}

int grants_node_remove(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		       const char *name, const char *reason, int64_t now, struct grants_node *ret)
{
	struct node_removal x = { 0 };
	json_t *rec = NULL;
	ssize_t at = -1;
	uint64_t id;
	int r;

	if (!reason || !reason[0] || strlen(reason) > POLICY_REASON_MAX)
		return err_set(-EINVAL, "a removal needs a reason (--reason TEXT, at most %d bytes)",
			       POLICY_REASON_MAX);
	pthread_mutex_lock(&gs->change_lock);
	pthread_rwlock_rdlock(&gs->lock);
	for (size_t i = 0; i < gs->nnd; i++)
		if (!gs->nd[i].removed_at && strcmp(gs->nd[i].name, name) == 0)
			at = (ssize_t)i;
	if (at >= 0)
		x.node_id = gs->nd[at].id;
	pthread_rwlock_unlock(&gs->lock);
	if (at < 0) {
		r = err_set(-ENOENT, "no node \"%s\" is enrolled or awaiting approval", name);
		goto out;
	}
	/* The policy key first gets a new generation, sealed only to the nodes enrolled but this
	 * one (step 1 of store_policy_rekey: the ring hook writes the other nodes' bundles and
	 * drops this one's). If that fails nothing is recorded and the node stays. */
	node_removing(gs, at, true);
	r = policy_rekey_begin(gs);
	if (r < 0) {
		node_removing(gs, at, false);
		goto out;
	}
	r = grants_take_id(gs, &id);
	if (r < 0)
		goto out_due;
	x.id = id;
	x.at = now;
	x.by_uid = by->uid;
	grants_by_name(by, x.by);
	snprintf(x.reason, sizeof(x.reason), "%s", reason);
	rec = json_pack("{s:s, s:I, s:I, s:s, s:o}", "event", "node_remove", "removal_id",
			(json_int_t)id, "node_id", (json_int_t)x.node_id, "node", name, "reason",
			audit_string(reason));
	if (!rec) {
		r = -ENOMEM;
		goto out_due;
	}
	/* The removal record itself is sealed under the old key, so that the removed node reads it
	 * and says why it refuses (node_removed); every record after it is under the new one. */
	r = approvals_open(gs, log, &approval_kind_node_remove, by, id, 0, 0, now, rec,
			   json_pack("{s:I, s:I, s:I, s:s, s:I, s:s}", "id", (json_int_t)id,
				     "node_id", (json_int_t)x.node_id, "by_uid",
				     (json_int_t)x.by_uid, "by", x.by, "at", (json_int_t)now,
				     "reason", reason),
			   &x, NULL);
	if (r < 0)
		goto out_due;
	/* Steps 2 and 3: every record resealed under the new key, the old key dropped. */
	r = store_policy_rekey(gs->st);
	if (r < 0) {
		gs->rekey_due = true;
		r = err_set(r, "node %s is removed, but the policy records are not yet sealed under "
			    "the new key: %s (finished before the next policy change, or at the next "
			    "start)", name, err_detail());
		goto out;
	}
	if (ret)
		r = node_get(gs, x.node_id, ret);
	goto out;
out_due:
	/* Not removed, but the new key is in the ring: sealed to this node again by the next
	 * bundles, and the rotation finished before the next policy record. */
	node_removing(gs, at, false);
	gs->rekey_due = true;
out:
	json_decref(rec);
	pthread_mutex_unlock(&gs->change_lock);
	return r;
}

int grants_nodes_snapshot(struct grants *gs, struct grants_node **ret, size_t *ret_n)
{
	struct grants_node *a;
	size_t n;

	pthread_rwlock_rdlock(&gs->lock);
	n = gs->nnd;
	a = malloc(MAX(n, (size_t)1) * sizeof(*a));
	if (a && n)
		memcpy(a, gs->nd, n * sizeof(*a));
	pthread_rwlock_unlock(&gs->lock);
	if (!a)
		return -ENOMEM;
	*ret = a;
	*ret_n = n;
	return 0;
}

int grants_nodes_enrolled(struct grants *gs, struct node_enrolled **ret, size_t *ret_n)
{
	struct node_enrolled *a;
	size_t n = 0;

	pthread_rwlock_rdlock(&gs->lock);
	a = calloc(MAX(gs->nnd, (size_t)1), sizeof(*a));
	for (size_t i = 0; a && i < gs->nnd; i++) {
		if (!grants_node_is_enrolled(&gs->nd[i]) || gs->nd[i].removing)
			continue;
		a[n].id = gs->nd[i].id;
		snprintf(a[n].name, sizeof(a[n].name), "%s", gs->nd[i].name);
		a[n].pub = gs->nd[i].pub;
		n++;
	}
	pthread_rwlock_unlock(&gs->lock);
	if (!a)
		return -ENOMEM;
	*ret = a;
	*ret_n = n;
	return 0;
}

bool grants_node_enrolled_as(struct grants *gs, const char *name, const uint8_t sign_pk[static 32])
{
	bool yes = false;

	pthread_rwlock_rdlock(&gs->lock);
	for (size_t i = 0; i < gs->nnd && !yes; i++)
		yes = grants_node_is_enrolled(&gs->nd[i]) && strcmp(gs->nd[i].name, name) == 0 &&
		      sodium_memcmp(gs->nd[i].pub.sign_pk, sign_pk, 32) == 0;
	pthread_rwlock_unlock(&gs->lock);
	return yes;
}

int grants_node_approvals(struct grants *gs, uint64_t id, struct policy_approval **ret,
			  size_t *ret_n)
{
	return approvals_list(gs, &approval_kind_node_add, id, ret, ret_n);
}
