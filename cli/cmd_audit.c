/* enclavectl audit show, pubkey, checkpoint, prove: the audit trail and its proofs, from the
 * daemon. (verify, check-proof, consistency and report work offline: cmd_audit_verify.c,
 * cmd_audit_report.c.) */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"
#include "policy/policy.h"
#include "store/store.h"

/* A line for one record is built in memory, capped: a record is at most AUDIT_RECORD_MAX bytes,
 * and made safe for a terminal it can grow at most fourfold (a byte becomes "?" or stays). */
#define LINE_CAP (4u * AUDIT_RECORD_MAX + 4096)

static const char show_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] audit show [--dataset NAME[@VERSION]]\n"
	"           [--user NAME|UID] [--grantee NAME|UID] [--group NAME|GID] [--grant ID]\n"
	"           [--job ID] [--event EVENT[,EVENT]...] [--decision allow|deny]\n"
	"           [--since WHEN] [--until WHEN] [--limit N] [--wide] [--auditor-key FILE]\n"
	"       enclavectl [GLOBAL OPTIONS] audit show --seq N [--auditor-key FILE]\n\n"
	"Print the audit records that match, from the primary's log and every compute node's\n"
	"merged in time order (a node's records say node=NAME; a node log that is damaged, or\n"
	"shorter than a checkpoint its node signed, is an error naming the node), oldest first,\n"
	"one per line: time, event, who,\n"
	"which dataset version and path, the decision and its reason, the grant (to whom, its\n"
	"purpose and consent codes, in full), the bytes, then the record's other fields.\n"
	"--seq N prints one record in detail, a field per line. With --json, each record is\n"
	"printed as one line of JSON, opened. Stewards and auditors only; filters on what is\n"
	"sealed (dataset, user, grantee, group, job) are for auditors.\n\n"
	"The names in the records (users, paths, datasets, purposes, reasons) are sealed: the\n"
	"daemon sends them sealed, and only an auditor's secret key opens them (--auditor-key,\n"
	"the file `enclavectl init --auditor-key-out` wrote). Key records (event log_key) are\n"
	"printed only when --event names them (log_key, or the family audit).\n\n"
	"Options:\n"
	"  --dataset NAME[@VERSION]  records about this dataset (and version, with the grants\n"
	"                     of that version or of every version)\n"
	"  --user NAME|UID    records of what this user did (the actor)\n"
	"  --grantee NAME|UID grants to this user, the approvals, revocations and opens that\n"
	"                     name them, and those opens' closes\n"
	"  --group NAME|GID   the same for grants to this group\n"
	"  --grant ID         records naming grant ID, and the closes of the opens it allowed\n"
	"  --job ID           opens by batch job ID (a Slurm job id), and their closes\n"
	"  --event EVENT      records of these events: names (open, close, read_refused,\n"
	"                     import, grant_request, grant_approve, revoke, deny_add, ...) or\n"
	"                     families (access, grant, deny, dataset, audit, daemon, node), comma-\n"
	"                     separated; an unknown name is an error\n"
	"  --decision D       records with this decision: allow or deny\n"
	"  --since WHEN       records at or after WHEN\n"
	"  --until WHEN       records before WHEN\n"
	"  --limit N          only the last N matching records\n"
	"  --wide             every field of every record, the hash chain and the whole\n"
	"                     grant object included\n"
	"  --seq N            record N alone, in detail (no other filter)\n"
	"  --auditor-key FILE the auditor's secret key (mode 0600), to open sealed records\n"
	"  --json             JSON lines\n"
	"  -h, --help         show this help\n\n"
	"WHEN is RFC 3339 (2026-11-21T09:00:00Z, or with +hh:mm), a date (2026-11-21, midnight\n"
	"UTC), \"now\", or relative to now: -N (ago) or +N followed by s, m, h, d or w (-7d).\n"
	"A dataset, user, group, grant or version that does not exist is an error (exit 1).\n"
	"The events of each family are listed in docs/AUDIT.md, section 8.\n";

enum {
	OPT_DATASET = 0x200,
	OPT_USER,
	OPT_EVENT,
	OPT_SINCE,
	OPT_UNTIL,
	OPT_LIMIT,
	OPT_DECISION,
	OPT_GRANTEE,
	OPT_GROUP,
	OPT_GRANT,
	OPT_JOB,
	OPT_WIDE,
	OPT_SEQ,
	OPT_AUDITOR_KEY,
};

struct show_args {
	const char *dataset, *user, *event, *since, *until, *limit, *decision, *grantee, *group,
		*grant, *job, *seq, *auditor_key;
	bool wide;
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
	case OPT_DECISION: a->decision = arg; return 0;
	case OPT_GRANTEE: a->grantee = arg; return 0;
	case OPT_GROUP: a->group = arg; return 0;
	case OPT_GRANT: a->grant = arg; return 0;
	case OPT_JOB: a->job = arg; return 0;
	case OPT_SEQ: a->seq = arg; return 0;
	case OPT_AUDITOR_KEY: a->auditor_key = arg; return 0;
	case OPT_WIDE: a->wide = true; return 0;
	}
	return EXIT_USAGE;
}

/* How records are printed. */
enum show_view { VIEW_LINE, VIEW_WIDE, VIEW_DETAIL, VIEW_JSON };

/* State of one streamed answer. */
struct show {
	enum show_view view;
	uint64_t printed;
	struct audit_opener *open;  /* opens sealed records; owned by audit_show() */
	struct log_openers nodes;   /* the nodes' logs' openers; owned by audit_show() */
	const char *key_file;       /* --auditor-key, or NULL */
	bool show_keys;             /* --event names log_key, or --seq */
	bool seq_set;               /* --seq: only that record */
	uint64_t seq;
};

