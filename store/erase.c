/* erase: crypto-shredding of a version or a whole dataset (docs/FORMAT.md 3.7, 3.8).
 *
 * A version is erased by deleting its records (leaving a tombstone under the dataset's record
 * key, so versions 1..latest stay accounted for), then removing its key from the key ring,
 * which is rewritten under a fresh file key: from then on nothing of it decrypts with the
 * store's keys, in the live store or in any copy of packs/ and index/. A whole dataset also loses
 * its record and its dataset key, and the store's name key is replaced, every other dataset's
 * record being re-keyed under the new one in the same index batch, so that not even a guess of
 * its name can be confirmed against an older copy of the index.
 *
 * Crash safety: meta "erase" names the erasure from its first index batch, with what it erases
 * (the versions' manifests and the ids of the keys to destroy), until the caller has recorded it
 * (store_erase_recorded()): phase 1 while the keys still exist, phase 2 once the ring no longer
 * holds them. store_open() finishes a phase 1 erasure it finds (store_erase_recover()); a phase 2
 * one is left for the daemon to record (store_erase_unrecorded()), so that an erasure whose
 * record a crash prevented is completed in the log rather than lost from it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define ERASE_MARK_LEGACY_LEN 12   /* be64 dataset id || be32 version (0: the whole dataset) */
/* The marker: be64 dataset id || be32 version || u8 phase || 3 x 0 || be32 n ||
 * n x (be32 version || manifest) || be32 k || k x key id (16 bytes). */
#define ERASE_MARK_HEAD 16
#define ERASE_MARK_MAX (ERASE_MARK_HEAD + 4 + STORE_ERASE_VERSIONS_MAX * (4 + STORE_MANIFEST_LEN) + \
			4 + (STORE_ERASE_VERSIONS_MAX + 2) * 16)
#define ERASE_PHASE_KEYS 1        /* records deleted; the keys still in the ring */
#define ERASE_PHASE_UNRECORDED 2  /* keys destroyed; the caller has not recorded it yet */

/* e's marker at phase into *ret (malloc'd). */
static int marker_encode(const struct store_erasure *e, uint8_t phase, uint8_t **ret,
			 size_t *ret_len)
{
	size_t n = ERASE_MARK_HEAD + 4 + e->nversions * (4 + STORE_MANIFEST_LEN) + 4 +
		   e->nkeys * 16, o = 0;
	uint8_t *m;

	if (e->nversions > STORE_ERASE_VERSIONS_MAX || e->nkeys > STORE_ERASE_VERSIONS_MAX + 2)
		return err_set(-E2BIG, "an erasure of more than %u versions",
			       STORE_ERASE_VERSIONS_MAX);
	m = calloc(1, n);
	if (!m)
		return -ENOMEM;
	put_be64(m, e->dataset_id);
	put_be32(m + 8, e->version);
	m[12] = phase;
	o = ERASE_MARK_HEAD;
	put_be32(m + o, (uint32_t)e->nversions);
	o += 4;
	for (size_t i = 0; i < e->nversions; i++) {
		put_be32(m + o, e->versions[i].version);
		memcpy(m + o + 4, e->versions[i].manifest, STORE_MANIFEST_LEN);
		o += 4 + STORE_MANIFEST_LEN;
	}
	put_be32(m + o, (uint32_t)e->nkeys);
	o += 4;
	for (size_t i = 0; i < e->nkeys; i++, o += 16)
		memcpy(m + o, e->key_ids[i], 16);
	*ret = m;
	*ret_len = n;
	return 0;
}

