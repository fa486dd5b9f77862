/* fusefs: the session's life: create, mount, serve, stop, invalidate, free. The operations
 * themselves are in ops.c.
 *
 * Stopping. fusefs_stop() may run on any thread while fusefs_run() serves. It marks the session
 * exited and unmounts; the unmount ends the kernel connection, which makes every worker's read of
 * /dev/fuse return ENODEV, so each leaves its loop and fuse_session_loop_mt() returns. We unmount
 * with umount2() ourselves (we run as root) instead of fuse_session_unmount(), because the latter
 * also closes the session fd that the loop is still using (to clone new workers' fds): a race on
 * a descriptor number. A plain unmount fails with EBUSY while some process still has a file or
 * directory open on the mount; then MNT_FORCE aborts the connection (FUSE's umount_begin), which
 * fails those processes' calls with ENOTCONN and wakes the workers, and MNT_DETACH removes the
 * mount. Without this a daemon stopping under an open file would wait for the file to be closed.
 * fuse_session_unmount() is called in fusefs_free(), after the loop has returned, where it finds
 * the connection gone and only closes the fd (or, if we could not unmount, does it itself).
 *
 * Lock order: state_lock is taken by the control paths only (mount, stop, invalidate, free),
 * never by request handlers; so the kernel may wait on a handler while we hold it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/common.h"
#include "common/err.h"
#include "fuse/fusefs_internal.h"

#define FSTYPE "fuse.enclave"
/* Bounded caches: the path map holds paths of recently looked-up nodes (audit records), the
 * dataset map the names of datasets by id. */
#define PATHS_ENTRIES (64u * 1024)
#define PATHS_BYTES (16u << 20)
#define DSNAMES_ENTRIES 4096u
#define DSNAMES_BYTES (1u << 20)
/* Read-ahead (fuse/prefetch.h): threads by default, and the buffers of every handle together. */
#define PREFETCH_THREADS_DEFAULT_MAX 4
#define PREFETCH_BUDGET (64u << 20)
/* The cached-inode set: open addressing at most half full. */
#define CACHED_BITS 17
#define CACHED_SLOTS (1u << CACHED_BITS)
_Static_assert(CACHED_SLOTS >= 2 * FUSEFS_CACHED_MAX, "the cached set stays at most half full");

uint64_t fusefs_log_limited(struct fusefs *fs, enum fusefs_log_kind what, const char *fmt, ...)
{
	struct fusefs_log_limit *l = &fs->logs[what];
	char line[ERR_DETAIL_MAX + 256];
	int64_t now = now_monotonic_ns(), last = atomic_load(&l->last_ns);
	uint64_t left;
	va_list ap;

	/* One winner per interval: whoever moves last_ns prints; everyone else counts. */
	if ((last != 0 && now - last < (int64_t)FUSEFS_LOG_INTERVAL_S * 1000000000LL) ||
	    !atomic_compare_exchange_strong(&l->last_ns, &last, now)) {
		atomic_fetch_add(&l->left_out, 1);
		return 0;
	}
	left = atomic_exchange(&l->left_out, 0);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* libfuse's logger: stderr unless the daemon installed its own (fuse_set_log_func). */
	if (left)
		fuse_log(FUSE_LOG_ERR, "%s (and %llu more like it in the last %u s)\n", line,
			 (unsigned long long)left, FUSEFS_LOG_INTERVAL_S);
	else
		fuse_log(FUSE_LOG_ERR, "%s\n", line);
	return left + 1;
}

int fusefs_reserve(struct fusefs *fs, uint64_t bytes)
{
	return audit_reserve(fs->log, bytes);
}

void fusefs_unreserve(struct fusefs *fs, uint64_t bytes)
{
	audit_unreserve(fs->log, bytes);
}

bool fusefs_check_admit(struct fusefs *fs, uint32_t uid, const char *user, const void *key,
			size_t keylen)
{
	return fusefs_limiter_admit(fs->limiter, uid, user, FUSEFS_REFUSAL_CHECK, key, keylen,
				    now_realtime_ns());
}

