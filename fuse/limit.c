/* limit: the rate limiter of refusal records. See limit.h. */
#include "fuse/limit.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* Open addressing at most half full. */
#define KEY_SLOTS (2 * FUSEFS_REFUSAL_KEYS_MAX)
#define USER_SLOTS (2 * FUSEFS_REFUSAL_USERS_MAX)
_Static_assert((KEY_SLOTS & (KEY_SLOTS - 1)) == 0, "a power of two");
_Static_assert((USER_SLOTS & (USER_SLOTS - 1)) == 0, "a power of two");

struct lim_user {
	bool used;
	uint32_t uid;
	char user[POLICY_NAME_MAX + 1];
	uint32_t recorded;                        /* full records admitted this window */
	uint64_t suppressed[FUSEFS_REFUSAL_KINDS]; /* counted, not written */
};

struct fusefs_limiter {
	pthread_mutex_t lock;          /* guards everything below */
	int64_t window_ns;
	int64_t start_ns;              /* the current window's start; 0: no refusal yet */
	uint8_t key[crypto_generichash_KEYBYTES]; /* random: nobody can aim names at one slot */
	uint64_t *keys;                /* KEY_SLOTS hashes of things recorded, 0 empty; owned */
	size_t nkeys;
	struct lim_user *users;        /* USER_SLOTS, by uid; owned */
	size_t nusers;
	uint64_t others[FUSEFS_REFUSAL_KINDS]; /* refusals of users past the users cap */
	bool any;                      /* something was counted this window */
};

int fusefs_limiter_new(unsigned window_s, struct fusefs_limiter **ret_limiter)
{
	struct fusefs_limiter *l;

	if (window_s > FUSEFS_REFUSAL_WINDOW_MAX_S)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->keys = calloc(KEY_SLOTS, sizeof(*l->keys));
	l->users = calloc(USER_SLOTS, sizeof(*l->users));
	if (!l->keys || !l->users) {
		free(l->keys);
		free(l->users);
		free(l);
		return -ENOMEM;
	}
	l->window_ns = (int64_t)(window_s ? window_s : FUSEFS_REFUSAL_WINDOW_S) * 1000000000LL;
	randombytes_buf(l->key, sizeof(l->key));
	pthread_mutex_init(&l->lock, NULL);
	*ret_limiter = l;
	return 0;
}

void fusefs_limiter_free(struct fusefs_limiter *l)
{
	if (!l)
		return;
	pthread_mutex_destroy(&l->lock);
	free(l->keys);
	free(l->users);
	free(l);
}

/* With the lock: the user's slot (made if there is room), or NULL past the cap. */
static struct lim_user *user_slot(struct fusefs_limiter *l, uint32_t uid, const char *user)
{
	uint64_t s = (uint64_t)uid * 0x9e3779b97f4a7c15ull >> 40;

	for (size_t i = 0; i < USER_SLOTS; i++) {
		struct lim_user *u = &l->users[(s + i) & (USER_SLOTS - 1)];

		if (u->used && u->uid == uid)
			return u;
		if (!u->used) {
			if (l->nusers >= FUSEFS_REFUSAL_USERS_MAX)
				return NULL;
			*u = (struct lim_user){ .used = true, .uid = uid };
			snprintf(u->user, sizeof(u->user), "%s", user ? user : "");
			l->nusers++;
			return u;
		}
	}
	return NULL;
}

/* With the lock: true if h was not in the key table and now is; false if it was, or the table
 * is full. */
static bool key_insert(struct fusefs_limiter *l, uint64_t h)
{
	for (size_t i = 0; i < KEY_SLOTS; i++) {
		uint64_t *k = &l->keys[(h + i) & (KEY_SLOTS - 1)];

		if (*k == h)
			return false;
		if (*k == 0) {
			if (l->nkeys >= FUSEFS_REFUSAL_KEYS_MAX)
				return false;
			*k = h;
			l->nkeys++;
			return true;
		}
	}
	return false;
}

