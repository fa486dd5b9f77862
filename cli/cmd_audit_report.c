/* enclavectl audit report: a summary of the audit trail per dataset and per user: opens allowed,
 * denials by reason, bytes read (from close records), and the grants in force now (grant and
 * revoke records replayed, expiry applied). Reads through the daemon (audit.show, as `audit show`
 * does) or, with --log, offline from the files (audit_foreach()). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"
#include "store/store.h"

/* Entry point, in the audit_cmds table of cmd_audit.c. */
int audit_report_cmd(struct ctl *ctl, int argc, char **argv);

/* Distinct datasets, users and (dataset, user) pairs kept; more is an error, not a crash. */
#define REPORT_KEYS_MAX 100000u
/* Grants replayed at most. */
#define REPORT_GRANTS_MAX 1000000u

enum {
	OPT_LOG = 0x200,
	OPT_DATASET,
	OPT_SINCE,
	OPT_UNTIL,
};

static const char report_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] audit report [--log DIR] [--dataset NAME]\n"
	"           [--since WHEN] [--until WHEN] [--json]\n\n"
	"Summarise the audit trail per dataset and per user: opens allowed, denials (by reason),\n"
	"bytes read (from close records), and the grants in force now (grant and revoke records\n"
	"replayed, expiry applied). Without --log the records come from the daemon (stewards and\n"
	"auditors only); with --log they are read offline from the audit directory DIR.\n"
	"The filters select the records counted; grants in force are always replayed from the\n"
	"whole log.\n\n"
	"Options:\n"
	"  --log DIR          read DIR/audit.log directly, without the daemon\n"
	"  --dataset NAME     only this dataset\n"
	"  --since WHEN       records at or after WHEN (RFC 3339 or a date)\n"
	"  --until WHEN       records before WHEN\n"
	"  --json             the report as one JSON document\n"
	"  -h, --help         show this help\n";

struct rargs {
	const char *log, *dataset, *since, *until;
};

static int on_opt(void *ctx, int val, const char *arg)
{
	struct rargs *a = ctx;

	switch (val) {
	case OPT_LOG: a->log = arg; return 0;
	case OPT_DATASET: a->dataset = arg; return 0;
	case OPT_SINCE: a->since = arg; return 0;
	case OPT_UNTIL: a->until = arg; return 0;
	}
	return EXIT_USAGE;
}

/* The report being built: JSON objects used as maps, owned. */
struct report {
	json_t *datasets;   /* name -> {opens, denials: {reason: n}, bytes, users: {user: {...}}} */
	json_t *users;      /* user -> {opens, denials: {reason: n}, bytes} */
	json_t *grants;     /* grant_id (text) -> grant object in force (approved), replayed */
	json_t *pending;    /* grant_id (text) -> grant object still waiting for approvals */
	size_t keys;        /* entries created in datasets and users, for the cap */
	int64_t now;        /* unix seconds: what "in force now" means */
	uint64_t records;   /* records counted (matching the filters) */
	const char *dataset; /* count only this dataset's records, or NULL; borrowed */
	int64_t since, until; /* count only records in [since, until) (unix s; 0: no bound) */
};

/* obj[key] as an object, created empty if absent. NULL on ENOMEM or past the cap. */
static json_t *child(struct report *rp, json_t *obj, const char *key)
{
	json_t *c = json_object_get(obj, key);

	if (c)
		return c;
	if (++rp->keys > REPORT_KEYS_MAX)
		return NULL;
	c = json_pack("{s:I, s:{}, s:I}", "opens", (json_int_t)0, "denials", "bytes", (json_int_t)0);
	if (!c || json_object_set_new(obj, key, c) < 0)
		return NULL;
	return c;
}

static void add_int(json_t *obj, const char *key, json_int_t v)
{
	json_t *n = json_object_get(obj, key);

	if (n)
		json_integer_set(n, json_integer_value(n) + v);
	else
		json_object_set_new(obj, key, json_integer(v));
}

