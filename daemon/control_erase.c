/* control_erase: erasure of a version or a dataset under the store's approval rule, and its
 * proof (docs/PROTOCOL.md "dataset.erase", docs/POLICY.md "Erasure", docs/FORMAT.md 3.7).
 *
 * A steward asks (dataset.erase: recorded, `erase_request`); as many other stewards as the store's
 * `approvals` setting approve (dataset.erase_approve, `erase_approve`); the approval that
 * completes it carries it out at once: the grants that name only what goes are revoked when the
 * request said so (otherwise it is refused while they are in force), the store crypto-shreds it
 * (store_erase()), the `dataset_erase` record with the manifests, the destroyed key ids and the
 * key ring's new generation and digest goes to the log with the done record, and the mount drops
 * it: every later decision about it, open handles' included, is a refusal.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"
#include "daemon/daemon.h"
#include "daemon/control_internal.h"

#define ERASE_BLOCKERS_MAX 4096

static json_t *erasure_view(const struct daemon_erasure *x)
{
	json_t *o = json_pack("{s:I, s:s, s:I, s:s, s:b, s:s, s:o, s:I, s:I, s:s}", "id",
			      (json_int_t)x->id, "dataset", x->dataset, "version",
			      (json_int_t)x->version, "reason", x->reason, "revoke_grants",
			      x->revoke_grants, "requested_by", x->by, "requested", jtime(x->at),
			      "approvals", (json_int_t)x->approvals, "approvals_required",
			      (json_int_t)x->approvals_required, "state",
			      x->done_at ? "erased" :
			      x->approvals >= x->approvals_required ? "approved" :
								      "pending_approval");

	if (o && x->done_at && json_object_set_new(o, "erased", jtime(x->done_at)) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* "KEYID,..." of what e destroyed (malloc'd). */
static char *key_ids_text(const struct store_erasure *e)
{
	char *kid_s = calloc(e->nkeys + 1, 2 * 16 + 1);

	for (size_t i = 0, o = 0; kid_s && i < e->nkeys; i++) {
		if (i)
			kid_s[o++] = ',';
		hex_encode(e->key_ids[i], 16, kid_s + o);
		o += 32;
	}
	return kid_s;
}

/* Record erasure x, which the store carried out as e, as steward `who`: the `dataset_erase` record
 * with the done record, the versions the log stands for without what went, and then the store
 * forgets it (store_erase_recorded()). late: NULL when recorded as it is carried out, else the
 * record's member that says why it comes late ("completed_at_start": the daemon stopped between
 * the keys' destruction and this record; "recorded_late": the log refused it then). */
