/* audit_internal: what the files of audit/ share, and white-box hooks for tests/test_audit.c and
 * the fuzz harness. Not part of the module's interface: nothing outside audit/ and tests/ includes
 * this. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit/audit.h"
#include "audit/merkle.h"
#include "common/common.h"
#include "common/err.h"

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
/* Hold the syncer (on: it syncs nothing until released), so a test can see what is written but
 * not synced without racing it. Durable appends still sync their own batches. */
void audit_test_hold_sync(struct audit_log *log, bool on);
/* Records, and the file size after them, that are synced (durable) and that are written, now. A
 * simulated power loss cuts the file back to *ret_synced_end. */
void audit_test_progress(struct audit_log *log, uint64_t *ret_synced, uint64_t *ret_synced_end,
			 uint64_t *ret_written, uint64_t *ret_written_end);

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

/* ---- The tree files (tree.c) --------------------------------------------------------------- */

/* What the tree needs of one record: its leaf hash and the length of its line, '\n' included. */
struct tree_entry {
	uint8_t leaf[MERKLE_HASH_LEN];
	uint32_t len;
};

/* The Merkle tree of the records of audit.log, on disk in <dir>/tree/ (see tree.c). */
struct audit_tree {
	char *dir;                                  /* the audit directory, for messages; owned */
	int dirfd;                                  /* <dir>/tree */
	int level_fd[MERKLE_PROOF_MAX];             /* L00..L63, opened on first use; -1 before */
	int offsets_fd;                             /* offsets */
	int log_fd;                                 /* audit.log; borrowed from the log */
	struct merkle_frontier f;                   /* every record appended so far */
	uint8_t last_leaf[MERKLE_HASH_LEN];         /* leaf hash of record f.size - 1; zeros if none */
	uint64_t end;                               /* log offset after record f.size - 1 */
	bool broken;                                /* a tree file write failed: no state, no proofs */
};

/* Open (creating) <dir>/tree for the log open on log_fd, at the last saved state: the files are
 * cut back to it and checked against the log (the state's last record must still hash the
 * same). No state, or files that disagree with it: an empty tree (*ret_rebuilt true when the
 * log was not empty), which the caller fills by reading the log from the start. -EBADMSG the log
 * is shorter than a state said it was (records a checkpoint covered were removed). */
int tree_open(int audit_dirfd, const char *dir, int log_fd, struct audit_tree **ret_tree,
	      bool *ret_rebuilt);
void tree_close(struct audit_tree *t);
/* Append n records (the batch leader only). On a write error the tree is marked broken (the
 * in-memory frontier stays right) and the error returned. */
int tree_append(struct audit_tree *t, const struct tree_entry *e, size_t n);
/* Make the files durable, then write the state: `count` records ending at log offset `end`
 * (a published, durable point: entries for them are written). */
int tree_save_state(struct audit_tree *t, uint64_t count, uint64_t end);
/* A merkle_perfect_fn over the tree files (ctx: struct audit_tree). */
int tree_perfect(void *ctx, unsigned level, uint64_t index, uint8_t out[static MERKLE_HASH_LEN]);
/* The line of record seq (without '\n', NUL-terminated, malloc'd) of a tree published at
 * count records ending at end. -ERANGE seq >= count. */
int tree_line(struct audit_tree *t, uint64_t seq, uint64_t count, uint64_t end, char **ret_line,
	      size_t *ret_len);

/* ---- The log (audit.c, checkpoint.c) ------------------------------------------------------- */

/* Cap on the bytes queued while a batch is written. An appender that finds no room for a line of
 * AUDIT_RECORD_MAX waits for the next batch to take the queue (back-pressure, not an error). */
#define AUDIT_QUEUE_MAX (4u << 20)
/* Failed batches remembered, so that an appender that slept through several can still tell
 * whether its own record was written before them (older: it is told it failed). */
#define AUDIT_EPOCHS 64

/* The sealing state of a log (seal.c), under audit_log.lock. */
struct audit_seal {
	uint8_t *store_key;                 /* sodium_malloc'd, read-only; NULL: not sealing */
	uint8_t *epoch_key;                 /* sodium_malloc'd; the current epoch's */
	uint8_t (*auditors)[AUDIT_AUDITOR_KEY_LEN];  /* public keys; owned */
	size_t nauditors;
	bool written;                       /* the key record of this epoch is queued */
	uint64_t key_seq;                   /* its seq */
	uint64_t count;                     /* records sealed under it */
};

/* Room a key record needs in the queue (AUDIT_AUDITORS_MAX boxes and the rest). */
#define AUDIT_KEY_RECORD_MAX 8192u

/* With the log's lock held (seal.c): */
bool seal_needs_key(struct audit_log *log);
int seal_key_record(struct audit_log *log, uint64_t seq, json_t **ret_rec);
void seal_key_written(struct audit_log *log, uint64_t key_seq);
int seal_record(struct audit_log *log, json_t *obj);

