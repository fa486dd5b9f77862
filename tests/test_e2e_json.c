/* test_e2e_json: every enclavectl command's --json output against docs/json/enclavectl.schema.json
 * (issue 15 point 13), checked by an independent validator (Debian's python3-jsonschema, through
 * tests/json_check.py), on a live store with two stewards, so that `grant approve` really
 * approves and a deny rule's removal really waits for the second one.
 *
 * The commands come from the code, not from a list here: `enclavectl help --json` prints the
 * dispatch table, and the checker fails for a command that prints JSON without a schema of its
 * own or without a successful run below, and for one that prints none but did not refuse --json.
 * Errors are checked too: each failing run's stdout must be one error object.
 * test_wrong_shapes_rejected shows the check can fail: the old `grant approve` shape (state
 * beside the grant), a grant without its state, a text error and a new command without a schema
 * are each refused.
 * Harness: tests/e2e.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/common.h"
#include "tests/e2e.h"
#include "tests/testutil.h"

#ifndef JSON_CHECK_PY
#error "JSON_CHECK_PY must name tests/json_check.py"
#endif
#ifndef JSON_SCHEMA
#error "JSON_SCHEMA must name docs/json/enclavectl.schema.json"
#endif

static char *runs_path;      /* runs.jsonl: one line per enclavectl --json run */
static char *commands_path;  /* `enclavectl help --json` */

/* ---- Setup ------------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
	/* Two stewards (root and carol), so approvals 1 means a real second person; root is an
	 * auditor too (it holds the auditor key e2e_init made), and so is the group. */
	static const char *const init[] = { "--steward", "user:root", "--steward",
					    "user:" TU_USER_CAROL, "--auditor", "user:root",
					    "--auditor", "group:" TU_GROUP, "--approvals", "1",
					    "--visa-issuer", "https://enclave.invalid/visa", NULL };

	(void)state;
	if (e2e_setup("e2e-json") < 0 || e2e_init(init) < 0)
		return -1;
	runs_path = tu_fmt("%s/runs.jsonl", E->root);
	commands_path = tu_fmt("%s/commands.json", E->root);
	e2e_daemon_start_with(E->pass, true);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	e2e_teardown();
	free(runs_path);
	free(commands_path);
	return 0;
}

/* ---- Running commands, keeping what they printed ---------------------------------------------- */

/* The objects that are commands of their own (no second word). */
static bool single_word(const char *w)
{
	static const char *const one[] = { "init", "status", "whoami", "help", "completion", NULL };

	for (size_t i = 0; one[i]; i++)
		if (strcmp(one[i], w) == 0)
			return true;
	return false;
}

/* Append one run to runs.jsonl. */
static void record_run(char *const *args, size_t nargs, const struct e2e_run *r)
{
	char command[128];
	json_t *argv = json_array(), *line;
	FILE *f;

	snprintf(command, sizeof(command), "%s%s%s", args[0],
		 single_word(args[0]) ? "" : " ", single_word(args[0]) ? "" : args[1]);
	for (size_t i = 0; i < nargs; i++)
		json_array_append_new(argv, json_string(args[i]));
	line = json_pack("{s:s, s:o, s:i, s:s}", "command", command, "argv", argv, "status",
			 r->status, "stdout", r->out);
	assert_non_null(line);
	f = fopen(runs_path, "a");
	assert_non_null(f);
	assert_int_equal(json_dumpf(line, f, JSON_COMPACT), 0);
	fputc('\n', f);
	assert_int_equal(fclose(f), 0);
	json_decref(line);
}

/* enclavectl --store S --json ARGS as u (NULL: root); the exit status must be `status`. The run
 * is kept for the checker; the output is returned (free it). */
static struct e2e_run *jrun(const struct tu_user *u, int status, char *const *args)
{
	char *argv[64];
	size_t n = 0, nargs = 0;
	struct e2e_run *r;