void fusefs_test_log_window_end(struct fusefs *fs)
{
	for (unsigned i = 0; i < FUSEFS_LOG_COUNT; i++) {
		int64_t last = atomic_load(&fs->logs[i].last_ns);

		if (last)
			atomic_store(&fs->logs[i].last_ns,
				     last - (int64_t)(FUSEFS_LOG_INTERVAL_S + 1) * 1000000000LL);
	}
}

void fusefs_test_fail_next(struct fusefs *fs, enum fusefs_fault where, int err)
{
	atomic_store(&fs->fault_err, err);
	atomic_store(&fs->fault_where, (int)where);
}

int fusefs_new(struct store *st, struct audit_log *log, const struct fusefs_callbacks *cb,
	       const struct fusefs_options *opts, struct fusefs **ret_fs)
{
	char arg0[] = "enclave", arg1[] = "-o";
	char arg2[] = "ro,allow_other,default_permissions,fsname=enclave,subtype=enclave";
	char arg3[] = "-d";
	char *argv[] = { arg0, arg1, arg2, arg3, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(opts && opts->debug ? 4 : 3, argv);
	struct fusefs *fs;
	int r;

	if (!st || !log || !cb || !cb->decide || !opts || !opts->mountpoint || !opts->mountpoint[0])
		return err_set(-EINVAL, "fusefs: store, audit log, decide callback and mount point "
					"are required");
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->st = st;
	fs->log = log;
	/* Whatever request meets an index integrity failure, the audit log gets a record. */
	store_set_integrity_hook(st, fusefs_record_index_integrity, fs);
	fs->cb = *cb;
	fs->max_threads = opts->max_threads;
	fs->debug = opts->debug;
	fs->created_ns = now_realtime_ns();
	pthread_mutex_init(&fs->state_lock, NULL);
	pthread_mutex_init(&fs->handles_lock, NULL);
	pthread_mutex_init(&fs->cached_lock, NULL);
	pthread_mutex_init(&fs->memo_lock, NULL);
	pthread_mutex_init(&fs->hint_lock, NULL);
	pthread_mutex_init(&fs->flush_lock, NULL);
	pthread_cond_init(&fs->flush_cond, NULL);
	for (unsigned i = 0; i < FUSEFS_GEN_BUCKETS; i++)
		atomic_init(&fs->gens[i], 1);
	fs->handles.prev = fs->handles.next = &fs->handles;
	fs->mountpoint = strdup(opts->mountpoint);
	if (!fs->mountpoint) {
		r = -ENOMEM;
		goto out_free;
	}
	r = fusefs_map_new(PATHS_ENTRIES, PATHS_BYTES, &fs->paths);
	if (r == 0)
		r = fusefs_map_new(DSNAMES_ENTRIES, DSNAMES_BYTES, &fs->dsnames);
	if (r == 0)
		r = fusefs_subjects_new(&fs->subjects);
	if (r == 0)
		r = fusefs_views_new(&fs->views);
	if (r == 0) {
		r = fusefs_limiter_new(opts->refusal_window_s, &fs->limiter);
		if (r == -EINVAL)
			r = err_set(r, "fusefs: a refusal window of %u s is longer than %u s",
				    opts->refusal_window_s, FUSEFS_REFUSAL_WINDOW_MAX_S);
	}
	if (r < 0)
		goto out_free;
	/* calloc: the kernel hands out zero pages as slots are first touched. */
	fs->cached = calloc(CACHED_SLOTS, sizeof(*fs->cached));
	if (!fs->cached) {
		r = -ENOMEM;
		goto out_free;
	}
	if (!opts->no_prefetch) {
		unsigned n = opts->prefetch_threads;

		if (n == 0) {
			long cpus = sysconf(_SC_NPROCESSORS_ONLN);

			n = cpus < 1 ? 1 : (unsigned)MIN(cpus, (long)PREFETCH_THREADS_DEFAULT_MAX);
		}
		r = fusefs_prefetch_new(st, n, PREFETCH_BUDGET, &fs->prefetch);
		if (r < 0) {
			r = err_set(r, "fusefs: cannot start the read-ahead threads: %s",
				    strerror(-r));
			goto out_free;
		}
	}
	r = -pthread_key_create(&fs->worker_key, fusefs_worker_free);
	if (r < 0)
		goto out_free;
	fs->worker_key_made = true;
	fs->se = fuse_session_new(&args, &fusefs_ops, sizeof(fusefs_ops), fs);
	fuse_opt_free_args(&args);
	if (!fs->se) {
		r = err_set(-EINVAL, "fusefs: libfuse refused the session options (its message is "
				     "on stderr)");
		goto out_free;
	}
	*ret_fs = fs;
	return 0;

out_free:
	fusefs_free(fs);
	return r;
}

/* Undo mountinfo's octal escapes (\040 space, \011 tab, \012 newline, \134 backslash) in place. */
static void unescape(char *s)
{
	char *o = s;

	for (char *p = s; *p; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
		    p[3] >= '0' && p[3] <= '7') {
			*o++ = (char)((p[1] - '0') << 6 | (p[2] - '0') << 3 | (p[3] - '0'));
			p += 3;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
}

/* The next space-separated field of *p, NUL-terminated in place; NULL at the end. */
static char *field(char **p)
{
	char *s = *p, *e;

	while (*s == ' ')
		s++;
	if (!*s || *s == '\n')
		return NULL;
	e = s + strcspn(s, " \n");
	if (*e) {
		*e = '\0';
		*p = e + 1;
	} else {
		*p = e;
	}
	return s;
}

/* The topmost mount at path (canonical) in /proc/self/mountinfo: 1 and its device and whether
 * its type is ours; 0 nothing is mounted there; -errno. Read instead of stat()ing the mount point,
 * which would send a request to a file system that may not be serving. */
static int mountinfo_top(const char *path, dev_t *ret_dev, bool *ret_ours)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	int found = 0;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char *p = line, *devf, *mp, *fstype = NULL, *t;
		unsigned maj, min;

		/* id parent major:minor root mountpoint options [optional...] - fstype source */
		if (!field(&p) || !field(&p) || !(devf = field(&p)) || !field(&p) ||
		    !(mp = field(&p)) || !field(&p))
			continue;
		while ((t = field(&p)))
			if (strcmp(t, "-") == 0) {
				fstype = field(&p);
				break;
			}
		if (!fstype || sscanf(devf, "%u:%u", &maj, &min) != 2)
			continue;
		unescape(mp);
		if (strcmp(mp, path) != 0)
			continue;
		/* Later lines are mounted later: the last match is on top. */
		found = 1;
		*ret_dev = makedev(maj, min);
		*ret_ours = strcmp(fstype, FSTYPE) == 0;
	}
	free(line);
	fclose(f);
	return found;
}