/* Does the --event list name log_key, itself or as its family? */
static bool names_key_records(const char *list)
{
	struct audit_matcher *m = NULL;
	struct audit_filter f = { .event = list };
	json_t *rec = json_pack("{s:s}", "event", "log_key");
	bool yes;

	if (!list || !rec || audit_matcher_new(&f, &m) < 0) {
		json_decref(rec);
		return false;
	}
	yes = audit_matcher_test(m, rec, 1) > 0;
	audit_matcher_free(m);
	json_decref(rec);
	return yes;
}

int audit_open_record(struct audit_opener *o, const char *key_file, const json_t *rec,
		      json_t **ret)
{
	char s1[24];
	int r;

	if (!key_file && audit_record_sealed(rec))
		return err_set(-ENOKEY, "record %s is sealed: the names in the audit log are "
			       "readable only with an auditor's secret key; give --auditor-key FILE "
			       "(the file `enclavectl init --auditor-key-out` wrote)",
			       out_member(rec, "seq", s1));
	err_clear();
	r = audit_opener_open(o, rec, ret);
	if (r < 0 && key_file)
		return err_set(r, "%s (auditor key %s)", err_detail(), key_file);
	return r;
}

int log_openers_get(struct log_openers *lo, const char *key_file, const char *node,
		    struct audit_opener **ret)
{
	size_t len = strlen(node);
	struct log_opener *grown;
	int r;

	for (size_t i = 0; i < lo->n; i++)
		if (strcmp(lo->v[i].name, node) == 0) {
			*ret = lo->v[i].o;
			return 0;
		}
	if (len == 0 || len > 64 || node[0] == '.' || strchr(node, '/'))
		return err_set(-EPROTO, "a streamed frame names node \"%.80s\"", node);
	if (lo->n >= 4096)
		return err_set(-E2BIG, "records of more than 4096 nodes");
	grown = realloc(lo->v, (lo->n + 1) * sizeof(*lo->v));
	if (!grown)
		return -ENOMEM;
	lo->v = grown;
	memcpy(lo->v[lo->n].name, node, len + 1);
	r = audit_opener_new(NULL, key_file, &lo->v[lo->n].o);
	if (r < 0)
		return r;
	*ret = lo->v[lo->n++].o;
	return 0;
}

void log_openers_free(struct log_openers *lo)
{
	for (size_t i = 0; i < lo->n; i++)
		audit_opener_free(lo->v[i].o);
	free(lo->v);
	lo->v = NULL;
	lo->n = 0;
}

/* One line being built; text is made safe as it is added. */
struct line {
	char *buf;
	size_t len;
	bool full;
};

static void line_raw(struct line *l, const char *s, size_t n)
{
	if (l->full || l->len + n + 1 > LINE_CAP) {
		l->full = true;
		return;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
	l->buf[l->len] = '\0';
}

/* Append text made safe (out_text's escapes), never cut. */
static void line_text(struct line *l, const char *text)
{
	size_t n = OUT_TEXT_SIZE(strlen(text));
	_cleanup_free_ char *safe = malloc(n);

	if (!safe) {
		l->full = true;
		return;
	}
	out_text(text, 0, safe, n);
	line_raw(l, safe, strlen(safe));
}

/* Append "  text" (the separator only when the line is not empty). */
static void put(struct line *l, const char *text)
{
	if (!*text)
		return;
	if (l->len)
		line_raw(l, "  ", 2);
	line_text(l, text);
}

/* Append "  key=value". */
static void put_kv(struct line *l, const char *key, const char *val)
{
	if (l->len)
		line_raw(l, "  ", 2);
	line_text(l, key);
	line_raw(l, "=", 1);
	line_text(l, val);
}

/* A value as text: strings as they are, numbers, booleans, nested values as compact JSON
 * (malloc'd into *ret_free when needed). */
static const char *value_text(const json_t *v, char scratch[static 32], char **ret_free)
{
	*ret_free = NULL;
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		snprintf(scratch, 32, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return scratch;
	}
	if (json_is_real(v)) {
		snprintf(scratch, 32, "%g", json_real_value(v));
		return scratch;
	}
	if (json_is_boolean(v))
		return json_is_true(v) ? "true" : "false";
	if (json_is_null(v))
		return "null";
	*ret_free = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
	return *ret_free ? *ret_free : "?";
}

static bool is_known(const char *key, bool wide)
{
	/* Shown in their own places. Without --wide, dataset_id only repeats the name, and prev
	 * (the hash chain) and key (the key record a sealed record was sealed under) are for
	 * verifiers, not people. */
	static const char *const known[] = { "seq", "time", "event", "user", "uid", "dataset",
					     "version", "path", "decision", "result", "reason",
					     "grant_id", "bytes", "grant" };

	if (!wide && (strcmp(key, "dataset_id") == 0 || strcmp(key, "prev") == 0 ||
		      strcmp(key, "key") == 0))
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(known); i++)
		if (strcmp(key, known[i]) == 0)
			return true;
	return false;
}

/* What an auditor needs of a grant, in full: to whom, which version, for what, the consent codes
 * and any override, the validity, the approvals it needs, who asked. */
static void put_grant(struct line *l, const json_t *g, bool wide)
{
	static const char *const fields[] = { "version", "purpose", "purpose_code",
					       "consent_override", "not_before", "expires",
					       "approvals_required", "granted_by" };
	char s1[32], s2[32], who[200];
	const char *key;
	const json_t *v;

	snprintf(who, sizeof(who), "%s:%s(%s)", out_member(g, "kind", s1),
		 out_member(g, "principal", s2), out_member(g, "principal_id", s1));
	put_kv(l, "to", who);
	if (wide) {
		json_object_foreach((json_t *)g, key, v) {
			_cleanup_free_ char *nested = NULL;

			if (strcmp(key, "kind") && strcmp(key, "principal") && strcmp(key, "principal_id"))
				put_kv(l, key, value_text(v, s1, &nested));
		}
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
		_cleanup_free_ char *nested = NULL;

		v = json_object_get(g, fields[i]);
		if (!v || json_is_null(v) || (json_is_string(v) && !*json_string_value(v)))
			continue;
		put_kv(l, fields[i], value_text(v, s1, &nested));
	}
}

