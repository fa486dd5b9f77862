/* audit: the append-only access record, first form.
 *
 * One record per event (an open, allowed or denied; a close; an import; a grant; a revoke; an
 * integrity failure; the daemon starting and stopping), each one JSON object on one line of
 * <dir>/audit.log, in canonical form: compact, keys sorted, no trailing spaces, '\n' ends it.
 * Every record carries "seq" (0, 1, 2, ... with no gaps: its leaf index in the Merkle tree that a
 * later issue builds over these lines) and "time" (RFC 3339 UTC with nanoseconds).
 *
 * Durability: audit_append() returns only after the record is on disk (fdatasync). Appends from
 * many threads at once are batched into one write and one fdatasync (group commit). With a syncer
 * running (audit_syncer_start), audit_append_mode(AUDIT_WRITTEN) returns once the record is
 * written to the file (so a crash of the process loses nothing it acknowledged) and the syncer
 * makes it durable within its interval (so a power loss loses at most that interval); see
 * docs/AUDIT.md "Durability". If a write or
 * sync fails, the appends of that batch return -EIO, so callers refuse access (fail closed)
 * instead of serving unrecorded reads, and the file is cut back to the record boundary before
 * the batch; the next append tries again (a full disk recovers when space returns). Only if the
 * file cannot be cut back is the log failed for good.
 *
 * Each record also carries "prev", the RFC 6962 leaf hash of the record before it, and the log
 * keeps the Merkle tree of its records on disk (<dir>/tree/), signs checkpoints of it
 * (<dir>/checkpoints) and proves records from it: see "Checkpoints and proofs" below and
 * docs/AUDIT.md.
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

/* Open (creating dir 0700 and the log 0600 if absent) for appending. Reads the records after the
 * tree's last saved state (<dir>/tree/state, saved at every open and checkpoint; all of the log
 * when there is none) to find the next seq, check them and add them to the tree: a final line
 * without its '\n' (a write torn by a crash, which was never acknowledged) is cut off, and the cut
 * bytes are reported through *ret_torn_bytes (may be NULL). A line that is not a JSON object,
 * whose seq is not the previous plus one, or whose "prev" is not the hash of the record before
 * it, is -EBADMSG naming the line: the daemon does not start on a damaged log. So is a log
 * shorter than the saved state says it was (records a checkpoint covered were removed).
 * Takes an flock on the log so two writers never share it (-EBUSY).
 * Also (docs/AUDIT.md "Opening"): -EBADMSG for a line longer than AUDIT_RECORD_MAX, with bytes
 * other than printable ASCII, without an integer "seq" or with a "time" not in the log's format;
 * -ENOENT the parent of dir is missing; -ELOOP the log is a symlink. */
int audit_open(const char *dir, uint64_t *ret_torn_bytes, struct audit_log **ret_log);
/* Flush and close. NULL is fine. */
void audit_close(struct audit_log *log);

/* Append one record. rec is a JSON object (borrowed, not modified) without "seq", "time" or
 * "prev"; the log adds them, serializes canonically and makes the line durable before returning.
 * -EINVAL not an object, has seq/time, or its line would exceed AUDIT_RECORD_MAX; -EIO the log
 * could not be written (now or earlier: the log is failed).
 * Also: -EINVAL for a record jansson can write but not read back (a string holding a NUL, nesting
 * deeper than its parser goes), which would otherwise make the next audit_open() refuse the log.
 * ret_seq may be NULL. */
int audit_append(struct audit_log *log, const json_t *rec, uint64_t *ret_seq);
/* How durable a record must be when its append returns. */
enum audit_durability {
	AUDIT_DURABLE = 0,  /* synced (fdatasync): survives a power loss */
	AUDIT_WRITTEN = 1,  /* written (write(2)): survives a crash of the process; synced by the
			     * syncer within its interval. Without a syncer: as AUDIT_DURABLE */
};
/* audit_append() with the durability asked for. Same errors, and -EIO for an AUDIT_WRITTEN record
 * whose write failed. A sync that fails after AUDIT_WRITTEN records were acknowledged fails the
 * log for good (they cannot be taken back): every later append is -EIO. */
