/* test_e2e_policy: the access policy end to end: the real enclaved and enclavectl, a real mount,
 * real users. Two stewards (root and bob) and four-eyes grants; deny rules; consent codes (NMDS);
 * `access check` for each reason; visa export; a grant through a supplementary group.
 *
 * Readers are alice (user grants) and, for the group case, alice again as a temporary member of
 * TU_GROUP (carol stays in it for the other test programs). Each case uses its own dataset so the
 * cases do not see each other's grants.
 */
#include <errno.h>
#include <fcntl.h>
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

/* ---- Setup ------------------------------------------------------------------------------------ */

#define VISA_ISSUER "https://enclave.example.org/visas"
#ifndef VISA_CHECK_PY
#error "VISA_CHECK_PY must name tests/visa_check.py"
#endif

static const char *const datasets[] = { "pend", "deny", "nmds", "why", "grp", "msg", "self",
					"show", "susp" };
/* alice is in TU_GROUP for a while in test_group_membership; the teardown takes her out. */
static bool alice_in_group;

static void import(const char *name, const char *duo)
{
	char *dir = tu_fmt("%s/%s", E->src, name), *file = tu_fmt("%s/a.bin", dir);
	struct e2e_run *r;

	assert_int_equal(mkdir(dir, 0755), 0);
	tu_write_seeded(file, 10000, 7);
	free(file);
	r = duo ? ctl("dataset", "import", (char *)name, dir, "--duo", (char *)duo, "--controller",
		      "Example Biobank")
		: ctl("dataset", "import", (char *)name, dir);
	e2e_ok_free(r);
	free(dir);
}

static int group_setup(void **state)
{
	/* Four eyes: every grant needs one approval by another steward. */
	static const char *const roles[] = { "--steward", "user:root", "--steward",
					     "user:" TU_USER_BOB, "--approvals", "1",
					     "--max-grant-days", "30", "--visa-issuer", VISA_ISSUER,
					     NULL };

	(void)state;
	if (e2e_setup("e2e-policy") < 0 || e2e_init(roles) < 0)
		return -1;
	e2e_daemon_start_with(E->pass, true);
	for (size_t i = 0; i < ARRAY_SIZE(datasets); i++)
		import(datasets[i], strcmp(datasets[i], "nmds") == 0 ? "NMDS,HMB" : NULL);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (alice_in_group)
		tu_group_member(TU_USER_ALICE, false);
	e2e_teardown();
	return 0;
}

/* ---- Helpers ---------------------------------------------------------------------------------- */

/* The child's job: open <mnt>/<dataset>/latest/a.bin and read it, or see the open fail. */
struct open_job {
	char path[4096];
	int want_errno;   /* 0: must open and read */
};

static int child_open(void *arg)
{
	const struct open_job *job = arg;
	char buf[4096];
	int fd = open(job->path, O_RDONLY | O_CLOEXEC);

	if (job->want_errno) {
		if (fd >= 0 || errno != job->want_errno) {
			fprintf(stderr, "%s: open gave %s, wanted %s\n", job->path,
				fd >= 0 ? "success" : strerror(errno), strerror(job->want_errno));
			if (fd >= 0)
				close(fd);
			return 1;
		}
		return 0;
	}
	if (fd < 0) {
		fprintf(stderr, "%s: %s\n", job->path, strerror(errno));
		return 2;
	}
	if (read(fd, buf, sizeof(buf)) <= 0) {
		fprintf(stderr, "%s: read failed\n", job->path);
		close(fd);
		return 3;
	}
	close(fd);
	return 0;
}

static void alice_opens(const char *dataset, int want_errno)
{
	struct open_job job = { .want_errno = want_errno };

	snprintf(job.path, sizeof(job.path), "%s/%s/latest/a.bin", E->mnt, dataset);
	assert_int_equal(tu_run_as(&E->u.alice, child_open, &job, 30000), 0);
}

/* `grant request` by root for alice (or --group) on dataset; returns the id. */
static uint64_t request(const char *kindflag, const char *who, const char *dataset,
			const char *purpose_code)
{
	struct e2e_run *r = e2e_ok(ctl("--json", "grant", "request", (char *)kindflag, (char *)who,
				       "--dataset", (char *)dataset, "--purpose", "model training",
				       "--purpose-code", (char *)purpose_code, "--expires", "+7d"));
	json_t *j = e2e_out_json(r);
	uint64_t id = (uint64_t)json_integer_value(json_object_get(json_object_get(j, "grant"),
								    "id"));

	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "grant"),
							      "state")), "pending_approval");
	json_decref(j);
	free(r);
	assert_true(id > 0);
	return id;
}

