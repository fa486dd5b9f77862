/* test_e2e_bound: the policy records bound to the signed audit log (docs/POLICY.md "Bound to the
 * log"), as someone who can write the store directory attacks them with the daemon stopped:
 *   - an older index put back after a revocation (and a later change): refused, named, recorded;
 *   - an index lacking exactly the last recorded change (a crash, or that change undone): the
 *     change is completed from the log;
 *   - a grant written straight into RocksDB (id 50, expiry far out): refused, named;
 *   - a deny rule's removal written straight into RocksDB: refused, named;
 *   - an erasure request written straight into RocksDB: its dataset refused, the others served;
 *   - ids are never handed out twice, whatever the index's counter says;
 *   - `enclavectl policy rebuild` restores the log's state and the service.
 * Stewards root and bob (four eyes); alice reads.
 */
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/common.h"
#include "common/err.h"
#include "crypto/crypt4gh.h"
#include "crypto/crypto.h"
#include "store/store.h"
#include "tests/e2e.h"
#include "tests/e2e_store.h"
#include "tests/testutil.h"

/* ---- Setup ------------------------------------------------------------------------------------ */

static void import(const char *name)
{
	char *dir = tu_fmt("%s/%s", E->src, name), *file = tu_fmt("%s/a.bin", dir);

	assert_int_equal(mkdir(dir, 0755), 0);
	tu_write_seeded(file, 10000, 7);
	e2e_ok_free(ctl("-q", "dataset", "import", (char *)name, dir));
	free(file);
	free(dir);
}

static int group_setup(void **state)
{
	static const char *const roles[] = { "--steward", "user:root", "--steward",
					     "user:" TU_USER_BOB, "--auditor", "user:root",
					     "--approvals", "1", NULL };

	(void)state;
	if (e2e_setup("e2e-bound") < 0 || e2e_init(roles) < 0)
		return -1;
	e2e_daemon_start_with(E->pass, true);
	import("ds1");
	import("ds2");
	import("ds3");
	import("ds4");
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	e2e_teardown();
	return 0;
}

/* ---- Helpers ---------------------------------------------------------------------------------- */

/* Alice opens dataset's latest a.bin: it opens (want_errno 0) or fails with want_errno. */
static void alice_opens(const char *dataset, int want_errno)
{
	char *p = tu_fmt("%s/%s/latest/a.bin", E->mnt, dataset);

	e2e_opens_as(&E->u.alice, p, want_errno);
	free(p);
}

static uint64_t id_of(struct e2e_run *r, const char *obj)
{
	json_t *j = e2e_out_json(r);
	uint64_t id = (uint64_t)json_integer_value(json_object_get(json_object_get(j, obj), "id"));

	json_decref(j);
	free(r);
	assert_true(id > 0);
	return id;
}

/* A grant for alice on dataset, approved by bob. */
static uint64_t grant_alice(const char *dataset)
{
	uint64_t id = id_of(e2e_ok(ctl("--json", "grant", "request", "--user", TU_USER_ALICE,
				       "--dataset", (char *)dataset, "--purpose", "model training",
				       "--expires", "+7d")), "grant");
	char ids[32];

	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
	e2e_ok_free(ctl_as(&E->u.bob, "grant", "approve", ids));
	return id;
}

static const char *reason(const char *dataset)
{
	static char out[64];
	struct e2e_run *r = ctl("--json", "access", "check", "--user", TU_USER_ALICE, "--dataset",
				(char *)dataset);
	json_t *j = e2e_out_json(r);

	snprintf(out, sizeof(out), "%s", json_string_value(json_object_get(j, "reason")));
	json_decref(j);
	free(r);
	return out;
}

static void stop(void)
{
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
}

/* The daemon's log so far, NUL-terminated (tu_read_file() gives bytes), its length in *ret_n. */
static char *daemon_log_n(size_t *ret_n)
{
	size_t n;
	char *b = (char *)tu_read_file(E->log, &n), *t = realloc(b, n + 1);

	assert_non_null(t);
	t[n] = '\0';
	*ret_n = n;
	return t;
}

static char *daemon_log(void)
{
	size_t n;

	return daemon_log_n(&n);
}

