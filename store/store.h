/* store: encrypted objects in append-only pack files, indexed by RocksDB.
 *
 * A store is a directory (docs/FORMAT.md, "Store directory"):
 *   ENCLAVE          marker, "enclave-store 1\n"
 *   LOCK             flock()ed by the one process that has the store open
 *   keys/master.key  the wrapped master key (crypto_master_create)
 *   packs/NNN.pack   append-only pack files of encrypted objects
 *   index/           RocksDB: datasets, versions, inodes, directory entries, extents, wrapped keys
 *
 * Datasets have immutable versions 1, 2, ...; an import writes a new version, which becomes
 * visible in one synchronous RocksDB write batch after its pack data is durable (fdatasync).
 * An import interrupted before that (crash, kill -9, abort) leaves no trace after the next open.
 *
 * Contract: functions that act return 0 (or a count) on success and -errno on failure; outputs are
 * ret_* parameters, last, untouched on failure. On failure a human-readable detail (which file,
 * which record, what RocksDB said) is available from err_detail() in common/err.h.
 *
 * Threads: store_* lookups and store_object_open/read are safe from many threads at once; a
 * store_reader and a store_import belong to one thread at a time. One import runs at a time.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "crypto/crypto.h"

/* Bounds on names that come from outside. */
#define STORE_DATASET_NAME_MAX 128  /* [A-Za-z0-9._-], not starting with '.' or '-' */
#define STORE_NAME_MAX 255          /* one path component */
#define STORE_PATH_MAX 4096         /* a path inside a dataset */
/* Pack files are rotated once they pass this size (an object larger than it gets a pack alone). */
#define STORE_PACK_TARGET (1ull << 30)
/* Objects start at multiples of this in a pack, so chunk reads can use O_DIRECT. */
#define STORE_ALIGN 4096u
/* Length of a version's manifest (BLAKE2b-256). */
#define STORE_MANIFEST_LEN 32
/* Length of an object's keyed content hash (struct store_extent). */
#define STORE_CONTENT_MAC_LEN 32
/* Tiny files (docs/FORMAT.md 4.10): a regular file of at most STORE_TINY_MAX bytes is not an
 * object of its own but a member of a group, one object holding the plaintext of up to
 * STORE_GROUP_MEMBERS_MAX such files back to back, at most STORE_GROUP_MAX bytes (so that the
 * group and its one tag take exactly one 4096-byte block at most). */
#define STORE_TINY_MAX 1024u
#define STORE_GROUP_MAX 4080u
#define STORE_GROUP_MEMBERS_MAX 1024u
/* Inode number of a version's root directory. */
#define STORE_ROOT_INO 1

struct store;

struct store_open_options {
	bool direct_io;        /* read packs with O_DIRECT (falls back to buffered where unsupported) */
	uint64_t pack_target;  /* rotate packs past this many bytes; 0: STORE_PACK_TARGET */
	/* A node (enclaved --node; docs/DEPLOYMENT.md): open the index as a read-only RocksDB
	 * secondary of the primary's, keeping its own state in this directory (local disk, not
	 * shared). Nothing in the store is written, no lock is taken and no recovery runs; every
	 * call that would write is -EROFS; store_catch_up() reads what the primary committed since.
	 * NULL: the primary (the one writer). */
	const char *secondary_dir;
	/* The primary on a shared store: take the store's lease of this many milliseconds
	 * (STORE_LEASE_MS_MIN..MAX) before the index is opened: -EBUSY another primary holds it
	 * (store_lease_acquire's rules, docs/DEPLOYMENT.md). 0: none (tools, tests). */
	unsigned lease_ms;
	unsigned lease_settle_ms;  /* the pause before the new lease is read back */
	/* A node without the passphrase (with secondary_dir): the keys the primary sealed to it
	 * (store_node_keys_export()), borrowed for the call; no master key is unlocked. NULL: the
	 * passphrase opens the store. */
	const struct store_node_keys *node_keys;
};

/* ---- Keys for nodes (docs/DEPLOYMENT.md "Node keys", docs/FORMAT.md 3.9) ----------------------
 *
 * A node runs without the passphrase: the primary gives it the entries of the key ring (the name
 * key, every dataset's key, every version's key) and the store-wide index seal key Ks (policy and
 * meta records), sealed to the node's own key (daemon/node_bundle.c). Never the master key. */
#define STORE_NODE_KEYS_MAX (1u << 20)   /* entries: as many as a key ring holds */

struct store_node_key {
	uint8_t kind;           /* 1 names, 2 dataset, 3 version, 4 names (next): docs/FORMAT.md 3.7 */
	uint32_t version;
	uint64_t dsid;
	uint8_t key[32];
};

struct store_node_keys {
	uint8_t store_id[16];
	uint64_t generation;          /* of the key ring they were taken from */
	uint8_t ix_seal[32];          /* Ks */
	size_t n;
	struct store_node_key *e;     /* n entries, in the ring's order */
};

/* The primary: a copy of the ring and Ks, in guarded memory (store_node_keys_free()). -EROFS a
 * node; -ENOKEY no key ring (a store of an older format). */
int store_node_keys_export(struct store *st, struct store_node_keys **ret);
/* A node opened with node_keys: take the ring in k (a newer bundle) in place of the one it has;
 * keys of versions and datasets no longer in it are dropped. -ESTALE its generation is lower
 * than the one held (nothing changes); -EINVAL another store's. */
