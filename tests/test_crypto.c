/* Unit tests for crypto/: known-answer vectors for every primitive we call, round trips, and for
 * every check we make a forgery that it must reject. */
#include "crypto/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sodium.h>

/* cmocka needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* ---- Helpers ------------------------------------------------------------------------------- */

/* The per-run temporary directory (created by the group setup, removed by its teardown). */
static char tmp_path[4096];
static int tmp_dirfd = -1;

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode a hex string typed in from a published vector; a typo fails the test. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = strlen(hex);

	assert_int_equal(n % 2, 0);
	assert_true(n / 2 <= cap);
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		assert_true(hi >= 0 && lo >= 0);
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return n / 2;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void assert_bytes_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
	if (n > 0)
		assert_memory_equal(a, b, n);
}

/* A secret holding exactly these bytes, through the real reader (a pipe). Returns its result. */
static int pipe_secret(const void *data, size_t len, crypto_secret **ret)
{
	int fds[2];
	int r;

	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	assert_true(len < 65536);	/* fits the pipe buffer: no writer thread needed */
	if (len > 0)
		assert_int_equal(write(fds[1], data, len), (ssize_t)len);
	close(fds[1]);
	r = crypto_passphrase_read_fd(fds[0], ret);
	close(fds[0]);
	return r;
}

static crypto_secret *make_secret(const char *s)
{
	crypto_secret *secret = NULL;

	assert_int_equal(pipe_secret(s, strlen(s), &secret), 0);
	return secret;
}

/* Read a whole file in the temp dir (at most cap bytes); returns its size. */
static size_t slurp(const char *name, uint8_t *buf, size_t cap)
{
	int fd = openat(tmp_dirfd, name, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, cap);
	assert_true(n >= 0 && (size_t)n < cap);
	close(fd);
	return (size_t)n;
}

/* Create (or replace) a file in the temp dir with these bytes and exactly this mode. */
static void spit(const char *name, const void *buf, size_t len, mode_t mode)
{
	int fd;

	unlinkat(tmp_dirfd, name, 0);
	fd = openat(tmp_dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, mode), 0);
	if (len > 0)
		assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static void path_in_tmp(char *out, size_t cap, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", tmp_path, name);

	assert_true(n > 0 && (size_t)n < cap);
}

/* ---- Known-answer vectors ------------------------------------------------------------------ */

struct aead_vector {
	const char *name;
	const char *key, *nonce, *aad, *pt, *ct, *tag;	/* hex; pt may be a text (pt_is_text) */
	bool pt_is_text;
};

#define SUNSCREEN                                                                                 \
	"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "    \
	"future, sunscreen would be it."

/* McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", appendix B, test cases 13-16
 * (AES-256; the same values are in NIST's GCM test vectors). */
static const struct aead_vector gcm_vectors[] = {
	{
		.name = "GCM test case 13",
		.key = "0000000000000000000000000000000000000000000000000000000000000000",
		.nonce = "000000000000000000000000",
		.aad = "",
		.pt = "",
		.ct = "",
		.tag = "530f8afbc74536b9a963b4f1c4cb738b",
	},
	{
		.name = "GCM test case 14",
		.key = "0000000000000000000000000000000000000000000000000000000000000000",
		.nonce = "000000000000000000000000",
		.aad = "",
		.pt = "00000000000000000000000000000000",
		.ct = "cea7403d4d606b6e074ec5d3baf39d18",
		.tag = "d0d1c8a799996bf0265b98b5d48ab919",
	},
	{
		.name = "GCM test case 15",
		.key = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
		.nonce = "cafebabefacedbaddecaf888",
		.aad = "",
		.pt = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
		      "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
		.ct = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
		      "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
		.tag = "b094dac5d93471bdec1a502270e3cc6c",
	},
	{
		.name = "GCM test case 16",
		.key = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
		.nonce = "cafebabefacedbaddecaf888",
		.aad = "feedfacedeadbeeffeedfacedeadbeefabaddad2",
		.pt = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
		      "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
		.ct = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
		      "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
		.tag = "76fc6ece0f4e1768cddf8853bb2d551b",
	},
};

/* RFC 8439 section 2.8.2. */
static const struct aead_vector chacha_vector = {
	.name = "RFC 8439 2.8.2",
	.key = "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
	.nonce = "070000004041424344454647",
	.aad = "50515253c0c1c2c3c4c5c6c7",
	.pt = SUNSCREEN,
	.pt_is_text = true,
	.ct = "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
	      "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
	      "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
	      "3ff4def08e4b7a9de576d26586cec64b6116",
	.tag = "1ae10b594f09e26a7e902ecbd0600691",
};

/* draft-irtf-cfrg-xchacha-03, appendix A.3.1. */
static const struct aead_vector xchacha_vector = {
	.name = "XChaCha A.3.1",
	.key = "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
	.nonce = "404142434445464748494a4b4c4d4e4f5051525354555657",
	.aad = "50515253c0c1c2c3c4c5c6c7",
	.pt = SUNSCREEN,
	.pt_is_text = true,
	.ct = "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
	      "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
	      "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
	      "21f9664c97637da9768812f615c68b13b52e",
	.tag = "c0875924c1c7987947deafd8780acf49",
};

/* A vector decoded into bytes. */
struct vec {
	uint8_t key[32], nonce[24], aad[64], pt[128], ct[128], tag[16];
	size_t nonce_len, aad_len, pt_len, ct_len;
};

static void decode(const struct aead_vector *v, struct vec *d)
{
	assert_int_equal(unhex(v->key, d->key, sizeof(d->key)), 32);
	d->nonce_len = unhex(v->nonce, d->nonce, sizeof(d->nonce));
	d->aad_len = unhex(v->aad, d->aad, sizeof(d->aad));
	if (v->pt_is_text) {
		d->pt_len = strlen(v->pt);
		assert_true(d->pt_len <= sizeof(d->pt));
		memcpy(d->pt, v->pt, d->pt_len);
	} else {
		d->pt_len = unhex(v->pt, d->pt, sizeof(d->pt));
	}
	d->ct_len = unhex(v->ct, d->ct, sizeof(d->ct));
	assert_int_equal(unhex(v->tag, d->tag, sizeof(d->tag)), 16);
	assert_int_equal(d->pt_len, d->ct_len);
}

/* AES-256-GCM straight through EVP, independent of crypto/aead.c. */
static void gcm_raw_encrypt(const uint8_t *key, const uint8_t *iv, size_t iv_len,
			    const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t len,
			    uint8_t *ct, uint8_t tag[16])
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	uint8_t fin[16];
	int outl;

	assert_non_null(c);
	assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, (int)iv_len, NULL), 1);
	assert_int_equal(EVP_EncryptInit_ex(c, NULL, NULL, key, iv), 1);
	if (aad_len > 0)
		assert_int_equal(EVP_EncryptUpdate(c, NULL, &outl, aad, (int)aad_len), 1);
	if (len > 0) {
		assert_int_equal(EVP_EncryptUpdate(c, ct, &outl, pt, (int)len), 1);
		assert_int_equal(outl, (int)len);
	}
	assert_int_equal(EVP_EncryptFinal_ex(c, fin, &outl), 1);
	assert_int_equal(outl, 0);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag), 1);
	EVP_CIPHER_CTX_free(c);
}

/* Returns true when the tag verifies; pt then holds the plaintext. */
static bool gcm_raw_decrypt(const uint8_t *key, const uint8_t *iv, size_t iv_len,
			    const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t len,
			    const uint8_t tag[16], uint8_t *pt)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	uint8_t t[16], fin[16];
	int outl, ok;

	memcpy(t, tag, 16);
	assert_non_null(c);
	assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, (int)iv_len, NULL), 1);
	assert_int_equal(EVP_DecryptInit_ex(c, NULL, NULL, key, iv), 1);
	if (aad_len > 0)
		assert_int_equal(EVP_DecryptUpdate(c, NULL, &outl, aad, (int)aad_len), 1);
	if (len > 0)
		assert_int_equal(EVP_DecryptUpdate(c, pt, &outl, ct, (int)len), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, t), 1);
	ok = EVP_DecryptFinal_ex(c, fin, &outl);
	EVP_CIPHER_CTX_free(c);
	return ok == 1;
}

static void test_kat_aes256gcm(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(gcm_vectors) / sizeof(gcm_vectors[0]); i++) {
		struct vec d;
		uint8_t ct[128], pt[128], tag[16];

		decode(&gcm_vectors[i], &d);
		assert_int_equal(d.nonce_len, 12);
		gcm_raw_encrypt(d.key, d.nonce, d.nonce_len, d.aad, d.aad_len, d.pt, d.pt_len, ct,
				tag);
		assert_bytes_equal(ct, d.ct, d.ct_len);
		assert_memory_equal(tag, d.tag, 16);

		assert_true(gcm_raw_decrypt(d.key, d.nonce, d.nonce_len, d.aad, d.aad_len, d.ct,
					    d.ct_len, d.tag, pt));
		assert_bytes_equal(pt, d.pt, d.pt_len);
		d.tag[15] ^= 1;
		assert_false(gcm_raw_decrypt(d.key, d.nonce, d.nonce_len, d.aad, d.aad_len, d.ct,
					     d.ct_len, d.tag, pt));
	}
}

