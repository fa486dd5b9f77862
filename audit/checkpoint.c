/* checkpoint: signed tree heads of the audit log (docs/AUDIT.md "Checkpoints") and proofs.
 *
 * The daemon gives the log its Ed25519 key once (audit_signer_set()); from then on it signs a C2SP
 * checkpoint of the durable tree on demand (audit_checkpoint()), every `interval` seconds from a
 * thread of its own whether or not anything was appended (audit_checkpointer_start()), and a last
 * one when that thread stops. Each checkpoint is appended to <dir>/checkpoints and synced before it
 * is handed out, and the tree's state is saved with it, so the next open rereads only the records
 * after it.
 *
 * Never two inconsistent checkpoints: every one is the root of a prefix of the same durable log,
 * taken under cp_lock in order, so sizes never go back; a log that failed for good is not signed.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include <sodium.h>

#include "audit/audit_internal.h"
#include "audit/note.h"
#include "common/err.h"

int audit_signer_set(struct audit_log *log, const char *name, const uint8_t seed[static 32])
{
	uint8_t pk[NOTE_PK_LEN];
	uint8_t *sk;
	char *n, *v = NULL;
	int r;

	if (!note_name_valid(name) || strlen(name) > CHECKPOINT_ORIGIN_MAX)
		return err_set(-EINVAL, "\"%s\" cannot name an audit signing key (no spaces, no "
			       "'+', at most %u bytes)", name, CHECKPOINT_ORIGIN_MAX);
	/* Idempotent; the daemon has called it already, a test may not have. */
	if (sodium_init() < 0)
		return err_set(-EIO, "libsodium cannot be initialised");
	sk = sodium_malloc(NOTE_SK_LEN);
	if (!sk)
		return -ENOMEM;
	crypto_sign_seed_keypair(pk, sk, seed);
	sodium_mprotect_readonly(sk);
	n = strdup(name);
	r = n ? note_verifier_format(name, pk, &v) : -ENOMEM;
	if (r < 0) {
		free(n);
		sodium_free(sk);
		return r;
	}
	pthread_mutex_lock(&log->cp_lock);
	if (log->sk)
		sodium_free(log->sk);
	free(log->key_name);
	free(log->verifier);
	log->sk = sk;
	log->key_name = n;
	log->verifier = v;
	pthread_mutex_unlock(&log->cp_lock);
	return 0;
}

void audit_signer_clear(struct audit_log *log)
{
	pthread_mutex_lock(&log->cp_lock);
	sodium_free(log->sk);	/* wipes it */
	log->sk = NULL;
	free(log->key_name);
	free(log->verifier);
	log->key_name = log->verifier = NULL;
	free(log->cp_last);
	log->cp_last = NULL;
	if (log->cp_fd >= 0)
		close(log->cp_fd);
	log->cp_fd = -1;
	pthread_mutex_unlock(&log->cp_lock);
}

int audit_verifier_key(struct audit_log *log, char **ret_text)
{
	char *v = NULL;

	pthread_mutex_lock(&log->cp_lock);
	if (log->verifier)
		v = strdup(log->verifier);
	pthread_mutex_unlock(&log->cp_lock);
	if (!v)
		return log->verifier ? -ENOMEM : err_set(-ENOKEY, "the audit log has no signing key");
	*ret_text = v;
	return 0;
}

int audit_sign_note(struct audit_log *log, const char *text, size_t len, char **ret_note,
		    size_t *ret_len)
{
	int r;

	pthread_mutex_lock(&log->cp_lock);
	r = log->sk ? note_sign(text, len, log->key_name, log->sk, ret_note, ret_len)
		    : err_set(-ENOKEY, "the audit log has no signing key");
	pthread_mutex_unlock(&log->cp_lock);
	return r;
}