int store_node_keys_set(struct store *st, const struct store_node_keys *k);
/* The generation of the key ring in use (a node: of the keys it was last given). */
uint64_t store_ring_generation(struct store *st);
/* Allocate k with room for n entries, in guarded memory. */
int store_node_keys_new(size_t n, struct store_node_keys **ret);
/* Wipe and free. NULL is fine. */
void store_node_keys_free(struct store_node_keys *k);
/* The primary: fn(ctx) is called after every commit of the key ring (an import's commit, before
 * its index batch; an erasure), outside the store's locks, so that the nodes' copies are
 * rewritten before any node can see the version they are for. */
void store_set_ring_hook(struct store *st, void (*fn)(void *ctx), void *ctx);
/* A node: fn(ctx) is called by store_catch_up() when the index moved, before the cached dataset
 * records are dropped (the node reloads its key bundle there). Set before the first catch-up. */
void store_set_catch_up_hook(struct store *st, void (*fn)(void *ctx), void *ctx);

/* Both store_create() and store_open() first make the process non-dumpable (see
 * crypto_harden_process()): a process that holds the master key must not leave it in a core file.
 *
 * Create a new store in dir (created mode 0700 if absent; must be empty if present), with a new
 * master key wrapped under pass. -EEXIST if dir holds anything; -EINVAL bad kdf params. On success
 * the store is open as with store_open(). */
int store_create(const char *dir, const crypto_secret *pass, const struct crypto_kdf_params *kdf,
		 struct store **ret_store);
/* Open an existing store: check the marker, lock it, unlock the master key, open the index, and
 * recover from an interrupted import (drop its pending version from the index). Pack bytes no
 * commit refers to are never deleted at open, since an index older than the packs (restored
 * from a backup) would otherwise destroy newer data; appends go after them. opts may be NULL.
 * -ENOENT / -ENOTDIR not a store; -EBUSY another process has it open; -EKEYREJECTED wrong
 * passphrase; -EIO RocksDB failed (detail in err_detail()). A damaged pack does not stop the
 * open: reads of the objects in it fail instead. */
int store_open(const char *dir, const crypto_secret *pass, const struct store_open_options *opts,
	       struct store **ret_store);
/* A store opened as a secondary (opts->secondary_dir): read what the primary has written since
 * the open or the last call (its MANIFEST and WAL, through the shared directory), and forget
 * what the store cached about the datasets' latest versions, so that lookups from now on see it.
 * *ret_seq: the index's sequence number now seen (it grows with every write of the primary; a
 * value lower than the primary announced means this node is behind). -EINVAL not a secondary;
 * -EIO the catch-up failed (detail in err_detail()). Safe while other threads read. */
int store_catch_up(struct store *st, uint64_t *ret_seq);
/* The index's latest sequence number (the primary's: what it has written so far). */
uint64_t store_sequence(struct store *st);
/* A count that grows with every index write except an import's batches of records of its
 * PENDING version, which no reader sees before the commit (itself a write that counts): what the
 * primary announces to the nodes at once (docs/DEPLOYMENT.md section 3). Never above
 * store_sequence(). */
uint64_t store_sequence_visible(struct store *st);
/* True when the store was opened as a secondary. */
bool store_is_secondary(const struct store *st);
/* ---- The primary's lease (store/lease.c; docs/DEPLOYMENT.md "The lease") ------------------- */

/* The lease's length: 1 s to 10 min; enclaved's default is STORE_LEASE_MS_DEFAULT. */
#define STORE_LEASE_MS_MIN 1000u
#define STORE_LEASE_MS_MAX 600000u
#define STORE_LEASE_MS_DEFAULT 10000u
struct store_lease;
/* The lease store_open() took (opts->lease_ms), or NULL: owned by the store, released (left
 * expired, so the next primary need not wait) by store_close(). */
struct store_lease *store_lease(struct store *st);
/* Renew it (call every third of the lease): -ESTALE another primary holds it now (this one is
 * fenced and must stop writing at once); -ETIMEDOUT it expired before this renewal. A missing,
 * forged or replayed older file is replaced. */
int store_lease_renew(struct store_lease *l);
/* The fencing token: signals to the nodes carry it. */
uint64_t store_lease_token(const struct store_lease *l);
/* When the lease as last written expires (unix ns). */
int64_t store_lease_expires_ns(const struct store_lease *l);
/* Give it up (the file is left expired, so the next primary need not wait) and free. NULL is
 * fine. store_close() calls it. */
int store_lease_release(struct store_lease *l);
/* Free without touching the file. */
void store_lease_free(struct store_lease *l);
/* The store's random id (from the index), which signals and node bundles are bound to. */
void store_id(const struct store *st, uint8_t ret_id[static 16]);

/* Close, wiping every key. NULL is fine. An import still open is aborted first. */
void store_close(struct store *st);
/* Index records read (point lookups of RocksDB) since the store was opened: what a request
 * costs the index, for tests and benchmarks (docs/PERFORMANCE.md, issue 13). */
uint64_t store_index_reads(struct store *st);

/* A version that an import left uncommitted (the process was killed, or crashed) and that
 * store_open() dropped. */
struct store_recovered {
	uint64_t dataset_id;   /* a new dataset's id was never used: no dataset has it */
	uint32_t version;
};
/* The most store_open() remembers; more are counted. */
#define STORE_RECOVERED_MAX 16
/* What store_open() dropped: up to STORE_RECOVERED_MAX in *ret (borrowed until store_close()),
 * their number returned, any beyond the cap in *ret_more (may be NULL), so the daemon can record
 * it (docs/AUDIT.md, "import"). */
