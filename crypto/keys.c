/* crypto: library start-up, process hardening, random bytes, keys and key wrapping. */
#include "crypto/crypto.h"

#include <sys/prctl.h>
#include <sys/resource.h>

#include <openssl/crypto.h>
#include <sodium.h>

#include "common/common.h"

/* The 24-byte XChaCha20 nonce leads a wrapped key, then the ciphertext, then the tag. */
#define WRAP_NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define WRAP_CT_OFF WRAP_NONCE_LEN
#define WRAP_TAG_OFF (WRAP_CT_OFF + CRYPTO_KEY_LEN)

_Static_assert(WRAP_TAG_OFF + crypto_aead_xchacha20poly1305_ietf_ABYTES == CRYPTO_WRAPPED_KEY_LEN,
	       "wrapped key layout");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == CRYPTO_KEY_LEN, "key size");

struct crypto_key {
	uint8_t *bytes;	/* CRYPTO_KEY_LEN bytes, sodium_malloc, read-only once filled; owned */
};

/* Both libraries guard their own initialisation with a lock and return success when already
 * initialised, so calling them every time is idempotent and thread-safe without a pthread_once. */
int crypto_init(void)
{
	if (sodium_init() < 0)
		return -EIO;
	if (OPENSSL_init_crypto(0, NULL) != 1)
		return -EIO;
	return 0;
}

/* Keys live in this process's memory: keep them out of core files and away from ptrace by other
 * processes of the same user (a non-dumpable process can only be traced with CAP_SYS_PTRACE). */
int crypto_harden_process(void)
{
	const struct rlimit no_core = { .rlim_cur = 0, .rlim_max = 0 };

	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return -errno;
	if (setrlimit(RLIMIT_CORE, &no_core) < 0)
		return -errno;
	return 0;
}

/* libsodium reads getrandom(2) and aborts rather than return weak bytes, hence no error path. */
void crypto_random(void *buf, size_t n)
{
	randombytes_buf(buf, n);
}

/* Wrap an already filled guarded buffer in a key, taking ownership of it: it is made read-only
 * here, and freed (wiped) on failure too, so the caller never has to clean up after us. */
static int key_adopt(uint8_t *bytes, crypto_key **ret_key)
{
	crypto_key *key = NULL;

	if (sodium_mprotect_readonly(bytes) < 0)
		goto out_free_bytes;
	key = malloc(sizeof(*key));
	if (!key)
		goto out_free_bytes;
	key->bytes = bytes;
	*ret_key = key;
	return 0;

out_free_bytes:
	sodium_free(bytes);
	return -ENOMEM;
}

/* Random key bytes are generated straight into guarded memory: no copy ever sits elsewhere. */
int crypto_key_generate(crypto_key **ret_key)
{
	uint8_t *bytes = NULL;

	if (!ret_key)
		return -EINVAL;
	bytes = sodium_malloc(CRYPTO_KEY_LEN);
	if (!bytes)
		return -ENOMEM;
	crypto_random(bytes, CRYPTO_KEY_LEN);
	return key_adopt(bytes, ret_key);
}

/* Copies the caller's bytes; the caller still owns (and wipes) its own copy. */
int crypto_key_from_bytes(const uint8_t bytes[static CRYPTO_KEY_LEN], crypto_key **ret_key)
{
	uint8_t *copy = NULL;

	if (!ret_key)
		return -EINVAL;
	copy = sodium_malloc(CRYPTO_KEY_LEN);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, bytes, CRYPTO_KEY_LEN);
	return key_adopt(copy, ret_key);
}

/* Borrowed pointer into the key's read-only guarded page. */
const uint8_t *crypto_key_bytes(const crypto_key *key)
{
	return key->bytes;
}

/* sodium_free makes the page writable again, wipes it and checks the canary before unmapping. */
void crypto_key_free(crypto_key *key)
{
	if (!key)
		return;
	sodium_free(key->bytes);
	free(key);
}

/* BLAKE2b-256 keyed with the parent, over label || 0x00 || context, straight into guarded memory. */
int crypto_key_derive(const crypto_key *parent, const char *label, const uint8_t *context,
		      size_t context_len, crypto_key **ret_key)
{
	crypto_generichash_state st;
	uint8_t *bytes;

	if (!parent || !label || (!context && context_len > 0) || !ret_key)
		return -EINVAL;
	bytes = sodium_malloc(CRYPTO_KEY_LEN);
	if (!bytes)
		return -ENOMEM;
	crypto_generichash_init(&st, parent->bytes, CRYPTO_KEY_LEN, CRYPTO_KEY_LEN);
	crypto_generichash_update(&st, (const uint8_t *)label, strlen(label) + 1);
	if (context_len)
		crypto_generichash_update(&st, context, context_len);
	crypto_generichash_final(&st, bytes, CRYPTO_KEY_LEN);
	sodium_memzero(&st, sizeof(st));
	return key_adopt(bytes, ret_key);
}

/* The nonce is random: 192 bits make collisions negligible even for billions of wrapped keys under
 * one kek. The result is built in a local buffer (ciphertext only, no secret) so ret_wrapped is
 * only written on success. */
int crypto_key_wrap(const crypto_key *kek, const crypto_key *key, const uint8_t *ad, size_t ad_len,
		    uint8_t ret_wrapped[static CRYPTO_WRAPPED_KEY_LEN])
{
	uint8_t wrapped[CRYPTO_WRAPPED_KEY_LEN];

	if (!kek || !key || (!ad && ad_len > 0))
		return -EINVAL;
	crypto_random(wrapped, WRAP_NONCE_LEN);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
		    wrapped + WRAP_CT_OFF, wrapped + WRAP_TAG_OFF, NULL, key->bytes, CRYPTO_KEY_LEN,
		    ad, ad_len, NULL, wrapped, kek->bytes) != 0)
		return -EIO;
	memcpy(ret_wrapped, wrapped, CRYPTO_WRAPPED_KEY_LEN);
	return 0;
}

/* Decrypts straight into guarded memory, so the plaintext key never touches the stack. libsodium
 * checks the tag before it decrypts anything; the buffer is wiped on failure either way. */
int crypto_key_unwrap(const crypto_key *kek, const uint8_t wrapped[static CRYPTO_WRAPPED_KEY_LEN],
		      const uint8_t *ad, size_t ad_len, crypto_key **ret_key)
{
	uint8_t *bytes = NULL;

	if (!kek || !ret_key || (!ad && ad_len > 0))
		return -EINVAL;
	bytes = sodium_malloc(CRYPTO_KEY_LEN);
	if (!bytes)
		return -ENOMEM;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
		    bytes, NULL, wrapped + WRAP_CT_OFF, CRYPTO_KEY_LEN, wrapped + WRAP_TAG_OFF, ad,
		    ad_len, wrapped, kek->bytes) != 0) {
		sodium_free(bytes);
		return -EBADMSG;
	}
	return key_adopt(bytes, ret_key);
}
