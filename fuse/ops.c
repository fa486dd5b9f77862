/* ops: the libfuse lowlevel operations of the read-only view (layout in fuse/fusefs.h, inode
 * numbers in fuse/ino.h).
 *
 * Threads: every handler may run on any worker thread at once. Shared state is the store (safe
 * for concurrent lookups and reads), the audit log (safe for concurrent appends), the bounded
 * maps and the subject cache (per-set locks), the list of open handles (its own lock) and the
 * daemon's decide callback (its own lock). Per thread: a store_reader and the read reply buffer
 * (pthread key, freed when libfuse ends the worker). Per open file: struct fh (immutable after
 * open except the atomic byte count and its policy state: an atomic generation and refused flag,
 * re-decided under the handle's policy_lock, which is taken before the decide callback's lock and
 * the audit log's). Per open directory: struct dirh, under its own mutex.
 *
 * Lookup counts: inode numbers are computed (no table), so forget has nothing to drop, and a
 * reply that fails to reach the kernel leaks nothing.
 *
 * Caching: entries at the root, dataset and version-directory levels are returned with timeout 0,
 * because the kernel's dentry cache is shared by all users and those levels are where grants are
 * decided: every path walk through them sends a LOOKUP, decided for the caller. Their attributes
 * (the same for every user), and the root's, are kept briefly (TTL_GATE_ATTR), so that the
 * kernel's permission checks (default_permissions) during a walk send no GETATTR; `latest` is per
 * caller and never cached. Inside a version everything is immutable
 * and cached for an hour, and
 * directory listings are kept by the kernel (cache_readdir; each opendir is still decided).
 * ENOENT replies are never cached by the kernel (no negative entries are sent).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "common/common.h"
#include "common/err.h"
#include "fuse/fusefs_internal.h"
#include "fuse/job.h"

/* Entry and attribute timeouts (seconds) inside a version: its content never changes. */
#define TTL_INNER 3600.0
/* Attribute timeout (seconds) of the root, dataset and version directories. Entries stay at 0:
 * the LOOKUP of each is where the grant is decided, at every path walk, and its reply brings the
 * attributes along. With the mount's default_permissions the kernel checks the permission of
 * every directory it walks through, and with attributes at timeout 0 each check was one more
 * GETATTR: three per open of a file by its full path (root, dataset, version), for attributes
 * that are the same for every user. This covers the check right after the lookup; every grant
 * change drops them at once (fusefs_invalidate_dataset). docs/THREAT_MODEL.md "Names". */
#define TTL_GATE_ATTR 0.1
/* Largest read served in one reply; the kernel sends at most max_pages (1 MiB with libfuse's
 * default buffer) per request, so this is headroom, and the cap on each worker's buffer. */
#define READ_MAX (8u << 20)
/* Caps on a snapshot listing of the root or a dataset directory. */
#define LIST_MAX_ENTRIES (FUSEFS_DSID_MAX + 2)
#define LIST_MAX_NAME_BYTES (48u << 20)
/* A path inside a version, with its leading '/' and NUL. */
#define PATH_BUF (STORE_PATH_MAX + 2)

/* ---- Per-thread state ---------------------------------------------------------------------- */

struct fusefs_worker {
	struct store_reader *rd;    /* owned; this thread's io_uring and aligned buffers */
	uint8_t *buf;               /* owned; the read reply, cap bytes */
	size_t cap;
};

void fusefs_worker_free(void *p)
{
	struct fusefs_worker *w = p;

	if (!w)
		return;
	store_reader_free(w->rd);
	/* The last reply it held was plaintext. */
	if (w->buf)
		explicit_bzero(w->buf, w->cap);
	free(w->buf);
	free(w);
}

static struct fusefs_worker *worker_get(struct fusefs *fs)
{
	struct fusefs_worker *w = pthread_getspecific(fs->worker_key);
	int r;

	if (w)
		return w;
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	r = store_reader_new(fs->st, &w->rd);
	if (r < 0) {
		fusefs_log_limited(fs, FUSEFS_LOG_STORE, "enclave: cannot set up a store reader: %s",
				err_detail()[0] ? err_detail() : strerror(-r));
		free(w);
		return NULL;
	}
	if (pthread_setspecific(fs->worker_key, w) != 0) {
		fusefs_worker_free(w);
		return NULL;
	}
	return w;
}

/* ---- Open handles -------------------------------------------------------------------------- */

static void handle_link(struct fusefs *fs, struct fusefs_handle *h, bool is_file)
{
	h->is_file = is_file;
	pthread_mutex_lock(&fs->handles_lock);
	h->next = &fs->handles;
	h->prev = fs->handles.prev;
	fs->handles.prev->next = h;
	fs->handles.prev = h;
	pthread_mutex_unlock(&fs->handles_lock);
}

static void handle_unlink(struct fusefs *fs, struct fusefs_handle *h)
{
	pthread_mutex_lock(&fs->handles_lock);
	h->prev->next = h->next;
	h->next->prev = h->prev;
	h->prev = h->next = NULL;
	pthread_mutex_unlock(&fs->handles_lock);
}

struct fh;
struct dirh;
static void fh_close(struct fusefs *fs, struct fh *h, const char *error);
static void dirh_free(struct dirh *d);

void fusefs_handles_release_all(struct fusefs *fs)
{
	for (;;) {
		struct fusefs_handle *h;

		pthread_mutex_lock(&fs->handles_lock);
		h = fs->handles.next == &fs->handles ? NULL : fs->handles.next;
		pthread_mutex_unlock(&fs->handles_lock);
		if (!h)
			break;
		handle_unlink(fs, h);
		if (h->is_file)
			fh_close(fs, (struct fh *)h, "connection ended before the file was released");
		else
			dirh_free((struct dirh *)h);
	}
}

/* ---- Helpers ------------------------------------------------------------------------------- */

static struct fusefs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* A store error as the errno for the kernel. ENOENT and a name the store cannot hold (EINVAL) are
 * "no such entry"; a full key slab is EMFILE; anything else is EIO, logged (rate-limited) with
 * the store's detail (which names files and records, never key material). */
static int store_errno(struct fusefs *fs, int r)
{
	if (r == -ENOENT || r == -EINVAL || r == -ENAMETOOLONG)
		return ENOENT;
	if (r == -ENOMEM)
		return ENOMEM;
	/* A node without the keys of what the index shows (removed, or its key bundle lags):
	 * refused, never garbage; the detail is logged below. */
	if (r == -ENOKEY) {
		fusefs_log_limited(fs, FUSEFS_LOG_STORE, "enclave: %s", err_detail()[0] ?
				   err_detail() : strerror(-r));
		return EACCES;
	}
	if (r == -EMFILE) {     /* the key slab is full: too many files open at once */
		fusefs_log_limited(fs, FUSEFS_LOG_STORE, "enclave: too many objects open at once "
				   "(key slab full): opens fail with EMFILE until some are closed");
		return EMFILE;
	}
	{
		char what[ERR_DETAIL_MAX];
		uint64_t n;

		snprintf(what, sizeof(what), "%s", err_detail()[0] ? err_detail() : strerror(-r));
		n = fusefs_log_limited(fs, FUSEFS_LOG_STORE, "enclave: store error: %s", what);
		/* Recorded as often as it is printed, with the count of the others. */
		if (n > 0)
			(void)fusefs_record_store_error(fs, what, n - 1);
	}
	return EIO;
}

/* Who is asking, for decisions and records: the uid, and the groups its process holds now
 * (fuse/subject.c). */
struct caller {
	struct policy_subject who;  /* ~4 KiB: lives on the worker's stack */
	struct fusefs_proc proc;    /* its name and job, for records */
	pid_t pid;
	bool ok;                    /* false: the subject could not be looked up; deny */
};

static void caller_get(struct fusefs *fs, fuse_req_t req, struct caller *c)
{
	const struct fuse_ctx *x = fuse_req_ctx(req);
	int r = fusefs_subject_get(fs->subjects, req, &c->who, &c->proc);

	c->pid = x->pid;
	c->ok = r == 0;
	if (r < 0) {
		fusefs_log_limited(fs, FUSEFS_LOG_SUBJECT,
				"enclave: cannot tell who uid %u is (%s): such requests are denied",
				(unsigned)x->uid, err_detail());
		c->who.uid = x->uid;
		c->who.user[0] = '\0';
		c->who.ngids = 0;
		c->proc = (struct fusefs_proc){ .name = "" };
	}
}

