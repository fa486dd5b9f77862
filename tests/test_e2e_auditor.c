/* test_e2e_auditor: the auditor's daily work against the real enclaved and enclavectl, run as
 * carol, a non-root member of the auditor group (TU_GROUP):
 *   - `audit show` filters: event families, grantee, grant, job, version, one record by seq; a
 *     typo in a filter is an error, not an empty answer; the purpose is printed in full;
 *   - `audit report`: relative times, one dataset's grants only, per-job summaries, every record
 *     accounted for, stable JSON keys.
 * Harness: tests/e2e.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/common.h"
#include "tests/e2e.h"
#include "tests/testutil.h"

static char *carol_key;   /* carol's copy of the auditor's secret key */

/* Longer than any cut the text view ever made (160 characters), so a cut shows. */
#define LONG_PURPOSE                                                                      \
	"training a sepsis early-warning model on ICU admissions 2019-2024 under protocol "  \
	"IRB-2026-0042, amendment 3, for the cardiology and intensive care research groups, " \
	"end-of-purpose marker"

static uint64_t alice_grant, two_grant;

/* ---- Setup ------------------------------------------------------------------------------------ */

static void import(const char *name, int files)
{
	char *dir = tu_fmt("%s/%s", E->src, name);

	mkdir(dir, 0755);
	for (int i = 0; i < files; i++) {
		char *f = tu_fmt("%s/f%d.bin", dir, i);

		tu_write_seeded(f, 5000 + 1000 * (size_t)i, 3 + (unsigned)i);
		free(f);
	}
	e2e_ok_free(ctl("-q", "dataset", "import", (char *)name, dir));
	free(dir);
}

static uint64_t grant(const char *who, const char *dataset, const char *purpose)
{
	struct e2e_run *r = e2e_ok(ctl("--json", "grant", "request", "--user", (char *)who,
				       "--dataset", (char *)dataset, "--purpose", (char *)purpose,
				       "--expires", "+7d"));
	json_t *j = e2e_out_json(r);
	uint64_t id = (uint64_t)json_integer_value(json_object_get(json_object_get(j, "grant"),
								    "id"));

	assert_true(id > 0);
	json_decref(j);
	free(r);
	return id;
}

/* The child: become `cat PATH` with SLURM_JOB_ID=4242 in its environment (a batch job's read). */
static int child_cat_as_job(void *arg)
{
	char *const argv[] = { "cat", arg, NULL };
	char *const envp[] = { "SLURM_JOB_ID=4242", "PATH=/usr/bin:/bin", NULL };
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

	if (null < 0 || dup2(null, STDOUT_FILENO) < 0)
		return 90;
	execve("/bin/cat", argv, envp);
	return 91;
}

static int group_setup(void **state)
{
	static const char *const init[] = { "--steward", "user:root", "--auditor",
					    "group:" TU_GROUP, "--approvals", "0",
					    "--max-grant-days", "30", NULL };
	char *path;

	(void)state;
	if (e2e_setup("e2e-auditor") < 0 || e2e_init(init) < 0)
		return -1;
	carol_key = e2e_auditor_key_for(&E->u.carol);
	e2e_daemon_start_with(E->pass, true);
	import("ds", 2);
	import("two", 1);
	alice_grant = grant(TU_USER_ALICE, "ds", LONG_PURPOSE);
	two_grant = grant(TU_USER_BOB, "two", "a grant on another dataset");
	path = tu_fmt("%s/ds/latest/f1.bin", E->mnt);
	assert_int_equal(tu_run_as(&E->u.alice, child_cat_as_job, path, 30000), 0);
	free(path);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	e2e_teardown();
	return 0;
}

/* ---- Helpers ---------------------------------------------------------------------------------- */

/* enclavectl as carol, the auditor who is not root. */
#define auditor(...) ctl_as(&E->u.carol, __VA_ARGS__, "--auditor-key", carol_key)

