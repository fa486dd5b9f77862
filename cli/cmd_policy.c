/* enclavectl policy rebuild: make the store's policy records what the signed audit log says
 * (docs/POLICY.md "Bound to the log"). Offline: the daemon must be stopped (the store's lock and
 * the log's flock say so). The log is the source of truth; the rebuild itself is recorded.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "audit/audit.h"
#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "crypto/crypto.h"
#include "store/store.h"

static const char rebuild_usage[] =
	"Usage: enclavectl policy rebuild --store DIR [--passphrase-file FILE]\n\n"
	"Rebuild the store's policy records (grants, approvals, revocations, deny rules and their\n"
	"removals, dataset settings) from the signed audit log, which records every change:\n"
	"after an index that disagrees with the log (an older index put back, or records written\n"
	"into it directly), enclaved refuses the datasets concerned until this is run. Offline:\n"
	"stop enclaved first. The passphrase comes from FILE (mode 0600 or stricter) or the\n"
	"terminal. The rebuild is recorded in the log (policy_rebuild), and the next grant or\n"
	"rule id is above every id the log has seen.\n\n"
	"Options:\n"
	"  --store DIR             the store (required)\n"
	"  --passphrase-file FILE  read the passphrase from FILE\n"
	"  --json                  print {\"records\", \"next_id\", \"removed\", \"added\"}\n"
	"  -h, --help              show this help\n";

static int on_opt(void *ctx, int val, const char *arg)
{
	const char **pass_file = ctx;

	(void)val;
	*pass_file = arg;
	return 0;
}

/* The index's records but "n", as the replay has them: hex key -> value text. */
static int collect(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	char khex[2 * STORE_POLICY_KEY_MAX + 1];
	json_t *m = ctx, *v;

	if (klen == 1 && ((const uint8_t *)key)[0] == 'n')
		return 0;
	sodium_bin2hex(khex, sizeof(khex), key, klen);
	v = json_stringn(val, vlen);
	return json_object_set_new(m, khex, v ? v : json_string("")) < 0 ? -ENOMEM : 0;
}

