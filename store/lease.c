/* lease: the primary's exclusive hold on a store shared by many hosts (docs/DEPLOYMENT.md
 * "The lease").
 *
 * flock() on LOCK keeps two daemons of one host apart, but on a parallel file system it may be
 * local to the client or merely advisory. So the primary also holds a lease: the file LEASE in
 * the store directory names the holder (a random id of this process), a fencing token and an
 * expiry, and is authenticated with a key derived from the master key, so that only someone who
 * unlocked the store (a primary) can write a valid one; nodes and the storage can write the
 * directory, but not forge the file.
 *
 *   - Acquire: an authentic lease of another holder that has not expired (plus a grace period for
 *     clock skew) refuses. Otherwise the token becomes one more than the highest seen (in LEASE
 *     and in the index's "fence" record, written first and synchronously, so a lease file rolled
 *     back by the storage never makes a token be used twice), the lease is written (a new file
 *     renamed over LEASE: atomic on every POSIX file system, NFS and the parallel ones included)
 *     and, after a settling pause, read back: a rival that renamed its own in between wins, and
 *     this one gives up.
 *   - Renew: every third of the lease. The file must still be ours; an authentic lease with a
 *     higher token means another primary took over (this one was fenced: it must stop writing at
 *     once). A file that does not authenticate, or an older lease of ours (a replay), cannot be
 *     another primary's and is overwritten.
 *   - The token travels in every signal the primary sends its nodes, and nodes ignore signals
 *     with a lower token than one they have seen: a fenced primary cannot steer them.
 */
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "store/store_internal.h"

#define LEASE_NAME "LEASE"
#define LEASE_MAGIC "enclave-lease 1"
#define LEASE_LABEL "enclave lease v1"
#define LEASE_MAX 1024
#define META_FENCE "fence"

struct store_lease {
	struct store *st;                 /* borrowed */
	crypto_key *mac_key;              /* owned */
	uint8_t holder[16];               /* random, this acquisition's */
	uint64_t token;
	unsigned lease_ms;
	int64_t expires_ns;               /* of the lease as last written */
};

