/* import: encrypt files into packs and commit them as a new dataset version.
 *
 * Protocol (docs/FORMAT.md "Commit protocol"):
 *   1. begin: a PENDING version record is written (async, ordered in RocksDB's WAL before any
 *      record of the version).
 *   2. each file: a fresh object key and id; chunks are read from the caller's fd, encrypted in
 *      place in a write buffer and appended to the pack through io_uring; the inode (with the
 *      object key wrapped under the dataset key) and the directory entry go into an index batch,
 *      which is written (async) whenever it passes IMPORT_BATCH_BYTES.
 *   3. commit: drain the writes, fdatasync every pack written, fsync packs/ if a pack was created,
 *      then one synchronous batch flips the version to COMMITTED and records the dataset, the
 *      packs' committed lengths and the counters. Only then does the version exist.
 * A crash anywhere before 3 completes leaves a PENDING version (removed at the next open) and
 * pack bytes past the committed length, which no record refers to; they are kept (see
 * scan_packs() in store.c for why) and later appends go after them. An abort in this process
 * cuts back exactly the bytes it appended, and removes the packs it created.
 *
 * Versions share unchanged files (docs/FORMAT.md "Shared objects"). Every object's inode record
 * carries a keyed hash of its plaintext (the dataset's content key, never a plain hash). From
 * begin on, the file inodes of the dataset's latest version are read (every record checked
 * against the version's manifest) into a table by content hash, on a thread of their own
 * (reuse_load()) that the first file waits for. A file whose size one of them has is hashed
 * first; if its hash is there, the new inode points at that object (same pack, offset, object
 * id) with the object key wrapped again for this version, and nothing is written. Any other file
 * is hashed as it is encrypted, in the same pass. The hash of a written object is always the one
 * of the bytes encrypted, never of an earlier read, so a file that changes between the two reads
 * cannot make a later version share the wrong object.
 *
 * Tiny files (docs/FORMAT.md 4.10): a file of at most STORE_TINY_MAX bytes read from a
 * descriptor is read whole into the open group (imp->grp); when the next one does not fit, or
 * at the end, the group is encrypted as one dense object under a fresh key and the records of its
 * members follow, each with its inode number given then (so files' records and manifest leaves
 * stay in ascending inode order) and its own wrapping of the group key. A tiny file that the
 * previous version holds as a member of a group waits in imp->shr_m until every member of that
 * group has turned up, and the group is then shared whole; if one does not, the members found
 * are copied into this version's group (share_break()), so that no version wraps the key of a
 * group holding a file it does not hold (an erasure of the other versions must destroy it).
 *
 * Memory is bounded by IMPORT_BUFS write buffers, the tag accumulator, the index batch cap and
 * the directory table (IMPORT_DIRS_MAX), the table of objects to share (IMPORT_REUSE_MAX), the
 * previous version's files kept by place (STAMPS_MAX), the files owed with their descriptor
 * (STORE_IMPORT_OWED_MAX) and two groups of tiny files (STORE_GROUP_MEMBERS_MAX names each),
 * whatever the size of the files. The tables of the version shared from, then the write buffers
 * and hbuf, are carved from memory the store keeps mapped between imports (st->import_mem,
 * IMPORT_MEM_BYTES, mem_take()) while it has room, so that a re-import does not fault in again
 * the pages the last import touched; each is wiped as far as it was written before the import
 * lets go of the store, which so holds only zeros between imports.
 *
 * Parallel encryption. The calling thread reads the source into the stream buffers and submits
 * the writes; a small pool of workers (one per online CPU, at most IMPORT_WORKERS_MAX; none on
 * one CPU) encrypts them. For an object of at least IMPORT_PAR_MIN bytes each chunk read into the
 * stream buffer is only noted in that buffer's job list; when the buffer is full it goes to the
 * pool instead of to io_uring, and once a worker has encrypted it in place the caller's thread
 * submits its write (several ready buffers in one io_uring_submit). Before the object's tags are
 * used (written after its data, or flushed every IMPORT_TAGACC bytes) the caller encrypts what is
 * left in the current buffer itself and waits until the pool holds nothing of the object, so a
 * buffer's jobs always belong to one object and the object key outlives every job that uses it.
 * Smaller objects are encrypted inline, as the pool's hand-off would cost more than it saves.
 * The bytes written are exactly those of the serial importer: the same layout, chunk by chunk.
 * Memory stays IMPORT_BUFS buffers: a buffer is filling, queued or being encrypted, being
 * written, or free, never copied.
 */
#include <dirent.h>
#include <sched.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store_internal.h"

#define IMPORT_BUFS 8u
#define IMPORT_BUF_MIN (1u << 20)
#define IMPORT_RING_DEPTH 16u
#define IMPORT_TAGACC (64u << 10)          /* tags held before a separate write: 4096 chunks */
/* Index batch size before an intermediate write. 1 MiB, not 4: a batch's buffer grows by
 * doubling, and every page of every copy is a page fault (issue 16: 7 % of the daemon's time in
 * a version 2 of unchanged files went to growing two 4 MiB batches). */
#define IMPORT_BATCH_BYTES (1u << 20)
#define IMPORT_DIRS_MAX (1u << 20)         /* directories per version */
#define IMPORT_DIR_ENTRIES_MAX (1u << 24)  /* names read from one source directory */
#define IMPORT_DEPTH_MAX 256u              /* source directory nesting */
#define IMPORT_PROGRESS_BYTES (8u << 20)   /* progress callback at least this often */
#define IMPORT_PACKS_MAX 4096u             /* packs one import may fill */
#define IMPORT_WORKERS_MAX 8u              /* encryption threads, whatever the CPU count */
#define IMPORT_PAR_MIN (256u << 10)        /* objects from this size are encrypted by the pool */
#define IMPORT_REUSE_MAX (1u << 22)        /* objects of the previous version a version may share */
#define IMPORT_HBUF (1u << 20)             /* read buffer for hashing a file before writing it */
#define REUSE_PREFIX 16u                   /* bytes of a content hash kept in the table */
#define REUSE_LOOKBACK 64u                 /* erased version numbers skipped to find one to share */
#define OWED_SLOTS (2u * STORE_IMPORT_OWED_MAX)  /* the owed set's table: at most half full */
#define STAMPS_MAX (1u << 20)              /* files of the previous version kept by their place */
/* The store's import memory (st->import_mem, mem_take()): room for the tables of a version of
 * some 25,000 files and the write buffers together; what does not fit is allocated as before.
 * Pages stay resident between imports only as far as an import touched them. */
#define IMPORT_MEM_BYTES (24u << 20)

#define CLAIM_STEP 8u                      /* claimed files a thread takes (and publishes) at a time */
#define CLAIM_SPIN_NS 200000               /* a thread spins this long for the other before it sleeps */

size_t import_stamps_max = STAMPS_MAX;
int import_claim_helpers = -1;
bool import_claim_serial;
const char *import_test_rewrap_fail;
int import_test_begin_fail;

/* An object of the previous version, by content hash (the rest of the hash is checked against its
 * inode record when it matches). */
struct reuse_ent {
	uint8_t mac[REUSE_PREFIX];
	uint64_t ino;       /* its inode in imp->reuse_version; 0: empty slot */
};

/* The object whose chunks the pool is encrypting. Lives in struct store_import; set by
 * write_object() before the object's first job and not changed until no job of it is left. */
struct enc_obj {
	const crypto_key *key;                 /* borrowed from write_object() for that time */
	uint8_t id[CRYPTO_OBJECT_ID_LEN];
	uint32_t alg;
	uint64_t gen;                          /* distinct per object: workers rekey when it moves */
};

/* One chunk of a buffer still to encrypt in place. */
struct enc_chunk {
	uint32_t pos;       /* offset in the buffer */
	uint32_t len;       /* plaintext bytes */
	uint64_t idx;       /* chunk index in its object */
	bool last;          /* the object's final chunk */
	uint8_t *tag;       /* where its tag goes: into imp->tagacc */
};

/* A write buffer: bytes for one contiguous pack range. */
struct wbuf {
	uint8_t *data;      /* STORE_ALIGN-aligned, imp->buf_size bytes; owned */
	size_t len;         /* bytes filled */
	uint64_t off;       /* pack offset of data[0] */
	bool busy;          /* submitted, completion not yet seen */
	size_t hw;          /* bytes from data[0] ever reserved: they may hold plaintext, wiped at
			       the end (only those: the rest was never touched) */
	/* The pool's part; pending and ready are under imp->pool_lock. */
	struct enc_chunk *jobs;  /* chunks to encrypt; owned, imp->jobs_cap entries (pool only) */
	unsigned njobs;          /* how many (a buffer holds chunks of one object only) */
	bool pending;            /* handed to the pool: neither reused nor written until done */
	bool ready;              /* encrypted by a worker; the caller's thread writes it next */
	int enc_err;             /* a worker's encryption failure, or 0 */
};

/* One encryption thread: its own chunk context, keyed for the last object it worked on. */
struct enc_worker {
	struct store_import *imp;   /* borrowed */
	pthread_t thread;
	crypto_chunk_ctx *cctx;     /* owned by the thread, freed by store_import_free() */
	uint64_t gen;               /* the enc_obj generation cctx is keyed for; 0: none */
};

/* A small file of a batch (store_import_add_files()), read whole and hashed by a helper thread
 * before the caller's thread imports it in order. */
struct pf_file {
	int fd;                      /* borrowed */
	uint64_t size;               /* as fstat said */
	uint8_t *data;               /* its slot in imp->stage: size + 1 bytes read */
	ssize_t got;                 /* what pread_full() returned */
	uint8_t mac[STORE_CONTENT_MAC_LEN];  /* the keyed content hash, when got == size */
};

/* What store_import_add_files() learnt of a file before importing it, so that its path is
 * looked up in the previous version once (stamp_find) and its head read only when needed. */
struct stamp_seen {
	int match;                   /* stamp_find(): enum stamp_match, or -errno */
	bool plain;                  /* this import's divert predicate saw the head, let it through */
	struct store_inode old;      /* the previous version's inode of the path, when matched */
};

/* A file of the previous version with a source stamp, by its place (stamp_lookup()): kept from
 * the scan at begin, which authenticated its entry and inode and checked the whole version
 * against its manifest, so that each path is not looked up and unsealed again. */
struct stamp_ent {
	uint64_t parent;             /* its directory's inode number there */
	uint32_t name_off;           /* its name in imp->stamp_names */
	uint8_t nlen;
	struct store_inode in;       /* its inode record */
};

/* One helper thread of the batch prefetch. */
struct pf_helper {
	struct store_import *imp;    /* borrowed */
	pthread_t thread;
	crypto_hasher *hash;         /* its own hash state; owned */
};

/* A tiny file waiting in the open group (docs/FORMAT.md 4.10): its records are written when the
 * group is, with the inode number it gets then (files' inode numbers stay in the order their
 * records and manifest leaves are written). */
struct grp_member {
	size_t dir;                          /* its parent: an index into imp->dirs */
	char *name;                          /* its name there; owned */
	uint32_t mode;
	int64_t mtime_ns;
	uint32_t off;                        /* where its plaintext starts in the group */
	uint32_t len;                        /* its size */
	uint8_t mac[STORE_CONTENT_MAC_LEN];  /* its keyed content hash */
	uint8_t stamp[STORE_CONTENT_MAC_LEN];  /* its source stamp */
};

/* A tiny file of this version that the previous version holds as a member of one of its groups
 * (found by its source stamp or its content hash): it shares that group if every member of the
 * group turns up (share_member()), and is copied into this version's own group otherwise. */
struct shr_member {
	char *name;                          /* its name; owned; NULL: member not (yet) found */
	size_t dir;                          /* its parent: an index into imp->dirs */
	uint32_t mode;
	int64_t mtime_ns;
	struct store_inode old;              /* the member's record in the previous version */
	uint8_t stamp[STORE_CONTENT_MAC_LEN];  /* the source stamp now */
	bool stamped;                        /* found by its stamp (its source was not read) */
	bool has_plain;                      /* its plaintext is in imp->shr_plain already */
};

/* A directory of the version being built. */
struct dir_ent {
	char *path;         /* "" for the root, else "a/b"; owned */
	uint64_t ino;
	uint32_t mode;
	int64_t mtime_ns;
	uint64_t entries;   /* names in it */
	uint32_t subdirs;   /* directories among them */
	uint8_t digest[DIR_DIGEST_LEN];  /* XOR of its entries' digests (dirent_digest_add) */
	char *max_name;     /* the greatest name in it (dirent_exists()); owned, NULL: none */
	uint16_t max_cap;   /* bytes max_name has room for */
	bool explicit;      /* mode and mtime came from add_dir, not defaults */
};

/* A directory entry record held back from the index batch until the batch is written, so that
 * a batch's entries reach the index in key order (dq_flush()). */
struct dq_ent {
	uint8_t k[DKEY_LEN];
	uint32_t off;       /* its sealed value in imp->dq_vals; also the order it came in */
	uint32_t len;
};

/* A claimed file of an import.stat batch whose source stamp holds (store_import_add_claimed()):
 * found and numbered by the caller's thread in order (claim_classify()), its records made and
 * sealed by whichever thread takes it (claim_seal_one()), then put into the index batch, the
 * manifest and its directory by the caller's thread in order (claim_merge()). Holds no secret:
 * the object key passes only through the sealing thread's key slot. */
struct claim_prep {
	const char *path;                    /* the caller's; borrowed for the call */
	const char *name;                    /* its name in its directory: within path */
	size_t nlen;
	size_t dir;                          /* its directory: an index into imp->dirs */
	uint64_t parent_ino;                 /* that directory's inode number */
	struct store_inode old;              /* its inode in the version shared from */
	struct store_inode ino;              /* its inode now: the wrapped key set by the sealing */
	bool sealed;                         /* claim_seal_one() is done with it (cs_lock) */
	int err;                             /* the sealing's failure (as err_at says), or 0 */
	uint8_t err_at;                      /* enum claim_err */
	uint16_t plain_len, iseal_len, dseal_len;
	uint8_t dk[DKEY_LEN];                /* its directory entry's key */
	uint8_t dig[DIR_DIGEST_LEN];         /* its entry's part of the directory's digest */
	uint8_t plain[REC_PLAIN_MAX];        /* its inode record, for the manifest */
	uint8_t iseal[REC_PLAIN_MAX + CRYPTO_SEAL_OVERHEAD];  /* the same sealed */
	uint8_t dseal[REC_PLAIN_MAX + CRYPTO_SEAL_OVERHEAD];  /* its directory entry sealed */
};

/* Where claim_seal_one() failed: the messages of the per-file path (stamp_reuse()). */
enum claim_err {
	CLAIM_ERR_UNWRAP = 1,
	CLAIM_ERR_WRAP = 2,
	CLAIM_ERR_NOMEM = 3,
};

/* One thread that seals claimed files beside the caller's (see claim_take()). */
struct cs_helper {
	struct store_import *imp;            /* borrowed */
	pthread_t thread;
	crypto_key *scratch;                 /* its key slot for crypto_key_rewrap(); owned */
	struct buf b;                        /* its record encoding; owned, wiped at the end */
};

/* A pack this import appended to, with the length to commit. */
struct pack_done {
	uint64_t id;
	uint64_t end;
};

struct store_import {
	struct store *st;                   /* borrowed; its import_lock is held */
	size_t mem_used;                    /* bytes of st->import_mem carved (mem_take()) */
	struct dataset_rec ds;              /* the dataset (new or existing) */
	bool new_dataset;
	crypto_key *dkey;                   /* a new dataset's key Kd; owned until the commit */
	crypto_key *vkey;                   /* this version's key Kv (docs/FORMAT.md 3.7): object
					       keys are wrapped under it; owned */
	crypto_key *ix_seal;                /* Kvs, its index seal key; owned */
	crypto_key *ix_name;                /* Kvn, its name-hash key; owned */
	crypto_mac_key *ix_name_mk;         /* Kvn made a crypto_mac_key (the name hashes of the
					       entries this import writes); owned */
	crypto_hasher *man_files;             /* manifest: file leaves in inode order; owned */
	crypto_hasher *man_dirs;              /* manifest: directory leaves, at commit; owned */
	struct buf plain;                   /* a record's plaintext before it is sealed */
	uint32_t version;
	int64_t created_ns;
	uint32_t chunk_size;
	uint32_t alg;
	void (*progress)(void *ctx, const struct store_import_stats *stats);
	void *progress_ctx;
	uint64_t progress_last;             /* bytes at the last progress call */
	struct store_import_stats stats;
	uint64_t next_ino;

	struct dir_ent *dirs;               /* owned; dirs[0] is the root */
	size_t ndirs, dirs_cap;
	uint32_t *hash;                     /* open addressing: index+1 into dirs, 0 = empty */
	size_t hash_cap;                    /* power of two */

	struct io_uring ring;
	bool ring_ok;
	struct wbuf bufs[IMPORT_BUFS];
	size_t buf_size;                    /* max(IMPORT_BUF_MIN, chunk size) */
	struct wbuf *cur;                   /* the stream buffer being filled, or NULL */
	uint64_t wpos;                      /* pack offset of the next stream byte */
	uint8_t tagacc[IMPORT_TAGACC];      /* tags of the object being written */
	size_t tagacc_len;
	uint64_t tagacc_off;                /* pack offset for tagacc[0] */

	int pack_fd;                        /* the pack being appended to; owned */
	uint64_t pack_id;
	uint64_t append_pack_id;            /* existing pack this import appended to, or 0 */
	uint64_t append_pack_start;         /* its committed length before this import */
	uint64_t first_new_pack;            /* lowest pack id this import created, 0 if none */
	struct pack_done packs[IMPORT_PACKS_MAX];
	size_t npacks;                      /* completed (rotated) packs */

	rocksdb_writebatch_t *wb;           /* index records not yet written; owned */
	/* The index writer (batch_write()): a full batch is written to the index by this thread
	 * while the next one fills. ixw_lock guards ixw_batch, wb_spare, ixw_stop and ixw_err. */
	pthread_t ixw_thread;
	bool ixw_started;                   /* else batches are written by the caller's thread */
	pthread_mutex_t ixw_lock;
	pthread_cond_t ixw_cond;            /* ixw_batch was set, or taken back, or stop */
	rocksdb_writebatch_t *ixw_batch;    /* being written; owned; NULL: the writer is idle */
	rocksdb_writebatch_t *wb_spare;     /* an empty batch to swap in; owned; NULL while busy */
	bool ixw_stop;
	char *ixw_err;                      /* the writer's first failure (RocksDB's words); owned */
	/* Directory entry records not yet in wb: put there sorted by key when wb is written
	 * (dq_flush()). Their keys are keyed hashes of the names, so in the order files come
	 * they are random, and each would cost the index writer a search of its memtable's skip
	 * list from the top; sorted, each insert continues where the last one ended. Bounded by
	 * the batch size (batch_put()). */
	struct dq_ent *dq;                  /* owned */
	size_t dq_n, dq_cap;
	struct buf dq_vals;                 /* their sealed values back to back */
	struct buf scratch;                 /* record encoding */
	crypto_chunk_ctx *cctx;             /* owned */

	/* Encryption pool (see the top of this file); nworkers == 0: everything inline. */
	struct enc_worker workers[IMPORT_WORKERS_MAX];
	unsigned nworkers;                  /* threads started */
	unsigned jobs_cap;                  /* entries of each wbuf's jobs */
	struct enc_obj eobj;                /* the object being encrypted by the pool */
	pthread_mutex_t pool_lock;          /* queue, stop, and each wbuf's pending/ready */
	pthread_cond_t pool_work;           /* the queue gained a buffer, or stop */
	pthread_cond_t pool_done;           /* a worker finished a buffer */
	bool pool_init;                     /* pool_lock and the conditions exist */
	struct wbuf *queue[IMPORT_BUFS];    /* buffers waiting for a worker, FIFO */
	unsigned q_head, q_len;
	unsigned npending;                  /* buffers pending (queued or being encrypted) */
	bool pool_stop;                     /* workers exit once the queue is empty */

	/* Batch prefetch (store_import_add_files()): the small files of a batch are read and hashed
	 * by the helpers and the caller's thread together, then imported in order by the caller.
	 * pf_lock guards pf_gen, pf_done, pf_active and pf_stop; pf[] and pf_n are written by the
	 * caller only while no helper is active, and read by helpers only while they are. */
	uint8_t *stage;                     /* STORE_IMPORT_BATCH_MAX slots of STORE_DENSE_MAX + 1
					       bytes, plaintext: wiped after each batch; owned */
	struct pf_file pf[STORE_IMPORT_BATCH_MAX];
	/* store_import_add_files(): what it found of each file of the batch before importing it
	 * (its stamp lookup, and what divert said of its head). Only the caller's thread uses it. */
	struct stamp_seen seen[STORE_IMPORT_BATCH_MAX];
	size_t stage_hw;                    /* the most slots of the stage a batch used */
	size_t pf_n;                        /* files of the batch being prefetched */
	atomic_size_t pf_next;              /* the next of them to take */
	size_t pf_done;                     /* finished */
	unsigned pf_active;                 /* helpers inside a batch */
	uint64_t pf_gen;                    /* moves for each batch; helpers wait for it */
	bool pf_stop;
	bool pf_init;                       /* pf_lock, pf_cond exist */
	pthread_mutex_t pf_lock;
	pthread_cond_t pf_cond;             /* pf_gen moved, or a file finished, or stop */
	struct pf_helper pf_helpers[IMPORT_WORKERS_MAX];
	unsigned pf_nhelpers;
	crypto_hasher *pf_hash;             /* the caller's hash state for prefetching; owned */

	/* Shared objects (see the top of this file). */
	crypto_key *content_key;            /* the dataset's content-hash key; owned */
	crypto_mac_key *stamp_mk;           /* the same key made a crypto_mac_key, for the source
					       stamps (stamp_make()); owned */
	crypto_hasher *chash;               /* keyed hash of the file being hashed; owned */
	uint8_t *hbuf;                      /* IMPORT_HBUF bytes of plaintext; owned, wiped */
	size_t hbuf_hw;                     /* bytes of hbuf ever read into: wiped at the end */
	struct reuse_ent *reuse;            /* open addressing by hash; owned; NULL: none */
	size_t reuse_cap;                   /* power of two */
	size_t reuse_n;                     /* objects in it: at most reuse_cap / 2 */
	uint64_t *reuse_sizes;              /* the sizes of those objects, + 1 (0: empty); owned */
	size_t reuse_sizes_cap;             /* power of two */
	uint32_t reuse_version;             /* the version whose objects they are */
	int64_t reuse_created_ns;           /* when its import began */
	uint8_t reuse_manifest[STORE_MANIFEST_LEN];  /* its record's manifest, checked by the scan */
	/* The scan of reuse_version (reuse_scan()) runs on its own thread from begin on, while
	 * the caller sends its first directories and files, until a file needs the tables above
	 * (reuse_wait()). Until it is joined, only that thread touches reuse, reuse_sizes,
	 * reuse_n, stamps, stamp_slots, stamps_n, stamps_partial and stamp_names. */
	pthread_t scan_thread;
	bool scan_running;                  /* started, not yet joined */
	int scan_r;                         /* its result, set by the thread */
	char scan_err[ERR_DETAIL_MAX];      /* its failure's detail (err_detail() is per thread) */
	/* stamp_find(): the directory of reuse_version that held the last path looked up (files
	 * come in walk order, so most share it; versions never change): its path, and its inode
	 * there, 0 when that version has no such directory. */
	char stamp_dir[STORE_PATH_MAX + 1];
	size_t stamp_dir_len;
	bool stamp_dir_known;               /* stamp_dir and stamp_dir_ino hold a lookup */
	uint64_t stamp_dir_ino;
	bool rehash;                        /* never trust a source stamp: read every file */
	/* The files of reuse_version with a source stamp, by place: stamps[0 .. stamps_n) in scan
	 * order (written once each, so only the memory used is touched), found through
	 * stamp_slots (open addressing, index + 1, 0 empty; at most half full). NULL: none kept
	 * (rehash, or nothing to share). stamps_partial: some were left out (more than
	 * STAMPS_MAX), so a miss is looked up in the index. */
	struct stamp_ent *stamps;
	uint32_t *stamp_slots;
	size_t stamps_cap, stamps_n, stamps_max;
	bool stamps_partial;
	struct buf stamp_names;             /* their names back to back */
	/* Files store_import_add_claimed() was told of by their stat alone and whose stamp did not
	 * hold: their path is reserved, and they are owed with a descriptor (add_file()), which
	 * takes the path out of the set without looking it up again. The commit refuses while one
	 * is owed. Open addressing by path_hash(), OWED_SLOTS slots; owned, and so are the paths. */
	char **owed;
	size_t owed_n;

