/* store: create, open (with crash recovery), close, and the read-side lookups. */
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <sodium.h>

#include "store/store_internal.h"

#define MARKER_NAME "ENCLAVE"
#define MARKER_TEXT "enclave-store 1\n"
#define MASTER_NAME "master.key"
#define META_FORMAT "format"
#define META_STORE_ID "store_id"
#define META_NEXT_DATASET "next_dataset"
/* Labels of the index keys (crypto_key_derive(); docs/FORMAT.md §6.9). */
#define INDEX_SEAL_LABEL "enclave index seal v2"
#define INDEX_NAME_LABEL "enclave index names v2"
#define DATASET_SEAL_LABEL "enclave dataset index seal v2"
#define DATASET_NAME_LABEL "enclave dataset index names v2"
#define DATASET_CONTENT_LABEL "enclave dataset content v1"

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

size_t object_key_ad(unsigned format, uint64_t dsid, uint32_t version,
		     const struct store_inode *ino, uint8_t out[OBJECT_KEY_AD_MAX])
{
	size_t o = 16;

	if (ino->ext.grouped) {
		/* Only format 3 writes groups; the decoder refuses them in older records. */
		memcpy(out, "ENCLGRK1", 8);
		put_be64(out + 8, dsid);
		put_be32(out + 16, version);
		memcpy(out + 20, ino->ext.object_id, CRYPTO_OBJECT_ID_LEN);
		put_be32(out + 36, ino->ext.alg);
		put_be32(out + 40, ino->ext.chunk_size);
		put_be64(out + 44, ino->ext.group_size);
		put_be32(out + 52, ino->ext.member_off);
		put_be32(out + 56, (uint32_t)ino->size);
		out[60] = (uint8_t)(ino->ext.member_idx >> 8);
		out[61] = (uint8_t)ino->ext.member_idx;
		out[62] = (uint8_t)(ino->ext.member_count >> 8);
		out[63] = (uint8_t)ino->ext.member_count;
		return GROUP_KEY_AD_LEN;
	}
	memcpy(out, format >= STORE_FORMAT_VERSION ? "ENCLOBK2" : "ENCLOBK1", 8);
	put_be64(out + 8, dsid);
	if (format >= STORE_FORMAT_VERSION) {
		put_be32(out + 16, version);
		o = 20;
	}
	memcpy(out + o, ino->ext.object_id, CRYPTO_OBJECT_ID_LEN);
	put_be32(out + o + 16, ino->ext.alg);
	put_be32(out + o + 20, ino->ext.chunk_size);
	put_be64(out + o + 24, ino->size);
	return o + 32;
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

/* ---- The record key generation (docs/FORMAT.md 3.7, "The rotating key and node removal") -----
 *
 * Dataset names (Kn), dataset records and tombstones (Kdr) and move records are keyed at the
 * record key generation R that index meta "record_key" names. R = 0 (absent): the derivations from
 * Kr, Kd and Ks alone. R >= 1: the key ring's POLICY entry of generation R mixed in, so that a
 * node removed before R was made, which holds Kr, Kd and Ks but not that entry, computes none of
 * them. store_policy_rekey() moves the records to a new R at every node removal. */

/* The store whose rekey_lock this thread holds exclusively (its shared takes are then no-ops). */
static __thread const struct store *rekey_writer;

void store_rekey_rdlock(struct store *st)
{
	if (rekey_writer != st)
		pthread_rwlock_rdlock(&st->rekey_lock);
}

void store_rekey_rdunlock(struct store *st)
{
	if (rekey_writer != st)
		pthread_rwlock_unlock(&st->rekey_lock);
}

/* Exclusively. false: this thread holds it already (not taken again, and not released by
 * rekey_wrunlock()). Never called by a thread that holds it shared. */
static bool rekey_wrlock(struct store *st)
{
	if (rekey_writer == st)
		return false;
	pthread_rwlock_wrlock(&st->rekey_lock);
	rekey_writer = st;
	return true;
}

static void rekey_wrunlock(struct store *st, bool taken)
{
	if (!taken)
		return;
	rekey_writer = NULL;
	pthread_rwlock_unlock(&st->rekey_lock);
}

/* The record key generation the index names now. */
static int record_gen(struct store *st, uint64_t *ret)
{
	int r = meta_get_u64(st, META_RECORD_GEN, ret);

	if (r == -ENOENT) {
		*ret = 0;
		r = 0;
	}
	return r;
}

static int record_keys_missing(struct store *st, uint64_t gen)
{
	return err_set(-ENOKEY, "the dataset names and records are keyed under key generation "
		       "%llu, which %s", (unsigned long long)gen, st->secondary ?
		       "this node was not given (it was removed, or its key bundle lags)" :
		       "the key ring does not hold (keys/ring put back from a copy?)");
}

/* The rotating key of generation gen, borrowed from the ring; NULL for generation 0. -ENOKEY
 * (no detail) when the ring lacks it. st->lock held. */
static int rotating_key_locked(struct store *st, uint64_t gen, const crypto_key **ret)
{
	const crypto_key *k = NULL;

	if (gen == 0) {
		*ret = NULL;
		return 0;
	}
	if (gen > UINT32_MAX || !st->ring ||
	    keyring_get(st->ring, KEYRING_POLICY, 0, (uint32_t)gen, &k) < 0)
		return -ENOKEY;
	*ret = k;
	return 0;
}

/* Owned by the caller. st->lock held. */
static int rec_seal_locked(struct store *st, uint64_t gen, const crypto_key *kd, crypto_key **ret)
{
	const crypto_key *kp = NULL;
	int r = rotating_key_locked(st, gen, &kp);

	return r < 0 ? r : keyring_dataset_seal_key_gen(kp, kd, ret);
}

static int names_key_locked(struct store *st, uint64_t gen, const crypto_key *kr, crypto_key **ret)
{
	const crypto_key *kp = NULL;
	int r = rotating_key_locked(st, gen, &kp);

	return r < 0 ? r : keyring_names_key_gen(kp, kr, ret);
}

static int move_key_locked(struct store *st, uint64_t gen, crypto_key **ret)
{
	const crypto_key *kp = NULL;
	int r = rotating_key_locked(st, gen, &kp);

	if (r < 0)
		return r;
	if (!kp && !st->ix_seal)
		return -ENOKEY;
	return crypto_key_from_bytes(crypto_key_bytes(kp ? kp : st->ix_seal), ret);
}

/* The cached keys made again for generation gen: the name key, every cached dataset's record
 * key, the move key. One this store lacks the rotating key for stays NULL (its users say
 * -ENOKEY), and -ENOKEY is returned. st->lock held, and no reader holds the old keys: rekey_lock
 * is held exclusively, or the store is opening. */
static int record_keys_refresh_locked(struct store *st, uint64_t gen)
{
	const crypto_key *kr = NULL;
	int r, first = 0;

	if (st->format < STORE_FORMAT_VERSION || !st->ring)
		return 0;
	st->rgen = gen;
	crypto_key_free(st->ix_name);
	st->ix_name = NULL;
	r = keyring_get(st->ring, KEYRING_NAMES, 0, 0, &kr);
	if (r == 0)
		r = names_key_locked(st, gen, kr, &st->ix_name);
	first = r;
	for (size_t i = 0; i < st->dskeys_len; i++) {
		crypto_key_free(st->dskeys[i].seal);
		st->dskeys[i].seal = NULL;
		r = rec_seal_locked(st, gen, st->dskeys[i].key, &st->dskeys[i].seal);
		first = first ?: r;
	}
	crypto_key_free(st->mv_seal);
	st->mv_seal = NULL;
	r = move_key_locked(st, gen, &st->mv_seal);
	return first ?: r;
}

/* The same for the generation the index names now, taking the lock. */
static int record_keys_follow(struct store *st)
{
	uint64_t gen = 0;
	int r = record_gen(st, &gen);

	if (r < 0)
		return r;
	pthread_mutex_lock(&st->lock);
	r = record_keys_refresh_locked(st, gen);
	pthread_mutex_unlock(&st->lock);
	return r == -ENOKEY ? record_keys_missing(st, gen) : r;
}

int store_dataset_rec_key_of(struct store *st, const crypto_key *kd, crypto_key **ret_kdr)
{
	uint64_t gen;
	int r;

	pthread_mutex_lock(&st->lock);
	gen = st->rgen;
	r = rec_seal_locked(st, gen, kd, ret_kdr);
	pthread_mutex_unlock(&st->lock);
	return r == -ENOKEY ? record_keys_missing(st, gen) : r;
}

int store_names_key_of_locked(struct store *st, const crypto_key *kr, crypto_key **ret_kn)
{
	int r = names_key_locked(st, st->rgen, kr, ret_kn);

	return r == -ENOKEY ? record_keys_missing(st, st->rgen) : r;
}

int store_names_key_of(struct store *st, const crypto_key *kr, crypto_key **ret_kn)
{
	int r;

	pthread_mutex_lock(&st->lock);
	r = store_names_key_of_locked(st, kr, ret_kn);
	pthread_mutex_unlock(&st->lock);
	return r;
}

int store_move_key(struct store *st, const crypto_key **ret)
{
	uint64_t gen;
	const crypto_key *k;

	pthread_mutex_lock(&st->lock);
	gen = st->rgen;
	k = st->mv_seal;
	pthread_mutex_unlock(&st->lock);
	if (!k)
		return record_keys_missing(st, gen);
	*ret = k;
	return 0;
}

uint64_t store_record_generation(struct store *st)
{
	uint64_t g;

	pthread_mutex_lock(&st->lock);
	g = st->rgen;
	pthread_mutex_unlock(&st->lock);
	return g;
}

/* Drop every pending (uncommitted) version: the remains of an import that never committed. */
static int recover_pending_versions(struct store *st)
{
	rocksdb_iterator_t *it = index_iter(&st->ix, CF_VERSIONS);
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	bool any = false;
	int r = 0;

	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		uint8_t lo[VKEY_LEN], hi[VKEY_LEN];
		uint32_t state = 0;
		uint64_t dsid;
		uint32_t ver;

		if (kl != VKEY_LEN) {
			r = err_set(-EBADMSG, "index: malformed version key");
			goto out;
		}
		/* The state is the one byte kept in clear, so that the remains of a new dataset's
		 * first import, whose key died with the import, can be found without it. It is bound
		 * into the sealed record's AD: flipping it makes the version fail to authenticate. */
		r = version_value_state(v, vl, &state);
		if (r < 0)
			goto out;
		if (state != VERSION_PENDING)
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
	r = index_iter_close(&st->ix, it, r, "scan of versions");
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

/* The committed packs, from the index's pack records, into the store's pack table; the highest
 * one and its length become last_pack_id/len. With sync (a node following the primary), a pack
 * whose record is gone (the primary's garbage collector retired it) leaves the table too: objects
 * open in it keep their handles, new opens find the moved objects through their move records.
 * Takes st->lock itself. */
#define PACK_RECORDS_MAX (1u << 20)

struct pack_rec {
	uint64_t id, len;
};

static int pack_records_scan(struct store *st, bool sync)
{
	rocksdb_iterator_t *it = index_iter(&st->ix, CF_META);
	struct pack_rec *recs = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

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
		if (id == 0) {
			r = err_set(-EBADMSG, "index: pack record of pack 0");
			break;
		}
		if (n == cap) {
			size_t c = cap ? cap * 2 : 64;
			struct pack_rec *a;

			if (c > PACK_RECORDS_MAX) {
				r = err_set(-E2BIG, "index: more than %u pack records",
					    PACK_RECORDS_MAX);
				break;
			}
			a = reallocarray(recs, c, sizeof(*a));
			if (!a) {
				r = -ENOMEM;
				break;
			}
			recs = a;
			cap = c;
		}
		/* Keys sort by big-endian id: the records come in ascending order. */
		recs[n++] = (struct pack_rec){ .id = id, .len = get_le64((const uint8_t *)v) };
	}
	r = index_iter_close(&st->ix, it, r, "scan of packs");
	if (r < 0)
		goto out;
	pthread_mutex_lock(&st->lock);
	if (sync) {
		size_t j = 0;

		for (size_t i = 0; i < st->npacks;) {
			while (j < n && recs[j].id < st->packs[i].id)
				j++;
			if (j < n && recs[j].id == st->packs[i].id) {
				i++;
				continue;
			}
			store_pack_retire_locked(st, st->packs[i].id);   /* slot i now holds the next */
		}
	}
	for (size_t i = 0; r == 0 && i < n; i++)
		r = store_pack_commit_locked(st, recs[i].id, recs[i].len);
	if (r == 0) {
		st->last_pack_id = n ? recs[n - 1].id : 0;
		st->last_pack_len = n ? recs[n - 1].len : 0;
	}
	pthread_mutex_unlock(&st->lock);
out:
	free(recs);
	return r;
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
	DIR *d = NULL;
	uint64_t max = 0;
	int dfd, r;

	r = pack_records_scan(st, false);
	if (r < 0)
		return r;
	/* Ids are never reused, even of packs the garbage collector removed (their records gone). */
	r = meta_get_u64(st, META_PACK_MAX, &max);
	if (r < 0 && r != -ENOENT)
		return r;

	dfd = openat(st->packs_dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || !(d = fdopendir(dfd))) {
		r = err_set(-errno, "cannot list packs: %s", strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return r;
	}
	st->pack_file_max = MAX(st->last_pack_id, r == 0 ? max : 0);
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
	st->dirfd = st->lockfd = st->packs_dirfd = st->keys_dirfd = -1;
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->import_lock, NULL);
	pthread_mutex_init(&st->silent_lock, NULL);
	{
		pthread_rwlockattr_t a;

		/* Reader-preferring (glibc's default, said explicitly): a reader that holds it
		 * takes it again without waiting behind a writer (struct store). */
		pthread_rwlockattr_init(&a);
		pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_READER_NP);
		pthread_rwlock_init(&st->rekey_lock, &a);
		pthread_rwlock_init(&st->names_lock, &a);
		pthread_rwlockattr_destroy(&a);
	}
	*ret = st;
	return 0;
}

/* Open the index of a store whose directory, lock and master key are already in st, check its
 * format and recover. */
static int node_ring_build(struct store *st, const struct store_node_keys *k,
			   struct keyring **ret_ring);

