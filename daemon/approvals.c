/* approvals: the one pending-request mechanism (approvals.h says what it does and how a kind
 * plugs in; the kinds themselves are in grants.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "daemon/grants_internal.h"

/* Every kind of request; the loader finds a record's kind here by its key letter. */
static const struct approval_kind *const approval_kinds[] = {
	&approval_kind_grant,
	&approval_kind_deny_removal,
	&approval_kind_erasure,
	&approval_kind_export,
	&approval_kind_node_add,
	&approval_kind_node_remove,
};

const struct approval_kind *approvals_kind_of(char t)
{
	for (size_t i = 0; i < ARRAY_SIZE(approval_kinds); i++) {
		const struct approval_kind *k = approval_kinds[i];

		if (t && (t == k->request_type || t == k->approval_type || t == k->done_type))
			return k;
	}
	return NULL;
}

/* Order of the table: by id, then kind (its request letter). */
static int pending_cmp(uint64_t id, const struct approval_kind *k, const struct pending *p)
{
	if (id != p->id)
		return id < p->id ? -1 : 1;
	if (k->request_type != p->kind->request_type)
		return k->request_type < p->kind->request_type ? -1 : 1;
	return 0;
}

/* The index of request (k, id), or -1 with *ret_at where it would go. Under lock (either). */
static ssize_t pending_find(const struct grants *gs, const struct approval_kind *k, uint64_t id,
			    size_t *ret_at)
{
	size_t lo = 0, hi = gs->npd;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = pending_cmp(id, k, &gs->pd[mid]);

		if (c == 0)
			return (ssize_t)mid;
		if (c > 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (ret_at)
		*ret_at = lo;
	return -1;
}

/* Enter p (not there yet). Under the write lock, or while loading. */
static int pending_insert(struct grants *gs, const struct pending *p, size_t *ret_at)
{
	size_t at = 0;
	int r;

	if (pending_find(gs, p->kind, p->id, &at) >= 0)
		return err_set(-EBADMSG, "holds %s %llu twice", p->kind->name,
			       (unsigned long long)p->id);
	r = grants_grow_array((void **)&gs->pd, sizeof(*gs->pd), gs->npd, &gs->cappd,
			      GRANTS_MAX + DENIES_MAX, "pending requests");
	if (r < 0)
		return r;
	memmove(&gs->pd[at + 1], &gs->pd[at], (gs->npd - at) * sizeof(*gs->pd));
	gs->pd[at] = *p;
	gs->npd++;
	*ret_at = at;
	return 0;
}

static void pending_remove(struct grants *gs, size_t at)
{
	memmove(&gs->pd[at], &gs->pd[at + 1], (gs->npd - at - 1) * sizeof(*gs->pd));
	gs->npd--;
}

/* Did uid approve request (k, id) already? Under lock (either). */
static bool approved_by(const struct grants *gs, const struct approval_kind *k, uint64_t id,
			uint32_t uid)
{
	for (size_t i = 0; i < gs->npap; i++)
		if (gs->pap[i].kind == k && gs->pap[i].a.grant_id == id &&
		    gs->pap[i].a.by_uid == uid)
			return true;
	return false;
}

/* Count approval a into request pd[i] and the kind's table. Under the write lock, or loading. */
static int approval_add(struct grants *gs, size_t i, const struct policy_approval *a)
{
	struct pending *p = &gs->pd[i];
	int r;

	r = grants_grow_array((void **)&gs->pap, sizeof(*gs->pap), gs->npap, &gs->cappap,
			      APPROVALS_MAX, "approvals");
	if (r < 0)
		return r;
	gs->pap[gs->npap++] = (struct approvals_given){ .kind = p->kind, .a = *a };
	p->approvals++;
	if (p->kind->approved)
		p->kind->approved(gs, p, a);
	return 0;
}

static int missing(struct grants *gs, const struct approval_kind *k, uint64_t id)
{
	if (k->missing)
		return k->missing(gs, id);
	return err_set(-ENOENT, "no %s with id %llu", k->name, (unsigned long long)id);
}

int approvals_open(struct grants *gs, struct audit_log *log, const struct approval_kind *k,
		   const struct policy_subject *by, uint64_t id, uint32_t required, int64_t expires,
		   int64_t now, json_t *rec, json_t *j, void *arg, struct pending *ret)
{
	struct pending p = { .kind = k, .id = id, .by_uid = by->uid, .required = required,
			     .at = now, .expires = expires };
	size_t at;
	int r;

	if (required > POLICY_APPROVALS_MAX) {
		json_decref(j);
		return err_set(-EINVAL, "%u approvals: at most %u", required, POLICY_APPROVALS_MAX);
	}
	if (daemon_audit_subject(rec, by) < 0 ||
	    json_object_set_new(rec, "state", json_string(required ? "pending_approval" :
							   k->approved_state)) < 0 ||
	    (k->request_counts &&
	     json_object_set_new(rec, "approvals_required", json_integer(required)) < 0)) {
		json_decref(j);
		return -ENOMEM;
	}
	r = grants_policy_append(gs, log, rec, k->request_type, id, -1, j, p.subject);
	if (r < 0)
		return r;
	pthread_rwlock_wrlock(&gs->lock);
	r = pending_insert(gs, &p, &at);
	if (r == 0 && k->opened) {
		r = k->opened(gs, &gs->pd[at], arg);
		if (r < 0)
			pending_remove(gs, at);
	}
	pthread_rwlock_unlock(&gs->lock);
	if (r == 0 && ret)
		*ret = p;
	return r;
}

int approvals_approve(struct grants *gs, struct audit_log *log, const struct approval_kind *k,
		      const struct policy_subject *by, uint64_t id, int64_t now,
		      const uint8_t *subject, struct pending *ret)
{
	struct policy_approval a = { .grant_id = id, .by_uid = by->uid, .at = now };
	char what[96];
	struct pending p;
	json_t *rec = NULL;
	bool complete;
	ssize_t i;
	int r;

	pthread_mutex_lock(&gs->change_lock);
	/* Only changes write the table, and they hold change_lock: reading it here is safe. */
	i = pending_find(gs, k, id, NULL);
	if (i < 0) {
		r = missing(gs, k, id);
		goto out;
	}
	p = gs->pd[i];
	snprintf(what, sizeof(what), "%s %llu", k->name, (unsigned long long)id);
	if (k->before && (r = k->before(gs, &p, by, now)) < 0)
		goto out;
	if (p.by_uid == by->uid) {
		r = err_set(-EPERM, "%s was requested by you (uid %u): another steward must approve "
			    "it", what, by->uid);
		goto out;
	}
	if (k->refuse && (r = k->refuse(gs, &p, by, now)) < 0)
		goto out;
	if (p.expires && now >= p.expires) {
		r = err_set(-ESTALE, "%s has expired", what);
		goto out;
	}
	if (approved_by(gs, k, id, by->uid)) {
		r = err_set(-EEXIST, "you (uid %u) approved %s already", by->uid, what);
		goto out;
	}
	if (p.approvals >= p.required) {
		r = err_set(-EALREADY, "%s needs no more approvals (%u of %u)", what, p.approvals,
			    p.required);
		goto out;
	}
	if (subject && sodium_memcmp(subject, p.subject, APPROVALS_SUBJECT_LEN) != 0) {
		r = err_set(-ESTALE, "%s is not the request that was shown (its subject differs)",
			    what);
		goto out;
	}
	grants_by_name(by, a.by);
	r = policy_approval_validate(&a);
	if (r < 0)
		goto out;
	complete = p.approvals + 1 >= p.required;
	rec = json_pack("{s:s, s:I, s:s, s:I, s:I}", "event", k->approve_event, k->id_field,
			(json_int_t)id, "state", complete ? k->approved_state : "pending_approval",
			"approvals", (json_int_t)p.approvals + 1, "approvals_required",
			(json_int_t)p.required);
	if (!rec || daemon_audit_subject(rec, by) < 0 ||
	    (k->describe && k->describe(gs, &p, rec) < 0)) {
		r = -ENOMEM;
		goto out;
	}
	r = grants_policy_append(gs, log, rec, k->approval_type, id, by->uid,
				 policy_approval_to_json(&a), NULL);
	if (r < 0)
		goto out;
	pthread_rwlock_wrlock(&gs->lock);
	r = approval_add(gs, (size_t)i, &a);
	p = gs->pd[i];
	pthread_rwlock_unlock(&gs->lock);
	if (r == 0 && ret)
		*ret = p;
out:
	json_decref(rec);
	pthread_mutex_unlock(&gs->change_lock);
	return r;
}

int approvals_done(struct grants *gs, struct audit_log *log, const struct approval_kind *k,
		   const struct policy_subject *by, uint64_t id, int64_t now, json_t *rec,
		   json_t *j, void *arg)
{
	ssize_t i;
	int r;

	pthread_mutex_lock(&gs->change_lock);
	i = k->done_type ? pending_find(gs, k, id, NULL) : -1;
	if (i < 0)
		r = missing(gs, k, id);
	else if (gs->pd[i].done_at)
		r = err_set(-EEXIST, "%s %llu %s", k->name, (unsigned long long)id, k->done_text);
	else if (gs->pd[i].approvals < gs->pd[i].required)
		r = err_set(-EACCES, "%s %llu is not approved yet (%u of %u approvals)", k->name,
			    (unsigned long long)id, gs->pd[i].approvals, gs->pd[i].required);
	else if (by && daemon_audit_subject(rec, by) < 0)
		r = -ENOMEM;
	else
		r = 0;
	if (r < 0) {
		json_decref(j);
		goto out;
	}
	r = grants_policy_append(gs, log, rec, k->done_type, id, -1, j, NULL);
	if (r < 0)
		goto out;
	pthread_rwlock_wrlock(&gs->lock);
	gs->pd[i].done_at = MAX(now, (int64_t)1);
	if (k->done)
		k->done(gs, &gs->pd[i], arg);
	pthread_rwlock_unlock(&gs->lock);
out:
	pthread_mutex_unlock(&gs->change_lock);
	return r;
}

int approvals_get(struct grants *gs, const struct approval_kind *k, uint64_t id,
		  struct pending *ret)
{
	ssize_t i;

	pthread_rwlock_rdlock(&gs->lock);
	i = pending_find(gs, k, id, NULL);
	if (i >= 0)
		*ret = gs->pd[i];
	pthread_rwlock_unlock(&gs->lock);
	return i < 0 ? -ENOENT : 0;
}

int approvals_list(struct grants *gs, const struct approval_kind *k, uint64_t id,
		   struct policy_approval **ret, size_t *ret_n)
{
	struct policy_approval *a;
	size_t n = 0;

	pthread_rwlock_rdlock(&gs->lock);
	a = malloc(MAX(gs->npap, (size_t)1) * sizeof(*a));
	for (size_t i = 0; a && i < gs->npap; i++)
		if (gs->pap[i].kind == k && gs->pap[i].a.grant_id == id)
			a[n++] = gs->pap[i].a;
	pthread_rwlock_unlock(&gs->lock);
	if (!a)
		return -ENOMEM;
	*ret = a;
	*ret_n = n;
	return 0;
}

int approvals_load(struct grants *gs, const struct approval_kind *k, const uint8_t *key,
		   size_t klen, const void *val, size_t vlen, const json_t *j)
{
	uint64_t kid = get_be64(key + 1);
	ssize_t i = pending_find(gs, k, kid, NULL);
	size_t at;
	int r;

	if (key[0] == k->request_type) {
		struct pending p = { .kind = k, .id = kid };

		if (klen != 9)
			return err_set(-EBADMSG, "not a %s request key", k->name);
		r = k->load(gs, kid, j, &p);
		if (r < 0)
			return r;
		grants_subject_digest(key, klen, val, vlen, p.subject);
		return pending_insert(gs, &p, &at);
	}
	if (i < 0)
		return err_set(-EBADMSG, "does not match %s", k->request_noun);
	if (key[0] == k->approval_type) {
		struct policy_approval a;

		if (klen != 13)
			return err_set(-EBADMSG, "not an approval key");
		if ((r = policy_approval_from_json(j, &a)) < 0)
			return r;
		/* An approval by the requester, or one more than any store may ask for, was never
		 * written by approvals_approve(). */
		if (a.grant_id != kid || a.by_uid != get_be32(key + 9) ||
		    a.by_uid == gs->pd[i].by_uid || gs->pd[i].approvals >= POLICY_APPROVALS_MAX)
			return err_set(-EBADMSG, "does not match %s", k->request_noun);
		return approval_add(gs, (size_t)i, &a);
	}
	{
		int64_t done = 0;

		if (klen != 9 || gs->pd[i].done_at)
			return err_set(-EBADMSG, "%s %llu done twice", k->name,
				       (unsigned long long)kid);
		r = k->load_done(gs, &gs->pd[i], j, &done);
		if (r < 0)
			return r;
		gs->pd[i].done_at = MAX(done, (int64_t)1);
		return 0;
	}
}

void approvals_free(struct grants *gs)
{
	free(gs->pd);
	free(gs->pap);
	gs->pd = NULL;
	gs->pap = NULL;
	gs->npd = gs->npap = gs->cappd = gs->cappap = 0;
}
