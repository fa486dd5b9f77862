/* enclavectl audit show: the audit trail, streamed from the daemon, one line per record. */
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

/* The longest line printed for one record; longer ones are cut with "...". */
#define LINE_MAX_BYTES 4096
/* Nested values (a grant inside a grant record) are shown as compact JSON cut to this. */
#define NESTED_MAX_CHARS 160

static const char show_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] audit show [--dataset NAME] [--user NAME|UID]\n"
	"           [--event EVENT] [--since WHEN] [--until WHEN] [--limit N]\n\n"
	"Print the audit records that match, oldest first, one per line: time, event, who,\n"
	"which dataset version and path, the decision and its reason, the grant, the bytes.\n"
	"With --json, each record is printed as one line of JSON, as the daemon sent it.\n"
	"Stewards and auditors only.\n\n"
	"Options:\n"
	"  --dataset NAME     records about this dataset\n"
	"  --user NAME|UID    records about this user (name or numeric uid)\n"
	"  --event EVENT      records of this event (open, close, import, grant, revoke, ...)\n"
	"  --since WHEN       records at or after WHEN\n"
	"  --until WHEN       records before WHEN\n"
	"  --limit N          only the last N matching records\n"
	"  --json             JSON lines\n"
	"  -h, --help         show this help\n\n"
	"WHEN is RFC 3339 (2026-11-21T09:00:00Z, or with +hh:mm), a date (2026-11-21, midnight\n"
	"UTC), \"now\", or relative to now: -N (ago) or +N followed by s, m, h, d or w (-7d).\n";

enum {
	OPT_DATASET = 0x200,
	OPT_USER,
	OPT_EVENT,
	OPT_SINCE,
	OPT_UNTIL,
	OPT_LIMIT,
};

struct show_args {
	const char *dataset, *user, *event, *since, *until, *limit;
};

static int on_opt(void *ctx, int val, const char *arg)
{
	struct show_args *a = ctx;

	switch (val) {
	case OPT_DATASET: a->dataset = arg; return 0;
	case OPT_USER: a->user = arg; return 0;
	case OPT_EVENT: a->event = arg; return 0;
	case OPT_SINCE: a->since = arg; return 0;
	case OPT_UNTIL: a->until = arg; return 0;
	case OPT_LIMIT: a->limit = arg; return 0;
	}
	return EXIT_USAGE;
}

/* State of one streamed answer. */
struct show {
	bool json;
	uint64_t printed;
};

/* Append " text" (made safe) to line at *n. */
static void put(char *line, size_t *n, const char *text, size_t max_chars)
{
	char safe[LINE_MAX_BYTES];

	if (!*text || *n + 2 >= LINE_MAX_BYTES)
		return;
	out_text(text, max_chars, safe, sizeof(safe));
	*n += (size_t)snprintf(line + *n, LINE_MAX_BYTES - *n, "%s%s", *n ? "  " : "", safe);
	if (*n >= LINE_MAX_BYTES)
		*n = LINE_MAX_BYTES - 1;
}

static bool is_known(const char *key)
{
	/* Shown in their own places; dataset_id only repeats the name (--json has it). */
	static const char *const known[] = { "seq", "time", "event", "user", "uid", "dataset",
					     "dataset_id", "version", "path", "decision", "result",
					     "reason", "grant_id", "bytes" };

	for (size_t i = 0; i < ARRAY_SIZE(known); i++)
		if (strcmp(key, known[i]) == 0)
			return true;
	return false;
}