/* Parse marker m (not the legacy form) into *ret (owned arrays) and its phase. */
static int marker_decode(const uint8_t *m, size_t n, struct store_erasure *ret, uint8_t *ret_phase)
{
	struct store_erasure e = { 0 };
	size_t o = ERASE_MARK_HEAD, nv, nk;

	if (n < ERASE_MARK_HEAD + 8 || n > ERASE_MARK_MAX || get_be64(m) == 0 ||
	    (m[12] != ERASE_PHASE_KEYS && m[12] != ERASE_PHASE_UNRECORDED) || m[13] || m[14] ||
	    m[15])
		goto bad;
	nv = get_be32(m + o);
	o += 4;
	if (nv > STORE_ERASE_VERSIONS_MAX || n - o < nv * (4 + STORE_MANIFEST_LEN) + 4)
		goto bad;
	e.dataset_id = get_be64(m);
	e.version = get_be32(m + 8);
	e.versions = calloc(nv + 1, sizeof(*e.versions));
	if (!e.versions)
		return -ENOMEM;
	for (size_t i = 0; i < nv; i++, o += 4 + STORE_MANIFEST_LEN) {
		e.versions[i].version = get_be32(m + o);
		memcpy(e.versions[i].manifest, m + o + 4, STORE_MANIFEST_LEN);
	}
	e.nversions = nv;
	nk = get_be32(m + o);
	o += 4;
	if (nk > STORE_ERASE_VERSIONS_MAX + 2 || n - o != nk * 16) {
		store_erasure_free(&e);
		goto bad;
	}
	e.key_ids = calloc(nk + 1, sizeof(*e.key_ids));
	if (!e.key_ids) {
		store_erasure_free(&e);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nk; i++, o += 16)
		memcpy(e.key_ids[i], m + o, 16);
	e.nkeys = nk;
	*ret_phase = m[12];
	*ret = e;
	return 0;
bad:
	return err_set(-EBADMSG, "index: malformed erasure marker");
}

static void write_marker(rocksdb_writebatch_t *wb, struct store *st, const uint8_t *m, size_t n)
{
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_ERASE, strlen(META_ERASE),
				  (const char *)m, n);
}

/* Rewrite RocksDB's files so that the erased values are in no live SST file or WAL: flush every
 * memtable (the WAL holding the import's writes becomes obsolete and is deleted), then compact
 * the erased key ranges down to the bottom level, where deleted keys are dropped. */
static int purge(struct store *st, uint64_t dsid, uint32_t ver)
{
	rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
	rocksdb_compactoptions_t *co = rocksdb_compactoptions_create();
	uint8_t lo[VKEY_LEN], hi[VKEY_LEN];
	char *err = NULL;
	int r = 0;

	vkey(lo, dsid, ver);
	if (ver == 0 || ver == UINT32_MAX)
		vkey(hi, dsid + 1, 0);
	else
		vkey(hi, dsid, ver + 1);
	rocksdb_flushoptions_set_wait(fo, 1);
	for (int cf = CF_META; cf < CF_COUNT && !err; cf++)
		rocksdb_flush_cf(st->ix.db, fo, st->ix.cf[cf], &err);
	if (err) {
		r = err_set(-EIO, "index: flush after the erasure failed: %s", err);
		free(err);
		goto out;
	}
	rocksdb_compactoptions_set_exclusive_manual_compaction(co, 1);
	rocksdb_compactoptions_set_bottommost_level_compaction(co, 2 /* kForce */);
	rocksdb_compact_range_cf_opt(st->ix.db, st->ix.cf[CF_INODES], co, (const char *)lo,
				     sizeof(lo), (const char *)hi, sizeof(hi));
	rocksdb_compact_range_cf_opt(st->ix.db, st->ix.cf[CF_DIRENTS], co, (const char *)lo,
				     sizeof(lo), (const char *)hi, sizeof(hi));
	rocksdb_compact_range_cf_opt(st->ix.db, st->ix.cf[CF_VERSIONS], co, (const char *)lo,
				     sizeof(lo), (const char *)hi, sizeof(hi));
	/* Small: the datasets (re-keyed by a whole-dataset erasure) and meta. */
	rocksdb_compact_range_cf_opt(st->ix.db, st->ix.cf[CF_DATASETS], co, NULL, 0, NULL, 0);
	rocksdb_compact_range_cf_opt(st->ix.db, st->ix.cf[CF_META], co, NULL, 0, NULL, 0);
out:
	rocksdb_flushoptions_destroy(fo);
	rocksdb_compactoptions_destroy(co);
	return r;
}

/* Collect the version numbers the ring holds keys for in dataset dsid. */
struct ring_versions {
	uint64_t dsid;
	uint32_t *v;
	size_t n, cap;
};

static int collect_versions(void *ctx, enum keyring_kind kind, uint64_t dsid, uint32_t version,
			    const crypto_key *key)
{
	struct ring_versions *rv = ctx;

	(void)key;
	if (kind != KEYRING_VERSION || dsid != rv->dsid)
		return 0;
	if (rv->n == rv->cap) {
		size_t cap = rv->cap ? rv->cap * 2 : 16;
		uint32_t *a = reallocarray(rv->v, cap, sizeof(*a));

		if (!a)
			return -ENOMEM;
		rv->v = a;
		rv->cap = cap;
	}
	rv->v[rv->n++] = version;
	return 0;
}

