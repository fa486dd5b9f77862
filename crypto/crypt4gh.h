/* crypt4gh: the GA4GH Crypt4GH 1.0 file format (docs/CRYPT4GH.md), read and written with
 * libsodium's primitives: X25519, BLAKE2b-512, ChaCha20-IETF-Poly1305, scrypt.
 *
 * A Crypt4GH file is a header (magic "crypt4gh", version 1, header packets each encrypted to one
 * reader's X25519 key) followed by the data: the plaintext in 65536-byte segments, each sealed
 * with ChaCha20-IETF-Poly1305 under a data key named in the header, with its own 12-byte nonce
 * in front and its 16-byte MAC behind. The header may carry an edit list (which byte ranges of the
 * decrypted data make the file).
 *
 * Secret keys (X25519 scalars and data keys) live in crypto_key slots or sodium_malloc memory and
 * are wiped when freed. Contract as in crypto.h: 0 or a count on success, -errno on failure with
 * err_detail() saying what and where; ret_* outputs last, untouched on failure; nothing prints.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "crypto/crypto.h"

#define C4GH_MAGIC "crypt4gh"
#define C4GH_MAGIC_LEN 8
#define C4GH_VERSION 1u
#define C4GH_KEY_LEN 32
/* Plaintext bytes of a full segment, and what sealing adds to each (nonce 12, MAC 16). */
#define C4GH_SEGMENT 65536u
#define C4GH_SEGMENT_OVERHEAD 28u
#define C4GH_SEGMENT_SEALED (C4GH_SEGMENT + C4GH_SEGMENT_OVERHEAD)
/* Limits on what a file may make us hold (docs/CRYPT4GH.md "Limits"): larger is -E2BIG. */
#define C4GH_HEADER_MAX (1u << 20)     /* header bytes */
#define C4GH_PACKETS_MAX 1024u         /* header packets */
#define C4GH_DATA_KEYS_MAX 16u         /* data keys addressed to us */
#define C4GH_EDITS_MAX 4096u           /* lengths in the edit list */
/* Fixed part of a header packet (length, method, writer key, nonce) and its MAC. */
#define C4GH_PACKET_FIXED 52u
#define C4GH_PACKET_MAC 16u
/* SHA-256 digests (header digests, public key fingerprints). */
#define C4GH_DIGEST_LEN 32

/* Data encryption methods (spec 3.2.3). */
enum c4gh_method {
	C4GH_CHACHA20_IETF_POLY1305 = 0,       /* segments independent */
	C4GH_CHACHA20_IETF_POLY1305_AEAD = 1,  /* each segment bound to its sequence number */
};

/* ---- Keys ---------------------------------------------------------------------------------- */

/* A fresh X25519 key pair: the secret in a key slot, the public key in ret_pk. */
int c4gh_keypair_generate(crypto_key **ret_sk, uint8_t ret_pk[static C4GH_KEY_LEN]);
/* The public key of secret sk (X25519 base point multiplication). */
void c4gh_public_key(const crypto_key *sk, uint8_t ret_pk[static C4GH_KEY_LEN]);
/* The key's fingerprint: SHA-256 of its 32 bytes, as 64 lowercase hex digits and a NUL. */
void c4gh_fingerprint(const uint8_t pk[static C4GH_KEY_LEN], char ret_hex[static 65]);

/* The standard public key file: "-----BEGIN CRYPT4GH PUBLIC KEY-----\n" base64(pk) "\n-----END
 * CRYPT4GH PUBLIC KEY-----\n", NUL-terminated in out (room for 128 bytes). */
#define C4GH_PUBKEY_TEXT_MAX 128
void c4gh_pubkey_format(const uint8_t pk[static C4GH_KEY_LEN], char out[static C4GH_PUBKEY_TEXT_MAX]);
/* Parse a public key file (that text; surrounding white space and CRLF line ends accepted).
 * -EBADMSG not a Crypt4GH public key (with err_detail() saying why). */
int c4gh_pubkey_parse(const char *text, size_t len, uint8_t ret_pk[static C4GH_KEY_LEN]);

