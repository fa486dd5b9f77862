/* test_audit: the audit log against real files: canonical lines, seq continuity, recovery of a
 * torn tail, refusal of damaged logs, group commit under threads, failing closed, audit_string and
 * audit_foreach with its filters. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sodium.h>

#include "audit/audit.h"
#include "audit/audit_internal.h" /* white-box: fault injection, the time parser */
#include "audit/note.h"
#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"
#include "tests/testutil.h"

/* A time as the log writes it, for logs made by hand. */
#define T0 "\"time\":\"2026-11-21T09:00:00.000000000Z\""
/* A valid line with seq n (a literal). */
#define L(n) "{\"event\":\"x\",\"seq\":" #n "," T0 "}\n"

/* A scratch area: the log directory (not created: audit_open makes it) and its file. */
/* A hand-written log as the log writes it: each line of the L(n) shape gets the "prev" the log
 * would give it (the leaf hash of the line before it, whatever that line is). Returns a new
 * buffer of *ret_len bytes. */
static uint8_t *chain(const void *content, size_t len, size_t *ret_len)
{
	static const char shape[] = "{\"event\":\"x\",\"seq\":";
	const char *c = content;
	uint8_t *out = malloc(len * 3 + 256), leaf[MERKLE_HASH_LEN] = { 0 };
	size_t o = 0, i = 0;

	assert_non_null(out);
	while (i < len) {
		const char *nl = memchr(c + i, '\n', len - i);
		size_t n = nl ? (size_t)(nl - (c + i)) : len - i, start = o;

		if (nl && n >= sizeof(shape) - 1 && memcmp(c + i, shape, sizeof(shape) - 1) == 0) {
			char hex[2 * MERKLE_HASH_LEN + 1];

			sodium_bin2hex(hex, sizeof(hex), leaf, sizeof(leaf));
			o += (size_t)snprintf((char *)out + o, len * 3 + 256 - o,
					      "{\"event\":\"x\",\"prev\":\"%s\",", hex);
			memcpy(out + o, c + i + 13, n - 13);
			o += n - 13;
		} else {
			memcpy(out + o, c + i, n);
			o += n;
		}
		merkle_leaf_hash(out + start, o - start, leaf);
		if (nl)
			out[o++] = '\n';
		i += n + (nl ? 1 : 0);
	}
	*ret_len = o;
	return out;
}

/* Replace the log in dir's directory with content, chained (see chain()), as a new log: the tree
 * files of the log it replaces go too. Returns the bytes written (free them). */
static uint8_t *write_log(const char *path, const void *content, size_t len, size_t *ret_len)
{
	char *dir = strdup(path), *tree;
	uint8_t *b = chain(content, len, ret_len);

	*strrchr(dir, '/') = '\0';
	tree = tu_fmt("%s/tree", dir);
	tu_rm_rf(tree);
	free(tree);
	free(dir);
	tu_write_file(path, b, *ret_len);
	return b;
}

/* write_log() of a NUL-terminated text, without keeping the bytes. */
static void write_log_text(const char *path, const char *text)
{
	size_t n;

	free(write_log(path, text, strlen(text), &n));
}

struct fx {
	char *root;
	char *dir;
	char *path;
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	f->root = tu_mkdtemp("audit");
	f->dir = tu_fmt("%s/log", f->root);
	f->path = tu_fmt("%s/%s", f->dir, AUDIT_LOG_NAME);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	tu_rm_rf(f->root);
	free(f->root);
	free(f->dir);
	free(f->path);
	free(f);
	return 0;
}

static struct audit_log *open_log(const char *dir, uint64_t *ret_torn)
{
	struct audit_log *log = NULL;
	int r = audit_open(dir, ret_torn, &log);

	if (r < 0)
		fprintf(stderr, "audit_open: %s: %s\n", strerror(-r), err_detail());
	assert_int_equal(r, 0);
	assert_non_null(log);
	return log;
}

/* Append rec (taking ownership of it) and return its seq. */
static uint64_t append_ok(struct audit_log *log, json_t *rec)
{
	uint64_t seq = UINT64_MAX;
	int r = audit_append(log, rec, &seq);

	if (r < 0)
		fprintf(stderr, "audit_append: %s: %s\n", strerror(-r), err_detail());
	assert_int_equal(r, 0);
	json_decref(rec);
	return seq;
}

/* A record of an event, with the fields the filters look at (NULL / negative: left out). */
static json_t *ev(const char *event, const char *dataset, const char *user, json_int_t uid)
{
	json_t *o = json_object();

	assert_non_null(o);
	assert_int_equal(json_object_set_new(o, "event", json_string(event)), 0);
	if (dataset)
		assert_int_equal(json_object_set_new(o, "dataset", json_string(dataset)), 0);
	if (user)
		assert_int_equal(json_object_set_new(o, "user", json_string(user)), 0);
	if (uid >= 0)
		assert_int_equal(json_object_set_new(o, "uid", json_integer(uid)), 0);
	return o;
}

/* The lines of a file, split at '\n' (a final piece without one is left out, its length in
 * tail). */
struct lines {
	uint8_t *raw;       /* the whole file */
	size_t len;
	char **v;           /* NUL-terminated copies of the lines */
	size_t n;
	size_t tail;        /* bytes after the last '\n' */
};

static void lines_read(const char *path, struct lines *ret)
{
	struct lines l = { 0 };
	size_t start = 0;

	l.raw = tu_read_file(path, &l.len);
	l.v = calloc(l.len + 1, sizeof(*l.v));
	assert_non_null(l.v);
	for (size_t i = 0; i < l.len; i++) {
		if (l.raw[i] != '\n')
			continue;
		l.v[l.n] = strndup((const char *)l.raw + start, i - start);
		assert_non_null(l.v[l.n]);
		assert_int_equal(strlen(l.v[l.n]), i - start);
		l.n++;
		start = i + 1;
	}
	l.tail = l.len - start;
	*ret = l;
}

static void lines_free(struct lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	free(l->raw);
}

static off_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

/* Parse a line the test read itself. */
static json_t *parse(const char *line)
{
	json_error_t e;
	json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, &e);

	if (!j)
		fprintf(stderr, "cannot parse %s: %s\n", line, e.text);
	assert_non_null(j);
	return j;
}

static int64_t int_of(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

static int64_t time_of(const json_t *o)
{
	const json_t *v = json_object_get(o, "time");
	int64_t t = 0;

	assert_true(json_is_string(v));
	assert_int_equal(audit_time_parse_ns(json_string_value(v), json_string_length(v), &t), 0);
	return t;
}

struct collect {
	size_t n;
	struct lines *file;   /* when set, every line passed must be the file's line n */
	uint64_t *seqs;       /* when set, the seqs passed, in order */
	int stop_after;       /* return 7 after this many calls (0: never) */
};

static int collect_fn(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct collect *c = ctx;

	assert_int_equal(strlen(line), len);
	if (c->file) {
		assert_true(c->n < c->file->n);
		assert_string_equal(line, c->file->v[int_of(rec, "seq")]);
	}
	if (c->seqs)
		c->seqs[c->n] = (uint64_t)int_of(rec, "seq");
	c->n++;
	return c->stop_after && (int)c->n == c->stop_after ? 7 : 0;
}

/* ---- Canonical form ------------------------------------------------------------------------ */

/* Key order (bytewise, "seq" and "time" in their places among the record's own keys), no
 * whitespace, ASCII only with \uXXXX escapes (uppercase, surrogate pairs), nested objects
 * sorted too: checked against literal lines. */
static void test_canonical(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	struct lines l;
	json_t *o = json_object(), *nested = json_object(), *arr = json_array(), *got;
	int64_t before, after, t;
	char *want;
	const char *ts;

	/* Inserted out of order on purpose. */
	json_object_set_new(o, "user", json_string("alice"));
	json_object_set_new(o, "tim", json_integer(1));         /* sorts before "time" */
	json_object_set_new(o, "seqs", json_integer(2));        /* after "seq" */
	json_object_set_new(o, "sep", json_integer(3));         /* before "seq" */
	json_object_set_new(o, "Zone", json_true());            /* uppercase before lowercase */
	json_object_set_new(o, "\xc3\xa9t\xc3\xa9", json_null()); /* non-ASCII key: last */
	json_object_set_new(o, "path",
			    json_string("/a b/\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80\t\"q\"\\/\x7f"));
	json_object_set_new(nested, "b", json_integer(1));
	json_object_set_new(nested, "a", json_integer(-2));
	json_object_set_new(o, "grant", nested);
	json_array_append_new(arr, json_integer(9223372036854775807LL));
	json_array_append_new(arr, json_real(0.5));
	json_array_append_new(arr, json_false());
	json_array_append_new(arr, json_string(""));
	json_array_append_new(arr, json_object());
	json_object_set_new(o, "list", arr);
	json_object_set_new(o, "event", json_string("open"));
	json_object_set_new(o, "bad", audit_string("x\xffy"));

	before = now_realtime_ns();
	assert_int_equal(append_ok(log, o), 0);
	after = now_realtime_ns();
	/* The second record: the smallest one there is. */
	assert_int_equal(append_ok(log, json_object()), 1);
	audit_close(log);

	lines_read(f->path, &l);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.tail, 0);
	got = parse(l.v[0]);
	t = time_of(got);
	assert_true(t >= before && t <= after);
	ts = json_string_value(json_object_get(got, "time"));
	assert_int_equal(strlen(ts), AUDIT_TIME_LEN);
	want = tu_fmt("{\"Zone\":true,\"bad\":\"x\\\\xffy\",\"event\":\"open\","
		      "\"grant\":{\"a\":-2,\"b\":1},"
		      "\"list\":[9223372036854775807,0.5,false,\"\",{}],"
		      "\"path\":\"/a b/\\u00E9t\\u00E9 \\uD83D\\uDE00\\t\\\"q\\\"\\\\/\x7f\","
		      "\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\","
		      "\"sep\":3,\"seq\":0,\"seqs\":2,\"tim\":1,\"time\":\"%s\",\"user\":\"alice\","
		      "\"\\u00E9t\\u00E9\":null}", ts);
	assert_string_equal(l.v[0], want);
	free(want);
	json_decref(got);

	/* The second record's "prev" is the RFC 6962 leaf hash of the first line. */
	got = parse(l.v[1]);
	{
		uint8_t leaf[MERKLE_HASH_LEN];
		char hex[2 * MERKLE_HASH_LEN + 1];

		merkle_leaf_hash(l.v[0], strlen(l.v[0]), leaf);
		sodium_bin2hex(hex, sizeof(hex), leaf, sizeof(leaf));
		want = tu_fmt("{\"prev\":\"%s\",\"seq\":1,\"time\":\"%s\"}", hex,
			      json_string_value(json_object_get(got, "time")));
	}
	assert_string_equal(l.v[1], want);
	free(want);
	json_decref(got);

	/* Plain ASCII throughout. */
	for (size_t i = 0; i < l.len; i++)
		assert_true(l.raw[i] == '\n' || (l.raw[i] >= 0x20 && l.raw[i] <= 0x7f));
	lines_free(&l);
}

/* The directory is made 0700 and the log 0600; a missing parent, a symlink or a directory in the
 * log's place is refused. */