int fusefs_mount(struct fusefs *fs)
{
	char canon[PATH_MAX], *parent = NULL, *mp = fs->mountpoint;
	struct statfs sfs;
	struct stat s, ps;
	dev_t dev = 0;
	bool ours = false;
	int r;

	pthread_mutex_lock(&fs->state_lock);
	if (fs->mounted || fs->stopped) {
		r = err_set(-EINVAL, "fusefs: %s: already mounted, or stopped", mp);
		goto out;
	}
	/* statfs always asks the file system; a stat may be answered from attributes the kernel
	 * still holds of a mount whose daemon is gone. */
	if (statfs(mp, &sfs) < 0 && errno == ENOTCONN)
		r = -ENOTCONN;
	else
		r = stat(mp, &s) < 0 ? -errno : 0;
	if (r < 0) {
		if (r != -ENOTCONN) {
			r = err_set(r, "mount point %s: %s", mp, strerror(-r));
			goto out;
		}
		/* A FUSE mount whose daemon is gone (killed): detach it, then use the directory. */
		if (umount2(mp, MNT_DETACH | UMOUNT_NOFOLLOW) < 0) {
			r = err_set(-errno, "cannot detach the stale FUSE mount at %s: %s", mp,
				    strerror(errno));
			goto out;
		}
		if (stat(mp, &s) < 0) {
			r = err_set(-errno, "mount point %s: %s", mp, strerror(errno));
			goto out;
		}
	}
	if (!S_ISDIR(s.st_mode)) {
		r = err_set(-ENOTDIR, "mount point %s is not a directory", mp);
		goto out;
	}
	if (!realpath(mp, canon)) {
		r = err_set(-errno, "mount point %s: %s", mp, strerror(errno));
		goto out;
	}
	/* Something mounted there already: another file system (a different device than its
	 * parent's), or anything mountinfo lists at that path (a bind mount of the same one). */
	if (asprintf(&parent, "%s/..", canon) < 0) {
		parent = NULL;
		r = -ENOMEM;
		goto out;
	}
	if (stat(parent, &ps) < 0) {
		r = err_set(-errno, "parent of mount point %s: %s", canon, strerror(errno));
		goto out;
	}
	r = mountinfo_top(canon, &dev, &ours);
	if (r < 0) {
		r = err_set(r, "cannot read /proc/self/mountinfo: %s", strerror(-r));
		goto out;
	}
	if (s.st_dev != ps.st_dev || r == 1) {
		r = err_set(-EBUSY, "something is already mounted at %s", canon);
		goto out;
	}
	if (fuse_session_mount(fs->se, canon) != 0) {
		r = err_set(-EIO, "cannot mount at %s (libfuse's message is on stderr)", canon);
		goto out;
	}
	free(fs->mountpoint);
	fs->mountpoint = strdup(canon);
	if (!fs->mountpoint) {
		/* Mounted, but we no longer know where: undo through libfuse. */
		fuse_session_unmount(fs->se);
		r = -ENOMEM;
		goto out;
	}
	fs->mounted = true;
	fs->ever_mounted = true;
	fs->dev = 0;
	if (mountinfo_top(canon, &dev, &ours) == 1 && ours)
		fs->dev = dev;
	r = 0;
out:
	pthread_mutex_unlock(&fs->state_lock);
	free(parent);
	return r;
}