static int store_open_index(struct store *st, const char *dir, bool create,
			    const struct store_open_options *opts, unsigned flags)
{
	char path[PATH_MAX];
	char *v = NULL;
	size_t n = 0;
	uint64_t next = 1;
	int r;

	if (snprintf(path, sizeof(path), "%s/index", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	st->secondary = !create && opts && opts->secondary_dir;
	r = index_open_secondary(&st->ix, path, create, st->secondary ? opts->secondary_dir : NULL);
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
		/* The key ring first (generation 1), then the index that names its generation. */
		r = keyring_new(st->store_id, &st->ring);
		if (r == 0)
			r = keyring_commit(st->ring, st->keys_dirfd, st->master);
		if (r == 0) {
			put_le64(nd, keyring_generation(st->ring));
			rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_RING,
						  strlen(META_RING), (const char *)nd, 8);
			r = index_write(&st->ix, wb, true);
		}
		rocksdb_writebatch_destroy(wb);
		if (r < 0)
			return r;
	}

	r = meta_get_u64(st, META_FORMAT, &next);
	if (r == 0 && next == STORE_FORMAT_V1 && (flags & STORE_OPEN_V1)) {
		st->format = STORE_FORMAT_V1;
	} else if (r == 0 && next == STORE_FORMAT_V2 && (flags & STORE_OPEN_V2)) {
		st->format = STORE_FORMAT_V2;
	} else if (r == 0 && next == STORE_FORMAT_V2) {
		r = err_set(-EPROTONOSUPPORT,
			    "%s: the store's index is format 2 (dataset keys in the index, so an "
			    "erasure could not hold against a copy), which this build no longer "
			    "serves; convert it in place, with the daemon stopped: enclavectl store "
			    "upgrade --store %s --passphrase-file FILE", dir, dir);
	} else if (r == 0 && next == STORE_FORMAT_V1) {
		r = err_set(-EPROTONOSUPPORT,
			    "%s: the store's index is format 1 (names, sizes and grants in clear), "
			    "which this build no longer serves; convert it in place, with the daemon "
			    "stopped: enclavectl store upgrade --store %s --passphrase-file FILE",
			    dir, dir);
	} else if (r == 0 && next != STORE_FORMAT_VERSION) {
		r = err_set(-EPROTONOSUPPORT, "store format %llu is not supported (this build: %u)",
			    (unsigned long long)next, STORE_FORMAT_VERSION);
	} else if (r == 0) {
		st->format = STORE_FORMAT_VERSION;
	}
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
	if (st->master)
		r = store_index_keys(st->master, st->store_id, &st->ix_seal, &st->ix_name);
	else if (st->format != STORE_FORMAT_VERSION)
		r = err_set(-EPROTONOSUPPORT, "a node without the passphrase needs a store of "
			    "format %u (this one is %u: upgrade it with enclavectl store upgrade)",
			    STORE_FORMAT_VERSION, st->format);
	else
		r = crypto_key_from_bytes(opts->node_keys->ix_seal, &st->ix_seal);
	if (r < 0)
		return r;
	st->vdirs = calloc(VERIFIED_DIRS, sizeof(*st->vdirs));
	if (!st->vdirs)
		return -ENOMEM;
	if (st->format == STORE_FORMAT_VERSION && st->master) {
		r = store_ring_open(st);
		if (r < 0)
			return r;
	} else if (st->format == STORE_FORMAT_VERSION) {
		r = node_ring_build(st, opts->node_keys, &st->ring);
		/* A node given no key for the generation the index names (removed, or its
		 * bundle lags) opens, and says so at every use of those keys. */
		if (r == 0)
			r = record_keys_follow(st);
		if (r == -ENOKEY)
			r = 0;
		if (r < 0)
			return r;
	}
	if (flags & (STORE_OPEN_V1 | STORE_OPEN_V2))
		return 0; /* the upgrade reads the old index as it is */
	if (st->secondary) {
		/* Recovery and the pack scan belong to the primary, the only writer; a pending
		 * version of an import running there is never asked for (store_version_get
		 * returns committed versions only). */
		st->direct_io = opts->direct_io;
		return pack_records_scan(st, false);
	}
	/* An erasure interrupted after its index batch is finished before anything is read. */
	r = store_erase_recover(st);
	if (r < 0)
		return r;

	st->direct_io = opts && opts->direct_io;
	st->pack_target = opts && opts->pack_target ? opts->pack_target : STORE_PACK_TARGET;
	r = policy_rekey_recover(st);
	if (r == 0)
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
	st->keys_dirfd = openat(st->dirfd, "keys", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (st->keys_dirfd < 0) {
		r = -errno;
		goto fail;
	}
	r = crypto_master_create(st->keys_dirfd, MASTER_NAME, pass, kdf, &st->master);
	if (r < 0) {
		r = err_set(r, "cannot create the master key: %s", strerror(-r));
		goto fail;
	}
	st->packs_dirfd = openat(st->dirfd, "packs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (st->packs_dirfd < 0) {
		r = -errno;
		goto fail;
	}
	r = store_open_index(st, dir, true, NULL, 0);
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
	return store_open_ex(dir, pass, opts, 0, ret_store);
}

int store_open_ex(const char *dir, const crypto_secret *pass, const struct store_open_options *opts,
		  unsigned flags, struct store **ret_store)
{
	char marker[sizeof(MARKER_TEXT) + 1];
	struct store *st = NULL;
	ssize_t n;
	int fd = -1, r;

	err_clear();
	if (opts && opts->node_keys && !opts->secondary_dir)
		return err_set(-EINVAL, "node keys open a node's secondary only");
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
	/* A node takes no lock: the primary holds it (and its lease, store/lease.c), and a node
	 * never writes. */
	r = opts && opts->secondary_dir ? 0 : store_lock(st);
	if (r < 0)
		goto fail;
	st->keys_dirfd = openat(st->dirfd, "keys", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (st->keys_dirfd < 0) {
		r = err_set(-errno, "%s: no keys directory: %s", dir, strerror(errno));
		goto fail;
	}
	/* A node with the keys its primary sealed to it: no master key at all. */
	r = opts && opts->node_keys ? 0 :
		crypto_master_unlock(st->keys_dirfd, MASTER_NAME, pass, &st->master);
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
	/* An upgrade interrupted after it committed is finished, one interrupted before is
	 * discarded, before the index is opened (store/upgrade.c). */
	if (opts && opts->lease_ms && !opts->secondary_dir) {
		r = lease_acquire(st, opts->lease_ms, opts->lease_settle_ms, &st->lease);
		if (r < 0)
			goto fail;
	}
	r = opts && opts->secondary_dir ? 0 : store_upgrade_recover(st);
	if (r < 0)
		goto fail;
	r = store_open_index(st, dir, false, opts, flags);
	if (r == 0 && st->lease)
		r = lease_fence(st->lease);
	if (r < 0)
		goto fail;
	*ret_store = st;
	return 0;
fail:
	store_close(st);
	return r;
}

uint64_t store_index_reads(struct store *st)
{
	return atomic_load_explicit(&st->ix.gets, memory_order_relaxed);
}

/* A node after a catch-up that saw a change: keys/ring again (an import committed a version key,
 * an erasure removed one). The cached keys of versions and datasets no longer in the ring are
 * dropped, as the primary's erasure drops them; the name key and the record keys are made again
 * (no lookup holds them: rekey_lock is held exclusively). An older ring than the one held (put
 * back from a copy) is refused: the node keeps what it has. */

/* Put ring (taken over) in place of the store's, and the name and record keys made again from it:
 * -ESTALE an older generation than the one held (freed, nothing changes). rekey_lock held
 * exclusively (no reader holds the old keys). */
static int ring_replace(struct store *st, struct keyring *ring, const char *what)
{
	const crypto_key *k = NULL;
	int r = 0;

	pthread_mutex_lock(&st->lock);
	if (st->ring && keyring_generation(ring) < keyring_generation(st->ring)) {
		r = err_set(-ESTALE, "%s went back from generation %llu to %llu (put back from "
			    "a copy)", what, (unsigned long long)keyring_generation(st->ring),
			    (unsigned long long)keyring_generation(ring));
	} else {
		struct keyring *old = st->ring;

		st->ring = ring;
		ring = old;
		for (size_t i = 0; i < st->vkeys_len;) {
			size_t before = st->vkeys_len;

			if (keyring_get(st->ring, KEYRING_VERSION, st->vkeys[i]->dsid,
					st->vkeys[i]->ver, &k) < 0)
				store_keys_drop_locked(st, st->vkeys[i]->dsid, st->vkeys[i]->ver);
			if (st->vkeys_len == before)
				i++;
		}
		for (size_t i = 0; i < st->dskeys_len;) {
			size_t before = st->dskeys_len;

			if (keyring_get(st->ring, KEYRING_DATASET, st->dskeys[i].id, 0, &k) < 0)
				store_keys_drop_locked(st, st->dskeys[i].id, 0);
			if (st->dskeys_len == before)
				i++;
		}
		/* A name key replaced by a whole-dataset erasure, a rotating key newly given:
		 * the keys made again. One this node lacks stays NULL (-ENOKEY at its use). */
		(void)record_keys_refresh_locked(st, st->rgen);
	}
	pthread_mutex_unlock(&st->lock);
	keyring_free(ring);
	return r;
}

static int ring_reload(struct store *st)
{
	struct keyring *ring = NULL;
	const crypto_key *kr = NULL;
	int r;

	if (st->format < STORE_FORMAT_VERSION || !st->master)
		return 0;
	r = keyring_load(st->keys_dirfd, st->master, st->store_id, &ring);
	if (r == 0)
		r = keyring_get(ring, KEYRING_NAMES, 0, 0, &kr);
	if (r < 0) {
		keyring_free(ring);
		return err_set(r == -ENOENT ? -EBADMSG : r, "keys/%s: cannot load it again: %s",
			       KEYRING_FILE, err_detail());
	}
	return ring_replace(st, ring, "keys/" KEYRING_FILE);
}

/* ---- Keys for nodes ------------------------------------------------------------------------ */

int store_node_keys_new(size_t n, struct store_node_keys **ret)
{
	struct store_node_keys *k;

	if (n > STORE_NODE_KEYS_MAX)
		return err_set(-E2BIG, "more than %u keys for a node", STORE_NODE_KEYS_MAX);
	k = sodium_malloc(sizeof(*k));
	if (!k)
		return -ENOMEM;
	sodium_memzero(k, sizeof(*k));
	k->e = sodium_malloc(MAX(n, (size_t)1) * sizeof(*k->e));
	if (!k->e) {
		sodium_free(k);
		return -ENOMEM;
	}
	sodium_memzero(k->e, MAX(n, (size_t)1) * sizeof(*k->e));
	k->n = n;
	*ret = k;
	return 0;
}

void store_node_keys_free(struct store_node_keys *k)
{
	if (!k)
		return;
	if (k->e)
		sodium_free(k->e);   /* sodium_free wipes */
	sodium_free(k);
}

struct export_ctx {
	struct store_node_keys *k;
	size_t i;
};

static int export_one(void *ctx, enum keyring_kind kind, uint64_t dsid, uint32_t version,
		      const crypto_key *key)
{
	struct export_ctx *x = ctx;

	if (x->i == x->k->n)
		return -E2BIG;
	x->k->e[x->i] = (struct store_node_key){ .kind = (uint8_t)kind, .version = version,
						  .dsid = dsid };
	memcpy(x->k->e[x->i].key, crypto_key_bytes(key), 32);
	x->i++;
	return 0;
}

static int count_one(void *ctx, enum keyring_kind kind, uint64_t dsid, uint32_t version,
		     const crypto_key *key)
{
	(void)kind;
	(void)dsid;
	(void)version;
	(void)key;
	++*(size_t *)ctx;
	return 0;
}

int store_node_keys_export(struct store *st, struct store_node_keys **ret)
{
	struct store_node_keys *k = NULL;
	struct export_ctx x = { 0 };
	size_t n = 0;
	int r;

	if (st->secondary)
		return err_set(-EROFS, "a node gives no keys: the primary does");
	if (!st->ring || !st->ix_seal)
		return err_set(-ENOKEY, "the store has no key ring (format %u): upgrade it "
			       "(enclavectl store upgrade) before enrolling nodes", st->format);
	pthread_mutex_lock(&st->lock);
	(void)keyring_foreach(st->ring, count_one, &n);
	r = store_node_keys_new(n, &k);
	if (r == 0) {
		x.k = k;
		r = keyring_foreach(st->ring, export_one, &x);
	}
	if (r == 0) {
		memcpy(k->store_id, st->store_id, 16);
		k->generation = keyring_generation(st->ring);
		memcpy(k->ix_seal, crypto_key_bytes(st->ix_seal), 32);
	}
	pthread_mutex_unlock(&st->lock);
	if (r < 0) {
		store_node_keys_free(k);
		return r;
	}
	*ret = k;
	return 0;
}

/* The ring from a node's keys (its name and record keys are made from it by
 * record_keys_refresh_locked()). */
static int node_ring_build(struct store *st, const struct store_node_keys *k,
			   struct keyring **ret_ring)
{
	struct keyring *ring = NULL;
	const crypto_key *kr = NULL;
	int r;

	if (sodium_memcmp(k->store_id, st->store_id, 16) != 0)
		return err_set(-EINVAL, "the node's keys are for another store");
	r = keyring_new(st->store_id, &ring);
	for (size_t i = 0; r == 0 && i < k->n; i++) {
		crypto_key *key = NULL;

		if (k->e[i].kind < KEYRING_NAMES || k->e[i].kind > KEYRING_POLICY) {
			r = err_set(-EBADMSG, "a node key of unknown kind %u", k->e[i].kind);
			break;
		}
		r = crypto_key_from_bytes(k->e[i].key, &key);
		if (r == 0)
			r = keyring_put(ring, (enum keyring_kind)k->e[i].kind, k->e[i].dsid,
					k->e[i].version, key);
	}
	if (r == 0)
		keyring_set_generation(ring, k->generation);
	if (r == 0)
		r = keyring_get(ring, KEYRING_NAMES, 0, 0, &kr);
	if (r < 0) {
		keyring_free(ring);
		return err_set(r == -ENOENT ? -EBADMSG : r, "the node's keys: %s",
			       r == -ENOENT ? "no name key" : err_detail());
	}
	*ret_ring = ring;
	return 0;
}

int store_node_keys_set(struct store *st, const struct store_node_keys *k)
{
	struct keyring *ring = NULL;
	bool taken;
	int r;

	if (!st->secondary || st->master)
		return -EINVAL;
	r = node_ring_build(st, k, &ring);
	if (r < 0)
		return r;
	/* From store_catch_up()'s hook it holds the lock already. */
	taken = rekey_wrlock(st);
	r = ring_replace(st, ring, "the node's keys");
	rekey_wrunlock(st, taken);
	return r;
}

uint64_t store_ring_generation(struct store *st)
{
	uint64_t g;

	pthread_mutex_lock(&st->lock);
	g = st->ring ? keyring_generation(st->ring) : 0;
	pthread_mutex_unlock(&st->lock);
	return g;
}

void store_set_catch_up_hook(struct store *st, void (*fn)(void *ctx), void *ctx)
{
	st->catch_up_hook = fn;
	st->catch_up_ctx = ctx;
}

void store_set_ring_hook(struct store *st, void (*fn)(void *ctx), void *ctx)
{
	st->ring_hook = fn;
	st->ring_ctx = ctx;
}

void store_ring_committed(struct store *st)
{
	if (st->ring_hook)
		st->ring_hook(st->ring_ctx);
}

int store_catch_up(struct store *st, uint64_t *ret_seq)
{
	uint64_t seq = 0;
	bool taken;
	int r;

	if (!st->secondary)
		return -EINVAL;
	for (int tries = 0;; tries++) {
		/* Memtables that may hold records of a WAL the primary deleted go first (the index
		 * is opened again): an erased version's records, or anything else deleted since,
		 * would otherwise show here after its deletion was compacted away. No lock of the
		 * store is held here: the reopen waits for every reader of the index. */
		if (rekey_writer != st) {
			r = index_refresh(&st->ix);
			if (r < 0)
				return r;
		}
		/* Exclusively, until the keys follow what the index now shows: a lookup never
		 * pairs a record re-keyed by a node removal with the keys from before it. */
		taken = rekey_wrlock(st);
		r = index_catch_up(&st->ix, &seq);
		/* The primary deleted a WAL under this catch-up: again, after the reopen. */
		if (r != -ESTALE || !taken)
			break;
		rekey_wrunlock(st, taken);
		if (tries == 3)
			return err_set(-ESTALE, "index: the primary deleted its write-ahead logs "
				       "under four catch-ups in a row");
	}
	if (r == -ESTALE)
		r = err_set(-ESTALE, "index: the primary deleted a write-ahead log this node may "
			    "still show records of");
	/* New packs the primary committed may now be opened; packs its garbage collector retired
	 * are dropped (objects open in them keep their handles). */
	if (r == 0 && seq != st->seen_seq)
		r = pack_records_scan(st, true);
	if (r == 0 && seq != st->seen_seq)
		r = ring_reload(st);
	if (r < 0) {
		rekey_wrunlock(st, taken);
		return r;
	}
	/* A node's keys for what it now sees (its key bundle), before the datasets' cached records
	 * are dropped below, so that a new latest version is looked up with its key at hand. */
	if (seq != st->seen_seq && st->catch_up_hook)
		st->catch_up_hook(st->catch_up_ctx);
	/* The record key generation the index names now (a node removal moves it): the keys
	 * for it, or none when this node was not given them. */
	if (seq != st->seen_seq) {
		r = record_keys_follow(st);
		if (r == -ENOKEY)
			r = 0;
		if (r < 0) {
			rekey_wrunlock(st, taken);
			return r;
		}
	}
	/* A new latest version, or a dataset record replaced: check them again at the next
	 * lookup. The keys stay (a dataset's key never changes). Verified directories stay too:
	 * versions are immutable, and a version that is gone fails its lookups in the index. */
	pthread_mutex_lock(&st->lock);
	if (seq != st->seen_seq) {
		for (size_t i = 0; i < st->dskeys_len; i++)
			st->dskeys[i].have_rec = false;
		st->rec_gen++;
		st->seen_seq = seq;
	}
	pthread_mutex_unlock(&st->lock);
	rekey_wrunlock(st, taken);
	*ret_seq = seq;
	return 0;
}

uint64_t store_sequence(struct store *st)
{
	return index_sequence(&st->ix);
}

uint64_t store_sequence_visible(struct store *st)
{
	uint64_t seq;

	pthread_mutex_lock(&st->silent_lock);
	seq = index_sequence(&st->ix) - st->silent_seqs;
	pthread_mutex_unlock(&st->silent_lock);
	return seq;
}

struct store_lease *store_lease(struct store *st)
{
	return st->lease;
}

void store_id(const struct store *st, uint8_t ret_id[static 16])
{
	memcpy(ret_id, st->store_id, 16);
}

bool store_is_secondary(const struct store *st)
{
	return st->secondary;
}

static void vkey_ent_free(struct vkey_ent *e);

void store_close(struct store *st)
{
	if (!st)
		return;
	if (st->import)
		store_import_free(st->import);
	for (size_t i = 0; i < ARRAY_SIZE(st->import_wb); i++)
		if (st->import_wb[i])
			rocksdb_writebatch_destroy(st->import_wb[i]);
	store_import_mem_unmap(st);
	/* Before the index closes: the lease's file write needs nothing of it, but no writer may
	 * follow its release. */
	index_close(&st->ix);
	(void)store_lease_release(st->lease);
	/* Objects still open keep their handles; the store's references go. */
	for (size_t i = 0; i < st->npacks; i++)
		store_pack_unref(st, st->packs[i].h);
	free(st->packs);
	for (size_t i = 0; i < st->dskeys_len; i++) {
		crypto_key_free(st->dskeys[i].key);
		crypto_key_free(st->dskeys[i].seal);
		crypto_key_free(st->dskeys[i].name);
	}
	if (st->dskeys)
		explicit_bzero(st->dskeys, st->dskeys_cap * sizeof(*st->dskeys));
	free(st->dskeys);
	/* Every holder let go before the close (the store's users are stopped). */
	for (size_t i = 0; i < st->vkeys_len; i++)
		vkey_ent_free(st->vkeys[i]);
	free(st->vkeys);
	for (size_t i = 0; i < st->nretired; i++)
		crypto_key_free(st->retired[i]);
	keyring_free(st->ring);
	if (st->keys_dirfd >= 0)
		close(st->keys_dirfd);
	free(st->vdirs);
	crypto_key_free(st->ix_seal);
	crypto_key_free(st->ix_name);
	crypto_key_free(st->mv_seal);
	crypto_key_free(st->master);
	if (st->packs_dirfd >= 0)
		close(st->packs_dirfd);
	if (st->lockfd >= 0)
		close(st->lockfd); /* releases the flock */
	if (st->dirfd >= 0)
		close(st->dirfd);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->import_lock);
	pthread_mutex_destroy(&st->silent_lock);
	pthread_rwlock_destroy(&st->rekey_lock);
	pthread_rwlock_destroy(&st->names_lock);
	free(st);
}

/* ---- Caches -------------------------------------------------------------------------------- */

/* The slot of committed pack id, or NULL. Under st->lock. */
static struct pack_slot *pack_slot_find(struct store *st, uint64_t id)
{
	ssize_t i = sorted_find_u64(st->packs, st->npacks, sizeof(*st->packs),
				    offsetof(struct pack_slot, id), id);

	return i < 0 ? NULL : &st->packs[i];
}

int store_pack_commit_locked(struct store *st, uint64_t id, uint64_t len)
{
	struct pack_slot *sl = pack_slot_find(st, id);
	size_t at;

	if (sl) {
		sl->len = len;
		return 0;
	}
	sl = sorted_insert_u64(st->packs, &st->npacks, &st->packs_cap, 16, sizeof(*sl),
			       offsetof(struct pack_slot, id), id, &at);
	if (!sl)
		return -ENOMEM;
	st->packs = sl;
	sl[at] = (struct pack_slot){ .id = id, .len = len };
	return 0;
}

bool store_pack_committed_locked(struct store *st, uint64_t id, uint64_t *ret_len)
{
	struct pack_slot *sl = pack_slot_find(st, id);

	if (sl && ret_len)
		*ret_len = sl->len;
	return sl != NULL;
}

static void pack_handle_put_locked(struct pack_handle *h)
{
	if (h && --h->refs == 0) {
		close(h->fd);
		free(h);
	}
}

void store_pack_retire_locked(struct store *st, uint64_t id)
{
	struct pack_slot *sl = pack_slot_find(st, id);
	size_t at;

	if (!sl)
		return;
	pack_handle_put_locked(sl->h);
	at = (size_t)(sl - st->packs);
	memmove(sl, sl + 1, (st->npacks - at - 1) * sizeof(*sl));
	st->npacks--;
}

void store_pack_unref(struct store *st, struct pack_handle *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&st->lock);
	pack_handle_put_locked(h);
	pthread_mutex_unlock(&st->lock);
}