static void test_open_creates(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = NULL;
	mode_t old = umask(0);
	struct stat st;
	char *p;

	log = open_log(f->dir, NULL);
	umask(old);
	assert_int_equal(audit_count(log), 0);
	assert_false(audit_failed(log));
	assert_int_equal(stat(f->dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, 0);
	audit_close(log);
	audit_close(NULL);

	p = tu_fmt("%s/no/such/parent", f->root);
	log = NULL;
	assert_int_equal(audit_open(p, NULL, &log), -ENOENT);
	assert_null(log);
	assert_non_null(strstr(err_detail(), p));
	free(p);

	/* audit.log as a symlink to a valid log elsewhere. */
	p = tu_fmt("%s/elsewhere", f->root);
	write_log_text(p, L(0));
	assert_int_equal(unlink(f->path), 0);
	assert_int_equal(symlink(p, f->path), 0);
	assert_int_equal(audit_open(f->dir, NULL, &log), -ELOOP);
	assert_int_equal(unlink(f->path), 0);
	free(p);

	/* The audit directory itself as a symlink (to a real log directory): never followed. */
	p = tu_fmt("%s/linked-audit", f->root);
	assert_int_equal(symlink(f->dir, p), 0);
	assert_int_equal(audit_open(p, NULL, &log), -ELOOP);
	assert_null(log);
	assert_int_equal(unlink(p), 0);
	free(p);

	assert_int_equal(mkdir(f->path, 0700), 0);
	assert_true(audit_open(f->dir, NULL, &log) < 0);
	assert_null(log);
}

/* seq goes on from where the file ends, across close and reopen. */
static void test_seq_reopen(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	uint64_t torn = 99;
	struct lines l;

	for (uint64_t i = 0; i < 3; i++)
		assert_int_equal(append_ok(log, ev("open", "d", "u", 1)), i);
	assert_int_equal(audit_count(log), 3);
	audit_close(log);

	log = open_log(f->dir, &torn);
	assert_int_equal(torn, 0);
	assert_int_equal(audit_count(log), 3);
	assert_int_equal(append_ok(log, ev("close", "d", "u", 1)), 3);
	audit_close(log);
	log = open_log(f->dir, NULL);
	assert_int_equal(audit_count(log), 4);
	assert_int_equal(append_ok(log, ev("close", "d", "u", 1)), 4);
	audit_close(log);

	lines_read(f->path, &l);
	assert_int_equal(l.n, 5);
	for (size_t i = 0; i < l.n; i++) {
		json_t *j = parse(l.v[i]);

		assert_int_equal(int_of(j, "seq"), i);
		json_decref(j);
	}
	lines_free(&l);
}

/* A final line without '\n' is cut at open and its length reported; appends go on after the
 * last complete line. */
static void test_torn_tail(void **state)
{
	static const char *const tails[] = {
		"{\"event\":\"op",                          /* a prefix of a record */
		"{\"event\":\"x\",\"seq\":2," T0 "}",       /* all but the '\n' */
		"\0\0\0\0\0\0\0\0",                         /* a size extended, data never written */
		"{",
	};
	static const size_t tail_len[] = { 12, 0, 8, 1 };
	struct fx *f = *state;

	assert_int_equal(mkdir(f->dir, 0700), 0);
	for (size_t i = 0; i < ARRAY_SIZE(tails); i++) {
		size_t good_len, n, tl = tail_len[i] ? tail_len[i] : strlen(tails[i]);
		uint8_t *good = chain(L(0) L(1), strlen(L(0) L(1)), &good_len);
		uint8_t *first = chain(L(0), strlen(L(0)), &n);
		uint8_t *content = malloc(good_len + tl);
		struct audit_log *log;
		uint64_t torn = 0;
		struct lines l;

		/* The tails are written as they are, after two chained records. */
		memcpy(content, good, good_len);
		memcpy(content + good_len, tails[i], tl);
		{
			char *tree = tu_fmt("%s/tree", f->dir);

			tu_rm_rf(tree);
			free(tree);
		}
		tu_write_file(f->path, content, good_len + tl);
		free(content);

		log = open_log(f->dir, &torn);
		assert_int_equal(torn, tl);
		assert_int_equal(file_size(f->path), good_len);
		assert_int_equal(audit_count(log), 2);
		assert_int_equal(append_ok(log, ev("open", NULL, NULL, -1)), 2);
		audit_close(log);

		lines_read(f->path, &l);
		assert_int_equal(l.n, 3);
		assert_int_equal(l.tail, 0);
		assert_memory_equal(l.v[0], first, n - 1);
		lines_free(&l);
		free(good);
		free(first);
		assert_int_equal(unlink(f->path), 0);
	}

	/* A torn first line: the log is empty afterwards. */
	write_log_text(f->path, "{\"ev");
	{
		uint64_t torn = 0;
		struct audit_log *log = open_log(f->dir, &torn);

		assert_int_equal(torn, 4);
		assert_int_equal(audit_count(log), 0);
		assert_int_equal(file_size(f->path), 0);
		audit_close(log);
	}
}

/* Logs that are damaged somewhere other than a torn tail. */
struct damage {
	const char *name;
	const char *content;
	size_t len;          /* 0: strlen(content) */
	unsigned line;       /* the line err_detail() must name */
};

#define NUL_LINE "{\"p\":\"a\0b\",\"seq\":0," T0 "}\n"

static const struct damage damages[] = {
	{ "bad JSON", L(0) "{\"event\":\"x\",\"seq\":1," T0 "\n", 0, 2 },
	{ "seq gap", L(0) L(2), 0, 2 },
	{ "duplicate seq", L(0) L(1) L(1), 0, 3 },
	{ "first seq not 0", L(1) L(2), 0, 1 },
	{ "seq goes back", L(0) L(1) L(0), 0, 3 },
	{ "array", L(0) "[1,2]\n", 0, 2 },
	{ "string", L(0) "\"s\"\n", 0, 2 },
	{ "number", "42\n", 0, 1 },
	{ "empty line", L(0) "\n", 0, 2 },
	{ "seq as string", "{\"seq\":\"0\"," T0 "}\n", 0, 1 },
	{ "seq as real", "{\"seq\":0.0," T0 "}\n", 0, 1 },
	{ "negative seq", "{\"seq\":-1," T0 "}\n", 0, 1 },
	{ "no seq", "{" T0 "}\n", 0, 1 },
	{ "no time", "{\"seq\":0}\n", 0, 1 },
	{ "time not a string", "{\"seq\":0,\"time\":5}\n", 0, 1 },
	{ "time not a date", "{\"seq\":0,\"time\":\"2026-02-29T00:00:00.000000000Z\"}\n", 0, 1 },
	{ "time without fraction", "{\"seq\":0,\"time\":\"2026-11-21T09:00:00Z\"}\n", 0, 1 },
	{ "duplicate key", "{\"seq\":0,\"seq\":0," T0 "}\n", 0, 1 },
	{ "raw UTF-8", "{\"p\":\"\xc3\xa9\",\"seq\":0," T0 "}\n", 0, 1 },
	{ "raw tab", "{\"p\":\"a\tb\",\"seq\":0," T0 "}\n", 0, 1 },
	{ "CR before LF", L(0) "{\"seq\":1," T0 "}\r\n", 0, 2 },
	{ "NUL in a line", NUL_LINE, sizeof(NUL_LINE) - 1, 1 },
	{ "garbage after the object", "{\"seq\":0," T0 "}x\n", 0, 1 },
	/* A bad line is not a torn tail, and the torn tail after it is not cut either. */
	{ "bad line before a torn tail", L(0) "xx\n{\"seq\":2", 0, 2 },
};

static void expect_damaged(struct fx *f, const void *content, size_t len, unsigned line)
{
	struct audit_log *log = NULL;
	uint64_t torn = 12345;
	char want[64];
	uint8_t *after;
	size_t after_len;

	uint8_t *chained = write_log(f->path, content, len, &len);

	content = chained;
	snprintf(want, sizeof(want), "line %u (", line);
	assert_int_equal(audit_open(f->dir, &torn, &log), -EBADMSG);
	assert_null(log);
	assert_int_equal(torn, 12345);
	if (!strstr(err_detail(), want))
		fprintf(stderr, "detail \"%s\" does not name %s\n", err_detail(), want);
	assert_non_null(strstr(err_detail(), want));
	after = tu_read_file(f->path, &after_len);
	assert_int_equal(after_len, len);
	assert_memory_equal(after, content, len);
	free(after);
	/* The reader refuses it the same way. */
	err_clear();
	assert_int_equal(audit_foreach(f->dir, NULL, collect_fn, &(struct collect){ 0 }),
			 -EBADMSG);
	assert_non_null(strstr(err_detail(), want));
	free(chained);
}

static void test_damaged(void **state)
{
	struct fx *f = *state;
	/* Line 2 of big is [start, end): AUDIT_RECORD_MAX bytes, one too many with its '\n'. */
	size_t start = strlen(L(0)), end = start + AUDIT_RECORD_MAX;
	char *big = malloc(end + 1);
	struct audit_log *log;
	int k;

	assert_int_equal(mkdir(f->dir, 0700), 0);
	for (size_t i = 0; i < ARRAY_SIZE(damages); i++) {
		const struct damage *d = &damages[i];

		fprintf(stderr, "  damage: %s\n", d->name);
		expect_damaged(f, d->content, d->len ? d->len : strlen(d->content), d->line);
	}

	/* Overlong: a well-formed record whose line is one byte over the limit. */
	memcpy(big, L(0), start);
	k = snprintf(big + start, end - start, "{\"seq\":1,%s,\"x\":\"", T0);
	memset(big + start + k, 'a', end - start - (size_t)k);
	memcpy(big + end - 2, "\"}", 2);
	big[end] = '\n';
	expect_damaged(f, big, end + 1, 2);
	/* The same line without its '\n' at the end of the file: too long for a torn tail, so
	 * damage too. */
	expect_damaged(f, big, end, 2);
	/* One byte shorter, it is a valid record: the longest there is, with its "prev" (74 bytes
	 * with its quotes, colon and comma) added by write_log(). */
	{
		size_t n, line_len = AUDIT_RECORD_MAX - 1 - 74;

		k = snprintf(big + start, end - start, "{\"event\":\"x\",\"seq\":1,%s,\"x\":\"", T0);
		memset(big + start + k, 'a', line_len - (size_t)k);
		memcpy(big + start + line_len - 2, "\"}\n", 3);
		free(write_log(f->path, big, start + line_len + 1, &n));
		assert_int_equal(n, start + 74 + AUDIT_RECORD_MAX);
	}
	log = open_log(f->dir, NULL);
	assert_int_equal(audit_count(log), 2);
	audit_close(log);
	free(big);
}

/* What audit_append() refuses leaves the log as it was and usable. */
static void test_append_refused(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	json_t *deep = json_object(), *cur = deep, *bad[8];
	uint64_t seq = 777;
	size_t nbad = 0;

	assert_int_equal(append_ok(log, ev("open", NULL, NULL, -1)), 0);
	bad[nbad++] = json_array();
	bad[nbad++] = json_string("open");
	bad[nbad++] = json_integer(5);
	bad[nbad] = ev("open", NULL, NULL, -1);
	json_object_set_new(bad[nbad++], "seq", json_integer(1));
	bad[nbad] = ev("open", NULL, NULL, -1);
	json_object_set_new(bad[nbad++], "time", json_string("2026-11-21T09:00:00.000000000Z"));
	/* Serializes, but as "\u0000", which no reader takes. */
	bad[nbad] = ev("open", NULL, NULL, -1);
	json_object_set_new(bad[nbad++], "path", json_stringn("a\0b", 3));
	/* Not UTF-8, smuggled past jansson's check. */
	bad[nbad] = ev("open", NULL, NULL, -1);
	json_object_set_new(bad[nbad++], "path", json_string_nocheck("a\xff"));
	/* Deeper than jansson parses (2048), though short. */
	for (int i = 0; i < 3000; i++) {
		json_t *n = json_object();

		json_object_set_new(cur, "d", n);
		cur = n;
	}
	bad[nbad++] = deep;

	for (size_t i = 0; i < nbad; i++) {
		err_clear();
		assert_int_equal(audit_append(log, bad[i], &seq), -EINVAL);
		assert_int_equal(seq, 777);
		assert_true(strlen(err_detail()) > 0);
		json_decref(bad[i]);
	}
	assert_int_equal(audit_append(log, NULL, &seq), -EINVAL);
	assert_false(audit_failed(log));
	assert_int_equal(audit_count(log), 1);
	assert_int_equal(append_ok(log, ev("close", NULL, NULL, -1)), 1);
	audit_close(log);

	log = open_log(f->dir, NULL);
	assert_int_equal(audit_count(log), 2);
	audit_close(log);
}

/* A record whose line is exactly AUDIT_RECORD_MAX bytes ('\n' counted) is taken and reads back;
 * one byte more is -EINVAL. */
static void test_append_max(void **state)
{
	struct fx *f = *state;
	char *d1 = tu_fmt("%s/a", f->root), *d2 = tu_fmt("%s/b", f->root);
	char *p1 = tu_fmt("%s/%s", d1, AUDIT_LOG_NAME), *p2 = tu_fmt("%s/%s", d2, AUDIT_LOG_NAME);
	struct audit_log *log = open_log(d1, NULL);
	json_t *o = ev("open", NULL, NULL, -1);
	size_t base, pad;
	char *s;
	struct lines l;

	json_object_set_new(o, "pad", json_string(""));
	assert_int_equal(append_ok(log, json_incref(o)), 0);
	audit_close(log);
	lines_read(p1, &l);
	base = strlen(l.v[0]);  /* the line without '\n' at seq 0, pad empty */
	lines_free(&l);

	/* The time is always 30 characters, so only pad changes the length at seq 0. */
	pad = AUDIT_RECORD_MAX - 1 - base;
	s = malloc(pad + 2);
	memset(s, 'p', pad + 1);
	s[pad + 1] = '\0';
	log = open_log(d2, NULL);
	json_object_set_new(o, "pad", json_string(s));
	err_clear();
	assert_int_equal(audit_append(log, o, NULL), -EINVAL);
	assert_non_null(strstr(err_detail(), "longer"));
	s[pad] = '\0';
	json_object_set_new(o, "pad", json_string(s));
	assert_int_equal(append_ok(log, o), 0);
	audit_close(log);
	assert_int_equal(file_size(p2), AUDIT_RECORD_MAX);
	log = open_log(d2, NULL);
	assert_int_equal(audit_count(log), 1);
	audit_close(log);
	free(s);
	free(p1);
	free(p2);
	free(d1);
	free(d2);
}

/* ---- Group commit -------------------------------------------------------------------------- */

#define GC_THREADS 8
#define GC_EACH 500

struct gc_arg {
	struct audit_log *log;
	int thread;
	unsigned each;
	uint64_t *seqs;     /* seq of each of this thread's appends */
	int err;            /* first failure, 0 if none */
	pthread_barrier_t *start;
};

static void *gc_worker(void *p)
{
	struct gc_arg *a = p;

	pthread_barrier_wait(a->start);
	for (unsigned j = 0; j < a->each; j++) {
		/* No cmocka assert off the main thread: a failure is reported through err. */
		json_t *o = json_pack("{s:s,s:i,s:i}", "event", "gc", "thread", a->thread, "n",
				      (int)j);
		int r;

		r = o ? audit_append(a->log, o, &a->seqs[j]) : -ENOMEM;
		json_decref(o);
		if (r < 0) {
			a->err = r;
			break;
		}
	}
	return NULL;
}

/* Run `threads` threads of `each` appends at once; returns the first error (0: none). */
static int gc_run(struct audit_log *log, struct gc_arg *args, unsigned threads, unsigned each)
{
	pthread_t tid[GC_THREADS];
	pthread_barrier_t start;
	int err = 0;

	assert_true(threads <= GC_THREADS);
	pthread_barrier_init(&start, NULL, threads);
	for (unsigned t = 0; t < threads; t++) {
		args[t] = (struct gc_arg){ .log = log, .thread = (int)t, .each = each,
					   .seqs = calloc(each, sizeof(uint64_t)), .start = &start };
		assert_int_equal(pthread_create(&tid[t], NULL, gc_worker, &args[t]), 0);
	}
	for (unsigned t = 0; t < threads; t++) {
		pthread_join(tid[t], NULL);
		if (args[t].err && !err)
			err = args[t].err;
	}
	pthread_barrier_destroy(&start);
	return err;
}

/* 8 threads x 500 appends: every seq 0..3999 once, file order = seq order, each thread's seqs
 * rising in the order it appended, every line valid. */
static void test_group_commit(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	struct gc_arg args[GC_THREADS];
	uint64_t *owner = calloc(GC_THREADS * GC_EACH, sizeof(uint64_t));
	struct collect c = { 0 };
	struct lines l;
	uint64_t batches;

	assert_int_equal(gc_run(log, args, GC_THREADS, GC_EACH), 0);
	assert_int_equal(audit_count(log), GC_THREADS * GC_EACH);
	batches = audit_test_batches(log);
	assert_true(batches >= 1 && batches <= GC_THREADS * GC_EACH);
	fprintf(stderr, "  %d appends in %llu batches\n", GC_THREADS * GC_EACH,
		(unsigned long long)batches);
	audit_close(log);

	lines_read(f->path, &l);
	assert_int_equal(l.n, GC_THREADS * GC_EACH);
	assert_int_equal(l.tail, 0);
	for (size_t k = 0; k < l.n; k++) {
		json_t *j = parse(l.v[k]);
		int64_t t = int_of(j, "thread"), n = int_of(j, "n");

		assert_int_equal(int_of(j, "seq"), k);
		assert_true(t >= 0 && t < GC_THREADS && n >= 0 && n < GC_EACH);
		/* The seq the append returned is where its line is. */
		assert_int_equal(args[t].seqs[n], k);
		assert_int_equal(owner[k], 0);
		owner[k] = 1;
		json_decref(j);
	}
	for (int t = 0; t < GC_THREADS; t++) {
		for (int n = 1; n < GC_EACH; n++)
			assert_true(args[t].seqs[n] > args[t].seqs[n - 1]);
		free(args[t].seqs);
	}
	/* The reader agrees, across its 64 KiB block boundaries. */
	assert_true(l.len > 2 * AUDIT_READ_BLOCK);
	c.file = &l;
	assert_int_equal(audit_foreach(f->dir, NULL, collect_fn, &c), 0);
	assert_int_equal(c.n, l.n);
	lines_free(&l);
	free(owner);
}

/* Appends that arrive together share one write and one fdatasync: held until all 8 are queued,
 * they go out as exactly one batch. */
static void test_group_commit_one_batch(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	struct gc_arg args[GC_THREADS];
	bool seen[GC_THREADS] = { false };

	assert_int_equal(append_ok(log, ev("first", NULL, NULL, -1)), 0);
	assert_int_equal(audit_test_batches(log), 1);
	audit_test_hold_batch(log, GC_THREADS);
	assert_int_equal(gc_run(log, args, GC_THREADS, 1), 0);
	assert_int_equal(audit_test_batches(log), 2);
	assert_int_equal(audit_count(log), GC_THREADS + 1);
	for (int t = 0; t < GC_THREADS; t++) {
		assert_true(args[t].seqs[0] >= 1 && args[t].seqs[0] <= GC_THREADS);
		assert_false(seen[args[t].seqs[0] - 1]);
		seen[args[t].seqs[0] - 1] = true;
		free(args[t].seqs);
	}
	/* Back to one batch per lone append. */
	assert_int_equal(append_ok(log, ev("last", NULL, NULL, -1)), GC_THREADS + 1);
	assert_int_equal(audit_test_batches(log), 3);
	audit_close(log);
}

/* ---- Failing closed ------------------------------------------------------------------------ */

static void expect_failed(struct audit_log *log, const char *what, bool for_good)
{
	json_t *rec = ev("open", NULL, NULL, -1);
	uint64_t seq = 555;

	err_clear();
	assert_int_equal(audit_append(log, rec, &seq), -EIO);
	json_decref(rec);
	assert_int_equal(seq, 555);
	assert_true(audit_failed(log) == for_good);
	if (what)
		assert_non_null(strstr(err_detail(), what));
}

/* A batch whose write or fdatasync fails (a full disk, an I/O error): its appender gets -EIO, the
 * file is cut back to the last record boundary, and the next append is tried again and takes the
 * seq the failed one had, chained to the record before it: once space returns the log goes on,
 * and a reopen finds it whole. */
static void test_fail_then_recover(void **state)
{
	static const struct {
		enum audit_fault where;
		int err;
		const char *what;
	} cases[] = {
		{ AUDIT_FAULT_WRITE, ENOSPC, "write of records 3..3 failed: No space left" },
		{ AUDIT_FAULT_SYNC, EIO, "fdatasync of records 3..3 failed: Input/output error" },
	};
	struct fx *f = *state;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct audit_log *log = open_log(f->dir, NULL);
		uint64_t torn = 9;
		off_t good;
		uint8_t *raw;
		size_t len;

		for (int k = 0; k < 3; k++)
			append_ok(log, ev("open", NULL, NULL, -1));
		good = file_size(f->path);
		audit_test_fail_next(log, cases[i].where, cases[i].err);
		expect_failed(log, cases[i].what, false);
		assert_non_null(strstr(err_detail(), "cut back"));
		assert_int_equal(audit_count(log), 3);
		assert_int_equal(file_size(f->path), good);
		raw = tu_read_file(f->path, &len);
		assert_int_equal(raw[len - 1], '\n');
		free(raw);
		/* The next one is written, as record 3. */
		assert_int_equal(append_ok(log, ev("open", NULL, NULL, -1)), 3);
		assert_false(audit_failed(log));
		audit_close(log);

		log = open_log(f->dir, &torn);
		assert_int_equal(torn, 0);
		assert_int_equal(audit_count(log), 4);
		assert_false(audit_failed(log));
		audit_close(log);
		write_log_text(f->path, "");
	}
}