static int run_loop(struct fusefs *fs);

int fusefs_run(struct fusefs *fs)
{
	int r;

	pthread_mutex_lock(&fs->state_lock);
	if (fs->stopped) {
		pthread_mutex_unlock(&fs->state_lock);
		return 0;
	}
	if (!fs->mounted) {
		pthread_mutex_unlock(&fs->state_lock);
		return err_set(-EINVAL, "fusefs: not mounted");
	}
	pthread_mutex_unlock(&fs->state_lock);

	/* Summaries of refusal windows are written while the session runs, and the last one when
	 * it ends: before the caller records that it stops. */
	pthread_mutex_lock(&fs->flush_lock);
	fs->flush_stop = false;
	pthread_mutex_unlock(&fs->flush_lock);
	if (pthread_create(&fs->flusher, NULL, fusefs_flusher_main, fs) != 0)
		return err_set(-EAGAIN, "fusefs: cannot start the refusal summary thread");
	r = run_loop(fs);
	pthread_mutex_lock(&fs->flush_lock);
	fs->flush_stop = true;
	pthread_cond_signal(&fs->flush_cond);
	pthread_mutex_unlock(&fs->flush_lock);
	pthread_join(fs->flusher, NULL);
	fusefs_refusals_flush(fs, true);
	return r;
}