static struct policy_decision decide(struct fusefs *fs, const struct caller *c, uint64_t dsid,
				     uint32_t version)
{
	if (!c->ok)
		return (struct policy_decision){ .reason = POLICY_DENY_NO_GRANT };
	return fs->cb.decide(fs->cb.ctx, &c->who, dsid, version);
}

static bool allowed(struct fusefs *fs, const struct caller *c, uint64_t dsid, uint32_t version)
{
	return decide(fs, c, dsid, version).reason == POLICY_ALLOW;
}

/* Whether the caller may see a dataset (version POLICY_ALL_VERSIONS) or a version directory:
 * at lookup, getattr and readdir of those levels. A caller that no grant names at all (no_grant)
 * finds nothing: ENOENT, left out of listings, so names of datasets stay private. A caller that
 * a grant names but which does not allow now (expired, not yet valid, revoked) still sees the
 * names, so that every attempt reaches the open decision, is refused with EACCES (a reason the
 * job can act on) and lands in the audit log with that reason. docs/THREAT_MODEL.md. */
static bool visible(struct fusefs *fs, const struct caller *c, uint64_t dsid, uint32_t version)
{
	return decide(fs, c, dsid, version).named;
}

/* Where `latest` points for this caller: the newest version it may see (the same test as the
 * version directories a listing shows), or 0 when it sees none, and then `latest` does not
 * exist for it. A user granted only @1 of a dataset that has a version 2 gets "1", not a link to
 * a directory it cannot enter. Answers are per caller: the kernel caches neither the link
 * (FUSE_CAP_CACHE_SYMLINKS is off) nor its attributes (timeout 0). */
static uint32_t latest_for(struct fusefs *fs, const struct caller *c,
			   const struct store_dataset_info *di)
{
	for (uint32_t v = MIN(di->latest_version, (uint32_t)FUSEFS_VER_MAX); v >= 1; v--)
		if (visible(fs, c, di->id, v))
			return v;
	return 0;
}

/* Whether a refusal of what (dataset, version, reason, and the path inside the version or the
 * name looked up) gets its full record; see fuse/limit.h. */
static bool refusal_admit(struct fusefs *fs, const struct caller *c, enum fusefs_refusal_kind kind,
			  uint64_t dsid, uint32_t version, enum policy_reason reason, const char *what)
{
	uint8_t key[8 + 4 + 4 + PATH_BUF];
	size_t len = strlen(what);

	if (len > PATH_BUF)
		len = PATH_BUF;
	put_le64(key, dsid);
	put_le32(key + 8, version);
	put_le32(key + 12, (uint32_t)reason);
	memcpy(key + 16, what, len);
	return fusefs_refusal_admit(fs, c->who.uid, c->who.user, kind, key, 16 + len);
}

/* A lookup refused (the name answered ENOENT already, as if it did not exist): its record, after
 * the reply, rate-limited like refused opens. version 0: the dataset itself. */
static void lookup_refused(struct fusefs *fs, const struct caller *c, uint64_t dsid,
			   const char *dataset, uint32_t version, const struct policy_decision *d)
{
	char process[32];
	struct fusefs_access a;

	if (!refusal_admit(fs, c, FUSEFS_REFUSAL_LOOKUP, dsid, version, d->reason, ""))
		return;
	fusefs_process_name(c->pid, process, sizeof(process));
	a = (struct fusefs_access){ .dataset = dataset, .dsid = dsid, .version = version,
				    .uid = c->who.uid, .user = c->who.user, .pid = c->pid,
				    .process = process };
	(void)fusefs_record_lookup_refused(fs, &a, d);
}

struct find_id {
	uint64_t id;
	struct store_dataset_info info;
	bool found;
};

static int find_id_cb(void *ctx, const struct store_dataset_info *info)
{
	struct find_id *f = ctx;

	if (info->id != f->id)
		return 0;
	f->info = *info;
	f->found = true;
	return 1;
}

int fusefs_dataset_by_id(struct fusefs *fs, uint64_t dsid, struct store_dataset_info *ret)
{
	char name[STORE_DATASET_NAME_MAX + 1];
	struct store_dataset_info info;
	struct find_id f = { .id = dsid };
	int r;

	if (fusefs_map_get(fs->dsnames, dsid, name, sizeof(name)) &&
	    store_dataset_get(fs->st, name, &info) == 0 && info.id == dsid) {
		*ret = info;
		return 0;
	}
	r = store_dataset_foreach(fs->st, find_id_cb, &f);
	if (r < 0)
		return r;
	if (!f.found)
		return -ENOENT;
	fusefs_map_put(fs->dsnames, dsid, f.info.name);
	*ret = f.info;
	return 0;
}

static void ts_set(struct timespec *ts, int64_t ns)
{
	int64_t s = ns / 1000000000, rem = ns % 1000000000;

	if (rem < 0) {
		rem += 1000000000;
		s--;
	}
	ts->tv_sec = (time_t)s;
	ts->tv_nsec = (long)rem;
}

static void attr_base(struct stat *st, fuse_ino_t ino, mode_t mode, nlink_t nlink, int64_t mtime)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = mode;
	st->st_nlink = nlink;
	st->st_uid = 0;
	st->st_gid = 0;
	st->st_blksize = 4096;
	ts_set(&st->st_mtim, mtime);
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

static bool vmemo_committed(struct fusefs *fs, uint64_t dsid, uint32_t version, int64_t *ret);

/* The dataset directory's time: when its newest version was committed (remembered with that
 * version's directory, fusefs_internal.h "Index reads saved"). */
static int64_t dataset_mtime(struct fusefs *fs, const struct store_dataset_info *di)
{
	struct store_version_info vi;
	int64_t t;

	if (vmemo_committed(fs, di->id, di->latest_version, &t))
		return t;
	if (store_version_get(fs->st, di->id, di->latest_version, &vi) == 0)
		return vi.committed_ns;
	return di->created_ns;
}

static void attr_dataset(struct fusefs *fs, const struct store_dataset_info *di, fuse_ino_t ino,
			 struct stat *st)
{
	attr_base(st, ino, S_IFDIR | 0555, 2, dataset_mtime(fs, di));
}

static int latest_text(uint32_t version, char *out, size_t n)
{
	return snprintf(out, n, "%" PRIu32, version);
}

/* `latest` as the caller sees it: a link to version (latest_for()). */
static void attr_latest(struct fusefs *fs, const struct store_dataset_info *di, uint32_t version,
			fuse_ino_t ino, struct stat *st)
{
	char text[16];

	attr_base(st, ino, S_IFLNK | 0777, 1, dataset_mtime(fs, di));
	st->st_size = latest_text(version, text, sizeof(text));
}

/* A node inside a version. mtime_ns overrides the store's time (the version directory shows its
 * commit time); -1 keeps it. Files are 0444, plus 0111 when the source had any execute bit. */
static void attr_node(fuse_ino_t ino, const struct store_inode *in, int64_t mtime_ns,
		      struct stat *st)
{
	int64_t mt = mtime_ns >= 0 ? mtime_ns : in->mtime_ns;

	if (in->type == STORE_INODE_DIR) {
		attr_base(st, ino, S_IFDIR | 0555, in->nlink, mt);
		st->st_size = (off_t)MIN(in->size, (uint64_t)INT64_MAX);
		return;
	}
	attr_base(st, ino, S_IFREG | 0444 | ((in->mode & 0111) ? 0111 : 0), in->nlink, mt);
	st->st_size = (off_t)MIN(in->size, (uint64_t)INT64_MAX);
	st->st_blocks = (blkcnt_t)((MIN(in->size, (uint64_t)INT64_MAX - 511) + 511) / 512);
	if (in->ext.chunk_size)
		st->st_blksize = (blksize_t)in->ext.chunk_size;
}

/* ---- Index reads saved (fusefs_internal.h) ------------------------------------------------- */

static size_t memo_slot(uint64_t a, uint64_t b)
{
	return (size_t)(((a * 0x9E3779B97F4A7C15ull) ^ b) * 0xC2B2AE3D27D4EB4Full >> 54) &
	       (FUSEFS_MEMO_SLOTS - 1);
}

/* The commit time of a version whose directory was looked up since the dataset's generation last
 * moved. */
static bool vmemo_committed(struct fusefs *fs, uint64_t dsid, uint32_t version, int64_t *ret)
{
	uint64_t gen = fusefs_gen(fs, dsid);
	struct fusefs_vmemo *m = &fs->vmemo[memo_slot(dsid, version)];
	bool hit;

	pthread_mutex_lock(&fs->memo_lock);
	hit = m->dsid == dsid && m->version == version && m->gen == gen;
	if (hit)
		*ret = m->committed_ns;
	pthread_mutex_unlock(&fs->memo_lock);
	return hit;
}