int audit_append_mode(struct audit_log *log, const json_t *rec, enum audit_durability d,
		      uint64_t *ret_seq);
/* ---- Room kept for records promised in advance ------------------------------------------------
 *
 * A record that must be written later whatever happens meanwhile (the close of a file a reader was
 * allowed to open: docs/AUDIT.md "Closes are never lost to a full disk") gets its room reserved
 * first. The log keeps room allocated past the end of audit.log (fallocate with
 * FALLOC_FL_KEEP_SIZE) for every reservation, and every other append first makes sure the file
 * system has room for its own line on top of them: when it has not, that append fails with
 * -ENOSPC before it is queued, and the reserved room stays untouched. A reserved record is then
 * written into blocks already allocated to the file, where a full file system cannot refuse it,
 * and no other record can have taken them. Where fallocate is not supported (EOPNOTSUPP) nothing
 * is kept and reservations always succeed, as before they existed.
 *
 * audit_reserve: keep bytes more (at least the line the record will take, sealed: the caller's
 * bound). 0, or -ENOSPC when the file system has no room for them (refuse what needed them),
 * -errno, both with err_detail(). audit_unreserve: give back a reservation that will not be used.
 * audit_append_reserved: audit_append_mode() of the record a reservation of `reserved` bytes was
 * made for, which it uses up (whatever the result: a failed append is an I/O error, not a full
 * disk). */
int audit_reserve(struct audit_log *log, uint64_t bytes);
void audit_unreserve(struct audit_log *log, uint64_t bytes);
int audit_append_reserved(struct audit_log *log, const json_t *rec, enum audit_durability d,
			  uint64_t reserved, uint64_t *ret_seq);
/* Bytes reserved now (tests). */
uint64_t audit_reserved(struct audit_log *log);

/* Start the syncer: a thread that syncs written records at most interval_ms (1..1000) after
 * the first of them was written. -EINVAL interval; -EBUSY already running; -errno from
 * pthread_create. audit_close() stops it after a last sync. */
int audit_syncer_start(struct audit_log *log, unsigned interval_ms);
/* Stop the syncer after syncing what is written. Safe if it never started; audit_close() calls
 * it. */
void audit_syncer_stop(struct audit_log *log);
/* Sync everything written so far now (returns once it is durable). -EIO as a failed batch. */
int audit_sync(struct audit_log *log);

/* Records appended so far (the next seq). Precisely: records durable in the file, which is the
 * next seq whenever no append is in flight. */
uint64_t audit_count(struct audit_log *log);
/* True once the log has failed for good: a write or sync failed and the file could not be cut
 * back to its last record, so its end is unknown. (A failure that could be cut back fails only
 * the appends of that batch: the next append is tried again, so the log goes on once a full
 * disk has room again.) */
bool audit_failed(struct audit_log *log);
/* Group commit on (the default) or off: off, every record gets its own write and fdatasync, and
 * appenders take turns. Only for measuring what group commit saves (scripts/bench-audit.sh);
 * call before the first append. */
void audit_set_group_commit(struct audit_log *log, bool on);

/* A JSON string for text from outside (file names, user names, purposes): valid UTF-8 as is;
 * each byte of an invalid sequence becomes "\\xNN" (the four characters). Never NULL except on
 * allocation failure.
 * Also: NN is lowercase hex; s NULL gives JSON null. A backslash is not escaped, so text that
 * already reads "\\xff" cannot be told from an escaped byte 0xff. */
json_t *audit_string(const char *s);

/* Which records audit_foreach() passes on (docs/AUDIT.md section 8). Zero / NULL fields match
 * everything; every field that is set must match. */