static void test_kat_chacha20poly1305(void **state)
{
	struct vec d;
	uint8_t ct[128], pt[128], tag[16];
	unsigned long long taglen = 0;

	(void)state;
	decode(&chacha_vector, &d);
	assert_int_equal(d.nonce_len, crypto_aead_chacha20poly1305_ietf_NPUBBYTES);
	assert_int_equal(crypto_aead_chacha20poly1305_ietf_encrypt_detached(
				 ct, tag, &taglen, d.pt, d.pt_len, d.aad, d.aad_len, NULL, d.nonce,
				 d.key), 0);
	assert_int_equal(taglen, 16);
	assert_memory_equal(ct, d.ct, d.ct_len);
	assert_memory_equal(tag, d.tag, 16);

	assert_int_equal(crypto_aead_chacha20poly1305_ietf_decrypt_detached(
				 pt, NULL, d.ct, d.ct_len, d.tag, d.aad, d.aad_len, d.nonce, d.key),
			 0);
	assert_memory_equal(pt, d.pt, d.pt_len);
	d.ct[0] ^= 1;
	assert_int_not_equal(crypto_aead_chacha20poly1305_ietf_decrypt_detached(
				     pt, NULL, d.ct, d.ct_len, d.tag, d.aad, d.aad_len, d.nonce,
				     d.key), 0);
}

/* crypto_mac() (keyed BLAKE2b with the key block compressed once, crypto/blake2b.c) against an
 * independent implementation: digests computed with Python's hashlib.blake2b(msg, key=key,
 * digest_size=n) for key = 00 01 .. 1f and msg[i] = 7 i + 1 (mod 256), lengths around the block
 * boundaries; then against libsodium's keyed crypto_generichash for every length from 0 to 600,
 * four digest sizes and several keys; and a digest changes with any bit of key or message. */
static void test_mac_keyed_blake2b(void **state)
{
	static const struct {
		size_t len, out;
		const char *hex;
	} kat[] = {
		{ 0, 16, "3daf97bce7888fd59773c66bf647459c" },
		{ 0, 32, "4e51e7a913fc80137da52880fecca175bf81e117d5c68126dc2774033517ea0d" },
		{ 1, 16, "8602f18f57f3dadb9324b47adcb676d1" },
		{ 1, 32, "dace1c2bbe1660f898884720cb73d4dad6e7d360260c749cee92d58f4aa0f23a" },
		{ 3, 16, "de91664a1cf28aa1f91b367325b94676" },
		{ 3, 32, "af26830250415e69f529c749b0fbcfe7f07113d2f4f6c9fadedb0c4e980ff665" },
		{ 86, 16, "40dd0bc30dcecafe1d38452aa5f39ae9" },
		{ 86, 32, "7d9c395c81c160c2f42ff7275e38650fcaebf5e2aa4e1af2ea2806b0cd976fd2" },
		{ 127, 16, "102f4eb202585863f06cb0c53512e853" },
		{ 127, 32, "397b169ef9b181e416b4c84bfe04a9807b57f456a183190cfbb41950ab3abdfc" },
		{ 128, 16, "0808ba54160e44871e2f500b0beab1cf" },
		{ 128, 32, "78a031422b524ff2d8f960b4d6c9e689d74a8374ada7495aa0f4616cb9206370" },
		{ 129, 16, "92196a092481b4be1b5e080758af5fae" },
		{ 129, 32, "7e42254559cc8c8f7f4fcedb1718ec5b07f48a90b57526784dcfbd0ecea7717b" },
		{ 256, 16, "9c8b1176d6d8c54800a31d76df3617ac" },
		{ 256, 32, "978a2b62d11326386569d5b0f94bcbb82b57f512613e60e78b531a0192a4a08a" },
		{ 300, 16, "af363576e2ca52a82d0b3db4eb702933" },
		{ 300, 32, "2a874759a95efb304b76f7c2d2770e2879bec15e97d26c7e7b987ec69f5abd88" },
	};
	uint8_t kb[CRYPTO_KEY_LEN], msg[600], want[64], have[64];
	static const size_t outs[] = { 1, CRYPTO_NAME_HASH_LEN, CRYPTO_HASH_LEN, 64 };
	crypto_mac_key *mk = NULL;
	crypto_key *key = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(kb); i++)
		kb[i] = (uint8_t)i;
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(7 * i + 1);
	assert_int_equal(crypto_key_from_bytes(kb, &key), 0);
	for (size_t v = 0; v < sizeof(kat) / sizeof(kat[0]); v++) {
		assert_int_equal(unhex(kat[v].hex, want, sizeof(want)), kat[v].out);
		assert_int_equal(crypto_mac_key_new(key, kat[v].out, &mk), 0);
		crypto_mac(mk, kat[v].len ? msg : NULL, kat[v].len, have);
		assert_memory_equal(have, want, kat[v].out);
		crypto_mac_key_free(mk);
	}
	crypto_key_free(key);
	for (unsigned k = 0; k < 4; k++) {
		assert_int_equal(crypto_key_generate(&key), 0);
		crypto_random(msg, sizeof(msg));
		for (size_t o = 0; o < sizeof(outs) / sizeof(outs[0]); o++) {
			assert_int_equal(crypto_mac_key_new(key, outs[o], &mk), 0);
			for (size_t len = 0; len <= sizeof(msg); len++) {
				crypto_generichash(want, outs[o], len ? msg : NULL, len,
						   crypto_key_bytes(key), CRYPTO_KEY_LEN);
				crypto_mac(mk, len ? msg : NULL, len, have);
				assert_memory_equal(have, want, outs[o]);
			}
			crypto_mac_key_free(mk);
		}
		/* crypto_name_hash() is the same function. */
		assert_int_equal(crypto_mac_key_new(key, CRYPTO_NAME_HASH_LEN, &mk), 0);
		crypto_name_hash(key, msg, 77, want);
		crypto_mac(mk, msg, 77, have);
		assert_memory_equal(have, want, CRYPTO_NAME_HASH_LEN);
		/* A flipped message bit changes the digest. */
		msg[40] ^= 0x10;
		crypto_mac(mk, msg, 77, want);
		assert_memory_not_equal(have, want, CRYPTO_NAME_HASH_LEN);
		crypto_mac_key_free(mk);
		crypto_key_free(key);
	}
	/* Another key, the same message: another digest. */
	kb[31] ^= 1;
	assert_int_equal(crypto_key_from_bytes(kb, &key), 0);
	assert_int_equal(crypto_mac_key_new(key, 16, &mk), 0);
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(7 * i + 1);
	crypto_mac(mk, msg, 86, have);
	assert_int_equal(unhex(kat[6].hex, want, sizeof(want)), 16);
	assert_int_equal(kat[6].len, 86);
	assert_memory_not_equal(have, want, 16);
	crypto_mac_key_free(mk);
	crypto_key_free(key);
	assert_int_equal(crypto_mac_key_new(NULL, 16, &mk), -EINVAL);
	assert_int_equal(crypto_key_generate(&key), 0);
	assert_int_equal(crypto_mac_key_new(key, 0, &mk), -EINVAL);
	assert_int_equal(crypto_mac_key_new(key, 65, &mk), -EINVAL);
	crypto_key_free(key);
	crypto_mac_key_free(NULL);
}

static void test_kat_xchacha20poly1305(void **state)
{
	struct vec d;
	uint8_t ct[128], pt[128], tag[16];

	(void)state;
	decode(&xchacha_vector, &d);
	assert_int_equal(d.nonce_len, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
	assert_int_equal(crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
				 ct, tag, NULL, d.pt, d.pt_len, d.aad, d.aad_len, NULL, d.nonce,
				 d.key), 0);
	assert_memory_equal(ct, d.ct, d.ct_len);
	assert_memory_equal(tag, d.tag, 16);

	assert_int_equal(crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
				 pt, NULL, d.ct, d.ct_len, d.tag, d.aad, d.aad_len, d.nonce, d.key),
			 0);
	assert_memory_equal(pt, d.pt, d.pt_len);
	d.aad[0] ^= 1;
	assert_int_not_equal(crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
				     pt, NULL, d.ct, d.ct_len, d.tag, d.aad, d.aad_len, d.nonce,
				     d.key), 0);
}

/* The chunk AD layout is on disk (docs/FORMAT.md): pin it byte for byte. */
static void test_chunk_ad_layout(void **state)
{
	static const uint8_t id[16] = { 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
					0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f };
	uint8_t ad[CRYPTO_CHUNK_AD_LEN], want[CRYPTO_CHUNK_AD_LEN];

	(void)state;
	crypto_chunk_ad(id, 0x0102030405060708ull, true, ad);
	unhex("000102030405060708090a0b0c0d0e0f" "0102030405060708" "01", want, sizeof(want));
	assert_memory_equal(ad, want, sizeof(want));
	crypto_chunk_ad(id, 5, false, ad);
	unhex("000102030405060708090a0b0c0d0e0f" "0000000000000005" "00", want, sizeof(want));
	assert_memory_equal(ad, want, sizeof(want));
}

/* Our chunk API against the raw primitives, with the nonce and AD built here by hand:
 * nonce = 00000000 || be64(index), AD = object id || be64(index) || last. */
