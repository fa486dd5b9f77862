/* enclavectl audit show, pubkey, checkpoint, prove: the audit trail and its proofs, from the
 * daemon. (verify, check-proof, consistency and report work offline: cmd_audit_verify.c,
 * cmd_audit_report.c.) */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
	"           [--event EVENT] [--decision allow|deny] [--since WHEN] [--until WHEN]\n"
	"           [--limit N]\n\n"
	"Print the audit records that match, oldest first, one per line: time, event, who,\n"
	"which dataset version and path, the decision and its reason, the grant, the bytes.\n"
	"With --json, each record is printed as one line of JSON, as the daemon sent it.\n"
	"Stewards and auditors only.\n\n"
	"Options:\n"
	"  --dataset NAME     records about this dataset\n"
	"  --user NAME|UID    records about this user (name or numeric uid)\n"
	"  --event EVENT      records of this event (open, close, import, grant, revoke, ...)\n"
	"  --decision D       open records with this decision: allow or deny\n"
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
	OPT_DECISION,
};

struct show_args {
	const char *dataset, *user, *event, *since, *until, *limit, *decision;
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
	/* Shown in their own places; dataset_id only repeats the name, and prev (the hash chain)
	 * is for verifiers, not people: --json has both. */
	static const char *const known[] = { "seq", "time", "event", "user", "uid", "dataset",
					     "dataset_id", "version", "path", "decision", "result",
					     "reason", "grant_id", "bytes", "prev" };

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
		{ "decision", required_argument, NULL, OPT_DECISION },
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
	if (a.decision && strcmp(a.decision, "allow") != 0 && strcmp(a.decision, "deny") != 0)
		return ctl_usage_error("audit show", "--decision: allow or deny");
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
	    (a.decision && set_string(args, "decision", a.decision) < 0) ||
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

static int audit_checkpoint(struct ctl *ctl, int argc, char **argv)
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

static int audit_prove(struct ctl *ctl, int argc, char **argv)
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

const struct ctl_cmd audit_cmds[] = {
	{ "show", audit_show, "[FILTERS]", "print audit records" },
	{ "pubkey", audit_pubkey, "", "print the audit log's verifier key" },
	{ "checkpoint", audit_checkpoint, "[--output FILE]", "sign a checkpoint of the log now" },
	{ "prove", audit_prove, "SEQ", "print an inclusion proof of one record" },
	{ "verify", audit_verify_cmd, "--log DIR --key KEY [--trusted FILE]",
	  "verify the log offline: records, checkpoints, signatures" },
	{ "check-proof", audit_check_proof_cmd, "--key KEY --record FILE PROOF",
	  "verify an inclusion proof offline" },
	{ "consistency", audit_consistency_cmd, "--key KEY --log DIR OLD NEW",
	  "prove a checkpoint extends an older one" },
	{ "report", audit_report_cmd, "[--log DIR] [FILTERS]",
	  "opens, denials, bytes and grants per dataset and user" },
	{ 0 },
};
