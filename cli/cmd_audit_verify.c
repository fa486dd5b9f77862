/* enclavectl audit verify | check-proof | consistency: offline checks of the audit log, with no
 * daemon and no secret, only the log's verifier key (docs/AUDIT.md, "Verification"). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "audit/audit.h"
#include "audit/merkle.h"
#include "audit/note.h"
#include "audit/verify.h"
#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"

/* Entry points, in the audit_cmds table of cmd_audit.c. */
int audit_verify_cmd(struct ctl *ctl, int argc, char **argv);
int audit_check_proof_cmd(struct ctl *ctl, int argc, char **argv);
int audit_consistency_cmd(struct ctl *ctl, int argc, char **argv);

/* Largest file read as a key, a checkpoint, a proof or a record. */
#define SMALL_FILE_MAX (64u * 1024)

enum {
	OPT_LOG = 0x200,
	OPT_KEY,
	OPT_KEY_FILE,
	OPT_TRUSTED,
	OPT_RECORD,
	OPT_LINE,
};

/* Options of the three commands; strings borrowed from argv. */
struct vargs {
	const char *log, *key, *key_file, *trusted, *record, *line;
};

static int on_opt(void *ctx, int val, const char *arg)
{
	struct vargs *a = ctx;

	switch (val) {
	case OPT_LOG: a->log = arg; return 0;
	case OPT_KEY: a->key = arg; return 0;
	case OPT_KEY_FILE: a->key_file = arg; return 0;
	case OPT_TRUSTED: a->trusted = arg; return 0;
	case OPT_RECORD: a->record = arg; return 0;
	case OPT_LINE: a->line = arg; return 0;
	}
	return EXIT_USAGE;
}

static const struct option vopts[] = {
	{ "log", required_argument, NULL, OPT_LOG },
	{ "key", required_argument, NULL, OPT_KEY },
	{ "key-file", required_argument, NULL, OPT_KEY_FILE },
	{ "trusted", required_argument, NULL, OPT_TRUSTED },
	{ "record", required_argument, NULL, OPT_RECORD },
	{ "line", required_argument, NULL, OPT_LINE },
	{ 0 },
};

/* Read a whole small file (at most SMALL_FILE_MAX bytes) into *ret (malloc'd, NUL-terminated). */
static int read_small(const char *path, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = -1;
	char *buf;
	ssize_t n;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(-errno, "%s: %s", path, strerror(errno));
	buf = malloc(SMALL_FILE_MAX + 2);
	if (!buf)
		return -ENOMEM;
	n = read_full(fd, buf, SMALL_FILE_MAX + 1);
	if (n < 0) {
		free(buf);
		return err_set((int)n, "%s: %s", path, strerror((int)-n));
	}
	if ((size_t)n > SMALL_FILE_MAX) {
		free(buf);
		return err_set(-EFBIG, "%s: longer than %u bytes", path, SMALL_FILE_MAX);
	}
	buf[n] = '\0';
	*ret = buf;
	*ret_len = (size_t)n;
	return 0;
}

/* The verifier key from --key or --key-file (one line; a final newline is dropped). */
static int load_key(const char *what, const struct vargs *a, struct note_verifier *ret)
{
	_cleanup_free_ char *buf = NULL;
	const char *text = a->key;
	size_t len;
	int r;

	if (!!a->key == !!a->key_file)
		return ctl_usage_error(what, "give the log's verifier key with --key or --key-file");
	if (a->key_file) {
		r = read_small(a->key_file, &buf, &len);
		if (r < 0)
			return ctl_fail(what, "%s", err_detail());
		while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
			len--;
		text = buf;
	} else {
		len = strlen(text);
	}
	r = note_verifier_parse(text, len, ret);
	if (r < 0)
		return ctl_fail(what, "%s: %s", a->key_file ? a->key_file : "--key", err_detail());
	return -1;
}

static void hex32(const uint8_t h[static MERKLE_HASH_LEN], char out[static 2 * MERKLE_HASH_LEN + 1])
{
	hex_encode(h, MERKLE_HASH_LEN, out);
}