/* The session's worker loop, until it is exited: 0, or -errno with err_detail(). */
static int run_loop(struct fusefs *fs)
{
	int r;

#if FUSE_USE_VERSION >= FUSE_MAKE_VERSION(3, 12)
	{
		struct fuse_loop_config *cfg = fuse_loop_cfg_create();

		if (!cfg)
			return -ENOMEM;
		/* One /dev/fuse fd per worker: requests spread over the workers' own queues. */
		fuse_loop_cfg_set_clone_fd(cfg, 1);
		if (fs->max_threads)
			fuse_loop_cfg_set_max_threads(cfg, fs->max_threads);
		r = fuse_session_loop_mt(fs->se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
#else
	{
		/* libfuse < 3.12 has no thread cap; the idle limit is the closest setting. */
		struct fuse_loop_config cfg = {
			.clone_fd = 1,
			.max_idle_threads = fs->max_threads ? fs->max_threads : 10,
		};

		r = fuse_session_loop_mt(fs->se, &cfg);
	}
#endif
	if (r < 0)
		return err_set(r, "FUSE session at %s failed: %s", fs->mountpoint, strerror(-r));
	if (r > 0)
		return err_set(-EINTR, "FUSE session at %s ended by signal %d", fs->mountpoint, r);
	return 0;
}

/* With state_lock held. See the comment at the top. */
static void unmount_locked(struct fusefs *fs)
{
	const char *mp = fs->mountpoint;
	dev_t top = 0;
	bool ours = false;
	int r;

	if (!fs->mounted)
		return;
	fs->mounted = false;
	r = mountinfo_top(mp, &top, &ours);
	if (r == 0)
		return; /* unmounted from outside already */
	if (r == 1 && !(ours && (fs->dev == 0 || top == fs->dev))) {
		/* Something else is mounted over ours; leave both alone. */
		fuse_log(FUSE_LOG_ERR, "enclave: %s is covered by another mount: not unmounting\n",
			 mp);
		fs->covered = true;
		return;
	}
	if (umount2(mp, UMOUNT_NOFOLLOW) == 0)
		return;
	if (errno == EBUSY) {
		umount2(mp, MNT_FORCE | UMOUNT_NOFOLLOW);
		if (umount2(mp, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL)
			fuse_log(FUSE_LOG_ERR, "enclave: cannot detach %s: %s\n", mp,
				 strerror(errno));
		return;
	}
	if (errno == EPERM) {
		/* Not root: fusermount3 does it. */
		fuse_session_unmount(fs->se);
		return;
	}
	fuse_log(FUSE_LOG_ERR, "enclave: cannot unmount %s: %s\n", mp, strerror(errno));
}

void fusefs_stop(struct fusefs *fs)
{
	if (!fs)
		return;
	pthread_mutex_lock(&fs->state_lock);
	if (!fs->stopped) {
		fs->stopped = true;
		fuse_session_exit(fs->se);
		unmount_locked(fs);
	}
	pthread_mutex_unlock(&fs->state_lock);
}

/* ---- The cached-inode set (see fusefs_internal.h) ----------------------------------------- */

static size_t cached_home(fuse_ino_t ino)
{
	return (size_t)((ino * 0x9E3779B97F4A7C15ull) >> (64 - CACHED_BITS));
}

/* The slot of ino, or CACHED_SLOTS. With cached_lock held. */
static size_t cached_find(struct fusefs *fs, fuse_ino_t ino)
{
	for (size_t i = cached_home(ino);; i = (i + 1) & (CACHED_SLOTS - 1)) {
		if (fs->cached[i].ino == ino)
			return i;
		if (fs->cached[i].ino == 0)
			return CACHED_SLOTS;
	}
}

/* Remove slot i, moving later entries of the same probe run back (Knuth's algorithm R: no
 * tombstones, so lookups stay short). With cached_lock held. */
static void cached_remove(struct fusefs *fs, size_t i)
{
	size_t j = i, k;

	for (;;) {
		fs->cached[i] = (struct fusefs_cached){ 0 };
		do {
			j = (j + 1) & (CACHED_SLOTS - 1);
			if (fs->cached[j].ino == 0) {
				fs->ncached--;
				return;
			}
			k = cached_home(fs->cached[j].ino);
		} while (i <= j ? (i < k && k <= j) : (i < k || k <= j));
		fs->cached[i] = fs->cached[j];
		i = j;
	}
}

bool fusefs_cached_add(struct fusefs *fs, fuse_ino_t ino)
{
	size_t i;
	bool ok = true;

	pthread_mutex_lock(&fs->cached_lock);
	i = cached_find(fs, ino);
	if (i < CACHED_SLOTS) {
		fs->cached[i].open++;
	} else if (fs->ncached >= FUSEFS_CACHED_MAX) {
		ok = false;
	} else {
		for (i = cached_home(ino); fs->cached[i].ino; i = (i + 1) & (CACHED_SLOTS - 1))
			;
		fs->cached[i] = (struct fusefs_cached){ .ino = ino, .open = 1 };
		fs->ncached++;
	}
	pthread_mutex_unlock(&fs->cached_lock);
	if (!ok)
		fusefs_log_limited(fs, FUSEFS_LOG_CACHED,
				"enclave: %u files opened in cache=kernel mode since their "
				"datasets were last invalidated: further ones are served with "
				"direct I/O",
				FUSEFS_CACHED_MAX);
	return ok;
}

void fusefs_cached_release(struct fusefs *fs, fuse_ino_t ino)
{
	size_t i;

	pthread_mutex_lock(&fs->cached_lock);
	i = cached_find(fs, ino);
	if (i < CACHED_SLOTS && fs->cached[i].open > 0)
		fs->cached[i].open--;
	pthread_mutex_unlock(&fs->cached_lock);
}

/* Whether ino is a file of dataset dsid (all: of any dataset), in a view or not. */
static bool ino_in(struct fusefs *fs, fuse_ino_t ino, bool all, uint64_t dsid)
{
	struct fusefs_node n;

	return fusefs_node_decode(fs, ino, &n) && n.kind == FUSEFS_KIND_NODE &&
	       (all || n.dsid == dsid);
}

/* The inodes whose kernel pages must go: every cached-set entry of the dataset (forgetting those
 * no cache-mode handle holds) and every file of it still open (a private mapping of a direct_io
 * file also fills the page cache). Into a new array *ret (NULL and 0 when there is none). */
static int pages_to_drop(struct fusefs *fs, bool all, uint64_t dsid, fuse_ino_t **ret,
			 size_t *ret_n)
{
	fuse_ino_t *inos = NULL, *held = NULL;
	size_t n = 0, nheld = 0;
	int r;

	pthread_mutex_lock(&fs->cached_lock);
	if (fs->ncached > 0) {
		inos = malloc(fs->ncached * sizeof(*inos));
		if (!inos) {
			pthread_mutex_unlock(&fs->cached_lock);
			return -ENOMEM;
		}
		for (size_t i = 0; i < CACHED_SLOTS; i++)
			if (fs->cached[i].ino && ino_in(fs, fs->cached[i].ino, all, dsid))
				inos[n++] = fs->cached[i].ino;
		/* Forget the unheld ones (found again by number: removal moves entries). */
		for (size_t k = 0; k < n; k++) {
			size_t i = cached_find(fs, inos[k]);

			if (i < CACHED_SLOTS && fs->cached[i].open == 0)
				cached_remove(fs, i);
		}
	}
	pthread_mutex_unlock(&fs->cached_lock);

	r = fusefs_handles_inos(fs, all, dsid, &held, &nheld);
	if (r < 0) {
		free(inos);
		return r;
	}
	if (nheld > 0) {
		fuse_ino_t *both = reallocarray(inos, n + nheld, sizeof(*both));

		if (!both) {
			free(inos);
			free(held);
			return -ENOMEM;
		}
		memcpy(both + n, held, nheld * sizeof(*held));
		inos = both;
		n += nheld;
	}
	free(held);
	*ret = inos;
	*ret_n = n;
	return 0;
}

/* Drop the kernel's pages of the inodes (duplicates are harmless: the second finds nothing). With
 * state_lock held (no request handler takes it) and no other lock: dropping a page waits for a
 * read in flight on it, which may be waiting for a decision or the audit log. */
static void drop_pages_locked(struct fusefs *fs, const fuse_ino_t *inos, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fuse_lowlevel_notify_inval_inode(fs->se, inos[i], 0, 0);
}

/* Bump the generations and drop the pages of one dataset or all. */
static void revoke_open(struct fusefs *fs, bool all, uint64_t dsid)
{
	fuse_ino_t *inos = NULL;
	size_t n = 0;
	int r;

	/* First: a read the page drop sends to us must see the new generation. */
	if (all)
		for (unsigned i = 0; i < FUSEFS_GEN_BUCKETS; i++)
			atomic_fetch_add_explicit(&fs->gens[i], 1, memory_order_release);
	else
		atomic_fetch_add_explicit(&fs->gens[dsid % FUSEFS_GEN_BUCKETS], 1,
					  memory_order_release);
	r = pages_to_drop(fs, all, dsid, &inos, &n);
	if (r < 0)
		fuse_log(FUSE_LOG_ERR, "enclave: cannot list the cached files to invalidate: %s; "
				       "cached pages of the dataset may still be served\n",
			 strerror(-r));
	pthread_mutex_lock(&fs->state_lock);
	if (fs->mounted && !fs->stopped)
		drop_pages_locked(fs, inos, n);
	pthread_mutex_unlock(&fs->state_lock);
	free(inos);
}

/* Drop the kernel's entries and attributes of a dataset's directory, latest and versions. */
static void invalidate_entries(struct fusefs *fs, uint64_t dataset_id, const char *name)
{
	struct store_dataset_info di;
	uint32_t latest = 0;
	fuse_ino_t dino, ino;

	/* Outside state_lock: store lookups only. The name map entry is dropped first, so a
	 * rename or re-creation under the same id (which the store does not do today) is seen. */
	fusefs_map_del(fs->dsnames, dataset_id);
	if (fusefs_dataset_by_id(fs, dataset_id, &di) == 0) {
		latest = di.latest_version;
		if (!name || !name[0])
			name = di.name;
	}
	/* Do not call this while holding a lock that the decide callback takes: the kernel may
	 * wait, inside a notification, for a lookup in progress, which waits for the callback. */
	pthread_mutex_lock(&fs->state_lock);
	if (!fs->mounted || fs->stopped)
		goto out;
	/* Errors are expected and ignored: ENOENT when the kernel has nothing cached for a node,
	 * ENOTCONN before the kernel's INIT. */
	if (name && name[0])
		fuse_lowlevel_notify_inval_entry(fs->se, FUSE_ROOT_ID, name, strlen(name));
	if (!fusefs_ino_dataset(dataset_id, &dino))
		goto out;
	fuse_lowlevel_notify_inval_inode(fs->se, dino, 0, 0);
	fuse_lowlevel_notify_inval_entry(fs->se, dino, "latest", strlen("latest"));
	if (fusefs_ino_latest(dataset_id, &ino))
		fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);
	for (uint32_t v = 1; v <= latest && v <= FUSEFS_VER_MAX; v++) {
		char vname[16];

		snprintf(vname, sizeof(vname), "%u", v);
		fuse_lowlevel_notify_inval_entry(fs->se, dino, vname, strlen(vname));
		if (fusefs_ino_node(dataset_id, v, STORE_ROOT_INO, &ino))
			fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);
	}
	/* Every user's view of the dataset's versions (fuse/view.c). */
	for (uint32_t id = 1, nv = fusefs_view_count(fs->views); id <= nv; id++) {
		struct fusefs_view v;

		if (fusefs_view_resolve(fs->views, id, &v) && v.dsid == dataset_id &&
		    fusefs_ino_view(id, STORE_ROOT_INO, &ino))
			fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);
	}
out:
	pthread_mutex_unlock(&fs->state_lock);
}

