/* store: create, open (with crash recovery), close, and the read-side lookups. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "store/store_internal.h"

#define MARKER_NAME "ENCLAVE"
#define MARKER_TEXT "enclave-store 1\n"
#define MASTER_NAME "master.key"
#define META_FORMAT "format"
#define META_STORE_ID "store_id"
#define META_NEXT_DATASET "next_dataset"

/* The name is bound too: swapping two dataset records in the index must not make one dataset's
 * name serve the other's data. */
size_t dataset_key_ad(const uint8_t store_id[16], uint64_t dsid, const char *name,
		      uint8_t out[DATASET_KEY_AD_MAX])
{
	size_t n = strnlen(name, STORE_DATASET_NAME_MAX);

	memcpy(out, "ENCLDSK1", 8);
	memcpy(out + 8, store_id, 16);
	put_be64(out + 24, dsid);
	out[32] = (uint8_t)n;
	memcpy(out + 33, name, n);
	return 33 + n;
}

void object_key_ad(uint64_t dsid, const struct store_inode *ino, uint8_t out[OBJECT_KEY_AD_LEN])
{
	memcpy(out, "ENCLOBK1", 8);
	put_be64(out + 8, dsid);
	memcpy(out + 16, ino->ext.object_id, CRYPTO_OBJECT_ID_LEN);
	put_be32(out + 32, ino->ext.alg);
	put_be32(out + 36, ino->ext.chunk_size);
	put_be64(out + 40, ino->size);
}

/* ---- Open and close ------------------------------------------------------------------------ */

static int meta_get_u64(struct store *st, const char *key, uint64_t *ret)
{
	char *v = NULL;
	size_t n = 0;
	int r = index_get(&st->ix, CF_META, key, strlen(key), &v, &n);

	if (r < 0)
		return r;
	if (n != 8) {
		free(v);
		return err_set(-EBADMSG, "index: malformed meta record '%s'", key);
	}
	*ret = get_le64((const uint8_t *)v);
	free(v);
	return 0;
}

/* Drop every pending (uncommitted) version: the remains of an import that never committed. */
static int recover_pending_versions(struct store *st)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro,
							    st->ix.cf[CF_VERSIONS]);
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	bool any = false;
	int r = 0;

	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		struct version_rec vr;
		uint8_t lo[VKEY_LEN], hi[VKEY_LEN];
		uint64_t dsid;
		uint32_t ver;

		if (kl != VKEY_LEN) {
			r = err_set(-EBADMSG, "index: malformed version key");
			goto out;
		}
		r = version_rec_decode(v, vl, &vr);
		if (r < 0)
			goto out;
		if (vr.state != VERSION_PENDING)
			continue;
		dsid = get_be64((const uint8_t *)k);
		ver = get_be32((const uint8_t *)k + 8);
		vkey(lo, dsid, ver);
		if (ver == UINT32_MAX)
			vkey(hi, dsid + 1, 0);
		else
			vkey(hi, dsid, ver + 1);
		rocksdb_writebatch_delete_range_cf(wb, st->ix.cf[CF_INODES], (const char *)lo,
						   sizeof(lo), (const char *)hi, sizeof(hi));
		rocksdb_writebatch_delete_range_cf(wb, st->ix.cf[CF_DIRENTS], (const char *)lo,
						   sizeof(lo), (const char *)hi, sizeof(hi));
		rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_VERSIONS], k, kl);
		any = true;
		if (st->nrecovered < STORE_RECOVERED_MAX)
			st->recovered[st->nrecovered++] = (struct store_recovered){
				.dataset_id = dsid, .version = ver };
		else
			st->recovered_more++;
	}
out:
	r = index_iter_close(it, r, "scan of versions");
	if (r == 0 && any)
		r = index_write(&st->ix, wb, true);
	if (r < 0) {
		st->nrecovered = 0;
		st->recovered_more = 0;
	}
	rocksdb_writebatch_destroy(wb);
	return r;
}

size_t store_recovered(const struct store *st, const struct store_recovered **ret,
		       uint64_t *ret_more)
{
	*ret = st->recovered;
	if (ret_more)
		*ret_more = st->recovered_more;
	return st->nrecovered;
}