static json_t *cp_json(const struct checkpoint *c, int64_t index)
{
	char root[2 * MERKLE_HASH_LEN + 1], t[TIME_TEXT_MAX] = "";
	json_t *j;

	hex32(c->root, root);
	if (c->time_ns)
		time_format_ns(c->time_ns, t);
	j = json_pack("{s:s, s:I, s:s, s:s}", "origin", c->origin, "size", (json_int_t)c->size,
		      "root", root, "time", t);
	if (j && index >= 0)
		json_object_set_new(j, "index", json_integer(index));
	return j;
}

/* ---- audit verify ------------------------------------------------------------------------- */

/* ---- Node logs (issue 17; docs/AUDIT.md section 19) ---------------------------------------------
 *
 * Each compute node writes its own log in DIR/nodes/NAME, signed with its own key. The verifier
 * key of that log is not given on the command line: it is the key the primary recorded when it
 * enrolled the node (its node_add record, in the clear, in the log just verified), so a node
 * log's trust comes from the primary's log. Checked: the node log as any log, against the key of
 * an enrolment of NAME (a log signed by a key never enrolled for NAME is a finding); no record
 * dated before that enrolment took effect; no allowed open dated after the node's removal plus
 * the longest staleness bound a node may run with (by then an honest node refuses every open). */
#define NODE_NAME_MAX 64
#define NODE_ENROLMENTS_MAX 4096
#define NODE_REMOVAL_GRACE_S 600     /* NODE_STALE_MS_MAX: a node's longest staleness bound */
#define NODE_CLOCK_SKEW_S 2

struct enrolment {
	uint64_t id;
	char name[NODE_NAME_MAX + 1];
	uint8_t pk[32];
	int64_t enrolled_s;      /* 0: never approved */
	int64_t removed_s;       /* 0: not removed */
};

struct enrolments {
	struct enrolment *e;
	size_t n;
	int err;
};

static int64_t rec_time_s(const json_t *rec)
{
	const char *t = json_string_value(json_object_get(rec, "time"));
	char buf[TIME_TEXT_MAX];
	int64_t s = 0;
	char *dot;

	if (!t || strlen(t) >= sizeof(buf))
		return 0;
	snprintf(buf, sizeof(buf), "%s", t);
	/* Whole seconds are enough here: the fraction goes. */
	dot = strchr(buf, '.');
	if (dot) {
		dot[0] = 'Z';
		dot[1] = '\0';
	}
	return time_parse_rfc3339(buf, &s) == 0 ? s : 0;
}

static struct enrolment *enrolment_find(struct enrolments *l, uint64_t id)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->e[i].id == id)
			return &l->e[i];
	return NULL;
}

static int on_node_record(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct enrolments *l = ctx;
	const char *ev = json_string_value(json_object_get(rec, "event"));
	const char *state = json_string_value(json_object_get(rec, "node_state"));
	json_int_t id = json_integer_value(json_object_get(rec, "node_id"));
	int64_t t = rec_time_s(rec);
	struct enrolment *e;

	(void)line, (void)len;
	if (!ev || id <= 0)
		return 0;
	e = enrolment_find(l, (uint64_t)id);
	if (strcmp(ev, "node_add") == 0 && !e) {
		const char *name = json_string_value(json_object_get(rec, "node"));
		const char *pk = json_string_value(json_object_get(rec, "sign_pk"));
		struct enrolment x = { .id = (uint64_t)id };
		size_t got = 0;
		struct enrolment *a;

		if (!name || strlen(name) > NODE_NAME_MAX || !pk || strlen(pk) != 64 ||
		    sodium_hex2bin(x.pk, 32, pk, 64, NULL, &got, NULL) != 0 || got != 32)
			return 0;   /* not one the daemon wrote: the node log finds no key in it */
		if (l->n == NODE_ENROLMENTS_MAX) {
			l->err = -E2BIG;
			return 1;
		}
		a = reallocarray(l->e, l->n + 1, sizeof(*a));
		if (!a) {
			l->err = -ENOMEM;
			return 1;
		}
		l->e = a;
		snprintf(x.name, sizeof(x.name), "%s", name);
		if (state && strcmp(state, "enrolled") == 0)
			x.enrolled_s = t;
		l->e[l->n++] = x;
	} else if (strcmp(ev, "node_approve") == 0 && e) {
		if (state && strcmp(state, "enrolled") == 0 && !e->enrolled_s)
			e->enrolled_s = t;
	} else if (strcmp(ev, "node_remove") == 0 && e && !e->removed_s) {
		e->removed_s = t;
	}
	return 0;
}