static void approve_as_bob(uint64_t id)
{
	char ids[32];

	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
	e2e_ok_free(ctl_as(&E->u.bob, "grant", "approve", ids));
}

/* `access check` for alice on dataset: its JSON (the exit status checked against the decision). */
static json_t *check(const char *dataset)
{
	struct e2e_run *r = ctl("--json", "access", "check", "--user", TU_USER_ALICE, "--dataset",
				(char *)dataset);
	json_t *j = e2e_out_json(r);
	bool allow = strcmp(json_string_value(json_object_get(j, "decision")), "allow") == 0;

	assert_int_equal(r->status, allow ? 0 : 1);
	free(r);
	return j;
}

static void assert_reason(const char *dataset, const char *reason)
{
	json_t *j = check(dataset);

	assert_string_equal(json_string_value(json_object_get(j, "reason")), reason);
	json_decref(j);
}

/* ---- Cases ------------------------------------------------------------------------------------ */

/* Does `audit report --json` (read through the daemon) list grant id among those in force? */
static void report_has_grant(uint64_t id, bool want)
{
	struct e2e_run *r = e2e_ok(ctl("--json", "audit", "report", "--auditor-key", E->akey));
	json_t *j = e2e_out_json(r), *g;
	bool found = false;
	size_t i;

	json_array_foreach(json_object_get(j, "grants_in_force"), i, g)
		found |= (uint64_t)json_integer_value(json_object_get(g, "id")) == id;
	if (found != want)
		fprintf(stderr, "report: grant %llu %s in force:\n%s\n", (unsigned long long)id,
			found ? "is" : "is not", r->out);
	assert_true(found == want);
	json_decref(j);
	free(r);
}

/* Does `grant export --json` hold a visa for grant id? */
static bool exported(uint64_t id)
{
	struct e2e_run *r = e2e_ok(ctl("--json", "grant", "export", "--format", "ga4gh-visa"));
	json_t *j = e2e_out_json(r), *v;
	bool found = false;
	size_t i;

	json_array_foreach(json_object_get(j, "visas"), i, v)
		found |= json_integer_value(json_object_get(v, "grant_id")) == (json_int_t)id &&
			 json_is_string(json_object_get(v, "jwt"));
	json_decref(j);
	free(r);
	return found;
}

/* Four eyes: pending gives EACCES with the reason recorded; the requester cannot approve; the
 * other steward's approval opens it. */
static void test_request_approve(void **state)
{
	uint64_t id;
	char ids[32];
	struct e2e_run *r;

	(void)state;
	id = request("--user", TU_USER_ALICE, "pend", "health");
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
	assert_reason("pend", "pending_approval");
	alice_opens("pend", EACCES);
	assert_int_equal(e2e_audit_count("open", TU_USER_ALICE, "pend", "pending_approval", id), 1);
	/* The requester may not approve their own request. */
	r = ctl("grant", "approve", ids);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "another steward must approve"));
	free(r);
	assert_int_equal(e2e_audit_count("grant_approve", NULL, NULL, NULL, 0), 0);
	/* The audit report does not count a pending grant as in force... */
	report_has_grant(id, false);
	approve_as_bob(id);
	/* ...and does once it is approved. */
	report_has_grant(id, true);
	assert_int_equal(e2e_audit_count("grant_approve", TU_USER_BOB, "pend", NULL, id), 1);
	assert_reason("pend", "allow");
	alice_opens("pend", 0);
	/* Bob approved once; a second approval is refused. */
	r = ctl_as(&E->u.bob, "grant", "approve", ids);
	assert_int_equal(r->status, 1);
	free(r);
	/* The store's maximum grant length holds. */
	r = ctl("grant", "request", "--user", TU_USER_ALICE, "--dataset", "pend", "--purpose", "x",
		"--expires", "+31d");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "30 days"));
	free(r);
	/* The visa export holds the grant in force. */
	assert_true(exported(id));
}

