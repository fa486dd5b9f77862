/* test_e2e_audit: the signed audit log as an auditor meets it, written by a real enclaved from
 * real opens through the mount, then checked offline with `enclavectl audit verify`:
 *   - a clean log verifies, and so does its growth since a checkpoint the auditor saved;
 *   - each kind of tampering (a byte flipped, a record deleted, two swapped, one inserted, the
 *     tail cut and re-signed with another key, an older checkpoint passed off as the newest) is
 *     found and named;
 *   - kill -9 during a burst of opens loses no record whose open had returned, and the log still
 *     verifies;
 *   - a full log directory refuses opens, and the daemon serves again once there is room.
 * Harness: tests/e2e.h (one daemon at a time; cleanup layered as described there).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sodium.h>

#include "audit/audit.h"
#include "audit/merkle.h"
#include "audit/note.h"
#include "common/common.h"
#include "common/err.h"
#include "crypto/crypto.h"
#include "store/store.h"
#include "tests/e2e.h"
#include "tests/testusers.h"
#include "tests/testutil.h"

#define NFILES 8

static char *key;        /* the log's verifier key, from `audit pubkey` */
static char *trusted;    /* a checkpoint saved part way, as an auditor would */

/* ---- Helpers --------------------------------------------------------------------------------- */

/* The lines of a file (each with its '\n'), as a NULL-terminated array of strings. */
static char **lines_of(const char *path, size_t *ret_n)
{
	size_t len, n = 0, cap = 16;
	char *data = (char *)tu_read_file(path, &len), *p = data;
	char **v = calloc(cap, sizeof(*v));

	while (p < data + len) {
		char *nl = memchr(p, '\n', (size_t)(data + len - p));
		size_t l = nl ? (size_t)(nl - p) + 1 : (size_t)(data + len - p);

		if (n + 2 > cap) {
			cap *= 2;
			v = realloc(v, cap * sizeof(*v));
		}
		v[n] = strndup(p, l);
		n++;
		p += l;
	}
	v[n] = NULL;
	free(data);
	*ret_n = n;
	return v;
}

static void lines_write(const char *path, char **v, size_t n)
{
	FILE *f = fopen(path, "we");

	assert_non_null(f);
	for (size_t i = 0; i < n; i++)
		if (v[i])
			fputs(v[i], f);
	assert_int_equal(fclose(f), 0);
}

static void lines_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* A copy of the daemon's log (audit.log and checkpoints; the tree is the daemon's own) in a new
 * directory under the scratch root. */
/* The notes of a checkpoints file, in order, each with the tree size it signs. */
struct notes {
	struct {
		char *text;
		size_t len;
		uint64_t size;
	} *v;
	size_t n;
};

static int collect_note(void *ctx, const char *note, size_t len, uint64_t index)
{
	struct notes *ns = ctx;
	const char *nl = memchr(note, '\n', len);

	(void)index;
	assert_non_null(nl);
	ns->v = realloc(ns->v, (ns->n + 1) * sizeof(*ns->v));
	assert_non_null(ns->v);
	ns->v[ns->n].text = malloc(len);
	assert_non_null(ns->v[ns->n].text);
	memcpy(ns->v[ns->n].text, note, len);
	ns->v[ns->n].len = len;
	/* The second line of a checkpoint note is its tree size. */
	ns->v[ns->n].size = strtoull(nl + 1, NULL, 10);
	ns->n++;
	return 0;
}

static void notes_free(struct notes *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i].text);
	free(ns->v);
}

static char *copy_log(const char *name)
{
	char *dir = tu_fmt("%s/%s", E->root, name);
	const char *files[] = { "audit.log", "checkpoints" };

	tu_rm_rf(dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char *from = tu_fmt("%s/audit/%s", E->store, files[i]);
		char *to = tu_fmt("%s/%s", dir, files[i]);

		tu_copy_file(from, to);
		free(from);
		free(to);
	}
	return dir;
}

/* `audit verify --json` of dir; its exit status in *ret_status, its output parsed. */
static json_t *verify(const char *dir, const char *trusted_file, int *ret_status)
{
	struct e2e_run *r;
	json_t *j;

	if (trusted_file)
		r = ctl("--json", "audit", "verify", "--log", (char *)dir, "--key", key,
			"--trusted", (char *)trusted_file);
	else
		r = ctl("--json", "audit", "verify", "--log", (char *)dir, "--key", key);
	*ret_status = r->status;
	if (r->status > 1)
		fprintf(stderr, "verify: exit %d: %s%s\n", r->status, r->out, r->err);
	j = e2e_out_json(r);
	free(r);
	return j;
}

