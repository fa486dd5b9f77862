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
 * pid 0) the request is refused rather than decided on a guess. Cached per thread only under the
 * conditions below (the process cache), which notice every way the groups can change (see
 * docs/THREAT_MODEL.md section 5.2).
 *
 * Names. The user's name is only written into records (decisions match numeric ids), so it is
 * cached by uid for NAME_TTL_NS: a renamed user shows its old name for at most that long. Bounded:
 * NAME_SETS x NAME_WAYS entries, least recently filled evicted. Only successful lookups are kept.
 *
 * The process cache (issue 13). Reading /proc/<tid>/status (groups), /comm (process name) and
 * /cgroup or /environ (job id) on every lookup and open was about 5 % of the daemon's CPU on a
 * small-file workload. So each calling thread's groups and job id are kept, and on every request
 * only /proc/<tid>/stat is read (one small file: it gives the name, the start time and the
 * addresses below) plus the link /proc/<tid>/ns/user. An entry answers only when all of these
 * match what it was filled with:
 *   - the thread id and the thread's start time (clock ticks since boot): a reused thread id is
 *     another thread, started later;
 *   - the request's uid and gid (the kernel gives them with every request): a process that
 *     changed its user or group (setuid, a set-user-id program) is looked at afresh;
 *   - the process image: start of code, of the stack, of the arguments and of the environment
 *     (fields 26, 28, 48 and 50 of stat), which change on every execve because the kernel
 *     randomises them, and always for a set-user-id or set-group-id program (it clears
 *     ADDR_NO_RANDOMIZE for them); so a group change made by a privileged program the process
 *     executed is seen;
 *   - the user namespace (a process that entered a new one may hold CAP_SETGID there);
 *   - age: at most PROC_TTL_NS, so a process moved to another job's cgroup is seen within that.
 * And an entry is only ever made for a thread that cannot change its groups by itself: one whose
 * permitted capabilities (CapPrm, which only shrink without an execve) lack CAP_SETGID. A thread
 * that holds it (root, a launcher) has its status read on every request, as before.
 * Bounded: PROC_SETS x PROC_WAYS entries, the oldest filled evicted.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "common/err.h"
#include "fuse/fusefs_internal.h"
#include "fuse/job.h"

#define NAME_TTL_NS (1000ll * 1000 * 1000)
#define NAME_SETS 64u
#define NAME_WAYS 4u
/* getpwuid_r's buffer: grown from the first size up to the cap on ERANGE. */
#define PWBUF_FIRST 4096u
#define PWBUF_MAX (1u << 20)
#define PROC_TTL_NS (1000ll * 1000 * 1000)
#define PROC_SETS 128u
#define PROC_WAYS 4u
/* /proc/<tid>/status with POLICY_GROUPS_MAX groups of up to 10 digits fits in this. */
#define STATUS_READ_MAX (16u << 10)
#define SIG_FIELDS 4

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

/* What /proc/<tid>/stat says now. */
struct proc_stat {
	char comm[16];                  /* the thread's name, NUL-terminated */
	uint64_t start;                 /* start time, clock ticks since boot */
	uint64_t image[SIG_FIELDS];     /* startcode, startstack, arg_start, env_start */
};

/* One thread's groups and job, as read when it was filled. */
struct proc_slot {
	bool used;
	pid_t tid;
	uint32_t uid, gid;              /* the request's, when filled */
	uint64_t start;
	uint64_t image[SIG_FIELDS];
	uint64_t userns;                /* inode of /proc/<tid>/ns/user */
	int64_t filled_ns;              /* monotonic */
	size_t ngroups;
	uint32_t *groups;               /* supplementary groups, ngroups; owned */
	uint64_t job_id;
	int job_source;                 /* enum fusefs_job_source */
};

struct proc_set {
	pthread_mutex_t lock;           /* guards slots[] */
	struct proc_slot slots[PROC_WAYS];
};

/* One slot per session hash: a session found in its slot (whole key equal) was recorded
 * durably; a collision overwrites, which only costs a durable record more. */
struct session_slot {
	bool used;
	struct fusefs_session s;
};

struct fusefs_subjects {
	struct name_set sets[NAME_SETS];
	struct proc_set procs[PROC_SETS];
	pthread_mutex_t sessions_lock;      /* guards sessions[] */
	struct session_slot sessions[FUSEFS_SESSIONS];
	_Atomic uint64_t proc_hits, proc_misses;
};

