/* enclavectl grant request (add) | approve | list | revoke | export: who may read which dataset,
 * for what, until when, approved by whom.
 *
 * Times are given as people write them ("+90d", "2026-12-31", RFC 3339) and sent as absolute
 * RFC 3339 UTC, so what the daemon records is exactly what the steward saw echoed back.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"
#include "policy/policy.h"
#include "store/store.h"

/* Purposes longer than this are cut in the table (the JSON has them whole). */
#define PURPOSE_COLUMN 40

static const char add_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] grant request (--user NAME | --group NAME)\n"
	"           --dataset NAME[@VERSION] --purpose TEXT --expires WHEN [--not-before WHEN]\n"
	"           [--purpose-code TERMS] [--override-consent REASON] [--dry-run]\n\n"
	"Request that a user, or every member of a group, may read a dataset: one VERSION, or\n"
	"every version (present and future) without @VERSION. The grant is valid from\n"
	"--not-before (default: now) until --expires, which is required and at most the store's\n"
	"max_grant_days away. It is in force once as many other stewards as the store's\n"
	"`approvals` setting asks for have run 'grant approve ID' (at once when it is 0).\n"
	"'grant add' is the same command. Stewards only.\n\n"
	"Options:\n"
	"  --user NAME            a user name or a numeric uid\n"
	"  --group NAME           a group name or a numeric gid\n"
	"  --dataset NAME[@VERSION]\n"
	"                         the dataset, and optionally one version of it\n"
	"  --purpose TEXT         why access is granted (required, recorded in the audit trail)\n"
	"  --purpose-code TERMS   the purpose as terms the dataset's consent codes are checked\n"
	"                         against, comma-separated: general (the default), health,\n"
	"                         ds:<disease>, methods, ai-training, population, ancestry,\n"
	"                         genetic, commercial, for-profit\n"
	"  --override-consent REASON\n"
	"                         record an explicit override of an NMDS consent code that\n"
	"                         excludes the purpose (audited)\n"
	"  --expires WHEN         when the grant stops being valid (required)\n"
	"  --not-before WHEN      when it starts being valid\n"
	"  --dry-run              make every check the daemon makes (names, dataset, consent\n"
	"                         codes, expiry) and show the grant, without recording it\n"
	"  --json                 print the new grant as JSON\n"
	"  -h, --help             show this help\n\n"
	"WHEN is RFC 3339 (2026-12-31T23:59:59Z, or with +hh:mm), a date (2026-12-31, midnight\n"
	"UTC), \"now\", or relative to now: +N followed by s, m, h, d or w (+90d).\n";

static const char list_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] grant list [--dataset NAME] [--user NAME]\n"
	"           [--group NAME] [--state STATE] [--all]\n\n"
	"List grants, by id: those in force, pending, suspended or not yet valid, or with --all\n"
	"also the expired and revoked ones. STATE is the effective state: active,\n"
	"pending_approval, not_yet_valid, suspended (the dataset's consent codes now exclude\n"
	"the grant's purpose; shown with the code), expired or revoked. Stewards and auditors\n"
	"only.\n\n"
	"Options:\n"
	"  --dataset NAME   only the grants of this dataset (it must exist)\n"
	"  --user NAME      only the grants that reach this user: its own and its groups'\n"
	"  --group NAME     only the grants to this group\n"
	"  --state STATE    only grants in this state (any state: implies --all)\n"
	"  --all            include expired and revoked grants\n"
	"  --json           print the daemon's answer as JSON (purposes in full)\n"
	"  -h, --help       show this help\n";

static const char show_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] grant show ID\n\n"
	"Everything about grant ID, for an approver or an auditor: its grantee and dataset, its\n"
	"purpose and purpose codes, any consent override and its reason, who requested it, its\n"
	"window, its effective state, the approvals so far (who, when) and its history\n"
	"(requested, approved, valid from, suspended, revoked, expires). Stewards and auditors\n"
	"only.\n\n"
	"Options:\n"
	"  --json           print the grant, its approvals and history as JSON\n"
	"  -h, --help       show this help\n";