/* What one node log showed. */
struct node_check {
	const struct enrolment *en;   /* the enrolment whose key signed it, or NULL */
	struct verify_result *res;
	uint64_t early, late;         /* records before its enrolment; allowed opens after removal */
	uint64_t first_early, first_late;
};

static int on_node_log_record(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct node_check *c = ctx;
	const char *ev = json_string_value(json_object_get(rec, "event"));
	const char *dec = json_string_value(json_object_get(rec, "decision"));
	json_int_t seq = json_integer_value(json_object_get(rec, "seq"));
	int64_t t = rec_time_s(rec);

	(void)line, (void)len;
	if (!c->en || !ev || strcmp(ev, "log_key") == 0)
		return 0;
	if (t && t + NODE_CLOCK_SKEW_S < c->en->enrolled_s && c->early++ == 0)
		c->first_early = (uint64_t)seq;
	if (c->en->removed_s && t > c->en->removed_s + NODE_REMOVAL_GRACE_S + NODE_CLOCK_SKEW_S &&
	    strcmp(ev, "open") == 0 && dec && strcmp(dec, "allow") == 0 && c->late++ == 0)
		c->first_late = (uint64_t)seq;
	return 0;
}

static bool signed_by_key(const struct verify_result *r)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->findings[i].kind == VERIFY_BAD_SIGNATURE ||
		    r->findings[i].kind == VERIFY_UNKNOWN_KEY)
			return false;
	return r->checkpoints > 0;
}

/* Verify dir (node NAME's log) against the enrolments of NAME in l. */
static int node_check_run(const char *dir, const char *name, const struct enrolments *l,
			  struct node_check *ret)
{
	struct node_check c = { 0 };
	int r = 0;

	for (size_t i = l->n; i-- > 0 && r == 0;) {
		struct verify_options o = { .log_dir = dir };
		struct note_verifier v;
		struct verify_result *res = NULL;
		char kname[NODE_NAME_MAX + 8], *text = NULL;

		if (strcmp(l->e[i].name, name) != 0 || !l->e[i].enrolled_s)
			continue;
		snprintf(kname, sizeof(kname), "%s.node", name);
		r = note_verifier_format(kname, l->e[i].pk, &text);
		if (r == 0)
			r = note_verifier_parse(text, strlen(text), &v);
		free(text);
		o.key = &v;
		if (r == 0)
			r = verify_log(&o, &res);
		if (r < 0)
			break;
		if (!c.res || signed_by_key(res)) {
			verify_result_free(c.res);
			c.res = res;
			c.en = &l->e[i];
			if (signed_by_key(res))
				break;
		} else {
			verify_result_free(res);
		}
	}
	if (r < 0) {
		verify_result_free(c.res);
		return r;
	}
	if (c.en && signed_by_key(c.res)) {
		/* The dates: a log that does not read through (damaged) has its findings already. */
		(void)audit_foreach(dir, NULL, on_node_log_record, &c);
	} else {
		c.en = NULL;   /* no enrolment's key signed it */
	}
	*ret = c;
	return 0;
}