/* A failing batch of several appends fails all of them; when the cut back fails too, the file
 * keeps the batch's complete lines (over-reporting refused events, never losing acknowledged
 * ones) and its torn last line, which the next open cuts. */
static void test_fail_batch_no_truncate(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	struct gc_arg args[GC_THREADS];
	uint64_t torn = 0;
	off_t good, failed_size;
	struct lines l;

	for (int k = 0; k < 2; k++)
		append_ok(log, ev("open", NULL, NULL, -1));
	good = file_size(f->path);
	audit_test_fail_next(log, AUDIT_FAULT_WRITE_NO_TRUNCATE, EDQUOT);
	audit_test_hold_batch(log, 3);
	assert_int_equal(gc_run(log, args, 3, 1), -EIO);
	for (int t = 0; t < 3; t++) {
		assert_int_equal(args[t].err, -EIO);
		free(args[t].seqs);
	}
	expect_failed(log, "records 2..4 failed", true);
	assert_non_null(strstr(err_detail(), "failed too"));
	assert_int_equal(audit_count(log), 2);
	failed_size = file_size(f->path);
	assert_true(failed_size > good);
	audit_close(log);

	lines_read(f->path, &l);
	assert_int_equal(l.n, 4);
	assert_true(l.tail > 0);
	log = open_log(f->dir, &torn);
	assert_int_equal(torn, l.tail);
	assert_int_equal(audit_count(log), 4);
	assert_int_equal(file_size(f->path), failed_size - (off_t)l.tail);
	assert_int_equal(append_ok(log, ev("open", NULL, NULL, -1)), 4);
	audit_close(log);
	lines_free(&l);
}

/* ---- The tree, checkpoints and proofs ------------------------------------------------------ */

/* ---- Durability: written vs durable records (issue 13) --------------------------------------- */

static uint64_t append_mode_ok(struct audit_log *log, json_t *rec, enum audit_durability d)
{
	uint64_t seq = UINT64_MAX;
	int r = audit_append_mode(log, rec, d, &seq);

	if (r < 0)
		fprintf(stderr, "audit_append_mode: %s: %s\n", strerror(-r), err_detail());
	assert_int_equal(r, 0);
	json_decref(rec);
	return seq;
}

/* What a power loss leaves: the log cut back to the length it had at its last sync, in a
 * directory of its own (no tree: it is rebuilt from the log). Opens it and returns the count. */
static uint64_t power_loss_copy(struct fx *f, const char *name, uint64_t synced_end)
{
	char *dir = tu_fmt("%s/%s", f->root, name), *path = tu_fmt("%s/%s", dir, AUDIT_LOG_NAME);
	struct audit_log *log;
	uint64_t torn = 9, n;
	uint8_t *raw;
	size_t len;

	raw = tu_read_file(f->path, &len);
	assert_true(synced_end <= len);
	assert_int_equal(mkdir(dir, 0700), 0);
	tu_write_file(path, raw, synced_end);
	log = open_log(dir, &torn);
	assert_int_equal(torn, 0);
	n = audit_count(log);
	audit_close(log);
	free(raw);
	free(path);
	free(dir);
	return n;
}

/* With a syncer, an AUDIT_WRITTEN record is in the file when its append returns but not synced
 * until the syncer's interval passes or a durable record's batch syncs it; an AUDIT_DURABLE one is
 * synced before its append returns, with everything before it. A simulated power loss (the file
 * cut back to its length at the last sync) loses only written records after the last sync, never
 * a durable one. */
