/* test_e2e_erase: erasure of a version through the real daemon and CLI, as issue 16 asks
 * (docs/FORMAT.md 3.7, 3.8; docs/POLICY.md "Erasure"):
 *   - refused while a grant in force names only the version, unless --revoke-grants;
 *   - a request alone erases nothing; the requester cannot approve it; another steward's
 *     approval carries it out;
 *   - a file held open on the erased version stops reading at once; the mount no longer shows
 *     the version; the other version reads byte-exact;
 *   - `dataset erasure-proof` prints a proof that `audit check-proof` accepts offline with the
 *     log's key alone, and Go's x/mod note/tlog accept too; the same proof with the record
 *     changed is refused;
 *   - retention: past a dataset's date the daemon records `erasure_due` once and `dataset list`
 *     says so; nothing is erased by itself;
 *   - the key ring put back from before the erasure: the daemon does not start (the store
 *     refuses a ring older than its index; with the index's generation lowered too, the daemon
 *     refuses it against the erasure's done record, bound to the log);
 *   - the daemon killed between the keys' destruction and the erasure's record: the next start
 *     records it and serves the other version.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/common.h"
#include "common/err.h"
#include "crypto/crypto.h"
#include "policy/policy.h"
#include "store/store_internal.h" /* white-box: the attacker's edit of the index */
#include "tests/e2e.h"
#include "tests/testutil.h"

#define DS "cohort-Wren"
#define DS3 "cohort-Finch"
#define SECRET "withdrawn-Tern.csv"
#define SECRET_TEXT "participant 17 Tern withdrew consent\n"

static int group_setup(void **state)
{
	static const char *const roles[] = { "--steward", "user:root", "--steward",
					     "user:" TU_USER_BOB, "--auditor", "user:root",
					     "--approvals", "1", NULL };

	(void)state;
	if (e2e_setup("e2e-erase") < 0 || e2e_init(roles) < 0)
		return -1;
	e2e_daemon_start_with(E->pass, true);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	/* test_erase_recorded_late's small file system, if it stopped half way. */
	if (E && E->store) {
		char *audit = tu_fmt("%s/audit", E->store);

		(void)umount2(audit, MNT_DETACH);
		free(audit);
	}
	e2e_teardown();
	return 0;
}

/* A grant of dataset (NAME or NAME@V) to alice, approved by bob; its id. */
static uint64_t grant_approved(const char *dataset)
{
	uint64_t id = e2e_grant("--user", TU_USER_ALICE, dataset, "+1d");
	char ids[24];

	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
	e2e_ok_free(ctl_as(&E->u.bob, "grant", "approve", ids));
	return id;
}

/* Alice holds a file of version 1 open: she reads from it, says so, waits, reads again. */
struct hold {
	char path[4096];
	int ready[2], go[2];
};

static int child_hold(void *arg)
{
	struct hold *h = arg;
	char b[16], c = 'r';
	int fd = open(h->path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0 || pread(fd, b, 4, 0) != 4) {
		fprintf(stderr, "hold: %s: %s\n", h->path, strerror(errno));
		return 1;
	}
	if (write(h->ready[1], &c, 1) != 1 || read(h->go[0], &c, 1) != 1)
		return 2;
	n = pread(fd, b, 4, 0);
	close(fd);
	if (n >= 0) {
		fprintf(stderr, "hold: a read of the erased version still succeeded\n");
		return 3;
	}
	return errno == EACCES || errno == EIO ? 0 : 4;
}

struct see {
	char path[4096];
	const char *name;
	bool want;
};

static int child_lists(void *arg)
{
	const struct see *s = arg;
	char *cmd = tu_fmt("ls -1 '%s'", s->path);
	FILE *p = popen(cmd, "r");
	char line[256];
	bool found = false;

	free(cmd);
	if (!p)
		return 1;
	while (fgets(line, sizeof(line), p)) {
		line[strcspn(line, "\n")] = '\0';
		found |= strcmp(line, s->name) == 0;
	}
	pclose(p);
	return found == s->want ? 0 : 2;
}