/* One record for people, on one line: the fields we know in a fixed order, then the rest as
 * key=value, nothing cut. */
static int print_record(const json_t *rec, bool wide)
{
	_cleanup_free_ char *buf = malloc(LINE_CAP);
	struct line l = { .buf = buf };
	char tmp[512], s1[32], s2[32];
	const char *key;
	const json_t *v;

	if (!buf)
		return -ENOMEM;
	buf[0] = '\0';
	if (wide) {
		snprintf(tmp, sizeof(tmp), "#%s", out_member(rec, "seq", s1));
		put(&l, tmp);
	}
	put(&l, out_member(rec, "time", s1));
	put(&l, out_member(rec, "event", s1));
	if (json_object_get(rec, "user") || json_object_get(rec, "uid")) {
		const char *user = out_member(rec, "user", s1), *uid = out_member(rec, "uid", s2);

		if (*user && *uid)
			snprintf(tmp, sizeof(tmp), "%s(%s)", user, uid);
		else if (*user)
			snprintf(tmp, sizeof(tmp), "%s", user);
		else
			snprintf(tmp, sizeof(tmp), "uid %s", uid);
		put(&l, tmp);
	}
	if (json_object_get(rec, "dataset")) {
		const char *ver = out_member(rec, "version", s2);

		snprintf(tmp, sizeof(tmp), "%s%s%s", out_member(rec, "dataset", s1),
			 *ver ? "@" : "", ver);
		put(&l, tmp);
	}
	put(&l, out_member(rec, "path", s1));
	put(&l, out_member(rec, "decision", s1));
	put(&l, out_member(rec, "result", s1));
	/* An allowed open's reason is "allow" again: said once. */
	if (strcmp(out_member(rec, "reason", s1), out_member(rec, "decision", s2)) != 0)
		put(&l, out_member(rec, "reason", s1));
	if (json_object_get(rec, "grant_id"))
		put_kv(&l, "grant", out_member(rec, "grant_id", s1));
	if (json_is_object(json_object_get(rec, "grant")))
		put_grant(&l, json_object_get(rec, "grant"), wide);
	if (json_object_get(rec, "bytes"))
		put_kv(&l, "bytes", out_member(rec, "bytes", s1));
	json_object_foreach((json_t *)rec, key, v) {
		_cleanup_free_ char *nested = NULL;

		if (is_known(key, wide) || (!wide && json_is_null(v)))
			continue;
		put_kv(&l, key, value_text(v, s1, &nested));
	}
	if (l.full)
		return err_set(-E2BIG, "record %s is too long to print; use --json",
			       out_member(rec, "seq", s1));
	if (puts(buf) == EOF)
		return -EIO;
	return 0;
}

/* One member of the detail view, indented by depth; nested objects and arrays one level down. */
static int print_member(const char *key, const json_t *v, int depth)
{
	char s1[32], safe[512];
	_cleanup_free_ char *nested = NULL, *text = NULL;
	const char *k;
	const json_t *c;
	size_t i;

	printf("%*s%s:", depth * 2, "", out_text(key, 64, safe, sizeof(safe)));
	if (json_is_object(v) && json_object_size(v)) {
		fputc('\n', stdout);
		json_object_foreach((json_t *)v, k, c)
			print_member(k, c, depth + 1);
		return 0;
	}
	if (json_is_array(v) && json_array_size(v) && !json_is_integer(json_array_get(v, 0))) {
		fputc('\n', stdout);
		json_array_foreach(v, i, c) {
			snprintf(s1, sizeof(s1), "[%zu]", i);
			print_member(s1, c, depth + 1);
		}
		return 0;
	}
	{
		const char *val = value_text(v, s1, &nested);
		size_t n = OUT_TEXT_SIZE(strlen(val));

		text = malloc(n);
		if (!text)
			return -ENOMEM;
		printf(" %s\n", out_text(val, 0, text, n));
	}
	return 0;
}

/* One record in detail: every member on its own line, in the record's (sorted) order. */
static int print_detail(const json_t *rec)
{
	const char *key;
	const json_t *v;

	json_object_foreach((json_t *)rec, key, v)
		if (print_member(key, v, 0) < 0)
			return -ENOMEM;
	return ferror(stdout) ? -EIO : 0;
}

static int on_records(void *ctx, const json_t *partial)
{
	struct show *s = ctx;
	const json_t *list = json_object_get(partial, "records"), *rec;
	const char *node = json_string_value(json_object_get(partial, "node"));
	struct audit_opener *o = s->open;
	size_t i;

	if (!json_is_array(list))
		return err_set(-EPROTO, "a streamed frame without a \"records\" list");
	if (node) {
		int r = log_openers_get(&s->nodes, s->key_file, node, &o);

		if (r < 0)
			return r;
	}
	json_array_foreach(list, i, rec) {
		json_t *opened = NULL;
		const char *ev;
		int r;

		if (!json_is_object(rec))
			return err_set(-EPROTO, "an audit record that is not a JSON object");
		r = audit_open_record(o, s->key_file, rec, &opened);
		if (r < 0)
			return node ? err_set(r, "node %s: %s", node, err_detail()) : r;
		/* A node's record names its node (the primary's do not: no "node" member). */
		if (node && !json_object_get(opened, "node") &&
		    json_object_set_new(opened, "node", json_string(node)) < 0) {
			json_decref(opened);
			return -ENOMEM;
		}
		/* Key records come with every answer, for opening; they are shown when asked for. */
		ev = json_string_value(json_object_get(opened, "event"));
		if (ev && strcmp(ev, "log_key") == 0 &&
		    (!s->show_keys || (s->seq_set &&
				       json_integer_value(json_object_get(opened, "seq")) !=
				       (json_int_t)s->seq))) {
			json_decref(opened);
			continue;
		}
		switch (s->view) {
		case VIEW_JSON: r = out_json_line(opened); break;
		case VIEW_DETAIL: r = print_detail(opened); break;
		default: r = print_record(opened, s->view == VIEW_WIDE); break;
		}
		json_decref(opened);
		if (r < 0)
			return err_set(r, "cannot write the output");
		s->printed++;
	}
	return 0;
}