static void test_durability_power_loss(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	uint64_t synced, synced_end, written, written_end, s0, s1;

	/* Long enough that the syncer does not run during the checks below. */
	assert_int_equal(audit_syncer_start(log, 1000), 0);
	assert_int_equal(audit_syncer_start(log, 1000), -EBUSY);
	s0 = append_mode_ok(log, ev("session", "ds", "alice", 1000), AUDIT_DURABLE);
	for (int i = 0; i < 5; i++)
		append_mode_ok(log, ev("open", "ds", "alice", 1000), AUDIT_WRITTEN);
	audit_test_progress(log, &synced, &synced_end, &written, &written_end);
	assert_int_equal(synced, s0 + 1);
	assert_int_equal(written, s0 + 6);
	assert_true(written_end > synced_end);
	/* Every written record is in the file (a crash of the process loses none of them). */
	assert_int_equal((uint64_t)file_size(f->path), written_end);
	/* A power loss now: the session record survives, the five opens after it may not. */
	assert_int_equal(power_loss_copy(f, "loss1", synced_end), s0 + 1);

	/* A durable record syncs everything written before it. */
	s1 = append_mode_ok(log, ev("session", "ds", "bob", 1001), AUDIT_DURABLE);
	audit_test_progress(log, &synced, &synced_end, &written, &written_end);
	assert_int_equal(synced, s1 + 1);
	assert_int_equal(synced_end, written_end);
	assert_int_equal(power_loss_copy(f, "loss2", synced_end), s1 + 1);
	/* Checkpoints cover only synced records. */
	append_mode_ok(log, ev("open", "ds", "bob", 1001), AUDIT_WRITTEN);
	assert_int_equal(audit_count(log), s1 + 1);
	/* audit_sync(): everything written is synced now. */
	assert_int_equal(audit_sync(log), 0);
	audit_test_progress(log, &synced, &synced_end, &written, &written_end);
	assert_int_equal(synced, written);
	assert_int_equal(synced, s1 + 2);
	/* A clean close syncs what is written. */
	append_mode_ok(log, ev("close", "ds", "bob", 1001), AUDIT_WRITTEN);
	audit_close(log);
	log = open_log(f->dir, NULL);
	assert_int_equal(audit_count(log), s1 + 3);
	audit_close(log);
}

/* The syncer syncs written records by itself (within its interval; this only waits until it
 * has, it times nothing), and without a syncer AUDIT_WRITTEN is synced before returning. */
static void test_durability_syncer(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	uint64_t synced, synced_end, written, written_end;

	append_mode_ok(log, ev("open", "ds", "alice", 1000), AUDIT_WRITTEN);
	audit_test_progress(log, &synced, &synced_end, &written, &written_end);
	assert_int_equal(synced, 1);
	assert_int_equal(written, 1);
	assert_int_equal(audit_syncer_start(log, 0), -EINVAL);
	assert_int_equal(audit_syncer_start(log, 1001), -EINVAL);
	assert_int_equal(audit_syncer_start(log, 10), 0);
	for (int i = 0; i < 20; i++)
		append_mode_ok(log, ev("open", "ds", "alice", 1000), AUDIT_WRITTEN);
	for (int i = 0; i < 1000; i++) {
		audit_test_progress(log, &synced, &synced_end, &written, &written_end);
		if (synced == written)
			break;
		usleep(10000);
	}
	assert_int_equal(synced, 21);
	assert_int_equal(written, 21);
	assert_int_equal(synced_end, (uint64_t)file_size(f->path));
	audit_close(log);
}

/* A sync that fails after written records were acknowledged cannot cut them back off: the log
 * fails for good, saying why, and takes no more records (the daemon refuses every open). */
static void test_durability_sync_failure(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);

	assert_int_equal(audit_syncer_start(log, 1000), 0);
	append_mode_ok(log, ev("session", "ds", "alice", 1000), AUDIT_DURABLE);
	append_mode_ok(log, ev("open", "ds", "alice", 1000), AUDIT_WRITTEN);
	audit_test_fail_next(log, AUDIT_FAULT_SYNC, EIO);
	expect_failed(log, "acknowledged as written", true);
	expect_failed(log, NULL, true);
	audit_close(log);
	/* Both acknowledged records are still there. */
	log = open_log(f->dir, NULL);
	assert_true(audit_count(log) >= 2);
	audit_close(log);
}

/* kill -9 of the writer: every record whose AUDIT_WRITTEN append returned is in the log. The
 * child appends with a syncer that would not sync for a second, and reports each seq. */
static void test_durability_kill9(void **state)
{
	struct fx *f = *state;
	struct audit_log *log;
	uint64_t acked = 0, seq;
	int p[2], status;
	pid_t pid;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct audit_log *cl = NULL;

		close(p[0]);
		if (audit_open(f->dir, NULL, &cl) < 0 || audit_syncer_start(cl, 1000) < 0)
			_exit(1);
		for (;;) {
			json_t *rec = ev("open", "ds", "alice", 1000);

			if (audit_append_mode(cl, rec, AUDIT_WRITTEN, &seq) < 0)
				_exit(2);
			json_decref(rec);
			if (write(p[1], &seq, sizeof(seq)) != sizeof(seq))
				_exit(3);
		}
	}
	close(p[1]);
	/* Let it acknowledge a few hundred, then kill it in the middle of appending. */
	while (acked < 300 && read(p[0], &seq, sizeof(seq)) == sizeof(seq))
		acked = seq + 1;
	kill(pid, SIGKILL);
	while (read(p[0], &seq, sizeof(seq)) == sizeof(seq))
		acked = seq + 1;
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_true(acked >= 300);
	log = open_log(f->dir, NULL);
	assert_true(audit_count(log) >= acked);
	audit_close(log);
}