/* Learn the packs: the last committed one and its committed length from the index, and the
 * highest pack file present on disk.
 *
 * Nothing is cut or removed here. Bytes past a pack's committed length, and pack files no commit
 * refers to, are what an interrupted import left behind; but they are also what a newer index
 * referred to if this index is older than the packs (restored from a backup, or edited). A crash
 * can never make the index older than an acknowledged commit, so deleting on its word would only
 * ever destroy data in the second case. They stay; new appends start after them. */
static int scan_packs(struct store *st)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro,
							    st->ix.cf[CF_META]);
	DIR *d = NULL;
	int dfd, r = 0;

	for (rocksdb_iter_seek(it, "pack/", 5); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		uint64_t id;

		if (kl < 5 || memcmp(k, "pack/", 5) != 0)
			break;
		if (kl != PACKKEY_LEN || vl != 8) {
			r = err_set(-EBADMSG, "index: malformed pack record");
			break;
		}
		id = get_be64((const uint8_t *)k + 5);
		if (id > st->last_pack_id) {
			st->last_pack_id = id;
			st->last_pack_len = get_le64((const uint8_t *)v);
		}
	}
	r = index_iter_close(it, r, "scan of packs");
	if (r < 0)
		return r;

	dfd = openat(st->packs_dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || !(d = fdopendir(dfd))) {
		r = err_set(-errno, "cannot list packs: %s", strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return r;
	}
	st->pack_file_max = st->last_pack_id;
	for (struct dirent *de; (de = readdir(d));) {
		unsigned long long id;
		char tail[8];
		char expect[32];

		if (sscanf(de->d_name, "%16llx%7s", &id, tail) != 2 || strcmp(tail, ".pack") != 0)
			continue;
		pack_name(expect, sizeof(expect), id);
		if (strcmp(expect, de->d_name) == 0 && id > st->pack_file_max)
			st->pack_file_max = id;
	}
	closedir(d); /* closes dfd */
	return 0;
}

static int store_alloc(struct store **ret)
{
	struct store *st;
	int r;

	/* Whoever holds the master key must not be dumpable: no core file, no ptrace by others. */
	r = crypto_harden_process();
	if (r < 0)
		return err_set(r, "cannot make the process non-dumpable: %s", strerror(-r));
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->dirfd = st->lockfd = st->packs_dirfd = -1;
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->import_lock, NULL);
	*ret = st;
	return 0;
}

/* Open the index of a store whose directory, lock and master key are already in st, check its
 * format and recover. */
static int store_open_index(struct store *st, const char *dir, bool create,
			    const struct store_open_options *opts)
{
	char path[PATH_MAX];
	char *v = NULL;
	size_t n = 0;
	uint64_t next = 1;
	int r;

	if (snprintf(path, sizeof(path), "%s/index", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	r = index_open(&st->ix, path, create);
	if (r < 0)
		return r;
	if (create) {
		rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
		uint8_t fmt[8], nd[8];

		crypto_random(st->store_id, sizeof(st->store_id));
		put_le64(fmt, STORE_FORMAT_VERSION);
		put_le64(nd, 1);
		rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_FORMAT, strlen(META_FORMAT),
					  (const char *)fmt, 8);
		rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_STORE_ID,
					  strlen(META_STORE_ID), (const char *)st->store_id, 16);
		rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_NEXT_DATASET,
					  strlen(META_NEXT_DATASET), (const char *)nd, 8);
		r = index_write(&st->ix, wb, true);
		rocksdb_writebatch_destroy(wb);
		if (r < 0)
			return r;
	}

	r = meta_get_u64(st, META_FORMAT, &next);
	if (r == 0 && next != STORE_FORMAT_VERSION)
		r = err_set(-EPROTONOSUPPORT, "store format %llu is not supported (this build: %u)",
			    (unsigned long long)next, STORE_FORMAT_VERSION);
	if (r < 0)
		return r == -ENOENT ? err_set(-EBADMSG, "index: no format record") : r;
	r = index_get(&st->ix, CF_META, META_STORE_ID, strlen(META_STORE_ID), &v, &n);
	if (r < 0)
		return r == -ENOENT ? err_set(-EBADMSG, "index: no store id") : r;
	if (n != sizeof(st->store_id)) {
		free(v);
		return err_set(-EBADMSG, "index: malformed store id");
	}
	memcpy(st->store_id, v, n);
	free(v);
	r = meta_get_u64(st, META_NEXT_DATASET, &st->next_dataset_id);
	if (r < 0)
		return r == -ENOENT ? err_set(-EBADMSG, "index: no dataset counter") : r;

	st->direct_io = opts && opts->direct_io;
	st->pack_target = opts && opts->pack_target ? opts->pack_target : STORE_PACK_TARGET;
	r = recover_pending_versions(st);
	if (r < 0)
		return r;
	return scan_packs(st);
}

