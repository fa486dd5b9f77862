/* grants: the daemon's grant table, kept in the store's policy records. Requests that wait for
 * other stewards (grants, deny rule removals, erasures, exports) are kinds of the one approval
 * mechanism (approvals.h, approvals.c); their kind tables are here.
 *
 * Records (store_policy_put; docs/POLICY.md, docs/FORMAT.md 6.8), in key order, which is the
 * order they load in (so a record always comes after the one it refers to):
 *   "c" || be64 dataset id          the dataset's policy (consent codes, controller, cache mode);
 *                                   replaced when amended
 *   "d" || be64 id                  a deny rule (immutable)
 *   "e" || be64 id                  the request to remove that rule (with its reason and the
 *                                   approvals it needs; without them, an old store's removal)
 *   "i" || be64 id || be32 uid      an approval of that removal by steward uid (immutable)
 *   "g" || be64 id                  a grant, as policy_grant_to_json writes it (immutable)
 *   "h" || be64 id || be32 uid      an approval of grant id by steward uid (immutable)
 *   "n"                             be64: the next id to hand out (grants and deny rules)
 *   "r" || be64 id                  that grant's revocation, policy_revocation_to_json
 *   "u" || be64 id                  an erasure request (docs/POLICY.md "Erasure")
 *   "v" || be64 id || be32 uid      an approval of that erasure by steward uid (immutable)
 *   "w" || be64 id                  the erasure carried out, with the key ring it left (once)
 *   "x" || be64 id                  an export request (docs/CRYPT4GH.md section 7)
 *   "y" || be64 id || be32 uid      an approval of that export by steward uid (immutable)
 *   "z" || be64 id                  the export's run (once)
 *
 * Locking: `lock` is a rwlock over the table; decisions take it shared, changes exclusive. A
 * change holds `change_lock` across its audit append and store writes, so changes are serialised
 * (ids in order) without keeping readers out during the disk writes: the table itself is only
 * write-locked for the final in-memory update.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"
#include "daemon/grants_internal.h"

#define WATCH_INTERVAL_MS 250   /* how often the watch thread looks at the clock */


int grants_grow_array(void **arr, size_t elem, size_t n, size_t *cap, size_t max,
		      const char *what)
{
	size_t c;
	void *p;

	if (n < *cap)
		return 0;
	if (n >= max)
		return err_set(-ENOSPC, "more than %zu %s", max, what);
	c = *cap ? *cap * 2 : 16;
	p = realloc(*arr, c * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = c;
	return 0;
}

static ssize_t find_deny(const struct grants *gs, uint64_t id)
{
	return sorted_find_u64(gs->dn, gs->ndn, sizeof(*gs->dn), offsetof(struct policy_deny, id), id);
}

static ssize_t find_removal(const struct grants *gs, uint64_t id)
{
	return sorted_find_u64(gs->rm, gs->nrm, sizeof(*gs->rm),
			   offsetof(struct policy_deny_removal, deny_id), id);
}

static ssize_t find_dataset(const struct grants *gs, uint64_t dsid)
{
	return sorted_find_u64(gs->dp, gs->ndp, sizeof(*gs->dp),
			   offsetof(struct policy_dataset, dataset_id), dsid);
}

/* Insert or replace p, keeping dp sorted. Under the write lock (or while loading). */
static int dataset_put(struct grants *gs, const struct policy_dataset *p)
{
	ssize_t i = find_dataset(gs, p->dataset_id);
	size_t at = 0;
	int r;

	if (i >= 0) {
		gs->dp[i] = *p;
		return 0;
	}
	r = grants_grow_array((void **)&gs->dp, sizeof(*gs->dp), gs->ndp, &gs->capdp, DATASETS_MAX,
		       "dataset policies");
	if (r < 0)
		return r;
	while (at < gs->ndp && gs->dp[at].dataset_id < p->dataset_id)
		at++;
	memmove(&gs->dp[at + 1], &gs->dp[at], (gs->ndp - at) * sizeof(*gs->dp));
	gs->dp[at] = *p;
	gs->ndp++;
	return 0;
}


static int grow(struct grants *gs)
{
	size_t cap;
	struct policy_grant *g;
	struct policy_revocation *rv;

	if (gs->n < gs->cap)
		return 0;
	if (gs->n >= GRANTS_MAX)
		return err_set(-ENOSPC, "more than %u grants", GRANTS_MAX);
	cap = gs->cap ? gs->cap * 2 : 64;
	g = realloc(gs->g, cap * sizeof(*g));
	if (!g)
		return -ENOMEM;
	gs->g = g;
	rv = realloc(gs->rev, cap * sizeof(*rv));
	if (!rv)
		return -ENOMEM;
	gs->rev = rv;
	gs->cap = cap;
	return 0;
}

static ssize_t find(const struct grants *gs, uint64_t id)
{
	return sorted_find_u64(gs->g, gs->n, sizeof(*gs->g), offsetof(struct policy_grant, id), id);
}

/* ---- The digest of the policy records -------------------------------------------------------- */

static void xor_into(uint8_t *dst, const uint8_t *src)
{
	for (size_t i = 0; i < AUDIT_POLICY_DIGEST_LEN; i++)
		dst[i] ^= src[i];
}

static bool chash_get(const struct grants *gs, uint64_t dsid, uint8_t out[static 32])
{
	for (size_t i = 0; i < gs->nch; i++)
		if (gs->ch[i].dsid == dsid) {
			memcpy(out, gs->ch[i].h, 32);
			return true;
		}
	return false;
}

static int chash_set(struct grants *gs, uint64_t dsid, const uint8_t h[static 32])
{
	int r;

	for (size_t i = 0; i < gs->nch; i++)
		if (gs->ch[i].dsid == dsid) {
			memcpy(gs->ch[i].h, h, 32);
			return 0;
		}
	r = grants_grow_array((void **)&gs->ch, sizeof(*gs->ch), gs->nch, &gs->capch, DATASETS_MAX,
		       "dataset policy hashes");
	if (r < 0)
		return r;
	gs->ch[gs->nch].dsid = dsid;
	memcpy(gs->ch[gs->nch].h, h, 32);
	gs->nch++;
	return 0;
}

/* Fold record key = val into the digest (a "c" record replaces the one before). */
static int digest_add(struct grants *gs, const uint8_t *key, size_t klen, const void *val,
		      size_t vlen, uint8_t digest[static AUDIT_POLICY_DIGEST_LEN], bool remember)
{
	uint8_t h[AUDIT_POLICY_DIGEST_LEN], old[AUDIT_POLICY_DIGEST_LEN];

	if (!gs->pkey)
		return 0;
	audit_policy_record_hash(gs->pkey, key, klen, val, vlen, h);
	if (klen == 9 && key[0] == 'c' && chash_get(gs, get_be64(key + 1), old))
		xor_into(digest, old);
	xor_into(digest, h);
	if (remember && klen == 9 && key[0] == 'c')
		return chash_set(gs, get_be64(key + 1), h);
	return 0;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
	sodium_bin2hex(out, 2 * n + 1, p, n);
}

static int parse_record(const void *val, size_t vlen, json_t **ret)
{
	json_error_t e;
	json_t *j = json_loadb(val, vlen, JSON_REJECT_DUPLICATES, &e);

	if (!j)
		return err_set(-EBADMSG, "not JSON: %s", e.text);
	*ret = j;
	return 0;
}

static ssize_t find_export(const struct grants *gs, uint64_t id)
{
	return sorted_find_u64(gs->xp, gs->nxp, sizeof(*gs->xp), offsetof(struct grants_export, id),
			   id);
}

static bool jint(const json_t *j, const char *k, uint64_t max, uint64_t *ret)
{
	const json_t *v = json_object_get(j, k);

	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > max)
		return false;
	*ret = (uint64_t)json_integer_value(v);
	return true;
}

/* The fields of an export request record, checked. */
static int export_from_json(const json_t *j, struct grants_export *x)
{
	uint64_t id, dsid, v, uid, at, ap;
	const json_t *paths = json_object_get(j, "paths");

	if (!jint(j, "id", INT64_MAX, &id) || !jint(j, "dataset_id", INT64_MAX, &dsid) ||
	    !jint(j, "version", UINT32_MAX, &v) || !jint(j, "by_uid", UINT32_MAX, &uid) ||
	    !jint(j, "at", INT64_MAX, &at) ||
	    !jint(j, "approvals_required", POLICY_APPROVALS_MAX, &ap) || id == 0 || v == 0 ||
	    !json_is_string(json_object_get(j, "dataset")) ||
	    !json_is_string(json_object_get(j, "recipient_key")) ||
	    !json_is_string(json_object_get(j, "fingerprint")) || !json_is_array(paths) ||
	    json_array_size(paths) == 0 || json_array_size(paths) > GRANTS_EXPORT_FILES_MAX)
		return err_set(-EBADMSG, "not an export request");
	*x = (struct grants_export){ .id = id, .dataset_id = dsid, .version = (uint32_t)v,
				     .by_uid = (uint32_t)uid, .at = (int64_t)at,
				     .approvals_required = (uint32_t)ap };
	return 0;
}


/* ---- Erasures as requests (approvals.h): 'u' the request, 'v' an approval, 'w' done ---------- */

static ssize_t find_erasure(const struct grants *gs, uint64_t id)
{
	for (size_t i = 0; i < gs->ner; i++)
		if (gs->er[i].id == id)
			return (ssize_t)i;
	return -1;
}

static json_t *erasure_to_json(const struct daemon_erasure *x)
{
	return json_pack("{s:I, s:I, s:s, s:I, s:s, s:b, s:I, s:s, s:I, s:I}", "id",
			 (json_int_t)x->id, "dataset_id", (json_int_t)x->dataset_id, "dataset",
			 x->dataset, "version", (json_int_t)x->version, "reason", x->reason,
			 "revoke_grants", x->revoke_grants, "by_uid", (json_int_t)x->by_uid, "by",
			 x->by, "at", (json_int_t)x->at, "approvals_required",
			 (json_int_t)x->approvals_required);
}

static int erasure_from_json(const json_t *j, struct daemon_erasure *ret)
{
	struct daemon_erasure x = { 0 };
	json_int_t id = 0, dsid = 0, ver = -1, uid = -1, at = 0, req = -1;
	const char *ds = NULL, *reason = NULL, *by = NULL;
	int rg = 0;
	json_error_t e;

	if (json_unpack_ex((json_t *)j, &e, JSON_STRICT, "{s:I, s:I, s:s, s:I, s:s, s:b, s:I, s:s, "
			   "s:I, s:I}", "id", &id, "dataset_id", &dsid, "dataset", &ds, "version",
			   &ver, "reason", &reason, "revoke_grants", &rg, "by_uid", &uid, "by", &by,
			   "at", &at, "approvals_required", &req) < 0 ||
	    id <= 0 || dsid <= 0 || ver < 0 || ver > UINT32_MAX || uid < 0 || uid > UINT32_MAX ||
	    at <= 0 || req < 0 || req > POLICY_APPROVALS_MAX || !store_dataset_name_valid(ds) ||
	    strlen(reason) == 0 || strlen(reason) > POLICY_REASON_MAX ||
	    strlen(by) > POLICY_NAME_MAX)
		return err_set(-EBADMSG, "malformed erasure request");
	x.id = (uint64_t)id;
	x.dataset_id = (uint64_t)dsid;
	snprintf(x.dataset, sizeof(x.dataset), "%s", ds);
	x.version = (uint32_t)ver;
	snprintf(x.reason, sizeof(x.reason), "%s", reason);
	x.revoke_grants = rg;
	x.by_uid = (uint32_t)uid;
	snprintf(x.by, sizeof(x.by), "%s", by);
	x.at = at;
	x.approvals_required = (uint32_t)req;
	*ret = x;
	return 0;
}

static int erasure_missing(struct grants *gs, uint64_t id)
{
	(void)gs;
	return err_set(-ENOENT, "no erasure request with id %llu", (unsigned long long)id);
}

