/* What a node's kept keys still open of a store's index (tests/oldkeys.h). */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "store/keyring.h"
#include "store/store_internal.h"
#include "tests/oldkeys.h"

/* Every key of kind in k, as crypto keys (the caller frees them). */
static size_t keys_of(const struct store_node_keys *k, uint8_t kind, uint64_t dsid, bool any_dsid,
		      crypto_key **out, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < k->n && n < cap; i++)
		if (k->e[i].kind == kind && (any_dsid || k->e[i].dsid == dsid) &&
		    crypto_key_from_bytes(k->e[i].key, &out[n]) == 0)
			n++;
	return n;
}

static void keys_free(crypto_key **a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		crypto_key_free(a[i]);
}

#define CAND_MAX 64

/* Every record key k can make for dataset dsid: from Kd alone (record key generation 0) and
 * from Kd with each rotating key it holds. */
static size_t rec_keys(const struct store_node_keys *k, uint64_t dsid, crypto_key **out)
{
	crypto_key *kd[4], *kp[CAND_MAX / 4];
	size_t nd = keys_of(k, 2, dsid, false, kd, 4), np = keys_of(k, 5, 0, true, kp, CAND_MAX / 4);
	size_t n = 0;

	for (size_t i = 0; i < nd; i++) {
		if (keyring_dataset_seal_key_gen(NULL, kd[i], &out[n]) == 0)
			n++;
		for (size_t j = 0; j < np && n < CAND_MAX; j++)
			if (keyring_dataset_seal_key_gen(kp[j], kd[i], &out[n]) == 0)
				n++;
	}
	keys_free(kd, nd);
	keys_free(kp, np);
	return n;
}

/* Every name key k can make: from each Kr it holds (names, names-next) alone and with each
 * rotating key. */
static size_t name_keys(const struct store_node_keys *k, crypto_key **out)
{
	crypto_key *kr[4], *kp[CAND_MAX / 4];
	size_t nr = keys_of(k, 1, 0, true, kr, 2), np = keys_of(k, 5, 0, true, kp, CAND_MAX / 4);
	size_t n = 0;

	nr += keys_of(k, 4, 0, true, kr + nr, 2);
	for (size_t i = 0; i < nr; i++) {
		if (keyring_names_key_gen(NULL, kr[i], &out[n]) == 0)
			n++;
		for (size_t j = 0; j < np && n < CAND_MAX; j++)
			if (keyring_names_key_gen(kp[j], kr[i], &out[n]) == 0)
				n++;
	}
	keys_free(kr, nr);
	keys_free(kp, np);
	return n;
}

static bool opens_any(crypto_key **keys, size_t n, enum store_cf cf, const void *k, size_t kl,
		      size_t clen, const void *v, size_t vl)
{
	uint8_t pt[REC_PLAIN_MAX];
	size_t pl = 0;

	for (size_t i = 0; i < n; i++)
		if (index_unseal(keys[i], cf, k, kl, clen, v, vl, pt, sizeof(pt), &pl) == 0)
			return true;
	return false;
}

void oldkeys_reach(struct store *st, const struct store_node_keys *k, struct oldkeys_reach *ret)
{
	struct oldkeys_reach x = { 0 };
	crypto_key *c[CAND_MAX];
	rocksdb_iterator_t *it;
	size_t n;

	it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro, st->ix.cf[CF_DATASETS]);
	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *key = rocksdb_iter_key(it, &kl);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);

		x.datasets++;
		if (vl < 8)
			continue;
		n = rec_keys(k, get_be64(v), c);
		x.datasets_open += opens_any(c, n, CF_DATASETS, key, kl, 8, v, vl);
		keys_free(c, n);
	}
	rocksdb_iter_destroy(it);
	it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro, st->ix.cf[CF_VERSIONS]);
	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl, vl;
		const uint8_t *key = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);

		if (kl != VKEY_LEN || vl < 1 || v[0] != VERSION_ERASED)
			continue;
		x.tombstones++;
		n = rec_keys(k, get_be64(key), c);
		x.tombstones_open += opens_any(c, n, CF_VERSIONS, key, kl, 1, v, vl);
		keys_free(c, n);
	}
	rocksdb_iter_destroy(it);
	n = keys_of(k, 5, 0, true, c, CAND_MAX - 1);
	if (crypto_key_from_bytes(k->ix_seal, &c[n]) == 0)
		n++;
	it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro, st->ix.cf[CF_META]);
	for (rocksdb_iter_seek(it, "move/", 5); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *key = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl < 5 || memcmp(key, "move/", 5) != 0)
			break;
		x.moves++;
		x.moves_open += opens_any(c, n, CF_META, key, kl, 0, v, vl);
	}
	rocksdb_iter_destroy(it);
	keys_free(c, n);
	*ret = x;
}

bool oldkeys_confirm_name(struct store *st, const struct store_node_keys *k, const char *name)
{
	crypto_key *c[CAND_MAX];
	size_t n = name_keys(k, c);
	bool found = false;

	for (size_t i = 0; i < n && !found; i++) {
		uint8_t h[DSKEY_LEN];
		char *v = NULL;
		size_t vl = 0;

		dskey_hash(c[i], name, h);
		found = index_get(&st->ix, CF_DATASETS, h, sizeof(h), &v, &vl) == 0;
		free(v);
	}
	keys_free(c, n);
	return found;
}
