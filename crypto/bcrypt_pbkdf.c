/* bcrypt_pbkdf (crypto/bcrypt_pbkdf.h): written from OpenBSD's bcrypt_pbkdf(3) description and the
 * bcrypt paper (Provos & Mazieres, "A Future-Adaptable Password Scheme", 1999); Blowfish from
 * Schneier's specification, its initial state generated from pi by scripts/gen-blowfish-pi.py.
 *
 * Every buffer that depends on the passphrase (its SHA-512, the expanded Blowfish state, each
 * round's output) is on this file's stack frames and wiped with sodium_memzero before return.
 */
#include "crypto/bcrypt_pbkdf.h"

#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "common/common.h"
#include "crypto/blowfish_pi.h"

#define SHA512_LEN crypto_hash_sha512_BYTES  /* 64 */
#define HASH_WORDS 8                          /* a bcrypt hash: 8 words, 32 bytes */
#define HASH_LEN (HASH_WORDS * 4)

/* Blowfish's key-dependent state. */
struct blowfish {
	uint32_t s[4][256];
	uint32_t p[18];
};

static inline uint32_t bf_f(const struct blowfish *b, uint32_t x)
{
	return ((b->s[0][x >> 24] + b->s[1][(x >> 16) & 0xff]) ^ b->s[2][(x >> 8) & 0xff]) +
	       b->s[3][x & 0xff];
}

/* Encrypt the 64-bit block (*xl, *xr): 16 Feistel rounds, written without the swaps. */
static void bf_encipher(const struct blowfish *b, uint32_t *xl, uint32_t *xr)
{
	uint32_t l = *xl ^ b->p[0], r = *xr;

	for (int i = 1; i < 17; i += 2) {
		r ^= bf_f(b, l) ^ b->p[i];
		l ^= bf_f(b, r) ^ b->p[i + 1];
	}
	*xl = r ^ b->p[17];
	*xr = l;
}

/* The next 32-bit big-endian word of data taken cyclically from *pos. */
static uint32_t bf_word(const uint8_t *data, size_t len, size_t *pos)
{
	uint32_t w = 0;

	for (int i = 0; i < 4; i++) {
		if (*pos >= len)
			*pos = 0;
		w = w << 8 | data[(*pos)++];
	}
	return w;
}

/* Eksblowfish's ExpandKey(state, salt, key): the key XORed into the P-array, then P and the
 * S-boxes replaced by the running encryption of a block XORed with salt words. With salt NULL,
 * the block is not salted (ExpandKey(state, 0, key)). */
static void bf_expand(struct blowfish *b, const uint8_t *salt, size_t salt_len,
		      const uint8_t *key, size_t key_len)
{
	uint32_t l = 0, r = 0;
	size_t kp = 0, sp = 0;

	for (int i = 0; i < 18; i++)
		b->p[i] ^= bf_word(key, key_len, &kp);
	for (int i = 0; i < 18 + 4 * 256; i += 2) {
		if (salt) {
			l ^= bf_word(salt, salt_len, &sp);
			r ^= bf_word(salt, salt_len, &sp);
		}
		bf_encipher(b, &l, &r);
		if (i < 18) {
			b->p[i] = l;
			b->p[i + 1] = r;
		} else {
			b->s[(i - 18) / 256][(i - 18) % 256] = l;
			b->s[(i - 18) / 256][(i - 18) % 256 + 1] = r;
		}
	}
}

/* One bcrypt hash as bcrypt_pbkdf defines it: the state keyed by the two SHA-512s (one salted
 * expansion, then 64 rounds of unsalted ones alternating salt and passphrase), then the 32 bytes
 * "OxychromaticBlowfishSwatDynamite" encrypted 64 times, its words written little-endian. */