/* Every node log under log/nodes: its findings into *ret_bad (a count), printed or into out. */
static int verify_nodes(struct ctl *ctl, const char *log, json_t *out, uint64_t *ret_bad)
{
	struct enrolments l = { 0 };
	struct audit_filter flt = { .event = "node_add,node_approve,node_remove" };
	char path[4200];
	json_t *list = out ? json_array() : NULL;
	uint64_t bad = 0;
	DIR *d;
	int r;

	snprintf(path, sizeof(path), "%s/nodes", log);
	d = opendir(path);
	if (!d) {
		json_decref(list);
		*ret_bad = 0;
		return errno == ENOENT ? 0 : err_set(-errno, "%s: %s", path, strerror(errno));
	}
	r = audit_foreach(log, &flt, on_node_record, &l);
	if (r == 0 && l.err)
		r = l.err;
	if (r < 0) {
		/* The primary's log does not read through: its own findings say why; without its
		 * enrolments no node log can be trusted. */
		bad++;
		if (!ctl->json)
			printf("nodes: the enrolments cannot be read from the log (%s): no node log "
			       "is trusted\n", err_detail());
		r = 0;
		goto out;
	}
	for (struct dirent *de; (de = readdir(d));) {
		char dir[4300], msg[400];
		struct node_check c = { 0 };
		json_t *jn = NULL, *jf = NULL;
		size_t nf = 0;

		if (de->d_name[0] == '.' || strlen(de->d_name) > NODE_NAME_MAX)
			continue;
		/* path is at most PATH_MAX and the name short, so never cut; if it were, the node's
		 * log would fail to verify rather than be skipped. */
		if ((size_t)snprintf(dir, sizeof(dir), "%s/%s", path, de->d_name) >= sizeof(dir))
			dir[0] = '\0';
		r = node_check_run(dir, de->d_name, &l, &c);
		if (r < 0) {
			snprintf(msg, sizeof(msg), "the log cannot be verified: %s", err_detail());
			r = 0;
		} else {
			msg[0] = '\0';
		}
		if (list) {
			jf = json_array();
			jn = json_pack("{s:s}", "node", de->d_name);
		}
#define NODE_FINDING(kind, text)                                                          \
	do {                                                                              \
		nf++;                                                                     \
		if (jf)                                                                   \
			json_array_append_new(jf, json_pack("{s:s, s:s}", "kind", kind,   \
							    "message", text));    \
		else                                                                      \
			printf("node %s: %s: %s\n", de->d_name, kind, text);              \
	} while (0)
		if (msg[0])
			NODE_FINDING("malformed", msg);
		if (!msg[0] && !c.en) {
			snprintf(msg, sizeof(msg), "its checkpoints are signed by no key enrolled for "
				 "node %s in this log (never enrolled, or a key of its own)",
				 de->d_name);
			NODE_FINDING("unknown_key", msg);
		}
		for (size_t i = 0; c.res && c.en && i < c.res->n; i++)
			NODE_FINDING(verify_kind_name(c.res->findings[i].kind),
				     c.res->findings[i].text);
		if (c.early) {
			snprintf(msg, sizeof(msg), "%" PRIu64 " record(s) from seq %" PRIu64 " are dated "
				 "before the node's enrolment (%" PRIu64 ") took effect", c.early,
				 c.first_early, c.en->id);
			NODE_FINDING("inconsistent", msg);
		}
		if (c.late) {
			snprintf(msg, sizeof(msg), "%" PRIu64 " open(s) from seq %" PRIu64 " allowed after "
				 "the node's removal (enrolment %" PRIu64 ") and its longest staleness "
				 "bound", c.late, c.first_late, c.en->id);
			NODE_FINDING("inconsistent", msg);
		}
#undef NODE_FINDING
		bad += nf;
		if (jn) {
			json_object_set_new(jn, "ok", json_boolean(nf == 0));
			json_object_set_new(jn, "findings", jf);
			json_object_set_new(jn, "records", json_integer(c.res ? (json_int_t)
									c.res->records : 0));
			json_object_set_new(jn, "checkpoints", json_integer(c.res ? (json_int_t)
									    c.res->checkpoints : 0));
			if (c.en)
				json_object_set_new(jn, "enrolment", json_integer((json_int_t)c.en->id));
			json_array_append_new(list, jn);
		} else if (nf == 0) {
			printf("node %s: records: %" PRIu64 ", checkpoints: %" PRIu64 ", signed by the "
			       "key of enrolment %" PRIu64 "\n", de->d_name, c.res->records,
			       c.res->checkpoints, c.en->id);
		}
		verify_result_free(c.res);
	}
out:
	closedir(d);
	free(l.e);
	if (list)
		json_object_set_new(out, "nodes", list);
	*ret_bad = bad;
	return r;
}

