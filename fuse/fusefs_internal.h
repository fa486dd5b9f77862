/* fusefs internals shared by the fuse/ sources. Not a public header: nothing outside fuse/
 * includes it. FUSE_USE_VERSION comes from fuse/CMakeLists.txt. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include <fuse_lowlevel.h>

#include "fuse/fusefs.h"
#include "fuse/ino.h"
#include "fuse/limit.h"
#include "fuse/prefetch.h"
#include "fuse/subject.h"

_Static_assert(sizeof(fuse_ino_t) == sizeof(uint64_t), "inode numbers are 64-bit");
_Static_assert(FUSEFS_ROOT_INO == FUSE_ROOT_ID, "the root is libfuse's root");

/* ---- Bounded maps (map.c) ------------------------------------------------------------------
 *
 * A fixed-size, set-associative cache from a 64-bit key (never 0) to a short string, used for
 * "inode number -> path inside its version" (audit records need the path, and the store keeps
 * no parent pointers) and "dataset id -> name". Both are caches: a miss has a fallback. Capped at
 * creation in entries and in string bytes; an insert past the byte cap is dropped. Each set has
 * its own lock, so lookups from many workers rarely contend. */
struct fusefs_map;

int fusefs_map_new(size_t entries, size_t max_bytes, struct fusefs_map **ret_map);
void fusefs_map_free(struct fusefs_map *m);
/* Insert or replace (best effort: a value longer than the cap allows is not stored). */
void fusefs_map_put(struct fusefs_map *m, uint64_t key, const char *val);
/* Copy the value for key into out (size n) and return true; false if absent or too long. */
bool fusefs_map_get(struct fusefs_map *m, uint64_t key, char *out, size_t n);
void fusefs_map_del(struct fusefs_map *m, uint64_t key);

/* ---- Subjects (subject.c) ------------------------------------------------------------------ */

/* User names, and each calling thread's groups and job: fuse/subject.h. */

/* Who sent req: its uid and name, the request's gid first and then every supplementary group the
 * calling thread holds now (from /proc/<tid>/status, or the process cache when nothing that
 * could change them did), and *ret_proc (may be NULL) its name and job. -ESRCH / -EIO / -ENOENT
 * when the process cannot be read (gone, or not visible), -E2BIG more than POLICY_GROUPS_MAX
 * groups, and the errors of the passwd lookup for the name: the caller then refuses. */
int fusefs_subject_get(struct fusefs_subjects *c, fuse_req_t req,
		       struct policy_subject *ret_subject, struct fusefs_proc *ret_proc);

/* ---- Policy generations and cached inodes (fusefs.c) ---------------------------------------
 *
 * Revocation of open handles. fs->gens[] holds a generation per bucket of datasets (dataset id
 * modulo FUSEFS_GEN_BUCKETS); fusefs_invalidate_dataset() bumps its dataset's bucket, _all every
 * bucket. An open handle remembers the generation of its bucket loaded *before* its last decision;
 * a read that loads another value decides again (datasets sharing a bucket only cost an extra
 * decision). Ordering: the daemon changes its grant table, then bumps (release); a read loads
 * (acquire) and, on a change, decides after the load, so it sees the new table.
 *
 * cache=kernel inodes. The kernel's page cache belongs to the inode, not to an open file, so a
 * handle whose reads are now refused could still be served from pages cached earlier. Every inode
 * opened in cache=kernel mode is kept in a bounded set (FUSEFS_CACHED_MAX entries, with the count
 * of its cache-mode handles now open); invalidation drops the kernel's pages of each inode of the
 * dataset and forgets those that no cache-mode handle holds (their pages are gone and only an
 * open, which re-adds them, can bring them back). When the set is full, an open that would be
 * cached is served with direct I/O instead (safe, slower; logged once). */
#define FUSEFS_GEN_BUCKETS 1024u
#define FUSEFS_CACHED_MAX 65536u

