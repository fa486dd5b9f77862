/* audit: the append-only access record, first form.
 *
 * One record per event (an open, allowed or denied; a close; an import; a grant; a revoke; an
 * integrity failure; the daemon starting and stopping), each one JSON object on one line of
 * <dir>/audit.log, in canonical form: compact, keys sorted, no trailing spaces, '\n' ends it.
 * Every record carries "seq" (0, 1, 2, ... with no gaps: its leaf index in the Merkle tree that a
 * later issue builds over these lines) and "time" (RFC 3339 UTC with nanoseconds).
 *
 * Durability: audit_append() returns only after the record is on disk (fdatasync). Appends from
 * many threads at once are batched into one write and one fdatasync (group commit). If a write or
 * sync fails the log is marked failed: that append and every later one return -EIO, so callers
 * refuse access (fail closed) instead of serving unrecorded reads; the file is left ending at a
 * record boundary whenever that is possible.
 *
 * Contract: functions that act return 0 on success and -errno on failure; outputs are ret_*
 * parameters, last, untouched on failure; err_detail() says what went wrong.
 * Threads: audit_append() from any number of threads; audit_close() once, after all appends.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Longest record line accepted, newline included. */
#define AUDIT_RECORD_MAX (64u * 1024)
#define AUDIT_LOG_NAME "audit.log"

struct audit_log;

/* Open (creating dir 0700 and the log 0600 if absent) for appending. Reads the log once to find
 * the next seq and check it: a final line without its '\n' (a write torn by a crash, which was
 * never acknowledged) is cut off, and the cut bytes are reported in err_detail() style through
 * *ret_torn_bytes (may be NULL). A line that is not a JSON object, or whose seq is not the
 * previous plus one, is -EBADMSG naming the line: the daemon does not start on a damaged log.
 * Takes an flock on the log so two writers never share it (-EBUSY).
 * Also (docs/AUDIT.md "Opening"): -EBADMSG for a line longer than AUDIT_RECORD_MAX, with bytes
 * other than printable ASCII, without an integer "seq" or with a "time" not in the log's format;
 * -ENOENT the parent of dir is missing; -ELOOP the log is a symlink. */
int audit_open(const char *dir, uint64_t *ret_torn_bytes, struct audit_log **ret_log);
/* Flush and close. NULL is fine. */
void audit_close(struct audit_log *log);

/* Append one record. rec is a JSON object (borrowed, not modified) without "seq" or "time"; the
 * log adds both, serializes canonically and makes the line durable before returning.
 * -EINVAL not an object, has seq/time, or its line would exceed AUDIT_RECORD_MAX; -EIO the log
 * could not be written (now or earlier: the log is failed).
 * Also: -EINVAL for a record jansson can write but not read back (a string holding a NUL, nesting
 * deeper than its parser goes), which would otherwise make the next audit_open() refuse the log.
 * ret_seq may be NULL. */
int audit_append(struct audit_log *log, const json_t *rec, uint64_t *ret_seq);
/* Records appended so far (the next seq). Precisely: records durable in the file, which is the
 * next seq whenever no append is in flight. */
uint64_t audit_count(struct audit_log *log);
/* True once a write or sync has failed. */
bool audit_failed(struct audit_log *log);

/* A JSON string for text from outside (file names, user names, purposes): valid UTF-8 as is;
 * each byte of an invalid sequence becomes "\\xNN" (the four characters). Never NULL except on
 * allocation failure.
 * Also: NN is lowercase hex; s NULL gives JSON null. A backslash is not escaped, so text that
 * already reads "\\xff" cannot be told from an escaped byte 0xff. */
json_t *audit_string(const char *s);

/* Which records audit_foreach() passes on. Zero / NULL fields match everything. */
struct audit_filter {
	const char *dataset;      /* records whose "dataset" is this name */
	const char *user;         /* records whose "user" is this name or whose "uid" is this number */
	const char *event;        /* records whose "event" is this */
	int64_t since_ns;         /* time >= since_ns (0: no bound) */
	int64_t until_ns;         /* time < until_ns (0: no bound) */
};

/* Read the log in dir (no daemon needed; a concurrent writer is fine: a final line still being
 * written is not passed on) and call fn for each record matching filter (NULL: all), in seq order,
 * with the parsed object and its exact line (without '\n'). A non-zero return from fn stops and is
 * returned. -EBADMSG a damaged line (named in err_detail()).
 * Also: the file is read up to the size it has when the call begins; line is NUL-terminated too;
 * a filter user of decimal digits only matches "user" by name or "uid" by value. */
int audit_foreach(const char *dir, const struct audit_filter *filter,
		  int (*fn)(void *ctx, const json_t *rec, const char *line, size_t len), void *ctx);