/* A deny rule refuses an open that a grant allows; its removal restores access. */
static void test_deny_rule(void **state)
{
	uint64_t id, rule;
	char ids[32];
	struct e2e_run *r;
	json_t *j;

	(void)state;
	id = request("--user", TU_USER_ALICE, "deny", "general");
	approve_as_bob(id);
	alice_opens("deny", 0);
	r = e2e_ok(ctl("--json", "deny", "add", "--user", TU_USER_ALICE, "--dataset", "deny",
		       "--reason", "audit finding"));
	j = e2e_out_json(r);
	rule = (uint64_t)json_integer_value(json_object_get(json_object_get(j, "rule"), "id"));
	json_decref(j);
	free(r);
	assert_true(rule > 0);
	alice_opens("deny", EACCES);
	assert_int_equal(e2e_audit_count("open", TU_USER_ALICE, "deny", "denied_by_rule", 0), 1);
	j = check("deny");
	assert_string_equal(json_string_value(json_object_get(j, "reason")), "denied_by_rule");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "rule"), "id")), rule);
	json_decref(j);
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)rule);
	/* The same rule again is refused, naming the one in force. */
	r = ctl("deny", "add", "--user", TU_USER_ALICE, "--dataset", "deny", "--reason", "again");
	assert_int_equal(r->status, 1);
	{
		char *says = tu_fmt("deny rule %s already blocks user " TU_USER_ALICE " from deny",
				    ids);

		assert_non_null(strstr(r->err, says));
		free(says);
	}
	free(r);
	/* A removal needs a reason, and (approvals = 1) another steward. */
	r = ctl("deny", "remove", ids);
	assert_int_equal(r->status, 2);
	assert_non_null(strstr(r->err, "--reason TEXT is required"));
	free(r);
	r = e2e_ok(ctl("deny", "remove", ids, "--reason", "finding closed"));
	assert_non_null(strstr(r->out, "stays in force until another steward runs"));
	free(r);
	alice_opens("deny", EACCES);
	r = ctl("deny", "approve", ids);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "another steward must approve it"));
	free(r);
	r = e2e_ok(ctl("deny", "list"));
	assert_non_null(strstr(r->out, "removal_pending"));
	free(r);
	r = e2e_ok(ctl_as(&E->u.bob, "deny", "approve", ids));
	assert_non_null(strstr(r->out, "removed deny rule"));
	free(r);
	alice_opens("deny", 0);
	r = e2e_ok(ctl("deny", "show", ids));
	assert_non_null(strstr(r->out, "by root: finding closed"));
	assert_non_null(strstr(r->out, "  approvals 1 of 1\n    by " TU_USER_BOB));
	assert_non_null(strstr(r->out, "  state   removed\n"));
	free(r);
	assert_int_equal(e2e_audit_count("deny_add", NULL, "deny", NULL, 0), 1);
	assert_int_equal(e2e_audit_count("deny_remove", NULL, "deny", NULL, 0), 1);
	assert_int_equal(e2e_audit_count("deny_remove_approve", TU_USER_BOB, "deny", NULL, 0), 1);
}

/* NMDS refuses an AI-training request naming NMDS; an override is accepted and audited. */
static void test_nmds_consent(void **state)
{
	struct e2e_run *r;
	json_t *j;
	uint64_t id;

	(void)state;
	r = ctl("dataset", "show", "nmds");
	assert_int_equal(r->status, 0);
	assert_non_null(strstr(r->out, "NMDS (DUO:0000015)"));
	assert_non_null(strstr(r->out, "Example Biobank"));
	free(r);
	r = ctl("grant", "request", "--user", TU_USER_ALICE, "--dataset", "nmds", "--purpose",
		"sepsis model", "--purpose-code", "ai-training,health", "--expires", "+7d");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "consent code NMDS"));
	free(r);
	/* HMB: a purpose that is not health research is refused naming HMB. */
	r = ctl("grant", "request", "--user", TU_USER_ALICE, "--dataset", "nmds", "--purpose",
		"x", "--purpose-code", "general", "--expires", "+7d");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "consent code HMB"));
	free(r);
	r = e2e_ok(ctl("--json", "grant", "request", "--user", TU_USER_ALICE, "--dataset", "nmds",
		       "--purpose", "sepsis model", "--purpose-code", "ai-training,health",
		       "--override-consent", "DAC decision 2026-17", "--expires", "+7d"));
	j = e2e_out_json(r);
	id = (uint64_t)json_integer_value(json_object_get(json_object_get(j, "grant"), "id"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "grant"),
								"consent_override")),
			    "DAC decision 2026-17");
	json_decref(j);
	free(r);
	assert_int_equal(e2e_audit_count("grant_request", NULL, "nmds", NULL, id), 1);
	approve_as_bob(id);
	alice_opens("nmds", 0);
}