	while (args[nargs])
		nargs++;
	assert_true(nargs + 5 < ARRAY_SIZE(argv));
	argv[n++] = ENCLAVECTL_PATH;
	argv[n++] = "--store";
	argv[n++] = E->store;
	argv[n++] = "--json";
	for (size_t i = 0; i < nargs; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	r = e2e_run_argv(u, argv);
	if (r->status != status)
		fprintf(stderr, "enclavectl %s %s: exit %d, not %d\nstdout: %s\nstderr: %s\n",
			args[0], nargs > 1 ? args[1] : "", r->status, status, r->out, r->err);
	assert_int_equal(r->status, status);
	record_run(args, nargs, r);
	return r;
}

#define J(u, status, ...) jrun(u, status, (char *const[]){ __VA_ARGS__, NULL })
#define JF(u, status, ...) free(J(u, status, __VA_ARGS__))

/* A member of the JSON stdout, as text (integers formatted): a static buffer. */
static const char *member(struct e2e_run *r, const char *outer, const char *key)
{
	static char buf[256];
	json_t *j = e2e_out_json(r), *o = outer ? json_object_get(j, outer) : j;
	json_t *v = json_object_get(o, key);

	if (json_is_integer(v))
		snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else
		snprintf(buf, sizeof(buf), "%s", json_is_string(v) ? json_string_value(v) : "");
	json_decref(j);
	return buf;
}

/* Write a member's string value to a file (a checkpoint, a proof, a record line). */
static void member_to_file(struct e2e_run *r, const char *key, const char *path, bool newline)
{
	json_t *j = e2e_out_json(r);
	const char *s = json_string_value(json_object_get(j, key));
	char *text;

	assert_non_null(s);
	text = tu_fmt("%s%s", s, newline ? "\n" : "");
	tu_write_file(path, text, strlen(text));
	free(text);
	json_decref(j);
}

static int child_cat(void *arg)
{
	char *const argv[] = { "cat", arg, NULL };
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

	if (null < 0 || dup2(null, STDOUT_FILENO) < 0)
		return 90;
	execv("/bin/cat", argv);
	return 91;
}

/* Run the checker; its exit status. Its output goes to stderr. */
static int json_check(const char *commands, const char *runs, const char *must_say)
{
	struct e2e_run *r = e2e_run_argv(NULL, (char *const[]){ "/usr/bin/python3", JSON_CHECK_PY,
							       JSON_SCHEMA, (char *)commands,
							       (char *)runs, NULL });
	int status = r->status;

	fprintf(stderr, "%s%s", r->out, r->err);
	if (must_say && !strstr(r->err, must_say)) {
		fprintf(stderr, "json_check did not say \"%s\"\n", must_say);
		status = -1;
	}
	free(r);
	return status;
}

/* ---- Every command ---------------------------------------------------------------------------- */

static void test_every_command_matches_schema(void **state)
{
	struct tu_user *alice = &E->u.alice, *bob = &E->u.bob, *carol = &E->u.carol;
	char *src = tu_fmt("%s/ds", E->src), *file, *xdir = tu_fmt("%s/export", E->root);
	char *vk = tu_fmt("%s/verifier.key", E->root), *cp1 = tu_fmt("%s/cp1", E->root);
	char *cp2 = tu_fmt("%s/cp2", E->root), *rec = tu_fmt("%s/record", E->root);
	char *proof = tu_fmt("%s/proof", E->root), *k2 = tu_fmt("%s/auditor2.key", E->root);
	char *k2pub = tu_fmt("%s/auditor2.pub", E->root);
	char g1[24], g2[24], d1[24];
	struct e2e_run *r;

	(void)state;
	unlink(runs_path);
	mkdir(src, 0755);
	tu_seed_file(5000, 1, "%s/a.bin", src);
	tu_seed_file(7000, 2, "%s/b.bin", src);

	/* The command table, as data. */
	r = J(NULL, 0, "help");
	tu_write_file(commands_path, r->out, strlen(r->out));
	free(r);
	JF(NULL, 0, "help", "grant");

	/* The daemon, who one is, datasets. */
	JF(NULL, 0, "status");
	JF(alice, 0, "status");  /* no role: the counts are left out */
	JF(NULL, 0, "whoami");
	JF(alice, 0, "whoami");
	JF(NULL, 0, "dataset", "import", "ds", src);
	JF(NULL, 0, "dataset", "import", "ds", src);
	JF(NULL, 0, "dataset", "list");
	JF(NULL, 0, "dataset", "show", "ds");
	JF(NULL, 0, "dataset", "show", "ds@1");

	/* Grants: requested by root, approved by carol (approvals 1: really approved). */
	r = J(NULL, 0, "grant", "request", "--user", TU_USER_ALICE, "--dataset", "ds",
	      "--purpose", "schema check", "--expires", "+7d");
	snprintf(g1, sizeof(g1), "%s", member(r, "grant", "id"));
	assert_string_equal(member(r, "grant", "state"), "pending_approval");
	free(r);
	JF(NULL, 0, "grant", "add", "--dry-run", "--user", TU_USER_BOB, "--dataset", "ds",
	   "--purpose", "a dry run", "--expires", "+1d");
	r = J(NULL, 0, "grant", "request", "--user", TU_USER_BOB, "--dataset", "ds@1", "--purpose",
	      "later", "--purpose-code", "health", "--not-before", "+2d", "--expires", "+7d");
	snprintf(g2, sizeof(g2), "%s", member(r, "grant", "id"));
	free(r);
	r = J(carol, 0, "grant", "approve", g1);
	assert_string_equal(member(r, "grant", "state"), "active");
	assert_string_equal(member(r, "grant", "approvals"), "1");
	free(r);
	JF(carol, 0, "grant", "approve", g2);  /* not yet valid */
	file = tu_fmt("%s/ds/latest/a.bin", E->mnt);
	assert_int_equal(tu_run_as(alice, child_cat, file, 30000), 0);
	free(file);
	JF(NULL, 0, "grant", "list");
	JF(NULL, 0, "grant", "list", "--user", TU_USER_ALICE, "--state", "active");
	JF(NULL, 0, "grant", "show", g1);
	JF(NULL, 0, "grant", "show", g2);
	JF(NULL, 0, "grant", "export", "--format", "ga4gh-visa");
	JF(alice, 0, "grant", "export", "--jwks");

	/* Consent codes that suspend the grant (its purpose is "general"), then let it back in. */
	JF(NULL, 0, "dataset", "set", "ds", "--duo", "HMB", "--dry-run");
	r = J(NULL, 0, "dataset", "set", "ds", "--duo", "HMB", "--controller", "UH Trust");
	assert_non_null(strstr(r->out, "\"suspended\""));
	free(r);
	JF(NULL, 0, "grant", "list", "--state", "suspended");
	JF(NULL, 1, "access", "check", "--user", TU_USER_ALICE, "--dataset", "ds");
	JF(NULL, 0, "dataset", "set", "ds", "--duo", "");

	/* Access checks: allowed, not yet valid, as oneself, refused. */
	JF(NULL, 0, "access", "check", "--user", TU_USER_ALICE, "--dataset", "ds");
	JF(alice, 0, "access", "check", "--dataset", "ds@2");
	JF(NULL, 1, "access", "check", "--user", TU_USER_CAROL, "--dataset", "ds@1");
	JF(bob, 1, "access", "check", "--dataset", "ds");

	/* Deny rules: added, blocking, removal asked by root and approved by carol. */
	r = J(NULL, 0, "deny", "add", "--user", TU_USER_BOB, "--dataset", "ds", "--reason",
	      "schema check");
	snprintf(d1, sizeof(d1), "%s", member(r, "rule", "id"));
	assert_string_equal(member(r, "rule", "state"), "active");
	free(r);
	JF(NULL, 0, "deny", "add", "--dry-run", "--group", TU_GROUP, "--dataset", "ds",
	   "--reason", "a dry run");
	JF(NULL, 1, "access", "check", "--user", TU_USER_BOB, "--dataset", "ds");
	JF(NULL, 0, "deny", "list");
	JF(NULL, 0, "deny", "remove", d1, "--reason", "done checking");
	JF(NULL, 0, "deny", "show", d1);
	r = J(carol, 0, "deny", "approve", d1);
	assert_string_equal(member(r, "rule", "state"), "removed");
	free(r);
	JF(NULL, 0, "deny", "list", "--all");

	/* The store's space: usage, a dry run, a collection. */
	JF(NULL, 0, "store", "df");
	JF(NULL, 0, "store", "gc", "--dry-run");
	JF(NULL, 0, "store", "gc");
	JF(alice, 1, "store", "gc");

	/* Revocation: inside the grant wherever it is shown. */
	JF(NULL, 0, "grant", "revoke", g1, "--reason", "schema checked");
	JF(NULL, 1, "access", "check", "--user", TU_USER_ALICE, "--dataset", "ds");
	JF(NULL, 0, "grant", "list", "--all");
	JF(NULL, 0, "grant", "show", g1);

	/* The Crypt4GH site key: an existing (OpenSSH ed25519) key brought in, then, its file
	 * removed behind the daemon's back, one made; anyone may read the public half. */
	{
		char *ssh = tu_fmt("%s/site_ssh", E->root), *kf;

		e2e_ok_free(e2e_run_argv(NULL, (char *const[]){ "/usr/bin/ssh-keygen", "-q", "-t",
							      "ed25519", "-N", "", "-C", "json",
							      "-f", ssh, NULL }));
		JF(NULL, 0, "crypt4gh", "import", ssh);
		JF(NULL, 1, "crypt4gh", "keygen");
		kf = tu_fmt("%s/keys/crypt4gh.key", E->store);
		assert_int_equal(unlink(kf), 0);
		JF(NULL, 0, "crypt4gh", "keygen");
		JF(alice, 0, "crypt4gh", "pubkey");
		free(kf);
		free(ssh);
	}
	/* An export to a researcher's key (an OpenSSH key's Crypt4GH public half will do): asked,
	 * approved by the second steward, run, shown, listed. */
	{
		char *rk = tu_fmt("%s/researcher.pub", E->root), *xo = tu_fmt("%s/xout", E->root);
		char id[24];

		r = J(NULL, 0, "crypt4gh", "pubkey", "--out", rk);
		free(r);
		r = J(NULL, 0, "export", "request", "ds", "a.bin", "--recipient-key", rk, "--out", xo,
		      "--reason", "schema check");
		snprintf(id, sizeof(id), "%s", member(r, "export", "id"));
		free(r);
		JF(NULL, 1, "export", "run", id, "--out", xo);
		JF(carol, 0, "export", "approve", id);
		JF(NULL, 0, "export", "run", id, "--out", xo);
		JF(NULL, 0, "export", "show", id);
		JF(NULL, 0, "export", "list");
		free(rk);
		free(xo);
	}

	/* The audit log: keys, checkpoints, proofs, records, an export verified offline. */
	r = J(NULL, 0, "audit", "pubkey");
	{
		char *key = tu_fmt("%s\n", member(r, NULL, "key"));

		tu_write_file(vk, key, strlen(key));
		free(key);
	}
	free(r);
	r = J(NULL, 0, "audit", "checkpoint");
	member_to_file(r, "checkpoint", cp1, false);
	free(r);
	r = J(NULL, 0, "audit", "prove", "3");
	member_to_file(r, "proof", proof, false);
	member_to_file(r, "record", rec, true);
	free(r);
	JF(NULL, 0, "audit", "show", "--auditor-key", E->akey, "--limit", "8");
	JF(NULL, 0, "audit", "show", "--auditor-key", E->akey, "--event", "grant,deny,open");
	JF(NULL, 0, "audit", "show", "--auditor-key", E->akey, "--seq", "2");
	r = J(NULL, 0, "audit", "keygen", "--secret-out", k2);
	{
		char *pub = tu_fmt("%s\n", member(r, NULL, "public_key"));

		tu_write_file(k2pub, pub, strlen(pub));
		free(pub);
	}
	free(r);
	JF(NULL, 0, "audit", "auditor-add", "--public-key", k2pub);
	r = J(NULL, 0, "audit", "checkpoint");
	member_to_file(r, "checkpoint", cp2, false);
	free(r);
	JF(NULL, 0, "audit", "export", xdir);
	JF(NULL, 0, "audit", "verify", "--log", xdir, "--key-file", vk);
	JF(NULL, 0, "audit", "verify", "--log", xdir, "--key-file", vk, "--trusted", cp1);
	JF(NULL, 0, "audit", "check-proof", "--key-file", vk, "--record", rec, proof);
	JF(NULL, 0, "audit", "consistency", "--key-file", vk, "--log", xdir, cp1, cp2);
	JF(NULL, 0, "audit", "report", "--auditor-key", E->akey);
	JF(NULL, 0, "audit", "report", "--auditor-key", E->akey, "--log", xdir, "--dataset", "ds");

	/* Erasure: asked by root, approved by carol, listed, proved (docs/POLICY.md "Erasure"). */
	{
		char eid[24];

		r = J(NULL, 0, "dataset", "erase", "ds@1", "--reason", "schema check",
		      "--revoke-grants");
		snprintf(eid, sizeof(eid), "%s", member(r, "erasure", "id"));
		free(r);
		JF(NULL, 0, "dataset", "erasures");
		r = J(carol, 0, "dataset", "erase-approve", eid);
		assert_string_equal(member(r, "erasure", "state"), "erased");
		free(r);
		JF(NULL, 0, "dataset", "erasure-proof", "ds@1");
		JF(NULL, 1, "dataset", "erase-approve", eid);
		JF(NULL, 1, "dataset", "erasure-proof", "ds@2");
	}

	/* Compute nodes: a key pair made as a node makes it, enrolled by root, approved by carol,
	 * listed, removed (docs/DEPLOYMENT.md section 7). */
	{
		char *local = tu_fmt("%s/node-local", E->root), *pub = tu_fmt("%s/node.pub", local);
		char *ppub = tu_fmt("%s/primary.pub", E->root), nid[24];

		r = e2e_ok(ctl("audit", "pubkey"));
		tu_write_file(ppub, r->out, strlen(r->out));
		free(r);
		free(e2e_ok(e2e_run_argv(NULL, (char *const[]){ ENCLAVED_PATH, "--node", "gpu-01",
								"--init", "--local", local,
								"--primary-key", ppub, NULL })));
		r = J(NULL, 0, "node", "add", "gpu-01", pub);
		snprintf(nid, sizeof(nid), "%s", member(r, "node", "id"));
		assert_string_equal(member(r, "node", "state"), "pending_approval");
		free(r);
		JF(NULL, 1, "node", "approve", nid);   /* the requester cannot */
		r = J(carol, 0, "node", "approve", nid);
		assert_string_equal(member(r, "node", "state"), "enrolled");
		free(r);
		JF(NULL, 0, "node", "list");
		JF(NULL, 0, "node", "show", "gpu-01");
		JF(NULL, 0, "node", "remove", "gpu-01", "--reason", "schema check");
		JF(NULL, 0, "node", "list", "--all");
		JF(NULL, 0, "node", "show", "gpu-01");
		JF(NULL, 1, "node", "show", "gpu-99");
		free(local);
		free(pub);
		free(ppub);
	}

	/* Errors: refused by the daemon, a usage error, a role missing, a proof that fails. */
	JF(NULL, 1, "grant", "show", "999999");
	JF(NULL, 1, "deny", "show", "999999");
	JF(NULL, 1, "dataset", "show", "nosuch");
	JF(NULL, 2, "grant", "list", "--no-such-option");
	JF(NULL, 2, "grant", "approve");
	JF(alice, 1, "grant", "list");
	JF(carol, 1, "grant", "approve", g1);
	JF(NULL, 1, "audit", "check-proof", "--key-file", vk, "--line", "{}", proof);

	/* The commands that print no JSON refuse --json before doing anything. */
	JF(NULL, 2, "init", "--store", xdir);
	JF(NULL, 2, "completion", "bash");
	JF(NULL, 2, "audit", "new-log", "--reason", "none");
	JF(NULL, 2, "audit", "legacy", "--log", xdir, "--auditor-key", E->akey, "--output", xdir);
	JF(NULL, 2, "store", "upgrade");

	/* The daemon stopped: no daemon to ask, and the offline policy rebuild. */
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	JF(NULL, 1, "status");
	JF(NULL, 0, "policy", "rebuild", "--passphrase-file", E->pass);

	assert_int_equal(json_check(commands_path, runs_path, NULL), 0);

	free(src);
	free(xdir);
	free(vk);
	free(cp1);
	free(cp2);
	free(rec);
	free(proof);
	free(k2);
	free(k2pub);
}

/* ---- The check can fail ------------------------------------------------------------------------ */

/* runs.jsonl with the stdout of the first successful run of `command` replaced by edit(stdout);
 * a new file. */
static char *mutated_runs(const char *command, const char *tag, json_t *(*edit)(json_t *doc))
{
	size_t len;
	char *text = (char *)tu_read_file(runs_path, &len), *p = text, *path;
	bool done = false;
	FILE *f;

	path = tu_fmt("%s/runs-%s.jsonl", E->root, tag);
	f = fopen(path, "w");
	assert_non_null(f);
	while (p < text + len) {
		char *nl = memchr(p, '\n', (size_t)(text + len - p));
		json_t *run = json_loadb(p, (size_t)(nl - p), 0, NULL);

		assert_non_null(run);
		if (!done && strcmp(json_string_value(json_object_get(run, "command")), command) == 0 &&
		    json_integer_value(json_object_get(run, "status")) == 0) {
			json_t *doc = json_loads(json_string_value(json_object_get(run, "stdout")), 0,
						 NULL);
			char *out;

			assert_non_null(doc);
			doc = edit(doc);
			out = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
			json_object_set_new(run, "stdout", json_string(out));
			free(out);
			json_decref(doc);
			done = true;
		}
		json_dumpf(run, f, JSON_COMPACT);
		fputc('\n', f);
		json_decref(run);
		p = nl + 1;
	}
	assert_true(done);
	assert_int_equal(fclose(f), 0);
	free(text);
	return path;
}

/* The shape grant approve had before: state and approvals beside the grant, not in it. */
static json_t *approve_old_shape(json_t *doc)
{
	json_t *g = json_object_get(doc, "grant");

	json_object_set(doc, "state", json_object_get(g, "state"));
	json_object_set(doc, "approvals", json_object_get(g, "approvals"));
	json_object_set(doc, "approvals_required", json_object_get(g, "approvals_required"));
	json_object_del(g, "state");
	json_object_del(g, "approvals");
	return doc;
}

/* A grant of grant list without its state. */
static json_t *list_without_state(json_t *doc)
{
	json_object_del(json_array_get(json_object_get(doc, "grants"), 0), "state");
	return doc;
}

/* A deny rule with a member no schema lists. */
static json_t *deny_extra_member(json_t *doc)
{
	json_object_set_new(json_object_get(doc, "rule"), "note", json_string("extra"));
	return doc;
}

static void test_wrong_shapes_rejected(void **state)
{
	char *path, *cmds;
	size_t len;
	char *text;
	json_t *j;

	(void)state;
	/* The real runs pass (test_every_command_matches_schema); each wrong shape fails. */
	path = mutated_runs("grant approve", "old-approve", approve_old_shape);
	assert_int_equal(json_check(commands_path, path, "grant approve"), 1);
	free(path);
	path = mutated_runs("grant list", "no-state", list_without_state);
	assert_int_equal(json_check(commands_path, path, "'state' is a required property"), 1);
	free(path);
	path = mutated_runs("deny add", "extra", deny_extra_member);
	assert_int_equal(json_check(commands_path, path, "deny add"), 1);
	free(path);
	/* A failure that printed plain text instead of the error object. */
	{
		char *p2 = tu_fmt("%s/runs-text-error.jsonl", E->root);
		FILE *f = fopen(p2, "w");

		text = (char *)tu_read_file(runs_path, &len);
		assert_non_null(f);
		fwrite(text, 1, len, f);
		fputs("{\"command\":\"grant show\",\"argv\":[\"grant\",\"show\",\"7\"],\"status\":1,"
		      "\"stdout\":\"enclavectl: grant show 7: not found\\n\"}\n", f);
		assert_int_equal(fclose(f), 0);
		free(text);
		assert_int_equal(json_check(commands_path, p2, "not one JSON error object"), 1);
		free(p2);
	}
	/* A new command with no schema (as if added to the dispatch table) fails. */
	text = (char *)tu_read_file(commands_path, &len);
	j = json_loadb(text, len, 0, NULL);
	free(text);
	assert_non_null(j);
	json_array_append_new(json_object_get(j, "commands"),
			      json_pack("{s:s, s:s, s:s, s:b}", "command", "grant frobnicate", "args",
					"", "summary", "new", "json", 1));
	cmds = tu_fmt("%s/commands-new.json", E->root);
	assert_int_equal(json_dump_file(j, cmds, 0), 0);
	json_decref(j);
	assert_int_equal(json_check(cmds, runs_path, "grant frobnicate"), 1);
	free(cmds);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_command_matches_schema),
		cmocka_unit_test(test_wrong_shapes_rejected),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
