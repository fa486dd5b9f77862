/* test_audit_upgrade: the conversion of a log from before sealing (audit/upgrade.c, docs/AUDIT.md
 * section 17), on the audit log of the format 1 fixture store (tests/fixtures/store-v1.tar.gz, made
 * by the code of commit 3cbb433):
 *   - the new directory holds none of the fixture's names, the old one is unchanged;
 *   - the legacy file opens with the auditor's key and with the store's to the exact old bytes,
 *     and not with another auditor's key; a changed or cut legacy file is refused;
 *   - the new log is sealed, verifies with the public key alone, and its log_upgrade record names
 *     the old log's size and root, which the auditors' old checkpoints match;
 *   - `enclavectl store upgrade` converts index and log in one command: afterwards `audit verify`
 *     passes with the verifier key alone, `audit legacy` opens the old log with the auditor key
 *     the command made, and nothing of the fixture is readable in the log; refused runs (a wrong
 *     passphrase, an existing key file) change nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sodium.h>

#include "audit/audit.h"
#include "audit/merkle.h"
#include "audit/note.h"
#include "audit/verify.h"
#include "common/common.h"
#include "common/err.h"
#include "crypto/crypto.h"
#include "store/store.h"
#include "tests/testutil.h"

static const uint8_t store_key[AUDIT_SEAL_KEY_LEN] = { 'u', 'p' };
static const uint8_t seed[32] = { 's', 'i', 'g', 'n' };
#define NAME "fixture.test/enclave-v1"

struct fx {
	char *root, *old, *new, *akey;
	uint8_t pk[AUDIT_AUDITOR_KEY_LEN];
};

/* The fixture's store/ unpacked into dir. */
static void unpack(const char *dir)
{
	pid_t pid;
	int st;

	pid = fork();
	if (pid == 0) {
		execlp("tar", "tar", "-xzf", FIXTURE_DIR "/store-v1.tar.gz", "-C", dir,
		       (char *)NULL);
		_exit(127);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	f->root = tu_mkdtemp("audit-upgrade");
	unpack(f->root);
	f->old = tu_fmt("%s/store/audit", f->root);
	f->new = tu_fmt("%s/store/audit.new", f->root);
	f->akey = tu_fmt("%s/auditor.key", f->root);
	assert_int_equal(audit_auditor_keypair_write(f->akey, f->pk), 0);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	tu_rm_rf(f->root);
	free(f->root);
	free(f->old);
	free(f->new);
	free(f->akey);
	free(f);
	return 0;
}

static uint8_t *slurp(const char *dir, const char *name, size_t *n)
{
	char *p = tu_fmt("%s/%s", dir, name);
	uint8_t *b = tu_read_file(p, n);

	free(p);
	return b;
}

static void same_file(const char *a, const char *b, const char *name)
{
	size_t na, nb;
	uint8_t *x = slurp(a, name, &na), *y = slurp(b, name, &nb);

	assert_int_equal(na, nb);
	assert_memory_equal(x, y, na);
	free(x);
	free(y);
}

static void no_names(const char *dir, const char *name)
{
	static const char *const names[] = { "Capybara", "Pangolin", "Kinkajou", "Tamarin",
					     "Caracal", "Quokka", "Jerboa", "Ibis" };
	size_t n;
	uint8_t *b = slurp(dir, name, &n);

	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		if (memmem(b, n, names[i], strlen(names[i])))
			fprintf(stderr, "%s/%s holds %s\n", dir, name, names[i]);
		assert_null(memmem(b, n, names[i], strlen(names[i])));
	}
	free(b);
}

struct collect {
	struct audit_opener *o;
	json_t *recs;
};

static int collect_fn(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct collect *c = ctx;

	(void)line, (void)len;
	json_array_append(c->recs, (json_t *)rec);
	return 0;
}