static int child_reads_v2(void *arg)
{
	const char *path = arg;
	size_t n = 0;
	uint8_t *b = tu_read_file(path, &n), *want = malloc(100000);

	tu_fill(want, 100000, 2);
	if (n != 100000 || memcmp(b, want, n) != 0)
		return 1;
	free(b);
	free(want);
	return 0;
}

static char *ring_copy;

static void test_erase_version(void **state)
{
	char *v1 = tu_fmt("%s/%s", E->src, "v1"), *v2 = tu_fmt("%s/%s", E->src, "v2");
	char *p, *proof = tu_fmt("%s/erasure.proof", E->root), *rec = tu_fmt("%s/erasure.rec",
									       E->root);
	char *key = tu_fmt("%s/verifier.key", E->root), idtext[24];
	struct hold h;
	struct see s;
	struct e2e_run *r;
	json_t *j;
	pid_t pid;
	int status = 0;
	char c = 'g';

	(void)state;
	assert_int_equal(mkdir(v1, 0755), 0);
	assert_int_equal(mkdir(v2, 0755), 0);
	p = tu_fmt("%s/%s", v1, SECRET);
	tu_write_file(p, SECRET_TEXT, strlen(SECRET_TEXT));
	free(p);
	tu_seed_file(100000, 2, "%s/keep.bin", v1);
	tu_seed_file(100000, 2, "%s/keep.bin", v2);
	e2e_ok_free(ctl("-q", "dataset", "import", DS, v1));
	e2e_ok_free(ctl("-q", "dataset", "import", DS, v2));
	grant_approved(DS);
	grant_approved(DS "@1");

	/* A grant names only version 1: refused without --revoke-grants, nothing recorded. */
	r = ctl("dataset", "erase", DS "@1", "--reason", "consent withdrawn");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "--revoke-grants"));
	free(r);
	/* Without a reason: a usage error. */
	r = ctl("dataset", "erase", DS "@1");
	assert_int_equal(r->status, 2);
	free(r);
	/* Only a steward may ask. */
	r = ctl_as(&E->u.alice, "dataset", "erase", DS "@1", "--reason", "x");
	assert_int_equal(r->status, 1);
	free(r);

	/* Alice holds version 1's file open. */
	snprintf(h.path, sizeof(h.path), "%s/%s/1/%s", E->mnt, DS, SECRET);
	assert_int_equal(pipe(h.ready), 0);
	assert_int_equal(pipe(h.go), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(tu_run_as(&E->u.alice, child_hold, &h, 60000) == 0 ? 0 : 1);
	assert_int_equal(read(h.ready[0], &c, 1), 1);

	/* The ring as it is before the erasure, for the rollback test below. */
	p = tu_fmt("%s/keys/ring", E->store);
	ring_copy = tu_fmt("%s/ring.before", E->root);
	tu_copy_file(p, ring_copy);
	free(p);

	/* Asked: nothing happens yet; the requester cannot approve it. */
	r = e2e_ok(ctl("--json", "dataset", "erase", DS "@1", "--reason", "consent withdrawn",
		       "--revoke-grants"));
	j = e2e_out_json(r);
	snprintf(idtext, sizeof(idtext), "%lld",
		 (long long)json_integer_value(json_object_get(json_object_get(j, "erasure"), "id")));
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "erasure"),
								 "state")), "pending_approval");
	json_decref(j);
	free(r);
	s = (struct see){ .name = "1", .want = true };
	snprintf(s.path, sizeof(s.path), "%s/%s", E->mnt, DS);
	assert_int_equal(tu_run_as(&E->u.alice, child_lists, &s, 30000), 0);
	r = ctl("dataset", "erase-approve", idtext);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "another steward must approve"));
	free(r);

	/* Bob approves: erased. */
	r = e2e_ok(ctl_as(&E->u.bob, "dataset", "erase-approve", idtext));
	assert_non_null(strstr(r->out, "approved and erased"));
	free(r);
	/* The open file stops reading at once. */
	assert_int_equal(write(h.go[1], &c, 1), 1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* Version 1 is gone from the mount; version 2 reads byte-exact. */
	s.want = false;
	assert_int_equal(tu_run_as(&E->u.alice, child_lists, &s, 30000), 0);
	p = tu_fmt("%s/%s/2/keep.bin", E->mnt, DS);
	assert_int_equal(tu_run_as(&E->u.alice, child_reads_v2, p, 30000), 0);
	free(p);
	/* The show lists version 2 only, latest 2. */
	r = e2e_ok(ctl("--json", "dataset", "show", DS));
	j = e2e_out_json(r);
	assert_int_equal(json_array_size(json_object_get(j, "versions")), 1);
	json_decref(j);
	free(r);
	assert_int_equal(e2e_audit_count("erase_request", NULL, DS, NULL, 0), 1);
	assert_int_equal(e2e_audit_count("erase_approve", TU_USER_BOB, DS, NULL, 0), 1);
	assert_int_equal(e2e_audit_count("dataset_erase", NULL, DS, NULL, 0), 1);

	/* The proof, checked offline with the log's key alone. */
	e2e_ok_free(ctl("dataset", "erasure-proof", DS "@1", "--output", proof, "--record-output",
			rec));
	r = e2e_ok(ctl("audit", "pubkey"));
	r->out[strcspn(r->out, "\n")] = '\0';
	tu_write_file(key, r->out, strlen(r->out));
	e2e_ok_free(e2e_run_argv(NULL, (char *const[]){ ENCLAVECTL_PATH, "audit", "check-proof",
							 "--key", r->out, "--record", rec, proof,
							 NULL }));
	{
		/* The record names the version, its manifest, the destroyed key, in the clear. */
		size_t n = 0;
		uint8_t *line = tu_read_file(rec, &n);
		char *bad = tu_fmt("%s/erasure.bad", E->root);
		struct e2e_run *b;

		assert_non_null(memmem(line, n, "\"event\":\"dataset_erase\"", 23));
		assert_non_null(memmem(line, n, "\"manifests\":\"1:", 15));
		assert_non_null(memmem(line, n, "\"key_ids\":\"", 11));
		assert_null(memmem(line, n, "Tern", 4));
		assert_null(memmem(line, n, DS, strlen(DS)));
		/* One digit of the key id changed: the proof does not hold for it. */
		{
			uint8_t *k = memmem(line, n, "\"key_ids\":\"", 11);

			k[11] = k[11] == '0' ? '1' : '0';
		}
		tu_write_file(bad, line, n);
		b = e2e_run_argv(NULL, (char *const[]){ ENCLAVECTL_PATH, "audit", "check-proof",
							"--key", r->out, "--record", bad, proof,
							NULL });
		assert_int_not_equal(b->status, 0);
		free(b);
		/* Go's x/mod note and tlog: the same proof, from the log as it is on disk. */
		b = e2e_run_argv(NULL, (char *const[]){ "/bin/bash", INTEROP_DIR "/go_check_proof.sh",
							INTEROP_DIR, E->root, key, E->store, proof,
							rec, bad, NULL });
		if (b->status != 0)
			fprintf(stderr, "%s%s", b->out, b->err);
		assert_int_equal(b->status, 0);
		free(b);
		free(bad);
		free(line);
	}
	free(r);

	free(v1);
	free(v2);
	free(proof);
	free(rec);
	free(key);
}

