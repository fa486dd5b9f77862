/* verify: the offline verifier of an audit log directory. See verify.h and docs/AUDIT.md.
 *
 * Pass 1 reads audit.log line by line (audit_reader: one line in memory) and keeps, per record,
 * its leaf hash (in a struct merkle_mem), its seq and its prev. The analysis then names what is
 * wrong from three kinds of evidence, strongest last: the seqs, the prev hash chain (which line's
 * leaf each prev points at, through an index of leaf hashes), and the signed checkpoints (tree
 * roots over the leaves).
 */
#include "audit/verify.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "audit/audit_internal.h"
#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"

/* seq of a line that could not be parsed. */
#define SEQ_BAD UINT64_MAX
/* How far ahead a seq that was skipped is looked for before it is called removed. */
#define REORDER_WINDOW 64

/* One record as pass 1 saw it. */
struct rec {
	uint64_t seq;                  /* its "seq", SEQ_BAD if the line is malformed */
	uint8_t prev[MERKLE_HASH_LEN]; /* its "prev" (zeros if malformed) */
};

/* The state of one verification. */
struct verifier {
	const struct verify_options *opt;
	struct verify_result *res;     /* being filled; owned by the caller of verify_log() */
	struct merkle_mem *tree;       /* leaf hashes of every line; owned */
	struct rec *recs;              /* n records; owned */
	uint64_t n, cap;
	uint64_t *map;                 /* open addressing: line index + 1 by leaf hash; owned */
	uint64_t map_size;             /* slots, a power of two */
	bool *flag;                    /* per line: already named by a finding; owned */
	uint64_t last_good;            /* largest checkpoint size that matched the records */
	uint64_t vouched;              /* the same, found before the records are analysed */
	bool have_newest;              /* a valid checkpoint was seen */
	struct checkpoint newest;      /* the last valid checkpoint in the file */
	int64_t newest_index;          /* its index */
	bool have_prev_cp;             /* the previous valid checkpoint, for fork checks */
	struct checkpoint prev_cp;
	int64_t prev_cp_index;
	bool prev_cp_matched;          /* it matched the records */
};

const char *verify_kind_name(enum verify_kind k)
{
	static const char *const names[VERIFY_KIND_COUNT] = {
		[VERIFY_MALFORMED] = "malformed",     [VERIFY_MODIFIED] = "modified",
		[VERIFY_REMOVED] = "removed",         [VERIFY_INSERTED] = "inserted",
		[VERIFY_REORDERED] = "reordered",     [VERIFY_TRUNCATED] = "truncated",
		[VERIFY_FORK] = "fork",               [VERIFY_BAD_SIGNATURE] = "bad_signature",
		[VERIFY_UNKNOWN_KEY] = "unknown_key", [VERIFY_ROLLBACK] = "rollback",
		[VERIFY_INCONSISTENT] = "inconsistent",
	};

	return (unsigned)k < VERIFY_KIND_COUNT ? names[k] : "unknown";
}

void verify_result_free(struct verify_result *r)
{
	if (!r)
		return;
	free(r->findings);
	free(r);
}

/* Add a finding. Past VERIFY_FINDINGS_MAX it is only counted. -ENOMEM. */
__attribute__((format(printf, 8, 9)))
static int add(struct verifier *v, enum verify_kind kind, uint64_t seq, uint64_t seq_last,
	       uint64_t line, int64_t cp, int64_t cp2, const char *fmt, ...)
{
	struct verify_result *r = v->res;
	struct verify_finding *f;
	va_list ap;

	if (r->n >= VERIFY_FINDINGS_MAX) {
		r->dropped++;
		return 0;
	}
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		void *p = realloc(r->findings, cap * sizeof(*r->findings));

		if (!p)
			return -ENOMEM;
		r->findings = p;
		r->cap = cap;
	}
	f = &r->findings[r->n++];
	*f = (struct verify_finding){ .kind = kind, .seq = seq, .seq_last = seq_last,
				      .line = line, .cp = cp, .cp2 = cp2 };
	va_start(ap, fmt);
	vsnprintf(f->text, sizeof(f->text), fmt, ap);
	va_end(ap);
	return 0;
}