/* The events of `audit show --json` output, one line each, as a comma list. */
static char *events_of(const char *out)
{
	size_t cap = strlen(out) + 1, off = 0;
	char *list = calloc(1, cap);
	const char *p = out;

	while (*p) {
		const char *nl = strchr(p, '\n');
		json_t *j = json_loadb(p, nl ? (size_t)(nl - p) : strlen(p), 0, NULL);

		assert_non_null(j);
		off += (size_t)snprintf(list + off, cap - off, "%s%s", off ? "," : "",
					json_string_value(json_object_get(j, "event")));
		assert_true(off < cap);
		json_decref(j);
		p = nl ? nl + 1 : p + strlen(p);
	}
	return list;
}

static void expect_fail(struct e2e_run *r, int status, const char *needle)
{
	if (r->status != status || !strstr(r->err, needle))
		fprintf(stderr, "exit %d (wanted %d), stderr:\n%s\nwanted \"%s\"\n", r->status,
			status, r->err, needle);
	assert_int_equal(r->status, status);
	assert_non_null(strstr(r->err, needle));
	free(r);
}

/* ---- audit show ------------------------------------------------------------------------------- */

static void test_show_event_families(void **state)
{
	struct e2e_run *r;
	char *ev;

	(void)state;
	/* The example in --help: the grant family, requests included. */
	r = e2e_ok(auditor("--json", "audit", "show", "--event", "grant"));
	ev = events_of(r->out);
	assert_string_equal(ev, "grant_request,grant_request");
	free(ev);
	free(r);
	r = e2e_ok(auditor("--json", "audit", "show", "--event", "access,dataset"));
	ev = events_of(r->out);
	assert_non_null(strstr(ev, "import"));
	assert_non_null(strstr(ev, "open"));
	assert_non_null(strstr(ev, "close"));
	assert_null(strstr(ev, "grant"));
	free(ev);
	free(r);
	/* A typo is a usage error, said before anything is asked. */
	expect_fail(auditor("audit", "show", "--event", "grants"), 2, "unknown event \"grants\"");
	expect_fail(auditor("audit", "show", "--event", "open,"), 2, "empty event");
}

static void test_show_unknown_names_fail(void **state)
{
	(void)state;
	expect_fail(auditor("audit", "show", "--dataset", "nosuch"), 1, "no dataset named");
	expect_fail(auditor("audit", "show", "--dataset", "ds@9"), 1, "has no version 9");
	expect_fail(auditor("audit", "show", "--user", "enclave-t-nosuch"), 1, "no such user");
	expect_fail(auditor("audit", "show", "--grantee", "enclave-t-nosuch"), 1, "no such user");
	expect_fail(auditor("audit", "show", "--group", "enclave-t-nosuch"), 1, "no such group");
	expect_fail(auditor("audit", "show", "--grant", "99999"), 1, "no grant with id 99999");
	expect_fail(auditor("audit", "show", "--seq", "99999"), 1, "no record 99999");
	expect_fail(auditor("audit", "show", "--seq", "1", "--dataset", "ds"), 2, "--seq");
}

static void test_show_links(void **state)
{
	char id[24];
	struct e2e_run *r;
	char *ev;

	(void)state;
	/* The batch job's open and its close (which has no job id of its own). */
	r = e2e_ok(auditor("--json", "audit", "show", "--job", "4242"));
	ev = events_of(r->out);
	assert_string_equal(ev, "open,close");
	free(ev);
	free(r);
	/* Alice's grant, followed to the open it allowed and that open's close. */
	r = e2e_ok(auditor("--json", "audit", "show", "--grantee", TU_USER_ALICE));
	ev = events_of(r->out);
	assert_string_equal(ev, "grant_request,open,close");
	free(ev);
	free(r);
	snprintf(id, sizeof(id), "%llu", (unsigned long long)two_grant);
	r = e2e_ok(auditor("--json", "audit", "show", "--grant", id));
	ev = events_of(r->out);
	assert_string_equal(ev, "grant_request");
	free(ev);
	free(r);
	/* A version: the imports, grants and opens of ds@1, not those of "two". */
	r = e2e_ok(auditor("--json", "audit", "show", "--dataset", "ds@1"));
	ev = events_of(r->out);
	assert_string_equal(ev, "import,grant_request,open,close");
	free(ev);
	free(r);
}