/* One record for people: the fields we know in a fixed order, then the rest as key=value. */
static int print_record(const json_t *rec)
{
	char line[LINE_MAX_BYTES], tmp[512], s1[24], s2[24];
	const char *key;
	const json_t *v;
	size_t n = 0;

	line[0] = '\0';
	put(line, &n, out_member(rec, "time", s1), 0);
	put(line, &n, out_member(rec, "event", s1), 0);
	if (json_object_get(rec, "user") || json_object_get(rec, "uid")) {
		const char *user = out_member(rec, "user", s1), *uid = out_member(rec, "uid", s2);

		if (*user && *uid)
			snprintf(tmp, sizeof(tmp), "%s(%s)", user, uid);
		else if (*user)
			snprintf(tmp, sizeof(tmp), "%s", user);
		else
			snprintf(tmp, sizeof(tmp), "uid %s", uid);
		put(line, &n, tmp, 80);
	}
	if (json_object_get(rec, "dataset")) {
		const char *ver = out_member(rec, "version", s2);

		snprintf(tmp, sizeof(tmp), "%s%s%s", out_member(rec, "dataset", s1),
			 *ver ? "@" : "", ver);
		put(line, &n, tmp, 0);
	}
	put(line, &n, out_member(rec, "path", s1), 0);
	put(line, &n, out_member(rec, "decision", s1), 0);
	put(line, &n, out_member(rec, "result", s1), 0);
	/* An allowed open's reason is "allow" again: said once. */
	if (strcmp(out_member(rec, "reason", s1), out_member(rec, "decision", s2)) != 0)
		put(line, &n, out_member(rec, "reason", s1), 120);
	if (json_object_get(rec, "grant_id")) {
		snprintf(tmp, sizeof(tmp), "grant=%s", out_member(rec, "grant_id", s1));
		put(line, &n, tmp, 0);
	}
	if (json_object_get(rec, "bytes")) {
		snprintf(tmp, sizeof(tmp), "bytes=%s", out_member(rec, "bytes", s1));
		put(line, &n, tmp, 0);
	}
	json_object_foreach((json_t *)rec, key, v) {
		_cleanup_free_ char *nested = NULL;
		const char *val;

		if (is_known(key) || json_is_null(v))
			continue;
		if (json_is_object(v) || json_is_array(v)) {
			nested = json_dumps(v, JSON_COMPACT);
			val = nested ? nested : "?";
		} else if (json_is_real(v)) {
			snprintf(s1, sizeof(s1), "%g", json_real_value(v));
			val = s1;
		} else {
			val = out_member(rec, key, s1);
		}
		snprintf(tmp, sizeof(tmp), "%s=", key);
		if (strlen(tmp) + strlen(val) < sizeof(tmp))
			snprintf(tmp + strlen(tmp), sizeof(tmp) - strlen(tmp), "%s", val);
		else
			snprintf(tmp + strlen(tmp), sizeof(tmp) - strlen(tmp), "%.*s", 200, val);
		put(line, &n, tmp, NESTED_MAX_CHARS);
	}
	if (puts(line) == EOF)
		return -EIO;
	return 0;
}

static int on_records(void *ctx, const json_t *partial)
{
	struct show *s = ctx;
	const json_t *list = json_object_get(partial, "records"), *rec;
	size_t i;

	if (!json_is_array(list))
		return err_set(-EPROTO, "a streamed frame without a \"records\" list");
	json_array_foreach(list, i, rec) {
		int r;

		if (!json_is_object(rec))
			return err_set(-EPROTO, "an audit record that is not a JSON object");
		r = s->json ? out_json_line(rec) : print_record(rec);
		if (r < 0)
			return err_set(r, "cannot write the output");
		s->printed++;
	}
	return 0;
}

/* WHEN -> RFC 3339 UTC. Besides time_parse()'s forms, "-N<unit>" means that long ago (an audit
 * looks back): it is parsed as "+N<unit>" and mirrored around now. EXIT_USAGE after a message. */