static int store_lock(struct store *st)
{
	st->lockfd = openat(st->dirfd, "LOCK", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (st->lockfd < 0)
		return err_set(-errno, "cannot open the store lock: %s", strerror(errno));
	if (flock(st->lockfd, LOCK_EX | LOCK_NB) < 0)
		return err_set(errno == EWOULDBLOCK ? -EBUSY : -errno,
			       "the store is in use by another process");
	return 0;
}

int store_create(const char *dir, const crypto_secret *pass, const struct crypto_kdf_params *kdf,
		 struct store **ret_store)
{
	struct store *st = NULL;
	DIR *d = NULL;
	int fd = -1, r;

	err_clear();
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return err_set(-errno, "cannot create %s: %s", dir, strerror(errno));
	r = store_alloc(&st);
	if (r < 0)
		return r;
	st->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (st->dirfd < 0) {
		r = err_set(-errno, "cannot open %s: %s", dir, strerror(errno));
		goto fail;
	}
	/* Only an empty directory becomes a store: nothing of anyone's is overwritten. */
	fd = dup(st->dirfd);
	if (fd < 0 || !(d = fdopendir(fd))) {
		r = -errno;
		goto fail;
	}
	fd = -1;
	for (struct dirent *de; (de = readdir(d));)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			r = err_set(-EEXIST, "%s is not empty; a store is created in an empty "
					     "or new directory", dir);
			goto fail;
		}
	/* Private whatever the umask or the mode of a directory that already existed: the index holds
	 * dataset and file names and sizes in clear. RocksDB creates its files under the umask, so
	 * index/ is made here, 0700, before it does. */
	if (fchmod(st->dirfd, 0700) < 0) {
		r = err_set(-errno, "cannot make %s private: %s", dir, strerror(errno));
		goto fail;
	}
	r = store_lock(st);
	if (r < 0)
		goto fail;
	if (mkdirat(st->dirfd, "keys", 0700) < 0 || mkdirat(st->dirfd, "packs", 0700) < 0 ||
	    mkdirat(st->dirfd, "index", 0700) < 0) {
		r = err_set(-errno, "cannot create the store layout in %s: %s", dir, strerror(errno));
		goto fail;
	}
	fd = openat(st->dirfd, "keys", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	r = crypto_master_create(fd, MASTER_NAME, pass, kdf, &st->master);
	close(fd);
	fd = -1;
	if (r < 0) {
		r = err_set(r, "cannot create the master key: %s", strerror(-r));
		goto fail;
	}
	st->packs_dirfd = openat(st->dirfd, "packs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (st->packs_dirfd < 0) {
		r = -errno;
		goto fail;
	}
	r = store_open_index(st, dir, true, NULL);
	if (r < 0)
		goto fail;
	/* The marker comes last: a directory without it is not (yet) a store. */
	fd = openat(st->dirfd, MARKER_NAME, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	r = pwrite_all(fd, MARKER_TEXT, strlen(MARKER_TEXT), 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	fd = -1;
	if (r == 0)
		r = fsync_dirfd(st->dirfd);
	if (r < 0)
		goto fail;
	closedir(d);
	*ret_store = st;
	return 0;
fail:
	if (d)
		closedir(d);
	if (fd >= 0)
		close(fd);
	store_close(st);
	return r;
}

int store_open(const char *dir, const crypto_secret *pass, const struct store_open_options *opts,
	       struct store **ret_store)
{
	char marker[sizeof(MARKER_TEXT) + 1];
	struct store *st = NULL;
	ssize_t n;
	int fd = -1, r;

	err_clear();
	r = store_alloc(&st);
	if (r < 0)
		return r;
	st->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->dirfd < 0) {
		r = err_set(-errno, "cannot open store %s: %s", dir, strerror(errno));
		goto fail;
	}
	fd = openat(st->dirfd, MARKER_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = err_set(errno == ENOENT ? -ENOENT : -errno,
			    "%s is not an Enclave store (no %s marker)", dir, MARKER_NAME);
		goto fail;
	}
	n = read_full(fd, marker, sizeof(marker));
	close(fd);
	fd = -1;
	if (n != (ssize_t)strlen(MARKER_TEXT) || memcmp(marker, MARKER_TEXT, (size_t)n) != 0) {
		r = err_set(-EPROTONOSUPPORT, "%s: unknown store marker or format", dir);
		goto fail;
	}
	r = store_lock(st);
	if (r < 0)
		goto fail;
	fd = openat(st->dirfd, "keys", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = err_set(-errno, "%s: no keys directory: %s", dir, strerror(errno));
		goto fail;
	}
	r = crypto_master_unlock(fd, MASTER_NAME, pass, &st->master);
	close(fd);
	fd = -1;
	if (r == -EKEYREJECTED) {
		r = err_set(r, "wrong passphrase for store %s (or its master key file was altered); "
			       "the key file is unchanged", dir);
		goto fail;
	}
	if (r < 0) {
		r = err_set(r, "cannot read the master key of %s: %s", dir, strerror(-r));
		goto fail;
	}
	st->packs_dirfd = openat(st->dirfd, "packs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (st->packs_dirfd < 0) {
		r = err_set(-errno, "%s: no packs directory: %s", dir, strerror(errno));
		goto fail;
	}
	r = store_open_index(st, dir, false, opts);
	if (r < 0)
		goto fail;
	*ret_store = st;
	return 0;
fail:
	store_close(st);
	return r;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	if (st->import)
		store_import_free(st->import);
	index_close(&st->ix);
	for (size_t i = 0; i < st->pack_fds_len; i++)
		if (st->pack_fds[i] >= 0)
			close(st->pack_fds[i]);
	free(st->pack_fds);
	for (size_t i = 0; i < st->dskeys_len; i++)
		crypto_key_free(st->dskeys[i].key);
	free(st->dskeys);
	crypto_key_free(st->master);
	if (st->packs_dirfd >= 0)
		close(st->packs_dirfd);
	if (st->lockfd >= 0)
		close(st->lockfd); /* releases the flock */
	if (st->dirfd >= 0)
		close(st->dirfd);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->import_lock);
	free(st);
}

/* ---- Caches -------------------------------------------------------------------------------- */

int store_pack_fd(struct store *st, uint64_t pack_id, int *ret_fd)
{
	char name[32];
	int fd, r = 0;

	pthread_mutex_lock(&st->lock);
	/* Pack ids come from index records: only packs a commit made are opened, which also bounds
	 * the table below by the real number of packs. */
	if (pack_id == 0 || pack_id > st->last_pack_id) {
		r = err_set(-EUCLEAN, "pack %016llx is not a committed pack of this store",
			    (unsigned long long)pack_id);
		goto out;
	}
	if (pack_id >= st->pack_fds_len) {
		size_t n = MAX((size_t)pack_id + 1, st->pack_fds_len * 2);
		int *a = reallocarray(st->pack_fds, n, sizeof(*a));

		if (!a) {
			r = -ENOMEM;
			goto out;
		}
		for (size_t i = st->pack_fds_len; i < n; i++)
			a[i] = -1;
		st->pack_fds = a;
		st->pack_fds_len = n;
	}
	if (st->pack_fds[pack_id] < 0) {
		pack_name(name, sizeof(name), pack_id);
		fd = -1;
		if (st->direct_io)
			fd = openat(st->packs_dirfd, name,
				    O_RDONLY | O_DIRECT | O_NOFOLLOW | O_CLOEXEC);
		/* O_DIRECT is refused by some file systems (tmpfs): read through the cache. */
		if (fd < 0)
			fd = openat(st->packs_dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			r = err_set(errno == ENOENT ? -EUCLEAN : -errno, "cannot open pack %s: %s",
				    name, strerror(errno));
			goto out;
		}
		/* A pack of another store (or another pack) under this name: say so plainly, rather
		 * than letting every chunk fail authentication. */
		r = pack_check_header(fd, st->store_id, pack_id);
		if (r < 0) {
			close(fd);
			r = r == -EBADMSG ? -EUCLEAN : r;
			goto out;
		}
		st->pack_fds[pack_id] = fd;
	}
	*ret_fd = st->pack_fds[pack_id];
out:
	pthread_mutex_unlock(&st->lock);
	return r;
}

/* With st->lock held. */
static int dskey_insert_locked(struct store *st, uint64_t dsid, crypto_key *key)
{
	if (st->dskeys_len == st->dskeys_cap) {
		size_t n = st->dskeys_cap ? st->dskeys_cap * 2 : 8;
		struct dskey *a = reallocarray(st->dskeys, n, sizeof(*a));

		if (!a)
			return -ENOMEM;
		st->dskeys = a;
		st->dskeys_cap = n;
	}
	st->dskeys[st->dskeys_len++] = (struct dskey){ .id = dsid, .key = key };
	return 0;
}

int store_dataset_key_cache(struct store *st, uint64_t dsid, crypto_key *key)
{
	int r;

	pthread_mutex_lock(&st->lock);
	r = dskey_insert_locked(st, dsid, key);
	pthread_mutex_unlock(&st->lock);
	if (r < 0)
		crypto_key_free(key);
	return r;
}

/* Call fn for every dataset record in name order; a non-zero return from fn stops and is
 * returned. A malformed record (a NUL inside the key would list it under a shorter name, twice)
 * is -EBADMSG, or skipped when skip_bad, so that damage to one dataset does not hide the others. */
static int dataset_recs_foreach(struct store *st, bool skip_bad,
				int (*fn)(void *ctx, const struct dataset_rec *rec), void *ctx)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro,
							    st->ix.cf[CF_DATASETS]);
	int r = 0;

	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		char name[STORE_DATASET_NAME_MAX + 1];
		struct dataset_rec rec;
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		r = -EBADMSG;
		if (kl > 0 && kl <= STORE_DATASET_NAME_MAX && !memchr(k, '\0', kl)) {
			memcpy(name, k, kl);
			name[kl] = '\0';
			r = dataset_rec_decode(name, v, vl, &rec);
		} else {
			err_set(r, "index: malformed dataset key");
		}
		if (r == -EBADMSG && skip_bad) {
			r = 0;
			continue;
		}
		if (r == 0)
			r = fn(ctx, &rec);
		if (r != 0)
			break;
	}
	return index_iter_close(it, r, "scan of datasets");
}

