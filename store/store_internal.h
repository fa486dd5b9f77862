/* store internals shared by the store/ sources. Not a public header: nothing outside store/ includes it. */
#pragma once

#include <liburing.h>
#include <pthread.h>
#include <rocksdb/c.h>

#include "common/common.h"
#include "common/err.h"
#include "store/store.h"

/* ---- Index (index.c) ----------------------------------------------------------------------- */

/* Column families; the order is the order of handles in struct store. docs/FORMAT.md "Index". */
enum store_cf {
	CF_DEFAULT,    /* unused, RocksDB requires it */
	CF_META,       /* store-wide settings and pack states */
	CF_DATASETS,   /* name -> dataset record */
	CF_VERSIONS,   /* be64 dataset id || be32 version -> version record */
	CF_INODES,     /* be64 dataset id || be32 version || be64 ino -> inode record */
	CF_DIRENTS,    /* be64 dataset id || be32 version || be64 parent ino || name -> entry */
	CF_POLICY,     /* policy/ records, opaque to the store (store_policy_put) */
	CF_COUNT
};

#define STORE_FORMAT_VERSION 1u
#define VERSION_PENDING 1u
#define VERSION_COMMITTED 2u

/* Key lengths. */
#define VKEY_LEN 12           /* dataset id + version */
#define IKEY_LEN 20           /* + ino */
#define DKEY_PREFIX_LEN 20    /* dataset id + version + parent; the name follows */
#define PACKKEY_LEN 13        /* "pack/" + be64 pack id */

struct store_index {
	rocksdb_t *db;
	rocksdb_options_t *opts;
	rocksdb_options_t *cf_opts[CF_COUNT];
	rocksdb_column_family_handle_t *cf[CF_COUNT];
	rocksdb_readoptions_t *ro;
	rocksdb_writeoptions_t *wo_sync;    /* sync = true: commits */
	rocksdb_writeoptions_t *wo_async;   /* sync = false: pending records, ordered in the WAL */
};

/* What the index stores about a dataset (the public info plus its wrapped key). */
struct dataset_rec {
	struct store_dataset_info info;
	uint8_t wrapped_key[CRYPTO_WRAPPED_KEY_LEN];  /* dataset key under the master key */
};

struct version_rec {
	struct store_version_info info;
	uint32_t state;   /* VERSION_PENDING or VERSION_COMMITTED */
};

int index_open(struct store_index *ix, const char *path, bool create);
void index_close(struct store_index *ix);

/* Get a value: 0 and a malloc'd copy in *ret_val (caller frees), -ENOENT, or -EIO. */
int index_get(struct store_index *ix, enum store_cf cf, const void *key, size_t klen,
	      char **ret_val, size_t *ret_len);
/* Write a batch with the sync or async options. -EIO with detail. */
int index_write(struct store_index *ix, rocksdb_writebatch_t *wb, bool sync);

/* Destroy an iterator and return r; if r is 0 and the iteration stopped on a read error, that
 * error instead (-EIO with detail "index: <what>: ..."). */
int index_iter_close(rocksdb_iterator_t *it, int r, const char *what);

void vkey(uint8_t out[VKEY_LEN], uint64_t dsid, uint32_t ver);
void ikey(uint8_t out[IKEY_LEN], uint64_t dsid, uint32_t ver, uint64_t ino);
/* Returns the key length, DKEY_PREFIX_LEN + strlen(name). out holds DKEY_PREFIX_LEN+NAME_MAX. */
size_t dkey(uint8_t *out, uint64_t dsid, uint32_t ver, uint64_t parent, const char *name);
void packkey(uint8_t out[PACKKEY_LEN], uint64_t pack_id);

/* Encoders append to b (capped); decoders return -EBADMSG for a malformed record. */
int dataset_rec_encode(const struct dataset_rec *r, struct buf *b);
int dataset_rec_decode(const char *name, const void *v, size_t n, struct dataset_rec *ret);
int version_rec_encode(const struct version_rec *r, struct buf *b);
int version_rec_decode(const void *v, size_t n, struct version_rec *ret);
int inode_encode(const struct store_inode *ino, struct buf *b);
int inode_decode(uint64_t ino, const void *v, size_t n, struct store_inode *ret);
int dirent_encode(uint64_t ino, uint32_t type, struct buf *b);
int dirent_decode(const void *v, size_t n, uint64_t *ret_ino, uint32_t *ret_type);

int index_dataset_get(struct store_index *ix, const char *name, struct dataset_rec *ret);
int index_version_get(struct store_index *ix, uint64_t dsid, uint32_t ver, struct version_rec *ret);

/* True for a valid path component: 1..STORE_NAME_MAX bytes, no '/', not "." or "..". */
bool store_name_valid(const char *name, size_t len);

/* ---- Associated data of wrapped keys (store.c). docs/FORMAT.md "Key wrapping". -------------- */