size_t store_recovered(const struct store *st, const struct store_recovered **ret,
		       uint64_t *ret_more);
/* The audit log's Ed25519 signing key (docs/FORMAT.md "keys/audit.key"): a random 32-byte seed,
 * wrapped under the master key, bound to this store and to its key name (which names the log in
 * every signed checkpoint: printable ASCII without spaces or '+', at most STORE_SIGNING_NAME_MAX
 * bytes). Separate from every data key.
 * Create it (once: -EEXIST if there is one; -EINVAL a bad name). */
#define STORE_SIGNING_NAME_MAX 200
int store_signing_create(struct store *st, const char *name);
/* A valid key name: 1 to STORE_SIGNING_NAME_MAX bytes of 0x21-0x7e other than '+'. */
bool store_signing_name_valid(const char *name);
/* The name used when none is chosen: "HOSTNAME/enclave" ("localhost/enclave" without one). */
void store_signing_default_name(char out[static STORE_SIGNING_NAME_MAX + 1]);
/* Unwrap it: the seed (guarded memory; the caller frees it) and the name. -ENOENT none yet;
 * -EBADMSG damaged, altered or from another store. */
int store_signing_seed(struct store *st, crypto_key **ret_seed,
		       char ret_name[static STORE_SIGNING_NAME_MAX + 1]);
/* The GA4GH visa signing key (docs/FORMAT.md "keys/visa.key"): a random 32-byte seed from which
 * the ES256 key is derived (crypto_es256_from_seed), wrapped under the master key like the audit
 * key, bound to this store and to its purpose, in its own file. Create it (once: -EEXIST if
 * there is one); unwrap it (guarded memory, the caller frees it; -ENOENT none yet, -EBADMSG
 * damaged, altered, from another store, or another key's file). */
int store_visa_key_create(struct store *st);
int store_visa_key_seed(struct store *st, crypto_key **ret_seed);
/* The store's Crypt4GH site key (docs/CRYPT4GH.md "Site key"): an X25519 secret wrapped under the
 * master key like the keys above, in keys/crypt4gh.key. Put it once (-EEXIST if there is one:
 * never replaced, so files already sent to the site's public key stay readable); get it
 * (guarded memory, the caller frees it; -ENOENT none yet, -EBADMSG damaged, altered, from
 * another store, or another key's file). */
int store_crypt4gh_key_put(struct store *st, const crypto_key *sk);
int store_crypt4gh_key_get(struct store *st, crypto_key **ret_sk);

/* The key the audit log's epoch keys are wrapped under, so the daemon reads its own sealed log
 * back (policy checks, `policy rebuild`): derived from the master key for this store
 * (docs/AUDIT.md "Sealed records"). Guarded memory; the caller frees it. */
int store_audit_seal_key(struct store *st, crypto_key **ret_key);
/* The key a node's audit log (audit/nodes/NODE) seals its epoch keys under, as the store key does
 * for the primary's log: derived from the master key and the node's name (at most 64 bytes), so
 * the primary reads every node's log and a node only its own. -ENOKEY no master key here. */
int store_node_audit_key(struct store *st, const char *node, crypto_key **ret_key);
/* The auditors' X25519 public keys the log seals to (keys/auditors, authenticated under the
 * master key). No file: *ret_n = 0. -EBADMSG damaged or altered. */
#define STORE_AUDITORS_MAX 16
int store_auditors_get(struct store *st, uint8_t ret_keys[static STORE_AUDITORS_MAX][32],
		       size_t *ret_n);
/* Add one (replacing the file atomically). -EEXIST already listed; -E2BIG the list is full. */
int store_auditors_add(struct store *st, const uint8_t key[static 32]);
/* The key of the running digest of the policy records, which binds them to the audit log
 * (docs/POLICY.md "Bound to the log"): derived from the master key. */
int store_policy_digest_key(struct store *st, crypto_key **ret_key);

/* Called, in the thread that found it, for every integrity failure the store finds in its index
 * (a record that does not authenticate, is out of its place, or is missing where the records
 * around it say it must be): dsid/version as far as known (0 otherwise), `what` a sentence that
 * names ids, never names or keys. The lookup that found it returns -EBADMSG. fn NULL: none. */
void store_set_integrity_hook(struct store *st,
			      void (*fn)(void *ctx, uint64_t dsid, uint32_t version,
					 const char *what),
			      void *ctx);

/* How many integrity failures the store has found in its index since it was opened (the
 * daemon collects no garbage on a store that has found any: store_gc()). */
uint64_t store_integrity_failures(const struct store *st);

/* ---- Datasets and versions ----------------------------------------------------------------- */

struct store_dataset_info {
	char name[STORE_DATASET_NAME_MAX + 1];
	uint64_t id;               /* never reused within a store; keys index records */
	int64_t created_ns;        /* wall clock when its first import began */
	uint32_t latest_version;   /* newest committed version, >= 1 */
};

struct store_version_info {
	uint64_t dataset_id;
	uint32_t version;
	int64_t created_ns;        /* import began */
	int64_t committed_ns;      /* import committed */
	uint64_t files;            /* regular files */
	uint64_t dirs;             /* directories, root included */
	uint64_t bytes;            /* plaintext bytes of all files */
	/* BLAKE2b-256 over every record of the version, computed at import and sealed in its
	 * version record (docs/FORMAT.md "Manifest"): names the exact content of the version. */
	uint8_t manifest[STORE_MANIFEST_LEN];
};