static int erasure_before(struct grants *gs, const struct pending *p,
			  const struct policy_subject *by, int64_t now)
{
	(void)gs, (void)by, (void)now;
	if (p->done_at)
		return err_set(-EEXIST, "erasure %llu was carried out already",
			       (unsigned long long)p->id);
	if (p->approvals >= p->required)
		return err_set(-EALREADY, "erasure %llu needs no more approvals",
			       (unsigned long long)p->id);
	return 0;
}

static int erasure_describe(struct grants *gs, const struct pending *p, json_t *rec)
{
	const struct daemon_erasure *x = &gs->er[find_erasure(gs, p->id)];

	if (json_object_set_new(rec, "dataset_id", json_integer((json_int_t)x->dataset_id)) < 0 ||
	    json_object_set_new(rec, "version", json_integer((json_int_t)x->version)) < 0 ||
	    json_object_set_new(rec, "dataset", audit_string(x->dataset)) < 0)
		return -ENOMEM;
	return 0;
}

static void erasure_approved(struct grants *gs, const struct pending *p,
			     const struct policy_approval *a)
{
	(void)a;
	gs->er[find_erasure(gs, p->id)].approvals = p->approvals;
}

static int erasure_opened(struct grants *gs, const struct pending *p, void *arg)
{
	int r;

	(void)p;
	r = grants_grow_array((void **)&gs->er, sizeof(*gs->er), gs->ner, &gs->caper, GRANTS_MAX,
			      "erasure requests");
	if (r == 0)
		gs->er[gs->ner++] = *(const struct daemon_erasure *)arg;
	return r;
}

static int erasure_load(struct grants *gs, uint64_t id, const json_t *j, struct pending *ret)
{
	struct daemon_erasure x;
	int r;

	if ((r = erasure_from_json(j, &x)) < 0)
		return r;
	if (x.id != id || find_erasure(gs, id) >= 0)
		return err_set(-EBADMSG, "holds erasure request %llu", (unsigned long long)x.id);
	r = grants_grow_array((void **)&gs->er, sizeof(*gs->er), gs->ner, &gs->caper, GRANTS_MAX,
			      "erasure requests");
	if (r < 0)
		return r;
	gs->er[gs->ner++] = x;
	gs->next_id = MAX(gs->next_id, x.id + 1);
	ret->by_uid = x.by_uid;
	ret->at = x.at;
	ret->required = x.approvals_required;
	return 0;
}

/* The key ring an erasure left (its done record). */
struct erasure_ring {
	uint64_t generation;
	uint8_t digest[32];
};

static void erasure_done(struct grants *gs, const struct pending *p, void *arg)
{
	const struct erasure_ring *ring = arg;

	gs->er[find_erasure(gs, p->id)].done_at = p->done_at;
	if (ring->generation >= gs->ring_gen) {
		gs->ring_gen = ring->generation;
		memcpy(gs->ring_digest, ring->digest, 32);
	}
}

static int erasure_load_done(struct grants *gs, const struct pending *p, const json_t *j,
			     int64_t *ret_at)
{
	json_int_t at = 0, eid = 0, dsid = 0, gen = 0;
	struct pending done = *p;
	struct erasure_ring ring;
	const char *dhex = NULL;
	size_t dl = 0;

	if (json_unpack((json_t *)j, "{s:I, s:I, s:I, s:I, s:s}", "erasure_id", &eid, "at", &at,
			"dataset_id", &dsid, "ring_generation", &gen, "ring_digest", &dhex) < 0 ||
	    (uint64_t)eid != p->id || at <= 0 || gen <= 0 ||
	    sodium_hex2bin(ring.digest, sizeof(ring.digest), dhex, strlen(dhex), NULL, &dl,
			   NULL) != 0 || dl != sizeof(ring.digest))
		return err_set(-EBADMSG, "malformed erasure record");
	ring.generation = (uint64_t)gen;
	done.done_at = at;
	erasure_done(gs, &done, &ring);
	*ret_at = at;
	return 0;
}

const struct approval_kind approval_kind_erasure = {
	.name = "erasure",
	.request_noun = "an erasure request",
	.request_type = 'u',
	.approval_type = 'v',
	.done_type = 'w',
	.approve_event = "erase_approve",
	.id_field = "erasure_id",
	.approved_state = "approved",
	.done_text = "was carried out already",
	.request_counts = true,
	.missing = erasure_missing,
	.before = erasure_before,
	.describe = erasure_describe,
	.approved = erasure_approved,
	.opened = erasure_opened,
	.load = erasure_load,
	.load_done = erasure_load_done,
	.done = erasure_done,
};

/* Is (dataset_id, version) erased by a done erasure (version 0: the whole dataset)? Under lock. */
static bool erased_locked(const struct grants *gs, uint64_t dataset_id, uint32_t version)
{
	for (size_t i = 0; i < gs->ner; i++)
		if (gs->er[i].done_at && gs->er[i].dataset_id == dataset_id &&
		    (gs->er[i].version == 0 || gs->er[i].version == version))
			return true;
	return false;
}

/* Active grants (not revoked, not expired at now) that name only what x erases: for a version,
 * grants of that version; for a dataset, every grant on it. Their ids into ids (up to cap). */
static size_t erasure_grants_locked(const struct grants *gs, const struct daemon_erasure *x,
				    int64_t now, uint64_t *ids, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < gs->n; i++) {
		const struct policy_grant *g = &gs->g[i];

		if (g->dataset_id != x->dataset_id || g->revoked_at || g->expires <= now)
			continue;
		if (x->version && g->version != x->version)
			continue;
		if (n < cap)
			ids[n] = g->id;
		n++;
	}
	return n;
}

size_t grants_erasure_blockers(struct grants *gs, const struct daemon_erasure *x, int64_t now,
			       uint64_t *ids, size_t cap)
{
	size_t n;

	pthread_rwlock_rdlock(&gs->lock);
	n = erasure_grants_locked(gs, x, now, ids, cap);
	pthread_rwlock_unlock(&gs->lock);
	return n;
}

int grants_erase_request(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
			 struct daemon_erasure *x, uint32_t approvals_required, int64_t now)
{
	json_t *rec = NULL;
	uint64_t id, first = 0;
	size_t blockers;
	int r;

	pthread_mutex_lock(&gs->change_lock);
	if (!x->reason[0]) {
		r = err_set(-EINVAL, "an erasure needs a reason (--reason TEXT)");
		goto out;
	}
	pthread_rwlock_rdlock(&gs->lock);
	r = 0;
	for (size_t i = 0; i < gs->ner && r == 0; i++)
		if (gs->er[i].dataset_id == x->dataset_id && !gs->er[i].done_at &&
		    (gs->er[i].version == x->version || gs->er[i].version == 0))
			r = err_set(-EEXIST, "erasure %llu of the same data waits for approval "
				    "already ('dataset erase-approve %llu')",
				    (unsigned long long)gs->er[i].id,
				    (unsigned long long)gs->er[i].id);
	blockers = erasure_grants_locked(gs, x, now, &first, 1);
	pthread_rwlock_unlock(&gs->lock);
	if (r < 0)
		goto out;
	if (blockers && !x->revoke_grants) {
		r = err_set(-EBUSY, "%zu grant(s) in force name only what would be erased (grant %llu "
			    "first): revoke them, or erase with --revoke-grants", blockers,
			    (unsigned long long)first);
		goto out;
	}
	grants_by_name(by, x->by);
	x->by_uid = by->uid;
	x->at = now;
	x->approvals_required = approvals_required;
	x->approvals = 0;
	x->done_at = 0;
	r = grants_take_id(gs, &id);
	if (r < 0)
		goto out;
	x->id = id;
	rec = json_pack("{s:s, s:I, s:I, s:I, s:o, s:b}", "event", "erase_request", "erasure_id",
			(json_int_t)id, "dataset_id", (json_int_t)x->dataset_id, "version",
			(json_int_t)x->version, "reason", audit_string(x->reason), "revoke_grants",
			x->revoke_grants);
	if (!rec || json_object_set_new(rec, "dataset", audit_string(x->dataset)) < 0) {
		r = -ENOMEM;
		goto out;
	}
	r = approvals_open(gs, log, &approval_kind_erasure, by, id, approvals_required, 0, now, rec,
			   erasure_to_json(x), x, NULL);
out:
	json_decref(rec);
	pthread_mutex_unlock(&gs->change_lock);
	return r;
}

/* A copy of erasure id; -ENOENT. */
static int erasure_get(struct grants *gs, uint64_t id, struct daemon_erasure *ret)
{
	ssize_t i;

	pthread_rwlock_rdlock(&gs->lock);
	i = find_erasure(gs, id);
	if (i >= 0)
		*ret = gs->er[i];
	pthread_rwlock_unlock(&gs->lock);
	return i < 0 ? erasure_missing(gs, id) : 0;
}

int grants_erase_approve(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
			 uint64_t id, int64_t now, struct daemon_erasure *ret)
{
	int r = approvals_approve(gs, log, &approval_kind_erasure, by, id, now, NULL, NULL);

	if (r == 0 && ret)
		r = erasure_get(gs, id, ret);
	return r;
}

int grants_erase_done(struct grants *gs, struct audit_log *log, uint64_t id, int64_t now,
		      uint64_t ring_generation, const uint8_t ring_digest[static 32], json_t *rec)
{
	struct erasure_ring ring = { .generation = ring_generation };
	struct daemon_erasure x = { 0 };
	char dhex[2 * 32 + 1];
	int r;

	r = erasure_get(gs, id, &x);
	if (r < 0)
		return r;
	memcpy(ring.digest, ring_digest, 32);
	hex(ring_digest, 32, dhex);
	/* The done record holds the key ring it left, so the ring is bound to the log through the
	 * policy records (grants_ring_check()). */
	return approvals_done(gs, log, &approval_kind_erasure, NULL, id, now, rec,
			      json_pack("{s:I, s:I, s:I, s:I, s:s}", "erasure_id", (json_int_t)id,
					"at", (json_int_t)now, "dataset_id",
					(json_int_t)x.dataset_id, "ring_generation",
					(json_int_t)ring_generation, "ring_digest", dhex),
			      &ring);
}

int grants_erasure_approvals(struct grants *gs, uint64_t id, struct policy_approval **ret,
			     size_t *ret_n)
{
	return approvals_list(gs, &approval_kind_erasure, id, ret, ret_n);
}

int grants_ring_check(struct grants *gs, uint64_t generation, const uint8_t digest[static 32])
{
	int r = 0;

	pthread_rwlock_rdlock(&gs->lock);
	if (gs->ring_gen && generation < gs->ring_gen)
		r = err_set(-ESTALE, "the key ring (generation %llu) is older than the last erasure "
			    "the audit log records (generation %llu): keys/ring was put back from a "
			    "copy, and holds keys that were destroyed", (unsigned long long)generation,
			    (unsigned long long)gs->ring_gen);
	else if (gs->ring_gen && generation == gs->ring_gen &&
		 sodium_memcmp(digest, gs->ring_digest, 32) != 0)
		r = err_set(-ESTALE, "the key ring is not the one the last erasure wrote (same "
			    "generation %llu, another digest)", (unsigned long long)generation);
	pthread_rwlock_unlock(&gs->lock);
	return r;
}

int grants_erasures(struct grants *gs, struct daemon_erasure **ret, size_t *ret_n)
{
	struct daemon_erasure *a = NULL;
	size_t n;

	pthread_rwlock_rdlock(&gs->lock);
	n = gs->ner;
	if (n) {
		a = malloc(n * sizeof(*a));
		if (a)
			memcpy(a, gs->er, n * sizeof(*a));
	}
	pthread_rwlock_unlock(&gs->lock);
	if (n && !a)
		return -ENOMEM;
	*ret = a;
	*ret_n = n;
	return 0;
}

/* One record of kind k[0] from its JSON (val, vlen as stored); the key's id (and, for an
 * approval, uid) must match the record's. The key's length was checked by the caller. Requests,
 * their approvals and done records go to the approval mechanism (approvals.c). */