/* access check names each reason: no_grant, pending_approval, allow, purpose_excluded, revoked,
 * not_yet_valid (denied_by_rule in test_deny_rule; expired is covered by test_daemon and
 * test_policy, since the store's shortest grant is a day). */
static void test_access_check_reasons(void **state)
{
	uint64_t id;
	char ids[32];
	json_t *j, *rv;

	(void)state;
	assert_reason("why", "no_grant");
	id = request("--user", TU_USER_ALICE, "why", "ai-training,health");
	assert_reason("why", "pending_approval");
	approve_as_bob(id);
	j = check("why");
	assert_string_equal(json_string_value(json_object_get(j, "reason")), "allow");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "grant"), "id")), id);
	json_decref(j);
	/* The consent is amended to NMDS: the grant's purpose is now excluded. */
	e2e_ok_free(ctl("dataset", "set", "why", "--duo", "NMDS"));
	j = check("why");
	assert_string_equal(json_string_value(json_object_get(j, "reason")), "purpose_excluded");
	assert_string_equal(json_string_value(json_object_get(j, "code")), "NMDS");
	json_decref(j);
	alice_opens("why", EACCES);
	assert_int_equal(e2e_audit_count("open", TU_USER_ALICE, "why", "purpose_excluded", id), 1);
	e2e_ok_free(ctl("dataset", "set", "why", "--duo", ""));
	assert_reason("why", "allow");
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
	e2e_ok_free(ctl("grant", "revoke", ids, "--reason", "done"));
	assert_reason("why", "revoked");
	/* revoked says who revoked it, when and why. */
	j = check("why");
	/* (inside the grant: a grant has one shape wherever it is shown) */
	rv = json_object_get(json_object_get(j, "grant"), "revocation");
	assert_string_equal(json_string_value(json_object_get(rv, "by")), "root");
	assert_string_equal(json_string_value(json_object_get(rv, "reason")), "done");
	json_decref(j);
	{
		struct e2e_run *r = ctl("access", "check", "--user", TU_USER_ALICE, "--dataset",
					"why");

		assert_int_equal(r->status, 1);
		assert_non_null(strstr(r->out, "  revoked 20"));
		assert_non_null(strstr(r->out, " by root: done"));
		free(r);
	}
	/* A grant that starts later. */
	e2e_ok_free(ctl("grant", "request", "--user", TU_USER_ALICE, "--dataset", "why",
			"--purpose", "later", "--not-before", "+2d", "--expires", "+7d"));
	{
		struct e2e_run *r = e2e_ok(ctl("--json", "grant", "list", "--dataset", "why"));
		json_t *l = e2e_out_json(r), *g;
		size_t i;

		json_array_foreach(json_object_get(l, "grants"), i, g)
			if (strcmp(json_string_value(json_object_get(g, "state")),
				   "pending_approval") == 0)
				approve_as_bob((uint64_t)json_integer_value(json_object_get(g, "id")));
		json_decref(l);
		free(r);
	}
	assert_reason("why", "not_yet_valid");
	/* not_yet_valid says when the grant starts. */
	{
		struct e2e_run *r = ctl("access", "check", "--user", TU_USER_ALICE, "--dataset",
					"why");
		json_t *l = check("why");
		const char *nb = json_string_value(json_object_get(json_object_get(l, "grant"),
								   "not_before"));
		char *line = tu_fmt("  starts  %s\n", nb ? nb : "?");

		assert_int_equal(r->status, 1);
		assert_non_null(strstr(r->out, line));
		free(line);
		json_decref(l);
		free(r);
	}
}

/* Access through a supplementary group; removed from the group, a new process cannot read. */
static void test_group_membership(void **state)
{
	uint64_t id;

	(void)state;
	id = request("--group", TU_GROUP, "grp", "general");
	approve_as_bob(id);
	alice_opens("grp", ENOENT);   /* not a member: the dataset is not even visible */
	assert_int_equal(tu_group_member(TU_USER_ALICE, true), 0);
	alice_in_group = true;
	/* The daemon sees a change of the group database within its watch interval (250 ms) and
	 * keeps subjects for about a second: wait that out, as after the removal below. */
	sleep(2);
	assert_reason("grp", "allow");
	alice_opens("grp", 0);
	assert_int_equal(tu_group_member(TU_USER_ALICE, false), 0);
	alice_in_group = false;
	/* The daemon keeps subjects for about a second: wait that out. */
	sleep(2);
	assert_reason("grp", "no_grant");
	alice_opens("grp", ENOENT);
}

