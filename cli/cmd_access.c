/* enclavectl access check: "why?" -- the decision the daemon would make for a user now, with the
 * grant that allows it or the typed reason it is refused (docs/POLICY.md section 4). */
#include <stdio.h>
#include <string.h>

#include "cli/enclavectl.h"
#include "common/common.h"
#include "policy/policy.h"
#include "store/store.h"

static const char check_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] access check [--user NAME] --dataset NAME[@VERSION]\n\n"
	"Say whether user NAME (with all its groups, as the system reports them now) may read\n"
	"the dataset now, and why: the grant that allows it, or the reason it is refused\n"
	"(no_grant, pending_approval, expired, not_yet_valid, revoked, denied_by_rule,\n"
	"purpose_excluded) and the grant, deny rule or consent code it is about: when a grant\n"
	"starts, who revoked it, when and why. Without --user, the user running the command\n"
	"(anyone may check their own access); another user: stewards and auditors only. Every\n"
	"check is recorded in the audit log. A version that does not exist is an error.\n"
	"Exit status 0: allowed; 1: refused (or an error).\n\n"
	"Options:\n"
	"  --user NAME              a user name or numeric uid (a uid without a passwd entry\n"
	"                           is checked with no groups); default: yourself\n"
	"  --dataset NAME[@VERSION] the dataset, and optionally one version\n"
	"  --json                   print the decision as JSON\n"
	"  -h, --help               show this help\n";

enum { OPT_USER = 0x200, OPT_DATASET };

struct check_args {
	const char *user;
	const char *dataset;
};

static int on_opt(void *ctx, int val, const char *arg)
{
	struct check_args *a = ctx;

	if (val == OPT_USER)
		a->user = arg;
	else if (val == OPT_DATASET)
		a->dataset = arg;
	else
		return EXIT_USAGE;
	return 0;
}

static int access_check(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "user", required_argument, NULL, OPT_USER },
		{ "dataset", required_argument, NULL, OPT_DATASET },
		{ 0 },
	};
	char name[STORE_DATASET_NAME_MAX + 1], what[200], s1[24], s2[24], s3[24], text[1100];
	struct check_args a = { 0 };
	struct reply rep = { 0 };
	const json_t *g, *x, *rv;
	const char *user;
	uint32_t version = 0;
	bool allowed;
	json_t *args;
	int first, r;

	r = ctl_parse(ctl, "access check", check_usage, argc, argv, opts, on_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("access check", "unexpected argument '%s'", argv[first]);
	if (a.user && (!*a.user || strlen(a.user) > POLICY_NAME_MAX))
		return ctl_usage_error("access check", "--user NAME: 1 to %d bytes",
				       POLICY_NAME_MAX);
	if (!a.dataset)
		return ctl_usage_error("access check", "--dataset NAME[@VERSION] is required");
	r = ctl_parse_dataset("access check", a.dataset, name, &version);
	if (r)
		return r;
	args = json_pack("{s:s, s:I}", "dataset", name, "version", (json_int_t)version);
	if (args && a.user && json_object_set_new(args, "user", json_string(a.user)) < 0)
		json_decref(args), args = NULL;
	if (!args)
		return ctl_fail("access check", "out of memory");
	snprintf(what, sizeof(what), "access check%s%.64s", a.user ? " " : "",
		 a.user ? a.user : "");
	r = ctl_call(ctl, what, "access.check", args, NULL, NULL, &rep);
	if (r)
		return r;
	allowed = strcmp(out_member(rep.result, "decision", s1), "allow") == 0;
	if (ctl->json) {
		r = ctl_print_json(&rep);
		return r ? r : (allowed ? 0 : 1);
	}
	user = out_member(rep.result, "user", s1);
	printf("%s: %s may%s read %s%s%s\n", allowed ? "allow" : "deny",
	       *user ? out_text(user, 64, text, sizeof(text))
		     : out_member(rep.result, "uid", s3),
	       allowed ? "" : " not", name, version ? "@" : "",
	       version ? out_member(rep.result, "version", s2) : "");
	printf("  reason  %s (%s)\n", out_member(rep.result, "reason", s1),
	       out_member(rep.result, "text", s2));
	g = json_object_get(rep.result, "grant");
	if (json_is_object(g)) {
		printf("  grant   %s, %s:%s, expires %s\n", out_member(g, "id", s1),
		       out_member(g, "kind", s2),
		       out_text(out_member(g, "principal", s1), 64, text, sizeof(text)),
		       out_member(g, "expires", s2));
		printf("  purpose %s [%s]\n", out_text(out_member(g, "purpose", s1), 80, text,
						       sizeof(text)),
		       out_member(g, "purpose_code", s2));
		if (strcmp(out_member(rep.result, "reason", s1), "not_yet_valid") == 0)
			printf("  starts  %s\n", out_member(g, "not_before", s2));
	}
	rv = json_object_get(g, "revocation");
	if (json_is_object(rv)) {
		printf("  revoked %s by %s", out_member(rv, "at", s1),
		       out_text(out_member(rv, "by", s2), 64, text, sizeof(text)));
		printf(": %s\n", *out_member(rv, "reason", s1)
					 ? out_text(out_member(rv, "reason", s1), 0, text, sizeof(text))
					 : "(no reason given)");
	}
	x = json_object_get(rep.result, "rule");
	if (json_is_object(x))
		printf("  rule    %s: %s\n", out_member(x, "id", s1),
		       out_text(out_member(x, "reason", s2), 0, text, sizeof(text)));
	if (json_object_get(rep.result, "code"))
		printf("  code    %s (%s)\n", out_member(rep.result, "code", s1),
		       out_member(rep.result, "code_id", s2));
	reply_clear(&rep);
	return allowed ? 0 : 1;
}

const struct ctl_cmd access_cmds[] = {
	{ "check", access_check, "[--user NAME] --dataset D", "why a user (or you) may or may not read" },
	{ 0 },
};
