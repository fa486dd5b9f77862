/* versions: the versions in the index bound to the import records of the signed audit log
 * (docs/FORMAT.md §6.11 "Versions bound to the log", docs/AUDIT.md section 18).
 *
 * The index alone detects a record moved, copied, edited or removed, and `latest` moved against
 * the version records it has (§6.11). It cannot detect a whole version removed together with
 * `latest` lowered, a whole index put back from before an import, or a version that was never
 * imported here: each of those leaves an index that is consistent with itself. The signed log is
 * not: every import that committed is in it, with its manifest, before the commit.
 *
 * So every record that changes the set of versions (an import's "committed" and "aborted"
 * records, and `versions_baseline`) carries "versions_digest", the keyed digest of every version
 * the log stands for after it (audit_version_hash(), XORed). At start the daemon computes the same
 * digest over the index's versions and compares it with the last such record's (two line reads,
 * however long the log). Equal: nothing more to do. Different: the log is replayed
 * (audit_versions_replay()), each difference is named on stderr and in an `integrity` record
 * ("source": "log"), and each dataset concerned is refused (POLICY_DENY_INTEGRITY) while the
 * others are served. A log with no such record yet (a new store, or a log from before them) is
 * compared with the import records it does have, and its starting point, the versions it now
 * stands for, is recorded (`versions_baseline`).
 *
 * The digest the daemon carries forward (d->vdigest) is always the log's, never the index's: an
 * import made while a dataset is refused does not make the log agree with a tampered index.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "audit/audit.h"
#include "common/common.h"
#include "common/err.h"
#include "daemon/daemon.h"
#include "store/store.h"

/* Findings named (on stderr and in records) at most; the rest are counted. */
#define VFINDINGS_MAX 100
/* Versions per versions_baseline record (about 200 bytes each, records are at most 64 KiB). */
#define BASELINE_CHUNK 200

static void hexs(const uint8_t *b, size_t n, char *out)
{
	sodium_bin2hex(out, 2 * n + 1, b, n);
}

static void xor_into(uint8_t *acc, const uint8_t *h)
{
	for (size_t i = 0; i < AUDIT_VERSIONS_DIGEST_LEN; i++)
		acc[i] ^= h[i];
}

/* ---- The index's side ---------------------------------------------------------------------- */

/* One committed version of the index. */
struct iver {
	uint64_t dsid;
	uint32_t version;
	uint8_t manifest[STORE_MANIFEST_LEN];
	const char *name;   /* borrowed from the dataset list */
};

struct ids {
	struct store *st;
	struct store_dataset_info *ds;
	size_t nds, capds;
	struct iver *v;
	size_t nv, capv;
	int err;
};

static int ds_cb(void *ctx, const struct store_dataset_info *info)
{
	struct ids *x = ctx;

	if (x->nds == x->capds) {
		size_t c = x->capds ? 2 * x->capds : 16;
		void *p = realloc(x->ds, c * sizeof(*x->ds));

		if (!p)
			return -ENOMEM;
		x->ds = p;
		x->capds = c;
	}
	x->ds[x->nds++] = *info;
	return 0;
}

/* Every dataset of the index and its committed versions 1..latest. A dataset whose records fail
 * their checks is left out by the store (and reported by it); a version that fails its own is
 * left out here (the store reports it when it is read). */
static int index_versions(struct store *st, struct ids *x)
{
	int r;

	x->st = st;
	r = store_dataset_foreach(st, ds_cb, x);
	for (size_t i = 0; r == 0 && i < x->nds; i++) {
		for (uint32_t v = 1; v <= x->ds[i].latest_version; v++) {
			struct store_version_info vi;

			if (store_version_get(st, x->ds[i].id, v, &vi) < 0)
				continue;
			if (x->nv == x->capv) {
				size_t c = x->capv ? 2 * x->capv : 64;
				void *p = realloc(x->v, c * sizeof(*x->v));

				if (!p)
					return -ENOMEM;
				x->v = p;
				x->capv = c;
			}
			x->v[x->nv] = (struct iver){ .dsid = x->ds[i].id, .version = v,
						     .name = x->ds[i].name };
			memcpy(x->v[x->nv].manifest, vi.manifest, STORE_MANIFEST_LEN);
			x->nv++;
		}
	}
	return r;
}

static void ids_free(struct ids *x)
{
	free(x->ds);
	free(x->v);
}

