/* signing: the audit log's Ed25519 signing key, kept in the store beside the master key
 * (docs/FORMAT.md "keys/audit.key").
 *
 * The key is a 32-byte seed, wrapped under the master key like a dataset key, with associated data
 * that names its purpose and the store, so the wrapped bytes cannot stand in for any other key
 * and a file copied from another store does not unwrap. It is separate from every data key: the
 * signing key proves what the log says; it opens no data, and no data key signs anything.
 *
 * The GA4GH visa signing key (keys/visa.key) is kept the same way, in its own file with its own
 * magic and associated-data label: the seed from which crypto_es256_from_seed() derives the ES256
 * key that signs exported visas.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "store/store_internal.h"

#define SIGNING_NAME "audit.key"
#define SIGNING_MAGIC "ENCLSIG1"
/* magic, the wrapped seed, the key name's length (1 byte) and the name. */
#define SIGNING_FILE_MAX (8 + CRYPTO_WRAPPED_KEY_LEN + 1 + STORE_SIGNING_NAME_MAX)
#define SIGNING_AD_LABEL "enclave audit signing key v1"

/* The GA4GH visa signing key (an ES256 key derived from the seed): the same file layout, its own
 * file, magic and label, so neither key's file can stand in for the other's. */
#define VISA_KEY_NAME "visa.key"
#define VISA_KEY_MAGIC "ENCLVIS1"
#define VISA_AD_LABEL "enclave visa signing key v1"
#define VISA_KEY_ID "ga4gh-visa"

/* The store's Crypt4GH key (docs/CRYPT4GH.md): the X25519 secret itself is the wrapped 32 bytes. */
#define C4GH_KEY_NAME "crypt4gh.key"
#define C4GH_KEY_MAGIC "ENCLC4G1"
#define C4GH_AD_LABEL "enclave crypt4gh site key v1"
#define C4GH_KEY_ID "crypt4gh-site"

/* Which key a file holds. */
struct keyfile {
	const char *file, *magic, *label;
};
static const struct keyfile audit_keyfile = { SIGNING_NAME, SIGNING_MAGIC, SIGNING_AD_LABEL };
static const struct keyfile visa_keyfile = { VISA_KEY_NAME, VISA_KEY_MAGIC, VISA_AD_LABEL };
static const struct keyfile c4gh_keyfile = { C4GH_KEY_NAME, C4GH_KEY_MAGIC, C4GH_AD_LABEL };

/* label || store id || name: the key is this store's, for this name, for this purpose. */
static size_t signing_ad(const struct keyfile *kf, const uint8_t store_id[16], const char *name,
			 uint8_t out[static 64 + STORE_SIGNING_NAME_MAX])
{
	size_t n = strlen(kf->label), nl = strlen(name);

	memcpy(out, kf->label, n);
	memcpy(out + n, store_id, 16);
	memcpy(out + n + 16, name, nl);
	return n + 16 + nl;
}

