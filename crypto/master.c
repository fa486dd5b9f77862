/* crypto: the master key file: the master key wrapped under a key derived from a passphrase.
 *
 * Layout (integers little-endian), CRYPTO_MASTER_FILE_LEN = 120 bytes:
 *   off len field
 *   0   8   magic "ENCLMKEY"
 *   8   4   format version = 1
 *   12  4   KDF algorithm = 2 (crypto_pwhash_ALG_ARGON2ID13)
 *   16  8   opslimit
 *   24  8   memlimit (bytes)
 *   32  16  salt (random)
 *   48  24  nonce (random)
 *   72  48  XChaCha20-Poly1305(KEK, nonce, master key) ciphertext || tag, AD = bytes 0..47
 * KEK = Argon2id(passphrase, salt, opslimit, memlimit), 32 bytes.
 */
#include "crypto/crypto.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <sodium.h>

#include "common/common.h"

#define MASTER_MAGIC "ENCLMKEY"
#define MASTER_VERSION 1u
#define MASTER_KDF_ALG 2u

#define OFF_MAGIC 0
#define OFF_VERSION 8
#define OFF_ALG 12
#define OFF_OPSLIMIT 16
#define OFF_MEMLIMIT 24
#define OFF_SALT 32
#define OFF_NONCE 48
#define OFF_CT 72
#define AD_LEN OFF_NONCE
#define CT_LEN (CRYPTO_KEY_LEN + crypto_aead_xchacha20poly1305_ietf_ABYTES)

/* Accepted KDF cost: a hostile file must not make us spend unbounded time or memory. */
#define KDF_OPSLIMIT_MAX 16ull
#define KDF_MEMLIMIT_MAX (4ull << 30)

_Static_assert(crypto_pwhash_ALG_ARGON2ID13 == MASTER_KDF_ALG, "KDF algorithm id");
_Static_assert(crypto_pwhash_SALTBYTES == OFF_NONCE - OFF_SALT, "salt size");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == OFF_CT - OFF_NONCE, "nonce size");
_Static_assert(OFF_CT + CT_LEN == CRYPTO_MASTER_FILE_LEN, "master file size");
_Static_assert(sizeof(MASTER_MAGIC) - 1 == OFF_VERSION, "magic size");

/* Production cost. */
struct crypto_kdf_params crypto_kdf_params_default(void)
{
	return (struct crypto_kdf_params){
		.opslimit = crypto_pwhash_OPSLIMIT_MODERATE,
		.memlimit = crypto_pwhash_MEMLIMIT_MODERATE,
	};
}

/* Cheapest cost libsodium allows, so tests run in milliseconds. */
struct crypto_kdf_params crypto_kdf_params_min(void)
{
	return (struct crypto_kdf_params){
		.opslimit = crypto_pwhash_OPSLIMIT_MIN,
		.memlimit = crypto_pwhash_MEMLIMIT_MIN,
	};
}

/* The range both create and unlock accept. */
static bool kdf_params_ok(uint64_t opslimit, uint64_t memlimit)
{
	return opslimit >= crypto_pwhash_OPSLIMIT_MIN && opslimit <= KDF_OPSLIMIT_MAX &&
	       memlimit >= crypto_pwhash_MEMLIMIT_MIN &&
	       memlimit <= MIN(KDF_MEMLIMIT_MAX, (uint64_t)SIZE_MAX);
}

/* Derive the KEK into a new guarded buffer (*ret_kek, the caller's to sodium_free). Argon2id only
 * fails when it cannot allocate its memory (params are checked before), hence -ENOMEM. */
static int derive_kek(const crypto_secret *pass, const uint8_t salt[static crypto_pwhash_SALTBYTES],
		      uint64_t opslimit, uint64_t memlimit, uint8_t **ret_kek)
{
	uint8_t *kek = NULL;

	kek = sodium_malloc(CRYPTO_KEY_LEN);
	if (!kek)
		return -ENOMEM;
	if (crypto_pwhash(kek, CRYPTO_KEY_LEN, (const char *)crypto_secret_data(pass),
			  crypto_secret_len(pass), salt, opslimit, (size_t)memlimit,
			  crypto_pwhash_ALG_ARGON2ID13) != 0) {
		sodium_free(kek);
		return -ENOMEM;
	}
	*ret_kek = kek;
	return 0;
}

/* Write the finished file: O_EXCL so nothing is ever overwritten, then file and directory fsync so
 * the new entry survives a crash. Any failure after the file exists removes it again. */
static int write_new_file(int dirfd, const char *name,
			  const uint8_t file[static CRYPTO_MASTER_FILE_LEN])
{
	int fd = -1;
	int r;

	fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	r = pwrite_all(fd, file, CRYPTO_MASTER_FILE_LEN, 0);
	if (r < 0)
		goto out_close_unlink;
	if (fsync(fd) < 0) {
		r = -errno;
		goto out_close_unlink;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = -errno;
		goto out_unlink;
	}
	r = fsync_dirfd(dirfd);
	if (r < 0)
		goto out_unlink;
	return 0;

out_close_unlink:
	close(fd);
out_unlink:
	unlinkat(dirfd, name, 0);
	return r;
}