static const char approve_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] grant approve ID\n\n"
	"Approve pending grant ID. The steward who requested it, and its grantee, cannot.\n"
	"Stewards only.\n\n"
	"Options:\n"
	"  --json           print the grant and its approvals as JSON\n"
	"  -h, --help       show this help\n";

static const char export_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] grant export --format ga4gh-visa\n"
	"       enclavectl [GLOBAL OPTIONS] grant export --jwks\n\n"
	"Print every user grant in force as a signed GA4GH Passport v1.2 visa\n"
	"(ControlledAccessGrants): a JWT (JWS compact serialization) signed ES256 with the\n"
	"store's visa key, one per line. Its iss is the store's visa_issuer (enclave.conf),\n"
	"sub the user, value ISSUER/datasets/NAME[/versions/N], source ISSUER, by dac, exp the\n"
	"grant's expiry; the header's jku is ISSUER/jwks.json and kid the key's thumbprint.\n"
	"Suspended, pending, not yet valid, expired and revoked grants get no visa, nor do group\n"
	"grants (a visa names one person). Every export is an audit record. Stewards and\n"
	"auditors only.\n\n"
	"--jwks prints the public key as a JWK Set, to publish at ISSUER/jwks.json so that\n"
	"anyone can check the visas (anyone may run it).\n\n"
	"Options:\n"
	"  --format FORMAT  ga4gh-visa (the only one)\n"
	"  --jwks           print the JWKS instead\n"
	"  --json           the visas as JSON, with their grant ids and subjects\n"
	"  -h, --help       show this help\n";

static const char revoke_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] grant revoke ID [--reason TEXT]\n\n"
	"Revoke grant ID at once: the next open under it is refused. Stewards only.\n\n"
	"Options:\n"
	"  --reason TEXT    why (recorded with the revocation)\n"
	"  --json           print the revocation as JSON\n"
	"  -h, --help       show this help\n";

enum {
	OPT_USER = 0x200,
	OPT_GROUP,
	OPT_DATASET,
	OPT_PURPOSE,
	OPT_EXPIRES,
	OPT_NOT_BEFORE,
	OPT_ALL,
	OPT_REASON,
	OPT_PURPOSE_CODE,
	OPT_OVERRIDE,
	OPT_FORMAT,
	OPT_STATE,
	OPT_JWKS,
	OPT_DRY_RUN,
};

/* "user:alice" */
static const char *principal_text(const json_t *g, char out[static 160])
{
	char s1[24], s2[24];
	const char *kind = out_member(g, "kind", s1);

	if (!*kind)
		kind = out_member(g, "principal_kind", s1);
	snprintf(out, 160, "%s:%s", *kind ? kind : "?", out_member(g, "principal", s2));
	return out;
}

/* "genomes@3", "genomes@all" */
static const char *dataset_text(const json_t *g, char out[static 160])
{
	char s1[24];
	uint64_t v = 0;

	snprintf(out, 160, "%s@", out_member(g, "dataset", s1));
	if (out_member_u64(g, "version", &v) && v)
		snprintf(out + strlen(out), 160 - strlen(out), "%" PRIu64, v);
	else
		snprintf(out + strlen(out), 160 - strlen(out), "all");
	return out;
}

/* ---- add ----------------------------------------------------------------------------------- */

struct add_args {
	const char *kind;        /* "user" or "group" */
	const char *principal;
	const char *dataset;     /* NAME[@VERSION] as given */
	const char *purpose;
	const char *expires;
	const char *not_before;
	const char *purpose_code;  /* or NULL */
	const char *override;      /* --override-consent, or NULL */
	bool dry_run;              /* --dry-run */
	const char *what;          /* "grant request" or "grant add", for messages */
};