/* Does the verdict hold a finding of kind naming seq (VERIFY_ANY: any seq)? */
#define ANY_SEQ (-1)
static bool has_finding(const json_t *v, const char *kind, long long seq)
{
	const json_t *f;
	size_t i;

	json_array_foreach(json_object_get(v, "findings"), i, f) {
		const json_t *s = json_object_get(f, "seq"), *sl = json_object_get(f, "seq_last");

		if (strcmp(json_string_value(json_object_get(f, "kind")), kind) != 0)
			continue;
		if (seq == ANY_SEQ)
			return true;
		if (s && json_integer_value(s) <= seq &&
		    (sl ? json_integer_value(sl) : json_integer_value(s)) >= seq)
			return true;
	}
	return false;
}

static void expect_finding(const char *what, const char *dir, const char *trusted_file,
			   const char *kind, long long seq)
{
	int status;
	json_t *v = verify(dir, trusted_file, &status);

	if (status != 1 || !has_finding(v, kind, seq)) {
		char *s = json_dumps(v, JSON_INDENT(1));

		fprintf(stderr, "%s: wanted a \"%s\" finding naming %lld (exit %d):\n%s\n", what,
			kind, seq, status, s);
		free(s);
	}
	assert_int_equal(status, 1);
	assert_true(has_finding(v, kind, seq));
	json_decref(v);
}

/* ---- What the children do -------------------------------------------------------------------- */

struct reads {
	int rounds;          /* opens of each file */
	int result_fd;       /* where the count of opens that returned goes; -1: none */
};

/* Open (and read) every file `rounds` times; stop at the first failure. Reports how many opens
 * returned successfully: each of them must be on the record. */
static int child_reads(void *arg)
{
	const struct reads *job = arg;
	char buf[4096];
	long ok = 0;

	for (int r = 0; r < job->rounds; r++) {
		for (int i = 0; i < NFILES; i++) {
			char path[4096];
			int fd;

			snprintf(path, sizeof(path), "%s/ds/1/f%d", E->mnt, i);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				goto out;
			ok++;
			while (read(fd, buf, sizeof(buf)) > 0)
				;
			close(fd);
		}
	}
out:
	if (job->result_fd >= 0) {
		if (write(job->result_fd, &ok, sizeof(ok)) != sizeof(ok))
			return 2;
	}
	return ok > 0 ? 0 : 1;
}

/* One open of f0: 0 if it opened, else its errno. */
static int child_open_once(void *arg)
{
	char path[4096];
	int fd;

	(void)arg;
	snprintf(path, sizeof(path), "%s/ds/1/f0", E->mnt);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == EACCES || errno == EIO ? 3 : 4;
	close(fd);
	return 0;
}

/* Version *arg of ds does not exist (alice holds a grant on every version). */
static int child_no_version(void *arg)
{
	char path[4096];
	struct stat st;

	snprintf(path, sizeof(path), "%s/ds/%d", E->mnt, *(const int *)arg);
	if (stat(path, &st) == 0) {
		fprintf(stderr, "child: %s exists\n", path);
		return 5;
	}
	return errno == ENOENT ? 0 : 6;
}

/* ---- Fixture --------------------------------------------------------------------------------- */

static void start_daemon(void)
{
	static const char *const args[] = { "--checkpoint-interval", "1", NULL };

	E->daemon_args = args;
	e2e_daemon_start_with(E->pass, true);
}

static int group_setup(void **state)
{
	static const char *const init[] = { "--steward", "user:root", "--auditor",
					    "user:" TU_USER_CAROL, "--approvals", "0",
					    "--audit-name", "e2e.test/enclave", NULL };
	struct e2e_run *r;

	(void)state;
	if (e2e_setup("e2e-audit") < 0)
		return -1;
	for (int i = 0; i < NFILES; i++) {
		char *p = tu_fmt("%s/f%d", E->src, i);

		tu_write_seeded(p, 1000 + 333 * (size_t)i, 7 + (unsigned)i);
		free(p);
	}
	if (e2e_init(init) < 0)
		return -1;
	start_daemon();
	r = ctl("-q", "dataset", "import", "ds", E->src);
	if (r->status != 0) {
		fprintf(stderr, "import failed: %s%s\n", r->out, r->err);
		free(r);
		return -1;
	}
	free(r);
	r = ctl("audit", "pubkey");
	if (r->status != 0) {
		free(r);
		return -1;
	}
	r->out[strcspn(r->out, "\n")] = '\0';
	key = strdup(r->out);
	free(r);
	e2e_grant("--user", TU_USER_ALICE, "ds", "+1h");
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	e2e_teardown();
	free(key);
	free(trusted);
	return 0;
}

/* ---- Tests ----------------------------------------------------------------------------------- */

/* The verifier key is the one init printed, as the signed-note form says; anyone may ask. */
static void test_pubkey(void **state)
{
	struct note_verifier v;
	struct e2e_run *r;

	(void)state;
	assert_int_equal(note_verifier_parse(key, strlen(key), &v), 0);
	assert_string_equal(v.name, "e2e.test/enclave");
	r = e2e_ok(ctl_as(&E->u.bob, "audit", "pubkey"));
	assert_int_equal(strncmp(r->out, key, strlen(key)), 0);
	free(r);
	/* A user with no role may not have checkpoints signed or records proved. */
	r = ctl_as(&E->u.bob, "audit", "checkpoint");
	assert_int_equal(r->status, 1);
	free(r);
}