static int erase_record(struct daemon *d, const struct daemon_erasure *x,
			const struct store_erasure *e, const struct policy_subject *who, int64_t now,
			const char *late)
{
	json_t *rec = NULL, *approvers = json_array();
	char *man_s = NULL, *kid_s = key_ids_text(e);
	struct policy_approval *ap = NULL;
	char hex[2 * 32 + 1];
	size_t nap = 0, mlen = (e->nversions + 1) * (12 + 2 * STORE_MANIFEST_LEN + 1);
	int r;

	/* The record names what went by its manifests, the keys destroyed by their ids, and the
	 * key ring that no longer holds them (the daemon refuses an older ring at start). */
	/* Strings, so they stay in the clear (docs/AUDIT.md): "VERSION:MANIFEST,..." and
	 * "KEYID,...", hashes and ids that name no person and no file. */
	man_s = calloc(1, mlen);
	if (!man_s || !kid_s || !approvers) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0, o = 0; i < e->nversions; i++) {
		hex_encode(e->versions[i].manifest, STORE_MANIFEST_LEN, hex);
		o += (size_t)snprintf(man_s + o, mlen - o, "%s%u:%s", i ? "," : "",
				      e->versions[i].version, hex);
	}
	if (grants_erasure_approvals(d->grants, x->id, &ap, &nap) == 0)
		for (size_t i = 0; i < nap; i++)
			json_array_append_new(approvers, audit_string(ap[i].by));
	hex_encode(e->ring_digest, 32, hex);
	rec = json_pack("{s:s, s:I, s:I, s:I, s:s, s:s, s:I, s:s, s:o, s:o, s:I, s:O}", "event",
			"dataset_erase", "erasure_id", (json_int_t)x->id, "dataset_id",
			(json_int_t)x->dataset_id, "version", (json_int_t)x->version, "manifests",
			man_s, "key_ids", kid_s, "ring_generation", (json_int_t)e->ring_generation,
			"ring_digest", hex, "reason", audit_string(x->reason), "requested_by",
			audit_string(x->by), "requested_by_uid", (json_int_t)x->by_uid,
			"approved_by", approvers);
	if (!rec || json_object_set_new(rec, "dataset", audit_string(x->dataset)) < 0 ||
	    daemon_audit_subject(rec, who) < 0 ||
	    (late && json_object_set_new(rec, late, json_integer(1)) < 0)) {
		r = -ENOMEM;
		goto out;
	}
	/* The versions the log stands for after it (docs/AUDIT.md section 18): without these. */
	{
		char vhex[2 * AUDIT_VERSIONS_DIGEST_LEN + 1];

		r = daemon_versions_digest_without(d, e, vhex);
		if (r == 0 && json_object_set_new(rec, "versions_digest", json_string(vhex)) < 0)
			r = -ENOMEM;
		if (r == -ENOKEY)
			r = 0;
		if (r < 0)
			goto out;
	}
	r = grants_erase_done(d->grants, d->log, x->id, now, e->ring_generation, e->ring_digest, rec);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < e->nversions; i++)
		daemon_versions_committed(d, e->dataset_id, e->versions[i].version,
					  e->versions[i].manifest);
	/* Recorded: the store forgets it. Should that fail, the next start finds the erasure done
	 * in the log and forgets it then (daemon_erase_recover()). */
	if (store_erase_recorded(d->st, e->dataset_id, e->version) < 0)
		fprintf(stderr, "enclaved: erasure %llu is recorded, but the store still lists it as "
			"unrecorded (%s); the next start clears that\n", (unsigned long long)x->id,
			err_detail());
out:
	json_decref(rec);
	json_decref(approvers);
	free(man_s);
	free(kid_s);
	free(ap);
	return r;
}

static int erase_recover(struct daemon *d, const char *late);

