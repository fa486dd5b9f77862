/* node: the primary and its nodes over one shared store directory (docs/DEPLOYMENT.md).
 *
 * The primary holds the store's lease (store/lease.c) and, from one thread, renews it and
 * writes the signal: nodes/signal, a note signed with the audit log's key (the verifier key the
 * auditors and every node hold) that says "at this time, under this fencing token, the index was
 * at this sequence number". It is written every NODE_HEARTBEAT_MS, and within
 * NODE_SIGNAL_POLL_MS of any write to the index a node can see (a grant, a revocation, a deny
 * rule, a new version: store_sequence_visible(), which an import's batches of records of its
 * still PENDING version leave alone), so it is also the cheap change signal: a node polls the
 * file's attributes often and catches up when it changes.
 *
 * A node reads the index as a RocksDB secondary (store_catch_up). From each signal it accepts it
 * learns how far the primary was and when; once its own sequence number has reached that, it is
 * fresh as of the signal's time. A node that has not been fresh for longer than its staleness
 * bound refuses every open (POLICY_DENY_NODE_STALE) until it is again.
 *
 * Everyone who can write the shared directory can write nodes/signal: a signal counts only if it
 * verifies under the primary's key, names this store, carries a fencing token no lower than the
 * highest seen (a deposed primary's signals are ignored), is newer than the last one accepted
 * under its token (a replay is ignored) and is not from the future. A rolled-back index never
 * reaches the announced sequence number, so the node goes stale rather than serving old policy.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "audit/note.h"
#include "common/common.h"
#include "common/err.h"
#include "daemon/daemon.h"

int64_t node_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

bool node_name_valid(const char *name)
{
	size_t n = strnlen(name, NODE_NAME_MAX + 1);

	if (n == 0 || n > NODE_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* Whether a node has ever read this store: it made its log directory, audit/nodes/NAME. (With
 * enrolment, an enrolled node counts too.) Errors count as yes: the cost is only a wait. */
static bool node_any(const char *audit_dir)
{
	char path[4200];
	DIR *dir;
	bool any = false;

	if ((size_t)snprintf(path, sizeof(path), "%s/" NODE_DIR_NAME, audit_dir) >= sizeof(path))
		return true;
	dir = opendir(path);
	if (!dir)
		return errno != ENOENT;
	for (struct dirent *de; !any && (de = readdir(dir));)
		any = de->d_name[0] != '.';
	closedir(dir);
	return any;
}

unsigned node_gc_grace_ms(struct daemon *d)
{
	unsigned s;

	if (d->node || !node_any(d->audit_dir))
		return 0;
	pthread_mutex_lock(&d->cfg_lock);
	s = d->cfg.node_gc_grace_s;
	pthread_mutex_unlock(&d->cfg_lock);
	return s * 1000u;
}

/* ---- The signal ------------------------------------------------------------------------------ */

int node_signal_text(const uint8_t store_id[static 16], const struct node_signal *s, char *out,
		     size_t cap)
{
	char hex[33];
	int n;

	sodium_bin2hex(hex, sizeof(hex), store_id, 16);
	n = snprintf(out, cap, "enclave-signal/1 %s\ntoken %" PRIu64 "\ntime %" PRId64 "\nseq %"
		     PRIu64 "\nring %" PRIu64 "\n", hex, s->token, s->time_ns, s->seq, s->ring);
	return n < 0 || (size_t)n >= cap ? -E2BIG : n;
}

int node_signal_parse(const char *note, size_t len, const struct note_verifier *v,
		      const uint8_t store_id[static 16], struct node_signal *ret)
{
	char want[64], hex[33];
	struct node_signal s = { 0 };
	size_t tl = 0;
	int used = 0, r;
	char text[NODE_SIGNAL_MAX + 1];

	r = note_open(note, len, v, &tl, NULL);
	if (r < 0)
		return err_set(r == -EKEYREJECTED || r == -ENOKEY ? -EKEYREJECTED : -EBADMSG,
			       "the signal is not signed by the primary's key: %s", err_detail());
	if (tl > NODE_SIGNAL_MAX)
		return err_set(-EBADMSG, "the signal is too long");
	memcpy(text, note, tl);
	text[tl] = '\0';
	sodium_bin2hex(hex, sizeof(hex), store_id, 16);
	snprintf(want, sizeof(want), "enclave-signal/1 %s\n", hex);
	if (strncmp(text, want, strlen(want)) != 0)
		return err_set(-EBADMSG, "the signal is for another store");
	if (sscanf(text + strlen(want), "token %" SCNu64 "\ntime %" SCNd64 "\nseq %" SCNu64
		   "\nring %" SCNu64 "\n%n", &s.token, &s.time_ns, &s.seq, &s.ring, &used) != 4 ||
	    (size_t)used != tl - strlen(want) || s.time_ns < 0)
		return err_set(-EBADMSG, "the signal is malformed");
	/* Printed back identically, or it is not canonical (leading zeros, a '+', spaces); a '-'
	 * prints back, so a negative time is refused above. */
	{
		char again[NODE_SIGNAL_MAX + 1];
		int n = node_signal_text(store_id, &s, again, sizeof(again));

		if (n < 0 || (size_t)n != tl || memcmp(again, text, tl) != 0)
			return err_set(-EBADMSG, "the signal is not in canonical form");
	}
	*ret = s;
	return 0;
}

