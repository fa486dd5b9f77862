/* verify: the offline verifier of an audit log directory (audit.log + checkpoints), as
 * `enclavectl audit verify` runs it: no daemon, no secret, only the log's verifier key and,
 * optionally, a checkpoint the auditor saved earlier (docs/AUDIT.md, "Verification").
 *
 * What it checks, in one pass over audit.log (memory: about 140 bytes per record, one line at a
 * time of the log) and one over the checkpoints file:
 * - every line is a canonical record (ASCII JSON object, integer "seq", "time"); damage is
 *   MALFORMED and the record still counts as a leaf of its bytes;
 * - "seq" runs 0, 1, 2, ... and "prev" holds the hex leaf hash of the previous line (64 '0's for
 *   the first): gaps, duplicates, order and chain breaks are named REMOVED, INSERTED, REORDERED
 *   or MODIFIED with the seqs they concern;
 * - every checkpoint is signed by the key (BAD_SIGNATURE, UNKNOWN_KEY otherwise), sizes do not
 *   decrease (ROLLBACK), equal sizes have equal roots and every checkpoint is consistent with the
 *   one before it (FORK, both indices named), its size is within the records (TRUNCATED) and its
 *   root is the records' tree root (MODIFIED in (previous size, size]);
 * - a trusted checkpoint: signed by the key, not newer than the newest checkpoint (ROLLBACK), and
 *   an RFC 9162 consistency proof from it to the newest checkpoint, computed from the records and
 *   verified, holds (FORK otherwise).
 *
 * Contract: verify_log() returns 0 when the verification ran (clean or not: look at the
 * findings) and -errno only when it could not run (no log, unreadable, out of memory).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit/merkle.h"
#include "audit/note.h"

/* Most findings kept; later ones are counted in verify_result.dropped. */
#define VERIFY_FINDINGS_MAX 1000
/* Most records verified. Memory is about 140 bytes per record (the tree, each record's seq and
 * prev, an index of leaf hashes), so 18 GiB at the cap. */
#define VERIFY_RECORDS_MAX (1ull << 27)
/* A finding's checkpoint field for the trusted checkpoint (not one of the file's). */
#define VERIFY_CP_TRUSTED (-2)
/* A finding's seq / checkpoint fields when it names none. */
#define VERIFY_NONE UINT64_MAX
#define VERIFY_CP_NONE (-1)

/* What is wrong. The names (verify_kind_name()) are what --json prints, in lowercase. */
enum verify_kind {
	VERIFY_MALFORMED,     /* a line (or a checkpoint) that is not what the format says */
	VERIFY_MODIFIED,      /* a record's bytes changed (seq, or a range seq..seq_last) */
	VERIFY_REMOVED,       /* records missing (seq..seq_last) */
	VERIFY_INSERTED,      /* a record that does not belong (seq, line) */
	VERIFY_REORDERED,     /* records out of order (seq and seq_last: the two swapped) */
	VERIFY_TRUNCATED,     /* a checkpoint covers more records than the log holds, or none
			       * covers any of a non-empty log's records */
	VERIFY_FORK,          /* two signed checkpoints that cannot both be true (cp, cp2) */
	VERIFY_BAD_SIGNATURE, /* a checkpoint with our key's name and id whose signature fails */
	VERIFY_UNKNOWN_KEY,   /* a checkpoint not signed by our key (signed by others only) */
	VERIFY_ROLLBACK,      /* checkpoint sizes going down, or a trusted one newer than the log */
	VERIFY_INCONSISTENT,  /* a checkpoint that disagrees with the records in another way */
	VERIFY_KIND_COUNT
};

/* One finding. */
struct verify_finding {
	enum verify_kind kind;
	uint64_t seq;          /* first record it names, or VERIFY_NONE */
	uint64_t seq_last;     /* last record it names (== seq for one), or VERIFY_NONE */
	uint64_t line;         /* 1-based line of audit.log it names, or 0 */
	int64_t cp;            /* checkpoint index in the file, VERIFY_CP_TRUSTED or VERIFY_CP_NONE */
	int64_t cp2;           /* the other checkpoint of a fork or rollback, or VERIFY_CP_NONE */
	char text[320];        /* one sentence for people, NUL-terminated */
};

/* What to verify. Strings are borrowed for the call. */
struct verify_options {
	const char *log_dir;               /* holds audit.log and checkpoints */
	const struct note_verifier *key;   /* the log's verifier key */
	const char *trusted;               /* a signed checkpoint note saved earlier, or NULL */
	size_t trusted_len;                /* its length */
};

/* The outcome. Owned by the caller: verify_result_free(). */
struct verify_result {
	struct verify_finding *findings;  /* n of them, in the order found; owned */
	size_t n;
	size_t cap;                       /* allocated */
	uint64_t dropped;                 /* findings past VERIFY_FINDINGS_MAX, not kept */
	uint64_t records;                 /* complete lines in audit.log */
	uint64_t checkpoints;             /* complete notes in the checkpoints file */
	uint64_t log_torn_bytes;          /* bytes after the last '\n' of audit.log */
	uint64_t cp_torn_bytes;           /* bytes of a torn last note of checkpoints */
	uint8_t records_root[MERKLE_HASH_LEN]; /* MTH of all records read */
	uint64_t uncovered_first;         /* first record no matching checkpoint covers */
	uint64_t uncovered;               /* records from there to the end (0: all signed) */
	bool have_verified;               /* a checkpoint verified against the records */
	struct checkpoint verified;       /* the newest such checkpoint */
	int64_t verified_index;           /* its index in the file */
	bool have_trusted;                /* a trusted checkpoint was given and opened */
	struct checkpoint trusted;        /* it */
	size_t consistency_n;             /* the proof from trusted to verified, when checked */
	uint8_t consistency[MERKLE_PROOF_MAX][MERKLE_HASH_LEN];
};

/* Verify opt->log_dir. On success (the verification ran) *ret_result holds the findings; the log
 * is clean when it has none. -ENOENT no audit.log (err_detail() names it); -EINVAL no key or
 * dir; -E2BIG more than VERIFY_RECORDS_MAX records; -ENOMEM; -errno reading. A missing
 * checkpoints file is a finding (TRUNCATED: nothing is signed), not an error, when the log has
 * records. */
int verify_log(const struct verify_options *opt, struct verify_result **ret_result);
/* Free; NULL is fine. */
void verify_result_free(struct verify_result *r);
/* "malformed", "modified", ... for --json and for people. */
const char *verify_kind_name(enum verify_kind k);

/* Read audit.log in log_dir into a tree of its records' leaf hashes (every complete line, as it
 * is, damaged or not; a torn last line is left out), for proofs offline. -ENOENT, -E2BIG past
 * VERIFY_RECORDS_MAX, -ENOMEM, -errno. */
int verify_load_tree(const char *log_dir, struct merkle_mem **ret_tree);