static const char verify_usage[] =
	"Usage: enclavectl audit verify --log DIR (--key KEY | --key-file FILE) [--trusted FILE]\n"
	"           [--json]\n\n"
	"Verify the audit log in DIR (audit.log and checkpoints) offline: no daemon, no secret.\n"
	"Recomputes the Merkle tree of the records, checks the prev chain and the seqs, every\n"
	"checkpoint's signature and that each matches the records and extends the one before;\n"
	"with --trusted, a checkpoint saved earlier, proves that the log has only grown since\n"
	"(RFC 9162 consistency proof). Prints each finding: which record was modified, removed,\n"
	"inserted or reordered, a truncation, a fork, a bad or unknown signature, a rollback,\n"
	"a checkpoint of another log; then the records no checkpoint covers ('uncovered').\n"
	"Then every compute node's log in DIR/nodes/NAME (docs/DEPLOYMENT.md), the same way,\n"
	"against the key the log above recorded at the node's enrolment: a node log signed by\n"
	"a key never enrolled for it, records dated before its enrolment, and opens allowed\n"
	"after its removal are findings too.\n"
	"Exit status 0 only for a clean log, 1 if anything is wrong.\n\n"
	"Options:\n"
	"  --log DIR          the audit directory (holding audit.log and checkpoints)\n"
	"  --key KEY          the log's verifier key (name+id+key, from 'audit pubkey')\n"
	"  --key-file FILE    the same, read from FILE\n"
	"  --trusted FILE     a signed checkpoint saved earlier\n"
	"  --json             the findings and the verified tree as JSON\n"
	"  -h, --help         show this help\n";