int store_pack_ref(struct store *st, uint64_t pack_id, struct pack_handle **ret)
{
	struct pack_slot *sl;
	char name[32];
	int fd, r = 0;

	pthread_mutex_lock(&st->lock);
	/* Pack ids come from index records: only packs a commit made are opened. */
	sl = pack_slot_find(st, pack_id);
	if (!sl) {
		r = err_set(-EUCLEAN, "pack %016llx is not a committed pack of this store",
			    (unsigned long long)pack_id);
		goto out;
	}
	if (!sl->h) {
		struct pack_handle *h = calloc(1, sizeof(*h));

		if (!h) {
			r = -ENOMEM;
			goto out;
		}
		pack_name(name, sizeof(name), pack_id);
		fd = -1;
		if (st->direct_io)
			fd = openat(st->packs_dirfd, name,
				    O_RDONLY | O_DIRECT | O_NOFOLLOW | O_CLOEXEC);
		/* O_DIRECT is refused by some file systems (tmpfs): read through the cache. */
		if (fd < 0)
			fd = openat(st->packs_dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT && st->secondary)
				/* The primary's garbage collector removes a retired pack only after
				 * its grace (node_gc_grace_s), by when every node still serving has
				 * caught up past the move: this node lags further. Fail closed. */
				r = err_set(-ESTALE, "pack %s is gone from the shared store: the "
					    "primary's garbage collector removed it before this node "
					    "caught up with the move (the node lags more than the "
					    "primary's node_gc_grace_s)", name);
			else
				r = err_set(errno == ENOENT ? -EUCLEAN : -errno,
					    "cannot open pack %s: %s", name, strerror(errno));
			free(h);
			goto out;
		}
		/* A pack of another store (or another pack) under this name: say so plainly, rather
		 * than letting every chunk fail authentication. */
		r = pack_check_header(fd, st->store_id, pack_id);
		if (r < 0) {
			close(fd);
			free(h);
			r = r == -EBADMSG ? -EUCLEAN : r;
			goto out;
		}
		h->fd = fd;
		h->refs = 1;   /* the table's */
		sl->h = h;
	}
	sl->h->refs++;
	*ret = sl->h;
out:
	pthread_mutex_unlock(&st->lock);
	return r;
}

int store_object_locate(struct store *st, const struct store_extent *ext, uint64_t *ret_pack,
			uint64_t *ret_offset)
{
	uint8_t k[MOVEKEY_LEN], pt[MOVE_PLAIN_LEN];
	const crypto_key *mk = NULL;
	char *v = NULL;
	size_t n = 0, pl = 0;
	bool committed;
	int r;

	pthread_mutex_lock(&st->lock);
	committed = pack_slot_find(st, ext->pack_id) != NULL;
	pthread_mutex_unlock(&st->lock);
	if (committed) {
		*ret_pack = ext->pack_id;
		*ret_offset = ext->offset;
		return 0;
	}
	/* Not a committed pack: the object was moved out of it by the garbage collector, whose
	 * move record, sealed and bound to the object id, says where it is now. The record and
	 * its key of one record key generation (a node removal re-keys them). */
	movekey(k, ext->object_id);
	store_rekey_rdlock(st);
	r = index_get(&st->ix, CF_META, k, sizeof(k), &v, &n);
	if (r == 0)
		r = store_move_key(st, &mk);
	if (r == 0 && (index_unseal(mk, CF_META, k, sizeof(k), 0, v, n, pt, sizeof(pt), &pl) < 0 ||
		       pl != MOVE_PLAIN_LEN || pt[0] != 1))
		r = -EBADMSG;
	store_rekey_rdunlock(st);
	free(v);
	if (r == -ENOENT)
		return err_set(-EUCLEAN, "pack %016llx is not a committed pack of this store",
			       (unsigned long long)ext->pack_id);
	if (r == -EBADMSG)
		return store_integrity(st, 0, 0, "the move record of an object in pack %016llx "
				       "does not authenticate", (unsigned long long)ext->pack_id);
	if (r < 0)
		return r;
	*ret_pack = get_le64(pt + 1);
	*ret_offset = get_le64(pt + 9);
	return 0;
}

int store_index_keys(const crypto_key *master, const uint8_t store_id[16], crypto_key **ret_seal,
		     crypto_key **ret_name)
{
	crypto_key *seal = NULL, *name = NULL;
	int r = crypto_key_derive(master, INDEX_SEAL_LABEL, store_id, 16, &seal);

	if (r == 0)
		r = crypto_key_derive(master, INDEX_NAME_LABEL, store_id, 16, &name);
	if (r < 0) {
		crypto_key_free(seal);
		return err_set(r, "cannot derive the index keys: %s", strerror(-r));
	}
	*ret_seal = seal;
	*ret_name = name;
	return 0;
}

int dataset_index_keys(const crypto_key *dkey, crypto_key **ret_seal, crypto_key **ret_name)
{
	crypto_key *seal = NULL, *name = NULL;
	int r = crypto_key_derive(dkey, DATASET_SEAL_LABEL, NULL, 0, &seal);

	if (r == 0)
		r = crypto_key_derive(dkey, DATASET_NAME_LABEL, NULL, 0, &name);
	if (r < 0) {
		crypto_key_free(seal);
		return err_set(r, "cannot derive a dataset's index keys: %s", strerror(-r));
	}
	*ret_seal = seal;
	*ret_name = name;
	return 0;
}

int dataset_content_key(const crypto_key *dkey, crypto_key **ret_key)
{
	int r = crypto_key_derive(dkey, DATASET_CONTENT_LABEL, NULL, 0, ret_key);

	return r < 0 ? err_set(r, "cannot derive a dataset's content key: %s", strerror(-r)) : 0;
}

uint64_t store_integrity_failures(const struct store *st)
{
	return __atomic_load_n(&st->integrity_failures, __ATOMIC_RELAXED);
}

void store_set_integrity_hook(struct store *st,
			      void (*fn)(void *ctx, uint64_t dsid, uint32_t version,
					 const char *what),
			      void *ctx)
{
	st->integrity_hook = fn;
	st->integrity_ctx = ctx;
}

int store_integrity(struct store *st, uint64_t dsid, uint32_t version, const char *fmt, ...)
{
	char what[ERR_DETAIL_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	err_set(-EBADMSG, "index integrity: %s", what);
	__atomic_add_fetch(&st->integrity_failures, 1, __ATOMIC_RELAXED);
	if (st->integrity_hook)
		st->integrity_hook(st->integrity_ctx, dsid, version, what);
	return -EBADMSG;
}

void store_test_set_race_hook(struct store *st,
			      void (*fn)(void *ctx, enum store_race_point where, uint64_t dsid),
			      void *ctx)
{
	st->race_hook = fn;
	st->race_ctx = ctx;
}

/* A lookup's -EBADMSG (a record that does not authenticate or decode) is an integrity failure
 * too: report it through the hook once, with the detail already set. */
static int integrity_of(struct store *st, uint64_t dsid, uint32_t version, int r)
{
	if (r == -EBADMSG)
		__atomic_add_fetch(&st->integrity_failures, 1, __ATOMIC_RELAXED);
	if (r == -EBADMSG && st->integrity_hook)
		st->integrity_hook(st->integrity_ctx, dsid, version, err_detail());
	return r;
}

/* Compared in full whatever the first difference (a habit for digests). */
static bool bytes_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint8_t d = 0;

	for (size_t i = 0; i < n; i++)
		d |= a[i] ^ b[i];
	return d == 0;
}

/* With st->lock held. */
static struct dskey *dskey_find_locked(struct store *st, uint64_t dsid)
{
	for (size_t i = 0; i < st->dskeys_len; i++)
		if (st->dskeys[i].id == dsid)
			return &st->dskeys[i];
	return NULL;
}

/* With st->lock held. Takes ownership of key (freed on failure). */
static int dskey_insert_locked(struct store *st, uint64_t dsid, crypto_key *key,
			       struct dskey **ret)
{
	crypto_key *seal = NULL, *name = NULL;
	int r;

	if (st->dskeys_len == st->dskeys_cap) {
		size_t n = st->dskeys_cap ? st->dskeys_cap * 2 : 8;
		struct dskey *a = reallocarray(st->dskeys, n, sizeof(*a));

		if (!a) {
			crypto_key_free(key);
			return -ENOMEM;
		}
		st->dskeys = a;
		st->dskeys_cap = n;
	}
	if (st->format >= STORE_FORMAT_VERSION) {
		/* A node that lacks the generation's key keeps the dataset key; its record key
		 * stays NULL (store_dataset_rec_key() says why). */
		r = rec_seal_locked(st, st->rgen, key, &seal);
		if (r == -ENOKEY)
			r = 0;
	} else {
		r = dataset_index_keys(key, &seal, &name);
	}
	if (r < 0) {
		crypto_key_free(key);
		return r;
	}
	st->dskeys[st->dskeys_len] = (struct dskey){ .id = dsid, .key = key, .seal = seal,
						     .name = name };
	if (ret)
		*ret = &st->dskeys[st->dskeys_len];
	st->dskeys_len++;
	return 0;
}

int store_dataset_key_cache(struct store *st, uint64_t dsid, crypto_key *key,
			    const struct dataset_rec *rec)
{
	struct dskey *d = NULL;
	int r = 0;

	pthread_mutex_lock(&st->lock);
	if (dskey_find_locked(st, dsid))
		crypto_key_free(key);
	else
		r = dskey_insert_locked(st, dsid, key, NULL);
	d = dskey_find_locked(st, dsid);
	if (d && rec) {
		d->rec = *rec;
		d->live_latest = rec->info.latest_version;
		d->have_rec = true;
	}
	pthread_mutex_unlock(&st->lock);
	return r;
}

void store_dataset_rec_update(struct store *st, const struct dataset_rec *rec)
{
	struct dskey *d;

	pthread_mutex_lock(&st->lock);
	d = dskey_find_locked(st, rec->info.id);
	if (d) {
		d->rec = *rec;
		d->live_latest = rec->info.latest_version;
		d->have_rec = true;
	}
	pthread_mutex_unlock(&st->lock);
}

/* Decode the sealed dataset record v (n bytes) stored under key k (DSKEY_LEN bytes). The name
 * inside must hash to the key it is stored under. */
