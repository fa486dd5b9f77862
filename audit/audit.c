/* audit: open (with recovery of a torn tail), group-committed appends, close.
 *
 * Group commit. An appender serializes its record, then under log->lock takes the next seq, adds
 * "seq" and "time", and queues the line. Then it waits until a batch holding its record is
 * durable. Whoever finds no leader writing becomes the leader: it takes the whole queue, drops the
 * lock, writes the queue with one write() and makes it durable with one fdatasync(), takes the
 * lock again, publishes the outcome and wakes everyone. Those whose seq is now durable return; of
 * the rest (queued while that batch was written), the first to run leads the next batch. Seqs are
 * handed out under the same lock that orders the queue, so file order is seq order, and every
 * batch is the seqs [durable, next_seq) at the moment it was taken.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <sodium.h>

#include "audit/audit_internal.h"
#include "common/timefmt.h"

/* ---- Open and close ------------------------------------------------------------------------ */

/* After creating dir: make its entry in the parent durable. */
static int fsync_parent(const char *dir)
{
	size_t n = strlen(dir);
	char *parent;
	int fd, r = 0;

	while (n > 1 && dir[n - 1] == '/')
		n--;
	while (n > 0 && dir[n - 1] != '/')
		n--;
	while (n > 1 && dir[n - 1] == '/')
		n--;
	parent = n == 0 ? strdup(".") : strndup(dir, n);
	if (!parent)
		return -ENOMEM;
	fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		r = err_set(-errno, "cannot sync directory %s: %s", parent, strerror(errno));
	if (fd >= 0)
		close(fd);
	free(parent);
	return r;
}

/* The "prev" a record must carry: the leaf hash of the record before it, in lowercase hex. */
static void prev_hex(const uint8_t leaf[static MERKLE_HASH_LEN], char out[static 2 * MERKLE_HASH_LEN + 1])
{
	sodium_bin2hex(out, 2 * MERKLE_HASH_LEN + 1, leaf, MERKLE_HASH_LEN);
}

/* Entries read but not yet given to the tree while the log is scanned. */
#define SCAN_BATCH 4096

/* Check every complete line of the freshly locked log after the tree's saved state (all of it
 * when the tree starts empty), add them to the tree, learn the next seq and the end of the last
 * complete line, and report a final line without '\n'. Changes nothing in the log. */
static int scan(struct audit_log *log, uint64_t *ret_count, uint64_t *ret_end,
		uint64_t *ret_torn)
{
	struct audit_tree *t = log->tree;
	struct tree_entry *e;
	struct audit_reader rd;
	uint8_t prev[MERKLE_HASH_LEN];
	uint64_t seq = t->f.size;
	size_t ne = 0;
	int r;

	e = calloc(SCAN_BATCH, sizeof(*e));
	if (!e)
		return -ENOMEM;
	r = audit_reader_init(&rd, log->fd, log->path, UINT64_MAX);
	if (r < 0) {
		free(e);
		return r;
	}
	rd.off = t->end;
	rd.line_no = seq;
	memcpy(prev, t->last_leaf, sizeof(prev));
	while ((r = audit_reader_next(&rd)) > 0) {
		char want[2 * MERKLE_HASH_LEN + 1];
		const char *got;
		json_t *rec = NULL;
		int64_t tm;

		r = audit_line_check(log->path, rd.line_no, rd.line_off, (const char *)rd.line.data,
				     rd.line.len, seq, &rec, &tm);
		if (r < 0)
			break;
		/* The chain: a record changed, added or removed in place shows here, at the first
		 * record after it (docs/AUDIT.md "The prev chain"). */
		prev_hex(prev, want);
		got = json_string_value(json_object_get(rec, "prev"));
		if (!got || strcmp(got, want) != 0) {
			char what[96];

			if (seq == 0)
				snprintf(what, sizeof(what), "the first record's \"prev\" must be 64 "
					 "zeros");
			else
				snprintf(what, sizeof(what), "its \"prev\" is not the hash of record "
					 "%llu", (unsigned long long)seq - 1);
			r = err_set(-EBADMSG, "%s: line %llu (offset %llu): record %llu: %s (it is "
				    "%s, the hash is %s): the log was altered; `enclavectl audit "
				    "verify` says how", log->path, (unsigned long long)rd.line_no,
				    (unsigned long long)rd.line_off, (unsigned long long)seq, what,
				    got ? got : "missing", want);
			json_decref(rec);
			break;
		}
		json_decref(rec);
		merkle_leaf_hash(rd.line.data, rd.line.len, e[ne].leaf);
		e[ne].len = (uint32_t)rd.line.len + 1;
		memcpy(prev, e[ne].leaf, sizeof(prev));
		seq++;
		if (++ne == SCAN_BATCH) {
			r = tree_append(t, e, ne);
			ne = 0;
			if (r < 0)
				break;
		}
	}
	if (r == 0 && ne > 0)
		r = tree_append(t, e, ne);
	if (r == 0) {
		*ret_count = seq;
		*ret_end = rd.line_off;
		*ret_torn = rd.line.len;
	}
	audit_reader_free(&rd);
	free(e);
	return r;
}

