/* crypto: chunked AEAD for object data, both ciphers through OpenSSL EVP: AES-256-GCM where the
 * CPU has AES instructions, ChaCha20-Poly1305 (RFC 8439) otherwise. Nonce of chunk i = 0^32 ||
 * u64 BE i, associated data = object id || u64 BE i || last flag (crypto_chunk_ad).
 *
 * Why OpenSSL for ChaCha20-Poly1305 too (DESIGN.md named libsodium): measured on our machines,
 * OpenSSL 3.0's AVX-512 ChaCha20-Poly1305 runs about 3.7 GB/s per core against libsodium 1.0.18's
 * 1.4 GB/s (docs/PERFORMANCE.md), and one EVP code path serves both ciphers. The bytes are the
 * same either way; test_crypto checks them against libsodium's implementation. */
#include "crypto/crypto.h"

#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include <openssl/evp.h>
#include <sodium.h>

#include "common/common.h"

#define CHUNK_NONCE_LEN 12

_Static_assert(CRYPTO_CHUNK_MAX <= INT32_MAX, "EVP lengths are int");

struct crypto_chunk_ctx {
	uint32_t alg;		/* enum crypto_aead of the current key; 0 = no key (rekey failed) */
	uint8_t object_id[CRYPTO_OBJECT_ID_LEN];	/* bound into every chunk's AD */
	EVP_CIPHER_CTX *enc;	/* encryption, key set once per object; NULL until needed */
	EVP_CIPHER_CTX *dec;	/* decryption, same key; NULL until needed */
};

/* x86: AES-NI plus PCLMULQDQ (GHASH); arm64: the AES and PMULL extensions. Without them OpenSSL's
 * constant-time AES is several times slower than ChaCha20. */
