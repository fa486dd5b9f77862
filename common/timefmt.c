/* timefmt: RFC 3339 times read and written by hand, always UTC.
 *
 * Nothing here looks at the locale or TZ (no strptime, mktime, timegm, strftime): a time in a
 * grant must mean the same instant on every host that reads it. Dates are in the proleptic
 * Gregorian calendar and are converted with the "days from civil" method: count years from 1 March
 * so that the leap day falls at the end of a year, then split time into 400-year eras of exactly
 * 146097 days.
 */
#include "common/timefmt.h"

#include <inttypes.h>
#include <stdio.h>

#include "common/common.h"
#include "common/err.h"

#define SECS_PER_DAY 86400
#define DAYS_PER_ERA 146097               /* days in 400 Gregorian years */
#define DAYS_0000_03_01_TO_EPOCH 719468   /* from 0000-03-01 to 1970-01-01 */
#define FRAC_DIGITS_MAX 9                 /* nanoseconds; more precision is refused, not dropped */

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
	static const unsigned char days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* Days since 1970-01-01 of y-m-d (m 1-12, d valid for the month). Any y whose days fit int64. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	/* The year starts on 1 March: January and February belong to the year before. */
	int64_t yy = m <= 2 ? y - 1 : y;
	int64_t era = (yy >= 0 ? yy : yy - 399) / 400;          /* floor(yy / 400) */
	unsigned yoe = (unsigned)(yy - era * 400);              /* year of era, 0-399 */
	unsigned mar = m > 2 ? m - 3 : m + 9;                   /* month from March, 0-11 */
	/* Day of the March-based year: month lengths 31 30 31 30 31 | 31 30 31 30 31 | 31 28/29
	 * repeat every five months, which (153 * mar + 2) / 5 counts exactly. */
	unsigned doy = (153 * mar + 2) / 5 + d - 1;             /* 0-365 */
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;   /* day of era, 0-146096 */

	return era * DAYS_PER_ERA + (int64_t)doe - DAYS_0000_03_01_TO_EPOCH;
}

/* The inverse of days_from_civil(), for every int64 day count that a time in seconds yields
 * (|days| < 2^47, far from overflow in the arithmetic below). */
static void civil_from_days(int64_t days, int64_t *ret_y, unsigned *ret_m, unsigned *ret_d)
{
	int64_t z = days + DAYS_0000_03_01_TO_EPOCH;
	int64_t era = (z >= 0 ? z : z - (DAYS_PER_ERA - 1)) / DAYS_PER_ERA;
	unsigned doe = (unsigned)(z - era * DAYS_PER_ERA);
	/* Years of era: remove the leap days before doe (one per 4 years, none per 100, one per 400,
	 * and the era's last day) so that 365 divides evenly. */
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / (DAYS_PER_ERA - 1)) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mar = (5 * doy + 2) / 153;
	unsigned m = mar < 10 ? mar + 3 : mar - 9;

	*ret_d = doy - (153 * mar + 2) / 5 + 1;
	*ret_m = m;
	*ret_y = (int64_t)yoe + era * 400 + (m <= 2);
}

/* Exactly n decimal digits at s into *ret_v. Stops at the first non-digit, so a NUL before the
 * n-th character is never read past. */
static bool take_digits(const char *s, unsigned n, unsigned *ret_v)
{
	unsigned v = 0;

	for (unsigned i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*ret_v = v;
	return true;
}

/* "YYYY-MM-DD" at the start of s, into days since the epoch. */
static int parse_date(const char *s, int64_t *ret_days)
{
	unsigned y, m, d;

	if (!take_digits(s, 4, &y) || s[4] != '-' || !take_digits(s + 5, 2, &m) || s[7] != '-' ||
	    !take_digits(s + 8, 2, &d))
		return err_set(-EINVAL, "time: expected a date as YYYY-MM-DD");
	if (m < 1 || m > 12)
		return err_set(-EINVAL, "time: month %02u is not 01 to 12", m);
	if (d < 1 || d > days_in_month(y, m))
		return err_set(-EINVAL, "time: %04u-%02u has no day %02u", y, m, d);
	*ret_days = days_from_civil(y, m, d);
	return 0;
}

/* The RFC 3339 date-time grammar (section 5.6), or a bare date when date_only_ok. */
static int parse_absolute(const char *s, bool date_only_ok, int64_t *ret_unix_s)
{
	unsigned hh, mm, ss, off_h = 0, off_m = 0, nfrac = 0;
	int64_t days = 0, t;
	const char *p;
	int off_sign = 0;
	int r;

	r = parse_date(s, &days);
	if (r < 0)
		return r;
	if (s[10] == '\0') {
		if (!date_only_ok)
			return err_set(-EINVAL, "time: a date alone is not accepted here; "
						"give a date and time such as 2026-11-21T09:00:00Z");
		*ret_unix_s = days * SECS_PER_DAY;
		return 0;
	}
	if (s[10] != 'T' && s[10] != 't')
		return err_set(-EINVAL, "time: expected 'T' between the date and the time of day");
	if (!take_digits(s + 11, 2, &hh) || s[13] != ':' || !take_digits(s + 14, 2, &mm) ||
	    s[16] != ':' || !take_digits(s + 17, 2, &ss))
		return err_set(-EINVAL, "time: expected a time of day as hh:mm:ss");
	if (hh > 23)
		return err_set(-EINVAL, "time: hour %02u is not 00 to 23", hh);
	if (mm > 59)
		return err_set(-EINVAL, "time: minute %02u is not 00 to 59", mm);
	if (ss == 60)
		return err_set(-EINVAL, "time: leap second (:60) cannot be represented");
	if (ss > 59)
		return err_set(-EINVAL, "time: second %02u is not 00 to 59", ss);

	p = s + 19;
	if (*p == '.') {
		p++;
		while (p[nfrac] >= '0' && p[nfrac] <= '9')
			if (++nfrac > FRAC_DIGITS_MAX)
				return err_set(-EINVAL, "time: fraction of a second longer than %d digits",
					       FRAC_DIGITS_MAX);
		if (nfrac == 0)
			return err_set(-EINVAL, "time: expected digits after '.'");
		p += nfrac;
	}

	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		off_sign = *p == '+' ? 1 : -1;
		if (!take_digits(p + 1, 2, &off_h) || p[3] != ':' || !take_digits(p + 4, 2, &off_m))
			return err_set(-EINVAL, "time: expected a UTC offset as +hh:mm or -hh:mm");
		if (off_h > 23 || off_m > 59)
			return err_set(-EINVAL, "time: UTC offset %c%02u:%02u out of range",
				       *p, off_h, off_m);
		p += 6;
	} else {
		return err_set(-EINVAL, "time: expected 'Z' or a UTC offset (+hh:mm / -hh:mm) "
					"after the time of day");
	}
	if (*p != '\0')
		return err_set(-EINVAL, "time: unexpected characters after the time");

	/* Local time = UTC + offset. Four-digit years keep all of this far inside int64. */
	t = days * SECS_PER_DAY + hh * 3600 + mm * 60 + ss;
	t -= off_sign * (int64_t)(off_h * 3600 + off_m * 60);
	*ret_unix_s = t;
	return 0;
}