/* Parse a private key file: the Crypt4GH format ("-----BEGIN CRYPT4GH PRIVATE KEY-----", the
 * c4gh-v1 encoding, kdf "none", "scrypt", "bcrypt" or "pbkdf2_hmac_sha256", cipher "none" or
 * "chacha20_poly1305"), or an OpenSSH ed25519 key ("-----BEGIN OPENSSH PRIVATE KEY-----",
 * unprotected or with kdf "bcrypt" and an AES-CTR/CBC/GCM or chacha20-poly1305 cipher; converted
 * to its X25519 form as the reference tools do). pass may be NULL for a key that is not
 * encrypted. Everything but the encrypted secret is checked before the passphrase is used, so a
 * call with pass NULL says whether the file is well formed and needs one (-ENOKEY).
 * -ENOKEY the key is encrypted and pass is NULL; -EKEYREJECTED wrong passphrase (or altered);
 * -ENOTSUP a kdf, cipher or key type not supported here, named in err_detail(); -E2BIG kdf
 * rounds over the cap (CRYPTO_BCRYPT_ROUNDS_MAX for bcrypt); -EBADMSG malformed. */
int c4gh_seckey_parse(const char *text, size_t len, const crypto_secret *pass,
		      crypto_key **ret_sk);
/* Does the file need a passphrase (a Crypt4GH key with a cipher other than "none", or an
 * encrypted OpenSSH key)? False for anything malformed (the parse says why). */
bool c4gh_seckey_encrypted(const char *text, size_t len);
/* Write sk as a Crypt4GH private key file: with pass, kdf "scrypt" (N = 2^14, r = 8, p = 1,
 * 16-byte salt) and cipher "chacha20_poly1305"; without, "none" (unprotected). *ret_text is a
 * NUL-terminated string in sodium_malloc memory: free it with sodium_free(). -ENOMEM. */
int c4gh_seckey_format(const crypto_key *sk, const crypto_secret *pass, const char *comment,
		       char **ret_text, size_t *ret_len);

/* ---- Header -------------------------------------------------------------------------------- */

/* The shared key of one header packet (spec 3.3.1): the first 32 bytes of
 * BLAKE2b-512(X25519(own_sk, peer_pk) || reader_pk || writer_pk). The reader passes its own
 * secret and the writer's public key; the writer its own secret and the reader's key (writer =
 * true). -EINVAL when the X25519 result is all zero (a low-order peer key). */
int c4gh_shared_key(const crypto_key *own_sk, const uint8_t peer_pk[static C4GH_KEY_LEN],
		    bool writer, uint8_t ret_key[static C4GH_KEY_LEN]);

/* Seal one header packet for reader_pk from writer_sk: packet_length, method 0, the writer's
 * public key, the nonce (NULL: random), payload encrypted, MAC. out has room for
 * C4GH_PACKET_FIXED + len + C4GH_PACKET_MAC bytes; that many are written. */
int c4gh_packet_seal(const crypto_key *writer_sk, const uint8_t reader_pk[static C4GH_KEY_LEN],
		     const uint8_t *nonce, const uint8_t *payload, size_t len, uint8_t *out);

/* What a writer puts in a header. */
struct c4gh_header_spec {
	const uint8_t (*recipients)[C4GH_KEY_LEN];  /* readers' public keys, 1..C4GH_PACKETS_MAX/2 */
	size_t nrecipients;
	const crypto_key *data_key;                 /* the one data key */
	enum c4gh_method method;
	uint64_t sequence;                          /* AEAD method: the key's sequence number */
	const uint64_t *edits;                      /* NULL: no edit list */
	size_t nedits;
	const crypto_key *writer_sk;                /* NULL: a fresh key pair, discarded after */
};
/* Build a header: magic, version, and for each recipient a data_encryption_parameters packet
 * (and, with edits, a data_edit_list packet). *ret_buf is malloc'd (it holds no secret in the
 * clear). -EINVAL; -E2BIG over the limits; -ENOMEM. */
int c4gh_header_build(const struct c4gh_header_spec *spec, uint8_t **ret_buf, size_t *ret_len);

/* A header read with our secret key: the data keys it gave us, the edit list, where the data
 * begins, its digest. Opaque, in guarded memory. */
typedef struct c4gh_header c4gh_header;

