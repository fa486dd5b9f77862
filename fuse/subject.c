/* subject: who is asking. The uid and every group of the calling process as the kernel has them at
 * the time of the request, and the user's name for audit records.
 *
 * Groups. FUSE passes the caller's uid, gid (fsuid/fsgid) and thread id, not its supplementary
 * groups; fuse_req_getgroups() reads them from /proc/<tid>/task/<tid>/status: the groups the
 * process really holds now, so a process started without a group (setgroups, newgrp, a job
 * launcher that drops groups) is decided without it, and a group membership removed from NSS
 * counts for every process started after the removal. NSS (getgrouplist) is never asked: it
 * describes what a login would get, not what this process holds. If the status file cannot be
 * read (the process is gone, or lives in a pid namespace the daemon cannot see, where FUSE sends
 * pid 0) the request is refused rather than decided on a guess. Not cached: the groups of a process
 * change with setgroups(), which no key we could cheaply read (pid, start time) would notice; the
 * read costs one open/read of a small /proc file (see docs/THREAT_MODEL.md section 5.2).
 *
 * Names. The user's name is only written into records (decisions match numeric ids), so it is
 * cached by uid for NAME_TTL_NS: a renamed user shows its old name for at most that long. Bounded:
 * NAME_SETS x NAME_WAYS entries, least recently filled evicted. Only successful lookups are kept.
 */
#include <errno.h>
#include <pthread.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "common/err.h"
#include "fuse/fusefs_internal.h"

#define NAME_TTL_NS (1000ll * 1000 * 1000)
#define NAME_SETS 64u
#define NAME_WAYS 4u
/* getpwuid_r's buffer: grown from the first size up to the cap on ERANGE. */
#define PWBUF_FIRST 4096u
#define PWBUF_MAX (1u << 20)

struct name_slot {
	bool used;
	uint32_t uid;
	int64_t filled_ns;          /* monotonic; expired NAME_TTL_NS later */
	char name[POLICY_NAME_MAX + 1];     /* "" for a uid without a (named) passwd entry */
};

struct name_set {
	pthread_mutex_t lock;       /* guards slots[] */
	struct name_slot slots[NAME_WAYS];
};

struct fusefs_subjects {
	struct name_set sets[NAME_SETS];
};

int fusefs_subjects_new(struct fusefs_subjects **ret)
{
	struct fusefs_subjects *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	for (unsigned i = 0; i < NAME_SETS; i++)
		pthread_mutex_init(&c->sets[i].lock, NULL);
	*ret = c;
	return 0;
}

void fusefs_subjects_free(struct fusefs_subjects *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < NAME_SETS; i++)
		pthread_mutex_destroy(&c->sets[i].lock);
	free(c);
}

static struct name_set *set_of(struct fusefs_subjects *c, uint32_t uid)
{
	uint64_t h = (uint64_t)uid * 0x9E3779B97F4A7C15ull;

	return &c->sets[h >> 58]; /* top 6 bits: NAME_SETS == 64 */
}

_Static_assert(NAME_SETS == 64, "set_of() takes the top 6 bits of the hash");

/* The name of uid into out (POLICY_NAME_MAX + 1 bytes): "" when it has no passwd entry (or one
 * without a name). -ENAMETOOLONG / -EINVAL for a name an audit record must not carry (as
 * policy_subject_lookup() refuses them), other -errno from NSS. */
static int name_lookup(uid_t uid, char *out)
{
	struct passwd pw, *res = NULL;
	char *buf = NULL;
	size_t size = PWBUF_FIRST, len;
	int r;

	for (;;) {
		char *b = realloc(buf, size);

		if (!b) {
			free(buf);
			return -ENOMEM;
		}
		buf = b;
		r = getpwuid_r(uid, &pw, buf, size, &res);
		if (r != ERANGE || size >= PWBUF_MAX)
			break;
		size *= 2;
	}
	if (r != 0) {
		free(buf);
		return err_set(-r, "uid %u: passwd lookup failed: %s", (unsigned)uid, strerror(r));
	}
	out[0] = '\0';
	if (!res || !pw.pw_name || !pw.pw_name[0]) {
		free(buf);
		return 0;
	}
	len = strlen(pw.pw_name);
	if (len > POLICY_NAME_MAX)
		r = err_set(-ENAMETOOLONG, "uid %u: user name longer than %d bytes", (unsigned)uid,
			    POLICY_NAME_MAX);
	else if (!policy_name_valid(pw.pw_name))
		r = err_set(-EINVAL, "uid %u: user name is not printable ASCII (or starts or ends "
				     "with a space)", (unsigned)uid);
	else
		memcpy(out, pw.pw_name, len + 1);
	free(buf);
	return r;
}

/* The name of uid, from the cache when a fresh entry is there. */
static int name_get(struct fusefs_subjects *c, uid_t uid, char *out)
{
	struct name_set *set = set_of(c, uid);
	int64_t now = now_monotonic_ns();
	struct name_slot *victim = NULL;
	char name[POLICY_NAME_MAX + 1];
	int r;

	pthread_mutex_lock(&set->lock);
	for (unsigned w = 0; w < NAME_WAYS; w++) {
		struct name_slot *e = &set->slots[w];

		if (e->used && e->uid == uid && now - e->filled_ns < NAME_TTL_NS) {
			memcpy(out, e->name, sizeof(e->name));
			pthread_mutex_unlock(&set->lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&set->lock);

	/* Outside the lock: NSS may be slow (LDAP); two threads may both look up, harmlessly. */
	r = name_lookup(uid, name);
	if (r < 0)
		return r;
	pthread_mutex_lock(&set->lock);
	for (unsigned w = 0; w < NAME_WAYS; w++) {
		struct name_slot *e = &set->slots[w];

		if (e->used && e->uid == uid) {
			victim = e;
			break;
		}
		if (!victim || (victim->used && (!e->used || e->filled_ns < victim->filled_ns)))
			victim = e;
	}
	victim->used = true;
	victim->uid = uid;
	victim->filled_ns = now;
	memcpy(victim->name, name, sizeof(name));
	pthread_mutex_unlock(&set->lock);
	memcpy(out, name, sizeof(name));
	return 0;
}

int fusefs_subject_get(struct fusefs_subjects *c, fuse_req_t req,
		       struct policy_subject *ret_subject)
{
	const struct fuse_ctx *x = fuse_req_ctx(req);
	/* ~4 KiB each, on the worker's stack; copied out only on success. */
	struct policy_subject s = { .uid = x->uid, .gids = { x->gid }, .ngids = 1 };
	gid_t groups[POLICY_GROUPS_MAX - 1];
	int n, r;

	/* pid 0: a request the kernel could not attribute to a process we can see. */
	if (x->pid <= 0)
		return err_set(-ESRCH, "uid %u: the request names no process whose groups we can "
				       "read", (unsigned)x->uid);
	n = fuse_req_getgroups(req, (int)ARRAY_SIZE(groups), groups);
	if (n < 0)
		return err_set(n, "uid %u pid %d: cannot read the process's groups: %s",
			       (unsigned)x->uid, (int)x->pid, strerror(-n));
	if ((size_t)n > ARRAY_SIZE(groups))
		return err_set(-E2BIG, "uid %u pid %d: in %d groups, more than the %d considered",
			       (unsigned)x->uid, (int)x->pid, n + 1, POLICY_GROUPS_MAX);
	/* gids[0] is the request's gid; the list may hold it again. */
	for (int i = 0; i < n; i++)
		s.gids[s.ngids++] = groups[i];
	r = name_get(c, x->uid, s.user);
	if (r < 0)
		return r;
	*ret_subject = s;
	return 0;
}
