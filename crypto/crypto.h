/* crypto: key hierarchy, key wrapping, chunked AEAD, secure memory.
 *
 * Key hierarchy (docs/FORMAT.md, "Keys"):
 *   passphrase --Argon2id--> KEK --XChaCha20-Poly1305--> master key (file keys/master.key)
 *   master key  --XChaCha20-Poly1305--> dataset key (index, dataset record)
 *   dataset key --XChaCha20-Poly1305--> object key  (index, inode record)
 *   object key  --AES-256-GCM or ChaCha20-Poly1305--> chunks of one object
 *
 * Every key lives in the key slab (locked, guarded, not dumped) and is wiped when freed; other
 * secrets (passphrases, the master key's KEK) in sodium_malloc memory.
 * Contract: functions that act return 0 (or a positive count) on success and -errno on failure;
 * outputs are ret_* parameters, last, untouched on failure. Nothing here prints or exits.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRYPTO_KEY_LEN 32
#define CRYPTO_TAG_LEN 16
#define CRYPTO_OBJECT_ID_LEN 16
/* Wrapped key: nonce (24) || ciphertext (32) || tag (16), XChaCha20-Poly1305. */
#define CRYPTO_WRAPPED_KEY_LEN 72
/* Chunk sizes: a power of two in [CRYPTO_CHUNK_MIN, CRYPTO_CHUNK_MAX]. */
#define CRYPTO_CHUNK_MIN 4096u
#define CRYPTO_CHUNK_MAX (4u << 20)
#define CRYPTO_CHUNK_DEFAULT (64u << 10)
/* Associated data of a chunk: object id (16) || chunk index (u64 BE) || last flag (u8). */
#define CRYPTO_CHUNK_AD_LEN 25
/* Size of the master key file, bytes. */
#define CRYPTO_MASTER_FILE_LEN 120
/* Longest passphrase accepted, bytes. */
#define CRYPTO_PASSPHRASE_MAX 1024

/* Initialise libsodium and OpenSSL. Idempotent and thread-safe. -EIO if either fails. */
int crypto_init(void);

/* Make this process non-dumpable (PR_SET_DUMPABLE 0) and disable core files (RLIMIT_CORE 0),
 * so keys in memory do not reach a core file or ptrace by another user. -errno. */
int crypto_harden_process(void);

/* Fill buf with n bytes of cryptographic randomness. Requests of up to 64 bytes come from a
 * per-thread pool filled from a ChaCha20 keystream with fast key erasure, keyed from getrandom
 * and rekeyed from it every 256 refills and after a fork (locked, not dumped, wiped on fork;
 * each byte wiped once handed out: crypto/keys.c); larger ones from getrandom. Thread-safe.
 * Cannot fail after crypto_init(). */
void crypto_random(void *buf, size_t n);

/* ---- Keys ---------------------------------------------------------------------------------- */

/* A 256-bit secret key: one slot of the process's key slab (crypto/keys.c): memory mapped once
 * with guard pages, locked, excluded from core dumps, the slot wiped when
 * the key is freed. Opaque. Creating a key fails with -EMFILE when the slab's cap of live keys
 * is reached (crypto_key_slab_limit), with -ENOMEM when no memory can be mapped. */
typedef struct crypto_key crypto_key;

/* Set the cap on live keys (default 65,536; at most 131,072), *ret_old (may be NULL) the cap it
 * replaces. Lowering it below the keys now live only refuses new keys. -EINVAL for 0 or above
 * the maximum. */
int crypto_key_slab_limit(size_t max_keys, size_t *ret_old);
/* Keys live now (for tests and status). */
size_t crypto_key_slab_live(void);

/* A fresh random key. -ENOMEM, -EMFILE. */
int crypto_key_generate(crypto_key **ret_key);
/* A key holding a copy of bytes (for known-answer tests and unwrapping). The caller wipes its own
 * copy. -ENOMEM. */
int crypto_key_from_bytes(const uint8_t bytes[static CRYPTO_KEY_LEN], crypto_key **ret_key);
/* The key's bytes; borrowed, valid until crypto_key_free(). Never log or print them. */
const uint8_t *crypto_key_bytes(const crypto_key *key);
/* Wipe and free. NULL is fine. */
void crypto_key_free(crypto_key *key);

/* A key derived from parent for one purpose: BLAKE2b-256 keyed with parent over label (its NUL
 * included) || context. Distinct labels give independent keys; the parent cannot be recovered
 * from a derived key. -EINVAL; -ENOMEM. */
int crypto_key_derive(const crypto_key *parent, const char *label, const uint8_t *context,
		      size_t context_len, crypto_key **ret_key);

/* ---- Passphrases --------------------------------------------------------------------------- */

