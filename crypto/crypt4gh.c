/* crypt4gh: the GA4GH Crypt4GH 1.0 format (crypto/crypt4gh.h, docs/CRYPT4GH.md).
 *
 * Written from the specification (samtools hts-specs crypt4gh, sections 3 and 4) and the key
 * format the reference tools document; the primitives are libsodium's. Every length read from a
 * file is checked against what is left before it is used, every count against a cap set here.
 */
#include "crypto/crypt4gh.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "crypto/bcrypt_pbkdf.h"

#define NONCE_LEN crypto_aead_chacha20poly1305_ietf_NPUBBYTES   /* 12 */
#define MAC_LEN crypto_aead_chacha20poly1305_ietf_ABYTES        /* 16 */
#define PKT_ENC_X25519 0u
#define PKT_DATA_PARAMS 0u
#define PKT_EDIT_LIST 1u

_Static_assert(NONCE_LEN + MAC_LEN == C4GH_SEGMENT_OVERHEAD, "segment overhead");
_Static_assert(4 + 4 + C4GH_KEY_LEN + NONCE_LEN == C4GH_PACKET_FIXED, "packet layout");

/* ---- Keys ---------------------------------------------------------------------------------- */

int c4gh_keypair_generate(crypto_key **ret_sk, uint8_t ret_pk[static C4GH_KEY_LEN])
{
	crypto_key *sk = NULL;
	int r = crypto_key_generate(&sk);

	if (r < 0)
		return r;
	c4gh_public_key(sk, ret_pk);
	*ret_sk = sk;
	return 0;
}

void c4gh_public_key(const crypto_key *sk, uint8_t ret_pk[static C4GH_KEY_LEN])
{
	crypto_scalarmult_base(ret_pk, crypto_key_bytes(sk));
}

void c4gh_fingerprint(const uint8_t pk[static C4GH_KEY_LEN], char ret_hex[static 65])
{
	uint8_t h[crypto_hash_sha256_BYTES];

	crypto_hash_sha256(h, pk, C4GH_KEY_LEN);
	sodium_bin2hex(ret_hex, 65, h, sizeof(h));
}

#define PUB_BEGIN "-----BEGIN CRYPT4GH PUBLIC KEY-----"
#define PUB_END "-----END CRYPT4GH PUBLIC KEY-----"
#define SEC_BEGIN "-----BEGIN CRYPT4GH PRIVATE KEY-----"
#define SEC_END "-----END CRYPT4GH PRIVATE KEY-----"
#define SSH_BEGIN "-----BEGIN OPENSSH PRIVATE KEY-----"
#define SSH_END "-----END OPENSSH PRIVATE KEY-----"
/* Largest armoured key file we read (an OpenSSH ed25519 key with a long comment is ~500 bytes). */
#define KEY_TEXT_MAX 8192u