static const uint8_t test_seed[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
#define TEST_KEY_NAME "test.example/enclave"

/* The log's verifier key, parsed. */
static void verifier_of(struct audit_log *log, struct note_verifier *v)
{
	char *text = NULL;

	assert_int_equal(audit_verifier_key(log, &text), 0);
	assert_int_equal(note_verifier_parse(text, strlen(text), v), 0);
	assert_string_equal(v->name, TEST_KEY_NAME);
	free(text);
}

/* An independent tree of the file's lines (merkle_mem), to compare the log's roots with. */
static struct merkle_mem *tree_of_file(const char *path)
{
	struct merkle_mem *m = NULL;
	struct lines l;

	lines_read(path, &l);
	assert_int_equal(merkle_mem_new(l.n + 1, &m), 0);
	for (size_t i = 0; i < l.n; i++) {
		uint8_t leaf[MERKLE_HASH_LEN];

		merkle_leaf_hash(l.v[i], strlen(l.v[i]), leaf);
		assert_int_equal(merkle_mem_append(m, leaf), 0);
	}
	lines_free(&l);
	return m;
}

/* Checkpoints sign the root of exactly the records in the file, at every size; every record's
 * proof, read from the tree files, verifies against them (and not for another record); the tree
 * survives reopening from its saved state and being rebuilt from nothing. */
static void test_checkpoint_and_prove(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	struct note_verifier v;
	struct merkle_mem *m;
	uint8_t root[MERKLE_HASH_LEN];
	struct checkpoint cp;
	char *note = NULL;
	size_t len = 0;

	assert_int_equal(audit_checkpoint(log, &note, &len), -ENOKEY);
	assert_int_equal(audit_signer_set(log, "bad name", test_seed), -EINVAL);
	assert_int_equal(audit_signer_set(log, TEST_KEY_NAME, test_seed), 0);
	verifier_of(log, &v);
	/* The empty tree. */
	assert_int_equal(audit_checkpoint(log, &note, &len), 0);
	assert_int_equal(checkpoint_open(note, len, &v, &cp), 0);
	assert_int_equal(cp.size, 0);
	merkle_empty_root(root);
	assert_memory_equal(cp.root, root, sizeof(root));
	assert_string_equal(cp.origin, TEST_KEY_NAME);
	free(note);

	for (int round = 0; round < 3; round++) {
		for (int k = 0; k < 37 * (round + 1); k++)
			append_ok(log, ev("open", "ds", "u", k));
		assert_int_equal(audit_checkpoint(log, &note, &len), 0);
		assert_int_equal(checkpoint_open(note, len, &v, &cp), 0);
		m = tree_of_file(f->path);
		assert_int_equal(cp.size, merkle_mem_size(m));
		assert_int_equal(merkle_mem_root(m, cp.size, root), 0);
		assert_memory_equal(cp.root, root, sizeof(root));
		merkle_mem_free(m);
		free(note);
		if (round == 1) {
			/* From the saved state, then from nothing: the same tree. */
			char *tree = tu_fmt("%s/tree", f->dir);

			audit_close(log);
			log = open_log(f->dir, NULL);
			audit_close(log);
			tu_rm_rf(tree);
			free(tree);
			log = open_log(f->dir, NULL);
			assert_int_equal(audit_signer_set(log, TEST_KEY_NAME, test_seed), 0);
		}
	}

	for (uint64_t seq = 0; seq < audit_count(log); seq += 7) {
		uint8_t leaf[MERKLE_HASH_LEN], other[MERKLE_HASH_LEN];
		char *proof = NULL, *line = NULL;
		size_t plen = 0, llen = 0;
		uint64_t index = 0;

		assert_int_equal(audit_prove(log, seq, &proof, &plen, &line, &llen), 0);
		assert_int_equal(strlen(line), llen);
		merkle_leaf_hash(line, llen, leaf);
		assert_int_equal(tlog_proof_verify(proof, plen, &v, leaf, &cp, &index), 0);
		assert_int_equal(index, seq);
		/* The same proof does not vouch for another record. */
		memcpy(other, leaf, sizeof(other));
		other[0] ^= 1;
		assert_int_equal(tlog_proof_verify(proof, plen, &v, other, NULL, NULL), -EBADMSG);
		free(proof);
		free(line);
	}
	{
		char *proof = NULL;

		assert_int_equal(audit_prove(log, audit_count(log), &proof, NULL, NULL, NULL),
				 -ENOENT);
		assert_null(proof);
	}
	audit_close(log);
}

/* Every checkpoint the log signs lands in <dir>/checkpoints, in order of size; a periodic signer
 * signs while nothing happens (same size, later time) and once more when it stops. */
struct cp_seen {
	const struct note_verifier *v;
	uint64_t n, last_size;
	int64_t last_time;
};

static int cp_check(void *ctx, const char *note, size_t len, uint64_t index)
{
	struct cp_seen *s = ctx;
	struct checkpoint cp;

	assert_int_equal(index, s->n);
	assert_int_equal(checkpoint_open(note, len, s->v, &cp), 0);
	assert_true(cp.size >= s->last_size);
	assert_true(cp.time_ns > s->last_time);
	s->last_size = cp.size;
	s->last_time = cp.time_ns;
	s->n++;
	return 0;
}

static void test_checkpointer(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	char *path = tu_fmt("%s/%s", f->dir, CHECKPOINTS_FILE_NAME);
	struct note_verifier v;
	struct cp_seen seen = { .v = &v };
	uint64_t torn = 1;

	assert_int_equal(audit_signer_set(log, TEST_KEY_NAME, test_seed), 0);
	verifier_of(log, &v);
	assert_int_equal(audit_checkpointer_start(log, 0), -EINVAL);
	append_ok(log, ev("open", "ds", "u", 1));
	assert_int_equal(audit_checkpointer_start(log, 1), 0);
	assert_int_equal(audit_checkpointer_start(log, 1), -EALREADY);
	/* Wait (30 s at most) for two periodic checkpoints over the one record. */
	for (int i = 0; i < 300 && seen.n < 2; i++) {
		poll(NULL, 0, 100);
		seen = (struct cp_seen){ .v = &v };
		if (access(path, F_OK) == 0)
			assert_int_equal(checkpoints_foreach(path, cp_check, &seen, &torn), 0);
	}
	assert_true(seen.n >= 2);
	assert_int_equal(seen.last_size, 1);
	assert_int_equal(torn, 0);
	append_ok(log, ev("open", "ds", "u", 2));
	audit_checkpointer_stop(log);
	seen = (struct cp_seen){ .v = &v };
	assert_int_equal(checkpoints_foreach(path, cp_check, &seen, NULL), 0);
	assert_int_equal(seen.last_size, 2);   /* the one signed at stop */
	audit_close(log);
	free(path);
}

static int cp_skip_all(void *ctx, const char *note, size_t len, uint64_t index)
{
	(void)ctx;
	(void)note;
	(void)len;
	(void)index;
	return 0;
}

/* A checkpoint note cut short by a full disk (here: RLIMIT_FSIZE, in a child) is cut off the
 * file, so the next checkpoint, once there is room, follows the last whole note and the file
 * reads back as notes only. It used to stay in the middle: the daemon then refused to start
 * ("a line that is not a signature after the blank line"). */
static void test_checkpoint_torn_by_full_disk(void **state)
{
	struct fx *f = *state;
	char *path = tu_fmt("%s/%s", f->dir, CHECKPOINTS_FILE_NAME);
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct audit_log *log = NULL;
		struct rlimit old, small;
		struct stat st;
		uint64_t torn = 9;

		signal(SIGXFSZ, SIG_IGN);
		if (audit_open(f->dir, NULL, &log) < 0 ||
		    audit_signer_set(log, TEST_KEY_NAME, test_seed) < 0)
			_exit(1);
		{
			json_t *rec = ev("open", "ds", "u", 1);

			if (audit_append(log, rec, NULL) < 0)
				_exit(2);
			json_decref(rec);
		}
		if (audit_checkpoint(log, NULL, NULL) < 0 || stat(path, &st) < 0)
			_exit(3);
		/* Room for all but the last 10 bytes of the next note (as long as the first): it is
		 * cut inside its signature line. */
		if (getrlimit(RLIMIT_FSIZE, &old) < 0)
			_exit(4);
		small = old;
		small.rlim_cur = (rlim_t)st.st_size * 2 - 10;
		if (setrlimit(RLIMIT_FSIZE, &small) < 0)
			_exit(4);
		if (audit_checkpoint(log, NULL, NULL) >= 0)
			_exit(5);
		if (setrlimit(RLIMIT_FSIZE, &old) < 0)
			_exit(4);
		if (audit_checkpoint(log, NULL, NULL) < 0)
			_exit(6);
		audit_close(log);
		if (checkpoints_foreach(path, cp_skip_all, NULL, &torn) < 0 || torn != 0)
			_exit(7);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	free(path);
}

/* Records a checkpoint covered that disappear from the log stop the next open, which names the
 * removal; a record changed after the saved state breaks the chain at the next record. */
static void test_open_detects_removal_and_change(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	struct lines l;
	off_t cut;
	uint8_t *raw;
	size_t len;

	assert_int_equal(audit_signer_set(log, TEST_KEY_NAME, test_seed), 0);
	for (int k = 0; k < 5; k++)
		append_ok(log, ev("open", "ds", "u", k));
	cut = file_size(f->path);
	assert_int_equal(audit_checkpoint(log, NULL, NULL), 0);
	for (int k = 0; k < 5; k++)
		append_ok(log, ev("open", "ds", "u", k));
	audit_close(log);

	/* Cut to 3 records, below the checkpoint's 5. */
	lines_read(f->path, &l);
	assert_int_equal(truncate(f->path, (off_t)(strlen(l.v[0]) + strlen(l.v[1]) + strlen(l.v[2]) + 3)), 0);
	lines_free(&l);
	log = NULL;
	assert_int_equal(audit_open(f->dir, NULL, &log), -EBADMSG);
	assert_null(log);
	assert_non_null(strstr(err_detail(), "records were removed"));

	/* Put the first 5 back and change record 7 of 10... rather: rewrite 5 more and flip a byte
	 * of record 6, which the saved state (at 5) does not cover. */
	assert_int_equal(truncate(f->path, cut), 0);
	log = open_log(f->dir, NULL);
	for (int k = 0; k < 5; k++)
		append_ok(log, ev("open", "ds", "u", k));
	audit_close(log);
	raw = tu_read_file(f->path, &len);
	lines_read(f->path, &l);
	{
		size_t off = 0;

		for (int i = 0; i < 6; i++)
			off += strlen(l.v[i]) + 1;
		/* "uid":N -> a different digit inside record 6. */
		raw[off + 2] ^= 0x01;
	}
	lines_free(&l);
	tu_write_file(f->path, raw, len);
	free(raw);
	log = NULL;
	assert_int_equal(audit_open(f->dir, NULL, &log), -EBADMSG);
	assert_non_null(strstr(err_detail(), "record 7: its \"prev\" is not the hash of record 6"));
}

/* A record the saved state covers, edited in place (same length: no offset moves, the last
 * record still matches), stops the next open: the tree files hold its original leaf hash
 * (docs/AUDIT.md, section 7). Editing it back lets the log open again. */
static void test_open_detects_edit_under_state(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	struct lines l;
	uint8_t *raw;
	size_t len, off = 0;

	for (int k = 0; k < 10; k++)
		append_ok(log, ev("open", "ds", "u", k));
	audit_close(log);
	/* The open saves the state over all 10; nothing after it to scan. */
	log = open_log(f->dir, NULL);
	audit_close(log);

	raw = tu_read_file(f->path, &len);
	lines_read(f->path, &l);
	for (int i = 0; i < 5; i++)
		off += strlen(l.v[i]) + 1;
	lines_free(&l);
	raw[off + 2] ^= 0x01;
	tu_write_file(f->path, raw, len);
	log = NULL;
	assert_int_equal(audit_open(f->dir, NULL, &log), -EBADMSG);
	assert_null(log);
	assert_non_null(strstr(err_detail(), "line 6"));
	assert_non_null(strstr(err_detail(), "record 5 is not the record the tree files hold"));
	/* Nothing was changed: the same refusal again. */
	assert_int_equal(audit_open(f->dir, NULL, &log), -EBADMSG);

	/* Edited back: the record is again the one the tree holds, and the log opens. */
	raw[off + 2] ^= 0x01;
	tu_write_file(f->path, raw, len);
	log = open_log(f->dir, NULL);
	audit_close(log);
	free(raw);
}

/* ---- audit_string -------------------------------------------------------------------------- */

static void expect_str(const char *in, const char *want)
{
	json_t *j = audit_string(in);

	assert_non_null(j);
	assert_true(json_is_string(j));
	if (strcmp(json_string_value(j), want) != 0)
		fprintf(stderr, "audit_string: got \"%s\", want \"%s\"\n", json_string_value(j), want);
	assert_string_equal(json_string_value(j), want);
	json_decref(j);
}

static void test_audit_string(void **state)
{
	static const char *const valid[] = {
		"",
		"plain ASCII, with \\ and \" and \t",
		"\x7f\x01",                             /* controls are valid UTF-8 */
		"\xc2\x80 \xc3\xa9 \xdf\xbf",           /* 2 bytes: U+0080, U+00E9, U+07FF */
		"\xe0\xa0\x80 \xe2\x82\xac \xed\x9f\xbf \xee\x80\x80 \xef\xbf\xbf", /* 3 bytes */
		"\xf0\x90\x80\x80 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf", /* 4 bytes, up to U+10FFFF */
		"a\\xffb",                              /* looks like an escape, is not one */
	};
	static const struct {
		const char *in, *want;
	} invalid[] = {
		/* overlong forms */
		{ "\xc0\xaf", "\\xc0\\xaf" },
		{ "\xc1\xbf", "\\xc1\\xbf" },
		{ "\xe0\x80\xaf", "\\xe0\\x80\\xaf" },
		{ "\xe0\x9f\xbf", "\\xe0\\x9f\\xbf" },
		{ "\xf0\x80\x80\xaf", "\\xf0\\x80\\x80\\xaf" },
		{ "\xf0\x8f\xbf\xbf", "\\xf0\\x8f\\xbf\\xbf" },
		/* UTF-16 surrogates, alone and as a pair */
		{ "\xed\xa0\x80", "\\xed\\xa0\\x80" },
		{ "\xed\xbf\xbf", "\\xed\\xbf\\xbf" },
		{ "\xed\xa0\xbd\xed\xb8\x80", "\\xed\\xa0\\xbd\\xed\\xb8\\x80" },
		/* above U+10FFFF, and bytes that never occur */
		{ "\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80" },
		{ "\xf5\x80\x80\x80", "\\xf5\\x80\\x80\\x80" },
		{ "\xf8\x88\x80\x80\x80", "\\xf8\\x88\\x80\\x80\\x80" },
		{ "\xfe\xff", "\\xfe\\xff" },
		/* truncated sequences, at the end and followed by more text */
		{ "\xc3", "\\xc3" },
		{ "a\xe2\x82", "a\\xe2\\x82" },
		{ "\xe2\x82z", "\\xe2\\x82z" },
		{ "\xf0\x9f\x98", "\\xf0\\x9f\\x98" },
		{ "\xf0\x9f\x98\xc3\xa9", "\\xf0\\x9f\\x98\xc3\xa9" },
		/* lone continuation bytes */
		{ "\x80", "\\x80" },
		{ "x\xbf\xbfy", "x\\xbf\\xbfy" },
		/* valid text around an invalid byte passes unchanged */
		{ "ok\xff\xc3\xa9\xe2\x82\xac.", "ok\\xff\xc3\xa9\xe2\x82\xac." },
	};
	json_t *j, *rec;
	struct fx *f = *state;
	struct audit_log *log;
	struct lines l;

	for (size_t i = 0; i < ARRAY_SIZE(valid); i++)
		expect_str(valid[i], valid[i]);
	for (size_t i = 0; i < ARRAY_SIZE(invalid); i++)
		expect_str(invalid[i].in, invalid[i].want);
	j = audit_string(NULL);
	assert_true(json_is_null(j));
	json_decref(j);

	/* In a record, the result is plain ASCII on disk and reads back as the escaped text. */
	log = open_log(f->dir, NULL);
	rec = ev("open", NULL, NULL, -1);
	json_object_set_new(rec, "path", audit_string("/\xff\xc3\xa9"));
	append_ok(log, rec);
	audit_close(log);
	lines_read(f->path, &l);
	assert_non_null(strstr(l.v[0], "\"path\":\"/\\\\xff\\u00E9\""));
	j = parse(l.v[0]);
	assert_string_equal(json_string_value(json_object_get(j, "path")), "/\\xff\xc3\xa9");
	json_decref(j);
	lines_free(&l);
}

/* ---- Time ---------------------------------------------------------------------------------- */

static void test_time_parse(void **state)
{
	static const int64_t values[] = {
		0, 1, -1, 999999999, 1000000000, -1000000000, -1000000001,
		951782400123456789LL,   /* 2000-02-29, a leap day of a century year */
		4107542400000000000LL,  /* 2100-03-01, after 2100-02-28 (not a leap year) */
		1795251600000000000LL, INT64_MAX, INT64_MIN,
	};
	static const char *const bad[] = {
		"2026-02-29T00:00:00.000000000Z", "2100-02-29T00:00:00.000000000Z",
		"2026-00-10T00:00:00.000000000Z", "2026-13-10T00:00:00.000000000Z",
		"2026-04-31T00:00:00.000000000Z", "2026-01-00T00:00:00.000000000Z",
		"2026-01-32T00:00:00.000000000Z", "2026-01-01T24:00:00.000000000Z",
		"2026-01-01T00:60:00.000000000Z", "2026-01-01T00:00:60.000000000Z",
		"2026-01-01t00:00:00.000000000Z", "2026-01-01T00:00:00.000000000z",
		"2026-01-01 00:00:00.000000000Z", "2026-01-01T00:00:00,000000000Z",
		"2026-01-01T00:00:00.00000000Z", "2026-01-01T00:00:00.0000000000Z",
		"2026-01-01T00:00:00.000000000+00:00", "2026-01-01T00:00:00Z",
		"+026-01-01T00:00:00.000000000Z", "2026-1-01T00:00:00.000000000Z0",
		"2026-01-01T00:00:00.000000000ZZ", "2026-01-01T00:00:00.00000000aZ", "",
	};
	int64_t got;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(values); i++) {
		char s[TIME_TEXT_MAX];

		time_format_ns(values[i], s);
		got = 0;
		assert_int_equal(audit_time_parse_ns(s, strlen(s), &got), 0);
		assert_int_equal(got, values[i]);
	}
	/* Against the C library, every day of the years around three centuries' leap rules. */
	for (int y = 1890; y <= 2110; y++) {
		for (int day = 0; day < 366; day++) {
			struct tm tm = { .tm_year = y - 1900, .tm_mon = 0, .tm_mday = 1 + day,
					 .tm_hour = 13, .tm_min = 7, .tm_sec = 59 };
			char s[64];
			time_t tt = timegm(&tm);

			if (tm.tm_year != y - 1900)
				break;
			snprintf(s, sizeof(s), "%04d-%02d-%02dT13:07:59.000000042Z", y,
				 tm.tm_mon + 1, tm.tm_mday);
			assert_int_equal(audit_time_parse_ns(s, strlen(s), &got), 0);
			assert_int_equal(got, (int64_t)tt * 1000000000 + 42);
		}
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		got = 12;
		if (audit_time_parse_ns(bad[i], strlen(bad[i]), &got) != -EINVAL)
			fprintf(stderr, "accepted %s\n", bad[i]);
		assert_int_equal(audit_time_parse_ns(bad[i], strlen(bad[i]), &got), -EINVAL);
		assert_int_equal(got, 12);
	}
	/* Valid dates that int64 nanoseconds do not reach. */
	assert_int_equal(audit_time_parse_ns("2262-04-11T23:47:16.854775808Z", 30, &got), -ERANGE);
	assert_int_equal(audit_time_parse_ns("1677-09-21T00:12:43.145224191Z", 30, &got), -ERANGE);
	assert_int_equal(audit_time_parse_ns("9999-12-31T23:59:59.999999999Z", 30, &got), -ERANGE);
	assert_int_equal(audit_time_parse_ns("0000-01-01T00:00:00.000000000Z", 30, &got), -ERANGE);
	/* Length is given, not found by strlen. */
	assert_int_equal(audit_time_parse_ns("1970-01-01T00:00:00.000000001Zjunk", 30, &got), 0);
	assert_int_equal(got, 1);
}

