/* index: the RocksDB index of a store, its keys and its record encodings (docs/FORMAT.md "Index").
 *
 * Dataset, version and inode records carry a one-byte record version first, so they can grow;
 * directory entries and meta values are fixed-size and versioned by the store format. Decoders check
 * every field's range: the index lives on the same untrusted disk as the packs, and a damaged
 * record must produce a clear error, never a wild read.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define REC_V1 1
#define REC_V3 3   /* format 3 dataset records: no wrapped key */

static const char *const cf_names[CF_COUNT] = {
	[CF_DEFAULT] = "default",
	[CF_META] = "meta",
	[CF_DATASETS] = "datasets",
	[CF_VERSIONS] = "versions",
	[CF_INODES] = "inodes",
	[CF_DIRENTS] = "dirents",
	[CF_POLICY] = "policy",
};

/* The index's memory, bounded whatever the datasets hold (issue 6: the daemon under 256 MiB while
 * serving 1,000,000 files). RocksDB's defaults give each column family a 64 MiB memtable, flushed
 * only when full, and its own 8 MiB block cache (32 MiB in later RocksDB releases): after an
 * import of 10^6 files the daemon held 131 MiB of anonymous memory, and 145 MiB while serving
 * them, where these settings bring it to 52-55 and 76-84 (scripts/bench-rss.sh). Here a column
 * family's memtable is flushed at INDEX_MEMTABLE_BYTES, at most two exist per family (a write
 * waits while both are full), the largest is flushed whenever all families together pass
 * INDEX_MEMTABLES_BYTES, and one LRU cache of INDEX_CACHE_BYTES serves every family's blocks.
 * Imports write the index in batches of about 1 MiB (IMPORT_BATCH_BYTES, store/import.c), so a
 * 16 MiB memtable still holds several of them between flushes. */
#define INDEX_MEMTABLE_BYTES (16u << 20)
#define INDEX_MEMTABLES_BYTES (32u << 20)
#define INDEX_CACHE_BYTES (16u << 20)

/* Report a RocksDB error string as -EIO with detail, and free it. */
static int rocks_err(char *err, const char *what)
{
	int r = err_set(-EIO, "index: %s: %s", what, err ? err : "unknown error");

	free(err);
	return r;
}

int index_open(struct store_index *ix, const char *path, bool create)
{
	return index_open_secondary(ix, path, create, NULL);
}

/* The oldest WAL in the index directory at path into *ret (UINT64_MAX: none). The primary deletes
 * its WALs oldest first, once everything in them is flushed. */