/* The key ring from before the erasure, put back: the daemon refuses to start. */
static void test_ring_rollback_refused(void **state)
{
	char *ring = tu_fmt("%s/keys/ring", E->store), *now = tu_fmt("%s/ring.now", E->root);
	struct e2e_run *r;

	(void)state;
	assert_non_null(ring_copy);
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	tu_copy_file(ring, now);
	tu_copy_file(ring_copy, ring);
	e2e_daemon_start_with(E->pass, false);
	/* It exits; the reason is on its stderr. */
	for (int i = 0; i < 300 && E->daemon; i++) {
		int st;

		if (waitpid(E->daemon, &st, WNOHANG) == E->daemon)
			E->daemon = 0;
		else
			usleep(100000);
	}
	assert_int_equal(E->daemon, 0);
	r = e2e_run_argv(NULL, (char *const[]){ "/bin/cat", E->log, NULL });
	if (!strstr(r->out, "older than the index"))
		fprintf(stderr, "daemon log: %s\n", r->out);
	assert_non_null(strstr(r->out, "older than the index"));
	free(r);
	/* The index's generation lowered to match (written past the store, as an attacker with the
	 * disk could): the store opens, and the daemon refuses the ring against the erasure's done
	 * record, which the log binds. */
	{
		size_t n = 0;
		uint8_t *old = tu_read_file(ring_copy, &n), g[8];
		char *ix = tu_fmt("%s/index", E->store);
		struct store_index sx;
		rocksdb_writebatch_t *wb = rocksdb_writebatch_create();

		assert_true(n > 24);
		memcpy(g, old + 16, 8);
		assert_int_equal(index_open(&sx, ix, false), 0);
		rocksdb_writebatch_put_cf(wb, sx.cf[CF_META], "ring", 4, (const char *)g, 8);
		assert_int_equal(index_write(&sx, wb, true), 0);
		rocksdb_writebatch_destroy(wb);
		index_close(&sx);
		free(ix);
		free(old);
	}
	e2e_daemon_start_with(E->pass, false);
	for (int i = 0; i < 300 && E->daemon; i++) {
		int st;

		if (waitpid(E->daemon, &st, WNOHANG) == E->daemon)
			E->daemon = 0;
		else
			usleep(100000);
	}
	assert_int_equal(E->daemon, 0);
	r = e2e_run_argv(NULL, (char *const[]){ "/bin/cat", E->log, NULL });
	if (!strstr(r->out, "older than the last erasure"))
		fprintf(stderr, "daemon log: %s\n", r->out);
	assert_non_null(strstr(r->out, "older than the last erasure"));
	free(r);

	/* The ring after the erasure: served again. */
	tu_copy_file(now, ring);
	e2e_daemon_start_with(E->pass, true);
	free(ring);
	free(now);
}

