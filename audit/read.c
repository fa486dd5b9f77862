/* audit read: split a log into lines, check each one, and audit_foreach() with its filter. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit/audit_internal.h"
#include "common/err.h"

/* ---- Lines --------------------------------------------------------------------------------- */

int audit_reader_init(struct audit_reader *rd, int fd, const char *path, uint64_t limit)
{
	uint8_t *blk = malloc(AUDIT_READ_BLOCK);

	if (!blk)
		return -ENOMEM;
	*rd = (struct audit_reader){ .fd = fd, .path = path, .limit = limit, .blk = blk };
	/* One byte more than the longest line without its '\n', for the NUL. */
	buf_init(&rd->line, AUDIT_RECORD_MAX);
	return 0;
}

void audit_reader_free(struct audit_reader *rd)
{
	free(rd->blk);
	rd->blk = NULL;
	buf_free(&rd->line);
}

/* Refill the block; 0 at the limit or the end of the file. */
static ssize_t reader_fill(struct audit_reader *rd)
{
	ssize_t n;

	if (rd->off >= rd->limit)
		return 0;
	n = pread_full(rd->fd, rd->blk,
		       (size_t)MIN((uint64_t)AUDIT_READ_BLOCK, rd->limit - rd->off), rd->off);
	if (n < 0)
		return err_set((int)n, "%s: cannot read at offset %llu: %s", rd->path,
			       (unsigned long long)rd->off, strerror((int)-n));
	rd->off += (uint64_t)n;
	rd->blk_len = (size_t)n;
	rd->blk_pos = 0;
	return n;
}

int audit_reader_next(struct audit_reader *rd)
{
	int r;

	buf_reset(&rd->line);
	rd->line_off = rd->off - rd->blk_len + rd->blk_pos;
	rd->line_no++;
	for (;;) {
		const uint8_t *start, *nl;
		size_t take;

		if (rd->blk_pos == rd->blk_len) {
			ssize_t n = reader_fill(rd);

			if (n < 0)
				return (int)n;
			if (n == 0)
				break;
		}
		start = rd->blk + rd->blk_pos;
		nl = memchr(start, '\n', rd->blk_len - rd->blk_pos);
		take = nl ? (size_t)(nl - start) : rd->blk_len - rd->blk_pos;
		if (take > AUDIT_RECORD_MAX - 1 - rd->line.len)
			return err_set(-EBADMSG,
				       "%s: line %llu (offset %llu) is longer than %u bytes",
				       rd->path, (unsigned long long)rd->line_no,
				       (unsigned long long)rd->line_off, AUDIT_RECORD_MAX);
		/* Cannot fail: the line stays below its cap, checked just above. */
		r = buf_append(&rd->line, start, take);
		if (r < 0)
			return r;
		rd->blk_pos += take;
		if (nl) {
			rd->blk_pos++;
			r = buf_u8(&rd->line, 0);
			if (r < 0)
				return r;
			rd->line.len--;
			return 1;
		}
	}
	/* The end: whatever is in line has no '\n'. NUL-terminate it too. */
	r = buf_u8(&rd->line, 0);
	if (r < 0)
		return r;
	rd->line.len--;
	return 0;
}

/* ---- One line ------------------------------------------------------------------------------ */

int audit_line_check(const char *path, uint64_t line_no, uint64_t off, const char *line,
		     size_t len, uint64_t want_seq, json_t **ret_rec, int64_t *ret_time_ns)
{
	unsigned long long ln = line_no, lo = off;
	const json_t *seq, *tm;
	json_error_t jerr;
	json_t *rec;
	int64_t t;
	int r;

	/* A canonical line is ASCII (JSON_ENSURE_ASCII) with every control character escaped. DEL
	 * (0x7f) is the one byte above 0x1f that jansson writes as it is. */
	for (size_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)line[i];

		if (c < 0x20 || c > 0x7f)
			return err_set(-EBADMSG, "%s: line %llu (offset %llu): byte 0x%02x at "
				       "column %zu is not printable ASCII", path, ln, lo, c, i + 1);
	}
	rec = json_loadb(line, len, AUDIT_JSON_LOAD_FLAGS, &jerr);
	if (!rec)
		return err_set(-EBADMSG, "%s: line %llu (offset %llu): not JSON: %s", path, ln, lo,
			       jerr.text);
	if (!json_is_object(rec)) {
		r = err_set(-EBADMSG, "%s: line %llu (offset %llu): not a JSON object", path, ln,
			    lo);
		goto out_put;
	}
	seq = json_object_get(rec, "seq");
	if (!json_is_integer(seq)) {
		r = err_set(-EBADMSG, "%s: line %llu (offset %llu): no integer \"seq\"", path, ln,
			    lo);
		goto out_put;
	}
	if (json_integer_value(seq) < 0 || (uint64_t)json_integer_value(seq) != want_seq) {
		r = err_set(-EBADMSG, "%s: line %llu (offset %llu): seq %lld where %llu belongs",
			    path, ln, lo, (long long)json_integer_value(seq),
			    (unsigned long long)want_seq);
		goto out_put;
	}
	tm = json_object_get(rec, "time");
	if (!json_is_string(tm)) {
		r = err_set(-EBADMSG, "%s: line %llu (offset %llu): no \"time\" string", path, ln,
			    lo);
		goto out_put;
	}
	if (audit_time_parse_ns(json_string_value(tm), json_string_length(tm), &t) < 0) {
		r = err_set(-EBADMSG, "%s: line %llu (offset %llu): \"time\" \"%.40s\" is not "
			    "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ", path, ln, lo, json_string_value(tm));
		goto out_put;
	}
	*ret_rec = rec;
	*ret_time_ns = t;
	return 0;