static int absolute_time(const char *opt, const char *s, char out[static TIME_TEXT_MAX])
{
	int64_t now = (int64_t)time(NULL), t;
	char shown[64], ahead[64];
	bool ago = s[0] == '-';
	int r;

	err_clear();
	if (ago) {
		if (snprintf(ahead, sizeof(ahead), "+%s", s + 1) >= (int)sizeof(ahead))
			return ctl_usage_error("audit show", "%s '%s': not a time", opt,
					       out_text(s, 40, shown, 64));
	}
	r = time_parse(ago ? ahead : s, now, &t);
	if (r == 0 && ago && __builtin_sub_overflow(now, t - now, &t))
		r = -ERANGE;
	if (r < 0)
		return ctl_usage_error("audit show", "%s '%s': %s", opt, out_text(s, 40, shown, 64),
				       *err_detail() ? err_detail() : "not a time");
	time_format(t, out);
	return 0;
}

static int set_string(json_t *args, const char *key, const char *v)
{
	json_t *s = json_string(v);

	return s ? json_object_set_new(args, key, s) : -1;
}

static int audit_show(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dataset", required_argument, NULL, OPT_DATASET },
		{ "user", required_argument, NULL, OPT_USER },
		{ "event", required_argument, NULL, OPT_EVENT },
		{ "since", required_argument, NULL, OPT_SINCE },
		{ "until", required_argument, NULL, OPT_UNTIL },
		{ "limit", required_argument, NULL, OPT_LIMIT },
		{ 0 },
	};
	struct show_args a = { 0 };
	struct show s = { 0 };
	struct reply rep = { 0 };
	char since[TIME_TEXT_MAX], until[TIME_TEXT_MAX], s1[24];
	unsigned long long limit = 0;
	json_t *args;
	int first, r;

	r = ctl_parse(ctl, "audit show", show_usage, argc, argv, opts, on_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("audit show", "unexpected argument '%s'", argv[first]);
	if (a.dataset && !store_dataset_name_valid(a.dataset))
		return ctl_usage_error("audit show", "--dataset: not a dataset name");
	if (a.user && (!*a.user || strlen(a.user) > POLICY_NAME_MAX ||
		       !out_utf8_valid(a.user, strlen(a.user))))
		return ctl_usage_error("audit show", "--user: a name or uid of 1 to %d bytes",
				       POLICY_NAME_MAX);
	if (a.event && (!*a.event || strlen(a.event) > 32 ||
			!out_utf8_valid(a.event, strlen(a.event))))
		return ctl_usage_error("audit show", "--event: a name of 1 to 32 bytes");
	if (a.since && (r = absolute_time("--since", a.since, since)))
		return r;
	if (a.until && (r = absolute_time("--until", a.until, until)))
		return r;
	if (a.limit) {
		char *end;

		errno = 0;
		limit = strtoull(a.limit, &end, 10);
		if (a.limit[0] < '0' || a.limit[0] > '9' || errno || *end || limit == 0 ||
		    limit > (unsigned long long)INT64_MAX)
			return ctl_usage_error("audit show", "--limit '%.40s': a number from 1",
					       a.limit);
	}
	args = json_object();
	if (!args ||
	    (a.dataset && set_string(args, "dataset", a.dataset) < 0) ||
	    (a.user && set_string(args, "user", a.user) < 0) ||
	    (a.event && set_string(args, "event", a.event) < 0) ||
	    (a.since && set_string(args, "since", since) < 0) ||
	    (a.until && set_string(args, "until", until) < 0) ||
	    (a.limit && json_object_set_new(args, "limit", json_integer((json_int_t)limit)) < 0)) {
		json_decref(args);
		return ctl_fail("audit show", "out of memory");
	}
	s.json = ctl->json;
	r = ctl_call(ctl, "audit show", "audit.show", args, on_records, &s, &rep);
	if (r)
		return r;
	if (!ctl->quiet && !ctl->json)
		fprintf(stderr, "%s record%s\n", out_member(rep.result, "count", s1),
			strcmp(out_member(rep.result, "count", s1), "1") == 0 ? "" : "s");
	reply_clear(&rep);
	return 0;
}

const struct ctl_cmd audit_cmds[] = {
	{ "show", audit_show, "[FILTERS]", "print audit records" },
	{ 0 },
};