/* grant request says how many approvals it waits for (not its id), and warns when no steward
 * could approve it (root requests for bob, the only other steward). */
static void test_request_message(void **state)
{
	struct e2e_run *r;
	unsigned long long id = 0;

	(void)state;
	r = e2e_ok(ctl("grant", "request", "--user", TU_USER_ALICE, "--dataset", "msg",
		       "--purpose", "p", "--expires", "+7d"));
	assert_int_equal(sscanf(r->out, "requested grant %llu:", &id), 1);
	/* Earlier cases made grants, so the id is not the count it used to be mistaken for. */
	assert_true(id > 1);
	assert_non_null(strstr(r->out, "once approved by 1 other steward(s)\n"));
	assert_null(strstr(r->err, "warning"));
	free(r);
	r = e2e_ok(ctl("--json", "grant", "request", "--user", TU_USER_BOB, "--dataset", "msg",
		       "--purpose", "p", "--expires", "+7d"));
	assert_non_null(strstr(r->err, "warning: grant "));
	assert_non_null(strstr(r->err, "needs 1 approval(s), but only 0 steward(s) other than "
					"its requester and grantee exist"));
	{
		json_t *j = e2e_out_json(r);

		assert_int_equal(json_integer_value(json_object_get(j, "eligible_approvers")), 0);
		json_decref(j);
	}
	free(r);
}

/* access check: a version that does not exist is an error; a numeric uid without a passwd entry
 * works as grant request takes it. */
static void test_access_check_inputs(void **state)
{
	struct e2e_run *r;
	uint64_t id;
	json_t *j;

	(void)state;
	r = ctl("access", "check", "--user", TU_USER_ALICE, "--dataset", "msg@9");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "has no version 9"));
	free(r);
	r = ctl("access", "check", "--user", TU_USER_ALICE, "--dataset", "self@1");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->out, "reason  no_grant"));
	free(r);
	r = ctl("--json", "access", "check", "--user", "4242", "--dataset", "msg");
	assert_int_equal(r->status, 1);
	j = e2e_out_json(r);
	assert_string_equal(json_string_value(json_object_get(j, "reason")), "no_grant");
	assert_int_equal(json_integer_value(json_object_get(j, "uid")), 4242);
	json_decref(j);
	free(r);
	id = request("--user", "4242", "msg", "general");
	approve_as_bob(id);
	r = ctl("access", "check", "--user", "4242", "--dataset", "msg");
	assert_int_equal(r->status, 0);
	assert_non_null(strstr(r->out, "allow: 4242 may read msg"));
	free(r);
}

/* Anyone may ask about themselves (recorded); asking about another user needs a role; a dataset
 * that does not exist looks like one without a grant. */
static void test_self_check(void **state)
{
	struct e2e_run *r;
	uint64_t id;
	int before = e2e_audit_count("access_check", TU_USER_ALICE, NULL, NULL, 0);

	(void)state;
	r = ctl_as(&E->u.alice, "access", "check", "--dataset", "self");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->out, "deny: " TU_USER_ALICE " may not read self"));
	assert_non_null(strstr(r->out, "no_grant"));
	free(r);
	id = request("--user", TU_USER_ALICE, "self", "general");
	r = ctl_as(&E->u.alice, "access", "check", "--dataset", "self");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->out, "pending_approval"));
	free(r);
	approve_as_bob(id);
	e2e_ok_free(ctl_as(&E->u.alice, "access", "check", "--dataset", "self"));
	e2e_ok_free(ctl_as(&E->u.alice, "access", "check", "--user", TU_USER_ALICE, "--dataset",
			   "self"));
	/* Recorded: the same question asked twice in the window is one record (a caller without
	 * a role is rate-limited, docs/AUDIT.md section 4), so three records for four checks. */
	assert_int_equal(e2e_audit_count("access_check", TU_USER_ALICE, "self", "allow", id), 1);
	assert_int_equal(e2e_audit_count("access_check", TU_USER_ALICE, NULL, NULL, 0), before + 3);
	/* Someone else: refused, and nothing is said about them. */
	r = ctl_as(&E->u.alice, "access", "check", "--user", TU_USER_BOB, "--dataset", "self");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "needs the steward or auditor role"));
	assert_null(strstr(r->out, "deny"));
	free(r);
	/* A dataset that does not exist answers as one without a grant. */
	r = ctl_as(&E->u.alice, "--json", "access", "check", "--dataset", "no-such-dataset");
	assert_int_equal(r->status, 1);
	assert_null(strstr(r->err, "no dataset"));
	free(r);
	r = ctl_as(&E->u.carol, "access", "check", "--dataset", "self");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->out, "no_grant"));
	free(r);
}