/* The old log's last checkpoint: its size and root, read from the note's body. */
static void last_checkpoint(const char *dir, uint64_t *ret_size, uint8_t root[static 32])
{
	size_t n, got = 0;
	char *text = (char *)slurp(dir, CHECKPOINTS_FILE_NAME, &n), *last = NULL, *p, *nl;

	text = realloc(text, n + 1);
	text[n] = '\0';
	for (p = text; (p = strstr(p, NAME "\n")); p++)
		if (p == text || p[-1] == '\n')
			last = p;
	assert_non_null(last);
	p = strchr(last, '\n') + 1;
	*ret_size = strtoull(p, NULL, 10);
	p = strchr(p, '\n') + 1;
	nl = strchr(p, '\n');
	assert_int_equal(sodium_base642bin(root, 32, p, (size_t)(nl - p), NULL, &got, NULL,
					   sodium_base64_VARIANT_ORIGINAL), 0);
	assert_int_equal(got, 32);
	free(text);
}

static void test_upgrade_fixture_log(void **state)
{
	struct fx *f = *state;
	struct audit_upgrade_info info;
	struct collect c = { 0 };
	struct audit_filter flt = { 0 };
	struct merkle_mem *tree = NULL;
	struct note_verifier v;
	struct verify_options vo = { 0 };
	struct verify_result *res = NULL;
	uint8_t pk[32], sk[64], root[32], cproot[32];
	char *vtext = NULL, *out1 = tu_fmt("%s/legacy-auditor", f->root);
	char *out2 = tu_fmt("%s/legacy-store", f->root), *legacy = NULL;
	const json_t *up;
	uint64_t cpsize = 0;
	char hex[65];

	err_clear();
	if (audit_upgrade_legacy(f->old, f->new, store_key, (const uint8_t(*)[32])&f->pk, 1, NAME,
				 seed, NULL, &info) < 0)
		fprintf(stderr, "upgrade: %s\n", err_detail());
	assert_true(info.records > 5);
	/* Nothing readable in the new directory; the old one as it was (compared below). */
	no_names(f->new, AUDIT_LEGACY_NAME);
	no_names(f->new, AUDIT_LOG_NAME);
	/* A second run into the same place is refused, and changes nothing. */
	assert_int_equal(audit_upgrade_legacy(f->old, f->new, store_key,
					      (const uint8_t(*)[32])&f->pk, 1, NAME, seed, NULL, NULL),
			 -EEXIST);

	/* The legacy file opens with the auditor's key and with the store's, to the old bytes. */
	legacy = tu_fmt("%s/%s", f->new, AUDIT_LEGACY_NAME);
	assert_int_equal(audit_legacy_open(legacy, NULL, f->akey, out1), 0);
	assert_int_equal(audit_legacy_open(legacy, store_key, NULL, out2), 0);
	same_file(f->old, out1, AUDIT_LOG_NAME);
	same_file(f->old, out1, CHECKPOINTS_FILE_NAME);
	same_file(f->old, out2, AUDIT_LOG_NAME);
	same_file(f->old, out2, CHECKPOINTS_FILE_NAME);

	/* The new log: a key record, then log_upgrade with the old log's size and root. */
	assert_int_equal(audit_opener_new(NULL, f->akey, &c.o), 0);
	c.recs = json_array();
	flt.open = c.o;
	assert_int_equal(audit_foreach(f->new, &flt, collect_fn, &c), 0);
	assert_int_equal(json_array_size(c.recs), 2);
	up = json_array_get(c.recs, 1);
	assert_string_equal(json_string_value(json_object_get(up, "event")), "log_upgrade");
	assert_int_equal(json_integer_value(json_object_get(up, "legacy_records")), info.records);
	assert_int_equal(verify_load_tree(out1, &tree), 0);
	assert_int_equal(merkle_mem_size(tree), info.records);
	assert_int_equal(merkle_mem_root(tree, info.records, root), 0);
	sodium_bin2hex(hex, sizeof(hex), root, 32);
	assert_string_equal(json_string_value(json_object_get(up, "legacy_root")), hex);
	/* The auditors' old checkpoints: the last one matches the decrypted log. */
	last_checkpoint(out1, &cpsize, cproot);
	assert_true(cpsize > 0 && cpsize <= info.records);
	assert_int_equal(merkle_mem_root(tree, cpsize, root), 0);
	assert_memory_equal(root, cproot, 32);
	merkle_mem_free(tree);
	json_decref(c.recs);
	audit_opener_free(c.o);

	/* The new log verifies with the public key alone. */
	crypto_sign_seed_keypair(pk, sk, seed);
	assert_int_equal(note_verifier_format(NAME, pk, &vtext), 0);
	assert_int_equal(note_verifier_parse(vtext, strlen(vtext), &v), 0);
	vo.log_dir = f->new;
	vo.key = &v;
	assert_int_equal(verify_log(&vo, &res), 0);
	assert_int_equal(res->n, 0);
	assert_int_equal(res->records, 2);
	verify_result_free(res);
	free(vtext);
	free(out1);
	free(out2);
	free(legacy);
}