bool fusefs_limiter_admit(struct fusefs_limiter *l, uint32_t uid, const char *user,
			  enum fusefs_refusal_kind kind, const void *key, size_t keylen,
			  int64_t now_ns)
{
	crypto_generichash_state st;
	uint8_t full[crypto_generichash_BYTES_MIN], u4[4] = { (uint8_t)uid, (uint8_t)(uid >> 8),
		(uint8_t)(uid >> 16), (uint8_t)(uid >> 24) }, k1 = (uint8_t)kind;
	struct lim_user *u;
	uint64_t h;
	bool admit = false;

	/* Who, which kind and what, under the random key: equal only for the same refusal. */
	crypto_generichash_init(&st, l->key, sizeof(l->key), sizeof(full));
	crypto_generichash_update(&st, u4, sizeof(u4));
	crypto_generichash_update(&st, &k1, 1);
	crypto_generichash_update(&st, key, keylen);
	crypto_generichash_final(&st, full, sizeof(full));
	memcpy(&h, full, sizeof(h));
	if (h == 0)
		h = 1;

	pthread_mutex_lock(&l->lock);
	if (l->start_ns == 0)
		l->start_ns = now_ns;
	u = user_slot(l, uid, user);
	if (!u) {
		l->others[kind]++;
	} else if (u->recorded < FUSEFS_REFUSAL_PER_USER && key_insert(l, h)) {
		u->recorded++;
		admit = true;
	} else {
		u->suppressed[kind]++;
	}
	if (!admit)
		l->any = true;
	pthread_mutex_unlock(&l->lock);
	return admit;
}

int fusefs_limiter_take(struct fusefs_limiter *l, int64_t now_ns, bool all,
			struct fusefs_refusal_summary **ret, size_t *ret_n)
{
	struct fusefs_refusal_summary *out = NULL;
	size_t n = 0;

	pthread_mutex_lock(&l->lock);
	if (l->start_ns == 0 || (!all && now_ns - l->start_ns < l->window_ns)) {
		pthread_mutex_unlock(&l->lock);
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	if (l->any) {
		out = calloc(l->nusers + 1, sizeof(*out));
		if (!out) {
			pthread_mutex_unlock(&l->lock);
			return -ENOMEM;
		}
		for (size_t i = 0; i < USER_SLOTS; i++) {
			const struct lim_user *u = &l->users[i];
			uint64_t sum = 0;

			if (!u->used)
				continue;
			for (int k = 0; k < FUSEFS_REFUSAL_KINDS; k++)
				sum += u->suppressed[k];
			if (sum == 0)
				continue;
			out[n] = (struct fusefs_refusal_summary){ .uid = u->uid,
								  .recorded = u->recorded };
			memcpy(out[n].user, u->user, sizeof(out[n].user));
			memcpy(out[n].suppressed, u->suppressed, sizeof(u->suppressed));
			n++;
		}
		if (l->others[FUSEFS_REFUSAL_OPEN] || l->others[FUSEFS_REFUSAL_LOOKUP] ||
		    l->others[FUSEFS_REFUSAL_CHECK]) {
			out[n] = (struct fusefs_refusal_summary){ .all_others = true };
			memcpy(out[n].suppressed, l->others, sizeof(l->others));
			n++;
		}
		for (size_t i = 0; i < n; i++) {
			out[i].start_ns = l->start_ns;
			out[i].end_ns = now_ns;
		}
	}
	memset(l->keys, 0, KEY_SLOTS * sizeof(*l->keys));
	memset(l->users, 0, USER_SLOTS * sizeof(*l->users));
	memset(l->others, 0, sizeof(l->others));
	l->nkeys = l->nusers = 0;
	l->any = false;
	l->start_ns = 0;
	pthread_mutex_unlock(&l->lock);
	if (n == 0) {
		free(out);
		out = NULL;
	}
	*ret = out;
	*ret_n = n;
	return 0;
}
