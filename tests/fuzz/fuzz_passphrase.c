/* fuzz_passphrase: crypto_passphrase_read_fd() (crypto/passphrase.c) reading the input from a pipe.
 *
 * The passphrase comes from whoever starts the daemon or the CLI (--passphrase-fd, a file). The
 * harness works out the documented result on its own and checks the function against it:
 * one trailing "\n" or "\r\n" is removed; then an empty passphrase is -EINVAL, one longer than
 * CRYPTO_PASSPHRASE_MAX bytes is -E2BIG, and anything else comes back byte for byte.
 */
#include <fcntl.h>

#include "crypto/crypto.h"
#include "common/common.h"
#include "fuzz.h"

/* The documented contract, written down independently of passphrase.c. */
static int expected_result(const uint8_t *data, size_t size, size_t *ret_len)
{
	size_t len = size;

	if (len > 0 && data[len - 1] == '\n') {
		len--;
		if (len > 0 && data[len - 1] == '\r')
			len--;
	}
	if (len == 0)
		return -EINVAL;
	if (len > CRYPTO_PASSPHRASE_MAX)
		return -E2BIG;
	*ret_len = len;
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* sodium_malloc needs sodium_init. */
	FUZZ_CHECK(crypto_init() == 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	crypto_secret *secret = NULL;
	size_t want_len = 0;
	int p[2];
	int r, want, cap;

	FUZZ_CHECK(pipe2(p, O_CLOEXEC) == 0);
	/* The pipe is filled before the function reads it, so the input is cut to what the pipe
	 * holds (64 KiB by default). Nothing is lost: every input longer than
	 * CRYPTO_PASSPHRASE_MAX + 2 bytes is -E2BIG whatever follows, and the expected result is
	 * worked out from the bytes actually sent. */
	cap = fcntl(p[1], F_GETPIPE_SZ);
	FUZZ_CHECK(cap > CRYPTO_PASSPHRASE_MAX + 2);
	size = MIN(size, (size_t)cap);
	want = expected_result(data, size, &want_len);

	/* It all fits, so the write does not block; EOF follows the last byte. */
	FUZZ_CHECK(size == 0 || write(p[1], data, size) == (ssize_t)size);
	close(p[1]);
	r = crypto_passphrase_read_fd(p[0], &secret);
	close(p[0]);

	FUZZ_CHECK(r == want);
	if (r < 0) {
		FUZZ_CHECK(secret == NULL);
		return 0;
	}
	FUZZ_CHECK(secret != NULL);
	FUZZ_CHECK(crypto_secret_len(secret) == want_len);
	FUZZ_CHECK(memcmp(crypto_secret_data(secret), data, want_len) == 0);
	crypto_secret_free(secret);
	return 0;
}