	/* Claimed files whose stamp holds (struct claim_prep): cp[0 .. cp_n) classified and not yet
	 * merged. cp_kek: the wrapping key of reuse_version, looked up once per batch (NULL: not
	 * yet); cp_keys holds it (store_version_keys()) until the batch is merged, when it is let
	 * go (store_keys_put(): a reference kept would keep that version's keys alive past its
	 * erasure). */
	struct claim_prep *cp;              /* STORE_IMPORT_CLAIM_MAX entries; owned */
	size_t cp_n;
	const crypto_key *cp_kek;
	struct ds_keys cp_keys;
	crypto_key *cp_scratch;             /* the caller's key slot for crypto_key_rewrap(); owned */
	struct buf cp_buf;                  /* the caller's record encoding; owned, wiped */
	/* The hand-off of cp[] between the caller's thread and the helpers (see claim_take()):
	 * cs_lock guards cs_pub, cs_next, cs_inflight, cs_stop and each entry's sealed. */
	pthread_mutex_t cs_lock;
	pthread_cond_t cs_cond;             /* entries published or sealed, or stop */
	bool cs_init;                       /* cs_lock, cs_cond exist */
	struct cs_helper cs_helpers[IMPORT_WORKERS_MAX];
	unsigned cs_nhelpers;
	size_t cs_pub;                      /* entries published: cp[0 .. cs_pub) */
	size_t cs_next;                     /* the next of them to claim for sealing */
	size_t cs_inflight;                 /* claimed and not yet sealed */
	unsigned cs_idle;                   /* threads waiting on cs_cond */
	atomic_uint cs_seq;                 /* moves with each change above, under cs_lock: read
					       without it only as a hint to stop spinning */
	bool cs_stop;

	/* The open group of tiny files (docs/FORMAT.md 4.10): their plaintext back to back, and
	 * the files whose records wait for it to be written (group_flush()). */
	uint8_t *grp;                       /* STORE_GROUP_MAX + 1 bytes of plaintext; owned, wiped */
	size_t grp_len;
	struct grp_member *grp_m;           /* STORE_GROUP_MEMBERS_MAX entries; owned */
	size_t grp_n;
	/* The previous version's group being shared (share_member()): its members found so far,
	 * by member number, and the plaintext of those read from their source. */
	struct shr_member *shr_m;           /* STORE_GROUP_MEMBERS_MAX entries; owned */
	size_t shr_n;                       /* members found; 0: no group being shared */
	uint16_t shr_count;                 /* members the group has */
	uint8_t shr_id[CRYPTO_OBJECT_ID_LEN];  /* its object id */
	uint8_t *shr_plain;                 /* STORE_GROUP_MAX bytes, at the members' offsets;
					       owned, wiped */
	struct store_reader *rd;            /* reads a group's members when it cannot be shared;
					       owned, made on first use */

	uint8_t manifest[STORE_MANIFEST_LEN];  /* set when the version is closed */
	bool closed;                        /* no more files: directory records and manifest final */
	int err;                            /* first failure; sticky */
	char errmsg[ERR_DETAIL_MAX];        /* its detail */
	bool committed;
};

static int imp_sticky(struct store_import *imp);

/* Record the first failure and its detail; return err. */
__attribute__((format(printf, 3, 4))) static int imp_fail(struct store_import *imp, int err,
							  const char *fmt, ...)
{
	va_list ap;

	if (imp->err)
		return imp_sticky(imp);
	va_start(ap, fmt);
	vsnprintf(imp->errmsg, sizeof(imp->errmsg), fmt, ap);
	va_end(ap);
	imp->err = err;
	return err_set(err, "%s", imp->errmsg);
}

/* The import's first failure again (add_* and commit after a failure). */
static int imp_sticky(struct store_import *imp)
{
	return err_set(imp->err, "%s", imp->errmsg);
}

/* Keep a detail set by a lower layer (err_detail()) as the import's failure. */
static int imp_fail_detail(struct store_import *imp, int err)
{
	return imp_fail(imp, err, "%s", *err_detail() ? err_detail() : strerror(-err));
}

static void progress(struct store_import *imp, bool force)
{
	if (!imp->progress)
		return;
	if (!force && imp->stats.bytes - imp->progress_last < IMPORT_PROGRESS_BYTES)
		return;
	imp->progress_last = imp->stats.bytes;
	imp->progress(imp->progress_ctx, &imp->stats);
}

/* ---- The store's import memory (st->import_mem) ------------------------------------------- */

enum {
	MEM_ZERO = 1,     /* zeroed, as calloc() */
	MEM_ALIGNED = 2,  /* STORE_ALIGN-aligned (as every carving is; size a multiple of it) */
};

/* size bytes for this import: carved from the store's import memory while it has room (pages an
 * earlier import touched are not faulted in again), else allocated. Released with mem_release()
 * or mem_wipe_release(), never free(). NULL: no memory. */
static void *mem_take(struct store_import *imp, size_t size, int flags)
{
	struct store *st = imp->st;
	size_t off = ALIGN_UP(imp->mem_used, (size_t)STORE_ALIGN);
	uint8_t *p;

	if (!st->import_mem) {
		void *m = mmap(NULL, IMPORT_MEM_BYTES, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (m != MAP_FAILED)
			st->import_mem = m;
	}
	if (!st->import_mem || off > IMPORT_MEM_BYTES || size > IMPORT_MEM_BYTES - off) {
		if (flags & MEM_ALIGNED)
			return aligned_alloc(STORE_ALIGN, ALIGN_UP(size, (size_t)STORE_ALIGN));
		size = MAX(size, (size_t)1);
		return flags & MEM_ZERO ? calloc(1, size) : malloc(size);
	}
	p = st->import_mem + off;
	imp->mem_used = off + size;
	st->import_mem_hw = MAX(st->import_mem_hw, imp->mem_used);
	/* Every import leaves it zero (store_import_free()); not relied on. */
	if (flags & MEM_ZERO)
		memset(p, 0, size);
	return p;
}

static bool mem_carved(const struct store_import *imp, const void *p)
{
	const uint8_t *m = imp->st->import_mem, *q = p;

	return m && q >= m && q < m + IMPORT_MEM_BYTES;
}

/* Let go of p (from mem_take(); may be NULL). The caller has wiped whatever of it it wrote:
 * memory carved from the store's stays mapped for the next import, and must be zero again. */
static void mem_release(struct store_import *imp, void *p)
{
	if (!mem_carved(imp, p))
		free(p);
}

/* The same for a table written anywhere in its len bytes (hashed slots): wiped first if it stays
 * in the store's memory (freed memory is not read again; this memory is). */
static void mem_wipe_release(struct store_import *imp, void *p, size_t len)
{
	if (mem_carved(imp, p))
		explicit_bzero(p, len);
	else
		free(p);
}

void store_import_mem_unmap(struct store *st)
{
	if (st->import_mem)
		munmap(st->import_mem, IMPORT_MEM_BYTES);
	st->import_mem = NULL;
	st->import_mem_hw = 0;
}

size_t store_import_mem_dirty(const struct store *st, size_t *ret_used)
{
	size_t n = 0;

	for (size_t i = 0; st->import_mem && i < st->import_mem_hw; i++)
		n += st->import_mem[i] != 0;
	*ret_used = st->import_mem_hw;
	return n;
}

/* ---- Index batch --------------------------------------------------------------------------- */

/* The index writer's thread: writes each batch it is handed (async: the commit's synchronous
 * batch makes them durable with it, and the PENDING record precedes them in the WAL), in the
 * order handed, one at a time. Issue 13: RocksDB's memtable inserts were about 12 % of the
 * control thread's time importing small files. */
static void *ixw_main(void *arg)
{
	struct store_import *imp = arg;

	pthread_mutex_lock(&imp->ixw_lock);
	for (;;) {
		rocksdb_writebatch_t *b;
		char *err = NULL;

		while (!imp->ixw_batch && !imp->ixw_stop)
			pthread_cond_wait(&imp->ixw_cond, &imp->ixw_lock);
		if (!imp->ixw_batch)
			break;
		b = imp->ixw_batch;
		pthread_mutex_unlock(&imp->ixw_lock);
		/* Records of the PENDING version only (the commit writes its own batch): counted as
		 * silent, so the primary does not announce each batch to the nodes (issue 16 point
		 * 5: a signal signed and written every 20 to 70 ms of an import, 6 to 8 ms of CPU). A
		 * put or delete uses one sequence number. */
		pthread_mutex_lock(&imp->st->silent_lock);
		rocksdb_write(imp->st->ix.db, imp->st->ix.wo_async, b, &err);
		if (!err)
			imp->st->silent_seqs += (uint64_t)rocksdb_writebatch_count(b);
		pthread_mutex_unlock(&imp->st->silent_lock);
		rocksdb_writebatch_clear(b);
		pthread_mutex_lock(&imp->ixw_lock);
		if (err && !imp->ixw_err)
			imp->ixw_err = err;
		else
			free(err);
		imp->ixw_batch = NULL;
		imp->wb_spare = b;
		pthread_cond_broadcast(&imp->ixw_cond);
	}
	pthread_mutex_unlock(&imp->ixw_lock);
	return NULL;
}

/* An empty index batch for an import: one the store kept from its last import, its buffer
 * already grown, or a new one. The caller holds import_lock. Issue 16 point 5: a new batch's
 * buffer doubled its way past IMPORT_BATCH_BYTES in every import, fresh memory each time, and a
 * page fault per 4 KiB of it (about 700, some 10 ms of the connection thread, in a re-import
 * of 20,000 files: the faults cost 13 to 20 us each in this VM). */
static rocksdb_writebatch_t *batch_take(struct store *st)
{
	for (size_t i = 0; i < ARRAY_SIZE(st->import_wb); i++) {
		rocksdb_writebatch_t *b = st->import_wb[i];

		if (b) {
			st->import_wb[i] = NULL;
			return b;
		}
	}
	return rocksdb_writebatch_create();
}

/* Give a batch (may be NULL) back to the store for the next import, emptied. Destroyed instead
 * when the store keeps two already, or when it grew past what an import's batches reach (a
 * batch is written at IMPORT_BATCH_BYTES), so the memory kept stays bounded. Its bytes are
 * sealed records, never plaintext. The caller holds import_lock. */
static void batch_keep(struct store *st, rocksdb_writebatch_t *b)
{
	size_t sz = 0;

	if (!b)
		return;
	rocksdb_writebatch_data(b, &sz);
	rocksdb_writebatch_clear(b);
	for (size_t i = 0; sz <= 4 * IMPORT_BATCH_BYTES && i < ARRAY_SIZE(st->import_wb); i++) {
		if (!st->import_wb[i]) {
			st->import_wb[i] = b;
			return;
		}
	}
	rocksdb_writebatch_destroy(b);
}

static void ixw_start(struct store_import *imp)
{
	imp->wb_spare = batch_take(imp->st);
	if (pthread_mutex_init(&imp->ixw_lock, NULL) != 0)
		return;
	if (pthread_cond_init(&imp->ixw_cond, NULL) != 0) {
		pthread_mutex_destroy(&imp->ixw_lock);
		return;
	}
	if (pthread_create(&imp->ixw_thread, NULL, ixw_main, imp) != 0) {
		pthread_cond_destroy(&imp->ixw_cond);
		pthread_mutex_destroy(&imp->ixw_lock);
		return;
	}
	imp->ixw_started = true;
}

/* Wait until the writer is idle: every batch handed to it is in the index. Its failure, if any,
 * becomes the import's. */
static int ixw_wait(struct store_import *imp)
{
	char *err;

	if (!imp->ixw_started)
		return imp->err;
	pthread_mutex_lock(&imp->ixw_lock);
	while (imp->ixw_batch)
		pthread_cond_wait(&imp->ixw_cond, &imp->ixw_lock);
	err = imp->ixw_err;
	imp->ixw_err = NULL;
	pthread_mutex_unlock(&imp->ixw_lock);
	if (err) {
		imp_fail(imp, -EIO, "index: write failed: %s", err);
		free(err);
	}
	return imp->err;
}

static void ixw_stop(struct store_import *imp)
{
	if (!imp->ixw_started)
		return;
	pthread_mutex_lock(&imp->ixw_lock);
	imp->ixw_stop = true;
	pthread_cond_broadcast(&imp->ixw_cond);
	pthread_mutex_unlock(&imp->ixw_lock);
	pthread_join(imp->ixw_thread, NULL);
	free(imp->ixw_err);
	imp->ixw_err = NULL;
	pthread_cond_destroy(&imp->ixw_cond);
	pthread_mutex_destroy(&imp->ixw_lock);
	imp->ixw_started = false;
}

static int dq_cmp(const void *a, const void *b)
{
	const struct dq_ent *x = a, *y = b;
	int c = memcmp(x->k, y->k, DKEY_LEN);

	/* Keys are distinct within a version (dirent_exists()); were one not, the later put
	 * would still win, as it would in the order the records came. */
	return c ? c : (x->off > y->off) - (x->off < y->off);
}

/* Put the held directory entry records into the batch, in key order. */
static void dq_flush(struct store_import *imp)
{
	if (imp->dq_n == 0)
		return;
	qsort(imp->dq, imp->dq_n, sizeof(*imp->dq), dq_cmp);
	for (size_t i = 0; i < imp->dq_n; i++)
		rocksdb_writebatch_put_cf(imp->wb, imp->st->ix.cf[CF_DIRENTS],
					  (const char *)imp->dq[i].k, DKEY_LEN,
					  (const char *)imp->dq_vals.data + imp->dq[i].off,
					  imp->dq[i].len);
	imp->dq_n = 0;
	buf_reset(&imp->dq_vals);
}

/* Send the records in the batch to the index and start an empty one. With wait, they are in the
 * index when this returns (a lookup follows); without, the writer thread writes them while the
 * caller goes on, and the next batch_write() or the commit waits for it. */
static int batch_write(struct store_import *imp, bool wait)
{
	char *err = NULL;
	int r;

	dq_flush(imp);
	if (rocksdb_writebatch_count(imp->wb) == 0)
		return wait ? ixw_wait(imp) : 0;
	if (!imp->ixw_started) {
		rocksdb_write(imp->st->ix.db, imp->st->ix.wo_async, imp->wb, &err);
		if (err) {
			r = imp_fail(imp, -EIO, "index: write failed: %s", err);
			free(err);
			return r;
		}
		rocksdb_writebatch_clear(imp->wb);
		return 0;
	}
	r = ixw_wait(imp);
	if (r < 0)
		return r;
	pthread_mutex_lock(&imp->ixw_lock);
	imp->ixw_batch = imp->wb;
	imp->wb = imp->wb_spare;
	imp->wb_spare = NULL;
	pthread_cond_broadcast(&imp->ixw_cond);
	pthread_mutex_unlock(&imp->ixw_lock);
	return wait ? ixw_wait(imp) : 0;
}

/* Write the batch once it and the held entries pass IMPORT_BATCH_BYTES. */
static int batch_check(struct store_import *imp)
{
	size_t sz = 0;

	rocksdb_writebatch_data(imp->wb, &sz);
	if (sz + imp->dq_vals.len + imp->dq_n * (DKEY_LEN + 8) < IMPORT_BATCH_BYTES)
		return 0;
	return batch_write(imp, false);
}

static int batch_put(struct store_import *imp, enum store_cf cf, const void *k, size_t kl,
		     const void *v, size_t vl)
{
	rocksdb_writebatch_put_cf(imp->wb, imp->st->ix.cf[cf], k, kl, v, vl);
	return batch_check(imp);
}

/* A directory entry record (key k, sealed value v of vl bytes) for the batch, held until it is
 * written (dq_flush()). */
static int dq_put(struct store_import *imp, const uint8_t k[static DKEY_LEN], const void *v,
		  size_t vl)
{
	struct dq_ent *e;

	if (imp->dq_n == imp->dq_cap) {
		size_t nc = imp->dq_cap ? 2 * imp->dq_cap : 1024;
		struct dq_ent *a = reallocarray(imp->dq, nc, sizeof(*a));

		if (!a)
			return imp_fail(imp, -ENOMEM, "out of memory");
		imp->dq = a;
		imp->dq_cap = nc;
	}
	e = &imp->dq[imp->dq_n];
	e->off = (uint32_t)imp->dq_vals.len;
	e->len = (uint32_t)vl;
	if (buf_append(&imp->dq_vals, v, vl) < 0)
		return imp_fail(imp, -ENOMEM, "out of memory");
	memcpy(e->k, k, DKEY_LEN);
	imp->dq_n++;
	return batch_check(imp);
}

/* Does the directory entry name exist in directory d of this version already? Names come in
 * ascending order from a walk (enclavectl's and walk() below sort them): a name greater than
 * the greatest one d holds is new without a look at the index. Any other is looked up in the
 * index, after the records still in the batch are written there (async; the PENDING record
 * precedes them in the WAL): a plain batch cannot be searched, and this path is rare. */
/* Is name in directory d among the tiny files whose records wait for a group? */
static bool dirent_pending(const struct store_import *imp, const struct dir_ent *d,
			   const char *name)
{
	size_t dir = (size_t)(d - imp->dirs);

	for (size_t i = 0; i < imp->grp_n; i++)
		if (imp->grp_m[i].dir == dir && strcmp(imp->grp_m[i].name, name) == 0)
			return true;
	for (size_t i = 0; imp->shr_n && i < imp->shr_count; i++)
		if (imp->shr_m[i].name && imp->shr_m[i].dir == dir &&
		    strcmp(imp->shr_m[i].name, name) == 0)
			return true;
	return false;
}

static int dirent_exists(struct store_import *imp, const struct dir_ent *d, const char *name)
{
	uint8_t k[DKEY_LEN];
	size_t vl = 0;
	char *err = NULL;
	char *v;
	int r;

	if (!d->max_name || strcmp(name, d->max_name) > 0)
		return 0;
	/* Tiny files waiting for their group have no record yet. */
	if (dirent_pending(imp, d, name))
		return 1;
	r = batch_write(imp, true);
	if (r < 0)
		return r;
	dkey_mk(imp->ix_name_mk, k, imp->ds.info.id, imp->version, d->ino, name, strlen(name));
	v = rocksdb_get_cf(imp->st->ix.db, imp->st->ix.ro, imp->st->ix.cf[CF_DIRENTS], (char *)k,
			   sizeof(k), &vl, &err);
	if (err) {
		r = imp_fail(imp, -EIO, "index: read failed: %s", err);
		free(err);
		return r;
	}
	free(v);
	return v != NULL;
}

/* name is now in directory d: keep the greatest name d holds (dirent_exists()). */
static int dirent_added(struct store_import *imp, struct dir_ent *d, const char *name)
{
	size_t n = strlen(name);
	char *m;

	if (d->max_name && strcmp(name, d->max_name) <= 0)
		return 0;
	/* Grown only when a longer name comes (not once per file: names come in order). */
	if (n + 1 > d->max_cap) {
		size_t cap = MAX(n + 1, (size_t)32);

		m = realloc(d->max_name, cap);
		if (!m)
			return imp_fail(imp, -ENOMEM, "out of memory");
		d->max_name = m;
		d->max_cap = (uint16_t)cap;
	}
	memcpy(d->max_name, name, n + 1);
	return 0;
}

/* Seal imp->plain as the value of k in cf (into imp->scratch) and put it in the batch. */
static int put_sealed(struct store_import *imp, enum store_cf cf, const void *k, size_t kl)
{
	buf_reset(&imp->scratch);
	if (index_seal(imp->ix_seal, cf, k, kl, NULL, 0, imp->plain.data, imp->plain.len,
		       &imp->scratch) < 0)
		return imp_fail(imp, -ENOMEM, "out of memory");
	return batch_put(imp, cf, k, kl, imp->scratch.data, imp->scratch.len);
}

/* The entry (parent, name) -> ino; it also counts in the parent's digest and greatest name. */
static int put_dirent(struct store_import *imp, struct dir_ent *parent, const char *name,
		      uint64_t ino, uint32_t type)
{
	struct dirent_rec d = { .ino = ino, .type = type };
	uint8_t k[DKEY_LEN];
	size_t n = strlen(name);

	memcpy(d.name, name, MIN(n, (size_t)STORE_NAME_MAX));
	dkey_mk(imp->ix_name_mk, k, imp->ds.info.id, imp->version, parent->ino, name, n);
	buf_reset(&imp->plain);
	if (dirent_rec_encode(&d, &imp->plain) < 0)
		return imp_fail(imp, -ENOMEM, "out of memory");
	dirent_digest_add_mk(imp->ix_name_mk, parent->digest, ino, type, name, n);
	if (dirent_added(imp, parent, name) < 0)
		return imp->err;
	buf_reset(&imp->scratch);
	if (index_seal(imp->ix_seal, CF_DIRENTS, k, sizeof(k), NULL, 0, imp->plain.data,
		       imp->plain.len, &imp->scratch) < 0)
		return imp_fail(imp, -ENOMEM, "out of memory");
	return dq_put(imp, k, imp->scratch.data, imp->scratch.len);
}

/* The inode record; its plaintext stays in imp->plain for the manifest. */
static int put_inode(struct store_import *imp, const struct store_inode *ino,
		     const uint8_t *dir_digest)
{
	uint8_t k[IKEY_LEN];

	ikey(k, imp->ds.info.id, imp->version, ino->ino);
	buf_reset(&imp->plain);
	if (inode_encode(ino, dir_digest, &imp->plain) < 0)
		return imp_fail(imp, -ENOMEM, "out of memory");
	return put_sealed(imp, CF_INODES, k, sizeof(k));
}

static int put_version(struct store_import *imp, uint32_t state, const uint8_t *manifest,
		       rocksdb_writebatch_t *wb)
{
	struct version_rec vr = {
		.info = {
			.dataset_id = imp->ds.info.id,
			.version = imp->version,
			.created_ns = imp->created_ns,
			.committed_ns = state == VERSION_COMMITTED ? now_realtime_ns() : 0,
			.files = imp->stats.files,
			.dirs = imp->stats.dirs,
			.bytes = imp->stats.bytes,
		},
		.state = state,
	};
	uint8_t k[VKEY_LEN], clear = (uint8_t)state;

	if (manifest)
		memcpy(vr.info.manifest, manifest, sizeof(vr.info.manifest));
	vkey(k, imp->ds.info.id, imp->version);
	buf_reset(&imp->plain);
	buf_reset(&imp->scratch);
	/* The state stays in clear (recovery reads it without the key), bound into the AD. */
	if (version_rec_encode(&vr, &imp->plain) < 0 ||
	    index_seal(imp->ix_seal, CF_VERSIONS, k, sizeof(k), &clear, 1, imp->plain.data,
		       imp->plain.len, &imp->scratch) < 0)
		return -ENOMEM;
	if (wb)
		rocksdb_writebatch_put_cf(wb, imp->st->ix.cf[CF_VERSIONS], (const char *)k,
					  sizeof(k), (const char *)imp->scratch.data,
					  imp->scratch.len);
	else
		rocksdb_writebatch_put_cf(imp->wb, imp->st->ix.cf[CF_VERSIONS], (const char *)k,
					  sizeof(k), (const char *)imp->scratch.data,
					  imp->scratch.len);
	return 0;
}

/* ---- Directory table ----------------------------------------------------------------------- */

static uint64_t path_hash(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
	return h;
}

static struct dir_ent *dir_find(struct store_import *imp, const char *p, size_t n)
{
	size_t mask = imp->hash_cap - 1;

	for (size_t i = path_hash(p, n) & mask; imp->hash[i]; i = (i + 1) & mask) {
		struct dir_ent *d = &imp->dirs[imp->hash[i] - 1];

		if (strlen(d->path) == n && memcmp(d->path, p, n) == 0)
			return d;
	}
	return NULL;
}

static int hash_insert(struct store_import *imp, size_t idx)
{
	const char *p = imp->dirs[idx].path;
	size_t mask = imp->hash_cap - 1, i;

	for (i = path_hash(p, strlen(p)) & mask; imp->hash[i]; i = (i + 1) & mask)
		;
	imp->hash[i] = (uint32_t)idx + 1;
	return 0;
}

static int dir_table_grow(struct store_import *imp)
{
	if (imp->ndirs == imp->dirs_cap) {
		size_t n = imp->dirs_cap ? imp->dirs_cap * 2 : 64;
		struct dir_ent *a = reallocarray(imp->dirs, n, sizeof(*a));

		if (!a)
			return -ENOMEM;
		imp->dirs = a;
		imp->dirs_cap = n;
	}
	if ((imp->ndirs + 1) * 2 > imp->hash_cap) {
		size_t n = imp->hash_cap ? imp->hash_cap * 2 : 128;
		uint32_t *h = calloc(n, sizeof(*h));

		if (!h)
			return -ENOMEM;
		free(imp->hash);
		imp->hash = h;
		imp->hash_cap = n;
		for (size_t i = 0; i < imp->ndirs; i++)
			hash_insert(imp, i);
	}
	return 0;
}

/* ---- Files owed with a descriptor (store_import_add_claimed()) ------------------------------ */

/* The slot of path in the owed set, or of the empty slot where it would go. */
static size_t owed_slot(const struct store_import *imp, const char *path)
{
	const size_t mask = OWED_SLOTS - 1;
	size_t i;

	for (i = path_hash(path, strlen(path)) & mask; imp->owed[i]; i = (i + 1) & mask)
		if (strcmp(imp->owed[i], path) == 0)
			break;
	return i;
}

static bool owed_has(const struct store_import *imp, const char *path)
{
	return imp->owed_n && imp->owed[owed_slot(imp, path)];
}

/* Reserve path until its descriptor comes (the caller checked the room and that it is new). */
static int owed_add(struct store_import *imp, const char *path)
{
	size_t i;

	if (!imp->owed) {
		imp->owed = calloc(OWED_SLOTS, sizeof(*imp->owed));
		if (!imp->owed)
			return imp_fail(imp, -ENOMEM, "out of memory");
	}
	i = owed_slot(imp, path);
	imp->owed[i] = strdup(path);
	if (!imp->owed[i])
		return imp_fail(imp, -ENOMEM, "out of memory");
	imp->owed_n++;
	return 0;
}

/* Take path out of the owed set: true if it was there. The entries after it in its probe run
 * move back (no tombstones), so that a lookup still finds each of them. */
static bool owed_take(struct store_import *imp, const char *path)
{
	const size_t mask = OWED_SLOTS - 1;
	size_t i, j;

	if (!imp->owed_n)
		return false;
	i = owed_slot(imp, path);
	if (!imp->owed[i])
		return false;
	free(imp->owed[i]);
	imp->owed[i] = NULL;
	imp->owed_n--;
	for (j = (i + 1) & mask; imp->owed[j]; j = (j + 1) & mask) {
		size_t home = path_hash(imp->owed[j], strlen(imp->owed[j])) & mask;

		/* Entry j stays unless the hole i lies between its home slot and j (cyclically). */
		if (i <= j ? (home > i && home <= j) : (home > i || home <= j))
			continue;
		imp->owed[i] = imp->owed[j];
		imp->owed[j] = NULL;
		i = j;
	}
	return true;
}

static void owed_free(struct store_import *imp)
{
	for (size_t i = 0; imp->owed && i < OWED_SLOTS; i++)
		free(imp->owed[i]);
	free(imp->owed);
	imp->owed = NULL;
	imp->owed_n = 0;
}

/* Check that path (n bytes) is relative, with valid components. "" is the root. */
static bool path_valid(const char *p, size_t n)
{
	if (n > STORE_PATH_MAX)
		return false;
	for (size_t i = 0; i < n;) {
		size_t len = 0;

		while (i + len < n && p[i + len] != '/')
			len++;
		if (!store_name_valid(p + i, len))
			return false;
		i += len + 1;
		if (i == n)  /* trailing slash */
			return false;
	}
	return true;
}

/* Where the last component of path p (n bytes) starts; the parent is then p[0 .. base-1), of
 * length parent_len(base) ("" for the root). */
static size_t base_start(const char *p, size_t n)
{
	while (n > 0 && p[n - 1] != '/')
		n--;
	return n;
}

static size_t parent_len(size_t base)
{
	return base ? base - 1 : 0;
}

/* The directory at path p (n bytes), created with its parents if needed. Borrowed pointer,
 * valid until the next directory is created. */
static int dir_ensure(struct store_import *imp, const char *p, size_t n, struct dir_ent **ret)
{
	struct dir_ent *d = dir_find(imp, p, n), *parent;
	size_t slash = base_start(p, n);
	char *copy;
	int r;

	if (d) {
		*ret = d;
		return 0;
	}
	r = dir_ensure(imp, p, parent_len(slash), &parent);
	if (r < 0)
		return r;
	copy = strndup(p, n);
	if (!copy)
		return imp_fail(imp, -ENOMEM, "out of memory");
	r = dirent_exists(imp, parent, copy + slash);
	if (r != 0) {
		r = r > 0 ? imp_fail(imp, -ENOTDIR, "%s: a file of that name is already imported",
				     copy)
			  : r;
		free(copy);
		return r;
	}
	if (imp->ndirs >= IMPORT_DIRS_MAX) {
		free(copy);
		return imp_fail(imp, -E2BIG, "%.*s: more than %u directories in one version",
				(int)n, p, IMPORT_DIRS_MAX);
	}
	if (dir_table_grow(imp) < 0) {
		free(copy);
		return imp_fail(imp, -ENOMEM, "out of memory");
	}
	parent = dir_find(imp, p, parent_len(slash)); /* the table may have moved */
	parent->entries++;
	parent->subdirs++;
	d = &imp->dirs[imp->ndirs];
	*d = (struct dir_ent){
		.path = copy,
		.ino = imp->next_ino++,
		.mode = 0755,
		.mtime_ns = imp->created_ns,
	};
	hash_insert(imp, imp->ndirs++);
	imp->stats.dirs++;
	parent = dir_find(imp, p, parent_len(slash));
	r = put_dirent(imp, parent, copy + slash, d->ino, STORE_INODE_DIR);
	if (r < 0)
		return r;
	*ret = d;
	return 0;
}

/* ---- Encryption pool ----------------------------------------------------------------------- */

/* Encrypt the jobs of b in place with ctx. Returns 0 or the first failure. */
static int enc_jobs(crypto_chunk_ctx *ctx, struct wbuf *b)
{
	for (unsigned i = 0; i < b->njobs; i++) {
		const struct enc_chunk *c = &b->jobs[i];
		int r = crypto_chunk_encrypt(ctx, c->idx, c->last, b->data + c->pos, c->len,
					     b->data + c->pos, c->tag);

		if (r < 0)
			return r;
	}
	return 0;
}

static void *enc_worker_main(void *arg)
{
	struct enc_worker *w = arg;
	struct store_import *imp = w->imp;

	pthread_mutex_lock(&imp->pool_lock);
	for (;;) {
		struct wbuf *b;
		int r = 0;

		while (!imp->q_len && !imp->pool_stop)
			pthread_cond_wait(&imp->pool_work, &imp->pool_lock);
		if (!imp->q_len)
			break;
		b = imp->queue[imp->q_head];
		imp->q_head = (imp->q_head + 1) % IMPORT_BUFS;
		imp->q_len--;
		pthread_mutex_unlock(&imp->pool_lock);

		/* imp->eobj is stable while a job of its object is pending (see the top). */
		if (w->gen != imp->eobj.gen) {
			if (!w->cctx)
				r = crypto_chunk_ctx_new(imp->eobj.alg, imp->eobj.key, imp->eobj.id,
							 &w->cctx);
			else
				r = crypto_chunk_ctx_rekey(w->cctx, imp->eobj.alg, imp->eobj.key,
							   imp->eobj.id);
			w->gen = r == 0 ? imp->eobj.gen : 0;
		}
		if (r == 0)
			r = enc_jobs(w->cctx, b);

		pthread_mutex_lock(&imp->pool_lock);
		b->enc_err = r;
		b->njobs = 0;
		b->pending = false;
		b->ready = true;
		imp->npending--;
		pthread_cond_broadcast(&imp->pool_done);
	}
	pthread_mutex_unlock(&imp->pool_lock);
	return NULL;
}

/* Start the workers: one per online CPU up to IMPORT_WORKERS_MAX, none on a single CPU (the
 * hand-off would only add switches). Failing to start one is not an error: fewer run. */
static int pool_start(struct store_import *imp)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned want = cpus > 1 ? (unsigned)MIN((long)IMPORT_WORKERS_MAX, cpus) : 0;

	if (!want)
		return 0;
	imp->jobs_cap = (unsigned)(imp->buf_size / CRYPTO_CHUNK_MIN) + 1;
	for (unsigned i = 0; i < IMPORT_BUFS; i++) {
		imp->bufs[i].jobs = calloc(imp->jobs_cap, sizeof(struct enc_chunk));
		if (!imp->bufs[i].jobs)
			return -ENOMEM;
	}
	if (pthread_mutex_init(&imp->pool_lock, NULL) != 0)
		return -ENOMEM;
	if (pthread_cond_init(&imp->pool_work, NULL) != 0) {
		pthread_mutex_destroy(&imp->pool_lock);
		return -ENOMEM;
	}
	if (pthread_cond_init(&imp->pool_done, NULL) != 0) {
		pthread_cond_destroy(&imp->pool_work);
		pthread_mutex_destroy(&imp->pool_lock);
		return -ENOMEM;
	}
	imp->pool_init = true;
	for (unsigned i = 0; i < want; i++) {
		imp->workers[i] = (struct enc_worker){ .imp = imp };
		if (pthread_create(&imp->workers[i].thread, NULL, enc_worker_main,
				   &imp->workers[i]) != 0)
			break;
		imp->nworkers++;
	}
	return 0;
}