static int wal_oldest(const char *path, uint64_t *ret)
{
	DIR *d = opendir(path);
	struct dirent *e;
	uint64_t min = UINT64_MAX;

	if (!d)
		return err_set(-errno, "index: cannot list %s: %s", path, strerror(errno));
	while ((e = readdir(d))) {
		const char *dot = strchr(e->d_name, '.');
		unsigned long long n;
		char *end = NULL;

		if (!dot || strcmp(dot, ".log") != 0 || dot == e->d_name ||
		    e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		errno = 0;
		n = strtoull(e->d_name, &end, 10);
		if (errno || end != dot)
			continue;
		if (n < min)
			min = n;
	}
	closedir(d);
	*ret = min;
	return 0;
}

/* The database at path (a secondary when secondary is not NULL) with ix's options, into *ret_db
 * and ret_cf. */
static int db_open(struct store_index *ix, const char *path, const char *secondary,
		   rocksdb_t **ret_db, rocksdb_column_family_handle_t *ret_cf[CF_COUNT])
{
	const char *names[CF_COUNT];
	const rocksdb_options_t *cfo[CF_COUNT];
	rocksdb_t *db;
	char *err = NULL;

	for (int i = 0; i < CF_COUNT; i++) {
		names[i] = cf_names[i];
		cfo[i] = ix->cf_opts[i];
	}
	if (secondary)
		db = rocksdb_open_as_secondary_column_families(ix->opts, path, secondary, CF_COUNT,
							       names, cfo, ret_cf, &err);
	else
		db = rocksdb_open_column_families(ix->opts, path, CF_COUNT, names, cfo, ret_cf,
						  &err);
	if (err) {
		if (db)
			rocksdb_close(db);
		return rocks_err(err, "cannot open");
	}
	*ret_db = db;
	return 0;
}

int index_open_secondary(struct store_index *ix, const char *path, bool create,
			 const char *secondary)
{
	rocksdb_block_based_table_options_t *bbto;
	rocksdb_cache_t *cache;
	int r;

	*ix = (struct store_index){ .wal_floor = UINT64_MAX };
	{
		pthread_rwlockattr_t a;

		/* Reader-preferring: a reader that holds it takes it again without waiting behind
		 * the swap, and one that waits for another lock meanwhile never blocks a thread
		 * that holds that lock and reads. */
		pthread_rwlockattr_init(&a);
		pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_READER_NP);
		pthread_rwlock_init(&ix->swap_lock, &a);
		pthread_rwlockattr_destroy(&a);
		ix->swap_lock_init = true;
	}
	/* The factory made from bbto for each family holds its own reference to the options and to
	 * the cache, so both wrappers are released below once every family has its factory. */
	bbto = rocksdb_block_based_options_create();
	cache = rocksdb_cache_create_lru(INDEX_CACHE_BYTES);
	rocksdb_block_based_options_set_block_cache(bbto, cache);
	ix->opts = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(ix->opts, create);
	rocksdb_options_set_error_if_exists(ix->opts, create);
	/* Always: a store made before a column family existed gets it, empty, at its next open. */
	rocksdb_options_set_create_missing_column_families(ix->opts, 1);
	rocksdb_options_set_paranoid_checks(ix->opts, 1);
	/* Two cores here; background work should not starve the read path. */
	rocksdb_options_increase_parallelism(ix->opts, 2);
	rocksdb_options_set_db_write_buffer_size(ix->opts, INDEX_MEMTABLES_BYTES);
	/* A secondary keeps every table file open that it ever read: the primary's compactions
	 * delete files, and an open descriptor is what keeps them readable until the next catch-up
	 * (RocksDB's advice for secondaries). */
	if (secondary)
		rocksdb_options_set_max_open_files(ix->opts, -1);
	for (int i = 0; i < CF_COUNT; i++) {
		ix->cf_opts[i] = rocksdb_options_create();
		rocksdb_options_set_write_buffer_size(ix->cf_opts[i], INDEX_MEMTABLE_BYTES);
		rocksdb_options_set_max_write_buffer_number(ix->cf_opts[i], 2);
		rocksdb_options_set_block_based_table_factory(ix->cf_opts[i], bbto);
	}
	rocksdb_block_based_options_destroy(bbto);
	rocksdb_cache_destroy(cache);
	if (secondary) {
		ix->path = strdup(path);
		ix->secondary = strdup(secondary);
		if (!ix->path || !ix->secondary) {
			index_close(ix);
			return -ENOMEM;
		}
		/* Before the open: whatever it replays is in this WAL or a later one. */
		r = wal_oldest(path, &ix->wal_floor);
		if (r < 0) {
			index_close(ix);
			return r;
		}
	}
	r = db_open(ix, path, secondary, &ix->db, ix->cf);
	if (r < 0) {
		index_close(ix);
		return r;
	}
	ix->ro = rocksdb_readoptions_create();
	rocksdb_readoptions_set_verify_checksums(ix->ro, 1);
	ix->wo_sync = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(ix->wo_sync, 1);
	ix->wo_async = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(ix->wo_async, 0);
	return 0;
}

/* Close db and its family handles. */
static void db_close(rocksdb_t *db, rocksdb_column_family_handle_t *cf[CF_COUNT])
{
	for (int i = 0; i < CF_COUNT; i++)
		if (cf[i])
			rocksdb_column_family_handle_destroy(cf[i]);
	if (db)
		rocksdb_close(db);
}

void index_close(struct store_index *ix)
{
	if (!ix)
		return;
	db_close(ix->db, ix->cf);
	for (int i = 0; i < CF_COUNT; i++)
		if (ix->cf_opts[i])
			rocksdb_options_destroy(ix->cf_opts[i]);
	if (ix->opts)
		rocksdb_options_destroy(ix->opts);
	if (ix->ro)
		rocksdb_readoptions_destroy(ix->ro);
	if (ix->wo_sync)
		rocksdb_writeoptions_destroy(ix->wo_sync);
	if (ix->wo_async)
		rocksdb_writeoptions_destroy(ix->wo_async);
	if (ix->swap_lock_init)
		pthread_rwlock_destroy(&ix->swap_lock);
	free(ix->path);
	free(ix->secondary);
	*ix = (struct store_index){ 0 };
}

/* Has the primary deleted the oldest WAL whose records ix's memtables may hold? */
static int floor_gone(struct store_index *ix, bool *ret)
{
	uint64_t oldest;
	int r = wal_oldest(ix->path, &oldest);

	if (r < 0)
		return r;
	*ret = ix->wal_floor != UINT64_MAX && oldest > ix->wal_floor;
	return 0;
}