static int on_add_opt(void *ctx, int val, const char *arg)
{
	struct add_args *a = ctx;

	switch (val) {
	case OPT_USER:
	case OPT_GROUP:
		if (a->kind)
			return ctl_usage_error(a->what, "give one of --user and --group, once");
		a->kind = val == OPT_USER ? "user" : "group";
		a->principal = arg;
		return 0;
	case OPT_DATASET:
		a->dataset = arg;
		return 0;
	case OPT_PURPOSE:
		a->purpose = arg;
		return 0;
	case OPT_EXPIRES:
		a->expires = arg;
		return 0;
	case OPT_NOT_BEFORE:
		a->not_before = arg;
		return 0;
	case OPT_PURPOSE_CODE: {
		struct policy_purpose pp;

		if (!*arg || strlen(arg) > POLICY_PURPOSE_CODE_MAX)
			return ctl_usage_error(a->what, "--purpose-code: 1 to %d bytes",
					       POLICY_PURPOSE_CODE_MAX);
		/* The terms are checked here: an unknown one is a usage error (exit 2). */
		err_clear();
		if (policy_purpose_parse(arg, &pp) < 0)
			return ctl_usage_error(a->what, "--purpose-code: %s", err_detail());
		a->purpose_code = arg;
		return 0;
	}
	case OPT_DRY_RUN:
		a->dry_run = true;
		return 0;
	case OPT_OVERRIDE:
		if (!*arg || strlen(arg) > POLICY_REASON_MAX || !out_utf8_valid(arg, strlen(arg)))
			return ctl_usage_error(a->what, "--override-consent: a reason of 1 "
					       "to %d bytes of UTF-8", POLICY_REASON_MAX);
		a->override = arg;
		return 0;
	}
	return EXIT_USAGE;
}

/* WHEN -> unix seconds and RFC 3339 text. EXIT_USAGE after a message naming what. */
static int parse_when(const char *what, const char *opt, const char *s, int64_t now,
		      int64_t *ret_t, char out[static TIME_TEXT_MAX])
{
	char shown[64];
	int64_t t;
	int r;

	err_clear();
	r = time_parse(s, now, &t);
	if (r < 0)
		return ctl_usage_error(what, "%s '%s': %s", opt, out_text(s, 40, shown, 64),
				       *err_detail() ? err_detail() : "not a time");
	time_format(t, out);
	*ret_t = t;
	return 0;
}