/* Stop and join the workers (after everything pending is done) and free their contexts. */
static void pool_stop(struct store_import *imp)
{
	if (!imp->pool_init)
		return;
	pthread_mutex_lock(&imp->pool_lock);
	imp->pool_stop = true;
	pthread_cond_broadcast(&imp->pool_work);
	pthread_mutex_unlock(&imp->pool_lock);
	for (unsigned i = 0; i < imp->nworkers; i++) {
		pthread_join(imp->workers[i].thread, NULL);
		crypto_chunk_ctx_free(imp->workers[i].cctx);
	}
	imp->nworkers = 0;
	pthread_cond_destroy(&imp->pool_done);
	pthread_cond_destroy(&imp->pool_work);
	pthread_mutex_destroy(&imp->pool_lock);
	imp->pool_init = false;
}

/* Hand b (holding jobs) to the pool. The queue has room: at most IMPORT_BUFS buffers exist. */
static void pool_queue(struct store_import *imp, struct wbuf *b)
{
	pthread_mutex_lock(&imp->pool_lock);
	b->pending = true;
	imp->queue[(imp->q_head + imp->q_len) % IMPORT_BUFS] = b;
	imp->q_len++;
	imp->npending++;
	pthread_cond_signal(&imp->pool_work);
	pthread_mutex_unlock(&imp->pool_lock);
}

static void prep_write(struct store_import *imp, struct wbuf *b);
static int submit_prepared(struct store_import *imp);

/* Write every buffer the pool has finished (one io_uring_submit for all of them). With wait,
 * first wait until at least one buffer is finished, if any is pending. Returns the import's
 * failure, if any. */
static int pool_reap(struct store_import *imp, bool wait)
{
	struct wbuf *done[IMPORT_BUFS];
	unsigned n = 0;
	int err = 0;

	if (!imp->nworkers)
		return imp->err;
	pthread_mutex_lock(&imp->pool_lock);
	for (;;) {
		for (unsigned i = 0; i < IMPORT_BUFS; i++)
			if (imp->bufs[i].ready) {
				imp->bufs[i].ready = false;
				done[n++] = &imp->bufs[i];
			}
		if (n || !wait || !imp->npending)
			break;
		pthread_cond_wait(&imp->pool_done, &imp->pool_lock);
	}
	pthread_mutex_unlock(&imp->pool_lock);
	for (unsigned i = 0; i < n; i++) {
		if (done[i]->enc_err && !err)
			err = done[i]->enc_err;
		if (done[i]->enc_err || imp->err) {
			/* Never written: it may hold plaintext. */
			done[i]->len = 0;
			continue;
		}
		prep_write(imp, done[i]);
	}
	if (err)
		imp_fail(imp, err, "encryption failed: %s", strerror(-err));
	if (submit_prepared(imp) < 0 || imp->err)
		return imp->err;
	return 0;
}

/* True while the pool holds a buffer (queued or being encrypted). */
static bool pool_busy(struct store_import *imp)
{
	bool busy;

	if (!imp->nworkers)
		return false;
	pthread_mutex_lock(&imp->pool_lock);
	busy = imp->npending > 0;
	pthread_mutex_unlock(&imp->pool_lock);
	return busy;
}

/* Wait until the pool holds nothing (every buffer handed to it is encrypted and its write
 * submitted, or dropped after a failure). Returns the import's failure, if any. */
static int pool_settle(struct store_import *imp)
{
	while (pool_busy(imp))
		pool_reap(imp, true);
	return pool_reap(imp, false);
}

/* ---- Pack writing -------------------------------------------------------------------------- */

/* Handle one write completion. */
static void write_done(struct store_import *imp, struct io_uring_cqe *cqe)
{
	uint64_t i = io_uring_cqe_get_data64(cqe);
	struct wbuf *b = NULL;
	int res = cqe->res;

	io_uring_cqe_seen(&imp->ring, cqe);
	if (i >= IMPORT_BUFS)
		return;
	b = &imp->bufs[i];
	b->busy = false;
	if (res < 0) {
		imp_fail(imp, res, "pack %016llx: write at %llu failed: %s",
			 (unsigned long long)imp->pack_id, (unsigned long long)b->off,
			 strerror(-res));
	} else if ((size_t)res < b->len) {
		/* Short write (rare: a full disk races with us): finish it synchronously. */
		int e = pwrite_all(imp->pack_fd, b->data + res, b->len - (size_t)res,
				   b->off + (uint64_t)res);

		if (e < 0)
			imp_fail(imp, e, "pack %016llx: write failed: %s",
				 (unsigned long long)imp->pack_id, strerror(-e));
	}
	b->len = 0;
}

static int wait_one(struct store_import *imp)
{
	struct io_uring_cqe *cqe;
	int e;

	do
		e = io_uring_wait_cqe(&imp->ring, &cqe);
	while (e == -EINTR);
	if (e < 0)
		return imp_fail(imp, e, "io_uring wait failed: %s", strerror(-e));
	write_done(imp, cqe);
	return 0;
}

/* Queue the write of b in the ring without submitting it yet (submit_prepared() does). */
static void prep_write(struct store_import *imp, struct wbuf *b)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&imp->ring);

	/* IMPORT_BUFS < IMPORT_RING_DEPTH and a buffer is prepared once per write, so an SQE is
	 * always free. */
	io_uring_prep_write(sqe, imp->pack_fd, b->data, (unsigned)b->len, b->off);
	io_uring_sqe_set_data64(sqe, (uint64_t)(b - imp->bufs));
	b->busy = true;
}

/* Submit every prepared write in one call. */
static int submit_prepared(struct store_import *imp)
{
	int e;

	do
		e = io_uring_submit(&imp->ring);
	while (e == -EINTR);
	if (e < 0) {
		/* The writes never started: none of the buffers is in flight. */
		for (unsigned i = 0; i < IMPORT_BUFS; i++)
			imp->bufs[i].busy = false;
		return imp_fail(imp, e, "io_uring submit failed: %s", strerror(-e));
	}
	return 0;
}

static int submit(struct store_import *imp, struct wbuf *b)
{
	prep_write(imp, b);
	return submit_prepared(imp);
}

/* A free buffer: waiting for the pool or for a write to complete if none is. */
static int get_buf(struct store_import *imp, struct wbuf **ret)
{
	for (;;) {
		bool pending = false;

		if (pool_reap(imp, false) < 0)
			return imp->err;
		if (imp->nworkers)
			pthread_mutex_lock(&imp->pool_lock);
		for (unsigned i = 0; i < IMPORT_BUFS; i++) {
			struct wbuf *b = &imp->bufs[i];

			pending |= b->pending || b->ready;
			if (!b->busy && !b->pending && !b->ready && b != imp->cur) {
				if (imp->nworkers)
					pthread_mutex_unlock(&imp->pool_lock);
				b->njobs = 0;
				*ret = b;
				return 0;
			}
		}
		if (imp->nworkers)
			pthread_mutex_unlock(&imp->pool_lock);
		/* Writes complete on their own, and so does the pool: wait for whichever the
		 * caller can act on; a buffer the pool holds gets written by pool_reap(). */
		if (pending) {
			if (pool_reap(imp, true) < 0)
				return imp->err;
		} else if (wait_one(imp) < 0) {
			return imp->err;
		}
	}
}

/* Send the stream buffer on if it holds anything: to the pool if it has chunks to encrypt,
 * else to its write. */
static int stream_flush(struct store_import *imp)
{
	struct wbuf *b = imp->cur;

	imp->cur = NULL;
	if (!b || b->len == 0)
		return 0;
	if (b->njobs) {
		pool_queue(imp, b);
		return 0;
	}
	return submit(imp, b);
}

/* Room for n (<= buf_size) contiguous bytes at wpos in the stream buffer. */
static int stream_reserve(struct store_import *imp, size_t n, uint8_t **ret)
{
	struct wbuf *b = imp->cur;
	int r;

	if (!b || b->len + n > imp->buf_size) {
		r = stream_flush(imp);
		if (r < 0)
			return r;
		r = get_buf(imp, &b);
		if (r < 0)
			return r;
		b->len = 0;
		b->off = imp->wpos;
		imp->cur = b;
	}
	b->hw = MAX(b->hw, b->len + n);
	*ret = b->data + b->len;
	return 0;
}

static void stream_advance(struct store_import *imp, size_t n)
{
	imp->cur->len += n;
	imp->wpos += n;
}

/* Write the accumulated tags at their place after the object's data (a separate write). */
static int tags_flush(struct store_import *imp)
{
	struct wbuf *b = NULL;
	int r;

	if (imp->tagacc_len == 0)
		return 0;
	r = get_buf(imp, &b);
	if (r < 0)
		return r;
	b->hw = MAX(b->hw, imp->tagacc_len);
	memcpy(b->data, imp->tagacc, imp->tagacc_len);
	b->len = imp->tagacc_len;
	b->off = imp->tagacc_off;
	imp->tagacc_off += imp->tagacc_len;
	imp->tagacc_len = 0;
	return submit(imp, b);
}

/* Wait for every buffer in the pool and every write in flight. */
static int drain(struct store_import *imp)
{
	pool_settle(imp);
	for (;;) {
		bool busy = false;

		for (unsigned i = 0; i < IMPORT_BUFS; i++)
			busy |= imp->bufs[i].busy;
		if (!busy)
			return imp->err;
		if (wait_one(imp) < 0)
			return imp->err;
	}
}

/* Start appending to a new pack. */
static int pack_new(struct store_import *imp, uint64_t id)
{
	int fd = pack_create(imp->st->packs_dirfd, imp->st->store_id, id);

	if (fd < 0)
		return imp_fail_detail(imp, fd);
	imp->pack_fd = fd;
	imp->pack_id = id;
	if (!imp->first_new_pack)
		imp->first_new_pack = id;
	imp->wpos = PACK_HEADER_LEN;
	return 0;
}

/* Open the last committed pack for appending at its (aligned) end. Returns 1 when it is used, 0
 * when a new pack is needed: none yet, full, or not the length and header the index says. */
