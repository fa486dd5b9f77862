/* tree: the Merkle tree over audit.log, kept on disk beside it so that the daemon appends and
 * proves without reading the log again (docs/AUDIT.md "Tree files").
 *
 *   tree/L00 .. tree/L63  level k: the hash of every complete perfect subtree of 2^k records, in
 *                         index order, 32 bytes each (L00 holds the leaf hashes)
 *   tree/offsets          the byte offset of every record's line in audit.log, 8 bytes LE each
 *   tree/state            a snapshot (record count, log offset after them), written atomically
 *                         and made durable at each checkpoint, after the files above
 *
 * Everything here is derived from the log: a missing or inconsistent tree is rebuilt from it.
 * The files past the state's count may hold anything (written but not synced when a crash came):
 * opening cuts them back to the state and appends again from the log.
 *
 * Threads: only the log's batch leader appends (one at a time, by construction of group commit);
 * tree_perfect() and tree_line() may run in other threads at any time, and read only entries
 * whose records the log has published as durable, which were written before being published.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include <sodium.h>

#include "audit/audit_internal.h"
#include "common/err.h"

#define TREE_DIR "tree"
#define STATE_NAME "state"
#define STATE_TMP "state.tmp"
#define OFFSETS_NAME "offsets"
#define STATE_MAGIC "ENCLTREE"
#define STATE_VERSION 1u
/* magic 8, version 4, count 8, end 8, SHA-256 of the 28 bytes before it. */
#define STATE_LEN (8 + 4 + 8 + 8 + 32)

static int level_fd(struct audit_tree *t, unsigned level)
{
	char name[8];

	if (t->level_fd[level] >= 0)
		return t->level_fd[level];
	snprintf(name, sizeof(name), "L%02u", level);
	t->level_fd[level] = openat(t->dirfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
				    0600);
	if (t->level_fd[level] < 0)
		return err_set(-errno, "%s/%s/%s: %s", t->dir, TREE_DIR, name, strerror(errno));
	return t->level_fd[level];
}

static int entry_read(struct audit_tree *t, int fd, uint64_t index, size_t len, void *out,
		      const char *what)
{
	int r = pread_all(fd, out, len, index * len);

	if (r < 0)
		return err_set(r == -ENODATA ? -EIO : r, "%s/%s: cannot read %s entry %llu: %s",
			       t->dir, TREE_DIR, what, (unsigned long long)index, strerror(-r));
	return 0;
}

int tree_perfect(void *ctx, unsigned level, uint64_t index, uint8_t out[static MERKLE_HASH_LEN])
{
	struct audit_tree *t = ctx;
	int fd;

	if (level >= MERKLE_PROOF_MAX)
		return -ERANGE;
	fd = level_fd(t, level);
	if (fd < 0)
		return fd;
	return entry_read(t, fd, index, MERKLE_HASH_LEN, out, "hash");
}

/* ---- State --------------------------------------------------------------------------------- */

static void state_encode(uint64_t count, uint64_t end, uint8_t out[static STATE_LEN])
{
	memcpy(out, STATE_MAGIC, 8);
	put_le32(out + 8, STATE_VERSION);
	put_le64(out + 12, count);
	put_le64(out + 20, end);
	crypto_hash_sha256(out + 28, out, 28);
}

