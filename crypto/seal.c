/* crypto: subkeys, sealed records and keyed name hashes, for the sealed index (docs/FORMAT.md
 * "Sealed values").
 *
 * A record is sealed with XChaCha20-Poly1305 (IETF) under a random 192-bit nonce, so a key may
 * seal any number of records without a counter to keep; the associated data, chosen by the caller,
 * binds the record to its place. Name hashes are keyed BLAKE2b, so that equal names under two keys
 * do not correlate. The keys come from crypto_key_derive() (keys.c).
 */
#include "crypto/crypto.h"

#include <sodium.h>

#include "common/common.h"

#define SEAL_NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES

_Static_assert(SEAL_NONCE_LEN + crypto_aead_xchacha20poly1305_ietf_ABYTES == CRYPTO_SEAL_OVERHEAD,
	       "sealed value layout");

int crypto_seal(const crypto_key *key, const uint8_t *ad, size_t ad_len, const void *pt,
		size_t len, uint8_t *out)
{
	if (!key || (!ad && ad_len > 0) || (!pt && len > 0))
		return -EINVAL;
	crypto_random(out, SEAL_NONCE_LEN);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
		    out + SEAL_NONCE_LEN, out + SEAL_NONCE_LEN + len, NULL, pt, len, ad, ad_len, NULL,
		    out, crypto_key_bytes(key)) != 0)
		return -EIO;
	return 0;
}

/* libsodium checks the tag before it writes any plaintext, so out holds nothing on failure; it is
 * wiped anyway, for callers that would not look at the return value. */
int crypto_unseal(const crypto_key *key, const uint8_t *ad, size_t ad_len, const uint8_t *in,
		  size_t len, uint8_t *out)
{
	size_t pl;

	if (!key || (!ad && ad_len > 0) || len < CRYPTO_SEAL_OVERHEAD)
		return key ? -EBADMSG : -EINVAL;
	pl = len - CRYPTO_SEAL_OVERHEAD;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
		    out, NULL, in + SEAL_NONCE_LEN, pl, in + SEAL_NONCE_LEN + pl, ad, ad_len, in,
		    crypto_key_bytes(key)) != 0) {
		sodium_memzero(out, pl);
		return -EBADMSG;
	}
	return 0;
}

void crypto_name_hash(const crypto_key *key, const void *name, size_t len,
		      uint8_t ret_hash[static CRYPTO_NAME_HASH_LEN])
{
	crypto_generichash(ret_hash, CRYPTO_NAME_HASH_LEN, name, len, crypto_key_bytes(key),
			   CRYPTO_KEY_LEN);
}

struct crypto_hasher {
	crypto_generichash_state st;
};

int crypto_hash_new(crypto_hasher **ret_hash)
{
	crypto_hasher *h = sodium_malloc(sizeof(*h));

	if (!h)
		return -ENOMEM;
	crypto_generichash_init(&h->st, NULL, 0, CRYPTO_HASH_LEN);
	*ret_hash = h;
	return 0;
}

void crypto_hash_init_keyed(crypto_hasher *h, const crypto_key *key)
{
	crypto_generichash_init(&h->st, crypto_key_bytes(key), CRYPTO_KEY_LEN, CRYPTO_HASH_LEN);
}

void crypto_hash_update(crypto_hasher *h, const void *p, size_t n)
{
	crypto_generichash_update(&h->st, p, n);
}

void crypto_hash_final(crypto_hasher *h, uint8_t ret_digest[static CRYPTO_HASH_LEN])
{
	crypto_generichash_final(&h->st, ret_digest, CRYPTO_HASH_LEN);
}

void crypto_hash_free(crypto_hasher *h)
{
	if (h)
		sodium_free(h);
}
