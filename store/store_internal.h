/* store internals shared by the store/ sources. Not a public header: nothing outside store/ includes it. */
#pragma once

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <rocksdb/c.h>

#include "common/common.h"
#include "common/err.h"
#include "store/keyring.h"
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

/* Index format 3: sealed values, keyed-hash name keys, every erasable key in the key ring
 * (docs/FORMAT.md "Index", 3.7). Formats 1 (clear values) and 2 (dataset keys wrapped in the
 * index) are only read by the upgrade (store/upgrade.c). */
#define STORE_FORMAT_VERSION 3u
#define STORE_FORMAT_V2 2u
#define STORE_FORMAT_V1 1u
#define VERSION_PENDING 1u
#define VERSION_COMMITTED 2u
/* Format 3: an erased version's tombstone, sealed under the dataset's record key, so that the
 * versions 1..latest stay accounted for after one of them is erased. */
#define VERSION_ERASED 3u

/* Key lengths. */
#define VKEY_LEN 12           /* dataset id + version */
#define IKEY_LEN 20           /* + ino */
#define DKEY_PREFIX_LEN 20    /* dataset id + version + parent; the name hash follows */
#define DKEY_LEN (DKEY_PREFIX_LEN + CRYPTO_NAME_HASH_LEN)
#define DSKEY_LEN CRYPTO_NAME_HASH_LEN  /* datasets: keyed hash of the name */
/* Digest of a directory's entries, in its sealed inode record. */
#define DIR_DIGEST_LEN 16
/* A version's manifest: BLAKE2b-256 over all of its records (docs/FORMAT.md "Manifest"). */
#define MANIFEST_LEN STORE_MANIFEST_LEN
/* Longest plaintext of an index record other than a policy record. */
#define REC_PLAIN_MAX 512
#define PACKKEY_LEN 13        /* "pack/" + be64 pack id */
#define MOVEKEY_LEN 21        /* "move/" + object id: where the garbage collector moved it */
#define MOVE_PLAIN_LEN 17     /* u8 record version 1 || u64 LE pack id || u64 LE offset */
#define META_PACK_MAX "pack_max"   /* u64 LE: the highest pack id ever used */

struct store_index {
	rocksdb_t *db;
	rocksdb_options_t *opts;
	rocksdb_options_t *cf_opts[CF_COUNT];
	rocksdb_column_family_handle_t *cf[CF_COUNT];
	rocksdb_readoptions_t *ro;
	rocksdb_writeoptions_t *wo_sync;    /* sync = true: commits */
	rocksdb_writeoptions_t *wo_async;   /* sync = false: pending records, ordered in the WAL */
	_Atomic uint64_t gets;              /* index_get() calls: store_index_reads() */
	/* A secondary opens its index again when the primary deleted a WAL its memtables may hold
	 * records of (index_refresh()): shared by every use of db and cf (index_get(),
	 * index_iter() to index_iter_close(), index_sequence()), exclusive for the swap. Never
	 * taken exclusively by a thread that holds another lock. */
	pthread_rwlock_t swap_lock;
	bool swap_lock_init;
	char *path, *secondary;             /* a secondary: what index_refresh() opens again */
	/* A secondary: the oldest WAL number whose records its memtables may hold (UINT64_MAX:
	 * none seen yet). Under swap_lock exclusively, or by the one thread that catches up. */
	uint64_t wal_floor;
	uint64_t reopens;                   /* index_refresh() reopens (the tests read it) */
};

/* What the index stores about a dataset (the public info plus its wrapped key). */
struct dataset_rec {
	struct store_dataset_info info;  /* info.latest_version: the newest number, erased or not */
	uint8_t wrapped_key[CRYPTO_WRAPPED_KEY_LEN];  /* format 2 only: dataset key under master */
};

struct version_rec {
	struct store_version_info info;   /* info.manifest: all zero while PENDING */
	uint32_t state;   /* VERSION_PENDING or VERSION_COMMITTED */
};

/* A directory entry as sealed in format 2: the real name travels inside the value. */
struct dirent_rec {
	uint64_t ino;
	uint32_t type;                       /* enum store_inode_type */
	char name[STORE_NAME_MAX + 1];
};

int index_open(struct store_index *ix, const char *path, bool create);
/* The same, as a read-only RocksDB secondary of the index at path when secondary (its own local
 * directory, for its info log and its view of the primary's files) is not NULL. */
int index_open_secondary(struct store_index *ix, const char *path, bool create,
			 const char *secondary);
/* A secondary: read what the primary has written since (MANIFEST and WAL); the latest sequence
 * number it now sees into *ret_seq. -EIO with detail; -ESTALE when the primary deleted, before
 * or during it, a WAL this secondary's memtables may hold records of (index_refresh(), then
 * again). */