/* "ENCLDSK1" || store id || be64 dataset id || u8 name length || name */
#define DATASET_KEY_AD_MAX (8 + 16 + 8 + 1 + STORE_DATASET_NAME_MAX)
#define OBJECT_KEY_AD_LEN 48    /* "ENCLOBK1" || be64 dataset id || object id || be32 alg ||
				   be32 chunk size || be64 size */
/* Returns the length of the AD written to out. */
size_t dataset_key_ad(const uint8_t store_id[16], uint64_t dsid, const char *name,
		      uint8_t out[DATASET_KEY_AD_MAX]);
void object_key_ad(uint64_t dsid, const struct store_inode *ino, uint8_t out[OBJECT_KEY_AD_LEN]);

/* ---- Object geometry (object.c). docs/FORMAT.md "Objects". ----------------------------------- */

/* Chunks in an object of size bytes: at least one, so an empty object still has an
 * authenticated (empty, last) chunk. */
static inline uint64_t object_nchunks(uint64_t size, uint32_t cs)
{
	return size == 0 ? 1 : (size + cs - 1) / cs;
}
/* Objects of one chunk whose ciphertext and tag take at most this many bytes are packed densely
 * (docs/FORMAT.md 4.7): at any offset, without padding, and read with one pread. */
#define STORE_DENSE_MAX (64u << 10)
/* Whether an object of size bytes in chunks of cs is a dense one. */
static inline bool object_dense(uint64_t size, uint32_t cs)
{
	return size <= cs && size + CRYPTO_TAG_LEN <= STORE_DENSE_MAX;
}
/* Bytes an object occupies in its pack: ciphertext, tags and, for an aligned (not dense)
 * object, zero padding to STORE_ALIGN. */
static inline uint64_t object_span(uint64_t size, uint32_t cs)
{
	uint64_t n = size + object_nchunks(size, cs) * CRYPTO_TAG_LEN;

	return object_dense(size, cs) ? n : ALIGN_UP(n, (uint64_t)STORE_ALIGN);
}

/* ---- Packs (pack.c). docs/FORMAT.md "Pack files". ------------------------------------------ */

#define PACK_HEADER_LEN 4096u
#define PACK_MAGIC "ENCLPACK"

/* Create packs/<id>.pack with its header, O_EXCL; returns the fd (read-write). Not fsynced. */
int pack_create(int packs_dirfd, const uint8_t store_id[16], uint64_t pack_id);
/* Read and check the header of an open pack. -EBADMSG with detail. */
int pack_check_header(int fd, const uint8_t store_id[16], uint64_t pack_id);
/* "<016llx>.pack" into out (at least 32 bytes). */
void pack_name(char *out, size_t n, uint64_t pack_id);

/* ---- The store ----------------------------------------------------------------------------- */

struct dskey {
	uint64_t id;        /* dataset id */
	crypto_key *key;    /* unwrapped dataset key; owned */
};

struct store {
	int dirfd;                      /* the store directory */
	int lockfd;                     /* LOCK, flock()ed exclusively while open */
	int packs_dirfd;                /* packs/ */
	crypto_key *master;             /* owned; guarded memory */
	uint8_t store_id[16];           /* random, from the index; bound into dataset key AD */
	struct store_index ix;
	bool direct_io;                 /* open packs for reading with O_DIRECT */
	uint64_t pack_target;           /* rotate packs past this size */

	pthread_mutex_t lock;           /* protects the fields below up to import_lock */
	int *pack_fds;                  /* read fds by pack id, -1 = not open yet; owned */
	size_t pack_fds_len;
	struct dskey *dskeys;           /* cache of unwrapped dataset keys; owned */
	size_t dskeys_len, dskeys_cap;

	pthread_mutex_t import_lock;    /* held (trylock) for the life of one store_import */
	struct store_import *import;    /* the running import, for store_close() */
	uint64_t last_pack_id;          /* highest pack id committed (0: none); under lock */
	uint64_t last_pack_len;         /* its committed length */
	uint64_t pack_file_max;         /* highest pack id with a file in packs/; new ids go above */
	uint64_t next_dataset_id;       /* next id to assign */
	struct store_recovered recovered[STORE_RECOVERED_MAX]; /* dropped at open */
	size_t nrecovered;
	uint64_t recovered_more;        /* dropped beyond the array */
};

/* A read fd for pack_id, opened on first use and kept. Borrowed. -EUCLEAN missing pack. */
int store_pack_fd(struct store *st, uint64_t pack_id, int *ret_fd);
/* The dataset key (unwrapped on first use, cached). rec may be NULL: the dataset's record is then
 * found by id. Borrowed until store_close(). */
int store_dataset_key(struct store *st, uint64_t dsid, const struct dataset_rec *rec,
		      crypto_key **ret);
/* Put a freshly generated dataset key into the cache (takes ownership). */
int store_dataset_key_cache(struct store *st, uint64_t dsid, crypto_key *key);
/* Called by store_import_free() to release the import lock. */
void store_import_done(struct store *st);