static void chunk_kat(enum crypto_aead alg)
{
	static const uint64_t indices[] = { 0, 1, 0x0102030405060708ull, UINT64_MAX };
	struct vec d;
	uint8_t id[16];
	crypto_key *key = NULL;
	crypto_chunk_ctx *ctx = NULL;

	decode(&chacha_vector, &d);	/* its key and text; nonce and AD are ours */
	for (int i = 0; i < 16; i++)
		id[i] = (uint8_t)(0xa0 + i);
	assert_int_equal(crypto_key_from_bytes(d.key, &key), 0);
	assert_int_equal(crypto_chunk_ctx_new(alg, key, id, &ctx), 0);

	for (size_t i = 0; i < sizeof(indices) / sizeof(indices[0]); i++) {
		for (int last = 0; last <= 1; last++) {
			uint8_t nonce[12] = { 0 }, ad[25];
			uint8_t want_ct[128], want_tag[16], ct[128], tag[16], pt[128];
			uint64_t idx = indices[i];

			for (int b = 0; b < 8; b++)
				nonce[4 + b] = (uint8_t)(idx >> (56 - 8 * b));
			memcpy(ad, id, 16);
			memcpy(ad + 16, nonce + 4, 8);
			ad[24] = (uint8_t)last;
			if (alg == CRYPTO_AEAD_AES256GCM)
				gcm_raw_encrypt(d.key, nonce, 12, ad, 25, d.pt, d.pt_len, want_ct,
						want_tag);
			else
				assert_int_equal(crypto_aead_chacha20poly1305_ietf_encrypt_detached(
							 want_ct, want_tag, NULL, d.pt, d.pt_len,
							 ad, 25, NULL, nonce, d.key), 0);

			assert_int_equal(crypto_chunk_encrypt(ctx, idx, last, d.pt, d.pt_len, ct,
							      tag), 0);
			assert_memory_equal(ct, want_ct, d.pt_len);
			assert_memory_equal(tag, want_tag, 16);
			assert_int_equal(crypto_chunk_decrypt(ctx, idx, last, ct, d.pt_len, tag,
							      pt), 0);
			assert_memory_equal(pt, d.pt, d.pt_len);
		}
	}
	crypto_chunk_ctx_free(ctx);
	crypto_key_free(key);
}

static void test_chunk_kat_aes(void **state)
{
	(void)state;
	chunk_kat(CRYPTO_AEAD_AES256GCM);
}

static void test_chunk_kat_chacha(void **state)
{
	(void)state;
	chunk_kat(CRYPTO_AEAD_CHACHA20POLY1305);
}

/* ---- Chunk round trips --------------------------------------------------------------------- */

static void chunk_roundtrip(enum crypto_aead alg)
{
	static const size_t sizes[] = { 0, 1, 4095, 65536 };
	crypto_key *key = NULL;
	crypto_chunk_ctx *ctx = NULL, *ctx2 = NULL;
	uint8_t id[16];

	crypto_random(id, sizeof(id));
	assert_int_equal(crypto_key_generate(&key), 0);
	assert_int_equal(crypto_chunk_ctx_new(alg, key, id, &ctx), 0);
	assert_int_equal(crypto_chunk_ctx_new(alg, key, id, &ctx2), 0);

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];
		bool last = i == 3;
		uint8_t *pt = malloc(n + 1), *ct = malloc(n + 1), *out = malloc(n + 1);
		uint8_t *buf = malloc(n + 1);
		uint8_t tag[16], tag2[16];

		assert_true(pt && ct && out && buf);
		crypto_random(pt, n + 1);
		/* Out of place. */
		assert_int_equal(crypto_chunk_encrypt(ctx, i, last, pt, n, ct, tag), 0);
		if (n >= 16)
			assert_memory_not_equal(ct, pt, n);
		assert_int_equal(crypto_chunk_decrypt(ctx2, i, last, ct, n, tag, out), 0);
		assert_bytes_equal(out, pt, n);
		/* In place: same chunk, same result. */
		memcpy(buf, pt, n);
		assert_int_equal(crypto_chunk_encrypt(ctx, i, last, buf, n, buf, tag2), 0);
		assert_bytes_equal(buf, ct, n);
		assert_memory_equal(tag2, tag, 16);
		assert_int_equal(crypto_chunk_decrypt(ctx, i, last, buf, n, tag2, buf), 0);
		assert_bytes_equal(buf, pt, n);
		free(pt);
		free(ct);
		free(out);
		free(buf);
	}

	/* An empty chunk may come with no buffers at all. */
	{
		uint8_t tag[16];

		assert_int_equal(crypto_chunk_encrypt(ctx, 9, true, NULL, 0, NULL, tag), 0);
		assert_int_equal(crypto_chunk_decrypt(ctx, 9, true, NULL, 0, tag, NULL), 0);
		assert_int_equal(crypto_chunk_decrypt(ctx, 9, false, NULL, 0, tag, NULL), -EBADMSG);
	}
	crypto_chunk_ctx_free(ctx2);
	crypto_chunk_ctx_free(ctx);
	crypto_key_free(key);
}

static void test_chunk_roundtrip_aes(void **state)
{
	(void)state;
	chunk_roundtrip(CRYPTO_AEAD_AES256GCM);
}

static void test_chunk_roundtrip_chacha(void **state)
{
	(void)state;
	chunk_roundtrip(CRYPTO_AEAD_CHACHA20POLY1305);
}

/* ---- Chunk forgeries ----------------------------------------------------------------------- */

/* Decrypt must refuse with -EBADMSG and leave out all zero (it is pre-filled with garbage). */
static void expect_forgery(crypto_chunk_ctx *ctx, uint64_t index, bool last, const uint8_t *ct,
			   size_t len, const uint8_t tag[16])
{
	uint8_t *out = malloc(len + 1);

	assert_non_null(out);
	memset(out, 0xa5, len + 1);
	assert_int_equal(crypto_chunk_decrypt(ctx, index, last, ct, len, tag, out), -EBADMSG);
	assert_true(all_zero(out, len));
	assert_int_equal(out[len], 0xa5);	/* and nothing past len was touched */
	free(out);
}

static void chunk_tamper(enum crypto_aead alg)
{
	enum { N = 4095, IDX = 7 };
	const enum crypto_aead other_alg =
		alg == CRYPTO_AEAD_AES256GCM ? CRYPTO_AEAD_CHACHA20POLY1305 : CRYPTO_AEAD_AES256GCM;
	crypto_key *key = NULL, *key2 = NULL;
	crypto_chunk_ctx *ctx = NULL, *other_id = NULL, *other_key = NULL, *other = NULL;
	uint8_t id[16], id2[16];
	uint8_t *pt = malloc(N), *ct = malloc(N), *bad = malloc(N);
	uint8_t tag[16], badtag[16];

	assert_true(pt && ct && bad);
	crypto_random(pt, N);
	crypto_random(id, sizeof(id));
	memcpy(id2, id, sizeof(id2));
	id2[15] ^= 1;
	assert_int_equal(crypto_key_generate(&key), 0);
	assert_int_equal(crypto_key_generate(&key2), 0);
	assert_int_equal(crypto_chunk_ctx_new(alg, key, id, &ctx), 0);
	assert_int_equal(crypto_chunk_ctx_new(alg, key, id2, &other_id), 0);
	assert_int_equal(crypto_chunk_ctx_new(alg, key2, id, &other_key), 0);
	assert_int_equal(crypto_chunk_ctx_new(other_alg, key, id, &other), 0);
	assert_int_equal(crypto_chunk_encrypt(ctx, IDX, false, pt, N, ct, tag), 0);

	/* The untouched chunk decrypts: the forgeries below fail for their change alone. */
	assert_int_equal(crypto_chunk_decrypt(ctx, IDX, false, ct, N, tag, bad), 0);
	assert_memory_equal(bad, pt, N);

	memcpy(bad, ct, N);
	bad[1234] ^= 0x10;
	expect_forgery(ctx, IDX, false, bad, N, tag);
	memcpy(bad, ct, N);
	bad[0] ^= 0x01;
	expect_forgery(ctx, IDX, false, bad, N, tag);
	memcpy(badtag, tag, 16);
	badtag[0] ^= 0x80;
	expect_forgery(ctx, IDX, false, ct, N, badtag);
	memcpy(badtag, tag, 16);
	badtag[15] ^= 0x01;
	expect_forgery(ctx, IDX, false, ct, N, badtag);
	expect_forgery(ctx, IDX + 1, false, ct, N, tag);		/* wrong index */
	expect_forgery(ctx, IDX - 1, false, ct, N, tag);
	expect_forgery(ctx, IDX + (1ull << 32), false, ct, N, tag);	/* high index bits */
	expect_forgery(ctx, IDX, true, ct, N, tag);			/* wrong last flag */
	expect_forgery(other_id, IDX, false, ct, N, tag);		/* wrong object id */
	expect_forgery(other_key, IDX, false, ct, N, tag);		/* wrong key */
	expect_forgery(other, IDX, false, ct, N, tag);			/* wrong algorithm */
	expect_forgery(ctx, IDX, false, ct, N - 1, tag);		/* truncated */
	expect_forgery(ctx, IDX, false, ct, 0, tag);			/* truncated to nothing */

	/* In place: the caller's buffer holds zeros afterwards, not unauthenticated plaintext. */
	memcpy(bad, ct, N);
	bad[N - 1] ^= 0x01;
	assert_int_equal(crypto_chunk_decrypt(ctx, IDX, false, bad, N, tag, bad), -EBADMSG);
	assert_true(all_zero(bad, N));

	crypto_chunk_ctx_free(other);
	crypto_chunk_ctx_free(other_key);
	crypto_chunk_ctx_free(other_id);
	crypto_chunk_ctx_free(ctx);
	crypto_key_free(key2);
	crypto_key_free(key);
	free(pt);
	free(ct);
	free(bad);
}

static void test_chunk_tamper_aes(void **state)
{
	(void)state;
	chunk_tamper(CRYPTO_AEAD_AES256GCM);
}

static void test_chunk_tamper_chacha(void **state)
{
	(void)state;
	chunk_tamper(CRYPTO_AEAD_CHACHA20POLY1305);
}

