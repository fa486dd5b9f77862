/* audit text: strings from outside made safe for a record, and the record time format. */
#include <errno.h>

#include "audit/audit_internal.h"
#include "common/common.h"

/* ---- audit_string ---------------------------------------------------------------------------- */

static bool in_range(uint8_t c, uint8_t lo, uint8_t hi)
{
	return c >= lo && c <= hi;
}

static bool is_cont(uint8_t c)
{
	return in_range(c, 0x80, 0xBF);
}

/* Length (1-4) of the well-formed UTF-8 sequence at s, or 0 when the bytes there are not one
 * (RFC 3629: no overlong form, no UTF-16 surrogate, nothing above U+10FFFF). s is NUL-terminated;
 * the NUL is not a continuation byte, so no check reads past it. */
static size_t utf8_seq_len(const uint8_t *s)
{
	uint8_t c = s[0], lo = 0x80, hi = 0xBF;

	if (c < 0x80)
		return 1;
	if (c < 0xC2)		/* a continuation byte, or C0/C1: an overlong two-byte form */
		return 0;
	if (c < 0xE0)
		return is_cont(s[1]) ? 2 : 0;
	if (c < 0xF0) {
		if (c == 0xE0)
			lo = 0xA0;	/* E0 80..9F would be overlong */
		if (c == 0xED)
			hi = 0x9F;	/* ED A0..BF are the surrogates D800..DFFF */
		return in_range(s[1], lo, hi) && is_cont(s[2]) ? 3 : 0;
	}
	if (c < 0xF5) {
		if (c == 0xF0)
			lo = 0x90;	/* F0 80..8F would be overlong */
		if (c == 0xF4)
			hi = 0x8F;	/* F4 90.. is above U+10FFFF */
		return in_range(s[1], lo, hi) && is_cont(s[2]) && is_cont(s[3]) ? 4 : 0;
	}
	return 0;
}

/* A byte that starts no well-formed sequence becomes the four characters \xNN (lowercase hex) and
 * the scan goes on at the next byte, so every byte of an invalid sequence is escaped and a valid
 * sequence right after it passes unchanged. */
json_t *audit_string(const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = (const uint8_t *)s;
	size_t n, i, o = 0;
	bool valid = true;
	json_t *j;
	char *out;

	if (!s)
		return json_null();
	n = strlen(s);
	for (i = 0; i < n;) {
		size_t k = utf8_seq_len(p + i);

		if (k == 0) {
			valid = false;
			break;
		}
		i += k;
	}
	if (valid)
		return json_stringn(s, n);

	/* At most four output bytes per input byte; n is a C string's length, so 4n fits. */
	out = malloc(4 * n + 1);
	if (!out)
		return NULL;
	for (i = 0; i < n;) {
		size_t k = utf8_seq_len(p + i);

		if (k == 0) {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[p[i] >> 4];
			out[o++] = hex[p[i] & 15];
			i++;
			continue;
		}
		memcpy(out + o, p + i, k);
		o += k;
		i += k;
	}
	j = json_stringn(out, o);
	free(out);
	return j;
}

/* ---- Time ---------------------------------------------------------------------------------- */

/* n decimal digits at s, all of them digits. */
static bool digits(const char *s, size_t n, uint32_t *ret)
{
	uint32_t v = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	*ret = v;
	return true;
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Division rounding toward minus infinity (C's rounds toward zero). */
static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	if (a % b != 0 && (a < 0) != (b < 0))
		q--;
	return q;
}

/* Days from 0000-01-01 to y-01-01 in the proleptic Gregorian calendar: 365 a year plus one for
 * each leap year before y (year 0 is one: divisible by 400). */
static int64_t days_before_year(int64_t y)
{
	int64_t p = y - 1;

	return 365 * y + floor_div(p, 4) - floor_div(p, 100) + floor_div(p, 400) + 1;
}

int audit_time_parse_ns(const char *s, size_t n, int64_t *ret_ns)
{
	/* Days before the first of each month in a common year. */
	static const uint16_t month_start[12] = { 0,   31,  59,  90,  120, 151,
						  181, 212, 243, 273, 304, 334 };
	static const uint8_t month_days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	uint32_t y, mo, d, h, mi, sec, frac, mdays;
	int64_t days, secs, ns, sub;

	/* "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ" */
	if (n != AUDIT_TIME_LEN || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
	    s[16] != ':' || s[19] != '.' || s[29] != 'Z')
		return -EINVAL;
	if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) ||
	    !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &sec) ||
	    !digits(s + 20, 9, &frac))
		return -EINVAL;
	if (mo < 1 || mo > 12)
		return -EINVAL;
	mdays = month_days[mo - 1] + (mo == 2 && is_leap(y));
	if (d < 1 || d > mdays || h > 23 || mi > 59 || sec > 59)
		return -EINVAL;

	days = days_before_year(y) - days_before_year(1970) + month_start[mo - 1] +
	       (mo > 2 && is_leap(y)) + (d - 1);
	/* |days| < 4e6 for years 0..9999, so secs cannot overflow; ns can. */
	secs = days * 86400 + h * 3600 + mi * 60 + sec;
	sub = frac;
	/* Before the epoch, secs * 1e9 alone can be out of range while the sum is not (the last
	 * second that int64 reaches, 1677-09-21T00:12:43): borrow a second from the fraction. */
	if (secs < 0 && sub > 0) {
		secs++;
		sub -= 1000000000;
	}
	if (__builtin_mul_overflow(secs, (int64_t)1000000000, &ns) ||
	    __builtin_add_overflow(ns, sub, &ns))
		return -ERANGE;
	*ret_ns = ns;
	return 0;
}