/* Does r's output hold needle? Prints the output when not. */
static void expect_out(const struct e2e_run *r, const char *needle)
{
	if (!strstr(r->out, needle))
		fprintf(stderr, "expected \"%s\" in:\n%s\nstderr: %s\n", needle, r->out, r->err);
	assert_non_null(strstr(r->out, needle));
}

/* The ids `grant list ARGS --json` lists, as " 3 7 " (each id with a space before and after). */
static char *listed(char *const extra[])
{
	char *argv[16] = { ENCLAVECTL_PATH, "--store", E->store, "--json", "grant", "list" };
	size_t n = 6;
	struct e2e_run *r;
	json_t *j, *g;
	struct buf b;
	size_t i;

	for (i = 0; extra[i]; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	r = e2e_ok(e2e_run_argv(NULL, argv));
	j = e2e_out_json(r);
	buf_init(&b, 1 << 16);
	assert_int_equal(buf_append(&b, " ", 1), 0);
	json_array_foreach(json_object_get(j, "grants"), i, g) {
		char id[32];
		int len = snprintf(id, sizeof(id), "%" JSON_INTEGER_FORMAT " ",
				   json_integer_value(json_object_get(g, "id")));

		assert_int_equal(buf_append(&b, id, (size_t)len), 0);
	}
	json_decref(j);
	free(r);
	assert_int_equal(buf_u8(&b, 0), 0);
	return (char *)b.data;   /* the buffer's, now the caller's */
}

static bool lists(char *const extra[], uint64_t id)
{
	char *ids = listed(extra), needle[32];
	bool found;

	snprintf(needle, sizeof(needle), " %llu ", (unsigned long long)id);
	found = strstr(ids, needle) != NULL;
	free(ids);
	return found;
}

/* grant show: what an approver needs, before and after approval; grant list filters. */
static void test_grant_show_and_filters(void **state)
{
	struct e2e_run *r;
	uint64_t id, gid_grant;
	char ids[32];
	json_t *j, *e;
	size_t i;
	bool approved = false;

	(void)state;
	id = request("--user", TU_USER_ALICE, "show", "health");
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
	r = e2e_ok(ctl_as(&E->u.bob, "grant", "show", ids));
	expect_out(r, "may read show@all");
	expect_out(r, "  state             pending_approval\n");
	expect_out(r, "  purpose           model training\n");
	expect_out(r, "  purpose codes     health\n");
	expect_out(r, "  requested by      root (uid 0) at 20");
	expect_out(r, "  approvals         0 of 1\n");
	expect_out(r, "requested  by root");
	free(r);
	approve_as_bob(id);
	r = e2e_ok(ctl("--json", "grant", "show", ids));
	j = e2e_out_json(r);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "grant"),
								"state")), "active");
	assert_int_equal(json_array_size(json_object_get(j, "approvals")), 1);
	json_array_foreach(json_object_get(j, "history"), i, e)
		approved |= strcmp(json_string_value(json_object_get(e, "event")), "approved") == 0 &&
			    strcmp(json_string_value(json_object_get(e, "by")), TU_USER_BOB) == 0;
	assert_true(approved);
	json_decref(j);
	free(r);
	r = e2e_ok(ctl("grant", "show", ids));
	expect_out(r, "  approvals         1 of 1\n    by " TU_USER_BOB " (uid ");
	free(r);
	/* A consent override and its reason are shown. */
	r = e2e_ok(ctl("--json", "grant", "request", "--user", TU_USER_ALICE, "--dataset", "nmds",
		       "--purpose", "x", "--purpose-code", "ai-training,health",
		       "--override-consent", "DAC minute 9", "--expires", "+2d"));
	j = e2e_out_json(r);
	snprintf(ids, sizeof(ids), "%" JSON_INTEGER_FORMAT,
		 json_integer_value(json_object_get(json_object_get(j, "grant"), "id")));
	json_decref(j);
	free(r);
	r = e2e_ok(ctl("grant", "show", ids));
	expect_out(r, "  consent override  DAC minute 9\n");
	free(r);
	r = ctl("grant", "show", "999999");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "no grant with id 999999"));
	free(r);

	/* Filters: grantee (user, with its groups' grants; group), dataset, state. */
	gid_grant = request("--group", TU_GROUP, "show", "general");
	assert_true(lists((char *[]){ "--user", TU_USER_ALICE, "--dataset", "show", NULL }, id));
	assert_false(lists((char *[]){ "--user", TU_USER_ALICE, "--dataset", "show", NULL },
			   gid_grant));
	assert_false(lists((char *[]){ "--user", TU_USER_CAROL, NULL }, id));
	assert_true(lists((char *[]){ "--user", TU_USER_CAROL, NULL }, gid_grant));
	assert_true(lists((char *[]){ "--group", TU_GROUP, NULL }, gid_grant));
	assert_false(lists((char *[]){ "--group", TU_GROUP, NULL }, id));
	assert_true(lists((char *[]){ "--state", "pending_approval", "--dataset", "show", NULL },
			  gid_grant));
	assert_false(lists((char *[]){ "--state", "pending_approval", NULL }, id));
	assert_true(lists((char *[]){ "--state", "active", NULL }, id));
	assert_false(lists((char *[]){ "--dataset", "pend", NULL }, id));
	r = ctl("grant", "list", "--dataset", "nosuch");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "no dataset named"));
	free(r);
	r = ctl("grant", "list", "--user", "no-such-user-enclave");
	assert_int_equal(r->status, 1);
	free(r);
	r = ctl("grant", "list", "--state", "bogus");
	assert_int_equal(r->status, 2);
	free(r);
}

