/* gc (daemon): garbage collection on a steward's request (store.gc, `enclavectl store gc`) and
 * on a schedule (enclave.conf "gc_interval" or "gc_interval_hours"), recorded in the audit log
 * (docs/FORMAT.md §10, docs/AUDIT.md "gc").
 *
 * A collection deletes pack bytes on the word of the index. The store checks every record it
 * reads (store_gc()); what it cannot see alone is an index older than the signed log says (the
 * whole index restored from a backup: every record authentic, newer versions simply absent, their
 * objects looking dead). So a collection runs only when the daemon's own checks passed: the
 * policy records and the versions bound to the log without a finding at start (an older index
 * shows there: daemon_versions_bind() compares every committed version with the log's import
 * records), and no integrity failure found in the index since the daemon started. Otherwise it is refused,
 * and the refusal recorded.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "common/err.h"
#include "daemon/daemon.h"

struct daemon_gc {
	struct daemon *d;             /* borrowed */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;                    /* under lock */
	unsigned interval_s;
};

/* Why no collection may run now, or 0. */
static int gc_allowed(struct daemon *d)
{
	uint64_t n;

	if (d->index_log_findings)
		return err_set(-EUCLEAN, "the store's policy records or versions disagreed with the "
			       "signed audit log when the daemon started (an index older than the log, "
			       "or edited): no garbage is collected on the word of that index; resolve "
			       "it (see the daemon's start-up messages) and restart the daemon");
	n = store_integrity_failures(d->st);
	if (n)
		return err_set(-EUCLEAN, "the store has found %llu integrity failure(s) in its index "
			       "since the daemon started (integrity records in the audit log): no "
			       "garbage is collected on the word of a damaged index; investigate, then "
			       "restart the daemon", (unsigned long long)n);
	return 0;
}

static json_t *stats_json(const struct store_gc_stats *s)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			 "packs", (json_int_t)s->packs, "pack_bytes", (json_int_t)s->pack_bytes,
			 "live_objects", (json_int_t)s->live_objects, "live_bytes",
			 (json_int_t)s->live_bytes, "dead_bytes", (json_int_t)s->dead_bytes,
			 "reclaimable_bytes", (json_int_t)s->reclaimable_bytes, "packs_removed",
			 (json_int_t)s->packs_removed, "packs_compacted",
			 (json_int_t)s->packs_compacted, "packs_cut", (json_int_t)s->packs_cut,
			 "packs_written", (json_int_t)s->packs_written, "objects_moved",
			 (json_int_t)s->objects_moved, "bytes_copied", (json_int_t)s->bytes_copied);
}

json_t *daemon_gc_stats_json(const struct store_gc_stats *s)
{
	return stats_json(s);
}

/* The "gc" audit record: who (NULL: the schedule), the result, the plan's numbers, an error. No
 * dataset is named: a collection deals in packs and bytes. */
static int gc_record(struct daemon *d, const struct policy_subject *who, const char *result,
		     const struct store_gc_stats *s, int err)
{
	json_t *rec = json_pack("{s:s, s:s, s:s}", "event", "gc", "trigger",
				who ? "steward" : "schedule", "result", result);
	int r;

	if (!rec)
		return -ENOMEM;
	if (who && daemon_audit_subject(rec, who) < 0) {
		json_decref(rec);
		return -ENOMEM;
	}
	if (s) {
		json_t *st = stats_json(s);

		if (!st || json_object_update(rec, st) < 0) {
			json_decref(st);
			json_decref(rec);
			return -ENOMEM;
		}
		json_decref(st);
	}
	if (err)
		json_object_set_new(rec, "error", audit_string(err_detail()[0] ? err_detail()
										: strerror(-err)));
	r = audit_append(d->log, rec, NULL);
	json_decref(rec);
	return r;
}

struct run_ctx {
	struct daemon *d;
	const struct policy_subject *who;
	const struct store_gc_options *caller;   /* the caller's progress and dataset hooks */
	bool recorded;                           /* the "committed" record is written */
};

/* Recorded before the index commit, as an import is: the log may say a collection committed
 * that then failed (a "failed" record follows), never the reverse. */
