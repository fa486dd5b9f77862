/* fuzz_crypt4gh: the Crypt4GH parsers (crypto/crypt4gh.c) on outside input: a .c4gh file's
 * header and data as a steward's import hands them to the daemon, and the public and private key
 * files a steward gives enclavectl.
 *
 * Byte 0 of the input (modulo FUZZ_C4GH_COUNT) picks the target; the rest is the file. A file is
 * parsed with the fixed key FUZZ_C4GH_SK and, when its header parses, decoded to the end from a
 * memfd. Besides "no crash, leak or UB": every result is one of the documented ones, a header
 * never claims more bytes than it was given, and the decoder gives exactly the size it announced
 * or fails; a public key text that parses is its key's own text but for spaces and line breaks
 * (canonical base64: no other text names the same key).
 */
#include <sys/mman.h>

#include "crypto/crypt4gh.h"
#include "common/common.h"
#include "fuzz.h"

static crypto_key *sk;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const uint8_t b[32] = FUZZ_C4GH_SK;

	(void)argc;
	(void)argv;
	FUZZ_CHECK(crypto_init() == 0);
	FUZZ_CHECK(crypto_key_from_bytes(b, &sk) == 0);
	return 0;
}

/* The text without its spaces and line breaks, into out (room for n). */
static size_t squeeze(const char *in, size_t n, char *out)
{
	size_t m = 0;

	for (size_t i = 0; i < n; i++)
		if (in[i] != ' ' && in[i] != '\t' && in[i] != '\r' && in[i] != '\n')
			out[m++] = in[i];
	return m;
}

static void fuzz_pubkey(const char *text, size_t len)
{
	static char a[8192], b[C4GH_PUBKEY_TEXT_MAX];
	char canon[C4GH_PUBKEY_TEXT_MAX];
	uint8_t pk[C4GH_KEY_LEN];
	size_t la, lb;
	int r = c4gh_pubkey_parse(text, len, pk);

	FUZZ_CHECK(r == 0 || r == -EBADMSG);
	if (r < 0)
		return;
	FUZZ_CHECK(len <= sizeof(a));
	c4gh_pubkey_format(pk, canon);
	la = squeeze(text, len, a);
	lb = squeeze(canon, strlen(canon), b);
	FUZZ_CHECK(la == lb && memcmp(a, b, la) == 0);
}

static void fuzz_file(const uint8_t *data, size_t size)
{
	static uint8_t buf[65536 * 2];
	c4gh_header *h = NULL;
	c4gh_decoder *d = NULL;
	uint64_t total = 0;
	ssize_t n;
	int fd, r;

	r = c4gh_header_parse(data, size, sk, &h);
	FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -ENOTSUP || r == -E2BIG || r == -ENOKEY ||
		   r == -ENOBUFS || r == -ENOMEM);
	if (r < 0)
		return;
	FUZZ_CHECK(c4gh_header_length(h) <= size && c4gh_header_keys(h) >= 1);
	fd = memfd_create("c4gh", MFD_CLOEXEC);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(pwrite_all(fd, data, size, 0) == 0);
	r = c4gh_decoder_new(h, fd, size, &d);
	FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -ENOMEM);
	if (r < 0) {
		c4gh_header_free(h);
		close(fd);
		return;
	}
	while ((n = c4gh_decoder_read(d, buf, sizeof(buf))) > 0)
		total += (uint64_t)n;
	FUZZ_CHECK(n == 0 || n == -EBADMSG);
	if (n == 0)
		FUZZ_CHECK(total == c4gh_decoder_size(d));
	c4gh_decoder_free(d);
	close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	crypto_key *k = NULL;
	int r;

	if (size < 1)
		return 0;
	switch (data[0] % FUZZ_C4GH_COUNT) {
	case FUZZ_C4GH_FILE:
		fuzz_file(data + 1, size - 1);
		break;
	case FUZZ_C4GH_PUBKEY:
		fuzz_pubkey((const char *)data + 1, size - 1);
		break;
	case FUZZ_C4GH_SECKEY:
		/* No passphrase: a protected key (Crypt4GH with scrypt, bcrypt or pbkdf2; OpenSSH
		 * with bcrypt and any cipher) is checked whole up to its encrypted part, kdf
		 * options and rounds included, and stops before the KDF (-ENOKEY): running the
		 * KDFs here would spend seconds an input. The private part of an OpenSSH key,
		 * once decrypted, goes through the same parser as an unprotected key's, which
		 * is fuzzed here in full (seeds: tests/fuzz/fuzz_seeds.c). */
		(void)c4gh_seckey_encrypted((const char *)data + 1, size - 1);
		r = c4gh_seckey_parse((const char *)data + 1, size - 1, NULL, &k);
		FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -ENOKEY || r == -ENOTSUP ||
			   r == -ENOMEM || r == -EKEYREJECTED || r == -E2BIG);
		FUZZ_CHECK((r == 0) == (k != NULL));
		crypto_key_free(k);
		break;
	}
	return 0;
}
