/* policy: the audit log as the source of truth for the daemon's policy records (docs/POLICY.md
 * "Bound to the log", docs/AUDIT.md section 16).
 *
 * Every change the daemon makes to its policy records is first appended to the log as a policy
 * record: the records it writes ("policy_puts", sealed: they name people and purposes), the digest
 * of the whole policy state before and after ("policy_digest_before", "policy_digest", clear:
 * keyed, so they say nothing) and the next id to hand out ("next_id"). This file knows nothing of
 * what the records mean; it hashes them and replays them.
 */
#include <errno.h>
#include <stdio.h>

#include <sodium.h>

#include "audit/audit_internal.h"
#include "common/err.h"

void audit_policy_record_hash(const uint8_t key[static AUDIT_SEAL_KEY_LEN], const void *k,
			      size_t kl, const void *v, size_t vl,
			      uint8_t out[static AUDIT_POLICY_DIGEST_LEN])
{
	crypto_generichash_state s;
	json_t *j = json_loadb(v, vl, JSON_REJECT_DUPLICATES, NULL);
	char *canon = j ? json_dumps(j, AUDIT_JSON_FLAGS) : NULL;
	uint8_t len[4];

	/* The value's canonical form: the index and the log may hold the same JSON as different
	 * bytes (escapes), never different content. A value that is not JSON counts as bytes. */
	put_le32(len, (uint32_t)kl);
	crypto_generichash_init(&s, key, AUDIT_SEAL_KEY_LEN, AUDIT_POLICY_DIGEST_LEN);
	crypto_generichash_update(&s, len, sizeof(len));
	crypto_generichash_update(&s, k, kl);
	if (canon)
		crypto_generichash_update(&s, (const uint8_t *)canon, strlen(canon));
	else
		crypto_generichash_update(&s, v, vl);
	crypto_generichash_final(&s, out, AUDIT_POLICY_DIGEST_LEN);
	free(canon);
	json_decref(j);
}

/* The state being replayed. */
struct replay {
	struct audit_opener *o;
	json_t *state;          /* hex key -> value text */
	uint64_t max_id;
	uint64_t records;       /* policy records seen */
	const char *dir;
};

static void see_id(struct replay *rp, const json_t *rec, const char *name, bool next)
{
	const json_t *v = json_object_get(rec, name);

	if (json_is_integer(v) && json_integer_value(v) > 0) {
		uint64_t id = (uint64_t)json_integer_value(v) - (next ? 1 : 0);

		if (id > rp->max_id)
			rp->max_id = id;
	}
}

static int replay_one(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct replay *rp = ctx;
	const json_t *puts = json_object_get(rec, "policy_puts"), *p;
	const char *ev = json_string_value(json_object_get(rec, "event"));
	size_t i;

	(void)line, (void)len;
	/* Every id the log has seen, in any record: an id is never handed out twice. */
	see_id(rp, rec, "grant_id", false);
	see_id(rp, rec, "rule_id", false);
	see_id(rp, rec, "next_id", true);
	if (!json_object_get(rec, "policy_digest"))
		return 0;
	rp->records++;
	if (ev && (strcmp(ev, "policy_snapshot") == 0 || strcmp(ev, "policy_rebuild") == 0))
		json_object_clear(rp->state);
	if (puts && !json_is_array(puts))
		return err_set(-EBADMSG, "record %lld: \"policy_puts\" is not a list",
			       (long long)json_integer_value(json_object_get(rec, "seq")));
	json_array_foreach(puts, i, p) {
		const char *k = json_string_value(json_object_get(p, "k"));
		const json_t *v = json_object_get(p, "v");

		if (!k || !json_is_string(v) || strlen(k) == 0 || strlen(k) % 2 ||
		    strlen(k) > 2 * 256)
			return err_set(-EBADMSG, "record %lld: a policy put without a key and value",
				       (long long)json_integer_value(json_object_get(rec, "seq")));
		if (json_object_set(rp->state, k, (json_t *)v) < 0)
			return -ENOMEM;
	}
	return 0;
}

int audit_policy_replay(const char *dir, const uint8_t store_key[static AUDIT_SEAL_KEY_LEN],
			json_t **ret_state, uint64_t *ret_max_id, uint64_t *ret_records)
{
	struct replay rp = { .dir = dir };
	struct audit_filter f = { 0 };
	int r;

	rp.state = json_object();
	if (!rp.state)
		return -ENOMEM;
	r = audit_opener_new(store_key, NULL, &rp.o);
	if (r < 0) {
		json_decref(rp.state);
		return r;
	}
	f.open = rp.o;
	r = audit_foreach(dir, &f, replay_one, &rp);
	audit_opener_free(rp.o);
	if (r < 0) {
		json_decref(rp.state);
		return r;
	}
	*ret_state = rp.state;
	*ret_max_id = rp.max_id;
	if (ret_records)
		*ret_records = rp.records;
	return 0;
}
