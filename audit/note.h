/* note: C2SP signed notes, tlog checkpoints and tlog proofs, the text formats of the audit log's
 * signed tree heads (https://c2sp.org/signed-note, c2sp.org/tlog-checkpoint, c2sp.org/tlog-proof;
 * the Go reference is golang.org/x/mod/sumdb/note). Ed25519 through libsodium.
 *
 * A signed note is
 *
 *     text (one or more non-empty lines, each ending in '\n', valid UTF-8, no control characters
 *           but '\n')
 *     "\n" (one blank line)
 *     signature lines: "\u2014 " name " " base64(keyid[4] || signature[64]) "\n"
 *
 * where name is a key name (non-empty, no Unicode space, no '+', valid UTF-8, no control
 * characters) and keyid = the first 4 bytes (big-endian) of SHA-256(name || "\n" || 0x01 || pk).
 * A verifier key is written "name+hexid+base64(0x01 || pk)" with hexid 8 lowercase hex digits.
 *
 * Contract: functions that act return 0 or -errno, with err_detail() saying what is wrong with
 * the text; ret_* outputs are last and untouched on failure. Allocated outputs are the caller's
 * to free(). Every parser here takes a length, never needs a NUL, reads nothing past len, and
 * refuses input longer than its cap with -EBADMSG (or -E2BIG where noted).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit/merkle.h"

/* Longest signed note accepted or written (text and signatures). Longer is -EBADMSG. */
#define NOTE_MAX (8u * 1024)
/* Longest key name in bytes. */
#define NOTE_NAME_MAX 255
/* Most signature lines in one note (witness cosignatures are the other signers we ignore). */
#define NOTE_SIGS_MAX 100
/* Ed25519 sizes (crypto_sign_PUBLICKEYBYTES, crypto_sign_SECRETKEYBYTES, crypto_sign_BYTES). */
#define NOTE_PK_LEN 32
#define NOTE_SK_LEN 64
#define NOTE_SIG_LEN 64
/* The signature algorithm byte of an Ed25519 key. */
#define NOTE_ALG_ED25519 0x01

/* A parsed verifier key. Plain data, no destructor. */
struct note_verifier {
	char name[NOTE_NAME_MAX + 1];  /* the key name, NUL-terminated */
	uint32_t id;                   /* its key id (note_key_id(name, pk)) */
	uint8_t pk[NOTE_PK_LEN];       /* the Ed25519 public key */
};

/* True if name (NUL-terminated) is a valid key name: 1..NOTE_NAME_MAX bytes of valid UTF-8,
 * no control character, no space (Unicode White_Space), no '+'. */
bool note_name_valid(const char *name);
/* The key id: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || pk), big-endian. name is
 * NUL-terminated; it is not checked here. */
uint32_t note_key_id(const char *name, const uint8_t pk[static NOTE_PK_LEN]);
/* "name+hexid+base64(0x01||pk)" (NUL-terminated, no newline) in *ret_text, malloc'd.
 * -EINVAL invalid name; -ENOMEM. */
int note_verifier_format(const char *name, const uint8_t pk[static NOTE_PK_LEN], char **ret_text);
/* Parse a verifier key of exactly len bytes (no trailing newline: callers reading a file strip
 * it first). Strict: valid name, 8 lowercase hex digits equal to the id computed from name and
 * key, canonical standard base64 of exactly 33 bytes starting with 0x01. -EBADMSG otherwise,
 * err_detail() saying which part is wrong. */
int note_verifier_parse(const char *text, size_t len, struct note_verifier *ret);

/* Sign text (len bytes: a valid note text, ending in '\n', no blank line) with the Ed25519 key
 * sk (libsodium's 64 bytes, seed || pk; borrowed, in the caller's sodium_malloc memory: nothing
 * derived from it is left in memory of ours) under key name `name`. *ret_note (malloc'd, also
 * NUL-terminated) is text, "\n" and the one signature line; *ret_len its length.
 * -EINVAL invalid name or text; -E2BIG the note would exceed NOTE_MAX; -ENOMEM. */
int note_sign(const char *text, size_t len, const char *name, const uint8_t sk[static NOTE_SK_LEN],
	      char **ret_note, size_t *ret_len);
/* Check the note (len bytes) against verifier v: the text is the note's first *ret_text_len
 * bytes (ending in '\n'); *ret_other_sigs (may be NULL) is how many signature lines are by keys
 * other than v (ignored, as the spec says). Errors, distinct on purpose:
 *   -EBADMSG      malformed (shape, UTF-8, base64, a signature shorter than 5 bytes, too long,
 *                 too many signatures);
 *   -ENOKEY       well formed but no signature line with v's name and key id (err_detail() names
 *                 the signers it has);
 *   -EKEYREJECTED a signature with v's name and id that does not verify (a forgery or damage).
 * Outputs only on success. */
int note_open(const char *note, size_t len, const struct note_verifier *v, size_t *ret_text_len,
	      unsigned *ret_other_sigs);

/* ---- tlog-checkpoint ---------------------------------------------------------------------- */

/* Longest origin line in bytes. */
#define CHECKPOINT_ORIGIN_MAX 255

/* A checkpoint: the body of a signed note
 *     origin "\n" size (decimal, no leading zeros) "\n" base64(root) "\n" extension lines
 * Enclave always writes exactly one extension line, "time " RFC 3339 UTC with nine fraction
 * digits and "Z" (the signing time: a checkpoint signed while nothing was appended proves the
 * log was silent, not cut). Plain data. */