static int before_commit(void *ctx, const struct store_gc_stats *plan)
{
	struct run_ctx *rc = ctx;
	int r = gc_record(rc->d, rc->who, "committed", plan, 0);

	if (r < 0)
		return err_set(-EIO, "the audit log could not record the collection: nothing was "
			       "changed");
	rc->recorded = true;
	return 0;
}

static void on_progress(void *ctx, enum store_gc_step step, uint64_t done, uint64_t total)
{
	struct run_ctx *rc = ctx;

	if (rc->caller && rc->caller->progress)
		rc->caller->progress(rc->caller->ctx, step, done, total);
}

static int on_dataset(void *ctx, const struct store_gc_dataset *ds)
{
	struct run_ctx *rc = ctx;

	return rc->caller && rc->caller->dataset ? rc->caller->dataset(rc->caller->ctx, ds) : 0;
}

int daemon_gc_run(struct daemon *d, const struct policy_subject *who, bool dry_run,
		  const struct store_gc_options *hooks, struct store_gc_stats *ret_stats)
{
	struct run_ctx rc = { .d = d, .who = who, .caller = hooks };
	struct store_gc_options o = { .dry_run = dry_run, .progress = on_progress,
				      .before_commit = before_commit, .dataset = on_dataset,
				      .ctx = &rc, .remove_delay_ms = node_gc_grace_ms(d) };
	struct store_gc_stats s = { 0 };
	int r;

	err_clear();
	/* A dry run deletes nothing: it may look at any store. */
	r = dry_run ? 0 : gc_allowed(d);
	if (r == 0)
		r = store_gc(d->st, &o, &s);
	if (r < 0 && !dry_run) {
		char why[ERR_DETAIL_MAX];

		/* Keep the detail across the record's own calls. */
		snprintf(why, sizeof(why), "%s", err_detail());
		gc_record(d, who, rc.recorded ? "failed" : "refused", NULL, r);
		err_set(r, "%s", why);
	}
	if (r < 0)
		return r;
	*ret_stats = s;
	return 0;
}

/* ---- The schedule ------------------------------------------------------------------------- */

static void *gc_main(void *arg)
{
	struct daemon_gc *g = arg;

	pthread_mutex_lock(&g->lock);
	for (;;) {
		struct timespec until;
		struct store_gc_stats s;
		int r;

		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += g->interval_s;
		while (!g->stop && pthread_cond_timedwait(&g->cond, &g->lock, &until) != ETIMEDOUT)
			;
		if (g->stop)
			break;
		pthread_mutex_unlock(&g->lock);
		r = daemon_gc_run(g->d, NULL, false, NULL, &s);
		if (r == -EBUSY)
			fprintf(stderr, "enclaved: scheduled garbage collection: an import is running; "
				"next time\n");
		else if (r < 0)
			fprintf(stderr, "enclaved: scheduled garbage collection refused or failed: %s\n",
				err_detail());
		else if (s.reclaimable_bytes)
			fprintf(stderr, "enclaved: scheduled garbage collection freed %llu bytes\n",
				(unsigned long long)s.reclaimable_bytes);
		pthread_mutex_lock(&g->lock);
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

int daemon_gc_start(struct daemon *d, unsigned interval_s, struct daemon_gc **ret)
{
	struct daemon_gc *g;
	pthread_condattr_t ca;

	*ret = NULL;
	if (!interval_s)
		return 0;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->d = d;
	g->interval_s = interval_s;
	pthread_mutex_init(&g->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&g->thread, NULL, gc_main, g) != 0) {
		pthread_cond_destroy(&g->cond);
		pthread_mutex_destroy(&g->lock);
		free(g);
		return err_set(-EAGAIN, "cannot start the garbage collection schedule");
	}
	*ret = g;
	return 0;
}

void daemon_gc_stop(struct daemon_gc *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	g->stop = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	/* A collection under way finishes first: it holds the store's import lock, and stopping it
	 * midway would only leave work for the next one. */
	pthread_join(g->thread, NULL);
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->lock);
	free(g);
}