/* The versions whose keys erasing (dsid, ver) destroys: ver, or every version key the ring
 * holds for dsid. Under st->lock. */
static int erased_versions_locked(struct store *st, uint64_t dsid, uint32_t ver,
				  struct ring_versions *rv)
{
	*rv = (struct ring_versions){ .dsid = dsid };
	if (!ver)
		return keyring_foreach(st->ring, collect_versions, rv);
	rv->v = malloc(sizeof(*rv->v));
	if (!rv->v)
		return -ENOMEM;
	rv->v[rv->n++] = ver;
	return 0;
}

/* The ids of the keys erasing (dsid, ver) destroys, into e->key_ids: the version keys, and for a
 * whole dataset its dataset key and the name key that names-next replaces. Under st->lock,
 * before anything is destroyed. */
static int erasure_key_ids_locked(struct store *st, uint64_t dsid, uint32_t ver,
				  struct store_erasure *e)
{
	struct ring_versions rv;
	const crypto_key *k = NULL;
	int r = erased_versions_locked(st, dsid, ver, &rv);

	if (r == 0) {
		e->key_ids = calloc(rv.n + 2, sizeof(*e->key_ids));
		if (!e->key_ids)
			r = -ENOMEM;
	}
	for (size_t i = 0; r == 0 && i < rv.n; i++)
		if (keyring_get(st->ring, KEYRING_VERSION, dsid, rv.v[i], &k) == 0)
			keyring_key_id(k, e->key_ids[e->nkeys++]);
	if (r == 0 && !ver) {
		if (keyring_get(st->ring, KEYRING_DATASET, dsid, 0, &k) == 0)
			keyring_key_id(k, e->key_ids[e->nkeys++]);
		if (keyring_get(st->ring, KEYRING_NAMES_NEXT, 0, 0, &k) == 0 &&
		    keyring_get(st->ring, KEYRING_NAMES, 0, 0, &k) == 0)
			keyring_key_id(k, e->key_ids[e->nkeys++]);
	}
	free(rv.v);
	return r;
}

/* ix_name becomes kn (taken). With st->lock held (and names_lock exclusively, or no reader yet). */
static void names_key_switch_locked(struct store *st, crypto_key *kn)
{
	/* A lookup running now may hold the old name key: it is freed at close. */
	if (st->nretired < ARRAY_SIZE(st->retired))
		st->retired[st->nretired++] = st->ix_name;
	else
		crypto_key_free(st->ix_name);
	st->ix_name = kn;
}

/* Remove the erased keys from the ring in memory (the names key replaced when a whole dataset
 * goes; ix_name switched to it unless names_switched, as store_erase() does at its batch), write
 * it, and finish: the marker becomes `after` (phase 2: the caller records the
 * erasure, then store_erase_recorded()), or goes when after is NULL (a legacy marker), and the
 * ring's generation is recorded; then the files are purged. With the new ring's generation and
 * digest into e when e is not NULL. */
static int ring_destroy_and_finish(struct store *st, uint64_t dsid, uint32_t ver,
				   bool names_switched, const uint8_t *after, size_t after_len,
				   struct store_erasure *e)
{
	struct ring_versions rv = { .dsid = dsid };
	rocksdb_writebatch_t *wb = NULL;
	const crypto_key *k = NULL;
	crypto_key *next = NULL, *kn = NULL;
	uint8_t g[8];
	int r;