struct audit_filter {
	const char *dataset;      /* records whose "dataset" is this name */
	const char *user;         /* the actor: records whose "user" is this name or whose "uid" is
				   * this number */
	const char *event;        /* a comma list of event names and families (access, grant, deny,
				   * dataset, audit, daemon): records whose "event" is one of them */
	const char *decision;     /* records whose "decision" is this ("allow", "deny") */
	const char *grantee;      /* grants to this user (name or uid), and the records that name
				   * them by grant_id, and those opens' closes */
	const char *group;        /* the same for grants to this group (name or gid) */
	uint64_t grant_id;        /* records naming this grant, and the closes of its opens */
	uint32_t version;         /* records about this version, and grants of it (or of all) */
	uint64_t job_id;          /* opens by this batch job, and their closes */
	bool seq_set;             /* only the record whose "seq" is seq */
	uint64_t seq;
	int64_t since_ns;         /* time >= since_ns (0: no bound) */
	int64_t until_ns;         /* time < until_ns (0: no bound) */
	/* audit_foreach() only. When set, every record is opened with it before it is matched,
	 * and fn gets the opened record (the line stays as written); a record that does not open
	 * stops the walk with its error. Without it, a sealed record is matched as it is: its
	 * sealed fields are not there to match. */
	struct audit_opener *open;
	/* With open: fn gets the record as written (still sealed), matched on its opened form:
	 * the daemon filters for a client without handing it what the client cannot open. */
	bool pass_sealed;
	/* With open: every key record (event "log_key") is passed whatever the filter says, so a
	 * reader elsewhere can open the records that follow. */
	bool keys;
};

/* The longest list of grants and opens a filter follows (see audit_matcher_test()). */
#define AUDIT_FILTER_LINKS_MAX (4u << 20)

/* A filter applied to decoded records, one at a time, in seq order. It has state: a grant chosen
 * by grantee or group is followed to the later records naming its grant_id, and an open chosen by
 * grant_id, grantee, group or job to the records naming it by open_seq (close, read_refused,
 * integrity). f is borrowed for the matcher's life. Event names are not checked here (a log may
 * hold events newer than this code): the daemon and enclavectl refuse unknown ones with
 * audit_event_filter_check(). -ENOMEM. */
struct audit_matcher;
int audit_matcher_new(const struct audit_filter *f, struct audit_matcher **ret_m);
/* 1 rec (at time t_ns) matches, 0 it does not, or -E2BIG past AUDIT_FILTER_LINKS_MAX, -ENOMEM. */
int audit_matcher_test(struct audit_matcher *m, const json_t *rec, int64_t t_ns);
void audit_matcher_free(struct audit_matcher *m);
/* 0 if every item of a comma list is a known event or family; -EINVAL naming the first that is
 * not (err_detail()). */
int audit_event_filter_check(const char *list);
/* Every event name the store writes (*ret_n of them), and the families by index (NULL past the
 * last), with their events (NULL-terminated). For help texts, completion and tests. */
const char *const *audit_event_list(size_t *ret_n);
const char *audit_event_family(size_t i, const char *const **ret_events);

/* Read the log in dir (no daemon needed; a concurrent writer is fine: a final line still being
 * written is not passed on) and call fn for each record matching filter (NULL: all), in seq order,
 * with the parsed object and its exact line (without '\n'). A non-zero return from fn stops and is
 * returned. -EBADMSG a damaged line (named in err_detail()).
 * Also: the file is read up to the size it has when the call begins; line is NUL-terminated too;
 * a filter user of decimal digits only matches "user" by name or "uid" by value. */
int audit_foreach(const char *dir, const struct audit_filter *filter,
		  int (*fn)(void *ctx, const json_t *rec, const char *line, size_t len), void *ctx);

/* One log read a record at a time (to merge several logs in time order: the primary's and the
 * nodes', daemon/control_audit.c), with the checks of audit_foreach() and no filter. With open
 * (borrowed until audit_cursor_free()), each record is opened too. -errno as audit_foreach(). */