static int load_json_record(struct grants *gs, const uint8_t *k, size_t klen, const void *val,
			    size_t vlen, json_t *j)
{
	const struct approval_kind *ak = approvals_kind_of((char)k[0]);
	uint64_t kid = get_be64(k + 1);
	ssize_t i;
	int r;

	if (ak)
		return approvals_load(gs, ak, k, klen, val, vlen, j);
	switch (k[0]) {
	case 'c': {
		struct policy_dataset p;

		if ((r = policy_dataset_from_json(j, &p)) < 0)
			return r;
		if (p.dataset_id != kid)
			return err_set(-EBADMSG, "holds the policy of dataset %llu",
				       (unsigned long long)p.dataset_id);
		return dataset_put(gs, &p);
	}
	case 'd': {
		struct policy_deny x;

		if ((r = policy_deny_from_json(j, &x)) < 0)
			return r;
		if (x.id != kid || (gs->ndn && gs->dn[gs->ndn - 1].id >= x.id))
			return err_set(-EBADMSG, "holds deny rule %llu", (unsigned long long)x.id);
		r = grants_grow_array((void **)&gs->dn, sizeof(*gs->dn), gs->ndn, &gs->capdn,
				      DENIES_MAX, "deny rules");
		if (r < 0)
			return r;
		gs->dn[gs->ndn++] = x;
		gs->next_id = MAX(gs->next_id, x.id + 1);
		return 0;
	}
	case 'r': {
		struct policy_revocation rv;

		if ((r = policy_revocation_from_json(j, &rv)) < 0)
			return r;
		i = find(gs, rv.grant_id);
		if (rv.grant_id != kid || i < 0)
			return err_set(-EBADMSG, "does not match a grant");
		gs->rev[i] = rv;
		gs->g[i].revoked_at = rv.at;
		return 0;
	}
	}
	return err_set(-EBADMSG, "unknown record type");
}

/* Records come in key order: "c", "d", "e", "g", "h", "i", "n", "r", "x", "y", "z" (see the top of this file), ids
 * ascending within each, so a removal, approval or revocation follows what it refers to. */
static int load_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	const struct approval_kind *ak;
	struct grants *gs = ctx;
	const uint8_t *k = key;
	json_t *j = NULL;
	int r;

	if (klen == 1 && k[0] == 'n') {
		if (vlen != 8)
			return err_set(-EBADMSG, "policy record \"n\": %zu bytes, not 8", vlen);
		gs->next_id = MAX(gs->next_id, get_be64(val));
		return 0;
	}
	ak = klen ? approvals_kind_of((char)k[0]) : NULL;
	if (!((klen == 9 && ((strchr("cdr", k[0]) && k[0]) || (ak && k[0] != ak->approval_type))) ||
	      (klen == 13 && ak && k[0] == ak->approval_type)))
		return err_set(-EBADMSG, "unknown policy record key (%zu bytes, 0x%02x...)", klen,
			       klen ? k[0] : 0);
	r = digest_add(gs, k, klen, val, vlen, gs->pdigest, true);
	if (r < 0)
		return r;
	r = parse_record(val, vlen, &j);
	if (r == 0)
		r = load_json_record(gs, k, klen, val, vlen, j);
	json_decref(j);
	if (r < 0) {
		char why[ERR_DETAIL_MAX];

		snprintf(why, sizeof(why), "%s", err_detail());
		r = err_set(r == -ENOMEM ? r : -EBADMSG, "policy record %c%llu: %s", k[0],
			    (unsigned long long)get_be64(k + 1), why);
	}
	return r;
}

int grants_load(struct store *st, struct grants **ret_grants)
{
	struct grants *gs = calloc(1, sizeof(*gs));
	crypto_key *k = NULL;
	int r;

	if (!gs)
		return -ENOMEM;
	gs->st = st;
	gs->next_id = 1;
	pthread_rwlock_init(&gs->lock, NULL);
	pthread_mutex_init(&gs->change_lock, NULL);
	pthread_mutex_init(&gs->watch_lock, NULL);
	pthread_cond_init(&gs->watch_cond, NULL);
	r = store_policy_digest_key(st, &k);
	if (r == -ENOKEY)
		r = 0;   /* a node without the master key: the primary binds the records */
	else if (r == 0) {
		gs->pkey = sodium_malloc(AUDIT_SEAL_KEY_LEN);
		if (!gs->pkey)
			r = -ENOMEM;
		else
			memcpy(gs->pkey, crypto_key_bytes(k), AUDIT_SEAL_KEY_LEN);
		crypto_key_free(k);
	}
	if (r < 0) {
		grants_free(gs);
		return r;
	}
	r = store_policy_foreach(st, load_one, gs);
	if (r < 0) {
		grants_free(gs);
		return r;
	}
	*ret_grants = gs;
	return 0;
}

#define SWAP(a, b) do { __typeof__(a) t_ = (a); (a) = (b); (b) = t_; } while (0)

int grants_reload(struct grants *gs)
{
	struct grants *n = NULL;
	int r = grants_load(gs->st, &n);

	if (r < 0)
		return r;
	/* The new table in place of the old, under both locks; the old one is freed with n. The
	 * quarantine (q, q_all) and the watch stay: they belong to this process, not the index. */
	pthread_mutex_lock(&gs->change_lock);
	pthread_rwlock_wrlock(&gs->lock);
	SWAP(gs->n, n->n);
	SWAP(gs->cap, n->cap);
	SWAP(gs->g, n->g);
	SWAP(gs->rev, n->rev);
	/* The requests of every kind and their approvals (approvals.c), with the kinds' tables. */
	SWAP(gs->npd, n->npd);
	SWAP(gs->cappd, n->cappd);
	SWAP(gs->pd, n->pd);
	SWAP(gs->npap, n->npap);
	SWAP(gs->cappap, n->cappap);
	SWAP(gs->pap, n->pap);
	SWAP(gs->ner, n->ner);
	SWAP(gs->caper, n->caper);
	SWAP(gs->er, n->er);
	SWAP(gs->nxp, n->nxp);
	SWAP(gs->capxp, n->capxp);
	SWAP(gs->xp, n->xp);
	SWAP(gs->ndn, n->ndn);
	SWAP(gs->capdn, n->capdn);
	SWAP(gs->dn, n->dn);
	SWAP(gs->nrm, n->nrm);
	SWAP(gs->caprm, n->caprm);
	SWAP(gs->rm, n->rm);
	SWAP(gs->ndp, n->ndp);
	SWAP(gs->capdp, n->capdp);
	SWAP(gs->dp, n->dp);
	SWAP(gs->nch, n->nch);
	SWAP(gs->capch, n->capch);
	SWAP(gs->ch, n->ch);
	SWAP(gs->nnd, n->nnd);
	SWAP(gs->capnd, n->capnd);
	SWAP(gs->nd, n->nd);
	SWAP(gs->ring_gen, n->ring_gen);
	memcpy(gs->ring_digest, n->ring_digest, sizeof(gs->ring_digest));
	memcpy(gs->pdigest, n->pdigest, sizeof(gs->pdigest));
	gs->next_id = MAX(gs->next_id, n->next_id);
	pthread_rwlock_unlock(&gs->lock);
	pthread_mutex_unlock(&gs->change_lock);
	grants_free(n);
	return 0;
}

void grants_free(struct grants *gs)
{
	if (!gs)
		return;
	grants_watch_stop(gs);
	pthread_rwlock_destroy(&gs->lock);
	pthread_mutex_destroy(&gs->change_lock);
	pthread_mutex_destroy(&gs->watch_lock);
	pthread_cond_destroy(&gs->watch_cond);
	free(gs->g);
	free(gs->rev);
	approvals_free(gs);
	free(gs->er);
	free(gs->nd);
	free(gs->due);
	free(gs->dn);
	free(gs->rm);
	free(gs->dp);
	free(gs->ch);
	free(gs->q);
	free(gs->vq);
	for (size_t i = 0; i < gs->nxp; i++)
		json_decref(gs->xp[i].req);
	free(gs->xp);
	sodium_free(gs->pkey);
	free(gs);
}

/* Under lock (either). */
static bool quarantined(const struct grants *gs, uint64_t dataset_id)
{
	if (gs->q_all)
		return true;
	for (size_t i = 0; i < gs->nq; i++)
		if (gs->q[i] == dataset_id)
			return true;
	return false;
}

struct policy_decision grants_decide(struct grants *gs, const struct policy_subject *who,
				     uint64_t dataset_id, uint32_t version, int64_t now)
{
	struct policy_decision d;

	struct policy_input in;
	ssize_t i;

	pthread_rwlock_rdlock(&gs->lock);
	i = find_dataset(gs, dataset_id);
	in = (struct policy_input){ .grants = gs->g, .ngrants = gs->n, .denies = gs->dn,
				    .ndenies = gs->ndn, .duo = i >= 0 ? gs->dp[i].duo : NULL,
				    .nduo = i >= 0 ? gs->dp[i].nduo : 0 };
	d = policy_evaluate(who, dataset_id, version, now, &in);
	/* Erased: gone for everyone, at once (open handles decide again and stop). */
	if (erased_locked(gs, dataset_id, version == POLICY_ALL_VERSIONS ? 0 : version) ||
	    erased_locked(gs, dataset_id, 0))
		d = (struct policy_decision){ .reason = POLICY_DENY_NO_GRANT };
	/* Refused whatever the grants say; still shown only to those a grant names (#14 5a). */
	if (quarantined(gs, dataset_id))
		d = (struct policy_decision){ .reason = POLICY_DENY_POLICY_MISMATCH,
					      .named = d.named };
	for (size_t j = 0; j < gs->nvq; j++)
		if (gs->vq[j] == dataset_id)
			d = (struct policy_decision){ .reason = POLICY_DENY_INTEGRITY,
						      .named = d.named };
	pthread_rwlock_unlock(&gs->lock);
	return d;
}

void grants_by_name(const struct policy_subject *by, char out[static POLICY_NAME_MAX + 1])
{
	if (by->user[0])
		snprintf(out, POLICY_NAME_MAX + 1, "%s", by->user);
	else
		snprintf(out, POLICY_NAME_MAX + 1, "%u", by->uid);
}

int grants_take_id(struct grants *gs, uint64_t *ret_id)
{
	uint8_t counter[8];
	uint64_t id = gs->next_id;
	int r;

	put_be64(counter, id + 1);
	r = store_policy_put(gs->st, "n", 1, counter, sizeof(counter));
	if (r < 0)
		return r;
	gs->next_id = id + 1;
	*ret_id = id;
	return 0;
}

/* Append rec as the policy record of writing type||be64 id [|| be32 sub] (sub < 0: none) = j
 * (taken over), then write that record. The audit record carries the record it makes (sealed),
 * the digest of the policy state before and after, and the next id, so the state in the index
 * stays bound to the log: the log first, as for every change. Under change_lock. */