static int grant_add(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "user", required_argument, NULL, OPT_USER },
		{ "group", required_argument, NULL, OPT_GROUP },
		{ "dataset", required_argument, NULL, OPT_DATASET },
		{ "purpose", required_argument, NULL, OPT_PURPOSE },
		{ "expires", required_argument, NULL, OPT_EXPIRES },
		{ "not-before", required_argument, NULL, OPT_NOT_BEFORE },
		{ "purpose-code", required_argument, NULL, OPT_PURPOSE_CODE },
		{ "override-consent", required_argument, NULL, OPT_OVERRIDE },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		{ 0 },
	};
	/* Errors name the command as it was typed: grant request, or its synonym grant add. */
	const char *cmd = strcmp(argv[0], "add") == 0 ? "grant add" : "grant request";
	struct add_args a = { .what = cmd };
	struct reply rep = { 0 };
	char name[STORE_DATASET_NAME_MAX + 1], expires[TIME_TEXT_MAX];
	char not_before[TIME_TEXT_MAX] = "";
	char what[200], p[160], d[160], text[1100], s1[24], s2[24];
	int64_t now = (int64_t)time(NULL), t_exp = 0, t_nb = now;
	const json_t *g;
	uint32_t version = 0;
	json_t *args;
	int first, r;

	r = ctl_parse(ctl, cmd, add_usage, argc, argv, opts, on_add_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error(cmd, "unexpected argument '%s'", argv[first]);
	if (!a.kind)
		return ctl_usage_error(cmd, "--user NAME or --group NAME is required");
	if (!a.dataset)
		return ctl_usage_error(cmd, "--dataset NAME[@VERSION] is required");
	if (!a.purpose || !*a.purpose)
		return ctl_usage_error(cmd, "--purpose TEXT is required (and not empty)");
	if (!a.expires)
		return ctl_usage_error(cmd, "--expires WHEN is required: every grant ends");
	if (!*a.principal || strlen(a.principal) > POLICY_NAME_MAX)
		return ctl_usage_error(cmd, "--%s: a name or id of 1 to %d bytes", a.kind,
				       POLICY_NAME_MAX);
	if (strlen(a.purpose) > POLICY_PURPOSE_MAX ||
	    !out_utf8_valid(a.purpose, strlen(a.purpose)))
		return ctl_usage_error(cmd, "--purpose: not valid UTF-8, or longer than "
				       "%d bytes", POLICY_PURPOSE_MAX);
	if (!out_utf8_valid(a.principal, strlen(a.principal)))
		return ctl_usage_error(cmd, "--%s: not valid UTF-8", a.kind);
	r = parse_when(cmd, "--expires", a.expires, now, &t_exp, expires);
	if (r)
		return r;
	if (a.not_before) {
		r = parse_when(cmd, "--not-before", a.not_before, now, &t_nb, not_before);
		if (r)
			return r;
	}
	if (t_exp <= now)
		return ctl_usage_error(cmd, "--expires %s is not in the future", expires);
	if (t_exp <= t_nb)
		return ctl_usage_error(cmd, "--expires %s is not after --not-before %s",
				       expires, not_before);
	r = ctl_parse_dataset(cmd, a.dataset, name, &version);
	if (r)
		return r;

	args = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "principal_kind", a.kind, "principal",
			 a.principal, "dataset", name, "version", (json_int_t)version, "purpose",
			 a.purpose, "expires", expires);
	if (args && a.not_before &&
	    json_object_set_new(args, "not_before", json_string(not_before)) < 0)
		json_decref(args), args = NULL;
	if (args && a.purpose_code &&
	    json_object_set_new(args, "purpose_code", json_string(a.purpose_code)) < 0)
		json_decref(args), args = NULL;
	if (args && a.override &&
	    json_object_set_new(args, "override_consent", json_string(a.override)) < 0)
		json_decref(args), args = NULL;
	if (!args)
		return ctl_fail(cmd, "out of memory");
	if (args && a.dry_run && json_object_set_new(args, "dry_run", json_true()) < 0)
		json_decref(args), args = NULL;
	if (!args)
		return ctl_fail(cmd, "out of memory");
	snprintf(what, sizeof(what), "%s %s:%.64s", cmd, a.kind, a.principal);
	/* Both ops are one on the daemon; "grant add" keeps the op it always sent. */
	r = ctl_call(ctl, what, strcmp(argv[0], "request") == 0 ? "grant.request" : "grant.add", args,
		     NULL, NULL, &rep);
	if (r)
		return r;
	g = json_object_get(rep.result, "grant");
	if (json_is_string(json_object_get(rep.result, "warning")))
		fprintf(stderr, "enclavectl: %s: warning: %s\n", cmd,
			out_text(json_string_value(json_object_get(rep.result, "warning")), 0, text,
				 sizeof(text)));
	if (ctl->json) {
		r = out_json(rep.result) < 0;
	} else if (!json_is_object(g)) {
		r = ctl_fail(what, "protocol error: the reply has no \"grant\"");
	} else {
		const char *state = out_member(g, "state", s1);

		/* One scratch buffer per member printed together: out_member() formats into it. */
		if (a.dry_run)
			printf("dry run: %s may read %s %s; nothing was recorded\n",
			       out_text(principal_text(g, p), 0, text, sizeof(text)),
			       dataset_text(g, d), strcmp(state, "pending_approval") == 0 ?
			       "once approved" : "at once");
		else if (strcmp(state, "pending_approval") == 0)
			printf("requested grant %s: %s may read %s once approved by %s other "
			       "steward(s)\n", out_member(g, "id", s1),
			       out_text(principal_text(g, p), 0, text, sizeof(text)),
			       dataset_text(g, d), out_member(g, "approvals_required", s2));
		else
			printf("added grant %s: %s may read %s\n", out_member(g, "id", s1),
			       out_text(principal_text(g, p), 0, text, sizeof(text)),
			       dataset_text(g, d));
		printf("  purpose     %s\n", out_text(out_member(g, "purpose", s1), 0, text,
						       sizeof(text)));
		printf("  purpose code %s\n", out_text(out_member(g, "purpose_code", s1), 0, text,
							sizeof(text)));
		if (*out_member(g, "consent_override", s1))
			printf("  consent override  %s\n",
			       out_text(out_member(g, "consent_override", s1), 0, text,
					sizeof(text)));
		printf("  not before  %s\n", out_member(g, "not_before", s1));
		printf("  expires     %s\n", out_member(g, "expires", s1));
		if (json_object_get(g, "granted_by"))
			printf("  granted by  %s\n", out_text(out_member(g, "granted_by", s1), 0,
							       text, sizeof(text)));
	}
	reply_clear(&rep);
	return r;
}