/* True for a valid dataset name (see STORE_DATASET_NAME_MAX). */
bool store_dataset_name_valid(const char *name);
/* -ENOENT no such dataset. */
int store_dataset_get(struct store *st, const char *name, struct store_dataset_info *ret_info);
/* Call fn for every dataset in name order; a non-zero return from fn stops and is returned.
 * Every dataset's latest version is checked (store_dataset_get()); a record that does not
 * authenticate, or a dataset that fails its check, is left out and reported through the integrity
 * hook, so that damage to one dataset does not hide the others. */
int store_dataset_foreach(struct store *st,
			  int (*fn)(void *ctx, const struct store_dataset_info *info), void *ctx);
/* What an audit log must account for: how many datasets and policy records (grants, approvals,
 * revocations, deny rules) the store holds. A store with either has a history, and its audit
 * log is never started afresh without a word (enclaved, `enclavectl audit new-log`). */
int store_history_count(struct store *st, uint64_t *ret_datasets, uint64_t *ret_policy);
/* A committed version. -ENOENT no such (committed) version. */
int store_version_get(struct store *st, uint64_t dataset_id, uint32_t version,
		      struct store_version_info *ret_info);

/* ---- Erasure (docs/FORMAT.md 3.7, 3.8) --------------------------------------------------------- */

/* A version an erasure destroyed, with the manifest that named its content. */
struct store_erased_version {
	uint32_t version;
	uint8_t manifest[STORE_MANIFEST_LEN];
};

/* What an erasure did, for its audit record. Owned arrays: store_erasure_free(). */
struct store_erasure {
	uint64_t dataset_id;
	uint32_t version;                          /* 0: the whole dataset */
	struct store_erased_version *versions;     /* the versions destroyed */
	size_t nversions;
	uint8_t (*key_ids)[16];                    /* ids of the keys destroyed (keyring_key_id) */
	size_t nkeys;
	uint64_t ring_generation;                  /* of the key ring written without them */
	uint8_t ring_digest[32];                   /* BLAKE2b-256 of that ring file */
};

/* Erase version `version` of dataset `name`, or the whole dataset when version is 0: its records
 * are deleted and purged from the index's files, its keys removed from the key ring, which is
 * rewritten under a fresh file key; afterwards nothing of it decrypts with the store's keys, in
 * the store or in any earlier copy of its packs and index. Crash-safe (finished at the next
 * open). Authorisation is the caller's (the daemon's approval rule). -ENOENT no such dataset or
 * version; -ENOTEMPTY version is the dataset's last one (erase the dataset); -EBUSY an import is
 * running; -EPROTONOSUPPORT not format 3. */
int store_erase(struct store *st, const char *name, uint32_t version, struct store_erasure *ret);
/* The most versions one erasure takes (a dataset with more is refused, -E2BIG). */
#define STORE_ERASE_VERSIONS_MAX 65536
/* The erasure store_erase() carried out (its keys destroyed) that its caller has not recorded
 * yet, as store_erase() gave it, with the key ring as it is now: the caller was killed between
 * the two, or failed to record it. It is kept until store_erase_recorded(), or until the next
 * store_erase() replaces it (so record it before erasing again). -ENOENT: none. */
int store_erase_unrecorded(struct store *st, struct store_erasure *ret);
/* The caller recorded the erasure of (dataset_id, version): forget it. -ENOENT not that one. */
int store_erase_recorded(struct store *st, uint64_t dataset_id, uint32_t version);
void store_erasure_free(struct store_erasure *e);
/* The key ring's generation and digest now, which the daemon checks against the last erasure
 * record of its audit log at start (a ring older than an erasure brings erased keys back). */
void store_ring_state(struct store *st, uint64_t *ret_generation, uint8_t ret_digest[static 32]);

/* ---- Inodes and directories ---------------------------------------------------------------- */

/* Where a file's encrypted object lives and how to decrypt it. */
struct store_extent {
	uint8_t object_id[CRYPTO_OBJECT_ID_LEN];      /* random; bound into every chunk's AD */
	uint64_t pack_id;                              /* packs/<016x>.pack */
	uint64_t offset;                               /* object start in the pack, STORE_ALIGN'ed */
	uint32_t chunk_size;                           /* plaintext bytes per chunk */
	uint32_t alg;                                  /* enum crypto_aead */
	uint8_t wrapped_key[CRYPTO_WRAPPED_KEY_LEN];   /* object key under the dataset key */
	/* Keyed BLAKE2b-256 of the plaintext under the dataset's content key (docs/FORMAT.md
	 * "Shared objects"): how a later import finds the file unchanged and reuses this object.
	 * Only in the sealed inode record; has_content_mac false for objects imported before it. */
	uint8_t content_mac[STORE_CONTENT_MAC_LEN];
	bool has_content_mac;
	/* Keyed BLAKE2b-256, under the content key with its own context, of the source file's
	 * (st_dev, st_ino, st_size, st_mtim, st_ctim) when it was imported (docs/FORMAT.md "Shared
	 * objects"): a later import that finds the same stamp for the same path reuses the object
	 * without reading the file. Only with has_content_mac; has_stamp false for streams and for
	 * objects imported before it. */
	uint8_t stamp[STORE_CONTENT_MAC_LEN];
	bool has_stamp;
	/* A tiny file (docs/FORMAT.md 4.10): the object (object_id, pack_id, offset, key) is its
	 * group, of group_size plaintext bytes, and the file is the inode's size bytes at
	 * member_off in it. The wrapped key's AD names the group and the member's place. */
	bool grouped;
	uint32_t group_size;
	uint32_t member_off;
	uint16_t member_idx;     /* its number among the group's members, 0 .. member_count - 1 */
	uint16_t member_count;   /* how many files the group holds */
};