/* Text lines keep what an auditor needs: the purpose, in full. */
static void test_show_full_text_and_detail(void **state)
{
	struct e2e_run *r;

	(void)state;
	r = e2e_ok(auditor("audit", "show", "--event", "grant_request", "--grantee",
			   TU_USER_ALICE));
	assert_non_null(strstr(r->out, "purpose=" LONG_PURPOSE));
	assert_non_null(strstr(r->out, "to=user:" TU_USER_ALICE));
	assert_null(strstr(r->out, "..."));
	free(r);
	/* --wide: the hash chain and every member of the grant. */
	r = e2e_ok(auditor("audit", "show", "--event", "grant_request", "--wide"));
	assert_non_null(strstr(r->out, "prev="));
	assert_non_null(strstr(r->out, "dataset_id="));
	assert_non_null(strstr(r->out, "created="));
	free(r);
	/* One record in detail. */
	/* Record 0 is the key record of the daemon's first epoch (docs/AUDIT.md section 15). */
	r = e2e_ok(auditor("audit", "show", "--seq", "0"));
	assert_non_null(strstr(r->out, "seq: 0\n"));
	assert_non_null(strstr(r->out, "event: log_key\n"));
	free(r);
	/* Record 1 anchors the policy records in the log (docs/POLICY.md "Bound to the log"). */
	r = e2e_ok(auditor("audit", "show", "--seq", "1"));
	assert_non_null(strstr(r->out, "event: policy_snapshot\n"));
	free(r);
	/* Record 2 anchors the versions (docs/AUDIT.md section 18): none yet. */
	r = e2e_ok(auditor("audit", "show", "--seq", "2"));
	assert_non_null(strstr(r->out, "event: versions_baseline\n"));
	free(r);
	r = e2e_ok(auditor("audit", "show", "--seq", "3"));
	assert_non_null(strstr(r->out, "seq: 3\n"));
	assert_non_null(strstr(r->out, "event: daemon_start\n"));
	free(r);
}

/* ---- audit report ----------------------------------------------------------------------------- */

static void test_report(void **state)
{
	struct e2e_run *r;
	json_t *j, *g, *left, *den, *job;
	json_int_t sum = 0;
	const char *k;
	json_t *v;
	size_t i;

	(void)state;
	/* As audit show takes it: an hour ago. */
	e2e_ok_free(auditor("audit", "report", "--since", "-1h"));
	r = e2e_ok(auditor("--json", "audit", "report", "--dataset", "ds"));
	j = e2e_out_json(r);
	/* Only ds's grants in force. */
	assert_int_equal(json_array_size(json_object_get(j, "grants_in_force")), 1);
	json_array_foreach(json_object_get(j, "grants_in_force"), i, g)
		assert_string_equal(json_string_value(json_object_get(g, "dataset")), "ds");
	/* Every record counted or left out for a reason. */
	left = json_object_get(j, "left_out");
	assert_true(json_is_integer(json_object_get(left, "time_range")));
	assert_true(json_is_integer(json_object_get(left, "other_dataset")));
	assert_true(json_is_integer(json_object_get(left, "other_filters")));
	json_object_foreach(left, k, v)
		sum += json_integer_value(v);
	assert_true(json_integer_value(json_object_get(left, "other_dataset")) > 0);
	assert_int_equal(json_integer_value(json_object_get(j, "records")) + sum,
			 json_integer_value(json_object_get(j, "records_total")));
	/* Denial counters are there at zero. */
	den = json_object_get(json_object_get(json_object_get(j, "datasets"), "ds"), "denials");
	assert_true(json_is_integer(json_object_get(den, "no_grant")));
	assert_int_equal(json_integer_value(json_object_get(den, "revoked")), 0);
	assert_true(json_is_integer(json_object_get(json_object_get(json_object_get(j, "datasets"),
								    "ds"), "reads_refused")));
	/* The batch job: one open, one file, its bytes (from the close). */
	job = json_object_get(json_object_get(j, "jobs"), "4242");
	assert_non_null(job);
	assert_int_equal(json_integer_value(json_object_get(job, "opens")), 1);
	assert_int_equal(json_integer_value(json_object_get(job, "files")), 1);
	assert_int_equal(json_integer_value(json_object_get(job, "bytes")), 6000);
	json_decref(j);
	free(r);
	/* The text says what was left out, and lists only ds's grants. */
	r = e2e_ok(auditor("audit", "report", "--dataset", "ds"));
	assert_non_null(strstr(r->out, " left out (outside the time range 0, not about this dataset "));
	assert_non_null(strstr(r->out, "grants in force now on ds:"));
	assert_null(strstr(r->out, TU_USER_BOB " -> two"));
	assert_non_null(strstr(r->out, "job 4242"));
	free(r);
	expect_fail(auditor("audit", "report", "--dataset", "nosuch"), 1, "no dataset named");
	expect_fail(auditor("audit", "report", "--since", "yesterday-ish"), 2, "--since");
}

