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
 * Crash safety: meta "erase" names the erasure from its first index batch until the ring is
 * written and the erasure done; store_open() finishes one it finds (store_erase_recover()).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define ERASE_MARK_LEN 12   /* be64 dataset id || be32 version (0: the whole dataset) */

static int write_marker(rocksdb_writebatch_t *wb, struct store *st, uint64_t dsid, uint32_t ver)
{
	uint8_t m[ERASE_MARK_LEN];

	put_be64(m, dsid);
	put_be32(m + 8, ver);
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_ERASE, strlen(META_ERASE),
				  (const char *)m, sizeof(m));
	return 0;
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

/* Remove the erased keys from the ring in memory (the names key switched when a whole dataset
 * goes), write it, and finish: the marker removed and the generation recorded. With the key ids
 * of what was destroyed into e when e is not NULL. */
static int ring_destroy_and_finish(struct store *st, uint64_t dsid, uint32_t ver,
				   struct store_erasure *e)
{
	struct ring_versions rv = { .dsid = dsid };
	rocksdb_writebatch_t *wb = NULL;
	const crypto_key *k = NULL;
	crypto_key *next = NULL, *kn = NULL;
	uint8_t g[8];
	int r;

	pthread_mutex_lock(&st->lock);
	if (ver) {
		rv.v = malloc(sizeof(*rv.v));
		r = rv.v ? 0 : -ENOMEM;
		if (r == 0)
			rv.v[rv.n++] = ver;
	} else {
		r = keyring_foreach(st->ring, collect_versions, &rv);
	}
	if (r == 0 && e) {
		e->key_ids = calloc(rv.n + 2, sizeof(*e->key_ids));
		if (!e->key_ids)
			r = -ENOMEM;
	}
	for (size_t i = 0; r == 0 && i < rv.n; i++) {
		if (e && keyring_get(st->ring, KEYRING_VERSION, dsid, rv.v[i], &k) == 0)
			keyring_key_id(k, e->key_ids[e->nkeys++]);
		keyring_remove(st->ring, KEYRING_VERSION, dsid, rv.v[i]);
	}
	if (r == 0 && !ver) {
		if (e && keyring_get(st->ring, KEYRING_DATASET, dsid, 0, &k) == 0)
			keyring_key_id(k, e->key_ids[e->nkeys++]);
		keyring_remove(st->ring, KEYRING_DATASET, dsid, 0);
		/* The name key the index was re-keyed to replaces the old one. */
		if (keyring_get(st->ring, KEYRING_NAMES_NEXT, 0, 0, &k) == 0) {
			if (e && keyring_get(st->ring, KEYRING_NAMES, 0, 0, &k) == 0)
				keyring_key_id(k, e->key_ids[e->nkeys++]);
			keyring_get(st->ring, KEYRING_NAMES_NEXT, 0, 0, &k);
			r = crypto_key_from_bytes(crypto_key_bytes(k), &next);
			if (r == 0)
				r = keyring_names_key(next, &kn);
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
		/* A lookup running now may hold the old name key: it is freed at close. */
		if (st->nretired < ARRAY_SIZE(st->retired))
			st->retired[st->nretired++] = st->ix_name;
		else
			crypto_key_free(st->ix_name);
		st->ix_name = kn;
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

	/* The keys are gone. The marker goes, the ring's generation is recorded. */
	wb = rocksdb_writebatch_create();
	put_le64(g, keyring_generation(st->ring));
	rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_META], META_ERASE, strlen(META_ERASE));
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_RING, strlen(META_RING),
				  (const char *)g, sizeof(g));
	r = index_write(&st->ix, wb, true);
	rocksdb_writebatch_destroy(wb);
	return r ?: purge(st, dsid, ver);
}

int store_erase_recover(struct store *st)
{
	char *v = NULL;
	size_t n = 0;
	uint64_t dsid;
	uint32_t ver;
	const crypto_key *k = NULL;
	int r;

	if (st->format < STORE_FORMAT_VERSION)
		return 0;
	r = index_get(&st->ix, CF_META, META_ERASE, strlen(META_ERASE), &v, &n);
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
	if (n != ERASE_MARK_LEN) {
		free(v);
		return err_set(-EBADMSG, "index: malformed erasure marker");
	}
	dsid = get_be64((const uint8_t *)v);
	ver = get_be32((const uint8_t *)v + 8);
	free(v);
	if (dsid == 0)
		return err_set(-EBADMSG, "index: malformed erasure marker");
	return ring_destroy_and_finish(st, dsid, ver, NULL);
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
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro,
							    st->ix.cf[CF_VERSIONS]);
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
	return index_iter_close(it, r, "scan of versions");
}

/* Whole dataset: every other dataset's record re-keyed under the next name key. */
static int rekey_datasets(struct store *st, rocksdb_writebatch_t *wb, const uint8_t *erased_key,
			  const crypto_key *next_kn)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro,
							    st->ix.cf[CF_DATASETS]);
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
	return index_iter_close(it, r, "scan of datasets");
}

int store_erase(struct store *st, const char *name, uint32_t version, struct store_erasure *ret)
{
	struct store_erasure e = { 0 };
	struct store_dataset_info di;
	struct dataset_rec rec;
	rocksdb_writebatch_t *wb = NULL;
	crypto_key *next = NULL, *next_kn = NULL;
	const crypto_key *kdr = NULL;
	uint8_t lo[VKEY_LEN], hi[VKEY_LEN], dk[DSKEY_LEN];
	int r;

	err_clear();
	if (st->format < STORE_FORMAT_VERSION)
		return err_set(-EPROTONOSUPPORT, "erasure needs index format 3: run enclavectl "
			       "store upgrade");
	if (pthread_mutex_trylock(&st->import_lock) != 0)
		return err_set(-EBUSY, "an import is running on this store; erase after it");
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
			r = keyring_names_key(next, &next_kn);
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
	write_marker(wb, st, di.id, version);
	/* 1. The records go, the marker names the erasure. */
	r = index_write(&st->ix, wb, true);
	if (r < 0) {
		if (!version)
			goto out_names;
		goto out;
	}
	/* 2-4. The keys are destroyed, the marker removed, the files purged. */
	r = ring_destroy_and_finish(st, di.id, version, &e);
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