int audit_verify_cmd(struct ctl *ctl, int argc, char **argv)
{
	struct vargs a = { 0 };
	struct note_verifier key;
	struct verify_options o = { 0 };
	struct verify_result *res = NULL;
	_cleanup_free_ char *trusted = NULL;
	char root[2 * MERKLE_HASH_LEN + 1], t[TIME_TEXT_MAX];
	int first, r;

	r = ctl_parse(ctl, "audit verify", verify_usage, argc, argv, vopts, on_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("audit verify", "unexpected argument '%s'", argv[first]);
	if (!a.log)
		return ctl_usage_error("audit verify", "--log DIR is required");
	if (a.record || a.line)
		return ctl_usage_error("audit verify", "--record and --line belong to check-proof");
	r = load_key("audit verify", &a, &key);
	if (r >= 0)
		return r;
	o.log_dir = a.log;
	o.key = &key;
	if (a.trusted) {
		r = read_small(a.trusted, &trusted, &o.trusted_len);
		if (r < 0)
			return ctl_fail("audit verify", "%s", err_detail());
		o.trusted = trusted;
	}
	r = verify_log(&o, &res);
	if (r < 0)
		return ctl_fail("audit verify", "%s: %s", a.log, *err_detail() ? err_detail() : strerror(-r));

	if (ctl->json) {
		json_t *out = json_object(), *list = json_array();
		uint64_t node_bad = 0;

		for (size_t i = 0; i < res->n; i++) {
			const struct verify_finding *f = &res->findings[i];
			json_t *j = json_pack("{s:s, s:s}", "kind", verify_kind_name(f->kind),
					      "message", f->text);

			if (f->seq != VERIFY_NONE)
				json_object_set_new(j, "seq", json_integer((json_int_t)f->seq));
			if (f->seq_last != VERIFY_NONE)
				json_object_set_new(j, "seq_last", json_integer((json_int_t)f->seq_last));
			if (f->line)
				json_object_set_new(j, "line", json_integer((json_int_t)f->line));
			if (f->cp != VERIFY_CP_NONE)
				json_object_set_new(j, "checkpoint", f->cp == VERIFY_CP_TRUSTED ?
						    json_string("trusted") : json_integer(f->cp));
			if (f->cp2 != VERIFY_CP_NONE)
				json_object_set_new(j, "checkpoint2", json_integer(f->cp2));
			json_array_append_new(list, j);
		}
		hex32(res->records_root, root);
		json_object_set_new(out, "ok", json_boolean(res->n == 0 && res->dropped == 0));
		json_object_set_new(out, "findings", list);
		json_object_set_new(out, "findings_dropped", json_integer((json_int_t)res->dropped));
		json_object_set_new(out, "records", json_integer((json_int_t)res->records));
		json_object_set_new(out, "records_root", json_string(root));
		json_object_set_new(out, "checkpoints", json_integer((json_int_t)res->checkpoints));
		json_object_set_new(out, "uncovered", json_integer((json_int_t)res->uncovered));
		if (res->uncovered)
			json_object_set_new(out, "uncovered_first",
					    json_integer((json_int_t)res->uncovered_first));
		if (res->have_verified)
			json_object_set_new(out, "verified", cp_json(&res->verified, res->verified_index));
		if (res->have_trusted) {
			json_t *proof = json_array();

			for (size_t i = 0; i < res->consistency_n; i++) {
				hex32(res->consistency[i], root);
				json_array_append_new(proof, json_string(root));
			}
			json_object_set_new(out, "trusted", cp_json(&res->trusted, -1));
			json_object_set_new(out, "consistency_proof", proof);
		}
		r = verify_nodes(ctl, a.log, out, &node_bad);
		if (r < 0)
			return ctl_fail("audit verify", "%s", err_detail());
		if (node_bad)
			json_object_set_new(out, "ok", json_false());
		res->dropped += node_bad;   /* counted as not clean below */
		if (out_json(out) < 0)
			r = 1;
		json_decref(out);
	} else {
		uint64_t node_bad = 0;

		for (size_t i = 0; i < res->n; i++)
			printf("%s: %s\n", verify_kind_name(res->findings[i].kind), res->findings[i].text);
		if (res->dropped)
			printf("... and %" PRIu64 " more findings\n", res->dropped);
		if (res->have_verified) {
			hex32(res->verified.root, root);
			time_format_ns(res->verified.time_ns, t);
			printf("verified: tree size %" PRIu64 ", root %s, checkpoint %" PRId64
			       " signed %s\n", res->verified.size, root,
			       res->verified_index, res->verified.time_ns ? t : "(no time)");
		}
		printf("records: %" PRIu64 ", checkpoints: %" PRIu64 "\n", res->records,
		       res->checkpoints);
		if (res->uncovered == 1)
			printf("uncovered: record %" PRIu64 " is in no checkpoint that matches the "
			       "records: only the prev chain vouches for it\n", res->uncovered_first);
		else if (res->uncovered)
			printf("uncovered: records %" PRIu64 " to %" PRIu64 " (%" PRIu64 ") are in no "
			       "checkpoint that matches the records: only the prev chain vouches "
			       "for them\n", res->uncovered_first,
			       res->uncovered_first + res->uncovered - 1, res->uncovered);
		if (res->have_trusted && res->n == 0)
			printf("consistent with the trusted checkpoint (size %" PRIu64 "): proof of %zu "
			       "hashes verified\n", res->trusted.size, res->consistency_n);
		if (res->log_torn_bytes || res->cp_torn_bytes)
			fprintf(stderr, "enclavectl: audit verify: note: %" PRIu64 " bytes at the end of "
				"audit.log and %" PRIu64 " of checkpoints are incomplete (being written, or "
				"torn by a crash) and were not checked\n", res->log_torn_bytes,
				res->cp_torn_bytes);
		r = verify_nodes(ctl, a.log, NULL, &node_bad);
		if (r < 0) {
			verify_result_free(res);
			return ctl_fail("audit verify", "%s", err_detail());
		}
		if (node_bad)
			fprintf(stderr, "enclavectl: audit verify: %" PRIu64 " finding(s) in the node "
				"logs\n", node_bad);
		res->dropped += node_bad;   /* counted as not clean below */
		if (fflush(stdout) != 0)
			r = 1;
	}
	r = (res->n == 0 && res->dropped == 0 && r == 0) ? 0 : 1;
	if (!ctl->json && r && res->n)
		fprintf(stderr, "enclavectl: audit verify: %zu finding(s): the log is not clean\n", res->n);
	verify_result_free(res);
	return r;
}

/* ---- audit check-proof -------------------------------------------------------------------- */

static const char check_usage[] =
	"Usage: enclavectl audit check-proof (--key KEY | --key-file FILE)\n"
	"           (--record FILE | --line TEXT) PROOF_FILE\n\n"
	"Verify a proof (c2sp.org/tlog-proof, as 'audit prove' prints it) offline: its checkpoint\n"
	"is signed by the key and names the key's log (its origin is the key's name), and the\n"
	"record (its audit.log line, with or without the final\n"
	"newline) is in that checkpoint's tree at the proof's index.\n"
	"Exit status 0 if the proof holds, 1 if not.\n\n"
	"Options:\n"
	"  --key KEY          the log's verifier key\n"
	"  --key-file FILE    the same, read from FILE\n"
	"  --record FILE      a file holding the record's line\n"
	"  --line TEXT        the record's line itself\n"
	"  --json             print {\"ok\": true, \"index\", \"size\", \"origin\"}\n"
	"  -h, --help         show this help\n";

int audit_check_proof_cmd(struct ctl *ctl, int argc, char **argv)
{
	struct vargs a = { 0 };
	struct note_verifier key;
	struct checkpoint cp;
	_cleanup_free_ char *proof = NULL, *rec = NULL;
	const char *line;
	size_t plen, llen;
	uint8_t leaf[MERKLE_HASH_LEN];
	uint64_t index;
	int first, r;

	r = ctl_parse(ctl, "audit check-proof", check_usage, argc, argv, vopts, on_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first + 1 != argc)
		return ctl_usage_error("audit check-proof", "give exactly one PROOF_FILE");
	if (!!a.record == !!a.line)
		return ctl_usage_error("audit check-proof", "give the record with --record or --line");
	r = load_key("audit check-proof", &a, &key);
	if (r >= 0)
		return r;
	if (a.record) {
		r = read_small(a.record, &rec, &llen);
		if (r < 0)
			return ctl_fail("audit check-proof", "%s", err_detail());
		line = rec;
	} else {
		line = a.line;
		llen = strlen(line);
	}
	if (llen > 0 && line[llen - 1] == '\n')
		llen--;
	if (memchr(line, '\n', llen))
		return ctl_fail("audit check-proof", "the record must be one line of audit.log");
	r = read_small(argv[first], &proof, &plen);
	if (r < 0)
		return ctl_fail("audit check-proof", "%s", err_detail());
	merkle_leaf_hash(line, llen, leaf);
	r = tlog_proof_verify(proof, plen, &key, leaf, &cp, &index);
	if (r < 0)
		return ctl_fail("audit check-proof", "%s: proof does not hold: %s", argv[first],
				err_detail());
	if (ctl->json) {
		json_t *o = json_pack("{s:b, s:I, s:I, s:s}", "ok", 1, "index", (json_int_t)index,
				      "size", (json_int_t)cp.size, "origin", key.name);

		r = o ? out_json(o) : -ENOMEM;
		json_decref(o);
		if (r < 0)
			return ctl_fail("audit check-proof", "cannot write the output");
		return fflush(stdout) == 0 ? 0 : 1;
	}
	printf("ok: record %" PRIu64 " is in the tree of size %" PRIu64 " signed by %s\n", index,
	       cp.size, key.name);
	return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- audit consistency -------------------------------------------------------------------- */

static const char cons_usage[] =
	"Usage: enclavectl audit consistency (--key KEY | --key-file FILE) --log DIR\n"
	"           OLD_CHECKPOINT NEW_CHECKPOINT\n\n"
	"Check that NEW_CHECKPOINT extends OLD_CHECKPOINT: both are signed by the key, and an\n"
	"RFC 9162 consistency proof computed from the records in DIR verifies between them.\n"
	"Prints the proof (one hex hash per line; JSON with --json). Exit 0 if consistent.\n\n"
	"Options:\n"
	"  --key KEY          the log's verifier key\n"
	"  --key-file FILE    the same, read from FILE\n"
	"  --log DIR          the audit directory whose records give the proof\n"
	"  --json             the proof and both checkpoints as JSON\n"
	"  -h, --help         show this help\n";

static int open_cp_file(const char *path, const struct note_verifier *key, struct checkpoint *ret)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r;

	r = read_small(path, &text, &len);
	if (r < 0)
		return ctl_fail("audit consistency", "%s", err_detail());
	/* A checkpoint copied out of the checkpoints file may keep its separating newline. */
	if (len >= 2 && text[len - 1] == '\n' && text[len - 2] == '\n')
		len--;
	r = checkpoint_open(text, len, key, ret);
	if (r < 0)
		return ctl_fail("audit consistency", "%s: %s", path, err_detail());
	return -1;
}

int audit_consistency_cmd(struct ctl *ctl, int argc, char **argv)
{
	struct vargs a = { 0 };
	struct note_verifier key;
	struct checkpoint c1, c2;
	struct merkle_mem *tree = NULL;
	uint8_t proof[MERKLE_PROOF_MAX][MERKLE_HASH_LEN], root[MERKLE_HASH_LEN];
	char hex[2 * MERKLE_HASH_LEN + 1];
	size_t n = 0;
	int first, r;

	r = ctl_parse(ctl, "audit consistency", cons_usage, argc, argv, vopts, on_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first + 2 != argc)
		return ctl_usage_error("audit consistency", "give OLD_CHECKPOINT and NEW_CHECKPOINT");
	if (!a.log)
		return ctl_usage_error("audit consistency", "--log DIR is required");
	r = load_key("audit consistency", &a, &key);
	if (r >= 0)
		return r;
	r = open_cp_file(argv[first], &key, &c1);
	if (r >= 0)
		return r;
	r = open_cp_file(argv[first + 1], &key, &c2);
	if (r >= 0)
		return r;
	if (c1.size > c2.size)
		return ctl_fail("audit consistency", "rollback: the old checkpoint (size %" PRIu64
				") is larger than the new one (size %" PRIu64 ")", c1.size, c2.size);
	r = verify_load_tree(a.log, &tree);
	if (r < 0)
		return ctl_fail("audit consistency", "%s: %s", a.log, err_detail());
	r = 1;
	if (c2.size > merkle_mem_size(tree)) {
		ctl_fail("audit consistency", "the new checkpoint covers %" PRIu64 " records but %s "
			 "holds %" PRIu64 ": truncated", c2.size, a.log, merkle_mem_size(tree));
		goto out;
	}
	if (merkle_mem_root(tree, c2.size, root) < 0 ||
	    sodium_memcmp(root, c2.root, MERKLE_HASH_LEN) != 0) {
		ctl_fail("audit consistency", "the new checkpoint (size %" PRIu64 ") does not match "
			 "the records in %s", c2.size, a.log);
		goto out;
	}
	if (merkle_consistency_proof(c1.size, c2.size, merkle_mem_perfect, tree, proof, &n) < 0 ||
	    merkle_verify_consistency(c1.size, c2.size, c1.root, c2.root,
				      (const uint8_t(*)[MERKLE_HASH_LEN])proof, n) < 0) {
		ctl_fail("audit consistency", "fork: the new checkpoint (size %" PRIu64 ") does not "
			 "extend the old one (size %" PRIu64 ")", c2.size, c1.size);
		goto out;
	}
	if (ctl->json) {
		json_t *out = json_object(), *list = json_array();

		for (size_t i = 0; i < n; i++) {
			hex32(proof[i], hex);
			json_array_append_new(list, json_string(hex));
		}
		json_object_set_new(out, "old", cp_json(&c1, -1));
		json_object_set_new(out, "new", cp_json(&c2, -1));
		json_object_set_new(out, "proof", list);
		r = out_json(out) < 0 ? 1 : 0;
		json_decref(out);
	} else {
		printf("consistent: size %" PRIu64 " extends to size %" PRIu64 " (proof of %zu hashes)\n",
		       c1.size, c2.size, n);
		for (size_t i = 0; i < n; i++) {
			hex32(proof[i], hex);
			printf("%s\n", hex);
		}
		r = fflush(stdout) == 0 ? 0 : 1;
	}
out:
	merkle_mem_free(tree);
	return r;
}