int index_catch_up(struct store_index *ix, uint64_t *ret_seq);
/* A secondary whose memtables may hold records of a WAL the primary has deleted (it flushed
 * them, and may since have compacted away what deleted them: RocksDB's secondary keeps such
 * records in its active memtable and reads them before the files) is opened again, which
 * starts with empty memtables and the primary's live WALs. Called with no other lock held (it
 * waits for every reader). 0 (nothing to do on a primary), or -EIO with detail (the old view
 * stays). */
int index_refresh(struct store_index *ix);
/* The latest sequence number the index holds. */
uint64_t index_sequence(struct store_index *ix);
void index_close(struct store_index *ix);

/* Get a value: 0 and a malloc'd copy in *ret_val (caller frees), -ENOENT, or -EIO. */
int index_get(struct store_index *ix, enum store_cf cf, const void *key, size_t klen,
	      char **ret_val, size_t *ret_len);
/* Write a batch with the sync or async options. -EIO with detail. */
int index_write(struct store_index *ix, rocksdb_writebatch_t *wb, bool sync);

/* An iterator over cf (index_iter_close() lets it go): the index is not opened again under
 * it. */
rocksdb_iterator_t *index_iter(struct store_index *ix, enum store_cf cf);
/* Destroy an iterator of index_iter() and return r; if r is 0 and the iteration stopped on a read
 * error, that error instead (-EIO with detail "index: <what>: ..."). */
int index_iter_close(struct store_index *ix, rocksdb_iterator_t *it, int r, const char *what);

void vkey(uint8_t out[VKEY_LEN], uint64_t dsid, uint32_t ver);
void ikey(uint8_t out[IKEY_LEN], uint64_t dsid, uint32_t ver, uint64_t ino);
/* Format 1 directory entry key, name in clear (the upgrade reads these). Returns the key length,
 * DKEY_PREFIX_LEN + strlen(name). out holds DKEY_PREFIX_LEN + STORE_NAME_MAX. */
size_t dkey_v1(uint8_t *out, uint64_t dsid, uint32_t ver, uint64_t parent, const char *name);
/* Format 2 directory entry key: the prefix, then the keyed hash (the dataset's name key) of
 * be32 version || be64 parent || name, so that one name in two directories or versions does not
 * give the same key. */
void dkey(const crypto_key *name_key, uint8_t out[DKEY_LEN], uint64_t dsid, uint32_t ver,
	  uint64_t parent, const char *name, size_t nlen);
/* The same key, with the name key made a crypto_mac_key (the importer: one compression a name). */
void dkey_mk(const crypto_mac_key *name_mk, uint8_t out[DKEY_LEN], uint64_t dsid, uint32_t ver,
	     uint64_t parent, const char *name, size_t nlen);
/* Format 2 dataset key: the keyed hash of the name under the store's name key. */
void dskey_hash(const crypto_key *name_key, const char *name, uint8_t out[DSKEY_LEN]);
void packkey(uint8_t out[PACKKEY_LEN], uint64_t pack_id);
void movekey(uint8_t out[MOVEKEY_LEN], const uint8_t object_id[CRYPTO_OBJECT_ID_LEN]);

/* Plaintext record codecs. Encoders append to b (capped) and write record version 2; decoders
 * return -EBADMSG for a malformed record and accept record version 1 (format 1, clear values, only
 * met by the upgrade) where noted. */
int dataset_rec_encode(const struct dataset_rec *r, struct buf *b);
/* Format 3 (record version 3): no wrapped key, the dataset key is in the key ring. */
int dataset_rec_encode_v3(const struct dataset_rec *r, struct buf *b);
/* v2 records carry the name; for v1 records the name is the key, passed as v1_name (else NULL). */
int dataset_rec_decode(const char *v1_name, const void *v, size_t n, struct dataset_rec *ret);
int version_rec_encode(const struct version_rec *r, struct buf *b);
int version_rec_decode(const void *v, size_t n, struct version_rec *ret);
/* Directories carry the digest of their entries (dir_digest, DIR_DIGEST_LEN bytes, v2 only;
 * NULL when decoding a v1 record or when the caller does not want it). */
int inode_encode(const struct store_inode *ino, const uint8_t *dir_digest, struct buf *b);
int inode_decode(uint64_t ino, const void *v, size_t n, struct store_inode *ret,
		 uint8_t *ret_dir_digest);
int dirent_rec_encode(const struct dirent_rec *d, struct buf *b);
int dirent_rec_decode(const void *v, size_t n, struct dirent_rec *ret);
/* Format 1 directory entry value (9 bytes, no record version). */
int dirent_decode_v1(const void *v, size_t n, uint64_t *ret_ino, uint32_t *ret_type);
/* One entry's contribution to its directory's digest: keyed BLAKE2b-128 (the dataset's name key)
 * of ino, type and name; a directory's digest is the XOR over its entries. */
void dirent_digest_add(const crypto_key *name_key, uint8_t digest[DIR_DIGEST_LEN], uint64_t ino,
		       uint32_t type, const char *name, size_t nlen);