struct fusefs_cached {
	uint64_t ino;                   /* 0: free slot */
	uint32_t open;                  /* cache-mode handles of ino now open */
};

/* The bucket generation of dataset dsid (acquire). */
static inline uint64_t fusefs_gen(struct fusefs *fs, uint64_t dsid);
/* Add ino to the cached set (or count one more open of it): false when the set is full. */
bool fusefs_cached_add(struct fusefs *fs, fuse_ino_t ino);
/* One cache-mode handle of ino is released (its pages stay cached: the entry stays). */
void fusefs_cached_release(struct fusefs *fs, fuse_ino_t ino);

/* ---- Index reads saved (ops.c; issue 13, point 3) ------------------------------------------
 *
 * A path walk looks the version directory up every time (entry timeout 0, where grants are
 * decided), and an open follows the lookup of the file that just read its inode. Both are
 * remembered here, direct-mapped, with the generation of their dataset's bucket loaded before
 * the index was read: any invalidation of the dataset (a revocation, a cache setting, an
 * erasure) moves it, and an entry whose generation moved is a miss. A version's records never
 * change while it exists, so a hit returns what the index would. */
#define FUSEFS_MEMO_SLOTS 1024u

struct fusefs_vmemo {                   /* a version directory's attributes */
	uint64_t dsid;                  /* 0: free */
	uint32_t version;
	uint64_t gen;
	int64_t committed_ns;
	struct store_inode root;
};

struct fusefs_imemo {                   /* the inode of the file a lookup just found */
	uint64_t ino;                   /* 0: free */
	uint64_t gen;
	struct store_inode in;
};

/* ---- Views (view.c): each user's own inode numbers for a cache=kernel version ------------- */
#define FUSEFS_VIEWS_MAX 16384u

struct fusefs_view {
	uint64_t dsid;
	uint32_t version;
	uint32_t uid;
};

struct fusefs_views;
int fusefs_views_new(struct fusefs_views **ret);
void fusefs_views_free(struct fusefs_views *v);
/* The view of (dsid, version) for uid, made if new. false: the table is full. */
bool fusefs_view_get(struct fusefs_views *v, uint64_t dsid, uint32_t version, uint32_t uid,
		     uint32_t *ret_id);
/* What view id names; false for an id never handed out. Lock-free. */
bool fusefs_view_resolve(const struct fusefs_views *v, uint32_t id, struct fusefs_view *ret);
/* Views handed out so far: ids 1..count. */
uint32_t fusefs_view_count(const struct fusefs_views *v);
/* fusefs_ino_decode(), with a view node's dataset, version and owner filled in. */
bool fusefs_node_decode(struct fusefs *fs, uint64_t ino, struct fusefs_node *ret);
/* The number of store inode sino in the same version (and view) as dir. */
bool fusefs_node_child(const struct fusefs_node *dir, uint64_t sino, uint64_t *ret);

/* ---- The file system ---------------------------------------------------------------------- */

/* First member of every open file and directory handle: all of them are on one list, so that
 * the ones the kernel never releases (the connection ended under them, or the session stopped)
 * are still closed, recorded and wiped by fusefs_free(). */
struct fusefs_handle {
	struct fusefs_handle *prev;
	struct fusefs_handle *next;
	bool is_file;           /* struct fh (ops.c), else struct dirh */
};

/* Kinds of stderr lines, each rate-limited on its own (fusefs_log_limited()). */
enum fusefs_log_kind {
	FUSEFS_LOG_DSID,       /* a dataset id too large to encode */
	FUSEFS_LOG_VERSION,    /* a version too large to encode */
	FUSEFS_LOG_SINO,       /* a store inode number too large to encode */
	FUSEFS_LOG_SUBJECT,    /* policy_subject_lookup failed */
	FUSEFS_LOG_AUDIT,      /* an audit append failed */
	FUSEFS_LOG_STORE,      /* a store error other than ENOENT */
	FUSEFS_LOG_CACHED,     /* the cached-inode set is full: cache=kernel opens go direct */
	FUSEFS_LOG_COUNT
};