/* A node whose name key may lag the dataset records it reads: a whole-dataset erasure is under
 * way (its marker, from the batch that re-keys every other dataset under the next name key until
 * it is recorded), or the index names a newer key ring than the node holds (its key bundle, or
 * keys/ring, is read at its next catch-up). A dataset record under another name's key is then
 * no sign of tampering. Never on the primary, whose ring is the one the index follows. */
static bool names_key_lags(struct store *st)
{
	uint64_t gen = 0, held;
	char *m = NULL;
	size_t n = 0;
	bool lags = false;

	if (!st->secondary)
		return false;
	if (index_get(&st->ix, CF_META, META_ERASE, strlen(META_ERASE), &m, &n) == 0) {
		lags = n >= 12 && get_be32((const uint8_t *)m + 8) == 0;
		free(m);
	}
	if (!lags && meta_get_u64(st, META_RING, &gen) == 0) {
		pthread_mutex_lock(&st->lock);
		held = st->ring ? keyring_generation(st->ring) : 0;
		pthread_mutex_unlock(&st->lock);
		lags = gen > held;
	}
	return lags;
}

static int dataset_unseal(struct store *st, const void *k, size_t kl, const void *v, size_t n,
			  struct dataset_rec *ret)
{
	uint8_t pt[REC_PLAIN_MAX], h[DSKEY_LEN];
	size_t pl = 0;
	int r;

	const crypto_key *seal = st->ix_seal, *name;
	size_t clen = 0;
	uint64_t dsid = 0;

	if (kl != DSKEY_LEN)
		return store_integrity(st, 0, 0, "a dataset key is malformed");
	if (st->format >= STORE_FORMAT_VERSION) {
		/* Format 3: the dataset id in clear names the ring key the record is sealed
		 * under (it is bound into the AD, like a version record's state). */
		if (n < 8 + CRYPTO_SEAL_OVERHEAD)
			return store_integrity(st, 0, 0, "a dataset record is malformed");
		dsid = get_be64(v);
		clen = 8;
		r = dsid ? store_dataset_rec_key(st, dsid, &seal) : -ENOENT;
		if (r == -ENOENT)
			return store_integrity(st, dsid, 0, "dataset %llu has a record but no key in "
					       "the key ring", (unsigned long long)dsid);
		if (r < 0)
			return r;
	}
	if (index_unseal(seal, CF_DATASETS, k, kl, clen, v, n, pt, sizeof(pt), &pl) < 0)
		return store_integrity(st, dsid, 0, "a dataset record does not authenticate");
	r = dataset_rec_decode(NULL, pt, pl, ret);
	explicit_bzero(pt, sizeof(pt));
	if (r < 0)
		return integrity_of(st, dsid, 0, r);
	if (clen && ret->info.id != dsid)
		return store_integrity(st, dsid, 0, "dataset record %llu names another id",
				       (unsigned long long)dsid);
	pthread_mutex_lock(&st->lock);
	name = st->ix_name;
	pthread_mutex_unlock(&st->lock);
	if (!name)
		return record_keys_missing(st, store_record_generation(st));
	dskey_hash(name, ret->info.name, h);
	if (memcmp(h, k, DSKEY_LEN) != 0 && names_key_lags(st))
		return err_set(-EAGAIN, "dataset %llu is keyed under a name key this node does not "
			       "hold yet (a whole dataset is being erased; its key bundle follows)",
			       (unsigned long long)ret->info.id);
	if (memcmp(h, k, DSKEY_LEN) != 0)
		return store_integrity(st, ret->info.id, 0,
				       "dataset %llu is stored under another name's key",
				       (unsigned long long)ret->info.id);
	return 0;
}

/* Call fn for every dataset record in key order; a non-zero return from fn stops and is
 * returned. A record that does not authenticate is -EBADMSG, or skipped when skip_bad, so that
 * damage to one dataset does not hide the others from a lookup by id; so is one a node cannot
 * check yet (-EAGAIN: its name key lags a whole-dataset erasure), as its lookup by name misses
 * it until the node's new keys arrive. */
static int dataset_recs_foreach(struct store *st, bool skip_bad,
				int (*fn)(void *ctx, const struct dataset_rec *rec), void *ctx)
{
	rocksdb_iterator_t *it;
	int r = 0;

	/* The iterator's view and the keys, of one record key generation and one name key. */
	store_rekey_rdlock(st);
	pthread_rwlock_rdlock(&st->names_lock);
	it = index_iter(&st->ix, CF_DATASETS);

	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		struct dataset_rec rec;
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		r = dataset_unseal(st, k, kl, v, vl, &rec);
		if ((r == -EBADMSG || r == -EAGAIN) && skip_bad) {
			r = 0;
			continue;
		}
		if (r == 0)
			r = fn(ctx, &rec);
		if (r != 0)
			break;
	}
	r = index_iter_close(&st->ix, it, r, "scan of datasets");
	pthread_rwlock_unlock(&st->names_lock);
	store_rekey_rdunlock(st);
	return r;
}

int index_datasets_foreach(struct store *st,
			   int (*fn)(void *ctx, const struct dataset_rec *rec), void *ctx)
{
	return dataset_recs_foreach(st, false, fn, ctx);
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

/* The cache entry of dataset dsid, its key unwrapped on first use. With st->lock held. */
static int dskey_get_locked(struct store *st, uint64_t dsid, const struct dataset_rec *rec,
			    struct dskey **ret)
{
	struct dataset_rec found;
	uint8_t ad[DATASET_KEY_AD_MAX];
	size_t adlen;
	crypto_key *key = NULL;
	int r;

	*ret = dskey_find_locked(st, dsid);
	if (*ret)
		return 0;
	if (st->format >= STORE_FORMAT_VERSION) {
		const crypto_key *rk = NULL;

		if (keyring_get(st->ring, KEYRING_DATASET, dsid, 0, &rk) < 0)
			return err_set(-ENOENT, "dataset %llu has no key in the key ring",
				       (unsigned long long)dsid);
		r = crypto_key_from_bytes(crypto_key_bytes(rk), &key);
		if (r < 0)
			return r;
		return dskey_insert_locked(st, dsid, key, ret);
	}
	if (!rec) {
		r = dataset_rec_by_id(st, dsid, &found);
		if (r < 0)
			return r;
		rec = &found;
	}
	adlen = dataset_key_ad(st->store_id, dsid, rec->info.name, ad);
	r = crypto_key_unwrap(st->master, rec->wrapped_key, ad, adlen, &key);
	if (r < 0)
		return err_set(r, "the key of dataset '%s' does not unwrap: its record was altered",
			       rec->info.name);
	return dskey_insert_locked(st, dsid, key, ret);
}

int store_dataset_key(struct store *st, uint64_t dsid, const struct dataset_rec *rec,
		      crypto_key **ret)
{
	struct dskey *d = NULL;
	int r;

	pthread_mutex_lock(&st->lock);
	r = dskey_get_locked(st, dsid, rec, &d);
	if (r == 0)
		*ret = d->key;
	pthread_mutex_unlock(&st->lock);
	return r;
}

int store_dataset_keys(struct store *st, uint64_t dsid, const struct dataset_rec *rec,
		       struct ds_keys *ret)
{
	struct dskey *d = NULL;
	int r;

	pthread_mutex_lock(&st->lock);
	r = dskey_get_locked(st, dsid, rec, &d);
	if (r == 0)
		*ret = (struct ds_keys){ .seal = d->seal, .name = d->name };
	pthread_mutex_unlock(&st->lock);
	return r;
}

/* ---- Format 3: keys from the key ring ------------------------------------------------------- */

/* The record key of dsid: borrowed (*ret_borrowed), or a copy made under the lock (*ret_copy,
 * owned by the caller), for a caller that does not exclude the dataset's erasure. */
static int dataset_rec_key(struct store *st, uint64_t dsid, const crypto_key **ret_borrowed,
			   crypto_key **ret_copy)
{
	struct dskey *d = NULL;
	uint64_t gen;
	int r;

	pthread_mutex_lock(&st->lock);
	gen = st->rgen;
	r = dskey_get_locked(st, dsid, NULL, &d);
	if (r == 0 && !d->seal)
		r = -ENOKEY;
	else if (r == 0 && ret_copy)
		r = crypto_key_from_bytes(crypto_key_bytes(d->seal), ret_copy);
	else if (r == 0)
		*ret_borrowed = d->seal;
	pthread_mutex_unlock(&st->lock);
	return r == -ENOKEY ? record_keys_missing(st, gen) : r;
}

int store_dataset_rec_key(struct store *st, uint64_t dsid, const crypto_key **ret)
{
	return dataset_rec_key(st, dsid, ret, NULL);
}

/* Wipe and free a version's keys and their entry. NULL is fine. */
static void vkey_ent_free(struct vkey_ent *e)
{
	if (!e)
		return;
	crypto_key_free(e->wrap);
	crypto_key_free(e->seal);
	crypto_key_free(e->name);
	explicit_bzero(e, sizeof(*e));
	free(e);
}

size_t store_test_keys_orphaned(struct store *st)
{
	size_t n;

	pthread_mutex_lock(&st->lock);
	n = st->vkeys_live - st->vkeys_len;
	pthread_mutex_unlock(&st->lock);
	return n;
}

/* Drop one reference; the last one frees. With st->lock held. */
static void vkey_ent_unref_locked(struct store *st, struct vkey_ent *e)
{
	if (--e->refs == 0) {
		vkey_ent_free(e);
		st->vkeys_live--;
	}
}

void store_keys_put(struct store *st, struct ds_keys *k)
{
	if (k->held) {
		pthread_mutex_lock(&st->lock);
		vkey_ent_unref_locked(st, k->held);
		pthread_mutex_unlock(&st->lock);
	}
	*k = (struct ds_keys){ 0 };
}

bool store_keys_dropped(struct store *st, const struct ds_keys *k)
{
	bool dropped = false;

	if (k->held) {
		pthread_mutex_lock(&st->lock);
		dropped = k->held->dropped;
		pthread_mutex_unlock(&st->lock);
	}
	return dropped;
}

int store_version_keys(struct store *st, uint64_t dsid, uint32_t ver, struct ds_keys *ret)
{
	const crypto_key *kv = NULL;
	struct vkey_ent *e = NULL;
	int r = 0;

	if (st->format < STORE_FORMAT_VERSION) {
		struct dskey *d = NULL;

		pthread_mutex_lock(&st->lock);
		r = dskey_get_locked(st, dsid, NULL, &d);
		if (r == 0)
			*ret = (struct ds_keys){ .seal = d->seal, .name = d->name, .wrap = d->key };
		pthread_mutex_unlock(&st->lock);
		return r;
	}
	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < st->vkeys_len; i++)
		if (st->vkeys[i]->dsid == dsid && st->vkeys[i]->ver == ver) {
			e = st->vkeys[i];
			e->refs++;
			*ret = (struct ds_keys){ .seal = e->seal, .name = e->name, .wrap = e->wrap,
						 .held = e };
			pthread_mutex_unlock(&st->lock);
			return 0;
		}
	if (keyring_get(st->ring, KEYRING_VERSION, dsid, ver, &kv) < 0) {
		/* A node sees a version in the index before its key bundle has the key (or never,
		 * once removed): not yet readable here, which is no sign of tampering. */
		if (st->secondary && !st->master)
			r = err_set(-ENOKEY, "this node holds no key for version %u of dataset %llu "
				    "(its key bundle from the primary lags, or the node was "
				    "removed)", ver, (unsigned long long)dsid);
		else
			r = err_set(-ENOENT, "version %u of dataset %llu has no key in the key "
				    "ring", ver, (unsigned long long)dsid);
		goto out;
	}
	if (st->vkeys_len == st->vkeys_cap) {
		size_t n = st->vkeys_cap ? st->vkeys_cap * 2 : 16;
		struct vkey_ent **a = reallocarray(st->vkeys, n, sizeof(*a));

		if (!a) {
			r = -ENOMEM;
			goto out;
		}
		st->vkeys = a;
		st->vkeys_cap = n;
	}
	/* A copy: an erasure drops the ring's key, and this entry's reference with it, under the
	 * lock. The cache's reference and the caller's. */
	e = calloc(1, sizeof(*e));
	if (!e) {
		r = -ENOMEM;
		goto out;
	}
	*e = (struct vkey_ent){ .dsid = dsid, .ver = ver, .refs = 2 };
	r = crypto_key_from_bytes(crypto_key_bytes(kv), &e->wrap);
	if (r == 0)
		r = keyring_version_keys(e->wrap, &e->seal, &e->name);
	if (r < 0) {
		vkey_ent_free(e);
		goto out;
	}
	st->vkeys[st->vkeys_len++] = e;
	st->vkeys_live++;
	*ret = (struct ds_keys){ .seal = e->seal, .name = e->name, .wrap = e->wrap, .held = e };
out:
	pthread_mutex_unlock(&st->lock);
	return r;
}

/* Drop the cached keys of (dsid, ver), or of every version of dsid when ver is 0, and the
 * dataset's own when ver is 0. With st->lock held. */
void store_keys_drop_locked(struct store *st, uint64_t dsid, uint32_t ver)
{
	for (size_t i = 0; i < st->vkeys_len;) {
		struct vkey_ent *e = st->vkeys[i];

		if (e->dsid != dsid || (ver && e->ver != ver)) {
			i++;
			continue;
		}
		/* Out of the cache now; the keys go with the last holder (a lookup running). */
		st->vkeys[i] = st->vkeys[--st->vkeys_len];
		e->dropped = true;
		vkey_ent_unref_locked(st, e);
	}
	for (size_t i = 0; i < st->dskeys_len; i++) {
		struct dskey *d = &st->dskeys[i];

		if (d->id != dsid)
			continue;
		d->have_rec = false;   /* its live latest is recomputed */
		if (ver)
			break;
		crypto_key_free(d->key);
		crypto_key_free(d->seal);
		crypto_key_free(d->name);
		st->dskeys[i] = st->dskeys[--st->dskeys_len];
		explicit_bzero(&st->dskeys[st->dskeys_len], sizeof(*st->dskeys));
		break;
	}
}

/* Load keys/ring, check it is not older than the index says, and take the name key from it. */
int store_ring_open(struct store *st)
{
	const crypto_key *kr = NULL;
	uint64_t gen = 0;
	int r;

	/* store_create() made and wrote a ring already: the one on disk replaces it. */
	keyring_free(st->ring);
	st->ring = NULL;
	r = keyring_load(st->keys_dirfd, st->master, st->store_id, &st->ring);

	if (r == -ENOENT)
		return err_set(-EBADMSG, "the store has no key ring (keys/%s): without it no version "
			       "can be read", KEYRING_FILE);
	if (r < 0)
		return r;
	r = meta_get_u64(st, META_RING, &gen);
	if (r == -ENOENT)
		return err_set(-EBADMSG, "index: no key ring generation");
	if (r < 0)
		return r;
	if (keyring_generation(st->ring) < gen)
		return err_set(-ESTALE, "the key ring (generation %llu) is older than the index "
			       "(generation %llu): keys/%s was put back from a copy",
			       (unsigned long long)keyring_generation(st->ring),
			       (unsigned long long)gen, KEYRING_FILE);
	if (keyring_get(st->ring, KEYRING_NAMES, 0, 0, &kr) < 0)
		return err_set(-EBADMSG, "the key ring has no name key");
	/* The name key and the record keys of the generation the index names: a ring without
	 * its rotating key (put back from before a node removal) does not open. */
	return record_keys_follow(st);
}