/* Opens are recorded and provable: a proof from the daemon checks offline against the record. */
static void test_prove_and_check(void **state)
{
	struct reads job = { .rounds = 2, .result_fd = -1 };
	char *proof = tu_fmt("%s/proof", E->root), *rec = tu_fmt("%s/record", E->root);
	struct e2e_run *r;

	(void)state;
	assert_int_equal(tu_run_as(&E->u.alice, child_reads, &job, 30000), 0);
	unlink(proof);
	unlink(rec);
	e2e_ok_free(ctl("audit", "prove", "3", "--output", proof, "--record-output", rec));
	e2e_ok_free(ctl_as(&E->u.carol, "audit", "check-proof", "--key", key, "--record", rec,
			   proof));
	/* The same proof does not hold for another record. */
	{
		size_t n;
		uint8_t *b = tu_read_file(rec, &n);

		b[n / 2] = b[n / 2] == 'a' ? 'b' : 'a';
		tu_write_file(rec, b, n);
		free(b);
	}
	r = ctl("audit", "check-proof", "--key", key, "--record", rec, proof);
	assert_int_equal(r->status, 1);
	free(r);
	free(proof);
	free(rec);
}

/* Who looked at what is on the record: audit show, report and prove each write an
 * "audit_query" record naming the caller, the query and its arguments (#14, point 11). */
static void test_auditor_actions_recorded(void **state)
{
	int before = e2e_audit_count("audit_query", NULL, NULL, NULL, 0);
	char *ckey = e2e_auditor_key_for(&E->u.carol);
	struct e2e_run *r;

	(void)state;
	e2e_ok_free(ctl("audit", "show", "--event", "open", "--limit", "1", "--auditor-key",
			E->akey));
	assert_int_equal(e2e_audit_count("audit_query", NULL, NULL, NULL, 0), before + 1);
	e2e_ok_free(ctl("audit", "prove", "2"));
	assert_int_equal(e2e_audit_count("audit_query", NULL, NULL, NULL, 0), before + 2);
	e2e_ok_free(ctl("audit", "report", "--auditor-key", E->akey));
	assert_true(e2e_audit_count("audit_query", NULL, NULL, NULL, 0) >= before + 3);
	/* An auditor (carol) too, and what the records say, read with the auditor's key. */
	e2e_ok_free(ctl_as(&E->u.carol, "audit", "show", "--event", "import", "--auditor-key",
			   ckey));
	free(ckey);
	r = e2e_ok(ctl("--json", "audit", "show", "--event", "audit_query", "--auditor-key",
		       E->akey));
	assert_non_null(strstr(r->out, "\"query\":\"prove\""));
	assert_non_null(strstr(r->out, "\"query\":\"report\""));
	assert_non_null(strstr(r->out, "\"query\":\"show\""));
	assert_non_null(strstr(r->out, "\"seq\":2"));
	assert_non_null(strstr(r->out, "\"user\":\"" TU_USER_CAROL "\""));
	free(r);
}

/* A clean log verifies, alone and against a checkpoint saved earlier; every kind of tampering is
 * found and named. */
