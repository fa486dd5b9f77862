/* crypto: chunked AEAD for object data: AES-256-GCM through OpenSSL EVP (fast with AES-NI / ARMv8
 * AES), ChaCha20-Poly1305 through libsodium otherwise. Nonce of chunk i = 0^32 || u64 BE i,
 * associated data = object id || u64 BE i || last flag (crypto_chunk_ad). */
#include "crypto/crypto.h"

#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include <openssl/evp.h>
#include <sodium.h>

#include "common/common.h"

#define CHUNK_NONCE_LEN 12

_Static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == CHUNK_NONCE_LEN, "nonce size");
_Static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == CRYPTO_TAG_LEN, "tag size");
_Static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == CRYPTO_KEY_LEN, "key size");
_Static_assert(CRYPTO_CHUNK_MAX <= INT32_MAX, "EVP lengths are int");

struct crypto_chunk_ctx {
	uint32_t alg;		/* enum crypto_aead of the current key; 0 = no key (rekey failed) */
	uint8_t object_id[CRYPTO_OBJECT_ID_LEN];	/* bound into every chunk's AD */
	EVP_CIPHER_CTX *enc;	/* AES-GCM encryption, key schedule set once; NULL until needed */
	EVP_CIPHER_CTX *dec;	/* AES-GCM decryption, same key; NULL until needed */
	uint8_t *chacha_key;	/* 32 bytes, sodium_malloc, read-only outside rekey; or NULL */
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

/* Forget the current key: EVP_CIPHER_CTX_reset cleanses the key schedule but keeps the context
 * allocated for the next rekey; the ChaCha20 key is wiped in place. */
static void ctx_drop_key(crypto_chunk_ctx *ctx)
{
	ctx->alg = 0;
	if (ctx->enc)
		EVP_CIPHER_CTX_reset(ctx->enc);
	if (ctx->dec)
		EVP_CIPHER_CTX_reset(ctx->dec);
	if (ctx->chacha_key) {
		sodium_mprotect_readwrite(ctx->chacha_key);
		sodium_memzero(ctx->chacha_key, CRYPTO_KEY_LEN);
		sodium_mprotect_readonly(ctx->chacha_key);
	}
}

/* Set the AES-256-GCM key once per object in both directions; chunks then only change the IV,
 * which keeps the expanded key and GHASH tables. */
static int ctx_set_aes_key(crypto_chunk_ctx *ctx, const uint8_t *key)
{
	if (!ctx->enc)
		ctx->enc = EVP_CIPHER_CTX_new();
	if (!ctx->dec)
		ctx->dec = EVP_CIPHER_CTX_new();
	if (!ctx->enc || !ctx->dec)
		return -ENOMEM;
	if (EVP_EncryptInit_ex(ctx->enc, EVP_aes_256_gcm(), NULL, key, NULL) != 1)
		return -EIO;
	if (EVP_DecryptInit_ex(ctx->dec, EVP_aes_256_gcm(), NULL, key, NULL) != 1)
		return -EIO;
	return 0;
}

/* Copy the ChaCha20 key into the context's own guarded buffer (allocated on first use). */
static int ctx_set_chacha_key(crypto_chunk_ctx *ctx, const uint8_t *key)
{
	if (!ctx->chacha_key) {
		ctx->chacha_key = sodium_malloc(CRYPTO_KEY_LEN);
		if (!ctx->chacha_key)
			return -ENOMEM;
	} else if (sodium_mprotect_readwrite(ctx->chacha_key) < 0) {
		return -ENOMEM;
	}
	memcpy(ctx->chacha_key, key, CRYPTO_KEY_LEN);
	if (sodium_mprotect_readonly(ctx->chacha_key) < 0)
		return -ENOMEM;
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
	if (alg == CRYPTO_AEAD_AES256GCM)
		r = ctx_set_aes_key(ctx, crypto_key_bytes(object_key));
	else
		r = ctx_set_chacha_key(ctx, crypto_key_bytes(object_key));
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

/* EVP_CIPHER_CTX_free cleanses the AES key schedule; sodium_free wipes the ChaCha20 key. */
void crypto_chunk_ctx_free(crypto_chunk_ctx *ctx)
{
	if (!ctx)
		return;
	EVP_CIPHER_CTX_free(ctx->enc);
	EVP_CIPHER_CTX_free(ctx->dec);
	sodium_free(ctx->chacha_key);	/* NULL is fine */
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

/* Only the IV changes per chunk; the key schedule stays from rekey. */
static int aes_encrypt(EVP_CIPHER_CTX *c, const uint8_t nonce[static CHUNK_NONCE_LEN],
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
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, CRYPTO_TAG_LEN, tag) != 1)
		return -EIO;
	return 0;
}

/* OpenSSL writes plaintext before the tag is checked in Final; the caller zeroes out on failure. */
static int aes_decrypt(EVP_CIPHER_CTX *c, const uint8_t nonce[static CHUNK_NONCE_LEN],
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
	if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, CRYPTO_TAG_LEN, expect) != 1)
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
	if (ctx->alg == CRYPTO_AEAD_AES256GCM) {
		r = aes_encrypt(ctx->enc, nonce, ad, in, len, out, tag);
		if (r < 0)
			return r;
	} else if (crypto_aead_chacha20poly1305_ietf_encrypt_detached(
			   out, tag, NULL, in, len, ad, CRYPTO_CHUNK_AD_LEN, NULL, nonce,
			   ctx->chacha_key) != 0) {
		return -EIO;
	}
	memcpy(ret_tag, tag, CRYPTO_TAG_LEN);
	return 0;
}

/* On any failure after the arguments are checked, out is zeroed: with AES-GCM it may already hold
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
	if (ctx->alg == CRYPTO_AEAD_AES256GCM)
		r = aes_decrypt(ctx->dec, nonce, ad, in, len, tag, dst);
	else if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(
			 dst, NULL, in, len, tag, ad, CRYPTO_CHUNK_AD_LEN, nonce,
			 ctx->chacha_key) != 0)
		r = -EBADMSG;
	if (r < 0 && len > 0)
		sodium_memzero(out, len);
	return r;
}