int index_refresh(struct store_index *ix)
{
	rocksdb_column_family_handle_t *cf[CF_COUNT] = { 0 }, *old_cf[CF_COUNT];
	rocksdb_t *db = NULL, *old_db;
	uint64_t floor;
	bool gone = false;
	int r;

	if (!ix->secondary)
		return 0;
	r = floor_gone(ix, &gone);
	if (r < 0 || !gone)
		return r;
	/* The new instance replays the live WALs: the oldest before its open is its floor. It opens
	 * beside the old one, which serves until the swap (and stays if this fails). */
	r = wal_oldest(ix->path, &floor);
	if (r == 0)
		r = db_open(ix, ix->path, ix->secondary, &db, cf);
	if (r < 0)
		return r;
	pthread_rwlock_wrlock(&ix->swap_lock);
	old_db = ix->db;
	memcpy(old_cf, ix->cf, sizeof(old_cf));
	ix->db = db;
	memcpy(ix->cf, cf, sizeof(cf));
	ix->wal_floor = floor;
	ix->reopens++;
	pthread_rwlock_unlock(&ix->swap_lock);
	db_close(old_db, old_cf);
	return 0;
}

int index_catch_up(struct store_index *ix, uint64_t *ret_seq)
{
	char *err = NULL;
	uint64_t oldest;
	bool gone = false;
	int r;

	if (ix->secondary && ix->wal_floor == UINT64_MAX) {
		/* No WAL at the open: whatever this catch-up replays is in this one or later. */
		r = wal_oldest(ix->path, &oldest);
		if (r < 0)
			return r;
		ix->wal_floor = oldest;
	}
	pthread_rwlock_rdlock(&ix->swap_lock);
	rocksdb_try_catch_up_with_primary(ix->db, &err);
	if (!err)
		*ret_seq = rocksdb_get_latest_sequence_number(ix->db);
	pthread_rwlock_unlock(&ix->swap_lock);
	if (err)
		return rocks_err(err, "catch-up with the primary failed");
	/* A WAL deleted before this catch-up read all of it: what it deleted may be missed, and
	 * what it put is in a memtable that shadows the files (RocksDB issues 14444, 15051). */
	if (ix->secondary) {
		r = floor_gone(ix, &gone);
		if (r < 0)
			return r;
		if (gone)
			return -ESTALE;
	}
	return 0;
}

uint64_t index_sequence(struct store_index *ix)
{
	uint64_t seq;

	pthread_rwlock_rdlock(&ix->swap_lock);
	seq = rocksdb_get_latest_sequence_number(ix->db);
	pthread_rwlock_unlock(&ix->swap_lock);
	return seq;
}

int index_get(struct store_index *ix, enum store_cf cf, const void *key, size_t klen,
	      char **ret_val, size_t *ret_len)
{
	char *err = NULL;
	size_t n = 0;
	char *v;

	atomic_fetch_add_explicit(&ix->gets, 1, memory_order_relaxed);
	pthread_rwlock_rdlock(&ix->swap_lock);
	v = rocksdb_get_cf(ix->db, ix->ro, ix->cf[cf], key, klen, &n, &err);
	pthread_rwlock_unlock(&ix->swap_lock);
	if (err)
		return rocks_err(err, "read failed");
	if (!v)
		return -ENOENT;
	*ret_val = v;
	*ret_len = n;
	return 0;
}

int index_write(struct store_index *ix, rocksdb_writebatch_t *wb, bool sync)
{
	char *err = NULL;

	rocksdb_write(ix->db, sync ? ix->wo_sync : ix->wo_async, wb, &err);
	if (err)
		return rocks_err(err, "write failed");
	return 0;
}

rocksdb_iterator_t *index_iter(struct store_index *ix, enum store_cf cf)
{
	pthread_rwlock_rdlock(&ix->swap_lock);
	return rocksdb_create_iterator_cf(ix->db, ix->ro, ix->cf[cf]);
}

int index_iter_close(struct store_index *ix, rocksdb_iterator_t *it, int r, const char *what)
{
	char *err = NULL;

	if (r == 0) {
		rocksdb_iter_get_error(it, &err);
		if (err)
			r = rocks_err(err, what);
	}
	rocksdb_iter_destroy(it);
	pthread_rwlock_unlock(&ix->swap_lock);
	return r;
}

void vkey(uint8_t out[VKEY_LEN], uint64_t dsid, uint32_t ver)
{
	put_be64(out, dsid);
	put_be32(out + 8, ver);
}

void ikey(uint8_t out[IKEY_LEN], uint64_t dsid, uint32_t ver, uint64_t ino)
{
	vkey(out, dsid, ver);
	put_be64(out + VKEY_LEN, ino);
}