/* ---- list ---------------------------------------------------------------------------------- */

struct list_args {
	const char *dataset, *user, *group, *state;
	bool all;
};

static int on_list_opt(void *ctx, int val, const char *arg)
{
	struct list_args *a = ctx;

	if (val == OPT_DATASET)
		a->dataset = arg;
	else if (val == OPT_USER)
		a->user = arg;
	else if (val == OPT_GROUP)
		a->group = arg;
	else if (val == OPT_STATE)
		a->state = arg;
	else if (val == OPT_ALL)
		a->all = true;
	else
		return EXIT_USAGE;
	return 0;
}

/* "suspended (consent: NMDS)", or the state as it is. */
static const char *state_text(const json_t *g, char out[static 64])
{
	char s1[24], s2[24];
	const char *state = out_member(g, "state", s1);

	if (strcmp(state, "suspended") == 0 && json_object_get(g, "consent_code"))
		snprintf(out, 64, "suspended (consent: %.16s)", out_member(g, "consent_code", s2));
	else
		snprintf(out, 64, "%s", state);
	return out;
}

static int grant_list(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dataset", required_argument, NULL, OPT_DATASET },
		{ "user", required_argument, NULL, OPT_USER },
		{ "group", required_argument, NULL, OPT_GROUP },
		{ "state", required_argument, NULL, OPT_STATE },
		{ "all", no_argument, NULL, OPT_ALL },
		{ 0 },
	};
	static const char *const head[] = { "ID", "PRINCIPAL", "DATASET@VERSION", "STATE",
					    "NOT BEFORE", "EXPIRES", "PURPOSE" };
	static const size_t widths[] = { 0, 0, 0, 0, 0, 0, PURPOSE_COLUMN };
	static const char *const states[] = { "active", "pending_approval", "not_yet_valid",
					      "suspended", "expired", "revoked" };
	struct list_args a = { 0 };
	struct reply rep = { 0 };
	const json_t *list, *g;
	struct table t;
	json_t *args;
	size_t i;
	int first, r;

	r = ctl_parse(ctl, "grant list", list_usage, argc, argv, opts, on_list_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("grant list", "unexpected argument '%s'", argv[first]);
	if (a.dataset && !store_dataset_name_valid(a.dataset))
		return ctl_usage_error("grant list", "--dataset: not a dataset name");
	if ((a.user && (!*a.user || strlen(a.user) > POLICY_NAME_MAX)) ||
	    (a.group && (!*a.group || strlen(a.group) > POLICY_NAME_MAX)))
		return ctl_usage_error("grant list", "--user, --group: a name or id of 1 to %d "
				       "bytes", POLICY_NAME_MAX);
	if (a.state) {
		bool ok = false;

		for (i = 0; i < ARRAY_SIZE(states); i++)
			ok |= strcmp(a.state, states[i]) == 0;
		if (!ok)
			return ctl_usage_error("grant list", "--state '%.40s': one of active, "
					       "pending_approval, not_yet_valid, suspended, expired, "
					       "revoked", a.state);
	}
	args = json_object();
	if (args && a.dataset && json_object_set_new(args, "dataset", json_string(a.dataset)) < 0)
		json_decref(args), args = NULL;
	if (args && a.user && json_object_set_new(args, "user", json_string(a.user)) < 0)
		json_decref(args), args = NULL;
	if (args && a.group && json_object_set_new(args, "group", json_string(a.group)) < 0)
		json_decref(args), args = NULL;
	if (args && a.state && json_object_set_new(args, "state", json_string(a.state)) < 0)
		json_decref(args), args = NULL;
	if (args && a.all && json_object_set_new(args, "all", json_true()) < 0)
		json_decref(args), args = NULL;
	if (!args)
		return ctl_fail("grant list", "out of memory");
	r = ctl_call_list(ctl, "grant list", "grant.list", args, "grants", &rep, &list);
	if (!list)
		return r;
	table_init(&t, ARRAY_SIZE(head), head);
	json_array_foreach(list, i, g) {
		char s1[24], s3[24], s4[24], s5[24], p[160], d[160], st[64];
		const char *cells[] = { out_member(g, "id", s1), principal_text(g, p),
					dataset_text(g, d), state_text(g, st),
					out_member(g, "not_before", s3),
					out_member(g, "expires", s4),
					out_member(g, "purpose", s5) };

		if (table_add(&t, cells, widths) < 0) {
			r = ctl_fail("grant list", "out of memory");
			break;
		}
	}
	if (r == 0) {
		if (t.nrows)
			r = table_print(&t) < 0;
		else if (!ctl->quiet)
			fprintf(stderr, "no %sgrants\n", a.all || a.state ? "" : "current ");
	}
	table_free(&t);
	reply_clear(&rep);
	return r;
}