/* ---- audit_foreach ------------------------------------------------------------------------- */

struct rec_spec {
	const char *event, *dataset, *user;
	json_int_t uid;
};

static const struct rec_spec specs[] = {
	{ "daemon_start", NULL, NULL, 0 },
	{ "open", "cohort", "alice", 1000 },
	{ "open", "cohort", "bob", 1001 },
	{ "close", "cohort", "alice", 1000 },
	{ "open", "trial", "alice", 1000 },
	{ "import", "trial", "steward", 2000 },
	{ "grant", NULL, "steward", 2000 },
	{ "open", "trial", NULL, 1000 },         /* uid only */
	{ "open", "cohort", "1000", 4242 },      /* a name that is digits */
	{ "integrity", "cohort2", "bob", 1001 }, /* a dataset name with "cohort" as prefix */
	{ "daemon_stop", NULL, NULL, 0 },
};

/* A user filter that is all decimal digits also names a uid. */
static bool uid_is(const char *s, long long *ret)
{
	char *end;

	if (strspn(s, "0123456789") != strlen(s) || !*s)
		return false;
	errno = 0;
	*ret = strtoll(s, &end, 10);
	return errno == 0 && *end == '\0';
}

/* The seqs of the records in specs that a filter must pass on, by a plain scan. */
static size_t expected(const struct audit_filter *flt, const int64_t *times, uint64_t *out)
{
	size_t n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(specs); i++) {
		const struct rec_spec *s = &specs[i];
		long long uid;

		if (flt->dataset && (!s->dataset || strcmp(flt->dataset, s->dataset) != 0))
			continue;
		if (flt->event && strcmp(flt->event, s->event) != 0)
			continue;
		if (flt->user && !(s->user && strcmp(flt->user, s->user) == 0) &&
		    !(uid_is(flt->user, &uid) && uid == s->uid))
			continue;
		if (flt->since_ns && times[i] < flt->since_ns)
			continue;
		if (flt->until_ns && times[i] >= flt->until_ns)
			continue;
		out[n++] = i;
	}
	return n;
}

static void expect_filter(const char *dir, const struct audit_filter *flt, const int64_t *times,
			  size_t want_n)
{
	uint64_t want[ARRAY_SIZE(specs)], got[ARRAY_SIZE(specs)];
	struct collect c = { .seqs = got };
	size_t n = expected(flt, times, want);

	assert_int_equal(audit_foreach(dir, flt, collect_fn, &c), 0);
	assert_int_equal(c.n, n);
	if (want_n != SIZE_MAX)
		assert_int_equal(n, want_n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(got[i], want[i]);
}

static void test_foreach_filters(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	int64_t times[ARRAY_SIZE(specs)];
	struct collect c = { 0 };
	struct lines l;
	char *missing;

	for (size_t i = 0; i < ARRAY_SIZE(specs); i++) {
		const struct rec_spec *s = &specs[i];

		append_ok(log, ev(s->event, s->dataset, s->user, s->uid));
	}
	/* The writer stays open: the reader needs neither it nor its lock. */
	lines_read(f->path, &l);
	for (size_t i = 0; i < l.n; i++) {
		json_t *j = parse(l.v[i]);

		times[i] = time_of(j);
		json_decref(j);
	}

	c.file = &l;
	assert_int_equal(audit_foreach(f->dir, NULL, collect_fn, &c), 0);
	assert_int_equal(c.n, ARRAY_SIZE(specs));
	c.n = 0;
	assert_int_equal(audit_foreach(f->dir, &(struct audit_filter){ 0 }, collect_fn, &c), 0);
	assert_int_equal(c.n, ARRAY_SIZE(specs));

	expect_filter(f->dir, &(struct audit_filter){ .dataset = "cohort" }, times, 4);
	expect_filter(f->dir, &(struct audit_filter){ .dataset = "cohort2" }, times, 1);
	expect_filter(f->dir, &(struct audit_filter){ .dataset = "nope" }, times, 0);
	expect_filter(f->dir, &(struct audit_filter){ .event = "open" }, times, 5);
	expect_filter(f->dir, &(struct audit_filter){ .event = "daemon_start" }, times, 1);
	expect_filter(f->dir, &(struct audit_filter){ .user = "alice" }, times, 3);
	/* By uid: alice's records and the one with her uid only; and the user named "1000". */
	expect_filter(f->dir, &(struct audit_filter){ .user = "1000" }, times, 5);
	expect_filter(f->dir, &(struct audit_filter){ .user = "2000" }, times, 2);
	expect_filter(f->dir, &(struct audit_filter){ .user = "01001" }, times, 2);
	expect_filter(f->dir, &(struct audit_filter){ .user = "-1000" }, times, 0);
	expect_filter(f->dir, &(struct audit_filter){ .user = "99999999999999999999999" }, times,
		      0);
	expect_filter(f->dir,
		      &(struct audit_filter){ .dataset = "cohort", .user = "alice", .event = "open" },
		      times, 1);
	/* Time ranges: since is inclusive, until exclusive. */
	expect_filter(f->dir, &(struct audit_filter){ .since_ns = times[3] }, times, SIZE_MAX);
	expect_filter(f->dir, &(struct audit_filter){ .until_ns = times[3] }, times, SIZE_MAX);
	expect_filter(f->dir, &(struct audit_filter){ .since_ns = times[2], .until_ns = times[5] },
		      times, SIZE_MAX);
	expect_filter(f->dir, &(struct audit_filter){ .since_ns = times[10] + 1 }, times, 0);
	expect_filter(f->dir, &(struct audit_filter){ .until_ns = times[0] }, times, 0);
	expect_filter(f->dir,
		      &(struct audit_filter){ .since_ns = times[1], .until_ns = times[9] + 1,
					      .event = "open", .user = "1000" },
		      times, SIZE_MAX);

	/* A non-zero return stops the walk and is passed back. */
	c = (struct collect){ .stop_after = 3 };
	assert_int_equal(audit_foreach(f->dir, NULL, collect_fn, &c), 7);
	assert_int_equal(c.n, 3);

	missing = tu_fmt("%s/missing", f->root);
	assert_int_equal(audit_foreach(missing, NULL, collect_fn, &c), -ENOENT);
	assert_non_null(strstr(err_detail(), missing));
	free(missing);
	audit_close(log);
	lines_free(&l);
}

/* A reader skips the final line another writer is still writing, and sees it once complete. */
static void test_foreach_partial_tail(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL);
	const char *line = "{\"event\":\"late\",\"seq\":3," T0 "}\n";
	struct collect c = { 0 };
	off_t base;
	int fd;

	for (int i = 0; i < 3; i++)
		append_ok(log, ev("open", NULL, NULL, -1));
	base = file_size(f->path);
	/* A second descriptor, as a writer in another process would have. */
	fd = open(f->path, O_WRONLY | O_APPEND | O_CLOEXEC);
	assert_true(fd >= 0);
	for (size_t cut = 1; cut < strlen(line); cut += 7) {
		assert_int_equal(ftruncate(fd, base), 0);
		assert_int_equal(write(fd, line, cut), (ssize_t)cut);
		c.n = 0;
		assert_int_equal(audit_foreach(f->dir, NULL, collect_fn, &c), 0);
		assert_int_equal(c.n, 3);
	}
	assert_int_equal(ftruncate(fd, base), 0);
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	c.n = 0;
	assert_int_equal(audit_foreach(f->dir, &(struct audit_filter){ .event = "late" },
				       collect_fn, &c), 0);
	assert_int_equal(c.n, 1);
	close(fd);
	audit_close(log);
}

/* One writer per log: a second audit_open() of the same directory is -EBUSY until the first
 * closes. */
static void test_busy(void **state)
{
	struct fx *f = *state;
	struct audit_log *log = open_log(f->dir, NULL), *second = NULL;

	append_ok(log, ev("open", NULL, NULL, -1));
	err_clear();
	assert_int_equal(audit_open(f->dir, NULL, &second), -EBUSY);
	assert_null(second);
	assert_non_null(strstr(err_detail(), f->path));
	/* The first is unaffected. */
	assert_int_equal(append_ok(log, ev("open", NULL, NULL, -1)), 1);
	audit_close(log);
	second = open_log(f->dir, NULL);
	assert_int_equal(audit_count(second), 2);
	audit_close(second);
}

/* The matcher on decoded records: event families, and the links it follows (a grant chosen by
 * grantee to its approval, revocation and opens; an open chosen by grant or job to its close). */
static int match_list(const struct audit_filter *f, const char *const *lines, size_t n,
		      char *out, size_t outn)
{
	struct audit_matcher *m = NULL;
	size_t o = 0;

	assert_int_equal(audit_matcher_new(f, &m), 0);
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		json_t *rec = json_loads(lines[i], 0, NULL);
		int r;

		assert_non_null(rec);
		r = audit_matcher_test(m, rec, 1000 + (int64_t)i);
		assert_true(r >= 0);
		if (r)
			o += (size_t)snprintf(out + o, outn - o, "%s%zu", o ? "," : "", i);
		json_decref(rec);
	}
	audit_matcher_free(m);
	return 0;
}

