/* enclavectl deny add | list | remove: rules that block access whatever the grants say.
 *
 * A deny rule always wins over grants (docs/POLICY.md section 4); it lasts until removed, and
 * adding and removing one are audit records of their own.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/enclavectl.h"
#include "common/common.h"
#include "policy/policy.h"
#include "store/store.h"

static const char add_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] deny add (--user NAME | --group NAME | --all)\n"
	"           (--dataset NAME | --all-datasets) --reason TEXT [--dry-run] [--yes]\n\n"
	"Block a user, every member of a group, or everyone (--all) from a dataset, or from\n"
	"every dataset, whatever the grants say, until the rule is removed. Open files under\n"
	"it stop reading at once. Stewards only.\n\n"
	"Options:\n"
	"  --user NAME       a user name or numeric uid\n"
	"  --group NAME      a group name or numeric gid\n"
	"  --all             everyone\n"
	"  --dataset NAME    the dataset (every version)\n"
	"  --all-datasets    every dataset, present and future\n"
	"  --reason TEXT     why (required, recorded)\n"
	"  --dry-run         have the daemon check the rule and show it, without recording it\n"
	"  --yes             do not ask before a rule over every user or every dataset\n"
	"  --json            print the rule as JSON\n"
	"  -h, --help        show this help\n\n"
	"--dataset all, and --all after --user, --group or a first --all, mean --all-datasets.\n"
	"A rule over every user (--all) or every dataset is confirmed on the terminal first;\n"
	"without a terminal it needs --yes (exit 2 otherwise).\n";

static const char list_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] deny list [--all]\n\n"
	"List the deny rules in force (state active, or removal_pending while a removal waits\n"
	"for approvals), or with --all the removed ones too. Stewards and auditors only.\n\n"
	"Options:\n"
	"  --all         include removed rules\n"
	"  --json        print the daemon's answer as JSON\n"
	"  -h, --help    show this help\n";

static const char remove_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] deny remove ID --reason TEXT\n\n"
	"Ask to remove deny rule ID, saying why: lifting a rule gives access back, so the store's\n"
	"approval rule applies as it does to grants. With approvals = 0 (enclave.conf) the rule\n"
	"is removed at once; otherwise it stays in force until as many other stewards have run\n"
	"'deny approve ID' (the steward who asked cannot, nor anyone the rule names). Stewards\n"
	"only.\n\n"
	"Options:\n"
	"  --reason TEXT  why (required, recorded with the removal and in the audit log)\n"
	"  --json         print the rule and its removal as JSON\n"
	"  -h, --help     show this help\n";

static const char approve_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] deny approve ID\n\n"
	"Approve the requested removal of deny rule ID. The steward who asked for it, and a user\n"
	"the rule names (or a member of the group it names), cannot. Stewards only.\n\n"
	"Options:\n"
	"  --json         print the rule and its removal as JSON\n"
	"  -h, --help     show this help\n";

static const char show_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] deny show ID\n\n"
	"Everything about deny rule ID: whom and what it blocks, why, who added it and when, its\n"
	"state (active, removal_pending, removed) and any removal: who asked, why, when, and\n"
	"the approvals so far. Stewards and auditors only.\n\n"
	"Options:\n"
	"  --json         print the rule and its removal as JSON\n"
	"  -h, --help     show this help\n";

enum {
	OPT_USER = 0x200,
	OPT_GROUP,
	OPT_ALL,
	OPT_DATASET,
	OPT_ALL_DATASETS,
	OPT_REASON,
	OPT_DRY_RUN,
	OPT_YES,
};

struct add_args {
	const char *kind;          /* "user", "group", "all" */
	const char *principal;     /* NULL for "all" */
	const char *dataset;       /* NULL: every dataset */
	bool all_datasets;
	unsigned all_seen;         /* how many times --all was given */
	const char *reason;
	bool dry_run;              /* --dry-run: checked by the daemon, not recorded */
	bool yes;                  /* --yes: no confirmation for a rule over everyone */
};