enum crypto_aead crypto_aead_preferred(void)
{
#if defined(__x86_64__) || defined(__i386__)
	if (__builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul"))
		return CRYPTO_AEAD_AES256GCM;
#elif defined(__aarch64__)
	unsigned long hwcap = getauxval(AT_HWCAP);

	if ((hwcap & HWCAP_AES) && (hwcap & HWCAP_PMULL))
		return CRYPTO_AEAD_AES256GCM;
#endif
	return CRYPTO_AEAD_CHACHA20POLY1305;
}

/* Takes uint32_t because the value comes from disk. */
bool crypto_aead_valid(uint32_t alg)
{
	return alg == CRYPTO_AEAD_AES256GCM || alg == CRYPTO_AEAD_CHACHA20POLY1305;
}

/* Static strings; these names are also what crypto_aead_parse accepts. */
const char *crypto_aead_name(uint32_t alg)
{
	switch (alg) {
	case CRYPTO_AEAD_AES256GCM:
		return "aes-256-gcm";
	case CRYPTO_AEAD_CHACHA20POLY1305:
		return "chacha20-poly1305";
	default:
		return "unknown";
	}
}

/* Exact, case-sensitive match of a crypto_aead_name() result. */
int crypto_aead_parse(const char *name, enum crypto_aead *ret_alg)
{
	if (!name || !ret_alg)
		return -EINVAL;
	if (strcmp(name, "aes-256-gcm") == 0)
		*ret_alg = CRYPTO_AEAD_AES256GCM;
	else if (strcmp(name, "chacha20-poly1305") == 0)
		*ret_alg = CRYPTO_AEAD_CHACHA20POLY1305;
	else
		return -EINVAL;
	return 0;
}

/* The AD ties a chunk to its object, its place and whether it ends the object, so chunks cannot be
 * swapped between objects, reordered, or an object truncated at a chunk boundary. */
void crypto_chunk_ad(const uint8_t object_id[static CRYPTO_OBJECT_ID_LEN], uint64_t index,
		     bool last, uint8_t ret_ad[static CRYPTO_CHUNK_AD_LEN])
{
	memcpy(ret_ad, object_id, CRYPTO_OBJECT_ID_LEN);
	put_be64(ret_ad + CRYPTO_OBJECT_ID_LEN, index);
	ret_ad[CRYPTO_OBJECT_ID_LEN + 8] = last ? 1 : 0;
}

/* Unique per chunk because every object has its own key. */
static void chunk_nonce(uint64_t index, uint8_t nonce[static CHUNK_NONCE_LEN])
{
	memset(nonce, 0, 4);
	put_be64(nonce + 4, index);
}

/* Forget the current key: EVP_CIPHER_CTX_reset cleanses the key schedule (and cipher state) but
 * keeps the context allocated for the next rekey. */
static void ctx_drop_key(crypto_chunk_ctx *ctx)
{
	ctx->alg = 0;
	if (ctx->enc)
		EVP_CIPHER_CTX_reset(ctx->enc);
	if (ctx->dec)
		EVP_CIPHER_CTX_reset(ctx->dec);
}

/* Set the key once per object in both directions; chunks then only change the IV, which keeps
 * the expanded AES key and GHASH tables (or the ChaCha20 key) in the context. */
static int ctx_set_key(crypto_chunk_ctx *ctx, const EVP_CIPHER *cipher, const uint8_t *key)
{
	if (!ctx->enc)
		ctx->enc = EVP_CIPHER_CTX_new();
	if (!ctx->dec)
		ctx->dec = EVP_CIPHER_CTX_new();
	if (!ctx->enc || !ctx->dec)
		return -ENOMEM;
	if (EVP_EncryptInit_ex(ctx->enc, cipher, NULL, key, NULL) != 1)
		return -EIO;
	if (EVP_DecryptInit_ex(ctx->dec, cipher, NULL, key, NULL) != 1)
		return -EIO;
	return 0;
}

/* The old key is dropped first, so on any failure the context holds no key at all and
 * encrypt/decrypt refuse with -EINVAL. */
int crypto_chunk_ctx_rekey(crypto_chunk_ctx *ctx, enum crypto_aead alg,
			   const crypto_key *object_key,
			   const uint8_t object_id[static CRYPTO_OBJECT_ID_LEN])
{
	int r;

	if (!ctx)
		return -EINVAL;
	ctx_drop_key(ctx);
	if (!crypto_aead_valid(alg) || !object_key)
		return -EINVAL;
	r = ctx_set_key(ctx, alg == CRYPTO_AEAD_AES256GCM ? EVP_aes_256_gcm()
							     : EVP_chacha20_poly1305(),
			crypto_key_bytes(object_key));
	if (r < 0) {
		ctx_drop_key(ctx);
		return r;
	}
	memcpy(ctx->object_id, object_id, CRYPTO_OBJECT_ID_LEN);
	ctx->alg = alg;
	return 0;
}

/* Copies what it needs from object_key; the caller may free that key right after. */
int crypto_chunk_ctx_new(enum crypto_aead alg, const crypto_key *object_key,
			 const uint8_t object_id[static CRYPTO_OBJECT_ID_LEN],
			 crypto_chunk_ctx **ret_ctx)
{
	crypto_chunk_ctx *ctx = NULL;
	int r;

	if (!ret_ctx || !crypto_aead_valid(alg) || !object_key)
		return -EINVAL;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	r = crypto_chunk_ctx_rekey(ctx, alg, object_key, object_id);
	if (r < 0) {
		crypto_chunk_ctx_free(ctx);
		return r;
	}
	*ret_ctx = ctx;
	return 0;
}

/* EVP_CIPHER_CTX_free cleanses the key schedules. */
void crypto_chunk_ctx_free(crypto_chunk_ctx *ctx)
{
	if (!ctx)
		return;
	EVP_CIPHER_CTX_free(ctx->enc);
	EVP_CIPHER_CTX_free(ctx->dec);
	free(ctx);
}

/* Shared argument checks. in/out may be NULL only for an empty chunk. */
static int chunk_args_ok(const crypto_chunk_ctx *ctx, const uint8_t *in, size_t len,
			 const uint8_t *out)
{
	if (!ctx || !crypto_aead_valid(ctx->alg) || len > CRYPTO_CHUNK_MAX)
		return -EINVAL;
	if (len > 0 && (!in || !out))
		return -EINVAL;
	return 0;
}

/* Only the IV changes per chunk; the key schedule stays from rekey. The AEAD ctrls are the same
 * for GCM and ChaCha20-Poly1305 (EVP_CTRL_AEAD_*). */
static int evp_encrypt(EVP_CIPHER_CTX *c, const uint8_t nonce[static CHUNK_NONCE_LEN],
		       const uint8_t ad[static CRYPTO_CHUNK_AD_LEN], const uint8_t *in, size_t len,
		       uint8_t *out, uint8_t tag[static CRYPTO_TAG_LEN])
{
	uint8_t final[16];	/* GCM's final step outputs nothing; never NULL + 0 */
	int outl;

	if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_EncryptUpdate(c, NULL, &outl, ad, CRYPTO_CHUNK_AD_LEN) != 1)
		return -EIO;
	if (len > 0 && (EVP_EncryptUpdate(c, out, &outl, in, (int)len) != 1 || outl != (int)len))
		return -EIO;
	if (EVP_EncryptFinal_ex(c, final, &outl) != 1 || outl != 0 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, CRYPTO_TAG_LEN, tag) != 1)
		return -EIO;
	return 0;
}

