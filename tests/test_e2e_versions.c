/* test_e2e_versions: the index's versions bound to the import records of the signed audit log
 * (docs/FORMAT.md §6.11 "Versions bound to the log"), as someone who can write the store
 * directory attacks them with the daemon stopped. Each of these leaves an index consistent with
 * itself, which the index's own checks (§6.11) cannot see; the log can:
 *   - a whole version removed together with `latest` lowered (its records deleted, the dataset
 *     record from before its import put back);
 *   - the whole index put back from before an import;
 *   - a version injected (imported offline, with the passphrase, past the daemon and its log);
 *   - a version replaced (the index put back, then another version 2 imported offline): its
 *     manifest is not the one the log records.
 * Each time: the daemon names the disagreement on stderr, writes an `integrity` record ("source":
 * "log"), and refuses the dataset concerned (reason `integrity`, EACCES at open); the other
 * datasets are served. A store whose log has no versions record yet takes its index as the
 * starting point (`versions_baseline`), and a second start compares in two line reads.
 * Last, the format 1 fixture (tests/fixtures/store-v1.tar.gz) put in place of the store,
 * converted by `enclavectl store upgrade` (index and log), is served by the daemon: its datasets
 * listed, nothing refused, the new log verified with the public key alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "audit/audit.h"
#include "common/common.h"
#include "common/err.h"
#include "crypto/crypto.h"
#include "store/store_internal.h" /* white-box: the attacker's edits of the index */
#include "tests/e2e.h"
#include "tests/e2e_store.h"
#include "tests/testutil.h"

/* ---- Setup ------------------------------------------------------------------------------------ */

static void make_src(const char *name, unsigned seed)
{
	char *dir = tu_fmt("%s/%s", E->src, name), *file = tu_fmt("%s/a.bin", dir);

	(void)mkdir(dir, 0755);
	tu_write_seeded(file, 10000, seed);
	free(file);
	free(dir);
}

static void import(const char *name, unsigned seed)
{
	char *dir = tu_fmt("%s/%s", E->src, name);

	make_src(name, seed);
	e2e_ok_free(ctl("-q", "dataset", "import", (char *)name, dir));
	free(dir);
}

