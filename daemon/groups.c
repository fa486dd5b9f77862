/* groups: what the group database says now, for decisions on groups (docs/POLICY.md "Groups").
 *
 * A decision takes the groups the calling process holds (fuse/subject.c), which a process keeps
 * for its life: removing a user from a group in /etc/group would otherwise leave a running job
 * reading under a group grant. So a group counts only while the database still lists the user in
 * it too (or it is the user's primary group in passwd): daemon_groups_filter() takes out of a
 * subject every group NSS no longer gives the user. The answer is cached per uid; a thread stats
 * /etc/group and /etc/passwd every 250 ms and, on a change (new inode, size or mtime), forgets the
 * cache and calls changed(), which makes every open file decide again at its next read, as after
 * a revocation. A uid without a passwd entry is left as the process holds it (there is nothing to
 * ask).
 *
 * Locking: lock guards the cache and the generation; the watch thread takes watch_lock only.
 */
#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "daemon/daemon.h"

#define CACHE_SETS 128u
#define CACHE_GIDS 64u          /* users in more groups are asked every time */
#define WATCH_MS 250

struct entry {
	bool valid;
	uint32_t uid;
	uint64_t gen;               /* the database generation it was filled at */
	bool known;                 /* the uid has a passwd entry */
	size_t n;
	uint32_t gids[CACHE_GIDS];
};

struct daemon_groups {
	pthread_mutex_t lock;
	uint64_t gen;               /* bumped when the databases change */
	struct entry cache[CACHE_SETS];

	pthread_mutex_t watch_lock;
	pthread_cond_t watch_cond;
	bool watching, stop;
	pthread_t thread;
	void (*changed)(void *ctx);
	void *ctx;
	struct stat seen[2];        /* /etc/group, /etc/passwd as last seen */
};

static const char *const files[2] = { "/etc/group", "/etc/passwd" };

int daemon_groups_new(struct daemon_groups **ret)
{
	struct daemon_groups *g = calloc(1, sizeof(*g));

	if (!g)
		return -ENOMEM;
	pthread_mutex_init(&g->lock, NULL);
	pthread_mutex_init(&g->watch_lock, NULL);
	pthread_cond_init(&g->watch_cond, NULL);
	for (size_t i = 0; i < ARRAY_SIZE(files); i++)
		stat(files[i], &g->seen[i]);
	*ret = g;
	return 0;
}

void daemon_groups_free(struct daemon_groups *g)
{
	if (!g)
		return;
	daemon_groups_watch_stop(g);
	pthread_mutex_destroy(&g->lock);
	pthread_mutex_destroy(&g->watch_lock);
	pthread_cond_destroy(&g->watch_cond);
	free(g);
}

/* What NSS says of uid now: its groups into e (primary first). */
static void lookup(uint32_t uid, struct entry *e)
{
	struct passwd pw, *res = NULL;
	char buf[16384];
	gid_t groups[POLICY_GROUPS_MAX];
	int n = POLICY_GROUPS_MAX;

	e->known = false;
	e->n = 0;
	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || !res)
		return;
	e->known = true;
	if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0 || n < 0) {
		/* More than we take: the primary group only, and the caller asks again. */
		e->gids[0] = pw.pw_gid;
		e->n = 1;
		return;
	}
	for (int i = 0; i < n && e->n < CACHE_GIDS; i++)
		e->gids[e->n++] = groups[i];
}

static bool has(const struct entry *e, uint32_t gid)
{
	for (size_t i = 0; i < e->n; i++)
		if (e->gids[i] == gid)
			return true;
	return false;
}

void daemon_groups_filter(struct daemon_groups *g, struct policy_subject *who)
{
	struct entry *slot = &g->cache[who->uid % CACHE_SETS], e;
	size_t k = 0;

	pthread_mutex_lock(&g->lock);
	if (slot->valid && slot->uid == who->uid && slot->gen == g->gen) {
		e = *slot;
	} else {
		uint64_t gen = g->gen;

		pthread_mutex_unlock(&g->lock);
		lookup(who->uid, &e);
		e.valid = e.n < CACHE_GIDS;
		e.uid = who->uid;
		e.gen = gen;
		pthread_mutex_lock(&g->lock);
		if (e.valid && gen == g->gen)
			*slot = e;
	}
	pthread_mutex_unlock(&g->lock);
	if (!e.known)
		return;
	for (size_t i = 0; i < who->ngids; i++)
		if (has(&e, who->gids[i]))
			who->gids[k++] = who->gids[i];
	who->ngids = k;
}

static bool changed_on_disk(struct daemon_groups *g)
{
	bool any = false;

	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		struct stat sb = { 0 };

		stat(files[i], &sb);
		if (sb.st_ino != g->seen[i].st_ino || sb.st_size != g->seen[i].st_size ||
		    sb.st_mtim.tv_sec != g->seen[i].st_mtim.tv_sec ||
		    sb.st_mtim.tv_nsec != g->seen[i].st_mtim.tv_nsec) {
			g->seen[i] = sb;
			any = true;
		}
	}
	return any;
}

static void *watch_main(void *arg)
{
	struct daemon_groups *g = arg;

	pthread_mutex_lock(&g->watch_lock);
	while (!g->stop) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += WATCH_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&g->watch_cond, &g->watch_lock, &until);
		if (g->stop || !changed_on_disk(g))
			continue;
		pthread_mutex_lock(&g->lock);
		g->gen++;
		pthread_mutex_unlock(&g->lock);
		/* Without the watch lock: the callback may wait for requests that decide. */
		pthread_mutex_unlock(&g->watch_lock);
		g->changed(g->ctx);
		pthread_mutex_lock(&g->watch_lock);
	}
	pthread_mutex_unlock(&g->watch_lock);
	return NULL;
}

int daemon_groups_watch_start(struct daemon_groups *g, void (*changed)(void *ctx), void *ctx)
{
	int r = 0;

	pthread_mutex_lock(&g->watch_lock);
	if (g->watching) {
		r = -EBUSY;
	} else {
		g->changed = changed;
		g->ctx = ctx;
		g->stop = false;
		if (pthread_create(&g->thread, NULL, watch_main, g) != 0)
			r = -EAGAIN;
		else
			g->watching = true;
	}
	pthread_mutex_unlock(&g->watch_lock);
	return r;
}

void daemon_groups_watch_stop(struct daemon_groups *g)
{
	bool join;

	if (!g)
		return;
	pthread_mutex_lock(&g->watch_lock);
	join = g->watching;
	g->stop = true;
	g->watching = false;
	pthread_cond_broadcast(&g->watch_cond);
	pthread_mutex_unlock(&g->watch_lock);
	if (join)
		pthread_join(g->thread, NULL);
}