int store_ring_add(struct store *st, uint64_t dsid, uint32_t ver, crypto_key *kv, crypto_key *kd,
		   uint64_t *ret_gen)
{
	int r;

	pthread_mutex_lock(&st->lock);
	r = keyring_put(st->ring, KEYRING_VERSION, dsid, ver, kv);
	if (kd) {
		if (r == 0)
			r = keyring_put(st->ring, KEYRING_DATASET, dsid, 0, kd);
		else
			crypto_key_free(kd);
	}
	if (r == 0)
		r = keyring_commit(st->ring, st->keys_dirfd, st->master);
	if (r == 0)
		*ret_gen = keyring_generation(st->ring);
	pthread_mutex_unlock(&st->lock);
	if (r < 0)
		store_ring_forget(st, dsid, ver, kd != NULL);
	else
		store_ring_committed(st);   /* the nodes' copies, before the index batch */
	return r;
}

void store_ring_forget(struct store *st, uint64_t dsid, uint32_t ver, bool dataset_too)
{
	pthread_mutex_lock(&st->lock);
	keyring_remove(st->ring, KEYRING_VERSION, dsid, ver);
	if (dataset_too)
		keyring_remove(st->ring, KEYRING_DATASET, dsid, 0);
	store_keys_drop_locked(st, dsid, dataset_too ? 0 : ver);
	pthread_mutex_unlock(&st->lock);
}

/* ---- Datasets: the latest version, checked ------------------------------------------------- */

/* Whether the key ring holds the key of version ver of dsid now. */
static bool ring_has_version(struct store *st, uint64_t dsid, uint32_t ver)
{
	const crypto_key *kv = NULL;
	bool has;

	pthread_mutex_lock(&st->lock);
	has = keyring_get(st->ring, KEYRING_VERSION, dsid, ver, &kv) == 0;
	pthread_mutex_unlock(&st->lock);
	return has;
}

/* The record of version ver of dsid, whatever its state, unsealed with the right key: the
 * version's own (format 3: from the ring; none for a version not yet committed), or for an erased
 * version's tombstone the dataset's record key. */
static int version_get_any(struct store *st, uint64_t dsid, uint32_t ver, struct version_rec *ret)
{
	/* A copy: a whole-dataset erasure running meanwhile frees the cache's. */
	crypto_key *tomb = NULL;
	struct ds_keys k = { 0 };
	int r = store_version_keys(st, dsid, ver, &k);
	/* No key: a version not committed yet (a pending one needs none), erased (its tombstone
	 * is under the record key), or on a node whose bundle lags (-ENOKEY). */
	int no_key = r == -ENOENT || r == -ENOKEY ? r : 0;

	if (r < 0 && !no_key)
		return r;
	store_race_point(st, STORE_RACE_VERSION_KEYS, dsid);
	store_rekey_rdlock(st);
	r = st->format >= STORE_FORMAT_VERSION ? dataset_rec_key(st, dsid, NULL, &tomb) : 0;
	if (r == -ENOKEY) {
		/* A node without the record keys (removed, or its bundle lags) still reads the
		 * versions it holds keys for; only a tombstone needs them. */
		char *v = NULL;
		size_t n = 0;
		uint8_t vk[VKEY_LEN];
		uint32_t state = 0;

		vkey(vk, dsid, ver);
		r = index_get(&st->ix, CF_VERSIONS, vk, sizeof(vk), &v, &n);
		if (r == 0 && version_value_state(v, n, &state) == 0 && state == VERSION_ERASED)
			r = -ENOKEY;
		free(v);
		if (r == -ENOKEY)
			r = record_keys_missing(st, store_record_generation(st));
	}
	if (r == 0)
		r = index_version_get(&st->ix, k.seal, tomb, dsid, ver, ret);
	/* No key when it was looked up, a committed record when read: its commit landed in between
	 * (the ring is written before the batch that commits the version), and its key now
	 * decides; on a node, the key it lacks is -ENOKEY (not readable here), as it always was. */
	if (r == -EBADMSG && no_key && (no_key == -ENOKEY || ring_has_version(st, dsid, ver))) {
		r = store_version_keys(st, dsid, ver, &k);
		if (r == 0)
			r = index_version_get(&st->ix, k.seal, tomb, dsid, ver, ret);
	}
	store_rekey_rdunlock(st);
	crypto_key_free(tomb);
	store_keys_put(st, &k);
	return r;
}

int store_version_keys_read(struct store *st, uint64_t dsid, uint32_t ver, struct ds_keys *ret)
{
	struct version_rec vr;
	int r = store_version_keys(st, dsid, ver, ret);

	if (r != -ENOKEY)
		return r;
	/* A node without the key: an erased version is gone, as on the primary (its tombstone
	 * reads with the dataset's record key); any other is not readable here yet. */
	if (version_get_any(st, dsid, ver, &vr) == 0 && vr.state == VERSION_ERASED)
		return err_set(-ENOENT, "version %u of dataset %llu was erased", ver,
			       (unsigned long long)dsid);
	return store_version_keys(st, dsid, ver, ret);
}

/* A dataset record names its newest version (committed, or erased since). A replayed older
 * record (latest lowered) or an edited one (raised) is caught here: the version it names must
 * be committed or erased, and no committed version may exist above it. Versions above it may
 * only be PENDING (an import running now, or the remains of one that recovery drops at the next
 * open), and when the ring holds a key for one it must authenticate under it. *ret_live: the
 * newest version that is not erased (0: none).
 *
 * rec was read before the versions are, so a commit (or the dataset's erasure) landing in
 * between makes an honest record look behind them. Unless last_try, such a disagreement is
 * -EAGAIN, reported to nobody: the caller reads the record again and calls once more, and only
 * then is it an integrity failure (dataset_verify). */
static int dataset_check_latest(struct store *st, const struct dataset_rec *rec, bool last_try,
				uint32_t *ret_live)
{
	uint64_t id = rec->info.id;
	uint32_t latest = rec->info.latest_version, live;
	struct version_rec vr;
	rocksdb_iterator_t *it;
	uint8_t lo[VKEY_LEN];
	int r = version_get_any(st, id, latest, &vr);

	if (r == -ENOENT || (r == 0 && vr.state == VERSION_PENDING))
		return !last_try ? -EAGAIN :
			store_integrity(st, id, latest,
					"dataset %llu names version %u as its latest, which is not a "
					"committed version", (unsigned long long)id, latest);
	if (r < 0)
		return integrity_of(st, id, latest, r);
	/* Below an erased latest, the newest live one. */
	for (live = latest; live > 0 && vr.state == VERSION_ERASED;) {
		if (--live == 0)
			break;
		r = version_get_any(st, id, live, &vr);
		if (r == -ENOENT || (r == 0 && vr.state == VERSION_PENDING))
			return !last_try ? -EAGAIN :
				store_integrity(st, id, live, "version %u of dataset %llu (latest "
						"%u) has no committed record", live,
						(unsigned long long)id, latest);
		if (r < 0)
			return integrity_of(st, id, live, r);
	}
	if (latest != UINT32_MAX) {
		vkey(lo, id, latest + 1);
		it = index_iter(&st->ix, CF_VERSIONS);
		for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); rocksdb_iter_valid(it);
		     rocksdb_iter_next(it)) {
			size_t kl;
			const uint8_t *ik = (const uint8_t *)rocksdb_iter_key(it, &kl);
			uint32_t v;

			if (kl != VKEY_LEN || get_be64(ik) != id)
				break;
			v = get_be32(ik + 8);
			r = version_get_any(st, id, v, &vr);
			if (r == 0 && vr.state != VERSION_PENDING)
				r = !last_try ? -EAGAIN :
					store_integrity(st, id, v, "dataset %llu names version %u as "
							"its latest, but version %u above it is "
							"committed", (unsigned long long)id, latest,
							v);
			else if (r < 0)
				r = integrity_of(st, id, v, r);
			if (r < 0)
				break;
		}
		r = index_iter_close(&st->ix, it, r, "scan of versions");
		if (r < 0)
			return r;
	}
	*ret_live = live;
	return 0;
}

static int dataset_rec_read(struct store *st, const char *name, struct dataset_rec *ret);

/* *rec, read from the index (from a scan's snapshot, the cache or a lookup), checked against its
 * versions as they are now (once per latest version: the result is cached). When the two
 * disagree, the record as the index holds it now is read and checked once more: a commit or an
 * erasure of the dataset may have landed between the reads. Only a disagreement then is an
 * integrity failure: a record put back from before a commit is behind its versions however often
 * it is read. *rec becomes the record checked; -ENOENT when the dataset was erased meanwhile. */
static int dataset_verify(struct store *st, struct dataset_rec *rec, uint64_t gen,
			  uint32_t *ret_live)
{
	struct dskey *d = NULL;
	uint32_t live = 0;
	bool known;
	int r;

	store_race_point(st, STORE_RACE_REC_READ, rec->info.id);
	pthread_mutex_lock(&st->lock);
	r = dskey_get_locked(st, rec->info.id, rec, &d);
	known = r == 0 && d->have_rec && d->rec.info.latest_version == rec->info.latest_version &&
		d->rec.info.created_ns == rec->info.created_ns &&
		strcmp(d->rec.info.name, rec->info.name) == 0;
	if (known)
		live = d->live_latest;
	pthread_mutex_unlock(&st->lock);
	if (r < 0)
		return integrity_of(st, rec->info.id, 0, r);
	if (!known) {
		r = dataset_check_latest(st, rec, false, &live);
		if (r == -EAGAIN) {
			struct dataset_rec now;

			r = dataset_rec_read(st, rec->info.name, &now);
			if (r == 0 && now.info.id != rec->info.id)
				r = -ENOENT;   /* erased, and the name given to a new dataset */
			if (r == -ENOENT)
				return err_set(-ENOENT, "dataset %s was erased", rec->info.name);
			if (r < 0)
				return r;
			*rec = now;
			r = dataset_check_latest(st, rec, true, &live);
		}
		if (r < 0)
			return r;
		store_race_point(st, STORE_RACE_REC_CHECKED, rec->info.id);
		pthread_mutex_lock(&st->lock);
		/* Not when a catch-up came in between (a node): rec may be older than it. Nor over a
		 * newer record that a commit cached meanwhile: the cached latest only moves up (the
		 * next import numbers its version from it). */
		d = st->rec_gen == gen ? dskey_find_locked(st, rec->info.id) : NULL;
		if (d && !(d->have_rec && d->rec.info.latest_version > rec->info.latest_version)) {
			d->rec = *rec;
			d->have_rec = true;
			d->live_latest = live;
		}
		pthread_mutex_unlock(&st->lock);
	}
	if (live == 0)
		return store_integrity(st, rec->info.id, 0, "dataset %llu has no version that is "
				       "not erased", (unsigned long long)rec->info.id);
	if (ret_live)
		*ret_live = live;
	return 0;
}

int index_dataset_get(struct store *st, const char *name, struct dataset_rec *ret)
{
	if (!store_dataset_name_valid(name))
		return -EINVAL;
	/* Checked before: served from the cache, with no crypto. */
	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < st->dskeys_len; i++)
		if (st->dskeys[i].have_rec && strcmp(st->dskeys[i].rec.info.name, name) == 0) {
			*ret = st->dskeys[i].rec;
			pthread_mutex_unlock(&st->lock);
			return 0;
		}
	pthread_mutex_unlock(&st->lock);
	return dataset_rec_read(st, name, ret);
}

/* The record of dataset name as the index holds it now: never from the cache. */
static int dataset_rec_read(struct store *st, const char *name, struct dataset_rec *ret)
{
	uint8_t k[DSKEY_LEN];
	char *v = NULL;
	size_t n = 0;
	int r;

	/* The name's key, the record and its key, of one record key generation and one name
	 * key. */
	store_rekey_rdlock(st);
	pthread_rwlock_rdlock(&st->names_lock);
	pthread_mutex_lock(&st->lock);
	r = st->ix_name ? 0 : -ENOKEY;
	if (r == 0)
		dskey_hash(st->ix_name, name, k);
	pthread_mutex_unlock(&st->lock);
	if (r < 0)
		r = record_keys_missing(st, store_record_generation(st));
	else
		r = index_get(&st->ix, CF_DATASETS, k, sizeof(k), &v, &n);
	if (r == 0)
		r = dataset_unseal(st, k, sizeof(k), v, n, ret);
	pthread_rwlock_unlock(&st->names_lock);
	store_rekey_rdunlock(st);
	free(v);
	if (r == 0 && strcmp(ret->info.name, name) != 0)
		r = store_integrity(st, ret->info.id, 0, "a dataset record holds another name");
	return r;
}

/* ---- Lookups ------------------------------------------------------------------------------- */

/* The generation of the cached dataset records: a node's catch-up that saw a change raises it. */
static uint64_t store_rec_gen(struct store *st)
{
	uint64_t g;

	pthread_mutex_lock(&st->lock);
	g = st->rec_gen;
	pthread_mutex_unlock(&st->lock);
	return g;
}

/* The latest version of a dataset as last checked, 0 if not checked yet. */
static uint32_t cached_latest(struct store *st, uint64_t dsid)
{
	struct dskey *d;
	uint32_t latest = 0;

	pthread_mutex_lock(&st->lock);
	d = dskey_find_locked(st, dsid);
	if (d && d->have_rec)
		latest = d->rec.info.latest_version;
	pthread_mutex_unlock(&st->lock);
	return latest;
}

/* A node that lacks the record keys the index names now (it was removed, or its key bundle lags)
 * answers from the record it last checked, if any: what it had already, nothing written since,
 * so that it refuses opens by its policy (stale, removed) and says why, as before the re-keying. */
static bool rec_last_checked(struct store *st, const char *name, struct dataset_rec *ret,
			     uint32_t *ret_live)
{
	bool found = false;

	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < st->dskeys_len && !found; i++)
		if (st->dskeys[i].rec.info.id == st->dskeys[i].id && st->dskeys[i].live_latest &&
		    strcmp(st->dskeys[i].rec.info.name, name) == 0) {
			*ret = st->dskeys[i].rec;
			*ret_live = st->dskeys[i].live_latest;
			found = true;
		}
	pthread_mutex_unlock(&st->lock);
	return found;
}

int store_dataset_get(struct store *st, const char *name, struct store_dataset_info *ret_info)
{
	struct dataset_rec rec;
	uint32_t live = 0;
	uint64_t gen = store_rec_gen(st);
	int r = index_dataset_get(st, name, &rec);

	if (r == -ENOKEY && st->secondary && rec_last_checked(st, name, &rec, &live)) {
		*ret_info = rec.info;
		ret_info->latest_version = live;
		return 0;
	}
	if (r == 0)
		r = dataset_verify(st, &rec, gen, &live);
	if (r < 0)
		return r;
	*ret_info = rec.info;
	/* What readers see as the latest: erased versions are gone. */
	ret_info->latest_version = live;
	return 0;
}

/* The checked records, sorted by name: the listing order callers had with clear names. */
struct rec_list {
	struct store *st;
	struct dataset_rec *recs;
	size_t n, cap;
	uint64_t gen;        /* store_rec_gen() when the scan began */
};

#define DATASETS_LIST_MAX (1u << 20)

static int collect_rec(void *ctx, const struct dataset_rec *rec)
{
	struct rec_list *l = ctx;
	struct dataset_rec live = *rec;
	uint32_t latest = 0;
	int r = dataset_verify(l->st, &live, l->gen, &latest);

	/* A dataset that fails its check is left out (the hook has recorded why; a lookup of it by
	 * name fails with the same error): damage to one dataset must not hide the others, nor stop
	 * the daemon from answering. One whose record is gone when read again is left out too. */
	if (r == -EBADMSG || r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	live.info.latest_version = latest;
	if (l->n == l->cap) {
		size_t n = l->cap ? l->cap * 2 : 16;
		struct dataset_rec *a;

		if (n > DATASETS_LIST_MAX)
			return err_set(-E2BIG, "more than %u datasets", DATASETS_LIST_MAX);
		a = reallocarray(l->recs, n, sizeof(*a));
		if (!a)
			return -ENOMEM;
		l->recs = a;
		l->cap = n;
	}
	l->recs[l->n++] = live;
	return 0;
}

static int rec_name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct dataset_rec *)a)->info.name,
		      ((const struct dataset_rec *)b)->info.name);
}