/* Start, and say whether the daemon's log (from this start on) holds text. */
static bool start_says(const char *text)
{
	size_t before = 0, n;
	char *log;
	bool found;

	free(tu_read_file(E->log, &before));
	e2e_daemon_start_with(E->pass, true);
	/* The daemon answers on its socket a moment before it prints "serving": wait for the
	 * text a little (5 s at most). */
	for (int i = 0;; i++) {
		log = daemon_log_n(&n);
		found = n > before && strstr(log + before, text) != NULL;
		if (found || i == 100)
			break;
		free(log);
		poll(NULL, 0, 50);
	}
	if (!found)
		fprintf(stderr, "daemon log since start, wanted \"%s\":\n%s\n", text,
			n > before ? log + before : "");
	free(log);
	return found;
}

struct find {
	char type;
	uint64_t id;
	char *val;
};

static int find_fn(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct find *f = ctx;
	const uint8_t *k = key;

	if (klen == 9 && k[0] == (uint8_t)f->type && get_be64(k + 1) == f->id)
		f->val = strndup(val, vlen);
	return 0;
}

/* Record type||id's JSON in st (a new reference). */
static json_t *record_of(struct store *st, char type, uint64_t id)
{
	struct find f = { .type = type, .id = id };
	json_t *j;

	assert_int_equal(store_policy_foreach(st, find_fn, &f), 0);
	assert_non_null(f.val);
	j = json_loads(f.val, 0, NULL);
	free(f.val);
	assert_non_null(j);
	return j;
}

static void put_record(struct store *st, char type, uint64_t id, json_t *j)
{
	uint8_t key[9];
	char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

	key[0] = (uint8_t)type;
	put_be64(key + 1, id);
	assert_int_equal(store_policy_put(st, key, sizeof(key), text, strlen(text)), 0);
	free(text);
}

static void rebuild(void)
{
	struct e2e_run *r = e2e_ok(ctl("policy", "rebuild", "--passphrase-file", E->pass));

	assert_non_null(strstr(r->out, "policy rebuilt from the audit log"));
	free(r);
}

/* ---- Cases ------------------------------------------------------------------------------------ */

/* An index copied before a revocation and put back after it (and after another change): the
 * revoked grant is not back in force, the daemon names the disagreement and records it, and a
 * rebuild restores the revocation and the service. Ids stay above everything the log saw. */
static void test_rollback_after_revoke(void **state)
{
	uint64_t gid, rule, next;
	char ids[32];

	(void)state;
	gid = grant_alice("ds1");
	alice_opens("ds1", 0);
	stop();
	e2e_index_save("index.before-revoke");
	e2e_daemon_start_with(E->pass, true);
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)gid);
	e2e_ok_free(ctl("grant", "revoke", ids, "--reason", "project ended"));
	rule = id_of(e2e_ok(ctl("--json", "deny", "add", "--user", TU_USER_BOB, "--dataset", "ds3",
				"--reason", "left")), "rule");
	alice_opens("ds1", EACCES);
	stop();
	e2e_index_restore("index.before-revoke");
	{
		char *want = tu_fmt("the revocation of grant %llu is in the audit log but not in the "
				    "index: a rollback (a revoked grant is back)",
				    (unsigned long long)gid);

		assert_true(start_says(want));
		free(want);
	}
	alice_opens("ds1", EACCES);
	assert_string_equal(reason("ds1"), "policy_mismatch");
	assert_int_equal(e2e_audit_count("policy_mismatch", NULL, NULL, NULL, 0), 1);
	/* Nor is it exported (docs/CRYPT4GH.md §7): refused and recorded, nothing written. */
	{
		char pub[C4GH_PUBKEY_TEXT_MAX], *pubf = tu_fmt("%s/researcher.pub", E->root);
		char *out = tu_fmt("%s/export-out", E->root);
		uint8_t pk[C4GH_KEY_LEN];
		crypto_key *sk = NULL;
		struct e2e_run *r;

		assert_int_equal(c4gh_keypair_generate(&sk, pk), 0);
		crypto_key_free(sk);
		c4gh_pubkey_format(pk, pub);
		tu_write_file(pubf, pub, strlen(pub));
		r = ctl("export", "request", "ds1", "f", "--recipient-key", pubf, "--out", out);
		assert_int_equal(r->status, 1);
		if (!strstr(r->err, "is refused (policy_mismatch)"))
			fail_msg("stderr: %s", r->err);
		free(r);
		assert_int_equal(access(out, F_OK), -1);
		assert_int_equal(e2e_audit_count("export_refused", NULL, NULL, "policy_mismatch", 0),
				 1);
		free(pubf);
		free(out);
	}
	/* Ids: the restored counter is older than the log; the next id is above the rule's. */
	next = id_of(e2e_ok(ctl("--json", "grant", "request", "--user", TU_USER_ALICE, "--dataset",
				"ds2", "--purpose", "x", "--expires", "+1d")), "grant");
	assert_true(next > rule);
	assert_true(next > gid);

	stop();
	rebuild();
	assert_true(start_says("serving"));
	assert_string_equal(reason("ds1"), "revoked");
	alice_opens("ds1", EACCES);
	{
		char *log = daemon_log();

		/* One disagreement message in all: the first start's. */
		assert_non_null(strstr(log, "disagree with the signed audit log"));
		assert_null(strstr(strstr(log, "disagree with the signed audit log") + 1,
				   "disagree with the signed audit log"));
		free(log);
	}
	assert_int_equal(e2e_audit_count("policy_rebuild", NULL, NULL, NULL, 0), 1);
	/* The grant request made while the index was old is in the log: rebuilt, with its id. */
	next = id_of(e2e_ok(ctl("--json", "grant", "request", "--user", TU_USER_ALICE, "--dataset",
				"ds2", "--purpose", "y", "--expires", "+1d")), "grant");
	assert_true(next > rule);
}