enum store_inode_type {
	STORE_INODE_FILE = 1,
	STORE_INODE_DIR = 2,
};

struct store_inode {
	uint64_t ino;              /* unique within its dataset version; root is STORE_ROOT_INO */
	uint32_t type;             /* enum store_inode_type */
	uint32_t mode;             /* permission bits (07777) from the source */
	int64_t mtime_ns;          /* modification time from the source */
	uint64_t size;             /* file: plaintext bytes; directory: number of entries */
	uint32_t nlink;            /* file: 1; directory: 2 + subdirectories */
	uint32_t version;          /* the version it was read from (its object key is wrapped
				      under that version's key): set by the lookups */
	struct store_extent ext;   /* files only */
};

/* The lookups below take a dataset id and version that the caller obtained from
 * store_dataset_get() / store_version_get(), which only ever return committed versions; records
 * of a version still being imported exist in the index but are not to be asked for. */

/* -ENOENT. */
int store_inode_get(struct store *st, uint64_t dataset_id, uint32_t version, uint64_t ino,
		    struct store_inode *ret_inode);
/* Look name up in directory dir_ino. -ENOENT; -EINVAL bad name. */
int store_dir_lookup(struct store *st, uint64_t dataset_id, uint32_t version, uint64_t dir_ino,
		     const char *name, struct store_inode *ret_inode);
/* Resolve a relative path ("" or "." is the root) component by component. -ENOENT, -ENOTDIR. */
int store_path_lookup(struct store *st, uint64_t dataset_id, uint32_t version, const char *path,
		      struct store_inode *ret_inode);
/* Call fn for each entry of dir_ino in a stable order (that of the keyed hashes of the names, the
 * same on every call), starting after `after` (NULL: from the first). fn returns non-zero to stop;
 * that value is returned. A listing that reaches the end has been checked against the directory's
 * record (count and digest of its entries): -EBADMSG if an entry was removed or added. */
int store_dir_foreach(struct store *st, uint64_t dataset_id, uint32_t version, uint64_t dir_ino,
		      const char *after,
		      int (*fn)(void *ctx, const char *name, uint64_t ino, uint32_t type),
		      void *ctx);

/* ---- Reading objects ----------------------------------------------------------------------- */

/* An open object: its extent and unwrapped key. Immutable, so safe to share between threads. */
struct store_object;

/* Unwrap the object key of a file inode (checking that the wrapped key belongs to this dataset,
 * object id, algorithm, chunk size and size). -EISDIR not a file; -EBADMSG the key or its record
 * was altered. */
int store_object_open(struct store *st, uint64_t dataset_id, const struct store_inode *inode,
		      struct store_object **ret_obj);
/* Wipe and free. NULL is fine. */
void store_object_close(struct store_object *obj);
uint64_t store_object_size(const struct store_object *obj);
/* Plaintext bytes per chunk: reads aligned to it decrypt nothing twice. */
uint32_t store_object_chunk_size(const struct store_object *obj);

/* Per-thread read state: an io_uring and aligned buffers. */
struct store_reader;
int store_reader_new(struct store *st, struct store_reader **ret_reader);
void store_reader_free(struct store_reader *r);

/* Read up to len bytes at off into buf: the chunks covering [off, off+len) are read in one
 * batch of io_uring reads and each is authenticated before any of its bytes are copied out.
 * Returns the bytes read (short only at the end of the object, 0 at or past it; a read at 0 of an
 * empty object checks its one empty chunk).
 * -EBADMSG a chunk failed authentication (nothing of it reaches buf); -ENODATA the pack is
 * shorter than the index says (cut, or replaced by an older copy); -EIO or another -errno the
 * disk failed. */
ssize_t store_object_read(struct store_reader *r, const struct store_object *obj, uint64_t off,
			  size_t len, void *buf);

/* ---- Importing ----------------------------------------------------------------------------- */

struct store_import_stats {
	uint64_t files;       /* regular files imported so far */
	uint64_t dirs;        /* directories recorded so far */
	uint64_t bytes;       /* plaintext bytes imported so far */
	uint64_t reused_files;   /* of files: unchanged, their object reused (nothing written) */
	uint64_t reused_bytes;   /* of bytes: in those files */
	uint64_t stamped_files;  /* of reused_files: found unchanged by their source stamp, unread */
	uint64_t read_bytes;     /* plaintext bytes read from the sources (and hashed) */
};

struct store_import_options {
	uint32_t chunk_size;  /* 0: CRYPTO_CHUNK_DEFAULT */
	uint32_t alg;         /* 0: crypto_aead_preferred() */
	/* Read and hash every file, even one whose source stamp says it is unchanged since the
	 * previous version (enclavectl dataset import --rehash). */
	bool rehash;
	/* Called after each file and every few MiB; may be NULL. */
	void (*progress)(void *ctx, const struct store_import_stats *stats);
	void *progress_ctx;
};

struct store_import;

