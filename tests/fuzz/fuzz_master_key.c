/* fuzz_master_key: crypto_master_unlock() (crypto/master.c) on a key file made from the input.
 *
 * keys/master.key is the first thing a store reads from its untrusted disk, before any key exists
 * to authenticate it, so its header (magic, version, KDF algorithm and cost) is parsed bare. The
 * input is written as the whole file into a private directory and unlocked with a fixed
 * passphrase. Besides "no crash, leak or UB" the result must be one of the documented ones for a
 * file that exists: 0, -EBADMSG (malformed) or -EKEYREJECTED (wrong passphrase or altered key).
 */
#include <fcntl.h>

#include <sodium.h>

#include "crypto/crypto.h"
#include "common/common.h"
#include "fuzz.h"

#define FUZZ_KEY_NAME "master.key"

/* Inputs the unlock would derive a key for at a cost above these are skipped: Argon2id is
 * libsodium's, not ours, and a few passes over many MiB per input would only slow the search
 * down. Every header check runs before the KDF, so nothing of the parser is lost. */
#define FUZZ_OPSLIMIT_MAX 3ull
#define FUZZ_MEMLIMIT_MAX (1ull << 20)

/* Accepted by master.c's kdf_params_ok(): OPSLIMIT_MIN..16 passes, MEMLIMIT_MIN..4 GiB. */
#define MASTER_OPSLIMIT_MAX 16ull
#define MASTER_MEMLIMIT_MAX (4ull << 30)

static char tmpdir[] = "/tmp/enclave-fuzz-master.XXXXXX";
static int key_dirfd = -1;
static crypto_secret *pass;

/* Remove the file and the private directory when libFuzzer exits normally. */
static void cleanup(void)
{
	crypto_secret_free(pass);
	if (key_dirfd >= 0) {
		unlinkat(key_dirfd, FUZZ_KEY_NAME, 0);
		close(key_dirfd);
	}
	rmdir(tmpdir);
}

/* The same range check as master.c, so exactly the inputs that would reach an expensive KDF run
 * are skipped. */
static bool kdf_too_costly(const uint8_t *data, size_t size)
{
	uint64_t ops, mem;

	if (size != CRYPTO_MASTER_FILE_LEN)
		return false;
	ops = get_le64(data + 16);
	mem = get_le64(data + 24);
	if (ops < crypto_pwhash_OPSLIMIT_MIN || ops > MASTER_OPSLIMIT_MAX ||
	    mem < crypto_pwhash_MEMLIMIT_MIN || mem > MASTER_MEMLIMIT_MAX)
		return false;	/* refused before the KDF: cheap */
	return ops > FUZZ_OPSLIMIT_MAX || mem > FUZZ_MEMLIMIT_MAX;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int p[2];

	(void)argc;
	(void)argv;
	FUZZ_CHECK(crypto_init() == 0);
	FUZZ_CHECK(mkdtemp(tmpdir) != NULL);
	key_dirfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	FUZZ_CHECK(key_dirfd >= 0);
	/* A crypto_secret is only ever made by reading one. */
	FUZZ_CHECK(pipe2(p, O_CLOEXEC) == 0);
	FUZZ_CHECK(write(p[1], FUZZ_PASSPHRASE, strlen(FUZZ_PASSPHRASE)) ==
		   (ssize_t)strlen(FUZZ_PASSPHRASE));
	close(p[1]);
	FUZZ_CHECK(crypto_passphrase_read_fd(p[0], &pass) == 0);
	close(p[0]);
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	crypto_key *master = NULL;
	int fd, r;

	if (kdf_too_costly(data, size))
		return 0;
	fd = openat(key_dirfd, FUZZ_KEY_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(pwrite_all(fd, data, size, 0) == 0);
	close(fd);

	r = crypto_master_unlock(key_dirfd, FUZZ_KEY_NAME, pass, &master);
	FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -EKEYREJECTED);
	FUZZ_CHECK((r == 0) == (master != NULL));
	/* Only a well-formed file of the exact size gets as far as the passphrase. */
	if (r != -EBADMSG)
		FUZZ_CHECK(size == CRYPTO_MASTER_FILE_LEN && memcmp(data, "ENCLMKEY", 8) == 0);
	crypto_key_free(master);
	return 0;
}