struct audit_log {
	int fd;                             /* audit.log, O_APPEND; holds the flock */
	int dirfd;                          /* the audit directory */
	char *dir;                          /* the audit directory's path, for messages; owned */
	char *path;                         /* "<dir>/audit.log", for err_detail(); owned */
	struct audit_tree *tree;            /* written by the batch leader only (and open/close) */
	pthread_mutex_t lock;               /* guards every field below, up to the checkpoint part */
	pthread_cond_t cond;                /* broadcast when a batch ends or the queue is taken */
	uint64_t next_seq;                  /* seq the next queued record gets */
	uint64_t written;                   /* records [0, written) are in the file (write(2)) */
	uint64_t wend;                      /* file size after them: a record boundary */
	struct merkle_frontier wpub;        /* the tree of records [0, written) */
	uint8_t written_leaf[MERKLE_HASH_LEN];  /* leaf hash of record written - 1 */
	uint64_t durable;                   /* records [0, durable) are synced too (<= written) */
	uint64_t end;                       /* file size after them: a record boundary */
	uint64_t sync_upto;                 /* records below it must be synced before the next
					     * batch ends (an AUDIT_DURABLE append asked) */
	uint8_t queued_leaf[MERKLE_HASH_LEN];   /* leaf hash of record next_seq - 1: the next "prev" */
	uint8_t durable_leaf[MERKLE_HASH_LEN];  /* leaf hash of record durable - 1 */
	struct merkle_frontier pub;         /* the tree of records [0, durable) */
	struct buf queue;                   /* lines no leader has taken yet, in seq order */
	struct buf qmeta;                   /* a struct tree_entry per queued line */
	struct buf batch;                   /* the lines being written; the leader's own */
	struct buf bmeta;                   /* their entries */
	bool leading;                       /* a leader is writing `batch`, lock dropped */
	unsigned room_waiters;              /* appenders waiting for room in the queue */
	uint64_t epoch;                     /* failed batches so far: seqs after one are reused */
	uint64_t epoch_end[AUDIT_EPOCHS];   /* durable when epoch e ended (at e % AUDIT_EPOCHS) */
	bool failed;                        /* the file's end is unknown: nothing is written any more */
	char fail_detail[ERR_DETAIL_MAX];   /* the last failure, repeated to the appenders it failed */
	uint64_t batches;                   /* batches made durable since open */
	enum audit_fault fault;             /* failure injected into the next batch (tests) */
	int fault_err;                      /* its errno */
	uint64_t hold;                      /* no batch starts before this many are queued (tests) */
	bool one_per_sync;                  /* no group commit (benchmarks); set before appends */
	pthread_mutex_t serial;             /* held across a whole append when one_per_sync */
	struct audit_seal seal;             /* sealing, under lock */
	/* The syncer (audit_syncer_start): AUDIT_WRITTEN records are synced by it within
	 * sync_interval_ms; without it they are synced before their append returns. */
	pthread_t syncer;
	bool syncer_running;                /* under lock */
	bool syncer_stop;                   /* under lock */
	unsigned sync_interval_ms;
	uint64_t syncs;                     /* fdatasyncs of the log that succeeded (tests) */
	bool hold_sync;                     /* the syncer syncs nothing while set (tests) */

	/* Room kept for reserved records (audit_reserve): [0, alloc_end) of the file is allocated
	 * (fallocate FALLOC_FL_KEEP_SIZE past its end), and outside a reserved append the log keeps
	 * alloc_end >= the end of everything queued + reserved (+ a key record when reserved > 0). */
	uint64_t reserved;                  /* bytes promised to reserved records; under lock */
	uint64_t alloc_end;                 /* under lock */
	bool no_prealloc;                   /* fallocate is not supported here: nothing is kept */

	/* The last policy record (one with "policy_digest"), whose seq every record carries as
	 * "pseq" (docs/AUDIT.md section 16). Under lock. */
	bool pseq_set;                      /* queued records: a policy record was appended */
	uint64_t pseq;
	bool durable_pseq_set;              /* the same as of the last record in the file */
	uint64_t durable_pseq;
	/* The same for the last versions record (one with "versions_digest"), carried as "vseq"
	 * (docs/AUDIT.md section 18). Under lock. */
	bool vseq_set;
	uint64_t vseq;
	bool durable_vseq_set;
	uint64_t durable_vseq;

	/* Checkpoints (checkpoint.c). cp_lock orders signing: sizes never go back. */
	pthread_mutex_t cp_lock;
	uint8_t *sk;                        /* Ed25519 secret key, sodium_malloc'd, read-only; NULL:
					     * no signer set */
	char *key_name;                     /* the signer's key name = the checkpoints' origin */
	char *verifier;                     /* its verifier key text */
	int cp_fd;                          /* checkpoints file, O_APPEND; -1 until the first one */
	char *cp_last;                      /* the last signed checkpoint note; owned */
	size_t cp_last_len;
	uint64_t cp_last_size;              /* its tree size */
	/* The periodic signer thread. */
	pthread_t cp_thread;
	bool cp_running;                    /* under cp_tlock */
	bool cp_stop;                       /* under cp_tlock */
	unsigned cp_interval;               /* seconds */
	pthread_mutex_t cp_tlock;
	pthread_cond_t cp_tcond;
};

/* The log's current durable tree: count, end offset and frontier, read under the lock. */
void audit_snapshot(struct audit_log *log, uint64_t *ret_count, uint64_t *ret_end,
		    struct merkle_frontier *ret_f);