struct audit_cursor;
struct audit_opener;
int audit_cursor_open(const char *dir, struct audit_opener *open, struct audit_cursor **ret);
/* 1: the next record as written (*ret_rec), opened (*ret_opened: a new reference, the same
 * record when it is not sealed or without an opener), its time and its line's length; 0: the
 * end (a final line still being written is not passed on); -errno: a damaged or unopenable
 * line (err_detail() names it); the cursor is then done. */
int audit_cursor_next(struct audit_cursor *c, json_t **ret_rec, json_t **ret_opened,
		      int64_t *ret_t, size_t *ret_len);
/* How many records were read. */
uint64_t audit_cursor_records(const struct audit_cursor *c);
void audit_cursor_free(struct audit_cursor *c);

/* ---- Sealed records (docs/AUDIT.md "Sealed records") --------------------------------------- */

/* An epoch key, and the store key the daemon derives from its master key. */
#define AUDIT_SEAL_KEY_LEN 32
/* An auditor's X25519 key (either half). */
#define AUDIT_AUDITOR_KEY_LEN 32
/* Auditor keys a log seals to at most. */
#define AUDIT_AUDITORS_MAX 16
/* Records sealed under one epoch key before the next (a new one also at every audit_open()). */
#define AUDIT_EPOCH_RECORDS 65536u
/* An auditor key id as text: 16 hex digits and a NUL. */
#define AUDIT_AUDITOR_ID_TEXT 17
/* An auditor public key as text, NUL included. */
#define AUDIT_AUDITOR_PUB_TEXT 80

/* Seal from the next append on: store_key (borrowed; copied into guarded memory) lets the daemon
 * read its own log back; every epoch key is also sealed to each of the n auditors' public keys
 * (n <= AUDIT_AUDITORS_MAX). Called again (an auditor added), the next append starts a new epoch
 * under the new set. Until it is called, records are written in the clear (tests, and the
 * history of stores from before sealing). */
int audit_sealer_set(struct audit_log *log, const uint8_t store_key[static AUDIT_SEAL_KEY_LEN],
		     const uint8_t (*auditors)[AUDIT_AUDITOR_KEY_LEN], size_t n);
/* Stop sealing; keys wiped. audit_close() calls it. */
void audit_sealer_clear(struct audit_log *log);
/* True once audit_sealer_set() was called. */
bool audit_sealing(struct audit_log *log);
/* Does member `name` with value v stay in the clear in a sealed record? */
bool audit_member_is_clear(const char *name, const json_t *v);

/* Opens sealed records: with the store key (the daemon) or an auditor's secret key file (an
 * auditor), or both. Learns each epoch key from the key records it is shown, so records must be
 * shown in log order (a key record before the records sealed under it). Not thread-safe. */
struct audit_opener;
/* store_key may be NULL; auditor_key_file (read, mode 0600 or stricter; the key is kept in
 * guarded memory) may be NULL. -EPERM the file is open to others; -EINVAL not a key file. */
int audit_opener_new(const uint8_t *store_key, const char *auditor_key_file,
		     struct audit_opener **ret_opener);
void audit_opener_free(struct audit_opener *o);
/* *ret_rec: rec put back together (its sealed members in place, "sealed" removed; a new
 * reference), or rec itself (a reference more) when it is not sealed; a key record is learned.
 * -ENOKEY the record's epoch key is not ours to open (the message names the auditor keys it is
 * sealed to); -EBADMSG the sealed part does not authenticate (forged, altered, moved from
 * another record or epoch). */
int audit_opener_open(struct audit_opener *o, const json_t *rec, json_t **ret_rec);
/* Does rec carry a sealed part? */
bool audit_record_sealed(const json_t *rec);

/* Auditor keys as text: "enclave-auditor-public:<base64>" and "enclave-auditor-secret:<base64>",
 * one line each. A key id is the first 8 bytes of BLAKE2b(public key), in hex. */
void audit_auditor_id(const uint8_t pk[static AUDIT_AUDITOR_KEY_LEN],
		      char out[static AUDIT_AUDITOR_ID_TEXT]);