int store_dataset_foreach(struct store *st,
			  int (*fn)(void *ctx, const struct store_dataset_info *info), void *ctx)
{
	struct rec_list l = { .st = st, .gen = store_rec_gen(st) };
	int r = dataset_recs_foreach(st, true, collect_rec, &l);

	if (r == 0 && l.n > 1)
		qsort(l.recs, l.n, sizeof(*l.recs), rec_name_cmp);
	for (size_t i = 0; r == 0 && i < l.n; i++)
		r = fn(ctx, &l.recs[i].info);
	if (l.recs)
		explicit_bzero(l.recs, l.cap * sizeof(*l.recs));
	free(l.recs);
	return r;
}

int store_version_get(struct store *st, uint64_t dataset_id, uint32_t version,
		      struct store_version_info *ret_info)
{
	struct version_rec vr;
	uint32_t latest;
	int r = version_get_any(st, dataset_id, version, &vr);

	if (r == 0 && vr.state == VERSION_ERASED)
		return err_set(-ENOENT, "version %u of dataset %llu was erased", version,
			       (unsigned long long)dataset_id);
	if (r == 0 && vr.state != VERSION_COMMITTED)
		r = -ENOENT;
	if (r == -ENOENT) {
		/* Versions 1..latest all exist: a missing one was removed. */
		latest = cached_latest(st, dataset_id);
		if (version >= 1 && version <= latest)
			return store_integrity(st, dataset_id, version,
					       "version %u of dataset %llu (latest %u) has no "
					       "committed record", version,
					       (unsigned long long)dataset_id, latest);
	}
	if (r < 0)
		return integrity_of(st, dataset_id, version, r);
	*ret_info = vr.info;
	return 0;
}

/* An inode record, unsealed and decoded; its directory digest too when digest is not NULL.
 * The plaintext into pt/ret_pl when pt is not NULL (the manifest hashes it). */
static int inode_get_k(struct store *st, const struct ds_keys *k, uint64_t dsid, uint32_t ver,
		       uint64_t ino, struct store_inode *ret, uint8_t *digest)
{
	uint8_t key[IKEY_LEN], pt[REC_PLAIN_MAX];
	char *v = NULL;
	size_t n = 0, pl = 0;
	int r;

	ikey(key, dsid, ver, ino);
	r = index_get(&st->ix, CF_INODES, key, sizeof(key), &v, &n);
	/* Every committed version has a root. (A version that does not exist has none either.) */
	if (r == -ENOENT && ino == STORE_ROOT_INO && ver <= cached_latest(st, dsid) &&
	    !store_keys_dropped(st, k))
		return store_integrity(st, dsid, ver, "version %u of dataset %llu has no root "
				       "directory", ver, (unsigned long long)dsid);
	if (r < 0)
		return r;
	r = index_unseal(k->seal, CF_INODES, key, sizeof(key), 0, v, n, pt, sizeof(pt), &pl);
	free(v);
	if (r < 0)
		return store_integrity(st, dsid, ver, "inode %llu of version %u of dataset %llu does "
				       "not authenticate (moved, copied or edited)",
				       (unsigned long long)ino, ver, (unsigned long long)dsid);
	r = inode_decode(ino, pt, pl, ret, digest);
	if (r == 0)
		ret->version = ver;
	return integrity_of(st, dsid, ver, r);
}

int store_inode_get(struct store *st, uint64_t dataset_id, uint32_t version, uint64_t ino,
		    struct store_inode *ret_inode)
{
	struct ds_keys k = { 0 };
	int r = store_version_keys_read(st, dataset_id, version, &k);

	if (r < 0)
		return r;
	r = inode_get_k(st, &k, dataset_id, version, ino, ret_inode, NULL);
	store_keys_put(st, &k);
	return r;
}

/* Unseal and decode the directory entry at key (DKEY_LEN bytes), and check that the name inside
 * hashes to the key it is stored under. */
static int dirent_unseal(struct store *st, const struct ds_keys *k, uint64_t dsid, uint32_t ver,
			 const uint8_t *key, size_t kl, const void *v, size_t n,
			 struct dirent_rec *ret)
{
	uint8_t pt[REC_PLAIN_MAX], h[DKEY_LEN];
	size_t pl = 0;
	int r;

	if (kl != DKEY_LEN)
		return store_integrity(st, dsid, ver, "a directory entry key of version %u of "
				       "dataset %llu is malformed", ver, (unsigned long long)dsid);
	if (index_unseal(k->seal, CF_DIRENTS, key, kl, 0, v, n, pt, sizeof(pt), &pl) < 0)
		return store_integrity(st, dsid, ver, "a directory entry of directory %llu of "
				       "version %u of dataset %llu does not authenticate (moved, "
				       "copied, renamed or edited)",
				       (unsigned long long)get_be64(key + VKEY_LEN), ver,
				       (unsigned long long)dsid);
	r = dirent_rec_decode(pt, pl, ret);
	if (r < 0)
		return integrity_of(st, dsid, ver, r);
	if (k->name_mk)
		dkey_mk(k->name_mk, h, dsid, ver, get_be64(key + VKEY_LEN), ret->name,
			strlen(ret->name));
	else
		dkey(k->name, h, dsid, ver, get_be64(key + VKEY_LEN), ret->name, strlen(ret->name));
	if (memcmp(h, key, DKEY_LEN) != 0)
		return store_integrity(st, dsid, ver, "a directory entry of version %u of dataset "
				       "%llu is stored under another name's key", ver,
				       (unsigned long long)dsid);
	return 0;
}

static size_t vdir_slot(uint64_t dsid, uint32_t ver, uint64_t ino)
{
	uint64_t h = dsid * 0x9e3779b97f4a7c15ull ^ ((uint64_t)ver << 32) ^ ino * 0xff51afd7ed558ccdull;

	return (size_t)((h ^ (h >> 29)) % VERIFIED_DIRS);
}

static bool vdir_known(struct store *st, uint64_t dsid, uint32_t ver, uint64_t ino)
{
	struct verified_dir *s = &st->vdirs[vdir_slot(dsid, ver, ino)];
	bool known;

	pthread_mutex_lock(&st->lock);
	known = s->version == ver && s->dsid == dsid && s->ino == ino;
	pthread_mutex_unlock(&st->lock);
	return known;
}

static void vdir_set(struct store *st, uint64_t dsid, uint32_t ver, uint64_t ino)
{
	pthread_mutex_lock(&st->lock);
	st->vdirs[vdir_slot(dsid, ver, ino)] = (struct verified_dir){ .dsid = dsid, .ino = ino,
								      .version = ver };
	pthread_mutex_unlock(&st->lock);
}

/* Compare what a complete pass over a directory found with what its record says. */
static int dir_check_total(struct store *st, const struct ds_keys *k, uint64_t dsid, uint32_t ver,
			   uint64_t dir_ino, uint64_t count, const uint8_t digest[DIR_DIGEST_LEN])
{
	struct store_inode d;
	uint8_t want[DIR_DIGEST_LEN];
	int r = inode_get_k(st, k, dsid, ver, dir_ino, &d, want);

	/* Its entries read (a scan's snapshot) before the version's erasure, its record after. */
	if (r == -ENOENT && store_keys_dropped(st, k))
		return err_set(-ENOENT, "version %u of dataset %llu was erased during the listing",
			       ver, (unsigned long long)dsid);
	if (r == -ENOENT)
		return store_integrity(st, dsid, ver, "directory %llu of version %u of dataset %llu "
				       "has entries but no record", (unsigned long long)dir_ino, ver,
				       (unsigned long long)dsid);
	if (r < 0)
		return r;
	if (d.type != STORE_INODE_DIR)
		return store_integrity(st, dsid, ver, "inode %llu of version %u of dataset %llu has "
				       "entries but is a file", (unsigned long long)dir_ino, ver,
				       (unsigned long long)dsid);
	if (d.size != count || !bytes_equal(want, digest, DIR_DIGEST_LEN))
		return store_integrity(st, dsid, ver, "directory %llu of version %u of dataset %llu "
				       "holds %llu entries, its record says %llu (entries removed "
				       "or added)", (unsigned long long)dir_ino, ver,
				       (unsigned long long)dsid, (unsigned long long)count,
				       (unsigned long long)d.size);
	vdir_set(st, dsid, ver, dir_ino);
	return 0;
}

/* Iterate the entries of dir_ino from the one after `after` (NULL: the first), unsealed, in key
 * (name hash) order, calling fn; a full pass (after == NULL, fn never stopping) is checked
 * against the directory's record. */
static int dir_scan(struct store *st, const struct ds_keys *k, uint64_t dsid, uint32_t ver,
		    uint64_t dir_ino, const char *after,
		    int (*fn)(void *ctx, const char *name, uint64_t ino, uint32_t type), void *ctx,
		    bool *ret_complete)
{
	uint8_t key[DKEY_LEN], digest[DIR_DIGEST_LEN] = { 0 };
	size_t klen = DKEY_PREFIX_LEN;
	uint64_t count = 0;
	rocksdb_iterator_t *it;
	bool stopped = false;
	int r = 0;

	ikey(key, dsid, ver, dir_ino);
	if (after) {
		dkey(k->name, key, dsid, ver, dir_ino, after, strlen(after));
		klen = DKEY_LEN;
	}
	it = index_iter(&st->ix, CF_DIRENTS);
	for (rocksdb_iter_seek(it, (const char *)key, klen); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		struct dirent_rec d;
		size_t kl, vl;
		const uint8_t *ik = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl < DKEY_PREFIX_LEN || memcmp(ik, key, DKEY_PREFIX_LEN) != 0)
			break;
		if (after && kl == klen && memcmp(ik, key, klen) == 0)
			continue;
		r = dirent_unseal(st, k, dsid, ver, ik, kl, v, vl, &d);
		if (r < 0)
			break;
		count++;
		dirent_digest_add(k->name, digest, d.ino, d.type, d.name, strlen(d.name));
		if (fn)
			r = fn(ctx, d.name, d.ino, d.type);
		if (r != 0) {
			stopped = true;
			break;
		}
	}
	r = index_iter_close(&st->ix, it, r, "directory scan");
	if (r == 0 && !stopped && !after)
		r = dir_check_total(st, k, dsid, ver, dir_ino, count, digest);
	*ret_complete = !stopped;
	return r;
}

/* Make sure no entry of the directory was removed (or added) before saying "no such entry" or
 * ending a listing: one full authenticated pass, once per directory while it stays cached. */
static int dir_verify(struct store *st, const struct ds_keys *k, uint64_t dsid, uint32_t ver,
		      uint64_t dir_ino)
{
	bool complete;

	if (vdir_known(st, dsid, ver, dir_ino))
		return 0;
	return dir_scan(st, k, dsid, ver, dir_ino, NULL, NULL, NULL, &complete);
}

/* store_dir_lookup() with the version's keys held. */
static int dir_lookup_k(struct store *st, const struct ds_keys *k, uint64_t dataset_id,
			uint32_t version, uint64_t dir_ino, const char *name,
			struct store_inode *ret_inode)
{
	uint8_t key[DKEY_LEN];
	struct dirent_rec d;
	char *v = NULL;
	size_t n = 0;
	int r;

	dkey(k->name, key, dataset_id, version, dir_ino, name, strlen(name));
	r = index_get(&st->ix, CF_DIRENTS, key, sizeof(key), &v, &n);
	if (r == -ENOENT) {
		r = dir_verify(st, k, dataset_id, version, dir_ino);
		return r < 0 ? r : -ENOENT;
	}
	if (r < 0)
		return r;
	/* Tests: an erasure of the version lands here, between the read and the unseal. */
	store_race_point(st, STORE_RACE_KEYS_HELD, dataset_id);
	r = dirent_unseal(st, k, dataset_id, version, key, sizeof(key), v, n, &d);
	free(v);
	if (r < 0)
		return r;
	if (strcmp(d.name, name) != 0)
		return store_integrity(st, dataset_id, version, "a directory entry holds another "
				       "name than the one it is stored under");
	r = inode_get_k(st, k, dataset_id, version, d.ino, ret_inode, NULL);
	/* Its entry read before the version's erasure, its inode after: no such entry. */
	if (r == -ENOENT && store_keys_dropped(st, k))
		return err_set(-ENOENT, "version %u of dataset %llu was erased during the lookup",
			       version, (unsigned long long)dataset_id);
	if (r == -ENOENT)
		return store_integrity(st, dataset_id, version, "an entry of directory %llu of "
				       "version %u of dataset %llu names inode %llu, which has no "
				       "record", (unsigned long long)dir_ino, version,
				       (unsigned long long)dataset_id, (unsigned long long)d.ino);
	if (r == 0 && ret_inode->type != d.type)
		return store_integrity(st, dataset_id, version, "inode %llu of version %u of "
				       "dataset %llu is not of the type its entry says",
				       (unsigned long long)d.ino, version,
				       (unsigned long long)dataset_id);
	return r;
}

int store_dir_lookup(struct store *st, uint64_t dataset_id, uint32_t version, uint64_t dir_ino,
		     const char *name, struct store_inode *ret_inode)
{
	struct ds_keys k = { 0 };
	int r;

	if (!store_name_valid(name, strnlen(name, STORE_NAME_MAX + 1)))
		return -EINVAL;
	r = store_version_keys_read(st, dataset_id, version, &k);
	if (r < 0)
		return r;
	r = dir_lookup_k(st, &k, dataset_id, version, dir_ino, name, ret_inode);
	store_keys_put(st, &k);
	return r;
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
	struct ds_keys k = { 0 };
	bool complete = false;
	int r;

	if (after && !store_name_valid(after, strnlen(after, STORE_NAME_MAX + 1)))
		return -EINVAL;
	r = store_version_keys_read(st, dataset_id, version, &k);
	if (r < 0)
		return r;
	r = dir_scan(st, &k, dataset_id, version, dir_ino, after, fn, ctx, &complete);
	/* A listing resumed after a name that reached the end: the part before it was listed
	 * by earlier calls, so the directory as a whole is checked (once) before the end is
	 * reported. */
	if (r == 0 && after && complete)
		r = dir_verify(st, &k, dataset_id, version, dir_ino);
	store_keys_put(st, &k);
	return r;
}

/* ---- Manifest ------------------------------------------------------------------------------ */

void manifest_leaf(crypto_hasher *h, uint64_t ino, uint64_t parent, const char *name, size_t nlen,
		   const uint8_t *rec, size_t reclen)
{
	uint8_t hdr[8 + 8 + 1 + 2];

	put_be64(hdr, ino);
	put_be64(hdr + 8, parent);
	hdr[16] = (uint8_t)nlen;
	hdr[17] = (uint8_t)(reclen >> 8);
	hdr[18] = (uint8_t)reclen;
	crypto_hash_update(h, hdr, sizeof(hdr));
	crypto_hash_update(h, name, nlen);
	crypto_hash_update(h, rec, reclen);
}

void manifest_finish(const char *dsname, uint64_t dsid, uint32_t version, uint64_t files,
		     uint64_t dirs, uint64_t bytes, crypto_hasher *files_h, crypto_hasher *dirs_h,
		     uint8_t ret[static STORE_MANIFEST_LEN])
{
	uint8_t head[21 + 8 + 1 + STORE_DATASET_NAME_MAX + 4 + 24], fd[2][CRYPTO_HASH_LEN];
	size_t nlen = strnlen(dsname, STORE_DATASET_NAME_MAX), at = 0;
	crypto_hasher *m = NULL;

	memcpy(head, "enclave manifest v1\n", 20);
	at = 20;
	put_be64(head + at, dsid);
	at += 8;
	head[at++] = (uint8_t)nlen;
	memcpy(head + at, dsname, nlen);
	at += nlen;
	put_be32(head + at, version);
	put_be64(head + at + 4, files);
	put_be64(head + at + 12, dirs);
	put_be64(head + at + 20, bytes);
	at += 28;
	crypto_hash_final(files_h, fd[0]);
	crypto_hash_final(dirs_h, fd[1]);
	/* Without memory there is no manifest: all zero, which no import records as a digest. */
	memset(ret, 0, STORE_MANIFEST_LEN);
	if (crypto_hash_new(&m) < 0)
		return;
	crypto_hash_update(m, head, at);
	crypto_hash_update(m, fd, sizeof(fd));
	crypto_hash_final(m, ret);
	crypto_hash_free(m);
}

