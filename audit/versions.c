/* versions: the audit log as the source of truth for which versions of which datasets exist
 * (docs/AUDIT.md section 18, docs/FORMAT.md §6.11 "Versions bound to the log").
 *
 * Every import that commits is recorded before its commit with its manifest; an import that does
 * not commit after all is recorded "aborted"; a log that starts without those records (a new
 * store, an upgraded one, a log from before them) records the versions it takes as its starting
 * point (`versions_baseline`). Each of these records carries "versions_digest": the keyed digest
 * of every version the log stands for after it, so that the daemon compares the index with the
 * log in two line reads; this file replays the records when the two disagree, so that the
 * daemon can name each difference. It knows nothing of the index.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "audit/audit_internal.h"
#include "common/err.h"

#define VERSION_HASH_LABEL "enclave version v1"

void audit_version_hash(const uint8_t key[static AUDIT_SEAL_KEY_LEN], uint64_t dataset_id,
			uint32_t version, const uint8_t manifest[static AUDIT_MANIFEST_LEN],
			uint8_t out[static AUDIT_VERSIONS_DIGEST_LEN])
{
	crypto_generichash_state s;
	uint8_t b[12];

	put_be64(b, dataset_id);
	put_be32(b + 8, version);
	crypto_generichash_init(&s, key, AUDIT_SEAL_KEY_LEN, AUDIT_VERSIONS_DIGEST_LEN);
	crypto_generichash_update(&s, (const uint8_t *)VERSION_HASH_LABEL,
				  sizeof(VERSION_HASH_LABEL));  /* the NUL separates */
	crypto_generichash_update(&s, b, sizeof(b));
	crypto_generichash_update(&s, manifest, AUDIT_MANIFEST_LEN);
	crypto_generichash_final(&s, out, AUDIT_VERSIONS_DIGEST_LEN);
}

/* The replay's state: state[dsid] = {"name": ..., "v": {ver: {"m": hex, "seq": n}}}. */
struct replay {
	json_t *state;
	uint64_t records;
};

static bool manifest_ok(const char *hex)
{
	uint8_t m[AUDIT_MANIFEST_LEN];
	size_t n = 0;

	return hex && strlen(hex) == 2 * AUDIT_MANIFEST_LEN &&
	       sodium_hex2bin(m, sizeof(m), hex, strlen(hex), NULL, &n, NULL) == 0 &&
	       n == sizeof(m);
}

/* The dataset's entry (made if missing). */
static json_t *dataset_entry(struct replay *rp, uint64_t dsid, const char *name)
{
	char id[24];
	json_t *d;

	snprintf(id, sizeof(id), "%" PRIu64, dsid);
	d = json_object_get(rp->state, id);
	if (!d) {
		d = json_pack("{s:s, s:{}}", "name", "", "v");
		if (!d || json_object_set_new(rp->state, id, d) < 0)
			return NULL;
	}
	if (name && *name)
		json_object_set_new(d, "name", json_string(name));
	return d;
}

/* One version the log stands for (a committed import, or one in a baseline). */
static int add_version(struct replay *rp, const json_t *rec, const json_t *src, uint64_t seq)
{
	const json_t *dj = json_object_get(src, "dataset_id"), *vj = json_object_get(src, "version");
	const char *m = json_string_value(json_object_get(src, "manifest"));
	json_t *d;
	char v[16];

	(void)rec;
	if (!json_is_integer(dj) || json_integer_value(dj) <= 0 || !json_is_integer(vj) ||
	    json_integer_value(vj) <= 0 || json_integer_value(vj) > UINT32_MAX || !manifest_ok(m))
		return err_set(-EBADMSG, "audit record %" PRIu64 " names a version without a "
			       "dataset id, a version number or a manifest", seq);
	d = dataset_entry(rp, (uint64_t)json_integer_value(dj),
			  json_string_value(json_object_get(src, "dataset")));
	if (!d)
		return -ENOMEM;
	snprintf(v, sizeof(v), "%" JSON_INTEGER_FORMAT, json_integer_value(vj));
	return json_object_set_new(json_object_get(d, "v"), v,
				   json_pack("{s:s, s:I}", "m", m, "seq", (json_int_t)seq)) < 0 ?
		       -ENOMEM : 0;
}

