/* timefmt: times as people and records write them, always UTC. */
#pragma once

#include <stdint.h>

/* Longest text time_format*() writes, with its NUL: "2026-11-21T09:00:00.123456789Z". */
#define TIME_TEXT_MAX 40

/* Parse a point in time into unix seconds. Accepted:
 *   RFC 3339: "2026-12-31T23:59:59Z", with an optional fraction (dropped) and "Z" or "+hh:mm" /
 *             "-hh:mm";
 *   a date:   "2026-12-31" (00:00:00 UTC that day);
 *   relative: "+N" followed by one unit s, m, h, d or w ("+90d"), from `now`;
 *   "now".
 * Fields are range-checked (month 1-12, day within the month, leap years, hour 0-23, ...).
 * -EINVAL anything else (err_detail() says what), -ERANGE out of int64 range. */
int time_parse(const char *s, int64_t now, int64_t *ret_unix_s);
/* Only the RFC 3339 date-time form above: what records (grants, revocations) hold, where a
 * relative time or a bare date would depend on when or where the record is read. Years are the
 * four digits RFC 3339 allows; "T"/"Z" may be lowercase (RFC 3339 section 5.6); a leap second
 * ("23:59:60") is refused, since unix time cannot hold it; the fraction has 1 to 9 digits.
 * -EINVAL anything else. */
int time_parse_rfc3339(const char *s, int64_t *ret_unix_s);

/* The instants time_format() writes as RFC 3339, which time_parse_rfc3339() reads back:
 * 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z. */
#define TIME_RFC3339_MIN (-62167219200LL)
#define TIME_RFC3339_MAX 253402300799LL

/* "2026-11-21T09:00:00Z". Every int64 value is written, in the proleptic Gregorian calendar:
 * from TIME_RFC3339_MIN to TIME_RFC3339_MAX as RFC 3339; outside that, with the year in ISO 8601
 * expanded form ("-0001-12-31T23:00:00Z", "+10000-01-01T00:00:00Z"), which is still readable and
 * sorts right within each sign but which time_parse() refuses. Never clamped, never truncated: the
 * longest (INT64_MIN) is 30 bytes with its NUL. */
void time_format(int64_t unix_s, char out[static TIME_TEXT_MAX]);
/* "2026-11-21T09:00:00.123456789Z" (always nine digits). Negative values count back from the
 * epoch with the fraction still forward-counting, as RFC 3339 requires: -1 is
 * "1969-12-31T23:59:59.999999999Z". Every int64 falls within years 1677 to 2262. */
void time_format_ns(int64_t unix_ns, char out[static TIME_TEXT_MAX]);