struct checkpoint {
	char origin[CHECKPOINT_ORIGIN_MAX + 1];  /* NUL-terminated; the log's name */
	uint64_t size;                           /* tree size: records covered */
	uint8_t root[MERKLE_HASH_LEN];           /* MTH of those records */
	int64_t time_ns;                         /* the "time" extension; 0 if absent */
};

/* The note text of c (NUL-terminated in *ret_text, malloc'd; *ret_len its length), with the time
 * line. -EINVAL origin empty, too long or with control characters, or time_ns <= 0 (Enclave
 * always writes the time); -ENOMEM. */
int checkpoint_format(const struct checkpoint *c, char **ret_text, size_t *ret_len);
/* Parse a checkpoint note text (what note_open() vouched for: len bytes, ending in '\n').
 * Strict: origin non-empty, at most CHECKPOINT_ORIGIN_MAX bytes, no control characters; size
 * decimal without leading zeros (except "0") fitting in uint64; root canonical base64 of exactly
 * 32 bytes; extension lines non-empty; a "time " line at most once and in the format above.
 * Unknown extension lines are allowed and ignored. -EBADMSG otherwise. */
int checkpoint_parse(const char *text, size_t len, struct checkpoint *ret);
/* checkpoint_format() then note_sign(): the signed checkpoint note in *ret_note (malloc'd,
 * NUL-terminated), its length in *ret_len. Errors of both. */
int checkpoint_sign(const struct checkpoint *c, const char *name,
		    const uint8_t sk[static NOTE_SK_LEN], char **ret_note, size_t *ret_len);
/* note_open() then checkpoint_parse(), then the checkpoint's origin must be v's name (the log
 * the key names; a key's signature on another log's checkpoint is not this log's): the errors of
 * the first two, -EBADMSG for another origin. *ret untouched on failure. */
int checkpoint_open(const char *note, size_t len, const struct note_verifier *v,
		    struct checkpoint *ret);

/* ---- The checkpoints file ----------------------------------------------------------------- */

/* <logdir>/checkpoints: the daemon appends each signed checkpoint note followed by one extra
 * "\n", so a blank line separates notes; sizes never decrease. */
#define CHECKPOINTS_FILE_NAME "checkpoints"

/* Called with each complete note (its bytes without the separating "\n", borrowed for the call)
 * and its 0-based index in the file. A non-zero return stops the walk and is returned. */
typedef int (*checkpoints_fn)(void *ctx, const char *note, size_t len, uint64_t index);

/* Read the checkpoints file at path (O_RDONLY | O_CLOEXEC | O_NOFOLLOW; memory bounded by
 * NOTE_MAX) and call fn for each note. A final note without its separator (a write torn by a
 * crash, or one being written now) is not passed on: its bytes are counted in *ret_torn_bytes
 * (may be NULL; 0 when none). -EBADMSG the file is not a sequence of notes (a note longer than
 * NOTE_MAX, a line that is neither text nor signature where one belongs), with err_detail()
 * naming the file, the note index and the byte offset; -errno open/read; fn's return. A file
 * that does not exist is -ENOENT. */
int checkpoints_foreach(const char *path, checkpoints_fn fn, void *ctx, uint64_t *ret_torn_bytes);

/* ---- tlog-proof --------------------------------------------------------------------------- */

/* Longest tlog-proof text accepted or written: the header, index, 64 hashes, one note. */
#define TLOG_PROOF_MAX (NOTE_MAX + 4096)
/* Its first line. */
#define TLOG_PROOF_HEADER "c2sp.org/tlog-proof@v1"

/* A parsed tlog proof (https://c2sp.org/tlog-proof):
 *     c2sp.org/tlog-proof@v1
 *     [extra <base64>]
 *     index <decimal, no leading zeros>
 *     <base64 hash>   zero or more, the leaf's sibling first (RFC 6962 2.1.1 order)
 *     (blank line)
 *     <signed checkpoint note, verbatim>
 * Pointers borrow from the text given to tlog_proof_parse(). */
struct tlog_proof {
	uint64_t index;                                   /* the leaf index (the record's seq) */
	size_t n;                                         /* hashes in proof */
	uint8_t proof[MERKLE_PROOF_MAX][MERKLE_HASH_LEN]; /* the inclusion proof */
	const char *extra;      /* base64 text of the "extra" line (unauthenticated), or NULL */
	size_t extra_len;       /* its length */
	const char *note;       /* the signed checkpoint note; borrowed from the parsed text */
	size_t note_len;        /* its length (to the end of the text) */
};

/* Write a proof: *ret_text (malloc'd, NUL-terminated, *ret_len bytes). note is the signed
 * checkpoint exactly as signed (borrowed). No extra line is written. -EINVAL n >
 * MERKLE_PROOF_MAX or an empty note; -E2BIG longer than TLOG_PROOF_MAX; -ENOMEM. */
int tlog_proof_format(uint64_t index, const uint8_t proof[][MERKLE_HASH_LEN], size_t n,
		      const char *note, size_t note_len, char **ret_text, size_t *ret_len);
/* Parse (strict, as above; the note itself is checked by tlog_proof_verify()). *ret borrows
 * from text. -EBADMSG malformed, with err_detail(). */
int tlog_proof_parse(const char *text, size_t len, struct tlog_proof *ret);
/* Parse the proof, open its checkpoint with v, and check that the leaf hash `leaf` is at its
 * index in the checkpoint's tree. On success *ret_cp is the checkpoint and *ret_index the index
 * (both may be NULL). -EBADMSG malformed or the inclusion proof does not verify; the errors of
 * checkpoint_open() for the signature. */
int tlog_proof_verify(const char *text, size_t len, const struct note_verifier *v,
		      const uint8_t leaf[static MERKLE_HASH_LEN], struct checkpoint *ret_cp,
		      uint64_t *ret_index);
