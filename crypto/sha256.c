/* SHA-256 over a stream (crypto/crypto.h), on OpenSSL's EVP digest. */
#include <errno.h>
#include <stdlib.h>

#include <openssl/evp.h>

#include "crypto/crypto.h"

struct crypto_sha256 {
	EVP_MD_CTX *ctx;
};

int crypto_sha256_new(crypto_sha256 **ret_h)
{
	crypto_sha256 *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
		crypto_sha256_free(h);
		return -ENOMEM;
	}
	*ret_h = h;
	return 0;
}

int crypto_sha256_update(crypto_sha256 *h, const void *p, size_t n)
{
	return n == 0 || EVP_DigestUpdate(h->ctx, p, n) == 1 ? 0 : -EIO;
}

int crypto_sha256_final(crypto_sha256 *h, uint8_t ret[static 32])
{
	unsigned int len = 0;

	return EVP_DigestFinal_ex(h->ctx, ret, &len) == 1 && len == 32 ? 0 : -EIO;
}

void crypto_sha256_free(crypto_sha256 *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->ctx);
	free(h);
}