void c4gh_pubkey_format(const uint8_t pk[static C4GH_KEY_LEN], char out[static C4GH_PUBKEY_TEXT_MAX])
{
	char b64[sodium_base64_ENCODED_LEN(C4GH_KEY_LEN, sodium_base64_VARIANT_ORIGINAL)];

	sodium_bin2base64(b64, sizeof(b64), pk, C4GH_KEY_LEN, sodium_base64_VARIANT_ORIGINAL);
	snprintf(out, C4GH_PUBKEY_TEXT_MAX, "%s\n%s\n%s\n", PUB_BEGIN, b64, PUB_END);
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The base64 body between begin and end lines of an armoured text: [*ret_b, *ret_b + *ret_n).
 * -EBADMSG when the armour is not there (what == NULL: quietly). */
static int armour_body(const char *text, size_t len, const char *begin, const char *end,
		       const char *what, const char **ret_b, size_t *ret_n)
{
	size_t bl = strlen(begin), el = strlen(end), i = 0, j;

	if (len > KEY_TEXT_MAX)
		return what ? err_set(-EBADMSG, "%s: longer than %u bytes", what, KEY_TEXT_MAX)
			    : -EBADMSG;
	while (i < len && is_space(text[i]))
		i++;
	if (len - i < bl || memcmp(text + i, begin, bl) != 0)
		return what ? err_set(-EBADMSG, "%s: does not begin with \"%s\"", what, begin)
			    : -EBADMSG;
	i += bl;
	j = len;
	while (j > i && is_space(text[j - 1]))
		j--;
	if (j - i < el || memcmp(text + j - el, end, el) != 0)
		return what ? err_set(-EBADMSG, "%s: does not end with \"%s\"", what, end)
			    : -EBADMSG;
	*ret_b = text + i;
	*ret_n = j - el - i;
	return 0;
}

/* Decode canonical base64 (line breaks and spaces ignored) into out (room for cap); *ret_n its
 * length. Another text for the same bytes (libsodium 1.0.18 alone reads bytes from 0x80 up as
 * '/') is refused, so a key has one text. */
static int b64_decode(const char *b, size_t n, uint8_t *out, size_t cap, size_t *ret_n)
{
	return base64_decode_canonical(b, n, " \t\r\n", out, cap, ret_n);
}

int c4gh_pubkey_parse(const char *text, size_t len, uint8_t ret_pk[static C4GH_KEY_LEN])
{
	uint8_t buf[64];
	const char *b = NULL;
	size_t n = 0, got;
	int r;

	r = armour_body(text, len, PUB_BEGIN, PUB_END, "not a Crypt4GH public key", &b, &n);
	if (r < 0)
		return r;
	if (b64_decode(b, n, buf, sizeof(buf), &got) < 0 || got != C4GH_KEY_LEN)
		return err_set(-EBADMSG, "not a Crypt4GH public key: the key is not 32 bytes of "
			       "base64");
	memcpy(ret_pk, buf, C4GH_KEY_LEN);
	return 0;
}

/* A cursor over decoded key bytes. */
struct cur {
	const uint8_t *p;
	size_t n;
};

/* A c4gh-v1 "string": u16 big-endian length and the bytes. */
static int cur_str16(struct cur *c, const uint8_t **ret_p, size_t *ret_n)
{
	size_t l;

	if (c->n < 2)
		return -EBADMSG;
	l = (size_t)c->p[0] << 8 | c->p[1];
	if (c->n - 2 < l)
		return -EBADMSG;
	*ret_p = c->p + 2;
	*ret_n = l;
	c->p += 2 + l;
	c->n -= 2 + l;
	return 0;
}

/* An SSH "string": u32 big-endian length and the bytes. */
static int cur_str32(struct cur *c, const uint8_t **ret_p, size_t *ret_n)
{
	uint32_t l;

	if (c->n < 4)
		return -EBADMSG;
	l = get_be32(c->p);
	if (c->n - 4 < l)
		return -EBADMSG;
	*ret_p = c->p + 4;
	*ret_n = l;
	c->p += 4 + l;
	c->n -= 4 + l;
	return 0;
}

static bool str_is(const uint8_t *p, size_t n, const char *s)
{
	return n == strlen(s) && memcmp(p, s, n) == 0;
}

#define C4GH_KEY_MAGIC "c4gh-v1"
#define SCRYPT_N (1u << 14)
#define SCRYPT_R 8u
#define SCRYPT_P 1u
#define KDF_SALT_LEN 16u
#define PBKDF2_ROUNDS_MAX 10000000u

/* A Crypt4GH key's kdf options (rounds u32 big-endian || salt), checked before any passphrase is
 * asked for or any work is done: a hostile file cannot make us hang. */
static int kdf_check(const uint8_t *name, size_t nl, const uint8_t *opts, size_t ol)
{
	uint32_t rounds;

	if (!str_is(name, nl, "scrypt") && !str_is(name, nl, "bcrypt") &&
	    !str_is(name, nl, "pbkdf2_hmac_sha256"))
		return err_set(-ENOTSUP, "Crypt4GH private key: kdf \"%.*s\" not supported (scrypt, "
			       "bcrypt and pbkdf2_hmac_sha256 are)", (int)MIN(nl, 32u),
			       (const char *)name);
	if (ol < 4)
		return err_set(-EBADMSG, "Crypt4GH private key: kdf options shorter than 4 bytes");
	rounds = get_be32(opts);
	if (str_is(name, nl, "pbkdf2_hmac_sha256") && (rounds == 0 || rounds > PBKDF2_ROUNDS_MAX))
		return err_set(rounds ? -E2BIG : -EBADMSG, "Crypt4GH private key: pbkdf2 rounds %u "
			       "outside 1..%u", rounds, PBKDF2_ROUNDS_MAX);
	if (str_is(name, nl, "bcrypt")) {
		if (rounds == 0)
			return err_set(-EBADMSG, "Crypt4GH private key: bcrypt with 0 rounds");
		if (rounds > CRYPTO_BCRYPT_ROUNDS_MAX)
			return err_set(-E2BIG, "Crypt4GH private key: bcrypt with %u rounds, more "
				       "than the %u accepted here (re-protect the key with fewer)",
				       rounds, CRYPTO_BCRYPT_ROUNDS_MAX);
		if (ol == 4 || ol - 4 > CRYPTO_BCRYPT_SALT_MAX)
			return err_set(-EBADMSG, "Crypt4GH private key: a bcrypt salt of %zu bytes "
				       "(1 to %u)", ol - 4, CRYPTO_BCRYPT_SALT_MAX);
	}
	return 0;
}

/* The key-encryption key from the passphrase, per kdf (already checked by kdf_check). */
static int kdf_derive(const uint8_t *name, size_t nl, const uint8_t *opts, size_t ol,
		      const crypto_secret *pass, uint8_t ret_k[static 32])
{
	uint32_t rounds = get_be32(opts);
	int r;

	if (str_is(name, nl, "scrypt")) {
		/* The reference tools use N = 2^14, r = 8, p = 1 whatever "rounds" says. */
		if (crypto_pwhash_scryptsalsa208sha256_ll(crypto_secret_data(pass),
							  crypto_secret_len(pass), opts + 4, ol - 4,
							  SCRYPT_N, SCRYPT_R, SCRYPT_P, ret_k,
							  32) != 0)
			return err_set(-ENOMEM, "Crypt4GH private key: scrypt failed");
		return 0;
	}
	if (str_is(name, nl, "bcrypt")) {
		/* As the reference tools: bcrypt_pbkdf(passphrase, salt, rounds), 32 bytes. */
		r = crypto_bcrypt_pbkdf(crypto_secret_data(pass), crypto_secret_len(pass), opts + 4,
					ol - 4, rounds, ret_k, 32);
		return r < 0 ? err_set(r, "Crypt4GH private key: bcrypt_pbkdf refused its "
				       "parameters") : 0;
	}
	if (PKCS5_PBKDF2_HMAC((const char *)crypto_secret_data(pass), (int)crypto_secret_len(pass),
			      opts + 4, (int)(ol - 4), (int)rounds, EVP_sha256(), 32, ret_k) != 1)
		return err_set(-EIO, "Crypt4GH private key: pbkdf2 failed");
	return 0;
}

/* The c4gh-v1 encoding (decoded from base64) into a key. */
static int parse_c4gh_v1(const uint8_t *buf, size_t len, const crypto_secret *pass,
			 crypto_key **ret_sk)
{
	struct cur c = { buf, len };
	const uint8_t *kdf, *opts = NULL, *cipher, *blob;
	size_t kl, ol = 0, cl, bl;
	uint8_t kek[32], sk[32];
	int r;

	if (len < 7 || memcmp(buf, C4GH_KEY_MAGIC, 7) != 0)
		return err_set(-EBADMSG, "Crypt4GH private key: no \"c4gh-v1\" magic");
	c.p += 7;
	c.n -= 7;
	if (cur_str16(&c, &kdf, &kl) < 0)
		return err_set(-EBADMSG, "Crypt4GH private key: cut in the kdf name");
	if (!str_is(kdf, kl, "none") && cur_str16(&c, &opts, &ol) < 0)
		return err_set(-EBADMSG, "Crypt4GH private key: cut in the kdf options");
	if (cur_str16(&c, &cipher, &cl) < 0 || cur_str16(&c, &blob, &bl) < 0)
		return err_set(-EBADMSG, "Crypt4GH private key: cut in the cipher or the key");
	/* An optional comment may follow; it is not used. */
	if (str_is(cipher, cl, "none")) {
		if (!str_is(kdf, kl, "none"))
			return err_set(-EBADMSG, "Crypt4GH private key: a kdf without a cipher");
		if (bl != 32)
			return err_set(-EBADMSG, "Crypt4GH private key: the key is %zu bytes, not 32",
				       bl);
		return crypto_key_from_bytes(blob, ret_sk);
	}
	if (!str_is(cipher, cl, "chacha20_poly1305"))
		return err_set(-ENOTSUP, "Crypt4GH private key: cipher \"%.*s\" not supported "
			       "(chacha20_poly1305 is)", (int)MIN(cl, 32u), (const char *)cipher);
	if (str_is(kdf, kl, "none"))
		return err_set(-EBADMSG, "Crypt4GH private key: a cipher without a kdf");
	if ((r = kdf_check(kdf, kl, opts, ol)) < 0)
		return r;
	if (bl != NONCE_LEN + 32 + MAC_LEN)
		return err_set(-EBADMSG, "Crypt4GH private key: the encrypted key is %zu bytes, not "
			       "%u", bl, (unsigned)(NONCE_LEN + 32 + MAC_LEN));
	if (!pass)
		return err_set(-ENOKEY, "the Crypt4GH private key is protected by a passphrase");
	r = kdf_derive(kdf, kl, opts, ol, pass, kek);
	if (r == 0 && crypto_aead_chacha20poly1305_ietf_decrypt(sk, NULL, NULL, blob + NONCE_LEN,
								 bl - NONCE_LEN, NULL, 0, blob,
								 kek) != 0)
		r = err_set(-EKEYREJECTED, "the passphrase does not open the Crypt4GH private key "
			    "(wrong passphrase, or the file was altered)");
	if (r == 0)
		r = crypto_key_from_bytes(sk, ret_sk);
	sodium_memzero(kek, sizeof(kek));
	sodium_memzero(sk, sizeof(sk));
	return r;
}

#define SSH_MAGIC "openssh-key-v1"   /* and its NUL */
#define SSH_KDF_SALT_MAX 1024u

/* The ciphers of OpenSSH private keys we open (PROTOCOL.key; cipher.c's table): key and IV
 * lengths of what bcrypt_pbkdf derives, the block size the private part is padded to, and the
 * length of the tag that follows it (AEAD ciphers). */
enum ssh_mode { SSH_NONE, SSH_EVP, SSH_EVP_GCM, SSH_CHACHAPOLY };
struct ssh_cipher {
	const char *name;
	enum ssh_mode mode;
	const EVP_CIPHER *(*evp)(void);
	size_t key_len, iv_len, block, tag_len;
};
static const struct ssh_cipher ssh_ciphers[] = {
	{ "none", SSH_NONE, NULL, 0, 0, 8, 0 },
	{ "aes128-ctr", SSH_EVP, EVP_aes_128_ctr, 16, 16, 16, 0 },
	{ "aes192-ctr", SSH_EVP, EVP_aes_192_ctr, 24, 16, 16, 0 },
	{ "aes256-ctr", SSH_EVP, EVP_aes_256_ctr, 32, 16, 16, 0 },
	{ "aes128-cbc", SSH_EVP, EVP_aes_128_cbc, 16, 16, 16, 0 },
	{ "aes192-cbc", SSH_EVP, EVP_aes_192_cbc, 24, 16, 16, 0 },
	{ "aes256-cbc", SSH_EVP, EVP_aes_256_cbc, 32, 16, 16, 0 },
	{ "aes128-gcm@openssh.com", SSH_EVP_GCM, EVP_aes_128_gcm, 16, 12, 16, 16 },
	{ "aes256-gcm@openssh.com", SSH_EVP_GCM, EVP_aes_256_gcm, 32, 12, 16, 16 },
	{ "chacha20-poly1305@openssh.com", SSH_CHACHAPOLY, NULL, 64, 0, 8, 16 },
};
#define SSH_KEY_IV_MAX 64u

static const struct ssh_cipher *ssh_cipher_find(const uint8_t *name, size_t n)
{
	for (size_t i = 0; i < sizeof(ssh_ciphers) / sizeof(ssh_ciphers[0]); i++)
		if (str_is(name, n, ssh_ciphers[i].name))
			return &ssh_ciphers[i];
	return NULL;
}

/* Decrypt the private part of an OpenSSH key (len bytes at in, then its tag) into out with the
 * key and IV in kiv. -EKEYREJECTED when an AEAD tag does not verify. */
static int ssh_decrypt(const struct ssh_cipher *ci, const uint8_t *kiv, const uint8_t *in,
		       size_t len, const uint8_t *tag, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx;
	int n = 0, f = 0, ok;

	if (ci->mode == SSH_CHACHAPOLY) {
		/* OpenSSH's chacha20-poly1305 with sequence number 0 and no length field: the
		 * Poly1305 key is the first 32 bytes of ChaCha20's block 0 under the first 32
		 * bytes of the key (nonce: the sequence number, big-endian u64); the data is
		 * ChaCha20 from block 1. */
		static const uint8_t seq[8] = { 0 };
		uint8_t polykey[crypto_onetimeauth_poly1305_KEYBYTES];

		crypto_stream_chacha20(polykey, sizeof(polykey), seq, kiv);
		ok = crypto_onetimeauth_poly1305_verify(tag, in, len, polykey) == 0;
		sodium_memzero(polykey, sizeof(polykey));
		if (!ok)
			return -EKEYREJECTED;
		crypto_stream_chacha20_xor_ic(out, in, len, seq, 1, kiv);
		return 0;
	}
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -ENOMEM;
	ok = EVP_DecryptInit_ex(ctx, ci->evp(), NULL, NULL, NULL) == 1 &&
	     (ci->mode != SSH_EVP_GCM ||
	      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)ci->iv_len, NULL) == 1) &&
	     EVP_DecryptInit_ex(ctx, NULL, NULL, kiv, kiv + ci->key_len) == 1 &&
	     EVP_CIPHER_CTX_set_padding(ctx, 0) == 1 &&
	     EVP_DecryptUpdate(ctx, out, &n, in, (int)len) == 1 &&
	     (ci->mode != SSH_EVP_GCM ||
	      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, (int)ci->tag_len, (void *)tag) == 1) &&
	     EVP_DecryptFinal_ex(ctx, out + n, &f) == 1 && (size_t)(n + f) == len;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		sodium_memzero(out, len);
		return ci->mode == SSH_EVP_GCM ? -EKEYREJECTED : -EIO;
	}
	return 0;
}