/* Limits and the keyless state after a failed rekey. */
static void test_chunk_ctx_states(void **state)
{
	crypto_key *key = NULL;
	crypto_chunk_ctx *ctx = NULL;
	uint8_t id[16] = { 1 }, id2[16] = { 2 };
	uint8_t buf[64] = { 0 }, ct[64], tag[16], tag2[16];

	(void)state;
	assert_int_equal(crypto_key_generate(&key), 0);
	assert_int_equal(crypto_chunk_ctx_new(CRYPTO_AEAD_AES256GCM, key, id, &ctx), 0);
	/* Too long: refused before any byte is touched. */
	assert_int_equal(crypto_chunk_encrypt(ctx, 0, false, buf, CRYPTO_CHUNK_MAX + 1ul, buf, tag),
			 -EINVAL);
	assert_int_equal(crypto_chunk_decrypt(ctx, 0, false, buf, CRYPTO_CHUNK_MAX + 1ul, tag, buf),
			 -EINVAL);

	/* A failed rekey leaves no key behind. */
	assert_int_equal(crypto_chunk_ctx_rekey(ctx, (enum crypto_aead)3, key, id), -EINVAL);
	assert_int_equal(crypto_chunk_encrypt(ctx, 0, false, buf, sizeof(buf), ct, tag), -EINVAL);
	assert_int_equal(crypto_chunk_decrypt(ctx, 0, false, buf, sizeof(buf), tag, ct), -EINVAL);
	assert_int_equal(crypto_chunk_ctx_rekey(ctx, CRYPTO_AEAD_CHACHA20POLY1305, NULL, id),
			 -EINVAL);
	assert_int_equal(crypto_chunk_encrypt(ctx, 0, false, buf, sizeof(buf), ct, tag), -EINVAL);

	/* Rekey across algorithms and objects works and matches a fresh context. */
	for (int round = 0; round < 2; round++) {
		const enum crypto_aead algs[] = { CRYPTO_AEAD_CHACHA20POLY1305,
						  CRYPTO_AEAD_AES256GCM };

		for (size_t a = 0; a < 2; a++) {
			crypto_chunk_ctx *fresh = NULL;
			uint8_t ct2[64];

			assert_int_equal(crypto_chunk_ctx_rekey(ctx, algs[a], key, id2), 0);
			assert_int_equal(crypto_chunk_ctx_new(algs[a], key, id2, &fresh), 0);
			assert_int_equal(crypto_chunk_encrypt(ctx, 3, true, buf, sizeof(buf), ct,
							      tag), 0);
			assert_int_equal(crypto_chunk_encrypt(fresh, 3, true, buf, sizeof(buf),
							      ct2, tag2), 0);
			assert_memory_equal(ct, ct2, sizeof(ct));
			assert_memory_equal(tag, tag2, sizeof(tag));
			crypto_chunk_ctx_free(fresh);
		}
	}
	crypto_chunk_ctx_free(ctx);
	crypto_chunk_ctx_free(NULL);
	crypto_key_free(key);
}

/* ---- Algorithms ---------------------------------------------------------------------------- */

static void test_aead_names(void **state)
{
	const enum crypto_aead algs[] = { CRYPTO_AEAD_AES256GCM, CRYPTO_AEAD_CHACHA20POLY1305 };
	crypto_chunk_ctx *sentinel = (crypto_chunk_ctx *)&state;
	crypto_chunk_ctx *ctx = sentinel;
	crypto_key *key = NULL;
	enum crypto_aead alg;
	uint8_t id[16] = { 0 };

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		assert_true(crypto_aead_valid(algs[i]));
		assert_int_equal(crypto_aead_parse(crypto_aead_name(algs[i]), &alg), 0);
		assert_int_equal(alg, algs[i]);
	}
	assert_string_equal(crypto_aead_name(CRYPTO_AEAD_AES256GCM), "aes-256-gcm");
	assert_string_equal(crypto_aead_name(CRYPTO_AEAD_CHACHA20POLY1305), "chacha20-poly1305");
	assert_string_equal(crypto_aead_name(0), "unknown");
	assert_string_equal(crypto_aead_name(3), "unknown");
	assert_false(crypto_aead_valid(0));
	assert_false(crypto_aead_valid(3));
	alg = CRYPTO_AEAD_AES256GCM;
	assert_int_equal(crypto_aead_parse("AES-256-GCM", &alg), -EINVAL);
	assert_int_equal(crypto_aead_parse("chacha20", &alg), -EINVAL);
	assert_int_equal(crypto_aead_parse("", &alg), -EINVAL);
	assert_int_equal(crypto_aead_parse("unknown", &alg), -EINVAL);
	assert_int_equal(alg, CRYPTO_AEAD_AES256GCM);	/* untouched on failure */
	assert_true(crypto_aead_valid(crypto_aead_preferred()));

	assert_int_equal(crypto_key_generate(&key), 0);
	assert_int_equal(crypto_chunk_ctx_new((enum crypto_aead)0, key, id, &ctx), -EINVAL);
	assert_int_equal(crypto_chunk_ctx_new((enum crypto_aead)3, key, id, &ctx), -EINVAL);
	assert_ptr_equal(ctx, sentinel);
	crypto_key_free(key);
}

/* ---- Keys and key wrapping ----------------------------------------------------------------- */

static void test_keys(void **state)
{
	crypto_key *a = NULL, *b = NULL, *c = NULL;
	uint8_t bytes[32];

	(void)state;
	assert_int_equal(crypto_key_generate(&a), 0);
	assert_int_equal(crypto_key_generate(&b), 0);
	assert_memory_not_equal(crypto_key_bytes(a), crypto_key_bytes(b), 32);
	assert_false(all_zero(crypto_key_bytes(a), 32));
	for (int i = 0; i < 32; i++)
		bytes[i] = (uint8_t)i;
	assert_int_equal(crypto_key_from_bytes(bytes, &c), 0);
	assert_ptr_not_equal(crypto_key_bytes(c), bytes);
	assert_memory_equal(crypto_key_bytes(c), bytes, 32);
	crypto_key_free(a);
	crypto_key_free(b);
	crypto_key_free(c);
	crypto_key_free(NULL);
}

/* Issue 13: small random requests come from a per-thread pool read ahead. Draws never repeat,
 * across refills of the pool, and a child forked after the pool was filled never hands out the
 * bytes its parent hands out next (the pool is wiped on fork). */
static void test_random_pool(void **state)
{
	uint8_t prev[32] = { 0 }, cur[32], mine[32], child[32];
	int fds[2], status;
	pid_t pid;

	(void)state;
	for (int i = 0; i < 400; i++) {  /* 12,800 bytes: three refills of the pool */
		crypto_random(cur, sizeof(cur));
		assert_false(all_zero(cur, sizeof(cur)));
		assert_memory_not_equal(cur, prev, sizeof(cur));
		memcpy(prev, cur, sizeof(cur));
	}
	crypto_random(cur, 1);            /* the pool holds unused bytes now */
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		crypto_random(child, sizeof(child));
		_exit(write(fds[1], child, sizeof(child)) == (ssize_t)sizeof(child) ? 0 : 1);
	}
	close(fds[1]);
	crypto_random(mine, sizeof(mine));
	assert_int_equal(read(fds[0], child, sizeof(child)), (ssize_t)sizeof(child));
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_memory_not_equal(mine, child, sizeof(mine));
	sodium_memzero(mine, sizeof(mine));
	sodium_memzero(child, sizeof(child));
}

/* Issue 16: nonces (24-byte draws) from the per-thread pools never repeat across threads: each
 * thread fills its own pool from the kernel, so four threads and this one, 3,000 draws each
 * (several refills of every pool), give 15,000 distinct nonces. */
#define RND_THREADS 4
#define RND_DRAWS 3000
#define RND_NONCE 24

static void *draw_nonces(void *arg)
{
	uint8_t *out = arg;

	for (size_t i = 0; i < RND_DRAWS; i++)
		crypto_random(out + i * RND_NONCE, RND_NONCE);
	return NULL;
}

static int nonce_cmp(const void *a, const void *b)
{
	return memcmp(a, b, RND_NONCE);
}

static void test_random_threads(void **state)
{
	const size_t per = (size_t)RND_DRAWS * RND_NONCE;
	uint8_t *all = calloc(RND_THREADS + 1, per);
	pthread_t t[RND_THREADS];

	(void)state;
	assert_non_null(all);
	for (size_t i = 0; i < RND_THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, draw_nonces, all + i * per), 0);
	draw_nonces(all + RND_THREADS * per);
	for (size_t i = 0; i < RND_THREADS; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	qsort(all, (size_t)(RND_THREADS + 1) * RND_DRAWS, RND_NONCE, nonce_cmp);
	for (size_t i = 0; i + 1 < (size_t)(RND_THREADS + 1) * RND_DRAWS; i++)
		assert_memory_not_equal(all + i * RND_NONCE, all + (i + 1) * RND_NONCE, RND_NONCE);
	free(all);
}

/* Issue 16: the pools are filled from a ChaCha20 keystream whose key is replaced at every
 * refill and taken from the kernel again every 256 refills (about 1 MB): 1.2 MB of 24-byte
 * draws in one thread, across several reseeds, hold no nonce twice and no all-zero one. */
static void test_random_keystream(void **state)
{
	const size_t n = 50000;
	uint8_t *all = malloc(n * RND_NONCE), zero[RND_NONCE] = { 0 };

	(void)state;
	assert_non_null(all);
	for (size_t i = 0; i < n; i++)
		crypto_random(all + i * RND_NONCE, RND_NONCE);
	qsort(all, n, RND_NONCE, nonce_cmp);
	for (size_t i = 0; i + 1 < n; i++)
		assert_memory_not_equal(all + i * RND_NONCE, all + (i + 1) * RND_NONCE, RND_NONCE);
	assert_memory_not_equal(all, zero, RND_NONCE);
	free(all);
}