	pthread_mutex_lock(&st->lock);
	r = erased_versions_locked(st, dsid, ver, &rv);
	for (size_t i = 0; r == 0 && i < rv.n; i++)
		keyring_remove(st->ring, KEYRING_VERSION, dsid, rv.v[i]);
	if (r == 0 && !ver) {
		keyring_remove(st->ring, KEYRING_DATASET, dsid, 0);
		/* The name key the index was re-keyed to replaces the old one. */
		if (keyring_get(st->ring, KEYRING_NAMES_NEXT, 0, 0, &k) == 0) {
			r = crypto_key_from_bytes(crypto_key_bytes(k), &next);
			if (r == 0 && !names_switched)
				r = store_names_key_of_locked(st, next, &kn);
			if (r == 0) {
				r = keyring_put(st->ring, KEYRING_NAMES, 0, 0, next);
				next = NULL;
			}
			if (r == 0)
				keyring_remove(st->ring, KEYRING_NAMES_NEXT, 0, 0);
		}
	}
	if (r == 0)
		store_keys_drop_locked(st, dsid, ver);
	if (r == 0)
		r = keyring_commit(st->ring, st->keys_dirfd, st->master);
	if (r == 0 && kn) {
		names_key_switch_locked(st, kn);
		kn = NULL;
	}
	if (r == 0 && e) {
		e->ring_generation = keyring_generation(st->ring);
		keyring_digest(st->ring, e->ring_digest);
	}
	pthread_mutex_unlock(&st->lock);
	crypto_key_free(next);
	crypto_key_free(kn);
	free(rv.v);
	if (r < 0)
		return r;
	/* The nodes' copies lose the keys too (a node drops them at its next bundle). */
	store_ring_committed(st);

	/* The keys are gone. The marker says so (or goes), the ring's generation is recorded. */
	wb = rocksdb_writebatch_create();
	put_le64(g, keyring_generation(st->ring));
	if (after)
		write_marker(wb, st, after, after_len);
	else
		rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_META], META_ERASE,
					     strlen(META_ERASE));
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_RING, strlen(META_RING),
				  (const char *)g, sizeof(g));
	r = index_write(&st->ix, wb, true);
	rocksdb_writebatch_destroy(wb);
	return r ?: purge(st, dsid, ver);
}

/* The marker, if any (*ret_m malloc'd; -ENOENT none). */
static int marker_get(struct store *st, char **ret_m, size_t *ret_n)
{
	return index_get(&st->ix, CF_META, META_ERASE, strlen(META_ERASE), ret_m, ret_n);
}

int store_erase_recover(struct store *st)
{
	struct store_erasure e = { 0 };
	uint8_t *after = NULL, phase = 0;
	size_t n = 0, an = 0;
	const crypto_key *k = NULL;
	char *v = NULL;
	int r;

	if (st->format < STORE_FORMAT_VERSION)
		return 0;
	r = marker_get(st, &v, &n);
	if (r == -ENOENT) {
		/* A whole-dataset erasure killed before its index batch: its next name key is
		 * dropped (nothing was re-keyed to it). */
		pthread_mutex_lock(&st->lock);
		if (keyring_get(st->ring, KEYRING_NAMES_NEXT, 0, 0, &k) == 0) {
			keyring_remove(st->ring, KEYRING_NAMES_NEXT, 0, 0);
			r = keyring_commit(st->ring, st->keys_dirfd, st->master);
		} else {
			r = 0;
		}
		pthread_mutex_unlock(&st->lock);
		return r;
	}
	if (r < 0)
		return r;
	if (n == ERASE_MARK_LEGACY_LEN) {
		/* Written before markers said what they erase: finished and forgotten. */
		uint64_t dsid = get_be64((const uint8_t *)v);
		uint32_t ver = get_be32((const uint8_t *)v + 8);

		free(v);
		if (dsid == 0)
			return err_set(-EBADMSG, "index: malformed erasure marker");
		return ring_destroy_and_finish(st, dsid, ver, false, NULL, 0, NULL);
	}
	r = marker_decode((const uint8_t *)v, n, &e, &phase);
	free(v);
	if (r < 0)
		return r;
	if (phase == ERASE_PHASE_KEYS) {
		/* Killed between the index batch and the end of the ring write: the keys are
		 * destroyed now; the daemon records the erasure (store_erase_unrecorded()). */
		r = marker_encode(&e, ERASE_PHASE_UNRECORDED, &after, &an);
		if (r == 0)
			r = ring_destroy_and_finish(st, e.dataset_id, e.version, false, after, an,
						    NULL);
	} else {
		/* Killed after the keys went: the purge again (a crash may have stopped it). */
		r = purge(st, e.dataset_id, e.version);
	}
	free(after);
	store_erasure_free(&e);
	return r;
}