/* Carry out approved request x (by: the steward whose act completed it). Under d->erase_lock. */
static int erase_run_locked(struct conn *c, const struct daemon_erasure *x, json_t **ret)
{
	struct daemon *d = c->d;
	struct store_erasure e = { 0 };
	uint64_t *ids = calloc(ERASE_BLOCKERS_MAX, sizeof(*ids));
	char why[POLICY_REASON_MAX + 1], *kid_s = NULL;
	int64_t now = time(NULL);
	size_t nb;
	int r;

	if (!ids)
		return -ENOMEM;
	/* An earlier erasure whose record could not be written is recorded first: the store
	 * keeps the note of one erasure only. */
	r = erase_recover(d, "recorded_late");
	if (r < 0)
		goto out;
	d->erase_owed = false;
	nb = grants_erasure_blockers(d->grants, x, now, ids, ERASE_BLOCKERS_MAX);
	if (nb > ERASE_BLOCKERS_MAX) {
		r = err_set(-E2BIG, "%zu grants name what would be erased: revoke them first", nb);
		goto out;
	}
	if (nb && !x->revoke_grants) {
		r = err_set(-EBUSY, "grant %llu (and %zu more) in force names only what would be "
			    "erased: revoke it, or ask again with --revoke-grants",
			    (unsigned long long)ids[0], nb - 1);
		goto out;
	}
	snprintf(why, sizeof(why), "erasure %llu", (unsigned long long)x->id);
	for (size_t i = 0; i < nb; i++) {
		r = grants_revoke(d->grants, d->log, &c->who, ids[i], why, now, NULL, NULL);
		if (r < 0 && r != -EEXIST)
			goto out;
	}
	r = store_erase(d->st, x->dataset, x->version, &e);
	if (r < 0) {
		/* It may have gone part of the way (its note written, keys destroyed): the retry
		 * finds out from the store. */
		d->erase_owed = true;
		goto out;
	}
	r = erase_record(d, x, &e, &c->who, now, NULL);
	if (r < 0) {
		char detail[ERR_DETAIL_MAX];

		/* The keys are gone: nothing reads it any more. The record is owed, and written as
		 * soon as the log takes it (daemon_erase_retry(), within a second of that). */
		d->erase_owed = true;
		if (d->fs)
			fusefs_invalidate_dataset(d->fs, x->dataset_id, x->dataset);
		snprintf(detail, sizeof(detail), "%s", err_detail()[0] ? err_detail() :
			 strerror(-r));
		r = err_set(-EIO, "erasure %llu was carried out (its keys are destroyed), but the "
			    "audit log could not record it (%s): the daemon records it as soon as "
			    "the log accepts writes again", (unsigned long long)x->id, detail);
		goto out;
	}
	/* Open handles decide again at their next read, and are refused. */
	if (d->fs)
		fusefs_invalidate_dataset(d->fs, x->dataset_id, x->dataset);
	kid_s = key_ids_text(&e);
	*ret = kid_s ? json_pack("{s:I, s:s, s:I, s:I, s:s, s:I, s:I}", "erasure_id",
				 (json_int_t)x->id, "dataset", x->dataset, "version",
				 (json_int_t)x->version, "grants_revoked", (json_int_t)nb,
				 "key_ids", kid_s, "ring_generation",
				 (json_int_t)e.ring_generation, "versions_erased",
				 (json_int_t)e.nversions) : NULL;
	if (!*ret)
		r = -ENOMEM;
out:
	free(kid_s);
	free(ids);
	store_erasure_free(&e);
	return r;
}

static int erase_run(struct conn *c, const struct daemon_erasure *x, json_t **ret)
{
	int r;

	pthread_mutex_lock(&c->d->erase_lock);
	r = erase_run_locked(c, x, ret);
	pthread_mutex_unlock(&c->d->erase_lock);
	return r;
}

/* Under d->erase_lock: record the erasure the store carried out and the log did not (late: the
 * member that says why, as erase_record()). 0 when there is none or it is recorded now. */
static int erase_recover(struct daemon *d, const char *late)
{
	struct store_erasure e = { 0 };
	struct daemon_erasure *xs = NULL;
	const struct daemon_erasure *x = NULL;
	struct policy_approval *ap = NULL;
	struct policy_subject who = { 0 };
	size_t n = 0, nap = 0;
	int r = store_erase_unrecorded(d->st, &e);

	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	r = grants_erasures(d->grants, &xs, &n);
	if (r < 0)
		goto out;
	/* The request it carried out: one of the same data, approved (a version is erased at
	 * most once, a dataset id never comes back). */
	for (size_t i = 0; i < n; i++)
		if (xs[i].dataset_id == e.dataset_id && xs[i].version == e.version &&
		    xs[i].approvals >= xs[i].approvals_required && (!x || !xs[i].done_at))
			x = &xs[i];
	if (!x) {
		fprintf(stderr, "enclaved: the store erased dataset %llu%s%.0u, but no approved "
			"erasure request of the audit log asks for it: not recorded\n", (unsigned long long)e.dataset_id,
			e.version ? " version " : "", e.version);
		goto out;
	}
	if (x->done_at) {
		/* Recorded; only the store's note of it outlived the record. */
		r = store_erase_recorded(d->st, e.dataset_id, e.version);
		goto out;
	}
	/* As the steward whose approval completed it (the requester when none was needed). */
	who.uid = x->by_uid;
	snprintf(who.user, sizeof(who.user), "%s", x->by);
	r = grants_erasure_approvals(d->grants, x->id, &ap, &nap);
	if (r < 0)
		goto out;
	if (nap) {
		who.uid = ap[nap - 1].by_uid;
		snprintf(who.user, sizeof(who.user), "%s", ap[nap - 1].by);
	}
	r = erase_record(d, x, &e, &who, time(NULL), late);
	if (r == -EEXIST) {
		r = 0;   /* recorded meanwhile */
	} else if (r == 0) {
		fprintf(stderr, "enclaved: erasure %llu of %s%s%.0u %s: recorded now\n",
			(unsigned long long)x->id, x->dataset, x->version ? "@" : "", x->version,
			strcmp(late, "completed_at_start") == 0 ?
				"was interrupted after its keys were destroyed" :
				"was carried out when the audit log could not record it");
		/* Erased from now on for every decision: open handles decide again. */
		if (d->fs)
			fusefs_invalidate_dataset(d->fs, x->dataset_id, x->dataset);
	}
out:
	free(ap);
	free(xs);
	store_erasure_free(&e);
	return r;
}