struct by_id {
	uint64_t id;
	struct dataset_rec *rec;
};

static int match_id(void *ctx, const struct dataset_rec *rec)
{
	struct by_id *b = ctx;

	if (rec->info.id != b->id)
		return 0;
	*b->rec = *rec;
	return 1;
}

/* Find the record of dataset dsid by scanning the datasets (only on a key cache miss). */
static int dataset_rec_by_id(struct store *st, uint64_t dsid, struct dataset_rec *ret)
{
	struct by_id b = { .id = dsid, .rec = ret };
	int r = dataset_recs_foreach(st, true, match_id, &b);

	if (r == 0)
		return err_set(-ENOENT, "no dataset with id %llu", (unsigned long long)dsid);
	return r < 0 ? r : 0;
}

int store_dataset_key(struct store *st, uint64_t dsid, const struct dataset_rec *rec,
		      crypto_key **ret)
{
	struct dataset_rec found;
	uint8_t ad[DATASET_KEY_AD_MAX];
	size_t adlen;
	crypto_key *key = NULL;
	int r = 0;

	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < st->dskeys_len; i++)
		if (st->dskeys[i].id == dsid) {
			*ret = st->dskeys[i].key;
			goto out;
		}
	if (!rec) {
		r = dataset_rec_by_id(st, dsid, &found);
		if (r < 0)
			goto out;
		rec = &found;
	}
	adlen = dataset_key_ad(st->store_id, dsid, rec->info.name, ad);
	r = crypto_key_unwrap(st->master, rec->wrapped_key, ad, adlen, &key);
	if (r < 0) {
		r = err_set(r, "the key of dataset '%s' does not unwrap: its record was altered",
			    rec->info.name);
		goto out;
	}
	r = dskey_insert_locked(st, dsid, key);
	if (r < 0) {
		crypto_key_free(key);
		goto out;
	}
	*ret = key;