static int pack_append_open(struct store_import *imp)
{
	struct store *st = imp->st;
	char pname[32];
	struct stat s;
	int fd;

	if (!st->last_pack_id || st->last_pack_len >= st->pack_target)
		return 0;
	pack_name(pname, sizeof(pname), st->last_pack_id);
	fd = openat(st->packs_dirfd, pname, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (fstat(fd, &s) < 0 || !S_ISREG(s.st_mode) || (uint64_t)s.st_size < st->last_pack_len ||
	    pack_check_header(fd, st->store_id, st->last_pack_id) < 0) {
		close(fd);
		err_clear();
		return 0;
	}
	imp->pack_fd = fd;
	imp->pack_id = st->last_pack_id;
	imp->append_pack_id = st->last_pack_id;
	imp->append_pack_start = (uint64_t)s.st_size;
	imp->wpos = ALIGN_UP((uint64_t)s.st_size, (uint64_t)STORE_ALIGN);
	return 1;
}

/* Zeros up to the next multiple of STORE_ALIGN: before an aligned object that follows dense
 * ones, and at the end of a pack's committed part (its committed length stays aligned). */
static int stream_align(struct store_import *imp)
{
	size_t pad = (size_t)(ALIGN_UP(imp->wpos, (uint64_t)STORE_ALIGN) - imp->wpos);
	uint8_t *p;
	int r;

	if (pad == 0)
		return 0;
	r = stream_reserve(imp, pad, &p);
	if (r < 0)
		return r;
	memset(p, 0, pad);
	stream_advance(imp, pad);
	return 0;
}

/* Finish the current pack (durable) and continue in a new one. */
static int pack_rotate(struct store_import *imp)
{
	int r = stream_align(imp);

	if (r == 0)
		r = stream_flush(imp);

	if (r == 0)
		r = drain(imp);
	if (r < 0)
		return r;
	if (imp->npacks == IMPORT_PACKS_MAX)
		return imp_fail(imp, -E2BIG, "one import may fill at most %u packs",
				IMPORT_PACKS_MAX);
	if (fdatasync(imp->pack_fd) < 0)
		return imp_fail(imp, -errno, "pack %016llx: fdatasync failed: %s",
				(unsigned long long)imp->pack_id, strerror(errno));
	imp->packs[imp->npacks++] = (struct pack_done){ .id = imp->pack_id, .end = imp->wpos };
	close(imp->pack_fd);
	imp->pack_fd = -1;
	/* Above every pack file present, kept ones from interrupted imports included. */
	return pack_new(imp, MAX(imp->pack_id, imp->st->pack_file_max) + 1);
}

/* Make every chunk of the pooled object written so far encrypted, with its tag in tagacc: the
 * current buffer's jobs here (imp->cctx is keyed for the object), the pool's by waiting. */
static int obj_settle(struct store_import *imp, const char *path)
{
	struct wbuf *b = imp->cur;
	int r;

	if (b && b->njobs) {
		r = enc_jobs(imp->cctx, b);
		b->njobs = 0;
		if (r < 0)
			return imp_fail(imp, r, "%s: encryption failed", path);
	}
	return pool_settle(imp);
}

/* Where an object's plaintext comes from: a file read with pread, or a stream. */
struct obj_src {
	int fd;                                        /* >= 0: the file */
	const struct store_import_stream *stream;      /* otherwise */
	const struct pf_file *staged;                  /* a small file already read and hashed */
	const struct stat *st;                         /* fstat(fd) before any read; NULL: stream */
	const struct stamp_seen *seen;                 /* the batch's stamp lookup, or NULL */
	/* No descriptor: st is what the client's fstatat() said (store_import_add_claimed()). The
	 * file is imported only if that stamp holds, else add_object() returns ADD_NEED. */
	bool claimed;
	bool heads;                                    /* claimed, and Crypt4GH heads are checked */
};

/* add_object() of a claimed file whose stamp does not hold: nothing was imported. */
#define ADD_NEED 1

/* len bytes at off. A stream is read in order (write_object asks for consecutive ranges). */
static ssize_t src_read(const struct obj_src *src, void *buf, size_t len, uint64_t off)
{
	if (src->fd >= 0)
		return pread_full(src->fd, buf, len, off);
	return src->stream->read(src->stream->ctx, buf, len);
}

/* ---- Object keys for this version --------------------------------------------------------- */

/* The object key okey wrapped for this version, into ino->ext.wrapped_key (its AD from ino and
 * the version): under the version's own key Kv (docs/FORMAT.md 3.7), so that a shared object has
 * one wrapping per version that names it, and erasing a version destroys only its own. */
static int wrap_object_key(struct store_import *imp, const crypto_key *okey,
			   struct store_inode *ino)
{
	uint8_t ad[OBJECT_KEY_AD_MAX];

	ino->version = imp->version;
	return crypto_key_wrap(imp->vkey, okey, ad,
			       object_key_ad(STORE_FORMAT_VERSION, imp->ds.info.id, imp->version,
					     ino, ad),
			       ino->ext.wrapped_key);
}

/* The key of an object the version imp->reuse_version holds (old: its inode there), unwrapped the
 * way that version wrapped it: under its Kv from the key ring. -EBADMSG: it does not unwrap. */
static int unwrap_reused_key(struct store_import *imp, const struct store_inode *old,
			     crypto_key **ret)
{
	struct store *st = imp->st;
	uint8_t ad[OBJECT_KEY_AD_MAX];
	struct ds_keys k = { 0 };
	int r = store_version_keys(st, imp->ds.info.id, imp->reuse_version, &k);

	if (r < 0)
		return r;
	r = crypto_key_unwrap(k.wrap, old->ext.wrapped_key, ad,
			      object_key_ad(st->format, imp->ds.info.id, imp->reuse_version, old, ad),
			      ret);
	store_keys_put(st, &k);
	return r;
}

/* ---- Shared objects ------------------------------------------------------------------------ */

static size_t reuse_slot(const uint8_t *mac, size_t cap)
{
	return (size_t)get_le64(mac) & (cap - 1);
}

static size_t size_slot(uint64_t size, size_t cap)
{
	return (size_t)((size + 1) * 0x9e3779b97f4a7c15ull >> 20) & (cap - 1);
}

/* Note an object of the previous version (store_version_scan callback). Beyond the table's cap an
 * object is not shared: the new version stores its own copy. */
static int reuse_note(void *ctx, const struct store_inode *f)
{
	struct store_import *imp = ctx;
	size_t i;

	if (!f->ext.has_content_mac)
		return 0;   /* imported before objects were shared */
	/* The table stays at most half full (its size is twice IMPORT_REUSE_MAX at most). */
	if (imp->reuse_n >= imp->reuse_cap / 2)
		return 0;
	for (i = reuse_slot(f->ext.content_mac, imp->reuse_cap); imp->reuse[i].ino;
	     i = (i + 1) & (imp->reuse_cap - 1))
		if (memcmp(imp->reuse[i].mac, f->ext.content_mac, REUSE_PREFIX) == 0)
			return 0;   /* the same content twice: one object is enough to share */
	memcpy(imp->reuse[i].mac, f->ext.content_mac, REUSE_PREFIX);
	imp->reuse[i].ino = f->ino;
	imp->reuse_n++;
	for (i = size_slot(f->size, imp->reuse_sizes_cap); imp->reuse_sizes[i];
	     i = (i + 1) & (imp->reuse_sizes_cap - 1))
		if (imp->reuse_sizes[i] == f->size + 1)
			return 0;
	imp->reuse_sizes[i] = f->size + 1;
	return 0;
}

static size_t stamp_slot(uint64_t parent, const char *name, size_t nlen, size_t cap)
{
	return (size_t)((path_hash(name, nlen) ^ (parent * 0x9e3779b97f4a7c15ull)) & (cap - 1));
}

/* The kept file named name in directory parent of the previous version, or NULL. */
static const struct stamp_ent *stamp_ent_find(const struct store_import *imp, uint64_t parent,
					      const char *name, size_t nlen)
{
	const size_t mask = imp->stamps_cap - 1;

	for (size_t i = stamp_slot(parent, name, nlen, imp->stamps_cap); imp->stamp_slots[i];
	     i = (i + 1) & mask) {
		const struct stamp_ent *e = &imp->stamps[imp->stamp_slots[i] - 1];

		if (e->parent == parent && e->nlen == nlen &&
		    memcmp(imp->stamp_names.data + e->name_off, name, nlen) == 0)
			return e;
	}
	return NULL;
}

/* store_version_scan_named() callback: the object for the table by content hash, and the file by
 * its place when it has a source stamp. */
static int reuse_note_named(void *ctx, const struct store_inode *f, uint64_t parent,
			    const char *name, size_t nlen)
{
	struct store_import *imp = ctx;
	struct stamp_ent *e;
	size_t i;
	int r = reuse_note(ctx, f);

	if (r != 0 || !imp->stamps || !f->ext.has_content_mac || !f->ext.has_stamp)
		return r;
	if (imp->stamps_n >= imp->stamps_max || nlen == 0 || nlen > STORE_NAME_MAX) {
		imp->stamps_partial = true;
		return 0;
	}
	e = &imp->stamps[imp->stamps_n];
	e->name_off = (uint32_t)imp->stamp_names.len;
	if (buf_append(&imp->stamp_names, name, nlen) < 0) {
		imp->stamps_partial = true;
		return 0;
	}
	e->parent = parent;
	e->nlen = (uint8_t)nlen;
	e->in = *f;
	for (i = stamp_slot(parent, name, nlen, imp->stamps_cap); imp->stamp_slots[i];
	     i = (i + 1) & (imp->stamps_cap - 1))
		;
	imp->stamp_slots[i] = (uint32_t)++imp->stamps_n;
	return 0;
}

/* Forget the files kept by place (the version shared from failed its checks). */
static void stamps_free(struct store_import *imp)
{
	if (imp->stamps)
		sodium_memzero(imp->stamps, imp->stamps_n * sizeof(*imp->stamps));
	mem_release(imp, imp->stamps);
	mem_wipe_release(imp, imp->stamp_slots, imp->stamps_cap * sizeof(*imp->stamp_slots));
	imp->stamps = NULL;
	imp->stamp_slots = NULL;
	imp->stamps_cap = imp->stamps_n = imp->stamps_max = 0;
	imp->stamps_partial = false;
	buf_free(&imp->stamp_names);
}

/* Forget what the version shared from holds (it failed its checks): the new version shares
 * nothing and stores every file. */
static void reuse_drop(struct store_import *imp)
{
	stamps_free(imp);
	mem_wipe_release(imp, imp->reuse, imp->reuse_cap * sizeof(*imp->reuse));
	mem_wipe_release(imp, imp->reuse_sizes, imp->reuse_sizes_cap * sizeof(*imp->reuse_sizes));
	imp->reuse = NULL;
	imp->reuse_sizes = NULL;
	imp->reuse_cap = imp->reuse_sizes_cap = imp->reuse_n = 0;
}

/* Read every record of reuse_version into the tables (reuse_note_named()), checking each, and
 * the whole version against its manifest. -EBADMSG (through the integrity hook): it fails them. */
static int reuse_scan(struct store_import *imp)
{
	uint8_t m[STORE_MANIFEST_LEN];
	int r;

	r = store_version_scan_named(imp->st, imp->ds.info.id, imp->reuse_version,
				     reuse_note_named, imp, m);
	if (r < 0)
		return r;
	if (sodium_memcmp(m, imp->reuse_manifest, sizeof(m)) != 0)
		return store_integrity(imp->st, imp->ds.info.id, imp->reuse_version, "version %u of "
				       "dataset %llu does not match its manifest (a record was "
				       "removed or added)", imp->reuse_version,
				       (unsigned long long)imp->ds.info.id);
	return 0;
}

static void *reuse_scan_main(void *arg)
{
	struct store_import *imp = arg;

	err_clear();
	imp->scan_r = reuse_scan(imp);
	if (imp->scan_r < 0)
		snprintf(imp->scan_err, sizeof(imp->scan_err), "%s", err_detail());
	return NULL;
}

/* The tables of what this version may share are complete: the scan begun by reuse_load() is
 * joined (a no-op once done). A version that failed its checks is not shared from (the integrity
 * hook has reported it); any other failure of the scan fails the import. */
static int reuse_wait(struct store_import *imp)
{
	int r;

	if (!imp->scan_running)
		return 0;
	pthread_join(imp->scan_thread, NULL);
	imp->scan_running = false;
	r = imp->scan_r;
	if (r == -EBADMSG) {
		reuse_drop(imp);
		return 0;
	}
	if (r < 0)
		return imp_fail(imp, r, "%s", imp->scan_err[0] ? imp->scan_err : strerror(-r));
	return 0;
}

/* Set up the tables of the objects of the dataset's latest version, and start reading them
 * (reuse_scan(), on its own thread when one can be made). */
static int reuse_load(struct store_import *imp)
{
	struct store_version_info vi;
	uint32_t ver = imp->ds.info.latest_version;
	uint64_t want;
	int r;

	/* The newest version not erased (an erased version's number stays given out), among the
	 * last REUSE_LOOKBACK numbers: a new version shares with what is there now. */
	for (unsigned k = 0;; k++, ver--) {
		r = store_version_get(imp->st, imp->ds.info.id, ver, &vi);
		if (r != -ENOENT)
			break;
		if (ver == 1 || k + 1 == REUSE_LOOKBACK) {
			err_clear();
			return 0;   /* none: nothing to share */
		}
	}
	if (r < 0)
		return r;
	memcpy(imp->reuse_manifest, vi.manifest, sizeof(imp->reuse_manifest));
	want = MIN(vi.files, (uint64_t)IMPORT_REUSE_MAX);
	if (want == 0)
		return 0;
	imp->reuse_cap = 16;
	while (imp->reuse_cap < 2 * want)
		imp->reuse_cap *= 2;
	imp->reuse_sizes_cap = imp->reuse_cap;
	imp->reuse = mem_take(imp, imp->reuse_cap * sizeof(*imp->reuse), MEM_ZERO);
	imp->reuse_sizes = mem_take(imp, imp->reuse_sizes_cap * sizeof(*imp->reuse_sizes),
				    MEM_ZERO);
	if (!imp->reuse || !imp->reuse_sizes)
		return -ENOMEM;
	imp->reuse_version = ver;
	imp->reuse_created_ns = vi.created_ns;
	/* The files with a stamp by their place too, unless every file is to be read anyway: at
	 * most STAMPS_MAX (about 250 bytes each), the others looked up in the index. */
	if (!imp->rehash) {
		size_t n = MIN(vi.files, (uint64_t)import_stamps_max);

		imp->stamps_cap = 16;
		while (imp->stamps_cap < 2 * n)
			imp->stamps_cap *= 2;
		imp->stamps_max = n;
		imp->stamp_slots = mem_take(imp, imp->stamps_cap * sizeof(*imp->stamp_slots),
					    MEM_ZERO);
		imp->stamps = mem_take(imp, MAX(n, (size_t)1) * sizeof(*imp->stamps), 0);
		if (!imp->stamps || !imp->stamp_slots)
			return -ENOMEM;
		imp->stamps_partial = vi.files > n;
		buf_init(&imp->stamp_names, (size_t)n * STORE_NAME_MAX);
	}
	/* The client is waiting for begin's answer, and has its walk to do after it: the scan
	 * overlaps with that instead of delaying the answer. */
	if (pthread_create(&imp->scan_thread, NULL, reuse_scan_main, imp) == 0) {
		imp->scan_running = true;
		return 0;
	}
	return reuse_scan(imp);
}

static bool reuse_size_known(struct store_import *imp, uint64_t size)
{
	if (!imp->reuse_sizes)
		return false;
	for (size_t i = size_slot(size, imp->reuse_sizes_cap); imp->reuse_sizes[i];
	     i = (i + 1) & (imp->reuse_sizes_cap - 1))
		if (imp->reuse_sizes[i] == size + 1)
			return true;
	return false;
}

/* The keyed content hash of the file at fd (size bytes), read before anything is written. */
static int content_mac_read(struct store_import *imp, int fd, const char *path, uint64_t size,
			    uint8_t mac[static STORE_CONTENT_MAC_LEN])
{
	uint8_t probe;
	ssize_t got;

	crypto_hash_init_keyed(imp->chash, imp->content_key);
	for (uint64_t off = 0; off < size;) {
		size_t n = (size_t)MIN((uint64_t)IMPORT_HBUF, size - off);

		imp->hbuf_hw = MAX(imp->hbuf_hw, n);
		got = pread_full(fd, imp->hbuf, n, off);
		if (got < 0)
			return imp_fail(imp, (int)got, "%s: read failed: %s", path,
					strerror((int)-got));
		if ((size_t)got != n)
			return imp_fail(imp, -EIO, "%s: the file shrank while it was imported", path);
		crypto_hash_update(imp->chash, imp->hbuf, n);
		imp->stats.read_bytes += n;
		off += n;
	}
	if (pread_full(fd, &probe, 1, size) != 0)
		return imp_fail(imp, -EIO, "%s: the file grew while it was imported", path);
	crypto_hash_final(imp->chash, mac);
	return 0;
}

/* ---- Source stamps ------------------------------------------------------------------------- */

/* A source file's identity as fstat saw it before it was read, (st_dev, st_ino, st_size,
 * st_mtim, st_ctim), keyed-hashed under the content key with its own context (docs/FORMAT.md
 * "Shared objects"): the index never holds the source's metadata in the clear. */
static void stamp_make(struct store_import *imp, const struct stat *s, bool plain,
		       uint8_t out[static STORE_CONTENT_MAC_LEN])
{
	/* Two contexts (docs/FORMAT.md 6.13): "plain" when the import that read the file showed
	 * its head to the divert predicate (the Crypt4GH magic) and was let through, so a later
	 * import that diverts need not read the head again while the stamp holds; the other when
	 * nothing looked (--keep-crypt4gh, the single-file calls, and every stamp recorded before
	 * the distinction), which such an import must read again. */
	static const char ctx_raw[] = "enclave source stamp v1";
	static const char ctx_plain[] = "enclave source stamp v1 plain";
	uint8_t b[sizeof(ctx_plain) + 7 * 8];
	size_t c = plain ? sizeof(ctx_plain) : sizeof(ctx_raw);   /* its NUL too */

	memcpy(b, plain ? ctx_plain : ctx_raw, c);
	put_le64(b + c, (uint64_t)s->st_dev);
	put_le64(b + c + 8, (uint64_t)s->st_ino);
	put_le64(b + c + 16, (uint64_t)s->st_size);
	put_le64(b + c + 24, (uint64_t)s->st_mtim.tv_sec);
	put_le64(b + c + 32, (uint64_t)s->st_mtim.tv_nsec);
	put_le64(b + c + 40, (uint64_t)s->st_ctim.tv_sec);
	put_le64(b + c + 48, (uint64_t)s->st_ctim.tv_nsec);
	/* One compression (the key block's is done once, crypto_mac_key_new()); the digest is that
	 * of crypto_hash_init_keyed(content_key) over the same bytes. */
	crypto_mac(imp->stamp_mk, b, c + 7 * 8, out);
	sodium_memzero(b, sizeof(b));
}

/* What stamp_find() found: no stamp to trust (read the file), the stamp of a file whose head
 * nobody checked, or of one the divert predicate let through (its head need not be read). */
enum stamp_match {
	STAMP_NONE = 0,
	STAMP_RAW = 1,
	STAMP_PLAIN = 2,
};

/* A file changed less than this before the previous import began is always read: a change
 * within the same timestamp tick as that import's read leaves mtime and ctime as they were. */
#define STAMP_RACY_NS (2 * 1000000000ll)

/* The previous version's inode of path, as store_path_lookup() finds it, its directory looked up
 * once for all the files in it. */
static int stamp_lookup(struct store_import *imp, const char *path, struct store_inode *ret)
{
	const char *slash = strrchr(path, '/');
	size_t plen = slash ? (size_t)(slash - path) : 0;
	struct store_inode dir;
	int r;

	if (plen > STORE_PATH_MAX)
		return -ENOENT;
	if (!imp->stamp_dir_known || plen != imp->stamp_dir_len ||
	    memcmp(path, imp->stamp_dir, plen) != 0) {
		imp->stamp_dir_known = false;
		memcpy(imp->stamp_dir, path, plen);
		imp->stamp_dir[plen] = '\0';
		r = store_path_lookup(imp->st, imp->ds.info.id, imp->reuse_version,
				      plen ? imp->stamp_dir : ".", &dir);
		if (r < 0 && r != -ENOENT && r != -ENOTDIR)
			return r;
		imp->stamp_dir_ino = r == 0 && dir.type == STORE_INODE_DIR ? dir.ino : 0;
		imp->stamp_dir_len = plen;
		imp->stamp_dir_known = true;
	}
	if (!imp->stamp_dir_ino)
		return -ENOENT;
	/* The files kept from the scan at begin: no index read, no unseal. A file not kept has
	 * no stamp (or is no file) there, unless the table could not hold them all. */
	if (imp->stamps) {
		const char *name = slash ? slash + 1 : path;
		const struct stamp_ent *e = stamp_ent_find(imp, imp->stamp_dir_ino, name,
							   strlen(name));

		if (e) {
			*ret = e->in;
			return 0;
		}
		if (!imp->stamps_partial)
			return -ENOENT;
	}
	return store_dir_lookup(imp->st, imp->ds.info.id, imp->reuse_version, imp->stamp_dir_ino,
				slash ? slash + 1 : path, ret);
}

/* STAMP_RAW or STAMP_PLAIN (which context the recorded stamp has) and the previous version's
 * inode of path in *old when it holds the file s describes, with the same stamp, size and both
 * times well before that version's import began: the file is then unchanged and need not be
 * read. STAMP_NONE otherwise (read it), < 0 on an index failure. */
static int stamp_find(struct store_import *imp, const char *path, const struct stat *s,
		      struct store_inode *old)
{
	uint8_t stamp[STORE_CONTENT_MAC_LEN];
	int64_t limit = imp->reuse_created_ns - STAMP_RACY_NS;
	int r;

	if (imp->rehash || !imp->reuse || !s || !S_ISREG(s->st_mode))
		return 0;
	if ((int64_t)s->st_mtim.tv_sec * 1000000000 + s->st_mtim.tv_nsec >= limit ||
	    (int64_t)s->st_ctim.tv_sec * 1000000000 + s->st_ctim.tv_nsec >= limit)
		return 0;
	r = stamp_lookup(imp, path, old);
	if (r == -ENOENT || r == -ENOTDIR) {
		err_clear();
		return 0;
	}
	if (r < 0)
		return r;
	if (old->type != STORE_INODE_FILE || !old->ext.has_content_mac || !old->ext.has_stamp ||
	    old->size != (uint64_t)s->st_size)
		return 0;
	stamp_make(imp, s, true, stamp);
	if (sodium_memcmp(stamp, old->ext.stamp, sizeof(stamp)) == 0)
		return STAMP_PLAIN;
	stamp_make(imp, s, false, stamp);
	return sodium_memcmp(stamp, old->ext.stamp, sizeof(stamp)) == 0 ? STAMP_RAW : STAMP_NONE;
}

/* Share the object of the previous version's inode old (found by stamp_find) as ino's: its key
 * unwrapped under that version's key and wrapped under this one's, as reuse_lookup() does. */
static int stamp_reuse(struct store_import *imp, const struct store_inode *old, const char *path,
		       struct store_inode *ino)
{
	crypto_key *okey = NULL;
	int r;

	ino->ext = old->ext;
	r = unwrap_reused_key(imp, old, &okey);
	if (r == 0 && import_test_rewrap_fail && strcmp(path, import_test_rewrap_fail) == 0) {
		crypto_key_free(okey);
		okey = NULL;
		r = -EBADMSG;
	}
	if (r < 0)
		return imp_fail(imp, r, "%s: the object key of inode %llu of version %u does not "
				"unwrap", path, (unsigned long long)old->ino, imp->reuse_version);
	r = wrap_object_key(imp, okey, ino);
	crypto_key_free(okey);
	if (r < 0)
		return imp_fail(imp, r, "%s: cannot wrap the object key", path);
	imp->stats.bytes += ino->size;
	imp->stats.reused_files++;
	imp->stats.reused_bytes += ino->size;
	imp->stats.stamped_files++;
	return 0;
}

/* If the previous version holds an object with the content of the file src, point ino at it
 * (its key wrapped for this version) and return 1; 0 when there is none (the file is written).
 * A stream (a Crypt4GH file decrypted as it is read) can be read only once: it is always
 * written, and its hash taken on the way, for later versions to share. */
static int reuse_lookup(struct store_import *imp, const uint8_t mac[static STORE_CONTENT_MAC_LEN],
			const char *path, struct store_inode *ino);

static int reuse_object(struct store_import *imp, const struct obj_src *src, const char *path,
			struct store_inode *ino)
{
	uint8_t mac[STORE_CONTENT_MAC_LEN];
	int r;

	if (src->fd < 0 || !reuse_size_known(imp, ino->size))
		return 0;
	r = content_mac_read(imp, src->fd, path, ino->size, mac);
	if (r < 0)
		return r;
	return reuse_lookup(imp, mac, path, ino);
}

/* 1 and the previous version's inode in *old whose content hash is mac and size size, 0 if it
 * has none, < 0 on an index failure. */
static int reuse_find(struct store_import *imp, const uint8_t mac[static STORE_CONTENT_MAC_LEN],
		      uint64_t size, struct store_inode *old)
{
	const struct reuse_ent *e = NULL;
	int r;

	for (size_t i = reuse_slot(mac, imp->reuse_cap); imp->reuse[i].ino;
	     i = (i + 1) & (imp->reuse_cap - 1))
		if (memcmp(imp->reuse[i].mac, mac, REUSE_PREFIX) == 0) {
			e = &imp->reuse[i];
			break;
		}
	if (!e)
		return 0;
	r = store_inode_get(imp->st, imp->ds.info.id, imp->reuse_version, e->ino, old);
	if (r < 0)
		return imp_fail_detail(imp, r);
	/* The whole hash, and the size, from the authenticated record. */
	return old->type == STORE_INODE_FILE && old->ext.has_content_mac && old->size == size &&
	       sodium_memcmp(old->ext.content_mac, mac, STORE_CONTENT_MAC_LEN) == 0;
}

/* The object of the previous version whose content hash is mac, if any: as reuse_object(). A
 * tiny file's group is shared only whole, by tiny files (share_member()). */
static int reuse_lookup(struct store_import *imp, const uint8_t mac[static STORE_CONTENT_MAC_LEN],
			const char *path, struct store_inode *ino)
{
	struct store_inode old;
	crypto_key *okey = NULL;
	int r;

	r = reuse_find(imp, mac, ino->size, &old);
	if (r <= 0 || old.ext.grouped)
		return r < 0 ? r : 0;
	ino->ext = old.ext;
	r = unwrap_reused_key(imp, &old, &okey);
	if (r < 0)
		return imp_fail(imp, r, "%s: the object key of inode %llu of version %u does not "
				"unwrap", path, (unsigned long long)old.ino, imp->reuse_version);
	r = wrap_object_key(imp, okey, ino);
	crypto_key_free(okey);
	if (r < 0)
		return imp_fail(imp, r, "%s: cannot wrap the object key", path);
	imp->stats.bytes += ino->size;
	imp->stats.reused_files++;
	imp->stats.reused_bytes += ino->size;
	return 1;
}

/* Start a new pack if an object of size bytes does not fit in this one. */
static int pack_room(struct store_import *imp, uint64_t size)
{
	if (imp->wpos > PACK_HEADER_LEN &&
	    ALIGN_UP(imp->wpos, (uint64_t)STORE_ALIGN) + object_span(size, imp->chunk_size) >
		    imp->st->pack_target)
		return pack_rotate(imp);
	return 0;
}

/* A small file (a dense object, docs/FORMAT.md 4.7): read whole with one pread straight into the
 * stream buffer where its ciphertext goes, hashed there, and then either shared with the
 * previous version (nothing written) or encrypted in place. One read instead of the separate
 * reads of hashing, encrypting and the checks for a file that changed size (issue 13 point 5);
 * the hash is still of exactly the bytes encrypted. */
static int small_object(struct store_import *imp, const struct obj_src *src, const char *path,
			struct store_inode *ino)
{
	const uint64_t size = ino->size;
	const struct pf_file *pf = src->staged;
	uint8_t mac[STORE_CONTENT_MAC_LEN];
	crypto_key *okey = NULL;
	uint8_t *p = NULL;
	ssize_t got;
	int r;

	if (pf) {
		/* Read and hashed already (store_import_add_files()): into the stream only if it
		 * is to be written. */
		got = pf->got;
	} else {
		r = pack_room(imp, size);
		if (r == 0)
			r = stream_reserve(imp, (size_t)size + CRYPTO_TAG_LEN, &p);
		if (r < 0)
			return r;
		/* One byte more than fstat said: it lands where the tag goes, and shows a file
		 * that grew. */
		got = pread_full(src->fd, p, (size_t)size + 1, 0);
	}
	if (got < 0)
		return imp_fail(imp, (int)got, "%s: read failed: %s", path, strerror((int)-got));
	if ((uint64_t)got < size)
		return imp_fail(imp, -EIO, "%s: the file shrank while it was imported", path);
	if ((uint64_t)got > size)
		return imp_fail(imp, -EIO, "%s: the file grew while it was imported", path);
	imp->stats.read_bytes += size;
	if (pf) {
		memcpy(mac, pf->mac, sizeof(mac));
	} else {
		crypto_hash_init_keyed(imp->chash, imp->content_key);
		crypto_hash_update(imp->chash, p, (size_t)size);
		crypto_hash_final(imp->chash, mac);
	}
	if (reuse_size_known(imp, size)) {
		r = reuse_lookup(imp, mac, path, ino);
		if (r != 0) {
			if (p)
				sodium_memzero(p, (size_t)size + 1);   /* plaintext, never written */
			return r < 0 ? r : 0;
		}
	}
	if (pf) {
		r = pack_room(imp, size);
		if (r == 0)
			r = stream_reserve(imp, (size_t)size + CRYPTO_TAG_LEN, &p);
		if (r < 0)
			return r;
		memcpy(p, pf->data, (size_t)size);
	}
	ino->ext.pack_id = imp->pack_id;
	ino->ext.offset = imp->wpos;
	ino->ext.chunk_size = imp->chunk_size;
	ino->ext.alg = imp->alg;
	memcpy(ino->ext.content_mac, mac, sizeof(mac));
	ino->ext.has_content_mac = true;
	crypto_random(ino->ext.object_id, sizeof(ino->ext.object_id));
	r = crypto_key_generate(&okey);
	if (r == 0)
		r = crypto_chunk_ctx_rekey(imp->cctx, imp->alg, okey, ino->ext.object_id);
	if (r == 0)
		r = crypto_chunk_encrypt(imp->cctx, 0, true, p, (size_t)size, p, p + size);
	if (r < 0) {
		crypto_key_free(okey);
		sodium_memzero(p, (size_t)size + 1);
		return imp_fail(imp, r, "%s: encryption failed: %s", path, strerror(-r));
	}
	stream_advance(imp, (size_t)size + CRYPTO_TAG_LEN);
	imp->stats.bytes += size;
	r = wrap_object_key(imp, okey, ino);
	crypto_key_free(okey);
	if (r < 0)
		return imp_fail(imp, r, "%s: cannot wrap the object key", path);
	return 0;
}

/* ---- Tiny files ---------------------------------------------------------------------------- */

/* The records of group member ino, named name in directory parent, but its directory entry:
 * the group key gkey wrapped for it (the AD naming its place in the group), its inode record and
 * its manifest leaf. group_flush() and share_complete() each write one member this way. */
static int member_put(struct store_import *imp, const crypto_key *gkey, struct store_inode *ino,
		      const struct dir_ent *parent, const char *name)
{
	int r = wrap_object_key(imp, gkey, ino);

	if (r < 0)
		return imp_fail(imp, r, "%s: cannot wrap the group key", name);
	r = put_inode(imp, ino, NULL);
	if (r < 0)
		return r;
	manifest_leaf(imp->man_files, ino->ino, parent->ino, name, strlen(name), imp->plain.data,
		      imp->plain.len);
	return 0;
}

/* Write the open group (docs/FORMAT.md 4.10) as one dense object under a fresh key, then the
 * records of its members: each gets its inode number now, its own wrapping of the group key
 * (the AD naming its place in the group), its manifest leaf and its directory entry. */
static int group_flush(struct store_import *imp)
{
	const size_t size = imp->grp_len;
	struct store_inode ino = { .type = STORE_INODE_FILE, .nlink = 1 };
	crypto_key *okey = NULL;
	uint8_t *p;
	int r;

	if (imp->grp_n == 0)
		return 0;
	if (imp->err)
		return imp_sticky(imp);
	r = pack_room(imp, size);
	if (r == 0)
		r = stream_reserve(imp, size + CRYPTO_TAG_LEN, &p);
	if (r < 0)
		return r;
	ino.ext.pack_id = imp->pack_id;
	ino.ext.offset = imp->wpos;
	ino.ext.chunk_size = imp->chunk_size;
	ino.ext.alg = imp->alg;
	ino.ext.grouped = true;
	ino.ext.group_size = (uint32_t)size;
	ino.ext.has_content_mac = true;
	ino.ext.has_stamp = true;
	crypto_random(ino.ext.object_id, sizeof(ino.ext.object_id));
	r = crypto_key_generate(&okey);
	if (r == 0)
		r = crypto_chunk_ctx_rekey(imp->cctx, imp->alg, okey, ino.ext.object_id);
	if (r == 0)
		r = crypto_chunk_encrypt(imp->cctx, 0, true, size ? imp->grp : NULL, size, p,
					 p + size);
	explicit_bzero(imp->grp, imp->grp_len);
	imp->grp_len = 0;
	if (r < 0) {
		crypto_key_free(okey);
		return imp_fail(imp, r, "a group of tiny files: encryption failed: %s",
				strerror(-r));
	}
	stream_advance(imp, size + CRYPTO_TAG_LEN);
	for (size_t i = 0; i < imp->grp_n && r == 0; i++) {
		struct grp_member *m = &imp->grp_m[i];
		struct dir_ent *parent = &imp->dirs[m->dir];

		ino.ino = imp->next_ino++;
		ino.mode = m->mode;
		ino.mtime_ns = m->mtime_ns;
		ino.size = m->len;
		ino.ext.member_off = m->off;
		ino.ext.member_idx = (uint16_t)i;
		ino.ext.member_count = (uint16_t)imp->grp_n;
		memcpy(ino.ext.content_mac, m->mac, sizeof(m->mac));
		memcpy(ino.ext.stamp, m->stamp, sizeof(m->stamp));
		r = member_put(imp, okey, &ino, parent, m->name);
		if (r < 0)
			break;
		r = put_dirent(imp, parent, m->name, ino.ino, STORE_INODE_FILE);
	}
	crypto_key_free(okey);
	for (size_t i = 0; i < imp->grp_n; i++) {
		free(imp->grp_m[i].name);
		imp->grp_m[i].name = NULL;
	}
	imp->grp_n = 0;
	return r;
}

/* Room for size more bytes in the open group (written first if they do not fit): where they go. */
static int group_room(struct store_import *imp, uint64_t size, uint8_t **ret)
{
	int r;

	if (imp->grp_len + size > STORE_GROUP_MAX || imp->grp_n == STORE_GROUP_MEMBERS_MAX) {
		r = group_flush(imp);
		if (r < 0)
			return r;
	}
	*ret = imp->grp + imp->grp_len;
	return 0;
}

/* The file whose size bytes of plaintext group_room() gave room for, and which are there now,
 * joins the open group; its records follow when the group is written. */
static int group_add(struct store_import *imp, size_t dir, const char *name, uint32_t mode,
		     int64_t mtime_ns, uint64_t size, const uint8_t mac[static STORE_CONTENT_MAC_LEN],
		     const uint8_t stamp[static STORE_CONTENT_MAC_LEN])
{
	struct grp_member *m = &imp->grp_m[imp->grp_n];

	*m = (struct grp_member){
		.dir = dir,
		.mode = mode,
		.mtime_ns = mtime_ns,
		.off = (uint32_t)imp->grp_len,
		.len = (uint32_t)size,
	};
	m->name = strdup(name);
	if (!m->name) {
		explicit_bzero(imp->grp + imp->grp_len, (size_t)size);
		return imp_fail(imp, -ENOMEM, "out of memory");
	}
	memcpy(m->mac, mac, STORE_CONTENT_MAC_LEN);
	memcpy(m->stamp, stamp, STORE_CONTENT_MAC_LEN);
	imp->grp_n++;
	imp->grp_len += (size_t)size;
	return 0;
}

static void share_clear(struct store_import *imp)
{
	for (size_t i = 0; i < STORE_GROUP_MEMBERS_MAX && imp->shr_m; i++) {
		free(imp->shr_m[i].name);
		imp->shr_m[i].name = NULL;
	}
	if (imp->shr_plain)
		explicit_bzero(imp->shr_plain, STORE_GROUP_MAX);
	imp->shr_n = 0;
	imp->shr_count = 0;
}

/* Every member of the previous version's group turned up: this version shares the group. Each
 * member's record is that of the previous version with the group key wrapped again under this
 * version's key (its AD naming the member's place), and the source stamp of now. */
static int share_complete(struct store_import *imp)
{
	crypto_key *gkey = NULL;
	int r;

	r = unwrap_reused_key(imp, &imp->shr_m[0].old, &gkey);
	if (r < 0)
		return imp_fail(imp, r, "%s: the group key of inode %llu of version %u does not "
				"unwrap", imp->shr_m[0].name,
				(unsigned long long)imp->shr_m[0].old.ino, imp->reuse_version);
	for (size_t i = 0; i < imp->shr_count && r == 0; i++) {
		const struct shr_member *m = &imp->shr_m[i];
		struct dir_ent *parent = &imp->dirs[m->dir];
		struct store_inode ino = {
			.ino = imp->next_ino++,
			.type = STORE_INODE_FILE,
			.mode = m->mode,
			.mtime_ns = m->mtime_ns,
			.size = m->old.size,
			.nlink = 1,
			.ext = m->old.ext,
		};

		memcpy(ino.ext.stamp, m->stamp, sizeof(m->stamp));
		ino.ext.has_stamp = true;
		r = member_put(imp, gkey, &ino, parent, m->name);
		if (r < 0)
			break;
		r = put_dirent(imp, parent, m->name, ino.ino, STORE_INODE_FILE);
		imp->stats.reused_files++;
		imp->stats.reused_bytes += ino.size;
		if (m->stamped)
			imp->stats.stamped_files++;
	}
	crypto_key_free(gkey);
	share_clear(imp);
	return r;
}

/* The plaintext of a member of the previous version's group (old), read through the store. */
static int member_plain(struct store_import *imp, const struct store_inode *old, uint8_t *out)
{
	struct store_object *obj = NULL;
	ssize_t got;
	int r = 0;

	if (!imp->rd)
		r = store_reader_new(imp->st, &imp->rd);
	if (r == 0)
		r = store_object_open(imp->st, imp->ds.info.id, old, &obj);
	if (r < 0)
		return imp_fail_detail(imp, r);
	got = store_object_read(imp->rd, obj, 0, (size_t)old->size, out);
	store_object_close(obj);
	if (got == -EBADMSG || got == -ENODATA)
		return imp_fail(imp, store_integrity(imp->st, imp->ds.info.id, imp->reuse_version,
						     "a group of tiny files of version %u of "
						     "dataset %llu failed authentication",
						     imp->reuse_version,
						     (unsigned long long)imp->ds.info.id),
				"%s", err_detail());
	if (got < 0)
		return imp_fail_detail(imp, (int)got);
	if ((uint64_t)got != old->size)
		return imp_fail(imp, -EIO, "a member of a group of version %u is short",
				imp->reuse_version);
	return 0;
}

/* Not every member of the group being shared turned up: the members found are copied into this
 * version's own group, so that no version ever wraps the key of a group holding a file it does
 * not hold itself (docs/FORMAT.md 4.10: erasing the other version must leave nothing of its own
 * readable). Their plaintext is what was read from their source, or read from the group. */
static int share_break(struct store_import *imp)
{
	int r = 0;

	for (size_t i = 0; i < imp->shr_count && r == 0; i++) {
		struct shr_member *m = &imp->shr_m[i];
		const uint8_t *plain = imp->shr_plain + m->old.ext.member_off;
		uint8_t *p = NULL;

		if (!m->name)
			continue;
		if (!m->has_plain)
			r = member_plain(imp, &m->old, imp->shr_plain + m->old.ext.member_off);
		if (r == 0)
			r = group_room(imp, m->old.size, &p);
		if (r < 0)
			break;
		memcpy(p, plain, (size_t)m->old.size);
		r = group_add(imp, m->dir, m->name, m->mode, m->mtime_ns, m->old.size,
			      m->old.ext.content_mac, m->stamp);
	}
	share_clear(imp);
	return r;
}

/* A tiny file whose content the previous version holds as member old of a group: it joins the
 * set of members found of that group (returns 1; stamped: found by its source stamp, unread;
 * plain: its plaintext when it was read). 0: it cannot (another file already took that member,
 * or the records disagree), and the caller stores it in this version's own group. A member of
 * another group than the one being shared ends that one (share_break()): the members of a group
 * arrive together when a tree is imported again in the same order. */
static int share_member(struct store_import *imp, const struct store_inode *old, size_t dir,
			const char *name, uint32_t mode, int64_t mtime_ns,
			const uint8_t stamp[static STORE_CONTENT_MAC_LEN], bool stamped,
			const uint8_t *plain)
{
	const uint16_t idx = old->ext.member_idx;
	struct shr_member *m;
	int r;

	if (imp->shr_n && memcmp(imp->shr_id, old->ext.object_id, CRYPTO_OBJECT_ID_LEN) != 0) {
		r = share_break(imp);
		if (r < 0)
			return r;
	}
	if (imp->shr_n == 0) {
		memcpy(imp->shr_id, old->ext.object_id, CRYPTO_OBJECT_ID_LEN);
		imp->shr_count = old->ext.member_count;
	} else {
		const struct store_extent *a = &old->ext, *b = NULL;

		for (size_t i = 0; !b && i < imp->shr_count; i++)
			if (imp->shr_m[i].name)
				b = &imp->shr_m[i].old.ext;
		if (a->member_count != imp->shr_count || a->pack_id != b->pack_id ||
		    a->offset != b->offset || a->group_size != b->group_size ||
		    a->chunk_size != b->chunk_size || a->alg != b->alg)
			return 0;
	}
	if (idx >= imp->shr_count || imp->shr_m[idx].name)
		return 0;
	m = &imp->shr_m[idx];
	*m = (struct shr_member){
		.dir = dir,
		.mode = mode,
		.mtime_ns = mtime_ns,
		.old = *old,
		.stamped = stamped,
		.has_plain = plain != NULL,
	};
	m->name = strdup(name);
	if (!m->name)
		return imp_fail(imp, -ENOMEM, "out of memory");
	memcpy(m->stamp, stamp, STORE_CONTENT_MAC_LEN);
	if (plain)
		memcpy(imp->shr_plain + old->ext.member_off, plain, (size_t)old->size);
	imp->shr_n++;
	imp->stats.bytes += old->size;
	if (imp->shr_n == imp->shr_count) {
		r = share_complete(imp);
		if (r < 0)
			return r;
	}
	return 1;
}

/* A tiny file (at most STORE_TINY_MAX bytes, read from a descriptor; stamp: its source stamp
 * for the record): read whole (or taken from the batch prefetch) and hashed, then shared with the previous version if that holds its
 * content as an object of its own (returns 0, ino filled in) or as a member of a group
 * (share_member()), or else added to the open group (returns 1 in both cases: its records follow
 * when the group is written or shared). */
static int tiny_file(struct store_import *imp, const struct obj_src *src, const char *path,
		     size_t dir, const char *name, const uint8_t stamp[static STORE_CONTENT_MAC_LEN],
		     struct store_inode *ino)
{
	const uint64_t size = ino->size;
	const struct pf_file *pf = src->staged;
	uint8_t mac[STORE_CONTENT_MAC_LEN];
	struct store_inode old;
	uint8_t *p;
	ssize_t got;
	int r;

	r = group_room(imp, size, &p);
	if (r < 0)
		return r;
	/* imp->grp has one byte more than a full group: the byte that shows a file that grew. */
	if (pf) {
		got = pf->got;
		if (got >= 0 && (uint64_t)got <= size)
			memcpy(p, pf->data, (size_t)got);
	} else {
		got = pread_full(src->fd, p, (size_t)size + 1, 0);
	}
	if (got < 0)
		r = imp_fail(imp, (int)got, "%s: read failed: %s", path, strerror((int)-got));
	else if ((uint64_t)got < size)
		r = imp_fail(imp, -EIO, "%s: the file shrank while it was imported", path);
	else if ((uint64_t)got > size)
		r = imp_fail(imp, -EIO, "%s: the file grew while it was imported", path);
	if (r < 0)
		goto out_wipe;
	p[size] = 0;   /* the probe byte, if one was read */
	imp->stats.read_bytes += size;
	if (pf) {
		memcpy(mac, pf->mac, sizeof(mac));
	} else {
		crypto_hash_init_keyed(imp->chash, imp->content_key);
		crypto_hash_update(imp->chash, p, (size_t)size);
		crypto_hash_final(imp->chash, mac);
	}
	if (reuse_size_known(imp, size)) {
		r = reuse_find(imp, mac, size, &old);
		if (r > 0 && !old.ext.grouped) {
			/* An object of its own in the previous version (imported before groups). */
			r = reuse_lookup(imp, mac, path, ino);
			if (r != 0) {
				r = r < 0 ? r : 0;
				goto out_wipe;
			}
		} else if (r > 0) {
			/* Ending another shared group moves the open group's bytes: the file's
			 * plaintext is kept aside meanwhile. */
			uint8_t keep[STORE_TINY_MAX];

			memcpy(keep, p, (size_t)size);
			explicit_bzero(p, (size_t)size + 1);
			r = share_member(imp, &old, dir, name, ino->mode, ino->mtime_ns, stamp,
					 false, keep);
			if (r == 0)
				r = group_room(imp, size, &p);
			if (r == 0)
				memcpy(p, keep, (size_t)size);
			explicit_bzero(keep, sizeof(keep));
			if (r != 0)
				return r;   /* shared (1), or failed: nothing of it left in the group */
		}
		if (r < 0)
			goto out_wipe;
	}
	r = group_add(imp, dir, name, ino->mode, ino->mtime_ns, size, mac, stamp);
	if (r < 0)
		return r;
	imp->stats.bytes += size;
	return 1;

out_wipe:
	explicit_bzero(p, (size_t)size + 1);
	return r;
}

/* Encrypt the object's plaintext (ino->size bytes) into the pack; fill ino->ext, its content hash
 * included (of exactly the bytes encrypted). */
static int write_object(struct store_import *imp, const struct obj_src *src, const char *path,
			struct store_inode *ino)
{
	const uint32_t cs = imp->chunk_size;
	const uint64_t size = ino->size;
	const uint64_t n = object_nchunks(size, cs);
	crypto_key *okey = NULL;
	uint64_t base, left = size;
	/* Large objects go through the pool (see the top of this file). */
	const bool par = imp->nworkers && size >= IMPORT_PAR_MIN;
	/* Dense: right after the previous object, no padding (docs/FORMAT.md 4.7). */
	const bool dense = object_dense(size, cs);
	uint8_t probe;
	uint8_t *p;
	ssize_t got;
	int r;

	r = pack_room(imp, size);
	if (r < 0)
		return r;
	if (!dense) {
		r = stream_align(imp);
		if (r < 0)
			return r;
	}
	base = imp->wpos;
	ino->ext.pack_id = imp->pack_id;
	ino->ext.offset = base;
	ino->ext.chunk_size = cs;
	ino->ext.alg = imp->alg;
	crypto_random(ino->ext.object_id, sizeof(ino->ext.object_id));
	r = crypto_key_generate(&okey);
	if (r == 0)
		r = crypto_chunk_ctx_rekey(imp->cctx, imp->alg, okey, ino->ext.object_id);
	if (r < 0) {
		crypto_key_free(okey);
		return imp_fail(imp, r, "cannot set up the key of %s: %s", path, strerror(-r));
	}
	imp->tagacc_len = 0;
	imp->tagacc_off = base + size;
	crypto_hash_init_keyed(imp->chash, imp->content_key);
	if (par) {
		/* No job of the previous pooled object is left (it settled before its tags). */
		imp->eobj.key = okey;
		memcpy(imp->eobj.id, ino->ext.object_id, sizeof(imp->eobj.id));
		imp->eobj.alg = imp->alg;
		imp->eobj.gen++;
	}

	for (uint64_t idx = 0; idx < n; idx++) {
		size_t clen = (size_t)MIN((uint64_t)cs, left);

		r = stream_reserve(imp, clen, &p);
		if (r < 0)
			goto out;
		got = src_read(src, p, clen, idx * cs);
		if (got < 0) {
			if (src->fd >= 0)
				r = imp_fail(imp, (int)got, "%s: read failed: %s", path,
					     strerror((int)-got));
			else
				r = imp_fail(imp, (int)got, "%s: %s", path, err_detail());
			goto out;
		}
		if ((size_t)got != clen) {
			r = imp_fail(imp, -EIO, "%s: the file shrank while it was imported", path);
			goto out;
		}
		imp->stats.read_bytes += clen;
		/* The plaintext, before it is encrypted in place (here or by the pool). */
		crypto_hash_update(imp->chash, p, clen);
		if (par) {
			struct wbuf *b = imp->cur;

			/* jobs_cap >= buf_size / CRYPTO_CHUNK_MIN + 1 and each job is a chunk of at
			 * least CRYPTO_CHUNK_MIN bytes but the last: there is always room. */
			b->jobs[b->njobs++] = (struct enc_chunk){
				.pos = (uint32_t)(p - b->data),
				.len = (uint32_t)clen,
				.idx = idx,
				.last = idx == n - 1,
				.tag = imp->tagacc + imp->tagacc_len,
			};
		} else {
			r = crypto_chunk_encrypt(imp->cctx, idx, idx == n - 1, p, clen, p,
						 imp->tagacc + imp->tagacc_len);
			if (r < 0) {
				r = imp_fail(imp, r, "%s: encryption failed", path);
				goto out;
			}
		}
		stream_advance(imp, clen);
		imp->tagacc_len += CRYPTO_TAG_LEN;
		left -= clen;
		imp->stats.bytes += clen;
		if (imp->tagacc_len == IMPORT_TAGACC && idx + 1 < n) {
			r = par ? obj_settle(imp, path) : 0;
			if (r == 0)
				r = tags_flush(imp);
			if (r < 0)
				goto out;
		}
		progress(imp, false);
	}
	got = src_read(src, &probe, 1, size);
	if (got < 0 && src->fd < 0) {
		/* A stream checks what is left at its end (a Crypt4GH file: its last segments). */
		r = imp_fail(imp, (int)got, "%s: %s", path, err_detail());
		goto out;
	}
	if (got != 0) {
		r = imp_fail(imp, -EIO, "%s: the file grew while it was imported", path);
		goto out;
	}
	crypto_hash_final(imp->chash, ino->ext.content_mac);
	ino->ext.has_content_mac = true;
	/* Every tag of the object is needed now. */
	if (par) {
		r = obj_settle(imp, path);
		if (r < 0)
			goto out;
	}
	/* The remaining tags and the padding continue the stream. If earlier tags went out in their
	 * own writes (objects of more than IMPORT_TAGACC / 16 chunks), the stream skips over them:
	 * the rest of the tags belong after those, at tagacc_off, not right after the data. */
	if (imp->tagacc_off != imp->wpos) {
		r = stream_flush(imp);
		if (r < 0)
			goto out;
		imp->wpos = imp->tagacc_off;
	}
	r = stream_reserve(imp, imp->tagacc_len, &p);
	if (r < 0)
		goto out;
	memcpy(p, imp->tagacc, imp->tagacc_len);
	stream_advance(imp, imp->tagacc_len);
	imp->tagacc_len = 0;
	if (!dense) {
		r = stream_align(imp);
		if (r < 0)
			goto out;
	}
	r = wrap_object_key(imp, okey, ino);
	if (r < 0)
		r = imp_fail(imp, r, "%s: cannot wrap the object key", path);
out:
	if (par && r < 0) {
		/* The pool may still use okey: wait for it. The current buffer may hold chunks
		 * never encrypted; the import has failed, so it is dropped, never written. */
		if (imp->cur && imp->cur->njobs) {
			imp->cur->njobs = 0;
			imp->cur->len = 0;
			imp->cur = NULL;
		}
		pool_settle(imp);
	}
	if (par)
		imp->eobj.key = NULL;
	crypto_key_free(okey);
	return r;
}

/* ---- Begin, add, commit, abort ------------------------------------------------------------- */

bool store_import_lock_take(struct store *st)
{
	struct timespec t;

	if (pthread_mutex_trylock(&st->import_lock) == 0)
		return true;
	/* The holder has committed and only its release is left (the daemon sends the commit's
	 * reply before it frees the import, so the steward's next request may come first). */
	if (!__atomic_load_n(&st->import_done, __ATOMIC_ACQUIRE))
		return false;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += 1;
	return pthread_mutex_timedlock(&st->import_lock, &t) == 0;
}

int store_import_begin(struct store *st, const char *name, const struct store_import_options *opts,
		       struct store_import **ret_imp)
{
	struct store_import_options o = opts ? *opts : (struct store_import_options){ 0 };
	struct store_import *imp = NULL;
	rocksdb_writebatch_t *wb = NULL;
	int r;

	if (st->secondary)
		return err_set(-EROFS, "a node never writes the store");
	err_clear();
	if (!store_dataset_name_valid(name))
		return err_set(-EINVAL, "'%s' is not a valid dataset name (letters, digits, '.', "
					"'_', '-'; at most %d; not starting with '.' or '-')",
			       name, STORE_DATASET_NAME_MAX);
	if (!o.chunk_size)
		o.chunk_size = CRYPTO_CHUNK_DEFAULT;
	if (!o.alg)
		o.alg = crypto_aead_preferred();
	if (!IS_POW2(o.chunk_size) || o.chunk_size < CRYPTO_CHUNK_MIN ||
	    o.chunk_size > CRYPTO_CHUNK_MAX)
		return err_set(-EINVAL, "chunk size %u: must be a power of two from %u to %u",
			       o.chunk_size, CRYPTO_CHUNK_MIN, CRYPTO_CHUNK_MAX);
	if (!crypto_aead_valid(o.alg))
		return err_set(-EINVAL, "unknown cipher %u", o.alg);
	if (!store_import_lock_take(st))
		return err_set(-EBUSY, "%s", __atomic_load_n(&st->gc_running, __ATOMIC_RELAXED)
			       ? "a garbage collection is running on this store"
			       : "another import is running on this store");

	imp = calloc(1, sizeof(*imp));
	if (!imp) {
		pthread_mutex_unlock(&st->import_lock);
		return -ENOMEM;
	}
	imp->st = st;
	st->import = imp;
	imp->pack_fd = -1;
	imp->chunk_size = o.chunk_size;
	imp->alg = o.alg;
	imp->rehash = o.rehash;
	imp->progress = o.progress;
	imp->progress_ctx = o.progress_ctx;
	imp->created_ns = now_realtime_ns();
	imp->next_ino = STORE_ROOT_INO + 1;
	imp->buf_size = MAX((size_t)IMPORT_BUF_MIN, (size_t)o.chunk_size);
	buf_init(&imp->scratch, 4096);
	/* Held entries are written once they and the batch pass IMPORT_BATCH_BYTES. */
	buf_init(&imp->dq_vals, 2 * IMPORT_BATCH_BYTES);
	buf_init(&imp->plain, 4096);

	/* Checked first (store_dataset_get): an import on top of a lowered `latest` would write
	 * over a committed version. */
	r = store_dataset_get(st, name, &imp->ds.info);
	if (r == 0)
		r = index_dataset_get(st, name, &imp->ds);
	if (r == -ENOENT) {
		imp->new_dataset = true;
		imp->ds = (struct dataset_rec){
			.info = { .id = st->next_dataset_id, .created_ns = imp->created_ns },
		};
		snprintf(imp->ds.info.name, sizeof(imp->ds.info.name), "%s", name);
		r = crypto_key_generate(&imp->dkey);
		imp->version = 1;
	} else if (r == 0) {
		/* The record's latest is the newest number given out, erased or not: numbers of
		 * erased versions are never given out again. */
		if (imp->ds.info.latest_version == UINT32_MAX)
			r = err_set(-EOVERFLOW, "dataset %s has no version numbers left", name);
		imp->version = imp->ds.info.latest_version + 1;
	}
	/* A fresh key for every version; it enters the key ring at the commit. A key the ring
	 * still holds for this number is a crashed commit's, whose version recovery dropped. */
	if (r == 0)
		store_ring_forget(st, imp->ds.info.id, imp->version, imp->new_dataset);
	if (r == 0)
		r = crypto_key_generate(&imp->vkey);
	if (r == 0)
		r = keyring_version_keys(imp->vkey, &imp->ix_seal, &imp->ix_name);
	if (r == 0)
		r = crypto_mac_key_new(imp->ix_name, CRYPTO_NAME_HASH_LEN, &imp->ix_name_mk);
	if (r == 0 && (crypto_hash_new(&imp->man_files) < 0 || crypto_hash_new(&imp->man_dirs) < 0 ||
		       crypto_hash_new(&imp->chash) < 0 ||
		       !(imp->grp = malloc(STORE_GROUP_MAX + 1)) ||
		       !(imp->grp_m = calloc(STORE_GROUP_MEMBERS_MAX, sizeof(*imp->grp_m))) ||
		       !(imp->shr_plain = malloc(STORE_GROUP_MAX)) ||
		       !(imp->shr_m = calloc(STORE_GROUP_MEMBERS_MAX, sizeof(*imp->shr_m)))))
		r = -ENOMEM;
	/* The content key comes from the dataset's key Kd: a new dataset's, or the ring's. */
	if (r == 0) {
		crypto_key *kd = imp->dkey;

		if (!kd)
			r = store_dataset_key(st, imp->ds.info.id, &imp->ds, &kd);
		if (r == 0)
			r = dataset_content_key(kd, &imp->content_key);
		if (r == 0)
			r = crypto_mac_key_new(imp->content_key, STORE_CONTENT_MAC_LEN,
					       &imp->stamp_mk);
	}
	/* What the new version may share: the objects of the latest one. If that version fails its
	 * checks (reported through the integrity hook), the new one shares nothing and stores every
	 * file: a damaged version must not stop the import that replaces it. */
	if (r == 0 && !imp->new_dataset) {
		r = reuse_load(imp);
		if (r == -EBADMSG) {
			reuse_drop(imp);
			err_clear();
			r = 0;
		}
	}
	if (r < 0)
		goto fail;

	/* After the tables of the version shared from, which are written whole, so that they get
	 * the part of the store's import memory the last import touched first. */
	for (unsigned i = 0; i < IMPORT_BUFS; i++) {
		imp->bufs[i].data = mem_take(imp, imp->buf_size, MEM_ALIGNED);
		if (!imp->bufs[i].data) {
			r = -ENOMEM;
			goto fail;
		}
	}
	imp->hbuf = mem_take(imp, IMPORT_HBUF, 0);
	if (!imp->hbuf) {
		r = -ENOMEM;
		goto fail;
	}
	r = io_uring_queue_init(IMPORT_RING_DEPTH, &imp->ring, 0);
	if (r < 0) {
		r = err_set(r, "cannot set up io_uring: %s", strerror(-r));
		goto fail;
	}
	imp->ring_ok = true;
	r = pool_start(imp);
	if (r < 0)
		goto fail;
	{
		/* The chunk context starts keyed with a throwaway key; every object rekeys it. */
		crypto_key *k = NULL;
		uint8_t id[CRYPTO_OBJECT_ID_LEN] = { 0 };

		r = crypto_key_generate(&k);
		if (r == 0)
			r = crypto_chunk_ctx_new(imp->alg, k, id, &imp->cctx);
		crypto_key_free(k);
		if (r < 0)
			goto fail;
	}
	imp->wb = batch_take(st);
	ixw_start(imp);

	/* The pack to append to: the last committed one, unless it is full, damaged or absent.
	 * Appends start after everything in the file, committed or not (see scan_packs()). */
	r = pack_append_open(imp);
	if (r == 0)
		r = pack_new(imp, MAX(st->last_pack_id, st->pack_file_max) + 1);
	if (r < 0)
		goto fail;

	if (import_test_begin_fail) {
		r = err_set(import_test_begin_fail, "test: begin fails");
		goto fail;
	}
	/* The PENDING record goes first, so recovery finds every record of this version. */
	wb = rocksdb_writebatch_create();
	r = put_version(imp, VERSION_PENDING, NULL, wb);
	if (r == 0)
		r = index_write(&st->ix, wb, false);
	rocksdb_writebatch_destroy(wb);
	if (r < 0)
		goto fail;

	/* The root directory. */
	r = dir_table_grow(imp);
	if (r < 0)
		goto fail;
	imp->dirs[0] = (struct dir_ent){ .path = strdup(""), .ino = STORE_ROOT_INO, .mode = 0755,
					 .mtime_ns = imp->created_ns };
	if (!imp->dirs[0].path) {
		r = -ENOMEM;
		goto fail;
	}
	hash_insert(imp, 0);
	imp->ndirs = 1;
	imp->stats.dirs = 1;
	*ret_imp = imp;
	return 0;
fail:
	store_import_free(imp);
	return r;
}

static int add_dir(struct store_import *imp, const char *path, uint32_t mode, int64_t mtime_ns)
{
	size_t n = strnlen(path, STORE_PATH_MAX + 1);
	struct dir_ent *d;
	int r;

	if (imp->err || imp->committed || imp->closed)
		return imp->err ? imp_sticky(imp) : -EINVAL;
	if (n == 1 && path[0] == '.')
		n = 0;
	if (!path_valid(path, n))
		return err_set(-EINVAL, "%.*s: not a valid path in a dataset", (int)MIN(n, 256u),
			       path);
	d = dir_find(imp, path, n);
	if (d && d->explicit)
		return err_set(-EEXIST, "%s: directory already imported", path);
	if (!d) {
		r = dir_ensure(imp, path, n, &d);
		if (r < 0)
			return r;
	}
	d->mode = mode & 07777;
	d->mtime_ns = mtime_ns;
	d->explicit = true;
	return 0;
}

static int64_t stat_mtime_ns(const struct stat *s)
{
	return (int64_t)s->st_mtim.tv_sec * 1000000000 + s->st_mtim.tv_nsec;
}

/* A file (src) of size bytes with these mode bits and mtime, as path. */
static int add_object(struct store_import *imp, const char *path, const struct obj_src *src,
		      uint32_t mode, int64_t mtime_ns, uint64_t size)
{
	size_t n = strnlen(path, STORE_PATH_MAX + 1), slash;
	struct store_inode ino = { .type = STORE_INODE_FILE, .nlink = 1 }, old;
	uint64_t parent_ino;
	struct dir_ent *parent;
	uint8_t stamp[STORE_CONTENT_MAC_LEN];
	bool deferred = false, by_stamp = false, plain;
	int r, match;

	if (imp->err || imp->committed || imp->closed)
		return imp->err ? imp_sticky(imp) : -EINVAL;
	if (n == 0 || !path_valid(path, n))
		return err_set(-EINVAL, "%.*s: not a valid path in a dataset", (int)MIN(n, 256u),
			       path);
	if (dir_find(imp, path, n))
		return err_set(-EEXIST, "%s: already imported as a directory", path);
	r = reuse_wait(imp);
	if (r < 0)
		return r;
	slash = base_start(path, n);
	r = dir_ensure(imp, path, parent_len(slash), &parent);
	if (r < 0)
		return r;
	parent_ino = parent->ino;
	/* A file owed with its descriptor had its name checked, and reserved, when it was claimed
	 * (store_import_add_claimed()): no second look at the index for a name that now comes out
	 * of walk order. */
	r = src->fd >= 0 && owed_take(imp, path) ? 0 : dirent_exists(imp, parent, path + slash);
	if (r != 0)
		return r > 0 ? err_set(-EEXIST, "%s: already imported", path) : r;

	ino.mode = mode & 07777;
	ino.mtime_ns = mtime_ns;
	ino.size = size;
	if (src->seen) {
		r = src->seen->match;
		if (r > 0)
			old = src->seen->old;
	} else {
		r = src->fd >= 0 || src->claimed ? stamp_find(imp, path, src->st, &old) : STAMP_NONE;
	}
	match = r;
	/* A claimed file is imported only by a stamp that holds: the plain one when heads are
	 * checked (docs/FORMAT.md 6.13: a bare one asks for the head to be read), either one
	 * otherwise. Else it must come with its descriptor; nothing of it was imported. */
	if (src->claimed && r >= 0 && r != STAMP_PLAIN && !(r == STAMP_RAW && !src->heads))
		return ADD_NEED;
	/* A tiny file's records wait for its group: its stamp (as below) is taken now. */
	if (r >= 0 && (src->fd >= 0 || src->claimed) && src->st && size <= STORE_TINY_MAX)
		stamp_make(imp, src->st, match == STAMP_PLAIN || (src->seen && src->seen->plain),
			   stamp);
	if (r < 0) {
		r = imp_fail_detail(imp, r);
	} else if (r > 0 && old.ext.grouped) {
		/* A tiny file unchanged since the previous version, where it is a member of a
		 * group: shared if the whole group is, else read and stored in this one's. */
		r = share_member(imp, &old, (size_t)(parent - imp->dirs), path + slash, ino.mode,
				 ino.mtime_ns, stamp, true, NULL);
		/* It cannot join that group: a claimed file has nothing to read it from. */
		if (r == 0 && src->claimed)
			return ADD_NEED;
		if (r == 0)
			r = tiny_file(imp, src, path, (size_t)(parent - imp->dirs), path + slash,
				      stamp, &ino);
		deferred = r > 0;
	} else if (r > 0) {
		r = stamp_reuse(imp, &old, path, &ino);
		by_stamp = true;
	} else if (src->fd >= 0 && src->st && size <= STORE_TINY_MAX) {
		r = tiny_file(imp, src, path, (size_t)(parent - imp->dirs), path + slash, stamp,
			      &ino);
		deferred = r > 0;
	} else if (src->fd >= 0 && object_dense(size, imp->chunk_size)) {
		r = small_object(imp, src, path, &ino);
	} else {
		r = reuse_object(imp, src, path, &ino);
		if (r == 0)
			r = write_object(imp, src, path, &ino);
		else if (r > 0)
			r = 0;
	}
	if (deferred) {
		/* Waiting for its group: its records are written with the group's. The name
		 * counts in its directory now (dirent_exists()). */
		r = dirent_added(imp, parent, path + slash);
		if (r < 0)
			return r;
		parent->entries++;
		imp->stats.files++;
		progress(imp, true);
		return 0;
	}
	/* The stamp of the source as it was before it was read, for the next import: "plain"
	 * when this import's divert predicate let its head through, or when the previous version's
	 * stamp said so and still holds (the same content, so the same head). */
	plain = match == STAMP_PLAIN || (src->seen && src->seen->plain);
	if (by_stamp && plain == (match == STAMP_PLAIN)) {
		/* Shared by a stamp in the same context: ino.ext.stamp, the previous version's, is
		 * the one just made of src->st (stamp_find()). One keyed hash less per file. */
		ino.ext.has_stamp = r == 0;
	} else {
		ino.ext.has_stamp = false;
		if (r == 0 && src->st && ino.ext.has_content_mac) {
			stamp_make(imp, src->st, plain, ino.ext.stamp);
			ino.ext.has_stamp = true;
		}
	}
	ino.ino = imp->next_ino++;
	if (r == 0)
		r = put_inode(imp, &ino, NULL);
	if (r == 0) {
		/* Files reach here in ascending inode order (a tiny file gets its number when its
		 * group is written): the leaves go straight into the manifest's running hash. */
		manifest_leaf(imp->man_files, ino.ino, parent_ino, path + slash, n - slash,
			      imp->plain.data, imp->plain.len);
		r = put_dirent(imp, parent, path + slash, ino.ino, STORE_INODE_FILE);
	}
	if (r < 0)
		return r;
	/* Still valid: no directory was created since dir_ensure() returned it. */
	parent->entries++;
	imp->stats.files++;
	progress(imp, true);
	return 0;
}

/* st: fstat(fd) as the caller took it, or NULL to take it here; staged: the file read and hashed
 * by the batch prefetch, or NULL; seen: the batch's stamp lookup of path, or NULL (looked up
 * here). */
static int add_file(struct store_import *imp, const char *path, int fd, const struct stat *st,
		    const struct pf_file *staged, const struct stamp_seen *seen)
{
	struct obj_src src = { .fd = fd, .staged = staged, .seen = seen };
	struct stat s;

	if (imp->err || imp->committed || imp->closed)
		return imp->err ? imp_sticky(imp) : -EINVAL;
	if (!st) {
		if (fstat(fd, &s) < 0)
			return err_set(-errno, "%s: cannot stat: %s", path, strerror(errno));
		st = &s;
	}
	src.st = st;
	if (!S_ISREG(st->st_mode))
		return err_set(-EINVAL, "%s: not a regular file", path);
	return add_object(imp, path, &src, (uint32_t)st->st_mode, stat_mtime_ns(st),
			  (uint64_t)st->st_size);
}

/* Every failure of an add_* call makes the import fail: a version is all or nothing. */
static int sticky(struct store_import *imp, int r)
{
	if (r < 0 && !imp->err)
		return imp_fail_detail(imp, r);
	return r;
}

int store_import_add_dir(struct store_import *imp, const char *path, uint32_t mode,
			 int64_t mtime_ns)
{
	return sticky(imp, add_dir(imp, path, mode, mtime_ns));
}

int store_import_add_file(struct store_import *imp, const char *path, int fd)
{
	return sticky(imp, add_file(imp, path, fd, NULL, NULL, NULL));
}

int store_import_add_file_stat(struct store_import *imp, const char *path, int fd,
			       const struct stat *st)
{
	if (!st)
		return -EINVAL;
	return sticky(imp, add_file(imp, path, fd, st, NULL, NULL));
}

/* ---- Files told of by their stat (issue 16) ------------------------------------------------ */

static int claim_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Is the claimed file (path, st) one the whole batch may take? Checked for every file before any
 * is imported; -errno with err_detail() naming the file, nothing changed. */
static int claim_check(struct store_import *imp, const char *path, const struct stat *st)
{
	size_t n = strnlen(path, STORE_PATH_MAX + 1), slash;
	struct dir_ent *parent;
	int r;

	if (n == 0 || !path_valid(path, n))
		return err_set(-EINVAL, "%.*s: not a valid path in a dataset", (int)MIN(n, 256u),
			       path);
	if (!S_ISREG(st->st_mode))
		return err_set(-EINVAL, "%s: not a regular file", path);
	if (st->st_size < 0)
		return err_set(-EINVAL, "%s: a negative size", path);
	if (dir_find(imp, path, n))
		return err_set(-EEXIST, "%s: already imported as a directory", path);
	if (owed_has(imp, path))
		return err_set(-EEXIST, "%s: already announced, and its descriptor not yet given",
			       path);
	slash = base_start(path, n);
	parent = dir_find(imp, path, parent_len(slash));
	if (parent) {
		r = dirent_exists(imp, parent, path + slash);
		if (r != 0)
			return r > 0 ? err_set(-EEXIST, "%s: already imported", path) : r;
		return 0;
	}
	/* Its directory is not there yet, so neither is it; but the first missing directory on
	 * the way must not be a file already imported (dir_ensure() would fail the import). */
	for (size_t end = parent_len(slash);;) {
		size_t s = base_start(path, end);
		struct dir_ent *d = dir_find(imp, path, parent_len(s));
		char name[STORE_NAME_MAX + 1];

		if (!d) {
			end = parent_len(s);
			continue;
		}
		snprintf(name, sizeof(name), "%.*s", (int)(end - s), path + s);
		r = dirent_exists(imp, d, name);
		if (r != 0)
			return r > 0 ? err_set(-EEXIST, "%.*s: already imported as a file, not a "
					       "directory", (int)end, path) : r;
		return 0;
	}
}

/* ---- Claimed files sealed in parallel (issue 16) ------------------------------------------- *
 *
 * A version that changes little is mostly files told of by their stat whose stamp holds: per file
 * the per-file path (add_object(), stamp_reuse()) unwraps the object key of the version shared
 * from, wraps it for this one, seals the inode and the directory entry, and makes the entry's key
 * and digest: four AEAD operations and two keyed hashes, which kept one thread busy while the
 * client waited. store_import_add_claimed() now does a batch in three steps:
 *   1. classify (the caller's thread, in order): each file's checks, directory and stamp as the
 *      per-file path would see them, its inode number given in order. A file that would take
 *      any other way (asked for, a tiny file of a group, a new directory, a name that needs a
 *      look at the index) ends the step: what was classified is sealed and merged first, and
 *      the file then goes through add_object() on the state the per-file path would have.
 *   2. seal (the helpers from the moment a file is classified, the caller's thread too once it
 *      has classified; any order): claim_seal_one() per file, which writes only its own entry.
 *   3. merge (the caller's thread, in order, as soon as the next file is sealed): stats, inode
 *      record, manifest leaf, directory digest and entry, progress, exactly as add_object() does
 *      them; the first failure stops it there, with the per-file path's words, and the rest is
 *      dropped (claim_flush() waits until no helper holds an entry, then returns).
 * The helpers (one fewer than the encryption pool's threads: one on two CPUs, none on one) live
 * as long as the import; how the entries pass between the threads is under claim_take(). The
 * records, keys, manifest and digests are those of the per-file path (fresh random nonces
 * aside): test_import_claimed_parallel imports the same tree both ways and compares them. */

/* Classify the claimed file (path, st) for the batch (step 1 above): 1 and *e filled when its
 * stamp holds and nothing else is in the way (its inode number given, its name counted in its
 * directory's greatest name), 0 when it goes through add_object() (nothing changed), < 0 on a
 * failure of the per-file path's (the scan of the version shared from, a lookup of the index). */
static int claim_classify(struct store_import *imp, const char *path, const struct stat *st,
			  bool heads, struct claim_prep *e)
{
	size_t n = strnlen(path, STORE_PATH_MAX + 1), slash;
	struct dir_ent *parent;
	int r;

	if (n == 0 || !path_valid(path, n) || dir_find(imp, path, n))
		return 0;
	r = reuse_wait(imp);
	if (r < 0)
		return r;
	slash = base_start(path, n);
	parent = dir_find(imp, path, parent_len(slash));
	/* A directory to create, or a name that is not past the greatest one of its directory
	 * (dirent_exists() would look in the index): the per-file path. */
	if (!parent || (parent->max_name && strcmp(path + slash, parent->max_name) <= 0))
		return 0;
	r = stamp_find(imp, path, st, &e->old);
	if (r < 0)
		return r;
	/* As add_object(): only a stamp that holds imports a claimed file; a member of a group
	 * is shared with its group (share_member()). */
	if (!(r == STAMP_PLAIN || (r == STAMP_RAW && !heads)) || e->old.ext.grouped)
		return 0;
	if (!imp->cp_kek) {
		struct ds_keys k = { 0 };

		/* Failing, the per-file path fails the same way (unwrap_reused_key()). */
		if (store_version_keys(imp->st, imp->ds.info.id, imp->reuse_version, &k) < 0) {
			err_clear();
			return 0;
		}
		imp->cp_keys = k;
		imp->cp_kek = k.wrap;
	}
	r = dirent_added(imp, parent, path + slash);
	if (r < 0)
		return r;
	e->path = path;
	e->name = path + slash;
	e->nlen = n - slash;
	e->dir = (size_t)(parent - imp->dirs);
	e->parent_ino = parent->ino;
	/* The inode add_object() makes of a file shared by its stamp in the same context (the
	 * previous version's stamp, content hash and object; this version's wrapping). */
	e->ino = (struct store_inode){
		.ino = imp->next_ino++,
		.type = STORE_INODE_FILE,
		.mode = (uint32_t)st->st_mode & 07777,
		.mtime_ns = stat_mtime_ns(st),
		.size = (uint64_t)st->st_size,
		.nlink = 1,
		.version = imp->version,
		.ext = e->old.ext,
	};
	e->ino.ext.has_stamp = true;
	e->sealed = false;
	e->err = 0;
	e->err_at = 0;
	return 1;
}

/* Seal one classified file (step 2): on any thread, with its own key slot and buffer; reads only
 * what no one changes during a batch (the import's keys, ids and cp_kek) and writes only *e. */
static void claim_seal_one(const struct store_import *imp, struct claim_prep *e,
			   crypto_key *scratch, struct buf *b)
{
	const uint64_t dsid = imp->ds.info.id;
	uint8_t ad_old[OBJECT_KEY_AD_MAX], ad_new[OBJECT_KEY_AD_MAX], k[IKEY_LEN];
	struct dirent_rec d = { .ino = e->ino.ino, .type = STORE_INODE_FILE };
	size_t al_old = object_key_ad(imp->st->format, dsid, imp->reuse_version, &e->old, ad_old);
	size_t al_new = object_key_ad(STORE_FORMAT_VERSION, dsid, imp->version, &e->ino, ad_new);
	int r;

	r = crypto_key_rewrap(imp->cp_kek, e->old.ext.wrapped_key, ad_old, al_old, imp->vkey,
			      ad_new, al_new, scratch, e->ino.ext.wrapped_key);
	if (r == 0 && import_test_rewrap_fail && strcmp(e->path, import_test_rewrap_fail) == 0)
		r = -EBADMSG;
	if (r < 0) {
		e->err = r;
		e->err_at = r == -EBADMSG ? CLAIM_ERR_UNWRAP : CLAIM_ERR_WRAP;
		return;
	}
	e->err = -ENOMEM;
	e->err_at = CLAIM_ERR_NOMEM;
	buf_reset(b);
	if (inode_encode(&e->ino, NULL, b) < 0 || b->len > sizeof(e->plain))
		return;
	memcpy(e->plain, b->data, b->len);
	e->plain_len = (uint16_t)b->len;
	ikey(k, dsid, imp->version, e->ino.ino);
	buf_reset(b);
	if (index_seal(imp->ix_seal, CF_INODES, k, sizeof(k), NULL, 0, e->plain, e->plain_len,
		       b) < 0 || b->len > sizeof(e->iseal))
		return;
	memcpy(e->iseal, b->data, b->len);
	e->iseal_len = (uint16_t)b->len;
	/* The directory entry, as put_dirent() makes it. */
	memcpy(d.name, e->name, MIN(e->nlen, (size_t)STORE_NAME_MAX));
	dkey_mk(imp->ix_name_mk, e->dk, dsid, imp->version, e->parent_ino, e->name, e->nlen);
	memset(e->dig, 0, sizeof(e->dig));
	dirent_digest_add_mk(imp->ix_name_mk, e->dig, e->ino.ino, STORE_INODE_FILE, e->name,
			     e->nlen);
	buf_reset(b);
	if (dirent_rec_encode(&d, b) < 0)
		return;
	/* Sealed from a copy: the seal is appended to the same buffer. */
	{
		uint8_t pt[REC_PLAIN_MAX];
		size_t pl = b->len;

		if (pl > sizeof(pt))
			return;
		memcpy(pt, b->data, pl);
		buf_reset(b);
		r = index_seal(imp->ix_seal, CF_DIRENTS, e->dk, sizeof(e->dk), NULL, 0, pt, pl, b);
		explicit_bzero(pt, pl);
		if (r < 0 || b->len > sizeof(e->dseal))
			return;
	}
	memcpy(e->dseal, b->data, b->len);
	e->dseal_len = (uint16_t)b->len;
	e->err = 0;
	e->err_at = 0;
}

/* The hand-off of the entries between the caller's thread and the helpers. Everything below is
 * under cs_lock, so the mutex orders every step:
 *   - entry i is the caller's (classify writes it) until it is published (i < cs_pub);
 *   - then it belongs to the one thread that claims it (cs_next moves past it), which seals it
 *     and marks it sealed (and cs_inflight back down);
 *   - then it is the caller's again, to merge; a helper never touches it again.
 * The caller ends a run of entries (claim_flush()) only when each published entry is sealed or
 * was never claimed, with cs_inflight 0: from then on no helper holds an entry, and cp[] and the
 * counters start again from 0. The helpers seal while the caller still classifies, and the
 * caller seals too once it has classified, taking the next unclaimed entries whenever the next
 * one to merge is not sealed yet. */

/* Claim up to CLAIM_STEP published entries, fewer as they run out (so that the last ones are
 * shared, and the caller never waits long for an entry a helper holds): their first index, and
 * how many in *ret_n. cs_lock held, at least one entry unclaimed. */
static size_t claim_take(struct store_import *imp, size_t *ret_n)
{
	size_t i = imp->cs_next, left = imp->cs_pub - i;
	size_t m = MIN((size_t)CLAIM_STEP, MAX((size_t)1, left / 2));

	imp->cs_next += m;
	imp->cs_inflight += m;
	*ret_n = m;
	return i;
}

/* Something in the hand-off changed (cs_lock held): the spinners see it, the sleepers are woken. */
static void claim_changed(struct store_import *imp)
{
	atomic_fetch_add_explicit(&imp->cs_seq, 1, memory_order_release);
	/* A wake-up is a system call: only for a thread that sleeps. */
	if (imp->cs_idle)
		pthread_cond_broadcast(&imp->cs_cond);
}

/* Wait (cs_lock held, and held again on return) until another thread changes the hand-off, or a
 * while: the caller and its helpers run on the other CPUs, and each sleep and wake-up is two
 * context switches, which under this load cost more than the waits themselves (a re-import of
 * 20,000 files went from 460 to 4,900 of them before the spin). So first a spin of at most
 * CLAIM_SPIN_NS on cs_seq without the lock, then the condition. The caller of claim_wait()
 * checks its own condition again either way. */
static void claim_wait(struct store_import *imp)
{
	unsigned seq = atomic_load_explicit(&imp->cs_seq, memory_order_acquire);
	int64_t until = now_monotonic_ns() + CLAIM_SPIN_NS;

	pthread_mutex_unlock(&imp->cs_lock);
	/* Yielding now and then, so that the spin takes no CPU from a thread that could run (the
	 * index writer, a client on the same CPUs). */
	do {
		for (unsigned k = 0; k < 64; k++) {
#if defined(__x86_64__) || defined(__i386__)
			__builtin_ia32_pause();
#endif
		}
		if (atomic_load_explicit(&imp->cs_seq, memory_order_acquire) != seq)
			break;
		sched_yield();
	} while (now_monotonic_ns() < until);
	pthread_mutex_lock(&imp->cs_lock);
	if (atomic_load_explicit(&imp->cs_seq, memory_order_relaxed) != seq || imp->cs_stop)
		return;
	imp->cs_idle++;
	pthread_cond_wait(&imp->cs_cond, &imp->cs_lock);
	imp->cs_idle--;
}

/* Seal the claimed entries [i, i + m) with cs_lock released, and mark them sealed. cs_lock held
 * on entry and on return. */
static void claim_seal_some(struct store_import *imp, size_t i, size_t m, crypto_key *scratch,
			    struct buf *b)
{
	pthread_mutex_unlock(&imp->cs_lock);
	for (size_t j = i; j < i + m; j++)
		claim_seal_one(imp, &imp->cp[j], scratch, b);
	pthread_mutex_lock(&imp->cs_lock);
	for (size_t j = i; j < i + m; j++)
		imp->cp[j].sealed = true;
	imp->cs_inflight -= m;
	claim_changed(imp);
}

static void *claim_helper_main(void *arg)
{
	struct cs_helper *hp = arg;
	struct store_import *imp = hp->imp;

	pthread_mutex_lock(&imp->cs_lock);
	for (;;) {
		size_t i, m;

		while (imp->cs_next >= imp->cs_pub && !imp->cs_stop)
			claim_wait(imp);
		if (imp->cs_stop)
			break;
		i = claim_take(imp, &m);
		claim_seal_some(imp, i, m, hp->scratch, &hp->b);
	}
	pthread_mutex_unlock(&imp->cs_lock);
	return NULL;
}

/* The entries, the caller's key slot, the hand-off, and the helpers (once per import; without
 * helpers the caller's thread seals alone, through the same hand-off). */
static int claim_setup(struct store_import *imp)
{
	pthread_mutexattr_t ma;
	unsigned want;
	int r;

	if (imp->cp)
		return 0;
	imp->cp = malloc(STORE_IMPORT_CLAIM_MAX * sizeof(*imp->cp));
	if (!imp->cp)
		return -ENOMEM;
	/* Adaptive: the sections under it are a few instructions, so a thread that finds it
	 * taken spins a little before it sleeps (a futex call each way under this lock's traffic
	 * cost more than the sealing they guard). */
	if (crypto_key_generate(&imp->cp_scratch) < 0 || pthread_mutexattr_init(&ma) != 0)
		goto fail;
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
	r = pthread_mutex_init(&imp->cs_lock, &ma);
	pthread_mutexattr_destroy(&ma);
	if (r != 0)
		goto fail;
	if (pthread_cond_init(&imp->cs_cond, NULL) != 0) {
		pthread_mutex_destroy(&imp->cs_lock);
		goto fail;
	}
	imp->cs_init = true;
	buf_init(&imp->cp_buf, REC_PLAIN_MAX + CRYPTO_SEAL_OVERHEAD);
	want = import_claim_helpers >= 0 ? (unsigned)import_claim_helpers
		: imp->nworkers ? imp->nworkers - 1 : 0;
	want = MIN(want, IMPORT_WORKERS_MAX);
	for (unsigned i = 0; i < want; i++) {
		struct cs_helper *hp = &imp->cs_helpers[i];

		*hp = (struct cs_helper){ .imp = imp };
		buf_init(&hp->b, REC_PLAIN_MAX + CRYPTO_SEAL_OVERHEAD);
		if (crypto_key_generate(&hp->scratch) < 0)
			break;
		if (pthread_create(&hp->thread, NULL, claim_helper_main, hp) != 0) {
			crypto_key_free(hp->scratch);
			hp->scratch = NULL;
			break;
		}
		imp->cs_nhelpers++;
	}
	return 0;
fail:
	crypto_key_free(imp->cp_scratch);
	imp->cp_scratch = NULL;
	free(imp->cp);
	imp->cp = NULL;
	return -ENOMEM;
}

/* Stop and join the helpers (none holds an entry between two calls: claim_flush()); free and
 * wipe what sealed the claimed files. */
static void claim_stop(struct store_import *imp)
{
	if (imp->cs_init) {
		pthread_mutex_lock(&imp->cs_lock);
		imp->cs_stop = true;
		atomic_fetch_add_explicit(&imp->cs_seq, 1, memory_order_release);
		pthread_cond_broadcast(&imp->cs_cond);
		pthread_mutex_unlock(&imp->cs_lock);
		for (unsigned i = 0; i < imp->cs_nhelpers; i++) {
			struct cs_helper *hp = &imp->cs_helpers[i];

			pthread_join(hp->thread, NULL);
			crypto_key_free(hp->scratch);
			if (hp->b.data)
				explicit_bzero(hp->b.data, hp->b.cap);
			buf_free(&hp->b);
		}
		imp->cs_nhelpers = 0;
		pthread_cond_destroy(&imp->cs_cond);
		pthread_mutex_destroy(&imp->cs_lock);
		imp->cs_init = false;
	}
	imp->cp_kek = NULL;
	store_keys_put(imp->st, &imp->cp_keys);   /* a batch never merged */
	crypto_key_free(imp->cp_scratch);
	imp->cp_scratch = NULL;
	if (imp->cp_buf.data)
		explicit_bzero(imp->cp_buf.data, imp->cp_buf.cap);
	buf_free(&imp->cp_buf);
	free(imp->cp);
	imp->cp = NULL;
}

/* Publish the entries classified so far to the helpers. */
static void claim_publish(struct store_import *imp)
{
	pthread_mutex_lock(&imp->cs_lock);
	imp->cs_pub = imp->cp_n;
	claim_changed(imp);
	pthread_mutex_unlock(&imp->cs_lock);
}

/* Merge one sealed entry (step 3), as add_object() and stamp_reuse() finish a file shared by its
 * stamp; their words on a failure. */
static int claim_merge_one(struct store_import *imp, const struct claim_prep *e)
{
	struct dir_ent *parent = &imp->dirs[e->dir];
	uint8_t k[IKEY_LEN];
	int r;

	switch (e->err_at) {
	case CLAIM_ERR_UNWRAP:
		return imp_fail(imp, e->err, "%s: the object key of inode %llu of version %u does "
				"not unwrap", e->path, (unsigned long long)e->old.ino,
				imp->reuse_version);
	case CLAIM_ERR_WRAP:
		return imp_fail(imp, e->err, "%s: cannot wrap the object key", e->path);
	case CLAIM_ERR_NOMEM:
		return imp_fail(imp, -ENOMEM, "out of memory");
	default:
		break;
	}
	imp->stats.bytes += e->ino.size;
	imp->stats.reused_files++;
	imp->stats.reused_bytes += e->ino.size;
	imp->stats.stamped_files++;
	ikey(k, imp->ds.info.id, imp->version, e->ino.ino);
	r = batch_put(imp, CF_INODES, k, sizeof(k), e->iseal, e->iseal_len);
	if (r < 0)
		return r;
	/* Entries come in ascending inode order: the leaves go straight into the running hash. */
	manifest_leaf(imp->man_files, e->ino.ino, parent->ino, e->name, e->nlen, e->plain,
		      e->plain_len);
	for (size_t i = 0; i < DIR_DIGEST_LEN; i++)
		parent->digest[i] ^= e->dig[i];
	r = dq_put(imp, e->dk, e->dseal, e->dseal_len);
	if (r < 0)
		return r;
	parent->entries++;
	imp->stats.files++;
	progress(imp, true);
	return 0;
}

/* Seal and merge what is classified (steps 2 and 3); how many files it imported, or the first
 * failure (the import's, sticky: the entries after it are not merged). Ends the run: no helper
 * holds an entry when it returns, and nothing classified stays behind. */
static int claim_flush(struct store_import *imp)
{
	const size_t n = imp->cp_n;
	size_t merged = 0, ready, i, m;
	int r = 0;

	if (n == 0)
		return 0;
	pthread_mutex_lock(&imp->cs_lock);
	imp->cs_pub = n;
	claim_changed(imp);
	while (merged < n && r == 0) {
		/* The sealed entries from the next to merge on, else one more step sealed here,
		 * else a helper's to wait for. */
		for (ready = merged; ready < n && imp->cp[ready].sealed; ready++)
			;
		if (ready == merged) {
			if (imp->cs_next < imp->cs_pub) {
				i = claim_take(imp, &m);
				claim_seal_some(imp, i, m, imp->cp_scratch, &imp->cp_buf);
			} else {
				claim_wait(imp);
			}
			continue;
		}
		pthread_mutex_unlock(&imp->cs_lock);
		for (; merged < ready && r == 0; merged++)
			r = claim_merge_one(imp, &imp->cp[merged]);
		pthread_mutex_lock(&imp->cs_lock);
	}
	/* After a failure: nothing more is taken, and what the helpers took is waited for. */
	imp->cs_next = imp->cs_pub;
	while (imp->cs_inflight)
		claim_wait(imp);
	imp->cs_pub = imp->cs_next = 0;
	pthread_mutex_unlock(&imp->cs_lock);
	imp->cp_n = 0;
	imp->cp_kek = NULL;
	store_keys_put(imp->st, &imp->cp_keys);
	return r < 0 ? r : (int)n;
}

int store_import_add_claimed(struct store_import *imp, size_t n, const char *const *paths,
			     const struct stat *sts, bool heads, bool *ret_need)
{
	const char *sorted[STORE_IMPORT_CLAIM_MAX];
	size_t k = 0;
	int r;

	if (imp->err)
		return imp_sticky(imp);
	if (imp->committed || imp->closed || n == 0 || !paths || !sts || !ret_need)
		return -EINVAL;
	if (n > STORE_IMPORT_CLAIM_MAX)
		return err_set(-E2BIG, "a batch of %zu files told of by their stat, more than %u", n,
			       STORE_IMPORT_CLAIM_MAX);
	/* The whole batch is checked first: a bad one changes nothing, and the import goes on. */
	if (imp->owed_n + n > STORE_IMPORT_OWED_MAX)
		return err_set(-E2BIG, "%zu files wait for their descriptor already: give them "
			       "before telling of more (at most %u)", imp->owed_n,
			       STORE_IMPORT_OWED_MAX);
	memcpy(sorted, paths, n * sizeof(*paths));
	qsort(sorted, n, sizeof(*sorted), claim_cmp);
	for (size_t i = 0; i + 1 < n; i++)
		if (strcmp(sorted[i], sorted[i + 1]) == 0)
			return err_set(-EINVAL, "%.256s: twice in one batch", sorted[i]);
	for (size_t i = 0; i < n; i++) {
		r = claim_check(imp, paths[i], &sts[i]);
		if (r < 0)
			return r;
	}
	if (!import_claim_serial && !imp->cp) {
		r = claim_setup(imp);
		if (r < 0)
			return sticky(imp, imp_fail(imp, r, "out of memory"));
	}
	/* Then each file in order: imported by its stamp, or owed with its descriptor. Those
	 * whose stamp holds are classified here and sealed and merged together (see above);
	 * any other first has those before it merged. */
	for (size_t i = 0; i < n; i++) {
		const struct obj_src src = { .fd = -1, .st = &sts[i], .claimed = true,
					     .heads = heads };

		if (!import_claim_serial) {
			r = claim_classify(imp, paths[i], &sts[i], heads, &imp->cp[imp->cp_n]);
			if (r > 0) {
				/* The helpers start on them while the caller goes on: on the first
				 * at once, then every CLAIM_STEP. */
				if (++imp->cp_n % CLAIM_STEP == 1)
					claim_publish(imp);
				ret_need[i] = false;
				continue;
			}
			/* What came before this file first, also when it failed: the per-file
			 * path would have imported those before it got here. */
			if (r < 0) {
				char why[ERR_DETAIL_MAX];
				int f;

				snprintf(why, sizeof(why), "%s", err_detail());
				f = claim_flush(imp);
				if (f < 0)
					return sticky(imp, f);
				return sticky(imp, imp_fail(imp, r, "%s",
							    *why ? why : strerror(-r)));
			}
			r = claim_flush(imp);
			if (r < 0)
				return sticky(imp, r);
			k += (size_t)r;
		}
		r = add_object(imp, paths[i], &src, (uint32_t)sts[i].st_mode,
			       stat_mtime_ns(&sts[i]), (uint64_t)sts[i].st_size);
		ret_need[i] = r == ADD_NEED;
		if (r == ADD_NEED)
			r = owed_add(imp, paths[i]);
		else if (r == 0)
			k++;
		if (r < 0)
			return sticky(imp, r);
	}
	r = claim_flush(imp);
	if (r < 0)
		return sticky(imp, r);
	return (int)(k + (size_t)r);
}

void store_import_owed_drop(struct store_import *imp, const char *path)
{
	owed_take(imp, path);
}

int store_import_owed(const struct store_import *imp)
{
	return imp->owed_n > INT_MAX ? INT_MAX : (int)imp->owed_n;
}

bool store_import_failed(const struct store_import *imp)
{
	return imp->err != 0;
}

bool store_import_stamps(const struct store_import *imp)
{
	return imp->reuse && !imp->rehash;
}

/* ---- Batch prefetch ------------------------------------------------------------------------ */

/* Read one staged file whole (one byte more, to see one that grew) and hash it if complete. */
static void pf_one(struct store_import *imp, struct pf_file *f, crypto_hasher *h)
{
	f->got = pread_full(f->fd, f->data, (size_t)f->size + 1, 0);
	if (f->got >= 0 && (uint64_t)f->got == f->size) {
		crypto_hash_init_keyed(h, imp->content_key);
		crypto_hash_update(h, f->data, (size_t)f->size);
		crypto_hash_final(h, f->mac);
	}
}

/* Take files of the current batch until none is left. */
static void pf_run(struct store_import *imp, crypto_hasher *h)
{
	for (;;) {
		size_t i = atomic_fetch_add(&imp->pf_next, 1);

		if (i >= imp->pf_n)
			return;
		pf_one(imp, &imp->pf[i], h);
		pthread_mutex_lock(&imp->pf_lock);
		if (++imp->pf_done == imp->pf_n)
			pthread_cond_broadcast(&imp->pf_cond);
		pthread_mutex_unlock(&imp->pf_lock);
	}
}

static void *pf_main(void *arg)
{
	struct pf_helper *hp = arg;
	struct store_import *imp = hp->imp;
	uint64_t seen = 0;

	pthread_mutex_lock(&imp->pf_lock);
	for (;;) {
		while (imp->pf_gen == seen && !imp->pf_stop)
			pthread_cond_wait(&imp->pf_cond, &imp->pf_lock);
		if (imp->pf_stop)
			break;
		seen = imp->pf_gen;
		imp->pf_active++;
		pthread_mutex_unlock(&imp->pf_lock);
		pf_run(imp, hp->hash);
		pthread_mutex_lock(&imp->pf_lock);
		imp->pf_active--;
		pthread_cond_broadcast(&imp->pf_cond);
	}
	pthread_mutex_unlock(&imp->pf_lock);
	return NULL;
}

/* Set up the stage and the helpers (one fewer than the encryption workers: the caller's thread
 * works too). Without helpers the caller prefetches alone, which still saves nothing but costs
 * nothing either. */
static int pf_start(struct store_import *imp)
{
	imp->stage = malloc((size_t)STORE_IMPORT_BATCH_MAX * (STORE_DENSE_MAX + 1));
	if (!imp->stage)
		return -ENOMEM;
	if (crypto_hash_new(&imp->pf_hash) < 0)
		return -ENOMEM;
	if (pthread_mutex_init(&imp->pf_lock, NULL) != 0)
		return -ENOMEM;
	if (pthread_cond_init(&imp->pf_cond, NULL) != 0) {
		pthread_mutex_destroy(&imp->pf_lock);
		return -ENOMEM;
	}
	imp->pf_init = true;
	for (unsigned i = 0; i + 1 < imp->nworkers; i++) {
		struct pf_helper *hp = &imp->pf_helpers[i];

		*hp = (struct pf_helper){ .imp = imp };
		if (crypto_hash_new(&hp->hash) < 0)
			break;
		if (pthread_create(&hp->thread, NULL, pf_main, hp) != 0) {
			crypto_hash_free(hp->hash);
			hp->hash = NULL;
			break;
		}
		imp->pf_nhelpers++;
	}
	return 0;
}

static void pf_stop(struct store_import *imp)
{
	if (imp->pf_init) {
		pthread_mutex_lock(&imp->pf_lock);
		imp->pf_stop = true;
		pthread_cond_broadcast(&imp->pf_cond);
		pthread_mutex_unlock(&imp->pf_lock);
		for (unsigned i = 0; i < imp->pf_nhelpers; i++) {
			pthread_join(imp->pf_helpers[i].thread, NULL);
			crypto_hash_free(imp->pf_helpers[i].hash);
		}
		imp->pf_nhelpers = 0;
		pthread_cond_destroy(&imp->pf_cond);
		pthread_mutex_destroy(&imp->pf_lock);
		imp->pf_init = false;
	}
	crypto_hash_free(imp->pf_hash);
	imp->pf_hash = NULL;
	/* Each batch wipes what it read; this is for a batch cut short. The slots above the
	 * most a batch ever staged were never written. */
	if (imp->stage)
		explicit_bzero(imp->stage, imp->stage_hw * (STORE_DENSE_MAX + 1));
	free(imp->stage);
	imp->stage = NULL;
}

/* Read and hash files[0..n) (each of them staged) on the helpers and this thread; back when
 * every one is done and no helper touches the batch any more. */
static void pf_batch(struct store_import *imp, size_t n)
{
	pthread_mutex_lock(&imp->pf_lock);
	imp->pf_n = n;
	atomic_store(&imp->pf_next, 0);
	imp->pf_done = 0;
	imp->pf_gen++;
	pthread_cond_broadcast(&imp->pf_cond);
	pthread_mutex_unlock(&imp->pf_lock);
	pf_run(imp, imp->pf_hash);
	pthread_mutex_lock(&imp->pf_lock);
	while (imp->pf_done < imp->pf_n || imp->pf_active)
		pthread_cond_wait(&imp->pf_cond, &imp->pf_lock);
	imp->pf_n = 0;
	pthread_mutex_unlock(&imp->pf_lock);
}

int store_import_add_files(struct store_import *imp, size_t n, const char *const *paths,
			   const int *fds, const struct stat *sts,
			   bool (*divert)(const uint8_t *head, size_t len))
{
	size_t staged[STORE_IMPORT_BATCH_MAX], nstaged = 0, i, k = 0;
	int r = 0;

	if (imp->err)
		return imp_sticky(imp);
	if (imp->committed || imp->closed || n == 0 || n > STORE_IMPORT_BATCH_MAX || !paths ||
	    !fds || !sts)
		return -EINVAL;
	r = reuse_wait(imp);
	if (r < 0)
		return r;
	if (!imp->stage) {
		r = pf_start(imp);
		if (r < 0)
			return sticky(imp, imp_fail(imp, r, "out of memory"));
	}
	/* The small regular files are read and hashed together first. */
	for (i = 0; i < n; i++) {
		struct stamp_seen *sn = &imp->seen[i];

		/* Each path looked up once in the previous version; add_file takes what was found. */
		sn->plain = false;
		sn->match = S_ISREG(sts[i].st_mode) ? stamp_find(imp, paths[i], &sts[i], &sn->old)
						    : STAMP_NONE;
		/* Not read ahead: a file its source stamp shows unchanged is not read at all. */
		if (!S_ISREG(sts[i].st_mode) || sts[i].st_size < 0 ||
		    !object_dense((uint64_t)sts[i].st_size, imp->chunk_size) || sn->match != 0) {
			staged[i] = SIZE_MAX;
			continue;
		}
		imp->pf[nstaged] = (struct pf_file){
			.fd = fds[i],
			.size = (uint64_t)sts[i].st_size,
			.data = imp->stage + nstaged * (STORE_DENSE_MAX + 1),
		};
		staged[i] = nstaged++;
		imp->stage_hw = MAX(imp->stage_hw, nstaged);
	}
	if (nstaged)
		pf_batch(imp, nstaged);
	/* Then every file in order, as add_file would; a file divert() claims ends the call. */
	for (i = 0; i < n && r == 0; i++) {
		const struct pf_file *pf = staged[i] == SIZE_MAX ? NULL : &imp->pf[staged[i]];

		/* The head is shown to divert unless the previous version's stamp says divert let
		 * this very content through (STAMP_PLAIN): a file kept raw then (--keep-crypt4gh) or
		 * never shown is read, so that what this import would divert is diverted. */
		if (divert && imp->seen[i].match != STAMP_PLAIN) {
			uint8_t head[STORE_DIVERT_HEAD];
			ssize_t got;

			if (pf) {
				got = MIN(pf->got, (ssize_t)sizeof(head));
				if (got > 0)
					memcpy(head, pf->data, (size_t)got);
			} else {
				got = S_ISREG(sts[i].st_mode) ?
					      pread_full(fds[i], head, sizeof(head), 0) : 0;
			}
			if (got > 0 && divert(head, (size_t)got))
				break;
			imp->seen[i].plain = got >= 0;
		}
		r = sticky(imp, add_file(imp, paths[i], fds[i], &sts[i], pf, &imp->seen[i]));
		k++;
	}
	/* The stage held plaintext. */
	for (size_t j = 0; j < nstaged; j++)
		explicit_bzero(imp->pf[j].data, (size_t)imp->pf[j].size + 1);
	return r < 0 ? r : (int)k;
}

int store_import_add_stream(struct store_import *imp, const char *path,
			    const struct store_import_stream *stream)
{
	const struct obj_src src = { .fd = -1, .stream = stream };

	if (!stream || !stream->read)
		return -EINVAL;
	return sticky(imp, add_object(imp, path, &src, stream->mode, stream->mtime_ns,
				      stream->size));
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Import the entries of the directory open at dfd, whose path in the dataset is rel (len n). */
static int walk(struct store_import *imp, int dfd, char *rel, size_t n, unsigned depth)
{
	char **names = NULL;
	size_t count = 0, cap = 0;
	DIR *d = NULL;
	int fd, r = 0;

	if (depth > IMPORT_DEPTH_MAX)
		return imp_fail(imp, -ELOOP, "%s: directories nested deeper than %u", rel,
				IMPORT_DEPTH_MAX);
	fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		r = imp_fail(imp, -errno, "%s: cannot list: %s", n ? rel : ".", strerror(errno));
		if (fd >= 0)
			close(fd);
		return r;
	}
	/* Sorted, so an import of the same tree always yields the same inode numbers. */
	for (struct dirent *de; (de = readdir(d));) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (count == cap) {
			size_t nc = cap ? cap * 2 : 64;
			char **a;

			if (nc > IMPORT_DIR_ENTRIES_MAX) {
				r = imp_fail(imp, -E2BIG, "%s: more than %u entries",
					     n ? rel : ".", IMPORT_DIR_ENTRIES_MAX);
				goto out;
			}
			a = reallocarray(names, nc, sizeof(*a));
			if (!a) {
				r = imp_fail(imp, -ENOMEM, "out of memory");
				goto out;
			}
			names = a;
			cap = nc;
		}
		names[count] = strdup(de->d_name);
		if (!names[count]) {
			r = imp_fail(imp, -ENOMEM, "out of memory");
			goto out;
		}
		count++;
	}
	if (count)
		qsort(names, count, sizeof(*names), name_cmp);

	for (size_t i = 0; i < count && r == 0; i++) {
		size_t len = strlen(names[i]);
		size_t m = n ? n + 1 + len : len;
		struct stat s;
		int cfd;

		if (m > STORE_PATH_MAX) {
			r = imp_fail(imp, -ENAMETOOLONG, "%s/%s: path longer than %u bytes", rel,
				     names[i], STORE_PATH_MAX);
			break;
		}
		if (n)
			rel[n] = '/';
		memcpy(rel + (n ? n + 1 : 0), names[i], len + 1);
		if (fstatat(dfd, names[i], &s, AT_SYMLINK_NOFOLLOW) < 0) {
			r = imp_fail(imp, -errno, "%s: cannot stat: %s", rel, strerror(errno));
		} else if (S_ISDIR(s.st_mode)) {
			cfd = openat(dfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (cfd < 0) {
				r = imp_fail(imp, -errno, "%s: cannot open: %s", rel,
					     strerror(errno));
			} else {
				r = store_import_add_dir(imp, rel, s.st_mode, stat_mtime_ns(&s));
				if (r == 0)
					r = walk(imp, cfd, rel, m, depth + 1);
				close(cfd);
			}
		} else if (S_ISREG(s.st_mode)) {
			/* O_NONBLOCK: if it was swapped for a FIFO since fstatat, do not hang;
			 * add_file's fstat then refuses it. */
			cfd = openat(dfd, names[i], O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			if (cfd < 0) {
				r = imp_fail(imp, -errno, "%s: cannot open: %s", rel,
					     strerror(errno));
			} else {
				r = store_import_add_file(imp, rel, cfd);
				close(cfd);
			}
		} else {
			r = imp_fail(imp, -EINVAL, "%s: refused: %s (only regular files and "
						   "directories are imported)", rel,
				     file_type_name(s.st_mode));
		}
		rel[n] = '\0';
	}
out:
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return r;
}

int store_import_add_tree(struct store_import *imp, int dirfd)
{
	char *rel;
	struct stat s;
	int r;

	if (imp->err || imp->committed)
		return imp->err ? imp_sticky(imp) : -EINVAL;
	if (fstat(dirfd, &s) < 0 || !S_ISDIR(s.st_mode))
		return err_set(-ENOTDIR, "the source is not a directory");
	rel = malloc(STORE_PATH_MAX + 1);
	if (!rel)
		return -ENOMEM;
	rel[0] = '\0';
	r = store_import_add_dir(imp, "", s.st_mode, stat_mtime_ns(&s));
	if (r == 0)
		r = walk(imp, dirfd, rel, 0, 0);
	free(rel);
	return sticky(imp, r);
}

/* Close the version to further files: directory records final, manifest computed. */
static int import_close(struct store_import *imp)
{
	uint8_t manifest[STORE_MANIFEST_LEN];
	int r;

	/* A file the client told of by its stat, and was asked for with its descriptor, never
	 * came: the version would lack a file the client said it has. */
	if (imp->owed_n) {
		const char *first = NULL;

		for (size_t i = 0; !first && i < OWED_SLOTS; i++)
			first = imp->owed[i];
		return imp_fail(imp, -EPROTO, "%zu file(s) the client announced by their stat "
				"were asked for with their descriptor and never given (%s, ...): "
				"nothing is committed", imp->owed_n, first ? first : "?");
	}
	/* Whatever the scan of the version shared from found is known before the version is. */
	r = reuse_wait(imp);
	if (r < 0)
		return r;
	/* The last group of tiny files, and with it the last files' records; a group of the
	 * previous version not found whole is copied into it first. */
	r = imp->shr_n ? share_break(imp) : 0;
	if (r == 0)
		r = group_flush(imp);
	if (r < 0)
		return r;
	/* Directory inodes: their entry counts and digests are final now. The table is in
	 * creation order, which is ascending inode order, as the manifest wants. */
	for (size_t i = 0; i < imp->ndirs; i++) {
		struct dir_ent *d = &imp->dirs[i];
		struct store_inode ino = {
			.ino = d->ino,
			.type = STORE_INODE_DIR,
			.mode = d->mode,
			.mtime_ns = d->mtime_ns,
			.size = d->entries,
			.nlink = 2 + d->subdirs,
		};
		size_t n = strlen(d->path), slash = base_start(d->path, n);
		struct dir_ent *parent = i ? dir_find(imp, d->path, parent_len(slash)) : NULL;

		r = put_inode(imp, &ino, d->digest);
		if (r < 0)
			return r;
		manifest_leaf(imp->man_dirs, d->ino, parent ? parent->ino : 0, d->path + slash,
			      n - slash, imp->plain.data, imp->plain.len);
	}
	manifest_finish(imp->ds.info.name, imp->ds.info.id, imp->version, imp->stats.files,
			imp->stats.dirs, imp->stats.bytes, imp->man_files, imp->man_dirs, manifest);
	memcpy(imp->manifest, manifest, sizeof(manifest));
	imp->closed = true;
	return 0;
}

int store_import_manifest(struct store_import *imp, uint8_t ret[static STORE_MANIFEST_LEN])
{
	int r;

	if (imp->err)
		return imp_sticky(imp);
	if (!imp->closed) {
		r = import_close(imp);
		if (r < 0)
			return r;
	}
	memcpy(ret, imp->manifest, STORE_MANIFEST_LEN);
	return 0;
}

int store_import_commit(struct store_import *imp, uint32_t *ret_version)
{
	struct store *st = imp->st;
	char *err = NULL;
	uint8_t k[PACKKEY_LEN], v[8], dk[DSKEY_LEN], manifest[STORE_MANIFEST_LEN], dsid_clear[8];
	const crypto_key *kdr = NULL;
	crypto_key *kdr_own = NULL;
	int r;

	if (imp->committed)
		return -EINVAL;
	if (imp->err)
		return imp_sticky(imp);

	if (!imp->closed) {
		r = import_close(imp);
		if (r < 0)
			return r;
	}
	memcpy(manifest, imp->manifest, sizeof(manifest));

	/* 1. Pack data durable, the committed length aligned. */
	r = stream_align(imp);
	if (r == 0)
		r = stream_flush(imp);
	if (r == 0)
		r = drain(imp);
	if (r < 0)
		return r;
	if (fdatasync(imp->pack_fd) < 0)
		return imp_fail(imp, -errno, "pack %016llx: fdatasync failed: %s",
				(unsigned long long)imp->pack_id, strerror(errno));
	if (imp->first_new_pack && fsync_dirfd(st->packs_dirfd) < 0)
		return imp_fail(imp, -errno, "packs directory: fsync failed: %s", strerror(errno));

	/* 2. One synchronous batch makes the version exist, after every earlier one is written:
	 * the WAL then holds them before it. */
	r = ixw_wait(imp);
	if (r < 0)
		return r;
	dq_flush(imp);
	r = put_version(imp, VERSION_COMMITTED, manifest, NULL);
	if (r < 0)
		return imp_fail(imp, r, "out of memory");
	imp->ds.info.latest_version = imp->version;
	buf_reset(&imp->plain);
	buf_reset(&imp->scratch);
	/* The dataset record is keyed at the record key generation in use until the batch is
	 * written: a node removal's key rotation waits (docs/FORMAT.md 3.7). */
	store_rekey_rdlock(st);
	pthread_mutex_lock(&st->lock);
	dskey_hash(st->ix_name, imp->ds.info.name, dk);
	pthread_mutex_unlock(&st->lock);
	put_be64(dsid_clear, imp->ds.info.id);
	if (imp->new_dataset) {
		r = store_dataset_rec_key_of(st, imp->dkey, &kdr_own);
		kdr = kdr_own;
	} else {
		r = store_dataset_rec_key(st, imp->ds.info.id, &kdr);
	}
	if (r == 0)
		r = dataset_rec_encode_v3(&imp->ds, &imp->plain);
	if (r == 0)
		r = index_seal(kdr, CF_DATASETS, dk, sizeof(dk), dsid_clear, sizeof(dsid_clear),
			       imp->plain.data, imp->plain.len, &imp->scratch);
	crypto_key_free(kdr_own);
	if (r < 0) {
		store_rekey_rdunlock(st);
		return imp_fail(imp, r, "cannot seal the dataset record");
	}
	rocksdb_writebatch_put_cf(imp->wb, st->ix.cf[CF_DATASETS], (const char *)dk, sizeof(dk),
				  (const char *)imp->scratch.data, imp->scratch.len);
	for (size_t i = 0; i <= imp->npacks; i++) {
		const struct pack_done pd = i < imp->npacks ? imp->packs[i] :
			(struct pack_done){ .id = imp->pack_id, .end = imp->wpos };

		packkey(k, pd.id);
		put_le64(v, pd.end);
		rocksdb_writebatch_put_cf(imp->wb, st->ix.cf[CF_META], (const char *)k, sizeof(k),
					  (const char *)v, sizeof(v));
	}
	if (imp->new_dataset) {
		put_le64(v, imp->ds.info.id + 1);
		rocksdb_writebatch_put_cf(imp->wb, st->ix.cf[CF_META], "next_dataset", 12,
					  (const char *)v, sizeof(v));
	}
	/* The version's key (and a new dataset's) goes into the key ring, durably, before the
	 * batch that makes the version exist; the batch names the ring's generation, so that a
	 * ring older than the index is refused at open. A crash in between leaves a key for a
	 * version that recovery drops: harmless, and replaced when the number is used again. */
	{
		crypto_key *kv = NULL, *kd = NULL;
		uint64_t gen = 0;

		r = crypto_key_from_bytes(crypto_key_bytes(imp->vkey), &kv);
		if (r == 0 && imp->new_dataset)
			r = crypto_key_from_bytes(crypto_key_bytes(imp->dkey), &kd);
		if (r < 0) {
			crypto_key_free(kv);
			store_rekey_rdunlock(st);
			return imp_fail(imp, r, "out of memory");
		}
		r = store_ring_add(st, imp->ds.info.id, imp->version, kv, kd, &gen);
		if (r < 0) {
			store_rekey_rdunlock(st);
			return imp_fail(imp, r, "cannot write the key ring: %s", err_detail());
		}
		put_le64(v, gen);
		rocksdb_writebatch_put_cf(imp->wb, st->ix.cf[CF_META], META_RING, strlen(META_RING),
					  (const char *)v, sizeof(v));
	}
	rocksdb_write(st->ix.db, st->ix.wo_sync, imp->wb, &err);
	if (err) {
		store_ring_forget(st, imp->ds.info.id, imp->version, imp->new_dataset);
		store_rekey_rdunlock(st);
		r = imp_fail(imp, -EIO, "index: commit failed: %s", err);
		free(err);
		return r;
	}
	rocksdb_writebatch_clear(imp->wb);

	/* 3. The store's view follows the committed state. */
	imp->committed = true;
	__atomic_store_n(&st->import_done, true, __ATOMIC_RELEASE);
	pthread_mutex_lock(&st->lock);
	st->last_pack_id = imp->pack_id;
	st->last_pack_len = imp->wpos;
	st->pack_file_max = MAX(st->pack_file_max, imp->pack_id);
	/* Committed in the index already: a failure to remember it here (no memory) only makes
	 * reads of the new objects fail until the next open, which reads the records again. */
	for (size_t i = 0; i <= imp->npacks; i++)
		(void)store_pack_commit_locked(st, i < imp->npacks ? imp->packs[i].id : imp->pack_id,
					       i < imp->npacks ? imp->packs[i].end : imp->wpos);
	pthread_mutex_unlock(&st->lock);
	if (imp->new_dataset) {
		st->next_dataset_id = imp->ds.info.id + 1;
		/* Given to the cache, which frees it if it cannot keep it. The version is committed
		 * either way: on a miss the key is unwrapped again from the index. */
		store_dataset_key_cache(st, imp->ds.info.id, imp->dkey, &imp->ds);
		imp->dkey = NULL;
	} else {
		store_dataset_rec_update(st, &imp->ds);
	}
	store_rekey_rdunlock(st);
	progress(imp, true);
	*ret_version = imp->version;
	return 0;
}

/* Undo an uncommitted import: its records and its pack bytes. Best effort: whatever is left is
 * removed by recovery at the next open, exactly as after a crash. */
static void import_abort(struct store_import *imp)
{
	struct store *st = imp->st;
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	uint8_t lo[VKEY_LEN], hi[VKEY_LEN];
	char pname[32];

	imp->cur = NULL;
	if (imp->ring_ok)
		drain(imp);
	/* Nothing of the version is written after the deletion below. */
	ixw_stop(imp);
	vkey(lo, imp->ds.info.id, imp->version);
	if (imp->version == UINT32_MAX)
		vkey(hi, imp->ds.info.id + 1, 0);
	else
		vkey(hi, imp->ds.info.id, imp->version + 1);
	rocksdb_writebatch_delete_range_cf(wb, st->ix.cf[CF_INODES], (const char *)lo, sizeof(lo),
					   (const char *)hi, sizeof(hi));
	rocksdb_writebatch_delete_range_cf(wb, st->ix.cf[CF_DIRENTS], (const char *)lo, sizeof(lo),
					   (const char *)hi, sizeof(hi));
	rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_VERSIONS], (const char *)lo, sizeof(lo));
	index_write(&st->ix, wb, true);
	rocksdb_writebatch_destroy(wb);

	/* The existing pack this import appended to is cut back to where this import began. */
	if (imp->append_pack_id) {
		int fd;

		pack_name(pname, sizeof(pname), imp->append_pack_id);
		fd = openat(st->packs_dirfd, pname, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0) {
			if (ftruncate(fd, (off_t)imp->append_pack_start) == 0)
				fdatasync(fd);
			close(fd);
		}
	}
	/* Packs this import created are known to no commit. */
	for (uint64_t id = imp->first_new_pack; id && id <= imp->pack_id; id++) {
		pack_name(pname, sizeof(pname), id);
		unlinkat(st->packs_dirfd, pname, 0);
	}
}

