/* map: the bounded, thread-safe key -> string caches of the FUSE layer (see fusefs_internal.h). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "fuse/fusefs_internal.h"

/* Ways per set: a new key evicts the least recently used of these. */
#define MAP_WAYS 8

struct map_slot {
	uint64_t key;           /* 0: empty */
	uint64_t used;          /* the map's clock at the last put/get; smallest is evicted */
	char *val;              /* owned, NUL-terminated */
	size_t len;             /* strlen(val) + 1, counted in the map's bytes */
};

struct map_set {
	pthread_mutex_t lock;   /* guards slots[] */
	struct map_slot slots[MAP_WAYS];
};

struct fusefs_map {
	struct map_set *sets;   /* owned, nsets of them */
	size_t nsets;           /* a power of two */
	unsigned shift;         /* 64 - log2(nsets): the hash's top bits pick the set */
	size_t max_bytes;       /* cap on the sum of the slots' len */
	atomic_size_t bytes;    /* current sum of the slots' len */
	atomic_uint_fast64_t clock;  /* ticks on every put/get: recency for eviction */
};

int fusefs_map_new(size_t entries, size_t max_bytes, struct fusefs_map **ret_map)
{
	struct fusefs_map *m;
	size_t nsets = 1;
	unsigned bits = 0;

	while (nsets * MAP_WAYS < entries) {
		nsets <<= 1;
		bits++;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->sets = calloc(nsets, sizeof(*m->sets));
	if (!m->sets) {
		free(m);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nsets; i++)
		pthread_mutex_init(&m->sets[i].lock, NULL);
	m->nsets = nsets;
	m->shift = 64 - bits;
	m->max_bytes = max_bytes;
	*ret_map = m;
	return 0;
}

void fusefs_map_free(struct fusefs_map *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nsets; i++) {
		for (unsigned w = 0; w < MAP_WAYS; w++)
			free(m->sets[i].slots[w].val);
		pthread_mutex_destroy(&m->sets[i].lock);
	}
	free(m->sets);
	free(m);
}

static struct map_set *set_of(struct fusefs_map *m, uint64_t key)
{
	/* Fibonacci hashing: inode numbers differ mostly in their low bits. */
	uint64_t h = key * 0x9E3779B97F4A7C15ull;

	return &m->sets[m->nsets == 1 ? 0 : h >> m->shift];
}

/* With the set's lock held. */
static void slot_clear(struct fusefs_map *m, struct map_slot *s)
{
	if (s->val) {
		atomic_fetch_sub(&m->bytes, s->len);
		free(s->val);
	}
	*s = (struct map_slot){ 0 };
}

void fusefs_map_put(struct fusefs_map *m, uint64_t key, const char *val)
{
	struct map_set *set = set_of(m, key);
	size_t len = strlen(val) + 1;
	struct map_slot *victim = NULL;
	char *copy;

	if (key == 0)
		return;
	pthread_mutex_lock(&set->lock);
	for (unsigned w = 0; w < MAP_WAYS; w++) {
		struct map_slot *s = &set->slots[w];

		if (s->key == key) {
			if (s->len == len && memcmp(s->val, val, len) == 0) {
				s->used = atomic_fetch_add(&m->clock, 1);
				goto out;
			}
			victim = s;
			break;
		}
		if (!victim || (victim->key != 0 && (s->key == 0 || s->used < victim->used)))
			victim = s;
	}
	slot_clear(m, victim);
	/* The cap is on bytes held: an insert that would pass it is dropped (a miss later has a
	 * fallback), after the eviction above has made what room it could. */
	if (atomic_fetch_add(&m->bytes, len) + len > m->max_bytes) {
		atomic_fetch_sub(&m->bytes, len);
		goto out;
	}
	copy = malloc(len);
	if (!copy) {
		atomic_fetch_sub(&m->bytes, len);
		goto out;
	}
	memcpy(copy, val, len);
	*victim = (struct map_slot){ .key = key, .used = atomic_fetch_add(&m->clock, 1),
				     .val = copy, .len = len };
out:
	pthread_mutex_unlock(&set->lock);
}

bool fusefs_map_get(struct fusefs_map *m, uint64_t key, char *out, size_t n)
{
	struct map_set *set = set_of(m, key);
	bool found = false;

	if (key == 0)
		return false;
	pthread_mutex_lock(&set->lock);
	for (unsigned w = 0; w < MAP_WAYS; w++) {
		struct map_slot *s = &set->slots[w];

		if (s->key != key)
			continue;
		if (s->len <= n) {
			memcpy(out, s->val, s->len);
			s->used = atomic_fetch_add(&m->clock, 1);
			found = true;
		}
		break;
	}
	pthread_mutex_unlock(&set->lock);
	return found;
}

void fusefs_map_del(struct fusefs_map *m, uint64_t key)
{
	struct map_set *set = set_of(m, key);

	if (key == 0)
		return;
	pthread_mutex_lock(&set->lock);
	for (unsigned w = 0; w < MAP_WAYS; w++)
		if (set->slots[w].key == key)
			slot_clear(m, &set->slots[w]);
	pthread_mutex_unlock(&set->lock);
}