static void leaf_of(const struct verifier *v, uint64_t i, uint8_t out[static MERKLE_HASH_LEN])
{
	/* Cannot fail: i < n == the tree's size. */
	(void)merkle_mem_perfect(v->tree, 0, i, out);
}

/* ---- Pass 1: reading the records ---------------------------------------------------------- */

/* Parse one line into r (seq and prev) or return a reason it is malformed. */
static const char *parse_line(const char *line, size_t len, struct rec *r)
{
	const json_t *seq, *tm, *prev;
	json_error_t jerr;
	json_t *obj;
	const char *why = NULL, *hex;
	int64_t t;

	for (size_t i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] > 0x7e)
			return "bytes other than printable ASCII";
	obj = json_loadb(line, len, AUDIT_JSON_LOAD_FLAGS, &jerr);
	if (!obj || !json_is_object(obj)) {
		json_decref(obj);
		return "not a JSON object";
	}
	seq = json_object_get(obj, "seq");
	tm = json_object_get(obj, "time");
	prev = json_object_get(obj, "prev");
	if (!json_is_integer(seq) || json_integer_value(seq) < 0)
		why = "no integer \"seq\"";
	else if (!json_is_string(tm) ||
		 audit_time_parse_ns(json_string_value(tm), json_string_length(tm), &t) < 0)
		why = "no \"time\" in the log's format";
	else if (!json_is_string(prev) || json_string_length(prev) != 2 * MERKLE_HASH_LEN)
		why = "no \"prev\" of 64 hex digits";
	if (!why) {
		hex = json_string_value(prev);
		for (size_t i = 0; i < 2 * MERKLE_HASH_LEN && !why; i++) {
			char c = hex[i];
			unsigned d;

			if (c >= '0' && c <= '9')
				d = (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				d = (unsigned)(c - 'a' + 10);
			else {
				why = "\"prev\" is not 64 lowercase hex digits";
				break;
			}
			if (i % 2 == 0)
				r->prev[i / 2] = (uint8_t)(d << 4);
			else
				r->prev[i / 2] |= (uint8_t)d;
		}
	}
	if (!why)
		r->seq = (uint64_t)json_integer_value(seq);
	json_decref(obj);
	return why;
}

/* Read audit.log: leaves into v->tree, records into v->recs (if keep_recs), malformed lines
 * reported (if v->res). */