int store_erase_unrecorded(struct store *st, struct store_erasure *ret)
{
	struct store_erasure e = { 0 };
	uint8_t phase = 0;
	char *v = NULL;
	size_t n = 0;
	int r;

	if (st->format < STORE_FORMAT_VERSION)
		return -ENOENT;
	r = marker_get(st, &v, &n);
	if (r < 0)
		return r;
	r = n == ERASE_MARK_LEGACY_LEN ? -ENOENT : marker_decode((const uint8_t *)v, n, &e, &phase);
	free(v);
	if (r == 0 && phase != ERASE_PHASE_UNRECORDED)
		r = -ENOENT;   /* store_open() finishes phase 1 before anyone asks */
	if (r < 0) {
		store_erasure_free(&e);
		return r;
	}
	store_ring_state(st, &e.ring_generation, e.ring_digest);
	*ret = e;
	return 0;
}

int store_erase_recorded(struct store *st, uint64_t dataset_id, uint32_t version)
{
	struct store_erasure e = { 0 };
	rocksdb_writebatch_t *wb;
	int r = store_erase_unrecorded(st, &e);

	if (r < 0)
		return r;
	if (e.dataset_id != dataset_id || e.version != version)
		r = err_set(-ENOENT, "the erasure waiting to be recorded is of dataset %llu version "
			    "%u", (unsigned long long)e.dataset_id, e.version);
	store_erasure_free(&e);
	if (r < 0)
		return r;
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_META], META_ERASE, strlen(META_ERASE));
	r = index_write(&st->ix, wb, true);
	rocksdb_writebatch_destroy(wb);
	return r;
}

void store_erasure_free(struct store_erasure *e)
{
	if (!e)
		return;
	free(e->key_ids);
	free(e->versions);
	*e = (struct store_erasure){ 0 };
}

/* The versions of dsid that exist (committed or erased), with their manifests, into e. */
static int list_versions(struct store *st, uint64_t dsid, uint32_t only, struct store_erasure *e)
{
	rocksdb_iterator_t *it = index_iter(&st->ix, CF_VERSIONS);
	uint8_t lo[VKEY_LEN];
	size_t cap = 0;
	int r = 0;

	vkey(lo, dsid, only ? only : 0);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl;
		const uint8_t *ik = (const uint8_t *)rocksdb_iter_key(it, &kl);
		struct store_version_info vi;
		uint32_t v;

		if (kl != VKEY_LEN || get_be64(ik) != dsid)
			break;
		v = get_be32(ik + 8);
		if (only && v != only)
			break;
		r = store_version_get(st, dsid, v, &vi);
		if (r == -ENOENT) {   /* erased before, or an import pending */
			r = 0;
			continue;
		}
		if (r < 0)
			break;
		if (e->nversions == cap) {
			size_t nc = cap ? cap * 2 : 8;
			struct store_erased_version *a = reallocarray(e->versions, nc, sizeof(*a));

			if (!a) {
				r = -ENOMEM;
				break;
			}
			e->versions = a;
			cap = nc;
		}
		e->versions[e->nversions].version = v;
		memcpy(e->versions[e->nversions].manifest, vi.manifest, STORE_MANIFEST_LEN);
		e->nversions++;
	}
	return index_iter_close(&st->ix, it, r, "scan of versions");
}

/* Whole dataset: every other dataset's record re-keyed under the next name key. */
static int rekey_datasets(struct store *st, rocksdb_writebatch_t *wb, const uint8_t *erased_key,
			  const crypto_key *next_kn)
{
	rocksdb_iterator_t *it = index_iter(&st->ix, CF_DATASETS);
	struct buf out;
	int r = 0;

	buf_init(&out, 4096);
	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		uint8_t pt[REC_PLAIN_MAX], nk[DSKEY_LEN];
		struct dataset_rec rec;
		const crypto_key *kdr = NULL;
		size_t kl, vl, pl = 0;
		const char *k = rocksdb_iter_key(it, &kl);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);

		if (kl == DSKEY_LEN && memcmp(k, erased_key, DSKEY_LEN) == 0)
			continue;
		if (kl != DSKEY_LEN || vl < 8 + CRYPTO_SEAL_OVERHEAD) {
			r = store_integrity(st, 0, 0, "a dataset record is malformed");
			break;
		}
		r = store_dataset_rec_key(st, get_be64(v), &kdr);
		if (r == 0 && index_unseal(kdr, CF_DATASETS, k, kl, 8, v, vl, pt, sizeof(pt),
					   &pl) < 0)
			r = store_integrity(st, get_be64(v), 0, "a dataset record does not "
					    "authenticate");
		if (r == 0)
			r = dataset_rec_decode(NULL, pt, pl, &rec);
		explicit_bzero(pt, sizeof(pt));
		if (r < 0)
			break;
		dskey_hash(next_kn, rec.info.name, nk);
		buf_reset(&out);
		r = dataset_rec_encode_v3(&rec, &out);
		if (r == 0) {
			struct buf sealed;

			buf_init(&sealed, 4096);
			r = index_seal(kdr, CF_DATASETS, nk, sizeof(nk), v, 8, out.data, out.len,
				       &sealed);
			if (r == 0) {
				rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_DATASETS], k, kl);
				rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_DATASETS],
							  (const char *)nk, sizeof(nk),
							  (const char *)sealed.data, sealed.len);
			}
			buf_free(&sealed);
		}
		explicit_bzero(&rec, sizeof(rec));
		if (r < 0)
			break;
	}
	if (out.data)
		explicit_bzero(out.data, out.cap);
	buf_free(&out);
	return index_iter_close(&st->ix, it, r, "scan of datasets");
}