/* WHEN -> RFC 3339 UTC. Besides time_parse()'s forms, "-N<unit>" means that long ago (an audit
 * looks back): it is parsed as "+N<unit>" and mirrored around now. EXIT_USAGE after a message
 * naming the command `what`. */
int ctl_absolute_time(const char *what, const char *opt, const char *s,
		      char out[static 40])
{
	int64_t now = (int64_t)time(NULL), t;
	char shown[64], ahead[64];
	bool ago = s[0] == '-';
	int r;

	err_clear();
	if (ago) {
		if (snprintf(ahead, sizeof(ahead), "+%s", s + 1) >= (int)sizeof(ahead))
			return ctl_usage_error(what, "%s '%s': not a time", opt,
					       out_text(s, 40, shown, 64));
	}
	r = time_parse(ago ? ahead : s, now, &t);
	if (r == 0 && ago && __builtin_sub_overflow(now, t - now, &t))
		r = -ERANGE;
	if (r < 0)
		return ctl_usage_error(what, "%s '%s': %s", opt, out_text(s, 40, shown, 64),
				       *err_detail() ? err_detail() : "not a time");
	time_format(t, out);
	return 0;
}

static int set_string(json_t *args, const char *key, const char *v)
{
	json_t *s = json_string(v);

	return s ? json_object_set_new(args, key, s) : -1;
}

/* A positive decimal number no larger than max. */
static bool parse_count(const char *s, unsigned long long max, unsigned long long *ret)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (s[0] < '0' || s[0] > '9' || errno || *end || v > max)
		return false;
	*ret = v;
	return true;
}

/* A name or numeric id for --user, --grantee, --group. */
static bool name_ok(const char *s)
{
	return *s && strlen(s) <= POLICY_NAME_MAX && out_utf8_valid(s, strlen(s));
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
		{ "decision", required_argument, NULL, OPT_DECISION },
		{ "grantee", required_argument, NULL, OPT_GRANTEE },
		{ "group", required_argument, NULL, OPT_GROUP },
		{ "grant", required_argument, NULL, OPT_GRANT },
		{ "job", required_argument, NULL, OPT_JOB },
		{ "seq", required_argument, NULL, OPT_SEQ },
		{ "wide", no_argument, NULL, OPT_WIDE },
		{ "auditor-key", required_argument, NULL, OPT_AUDITOR_KEY },
		{ 0 },
	};
	static const char what[] = "audit show";
	struct show_args a = { 0 };
	struct show s = { 0 };
	struct reply rep = { 0 };
	char since[TIME_TEXT_MAX], until[TIME_TEXT_MAX], name[129];
	unsigned long long limit = 0, grant = 0, job = 0, seq = 0;
	uint32_t version = 0;
	uint64_t count = 0;
	json_t *args;
	int first, r;

	r = ctl_parse(ctl, what, show_usage, argc, argv, opts, on_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error(what, "unexpected argument '%s'", argv[first]);
	if (a.dataset && (r = ctl_parse_dataset(what, a.dataset, name, &version)))
		return r;
	if (a.user && !name_ok(a.user))
		return ctl_usage_error(what, "--user: a name or uid of 1 to %d bytes",
				       POLICY_NAME_MAX);
	if (a.grantee && !name_ok(a.grantee))
		return ctl_usage_error(what, "--grantee: a name or uid of 1 to %d bytes",
				       POLICY_NAME_MAX);
	if (a.group && !name_ok(a.group))
		return ctl_usage_error(what, "--group: a name or gid of 1 to %d bytes",
				       POLICY_NAME_MAX);
	if (a.event && (strlen(a.event) > 512 || audit_event_filter_check(a.event) < 0))
		return ctl_usage_error(what, "--event: %s", strlen(a.event) > 512 ?
				       "a list of at most 512 bytes" : err_detail());
	if (a.decision && strcmp(a.decision, "allow") != 0 && strcmp(a.decision, "deny") != 0)
		return ctl_usage_error(what, "--decision: allow or deny");
	if (a.since && (r = ctl_absolute_time(what, "--since", a.since, since)))
		return r;
	if (a.until && (r = ctl_absolute_time(what, "--until", a.until, until)))
		return r;
	if (a.limit && (!parse_count(a.limit, INT64_MAX, &limit) || limit == 0))
		return ctl_usage_error(what, "--limit '%.40s': a number from 1", a.limit);
	if (a.grant && (!parse_count(a.grant, INT64_MAX, &grant) || grant == 0))
		return ctl_usage_error(what, "--grant '%.40s': a grant id (a number from 1)",
				       a.grant);
	if (a.job && (!parse_count(a.job, INT64_MAX, &job) || job == 0))
		return ctl_usage_error(what, "--job '%.40s': a job id (a number from 1)", a.job);
	if (a.seq && !parse_count(a.seq, INT64_MAX, &seq))
		return ctl_usage_error(what, "--seq '%.40s': a record number (from 0)", a.seq);
	if (a.seq && (a.dataset || a.user || a.grantee || a.group || a.grant || a.job || a.event ||
		      a.decision || a.since || a.until || a.limit || a.wide))
		return ctl_usage_error(what, "--seq shows one record: no other filter");
	args = json_object();
	if (!args ||
	    (a.dataset && set_string(args, "dataset", name) < 0) ||
	    (version && json_object_set_new(args, "version", json_integer(version)) < 0) ||
	    (a.user && set_string(args, "user", a.user) < 0) ||
	    (a.grantee && set_string(args, "grantee", a.grantee) < 0) ||
	    (a.group && set_string(args, "group", a.group) < 0) ||
	    (a.grant && json_object_set_new(args, "grant_id", json_integer((json_int_t)grant)) < 0) ||
	    (a.job && json_object_set_new(args, "job_id", json_integer((json_int_t)job)) < 0) ||
	    (a.seq && json_object_set_new(args, "seq", json_integer((json_int_t)seq)) < 0) ||
	    (a.event && set_string(args, "event", a.event) < 0) ||
	    (a.decision && set_string(args, "decision", a.decision) < 0) ||
	    (a.since && set_string(args, "since", since) < 0) ||
	    (a.until && set_string(args, "until", until) < 0) ||
	    (a.limit && json_object_set_new(args, "limit", json_integer((json_int_t)limit)) < 0)) {
		json_decref(args);
		return ctl_fail(what, "out of memory");
	}
	s.view = ctl->json ? VIEW_JSON : a.seq ? VIEW_DETAIL : a.wide ? VIEW_WIDE : VIEW_LINE;
	err_clear();
	r = audit_opener_new(NULL, a.auditor_key, &s.open);
	if (r < 0) {
		json_decref(args);
		return ctl_fail(what, "--auditor-key: %s", *err_detail() ? err_detail() :
				strerror(-r));
	}
	s.key_file = a.auditor_key;
	s.show_keys = a.seq || names_key_records(a.event);
	s.seq_set = a.seq != NULL;
	s.seq = seq;
	r = ctl_call(ctl, what, "audit.show", args, on_records, &s, &rep);
	audit_opener_free(s.open);
	log_openers_free(&s.nodes);
	if (r)
		return r;
	out_member_u64(rep.result, "count", &count);
	reply_clear(&rep);
	/* Key records are not in the daemon's count; one asked for by --seq was printed. */
	if (a.seq && s.printed)
		count = s.printed;
	if (a.seq && count == 0)
		return ctl_fail(what, "no record %llu in the log", seq);
	if (!ctl->quiet && !ctl->json && !a.seq)
		fprintf(stderr, "%" PRIu64 " record%s\n", count, count == 1 ? "" : "s");
	return 0;
}