/* Retention: a date passes, the daemon records (once) that erasure is due and `dataset list`
 * says so; nothing is erased by itself. */
static void test_retention(void **state)
{
	char when[64], *src = tu_fmt("%s/r1", E->src);
	struct e2e_run *r;
	json_t *j, *d;
	size_t i;
	bool due = false;
	time_t t, far = time(NULL) + 86400;
	struct tm tm;

	(void)state;
	assert_int_equal(mkdir(src, 0755), 0);
	tu_seed_file(1000, 5, "%s/a.bin", src);
	e2e_ok_free(ctl("-q", "dataset", "import", "kept-Ibex", src));
	/* Bad input: refused, nothing recorded. */
	r = ctl("dataset", "set", "kept-Ibex", "--retain-until", "next tuesday");
	assert_int_equal(r->status, 2);
	free(r);
	/* A date a day away: shown, not due (a date seconds away could pass before the list
	 * answers, under the sanitizers on a loaded machine). */
	gmtime_r(&far, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	e2e_ok_free(ctl("dataset", "set", "kept-Ibex", "--retain-until", when));
	r = e2e_ok(ctl("dataset", "list"));
	assert_non_null(strstr(r->out, "kept-Ibex: retain until "));
	assert_null(strstr(r->out, "ERASURE DUE"));
	free(r);
	assert_int_equal(e2e_audit_count("erasure_due", NULL, "kept-Ibex", NULL, 0), 0);
	/* Then one a few seconds away. */
	t = time(NULL) + 3;
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	e2e_ok_free(ctl("dataset", "set", "kept-Ibex", "--retain-until", when));
	/* Past it (the watch thread looks every 250 ms). */
	for (int k = 0; k < 100 && !due; k++) {
		usleep(100000);
		due = e2e_audit_count("erasure_due", NULL, "kept-Ibex", NULL, 0) == 1;
	}
	assert_true(due);
	r = e2e_ok(ctl("dataset", "list"));
	assert_non_null(strstr(r->out, "kept-Ibex: retain until "));
	assert_non_null(strstr(r->out, "ERASURE DUE"));
	free(r);
	r = e2e_ok(ctl("--json", "dataset", "list"));
	j = e2e_out_json(r);
	json_array_foreach(json_object_get(j, "datasets"), i, d)
		if (strcmp(json_string_value(json_object_get(d, "name")), "kept-Ibex") == 0)
			assert_true(json_is_true(json_object_get(d, "erasure_due")));
	json_decref(j);
	free(r);
	/* Recorded once, and still there: erasure stays a human act. */
	usleep(1500000);
	assert_int_equal(e2e_audit_count("erasure_due", NULL, "kept-Ibex", NULL, 0), 1);
	e2e_ok_free(ctl("dataset", "show", "kept-Ibex"));
	/* Cleared: no longer due. */
	e2e_ok_free(ctl("dataset", "set", "kept-Ibex", "--retain-until", "none"));
	r = e2e_ok(ctl("dataset", "list"));
	assert_null(strstr(r->out, "kept-Ibex: retain until"));
	free(r);
	free(src);
}

/* The daemon killed after the store destroyed a version's keys and before the `dataset_erase`
 * record: the next start records the erasure (marked completed at start, with the manifests
 * and key ids the store noted before destroying them) and serves the dataset's other version;
 * a start after that records nothing more. The fault is injected at that very step: the daemon
 * stopped with an approved erasure it could not carry out, the store's erasure is run as the
 * daemon runs it, and then nothing more (as after a kill -9 there). */
static void test_erase_completed_at_start(void **state)
{
	char *v1 = tu_fmt("%s/finch1", E->src), *v2 = tu_fmt("%s/finch2", E->src), idtext[24];
	char *rec = tu_fmt("%s/finch.rec", E->root), *proof = tu_fmt("%s/finch.proof", E->root), *p;
	struct e2e_run *r;
	json_t *j, *x;
	uint64_t blocker;
	size_t i, n = 0;
	uint8_t *line;

	(void)state;
	assert_int_equal(mkdir(v1, 0755), 0);
	assert_int_equal(mkdir(v2, 0755), 0);
	tu_seed_file(100000, 7, "%s/a.bin", v1);
	tu_seed_file(100000, 2, "%s/keep.bin", v2);
	e2e_ok_free(ctl("-q", "dataset", "import", DS3, v1));
	e2e_ok_free(ctl("-q", "dataset", "import", DS3, v2));
	grant_approved(DS3);
	r = e2e_ok(ctl("--json", "dataset", "erase", DS3 "@1", "--reason", "superseded"));
	j = e2e_out_json(r);
	snprintf(idtext, sizeof(idtext), "%lld",
		 (long long)json_integer_value(json_object_get(json_object_get(j, "erasure"), "id")));
	json_decref(j);
	free(r);
	/* A grant of version 1 alone, after the request: bob's approval is recorded, but the
	 * erasure is refused while the grant is in force. */
	blocker = grant_approved(DS3 "@1");
	r = ctl_as(&E->u.bob, "dataset", "erase-approve", idtext);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "--revoke-grants"));
	free(r);
	e2e_revoke(blocker);
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);

	/* What the daemon does next, as it does it, and then nothing: the record is never
	 * written. (In this process: a child forked from it cannot run RocksDB, whose background
	 * threads stay behind in the parent.) Every write of store_erase() is synchronous, so
	 * closing the store afterwards leaves what a kill -9 right after it leaves. */
	{
		crypto_secret *pass = NULL;
		struct store *st = NULL;
		struct store_erasure e = { 0 };
		int rc;

		assert_int_equal(crypto_passphrase_read_file(E->pass, &pass), 0);
		assert_int_equal(store_open(E->store, pass, NULL, &st), 0);
		crypto_secret_free(pass);
		rc = store_erase(st, DS3, 1, &e);
		if (rc < 0)
			fprintf(stderr, "store_erase: %s\n", err_detail());
		assert_int_equal(rc, 0);
		assert_int_equal(e.nversions, 1);
		store_erasure_free(&e);
		store_close(st);
	}
	assert_int_equal(e2e_audit_count("dataset_erase", NULL, DS3, NULL, 0), 0);

	e2e_daemon_start_with(E->pass, true);
	assert_int_equal(e2e_audit_count("dataset_erase", NULL, DS3, NULL, 0), 1);
	r = e2e_ok(ctl("--json", "dataset", "erasures"));
	j = e2e_out_json(r);
	n = 0;
	json_array_foreach(json_object_get(j, "erasures"), i, x)
		if (strcmp(json_string_value(json_object_get(x, "dataset")), DS3) == 0) {
			assert_string_equal(json_string_value(json_object_get(x, "state")),
					    "erased");
			n++;
		}
	assert_int_equal(n, 1);
	json_decref(j);
	free(r);
	/* The other version is served, byte-exact; the erased one is gone. */
	p = tu_fmt("%s/%s/2/keep.bin", E->mnt, DS3);
	assert_int_equal(tu_run_as(&E->u.alice, child_reads_v2, p, 30000), 0);
	free(p);
	r = e2e_ok(ctl("--json", "dataset", "show", DS3));
	j = e2e_out_json(r);
	assert_int_equal(json_array_size(json_object_get(j, "versions")), 1);
	json_decref(j);
	free(r);
	/* The record says how it came to be, names the version's manifest and the key, and is
	 * provably in the log. */
	e2e_ok_free(ctl("dataset", "erasure-proof", DS3 "@1", "--output", proof,
			"--record-output", rec));
	line = tu_read_file(rec, &n);
	assert_non_null(memmem(line, n, "\"completed_at_start\":1", 22));
	assert_non_null(memmem(line, n, "\"manifests\":\"1:", 15));
	assert_non_null(memmem(line, n, "\"key_ids\":\"", 11));
	free(line);
	/* Started again: nothing more is recorded, and it still serves. */
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	e2e_daemon_start_with(E->pass, true);
	assert_int_equal(e2e_audit_count("dataset_erase", NULL, DS3, NULL, 0), 1);
	p = tu_fmt("%s/%s/2/keep.bin", E->mnt, DS3);
	assert_int_equal(tu_run_as(&E->u.alice, child_reads_v2, p, 30000), 0);
	free(p);
	free(v1);
	free(v2);
	free(rec);
	free(proof);
}