int store_erase(struct store *st, const char *name, uint32_t version, struct store_erasure *ret)
{
	struct store_erasure e = { 0 };
	struct store_dataset_info di;
	struct dataset_rec rec;
	rocksdb_writebatch_t *wb = NULL;
	crypto_key *next = NULL, *next_kn = NULL;
	const crypto_key *kdr = NULL;
	uint8_t lo[VKEY_LEN], hi[VKEY_LEN], dk[DSKEY_LEN], *mark = NULL, *after = NULL;
	size_t mark_len = 0, after_len = 0;
	int r;

	err_clear();
	if (st->format < STORE_FORMAT_VERSION)
		return err_set(-EPROTONOSUPPORT, "erasure needs index format 3: run enclavectl "
			       "store upgrade");
	if (!store_import_lock_take(st))
		return err_set(-EBUSY, "an import is running on this store; erase after it");
	/* The record keys stay those of one generation from the first record read to the name
	 * key switched (a node removal's rotation waits). */
	store_rekey_rdlock(st);
	r = store_dataset_get(st, name, &di);
	if (r == 0)
		r = index_dataset_get(st, name, &rec);
	if (r < 0)
		goto out;
	e.dataset_id = di.id;
	e.version = version;
	r = list_versions(st, di.id, version, &e);
	if (r < 0)
		goto out;
	if (version && e.nversions == 0) {
		r = err_set(-ENOENT, "%s has no version %u", name, version);
		goto out;
	}
	if (version) {
		/* Another version must stay: a dataset with none left is erased as a whole. */
		struct store_erasure all = { 0 };

		r = list_versions(st, di.id, 0, &all);
		if (r == 0 && all.nversions < 2)
			r = err_set(-ENOTEMPTY, "version %u is the only version of %s left: erase "
				    "the dataset (%s) instead", version, name, name);
		store_erasure_free(&all);
		if (r < 0)
			goto out;
	}
	r = store_dataset_rec_key(st, di.id, &kdr);
	if (r < 0)
		goto out;

	wb = rocksdb_writebatch_create();
	vkey(lo, di.id, version);
	if (version == 0 || version == UINT32_MAX)
		vkey(hi, di.id + 1, 0);
	else
		vkey(hi, di.id, version + 1);
	rocksdb_writebatch_delete_range_cf(wb, st->ix.cf[CF_INODES], (const char *)lo, sizeof(lo),
					   (const char *)hi, sizeof(hi));
	rocksdb_writebatch_delete_range_cf(wb, st->ix.cf[CF_DIRENTS], (const char *)lo, sizeof(lo),
					   (const char *)hi, sizeof(hi));
	if (version) {
		/* The tombstone: sealed under the dataset's record key, nothing of the version
		 * in it but its number (in the key) and when it was erased. */
		struct version_rec tomb = { .state = VERSION_ERASED,
					    .info = { .committed_ns = now_realtime_ns() } };
		struct buf pt, sealed;
		uint8_t clear = VERSION_ERASED;

		buf_init(&pt, 4096);
		buf_init(&sealed, 4096);
		r = version_rec_encode(&tomb, &pt);
		if (r == 0)
			r = index_seal(kdr, CF_VERSIONS, lo, sizeof(lo), &clear, 1, pt.data, pt.len,
				       &sealed);
		if (r == 0)
			rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_VERSIONS], (const char *)lo,
						  sizeof(lo), (const char *)sealed.data,
						  sealed.len);
		buf_free(&pt);
		buf_free(&sealed);
		if (r < 0)
			goto out;
	} else {
		rocksdb_writebatch_delete_range_cf(wb, st->ix.cf[CF_VERSIONS], (const char *)lo,
						   sizeof(lo), (const char *)hi, sizeof(hi));
		pthread_mutex_lock(&st->lock);
		dskey_hash(st->ix_name, name, dk);
		pthread_mutex_unlock(&st->lock);
		rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_DATASETS], (const char *)dk,
					     sizeof(dk));
		/* Step 0: the next name key, durably in the ring before anything is keyed to
		 * it. */
		r = crypto_key_generate(&next);
		if (r == 0)
			r = store_names_key_of(st, next, &next_kn);
		if (r < 0)
			goto out;
		pthread_mutex_lock(&st->lock);
		r = keyring_put(st->ring, KEYRING_NAMES_NEXT, 0, 0, next);
		next = NULL;
		if (r == 0)
			r = keyring_commit(st->ring, st->keys_dirfd, st->master);
		pthread_mutex_unlock(&st->lock);
		if (r == 0)
			r = rekey_datasets(st, wb, dk, next_kn);
		if (r < 0)
			goto out_names;
	}
	/* The ids of the keys about to be destroyed, while they exist; the marker names them and
	 * the versions' manifests, so that the erasure can be recorded after a crash. */
	pthread_mutex_lock(&st->lock);
	r = erasure_key_ids_locked(st, di.id, version, &e);
	pthread_mutex_unlock(&st->lock);
	if (r == 0)
		r = marker_encode(&e, ERASE_PHASE_KEYS, &mark, &mark_len);
	if (r == 0)
		r = marker_encode(&e, ERASE_PHASE_UNRECORDED, &after, &after_len);
	if (r < 0) {
		if (!version)
			goto out_names;
		goto out;
	}
	write_marker(wb, st, mark, mark_len);
	/* 1. The records go, the marker names the erasure. A whole dataset's batch moves every
	 * other dataset's record to the next name key, and the lookups follow it at once: no
	 * reader sees the records under one key while hashing names with the other. */
	if (!version)
		pthread_rwlock_wrlock(&st->names_lock);
	r = index_write(&st->ix, wb, true);
	if (r == 0 && !version) {
		pthread_mutex_lock(&st->lock);
		names_key_switch_locked(st, next_kn);
		next_kn = NULL;
		pthread_mutex_unlock(&st->lock);
	}
	if (!version)
		pthread_rwlock_unlock(&st->names_lock);
	if (r < 0) {
		if (!version)
			goto out_names;
		goto out;
	}
	store_race_point(st, STORE_RACE_ERASE_BATCH, di.id);
	/* 2-4. The keys are destroyed, the marker says so, the files purged. The marker stays
	 * until the caller has recorded the erasure (store_erase_recorded()). */
	r = ring_destroy_and_finish(st, di.id, version, !version, after, after_len, &e);
	if (r < 0)
		goto out;
	*ret = e;
	e = (struct store_erasure){ 0 };
	goto out;
out_names:
	/* Nothing was keyed to the next name key: drop it again (or at the next open). */
	pthread_mutex_lock(&st->lock);
	keyring_remove(st->ring, KEYRING_NAMES_NEXT, 0, 0);
	pthread_mutex_unlock(&st->lock);
out:
	if (wb)
		rocksdb_writebatch_destroy(wb);
	crypto_key_free(next);
	crypto_key_free(next_kn);
	store_erasure_free(&e);
	free(mark);
	free(after);
	store_rekey_rdunlock(st);
	pthread_mutex_unlock(&st->import_lock);
	return r;
}

void store_ring_state(struct store *st, uint64_t *ret_generation, uint8_t ret_digest[static 32])
{
	pthread_mutex_lock(&st->lock);
	*ret_generation = st->ring ? keyring_generation(st->ring) : 0;
	if (st->ring)
		keyring_digest(st->ring, ret_digest);
	else
		memset(ret_digest, 0, 32);
	pthread_mutex_unlock(&st->lock);
}