/* ---- Steward conventions: --dry-run, confirmations, usage errors ------------------------------ */

/* Records in the log now (read offline). */
static int records(void)
{
	return e2e_audit_count(NULL, NULL, NULL, NULL, 0);
}

static void test_dry_run_records_nothing(void **state)
{
	struct e2e_run *r;
	json_t *j;
	int before = records();

	(void)state;
	r = e2e_ok(ctl("grant", "request", "--user", TU_USER_BOB, "--dataset", "ds", "--purpose",
		       "a test of the dry run", "--expires", "+1d", "--dry-run"));
	assert_non_null(strstr(r->out, "dry run: user:" TU_USER_BOB));
	assert_non_null(strstr(r->out, "nothing was recorded"));
	free(r);
	r = e2e_ok(ctl("--json", "grant", "request", "--user", TU_USER_BOB, "--dataset", "ds",
		       "--purpose", "a test of the dry run", "--expires", "+1d", "--dry-run"));
	j = e2e_out_json(r);
	assert_true(json_is_true(json_object_get(j, "dry_run")));
	assert_true(json_is_null(json_object_get(json_object_get(j, "grant"), "id")));
	json_decref(j);
	free(r);
	/* A dry run still makes every check: an unknown user is refused, and named as typed. */
	r = ctl("grant", "request", "--user", "enclave-t-nosuch", "--dataset", "ds", "--purpose",
		"p", "--expires", "+1d", "--dry-run");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "enclavectl: grant request user:enclave-t-nosuch: "));
	free(r);
	r = e2e_ok(ctl("deny", "add", "--user", TU_USER_BOB, "--dataset", "ds", "--reason", "test",
		       "--dry-run"));
	assert_non_null(strstr(r->out, "dry run: the rule is valid; nothing was recorded"));
	free(r);
	r = e2e_ok(ctl("dataset", "set", "ds", "--cache", "kernel", "--dry-run"));
	assert_non_null(strstr(r->out, "ds: dry run: the settings are valid; nothing was recorded"));
	free(r);
	assert_int_equal(records(), before);
	r = e2e_ok(ctl("--json", "deny", "list"));
	assert_null(strstr(r->out, "\"test\""));
	free(r);
}

static void test_usage_errors_exit_2(void **state)
{
	char *dir = tu_fmt("%s/ds", E->src);
	struct e2e_run *r;
	json_t *j;

	(void)state;
	/* Values the CLI can check itself are usage errors, labelled with the command typed. */
	expect_fail(ctl("grant", "request", "--user", TU_USER_BOB, "--dataset", "ds", "--purpose",
			"p", "--expires", "+1d", "--purpose-code", "healthy"), 2,
		    "enclavectl: grant request: --purpose-code: ");
	expect_fail(ctl("grant", "add", "--user", TU_USER_BOB, "--dataset", "ds", "--purpose",
			"p", "--expires", "+1d", "--purpose-code", "healthy"), 2,
		    "enclavectl: grant add: --purpose-code: ");
	expect_fail(ctl("dataset", "set", "ds", "--duo", "FOO"), 2, "enclavectl: dataset set: --duo");
	expect_fail(ctl("dataset", "import", "ds", dir, "--duo", "FOO"), 2,
		    "enclavectl: dataset import: --duo");
	free(dir);
	/* Unknown names are errors, also as JSON. */
	expect_fail(ctl("grant", "list", "--dataset", "nosuch"), 1, "nosuch");
	r = ctl("--json", "grant", "list", "--dataset", "nosuch");
	assert_int_equal(r->status, 1);
	j = e2e_out_json(r);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
			    "not_found");
	json_decref(j);
	free(r);
}