static const char *ds_name(const struct ids *x, uint64_t dsid)
{
	for (size_t i = 0; i < x->nds; i++)
		if (x->ds[i].id == dsid)
			return x->ds[i].name;
	return NULL;
}

static const struct iver *ds_version(const struct ids *x, uint64_t dsid, uint32_t v)
{
	for (size_t i = 0; i < x->nv; i++)
		if (x->v[i].dsid == dsid && x->v[i].version == v)
			return &x->v[i];
	return NULL;
}

/* ---- Comparison ---------------------------------------------------------------------------- */

struct cmp {
	struct daemon *d;
	json_t *findings;       /* strings, for stderr */
	uint64_t dropped;
};

/* One difference: said on stderr (by the caller), recorded, and its dataset refused. */
__attribute__((format(printf, 6, 7)))
static int finding(struct cmp *c, uint64_t dsid, uint32_t version, const char *name,
		   bool in_index, const char *fmt, ...)
{
	char text[512];
	va_list ap;
	json_t *rec;
	int r;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (in_index) {
		r = grants_refuse_dataset(c->d->grants, dsid);
		if (r < 0)
			return r;
	}
	if (json_array_size(c->findings) >= VFINDINGS_MAX) {
		c->dropped++;
		return 0;
	}
	json_array_append_new(c->findings, json_string(text));
	rec = json_pack("{s:s, s:s, s:I, s:I, s:s}", "event", "integrity", "source", "log",
			"dataset_id", (json_int_t)dsid, "version", (json_int_t)version, "error",
			text);
	if (rec && name && *name && json_object_set_new(rec, "dataset", audit_string(name)) < 0) {
		json_decref(rec);
		rec = NULL;
	}
	r = rec ? audit_append(c->d->log, rec, NULL) : -ENOMEM;
	json_decref(rec);
	return r;
}

/* Compare the index (x) with the log's state. strict false (a log with no versions record yet):
 * an index version the log has no record of is taken as it is, and added to lstate, which then
 * is what the log is to stand for. */