/* The same, with the name key made a crypto_mac_key. */
void dirent_digest_add_mk(const crypto_mac_key *name_mk, uint8_t digest[DIR_DIGEST_LEN],
			  uint64_t ino, uint32_t type, const char *name, size_t nlen);

/* ---- The seal layer (index.c). docs/FORMAT.md "Sealed values". ------------------------------ */

/* A value in format 2 is `clear || seal(key, ad, plaintext)`, where clear is a short prefix kept in
 * clear (the state byte of a version record, so recovery needs no key) and ad is
 * "ENCLIDX2" || u8 column family || be16 key length || key || clear. */
/* The clear prefix: a version record's state byte, a format 3 dataset record's be64 id. */
#define SEAL_CLEAR_MAX 8
#define SEAL_AD_MAX (8 + 1 + 2 + STORE_POLICY_KEY_MAX + SEAL_CLEAR_MAX)
/* Seal the plaintext pt (n bytes) as the value of key in cf, appending clear and the sealed bytes
 * to out. -E2BIG past out's cap, -EIO. */
int index_seal(const crypto_key *key, enum store_cf cf, const void *k, size_t klen,
	       const void *clear, size_t clen, const void *pt, size_t n, struct buf *out);
/* Open the value v (n bytes) of key k in cf, whose first clen bytes are clear, into out (cap
 * bytes); the plaintext length into *ret_len. -EBADMSG: too short, too long, or it does not
 * authenticate here (moved, copied, edited or sealed under another key). */
int index_unseal(const crypto_key *key, enum store_cf cf, const void *k, size_t klen, size_t clen,
		 const void *v, size_t n, uint8_t *out, size_t cap, size_t *ret_len);

/* The version record of (dsid, ver), unsealed with the version's seal key (format 2: the
 * dataset's), or for an ERASED tombstone with tomb (format 3: the dataset's record key). A key
 * that is NULL: a PENDING record is returned by its clear state alone (zero info), any other
 * is -EBADMSG. -ENOENT. */
int index_version_get(struct store_index *ix, const crypto_key *seal, const crypto_key *tomb,
		      uint64_t dsid, uint32_t ver, struct version_rec *ret);
/* The clear state byte of a version record value; -EBADMSG if it is not a valid one. */
int version_value_state(const void *v, size_t n, uint32_t *ret_state);

/* True for a valid path component: 1..STORE_NAME_MAX bytes, no '/', not "." or "..". */
bool store_name_valid(const char *name, size_t len);

/* ---- Associated data of wrapped keys (store.c). docs/FORMAT.md "Key wrapping". -------------- */

/* "ENCLDSK1" || store id || be64 dataset id || u8 name length || name */
#define DATASET_KEY_AD_MAX (8 + 16 + 8 + 1 + STORE_DATASET_NAME_MAX)
/* Format 2: "ENCLOBK1" || be64 dataset id || object id || be32 alg || be32 chunk size ||
 * be64 size (48 bytes). Format 3: "ENCLOBK2" || be64 dataset id || be32 version || the rest
 * (52 bytes): the wrapping is under the version's key and names the version. */
#define OBJECT_KEY_AD_MAX 64
/* A group member's (docs/FORMAT.md 4.10): "ENCLGRK1" || be64 dataset id || be32 version ||
 * group object id || be32 alg || be32 chunk size || be64 group size || be32 member offset ||
 * be32 member length || be16 member number || be16 members (64 bytes): the wrapping names the
 * member's place in its group. */
#define GROUP_KEY_AD_LEN 64
/* Returns the length of the AD written to out. */
size_t dataset_key_ad(const uint8_t store_id[16], uint64_t dsid, const char *name,
		      uint8_t out[DATASET_KEY_AD_MAX]);
/* Returns the length of the AD written to out, for a store of `format`. */
size_t object_key_ad(unsigned format, uint64_t dsid, uint32_t version,
		     const struct store_inode *ino, uint8_t out[OBJECT_KEY_AD_MAX]);

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
/* The plaintext bytes of the object an inode's extent names: the file's own size, or for a
 * tiny file the size of its group (docs/FORMAT.md 4.10). */