int grants_policy_append(struct grants *gs, struct audit_log *log, json_t *rec, char type,
			 uint64_t id, int64_t sub, json_t *j, uint8_t *ret_subject)
{
	uint8_t key[13], after[AUDIT_POLICY_DIGEST_LEN];
	char khex[2 * 13 + 1], dhex[2 * AUDIT_POLICY_DIGEST_LEN + 1];
	char bhex[2 * AUDIT_POLICY_DIGEST_LEN + 1];
	size_t klen = sub >= 0 ? 13 : 9;
	json_t *puts;
	char *text;
	int r;

	if (!j)
		return -ENOMEM;
	/* A node removal's key rotation left unfinished: no record is written that the removed
	 * node could still unseal. */
	if (gs->rekey_due) {
		r = store_policy_rekey(gs->st);
		if (r < 0) {
			json_decref(j);
			return err_set(r, "the policy key rotation of a node removal is not finished "
				       "(%s): no policy record is written until it is",
				       err_detail());
		}
		gs->rekey_due = false;
	}
	text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	if (!text)
		return -ENOMEM;
	key[0] = (uint8_t)type;
	put_be64(key + 1, id);
	if (sub >= 0)
		put_be32(key + 9, (uint32_t)sub);
	memcpy(after, gs->pdigest, sizeof(after));
	r = digest_add(gs, key, klen, text, strlen(text), after, false);
	if (r < 0)
		goto out;
	hex(key, klen, khex);
	hex(after, sizeof(after), dhex);
	hex(gs->pdigest, sizeof(gs->pdigest), bhex);
	puts = json_pack("[{s:s, s:s}]", "k", khex, "v", text);
	if (!puts || json_object_set_new(rec, "policy_puts", puts) < 0 ||
	    json_object_set_new(rec, "policy_digest", json_string(dhex)) < 0 ||
	    json_object_set_new(rec, "policy_digest_before", json_string(bhex)) < 0 ||
	    json_object_set_new(rec, "next_id", json_integer((json_int_t)gs->next_id)) < 0) {
		r = -ENOMEM;
		goto out;
	}
	r = audit_append(log, rec, NULL);
	if (r < 0)
		goto out;
	r = store_policy_put(gs->st, key, klen, text, strlen(text));
	if (r < 0)
		goto out;
	/* Only now: a record that was not written leaves the digest of what is in the index. */
	r = digest_add(gs, key, klen, text, strlen(text), gs->pdigest, true);
	if (r == 0 && ret_subject)
		grants_subject_digest(key, klen, text, strlen(text), ret_subject);
out:
	free(text);
	return r;
}

void grants_subject_digest(const uint8_t *key, size_t klen, const void *val, size_t vlen,
			   uint8_t out[static APPROVALS_SUBJECT_LEN])
{
	static const char tag[] = "enclave-approval-subject-1";
	crypto_generichash_state h;

	crypto_generichash_init(&h, NULL, 0, APPROVALS_SUBJECT_LEN);
	crypto_generichash_update(&h, (const uint8_t *)tag, sizeof(tag) - 1);
	crypto_generichash_update(&h, key, klen);
	crypto_generichash_update(&h, val, vlen);
	crypto_generichash_final(&h, out, APPROVALS_SUBJECT_LEN);
}

int daemon_audit_subject(json_t *rec, const struct policy_subject *who)
{
	json_t *name = audit_string(who->user);

	if (!name || json_object_set_new(rec, "user", name) < 0 ||
	    json_object_set_new(rec, "uid", json_integer(who->uid)) < 0)
		return -ENOMEM;
	return 0;
}

/* ---- Grants as requests (approvals.h): 'g' the grant itself, 'h' an approval ----------------- */

/* Is `who` the grantee of g: its user, or a member of its group? */
static bool is_grantee(const struct policy_grant *g, const struct policy_subject *who)
{
	if (g->kind == POLICY_USER)
		return g->principal_id == who->uid;
	for (size_t i = 0; i < MIN(who->ngids, (size_t)POLICY_GROUPS_MAX); i++)
		if (who->gids[i] == g->principal_id)
			return true;
	return false;
}

static int grant_refuse(struct grants *gs, const struct pending *p,
			const struct policy_subject *by, int64_t now)
{
	const struct policy_grant *g = &gs->g[find(gs, p->id)];

	(void)now;
	if (is_grantee(g, by))
		return err_set(-EPERM, "grant %llu gives access to you (%s %s): its grantee cannot "
			       "approve it", (unsigned long long)p->id,
			       g->kind == POLICY_USER ? "user" : "a member of group", g->principal);
	if (g->revoked_at)
		return err_set(-ESTALE, "grant %llu was revoked", (unsigned long long)p->id);
	return 0;
}

static int grant_describe(struct grants *gs, const struct pending *p, json_t *rec)
{
	return json_object_set_new(rec, "dataset", audit_string(gs->g[find(gs, p->id)].dataset))
		       < 0 ? -ENOMEM : 0;
}

static void grant_approved(struct grants *gs, const struct pending *p,
			   const struct policy_approval *a)
{
	(void)a;
	gs->g[find(gs, p->id)].approvals = p->approvals;
}

/* Enter grant g (its id above every other: appending keeps the table sorted). */
static int grant_enter(struct grants *gs, const struct policy_grant *g)
{
	int r = grow(gs);

	if (r < 0)
		return r;
	gs->g[gs->n] = *g;
	gs->rev[gs->n] = (struct policy_revocation){ 0 };
	gs->n++;
	return 0;
}

static int grant_opened(struct grants *gs, const struct pending *p, void *arg)
{
	(void)p;
	return grant_enter(gs, arg);
}

static int grant_load(struct grants *gs, uint64_t id, const json_t *j, struct pending *ret)
{
	struct policy_grant g;
	int r;

	if ((r = policy_grant_from_json(j, &g)) < 0)
		return r;
	if (g.id != id || (gs->n && gs->g[gs->n - 1].id >= g.id))
		return err_set(-EBADMSG, "holds grant %llu", (unsigned long long)g.id);
	r = grant_enter(gs, &g);
	if (r < 0)
		return r;
	gs->next_id = MAX(gs->next_id, g.id + 1);
	ret->by_uid = g.granted_by_uid;
	ret->at = g.created;
	ret->required = g.approvals_required;
	ret->expires = g.expires;
	return 0;
}

const struct approval_kind approval_kind_grant = {
	.name = "grant",
	.request_noun = "a grant",
	.request_type = 'g',
	.approval_type = 'h',
	.done_type = 0,
	.approve_event = "grant_approve",
	.id_field = "grant_id",
	.approved_state = "active",
	.request_counts = false,
	.refuse = grant_refuse,
	.describe = grant_describe,
	.approved = grant_approved,
	.opened = grant_opened,
	.load = grant_load,
};

int grants_add(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
	       struct policy_grant *g)
{
	json_t *rec = NULL;
	uint64_t id;
	int r;

	pthread_mutex_lock(&gs->change_lock);
	g->id = gs->next_id;
	g->revoked_at = 0;
	g->approvals = 0;
	if (!g->purpose_code[0])
		snprintf(g->purpose_code, sizeof(g->purpose_code), "general");
	r = policy_grant_validate(g);
	if (r < 0)
		goto out;
	/* The counter first: an id that reaches the audit log is never handed out again, even if
	 * the grant record below is never written. */
	r = grants_take_id(gs, &id);
	if (r < 0)
		goto out;
	rec = json_pack("{s:s, s:I, s:o}", "event", "grant_request", "grant_id", (json_int_t)id,
			"grant", policy_grant_to_json(g));
	if (!rec || json_object_set_new(rec, "dataset", audit_string(g->dataset)) < 0 ||
	    (g->consent_override[0] &&
	     json_object_set_new(rec, "consent_override", audit_string(g->consent_override)) < 0)) {
		r = -ENOMEM;
		goto out;
	}
	r = approvals_open(gs, log, &approval_kind_grant, by, id, g->approvals_required,
			   g->expires, g->created, rec, policy_grant_to_json(g), g, NULL);
out:
	json_decref(rec);
	pthread_mutex_unlock(&gs->change_lock);
	return r;
}

int grants_approve(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		   uint64_t id, int64_t now, struct policy_grant *ret_grant)
{
	int r = approvals_approve(gs, log, &approval_kind_grant, by, id, now, NULL, NULL);

	if (r == 0 && ret_grant) {
		pthread_rwlock_rdlock(&gs->lock);
		*ret_grant = gs->g[find(gs, id)];
		pthread_rwlock_unlock(&gs->lock);
	}
	return r;
}

int grants_revoke(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		  uint64_t id, const char *reason, int64_t now, struct policy_grant *ret_grant,
		  struct policy_revocation *ret_rev)
{
	struct policy_revocation rv = { .grant_id = id, .by_uid = by->uid, .at = now };
	struct policy_grant g;
	json_t *rec = NULL;
	ssize_t i;
	int r;

	pthread_mutex_lock(&gs->change_lock);
	/* Only changes write the table, and they hold change_lock: reading it here is safe. */
	i = find(gs, id);
	if (i < 0) {
		r = err_set(-ENOENT, "no grant with id %llu", (unsigned long long)id);
		goto out;
	}
	g = gs->g[i];
	if (g.revoked_at) {
		r = err_set(-EEXIST, "grant %llu was already revoked", (unsigned long long)id);
		goto out;
	}
	/* A steward without a user name is recorded by number. */
	grants_by_name(by, rv.by);
	if (strlen(reason ? reason : "") > POLICY_REASON_MAX) {
		r = err_set(-EINVAL, "reason is longer than %d bytes", POLICY_REASON_MAX);
		goto out;
	}
	snprintf(rv.reason, sizeof(rv.reason), "%s", reason ? reason : "");
	rec = json_pack("{s:s, s:I, s:o}", "event", "revoke", "grant_id", (json_int_t)id, "reason",
			audit_string(rv.reason));
	if (!rec || daemon_audit_subject(rec, by) < 0 ||
	    json_object_set_new(rec, "dataset", audit_string(g.dataset)) < 0) {
		r = -ENOMEM;
		goto out;
	}
	/* Validate the revocation before anything is written. */
	r = policy_revocation_validate(&rv);
	if (r < 0)
		goto out;
	r = grants_policy_append(gs, log, rec, 'r', id, -1, policy_revocation_to_json(&rv), NULL);
	if (r < 0)
		goto out;
	pthread_rwlock_wrlock(&gs->lock);
	gs->g[i].revoked_at = now;
	gs->rev[i] = rv;
	g = gs->g[i];
	pthread_rwlock_unlock(&gs->lock);
	if (ret_grant)
		*ret_grant = g;
	if (ret_rev)
		*ret_rev = rv;
out:
	json_decref(rec);
	pthread_mutex_unlock(&gs->change_lock);
	return r;
}

int grants_snapshot(struct grants *gs, struct policy_grant **ret_grants,
		    struct policy_revocation **ret_revs, size_t *ret_n)
{
	struct policy_grant *g = NULL;
	struct policy_revocation *rv = NULL;
	size_t n;

	pthread_rwlock_rdlock(&gs->lock);
	n = gs->n;
	g = malloc(MAX(n, 1) * sizeof(*g));
	rv = ret_revs ? malloc(MAX(n, 1) * sizeof(*rv)) : NULL;
	if (g && (!ret_revs || rv) && n) {
		memcpy(g, gs->g, n * sizeof(*g));
		if (rv)
			memcpy(rv, gs->rev, n * sizeof(*rv));
	}
	pthread_rwlock_unlock(&gs->lock);
	if (!g || (ret_revs && !rv)) {
		free(g);
		free(rv);
		return -ENOMEM;
	}
	*ret_grants = g;
	if (ret_revs)
		*ret_revs = rv;
	*ret_n = n;
	return 0;
}

size_t grants_count(struct grants *gs)
{
	size_t n;

	pthread_rwlock_rdlock(&gs->lock);
	n = gs->n;
	pthread_rwlock_unlock(&gs->lock);
	return n;
}

int grants_approvals(struct grants *gs, uint64_t id, struct policy_approval **ret_approvals,
		     size_t *ret_n)
{
	return approvals_list(gs, &approval_kind_grant, id, ret_approvals, ret_n);
}

/* ---- Deny rules ------------------------------------------------------------------------------ */