static int rebuild(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "passphrase-file", required_argument, NULL, 0x200 },
		{ 0 },
	};
	static const char what[] = "policy rebuild";
	const char *pass_file = NULL;
	crypto_secret *pass = NULL;
	struct store *st = NULL;
	struct audit_log *log = NULL;
	crypto_key *seal = NULL, *pk = NULL;
	uint8_t auditors[STORE_AUDITORS_MAX][32], digest[AUDIT_POLICY_DIGEST_LEN] = { 0 };
	char dir[4096], dhex[2 * AUDIT_POLICY_DIGEST_LEN + 1];
	json_t *state = NULL, *old = NULL, *puts = NULL, *rec = NULL, *v;
	struct store_policy_kv *kv = NULL;
	uint8_t (*keys)[STORE_POLICY_KEY_MAX] = NULL;
	uint64_t max_id = 0, records = 0, next_id, removed = 0, added = 0;
	size_t nauditors = 0, n = 0, i;
	const char *k;
	int first, r, ret = 1;

	r = ctl_parse(ctl, what, rebuild_usage, argc, argv, opts, on_opt, &pass_file, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error(what, "unexpected argument '%s'", argv[first]);
	if (!ctl->store_dir || !*ctl->store_dir)
		return ctl_usage_error(what, "--store DIR is required");
	if ((size_t)snprintf(dir, sizeof(dir), "%s/audit", ctl->store_dir) >= sizeof(dir))
		return ctl_usage_error(what, "--store: path too long");
	if (crypto_init() < 0)
		return ctl_fail(what, "cannot initialise the crypto libraries");
	if (ctl_rocksdb_load(what))
		return 1;
	r = pass_file ? crypto_passphrase_read_file(pass_file, &pass)
		      : crypto_passphrase_prompt("Store passphrase: ", false, &pass);
	if (r < 0)
		return ctl_fail(what, "%s: %s", pass_file ? pass_file : "passphrase",
				r == -EPERM ? "readable or writable by group or others; it must be "
				"private (chmod 600)" : r == -ENXIO ? "no terminal: use "
				"--passphrase-file FILE" : strerror(-r));
	err_clear();
	r = store_open(ctl->store_dir, pass, NULL, &st);
	crypto_secret_free(pass);
	if (r < 0)
		return ctl_fail(what, "%s: %s", ctl->store_dir,
				r == -EBUSY ? "in use: stop enclaved first" :
				r == -EKEYREJECTED ? "wrong passphrase" :
				*err_detail() ? err_detail() : strerror(-r));
	err_clear();
	r = audit_open(dir, NULL, &log);
	if (r < 0) {
		ctl_fail(what, "%s: %s", dir, r == -EBUSY ? "in use: stop enclaved first" :
			 *err_detail() ? err_detail() : strerror(-r));
		goto out;
	}
	if ((r = store_audit_seal_key(st, &seal)) < 0 ||
	    (r = store_policy_digest_key(st, &pk)) < 0 ||
	    (r = store_auditors_get(st, auditors, &nauditors)) < 0 ||
	    (r = audit_sealer_set(log, crypto_key_bytes(seal), (const uint8_t(*)[32])auditors,
				  nauditors)) < 0) {
		ctl_fail(what, "the store's keys: %s", *err_detail() ? err_detail() : strerror(-r));
		goto out;
	}

	/* The log's state: every policy record replayed. */
	err_clear();
	r = audit_policy_replay(dir, crypto_key_bytes(seal), &state, &max_id, &records);
	if (r < 0) {
		ctl_fail(what, "reading %s: %s", dir, *err_detail() ? err_detail() : strerror(-r));
		goto out;
	}
	if (records == 0) {
		ctl_fail(what, "the audit log holds no policy record: nothing to rebuild from (a "
			 "store whose log predates them is bound at enclaved's next start)");
		goto out;
	}
	old = json_object();
	r = old ? store_policy_foreach(st, collect, old) : -ENOMEM;
	if (r < 0) {
		ctl_fail(what, "reading the policy records: %s", strerror(-r));
		goto out;
	}
	next_id = max_id + 1;
	n = json_object_size(state);
	kv = calloc(n + 1, sizeof(*kv));
	keys = calloc(n + 1, sizeof(*keys));
	puts = json_array();
	if (!kv || !keys || !puts) {
		ctl_fail(what, "out of memory");
		goto out;
	}
	i = 0;
	json_object_foreach(state, k, v) {
		size_t kl = 0;
		const char *val = json_string_value(v);

		if (sodium_hex2bin(keys[i], STORE_POLICY_KEY_MAX, k, strlen(k), NULL, &kl, NULL) != 0 ||
		    kl == 0 || !val) {
			ctl_fail(what, "the audit log holds a malformed policy record key \"%.40s\"", k);
			goto out;
		}
		kv[i] = (struct store_policy_kv){ .key = keys[i], .klen = kl, .val = val,
						  .vlen = strlen(val) };
		{
			uint8_t h[AUDIT_POLICY_DIGEST_LEN];

			audit_policy_record_hash(crypto_key_bytes(pk), keys[i], kl, val, strlen(val),
						 h);
			for (size_t b = 0; b < sizeof(h); b++)
				digest[b] ^= h[b];
		}
		if (!json_object_get(old, k) ||
		    strcmp(json_string_value(json_object_get(old, k)), val) != 0)
			added++;
		if (json_array_append_new(puts, json_pack("{s:s, s:s}", "k", k, "v", val)) < 0) {
			ctl_fail(what, "out of memory");
			goto out;
		}
		i++;
	}
	json_object_foreach(old, k, v)
		if (!json_object_get(state, k))
			removed++;
	/* The counter: above every id the log and the index have seen. */
	{
		static uint8_t nkey[1] = { 'n' };
		static uint8_t nval[8];

		put_be64(nval, next_id);
		kv[n] = (struct store_policy_kv){ .key = nkey, .klen = 1, .val = nval, .vlen = 8 };
	}
	sodium_bin2hex(dhex, sizeof(dhex), digest, sizeof(digest));
	/* The log first, as for every change: the record says what the index becomes. */
	rec = json_pack("{s:s, s:O, s:s, s:s, s:I, s:I, s:I}", "event", "policy_rebuild",
			"policy_puts", puts, "policy_digest", dhex, "policy_digest_before", dhex,
			"next_id", (json_int_t)next_id, "removed", (json_int_t)removed, "added",
			(json_int_t)added);
	if (!rec) {
		ctl_fail(what, "out of memory");
		goto out;
	}
	if (json_object_set_new(rec, "uid", json_integer((json_int_t)getuid())) < 0) {
		ctl_fail(what, "out of memory");
		goto out;
	}
	err_clear();
	r = audit_append(log, rec, NULL);
	if (r == 0)
		r = store_policy_replace_all(st, kv, n + 1);
	if (r < 0) {
		ctl_fail(what, "%s", *err_detail() ? err_detail() : strerror(-r));
		goto out;
	}
	if (ctl->json) {
		json_t *o = json_pack("{s:I, s:I, s:I, s:I}", "records", (json_int_t)n, "next_id",
				      (json_int_t)next_id, "removed", (json_int_t)removed, "added",
				      (json_int_t)added);

		r = o ? out_json(o) : -ENOMEM;
		json_decref(o);
	} else {
		printf("policy rebuilt from the audit log: %zu records (%" PRIu64 " added or "
		       "changed, %" PRIu64 " removed); next id %" PRIu64 "\n", n, added, removed,
		       next_id);
	}
	ret = r < 0 ? 1 : 0;
out:
	json_decref(rec);
	json_decref(puts);
	json_decref(old);
	json_decref(state);
	free(kv);
	free(keys);
	crypto_key_free(seal);
	crypto_key_free(pk);
	audit_close(log);
	store_close(st);
	return ret;
}

const struct ctl_cmd policy_cmds[] = {
	{ "rebuild", rebuild, "--store DIR [--passphrase-file FILE]",
	  "make the policy records what the audit log says (offline)" },
	{ 0 },
};