int audit_auditor_public_format(const uint8_t pk[static AUDIT_AUDITOR_KEY_LEN],
				char out[static AUDIT_AUDITOR_PUB_TEXT]);
int audit_auditor_public_parse(const char *text, size_t len,
			       uint8_t ret_pk[static AUDIT_AUDITOR_KEY_LEN]);
int audit_auditor_public_read(const char *path, uint8_t ret_pk[static AUDIT_AUDITOR_KEY_LEN]);
/* *ret_sk: sodium_malloc'd, read-only; sodium_free() it. -EPERM the file is open to others. */
int audit_auditor_secret_read(const char *path, uint8_t **ret_sk,
			      uint8_t ret_pk[static AUDIT_AUDITOR_KEY_LEN]);
/* Make a key pair: the secret half into a new file path (O_EXCL, mode 0600, synced), the public
 * half into ret_pk. -EEXIST path exists (nothing is overwritten). */
int audit_auditor_keypair_write(const char *path, uint8_t ret_pk[static AUDIT_AUDITOR_KEY_LEN]);

/* ---- Policy records (docs/AUDIT.md section 16) ---------------------------------------------- */

/* A record that carries "policy_digest" is a policy record; every record appended after it
 * carries its seq as "pseq". The line of the last durable policy record: *ret_seq, and the
 * line (malloc'd, without '\n'). -ENOENT none (a log from before policy records, or none yet).
 * Read from the tree files (no log scan). */
int audit_policy_head(struct audit_log *log, uint64_t *ret_seq, char **ret_line, size_t *ret_len);
/* The digest of a policy state: the XOR of every record's hash, BLAKE2b-256 keyed with key
 * (the store's policy digest key) over LE32(key length) || key || the value's canonical JSON. */
#define AUDIT_POLICY_DIGEST_LEN 32
void audit_policy_record_hash(const uint8_t key[static AUDIT_SEAL_KEY_LEN], const void *k,
			      size_t kl, const void *v, size_t vl,
			      uint8_t out[static AUDIT_POLICY_DIGEST_LEN]);
/* Replay the policy records of the log in dir, opening them with store_key: every record's
 * "policy_puts" in order; a "policy_snapshot" or "policy_rebuild" record starts from nothing.
 * *ret_state: a new JSON object, hex key -> value text. *ret_max_id: the highest grant or rule
 * id any record names (0: none). *ret_records (may be NULL): policy records seen. */
int audit_policy_replay(const char *dir, const uint8_t store_key[static AUDIT_SEAL_KEY_LEN],
			json_t **ret_state, uint64_t *ret_max_id, uint64_t *ret_records);
/* The line of durable record seq (malloc'd). -ENOENT no such record. */
int audit_record_line(struct audit_log *log, uint64_t seq, char **ret_line, size_t *ret_len);

/* ---- Versions records (docs/AUDIT.md section 18) ------------------------------------------ */

/* A record that carries "versions_digest" (an import's "committed" and "aborted" records, and
 * `versions_baseline`) states every version the log stands for after it; every record appended
 * after it carries its seq as "vseq". The line of the last durable one: *ret_seq, and the line
 * (malloc'd, without '\n'). -ENOENT none. Read from the tree files (no log scan). */
int audit_versions_head(struct audit_log *log, uint64_t *ret_seq, char **ret_line,
			size_t *ret_len);
/* The digest of a set of versions: the XOR of every version's hash, BLAKE2b-256 keyed with key
 * (the store's policy digest key) over "enclave version v1" NUL || be64 dataset id || be32 version
 * || its 32-byte manifest. */
#define AUDIT_VERSIONS_DIGEST_LEN 32
#define AUDIT_MANIFEST_LEN 32
void audit_version_hash(const uint8_t key[static AUDIT_SEAL_KEY_LEN], uint64_t dataset_id,
			uint32_t version, const uint8_t manifest[static AUDIT_MANIFEST_LEN],
			uint8_t out[static AUDIT_VERSIONS_DIGEST_LEN]);