out_put:
	json_decref(rec);
	return r;
}

/* ---- audit_foreach ------------------------------------------------------------------------- */

/* The file is read up to the size it had when the call began: records a writer adds meanwhile
 * are not waited for, and a line it was still writing at that moment counts as incomplete. */
/* Open path read-only as a regular file, its attributes in *st: the descriptor, or -1 with *ret_r
 * set (err_detail() naming the file). */
static int open_log(const char *path, struct stat *st, int *ret_r)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0) {
		*ret_r = err_set(-errno, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		*ret_r = err_set(-EINVAL, "%s is not a regular file", path);
		close(fd);
		return -1;
	}
	return fd;
}

int audit_foreach(const char *dir, const struct audit_filter *filter,
		  int (*fn)(void *ctx, const json_t *rec, const char *line, size_t len), void *ctx)
{
	struct audit_matcher *m = NULL;
	struct audit_reader rd;
	struct stat st;
	char *path = NULL;
	uint64_t seq = 0;
	int fd, r;

	if (asprintf(&path, "%s/%s", dir, AUDIT_LOG_NAME) < 0)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = err_set(-errno, "cannot open %s: %s", path, strerror(errno));
		goto out_free;
	}
	if (fstat(fd, &st) < 0) {
		r = err_set(-errno, "cannot stat %s: %s", path, strerror(errno));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		r = err_set(-EINVAL, "%s is not a regular file", path);
		goto out_close;
	}
	r = audit_matcher_new(filter, &m);
	if (r < 0)
		goto out_close;
	r = audit_reader_init(&rd, fd, path, (uint64_t)st.st_size);
	if (r < 0)
		goto out_close;
	for (;;) {
		json_t *rec = NULL;
		int64_t t;

		r = audit_reader_next(&rd);
		if (r <= 0)
			break;	/* 0: the end; a final line without '\n' is not passed on */
		r = audit_line_check(path, rd.line_no, rd.line_off, (const char *)rd.line.data,
				     rd.line.len, seq, &rec, &t);
		if (r < 0)
			break;
		seq++;
		if (filter && filter->open) {
			json_t *opened = NULL;

			r = audit_opener_open(filter->open, rec, &opened);
			if (r < 0) {
				json_decref(rec);
				r = err_set(r, "%s: line %llu: %s", path,
					    (unsigned long long)rd.line_no, err_detail());
				break;
			}
			r = audit_matcher_test(m, opened, t);
			if (r >= 0 && filter->keys && json_is_string(json_object_get(opened, "event")) &&
			    strcmp(json_string_value(json_object_get(opened, "event")), "log_key") == 0)
				r = 1;
			if (r > 0)
				r = fn(ctx, filter->pass_sealed ? rec : opened,
				       (const char *)rd.line.data, rd.line.len);
			json_decref(opened);
		} else {
			r = audit_matcher_test(m, rec, t);
			if (r > 0)
				r = fn(ctx, rec, (const char *)rd.line.data, rd.line.len);
		}
		json_decref(rec);
		if (r != 0)
			break;
	}
	audit_reader_free(&rd);
out_close:
	audit_matcher_free(m);
	close(fd);
out_free:
	free(path);
	return r;
}

/* ---- audit_cursor: one record at a time, for merging logs ---------------------------------- */

struct audit_cursor {
	struct audit_reader rd;
	int fd;
	char *path;
	uint64_t seq;                  /* records read */
	struct audit_opener *open;     /* borrowed; NULL: records as written */
};

int audit_cursor_open(const char *dir, struct audit_opener *open, struct audit_cursor **ret)
{
	struct audit_cursor *c = calloc(1, sizeof(*c));
	struct stat st;
	int r;

	if (!c)
		return -ENOMEM;
	c->fd = -1;
	c->open = open;
	if (asprintf(&c->path, "%s/%s", dir, AUDIT_LOG_NAME) < 0) {
		free(c);
		return -ENOMEM;
	}
	c->fd = open_log(c->path, &st, &r);
	if (c->fd < 0)
		goto fail;
	r = audit_reader_init(&c->rd, c->fd, c->path, (uint64_t)st.st_size);
	if (r < 0)
		goto fail;
	*ret = c;
	return 0;
fail:
	if (c->fd >= 0)
		close(c->fd);
	free(c->path);
	free(c);
	return r;
}

int audit_cursor_next(struct audit_cursor *c, json_t **ret_rec, json_t **ret_opened,
		      int64_t *ret_t, size_t *ret_len)
{
	json_t *rec = NULL, *opened = NULL;
	int64_t t = 0;
	int r = audit_reader_next(&c->rd);

	if (r <= 0)
		return r;   /* 0: the end; a final line without '\n' is not passed on */
	r = audit_line_check(c->path, c->rd.line_no, c->rd.line_off, (const char *)c->rd.line.data,
			     c->rd.line.len, c->seq, &rec, &t);
	if (r < 0)
		return r;
	c->seq++;
	if (c->open) {
		r = audit_opener_open(c->open, rec, &opened);
		if (r < 0) {
			json_decref(rec);
			return err_set(r, "%s: line %llu: %s", c->path,
				       (unsigned long long)c->rd.line_no, err_detail());
		}
	} else {
		opened = json_incref(rec);
	}
	*ret_rec = rec;
	*ret_opened = opened;
	*ret_t = t;
	*ret_len = c->rd.line.len;
	return 1;
}

uint64_t audit_cursor_records(const struct audit_cursor *c)
{
	return c->seq;
}

void audit_cursor_free(struct audit_cursor *c)
{
	if (!c)
		return;
	audit_reader_free(&c->rd);
	if (c->fd >= 0)
		close(c->fd);
	free(c->path);
	free(c);
}