/* The master key is generated straight into guarded memory and encrypted from there; the KEK is
 * derived before the file is created, so the slow KDF never runs with a half-made file on disk. */
int crypto_master_create(int dirfd, const char *name, const crypto_secret *pass,
			 const struct crypto_kdf_params *params, crypto_key **ret_master)
{
	uint8_t file[CRYPTO_MASTER_FILE_LEN];
	crypto_key *master = NULL;
	uint8_t *kek = NULL;
	int r;

	if (!name || !pass || !params || !ret_master)
		return -EINVAL;
	if (!kdf_params_ok(params->opslimit, params->memlimit))
		return -EINVAL;

	memcpy(file + OFF_MAGIC, MASTER_MAGIC, OFF_VERSION - OFF_MAGIC);
	put_le32(file + OFF_VERSION, MASTER_VERSION);
	put_le32(file + OFF_ALG, MASTER_KDF_ALG);
	put_le64(file + OFF_OPSLIMIT, params->opslimit);
	put_le64(file + OFF_MEMLIMIT, params->memlimit);
	crypto_random(file + OFF_SALT, OFF_NONCE - OFF_SALT);
	crypto_random(file + OFF_NONCE, OFF_CT - OFF_NONCE);

	r = crypto_key_generate(&master);
	if (r < 0)
		return r;
	r = derive_kek(pass, file + OFF_SALT, params->opslimit, params->memlimit, &kek);
	if (r < 0)
		goto out_free_master;
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(file + OFF_CT, NULL,
						       crypto_key_bytes(master), CRYPTO_KEY_LEN,
						       file, AD_LEN, NULL, file + OFF_NONCE,
						       kek) != 0) {
		r = -EIO;
		goto out_free_kek;
	}
	sodium_free(kek);
	kek = NULL;

	r = write_new_file(dirfd, name, file);
	if (r < 0)
		goto out_free_master;
	*ret_master = master;
	return 0;

out_free_kek:
	sodium_free(kek);
out_free_master:
	crypto_key_free(master);
	return r;
}

/* Read the whole file; one byte more than expected is asked for so a longer file is caught. The
 * file is opened read-only and never written. */
static int read_master_file(int dirfd, const char *name,
			    uint8_t ret_file[static CRYPTO_MASTER_FILE_LEN])
{
	uint8_t file[CRYPTO_MASTER_FILE_LEN + 1];
	ssize_t n;
	int fd = -1;

	struct stat st;

	/* O_NONBLOCK: a FIFO planted under the name must not hang the daemon's start. */
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EBADMSG;
	}
	n = read_full(fd, file, sizeof(file));
	close(fd);
	if (n < 0)
		return (int)n;
	if (n != CRYPTO_MASTER_FILE_LEN)
		return -EBADMSG;
	memcpy(ret_file, file, CRYPTO_MASTER_FILE_LEN);
	return 0;
}

/* Every header field is checked before the KDF runs, so a malformed or hostile file costs nothing.
 * The KEK and the decrypted key only ever live in guarded memory and are wiped on every path. */
int crypto_master_unlock(int dirfd, const char *name, const crypto_secret *pass,
			 crypto_key **ret_master)
{
	uint8_t file[CRYPTO_MASTER_FILE_LEN];
	uint64_t opslimit, memlimit;
	uint8_t *kek = NULL;
	uint8_t *bytes = NULL;
	int r;

	if (!name || !pass || !ret_master)
		return -EINVAL;
	r = read_master_file(dirfd, name, file);
	if (r < 0)
		return r;
	opslimit = get_le64(file + OFF_OPSLIMIT);
	memlimit = get_le64(file + OFF_MEMLIMIT);
	if (memcmp(file + OFF_MAGIC, MASTER_MAGIC, OFF_VERSION - OFF_MAGIC) != 0 ||
	    get_le32(file + OFF_VERSION) != MASTER_VERSION ||
	    get_le32(file + OFF_ALG) != MASTER_KDF_ALG || !kdf_params_ok(opslimit, memlimit))
		return -EBADMSG;

	r = derive_kek(pass, file + OFF_SALT, opslimit, memlimit, &kek);
	if (r < 0)
		return r;
	bytes = sodium_malloc(CRYPTO_KEY_LEN);
	if (!bytes) {
		r = -ENOMEM;
		goto out_free_kek;
	}
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(bytes, NULL, NULL, file + OFF_CT, CT_LEN,
						       file, AD_LEN, file + OFF_NONCE, kek) != 0) {
		r = -EKEYREJECTED;
		goto out_free_bytes;
	}
	/* Copies guarded memory to guarded memory; bytes is wiped just below. */
	r = crypto_key_from_bytes(bytes, ret_master);

out_free_bytes:
	sodium_free(bytes);
out_free_kek:
	sodium_free(kek);
	return r;
}