int fusefs_subjects_new(struct fusefs_subjects **ret)
{
	struct fusefs_subjects *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	for (unsigned i = 0; i < NAME_SETS; i++)
		pthread_mutex_init(&c->sets[i].lock, NULL);
	for (unsigned i = 0; i < PROC_SETS; i++)
		pthread_mutex_init(&c->procs[i].lock, NULL);
	pthread_mutex_init(&c->sessions_lock, NULL);
	*ret = c;
	return 0;
}

void fusefs_subjects_free(struct fusefs_subjects *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < NAME_SETS; i++)
		pthread_mutex_destroy(&c->sets[i].lock);
	pthread_mutex_destroy(&c->sessions_lock);
	for (unsigned i = 0; i < PROC_SETS; i++) {
		pthread_mutex_destroy(&c->procs[i].lock);
		for (unsigned w = 0; w < PROC_WAYS; w++)
			free(c->procs[i].slots[w].groups);
	}
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

/* ---- The process cache ---------------------------------------------------------------------- */

/* Read a whole small /proc file of tid into buf (NUL-terminated); its length, or -errno. */
static ssize_t proc_read(pid_t tid, const char *what, char *buf, size_t size)
{
	char path[64];
	size_t have = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)tid, what);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	while (have < size - 1 && (n = read(fd, buf + have, size - 1 - have)) > 0)
		have += (size_t)n;
	if (n < 0)
		n = -errno;
	close(fd);
	if (n < 0)
		return n;
	if (have == size - 1)
		return -E2BIG;
	buf[have] = '\0';
	return (ssize_t)have;
}

/* Parse /proc/<tid>/stat. The name (field 2) is in parentheses and may hold anything, spaces and
 * ')' included: it ends at the last ')'. Fields from 3 on are numbers separated by one space.
 * -EIO for a line that does not parse. */
static int proc_stat_get(pid_t tid, struct proc_stat *ret)
{
	static const int want[SIG_FIELDS] = { 26, 28, 48, 50 };
	struct proc_stat st = { .comm = "" };
	char buf[1024];
	const char *open_p, *close_p, *p;
	ssize_t n = proc_read(tid, "stat", buf, sizeof(buf));
	size_t clen;
	int field = 3;

	if (n < 0)
		return (int)n;
	open_p = strchr(buf, '(');
	close_p = strrchr(buf, ')');
	if (!open_p || !close_p || close_p < open_p || close_p[1] != ' ')
		return -EIO;
	clen = MIN((size_t)(close_p - open_p - 1), sizeof(st.comm) - 1);
	memcpy(st.comm, open_p + 1, clen);
	st.comm[clen] = '\0';
	for (p = close_p + 2; *p && field <= 50; field++) {
		char *end;
		unsigned long long v;

		if (field == 3) {   /* the state: one letter */
			p = strchr(p, ' ');
			if (!p)
				return -EIO;
			p++;
			continue;
		}
		errno = 0;
		v = strtoull(p, &end, 10);
		if (end == p || errno)
			v = 0;      /* a negative field (priority, nice): none we keep */
		if (field == 22)
			st.start = v;
		for (int i = 0; i < SIG_FIELDS; i++)
			if (field == want[i])
				st.image[i] = v;
		p = strchr(end, ' ');
		if (!p)
			break;
		p++;
	}
	if (field < 22)
		return -EIO;
	*ret = st;
	return 0;
}

/* The inode number of tid's user namespace, from the link "user:[N]". 0 if unreadable. */
static uint64_t proc_userns(pid_t tid)
{
	char path[64], link[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)tid);
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return 0;
	link[n] = '\0';
	return strncmp(link, "user:[", 6) == 0 ? strtoull(link + 6, NULL, 10) : 0;
}

/* The supplementary groups of tid (at most max, into groups) and whether it may change them
 * (CAP_SETGID in its permitted set), from /proc/<tid>/status. -E2BIG more than max groups. */