/* A rule over every user or every dataset is confirmed: no terminal and no --yes refuses, a
 * terminal asks (and no answer is no), --yes goes ahead. */
static void test_confirmation(void **state)
{
	char *cmd;
	struct e2e_run *r;
	int before = e2e_audit_count("deny_add", NULL, NULL, NULL, 0);

	(void)state;
	expect_fail(ctl("deny", "add", "--all", "--dataset", "two", "--reason", "freeze"), 2,
		    "run it again with --yes");
	expect_fail(ctl("deny", "add", "--user", TU_USER_BOB, "--all-datasets", "--reason",
			"freeze"), 2, "every dataset, present and future");
	/* On a terminal (script(1) gives it one) the question is asked; "n" is no. */
	cmd = tu_fmt("echo n | script -qec '%s --store %s deny add --all --dataset two --reason "
		     "freeze' /dev/null", ENCLAVECTL_PATH, E->store);
	r = e2e_run_argv(NULL, (char *const[]){ "/bin/sh", "-c", cmd, NULL });
	assert_non_null(strstr(r->out, "This rule blocks every user from dataset two. Go ahead?"));
	assert_non_null(strstr(r->out, "cancelled: nothing was changed"));
	free(r);
	free(cmd);
	assert_int_equal(e2e_audit_count("deny_add", NULL, NULL, NULL, 0), before);
	/* "y" goes ahead. */
	cmd = tu_fmt("echo y | script -qec '%s --store %s deny add --all --dataset two --reason "
		     "freeze' /dev/null", ENCLAVECTL_PATH, E->store);
	r = e2e_run_argv(NULL, (char *const[]){ "/bin/sh", "-c", cmd, NULL });
	assert_non_null(strstr(r->out, "deny rule "));
	free(r);
	free(cmd);
	assert_int_equal(e2e_audit_count("deny_add", NULL, NULL, NULL, 0), before + 1);
	/* --yes goes ahead without asking (a different rule: an identical one is refused). */
	e2e_ok_free(ctl("deny", "add", "--user", "4242", "--all-datasets", "--reason",
			"freeze", "--yes"));
	assert_int_equal(e2e_audit_count("deny_add", NULL, NULL, NULL, 0), before + 2);
}

/* ---- audit export ------------------------------------------------------------------------------ */

/* The auditor (carol, not root) exports the log into a directory of her own; the copy is
 * byte-exact (a prefix of the live files), verifies offline, and the export is recorded. */
static void test_export_as_auditor(void **state)
{
	char *home = tu_fmt("%s/carol", E->root), *dir = tu_fmt("%s/export", home);
	char *live = tu_fmt("%s/audit/audit.log", E->store), *copy = tu_fmt("%s/audit.log", dir);
	char *live_cp = tu_fmt("%s/audit/checkpoints", E->store);
	char *copy_cp = tu_fmt("%s/checkpoints", dir), *tree = tu_fmt("%s/tree/L00", dir);
	size_t nl, nc, nlc, ncc;
	uint8_t *a, *b, *c, *d;
	struct e2e_run *r;
	struct stat st;
	char *key;

	(void)state;
	assert_int_equal(mkdir(home, 0700), 0);
	assert_int_equal(chown(home, E->u.carol.uid, E->u.carol.gid), 0);
	r = e2e_ok(ctl_as(&E->u.carol, "audit", "pubkey"));
	r->out[strcspn(r->out, "\n")] = '\0';
	key = strdup(r->out);
	free(r);
	r = e2e_ok(ctl_as(&E->u.carol, "audit", "export", dir));
	assert_non_null(strstr(r->out, "exported "));
	free(r);
	/* Written with carol's own permissions, private. */
	assert_int_equal(stat(copy, &st), 0);
	assert_int_equal(st.st_uid, E->u.carol.uid);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(tree, &st), 0);
	/* Byte-exact: each copy is a prefix of the live file (which may have grown since). */
	a = tu_read_file(live, &nl);
	b = tu_read_file(copy, &nc);
	c = tu_read_file(live_cp, &nlc);
	d = tu_read_file(copy_cp, &ncc);
	assert_true(nc > 0 && nc <= nl && memcmp(a, b, nc) == 0);
	assert_true(ncc > 0 && ncc <= nlc && memcmp(c, d, ncc) == 0);
	/* The copy holds the record of its own export, by carol. */
	assert_non_null(memmem(b, nc, "\"event\":\"audit_export\"", 22));
	free(a);
	free(b);
	free(c);
	free(d);
	/* Verified offline, as carol, with only the verifier key. */
	e2e_ok_free(ctl_as(&E->u.carol, "audit", "verify", "--log", dir, "--key", key));
	/* Never over an existing directory; never for a user without the role. */
	expect_fail(ctl_as(&E->u.carol, "audit", "export", dir), 1, "exists");
	expect_fail(ctl_as(&E->u.bob, "audit", "export", "/tmp/enclave-t-bob-export-never"), 1,
		    "permission denied");
	assert_int_equal(access("/tmp/enclave-t-bob-export-never/audit.log", F_OK), -1);
	rmdir("/tmp/enclave-t-bob-export-never/tree");
	rmdir("/tmp/enclave-t-bob-export-never");
	free(key);
	free(home);
	free(dir);
	free(live);
	free(copy);
	free(live_cp);
	free(copy_cp);
	free(tree);
}