/* OpenSSL writes plaintext before the tag is checked in Final; the caller zeroes out on failure. */
static int evp_decrypt(EVP_CIPHER_CTX *c, const uint8_t nonce[static CHUNK_NONCE_LEN],
		       const uint8_t ad[static CRYPTO_CHUNK_AD_LEN], const uint8_t *in, size_t len,
		       const uint8_t tag[static CRYPTO_TAG_LEN], uint8_t *out)
{
	uint8_t expect[CRYPTO_TAG_LEN];	/* SET_TAG takes a non-const pointer */
	uint8_t final[16];
	int outl;

	memcpy(expect, tag, CRYPTO_TAG_LEN);
	if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_DecryptUpdate(c, NULL, &outl, ad, CRYPTO_CHUNK_AD_LEN) != 1)
		return -EIO;
	if (len > 0 && (EVP_DecryptUpdate(c, out, &outl, in, (int)len) != 1 || outl != (int)len))
		return -EIO;
	if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, CRYPTO_TAG_LEN, expect) != 1)
		return -EIO;
	if (EVP_DecryptFinal_ex(c, final, &outl) != 1)
		return -EBADMSG;
	return 0;
}

/* The tag goes to a local first so ret_tag is only written on success. An empty chunk still gets a
 * tag over its AD: an object of zero bytes is one empty last chunk. */
int crypto_chunk_encrypt(crypto_chunk_ctx *ctx, uint64_t index, bool last, const uint8_t *in,
			 size_t len, uint8_t *out, uint8_t ret_tag[static CRYPTO_TAG_LEN])
{
	uint8_t nonce[CHUNK_NONCE_LEN];
	uint8_t ad[CRYPTO_CHUNK_AD_LEN];
	uint8_t tag[CRYPTO_TAG_LEN];
	uint8_t empty[1] = { 0 };	/* stands in for NULL buffers of an empty chunk */
	int r;

	r = chunk_args_ok(ctx, in, len, out);
	if (r < 0)
		return r;
	if (len == 0)
		in = out = empty;
	chunk_nonce(index, nonce);
	crypto_chunk_ad(ctx->object_id, index, last, ad);
	r = evp_encrypt(ctx->enc, nonce, ad, in, len, out, tag);
	if (r < 0)
		return r;
	memcpy(ret_tag, tag, CRYPTO_TAG_LEN);
	return 0;
}

/* On any failure after the arguments are checked, out is zeroed: it may already hold
 * unauthenticated plaintext, and with in-place decryption the caller must not mistake the
 * remaining ciphertext for data either. */
int crypto_chunk_decrypt(crypto_chunk_ctx *ctx, uint64_t index, bool last, const uint8_t *in,
			 size_t len, const uint8_t tag[static CRYPTO_TAG_LEN], uint8_t *out)
{
	uint8_t nonce[CHUNK_NONCE_LEN];
	uint8_t ad[CRYPTO_CHUNK_AD_LEN];
	uint8_t empty[1] = { 0 };
	uint8_t *dst = out;
	int r;

	r = chunk_args_ok(ctx, in, len, out);
	if (r < 0)
		return r;
	if (len == 0)
		in = dst = empty;
	chunk_nonce(index, nonce);
	crypto_chunk_ad(ctx->object_id, index, last, ad);
	r = evp_decrypt(ctx->dec, nonce, ad, in, len, tag, dst);
	if (r < 0 && len > 0)
		sodium_memzero(out, len);
	return r;
}