/* The offline checks (cmd_audit_verify.c) and the report (cmd_audit_report.c). */
int audit_verify_cmd(struct ctl *ctl, int argc, char **argv);
int audit_check_proof_cmd(struct ctl *ctl, int argc, char **argv);
int audit_consistency_cmd(struct ctl *ctl, int argc, char **argv);
int audit_report_cmd(struct ctl *ctl, int argc, char **argv);

/* ---- pubkey, checkpoint, prove: the daemon signs ------------------------------------------- */

static const char pubkey_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] audit pubkey\n\n"
	"Print the verifier key of the store's audit log: \"name+id+key\" (C2SP signed-note form).\n"
	"Auditors keep it, obtained from a source they trust, and check checkpoints, proofs and\n"
	"whole logs with it offline (`audit verify`). Any local user may ask.\n\n"
	"Options:\n"
	"  --json        print {\"key\": ...}\n"
	"  -h, --help    show this help\n";

static const char checkpoint_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] audit checkpoint [--output FILE]\n\n"
	"Have the daemon sign a checkpoint of the audit log now (C2SP tlog-checkpoint: origin,\n"
	"number of records, root hash, time) and print it. Keep it: `audit verify --trusted FILE`\n"
	"later proves that the log has only grown since. Stewards and auditors only.\n\n"
	"Options:\n"
	"  --output FILE  write the checkpoint to FILE (created, not overwritten) instead\n"
	"  --json         print {\"checkpoint\": ...}\n"
	"  -h, --help     show this help\n";

static const char prove_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] audit prove SEQ [--output FILE] [--record-output FILE]\n\n"
	"Print a proof that record SEQ is in the signed audit log: a C2SP tlog-proof (the record's\n"
	"index, the hashes of its Merkle audit path, and a signed checkpoint). Anyone with the\n"
	"record's exact line and the verifier key checks it offline with `audit check-proof`.\n"
	"Stewards and auditors only.\n\n"
	"Options:\n"
	"  --output FILE         write the proof to FILE (created, not overwritten)\n"
	"  --record-output FILE  write the record's exact line to FILE (created, not overwritten)\n"
	"  --json                print {\"seq\", \"proof\", \"record\"}\n"
	"  -h, --help            show this help\n";

enum {
	OPT_OUTPUT = 0x300,
	OPT_RECORD_OUTPUT,
};

struct out_args {
	const char *output, *record_output;
};

static int on_out_opt(void *ctx, int val, const char *arg)
{
	struct out_args *a = ctx;

	if (val == OPT_OUTPUT)
		a->output = arg;
	else if (val == OPT_RECORD_OUTPUT)
		a->record_output = arg;
	return 0;
}

/* Write text (and a final '\n' if it lacks one) to a new file, or to stdout when path is NULL. */
static int emit(const char *what, const char *path, const char *text)
{
	size_t n = strlen(text);
	bool nl = n == 0 || text[n - 1] != '\n';
	FILE *f = stdout;
	int fd;

	if (path) {
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0)
			return ctl_fail(what, "%s: %s", path, strerror(errno));
		f = fdopen(fd, "w");
		if (!f) {
			close(fd);
			return ctl_fail(what, "%s: %s", path, strerror(errno));
		}
	}
	fwrite(text, 1, n, f);
	if (nl)
		fputc('\n', f);
	if (path ? fclose(f) != 0 : fflush(f) != 0 || ferror(f))
		return ctl_fail(what, "%s: %s", path ? path : "stdout", strerror(errno));
	return 0;
}

/* One call whose result holds text members; print them with --json, else write `member` out. */
static int simple_call(struct ctl *ctl, const char *what, const char *op, json_t *args,
		       const char *member, const char *path)
{
	struct reply rep = { 0 };
	const char *text;
	int r = ctl_call(ctl, what, op, args, NULL, NULL, &rep);

	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	text = json_string_value(json_object_get(rep.result, member));
	r = text ? emit(what, path, text) : ctl_fail(what, "the daemon's answer has no %s", member);
	reply_clear(&rep);
	return r;
}