static void test_verify_and_tampering(void **state)
{
	struct reads job = { .rounds = 3, .result_fd = -1 };
	char *tfile = tu_fmt("%s/trusted", E->root), *dir, *log;
	size_t n, tn;
	char **v;
	int status;
	json_t *j;

	(void)state;
	{
		/* The auditor asks for a checkpoint and keeps it. */
		struct e2e_run *r = e2e_ok(ctl_as(&E->u.carol, "audit", "checkpoint"));

		tu_write_file(tfile, r->out, strlen(r->out));
		free(r);
	}
	trusted = (char *)tu_read_file(tfile, &tn);
	assert_int_equal(tu_run_as(&E->u.alice, child_reads, &job, 30000), 0);
	/* Stopped, the daemon signs a last checkpoint over everything. */
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);

	dir = copy_log("clean");
	j = verify(dir, tfile, &status);
	assert_int_equal(status, 0);
	assert_true(json_is_true(json_object_get(j, "ok")));
	assert_true(json_integer_value(json_object_get(j, "records")) > 40);
	json_decref(j);
	free(dir);

	/* A byte flipped inside record 5 (a digit of its pid: still a valid record). */
	dir = copy_log("flip");
	log = tu_fmt("%s/audit.log", dir);
	v = lines_of(log, &n);
	{
		char *p = strstr(v[5], "\"time\":\"");

		assert_non_null(p);
		p += strlen("\"time\":\"") + 20;   /* a digit of the fraction of a second */
		*p = *p == '0' ? '1' : '0';
	}
	lines_write(log, v, n);
	expect_finding("flip", dir, NULL, "modified", 5);
	lines_free(v, n);
	free(log);
	free(dir);

	/* Record 7 deleted. */
	dir = copy_log("delete");
	log = tu_fmt("%s/audit.log", dir);
	v = lines_of(log, &n);
	free(v[7]);
	v[7] = NULL;
	lines_write(log, v, n);
	expect_finding("delete", dir, NULL, "removed", 7);
	lines_free(v, n);
	free(log);
	free(dir);

	/* Records 3 and 4 swapped. */
	dir = copy_log("swap");
	log = tu_fmt("%s/audit.log", dir);
	v = lines_of(log, &n);
	{
		char *t = v[3];

		v[3] = v[4];
		v[4] = t;
	}
	lines_write(log, v, n);
	expect_finding("swap", dir, NULL, "reordered", 3);
	lines_free(v, n);
	free(log);
	free(dir);

	/* A copy of record 6 inserted after it. */
	dir = copy_log("insert");
	log = tu_fmt("%s/audit.log", dir);
	v = lines_of(log, &n);
	{
		FILE *f = fopen(log, "we");

		for (size_t i = 0; i < n; i++) {
			fputs(v[i], f);
			if (i == 6)
				fputs(v[i], f);
		}
		fclose(f);
	}
	expect_finding("insert", dir, NULL, "inserted", ANY_SEQ);
	lines_free(v, n);
	free(log);
	free(dir);

	/* The tail cut off and the log re-signed by another key: nothing is signed by ours, and the
	 * auditor's saved checkpoint shows records gone. */
	dir = copy_log("truncate");
	log = tu_fmt("%s/audit.log", dir);
	v = lines_of(log, &n);
	{
		size_t keep = n - 5;
		struct merkle_mem *m = NULL;
		struct checkpoint cp = { .time_ns = 1 };
		uint8_t pk[32], sk[64];
		char *note = NULL, *cpf = tu_fmt("%s/checkpoints", dir);
		size_t len;
		FILE *f;

		lines_write(log, v, keep);
		assert_int_equal(merkle_mem_new(keep, &m), 0);
		for (size_t i = 0; i < keep; i++) {
			uint8_t leaf[MERKLE_HASH_LEN];

			merkle_leaf_hash(v[i], strlen(v[i]) - 1, leaf);
			assert_int_equal(merkle_mem_append(m, leaf), 0);
		}
		snprintf(cp.origin, sizeof(cp.origin), "e2e.test/enclave");
		cp.size = keep;
		assert_int_equal(merkle_mem_root(m, keep, cp.root), 0);
		crypto_sign_keypair(pk, sk);
		assert_int_equal(checkpoint_sign(&cp, "e2e.test/enclave", sk, &note, &len), 0);
		f = fopen(cpf, "we");
		fwrite(note, 1, len, f);
		fputc('\n', f);
		fclose(f);
		free(note);
		free(cpf);
		merkle_mem_free(m);
	}
	expect_finding("re-signed", dir, NULL, "unknown_key", ANY_SEQ);
	expect_finding("truncated", dir, tfile, "rollback", ANY_SEQ);
	lines_free(v, n);
	free(log);
	free(dir);

	/* An older state of the log and its checkpoints passed off as the current one, to an auditor
	 * who kept a newer checkpoint. */
	dir = copy_log("older");
	{
		char *cpf = tu_fmt("%s/checkpoints", dir), *newest = tu_fmt("%s/newest", E->root);
		struct notes cps = { 0 };
		size_t keep;
		FILE *f;

		assert_int_equal(checkpoints_foreach(cpf, collect_note, &cps, NULL), 0);
		assert_true(cps.n >= 2);
		/* The periodic checkpoint and the one signed at the stop may cover the same records:
		 * the state passed off is the last one that covers fewer than the newest. */
		keep = cps.n - 1;
		while (keep > 0 && cps.v[keep - 1].size >= cps.v[cps.n - 1].size)
			keep--;
		assert_true(keep > 0);
		tu_write_file(newest, cps.v[cps.n - 1].text, cps.v[cps.n - 1].len);
		f = fopen(cpf, "we");
		assert_non_null(f);
		for (size_t i = 0; i < keep; i++) {
			fwrite(cps.v[i].text, 1, cps.v[i].len, f);
			fputc('\n', f);
		}
		assert_int_equal(fclose(f), 0);
		expect_finding("older", dir, newest, "rollback", ANY_SEQ);
		notes_free(&cps);
		free(cpf);
		free(newest);
	}
	free(dir);
	free(tfile);
	start_daemon();
}

/* kill -9 in the middle of a burst of opens by four readers: every open that returned is on the
 * record, and after a restart the log (with the torn end cut) verifies. */