/* Issue 13: a freed key's slot holds no key bytes (the slab stays mapped, so the slot can be
 * read after the free), and a freed slot is reused, not leaked. */
static void test_key_slab_wipe(void **state)
{
	crypto_key *k = NULL, *again = NULL, *w = NULL, *kek = NULL;
	uint8_t wrapped[CRYPTO_WRAPPED_KEY_LEN];
	const uint8_t *slot;
	size_t live = crypto_key_slab_live();

	(void)state;
	assert_int_equal(crypto_key_generate(&k), 0);
	assert_int_equal(crypto_key_slab_live(), live + 1);
	slot = crypto_key_bytes(k);
	assert_false(all_zero(slot, CRYPTO_KEY_LEN));
	crypto_key_free(k);
	assert_int_equal(crypto_key_slab_live(), live);
	assert_true(all_zero(slot, CRYPTO_KEY_LEN));
	/* The slot comes back for the next key. */
	assert_int_equal(crypto_key_generate(&again), 0);
	assert_ptr_equal(crypto_key_bytes(again), slot);
	/* A failed unwrap leaves nothing behind either: its slot is wiped and returned. */
	assert_int_equal(crypto_key_generate(&kek), 0);
	assert_int_equal(crypto_key_wrap(kek, again, NULL, 0, wrapped), 0);
	wrapped[30] ^= 1;
	assert_int_equal(crypto_key_unwrap(kek, wrapped, NULL, 0, &w), -EBADMSG);
	assert_null(w);
	assert_int_equal(crypto_key_slab_live(), live + 2);
	crypto_key_free(again);
	assert_true(all_zero(slot, CRYPTO_KEY_LEN));
	crypto_key_free(kek);
}

/* A full slab is a clear error (-EMFILE) on every way to make a key, not a crash, and a freed key
 * makes room again. */
static void test_key_slab_full(void **state)
{
	crypto_key *keys[3] = { NULL }, *k = NULL, *kek = NULL;
	uint8_t wrapped[CRYPTO_WRAPPED_KEY_LEN], bytes[CRYPTO_KEY_LEN] = { 1 };
	size_t live, old;

	(void)state;
	assert_int_equal(crypto_key_slab_limit(0, NULL), -EINVAL);
	assert_int_equal(crypto_key_slab_limit((size_t)1 << 30, NULL), -EINVAL);
	assert_int_equal(crypto_key_generate(&kek), 0);
	assert_int_equal(crypto_key_wrap(kek, kek, NULL, 0, wrapped), 0);
	live = crypto_key_slab_live();
	assert_int_equal(crypto_key_slab_limit(live + 3, &old), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(crypto_key_generate(&keys[i]), 0);
	assert_int_equal(crypto_key_generate(&k), -EMFILE);
	assert_int_equal(crypto_key_from_bytes(bytes, &k), -EMFILE);
	assert_int_equal(crypto_key_unwrap(kek, wrapped, NULL, 0, &k), -EMFILE);
	assert_null(k);
	crypto_key_free(keys[1]);
	assert_int_equal(crypto_key_unwrap(kek, wrapped, NULL, 0, &k), 0);
	assert_memory_equal(crypto_key_bytes(k), crypto_key_bytes(kek), CRYPTO_KEY_LEN);
	assert_int_equal(crypto_key_slab_limit(old, NULL), 0);
	crypto_key_free(k);
	crypto_key_free(keys[0]);
	crypto_key_free(keys[2]);
	crypto_key_free(kek);
}

/* Many keys at once: the slab grows segment by segment past the first. */
static void test_key_slab_grow(void **state)
{
	enum { N = 5000 };
	crypto_key **keys = calloc(N, sizeof(*keys));

	(void)state;
	assert_non_null(keys);
	for (int i = 0; i < N; i++)
		assert_int_equal(crypto_key_generate(&keys[i]), 0);
	for (int i = 1; i < N; i++)
		assert_ptr_not_equal(crypto_key_bytes(keys[i]), crypto_key_bytes(keys[i - 1]));
	for (int i = 0; i < N; i++)
		crypto_key_free(keys[i]);
	free(keys);
}

static void test_key_wrap(void **state)
{
	static const uint8_t ad[] = "dataset/42/object/7";
	static const uint8_t ad2[] = "dataset/42/object/8";
	static const size_t flip_at[] = { 0, 11, 23, 24, 40, 55, 56, 63, 71 };
	crypto_key *kek = NULL, *kek2 = NULL, *key = NULL, *out = NULL;
	crypto_key *const sentinel = (crypto_key *)&state;
	uint8_t wrapped[CRYPTO_WRAPPED_KEY_LEN], wrapped2[CRYPTO_WRAPPED_KEY_LEN];

	(void)state;
	assert_int_equal(crypto_key_generate(&kek), 0);
	assert_int_equal(crypto_key_generate(&kek2), 0);
	assert_int_equal(crypto_key_generate(&key), 0);
	assert_int_equal(crypto_key_wrap(kek, key, ad, sizeof(ad), wrapped), 0);
	assert_int_equal(crypto_key_wrap(kek, key, ad, sizeof(ad), wrapped2), 0);
	assert_memory_not_equal(wrapped, wrapped2, sizeof(wrapped));	/* random nonce */

	assert_int_equal(crypto_key_unwrap(kek, wrapped, ad, sizeof(ad), &out), 0);
	assert_memory_equal(crypto_key_bytes(out), crypto_key_bytes(key), 32);
	crypto_key_free(out);

	/* The wrapped form is nonce || XChaCha20-Poly1305(kek, nonce, key, ad): check it with the
	 * raw primitive. */
	{
		uint8_t plain[32];

		assert_int_equal(crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
					 plain, NULL, wrapped + 24, 32, wrapped + 56, ad,
					 sizeof(ad), wrapped, crypto_key_bytes(kek)), 0);
		assert_memory_equal(plain, crypto_key_bytes(key), 32);
		sodium_memzero(plain, sizeof(plain));
	}

	out = sentinel;
	assert_int_equal(crypto_key_unwrap(kek2, wrapped, ad, sizeof(ad), &out), -EBADMSG);
	assert_int_equal(crypto_key_unwrap(kek, wrapped, ad2, sizeof(ad2), &out), -EBADMSG);
	assert_int_equal(crypto_key_unwrap(kek, wrapped, ad, sizeof(ad) - 1, &out), -EBADMSG);
	assert_int_equal(crypto_key_unwrap(kek, wrapped, NULL, 0, &out), -EBADMSG);
	for (size_t i = 0; i < sizeof(flip_at) / sizeof(flip_at[0]); i++) {
		memcpy(wrapped2, wrapped, sizeof(wrapped));
		wrapped2[flip_at[i]] ^= 0x04;
		assert_int_equal(crypto_key_unwrap(kek, wrapped2, ad, sizeof(ad), &out), -EBADMSG);
	}
	assert_ptr_equal(out, sentinel);

	/* No associated data at all is allowed, and then binds nothing else. */
	assert_int_equal(crypto_key_wrap(kek, key, NULL, 0, wrapped), 0);
	out = NULL;
	assert_int_equal(crypto_key_unwrap(kek, wrapped, NULL, 0, &out), 0);
	assert_memory_equal(crypto_key_bytes(out), crypto_key_bytes(key), 32);
	crypto_key_free(out);

	crypto_key_free(key);
	crypto_key_free(kek2);
	crypto_key_free(kek);
}

/* crypto_key_rewrap(): the key moved from one wrapping to another (issue 16: a shared object's
 * key wrapped again for each version), as unwrap then wrap would; a wrapping that does not
 * unwrap (other kek, other AD, a flipped bit) is refused, nothing written; the scratch key holds
 * no key afterwards, on either path. */
static void test_key_rewrap(void **state)
{
	static const uint8_t ad[] = "version 1, object 7";
	static const uint8_t ad2[] = "version 2, object 7";
	static const uint8_t zero[32];
	crypto_key *kek = NULL, *kek2 = NULL, *key = NULL, *scratch = NULL, *out = NULL;
	uint8_t wrapped[CRYPTO_WRAPPED_KEY_LEN], moved[CRYPTO_WRAPPED_KEY_LEN];
	uint8_t bad[CRYPTO_WRAPPED_KEY_LEN], before[CRYPTO_WRAPPED_KEY_LEN];

	(void)state;
	assert_int_equal(crypto_key_generate(&kek), 0);
	assert_int_equal(crypto_key_generate(&kek2), 0);
	assert_int_equal(crypto_key_generate(&key), 0);
	assert_int_equal(crypto_key_generate(&scratch), 0);
	assert_int_equal(crypto_key_wrap(kek, key, ad, sizeof(ad), wrapped), 0);
	assert_int_equal(crypto_key_rewrap(kek, wrapped, ad, sizeof(ad), kek2, ad2, sizeof(ad2),
					   scratch, moved), 0);
	assert_memory_equal(crypto_key_bytes(scratch), zero, 32);
	assert_int_equal(crypto_key_unwrap(kek2, moved, ad2, sizeof(ad2), &out), 0);
	assert_memory_equal(crypto_key_bytes(out), crypto_key_bytes(key), 32);
	crypto_key_free(out);
	out = NULL;
	/* Bound to the new place only. */
	assert_int_equal(crypto_key_unwrap(kek2, moved, ad, sizeof(ad), &out), -EBADMSG);
	assert_int_equal(crypto_key_unwrap(kek, moved, ad2, sizeof(ad2), &out), -EBADMSG);

	memset(moved, 0xa5, sizeof(moved));
	memcpy(before, moved, sizeof(moved));
	assert_int_equal(crypto_key_rewrap(kek2, wrapped, ad, sizeof(ad), kek2, ad2, sizeof(ad2),
					   scratch, moved), -EBADMSG);
	assert_int_equal(crypto_key_rewrap(kek, wrapped, ad2, sizeof(ad2), kek2, ad2, sizeof(ad2),
					   scratch, moved), -EBADMSG);
	for (size_t i = 0; i < sizeof(wrapped); i += 7) {
		memcpy(bad, wrapped, sizeof(bad));
		bad[i] ^= 0x10;
		assert_int_equal(crypto_key_rewrap(kek, bad, ad, sizeof(ad), kek2, ad2, sizeof(ad2),
						   scratch, moved), -EBADMSG);
		assert_memory_equal(crypto_key_bytes(scratch), zero, 32);
	}
	assert_memory_equal(moved, before, sizeof(moved));
	assert_int_equal(crypto_key_rewrap(kek, wrapped, ad, sizeof(ad), kek2, ad2, sizeof(ad2),
					   NULL, moved), -EINVAL);

	crypto_key_free(scratch);
	crypto_key_free(key);
	crypto_key_free(kek2);
	crypto_key_free(kek);
}