static int proc_status_get(pid_t tid, gid_t *groups, size_t max, size_t *ret_n,
			   bool *ret_can_setgid)
{
	char *buf = malloc(STATUS_READ_MAX);
	const char *g, *cap;
	size_t n = 0;
	bool can = true;
	ssize_t len;

	if (!buf)
		return -ENOMEM;
	len = proc_read(tid, "status", buf, STATUS_READ_MAX);
	if (len < 0) {
		free(buf);
		return (int)len;
	}
	g = strstr(buf, "\nGroups:");
	cap = strstr(buf, "\nCapPrm:");
	if (!g) {
		free(buf);
		return -EIO;
	}
	if (cap) {
		char *end;
		unsigned long long v = strtoull(cap + 8, &end, 16);

		can = end == cap + 8 || (v & (1ull << CAP_SETGID)) != 0;
	}
	for (const char *p = g + 8; *p && *p != '\n';) {
		char *end;
		unsigned long long v;

		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p || *p == '\n')
			break;
		v = strtoull(p, &end, 10);
		if (end == p || v > UINT32_MAX) {
			free(buf);
			return -EIO;
		}
		if (n == max) {
			free(buf);
			return -E2BIG;
		}
		groups[n++] = (gid_t)v;
		p = end;
	}
	free(buf);
	*ret_n = n;
	*ret_can_setgid = can;
	return 0;
}

static struct proc_set *proc_set_of(struct fusefs_subjects *c, pid_t tid)
{
	uint64_t h = (uint64_t)(uint32_t)tid * 0x9E3779B97F4A7C15ull;

	return &c->procs[h >> 57]; /* top 7 bits: PROC_SETS == 128 */
}

_Static_assert(PROC_SETS == 128, "proc_set_of() takes the top 7 bits of the hash");

static bool slot_matches(const struct proc_slot *e, pid_t tid, uint32_t uid, uint32_t gid,
			 const struct proc_stat *st, uint64_t userns, int64_t now)
{
	return e->used && e->tid == tid && e->uid == uid && e->gid == gid &&
	       e->start == st->start && memcmp(e->image, st->image, sizeof(e->image)) == 0 &&
	       e->userns == userns && now - e->filled_ns < PROC_TTL_NS;
}

void fusefs_subjects_stats(struct fusefs_subjects *c, uint64_t *ret_hits, uint64_t *ret_misses)
{
	*ret_hits = atomic_load(&c->proc_hits);
	*ret_misses = atomic_load(&c->proc_misses);
}

int fusefs_subject_of(struct fusefs_subjects *c, pid_t tid, uint32_t uid, uint32_t gid,
		      struct policy_subject *ret_subject, struct fusefs_proc *ret_proc)
{
	/* ~4 KiB, on the worker's stack; copied out only on success. Only the fields and the
	 * groups in use are written (zeroing all of it on every request showed in the profile). */
	struct policy_subject s;
	struct fusefs_proc pr = { .job_source = FUSEFS_JOB_NONE };
	struct proc_set *set;
	struct proc_stat st;
	gid_t groups[POLICY_GROUPS_MAX - 1];
	size_t n = 0;
	int64_t now;
	uint64_t userns;
	bool hit = false, can_setgid = true;
	int r;