/* A passphrase (or any secret byte string) in guarded memory. Opaque. */
typedef struct crypto_secret crypto_secret;

/* Read a passphrase from fd until EOF: at most CRYPTO_PASSPHRASE_MAX bytes (-E2BIG beyond), one
 * trailing "\n" or "\r\n" removed, -EINVAL if empty after that. The read buffer is wiped. */
int crypto_passphrase_read_fd(int fd, crypto_secret **ret_secret);
/* Open path (O_RDONLY|O_CLOEXEC|O_NOFOLLOW) and read it as above. A file that is readable or
 * writable by group or other is refused with -EPERM: the passphrase must be private. -errno. */
int crypto_passphrase_read_file(const char *path, crypto_secret **ret_secret);
/* Prompt on /dev/tty with echo off; with confirm, ask twice and fail with -EINVAL on mismatch.
 * -ENXIO when there is no terminal. Terminal settings are restored on every path. */
int crypto_passphrase_prompt(const char *prompt, bool confirm, crypto_secret **ret_secret);
/* Borrowed until crypto_secret_free(). */
const uint8_t *crypto_secret_data(const crypto_secret *s);
size_t crypto_secret_len(const crypto_secret *s);
/* Wipe and free. NULL is fine. */
void crypto_secret_free(crypto_secret *s);

/* ---- Master key file ----------------------------------------------------------------------- */

/* Argon2id cost of deriving the key-encryption key from the passphrase. */
struct crypto_kdf_params {
	uint64_t opslimit;  /* crypto_pwhash opslimit (passes) */
	uint64_t memlimit;  /* crypto_pwhash memlimit (bytes) */
};
/* Production cost: crypto_pwhash_OPSLIMIT_MODERATE / MEMLIMIT_MODERATE (3 passes, 256 MiB). */
struct crypto_kdf_params crypto_kdf_params_default(void);
/* The smallest cost libsodium allows; for tests only. */
struct crypto_kdf_params crypto_kdf_params_min(void);

/* Generate a master key and store it wrapped under pass in a new file `name` in dirfd:
 * created O_CREAT|O_EXCL|O_NOFOLLOW mode 0600, written in full, fsynced, directory fsynced.
 * -EEXIST if the file exists (nothing is overwritten); -EINVAL for params outside the accepted
 * range; on any failure no file is left behind. On success *ret_master holds the new key. */
int crypto_master_create(int dirfd, const char *name, const crypto_secret *pass,
			 const struct crypto_kdf_params *params, crypto_key **ret_master);
/* Read `name` in dirfd (read-only; the file is never modified) and unwrap the master key.
 * -ENOENT no file; -EBADMSG a malformed file (size, magic, version, algorithm, or KDF params
 * outside the accepted range, so a hostile file cannot make us spend unbounded memory);
 * -EKEYREJECTED when the passphrase is wrong (or the wrapped key was altered). */
int crypto_master_unlock(int dirfd, const char *name, const crypto_secret *pass,
			 crypto_key **ret_master);

/* ---- SHA-256 over a stream ---------------------------------------------------------------- */

/* SHA-256 of a stream, on OpenSSL's (SHA-NI where the CPU has it): for digests of whole files,
 * where libsodium's portable SHA-256 is the bottleneck (120 MB/s against 1.7 GB/s on the test
 * machine). Opaque; one per stream, not shared between threads. */
typedef struct crypto_sha256 crypto_sha256;
/* -ENOMEM. */
int crypto_sha256_new(crypto_sha256 **ret_h);
/* Add n bytes. -EIO if OpenSSL fails (it does not, for a context made here). */
int crypto_sha256_update(crypto_sha256 *h, const void *p, size_t n);
/* The digest of everything added; h may not be updated after. -EIO. */
int crypto_sha256_final(crypto_sha256 *h, uint8_t ret[static 32]);
/* NULL is fine. */
void crypto_sha256_free(crypto_sha256 *h);

/* ---- Key wrapping -------------------------------------------------------------------------- */

/* Wrap key under kek with XChaCha20-Poly1305, random nonce, associated data ad (may be NULL when
 * ad_len is 0). The ad binds the wrapped key to its place (docs/FORMAT.md), so a wrapped key
 * copied to another record does not unwrap. */
int crypto_key_wrap(const crypto_key *kek, const crypto_key *key, const uint8_t *ad, size_t ad_len,
		    uint8_t ret_wrapped[static CRYPTO_WRAPPED_KEY_LEN]);
/* -EBADMSG when the tag does not verify (wrong kek, wrong ad, altered bytes). */
int crypto_key_unwrap(const crypto_key *kek, const uint8_t wrapped[static CRYPTO_WRAPPED_KEY_LEN],
		      const uint8_t *ad, size_t ad_len, crypto_key **ret_key);