static int group_setup(void **state)
{
	static const char *const roles[] = { "--steward", "user:root", "--auditor", "user:root",
					     "--approvals", "0", NULL };

	(void)state;
	if (e2e_setup("e2e-versions") < 0 || e2e_init(roles) < 0)
		return -1;
	e2e_daemon_start_with(E->pass, true);
	import("keep", 1);
	e2e_grant("--user", TU_USER_ALICE, "keep", "+1d");
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

static char *daemon_log_n(size_t *ret_n)
{
	size_t n;
	char *b = (char *)tu_read_file(E->log, &n), *t = realloc(b, n + 1);

	assert_non_null(t);
	t[n] = '\0';
	*ret_n = n;
	return t;
}

/* Start, and say whether the daemon's log from this start on holds text (NULL: only start).
 * *ret_since (may be NULL): that part of the log (malloc'd). */
static bool start_says_with(const char *passfile, const char *text, char **ret_since)
{
	size_t before = 0, n;
	char *log;
	bool found = false;

	free(tu_read_file(E->log, &before));
	e2e_daemon_start_with(passfile, true);
	for (int i = 0;; i++) {
		log = daemon_log_n(&n);
		found = n > before && strstr(log + before, text ? text : "serving") != NULL;
		if (found || i == 100)
			break;
		free(log);
		poll(NULL, 0, 50);
	}
	if (!found)
		fprintf(stderr, "daemon log since start, wanted \"%s\":\n%s\n", text,
			n > before ? log + before : "");
	if (ret_since)
		*ret_since = strdup(n > before ? log + before : "");
	free(log);
	return found;
}

static bool start_says(const char *text, char **ret_since)
{
	return start_says_with(E->pass, text, ret_since);
}

/* Start with passfile; true when the start said nothing of a disagreement. */
static bool start_with_quiet(const char *passfile)
{
	char *since = NULL;
	bool quiet;

	assert_true(start_says_with(passfile, NULL, &since));
	quiet = strstr(since, "disagree") == NULL;
	if (!quiet)
		fprintf(stderr, "%s\n", since);
	free(since);
	return quiet;
}

static uint64_t dataset_id(const char *name)
{
	struct store_dataset_info di;
	struct store *st = e2e_store_offline();

	assert_int_equal(store_dataset_get(st, name, &di), 0);
	store_close(st);
	return di.id;
}

/* Import a version of name offline, with the passphrase, past the daemon and its log. */
static void import_offline(const char *name, unsigned seed)
{
	char *dir = tu_fmt("%s/%s", E->src, name);
	struct store *st = e2e_store_offline();
	struct store_import *imp = NULL;
	uint32_t ver = 0;
	int dfd, r;

	make_src(name, seed);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	r = store_import_begin(st, name, NULL, &imp);
	if (r == 0)
		r = store_import_add_tree(imp, dfd);
	if (r == 0)
		r = store_import_commit(imp, &ver);
	if (r < 0)
		fprintf(stderr, "offline import: %s\n", err_detail());
	assert_int_equal(r, 0);
	store_import_free(imp);
	store_close(st);
	close(dfd);
	free(dir);
}

static int integrity_records(void)
{
	return e2e_audit_count("integrity", NULL, NULL, NULL, 0);
}

/* ---- White-box edits of the index (the attacker needs no key for them) ---------------------- */

static void index_edit(void (*fn)(struct store_index *ix, void *ctx), void *ctx)
{
	struct store_index ix;
	char *p = tu_fmt("%s/index", E->store);

	assert_int_equal(index_open(&ix, p, false), 0);
	fn(&ix, ctx);
	index_close(&ix);
	free(p);
}

struct kv {
	enum store_cf cf;
	uint8_t k[DSKEY_LEN];
	char *v;
	size_t vl;
};

static void get_kv(struct store_index *ix, void *ctx)
{
	struct kv *p = ctx;

	assert_int_equal(index_get(ix, p->cf, p->k, sizeof(p->k), &p->v, &p->vl), 0);
}

/* Delete every record of version (dsid, ver): its version record, inodes and entries. */
struct del_version {
	uint64_t dsid;
	uint32_t ver;
	const struct kv *dataset;   /* and put this dataset record back */
};

static void del_version(struct store_index *ix, void *ctx)
{
	const struct del_version *dv = ctx;
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	static const enum store_cf cfs[] = { CF_VERSIONS, CF_INODES, CF_DIRENTS };
	uint8_t lo[VKEY_LEN];
	int n = 0;

	vkey(lo, dv->dsid, dv->ver);
	for (size_t i = 0; i < ARRAY_SIZE(cfs); i++) {
		rocksdb_iterator_t *it = rocksdb_create_iterator_cf(ix->db, ix->ro, ix->cf[cfs[i]]);

		for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); rocksdb_iter_valid(it);
		     rocksdb_iter_next(it)) {
			size_t kl;
			const char *k = rocksdb_iter_key(it, &kl);

			if (kl < VKEY_LEN || memcmp(k, lo, VKEY_LEN) != 0)
				break;
			rocksdb_writebatch_delete_cf(wb, ix->cf[cfs[i]], k, kl);
			n++;
		}
		rocksdb_iter_destroy(it);
	}
	assert_true(n >= 3);   /* a version record, a root, a file and its entry at least */
	rocksdb_writebatch_put_cf(wb, ix->cf[CF_DATASETS], (const char *)dv->dataset->k,
				  sizeof(dv->dataset->k), dv->dataset->v, dv->dataset->vl);
	assert_int_equal(index_write(ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
}

/* ---- Cases ------------------------------------------------------------------------------------ */

/* The first start of a daemon of this version took the index as the log's starting point; a
 * start with nothing changed finds them equal and says nothing. */
static void test_baseline_then_quiet(void **state)
{
	char *since = NULL;

	(void)state;
	assert_true(e2e_audit_count("versions_baseline", NULL, NULL, NULL, 0) >= 1);
	stop();
	assert_true(start_says(NULL, &since));
	assert_null(strstr(since, "disagree with the import records"));
	free(since);
	assert_string_equal(reason("keep"), "allow");
	alice_opens("keep", 0);
}

/* Version 2 removed whole and the dataset record from before it put back (latest 1): the index
 * is consistent with itself; the log has version 2. */
static void test_version_removed_latest_lowered(void **state)
{
	struct kv old = { .cf = CF_DATASETS };
	struct del_version dv;
	struct store *st;
	int before;

	(void)state;
	import("vr", 2);
	e2e_grant("--user", TU_USER_ALICE, "vr", "+1d");
	stop();
	st = e2e_store_offline();
	dskey_hash(st->ix_name, "vr", old.k);
	store_close(st);
	index_edit(get_kv, &old);                /* the record naming version 1 */
	e2e_daemon_start_with(E->pass, true);
	import("vr", 3);                          /* version 2 */
	alice_opens("vr", 0);
	stop();
	dv = (struct del_version){ .dsid = dataset_id("vr"), .ver = 2, .dataset = &old };
	index_edit(del_version, &dv);
	free(old.v);

	before = integrity_records();
	assert_true(start_says("the index's latest version is 1, the audit log records version 2",
			       NULL));
	assert_string_equal(reason("vr"), "integrity");
	alice_opens("vr", EACCES);
	assert_string_equal(reason("keep"), "allow");
	alice_opens("keep", 0);
	assert_true(integrity_records() >= before + 2);   /* version 2 missing, latest lowered */
	{
		struct e2e_run *r = ctl("--json", "audit", "show", "--event", "integrity",
					"--auditor-key", E->akey);

		e2e_ok(r);
		assert_non_null(strstr(r->out, "\"source\":\"log\""));
		assert_non_null(strstr(r->out, "version 2 of dataset \\\"vr\\\""));
		free(r);
	}
}

/* The whole index put back from before an import of another dataset's version 2. */
static void test_index_restored_from_before_import(void **state)
{
	int before;

	(void)state;
	import("vb", 4);
	e2e_grant("--user", TU_USER_ALICE, "vb", "+1d");
	stop();
	e2e_index_save("index.before-import");
	e2e_daemon_start_with(E->pass, true);
	import("vb", 5);                          /* version 2 */
	stop();
	e2e_index_restore("index.before-import");
	before = integrity_records();
	assert_true(start_says("version 2 of dataset \"vb\"", NULL));
	assert_string_equal(reason("vb"), "integrity");
	alice_opens("vb", EACCES);
	alice_opens("keep", 0);
	assert_true(integrity_records() > before);
}

/* A version imported offline, past the daemon: the log never recorded it. */
static void test_injected_version(void **state)
{
	int before;
	char *want;

	(void)state;
	import("vi", 6);
	e2e_grant("--user", TU_USER_ALICE, "vi", "+1d");
	alice_opens("vi", 0);
	stop();
	import_offline("vi", 7);                  /* version 2, in the index only */
	before = integrity_records();
	want = tu_fmt("version 2 of dataset \"vi\" (id %llu) is in the index but the audit log "
		      "has no import record of it", (unsigned long long)dataset_id("vi"));
	assert_true(start_says(want, NULL));
	free(want);
	assert_string_equal(reason("vi"), "integrity");
	alice_opens("vi", EACCES);
	alice_opens("keep", 0);
	assert_true(integrity_records() > before);
}

/* The index put back from before version 2, then another version 2 imported offline: a version 2
 * exists, but its manifest is not the one the log records. */
static void test_replaced_version(void **state)
{
	int before;

	(void)state;
	import("vm", 8);
	e2e_grant("--user", TU_USER_ALICE, "vm", "+1d");
	stop();
	e2e_index_save("index.before-vm2");
	e2e_daemon_start_with(E->pass, true);
	import("vm", 9);                          /* version 2, recorded */
	stop();
	e2e_index_restore("index.before-vm2");
	import_offline("vm", 10);                 /* another version 2 */
	before = integrity_records();
	assert_true(start_says("version 2 of dataset \"vm\"", NULL));
	{
		size_t n;
		char *log = daemon_log_n(&n);

		assert_non_null(strstr(log, "is not the one the audit log records"));
		free(log);
	}
	assert_string_equal(reason("vm"), "integrity");
	alice_opens("vm", EACCES);
	alice_opens("keep", 0);
	assert_true(integrity_records() > before);
}

#define FIXTURE_PASS "fixture-v1 test passphrase, not a secret"

/* The format 1 fixture, upgraded by the command and served. */
static void test_upgraded_fixture_served(void **state)
{
	char *pass = tu_fmt("%s/fixture.pass", E->root), *pub = tu_fmt("%s/auditor.pub", E->root);
	char pubtext[AUDIT_AUDITOR_PUB_TEXT + 1];
	uint8_t *sk = NULL, pk[AUDIT_AUDITOR_KEY_LEN];
	struct e2e_run *r;
	int status = 0;
	pid_t pid;

	(void)state;
	stop();
	tu_rm_rf(E->store);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execlp("tar", "tar", "-C", E->root, "-xzf", FIXTURE_DIR "/store-v1.tar.gz",
		       (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	tu_write_file(pass, FIXTURE_PASS "\n", strlen(FIXTURE_PASS) + 1);
	assert_int_equal(chmod(pass, 0600), 0);
	/* The upgrade seals to the harness's auditor key, so the harness reads the new log. */
	assert_int_equal(audit_auditor_secret_read(E->akey, &sk, pk), 0);
	sodium_free(sk);
	assert_int_equal(audit_auditor_public_format(pk, pubtext), 0);
	tu_write_file(pub, pubtext, strlen(pubtext));
	e2e_ok_free(ctl("store", "upgrade", "-q", "--passphrase-file", pass,
			"--auditor-public-key", pub));

	assert_true(start_with_quiet(pass));
	r = e2e_ok(ctl("--json", "dataset", "list"));
	assert_non_null(strstr(r->out, "fixture-Capybara"));
	assert_non_null(strstr(r->out, "fixture-Second-Heron"));
	free(r);
	assert_string_equal(reason("fixture-Capybara"), "no_grant");
	/* The first start took the upgraded index as the log's starting point. */
	assert_int_equal(e2e_audit_count("log_upgrade", NULL, NULL, NULL, 0), 1);
	assert_int_equal(e2e_audit_count("versions_baseline", NULL, NULL, NULL, 0), 1);
	assert_int_equal(e2e_audit_count("policy_snapshot", NULL, NULL, NULL, 0), 1);
	stop();
	assert_true(start_with_quiet(pass));
	free(pass);
	free(pub);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_baseline_then_quiet),
		cmocka_unit_test(test_version_removed_latest_lowered),
		cmocka_unit_test(test_index_restored_from_before_import),
		cmocka_unit_test(test_injected_version),
		cmocka_unit_test(test_replaced_version),
		cmocka_unit_test(test_upgraded_fixture_served),
	};

	if (sodium_init() < 0 || crypto_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
