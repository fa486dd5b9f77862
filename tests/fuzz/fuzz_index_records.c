/* fuzz_index_records: the index record decoders, the seal layer and name checks of store/index.c.
 *
 * The index lives on the same untrusted disk as the packs, so every record is outside input, and
 * names come from clients. Input layout: byte 0 picks the target, the rest is its input:
 *   0  dataset record: byte 1 is the key length L, then L key bytes (a format 1 record's name;
 *      L = 0: none, as for format 2), then the record
 *   1  version record      2  inode record      3  directory entry (format 2)
 *   4  store_name_valid()  5  store_dataset_name_valid()
 *   6  directory entry (format 1)
 *   7  sealed value: byte 1 the column family, byte 2 the key length L, L key bytes, byte 3+L
 *      the clear prefix length (0 or 1), then the value
 *
 * Besides "no crash, leak or UB" each target checks its contract:
 *  - a decoder that fails returns -EBADMSG and leaves its outputs untouched (house rule 4);
 *  - a record version 2 a decoder accepts re-encodes, with the matching encoder, to exactly the
 *    bytes it came from (one encoding: a length the encoder would not produce, or a byte the
 *    decoder ignored, shows up here), and decodes again to an identical struct; a record
 *    version 1 (format 1, met only by the upgrade) re-encodes as version 2 and decodes again to
 *    the same struct;
 *  - a sealed value made by nobody with the key does not open (-EBADMSG, output untouched), and
 *    the same bytes sealed under the key open again to exactly themselves;
 *  - the name checks agree with a model written from their documentation.
 */
#include <string.h>

#include "store/store_internal.h"
#include "fuzz.h"

/* Outputs are filled with this before a decode, to see whether a failed decode wrote them. */
#define POISON 0xa5
/* The inode number handed to inode_decode; it is not part of the record. */
#define FUZZ_INUM 42u
/* Cap of the re-encode buffer, as import.c caps its scratch buffer. */
#define REC_BUF_MAX 4096u

static bool all_poison(const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i] != POISON)
			return false;
	return true;
}

/* Field by field: struct padding is not part of the contract. */
static bool dataset_rec_eq(const struct dataset_rec *a, const struct dataset_rec *b)
{
	return strcmp(a->info.name, b->info.name) == 0 && a->info.id == b->info.id &&
	       a->info.created_ns == b->info.created_ns &&
	       a->info.latest_version == b->info.latest_version &&
	       memcmp(a->wrapped_key, b->wrapped_key, sizeof(a->wrapped_key)) == 0;
}

static bool version_rec_eq(const struct version_rec *a, const struct version_rec *b)
{
	return a->state == b->state && a->info.dataset_id == b->info.dataset_id &&
	       a->info.version == b->info.version && a->info.created_ns == b->info.created_ns &&
	       a->info.committed_ns == b->info.committed_ns && a->info.files == b->info.files &&
	       a->info.dirs == b->info.dirs && a->info.bytes == b->info.bytes &&
	       memcmp(a->info.manifest, b->info.manifest, sizeof(a->info.manifest)) == 0;
}

static bool inode_eq(const struct store_inode *a, const struct store_inode *b)
{
	return a->ino == b->ino && a->type == b->type && a->mode == b->mode &&
	       a->mtime_ns == b->mtime_ns && a->size == b->size && a->nlink == b->nlink &&
	       memcmp(a->ext.object_id, b->ext.object_id, sizeof(a->ext.object_id)) == 0 &&
	       a->ext.pack_id == b->ext.pack_id && a->ext.offset == b->ext.offset &&
	       a->ext.chunk_size == b->ext.chunk_size && a->ext.alg == b->ext.alg &&
	       memcmp(a->ext.wrapped_key, b->ext.wrapped_key, sizeof(a->ext.wrapped_key)) == 0 &&
	       a->ext.grouped == b->ext.grouped &&
	       (!a->ext.grouped ||
		(a->ext.group_size == b->ext.group_size && a->ext.member_off == b->ext.member_off &&
		 a->ext.member_idx == b->ext.member_idx &&
		 a->ext.member_count == b->ext.member_count));
}