int grants_deny_add(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		    struct policy_deny *x)
{
	json_t *rec = NULL;
	uint64_t id;
	int r;

	pthread_mutex_lock(&gs->change_lock);
	x->id = gs->next_id;
	x->removed_at = 0;
	r = policy_deny_validate(x);
	if (r < 0)
		goto out;
	/* The same subject and dataset blocked twice would take two removals to lift: refused,
	 * naming the rule in force (only changes write the table, and we hold change_lock). */
	for (size_t i = 0; i < gs->ndn; i++) {
		const struct policy_deny *d = &gs->dn[i];

		if (d->removed_at || d->kind != x->kind || d->principal_id != x->principal_id ||
		    d->dataset_id != x->dataset_id)
			continue;
		r = err_set(-EEXIST, "deny rule %llu already blocks %s%s from %s (reason: %.200s); "
			    "nothing was added", (unsigned long long)d->id,
			    d->kind == POLICY_USER ? "user " : d->kind == POLICY_GROUP ? "group " : "",
			    d->kind == POLICY_EVERYONE ? "everyone" : d->principal,
			    d->dataset_id ? d->dataset : "every dataset", d->reason);
		goto out;
	}
	r = grants_take_id(gs, &id);
	if (r < 0)
		goto out;
	rec = json_pack("{s:s, s:I, s:o}", "event", "deny_add", "rule_id", (json_int_t)id, "rule",
			policy_deny_to_json(x));
	if (!rec || daemon_audit_subject(rec, by) < 0 ||
	    (x->dataset[0] && json_object_set_new(rec, "dataset", audit_string(x->dataset)) < 0)) {
		r = -ENOMEM;
		goto out;
	}
	r = grants_policy_append(gs, log, rec, 'd', id, -1, policy_deny_to_json(x), NULL);
	if (r < 0)
		goto out;
	pthread_rwlock_wrlock(&gs->lock);
	r = grants_grow_array((void **)&gs->dn, sizeof(*gs->dn), gs->ndn, &gs->capdn, DENIES_MAX,
		       "deny rules");
	if (r == 0)
		gs->dn[gs->ndn++] = *x;   /* ids only grow: stays sorted */
	pthread_rwlock_unlock(&gs->lock);
out:
	json_decref(rec);
	pthread_mutex_unlock(&gs->change_lock);
	return r;
}

/* ---- Deny rule removals as requests (approvals.h): 'e' the request (keyed by the rule's id),
 * 'i' an approval; the approval that completes it removes the rule ---------------------------- */

/* Is `who` blocked by rule d by name: its user, or a member of its group (not "everyone")? */
static bool is_deny_subject(const struct policy_deny *d, const struct policy_subject *who)
{
	if (d->kind == POLICY_USER)
		return d->principal_id == who->uid;
	if (d->kind == POLICY_GROUP)
		for (size_t i = 0; i < MIN(who->ngids, (size_t)POLICY_GROUPS_MAX); i++)
			if (who->gids[i] == d->principal_id)
				return true;
	return false;
}

static int removal_missing(struct grants *gs, uint64_t id)
{
	ssize_t i = find_deny(gs, id);

	if (i < 0)
		return err_set(-ENOENT, "no deny rule with id %llu", (unsigned long long)id);
	if (gs->dn[i].removed_at)
		return err_set(-EEXIST, "deny rule %llu was already removed", (unsigned long long)id);
	return err_set(-ENOENT, "nobody asked to remove deny rule %llu ('deny remove %llu --reason "
		       "TEXT' first)", (unsigned long long)id, (unsigned long long)id);
}

static int removal_before(struct grants *gs, const struct pending *p,
			  const struct policy_subject *by, int64_t now)
{
	(void)by, (void)now;
	if (gs->dn[find_deny(gs, p->id)].removed_at)
		return err_set(-EEXIST, "deny rule %llu was already removed",
			       (unsigned long long)p->id);
	return 0;
}

static int removal_refuse(struct grants *gs, const struct pending *p,
			  const struct policy_subject *by, int64_t now)
{
	(void)now;
	if (is_deny_subject(&gs->dn[find_deny(gs, p->id)], by))
		return err_set(-EPERM, "deny rule %llu blocks you: you cannot approve its removal",
			       (unsigned long long)p->id);
	return 0;
}

static int removal_describe(struct grants *gs, const struct pending *p, json_t *rec)
{
	const struct policy_deny *d = &gs->dn[find_deny(gs, p->id)];

	if (d->dataset[0] && json_object_set_new(rec, "dataset", audit_string(d->dataset)) < 0)
		return -ENOMEM;
	return 0;
}

static void removal_approved(struct grants *gs, const struct pending *p,
			     const struct policy_approval *a)
{
	struct policy_deny *d = &gs->dn[find_deny(gs, p->id)];

	if (!d->removed_at && p->approvals >= p->required)
		d->removed_at = a->at;
}

/* Enter removal request x, keeping rm sorted by rule id (requests come in any order); with no
 * approvals needed the rule is removed at once. */
static int removal_enter(struct grants *gs, const struct policy_deny_removal *x)
{
	size_t at;
	int r;

	r = grants_grow_array((void **)&gs->rm, sizeof(*gs->rm), gs->nrm, &gs->caprm, DENIES_MAX,
			      "deny rule removals");
	if (r < 0)
		return r;
	at = gs->nrm;
	while (at > 0 && gs->rm[at - 1].deny_id > x->deny_id)
		at--;
	memmove(&gs->rm[at + 1], &gs->rm[at], (gs->nrm - at) * sizeof(*gs->rm));
	gs->rm[at] = *x;
	gs->nrm++;
	if (x->approvals_required == 0)
		gs->dn[find_deny(gs, x->deny_id)].removed_at = x->at;
	return 0;
}

static int removal_opened(struct grants *gs, const struct pending *p, void *arg)
{
	(void)p;
	return removal_enter(gs, arg);
}

static int removal_load(struct grants *gs, uint64_t id, const json_t *j, struct pending *ret)
{
	struct policy_deny_removal x;
	int r;

	if ((r = policy_deny_removal_from_json(j, &x)) < 0)
		return r;
	if (x.deny_id != id || find_deny(gs, x.deny_id) < 0)
		return err_set(-EBADMSG, "does not match a deny rule");
	r = removal_enter(gs, &x);
	if (r < 0)
		return r;
	ret->by_uid = x.by_uid;
	ret->at = x.at;
	ret->required = x.approvals_required;
	return 0;
}

const struct approval_kind approval_kind_deny_removal = {
	.name = "the removal of deny rule",
	.request_noun = "a requested deny rule removal",
	.request_type = 'e',
	.approval_type = 'i',
	.done_type = 0,
	.approve_event = "deny_remove_approve",
	.id_field = "rule_id",
	.approved_state = "removed",
	.request_counts = true,
	.missing = removal_missing,
	.before = removal_before,
	.refuse = removal_refuse,
	.describe = removal_describe,
	.approved = removal_approved,
	.opened = removal_opened,
	.load = removal_load,
};

int grants_deny_remove(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		       uint64_t id, const char *reason, uint32_t approvals_required, int64_t now,
		       struct policy_deny *ret_deny)
{
	struct policy_deny_removal x = { .deny_id = id, .by_uid = by->uid, .at = now,
					 .approvals_required = approvals_required };
	struct policy_deny d;
	json_t *rec = NULL;
	ssize_t i, k;
	int r;

	pthread_mutex_lock(&gs->change_lock);
	i = find_deny(gs, id);
	if (i < 0) {
		r = err_set(-ENOENT, "no deny rule with id %llu", (unsigned long long)id);
		goto out;
	}
	d = gs->dn[i];
	if (d.removed_at) {
		r = err_set(-EEXIST, "deny rule %llu was already removed", (unsigned long long)id);
		goto out;
	}
	k = find_removal(gs, id);
	if (k >= 0) {
		r = err_set(-EALREADY, "the removal of deny rule %llu was requested by %s already; it "
			    "waits for another steward's 'deny approve %llu'",
			    (unsigned long long)id, gs->rm[k].by, (unsigned long long)id);
		goto out;
	}
	grants_by_name(by, x.by);
	snprintf(x.reason, sizeof(x.reason), "%s", reason ? reason : "");
	if (!x.reason[0]) {
		r = err_set(-EINVAL, "removing a deny rule needs a reason");
		goto out;
	}
	r = policy_deny_removal_validate(&x);
	if (r < 0)
		goto out;
	rec = json_pack("{s:s, s:I, s:o}", "event", "deny_remove", "rule_id", (json_int_t)id,
			"reason", audit_string(x.reason));
	if (!rec ||
	    (d.dataset[0] && json_object_set_new(rec, "dataset", audit_string(d.dataset)) < 0)) {
		r = -ENOMEM;
		goto out;
	}
	r = approvals_open(gs, log, &approval_kind_deny_removal, by, id, approvals_required, 0, now,
			   rec, policy_deny_removal_to_json(&x), &x, NULL);
	if (r == 0 && ret_deny) {
		pthread_rwlock_rdlock(&gs->lock);
		*ret_deny = gs->dn[i];
		pthread_rwlock_unlock(&gs->lock);
	}
out:
	json_decref(rec);
	pthread_mutex_unlock(&gs->change_lock);
	return r;
}

int grants_deny_approve(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
			uint64_t id, int64_t now, struct policy_deny *ret_deny)
{
	int r = approvals_approve(gs, log, &approval_kind_deny_removal, by, id, now, NULL, NULL);

	if (r == 0 && ret_deny) {
		pthread_rwlock_rdlock(&gs->lock);
		*ret_deny = gs->dn[find_deny(gs, id)];
		pthread_rwlock_unlock(&gs->lock);
	}
	return r;
}

int grants_deny_removal(struct grants *gs, uint64_t id, struct policy_deny_removal *ret_removal,
			struct policy_approval **ret_approvals, size_t *ret_n)
{
	struct policy_deny_removal x;
	ssize_t k;

	pthread_rwlock_rdlock(&gs->lock);
	k = find_removal(gs, id);
	if (k >= 0)
		x = gs->rm[k];
	pthread_rwlock_unlock(&gs->lock);
	if (k < 0)
		return -ENOENT;
	*ret_removal = x;
	return approvals_list(gs, &approval_kind_deny_removal, id, ret_approvals, ret_n);
}

int grants_deny_snapshot(struct grants *gs, struct policy_deny **ret_denies, size_t *ret_n)
{
	struct policy_deny *d;
	size_t n;

	pthread_rwlock_rdlock(&gs->lock);
	n = gs->ndn;
	d = malloc(MAX(n, 1) * sizeof(*d));
	/* n == 0: gs->dn may be NULL, which memcpy() must not be given even for 0 bytes. */
	if (d && n)
		memcpy(d, gs->dn, n * sizeof(*d));
	pthread_rwlock_unlock(&gs->lock);
	if (!d)
		return -ENOMEM;
	*ret_denies = d;
	*ret_n = n;
	return 0;
}

/* ---- Dataset policies ------------------------------------------------------------------------ */

int grants_dataset_get(struct grants *gs, uint64_t dataset_id, struct policy_dataset *ret_policy)
{
	ssize_t i;

	pthread_rwlock_rdlock(&gs->lock);
	i = find_dataset(gs, dataset_id);
	if (i >= 0)
		*ret_policy = gs->dp[i];
	pthread_rwlock_unlock(&gs->lock);
	return i >= 0 ? 0 : -ENOENT;
}

int grants_dataset_set(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		       const struct policy_dataset *p, const char *event)
{
	json_t *rec = NULL;
	int r;

	pthread_mutex_lock(&gs->change_lock);
	r = policy_dataset_validate(p);
	if (r < 0)
		goto out;
	rec = json_pack("{s:s, s:s, s:I, s:o}", "event", event, "dataset", p->dataset,
			"dataset_id", (json_int_t)p->dataset_id, "policy",
			policy_dataset_to_json(p));
	if (!rec || daemon_audit_subject(rec, by) < 0) {
		r = -ENOMEM;
		goto out;
	}
	r = grants_policy_append(gs, log, rec, 'c', p->dataset_id, -1, policy_dataset_to_json(p),
				 NULL);
	if (r < 0)
		goto out;
	pthread_rwlock_wrlock(&gs->lock);
	r = dataset_put(gs, p);
	pthread_rwlock_unlock(&gs->lock);
out:
	json_decref(rec);
	pthread_mutex_unlock(&gs->change_lock);
	return r;
}

bool grants_cache_kernel(struct grants *gs, uint64_t dataset_id)
{
	bool kernel;
	ssize_t i;

	pthread_rwlock_rdlock(&gs->lock);
	i = find_dataset(gs, dataset_id);
	kernel = i >= 0 && gs->dp[i].cache == POLICY_CACHE_KERNEL;
	pthread_rwlock_unlock(&gs->lock);
	return kernel;
}

/* ---- The watch thread ------------------------------------------------------------------------ */

struct crossed {
	uint64_t dataset_id;
	char name[POLICY_DATASET_MAX + 1];
};