/* Begin version latest+1 of dataset `name` (created if new). Takes the store's import lock:
 * -EBUSY while another import runs. -EINVAL bad name or options. opts may be NULL. The scan of
 * the version to share from (docs/FORMAT.md 6.13) goes on, on its own thread, after this
 * returns: the first file added (or the close of the version) waits for it, and a failure of it
 * other than damage (which only makes the version share nothing) fails the import there. */
int store_import_begin(struct store *st, const char *name, const struct store_import_options *opts,
		       struct store_import **ret_imp);
/* Record a directory at path (relative, '/'-separated, no "." or ".." or empty components) with
 * the given permission bits and mtime. Parents are created as needed (mode 0755). */
int store_import_add_dir(struct store_import *imp, const char *path, uint32_t mode,
			 int64_t mtime_ns);
/* Encrypt and pack the regular file open at fd (borrowed; read with pread from offset 0, whatever
 * its file position) as path. Size, mode and mtime come from fstat(fd). -EINVAL not a regular file; -EEXIST path already
 * imported; -ENOTDIR a parent is a file; -EIO the file changed size while it was read. */
int store_import_add_file(struct store_import *imp, const char *path, int fd);
/* As store_import_add_file() with fstat(fd) already taken by the caller (st borrowed): one system
 * call less per file. A file that changed size since is caught as it is read (-EIO). */
struct stat;
int store_import_add_file_stat(struct store_import *imp, const char *path, int fd,
			       const struct stat *st);
/* The most files one store_import_add_files() call takes. */
#define STORE_IMPORT_BATCH_MAX 64u
/* Bytes of a file's start given to the divert predicate of store_import_add_files(). */
#define STORE_DIVERT_HEAD 16u
/* Import files[0..n) in order, as n calls of store_import_add_file_stat() would (fds and sts
 * borrowed; sts[i] is fstat(fds[i])), the small ones (dense objects, docs/FORMAT.md 4.7) first
 * read and hashed together on the import's helper threads (issue 13). divert (may be NULL) is
 * shown the first bytes of each file (up to STORE_DIVERT_HEAD) before it is imported: when it
 * returns true, the call stops there and returns how many files it imported, so that the caller
 * handles that file itself (a Crypt4GH file) and calls again with the rest. Returns n (or the
 * index of the diverted file), or -errno (the import fails, as for add_file). */
int store_import_add_files(struct store_import *imp, size_t n, const char *const *paths,
			   const int *fds, const struct stat *sts,
			   bool (*divert)(const uint8_t *head, size_t len));
/* The most files one store_import_add_claimed() call takes, and the most that may wait for their
 * descriptor at once. */
#define STORE_IMPORT_CLAIM_MAX 256u
#define STORE_IMPORT_OWED_MAX 4096u
/* Files told of by their source's stat alone, without a descriptor (issue 16; docs/FORMAT.md
 * 6.13): sts[i] is what the client's fstatat() said of paths[i] (st_dev, st_ino, st_size, st_mode,
 * st_mtim, st_ctim; borrowed). A file whose source stamp holds in the previous version (and, with
 * heads, the stamp that says its head was checked for the Crypt4GH magic) is imported as
 * store_import_add_file() would import it unread; for every other one ret_need[i] is set and
 * nothing of it is imported: it is owed, and must come with its descriptor (add_file or
 * add_files), which takes it out of the owed set. The whole batch is checked first (-EINVAL: a
 * path not valid, not a regular file, twice in the batch; -EEXIST: already imported, or owed;
 * -E2BIG: more than STORE_IMPORT_CLAIM_MAX files, or more than STORE_IMPORT_OWED_MAX owed): such
 * a refusal changes nothing and the import goes on. Returns how many were imported, or -errno
 * (a failure while importing fails the import, as add_file). store_import_manifest() and the
 * commit refuse (-EPROTO) while a file is owed. */
int store_import_add_claimed(struct store_import *imp, size_t n, const char *const *paths,
			     const struct stat *sts, bool heads, bool *ret_need);
/* The caller imports the owed file path under another name (a Crypt4GH file, decrypted). */
void store_import_owed_drop(struct store_import *imp, const char *path);
/* Has the import failed (every later call refuses; only free is left)? */
bool store_import_failed(const struct store_import *imp);
/* Files owed with their descriptor now. */
int store_import_owed(const struct store_import *imp);
/* Would store_import_add_claimed() import a file whose stamp holds, or ask for every one (no
 * previous version to share from, or rehash)? Known at begin, before the scan of that version
 * ends: should the scan find it damaged, every file is asked for all the same. */
bool store_import_stamps(const struct store_import *imp);
/* A file's plaintext that does not come from a file (a Crypt4GH file decrypted as it is read):
 * read(ctx, buf, len) gives the next len bytes in order, fewer only at the end, 0 at the end
 * after checking all that is left; -errno with err_detail() on failure (the import then fails,
 * naming the path). Borrowed for the call. */
struct store_import_stream {
	ssize_t (*read)(void *ctx, void *buf, size_t len);
	void *ctx;
	uint64_t size;        /* bytes it gives: exactly this many, or the import fails */
	uint32_t mode;        /* permission bits */
	int64_t mtime_ns;
};
/* Encrypt and pack what stream gives as path; otherwise as store_import_add_file(). */
int store_import_add_stream(struct store_import *imp, const char *path,
			    const struct store_import_stream *stream);
/* Import everything under the directory open at dirfd (borrowed) into the dataset root.
 * Symlinks, devices, sockets and FIFOs are refused with -EINVAL, naming the path. */
