/* test_e2e_seal: the sealed index (issue 12) as the service meets it, with the real enclaved,
 * enclavectl and mount.
 *
 * 1. The strings test: a tree whose dataset, directory and file names, grant purpose, revocation
 *    and deny reasons, controller and user are distinctive strings is imported, granted, read,
 *    revoked and denied; with the daemon stopped, none of those strings, nor their UTF-16 or
 *    base64 forms, is anywhere under the store directory: index, packs, keys and the (sealed)
 *    audit log.
 * 2. A directory entry removed from the index: the lookup through the mount is EIO, the listing
 *    of its directory ends in EIO, and the audit log gets an "integrity" record (source "index").
 * 3. A dataset record replayed from before its newest import (latest lowered): EIO, and a record.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "audit/audit.h"
#include "store/store_internal.h" /* white-box: the attacker's edits of the index */
#include "tests/e2e.h"
#include "tests/e2e_store.h"
#include "tests/testutil.h"

#define DS "oncology-StMarysZebra-2026"
#define DIR1 "hiv-positive-Xylophone"
#define FILE1 "JaneDoe_MRN4471923_ct.dcm"
#define DIR2 "ward-Quetzal"
#define FILE2 "consent-Vermilion.pdf"
#define PURPOSE "relapse prediction for patient JaneDoe MRN4471923 Marmalade"
#define REVOKE_REASON "project ended Obsidian"
#define DENY_REASON "investigation Periwinkle"
#define CONTROLLER "Hospital Saffron Trust"

static const char *const secrets[] = {
	DS, "StMarysZebra", DIR1, "Xylophone", FILE1, "MRN4471923", DIR2, "Quetzal", FILE2,
	"Vermilion", PURPOSE, "Marmalade", REVOKE_REASON, "Obsidian", DENY_REASON, "Periwinkle",
	CONTROLLER, "Saffron", TU_USER_ALICE, TU_USER_BOB,
};

static int group_setup(void **state)
{
	static const char *const roles[] = { "--steward", "user:root", "--auditor", "user:root",
					     "--approvals", "0", NULL };
	char *p;

	(void)state;
	if (e2e_setup("seal") < 0)
		return -1;
	p = tu_fmt("%s/%s", E->src, DIR1);
	mkdir(p, 0755);
	free(p);
	p = tu_fmt("%s/%s", E->src, DIR2);
	mkdir(p, 0755);
	free(p);
	tu_seed_file(70000, 1, "%s/%s/%s", E->src, DIR1, FILE1);
	tu_seed_file(1234, 2, "%s/%s/%s", E->src, DIR2, FILE2);
	tu_seed_file(10, 3, "%s/%s/other-file", E->src, DIR1);
	if (e2e_init(roles) < 0)
		return -1;
	e2e_daemon_start_with(E->pass, true);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	e2e_teardown();
	return 0;
}

struct stat_job {
	const char *path;
	int want_errno;     /* 0: must succeed */
	bool list;          /* list the directory at path instead */
};

static int child_stat(void *arg)
{
	const struct stat_job *j = arg;
	struct stat sb;
	int e = 0;

	if (j->list) {
		DIR *d = opendir(j->path);

		if (!d)
			return 10;
		errno = 0;
		while (readdir(d))
			;
		e = errno;
		closedir(d);
	} else if (stat(j->path, &sb) < 0) {
		e = errno;
	}
	return e == j->want_errno ? 0 : 20 + e;
}

static int child_read_all(void *arg)
{
	size_t n = 0;
	uint8_t *b = tu_read_file(arg, &n);

	free(b);
	return n == 70000 ? 0 : 1;
}

/* Needle in haystack, in these forms: as is, UTF-16LE, UTF-16BE, and base64 at each of the three
 * byte alignments (the part of the encoding that does not depend on the neighbouring bytes). */
