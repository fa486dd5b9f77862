/* es256: ECDSA P-256 with SHA-256 (JWS "ES256", RFC 7518 section 3.4) for the store's GA4GH visa
 * signing key, through OpenSSL 3.
 *
 * The private key is not stored as such: the store keeps a random 32-byte seed wrapped under the
 * master key (keys/visa.key, like the audit key), and the scalar is derived from it here as
 * d = (seed mod (n - 1)) + 1, which lies in [1, n - 1] for any seed. The bias this adds is at most
 * 2^-224 (n is within 2^224 of 2^256): nothing an attacker can use. The same seed always gives
 * the same key, so the public key (and the JWKS) is stable for the store's life.
 *
 * Secrets: the seed stays in the caller's guarded memory; the scalar lives in OpenSSL's secure
 * BIGNUMs while it is derived and in the EVP_PKEY after, which OpenSSL clears when freed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/params.h>

#include "common/err.h"
#include "crypto/crypto.h"

struct crypto_es256 {
	EVP_PKEY *pkey;               /* the key pair; owned */
	uint8_t x[32], y[32];         /* the public point, big-endian coordinates */
};

/* EVP_PKEY for the point (x, y) and, when d is not NULL, the scalar. NULL on failure. */
static EVP_PKEY *pkey_from(const uint8_t pub[65], const BIGNUM *d)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;

	if (!bld ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 65) ||
	    (d && !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d)))
		goto out;
	params = OSSL_PARAM_BLD_to_param(bld);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, d ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) <= 0)
		pkey = NULL;
out:
	EVP_PKEY_CTX_free(ctx);
	/* The parameters hold a copy of the scalar; d is a secure BIGNUM, so OSSL_PARAM_BLD put
	 * that copy in its secure block, which OSSL_PARAM_free() clears as it frees. */
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

int crypto_es256_from_seed(const crypto_key *seed, crypto_es256 **ret_key)
{
	BN_CTX *bnctx = BN_CTX_secure_new();
	EC_GROUP *group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	BIGNUM *s = BN_secure_new(), *nm1 = BN_new(), *d = BN_secure_new();
	EC_POINT *pub = NULL;
	crypto_es256 *k = NULL;
	uint8_t point[65];
	int r = -ENOMEM;

	if (!bnctx || !group || !s || !nm1 || !d)
		goto out;
	pub = EC_POINT_new(group);
	k = calloc(1, sizeof(*k));
	if (!pub || !k)
		goto out;
	r = -EIO;
	/* d = (seed mod (n - 1)) + 1 */
	if (!BN_bin2bn(crypto_key_bytes(seed), CRYPTO_KEY_LEN, s) ||
	    !BN_copy(nm1, EC_GROUP_get0_order(group)) || !BN_sub_word(nm1, 1) ||
	    !BN_mod(d, s, nm1, bnctx) || !BN_add_word(d, 1) ||
	    !EC_POINT_mul(group, pub, d, NULL, NULL, bnctx) ||
	    EC_POINT_point2oct(group, pub, POINT_CONVERSION_UNCOMPRESSED, point, sizeof(point),
			       bnctx) != sizeof(point))
		goto out;
	k->pkey = pkey_from(point, d);
	if (!k->pkey)
		goto out;
	memcpy(k->x, point + 1, 32);
	memcpy(k->y, point + 33, 32);
	*ret_key = k;
	k = NULL;
	r = 0;
out:
	if (r == -EIO)
		err_set(r, "OpenSSL could not make the P-256 key");
	crypto_es256_free(k);
	EC_POINT_free(pub);
	BN_clear_free(s);
	BN_free(nm1);
	BN_clear_free(d);
	EC_GROUP_free(group);
	BN_CTX_free(bnctx);
	return r;
}

void crypto_es256_free(crypto_es256 *k)
{
	if (!k)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

void crypto_es256_public(const crypto_es256 *k, uint8_t ret_x[static 32],
			 uint8_t ret_y[static 32])
{
	memcpy(ret_x, k->x, 32);
	memcpy(ret_y, k->y, 32);
}

/* DER ECDSA-Sig-Value <-> the JWS form, r and s as 32 big-endian bytes each. */
static int der_to_raw(const uint8_t *der, size_t len, uint8_t out[static 64])
{
	const uint8_t *p = der;
	ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
	const BIGNUM *r = NULL, *s = NULL;
	int ok;

	if (!sig)
		return -EIO;
	ECDSA_SIG_get0(sig, &r, &s);
	ok = BN_bn2binpad(r, out, 32) == 32 && BN_bn2binpad(s, out + 32, 32) == 32;
	ECDSA_SIG_free(sig);
	return ok ? 0 : -EIO;
}

int crypto_es256_sign(const crypto_es256 *k, const void *msg, size_t len,
		      uint8_t ret_sig[static 64])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t der[80];
	size_t dlen = sizeof(der);
	int r = -EIO;

	if (!md)
		return -ENOMEM;
	if (EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, k->pkey, NULL) > 0 &&
	    EVP_DigestSign(md, der, &dlen, msg, len) > 0)
		r = der_to_raw(der, dlen, ret_sig);
	EVP_MD_CTX_free(md);
	if (r < 0)
		err_set(r, "OpenSSL could not sign with the P-256 key");
	return r;
}

int crypto_es256_verify(const uint8_t x[static 32], const uint8_t y[static 32], const void *msg,
			size_t len, const uint8_t sig[static 64])
{
	uint8_t point[65] = { 0x04 }, der[80], *p = der;
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY *pkey = NULL;
	int dlen, ret = -EBADMSG;

	memcpy(point + 1, x, 32);
	memcpy(point + 33, y, 32);
	if (!es || !r || !s || !md || !ECDSA_SIG_set0(es, r, s)) {
		ret = -ENOMEM;
		goto out;
	}
	r = s = NULL;   /* es owns them now */
	dlen = i2d_ECDSA_SIG(es, &p);
	pkey = pkey_from(point, NULL);
	if (dlen <= 0 || !pkey) {
		ret = err_set(-EINVAL, "not a P-256 public key");
		goto out;
	}
	if (EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, pkey, NULL) > 0 &&
	    EVP_DigestVerify(md, der, (size_t)dlen, msg, len) == 1)
		ret = 0;
out:
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
	return ret;
}