/* The key wrapped in `wrapped` under from (associated data from_ad) wrapped again under to
 * (to_ad), as crypto_key_unwrap() then crypto_key_wrap() would, into ret_wrapped (written only on
 * success). The plaintext key passes only through scratch, a key of the caller's (any key: its
 * bytes are overwritten, and wiped before the call returns on every path, so it holds no key
 * afterwards): a thread that moves many keys takes one slot of the key slab for all of them.
 * -EBADMSG: `wrapped` does not unwrap; -EIO: the new wrapping failed. */
int crypto_key_rewrap(const crypto_key *from, const uint8_t wrapped[static CRYPTO_WRAPPED_KEY_LEN],
		      const uint8_t *from_ad, size_t from_ad_len, const crypto_key *to,
		      const uint8_t *to_ad, size_t to_ad_len, crypto_key *scratch,
		      uint8_t ret_wrapped[static CRYPTO_WRAPPED_KEY_LEN]);

/* ---- Subkeys, sealed records, name hashes (crypto/seal.c) ----------------------------------- */

/* A sealed value: nonce (24) || ciphertext (as long as the plaintext) || tag (16). */
#define CRYPTO_SEAL_OVERHEAD 40
/* Keyed name hashes are this long (BLAKE2b-128). */
#define CRYPTO_NAME_HASH_LEN 16

/* Seal len bytes of pt into out (len + CRYPTO_SEAL_OVERHEAD bytes) with XChaCha20-Poly1305 under
 * a random nonce; ad binds the sealed value to its place. pt and out must not overlap. */
int crypto_seal(const crypto_key *key, const uint8_t *ad, size_t ad_len, const void *pt,
		size_t len, uint8_t *out);
/* Open a sealed value of len bytes into out (len - CRYPTO_SEAL_OVERHEAD bytes). -EBADMSG when it
 * is too short or the tag does not verify with this key and ad; out is then zeroed. */
int crypto_unseal(const crypto_key *key, const uint8_t *ad, size_t ad_len, const uint8_t *in,
		  size_t len, uint8_t *out);
/* Keyed BLAKE2b-128 of a name: equal names under one key give equal hashes, and nothing about the
 * name can be learnt from the hash without the key. */
void crypto_name_hash(const crypto_key *key, const void *name, size_t len,
		      uint8_t ret_hash[static CRYPTO_NAME_HASH_LEN]);

/* ---- Keyed BLAKE2b of many short messages under one key (crypto/blake2b.c) ----------------- */

/* A key for crypto_mac(): keyed BLAKE2b (RFC 7693) with the key's block compressed once, so a
 * message of up to 128 bytes costs one compression instead of two. The digest is byte for byte
 * libsodium's keyed BLAKE2b, crypto_generichash(out, out_len, msg, len, key, CRYPTO_KEY_LEN):
 * what crypto_name_hash() (out_len CRYPTO_NAME_HASH_LEN) and crypto_hash_init_keyed()
 * (CRYPTO_HASH_LEN) give. In guarded memory (the state after the key block is as secret as the
 * key); only read once made, so several threads may use one. */
typedef struct crypto_mac_key crypto_mac_key;
/* out_len: 1 to 64. The key is copied into the state, not kept. -EINVAL; -ENOMEM. */
int crypto_mac_key_new(const crypto_key *key, size_t out_len, crypto_mac_key **ret_mk);
/* Wipe and free. NULL is fine. */
void crypto_mac_key_free(crypto_mac_key *mk);
/* The keyed digest of len bytes of msg (NULL when len is 0) into out (out_len bytes). */
void crypto_mac(const crypto_mac_key *mk, const void *msg, size_t len, uint8_t *out);

/* A running BLAKE2b-256 hash (for manifests). */
#define CRYPTO_HASH_LEN 32
typedef struct crypto_hasher crypto_hasher;
/* -ENOMEM. */
int crypto_hash_new(crypto_hasher **ret_hash);
/* (Re)start h as BLAKE2b-256 keyed with key (a MAC: without the key the digest tells nothing of
 * the input, and cannot be computed for a guessed one). Used for content hashes of health data,
 * which must never be a plain hash. */
void crypto_hash_init_keyed(crypto_hasher *h, const crypto_key *key);
void crypto_hash_update(crypto_hasher *h, const void *p, size_t n);
/* The digest; h must not be updated afterwards (free it). */
void crypto_hash_final(crypto_hasher *h, uint8_t ret_digest[static CRYPTO_HASH_LEN]);
/* NULL is fine. */
void crypto_hash_free(crypto_hasher *h);

/* ---- Chunked AEAD -------------------------------------------------------------------------- */