/* ---- cache=direct and shared mmap (#15 point 16) ---------------------------------------------- */

/* The child: a shared mmap of the file must fail with ENODEV (direct I/O), twice. */
static int child_mmap_shared(void *arg)
{
	for (int i = 0; i < 2; i++) {
		int fd = open(arg, O_RDONLY | O_CLOEXEC);
		void *p;

		if (fd < 0) {
			fprintf(stderr, "open %s: %s\n", (char *)arg, strerror(errno));
			return 1;
		}
		p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
		if (p != MAP_FAILED || errno != ENODEV) {
			fprintf(stderr, "mmap MAP_SHARED gave %s, wanted ENODEV\n",
				p == MAP_FAILED ? strerror(errno) : "a mapping");
			close(fd);
			return 2;
		}
		close(fd);
	}
	return 0;
}

static void test_direct_mmap_is_explained(void **state)
{
	char *path = tu_fmt("%s/ds/latest/f0.bin", E->mnt);
	const char *hint = "enclave: dataset ds is served with cache=direct";
	size_t len;
	char *log;
	int n = 0;

	(void)state;
	assert_int_equal(tu_run_as(&E->u.alice, child_mmap_shared, path, 30000), 0);
	/* The daemon's log names the dataset and the setting, once however many opens. */
	log = (char *)tu_read_file(E->log, &len);
	log[len] = '\0';	/* tu_read_file() leaves room for it, but does not write it */
	for (char *p = log; (p = strstr(p, hint)) != NULL; p++)
		n++;
	if (n != 1)
		fprintf(stderr, "the hint appears %d times in the daemon's log:\n%s\n", n, log);
	assert_int_equal(n, 1);
	assert_non_null(strstr(log, "enclavectl dataset set ds --cache kernel"));
	free(log);
	free(path);
}

/* ---- latest per user (#15 point 15) ----------------------------------------------------------- */

struct link_job {
	char link[4096];
	char want[16];      /* "" : latest must not exist */
};

/* The child: readlink latest, and read a file through it when it should exist. */
static int child_latest(void *arg)
{
	const struct link_job *j = arg;
	char got[64], file[4200];
	ssize_t n = readlink(j->link, got, sizeof(got) - 1);
	int fd;

	if (!*j->want) {
		if (n >= 0 || errno != ENOENT) {
			fprintf(stderr, "%s: wanted ENOENT, got %s\n", j->link,
				n >= 0 ? "a link" : strerror(errno));
			return 1;
		}
		return 0;
	}
	if (n < 0) {
		fprintf(stderr, "readlink %s: %s\n", j->link, strerror(errno));
		return 2;
	}
	got[n] = '\0';
	if (strcmp(got, j->want) != 0) {
		fprintf(stderr, "%s -> %s, wanted %s\n", j->link, got, j->want);
		return 3;
	}
	snprintf(file, sizeof(file), "%s/f0.bin", j->link);
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "open %s: %s\n", file, strerror(errno));
		return 4;
	}
	close(fd);
	return 0;
}