int store_import_add_tree(struct store_import *imp, int dirfd);
/* Make the version durable and visible: drain writes, fdatasync packs, then one synchronous
 * index batch. After any failed add_* call, commit refuses with that call's error. */
int store_import_commit(struct store_import *imp, uint32_t *ret_version);
/* Abort (if not committed) and free. NULL is fine. */
void store_import_free(struct store_import *imp);
/* The running totals. */
void store_import_get_stats(const struct store_import *imp, struct store_import_stats *ret_stats);
/* The dataset id and the version number the import will commit as, fixed at store_import_begin()
 * (the store's import lock keeps them from changing), so that the commit can be recorded before
 * it is made. */
void store_import_target(const struct store_import *imp, uint64_t *ret_dataset_id,
			 uint32_t *ret_version);
/* The version's manifest (store_version_info.manifest), so that it can be recorded before the
 * commit: the version is closed to further add_* calls (-EINVAL), its directory records are made
 * final, and store_import_commit() commits exactly what the manifest names. Again after the
 * commit: the same manifest. The import's sticky error, if any. */
int store_import_manifest(struct store_import *imp, uint8_t ret[static STORE_MANIFEST_LEN]);

/* ---- Garbage collection (store/gc.c; docs/FORMAT.md "Garbage collection") ------------------ */

/* Steps, reported to the progress callback (and where a test kills the process). */
enum store_gc_step {
	STORE_GC_SCANNED = 1,   /* every record read and checked, the plan made; done = live
				   objects, total = bytes it will free */
	STORE_GC_COPIED,        /* done of total bytes of live objects copied out of packs to
				   compact (at least every 64 MiB, and at the end) */
	STORE_GC_SYNCED,        /* the packs they went to are durable; done = how many */
	STORE_GC_COMMITTED,     /* one index batch moved the objects and retired the packs */
	STORE_GC_REMOVED,       /* done of total pack files removed or cut back */
	STORE_GC_DONE,          /* done = total = bytes freed */
};

/* What one dataset keeps alive (`store df`). */
struct store_gc_dataset {
	uint64_t id;
	char name[STORE_DATASET_NAME_MAX + 1];
	uint32_t versions;          /* committed versions */
	uint64_t files;             /* file inodes over all its versions */
	uint64_t objects;           /* distinct objects they name (shared ones once) */
	uint64_t live_bytes;        /* the bytes those objects take in packs */
};

struct store_gc_stats {
	uint64_t packs;             /* pack files present before the collection */
	uint64_t pack_bytes;        /* their size */
	uint64_t live_objects;      /* objects some committed version names */
	uint64_t live_bytes;        /* the bytes they take */
	uint64_t dead_bytes;        /* pack bytes (headers apart) no live object takes */
	uint64_t reclaimable_bytes; /* what the collection frees (with dry_run: would free) */
	uint64_t packs_removed;     /* pack files removed (dead, compacted, or left by imports) */
	uint64_t packs_compacted;   /* of those: holding live objects, which were copied out */
	uint64_t packs_cut;         /* packs cut back to their committed length */
	uint64_t packs_written;     /* new packs the moved objects went to */
	uint64_t objects_moved;
	uint64_t bytes_copied;
};

struct store_gc_options {
	bool dry_run;               /* scan and plan only: nothing changes */
	unsigned compact_percent;   /* compact a pack at least this % dead; 0: 50 */
	void (*progress)(void *ctx, enum store_gc_step step, uint64_t done, uint64_t total);
	/* Called with the plan after the copies are durable and before the index commit (the
	 * daemon records it in the audit log first); a negative return abandons the collection:
	 * its new packs are removed and nothing else changes. May be NULL. */
	int (*before_commit)(void *ctx, const struct store_gc_stats *plan);
	/* Called for each dataset, after its versions are read. May be NULL. */
	int (*dataset)(void *ctx, const struct store_gc_dataset *ds);
	void *ctx;
	/* After the commit, wait this long before removing the files of retired packs: nodes
	 * reading the store over the shared file system (docs/DEPLOYMENT.md section 6) catch up
	 * past the move records meanwhile. 0: at once. */
	unsigned remove_delay_ms;
};

/* Free the pack bytes no committed version uses: the objects of erased versions and datasets,
 * and what interrupted imports left. Live objects in packs at least compact_percent dead are
 * copied, byte for byte, into new packs; dead packs are removed; packs longer than their
 * committed length are cut back. Online: readers go on (an object open in a pack the
 * collection retires keeps reading from it until it is closed), but no import runs during a
 * collection (-EBUSY both ways). Crash-safe: a kill at any point loses no live byte, and the
 * next collection frees what the killed one left (docs/FORMAT.md "Garbage collection").
 * Liveness comes only from records that authenticate: every committed version is read and
 * checked against its manifest, and a store where any check fails (a record that does not
 * authenticate, a version that does not match its manifest, records without their dataset, a
 * live object outside a committed pack) is refused with -EBADMSG (integrity hook) or -EUCLEAN
 * (a pack missing), and nothing is deleted. Whether the index itself is older than the audit
 * log says (restored from a backup) is the caller's check, before it calls this. */
int store_gc(struct store *st, const struct store_gc_options *opts,
	     struct store_gc_stats *ret_stats);

/* ---- Policy records ------------------------------------------------------------------------ */

/* The store keeps the daemon's policy records (grants, revocations; encoded by policy/) beside the
 * index, so they share its durability and its backups. Keys and values are opaque here. */
