/* grants: the daemon's grant table, kept in the store's policy records.
 *
 * Records (store_policy_put; docs/POLICY.md):
 *   "n"            be64: the next grant id to hand out
 *   "g" || be64 id  a grant, as policy_grant_to_json writes it (immutable once written)
 *   "r" || be64 id  that grant's revocation, policy_revocation_to_json
 *
 * Locking: `lock` is a rwlock over the table; decisions take it shared, changes exclusive. A
 * change holds `change_lock` across its audit append and store writes, so changes are serialised
 * (ids in order) without keeping readers out during the disk writes: the table itself is only
 * write-locked for the final in-memory update.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "common/err.h"
#include "daemon/daemon.h"

#define GRANTS_MAX (1u << 20)   /* a store with more grants than this is refused */

struct grants {
	struct store *st;
	pthread_rwlock_t lock;
	pthread_mutex_t change_lock;
	uint64_t next_id;                  /* under change_lock */
	size_t n, cap;                     /* under lock */
	struct policy_grant *g;            /* by id; revoked_at folded in */
	struct policy_revocation *rev;     /* rev[i] for g[i]; grant_id 0 where not revoked */
};

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
	size_t lo = 0, hi = gs->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (gs->g[mid].id == id)
			return (ssize_t)mid;
		if (gs->g[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
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

/* Records come in key order: "g..." before "n" before "r...", ids ascending within each. */
static int load_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
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
	if (klen != 9 || (k[0] != 'g' && k[0] != 'r'))
		return err_set(-EBADMSG, "unknown policy record key (%zu bytes, 0x%02x...)", klen,
			       klen ? k[0] : 0);
	r = parse_record(val, vlen, &j);
	if (r < 0)
		goto out;
	if (k[0] == 'g') {
		struct policy_grant g;

		r = policy_grant_from_json(j, &g);
		if (r < 0)
			goto out;
		if (g.id != get_be64(k + 1)) {
			r = err_set(-EBADMSG, "grant record %llu holds grant %llu",
				    (unsigned long long)get_be64(k + 1), (unsigned long long)g.id);
			goto out;
		}
		r = grow(gs);
		if (r < 0)
			goto out;
		gs->g[gs->n] = g;
		gs->rev[gs->n] = (struct policy_revocation){ 0 };
		gs->n++;
		gs->next_id = MAX(gs->next_id, g.id + 1);
	} else {
		struct policy_revocation rv;
		ssize_t i;

		r = policy_revocation_from_json(j, &rv);
		if (r < 0)
			goto out;
		i = find(gs, rv.grant_id);
		if (rv.grant_id != get_be64(k + 1) || i < 0) {
			r = err_set(-EBADMSG, "revocation record %llu does not match a grant",
				    (unsigned long long)get_be64(k + 1));
			goto out;
		}
		gs->rev[i] = rv;
		gs->g[i].revoked_at = rv.at;
	}
out:
	json_decref(j);
	if (r < 0 && k[0] != 'n') {
		char why[ERR_DETAIL_MAX];

		snprintf(why, sizeof(why), "%s", err_detail());
		r = err_set(r, "policy record %c%llu: %s", k[0],
			    (unsigned long long)get_be64(k + 1), why);
	}
	return r;
}

int grants_load(struct store *st, struct grants **ret_grants)
{
	struct grants *gs = calloc(1, sizeof(*gs));
	int r;

	if (!gs)
		return -ENOMEM;
	gs->st = st;
	gs->next_id = 1;
	pthread_rwlock_init(&gs->lock, NULL);
	pthread_mutex_init(&gs->change_lock, NULL);
	r = store_policy_foreach(st, load_one, gs);
	if (r < 0) {
		grants_free(gs);
		return r;
	}
	*ret_grants = gs;
	return 0;
}

void grants_free(struct grants *gs)
{
	if (!gs)
		return;
	pthread_rwlock_destroy(&gs->lock);
	pthread_mutex_destroy(&gs->change_lock);
	free(gs->g);
	free(gs->rev);
	free(gs);
}

struct policy_decision grants_decide(struct grants *gs, const struct policy_subject *who,
				     uint64_t dataset_id, uint32_t version, int64_t now)
{
	struct policy_decision d;

	pthread_rwlock_rdlock(&gs->lock);
	d = policy_decide(who, dataset_id, version, now, gs->g, gs->n);
	pthread_rwlock_unlock(&gs->lock);
	return d;
}

static int put_json(struct grants *gs, char type, uint64_t id, json_t *j)
{
	uint8_t key[9];
	char *text;
	int r;

	if (!j)
		return -ENOMEM;
	text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	if (!text)
		return -ENOMEM;
	key[0] = (uint8_t)type;
	put_be64(key + 1, id);
	r = store_policy_put(gs->st, key, sizeof(key), text, strlen(text));
	free(text);
	return r;
}

int daemon_audit_subject(json_t *rec, const struct policy_subject *who)
{
	json_t *name = audit_string(who->user);

	if (!name || json_object_set_new(rec, "user", name) < 0 ||
	    json_object_set_new(rec, "uid", json_integer(who->uid)) < 0)
		return -ENOMEM;
	return 0;
}

int grants_add(struct grants *gs, struct audit_log *log, const struct policy_subject *by,
	       struct policy_grant *g)
{
	uint8_t counter[8];
	json_t *rec = NULL;
	uint64_t id;
	int r;

	pthread_mutex_lock(&gs->change_lock);
	id = gs->next_id;
	g->id = id;
	g->revoked_at = 0;
	r = policy_grant_validate(g);
	if (r < 0)
		goto out;
	/* The counter first: an id that reaches the audit log is never handed out again, even if
	 * the grant record below is never written. */
	put_be64(counter, id + 1);
	r = store_policy_put(gs->st, "n", 1, counter, sizeof(counter));
	if (r < 0)
		goto out;
	gs->next_id = id + 1;
	rec = json_pack("{s:s, s:I, s:o}", "event", "grant", "grant_id", (json_int_t)id, "grant",
			policy_grant_to_json(g));
	if (!rec || daemon_audit_subject(rec, by) < 0) {
		r = -ENOMEM;
		goto out;
	}
	r = audit_append(log, rec, NULL);
	if (r < 0)
		goto out;
	r = put_json(gs, 'g', id, policy_grant_to_json(g));
	if (r < 0)
		goto out;
	pthread_rwlock_wrlock(&gs->lock);
	r = grow(gs);
	if (r == 0) {
		/* Ids only grow, so appending keeps the table sorted. */
		gs->g[gs->n] = *g;
		gs->rev[gs->n] = (struct policy_revocation){ 0 };
		gs->n++;
	}
	pthread_rwlock_unlock(&gs->lock);
out:
	json_decref(rec);
	pthread_mutex_unlock(&gs->change_lock);
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
	if (by->user[0])
		snprintf(rv.by, sizeof(rv.by), "%s", by->user);
	else
		snprintf(rv.by, sizeof(rv.by), "%u", by->uid);
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
	r = audit_append(log, rec, NULL);
	if (r < 0)
		goto out;
	r = put_json(gs, 'r', id, policy_revocation_to_json(&rv));
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
	if (g && (!ret_revs || rv)) {
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