/* ---- Master key file ----------------------------------------------------------------------- */

static void test_master_roundtrip(void **state)
{
	const struct crypto_kdf_params min = crypto_kdf_params_min();
	crypto_secret *pass = make_secret("correct horse battery staple\n");
	crypto_secret *wrong = make_secret("correct horse battery stapler");
	crypto_key *const sentinel = (crypto_key *)&state;
	crypto_key *master = NULL, *again = sentinel;
	uint8_t before[256], after[256];
	size_t n_before, n_after;
	struct stat st;

	(void)state;
	assert_int_equal(crypto_master_create(tmp_dirfd, "master.key", pass, &min, &master), 0);
	assert_int_equal(fstatat(tmp_dirfd, "master.key", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, CRYPTO_MASTER_FILE_LEN);

	/* Header fields as specified (little-endian). */
	n_before = slurp("master.key", before, sizeof(before));
	assert_int_equal(n_before, CRYPTO_MASTER_FILE_LEN);
	assert_memory_equal(before, "ENCLMKEY", 8);
	assert_memory_equal(before + 8, "\x01\x00\x00\x00" "\x02\x00\x00\x00", 8);
	assert_memory_equal(before + 16, "\x01\x00\x00\x00\x00\x00\x00\x00", 8);
	assert_memory_equal(before + 24, "\x00\x20\x00\x00\x00\x00\x00\x00", 8);
	/* The wrapped key does not contain the key itself. */
	assert_null(memmem(before, n_before, crypto_key_bytes(master), 32));

	assert_int_equal(crypto_master_unlock(tmp_dirfd, "master.key", pass, &again), 0);
	assert_memory_equal(crypto_key_bytes(again), crypto_key_bytes(master), 32);
	crypto_key_free(again);

	/* Wrong passphrase: rejected, file untouched. */
	again = sentinel;
	assert_int_equal(crypto_master_unlock(tmp_dirfd, "master.key", wrong, &again),
			 -EKEYREJECTED);
	assert_ptr_equal(again, sentinel);
	n_after = slurp("master.key", after, sizeof(after));
	assert_int_equal(n_after, n_before);
	assert_memory_equal(after, before, n_before);

	/* Never overwritten. */
	assert_int_equal(crypto_master_create(tmp_dirfd, "master.key", wrong, &min, &again),
			 -EEXIST);
	assert_ptr_equal(again, sentinel);
	n_after = slurp("master.key", after, sizeof(after));
	assert_int_equal(n_after, n_before);
	assert_memory_equal(after, before, n_before);
	assert_int_equal(crypto_master_unlock(tmp_dirfd, "master.key", pass, &again), 0);
	assert_memory_equal(crypto_key_bytes(again), crypto_key_bytes(master), 32);
	crypto_key_free(again);

	/* A second master key gets its own salt, nonce and key. */
	again = NULL;
	assert_int_equal(crypto_master_create(tmp_dirfd, "master2.key", pass, &min, &again), 0);
	n_after = slurp("master2.key", after, sizeof(after));
	assert_memory_not_equal(after + 32, before + 32, 16);
	assert_memory_not_equal(after + 48, before + 48, 24);
	assert_memory_not_equal(crypto_key_bytes(again), crypto_key_bytes(master), 32);
	crypto_key_free(again);

	crypto_key_free(master);
	crypto_secret_free(wrong);
	crypto_secret_free(pass);
}

/* Each malformed variant of a good file must be refused with this error. */
static void expect_unlock(const char *name, const uint8_t *file, size_t len,
			  const crypto_secret *pass, int want)
{
	crypto_key *const sentinel = (crypto_key *)&name;
	crypto_key *key = sentinel;

	spit(name, file, len, 0600);
	assert_int_equal(crypto_master_unlock(tmp_dirfd, name, pass, &key), want);
	assert_ptr_equal(key, sentinel);
}

static void test_master_malformed(void **state)
{
	const struct crypto_kdf_params min = crypto_kdf_params_min();
	crypto_secret *pass = make_secret("pass");
	crypto_key *master = NULL;
	uint8_t good[256], bad[256];
	size_t n;

	(void)state;
	assert_int_equal(crypto_master_create(tmp_dirfd, "good.key", pass, &min, &master), 0);
	crypto_key_free(master);
	n = slurp("good.key", good, sizeof(good));
	assert_int_equal(n, CRYPTO_MASTER_FILE_LEN);

	/* The unmodified copy unlocks, so each failure below is due to its one change. */
	master = NULL;
	spit("copy.key", good, n, 0600);
	assert_int_equal(crypto_master_unlock(tmp_dirfd, "copy.key", pass, &master), 0);
	crypto_key_free(master);

	expect_unlock("trunc.key", good, n - 1, pass, -EBADMSG);
	expect_unlock("empty.key", good, 0, pass, -EBADMSG);
	memcpy(bad, good, n);
	bad[n] = 0;
	expect_unlock("long.key", bad, n + 1, pass, -EBADMSG);

	memcpy(bad, good, n);
	bad[0] = 'X';
	expect_unlock("magic.key", bad, n, pass, -EBADMSG);
	memcpy(bad, good, n);
	bad[8] = 2;	/* version */
	expect_unlock("version.key", bad, n, pass, -EBADMSG);
	memcpy(bad, good, n);
	bad[12] = 1;	/* algorithm: Argon2i */
	expect_unlock("alg.key", bad, n, pass, -EBADMSG);
	memcpy(bad, good, n);
	memcpy(bad + 24, "\x00\x00\x00\x00\x10\x00\x00\x00", 8);	/* memlimit 64 GiB */
	expect_unlock("mem64g.key", bad, n, pass, -EBADMSG);
	memcpy(bad, good, n);
	memcpy(bad + 24, "\x01\x00\x00\x00\x01\x00\x00\x00", 8);	/* 4 GiB + 1 */
	expect_unlock("mem4g1.key", bad, n, pass, -EBADMSG);
	memcpy(bad, good, n);
	memcpy(bad + 24, "\x00\x10\x00\x00\x00\x00\x00\x00", 8);	/* 4 KiB, below minimum */
	expect_unlock("memlow.key", bad, n, pass, -EBADMSG);
	memcpy(bad, good, n);
	bad[16] = 17;	/* opslimit */
	expect_unlock("ops17.key", bad, n, pass, -EBADMSG);
	memcpy(bad, good, n);
	bad[16] = 0;
	expect_unlock("ops0.key", bad, n, pass, -EBADMSG);

	/* Well-formed but altered: the tag (or the KEK) no longer matches. */
	memcpy(bad, good, n);
	bad[16] = 2;	/* opslimit, in range, covered by the AD */
	expect_unlock("ops2.key", bad, n, pass, -EKEYREJECTED);
	memcpy(bad, good, n);
	bad[40] ^= 1;	/* salt */
	expect_unlock("salt.key", bad, n, pass, -EKEYREJECTED);
	memcpy(bad, good, n);
	bad[50] ^= 1;	/* nonce */
	expect_unlock("nonce.key", bad, n, pass, -EKEYREJECTED);
	memcpy(bad, good, n);
	bad[80] ^= 1;	/* ciphertext */
	expect_unlock("ct.key", bad, n, pass, -EKEYREJECTED);
	memcpy(bad, good, n);
	bad[119] ^= 1;	/* tag */
	expect_unlock("tag.key", bad, n, pass, -EKEYREJECTED);

	/* Missing file; a symlink in its place is not followed. */
	master = NULL;
	assert_int_equal(crypto_master_unlock(tmp_dirfd, "missing.key", pass, &master), -ENOENT);
	assert_int_equal(symlinkat("good.key", tmp_dirfd, "link.key"), 0);
	assert_int_equal(crypto_master_unlock(tmp_dirfd, "link.key", pass, &master), -ELOOP);
	/* A FIFO in its place is refused at once instead of blocking the reader. */
	assert_int_equal(mkfifoat(tmp_dirfd, "fifo.key", 0600), 0);
	assert_int_equal(crypto_master_unlock(tmp_dirfd, "fifo.key", pass, &master), -EBADMSG);
	assert_null(master);

	crypto_secret_free(pass);
}

static void test_master_create_params(void **state)
{
	const struct crypto_kdf_params bad[] = {
		{ .opslimit = 0, .memlimit = crypto_pwhash_MEMLIMIT_MIN },
		{ .opslimit = 17, .memlimit = crypto_pwhash_MEMLIMIT_MIN },
		{ .opslimit = 1, .memlimit = crypto_pwhash_MEMLIMIT_MIN - 1 },
		{ .opslimit = 1, .memlimit = (4ull << 30) + 1 },
		{ .opslimit = 1, .memlimit = 64ull << 30 },
	};
	const struct crypto_kdf_params def = crypto_kdf_params_default();
	crypto_secret *pass = make_secret("pass");
	crypto_key *master = NULL;
	struct stat st;

	(void)state;
	assert_int_equal(def.opslimit, crypto_pwhash_OPSLIMIT_MODERATE);
	assert_int_equal(def.memlimit, crypto_pwhash_MEMLIMIT_MODERATE);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(crypto_master_create(tmp_dirfd, "params.key", pass, &bad[i],
						      &master), -EINVAL);
		assert_null(master);
		/* Nothing left behind. */
		assert_int_equal(fstatat(tmp_dirfd, "params.key", &st, AT_SYMLINK_NOFOLLOW), -1);
		assert_int_equal(errno, ENOENT);
	}
	/* A symlink at the name is neither followed nor replaced. */
	assert_int_equal(symlinkat("nowhere", tmp_dirfd, "dangling.key"), 0);
	{
		const struct crypto_kdf_params min = crypto_kdf_params_min();

		assert_int_equal(crypto_master_create(tmp_dirfd, "dangling.key", pass, &min,
						      &master), -EEXIST);
		assert_int_equal(fstatat(tmp_dirfd, "nowhere", &st, AT_SYMLINK_NOFOLLOW), -1);
	}
	crypto_secret_free(pass);
}