static int on_add_opt(void *ctx, int val, const char *arg)
{
	struct add_args *a = ctx;

	switch (val) {
	case OPT_USER:
	case OPT_GROUP:
		if (a->principal)
			return ctl_usage_error("deny add", "give one of --user and --group, once");
		a->principal = arg;
		a->kind = val == OPT_USER ? "user" : "group";
		return 0;
	case OPT_ALL:
		a->all_seen++;
		return 0;
	case OPT_DATASET:
		if (strcmp(arg, "--all") == 0 || strcmp(arg, "all") == 0)
			a->all_datasets = true;
		else
			a->dataset = arg;
		return 0;
	case OPT_ALL_DATASETS:
		a->all_datasets = true;
		return 0;
	case OPT_REASON:
		a->reason = arg;
		return 0;
	case OPT_DRY_RUN:
		a->dry_run = true;
		return 0;
	case OPT_YES:
		a->yes = true;
		return 0;
	}
	return EXIT_USAGE;
}

static void print_rule(const json_t *x)
{
	char s1[24], s2[24], s3[24], text[1100];
	const char *ds = out_member(x, "dataset", s2);

	printf("deny rule %s: %s%s%s from %s\n", out_member(x, "id", s1),
	       out_member(x, "kind", s3), *out_member(x, "principal", s1) ? ":" : "",
	       out_text(out_member(x, "principal", s1), 64, text, sizeof(text)),
	       *ds ? ds : "every dataset");
	printf("  reason  %s\n", out_text(out_member(x, "reason", s1), 0, text, sizeof(text)));
}

