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
 * save the tree state. */
static int sign_locked(struct audit_log *log)
{
	struct checkpoint cp = { 0 };
	struct merkle_frontier f;
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
	r = append_all(log->cp_fd, rec, len + 1);
	if (r == 0 && fdatasync(log->cp_fd) < 0)
		r = -errno;
	if (r < 0) {
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

int audit_policy_head(struct audit_log *log, uint64_t *ret_seq, char **ret_line, size_t *ret_len)
{
	uint64_t count, end, seq;
	bool set;
	char *line = NULL;
	size_t len = 0;
	int r;

	pthread_mutex_lock(&log->cp_lock);
	pthread_mutex_lock(&log->lock);
	set = log->durable_pseq_set;
	seq = log->durable_pseq;
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