/* Where each inode hangs: its parent and its name, from the version's directory entries. */
struct place {
	uint64_t parent;    /* 0: not seen (the root has none) */
	uint32_t name_off;  /* into names */
	uint8_t nlen;
	uint8_t type;
};

#define MANIFEST_INODES_MAX (1ull << 28)

int store_manifest_compute(struct store *st, uint64_t dsid, uint32_t version,
			   uint8_t ret[static STORE_MANIFEST_LEN])
{
	return store_version_scan(st, dsid, version, NULL, NULL, ret);
}

static int version_scan(struct store *st, uint64_t dsid, uint32_t version,
			int (*fn)(void *ctx, const struct store_inode *file),
			int (*fn_named)(void *ctx, const struct store_inode *file, uint64_t parent,
					const char *name, size_t nlen),
			void *ctx, uint8_t ret[static STORE_MANIFEST_LEN]);

int store_version_scan(struct store *st, uint64_t dsid, uint32_t version,
		       int (*fn)(void *ctx, const struct store_inode *file), void *ctx,
		       uint8_t ret[static STORE_MANIFEST_LEN])
{
	return version_scan(st, dsid, version, fn, NULL, ctx, ret);
}

int store_version_scan_named(struct store *st, uint64_t dsid, uint32_t version,
			     int (*fn)(void *ctx, const struct store_inode *file, uint64_t parent,
				       const char *name, size_t nlen),
			     void *ctx, uint8_t ret[static STORE_MANIFEST_LEN])
{
	return version_scan(st, dsid, version, NULL, fn, ctx, ret);
}

static int version_scan(struct store *st, uint64_t dsid, uint32_t version,
			int (*fn)(void *ctx, const struct store_inode *file),
			int (*fn_named)(void *ctx, const struct store_inode *file, uint64_t parent,
					const char *name, size_t nlen),
			void *ctx, uint8_t ret[static STORE_MANIFEST_LEN])
{
	struct store_dataset_info di;
	struct dataset_rec rec;
	struct version_rec vr;
	struct place *pl = NULL;
	struct buf names;
	crypto_hasher *hf = NULL, *hd = NULL;
	crypto_mac_key *name_mk = NULL;
	rocksdb_iterator_t *it = NULL;
	struct ds_keys k = { 0 };
	uint8_t lo[VKEY_LEN];
	uint64_t total, seen = 0;
	int r;

	buf_init(&names, 1u << 30);
	r = dataset_rec_by_id(st, dsid, &rec);
	if (r < 0)
		return r;
	di = rec.info;
	if (st->format < STORE_FORMAT_VERSION)
		r = store_dataset_keys(st, dsid, &rec, &k);
	r = r ?: version_get_any(st, dsid, version, &vr);
	r = r ?: store_version_keys(st, dsid, version, &k);
	if (r < 0)
		return r;
	total = vr.info.files + vr.info.dirs;
	if (total == 0 || total > MANIFEST_INODES_MAX) {
		store_keys_put(st, &k);
		return store_integrity(st, dsid, version, "version %u of dataset %llu counts %llu "
				       "inodes", version, (unsigned long long)dsid,
				       (unsigned long long)total);
	}
	pl = calloc(total + 1, sizeof(*pl));
	if (!pl || crypto_hash_new(&hf) < 0 || crypto_hash_new(&hd) < 0) {
		r = -ENOMEM;
		goto out;
	}
	/* Every entry's key is checked against its name: one compression each (crypto_mac()). */
	r = k.name ? crypto_mac_key_new(k.name, CRYPTO_NAME_HASH_LEN, &name_mk) : 0;
	if (r < 0)
		goto out;
	k.name_mk = name_mk;
	/* 1. Every entry: where its inode hangs. */
	vkey(lo, dsid, version);
	it = index_iter(&st->ix, CF_DIRENTS);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		struct dirent_rec d;
		size_t kl, vl;
		const uint8_t *ik = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl < VKEY_LEN || memcmp(ik, lo, VKEY_LEN) != 0)
			break;
		r = dirent_unseal(st, &k, dsid, version, ik, kl, v, vl, &d);
		if (r == 0 && (d.ino < 2 || d.ino > total || pl[d.ino].parent))
			r = store_integrity(st, dsid, version, "inode %llu of version %u of dataset "
					    "%llu is named by more than one entry, or is out of range",
					    (unsigned long long)d.ino, version,
					    (unsigned long long)dsid);
		if (r == 0) {
			pl[d.ino] = (struct place){ .parent = get_be64(ik + VKEY_LEN),
						    .name_off = (uint32_t)names.len,
						    .nlen = (uint8_t)strlen(d.name),
						    .type = (uint8_t)d.type };
			r = buf_append(&names, d.name, strlen(d.name));
		}
		if (r < 0)
			break;
	}
	r = index_iter_close(&st->ix, it, r, "scan of directory entries");
	it = NULL;
	if (r < 0)
		goto out;
	/* 2. Every inode, in ascending number: a leaf each. */
	it = index_iter(&st->ix, CF_INODES);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		uint8_t pt[REC_PLAIN_MAX];
		struct store_inode in;
		size_t kl, vl, plen = 0;
		const uint8_t *ik = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		uint64_t ino;

		if (kl < VKEY_LEN || memcmp(ik, lo, VKEY_LEN) != 0)
			break;
		ino = kl == IKEY_LEN ? get_be64(ik + VKEY_LEN) : 0;
		if (ino == 0 || ino > total ||
		    index_unseal(k.seal, CF_INODES, ik, kl, 0, v, vl, pt, sizeof(pt), &plen) < 0 ||
		    inode_decode(ino, pt, plen, &in, NULL) < 0 ||
		    (ino != STORE_ROOT_INO && (!pl[ino].parent || pl[ino].type != in.type))) {
			r = store_integrity(st, dsid, version, "inode %llu of version %u of dataset "
					    "%llu does not authenticate or has no entry",
					    (unsigned long long)ino, version,
					    (unsigned long long)dsid);
			break;
		}
		in.version = version;   /* as inode_get_k() gives it: where its key is wrapped */
		manifest_leaf(in.type == STORE_INODE_FILE ? hf : hd, ino, pl[ino].parent,
			      (const char *)names.data + pl[ino].name_off, pl[ino].nlen, pt, plen);
		seen++;
		if (fn && in.type == STORE_INODE_FILE) {
			r = fn(ctx, &in);
			if (r != 0)
				break;
		} else if (fn_named && in.type == STORE_INODE_FILE) {
			r = fn_named(ctx, &in, pl[ino].parent,
				     (const char *)names.data + pl[ino].name_off, pl[ino].nlen);
			if (r != 0)
				break;
		}
	}
	r = index_iter_close(&st->ix, it, r, "scan of inodes");
	it = NULL;
	if (r == 0 && seen != total)
		r = store_integrity(st, dsid, version, "version %u of dataset %llu has %llu inodes, "
				    "its record says %llu", version, (unsigned long long)dsid,
				    (unsigned long long)seen, (unsigned long long)total);
	if (r == 0)
		manifest_finish(di.name, dsid, version, vr.info.files, vr.info.dirs, vr.info.bytes,
				hf, hd, ret);
out:
	crypto_hash_free(hf);
	crypto_hash_free(hd);
	crypto_mac_key_free(name_mk);
	store_keys_put(st, &k);
	free(pl);
	buf_free(&names);
	return r;
}

/* ---- Policy records and their key (docs/FORMAT.md 3.7 and 6.8) --------------------------------
 *
 * The policy records are sealed under the policy key of the generation the index meta record
 * META_POLICY_GEN names: generation 0 (no record) is Ks, the store-wide index seal key every node
 * holds; generation G >= 1 is the key ring's POLICY entry (0, G). A node removal rotates it
 * (store_policy_rekey): a removed node keeps the keys it was given, and the new generation is
 * sealed only to the nodes still enrolled, so it reads no policy record written after. */

/* The generation the policy records are sealed under now (0: Ks). */
static int policy_gen(struct store *st, uint64_t *ret)
{
	int r = meta_get_u64(st, META_POLICY_GEN, ret);

	if (r == -ENOENT) {
		*ret = 0;
		r = 0;
	}
	return r;
}

/* A copy of the key of generation gen (owned by the caller): the ring is replaced under st->lock
 * by a node's new bundle, so nothing borrowed from it is kept past the lock. */
static int policy_key_of(struct store *st, uint64_t gen, crypto_key **ret)
{
	const crypto_key *k = NULL;
	int r;

	if (gen == 0)
		return crypto_key_from_bytes(crypto_key_bytes(st->ix_seal), ret);
	if (gen > UINT32_MAX)
		return store_integrity(st, 0, 0, "the policy key generation is malformed");
	pthread_mutex_lock(&st->lock);
	r = st->ring ? keyring_get(st->ring, KEYRING_POLICY, 0, (uint32_t)gen, &k) : -ENOENT;
	if (r == 0)
		r = crypto_key_from_bytes(crypto_key_bytes(k), ret);
	pthread_mutex_unlock(&st->lock);
	if (r == -ENOENT)
		return err_set(-ENOKEY, "the policy records are sealed under policy key generation "
			       "%llu, which %s", (unsigned long long)gen, st->secondary ?
			       "this node was not given (it was removed, or its key bundle lags)" :
			       "the key ring does not hold (keys/ring put back from a copy?)");
	return r;
}

/* The key the policy records are sealed under now, a copy. */
static int policy_key(struct store *st, crypto_key **ret)
{
	uint64_t gen = 0;
	int r = policy_gen(st, &gen);

	return r < 0 ? r : policy_key_of(st, gen, ret);
}

uint64_t store_policy_generation(struct store *st)
{
	uint64_t gen = 0;

	return policy_gen(st, &gen) < 0 ? 0 : gen;
}

/* The newest POLICY entry of the ring (0: none) and how many there are. st->lock held. */
struct policy_entries {
	uint32_t newest;
	size_t n;
};

static int policy_entry_one(void *ctx, enum keyring_kind kind, uint64_t dsid, uint32_t version,
			    const crypto_key *key)
{
	struct policy_entries *pe = ctx;

	(void)dsid;
	(void)key;
	if (kind == KEYRING_POLICY) {
		pe->newest = MAX(pe->newest, version);
		pe->n++;
	}
	return 0;
}

/* Every policy record unsealed under from and sealed under to, into wb. */
static int policy_reseal(struct store *st, const crypto_key *from, const crypto_key *to,
			 rocksdb_writebatch_t *wb)
{
	rocksdb_iterator_t *it;
	uint8_t *pt = malloc(STORE_POLICY_VALUE_MAX);
	struct buf sealed;
	int r = 0;

	if (!pt)
		return -ENOMEM;
	buf_init(&sealed, STORE_POLICY_VALUE_MAX + CRYPTO_SEAL_OVERHEAD);
	it = index_iter(&st->ix, CF_POLICY);
	for (rocksdb_iter_seek_to_first(it); r == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl, pl = 0;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl == 0 || kl > STORE_POLICY_KEY_MAX ||
		    index_unseal(from, CF_POLICY, k, kl, 0, v, vl, pt, STORE_POLICY_VALUE_MAX,
				 &pl) < 0 || pl == 0) {
			r = store_integrity(st, 0, 0, "a policy record (key of %zu bytes, first byte "
					    "0x%02x) does not authenticate", kl,
					    kl ? (unsigned)(uint8_t)k[0] : 0u);
			break;
		}
		buf_reset(&sealed);
		r = index_seal(to, CF_POLICY, k, kl, NULL, 0, pt, pl, &sealed);
		if (r == 0)
			rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_POLICY], k, kl,
						  (const char *)sealed.data, sealed.len);
	}
	r = index_iter_close(&st->ix, it, r, "scan of policy records");
	explicit_bzero(pt, STORE_POLICY_VALUE_MAX);
	free(pt);
	buf_free(&sealed);
	return r;
}

/* A dataset's record keys at record key generations from and to (owned by the caller), for the
 * rotation. -ENOENT: the ring has no key for the dataset. */
struct rec_pair {
	uint64_t dsid;          /* 0: none held */
	crypto_key *from, *to;
};

static void rec_pair_clear(struct rec_pair *p)
{
	crypto_key_free(p->from);
	crypto_key_free(p->to);
	*p = (struct rec_pair){ 0 };
}

static int rec_pair_get(struct store *st, uint64_t dsid, uint64_t from, uint64_t to,
			struct rec_pair *p)
{
	const crypto_key *kd = NULL;
	int r;

	if (p->dsid == dsid && dsid)
		return 0;
	rec_pair_clear(p);
	pthread_mutex_lock(&st->lock);
	r = keyring_get(st->ring, KEYRING_DATASET, dsid, 0, &kd);
	if (r == 0)
		r = rec_seal_locked(st, from, kd, &p->from);
	if (r == 0)
		r = rec_seal_locked(st, to, kd, &p->to);
	pthread_mutex_unlock(&st->lock);
	if (r == 0)
		p->dsid = dsid;
	else
		rec_pair_clear(p);
	return r;
}

/* Every dataset record re-keyed, into wb: unsealed under its record key at generation from,
 * stored under its name hashed with kn_to, sealed under its record key at to. */
static int datasets_rekey(struct store *st, uint64_t from, uint64_t to, const crypto_key *kn_to,
			  rocksdb_writebatch_t *wb)
{
	rocksdb_iterator_t *it = index_iter(&st->ix, CF_DATASETS);
	struct rec_pair kp = { 0 };
	struct buf out, sealed;
	int r = 0;

	buf_init(&out, 4096);
	buf_init(&sealed, 4096);
	for (rocksdb_iter_seek_to_first(it); r == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		uint8_t pt[REC_PLAIN_MAX], nk[DSKEY_LEN];
		struct dataset_rec rec;
		size_t kl, vl, pl = 0;
		const char *k = rocksdb_iter_key(it, &kl);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);

		if (kl != DSKEY_LEN || vl < 8 + CRYPTO_SEAL_OVERHEAD || get_be64(v) == 0) {
			r = store_integrity(st, 0, 0, "a dataset record is malformed");
			break;
		}
		r = rec_pair_get(st, get_be64(v), from, to, &kp);
		if (r == -ENOENT)
			r = store_integrity(st, get_be64(v), 0, "dataset %llu has a record but no "
					    "key in the key ring",
					    (unsigned long long)get_be64(v));
		if (r == 0 && (index_unseal(kp.from, CF_DATASETS, k, kl, 8, v, vl, pt, sizeof(pt),
					    &pl) < 0 || dataset_rec_decode(NULL, pt, pl, &rec) < 0 ||
			       rec.info.id != get_be64(v)))
			r = store_integrity(st, get_be64(v), 0, "a dataset record does not "
					    "authenticate");
		explicit_bzero(pt, sizeof(pt));
		if (r < 0)
			break;
		dskey_hash(kn_to, rec.info.name, nk);
		buf_reset(&out);
		buf_reset(&sealed);
		r = dataset_rec_encode_v3(&rec, &out);
		if (r == 0)
			r = index_seal(kp.to, CF_DATASETS, nk, sizeof(nk), v, 8, out.data, out.len,
				       &sealed);
		if (r == 0) {
			rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_DATASETS], k, kl);
			rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_DATASETS], (const char *)nk,
						  sizeof(nk), (const char *)sealed.data,
						  sealed.len);
		}
		explicit_bzero(&rec, sizeof(rec));
	}
	r = index_iter_close(&st->ix, it, r, "scan of datasets");
	rec_pair_clear(&kp);
	if (out.data)
		explicit_bzero(out.data, out.cap);
	buf_free(&out);
	buf_free(&sealed);
	return r;
}