static inline uint64_t inode_object_size(const struct store_inode *ino)
{
	return ino->ext.grouped ? ino->ext.group_size : ino->size;
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

/* An open pack, shared by the store's table and by every object open in it, so that a pack the
 * garbage collector retires stays readable, unlinked, for the handles still open in it, and is
 * closed (its space freed) when the last one closes. */
struct pack_handle {
	int fd;             /* read fd; owned */
	unsigned refs;      /* the table's (while the pack is committed) and each object's; st->lock */
};

/* A committed pack: one with a committed length in the index (meta pack/<id>). */
struct pack_slot {
	uint64_t id;
	uint64_t len;               /* committed length */
	struct pack_handle *h;      /* open for reading, or NULL until first use; a reference */
};

struct dskey {
	uint64_t id;        /* dataset id */
	crypto_key *key;    /* unwrapped dataset key (format 3: a copy of the ring's); owned */
	crypto_key *seal;   /* format 2: its index seal key (versions, inodes, dirents);
			       format 3: its record key Kdr at rgen (datasets record,
			       tombstones), NULL when this node lacks the generation; owned */
	crypto_key *name;   /* format 2: its name-hash key (dirent keys, directory digests);
			       format 3: NULL; owned */
	struct dataset_rec rec;   /* the record, once read and checked (latest verified) */
	uint32_t live_latest;     /* with rec: the newest version that is not erased */
	bool have_rec;
};

/* Format 3: the keys of one committed version, from the key ring. Shared by the cache and by
 * every lookup that holds them (store_version_keys() to store_keys_put()): dropping them from the
 * cache (an erasure, a node's catch-up, a failed commit) takes the entry out and drops the
 * cache's reference, and whoever lets go of the last one wipes and frees the keys. So a lookup
 * never unseals with a key wiped, or reused, under it, and an erased version's keys live no
 * longer than the lookups that were running when it was erased. */
struct vkey_ent {
	uint64_t dsid;
	uint32_t ver;
	uint32_t refs;      /* the cache's (until dropped) and one per holder; under st->lock */
	bool dropped;       /* out of the cache: no new holder; under st->lock */
	crypto_key *wrap;   /* Kv (a copy of the ring's): object keys are wrapped under it; owned */
	crypto_key *seal;   /* Kvs: its versions, inodes, dirents values; owned */
	crypto_key *name;   /* Kvn: its dirent names, directory digests; owned */
};

/* Directories whose every entry was read, authenticated, counted and digested: a lookup that
 * misses in one of them is a true "no such entry". Direct-mapped, overwritten on collision. */
#define VERIFIED_DIRS 4096
struct verified_dir {
	uint64_t dsid;
	uint64_t ino;
	uint32_t version;   /* 0: empty slot */
};

/* The index keys of one version (format 2: of its dataset). From store_version_keys(): held
 * until store_keys_put(), even across the version's erasure (format 2: borrowed until
 * store_close(); a format 2 store is never erased). */
struct ds_keys {
	const crypto_key *seal;   /* seals its versions, inodes and dirents values */
	const crypto_key *name;   /* hashes its entry names, keys its directory digests */
	const crypto_key *wrap;   /* wraps its object keys */
	/* name made a crypto_mac_key, by a caller that checks many entries (version_scan());
	 * NULL: name is used as it is. */
	const crypto_mac_key *name_mk;
	/* The reference store_version_keys() took (format 3), dropped by store_keys_put(); NULL:
	 * nothing held. */
	struct vkey_ent *held;
};

/* Where the dataset check can meet a commit of the same dataset (store_test_set_race_hook). */
enum store_race_point {
	STORE_RACE_REC_READ,      /* a dataset record read (a scan's snapshot, the cache or the
				     index), not checked yet (dataset_verify) */
	STORE_RACE_REC_CHECKED,   /* a record checked against its versions, not yet cached */
	STORE_RACE_VERSION_KEYS,  /* a version's keys looked up (none: not committed yet), its
				     record not read yet (version_get_any) */
	STORE_RACE_KEYS_HELD,     /* a version's keys held, a record of it read, not unsealed
				     yet (store_dir_lookup); or its object key not unwrapped
				     yet (store_object_open) */
	STORE_RACE_ERASE_BATCH,   /* an erasure's index batch written (a whole dataset's: every
				     other dataset re-keyed under the next name key), its keys
				     not destroyed yet, no node given new keys (store_erase) */
};

struct store {
	int dirfd;                      /* the store directory */
	int lockfd;                     /* LOCK, flock()ed exclusively while open */
	int packs_dirfd;                /* packs/ */
	crypto_key *master;             /* owned; guarded memory */
	crypto_key *ix_seal;            /* store-wide index seal key Ks (format 2: datasets;
					   policy and move records at generation 0); owned */
	crypto_key *ix_name;            /* store-wide name-hash key (dataset keys): format 3 Kn
					   of record key generation rgen; NULL when this node
					   lacks that generation's key; owned. Replaced only with
					   rekey_lock held exclusively, or by a whole-dataset
					   erasure with names_lock held exclusively (retired) */
	/* Held shared by whoever seals or unseals a record under the record key generation
	 * (dataset records, tombstones, move records: docs/FORMAT.md 3.7) from reading the
	 * generation's keys to writing or reading the record; exclusively by the node removal's
	 * rotation while it re-keys them and by a node's catch-up while it follows one, so that
	 * nobody pairs an old key with a new record. Taken before st->lock, never under it.
	 * Reader-preferring: a reader may take it again while holding it. */
	pthread_rwlock_t rekey_lock;
	/* Held shared by whoever hashes a dataset name with ix_name to read its record, and for a
	 * whole scan of the dataset records; exclusively by a whole-dataset erasure from the batch
	 * that moves every other record to the next name key until ix_name is that key: no reader
	 * pairs one name key with records stored under the other (a scan's snapshot before the
	 * batch, the key after it). Taken after rekey_lock, before st->lock. Reader-preferring. */
	pthread_rwlock_t names_lock;
	/* Called on every integrity failure found in the index (store_set_integrity_hook). */
	void (*integrity_hook)(void *ctx, uint64_t dsid, uint32_t version, const char *what);
	/* Called after every commit of the key ring (store_set_ring_hook). */
	void (*ring_hook)(void *ctx);
	void *ring_ctx;
	/* A node: called by store_catch_up() when it saw a change (store_set_catch_up_hook). */
	void (*catch_up_hook)(void *ctx);
	void *catch_up_ctx;
	void *integrity_ctx;
	/* Tests only (store_test_set_race_hook): called at a point where another thread's commit
	 * may land, so that a test can make it land there. NULL otherwise. */
	void (*race_hook)(void *ctx, enum store_race_point where, uint64_t dsid);
	void *race_ctx;
	uint64_t integrity_failures;    /* found since the open (atomic) */
	uint8_t store_id[16];           /* random, from the index; bound into dataset key AD */
	struct store_index ix;
	unsigned format;                /* STORE_FORMAT_VERSION, or STORE_FORMAT_V1 (upgrade only) */
	bool direct_io;                 /* open packs for reading with O_DIRECT */
	bool secondary;                 /* a node's read-only RocksDB secondary: never writes */
	struct store_lease *lease;      /* the primary's lease, when opened with one; owned */
	uint64_t pack_target;           /* rotate packs past this size */

	pthread_mutex_t lock;           /* protects the fields below up to import_lock */
	struct pack_slot *packs;        /* the committed packs, by ascending id; owned */
	size_t npacks, packs_cap;
	struct dskey *dskeys;           /* cache of unwrapped dataset keys; owned */
	size_t dskeys_len, dskeys_cap;
	struct vkey_ent **vkeys;        /* format 3: cache of version keys; one reference each */
	size_t vkeys_len, vkeys_cap;
	size_t vkeys_live;              /* vkey_ents allocated: cached, or dropped and still held */
	struct keyring *ring;           /* format 3: keys/ring as last written; owned */
	uint64_t rgen;                  /* format 3: the record key generation (meta record_key)
					   ix_name, dskeys' seals and mv_seal are for */
	crypto_key *mv_seal;            /* the key move records are sealed under at rgen (Ks at 0,
					   else Kp of rgen); NULL: not held here; owned */
	int keys_dirfd;                 /* keys/ */
	/* Name keys replaced by whole-dataset erasures: a lookup running then may still hold one,
	 * so they are freed at store_close(), not at once. */
	crypto_key *retired[8];
	size_t nretired;
	uint64_t rec_gen;               /* raised when a catch-up drops the cached records */
	uint64_t seen_seq;              /* a secondary: the sequence number last caught up to */
	struct verified_dir *vdirs;     /* VERIFIED_DIRS slots; owned */

	pthread_mutex_t import_lock;    /* held (trylock) for the life of one store_import, and
					   by the garbage collector while it runs */
	bool gc_running;                /* the collector holds import_lock (for the message) */
	struct store_import *import;    /* the running import, for store_close() */
	bool import_done;               /* it has committed: only its release is left (atomic) */
	/* Index batches kept from one import for the next, empty, under import_lock (import.c
	 * batch_take()/batch_keep()): a batch's buffer grows by doubling past IMPORT_BATCH_BYTES,
	 * and fresh memory costs a page fault per 4 KiB. Owned; freed at store_close(). */
	rocksdb_writebatch_t *import_wb[2];
	/* Memory the running import carves its largest buffers and tables from (import.c
	 * mem_take()), kept mapped from one import to the next so that pages one import touched
	 * are not faulted in again by the next (issue 16 point 5: a page's first touch costs about
	 * 11 us in this VM; a re-import of 20,000 files faulted some 7 MB of tables into fresh
	 * memory while the first import's 8 MiB of write buffers had just been unmapped). Every
	 * import wipes what it wrote there before it lets go of import_lock, so between imports it
	 * holds only zeros. Mapped at the first import (IMPORT_MEM_BYTES, untouched pages cost
	 * nothing), unmapped at store_close(); under import_lock. */
	uint8_t *import_mem;
	size_t import_mem_hw;           /* the most bytes of it any import carved */
	/* Index writes no node needs to hear of at once: an import's batches of records of a
	 * version still PENDING (nodes see a version only once it is committed, and the commit is
	 * its own write). The import's writer holds silent_lock across each such write and the
	 * count's update, so store_sequence_visible() reads the two consistently. */
	pthread_mutex_t silent_lock;
	uint64_t silent_seqs;           /* sequence numbers those writes used; under silent_lock */
	uint64_t last_pack_id;          /* highest pack id committed (0: none); under lock */
	uint64_t last_pack_len;         /* its committed length */
	uint64_t pack_file_max;         /* highest pack id ever used (files in packs/, meta
					   pack_max); new ids go above, so an id is never reused */
	uint64_t next_dataset_id;       /* next id to assign */
	struct store_recovered recovered[STORE_RECOVERED_MAX]; /* dropped at open */
	size_t nrecovered;
	uint64_t recovered_more;        /* dropped beyond the array */
};

/* A reference to the read handle of the committed pack pack_id, opened on first use and kept by
 * the store until the pack is retired; release it with store_pack_unref(). -EUCLEAN: not a
 * committed pack (missing, foreign, retired by the garbage collector). */
int store_pack_ref(struct store *st, uint64_t pack_id, struct pack_handle **ret);
/* Drop a reference; the last one closes the pack. NULL is fine. */
void store_pack_unref(struct store *st, struct pack_handle *h);
/* Record pack id as committed with length len (new or grown). Under st->lock. -ENOMEM. */
int store_pack_commit_locked(struct store *st, uint64_t id, uint64_t len);
/* Forget a committed pack (the garbage collector removed its record): its handle is dropped by
 * the table and closes with the last object open in it. Under st->lock. */
void store_pack_retire_locked(struct store *st, uint64_t id);
/* The committed length of pack id; false if it is not committed. Under st->lock. */
bool store_pack_committed_locked(struct store *st, uint64_t id, uint64_t *ret_len);
/* Where an object is now: its inode's pack and offset, unless the garbage collector moved it,
 * in which case its move record says (docs/FORMAT.md "Garbage collection"). -EUCLEAN: the pack
 * is not committed and no move record names the object; -EBADMSG: a move record that does not
 * authenticate. */
int store_object_locate(struct store *st, const struct store_extent *ext, uint64_t *ret_pack,
			uint64_t *ret_offset);
/* The dataset key (unwrapped on first use, cached). rec may be NULL: the dataset's record is then
 * found by id. Borrowed until store_close(), or in format 3 until the dataset's erasure, which
 * the caller excludes (it holds import_lock, as an import does). */
int store_dataset_key(struct store *st, uint64_t dsid, const struct dataset_rec *rec,
		      crypto_key **ret);
/* Format 2: the dataset's index keys (derived on first use, cached). rec as for
 * store_dataset_key(). */
int store_dataset_keys(struct store *st, uint64_t dsid, const struct dataset_rec *rec,
		       struct ds_keys *ret);
/* The keys of version ver of dataset dsid: format 3 from the key ring (-ENOENT: no key, the
 * version is erased or never committed), format 2 the dataset's. Cached; held by the caller
 * until store_keys_put() on every path (an erasure meanwhile does not wipe them under it). */
int store_version_keys(struct store *st, uint64_t dsid, uint32_t ver, struct ds_keys *ret);
/* The same for a read of the version's records: -ENOENT also on a node that holds no key for the
 * version because it was erased (as on the primary), -ENOKEY when it holds none yet. */
int store_version_keys_read(struct store *st, uint64_t dsid, uint32_t ver, struct ds_keys *ret);
/* Let go of what store_version_keys() gave (k zeroed); the last holder of an erased version's
 * keys wipes and frees them. A zeroed k (nothing held) is fine. */
void store_keys_put(struct store *st, struct ds_keys *k);
/* Tests: the version keys dropped from the cache that a holder still holds (0 whenever no lookup
 * runs: a reference never let go keeps an erased version's keys in memory). */
size_t store_test_keys_orphaned(struct store *st);
/* Whether the version of k was erased (its keys dropped from the cache) since they were taken:
 * a record of it found missing meanwhile is then "no such entry", not a sign of tampering. */
bool store_keys_dropped(struct store *st, const struct ds_keys *k);
/* Format 3: the dataset's record key Kdr (from the ring; -ENOENT none). Borrowed: only for a
 * caller that excludes the dataset's erasure, which frees it (it holds import_lock, as an
 * import and an erasure do, or names_lock shared from the record's read to its unseal, as
 * dataset_unseal()'s callers do). Others take a copy (version_get_any()). */
int store_dataset_rec_key(struct store *st, uint64_t dsid, const crypto_key **ret);
/* Format 3: put a version's key (and a new dataset's) into the ring and write it, before the
 * commit batch that makes the version exist; *ret_gen the ring's new generation, for meta
 * "ring" in that batch. Takes ownership of kv and kd (kd may be NULL). */
int store_ring_add(struct store *st, uint64_t dsid, uint32_t ver, crypto_key *kv, crypto_key *kd,
		   uint64_t *ret_gen);
/* Format 3: take back what store_ring_add() added, when the commit batch failed. */
void store_ring_forget(struct store *st, uint64_t dsid, uint32_t ver, bool dataset_too);
/* Take import_lock for an import, an erasure or a collection (import.c): at once, or, when its
 * holder is an import that has committed and is only being released (the daemon replies to
 * import.commit before it frees the import), once it is, a second at most. false: held (busy). */
bool store_import_lock_take(struct store *st);
/* Format 3: load keys/ring at open (-ESTALE older than the index's meta "ring"). */
int store_ring_open(struct store *st);
/* After a commit of the key ring, outside st->lock: the ring hook (store_set_ring_hook). */
void store_ring_committed(struct store *st);
/* Drop the cached keys of (dsid, ver), or of the whole dataset when ver is 0. st->lock held. */
void store_keys_drop_locked(struct store *st, uint64_t dsid, uint32_t ver);
/* Finish an erasure a crash interrupted after its index batch (store/erase.c). */
int store_erase_recover(struct store *st);
/* u64 LE: the record key generation R (docs/FORMAT.md 3.7): dataset names and records,
 * tombstones and move records are keyed with the key ring's POLICY entry R (absent: 0, the
 * derivations from Kr, Kd and Ks alone, as before the first node removal that moved them). */
#define META_RECORD_GEN "record_key"
/* rekey_lock shared (a no-op in the thread holding it exclusively). */
void store_rekey_rdlock(struct store *st);
void store_rekey_rdunlock(struct store *st);
/* Format 3, rekey_lock shared: a dataset's record key at the generation in use, from its key kd
 * (for a new dataset, whose key is not in the ring yet); the name key at the generation in use,
 * from a name key kr (an erasure's next one). Owned by the caller. -ENOKEY: this node lacks the
 * generation's key. */
int store_dataset_rec_key_of(struct store *st, const crypto_key *kd, crypto_key **ret_kdr);
int store_names_key_of(struct store *st, const crypto_key *kr, crypto_key **ret_kn);
/* The same with st->lock held. */
int store_names_key_of_locked(struct store *st, const crypto_key *kr, crypto_key **ret_kn);
/* rekey_lock shared: the key move records are sealed under, borrowed until it is released.
 * -ENOKEY: this node lacks the generation's key. */
int store_move_key(struct store *st, const crypto_key **ret);
#define META_RING "ring"
#define META_ERASE "erase"
/* u64 LE: the generation of the key the policy records are sealed under (none: 0, Ks). */
#define META_POLICY_GEN "policy_key"
/* store_policy_rekey() up to step steps (1: the new key in the ring; 2: the policy records
 * resealed and the dataset names, dataset records, tombstones and move records re-keyed, in one
 * batch; 3: the old keys dropped), for the crash tests: stopping early is what a crash leaves. */
int policy_rekey_steps(struct store *st, unsigned steps);
/* At the primary's open: finish a policy key rotation a crash interrupted. */
int policy_rekey_recover(struct store *st);
/* Drop every POLICY entry of the ring but generation gen's, and commit it. */
int policy_keys_prune(struct store *st, uint64_t gen);
/* Derive a dataset's index keys from its key. Both owned by the caller. */
int dataset_index_keys(const crypto_key *dkey, crypto_key **ret_seal, crypto_key **ret_name);
/* The key of a dataset's content hashes (struct store_extent.content_mac; docs/FORMAT.md "Shared
 * objects"), derived from its dataset key: one dataset's hashes say nothing about another's, and
 * none can be computed for a guessed file without the key. Owned by the caller. */
int dataset_content_key(const crypto_key *dkey, crypto_key **ret_key);
/* Put a freshly generated dataset key into the cache (takes ownership), with its committed
 * record, which replaces any cached one. */
int store_dataset_key_cache(struct store *st, uint64_t dsid, crypto_key *key,
			    const struct dataset_rec *rec);
/* After a commit: the dataset's record as committed (its new latest version). */
void store_dataset_rec_update(struct store *st, const struct dataset_rec *rec);
/* Report an index integrity failure: set the detail, call the hook, return -EBADMSG. */
__attribute__((format(printf, 4, 5))) int store_integrity(struct store *st, uint64_t dsid,
							   uint32_t version, const char *fmt, ...);
/* The version's manifest computed from the index (docs/FORMAT.md "Manifest"), checking every
 * record on the way. */
int store_manifest_compute(struct store *st, uint64_t dsid, uint32_t version,
			   uint8_t ret[static STORE_MANIFEST_LEN]);
/* Read every record of a committed version, checking each (as store_manifest_compute()), and call
 * fn (if not NULL) for each file inode in ascending inode order; a non-zero return from fn stops
 * the scan and is returned. The manifest computed from the records into ret: the caller compares
 * it with the version record's to know that no record was removed. */
int store_version_scan(struct store *st, uint64_t dsid, uint32_t version,
		       int (*fn)(void *ctx, const struct store_inode *file), void *ctx,
		       uint8_t ret[static STORE_MANIFEST_LEN]);
/* As store_version_scan(), fn also given the file's place: its directory's inode number and its
 * name (nlen bytes, not NUL-terminated; borrowed for the call). */
int store_version_scan_named(struct store *st, uint64_t dsid, uint32_t version,
			     int (*fn)(void *ctx, const struct store_inode *file, uint64_t parent,
				       const char *name, size_t nlen),
			     void *ctx, uint8_t ret[static STORE_MANIFEST_LEN]);
/* The manifest of a version from its parts: the dataset, the counts and the running hashes of the
 * file and directory leaves, each leaf added with manifest_leaf() in ascending inode order. */
void manifest_leaf(crypto_hasher *h, uint64_t ino, uint64_t parent, const char *name, size_t nlen,
		   const uint8_t *rec, size_t reclen);
void manifest_finish(const char *dsname, uint64_t dsid, uint32_t version, uint64_t files,
		     uint64_t dirs, uint64_t bytes, crypto_hasher *files_h, crypto_hasher *dirs_h,
		     uint8_t ret[static STORE_MANIFEST_LEN]);
/* store_open() with flags: STORE_OPEN_V1 opens a format 1 index as it is (no recovery), for
 * the upgrade. */
#define STORE_OPEN_V1 1u
/* ... and STORE_OPEN_V2 a format 2 index (dataset keys in the index), for the upgrade to 3. */
#define STORE_OPEN_V2 2u
int store_open_ex(const char *dir, const crypto_secret *pass, const struct store_open_options *opts,
		  unsigned flags, struct store **ret_store);
/* The store-wide index keys, derived from the master key and the store id. Both owned by the
 * caller. */
int store_index_keys(const crypto_key *master, const uint8_t store_id[16], crypto_key **ret_seal,
		     crypto_key **ret_name);
/* Tests only: fn(ctx, where, dsid) is called at each point `where` of the dataset check, with
 * no store lock held (rekey_lock at most shared), so that the test can commit an import of the
 * same dataset right there (a race made deterministic). NULL: none. */
void store_test_set_race_hook(struct store *st,
			      void (*fn)(void *ctx, enum store_race_point where, uint64_t dsid),
			      void *ctx);
/* A point where a commit or an erasure may land (tests make it land there): one load when no
 * hook is set. */
static inline void store_race_point(struct store *st, enum store_race_point where, uint64_t dsid)
{
	if (st->race_hook)
		st->race_hook(st->race_ctx, where, dsid);
}
/* The dataset record stored under name, unsealed (the cache first). -ENOENT, -EBADMSG. */
int index_dataset_get(struct store *st, const char *name, struct dataset_rec *ret);
/* Call fn for every dataset record, unsealed and checked (its name against its key), in key
 * order; a record that does not authenticate stops the scan with -EBADMSG (the garbage
 * collector must see every dataset, or none). */
int index_datasets_foreach(struct store *st,
			   int (*fn)(void *ctx, const struct dataset_rec *rec), void *ctx);
/* Finish or discard an interrupted upgrade (store/upgrade.c), before the index opens. */
int store_upgrade_recover(struct store *st);
/* The lease (store/lease.c), taken by store_open_ex() after the master key is unlocked and
 * before the index is opened (so before recovery writes anything); then, with the index open,
 * raised above the index's fence record and written there. */
int lease_acquire(struct store *st, unsigned lease_ms, unsigned settle_ms,
		  struct store_lease **ret_lease);
int lease_fence(struct store_lease *l);
/* The most files of the previous version an import keeps by their place (store/import.c,
 * stamp_lookup(); STAMPS_MAX): more are looked up in the index. Lowered by tests only. */
extern size_t import_stamps_max;
/* Tests only (store/import.c, store_import_add_claimed()): the helper threads that seal the
 * claimed files of a batch beside the caller's thread, -1 for the default (one fewer than the
 * encryption pool's threads: none on one CPU), else this many (0: the caller's thread alone);
 * import_claim_serial: every claimed file through the per-file path instead, the reference the
 * batched path must match; import_test_rewrap_fail: a path whose object key then does not unwrap
 * (-EBADMSG), on either path, as if its wrapping were damaged. */
extern int import_claim_helpers;
extern bool import_claim_serial;
extern const char *import_test_rewrap_fail;
/* Tests only (store/import.c): a -errno store_import_begin() fails with once everything is set
 * up (the tables of the version shared from carved and its scan started), before its PENDING
 * record; 0: none. */
extern int import_test_begin_fail;
/* Unmap the store's import memory (store_close(), after the import, if any, is freed). */
void store_import_mem_unmap(struct store *st);
/* Tests only: the bytes of the store's import memory (st->import_mem) that are not zero, and in
 * ret_used how many any import carved. Between imports both wipes and carving must leave it
 * zero: nothing of one import (plaintext, records, hashes) reaches the next. */
size_t store_import_mem_dirty(const struct store *st, size_t *ret_used);
