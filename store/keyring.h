/* keyring: the store's key ring, keys/ring (docs/FORMAT.md 3.7).
 *
 * Everything an erasure must make unreadable is decryptable only through a key held here: the
 * store's name key (kind NAMES), one key per dataset (DATASET: seals its datasets record) and one
 * per committed version (VERSION: seals the version's records, hashes its entry names, wraps
 * every object key the version references). The file is re-encrypted under a fresh file key,
 * itself wrapped under the master key, at every write; the old file key is never kept, so a key
 * removed from the ring is gone from every copy of the store except an older copy of the ring.
 *
 * Contract: -errno on failure, outputs ret_* last and untouched on failure. A struct keyring is
 * not thread-safe: the store serialises access with its own lock. Keys handed out are borrowed
 * until the entry is removed, replaced, or the ring freed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"

#define KEYRING_FILE "ring"
#define KEYRING_TMP "ring.tmp"
/* What `store upgrade` builds, switched in as part "keys/ring" (docs/FORMAT.md 9). */
#define KEYRING_UPGRADE_NEW "ring.new"
/* Bound on entries (a file of about 48 MiB): a ring this large is refused, not read. */
#define KEYRING_ENTRIES_MAX (1u << 20)
#define KEYRING_HEADER_LEN 40
#define KEYRING_DIGEST_LEN 32   /* BLAKE2b-256 of the file's bytes */
#define KEYRING_KEY_ID_LEN 16   /* BLAKE2b-128(key = K, "enclave key id v1") */

enum keyring_kind {
	KEYRING_NAMES = 1,       /* (0, 0): the store's name key Kr */
	KEYRING_DATASET = 2,     /* (dataset id, 0): Kd */
	KEYRING_VERSION = 3,     /* (dataset id, version): Kv */
	KEYRING_NAMES_NEXT = 4,  /* (0, 0): the name key a whole-dataset erasure is switching to */
	KEYRING_POLICY = 5,      /* (0, generation >= 1): Kp, the key every node removal rotates:
				    seals the policy and move records, and with Kr and Kd keys the
				    dataset names and records (index meta "policy_key" and
				    "record_key" name the generation in use; two only while a
				    rotation runs) */
};

struct keyring;

/* A new, empty ring for a store (not yet on disk; keyring_commit() writes generation 1). A fresh
 * NAMES key is generated. */
int keyring_new(const uint8_t store_id[static 16], struct keyring **ret_ring);
/* Read keys/ring in keys_dirfd (borrowed) and open it with the master key (borrowed). -ENOENT no
 * file; -EBADMSG malformed, forged, from another store, or not opening under this master key. */
int keyring_load(int keys_dirfd, const crypto_key *master, const uint8_t store_id[static 16],
		 struct keyring **ret_ring);
/* Wipe every key and free. NULL is fine. */
void keyring_free(struct keyring *kr);

/* The key of an entry, borrowed (see above). -ENOENT none. */
int keyring_get(const struct keyring *kr, enum keyring_kind kind, uint64_t dsid, uint32_t version,
		const crypto_key **ret_key);
/* Add or replace an entry in memory; takes ownership of key (also on failure). -E2BIG full. */
int keyring_put(struct keyring *kr, enum keyring_kind kind, uint64_t dsid, uint32_t version,
		crypto_key *key);
/* Remove an entry in memory, wiping its key. Returns 1 removed, 0 there was none. */
int keyring_remove(struct keyring *kr, enum keyring_kind kind, uint64_t dsid, uint32_t version);
/* Call fn for every entry in (kind, dataset, version) order; non-zero from fn stops, returned. */
int keyring_foreach(const struct keyring *kr,
		    int (*fn)(void *ctx, enum keyring_kind kind, uint64_t dsid, uint32_t version,
			      const crypto_key *key),
		    void *ctx);

/* Write the ring in memory to keys/ring with generation + 1 under a fresh file key: ring.new
 * (O_EXCL, 0600), fsync, rename, fsync of keys/. On failure the file on disk and the generation
 * are unchanged. */
int keyring_commit(struct keyring *kr, int keys_dirfd, const crypto_key *master);
/* The same, written as keys/<name> instead (the upgrade's ring.new, renamed into place by the
 * upgrade's decided steps). */
int keyring_write_as(struct keyring *kr, int keys_dirfd, const crypto_key *master,
		     const char *name);
/* The generation of the file last read or written (0: never written). */
uint64_t keyring_generation(const struct keyring *kr);
/* A node's ring, built from the entries its primary sealed to it: the generation they came
 * from. */
void keyring_set_generation(struct keyring *kr, uint64_t generation);
/* BLAKE2b-256 of the file last read or written (zero before). */
void keyring_digest(const struct keyring *kr, uint8_t ret[static KEYRING_DIGEST_LEN]);
/* The public id of a key, for erasure records: BLAKE2b-128 keyed with it over
 * "enclave key id v1". */
void keyring_key_id(const crypto_key *key, uint8_t ret[static KEYRING_KEY_ID_LEN]);

/* The derived keys (docs/FORMAT.md 3.7); the caller owns and frees the results. */
int keyring_names_key(const crypto_key *kr_names, crypto_key **ret_kn);          /* Kn */
int keyring_dataset_seal_key(const crypto_key *kd, crypto_key **ret_kdr);        /* Kdr */
int keyring_version_keys(const crypto_key *kv, crypto_key **ret_seal,
			 crypto_key **ret_name);                                  /* Kvs, Kvn */
/* The same two under record key generation R >= 1 (docs/FORMAT.md 3.7): derived from the
 * rotating key kp (kind POLICY, generation R) and the erasable key, so that a node removed before
 * R (it lacks kp) and a copy read after an erasure (it lacks Kr or Kd) compute neither. kp NULL:
 * generation 0, keyring_names_key() and keyring_dataset_seal_key(). */
int keyring_names_key_gen(const crypto_key *kp, const crypto_key *kr_names, crypto_key **ret_kn);
int keyring_dataset_seal_key_gen(const crypto_key *kp, const crypto_key *kd, crypto_key **ret_kdr);