static int audit_pubkey(struct ctl *ctl, int argc, char **argv)
{
	int first, r = ctl_parse_none(ctl, "audit pubkey", pubkey_usage, argc, argv, &first);

	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("audit pubkey", "unexpected argument '%s'", argv[first]);
	return simple_call(ctl, "audit pubkey", "audit.pubkey", NULL, "key", NULL);
}

static int cmd_audit_checkpoint(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ 0 },
	};
	struct out_args a = { 0 };
	int first, r;

	r = ctl_parse(ctl, "audit checkpoint", checkpoint_usage, argc, argv, opts, on_out_opt, &a,
		      &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("audit checkpoint", "unexpected argument '%s'", argv[first]);
	return simple_call(ctl, "audit checkpoint", "audit.checkpoint", NULL, "checkpoint",
			   a.output);
}

static int cmd_audit_prove(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "record-output", required_argument, NULL, OPT_RECORD_OUTPUT },
		{ 0 },
	};
	struct out_args a = { 0 };
	struct reply rep = { 0 };
	unsigned long long seq;
	const char *proof, *record;
	char *end;
	json_t *args;
	int first, r;

	r = ctl_parse(ctl, "audit prove", prove_usage, argc, argv, opts, on_out_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first + 1 != argc)
		return ctl_usage_error("audit prove", first < argc ? "one SEQ only" :
				       "which record? give its SEQ");
	errno = 0;
	seq = strtoull(argv[first], &end, 10);
	if (argv[first][0] < '0' || argv[first][0] > '9' || errno || *end ||
	    seq > (unsigned long long)INT64_MAX)
		return ctl_usage_error("audit prove", "SEQ '%.40s' is not a record number",
				       argv[first]);
	args = json_pack("{s:I}", "seq", (json_int_t)seq);
	if (!args)
		return ctl_fail("audit prove", "out of memory");
	r = ctl_call(ctl, "audit prove", "audit.prove", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	proof = json_string_value(json_object_get(rep.result, "proof"));
	record = json_string_value(json_object_get(rep.result, "record"));
	if (!proof || !record)
		r = ctl_fail("audit prove", "the daemon's answer has no proof or record");
	if (!r && a.record_output)
		r = emit("audit prove", a.record_output, record);
	if (!r)
		r = emit("audit prove", a.output, proof);
	reply_clear(&rep);
	return r;
}

static const char auditor_add_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] audit auditor-add --public-key FILE\n\n"
	"Seal the audit log to one more auditor key from now on: FILE holds the auditor's public\n"
	"key (one line, \"enclave-auditor-public:...\"). The addition is recorded in the log\n"
	"(auditor_add), and the next record starts a new log key sealed to every auditor listed;\n"
	"records before it stay readable only by the auditors of their time. Stewards only.\n\n"
	"Options:\n"
	"  --public-key FILE  the auditor's public key\n"
	"  --json             print {\"auditor\": ID, \"auditors\": N}\n"
	"  -h, --help         show this help\n";

static int on_pub_opt(void *ctx, int val, const char *arg)
{
	const char **path = ctx;

	(void)val;
	*path = arg;
	return 0;
}

static int audit_auditor_add(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "public-key", required_argument, NULL, 0x400 },
		{ 0 },
	};
	uint8_t pk[AUDIT_AUDITOR_KEY_LEN];
	char text[AUDIT_AUDITOR_PUB_TEXT], s1[24];
	const char *path = NULL;
	struct reply rep = { 0 };
	json_t *args;
	int first, r;

	r = ctl_parse(ctl, "audit auditor-add", auditor_add_usage, argc, argv, opts, on_pub_opt,
		      &path, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("audit auditor-add", "unexpected argument '%s'",
				       argv[first]);
	if (!path)
		return ctl_usage_error("audit auditor-add", "--public-key FILE is required");
	err_clear();
	if (audit_auditor_public_read(path, pk) < 0)
		return ctl_fail("audit auditor-add", "%s", err_detail());
	audit_auditor_public_format(pk, text);
	args = json_pack("{s:s}", "public_key", text);
	if (!args)
		return ctl_fail("audit auditor-add", "out of memory");
	r = ctl_call(ctl, "audit auditor-add", "audit.auditor_add", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	printf("auditor key %s added; the log is sealed to %s auditor keys from now on\n",
	       json_string_value(json_object_get(rep.result, "auditor")) ?
	       json_string_value(json_object_get(rep.result, "auditor")) : "?",
	       out_member(rep.result, "auditors", s1));
	reply_clear(&rep);
	return 0;
}

static const char legacy_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] audit legacy --log DIR --auditor-key FILE --output DIR\n\n"
	"Open the log a store kept from before its audit log was sealed (DIR/" AUDIT_LEGACY_NAME ",\n"
	"written by `enclavectl store upgrade`) into a new directory: its audit.log and checkpoints,\n"
	"byte for byte, so that `audit verify --log OUT --key KEY --trusted CHECKPOINT` checks it\n"
	"with the checkpoints auditors saved before the upgrade. The new log's log_upgrade record\n"
	"names the old log's records and root: compare them. Offline, no daemon.\n\n"
	"Options:\n"
	"  --log DIR          the audit directory holding " AUDIT_LEGACY_NAME "\n"
	"  --auditor-key FILE the auditor's secret key (mode 0600)\n"
	"  --output DIR       a new directory for the old log\n"
	"  -h, --help         show this help\n";

struct legacy_args {
	const char *log, *key, *out;
};

static int on_legacy_opt(void *ctx, int val, const char *arg)
{
	struct legacy_args *a = ctx;

	if (val == 0x500)
		a->log = arg;
	else if (val == 0x501)
		a->key = arg;
	else
		a->out = arg;
	return 0;
}

