/* keyring: keys/ring, the one small file that holds every key an erasure destroys
 * (docs/FORMAT.md 3.7). See keyring.h.
 *
 * Entries live as crypto_key slots (guarded, locked memory) in a sorted array; the plaintext of
 * the file body exists only in sodium_malloc memory while it is sealed or opened, and is wiped.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "store/keyring.h"

#define RING_MAGIC "ENCLRING"
#define RING_VERSION 1u
#define RING_FK_AD "ENCLRFK1"
#define RING_WRAP_OFF KEYRING_HEADER_LEN                       /* 40 */
#define RING_NONCE_OFF (RING_WRAP_OFF + CRYPTO_WRAPPED_KEY_LEN) /* 112 */
#define RING_ENTRY_LEN 48
/* Fixed bytes of a file: header, wrapped file key, body nonce, count, tag. */
#define RING_FIXED (RING_NONCE_OFF + CRYPTO_SEAL_OVERHEAD + 4)  /* 152 */

struct ring_entry {
	uint8_t kind;
	uint32_t version;
	uint64_t dsid;
	crypto_key *key;   /* owned */
};

struct keyring {
	uint8_t store_id[16];
	uint64_t generation;                  /* of the file last read or written */
	uint8_t digest[KEYRING_DIGEST_LEN];   /* of that file */
	struct ring_entry *e;                 /* sorted by (kind, dsid, version); owned */
	size_t n, cap;
};

static int entry_cmp(uint8_t ka, uint64_t da, uint32_t va, const struct ring_entry *b)
{
	if (ka != b->kind)
		return ka < b->kind ? -1 : 1;
	if (da != b->dsid)
		return da < b->dsid ? -1 : 1;
	if (va != b->version)
		return va < b->version ? -1 : 1;
	return 0;
}

/* Index of the entry, or of where it would go; *found set. */
static size_t ring_find(const struct keyring *kr, uint8_t kind, uint64_t dsid, uint32_t ver,
			bool *found)
{
	size_t lo = 0, hi = kr->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = entry_cmp(kind, dsid, ver, &kr->e[mid]);

		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	*found = false;
	return lo;
}

static bool kind_valid(unsigned kind)
{
	return kind >= KEYRING_NAMES && kind <= KEYRING_POLICY;
}

/* Which (dataset, version) an entry of each kind may have. */
static bool entry_ids_valid(unsigned kind, uint64_t dsid, uint32_t ver)
{
	switch (kind) {
	case KEYRING_NAMES:
	case KEYRING_NAMES_NEXT:
		return dsid == 0 && ver == 0;
	case KEYRING_DATASET:
		return dsid != 0 && ver == 0;
	case KEYRING_VERSION:
		return dsid != 0 && ver != 0;
	case KEYRING_POLICY:
		return dsid == 0 && ver != 0;
	default:
		return false;
	}
}

static struct keyring *ring_alloc(const uint8_t store_id[static 16])
{
	struct keyring *kr = calloc(1, sizeof(*kr));

	if (kr)
		memcpy(kr->store_id, store_id, 16);
	return kr;
}

int keyring_put(struct keyring *kr, enum keyring_kind kind, uint64_t dsid, uint32_t version,
		crypto_key *key)
{
	bool found;
	size_t i;

	if (!kind_valid(kind) || !entry_ids_valid(kind, dsid, version) || !key) {
		crypto_key_free(key);
		return -EINVAL;
	}
	i = ring_find(kr, kind, dsid, version, &found);
	if (found) {
		crypto_key_free(kr->e[i].key);
		kr->e[i].key = key;
		return 0;
	}
	if (kr->n == KEYRING_ENTRIES_MAX) {
		crypto_key_free(key);
		return err_set(-E2BIG, "the key ring holds %u keys, the most it takes",
			       KEYRING_ENTRIES_MAX);
	}
	if (kr->n == kr->cap) {
		size_t cap = kr->cap ? kr->cap * 2 : 64;
		struct ring_entry *e = realloc(kr->e, cap * sizeof(*e));

		if (!e) {
			crypto_key_free(key);
			return -ENOMEM;
		}
		kr->e = e;
		kr->cap = cap;
	}
	memmove(&kr->e[i + 1], &kr->e[i], (kr->n - i) * sizeof(*kr->e));
	kr->e[i] = (struct ring_entry){ .kind = (uint8_t)kind, .version = version, .dsid = dsid,
					.key = key };
	kr->n++;
	return 0;
}