	/* pid 0: a request the kernel could not attribute to a process we can see. */
	if (tid <= 0)
		return err_set(-ESRCH, "uid %u: the request names no process whose groups we can "
				       "read", (unsigned)uid);
	s.uid = uid;
	s.user[0] = '\0';
	s.gids[0] = gid;
	s.ngids = 1;
	r = proc_stat_get(tid, &st);
	if (r < 0)
		return err_set(r, "uid %u pid %d: cannot read the process's state: %s",
			       (unsigned)uid, (int)tid, strerror(-r));
	userns = proc_userns(tid);
	now = now_monotonic_ns();
	memcpy(pr.name, st.comm, sizeof(st.comm));
	pr.start = st.start;
	set = proc_set_of(c, tid);
	pthread_mutex_lock(&set->lock);
	for (unsigned w = 0; w < PROC_WAYS && userns; w++) {
		const struct proc_slot *e = &set->slots[w];

		if (slot_matches(e, tid, uid, gid, &st, userns, now)) {
			for (size_t i = 0; i < e->ngroups; i++)
				s.gids[s.ngids++] = e->groups[i];
			pr.job_id = e->job_id;
			pr.job_source = e->job_source;
			hit = true;
			break;
		}
	}
	pthread_mutex_unlock(&set->lock);
	if (hit) {
		atomic_fetch_add_explicit(&c->proc_hits, 1, memory_order_relaxed);
	} else {
		atomic_fetch_add_explicit(&c->proc_misses, 1, memory_order_relaxed);
		/* Read after stat: an execve in between changes the image, so what is cached
		 * under the old image is never used again. */
		r = proc_status_get(tid, groups, ARRAY_SIZE(groups), &n, &can_setgid);
		if (r == -E2BIG)
			return err_set(r, "uid %u pid %d: in more than the %d groups considered",
				       (unsigned)uid, (int)tid, POLICY_GROUPS_MAX);
		if (r < 0)
			return err_set(r, "uid %u pid %d: cannot read the process's groups: %s",
				       (unsigned)uid, (int)tid, strerror(-r));
		/* gids[0] is the request's gid; the list may hold it again. */
		for (size_t i = 0; i < n; i++)
			s.gids[s.ngids++] = groups[i];
		pr.job_source = (int)fusefs_process_job(tid, &pr.job_id);
	}
	r = name_get(c, uid, s.user);
	if (r < 0)
		return r;
	if (!hit && !can_setgid && userns) {
		uint32_t *copy = n ? malloc(n * sizeof(*copy)) : NULL;
		struct proc_slot *victim = NULL;

		if (n && !copy)
			goto out;   /* not cached: no harm */
		for (size_t i = 0; i < n; i++)
			copy[i] = groups[i];
		pthread_mutex_lock(&set->lock);
		for (unsigned w = 0; w < PROC_WAYS; w++) {
			struct proc_slot *e = &set->slots[w];

			if (!e->used || e->tid == tid) {
				victim = e;
				break;
			}
			if (!victim || e->filled_ns < victim->filled_ns)
				victim = e;
		}
		free(victim->groups);
		*victim = (struct proc_slot){
			.used = true, .tid = tid, .uid = uid, .gid = gid, .start = st.start,
			.userns = userns, .filled_ns = now, .ngroups = n, .groups = copy,
			.job_id = pr.job_id, .job_source = pr.job_source,
		};
		memcpy(victim->image, st.image, sizeof(st.image));
		pthread_mutex_unlock(&set->lock);
	}
out:
	ret_subject->uid = s.uid;
	memcpy(ret_subject->user, s.user, sizeof(s.user));
	ret_subject->ngids = s.ngids;
	memcpy(ret_subject->gids, s.gids, s.ngids * sizeof(s.gids[0]));
	if (ret_proc)
		*ret_proc = pr;
	return 0;
}

int fusefs_subject_get(struct fusefs_subjects *c, fuse_req_t req,
		       struct policy_subject *ret_subject, struct fusefs_proc *ret_proc)
{
	const struct fuse_ctx *x = fuse_req_ctx(req);

	return fusefs_subject_of(c, x->pid, x->uid, x->gid, ret_subject, ret_proc);
}

/* ---- Audit sessions ------------------------------------------------------------------------ */

static bool session_eq(const struct fusefs_session *a, const struct fusefs_session *b)
{
	return a->tid == b->tid && a->start == b->start && a->uid == b->uid &&
	       a->dsid == b->dsid && a->version == b->version && a->grant_id == b->grant_id &&
	       a->rule_id == b->rule_id;
}

static struct session_slot *session_slot(struct fusefs_subjects *c, const struct fusefs_session *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	const uint64_t parts[] = { (uint64_t)(uint32_t)s->tid, s->start, s->uid, s->dsid,
				   s->version, s->grant_id, s->rule_id };

	for (size_t i = 0; i < ARRAY_SIZE(parts); i++)
		h = (h ^ parts[i]) * 0x100000001b3ull;
	return &c->sessions[(h ^ (h >> 29)) % FUSEFS_SESSIONS];
}

bool fusefs_session_known(struct fusefs_subjects *c, const struct fusefs_session *s)
{
	struct session_slot *e = session_slot(c, s);
	bool known;

	pthread_mutex_lock(&c->sessions_lock);
	known = e->used && session_eq(&e->s, s);
	pthread_mutex_unlock(&c->sessions_lock);
	return known;
}

void fusefs_session_add(struct fusefs_subjects *c, const struct fusefs_session *s)
{
	struct session_slot *e = session_slot(c, s);

	pthread_mutex_lock(&c->sessions_lock);
	e->used = true;
	e->s = *s;
	pthread_mutex_unlock(&c->sessions_lock);
}