/* The user a record names: "user", else its uid as text, else "?". */
static const char *rec_user(const json_t *rec, char scratch[static 24])
{
	const json_t *u = json_object_get(rec, "user"), *uid = json_object_get(rec, "uid");

	if (json_is_string(u))
		return json_string_value(u);
	if (json_is_integer(uid)) {
		snprintf(scratch, 24, "%" JSON_INTEGER_FORMAT, json_integer_value(uid));
		return scratch;
	}
	return "?";
}

/* Count one record into the entries e (a dataset's, a user's, a pair's). */
static void count(json_t *e, const char *event, const json_t *rec)
{
	const char *decision = json_string_value(json_object_get(rec, "decision"));
	const json_t *bytes = json_object_get(rec, "bytes");

	if (strcmp(event, "open") == 0 && decision && strcmp(decision, "allow") == 0) {
		add_int(e, "opens", 1);
	} else if (strcmp(event, "open") == 0 && decision && strcmp(decision, "deny") == 0) {
		const char *reason = json_string_value(json_object_get(rec, "reason"));

		add_int(json_object_get(e, "denials"), reason ? reason : "?", 1);
	} else if (strcmp(event, "close") == 0 && json_is_integer(bytes) &&
		   json_integer_value(bytes) > 0) {
		add_int(e, "bytes", json_integer_value(bytes));
	}
}

static int add_record(struct report *rp, const json_t *rec)
{
	const char *event = json_string_value(json_object_get(rec, "event"));
	const char *dataset = json_string_value(json_object_get(rec, "dataset"));
	const char *tm = json_string_value(json_object_get(rec, "time"));
	char scratch[24], id[24];
	json_t *d, *u, *du;
	int64_t t = 0;

	if (!event)
		return 0;
	/* "grant" is how logs before approvals recorded a grant; "grant_request" says whether it
	 * is in force at once or waits for approvals, and "grant_approve" whether it now is. */
	if (strcmp(event, "grant") == 0 || strcmp(event, "grant_request") == 0) {
		const json_t *g = json_object_get(rec, "grant"), *gid = json_object_get(rec, "grant_id");
		const char *state = json_string_value(json_object_get(rec, "state"));

		if (!json_is_object(g) || !json_is_integer(gid))
			return 0;
		if (json_object_size(rp->grants) + json_object_size(rp->pending) >= REPORT_GRANTS_MAX)
			return err_set(-E2BIG, "more than %u grants", REPORT_GRANTS_MAX);
		snprintf(id, sizeof(id), "%" JSON_INTEGER_FORMAT, json_integer_value(gid));
		return json_object_set(state && strcmp(state, "active") != 0 ? rp->pending :
				       rp->grants, id, (json_t *)g) < 0 ? -ENOMEM : 0;
	}
	if (strcmp(event, "grant_approve") == 0) {
		const json_t *gid = json_object_get(rec, "grant_id"), *g;
		const char *state = json_string_value(json_object_get(rec, "state"));

		if (!json_is_integer(gid) || !state || strcmp(state, "active") != 0)
			return 0;
		snprintf(id, sizeof(id), "%" JSON_INTEGER_FORMAT, json_integer_value(gid));
		g = json_object_get(rp->pending, id);
		if (g && json_object_set(rp->grants, id, (json_t *)g) < 0)
			return -ENOMEM;
		json_object_del(rp->pending, id);
		return 0;
	}
	if (strcmp(event, "revoke") == 0) {
		const json_t *gid = json_object_get(rec, "grant_id");

		if (json_is_integer(gid)) {
			snprintf(id, sizeof(id), "%" JSON_INTEGER_FORMAT, json_integer_value(gid));
			json_object_del(rp->grants, id);
			json_object_del(rp->pending, id);
		}
		return 0;
	}
	/* Grants and revocations are replayed whatever the filters: "in force now" needs all. */
	if (rp->dataset && (!dataset || strcmp(dataset, rp->dataset) != 0))
		return 0;
	if ((rp->since || rp->until) && (!tm || time_parse_rfc3339(tm, &t) < 0 ||
					 (rp->since && t < rp->since) || (rp->until && t >= rp->until)))
		return 0;
	rp->records++;
	if (strcmp(event, "open") != 0 && strcmp(event, "close") != 0)
		return 0;
	if (!dataset)
		dataset = "?";
	d = child(rp, rp->datasets, dataset);
	u = child(rp, rp->users, rec_user(rec, scratch));
	if (!d || !u)
		return err_set(-E2BIG, "more than %u datasets and users", REPORT_KEYS_MAX);
	if (!json_object_get(d, "users") && json_object_set_new(d, "users", json_object()) < 0)
		return -ENOMEM;
	du = child(rp, json_object_get(d, "users"), rec_user(rec, scratch));
	if (!du)
		return err_set(-E2BIG, "more than %u datasets and users", REPORT_KEYS_MAX);
	count(d, event, rec);
	count(u, event, rec);
	count(du, event, rec);
	return 0;
}