/* enclavectl audit legacy ARGS...: its exit status. */
static int ctl_run(const char *const *args)
{
	char *argv[16] = { ENCLAVECTL_PATH };
	size_t n = 1;
	pid_t pid;
	int st;

	for (; args[n - 1]; n++)
		argv[n] = (char *)args[n - 1];
	argv[n] = NULL;
	pid = fork();
	if (pid == 0) {
		execv(ENCLAVECTL_PATH, argv);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* Another auditor's key does not open the legacy file; a changed or cut one is refused. */
static void test_legacy_refusals(void **state)
{
	struct fx *f = *state;
	char *other = tu_fmt("%s/other.key", f->root), *legacy, *out = tu_fmt("%s/o1", f->root);
	uint8_t opk[32], *b;
	size_t n;

	assert_int_equal(audit_upgrade_legacy(f->old, f->new, store_key,
					      (const uint8_t(*)[32])&f->pk, 1, NAME, seed, NULL, NULL), 0);
	legacy = tu_fmt("%s/%s", f->new, AUDIT_LEGACY_NAME);
	assert_int_equal(audit_auditor_keypair_write(other, opk), 0);
	assert_int_equal(audit_legacy_open(legacy, NULL, other, out), -ENOKEY);
	assert_int_equal(audit_legacy_open(legacy, NULL, NULL, out), -ENOKEY);
	/* The auditor's command: the old bytes with the right key, exit 1 with another. */
	{
		char *o4 = tu_fmt("%s/o4", f->root), *o5 = tu_fmt("%s/o5", f->root);
		const char *ok[] = { "audit", "legacy", "--log", f->new, "--auditor-key", f->akey,
				     "--output", o4, NULL };
		const char *bad[] = { "audit", "legacy", "--log", f->new, "--auditor-key", other,
				      "--output", o5, NULL };

		assert_int_equal(ctl_run(ok), 0);
		same_file(f->old, o4, AUDIT_LOG_NAME);
		assert_int_equal(ctl_run(bad), 1);
		free(o4);
		free(o5);
	}

	b = tu_read_file(legacy, &n);
	b[n - 100] ^= 1;
	tu_write_file(legacy, b, n);
	free(out);
	out = tu_fmt("%s/o2", f->root);
	assert_int_equal(audit_legacy_open(legacy, NULL, f->akey, out), -EBADMSG);
	b[n - 100] ^= 1;
	tu_write_file(legacy, b, n - 40);	/* cut short */
	free(out);
	out = tu_fmt("%s/o3", f->root);
	assert_int_equal(audit_legacy_open(legacy, NULL, f->akey, out), -EBADMSG);
	free(b);
	free(out);
	free(other);
	free(legacy);
}

/* The verifier key of the store's log, as `enclavectl audit pubkey` prints it, into a file. */
static char *verifier_file(const char *root, const char *store, const char *pass_text)
{
	char name[STORE_SIGNING_NAME_MAX + 1], *vtext = NULL, *path = tu_fmt("%s/verifier", root);
	crypto_secret *pass = tu_pass(pass_text);
	crypto_key *sd = NULL;
	struct store *st = NULL;
	uint8_t pk[32], sk[64];

	assert_int_equal(crypto_init(), 0);
	assert_int_equal(store_open(store, pass, NULL, &st), 0);
	assert_int_equal(store_signing_seed(st, &sd, name), 0);
	crypto_sign_seed_keypair(pk, sk, crypto_key_bytes(sd));
	sodium_memzero(sk, sizeof(sk));
	crypto_key_free(sd);
	store_close(st);
	crypto_secret_free(pass);
	assert_int_equal(note_verifier_format(name, pk, &vtext), 0);
	tu_write_file(path, vtext, strlen(vtext));
	free(vtext);
	return path;
}

#define FIXTURE_PASS "fixture-v1 test passphrase, not a secret"

/* `enclavectl store upgrade` on the fixture: index and log in one command. */
static void test_store_upgrade_command(void **state)
{
	struct fx *f = *state;
	char *store = tu_fmt("%s/store", f->root), *pass = tu_fmt("%s/pass", f->root);
	char *badpass = tu_fmt("%s/badpass", f->root), *akey2 = tu_fmt("%s/upgrade-auditor.key",
									f->root);
	char *pristine = tu_fmt("%s/pristine", f->root), *out = tu_fmt("%s/legacy-cli", f->root);
	char *verifier = NULL, *index = tu_fmt("%s/index", store);
	const char *wrong[] = { "--store", store, "store", "upgrade", "-q", "--passphrase-file",
				badpass, "--auditor-key-out", akey2, NULL };
	const char *exists[] = { "--store", store, "store", "upgrade", "-q", "--passphrase-file",
				 pass, "--auditor-key-out", f->akey, NULL };
	const char *up[] = { "--store", store, "store", "upgrade", "-q", "--passphrase-file", pass,
			     "--auditor-key-out", akey2, NULL };
	const char *legacy[] = { "audit", "legacy", "--log", f->old, "--auditor-key", akey2,
				 "--output", out, NULL };
	struct stat sb;

	tu_write_file(pass, FIXTURE_PASS "\n", strlen(FIXTURE_PASS) + 1);
	tu_write_file(badpass, "not the passphrase\n", 19);
	assert_int_equal(chmod(pass, 0600), 0);
	assert_int_equal(chmod(badpass, 0600), 0);
	assert_int_equal(mkdir(pristine, 0700), 0);
	unpack(pristine);	/* the log as the fixture holds it, to compare with */
	free(pristine);
	pristine = tu_fmt("%s/pristine/store/audit", f->root);

	/* Refused runs change nothing. */
	assert_int_equal(ctl_run(wrong), 1);
	assert_int_equal(lstat(akey2, &sb), -1);	/* nothing listed, nothing kept */
	same_file(pristine, f->old, AUDIT_LOG_NAME);
	assert_int_equal(ctl_run(exists), 1);
	same_file(pristine, f->old, AUDIT_LOG_NAME);
	same_file(pristine, f->old, CHECKPOINTS_FILE_NAME);

	/* The upgrade: one command. */
	assert_int_equal(ctl_run(up), 0);
	no_names(f->old, AUDIT_LOG_NAME);
	no_names(f->old, AUDIT_LEGACY_NAME);
	verifier = verifier_file(f->root, store, FIXTURE_PASS);
	{
		const char *verify[] = { "audit", "verify", "--log", f->old, "--key-file", verifier,
					 NULL };

		assert_int_equal(ctl_run(verify), 0);
	}
	assert_int_equal(ctl_run(legacy), 0);
	same_file(pristine, out, AUDIT_LOG_NAME);
	same_file(pristine, out, CHECKPOINTS_FILE_NAME);
	/* The old log, opened, still verifies with the same key (and the old checkpoints). */
	{
		const char *verify[] = { "audit", "verify", "--log", out, "--key-file", verifier,
					 NULL };

		assert_int_equal(ctl_run(verify), 0);
	}
	/* Again: nothing to do. */
	assert_int_equal(ctl_run((const char *[]){ "--store", store, "store", "upgrade", "-q",
						   "--passphrase-file", pass, NULL }),
			 0);
	assert_int_equal(lstat(index, &sb), 0);
	free(store);
	free(pass);
	free(badpass);
	free(akey2);
	free(pristine);
	free(out);
	free(verifier);
	free(index);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_upgrade_fixture_log, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_legacy_refusals, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_store_upgrade_command, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