static int deny_add(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "user", required_argument, NULL, OPT_USER },
		{ "group", required_argument, NULL, OPT_GROUP },
		{ "all", no_argument, NULL, OPT_ALL },
		{ "dataset", required_argument, NULL, OPT_DATASET },
		{ "all-datasets", no_argument, NULL, OPT_ALL_DATASETS },
		{ "reason", required_argument, NULL, OPT_REASON },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		{ "yes", no_argument, NULL, OPT_YES },
		{ 0 },
	};
	struct add_args a = { 0 };
	struct reply rep = { 0 };
	json_t *args;
	int first, r;

	r = ctl_parse(ctl, "deny add", add_usage, argc, argv, opts, on_add_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("deny add", "unexpected argument '%s'", argv[first]);
	/* The first --all names everyone, unless a subject is given: then it means every dataset,
	 * as does a second --all. */
	if (a.all_seen > 2 || (a.principal && a.all_seen > 1))
		return ctl_usage_error("deny add", "--all given too often");
	if (a.principal && a.all_seen)
		a.all_datasets = true;
	else if (a.all_seen) {
		a.kind = "all";
		if (a.all_seen == 2)
			a.all_datasets = true;
	}
	if (!a.kind)
		return ctl_usage_error("deny add", "--user NAME, --group NAME or --all is required");
	if (!a.dataset && !a.all_datasets)
		return ctl_usage_error("deny add", "--dataset NAME or --all-datasets is required");
	if (a.dataset && a.all_datasets)
		return ctl_usage_error("deny add", "give one of --dataset NAME and --all-datasets");
	if (a.dataset && !store_dataset_name_valid(a.dataset))
		return ctl_usage_error("deny add", "--dataset: not a dataset name: '%.140s'",
				       a.dataset);
	if (a.principal && (!*a.principal || strlen(a.principal) > POLICY_NAME_MAX))
		return ctl_usage_error("deny add", "--%s: a name or id of 1 to %d bytes", a.kind,
				       POLICY_NAME_MAX);
	if (!a.reason || !*a.reason || strlen(a.reason) > POLICY_REASON_MAX ||
	    !out_utf8_valid(a.reason, strlen(a.reason)))
		return ctl_usage_error("deny add", "--reason TEXT is required: 1 to %d bytes of "
				       "UTF-8", POLICY_REASON_MAX);
	/* A rule over every user or every dataset is asked about first (--yes skips it). */
	if (!a.dry_run && (strcmp(a.kind, "all") == 0 || a.all_datasets)) {
		char who[100], where[200], q[400];

		if (strcmp(a.kind, "all") == 0)
			snprintf(who, sizeof(who), "every user");
		else
			snprintf(who, sizeof(who), "%s %.64s", a.kind, a.principal);
		if (a.all_datasets)
			snprintf(where, sizeof(where), "every dataset, present and future");
		else
			snprintf(where, sizeof(where), "dataset %.140s", a.dataset);
		snprintf(q, sizeof(q), "This rule blocks %s from %s.", who, where);
		r = ctl_confirm("deny add", q, a.yes);
		if (r)
			return r;
	}
	args = json_pack("{s:s, s:s}", "principal_kind", a.kind, "reason", a.reason);
	if (args && a.dry_run && json_object_set_new(args, "dry_run", json_true()) < 0)
		json_decref(args), args = NULL;
	if (args && a.principal &&
	    json_object_set_new(args, "principal", json_string(a.principal)) < 0)
		json_decref(args), args = NULL;
	if (args && a.dataset && json_object_set_new(args, "dataset", json_string(a.dataset)) < 0)
		json_decref(args), args = NULL;
	if (!args)
		return ctl_fail("deny add", "out of memory");
	r = ctl_call(ctl, "deny add", "deny.add", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	if (a.dry_run)
		printf("dry run: the rule is valid; nothing was recorded\n");
	print_rule(json_object_get(rep.result, "rule"));
	reply_clear(&rep);
	return 0;
}

static int on_list_opt(void *ctx, int val, const char *arg)
{
	(void)arg;
	if (val != OPT_ALL)
		return EXIT_USAGE;
	*(bool *)ctx = true;
	return 0;
}

static int deny_list(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "all", no_argument, NULL, OPT_ALL },
		{ 0 },
	};
	static const char *const head[] = { "ID", "PRINCIPAL", "DATASET", "STATE", "CREATED", "BY",
					    "REASON" };
	static const size_t widths[] = { 0, 0, 0, 0, 0, 0, 40 };
	struct reply rep = { 0 };
	const json_t *list, *x;
	struct table t;
	bool all = false;
	json_t *args;
	size_t i;
	int first, r;

	r = ctl_parse(ctl, "deny list", list_usage, argc, argv, opts, on_list_opt, &all, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("deny list", "unexpected argument '%s'", argv[first]);
	args = all ? json_pack("{s:b}", "all", 1) : json_object();
	if (!args)
		return ctl_fail("deny list", "out of memory");
	r = ctl_call_list(ctl, "deny list", "deny.list", args, "rules", &rep, &list);
	if (!list)
		return r;
	table_init(&t, ARRAY_SIZE(head), head);
	json_array_foreach(list, i, x) {
		char s1[24], s2[24], s3[24], s4[24], s5[24], s6[24], s7[24], p[160];
		const char *ds = out_member(x, "dataset", s3);
		const char *cells[7];

		snprintf(p, sizeof(p), "%s%s%s", out_member(x, "kind", s2),
			 *out_member(x, "principal", s7) ? ":" : "", out_member(x, "principal", s7));
		cells[0] = out_member(x, "id", s1);
		cells[1] = p;
		cells[2] = *ds ? ds : "(every dataset)";
		cells[3] = out_member(x, "state", s4);
		cells[4] = out_member(x, "created", s5);
		cells[5] = out_member(x, "by", s6);
		cells[6] = out_member(x, "reason", s2);
		if (table_add(&t, cells, widths) < 0) {
			r = ctl_fail("deny list", "out of memory");
			break;
		}
	}
	if (r == 0) {
		if (t.nrows)
			r = table_print(&t) < 0;
		else if (!ctl->quiet)
			fprintf(stderr, "no %sdeny rules\n", all ? "" : "active ");
	}
	table_free(&t);
	reply_clear(&rep);
	return r;
}