/* New consent codes that exclude an approved grant suspend it: dataset set names it, grant
 * list/show say so, no visa is exported, the report does not count it in force; codes that
 * allow it again resume it. A TS: date in the past is refused. */
static void test_consent_suspends(void **state)
{
	struct e2e_run *r;
	uint64_t id;
	char ids[32], *line;
	json_t *j;

	(void)state;
	id = request("--user", TU_USER_ALICE, "susp", "ai-training,health");
	approve_as_bob(id);
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
	assert_true(exported(id));
	report_has_grant(id, true);
	r = e2e_ok(ctl("dataset", "set", "susp", "--duo", "NMDS"));
	line = tu_fmt("  suspends grant %s (user:" TU_USER_ALICE "): consent code NMDS "
		      "(DUO:0000015) excludes purpose ai-training,health\n", ids);
	expect_out(r, line);
	free(line);
	free(r);
	r = e2e_ok(ctl("grant", "list", "--dataset", "susp"));
	expect_out(r, "suspended (consent: NMDS)");
	free(r);
	r = e2e_ok(ctl("--json", "grant", "show", ids));
	j = e2e_out_json(r);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "grant"),
								"state")), "suspended");
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "grant"),
								"consent_code")), "NMDS");
	json_decref(j);
	free(r);
	r = e2e_ok(ctl("grant", "show", ids));
	expect_out(r, "suspended  by root: consent code NMDS (DUO:0000015)");
	free(r);
	assert_false(exported(id));
	report_has_grant(id, false);
	alice_opens("susp", EACCES);
	/* Allowed again. */
	r = e2e_ok(ctl("dataset", "set", "susp", "--duo", ""));
	line = tu_fmt("  resumes grant %s:", ids);
	expect_out(r, line);
	free(line);
	free(r);
	assert_true(exported(id));
	report_has_grant(id, true);
	/* A time limit already past: refused, nothing changed. */
	r = ctl("dataset", "set", "susp", "--duo", "TS:2020-01-01");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "TS:2020-01-01 (time limit on use) is in the past"));
	free(r);
	assert_true(exported(id));
}