/* At most one stderr line per kind in this many seconds; the next says how many were left out. */
#define FUSEFS_LOG_INTERVAL_S 10
/* The cache=direct hint: datasets remembered, and how often each is named again. */
#define FUSEFS_DIRECT_HINTS 64
#define FUSEFS_DIRECT_HINT_INTERVAL_S 3600

/* The rate limit of one kind of line: atomics, so the request path never waits on it. */
struct fusefs_log_limit {
	_Atomic int64_t last_ns;        /* CLOCK_MONOTONIC of the last line printed; 0 none */
	_Atomic uint64_t left_out;      /* lines not printed since */
};

struct fusefs {
	struct store *st;               /* borrowed; outlives us */
	struct audit_log *log;          /* borrowed; outlives us */
	struct fusefs_callbacks cb;     /* the daemon's decision and cache setting; ctx borrowed */
	char *mountpoint;               /* owned; canonical once mounted */
	unsigned max_threads;           /* 0: libfuse's default */
	bool debug;
	int64_t created_ns;             /* mtime of the mount root */

	struct fuse_session *se;        /* owned */
	pthread_key_t worker_key;       /* per worker thread: struct fusefs_worker */
	bool worker_key_made;
	struct fusefs_map *paths;       /* node ino -> "/path/inside/version" */
	struct fusefs_map *dsnames;     /* dataset id -> dataset name */
	struct fusefs_subjects *subjects;   /* uid -> user name, briefly */
	struct fusefs_views *views;         /* owned: per-user numbers of cache=kernel versions */
	struct fusefs_prefetch *prefetch;   /* owned; NULL: no read-ahead */
	/* Policy generations, one per bucket of datasets; see "Policy generations" above. */
	_Atomic uint64_t gens[FUSEFS_GEN_BUCKETS];
	pthread_mutex_t cached_lock;    /* guards cached[], ncached; never held while notifying */
	struct fusefs_cached *cached;   /* owned; FUSEFS_CACHED_MAX slots, open addressing */
	size_t ncached;                 /* used slots */
	_Atomic uint64_t n_reads;       /* struct fusefs_stats */
	_Atomic uint64_t n_reads_refused;
	_Atomic uint64_t n_opens_cached;
	_Atomic uint64_t n_readdirs;
	_Atomic uint64_t n_lookups;
	_Atomic uint64_t n_getattrs;
	_Atomic uint64_t n_opens;
	_Atomic uint64_t n_releases;
	pthread_mutex_t memo_lock;      /* guards vmemo[], imemo[] */
	struct fusefs_vmemo vmemo[FUSEFS_MEMO_SLOTS];
	struct fusefs_imemo imemo[FUSEFS_MEMO_SLOTS];
	struct fusefs_log_limit logs[FUSEFS_LOG_COUNT];
	/* Datasets whose cache=direct hint (shared mmap fails with ENODEV) was logged, and when:
	 * once per dataset per FUSEFS_DIRECT_HINT_INTERVAL_S (ops.c direct_hint()). */
	pthread_mutex_t hint_lock;
	struct { uint64_t dsid; int64_t at_s; } hints[FUSEFS_DIRECT_HINTS];
	_Atomic int fault_where;        /* enum fusefs_fault armed by fusefs_test_fail_next() */
	_Atomic int fault_err;          /* its errno */
	pthread_mutex_t handles_lock;   /* guards the handles list */
	struct fusefs_handle handles;   /* list head of open handles */
	struct fusefs_limiter *limiter; /* refusal records (fuse/limit.h); owned */
	/* The thread that writes the summaries of refusal windows that ended (records.c), while
	 * fusefs_run() runs. flush_lock guards flush_stop. */
	pthread_t flusher;
	pthread_mutex_t flush_lock;
	pthread_cond_t flush_cond;
	bool flush_stop;