/* write() all of b to an O_APPEND file, carrying on after a signal cut it short. */
static int append_all(int fd, const char *b, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, b, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int cp_skip(void *ctx, const char *note, size_t len, uint64_t index)
{
	(void)ctx;
	(void)note;
	(void)len;
	(void)index;
	return 0;
}

/* With cp_lock held: open the checkpoints file for appending. A note torn by a crash at its end
 * (never handed out: a checkpoint is returned only once synced) is cut off first, so the next one
 * starts on a boundary; a file that is not a sequence of notes is refused. */
static int cp_open(struct audit_log *log)
{
	char path[4096];
	uint64_t torn = 0;
	struct stat st;
	int fd, r;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", log->dir, CHECKPOINTS_FILE_NAME) >=
	    sizeof(path))
		return -ENAMETOOLONG;
	r = checkpoints_foreach(path, cp_skip, NULL, &torn);
	if (r < 0 && r != -ENOENT)
		return err_set(r, "%s: %s", path, *err_detail() ? err_detail() : strerror(-r));
	fd = openat(log->dirfd, CHECKPOINTS_FILE_NAME,
		    O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return err_set(-errno, "%s: %s", path, strerror(errno));
	if (torn > 0 && (fstat(fd, &st) < 0 || (uint64_t)st.st_size < torn ||
			 ftruncate(fd, st.st_size - (off_t)torn) < 0 || fsync(fd) < 0)) {
		r = err_set(-errno ? -errno : -EIO, "%s: cannot cut a torn last checkpoint: %s",
			    path, strerror(errno));
		close(fd);
		return r;
	}
	log->cp_fd = fd;
	return 0;
}

/* With cp_lock held: sign the durable tree, append the note to the checkpoints file, sync it and
 * save the tree state. *ret_count and *ret_end (may be NULL) get the records signed and the log's
 * length after them. */
static int sign_locked_at(struct audit_log *log, uint64_t *ret_count, uint64_t *ret_end);

static int sign_locked(struct audit_log *log)
{
	return sign_locked_at(log, NULL, NULL);
}

static int sign_locked_at(struct audit_log *log, uint64_t *ret_count, uint64_t *ret_end)
{
	struct checkpoint cp = { 0 };
	struct merkle_frontier f;
	struct stat st;
	uint64_t count, end;
	char *note = NULL, *rec = NULL;
	size_t len = 0;
	int r;

	if (!log->sk)
		return err_set(-ENOKEY, "the audit log has no signing key");
	if (audit_failed(log))
		return err_set(-EIO, "the audit log failed; no checkpoint is signed over it");
	audit_snapshot(log, &count, &end, &f);
	snprintf(cp.origin, sizeof(cp.origin), "%s", log->key_name);
	cp.size = count;
	merkle_frontier_root(&f, cp.root);
	cp.time_ns = now_realtime_ns();
	r = checkpoint_sign(&cp, log->key_name, log->sk, &note, &len);
	if (r < 0)
		return r;
	if (log->cp_fd < 0) {
		r = cp_open(log);
		if (r < 0)
			goto out;
	}
	rec = malloc(len + 1);
	if (!rec) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(rec, note, len);
	rec[len] = '\n';
	/* One write per note: O_APPEND keeps it whole unless the disk fills, and a torn note at
	 * the end is skipped by readers (checkpoints_foreach()). */
	if (fstat(log->cp_fd, &st) < 0) {
		r = err_set(-errno, "%s/%s: %s", log->dir, CHECKPOINTS_FILE_NAME, strerror(errno));
		goto out;
	}
	r = append_all(log->cp_fd, rec, len + 1);
	if (r == 0 && fdatasync(log->cp_fd) < 0)
		r = -errno;
	if (r < 0) {
		/* A note cut short (a full disk) must not stay where the next one would follow it:
		 * the file would then hold a torn note in its middle, which is damage. Cut it off;
		 * if that fails, reopen before the next note (cp_open() cuts a torn end). */
		if (ftruncate(log->cp_fd, st.st_size) < 0 || fsync(log->cp_fd) < 0) {
			close(log->cp_fd);
			log->cp_fd = -1;
		}
		r = err_set(r, "%s/%s: cannot write a checkpoint: %s", log->dir,
			    CHECKPOINTS_FILE_NAME, strerror(-r));
		goto out;
	}
	/* The state is a shortcut for the next open; failing to save it loses nothing. */
	(void)tree_save_state(log->tree, count, end);
	free(log->cp_last);
	log->cp_last = note;
	log->cp_last_len = len;
	log->cp_last_size = count;
	note = NULL;
	if (ret_count)
		*ret_count = count;
	if (ret_end)
		*ret_end = end;
out:
	free(rec);
	free(note);
	return r;
}

int audit_checkpoint(struct audit_log *log, char **ret_note, size_t *ret_len)
{
	char *copy = NULL;
	size_t len = 0;
	int r;

	pthread_mutex_lock(&log->cp_lock);
	r = sign_locked(log);
	if (r == 0 && ret_note) {
		len = log->cp_last_len;
		copy = strndup(log->cp_last, len);
		if (!copy)
			r = -ENOMEM;
	}
	pthread_mutex_unlock(&log->cp_lock);
	if (r == 0 && ret_note) {
		*ret_note = copy;
		if (ret_len)
			*ret_len = len;
	}
	return r;
}

/* ---- The periodic signer ------------------------------------------------------------------- */

static void *checkpointer_main(void *arg)
{
	struct audit_log *log = arg;

	pthread_mutex_lock(&log->cp_tlock);
	while (!log->cp_stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += log->cp_interval;
		if (pthread_cond_timedwait(&log->cp_tcond, &log->cp_tlock, &ts) == ETIMEDOUT &&
		    !log->cp_stop) {
			pthread_mutex_unlock(&log->cp_tlock);
			/* A failure (disk full) is retried at the next interval; the log's own
			 * appends report it to the people acting. */
			(void)audit_checkpoint(log, NULL, NULL);
			pthread_mutex_lock(&log->cp_tlock);
		}
	}
	pthread_mutex_unlock(&log->cp_tlock);
	return NULL;
}

int audit_checkpointer_start(struct audit_log *log, unsigned interval_s)
{
	int r;

	if (interval_s == 0 || interval_s > AUDIT_CHECKPOINT_INTERVAL_MAX)
		return err_set(-EINVAL, "checkpoint interval of %u s is outside 1..%u", interval_s,
			       AUDIT_CHECKPOINT_INTERVAL_MAX);
	pthread_mutex_lock(&log->cp_tlock);
	if (log->cp_running) {
		pthread_mutex_unlock(&log->cp_tlock);
		return -EALREADY;
	}
	log->cp_interval = interval_s;
	log->cp_stop = false;
	r = -pthread_create(&log->cp_thread, NULL, checkpointer_main, log);
	log->cp_running = r == 0;
	pthread_mutex_unlock(&log->cp_tlock);
	return r;
}

void audit_checkpointer_stop(struct audit_log *log)
{
	bool running;

	pthread_mutex_lock(&log->cp_tlock);
	running = log->cp_running;
	log->cp_stop = true;
	pthread_cond_broadcast(&log->cp_tcond);
	pthread_mutex_unlock(&log->cp_tlock);
	if (!running)
		return;
	pthread_join(log->cp_thread, NULL);
	log->cp_running = false;
	/* The last word: a checkpoint of everything written, signed at shutdown. */
	(void)audit_checkpoint(log, NULL, NULL);
}

/* ---- Proofs -------------------------------------------------------------------------------- */

int audit_prove(struct audit_log *log, uint64_t seq, char **ret_proof, size_t *ret_proof_len,
		char **ret_line, size_t *ret_line_len)
{
	uint8_t hashes[MERKLE_PROOF_MAX][MERKLE_HASH_LEN];
	char *proof = NULL, *line = NULL;
	size_t n = 0, plen = 0, llen = 0;
	uint64_t count, end;
	int r;

	pthread_mutex_lock(&log->cp_lock);
	if (log->tree->broken) {
		r = err_set(-EIO, "the audit tree files could not be written since the daemon "
			    "started; restart it to rebuild them from the log");
		goto out;
	}
	/* A checkpoint that covers seq: the last one if it does, else a new one. */
	if (!log->cp_last || log->cp_last_size <= seq) {
		audit_snapshot(log, &count, &end, NULL);
		if (seq >= count) {
			r = err_set(-ENOENT, "there is no record %llu: the log holds %llu",
				    (unsigned long long)seq, (unsigned long long)count);
			goto out;
		}
		r = sign_locked(log);
		if (r < 0)
			goto out;
	}
	/* cp_last_size is the size sign_locked() put into cp_last's text, kept beside it: no need
	 * to parse and re-verify the note we signed. */
	r = merkle_inclusion_proof(seq, log->cp_last_size, tree_perfect, log->tree, hashes, &n);
	if (r == 0)
		r = tlog_proof_format(seq, (const uint8_t(*)[MERKLE_HASH_LEN])hashes, n,
				      log->cp_last, log->cp_last_len, &proof, &plen);
	if (r == 0 && ret_line) {
		audit_snapshot(log, &count, &end, NULL);
		r = tree_line(log->tree, seq, count, end, &line, &llen);
	}
out:
	pthread_mutex_unlock(&log->cp_lock);
	if (r < 0) {
		free(proof);
		return r;
	}
	*ret_proof = proof;
	if (ret_proof_len)
		*ret_proof_len = plen;
	if (ret_line) {
		*ret_line = line;
		if (ret_line_len)
			*ret_line_len = llen;
	}
	return 0;
}

/* The line of the durable record the last record names as its pseq (versions false) or vseq. */
static int head(struct audit_log *log, bool versions, uint64_t *ret_seq, char **ret_line,
		size_t *ret_len)
{
	uint64_t count, end, seq;
	bool set;
	char *line = NULL;
	size_t len = 0;
	int r;

	pthread_mutex_lock(&log->cp_lock);
	pthread_mutex_lock(&log->lock);
	set = versions ? log->durable_vseq_set : log->durable_pseq_set;
	seq = versions ? log->durable_vseq : log->durable_pseq;
	pthread_mutex_unlock(&log->lock);
	if (!set) {
		pthread_mutex_unlock(&log->cp_lock);
		return -ENOENT;
	}
	audit_snapshot(log, &count, &end, NULL);
	r = tree_line(log->tree, seq, count, end, &line, &len);
	pthread_mutex_unlock(&log->cp_lock);
	if (r < 0)
		return r;
	*ret_seq = seq;
	*ret_line = line;
	*ret_len = len;
	return 0;
}

int audit_policy_head(struct audit_log *log, uint64_t *ret_seq, char **ret_line, size_t *ret_len)
{
	return head(log, false, ret_seq, ret_line, ret_len);
}

int audit_versions_head(struct audit_log *log, uint64_t *ret_seq, char **ret_line,
			size_t *ret_len)
{
	return head(log, true, ret_seq, ret_line, ret_len);
}

int audit_record_line(struct audit_log *log, uint64_t seq, char **ret_line, size_t *ret_len)
{
	uint64_t count, end;
	int r;

	pthread_mutex_lock(&log->cp_lock);
	audit_snapshot(log, &count, &end, NULL);
	r = seq < count ? tree_line(log->tree, seq, count, end, ret_line, ret_len) : -ENOENT;
	pthread_mutex_unlock(&log->cp_lock);
	return r;
}

/* ---- Export -------------------------------------------------------------------------------- */

/* A private, read-only snapshot of the first len bytes of the file open at src: an unnamed file
 * (O_TMPFILE) in dirfd's file system, filled with copy_file_range() (a reflink or an in-kernel
 * copy), reopened read-only. The caller gets no handle on the live file. */
static int snapshot(int dirfd, int src, uint64_t len, const char *name, int *ret_fd)
{
	char proc[64];
	loff_t in = 0;
	int tmp, ro;

	tmp = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (tmp < 0)
		return err_set(-errno, "cannot make a snapshot of %s: %s", name, strerror(errno));
	while ((uint64_t)in < len) {
		ssize_t n = copy_file_range(src, &in, tmp, NULL, (size_t)MIN(len - (uint64_t)in,
									   (uint64_t)1 << 30), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;

			close(tmp);
			return err_set(-e, "cannot copy %s: %s", name,
				       n < 0 ? strerror(e) : "the file is shorter than recorded");
		}
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", tmp);
	ro = open(proc, O_RDONLY | O_CLOEXEC);
	close(tmp);
	if (ro < 0)
		return err_set(-errno, "cannot reopen the snapshot of %s: %s", name, strerror(errno));
	*ret_fd = ro;
	return 0;
}

static int export_add(int dirfd, const char *open_name, const char *name, uint64_t len,
		      struct audit_export_file *files, size_t *n)
{
	struct audit_export_file *f = &files[*n];
	int src, r;

	src = openat(dirfd, open_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (src < 0)
		return err_set(-errno, "cannot open %s: %s", name, strerror(errno));
	r = snapshot(dirfd, src, len, name, &f->fd);
	close(src);
	if (r < 0)
		return r;
	snprintf(f->name, sizeof(f->name), "%s", name);
	f->len = len;
	(*n)++;
	return 0;
}

void audit_export_close(struct audit_export_file *files, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (files[i].fd >= 0)
			close(files[i].fd);
		files[i].fd = -1;
	}
}

/* The length of the file at fd (size bytes) up to and including its last '\n' (0: none in the last
 * AUDIT_RECORD_MAX + 1 bytes, so no complete line the reader would take either). */
static int complete_lines(int fd, uint64_t size, uint64_t *ret)
{
	size_t cap = AUDIT_RECORD_MAX + 1, want = (size_t)MIN(size, (uint64_t)cap);
	uint8_t *b = malloc(cap);
	ssize_t n;

	if (!b)
		return -ENOMEM;
	n = want ? pread_full(fd, b, want, (off_t)(size - want)) : 0;
	if (n < 0 || (size_t)n != want) {
		free(b);
		return n < 0 ? (int)n : -EIO;
	}
	*ret = 0;
	for (size_t i = want; i > 0; i--)
		if (b[i - 1] == '\n') {
			*ret = size - want + i;
			break;
		}
	free(b);
	return 0;
}

int audit_export_node(const char *audit_dir, const char *name,
		      struct audit_export_file files[static AUDIT_EXPORT_NODE_FILES],
		      size_t *ret_n)
{
	char path[4200], fname[96];
	uint64_t len = 0;
	struct stat st;
	size_t n = 0;
	int dirfd, src, r;

	if (!name[0] || name[0] == '.' || strlen(name) > 64 || strchr(name, '/'))
		return err_set(-EINVAL, "\"%.80s\" is not a node name", name);
	snprintf(path, sizeof(path), "%s/nodes/%s", audit_dir, name);
	dirfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dirfd < 0)
		return err_set(-errno, "%s: %s", path, strerror(errno));
	/* The checkpoints first: a checkpoint the node signs after this covers records the log
	 * copy may lack, one signed before covers records already durable in the log. */
	r = fstatat(dirfd, CHECKPOINTS_FILE_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)
	    ? 0 : -errno;
	if (r == 0) {
		snprintf(fname, sizeof(fname), "nodes/%s/" CHECKPOINTS_FILE_NAME, name);
		r = export_add(dirfd, CHECKPOINTS_FILE_NAME, fname, (uint64_t)st.st_size, files, &n);
	} else if (r == -ENOENT) {
		r = 0;
	}
	if (r == 0) {
		src = openat(dirfd, AUDIT_LOG_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (src < 0 || fstat(src, &st) < 0 || !S_ISREG(st.st_mode)) {
			r = err_set(src < 0 ? -errno : -EINVAL, "%s/%s: %s", path, AUDIT_LOG_NAME,
				    src < 0 ? strerror(errno) : "not a regular file");
		} else {
			r = complete_lines(src, (uint64_t)st.st_size, &len);
		}
		if (src >= 0)
			close(src);
	}
	if (r == 0) {
		snprintf(fname, sizeof(fname), "nodes/%s/" AUDIT_LOG_NAME, name);
		r = export_add(dirfd, AUDIT_LOG_NAME, fname, len, files, &n);
	}
	close(dirfd);
	if (r < 0) {
		audit_export_close(files, n);
		return r;
	}
	*ret_n = n;
	return 0;
}

int audit_export(struct audit_log *log, struct audit_export_file files[static AUDIT_EXPORT_FILES_MAX],
		 size_t *ret_n, uint64_t *ret_count)
{
	uint64_t count = 0, end = 0;
	size_t n = 0;
	struct stat st;
	int r;

	/* Under cp_lock no other checkpoint is appended: the checkpoints file ends with the one
	 * signed here, and the tree files hold every entry of the records it covers. */
	pthread_mutex_lock(&log->cp_lock);
	r = sign_locked_at(log, &count, &end);
	if (r < 0)
		goto out;
	r = export_add(log->dirfd, AUDIT_LOG_NAME, AUDIT_LOG_NAME, end, files, &n);
	if (r < 0)
		goto out;
	if (fstat(log->cp_fd, &st) < 0) {
		r = err_set(-errno, "%s/%s: %s", log->dir, CHECKPOINTS_FILE_NAME, strerror(errno));
		goto out;
	}
	r = export_add(log->dirfd, CHECKPOINTS_FILE_NAME, CHECKPOINTS_FILE_NAME,
		       (uint64_t)st.st_size, files, &n);
	if (r < 0)
		goto out;
	/* The tree files, cut to the records signed: derived from the log, so a broken tree is
	 * left out rather than failing the export (audit verify needs only the two above). */
	if (log->tree && !log->tree->broken && count > 0) {
		r = export_add(log->tree->dirfd, "offsets", "tree/offsets", count * 8, files, &n);
		for (unsigned k = 0; r == 0 && k < 64 && (count >> k) > 0; k++) {
			char open_name[8], name[16];

			snprintf(open_name, sizeof(open_name), "L%02u", k);
			snprintf(name, sizeof(name), "tree/L%02u", k);
			r = export_add(log->tree->dirfd, open_name, name, (count >> k) * 32, files,
				       &n);
		}
		if (r == 0 && fstatat(log->tree->dirfd, "state", &st, AT_SYMLINK_NOFOLLOW) == 0)
			r = export_add(log->tree->dirfd, "state", "tree/state", (uint64_t)st.st_size,
				       files, &n);
		if (r < 0)
			goto out;
	}
	*ret_n = n;
	*ret_count = count;
out:
	pthread_mutex_unlock(&log->cp_lock);
	if (r < 0)
		audit_export_close(files, n);
	return r;
}