/* Replay the versions records of the log in dir (opened with store_key): *ret_state is a JSON
 * object {"<dataset id>": {"name": NAME, "v": {"<version>": {"m": MANIFEST_HEX, "seq": SEQ}}}}
 * of every version a committed import or a baseline names and no later "aborted" record of the
 * same version withdraws. *ret_records (may be NULL): versions records seen. */
int audit_versions_replay(const char *dir, const uint8_t store_key[static AUDIT_SEAL_KEY_LEN],
			  json_t **ret_state, uint64_t *ret_records);

/* ---- Upgrade of a log from before sealing (docs/AUDIT.md section 17) ------------------------ */

/* The old log kept whole, encrypted, in the new log's directory. */
#define AUDIT_LEGACY_NAME "legacy.sealed"

struct audit_upgrade_info {
	uint64_t records;                   /* complete lines of the old log */
	uint64_t bytes;                     /* its size up to its last '\n' */
	uint8_t root[32];                   /* their RFC 6962 root */
	uint8_t sha256[32];                 /* SHA-256 of those bytes */
};

/* Stages of audit_upgrade_legacy(), reported to its progress callback (where the upgrade's
 * kill -9 test stops the process). */
enum audit_upgrade_stage {
	AUDIT_UPGRADE_STARTED = 1,   /* new_dir created, nothing in it yet */
	AUDIT_UPGRADE_LEGACY,        /* AUDIT_LEGACY_NAME written and synced */
	AUDIT_UPGRADE_RECORDS,       /* the new log's records appended, not yet signed */
};

struct audit_upgrade_progress {
	void (*fn)(void *ctx, enum audit_upgrade_stage stage);
	void *ctx;
};

/* Build in new_dir (created; must not exist) the log that replaces old_dir (not changed): the old
 * audit.log and checkpoints whole in AUDIT_LEGACY_NAME, encrypted under a random key sealed to
 * each auditor and wrapped under store_key, then a new sealed log (signed with sign_name/seed)
 * whose `log_upgrade` record names the old log's records, root, bytes and SHA-256, and a
 * checkpoint of it. p (may be NULL) is told each stage. The caller switches new_dir in place
 * (crash-safe) or removes it. */
int audit_upgrade_legacy(const char *old_dir, const char *new_dir,
			 const uint8_t store_key[static AUDIT_SEAL_KEY_LEN],
			 const uint8_t (*auditors)[AUDIT_AUDITOR_KEY_LEN], size_t nauditors,
			 const char *sign_name, const uint8_t seed[static 32],
			 const struct audit_upgrade_progress *p,
			 struct audit_upgrade_info *ret_info);
/* Decrypt a legacy file into out_dir (created): audit.log and checkpoints, byte for byte, with
 * the store key or an auditor's secret key file (either may be NULL). -ENOKEY not sealed to the
 * key given; -EBADMSG altered or cut short. */
int audit_legacy_open(const char *file, const uint8_t *store_key, const char *auditor_key_file,
		      const char *out_dir);

/* ---- Checkpoints and proofs (docs/AUDIT.md) ------------------------------------------------- */

/* Longest interval between two periodic checkpoints. */
#define AUDIT_CHECKPOINT_INTERVAL_MAX 86400u
/* Default interval (seconds): enclave.conf's checkpoint_interval. */
#define AUDIT_CHECKPOINT_INTERVAL_DEFAULT 60u

/* Give the log its Ed25519 signing key: seed (32 bytes, borrowed; the caller wipes its copy) and
 * the key name, which is also every checkpoint's origin line (C2SP key name rules: no spaces, no
 * '+'). The secret key is kept in guarded, read-only memory, wiped by audit_close(). */