static void test_kill9_during_burst(void **state)
{
	struct reads job = { .rounds = 400 };
	pid_t pids[4];
	int fds[4][2];
	long acked = 0;
	int status;
	json_t *j;
	char *dir;

	(void)state;
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pipe2(fds[i], O_CLOEXEC), 0);
		job.result_fd = fds[i][1];
		assert_int_equal(tu_spawn_as(&E->u.alice, child_reads, &job, &pids[i]), 0);
		close(fds[i][1]);
	}
	poll(NULL, 0, 400);
	assert_int_equal(e2e_daemon_stop_sig(SIGKILL), 128 + SIGKILL);
	for (int i = 0; i < 4; i++) {
		long ok = 0;

		tu_wait(pids[i], 60000);
		assert_int_equal(read(fds[i][0], &ok, sizeof(ok)), sizeof(ok));
		close(fds[i][0]);
		acked += ok;
	}
	e2e_cleanup_mount();
	fprintf(stderr, "  %ld opens returned before the kill\n", acked);
	assert_true(acked > 0);
	/* Every open that returned was recorded (allowed opens by alice; earlier tests made some). */
	assert_true(e2e_audit_count("open", TU_USER_ALICE, "ds", "allow", 0) >= acked);

	start_daemon();
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	dir = copy_log("after-kill");
	j = verify(dir, NULL, &status);
	if (status != 0) {
		char *s = json_dumps(j, JSON_INDENT(1));

		fprintf(stderr, "%s\n", s);
		free(s);
	}
	assert_int_equal(status, 0);
	json_decref(j);
	free(dir);
	start_daemon();
}

/* The log's directory full: opens are refused (and say so), the daemon keeps running, and once
 * there is room again opens work and the log verifies. */
static void test_full_log_refuses_then_recovers(void **state)
{
	char *audit = tu_fmt("%s/audit", E->store), *old = tu_fmt("%s/audit.disk", E->store);
	char *filler = tu_fmt("%s/filler", audit), *dir;
	const char *files[] = { "audit.log", "checkpoints" };
	static char zero[64 * 1024];
	int fd, status = 0, imported = 0, imports = e2e_audit_count("import", NULL, "ds", NULL, 0);
	json_t *j;

	(void)state;
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	/* The log moves to a 4 MiB file system of its own (the tree is rebuilt from it). */
	assert_int_equal(rename(audit, old), 0);
	assert_int_equal(mkdir(audit, 0700), 0);
	assert_int_equal(mount("tmpfs", audit, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0700"),
			 0);
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char *from = tu_fmt("%s/%s", old, files[i]), *to = tu_fmt("%s/%s", audit, files[i]);

		tu_copy_file(from, to);
		free(from);
		free(to);
	}
	start_daemon();
	assert_int_equal(tu_run_as(&E->u.alice, child_open_once, NULL, 30000), 0);

	/* Fill it. */
	fd = open(filler, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	while (write(fd, zero, sizeof(zero)) > 0)
		;
	while (write(fd, zero, 1) > 0)
		;
	close(fd);
	/* The room the log had allocated ahead of its end (up to 64 KiB, docs/AUDIT.md section 6)
	 * still takes records, a few dozen opens; then the opens are refused. */
	for (int i = 0; i < 512 && status != 3; i++)
		status = tu_run_as(&E->u.alice, child_open_once, NULL, 30000);
	assert_int_equal(status, 3);
	assert_int_equal(tu_run_as(&E->u.alice, child_open_once, NULL, 30000), 3);
	assert_true(e2e_daemon_answers());
	/* An import that cannot be recorded is refused, and nothing is committed (#14, point 10).
	 * (The log's last page may still take an import record, shorter than an open's: such an
	 * import is recorded and committed, which is as it should be.) */
	for (int i = 0; i < 16; i++) {
		struct e2e_run *r = ctl("-q", "dataset", "import", "ds", E->src);

		if (r->status == 0) {
			free(r);
			imported++;
			continue;
		}
		assert_int_equal(r->status, 1);
		assert_non_null(strstr(r->err, "nothing was committed"));
		free(r);
		break;
	}

	/* Room again: served again; the import that was refused never became a version. */
	assert_int_equal(unlink(filler), 0);
	assert_int_equal(tu_run_as(&E->u.alice, child_open_once, NULL, 30000), 0);
	assert_int_equal(tu_run_as(&E->u.alice, child_no_version, &(int){ 2 + imported }, 30000),
			 0);
	assert_int_equal(e2e_audit_count("import", NULL, "ds", NULL, 0), imports + imported);
	/* Imported again, it takes that version number, recorded. */
	e2e_ok_free(ctl("-q", "dataset", "import", "ds", E->src));
	assert_int_equal(e2e_audit_count("import", NULL, "ds", NULL, 0), imports + imported + 1);
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	dir = copy_log("after-full");
	j = verify(dir, NULL, &status);
	assert_int_equal(status, 0);
	json_decref(j);
	free(dir);

	/* The log goes back where it was, with what was written on the small file system (the
	 * tree is rebuilt from it): the daemon refuses a store with a history and no log (#14,
	 * point 4), so the next test must find the whole log in audit/. */
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char *from = tu_fmt("%s/%s", audit, files[i]), *to = tu_fmt("%s/%s", old, files[i]);

		tu_copy_file(from, to);
		free(from);
		free(to);
	}
	dir = tu_fmt("%s/tree", old);
	tu_rm_rf(dir);
	free(dir);
	assert_int_equal(umount2(audit, MNT_DETACH), 0);
	assert_int_equal(rmdir(audit), 0);
	assert_int_equal(rename(old, audit), 0);
	free(audit);
	free(old);
	free(filler);
}