static int on_file_record(void *ctx, const json_t *rec, const char *line, size_t len)
{
	(void)line, (void)len;
	return add_record(ctx, rec);
}

static int on_partial(void *ctx, const json_t *partial)
{
	const json_t *list = json_object_get(partial, "records"), *rec;
	size_t i;

	if (!json_is_array(list))
		return err_set(-EPROTO, "a streamed frame without a \"records\" list");
	json_array_foreach(list, i, rec) {
		int r;

		if (!json_is_object(rec))
			return err_set(-EPROTO, "an audit record that is not a JSON object");
		r = add_record(ctx, rec);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Grants in force at rp->now, optionally of one dataset: a new array. */
static json_t *grants_in_force(const struct report *rp, const char *dataset)
{
	json_t *out = json_array(), *g;
	const char *id;

	json_object_foreach(rp->grants, id, g) {
		const char *nb = json_string_value(json_object_get(g, "not_before"));
		const char *ex = json_string_value(json_object_get(g, "expires"));
		const char *ds = json_string_value(json_object_get(g, "dataset"));
		int64_t tnb = 0, tex = 0;

		if (!nb || !ex || time_parse_rfc3339(nb, &tnb) < 0 || time_parse_rfc3339(ex, &tex) < 0)
			continue;
		if (rp->now < tnb || rp->now >= tex)
			continue;
		if (dataset && (!ds || strcmp(ds, dataset) != 0))
			continue;
		json_array_append(out, g);
	}
	return out;
}

static void print_entry(const char *indent, const char *name, const json_t *e)
{
	char safe[160], size[16], line[512];
	const json_t *den = json_object_get(e, "denials"), *n;
	const char *reason;
	size_t off = 0;
	json_int_t total = 0;

	json_object_foreach((json_t *)den, reason, n) {
		total += json_integer_value(n);
		off += (size_t)snprintf(line + off, off < sizeof(line) ? sizeof(line) - off : 0,
					"%s%s %" JSON_INTEGER_FORMAT, off ? ", " : " (", reason,
					json_integer_value(n));
		if (off >= sizeof(line))
			off = sizeof(line) - 1;
	}
	if (off)
		snprintf(line + off, sizeof(line) - off, ")");
	else
		line[0] = '\0';
	out_size((uint64_t)json_integer_value(json_object_get(e, "bytes")), size);
	printf("%s%-24s opens %-8" JSON_INTEGER_FORMAT " denials %" JSON_INTEGER_FORMAT "%s  read %s\n",
	       indent, out_text(name, 24, safe, sizeof(safe)),
	       json_integer_value(json_object_get(e, "opens")), total, line, size);
}

static int print_report(const struct report *rp)
{
	const char *name, *uname;
	json_t *d, *u, *g;
	char safe[160];
	size_t i;

	printf("records counted: %" PRIu64 "\n\nper dataset:\n", rp->records);
	json_object_foreach(rp->datasets, name, d) {
		json_t *grants = grants_in_force(rp, name);

		print_entry("  ", name, d);
		json_object_foreach(json_object_get(d, "users"), uname, u)
			print_entry("      ", uname, u);
		printf("      grants in force: %zu\n", json_array_size(grants));
		json_decref(grants);
	}
	printf("\nper user:\n");
	json_object_foreach(rp->users, name, u)
		print_entry("  ", name, u);
	printf("\ngrants in force now:\n");
	g = grants_in_force(rp, NULL);
	json_array_foreach(g, i, d) {
		char s1[24], s2[160];

		printf("  %s  %s -> %s  until %s\n", out_member(d, "id", s1),
		       out_text(out_member(d, "principal", s1), 40, safe, sizeof(safe)),
		       out_text(json_string_value(json_object_get(d, "dataset")) ?
				json_string_value(json_object_get(d, "dataset")) : "?", 40, s2, sizeof(s2)),
		       out_member(d, "expires", s1));
	}
	json_decref(g);
	return fflush(stdout) == 0 ? 0 : -EIO;
}

/* WHEN as unix seconds (time_parse: RFC 3339, a date, now, +N). EXIT_USAGE after a message. */
static int parse_when(const char *opt, const char *s, int64_t *ret)
{
	char safe[64];

	err_clear();
	if (time_parse(s, (int64_t)time(NULL), ret) < 0)
		return ctl_usage_error("audit report", "%s '%s': %s", opt, out_text(s, 40, safe, 64),
				       *err_detail() ? err_detail() : "not a time");
	return 0;
}

int audit_report_cmd(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "log", required_argument, NULL, OPT_LOG },
		{ "dataset", required_argument, NULL, OPT_DATASET },
		{ "since", required_argument, NULL, OPT_SINCE },
		{ "until", required_argument, NULL, OPT_UNTIL },
		{ 0 },
	};
	struct rargs a = { 0 };
	struct report rp = { .now = (int64_t)time(NULL) };
	int64_t since = 0, until = 0;
	int first, r, ret = 1;

	r = ctl_parse(ctl, "audit report", report_usage, argc, argv, opts, on_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("audit report", "unexpected argument '%s'", argv[first]);
	if (a.dataset && !store_dataset_name_valid(a.dataset))
		return ctl_usage_error("audit report", "--dataset: not a dataset name");
	if (a.since && (r = parse_when("--since", a.since, &since)))
		return r;
	if (a.until && (r = parse_when("--until", a.until, &until)))
		return r;
	rp.datasets = json_object();
	rp.users = json_object();
	rp.grants = json_object();
	rp.pending = json_object();
	if (!rp.datasets || !rp.users || !rp.grants || !rp.pending) {
		ctl_fail("audit report", "out of memory");
		goto out;
	}
	rp.dataset = a.dataset;
	rp.since = since;
	rp.until = until;
	/* Every record is read, filters applied here: grants need the whole history. */
	if (a.log) {
		r = audit_foreach(a.log, NULL, on_file_record, &rp);
		if (r < 0) {
			ctl_fail("audit report", "%s: %s", a.log, err_detail());
			goto out;
		}
	} else {
		struct reply rep = { 0 };

		r = ctl_call(ctl, "audit report", "audit.show", json_object(), on_partial, &rp, &rep);
		if (r)
			goto out;
		reply_clear(&rep);
	}
	if (ctl->json) {
		json_t *g = grants_in_force(&rp, a.dataset);
		json_t *out = json_pack("{s:I, s:O, s:O, s:o}", "records", (json_int_t)rp.records,
					"datasets", rp.datasets, "users", rp.users, "grants_in_force", g);

		r = out ? out_json(out) : -ENOMEM;
		json_decref(out);
	} else {
		r = print_report(&rp);
	}
	ret = r < 0 ? 1 : 0;
out:
	json_decref(rp.datasets);
	json_decref(rp.users);
	json_decref(rp.grants);
	json_decref(rp.pending);
	return ret;
}