/* The version directory's attributes: its root inode, with the commit time; remembered until
 * the dataset's generation moves, since every path walk asks. */
static int attr_version(struct fusefs *fs, const struct fusefs_node *n, fuse_ino_t ino,
			struct stat *st)
{
	struct store_version_info vi;
	struct store_inode in;
	uint64_t gen = fusefs_gen(fs, n->dsid);
	struct fusefs_vmemo *m = &fs->vmemo[memo_slot(n->dsid, n->version)];
	bool hit;
	int r;

	pthread_mutex_lock(&fs->memo_lock);
	hit = m->dsid == n->dsid && m->version == n->version && m->gen == gen;
	if (hit) {
		in = m->root;
		vi.committed_ns = m->committed_ns;
	}
	pthread_mutex_unlock(&fs->memo_lock);
	if (!hit) {
		r = store_version_get(fs->st, n->dsid, n->version, &vi);
		if (r == 0)
			r = store_inode_get(fs->st, n->dsid, n->version, STORE_ROOT_INO, &in);
		if (r < 0)
			return r;
		pthread_mutex_lock(&fs->memo_lock);
		*m = (struct fusefs_vmemo){ .dsid = n->dsid, .version = n->version, .gen = gen,
					    .committed_ns = vi.committed_ns, .root = in };
		pthread_mutex_unlock(&fs->memo_lock);
	}
	attr_node(ino, &in, vi.committed_ns, st);
	return 0;
}

/* Remember the inode of node ino as just read (gen loaded before the read), for the open or
 * getattr that usually follows. */
static void inode_memo_put(struct fusefs *fs, fuse_ino_t ino, uint64_t gen,
			   const struct store_inode *in)
{
	struct fusefs_imemo *m = &fs->imemo[memo_slot(ino, 0)];

	pthread_mutex_lock(&fs->memo_lock);
	*m = (struct fusefs_imemo){ .ino = ino, .gen = gen, .in = *in };
	pthread_mutex_unlock(&fs->memo_lock);
}

/* The inode of node ino (inside a version) for an open or a getattr: as a lookup or the last
 * read found it, when its dataset's generation has not moved since, else from the index. */
static int inode_memo_get(struct fusefs *fs, const struct fusefs_node *n, fuse_ino_t ino,
			  struct store_inode *ret)
{
	struct fusefs_imemo *m = &fs->imemo[memo_slot(ino, 0)];
	uint64_t gen = fusefs_gen(fs, n->dsid);
	bool hit;
	int r;

	pthread_mutex_lock(&fs->memo_lock);
	hit = m->ino == ino && m->gen == gen;
	if (hit)
		*ret = m->in;
	pthread_mutex_unlock(&fs->memo_lock);
	if (hit)
		return 0;
	r = store_inode_get(fs->st, n->dsid, n->version, n->sino, ret);
	if (r == 0)
		inode_memo_put(fs, ino, gen, ret);
	return r;
}

static void entry_reply(fuse_req_t req, fuse_ino_t ino, const struct stat *st, double entry_ttl,
			double attr_ttl)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = ino;
	e.generation = 0;   /* a number always names the same node: ids are never reused */
	e.attr = *st;
	e.attr_timeout = attr_ttl;
	e.entry_timeout = entry_ttl;
	fuse_reply_entry(req, &e);
}

/* "1".."4294967295" exactly: digits only, no sign, no leading zero. */
static bool parse_version(const char *s, uint32_t *ret)
{
	uint64_t v = 0;

	if (s[0] < '1' || s[0] > '9')
		return false;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > UINT32_MAX)
			return false;
	}
	*ret = (uint32_t)v;
	return true;
}

/* The path inside the version of node n (ino), into out: "/" for the version directory, the
 * recorded path, or "#ino:<store inode>" when it is not (or no longer) in the bounded map — the
 * store keeps no parent pointers to walk back up, and the map is filled only by lookups and
 * readdirplus, so a path can be missing after eviction under a large working set. */
static void node_path(struct fusefs *fs, const struct fusefs_node *n, fuse_ino_t ino, char *out,
		      size_t size)
{
	if (n->sino == STORE_ROOT_INO) {
		snprintf(out, size, "/");
		return;
	}
	if (!fusefs_map_get(fs->paths, ino, out, size))
		snprintf(out, size, "#ino:%" PRIu64, n->sino);
}

/* The path of entry `name` of directory dir (ino dir_ino) into out; false when the directory's
 * own path is unknown or the result would not fit. */
static bool child_path(struct fusefs *fs, const struct fusefs_node *dir, fuse_ino_t dir_ino,
		       const char *name, char *out, size_t size)
{
	size_t len;
	int k;

	if (dir->sino == STORE_ROOT_INO)
		out[0] = '\0';
	else if (!fusefs_map_get(fs->paths, dir_ino, out, size))
		return false;
	len = strlen(out);
	k = snprintf(out + len, size - len, "/%s", name);
	return k > 0 && (size_t)k < size - len;
}

/* ---- init, lookup, forget, getattr, readlink, statfs --------------------------------------- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* Every open must reach us to be decided and recorded: never let the kernel skip opens
	 * (the kernel only uses zero-message opens if open returned ENOSYS, which ours never does;
	 * clearing the bits states it). Nothing may be cached across users beyond what the
	 * timeouts allow: no symlink caching (latest changes), no writeback, no NFS export. */
	conn->want &= ~(unsigned)(FUSE_CAP_NO_OPEN_SUPPORT | FUSE_CAP_NO_OPENDIR_SUPPORT |
				  FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_WRITEBACK_CACHE |
				  FUSE_CAP_EXPORT_SUPPORT | FUSE_CAP_SPLICE_READ |
				  FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	conn->time_gran = 1;
}

/* The number of version v's directory as the caller is shown it: on a cache=kernel dataset, in
 * the caller's own view (fuse/view.c), so that no two users share a file's cached pages; else, or
 * when the view table is full (files then open with direct I/O), the shared number. ret_node
 * (may be NULL): the node it names. false: the version cannot be numbered. */
static bool version_ino(struct fusefs *fs, const struct caller *c, uint64_t dsid, uint32_t v,
			fuse_ino_t *ret, struct fusefs_node *ret_node)
{
	struct fusefs_node n = { .kind = FUSEFS_KIND_NODE, .dsid = dsid, .version = v,
				 .sino = STORE_ROOT_INO };
	uint32_t id;

	if (!fusefs_ino_node(dsid, v, STORE_ROOT_INO, ret))
		return false;
	if (fs->cb.cache_kernel && fs->cb.cache_kernel(fs->cb.ctx, dsid)) {
		if (fusefs_view_get(fs->views, dsid, v, c->who.uid, &id) &&
		    fusefs_ino_view(id, STORE_ROOT_INO, ret)) {
			n.view = id;
			n.view_uid = c->who.uid;
		} else {
			fusefs_log_limited(fs, FUSEFS_LOG_CACHED,
					   "enclave: %u views of cache=kernel versions handed out: "
					   "further users are served with direct I/O",
					   FUSEFS_VIEWS_MAX);
		}
	}
	if (ret_node)
		*ret_node = n;
	return true;
}