int node_signal_accept(struct node_signal_state *state, const struct node_signal *s,
		       int64_t now_ns)
{
	if (s->token < state->token)
		return err_set(-ESTALE, "the signal carries fencing token %" PRIu64 ", below %" PRIu64
			       " seen before: a primary that lost the lease", s->token,
			       state->token);
	if (s->token == state->token && s->time_ns <= state->time_ns)
		return err_set(-EALREADY, "the signal is no newer than the last one (replayed?)");
	if (s->time_ns > now_ns + NODE_CLOCK_SKEW_MAX_NS)
		return err_set(-ERANGE, "the signal is dated %" PRId64 " ms in the future (clocks "
			       "out of step?)", (s->time_ns - now_ns) / 1000000);
	state->token = s->token;
	state->time_ns = s->time_ns;
	return 0;
}

/* ---- The primary's side ---------------------------------------------------------------------- */

struct node_primary {
	struct store *st;                   /* borrowed */
	struct audit_log *log;              /* borrowed: its key signs */
	struct store_lease *lease;          /* the store's (store_lease()); borrowed */
	int store_fd;                       /* the store directory */
	int nodes_fd;                       /* <store>/nodes */
	pthread_t thread;
	bool running;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;                          /* under lock */
	unsigned lease_ms;
	void (*fenced)(void *ctx, const char *why);
	void *fenced_ctx;
	uint64_t signals;                   /* written so far (tests, status) */
	/* The enrolled nodes' key bundles (node_bundle.c): written under bundle_lock; bundles_gen
	 * is the key ring generation all of them were last written for (the signal announces
	 * it), bundles_dirty says a write failed or the enrolments changed (atomics). */
	int (*enrolled)(void *ctx, struct node_enrolled **ret, size_t *ret_n);
	void *enrolled_ctx;
	pthread_mutex_t bundle_lock;
	uint64_t bundles_gen;
	bool bundles_dirty;
};

/* Write nodes/signal: a new file renamed over the old one. No sync: a signal only matters while
 * it is fresh, and the next one follows within a heartbeat. */
static int signal_write(struct node_primary *p, uint64_t seq)
{
	struct node_signal s = { .token = store_lease_token(p->lease), .time_ns = node_now_ns(),
				 .seq = seq,
				 .ring = __atomic_load_n(&p->bundles_gen, __ATOMIC_ACQUIRE) };
	uint8_t id[16];
	char text[NODE_SIGNAL_MAX];
	char *note = NULL;
	size_t nl = 0;
	int n, r;

	store_id(p->st, id);
	n = node_signal_text(id, &s, text, sizeof(text));
	if (n < 0)
		return n;
	r = audit_sign_note(p->log, text, (size_t)n, &note, &nl);
	if (r < 0)
		return r;
	r = replace_file_at(p->nodes_fd, NODE_SIGNAL_NAME, note, nl, 0644, false);
	free(note);
	if (r == 0)
		__atomic_add_fetch(&p->signals, 1, __ATOMIC_RELAXED);
	return r;
}

/* Is name among the n enrolled? */
static bool enrolled_has(const struct node_enrolled *e, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(e[i].name, name) == 0)
			return true;
	return false;
}