void store_import_free(struct store_import *imp)
{
	struct store *st;

	if (!imp)
		return;
	st = imp->st;
	/* The scan of the version shared from uses the tables freed below. */
	if (imp->scan_running)
		pthread_join(imp->scan_thread, NULL);
	imp->scan_running = false;
	if (!imp->committed && imp->wb)
		import_abort(imp);
	/* Nothing is pending after a commit or an abort (both drain); the join waits anyway. */
	pool_stop(imp);
	ixw_stop(imp);
	pf_stop(imp);
	claim_stop(imp);
	if (imp->ring_ok)
		io_uring_queue_exit(&imp->ring);
	if (imp->pack_fd >= 0)
		close(imp->pack_fd);
	for (unsigned i = 0; i < IMPORT_BUFS; i++) {
		/* The buffers held plaintext before it was encrypted in place. */
		/* Only the bytes ever reserved: wiping the rest would only fault in pages never
		 * written (13 MiB in all with the stage and hbuf; 6 % of the daemon's time in a
		 * version 2 whose files are all unchanged, and still some 250 faults, a whole
		 * buffer, when one small file changed). */
		if (imp->bufs[i].data)
			explicit_bzero(imp->bufs[i].data, imp->bufs[i].hw);
		mem_release(imp, imp->bufs[i].data);
		free(imp->bufs[i].jobs);
	}
	explicit_bzero(imp->tagacc, sizeof(imp->tagacc));
	batch_keep(st, imp->wb);
	batch_keep(st, imp->wb_spare);
	buf_free(&imp->scratch);
	free(imp->dq);
	buf_free(&imp->dq_vals);
	if (imp->plain.data)
		explicit_bzero(imp->plain.data, imp->plain.cap);
	buf_free(&imp->plain);
	crypto_key_free(imp->ix_seal);
	crypto_key_free(imp->ix_name);
	crypto_mac_key_free(imp->ix_name_mk);
	crypto_key_free(imp->vkey);
	crypto_hash_free(imp->man_files);
	crypto_hash_free(imp->man_dirs);
	crypto_hash_free(imp->chash);
	crypto_key_free(imp->content_key);
	crypto_mac_key_free(imp->stamp_mk);
	if (imp->hbuf)
		explicit_bzero(imp->hbuf, imp->hbuf_hw);   /* plaintext */
	mem_release(imp, imp->hbuf);
	if (imp->grp)
		explicit_bzero(imp->grp, STORE_GROUP_MAX + 1);   /* plaintext */
	free(imp->grp);
	for (size_t i = 0; imp->grp_m && i < imp->grp_n; i++)
		free(imp->grp_m[i].name);
	free(imp->grp_m);
	share_clear(imp);
	free(imp->shr_m);
	free(imp->shr_plain);
	store_reader_free(imp->rd);
	reuse_drop(imp);
	owed_free(imp);
	crypto_chunk_ctx_free(imp->cctx);
	crypto_key_free(imp->dkey);
	for (size_t i = 0; i < imp->ndirs; i++) {
		free(imp->dirs[i].path);
		free(imp->dirs[i].max_name);
	}
	free(imp->dirs);
	free(imp->hash);
	st->import = NULL;
	__atomic_store_n(&st->import_done, false, __ATOMIC_RELEASE);
	free(imp);
	pthread_mutex_unlock(&st->import_lock);
}

void store_import_target(const struct store_import *imp, uint64_t *ret_dataset_id,
			 uint32_t *ret_version)
{
	*ret_dataset_id = imp->ds.info.id;
	*ret_version = imp->version;
}

void store_import_get_stats(const struct store_import *imp, struct store_import_stats *ret_stats)
{
	*ret_stats = imp->stats;
}