static int audit_legacy(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "log", required_argument, NULL, 0x500 },
		{ "auditor-key", required_argument, NULL, 0x501 },
		{ "output", required_argument, NULL, 0x502 },
		{ 0 },
	};
	struct legacy_args a = { 0 };
	char *file = NULL;
	int first, r;

	r = ctl_parse(ctl, "audit legacy", legacy_usage, argc, argv, opts, on_legacy_opt, &a,
		      &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("audit legacy", "unexpected argument '%s'", argv[first]);
	if (!a.log || !a.key || !a.out)
		return ctl_usage_error("audit legacy", "--log DIR, --auditor-key FILE and --output "
				       "DIR are required");
	if (asprintf(&file, "%s/%s", a.log, AUDIT_LEGACY_NAME) < 0)
		return ctl_fail("audit legacy", "out of memory");
	err_clear();
	r = audit_legacy_open(file, NULL, a.key, a.out);
	free(file);
	if (r < 0)
		return ctl_fail("audit legacy", "%s", *err_detail() ? err_detail() : strerror(-r));
	if (!ctl->quiet)
		printf("the log from before sealing is in %s (audit.log, checkpoints)\n", a.out);
	return 0;
}

/* ---- export: a verifiable copy for an auditor who is not root ------------------------------ */

static const char export_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] audit export DIR\n\n"
	"Copy the audit log into DIR, a new directory (it must not exist), byte for byte: the\n"
	"daemon signs a checkpoint now and hands over read-only snapshots of audit.log, the\n"
	"checkpoints file and the tree files (tree/), then of every compute node's log and\n"
	"checkpoints (nodes/NAME/, cut at the last complete record: a node may be writing), which\n"
	"enclavectl writes with your own permissions (files 0600, never over an existing file,\n"
	"never through a symbolic link). The copy verifies offline, node logs included:\n"
	"enclavectl audit verify --log DIR --key-file KEY. Each export\n"
	"is an audit record (audit_export), in the copy too. Stewards and auditors: no need to\n"
	"be root.\n\n"
	"Options:\n"
	"  --json        print {\"records\", \"files\", \"export_seq\"}\n"
	"  -h, --help    show this help\n";

struct export {
	const char *dir;        /* as given, for messages */
	int dirfd;              /* DIR; borrowed */
	int treefd;             /* DIR/tree; borrowed */
	uint64_t files, bytes;
};

/* A file name the daemon may send: audit.log, checkpoints, tree/offsets, tree/state, tree/Lnn.
 * Anything else (a path, "..") is a protocol error: the daemon does not choose where we write. */
static bool export_name_ok(const char *name, bool *ret_tree, const char **ret_base)
{
	const char *base = name;

	*ret_tree = strncmp(name, "tree/", 5) == 0;
	if (*ret_tree)
		base = name + 5;
	*ret_base = base;
	if (!*ret_tree)
		return strcmp(name, AUDIT_LOG_NAME) == 0 || strcmp(name, "checkpoints") == 0;
	if (strcmp(base, "offsets") == 0 || strcmp(base, "state") == 0)
		return true;
	return base[0] == 'L' && base[1] >= '0' && base[1] <= '9' && base[2] >= '0' &&
	       base[2] <= '9' && base[3] == '\0';
}

/* A compute node's file: "nodes/NAME/audit.log" or "nodes/NAME/checkpoints", NAME a node name
 * (docs/DEPLOYMENT.md). *ret_node gets NAME (NUL-terminated), *ret_base the file's name. */