/* The datasets with a grant whose not_before or expires lies in (last, now]: at most max of
 * them, distinct, into out. */
static size_t find_crossed(struct grants *gs, int64_t last, int64_t now, struct crossed *out,
			   size_t max)
{
	size_t n = 0;

	pthread_rwlock_rdlock(&gs->lock);
	for (size_t i = 0; i < gs->n && n < max; i++) {
		const struct policy_grant *g = &gs->g[i];
		bool seen = false;

		if (!((g->not_before > last && g->not_before <= now) ||
		      (g->expires > last && g->expires <= now)))
			continue;
		for (size_t k = 0; k < n && !seen; k++)
			seen = out[k].dataset_id == g->dataset_id;
		if (seen)
			continue;
		out[n].dataset_id = g->dataset_id;
		snprintf(out[n].name, sizeof(out[n].name), "%s", g->dataset);
		n++;
	}
	pthread_rwlock_unlock(&gs->lock);
	return n;
}

/* Datasets reported per look, at most; more wait for the next look (250 ms later). */
#define WATCH_BATCH 64

/* One grant crossing one of its times. */
struct timed {
	struct policy_grant g;
	bool started;           /* its not_before (else its expires) */
};

/* The grants (not revoked) whose not_before (later than their creation) or expires lies in
 * (last, now], each time its own entry: a new array in *ret (NULL when none), its length returned. Bounded by the grant table,
 * itself capped at GRANTS_MAX. */
static size_t find_timed(struct grants *gs, int64_t last, int64_t now, struct timed **ret)
{
	struct timed *out = NULL;
	size_t n = 0, cap = 0;

	pthread_rwlock_rdlock(&gs->lock);
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < gs->n; i++) {
			const struct policy_grant *g = &gs->g[i];
			/* A grant in force from its request on (not_before its creation) does not
			 * "start" later: only a start that was scheduled is an event. */
			bool s = g->not_before > last && g->not_before <= now &&
				 g->not_before > g->created;
			bool e = g->expires > last && g->expires <= now;

			if (g->revoked_at || (!s && !e))
				continue;
			if (pass == 0) {
				cap += s + e;
				continue;
			}
			if (s)
				out[n++] = (struct timed){ .g = *g, .started = true };
			if (e)
				out[n++] = (struct timed){ .g = *g, .started = false };
		}
		if (pass == 0 && (cap == 0 || !(out = calloc(cap, sizeof(*out)))))
			break;
	}
	pthread_rwlock_unlock(&gs->lock);
	*ret = out;
	return n;
}

/* The record of one grant crossing a time. The grant changes nothing by it (decisions read the
 * clock); the record says when the daemon saw it. */
static int record_timed(struct audit_log *log, const struct timed *t)
{
	char when[TIME_TEXT_MAX];
	json_t *rec;
	int r;

	time_format(t->started ? t->g.not_before : t->g.expires, when);
	rec = json_pack("{s:s, s:I, s:I, s:s, s:I, s:s}", "event",
			t->started ? "grant_started" : "grant_expired", "grant_id",
			(json_int_t)t->g.id, "dataset_id", (json_int_t)t->g.dataset_id,
			"grantee_kind", t->g.kind == POLICY_GROUP ? "group" : "user", "grantee_id",
			(json_int_t)t->g.principal_id, t->started ? "not_before" : "expires", when);
	if (!rec || json_object_set_new(rec, "dataset", audit_string(t->g.dataset)) < 0 ||
	    json_object_set_new(rec, "grantee", audit_string(t->g.principal)) < 0 ||
	    (t->g.version != POLICY_ALL_VERSIONS &&
	     json_object_set_new(rec, "version", json_integer(t->g.version)) < 0)) {
		json_decref(rec);
		return -ENOMEM;
	}
	r = audit_append(log, rec, NULL);
	json_decref(rec);
	return r;
}

/* Record, once per daemon run, each dataset whose retention date has passed: `erasure_due`.
 * Erasure stays a steward's act (dataset erase, approved); this only says it is due. */
static void record_due(struct grants *gs, struct audit_log *log, int64_t now)
{
	struct due *found = NULL;
	char (*names)[POLICY_DATASET_MAX + 1] = NULL;
	size_t n = 0;

	pthread_rwlock_rdlock(&gs->lock);
	for (size_t i = 0; i < gs->ndp; i++) {
		const struct policy_dataset *p = &gs->dp[i];
		bool seen = false;

		if (!p->retain_until || (int64_t)p->retain_until > now ||
		    erased_locked(gs, p->dataset_id, 0))
			continue;
		for (size_t k = 0; k < gs->ndue && !seen; k++)
			seen = gs->due[k].dsid == p->dataset_id && gs->due[k].until == p->retain_until;
		if (seen)
			continue;
		if (!found) {
			found = calloc(gs->ndp, sizeof(*found));
			names = calloc(gs->ndp, sizeof(*names));
			if (!found || !names)
				break;
		}
		found[n] = (struct due){ .dsid = p->dataset_id, .until = p->retain_until };
		snprintf(names[n], sizeof(names[n]), "%s", p->dataset);
		n++;
	}
	pthread_rwlock_unlock(&gs->lock);
	for (size_t i = 0; found && names && i < n; i++) {
		char t[TIME_TEXT_MAX];
		struct due *d;
		json_t *rec;

		time_format((int64_t)found[i].until, t);
		rec = json_pack("{s:s, s:I, s:s}", "event", "erasure_due", "dataset_id",
				(json_int_t)found[i].dsid, "retain_until", t);
		if (!rec || json_object_set_new(rec, "dataset", audit_string(names[i])) < 0 ||
		    audit_append(log, rec, NULL) < 0) {
			json_decref(rec);
			fprintf(stderr, "enclaved: cannot record that the retention of dataset %" PRIu64
				" has passed: %s\n", found[i].dsid,
				err_detail()[0] ? err_detail() : "the audit log failed");
			continue;
		}
		json_decref(rec);
		fprintf(stderr, "enclaved: dataset %s is past its retention date (%s): its erasure "
			"is due ('enclavectl dataset erase %s --reason ...')\n", names[i], t, names[i]);
		d = realloc(gs->due, (gs->ndue + 1) * sizeof(*d));
		if (d) {
			gs->due = d;
			gs->due[gs->ndue++] = found[i];
		}
	}
	free(found);
	free(names);
}

static void *watch_main(void *arg)
{
	struct grants *gs = arg;
	struct crossed batch[WATCH_BATCH];
	int64_t last = time(NULL), last_timed = last;

	pthread_mutex_lock(&gs->watch_lock);
	while (!gs->watch_stop) {
		struct timespec until;
		int64_t now;
		size_t n;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += WATCH_INTERVAL_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&gs->watch_cond, &gs->watch_lock, &until);
		if (gs->watch_stop)
			break;
		now = time(NULL);
		if (now <= last)
			continue;
		pthread_mutex_unlock(&gs->watch_lock);
		if (gs->watch_log) {
			struct timed *t = NULL;
			/* Its own mark: unlike the datasets' batch, nothing here is looked at twice. */
			size_t nt = find_timed(gs, last_timed, now, &t);

			last_timed = now;

			/* A record that cannot be written is lost with the log's failure, which
			 * refuses every open until it can write again; the expiry holds anyway. */
			record_due(gs, gs->watch_log, now);
			for (size_t i = 0; i < nt; i++)
				if (record_timed(gs->watch_log, &t[i]) < 0)
					fprintf(stderr, "enclaved: cannot record that grant %" PRIu64
						" %s: %s\n", t[i].g.id, t[i].started ? "started" :
						"expired", err_detail()[0] ? err_detail() :
						"the audit log failed");
			free(t);
		}
		if (gs->tick)
			gs->tick(gs->tick_ctx);
		n = find_crossed(gs, last, now, batch, ARRAY_SIZE(batch));
		for (size_t i = 0; i < n; i++)
			gs->changed(gs->changed_ctx, batch[i].dataset_id, batch[i].name);
		/* A full batch may have left some out: look at the same second again. */
		if (n < ARRAY_SIZE(batch))
			last = now;
		pthread_mutex_lock(&gs->watch_lock);
	}
	pthread_mutex_unlock(&gs->watch_lock);
	return NULL;
}

int grants_watch_start(struct grants *gs,
		       void (*changed)(void *ctx, uint64_t dataset_id, const char *name),
		       void *ctx)
{
	int r = 0;

	if (!changed)
		return err_set(-EINVAL, "grants_watch_start: no callback");
	pthread_mutex_lock(&gs->watch_lock);
	if (gs->watching) {
		r = err_set(-EBUSY, "the grant watch thread runs already");
		goto out;
	}
	gs->changed = changed;
	gs->changed_ctx = ctx;
	gs->watch_stop = false;
	if (pthread_create(&gs->watch_thread, NULL, watch_main, gs) != 0) {
		r = err_set(-EAGAIN, "cannot start the grant watch thread");
		goto out;
	}
	gs->watching = true;
out:
	pthread_mutex_unlock(&gs->watch_lock);
	return r;
}

void grants_watch_record(struct grants *gs, struct audit_log *log)
{
	pthread_mutex_lock(&gs->watch_lock);
	gs->watch_log = log;
	pthread_mutex_unlock(&gs->watch_lock);
}

void grants_watch_tick(struct grants *gs, void (*tick)(void *ctx), void *ctx)
{
	pthread_mutex_lock(&gs->watch_lock);
	gs->tick = tick;
	gs->tick_ctx = ctx;
	pthread_mutex_unlock(&gs->watch_lock);
}

void grants_watch_stop(struct grants *gs)
{
	bool join;

	if (!gs)
		return;
	pthread_mutex_lock(&gs->watch_lock);
	join = gs->watching;
	gs->watch_stop = true;
	gs->watching = false;
	pthread_cond_broadcast(&gs->watch_cond);
	pthread_mutex_unlock(&gs->watch_lock);
	if (join)
		pthread_join(gs->watch_thread, NULL);
}

/* ---- Bound to the log (docs/POLICY.md "Bound to the log") ------------------------------------ */

/* Most disagreements named one by one; the rest are counted. */
#define FINDINGS_MAX 100
/* A snapshot record holds at most this many bytes of records; a larger state takes several. */
#define SNAPSHOT_CHUNK (40u * 1024)

/* Every record of the index but "n": hex key -> value text. */
static int collect_index(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	char khex[2 * STORE_POLICY_KEY_MAX + 1];
	json_t *m = ctx, *v;

	if (klen == 1 && ((const uint8_t *)key)[0] == 'n')
		return 0;
	if (klen > STORE_POLICY_KEY_MAX)
		return -EBADMSG;
	hex(key, klen, khex);
	v = json_stringn(val, vlen);
	if (!v)
		v = json_string("(not UTF-8)");
	return json_object_set_new(m, khex, v) < 0 ? -ENOMEM : 0;
}

static int hex_key(const char *s, uint8_t out[static 13], size_t *ret_len)
{
	size_t n = 0;

	if (sodium_hex2bin(out, 13, s, strlen(s), NULL, &n, NULL) != 0 || (n != 9 && n != 13))
		return -EINVAL;
	*ret_len = n;
	return 0;
}

/* The dataset id of the record "t||id" in either state (0: every dataset or unknown). */
static uint64_t dataset_of(const json_t *a, const json_t *b, char t, uint64_t id, bool *ret_known)
{
	uint8_t key[9];
	char khex[19];
	const char *text;

	key[0] = (uint8_t)t;
	put_be64(key + 1, id);
	hex(key, 9, khex);
	text = json_string_value(json_object_get(a, khex));
	if (!text)
		text = json_string_value(json_object_get(b, khex));
	*ret_known = false;
	if (text) {
		json_t *j = json_loads(text, 0, NULL);
		const json_t *d = json_object_get(j, "dataset_id");

		if (json_is_integer(d)) {
			uint64_t v = (uint64_t)json_integer_value(d);

			json_decref(j);
			*ret_known = v != 0;
			return v;
		}
		json_decref(j);
	}
	return 0;
}