/* The private part of an OpenSSH key, in the clear: check words, one ssh-ed25519 key matching
 * the public key pk_blob names, comment, padding 1, 2, 3, ... The X25519 secret is the Ed25519
 * seed's conversion (crypto_sign_ed25519_sk_to_curve25519), as the reference tools do. A check
 * word mismatch in a key that was encrypted means the passphrase was wrong. */
static int ssh_private(const uint8_t *priv, size_t prl, const uint8_t *pk_blob, size_t pbl,
		       bool encrypted, crypto_key **ret_sk)
{
	struct cur pc = { priv, prl }, pb = { pk_blob, pbl };
	const uint8_t *type, *pk, *esk, *comment, *btype, *bpk;
	size_t tl, pkl, eskl, coml, btl, bpkl;
	uint8_t xsk[32];
	int r;

	if (pc.n < 8 || get_be32(pc.p) != get_be32(pc.p + 4))
		return encrypted ? err_set(-EKEYREJECTED, "the passphrase does not open the "
					   "OpenSSH private key (wrong passphrase, or the file "
					   "was altered)")
				 : err_set(-EBADMSG, "OpenSSH private key: the check words differ");
	pc.p += 8;
	pc.n -= 8;
	if (cur_str32(&pc, &type, &tl) < 0)
		return err_set(-EBADMSG, "OpenSSH private key: cut short");
	if (!str_is(type, tl, "ssh-ed25519"))
		return err_set(-ENOTSUP, "OpenSSH private key of type \"%.*s\": only ssh-ed25519 "
			       "keys convert to Crypt4GH keys", (int)MIN(tl, 32u),
			       (const char *)type);
	if (cur_str32(&pc, &pk, &pkl) < 0 || cur_str32(&pc, &esk, &eskl) < 0 || pkl != 32 ||
	    eskl != 64 || cur_str32(&pc, &comment, &coml) < 0)
		return err_set(-EBADMSG, "OpenSSH private key: a malformed ed25519 key");
	for (size_t i = 0; i < pc.n; i++)
		if (pc.p[i] != (uint8_t)(i + 1))
			return err_set(-EBADMSG, "OpenSSH private key: bad padding after the key");
	if (cur_str32(&pb, &btype, &btl) < 0 || !str_is(btype, btl, "ssh-ed25519") ||
	    cur_str32(&pb, &bpk, &bpkl) < 0 || bpkl != 32 || pb.n != 0 || memcmp(bpk, pk, 32) != 0)
		return err_set(-EBADMSG, "OpenSSH private key: the public key does not match the "
			       "private one");
	/* The seed must give the public key both places name. */
	{
		uint8_t seed_pk[32], full[64];

		crypto_sign_ed25519_seed_keypair(seed_pk, full, esk);
		sodium_memzero(full, sizeof(full));
		if (memcmp(seed_pk, pk, 32) != 0 || memcmp(esk + 32, pk, 32) != 0)
			return err_set(-EBADMSG, "OpenSSH private key: the ed25519 seed does not "
				       "give its public key");
	}
	if (crypto_sign_ed25519_sk_to_curve25519(xsk, esk) != 0)
		return err_set(-EBADMSG, "OpenSSH private key: cannot convert to X25519");
	r = crypto_key_from_bytes(xsk, ret_sk);
	sodium_memzero(xsk, sizeof(xsk));
	return r;
}

/* An OpenSSH private key (PROTOCOL.key): one ssh-ed25519 key, unencrypted ("none") or encrypted
 * with kdf "bcrypt" (options: salt, rounds) and one of ssh_ciphers. Everything but the secret
 * part is checked before the passphrase is used (-ENOKEY without one). */