int keyring_new(const uint8_t store_id[static 16], struct keyring **ret_ring)
{
	struct keyring *kr = ring_alloc(store_id);
	crypto_key *k = NULL;
	int r;

	if (!kr)
		return -ENOMEM;
	r = crypto_key_generate(&k);
	if (r == 0)
		r = keyring_put(kr, KEYRING_NAMES, 0, 0, k);
	if (r < 0) {
		keyring_free(kr);
		return r;
	}
	*ret_ring = kr;
	return 0;
}

void keyring_free(struct keyring *kr)
{
	if (!kr)
		return;
	for (size_t i = 0; i < kr->n; i++)
		crypto_key_free(kr->e[i].key);
	free(kr->e);
	free(kr);
}

int keyring_get(const struct keyring *kr, enum keyring_kind kind, uint64_t dsid, uint32_t version,
		const crypto_key **ret_key)
{
	bool found;
	size_t i = ring_find(kr, kind, dsid, version, &found);

	if (!found)
		return -ENOENT;
	*ret_key = kr->e[i].key;
	return 0;
}

int keyring_remove(struct keyring *kr, enum keyring_kind kind, uint64_t dsid, uint32_t version)
{
	bool found;
	size_t i = ring_find(kr, kind, dsid, version, &found);

	if (!found)
		return 0;
	crypto_key_free(kr->e[i].key);
	memmove(&kr->e[i], &kr->e[i + 1], (kr->n - i - 1) * sizeof(*kr->e));
	kr->n--;
	return 1;
}

int keyring_foreach(const struct keyring *kr,
		    int (*fn)(void *ctx, enum keyring_kind kind, uint64_t dsid, uint32_t version,
			      const crypto_key *key),
		    void *ctx)
{
	for (size_t i = 0; i < kr->n; i++) {
		int r = fn(ctx, kr->e[i].kind, kr->e[i].dsid, kr->e[i].version, kr->e[i].key);

		if (r != 0)
			return r;
	}
	return 0;
}

uint64_t keyring_generation(const struct keyring *kr)
{
	return kr->generation;
}

void keyring_set_generation(struct keyring *kr, uint64_t generation)
{
	kr->generation = generation;
}

void keyring_digest(const struct keyring *kr, uint8_t ret[static KEYRING_DIGEST_LEN])
{
	memcpy(ret, kr->digest, KEYRING_DIGEST_LEN);
}

void keyring_key_id(const crypto_key *key, uint8_t ret[static KEYRING_KEY_ID_LEN])
{
	static const char label[] = "enclave key id v1";

	crypto_generichash(ret, KEYRING_KEY_ID_LEN, (const uint8_t *)label, sizeof(label) - 1,
			   crypto_key_bytes(key), CRYPTO_KEY_LEN);
}

int keyring_names_key(const crypto_key *kr_names, crypto_key **ret_kn)
{
	return crypto_key_derive(kr_names, "enclave ring names v3", NULL, 0, ret_kn);
}

int keyring_dataset_seal_key(const crypto_key *kd, crypto_key **ret_kdr)
{
	return crypto_key_derive(kd, "enclave dataset record v3", NULL, 0, ret_kdr);
}

/* Keyed with the rotating key over the erasable one: a removed node holds Kr and Kd but not Kp of
 * a later generation (a keyed hash under an unknown key); a copy read after an erasure holds Kp
 * but not the erased Kr or Kd (a 256-bit unknown input). */
int keyring_names_key_gen(const crypto_key *kp, const crypto_key *kr_names, crypto_key **ret_kn)
{
	if (!kp)
		return keyring_names_key(kr_names, ret_kn);
	return crypto_key_derive(kp, "enclave ring names v4", crypto_key_bytes(kr_names),
				 CRYPTO_KEY_LEN, ret_kn);
}

int keyring_dataset_seal_key_gen(const crypto_key *kp, const crypto_key *kd, crypto_key **ret_kdr)
{
	if (!kp)
		return keyring_dataset_seal_key(kd, ret_kdr);
	return crypto_key_derive(kp, "enclave dataset record v4", crypto_key_bytes(kd),
				 CRYPTO_KEY_LEN, ret_kdr);
}

int keyring_version_keys(const crypto_key *kv, crypto_key **ret_seal, crypto_key **ret_name)
{
	crypto_key *s = NULL, *n = NULL;
	int r = crypto_key_derive(kv, "enclave version seal v3", NULL, 0, &s);

	if (r == 0)
		r = crypto_key_derive(kv, "enclave version names v3", NULL, 0, &n);
	if (r < 0) {
		crypto_key_free(s);
		return r;
	}
	*ret_seal = s;
	*ret_name = n;
	return 0;
}