int daemon_erase_recover(struct daemon *d)
{
	int r;

	pthread_mutex_lock(&d->erase_lock);
	r = erase_recover(d, "completed_at_start");
	pthread_mutex_unlock(&d->erase_lock);
	return r;
}

void daemon_erase_retry(void *ctx)
{
	struct daemon *d = ctx;

	pthread_mutex_lock(&d->erase_lock);
	/* The log refusing still: quiet, and again at the next tick. */
	if (d->erase_owed && erase_recover(d, "recorded_late") == 0)
		d->erase_owed = false;
	err_clear();
	pthread_mutex_unlock(&d->erase_lock);
}

/* The versions of ds that are not erased. */
static uint32_t live_versions(struct conn *c, const struct store_dataset_info *ds)
{
	struct store_version_info vi;
	uint32_t n = 0;

	for (uint32_t v = 1; v <= ds->latest_version; v++)
		if (store_version_get(c->d->st, ds->id, v, &vi) == 0)
			n++;
	return n;
}

int op_dataset_erase(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dataset", "version", "reason", "revoke_grants",
					     NULL };
	struct daemon_erasure x = { 0 };
	struct store_dataset_info ds;
	struct store_version_info vi;
	struct config cfg;
	const char *name, *reason;
	uint64_t ver = 0;
	bool rg = false;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "dataset", true, STORE_DATASET_NAME_MAX, &name)) < 0 ||
	    (r = proto_arg_u64(args, "version", false, UINT32_MAX, &ver)) < 0 ||
	    (r = proto_arg_string(args, "reason", true, POLICY_REASON_MAX, &reason)) < 0 ||
	    (r = proto_arg_bool(args, "revoke_grants", false, &rg)) < 0 ||
	    (r = get_dataset(c, name, &ds)) < 0)
		return r;
	if (ver && store_version_get(c->d->st, ds.id, (uint32_t)ver, &vi) < 0)
		return err_set(-ENOENT, "dataset %s has no version %llu", name,
			       (unsigned long long)ver);
	if (ver && live_versions(c, &ds) < 2)
		return err_set(-EINVAL, "version %llu is the only version of %s left: erase the "
			       "dataset (%s) instead", (unsigned long long)ver, name, name);
	x.dataset_id = ds.id;
	snprintf(x.dataset, sizeof(x.dataset), "%s", ds.name);
	x.version = (uint32_t)ver;
	snprintf(x.reason, sizeof(x.reason), "%s", reason);
	x.revoke_grants = rg;
	daemon_config(c->d, &cfg);
	r = grants_erase_request(c->d->grants, c->d->log, &c->who, &x, cfg.approvals, time(NULL));
	if (r < 0)
		return r;
	if (x.approvals_required == 0) {
		json_t *done = NULL;

		r = erase_run(c, &x, &done);
		if (r < 0)
			return r;
		x.done_at = time(NULL);
		*ret = json_pack("{s:o, s:o}", "erasure", erasure_view(&x), "result", done);
	} else {
		*ret = json_pack("{s:o}", "erasure", erasure_view(&x));
	}
	return *ret ? 0 : -ENOMEM;
}