static int parse_openssh(const uint8_t *buf, size_t len, const crypto_secret *pass,
			 crypto_key **ret_sk)
{
	struct cur c = { buf, len }, oc;
	const uint8_t *cipher, *kdf, *opts, *pub, *priv, *salt = NULL;
	size_t cl, kl, ol, pbl, prl, sl = 0;
	const struct ssh_cipher *ci;
	uint8_t kiv[SSH_KEY_IV_MAX], *plain = NULL;
	uint32_t nkeys, rounds = 0;
	int r;

	if (len < sizeof(SSH_MAGIC) || memcmp(buf, SSH_MAGIC, sizeof(SSH_MAGIC)) != 0)
		return err_set(-EBADMSG, "OpenSSH private key: no \"openssh-key-v1\" magic");
	c.p += sizeof(SSH_MAGIC);
	c.n -= sizeof(SSH_MAGIC);
	if (cur_str32(&c, &cipher, &cl) < 0 || cur_str32(&c, &kdf, &kl) < 0 ||
	    cur_str32(&c, &opts, &ol) < 0 || c.n < 4)
		return err_set(-EBADMSG, "OpenSSH private key: cut short");
	ci = ssh_cipher_find(cipher, cl);
	if (!ci)
		return err_set(-ENOTSUP, "OpenSSH private key: cipher \"%.*s\" not supported "
			       "(aes128/192/256-ctr and -cbc, aes128/256-gcm@openssh.com, "
			       "chacha20-poly1305@openssh.com and none are)", (int)MIN(cl, 40u),
			       (const char *)cipher);
	if (ci->mode == SSH_NONE) {
		if (!str_is(kdf, kl, "none") || ol != 0)
			return err_set(-EBADMSG, "OpenSSH private key: a kdf without a cipher");
	} else {
		if (!str_is(kdf, kl, "bcrypt"))
			return err_set(-ENOTSUP, "OpenSSH private key: kdf \"%.*s\" not supported "
				       "(bcrypt is)", (int)MIN(kl, 32u), (const char *)kdf);
		oc = (struct cur){ opts, ol };
		if (cur_str32(&oc, &salt, &sl) < 0 || oc.n != 4)
			return err_set(-EBADMSG, "OpenSSH private key: malformed bcrypt options");
		rounds = get_be32(oc.p);
		if (sl == 0 || sl > SSH_KDF_SALT_MAX)
			return err_set(-EBADMSG, "OpenSSH private key: a bcrypt salt of %zu bytes "
				       "(1 to %u)", sl, SSH_KDF_SALT_MAX);
		if (rounds == 0)
			return err_set(-EBADMSG, "OpenSSH private key: bcrypt with 0 rounds");
		if (rounds > CRYPTO_BCRYPT_ROUNDS_MAX)
			return err_set(-E2BIG, "OpenSSH private key: bcrypt with %u rounds, more than "
				       "the %u accepted here (ssh-keygen -p -a N lowers them)",
				       rounds, CRYPTO_BCRYPT_ROUNDS_MAX);
	}
	nkeys = get_be32(c.p);
	c.p += 4;
	c.n -= 4;
	if (nkeys != 1)
		return err_set(-EBADMSG, "OpenSSH private key: %u keys, not 1", nkeys);
	if (cur_str32(&c, &pub, &pbl) < 0 || cur_str32(&c, &priv, &prl) < 0)
		return err_set(-EBADMSG, "OpenSSH private key: cut short");
	if (prl < ci->block || prl % ci->block != 0)
		return err_set(-EBADMSG, "OpenSSH private key: the private part is %zu bytes, not a "
			       "multiple of %zu", prl, ci->block);
	/* What follows is the AEAD tag, and nothing else. */
	if (c.n != ci->tag_len)
		return err_set(-EBADMSG, "OpenSSH private key: %zu bytes after the private part, "
			       "not %zu", c.n, ci->tag_len);
	if (ci->mode == SSH_NONE)
		return ssh_private(priv, prl, pub, pbl, false, ret_sk);
	if (!pass)
		return err_set(-ENOKEY, "the OpenSSH private key is protected by a passphrase");
	plain = sodium_malloc(prl);
	if (!plain)
		return -ENOMEM;
	r = crypto_bcrypt_pbkdf(crypto_secret_data(pass), crypto_secret_len(pass), salt, sl, rounds,
				kiv, ci->key_len + ci->iv_len);
	if (r < 0) {
		r = err_set(r, "OpenSSH private key: bcrypt_pbkdf refused its parameters");
		goto out;
	}
	r = ssh_decrypt(ci, kiv, priv, prl, c.p, plain);
	if (r == -EKEYREJECTED)
		r = err_set(r, "the passphrase does not open the OpenSSH private key (wrong "
			    "passphrase, or the file was altered)");
	else if (r < 0)
		r = err_set(r, "OpenSSH private key: %s failed", ci->name);
	if (r == 0)
		r = ssh_private(plain, prl, pub, pbl, true, ret_sk);
out:
	sodium_memzero(kiv, sizeof(kiv));
	sodium_free(plain);  /* wipes */
	return r;
}

/* Decode an armoured private key into guarded memory. */
static int seckey_decode(const char *text, size_t len, bool *ret_ssh, uint8_t **ret_buf,
			 size_t *ret_n)
{
	const char *b;
	size_t n, got;
	uint8_t *buf;
	bool ssh = false;

	if (armour_body(text, len, SEC_BEGIN, SEC_END, NULL, &b, &n) < 0) {
		if (armour_body(text, len, SSH_BEGIN, SSH_END, NULL, &b, &n) < 0)
			return err_set(-EBADMSG, "neither a Crypt4GH private key (\"%s\") nor an "
				       "OpenSSH one (\"%s\")", SEC_BEGIN, SSH_BEGIN);
		ssh = true;
	}
	buf = sodium_malloc(MAX(n, 1u));
	if (!buf)
		return -ENOMEM;
	if (b64_decode(b, n, buf, n, &got) < 0) {
		sodium_free(buf);
		return err_set(-EBADMSG, "%s private key: not base64", ssh ? "OpenSSH" : "Crypt4GH");
	}
	*ret_ssh = ssh;
	*ret_buf = buf;
	*ret_n = got;
	return 0;
}

int c4gh_seckey_parse(const char *text, size_t len, const crypto_secret *pass,
		      crypto_key **ret_sk)
{
	uint8_t *buf = NULL;
	size_t n = 0;
	bool ssh = false;
	int r;

	r = seckey_decode(text, len, &ssh, &buf, &n);
	if (r < 0)
		return r;
	r = ssh ? parse_openssh(buf, n, pass, ret_sk) : parse_c4gh_v1(buf, n, pass, ret_sk);
	sodium_free(buf);
	return r;
}

bool c4gh_seckey_encrypted(const char *text, size_t len)
{
	uint8_t *buf = NULL;
	const uint8_t *kdf, *opts, *cipher;
	size_t n = 0, kl, ol, cl;
	struct cur c;
	bool ssh = false, enc = false;

	if (seckey_decode(text, len, &ssh, &buf, &n) < 0)
		return false;
	c = (struct cur){ buf, n };
	if (ssh) {
		if (n > sizeof(SSH_MAGIC)) {
			c.p += sizeof(SSH_MAGIC);
			c.n -= sizeof(SSH_MAGIC);
			enc = cur_str32(&c, &cipher, &cl) == 0 && !str_is(cipher, cl, "none");
		}
	} else if (n > 7 && memcmp(buf, C4GH_KEY_MAGIC, 7) == 0) {
		c.p += 7;
		c.n -= 7;
		if (cur_str16(&c, &kdf, &kl) == 0 &&
		    (str_is(kdf, kl, "none") || cur_str16(&c, &opts, &ol) == 0) &&
		    cur_str16(&c, &cipher, &cl) == 0)
			enc = !str_is(cipher, cl, "none");
	}
	sodium_free(buf);
	return enc;
}

static size_t put_str16(uint8_t *p, const void *s, size_t n)
{
	p[0] = (uint8_t)(n >> 8);
	p[1] = (uint8_t)n;
	memcpy(p + 2, s, n);
	return 2 + n;
}

