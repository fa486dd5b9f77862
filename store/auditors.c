/* auditors: the auditors' public keys the audit log seals to (docs/FORMAT.md "keys/auditors"),
 * and the store key the daemon reads its own sealed log with.
 *
 * keys/auditors is "ENCLAUD1", a count (1 byte), the count's 32-byte X25519 public keys, and a
 * 32-byte MAC over all of that: BLAKE2b keyed with a key derived from the master key for this
 * store. Whoever can write the store directory cannot put a key of their own in the list (the
 * next epoch keys would be sealed to it); they can put back an older list (an auditor added later
 * then stops receiving new epochs: a denial, which the `auditor_add` records in the log show).
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "common/err.h"
#include "store/store_internal.h"

#define AUDITORS_NAME "auditors"
#define AUDITORS_TMP "auditors.tmp"
#define AUDITORS_MAGIC "ENCLAUD1"
#define AUDITORS_MAC_LABEL "enclave auditors file v1"
#define AUDIT_SEAL_LABEL "enclave audit seal v1"
#define MAC_LEN 32
#define FILE_MAX (8 + 1 + STORE_AUDITORS_MAX * 32 + MAC_LEN)

int store_audit_seal_key(struct store *st, crypto_key **ret_key)
{
	if (!st->master)
		return -ENOKEY;
	return crypto_key_derive(st->master, AUDIT_SEAL_LABEL, st->store_id, 16, ret_key);
}

int store_node_audit_key(struct store *st, const char *node, crypto_key **ret_key)
{
	uint8_t ctx[16 + 64];
	size_t n = strnlen(node, 64);

	if (!st->master)
		return -ENOKEY;
	memcpy(ctx, st->store_id, 16);
	memcpy(ctx + 16, node, n);
	return crypto_key_derive(st->master, "enclave node audit seal v1", ctx, 16 + n, ret_key);
}

int store_policy_digest_key(struct store *st, crypto_key **ret_key)
{
	if (!st->master)
		return -ENOKEY;
	return crypto_key_derive(st->master, "enclave policy digest v1", st->store_id, 16, ret_key);
}

/* The MAC of the file's first n bytes. */
static int auditors_mac(struct store *st, const uint8_t *p, size_t n, uint8_t out[static MAC_LEN])
{
	crypto_key *k = NULL, *m = NULL;
	int r;

	r = crypto_key_derive(st->master, AUDITORS_MAC_LABEL, st->store_id, 16, &k);
	if (r == 0)
		r = crypto_key_derive(k, AUDITORS_MAC_LABEL, p, n, &m);
	if (r == 0)
		memcpy(out, crypto_key_bytes(m), MAC_LEN);
	crypto_key_free(k);
	crypto_key_free(m);
	return r;
}

int store_auditors_get(struct store *st, uint8_t ret_keys[static STORE_AUDITORS_MAX][32],
		       size_t *ret_n)
{
	uint8_t file[FILE_MAX + 1], mac[MAC_LEN];
	int keys_fd, fd, r;
	size_t cnt;
	ssize_t n;

	keys_fd = openat(st->dirfd, "keys", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (keys_fd < 0)
		return err_set(-errno, "no keys directory: %s", strerror(errno));
	fd = openat(keys_fd, AUDITORS_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	close(keys_fd);
	if (fd < 0 && errno == ENOENT) {
		*ret_n = 0;
		return 0;
	}
	if (fd < 0)
		return err_set(-errno, "cannot open keys/%s: %s", AUDITORS_NAME, strerror(errno));
	n = read_full(fd, file, sizeof(file));
	close(fd);
	if (n < 0)
		return err_set((int)n, "cannot read keys/%s: %s", AUDITORS_NAME, strerror((int)-n));
	cnt = n > 8 ? file[8] : 0;
	if ((size_t)n != 9 + cnt * 32 + MAC_LEN || memcmp(file, AUDITORS_MAGIC, 8) != 0 ||
	    cnt > STORE_AUDITORS_MAX)
		return err_set(-EBADMSG, "keys/%s is not an auditor key list (%zd bytes)",
			       AUDITORS_NAME, n);
	r = auditors_mac(st, file, 9 + cnt * 32, mac);
	if (r < 0)
		return r;
	if (sodium_memcmp(mac, file + 9 + cnt * 32, MAC_LEN) != 0)
		return err_set(-EBADMSG, "keys/%s does not authenticate under this store's master "
			       "key: someone changed the list of auditor keys", AUDITORS_NAME);
	memcpy(ret_keys, file + 9, cnt * 32);
	*ret_n = cnt;
	return 0;
}

int store_auditors_add(struct store *st, const uint8_t key[static 32])
{
	uint8_t keys[STORE_AUDITORS_MAX][32], file[FILE_MAX];
	size_t n = 0, len;
	int keys_fd, fd, r;

	if (st->secondary)
		return err_set(-EROFS, "a node never writes the store");
	r = store_auditors_get(st, keys, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (sodium_memcmp(keys[i], key, 32) == 0)
			return err_set(-EEXIST, "that auditor key is in the list already");
	if (n == STORE_AUDITORS_MAX)
		return err_set(-E2BIG, "the store has %u auditor keys already, the most it takes",
			       STORE_AUDITORS_MAX);
	memcpy(keys[n++], key, 32);
	memcpy(file, AUDITORS_MAGIC, 8);
	file[8] = (uint8_t)n;
	memcpy(file + 9, keys, n * 32);
	r = auditors_mac(st, file, 9 + n * 32, file + 9 + n * 32);
	if (r < 0)
		return r;
	len = 9 + n * 32 + MAC_LEN;

	/* A new file beside the old, made durable, then renamed over it: a crash leaves the old
	 * list or the new one. */
	keys_fd = openat(st->dirfd, "keys", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (keys_fd < 0)
		return err_set(-errno, "no keys directory: %s", strerror(errno));
	unlinkat(keys_fd, AUDITORS_TMP, 0);
	fd = openat(keys_fd, AUDITORS_TMP, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	if (fd < 0) {
		r = -errno;
		close(keys_fd);
		return err_set(r, "cannot create keys/%s: %s", AUDITORS_TMP, strerror(-r));
	}
	r = pwrite_all(fd, file, len, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && renameat(keys_fd, AUDITORS_TMP, keys_fd, AUDITORS_NAME) < 0)
		r = -errno;
	if (r == 0 && fsync(keys_fd) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(keys_fd, AUDITORS_TMP, 0);
		r = err_set(r, "cannot write keys/%s: %s", AUDITORS_NAME, strerror(-r));
	}
	close(keys_fd);
	return r;
}