out:
	pthread_mutex_unlock(&st->lock);
	return r;
}

/* ---- Lookups ------------------------------------------------------------------------------- */

int store_dataset_get(struct store *st, const char *name, struct store_dataset_info *ret_info)
{
	struct dataset_rec rec;
	int r = index_dataset_get(&st->ix, name, &rec);

	if (r < 0)
		return r;
	*ret_info = rec.info;
	return 0;
}

struct info_fn {
	int (*fn)(void *ctx, const struct store_dataset_info *info);
	void *ctx;
};

static int call_info_fn(void *ctx, const struct dataset_rec *rec)
{
	struct info_fn *f = ctx;

	return f->fn(f->ctx, &rec->info);
}

int store_dataset_foreach(struct store *st,
			  int (*fn)(void *ctx, const struct store_dataset_info *info), void *ctx)
{
	struct info_fn f = { .fn = fn, .ctx = ctx };

	return dataset_recs_foreach(st, false, call_info_fn, &f);
}

int store_version_get(struct store *st, uint64_t dataset_id, uint32_t version,
		      struct store_version_info *ret_info)
{
	struct version_rec vr;
	int r = index_version_get(&st->ix, dataset_id, version, &vr);

	if (r < 0)
		return r;
	if (vr.state != VERSION_COMMITTED)
		return -ENOENT;
	*ret_info = vr.info;
	return 0;
}