/* The encoding must be the input itself: same length, same bytes. */
static void check_same_bytes(const struct buf *b, const uint8_t *rec, size_t n)
{
	FUZZ_CHECK(b->len == n);
	FUZZ_CHECK(n == 0 || memcmp(b->data, rec, n) == 0);
}

/* The key is copied and NUL-terminated the way store.c does before it calls the decoder. */
static void fuzz_dataset(const uint8_t *data, size_t size)
{
	char name[256];
	struct dataset_rec r, again;
	struct buf b;
	size_t klen;
	int e;

	if (size < 1)
		return;
	klen = MIN((size_t)data[0], size - 1);
	memcpy(name, data + 1, klen);
	name[klen] = '\0';
	data += 1 + klen;
	size -= 1 + klen;

	memset(&r, POISON, sizeof(r));
	e = dataset_rec_decode(klen ? name : NULL, data, size, &r);
	if (e < 0) {
		FUZZ_CHECK(e == -EBADMSG);
		FUZZ_CHECK(all_poison(&r, sizeof(r)));
		return;
	}
	FUZZ_CHECK(e == 0);
	FUZZ_CHECK(store_dataset_name_valid(r.info.name));
	FUZZ_CHECK(data[0] == 2 || strcmp(r.info.name, name) == 0);
	FUZZ_CHECK(r.info.id != 0 && r.info.latest_version != 0);

	buf_init(&b, REC_BUF_MAX);
	FUZZ_CHECK(dataset_rec_encode(&r, &b) == 0);
	if (data[0] == 2)
		check_same_bytes(&b, data, size);
	FUZZ_CHECK(dataset_rec_decode(NULL, b.data, b.len, &again) == 0);
	FUZZ_CHECK(dataset_rec_eq(&r, &again));
	buf_free(&b);
}

static void fuzz_version(const uint8_t *data, size_t size)
{
	struct version_rec r, again;
	struct buf b;
	int e;

	memset(&r, POISON, sizeof(r));
	e = version_rec_decode(data, size, &r);
	if (e < 0) {
		FUZZ_CHECK(e == -EBADMSG);
		FUZZ_CHECK(all_poison(&r, sizeof(r)));
		return;
	}
	FUZZ_CHECK(e == 0);
	FUZZ_CHECK(r.state == VERSION_PENDING || r.state == VERSION_COMMITTED ||
		   r.state == VERSION_ERASED);

	buf_init(&b, REC_BUF_MAX);
	FUZZ_CHECK(version_rec_encode(&r, &b) == 0);
	if (data[0] == 2)
		check_same_bytes(&b, data, size);
	FUZZ_CHECK(version_rec_decode(b.data, b.len, &again) == 0);
	FUZZ_CHECK(version_rec_eq(&r, &again));
	buf_free(&b);
}