struct lease_file {
	uint64_t token;
	uint8_t holder[16];
	char host[65];
	int64_t pid;
	int64_t expires_ns;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The text before the "mac" line. */
static int lease_text(const struct lease_file *f, char *out, size_t cap)
{
	char hex[33];
	int n;

	sodium_bin2hex(hex, sizeof(hex), f->holder, sizeof(f->holder));
	n = snprintf(out, cap, LEASE_MAGIC "\ntoken %" PRIu64 "\nholder %s\nhost %s\npid %" PRId64
		     "\nexpires %" PRId64 "\n", f->token, hex, f->host, f->pid, f->expires_ns);
	return n < 0 || (size_t)n >= cap ? -E2BIG : n;
}

/* The key is the master key's (derived for this purpose alone): the lease is taken before the
 * index, and so the store id, is opened. */
static void lease_mac(const crypto_key *k, const char *text, size_t n, uint8_t out[32])
{
	crypto_generichash_state h;

	crypto_generichash_init(&h, crypto_key_bytes(k), CRYPTO_KEY_LEN, 32);
	crypto_generichash_update(&h, (const uint8_t *)text, n);
	crypto_generichash_final(&h, out, 32);
}

/* Parse and authenticate LEASE. -ENOENT none; -EBADMSG malformed or not authentic. */
static int lease_read(struct store *st, const crypto_key *k, struct lease_file *ret)
{
	char buf[LEASE_MAX + 1], text[LEASE_MAX], holder[33], mac_hex[65];
	uint8_t mac[32], want[32];
	struct lease_file f = { 0 };
	ssize_t n;
	int fd, tl, used = 0;

	fd = openat(st->dirfd, LEASE_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : err_set(-errno, "LEASE: %s", strerror(errno));
	n = read_full(fd, buf, LEASE_MAX + 1);
	close(fd);
	if (n < 0 || n > LEASE_MAX)
		return err_set(-EBADMSG, "LEASE: unreadable or too long");
	buf[n] = '\0';
	if (strlen(buf) != (size_t)n ||
	    sscanf(buf, LEASE_MAGIC "\ntoken %" SCNu64 "\nholder %32[0-9a-f]\nhost %64[^\n]\npid %"
		   SCNd64 "\nexpires %" SCNd64 "\nmac %64[0-9a-f]\n%n", &f.token, holder, f.host,
		   &f.pid, &f.expires_ns, mac_hex, &used) != 6 || used != n ||
	    sodium_hex2bin(f.holder, 16, holder, 32, NULL, NULL, NULL) != 0 ||
	    sodium_hex2bin(mac, 32, mac_hex, 64, NULL, NULL, NULL) != 0)
		return err_set(-EBADMSG, "LEASE: malformed");
	tl = lease_text(&f, text, sizeof(text));
	if (tl < 0)
		return err_set(-EBADMSG, "LEASE: malformed");
	lease_mac(k, text, (size_t)tl, want);
	if (sodium_memcmp(mac, want, 32) != 0 || strncmp(text, buf, (size_t)tl) != 0)
		return err_set(-EBADMSG, "LEASE does not authenticate (not written by a primary "
			       "of this store)");
	*ret = f;
	return 0;
}

/* Write the lease (a new file renamed over LEASE, synced, the directory synced). */
static int lease_write(struct store_lease *l)
{
	struct store *st = l->st;
	struct lease_file f = { .token = l->token, .pid = getpid() };
	char text[LEASE_MAX], mac_hex[65];
	uint8_t mac[32];
	/* lease_ms 0: released, expired since 1970, so the next primary takes it at once. */
	int64_t exp = l->lease_ms ? now_ns() + (int64_t)l->lease_ms * 1000000 : 0;
	int n, r;

	memcpy(f.holder, l->holder, 16);
	f.expires_ns = exp;
	if (gethostname(f.host, sizeof(f.host) - 1) < 0 || !f.host[0])
		snprintf(f.host, sizeof(f.host), "localhost");
	for (char *p = f.host; *p; p++)
		if (*p <= ' ' || *p > '~')
			*p = '_';
	n = lease_text(&f, text, sizeof(text) - 80);
	if (n < 0)
		return n;
	lease_mac(l->mac_key, text, (size_t)n, mac);
	sodium_bin2hex(mac_hex, sizeof(mac_hex), mac, 32);
	n += snprintf(text + n, sizeof(text) - (size_t)n, "mac %s\n", mac_hex);
	r = replace_file_at(st->dirfd, LEASE_NAME, text, (size_t)n, 0600, true);
	if (r < 0)
		return err_set(r, "LEASE: cannot write it: %s", strerror(-r));
	l->expires_ns = exp;
	return 0;
}

/* A lease still running whose holder is known to be gone: it names this host and a process that
 * no longer exists, and this process holds the flock on LOCK (store_open took it), so no other
 * process of this host has the store open. A primary restarted after a crash (kill -9, systemd's
 * Restart=) then need not wait out the lease. Another host's lease is always waited out. */
static bool holder_gone(struct store *st, const struct lease_file *f)
{
	char host[65] = "";

	if (st->lockfd < 0 || f->pid <= 0 || f->pid > INT32_MAX || f->pid == getpid())
		return false;
	if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
		snprintf(host, sizeof(host), "localhost");
	for (char *p = host; *p; p++)
		if (*p <= ' ' || *p > '~')
			*p = '_';
	return strcmp(host, f->host) == 0 && kill((pid_t)f->pid, 0) < 0 && errno == ESRCH;
}

static int fence_get(struct store *st, uint64_t *ret)
{
	char *v = NULL;
	size_t n = 0;
	int r = index_get(&st->ix, CF_META, META_FENCE, strlen(META_FENCE), &v, &n);

	if (r == -ENOENT) {
		*ret = 0;
		return 0;
	}
	if (r < 0)
		return r;
	if (n != 8) {
		free(v);
		return err_set(-EBADMSG, "index: malformed meta record '" META_FENCE "'");
	}
	*ret = get_le64((const uint8_t *)v);
	free(v);
	return 0;
}

static int fence_put(struct store *st, uint64_t token)
{
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	uint8_t b[8];
	int r;

	put_le64(b, token);
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_FENCE, strlen(META_FENCE),
				  (const char *)b, 8);
	r = index_write(&st->ix, wb, true);
	rocksdb_writebatch_destroy(wb);
	return r;
}

void store_lease_free(struct store_lease *l)
{
	if (!l)
		return;
	crypto_key_free(l->mac_key);
	free(l);
}

int lease_acquire(struct store *st, unsigned lease_ms, unsigned settle_ms,
		  struct store_lease **ret_lease)
{
	struct store_lease *l = NULL;
	struct lease_file f;
	uint64_t last = 0;
	int64_t now;
	int r;