int store_inode_get(struct store *st, uint64_t dataset_id, uint32_t version, uint64_t ino,
		    struct store_inode *ret_inode)
{
	uint8_t k[IKEY_LEN];
	char *v = NULL;
	size_t n = 0;
	int r;

	ikey(k, dataset_id, version, ino);
	r = index_get(&st->ix, CF_INODES, k, sizeof(k), &v, &n);
	if (r < 0)
		return r;
	r = inode_decode(ino, v, n, ret_inode);
	free(v);
	return r;
}

int store_dir_lookup(struct store *st, uint64_t dataset_id, uint32_t version, uint64_t dir_ino,
		     const char *name, struct store_inode *ret_inode)
{
	uint8_t k[DKEY_PREFIX_LEN + STORE_NAME_MAX];
	uint64_t ino;
	uint32_t type;
	char *v = NULL;
	size_t n = 0;
	int r;

	if (!store_name_valid(name, strnlen(name, STORE_NAME_MAX + 1)))
		return -EINVAL;
	r = index_get(&st->ix, CF_DIRENTS, k, dkey(k, dataset_id, version, dir_ino, name), &v,
		      &n);
	if (r < 0)
		return r;
	r = dirent_decode(v, n, &ino, &type);
	free(v);
	if (r < 0)
		return r;
	return store_inode_get(st, dataset_id, version, ino, ret_inode);
}

int store_path_lookup(struct store *st, uint64_t dataset_id, uint32_t version, const char *path,
		      struct store_inode *ret_inode)
{
	struct store_inode cur;
	char comp[STORE_NAME_MAX + 1];
	const char *p = path;
	int r;

	r = store_inode_get(st, dataset_id, version, STORE_ROOT_INO, &cur);
	if (r < 0)
		return r;
	if (strcmp(path, ".") == 0)
		p = "";
	while (*p) {
		size_t len = strcspn(p, "/");

		if (!store_name_valid(p, len))
			return -EINVAL;
		if (cur.type != STORE_INODE_DIR)
			return -ENOTDIR;
		memcpy(comp, p, len);
		comp[len] = '\0';
		r = store_dir_lookup(st, dataset_id, version, cur.ino, comp, &cur);
		if (r < 0)
			return r;
		p += len;
		if (*p == '/')
			p++;
	}
	*ret_inode = cur;
	return 0;
}