int node_primary_bundles(struct node_primary *p)
{
	struct store_node_keys *keys = NULL;
	struct node_enrolled *e = NULL;
	size_t n = 0;
	DIR *dir = NULL;
	int dfd = -1, r;

	if (!p)
		return 0;
	pthread_mutex_lock(&p->bundle_lock);
	r = p->enrolled(p->enrolled_ctx, &e, &n);
	/* No node enrolled: no copy of the keys is made at all. */
	if (r == 0 && n)
		r = store_node_keys_export(p->st, &keys);
	for (size_t i = 0; r == 0 && keys && i < n; i++)
		r = node_bundle_write(p->nodes_fd, p->st, p->log, e[i].name, e[i].id,
				      e[i].pub.box_pk, keys);
	/* Bundles of nodes no longer enrolled (removed) go. */
	if (r == 0) {
		dfd = openat(p->nodes_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		dir = dfd >= 0 ? fdopendir(dfd) : NULL;
		if (!dir) {
			r = -errno;
			if (dfd >= 0)
				close(dfd);
		}
	}
	for (struct dirent *de; r == 0 && dir && (de = readdir(dir));) {
		char nm[NODE_NAME_MAX + 16];
		size_t l = strlen(de->d_name);

		if (l <= 7 || l - 7 > NODE_NAME_MAX || strcmp(de->d_name + l - 7, ".bundle") != 0)
			continue;
		memcpy(nm, de->d_name, l - 7);
		nm[l - 7] = '\0';
		if (node_name_valid(nm) && !enrolled_has(e, n, nm))
			r = node_bundle_unlink(p->nodes_fd, nm);
	}
	if (dir)
		closedir(dir);
	if (r == 0)
		__atomic_store_n(&p->bundles_gen, keys ? keys->generation :
				 store_ring_generation(p->st), __ATOMIC_RELEASE);
	__atomic_store_n(&p->bundles_dirty, r < 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&p->bundle_lock);
	store_node_keys_free(keys);
	free(e);
	return r;
}

void node_primary_changed(struct node_primary *p)
{
	if (p)
		__atomic_store_n(&p->bundles_dirty, true, __ATOMIC_RELEASE);
}

/* The store's ring hook: a ring commit (a new version's key, an erasure) reaches the bundles
 * before the index batch that uses it. */
static void ring_committed(void *ctx)
{
	struct node_primary *p = ctx;

	if (node_primary_bundles(p) < 0)
		fprintf(stderr, "enclaved: nodes: cannot write the key bundles: %s (nodes cannot "
			"read what is new until they can; trying again)\n", err_detail());
}

static void *primary_main(void *arg)
{
	struct node_primary *p = arg;
	int64_t last_signal = 0, last_renew = node_now_ns();
	uint64_t last_visible = UINT64_MAX;
	bool warned = false;

	for (;;) {
		int64_t now = node_now_ns();
		/* Announced at once: a change of the visible count (a grant, a revocation, a commit:
		 * every write but an import's batches of its PENDING version, which no node can see
		 * before the commit). Read before seq, so that the signal's seq covers it. */
		uint64_t visible = store_sequence_visible(p->st);
		uint64_t seq = store_sequence(p->st);
		int r;

		pthread_mutex_lock(&p->lock);
		if (p->stop) {
			pthread_mutex_unlock(&p->lock);
			break;
		}
		pthread_mutex_unlock(&p->lock);
		if (now - last_renew >= (int64_t)p->lease_ms / 3 * 1000000) {
			r = store_lease_renew(p->lease);
			if (r == -ESTALE || r == -ETIMEDOUT) {
				/* Fenced: another primary writes now. Stop writing at once. */
				p->fenced(p->fenced_ctx, err_detail());
				break;
			}
			if (r < 0)
				fprintf(stderr, "enclaved: lease: cannot renew it: %s (trying again)\n",
					err_detail()[0] ? err_detail() : strerror(-r));
			else
				last_renew = now;
		}
		/* Bundles behind the ring (a failed write) or the enrolments: written first, so the
		 * signal never announces a generation a node cannot have. */
		if (__atomic_load_n(&p->bundles_dirty, __ATOMIC_ACQUIRE) ||
		    store_ring_generation(p->st) != __atomic_load_n(&p->bundles_gen,
								    __ATOMIC_ACQUIRE)) {
			r = node_primary_bundles(p);
			if (r < 0 && !warned)
				fprintf(stderr, "enclaved: nodes: cannot write the key bundles: %s "
					"(trying again)\n", err_detail());
			if (r == 0)
				last_visible = UINT64_MAX;   /* announce it now */
		}
		if (visible != last_visible ||
		    now - last_signal >= (int64_t)NODE_HEARTBEAT_MS * 1000000) {
			r = signal_write(p, seq);
			if (r < 0 && !warned)
				fprintf(stderr, "enclaved: nodes/signal: cannot write it: %s (nodes go "
					"stale until it can)\n", strerror(-r));
			warned = r < 0;
			if (r == 0) {
				last_visible = visible;
				last_signal = now;
			}
		}
		sleep_ms(NODE_SIGNAL_POLL_MS);
	}
	return NULL;
}

int node_primary_start(struct store *st, struct audit_log *log, const char *store_dir,
		       unsigned lease_ms, void (*fenced)(void *ctx, const char *why),
		       int (*enrolled)(void *ctx, struct node_enrolled **ret, size_t *ret_n),
		       void *ctx, struct node_primary **ret)
{
	struct node_primary *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	p->st = st;
	p->log = log;
	p->lease_ms = lease_ms;
	p->fenced = fenced;
	p->fenced_ctx = ctx;
	p->enrolled = enrolled;
	p->enrolled_ctx = ctx;
	p->store_fd = p->nodes_fd = -1;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	pthread_mutex_init(&p->bundle_lock, NULL);
	p->store_fd = open(store_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (p->store_fd < 0) {
		r = err_set(-errno, "%s: %s", store_dir, strerror(errno));
		goto fail;
	}
	if (mkdirat(p->store_fd, NODE_DIR_NAME, 0755) < 0 && errno != EEXIST) {
		r = err_set(-errno, "%s/" NODE_DIR_NAME ": %s", store_dir, strerror(errno));
		goto fail;
	}
	p->nodes_fd = openat(p->store_fd, NODE_DIR_NAME, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			     O_CLOEXEC);
	if (p->nodes_fd < 0) {
		r = err_set(-errno, "%s/" NODE_DIR_NAME ": %s", store_dir, strerror(errno));
		goto fail;
	}
	p->lease = store_lease(st);
	if (!p->lease) {
		r = err_set(-EINVAL, "the store was opened without a lease");
		goto fail;
	}
	/* The bundles as the ring and the enrolments are now (a crash may have left them
	 * behind), then the ring hook keeps them current. */
	r = node_primary_bundles(p);
	if (r < 0)
		goto fail;
	store_set_ring_hook(st, ring_committed, p);
	r = signal_write(p, store_sequence(st));
	if (r < 0) {
		r = err_set(r, "%s/" NODE_DIR_NAME "/" NODE_SIGNAL_NAME ": %s", store_dir,
			    strerror(-r));
		goto fail;
	}
	r = -pthread_create(&p->thread, NULL, primary_main, p);
	if (r < 0)
		goto fail;
	p->running = true;
	*ret = p;
	return 0;
fail:
	node_primary_stop(p);
	return r;
}

void node_primary_stop(struct node_primary *p)
{
	if (!p)
		return;
	/* No ring commit reaches a freed primary (imports are over by now). */
	if (p->st)
		store_set_ring_hook(p->st, NULL, NULL);
	if (p->running) {
		pthread_mutex_lock(&p->lock);
		p->stop = true;
		pthread_mutex_unlock(&p->lock);
		pthread_join(p->thread, NULL);
	}
	if (p->nodes_fd >= 0)
		close(p->nodes_fd);
	if (p->store_fd >= 0)
		close(p->store_fd);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->bundle_lock);
	free(p);
}

uint64_t node_primary_token(const struct node_primary *p)
{
	return store_lease_token(p->lease);
}

/* ---- The node's side ------------------------------------------------------------------------- */

struct node_runtime {
	struct store *st;                   /* borrowed */
	struct node_signal_state state;     /* of the signals accepted; catch-up thread only */
	struct node_signal pending;         /* accepted, its sequence number not reached yet */
	bool have_pending;                  /* catch-up thread only */
	struct note_verifier primary;       /* the primary's key */
	uint8_t store_id[16];
	char name[NODE_NAME_MAX + 1];       /* this node's */
	uint8_t *seed;                      /* its secret seed (sodium_malloc'd): opens bundles */
	uint64_t ring;                      /* key ring generation of the keys held; thread only */
	struct stat bundle_st;              /* the bundle file last read; thread only */
	int nodes_fd;                       /* <store>/nodes */
	unsigned stale_ms;                  /* the staleness bound */
	/* Unix ns as of which this node is known to have everything the primary had: the time of
	 * the last accepted signal whose sequence number it has reached. 0: never. */
	int64_t fresh_ns;                   /* atomic */
	bool stale;                         /* as last reported; catch-up thread only */
	uint64_t seq;                       /* caught up to; catch-up thread only */
	uint64_t catch_ups;                 /* atomic: catch-ups done */
	uint64_t changes;                   /* atomic: catch-ups that brought something */
	char why[256];                      /* why it is stale; under lock */
	pthread_mutex_t lock;
	pthread_t thread;
	bool running, stop;                 /* stop under lock */
	const struct node_callbacks *cb;
};

static void caught_up(void *ctx);

int node_runtime_new(struct store *st, const char *store_dir, const struct note_verifier *primary,
		     const char *name, const uint8_t seed[static 32],
		     const struct node_bundle *bundle, unsigned stale_ms,
		     const struct node_callbacks *cb, struct node_runtime **ret)
{
	struct node_runtime *n = calloc(1, sizeof(*n));
	int fd;

	if (!n)
		return -ENOMEM;
	n->seed = sodium_malloc(32);
	if (!n->seed) {
		free(n);
		return -ENOMEM;
	}
	memcpy(n->seed, seed, 32);
	snprintf(n->name, sizeof(n->name), "%s", name);
	n->ring = bundle->ring;
	n->st = st;
	n->primary = *primary;
	n->stale_ms = stale_ms;
	n->cb = cb;
	n->nodes_fd = -1;
	n->stale = true;
	pthread_mutex_init(&n->lock, NULL);
	snprintf(n->why, sizeof(n->why), "no signal from the primary yet");
	store_id(st, n->store_id);
	fd = open(store_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		n->nodes_fd = openat(fd, NODE_DIR_NAME, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
				     O_CLOEXEC);
		close(fd);
	}
	if (n->nodes_fd < 0) {
		int r = err_set(-errno, "%s/" NODE_DIR_NAME ": %s (has a primary of this version "
				"ever run on this store?)", store_dir, strerror(errno));

		node_runtime_free(n);
		return r;
	}
	(void)node_bundle_stat(n->nodes_fd, n->name, &n->bundle_st);
	store_set_catch_up_hook(st, caught_up, n);
	*ret = n;
	return 0;
}

/* Read, check and accept nodes/signal. */
static int signal_read(struct node_runtime *n, struct node_signal *ret)
{
	char buf[NOTE_MAX + 1];
	struct node_signal s;
	ssize_t len;
	int fd, r;

	fd = openat(n->nodes_fd, NODE_SIGNAL_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return err_set(-errno, "nodes/" NODE_SIGNAL_NAME ": %s", strerror(errno));
	len = read_full(fd, buf, sizeof(buf));
	close(fd);
	if (len < 0 || (size_t)len > NOTE_MAX)
		return err_set(-EBADMSG, "nodes/" NODE_SIGNAL_NAME ": unreadable or too long");
	r = node_signal_parse(buf, (size_t)len, &n->primary, n->store_id, &s);
	if (r == 0)
		r = node_signal_accept(&n->state, &s, node_now_ns());
	if (r == 0)
		*ret = s;
	return r;
}

static bool stat_same(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* The node's bundle again when its file changed or the signal announces a newer ring: the keys
 * of new versions, without those erased. An older bundle (a replay, a file put back) is refused
 * and the keys held stay. */
static void bundle_reload(struct node_runtime *n, uint64_t announced)
{
	struct node_bundle *b = NULL;
	struct stat sb = { 0 };
	int r = node_bundle_stat(n->nodes_fd, n->name, &sb);

	if (r == 0 && stat_same(&sb, &n->bundle_st) && announced <= n->ring)
		return;
	if (r < 0 && announced <= n->ring)
		return;   /* none (removed): the keys held stay until the node is told more */
	if (r == 0)
		r = node_bundle_read(n->nodes_fd, n->name, &n->primary, n->store_id, n->seed, &b);
	else
		r = err_set(r, "nodes/%s.bundle: %s", n->name, strerror(-r));
	if (r == 0 && b->ring < n->ring)
		r = err_set(-ESTALE, "nodes/%s.bundle holds the keys of ring generation %" PRIu64
			    ", older than the %" PRIu64 " this node has (put back, or replayed)",
			    n->name, b->ring, n->ring);
	if (r == 0 && b->ring > n->ring)
		r = store_node_keys_set(n->st, b->keys);
	if (r == 0) {
		n->bundle_st = sb;
		n->ring = b->ring;
	} else {
		pthread_mutex_lock(&n->lock);
		snprintf(n->why, sizeof(n->why), "its key bundle: %s", err_detail());
		pthread_mutex_unlock(&n->lock);
		/* The same bad file is not read again until it changes. */
		if (sb.st_ino)
			n->bundle_st = sb;
	}
	node_bundle_free(b);
}

/* The store's catch-up hook: the keys for what the index now shows, before it is shown. */
static void caught_up(void *ctx)
{
	struct node_runtime *n = ctx;

	bundle_reload(n, n->have_pending ? n->pending.ring : 0);
}

/* One round: accept a new signal if there is one, catch up, see whether that reaches it. */
static void node_round(struct node_runtime *n)
{
	struct node_signal s = { 0 };
	uint64_t seq = 0;
	int r;

	r = signal_read(n, &s);
	if (r == 0) {
		n->pending = s;
		n->have_pending = true;
	} else if (r != -EALREADY) {
		pthread_mutex_lock(&n->lock);
		snprintf(n->why, sizeof(n->why), "%s", err_detail());
		pthread_mutex_unlock(&n->lock);
	}
	r = store_catch_up(n->st, &seq);
	__atomic_add_fetch(&n->catch_ups, 1, __ATOMIC_RELAXED);
	if (r < 0) {
		pthread_mutex_lock(&n->lock);
		snprintf(n->why, sizeof(n->why), "%s", err_detail());
		pthread_mutex_unlock(&n->lock);
		return;
	}
	bundle_reload(n, n->have_pending ? n->pending.ring : 0);
	if (seq != n->seq) {
		/* New policy or versions: the callback reloads the grants and makes open handles
		 * decide again, before this node calls itself fresh. Grants that do not load leave
		 * it not fresh (stale once past its bound), and are tried again next round. */
		r = n->cb->changed(n->cb->ctx);
		if (r < 0) {
			pthread_mutex_lock(&n->lock);
			snprintf(n->why, sizeof(n->why), "cannot reload the policy: %s",
				 err_detail()[0] ? err_detail() : strerror(-r));
			pthread_mutex_unlock(&n->lock);
			return;
		}
		n->seq = seq;
		__atomic_add_fetch(&n->changes, 1, __ATOMIC_RELAXED);
	}
	if (n->have_pending) {
		s = n->pending;
		if (seq >= s.seq && n->ring >= s.ring) {
			__atomic_store_n(&n->fresh_ns, s.time_ns, __ATOMIC_RELEASE);
			n->have_pending = false;
		} else if (seq >= s.seq) {
			pthread_mutex_lock(&n->lock);
			snprintf(n->why, sizeof(n->why), "this node holds the keys of ring generation %"
				 PRIu64 ", behind the %" PRIu64 " the primary announced (no newer "
				 "key bundle for it)", n->ring, s.ring);
			pthread_mutex_unlock(&n->lock);
		} else {
			pthread_mutex_lock(&n->lock);
			snprintf(n->why, sizeof(n->why), "the index here is at sequence %" PRIu64
				 ", behind the %" PRIu64 " the primary announced (the shared "
				 "file system lags, or the index was rolled back)", seq, s.seq);
			pthread_mutex_unlock(&n->lock);
		}
	}
}

static void *node_main(void *arg)
{
	struct node_runtime *n = arg;
	struct stat last = { 0 };
	int64_t last_round = 0, last_seen = 0;

	for (;;) {
		struct stat sb = { 0 };
		int64_t now = node_now_ns();
		bool changed, stale;

		pthread_mutex_lock(&n->lock);
		if (n->stop) {
			pthread_mutex_unlock(&n->lock);
			break;
		}
		pthread_mutex_unlock(&n->lock);
		/* The cheap change signal: the file's identity and time (a rename makes a new
		 * inode); a full round on a change, and at least every heartbeat. */
		(void)fstatat(n->nodes_fd, NODE_SIGNAL_NAME, &sb, AT_SYMLINK_NOFOLLOW);
		changed = sb.st_ino != last.st_ino || sb.st_mtim.tv_nsec != last.st_mtim.tv_nsec ||
			  sb.st_mtim.tv_sec != last.st_mtim.tv_sec || sb.st_size != last.st_size;
		if (changed || now - last_round >= (int64_t)NODE_HEARTBEAT_MS * 1000000) {
			last = sb;
			last_round = now;
			node_round(n);
		}
		stale = !node_fresh(n, NULL, 0);
		if (stale != n->stale) {
			n->stale = stale;
			n->cb->stale(n->cb->ctx, stale, stale ? n->why : NULL);
			last_seen = 0;
		}
		/* What it says of itself, for `node show`: best effort, never a reason to stop. */
		if (now - last_seen >= (int64_t)NODE_SEEN_MS * 1000000) {
			struct node_seen s = {
				.time_ns = now, .seq = n->seq, .ring = n->ring,
				.token = n->state.token, .signal_ns = n->state.time_ns,
				.fresh_ns = __atomic_load_n(&n->fresh_ns, __ATOMIC_ACQUIRE),
				.catch_ups = __atomic_load_n(&n->catch_ups, __ATOMIC_RELAXED),
				.stale = stale };

			(void)node_seen_write(n->nodes_fd, n->store_id, n->name, n->seed, &s);
			last_seen = now;
		}
		sleep_ms(NODE_POLL_MS);
	}
	return NULL;
}

int node_runtime_start(struct node_runtime *n)
{
	int r;

	node_round(n);
	r = -pthread_create(&n->thread, NULL, node_main, n);
	if (r == 0)
		n->running = true;
	return r;
}

bool node_fresh(struct node_runtime *n, char *why, size_t cap)
{
	int64_t fresh = __atomic_load_n(&n->fresh_ns, __ATOMIC_ACQUIRE);
	int64_t age = node_now_ns() - fresh;

	if (fresh && age <= (int64_t)n->stale_ms * 1000000)
		return true;
	if (why && cap) {
		pthread_mutex_lock(&n->lock);
		if (fresh)
			snprintf(why, cap, "this node last caught up with the primary %" PRId64
				 " ms ago, past its staleness bound of %u ms: %s", age / 1000000,
				 n->stale_ms, n->why);
		else
			snprintf(why, cap, "this node has not caught up with the primary yet: %s",
				 n->why);
		pthread_mutex_unlock(&n->lock);
	}
	return false;
}

void node_runtime_stats(struct node_runtime *n, uint64_t *ret_catch_ups, uint64_t *ret_changes)
{
	*ret_catch_ups = __atomic_load_n(&n->catch_ups, __ATOMIC_RELAXED);
	*ret_changes = __atomic_load_n(&n->changes, __ATOMIC_RELAXED);
}

void node_runtime_free(struct node_runtime *n)
{
	if (!n)
		return;
	if (n->running) {
		pthread_mutex_lock(&n->lock);
		n->stop = true;
		pthread_mutex_unlock(&n->lock);
		pthread_join(n->thread, NULL);
	}
	if (n->st)
		store_set_catch_up_hook(n->st, NULL, NULL);
	if (n->nodes_fd >= 0)
		close(n->nodes_fd);
	if (n->seed)
		sodium_free(n->seed);
	pthread_mutex_destroy(&n->lock);
	free(n);
}

/* ---- The node's key pair and its local directory --------------------------------------------- */

#define NODE_SECRET_PREFIX "enclave-node-secret:"
#define NODE_PUBLIC_PREFIX "enclave-node-public:"

int node_key_public(const uint8_t seed[static 32], struct node_public *ret)
{
	uint8_t sk[crypto_sign_SECRETKEYBYTES], xseed[32], xsk[crypto_box_SECRETKEYBYTES];

	if (crypto_sign_seed_keypair(ret->sign_pk, sk, seed) != 0)
		return -EINVAL;
	crypto_generichash(xseed, 32, (const uint8_t *)"enclave node x25519", 19, seed, 32);
	crypto_box_seed_keypair(ret->box_pk, xsk, xseed);
	sodium_memzero(sk, sizeof(sk));
	sodium_memzero(xsk, sizeof(xsk));
	sodium_memzero(xseed, sizeof(xseed));
	return 0;
}

int node_key_box_secret(const uint8_t seed[static 32], uint8_t ret_sk[static 32])
{
	uint8_t xseed[32], pk[crypto_box_PUBLICKEYBYTES];

	crypto_generichash(xseed, 32, (const uint8_t *)"enclave node x25519", 19, seed, 32);
	crypto_box_seed_keypair(pk, ret_sk, xseed);
	sodium_memzero(xseed, sizeof(xseed));
	return 0;
}

int node_public_format(const char *name, const struct node_public *pub, char *out, size_t cap)
{
	uint8_t both[64];
	char b64[sodium_base64_ENCODED_LEN(64, sodium_base64_VARIANT_ORIGINAL)];
	int n;

	memcpy(both, pub->sign_pk, 32);
	memcpy(both + 32, pub->box_pk, 32);
	sodium_bin2base64(b64, sizeof(b64), both, 64, sodium_base64_VARIANT_ORIGINAL);
	n = snprintf(out, cap, NODE_PUBLIC_PREFIX "%s:%s", name, b64);
	return n < 0 || (size_t)n >= cap ? -E2BIG : 0;
}

int node_public_parse(const char *text, size_t len, char ret_name[static NODE_NAME_MAX + 1],
		      struct node_public *ret)
{
	const size_t pl = strlen(NODE_PUBLIC_PREFIX);
	const char *colon;
	char name[NODE_NAME_MAX + 1];
	uint8_t both[64];
	size_t bl = 0, nl, kl;

	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		len--;
	if (len <= pl || memcmp(text, NODE_PUBLIC_PREFIX, pl) != 0)
		return err_set(-EINVAL, "not a node public key (it starts \"" NODE_PUBLIC_PREFIX
			       "\"; `enclaved --node NAME --init` prints it)");
	colon = memchr(text + pl, ':', len - pl);
	if (!colon)
		return err_set(-EINVAL, "a node public key names its node");
	nl = (size_t)(colon - (text + pl));
	if (nl == 0 || nl > NODE_NAME_MAX)
		return err_set(-EINVAL, "a node public key's name is empty or too long");
	memcpy(name, text + pl, nl);
	name[nl] = '\0';
	if (strlen(name) != nl)
		return err_set(-EINVAL, "a node public key's name holds a NUL byte");
	if (!node_name_valid(name))
		return err_set(-EINVAL, "\"%s\" is not a valid node name", name);
	/* Canonical base64 only: the text must be the encoding of what it decodes to. (libsodium
	 * 1.0.18 decodes any byte from 0x80 up as '/'.) */
	kl = len - nl - pl - 1;
	if (base64_decode_canonical(colon + 1, kl, NULL, both, sizeof(both), &bl) < 0 || bl != 64)
		return err_set(-EINVAL, "a node public key's key part is not 64 bytes of canonical "
			       "base64");
	memcpy(ret_name, name, nl + 1);
	memcpy(ret->sign_pk, both, 32);
	memcpy(ret->box_pk, both + 32, 32);
	return 0;
}

int node_key_create(int dirfd, const char *name, uint8_t ret_seed[static 32])
{
	uint8_t seed[32];
	char b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)], line[128];
	int fd, r, n;

	randombytes_buf(seed, sizeof(seed));
	sodium_bin2base64(b64, sizeof(b64), seed, 32, sodium_base64_VARIANT_ORIGINAL);
	n = snprintf(line, sizeof(line), NODE_SECRET_PREFIX "%s\n", b64);
	fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	r = pwrite_all(fd, line, (size_t)n, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0)
		r = fsync_dirfd(dirfd);
	if (r == 0)
		memcpy(ret_seed, seed, 32);
out:
	sodium_memzero(seed, sizeof(seed));
	sodium_memzero(b64, sizeof(b64));
	sodium_memzero(line, sizeof(line));
	return r;
}

int node_key_read(int dirfd, const char *name, uint8_t ret_seed[static 32])
{
	const size_t pl = strlen(NODE_SECRET_PREFIX);
	char buf[128];
	uint8_t seed[32];
	struct stat sb;
	size_t bl = 0;
	ssize_t n;
	int fd, r = 0;

	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return err_set(-errno, "%s: %s", name, strerror(errno));
	if (fstat(fd, &sb) < 0 || (sb.st_mode & 077) || sb.st_uid != geteuid()) {
		close(fd);
		return err_set(-EPERM, "%s must be the daemon's own file, mode 0600: it is the "
			       "node's secret key", name);
	}
	n = read_full(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0) {
		r = err_set((int)n, "%s: %s", name, strerror((int)-n));
		goto out;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	if ((size_t)n <= pl || memcmp(buf, NODE_SECRET_PREFIX, pl) != 0 ||
	    sodium_base642bin(seed, sizeof(seed), buf + pl, (size_t)n - pl, NULL, &bl, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0 || bl != 32) {
		r = err_set(-EINVAL, "%s is not a node secret key", name);
		goto out;
	}
	memcpy(ret_seed, seed, 32);
out:
	sodium_memzero(buf, sizeof(buf));
	sodium_memzero(seed, sizeof(seed));
	return r;
}