	if (lease_ms < STORE_LEASE_MS_MIN || lease_ms > STORE_LEASE_MS_MAX)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->st = st;
	l->lease_ms = lease_ms;
	crypto_random(l->holder, sizeof(l->holder));
	r = crypto_key_derive(st->master, LEASE_LABEL, NULL, 0, &l->mac_key);
	if (r < 0)
		goto fail;
	r = lease_read(st, l->mac_key, &f);
	now = now_ns();
	if (r == 0 && f.expires_ns + (int64_t)lease_ms / 2 * 1000000 > now &&
	    !holder_gone(st, &f)) {
		char until[32];
		time_t t = (time_t)(f.expires_ns / 1000000000);
		struct tm tm;

		gmtime_r(&t, &tm);
		strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
		r = err_set(-EBUSY, "the store's lease is held by another primary (host %s, pid %"
			    PRId64 ", token %" PRIu64 ") until %s, plus %u ms of grace: only one "
			    "primary may write a store", f.host, f.pid, f.token, until,
			    lease_ms / 2);
		goto fail;
	}
	if (r == 0)
		last = f.token;
	else if (r != -ENOENT && r != -EBADMSG)
		goto fail;
	/* A file that does not authenticate cannot be a primary's: it is replaced. The index's
	 * fence record raises the token further once the index is open (lease_fence()). */
	l->token = last + 1;
	r = lease_write(l);
	if (r < 0)
		goto fail;
	/* A rival that read the same expired lease and renamed its own file after ours wins. */
	if (settle_ms) {
		struct timespec ts = { settle_ms / 1000, (long)(settle_ms % 1000) * 1000000 };

		nanosleep(&ts, NULL);
	}
	r = lease_read(st, l->mac_key, &f);
	if (r == 0 && (f.token != l->token || memcmp(f.holder, l->holder, 16) != 0))
		r = err_set(-EBUSY, "another primary (host %s, pid %" PRId64 ") took the store's "
			    "lease at the same moment", f.host, f.pid);
	else if (r < 0)
		r = err_set(-EBUSY, "the store's lease changed while it was taken: %s",
			    err_detail());
	if (r < 0)
		goto fail;
	*ret_lease = l;
	return 0;
fail:
	store_lease_free(l);
	return r;
}

int lease_fence(struct store_lease *l)
{
	uint64_t fence = 0;
	int r = fence_get(l->st, &fence);

	if (r < 0)
		return r;
	if (fence >= l->token) {
		/* The lease file was older than the index (rolled back, or restored): a token is
		 * never handed out twice. */
		l->token = fence + 1;
		r = lease_write(l);
		if (r < 0)
			return r;
	}
	return fence_put(l->st, l->token);
}

int store_lease_renew(struct store_lease *l)
{
	struct lease_file f;
	int r = lease_read(l->st, l->mac_key, &f);

	if (r == 0 && f.token > l->token)
		return err_set(-ESTALE, "another primary (host %s, pid %" PRId64 ") holds the "
			       "store's lease with token %" PRIu64 " (ours: %" PRIu64 ")", f.host,
			       f.pid, f.token, l->token);
	if (r == 0 && f.token == l->token && memcmp(f.holder, l->holder, 16) != 0)
		return err_set(-ESTALE, "another primary (host %s, pid %" PRId64 ") holds the "
			       "store's lease", f.host, f.pid);
	if (r < 0 && r != -ENOENT && r != -EBADMSG)
		return r;
	/* Ours; or missing, forged or an older lease replayed: none of those is a primary's
	 * claim, so ours is written again. */
	/* Late, but still ours: another primary takes a lapsed lease only after half a lease of
	 * grace, and reads its own back after writing it, so a renewal within a quarter of a
	 * lease past the expiry (a loaded machine, a slow fsync) is still safe. Later than that,
	 * it is given up. */
	if (now_ns() > l->expires_ns + (int64_t)l->lease_ms / 4 * 1000000)
		return err_set(-ETIMEDOUT, "the lease expired before it could be renewed (the "
			       "process was paused, or the file system stalled)");
	return lease_write(l);
}

uint64_t store_lease_token(const struct store_lease *l)
{
	return l->token;
}

int64_t store_lease_expires_ns(const struct store_lease *l)
{
	return l->expires_ns;
}

int store_lease_release(struct store_lease *l)
{
	struct lease_file f;
	int r;

	if (!l)
		return 0;
	r = lease_read(l->st, l->mac_key, &f);
	if (r == 0 && f.token == l->token && memcmp(f.holder, l->holder, 16) == 0) {
		/* Expired now: the next primary need not wait out the lease. */
		l->lease_ms = 0;
		r = lease_write(l);
	}
	store_lease_free(l);
	return r == -ENOENT || r == -EBADMSG ? 0 : r;
}