static void test_matcher_families_and_links(void **state)
{
	static const char *const recs[] = {
		/* 0 */ "{\"seq\":0,\"event\":\"grant_request\",\"grant_id\":5,\"dataset\":\"ds\","
			"\"user\":\"root\",\"uid\":0,\"grant\":{\"id\":5,\"kind\":\"user\","
			"\"principal\":\"alice\",\"principal_id\":1000,\"dataset\":\"ds\",\"version\":1}}",
		/* 1 */ "{\"seq\":1,\"event\":\"grant_request\",\"grant_id\":6,\"dataset\":\"ds\","
			"\"user\":\"root\",\"uid\":0,\"grant\":{\"id\":6,\"kind\":\"group\","
			"\"principal\":\"lab\",\"principal_id\":1000,\"dataset\":\"ds\",\"version\":0}}",
		/* 2 */ "{\"seq\":2,\"event\":\"grant_approve\",\"grant_id\":5,\"dataset\":\"ds\","
			"\"user\":\"bob\",\"uid\":1001}",
		/* 3 */ "{\"seq\":3,\"event\":\"open\",\"grant_id\":5,\"dataset\":\"ds\",\"version\":1,"
			"\"user\":\"alice\",\"uid\":1000,\"decision\":\"allow\",\"job_id\":77}",
		/* 4 */ "{\"seq\":4,\"event\":\"open\",\"grant_id\":6,\"dataset\":\"ds\",\"version\":2,"
			"\"user\":\"alice\",\"uid\":1000,\"decision\":\"allow\",\"job_id\":78}",
		/* 5 */ "{\"seq\":5,\"event\":\"close\",\"open_seq\":3,\"dataset\":\"ds\",\"version\":1,"
			"\"user\":\"alice\",\"uid\":1000,\"bytes\":10}",
		/* 6 */ "{\"seq\":6,\"event\":\"close\",\"open_seq\":4,\"dataset\":\"ds\",\"version\":2,"
			"\"user\":\"alice\",\"uid\":1000,\"bytes\":20}",
		/* 7 */ "{\"seq\":7,\"event\":\"revoke\",\"grant_id\":5,\"dataset\":\"ds\","
			"\"user\":\"root\",\"uid\":0}",
		/* 8 */ "{\"seq\":8,\"event\":\"deny_add\",\"rule_id\":1,\"user\":\"root\",\"uid\":0}",
		/* 9 */ "{\"seq\":9,\"event\":\"read_refused\",\"open_seq\":3,\"dataset\":\"ds\","
			"\"version\":1,\"user\":\"alice\",\"uid\":1000,\"bytes\":10}",
	};
	char out[256];

	(void)state;
	/* A family covers its events; a name only itself; a list is a union. */
	match_list(&(struct audit_filter){ .event = "grant" }, recs, ARRAY_SIZE(recs), out,
		   sizeof(out));
	assert_string_equal(out, "0,1,2,7");
	match_list(&(struct audit_filter){ .event = "grant_request" }, recs, ARRAY_SIZE(recs), out,
		   sizeof(out));
	assert_string_equal(out, "0,1");
	match_list(&(struct audit_filter){ .event = "access,deny" }, recs, ARRAY_SIZE(recs), out,
		   sizeof(out));
	assert_string_equal(out, "3,4,5,6,8,9");
	/* The grantee's grant, followed to its approval, open, that open's close and refused read,
	 * and its revocation; not the group grant that happens to have the same numeric id. */
	match_list(&(struct audit_filter){ .grantee = "1000" }, recs, ARRAY_SIZE(recs), out,
		   sizeof(out));
	assert_string_equal(out, "0,2,3,5,7,9");
	match_list(&(struct audit_filter){ .grantee = "alice" }, recs, ARRAY_SIZE(recs), out,
		   sizeof(out));
	assert_string_equal(out, "0,2,3,5,7,9");
	match_list(&(struct audit_filter){ .group = "lab" }, recs, ARRAY_SIZE(recs), out,
		   sizeof(out));
	assert_string_equal(out, "1,4,6");
	/* A grant id: the records naming it, and the closes of the opens it allowed. */
	match_list(&(struct audit_filter){ .grant_id = 6 }, recs, ARRAY_SIZE(recs), out,
		   sizeof(out));
	assert_string_equal(out, "1,4,6");
	/* A job: its opens and their closes, also when only closes are asked for. */
	match_list(&(struct audit_filter){ .job_id = 77 }, recs, ARRAY_SIZE(recs), out,
		   sizeof(out));
	assert_string_equal(out, "3,5,9");
	match_list(&(struct audit_filter){ .job_id = 77, .event = "close" }, recs,
		   ARRAY_SIZE(recs), out, sizeof(out));
	assert_string_equal(out, "5");
	match_list(&(struct audit_filter){ .job_id = 99 }, recs, ARRAY_SIZE(recs), out,
		   sizeof(out));
	assert_string_equal(out, "");
	/* A version: records about it, and grants of it or of every version. */
	match_list(&(struct audit_filter){ .dataset = "ds", .version = 2 }, recs, ARRAY_SIZE(recs),
		   out, sizeof(out));
	assert_string_equal(out, "1,4,6");
	/* One record by seq. */
	match_list(&(struct audit_filter){ .seq_set = true, .seq = 7 }, recs, ARRAY_SIZE(recs),
		   out, sizeof(out));
	assert_string_equal(out, "7");
	match_list(&(struct audit_filter){ .seq_set = true, .seq = 0 }, recs, ARRAY_SIZE(recs),
		   out, sizeof(out));
	assert_string_equal(out, "0");

	/* Names the edges check: families, exact names and lists; an unknown one is refused. */
	assert_int_equal(audit_event_filter_check("grant"), 0);
	assert_int_equal(audit_event_filter_check("open,close,deny"), 0);
	assert_int_equal(audit_event_filter_check("grants"), -EINVAL);
	assert_int_equal(audit_event_filter_check("open,"), -EINVAL);
	assert_int_equal(audit_event_filter_check(""), -EINVAL);
}

/* ---- Sealed records -------------------------------------------------------------------------- */

/* A store key for the tests (the daemon derives its own from the master key). */
static const uint8_t seal_store_key[AUDIT_SEAL_KEY_LEN] = { 7, 7, 7, 1, 2, 3 };

/* A sealing log in f->dir with one auditor, whose secret key file is written to *ret_key. */
static struct audit_log *open_sealed(struct fx *f, char **ret_key, uint8_t *ret_pk)
{
	struct audit_log *log = open_log(f->dir, NULL);
	char *key = tu_fmt("%s/auditor.key", f->root);
	uint8_t pk[AUDIT_AUDITOR_KEY_LEN];

	if (access(key, F_OK) != 0) {
		assert_int_equal(audit_auditor_keypair_write(key, pk), 0);
	} else {
		uint8_t *sk = NULL;

		assert_int_equal(audit_auditor_secret_read(key, &sk, pk), 0);
		sodium_free(sk);
	}
	assert_int_equal(audit_sealer_set(log, seal_store_key, (const uint8_t(*)[32])&pk, 1), 0);
	if (ret_pk)
		memcpy(ret_pk, pk, sizeof(pk));
	*ret_key = key;
	return log;
}

/* A record with distinctive strings in every sensitive place (the uid has 7 digits: a short one
 * such as 5001 turns up by chance in the clear times and ids). */
static json_t *secret_rec(const char *user)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:I, s:s, s:s, s:s, s:I}",
			      "event", "open", "dataset", "oncology-StMarys-2026", "dataset_id",
			      (json_int_t)3, "version", (json_int_t)2, "path",
			      "/hiv-positive/JaneDoe_MRN4471923_ct.dcm", "user", user, "uid",
			      (json_int_t)8675309, "decision", "allow", "reason", "allow", "process",
			      "python3", "grant_id", (json_int_t)42);

	assert_non_null(o);
	return o;
}

struct opened {
	struct audit_opener *o;
	int err;              /* the first opening error */
	char detail[512];
	json_t *recs;         /* the opened records */
};

static int open_fn(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct opened *op = ctx;
	json_t *out = NULL;
	int r;

	(void)line, (void)len;
	err_clear();
	r = audit_opener_open(op->o, rec, &out);
	if (r < 0) {
		if (!op->err) {
			op->err = r;
			snprintf(op->detail, sizeof(op->detail), "%s", err_detail());
		}
		return 0;
	}
	json_array_append_new(op->recs, out);
	return 0;
}

/* Open every record of the log in dir with o; returns the first error (0: none). */
static int open_all(const char *dir, struct audit_opener *o, struct opened *op)
{
	*op = (struct opened){ .o = o, .recs = json_array() };
	assert_int_equal(audit_foreach(dir, NULL, open_fn, op), 0);
	return op->err;
}

/* The file holds none of the names; the store key and the auditor key open every record to what
 * was appended; without a key the sealed part stays shut; the clear part is what the docs say. */
static void test_sealed_unreadable_without_key(void **state)
{
	static const char *const secrets[] = { "oncology-StMarys-2026", "JaneDoe", "MRN4471923",
					       "hiv-positive", "dr-nightingale", "python3",
					       "8675309" };
	struct fx *f = *state;
	struct audit_opener *o = NULL;
	struct opened op;
	uint8_t *raw;
	size_t len;
	char *key;
	struct audit_log *log = open_sealed(f, &key, NULL);
	json_t *r1;

	append_ok(log, secret_rec("dr-nightingale"));
	append_ok(log, secret_rec("dr-nightingale"));
	audit_close(log);

	raw = tu_read_file(f->path, &len);
	for (size_t i = 0; i < ARRAY_SIZE(secrets); i++)
		assert_null(memmem(raw, len, secrets[i], strlen(secrets[i])));
	/* The structure stays clear: a key record first, then the records with their ids. */
	assert_non_null(memmem(raw, len, "\"event\":\"log_key\"", 17));
	assert_non_null(memmem(raw, len, "\"decision\":\"allow\"", 18));
	assert_non_null(memmem(raw, len, "\"grant_id\":42", 13));
	free(raw);

	/* No key: the records pass, still sealed; opening them says no key was given. */
	assert_int_equal(audit_opener_new(NULL, NULL, &o), 0);
	assert_int_equal(open_all(f->dir, o, &op), -ENOKEY);
	assert_non_null(strstr(op.detail, "no auditor key"));
	json_decref(op.recs);
	audit_opener_free(o);

	/* The store key and the auditor key each open everything. */
	for (int k = 0; k < 2; k++) {
		assert_int_equal(audit_opener_new(k == 0 ? seal_store_key : NULL,
						  k == 1 ? key : NULL, &o), 0);
		assert_int_equal(open_all(f->dir, o, &op), 0);
		assert_int_equal(json_array_size(op.recs), 3);
		r1 = json_array_get(op.recs, 1);
		assert_string_equal(json_string_value(json_object_get(r1, "path")),
				    "/hiv-positive/JaneDoe_MRN4471923_ct.dcm");
		assert_string_equal(json_string_value(json_object_get(r1, "user")),
				    "dr-nightingale");
		assert_int_equal(int_of(r1, "uid"), 8675309);
		assert_int_equal(int_of(r1, "seq"), 1);
		assert_null(json_object_get(r1, "sealed"));
		json_decref(op.recs);
		audit_opener_free(o);
	}
	free(key);
}

/* Another auditor's key is refused, naming the key ids the log is sealed to. */
static void test_sealed_wrong_auditor_key(void **state)
{
	struct fx *f = *state;
	char *key, *other = tu_fmt("%s/other.key", f->root), id[AUDIT_AUDITOR_ID_TEXT];
	uint8_t pk[AUDIT_AUDITOR_KEY_LEN], opk[AUDIT_AUDITOR_KEY_LEN];
	struct audit_log *log = open_sealed(f, &key, pk);
	struct audit_opener *o = NULL;
	struct opened op;

	append_ok(log, secret_rec("alice"));
	audit_close(log);
	assert_int_equal(audit_auditor_keypair_write(other, opk), 0);
	assert_int_equal(audit_opener_new(NULL, other, &o), 0);
	assert_int_equal(open_all(f->dir, o, &op), -ENOKEY);
	audit_auditor_id(pk, id);
	assert_non_null(strstr(op.detail, id));
	assert_non_null(strstr(op.detail, "not sealed to auditor key"));
	json_decref(op.recs);
	audit_opener_free(o);

	/* A key file others can read is refused before anything is opened. */
	assert_int_equal(chmod(other, 0644), 0);
	assert_int_equal(audit_opener_new(NULL, other, &o), -EPERM);
	free(other);
	free(key);
}

/* Rewrite line `which` of the log (0-based) with fn, then open the whole log with the store key:
 * the first error. The log is put back afterwards. */
static int tamper_and_open(struct fx *f, size_t which, void (*fn)(json_t *rec, json_t *other),
			   size_t other_line, char *detail, size_t detail_len)
{
	struct lines l;
	struct audit_opener *o = NULL;
	struct opened op;
	json_t *rec, *oth;
	char *line, *saved;
	size_t saved_len;
	FILE *out;
	int r;

	saved = (char *)tu_read_file(f->path, &saved_len);
	lines_read(f->path, &l);
	rec = parse(l.v[which]);
	oth = parse(l.v[other_line]);
	fn(rec, oth);
	line = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
	out = fopen(f->path, "w");
	assert_non_null(out);
	for (size_t i = 0; i < l.n; i++)
		fprintf(out, "%s\n", i == which ? line : l.v[i]);
	fclose(out);
	assert_int_equal(audit_opener_new(seal_store_key, NULL, &o), 0);
	r = open_all(f->dir, o, &op);
	snprintf(detail, detail_len, "%s", op.detail);
	json_decref(op.recs);
	audit_opener_free(o);
	free(line);
	json_decref(rec);
	json_decref(oth);
	lines_free(&l);
	tu_write_file(f->path, saved, saved_len);
	free(saved);
	return r;
}

static void flip_sealed(json_t *rec, json_t *other)
{
	const char *s = json_string_value(json_object_get(rec, "sealed"));
	char *c = strdup(s);

	(void)other;
	c[40] = c[40] == 'A' ? 'B' : 'A';
	json_object_set_new(rec, "sealed", json_string(c));
	free(c);
}

static void swap_sealed(json_t *rec, json_t *other)
{
	json_object_set(rec, "sealed", json_object_get(other, "sealed"));
}

/* "//" in the sealed text written as U+0080 (bytes C2 80), which libsodium 1.0.18 decodes as two
 * '/': the same bytes under another text. */
static void noncanonical_sealed(json_t *rec, json_t *other)
{
	const char *s = json_string_value(json_object_get(rec, "sealed"));
	const char *at = strstr(s, "//");
	size_t len = strlen(s) + 1;
	char *c = malloc(len);

	(void)other;
	assert_non_null(at);
	assert_non_null(c);
	assert_int_equal(snprintf(c, len, "%.*s\xc2\x80%s", (int)(at - s), s, at + 2), len - 1);
	json_object_set_new(rec, "sealed", json_string(c));
	free(c);
}

static void change_decision(json_t *rec, json_t *other)
{
	(void)other;
	json_object_set_new(rec, "decision", json_string("deny"));
}

