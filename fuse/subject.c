/* subject: a small, short-lived cache of policy_subject_lookup() results.
 *
 * Why: every decision needs the caller's groups, and NSS (files backend) takes ~60 us per lookup
 * here; a path walk through the mount asks for it at each level the kernel revalidates (lookup and
 * getattr of the dataset and version directories, timeouts 0), which measured at more than half
 * the cost of a stat(). Subjects are kept SUBJECT_TTL_NS: a group membership removed from NSS
 * takes at most that long to count. Only successful lookups are kept.
 *
 * Bounded: SUBJECT_SETS x SUBJECT_WAYS entries (~4 KiB each), least recently filled evicted.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "fuse/fusefs_internal.h"

#define SUBJECT_TTL_NS (1000ll * 1000 * 1000)
#define SUBJECT_SETS 64u
#define SUBJECT_WAYS 4u

struct subject_slot {
	bool used;
	uint32_t uid;
	uint32_t gid;
	int64_t filled_ns;          /* monotonic; expired SUBJECT_TTL_NS later */
	struct policy_subject s;
};

struct subject_set {
	pthread_mutex_t lock;       /* guards slots[] */
	struct subject_slot slots[SUBJECT_WAYS];
};

struct fusefs_subjects {
	struct subject_set sets[SUBJECT_SETS];
};

int fusefs_subjects_new(struct fusefs_subjects **ret)
{
	struct fusefs_subjects *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	for (unsigned i = 0; i < SUBJECT_SETS; i++)
		pthread_mutex_init(&c->sets[i].lock, NULL);
	*ret = c;
	return 0;
}

void fusefs_subjects_free(struct fusefs_subjects *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < SUBJECT_SETS; i++)
		pthread_mutex_destroy(&c->sets[i].lock);
	free(c);
}

static struct subject_set *set_of(struct fusefs_subjects *c, uint32_t uid, uint32_t gid)
{
	uint64_t h = ((uint64_t)uid << 32 | gid) * 0x9E3779B97F4A7C15ull;

	return &c->sets[h >> 58]; /* top 6 bits: SUBJECT_SETS == 64 */
}

_Static_assert(SUBJECT_SETS == 64, "set_of() takes the top 6 bits of the hash");

int fusefs_subject_get(struct fusefs_subjects *c, uid_t uid, gid_t gid,
		       struct policy_subject *ret_subject)
{
	struct subject_set *set = set_of(c, uid, gid);
	int64_t now = now_monotonic_ns();
	struct subject_slot *victim = NULL;
	struct policy_subject s;
	int r;

	pthread_mutex_lock(&set->lock);
	for (unsigned w = 0; w < SUBJECT_WAYS; w++) {
		struct subject_slot *e = &set->slots[w];

		if (e->used && e->uid == uid && e->gid == gid &&
		    now - e->filled_ns < SUBJECT_TTL_NS) {
			*ret_subject = e->s;
			pthread_mutex_unlock(&set->lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&set->lock);

	/* Outside the lock: NSS may be slow (LDAP); two threads may both look up, harmlessly. */
	r = policy_subject_lookup(uid, gid, &s);
	if (r < 0)
		return r;
	pthread_mutex_lock(&set->lock);
	for (unsigned w = 0; w < SUBJECT_WAYS; w++) {
		struct subject_slot *e = &set->slots[w];

		if (e->used && e->uid == uid && e->gid == gid) {
			victim = e;
			break;
		}
		if (!victim || (victim->used && (!e->used || e->filled_ns < victim->filled_ns)))
			victim = e;
	}
	victim->used = true;
	victim->uid = uid;
	victim->gid = gid;
	victim->filled_ns = now;
	victim->s = s;
	pthread_mutex_unlock(&set->lock);
	*ret_subject = s;
	return 0;
}