/* An import that did not commit after all: the version its "committed" record named is not. */
static void drop_version(struct replay *rp, const json_t *rec)
{
	const json_t *dj = json_object_get(rec, "dataset_id"), *vj = json_object_get(rec, "version");
	char id[24], v[16];
	json_t *d;

	if (!json_is_integer(dj) || !json_is_integer(vj))
		return;
	snprintf(id, sizeof(id), "%" JSON_INTEGER_FORMAT, json_integer_value(dj));
	snprintf(v, sizeof(v), "%" JSON_INTEGER_FORMAT, json_integer_value(vj));
	d = json_object_get(rp->state, id);
	if (d)
		json_object_del(json_object_get(d, "v"), v);
}

static int replay_one(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct replay *rp = ctx;
	const char *ev = json_string_value(json_object_get(rec, "event"));
	const char *result = json_string_value(json_object_get(rec, "result"));
	uint64_t seq = (uint64_t)json_integer_value(json_object_get(rec, "seq"));
	const json_t *list, *e;
	size_t i;
	int r;

	(void)line, (void)len;
	if (!ev)
		return 0;
	if (strcmp(ev, "import") == 0 && result && strcmp(result, "committed") == 0) {
		rp->records++;
		return add_version(rp, rec, rec, seq);
	}
	if (strcmp(ev, "import") == 0 && result && strcmp(result, "aborted") == 0) {
		rp->records++;
		drop_version(rp, rec);
		return 0;
	}
	if (strcmp(ev, "dataset_erase") == 0) {
		/* "manifests": "VERSION:MANIFEST,...", every version the erasure destroyed. */
		const char *m = json_string_value(json_object_get(rec, "manifests"));
		const json_t *dj = json_object_get(rec, "dataset_id");

		rp->records++;
		while (m && *m && json_is_integer(dj)) {
			char *end = NULL;
			unsigned long v = strtoul(m, &end, 10);
			json_t *one;

			if (!end || *end != ':' || v == 0 || v > UINT32_MAX)
				return err_set(-EBADMSG, "audit record %" PRIu64 ": malformed "
					       "\"manifests\"", seq);
			one = json_pack("{s:O, s:I}", "dataset_id", dj, "version", (json_int_t)v);
			if (!one)
				return -ENOMEM;
			drop_version(rp, one);
			json_decref(one);
			m = strchr(end, ',');
			if (m)
				m++;
		}
		return 0;
	}
	if (strcmp(ev, "versions_baseline") != 0)
		return 0;
	rp->records++;
	list = json_object_get(rec, "versions");
	if (!json_is_array(list))
		return err_set(-EBADMSG, "audit record %" PRIu64 ": \"versions\" is not a list",
			       seq);
	json_array_foreach(list, i, e) {
		r = add_version(rp, rec, e, seq);
		if (r < 0)
			return r;
	}
	return 0;
}

int audit_versions_replay(const char *dir, const uint8_t store_key[static AUDIT_SEAL_KEY_LEN],
			  json_t **ret_state, uint64_t *ret_records)
{
	struct replay rp = { 0 };
	struct audit_filter f = { 0 };
	struct audit_opener *o = NULL;
	int r;

	rp.state = json_object();
	if (!rp.state)
		return -ENOMEM;
	r = audit_opener_new(store_key, NULL, &o);
	if (r < 0) {
		json_decref(rp.state);
		return r;
	}
	f.open = o;
	r = audit_foreach(dir, &f, replay_one, &rp);
	audit_opener_free(o);
	if (r < 0) {
		json_decref(rp.state);
		return r;
	}
	*ret_state = rp.state;
	if (ret_records)
		*ret_records = rp.records;
	return 0;
}