static void header_encode(uint8_t h[KEYRING_HEADER_LEN], uint64_t gen, const uint8_t sid[16])
{
	memcpy(h, RING_MAGIC, 8);
	put_le32(h + 8, RING_VERSION);
	put_le32(h + 12, 0);
	put_le64(h + 16, gen);
	memcpy(h + 24, sid, 16);
}

/* AD of the wrapped file key: "ENCLRFK1" || header. */
static void fk_ad(uint8_t ad[8 + KEYRING_HEADER_LEN], const uint8_t *header)
{
	memcpy(ad, RING_FK_AD, 8);
	memcpy(ad + 8, header, KEYRING_HEADER_LEN);
}

int keyring_commit(struct keyring *kr, int keys_dirfd, const crypto_key *master)
{
	return keyring_write_as(kr, keys_dirfd, master, KEYRING_FILE);
}

int keyring_write_as(struct keyring *kr, int keys_dirfd, const crypto_key *master,
		     const char *name)
{
	size_t body = 4 + kr->n * RING_ENTRY_LEN;
	size_t len = RING_NONCE_OFF + body + CRYPTO_SEAL_OVERHEAD;
	uint8_t ad[8 + KEYRING_HEADER_LEN];
	uint8_t *file = NULL, *pt = NULL;
	crypto_key *fk = NULL;
	uint64_t gen = kr->generation + 1;
	int fd = -1, r;

	file = malloc(len);
	pt = sodium_malloc(body);
	if (!file || !pt) {
		r = -ENOMEM;
		goto out;
	}
	header_encode(file, gen, kr->store_id);
	put_le32(pt, (uint32_t)kr->n);
	for (size_t i = 0; i < kr->n; i++) {
		uint8_t *p = pt + 4 + i * RING_ENTRY_LEN;

		p[0] = kr->e[i].kind;
		p[1] = p[2] = p[3] = 0;
		put_le32(p + 4, kr->e[i].version);
		put_le64(p + 8, kr->e[i].dsid);
		memcpy(p + 16, crypto_key_bytes(kr->e[i].key), CRYPTO_KEY_LEN);
	}
	/* A fresh file key for every file: the previous one is never written anywhere again. */
	r = crypto_key_generate(&fk);
	if (r < 0)
		goto out;
	fk_ad(ad, file);
	r = crypto_key_wrap(master, fk, ad, sizeof(ad), file + RING_WRAP_OFF);
	if (r == 0)
		r = crypto_seal(fk, file, KEYRING_HEADER_LEN, pt, body, file + RING_NONCE_OFF);
	if (r < 0)
		goto out;

	/* A new file beside the old, made durable, then renamed over it: a crash leaves the old
	 * ring or the new one. */
	if (unlinkat(keys_dirfd, KEYRING_TMP, 0) < 0 && errno != ENOENT) {
		r = err_set(-errno, "cannot remove keys/%s: %s", KEYRING_TMP, strerror(errno));
		goto out;
	}
	fd = openat(keys_dirfd, KEYRING_TMP, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	if (fd < 0) {
		r = err_set(-errno, "cannot create keys/%s: %s", KEYRING_TMP, strerror(errno));
		goto out;
	}
	r = pwrite_all(fd, file, len, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(keys_dirfd, KEYRING_TMP, keys_dirfd, name) < 0)
		r = -errno;
	if (r == 0)
		r = fsync_dirfd(keys_dirfd);
	if (r < 0) {
		unlinkat(keys_dirfd, KEYRING_TMP, 0);
		r = err_set(r, "cannot write keys/%s: %s", name, strerror(-r));
		goto out;
	}
	kr->generation = gen;
	crypto_generichash(kr->digest, sizeof(kr->digest), file, len, NULL, 0);
out:
	if (fd >= 0)
		close(fd);
	crypto_key_free(fk);
	if (pt)
		sodium_free(pt);   /* wipes */
	free(file);
	return r;
}

/* Open and check the body pt (n entries) into kr. */
static int body_decode(struct keyring *kr, const uint8_t *pt, size_t n)
{
	bool names = false;

	for (size_t i = 0; i < n; i++) {
		const uint8_t *p = pt + 4 + i * RING_ENTRY_LEN;
		uint8_t kind = p[0];
		uint32_t ver = get_le32(p + 4);
		uint64_t dsid = get_le64(p + 8);
		crypto_key *k = NULL;
		int r;

		if (!kind_valid(kind) || p[1] || p[2] || p[3] || !entry_ids_valid(kind, dsid, ver))
			return err_set(-EBADMSG, "key ring entry %zu is malformed", i);
		if (kr->n > 0 && entry_cmp(kind, dsid, ver, &kr->e[kr->n - 1]) <= 0)
			return err_set(-EBADMSG, "key ring entries are out of order at %zu", i);
		names |= kind == KEYRING_NAMES;
		r = crypto_key_from_bytes(p + 16, &k);
		if (r == 0)
			r = keyring_put(kr, kind, dsid, ver, k);
		if (r < 0)
			return r;
	}
	if (!names)
		return err_set(-EBADMSG, "the key ring has no name key");
	return 0;
}

int keyring_load(int keys_dirfd, const crypto_key *master, const uint8_t store_id[static 16],
		 struct keyring **ret_ring)
{
	uint8_t ad[8 + KEYRING_HEADER_LEN];
	uint8_t *file = NULL, *pt = NULL;
	struct keyring *kr = NULL;
	crypto_key *fk = NULL;
	struct stat sb;
	size_t len, body, n;
	int fd, r;

	fd = openat(keys_dirfd, KEYRING_FILE, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return err_set(-ENOENT, "no key ring (keys/%s)", KEYRING_FILE);
		if (errno == ELOOP)
			return err_set(-EBADMSG, "keys/%s is a symbolic link", KEYRING_FILE);
		return err_set(-errno, "cannot open keys/%s: %s", KEYRING_FILE, strerror(errno));
	}
	if (fstat(fd, &sb) < 0) {
		r = -errno;
		close(fd);
		return err_set(r, "cannot stat keys/%s: %s", KEYRING_FILE, strerror(-r));
	}
	if (!S_ISREG(sb.st_mode) || sb.st_size < RING_FIXED ||
	    (uint64_t)sb.st_size > RING_FIXED + (uint64_t)KEYRING_ENTRIES_MAX * RING_ENTRY_LEN ||
	    ((uint64_t)sb.st_size - RING_FIXED) % RING_ENTRY_LEN != 0) {
		close(fd);
		return err_set(-EBADMSG, "keys/%s is not a key ring (%lld bytes)", KEYRING_FILE,
			       (long long)sb.st_size);
	}
	len = (size_t)sb.st_size;
	n = (len - RING_FIXED) / RING_ENTRY_LEN;
	body = 4 + n * RING_ENTRY_LEN;
	file = malloc(len);
	pt = sodium_malloc(body);
	if (!file || !pt) {
		r = -ENOMEM;
		goto out;
	}
	if (pread_full(fd, file, len, 0) != (ssize_t)len) {
		r = err_set(-EBADMSG, "keys/%s changed while it was read", KEYRING_FILE);
		goto out;
	}
	if (memcmp(file, RING_MAGIC, 8) != 0 || get_le32(file + 8) != RING_VERSION ||
	    get_le32(file + 12) != 0) {
		r = err_set(-EBADMSG, "keys/%s has an unknown magic or version", KEYRING_FILE);
		goto out;
	}
	if (sodium_memcmp(file + 24, store_id, 16) != 0) {
		r = err_set(-EBADMSG, "keys/%s belongs to another store", KEYRING_FILE);
		goto out;
	}
	fk_ad(ad, file);
	r = crypto_key_unwrap(master, file + RING_WRAP_OFF, ad, sizeof(ad), &fk);
	if (r == 0)
		r = crypto_unseal(fk, file, KEYRING_HEADER_LEN, file + RING_NONCE_OFF,
				  len - RING_NONCE_OFF, pt);
	if (r < 0) {
		r = err_set(-EBADMSG, "keys/%s does not open under this store's master key: it "
			    "was altered or forged", KEYRING_FILE);
		goto out;
	}
	if (get_le32(pt) != n) {
		r = err_set(-EBADMSG, "keys/%s counts %u entries in a file of %zu", KEYRING_FILE,
			    get_le32(pt), n);
		goto out;
	}
	if (get_le64(file + 16) == 0) {
		r = err_set(-EBADMSG, "keys/%s has generation 0", KEYRING_FILE);
		goto out;
	}
	kr = ring_alloc(store_id);
	if (!kr) {
		r = -ENOMEM;
		goto out;
	}
	r = body_decode(kr, pt, n);
	if (r < 0)
		goto out;
	kr->generation = get_le64(file + 16);
	crypto_generichash(kr->digest, sizeof(kr->digest), file, len, NULL, 0);
	*ret_ring = kr;
	kr = NULL;
out:
	close(fd);
	keyring_free(kr);
	crypto_key_free(fk);
	if (pt)
		sodium_free(pt);
	free(file);
	return r;
}