/* Values are stored on disk; never renumber. */
enum crypto_aead {
	CRYPTO_AEAD_AES256GCM = 1,         /* OpenSSL EVP, used where the CPU has AES instructions */
	CRYPTO_AEAD_CHACHA20POLY1305 = 2,  /* RFC 8439 ChaCha20-Poly1305 (OpenSSL EVP), otherwise */
};
/* AES-256-GCM when the CPU has AES-NI (x86) or the AES extension (arm64), else ChaCha20-Poly1305. */
enum crypto_aead crypto_aead_preferred(void);
bool crypto_aead_valid(uint32_t alg);
/* "aes-256-gcm", "chacha20-poly1305", or "unknown". Static string. */
const char *crypto_aead_name(uint32_t alg);
/* Parse the names above; -EINVAL otherwise. */
int crypto_aead_parse(const char *name, enum crypto_aead *ret_alg);

/* Encrypts and decrypts the chunks of one object with its key. Holds its own copy of the key in
 * OpenSSL cipher contexts, which cleanse it on rekey and free. Not thread-safe: use one per
 * thread. Nonce of chunk i: 4 zero bytes || u64 BE i (unique, because each object has its own
 * key and objects are never rewritten). Associated data: crypto_chunk_ad(). */
typedef struct crypto_chunk_ctx crypto_chunk_ctx;

/* -EINVAL unknown alg; -ENOMEM; -EIO an OpenSSL failure. */
int crypto_chunk_ctx_new(enum crypto_aead alg, const crypto_key *object_key,
			 const uint8_t object_id[static CRYPTO_OBJECT_ID_LEN],
			 crypto_chunk_ctx **ret_ctx);
/* Switch an existing context to another object, reusing its allocations. On failure the context
 * holds no key and every encrypt/decrypt fails with -EINVAL until a successful rekey. */
int crypto_chunk_ctx_rekey(crypto_chunk_ctx *ctx, enum crypto_aead alg,
			   const crypto_key *object_key,
			   const uint8_t object_id[static CRYPTO_OBJECT_ID_LEN]);
/* Wipe and free. NULL is fine. */
void crypto_chunk_ctx_free(crypto_chunk_ctx *ctx);

/* Encrypt len bytes (0 <= len <= CRYPTO_CHUNK_MAX) of chunk `index`; `last` marks the final chunk
 * of the object. in and out may be the same buffer (in place), or must not overlap. */
int crypto_chunk_encrypt(crypto_chunk_ctx *ctx, uint64_t index, bool last, const uint8_t *in,
			 size_t len, uint8_t *out, uint8_t ret_tag[static CRYPTO_TAG_LEN]);
/* Decrypt and authenticate. -EBADMSG when the tag does not verify; out is then zeroed, so no
 * unauthenticated plaintext ever leaves this function. in and out may be the same buffer. */
int crypto_chunk_decrypt(crypto_chunk_ctx *ctx, uint64_t index, bool last, const uint8_t *in,
			 size_t len, const uint8_t tag[static CRYPTO_TAG_LEN], uint8_t *out);

/* The associated data of a chunk (exposed for known-answer tests and docs/FORMAT.md). */
void crypto_chunk_ad(const uint8_t object_id[static CRYPTO_OBJECT_ID_LEN], uint64_t index,
		     bool last, uint8_t ret_ad[static CRYPTO_CHUNK_AD_LEN]);

/* ---- ES256 (crypto/es256.c): the GA4GH visa signing key ------------------------------------ */

/* An ECDSA P-256 key pair for JWS ES256 (RFC 7518 section 3.4). Opaque. */
typedef struct crypto_es256 crypto_es256;

/* The key pair a 32-byte seed stands for: the scalar is (seed mod (n - 1)) + 1, so every seed
 * gives a valid key and the same seed the same key. The seed stays the caller's. -ENOMEM, -EIO. */
int crypto_es256_from_seed(const crypto_key *seed, crypto_es256 **ret_key);
/* Clear and free. NULL is fine. */
void crypto_es256_free(crypto_es256 *k);
/* The public point's coordinates, 32 big-endian bytes each (JWK "x" and "y"). */
void crypto_es256_public(const crypto_es256 *k, uint8_t ret_x[static 32],
			 uint8_t ret_y[static 32]);
/* Sign msg: SHA-256, ECDSA, the signature as JWS wants it (r || s, 32 bytes each). -EIO. */
int crypto_es256_sign(const crypto_es256 *k, const void *msg, size_t len,
		      uint8_t ret_sig[static 64]);
/* Verify a JWS ES256 signature by the public key (x, y). 0 valid; -EBADMSG not valid; -EINVAL
 * (x, y) is not a point of P-256. */
int crypto_es256_verify(const uint8_t x[static 32], const uint8_t y[static 32], const void *msg,
			size_t len, const uint8_t sig[static 64]);