static const char *find_form(const uint8_t *hay, size_t n, const char *s)
{
	size_t len = strlen(s);
	uint8_t u16[512];
	char b64[1024];
	uint8_t tmp[300];

	if (memmem(hay, n, s, len))
		return "as is";
	for (int be = 0; be < 2; be++) {
		for (size_t i = 0; i < len; i++) {
			u16[2 * i + (size_t)be] = (uint8_t)s[i];
			u16[2 * i + 1 - (size_t)be] = 0;
		}
		if (memmem(hay, n, u16, 2 * len))
			return be ? "UTF-16BE" : "UTF-16LE";
	}
	for (size_t k = 0; k < 3; k++) {
		size_t skip = k == 0 ? 0 : k == 1 ? 2 : 3, blen;

		memset(tmp, 0, k);
		memcpy(tmp + k, s, len);
		sodium_bin2base64(b64, sizeof(b64), tmp, k + len,
				  sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
		blen = strlen(b64);
		/* The last 3 characters may depend on what follows. */
		if (blen > skip + 3 + 6 && memmem(hay, n, b64 + skip, blen - skip - 3))
			return "base64";
		sodium_bin2base64(b64, sizeof(b64), tmp, k + len,
				  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
		blen = strlen(b64);
		if (blen > skip + 3 + 6 && memmem(hay, n, b64 + skip, blen - skip - 3))
			return "base64url";
	}
	return NULL;
}

/* Every regular file under dir, every secret in every form. */
static int scan(const char *dir, int *files)
{
	DIR *d = opendir(dir);
	int found = 0;

	assert_non_null(d);
	for (struct dirent *de; (de = readdir(d));) {
		char *p;
		struct stat sb;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		p = tu_fmt("%s/%s", dir, de->d_name);
		assert_int_equal(lstat(p, &sb), 0);
		if (S_ISDIR(sb.st_mode)) {
			found += scan(p, files);
		} else if (S_ISREG(sb.st_mode)) {
			size_t n = 0;
			uint8_t *data = tu_read_file(p, &n);

			(*files)++;
			for (size_t i = 0; i < ARRAY_SIZE(secrets); i++) {
				const char *form = find_form(data, n, secrets[i]);

				if (form) {
					fprintf(stderr, "%s holds \"%s\" (%s)\n", p, secrets[i],
						form);
					found++;
				}
			}
			free(data);
		}
		free(p);
	}
	closedir(d);
	return found;
}

struct manifest_match {
	const char *want;
	int found;
};

static int manifest_cb(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct manifest_match *mm = ctx;
	const char *m = json_string_value(json_object_get(rec, "manifest"));

	(void)line;
	(void)len;
	if (m && strcmp(m, mm->want) == 0 &&
	    strcmp(json_string_value(json_object_get(rec, "result")) ?: "", "committed") == 0)
		mm->found++;
	return 0;
}

static void test_no_name_on_disk(void **state)
{
	char *file = tu_fmt("%s/%s/1/%s/%s", E->mnt, DS, DIR1, FILE1);
	struct e2e_run *r;
	uint64_t id;
	int files = 0, found;

	(void)state;
	e2e_ok_free(ctl("dataset", "import", DS, E->src, "--controller", CONTROLLER));
	/* The version's manifest, as dataset show gives it, is the one the import's audit record
	 * carries (issue 12 point 2). */
	{
		json_t *j = e2e_out_json(r = e2e_ok(ctl("--json", "dataset", "show", DS)));
		const char *m = json_string_value(json_object_get(
			json_array_get(json_object_get(j, "versions"), 0), "manifest"));
		char *dir = tu_fmt("%s/audit", E->store);
		struct audit_filter flt = { .event = "import" };
		struct manifest_match mm = { .want = m };

		assert_non_null(m);
		assert_int_equal(strlen(m), 64);
		/* Read as an auditor reads it: opened with the auditor's key. */
		assert_int_equal(audit_opener_new(NULL, E->akey, &flt.open), 0);
		assert_int_equal(audit_foreach(dir, &flt, manifest_cb, &mm), 0);
		audit_opener_free(flt.open);
		assert_int_equal(mm.found, 1);
		free(dir);
		json_decref(j);
		free(r);
	}
	r = e2e_ok(ctl("--json", "grant", "add", "--user", TU_USER_ALICE, "--dataset", DS,
		       "--purpose", PURPOSE, "--expires", "+1h"));
	{
		json_t *j = e2e_out_json(r);

		id = (uint64_t)json_integer_value(json_object_get(json_object_get(j, "grant"),
								  "id"));
		json_decref(j);
	}
	free(r);
	assert_true(id > 0);
	assert_int_equal(tu_run_as(&E->u.alice, child_read_all, file, 60000), 0);
	{
		char ids[32];

		snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
		e2e_ok_free(ctl("grant", "revoke", ids, "--reason", REVOKE_REASON));
	}
	e2e_ok_free(ctl("deny", "add", "--user", TU_USER_BOB, "--dataset", DS, "--reason",
			DENY_REASON));
	/* The search can fail: it finds each form where one is. */
	{
		uint8_t buf[512] = "xx";
		char b64[256];
		size_t n = strlen(FILE1);

		for (size_t i = 0; i < n; i++)
			buf[2 + 2 * i] = (uint8_t)FILE1[i], buf[3 + 2 * i] = 0;
		assert_string_equal(find_form(buf, 2 + 2 * n, FILE1), "UTF-16LE");
		sodium_bin2base64(b64, sizeof(b64), (const uint8_t *)"ab" PURPOSE,
				  2 + strlen(PURPOSE), sodium_base64_VARIANT_ORIGINAL);
		assert_string_equal(find_form((const uint8_t *)b64, strlen(b64), PURPOSE),
				    "base64");
	}
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);

	found = scan(E->store, &files);
	assert_true(files > 5);
	assert_int_equal(found, 0);
	free(file);
}

static void index_edit(void (*fn)(struct store_index *ix, void *ctx), void *ctx)
{
	struct store_index ix;
	char *p = tu_fmt("%s/index", E->store);

	assert_int_equal(index_open(&ix, p, false), 0);
	fn(&ix, ctx);
	index_close(&ix);
	free(p);
}

static void del_key(struct store_index *ix, void *ctx)
{
	const uint8_t *k = ctx;
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();

	rocksdb_writebatch_delete_cf(wb, ix->cf[CF_DIRENTS], (const char *)k, DKEY_LEN);
	assert_int_equal(index_write(ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
}

static void test_removed_entry_is_eio_and_recorded(void **state)
{
	char *dir = tu_fmt("%s/%s/1/%s", E->mnt, DS, DIR1);
	char *file = tu_fmt("%s/%s", dir, FILE1);
	struct store_dataset_info di;
	struct store_inode in;
	struct ds_keys k;
	uint8_t key[DKEY_LEN];
	struct store *st;
	int before;

	(void)state;
	st = e2e_store_offline();
	assert_int_equal(store_dataset_get(st, DS, &di), 0);
	assert_int_equal(store_path_lookup(st, di.id, 1, DIR1, &in), 0);
	assert_int_equal(store_version_keys(st, di.id, 1, &k), 0);
	dkey(k.name, key, di.id, 1, in.ino, FILE1, strlen(FILE1));
	store_keys_put(st, &k);
	store_close(st);
	index_edit(del_key, key);

	before = e2e_audit_count("integrity", NULL, NULL, NULL, 0);
	e2e_daemon_start_with(E->pass, true);
	e2e_grant("--user", TU_USER_ALICE, DS, "+1h");
	assert_int_equal(tu_run_as(&E->u.alice, child_stat,
				   &(struct stat_job){ .path = file, .want_errno = EIO }, 60000), 0);
	assert_int_equal(tu_run_as(&E->u.alice, child_stat,
				   &(struct stat_job){ .path = dir, .want_errno = EIO, .list = true },
				   60000), 0);
	/* The other directory is served. */
	{
		char *ok = tu_fmt("%s/%s/1/%s/%s", E->mnt, DS, DIR2, FILE2);

		assert_int_equal(tu_run_as(&E->u.alice, child_stat,
					   &(struct stat_job){ .path = ok }, 60000), 0);
		free(ok);
	}
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	assert_true(e2e_audit_count("integrity", NULL, NULL, NULL, 0) >= before + 2);
	free(dir);
	free(file);
}

struct put_ctx {
	enum store_cf cf;
	const void *k, *v;
	size_t kl, vl;
};

static void put_kv(struct store_index *ix, void *ctx)
{
	const struct put_ctx *p = ctx;
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();

	rocksdb_writebatch_put_cf(wb, ix->cf[p->cf], p->k, p->kl, p->v, p->vl);
	assert_int_equal(index_write(ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
}

static void get_kv(struct store_index *ix, void *ctx)
{
	struct put_ctx *p = ctx;
	char *v = NULL;

	assert_int_equal(index_get(ix, p->cf, p->k, p->kl, &v, &p->vl), 0);
	p->v = v;
}

static void test_latest_lowered_is_eio_and_recorded(void **state)
{
	char *lat = tu_fmt("%s/%s/latest/%s/%s", E->mnt, DS, DIR2, FILE2);
	uint8_t dk[DSKEY_LEN];
	struct put_ctx old = { .cf = CF_DATASETS, .k = dk, .kl = sizeof(dk) };
	struct store *st;
	int before;

	(void)state;
	st = e2e_store_offline();
	dskey_hash(st->ix_name, DS, dk);
	store_close(st);
	index_edit(get_kv, &old);   /* the record naming version 1 */
	e2e_daemon_start_with(E->pass, true);
	e2e_ok_free(ctl("dataset", "import", DS, E->src));   /* version 2 */
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	index_edit(put_kv, &old);   /* ... put back: latest lowered to 1 */
	free((void *)old.v);

	before = e2e_audit_count("integrity", NULL, NULL, NULL, 0);
	e2e_daemon_start_with(E->pass, true);
	assert_int_equal(tu_run_as(&E->u.alice, child_stat,
				   &(struct stat_job){ .path = lat, .want_errno = EIO }, 60000), 0);
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	assert_true(e2e_audit_count("integrity", NULL, NULL, NULL, 0) > before);
	free(lat);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_name_on_disk),
		cmocka_unit_test(test_removed_entry_is_eio_and_recorded),
		cmocka_unit_test(test_latest_lowered_is_eio_and_recorded),
	};

	if (sodium_init() < 0 || crypto_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
