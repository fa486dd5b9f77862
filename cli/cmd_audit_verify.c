/* enclavectl audit verify | check-proof | consistency: offline checks of the audit log, with no
 * daemon and no secret, only the log's verifier key (docs/AUDIT.md, "Verification"). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

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
		if (out_json(out) < 0)
			r = 1;
		json_decref(out);
	} else {
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
