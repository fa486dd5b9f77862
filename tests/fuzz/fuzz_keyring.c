/* fuzz_keyring: keyring_load() (store/keyring.c) on a keys/ring file made from the input.
 *
 * The key ring sits on the untrusted disk (docs/FORMAT.md 3.7), and a store reads it at every
 * open. The contract checked besides "no crash, leak or UB": the file is refused with -EBADMSG
 * unless it is a ring of this store sealed under the fuzz master key (every byte is
 * authenticated, so the fuzzer can only find refusals); one that is accepted has a generation
 * above 0, exactly as many entries as its length says, and a name key.
 */
#include <fcntl.h>
#include <unistd.h>

#include "store/store_internal.h"
#include "fuzz.h"

static const uint8_t fuzz_store_id[16] = FUZZ_STORE_ID;
static const uint8_t fuzz_master[32] = FUZZ_RING_MASTER;
static int dirfd_ = -1;
static crypto_key *master;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/fuzz-keyring.XXXXXX";

	(void)argc;
	(void)argv;
	FUZZ_CHECK(crypto_init() == 0);
	FUZZ_CHECK(mkdtemp(dir) != NULL);
	dirfd_ = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	FUZZ_CHECK(dirfd_ >= 0);
	FUZZ_CHECK(crypto_key_from_bytes(fuzz_master, &master) == 0);
	return 0;
}

static int count(void *ctx, enum keyring_kind kind, uint64_t dsid, uint32_t version,
		 const crypto_key *key)
{
	(void)kind, (void)dsid, (void)version, (void)key;
	++*(size_t *)ctx;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct keyring *kr = NULL;
	const crypto_key *k = NULL;
	size_t n = 0;
	int fd, r;

	if (size > 1u << 20)
		return 0;
	unlinkat(dirfd_, KEYRING_FILE, 0);
	fd = openat(dirfd_, KEYRING_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(size == 0 || pwrite_all(fd, data, size, 0) == 0);
	close(fd);
	r = keyring_load(dirfd_, master, fuzz_store_id, &kr);
	FUZZ_CHECK(r == 0 || r == -EBADMSG);
	if (r == 0) {
		FUZZ_CHECK(keyring_generation(kr) > 0);
		FUZZ_CHECK(keyring_foreach(kr, count, &n) == 0);
		FUZZ_CHECK(size == 156 + 48 * n);
		FUZZ_CHECK(keyring_get(kr, KEYRING_NAMES, 0, 0, &k) == 0);
		keyring_free(kr);
	}
	return 0;
}