/* ---- Sealed names ------------------------------------------------------------------------------ */

#define SECRET_DATASET "oncology-StMarys-2026"
#define SECRET_FILE "JaneDoe_MRN4471923_ct.dcm"

/* Open the distinctive file once: 0 if it opened, 3 refused. */
static int child_open_secret(void *arg)
{
	char path[4096];
	int fd;

	(void)arg;
	snprintf(path, sizeof(path), "%s/" SECRET_DATASET "/1/hiv-positive/" SECRET_FILE, E->mnt);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 3;
	close(fd);
	return 0;
}

/* Is needle, or its UTF-16LE form, or its base64 at any alignment, anywhere in hay? */
static const char *found_form(const uint8_t *hay, size_t n, const char *needle)
{
	size_t len = strlen(needle);
	uint8_t u16[256];

	if (memmem(hay, n, needle, len))
		return "as it is";
	for (size_t i = 0; i < len; i++) {
		u16[2 * i] = (uint8_t)needle[i];
		u16[2 * i + 1] = 0;
	}
	if (memmem(hay, n, u16, 2 * len))
		return "UTF-16";
	for (size_t k = 0; k < 3; k++) {
		uint8_t buf[128] = { 0 };
		char b64[256];
		size_t bn;

		memcpy(buf + k, needle, len);
		sodium_bin2base64(b64, sizeof(b64), buf, k + len, sodium_base64_VARIANT_ORIGINAL);
		/* The characters fixed by the needle's bytes alone: past the first group, before
		 * the last. */
		bn = strlen(b64);
		if (bn > 12 && memmem(hay, n, b64 + 4, bn - 8))
			return "base64";
	}
	return NULL;
}

/* Every file under dir, searched for every needle. */
static void expect_absent(const char *dir, const char *const *needles)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	assert_non_null(d);
	while ((de = readdir(d))) {
		char *p;
		struct stat sb;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		p = tu_fmt("%s/%s", dir, de->d_name);
		assert_int_equal(lstat(p, &sb), 0);
		if (S_ISDIR(sb.st_mode)) {
			expect_absent(p, needles);
		} else if (S_ISREG(sb.st_mode)) {
			size_t n;
			uint8_t *b = tu_read_file(p, &n);

			for (size_t i = 0; needles[i]; i++) {
				const char *how = found_form(b, n, needles[i]);

				if (how)
					fprintf(stderr, "%s holds \"%s\" (%s)\n", p, needles[i], how);
				assert_null(how);
			}
			free(b);
		}
		free(p);
	}
	closedir(d);
}

/* A dataset, directory and file named for a patient, a grant whose purpose names them, an
 * allowed and a refused open and a revocation with a reason: none of those names, nor the users',
 * is anywhere in the audit directory (as they are, UTF-16 or base64); the log verifies with the
 * public key alone, and the auditor's key reads every name back. */
static void test_sealed_log_reveals_no_names(void **state)
{
	static const char *const needles[] = { SECRET_DATASET, "JaneDoe", "MRN4471923",
					       "hiv-positive", "relapse prediction",
					       "withdrawn by", TU_USER_ALICE, TU_USER_BOB, NULL };
	char *src = tu_fmt("%s/secret-src", E->root), *sub = tu_fmt("%s/hiv-positive", src);
	char *file = tu_fmt("%s/" SECRET_FILE, sub), *audit = tu_fmt("%s/audit", E->store);
	char *dir, ids[24], *akey;
	struct e2e_run *r;
	json_t *j;
	uint64_t id;
	int status;

	(void)state;
	if (!e2e_daemon_answers())
		start_daemon();
	assert_int_equal(mkdir(src, 0755), 0);
	assert_int_equal(mkdir(sub, 0755), 0);
	tu_write_seeded(file, 5000, 3);
	e2e_ok_free(ctl("-q", "dataset", "import", SECRET_DATASET, src));
	r = e2e_ok(ctl("--json", "grant", "add", "--user", TU_USER_ALICE, "--dataset",
		       SECRET_DATASET, "--purpose", "relapse prediction for patient JaneDoe "
		       "MRN4471923", "--expires", "+1h"));
	j = e2e_out_json(r);
	id = (uint64_t)json_integer_value(json_object_get(json_object_get(j, "grant"), "id"));
	json_decref(j);
	free(r);
	assert_int_equal(tu_run_as(&E->u.alice, child_open_secret, NULL, 30000), 0);
	assert_int_equal(tu_run_as(&E->u.bob, child_open_secret, NULL, 30000), 3);
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
	e2e_ok_free(ctl("grant", "revoke", ids, "--reason", "withdrawn by JaneDoe"));
	e2e_ok_free(ctl("audit", "checkpoint"));

	expect_absent(audit, needles);

	dir = copy_log("sealed");
	j = verify(dir, NULL, &status);
	assert_int_equal(status, 0);
	json_decref(j);
	free(dir);

	akey = e2e_auditor_key_for(&E->u.carol);
	r = e2e_ok(ctl_as(&E->u.carol, "audit", "show", "--dataset", SECRET_DATASET,
			  "--auditor-key", akey));
	assert_non_null(strstr(r->out, "/hiv-positive/" SECRET_FILE));
	assert_non_null(strstr(r->out, TU_USER_ALICE));
	assert_non_null(strstr(r->out, "withdrawn by JaneDoe"));
	free(r);
	r = e2e_ok(ctl("--json", "audit", "show", "--event", "grant_request", "--auditor-key",
		       E->akey));
	assert_non_null(strstr(r->out, "relapse prediction for patient JaneDoe MRN4471923"));
	free(r);
	free(akey);
	free(src);
	free(sub);
	free(file);
	free(audit);
}