/* Run tests/visa_check.py (PyJWT and python3-cryptography) on the current export and JWKS. */
static void visa_check(void)
{
	char *jwks = tu_fmt("%s/jwks.json", E->root), *exp = tu_fmt("%s/visas.json", E->root);
	struct e2e_run *r = e2e_ok(ctl("grant", "export", "--jwks"));
	int n = 0;

	tu_write_file(jwks, r->out, strlen(r->out));
	free(r);
	r = e2e_ok(ctl("--json", "grant", "export", "--format", "ga4gh-visa"));
	tu_write_file(exp, r->out, strlen(r->out));
	free(r);
	r = e2e_run_argv(NULL, (char *const[]){ "/usr/bin/python3", VISA_CHECK_PY, jwks, exp, VISA_ISSUER,
						NULL });
	if (r->status != 0)
		fprintf(stderr, "visa_check: %s%s\n", r->out, r->err);
	assert_int_equal(r->status, 0);
	assert_int_equal(sscanf(r->out, "ok: %d visas", &n), 1);
	assert_true(n >= 1);
	free(r);
	free(jwks);
	free(exp);
}

/* Signed visas, checked by an independent JWT implementation; the JWKS is public; the export is
 * recorded; a damaged key file stops the export; a store without a visa key (made before visas
 * were signed) gets one on the first export, recorded. */
static void test_visa_signed(void **state)
{
	char *key = tu_fmt("%s/keys/visa.key", E->store), *save;
	struct e2e_run *r;
	struct stat st;
	uint8_t *bytes;
	size_t n;
	uint64_t id;
	json_t *j;
	char kid1[64] = "", kid2[64] = "";

	(void)state;
	assert_int_equal(stat(key, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	id = request("--user", TU_USER_CAROL, "show", "health");
	approve_as_bob(id);
	assert_true(exported(id));
	visa_check();
	assert_true(e2e_audit_count("visa_export", "root", NULL, NULL, 0) >= 2);
	/* One JWT per line in text form. */
	r = e2e_ok(ctl("grant", "export", "--format", "ga4gh-visa"));
	assert_non_null(strstr(r->out, "eyJ"));
	assert_int_equal(strspn(r->out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					"0123456789-_.\n"), strlen(r->out));
	free(r);
	/* Anyone may read the JWKS; only stewards and auditors export. */
	r = e2e_ok(ctl_as(&E->u.alice, "grant", "export", "--jwks"));
	j = e2e_out_json(r);
	snprintf(kid1, sizeof(kid1), "%s",
		 json_string_value(json_object_get(json_array_get(json_object_get(j, "keys"), 0),
						   "kid")));
	assert_null(json_object_get(json_array_get(json_object_get(j, "keys"), 0), "d"));
	json_decref(j);
	free(r);
	r = ctl_as(&E->u.alice, "grant", "export", "--format", "ga4gh-visa");
	assert_int_equal(r->status, 1);
	free(r);
	/* The wrapped key altered: no visa is signed. */
	bytes = tu_read_file(key, &n);
	save = malloc(n);
	memcpy(save, bytes, n);
	bytes[20] ^= 0x01;
	tu_write_file(key, bytes, n);
	r = ctl("grant", "export", "--format", "ga4gh-visa");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "does not unwrap"));
	free(r);
	/* No key at all, as in a store made before visas were signed: the first export makes
	 * one, and says so in the audit log. */
	assert_int_equal(unlink(key), 0);
	r = ctl_as(&E->u.alice, "grant", "export", "--jwks");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "no visa signing key yet"));
	free(r);
	assert_int_equal(e2e_audit_count("visa_key_create", NULL, NULL, NULL, 0), 0);
	visa_check();
	assert_int_equal(e2e_audit_count("visa_key_create", "root", NULL, NULL, 0), 1);
	r = e2e_ok(ctl("grant", "export", "--jwks"));
	j = e2e_out_json(r);
	snprintf(kid2, sizeof(kid2), "%s",
		 json_string_value(json_object_get(json_array_get(json_object_get(j, "keys"), 0),
						   "kid")));
	json_decref(j);
	free(r);
	assert_string_not_equal(kid1, kid2);
	free(bytes);
	free(save);
	free(key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_approve),
		cmocka_unit_test(test_deny_rule),
		cmocka_unit_test(test_nmds_consent),
		cmocka_unit_test(test_access_check_reasons),
		cmocka_unit_test(test_group_membership),
		cmocka_unit_test(test_request_message),
		cmocka_unit_test(test_access_check_inputs),
		cmocka_unit_test(test_self_check),
		cmocka_unit_test(test_grant_show_and_filters),
		cmocka_unit_test(test_consent_suspends),
		cmocka_unit_test(test_visa_signed),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