	/* Mount state. state_lock orders fusefs_mount/stop/invalidate/free; request handlers never
	 * take it, so holding it while the kernel waits on a handler cannot deadlock. */
	pthread_mutex_t state_lock;
	bool mounted;                   /* fuse_session_mount succeeded, not yet unmounted */
	bool ever_mounted;              /* fuse_session_mount succeeded once */
	bool covered;                   /* at unmount, another mount was on top of ours */
	bool stopped;                   /* fusefs_stop ran (it only runs once) */
	dev_t dev;                      /* the mount's device number, from mountinfo; 0 unknown */
};

static inline uint64_t fusefs_gen(struct fusefs *fs, uint64_t dsid)
{
	return atomic_load_explicit(&fs->gens[dsid % FUSEFS_GEN_BUCKETS], memory_order_acquire);
}

/* One stderr line about `what`, unless one of the same kind was printed in the last
 * FUSEFS_LOG_INTERVAL_S seconds (then it is only counted, and the next line printed says how many
 * were left out). Returns the number of lines left out before this one plus one when it printed,
 * 0 when it did not. Never secret: names, ids and errno text only. */
__attribute__((format(printf, 3, 4))) uint64_t fusefs_log_limited(struct fusefs *fs,
								  enum fusefs_log_kind what,
								  const char *fmt, ...);

/* -err if a fault was armed at where (and disarm it), else 0. One atomic load when none is. */
static inline int fusefs_test_fault(struct fusefs *fs, enum fusefs_fault where)
{
	int w = (int)where;

	if (atomic_load_explicit(&fs->fault_where, memory_order_relaxed) != w ||
	    !atomic_compare_exchange_strong(&fs->fault_where, &w, FUSEFS_FAULT_NONE))
		return 0;
	return -atomic_load(&fs->fault_err);
}

/* The lowlevel operations (ops.c). */
extern const struct fuse_lowlevel_ops fusefs_ops;
/* Destructor of the per-thread worker state (ops.c). */
void fusefs_worker_free(void *p);
/* The current info of dataset dsid (ops.c): its name from the cache, then a fresh record by name
 * (the latest version changes with imports); on a miss, one scan of the datasets. */
int fusefs_dataset_by_id(struct fusefs *fs, uint64_t dsid, struct store_dataset_info *ret);
/* The room of an open file's close record, kept in the audit log (audit_reserve(): allocated on
 * its file system, where no other record can take it) before the open is allowed, and given back
 * when the close is written. fusefs_reserve: 0, -ENOSPC (or -errno) when the file system has no
 * room: refuse the open. */
int fusefs_reserve(struct fusefs *fs, uint64_t bytes);
void fusefs_unreserve(struct fusefs *fs, uint64_t bytes);
/* Close (recording "close" for files) every handle still open; only once no worker runs. */
void fusefs_handles_release_all(struct fusefs *fs);
/* The inode numbers of the open file handles of dataset dsid (all: of every dataset), into a new
 * array *ret_inos (NULL when there are none) of *ret_n entries. -ENOMEM. */
int fusefs_handles_inos(struct fusefs *fs, bool all, uint64_t dsid, fuse_ino_t **ret_inos,
			size_t *ret_n);

/* ---- Audit records (records.c) ------------------------------------------------------------- */

/* Who and what an access record is about. Strings are borrowed. */
struct fusefs_access {
	const char *dataset;
	uint64_t dsid;
	uint32_t version;
	const char *path;               /* inside the version, from "/" */
	uint32_t uid;
	const char *user;
	pid_t pid;
	const char *process;            /* "" when /proc/<pid>/comm could not be read */
};

/* What only the "open" record says: the caller's groups, its batch job, how the file is served. */
struct fusefs_open_info {
	const uint32_t *gids;           /* the subject's groups, request's gid first; borrowed */
	size_t ngids;
	uint64_t job_id;                /* with job_source != FUSEFS_JOB_NONE (fuse/job.h) */
	int job_source;                 /* enum fusefs_job_source */
	const char *cache;              /* allowed opens: "kernel" or "direct"; NULL for denials */
	bool durable;                   /* sync the record before returning (a session's first
					 * allowed open); otherwise it is only written, and synced
					 * within the log's sync interval (docs/AUDIT.md) */
};

