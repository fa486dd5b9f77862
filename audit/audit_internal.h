/* audit_internal: what the files of audit/ share, and white-box hooks for tests/test_audit.c and
 * the fuzz harness. Not part of the module's interface: nothing outside audit/ and tests/ includes
 * this. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit/audit.h"
#include "common/common.h"

/* jansson flags of a canonical line: no whitespace, keys in bytewise order, every character
 * outside ASCII and every control character as a \uXXXX escape (uppercase hex, surrogate pairs
 * above U+FFFF). docs/AUDIT.md "Canonical form". */
#define AUDIT_JSON_FLAGS (JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII)
/* jansson flags for reading a line back: a key twice in one object is damage, not "last wins". */
#define AUDIT_JSON_LOAD_FLAGS JSON_REJECT_DUPLICATES
/* Length of a "time" value: "2026-11-21T09:00:00.123456789Z". */
#define AUDIT_TIME_LEN 30

/* Parse exactly the "time" format the log writes (RFC 3339, UTC, "T" and "Z" in capitals, nine
 * fraction digits; fields range-checked, leap days included, no leap second) into nanoseconds
 * since the epoch. s need not be NUL-terminated. -EINVAL any other text; -ERANGE a valid date
 * outside what int64 nanoseconds hold (before 1677-09-21 or after 2262-04-11). */
int audit_time_parse_ns(const char *s, size_t n, int64_t *ret_ns);

/* Check one complete line (without its '\n') as the line_no-th (1-based) of a log at byte offset
 * off: ASCII without control characters, a JSON object without duplicate keys, an integer "seq"
 * equal to want_seq and a "time" that audit_time_parse_ns() accepts. On success *ret_rec is the
 * parsed object (the caller owns it) and *ret_time_ns its time. -EBADMSG otherwise, with the path,
 * line and reason in err_detail(). */
int audit_line_check(const char *path, uint64_t line_no, uint64_t off, const char *line,
		     size_t len, uint64_t want_seq, json_t **ret_rec, int64_t *ret_time_ns);

/* ---- Fault injection (tests only) ---------------------------------------------------------- */

/* Where the next batch fails. The injected failure behaves as the real one would: the appenders of
 * that batch and of every later one get -EIO and the log is failed for good. */
enum audit_fault {
	AUDIT_FAULT_NONE = 0,
	/* write() stores all of the batch but its last byte (the '\n' of its last record), then
	 * fails with err: a short write. The log cuts the file back to the last good end. */
	AUDIT_FAULT_WRITE,
	/* As AUDIT_FAULT_WRITE, and the ftruncate() back fails too, so the partial batch stays in
	 * the file: its complete lines and a torn last line, which the next audit_open() cuts. */
	AUDIT_FAULT_WRITE_NO_TRUNCATE,
	/* The whole batch is written, then fdatasync() fails with err. The log cuts it back off. */
	AUDIT_FAULT_SYNC,
};

/* Make the next batch written fail at `where` with errno err (> 0). Takes the log's lock, so it is
 * safe while appends run; the batch it hits is the first one a leader takes after this call. */
void audit_test_fail_next(struct audit_log *log, enum audit_fault where, int err);
/* Let no batch start until n records are queued (then back to normal): n appenders started at
 * once go to disk as exactly one batch, which shows group commit without timing anything. */
void audit_test_hold_batch(struct audit_log *log, uint64_t n);
/* Batches written and synced since audit_open(). */
uint64_t audit_test_batches(struct audit_log *log);

/* ---- Reading lines ------------------------------------------------------------------------- */

/* Bytes read from the file at a time. */
#define AUDIT_READ_BLOCK (64u * 1024)

/* Splits a log file into lines, reading it in blocks: memory stays at one block and one line,
 * however long the file. */
struct audit_reader {
	int fd;                 /* borrowed, open for reading */
	const char *path;       /* for err_detail(); borrowed */
	uint64_t limit;         /* nothing at or past this offset is read */
	uint64_t off;           /* file offset of the next block */
	uint8_t *blk;           /* AUDIT_READ_BLOCK bytes, owned */
	size_t blk_len;         /* bytes in blk */
	size_t blk_pos;         /* next unused byte of blk */
	struct buf line;        /* the current line, NUL-terminated, capped at AUDIT_RECORD_MAX */
	uint64_t line_off;      /* file offset of the current line's first byte */
	uint64_t line_no;       /* 1-based number of the current line */
};

/* Read fd (from offset 0, up to limit bytes) for path. -ENOMEM. */
int audit_reader_init(struct audit_reader *rd, int fd, const char *path, uint64_t limit);
/* The next line: 1 and the line in rd->line (data, len; without its '\n'), or 0 at the end, with
 * the bytes of a final line that has no '\n' (possibly none) in rd->line, starting at
 * rd->line_off. -EBADMSG a line longer than AUDIT_RECORD_MAX (its '\n' counted, or that would be
 * when it came); -errno a read failed. Both with err_detail(). */
int audit_reader_next(struct audit_reader *rd);
void audit_reader_free(struct audit_reader *rd);