/* A write that fails half way (file size limit) must leave no file behind. In a child: the limit
 * and the ignored SIGXFSZ must not leak into the other tests. */
static void test_master_create_cleanup(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		const struct crypto_kdf_params min = crypto_kdf_params_min();
		const struct rlimit small = { .rlim_cur = 100, .rlim_max = 100 };
		crypto_secret *pass = NULL;
		crypto_key *master = NULL;
		struct stat st;
		int r;

		signal(SIGXFSZ, SIG_IGN);
		if (setrlimit(RLIMIT_FSIZE, &small) != 0)
			_exit(1);
		if (pipe_secret("pass", 4, &pass) != 0)
			_exit(2);
		r = crypto_master_create(tmp_dirfd, "fsize.key", pass, &min, &master);
		if (r != -EFBIG || master)
			_exit(3);
		if (fstatat(tmp_dirfd, "fsize.key", &st, AT_SYMLINK_NOFOLLOW) == 0 ||
		    errno != ENOENT)
			_exit(4);
		crypto_secret_free(pass);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- Passphrases --------------------------------------------------------------------------- */

static void expect_passphrase(const char *input, size_t len, const char *want, size_t want_len)
{
	crypto_secret *s = NULL;

	assert_int_equal(pipe_secret(input, len, &s), 0);
	assert_int_equal(crypto_secret_len(s), want_len);
	assert_memory_equal(crypto_secret_data(s), want, want_len);
	crypto_secret_free(s);
}

static void test_passphrase_fd(void **state)
{
	crypto_secret *const sentinel = (crypto_secret *)&state;
	crypto_secret *s = sentinel;
	char *big = malloc(CRYPTO_PASSPHRASE_MAX + 3);

	(void)state;
	assert_non_null(big);
	expect_passphrase("secret\n", 7, "secret", 6);
	expect_passphrase("a\r\n", 3, "a", 1);
	expect_passphrase("secret", 6, "secret", 6);
	expect_passphrase("a\n\n", 3, "a\n", 2);	/* one newline only */
	expect_passphrase("a\r", 2, "a\r", 2);		/* a lone CR is data */
	expect_passphrase("p\0q\n", 4, "p\0q", 3);	/* bytes, not a C string */

	assert_int_equal(pipe_secret("\n", 1, &s), -EINVAL);
	assert_int_equal(pipe_secret("\r\n", 2, &s), -EINVAL);
	assert_int_equal(pipe_secret("", 0, &s), -EINVAL);

	memset(big, 'x', CRYPTO_PASSPHRASE_MAX + 3);
	expect_passphrase(big, CRYPTO_PASSPHRASE_MAX, big, CRYPTO_PASSPHRASE_MAX);
	assert_int_equal(pipe_secret(big, CRYPTO_PASSPHRASE_MAX + 1, &s), -E2BIG);
	big[CRYPTO_PASSPHRASE_MAX] = '\r';
	big[CRYPTO_PASSPHRASE_MAX + 1] = '\n';
	expect_passphrase(big, CRYPTO_PASSPHRASE_MAX + 2, big, CRYPTO_PASSPHRASE_MAX);
	assert_int_equal(pipe_secret(big, CRYPTO_PASSPHRASE_MAX + 3, &s), -E2BIG);
	big[CRYPTO_PASSPHRASE_MAX] = '\n';
	big[CRYPTO_PASSPHRASE_MAX + 1] = '\n';
	assert_int_equal(pipe_secret(big, CRYPTO_PASSPHRASE_MAX + 2, &s), -E2BIG);
	assert_ptr_equal(s, sentinel);
	assert_int_equal(crypto_passphrase_read_fd(-1, &s), -EINVAL);
	free(big);
	crypto_secret_free(NULL);
}

static void test_passphrase_file(void **state)
{
	static const mode_t refused[] = { 0644, 0640, 0604, 0660, 0602, 0620 };
	crypto_secret *const sentinel = (crypto_secret *)&state;
	crypto_secret *s = sentinel;
	char path[4200], lnk[4200], dir[4200];

	(void)state;
	path_in_tmp(path, sizeof(path), "pass.txt");
	path_in_tmp(lnk, sizeof(lnk), "pass.lnk");
	path_in_tmp(dir, sizeof(dir), "pass.dir");

	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		spit("pass.txt", "hunter2\n", 8, refused[i]);
		assert_int_equal(crypto_passphrase_read_file(path, &s), -EPERM);
	}
	assert_ptr_equal(s, sentinel);

	spit("pass.txt", "hunter2\n", 8, 0600);
	assert_int_equal(crypto_passphrase_read_file(path, &s), 0);
	assert_int_equal(crypto_secret_len(s), 7);
	assert_memory_equal(crypto_secret_data(s), "hunter2", 7);
	crypto_secret_free(s);
	s = sentinel;
	spit("pass.txt", "hunter2\n", 8, 0400);
	assert_int_equal(crypto_passphrase_read_file(path, &s), 0);
	crypto_secret_free(s);
	s = sentinel;

	assert_int_equal(symlinkat("pass.txt", tmp_dirfd, "pass.lnk"), 0);
	assert_int_equal(crypto_passphrase_read_file(lnk, &s), -ELOOP);
	assert_int_equal(mkdirat(tmp_dirfd, "pass.dir", 0700), 0);
	assert_int_equal(crypto_passphrase_read_file(dir, &s), -EINVAL);
	path_in_tmp(path, sizeof(path), "no-such-file");
	assert_int_equal(crypto_passphrase_read_file(path, &s), -ENOENT);
	assert_ptr_equal(s, sentinel);
}

/* Without a controlling terminal (a new session has none), prompting fails with -ENXIO instead of
 * falling back to stdin. Run in a child: setsid() must not affect the test runner. */