static void latest_is(const struct tu_user *u, const char *want)
{
	struct link_job j;

	snprintf(j.link, sizeof(j.link), "%s/lv/latest", E->mnt);
	snprintf(j.want, sizeof(j.want), "%s", want);
	assert_int_equal(tu_run_as(u, child_latest, &j, 30000), 0);
}

/* A user granted only @1 of a dataset with a version 2 sees latest -> 1 (and reads through it);
 * one granted every version sees 2; one with no grant sees no latest at all. */
static void test_latest_per_user(void **state)
{
	(void)state;
	import("lv", 1);
	import("lv", 2);
	grant(TU_USER_ALICE, "lv@1", "only the first version");
	grant(TU_USER_BOB, "lv", "every version");
	latest_is(&E->u.alice, "1");
	latest_is(&E->u.bob, "2");
	latest_is(&E->u.carol, "");
	/* And again, in the other order: nothing the kernel cached for one answers the other. */
	latest_is(&E->u.bob, "2");
	latest_is(&E->u.alice, "1");
}

/* ---- One JSON shape per object (#15 point 13) ------------------------------------------------- */

/* The member names of a JSON object, sorted, comma-separated. */
static char *keys_of(const json_t *o)
{
	const char *k;
	const json_t *v;
	char *out = calloc(1, 4096);
	const char *names[64];
	size_t n = 0;

	json_object_foreach((json_t *)o, k, v)
		if (n < 64)
			names[n++] = k;
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (strcmp(names[j], names[i]) < 0) {
				const char *t = names[i];

				names[i] = names[j];
				names[j] = t;
			}
	for (size_t i = 0, off = 0; i < n; i++) {
		off += (size_t)snprintf(out + off, 4096 - off, "%s%s", i ? "," : "", names[i]);
		assert_true(off < 4096);
	}
	return out;
}

/* A grant is the same object whichever command shows it: request, list, show. */
static void test_grant_json_shape(void **state)
{
	struct e2e_run *r;
	json_t *j, *g;
	char id[24], *req_keys, *list_keys = NULL, *show_keys;
	size_t i;

	(void)state;
	r = e2e_ok(ctl("--json", "grant", "request", "--user", TU_USER_CAROL, "--dataset", "two",
		       "--purpose", "shape", "--expires", "+1d"));
	j = e2e_out_json(r);
	g = json_object_get(j, "grant");
	snprintf(id, sizeof(id), "%" JSON_INTEGER_FORMAT,
		 json_integer_value(json_object_get(g, "id")));
	assert_true(json_is_string(json_object_get(g, "state")));
	assert_true(json_is_integer(json_object_get(g, "approvals")));
	req_keys = keys_of(g);
	json_decref(j);
	free(r);
	r = e2e_ok(ctl("--json", "grant", "list", "--dataset", "two"));
	j = e2e_out_json(r);
	json_array_foreach(json_object_get(j, "grants"), i, g)
		if (json_integer_value(json_object_get(g, "id")) == atoll(id))
			list_keys = keys_of(g);
	json_decref(j);
	free(r);
	assert_non_null(list_keys);
	assert_string_equal(req_keys, list_keys);
	r = e2e_ok(ctl("--json", "grant", "show", id));
	j = e2e_out_json(r);
	g = json_object_get(j, "grant");
	show_keys = keys_of(g);
	json_decref(j);
	free(r);
	assert_string_equal(req_keys, show_keys);
	free(req_keys);
	free(list_keys);
	free(show_keys);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_show_event_families),
		cmocka_unit_test(test_show_unknown_names_fail),
		cmocka_unit_test(test_show_links),
		cmocka_unit_test(test_show_full_text_and_detail),
		cmocka_unit_test(test_report),
		cmocka_unit_test(test_dry_run_records_nothing),
		cmocka_unit_test(test_usage_errors_exit_2),
		cmocka_unit_test(test_confirmation),
		cmocka_unit_test(test_export_as_auditor),
		cmocka_unit_test(test_direct_mmap_is_explained),
		cmocka_unit_test(test_latest_per_user),
		cmocka_unit_test(test_grant_json_shape),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
