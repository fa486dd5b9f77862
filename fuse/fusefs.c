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

void fusefs_log_once(struct fusefs *fs, enum fusefs_once what, const char *fmt, ...)
{
	char line[ERR_DETAIL_MAX + 256];
	va_list ap;

	if (atomic_exchange(&fs->once[what], true))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* libfuse's logger: stderr unless the daemon installed its own (fuse_set_log_func). */
	fuse_log(FUSE_LOG_ERR, "%s\n", line);
}

int fusefs_new(struct store *st, struct audit_log *log, fusefs_decide_fn decide, void *decide_ctx,
	       const struct fusefs_options *opts, struct fusefs **ret_fs)
{
	char arg0[] = "enclave", arg1[] = "-o";
	char arg2[] = "ro,allow_other,default_permissions,fsname=enclave,subtype=enclave";
	char arg3[] = "-d";
	char *argv[] = { arg0, arg1, arg2, arg3, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(opts && opts->debug ? 4 : 3, argv);
	struct fusefs *fs;
	int r;

	if (!st || !log || !decide || !opts || !opts->mountpoint || !opts->mountpoint[0])
		return err_set(-EINVAL, "fusefs: store, audit log, decide callback and mount point "
					"are required");
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->st = st;
	fs->log = log;
	fs->decide = decide;
	fs->decide_ctx = decide_ctx;
	fs->max_threads = opts->max_threads;
	fs->debug = opts->debug;
	fs->created_ns = now_realtime_ns();
	pthread_mutex_init(&fs->state_lock, NULL);
	pthread_mutex_init(&fs->handles_lock, NULL);
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
	if (r < 0)
		goto out_free;
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
	struct stat s, ps;
	dev_t dev = 0;
	bool ours = false;
	int r;

	pthread_mutex_lock(&fs->state_lock);
	if (fs->mounted || fs->stopped) {
		r = err_set(-EINVAL, "fusefs: %s: already mounted, or stopped", mp);
		goto out;
	}
	if (stat(mp, &s) < 0) {
		r = -errno;
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

void fusefs_invalidate_dataset(struct fusefs *fs, uint64_t dataset_id, const char *name)
{
	struct store_dataset_info di;
	uint32_t latest = 0;
	fuse_ino_t dino, ino;

	if (!fs)
		return;
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
out:
	pthread_mutex_unlock(&fs->state_lock);
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
	if (fs->worker_key_made)
		pthread_key_delete(fs->worker_key);
	fusefs_map_free(fs->paths);
	fusefs_map_free(fs->dsnames);
	fusefs_subjects_free(fs->subjects);
	pthread_mutex_destroy(&fs->state_lock);
	pthread_mutex_destroy(&fs->handles_lock);
	free(fs->mountpoint);
	free(fs);
}