int audit_signer_set(struct audit_log *log, const char *name, const uint8_t seed[static 32]);
/* Forget the key (wiped). */
void audit_signer_clear(struct audit_log *log);
/* The signer's verifier key, "name+hexid+base64(0x01||pk)" (malloc'd). -ENOKEY no signer. */
int audit_verifier_key(struct audit_log *log, char **ret_text);
/* Sign another note (text: a valid note text, len bytes) with the log's key, as note_sign()
 * does (audit/note.h): the primary's signals to its nodes (daemon/node_signal.c), which the
 * nodes check against the same verifier key the auditors hold. -ENOKEY no signer. */
int audit_sign_note(struct audit_log *log, const char *text, size_t len, char **ret_note,
		    size_t *ret_len);
/* Sign a checkpoint of every durable record now, append it to <dir>/checkpoints and make it
 * durable; *ret_note (may be NULL; malloc'd, NUL-terminated) is the signed note, *ret_len its
 * length. -ENOKEY no signer; -EIO the log failed for good, or the file could not be written. */
int audit_checkpoint(struct audit_log *log, char **ret_note, size_t *ret_len);
/* Sign a checkpoint every interval_s seconds (1..AUDIT_CHECKPOINT_INTERVAL_MAX) from a thread,
 * whether or not records were appended: a run of checkpoints at one size proves silence. */
int audit_checkpointer_start(struct audit_log *log, unsigned interval_s);
/* Stop that thread and sign a last checkpoint. Safe if it never started (then nothing is
 * signed); audit_close() calls it. */
void audit_checkpointer_stop(struct audit_log *log);
/* An inclusion proof of record seq, in the C2SP tlog-proof form, against the last checkpoint
 * (a new one is signed when the last does not cover seq), read from the tree files (no log scan).
 * ret_line (may be NULL) gets the record's exact line (without '\n'; its leaf is
 * SHA-256(0x00 || line)). All malloc'd. -ENOENT no such record; -ENOKEY no signer; -EIO the tree
 * files could not be kept (restart to rebuild). */
int audit_prove(struct audit_log *log, uint64_t seq, char **ret_proof, size_t *ret_proof_len,
		char **ret_line, size_t *ret_line_len);

/* One file of an export: a private read-only snapshot (an unnamed file, not the live one) of
 * the first len bytes of the log's file called name. */
struct audit_export_file {
	char name[96];      /* "audit.log", "checkpoints", "tree/offsets", "tree/L00", "tree/state";
			       a node's: "nodes/NAME/checkpoints", "nodes/NAME/audit.log" */
	int fd;             /* O_RDONLY; owned by the caller (audit_export_close()) */
	uint64_t len;       /* its length: copy it whole */
};
#define AUDIT_EXPORT_FILES_MAX (2 + 2 + 64)
/* Sign a checkpoint of every durable record now, and snapshot the log's files as one consistent,
 * byte-exact copy that `enclavectl audit verify` checks offline: audit.log up to the records
 * signed, the checkpoints file (ending with that checkpoint), and the tree files cut to those
 * records (left out when the tree is broken; they are derived data). *ret_n files, *ret_count
 * records. The snapshots live in the audit directory's file system until their descriptors are
 * closed. -ENOKEY no signer; -EIO the log failed; -errno a snapshot could not be made. */
int audit_export(struct audit_log *log,
		 struct audit_export_file files[static AUDIT_EXPORT_FILES_MAX], size_t *ret_n,
		 uint64_t *ret_count);
/* Close the descriptors of n files. */
void audit_export_close(struct audit_export_file *files, size_t n);
/* A compute node's log, <audit_dir>/nodes/NAME, as the primary sees it while the node may be
 * writing it: snapshots of its checkpoints file first and then of its audit.log cut at the last
 * complete line, so that every checkpoint copied covers only records copied. files gets 1 or 2
 * (no checkpoints file yet: only the log), named "nodes/NAME/...". -EINVAL a bad name; -ENOENT
 * no log there; -errno a snapshot could not be made. */
#define AUDIT_EXPORT_NODE_FILES 2
int audit_export_node(const char *audit_dir, const char *name,
		      struct audit_export_file files[static AUDIT_EXPORT_NODE_FILES],
		      size_t *ret_n);