static void lookup_dataset(fuse_req_t req, struct fusefs *fs, const char *name)
{
	struct policy_decision d;
	struct store_dataset_info di;
	struct caller c;
	struct stat st;
	fuse_ino_t ino;
	int r;

	if (!store_dataset_name_valid(name)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	/* Who asks and what the policy says are worked out for a name that does not exist too,
	 * against no dataset (id 0), so that a hidden name and an absent one cost the same and the
	 * time of a stat does not tell which datasets exist (docs/PERFORMANCE.md). */
	caller_get(fs, req, &c);
	r = store_dataset_get(fs->st, name, &di);
	d = decide(fs, &c, r == 0 ? di.id : 0, POLICY_ALL_VERSIONS);
	if (r < 0) {
		fuse_reply_err(req, store_errno(fs, r));
		return;
	}
	if (!fusefs_ino_dataset(di.id, &ino)) {
		fusefs_log_limited(fs, FUSEFS_LOG_DSID,
				"enclave: dataset '%s' has id %" PRIu64 ", above the %llu this mount "
				"can number: it is not served", di.name, di.id, FUSEFS_DSID_MAX);
		fuse_reply_err(req, ENOENT);
		return;
	}
	fusefs_map_put(fs->dsnames, di.id, di.name);
	if (!d.named) {
		fuse_reply_err(req, ENOENT);
		lookup_refused(fs, &c, di.id, di.name, 0, &d);
		return;
	}
	attr_dataset(fs, &di, ino, &st);
	entry_reply(req, ino, &st, 0, TTL_GATE_ATTR);
}

static void lookup_in_dataset(fuse_req_t req, struct fusefs *fs, uint64_t dsid, const char *name)
{
	struct policy_decision d;
	struct store_dataset_info di;
	struct fusefs_node vn;
	struct caller c;
	struct stat st;
	fuse_ino_t ino;
	uint32_t v;
	int r = fusefs_dataset_by_id(fs, dsid, &di);

	if (r < 0) {
		fuse_reply_err(req, store_errno(fs, r));
		return;
	}
	if (strcmp(name, "latest") == 0) {
		caller_get(fs, req, &c);
		if (!fusefs_ino_latest(dsid, &ino)) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		d = decide(fs, &c, dsid, POLICY_ALL_VERSIONS);
		if (!d.named) {
			fuse_reply_err(req, ENOENT);
			lookup_refused(fs, &c, dsid, di.name, 0, &d);
			return;
		}
		v = latest_for(fs, &c, &di);
		if (v == 0) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		attr_latest(fs, &di, v, ino, &st);
		entry_reply(req, ino, &st, 0, 0);
		return;
	}
	if (!parse_version(name, &v) || v > di.latest_version) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	caller_get(fs, req, &c);
	if (!version_ino(fs, &c, dsid, v, &ino, &vn)) {
		fusefs_log_limited(fs, FUSEFS_LOG_VERSION,
				"enclave: dataset '%s' version %" PRIu32 " is above the %u this mount "
				"can number: it is not served", di.name, v, FUSEFS_VER_MAX);
		fuse_reply_err(req, ENOENT);
		return;
	}
	d = decide(fs, &c, dsid, v);
	if (!d.named) {
		fuse_reply_err(req, ENOENT);
		lookup_refused(fs, &c, dsid, di.name, v, &d);
		return;
	}
	r = attr_version(fs, &vn, ino, &st);
	if (r < 0) {
		fuse_reply_err(req, store_errno(fs, r));
		return;
	}
	entry_reply(req, ino, &st, 0, TTL_GATE_ATTR);
}

static void lookup_in_version(fuse_req_t req, struct fusefs *fs, fuse_ino_t parent,
			      const struct fusefs_node *dir, const char *name)
{
	char path[PATH_BUF];
	struct store_inode in;
	struct stat st;
	fuse_ino_t ino;
	uint64_t gen = fusefs_gen(fs, dir->dsid);
	int r = store_dir_lookup(fs->st, dir->dsid, dir->version, dir->sino, name, &in);

	if (r < 0) {
		fuse_reply_err(req, store_errno(fs, r));
		return;
	}
	if (!fusefs_node_child(dir, in.ino, &ino)) {
		fusefs_log_limited(fs, FUSEFS_LOG_SINO,
				"enclave: dataset id %" PRIu64 " version %" PRIu32 " has inode %" PRIu64
				", above the %llu this mount can number: it is not served",
				dir->dsid, dir->version, in.ino, FUSEFS_SINO_MAX);
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (child_path(fs, dir, parent, name, path, sizeof(path)))
		fusefs_map_put(fs->paths, ino, path);
	inode_memo_put(fs, ino, gen, &in);
	attr_node(ino, &in, -1, &st);
	entry_reply(req, ino, &st, TTL_INNER, TTL_INNER);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fusefs *fs = fs_of(req);
	struct fusefs_node n;

	atomic_fetch_add_explicit(&fs->n_lookups, 1, memory_order_relaxed);
	if (!fusefs_node_decode(fs, parent, &n)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	switch (n.kind) {
	case FUSEFS_KIND_ROOT:
		lookup_dataset(req, fs, name);
		break;
	case FUSEFS_KIND_DATASET:
		lookup_in_dataset(req, fs, n.dsid, name);
		break;
	case FUSEFS_KIND_NODE:
		lookup_in_version(req, fs, parent, &n, name);
		break;
	default:
		fuse_reply_err(req, ENOTDIR);
		break;
	}
}

/* Nothing to drop: inode numbers are computed, not held (see fusefs_internal.h). */
static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	(void)ino;
	(void)nlookup;
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	(void)count;
	(void)forgets;
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusefs *fs = fs_of(req);
	struct store_dataset_info di;
	struct store_inode in;
	struct fusefs_node n;
	struct caller c;
	struct stat st;
	int r = 0;

	(void)fi;
	atomic_fetch_add_explicit(&fs->n_getattrs, 1, memory_order_relaxed);
	if (!fusefs_node_decode(fs, ino, &n)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	switch (n.kind) {
	case FUSEFS_KIND_ROOT:
		/* The same for everyone and never changes, but briefly all the same: a stat of the
		 * mount point after the daemon is gone should soon say so (ENOTCONN). */
		attr_base(&st, ino, S_IFDIR | 0555, 2, fs->created_ns);
		fuse_reply_attr(req, &st, TTL_GATE_ATTR);
		return;
	case FUSEFS_KIND_DATASET:
	case FUSEFS_KIND_LATEST:
		r = fusefs_dataset_by_id(fs, n.dsid, &di);
		if (r < 0)
			break;
		caller_get(fs, req, &c);
		if (!visible(fs, &c, n.dsid, POLICY_ALL_VERSIONS)) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		if (n.kind == FUSEFS_KIND_DATASET) {
			attr_dataset(fs, &di, ino, &st);
			fuse_reply_attr(req, &st, TTL_GATE_ATTR);
			return;
		}
		{
			/* latest: per caller (latest_for), never cached. */
			uint32_t v = latest_for(fs, &c, &di);

			if (v == 0) {
				fuse_reply_err(req, ENOENT);
				return;
			}
			attr_latest(fs, &di, v, ino, &st);
		}
		fuse_reply_attr(req, &st, 0);
		return;
	default:
		if (n.sino == STORE_ROOT_INO) {
			caller_get(fs, req, &c);
			if (!visible(fs, &c, n.dsid, n.version)) {
				fuse_reply_err(req, ENOENT);
				return;
			}
			r = attr_version(fs, &n, ino, &st);
			if (r == 0) {
				fuse_reply_attr(req, &st, TTL_GATE_ATTR);
				return;
			}
			break;
		}
		r = inode_memo_get(fs, &n, ino, &in);
		if (r < 0)
			break;
		attr_node(ino, &in, -1, &st);
		fuse_reply_attr(req, &st, TTL_INNER);
		return;
	}
	fuse_reply_err(req, store_errno(fs, r));
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fusefs *fs = fs_of(req);
	struct store_dataset_info di;
	struct fusefs_node n;
	struct caller c;
	char text[16];
	uint32_t v;
	int r;

	if (!fusefs_node_decode(fs, ino, &n) || n.kind != FUSEFS_KIND_LATEST) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	r = fusefs_dataset_by_id(fs, n.dsid, &di);
	if (r < 0) {
		fuse_reply_err(req, store_errno(fs, r));
		return;
	}
	caller_get(fs, req, &c);
	if (!visible(fs, &c, n.dsid, POLICY_ALL_VERSIONS) || (v = latest_for(fs, &c, &di)) == 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	latest_text(v, text, sizeof(text));
	fuse_reply_readlink(req, text);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	(void)ino;
	/* No meaningful capacity: the store's size is not this view's business, and a read-only
	 * file system has nothing free. */
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_namemax = STORE_NAME_MAX;
	sv.f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV;
	fuse_reply_statfs(req, &sv);
}

/* ---- Directories --------------------------------------------------------------------------- */

/* One entry of a snapshot listing (root or dataset directory). */
struct snap_ent {
	fuse_ino_t ino;
	uint32_t name_off;          /* into dirh.names */
};

/* An open directory. Offsets handed to the kernel are entry indexes + 1: "." is index 0, ".."
 * index 1, the directory's own entries from 2 on; so the kernel's offset is the count of entries
 * it has consumed. */
struct dirh {
	struct fusefs_handle h;     /* on fs->handles while open; first member */
	pthread_mutex_t lock;       /* readdir calls on one handle may come from several threads */
	struct fusefs_node node;    /* the directory */
	fuse_ino_t ino;

	/* Root and dataset directories: the entries the caller may see, decided when a listing
	 * starts (offset 0) and served from here until it is restarted. */
	struct snap_ent *ents;      /* owned */
	size_t nents;
	size_t ents_cap;
	struct buf names;           /* owned; NUL-terminated names back to back, capped */
	bool have_snapshot;

	/* Directories inside a version: streamed from the index, resuming after a name. The last
	 * reply's names are kept, so a kernel that consumed only part of a reply (its getdents
	 * buffer was full) resumes exactly where it stopped. Any other offset (seekdir) is
	 * found by counting from the start. */
	uint64_t batch_first;       /* index among the directory's own entries of batch[0] */
	size_t batch_n;
	struct buf batch;           /* owned; batch_n NUL-terminated names back to back */
	char *batch_after;          /* owned; the name before batch[0], NULL: the first entry */
	bool have_batch;
};

static void dirh_free(struct dirh *d)
{
	if (!d)
		return;
	pthread_mutex_destroy(&d->lock);
	free(d->ents);
	buf_free(&d->names);
	buf_free(&d->batch);
	free(d->batch_after);
	free(d);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusefs *fs = fs_of(req);
	struct fusefs_node n;
	struct store_inode in;
	struct caller c;
	struct dirh *d;
	int r;

	if (!fusefs_node_decode(fs, ino, &n)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n.kind == FUSEFS_KIND_LATEST) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (n.kind == FUSEFS_KIND_NODE) {
		r = store_inode_get(fs->st, n.dsid, n.version, n.sino, &in);
		if (r < 0) {
			fuse_reply_err(req, store_errno(fs, r));
			return;
		}
		if (in.type != STORE_INODE_DIR) {
			fuse_reply_err(req, ENOTDIR);
			return;
		}
	}
	/* An open is decided: a directory fd kept from before a revocation lists nothing more. */
	if (n.kind != FUSEFS_KIND_ROOT) {
		caller_get(fs, req, &c);
		if (!allowed(fs, &c, n.dsid,
			     n.kind == FUSEFS_KIND_NODE ? n.version : POLICY_ALL_VERSIONS)) {
			fuse_reply_err(req, EACCES);
			return;
		}
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_init(&d->lock, NULL);
	d->node = n;
	d->ino = ino;
	buf_init(&d->names, LIST_MAX_NAME_BYTES);
	buf_init(&d->batch, 0);
	fi->fh = (uint64_t)(uintptr_t)d;
	/* Inside a version the listing never changes, and every opendir still reaches us and is
	 * decided above: the kernel may keep the listing (a second epoch's walk of 100,000 files
	 * then never lists again). The root and dataset directories depend on who asks: never. */
	fi->keep_cache = n.kind == FUSEFS_KIND_NODE;
	fi->cache_readdir = n.kind == FUSEFS_KIND_NODE;
	handle_link(fs, &d->h, false);
	if (fuse_reply_open(req, fi) != 0) {
		/* The request was interrupted: no releasedir will come. */
		handle_unlink(fs, &d->h);
		dirh_free(d);
	}
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;

	(void)ino;
	handle_unlink(fs_of(req), &d->h);
	dirh_free(d);
	fuse_reply_err(req, 0);
}

/* A reply being filled. */
struct emit {
	fuse_req_t req;
	bool plus;                  /* readdirplus: entries carry attributes */
	char *buf;                  /* owned; size bytes */
	size_t size;
	size_t used;
	uint64_t next;              /* index of the next entry (its offset is next + 1) */
	bool full;                  /* an entry did not fit */
};

/* Add one entry; false (and e->full) when it does not fit. attr NULL: a bare entry (".", "..",
 * or attributes unavailable), which in plus mode the kernel does not instantiate. */
static bool emit_one(struct emit *e, const char *name, fuse_ino_t ino, mode_t type,
		     const struct stat *attr, double ttl)
{
	size_t left = e->size - e->used, need;

	if (!e->plus) {
		struct stat st;

		memset(&st, 0, sizeof(st));
		st.st_ino = ino;
		st.st_mode = type;
		need = fuse_add_direntry(e->req, e->buf + e->used, left, name, &st,
					 (off_t)(e->next + 1));
	} else {
		struct fuse_entry_param ep;

		memset(&ep, 0, sizeof(ep));
		if (attr) {
			ep.ino = ino;
			ep.attr = *attr;
			ep.attr_timeout = ttl;
			ep.entry_timeout = ttl;
		} else {
			ep.attr.st_ino = ino;
			ep.attr.st_mode = type;
		}
		need = fuse_add_direntry_plus(e->req, e->buf + e->used, left, name, &ep,
					      (off_t)(e->next + 1));
	}
	if (need > left) {
		e->full = true;
		return false;
	}
	e->used += need;
	e->next++;
	return true;
}

/* "." and ".." for a listing starting at index e->next (0 or 1 emit them). */
static void emit_dots(struct emit *e, const struct dirh *d)
{
	fuse_ino_t parent = FUSE_ROOT_ID;

	/* ".." of a directory inside a version is not known (no parent pointers); the version
	 * directory stands in. The kernel ignores these numbers (it resolves ".." itself). */
	if (d->node.kind == FUSEFS_KIND_NODE) {
		if (d->node.sino == STORE_ROOT_INO)
			fusefs_ino_dataset(d->node.dsid, &parent);
		else
			fusefs_node_child(&d->node, STORE_ROOT_INO, &parent);
	}
	if (e->next == 0 && !emit_one(e, ".", d->ino, S_IFDIR, NULL, 0))
		return;
	if (e->next == 1)
		emit_one(e, "..", parent, S_IFDIR, NULL, 0);
}

static int snap_add(struct dirh *d, fuse_ino_t ino, const char *name)
{
	size_t off = d->names.len;
	int r;

	if (d->nents == LIST_MAX_ENTRIES)
		return -E2BIG;
	if (d->nents == d->ents_cap) {
		size_t n = d->ents_cap ? d->ents_cap * 2 : 64;
		struct snap_ent *a = reallocarray(d->ents, n, sizeof(*a));

		if (!a)
			return -ENOMEM;
		d->ents = a;
		d->ents_cap = n;
	}
	r = buf_append(&d->names, name, strlen(name) + 1);
	if (r < 0)
		return r;
	d->ents[d->nents++] = (struct snap_ent){ .ino = ino, .name_off = (uint32_t)off };
	return 0;
}

struct root_snap {
	struct fusefs *fs;
	const struct caller *c;
	struct dirh *d;
};

static int root_snap_cb(void *ctx, const struct store_dataset_info *info)
{
	struct root_snap *s = ctx;
	fuse_ino_t ino;

	if (!fusefs_ino_dataset(info->id, &ino)) {
		fusefs_log_limited(s->fs, FUSEFS_LOG_DSID,
				"enclave: dataset '%s' has id %" PRIu64 ", above the %llu this mount "
				"can number: it is not served", info->name, info->id, FUSEFS_DSID_MAX);
		return 0;
	}
	fusefs_map_put(s->fs->dsnames, info->id, info->name);
	if (!visible(s->fs, s->c, info->id, POLICY_ALL_VERSIONS))
		return 0;
	return snap_add(s->d, ino, info->name);
}

/* Build the listing of the root or a dataset directory as the caller may see it. */
static int snapshot(struct fusefs *fs, fuse_req_t req, struct dirh *d)
{
	struct store_dataset_info di;
	struct caller c;
	fuse_ino_t ino;
	int r;

	d->nents = 0;
	buf_reset(&d->names);
	d->have_snapshot = false;
	caller_get(fs, req, &c);
	if (d->node.kind == FUSEFS_KIND_ROOT) {
		struct root_snap s = { .fs = fs, .c = &c, .d = d };

		r = store_dataset_foreach(fs->st, root_snap_cb, &s);
		if (r < 0)
			return r;
		d->have_snapshot = true;
		return 0;
	}
	r = fusefs_dataset_by_id(fs, d->node.dsid, &di);
	if (r < 0)
		return r;
	if (fusefs_ino_latest(di.id, &ino) && visible(fs, &c, di.id, POLICY_ALL_VERSIONS) &&
	    latest_for(fs, &c, &di) != 0) {
		r = snap_add(d, ino, "latest");
		if (r < 0)
			return r;
	}
	for (uint32_t v = 1; v <= di.latest_version; v++) {
		char name[16];

		if (!version_ino(fs, &c, di.id, v, &ino, NULL)) {
			fusefs_log_limited(fs, FUSEFS_LOG_VERSION,
					"enclave: dataset '%s' has versions above the %u this mount "
					"can number: they are not served", di.name, FUSEFS_VER_MAX);
			break;
		}
		if (!visible(fs, &c, di.id, v))
			continue;
		snprintf(name, sizeof(name), "%" PRIu32, v);
		r = snap_add(d, ino, name);
		if (r < 0)
			return r;
	}
	d->have_snapshot = true;
	return 0;
}

/* Attributes of a snapshot entry for readdirplus; false when unavailable. */
static bool snap_attr(struct fusefs *fs, fuse_ino_t ino, struct stat *st)
{
	struct store_dataset_info di;
	struct fusefs_node n;

	if (!fusefs_node_decode(fs, ino, &n))
		return false;
	if (n.kind == FUSEFS_KIND_NODE)
		return attr_version(fs, &n, ino, st) == 0;
	if (fusefs_dataset_by_id(fs, n.dsid, &di) < 0)
		return false;
	/* `latest` depends on the caller (latest_for()): no attributes here, the kernel looks it
	 * up for each caller. */
	if (n.kind != FUSEFS_KIND_DATASET)
		return false;
	attr_dataset(fs, &di, ino, st);
	return true;
}

static int list_snapshot(struct fusefs *fs, struct emit *e, struct dirh *d, fuse_req_t req)
{
	int r;

	if (e->next == 0 || !d->have_snapshot) {
		r = snapshot(fs, req, d);
		if (r < 0)
			return r;
	}
	emit_dots(e, d);
	while (!e->full && e->next >= 2 && e->next - 2 < d->nents) {
		const struct snap_ent *s = &d->ents[e->next - 2];
		const char *name = (const char *)d->names.data + s->name_off;
		mode_t type = (s->ino >> FUSEFS_KIND_SHIFT) == FUSEFS_KIND_LATEST ? S_IFLNK
										   : S_IFDIR;
		struct stat st;
		bool have = e->plus && snap_attr(fs, s->ino, &st);

		emit_one(e, name, s->ino, type, have ? &st : NULL, 0);
	}
	return 0;
}

/* Streaming state for one reply inside a version. */
struct stream {
	struct fusefs *fs;
	struct emit *e;
	const struct dirh *d;
	struct buf *batch;          /* the names emitted in this reply */
	size_t n;
	char dirpath[PATH_BUF];
	bool dirpath_known;
	int err;
};

static bool served(const struct fusefs_node *dir, uint64_t sino, fuse_ino_t *ret)
{
	return fusefs_node_child(dir, sino, ret);
}

static int stream_cb(void *ctx, const char *name, uint64_t sino, uint32_t type)
{
	struct stream *s = ctx;
	const struct fusefs_node *dir = &s->d->node;
	struct store_inode in;
	struct stat st;
	fuse_ino_t ino;
	bool have = false;

	if (!served(dir, sino, &ino)) {
		fusefs_log_limited(s->fs, FUSEFS_LOG_SINO,
				"enclave: dataset id %" PRIu64 " version %" PRIu32 " has inode %" PRIu64
				", above the %llu this mount can number: it is not served",
				dir->dsid, dir->version, sino, FUSEFS_SINO_MAX);
		return 0;
	}
	if (s->e->plus && store_inode_get(s->fs->st, dir->dsid, dir->version, sino, &in) == 0) {
		attr_node(ino, &in, -1, &st);
		have = true;
	}
	if (!emit_one(s->e, name, ino, type == STORE_INODE_DIR ? S_IFDIR : S_IFREG,
		      have ? &st : NULL, TTL_INNER))
		return 1;
	if (have && s->dirpath_known) {
		char path[PATH_BUF];
		int k = snprintf(path, sizeof(path), "%s/%s", s->dirpath, name);

		if (k > 0 && (size_t)k < sizeof(path))
			fusefs_map_put(s->fs->paths, ino, path);
	}
	s->err = buf_append(s->batch, name, strlen(name) + 1);
	if (s->err < 0)
		return 1;
	s->n++;
	return 0;
}

/* Counting from the start: the name of the served entry with index `index`. */
struct seek {
	const struct fusefs_node *dir;
	uint64_t index;
	uint64_t seen;
	char name[STORE_NAME_MAX + 1];
	bool found;
};

static int seek_cb(void *ctx, const char *name, uint64_t sino, uint32_t type)
{
	struct seek *k = ctx;
	fuse_ino_t ino;

	(void)type;
	if (!served(k->dir, sino, &ino))
		return 0;
	if (k->seen++ < k->index)
		return 0;
	snprintf(k->name, sizeof(k->name), "%s", name);
	k->found = true;
	return 1;
}

/* The name after which entry `index` comes (NULL in *ret for index 0); false: past the end. */
static int resume_point(struct fusefs *fs, struct dirh *d, uint64_t index, char **ret)
{
	struct seek k = { .dir = &d->node };
	int r;

	*ret = NULL;
	if (index == 0)
		return 1;
	if (d->have_batch && index == d->batch_first) {
		if (d->batch_after) {
			*ret = strdup(d->batch_after);
			if (!*ret)
				return -ENOMEM;
		}
		return 1;
	}
	if (d->have_batch && index > d->batch_first && index - d->batch_first <= d->batch_n) {
		const char *p = (const char *)d->batch.data;

		for (uint64_t i = d->batch_first; i < index - 1; i++)
			p += strlen(p) + 1;
		*ret = strdup(p);
		return *ret ? 1 : -ENOMEM;
	}
	k.index = index - 1;
	r = store_dir_foreach(fs->st, d->node.dsid, d->node.version, d->node.sino, NULL, seek_cb,
			      &k);
	if (r < 0)
		return r;
	if (!k.found)
		return 0;
	*ret = strdup(k.name);
	return *ret ? 1 : -ENOMEM;
}

static int list_stream(struct fusefs *fs, struct emit *e, struct dirh *d)
{
	struct stream s = { .fs = fs, .e = e, .d = d };
	struct buf batch;
	uint64_t first;
	char *after = NULL;
	int r;

	emit_dots(e, d);
	if (e->full)
		return 0;
	first = e->next - 2;
	r = resume_point(fs, d, first, &after);
	if (r <= 0)
		return r; /* 0: past the end, an empty reply */
	buf_init(&batch, e->size + STORE_NAME_MAX + 1);
	s.batch = &batch;
	if (d->node.sino == STORE_ROOT_INO) {
		s.dirpath[0] = '\0';
		s.dirpath_known = true;
	} else {
		s.dirpath_known = fusefs_map_get(fs->paths, d->ino, s.dirpath, sizeof(s.dirpath));
	}
	r = store_dir_foreach(fs->st, d->node.dsid, d->node.version, d->node.sino, after,
			      stream_cb, &s);
	if (r == 1)
		r = s.err;
	if (r < 0 && e->used > 0)
		r = 0; /* send what was listed; the next call meets the error again */
	if (r < 0 || s.n == 0) {
		buf_free(&batch);
		free(after);
		return r;
	}
	buf_free(&d->batch);
	d->batch = batch;
	d->batch_n = s.n;
	d->batch_first = first;
	free(d->batch_after);
	d->batch_after = after;
	d->have_batch = true;
	return 0;
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi, bool plus)
{
	struct fusefs *fs = fs_of(req);
	struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
	struct emit e = { .req = req, .plus = plus, .size = MIN(size, (size_t)READ_MAX) };
	int r;

	(void)ino;
	atomic_fetch_add_explicit(&fs->n_readdirs, 1, memory_order_relaxed);
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	e.next = (uint64_t)off;
	e.buf = malloc(e.size ? e.size : 1);
	if (!e.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&d->lock);
	if (d->node.kind == FUSEFS_KIND_NODE)
		r = list_stream(fs, &e, d);
	else
		r = list_snapshot(fs, &e, d, req);
	pthread_mutex_unlock(&d->lock);
	if (r < 0)
		fuse_reply_err(req, r == -E2BIG ? EIO : store_errno(fs, r));
	else
		fuse_reply_buf(req, e.buf, e.used);
	free(e.buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, true);
}

/* ---- Files --------------------------------------------------------------------------------- */

/* An open file. Immutable after open, except bytes and the policy state (gen, refused). */
struct fh {
	struct fusefs_handle h;                     /* on fs->handles while open; first member */
	struct store_object *obj;                   /* owned */
	uint64_t dsid;
	uint32_t version;
	uint64_t open_seq;                          /* seq of the "open" record */
	uint64_t reserved;                          /* room kept for its close record */
	_Atomic uint64_t bytes;                     /* plaintext bytes served through it */
	fuse_ino_t ino;                             /* the file's number, for page invalidation */
	bool cached;                                /* cache=kernel: counted in fs's cached set */
	struct fusefs_ra ra;                        /* read-ahead (fuse/prefetch.h) */
	/* Policy: the bucket generation loaded before the last decision that allowed it (reads
	 * decide again when it moved: fusefs_internal.h), and whether a re-decision refused it
	 * (then every read is EACCES; it is never allowed again: reopen). */
	_Atomic uint64_t gen;
	atomic_bool refused;
	pthread_mutex_t policy_lock;                /* serialises re-decisions and their record */
	uint32_t *gids;                             /* owned: the opener's groups, gid first */
	size_t ngids;
	uint32_t uid;                               /* the opener */
	pid_t pid;
	char dataset[STORE_DATASET_NAME_MAX + 1];
	char user[POLICY_NAME_MAX + 1];
	char process[32];
	char path[];                                /* inside the version */
};

static struct fusefs_access fh_access(const struct fh *h)
{
	return (struct fusefs_access){
		.dataset = h->dataset, .dsid = h->dsid, .version = h->version, .path = h->path,
		.uid = h->uid, .user = h->user, .pid = h->pid, .process = h->process,
	};
}

/* Record the close (bytes read so far), wipe the object key and free. */
static void fh_close(struct fusefs *fs, struct fh *h, const char *error)
{
	struct fusefs_access a = fh_access(h);

	fusefs_record_close_reserved(fs, &a, h->open_seq, atomic_load(&h->bytes), error,
				     h->reserved);
	/* Before the object: a read-ahead in progress reads it. */
	fusefs_ra_release(fs->prefetch, &h->ra);
	store_object_close(h->obj);
	if (h->cached)
		fusefs_cached_release(fs, h->ino);
	pthread_mutex_destroy(&h->policy_lock);
	free(h->gids);
	free(h);
}

int fusefs_handles_inos(struct fusefs *fs, bool all, uint64_t dsid, fuse_ino_t **ret_inos,
			size_t *ret_n)
{
	fuse_ino_t *inos = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	pthread_mutex_lock(&fs->handles_lock);
	for (struct fusefs_handle *x = fs->handles.next; x != &fs->handles; x = x->next) {
		const struct fh *h = (const struct fh *)x;

		if (!x->is_file || (!all && h->dsid != dsid))
			continue;
		if (n == cap) {
			size_t c = cap ? cap * 2 : 16;
			fuse_ino_t *a = reallocarray(inos, c, sizeof(*a));

			if (!a) {
				r = -ENOMEM;
				break;
			}
			inos = a;
			cap = c;
		}
		inos[n++] = h->ino;
	}
	pthread_mutex_unlock(&fs->handles_lock);
	if (r < 0) {
		free(inos);
		return r;
	}
	*ret_inos = inos;
	*ret_n = n;
	return 0;
}

/* A read found the generation of h's dataset moved (g): decide again for the opener, as it was
 * at open (its uid and the groups its process held then). False: refused, now and from now on;
 * the first refusal writes the handle's one "read_refused" record. */
static bool fh_redecide(struct fusefs *fs, struct fh *h, uint64_t g)
{
	struct policy_subject who;  /* ~4 KiB, on the worker's stack */
	struct policy_decision d;
	bool ok = true;

	if (atomic_load(&h->refused))
		return false;
	pthread_mutex_lock(&h->policy_lock);
	if (atomic_load(&h->refused)) {
		ok = false;
	} else if (atomic_load(&h->gen) < g) {
		who.uid = h->uid;
		memcpy(who.user, h->user, sizeof(who.user));
		who.ngids = h->ngids;
		memcpy(who.gids, h->gids, h->ngids * sizeof(h->gids[0]));
		d = fs->cb.decide(fs->cb.ctx, &who, h->dsid, h->version);
		if (d.reason == POLICY_ALLOW) {
			atomic_store(&h->gen, g);
		} else {
			struct fusefs_access a = fh_access(h);

			atomic_store(&h->refused, true);
			/* Refused whether or not the record could be written. */
			fusefs_record_read_refused(fs, &a, h->open_seq, &d, atomic_load(&h->bytes));
			ok = false;
		}
	}
	pthread_mutex_unlock(&h->policy_lock);
	return ok;
}

/* An fh that never reached the kernel and holds no object: undo what op_open set up. */
static void fh_free_unopened(struct fusefs *fs, struct fh *h)
{
	if (h->cached)
		fusefs_cached_release(fs, h->ino);
	pthread_mutex_destroy(&h->policy_lock);
	free(h->gids);
	free(h);
}

/* A cache=direct file is opened with direct I/O, and the kernel refuses a shared mmap of it
 * (numpy.memmap, torch.load(mmap=True)) with ENODEV before any request reaches us: the daemon
 * cannot see the failure. So the first open of such a dataset (then once an hour) logs what a
 * user who hits ENODEV needs: the dataset and the setting to change. A slot table of the last
 * FUSEFS_DIRECT_HINTS datasets bounds the memory; a dataset pushed out may be named again. */
static void direct_hint(struct fusefs *fs, uint64_t dsid, const char *name)
{
	int64_t now = now_realtime_ns() / 1000000000;
	size_t slot = (size_t)(dsid % FUSEFS_DIRECT_HINTS);
	bool say;

	pthread_mutex_lock(&fs->hint_lock);
	say = fs->hints[slot].dsid != dsid ||
	      now - fs->hints[slot].at_s >= FUSEFS_DIRECT_HINT_INTERVAL_S;
	if (say) {
		fs->hints[slot].dsid = dsid;
		fs->hints[slot].at_s = now;
	}
	pthread_mutex_unlock(&fs->hint_lock);
	if (say)
		fprintf(stderr, "enclave: dataset %s is served with cache=direct: reads are checked one "
			"by one, and a shared mmap of its files (numpy.memmap, torch.load with "
			"mmap=True) fails with ENODEV; to allow it, a steward runs: enclavectl dataset "
			"set %s --cache kernel (docs/POLICY.md, \"cache\")\n", name, name);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusefs *fs = fs_of(req);
	struct store_dataset_info di;
	struct policy_decision dec;
	struct fusefs_open_info oi = { 0 };
	struct fusefs_session sess;
	struct fusefs_access a;
	uint64_t gen;
	struct store_inode in;
	struct fusefs_node n;
	char path[PATH_BUF];
	char process[32];
	struct caller c;
	struct fh *h;
	size_t plen;
	int r;

	atomic_fetch_add_explicit(&fs->n_opens, 1, memory_order_relaxed);
	if (!fusefs_node_decode(fs, ino, &n)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n.kind != FUSEFS_KIND_NODE) {
		fuse_reply_err(req, n.kind == FUSEFS_KIND_LATEST ? ELOOP : EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	r = inode_memo_get(fs, &n, ino, &in);
	if (r == 0 && in.type != STORE_INODE_FILE)
		r = -EISDIR;
	if (r == 0)
		r = fusefs_dataset_by_id(fs, n.dsid, &di);
	if (r < 0) {
		fuse_reply_err(req, r == -EISDIR ? EISDIR : store_errno(fs, r));
		return;
	}
	caller_get(fs, req, &c);
	node_path(fs, &n, ino, path, sizeof(path));
	snprintf(process, sizeof(process), "%s", c.proc.name);
	oi.job_source = c.proc.job_source;
	oi.job_id = c.proc.job_id;
	oi.gids = c.who.gids;
	oi.ngids = c.ok ? c.who.ngids : 0;
	a = (struct fusefs_access){ .dataset = di.name, .dsid = n.dsid, .version = n.version,
				    .path = path, .uid = c.who.uid, .user = c.who.user,
				    .pid = c.pid, .process = process };
	/* Loaded before deciding: an invalidation after this load makes the first read decide
	 * again, even if it came before the handle existed. */
	gen = fusefs_gen(fs, n.dsid);
	dec = decide(fs, &c, n.dsid, n.version);
	if (dec.reason != POLICY_ALLOW) {
		/* Denied whether or not the record could be written; written once per distinct
		 * file and reason per window, the rest counted (fuse/limit.h). */
		if (refusal_admit(fs, &c, FUSEFS_REFUSAL_OPEN, n.dsid, n.version, dec.reason, path))
			fusefs_record_open(fs, &a, &oi, &dec,
					   c.ok ? NULL : "subject lookup failed", NULL);
		fuse_reply_err(req, EACCES);
		return;
	}

	plen = strlen(path);
	h = calloc(1, sizeof(*h) + plen + 1);
	if (h)
		h->gids = malloc(c.who.ngids * sizeof(h->gids[0]));
	if (!h || !h->gids) {
		free(h);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	h->dsid = n.dsid;
	h->version = n.version;
	h->ino = ino;
	h->uid = c.who.uid;
	h->pid = c.pid;
	h->ngids = c.who.ngids;
	memcpy(h->gids, c.who.gids, c.who.ngids * sizeof(h->gids[0]));
	memcpy(h->dataset, di.name, sizeof(h->dataset));
	memcpy(h->user, c.who.user, sizeof(h->user));
	memcpy(h->process, process, sizeof(h->process));
	memcpy(h->path, path, plen + 1);
	atomic_init(&h->bytes, 0);
	atomic_init(&h->gen, gen);
	atomic_init(&h->refused, false);
	pthread_mutex_init(&h->policy_lock, NULL);
	/* cache=kernel: in the cached set before the reply, so that an invalidation from now on
	 * drops the pages this handle brings in; a full set means direct I/O. */
	h->cached = n.view && n.view_uid == c.who.uid && fs->cb.cache_kernel &&
		    fs->cb.cache_kernel(fs->cb.ctx, n.dsid) && fusefs_cached_add(fs, ino);
	oi.cache = h->cached ? "kernel" : "direct";
	if (!h->cached)
		direct_hint(fs, n.dsid, di.name);

	/* Room for its close first (#14, point 12): a disk too full for it refuses the open, so
	 * that no file is ever served whose close cannot be recorded. */
	h->reserved = fusefs_close_room(&a);
	r = fusefs_reserve(fs, h->reserved);
	if (r < 0) {
		fusefs_log_limited(fs, FUSEFS_LOG_AUDIT, "enclave: no room on the audit log's file "
				   "system to keep for the close of a file (%s): opens are refused "
				   "until there is", strerror(-r));
		fh_free_unopened(fs, h);
		fuse_reply_err(req, EACCES);
		return;
	}
	/* Recorded before anything is served; no record, no access. The first open of a session
	 * (this thread, this uid, this version, this grant) is synced before we go on; the others
	 * are written, and synced within the log's interval (docs/AUDIT.md "Durability"). */
	sess = (struct fusefs_session){ .tid = c.pid, .start = c.proc.start, .uid = c.who.uid,
					.dsid = n.dsid, .version = n.version,
					.grant_id = dec.grant_id, .rule_id = dec.rule_id };
	oi.durable = !fusefs_session_known(fs->subjects, &sess);
	r = fusefs_record_open(fs, &a, &oi, &dec, NULL, &h->open_seq);
	if (r < 0) {
		fusefs_unreserve(fs, h->reserved);
		fh_free_unopened(fs, h);
		fuse_reply_err(req, EACCES);
		return;
	}
	if (oi.durable)
		fusefs_session_add(fs->subjects, &sess);
	r = store_object_open(fs->st, n.dsid, &in, &h->obj);
	if (r == 0 && (r = fusefs_test_fault(fs, FUSEFS_FAULT_OBJECT_OPEN)) < 0) {
		store_object_close(h->obj);
		h->obj = NULL;
	}
	if (r < 0) {
		char what[ERR_DETAIL_MAX];

		snprintf(what, sizeof(what), "%s", err_detail()[0] ? err_detail() : strerror(-r));
		fusefs_log_limited(fs, FUSEFS_LOG_STORE, "enclave: open of %s/%" PRIu32 "%s: %s",
				   di.name, n.version, path, what);
		/* An object key that does not unwrap is tampering with the index; anything else
		 * the disk's failure. Either way a record of its own, then the close. */
		fusefs_record_integrity(fs, r == -EBADMSG ? "integrity" : "io_error", &a,
					h->open_seq, 0, 0, r == -EBADMSG ?
					"object key failed authentication" : what);
		fusefs_record_close_reserved(fs, &a, h->open_seq, 0,
					     r == -EBADMSG ? "object key failed authentication"
							   : "object could not be opened", h->reserved);
		fh_free_unopened(fs, h);
		fuse_reply_err(req, r == -ENOMEM ? ENOMEM : EIO);
		return;
	}
	fusefs_ra_init(&h->ra, h->obj);
	if (h->cached)
		atomic_fetch_add(&fs->n_opens_cached, 1);
	fi->fh = (uint64_t)(uintptr_t)h;
	/* Direct: every read reaches us, no page cache to outlive a grant. cache=kernel: pages are
	 * kept across opens (a second epoch is served from memory, shared mmap works) until an
	 * invalidation of the dataset drops them. */
	fi->direct_io = !h->cached;
	fi->keep_cache = h->cached;
	fi->noflush = 1;        /* nothing to flush on a read-only file */
	handle_link(fs, &h->h, true);
	if (fuse_reply_open(req, fi) != 0) {
		/* Interrupted: the kernel will send no release for this open. */
		handle_unlink(fs, &h->h);
		fh_close(fs, h, "open interrupted");
	}
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fusefs *fs = fs_of(req);
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;
	struct fusefs_worker *w = worker_get(fs);
	struct fusefs_ra_hold hold;
	const uint8_t *data;
	ssize_t n;

	(void)ino;
	atomic_fetch_add_explicit(&fs->n_reads, 1, memory_order_relaxed);
	/* Policy: one atomic load when nothing changed since the handle's last decision. */
	if (fusefs_gen(fs, h->dsid) != atomic_load_explicit(&h->gen, memory_order_relaxed) &&
	    !fh_redecide(fs, h, fusefs_gen(fs, h->dsid))) {
		atomic_fetch_add_explicit(&fs->n_reads_refused, 1, memory_order_relaxed);
		fuse_reply_err(req, EACCES);
		return;
	}
	if (!w) {
		fuse_reply_err(req, EIO);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	size = MIN(size, (size_t)READ_MAX);
	if (size > w->cap) {
		/* Not realloc: the old buffer held plaintext and is wiped before it is freed. */
		uint8_t *b = malloc(size);

		if (!b) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		if (w->buf)
			explicit_bzero(w->buf, w->cap);
		free(w->buf);
		w->buf = b;
		w->cap = size;
	}
	/* From the read-ahead when it holds the range (checked above like any read), else read
	 * now; a sequential read queues the next range. */
	n = fusefs_ra_read(fs->prefetch, &h->ra, w->rd, (uint64_t)off, size, w->buf, &data, &hold);
	if (n >= 0) {
		int e = fusefs_test_fault(fs, FUSEFS_FAULT_READ);

		if (e < 0) {
			fusefs_ra_put(fs->prefetch, &hold);
			n = err_set(e, "pack read failed: %s (injected)", strerror(-e));
		}
	}
	if (n < 0 && n != -ENOMEM) {
		struct fusefs_access a = fh_access(h);
		uint64_t objsize = store_object_size(h->obj);
		uint64_t len = (uint64_t)off < objsize ? MIN((uint64_t)size, objsize - (uint64_t)off)
						       : 0;
		char what[ERR_DETAIL_MAX];

		snprintf(what, sizeof(what), "%s", n == -EBADMSG ? "authentication failed" :
			 err_detail()[0] ? err_detail() : strerror((int)-n));
		if (n != -EBADMSG)
			fusefs_log_limited(fs, FUSEFS_LOG_STORE, "enclave: read of %s/%" PRIu32
					   "%s: %s", h->dataset, h->version, h->path, what);
		/* Never data: EIO whether or not the record could be written. A chunk that failed
		 * authentication, or a pack shorter than the index says (cut, or an older copy
		 * put back), is an integrity failure; any other error is the disk's. */
		fusefs_record_integrity(fs, n == -EBADMSG || n == -ENODATA ? "integrity" :
					"io_error", &a, h->open_seq, (uint64_t)off, len, what);
		fuse_reply_err(req, EIO);
		return;
	}
	if (n < 0) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	atomic_fetch_add(&h->bytes, (uint64_t)n);
	fuse_reply_buf(req, (const char *)data, (size_t)n);
	fusefs_ra_put(fs->prefetch, &hold);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusefs *fs = fs_of(req);
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;

	(void)ino;
	atomic_fetch_add_explicit(&fs->n_releases, 1, memory_order_relaxed);
	handle_unlink(fs, &h->h);
	fh_close(fs, h, NULL);
	fuse_reply_err(req, 0);
}

const struct fuse_lowlevel_ops fusefs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
};