/* Parse the header at the start of buf (the first len bytes of a file) with our secret key sk.
 * Packets that do not open with sk are skipped (they are for other readers), as the spec says.
 * -ENOBUFS the header goes on past len (read more, up to C4GH_HEADER_MAX, and call again);
 * -EBADMSG malformed (bad magic, a length that does not fit, a packet we opened that makes no
 * sense); -ENOTSUP a version, packet encryption or data method we do not know, or mixed methods;
 * -E2BIG over a limit; -ENOKEY no data key was addressed to sk (not for us); -ENOMEM. */
int c4gh_header_parse(const uint8_t *buf, size_t len, const crypto_key *sk,
		      c4gh_header **ret_hdr);
void c4gh_header_free(c4gh_header *h);
/* The header's length in bytes (where the data begins). */
size_t c4gh_header_length(const c4gh_header *h);
/* SHA-256 of the header's bytes (recorded at import: which header, hence which keys). */
void c4gh_header_digest(const c4gh_header *h, uint8_t ret[static C4GH_DIGEST_LEN]);
/* Header packets in all, data keys addressed to us, and whether there is an edit list. */
size_t c4gh_header_packets(const c4gh_header *h);
size_t c4gh_header_keys(const c4gh_header *h);
bool c4gh_header_edited(const c4gh_header *h);
enum c4gh_method c4gh_header_method(const c4gh_header *h);
/* The plaintext size a data part of data_len bytes gives, after the edit list. -EBADMSG a length
 * no sequence of segments has (a cut segment; in AEAD mode, a missing final segment). */
int c4gh_plain_size(const c4gh_header *h, uint64_t data_len, uint64_t *ret_size);

/* ---- Data ---------------------------------------------------------------------------------- */

/* Seal one segment of len (<= C4GH_SEGMENT) bytes: nonce (NULL: random) || ciphertext || MAC into
 * out (len + C4GH_SEGMENT_OVERHEAD bytes). For the AEAD method, aad_seq is the segment's
 * sequence number (the key's plus its index); ignored otherwise. in and out must not overlap. */
int c4gh_segment_seal(const crypto_key *data_key, enum c4gh_method method, uint64_t aad_seq,
		      const uint8_t *nonce, const uint8_t *in, size_t len, uint8_t *out);

/* Decrypts a file's data part in order, through the edit list: the plaintext of the file.
 * Reads with pread from fd (borrowed) from the header's end to file_size. Takes ownership of h. */
typedef struct c4gh_decoder c4gh_decoder;
int c4gh_decoder_new(c4gh_header *h, int fd, uint64_t file_size, c4gh_decoder **ret_dec);
/* The plaintext size (c4gh_plain_size of the data part). */
uint64_t c4gh_decoder_size(const c4gh_decoder *d);
/* The next len bytes of plaintext into buf. Returns the bytes given: len, less only at the end,
 * 0 at the end, once every remaining segment has been authenticated too. No byte of a segment
 * that does not authenticate is ever given.
 * -EBADMSG a segment that does not authenticate under any of our data keys (err_detail() names
 * it); -ENODATA the file is shorter than when it was opened; -EIO or -errno a read failed.
 * Errors are sticky. */
ssize_t c4gh_decoder_read(c4gh_decoder *d, void *buf, size_t len);
/* Wipe and free (the header with it). NULL is fine. */
void c4gh_decoder_free(c4gh_decoder *d);

/* Encrypts plaintext for recipients: the header once, then segments in order. */
typedef struct c4gh_encoder c4gh_encoder;
/* A fresh data key and writer key; the header for the n recipients into *ret_hdr (malloc'd). */
int c4gh_encoder_new(const uint8_t (*recipients)[C4GH_KEY_LEN], size_t n,
		     c4gh_encoder **ret_enc, uint8_t **ret_hdr, size_t *ret_hdr_len);
/* Seal the next segment (len <= C4GH_SEGMENT; only the last may be shorter) into out
 * (len + C4GH_SEGMENT_OVERHEAD). */
int c4gh_encoder_segment(c4gh_encoder *e, const uint8_t *in, size_t len, uint8_t *out);
void c4gh_encoder_free(c4gh_encoder *e);