/* ---- show ---------------------------------------------------------------------------------- */

static int grant_show(struct ctl *ctl, int argc, char **argv)
{
	struct reply rep = { 0 };
	unsigned long long id = 0;
	const json_t *g, *list, *e, *rv;
	char what[64], s1[24], s2[24], s3[24], s4[24], p[160], d[160], st[64], text[1100];
	json_t *args;
	size_t i;
	int first, r;

	r = ctl_parse_none(ctl, "grant show", show_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error("grant show", "missing the grant's ID");
	if (first + 1 < argc)
		return ctl_usage_error("grant show", "unexpected argument '%s'", argv[first + 1]);
	r = ctl_parse_id("grant show", "grant", argv[first], &id);
	if (r)
		return r;
	args = json_pack("{s:I}", "id", (json_int_t)id);
	if (!args)
		return ctl_fail("grant show", "out of memory");
	snprintf(what, sizeof(what), "grant show %llu", id);
	r = ctl_call(ctl, what, "grant.show", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	g = json_object_get(rep.result, "grant");
	if (!json_is_object(g)) {
		reply_clear(&rep);
		return ctl_fail(what, "protocol error: the reply has no \"grant\"");
	}
	printf("grant %s: %s may read %s\n", out_member(g, "id", s1),
	       out_text(principal_text(g, p), 0, text, sizeof(text)), dataset_text(g, d));
	printf("  state             %s\n", state_text(g, st));
	printf("  purpose           %s\n", out_text(out_member(g, "purpose", s1), 0, text,
						     sizeof(text)));
	printf("  purpose codes     %s\n", out_text(out_member(g, "purpose_code", s1), 0, text,
						     sizeof(text)));
	if (*out_member(g, "consent_override", s1))
		printf("  consent override  %s\n", out_text(out_member(g, "consent_override", s1),
							     0, text, sizeof(text)));
	printf("  grantee           %s (%s %s)\n",
	       out_text(principal_text(g, p), 0, text, sizeof(text)),
	       strcmp(out_member(g, "kind", s1), "group") == 0 ? "gid" : "uid",
	       out_member(g, "principal_id", s2));
	printf("  requested by      %s (uid %s) at %s\n",
	       out_text(out_member(g, "granted_by", s1), 64, text, sizeof(text)),
	       out_member(g, "granted_by_uid", s2), out_member(g, "created", s3));
	printf("  not before        %s\n", out_member(g, "not_before", s1));
	printf("  expires           %s\n", out_member(g, "expires", s1));
	printf("  approvals         %s of %s\n", out_member(g, "approvals", s1),
	       out_member(g, "approvals_required", s2));
	list = json_object_get(rep.result, "approvals");
	json_array_foreach(list, i, e)
		printf("    by %s (uid %s) at %s\n",
		       out_text(out_member(e, "by", s1), 64, text, sizeof(text)),
		       out_member(e, "by_uid", s2), out_member(e, "at", s3));
	rv = json_object_get(g, "revocation");
	if (json_is_object(rv))
		printf("  revoked           %s by %s: %s\n", out_member(rv, "at", s1),
		       out_member(rv, "by", s2),
		       out_text(*out_member(rv, "reason", s3) ? out_member(rv, "reason", s3)
							    : "(no reason given)", 0, text,
				sizeof(text)));
	printf("  history\n");
	list = json_object_get(rep.result, "history");
	json_array_foreach(list, i, e) {
		bool more = *out_member(e, "by", s3) || *out_member(e, "detail", s4);

		printf(more ? "    %s  %-10s" : "    %s  %s", out_member(e, "at", s1),
		       out_member(e, "event", s2));
		if (*out_member(e, "by", s3))
			printf(" by %s", out_text(out_member(e, "by", s3), 64, text, sizeof(text)));
		if (*out_member(e, "detail", s4))
			printf(": %s", out_text(out_member(e, "detail", s4), 0, text, sizeof(text)));
		putchar('\n');
	}
	reply_clear(&rep);
	return 0;
}

/* ---- revoke -------------------------------------------------------------------------------- */

static int on_revoke_opt(void *ctx, int val, const char *arg)
{
	const char **reason = ctx;

	if (val != OPT_REASON)
		return EXIT_USAGE;
	*reason = arg;
	return 0;
}

static int grant_revoke(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "reason", required_argument, NULL, OPT_REASON },
		{ 0 },
	};
	const char *reason = NULL;
	struct reply rep = { 0 };
	unsigned long long id;
	const json_t *rev;
	char what[64], s1[24], text[1100];
	json_t *args;
	int first, r;

	r = ctl_parse(ctl, "grant revoke", revoke_usage, argc, argv, opts, on_revoke_opt, &reason,
		      &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error("grant revoke", "missing the grant's ID");
	if (first + 1 < argc)
		return ctl_usage_error("grant revoke", "unexpected argument '%s'", argv[first + 1]);
	r = ctl_parse_id("grant revoke", "grant", argv[first], &id);
	if (r)
		return r;
	if (reason && (strlen(reason) > POLICY_REASON_MAX ||
		       !out_utf8_valid(reason, strlen(reason))))
		return ctl_usage_error("grant revoke", "--reason: not valid UTF-8, or longer than "
				       "%d bytes", POLICY_REASON_MAX);
	args = json_pack("{s:I}", "id", (json_int_t)id);
	if (args && reason && json_object_set_new(args, "reason", json_string(reason)) < 0)
		json_decref(args), args = NULL;
	if (!args)
		return ctl_fail("grant revoke", "out of memory");
	snprintf(what, sizeof(what), "grant revoke %llu", id);
	r = ctl_call(ctl, what, "grant.revoke", args, NULL, NULL, &rep);
	if (r)
		return r;
	rev = json_object_get(rep.result, "revocation");
	if (ctl->json) {
		r = out_json(rep.result) < 0;
	} else {
		printf("revoked grant %llu", id);
		if (json_object_get(rev, "at"))
			printf(" at %s", out_member(rev, "at", s1));
		if (json_object_get(rev, "by"))
			printf(" by %s",
			       out_text(out_member(rev, "by", s1), 64, text, sizeof(text)));
		putchar('\n');
	}
	reply_clear(&rep);
	return r;
}

/* ---- approve ------------------------------------------------------------------------------- */

static int grant_approve(struct ctl *ctl, int argc, char **argv)
{
	struct reply rep = { 0 };
	unsigned long long id = 0;
	char what[64], s1[24], s2[24], s3[24];
	const json_t *g;
	json_t *args;
	int first, r;

	r = ctl_parse_none(ctl, "grant approve", approve_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error("grant approve", "missing the grant's ID");
	if (first + 1 < argc)
		return ctl_usage_error("grant approve", "unexpected argument '%s'", argv[first + 1]);
	r = ctl_parse_id("grant approve", "grant", argv[first], &id);
	if (r)
		return r;
	args = json_pack("{s:I}", "id", (json_int_t)id);
	if (!args)
		return ctl_fail("grant approve", "out of memory");
	snprintf(what, sizeof(what), "grant approve %llu", id);
	r = ctl_call(ctl, what, "grant.approve", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	g = json_object_get(rep.result, "grant");
	printf("approved grant %llu (%s of %s approvals): %s\n", id,
	       out_member(g, "approvals", s1), out_member(g, "approvals_required", s2),
	       out_member(g, "state", s3));
	reply_clear(&rep);
	return 0;
}

/* ---- export -------------------------------------------------------------------------------- */

struct export_args {
	const char *format;
	bool jwks;
};

static int on_export_opt(void *ctx, int val, const char *arg)
{
	struct export_args *a = ctx;

	if (val == OPT_JWKS) {
		a->jwks = true;
		return 0;
	}
	if (val != OPT_FORMAT)
		return EXIT_USAGE;
	if (strcmp(arg, "ga4gh-visa") != 0)
		return ctl_usage_error("grant export", "--format: only ga4gh-visa, not '%.40s'",
				       arg);
	a->format = arg;
	return 0;
}

static int grant_export(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "jwks", no_argument, NULL, OPT_JWKS },
		{ 0 },
	};
	struct export_args a = { 0 };
	struct reply rep = { 0 };
	const json_t *v;
	json_t *args;
	size_t i;
	int first, r;

	r = ctl_parse(ctl, "grant export", export_usage, argc, argv, opts, on_export_opt, &a,
		      &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("grant export", "unexpected argument '%s'", argv[first]);
	if (a.jwks && a.format)
		return ctl_usage_error("grant export", "give one of --format and --jwks");
	if (!a.format && !a.jwks)
		return ctl_usage_error("grant export", "--format ga4gh-visa (or --jwks) is required");
	if (a.jwks) {
		r = ctl_call(ctl, "grant export --jwks", "grant.jwks", json_object(), NULL, NULL,
			     &rep);
		if (r)
			return r;
		/* The key set is data either way: a JWKS document. */
		return ctl_print_json(&rep);
	}
	args = json_pack("{s:s}", "format", a.format);
	if (!args)
		return ctl_fail("grant export", "out of memory");
	r = ctl_call(ctl, "grant export", "grant.export", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	/* One JWT per line: what a passport broker or a shell loop takes. */
	json_array_foreach(json_object_get(rep.result, "visas"), i, v) {
		const char *jwt = json_string_value(json_object_get(v, "jwt"));

		if (jwt)
			printf("%s\n", jwt);
	}
	if (!ctl->quiet && json_array_size(json_object_get(rep.result, "skipped")))
		fprintf(stderr, "enclavectl: grant export: %zu group grant(s) in force have no "
			"visa (a visa names one user)\n",
			json_array_size(json_object_get(rep.result, "skipped")));
	r = fflush(stdout) == 0 ? 0 : 1;
	reply_clear(&rep);
	return r;
}

const struct ctl_cmd grant_cmds[] = {
	{ "request", grant_add, "--user|--group NAME ...", "request a grant (pending approval)" },
	{ "add", grant_add, "--user|--group NAME ...", "the same as request" },
	{ "approve", grant_approve, "ID", "approve another steward's grant request" },
	{ "export", grant_export, "--format ga4gh-visa | --jwks",
	  "grants in force as signed GA4GH visas; their JWKS" },
	{ "list", grant_list, "[--dataset|--user|--group NAME] [--state S] [--all]",
	  "list grants" },
	{ "show", grant_show, "ID", "a grant: purpose, approvals, state, history" },
	{ "revoke", grant_revoke, "ID [--reason TEXT]", "revoke a grant at once" },
	{ 0 },
};