int c4gh_seckey_format(const crypto_key *sk, const crypto_secret *pass, const char *comment,
		       char **ret_text, size_t *ret_len)
{
	uint8_t raw[256], kek[32];
	size_t n = 0, cl = comment ? strnlen(comment, 128) : 0, b64l, tl;
	char *text;
	int r = 0;

	memcpy(raw, C4GH_KEY_MAGIC, 7);
	n = 7;
	if (pass) {
		uint8_t opts[4 + KDF_SALT_LEN], blob[NONCE_LEN + 32 + MAC_LEN];

		memset(opts, 0, 4);  /* rounds: unused by scrypt (0, as the reference tools write) */
		crypto_random(opts + 4, KDF_SALT_LEN);
		crypto_random(blob, NONCE_LEN);
		if (crypto_pwhash_scryptsalsa208sha256_ll(crypto_secret_data(pass),
							  crypto_secret_len(pass), opts + 4,
							  KDF_SALT_LEN, SCRYPT_N, SCRYPT_R, SCRYPT_P,
							  kek, sizeof(kek)) != 0)
			return -ENOMEM;
		crypto_aead_chacha20poly1305_ietf_encrypt(blob + NONCE_LEN, NULL,
							  crypto_key_bytes(sk), 32, NULL, 0, NULL,
							  blob, kek);
		sodium_memzero(kek, sizeof(kek));
		n += put_str16(raw + n, "scrypt", 6);
		n += put_str16(raw + n, opts, sizeof(opts));
		n += put_str16(raw + n, "chacha20_poly1305", 17);
		n += put_str16(raw + n, blob, sizeof(blob));
	} else {
		n += put_str16(raw + n, "none", 4);
		n += put_str16(raw + n, "none", 4);
		n += put_str16(raw + n, crypto_key_bytes(sk), 32);
	}
	if (cl)
		n += put_str16(raw + n, comment, cl);
	b64l = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	tl = strlen(SEC_BEGIN) + 1 + b64l + strlen(SEC_END) + 2;
	text = sodium_malloc(tl);
	if (!text) {
		r = -ENOMEM;
		goto out;
	}
	{
		size_t o = (size_t)snprintf(text, tl, "%s\n", SEC_BEGIN);

		sodium_bin2base64(text + o, tl - o, raw, n, sodium_base64_VARIANT_ORIGINAL);
		o += strlen(text + o);
		o += (size_t)snprintf(text + o, tl - o, "\n%s\n", SEC_END);
		*ret_text = text;
		*ret_len = o;
	}
out:
	sodium_memzero(raw, sizeof(raw));
	return r;
}

/* ---- Header -------------------------------------------------------------------------------- */

int c4gh_shared_key(const crypto_key *own_sk, const uint8_t peer_pk[static C4GH_KEY_LEN],
		    bool writer, uint8_t ret_key[static C4GH_KEY_LEN])
{
	uint8_t dh[crypto_scalarmult_BYTES], own_pk[C4GH_KEY_LEN], out[64];
	crypto_generichash_state st;

	if (crypto_scalarmult(dh, crypto_key_bytes(own_sk), peer_pk) != 0)
		return err_set(-EINVAL, "X25519 with a low-order public key");
	c4gh_public_key(own_sk, own_pk);
	crypto_generichash_init(&st, NULL, 0, sizeof(out));
	crypto_generichash_update(&st, dh, sizeof(dh));
	/* reader's public key, then the writer's */
	crypto_generichash_update(&st, writer ? peer_pk : own_pk, C4GH_KEY_LEN);
	crypto_generichash_update(&st, writer ? own_pk : peer_pk, C4GH_KEY_LEN);
	crypto_generichash_final(&st, out, sizeof(out));
	memcpy(ret_key, out, C4GH_KEY_LEN);
	sodium_memzero(dh, sizeof(dh));
	sodium_memzero(out, sizeof(out));
	sodium_memzero(&st, sizeof(st));
	return 0;
}

int c4gh_packet_seal(const crypto_key *writer_sk, const uint8_t reader_pk[static C4GH_KEY_LEN],
		     const uint8_t *nonce, const uint8_t *payload, size_t len, uint8_t *out)
{
	uint8_t k[C4GH_KEY_LEN];
	size_t total = C4GH_PACKET_FIXED + len + C4GH_PACKET_MAC;
	int r;

	if (total > C4GH_HEADER_MAX)
		return -E2BIG;
	r = c4gh_shared_key(writer_sk, reader_pk, true, k);
	if (r < 0)
		return r;
	put_le32(out, (uint32_t)total);
	put_le32(out + 4, PKT_ENC_X25519);
	c4gh_public_key(writer_sk, out + 8);
	if (nonce)
		memcpy(out + 40, nonce, NONCE_LEN);
	else
		crypto_random(out + 40, NONCE_LEN);
	crypto_aead_chacha20poly1305_ietf_encrypt(out + C4GH_PACKET_FIXED, NULL, payload, len, NULL,
						  0, NULL, out + 40, k);
	sodium_memzero(k, sizeof(k));
	return 0;
}

int c4gh_header_build(const struct c4gh_header_spec *s, uint8_t **ret_buf, size_t *ret_len)
{
	uint8_t params[4 + 4 + 32 + 8], *edit = NULL, *buf = NULL;
	size_t plen, elen = 0, total, off;
	crypto_key *wsk = NULL;
	uint8_t wpk[C4GH_KEY_LEN];
	uint32_t count;
	int r = 0;

	if (!s || !s->recipients || s->nrecipients == 0 || !s->data_key ||
	    (s->method != C4GH_CHACHA20_IETF_POLY1305 &&
	     s->method != C4GH_CHACHA20_IETF_POLY1305_AEAD) || (s->nedits && !s->edits))
		return -EINVAL;
	if (s->nedits > C4GH_EDITS_MAX || s->nrecipients > C4GH_PACKETS_MAX / 2)
		return -E2BIG;
	put_le32(params, PKT_DATA_PARAMS);
	put_le32(params + 4, s->method);
	memcpy(params + 8, crypto_key_bytes(s->data_key), 32);
	plen = 40;
	if (s->method == C4GH_CHACHA20_IETF_POLY1305_AEAD) {
		put_le64(params + 40, s->sequence);
		plen = 48;
	}
	if (s->edits) {
		elen = 8 + 8 * s->nedits;
		edit = malloc(elen);
		if (!edit) {
			r = -ENOMEM;
			goto out;
		}
		put_le32(edit, PKT_EDIT_LIST);
		put_le32(edit + 4, (uint32_t)s->nedits);
		for (size_t i = 0; i < s->nedits; i++)
			put_le64(edit + 8 + 8 * i, s->edits[i]);
	}
	count = (uint32_t)(s->nrecipients * (edit ? 2 : 1));
	total = 16 + s->nrecipients * (C4GH_PACKET_FIXED + plen + C4GH_PACKET_MAC +
				       (edit ? C4GH_PACKET_FIXED + elen + C4GH_PACKET_MAC : 0));
	if (total > C4GH_HEADER_MAX) {
		r = -E2BIG;
		goto out;
	}
	if (s->writer_sk) {
		r = 0;
	} else {
		r = c4gh_keypair_generate(&wsk, wpk);
		if (r < 0)
			goto out;
	}
	buf = malloc(total);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(buf, C4GH_MAGIC, C4GH_MAGIC_LEN);
	put_le32(buf + 8, C4GH_VERSION);
	put_le32(buf + 12, count);
	off = 16;
	for (size_t i = 0; i < s->nrecipients && r == 0; i++) {
		const crypto_key *w = s->writer_sk ? s->writer_sk : wsk;

		r = c4gh_packet_seal(w, s->recipients[i], NULL, params, plen, buf + off);
		off += C4GH_PACKET_FIXED + plen + C4GH_PACKET_MAC;
		if (r == 0 && edit) {
			r = c4gh_packet_seal(w, s->recipients[i], NULL, edit, elen, buf + off);
			off += C4GH_PACKET_FIXED + elen + C4GH_PACKET_MAC;
		}
	}
	if (r < 0)
		goto out;
	*ret_buf = buf;
	*ret_len = total;
	buf = NULL;
out:
	sodium_memzero(params, sizeof(params));
	free(edit);
	free(buf);
	crypto_key_free(wsk);
	return r;
}