static void fuzz_inode(const uint8_t *data, size_t size)
{
	struct store_inode ino, again;
	uint8_t digest[DIR_DIGEST_LEN], digest2[DIR_DIGEST_LEN];
	struct buf b;
	int e;

	memset(&ino, POISON, sizeof(ino));
	memset(digest, POISON, sizeof(digest));
	e = inode_decode(FUZZ_INUM, data, size, &ino, digest);
	if (e < 0) {
		FUZZ_CHECK(e == -EBADMSG);
		FUZZ_CHECK(all_poison(&ino, sizeof(ino)) && all_poison(digest, sizeof(digest)));
		return;
	}
	FUZZ_CHECK(e == 0);
	FUZZ_CHECK(ino.ino == FUZZ_INUM);
	FUZZ_CHECK(ino.type == STORE_INODE_FILE || ino.type == STORE_INODE_DIR);
	FUZZ_CHECK((ino.mode & ~07777u) == 0);
	/* What the read path relies on before it touches a pack (object.c). */
	if (ino.type == STORE_INODE_FILE) {
		FUZZ_CHECK(ino.ext.pack_id != 0);
		/* Aligned, unless the object (a tiny file's: its group) is dense (FORMAT.md 4.7). */
		FUZZ_CHECK(ino.ext.offset >= PACK_HEADER_LEN &&
			   (ino.ext.offset % STORE_ALIGN == 0 ||
			    object_dense(inode_object_size(&ino), ino.ext.chunk_size)));
		/* A member lies inside its group, one chunk of at most STORE_GROUP_MAX (4.10). */
		if (ino.ext.grouped)
			FUZZ_CHECK(ino.ext.group_size <= STORE_GROUP_MAX &&
				   ino.ext.group_size <= ino.ext.chunk_size &&
				   ino.size <= STORE_TINY_MAX &&
				   ino.ext.member_idx < ino.ext.member_count &&
				   ino.ext.member_count <= STORE_GROUP_MEMBERS_MAX &&
				   (uint64_t)ino.ext.member_off + ino.size <= ino.ext.group_size);
		FUZZ_CHECK(IS_POW2(ino.ext.chunk_size) && ino.ext.chunk_size >= CRYPTO_CHUNK_MIN &&
			   ino.ext.chunk_size <= CRYPTO_CHUNK_MAX);
		FUZZ_CHECK(crypto_aead_valid(ino.ext.alg));
	}

	buf_init(&b, REC_BUF_MAX);
	FUZZ_CHECK(inode_encode(&ino, digest, &b) == 0);
	if (data[0] == 2)
		check_same_bytes(&b, data, size);
	FUZZ_CHECK(inode_decode(FUZZ_INUM, b.data, b.len, &again, digest2) == 0);
	FUZZ_CHECK(inode_eq(&ino, &again));
	FUZZ_CHECK(memcmp(digest, digest2, sizeof(digest)) == 0);
	buf_free(&b);
}

static void fuzz_dirent(const uint8_t *data, size_t size)
{
	struct dirent_rec d, again;
	struct buf b;
	int e;

	memset(&d, POISON, sizeof(d));
	e = dirent_rec_decode(data, size, &d);
	if (e < 0) {
		FUZZ_CHECK(e == -EBADMSG);
		FUZZ_CHECK(all_poison(&d, sizeof(d)));
		return;
	}
	FUZZ_CHECK(e == 0);
	FUZZ_CHECK(d.ino != 0);
	FUZZ_CHECK(d.type == STORE_INODE_FILE || d.type == STORE_INODE_DIR);
	FUZZ_CHECK(store_name_valid(d.name, strlen(d.name)));

	buf_init(&b, REC_BUF_MAX);
	FUZZ_CHECK(dirent_rec_encode(&d, &b) == 0);
	check_same_bytes(&b, data, size);
	FUZZ_CHECK(dirent_rec_decode(b.data, b.len, &again) == 0);
	FUZZ_CHECK(again.ino == d.ino && again.type == d.type && strcmp(again.name, d.name) == 0);
	buf_free(&b);
}

static void fuzz_dirent_v1(const uint8_t *data, size_t size)
{
	uint64_t ino;
	uint32_t type;
	int e;

	memset(&ino, POISON, sizeof(ino));
	memset(&type, POISON, sizeof(type));
	e = dirent_decode_v1(data, size, &ino, &type);
	if (e < 0) {
		FUZZ_CHECK(e == -EBADMSG);
		FUZZ_CHECK(all_poison(&ino, sizeof(ino)) && all_poison(&type, sizeof(type)));
		return;
	}
	FUZZ_CHECK(e == 0 && size == 9);
	FUZZ_CHECK(ino != 0 && ino == get_le64(data));
	FUZZ_CHECK(type == STORE_INODE_FILE || type == STORE_INODE_DIR);
}

/* A fixed key: the fuzzer cannot know it, as an attacker cannot. */
static crypto_key *fuzz_seal_key(void)
{
	static crypto_key *k;
	uint8_t bytes[CRYPTO_KEY_LEN];

	if (!k) {
		memset(bytes, 0x5c, sizeof(bytes));
		FUZZ_CHECK(crypto_init() == 0);
		FUZZ_CHECK(crypto_key_from_bytes(bytes, &k) == 0);
	}
	return k;
}