int store_dir_foreach(struct store *st, uint64_t dataset_id, uint32_t version, uint64_t dir_ino,
		      const char *after,
		      int (*fn)(void *ctx, const char *name, uint64_t ino, uint32_t type),
		      void *ctx)
{
	uint8_t k[DKEY_PREFIX_LEN + STORE_NAME_MAX];
	size_t klen = dkey(k, dataset_id, version, dir_ino, "");
	rocksdb_iterator_t *it;
	int r = 0;

	if (after) {
		size_t n = strnlen(after, STORE_NAME_MAX + 1);

		if (!store_name_valid(after, n))
			return -EINVAL;
		klen = dkey(k, dataset_id, version, dir_ino, after);
	}
	it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro, st->ix.cf[CF_DIRENTS]);
	for (rocksdb_iter_seek(it, (const char *)k, klen); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		char name[STORE_NAME_MAX + 1];
		size_t kl, vl;
		const char *ik = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		uint64_t ino;
		uint32_t type;

		if (kl < DKEY_PREFIX_LEN || memcmp(ik, k, DKEY_PREFIX_LEN) != 0)
			break;
		if (after && kl == klen && memcmp(ik, k, klen) == 0)
			continue;
		if (!store_name_valid(ik + DKEY_PREFIX_LEN, kl - DKEY_PREFIX_LEN)) {
			r = err_set(-EBADMSG, "index: malformed directory entry name");
			break;
		}
		memcpy(name, ik + DKEY_PREFIX_LEN, kl - DKEY_PREFIX_LEN);
		name[kl - DKEY_PREFIX_LEN] = '\0';
		r = dirent_decode(v, vl, &ino, &type);
		if (r == 0)
			r = fn(ctx, name, ino, type);
		if (r != 0)
			break;
	}
	return index_iter_close(it, r, "directory scan");
}

int store_policy_put(struct store *st, const void *key, size_t klen, const void *val, size_t vlen)
{
	rocksdb_writebatch_t *wb;
	int r;

	if (klen == 0 || klen > STORE_POLICY_KEY_MAX || vlen == 0 || vlen > STORE_POLICY_VALUE_MAX)
		return err_set(-EINVAL, "policy record: key of %zu or value of %zu bytes", klen,
			       vlen);
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_POLICY], key, klen, val, vlen);
	r = index_write(&st->ix, wb, true);
	rocksdb_writebatch_destroy(wb);
	return r;
}

int store_policy_replace_all(struct store *st, const struct store_policy_kv *kv, size_t n)
{
	rocksdb_iterator_t *it;
	rocksdb_writebatch_t *wb;
	int r = 0;

	for (size_t i = 0; i < n; i++)
		if (kv[i].klen == 0 || kv[i].klen > STORE_POLICY_KEY_MAX || kv[i].vlen == 0 ||
		    kv[i].vlen > STORE_POLICY_VALUE_MAX)
			return err_set(-EINVAL, "policy record %zu: key of %zu or value of %zu bytes",
				       i, kv[i].klen, kv[i].vlen);
	wb = rocksdb_writebatch_create();
	it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro, st->ix.cf[CF_POLICY]);
	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl;
		const char *k = rocksdb_iter_key(it, &kl);

		rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_POLICY], k, kl);
	}
	r = index_iter_close(it, 0, "scan of policy records");
	for (size_t i = 0; r == 0 && i < n; i++)
		rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_POLICY], kv[i].key, kv[i].klen, kv[i].val,
					  kv[i].vlen);
	if (r == 0)
		r = index_write(&st->ix, wb, true);
	rocksdb_writebatch_destroy(wb);
	return r;
}

int store_policy_foreach(struct store *st,
			 int (*fn)(void *ctx, const void *key, size_t klen, const void *val,
				   size_t vlen),
			 void *ctx)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro,
							    st->ix.cf[CF_POLICY]);
	int r = 0;

	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		r = fn(ctx, k, kl, v, vl);
		if (r != 0)
			break;
	}
	return index_iter_close(it, r, "scan of policy records");
}