/* The index lacks exactly the last change the log records (what a crash between the record and
 * the write leaves, or that one change undone): completed from the log, recorded, and served. */
static void test_last_change_completed(void **state)
{
	uint64_t gid;
	char ids[32];

	(void)state;
	gid = grant_alice("ds2");
	alice_opens("ds2", 0);
	stop();
	e2e_index_save("index.before-last");
	e2e_daemon_start_with(E->pass, true);
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)gid);
	e2e_ok_free(ctl("grant", "revoke", ids, "--reason", "done"));
	stop();
	e2e_index_restore("index.before-last");
	assert_true(start_says("completed from the log"));
	assert_string_equal(reason("ds2"), "revoked");
	alice_opens("ds2", EACCES);
	assert_int_equal(e2e_audit_count("policy_completed", NULL, NULL, NULL, 0), 1);
}

/* A grant written straight into the index (id 50, expiry far out, in force at once): the log
 * never recorded it, so the dataset is refused, the grant named; a rebuild drops it. */
static void test_injected_grant(void **state)
{
	struct store *st;
	uint64_t gid;
	json_t *g;

	(void)state;
	gid = grant_alice("ds3");
	stop();
	st = e2e_store_offline();
	g = record_of(st, 'g', gid);
	json_object_set_new(g, "id", json_integer(50));
	json_object_set_new(g, "approvals_required", json_integer(0));
	json_object_set_new(g, "expires", json_string("2099-12-31T00:00:00Z"));
	put_record(st, 'g', 50, g);
	json_decref(g);
	store_close(st);
	assert_true(start_says("grant 50 is in the index but the audit log never recorded it"));
	assert_string_equal(reason("ds3"), "policy_mismatch");
	alice_opens("ds3", EACCES);
	stop();
	rebuild();
	e2e_daemon_start_with(E->pass, true);
	assert_string_equal(reason("ds3"), "allow");
	{
		struct e2e_run *r = ctl("grant", "show", "50");

		assert_int_not_equal(r->status, 0);
		free(r);
	}
}

/* A deny rule's removal written straight into the index: refused, named. */
static void test_injected_deny_removal(void **state)
{
	struct store *st;
	uint64_t rule;
	json_t *e;

	(void)state;
	rule = id_of(e2e_ok(ctl("--json", "deny", "add", "--user", TU_USER_ALICE, "--dataset",
				"ds2", "--reason", "under review")), "rule");
	stop();
	st = e2e_store_offline();
	e = json_pack("{s:I, s:s, s:I, s:s, s:s, s:I}", "deny_id", (json_int_t)rule, "at",
		      "2026-01-01T00:00:00Z", "by_uid", (json_int_t)0, "by", "root", "reason",
		      "quietly", "approvals_required", (json_int_t)0);
	put_record(st, 'e', rule, e);
	json_decref(e);
	store_close(st);
	{
		char *want = tu_fmt("the removal of deny rule %llu is in the index but the audit log "
				    "never recorded it", (unsigned long long)rule);

		assert_true(start_says(want));
		free(want);
	}
	assert_string_equal(reason("ds2"), "policy_mismatch");
	stop();
	rebuild();
	e2e_daemon_start_with(E->pass, true);
	assert_string_equal(reason("ds2"), "denied_by_rule");
}