#define STORE_POLICY_KEY_MAX 256
#define STORE_POLICY_VALUE_MAX (64u * 1024)

/* Write one record, durably (a synchronous RocksDB write) before returning. An existing key is
 * overwritten: callers that want immutable records choose new keys. -EINVAL empty or oversized
 * key or value. */
int store_policy_put(struct store *st, const void *key, size_t klen, const void *val, size_t vlen);
/* One policy record, for store_policy_replace_all(). Borrowed. */
struct store_policy_kv {
	const void *key;
	size_t klen;
	const void *val;
	size_t vlen;
};
/* Replace every policy record with these n, in one synchronous write batch: a crash leaves the
 * old set or the new one (`enclavectl policy rebuild`). -EINVAL an empty or oversized key or
 * value. */
int store_policy_replace_all(struct store *st, const struct store_policy_kv *kv, size_t n);
/* A node was removed: move what a removed node could still read of later writes to a new key (a
 * new generation of the key ring's POLICY entry, given only to the nodes enrolled now through the
 * ring hook), crash-safely in three steps: the key into the ring; in one batch every policy record
 * resealed under it, every dataset name re-hashed and every dataset record, tombstone and move
 * record resealed under keys derived from it, with the meta records naming it; the old key out of
 * the ring. A crash at any step leaves a store that opens with every record; the open finishes
 * the rotation. The caller serialises policy writes (grants' change_lock); imports, erasures and
 * the garbage collector wait for the batch, never the other way round. -EROFS a node; -ENOKEY a
 * store without a key ring. */
int store_policy_rekey(struct store *st);
/* Its first step alone: the new key into the ring, committed (the nodes enrolled are given it
 * through the ring hook). store_policy_rekey() then finishes it, as does the next open. */
int store_policy_rekey_begin(struct store *st);
/* The generation of the key the policy records are sealed under (0: Ks, never rotated). */
uint64_t store_policy_generation(struct store *st);
/* The generation of the key dataset names and records, tombstones and move records are keyed
 * with (0: Kr, Kd and Ks alone, never moved; a node: as its last catch-up saw it). */
uint64_t store_record_generation(struct store *st);
/* Call fn for every record in key order; a non-zero return from fn stops and is returned. */
int store_policy_foreach(struct store *st,
			 int (*fn)(void *ctx, const void *key, size_t klen, const void *val,
				   size_t vlen),
			 void *ctx);

/* ---- Upgrade from format 1 (store/upgrade.c; docs/FORMAT.md "Upgrade from format 1") -------- */

/* Steps, reported to the progress callback (and where a test kills the process). The AUDIT_
 * steps are reported by whoever converts the audit log into audit.new/ between
 * store_upgrade_prepare() and store_upgrade_commit() (cli/upgrade.c), not by this module. */
enum store_upgrade_step {
	STORE_UPGRADE_STARTED = 1,   /* index.new/ created */
	STORE_UPGRADE_DATASET,       /* done = datasets converted so far */
	STORE_UPGRADE_VERSION,       /* done = versions converted so far */
	STORE_UPGRADE_POLICY,        /* policy records converted; done = records written */
	STORE_UPGRADE_BUILT,         /* index.new/ complete and durable; nothing decided yet */
	STORE_UPGRADE_AUDIT_STARTED, /* audit.new/ created, empty */
	STORE_UPGRADE_AUDIT_LEGACY,  /* audit.new/legacy.sealed (the old log, encrypted) durable */
	STORE_UPGRADE_AUDIT_RECORDS, /* the new log's records written, not yet signed */
	STORE_UPGRADE_AUDIT_BUILT,   /* audit.new/ complete, signed and durable; nothing decided */
	STORE_UPGRADE_DECIDED,       /* the UPGRADE marker is durable: it will finish */
	STORE_UPGRADE_OLD_MOVED,     /* part `done` of `total` moved to <part>.old */
	STORE_UPGRADE_NEW_MOVED,     /* <part>.new moved to <part> */
	STORE_UPGRADE_OLD_REMOVED,   /* <part>.old removed */
	STORE_UPGRADE_DONE,          /* the marker removed */
};

struct store_upgrade_progress {
	void (*fn)(void *ctx, enum store_upgrade_step step, uint64_t done, uint64_t total);
	void *ctx;
};

/* Open a store of any format for the upgrade, as store_open() does (an interrupted upgrade is
 * finished or discarded first), but a format 1 index is accepted as it is, without recovery. */
int store_open_for_upgrade(const char *dir, const crypto_secret *pass, struct store **ret_store);
/* The index format the store was opened with: 1 or 2 (only by store_open_for_upgrade()), 3. */
unsigned store_format(const struct store *st);
/* Build the format 2 index in <store>/index.new/ from the format 1 index of st (opened with
 * store_open_for_upgrade()): every committed version, its entries and inodes sealed under its
 * dataset's keys and its manifest computed; the datasets and policy records sealed under the
 * store's. The old index is not changed. -EALREADY: already format 2. */
int store_upgrade_prepare(struct store *st, const struct store_upgrade_progress *p);
/* Decide and finish: write the UPGRADE marker naming the parts (prepared as <part>.new beside
 * <part>: "index", and "audit" for the audit log's conversion), then switch each part with
 * renames and remove the old ones. st's index is closed first; close st afterwards (it can no
 * longer be used) and open the store again. A kill at any point is finished at the next open. */
int store_upgrade_commit(struct store *st, const char *const *parts, size_t nparts,
			 const struct store_upgrade_progress *p);