int op_dataset_erase_approve(struct conn *c, const json_t *args, json_t **ret)
{
	struct daemon_erasure x;
	json_t *done = NULL;
	uint64_t id = 0;
	int r;

	if ((r = request_id_arg(args, &id)) < 0)
		return r;
	r = grants_erase_approve(c->d->grants, c->d->log, &c->who, id, time(NULL), &x);
	if (r < 0)
		return r;
	if (x.approvals >= x.approvals_required) {
		r = erase_run(c, &x, &done);
		if (r < 0)
			return r;
		x.done_at = time(NULL);
	}
	*ret = json_pack("{s:o}", "erasure", erasure_view(&x));
	if (*ret && done && json_object_set_new(*ret, "result", done) < 0)
		return -ENOMEM;
	return *ret ? 0 : -ENOMEM;
}

int op_dataset_erasures(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	struct daemon_erasure *xs = NULL;
	json_t *a;
	size_t n = 0;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = grants_erasures(c->d->grants, &xs, &n)) < 0)
		return r;
	a = json_array();
	for (size_t i = 0; a && i < n; i++)
		if (json_array_append_new(a, erasure_view(&xs[i])) < 0)
			json_decref(a), a = NULL;
	free(xs);
	*ret = a ? json_pack("{s:o}", "erasures", a) : NULL;
	return *ret ? 0 : -ENOMEM;
}

/* ---- Proof of erasure ------------------------------------------------------------------------ */

struct find_erase {
	uint64_t erasure_id;
	uint64_t seq;
	bool found;
};

static int find_erase_record(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct find_erase *f = ctx;

	(void)line, (void)len;
	if ((uint64_t)json_integer_value(json_object_get(rec, "erasure_id")) != f->erasure_id)
		return 0;
	f->seq = (uint64_t)json_integer_value(json_object_get(rec, "seq"));
	f->found = true;
	return 1;
}

int op_dataset_erasure_proof(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dataset", "version", NULL };
	struct audit_filter flt = { .event = "dataset_erase" };
	struct daemon_erasure *xs = NULL;
	struct find_erase f = { 0 };
	char *proof = NULL, *line = NULL;
	const char *name;
	uint64_t ver = 0;
	size_t n = 0;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "dataset", true, STORE_DATASET_NAME_MAX, &name)) < 0 ||
	    (r = proto_arg_u64(args, "version", false, UINT32_MAX, &ver)) < 0 ||
	    (r = grants_erasures(c->d->grants, &xs, &n)) < 0)
		return r;
	/* The newest erasure that took it: of that version, or of the whole dataset. */
	for (size_t i = n; i-- > 0;)
		if (xs[i].done_at && strcmp(xs[i].dataset, name) == 0 &&
		    (xs[i].version == ver || xs[i].version == 0)) {
			f.erasure_id = xs[i].id;
			break;
		}
	free(xs);
	if (!f.erasure_id)
		return err_set(-ENOENT, "no erasure of %s%s%.0llu is recorded", name, ver ? "@" : "",
			       (unsigned long long)ver);
	r = audit_foreach(c->d->audit_dir, &flt, find_erase_record, &f);
	if (r < 0)
		return r;
	if (!f.found)
		return err_set(-ENOENT, "the log holds no record of erasure %llu",
			       (unsigned long long)f.erasure_id);
	r = audit_prove(c->d->log, f.seq, &proof, NULL, &line, NULL);
	if (r < 0)
		return r;
	*ret = json_pack("{s:I, s:I, s:s, s:s}", "erasure_id", (json_int_t)f.erasure_id, "seq",
			 (json_int_t)f.seq, "proof", proof, "record", line);
	free(proof);
	free(line);
	return *ret ? 0 : -ENOMEM;
}