size_t dkey_v1(uint8_t *out, uint64_t dsid, uint32_t ver, uint64_t parent, const char *name)
{
	size_t n = strlen(name);

	ikey(out, dsid, ver, parent);
	memcpy(out + DKEY_PREFIX_LEN, name, n);
	return DKEY_PREFIX_LEN + n;
}

/* What the name hash of a directory entry key covers: the version, the parent and the name. */
static size_t dkey_input(uint8_t in[static 12 + STORE_NAME_MAX], uint32_t ver, uint64_t parent,
			 const char *name, size_t nlen)
{
	nlen = MIN(nlen, (size_t)STORE_NAME_MAX);
	put_be32(in, ver);
	put_be64(in + 4, parent);
	memcpy(in + 12, name, nlen);
	return 12 + nlen;
}

void dkey(const crypto_key *name_key, uint8_t out[DKEY_LEN], uint64_t dsid, uint32_t ver,
	  uint64_t parent, const char *name, size_t nlen)
{
	uint8_t in[12 + STORE_NAME_MAX];

	ikey(out, dsid, ver, parent);
	crypto_name_hash(name_key, in, dkey_input(in, ver, parent, name, nlen),
			 out + DKEY_PREFIX_LEN);
}

void dkey_mk(const crypto_mac_key *name_mk, uint8_t out[DKEY_LEN], uint64_t dsid, uint32_t ver,
	     uint64_t parent, const char *name, size_t nlen)
{
	uint8_t in[12 + STORE_NAME_MAX];

	ikey(out, dsid, ver, parent);
	crypto_mac(name_mk, in, dkey_input(in, ver, parent, name, nlen), out + DKEY_PREFIX_LEN);
}

void dskey_hash(const crypto_key *name_key, const char *name, uint8_t out[DSKEY_LEN])
{
	crypto_name_hash(name_key, name, strnlen(name, STORE_DATASET_NAME_MAX), out);
}

void packkey(uint8_t out[PACKKEY_LEN], uint64_t pack_id)
{
	memcpy(out, "pack/", 5);
	put_be64(out + 5, pack_id);
}

void movekey(uint8_t out[MOVEKEY_LEN], const uint8_t object_id[CRYPTO_OBJECT_ID_LEN])
{
	memcpy(out, "move/", 5);
	memcpy(out + 5, object_id, CRYPTO_OBJECT_ID_LEN);
}

bool store_name_valid(const char *name, size_t len)
{
	if (len == 0 || len > STORE_NAME_MAX)
		return false;
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return false;
	for (size_t i = 0; i < len; i++)
		if (name[i] == '/' || name[i] == '\0')
			return false;
	return true;
}