/* An index copied before an approval, put back after it and a later change: the lost approval
 * is named, and the grant's dataset refused until a rebuild, which brings the approval back. */
static void test_lost_approval(void **state)
{
	uint64_t gid;
	char ids[32], *want;

	(void)state;
	gid = id_of(e2e_ok(ctl("--json", "grant", "request", "--user", TU_USER_ALICE, "--dataset",
			       "ds4", "--purpose", "model training", "--expires", "+7d")), "grant");
	stop();
	e2e_index_save("index.before-approval");
	e2e_daemon_start_with(E->pass, true);
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)gid);
	e2e_ok_free(ctl_as(&E->u.bob, "grant", "approve", ids));
	e2e_ok_free(ctl("--json", "deny", "add", "--user", TU_USER_BOB, "--dataset", "ds1",
			"--reason", "later change"));
	stop();
	e2e_index_restore("index.before-approval");
	want = tu_fmt("the approval of grant %llu by uid %u is in the audit log but not in the "
		      "index: a rollback (an approval was lost)", (unsigned long long)gid,
		      (unsigned)E->u.bob.uid);
	assert_true(start_says(want));
	free(want);
	assert_string_equal(reason("ds4"), "policy_mismatch");
	stop();
	rebuild();
	e2e_daemon_start_with(E->pass, true);
	assert_string_equal(reason("ds4"), "allow");
	alice_opens("ds4", 0);
}

/* An erasure request written straight into the index (issue 16): the log never recorded it, so
 * the dataset it names is refused, and only that one (the comparison once took it for a deny
 * rule it could not place, and refused every dataset); a rebuild drops it. */
static void test_injected_erasure_request(void **state)
{
	struct store *st;
	uint64_t dsid;
	json_t *x;

	(void)state;
	assert_string_equal(reason("ds3"), "allow");
	assert_string_equal(reason("ds4"), "allow");
	{
		struct e2e_run *r = e2e_ok(ctl("--json", "dataset", "show", "ds3"));
		json_t *j = e2e_out_json(r);

		dsid = (uint64_t)json_integer_value(json_object_get(json_object_get(j, "dataset"),
								    "id"));
		json_decref(j);
		free(r);
	}
	assert_true(dsid > 0);
	stop();
	st = e2e_store_offline();
	x = json_pack("{s:I, s:I, s:s, s:I, s:s, s:b, s:I, s:s, s:I, s:I}", "id", (json_int_t)60,
		      "dataset_id", (json_int_t)dsid, "dataset", "ds3", "version", (json_int_t)1,
		      "reason", "quietly", "revoke_grants", 1, "by_uid", (json_int_t)0, "by",
		      "root", "at", (json_int_t)1767225600, "approvals_required", (json_int_t)1);
	put_record(st, 'u', 60, x);
	json_decref(x);
	store_close(st);
	assert_true(start_says("erasure request 60 is in the index but the audit log never "
			       "recorded it"));
	assert_string_equal(reason("ds3"), "policy_mismatch");
	alice_opens("ds3", EACCES);
	/* The other datasets are served. */
	assert_string_equal(reason("ds4"), "allow");
	alice_opens("ds4", 0);
	stop();
	rebuild();
	e2e_daemon_start_with(E->pass, true);
	assert_string_equal(reason("ds3"), "allow");
	alice_opens("ds3", 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rollback_after_revoke),
		cmocka_unit_test(test_last_change_completed),
		cmocka_unit_test(test_injected_grant),
		cmocka_unit_test(test_injected_deny_removal),
		cmocka_unit_test(test_lost_approval),
		cmocka_unit_test(test_injected_erasure_request),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