static bool export_node_name_ok(const char *name, char ret_node[static 65], const char **ret_base)
{
	const char *n = name + 6, *slash;
	size_t len;

	if (strncmp(name, "nodes/", 6) != 0 || !(slash = strchr(n, '/')))
		return false;
	len = (size_t)(slash - n);
	if (len == 0 || len > 64 || n[0] == '.' || n[0] == '-')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = n[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	memcpy(ret_node, n, len);
	ret_node[len] = '\0';
	*ret_base = slash + 1;
	return strcmp(*ret_base, AUDIT_LOG_NAME) == 0 || strcmp(*ret_base, "checkpoints") == 0;
}

static int on_export_file(void *ctx, const json_t *partial)
{
	struct export *e = ctx;
	_cleanup_close_ int src = client_partial_take_fd();
	_cleanup_close_ int dst = -1;
	_cleanup_close_ int nodefd = -1;
	const char *name = json_string_value(json_object_get(partial, "file")), *base;
	uint64_t len, off = 0;
	struct stat st;
	bool tree = false;
	char buf[65536], node[65];

	if (name && strncmp(name, "nodes/", 6) == 0 && out_member_u64(partial, "length", &len) &&
	    export_node_name_ok(name, node, &base)) {
		/* DIR/nodes/NAME, made here (ours, 0700) for the first of its files. */
		if (mkdirat(e->dirfd, "nodes", 0700) < 0 && errno != EEXIST)
			return err_set(-errno, "%s/nodes: %s", e->dir, strerror(errno));
		snprintf(buf, sizeof(buf), "nodes/%s", node);
		if (mkdirat(e->dirfd, buf, 0700) < 0 && errno != EEXIST)
			return err_set(-errno, "%s/%s: %s", e->dir, buf, strerror(errno));
		nodefd = openat(e->dirfd, buf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nodefd < 0)
			return err_set(-errno, "%s/%s: %s", e->dir, buf, strerror(errno));
	} else if (!name || !out_member_u64(partial, "length", &len) ||
		   !export_name_ok(name, &tree, &base)) {
		return err_set(-EPROTO, "an export frame without a known file name and length");
	}
	if (src < 0)
		return err_set(-EPROTO, "the export frame of %s carries no descriptor", name);
	if (fstat(src, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size < len ||
	    (fcntl(src, F_GETFL) & O_ACCMODE) != O_RDONLY)
		return err_set(-EPROTO, "the descriptor for %s is not a read-only file of %llu bytes",
			       name, (unsigned long long)len);
	dst = openat(nodefd >= 0 ? nodefd : tree ? e->treefd : e->dirfd, base,
		     O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (dst < 0)
		return err_set(-errno, "%s/%s: %s", e->dir, name, strerror(errno));
	while (off < len) {
		size_t want = (size_t)MIN(len - off, (uint64_t)sizeof(buf));
		ssize_t n = pread(src, buf, want, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return err_set(n < 0 ? -errno : -EIO, "cannot read %s from the daemon: %s",
				       name, n < 0 ? strerror(errno) : "it ended early");
		int w = pwrite_all(dst, buf, (size_t)n, off);

		if (w < 0)
			return err_set(w, "%s/%s: %s", e->dir, name, strerror(-w));
		off += (uint64_t)n;
	}
	if (fsync(dst) < 0)
		return err_set(-errno, "%s/%s: %s", e->dir, name, strerror(errno));
	e->files++;
	e->bytes += len;
	return 0;
}

static int audit_export_cmd(struct ctl *ctl, int argc, char **argv)
{
	static const char what[] = "audit export";
	struct export e = { .dirfd = -1, .treefd = -1 };
	struct reply rep = { 0 };
	uint64_t records = 0;
	int first, r;

	r = ctl_parse_none(ctl, what, export_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error(what, "where to? give a new directory DIR");
	if (first + 1 < argc)
		return ctl_usage_error(what, "one DIR only");
	e.dir = argv[first];
	/* A new directory of ours: nothing in it can be overwritten or be a link planted there. */
	if (mkdir(e.dir, 0700) < 0)
		return ctl_fail(what, "%s: %s%s", e.dir, strerror(errno),
				errno == EEXIST ? " (give a directory that does not exist yet)" : "");
	e.dirfd = open(e.dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (e.dirfd < 0 || mkdirat(e.dirfd, "tree", 0700) < 0 ||
	    (e.treefd = openat(e.dirfd, "tree", O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			       O_CLOEXEC)) < 0) {
		r = ctl_fail(what, "%s: %s", e.dir, strerror(errno));
		goto out;
	}
	r = ctl_call_fds(ctl, what, "audit.export", NULL, true, on_export_file, &e, &rep);
	if (r) {
		fprintf(stderr, "enclavectl: audit export: %s is incomplete; remove it\n", e.dir);
		goto out;
	}
	out_member_u64(rep.result, "records", &records);
	if (ctl->json) {
		r = ctl_print_json(&rep);
		goto out;
	}
	printf("exported %" PRIu64 " records (%" PRIu64 " files, %" PRIu64 " bytes) to %s\n"
	       "verify it offline with: enclavectl audit verify --log %s --key-file KEY\n",
	       records, e.files, e.bytes, e.dir, e.dir);
	reply_clear(&rep);
out:
	if (e.treefd >= 0)
		close(e.treefd);
	if (e.dirfd >= 0)
		close(e.dirfd);
	return r;
}


static const char keygen_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] audit keygen --secret-out FILE\n\n"
	"Make an auditor key pair (X25519): the secret half goes to a new FILE (mode 0600, never\n"
	"overwritten), the public half is printed (\"enclave-auditor-public:...\") for the steward:\n"
	"`enclavectl init --auditor-public-key` or `enclavectl audit auditor-add --public-key`.\n"
	"Offline; the secret never leaves FILE.\n\n"
	"Options:\n"
	"  --secret-out FILE  where the secret half goes\n"
	"  --json             print {\"public_key\", \"secret_out\"}\n"
	"  -h, --help         show this help\n";

static int audit_keygen(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "secret-out", required_argument, NULL, 0x400 },
		{ 0 },
	};
	uint8_t pk[AUDIT_AUDITOR_KEY_LEN];
	char text[AUDIT_AUDITOR_PUB_TEXT];
	const char *path = NULL;
	int first, r;

	r = ctl_parse(ctl, "audit keygen", keygen_usage, argc, argv, opts, on_pub_opt, &path,
		      &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("audit keygen", "unexpected argument '%s'", argv[first]);
	if (!path)
		return ctl_usage_error("audit keygen", "--secret-out FILE is required");
	err_clear();
	if (audit_auditor_keypair_write(path, pk) < 0)
		return ctl_fail("audit keygen", "%s", err_detail());
	audit_auditor_public_format(pk, text);
	if (ctl->json) {
		json_t *o = json_pack("{s:s, s:s}", "public_key", text, "secret_out", path);

		r = o ? out_json(o) : -ENOMEM;
		json_decref(o);
		return r < 0 ? ctl_fail("audit keygen", "cannot write the output") : 0;
	}
	printf("%s\n", text);
	return 0;
}

const struct ctl_cmd audit_cmds[] = {
	{ "show", audit_show, "[FILTERS]", "print audit records" },
	{ "pubkey", audit_pubkey, "", "print the audit log's verifier key" },
	{ "checkpoint", cmd_audit_checkpoint, "[--output FILE]", "sign a checkpoint of the log now" },
	{ "prove", cmd_audit_prove, "SEQ", "print an inclusion proof of one record" },
	{ "keygen", audit_keygen, "--secret-out FILE",
	  "make an auditor key pair; print its public half" },
	{ "legacy", audit_legacy, "--log DIR --auditor-key FILE --output DIR",
	  "open the log kept from before sealing, to verify it" },
	{ "auditor-add", audit_auditor_add, "--public-key FILE",
	  "seal the log to one more auditor key from now on" },
	{ "verify", audit_verify_cmd, "--log DIR --key KEY [--trusted FILE]",
	  "verify the log offline: records, checkpoints, signatures" },
	{ "check-proof", audit_check_proof_cmd, "--key KEY --record FILE PROOF",
	  "verify an inclusion proof offline" },
	{ "consistency", audit_consistency_cmd, "--key KEY --log DIR OLD NEW",
	  "prove a checkpoint extends an older one" },
	{ "report", audit_report_cmd, "[--log DIR] [FILTERS]",
	  "opens, denials, bytes and grants per dataset, user and job" },
	{ "export", audit_export_cmd, "DIR", "copy the log, verifiable offline, into a new DIR" },
	{ "new-log", cmd_audit_new_log, "--store DIR --reason TEXT",
	  "offline: start a new log on a store whose log is lost, saying why" },
	{ 0 },
};