static void test_passphrase_prompt_no_tty(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		crypto_secret *s = NULL;

		if (setsid() < 0)
			_exit(2);
		_exit(crypto_passphrase_prompt("Passphrase: ", true, &s) == -ENXIO && !s ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* Child side of the pty test: make the pty slave our controlling terminal (a new session opening
 * a terminal acquires it), prompt, and report through the exit code. want NULL: expect -EINVAL. */
static int pty_prompt_child(const char *slave, bool confirm, const char *want)
{
	crypto_secret *s = NULL;
	struct termios t;
	int fd, r;

	if (setsid() < 0)
		return 10;
	fd = open(slave, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return 11;
	r = crypto_passphrase_prompt("Passphrase: ", confirm, &s);
	if (tcgetattr(fd, &t) < 0 || !(t.c_lflag & ECHO))
		return 12;	/* echo not restored */
	if (!want)
		return r == -EINVAL && !s ? 0 : 13;
	if (r != 0)
		return 14;
	if (crypto_secret_len(s) != strlen(want) ||
	    memcmp(crypto_secret_data(s), want, strlen(want)) != 0)
		return 15;
	crypto_secret_free(s);
	return 0;
}

/* Read the pty master until `text` has appeared in all output so far (kept in out, NUL-ended). */
static void pty_wait_for(int master, char *out, size_t cap, size_t *len, const char *text)
{
	while (!strstr(out, text)) {
		struct pollfd pfd = { .fd = master, .events = POLLIN };
		ssize_t n;

		assert_int_equal(poll(&pfd, 1, 10000), 1);
		n = read(master, out + *len, cap - 1 - *len);
		assert_true(n > 0);
		*len += (size_t)n;
		out[*len] = '\0';
	}
}

/* Type lines into the prompt through a pseudo-terminal, each only once the prompt asking for it
 * is shown (the prompt flushes earlier input). Returns the child's exit code. */
static int pty_prompt(bool confirm, const char *line1, const char *line2, const char *want,
		      const char *secret_text)
{
	char slave[256], out[4096] = "";
	size_t len = 0;
	int master, status;
	pid_t pid;

	master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0)
		return 77;
	assert_int_equal(grantpt(master), 0);
	assert_int_equal(unlockpt(master), 0);
	assert_int_equal(ptsname_r(master, slave, sizeof(slave)), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(master);
		_exit(pty_prompt_child(slave, confirm, want));
	}
	pty_wait_for(master, out, sizeof(out), &len, "Passphrase: ");
	assert_int_equal(write(master, line1, strlen(line1)), (ssize_t)strlen(line1));
	if (line2) {
		pty_wait_for(master, out, sizeof(out), &len, "confirm");
		assert_int_equal(write(master, line2, strlen(line2)), (ssize_t)strlen(line2));
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	close(master);
	/* Echo was off: what was typed never appeared on the terminal. */
	assert_null(strstr(out, secret_text));
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_passphrase_prompt_pty(void **state)
{
	int r;

	(void)state;
	r = pty_prompt(true, "s3cret-pty\n", "s3cret-pty\n", "s3cret-pty", "s3cret");
	if (r == 77)
		skip();
	assert_int_equal(r, 0);
	assert_int_equal(pty_prompt(false, "only-once\r\n", NULL, "only-once", "only"), 0);
	assert_int_equal(pty_prompt(true, "first-one\n", "frist-one\n", NULL, "one"), 0);
	assert_int_equal(pty_prompt(false, "\n", NULL, NULL, "Repeat"), 0);
}

/* ---- Process hardening --------------------------------------------------------------------- */

/* In a child: non-dumpable and a zero hard core limit cannot be undone. */
static void test_harden_process(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl;

		if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0)
			_exit(77);	/* already non-dumpable: the test would prove nothing */
		if (crypto_harden_process() != 0)
			_exit(1);
		if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
			_exit(2);
		if (getrlimit(RLIMIT_CORE, &rl) != 0 || rl.rlim_cur != 0 || rl.rlim_max != 0)
			_exit(3);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- Setup --------------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) < 0 ? -1 : 0;
}

/* A fresh directory under $ENCLAVE_TEST_TMPDIR (created if missing) or /tmp. */
static int setup_tmpdir(void **state)
{
	const char *base = getenv("ENCLAVE_TEST_TMPDIR");
	int n;

	(void)state;
	if (!base || !*base)
		base = "/tmp";
	if (mkdir(base, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "mkdir %s: %s\n", base, strerror(errno));
		return -1;
	}
	n = snprintf(tmp_path, sizeof(tmp_path), "%s/test_crypto.XXXXXX", base);
	if (n < 0 || (size_t)n >= sizeof(tmp_path) || !mkdtemp(tmp_path)) {
		fprintf(stderr, "mkdtemp under %s failed\n", base);
		return -1;
	}
	tmp_dirfd = open(tmp_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return tmp_dirfd < 0 ? -1 : 0;
}

static int teardown_tmpdir(void **state)
{
	(void)state;
	if (tmp_dirfd >= 0)
		close(tmp_dirfd);
	tmp_dirfd = -1;
	return nftw(tmp_path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ES256 (the visa key): the scalar derived from a seed gives the public key python3-cryptography
 * computes for (seed mod (n - 1)) + 1 (a seed above the group order included); signatures verify,
 * and a changed message, signature or key is refused. */
static void test_es256(void **state)
{
	static const struct {
		const char *seed, *x, *y;
	} kat[] = {
		{ "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
		  "6d472d2b01b00f2971eff6197e6031ede0cd8e68dd9cb53685ccf026e653cb30",
		  "1c29fb71aa0d8294313eac19e8a26124e8c669b977604408e6de12a8c6b63c07" },
		{ "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
		  "15d93eb187b7dc9ccd671b41e99c3f85a95275305c8f87a690db940da1f8848a",
		  "316e66589e27a05622a5eda78a8ab51b01025ac05cfb918df6ce2814cae35462" },
	};
	static const char msg[] = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9";
	crypto_es256 *k[2] = { NULL, NULL };
	uint8_t seed[32], x[32], y[32], want[32], sig[64], x2[32], y2[32];

	(void)state;
	for (size_t i = 0; i < sizeof(kat) / sizeof(kat[0]); i++) {
		crypto_key *sk = NULL;

		assert_int_equal(unhex(kat[i].seed, seed, sizeof(seed)), 32);
		assert_int_equal(crypto_key_from_bytes(seed, &sk), 0);
		assert_int_equal(crypto_es256_from_seed(sk, &k[i]), 0);
		crypto_key_free(sk);
		crypto_es256_public(k[i], x, y);
		assert_int_equal(unhex(kat[i].x, want, sizeof(want)), 32);
		assert_memory_equal(x, want, 32);
		assert_int_equal(unhex(kat[i].y, want, sizeof(want)), 32);
		assert_memory_equal(y, want, 32);
	}
	crypto_es256_public(k[0], x, y);
	crypto_es256_public(k[1], x2, y2);
	assert_int_equal(crypto_es256_sign(k[0], msg, strlen(msg), sig), 0);
	assert_int_equal(crypto_es256_verify(x, y, msg, strlen(msg), sig), 0);
	/* Forgeries: another message, a flipped signature bit, another key. */
	assert_int_equal(crypto_es256_verify(x, y, msg, strlen(msg) - 1, sig), -EBADMSG);
	sig[40] ^= 0x20;
	assert_int_equal(crypto_es256_verify(x, y, msg, strlen(msg), sig), -EBADMSG);
	sig[40] ^= 0x20;
	assert_int_equal(crypto_es256_verify(x2, y2, msg, strlen(msg), sig), -EBADMSG);
	/* Not a point of the curve. */
	y[31] ^= 1;
	assert_int_equal(crypto_es256_verify(x, y, msg, strlen(msg), sig), -EINVAL);
	crypto_es256_free(k[0]);
	crypto_es256_free(k[1]);
	crypto_es256_free(NULL);
}

/* The streaming SHA-256 (OpenSSL's): FIPS 180-2's "abc" and two-block vectors, and a stream fed
 * in uneven pieces equal to libsodium's one-shot digest of the same bytes. */
static void test_sha256_stream(void **state)
{
	static const uint8_t abc[32] = {
		0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
		0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
		0xf2, 0x00, 0x15, 0xad,
	};
	static const uint8_t two[32] = {
		0x24, 0x8d, 0x6a, 0x61, 0xd2, 0x06, 0x38, 0xb8, 0xe5, 0xc0, 0x26, 0x93, 0x0c, 0x3e,
		0x60, 0x39, 0xa3, 0x3c, 0xe4, 0x59, 0x64, 0xff, 0x21, 0x67, 0xf6, 0xec, 0xed, 0xd4,
		0x19, 0xdb, 0x06, 0xc1,
	};
	static const char msg2[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	static uint8_t big[300001];
	uint8_t got[32], want[32];
	crypto_sha256 *h = NULL;

	(void)state;
	assert_int_equal(crypto_sha256_new(&h), 0);
	assert_int_equal(crypto_sha256_update(h, "a", 1), 0);
	assert_int_equal(crypto_sha256_update(h, "", 0), 0);
	assert_int_equal(crypto_sha256_update(h, "bc", 2), 0);
	assert_int_equal(crypto_sha256_final(h, got), 0);
	assert_memory_equal(got, abc, 32);
	crypto_sha256_free(h);
	assert_int_equal(crypto_sha256_new(&h), 0);
	assert_int_equal(crypto_sha256_update(h, msg2, strlen(msg2)), 0);
	assert_int_equal(crypto_sha256_final(h, got), 0);
	assert_memory_equal(got, two, 32);
	crypto_sha256_free(h);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7 + (i >> 11));
	crypto_hash_sha256(want, big, sizeof(big));
	assert_int_equal(crypto_sha256_new(&h), 0);
	for (size_t off = 0, step = 1; off < sizeof(big); off += step, step = step * 3 + 1)
		assert_int_equal(crypto_sha256_update(h, big + off, step < sizeof(big) - off ? step
							 : sizeof(big) - off), 0);
	assert_int_equal(crypto_sha256_final(h, got), 0);
	assert_memory_equal(got, want, 32);
	crypto_sha256_free(h);
	crypto_sha256_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kat_aes256gcm),
		cmocka_unit_test(test_kat_chacha20poly1305),
		cmocka_unit_test(test_kat_xchacha20poly1305),
		cmocka_unit_test(test_mac_keyed_blake2b),
		cmocka_unit_test(test_chunk_ad_layout),
		cmocka_unit_test(test_chunk_kat_aes),
		cmocka_unit_test(test_chunk_kat_chacha),
		cmocka_unit_test(test_chunk_roundtrip_aes),
		cmocka_unit_test(test_chunk_roundtrip_chacha),
		cmocka_unit_test(test_chunk_tamper_aes),
		cmocka_unit_test(test_chunk_tamper_chacha),
		cmocka_unit_test(test_chunk_ctx_states),
		cmocka_unit_test(test_aead_names),
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_random_pool),
		cmocka_unit_test(test_random_threads),
		cmocka_unit_test(test_random_keystream),
		cmocka_unit_test(test_key_wrap),
		cmocka_unit_test(test_key_rewrap),
		cmocka_unit_test(test_key_slab_wipe),
		cmocka_unit_test(test_key_slab_full),
		cmocka_unit_test(test_key_slab_grow),
		cmocka_unit_test(test_master_roundtrip),
		cmocka_unit_test(test_master_malformed),
		cmocka_unit_test(test_master_create_params),
		cmocka_unit_test(test_master_create_cleanup),
		cmocka_unit_test(test_passphrase_fd),
		cmocka_unit_test(test_passphrase_file),
		cmocka_unit_test(test_passphrase_prompt_no_tty),
		cmocka_unit_test(test_passphrase_prompt_pty),
		cmocka_unit_test(test_harden_process),
		cmocka_unit_test(test_es256),
		cmocka_unit_test(test_sha256_stream),
	};

	if (crypto_init() != 0) {
		fprintf(stderr, "crypto_init failed\n");
		return 1;
	}
	return cmocka_run_group_tests(tests, setup_tmpdir, teardown_tmpdir);
}