static void fuzz_sealed(const uint8_t *data, size_t size)
{
	uint8_t out[1024], again[1024];
	enum store_cf cf;
	size_t klen, clen, len = (size_t)-1, len2 = 0;
	const uint8_t *key;
	struct buf b;
	int e;

	if (size < 3)
		return;
	cf = (enum store_cf)(data[0] % CF_COUNT);
	klen = MIN((size_t)data[1], size - 2);
	key = data + 2;
	data += 2 + klen;
	size -= 2 + klen;
	if (size < 1)
		return;
	clen = data[0] & 1;
	data++;
	size--;
	memset(out, POISON, sizeof(out));
	e = index_unseal(fuzz_seal_key(), cf, key, klen, clen, data, size, out, sizeof(out), &len);
	FUZZ_CHECK(e == -EBADMSG);
	FUZZ_CHECK(len == (size_t)-1);
	/* Untouched, or (a tag that failed) wiped to zero: never unauthenticated plaintext. */
	for (size_t i = 0; i < sizeof(out); i++)
		FUZZ_CHECK(out[i] == POISON || out[i] == 0);
	/* The bytes themselves, sealed under the key at this place, open to themselves. */
	if (size < clen || size - clen > sizeof(again))
		return;
	buf_init(&b, 4096);
	FUZZ_CHECK(index_seal(fuzz_seal_key(), cf, key, klen, data, clen, data + clen, size - clen,
			      &b) == 0);
	FUZZ_CHECK(index_unseal(fuzz_seal_key(), cf, key, klen, clen, b.data, b.len, again,
				sizeof(again), &len2) == 0);
	FUZZ_CHECK(len2 == size - clen && memcmp(again, data + clen, len2) == 0);
	buf_free(&b);
}

/* store_name_valid, from its comment: 1..STORE_NAME_MAX bytes, no '/' (and no NUL: the name
 * becomes a C string), not "." or "..". */
static bool model_name_valid(const uint8_t *s, size_t n)
{
	if (n == 0 || n > STORE_NAME_MAX)
		return false;
	if (memchr(s, '/', n) || memchr(s, '\0', n))
		return false;
	return !(n == 1 && s[0] == '.') && !(n == 2 && s[0] == '.' && s[1] == '.');
}

/* store_dataset_name_valid, from store.h: 1..STORE_DATASET_NAME_MAX of [A-Za-z0-9._-], not
 * starting with '.' or '-'. s is a C string. */
static bool model_dataset_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > STORE_DATASET_NAME_MAX || s[0] == '.' || s[0] == '-')
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* data is libFuzzer's own exact-size allocation, so ASan sees any read past the name. */
static void fuzz_name(const uint8_t *data, size_t size)
{
	FUZZ_CHECK(store_name_valid((const char *)data, size) == model_name_valid(data, size));
}

/* A NUL-terminated copy of exactly size + 1 bytes, so ASan sees any read past the terminator. */
static void fuzz_dataset_name(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	FUZZ_CHECK(s != NULL);
	memcpy(s, data, size);
	s[size] = '\0';
	FUZZ_CHECK(store_dataset_name_valid(s) == model_dataset_name_valid(s));
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % FUZZ_T_COUNT) {
	case FUZZ_T_DATASET:
		fuzz_dataset(data + 1, size - 1);
		break;
	case FUZZ_T_VERSION:
		fuzz_version(data + 1, size - 1);
		break;
	case FUZZ_T_INODE:
		fuzz_inode(data + 1, size - 1);
		break;
	case FUZZ_T_DIRENT:
		fuzz_dirent(data + 1, size - 1);
		break;
	case FUZZ_T_NAME:
		fuzz_name(data + 1, size - 1);
		break;
	case FUZZ_T_DATASET_NAME:
		fuzz_dataset_name(data + 1, size - 1);
		break;
	case FUZZ_T_DIRENT_V1:
		fuzz_dirent_v1(data + 1, size - 1);
		break;
	case FUZZ_T_SEALED:
		fuzz_sealed(data + 1, size - 1);
		break;
	}
	return 0;
}