static int quarantine(struct grants *gs, bool all, uint64_t dsid)
{
	int r = 0;

	pthread_rwlock_wrlock(&gs->lock);
	if (all) {
		gs->q_all = true;
	} else if (!quarantined(gs, dsid)) {
		uint64_t *q = realloc(gs->q, (gs->nq + 1) * sizeof(*q));

		if (q) {
			gs->q = q;
			gs->q[gs->nq++] = dsid;
		} else {
			r = -ENOMEM;
		}
	}
	pthread_rwlock_unlock(&gs->lock);
	return r;
}

/* Name the difference in record k between the log's state (lv) and the index's (iv). */
static void describe(const char *khex, const char *lv, const char *iv, char *out, size_t n)
{
	uint8_t key[13];
	size_t kl = 0;
	char what[96];
	const char *how;
	uint64_t id;
	unsigned sub;

	if (hex_key(khex, key, &kl) < 0) {
		snprintf(out, n, "policy record %s %s", khex, lv ? "is missing from the index" :
			 "is in the index but not in the audit log");
		return;
	}
	id = get_be64(key + 1);
	sub = kl == 13 ? get_be32(key + 9) : 0;
	switch (key[0]) {
	case 'g': snprintf(what, sizeof(what), "grant %llu", (unsigned long long)id); break;
	case 'r': snprintf(what, sizeof(what), "the revocation of grant %llu",
			   (unsigned long long)id); break;
	case 'h': snprintf(what, sizeof(what), "the approval of grant %llu by uid %u",
			   (unsigned long long)id, sub); break;
	case 'd': snprintf(what, sizeof(what), "deny rule %llu", (unsigned long long)id); break;
	case 'e': snprintf(what, sizeof(what), "the removal of deny rule %llu",
			   (unsigned long long)id); break;
	case 'i': snprintf(what, sizeof(what), "the approval by uid %u of removing deny rule %llu",
			   sub, (unsigned long long)id); break;
	case 'c': snprintf(what, sizeof(what), "the policy of dataset %llu",
			   (unsigned long long)id); break;
	case 'x': snprintf(what, sizeof(what), "export %llu", (unsigned long long)id); break;
	case 'y': snprintf(what, sizeof(what), "the approval of export %llu by uid %u",
			   (unsigned long long)id, sub); break;
	case 'z': snprintf(what, sizeof(what), "the run of export %llu", (unsigned long long)id);
		break;
	case 'u': snprintf(what, sizeof(what), "erasure request %llu", (unsigned long long)id);
		break;
	case 'v': snprintf(what, sizeof(what), "the approval of erasure %llu by uid %u",
			   (unsigned long long)id, sub); break;
	case 'w': snprintf(what, sizeof(what), "the completion of erasure %llu",
			   (unsigned long long)id); break;
	default: snprintf(what, sizeof(what), "policy record %s", khex); break;
	}
	if (lv && !iv) {
		switch (key[0]) {
		case 'r': how = "is in the audit log but not in the index: a rollback (a revoked "
				"grant is back)"; break;
		case 'e': how = "is in the audit log but not in the index: a rollback (a removed "
				"deny rule is back)"; break;
		case 'h': case 'i': case 'v':
			how = "is in the audit log but not in the index: a rollback (an approval "
			      "was lost)"; break;
		case 'w': how = "is in the audit log but not in the index: a rollback (erased "
				"data is back?)"; break;
		default: how = "is in the audit log but not in the index: a rollback (an older "
			       "index put back?)"; break;
		}
	} else if (!lv && iv) {
		how = "is in the index but the audit log never recorded it: an injection (written "
		      "into the index directly?)";
	} else {
		how = "differs between the index and the audit log";
	}
	snprintf(out, n, "%s %s", what, how);
}

/* Compare the index with the log's replayed state: name every difference, and stop serving the
 * datasets they concern. The findings (a JSON array of strings) go to *ret_findings. */
static int compare_with_log(struct grants *gs, const json_t *logst, json_t **ret_findings,
			    json_t **ret_datasets, bool *ret_all)
{
	json_t *idx = json_object(), *findings = json_array(), *dsids = json_array();
	const char *k;
	json_t *v;
	uint64_t dropped = 0;
	bool all = false;
	int r;

	if (!idx || !findings || !dsids) {
		r = -ENOMEM;
		goto out;
	}
	r = store_policy_foreach(gs->st, collect_index, idx);
	if (r < 0)
		goto out;
	for (int pass = 0; pass < 2; pass++) {
		const json_t *a = pass == 0 ? logst : idx, *b = pass == 0 ? idx : logst;

		json_object_foreach((json_t *)a, k, v) {
			const char *av = json_string_value(v);
			const char *bv = json_string_value(json_object_get(b, k));
			uint8_t key[13], ha[32], hb[32];
			char text[320];
			size_t kl = 0;
			uint64_t dsid = 0;
			bool known = false;
			char t;

			if (pass == 1 && bv)
				continue;	/* compared in the first pass */
			if (bv && hex_key(k, key, &kl) == 0) {
				audit_policy_record_hash(gs->pkey, key, kl, av, strlen(av), ha);
				audit_policy_record_hash(gs->pkey, key, kl, bv, strlen(bv), hb);
				if (sodium_memcmp(ha, hb, sizeof(ha)) == 0)
					continue;
			}
			describe(k, pass == 0 ? av : NULL, pass == 0 ? bv : av, text,
				 sizeof(text));
			if (json_array_size(findings) < FINDINGS_MAX)
				json_array_append_new(findings, json_string(text));
			else
				dropped++;
			if (hex_key(k, key, &kl) < 0) {
				all = true;
				continue;
			}
			t = (char)key[0];
			if (t == 'c')
				dsid = get_be64(key + 1), known = true;
			else if (t == 'g' || t == 'r' || t == 'h')
				dsid = dataset_of(logst, idx, 'g', get_be64(key + 1), &known);
			else if (t == 'x' || t == 'y' || t == 'z')
				dsid = dataset_of(logst, idx, 'x', get_be64(key + 1), &known);
			/* An erasure request, an approval of it, its completion: the dataset the
			 * request names (either side's), and only that one. */
			else if (t == 'u' || t == 'v' || t == 'w')
				dsid = dataset_of(logst, idx, 'u', get_be64(key + 1), &known);
			else if (t == 'd' || t == 'e' || t == 'i')
				dsid = dataset_of(logst, idx, 'd', get_be64(key + 1), &known);
			/* Anything else (a node's enrolment or removal, whose keys reach every
			 * dataset; a record type this build does not know) stays unknown: every
			 * dataset is refused. */
			if (!known)
				all = true;
			else
				json_array_append_new(dsids, json_integer((json_int_t)dsid));
			r = quarantine(gs, !known, dsid);
			if (r < 0)
				goto out;
		}
	}
	if (dropped) {
		char text[96];

		snprintf(text, sizeof(text), "and %llu more", (unsigned long long)dropped);
		json_array_append_new(findings, json_string(text));
	}
	*ret_findings = findings;
	*ret_datasets = dsids;
	*ret_all = all;
	findings = dsids = NULL;
	r = 0;
out:
	json_decref(idx);
	json_decref(findings);
	json_decref(dsids);
	return r;
}

/* Write the whole index state to the log as policy_snapshot records (the first clears a
 * replay), the last with the digest: the log's anchor for a store whose log has none. */
static int snapshot(struct grants *gs, struct audit_log *log, const char *event)
{
	json_t *idx = json_object(), *puts = NULL, *rec = NULL;
	char dhex[2 * AUDIT_POLICY_DIGEST_LEN + 1];
	const char *k;
	json_t *v;
	size_t bytes = 0, left;
	bool first = true;
	int r;

	if (!idx)
		return -ENOMEM;
	r = store_policy_foreach(gs->st, collect_index, idx);
	if (r < 0)
		goto out;
	hex(gs->pdigest, sizeof(gs->pdigest), dhex);
	left = json_object_size(idx);
	puts = json_array();
	json_object_foreach(idx, k, v) {
		r = json_array_append_new(puts, json_pack("{s:s, s:O}", "k", k, "v", v)) < 0 ?
		    -ENOMEM : 0;
		if (r < 0)
			goto out;
		bytes += strlen(k) + json_string_length(v) + 16;
		left--;
		if (bytes < SNAPSHOT_CHUNK && left > 0)
			continue;
		rec = json_pack("{s:s, s:o}", "event", first ? event : "policy_snapshot_more",
				"policy_puts", puts);
		puts = json_array();
		if (!rec || !puts) {
			r = -ENOMEM;
			goto out;
		}
		if (left == 0 &&
		    (json_object_set_new(rec, "policy_digest", json_string(dhex)) < 0 ||
		     json_object_set_new(rec, "policy_digest_before", json_string(dhex)) < 0 ||
		     json_object_set_new(rec, "next_id", json_integer((json_int_t)gs->next_id)) < 0)) {
			r = -ENOMEM;
			goto out;
		}
		r = audit_append(log, rec, NULL);
		json_decref(rec);
		rec = NULL;
		if (r < 0)
			goto out;
		first = false;
		bytes = 0;
	}
	if (first) {	/* an empty state: one record */
		rec = json_pack("{s:s, s:o, s:s, s:s, s:I}", "event", event, "policy_puts", puts,
				"policy_digest", dhex, "policy_digest_before", dhex, "next_id",
				(json_int_t)gs->next_id);
		puts = NULL;
		r = rec ? audit_append(log, rec, NULL) : -ENOMEM;
	}
out:
	json_decref(rec);
	json_decref(puts);
	json_decref(idx);
	return r;
}

/* The policy record at seq, opened with the store key (its epoch's key record read first). */
static int open_policy_record(struct audit_log *log, const uint8_t store_key[static 32],
			      const json_t *rec, json_t **ret)
{
	struct audit_opener *o = NULL;
	const json_t *kj = json_object_get(rec, "key");
	char *line = NULL;
	size_t len = 0;
	json_t *krec = NULL, *tmp = NULL;
	int r;

	if (!audit_record_sealed(rec)) {
		*ret = json_incref((json_t *)rec);
		return 0;
	}
	if (!json_is_integer(kj))
		return err_set(-EBADMSG, "a sealed policy record without a key record");
	r = audit_opener_new(store_key, NULL, &o);
	if (r < 0)
		return r;
	r = audit_record_line(log, (uint64_t)json_integer_value(kj), &line, &len);
	if (r == 0) {
		krec = json_loadb(line, len, 0, NULL);
		r = krec ? audit_opener_open(o, krec, &tmp) : -EBADMSG;
	}
	if (r == 0)
		r = audit_opener_open(o, rec, ret);
	json_decref(tmp);
	json_decref(krec);
	free(line);
	audit_opener_free(o);
	return r;
}