bool store_signing_name_valid(const char *name)
{
	size_t n = strnlen(name, STORE_SIGNING_NAME_MAX + 1);

	if (n == 0 || n > STORE_SIGNING_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (name[i] <= 0x20 || name[i] >= 0x7f || name[i] == '+')
			return false;
	return true;
}

void store_signing_default_name(char out[static STORE_SIGNING_NAME_MAX + 1])
{
	char host[256] = "localhost";

	if (gethostname(host, sizeof(host)) < 0 || !host[0])
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(out, STORE_SIGNING_NAME_MAX + 1, "%.150s/enclave", host);
}

/* Write kf holding key (NULL: a fresh random one), created O_EXCL: -EEXIST if there is one. */
static int keyfile_create(struct store *st, const struct keyfile *kf, const char *name,
			  const crypto_key *key)
{
	uint8_t file[SIGNING_FILE_MAX], ad[64 + STORE_SIGNING_NAME_MAX];
	size_t nl, len;
	crypto_key *seed = NULL;
	int keys_fd, fd, r;

	if (st->secondary)
		return err_set(-EROFS, "a node never writes the store");
	nl = strlen(name);
	if (!key) {
		r = crypto_key_generate(&seed);
		if (r < 0)
			return r;
		key = seed;
	}
	memcpy(file, kf->magic, 8);
	r = crypto_key_wrap(st->master, key, ad, signing_ad(kf, st->store_id, name, ad), file + 8);
	crypto_key_free(seed);
	if (r < 0)
		return r;
	file[8 + CRYPTO_WRAPPED_KEY_LEN] = (uint8_t)nl;
	memcpy(file + 8 + CRYPTO_WRAPPED_KEY_LEN + 1, name, nl);
	len = 8 + CRYPTO_WRAPPED_KEY_LEN + 1 + nl;

	keys_fd = openat(st->dirfd, "keys", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (keys_fd < 0)
		return err_set(-errno, "no keys directory: %s", strerror(errno));
	fd = openat(keys_fd, kf->file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	if (fd < 0) {
		r = -errno;
		close(keys_fd);
		return err_set(r, "cannot create keys/%s: %s", kf->file, strerror(-r));
	}
	r = pwrite_all(fd, file, len, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && fsync(keys_fd) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(keys_fd, kf->file, 0);
		r = err_set(r, "cannot write keys/%s: %s", kf->file, strerror(-r));
	}
	close(keys_fd);
	return r;
}

int store_signing_create(struct store *st, const char *name)
{
	if (!store_signing_name_valid(name))
		return err_set(-EINVAL, "\"%s\" cannot name the audit signing key: 1 to %u "
			       "printable ASCII characters, no spaces, no '+'", name,
			       STORE_SIGNING_NAME_MAX);
	return keyfile_create(st, &audit_keyfile, name, NULL);
}

static int keyfile_seed(struct store *st, const struct keyfile *kf, crypto_key **ret_seed,
			char ret_name[static STORE_SIGNING_NAME_MAX + 1])
{
	uint8_t file[SIGNING_FILE_MAX + 1], ad[64 + STORE_SIGNING_NAME_MAX];
	char name[STORE_SIGNING_NAME_MAX + 1];
	int keys_fd, fd, r;
	size_t nl;
	ssize_t n;

	keys_fd = openat(st->dirfd, "keys", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (keys_fd < 0)
		return err_set(-errno, "no keys directory: %s", strerror(errno));
	fd = openat(keys_fd, kf->file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	close(keys_fd);
	if (fd < 0)
		return err_set(-errno, "cannot open keys/%s: %s", kf->file, strerror(errno));
	n = read_full(fd, file, sizeof(file));
	close(fd);
	if (n < 0)
		return err_set((int)n, "cannot read keys/%s: %s", kf->file, strerror((int)-n));
	nl = n > 8 + CRYPTO_WRAPPED_KEY_LEN ? file[8 + CRYPTO_WRAPPED_KEY_LEN] : 0;
	if ((size_t)n != 8 + CRYPTO_WRAPPED_KEY_LEN + 1 + nl || memcmp(file, kf->magic, 8) != 0 ||
	    nl == 0 || nl > STORE_SIGNING_NAME_MAX)
		return err_set(-EBADMSG, "keys/%s is not a signing key file of its kind (%zd bytes)",
			       kf->file, n);
	memcpy(name, file + 8 + CRYPTO_WRAPPED_KEY_LEN + 1, nl);
	name[nl] = '\0';
	if (!store_signing_name_valid(name))
		return err_set(-EBADMSG, "keys/%s holds an invalid key name", kf->file);
	r = crypto_key_unwrap(st->master, file + 8, ad, signing_ad(kf, st->store_id, name, ad),
			      ret_seed);
	if (r < 0)
		return err_set(r, "keys/%s does not unwrap under this store's master key (altered, "
			       "or from another store)", kf->file);
	memcpy(ret_name, name, nl + 1);
	return 0;
}

int store_signing_seed(struct store *st, crypto_key **ret_seed,
		       char ret_name[static STORE_SIGNING_NAME_MAX + 1])
{
	return keyfile_seed(st, &audit_keyfile, ret_seed, ret_name);
}

int store_visa_key_create(struct store *st)
{
	return keyfile_create(st, &visa_keyfile, VISA_KEY_ID, NULL);
}

int store_visa_key_seed(struct store *st, crypto_key **ret_seed)
{
	char name[STORE_SIGNING_NAME_MAX + 1];
	crypto_key *seed = NULL;
	int r = keyfile_seed(st, &visa_keyfile, &seed, name);

	if (r < 0)
		return r;
	if (strcmp(name, VISA_KEY_ID) != 0) {
		crypto_key_free(seed);
		return err_set(-EBADMSG, "keys/%s names another key", VISA_KEY_NAME);
	}
	*ret_seed = seed;
	return 0;
}

int store_crypt4gh_key_put(struct store *st, const crypto_key *sk)
{
	return keyfile_create(st, &c4gh_keyfile, C4GH_KEY_ID, sk);
}

int store_crypt4gh_key_get(struct store *st, crypto_key **ret_sk)
{
	char name[STORE_SIGNING_NAME_MAX + 1];
	crypto_key *sk = NULL;
	int r = keyfile_seed(st, &c4gh_keyfile, &sk, name);

	if (r < 0)
		return r;
	if (strcmp(name, C4GH_KEY_ID) != 0) {
		crypto_key_free(sk);
		return err_set(-EBADMSG, "keys/%s names another key", C4GH_KEY_NAME);
	}
	*ret_sk = sk;
	return 0;
}