/* The "pseq" and "vseq" of the log's last record (none in a log written before they existed). */
static int last_pseq(struct audit_log *log, uint64_t count, uint64_t end)
{
	json_t *rec = NULL, *p;
	char *line = NULL;
	size_t len = 0;
	int r;

	if (count == 0)
		return 0;
	r = tree_line(log->tree, count - 1, count, end, &line, &len);
	if (r < 0)
		return r;
	rec = json_loadb(line, len, AUDIT_JSON_LOAD_FLAGS, NULL);
	free(line);
	p = json_object_get(rec, "pseq");
	if (json_is_integer(p) && json_integer_value(p) >= 0 &&
	    (uint64_t)json_integer_value(p) < count) {
		log->pseq = log->durable_pseq = (uint64_t)json_integer_value(p);
		log->pseq_set = log->durable_pseq_set = true;
	}
	p = json_object_get(rec, "vseq");
	if (json_is_integer(p) && json_integer_value(p) >= 0 &&
	    (uint64_t)json_integer_value(p) < count) {
		log->vseq = log->durable_vseq = (uint64_t)json_integer_value(p);
		log->vseq_set = log->durable_vseq_set = true;
	}
	json_decref(rec);
	return 0;
}

int audit_open(const char *dir, uint64_t *ret_torn_bytes, struct audit_log **ret_log)
{
	struct audit_log *log;
	struct stat st;
	uint64_t count = 0, end = 0, torn = 0;
	int dirfd = -1, r;

	log = calloc(1, sizeof(*log));
	if (!log)
		return -ENOMEM;
	log->fd = -1;
	log->dirfd = -1;
	log->dir = strdup(dir);
	if (!log->dir || asprintf(&log->path, "%s/%s", dir, AUDIT_LOG_NAME) < 0) {
		log->path = NULL;
		r = -ENOMEM;
		goto out_free;
	}

	if (mkdir(dir, 0700) == 0) {
		r = fsync_parent(dir);
		if (r < 0)
			goto out_free;
	} else if (errno != EEXIST) {
		r = err_set(-errno, "cannot create audit directory %s: %s", dir, strerror(errno));
		goto out_free;
	}
	/* Never through a symlink: a log written into someone else's directory is theirs to edit. */
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dirfd < 0) {
		r = -errno;
		/* O_DIRECTORY | O_NOFOLLOW on a symlink is ENOTDIR: say what it is. */
		if (r == -ENOTDIR && lstat(dir, &st) == 0 && S_ISLNK(st.st_mode))
			r = -ELOOP;
		r = err_set(r, "cannot open audit directory %s: %s", dir,
			    r == -ELOOP ? "a symbolic link, never followed" : strerror(-r));
		goto out_free;
	}
	/* O_RDWR: the scan below reads through the same descriptor that holds the lock. */
	log->fd = openat(dirfd, AUDIT_LOG_NAME,
			 O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (log->fd < 0) {
		r = err_set(-errno, "cannot open %s: %s", log->path, strerror(errno));
		goto out_close_dir;
	}
	if (fstat(log->fd, &st) < 0) {
		r = err_set(-errno, "cannot stat %s: %s", log->path, strerror(errno));
		goto out_close_fd;
	}
	if (!S_ISREG(st.st_mode)) {
		r = err_set(-EINVAL, "%s is not a regular file", log->path);
		goto out_close_fd;
	}
	if (flock(log->fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		r = err_set(r, "cannot lock %s: %s", log->path,
			    r == -EBUSY ? "another process has the audit log open" : strerror(-r));
		goto out_close_fd;
	}
	/* The log may have just been created: make its directory entry durable before any record
	 * is acknowledged as being in it. */
	if (fsync(dirfd) < 0) {
		r = err_set(-errno, "cannot sync audit directory %s: %s", dir, strerror(errno));
		goto out_close_fd;
	}

	r = tree_open(dirfd, dir, log->fd, &log->tree, NULL);
	if (r < 0)
		goto out_close_fd;
	r = scan(log, &count, &end, &torn);
	if (r < 0)
		goto out_close_tree;
	/* A final line without '\n' was torn by a crash mid-write: it was never acknowledged, since
	 * an append returns only after its whole line is synced. Cut it so appends start on a line
	 * boundary, and make the cut durable before the first of them. */
	if (torn > 0 && (ftruncate(log->fd, (off_t)end) < 0 || fsync(log->fd) < 0)) {
		r = err_set(-errno, "cannot cut the torn final line (%llu bytes at offset "
			    "%llu) off %s: %s", (unsigned long long)torn, (unsigned long long)end,
			    log->path, strerror(errno));
		goto out_close_tree;
	}
	/* What was read is now in the tree files: the next open starts from here. */
	r = tree_save_state(log->tree, count, end);
	if (r < 0)
		goto out_close_tree;

	log->next_seq = log->durable = log->written = count;
	r = last_pseq(log, count, end);
	if (r < 0)
		goto out_close_tree;
	log->end = log->wend = end;
	/* Room allocated past the end by an earlier run is not counted: it is taken again. */
	log->alloc_end = end;
	log->pub = log->wpub = log->tree->f;
	memcpy(log->durable_leaf, log->tree->last_leaf, MERKLE_HASH_LEN);
	memcpy(log->written_leaf, log->tree->last_leaf, MERKLE_HASH_LEN);
	memcpy(log->queued_leaf, log->tree->last_leaf, MERKLE_HASH_LEN);
	buf_init(&log->queue, AUDIT_QUEUE_MAX);
	buf_init(&log->batch, AUDIT_QUEUE_MAX);
	/* A line is at least a few dozen bytes: this many entries always cover a full queue. */
	buf_init(&log->qmeta, AUDIT_QUEUE_MAX / 16 * sizeof(struct tree_entry));
	buf_init(&log->bmeta, AUDIT_QUEUE_MAX / 16 * sizeof(struct tree_entry));
	pthread_mutex_init(&log->lock, NULL);
	pthread_cond_init(&log->cond, NULL);
	pthread_mutex_init(&log->cp_lock, NULL);
	pthread_mutex_init(&log->serial, NULL);
	pthread_mutex_init(&log->cp_tlock, NULL);
	pthread_cond_init(&log->cp_tcond, NULL);
	log->cp_fd = -1;
	log->dirfd = dirfd;
	if (ret_torn_bytes)
		*ret_torn_bytes = torn;
	*ret_log = log;
	return 0;

out_close_tree:
	tree_close(log->tree);
out_close_fd:
	close(log->fd);
out_close_dir:
	close(dirfd);
out_free:
	free(log->dir);
	free(log->path);
	free(log);
	return r;
}

void audit_close(struct audit_log *log)
{
	if (!log)
		return;
	/* Appends have ended. Without a syncer every one returned only once its record was synced
	 * (or failed); with one, it syncs what is written before it stops. Closing drops the
	 * flock. */
	audit_syncer_stop(log);
	audit_checkpointer_stop(log);
	audit_signer_clear(log);
	audit_sealer_clear(log);
	tree_close(log->tree);
	close(log->fd);
	close(log->dirfd);
	pthread_cond_destroy(&log->cond);
	pthread_mutex_destroy(&log->lock);
	pthread_mutex_destroy(&log->cp_lock);
	pthread_mutex_destroy(&log->serial);
	pthread_mutex_destroy(&log->cp_tlock);
	pthread_cond_destroy(&log->cp_tcond);
	buf_free(&log->queue);
	buf_free(&log->batch);
	buf_free(&log->qmeta);
	buf_free(&log->bmeta);
	free(log->dir);
	free(log->path);
	free(log);
}

void audit_snapshot(struct audit_log *log, uint64_t *ret_count, uint64_t *ret_end,
		    struct merkle_frontier *ret_f)
{
	pthread_mutex_lock(&log->lock);
	*ret_count = log->durable;
	*ret_end = log->end;
	if (ret_f)
		*ret_f = log->pub;
	pthread_mutex_unlock(&log->lock);
}

void audit_set_group_commit(struct audit_log *log, bool on)
{
	log->one_per_sync = !on;
}

uint64_t audit_count(struct audit_log *log)
{
	uint64_t n;

	pthread_mutex_lock(&log->lock);
	n = log->durable;
	pthread_mutex_unlock(&log->lock);
	return n;
}

bool audit_failed(struct audit_log *log)
{
	bool f;

	pthread_mutex_lock(&log->lock);
	f = log->failed;
	pthread_mutex_unlock(&log->lock);
	return f;
}

void audit_test_fail_next(struct audit_log *log, enum audit_fault where, int err)
{
	pthread_mutex_lock(&log->lock);
	log->fault = where;
	log->fault_err = err;
	pthread_mutex_unlock(&log->lock);
}

void audit_test_hold_batch(struct audit_log *log, uint64_t n)
{
	pthread_mutex_lock(&log->lock);
	log->hold = n;
	pthread_mutex_unlock(&log->lock);
}

void audit_test_hold_sync(struct audit_log *log, bool on)
{
	pthread_mutex_lock(&log->lock);
	log->hold_sync = on;
	pthread_cond_broadcast(&log->cond);
	pthread_mutex_unlock(&log->lock);
}

void audit_test_progress(struct audit_log *log, uint64_t *ret_synced, uint64_t *ret_synced_end,
			 uint64_t *ret_written, uint64_t *ret_written_end)
{
	pthread_mutex_lock(&log->lock);
	*ret_synced = log->durable;
	*ret_synced_end = log->end;
	*ret_written = log->written;
	*ret_written_end = log->wend;
	pthread_mutex_unlock(&log->lock);
}

uint64_t audit_test_batches(struct audit_log *log)
{
	uint64_t n;

	pthread_mutex_lock(&log->lock);
	n = log->batches;
	pthread_mutex_unlock(&log->lock);
	return n;
}

/* ---- Writing a batch ----------------------------------------------------------------------- */

/* Write b at the end of the file (O_APPEND) and, with sync, fdatasync the file. On failure cut
 * the file back to end (where b begins: a record boundary) and describe what happened in detail;
 * but a failed fdatasync when records before b were acknowledged unsynced (acked_unsynced) is
 * fatal at once: those were acknowledged, so they cannot be cut, and after a failed fdatasync
 * whether they are on disk is unknown. Runs without the lock: only the leader gets here, and the
 * fd, path and b are not changed by anyone else meanwhile. */
static int batch_write(struct audit_log *log, const struct buf *b, uint64_t end, uint64_t first,
		       uint64_t last, bool sync, bool acked_unsynced, enum audit_fault fault,
		       int fault_err, char *detail, size_t detail_len, bool *ret_fatal)
{
	size_t n = b->len, done = 0;
	const char *what = "write";
	int err = 0, terr = 0;

	if (n == 0 && !sync)
		return 0;
	if (n > 0 && (fault == AUDIT_FAULT_WRITE || fault == AUDIT_FAULT_WRITE_NO_TRUNCATE))
		n--;	/* the batch ends in '\n', so this leaves a torn last line */
	/* A short write is carried on from where it stopped (a signal can cut a large write);
	 * the retry then reports the error that stopped it, ENOSPC say. */
	while (done < n) {
		ssize_t w = write(log->fd, b->data + done, n - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			err = w < 0 ? errno : EIO;
			break;
		}
		done += (size_t)w;
	}
	if (!err && b->len > 0 && fault != AUDIT_FAULT_NONE && fault != AUDIT_FAULT_SYNC)
		err = fault_err;
	if (!err && sync) {
		what = "fdatasync";
		if (fdatasync(log->fd) < 0)
			err = errno;
		else if (fault == AUDIT_FAULT_SYNC)
			err = fault_err;
	}
	if (!err)
		return 0;

	if (sync && strcmp(what, "fdatasync") == 0 && acked_unsynced) {
		*ret_fatal = true;
		snprintf(detail, detail_len,
			 "%s: fdatasync of records up to %llu failed: %s; records already "
			 "acknowledged as written may not be on disk, so the log takes no more "
			 "records", log->path, (unsigned long long)(last - 1), strerror(err));
		return -EIO;
	}
	/* After a failed fdatasync the kernel may have dropped the dirty pages (marked clean, data
	 * lost), so what the file holds past end is unknown either way: cut it all. */
	if (fault == AUDIT_FAULT_WRITE_NO_TRUNCATE)
		terr = fault_err;
	else if (ftruncate(log->fd, (off_t)end) < 0 || fsync(log->fd) < 0)
		terr = errno;
	*ret_fatal = terr != 0;
	if (!terr)
		snprintf(detail, detail_len,
			 "%s: %s of records %llu..%llu failed: %s; the file was cut back to %llu "
			 "bytes, and the next record is tried again", log->path, what,
			 (unsigned long long)first, (unsigned long long)(last - 1), strerror(err),
			 (unsigned long long)end);
	else
		snprintf(detail, detail_len,
			 "%s: %s of records %llu..%llu failed: %s; cutting the file back to %llu "
			 "bytes failed too (%s), so it may hold some of them although their "
			 "appends failed; it takes no more records", log->path, what,
			 (unsigned long long)first, (unsigned long long)(last - 1), strerror(err),
			 (unsigned long long)end, strerror(terr));
	return -EIO;
}

static int failed_err(struct audit_log *log);

/* ---- Room on the file system (audit_reserve) ------------------------------------------------ */

/* The allocated room past the file's end grows by this much beyond what is needed, when the file
 * system has it, so that most appends make no fallocate call. */
#define AUDIT_ALLOC_CHUNK (64u * 1024)

/* With the lock held: the file's size once everything queued is written. */
static uint64_t queued_end(const struct audit_log *log)
{
	return log->wend + log->batch.len + log->queue.len;
}

static int try_fallocate(int fd, uint64_t off, uint64_t len)
{
	int r;

	do
		r = fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

/* With the lock held: make sure [0, want) of the file is allocated on disk (the part past the
 * file's size with FALLOC_FL_KEEP_SIZE, so the size, and so the log, is unchanged). 0, or
 * -ENOSPC (-errno) with err_detail(). Where fallocate is not supported, 0: nothing is kept. */
static int alloc_upto(struct audit_log *log, uint64_t want)
{
	uint64_t len;
	int r;

	if (log->no_prealloc || want <= log->alloc_end)
		return 0;
	len = want - log->alloc_end;
	r = try_fallocate(log->fd, log->alloc_end, len + AUDIT_ALLOC_CHUNK);
	if (r == 0) {
		log->alloc_end = want + AUDIT_ALLOC_CHUNK;
		return 0;
	}
	if (r == -EOPNOTSUPP) {
		log->no_prealloc = true;
		return 0;
	}
	if (r == -ENOSPC)
		r = try_fallocate(log->fd, log->alloc_end, len);
	if (r == 0) {
		log->alloc_end = want;
		return 0;
	}
	return err_set(r, "%s: no room on its file system for %llu more bytes of the audit log "
		       "(%llu kept for the close records of open files): %s", log->path,
		       (unsigned long long)len, (unsigned long long)log->reserved, strerror(-r));
}

/* With the lock held: room for a line of at most `len` bytes, on top of what is queued and the
 * reserved room (and a key record, which a reserved record may need first). */
static int room_for(struct audit_log *log, uint64_t len)
{
	uint64_t keep = log->reserved ? log->reserved + AUDIT_KEY_RECORD_MAX : 0;

	return alloc_upto(log, queued_end(log) + len + keep);
}

int audit_reserve(struct audit_log *log, uint64_t bytes)
{
	int r;

	pthread_mutex_lock(&log->lock);
	if (log->failed) {
		r = failed_err(log);
	} else {
		r = alloc_upto(log, queued_end(log) + log->reserved + bytes + AUDIT_KEY_RECORD_MAX);
		if (r == 0)
			log->reserved += bytes;
	}
	pthread_mutex_unlock(&log->lock);
	return r;
}

void audit_unreserve(struct audit_log *log, uint64_t bytes)
{
	pthread_mutex_lock(&log->lock);
	log->reserved -= MIN(bytes, log->reserved);
	pthread_mutex_unlock(&log->lock);
}

uint64_t audit_reserved(struct audit_log *log)
{
	uint64_t n;

	pthread_mutex_lock(&log->lock);
	n = log->reserved;
	pthread_mutex_unlock(&log->lock);
	return n;
}

/* Called with the lock held and no leader: write the whole queue as one batch, and sync the file
 * when an AUDIT_DURABLE append waits (sync_upto), when force_sync (the syncer), or when no syncer
 * runs (then every record is synced before its append returns, as with strict durability). The
 * lock is dropped during the I/O and held again on return; everyone waiting has been woken.
 * A batch that fails is cut back off the file, and its seqs (and those queued meanwhile) are
 * handed out again: a new epoch starts, and the appenders of the old one are told they failed.
 * Only when the file cannot be cut back (its end is unknown), or a sync fails under records
 * acknowledged unsynced, does the log stop for good. */
static void lead_batch(struct audit_log *log, bool force_sync)
{
	struct buf t = log->batch, tm = log->bmeta;
	uint64_t first = log->written, last = log->next_seq, wend = log->wend;
	uint64_t bpseq = log->pseq, bvseq = log->vseq;
	bool bpseq_set = log->pseq_set, bvseq_set = log->vseq_set;
	enum audit_fault fault = log->fault;
	int fault_err = log->fault_err, r;
	bool sync = force_sync || !log->syncer_running || log->sync_upto > log->durable ||
		    fault == AUDIT_FAULT_SYNC;
	bool acked_unsynced = log->written > log->durable;
	char detail[ERR_DETAIL_MAX];
	bool fatal = false;

	/* batch is empty between batches; the swap leaves the queue empty and keeps both
	 * allocations. */
	log->batch = log->queue;
	log->queue = t;
	log->bmeta = log->qmeta;
	log->qmeta = tm;
	log->fault = AUDIT_FAULT_NONE;
	log->leading = true;
	if (log->room_waiters)
		pthread_cond_broadcast(&log->cond);
	pthread_mutex_unlock(&log->lock);

	r = batch_write(log, &log->batch, wend, first, last, sync, acked_unsynced, fault,
			fault_err, detail, sizeof(detail), &fatal);
	/* The tree follows the written log (checkpoints publish only its synced prefix). A
	 * failure here costs proofs, not records: the frontier in memory stays right
	 * (tree_append() marks the files broken). */
	if (r == 0 && log->batch.len > 0)
		(void)tree_append(log->tree, (const struct tree_entry *)log->bmeta.data,
				  log->bmeta.len / sizeof(struct tree_entry));

	pthread_mutex_lock(&log->lock);
	if (r == 0) {
		log->written = last;
		log->wend = wend + log->batch.len;
		log->wpub = log->tree->f;
		memcpy(log->written_leaf, log->tree->last_leaf, MERKLE_HASH_LEN);
		if (log->batch.len > 0)
			log->batches++;
		/* The pseq of the last record in the file (docs/AUDIT.md section 16). */
		log->durable_pseq = bpseq;
		log->durable_pseq_set = bpseq_set;
		log->durable_vseq = bvseq;
		log->durable_vseq_set = bvseq_set;
		if (sync) {
			log->durable = log->written;
			log->end = log->wend;
			log->pub = log->wpub;
			memcpy(log->durable_leaf, log->written_leaf, MERKLE_HASH_LEN);
			log->syncs++;
		}
	} else {
		memcpy(log->fail_detail, detail, sizeof(detail));
		log->epoch_end[log->epoch % AUDIT_EPOCHS] = log->written;
		log->epoch++;
		log->failed = fatal;
		/* Lines queued meanwhile are never written: their appenders see the new epoch. */
		buf_reset(&log->queue);
		buf_reset(&log->qmeta);
		/* Cutting the file back freed what was allocated past its end: allocate the
		 * reserved room again if the file system still has it (if not, the next
		 * unreserved append, or the reserved ones, try again). */
		if (!fatal) {
			log->alloc_end = MIN(log->alloc_end, wend);
			if (log->reserved)
				(void)alloc_upto(log, wend + log->reserved + AUDIT_KEY_RECORD_MAX);
		}
		log->next_seq = log->written;
		memcpy(log->queued_leaf, log->written_leaf, MERKLE_HASH_LEN);
		log->pseq = log->durable_pseq;
		log->pseq_set = log->durable_pseq_set;
		log->vseq = log->durable_vseq;
		log->vseq_set = log->durable_vseq_set;
		/* The key record of this epoch may have been cut off with the batch: the next
		 * append starts a new epoch. */
		if (log->seal.written && log->seal.key_seq >= log->written)
			log->seal.written = false;
	}
	buf_reset(&log->batch);
	buf_reset(&log->bmeta);
	log->leading = false;
	pthread_cond_broadcast(&log->cond);
}

static int failed_err(struct audit_log *log)
{
	return err_set(-EIO, "%s", log->fail_detail);
}

/* ---- Appending ----------------------------------------------------------------------------- */

/* A private copy of rec that is known to read back: rec serialized, then parsed again. A record
 * that serializes but would not parse (a string with a NUL in it, nesting deeper than jansson
 * reads) would otherwise make the log one the next audit_open() refuses. line is scratch space of
 * AUDIT_RECORD_MAX bytes. */
static int record_copy(const json_t *rec, char *line, json_t **ret_obj, size_t *ret_len)
{
	json_error_t jerr;
	json_t *obj;
	size_t n;

	n = json_dumpb(rec, line, AUDIT_RECORD_MAX, AUDIT_JSON_FLAGS);
	if (n == 0)
		return err_set(-EINVAL, "audit record cannot be serialized (a string that is not "
			       "UTF-8, or a cycle)");
	if (n >= AUDIT_RECORD_MAX)
		return err_set(-EINVAL, "audit record of %zu bytes is longer than a line may be "
			       "(%u bytes)", n, AUDIT_RECORD_MAX);
	obj = json_loadb(line, n, AUDIT_JSON_LOAD_FLAGS, &jerr);
	if (!obj)
		return err_set(-EINVAL, "audit record would not read back: %s", jerr.text);
	*ret_obj = obj;
	*ret_len = n;
	return 0;
}

/* With the lock held: give obj its seq, time and prev (the next seq's). */
static int stamp(struct audit_log *log, json_t *obj)
{
	char when[TIME_TEXT_MAX], prev[2 * MERKLE_HASH_LEN + 1];
	int64_t now, back;

	/* The time is read under the lock with the seq, so times follow seq order as far as the
	 * wall clock itself goes forward. */
	now = now_realtime_ns();
	time_format_ns(now, when);
	/* Never write a time that the next audit_open() would refuse as damage. */
	if (audit_time_parse_ns(when, strnlen(when, sizeof(when)), &back) < 0 || back != now)
		return err_set(-EIO, "audit time %lld was formatted as \"%.*s\", which does not "
			       "read back", (long long)now, (int)sizeof(when), when);
	prev_hex(log->queued_leaf, prev);
	if (json_object_set_new(obj, "seq", json_integer((json_int_t)log->next_seq)) < 0 ||
	    json_object_set_new(obj, "time", json_string(when)) < 0 ||
	    json_object_set_new(obj, "prev", json_string(prev)) < 0)
		return -ENOMEM;
	/* Every record names the last policy record, itself included, so the daemon finds the
	 * policy state the log stands for from the log's last line (docs/AUDIT.md section 16). */
	if (json_object_get(obj, "policy_digest")) {
		log->pseq = log->next_seq;
		log->pseq_set = true;
	}
	if (log->pseq_set &&
	    json_object_set_new(obj, "pseq", json_integer((json_int_t)log->pseq)) < 0)
		return -ENOMEM;
	/* The same for the versions the log stands for (docs/AUDIT.md section 18). */
	if (json_object_get(obj, "versions_digest")) {
		log->vseq = log->next_seq;
		log->vseq_set = true;
	}
	if (log->vseq_set &&
	    json_object_set_new(obj, "vseq", json_integer((json_int_t)log->vseq)) < 0)
		return -ENOMEM;
	return 0;
}

/* With the lock held: serialize the stamped obj into line (AUDIT_RECORD_MAX bytes of scratch)
 * and queue it as seq next_seq. */
static int queue_line(struct audit_log *log, json_t *obj, char *line, uint64_t *ret_seq)
{
	struct tree_entry e;
	size_t n;
	int r;

	n = json_dumpb(obj, line, AUDIT_RECORD_MAX, AUDIT_JSON_FLAGS);
	if (n == 0)
		return -ENOMEM;	/* it serialized before: only memory can fail now */
	if (n > AUDIT_RECORD_MAX - 1)
		return err_set(-EINVAL, "audit record line of %zu bytes with its seq and time is "
			       "longer than %u bytes", n + 1, AUDIT_RECORD_MAX);
	merkle_leaf_hash(line, n, e.leaf);
	e.len = (uint32_t)n + 1;
	line[n] = '\n';
	r = buf_append(&log->queue, line, n + 1);
	if (r < 0)
		return r;
	r = buf_append(&log->qmeta, &e, sizeof(e));
	if (r < 0) {
		log->queue.len -= n + 1;
		return r;
	}
	memcpy(log->queued_leaf, e.leaf, MERKLE_HASH_LEN);
	*ret_seq = log->next_seq++;
	if (log->hold)
		pthread_cond_broadcast(&log->cond);	/* a held leader counts the queue again */
	return 0;
}

/* With the lock held: wait for room, give obj its seq and time, seal it when the log seals
 * (after the key record of a new epoch), serialize it into line (AUDIT_RECORD_MAX bytes of
 * scratch) and queue it. len: its line's length unstamped and unsealed. *reserved: a reserved
 * record's reservation, used up here (and set to 0 then); 0: an ordinary record, which must find
 * room on the file system on top of the reserved room, or is refused (-ENOSPC) unqueued. */
static int enqueue(struct audit_log *log, json_t *obj, char *line, size_t len, uint64_t *reserved,
		   uint64_t *ret_seq)
{
	int r;

	for (;;) {
		size_t room = AUDIT_RECORD_MAX, meta = sizeof(struct tree_entry);

		if (log->failed)
			return failed_err(log);
		if (log->seal.store_key) {
			room += AUDIT_KEY_RECORD_MAX;
			meta *= 2;
		}
		if (log->queue.len + room <= log->queue.max &&
		    log->qmeta.len + meta <= log->qmeta.max)
			break;
		/* The queue is full, so not empty: if nobody is writing, write it ourselves. */
		if (!log->leading) {
			lead_batch(log, false);
		} else {
			log->room_waiters++;
			pthread_cond_wait(&log->cond, &log->lock);
			log->room_waiters--;
		}
	}

	/* Room on the file system. An upper bound of the line: stamped (seq, time, prev, pseq) and,
	 * when sealing, its names encrypted and base64-encoded; and a key record first when a new
	 * epoch starts. A reserved record takes the room kept for it instead, which no other
	 * record could take (they all check here). */
	if (*reserved) {
		log->reserved -= MIN(*reserved, log->reserved);
		*reserved = 0;
	} else {
		uint64_t bound = log->seal.store_key ? 2 * (uint64_t)len + 1024 : len + 512;

		if (seal_needs_key(log))
			bound += AUDIT_KEY_RECORD_MAX;
		r = room_for(log, bound);
		if (r < 0)
			return r;
	}

	/* A new epoch: its key record goes first, so every reader meets the key before the
	 * records sealed under it. */
	if (seal_needs_key(log)) {
		json_t *k = NULL;
		uint64_t kseq;

		r = seal_key_record(log, log->next_seq, &k);
		if (r == 0)
			r = stamp(log, k);
		if (r == 0)
			r = queue_line(log, k, line, &kseq);
		json_decref(k);
		if (r < 0)
			return r;
		seal_key_written(log, kseq);
	}
	r = stamp(log, obj);
	if (r == 0 && log->seal.store_key)
		r = seal_record(log, obj);
	if (r == 0)
		r = queue_line(log, obj, line, ret_seq);
	return r;
}

/* With the lock held: return once seq (queued in epoch `epoch`) is durable, or only written when
 * !durable, leading batches while nobody else does. */
static int wait_durable(struct audit_log *log, uint64_t seq, uint64_t epoch, bool durable)
{
	for (;;) {
		if (log->epoch != epoch) {
			/* A batch failed since our record was queued: ours was written if it lay
			 * below what was written when our epoch ended (and then, if it had to be
			 * durable, it was: its own batch synced). */
			if (log->epoch - epoch <= AUDIT_EPOCHS &&
			    seq < log->epoch_end[epoch % AUDIT_EPOCHS])
				return 0;
			return failed_err(log);
		}
		if (seq < (durable ? log->durable : log->written))
			return 0;
		if (log->failed)
			return failed_err(log);
		if (!log->leading && log->next_seq - log->written >= log->hold) {
			log->hold = 0;
			lead_batch(log, false); /* our line is in the queue or written */
		} else {
			pthread_cond_wait(&log->cond, &log->lock);
		}
	}
}

static int append(struct audit_log *log, const json_t *rec, enum audit_durability d,
		  uint64_t reserved, uint64_t *ret_seq)
{
	json_t *obj = NULL;
	char *line = NULL;
	uint64_t seq = 0;
	size_t len = 0;
	bool durable;
	int r;

	if (!json_is_object(rec)) {
		r = err_set(-EINVAL, "audit record is not a JSON object");
		goto out_free;
	}
	if (d != AUDIT_DURABLE && d != AUDIT_WRITTEN) {
		r = err_set(-EINVAL, "audit durability %d is not a known one", (int)d);
		goto out_free;
	}
	if (json_object_get(rec, "seq") || json_object_get(rec, "time") ||
	    json_object_get(rec, "prev") || json_object_get(rec, "key") ||
	    json_object_get(rec, "sealed") || json_object_get(rec, "pseq") ||
	    json_object_get(rec, "vseq")) {
		r = err_set(-EINVAL, "audit record has \"seq\", \"time\", \"prev\", \"key\", "
			    "\"sealed\", \"pseq\" or \"vseq\": the log adds them");
		goto out_free;
	}
	line = malloc(AUDIT_RECORD_MAX);
	if (!line) {
		r = -ENOMEM;
		goto out_free;
	}
	/* Outside the lock: the serialization and parse that do not depend on the seq. */
	r = record_copy(rec, line, &obj, &len);
	if (r < 0)
		goto out_free;

	/* Without group commit (benchmarks only), appends take turns: one record per batch. */
	if (log->one_per_sync)
		pthread_mutex_lock(&log->serial);
	pthread_mutex_lock(&log->lock);
	/* Without a syncer nobody would sync a written record later: sync it now. */
	durable = d == AUDIT_DURABLE || !log->syncer_running;
	r = enqueue(log, obj, line, len, &reserved, &seq);
	if (r == 0) {
		if (durable && log->sync_upto < seq + 1)
			log->sync_upto = seq + 1;
		r = wait_durable(log, seq, log->epoch, durable);
	}
	pthread_mutex_unlock(&log->lock);
	if (log->one_per_sync)
		pthread_mutex_unlock(&log->serial);
	if (r == 0 && ret_seq)
		*ret_seq = seq;

	json_decref(obj);
out_free:
	free(line);
	/* A reservation that was not reached (the record was refused before it was queued) is
	 * given back all the same: the caller will not use it again. */
	if (reserved)
		audit_unreserve(log, reserved);
	return r;
}

int audit_append_mode(struct audit_log *log, const json_t *rec, enum audit_durability d,
		      uint64_t *ret_seq)
{
	return append(log, rec, d, 0, ret_seq);
}

int audit_append_reserved(struct audit_log *log, const json_t *rec, enum audit_durability d,
			  uint64_t reserved, uint64_t *ret_seq)
{
	if (reserved == 0)
		return err_set(-EINVAL, "a reserved audit record without its reservation");
	return append(log, rec, d, reserved, ret_seq);
}

int audit_append(struct audit_log *log, const json_t *rec, uint64_t *ret_seq)
{
	return audit_append_mode(log, rec, AUDIT_DURABLE, ret_seq);
}

/* ---- The syncer ---------------------------------------------------------------------------- */

/* With the lock held: sync everything written (and write whatever is queued) now, taking the
 * lead as soon as nobody holds it. */
static int sync_now(struct audit_log *log)
{
	uint64_t target = log->next_seq, epoch = log->epoch;

	if (target == 0 || log->durable >= target)
		return log->failed ? failed_err(log) : 0;
	if (log->sync_upto < target)
		log->sync_upto = target;
	return wait_durable(log, target - 1, epoch, true);
}

int audit_sync(struct audit_log *log)
{
	int r;

	pthread_mutex_lock(&log->lock);
	r = sync_now(log);
	pthread_mutex_unlock(&log->lock);
	return r;
}

/* Sleeps until something is written but not synced, then interval_ms more (so that many
 * records share one fdatasync), then syncs it all. Written records are therefore durable at
 * most interval_ms plus one fdatasync after they were written. */
static void *syncer_main(void *arg)
{
	struct audit_log *log = arg;

	pthread_mutex_lock(&log->lock);
	for (;;) {
		struct timespec until;

		while (!log->syncer_stop && (log->written == log->durable || log->hold_sync))
			pthread_cond_wait(&log->cond, &log->lock);
		if (log->syncer_stop)
			break;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long)log->sync_interval_ms * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		while (!log->syncer_stop &&
		       pthread_cond_timedwait(&log->cond, &log->lock, &until) != ETIMEDOUT)
			;
		if (log->failed)
			break;
		if (log->hold_sync)
			continue;
		/* Only what was written: records still queued go with their own batch. */
		if (log->written > log->durable) {
			uint64_t target = log->written;

			if (log->sync_upto < target)
				log->sync_upto = target;
			(void)wait_durable(log, target - 1, log->epoch, true);
		}
	}
	pthread_mutex_unlock(&log->lock);
	return NULL;
}

int audit_syncer_start(struct audit_log *log, unsigned interval_ms)
{
	int r;

	if (interval_ms < 1 || interval_ms > 1000)
		return err_set(-EINVAL, "audit sync interval %u ms is outside 1..1000", interval_ms);
	pthread_mutex_lock(&log->lock);
	if (log->syncer_running) {
		pthread_mutex_unlock(&log->lock);
		return -EBUSY;
	}
	log->sync_interval_ms = interval_ms;
	log->syncer_stop = false;
	r = -pthread_create(&log->syncer, NULL, syncer_main, log);
	if (r == 0)
		log->syncer_running = true;
	pthread_mutex_unlock(&log->lock);
	return r;
}

void audit_syncer_stop(struct audit_log *log)
{
	pthread_mutex_lock(&log->lock);
	if (!log->syncer_running) {
		pthread_mutex_unlock(&log->lock);
		return;
	}
	log->syncer_stop = true;
	pthread_cond_broadcast(&log->cond);
	pthread_mutex_unlock(&log->lock);
	pthread_join(log->syncer, NULL);
	pthread_mutex_lock(&log->lock);
	(void)sync_now(log);    /* the last records written: a clean stop leaves all synced */
	log->syncer_running = false;
	pthread_mutex_unlock(&log->lock);
}