/* A data key we were given, with its sequence number (AEAD method). */
struct dkey {
	uint8_t k[C4GH_KEY_LEN];
	uint64_t seq;
};

/* Lives in sodium_malloc memory: it holds the data keys. */
struct c4gh_header {
	size_t len;                            /* header bytes */
	size_t npackets;                       /* packets in the header */
	size_t nkeys;                          /* data keys addressed to us */
	uint32_t method;                       /* their (common) method */
	size_t last_key;                       /* the key that opened the last segment */
	struct dkey keys[C4GH_DATA_KEYS_MAX];
	bool edited;                           /* an edit list was addressed to us */
	size_t nedits;
	uint64_t edits[C4GH_EDITS_MAX];
	uint8_t digest[C4GH_DIGEST_LEN];       /* SHA-256 of the header's bytes */
};

/* One decrypted packet's plaintext into h. */
static int header_take(c4gh_header *h, const uint8_t *p, size_t n, size_t idx)
{
	uint32_t type, method, count;

	if (n < 4)
		return err_set(-EBADMSG, "Crypt4GH header packet %zu: shorter than its type", idx);
	type = get_le32(p);
	if (type == PKT_DATA_PARAMS) {
		struct dkey *k;

		if (n < 8)
			return err_set(-EBADMSG, "Crypt4GH header packet %zu: no data method", idx);
		method = get_le32(p + 4);
		if (method != C4GH_CHACHA20_IETF_POLY1305 &&
		    method != C4GH_CHACHA20_IETF_POLY1305_AEAD)
			return err_set(-ENOTSUP, "Crypt4GH header packet %zu: data encryption "
				       "method %u is not known", idx, method);
		/* Padding after the fields is allowed (spec 3.2.1). */
		if (n < 8 + 32 + (method == C4GH_CHACHA20_IETF_POLY1305_AEAD ? 8u : 0u))
			return err_set(-EBADMSG, "Crypt4GH header packet %zu: data key cut short",
				       idx);
		if (h->nkeys && method != h->method)
			return err_set(-ENOTSUP, "Crypt4GH header: data encryption methods mixed "
				       "(%u and %u)", h->method, method);
		if (h->nkeys == C4GH_DATA_KEYS_MAX)
			return err_set(-E2BIG, "Crypt4GH header: more than %u data keys",
				       C4GH_DATA_KEYS_MAX);
		h->method = method;
		k = &h->keys[h->nkeys++];
		memcpy(k->k, p + 8, 32);
		k->seq = method == C4GH_CHACHA20_IETF_POLY1305_AEAD ? get_le64(p + 40) : 0;
		return 0;
	}
	if (type == PKT_EDIT_LIST) {
		if (h->edited)
			return err_set(-EBADMSG, "Crypt4GH header: more than one edit list");
		if (n < 8)
			return err_set(-EBADMSG, "Crypt4GH header packet %zu: edit list without a "
				       "count", idx);
		count = get_le32(p + 4);
		if (count > C4GH_EDITS_MAX)
			return err_set(-E2BIG, "Crypt4GH header: an edit list of %u lengths, more "
				       "than %u", count, C4GH_EDITS_MAX);
		if ((n - 8) / 8 < count)
			return err_set(-EBADMSG, "Crypt4GH header packet %zu: edit list cut short",
				       idx);
		for (uint32_t i = 0; i < count; i++)
			h->edits[i] = get_le64(p + 8 + 8 * (size_t)i);
		h->nedits = count;
		h->edited = true;
		return 0;
	}
	return err_set(-ENOTSUP, "Crypt4GH header packet %zu: packet type %u is not known", idx,
		       type);
}

int c4gh_header_parse(const uint8_t *buf, size_t len, const crypto_key *sk,
		      c4gh_header **ret_hdr)
{
	uint8_t own_pk[C4GH_KEY_LEN], k[C4GH_KEY_LEN];
	uint8_t *plain = NULL;
	c4gh_header *h = NULL;
	uint32_t version, count;
	size_t off, maxpl = 0;
	int r = 0;

	if (len < 16) {
		if (len < C4GH_MAGIC_LEN ? memcmp(buf, C4GH_MAGIC, len) != 0
					 : memcmp(buf, C4GH_MAGIC, C4GH_MAGIC_LEN) != 0)
			return err_set(-EBADMSG, "not a Crypt4GH file (no \"crypt4gh\" magic)");
		return err_set(-ENOBUFS, "Crypt4GH header cut short");
	}
	if (memcmp(buf, C4GH_MAGIC, C4GH_MAGIC_LEN) != 0)
		return err_set(-EBADMSG, "not a Crypt4GH file (no \"crypt4gh\" magic)");
	version = get_le32(buf + 8);
	if (version != C4GH_VERSION)
		return err_set(-ENOTSUP, "Crypt4GH version %u (only version 1 is known)", version);
	count = get_le32(buf + 12);
	if (count == 0)
		return err_set(-EBADMSG, "Crypt4GH header with no packets");
	if (count > C4GH_PACKETS_MAX)
		return err_set(-E2BIG, "Crypt4GH header of %u packets, more than %u", count,
			       C4GH_PACKETS_MAX);
	/* First walk the lengths: the whole header must be there before anything is opened. */
	off = 16;
	for (uint32_t i = 0; i < count; i++) {
		uint32_t pl;

		if (len - off < 4)
			return len >= C4GH_HEADER_MAX
				       ? err_set(-E2BIG, "Crypt4GH header longer than %u bytes",
						 C4GH_HEADER_MAX)
				       : err_set(-ENOBUFS, "Crypt4GH header cut short");
		pl = get_le32(buf + off);
		if (pl < 8)
			return err_set(-EBADMSG, "Crypt4GH header packet %u: length %u", i, pl);
		if (pl > C4GH_HEADER_MAX || off + pl > C4GH_HEADER_MAX)
			return err_set(-E2BIG, "Crypt4GH header longer than %u bytes",
				       C4GH_HEADER_MAX);
		if (len - off < pl)
			return err_set(-ENOBUFS, "Crypt4GH header cut short");
		off += pl;
		maxpl = MAX(maxpl, (size_t)pl);
	}
	h = sodium_malloc(sizeof(*h));
	plain = malloc(maxpl);
	if (!h || !plain) {
		r = -ENOMEM;
		goto out;
	}
	memset(h, 0, sizeof(*h));
	h->len = off;
	h->npackets = count;
	crypto_hash_sha256(h->digest, buf, off);
	c4gh_public_key(sk, own_pk);
	off = 16;
	for (uint32_t i = 0; i < count; i++) {
		uint32_t pl = get_le32(buf + off), method = get_le32(buf + off + 4);
		const uint8_t *p = buf + off;
		size_t clen;

		off += pl;
		if (method != PKT_ENC_X25519) {
			/* A method we cannot open may be for another reader: skip it. */
			continue;
		}
		if (pl < C4GH_PACKET_FIXED + C4GH_PACKET_MAC) {
			r = err_set(-EBADMSG, "Crypt4GH header packet %u: %u bytes, too short for "
				    "its fields", i, pl);
			goto out;
		}
		/* A low-order writer key opens nothing: skip, as for another reader's packet. */
		if (c4gh_shared_key(sk, p + 8, false, k) < 0)
			continue;
		clen = pl - C4GH_PACKET_FIXED;
		if (crypto_aead_chacha20poly1305_ietf_decrypt(plain, NULL, NULL,
							      p + C4GH_PACKET_FIXED, clen, NULL, 0,
							      p + 40, k) != 0)
			continue;   /* for another reader */
		r = header_take(h, plain, clen - MAC_LEN, i);
		sodium_memzero(plain, clen - MAC_LEN);
		if (r < 0)
			goto out;
	}
	if (h->nkeys == 0) {
		r = err_set(-ENOKEY, "the Crypt4GH file is not addressed to this key: none of its "
			    "%u header packets opens with it", count);
		goto out;
	}
	*ret_hdr = h;
	h = NULL;
out:
	sodium_memzero(k, sizeof(k));
	free(plain);
	c4gh_header_free(h);
	return r;
}