static int read_log(struct verifier *v, const char *dir, bool keep_recs)
{
	struct audit_reader rd;
	_cleanup_free_ char *path = NULL;
	int fd, r;

	if (asprintf(&path, "%s/%s", dir, AUDIT_LOG_NAME) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return err_set(-errno, "%s: %s", path, strerror(errno));
	r = audit_reader_init(&rd, fd, path, UINT64_MAX);
	if (r < 0)
		goto out_close;
	for (;;) {
		uint8_t leaf[MERKLE_HASH_LEN];
		struct rec rec = { .seq = SEQ_BAD };
		const char *line, *why;

		r = audit_reader_next(&rd);
		if (r < 0)
			goto out_free;
		if (r == 0)
			break;
		line = (const char *)rd.line.data;
		merkle_leaf_hash(line, rd.line.len, leaf);
		r = merkle_mem_append(v->tree, leaf);
		if (r == -E2BIG) {
			r = err_set(r, "%s: more than %llu records: too many to verify here", path,
				    (unsigned long long)VERIFY_RECORDS_MAX);
			goto out_free;
		}
		if (r < 0)
			goto out_free;
		if (!keep_recs)
			continue;
		why = parse_line(line, rd.line.len, &rec);
		if (why) {
			rec.seq = SEQ_BAD;
			memset(rec.prev, 0, sizeof(rec.prev));
			r = add(v, VERIFY_MALFORMED, VERIFY_NONE, VERIFY_NONE, rd.line_no,
				VERIFY_CP_NONE, VERIFY_CP_NONE, "line %llu (offset %llu): %s",
				(unsigned long long)rd.line_no, (unsigned long long)rd.line_off, why);
			if (r < 0)
				goto out_free;
		}
		if (v->n == v->cap) {
			uint64_t cap = v->cap ? v->cap * 2 : 1024;
			void *p = realloc(v->recs, cap * sizeof(*v->recs));

			if (!p) {
				r = -ENOMEM;
				goto out_free;
			}
			v->recs = p;
			v->cap = cap;
		}
		v->recs[v->n++] = rec;
	}
	if (v->res)
		v->res->log_torn_bytes = rd.off - rd.line_off;
	r = 0;
out_free:
	audit_reader_free(&rd);
out_close:
	close(fd);
	return r;
}

int verify_load_tree(const char *log_dir, struct merkle_mem **ret_tree)
{
	struct verifier v = { 0 };
	int r;

	r = merkle_mem_new(VERIFY_RECORDS_MAX, &v.tree);
	if (r < 0)
		return r;
	r = read_log(&v, log_dir, false);
	if (r < 0) {
		merkle_mem_free(v.tree);
		return r;
	}
	*ret_tree = v.tree;
	return 0;
}

/* ---- The records: seqs and the prev chain ------------------------------------------------- */

static int map_build(struct verifier *v)
{
	uint64_t size = 16;

	while (size < 2 * v->n)
		size <<= 1;
	v->map = calloc(size, sizeof(*v->map));
	if (!v->map)
		return -ENOMEM;
	v->map_size = size;
	for (uint64_t i = 0; i < v->n; i++) {
		uint8_t h[MERKLE_HASH_LEN];
		uint64_t s;

		leaf_of(v, i, h);
		s = get_le64(h) & (size - 1);
		while (v->map[s])
			s = (s + 1) & (size - 1);
		v->map[s] = i + 1;
	}
	return 0;
}

/* The first line whose leaf hash is h, or -1. */
static int64_t map_find(const struct verifier *v, const uint8_t h[static MERKLE_HASH_LEN])
{
	uint64_t s = get_le64(h) & (v->map_size - 1);

	while (v->map[s]) {
		uint8_t l[MERKLE_HASH_LEN];

		leaf_of(v, v->map[s] - 1, l);
		if (memcmp(l, h, MERKLE_HASH_LEN) == 0)
			return (int64_t)(v->map[s] - 1);
		s = (s + 1) & (v->map_size - 1);
	}
	return -1;
}

/* Does record i's prev name line j (j == -1: the start, all zeros)? */
static bool prev_is(const struct verifier *v, uint64_t i, int64_t j)
{
	uint8_t h[MERKLE_HASH_LEN] = { 0 };

	if (j >= 0)
		leaf_of(v, (uint64_t)j, h);
	return memcmp(v->recs[i].prev, h, MERKLE_HASH_LEN) == 0;
}

static bool link_ok(const struct verifier *v, uint64_t i)
{
	return v->recs[i].seq != SEQ_BAD && prev_is(v, i, (int64_t)i - 1);
}

static int check_records(struct verifier *v)
{
	uint64_t expect = 0, ahead[REORDER_WINDOW];
	size_t nahead = 0;
	bool *inserted = NULL;
	int r = 0;

	if (v->n == 0)
		return 0;
	inserted = calloc(v->n, sizeof(bool));
	v->flag = calloc(v->n, sizeof(bool));
	if (!inserted || !v->flag) {
		r = -ENOMEM;
		goto out;
	}
	r = map_build(v);
	if (r < 0)
		goto out;

	/* Insertions: line i whose successor's prev skips it, naming the line before it. */
	for (uint64_t i = 0; i + 1 < v->n; i++) {
		if (v->recs[i + 1].seq == SEQ_BAD || link_ok(v, i + 1) ||
		    !prev_is(v, i + 1, (int64_t)i - 1))
			continue;
		/* Unless line i is the true predecessor of line i + 2: then i and i + 1 were
		 * swapped, nothing was inserted. */
		if (i + 2 < v->n && v->recs[i + 2].seq != SEQ_BAD && prev_is(v, i + 2, (int64_t)i))
			continue;
		/* Or line i is the true predecessor of line i - 1: the second of a swapped pair. */
		if (i > 0 && v->recs[i - 1].seq != SEQ_BAD && prev_is(v, i - 1, (int64_t)i))
			continue;
		/* Or line i chains to line i + 1: the first of a swapped pair, which at the end of
		 * the log has no line i + 2 to show it. */
		if (v->recs[i].seq != SEQ_BAD && prev_is(v, i, (int64_t)i + 1))
			continue;
		inserted[i] = v->flag[i] = v->flag[i + 1] = true;
		r = add(v, VERIFY_INSERTED, v->recs[i].seq, v->recs[i].seq, i + 1, VERIFY_CP_NONE,
			VERIFY_CP_NONE, "line %" PRIu64 " was inserted: the record after it chains "
			"to the record before it", i + 1);
		if (r < 0)
			goto out;
	}

	/* Seqs, over the lines that are neither malformed nor inserted. expect is the smallest seq
	 * not seen yet; ahead[] holds seqs seen early (out of order) that expect has not reached. */
	for (uint64_t i = 0, last = SEQ_BAD; i < v->n; i++) {
		uint64_t s = v->recs[i].seq, j;

		if (s == SEQ_BAD || inserted[i])
			continue;
		if (s == expect) {
			expect++;
		} else if (s > expect) {
			for (j = i + 1; j < v->n && j <= i + REORDER_WINDOW; j++)
				if (v->recs[j].seq == expect && !inserted[j])
					break;
			if (j < v->n && j <= i + REORDER_WINDOW && nahead < REORDER_WINDOW) {
				/* The skipped seq comes later: out of order, not removed. */
				v->flag[i] = v->flag[j] = true;
				ahead[nahead++] = s;
				r = add(v, VERIFY_REORDERED, expect, s, i + 1, VERIFY_CP_NONE,
					VERIFY_CP_NONE, "records out of order: seq %" PRIu64 " (line %"
					PRIu64 ") comes before seq %" PRIu64 " (line %" PRIu64 ")", s,
					i + 1, expect, j + 1);
			} else {
				v->flag[i] = true;
				if (s - 1 == expect)
					r = add(v, VERIFY_REMOVED, expect, expect, i + 1, VERIFY_CP_NONE,
						VERIFY_CP_NONE, "record %" PRIu64 " was removed: line %"
						PRIu64 " has seq %" PRIu64 " where %" PRIu64 " belongs",
						expect, i + 1, s, expect);
				else
					r = add(v, VERIFY_REMOVED, expect, s - 1, i + 1, VERIFY_CP_NONE,
						VERIFY_CP_NONE, "records %" PRIu64 " to %" PRIu64 " were "
						"removed: line %" PRIu64 " has seq %" PRIu64 " where %"
						PRIu64 " belongs", expect, s - 1, i + 1, s, expect);
				expect = s + 1;
			}
		} else if (last != SEQ_BAD && s == last) {
			v->flag[i] = true;
			r = add(v, VERIFY_INSERTED, s, s, i + 1, VERIFY_CP_NONE, VERIFY_CP_NONE,
				"line %" PRIu64 " repeats seq %" PRIu64 ": a record was inserted",
				i + 1, s);
		} else if (!v->flag[i]) {
			/* s < expect, not foreseen: it comes after a later one. */
			v->flag[i] = true;
			r = add(v, VERIFY_REORDERED, s, last, i + 1, VERIFY_CP_NONE, VERIFY_CP_NONE,
				"records out of order: seq %" PRIu64 " (line %" PRIu64 ") comes after "
				"seq %" PRIu64, s, i + 1, last);
		}
		if (r < 0)
			goto out;
		/* Seqs seen early that expect has now reached. */
		for (bool moved = true; moved;) {
			moved = false;
			for (size_t k = 0; k < nahead; k++) {
				if (ahead[k] < expect) {
					ahead[k--] = ahead[--nahead];
				} else if (ahead[k] == expect) {
					expect++;
					ahead[k--] = ahead[--nahead];
					moved = true;
				}
			}
		}
		if (last == SEQ_BAD || s > last)
			last = s;
	}

	/* The chain, where the seqs said nothing. */
	for (uint64_t i = 0; i < v->n; i++) {
		int64_t j;

		if (v->recs[i].seq == SEQ_BAD || link_ok(v, i) || v->flag[i] ||
		    (i > 0 && v->flag[i - 1]))
			continue;
		j = map_find(v, v->recs[i].prev);
		if (j >= 0) {
			v->flag[i] = true;
			r = add(v, VERIFY_REORDERED, v->recs[i].seq, v->recs[(uint64_t)j].seq, i + 1,
				VERIFY_CP_NONE, VERIFY_CP_NONE, "records out of order: line %" PRIu64
				" (seq %" PRIu64 ") chains to line %" PRId64 ", not to the line before",
				i + 1, v->recs[i].seq, j + 1);
		} else if (i + 1 < v->n && v->recs[i + 1].seq != SEQ_BAD && !link_ok(v, i + 1) &&
			   map_find(v, v->recs[i + 1].prev) < 0) {
			/* Breaks before and after line i: line i itself changed (its prev too). */
			v->flag[i] = v->flag[i + 1] = true;
			r = add(v, VERIFY_MODIFIED, v->recs[i].seq, v->recs[i].seq, i + 1,
				VERIFY_CP_NONE, VERIFY_CP_NONE, "record %" PRIu64 " (line %" PRIu64
				") was modified: neither its prev nor the next record's prev match",
				v->recs[i].seq, i + 1);
		} else if (i == 0) {
			v->flag[0] = true;
			r = add(v, VERIFY_MODIFIED, v->recs[0].seq, v->recs[0].seq, 1, VERIFY_CP_NONE,
				VERIFY_CP_NONE, "record %" PRIu64 " (line 1) was modified: the first "
				"record's prev is not zero", v->recs[0].seq);
		} else if (i - 1 < v->vouched) {
			/* A signed checkpoint that matches the records covers line i - 1: its
			 * bytes are what was signed, so the break is line i's own doing (a record
			 * forged after it, or its prev changed). */
			v->flag[i] = true;
			r = add(v, VERIFY_MODIFIED, v->recs[i].seq, v->recs[i].seq, i + 1,
				VERIFY_CP_NONE, VERIFY_CP_NONE, "record %" PRIu64 " (line %" PRIu64
				") was forged or modified: its prev does not name record %" PRIu64
				", which a signed checkpoint covers", v->recs[i].seq, i + 1,
				v->recs[i - 1].seq);
		} else if (i + 1 == v->n) {
			/* The last line breaks the chain and no checkpoint says which side is
			 * right: a record appended without the hash of the one before is the
			 * likelier, and the one to name first. */
			v->flag[i] = true;
			r = add(v, VERIFY_MODIFIED, v->recs[i].seq, v->recs[i].seq, i + 1,
				VERIFY_CP_NONE, VERIFY_CP_NONE, "record %" PRIu64 " (line %" PRIu64
				", the last) was forged or modified: its prev does not name record %"
				PRIu64 " (or record %" PRIu64 " was modified; no checkpoint covers "
				"either)", v->recs[i].seq, i + 1, v->recs[i - 1].seq,
				v->recs[i - 1].seq);
		} else {
			uint64_t k = i - 1;

			v->flag[k] = v->flag[i] = true;
			r = add(v, VERIFY_MODIFIED, v->recs[k].seq, v->recs[k].seq, k + 1,
				VERIFY_CP_NONE, VERIFY_CP_NONE, "record %" PRIu64 " (line %" PRIu64
				") was modified: the next record's prev does not match it",
				v->recs[k].seq, k + 1);
		}
		if (r < 0)
			goto out;
	}
out:
	free(inserted);
	return r;
}

/* Any record in lines [a, b) already named by a finding? */
static bool flagged(const struct verifier *v, uint64_t a, uint64_t b)
{
	for (uint64_t i = a; i < b && i < v->n; i++)
		if (v->flag && v->flag[i])
			return true;
	return false;
}

/* ---- Checkpoints -------------------------------------------------------------------------- */

/* Does c match the records: size within them and the same root? */
static bool cp_matches(const struct verifier *v, const struct checkpoint *c)
{
	uint8_t root[MERKLE_HASH_LEN];

	if (c->size > v->n || merkle_mem_root(v->tree, c->size, root) < 0)
		return false;
	return sodium_memcmp(root, c->root, MERKLE_HASH_LEN) == 0;
}

/* Is b (matching the records) an extension of a? Proof computed from the records, verified. */
static bool cp_consistent(const struct verifier *v, const struct checkpoint *a,
			  const struct checkpoint *b, uint8_t proof[][MERKLE_HASH_LEN], size_t *ret_n)
{
	size_t n = 0;

	if (a->size > b->size ||
	    merkle_consistency_proof(a->size, b->size, merkle_mem_perfect, v->tree, proof, &n) < 0)
		return false;
	if (ret_n)
		*ret_n = n;
	return merkle_verify_consistency(a->size, b->size, a->root, b->root,
					 (const uint8_t(*)[MERKLE_HASH_LEN])proof, n) == 0;
}

/* A signature problem of checkpoint index (or the trusted one) as a finding. */
static int sig_finding(struct verifier *v, int err, int64_t index, const char *what)
{
	enum verify_kind k = err == -EKEYREJECTED ? VERIFY_BAD_SIGNATURE :
			     err == -ENOKEY ? VERIFY_UNKNOWN_KEY : VERIFY_MALFORMED;

	return add(v, k, VERIFY_NONE, VERIFY_NONE, 0, index, VERIFY_CP_NONE, "%s: %s", what,
		   err_detail());
}

static int on_checkpoint(void *ctx, const char *note, size_t len, uint64_t index)
{
	struct verifier *v = ctx;
	int64_t ix = (int64_t)index;
	struct checkpoint c;
	uint8_t proof[MERKLE_PROOF_MAX][MERKLE_HASH_LEN];
	char what[48];
	bool match;
	int r;

	v->res->checkpoints = index + 1;
	snprintf(what, sizeof(what), "checkpoint %" PRIu64, index);
	r = checkpoint_open(note, len, v->opt->key, &c);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return sig_finding(v, r, ix, what);
	match = cp_matches(v, &c);

	if (c.size > v->n) {
		r = add(v, VERIFY_TRUNCATED, v->n, c.size - 1, 0, ix, VERIFY_CP_NONE,
			"checkpoint %" PRIu64 " covers %" PRIu64 " records but the log holds %" PRIu64
			": %" PRIu64 " missing (seq %" PRIu64 " to %" PRIu64 ")", index, c.size, v->n,
			c.size - v->n, v->n, c.size - 1);
	} else if (!match) {
		uint64_t from = v->last_good < c.size ? v->last_good : 0;

		if (c.size == 0) {
			r = add(v, VERIFY_INCONSISTENT, VERIFY_NONE, VERIFY_NONE, 0, ix,
				VERIFY_CP_NONE, "checkpoint %" PRIu64 " of the empty tree has a root "
				"that is not the empty root", index);
		} else if (flagged(v, from, c.size)) {
			r = add(v, VERIFY_INCONSISTENT, from, c.size - 1, 0, ix, VERIFY_CP_NONE,
				"checkpoint %" PRIu64 " (size %" PRIu64 ") does not match the records, "
				"as the findings about records %" PRIu64 " to %" PRIu64 " explain",
				index, c.size, from, c.size - 1);
		} else {
			r = add(v, VERIFY_MODIFIED, from, c.size - 1, 0, ix, VERIFY_CP_NONE,
				"checkpoint %" PRIu64 " (size %" PRIu64 ") does not match the records: "
				"a record among seq %" PRIu64 " to %" PRIu64 " was modified", index,
				c.size, from, c.size - 1);
		}
	}
	if (r < 0)
		return r;
	if (match) {
		if (c.size > v->last_good)
			v->last_good = c.size;
		v->res->have_verified = true;
		v->res->verified = c;
		v->res->verified_index = ix;
	}

	/* Against the previous valid checkpoint. */
	if (v->have_prev_cp) {
		const struct checkpoint *a = &v->prev_cp;

		if (c.size < a->size) {
			r = add(v, VERIFY_ROLLBACK, VERIFY_NONE, VERIFY_NONE, 0, ix, v->prev_cp_index,
				"checkpoint %" PRIu64 " (size %" PRIu64 ") is smaller than checkpoint "
				"%" PRId64 " before it (size %" PRIu64 ")", index, c.size,
				v->prev_cp_index, a->size);
		} else if (c.size == a->size &&
			   sodium_memcmp(c.root, a->root, MERKLE_HASH_LEN) != 0) {
			r = add(v, VERIFY_FORK, VERIFY_NONE, VERIFY_NONE, 0, v->prev_cp_index, ix,
				"checkpoints %" PRId64 " and %" PRIu64 " both sign size %" PRIu64
				" with different roots", v->prev_cp_index, index, c.size);
		} else if (c.size > a->size && match && !cp_consistent(v, a, &c, proof, NULL)) {
			r = add(v, VERIFY_FORK, VERIFY_NONE, VERIFY_NONE, 0, v->prev_cp_index, ix,
				"checkpoint %" PRIu64 " (size %" PRIu64 ", matching the records) "
				"does not extend checkpoint %" PRId64 " (size %" PRIu64 ")", index,
				c.size, v->prev_cp_index, a->size);
		}
		if (r < 0)
			return r;
	}
	v->have_prev_cp = true;
	v->prev_cp = c;
	v->prev_cp_index = ix;
	v->prev_cp_matched = match;
	v->have_newest = true;
	v->newest = c;
	v->newest_index = ix;
	return 0;
}

/* Before the records are analysed: the largest checkpoint, signed by the key, whose root matches
 * the records (v->vouched). Those records are what was signed, whatever the chain says later.
 * Problems with the file are reported by the main pass, not here. */
static int on_checkpoint_vouch(void *ctx, const char *note, size_t len, uint64_t index)
{
	struct verifier *v = ctx;
	struct checkpoint c;

	(void)index;
	if (checkpoint_open(note, len, v->opt->key, &c) == 0 && c.size > v->vouched &&
	    cp_matches(v, &c))
		v->vouched = c.size;
	return 0;
}

static int check_trusted(struct verifier *v)
{
	struct verify_result *res = v->res;
	const struct checkpoint *t;
	struct checkpoint c;
	int r;

	r = checkpoint_open(v->opt->trusted, v->opt->trusted_len, v->opt->key, &c);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return sig_finding(v, r, VERIFY_CP_TRUSTED, "trusted checkpoint");
	res->have_trusted = true;
	res->trusted = c;
	t = &res->trusted;
	if (!v->have_newest) {
		if (t->size == 0)
			return 0;
		return add(v, VERIFY_ROLLBACK, VERIFY_NONE, VERIFY_NONE, 0, VERIFY_CP_TRUSTED,
			   VERIFY_CP_NONE, "the trusted checkpoint covers %" PRIu64 " records but "
			   "the log has no valid checkpoint", t->size);
	}
	if (t->size > v->newest.size)
		return add(v, VERIFY_ROLLBACK, VERIFY_NONE, VERIFY_NONE, 0, VERIFY_CP_TRUSTED,
			   v->newest_index, "the trusted checkpoint (size %" PRIu64 ") is "
			   "newer than the log's newest checkpoint %" PRId64 " (size %" PRIu64 ")",
			   t->size, v->newest_index, v->newest.size);
	if (t->size == v->newest.size) {
		if (sodium_memcmp(t->root, v->newest.root, MERKLE_HASH_LEN) != 0)
			return add(v, VERIFY_FORK, VERIFY_NONE, VERIFY_NONE, 0, VERIFY_CP_TRUSTED,
				   v->newest_index, "the trusted checkpoint and checkpoint %"
				   PRId64 " both sign size %" PRIu64 " with different roots",
				   v->newest_index, t->size);
		res->consistency_n = 0;
		return 0;
	}
	/* t older than the newest: prove the newest extends it, from the records. */
	if (res->have_verified && res->verified.size >= t->size) {
		if (!cp_consistent(v, t, &res->verified, res->consistency, &res->consistency_n)) {
			res->consistency_n = 0;
			return add(v, VERIFY_FORK, VERIFY_NONE, VERIFY_NONE, 0, VERIFY_CP_TRUSTED,
				   res->verified_index, "checkpoint %" PRId64 " (size %" PRIu64
				   ") does not extend the trusted checkpoint (size %" PRIu64 ")",
				   res->verified_index, res->verified.size, t->size);
		}
		return 0;
	}
	/* No checkpoint of the log matches its records that far: compare with the records. */
	if (!cp_matches(v, t))
		return add(v, VERIFY_FORK, VERIFY_NONE, VERIFY_NONE, 0, VERIFY_CP_TRUSTED,
			   VERIFY_CP_NONE, "the records do not extend the trusted checkpoint (size %"
			   PRIu64 ")", t->size);
	return 0;
}

int verify_log(const struct verify_options *opt, struct verify_result **ret_result)
{
	struct verifier v = { .opt = opt };
	_cleanup_free_ char *cp_path = NULL;
	int r;

	if (!opt || !opt->log_dir || !opt->key)
		return -EINVAL;
	v.res = calloc(1, sizeof(*v.res));
	if (!v.res)
		return -ENOMEM;
	v.res->verified_index = VERIFY_CP_NONE;
	r = merkle_mem_new(VERIFY_RECORDS_MAX, &v.tree);
	if (r < 0)
		goto out;
	r = read_log(&v, opt->log_dir, true);
	if (r < 0)
		goto out;
	v.res->records = v.n;
	r = merkle_mem_root(v.tree, v.n, v.res->records_root);
	if (r < 0)
		goto out;
	if (asprintf(&cp_path, "%s/%s", opt->log_dir, CHECKPOINTS_FILE_NAME) < 0) {
		cp_path = NULL;
		r = -ENOMEM;
		goto out;
	}
	(void)checkpoints_foreach(cp_path, on_checkpoint_vouch, &v, NULL);
	r = check_records(&v);
	if (r < 0)
		goto out;
	r = checkpoints_foreach(cp_path, on_checkpoint, &v, &v.res->cp_torn_bytes);
	if (r == -ENOENT) {
		r = 0;
		if (v.n > 0)
			r = add(&v, VERIFY_TRUNCATED, 0, v.n - 1, 0, VERIFY_CP_NONE, VERIFY_CP_NONE,
				"%s is missing: none of the %" PRIu64 " records is signed", cp_path,
				v.n);
	} else if (r == -EBADMSG) {
		r = add(&v, VERIFY_MALFORMED, VERIFY_NONE, VERIFY_NONE, 0,
			(int64_t)v.res->checkpoints, VERIFY_CP_NONE, "%s", err_detail());
	}
	if (r < 0)
		goto out;
	if (v.n > 0 && !v.have_newest && v.res->checkpoints > 0)
		r = add(&v, VERIFY_INCONSISTENT, VERIFY_NONE, VERIFY_NONE, 0, VERIFY_CP_NONE,
			VERIFY_CP_NONE, "no checkpoint in %s is validly signed by %s", cp_path,
			opt->key->name);
	else if (r == 0 && v.n > 0 && v.res->checkpoints == 0 && access(cp_path, F_OK) == 0)
		/* An empty file, or one cut inside its first note: nothing signs the records, as
		 * when the file is missing. A log of another store passes no better. */
		r = add(&v, VERIFY_TRUNCATED, 0, v.n - 1, 0, VERIFY_CP_NONE, VERIFY_CP_NONE,
			"%s holds no complete checkpoint%s: none of the %" PRIu64 " records is "
			"signed", cp_path, v.res->cp_torn_bytes ? " (only a torn one)" : "", v.n);
	if (r < 0)
		goto out;
	/* Records past every checkpoint that matches them: only the prev chain, which anyone who
	 * can write the file can recompute, vouches for them (docs/AUDIT.md, section 14). */
	v.res->uncovered_first = v.last_good;
	v.res->uncovered = v.n - v.last_good;
	if (r == 0 && opt->trusted)
		r = check_trusted(&v);
	if (r < 0)
		goto out;
	*ret_result = v.res;
	v.res = NULL;
out:
	verify_result_free(v.res);
	merkle_mem_free(v.tree);
	free(v.recs);
	free(v.map);
	free(v.flag);
	return r;
}
