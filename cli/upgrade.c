/* upgrade: what `enclavectl store upgrade` does once its options are parsed, index and audit log
 * together (docs/FORMAT.md section 9, docs/AUDIT.md section 17). It is a function of its own so
 * that tests/test_upgrade.c runs exactly the command's sequence and kills it at each step.
 *
 * The order is the whole of the crash safety:
 *
 *   1. open the store for the upgrade (an earlier attempt's UPGRADE marker is finished, its
 *      leftover index.new/ and audit.new/ without a marker removed);
 *   2. index.new/ built from the old index (store_upgrade_prepare());
 *   3. the auditor keys given listed in keys/auditors, so the new log is sealed to them;
 *   4. audit.new/ built from audit/ (audit_upgrade_legacy(): the old log kept whole and encrypted,
 *      a new sealed log naming it, signed);
 *   5. the decision and the switch of both parts ("index", "audit") in one marker
 *      (store_upgrade_commit()).
 *
 * Until the marker of step 5 is durable, nothing the old store's readers use has changed (step 3
 * adds a file the format 1 code never reads), and every later open removes what 2 and 4 built.
 * After it, every open finishes the renames. So a kill at any point leaves the old store or the
 * new one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "audit/audit.h"
#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "crypto/crypto.h"
#include "store/store.h"

/* Map the log conversion's stages onto the command's steps. */
static void audit_stage(void *ctx, enum audit_upgrade_stage s)
{
	const struct store_upgrade_progress *p = ctx;
	enum store_upgrade_step step = s == AUDIT_UPGRADE_STARTED ? STORE_UPGRADE_AUDIT_STARTED
				     : s == AUDIT_UPGRADE_LEGACY  ? STORE_UPGRADE_AUDIT_LEGACY
								  : STORE_UPGRADE_AUDIT_RECORDS;

	if (p && p->fn)
		p->fn(p->ctx, step, 0, 0);
}

/* The log's keys as the daemon has them: the store's seal key, the auditors, the signing key (made
 * as enclaved makes it when a store has none yet). Then audit.new/ from audit/. */
static int convert_log(struct store *st, const char *dir, const struct store_upgrade_progress *p,
		       size_t *ret_auditors)
{
	uint8_t keys[STORE_AUDITORS_MAX][32];
	char name[STORE_SIGNING_NAME_MAX + 1], *old_dir = NULL, *new_dir = NULL;
	struct audit_upgrade_progress ap = { .fn = audit_stage, .ctx = (void *)p };
	crypto_key *seal = NULL, *seed = NULL;
	size_t n = 0;
	int r;

	r = store_auditors_get(st, keys, &n);
	if (r < 0)
		return err_set(r, "the auditor key list does not authenticate: %s",
			       *err_detail() ? err_detail() : strerror(-r));
	r = store_audit_seal_key(st, &seal);
	if (r == 0) {
		r = store_signing_seed(st, &seed, name);
		if (r == -ENOENT) {
			store_signing_default_name(name);
			r = store_signing_create(st, name);
			if (r == 0)
				r = store_signing_seed(st, &seed, name);
		}
		if (r < 0)
			r = err_set(r, "the audit signing key (keys/audit.key): %s",
				    *err_detail() ? err_detail() : strerror(-r));
	}
	if (r == 0 && (asprintf(&old_dir, "%s/audit", dir) < 0 ||
		       asprintf(&new_dir, "%s/audit.new", dir) < 0)) {
		old_dir = new_dir = NULL;
		r = -ENOMEM;
	}
	if (r == 0) {
		r = audit_upgrade_legacy(old_dir, new_dir, crypto_key_bytes(seal),
					 (const uint8_t(*)[32])keys, n, name, crypto_key_bytes(seed),
					 &ap, NULL);
		if (r < 0)
			r = err_set(r, "the audit log's conversion: %s",
				    *err_detail() ? err_detail() : strerror(-r));
	}
	if (r == 0 && p && p->fn)
		p->fn(p->ctx, STORE_UPGRADE_AUDIT_BUILT, 0, 0);
	if (r == 0)
		*ret_auditors = n;
	crypto_key_free(seal);
	crypto_key_free(seed);
	sodium_memzero(keys, sizeof(keys));
	free(old_dir);
	free(new_dir);
	return r;
}

/* audit/ must be a directory of its own, never a link to somewhere else. */
static int audit_dir_check(const char *dir)
{
	char path[4096];
	struct stat s;

	snprintf(path, sizeof(path), "%s/audit", dir);
	if (lstat(path, &s) < 0)
		return err_set(-errno, "%s: %s (a store with a history and no log needs "
				       "'enclavectl audit new-log' first)", path, strerror(errno));
	if (!S_ISDIR(s.st_mode))
		return err_set(-ENOTDIR, "%s is not a directory (a link is never followed)", path);
	return 0;
}

int ctl_store_upgrade_run(const char *dir, const crypto_secret *pass,
			  const uint8_t (*auditors)[32], size_t nauditors, const char *key_out,
			  const struct store_upgrade_progress *p, struct ctl_upgrade_result *ret)
{
	static const char *const parts[] = { "index", "audit" };
	struct ctl_upgrade_result res = { 0 };
	struct store *st = NULL;
	bool log_too;
	int r;

	err_clear();
	r = store_open_for_upgrade(dir, pass, &st);
	if (r < 0)
		return r;
	/* A format 1 store's log is in clear and converted with the index; a format 2 store's log
	 * is sealed already, and only its index (and the new key ring) change. */
	log_too = store_format(st) == 1;
	r = store_upgrade_prepare(st, p);
	if (r == -EALREADY) {
		store_close(st);
		res.already = true;
		*ret = res;
		return 0;
	}
	if (r == 0 && !log_too) {
		r = store_upgrade_commit(st, parts, 1, p);
		goto done;
	}
	if (r == 0)
		r = audit_dir_check(dir);
	/* The new key pair only now, when the store is known to need it. */
	if (r == 0 && key_out) {
		r = audit_auditor_keypair_write(key_out, res.made);
		if (r < 0)
			r = err_set(r, "--auditor-key-out %s: %s", key_out,
				    *err_detail() ? err_detail() : strerror(-r));
	}
	for (size_t i = 0; r == 0 && i < nauditors + (key_out ? 1 : 0); i++) {
		r = store_auditors_add(st, i < nauditors ? auditors[i] : res.made);
		if (r == -EEXIST)
			r = 0;    /* listed by an earlier, interrupted run */
		else if (r < 0)
			r = err_set(r, "cannot list the auditor key: %s",
				    *err_detail() ? err_detail() : strerror(-r));
	}
	if (r == 0)
		r = convert_log(st, dir, p, &res.auditors);
	if (r == 0)
		r = store_upgrade_commit(st, parts, ARRAY_SIZE(parts), p);
	res.log_converted = true;
done:
	store_close(st);
	if (r < 0)
		return r;
	/* The upgraded store opens as a store of this version does. */
	r = store_open(dir, pass, NULL, &st);
	if (r < 0)
		return err_set(r, "the upgraded store does not open: %s",
			       *err_detail() ? err_detail() : strerror(-r));
	store_close(st);
	*ret = res;
	return 0;
}