void c4gh_header_free(c4gh_header *h)
{
	if (h)
		sodium_free(h);  /* wipes */
}

size_t c4gh_header_length(const c4gh_header *h)
{
	return h->len;
}

void c4gh_header_digest(const c4gh_header *h, uint8_t ret[static C4GH_DIGEST_LEN])
{
	memcpy(ret, h->digest, C4GH_DIGEST_LEN);
}

size_t c4gh_header_packets(const c4gh_header *h)
{
	return h->npackets;
}

size_t c4gh_header_keys(const c4gh_header *h)
{
	return h->nkeys;
}

bool c4gh_header_edited(const c4gh_header *h)
{
	return h->edited;
}

enum c4gh_method c4gh_header_method(const c4gh_header *h)
{
	return (enum c4gh_method)h->method;
}

/* The decrypted (unedited) length of a data part of data_len bytes; *ret_nseg its segments. */
static int raw_size(const c4gh_header *h, uint64_t data_len, uint64_t *ret_raw, uint64_t *ret_nseg)
{
	uint64_t nseg = data_len / C4GH_SEGMENT_SEALED, rest = data_len % C4GH_SEGMENT_SEALED;

	if (rest) {
		if (rest < C4GH_SEGMENT_OVERHEAD)
			return err_set(-EBADMSG, "Crypt4GH data: the last segment is cut (%llu bytes "
				       "of at least %u)", (unsigned long long)rest,
				       C4GH_SEGMENT_OVERHEAD);
		nseg++;
	} else if (h->method == C4GH_CHACHA20_IETF_POLY1305_AEAD) {
		/* The AEAD method ends with a short (maybe empty) segment: none means cut. */
		return err_set(-EBADMSG, "Crypt4GH data: the final segment is missing (the file was "
			       "cut at a segment boundary)");
	}
	*ret_raw = data_len - nseg * C4GH_SEGMENT_OVERHEAD;
	*ret_nseg = nseg;
	return 0;
}

/* The edit list applied to a length (spec 4.2: discard, keep, discard, ...; after a last
 * discard, the rest is kept). */
static uint64_t edited_size(const c4gh_header *h, uint64_t raw)
{
	uint64_t pos = 0, out = 0;

	if (!h->edited)
		return raw;
	for (size_t i = 0; i < h->nedits; i++) {
		uint64_t l = h->edits[i], avail = raw - pos;

		if (i % 2 == 0) {
			pos += MIN(l, avail);
			if (i + 1 == h->nedits)
				out += raw - pos;
		} else {
			out += MIN(l, avail);
			pos += MIN(l, avail);
		}
	}
	if (h->nedits == 0)
		out = raw;
	return out;
}

int c4gh_plain_size(const c4gh_header *h, uint64_t data_len, uint64_t *ret_size)
{
	uint64_t raw = 0, nseg = 0;
	int r = raw_size(h, data_len, &raw, &nseg);

	if (r < 0)
		return r;
	*ret_size = edited_size(h, raw);
	return 0;
}

/* ---- Data ---------------------------------------------------------------------------------- */

/* Segments go through OpenSSL's ChaCha20-Poly1305 (RFC 8439, the same construction as libsodium's
 * _ietf one): on the machines we measured it is some 20 times faster than Debian's libsodium
 * build for 64 KiB messages (docs/PERFORMANCE.md "Crypt4GH import"), and segments are the bulk
 * of the work. The known-answer vectors in tests/test_crypt4gh.c, computed independently, hold
 * either way. One context per decoder or encoder, re-keyed per segment. */
static int evp_seal(EVP_CIPHER_CTX *ctx, const uint8_t *key, const uint8_t *nonce,
		    const uint8_t *ad, size_t adl, const uint8_t *in, size_t len, uint8_t *out,
		    uint8_t *tag)
{
	int n = 0, f = 0;

	if (EVP_EncryptInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, nonce) != 1 ||
	    (adl && EVP_EncryptUpdate(ctx, NULL, &n, ad, (int)adl) != 1) ||
	    (len && EVP_EncryptUpdate(ctx, out, &n, in, (int)len) != 1) ||
	    EVP_EncryptFinal_ex(ctx, out + n, &f) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, MAC_LEN, tag) != 1)
		return -EIO;
	return 0;
}

/* -EBADMSG when the tag does not verify; out is then wiped (OpenSSL writes the plaintext before
 * it checks the tag). */
static int evp_open(EVP_CIPHER_CTX *ctx, const uint8_t *key, const uint8_t *nonce,
		    const uint8_t *ad, size_t adl, const uint8_t *in, size_t len,
		    const uint8_t *tag, uint8_t *out)
{
	int n = 0, f = 0;

	if (EVP_DecryptInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, nonce) != 1 ||
	    (adl && EVP_DecryptUpdate(ctx, NULL, &n, ad, (int)adl) != 1) ||
	    (len && EVP_DecryptUpdate(ctx, out, &n, in, (int)len) != 1) ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, MAC_LEN, (void *)tag) != 1 ||
	    EVP_DecryptFinal_ex(ctx, out + n, &f) != 1) {
		sodium_memzero(out, len);
		return -EBADMSG;
	}
	return 0;
}

static int segment_seal_ctx(EVP_CIPHER_CTX *ctx, const crypto_key *data_key,
			    enum c4gh_method method, uint64_t aad_seq, const uint8_t *nonce,
			    const uint8_t *in, size_t len, uint8_t *out)
{
	uint8_t ad[8];
	bool aead = method == C4GH_CHACHA20_IETF_POLY1305_AEAD;

	if (len > C4GH_SEGMENT)
		return -EINVAL;
	put_le64(ad, aad_seq);
	if (nonce)
		memcpy(out, nonce, NONCE_LEN);
	else
		crypto_random(out, NONCE_LEN);
	return evp_seal(ctx, crypto_key_bytes(data_key), out, ad, aead ? 8 : 0, in, len,
			out + NONCE_LEN, out + NONCE_LEN + len);
}