/* A second auditor: keygen makes the pair, a steward adds the public half (recorded); the log's
 * records from then on open with the new key, the earlier ones do not (their epochs were sealed
 * to the auditors of their time) and still do with the first key. */
static void test_auditor_add(void **state)
{
	char *sec = tu_fmt("%s/second.key", E->root), *pub = tu_fmt("%s/second.pub", E->root);
	char *akey = e2e_auditor_key_for(&E->u.carol), *k2;
	struct e2e_run *r;

	(void)state;
	if (!e2e_daemon_answers())
		start_daemon();
	unlink(sec);
	r = e2e_ok(ctl("audit", "keygen", "--secret-out", sec));
	assert_non_null(strstr(r->out, "enclave-auditor-public:"));
	tu_write_file(pub, r->out, strlen(r->out));
	free(r);
	/* An auditor may not add one: stewards only. */
	r = ctl_as(&E->u.carol, "audit", "auditor-add", "--public-key", pub);
	assert_int_equal(r->status, 1);
	free(r);
	/* --since below is given in whole seconds: let no record before the addition share its
	 * second, or that record (under the old log key) falls inside the range. */
	sleep(2);
	r = e2e_ok(ctl("audit", "auditor-add", "--public-key", pub));
	assert_non_null(strstr(r->out, "added"));
	free(r);
	r = ctl("audit", "auditor-add", "--public-key", pub);
	assert_int_equal(r->status, 1);	/* twice: refused */
	free(r);
	e2e_ok_free(ctl("audit", "checkpoint"));
	assert_int_equal(e2e_audit_count("auditor_add", NULL, NULL, NULL, 0), 1);

	/* The new key opens what came after the addition, and says so for what came before. */
	assert_int_equal(chown(sec, E->u.carol.uid, E->u.carol.gid), 0);
	k2 = sec;
	r = e2e_ok(ctl_as(&E->u.carol, "--json", "audit", "show", "--event", "auditor_add",
			  "--auditor-key", akey));
	{
		json_t *j = json_loads(r->out, 0, NULL);
		char since[40];

		assert_non_null(j);
		snprintf(since, sizeof(since), "%.19sZ",
			 json_string_value(json_object_get(j, "time")));
		json_decref(j);
		free(r);
		e2e_grant("--user", TU_USER_BOB, "ds", "+1h");
		/* From the addition on, the second key reads the names. */
		r = e2e_ok(ctl_as(&E->u.carol, "audit", "show", "--event", "grant_request",
				  "--since", since, "--auditor-key", k2));
		assert_non_null(strstr(r->out, TU_USER_BOB));
		free(r);
	}
	/* Before it, the records are not sealed to it: a clear refusal naming the keys. */
	r = ctl_as(&E->u.carol, "audit", "show", "--event", "import", "--auditor-key", k2);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "not sealed to auditor key"));
	free(r);
	free(sec);
	free(pub);
	free(akey);
}

/* What a daemon killed during an import leaves: the store's pending version, written at
 * store_import_begin(). The child opens the stopped daemon's store and dies there. */
static void child_begin_import_and_die(void)
{
	crypto_secret *pass;
	struct store *st = NULL;
	struct store_import *imp = NULL;

	if (crypto_init() < 0)
		_exit(9);
	pass = tu_pass("e2e test passphrase");
	if (store_open(E->store, pass, NULL, &st) < 0 || store_import_begin(st, "ds", NULL, &imp) < 0) {
		fprintf(stderr, "child: %s\n", err_detail());
		_exit(10);
	}
	raise(SIGKILL);
	_exit(11);
}

/* An import interrupted by the daemon's death is dropped at the next start, and that start says
 * so on stderr and in an "import" record (#14, point 13). */