/* The caller's command name (/proc/<pid>/comm) into out (16 bytes and more); "" if unreadable. */
void fusefs_process_name(pid_t pid, char *out, size_t n);
/* "open" records: allow (grant_id, ret_seq for the close record) or deny. -errno from audit. */
/* "integrity" record of a failure the store found in its index: the store's integrity hook
 * (ctx is the fusefs). */
void fusefs_record_index_integrity(void *ctx, uint64_t dsid, uint32_t version, const char *what);
int fusefs_record_open(struct fusefs *fs, const struct fusefs_access *a,
		       const struct fusefs_open_info *oi, const struct policy_decision *d,
		       const char *error, uint64_t *ret_seq);
/* "read_refused" record: an open handle's re-decision (after an invalidation) refused it; written
 * once per handle. bytes: what it had read until then. */
int fusefs_record_read_refused(struct fusefs *fs, const struct fusefs_access *a,
			       uint64_t open_seq, const struct policy_decision *d, uint64_t bytes);
/* "close" record: bytes read through the handle; error non-NULL when the open failed after it
 * was recorded as allowed (then bytes is 0). */
int fusefs_record_close(struct fusefs *fs, const struct fusefs_access *a, uint64_t open_seq,
			uint64_t bytes, const char *error);
/* The same for a handle that reserved `reserved` bytes at its open (fusefs_reserve()): the
 * record is written into that room (audit_append_reserved()), which a full file system cannot
 * refuse; if it fails all the same (an I/O error the log cut back), it is tried once more. */
int fusefs_record_close_reserved(struct fusefs *fs, const struct fusefs_access *a,
				 uint64_t open_seq, uint64_t bytes, const char *error,
				 uint64_t reserved);
/* The room a close record of this access can take, at most: the fixed members, the seal, and
 * every name escaped at its longest. */
static inline uint64_t fusefs_close_room(const struct fusefs_access *a)
{
	return 1024 + 6 * (strlen(a->dataset) + strlen(a->path) + strlen(a->user) +
			   strlen(a->process));
}
/* A store error reading an open file: event "integrity" (a chunk in [offset, offset+length)
 * failed authentication, the pack is shorter than the index says, an object key did not unwrap)
 * or "io_error" (the disk failed); error says what. */
int fusefs_record_integrity(struct fusefs *fs, const char *event, const struct fusefs_access *a,
			    uint64_t open_seq, uint64_t offset, uint64_t length, const char *error);
/* "io_error" record of an index error outside an open file (lookup, getattr, listing, open before
 * the decision), written with the stderr line of the same kind, so as often as that:
 * left_out says how many were not written since the last. */
int fusefs_record_store_error(struct fusefs *fs, const char *error, uint64_t left_out);

/* Refusals (records.c, with fuse/limit.h). A refused open or lookup asks first whether it gets a
 * full record (true) or is only counted (false); either way it is refused. Summaries of windows
 * that ended are written first. */
bool fusefs_refusal_admit(struct fusefs *fs, uint32_t uid, const char *user,
			  enum fusefs_refusal_kind kind, const void *key, size_t keylen);
/* "lookup_refused" record: a caller asked for a dataset or a version it may not see, and was
 * answered ENOENT as for a name that does not exist (the record is written after the reply, so
 * that its cost does not tell the caller the name exists). version 0: the dataset itself. */
int fusefs_record_lookup_refused(struct fusefs *fs, const struct fusefs_access *a,
				 const struct policy_decision *d);
/* Write the "refusals_suppressed" summaries of a window that ended (all: of the current one too,
 * at the end of fusefs_run()). */
void fusefs_refusals_flush(struct fusefs *fs, bool all);
/* The flusher thread's body (records.c): flushes once a second until fs->flush_stop. */
void *fusefs_flusher_main(void *arg);