static void bcrypt_hash(const uint8_t sha_pass[static SHA512_LEN],
			const uint8_t sha_salt[static SHA512_LEN], uint8_t out[static HASH_LEN])
{
	static const uint8_t magic[HASH_LEN] = "OxychromaticBlowfishSwatDynamite";
	struct blowfish b;
	uint32_t c[HASH_WORDS];
	size_t pos = 0;

	memcpy(b.p, blowfish_pi_p, sizeof(b.p));
	memcpy(b.s, blowfish_pi_s, sizeof(b.s));
	bf_expand(&b, sha_salt, SHA512_LEN, sha_pass, SHA512_LEN);
	for (int i = 0; i < 64; i++) {
		bf_expand(&b, NULL, 0, sha_salt, SHA512_LEN);
		bf_expand(&b, NULL, 0, sha_pass, SHA512_LEN);
	}
	for (int i = 0; i < HASH_WORDS; i++)
		c[i] = bf_word(magic, sizeof(magic), &pos);
	for (int i = 0; i < 64; i++)
		for (int j = 0; j < HASH_WORDS; j += 2)
			bf_encipher(&b, &c[j], &c[j + 1]);
	for (int i = 0; i < HASH_WORDS; i++) {
		out[4 * i] = (uint8_t)c[i];
		out[4 * i + 1] = (uint8_t)(c[i] >> 8);
		out[4 * i + 2] = (uint8_t)(c[i] >> 16);
		out[4 * i + 3] = (uint8_t)(c[i] >> 24);
	}
	sodium_memzero(&b, sizeof(b));
	sodium_memzero(c, sizeof(c));
}

int crypto_bcrypt_pbkdf(const uint8_t *pass, size_t pass_len, const uint8_t *salt,
			size_t salt_len, uint32_t rounds, uint8_t *out, size_t out_len)
{
	uint8_t sha_pass[SHA512_LEN], sha_salt[SHA512_LEN], block[HASH_LEN], acc[HASH_LEN];
	uint8_t count[4];
	crypto_hash_sha512_state h;
	size_t stride, nblocks;

	if (pass_len == 0 || salt_len == 0 || rounds == 0 || out_len == 0)
		return -EINVAL;
	if (rounds > CRYPTO_BCRYPT_ROUNDS_MAX || salt_len > CRYPTO_BCRYPT_SALT_MAX ||
	    out_len > CRYPTO_BCRYPT_OUT_MAX)
		return -E2BIG;
	/* Block k (1-based) gives output bytes k-1, k-1+stride, k-1+2*stride, ...: each block's
	 * bytes are spread over the whole key. */
	stride = (out_len + HASH_LEN - 1) / HASH_LEN;
	nblocks = stride;
	crypto_hash_sha512(sha_pass, pass, pass_len);
	for (size_t k = 1; k <= nblocks; k++) {
		put_be32(count, (uint32_t)k);
		crypto_hash_sha512_init(&h);
		crypto_hash_sha512_update(&h, salt, salt_len);
		crypto_hash_sha512_update(&h, count, sizeof(count));
		crypto_hash_sha512_final(&h, sha_salt);
		bcrypt_hash(sha_pass, sha_salt, block);
		memcpy(acc, block, HASH_LEN);
		for (uint32_t r = 1; r < rounds; r++) {
			crypto_hash_sha512(sha_salt, block, HASH_LEN);
			bcrypt_hash(sha_pass, sha_salt, block);
			for (size_t i = 0; i < HASH_LEN; i++)
				acc[i] ^= block[i];
		}
		for (size_t i = 0; i < HASH_LEN; i++) {
			size_t dest = i * stride + (k - 1);

			if (dest >= out_len)
				break;
			out[dest] = acc[i];
		}
	}
	sodium_memzero(sha_pass, sizeof(sha_pass));
	sodium_memzero(sha_salt, sizeof(sha_salt));
	sodium_memzero(block, sizeof(block));
	sodium_memzero(acc, sizeof(acc));
	sodium_memzero(&h, sizeof(h));
	return 0;
}