#define DS5 "cohort-Lark"

/* Write zeros to path until its file system is full. */
static void fill_fs(const char *path)
{
	static char zero[64 * 1024];
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	while (write(fd, zero, sizeof(zero)) > 0)
		;
	while (write(fd, zero, 1) > 0)
		;
	close(fd);
}

/* The `dataset_erase` record could not be written when the erasure was carried out (the log's
 * file system full), and the daemon keeps running: it writes the record, "recorded_late", as
 * soon as the log takes it again (within a second or two), with no restart and no other
 * erasure. Before it: the approval that carried it out says so, and no record exists. The log
 * is put on a 4 MiB file system of its own, as test_export_unrecorded_emptied does; the
 * erasure's record is made larger than what the approval needs (a whole dataset of 20 versions:
 * a manifest and a key id each, and a long reason), and one page is left for the approval. */
static void test_erase_recorded_late(void **state)
{
	static const char *const files[] = { "audit.log", "checkpoints" };
	char *audit = tu_fmt("%s/audit", E->store), *old = tu_fmt("%s/audit.disk", E->store);
	char *filler = tu_fmt("%s/filler", audit), *spacer = tu_fmt("%s/spacer", audit);
	char *src = tu_fmt("%s/lark", E->src), *rec = tu_fmt("%s/lark.rec", E->root);
	char reason[POLICY_REASON_MAX + 1], idtext[24];
	struct e2e_run *r;
	uint8_t *line;
	size_t n = 0;
	json_t *j;
	int i;

	(void)state;
	assert_int_equal(mkdir(src, 0755), 0);
	for (i = 1; i <= 20; i++) {
		tu_seed_file(1000, (unsigned)i, "%s/a.bin", src);
		e2e_ok_free(ctl("-q", "dataset", "import", DS5, src));
	}
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	assert_int_equal(rename(audit, old), 0);
	assert_int_equal(mkdir(audit, 0700), 0);
	assert_int_equal(mount("tmpfs", audit, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0700"),
			 0);
	for (size_t k = 0; k < ARRAY_SIZE(files); k++) {
		char *from = tu_fmt("%s/%s", old, files[k]), *to = tu_fmt("%s/%s", audit, files[k]);

		tu_copy_file(from, to);
		free(from);
		free(to);
	}
	e2e_daemon_start_with(E->pass, true);
	for (i = 0; i < (int)sizeof(reason) - 1; i++)
		reason[i] = "consent withdrawn "[i % 18];
	reason[sizeof(reason) - 1] = '\0';
	r = e2e_ok(ctl("--json", "dataset", "erase", DS5, "--reason", reason));
	j = e2e_out_json(r);
	snprintf(idtext, sizeof(idtext), "%lld",
		 (long long)json_integer_value(json_object_get(json_object_get(j, "erasure"), "id")));
	json_decref(j);
	free(r);

	/* Full, but for one page kept aside: first the file system, then the room the log
	 * allocated ahead of its end, used up by small records until one is refused. */
	tu_write_seeded(spacer, 4096, 5);
	fill_fs(filler);
	for (i = 0;; i++) {
		assert_true(i < 512);
		r = ctl("-q", "grant", "request", "--user", TU_USER_ALICE, "--dataset", DS3,
			"--purpose", "x", "--expires", "+1d");
		if (r->status != 0) {
			free(r);
			break;
		}
		free(r);
	}
	assert_int_equal(unlink(spacer), 0);
	/* The approval's record fits in that page; the erasure's does not. */
	r = ctl_as(&E->u.bob, "dataset", "erase-approve", idtext);
	assert_int_equal(r->status, 1);
	if (!strstr(r->err, "records it as soon as the log accepts writes again"))
		fail_msg("stderr: %s", r->err);
	free(r);
	assert_int_equal(e2e_audit_count("dataset_erase", NULL, DS5, NULL, 0), 0);

	/* Room again: written by the running daemon, without a start or another erasure. */
	assert_int_equal(unlink(filler), 0);
	for (i = 0; e2e_audit_count("dataset_erase", NULL, DS5, NULL, 0) == 0; i++) {
		assert_true(i < 100);
		poll(NULL, 0, 100);
	}
	assert_int_equal(e2e_audit_count("dataset_erase", NULL, DS5, NULL, 0), 1);
	/* The done policy record follows the audit record: the proof is there once it is. */
	for (i = 0;; i++) {
		r = ctl("dataset", "erasure-proof", DS5, "--record-output", rec);
		if (r->status == 0)
			break;
		assert_true(i < 100);
		free(r);
		poll(NULL, 0, 100);
	}
	free(r);
	r = e2e_ok(ctl("--json", "dataset", "erasures"));
	assert_non_null(strstr(r->out, "\"erased\""));
	free(r);
	line = tu_read_file(rec, &n);
	assert_non_null(memmem(line, n, "\"recorded_late\":1", 17));
	assert_null(memmem(line, n, "completed_at_start", 18));
	free(line);
	r = ctl("dataset", "show", DS5);
	assert_int_not_equal(r->status, 0);
	free(r);

	/* The log back where it was, with what was written on the small file system; a start
	 * records nothing more. */
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	for (size_t k = 0; k < ARRAY_SIZE(files); k++) {
		char *from = tu_fmt("%s/%s", audit, files[k]), *to = tu_fmt("%s/%s", old, files[k]);

		tu_copy_file(from, to);
		free(from);
		free(to);
	}
	{
		char *tree = tu_fmt("%s/tree", old);

		tu_rm_rf(tree);
		free(tree);
	}
	assert_int_equal(umount2(audit, MNT_DETACH), 0);
	assert_int_equal(rmdir(audit), 0);
	assert_int_equal(rename(old, audit), 0);
	e2e_daemon_start_with(E->pass, true);
	assert_int_equal(e2e_audit_count("dataset_erase", NULL, DS5, NULL, 0), 1);
	free(audit);
	free(old);
	free(filler);
	free(spacer);
	free(src);
	free(rec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_erase_version),
		cmocka_unit_test(test_ring_rollback_refused),
		cmocka_unit_test(test_retention),
		cmocka_unit_test(test_erase_completed_at_start),
		cmocka_unit_test(test_erase_recorded_late),
	};

	if (crypto_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