/* The answer of deny.show / deny.remove / deny.approve, for people. */
static void print_rule_state(const json_t *result)
{
	const json_t *x = json_object_get(result, "rule"), *rm = json_object_get(result, "removal");
	const json_t *aps = json_object_get(result, "approvals"), *a;
	char s1[24], s2[24], s3[24], text[1100];
	size_t i;

	print_rule(x);
	printf("  added   %s by %s\n", out_member(x, "created", s1),
	       out_text(out_member(x, "by", s2), 64, text, sizeof(text)));
	printf("  state   %s\n", out_member(x, "state", s1));
	if (!json_is_object(rm))
		return;
	printf("  removal asked %s by %s: %s\n", out_member(rm, "at", s1),
	       out_text(out_member(rm, "by", s2), 64, text, sizeof(text)),
	       *out_member(rm, "reason", s3) ? out_member(rm, "reason", s3) : "(no reason given)");
	printf("  approvals %zu of %s\n", json_array_size(aps),
	       out_member(rm, "approvals_required", s1));
	json_array_foreach(aps, i, a)
		printf("    by %s (uid %s) at %s\n",
		       out_text(out_member(a, "by", s1), 64, text, sizeof(text)),
		       out_member(a, "by_uid", s2), out_member(a, "at", s3));
	if (json_object_get(x, "removed_at"))
		printf("  removed %s\n", out_member(x, "removed_at", s1));
}

static int on_remove_opt(void *ctx, int val, const char *arg)
{
	if (val != OPT_REASON)
		return EXIT_USAGE;
	*(const char **)ctx = arg;
	return 0;
}

/* deny remove / approve / show: ID, one call, the rule's state printed. */
static int deny_one(struct ctl *ctl, int argc, char **argv, const char *what, const char *usage,
		    const char *op)
{
	static const struct option opts[] = {
		{ "reason", required_argument, NULL, OPT_REASON },
		{ 0 },
	};
	const bool remove = strcmp(op, "deny.remove") == 0;
	const char *reason = NULL;
	struct reply rep = { 0 };
	unsigned long long id = 0;
	char whatid[64], s1[24];
	json_t *args;
	int first, r;

	r = remove ? ctl_parse(ctl, what, usage, argc, argv, opts, on_remove_opt, &reason, &first)
		   : ctl_parse_none(ctl, what, usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error(what, "missing the rule's ID");
	if (first + 1 < argc)
		return ctl_usage_error(what, "unexpected argument '%s'", argv[first + 1]);
	r = ctl_parse_id(what, "rule", argv[first], &id);
	if (r)
		return r;
	if (remove && (!reason || !*reason || strlen(reason) > POLICY_REASON_MAX ||
		       !out_utf8_valid(reason, strlen(reason))))
		return ctl_usage_error(what, "--reason TEXT is required: 1 to %d bytes of UTF-8",
				       POLICY_REASON_MAX);
	args = json_pack("{s:I}", "id", (json_int_t)id);
	if (args && reason && json_object_set_new(args, "reason", json_string(reason)) < 0)
		json_decref(args), args = NULL;
	if (!args)
		return ctl_fail(what, "out of memory");
	snprintf(whatid, sizeof(whatid), "%s %llu", what, id);
	r = ctl_call(ctl, whatid, op, args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	if (strcmp(op, "deny.show") != 0) {
		const json_t *x = json_object_get(rep.result, "rule");

		if (json_object_get(x, "removed_at"))
			printf("removed deny rule %llu at %s\n", id, out_member(x, "removed_at", s1));
		else
			printf("removal of deny rule %llu recorded: it stays in force until another "
			       "steward runs 'enclavectl deny approve %llu'\n", id, id);
	}
	print_rule_state(rep.result);
	reply_clear(&rep);
	return 0;
}

static int deny_remove(struct ctl *ctl, int argc, char **argv)
{
	return deny_one(ctl, argc, argv, "deny remove", remove_usage, "deny.remove");
}

static int deny_approve(struct ctl *ctl, int argc, char **argv)
{
	return deny_one(ctl, argc, argv, "deny approve", approve_usage, "deny.approve");
}

static int deny_show(struct ctl *ctl, int argc, char **argv)
{
	return deny_one(ctl, argc, argv, "deny show", show_usage, "deny.show");
}

const struct ctl_cmd deny_cmds[] = {
	{ "add", deny_add, "--user|--group NAME|--all ...", "block access whatever the grants" },
	{ "approve", deny_approve, "ID", "approve another steward's removal of a rule" },
	{ "list", deny_list, "[--all]", "list deny rules" },
	{ "remove", deny_remove, "ID --reason TEXT", "remove a deny rule (with approvals)" },
	{ "show", deny_show, "ID", "a deny rule, its state and removal" },
	{ 0 },
};