static void test_interrupted_import_recorded(void **state)
{
	int before = e2e_audit_count("import", NULL, "ds", NULL, 0), status = 0;
	uint8_t *log;
	size_t n;
	pid_t pid;

	(void)state;
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_begin_import_and_die();
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fprintf(stderr, "child: status %#x\n", (unsigned)status);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	start_daemon();
	assert_int_equal(e2e_audit_count("import", NULL, "ds", NULL, 0), before + 1);
	log = tu_read_file(E->log, &n);
	log = realloc(log, n + 1);
	log[n] = '\0';
	assert_non_null(strstr((char *)log, "was interrupted"));
	assert_non_null(strstr((char *)log, "\"ds\""));
	free(log);
	{
		struct e2e_run *r = ctl("--json", "audit", "show", "--event", "import",
					"--auditor-key", E->akey);

		e2e_ok(r);
		assert_non_null(strstr(r->out, "interrupted"));
		assert_non_null(strstr(r->out, "aborted"));
		free(r);
	}
}

/* Wait (10 s at most) until the log holds n "reload" records. */
static void wait_reloads(int n)
{
	for (int i = 0; i < 100 && e2e_audit_count("reload", NULL, NULL, NULL, 0) < n; i++)
		poll(NULL, 0, 100);
	assert_int_equal(e2e_audit_count("reload", NULL, NULL, NULL, 0), n);
}

/* SIGHUP reloads enclave.conf instead of stopping the daemon: a new auditor gets the role, a
 * configuration that does not load is refused and the old one kept, and each reload is recorded
 * (#14, point 18). */
static void test_sighup_reloads(void **state)
{
	char *conf = tu_fmt("%s/enclave.conf", E->store), *orig, *text;
	int reloads = e2e_audit_count("reload", NULL, NULL, NULL, 0);
	size_t n;
	struct e2e_run *r;
	uint8_t *log;

	(void)state;
	orig = (char *)tu_read_file(conf, &n);
	orig = realloc(orig, n + 1);
	orig[n] = '\0';
	/* bob has no role: no checkpoint for him. */
	r = ctl_as(&E->u.bob, "audit", "checkpoint");
	assert_int_equal(r->status, 1);
	free(r);

	text = tu_fmt("%sauditor = user:%s\n", orig, TU_USER_BOB);
	tu_write_file(conf, text, strlen(text));
	free(text);
	/* A daemon that never started leaves E->daemon 0, and kill(0, ...) would signal the whole
	 * process group (ctest included). */
	assert_true(E->daemon > 0);
	assert_int_equal(kill(E->daemon, SIGHUP), 0);
	wait_reloads(reloads + 1);
	assert_true(e2e_daemon_answers());
	e2e_ok_free(ctl_as(&E->u.bob, "audit", "checkpoint"));

	/* A configuration that does not load: refused, the one in force kept, still serving. */
	text = tu_fmt("%sauditor = user:no-such-user-i14\n", orig);
	tu_write_file(conf, text, strlen(text));
	free(text);
	/* A daemon that never started leaves E->daemon 0, and kill(0, ...) would signal the whole
	 * process group (ctest included). */
	assert_true(E->daemon > 0);
	assert_int_equal(kill(E->daemon, SIGHUP), 0);
	wait_reloads(reloads + 2);
	assert_true(e2e_daemon_answers());
	e2e_ok_free(ctl_as(&E->u.bob, "audit", "checkpoint"));
	assert_int_equal(tu_run_as(&E->u.alice, child_open_once, NULL, 30000), 0);
	log = tu_read_file(E->log, &n);
	log = realloc(log, n + 1);
	log[n] = '\0';
	assert_non_null(strstr((char *)log, "the configuration in force is kept"));
	assert_non_null(strstr((char *)log, "reloaded"));
	free(log);
	r = e2e_ok(ctl("--json", "audit", "show", "--event", "reload", "--auditor-key", E->akey));
	assert_non_null(strstr(r->out, "\"result\":\"failed\""));
	assert_non_null(strstr(r->out, "no-such-user-i14"));
	assert_non_null(strstr(r->out, "\"auditors\":2"));
	free(r);

	/* Back as it was: bob loses the role again. */
	tu_write_file(conf, orig, strlen(orig));
	/* A daemon that never started leaves E->daemon 0, and kill(0, ...) would signal the whole
	 * process group (ctest included). */
	assert_true(E->daemon > 0);
	assert_int_equal(kill(E->daemon, SIGHUP), 0);
	wait_reloads(reloads + 3);
	r = ctl_as(&E->u.bob, "audit", "checkpoint");
	assert_int_equal(r->status, 1);
	free(r);
	free(orig);
	free(conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pubkey),
		cmocka_unit_test(test_prove_and_check),
		cmocka_unit_test(test_auditor_actions_recorded),
		cmocka_unit_test(test_verify_and_tampering),
		cmocka_unit_test(test_kill9_during_burst),
		cmocka_unit_test(test_interrupted_import_recorded),
		cmocka_unit_test(test_sighup_reloads),
		cmocka_unit_test(test_full_log_refuses_then_recovers),
		cmocka_unit_test(test_sealed_log_reveals_no_names),
		cmocka_unit_test(test_auditor_add),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