/* 0 and the snapshot; -ENOENT none; -EBADMSG damaged (then the tree is rebuilt). */
static int state_read(struct audit_tree *t, uint64_t *ret_count, uint64_t *ret_end)
{
	uint8_t b[STATE_LEN + 1], sum[32];
	int fd = openat(t->dirfd, STATE_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read_full(fd, b, sizeof(b));
	close(fd);
	if (n < 0)
		return (int)n;
	if (n != STATE_LEN || memcmp(b, STATE_MAGIC, 8) != 0 || get_le32(b + 8) != STATE_VERSION)
		return -EBADMSG;
	crypto_hash_sha256(sum, b, 28);
	if (sodium_memcmp(sum, b + 28, 32) != 0)
		return -EBADMSG;
	*ret_count = get_le64(b + 12);
	*ret_end = get_le64(b + 20);
	return 0;
}

int tree_save_state(struct audit_tree *t, uint64_t count, uint64_t end)
{
	uint8_t b[STATE_LEN];
	int fd, r;

	if (t->broken)
		return err_set(-EIO, "%s/%s: a tree file could not be written since the daemon "
			       "started; it is rebuilt from the log at the next start", t->dir,
			       TREE_DIR);
	/* The entries the state vouches for first, then the state. */
	for (unsigned k = 0; k < MERKLE_PROOF_MAX; k++)
		if (t->level_fd[k] >= 0 && fdatasync(t->level_fd[k]) < 0)
			return err_set(-errno, "%s/%s: cannot sync level %u: %s", t->dir, TREE_DIR,
				       k, strerror(errno));
	if (fdatasync(t->offsets_fd) < 0)
		return err_set(-errno, "%s/%s/%s: cannot sync: %s", t->dir, TREE_DIR, OFFSETS_NAME,
			       strerror(errno));
	state_encode(count, end, b);
	fd = openat(t->dirfd, STATE_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	if (fd < 0)
		return err_set(-errno, "%s/%s/%s: %s", t->dir, TREE_DIR, STATE_TMP, strerror(errno));
	r = pwrite_all(fd, b, sizeof(b), 0);
	if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && renameat(t->dirfd, STATE_TMP, t->dirfd, STATE_NAME) < 0)
		r = -errno;
	if (r == 0 && fsync(t->dirfd) < 0)
		r = -errno;
	if (r < 0)
		return err_set(r, "%s/%s: cannot write the tree state: %s", t->dir, TREE_DIR,
			       strerror(-r));
	return 0;
}

/* ---- Open ---------------------------------------------------------------------------------- */

/* Cut every file to the first `count` records and load the frontier from them. */
static int tree_load(struct audit_tree *t, uint64_t count)
{
	struct stat st;
	int r;

	for (unsigned k = 0; k < MERKLE_PROOF_MAX; k++) {
		uint64_t want = k < 64 ? count >> k : 0;
		int fd;

		if (want == 0) {
			char name[8];

			/* Levels the count does not reach hold nothing. */
			snprintf(name, sizeof(name), "L%02u", k);
			if (unlinkat(t->dirfd, name, 0) < 0 && errno != ENOENT)
				return err_set(-errno, "%s/%s/%s: %s", t->dir, TREE_DIR, name,
					       strerror(errno));
			continue;
		}
		fd = level_fd(t, k);
		if (fd < 0)
			return fd;
		if (fstat(fd, &st) < 0)
			return -errno;
		if ((uint64_t)st.st_size < want * MERKLE_HASH_LEN)
			return err_set(-EBADMSG, "level %u holds %llu bytes, fewer than %llu records "
				       "need", k, (unsigned long long)st.st_size,
				       (unsigned long long)count);
		if (ftruncate(fd, (off_t)(want * MERKLE_HASH_LEN)) < 0)
			return -errno;
	}
	if (fstat(t->offsets_fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size < count * 8)
		return err_set(-EBADMSG, "the offsets file is too short for %llu records",
			       (unsigned long long)count);
	if (ftruncate(t->offsets_fd, (off_t)(count * 8)) < 0)
		return -errno;

	merkle_frontier_init(&t->f);
	t->f.size = count;
	for (unsigned k = 0; k < MERKLE_PROOF_MAX; k++) {
		if (!(count >> k & 1))
			continue;
		r = tree_perfect(t, k, (count >> k) - 1, t->f.h[k]);
		if (r < 0)
			return r;
	}
	memset(t->last_leaf, 0, sizeof(t->last_leaf));
	if (count > 0) {
		r = tree_perfect(t, 0, count - 1, t->last_leaf);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Leaf hashes of L00 read at a time by tree_check_log(). */
#define CHECK_BATCH 2048

/* The log's first `count` records, up to byte `end`, must be the records the tree holds: every
 * line's leaf hash equal to its L00 entry. The state and the last record say only that the log
 * still ends where it did; a record edited in place before that (the same length, so no offset
 * moves) would otherwise be signed over as if it were the original (docs/AUDIT.md, section 7).
 * Costs one read and one SHA-256 of the log, no JSON parsing. -EBADMSG naming the first record
 * that differs; -errno reading. */
static int tree_check_log(struct audit_tree *t, uint64_t count, uint64_t end)
{
	struct audit_reader rd;
	uint8_t (*want)[MERKLE_HASH_LEN];
	char path[4096];
	uint64_t i = 0, have = 0, base = 0;
	int r;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", t->dir, AUDIT_LOG_NAME) >= sizeof(path))
		return -ENAMETOOLONG;
	want = malloc(CHECK_BATCH * MERKLE_HASH_LEN);
	if (!want)
		return -ENOMEM;
	r = audit_reader_init(&rd, t->log_fd, path, end);
	if (r < 0) {
		free(want);
		return r;
	}
	while ((r = audit_reader_next(&rd)) > 0) {
		uint8_t leaf[MERKLE_HASH_LEN];
		int fd;

		if (i == count) {
			r = 0;
			break;
		}
		if (i == base + have) {
			base = i;
			have = count - i < CHECK_BATCH ? count - i : CHECK_BATCH;
			fd = level_fd(t, 0);
			r = fd < 0 ? fd : pread_all(fd, want, have * MERKLE_HASH_LEN,
						    base * MERKLE_HASH_LEN);
			if (r < 0) {
				r = err_set(r == -ENODATA ? -EIO : r, "%s/%s/L00: cannot read: %s",
					    t->dir, TREE_DIR, strerror(-r));
				break;
			}
		}
		merkle_leaf_hash(rd.line.data, rd.line.len, leaf);
		if (sodium_memcmp(leaf, want[i - base], MERKLE_HASH_LEN) != 0) {
			r = err_set(-EBADMSG, "%s: line %llu (offset %llu): record %llu is not the "
				    "record the tree files hold (%s/%s/L00): the log was altered "
				    "after it was written (or the tree files were); `enclavectl audit "
				    "verify` says how", path, (unsigned long long)rd.line_no,
				    (unsigned long long)rd.line_off, (unsigned long long)i, t->dir,
				    TREE_DIR);
			break;
		}
		i++;
	}
	if (r == 0 && (i != count || rd.line_off != end))
		r = err_set(-EBADMSG, "%s: the first %llu bytes hold %llu complete records where "
			    "the tree files hold %llu: the log was altered; `enclavectl audit "
			    "verify` says how", path, (unsigned long long)end, (unsigned long long)i,
			    (unsigned long long)count);
	audit_reader_free(&rd);
	free(want);
	return r;
}

int tree_open(int audit_dirfd, const char *dir, int log_fd, struct audit_tree **ret_tree,
	      bool *ret_rebuilt)
{
	struct audit_tree *t = calloc(1, sizeof(*t));
	uint64_t count = 0, end = 0;
	bool rebuilt = false;
	struct stat st;
	int r;

	if (!t)
		return -ENOMEM;
	t->dirfd = t->offsets_fd = -1;
	t->log_fd = log_fd;
	for (unsigned k = 0; k < MERKLE_PROOF_MAX; k++)
		t->level_fd[k] = -1;
	t->dir = strdup(dir);
	if (!t->dir) {
		r = -ENOMEM;
		goto out_free;
	}
	if (mkdirat(audit_dirfd, TREE_DIR, 0700) < 0 && errno != EEXIST) {
		r = err_set(-errno, "cannot create %s/%s: %s", dir, TREE_DIR, strerror(errno));
		goto out_free;
	}
	t->dirfd = openat(audit_dirfd, TREE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (t->dirfd < 0) {
		r = err_set(-errno, "cannot open %s/%s: %s", dir, TREE_DIR, strerror(errno));
		goto out_free;
	}
	t->offsets_fd = openat(t->dirfd, OFFSETS_NAME, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
			       0600);
	if (t->offsets_fd < 0) {
		r = err_set(-errno, "%s/%s/%s: %s", dir, TREE_DIR, OFFSETS_NAME, strerror(errno));
		goto out_free;
	}
	if (fstat(log_fd, &st) < 0) {
		r = -errno;
		goto out_free;
	}

	r = state_read(t, &count, &end);
	if (r == 0 && end > (uint64_t)st.st_size) {
		/* The state is written only once the log is durable up to `end`, and the log is
		 * only ever cut past a state's end (a torn, unacknowledged tail): so bytes that
		 * a checkpoint covered were removed from the log. Never paper over that. */
		r = err_set(-EBADMSG, "%s/%s is %llu bytes, but its last checkpoint covered %llu "
			    "records ending at byte %llu: records were removed from the log; "
			    "`enclavectl audit verify` names them", dir, AUDIT_LOG_NAME,
			    (unsigned long long)st.st_size, (unsigned long long)count,
			    (unsigned long long)end);
		goto out_free;
	}
	if (r == 0)
		r = tree_load(t, count);
	if (r == 0 && count > 0) {
		/* The last record the state covers must still be the one the tree holds. */
		uint8_t off[8], leaf[MERKLE_HASH_LEN];
		uint64_t start;
		char *line = NULL;

		r = entry_read(t, t->offsets_fd, count - 1, 8, off, "offset");
		start = r == 0 ? get_le64(off) : 0;
		if (r == 0 && (start >= end || end - start > AUDIT_RECORD_MAX))
			r = -EBADMSG;
		if (r == 0 && !(line = malloc(end - start)))
			r = -ENOMEM;
		if (r == 0)
			r = pread_all(log_fd, line, end - start, start);
		if (r == 0 && line[end - start - 1] != '\n')
			r = -EBADMSG;
		if (r == 0) {
			merkle_leaf_hash(line, end - start - 1, leaf);
			if (sodium_memcmp(leaf, t->last_leaf, sizeof(leaf)) != 0)
				r = -EBADMSG;
		}
		free(line);
	}
	if (r < 0) {
		if (r == -ENOMEM)
			goto out_free;
		/* No state yet (a new log, or one from before the tree existed), or files that
		 * do not agree with it: start from nothing and read the whole log. */
		rebuilt = r != -ENOENT || st.st_size > 0;
		count = end = 0;
		r = tree_load(t, 0);
		if (r < 0)
			goto out_free;
	}
	if (!rebuilt && count > 0) {
		r = tree_check_log(t, count, end);
		if (r < 0)
			goto out_free;
	}
	t->end = end;
	*ret_tree = t;
	if (ret_rebuilt)
		*ret_rebuilt = rebuilt;
	return 0;

out_free:
	tree_close(t);
	return r;
}

void tree_close(struct audit_tree *t)
{
	if (!t)
		return;
	for (unsigned k = 0; k < MERKLE_PROOF_MAX; k++)
		if (t->level_fd[k] >= 0)
			close(t->level_fd[k]);
	if (t->offsets_fd >= 0)
		close(t->offsets_fd);
	if (t->dirfd >= 0)
		close(t->dirfd);
	free(t->dir);
	free(t);
}

/* ---- Append -------------------------------------------------------------------------------- */

int tree_append(struct audit_tree *t, const struct tree_entry *e, size_t n)
{
	/* What each level gains from these n records, written with one pwrite per level. */
	struct buf add[MERKLE_PROOF_MAX], offs;
	uint64_t first_index[MERKLE_PROOF_MAX];
	int r = 0;

	if (n == 0)
		return 0;
	for (unsigned k = 0; k < MERKLE_PROOF_MAX; k++)
		buf_init(&add[k], (n + 1) * MERKLE_HASH_LEN);
	buf_init(&offs, n * 8);
	for (size_t i = 0; i < n && r == 0; i++) {
		uint8_t carry[MERKLE_HASH_LEN];
		uint64_t size = t->f.size;

		/* Appending leaf `size` completes one perfect subtree per trailing one bit of
		 * size: the same carries merkle_frontier_append() makes, kept here per level. */
		memcpy(carry, e[i].leaf, sizeof(carry));
		for (unsigned k = 0; r == 0; k++) {
			if (add[k].len == 0)
				first_index[k] = (size >> k);
			r = buf_append(&add[k], carry, sizeof(carry));
			if (r < 0 || !(size >> k & 1))
				break;
			merkle_node_hash(t->f.h[k], carry, carry);
		}
		if (r == 0)
			r = buf_le64(&offs, t->end);
		merkle_frontier_append(&t->f, e[i].leaf);
		memcpy(t->last_leaf, e[i].leaf, sizeof(t->last_leaf));
		t->end += e[i].len;
	}
	for (unsigned k = 0; k < MERKLE_PROOF_MAX && r == 0; k++) {
		int fd;

		if (add[k].len == 0)
			continue;
		fd = level_fd(t, k);
		r = fd < 0 ? fd : pwrite_all(fd, add[k].data, add[k].len,
					     first_index[k] * MERKLE_HASH_LEN);
	}
	if (r == 0)
		r = pwrite_all(t->offsets_fd, offs.data, offs.len, (t->f.size - n) * 8);
	for (unsigned k = 0; k < MERKLE_PROOF_MAX; k++)
		buf_free(&add[k]);
	buf_free(&offs);
	if (r < 0) {
		/* The records are durable in the log, and the frontier (in memory) has them, so
		 * checkpoints stay right; only proofs from the files would not. */
		t->broken = true;
		return err_set(r, "%s/%s: cannot write the tree files: %s", t->dir, TREE_DIR,
			       strerror(-r));
	}
	return 0;
}

int tree_line(struct audit_tree *t, uint64_t seq, uint64_t count, uint64_t end, char **ret_line,
	      size_t *ret_len)
{
	uint8_t b[16];
	uint64_t start, stop;
	char *line;
	int r;

	if (seq >= count)
		return -ERANGE;
	r = entry_read(t, t->offsets_fd, seq, 8, b, "offset");
	if (r < 0)
		return r;
	start = get_le64(b);
	if (seq + 1 < count) {
		r = entry_read(t, t->offsets_fd, seq + 1, 8, b + 8, "offset");
		if (r < 0)
			return r;
		stop = get_le64(b + 8);
	} else {
		stop = end;
	}
	if (stop <= start || stop - start > AUDIT_RECORD_MAX)
		return err_set(-EIO, "%s/%s: the offsets of record %llu are damaged", t->dir,
			       TREE_DIR, (unsigned long long)seq);
	line = malloc(stop - start);
	if (!line)
		return -ENOMEM;
	r = pread_all(t->log_fd, line, stop - start, start);
	if (r < 0) {
		free(line);
		return err_set(r, "%s/%s: cannot read record %llu: %s", t->dir, AUDIT_LOG_NAME,
			       (unsigned long long)seq, strerror(-r));
	}
	line[stop - start - 1] = '\0';	/* its '\n' */
	*ret_line = line;
	*ret_len = stop - start - 1;
	return 0;
}