static void change_seq_of_key(json_t *rec, json_t *other)
{
	(void)other;
	/* The record claims the later epoch's key record (replay across epochs). */
	json_object_set(rec, "key", json_object_get(other, "seq"));
}

static void swap_store_box(json_t *rec, json_t *other)
{
	json_object_set(rec, "store", json_object_get(other, "store"));
}

/* A sealed part forged, swapped from another record, replayed under another epoch's key, or left
 * in place while a clear member changes, does not open; nor does a key record whose wrapped key
 * came from another key record. The log's own checks see these too (the chain): here the
 * sealing alone is tested. */
/* An auditor's public key text is taken only in its canonical form: a text that decodes to the
 * same key but is not its encoding (a byte from 0x80 up, which libsodium 1.0.18 decodes as '/';
 * other unused low bits in the last character) is refused, and so is anything else malformed. */
static void test_auditor_public_canonical(void **state)
{
	uint8_t pk[AUDIT_AUDITOR_KEY_LEN], got[AUDIT_AUDITOR_KEY_LEN];
	char text[AUDIT_AUDITOR_PUB_TEXT + 2], bad[sizeof(text)];
	size_t n, slash;

	(void)state;
	memset(pk, 0xff, sizeof(pk));   /* its encoding is all '/' but the last 2 characters */
	audit_auditor_public_format(pk, text);
	n = strlen(text);
	assert_int_equal(audit_auditor_public_parse(text, n, got), 0);
	assert_memory_equal(got, pk, sizeof(pk));
	text[n] = '\n';
	text[n + 1] = '\0';
	assert_int_equal(audit_auditor_public_parse(text, n + 1, got), 0);
	text[n] = '\0';

	slash = strchr(text, ':') + 1 - text;
	assert_int_equal(text[slash], '/');
	for (unsigned c = 0x80; c <= 0xff; c += 0x3f) {
		memcpy(bad, text, n + 1);
		bad[slash] = (char)c;
		memset(got, 0xaa, sizeof(got));
		assert_int_equal(audit_auditor_public_parse(bad, n, got), -EINVAL);
		for (size_t i = 0; i < sizeof(got); i++)
			assert_int_equal(got[i], 0xaa);   /* untouched */
	}
	/* "...//8=" is the encoding; "...//9=" differs only in bits the decoding drops. */
	memcpy(bad, text, n + 1);
	assert_int_equal(bad[n - 2], '8');
	bad[n - 2] = '9';
	assert_int_equal(audit_auditor_public_parse(bad, n, got), -EINVAL);
	/* Cut, the prefix changed, a character not base64. */
	assert_int_equal(audit_auditor_public_parse(text, n - 4, got), -EINVAL);
	memcpy(bad, text, n + 1);
	bad[0] = 'E';
	assert_int_equal(audit_auditor_public_parse(bad, n, got), -EINVAL);
	memcpy(bad, text, n + 1);
	bad[slash + 3] = '*';
	assert_int_equal(audit_auditor_public_parse(bad, n, got), -EINVAL);
}

/* A sealed part is taken only in its canonical base64: another text for the same bytes is
 * refused before anything is opened. The records are sealed under fresh nonces, so enough of
 * them are appended for one to hold "//" (each of about 300 characters does with p ~ 7 %). */
static void test_sealed_noncanonical_refused(void **state)
{
	struct fx *f = *state;
	char *key, detail[512];
	struct audit_log *log = open_sealed(f, &key, NULL);
	struct lines l;
	size_t which = 0;

	for (unsigned i = 0; i < 300; i++)
		append_ok(log, secret_rec("alice"));
	audit_close(log);
	free(key);
	lines_read(f->path, &l);
	for (size_t i = 1; i < l.n && !which; i++) {
		json_t *rec = parse(l.v[i]);
		const char *s = json_string_value(json_object_get(rec, "sealed"));

		if (s && strstr(s, "//"))
			which = i;
		json_decref(rec);
	}
	lines_free(&l);
	assert_true(which > 0);
	assert_int_equal(tamper_and_open(f, which, noncanonical_sealed, which, detail,
					 sizeof(detail)), -EBADMSG);
	assert_non_null(strstr(detail, "not base64"));
}

static void test_sealed_forgery_detected(void **state)
{
	struct fx *f = *state;
	char *key, detail[512];
	struct audit_log *log = open_sealed(f, &key, NULL);

	/* 0 key, 1 open, 2 open; a reopen starts a new epoch: 3 key, 4 open. */
	append_ok(log, secret_rec("alice"));
	append_ok(log, secret_rec("bob"));
	audit_close(log);
	free(key);
	log = open_sealed(f, &key, NULL);
	append_ok(log, secret_rec("carol"));
	audit_close(log);
	{
		struct audit_opener *o = NULL;
		struct opened op;

		assert_int_equal(audit_opener_new(seal_store_key, NULL, &o), 0);
		assert_int_equal(open_all(f->dir, o, &op), 0);
		assert_int_equal(json_array_size(op.recs), 5);
		assert_string_equal(json_string_value(json_object_get(json_array_get(op.recs, 3),
								      "event")), "log_key");
		json_decref(op.recs);
		audit_opener_free(o);
	}

	assert_int_equal(tamper_and_open(f, 1, flip_sealed, 1, detail, sizeof(detail)),
			 -EBADMSG);
	assert_non_null(strstr(detail, "record 1"));
	assert_int_equal(tamper_and_open(f, 1, swap_sealed, 2, detail, sizeof(detail)),
			 -EBADMSG);
	assert_non_null(strstr(detail, "does not authenticate"));
	assert_int_equal(tamper_and_open(f, 1, change_decision, 1, detail, sizeof(detail)),
			 -EBADMSG);
	assert_int_equal(tamper_and_open(f, 4, swap_sealed, 1, detail, sizeof(detail)),
			 -EBADMSG);
	assert_int_equal(tamper_and_open(f, 1, change_seq_of_key, 3, detail, sizeof(detail)),
			 -EBADMSG);
	assert_int_equal(tamper_and_open(f, 3, swap_store_box, 0, detail, sizeof(detail)),
			 -ENOKEY);
	assert_non_null(strstr(detail, "does not open with this store's key"));
	free(key);
}

/* A batch that fails after its key record was queued is cut with it: the next append starts a
 * new epoch, so no record is ever sealed under a key the file does not carry. */
static void test_sealed_key_after_failed_batch(void **state)
{
	struct fx *f = *state;
	char *key;
	struct audit_log *log = open_sealed(f, &key, NULL);
	struct audit_opener *o = NULL;
	struct opened op;

	audit_test_fail_next(log, AUDIT_FAULT_SYNC, EIO);
	expect_failed(log, NULL, false);
	assert_int_equal(audit_count(log), 0);
	assert_int_equal(append_ok(log, secret_rec("alice")), 1);
	audit_close(log);
	assert_int_equal(audit_opener_new(NULL, key, &o), 0);
	assert_int_equal(open_all(f->dir, o, &op), 0);
	assert_int_equal(json_array_size(op.recs), 2);
	json_decref(op.recs);
	audit_opener_free(o);
	free(key);
}

/* ---- Versions records (docs/AUDIT.md section 18) --------------------------------------------- */

static json_t *import_rec(uint64_t dsid, uint32_t ver, const char *result, char mchar,
			  const char *digest)
{
	char m[65];
	json_t *o;

	memset(m, mchar, 64);
	m[64] = '\0';
	o = json_pack("{s:s, s:s, s:I, s:I, s:s}", "event", "import", "dataset", "Pangolin-ds",
		      "dataset_id", (json_int_t)dsid, "version", (json_int_t)ver, "result", result);
	if (mchar)
		json_object_set_new(o, "manifest", json_string(m));
	if (digest)
		json_object_set_new(o, "versions_digest", json_string(digest));
	return o;
}

/* Every record after a versions record names it as "vseq", across a reopen; a caller cannot set
 * "vseq"; the replay keeps a committed version, drops one an "aborted" record withdraws, adds a
 * baseline's, and refuses a versions record without a manifest. The version hash is keyed. */
static void test_versions_chain_and_replay(void **state)
{
	struct fx *f = *state;
	char *key = NULL, *line = NULL;
	struct audit_log *log = open_sealed(f, &key, NULL);
	uint8_t m[32] = { 1 }, h1[32], h2[32], k2[AUDIT_SEAL_KEY_LEN] = { 9 };
	uint64_t seq = 0;
	json_t *state_j = NULL, *rec, *bad;
	size_t len = 0;

	assert_int_equal(audit_versions_head(log, &seq, &line, &len), -ENOENT);
	append_ok(log, ev("open", NULL, NULL, -1));
	append_ok(log, import_rec(5, 1, "committed", 'a', "00"));
	append_ok(log, ev("open", NULL, NULL, -1));
	append_ok(log, import_rec(5, 2, "committed", 'b', "11"));
	append_ok(log, import_rec(5, 2, "aborted", 0, NULL));   /* withdraws version 2 */
	rec = json_pack("{s:s, s:[{s:I, s:I, s:s, s:s}], s:s}", "event", "versions_baseline",
			"versions", "dataset_id", (json_int_t)6, "version", (json_int_t)1,
			"manifest", "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
			"dataset", "Kinkajou-ds", "versions_digest", "22");
	append_ok(log, rec);
	append_ok(log, ev("close", NULL, NULL, -1));
	assert_int_equal(audit_versions_head(log, &seq, &line, &len), 0);
	assert_int_equal(seq, 6);
	assert_non_null(strstr(line, "\"event\":\"versions_baseline\""));
	free(line);
	/* A record that brings its own vseq is refused. */
	bad = ev("open", NULL, NULL, -1);
	json_object_set_new(bad, "vseq", json_integer(1));
	assert_int_equal(audit_append(log, bad, NULL), -EINVAL);
	json_decref(bad);
	audit_close(log);

	/* Reopened: the last record names the baseline. */
	log = open_log(f->dir, NULL);
	assert_int_equal(audit_versions_head(log, &seq, &line, &len), 0);
	assert_int_equal(seq, 6);
	free(line);
	audit_close(log);

	assert_int_equal(audit_versions_replay(f->dir, seal_store_key, &state_j, NULL), 0);
	assert_non_null(json_object_get(json_object_get(json_object_get(state_j, "5"), "v"), "1"));
	assert_null(json_object_get(json_object_get(json_object_get(state_j, "5"), "v"), "2"));
	assert_non_null(json_object_get(json_object_get(json_object_get(state_j, "6"), "v"), "1"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(state_j, "6"),
							      "name")), "Kinkajou-ds");
	json_decref(state_j);

	/* The names and manifests were sealed: without the store key the replay cannot open. */
	assert_int_equal(audit_versions_replay(f->dir, k2, &state_j, NULL), -ENOKEY);

	/* A committed import without a manifest is malformed. */
	free(key);
	log = open_sealed(f, &key, NULL);
	append_ok(log, import_rec(7, 1, "committed", 0, "33"));
	audit_close(log);
	assert_int_equal(audit_versions_replay(f->dir, seal_store_key, &state_j, NULL), -EBADMSG);

	audit_version_hash(seal_store_key, 5, 1, m, h1);
	audit_version_hash(k2, 5, 1, m, h2);
	assert_memory_not_equal(h1, h2, 32);
	audit_version_hash(seal_store_key, 5, 2, m, h2);
	assert_memory_not_equal(h1, h2, 32);
	free(key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_canonical, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_open_creates, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_seq_reopen, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_damaged, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_append_refused, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_append_max, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_group_commit_one_batch, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_fail_then_recover, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_fail_batch_no_truncate, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_durability_power_loss, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_durability_syncer, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_durability_sync_failure, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_durability_kill9, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_and_prove, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_checkpointer, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_torn_by_full_disk, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_open_detects_removal_and_change, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_open_detects_edit_under_state, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_audit_string, fx_setup, fx_teardown),
		cmocka_unit_test(test_time_parse),
		cmocka_unit_test_setup_teardown(test_foreach_filters, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_foreach_partial_tail, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_busy, fx_setup, fx_teardown),
		cmocka_unit_test(test_matcher_families_and_links),
		cmocka_unit_test_setup_teardown(test_sealed_unreadable_without_key, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_sealed_wrong_auditor_key, fx_setup, fx_teardown),
		cmocka_unit_test(test_auditor_public_canonical),
		cmocka_unit_test_setup_teardown(test_sealed_forgery_detected, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_sealed_noncanonical_refused, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_sealed_key_after_failed_batch, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_versions_chain_and_replay, fx_setup,
						fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