void fusefs_invalidate_dataset(struct fusefs *fs, uint64_t dataset_id, const char *name)
{
	if (!fs)
		return;
	revoke_open(fs, false, dataset_id);
	invalidate_entries(fs, dataset_id, name);
}

/* Dataset ids, for fusefs_invalidate_all(); bounded by what the mount can number. */
struct id_list {
	uint64_t *ids;
	size_t n, cap;
	int err;
};

static int id_list_cb(void *ctx, const struct store_dataset_info *info)
{
	struct id_list *l = ctx;

	if (l->n == FUSEFS_DSID_MAX)
		return 1;
	if (l->n == l->cap) {
		size_t c = l->cap ? l->cap * 2 : 64;
		uint64_t *a = reallocarray(l->ids, c, sizeof(*a));

		if (!a) {
			l->err = -ENOMEM;
			return 1;
		}
		l->ids = a;
		l->cap = c;
	}
	l->ids[l->n++] = info->id;
	return 0;
}

void fusefs_invalidate_all(struct fusefs *fs)
{
	struct id_list l = { 0 };
	int r;

	if (!fs)
		return;
	revoke_open(fs, true, 0);
	/* Entries: every dataset's, collected first so that no store iteration is held while the
	 * kernel may wait in a notification. Timeouts at those levels are 0 anyway. */
	r = store_dataset_foreach(fs->st, id_list_cb, &l);
	if (r < 0 || l.err < 0)
		fuse_log(FUSE_LOG_ERR, "enclave: cannot list the datasets to invalidate: %s\n",
			 strerror(-(r < 0 ? r : l.err)));
	for (size_t i = 0; i < l.n; i++)
		invalidate_entries(fs, l.ids[i], NULL);
	free(l.ids);
}