bool store_dataset_name_valid(const char *name)
{
	size_t n = name ? strnlen(name, STORE_DATASET_NAME_MAX + 1) : 0;

	if (n == 0 || n > STORE_DATASET_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* ---- Records ------------------------------------------------------------------------------- */

/* Plaintext records. Format 2 writes record version 2 everywhere (dirents included); the decoders
 * also read version 1 (format 1), which only the upgrade meets. */
#define REC_V2 2

int dataset_rec_encode(const struct dataset_rec *r, struct buf *b)
{
	size_t n = strnlen(r->info.name, STORE_DATASET_NAME_MAX);
	int e = 0;

	e = e ?: buf_u8(b, REC_V2);
	e = e ?: buf_le64(b, r->info.id);
	e = e ?: buf_le64(b, (uint64_t)r->info.created_ns);
	e = e ?: buf_le32(b, r->info.latest_version);
	e = e ?: buf_append(b, r->wrapped_key, sizeof(r->wrapped_key));
	e = e ?: buf_u8(b, (uint8_t)n);
	e = e ?: buf_append(b, r->info.name, n);
	return e;
}

int dataset_rec_encode_v3(const struct dataset_rec *r, struct buf *b)
{
	size_t n = strnlen(r->info.name, STORE_DATASET_NAME_MAX);
	int e = 0;

	e = e ?: buf_u8(b, REC_V3);
	e = e ?: buf_le64(b, r->info.id);
	e = e ?: buf_le64(b, (uint64_t)r->info.created_ns);
	e = e ?: buf_le32(b, r->info.latest_version);
	e = e ?: buf_u8(b, (uint8_t)n);
	e = e ?: buf_append(b, r->info.name, n);
	return e;
}

int dataset_rec_decode(const char *v1_name, const void *v, size_t n, struct dataset_rec *ret)
{
	struct cursor c = cursor_make(v, n);
	struct dataset_rec r = { 0 };
	uint64_t created;
	uint8_t rv = 0, nlen = 0;
	bool ok;

	cursor_u8(&c, &rv);
	cursor_le64(&c, &r.info.id);
	cursor_le64(&c, &created);
	cursor_le32(&c, &r.info.latest_version);
	if (rv != REC_V3)
		cursor_take(&c, r.wrapped_key, sizeof(r.wrapped_key));
	if (rv == REC_V2 || rv == REC_V3) {
		cursor_u8(&c, &nlen);
		if (nlen <= STORE_DATASET_NAME_MAX)
			cursor_take(&c, r.info.name, nlen);
	} else if (rv == REC_V1 && v1_name) {
		snprintf(r.info.name, sizeof(r.info.name), "%s", v1_name);
	}
	ok = cursor_done(&c) && (rv == REC_V2 || rv == REC_V3 || (rv == REC_V1 && v1_name)) &&
	     r.info.id != 0 &&
	     r.info.latest_version != 0 && store_dataset_name_valid(r.info.name) &&
	     (rv == REC_V1 || strlen(r.info.name) == nlen);
	if (!ok)
		return err_set(-EBADMSG, "index: malformed dataset record (id %llu)",
			       (unsigned long long)r.info.id);
	r.info.created_ns = (int64_t)created;
	*ret = r;
	return 0;
}

int version_rec_encode(const struct version_rec *r, struct buf *b)
{
	int e = 0;

	e = e ?: buf_u8(b, REC_V2);
	e = e ?: buf_u8(b, (uint8_t)r->state);
	e = e ?: buf_le64(b, (uint64_t)r->info.created_ns);
	e = e ?: buf_le64(b, (uint64_t)r->info.committed_ns);
	e = e ?: buf_le64(b, r->info.files);
	e = e ?: buf_le64(b, r->info.dirs);
	e = e ?: buf_le64(b, r->info.bytes);
	e = e ?: buf_append(b, r->info.manifest, sizeof(r->info.manifest));
	return e;
}

int version_rec_decode(const void *v, size_t n, struct version_rec *ret)
{
	struct cursor c = cursor_make(v, n);
	struct version_rec r = { 0 };
	uint64_t created, committed;
	uint8_t rv = 0, state = 0;

	cursor_u8(&c, &rv);
	cursor_u8(&c, &state);
	cursor_le64(&c, &created);
	cursor_le64(&c, &committed);
	cursor_le64(&c, &r.info.files);
	cursor_le64(&c, &r.info.dirs);
	cursor_le64(&c, &r.info.bytes);
	if (rv == REC_V2)
		cursor_take(&c, r.info.manifest, sizeof(r.info.manifest));
	if (!cursor_done(&c) || (rv != REC_V1 && rv != REC_V2) ||
	    (state != VERSION_PENDING && state != VERSION_COMMITTED && state != VERSION_ERASED))
		return err_set(-EBADMSG, "index: malformed version record");
	r.state = state;
	r.info.created_ns = (int64_t)created;
	r.info.committed_ns = (int64_t)committed;
	*ret = r;
	return 0;
}

int version_value_state(const void *v, size_t n, uint32_t *ret_state)
{
	const uint8_t *p = v;

	if (n < 1 + CRYPTO_SEAL_OVERHEAD ||
	    (p[0] != VERSION_PENDING && p[0] != VERSION_COMMITTED && p[0] != VERSION_ERASED))
		return err_set(-EBADMSG, "index: malformed version record");
	*ret_state = p[0];
	return 0;
}

/* A group member's fields after the stamp (docs/FORMAT.md 6.5): u32 group size, u32 member
 * offset, u16 member number, u16 members. */
#define GROUP_REC_LEN 12

int inode_encode(const struct store_inode *ino, const uint8_t *dir_digest, struct buf *b)
{
	int e = 0;

	e = e ?: buf_u8(b, REC_V2);
	e = e ?: buf_u8(b, (uint8_t)ino->type);
	e = e ?: buf_le32(b, ino->mode);
	e = e ?: buf_le64(b, (uint64_t)ino->mtime_ns);
	e = e ?: buf_le64(b, ino->size);
	e = e ?: buf_le32(b, ino->nlink);
	if (ino->type != STORE_INODE_FILE) {
		static const uint8_t zero[DIR_DIGEST_LEN];

		return e ?: buf_append(b, dir_digest ? dir_digest : zero, DIR_DIGEST_LEN);
	}
	e = e ?: buf_append(b, ino->ext.object_id, sizeof(ino->ext.object_id));
	e = e ?: buf_le64(b, ino->ext.pack_id);
	e = e ?: buf_le64(b, ino->ext.offset);
	e = e ?: buf_le32(b, ino->ext.chunk_size);
	e = e ?: buf_le32(b, ino->ext.alg);
	e = e ?: buf_append(b, ino->ext.wrapped_key, sizeof(ino->ext.wrapped_key));
	/* The content hash, for later imports to find the file unchanged (docs/FORMAT.md 6.5). */
	if (ino->ext.has_content_mac)
		e = e ?: buf_append(b, ino->ext.content_mac, sizeof(ino->ext.content_mac));
	/* And the source stamp, for later imports to skip reading it (docs/FORMAT.md 6.5). */
	if (ino->ext.has_content_mac && ino->ext.has_stamp)
		e = e ?: buf_append(b, ino->ext.stamp, sizeof(ino->ext.stamp));
	/* A tiny file: its group's size and its place in it (docs/FORMAT.md 4.10). Only after a
	 * content hash and a stamp, so that the length alone says which record this is. */
	if (ino->ext.grouped) {
		if (!ino->ext.has_content_mac || !ino->ext.has_stamp)
			return -EINVAL;
		e = e ?: buf_le32(b, ino->ext.group_size);
		e = e ?: buf_le32(b, ino->ext.member_off);
		e = e ?: buf_append(b, (const uint8_t[4]){ (uint8_t)ino->ext.member_idx,
							    (uint8_t)(ino->ext.member_idx >> 8),
							    (uint8_t)ino->ext.member_count,
							    (uint8_t)(ino->ext.member_count >> 8) },
				    4);
	}
	return e;
}

int inode_decode(uint64_t inum, const void *v, size_t n, struct store_inode *ret,
		 uint8_t *ret_dir_digest)
{
	struct cursor c = cursor_make(v, n);
	struct store_inode ino = { .ino = inum };
	uint8_t digest[DIR_DIGEST_LEN] = { 0 };
	uint64_t mtime;
	uint8_t rv = 0, type = 0;
	bool ok;

	cursor_u8(&c, &rv);
	cursor_u8(&c, &type);
	cursor_le32(&c, &ino.mode);
	cursor_le64(&c, &mtime);
	cursor_le64(&c, &ino.size);
	cursor_le32(&c, &ino.nlink);
	ino.type = type;
	ino.mtime_ns = (int64_t)mtime;
	if (type == STORE_INODE_FILE) {
		cursor_take(&c, ino.ext.object_id, sizeof(ino.ext.object_id));
		cursor_le64(&c, &ino.ext.pack_id);
		cursor_le64(&c, &ino.ext.offset);
		cursor_le32(&c, &ino.ext.chunk_size);
		cursor_le32(&c, &ino.ext.alg);
		cursor_take(&c, ino.ext.wrapped_key, sizeof(ino.ext.wrapped_key));
		/* Files imported since versions share objects carry their content hash too. */
		if (rv == REC_V2 && !c.bad && (c.left == sizeof(ino.ext.content_mac) ||
					       c.left == sizeof(ino.ext.content_mac) +
							       sizeof(ino.ext.stamp) ||
					       c.left == sizeof(ino.ext.content_mac) +
							       sizeof(ino.ext.stamp) + GROUP_REC_LEN)) {
			cursor_take(&c, ino.ext.content_mac, sizeof(ino.ext.content_mac));
			ino.ext.has_content_mac = true;
		}
		/* Files imported since the source stamp, that too. */
		if (ino.ext.has_content_mac && !c.bad && (c.left == sizeof(ino.ext.stamp) ||
							  c.left == sizeof(ino.ext.stamp) +
									    GROUP_REC_LEN)) {
			cursor_take(&c, ino.ext.stamp, sizeof(ino.ext.stamp));
			ino.ext.has_stamp = true;
		}
		/* A tiny file, a member of a group (docs/FORMAT.md 4.10). */
		if (ino.ext.has_stamp && !c.bad && c.left == GROUP_REC_LEN) {
			uint8_t mc[4] = { 0 };

			cursor_le32(&c, &ino.ext.group_size);
			cursor_le32(&c, &ino.ext.member_off);
			cursor_take(&c, mc, sizeof(mc));
			ino.ext.member_idx = (uint16_t)(mc[0] | mc[1] << 8);
			ino.ext.member_count = (uint16_t)(mc[2] | mc[3] << 8);
			ino.ext.grouped = true;
		}
	} else if (rv == REC_V2) {
		cursor_take(&c, digest, sizeof(digest));
	}
	ok = cursor_done(&c) && (rv == REC_V1 || rv == REC_V2) && (ino.mode & ~07777u) == 0 &&
	     (type == STORE_INODE_DIR || type == STORE_INODE_FILE);
	if (ok && type == STORE_INODE_FILE)
		ok = ino.ext.pack_id > 0 && ino.ext.offset >= PACK_HEADER_LEN &&
		     IS_POW2(ino.ext.chunk_size) && ino.ext.chunk_size >= CRYPTO_CHUNK_MIN &&
		     ino.ext.chunk_size <= CRYPTO_CHUNK_MAX && crypto_aead_valid(ino.ext.alg) &&
		     /* Aligned, unless a dense object (docs/FORMAT.md 4.7). */
		     (IS_ALIGNED(ino.ext.offset, STORE_ALIGN) ||
		      object_dense(inode_object_size(&ino), ino.ext.chunk_size));
	/* A member lies inside its group, a group is one dense chunk of at most STORE_GROUP_MAX
	 * bytes, and only a tiny file is a member (docs/FORMAT.md 4.10). */
	if (ok && type == STORE_INODE_FILE && ino.ext.grouped)
		ok = ino.ext.group_size <= STORE_GROUP_MAX &&
		     ino.ext.group_size <= ino.ext.chunk_size && ino.size <= STORE_TINY_MAX &&
		     ino.ext.member_idx < ino.ext.member_count &&
		     ino.ext.member_count <= STORE_GROUP_MEMBERS_MAX &&
		     ino.ext.member_off <= ino.ext.group_size &&
		     ino.size <= ino.ext.group_size - ino.ext.member_off;
	if (!ok)
		return err_set(-EBADMSG, "index: malformed inode record %llu",
			       (unsigned long long)inum);
	*ret = ino;
	if (ret_dir_digest)
		memcpy(ret_dir_digest, digest, sizeof(digest));
	return 0;
}

int dirent_rec_encode(const struct dirent_rec *d, struct buf *b)
{
	size_t n = strnlen(d->name, STORE_NAME_MAX);
	int e = 0;

	e = e ?: buf_u8(b, REC_V2);
	e = e ?: buf_le64(b, d->ino);
	e = e ?: buf_u8(b, (uint8_t)d->type);
	e = e ?: buf_u8(b, (uint8_t)n);
	e = e ?: buf_append(b, d->name, n);
	return e;
}

int dirent_rec_decode(const void *v, size_t n, struct dirent_rec *ret)
{
	struct cursor c = cursor_make(v, n);
	struct dirent_rec d = { 0 };
	uint8_t rv = 0, type = 0, nlen = 0;

	cursor_u8(&c, &rv);
	cursor_le64(&c, &d.ino);
	cursor_u8(&c, &type);
	cursor_u8(&c, &nlen);
	cursor_take(&c, d.name, nlen);
	d.type = type;
	if (!cursor_done(&c) || rv != REC_V2 || d.ino == 0 ||
	    (type != STORE_INODE_DIR && type != STORE_INODE_FILE) || !store_name_valid(d.name, nlen))
		return err_set(-EBADMSG, "index: malformed directory entry");
	*ret = d;
	return 0;
}

int dirent_decode_v1(const void *v, size_t n, uint64_t *ret_ino, uint32_t *ret_type)
{
	struct cursor c = cursor_make(v, n);
	uint64_t ino = 0;
	uint8_t type = 0;

	cursor_le64(&c, &ino);
	cursor_u8(&c, &type);
	if (!cursor_done(&c) || ino == 0 || (type != STORE_INODE_DIR && type != STORE_INODE_FILE))
		return err_set(-EBADMSG, "index: malformed directory entry");
	*ret_ino = ino;
	*ret_type = type;
	return 0;
}

/* What an entry's digest covers: its inode number, its type and its name. */
static size_t digest_input(uint8_t in[static 1 + 8 + 1 + STORE_NAME_MAX], uint64_t ino,
			   uint32_t type, const char *name, size_t nlen)
{
	nlen = MIN(nlen, (size_t)STORE_NAME_MAX);
	in[0] = 0x01; /* domain: an entry's digest, never a key's name hash (those start with ver) */
	put_be64(in + 1, ino);
	in[9] = (uint8_t)type;
	memcpy(in + 10, name, nlen);
	return 10 + nlen;
}

void dirent_digest_add(const crypto_key *name_key, uint8_t digest[DIR_DIGEST_LEN], uint64_t ino,
		       uint32_t type, const char *name, size_t nlen)
{
	uint8_t in[1 + 8 + 1 + STORE_NAME_MAX], h[CRYPTO_NAME_HASH_LEN];

	crypto_name_hash(name_key, in, digest_input(in, ino, type, name, nlen), h);
	for (size_t i = 0; i < DIR_DIGEST_LEN; i++)
		digest[i] ^= h[i];
}

void dirent_digest_add_mk(const crypto_mac_key *name_mk, uint8_t digest[DIR_DIGEST_LEN],
			  uint64_t ino, uint32_t type, const char *name, size_t nlen)
{
	uint8_t in[1 + 8 + 1 + STORE_NAME_MAX], h[CRYPTO_NAME_HASH_LEN];

	crypto_mac(name_mk, in, digest_input(in, ino, type, name, nlen), h);
	for (size_t i = 0; i < DIR_DIGEST_LEN; i++)
		digest[i] ^= h[i];
}

/* ---- The seal layer ------------------------------------------------------------------------ */

static size_t seal_ad(uint8_t *ad, enum store_cf cf, const void *k, size_t klen, const void *clear,
		      size_t clen)
{
	memcpy(ad, "ENCLIDX2", 8);
	ad[8] = (uint8_t)cf;
	ad[9] = (uint8_t)(klen >> 8);
	ad[10] = (uint8_t)klen;
	memcpy(ad + 11, k, klen);
	if (clen)
		memcpy(ad + 11 + klen, clear, clen);
	return 11 + klen + clen;
}

int index_seal(const crypto_key *key, enum store_cf cf, const void *k, size_t klen,
	       const void *clear, size_t clen, const void *pt, size_t n, struct buf *out)
{
	uint8_t ad[SEAL_AD_MAX];
	uint8_t *dst = NULL;
	int r;

	if (klen > STORE_POLICY_KEY_MAX || clen > SEAL_CLEAR_MAX)
		return -EINVAL;
	r = buf_append(out, clear, clen);
	if (r < 0)
		return r;
	/* Room for the sealed bytes, written in place. */
	r = buf_extend(out, n + CRYPTO_SEAL_OVERHEAD, &dst);
	if (r < 0)
		return r;
	return crypto_seal(key, ad, seal_ad(ad, cf, k, klen, clear, clen), pt, n, dst);
}

int index_unseal(const crypto_key *key, enum store_cf cf, const void *k, size_t klen, size_t clen,
		 const void *v, size_t n, uint8_t *out, size_t cap, size_t *ret_len)
{
	uint8_t ad[SEAL_AD_MAX];
	const uint8_t *p = v;

	if (klen > STORE_POLICY_KEY_MAX || clen > SEAL_CLEAR_MAX || n < clen + CRYPTO_SEAL_OVERHEAD ||
	    n - clen - CRYPTO_SEAL_OVERHEAD > cap)
		return -EBADMSG;
	if (crypto_unseal(key, ad, seal_ad(ad, cf, k, klen, p, clen), p + clen, n - clen, out) < 0)
		return -EBADMSG;
	*ret_len = n - clen - CRYPTO_SEAL_OVERHEAD;
	return 0;
}

int index_version_get(struct store_index *ix, const crypto_key *seal, const crypto_key *tomb,
		      uint64_t dsid, uint32_t ver, struct version_rec *ret)
{
	uint8_t k[VKEY_LEN], pt[REC_PLAIN_MAX];
	uint32_t state = 0;
	char *v = NULL;
	size_t n = 0, pl = 0;
	int r;

	vkey(k, dsid, ver);
	r = index_get(ix, CF_VERSIONS, k, sizeof(k), &v, &n);
	if (r < 0)
		return r;
	r = version_value_state(v, n, &state);
	if (r == 0 && state == VERSION_ERASED)
		seal = tomb;
	if (r == 0 && !seal && state == VERSION_PENDING) {
		/* An import not yet committed: its key is not in the ring yet. */
		free(v);
		*ret = (struct version_rec){ .info = { .dataset_id = dsid, .version = ver },
					     .state = state };
		return 0;
	}
	if (r == 0 && !seal)
		r = err_set(-EBADMSG, "index integrity: version %u of dataset %llu has a record but "
				      "no key in the key ring", ver, (unsigned long long)dsid);
	if (r == 0 && index_unseal(seal, CF_VERSIONS, k, sizeof(k), 1, v, n, pt, sizeof(pt), &pl) < 0)
		r = err_set(-EBADMSG, "index integrity: the record of version %u of dataset %llu "
				      "does not authenticate", ver, (unsigned long long)dsid);
	free(v);
	if (r == 0)
		r = version_rec_decode(pt, pl, ret);
	if (r == 0 && ret->state != state)
		r = err_set(-EBADMSG, "index integrity: version %u of dataset %llu: state differs",
			    ver, (unsigned long long)dsid);
	if (r == 0) {
		ret->info.dataset_id = dsid;
		ret->info.version = ver;
	}
	return r;
}