/* "N<unit>" (after the '+'), added to now. */
static int parse_relative(const char *s, int64_t now, int64_t *ret_unix_s)
{
	uint64_t n = 0;
	int64_t unit, delta, t;
	size_t i;

	for (i = 0; s[i] >= '0' && s[i] <= '9'; i++)
		if (__builtin_mul_overflow(n, 10, &n) ||
		    __builtin_add_overflow(n, (uint64_t)(s[i] - '0'), &n))
			return err_set(-ERANGE, "time: relative time too large");
	if (i == 0)
		return err_set(-EINVAL, "time: expected a number after '+' (as in +90d)");
	switch (s[i]) {
	case 's': unit = 1; break;
	case 'm': unit = 60; break;
	case 'h': unit = 3600; break;
	case 'd': unit = SECS_PER_DAY; break;
	case 'w': unit = 7 * SECS_PER_DAY; break;
	default:
		return err_set(-EINVAL, "time: expected a unit s, m, h, d or w after the number");
	}
	if (s[i + 1] != '\0')
		return err_set(-EINVAL, "time: unexpected characters after the unit");
	if (n > INT64_MAX || __builtin_mul_overflow((int64_t)n, unit, &delta) ||
	    __builtin_add_overflow(now, delta, &t))
		return err_set(-ERANGE, "time: relative time too large");
	*ret_unix_s = t;
	return 0;
}

int time_parse(const char *s, int64_t now, int64_t *ret_unix_s)
{
	if (!s || !*s)
		return err_set(-EINVAL, "time: empty");
	if (strcmp(s, "now") == 0) {
		*ret_unix_s = now;
		return 0;
	}
	if (s[0] == '+')
		return parse_relative(s + 1, now, ret_unix_s);
	return parse_absolute(s, true, ret_unix_s);
}

int time_parse_rfc3339(const char *s, int64_t *ret_unix_s)
{
	if (!s || !*s)
		return err_set(-EINVAL, "time: empty");
	if (s[0] == '+' || strcmp(s, "now") == 0)
		return err_set(-EINVAL, "time: a relative time or \"now\" is not accepted here; "
					"give a date and time such as 2026-11-21T09:00:00Z");
	return parse_absolute(s, false, ret_unix_s);
}

/* Split unix_s into days and a second of the day in [0, 86399], rounding toward minus infinity
 * (C division truncates toward zero). No overflow: |days| is far below INT64_MAX. */
static void split_days(int64_t unix_s, int64_t *ret_days, unsigned *ret_sod)
{
	int64_t days = unix_s / SECS_PER_DAY, sod = unix_s % SECS_PER_DAY;

	if (sod < 0) {
		sod += SECS_PER_DAY;
		days--;
	}
	*ret_days = days;
	*ret_sod = (unsigned)sod;
}

/* Write unix_s, then (if frac_ns >= 0) nine fraction digits, then 'Z'. */
static void format_time(int64_t unix_s, long frac_ns, char out[static TIME_TEXT_MAX])
{
	char frac[11] = "";
	int64_t days, y;
	unsigned sod, m, d;

	split_days(unix_s, &days, &sod);
	civil_from_days(days, &y, &m, &d);
	if (frac_ns >= 0)
		snprintf(frac, sizeof(frac), ".%09ld", frac_ns % 1000000000L);
	/* 0000-9999: RFC 3339. Outside: ISO 8601 expanded years, sign always written ("%+05")
	 * so that "-0001" and "+10000" cannot be mistaken for four-digit years. */
	snprintf(out, TIME_TEXT_MAX,
		 y >= 0 && y <= 9999 ? "%04" PRId64 "-%02u-%02uT%02u:%02u:%02u%sZ"
				     : "%+05" PRId64 "-%02u-%02uT%02u:%02u:%02u%sZ",
		 y, m, d, sod / 3600, sod / 60 % 60, sod % 60, frac);
}

void time_format(int64_t unix_s, char out[static TIME_TEXT_MAX])
{
	format_time(unix_s, -1, out);
}

void time_format_ns(int64_t unix_ns, char out[static TIME_TEXT_MAX])
{
	int64_t s = unix_ns / 1000000000, ns = unix_ns % 1000000000;

	if (ns < 0) {
		ns += 1000000000;
		s--;
	}
	format_time(s, (long)ns, out);
}
