/* output: JSON, sizes, durations, aligned tables, and text made safe for a terminal. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/enclavectl.h"
#include "common/common.h"

int out_json(const json_t *j)
{
	if (json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0 ||
	    fputc('\n', stdout) == EOF)
		return -EIO;
	return 0;
}

int out_json_line(const json_t *j)
{
	if (json_dumpf(j, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER) < 0 ||
	    fputc('\n', stdout) == EOF)
		return -EIO;
	return 0;
}

void out_size(uint64_t bytes, char out[static 16])
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double v = (double)bytes;
	size_t u = 0;

	if (bytes < 1024) {
		snprintf(out, 16, "%" PRIu64 " B", bytes);
		return;
	}
	v /= 1024;
	while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
		v /= 1024;
		u++;
	}
	snprintf(out, 16, "%.1f %s", v, units[u]);
}

void out_duration(double seconds, char out[static 24])
{
	uint64_t s, h;

	if (!(seconds >= 0) || seconds > 1e9) {
		snprintf(out, 24, "--:--");
		return;
	}
	s = (uint64_t)(seconds + 0.5);
	h = s / 3600;
	if (h)
		snprintf(out, 24, "%" PRIu64 ":%02u:%02u", h, (unsigned)(s / 60 % 60),
			 (unsigned)(s % 60));
	else
		snprintf(out, 24, "%02u:%02u", (unsigned)(s / 60), (unsigned)(s % 60));
}

/* Length of the valid UTF-8 sequence at p (at most left bytes), or 0 if it is not one:
 * no overlong forms, no surrogates, nothing above U+10FFFF. *ret_cp is its code point. */
static size_t utf8_char(const unsigned char *p, size_t left, uint32_t *ret_cp)
{
	uint32_t cp, min;
	size_t len;

	if (left == 0)
		return 0;
	if (p[0] < 0x80) {
		*ret_cp = p[0];
		return 1;
	} else if ((p[0] & 0xe0) == 0xc0) {
		len = 2, cp = p[0] & 0x1f, min = 0x80;
	} else if ((p[0] & 0xf0) == 0xe0) {
		len = 3, cp = p[0] & 0x0f, min = 0x800;
	} else if ((p[0] & 0xf8) == 0xf0) {
		len = 4, cp = p[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (left < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*ret_cp = cp;
	return len;
}

bool out_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	uint32_t cp;

	for (size_t i = 0; i < n;) {
		size_t k = utf8_char(p + i, n - i, &cp);

		if (k == 0 || cp == 0)
			return false;
		i += k;
	}
	return true;
}

/* Code points that change how a line is shown without being seen: bidirectional marks,
 * embeddings, overrides and isolates (which make a line display in another order than it is
 * stored: "report<U+202E>fdp.exe" shows as "reportexe.pdf"), and invisible format characters
 * (soft hyphen, zero-width spaces and joiners, line and paragraph separators, word joiner,
 * byte order mark, interlinear annotations). C0 and C1 controls and DEL are checked apart. */
static bool invisible(uint32_t cp)
{
	return cp == 0x00ad || cp == 0x061c || cp == 0x180e || (cp >= 0x200b && cp <= 0x200f) ||
	       (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x206f) ||
	       cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb);
}

char *out_text(const char *s, size_t max_chars, char *out, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len = strlen(s), o = 0, chars = 0;

	for (size_t i = 0; i < len;) {
		uint32_t cp = 0;
		size_t k = utf8_char(p + i, len - i, &cp);
		char esc[16];
		size_t elen = 0;

		/* Shown as an escape: a byte that is not UTF-8 as \xHH, a control character or an
		 * invisible one as \uHHHH, and the backslash itself doubled, so that what is on the
		 * screen reads back as exactly one string. */
		if (k == 0)
			elen = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", p[i]);
		else if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0) || invisible(cp))
			elen = (size_t)snprintf(esc, sizeof(esc), "\\u%04X", (unsigned)cp);
		else if (cp == '\\')
			elen = (size_t)snprintf(esc, sizeof(esc), "\\\\");
		if (k == 0)
			k = 1;
		/* Every step leaves room for "..." and the NUL, so the cut always fits. */
		if ((max_chars && chars == max_chars) || o + (elen ? elen : k) + 4 > n) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		if (elen) {
			memcpy(out + o, esc, elen);
			o += elen;
		} else {
			memcpy(out + o, p + i, k);
			o += k;
		}
		chars++;
		i += k;
	}
	out[o] = '\0';
	return out;
}

const char *out_member(const json_t *obj, const char *key, char scratch[static 24])
{
	const json_t *v = json_object_get(obj, key);

	if (!v || json_is_null(v))
		return "";
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		snprintf(scratch, 24, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return scratch;
	}
	if (json_is_boolean(v))
		return json_is_true(v) ? "true" : "false";
	return "?";
}

bool out_member_u64(const json_t *obj, const char *key, uint64_t *ret)
{
	const json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*ret = (uint64_t)json_integer_value(v);
	return true;
}

/* ---- Tables -------------------------------------------------------------------------------- */

void table_init(struct table *t, size_t ncols, const char *const *head)
{
	*t = (struct table){ .ncols = ncols, .head = head };
}

int table_add(struct table *t, const char *const *cells, const size_t *max_chars)
{
	char buf[1024];

	if (t->nrows == TABLE_ROWS_MAX)
		return -E2BIG;
	if (t->nrows == t->cap) {
		size_t nc = t->cap ? t->cap * 2 : 16;
		char **c = reallocarray(t->cells, nc * t->ncols, sizeof(*c));

		if (!c)
			return -ENOMEM;
		t->cells = c;
		t->cap = nc;
	}
	for (size_t i = 0; i < t->ncols; i++) {
		char **dst = &t->cells[t->nrows * t->ncols + i];

		out_text(cells[i] ? cells[i] : "", max_chars ? max_chars[i] : 0, buf, sizeof(buf));
		*dst = strdup(buf);
		if (!*dst) {
			for (size_t j = 0; j < i; j++)
				free(t->cells[t->nrows * t->ncols + j]);
			return -ENOMEM;
		}
	}
	t->nrows++;
	return 0;
}

/* Characters on screen: UTF-8 lead bytes (out_text has made every cell valid UTF-8). */
static size_t width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

static void print_cell(const char *s, size_t w, bool last)
{
	fputs(s, stdout);
	if (last)
		return;
	for (size_t k = width(s); k < w + 2; k++)
		fputc(' ', stdout);
}

int table_print(const struct table *t)
{
	_cleanup_free_ size_t *w = calloc(t->ncols ? t->ncols : 1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	for (size_t c = 0; c < t->ncols; c++) {
		w[c] = width(t->head[c]);
		for (size_t r = 0; r < t->nrows; r++)
			w[c] = MAX(w[c], width(t->cells[r * t->ncols + c]));
	}
	for (size_t c = 0; c < t->ncols; c++)
		print_cell(t->head[c], w[c], c + 1 == t->ncols);
	fputc('\n', stdout);
	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++)
			print_cell(t->cells[r * t->ncols + c], w[c], c + 1 == t->ncols);
		fputc('\n', stdout);
	}
	return ferror(stdout) ? -EIO : 0;
}

void table_free(struct table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->nrows = t->cap = 0;
}