void fusefs_stats_get(struct fusefs *fs, struct fusefs_stats *ret_stats)
{
	*ret_stats = (struct fusefs_stats){
		.reads = atomic_load(&fs->n_reads),
		.reads_refused = atomic_load(&fs->n_reads_refused),
		.opens_cached = atomic_load(&fs->n_opens_cached),
		.readdirs = atomic_load(&fs->n_readdirs),
		.lookups = atomic_load(&fs->n_lookups),
		.getattrs = atomic_load(&fs->n_getattrs),
		.opens = atomic_load(&fs->n_opens),
		.releases = atomic_load(&fs->n_releases),
	};
	struct fusefs_prefetch_stats ps;

	fusefs_prefetch_stats_get(fs->prefetch, &ps);
	ret_stats->prefetches = ps.issued;
	ret_stats->reads_prefetched = ps.hits;
}

/* True when the kernel connection of the session is gone (its fd polls POLLERR). */
static bool connection_gone(struct fusefs *fs)
{
	struct pollfd p = { .fd = fuse_session_fd(fs->se), .events = 0 };

	return p.fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & POLLERR);
}

void fusefs_free(struct fusefs *fs)
{
	if (!fs)
		return;
	if (fs->st)
		store_set_integrity_hook(fs->st, NULL, NULL);
	pthread_mutex_lock(&fs->state_lock);
	if (fs->se) {
		bool was_mounted = fs->ever_mounted;

		if (fs->mounted) {
			fuse_session_exit(fs->se);
			unmount_locked(fs);
		}
		/* libfuse's own bookkeeping (and fd): only once the connection is gone, so it
		 * never unmounts by path whatever is mounted there now. */
		if (was_mounted && !fs->covered && connection_gone(fs))
			fuse_session_unmount(fs->se);
		fuse_session_destroy(fs->se);
		fs->se = NULL;
	}
	pthread_mutex_unlock(&fs->state_lock);
	/* The loop has returned and every worker is gone: what is still open was never released. */
	fusefs_handles_release_all(fs);
	fusefs_prefetch_free(fs->prefetch);
	if (fs->worker_key_made)
		pthread_key_delete(fs->worker_key);
	fusefs_map_free(fs->paths);
	fusefs_map_free(fs->dsnames);
	fusefs_subjects_free(fs->subjects);
	fusefs_views_free(fs->views);
	fusefs_limiter_free(fs->limiter);
	pthread_mutex_destroy(&fs->flush_lock);
	pthread_cond_destroy(&fs->flush_cond);
	free(fs->cached);
	pthread_mutex_destroy(&fs->cached_lock);
	pthread_mutex_destroy(&fs->memo_lock);
	pthread_mutex_destroy(&fs->hint_lock);
	pthread_mutex_destroy(&fs->state_lock);
	pthread_mutex_destroy(&fs->handles_lock);
	free(fs->mountpoint);
	free(fs);
}