int c4gh_segment_seal(const crypto_key *data_key, enum c4gh_method method, uint64_t aad_seq,
		      const uint8_t *nonce, const uint8_t *in, size_t len, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int r;

	if (!ctx)
		return -ENOMEM;
	r = segment_seal_ctx(ctx, data_key, method, aad_seq, nonce, in, len, out);
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

struct c4gh_decoder {
	c4gh_header *h;         /* owned */
	int fd;                 /* borrowed */
	uint64_t data_off;      /* where the data begins in the file */
	uint64_t nseg;          /* segments in the data part */
	uint64_t data_len;
	uint64_t size;          /* plaintext after the edit list */
	uint64_t next_seg;      /* the next segment to decrypt */
	uint64_t given;         /* plaintext bytes given so far */
	/* The edit list's state: ei the next length to take, run_left what is left of the current
	 * run, keeping whether it is kept. With no edit list: one kept run of everything. */
	size_t ei;
	uint64_t run_left;
	bool keeping;
	bool done;              /* every segment checked */
	int err;                /* sticky */
	EVP_CIPHER_CTX *evp;    /* segments' cipher (holds a key while in use; freed wiped) */
	uint8_t *cbuf;          /* one sealed segment (read buffer) */
	uint8_t *pbuf;          /* one decrypted segment; pos/plen its unread part */
	size_t ppos, plen;
};

int c4gh_decoder_new(c4gh_header *h, int fd, uint64_t file_size, c4gh_decoder **ret_dec)
{
	c4gh_decoder *d;
	uint64_t raw = 0;
	int r;

	if (file_size < h->len)
		return err_set(-EBADMSG, "Crypt4GH file shorter than its header");
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->h = h;
	d->fd = fd;
	d->data_off = h->len;
	d->data_len = file_size - h->len;
	r = raw_size(h, d->data_len, &raw, &d->nseg);
	if (r < 0)
		goto fail;
	d->size = edited_size(h, raw);
	if (h->edited && h->nedits > 0) {
		d->ei = 1;
		d->run_left = h->edits[0];
		d->keeping = false;
	} else {
		d->run_left = UINT64_MAX;
		d->keeping = true;
	}
	d->cbuf = malloc(C4GH_SEGMENT_SEALED);
	d->pbuf = malloc(C4GH_SEGMENT);
	d->evp = EVP_CIPHER_CTX_new();
	if (!d->cbuf || !d->pbuf || !d->evp) {
		r = -ENOMEM;
		goto fail;
	}
	*ret_dec = d;
	return 0;
fail:
	d->h = NULL;  /* the caller keeps h on failure */
	c4gh_decoder_free(d);
	return r;
}

uint64_t c4gh_decoder_size(const c4gh_decoder *d)
{
	return d->size;
}

/* Read, authenticate and decrypt segment d->next_seg into out (room for C4GH_SEGMENT); *ret_n
 * its plaintext length. Each key is tried, the one that opened the last segment first. */
static int segment_open(c4gh_decoder *d, uint8_t *out, size_t *ret_n)
{
	uint64_t i = d->next_seg;
	uint64_t off = (uint64_t)i * C4GH_SEGMENT_SEALED;
	size_t clen = (size_t)MIN((uint64_t)C4GH_SEGMENT_SEALED, d->data_len - off);
	size_t mlen = clen - C4GH_SEGMENT_OVERHEAD;
	const bool aead = d->h->method == C4GH_CHACHA20_IETF_POLY1305_AEAD;
	ssize_t got;

	got = pread_full(d->fd, d->cbuf, clen, d->data_off + off);
	if (got < 0)
		return err_set((int)got, "Crypt4GH segment %llu: read failed: %s",
			       (unsigned long long)i, strerror((int)-got));
	if ((size_t)got != clen)
		return err_set(-ENODATA, "Crypt4GH file shrank while it was read (segment %llu)",
			       (unsigned long long)i);
	for (size_t t = 0; t < d->h->nkeys; t++) {
		size_t k = (d->h->last_key + t) % d->h->nkeys;
		uint8_t ad[8];

		put_le64(ad, d->h->keys[k].seq + i);
		if (evp_open(d->evp, d->h->keys[k].k, d->cbuf, ad, aead ? 8 : 0, d->cbuf + NONCE_LEN,
			     mlen, d->cbuf + NONCE_LEN + mlen, out) == 0) {
			d->h->last_key = k;
			d->next_seg++;
			*ret_n = mlen;
			return 0;
		}
	}
	sodium_memzero(out, mlen);
	return err_set(-EBADMSG, "Crypt4GH segment %llu of %llu does not authenticate (altered, "
		       "moved or from another file)", (unsigned long long)i,
		       (unsigned long long)d->nseg);
}

/* Advance the edit list past a run that ended. */
static void next_run(c4gh_decoder *d)
{
	const c4gh_header *h = d->h;

	if (d->ei < h->nedits) {
		d->run_left = h->edits[d->ei++];
		d->keeping = !d->keeping;
	} else if (!d->keeping) {
		/* A list that ends with a discard keeps the rest. */
		d->run_left = UINT64_MAX;
		d->keeping = true;
	} else {
		/* One that ends with a keep drops the rest. */
		d->run_left = UINT64_MAX;
		d->keeping = false;
	}
}

ssize_t c4gh_decoder_read(c4gh_decoder *d, void *buf, size_t len)
{
	uint8_t *out = buf;
	size_t n = 0;
	int r;

	if (d->err)
		return d->err;
	len = (size_t)MIN((uint64_t)len, d->size - d->given);
	while (n < len) {
		size_t avail = d->plen - d->ppos, take;

		if (d->run_left == 0) {
			next_run(d);
			continue;
		}
		if (avail == 0) {
			size_t got;

			/* Whole segments straight into the caller's buffer when nothing is cut. */
			if (!d->h->edited && len - n >= C4GH_SEGMENT && d->next_seg < d->nseg) {
				r = segment_open(d, out + n, &got);
				if (r < 0)
					goto fail;
				n += got;
				continue;
			}
			if (d->next_seg >= d->nseg) {
				r = err_set(-EBADMSG, "Crypt4GH data ends before its edit list");
				goto fail;
			}
			r = segment_open(d, d->pbuf, &got);
			if (r < 0)
				goto fail;
			d->ppos = 0;
			d->plen = got;
			continue;
		}
		take = (size_t)MIN((uint64_t)avail, d->run_left);
		if (d->keeping)
			take = MIN(take, len - n);
		if (d->keeping)
			memcpy(out + n, d->pbuf + d->ppos, take);
		if (d->keeping)
			n += take;
		d->ppos += take;
		if (d->run_left != UINT64_MAX)
			d->run_left -= take;
	}
	d->given += n;
	if (d->given == d->size && !d->done) {
		/* The end: every segment not yet read must still authenticate. */
		while (d->next_seg < d->nseg) {
			size_t got;

			r = segment_open(d, d->pbuf, &got);
			if (r < 0)
				goto fail;
		}
		sodium_memzero(d->pbuf, C4GH_SEGMENT);
		d->plen = d->ppos = 0;
		d->done = true;
	}
	return (ssize_t)n;
fail:
	sodium_memzero(out, len);
	d->err = r;
	return r;
}

void c4gh_decoder_free(c4gh_decoder *d)
{
	if (!d)
		return;
	if (d->pbuf) {
		sodium_memzero(d->pbuf, C4GH_SEGMENT);
		free(d->pbuf);
	}
	free(d->cbuf);
	EVP_CIPHER_CTX_free(d->evp);
	c4gh_header_free(d->h);
	free(d);
}

struct c4gh_encoder {
	crypto_key *data_key;
	EVP_CIPHER_CTX *evp;
};

int c4gh_encoder_new(const uint8_t (*recipients)[C4GH_KEY_LEN], size_t n,
		     c4gh_encoder **ret_enc, uint8_t **ret_hdr, size_t *ret_hdr_len)
{
	c4gh_encoder *e = calloc(1, sizeof(*e));
	struct c4gh_header_spec s = { .recipients = recipients, .nrecipients = n };
	int r;

	if (!e)
		return -ENOMEM;
	e->evp = EVP_CIPHER_CTX_new();
	r = e->evp ? crypto_key_generate(&e->data_key) : -ENOMEM;
	if (r == 0) {
		s.data_key = e->data_key;
		r = c4gh_header_build(&s, ret_hdr, ret_hdr_len);
	}
	if (r < 0) {
		c4gh_encoder_free(e);
		return r;
	}
	*ret_enc = e;
	return 0;
}

int c4gh_encoder_segment(c4gh_encoder *e, const uint8_t *in, size_t len, uint8_t *out)
{
	return segment_seal_ctx(e->evp, e->data_key, C4GH_CHACHA20_IETF_POLY1305, 0, NULL, in, len,
				out);
}

void c4gh_encoder_free(c4gh_encoder *e)
{
	if (!e)
		return;
	crypto_key_free(e->data_key);
	EVP_CIPHER_CTX_free(e->evp);
	free(e);
}