/* Every erased version's tombstone sealed again, into wb: from its dataset's record key at
 * generation from to the one at to. */
static int tombstones_rekey(struct store *st, uint64_t from, uint64_t to,
			    rocksdb_writebatch_t *wb)
{
	rocksdb_iterator_t *it = index_iter(&st->ix, CF_VERSIONS);
	struct rec_pair kp = { 0 };
	struct buf sealed;
	int r = 0;

	buf_init(&sealed, 4096);
	for (rocksdb_iter_seek_to_first(it); r == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		uint8_t pt[REC_PLAIN_MAX];
		uint32_t state = 0;
		size_t kl, vl, pl = 0;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);

		if (kl != VKEY_LEN || version_value_state(v, vl, &state) < 0) {
			r = store_integrity(st, 0, 0, "a version record is malformed");
			break;
		}
		if (state != VERSION_ERASED)
			continue;
		r = rec_pair_get(st, get_be64(k), from, to, &kp);
		if (r == -ENOENT)
			r = store_integrity(st, get_be64(k), get_be32(k + 8), "an erased version of "
					    "dataset %llu has no dataset key in the key ring",
					    (unsigned long long)get_be64(k));
		if (r == 0 && index_unseal(kp.from, CF_VERSIONS, k, kl, 1, v, vl, pt, sizeof(pt),
					   &pl) < 0)
			r = store_integrity(st, get_be64(k), get_be32(k + 8), "the tombstone of "
					    "version %u of dataset %llu does not authenticate",
					    get_be32(k + 8), (unsigned long long)get_be64(k));
		buf_reset(&sealed);
		if (r == 0)
			r = index_seal(kp.to, CF_VERSIONS, k, kl, v, 1, pt, pl, &sealed);
		if (r == 0)
			rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_VERSIONS], (const char *)k, kl,
						  (const char *)sealed.data, sealed.len);
		explicit_bzero(pt, sizeof(pt));
	}
	r = index_iter_close(&st->ix, it, r, "scan of versions");
	rec_pair_clear(&kp);
	buf_free(&sealed);
	return r;
}

/* Every move record sealed again, into wb, from the key from to the key to. */
static int moves_rekey(struct store *st, const crypto_key *from, const crypto_key *to,
		       rocksdb_writebatch_t *wb)
{
	rocksdb_iterator_t *it = index_iter(&st->ix, CF_META);
	struct buf sealed;
	int r = 0;

	buf_init(&sealed, 4096);
	for (rocksdb_iter_seek(it, "move/", 5); r == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		uint8_t pt[MOVE_PLAIN_LEN];
		size_t kl, vl, pl = 0;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl < 5 || memcmp(k, "move/", 5) != 0)
			break;
		if (kl != MOVEKEY_LEN ||
		    index_unseal(from, CF_META, k, kl, 0, v, vl, pt, sizeof(pt), &pl) < 0 ||
		    pl != MOVE_PLAIN_LEN || pt[0] != 1) {
			r = store_integrity(st, 0, 0, "a move record does not authenticate");
			break;
		}
		buf_reset(&sealed);
		r = index_seal(to, CF_META, k, kl, NULL, 0, pt, pl, &sealed);
		if (r == 0)
			rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], k, kl,
						  (const char *)sealed.data, sealed.len);
	}
	r = index_iter_close(&st->ix, it, r, "scan of move records");
	buf_free(&sealed);
	return r;
}

/* Step 2 of a rotation to generation to, in one synchronous batch: every policy record from the
 * key of generation pgen to the new one; every dataset name and record, tombstone and move record
 * from record key generation rgen to the new one; meta policy_key and record_key = to. The index
 * holds everything under the old keys or everything under the new, never a mix. rekey_lock held
 * exclusively; the cached keys follow the batch. */
static int rotation_batch(struct store *st, uint64_t pgen, uint64_t to)
{
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	crypto_key *pfrom = NULL, *pto = NULL, *kn_to = NULL, *mfrom = NULL, *mto = NULL;
	const crypto_key *kr = NULL;
	uint64_t rgen = 0;
	uint8_t g[8];
	int r = record_gen(st, &rgen);

	if (r == 0)
		r = policy_key_of(st, pgen, &pfrom);
	if (r == 0)
		r = policy_key_of(st, to, &pto);
	if (r == 0) {
		pthread_mutex_lock(&st->lock);
		r = keyring_get(st->ring, KEYRING_NAMES, 0, 0, &kr);
		if (r == 0)
			r = names_key_locked(st, to, kr, &kn_to);
		if (r == 0)
			r = move_key_locked(st, rgen, &mfrom);
		if (r == 0)
			r = move_key_locked(st, to, &mto);
		pthread_mutex_unlock(&st->lock);
		if (r < 0)
			r = err_set(r == -ENOENT ? -EBADMSG : r, "the key rotation: the key ring lacks "
				    "the name key or the record keys of generation %llu or %llu",
				    (unsigned long long)rgen, (unsigned long long)to);
	}
	if (r == 0)
		r = policy_reseal(st, pfrom, pto, wb);
	if (r == 0)
		r = datasets_rekey(st, rgen, to, kn_to, wb);
	if (r == 0)
		r = tombstones_rekey(st, rgen, to, wb);
	if (r == 0)
		r = moves_rekey(st, mfrom, mto, wb);
	put_le64(g, to);
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_POLICY_GEN, strlen(META_POLICY_GEN),
				  (const char *)g, sizeof(g));
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_RECORD_GEN, strlen(META_RECORD_GEN),
				  (const char *)g, sizeof(g));
	if (r == 0)
		r = index_write(&st->ix, wb, true);
	if (r == 0) {
		pthread_mutex_lock(&st->lock);
		r = record_keys_refresh_locked(st, to);
		pthread_mutex_unlock(&st->lock);
		if (r < 0)
			r = err_set(r, "the key rotation: cannot make the new record keys: %s",
				    strerror(-r));
	}
	rocksdb_writebatch_destroy(wb);
	crypto_key_free(pfrom);
	crypto_key_free(pto);
	crypto_key_free(kn_to);
	crypto_key_free(mfrom);
	crypto_key_free(mto);
	return r;
}

int policy_rekey_steps(struct store *st, unsigned steps)
{
	struct policy_entries pe = { 0 };
	crypto_key *fresh = NULL;
	uint64_t gen = 0;
	bool committed = false;
	int r;

	if (st->secondary)
		return err_set(-EROFS, "a node never writes the store");
	if (!st->ring || !st->master)
		return err_set(-ENOKEY, "the store has no key ring (format %u): upgrade it "
			       "(enclavectl store upgrade)", st->format);
	r = policy_gen(st, &gen);
	if (r < 0)
		return r;
	/* Step 1: the new generation's key into the ring (committed: the intent, and the nodes
	 * still enrolled are given it by the ring hook before any record is sealed under it). A
	 * newer key already there is a rotation a crash interrupted: it is finished, not begun
	 * again. */
	pthread_mutex_lock(&st->lock);
	(void)keyring_foreach(st->ring, policy_entry_one, &pe);
	if (pe.newest <= gen) {
		if (gen >= UINT32_MAX) {
			r = err_set(-EOVERFLOW, "the policy key generation is exhausted");
		} else {
			pe.newest = (uint32_t)gen + 1;
			r = crypto_key_generate(&fresh);
		}
		if (r == 0)
			r = keyring_put(st->ring, KEYRING_POLICY, 0, pe.newest, fresh);
		if (r == 0) {
			r = keyring_commit(st->ring, st->keys_dirfd, st->master);
			if (r < 0)
				keyring_remove(st->ring, KEYRING_POLICY, 0, pe.newest);
			else
				committed = true;
		}
	}
	pthread_mutex_unlock(&st->lock);
	if (committed)
		store_ring_committed(st);
	if (r < 0)
		return err_set(r, "the policy key: cannot write a new one into keys/%s: %s",
			       KEYRING_FILE, strerror(-r));
	if (steps < 2)
		return 0;
	/* Step 2: every record under the new keys, and the meta records naming them, in one
	 * batch, while nobody seals or unseals a record under the record keys. */
	if (gen < pe.newest) {
		bool taken = rekey_wrlock(st);

		r = rotation_batch(st, gen, pe.newest);
		rekey_wrunlock(st, taken);
		if (r < 0)
			return r;
		gen = pe.newest;
	}
	if (steps < 3)
		return 0;
	/* Step 3: the older keys out of the ring. Until this commit a copy of the ring still holds
	 * them; the open finishes it after a crash. */
	return policy_keys_prune(st, gen);
}

int policy_keys_prune(struct store *st, uint64_t gen)
{
	struct policy_entries pe = { 0 };
	bool committed = false;
	int r = 0;

	pthread_mutex_lock(&st->lock);
	(void)keyring_foreach(st->ring, policy_entry_one, &pe);
	/* The record keys' generation is the policy records' once a rotation moved them (never
	 * another at rest); it is kept all the same, as the policy records' is. */
	if (pe.n > (gen ? 1u : 0u) + (st->rgen && st->rgen != gen ? 1u : 0u)) {
		for (uint32_t v = 1; v <= pe.newest; v++)
			if (v != gen && v != st->rgen)
				keyring_remove(st->ring, KEYRING_POLICY, 0, v);
		r = keyring_commit(st->ring, st->keys_dirfd, st->master);
		committed = r == 0;
	}
	pthread_mutex_unlock(&st->lock);
	if (committed)
		store_ring_committed(st);
	return r < 0 ? err_set(r, "the key ring: cannot drop the old policy key: %s",
			       strerror(-r)) : 0;
}

int store_policy_rekey(struct store *st)
{
	return policy_rekey_steps(st, 3);
}

int store_policy_rekey_begin(struct store *st)
{
	return policy_rekey_steps(st, 1);
}

/* At the primary's open: finish a rotation a crash interrupted. The ring holds a key newer than
 * the index names: the records were not yet resealed (step 2 again); or it holds older ones
 * besides the one in use (step 3 again). */
int policy_rekey_recover(struct store *st)
{
	struct policy_entries pe = { 0 };
	uint64_t gen = 0;
	crypto_key *k = NULL;
	int r;

	if (!st->ring || !st->master || st->secondary)
		return 0;
	r = policy_gen(st, &gen);
	if (r < 0)
		return r;
	pthread_mutex_lock(&st->lock);
	(void)keyring_foreach(st->ring, policy_entry_one, &pe);
	pthread_mutex_unlock(&st->lock);
	r = policy_key_of(st, gen, &k);
	crypto_key_free(k);
	if (r < 0)
		return r;
	if (pe.newest > gen)
		return policy_rekey_steps(st, 3);
	if (pe.n > (gen ? 1u : 0u))
		return policy_keys_prune(st, gen);
	return 0;
}

int store_policy_put(struct store *st, const void *key, size_t klen, const void *val, size_t vlen)
{
	rocksdb_writebatch_t *wb;
	crypto_key *pk = NULL;
	struct buf sealed;
	int r;

	if (st->secondary)
		return err_set(-EROFS, "a node never writes the store");
	if (klen == 0 || klen > STORE_POLICY_KEY_MAX || vlen == 0 || vlen > STORE_POLICY_VALUE_MAX)
		return err_set(-EINVAL, "policy record: key of %zu or value of %zu bytes", klen,
			       vlen);
	r = policy_key(st, &pk);
	if (r < 0)
		return r;
	buf_init(&sealed, STORE_POLICY_VALUE_MAX + CRYPTO_SEAL_OVERHEAD);
	r = index_seal(pk, CF_POLICY, key, klen, NULL, 0, val, vlen, &sealed);
	crypto_key_free(pk);
	if (r < 0) {
		buf_free(&sealed);
		return err_set(r, "policy record: cannot seal: %s", strerror(-r));
	}
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_POLICY], key, klen, (const char *)sealed.data,
				  sealed.len);
	r = index_write(&st->ix, wb, true);
	rocksdb_writebatch_destroy(wb);
	buf_free(&sealed);
	return r;
}

int store_policy_replace_all(struct store *st, const struct store_policy_kv *kv, size_t n)
{
	rocksdb_iterator_t *it;
	rocksdb_writebatch_t *wb;
	crypto_key *pk = NULL;
	struct buf sealed;
	int r = 0;

	if (st->secondary)
		return err_set(-EROFS, "a node never writes the store");
	for (size_t i = 0; i < n; i++)
		if (kv[i].klen == 0 || kv[i].klen > STORE_POLICY_KEY_MAX || kv[i].vlen == 0 ||
		    kv[i].vlen > STORE_POLICY_VALUE_MAX)
			return err_set(-EINVAL, "policy record %zu: key of %zu or value of %zu bytes",
				       i, kv[i].klen, kv[i].vlen);
	r = policy_key(st, &pk);
	if (r < 0)
		return r;
	wb = rocksdb_writebatch_create();
	it = index_iter(&st->ix, CF_POLICY);
	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl;
		const char *k = rocksdb_iter_key(it, &kl);

		rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_POLICY], k, kl);
	}
	r = index_iter_close(&st->ix, it, 0, "scan of policy records");
	/* Sealed as store_policy_put() seals them (docs/FORMAT.md §6.8). */
	buf_init(&sealed, STORE_POLICY_VALUE_MAX + CRYPTO_SEAL_OVERHEAD);
	for (size_t i = 0; r == 0 && i < n; i++) {
		buf_reset(&sealed);
		r = index_seal(pk, CF_POLICY, kv[i].key, kv[i].klen, NULL, 0, kv[i].val,
			       kv[i].vlen, &sealed);
		if (r < 0)
			r = err_set(r, "policy record: cannot seal: %s", strerror(-r));
		else
			rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_POLICY], kv[i].key, kv[i].klen,
						  (const char *)sealed.data, sealed.len);
	}
	if (r == 0)
		r = index_write(&st->ix, wb, true);
	rocksdb_writebatch_destroy(wb);
	buf_free(&sealed);
	crypto_key_free(pk);
	return r;
}

int store_policy_foreach(struct store *st,
			 int (*fn)(void *ctx, const void *key, size_t klen, const void *val,
				   size_t vlen),
			 void *ctx)
{
	rocksdb_iterator_t *it;
	crypto_key *pk = NULL;
	uint8_t *pt;
	int r = policy_key(st, &pk);

	if (r < 0)
		return r;
	pt = malloc(STORE_POLICY_VALUE_MAX);
	if (!pt) {
		crypto_key_free(pk);
		return -ENOMEM;
	}
	it = index_iter(&st->ix, CF_POLICY);
	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl, vl, pl = 0;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		/* Sealed under the store's policy key, bound to its key: a record written by
		 * anyone else, or moved to another key, does not open. */
		if (kl == 0 || kl > STORE_POLICY_KEY_MAX ||
		    index_unseal(pk, CF_POLICY, k, kl, 0, v, vl, pt, STORE_POLICY_VALUE_MAX,
				 &pl) < 0 || pl == 0) {
			r = store_integrity(st, 0, 0, "a policy record (key of %zu bytes, first byte "
					    "0x%02x) does not authenticate", kl,
					    kl ? (unsigned)(uint8_t)k[0] : 0u);
			break;
		}
		r = fn(ctx, k, kl, pt, pl);
		if (r != 0)
			break;
	}
	explicit_bzero(pt, STORE_POLICY_VALUE_MAX);
	free(pt);
	crypto_key_free(pk);
	return index_iter_close(&st->ix, it, r, "scan of policy records");
}