static int compare(struct cmp *c, const struct ids *x, json_t *lstate, bool strict)
{
	const char *id;
	json_t *dj;
	int r;

	/* What the log has: each version must be in the index, with its manifest. */
	json_object_foreach(lstate, id, dj) {
		uint64_t dsid = strtoull(id, NULL, 10);
		const char *iname = ds_name(x, dsid);
		const char *lname = json_string_value(json_object_get(dj, "name"));
		const char *name = iname ? iname : lname;
		uint32_t lmax = 0;
		const char *vs;
		json_t *vj;

		json_object_foreach(json_object_get(dj, "v"), vs, vj) {
			uint32_t v = (uint32_t)strtoul(vs, NULL, 10);
			uint64_t seq = (uint64_t)json_integer_value(json_object_get(vj, "seq"));
			const char *lm = json_string_value(json_object_get(vj, "m"));
			const struct iver *iv = ds_version(x, dsid, v);
			char im[2 * STORE_MANIFEST_LEN + 1];

			lmax = MAX(lmax, v);
			if (!iname) {
				r = finding(c, dsid, v, name, false, "version %u of dataset \"%s\" "
					    "(id %" PRIu64 ") is in the audit log (record %" PRIu64
					    ") but the dataset is not in the index: removed, or an "
					    "index put back from before its import", v, name, dsid,
					    seq);
			} else if (!iv) {
				r = finding(c, dsid, v, name, true, "version %u of dataset \"%s\" "
					    "(id %" PRIu64 ") is in the audit log (record %" PRIu64
					    ") but not in the index: a version removed, or an index "
					    "put back from before its import", v, name, dsid, seq);
			} else {
				hexs(iv->manifest, STORE_MANIFEST_LEN, im);
				r = 0;
				if (!lm || strcmp(lm, im) != 0)
					r = finding(c, dsid, v, name, true, "version %u of dataset "
						    "\"%s\" (id %" PRIu64 "): its manifest in the "
						    "index (%.16s...) is not the one the audit log "
						    "records (%.16s..., record %" PRIu64 "): its "
						    "content was replaced", v, name, dsid, im,
						    lm ? lm : "", seq);
			}
			if (r < 0)
				return r;
		}
		for (size_t i = 0; iname && i < x->nds; i++)
			if (x->ds[i].id == dsid && x->ds[i].latest_version < lmax) {
				r = finding(c, dsid, x->ds[i].latest_version, name, true,
					    "dataset \"%s\" (id %" PRIu64 "): the index's latest "
					    "version is %u, the audit log records version %u: latest "
					    "lowered", name, dsid, x->ds[i].latest_version, lmax);
				if (r < 0)
					return r;
			}
	}
	/* What the index has: each version must be one the log recorded. */
	for (size_t i = 0; i < x->nv; i++) {
		const struct iver *iv = &x->v[i];
		char id2[24], v2[16], mh[2 * STORE_MANIFEST_LEN + 1];
		json_t *d2, *vj;

		snprintf(id2, sizeof(id2), "%" PRIu64, iv->dsid);
		snprintf(v2, sizeof(v2), "%" PRIu32, iv->version);
		d2 = json_object_get(lstate, id2);
		vj = d2 ? json_object_get(json_object_get(d2, "v"), v2) : NULL;
		if (vj)
			continue;
		if (!strict) {
			/* Older than the log's versions records: the log takes it as it is. */
			if (!d2) {
				d2 = json_pack("{s:s, s:{}}", "name", iv->name, "v");
				if (!d2 || json_object_set_new(lstate, id2, d2) < 0)
					return -ENOMEM;
			}
			hexs(iv->manifest, STORE_MANIFEST_LEN, mh);
			if (json_object_set_new(json_object_get(d2, "v"), v2,
						json_pack("{s:s, s:I}", "m", mh, "seq",
							  (json_int_t)-1)) < 0)
				return -ENOMEM;
			continue;
		}
		r = finding(c, iv->dsid, iv->version, iv->name, true, "version %u of dataset "
			    "\"%s\" (id %" PRIu64 ") is in the index but the audit log has no "
			    "import record of it: an injected version, or an index from another "
			    "history", iv->version, iv->name, iv->dsid);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The digest of a log state (the JSON of audit_versions_replay()). */
static int state_digest(const uint8_t *key, const json_t *lstate,
			uint8_t out[static AUDIT_VERSIONS_DIGEST_LEN])
{
	const char *id, *vs;
	json_t *dj, *vj;

	memset(out, 0, AUDIT_VERSIONS_DIGEST_LEN);
	json_object_foreach((json_t *)lstate, id, dj) {
		json_object_foreach(json_object_get(dj, "v"), vs, vj) {
			const char *m = json_string_value(json_object_get(vj, "m"));
			uint8_t mb[AUDIT_MANIFEST_LEN], h[AUDIT_VERSIONS_DIGEST_LEN];
			size_t n = 0;

			if (!m || sodium_hex2bin(mb, sizeof(mb), m, strlen(m), NULL, &n, NULL) != 0 ||
			    n != sizeof(mb))
				return -EBADMSG;
			audit_version_hash(key, strtoull(id, NULL, 10), (uint32_t)strtoul(vs, NULL, 10),
					   mb, h);
			xor_into(out, h);
		}
	}
	return 0;
}

/* Record the log's starting point: every version of lstate, in records of BASELINE_CHUNK, the
 * last with the digest. */
static int baseline(struct daemon *d, const json_t *lstate, const uint8_t *digest)
{
	char dhex[2 * AUDIT_VERSIONS_DIGEST_LEN + 1];
	json_t *list = json_array(), *rec = NULL, *dj, *vj;
	const char *id, *vs;
	size_t total = 0, done = 0;
	int r = 0;

	if (!list)
		return -ENOMEM;
	hexs(digest, AUDIT_VERSIONS_DIGEST_LEN, dhex);
	json_object_foreach((json_t *)lstate, id, dj)
		total += json_object_size(json_object_get(dj, "v"));
	json_object_foreach((json_t *)lstate, id, dj) {
		json_object_foreach(json_object_get(dj, "v"), vs, vj) {
			json_t *e = json_pack("{s:I, s:I, s:O, s:O}", "dataset_id",
					      (json_int_t)strtoull(id, NULL, 10), "version",
					      (json_int_t)strtoul(vs, NULL, 10), "manifest",
					      json_object_get(vj, "m"), "dataset",
					      json_object_get(dj, "name"));

			if (!e || json_array_append_new(list, e) < 0)
				r = -ENOMEM;
			done++;
			if (r < 0 || (json_array_size(list) < BASELINE_CHUNK && done < total))
				continue;
			rec = json_pack("{s:s, s:o}", "event", "versions_baseline", "versions",
					list);
			list = json_array();
			if (rec && done == total &&
			    json_object_set_new(rec, "versions_digest", json_string(dhex)) < 0)
				r = -ENOMEM;
			if (r == 0)
				r = rec && list ? audit_append(d->log, rec, NULL) : -ENOMEM;
			json_decref(rec);
			rec = NULL;
			if (r < 0)
				goto out;
		}
	}
	if (total == 0) {	/* nothing yet: one record, the empty set */
		rec = json_pack("{s:s, s:o, s:s}", "event", "versions_baseline", "versions", list,
				"versions_digest", dhex);
		list = NULL;
		r = rec ? audit_append(d->log, rec, NULL) : -ENOMEM;
		json_decref(rec);
	}
out:
	json_decref(list);
	return r;
}

int daemon_versions_bind(struct daemon *d, json_t **ret_findings)
{
	struct ids x = { 0 };
	struct cmp c = { .d = d };
	crypto_key *pk = NULL, *sk = NULL;
	uint8_t idig[AUDIT_VERSIONS_DIGEST_LEN] = { 0 }, ldig[AUDIT_VERSIONS_DIGEST_LEN];
	json_t *rec = NULL, *lstate = NULL;
	const char *dh;
	char *line = NULL;
	uint64_t seq = 0;
	size_t len = 0, n = 0;
	bool strict;
	int r;

	*ret_findings = NULL;
	r = store_policy_digest_key(d->st, &pk);
	if (r == 0)
		r = store_audit_seal_key(d->st, &sk);
	if (r == 0)
		r = index_versions(d->st, &x);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < x.nv; i++) {
		uint8_t h[AUDIT_VERSIONS_DIGEST_LEN];

		audit_version_hash(crypto_key_bytes(pk), x.v[i].dsid, x.v[i].version,
				   x.v[i].manifest, h);
		xor_into(idig, h);
	}
	r = audit_versions_head(d->log, &seq, &line, &len);
	strict = r == 0;
	if (r == 0) {
		rec = json_loadb(line, len, 0, NULL);
		dh = json_string_value(json_object_get(rec, "versions_digest"));
		if (!dh || sodium_hex2bin(ldig, sizeof(ldig), dh, strlen(dh), NULL, &n, NULL) != 0 ||
		    n != sizeof(ldig)) {
			r = err_set(-EBADMSG, "audit record %" PRIu64 " is not a versions record",
				    seq);
			goto out;
		}
		if (sodium_memcmp(ldig, idig, sizeof(ldig)) == 0) {
			memcpy(d->vdigest, idig, sizeof(idig));
			goto out;	/* the index has exactly the versions the log says */
		}
	} else if (r != -ENOENT) {
		goto out;
	}
	/* They disagree, or the log has no versions record yet: replay it (the source of truth)
	 * and name every difference. */
	r = audit_versions_replay(d->audit_dir, crypto_key_bytes(sk), &lstate, NULL);
	if (r < 0)
		goto out;
	c.findings = json_array();
	if (!c.findings) {
		r = -ENOMEM;
		goto out;
	}
	r = compare(&c, &x, lstate, strict);
	if (r < 0)
		goto out;
	/* Carry the log's state forward, never the index's. A log without a versions record
	 * records its starting point; one whose last versions record is older than its state (an
	 * import recovery recorded "aborted" since) records the digest again, in a baseline that
	 * lists nothing new, so that the next start compares in two line reads. */
	r = state_digest(crypto_key_bytes(pk), lstate, d->vdigest);
	if (r == 0 && !strict)
		r = baseline(d, lstate, d->vdigest);
	else if (r == 0 && sodium_memcmp(d->vdigest, ldig, sizeof(ldig)) != 0) {
		json_t *none = json_object();

		r = none ? baseline(d, none, d->vdigest) : -ENOMEM;
		json_decref(none);
	}
	if (r < 0)
		goto out;
	if (c.dropped) {
		char text[96];

		snprintf(text, sizeof(text), "and %" PRIu64 " more", c.dropped);
		json_array_append_new(c.findings, json_string(text));
	}
	if (json_array_size(c.findings) > 0) {
		*ret_findings = c.findings;
		c.findings = NULL;
	}
out:
	if (r == 0 && pk) {
		/* The key stays for the import records. */
		pthread_mutex_lock(&d->vlock);
		if (!d->vkey) {
			d->vkey = sodium_malloc(AUDIT_SEAL_KEY_LEN);
			if (d->vkey)
				memcpy(d->vkey, crypto_key_bytes(pk), AUDIT_SEAL_KEY_LEN);
			else
				r = -ENOMEM;
		}
		pthread_mutex_unlock(&d->vlock);
	}
	crypto_key_free(pk);
	crypto_key_free(sk);
	json_decref(c.findings);
	json_decref(lstate);
	json_decref(rec);
	free(line);
	ids_free(&x);
	return r;
}

int daemon_versions_digest_with(struct daemon *d, uint64_t dataset_id, uint32_t version,
				const uint8_t *manifest,
				char out[static 2 * AUDIT_VERSIONS_DIGEST_LEN + 1])
{
	uint8_t dg[AUDIT_VERSIONS_DIGEST_LEN], h[AUDIT_VERSIONS_DIGEST_LEN];

	pthread_mutex_lock(&d->vlock);
	if (!d->vkey) {
		pthread_mutex_unlock(&d->vlock);
		return -ENOKEY;
	}
	memcpy(dg, d->vdigest, sizeof(dg));
	if (manifest) {
		audit_version_hash(d->vkey, dataset_id, version, manifest, h);
		xor_into(dg, h);
	}
	pthread_mutex_unlock(&d->vlock);
	hexs(dg, sizeof(dg), out);
	return 0;
}

void daemon_versions_committed(struct daemon *d, uint64_t dataset_id, uint32_t version,
			       const uint8_t manifest[static STORE_MANIFEST_LEN])
{
	uint8_t h[AUDIT_VERSIONS_DIGEST_LEN];

	pthread_mutex_lock(&d->vlock);
	if (d->vkey) {
		audit_version_hash(d->vkey, dataset_id, version, manifest, h);
		xor_into(d->vdigest, h);
	}
	pthread_mutex_unlock(&d->vlock);
}

void daemon_versions_close(struct daemon *d)
{
	sodium_free(d->vkey);
	d->vkey = NULL;
}

/* Before daemon_versions_bind() (an erasure completed at start): the digest of the log's last
 * versions record without e's versions. -ENOKEY when the log has none yet (the bind then
 * replays it). */
static int head_digest_without(struct daemon *d, const struct store_erasure *e,
			       char out[static 2 * AUDIT_VERSIONS_DIGEST_LEN + 1])
{
	uint8_t dg[AUDIT_VERSIONS_DIGEST_LEN], h[AUDIT_VERSIONS_DIGEST_LEN];
	crypto_key *pk = NULL;
	json_t *rec = NULL;
	const char *dh;
	char *line = NULL;
	uint64_t seq = 0;
	size_t len = 0, n = 0;
	int r = audit_versions_head(d->log, &seq, &line, &len);

	if (r == -ENOENT)
		return -ENOKEY;
	if (r == 0)
		r = store_policy_digest_key(d->st, &pk);
	if (r < 0)
		goto out;
	rec = json_loadb(line, len, 0, NULL);
	dh = json_string_value(json_object_get(rec, "versions_digest"));
	if (!dh || sodium_hex2bin(dg, sizeof(dg), dh, strlen(dh), NULL, &n, NULL) != 0 ||
	    n != sizeof(dg)) {
		r = err_set(-EBADMSG, "audit record %" PRIu64 " is not a versions record", seq);
		goto out;
	}
	for (size_t i = 0; i < e->nversions; i++) {
		audit_version_hash(crypto_key_bytes(pk), e->dataset_id, e->versions[i].version,
				   e->versions[i].manifest, h);
		xor_into(dg, h);
	}
	hexs(dg, sizeof(dg), out);
out:
	crypto_key_free(pk);
	json_decref(rec);
	free(line);
	return r;
}

int daemon_versions_digest_without(struct daemon *d, const struct store_erasure *e,
				   char out[static 2 * AUDIT_VERSIONS_DIGEST_LEN + 1])
{
	uint8_t dg[AUDIT_VERSIONS_DIGEST_LEN], h[AUDIT_VERSIONS_DIGEST_LEN];

	pthread_mutex_lock(&d->vlock);
	if (!d->vkey) {
		pthread_mutex_unlock(&d->vlock);
		return head_digest_without(d, e, out);
	}
	memcpy(dg, d->vdigest, sizeof(dg));
	/* A version's hash XORed in again takes it out. */
	for (size_t i = 0; i < e->nversions; i++) {
		audit_version_hash(d->vkey, e->dataset_id, e->versions[i].version,
				   e->versions[i].manifest, h);
		xor_into(dg, h);
	}
	pthread_mutex_unlock(&d->vlock);
	hexs(dg, sizeof(dg), out);
	return 0;
}