int grants_bind_log(struct grants *gs, struct audit_log *log, const char *audit_dir,
		    const uint8_t store_key[static 32], json_t **ret_findings)
{
	uint8_t d[AUDIT_POLICY_DIGEST_LEN], b[AUDIT_POLICY_DIGEST_LEN];
	json_t *rec = NULL, *opened = NULL, *logst = NULL, *findings = NULL, *dsids = NULL;
	const char *dh, *bh;
	char *line = NULL;
	uint64_t seq = 0, max_id = 0;
	size_t len = 0, n = 0;
	bool all = false;
	int r;

	*ret_findings = NULL;
	pthread_mutex_lock(&gs->change_lock);
	r = audit_policy_head(log, &seq, &line, &len);
	if (r == -ENOENT) {
		/* No policy record yet (a new store, or a log from before them): the index as it
		 * is becomes the log's starting point. */
		r = snapshot(gs, log, "policy_snapshot");
		goto out;
	}
	if (r < 0)
		goto out;
	rec = json_loadb(line, len, 0, NULL);
	dh = json_string_value(json_object_get(rec, "policy_digest"));
	bh = json_string_value(json_object_get(rec, "policy_digest_before"));
	if (!dh || !bh || sodium_hex2bin(d, sizeof(d), dh, strlen(dh), NULL, &n, NULL) != 0 ||
	    n != sizeof(d) || sodium_hex2bin(b, sizeof(b), bh, strlen(bh), NULL, &n, NULL) != 0 ||
	    n != sizeof(b)) {
		r = err_set(-EBADMSG, "audit record %llu is not a policy record",
			    (unsigned long long)seq);
		goto out;
	}
	if (json_is_integer(json_object_get(rec, "next_id")))
		gs->next_id = MAX(gs->next_id,
				  (uint64_t)json_integer_value(json_object_get(rec, "next_id")));
	if (sodium_memcmp(d, gs->pdigest, sizeof(d)) == 0)
		goto out;	/* the index is what the log says */
	if (sodium_memcmp(b, gs->pdigest, sizeof(b)) == 0) {
		/* The index lacks exactly the last recorded change (a crash between the record
		 * and the write, or that one change undone): complete it from the log. */
		const json_t *p;
		size_t i;

		r = open_policy_record(log, store_key, rec, &opened);
		if (r < 0)
			goto out;
		json_array_foreach(json_object_get(opened, "policy_puts"), i, p) {
			const char *k = json_string_value(json_object_get(p, "k"));
			const char *v = json_string_value(json_object_get(p, "v"));
			uint8_t key[13];
			size_t kl = 0;

			if (!k || !v || hex_key(k, key, &kl) < 0) {
				r = err_set(-EBADMSG, "audit record %llu: a malformed policy put",
					    (unsigned long long)seq);
				goto out;
			}
			r = store_policy_put(gs->st, key, kl, v, strlen(v));
			if (r < 0)
				goto out;
		}
		json_decref(opened);
		opened = json_pack("{s:s, s:I}", "event", "policy_completed", "completed",
				   (json_int_t)seq);
		r = opened ? audit_append(log, opened, NULL) : -ENOMEM;
		if (r == 0)
			r = -EAGAIN;	/* the caller loads the grants again */
		goto out;
	}

	/* They disagree: replay the log (the source of truth) and name every difference. */
	r = audit_policy_replay(audit_dir, store_key, &logst, &max_id, NULL);
	if (r < 0)
		goto out;
	gs->next_id = MAX(gs->next_id, max_id + 1);
	r = compare_with_log(gs, logst, &findings, &dsids, &all);
	if (r < 0)
		goto out;
	json_decref(rec);
	rec = json_pack("{s:s, s:O, s:O, s:b}", "event", "policy_mismatch", "findings", findings,
			"datasets", dsids, "all_datasets", all);
	r = rec ? audit_append(log, rec, NULL) : -ENOMEM;
	if (r < 0)
		goto out;
	*ret_findings = findings;
	findings = NULL;
out:
	pthread_mutex_unlock(&gs->change_lock);
	json_decref(rec);
	json_decref(opened);
	json_decref(logst);
	json_decref(findings);
	json_decref(dsids);
	free(line);
	return r;
}

bool grants_serving_all(struct grants *gs)
{
	bool ok;

	pthread_rwlock_rdlock(&gs->lock);
	ok = !gs->q_all && gs->nq == 0 && gs->nvq == 0;
	pthread_rwlock_unlock(&gs->lock);
	return ok;
}

int grants_refuse_dataset(struct grants *gs, uint64_t dataset_id)
{
	int r = 0;

	pthread_rwlock_wrlock(&gs->lock);
	for (size_t i = 0; i < gs->nvq; i++)
		if (gs->vq[i] == dataset_id)
			goto out;
	r = grants_grow_array((void **)&gs->vq, sizeof(*gs->vq), gs->nvq, &gs->capvq, DATASETS_MAX,
		       "refused datasets");
	if (r == 0)
		gs->vq[gs->nvq++] = dataset_id;
out:
	pthread_rwlock_unlock(&gs->lock);
	return r;
}

/* ---- Exports ----------------------------------------------------------------------------------- */

/* ---- Exports as requests (approvals.h): 'x' the request, 'y' an approval, 'z' the run -------- */

static int export_missing(struct grants *gs, uint64_t id)
{
	(void)gs;
	return err_set(-ENOENT, "no export request with id %llu", (unsigned long long)id);
}

static int export_refuse(struct grants *gs, const struct pending *p,
			 const struct policy_subject *by, int64_t now)
{
	(void)gs, (void)by, (void)now;
	if (p->done_at)
		return err_set(-EEXIST, "export %llu has run already", (unsigned long long)p->id);
	return 0;
}

static int export_describe(struct grants *gs, const struct pending *p, json_t *rec)
{
	const struct grants_export *x = &gs->xp[find_export(gs, p->id)];

	if (json_object_set(rec, "dataset", json_object_get(x->req, "dataset")) < 0 ||
	    json_object_set_new(rec, "dataset_id", json_integer((json_int_t)x->dataset_id)) < 0)
		return -ENOMEM;
	return 0;
}

static void export_approved(struct grants *gs, const struct pending *p,
			    const struct policy_approval *a)
{
	struct grants_export *x = &gs->xp[find_export(gs, p->id)];

	/* approvals_load() and approvals_approve() stop at POLICY_APPROVALS_MAX. */
	if (x->approvals < POLICY_APPROVALS_MAX)
		x->approved_by[x->approvals++] = a->by_uid;
}

/* Takes over x->req. */
static int export_opened(struct grants *gs, const struct pending *p, void *arg)
{
	struct grants_export *x = arg;
	int r;

	(void)p;
	r = grants_grow_array((void **)&gs->xp, sizeof(*gs->xp), gs->nxp, &gs->capxp, GRANTS_MAX,
			      "exports");
	if (r < 0)
		return r;
	gs->xp[gs->nxp++] = *x;   /* ids only grow: stays sorted */
	x->req = NULL;
	return 0;
}

static int export_load(struct grants *gs, uint64_t id, const json_t *j, struct pending *ret)
{
	struct grants_export x;
	int r;

	if ((r = export_from_json(j, &x)) < 0)
		return r;
	if (x.id != id || (gs->nxp && gs->xp[gs->nxp - 1].id >= x.id))
		return err_set(-EBADMSG, "holds export %llu", (unsigned long long)x.id);
	r = grants_grow_array((void **)&gs->xp, sizeof(*gs->xp), gs->nxp, &gs->capxp, GRANTS_MAX,
			      "exports");
	if (r < 0)
		return r;
	x.req = json_incref((json_t *)j);
	gs->xp[gs->nxp++] = x;
	gs->next_id = MAX(gs->next_id, x.id + 1);
	ret->by_uid = x.by_uid;
	ret->at = x.at;
	ret->required = x.approvals_required;
	return 0;
}

static void export_done(struct grants *gs, const struct pending *p, void *arg)
{
	(void)arg;
	gs->xp[find_export(gs, p->id)].done_at = p->done_at;
}

static int export_load_done(struct grants *gs, const struct pending *p, const json_t *j,
			    int64_t *ret_at)
{
	struct pending done = *p;
	uint64_t v;

	if (!jint(j, "export_id", INT64_MAX, &v) || v != p->id || !jint(j, "at", INT64_MAX, &v))
		return err_set(-EBADMSG, "does not match an export request");
	done.done_at = (int64_t)MAX(v, 1u);
	export_done(gs, &done, NULL);
	*ret_at = done.done_at;
	return 0;
}

const struct approval_kind approval_kind_export = {
	.name = "export",
	.request_noun = "an export request",
	.request_type = 'x',
	.approval_type = 'y',
	.done_type = 'z',
	.approve_event = "export_approve",
	.id_field = "export_id",
	.approved_state = "approved",
	.done_text = "has run already: an export runs once",
	.request_counts = true,
	.missing = export_missing,
	.refuse = export_refuse,
	.describe = export_describe,
	.approved = export_approved,
	.opened = export_opened,
	.load = export_load,
	.load_done = export_load_done,
	.done = export_done,
};

int grants_export_request(struct grants *gs, struct audit_log *log,
			  const struct policy_subject *by, json_t *req,
			  uint32_t approvals_required, int64_t now, uint64_t *ret_id)
{
	struct grants_export x = { 0 };
	char name[POLICY_NAME_MAX + 1];
	json_t *rec = NULL, *paths = NULL;
	uint64_t id;
	int r;

	pthread_mutex_lock(&gs->change_lock);
	if (approvals_required > POLICY_APPROVALS_MAX) {
		r = -EINVAL;
		goto out;
	}
	r = grants_take_id(gs, &id);
	if (r < 0)
		goto out;
	grants_by_name(by, name);
	if (json_object_set_new(req, "id", json_integer((json_int_t)id)) < 0 ||
	    json_object_set_new(req, "by", json_string(name)) < 0 ||
	    json_object_set_new(req, "by_uid", json_integer(by->uid)) < 0 ||
	    json_object_set_new(req, "at", json_integer(now)) < 0 ||
	    json_object_set_new(req, "approvals_required", json_integer(approvals_required)) < 0) {
		r = -ENOMEM;
		goto out;
	}
	r = export_from_json(req, &x);
	if (r < 0)
		goto out;
	paths = json_deep_copy(json_object_get(req, "paths"));
	rec = json_pack("{s:s, s:I, s:O, s:I, s:I, s:o, s:O, s:O}", "event", "export_request",
			"export_id", (json_int_t)id, "dataset", json_object_get(req, "dataset"),
			"dataset_id", (json_int_t)x.dataset_id, "version", (json_int_t)x.version,
			"paths", paths, "recipient_fingerprint", json_object_get(req, "fingerprint"),
			"reason", json_object_get(req, "reason"));
	paths = NULL;
	if (!rec) {
		r = -ENOMEM;
		goto out;
	}
	x.req = req;
	req = NULL;
	r = approvals_open(gs, log, &approval_kind_export, by, id, approvals_required, 0, now, rec,
			   json_incref(x.req), &x, NULL);
	if (r == 0)
		*ret_id = id;
out:
	json_decref(x.req);   /* NULL once export_opened() took it */
	json_decref(paths);
	json_decref(req);
	json_decref(rec);
	pthread_mutex_unlock(&gs->change_lock);
	return r;
}

int grants_export_approve(struct grants *gs, struct audit_log *log,
			  const struct policy_subject *by, uint64_t id, int64_t now)
{
	return approvals_approve(gs, log, &approval_kind_export, by, id, now, NULL, NULL);
}

int grants_export_done(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
		       uint64_t id, json_t *rec, int64_t now)
{
	char name[POLICY_NAME_MAX + 1];
	int r;

	grants_by_name(by, name);
	r = approvals_done(gs, log, &approval_kind_export, by, id, now, rec,
			   json_pack("{s:I, s:I, s:I, s:s}", "export_id", (json_int_t)id, "at",
				     (json_int_t)now, "by_uid", (json_int_t)by->uid, "by", name),
			   NULL);
	json_decref(rec);
	return r;
}

int grants_export_get(struct grants *gs, uint64_t id, struct grants_export *ret)
{
	ssize_t i;

	pthread_rwlock_rdlock(&gs->lock);
	i = find_export(gs, id);
	if (i >= 0) {
		*ret = gs->xp[i];
		json_incref(ret->req);
	}
	pthread_rwlock_unlock(&gs->lock);
	return i < 0 ? err_set(-ENOENT, "no export request with id %llu", (unsigned long long)id)
		     : 0;
}

int grants_export_list(struct grants *gs, struct grants_export **ret, size_t *ret_n)
{
	struct grants_export *x;
	size_t n;

	pthread_rwlock_rdlock(&gs->lock);
	n = gs->nxp;
	x = malloc(MAX(n, 1u) * sizeof(*x));
	for (size_t i = 0; x && i < n; i++) {
		x[i] = gs->xp[i];
		json_incref(x[i].req);
	}
	pthread_rwlock_unlock(&gs->lock);
	if (!x)
		return -ENOMEM;
	*ret = x;
	*ret_n = n;
	return 0;
}

void grants_export_clear(struct grants_export *e)
{
	if (e) {
		json_decref(e->req);
		e->req = NULL;
	}
}
